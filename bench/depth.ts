import { round, startServerProcess, type Benchmark, type Fields, type ServerUnderTest } from './harness.js';
import { enrollHosts, envInt, SimAgent, summarize, tinyAppBody } from './dispatch.js';
import { batchBody } from './workload.js';

const SMALL = 10_000;
const LARGE = 1_000_000;
/** Simulated hosts claiming at once. */
const AGENTS = 4;
/** Timed claims at each depth; BENCH_DEPTH_CLAIMS overrides. */
const CLAIMS = envInt('BENCH_DEPTH_CLAIMS', 4000);
/** Untimed claims first on each server (JIT, page cache, the GC of the load). */
const WARM_UP = 500;
/** Claims per round: between two top-ups, so a queue never drifts more than this below its depth. */
const ROUND = 200;
const BATCH = 100_000;
const PROJECT = 'default';
const APP = 'bench-depth';

/**
 * Claim latency against queue depth. Two servers, each in its own process and identical but
 * for their queue: one holds 10,000 queued jobs, the other 1,000,000 (filled through the
 * batch API). The same few hosts (enrolled on each) claim one task per work request, report it
 * at once and ask again; the timed rounds alternate between the two servers, so that other
 * work on the machine, which comes and goes, weighs on both figures alike. After every round
 * the jobs it took are submitted again, so each queue stays at its depth (within ROUND) and no
 * tasks pile up.
 */
export const depthBenchmark: Benchmark = {
  name: 'depth',
  description:
    `POST /agent/v1/work latency with ${SMALL.toLocaleString('en')} vs ${LARGE.toLocaleString('en')} queued jobs (one app, so one queue), over HTTP on 127.0.0.1 to two servers ` +
    `in their own processes, identical but for the depth: on each, ${AGENTS} enrolled hosts at once ask for 1 task (maxTasks 1), report it succeeded and ask again. ` +
    `${WARM_UP} untimed claims on each, then ${CLAIMS.toLocaleString('en')} timed claims on each in rounds of ${ROUND} that alternate between the servers; ` +
    `after each round its jobs are submitted again (a small batch, outside the timed calls), so the depth holds. ` +
    `The 1M queue is filled through POST …/batches, ${BATCH.toLocaleString('en')} jobs per batch. ratio = p99At1M / p99At10k.`,
  targets: [{ field: 'ratio', op: '<=', value: 1.5, unit: '(p99 at 1M / p99 at 10k)' }],
  timeoutSeconds: 600,
  async run(log): Promise<Fields> {
    const queues: Queue[] = [];
    try {
      for (const depth of [SMALL, LARGE]) {
        const q = await Queue.start(depth);
        queues.push(q);
        const started = performance.now();
        await q.submit(depth);
        log(`server ${queues.length}: ${depth.toLocaleString('en')} jobs queued in ${((performance.now() - started) / 1000).toFixed(1)} s`);
      }
      const [small, large] = queues as [Queue, Queue];

      for (let n = 0; n < WARM_UP; n += ROUND) {
        for (const q of queues) await q.claimRound(Math.min(ROUND, WARM_UP - n), null);
      }
      const ms = new Map<Queue, number[]>(queues.map((q) => [q, []]));
      for (let n = 0; n < CLAIMS; n += ROUND) {
        for (const q of queues) await q.claimRound(Math.min(ROUND, CLAIMS - n), ms.get(q)!);
      }
      for (const q of queues) await q.checkQueued();

      const at10k = summarize(ms.get(small)!);
      const at1M = summarize(ms.get(large)!);
      log(`at ${SMALL.toLocaleString('en')}: ${JSON.stringify(at10k)}`);
      log(`at ${LARGE.toLocaleString('en')}: ${JSON.stringify(at1M)}`);
      return {
        ratio: round(at1M.p99 / at10k.p99, 3),
        p99At10k: at10k.p99,
        p99At1M: at1M.p99,
        p50At10k: at10k.p50,
        p50At1M: at1M.p50,
        maxAt10k: at10k.max,
        maxAt1M: at1M.max,
        claimsPerDepth: CLAIMS,
        agents: AGENTS,
        serverRssMbAt1M: large.server.memory().rssMb,
      };
    } finally {
      for (const q of queues) await q.stop();
    }
  },
};

/** One server under test with its queue at a fixed depth, and the hosts that claim from it. */
class Queue {
  private readonly batchIds: number[] = [];
  private submitted = 0;
  private claimed = 0;

  private constructor(readonly server: ServerUnderTest, private readonly agents: SimAgent[], readonly depth: number) {}

  static async start(depth: number): Promise<Queue> {
    const server = await startServerProcess();
    try {
      await server.client.expect(201, 'POST', `/v1/projects/${PROJECT}/apps`, tinyAppBody(APP));
      const hosts = await enrollHosts(server, AGENTS, 'depth');
      return new Queue(server, hosts.map((h) => new SimAgent(server.url, h)), depth);
    } catch (e) {
      await server.stop();
      throw e;
    }
  }

  /** Queues `jobs` more jobs through the batch API, in batches of up to BATCH. */
  async submit(jobs: number): Promise<void> {
    for (let done = 0; done < jobs; done += BATCH) {
      const size = Math.min(BATCH, jobs - done);
      const body = batchBody({ app: APP, jobs: size, tag: `q${this.batchIds.length}` });
      const r = await this.server.client.expect(201, 'POST', `/v1/projects/${PROJECT}/batches`, body);
      this.batchIds.push(r.body.batch.id as number);
      this.submitted += size;
    }
  }

  /**
   * `count` claims by the hosts together (each asks for one task, reports it, asks again until
   * the round's claims are taken), recording each work request's round trip into `into` unless
   * null; then the round's jobs are submitted again.
   */
  async claimRound(count: number, into: number[] | null): Promise<void> {
    let left = count;
    await Promise.all(
      this.agents.map(async (agent) => {
        while (left > 0) {
          left--;
          const r = await agent.requestWork(1);
          if (r.tasks.length !== 1) throw new Error(`a work request got ${r.tasks.length} tasks, not 1 (${this.submitted - this.claimed} jobs should be queued)`);
          this.claimed++;
          into?.push(r.ms);
          await agent.reportSuccess(r.tasks[0]!.taskId, 0);
        }
      }),
    );
    await this.submit(count);
  }

  /** Sums the queued jobs of every batch (together they are the whole queue) and checks the depth held. */
  async checkQueued(): Promise<void> {
    let queued = 0;
    for (const id of this.batchIds) {
      const r = await this.server.client.expect(200, 'GET', `/v1/projects/${PROJECT}/batches/${id}`);
      queued += (r.body.counts as Record<string, number>).queued ?? 0;
    }
    if (queued !== this.depth) throw new Error(`expected ${this.depth} queued jobs, the batches hold ${queued}`);
  }

  async stop(): Promise<void> {
    for (const a of this.agents) a.close();
    await this.server.stop();
  }
}
