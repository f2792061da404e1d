/**
 * The Store port's explain methods (`jobsAhead`, `hostsCoolingDown`, `reservedHostFor`), kept
 * apart from conformance.ts; every adapter runs both:
 *
 *   runExplainConformance('SqliteStore', async () => ({ store, cleanup }));
 *
 * `open` has conformance.ts's contract: a FRESH store whose `migrate()` has not been called
 * yet; the suite migrates it, and afterwards calls `store.close()` and then `cleanup()`.
 * Everything goes through the port: the state (backoffs, cool-downs, reservations) is made by
 * claims and reports, as the server makes it.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { AppSpec, JobSpec } from '../../src/domain/model.js';
import type { TaskOutcome } from '../../src/domain/outcomes.js';
import { DEFAULT_SCHEDULING, type SchedulingOptions } from '../../src/scheduling/options.js';
import type { ClaimPlan } from '../../src/scheduling/plan.js';
import type { ClaimGathered, Store } from '../../src/store/store.js';
import { withFreshStore, type OpenStore } from './conformance.js';


const T0 = 1_700_000_000_000;
const LEASE = 60_000;
/** Backoff 10 s after a first failure; a host cools down from an app after 2 failures in a row, for 100 s. */
const RULES: SchedulingOptions = { ...DEFAULT_SCHEDULING, backoffBaseSeconds: 10, backoffMaxSeconds: 600, hostFailureLimit: 2, hostCooldownSeconds: 100 };
const FAIL: TaskOutcome = { kind: 'failed', exitCode: 1 };

function app(name: string, over: Partial<AppSpec> = {}): AppSpec {
  return {
    name, description: '', image: `registry.example/sci/${name}:1`, imageDigest: null, command: ['/bin/run'],
    resources: { cores: 1, memoryMiB: 512, diskMiB: 1024, gpus: 0 }, maxRuntimeSeconds: 3600, maxAttempts: 100, replicas: 1, quorum: 1, maxReplicas: 2, adaptiveReplication: false, validator: null,
    checkpointing: false, platforms: [], nativeCommand: null, ...over,
  };
}

function job(over: Partial<JobSpec> = {}): JobSpec {
  return { args: [], env: {}, inputs: {}, resources: {}, priority: 0, deadline: null, labels: {}, selector: {}, params: {}, ...over };
}

/** A plan that takes exactly these jobs (wherever their queues are) and may set the reservation. */
function taking(jobIds: number[], reserve: number | null | undefined = undefined): (g: ClaimGathered) => ClaimPlan {
  return (g) => ({
    picks: jobIds.map((jobId) => {
      const q = g.queues.find((x) => x.heads.some((h) => h.jobId === jobId));
      assert.ok(q, `job ${jobId} is not among the queue heads`);
      return { jobId, queueId: q.queueId, runtime: 'docker' as const, cost: 0 };
    }),
    passes: new Map(),
    reserve,
    virtualTime: g.virtualTime,
  });
}

export function runExplainConformance(name: string, open: OpenStore, opts: { skip?: string | false } = {}): void {
  const test = (title: string, fn: (s: Store) => Promise<void>) => it(title, () => withFreshStore(open, fn));

  async function grid(s: Store) {
    const p = await s.createProject('p', 1, T0);
    const q = await s.createProject('q', 1, T0);
    const sim = await s.createAppVersion(p.id, app('sim'), 'new', T0);
    const other = await s.createAppVersion(p.id, app('other'), 'new', T0);
    const site = await s.createSite('lab', T0);
    const resources = { cores: 16, memoryMiB: 65536, diskMiB: 1_000_000, gpus: 0 };
    const h1 = await s.createHost({ siteId: site.id, name: 'h1', resources, platform: 'linux/amd64' }, T0);
    const h2 = await s.createHost({ siteId: site.id, name: 'h2', resources, platform: 'linux/amd64' }, T0);
    const h3 = await s.createHost({ siteId: site.id, name: 'h3', resources, platform: 'linux/amd64' }, T0);
    let requests = 0;
    const jobs = async (a: typeof sim, specs: Array<Partial<JobSpec>>, now = T0 + 10): Promise<number[]> =>
      (await s.insertJobs({ projectId: a.projectId, app: a, batch: null, jobs: specs.map(job), idempotency: null, now })).jobIds;
    const claim = (hostId: number, now: number, plan: (g: ClaimGathered) => ClaimPlan) =>
      s.claimTasks({ hostId, requestId: `explain-${++requests}`, leaseMs: LEASE, maxQueues: 100, headsPerQueue: 500, plan, duplicates: null }, now);
    /** Runs the job on the host and reports it failed: it goes back to its queue after a backoff. */
    const fail = async (hostId: number, jobId: number, now: number) => {
      const [c] = (await claim(hostId, now, taking([jobId]))).tasks;
      assert.ok(c, `job ${jobId} was claimed`);
      await s.reportTask({ hostId, taskId: c.task.id, outcome: FAIL, durationMs: 10, usage: null, outputs: {}, log: null, reportHash: `fail-${c.task.id}`, rules: RULES }, now + 1);
    };
    /** Runs a fresh job of the app to success on the host: an app that never succeeded anywhere cools no host down. */
    const prove = async (a: typeof sim, hostId: number, now: number) => {
      const [jobId] = await jobs(a, [{}], now);
      const [c] = (await claim(hostId, now, taking([jobId!]))).tasks;
      await s.reportTask({ hostId, taskId: c!.task.id, outcome: { kind: 'succeeded' }, durationMs: 10, usage: null, outputs: {}, log: null, reportHash: `ok-${c!.task.id}`, rules: RULES }, now + 1);
    };
    const witness = await s.createHost({ siteId: site.id, name: 'witness', resources, platform: 'linux/amd64' }, T0);
    /** Fails the job on the host, then runs it to success on another: the failure was the host's. */
    const failVindicated = async (hostId: number, jobId: number, now: number) => {
      const [f] = (await claim(hostId, now, taking([jobId]))).tasks;
      await s.reportTask({ hostId, taskId: f!.task.id, outcome: FAIL, durationMs: 10, usage: null, outputs: {}, log: null, reportHash: `fail-${f!.task.id}`, rules: { ...RULES, backoffBaseSeconds: 0 } }, now + 1);
      const [c] = (await claim(witness.id, now + 1, taking([jobId]))).tasks;
      await s.reportTask({ hostId: witness.id, taskId: c!.task.id, outcome: { kind: 'succeeded' }, durationMs: 10, usage: null, outputs: {}, log: null, reportHash: `ok-${c!.task.id}`, rules: RULES }, now + 1);
    };
    return { p, q, sim, other, h1, h2, h3, jobs, claim, fail, prove, failVindicated };
  }

  describe(name, { skip: opts.skip ?? false }, () => {
    test('jobsAhead counts the queued jobs of its queue that go before it: higher priority, then smaller id', async (s) => {
      const g = await grid(s);
      const [a, b, high, c, low] = await g.jobs(g.sim, [{}, {}, { priority: 5 }, {}, { priority: -3 }]);
      const [higher] = await g.jobs(g.sim, [{ priority: 9 }], T0 + 20); // a later submission joins the same queue
      // Not its queue: another shape, another selector, another app.
      await g.jobs(g.sim, [{ priority: 9, resources: { cores: 2 } }, { priority: 9, selector: { zone: 'a' } }]);
      await g.jobs(g.other, [{ priority: 9 }]);
      const ahead = (id: number | undefined, limit = 1000, now = T0 + 100) => s.jobsAhead(g.p.id, id!, now, limit);
      assert.equal(await ahead(higher), 0);
      assert.equal(await ahead(high), 1);
      assert.equal(await ahead(a), 2);
      assert.equal(await ahead(b), 3);
      assert.equal(await ahead(c), 4);
      assert.equal(await ahead(low), 5);
      assert.equal(await ahead(low, 3), 3, 'the count stops at the limit');
      assert.equal(await ahead(low, 5), 5);

      // Jobs that left the queue no longer count: one cancelled, one running.
      await s.cancelJob(g.p.id, a!, T0 + 200);
      await g.claim(g.h1.id, T0 + 210, taking([higher!]));
      assert.equal(await ahead(low), 3);
      assert.equal(await ahead(b), 1, 'high only');
    });

    test('jobsAhead: a job in backoff does not count until its time has come, even before a claim puts it back', async (s) => {
      const g = await grid(s);
      const [first, second, third] = await g.jobs(g.sim, [{}, {}, {}]);
      const T = T0 + 1000;
      await g.fail(g.h1.id, first!, T); // reported at T + 1: back in the queue at T + 1 + 10 s
      const back = T + 1 + 10_000;
      const job = await s.getJob(g.p.id, first!);
      assert.deepEqual([job?.state, job?.retryAt], ['queued', back]);
      assert.equal(await s.jobsAhead(g.p.id, third!, back - 1, 1000), 1, 'only second: first is backing off');
      assert.equal(await s.jobsAhead(g.p.id, third!, back, 1000), 2, 'its time has come (not yet cleared by a claim)');
      assert.equal(await s.jobsAhead(g.p.id, third!, back, 1), 1, 'the limit holds over the queue and the backoffs together');
      assert.equal(await s.jobsAhead(g.p.id, second!, back - 1, 1000), 0);
      assert.equal(await s.jobsAhead(g.p.id, first!, back - 1, 1000), 0, 'the job in backoff has its own place, at the head');
      await g.claim(g.h2.id, back + 5, taking([])); // a claim clears the backoff
      assert.equal(await s.jobsAhead(g.p.id, third!, back + 5, 1000), 2);
    });

    test('jobsAhead is null unless the job is queued in the project', async (s) => {
      const g = await grid(s);
      const [a, b] = await g.jobs(g.sim, [{}, {}]);
      assert.equal(await s.jobsAhead(g.q.id, a!, T0 + 100, 1000), null, 'another project');
      assert.equal(await s.jobsAhead(g.p.id, 999_999, T0 + 100, 1000), null, 'no such job');
      await g.claim(g.h1.id, T0 + 100, taking([a!]));
      assert.equal(await s.jobsAhead(g.p.id, a!, T0 + 100, 1000), null, 'running');
      await s.cancelJob(g.p.id, b!, T0 + 200);
      assert.equal(await s.jobsAhead(g.p.id, b!, T0 + 200, 1000), null, 'cancelled');
    });

    test('hostsCoolingDown: the hosts kept away from the app at `now`, by id; not other apps, not before or after', async (s) => {
      const g = await grid(s);
      const flaky = await g.jobs(g.sim, Array.from({ length: 6 }, () => ({})));
      const otherJobs = await g.jobs(g.other, [{}, {}]);
      const T = T0 + 1000;
      assert.deepEqual(await s.hostsCoolingDown(g.sim.id, T), []);
      await g.failVindicated(g.h2.id, flaky[0]!, T);
      assert.deepEqual(await s.hostsCoolingDown(g.sim.id, T + 2), [], 'one failure: below the limit of 2');
      await g.failVindicated(g.h2.id, flaky[1]!, T + 10); // the second in a row, reported at T + 11
      await g.failVindicated(g.h1.id, flaky[2]!, T + 20);
      await g.failVindicated(g.h1.id, flaky[3]!, T + 30); // reported at T + 31
      await g.failVindicated(g.h3.id, otherJobs[0]!, T + 40);
      await g.failVindicated(g.h3.id, otherJobs[1]!, T + 50); // h3 cools down from the other app only
      assert.deepEqual(await s.hostsCoolingDown(g.sim.id, T + 60), [g.h1.id, g.h2.id]);
      assert.deepEqual(await s.hostsCoolingDown(g.other.id, T + 60), [g.h3.id]);
      const h2Until = T + 11 + 100_000;
      assert.deepEqual(await s.hostsCoolingDown(g.sim.id, h2Until - 1), [g.h1.id, g.h2.id]);
      assert.deepEqual(await s.hostsCoolingDown(g.sim.id, h2Until), [g.h1.id], "h2's cool-down is over");
      assert.deepEqual(await s.hostsCoolingDown(g.sim.id, T + 31 + 100_000), []);
      assert.deepEqual(await s.hostsCoolingDown(999_999, T + 60), [], 'an unknown app');
    });

    test('reservedHostFor: the host kept free for the job, until the reservation is cleared', async (s) => {
      const g = await grid(s);
      const [big, small] = await g.jobs(g.sim, [{}, {}]);
      const T = T0 + 1000;
      assert.equal(await s.reservedHostFor(big!), null);
      await g.claim(g.h2.id, T, taking([], big!));
      assert.equal(await s.reservedHostFor(big!), g.h2.id);
      assert.equal(await s.reservedHostFor(small!), null);
      await g.claim(g.h2.id, T + 1, taking([])); // undefined: keeps it
      assert.equal(await s.reservedHostFor(big!), g.h2.id);
      await g.claim(g.h2.id, T + 2, taking([big!], null));
      assert.equal(await s.reservedHostFor(big!), null, 'cleared when the job starts');
      assert.equal(await s.reservedHostFor(999_999), null);
    });
  });
}
