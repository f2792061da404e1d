import { join } from 'node:path';

/** Files the server keeps in its data dir. The CLI reads the last two to find a local server. */
export const dataFiles = (dataDir: string) => ({
  database: join(dataDir, 'boxgrid.db'),
  blobs: join(dataDir, 'blobs'),
  /** The key the server signs transfer URLs with, unless BOXGRID_TRANSFER_KEY gives one. */
  transferKey: join(dataDir, 'transfer.key'),
  adminToken: join(dataDir, 'admin.token'),
  serverInfo: join(dataDir, 'server.json'),
});
