import { latencySummary, rng, round, startServerProcess, type Benchmark, type Fields } from './harness.js';
import { appBody, batchBody } from './workload.js';

const BATCH = 100_000;
/** Ten batches of 100k: which app each uses, and which are cancelled whole. */
const BATCH_APPS = ['sim-a', 'sim-b', 'sim-a', 'sim-c', 'sim-a', 'sim-b', 'sim-a', 'sim-d', 'sim-b', 'sim-a'] as const;
const CANCELLED_BATCHES = new Set([3, 5, 7]);
/** Single jobs of sim-a cancelled one by one: a sparse state within a large app. */
const SINGLE_CANCELS = 200;
const DETAIL_REQUESTS = 3000;
const LIST_SESSIONS = 650;
const PAGES_PER_SESSION = 5;
const PAGE = 50;
const WARM_UP = 300;

/**
 * 1,000,000 stored jobs (four apps, batch and per-job labels, three batches cancelled, a few
 * hundred single jobs cancelled), then sequential requests over real HTTP: job detail for
 * random ids, and filtered lists that follow nextCursor for a few pages.
 */
export const queryBenchmark: Benchmark = {
  name: 'query',
  description:
    `With 1,000,000 jobs stored (ten 100k batch POSTs; apps sim-a..d, labels campaign=cN per batch and shard=sN per job; ` +
    `batches ${[...CANCELLED_BATCHES].map((b) => b + 1).join(', ')} of 10 and ${SINGLE_CANCELS} single sim-a jobs cancelled): p99 over ${DETAIL_REQUESTS} sequential GET /v1/projects/default/jobs/:id ` +
    `for random ids, and over the pages of ${LIST_SESSIONS} list sessions (limit=${PAGE}, first page then nextCursor up to ` +
    `${PAGES_PER_SESSION - 1} more pages) cycling through no filter and state/app/label/batch filter combinations; after ${WARM_UP} warm-up requests of each kind. ` +
    `serverRssMb is the server process's VmRSS right after the run, serverPeakRssMb its VmHWM.`,
  targets: [
    { field: 'detailP99Ms', op: '<=', value: 10, unit: 'ms' },
    { field: 'listP99Ms', op: '<=', value: 10, unit: 'ms' },
    { field: 'serverRssMb', op: '<=', value: 300, unit: 'MB' },
  ],
  timeoutSeconds: 1200,
  async run(log): Promise<Fields> {
    const server = await startServerProcess();
    try {
      const { client } = server;
      const P = '/v1/projects/default';
      for (const app of new Set(BATCH_APPS)) await client.expect(201, 'POST', `${P}/apps`, appBody(app));

      // ── load ──
      const loadStarted = performance.now();
      const batchIds: number[] = [];
      const ranges: Array<{ first: number; last: number }> = [];
      for (let b = 0; b < BATCH_APPS.length; b++) {
        const body = batchBody({
          app: BATCH_APPS[b]!, jobs: BATCH, tag: `b${b}`, labels: { campaign: `c${b % 3}` }, jobLabels: (i) => ({ shard: `s${i % 16}` }),
        });
        const res = await client.expect(201, 'POST', `${P}/batches`, body);
        const id = res.body.batch.id as number;
        batchIds.push(id);
        const newest = await client.expect(200, 'GET', `${P}/jobs?batch=${id}&limit=1`);
        const last = newest.body.jobs[0].id as number;
        ranges.push({ first: last - BATCH + 1, last });
        log(`loaded batch ${b + 1}/${BATCH_APPS.length} (${BATCH_APPS[b]}) in ${(res.ms / 1000).toFixed(2)} s`);
      }
      for (const b of CANCELLED_BATCHES) {
        const r = await client.expect(200, 'POST', `${P}/batches/${batchIds[b]}/cancel`);
        if (r.body.cancelled !== BATCH) throw new Error(`cancel batch ${batchIds[b]}: cancelled ${r.body.cancelled}`);
      }
      const rand = rng(42);
      const simA = BATCH_APPS.flatMap((a, b) => (a === 'sim-a' ? [ranges[b]!] : []));
      const cancelled = new Set<number>();
      while (cancelled.size < SINGLE_CANCELS) {
        const range = simA[Math.floor(rand() * simA.length)]!;
        const id = range.first + Math.floor(rand() * BATCH);
        if (cancelled.has(id)) continue;
        await client.expect(200, 'POST', `${P}/jobs/${id}/cancel`);
        cancelled.add(id);
      }
      let stored = 0;
      for (const id of batchIds) {
        const d = await client.expect(200, 'GET', `${P}/batches/${id}`);
        stored += Object.values(d.body.counts as Record<string, number>).reduce((a, b) => a + b, 0);
      }
      if (stored !== BATCH * BATCH_APPS.length) throw new Error(`expected ${BATCH * BATCH_APPS.length} jobs stored, found ${stored}`);
      const loadSeconds = round((performance.now() - loadStarted) / 1000, 1);
      log(`${stored.toLocaleString('en')} jobs stored in ${loadSeconds} s`);

      // ── job detail ──
      const randomId = (): number => {
        const range = ranges[Math.floor(rand() * ranges.length)]!;
        return range.first + Math.floor(rand() * BATCH);
      };
      const detail = async (): Promise<number> => {
        const id = randomId();
        const r = await client.expect(200, 'GET', `${P}/jobs/${id}`);
        if (r.body.job.id !== id) throw new Error(`GET job ${id} answered job ${r.body.job.id}`);
        return r.ms;
      };
      for (let i = 0; i < WARM_UP; i++) await detail();
      const detailMs: number[] = [];
      for (let i = 0; i < DETAIL_REQUESTS; i++) detailMs.push(await detail());
      const detailStats = latencySummary(detailMs);
      log(`detail: ${JSON.stringify(detailStats)}`);

      // ── filtered lists ──
      const queries: string[] = [
        '',
        `batch=${batchIds[4]}`,
        'state=queued&app=sim-a',
        'state=queued&app=sim-b',
        'state=cancelled&app=sim-b',
        'state=queued&app=sim-c',
        'state=cancelled&app=sim-a',
        'app=sim-d',
        'state=queued',
        'label=campaign%3Dc1',
        'label=campaign%3Dc1&state=queued',
        'label=shard%3Ds3&app=sim-b',
        'label=shard%3Ds5&state=cancelled',
        'label=campaign%3Dc0&app=sim-c&state=queued',
        `batch=${batchIds[5]}&state=cancelled`,
        `batch=${batchIds[0]}&state=queued`,
        `batch=${batchIds[2]}&label=shard%3Ds7`,
      ];
      const perQuery = new Map<string, number[]>(queries.map((q) => [q, []]));
      const session = async (q: string, into: number[] | null): Promise<void> => {
        let cursor: string | null = null;
        for (let page = 0; page < PAGES_PER_SESSION; page++) {
          const path: string = `${P}/jobs?${q === '' ? '' : `${q}&`}limit=${PAGE}${cursor ? `&cursor=${cursor}` : ''}`;
          const r = await client.expect(200, 'GET', path);
          into?.push(r.ms);
          cursor = r.body.nextCursor;
          if (cursor === null) break;
        }
      };
      for (let i = 0; i < Math.ceil(WARM_UP / PAGES_PER_SESSION); i++) await session(queries[i % queries.length]!, null);
      for (let i = 0; i < LIST_SESSIONS; i++) {
        const q = queries[i % queries.length]!;
        await session(q, perQuery.get(q)!);
      }
      const listMs = [...perQuery.values()].flat();
      const listStats = latencySummary(listMs);
      const listByQuery: Fields = {};
      for (const [q, ms] of perQuery) {
        const s = latencySummary(ms);
        listByQuery[q === '' ? '(no filter)' : decodeURIComponent(q)] = { requests: s.n, p50Ms: s.p50, p99Ms: s.p99 };
      }
      log(`list: ${JSON.stringify(listStats)}`);
      for (const [q, s] of Object.entries(listByQuery)) log(`  ${q}: ${JSON.stringify(s)}`);

      const mem = server.memory();
      log(`server RSS ${mem.rssMb} MB after the run (peak ${mem.peakRssMb} MB)`);
      return {
        jobsStored: stored,
        detailP99Ms: detailStats.p99,
        listP99Ms: listStats.p99,
        serverRssMb: mem.rssMb,
        detailRequests: detailStats.n,
        detailP50Ms: detailStats.p50,
        listRequests: listStats.n,
        listP50Ms: listStats.p50,
        serverPeakRssMb: mem.peakRssMb,
        loadSeconds,
        listByQuery,
      };
    } finally {
      await server.stop();
    }
  },
};
