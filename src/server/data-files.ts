import { join } from 'node:path';

/** Files the server keeps in its data dir. The CLI reads the last two to find a local server. */
export const dataFiles = (dataDir: string) => ({
  database: join(dataDir, 'boxgrid.db'),
  blobs: join(dataDir, 'blobs'),
  adminToken: join(dataDir, 'admin.token'),
  serverInfo: join(dataDir, 'server.json'),
});
