import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { runWorkflowConformance } from './workflow-conformance.js';

// Workflows through the port, one fresh database file per test.
runWorkflowConformance('SqliteStore (workflow conformance)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-sqlite-workflows-'));
  const store = new SqliteStore(join(dir, 'boxgrid.db'));
  return { store, cleanup: () => rm(dir, { recursive: true, force: true }) };
});
