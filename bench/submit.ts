import { median, round, startServerProcess, type Benchmark, type Fields } from './harness.js';
import { appBody, batchBody } from './workload.js';

const JOBS = 100_000;
const RUNS = 3;

/**
 * One 100,000-job batch in one POST, "jobs" list form with distinct args per job, against a
 * server in its own process over real HTTP. The clock runs from sending the request until the
 * 201 has arrived; the store commits with synchronous=FULL, so the 201 means durable.
 */
export const submitBenchmark: Benchmark = {
  name: 'submit',
  description:
    `POST /v1/projects/default/batches with ${JOBS.toLocaleString('en')} jobs in the "jobs" list form (distinct args per job), ` +
    `one request, timed from sending it until the 201 arrives; verified by GET of the batch. ` +
    `One warm-up batch, then the median of ${RUNS} runs.`,
  targets: [{ field: 'jobsPerSecond', op: '>=', value: 100_000, unit: 'jobs/s' }],
  timeoutSeconds: 600,
  async run(log): Promise<Fields> {
    const server = await startServerProcess();
    try {
      const { client } = server;
      await client.expect(201, 'POST', '/v1/projects/default/apps', appBody('bench-sim'));

      const bodies = Array.from({ length: RUNS + 1 }, (_, r) => batchBody({ app: 'bench-sim', jobs: JOBS, tag: `run${r}`, labels: { bench: 'submit' } }));
      const requestBytes = bodies[0]!.length;
      log(`request body ${(requestBytes / 1e6).toFixed(1)} MB`);

      const runs: Array<{ seconds: number; jobsPerSecond: number }> = [];
      const rawSeconds: number[] = [];
      for (let r = 0; r <= RUNS; r++) {
        const warmUp = r === 0;
        const res = await client.expect(201, 'POST', '/v1/projects/default/batches', bodies[r]);
        const seconds = res.ms / 1000;
        if (res.body?.jobCount !== JOBS) throw new Error(`201 reported jobCount ${res.body?.jobCount}`);
        const batchId = res.body.batch.id as number;
        const detail = await client.expect(200, 'GET', `/v1/projects/default/batches/${batchId}`);
        const stored = Object.values(detail.body.counts as Record<string, number>).reduce((a, b) => a + b, 0);
        if (stored !== JOBS || detail.body.counts.queued !== JOBS || detail.body.batch.size !== JOBS) {
          throw new Error(`batch ${batchId}: expected ${JOBS} queued jobs, found ${JSON.stringify(detail.body.counts)}`);
        }
        const jobsPerSecond = JOBS / seconds;
        log(`${warmUp ? 'warm-up' : `run ${r}`}: ${seconds.toFixed(3)} s, ${Math.round(jobsPerSecond).toLocaleString('en')} jobs/s (batch ${batchId} verified)`);
        if (!warmUp) {
          runs.push({ seconds: round(seconds, 3), jobsPerSecond: Math.round(jobsPerSecond) });
          rawSeconds.push(seconds);
        }
      }
      const seconds = median(rawSeconds);
      const mem = server.memory();
      return {
        jobs: JOBS,
        seconds: round(seconds, 3),
        jobsPerSecond: Math.round(JOBS / seconds),
        requestBytes,
        runs,
        serverRssMb: mem.rssMb,
        serverPeakRssMb: mem.peakRssMb,
      };
    } finally {
      await server.stop();
    }
  },
};
