import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DEFAULT_SCHEDULING } from '../../src/scheduling/options.js';
import { assertError, createApp, submitJob } from './util.js';
import { BIG, failed, ids, ok, P, withGrid, type Grid, type Host } from './protocol-grid.js';

/**
 * What the scheduler decides, seen through the agent protocol: fair share across projects,
 * packing, image affinity, selectors, reservations for starved jobs, host cool-downs,
 * deadlines and speculative duplicates. The pure policy has its own tests (test/scheduling);
 * these show that the server runs it.
 */

const CORE = { cores: 1, memoryMiB: 512, diskMiB: 1024, gpus: 0 };
const free = (cores: number) => ({ ...BIG, cores });

async function createProject(g: Grid, name: string, shareWeight: number): Promise<void> {
  const r = await g.s.call('POST', '/v1/projects', { body: { name, shareWeight } });
  assert.equal(r.status, 201, r.text);
}

async function submitMany(g: Grid, project: string, app: string, count: number, template: Record<string, unknown> = {}): Promise<void> {
  const r = await g.s.call('POST', `/v1/projects/${project}/batches`, { body: { app, count, template } });
  assert.equal(r.status, 201, r.text);
}

/** Claims one task at a time and reports it done at once, `n` times; returns the projects served, in order. */
async function serve(h: Host, n: number): Promise<string[]> {
  const order: string[] = [];
  for (let i = 0; i < n; i++) {
    const [t] = await h.claim({ maxTasks: 1 });
    if (!t) break;
    order.push(t.project);
    assert.equal((await h.report(t.taskId, ok)).status, 200);
  }
  return order;
}

const count = (xs: string[], x: string) => xs.filter((y) => y === x).length;

describe('scheduling: order', () => {
  it('fair share: two backlogged projects with weights 2 and 1 get tasks in a 2:1 ratio, and a new weight takes effect', () =>
    withGrid(async (g) => {
      await createProject(g, 'alpha', 2);
      await createProject(g, 'beta', 1);
      for (const p of ['alpha', 'beta']) {
        await createApp(g.s, p, 'sim', { resources: CORE });
        await submitMany(g, p, 'sim', 400);
      }
      const h = await g.host();
      const first = await serve(h, 300);
      assert.equal(first.length, 300);
      // Both stay backlogged throughout (400 jobs each): the split is the weights', to a task.
      assert.equal(count(first, 'alpha'), 200);
      assert.equal(count(first, 'beta'), 100);
      // And it is a steady interleaving, not one project first: every window of 30 holds 20:10, ±1.
      for (let at = 0; at + 30 <= first.length; at += 30) {
        const a = count(first.slice(at, at + 30), 'alpha');
        assert.ok(a >= 19 && a <= 21, `window at ${at}: ${a} of 30 for alpha`);
      }

      const r = await g.s.call('PATCH', '/v1/projects/beta', { body: { shareWeight: 2 } });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.shareWeight, 2);
      const second = await serve(h, 100);
      assert.ok(Math.abs(count(second, 'alpha') - count(second, 'beta')) <= 2, `equal weights share equally: ${count(second, 'alpha')}:${count(second, 'beta')}`);
    }));

  it('a project that was idle gets its share from now on, not the credit of its idle time', () =>
    withGrid(async (g) => {
      await createProject(g, 'busy', 1);
      await createProject(g, 'late', 1);
      for (const p of ['busy', 'late']) await createApp(g.s, p, 'sim', { resources: CORE });
      await submitMany(g, 'busy', 'sim', 300);
      const h = await g.host();
      assert.equal(count(await serve(h, 100), 'busy'), 100);
      await submitMany(g, 'late', 'sim', 100);
      const after = await serve(h, 40);
      // Without the floor, "late" would take the next 100 tasks to catch up with "busy".
      assert.ok(count(after, 'busy') >= 19 && count(after, 'late') >= 19, `shared: ${count(after, 'busy')}:${count(after, 'late')}`);
    }));

  it('only operators change a weight; an unknown project is 404 and a bad weight names the field', () =>
    withGrid(async (g) => {
      assertError(await g.s.call('PATCH', '/v1/projects/nope', { body: { shareWeight: 2 } }), 404, 'not_found');
      assertError(await g.s.call('PATCH', `/v1/projects/${P}`, { body: { shareWeight: 0 } }), 400, 'invalid_request', 'body/shareWeight');
      const user = await g.s.call('POST', '/v1/users', { body: { name: 'ann' } });
      assert.equal(user.status, 201, user.text);
      await g.s.call('PUT', `/v1/projects/${P}/members/ann`, { body: { role: 'admin' } });
      const t = await g.s.call('POST', '/v1/tokens', { body: { user: 'ann' } });
      assertError(await g.s.call('PATCH', `/v1/projects/${P}`, { body: { shareWeight: 5 }, token: t.body.token }), 403, 'forbidden');
    }));

  it('packing: a 24-core host gets its largest tasks first, and fills up exactly', () =>
    withGrid(async (g) => {
      for (const c of [1, 2, 4, 8, 16]) await createApp(g.s, P, `c${c}`, { resources: { ...CORE, cores: c } });
      // Submitted smallest first: first fit in submission order would fill the host with small tasks.
      const jobs: Record<number, number[]> = {};
      for (const c of [1, 2, 4, 8, 16]) {
        jobs[c] = [];
        for (let i = 0; i < 3; i++) jobs[c]!.push(await submitJob(g.s, P, { app: `c${c}` }));
      }
      const h = await g.host({ resources: { ...BIG, cores: 24 } });
      const first = await h.claim({ free: free(24) });
      assert.deepEqual(ids(first), [jobs[16]![0], jobs[8]![0]], '16 + 8 = 24 cores');
      // With 8 cores free (the 8-core task ended), the next largest that fits.
      assert.deepEqual(ids(await h.claim({ free: free(8) })), [jobs[8]![1]]);
      assert.deepEqual(ids(await h.claim({ free: free(7) })), [jobs[4]![0], jobs[2]![0], jobs[1]![0]]);
    }));

  it('image affinity: a host gets tasks of an image it holds first, unless another job has waited far longer', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'a', { resources: CORE });
      await createApp(g.s, P, 'b', { resources: CORE });
      const a1 = await submitJob(g.s, P, { app: 'a' });
      const b1 = await submitJob(g.s, P, { app: 'b' });
      const holder = await g.host();
      const bare = await g.host();
      assert.deepEqual(ids(await holder.claim({ maxTasks: 1, images: ['sci/b:1'] })), [b1], 'the image it holds, though a1 is older');
      assert.deepEqual(ids(await bare.claim({ maxTasks: 1 })), [a1], 'without images: submission order');

      const a2 = await submitJob(g.s, P, { app: 'a' });
      g.advance(DEFAULT_SCHEDULING.starvationSeconds * 1000 + 1000);
      const b2 = await submitJob(g.s, P, { app: 'b' });
      assert.deepEqual(ids(await holder.claim({ maxTasks: 1, images: ['sci/b:1'] })), [a2], 'a job that waited starvationSeconds longer goes first');
      assert.deepEqual(ids(await holder.claim({ maxTasks: 1, images: ['sci/b:1'] })), [b2]);
    }));
});

describe('scheduling: matching', () => {
  it('a job with a selector runs only on hosts whose labels match; hosts declare labels with their work requests', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim', { resources: CORE });
      const picky = await submitJob(g.s, P, { app: 'sim', selector: { 'gpu-model': 'a100' } });
      const plain = await g.host();
      const other = await g.host();
      const right = await g.host();
      assert.deepEqual(await plain.claim(), [], 'a host without the label');
      assert.deepEqual(await other.claim({ labels: { 'gpu-model': 't4' } }), [], 'a host with another value');
      assert.deepEqual(ids(await right.claim({ labels: { 'gpu-model': 'a100', room: 'b12' } })), [picky]);
      const hosts = await g.s.call('GET', '/v1/hosts');
      assert.deepEqual(hosts.body.hosts.find((h: { id: number }) => h.id === right.id).labels, { 'gpu-model': 'a100', room: 'b12' });
      assert.deepEqual(hosts.body.hosts.find((h: { id: number }) => h.id === plain.id).labels, {});

      // Labels persist until the agent says otherwise: a request without them keeps them.
      const later = await submitJob(g.s, P, { app: 'sim', selector: { room: 'b12' } });
      assert.deepEqual(ids(await right.claim()), [later]);
      const job = await g.job(later);
      assert.deepEqual(job.job.selector, { room: 'b12' });
    }));

  it('bad labels and selectors are 400s that name the key', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim', { resources: CORE });
      const h = await g.host();
      assertError(await h.work({ labels: { 'bad key': 'x' } }), 400, 'invalid_request', 'body/labels/bad key');
      const r = await g.s.call('POST', `/v1/projects/${P}/jobs`, { body: { app: 'sim', selector: { '-x': 'y' } } });
      assertError(r, 400, 'invalid_request', 'body/selector/-x');
    }));
});

describe('scheduling: failure', () => {
  it('a host whose failures of an app other hosts keep proving needless is kept away from the app for a cool-down; failing everywhere blames no host', () =>
    withGrid(
      async (g) => {
        await createApp(g.s, P, 'flaky', { resources: CORE, maxAttempts: 10 });
        await createApp(g.s, P, 'fine', { resources: CORE });
        const bad = await g.host();
        const good = await g.host();
        for (let i = 0; i < 3; i++) {
          const job = await submitJob(g.s, P, { app: 'flaky' });
          const [t] = await bad.claim({ maxTasks: 1 });
          assert.equal(t.jobId, job);
          assert.equal((await bad.report(t.taskId, failed(1))).status, 200);
          const [again] = await good.claim({ maxTasks: 1 });
          assert.equal(again.jobId, job);
          assert.equal((await good.report(again.taskId, ok)).status, 200); // the job was fine: the failure was the host's
        }
        const flaky = await submitJob(g.s, P, { app: 'flaky' });
        const fine = await submitJob(g.s, P, { app: 'fine' });
        assert.deepEqual(ids(await bad.claim()), [fine], 'three needless failures in a row: only the other app comes');
        assert.deepEqual(ids(await good.claim()), [flaky], 'another host takes it');
        g.advance(100_000 + 1);
        const later = await submitJob(g.s, P, { app: 'flaky' });
        assert.deepEqual(ids(await bad.claim()), [later], 'after the cool-down the host may try again');

        // A job that fails on every host blames none of them: the fault is the job's.
        await createApp(g.s, P, 'broken', { resources: CORE, maxAttempts: 10 });
        const broken = await submitJob(g.s, P, { app: 'broken', priority: 10 });
        const fresh = await g.host();
        for (let i = 0; i < 4; i++) {
          const [t] = await fresh.claim({ maxTasks: 1 });
          assert.equal(t.jobId, broken, `attempt ${i + 1} still comes to the same host`);
          assert.equal((await fresh.report(t.taskId, failed(1))).status, 200);
        }
      },
      { scheduling: { backoffBaseSeconds: 0, hostFailureLimit: 3, hostCooldownSeconds: 100 } },
    ));

  it('a job past its deadline fails, queued or running, and a running task is told to stop', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim', { resources: CORE });
      const deadline = (s: number) => new Date(Date.now() + s * 1000).toISOString();
      const waiting = await submitJob(g.s, P, { app: 'sim', deadline: deadline(30), priority: -1 });
      const running = await submitJob(g.s, P, { app: 'sim', deadline: deadline(30) });
      const h = await g.host();
      const [t] = await h.claim({ maxTasks: 1 });
      assert.equal(t.jobId, running);
      g.advance(31_000);
      assert.deepEqual(await h.claim(), [], 'a job past its deadline is not handed out');
      await g.s.sweeper.sweep();
      for (const id of [waiting, running]) {
        const { job } = await g.job(id);
        assert.equal(job.state, 'failed');
        assert.match(job.reason, /deadline passed/);
      }
      const hb = await h.heartbeat([{ taskId: t.taskId }]);
      assert.match(hb.body.abort[0].reason, /failed/);
    }));
});

describe('scheduling: large jobs and the long tail', () => {
  it('a large job overtaken by a stream of newer small ones gets a busy host reserved: it takes nothing smaller until the job fits', () =>
    withGrid(
      async (g) => {
        await createApp(g.s, P, 'small', { resources: CORE });
        await createApp(g.s, P, 'large', { resources: { ...CORE, cores: 4 } });
        await submitMany(g, P, 'small', 3);
        const h = await g.host({ resources: { ...BIG, cores: 4 } });
        const running = await h.claim({ free: free(4) });
        assert.equal(running.length, 3, 'three small tasks keep the host busy');
        const large = await submitJob(g.s, P, { app: 'large' });

        // Two cores free, nothing else queued: the large job does not fit, and nobody overtakes it.
        assert.equal((await h.report(running[0].taskId, ok)).status, 200);
        assert.deepEqual(await h.claim({ free: free(2) }), []);

        // A minute later a stream of small jobs arrives: serving them would overtake the large job.
        g.advance(60_000 + 1);
        await submitMany(g, P, 'small', 20);
        assert.equal((await h.report(running[1].taskId, ok)).status, 200);
        assert.deepEqual(await h.claim({ free: free(3) }), [], 'three cores free, small jobs queued: kept for the large job');
        assert.equal((await h.report(running[2].taskId, ok)).status, 200);
        const [largeTask] = await h.claim({ free: free(4) });
        assert.equal(largeTask.jobId, large, 'all four cores free: the large job runs');

        // Another host is not held back meanwhile, and once the large job runs, small ones come again.
        assert.equal((await (await g.host()).claim({ free: free(2), maxTasks: 2 })).length, 2);
        assert.equal((await h.report(largeTask.taskId, ok)).status, 200);
        assert.equal((await h.claim({ free: free(4) })).length, 4);
      },
      { scheduling: { starvationSeconds: 60 } },
    ));

  it('when nothing is queued, an idle host runs a duplicate of the slowest task; the first result wins and the other is aborted', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim', { resources: CORE });
      const job = await submitJob(g.s, P, { app: 'sim' });
      const slow = await g.host();
      const idle = await g.host();
      const third = await g.host();
      const [t] = await slow.claim();
      assert.deepEqual(await idle.claim(), [], 'too early: the task has not run a minute');
      g.advance(50_000);
      assert.equal((await slow.heartbeat([{ taskId: t.taskId, progress: 0.1 }])).body.leases.length, 1);
      g.advance(20_000);
      assert.equal((await slow.heartbeat([{ taskId: t.taskId, progress: 0.1 }])).body.leases.length, 1);
      // 70 s for 10%: about ten minutes to go, where a fresh copy would take a minute or so.
      assert.deepEqual(await slow.claim(), [], 'never a copy on the host that runs the job');
      const [copy] = await idle.claim();
      assert.equal(copy.jobId, job);
      assert.equal(copy.attempt, t.attempt, 'a duplicate is not another attempt');
      assert.deepEqual(await third.claim(), [], 'no further copy before the copy has run a minute');
      let detail = await g.job(job);
      assert.deepEqual(detail.tasks.map((x: { replica: number; hostId: number }) => [x.replica, x.hostId]), [[0, slow.id], [1, idle.id]]);
      assert.equal(detail.job.state, 'running');
      assert.equal(detail.job.attempts, 1);

      assert.equal((await idle.report(copy.taskId, ok)).status, 200);
      detail = await g.job(job);
      assert.equal(detail.job.state, 'succeeded');
      const hb = await slow.heartbeat([{ taskId: t.taskId }]);
      assert.deepEqual(hb.body.leases, []);
      assert.match(hb.body.abort[0].reason, /succeeded/);
      const late = await slow.report(t.taskId, { outcome: { kind: 'aborted' }, durationMs: 80_000 });
      assert.deepEqual(late.body, { taskState: 'aborted', jobState: 'succeeded', replayed: false });
    }));

  it('a host\'s pace is learned from its successes and shown to operators; an idle slow host does not copy what an idle fast one does', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim', { resources: CORE });
      const fast = await g.host();
      const slow = await g.host();
      const runner = await g.host();
      const finish = async (h: typeof fast, durationMs: number) => {
        await submitJob(g.s, P, { app: 'sim' });
        const [t] = await h.claim({ maxTasks: 1 });
        g.advance(durationMs); // the server learns pace from the time it saw the task held
        assert.equal((await h.report(t.taskId, { ...ok, durationMs })).status, 200);
      };
      await finish(fast, 60_000); // the queue's first: it now takes 60 s typically
      await finish(slow, 240_000); // four times that: pace 4, and the queue takes 96 s
      await finish(fast, 48_000); // half of 96 s: pace 0.5
      const listed = (await g.s.call('GET', '/v1/hosts')).body.hosts as Array<{ id: number; pace: number | null }>;
      assert.deepEqual([fast, slow, runner].map((h) => listed.find((x) => x.id === h.id)?.pace), [0.5, 4, null]);

      const job = await submitJob(g.s, P, { app: 'sim' });
      const [t] = await runner.claim();
      g.advance(90_000);
      await runner.heartbeat([{ taskId: t.taskId }]);
      // 90 s without a word, where tasks take 86 s: a copy on the slow host would take about
      // 350 s, on the fast one about 45 s.
      assert.deepEqual(await slow.claim(), [], 'the slow host would finish no sooner');
      assert.deepEqual(ids(await fast.claim()), [job]);
    }));

  it('a failed duplicate leaves the job to the task still running; speculation can be turned off', async () => {
    await withGrid(async (g) => {
      await createApp(g.s, P, 'sim', { resources: CORE });
      const job = await submitJob(g.s, P, { app: 'sim' });
      const slow = await g.host();
      const idle = await g.host();
      const [t] = await slow.claim();
      g.advance(70_000);
      await slow.heartbeat([{ taskId: t.taskId, progress: 0.05 }]);
      const [copy] = await idle.claim();
      assert.equal((await idle.report(copy.taskId, failed(2))).body.jobState, 'running', 'the first task still carries the job');
      assert.equal((await slow.report(t.taskId, ok)).body.jobState, 'succeeded');
      assert.equal((await g.job(job)).job.attempts, 1);
    });
    await withGrid(
      async (g) => {
        await createApp(g.s, P, 'sim', { resources: CORE });
        await submitJob(g.s, P, { app: 'sim' });
        const slow = await g.host();
        const idle = await g.host();
        const [t] = await slow.claim();
        g.advance(70_000);
        await slow.heartbeat([{ taskId: t.taskId, progress: 0.05 }]);
        assert.deepEqual(await idle.claim(), [], 'no duplicates when speculation is off');
      },
      { scheduling: { speculation: { ...DEFAULT_SCHEDULING.speculation, enabled: false } } },
    );
  });
});
