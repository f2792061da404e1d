import { rm } from 'node:fs/promises';
import { after, describe, test } from 'node:test';
import { DEFAULT_JOBS, serverCrashScenario } from '../helpers/server-crash-scenario.js';
import { children } from '../helpers/server-process.js';

/** kill -9 of a server on the embedded SQLite store (the default); the scenario is in the helper. */
describe('server crash (SQLite)', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  test(`kill -9 three times under load: ${DEFAULT_JOBS.toLocaleString('en')} jobs each succeed exactly once, nothing lost, data dir intact`, { timeout: 175_000 }, (t) => serverCrashScenario(t, dirs));
});
