/**
 * Slurm pilots against plain sbatch: the same 200 one-core tasks (`true`), first through
 * boxgrid (a server, `boxgrid site slurm` passes, pilot jobs that pull the tasks and exit when
 * idle), then as 200 individual sbatch jobs. Each side is timed from its tasks being queued to
 * the last one done. Needs a running Slurm (scripts/start-slurm.sh) and bubblewrap.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { SlurmSite, thisBoxgrid, PILOT_JOB_NAME } from '../src/sites/slurm/slurm-site.js';
import { envInt } from './dispatch.js';
import { onCleanup, round, startServerProcess, type Benchmark, type Fields } from './harness.js';

const run = promisify(execFile);
const TASKS = envInt('BENCH_PILOTS_TASKS', 200);
const PILOTS = envInt('BENCH_PILOTS_MAX', 2);
const SBATCH_NAME = 'boxgrid-bench-sbatch';
const PROJECT = 'default';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function inQueue(name: string): Promise<number> {
  const { stdout } = await run('squeue', ['--noheader', '--me', '--name', name, '--format', '%i']);
  return stdout.split('\n').filter((l) => l.trim() !== '').length;
}

/** Polls until `done()`, at most `limitMs`; for states only a query tells. */
async function until(done: () => Promise<boolean>, limitMs: number, what: string): Promise<void> {
  const end = Date.now() + limitMs;
  while (!(await done())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

export const pilotsBenchmark: Benchmark = {
  name: 'pilots',
  description:
    `${TASKS} one-core tasks that run \`true\`, first through boxgrid Slurm pilots (a server in its own process; \`boxgrid site slurm\` passes every 2 s with ` +
    `${PILOTS} one-core pilots at most, each \`boxgrid agent --native\` in bubblewrap, exiting after 3 s idle), then as ${TASKS} individual \`sbatch --wrap true\` jobs, ` +
    'on the single-node Slurm of scripts/start-slurm.sh (sched_interval=2). pilotSeconds: from the batch submitted to its last task succeeded; ' +
    'sbatchSeconds: from the first sbatch to the last job gone from squeue; ratio = sbatchSeconds / pilotSeconds.',
  targets: [{ field: 'ratio', op: '>=', value: 1, unit: '× (sbatch time ÷ pilot time)' }],
  timeoutSeconds: 900,
  async run(log): Promise<Fields> {
    if ((await inQueue(PILOT_JOB_NAME)) + (await inQueue(SBATCH_NAME)) > 0) throw new Error('pilots or bench jobs of an earlier run are still in squeue');
    const workRoot = mkdtempSync(join(tmpdir(), 'boxgrid-bench-pilots-'));
    const removeRoot = onCleanup(() => rmSync(workRoot, { recursive: true, force: true }));

    // ── through pilots ──
    const server = await startServerProcess({ timing: { leaseSeconds: 60, heartbeatSeconds: 5, idlePollSeconds: 1, sweepSeconds: 10 } });
    let pilotSeconds: number;
    let pilotJobs = 0;
    try {
      const { client } = server;
      await client.expect(201, 'POST', `/v1/projects/${PROJECT}/apps`, {
        name: 'tiny-native', image: 'unused/image:1', command: ['/never'], nativeCommand: ['true'], resources: { cores: 1, memoryMiB: 64, diskMiB: 16 },
        maxRuntimeSeconds: 60,
      });
      const token = (await client.expect(201, 'POST', '/v1/enroll-tokens', { uses: 1000, label: 'bench pilots' })).body.token as string;
      const site = new SlurmSite({
        server: server.url, enrollToken: token, partition: null, account: null, jobName: PILOT_JOB_NAME,
        shape: { resources: { cores: 1, memoryMiB: 512, diskMiB: 1024, gpus: 0 }, runtime: 'native', maxPilots: PILOTS, maxPending: PILOTS },
        walltimeSeconds: 600, idleSeconds: 3, workRoot, boxgrid: thisBoxgrid(), log,
      });
      const started = performance.now();
      const batch = (await client.expect(201, 'POST', `/v1/projects/${PROJECT}/batches`, { app: 'tiny-native', count: TASKS })).body.batch.id as number;
      let done = false;
      const passes = (async () => {
        while (!done) {
          pilotJobs += (await site.pass()).submitted.length;
          await sleep(2000);
        }
      })();
      try {
        await until(async () => {
          const counts = (await client.expect(200, 'GET', `/v1/projects/${PROJECT}/batches/${batch}`)).body.counts as Record<string, number>;
          if ((counts.failed ?? 0) > 0) throw new Error(`${counts.failed} tasks failed under pilots`);
          return counts.succeeded === TASKS;
        }, 600_000, 'the pilots to run the batch');
      } finally {
        done = true; // the passes stop however the wait ended, before the server does
        await passes;
      }
      pilotSeconds = (performance.now() - started) / 1000;
      log(`pilots: ${TASKS} tasks in ${pilotSeconds.toFixed(1)} s with ${pilotJobs} pilot jobs`);
      await until(async () => (await inQueue(PILOT_JOB_NAME)) === 0, 120_000, 'the pilots to exit');
    } finally {
      await server.stop();
    }

    // ── as sbatch jobs ──
    const started = performance.now();
    for (let i = 0; i < TASKS; i++) {
      await run('sbatch', ['--parsable', '--job-name', SBATCH_NAME, '--cpus-per-task', '1', '--mem', '64M', '--time', '1', '--output', '/dev/null', '--wrap', 'true']);
    }
    const submitSeconds = (performance.now() - started) / 1000;
    await until(async () => (await inQueue(SBATCH_NAME)) === 0, 600_000, 'the sbatch jobs to finish');
    const sbatchSeconds = (performance.now() - started) / 1000;
    log(`sbatch: ${TASKS} jobs submitted in ${submitSeconds.toFixed(1)} s, all done in ${sbatchSeconds.toFixed(1)} s`);
    removeRoot();
    return {
      pilotSeconds: round(pilotSeconds, 1),
      sbatchSeconds: round(sbatchSeconds, 1),
      ratio: round(sbatchSeconds / pilotSeconds, 2),
      tasks: TASKS,
      pilotJobs,
      sbatchSubmitSeconds: round(submitSeconds, 1),
    };
  },
};
