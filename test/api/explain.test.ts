import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { assertError, createApp, submitJob } from './util.js';
import { BIG, ok, P, TIMING, withGrid, type Grid } from './protocol-grid.js';

/**
 * GET /v1/projects/{p}/jobs/{id}/explain: each reason arising for real, through hosts that
 * speak the agent protocol. The wording of every reason is tested in
 * test/scheduling/explain.test.ts; these check that the server gathers the right facts.
 */

const CORE = { cores: 1, memoryMiB: 512, diskMiB: 1024, gpus: 0 };

async function explain(g: Grid, jobId: number, opts: { project?: string; token?: string } = {}) {
  const r = await g.s.call('GET', `/v1/projects/${opts.project ?? P}/jobs/${jobId}/explain`, opts.token === undefined ? {} : { token: opts.token });
  return r;
}

async function explained(g: Grid, jobId: number, token?: string) {
  const r = await explain(g, jobId, token === undefined ? {} : { token });
  assert.equal(r.status, 200, r.text);
  return r.body;
}

const codes = (e: { reasons: Array<{ code: string }> }) => e.reasons.map((r) => r.code);
const reasonOf = (e: { reasons: Array<{ code: string; message: string; details: string[] }> }, code: string) => {
  const r = e.reasons.find((x) => x.code === code);
  assert.ok(r, `no ${code} among ${codes(e).join(', ')}`);
  return r;
};

describe('GET …/jobs/{id}/explain', () => {
  it('a job too big for every live host names the resource and the largest host', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim', { resources: CORE });
      const job = await submitJob(g.s, P, { app: 'sim', resources: { cores: 100 } });
      const h = await g.host();
      assert.deepEqual(await h.claim(), [], 'nothing fits');
      await g.host({ resources: { ...BIG, cores: 128 } }); // enrolled, but never asked for work: not live

      const e = await explained(g, job);
      assert.equal(e.jobId, job);
      assert.equal(e.state, 'queued');
      assert.equal(e.summary, `job ${job} cannot run on any live host: needs 100 cores; the largest live host has 64`);
      assert.deepEqual(codes(e), ['no_host_fits', 'no_quota', 'no_dependencies']);
      assert.equal(reasonOf(e, 'no_host_fits').message, 'the only live host cannot run it: needs 100 cores; the largest live host has 64');
      assert.deepEqual(e.hosts, {
        live: 1, canRun: 0, busy: 0,
        excluded: [{ blocker: 'resource:cores', hosts: 1, message: '1 host has too few cores (it needs 100 cores; it has 64)' }],
      });
      assert.deepEqual(e.jobsAhead, { count: 0, atLeast: false });
    }));

  it('a selector no live host satisfies names the label, and what the hosts carry', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim', { resources: CORE });
      const job = await submitJob(g.s, P, { app: 'sim', selector: { 'gpu-model': 'a100' } });
      const h = await g.host();
      assert.deepEqual(await h.claim({ labels: { 'gpu-model': 'v100' } }), []);

      const e = await explained(g, job);
      assert.equal(e.summary, `job ${job} cannot run on any live host: needs label gpu-model=a100; no live host has it`);
      assert.deepEqual(reasonOf(e, 'no_host_fits').details, ['1 host lacks label gpu-model=a100 (it has gpu-model=v100)']);

      // The host comes back with the label: now it could run the job, and is idle.
      await h.work({ labels: { 'gpu-model': 'a100' }, maxTasks: 0 });
      const after = await explained(g, job);
      assert.equal(codes(after)[0], 'ready', after.summary);
      assert.equal(after.hosts.canRun, 1);
    }));

  it('a job whose host went silent waits out its backoff, and says that host is no longer live', () =>
    withGrid(
      async (g) => {
        await createApp(g.s, P, 'sim', { resources: CORE });
        const job = await submitJob(g.s, P, { app: 'sim' });
        const h = await g.host();
        assert.equal((await h.claim()).length, 1);
        g.advance(TIMING.leaseSeconds * 1000 + 1);
        await g.s.sweeper.sweep();
        const { job: j } = await g.job(job);
        assert.equal(j.state, 'queued');
        assert.ok(j.retryAt, 'a lost task requeues its job after a backoff');

        const e = await explained(g, job);
        assert.deepEqual(codes(e), ['backoff', 'no_hosts', 'no_quota', 'no_dependencies']);
        const b = reasonOf(e, 'backoff');
        assert.match(b.message, new RegExp(`^it waits out a retry backoff after attempt 1 \\(lost: its host stopped reporting\\) until ${j.retryAt.replace(/\./g, '\\.')}, (29|30) s from now$`));
        assert.match(e.summary, new RegExp(`^job ${job} is waiting out a retry backoff after attempt 1 until ${j.retryAt.replace(/\./g, '\\.')}`));
        assert.equal(reasonOf(e, 'no_hosts').message, 'no live host: the only enrolled host has not been seen in the last 1 min (a lease)');

        // The backoff over and the host back: it runs.
        g.advance(30_000);
        assert.deepEqual((await h.claim()).map((t: { jobId: number }) => t.jobId), [job]);
        const running = await explained(g, job);
        assert.deepEqual(codes(running), ['not_queued']);
        assert.equal(running.summary, `job ${job}: it is running (attempt 2), not waiting`);
        assert.equal(running.hosts, null);
      },
      { scheduling: { backoffBaseSeconds: 30 } },
    ));

  it('a job behind others in a busy grid: the hosts that could run it are busy, with the count ahead of it', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim', { resources: CORE });
      const r = await g.s.call('POST', `/v1/projects/${P}/batches`, { body: { app: 'sim', count: 6 } });
      assert.equal(r.status, 201, r.text);
      const ids: number[] = r.body.jobIds;
      const urgent = await submitJob(g.s, P, { app: 'sim', priority: 10 });
      const h = await g.host({ resources: { ...BIG, cores: 2 } });
      const small = await g.host({ resources: { ...BIG, cores: 0.5 } });
      assert.deepEqual(await small.claim(), [], 'half a core: too small for any of them');
      const running = await h.claim();
      assert.deepEqual(running.map((t: { jobId: number }) => t.jobId), [urgent, ids[0]], 'two cores: two tasks, by priority then age');

      const last = ids[5]!;
      const e = await explained(g, last);
      assert.equal(e.summary, `job ${last} is waiting for room: 1 live host could run it, and it is busy (2 tasks); 4 jobs ahead of it in its queue`);
      assert.deepEqual(reasonOf(e, 'hosts_busy').details[0], 'the other live host cannot run it: 1 host has too few cores (it needs 1 core; it has 0.5)');
      assert.deepEqual({ ...e.hosts, excluded: e.hosts.excluded.length }, { live: 2, canRun: 1, busy: 1, excluded: 1 });
      assert.deepEqual(e.jobsAhead, { count: 4, atLeast: false });
      assert.match(reasonOf(await explained(g, ids[1]!), 'hosts_busy').message, /; it is at the head of its queue$/);

      // A task ends: the host has room again, and the next job is the head.
      assert.equal((await h.report(running[0].taskId, ok)).status, 200);
      assert.equal((await h.claim({ maxTasks: 1 }))[0].jobId, ids[1]);
      assert.deepEqual((await explained(g, last)).jobsAhead, { count: 3, atLeast: false });
    }));

  it('a starved large job gets a host kept free for it, named to operators only', () =>
    withGrid(
      async (g) => {
        const viewer = await g.s.userWithRole('vera', P, 'viewer');
        await createApp(g.s, P, 'small', { resources: CORE });
        await createApp(g.s, P, 'large', { resources: { ...CORE, cores: 4 } });
        const smalls = (count: number) => g.s.call('POST', `/v1/projects/${P}/batches`, { body: { app: 'small', count } });
        await smalls(3);
        const h = await g.host({ name: 'big-box', resources: { ...BIG, cores: 4 } });
        const running = await h.claim({ free: { cores: 3 } });
        assert.equal(running.length, 3);
        const large = await submitJob(g.s, P, { app: 'large' });
        g.advance(60_000 + 1);
        await smalls(10); // a minute newer than the large job: they would overtake it
        assert.equal((await h.report(running[0].taskId, ok)).status, 200);
        assert.deepEqual(await h.claim({ free: { cores: 1 } }), [], 'the host is reserved: it takes no small job');

        const e = await explained(g, large);
        assert.equal(e.summary, `job ${large} is next: host big-box is being kept free for it: it takes no other work until this job fits`);
        assert.deepEqual(codes(e).slice(0, 2), ['hosts_busy', 'reserved']);
        const seen = await explained(g, large, viewer);
        assert.equal(reasonOf(seen, 'reserved').message, 'a host is being kept free for it: it takes no other work until this job fits');
        assert.ok(!JSON.stringify(seen).includes('big-box'), 'host names are for operators');
      },
      { scheduling: { starvationSeconds: 60 } },
    ));

  it('a cool-down from the app keeps a host away, and says so', () =>
    withGrid(
      async (g) => {
        await createApp(g.s, P, 'flaky', { resources: CORE, maxAttempts: 10 });
        const h = await g.host();
        const witness = await g.host();
        // It fails on h, then succeeds on another host: the failure was h's.
        const job = await submitJob(g.s, P, { app: 'flaky' });
        const [t] = await h.claim();
        assert.equal((await h.report(t.taskId, { outcome: { kind: 'failed', exitCode: 1 }, durationMs: 10 })).status, 200);
        const [w] = await witness.claim();
        assert.equal((await witness.report(w.taskId, ok)).status, 200);
        // The witness then goes quiet (not live any more); h keeps asking and gets nothing of the app.
        const next = await submitJob(g.s, P, { app: 'flaky' });
        g.advance(TIMING.leaseSeconds * 1000 + 1000);
        assert.deepEqual(await h.claim(), []);
        assert.equal((await g.job(job)).job.state, 'succeeded');
        const e = await explained(g, next);
        assert.equal(e.summary, `job ${next} cannot run on any live host: every live host is cooling down from this app after failing it repeatedly`);
        assert.deepEqual(e.hosts.excluded.map((x: { blocker: string }) => x.blocker), ['cooldown']);
      },
      { scheduling: { backoffBaseSeconds: 0, hostFailureLimit: 1, hostCooldownSeconds: 100 } },
    ));

  it('another project\'s job is 404, as everywhere; a viewer may explain; bad ids are 400 naming the field', () =>
    withGrid(async (g) => {
      const viewer = await g.s.userWithRole('vic', P, 'viewer');
      await createApp(g.s, P, 'sim', { resources: CORE });
      const mine = await submitJob(g.s, P, { app: 'sim' });
      const outsider = await g.s.userWithRole('otto', 'other');
      await createApp(g.s, 'other', 'sim', { resources: CORE }, outsider);
      const theirs = await submitJob(g.s, 'other', { app: 'sim' }, outsider);

      const e = await explained(g, mine, viewer);
      assert.equal(e.jobId, mine);
      assert.equal(codes(e)[0], 'no_hosts');
      assert.equal(e.summary, `job ${mine} is waiting: no live host: no host is enrolled`);

      assertError(await explain(g, theirs, { token: viewer }), 404, 'not_found');
      assertError(await explain(g, theirs, { project: 'other', token: viewer }), 404, 'not_found');
      assertError(await explain(g, mine, { token: outsider }), 404, 'not_found');
      assertError(await explain(g, 999_999), 404, 'not_found');
      const bad = await g.s.call('GET', `/v1/projects/${P}/jobs/abc/explain`);
      assertError(bad, 400, 'invalid_request', 'params/id');
      assertError(await g.s.call('GET', `/v1/projects/${P}/jobs/${mine}/explain`, { token: null }), 401, 'unauthenticated');
    }));
});
