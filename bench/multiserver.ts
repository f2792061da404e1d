/**
 * Several servers on one PostgreSQL database: the dispatch load (bench/dispatch.ts) against one
 * server and then three, each run on a fresh database, with the hosts spread over the servers
 * as a load balancer would. Afterwards the database itself is asked whether any job was handed
 * out twice or left unfinished, and a claim and a report are replayed in-process to count the
 * database round trips each costs (to project the figures onto bigger machines).
 */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { PostgresStore } from '../src/store/postgres/postgres-store.js';
import { DEFAULT_SCHEDULING } from '../src/scheduling/options.js';
import { APP, envInt, measureDispatch, tinyAppBody, PROJECT } from './dispatch.js';
import { round, startServerProcess, type Benchmark, type Fields, type ServerUnderTest } from './harness.js';

const POSTGRES = process.env.BENCH_POSTGRES ?? process.env.BOXGRID_TEST_POSTGRES ?? 'postgres://boxgrid@127.0.0.1:55432/boxgrid';
const AGENTS = envInt('BENCH_MULTISERVER_AGENTS', 300);
const JOBS = envInt('BENCH_MULTISERVER_JOBS', 30_000);
const WARM_UP_SECONDS = envInt('BENCH_MULTISERVER_WARMUP_SECONDS', 5);
const WINDOW_SECONDS = envInt('BENCH_MULTISERVER_WINDOW_SECONDS', 15);
/** Tasks one claim takes in the round-trip count (the simulated hosts' maxTasks). */
const CLAIM_SIZE = 4;

/** A database of its own for one run, on the server POSTGRES names; dropped by `drop`. */
async function freshDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `bxg_bench_${randomBytes(4).toString('hex')}`;
  const admin = async (sql: string): Promise<void> => {
    const c = new pg.Client({ connectionString: POSTGRES });
    await c.connect();
    try {
      await c.query(sql);
    } finally {
      await c.end();
    }
  };
  await admin(`CREATE DATABASE ${name}`);
  const url = new URL(POSTGRES);
  url.pathname = `/${name}`;
  // Not WITH (FORCE): that needs the right to end other roles' sessions, autovacuum's among
  // them. The servers are gone by now; a session still closing is waited for.
  const drop = async (): Promise<void> => {
    for (let attempt = 1; ; attempt++) {
      try {
        return await admin(`DROP DATABASE IF EXISTS ${name}`);
      } catch (e) {
        if ((e as { code?: string }).code !== '55006' || attempt >= 50) throw e; // object_in_use
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  return { url: url.toString(), drop };
}

interface RunResult {
  tasksPerSecond: number;
  duplicates: number;
  lost: number;
  serverCpuMsPerTask: number;
  requestP99Ms: number;
}

/** One run: `n` servers on a fresh database, the dispatch load, then the database's own account. */
async function runWith(n: number, log: (msg: string) => void): Promise<RunResult> {
  const db = await freshDatabase();
  const servers: ServerUnderTest[] = [];
  try {
    servers.push(await startServerProcess({ database: db.url }));
    for (let i = 1; i < n; i++) servers.push(await startServerProcess({ database: db.url, adminToken: servers[0]!.adminToken }));
    await servers[0]!.client.expect(201, 'POST', `/v1/projects/${PROJECT}/apps`, tinyAppBody(APP));
    const m = await measureDispatch(servers, { agents: AGENTS, jobs: JOBS, warmUpSeconds: WARM_UP_SECONDS, windowSeconds: WINDOW_SECONDS, workers: 0 }, (msg) => log(`[${n} server${n === 1 ? '' : 's'}] ${msg}`));
    const c = new pg.Client({ connectionString: db.url });
    await c.connect();
    let duplicates: number;
    try {
      duplicates = (await c.query('SELECT count(*)::int AS n FROM (SELECT job_id FROM tasks GROUP BY job_id HAVING count(*) > 1) d')).rows[0].n as number;
    } finally {
      await c.end();
    }
    // Every task a host was handed it reported; a job not counted succeeded, or still running, was lost.
    const lost = Math.max(0, m.reportedTotal - m.succeeded) + m.running;
    return {
      tasksPerSecond: m.fields.tasksPerSecond as number, duplicates, lost,
      serverCpuMsPerTask: m.fields.serverCpuMsPerTask as number, requestP99Ms: m.fields.requestP99Ms as number,
    };
  } finally {
    for (const s of servers) await s.stop();
    await db.drop();
  }
}

/**
 * Database round trips (statements, BEGIN and COMMIT included) of one claim of CLAIM_SIZE tasks,
 * one heartbeat of them, and one report, counted by the store itself on a fresh database.
 */
async function roundTrips(): Promise<{ claim: number; heartbeat: number; report: number }> {
  const db = await freshDatabase();
  const store = new PostgresStore({ connectionString: db.url });
  try {
    await store.migrate();
    const now = Date.now();
    const project = await store.createProject('trips', 1, now);
    const app = await store.createAppVersion(project.id, {
      name: 'trips', description: '', image: 'sci/tiny:1', imageDigest: null, command: ['true'], resources: { cores: 1, memoryMiB: 512, diskMiB: 100, gpus: 0 },
      maxRuntimeSeconds: 60, maxAttempts: 3, replicas: 1, quorum: 1, maxReplicas: 2, adaptiveReplication: false, validator: null, checkpointing: false, nativeCommand: null, platforms: ['linux/amd64'],
    }, 'new', now);
    const job = { args: [], env: {}, inputs: {}, resources: {}, priority: 0, deadline: null, labels: {}, selector: {}, params: {} };
    await store.insertJobs({ projectId: project.id, app, batch: { labels: {} }, jobs: Array.from({ length: CLAIM_SIZE * 2 }, () => job), idempotency: null, now });
    const site = await store.createSite('trips', now);
    const host = await store.createHost({ siteId: site.id, name: 'h', resources: { cores: 4, memoryMiB: 16_384, diskMiB: 100_000, gpus: 0 }, platform: 'linux/amd64' }, now);
    const counted = async <T>(fn: () => Promise<T>): Promise<[T, number]> => {
      const before = store.roundTrips;
      const r = await fn();
      return [r, store.roundTrips - before];
    };
    const claimOf = (requestId: string) => store.claimTasks({
      hostId: host.id, requestId, leaseMs: 60_000, maxQueues: 64, headsPerQueue: CLAIM_SIZE + 2, duplicates: null,
      plan: (g) => ({
        picks: g.queues.flatMap((q) => q.heads.map((h) => ({ jobId: h.jobId, queueId: q.queueId, runtime: 'docker' as const, cost: 1 }))).slice(0, CLAIM_SIZE),
        passes: new Map([[project.id, (g.projects.get(project.id)?.pass ?? 0) + 1]]), reserve: undefined, virtualTime: g.virtualTime + 1,
      }),
    }, now);
    // A first claim fills the store's caches (the queue's placement, the app, the project's
    // name), as a running server's are: the second is what a claim costs.
    await claimOf('warm');
    const [claim, claimTrips] = await counted(() => claimOf('counted'));
    if (claim.tasks.length !== CLAIM_SIZE) throw new Error(`the round-trip claim took ${claim.tasks.length} tasks, not ${CLAIM_SIZE}`);
    const [, heartbeatTrips] = await counted(() => store.heartbeat({ hostId: host.id, leaseMs: 60_000, tasks: claim.tasks.map((t) => ({ taskId: t.task.id, progress: 0.5, usage: null, log: null })) }, now + 1));
    const [, reportTrips] = await counted(() => store.reportTask({
      hostId: host.id, taskId: claim.tasks[0]!.task.id, outcome: { kind: 'succeeded' }, durationMs: 5, usage: null, outputs: {}, log: null,
      reportHash: 'x', rules: DEFAULT_SCHEDULING,
    }, now + 2));
    return { claim: claimTrips, heartbeat: heartbeatTrips, report: reportTrips };
  } finally {
    await store.close();
    await db.drop();
  }
}

export const multiserverBenchmark: Benchmark = {
  name: 'multiserver',
  description:
    `The dispatch benchmark's load (${AGENTS} simulated hosts, 4 one-core tasks per work request, each reported as succeeded at once; ${JOBS.toLocaleString('en')} jobs queued) ` +
    `against boxgrid servers on one PostgreSQL database (${POSTGRES.replace(/\/\/[^@]*@/, '//')}), each server its own process, host i talking to server i mod n: ` +
    `first 1 server, then 3, each on a fresh database, ${WINDOW_SECONDS} s measured after ${WARM_UP_SECONDS} s of warm-up. ` +
    `duplicates = jobs with more than one task in the database afterwards (no speculation happens: tasks end at once); lost = tasks reported but not counted succeeded, plus jobs left running. ` +
    `roundTripsPerClaim/Heartbeat/Report: statements one claim of ${CLAIM_SIZE} tasks (that charges a project and moves the fair-share clock; after a first claim filled the caches), a heartbeat of those ${CLAIM_SIZE}, and one report send to the database (BEGIN and COMMIT and the statistics statement included), counted by the store.`,
  targets: [
    { field: 'duplicates', op: '<=', value: 0, unit: 'jobs' },
    { field: 'lost', op: '<=', value: 0, unit: 'tasks' },
    { field: 'scaling', op: '>=', value: 1, unit: '× (3 servers ÷ 1)' },
  ],
  timeoutSeconds: 600,
  async run(log): Promise<Fields> {
    const one = await runWith(1, log);
    const three = await runWith(3, log);
    const trips = await roundTrips();
    log(`round trips: claim of ${CLAIM_SIZE} ${trips.claim}, heartbeat ${trips.heartbeat}, report ${trips.report}`);
    return {
      servers1TasksPerSecond: one.tasksPerSecond,
      servers3TasksPerSecond: three.tasksPerSecond,
      scaling: round(three.tasksPerSecond / Math.max(1, one.tasksPerSecond), 2),
      duplicates: one.duplicates + three.duplicates,
      lost: one.lost + three.lost,
      roundTripsPerClaim: trips.claim,
      roundTripsPerHeartbeat: trips.heartbeat,
      roundTripsPerReport: trips.report,
      roundTripsPerTask: round((trips.claim + CLAIM_SIZE * trips.report) / CLAIM_SIZE, 1),
      servers1CpuMsPerTask: one.serverCpuMsPerTask,
      servers3CpuMsPerTask: three.serverCpuMsPerTask,
      servers1RequestP99Ms: one.requestP99Ms,
      servers3RequestP99Ms: three.requestP99Ms,
      agents: AGENTS,
      windowSeconds: WINDOW_SECONDS,
    };
  },
};
