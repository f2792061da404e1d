import { rm } from 'node:fs/promises';
import { after, describe, test } from 'node:test';
import { freshDatabase, postgresSuite } from '../helpers/postgres.js';
import { serverCrashScenario } from '../helpers/server-crash-scenario.js';
import { children, exited } from '../helpers/server-process.js';

/**
 * kill -9 of a server whose state is in PostgreSQL: a crash drops its connections mid-transaction,
 * and what the server had answered must be there when it comes back. The scenario is in the helper.
 */
const suite = await postgresSuite();

describe('server crash (PostgreSQL)', { skip: suite.skip }, () => {
  const dirs: string[] = [];
  let drop: (() => Promise<void>) | null = null;
  after(async () => {
    await Promise.all([...children].map((c) => (c.kill('SIGKILL'), exited(c))));
    await drop?.();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  // Fewer jobs: PostgreSQL dispatches slower here than SQLite (10,000 took 86–126 s beside the
  // SQLite run), and the scenario gives up at DEADLINE_MS (150 s).
  const jobs = 5_000;
  test(`kill -9 three times under load: ${jobs.toLocaleString('en')} jobs each succeed exactly once, nothing lost, database and blobs intact`, { timeout: 175_000 }, async (t) => {
    const db = await freshDatabase();
    drop = db.drop;
    await serverCrashScenario(t, dirs, { database: db.url, jobs });
  });
});
