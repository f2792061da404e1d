import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { runReplicationConformance } from './replication-conformance.js';

// Replicated jobs through the port, one fresh database file per test.
runReplicationConformance('SqliteStore (replication conformance)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-sqlite-replication-'));
  const store = new SqliteStore(join(dir, 'boxgrid.db'));
  return { store, cleanup: () => rm(dir, { recursive: true, force: true }) };
});
