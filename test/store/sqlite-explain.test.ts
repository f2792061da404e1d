import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { runExplainConformance } from './explain-conformance.js';

// The explain methods of the port, one fresh database file per test.
runExplainConformance('SqliteStore (explain conformance)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-sqlite-explain-'));
  const store = new SqliteStore(join(dir, 'boxgrid.db'));
  return { store, cleanup: () => rm(dir, { recursive: true, force: true }) };
});
