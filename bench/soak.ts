import { randomUUID } from 'node:crypto';
import { enrollHosts, HOST_MAX_TASKS, HOST_RESOURCES, PROJECT, tinyAppBody, type SimHost } from './dispatch.js';
import { HttpClient, percentile, rng, round, startServerProcess, type Benchmark, type Fields, type ServerUnderTest } from './harness.js';
import { batchBody } from './workload.js';

/** Minutes the load runs; BENCH_SOAK_MINUTES shortens it for a trial. */
const MINUTES = Number(process.env.BENCH_SOAK_MINUTES ?? 30);
const AGENTS = Number(process.env.BENCH_SOAK_AGENTS ?? 100);
/** Jobs submitted per second, in a batch every SUBMIT_EVERY_S seconds. */
const JOBS_PER_SECOND = Number(process.env.BENCH_SOAK_RATE ?? 100);
const SUBMIT_EVERY_S = 5;
/** A task "runs" this long (uniform), so 100 4-slot hosts hold about 100 × 4 × 2 s / … tasks at once. */
const TASK_MS: [number, number] = [500, 3500];
const HEARTBEAT_MS = 5000;
/** Figures compare the first and the last window of this many minutes (the first minute is warm-up). */
const WINDOW_MIN = Math.max(1, Math.min(5, Math.floor((MINUTES - 1) / 3)));
const APP = 'soak-tiny';

interface Minute {
  minute: number;
  rssMb: number;
  tasksDone: number;
  workP50: number;
  workP99: number;
  reportP99: number;
  listP99: number;
  queued: number;
}

/**
 * A bounded soak: a server process, simulated hosts pulling, heartbeating and reporting, steady
 * submissions and a watcher listing jobs, for MINUTES; every minute the server's memory and the
 * calls' latency. Drift = the last window against the first after a minute's warm-up: a leak
 * or a slowdown with size shows as growth there. Not run in CI (docs/reliability.md).
 */
export const soakBenchmark: Benchmark = {
  name: 'soak',
  description:
    `${MINUTES} minutes: ${AGENTS} simulated 4-slot hosts pulling work, heartbeating every ${HEARTBEAT_MS / 1000} s and reporting (tasks "run" ` +
    `${TASK_MS[0] / 1000}–${TASK_MS[1] / 1000} s), ${JOBS_PER_SECOND} jobs/s submitted in a batch every ${SUBMIT_EVERY_S} s, a watcher listing the newest jobs and counts ` +
    `every second. Per minute: the server's RSS and the p50/p99 of work, report and list calls. Drift: the last ${WINDOW_MIN} minutes against the ${WINDOW_MIN} after ` +
    'the first (warm-up). BENCH_SOAK_MINUTES, BENCH_SOAK_AGENTS, BENCH_SOAK_RATE resize it.',
  targets: [
    { field: 'rssDriftMb', op: '<=', value: 64, unit: 'MiB' },
    { field: 'workP99DriftPercent', op: '<=', value: 50, unit: '%' },
    { field: 'failedJobs', op: '<=', value: 0, unit: 'jobs' },
  ],
  timeoutSeconds: MINUTES * 60 + 600,
  async run(log): Promise<Fields> {
    const server = await startServerProcess({ timing: { leaseSeconds: 60, heartbeatSeconds: HEARTBEAT_MS / 1000, idlePollSeconds: 1, sweepSeconds: 5 } });
    try {
      return await soak(server, log);
    } finally {
      await server.stop();
    }
  },
};

async function soak(server: ServerUnderTest, log: (m: string) => void): Promise<Fields> {
  await server.client.expect(201, 'POST', `/v1/projects/${PROJECT}/apps`, tinyAppBody(APP));
  const hosts = await enrollHosts(server, AGENTS, 'soak');
  const end = Date.now() + MINUTES * 60_000;
  const random = rng(7);
  const samples = { work: [] as number[], report: [] as number[], list: [] as number[] };
  let tasksDone = 0;
  let submitted = 0;
  let errors = 0;

  const agent = async (h: SimHost): Promise<void> => {
    const c = new HttpClient(server.url, h.token);
    const held = new Map<number, number>(); // task → when it is "done"
    let lastBeat = Date.now();
    try {
      while (Date.now() < end) {
        const now = Date.now();
        for (const [taskId, doneAt] of held) {
          if (doneAt > now) continue;
          const r = await c.call('POST', `/agent/v1/tasks/${taskId}/result`, { outcome: { kind: 'succeeded' }, durationMs: 1000, outputs: {} });
          if (r.status === 200) {
            samples.report.push(r.ms);
            tasksDone++;
          } else errors++;
          held.delete(taskId);
        }
        if (now - lastBeat >= HEARTBEAT_MS && held.size > 0) {
          const r = await c.call('POST', '/agent/v1/heartbeat', { tasks: [...held.keys()].map((taskId) => ({ taskId })) });
          if (r.status !== 200) errors++;
          lastBeat = now;
        }
        let wait = 200;
        if (held.size < HOST_MAX_TASKS) {
          const free = HOST_MAX_TASKS - held.size;
          const r = await c.call('POST', '/agent/v1/work', {
            requestId: randomUUID(), free: { ...HOST_RESOURCES, cores: free }, maxTasks: free, runtimes: ['docker'],
          });
          if (r.status === 200) {
            samples.work.push(r.ms);
            for (const t of r.body.tasks as Array<{ taskId: number }>) held.set(t.taskId, Date.now() + TASK_MS[0] + random() * (TASK_MS[1] - TASK_MS[0]));
            if ((r.body.tasks as unknown[]).length === 0) wait = Math.min(r.body.retryAfterMs as number, 2000);
          } else errors++;
        }
        const next = Math.min(wait, ...[...held.values()].map((d) => Math.max(20, d - Date.now())));
        await sleep(next);
      }
    } finally {
      c.close();
    }
  };

  const submitter = async (): Promise<void> => {
    let n = 0;
    while (Date.now() < end) {
      const body = batchBody({ app: APP, jobs: JOBS_PER_SECOND * SUBMIT_EVERY_S, tag: `soak-${n++}` });
      const r = await server.client.call('POST', `/v1/projects/${PROJECT}/batches`, body);
      if (r.status === 201) submitted += JOBS_PER_SECOND * SUBMIT_EVERY_S;
      else errors++;
      await sleep(SUBMIT_EVERY_S * 1000);
    }
  };

  const watcher = async (): Promise<void> => {
    while (Date.now() < end) {
      const r = await server.client.call('GET', `/v1/projects/${PROJECT}/jobs?limit=50`);
      const c = await server.client.call('GET', `/v1/projects/${PROJECT}/counts`);
      if (r.status === 200 && c.status === 200) samples.list.push(r.ms, c.ms);
      else errors++;
      await sleep(1000);
    }
  };

  const minutes: Minute[] = [];
  const sampler = async (): Promise<void> => {
    let last = 0;
    for (let m = 1; Date.now() < end - 1000; m++) {
      await sleep(Math.max(0, Math.min(60_000, end - Date.now())));
      const take = <T>(a: T[]): T[] => a.splice(0, a.length);
      const [work, report, list] = [take(samples.work), take(samples.report), take(samples.list)];
      const counts = (await server.client.call('GET', `/v1/projects/${PROJECT}/counts`)).body as Record<string, number>;
      const row: Minute = {
        minute: m, rssMb: server.memory().rssMb, tasksDone: tasksDone - last,
        workP50: round(percentile(work, 50), 1), workP99: round(percentile(work, 99), 1), reportP99: round(percentile(report, 99), 1), listP99: round(percentile(list, 99), 1),
        queued: counts.queued ?? 0,
      };
      last = tasksDone;
      minutes.push(row);
      log(`minute ${m}: rss ${row.rssMb} MiB, ${row.tasksDone} tasks, work p50/p99 ${row.workP50}/${row.workP99} ms, report p99 ${row.reportP99} ms, list p99 ${row.listP99} ms, ${row.queued} queued`);
    }
  };

  await Promise.all([...hosts.map(agent), submitter(), watcher(), sampler()]);
  const counts = (await server.client.call('GET', `/v1/projects/${PROJECT}/counts`)).body as Record<string, number>;
  const first = minutes.slice(1, 1 + WINDOW_MIN);
  const lastW = minutes.slice(-WINDOW_MIN);
  const mean = (rows: Minute[], k: keyof Minute): number => rows.reduce((a, r) => a + r[k], 0) / Math.max(1, rows.length);
  const drift = (k: keyof Minute): number => round(((mean(lastW, k) - mean(first, k)) / Math.max(1e-9, mean(first, k))) * 100, 1);
  return {
    minutes: minutes.length,
    agents: AGENTS,
    jobsSubmitted: submitted,
    tasksDone,
    tasksPerSecond: round(tasksDone / (minutes.length * 60), 1),
    failedCalls: errors,
    failedJobs: counts.failed ?? 0,
    rssFirstMb: round(mean(first, 'rssMb'), 1),
    rssLastMb: round(mean(lastW, 'rssMb'), 1),
    rssDriftMb: round(mean(lastW, 'rssMb') - mean(first, 'rssMb'), 1),
    workP99FirstMs: round(mean(first, 'workP99'), 1),
    workP99LastMs: round(mean(lastW, 'workP99'), 1),
    workP99DriftPercent: drift('workP99'),
    reportP99DriftPercent: drift('reportP99'),
    listP99DriftPercent: drift('listP99'),
    serverPeakRssMb: server.memory().peakRssMb,
    perMinute: minutes.map(({ minute: _, ...r }) => ({ ...r })),
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
