import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { newCredential } from '../src/service/credentials.js';
import {
  HttpClient, onCleanup, percentile, round, startServerProcess, type Benchmark, type Fields, type ServerUnderTest,
} from './harness.js';
import { batchBody } from './workload.js';

/** Simulated hosts; BENCH_DISPATCH_AGENTS overrides. */
const AGENTS = envInt('BENCH_DISPATCH_AGENTS', 1000);
/**
 * Threads that drive the simulated hosts: 0 runs them on the bench process's own event loop,
 * N splits them over N worker threads. BENCH_DISPATCH_WORKERS overrides. On the 2-core machine
 * this was written on, 1 or 2 workers measured no better than 0 (within the run-to-run noise of
 * ±20%): the server's thread is the bottleneck, and it needs one of the two cores itself.
 */
const WORKERS = envInt('BENCH_DISPATCH_WORKERS', 0);
/** Seconds of start-up excluded from the figures (hosts starting, JIT, SQLite and OS caches). */
const WARM_UP_SECONDS = envInt('BENCH_DISPATCH_WARMUP_SECONDS', 5);
/** Seconds of steady load the figures are measured over. */
const WINDOW_SECONDS = envInt('BENCH_DISPATCH_WINDOW_SECONDS', 20);
/** The hosts' first work requests are spread over this many ms (inside the warm-up): real hosts never start in step. */
const STAGGER_MS = 2000;
/** Hosts opening their connection at once before the run. */
const CONNECTING = 16;
/** Jobs queued before the hosts start: enough for twice the target over the whole run, so the queue never runs dry. */
const JOBS = Math.ceil(((WARM_UP_SECONDS + WINDOW_SECONDS + 2) * 10_000) / 100_000) * 100_000;
const BATCH = 100_000;
export const PROJECT = 'default';
export const APP = 'bench-tiny';

/** What every simulated host enrols with and offers: a 4-core machine, so one request takes up to 4 one-core tasks. */
export const HOST_RESOURCES = { cores: 4, memoryMiB: 16_384, diskMiB: 100_000, gpus: 0 };
export const HOST_PLATFORM = 'linux/amd64';
/** The agent's maxTasks: as many tasks as it has cores. */
export const HOST_MAX_TASKS = 4;

/** A tiny app: one core, 512 MiB, no inputs; the simulated hosts "run" it in no time. */
export function tinyAppBody(name: string): object {
  return { name, image: 'sci/tiny:1.0', command: ['true'], resources: { cores: 1, memoryMiB: 512 } };
}

// ── simulated hosts ───────────────────────────────────────────────────────

/** An enrolled host: what a real agent keeps in host.json. */
export interface SimHost {
  hostId: number;
  name: string;
  token: string;
  /** The server this host talks to (several servers: spread as a load balancer would). */
  url: string;
}

/**
 * Enrols `count` hosts through the real API: an operator makes one enrolment token with
 * `count` uses, then each host makes its own credential (as src/agent/host-credential.ts does:
 * only the id and sha256 of the secret travel) and trades the token for it at POST /agent/v1/enroll.
 * A few enrolments run at once. (The admin client's Authorization header rides along; the
 * enrol route has no auth hook and ignores it.)
 */
export async function enrollHosts(server: ServerUnderTest, count: number, namePrefix: string): Promise<SimHost[]> {
  const { client } = server;
  const enrollToken = (await client.expect(201, 'POST', '/v1/enroll-tokens', { uses: count, label: `bench ${namePrefix}` })).body.token as string;
  const hosts = new Array<SimHost>(count);
  let next = 0;
  const enrolOne = async (): Promise<void> => {
    for (let i = next++; i < count; i = next++) {
      const c = newCredential('host');
      const name = `${namePrefix}-${String(i).padStart(4, '0')}`;
      const r = await client.expect(201, 'POST', '/agent/v1/enroll', {
        enrollToken, name, resources: HOST_RESOURCES, platform: HOST_PLATFORM, credentialId: c.id, credentialHash: c.secretHash.toString('hex'),
      });
      hosts[i] = { hostId: r.body.hostId as number, name, token: c.token, url: server.url };
    }
  };
  await Promise.all(Array.from({ length: 8 }, enrolOne));
  return hosts;
}

export interface Assignment {
  taskId: number;
  jobId: number;
}

/**
 * One host's side of /agent/v1, as src/agent/agent.ts speaks it: its own keep-alive
 * connection and credential, a fresh requestId per work request, and a report per task.
 */
export class SimAgent {
  private readonly client: HttpClient;

  constructor(url: string, readonly host: SimHost) {
    this.client = new HttpClient(url, host.token);
  }

  /** GET /agent/v1/self: opens the host's connection (and checks its credential) before any timing. */
  async hello(): Promise<void> {
    const r = await this.client.expect(200, 'GET', '/agent/v1/self');
    if (r.body.id !== this.host.hostId) throw new Error(`host ${this.host.hostId}'s credential speaks for host ${r.body.id}`);
  }

  /** POST /agent/v1/work with the whole host free (it holds nothing when it asks). */
  async requestWork(maxTasks: number): Promise<{ tasks: Assignment[]; retryAfterMs: number; ms: number }> {
    const r = await this.client.expect(200, 'POST', '/agent/v1/work', {
      requestId: randomUUID(), free: HOST_RESOURCES, maxTasks, runtimes: ['docker'],
    });
    return { tasks: r.body.tasks as Assignment[], retryAfterMs: r.body.retryAfterMs as number, ms: r.ms };
  }

  /** POST /agent/v1/tasks/{id}/result: succeeded, no outputs (the agent always sends the map). */
  async reportSuccess(taskId: number, durationMs: number): Promise<number> {
    const r = await this.client.expect(200, 'POST', `/agent/v1/tasks/${taskId}/result`, {
      outcome: { kind: 'succeeded' }, durationMs, outputs: {},
    });
    if (r.body.taskState !== 'succeeded' || r.body.replayed !== false) throw new Error(`report of task ${taskId} answered ${r.text}`);
    return r.ms;
  }

  close(): void {
    this.client.close();
  }
}

// ── the load ──────────────────────────────────────────────────────────────

/** When the hosts start and when the measured window opens and closes: epoch ms, the same clock in every thread. */
interface Timeline {
  startAt: number;
  windowStart: number;
  windowEnd: number;
}

/**
 * What one thread's hosts did. Tasks count when their report completed inside the window;
 * latencies are of calls that both started and completed inside it.
 */
interface DriveResult {
  workMs: number[];
  reportMs: number[];
  tasksInWindow: number;
  workInWindow: number;
  /** Work answers inside the window that held no task: the queue ran dry (or nothing fit). */
  emptyInWindow: number;
  workTotal: number;
  claimedTotal: number;
  reportedTotal: number;
  /** Reports completed in each second of the window. */
  perSecond: number[];
}

/** Wall-clock ms with sub-ms resolution, comparable between worker threads (each has its own timeOrigin). */
const clock = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/**
 * Runs some of the hosts on this thread. First each opens its keep-alive connection (GET
 * /agent/v1/self, CONNECTING at a time), so that no measured call waits on a TCP handshake:
 * a thousand connections at once overflow the server's listen backlog (511), and the dropped
 * SYNs are retried only after 1, 3, 7… s, which left most hosts idle in a first version of
 * this benchmark. Then `connected()` gives the timeline, and from startAt (spread over
 * STAGGER_MS) each host asks for work, reports every task it got as succeeded (one call each,
 * in order, as the agent's delivery loop does), and asks again at once (its slots are free,
 * which wakes a real agent's work loop). An empty answer is followed by the server's
 * retryAfterMs, as a real agent would. No new request starts after windowEnd; tasks already
 * held are still reported, so none is left running.
 */
async function driveAgents(hosts: SimHost[], progress: SharedArrayBuffer, connected: () => Promise<Timeline>): Promise<DriveResult> {
  const reported = new Int32Array(progress);
  const agents = hosts.map((h) => new SimAgent(h.url, h));
  try {
    let next = 0;
    const connect = async (): Promise<void> => {
      for (let i = next++; i < agents.length; i = next++) await agents[i]!.hello();
    };
    await Promise.all(Array.from({ length: CONNECTING }, connect));
    const plan = await connected();

    const res: DriveResult = {
      workMs: [], reportMs: [], tasksInWindow: 0, workInWindow: 0, emptyInWindow: 0, workTotal: 0, claimedTotal: 0, reportedTotal: 0,
      perSecond: new Array<number>(Math.ceil((plan.windowEnd - plan.windowStart) / 1000)).fill(0),
    };
    const inWindow = (t: number): boolean => t >= plan.windowStart && t < plan.windowEnd;
    const loop = async (agent: SimAgent, i: number): Promise<void> => {
      await sleep(plan.startAt + (i * STAGGER_MS) / agents.length - clock());
      while (clock() < plan.windowEnd) {
        const asked = clock();
        const answer = await agent.requestWork(HOST_MAX_TASKS);
        const received = clock();
        res.workTotal++;
        res.claimedTotal += answer.tasks.length;
        if (inWindow(received)) {
          res.workInWindow++;
          if (answer.tasks.length === 0) res.emptyInWindow++;
          if (asked >= plan.windowStart) res.workMs.push(answer.ms);
        }
        if (answer.tasks.length === 0) {
          await sleep(Math.min(answer.retryAfterMs, plan.windowEnd - clock()));
          continue;
        }
        for (const t of answer.tasks) {
          const sent = clock();
          const ms = await agent.reportSuccess(t.taskId, Math.round(sent - received));
          const done = clock();
          res.reportedTotal++;
          Atomics.add(reported, 0, 1);
          if (inWindow(done)) {
            if (sent >= plan.windowStart) res.reportMs.push(ms);
            res.tasksInWindow++;
            res.perSecond[Math.floor((done - plan.windowStart) / 1000)]!++;
          }
        }
      }
    };
    await Promise.all(agents.map((a, i) => loop(a, i)));
    return res;
  } finally {
    for (const a of agents) a.close();
  }
}

/**
 * Runs the hosts here (workers = 0) or split over worker threads (this file is their script).
 * Once every thread's hosts are connected, `timeline()` fixes the run's times and every
 * thread gets them.
 */
async function driveAll(hosts: SimHost[], workers: number, progress: SharedArrayBuffer, timeline: () => Timeline): Promise<DriveResult[]> {
  if (workers === 0) return [await driveAgents(hosts, progress, async () => timeline())];
  const share = Math.ceil(hosts.length / workers);
  const threads: Worker[] = [];
  let ready = 0;
  const runs: Array<Promise<DriveResult>> = [];
  for (let w = 0; w < workers; w++) {
    const worker = new Worker(new URL(import.meta.url), {
      workerData: { role: WORKER_ROLE, hosts: hosts.slice(w * share, (w + 1) * share), progress },
    });
    threads.push(worker);
    const stop = onCleanup(() => void worker.terminate());
    runs.push(
      new Promise<DriveResult>((resolve, reject) => {
        worker.on('message', (m: { ready: true } | { result: DriveResult }) => {
          if ('result' in m) return resolve(m.result);
          if (++ready < workers) return;
          const t = timeline();
          for (const th of threads) th.postMessage(t);
        });
        worker.once('error', reject);
        worker.once('exit', (code) => reject(new Error(`agent worker ${w} exited (${code}) without a result`)));
      }).finally(stop),
    );
  }
  return Promise.all(runs);
}

const WORKER_ROLE = 'bench-dispatch-agents';
if (!isMainThread && (workerData as { role?: string } | null)?.role === WORKER_ROLE) {
  const d = workerData as { hosts: SimHost[]; progress: SharedArrayBuffer };
  const connected = (): Promise<Timeline> =>
    new Promise((resolve) => {
      parentPort!.once('message', resolve);
      parentPort!.postMessage({ ready: true });
    });
  driveAgents(d.hosts, d.progress, connected).then(
    (result) => parentPort!.postMessage({ result }),
    (e: unknown) => {
      throw e; // becomes the worker's 'error' event
    },
  );
}

// ── CPU accounting ────────────────────────────────────────────────────────

/** CPU seconds (user + system) a process has used, from /proc/PID/stat (clock ticks of 1/100 s). */
function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime: fields 14 and 15 of the line
}

interface CpuSample {
  at: number;
  /** All the servers' together. */
  server: number;
  bench: number;
}

function sampleCpu(serverPids: number[]): CpuSample {
  const u = process.cpuUsage(); // the whole bench process, worker threads included
  return { at: clock(), server: serverPids.reduce((a, pid) => a + processCpuSeconds(pid), 0), bench: (u.user + u.system) / 1e6 };
}

// ── the benchmark ─────────────────────────────────────────────────────────

/**
 * Dispatch throughput without containers: 1,000 enrolled hosts pull tiny tasks over HTTP
 * on loopback and report each one as succeeded at once, so the server's agent protocol
 * (authentication, claim, report, their transactions) is all that is measured.
 */
export const dispatchBenchmark: Benchmark = {
  name: 'dispatch',
  description:
    `${AGENTS.toLocaleString('en')} simulated hosts (enrolled through POST /agent/v1/enroll, ${HOST_RESOURCES.cores} cores each, maxTasks ${HOST_MAX_TASKS}) ` +
    `against a server in its own process over HTTP on 127.0.0.1, no containers: each loops POST /agent/v1/work (fresh requestId, all its capacity free), ` +
    `then POST /agent/v1/tasks/{id}/result (succeeded, no outputs) for each task it got, one after another, and asks again. ` +
    `${JOBS.toLocaleString('en')} one-core jobs of a tiny app (no inputs) are queued first. ` +
    `Each host first opens its keep-alive connection (GET /agent/v1/self, ${CONNECTING} at a time, untimed); their first work requests are spread over ${STAGGER_MS / 1000} s. Figures over a ${WINDOW_SECONDS} s window after ${WARM_UP_SECONDS} s of warm-up: tasksPerSecond = reports completed in the window / its length; ` +
    `requestP99Ms over every agent call (work and result) that started and completed in it. The hosts run on ${WORKERS === 0 ? "the bench process's event loop" : `${WORKERS} worker threads`}; ` +
    `serverCpuPercent and benchCpuPercent are CPU time over the window (100 = one core); serverCpuMsPerTask = the server's CPU time in the window / tasks, benchCpuMsPerRequest = the bench's / agent calls.`,
  targets: [{ field: 'tasksPerSecond', op: '>=', value: 5000, unit: 'tasks/s' }],
  timeoutSeconds: 300,
  async run(log): Promise<Fields> {
    const server = await startServerProcess();
    try {
      await server.client.expect(201, 'POST', `/v1/projects/${PROJECT}/apps`, tinyAppBody(APP));
      const m = await measureDispatch([server], { agents: AGENTS, jobs: JOBS, warmUpSeconds: WARM_UP_SECONDS, windowSeconds: WINDOW_SECONDS, workers: WORKERS }, log);
      if (m.succeeded !== m.reportedTotal || m.running !== 0) {
        throw new Error(`the server counts ${m.succeeded} succeeded and ${m.running} running jobs; the hosts reported ${m.reportedTotal}`);
      }
      log(`verified: ${m.succeeded.toLocaleString('en')} jobs succeeded, none left running`);
      return { ...m.fields, serverRssMb: server.memory().rssMb };
    } finally {
      await server.stop();
    }
  },
};

export interface DispatchLoad {
  agents: number;
  jobs: number;
  warmUpSeconds: number;
  windowSeconds: number;
  /** Threads driving the hosts (0: this one). */
  workers: number;
}

export interface DispatchMeasure {
  fields: Fields;
  /** Tasks the hosts reported in the whole run (all succeeded). */
  reportedTotal: number;
  /** What the servers count afterwards. */
  succeeded: number;
  running: number;
}

/**
 * The dispatch load against running servers (the app APP already created): enrols the hosts
 * through the first server, spreads them over all the servers (host i talks to server i mod n,
 * as a load balancer would), queues the jobs, drives the hosts (see driveAgents) and reads the
 * batches' counts back. The caller judges the counts.
 */
export async function measureDispatch(servers: ServerUnderTest[], load: DispatchLoad, log: (msg: string) => void): Promise<DispatchMeasure> {
  const { client } = servers[0]!;
  const { agents: AGENT_COUNT, jobs: JOB_COUNT, warmUpSeconds, windowSeconds, workers } = load;

  // ── enrol the hosts ──
  const enrolStarted = performance.now();
  const hosts = (await enrollHosts(servers[0]!, AGENT_COUNT, 'dispatch')).map((h, i) => ({ ...h, url: servers[i % servers.length]!.url }));
  log(`${hosts.length} hosts enrolled in ${((performance.now() - enrolStarted) / 1000).toFixed(1)} s`);

  // ── queue the jobs ──
  const batchIds: number[] = [];
  for (let b = 0; b * BATCH < JOB_COUNT; b++) {
    const size = Math.min(BATCH, JOB_COUNT - b * BATCH);
    const r = await client.expect(201, 'POST', `/v1/projects/${PROJECT}/batches`, batchBody({ app: APP, jobs: size, tag: `d${b}` }));
    batchIds.push(r.body.batch.id as number);
  }
  log(`${JOB_COUNT.toLocaleString('en')} jobs queued in ${batchIds.length} batches`);

  // ── run the hosts ──
  const progress = new SharedArrayBuffer(4);
  const reported = new Int32Array(progress);
  log(`connecting ${AGENT_COUNT} hosts to ${servers.length} server${servers.length === 1 ? '' : 's'}, ${workers === 0 ? 'on the main thread' : `on ${workers} worker threads`}`);
  // Set once every host is connected: CPU samples when the window opens and closes (timers
  // on this thread: with the hosts on it too they fire a little late, so each sample keeps
  // its own time), and a progress line every 5 s.
  let plan: Timeline | undefined;
  let sampled: Promise<unknown> = Promise.resolve();
  const samples: CpuSample[] = [];
  let ticker: NodeJS.Timeout | undefined;
  const pids = servers.map((x) => x.pid);
  const timeline = (): Timeline => {
    const startAt = clock() + 200;
    const windowStart = startAt + warmUpSeconds * 1000;
    plan = { startAt, windowStart, windowEnd: windowStart + windowSeconds * 1000 };
    log(`connected; ${warmUpSeconds} s warm-up, then ${windowSeconds} s measured`);
    const sampler = (at: number): Promise<void> => sleep(at - clock()).then(() => void samples.push(sampleCpu(pids)));
    sampled = Promise.all([sampler(plan.windowStart), sampler(plan.windowEnd)]);
    let lastCount = 0;
    let lastAt = clock();
    ticker = setInterval(() => {
      const n = Atomics.load(reported, 0);
      const now = clock();
      const phase = now < plan!.windowStart ? ' [warm-up]' : now < plan!.windowEnd ? '' : ' [draining]';
      log(`${n.toLocaleString('en')} tasks reported (${Math.round(((n - lastCount) * 1000) / (now - lastAt)).toLocaleString('en')}/s)${phase}`);
      lastCount = n;
      lastAt = now;
    }, 5000);
    return plan;
  };
  let results: DriveResult[];
  try {
    results = await driveAll(hosts, workers, progress, timeline);
    await sampled;
  } finally {
    clearInterval(ticker);
  }

  // ── merge and check ──
  const workMs = results.flatMap((r) => r.workMs);
  const reportMs = results.flatMap((r) => r.reportMs);
  const sum = (f: (r: DriveResult) => number): number => results.reduce((a, r) => a + f(r), 0);
  const tasks = sum((r) => r.tasksInWindow);
  const claimedTotal = sum((r) => r.claimedTotal);
  const workTotal = sum((r) => r.workTotal);
  const reportedTotal = sum((r) => r.reportedTotal);
  const emptyInWindow = sum((r) => r.emptyInWindow);
  const calls = sum((r) => r.workInWindow) + tasks; // agent calls completed in the window
  const perSecond = results[0]!.perSecond.map((_, i) => sum((r) => r.perSecond[i]!));
  if (emptyInWindow > 0) throw new Error(`${emptyInWindow} work requests in the window got no task: the queue ran dry, so the figure would understate the server (raise the job count)`);
  if (claimedTotal !== reportedTotal) throw new Error(`claimed ${claimedTotal} tasks but reported ${reportedTotal}`);
  let succeeded = 0;
  let running = 0;
  for (const id of batchIds) {
    const counts = (await client.expect(200, 'GET', `/v1/projects/${PROJECT}/batches/${id}`)).body.counts as Record<string, number>;
    succeeded += counts.succeeded ?? 0;
    running += counts.running ?? 0;
  }

  const [open, close] = samples as [CpuSample, CpuSample];
  const cpuSeconds = (close.at - open.at) / 1000;
  const all = summarize([...workMs, ...reportMs]);
  const work = summarize(workMs);
  const report = summarize(reportMs);
  const fields: Fields = {
    tasksPerSecond: Math.round(tasks / windowSeconds),
    agents: AGENT_COUNT,
    tasks,
    requestP99Ms: all.p99,
    requestP50Ms: all.p50,
    workP50Ms: work.p50,
    workP99Ms: work.p99,
    reportP50Ms: report.p50,
    reportP99Ms: report.p99,
    workRequests: sum((r) => r.workInWindow),
    tasksPerWorkRequest: round(claimedTotal / Math.max(1, workTotal), 2),
    requestsPerSecond: Math.round(calls / windowSeconds),
    windowSeconds,
    warmUpSeconds,
    workerThreads: workers,
    serverCpuPercent: Math.round(((close.server - open.server) / cpuSeconds) * 100),
    benchCpuPercent: Math.round(((close.bench - open.bench) / cpuSeconds) * 100),
    serverCpuMsPerTask: round(((close.server - open.server) * 1000) / Math.max(1, tasks), 3),
    benchCpuMsPerRequest: round(((close.bench - open.bench) * 1000) / Math.max(1, calls), 3),
    tasksReportedInAll: reportedTotal,
    slowestSecond: Math.min(...perSecond),
    fastestSecond: Math.max(...perSecond),
    tasksEachSecond: perSecond,
  };
  log(`${tasks.toLocaleString('en')} tasks in ${windowSeconds} s = ${fields.tasksPerSecond} tasks/s; p99 ${all.p99} ms (work ${work.p99}, report ${report.p99}); servers' CPU ${fields.serverCpuPercent}%, bench CPU ${fields.benchCpuPercent}%`);
  return { fields, reportedTotal, succeeded, running };
}

export function envInt(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return Number.isInteger(v) && v >= 0 && process.env[name] !== '' ? v : fallback;
}

/**
 * n, p50, p99 and max of a latency sample, rounded for a field. (harness.latencySummary takes
 * the max with a spread, which overflows the stack on the ~10^5 samples a window can hold.)
 */
export function summarize(ms: number[]): { n: number; p50: number; p99: number; max: number } {
  let max = -Infinity;
  for (const x of ms) if (x > max) max = x;
  return { n: ms.length, p50: round(percentile(ms, 50), 3), p99: round(percentile(ms, 99), 3), max: round(max, 3) };
}
