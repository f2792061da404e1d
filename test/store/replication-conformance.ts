import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { App, Host, Job } from '../../src/domain/model.js';
import type { TaskOutcome } from '../../src/domain/outcomes.js';
import { DEFAULT_SCHEDULING, type SchedulingOptions } from '../../src/scheduling/options.js';
import { planClaim } from '../../src/scheduling/plan.js';
import { draw, replicationProbability, type ReplicationOptions } from '../../src/scheduling/replication.js';
import type { ClaimRequest, Store } from '../../src/store/store.js';
import { appSpec, jobSpec, withFreshStore, type OpenStore } from './conformance.js';

/**
 * Replicated jobs through the Store port (domain/quorum.ts, scheduling/replication.ts): every
 * adapter must hand replicas to distinct hosts and owners, judge them in the report's
 * transaction, and keep hosts' records. Claims go through the real policy (planClaim).
 */
const T0 = 1_700_000_000_000;
const T = T0 + 1_000_000;
const LEASE = 60_000;
const DRAW_KEY = Buffer.alloc(32, 9);
const SHA = (n: number) => n.toString(16).padStart(64, '0');
/** An output set whose content is `n`. */
const out = (n: number) => ({ 'result.txt': { sha256: SHA(n), size: 10 } });
const OK: TaskOutcome = { kind: 'succeeded' };
const RULES: SchedulingOptions = { ...DEFAULT_SCHEDULING, backoffBaseSeconds: 0, speculation: { ...DEFAULT_SCHEDULING.speculation, enabled: false } };

export function runReplicationConformance(name: string, open: OpenStore, opts: { skip?: string | false } = {}): void {
  const test = (title: string, fn: (s: Store) => Promise<void>) => it(title, () => withFreshStore(open, fn));

  async function grid(s: Store, app: Partial<App> = { replicas: 2, quorum: 2 }, rules: SchedulingOptions = RULES) {
    const p = await s.createProject('p', 1, T0);
    const sci = await s.createAppVersion(p.id, appSpec('sci', { maxReplicas: 2 * (app.replicas ?? 1), ...app, resources: { cores: 1, memoryMiB: 256, diskMiB: 100, gpus: 0 } }), 'new', T0);
    const site = await s.createSite('volunteers', T0);
    const resources = { cores: 4, memoryMiB: 8192, diskMiB: 100_000, gpus: 0 };
    const host = (name: string, owner: string | null = null) => s.createHost({ siteId: site.id, name, resources, platform: 'linux/amd64', owner }, T0);
    const jobs = async (n: number): Promise<number[]> =>
      (await s.insertJobs({ projectId: p.id, app: sci, batch: null, jobs: Array.from({ length: n }, () => jobSpec()), idempotency: null, now: T0 + 10 })).jobIds;
    let requests = 0;
    /** A work request through the real policy, for at most `max` tasks. */
    const claim = (h: Host, now: number, max = 1, over: Partial<ClaimRequest> = {}) =>
      s.claimTasks({
        hostId: h.id, requestId: `r${++requests}`, leaseMs: LEASE, maxQueues: 10, headsPerQueue: 10, duplicates: null, replication: rules.replication, drawKey: DRAW_KEY,
        plan: (g) => planClaim({
          ...g, now,
          offer: { hostId: h.id, capacity: resources, free: resources, maxTasks: max, platform: 'linux/amd64', runtimes: ['docker'], labels: {}, images: new Set(), cooledApps: g.cooledApps, pace: g.pace },
        }, rules),
        ...over,
      }, now);
    const report = (h: Host, taskId: number, outcome: TaskOutcome, now: number, outputs = {}) =>
      s.reportTask({ hostId: h.id, taskId, outcome, durationMs: 1000, usage: null, outputs, log: null, reportHash: JSON.stringify([outcome, outputs]), rules }, now);
    const job = async (id: number): Promise<Job> => (await s.getJob(p.id, id))!;
    return { p, sci, host, jobs, claim, report, job };
  }

  describe(name, { skip: opts.skip ?? false }, () => {
    test('replicas of one job go to distinct hosts of distinct owners; the job waits for the quorum', async (s) => {
      const g = await grid(s);
      const [id] = await g.jobs(1);
      const [a, a2, b] = [await g.host('a', 'alice'), await g.host('a2', 'alice'), await g.host('b', 'bob')];
      const first = await g.claim(a, T, 4);
      assert.equal(first.tasks.length, 1, 'a host takes one replica of a job, however much room it has');
      assert.equal(first.tasks[0]!.job.quorum, 2);
      assert.equal((await g.job(id!)).replicasWanted, 1);
      assert.equal((await g.claim(a, T + 1)).tasks.length, 0, 'not twice on one host');
      assert.equal((await g.claim(a2, T + 2)).tasks.length, 0, 'not on another host of the same owner');
      const second = await g.claim(b, T + 3);
      assert.equal(second.tasks.length, 1);
      assert.deepEqual([second.tasks[0]!.task.jobId, second.tasks[0]!.task.replica], [id, 1]);
      assert.equal((await g.job(id!)).replicasWanted, 0);

      const r1 = await g.report(a, first.tasks[0]!.task.id, OK, T + 10, out(7));
      assert.equal(r1.job.state, 'running', 'one success is not a quorum of 2');
      const r2 = await g.report(b, second.tasks[0]!.task.id, OK, T + 11, out(7));
      assert.equal(r2.job.state, 'succeeded');
      const done = await g.job(id!);
      assert.equal(done.state, 'succeeded');
      assert.equal(done.canonicalTaskId, first.tasks[0]!.task.id, 'the canonical result is the first of the agreeing replicas');
      assert.deepEqual((await s.listTasks(id!)).map((t) => [t.state, t.validity]), [['succeeded', 'valid'], ['succeeded', 'valid']]);
      assert.equal((await s.hostReliability(a.id, g.sci.id)).validRun, 1);
      assert.equal((await s.hostReliability(b.id, g.sci.id)).validRun, 1);
    });

    test('replicas go before new jobs; unreplicated apps set their result task and never want replicas', async (s) => {
      const g = await grid(s);
      const [j1, j2] = await g.jobs(2);
      const [a, b] = [await g.host('a'), await g.host('b')];
      await g.claim(a, T, 1);
      const r = await g.claim(b, T + 1, 1);
      assert.deepEqual(r.tasks.map((t) => [t.job.id, t.task.replica]), [[j1, 1]], 'the replica of job 1 first, though job 2 waits');
      assert.equal((await g.job(j2!)).state, 'queued');

      const plain = await s.createAppVersion(g.p.id, appSpec('plain', { resources: { cores: 1, memoryMiB: 256, diskMiB: 100, gpus: 0 } }), 'new', T0);
      const [pj] = (await s.insertJobs({ projectId: g.p.id, app: plain, batch: null, jobs: [jobSpec({ priority: 9 })], idempotency: null, now: T0 + 20 })).jobIds;
      const t = (await g.claim(b, T + 2, 1)).tasks[0]!;
      assert.deepEqual([t.job.id, t.job.quorum, t.job.replicasWanted], [pj, 1, 0]);
      await g.report(b, t.task.id, OK, T + 3, out(1));
      const done = await g.job(pj!);
      assert.deepEqual([done.state, done.canonicalTaskId], ['succeeded', t.task.id]);
      assert.equal((await s.listTasks(pj!))[0]!.validity, null, 'an unreplicated result is not judged');
    });

    test('disagreement issues another replica; the majority is accepted and the odd one out is invalid, costing its host trust and quota', async (s) => {
      const g = await grid(s);
      const [id] = await g.jobs(1);
      const [a, b, c] = [await g.host('a'), await g.host('b'), await g.host('c')];
      const ta = (await g.claim(a, T)).tasks[0]!.task;
      const tb = (await g.claim(b, T)).tasks[0]!.task;
      await g.report(a, ta.id, OK, T + 10, out(1));
      const r = await g.report(b, tb.id, OK, T + 11, out(666));
      assert.equal(r.job.state, 'running', 'two results that disagree decide nothing');
      assert.equal((await g.job(id!)).replicasWanted, 1, 'one more replica can settle it');
      const tc = (await g.claim(c, T + 12)).tasks[0]!.task;
      assert.equal(tc.replica, 2);
      await g.report(c, tc.id, OK, T + 20, out(1));
      const done = await g.job(id!);
      assert.deepEqual([done.state, done.canonicalTaskId], ['succeeded', ta.id]);
      assert.deepEqual((await s.listTasks(id!)).map((t) => [t.hostId, t.validity]), [[a.id, 'valid'], [b.id, 'invalid'], [c.id, 'valid']]);
      const bad = await s.hostReliability(b.id, g.sci.id);
      assert.equal(bad.validRun, 0);
      assert.equal(bad.quota, Math.floor(RULES.replication.dailyQuota / 2), 'an invalid result halves the daily quota');
    });

    test('without consensus by maxReplicas the job fails, saying so', async (s) => {
      const g = await grid(s, { replicas: 2, quorum: 2, maxReplicas: 3 });
      const [id] = await g.jobs(1);
      const hosts = [await g.host('a'), await g.host('b'), await g.host('c'), await g.host('d')];
      const tasks = [];
      for (const h of hosts.slice(0, 2)) tasks.push((await g.claim(h, T)).tasks[0]!.task);
      await g.report(hosts[0]!, tasks[0]!.id, OK, T + 1, out(1));
      await g.report(hosts[1]!, tasks[1]!.id, OK, T + 2, out(2));
      tasks.push((await g.claim(hosts[2]!, T + 3)).tasks[0]!.task);
      const last = await g.report(hosts[2]!, tasks[2]!.id, OK, T + 4, out(3));
      assert.equal(last.job.state, 'failed');
      assert.match(last.job.reason ?? '', /no consensus: 3 of 3 replicas succeeded, at most 1 agreeing, 2 needed/);
      assert.equal((await g.claim(hosts[3]!, T + 5)).tasks.length, 0, 'no fourth replica beyond the limit');
      assert.deepEqual((await s.listTasks(id!)).map((t) => t.validity), [null, null, null], 'nobody is judged without consensus');
    });

    test('an error or a lost replica is replaced; errors take one from the host\'s quota; a release is not counted', async (s) => {
      const g = await grid(s);
      const [id] = await g.jobs(1);
      const [a, b, c, d] = [await g.host('a'), await g.host('b'), await g.host('c'), await g.host('d')];
      const ta = (await g.claim(a, T)).tasks[0]!.task;
      const tb = (await g.claim(b, T)).tasks[0]!.task;
      await g.report(a, ta.id, { kind: 'failed', exitCode: 3 }, T + 1);
      assert.equal((await g.job(id!)).replicasWanted, 1);
      assert.equal((await s.hostReliability(a.id, g.sci.id)).quota, RULES.replication.dailyQuota - 1);
      const tc = (await g.claim(c, T + 2)).tasks[0]!.task;
      // b goes silent: its lease runs out.
      const expired = await s.expireLeases(T + LEASE + 1, 10, RULES);
      assert.deepEqual(expired.map((e) => [e.taskId, e.job.state]), [[tb.id, 'running']]);
      assert.equal((await g.job(id!)).replicasWanted, 1, 'the lost replica is replaced');
      await g.report(c, tc.id, { kind: 'aborted' }, T + LEASE + 2);
      assert.equal((await g.job(id!)).replicasWanted, 2, 'a released replica is replaced too');
      const td = (await g.claim(d, T + LEASE + 3)).tasks[0]!.task;
      await g.report(d, td.id, OK, T + LEASE + 4, out(5));
      // The late report of b still counts: it agrees with d.
      const late = await g.report(b, tb.id, OK, T + LEASE + 5, out(5));
      assert.equal(late.job.state, 'succeeded');
      assert.equal(late.job.canonicalTaskId, tb.id);
    });

    test('a replica reporting after the job was decided is checked against its result', async (s) => {
      const g = await grid(s, { replicas: 3, quorum: 2 });
      const [id] = await g.jobs(1);
      const [a, b, c] = [await g.host('a'), await g.host('b'), await g.host('c')];
      const [ta, tb, tc] = [(await g.claim(a, T)).tasks[0]!.task, (await g.claim(b, T)).tasks[0]!.task, (await g.claim(c, T)).tasks[0]!.task];
      await g.report(a, ta.id, OK, T + 1, out(4));
      assert.equal((await g.report(b, tb.id, OK, T + 2, out(4))).job.state, 'succeeded');
      await g.report(c, tc.id, OK, T + 3, out(9));
      assert.deepEqual((await s.listTasks(id!)).map((t) => t.validity), ['valid', 'valid', 'invalid']);
      assert.equal((await s.hostReliability(c.id, g.sci.id)).validRun, 0);
    });

    test('adaptive replication: a host with a run of valid results gets unreplicated jobs as the draw says', async (s) => {
      const replication: ReplicationOptions = { trustAfter: 2, spotCheck: 0.3, dailyQuota: 1000 };
      const rules = { ...RULES, replication };
      const g = await grid(s, { replicas: 2, quorum: 2, adaptiveReplication: true }, rules);
      const [a, b] = [await g.host('a'), await g.host('b')];
      const ids = await g.jobs(30);
      let now = T;
      const decisions: Array<[number, boolean]> = [];
      for (let i = 0; i < ids.length; i++) {
        const run = (await s.hostReliability(a.id, g.sci.id)).validRun;
        const t = (await g.claim(a, ++now)).tasks[0]!;
        const single = draw(t.job.id, a.id, DRAW_KEY) >= replicationProbability(run, replication);
        decisions.push([run, single]);
        assert.equal(t.job.quorum, single ? 1 : 2, `job ${t.job.id} at a run of ${run}`);
        await g.report(a, t.task.id, OK, ++now, out(i));
        if (!single) {
          const tb = (await g.claim(b, ++now)).tasks[0]!;
          assert.equal(tb.job.id, t.job.id);
          await g.report(b, tb.task.id, OK, ++now, out(i));
        }
        assert.equal((await g.job(t.job.id)).state, 'succeeded');
      }
      assert.ok(decisions.slice(0, 2).every(([, single]) => !single), 'no trust before trustAfter valid results');
      assert.ok(decisions.some(([, single]) => single), 'trusted, the host gets unreplicated jobs');
      assert.ok(decisions.slice(2).some(([, single]) => !single), 'and is still spot-checked');
    });

    test('revoking a host replaces its replicas, and a revoked host is handed nothing', async (s) => {
      const g = await grid(s);
      const [id] = await g.jobs(1);
      const [a, b, c] = [await g.host('a'), await g.host('b'), await g.host('c')];
      await g.claim(a, T);
      await g.claim(b, T);
      const r = await s.revokeHost(b.id, T + 1);
      assert.deepEqual(r?.requeuedJobs, [], 'the job stays running: it only wants another replica');
      const job = await g.job(id!);
      assert.deepEqual([job.state, job.replicasWanted], ['running', 1]);
      assert.equal((await g.claim(b, T + 2)).tasks.length, 0, 'the revoked host gets nothing');
      assert.equal((await g.claim(c, T + 3)).tasks[0]?.job.id, id);
    });

    test('hosts of one owner claiming at once never take two replicas of a job', async (s) => {
      const g = await grid(s, { replicas: 4, quorum: 2, maxReplicas: 8 });
      const ids = await g.jobs(40);
      const starter = await g.host('starter', 'someone');
      let started = 0;
      for (let round = 0; round < 40 && started < ids.length; round++) started += (await g.claim(starter, T + round, 4)).tasks.length;
      assert.equal(started, ids.length);
      const mallory = await Promise.all(Array.from({ length: 6 }, (_, i) => g.host(`m${i}`, 'mallory')));
      // One wanted replica read per claim: concurrent claims contend for the same jobs.
      for (let round = 0; round < 20; round++) await Promise.all(mallory.map((h) => g.claim(h, T + 100 + round, 1, { replicaScan: 1 })));
      const theirs = new Set(mallory.map((h) => h.id));
      for (const id of ids) {
        const n = (await s.listTasks(id)).filter((t) => theirs.has(t.hostId)).length;
        assert.ok(n <= 1, `job ${id} has ${n} replicas on mallory's hosts`);
      }
    });

    test('a host\'s daily quota per app bounds the tasks it is handed that day', async (s) => {
      const rules = { ...RULES, replication: { trustAfter: 10, spotCheck: 0.1, dailyQuota: 2 } };
      const g = await grid(s, { replicas: 1, quorum: 1 }, rules);
      const a = await g.host('a');
      await g.jobs(5);
      assert.equal((await g.claim(a, T, 4)).tasks.length, 2, 'two of four in one request: the quota counts within a claim');
      assert.equal((await g.claim(a, T + 1, 4)).tasks.length, 0);
      const tomorrow = T + 86_400_000;
      assert.equal((await g.claim(a, tomorrow, 4)).tasks.length, 2, 'a new day, a new quota');
    });
  });
}
