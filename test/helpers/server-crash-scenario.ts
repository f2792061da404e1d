import assert from 'node:assert/strict';
import { createHash, randomInt } from 'node:crypto';
import { mkdtemp, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import pg from 'pg';
import { enrollHosts, tinyAppBody, type SimHost } from '../../bench/dispatch.js';
import { HttpClient, rng, type ServerUnderTest } from '../../bench/harness.js';
import { CrashTolerantAgent, Ledger, type Endpoint } from './crash-agent.js';
import { checkBlobFiles, checkDataDir, openReadOnly } from './data-dir-integrity.js';
import { exited, startServerProcess, type Started } from './server-process.js';

/**
 * Issue 9, item 1: a `boxgrid server` killed with SIGKILL three times while simulated hosts
 * work through 10,000 jobs loses nothing and counts nothing twice. Run on the embedded SQLite
 * store (test/reliability/server-crash.test.ts) and on PostgreSQL (server-crash-postgres.test.ts).
 *
 * The hosts are plain HTTP clients (test/helpers/crash-agent.ts) that behave as the real agent
 * does when the server goes away: the same call again (same requestId, same report) after a
 * connection error, with backoff. Besides the retries the crashes cause, 2% of mutating answers
 * are thrown away on purpose and the call repeated, as after an answer lost on the way back:
 * those repeats must all come back `replayed`. The kill points are drawn from a seed, printed
 * first; `BOXGRID_CRASH_SEED=N` replays a run's points (the interleaving of calls with the
 * kill is up to the machine, so a replay is close, not exact).
 *
 * The server runs with `--speculation 0` (no speculative copies: each job must have exactly one
 * task) and the default lease (180 s, swept from 180 s after each start), so no job in this
 * test can be rescued by a lease running out: a claim or report lost in a crash shows as a job
 * that never ends, which the stall check reports.
 */

/** The issue's figure; the PostgreSQL run takes fewer to stay well inside a test file's time limit on a loaded machine. */
export const DEFAULT_JOBS = 10_000;
const HOSTS = 36;
const MAX_TASKS = 4;
const PROJECT = 'default';
const APP = 'crash-tiny';
/** Fraction of mutating answers dropped and repeated. */
const DROP_RATE = 0.02;
/** No job done for this long while the server is up: something was lost. */
const STALL_MS = 20_000;
/** The whole run (setup, kills, checks) must end before this. */
const DEADLINE_MS = 150_000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The output of job `jobId`, if it has one: one in 16 a file of its own, one in 16 the same shared file (already present from the second time on). */
function outputFor(seed: number): (jobId: number) => Buffer | null {
  return (jobId) => {
    if (jobId % 16 === 0) return Buffer.from(`job ${jobId} of run ${seed}: result\n`);
    if (jobId % 16 === 8) return Buffer.from(`the same output for every 16th job of run ${seed}\n`);
    return null;
  };
}

/**
 * The scenario on a fresh data dir with `jobs` jobs; with `database` (a postgres:// URL of an
 * empty database) the server keeps its state there, and the checks after the last kill read it
 * from there.
 */
export async function serverCrashScenario(t: TestContext, dirs: string[], { database, jobs = DEFAULT_JOBS }: { database?: string; jobs?: number } = {}): Promise<void> {
  const started = Date.now();
  const seed = process.env.BOXGRID_CRASH_SEED ? Number(process.env.BOXGRID_CRASH_SEED) : randomInt(1, 2 ** 31);
  const random = rng(seed);
  // After about 15%, 45% and 80% of the jobs are done, ±5 points; down for 0–1.5 s each time.
  const points = [0.15, 0.45, 0.8].map((f) => Math.round(jobs * (f + (random() - 0.5) * 0.1)));
  const downMs = points.map(() => Math.round(random() * 1500));
  const replay = `seed ${seed} (BOXGRID_CRASH_SEED=${seed} replays it)`;
  const tag = database === undefined ? 'server-crash' : 'server-crash postgres';
  const say = (msg: string): void => {
    t.diagnostic(msg);
    console.log(`[${tag} ${((Date.now() - started) / 1000).toFixed(1)} s] ${msg}`);
  };
  say(`${replay}: kill -9 after ${points.join(', ')} jobs done, down ${downMs.join(', ')} ms`);

  const dataDir = await mkdtemp(join(tmpdir(), 'boxgrid-crash-'));
  dirs.push(dataDir);
  const serverArgs = ['--speculation', '0', ...(database === undefined ? [] : ['--db', database])];
  let server: Started = await startServerProcess(dataDir, serverArgs);
  const port = new URL(server.url).port;
  const adminToken = (await readFile(join(dataDir, 'admin.token'), 'utf8')).trim();
  const endpoint: Endpoint = { url: server.url };
  const admin = (): HttpClient => new HttpClient(endpoint.url, adminToken);

  // A server that exits without being told to is a failure of its own.
  let killing = false;
  let failure: string | null = null;
  const watch = (s: Started): void => {
    s.child.once('exit', (code, signal) => {
      if (!killing) failure ??= `the server exited by itself (${code ?? signal}): ${s.stderr().slice(-2000)}`;
    });
  };
  watch(server);
  const kill9 = async (s: Started): Promise<void> => {
    killing = true;
    if (s.child.exitCode !== null || s.child.signalCode !== null) return;
    const gone = exited(s.child);
    s.child.kill('SIGKILL');
    await gone;
  };

  // ── set up: the app, the hosts, one batch ──
  let hosts: SimHost[];
  let batchId: number;
  {
    const c = admin();
    try {
      await c.expect(201, 'POST', `/v1/projects/${PROJECT}/apps`, tinyAppBody(APP));
      // enrollHosts needs only the server's URL and an operator's client.
      hosts = await enrollHosts({ url: endpoint.url, client: c } as Pick<ServerUnderTest, 'url' | 'client'> as ServerUnderTest, HOSTS, 'crash');
      batchId = (await c.expect(201, 'POST', `/v1/projects/${PROJECT}/batches`, { app: APP, count: jobs })).body.batch.id as number;
    } finally {
      c.close();
    }
  }
  say(`${HOSTS} hosts enrolled, batch ${batchId} of ${jobs} jobs queued`);

  // ── the hosts ──
  const ledger = new Ledger();
  let done = false;
  const agents = hosts.map(
    (h) =>
      new CrashTolerantAgent(h, {
        endpoint, ledger, random: rng(Math.floor(random() * 2 ** 32)), dropRate: DROP_RATE, outputFor: outputFor(seed), maxTasks: MAX_TASKS,
        done: () => done || ledger.reported.size >= jobs, abandoned: () => failure !== null,
      }),
  );
  const running = Promise.all(agents.map((a) => a.run()));
  running.catch((e: unknown) => void (failure ??= `a host failed: ${(e as Error).stack}`));

  /** Waits until `cond`, failing on a host's or the server's failure, a stall or the deadline. */
  const until = async (cond: () => boolean, what: string): Promise<void> => {
    let last = ledger.reported.size;
    let lastAt = Date.now();
    while (!cond()) {
      if (failure !== null) throw new Error(`${failure} (${replay})`);
      if (ledger.problems.length > 0) {
        failure = 'the server answered what it must not';
        throw new Error(`${failure}, at ${ledger.reported.size} jobs done (${replay}): ${ledger.problems.slice(0, 10).join(' | ')}`);
      }
      if (ledger.reported.size !== last) {
        last = ledger.reported.size;
        lastAt = Date.now();
      }
      const why =
        Date.now() - lastAt > STALL_MS ? `no job done for ${STALL_MS / 1000} s` : Date.now() - started > DEADLINE_MS ? `the run passed ${DEADLINE_MS / 1000} s` : null;
      if (why !== null) {
        failure = why;
        throw new Error(`${why} while waiting for ${what}, at ${ledger.reported.size} jobs done (${replay}); ${await stuck()}; problems: ${ledger.problems.slice(0, 10).join(' | ')}`);
      }
      await sleep(20);
    }
  };
  /** What the server says about jobs that have not succeeded, for a stall's message. */
  const stuck = async (): Promise<string> => {
    const c = admin();
    try {
      const counts = (await c.call('GET', `/v1/projects/${PROJECT}/batches/${batchId}`, undefined, 5000)).body?.counts;
      const open = (await c.call('GET', `/v1/projects/${PROJECT}/jobs?batch=${batchId}&state=running&limit=5`, undefined, 5000)).body?.jobs ?? [];
      const held = open.map((j: { id: number }) => `job ${j.id}: tasks ${ledger.tasksOfJob.get(j.id)?.join(',') ?? 'none a host kept'}, reported new ${(ledger.tasksOfJob.get(j.id) ?? []).map((x) => ledger.newReports.get(x) ?? 0).join(',')}`);
      return `batch counts ${JSON.stringify(counts)}; running e.g. ${held.join('; ')}`;
    } catch (e) {
      return `the server did not answer (${(e as Error).message})`;
    } finally {
      c.close();
    }
  };

  let lastCount = 0;
  const ticker = setInterval(() => {
    const n = ledger.reported.size;
    console.log(`[${tag} ${((Date.now() - started) / 1000).toFixed(1)} s] ${n} jobs done (+${n - lastCount} in 5 s), ${ledger.retried} calls retried`);
    lastCount = n;
  }, 5000);
  try {
    // ── three crashes ──
    for (const [i, point] of points.entries()) {
      await until(() => ledger.reported.size >= point, `${point} jobs done`);
      const at = ledger.reported.size;
      await kill9(server);
      await sleep(downMs[i]!);
      const restarting = Date.now();
      // Back on the same port, so the hosts' URL holds (on another one only if the port was taken meanwhile).
      server = await startServerProcess(dataDir, [...serverArgs, '--listen', `127.0.0.1:${port}`]).catch(async (e: Error) => {
        say(`restart on port ${port} failed (${e.message.split('\n')[0]}); on a new port`);
        return startServerProcess(dataDir, serverArgs);
      });
      endpoint.url = server.url;
      killing = false;
      watch(server);
      // Every host sends its last answered report and work request again, as if those answers had been lost in the crash.
      await Promise.all(agents.map((a) => a.replayAnswered()));
      say(`kill ${i + 1}: SIGKILL at ${at} jobs done (point ${point}), back after ${downMs[i]} ms down + ${Date.now() - restarting} ms starting, at ${server.url}; ${ledger.retried} calls retried so far`);
    }
    await until(() => ledger.reported.size >= jobs, `all ${jobs} jobs done`);
    done = true;
    await running;
    if (failure !== null) throw new Error(`${failure} (${replay})`);
    say(
      `all done after ${((Date.now() - started) / 1000).toFixed(1)} s: ${ledger.accepted} reports accepted as new, ${ledger.replayedReports} as replays ` +
        `(${ledger.committedUnanswered} of them reports that got through before a kill but whose answer did not), ` +
        `${ledger.replayedAfterRestart} answered calls sent again after the restarts and recognised, ` +
        `${ledger.replayedWork} work requests replayed, ${ledger.dropped} answers dropped on purpose, ${ledger.retried} calls retried (${ledger.serverErrors} 5xx), ` +
        `${ledger.uploaded} outputs uploaded, ${ledger.present} already present`,
    );
  } finally {
    clearInterval(ticker);
    done = true;
    failure ??= 'the test ended'; // stops any host still retrying
    await running.catch(() => undefined);
    for (const a of agents) a.close();
  }
  failure = null;

  // ── what the hosts saw ──
  assert.deepEqual(ledger.problems, [], `the server answered what it must not (${replay})`);
  // A report is new once, or its first try got through unanswered (a kill) and its repeat is the replay.
  assert.equal(ledger.accepted + ledger.committedUnanswered, jobs, `reports accepted as new (${ledger.accepted}) or first answered as replays (${ledger.committedUnanswered}) (${replay})`);
  assert.ok(ledger.dropped > 0 && ledger.replayedReports > 0, `the run repeated reports (${ledger.dropped} answers dropped, ${ledger.replayedReports} replayed)`);
  assert.ok(ledger.replayedAfterRestart >= HOSTS, `answered calls sent again after the restarts: ${ledger.replayedAfterRestart}`);

  // ── what the server says ──
  const jobIds: number[] = [];
  const c = admin();
  try {
    const batch = (await c.expect(200, 'GET', `/v1/projects/${PROJECT}/batches/${batchId}`)).body;
    const counts = batch.counts as Record<string, number>;
    assert.equal(counts.succeeded, jobs, `batch counts ${JSON.stringify(counts)} (${replay})`);
    assert.equal(Object.values(counts).reduce((a, n) => a + n, 0), jobs, `batch counts add up to ${jobs}: ${JSON.stringify(counts)}`);
    assert.equal(batch.done, true);

    // Every job, paged: succeeded at its first attempt, its result the one task a host got for
    // it, whose report the server recorded exactly once.
    let cursor: string | null = null;
    do {
      const q = `batch=${batchId}&limit=1000${cursor === null ? '' : `&cursor=${cursor}`}`;
      const page = (await c.expect(200, 'GET', `/v1/projects/${PROJECT}/jobs?${q}`)).body;
      for (const j of page.jobs as Array<{ id: number; state: string; attempts: number; resultTaskId: number | null }>) {
        jobIds.push(j.id);
        const tasks = ledger.tasksOfJob.get(j.id) ?? [];
        assert.equal(tasks.length, 1, `job ${j.id} was handed out ${tasks.length} times (${replay})`);
        const recorded = (ledger.newReports.get(tasks[0]!) ?? 0) + (ledger.committedUnansweredTasks.has(tasks[0]!) ? 1 : 0);
        assert.equal(recorded, 1, `job ${j.id}'s task ${tasks[0]}'s report was recorded ${recorded} times (${replay})`);
        assert.deepEqual({ state: j.state, attempts: j.attempts, resultTaskId: j.resultTaskId }, { state: 'succeeded', attempts: 1, resultTaskId: tasks[0] }, `job ${j.id} (${replay})`);
      }
      cursor = page.nextCursor as string | null;
    } while (cursor !== null);
    assert.equal(new Set(jobIds).size, jobs, 'the batch lists each of its jobs once');
    assert.equal(ledger.tasksOfJob.size, jobs, 'the hosts got tasks of the batch\'s jobs only');

    // And jobs with their tasks: exactly one task, succeeded, with the output its host reported.
    // Every job whose report got through unanswered, and a sample of the others (all of them
    // are checked on disk below: reading 10,000 one by one takes too long on a loaded machine).
    const sample = new Set([...ledger.committedUnansweredTasks].map((x) => ledger.jobOfTask.get(x)!));
    const wanted = Math.min(jobs, sample.size + 500);
    while (sample.size < wanted) sample.add(jobIds[Math.floor(random() * jobIds.length)]!);
    const toRead = [...sample];
    let next = 0;
    const readJobs = async (): Promise<void> => {
      for (let i = next++; i < toRead.length; i = next++) {
        const jobId = toRead[i]!;
        const r = (await c.expect(200, 'GET', `/v1/projects/${PROJECT}/jobs/${jobId}`)).body;
        const tasks = r.tasks as Array<{ id: number; state: string; outputs: Record<string, { sha256: string }> }>;
        assert.deepEqual(tasks.map((x) => [x.id, x.state]), [[ledger.tasksOfJob.get(jobId)![0]!, 'succeeded']], `job ${jobId}'s tasks (${replay})`);
        assert.equal(tasks[0]!.outputs['result.txt']?.sha256, ledger.outputOfJob.get(jobId), `job ${jobId}'s output`);
      }
    };
    await Promise.all(Array.from({ length: 8 }, readJobs));
  } finally {
    c.close();
  }

  // ── the data dir (and database), as one more crash leaves it ──
  await kill9(server);
  // SQLite: the file's own checks too; PostgreSQL keeps its own consistency (and foreign keys) on commit.
  const integrity = database === undefined ? checkDataDir(dataDir) : checkBlobFiles(dataDir);
  assert.deepEqual(integrity.problems, [], `data dir integrity (${replay})`);
  const db = await openStoreReader(dataDir, database);
  try {
    const one = async (sql: string, ...params: unknown[]): Promise<number> => Number(Object.values((await db.all(sql, ...params))[0]!)[0]);
    assert.equal(await one('SELECT count(*) FROM jobs WHERE batch_id = ? AND state = ?', batchId, 'succeeded'), jobs, 'succeeded jobs stored');
    assert.equal(await one('SELECT count(*) FROM tasks'), jobs, 'tasks stored: one per job');
    assert.equal(await one("SELECT count(*) FROM (SELECT job_id FROM tasks WHERE state = 'succeeded' GROUP BY job_id HAVING count(*) = 1) AS once"), jobs, 'one succeeded task per job stored');
    // Each job's task is the one its host got, its result the job's, its outputs those reported.
    const rows = (await db.all('SELECT t.id, t.job_id, t.outputs, j.canonical_task_id FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE j.batch_id = ?', batchId)) as Array<{ id: number; job_id: number; outputs: string | null; canonical_task_id: number | null }>;
    assert.equal(rows.length, jobs);
    for (const r of rows) {
      const reported = ledger.outputOfJob.get(Number(r.job_id));
      const stored = (JSON.parse(r.outputs ?? '{}') as Record<string, { sha256: string }>)['result.txt']?.sha256;
      assert.deepEqual([Number(r.id), Number(r.canonical_task_id), stored], [ledger.tasksOfJob.get(Number(r.job_id))![0], Number(r.id), reported], `job ${r.job_id}'s task stored (${replay})`);
    }
    // Every blob the database knows is a file that hashes to its name, and every output reported is among them.
    const refs = ((await db.all('SELECT DISTINCT sha256 FROM blob_refs')) as Array<{ sha256: string }>).map((r) => r.sha256);
    const missing = refs.filter((d) => !integrity.digests.has(d));
    assert.deepEqual(missing, [], 'blobs recorded without their file');
    const outputs = new Set(ledger.outputOfJob.values());
    assert.deepEqual([...outputs].filter((d) => !refs.includes(d)), [], 'outputs reported but not recorded');
    const expected = createHash('sha256').update(outputFor(seed)(jobIds.find((id) => id % 16 === 8)!)!).digest('hex');
    assert.ok(refs.includes(expected), 'the shared output is recorded');
    const checked = database === undefined ? 'integrity_check ok, no foreign key violations' : 'PostgreSQL rows as the hosts saw them';
    say(`data intact: ${checked}, ${integrity.blobFiles} blob files verified (${refs.length} recorded), ${integrity.tmpFiles} cut-off uploads in blobs/tmp; took ${((Date.now() - started) / 1000).toFixed(1)} s in all`);
  } finally {
    await db.close();
  }
}

/** Rows of the stopped server's store: its SQLite file read-only, or its PostgreSQL database. SQL with `?` placeholders. */
async function openStoreReader(dataDir: string, database: string | undefined): Promise<{ all(sql: string, ...params: unknown[]): Promise<unknown[]>; close(): Promise<void> }> {
  if (database === undefined) {
    const db = openReadOnly(dataDir);
    return { all: async (sql, ...params) => db.prepare(sql).all(...params), close: async () => void db.close() };
  }
  const client = new pg.Client({ connectionString: database });
  await client.connect();
  return {
    all: async (sql, ...params) => {
      let n = 0;
      return (await client.query(sql.replace(/\?/g, () => `$${++n}`), params)).rows;
    },
    close: () => client.end(),
  };
}
