import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { describe, it } from 'node:test';
import { assertError, createApp, OCTET, openEvents, sha256, submitJob, uploadBlob } from './util.js';
import { BIG, failed, ids, ok, P, TIMING, withGrid } from './protocol-grid.js';

/** The agent protocol (/agent/v1) through HTTP, as an agent speaks it (see protocol-grid.ts). */

describe('agent protocol: work requests', () => {
  it('hands out only jobs that fit every free resource, highest priority first, up to maxTasks', () =>
    withGrid(async (g) => {
      const offer = { cores: 4, memoryMiB: 4096, diskMiB: 10_000, gpus: 0 };
      await createApp(g.s, P, 'small', { resources: { cores: 1, memoryMiB: 512, diskMiB: 1024, gpus: 0 } });
      await createApp(g.s, P, 'wide', { resources: { cores: 8 } });
      await createApp(g.s, P, 'fat', { resources: { memoryMiB: 8192 } });
      await createApp(g.s, P, 'disky', { resources: { diskMiB: 50_000 } });
      await createApp(g.s, P, 'gpu', { resources: { gpus: 1 } });
      // The big ones come first in priority order: each exceeds the offer in exactly one resource.
      const big = [];
      for (const app of ['wide', 'fat', 'disky', 'gpu']) big.push(await submitJob(g.s, P, { app, priority: 10 }));
      const low1 = await submitJob(g.s, P, { app: 'small' });
      const high = await submitJob(g.s, P, { app: 'small', priority: 5 });
      const low2 = await submitJob(g.s, P, { app: 'small' });
      const low3 = await submitJob(g.s, P, { app: 'small' });
      // A job that fits only with its own override, and one that an override makes too big.
      const shrunk = await submitJob(g.s, P, { app: 'fat', resources: { memoryMiB: 1024 }, priority: -1 });
      const grown = await submitJob(g.s, P, { app: 'small', resources: { gpus: 2 }, priority: 20 });

      const h = await g.host();
      const first = await h.claim({ free: offer, maxTasks: 2 });
      assert.deepEqual(ids(first), [high, low1], 'priority first, then age; stops at maxTasks');
      // 2 of 4 cores left on the host: first fit takes what still fits and skips what does not.
      const second = await h.claim({ free: { ...offer, cores: 2 }, maxTasks: 10 });
      assert.deepEqual(ids(second), [low2, low3], 'free capacity is shared by the tasks of one answer');
      const third = await h.claim({ free: offer, maxTasks: 10 });
      assert.deepEqual(ids(third), [shrunk], 'job overrides count, not the app alone');
      assert.deepEqual(ids(await h.claim({ free: offer, maxTasks: 10 })), []);

      for (const id of [...big, grown]) assert.equal((await g.job(id)).job.state, 'queued');
      const roomy = await g.host();
      // Priority first; among equals the policy packs (larger shares of the host first), so only the set is fixed.
      const all = ids(await roomy.claim({ free: BIG, maxTasks: 10 }));
      assert.equal(all[0], grown);
      assert.deepEqual(all.slice(1).sort((a, b) => a - b), big);

      const { job, tasks } = await g.job(high);
      assert.equal(job.state, 'running');
      assert.equal(job.attempts, 1);
      assert.equal(tasks.length, 1);
      assert.equal(tasks[0].id, first[0].taskId);
      assert.equal(tasks[0].hostId, h.id);
      assert.equal(tasks[0].attempt, 1);
      assert.equal(tasks[0].state, 'assigned');
      assert.equal(tasks[0].runtime, 'docker');
    }));

  it('fractional cores add up exactly: three 0.1-core jobs fill 0.3 free cores', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'tiny', { resources: { cores: 0.1, memoryMiB: 64, diskMiB: 1 } });
      const jobs = [];
      for (let i = 0; i < 4; i++) jobs.push(await submitJob(g.s, P, { app: 'tiny' }));
      const h = await g.host();
      assert.deepEqual(ids(await h.claim({ free: { cores: 0.3, memoryMiB: 1024, diskMiB: 1024, gpus: 0 } })), jobs.slice(0, 3));
    }));

  it('an assignment carries the command, args, env, effective resources and sized inputs', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim', {
        command: ['/bin/sim', '--fast'], resources: { cores: 2, memoryMiB: 1024 }, maxRuntimeSeconds: 600, checkpointing: true,
        imageDigest: 'sha256:' + 'ab'.repeat(32),
      });
      const data = Buffer.from('the input data\n');
      const digest = await uploadBlob(g.s, P, data);
      const jobId = await submitJob(g.s, P, { app: 'sim', args: ['--n', '7'], env: { SEED: '42' }, inputs: { 'data.txt': digest }, resources: { memoryMiB: 2048 } });
      const h = await g.host();
      const before = g.s.ctx.now();
      const r = await h.work({ maxTasks: 1 });
      assert.equal(r.status, 200, r.text);
      assert.equal(r.body.replayed, false);
      assert.equal(r.body.heartbeatSeconds, TIMING.heartbeatSeconds);
      assert.equal(r.body.tasks.length, 1);
      const a = r.body.tasks[0];
      const lease = Date.parse(a.leaseExpiresAt);
      assert.ok(lease >= before + TIMING.leaseSeconds * 1000 && lease <= g.s.ctx.now() + TIMING.leaseSeconds * 1000, `lease ${a.leaseExpiresAt}`);
      assert.deepEqual({ ...a, taskId: 0, leaseExpiresAt: '' }, {
        taskId: 0, jobId, project: P, attempt: 1, runtime: 'docker', leaseExpiresAt: '',
        image: 'sci/sim:1', imageDigest: 'sha256:' + 'ab'.repeat(32),
        command: ['/bin/sim', '--fast', '--n', '7'], env: { SEED: '42' },
        resources: { cores: 2, memoryMiB: 2048, diskMiB: 1024, gpus: 0 },
        maxRuntimeSeconds: 600, checkpointing: true, checkpoint: null,
        inputs: [{ name: 'data.txt', sha256: digest, size: data.length }],
      });
    }));

  it('with no work: an empty list and a retryAfterMs spread around the idle poll', () =>
    withGrid(async (g) => {
      const h = await g.host();
      const waits = new Set<number>();
      for (let i = 0; i < 20; i++) {
        const r = await h.work();
        assert.equal(r.status, 200, r.text);
        assert.deepEqual(r.body.tasks, []);
        const ms = r.body.retryAfterMs;
        assert.ok(ms >= TIMING.idlePollSeconds * 500 && ms <= TIMING.idlePollSeconds * 1500, `retryAfterMs ${ms}`);
        waits.add(ms);
      }
      assert.ok(waits.size > 1, 'idle hosts are told different delays, so they do not call in step');
    }));

  it('a host gets no job of an app built for another platform', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'armonly', { platforms: ['linux/arm64'] });
      const jobId = await submitJob(g.s, P, { app: 'armonly' });
      const amd = await g.host({ platform: 'linux/amd64' });
      assert.deepEqual(await amd.claim(), []);
      assert.equal((await g.job(jobId)).job.state, 'queued');
      const arm = await g.host({ platform: 'linux/arm64' });
      assert.deepEqual(ids(await arm.claim()), [jobId]);
    }));

  it('a host with little time left (a pilot near the end of its allocation) gets only apps whose runs fit in it', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'hour', { maxRuntimeSeconds: 3600 });
      await createApp(g.s, P, 'minute', { maxRuntimeSeconds: 60 });
      const long = await submitJob(g.s, P, { app: 'hour', priority: 5 });
      const short = await submitJob(g.s, P, { app: 'minute' });
      const pilot = await g.host();
      assert.deepEqual(ids(await pilot.claim({ maxRuntimeSeconds: 30 })), [], 'neither fits in 30 s');
      assert.deepEqual(ids(await pilot.claim({ maxRuntimeSeconds: 600 })), [short], 'the 60 s app fits in 600 s; the higher-priority hour does not');
      assert.deepEqual(ids(await pilot.claim()), [long], 'without a limit, any');
      const bad = await pilot.work({ maxRuntimeSeconds: 0 });
      assertError(bad, 400, 'invalid_request', 'body/maxRuntimeSeconds');
    }));

  it('only apps with a native command go to hosts asking for the native runtime', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'boxed', { command: ['/bin/boxed'] });
      await createApp(g.s, P, 'both', { command: ['/bin/in-box'], nativeCommand: ['/opt/sim/run', '-q'] });
      const boxed = await submitJob(g.s, P, { app: 'boxed', args: ['1'] });
      const both = await submitJob(g.s, P, { app: 'both', args: ['2'] });
      const both2 = await submitJob(g.s, P, { app: 'both', args: ['3'] });
      const native = await g.host();
      const got = await native.claim({ runtimes: ['native'] });
      assert.deepEqual(ids(got), [both, both2]);
      assert.equal(got[0].runtime, 'native');
      assert.deepEqual(got[0].command, ['/opt/sim/run', '-q', '2']);
      assert.equal((await g.job(boxed)).job.state, 'queued', 'an app without a native command never runs natively');
      assert.equal((await g.job(both)).tasks[0].runtime, 'native');
      const docker = await g.host();
      const d = await docker.claim({ runtimes: ['docker', 'native'] });
      assert.deepEqual(ids(d), [boxed]);
      assert.equal(d[0].runtime, 'docker');
      assert.deepEqual(d[0].command, ['/bin/boxed', '1']);
    }));

  it('the host order of runtimes is its preference', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'both', { command: ['/bin/in-box'], nativeCommand: ['/opt/run'] });
      await submitJob(g.s, P, { app: 'both' });
      await submitJob(g.s, P, { app: 'both' });
      const h = await g.host();
      assert.equal((await h.claim({ runtimes: ['native', 'docker'], maxTasks: 1 }))[0].runtime, 'native');
      const d = (await h.claim({ runtimes: ['docker', 'native'], maxTasks: 1 }))[0];
      assert.equal(d.runtime, 'docker');
      assert.deepEqual(d.command, ['/bin/in-box']);
    }));

  it('a retried request id returns the same tasks and claims nothing more; a new one claims more', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const jobs = [];
      for (let i = 0; i < 3; i++) jobs.push(await submitJob(g.s, P, { app: 'sim' }));
      const h = await g.host();
      const requestId = randomUUID();
      const first = await h.work({ requestId, maxTasks: 2 });
      assert.equal(first.body.replayed, false);
      assert.deepEqual(ids(first.body.tasks), jobs.slice(0, 2));
      const again = await h.work({ requestId, maxTasks: 10 });
      assert.equal(again.status, 200);
      assert.equal(again.body.replayed, true);
      assert.deepEqual(again.body.tasks, first.body.tasks, 'the same assignments, leases included');
      assert.equal((await g.job(jobs[2]!)).job.state, 'queued', 'the retry claimed nothing');
      for (const j of jobs.slice(0, 2)) {
        const { job, tasks } = await g.job(j);
        assert.equal(tasks.length, 1, 'one task per job, however often the request is retried');
        assert.equal(job.attempts, 1);
      }
      // A task that has ended is not handed out again by a late retry.
      assert.equal((await h.report(first.body.tasks[0].taskId, ok)).status, 200);
      const late = await h.work({ requestId, maxTasks: 2 });
      assert.equal(late.body.replayed, true);
      assert.deepEqual(late.body.tasks.map((t: { taskId: number }) => t.taskId), [first.body.tasks[1].taskId]);
      // The request id belongs to the host: another host using it claims afresh.
      const other = await g.host();
      const theirs = await other.work({ requestId, maxTasks: 10 });
      assert.equal(theirs.body.replayed, false);
      assert.deepEqual(ids(theirs.body.tasks), [jobs[2]]);
    }));
});

describe('agent protocol: heartbeats', () => {
  it('extend leases, mark tasks running, and record progress and usage', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const [a] = await h.claim();
      g.advance(10_000);
      const r = await h.heartbeat([{ taskId: a.taskId, progress: 0.25, usage: { cpuSeconds: 3.5, peakMemoryMiB: 120 } }]);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body.abort, []);
      assert.equal(r.body.heartbeatSeconds, TIMING.heartbeatSeconds);
      assert.equal(r.body.leases.length, 1);
      assert.equal(r.body.leases[0].taskId, a.taskId);
      const lease = Date.parse(r.body.leases[0].leaseExpiresAt);
      assert.ok(lease >= Date.parse(a.leaseExpiresAt) + 10_000, `the lease moved from ${a.leaseExpiresAt} to ${r.body.leases[0].leaseExpiresAt}`);
      const { tasks } = await g.job(jobId);
      assert.equal(tasks[0].state, 'running');
      assert.equal(tasks[0].progress, 0.25);
      assert.deepEqual(tasks[0].usage, { cpuSeconds: 3.5, peakMemoryMiB: 120 });
      assert.equal(Date.parse(tasks[0].leaseExpiresAt), lease);
      const started = tasks[0].startedAt;
      assert.ok(started !== null);
      // A later beat without progress keeps the last one, and the start time stays.
      g.advance(5_000);
      const r2 = await h.heartbeat([{ taskId: a.taskId }]);
      assert.ok(Date.parse(r2.body.leases[0].leaseExpiresAt) >= lease + 5_000);
      const after = (await g.job(jobId)).tasks[0];
      assert.equal(after.progress, 0.25);
      assert.equal(after.startedAt, started);
      // An empty heartbeat is fine (a host with nothing running says it is alive).
      const empty = await h.heartbeat([]);
      assert.deepEqual(empty.body, { leases: [], abort: [], heartbeatSeconds: TIMING.heartbeatSeconds });
    }));

  it('lists unknown tasks, other hosts\' tasks, ended tasks and cancelled jobs\' tasks in abort, with a reason', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      for (let i = 0; i < 4; i++) await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const other = await g.host();
      const [live, toCancel, ended] = await h.claim({ maxTasks: 3 });
      const [theirs] = await other.claim();
      assert.equal((await g.s.call('POST', `/v1/projects/${P}/jobs/${toCancel.jobId}/cancel`)).status, 200);
      assert.equal((await h.report(ended.taskId, ok)).status, 200);
      const r = await h.heartbeat([{ taskId: live.taskId }, { taskId: 999_999 }, { taskId: theirs.taskId }, { taskId: toCancel.taskId }, { taskId: ended.taskId }]);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body.leases.map((l: { taskId: number }) => l.taskId), [live.taskId]);
      const why = new Map<number, string>(r.body.abort.map((x: { taskId: number; reason: string }) => [x.taskId, x.reason]));
      assert.deepEqual([...why.keys()].sort((a, b) => a - b), [999_999, theirs.taskId, toCancel.taskId, ended.taskId].sort((a, b) => a - b));
      assert.match(why.get(999_999)!, /no such task/);
      assert.match(why.get(theirs.taskId)!, /no such task/, 'another host\'s task is as unknown as a made-up one');
      assert.match(why.get(toCancel.taskId)!, /cancelled/);
      assert.match(why.get(ended.taskId)!, /succeeded/);
      // The other host's task was not touched by this host's heartbeat.
      const t = (await g.job(theirs.jobId)).tasks[0];
      assert.equal(t.state, 'assigned');
    }));

  it('a task listed twice is refused, naming the field, and nothing is recorded', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const [a] = await h.claim();
      const r = await h.heartbeat([{ taskId: a.taskId, progress: 0.5 }, { taskId: a.taskId, progress: 0.6 }]);
      assertError(r, 400, 'invalid_request', 'body/tasks/1/taskId');
      const t = (await g.job(jobId)).tasks[0];
      assert.equal(t.state, 'assigned');
      assert.equal(t.progress, null);
    }));

  it('log pieces carry offsets: a repeat adds nothing, a partly new piece adds only its new part', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const [a] = await h.claim();
      const log = async (after?: number) => {
        const r = await g.s.call('GET', `/v1/projects/${P}/tasks/${a.taskId}/log${after === undefined ? '' : `?after=${after}`}`);
        assert.equal(r.status, 200, r.text);
        return r.body;
      };
      assert.deepEqual(await log(), { taskId: a.taskId, jobId, state: 'assigned', text: '', start: 0, end: 0, done: false });
      await h.heartbeat([{ taskId: a.taskId, log: { offset: 0, text: 'hello ' } }]);
      await h.heartbeat([{ taskId: a.taskId, log: { offset: 0, text: 'hello ' } }]); // a retried heartbeat
      assert.deepEqual(await log(), { taskId: a.taskId, jobId, state: 'running', text: 'hello ', start: 0, end: 6, done: false });
      await h.heartbeat([{ taskId: a.taskId, log: { offset: 3, text: 'lo world\n' } }]); // overlaps "lo "
      assert.equal((await log()).text, 'hello world\n');
      await h.heartbeat([{ taskId: a.taskId, log: { offset: 2, text: 'llo' } }]); // wholly old
      const whole = await log();
      assert.equal(whole.text, 'hello world\n');
      assert.equal(whole.end, 12);
      const tail = await log(6);
      assert.deepEqual({ text: tail.text, start: tail.start, end: tail.end }, { text: 'world\n', start: 6, end: 12 });
      const none = await log(100);
      assert.deepEqual({ text: none.text, start: none.start, end: none.end }, { text: '', start: 12, end: 12 });
      // The report's last piece ends the log; the job's log is its latest task's.
      assert.equal((await h.report(a.taskId, { ...ok, log: { offset: 6, text: 'world\nbye\n' } })).status, 200);
      const jobLog = await g.s.call('GET', `/v1/projects/${P}/jobs/${jobId}/log?after=12`);
      assert.equal(jobLog.status, 200, jobLog.text);
      assert.deepEqual(jobLog.body, { taskId: a.taskId, jobId, state: 'succeeded', text: 'bye\n', start: 12, end: 16, done: true });
    }));
});

describe('agent protocol: reports', () => {
  it('a success settles the job with its outputs; the same report is a replay, another one a conflict', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const [a] = await h.claim();
      const out = Buffer.from('42\n');
      const up = await h.upload(a.taskId, out);
      assert.equal(up.status, 201, up.text);
      assert.deepEqual({ sha256: up.body.sha256, size: up.body.size }, { sha256: sha256(out), size: 3 });
      const body = { ...ok, usage: { cpuSeconds: 1, peakMemoryMiB: 10 }, outputs: { 'answer.txt': { sha256: sha256(out), size: 3 } } };
      const r = await h.report(a.taskId, body);
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body, { taskState: 'succeeded', jobState: 'succeeded', replayed: false });
      const { job, tasks } = await g.job(jobId);
      assert.equal(job.state, 'succeeded');
      assert.ok(job.finishedAt);
      assert.equal(job.attempts, 1);
      assert.equal(tasks[0].state, 'succeeded');
      assert.equal(tasks[0].exitCode, 0);
      assert.deepEqual(tasks[0].outcome, { kind: 'succeeded' });
      assert.equal(tasks[0].durationMs, 1200);
      assert.deepEqual(tasks[0].outputs, { 'answer.txt': { sha256: sha256(out), size: 3 } });
      assert.ok(tasks[0].endedAt);

      const again = await h.report(a.taskId, body);
      assert.equal(again.status, 200, again.text);
      assert.deepEqual(again.body, { taskState: 'succeeded', jobState: 'succeeded', replayed: true });
      assertError(await h.report(a.taskId, failed(1)), 409, 'conflict');
      assertError(await h.report(a.taskId, { ...body, durationMs: 1201 }), 409, 'conflict');
      assert.deepEqual((await g.job(jobId)).tasks[0].outcome, { kind: 'succeeded' }, 'the conflicting reports changed nothing');
    }));

  it('a failure requeues the job, counting attempts, until the app\'s maxAttempts fail it', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'flaky', { maxAttempts: 2 });
      const jobId = await submitJob(g.s, P, { app: 'flaky' });
      const h = await g.host();
      const [a1] = await h.claim();
      const r1 = await h.report(a1.taskId, failed(3));
      assert.deepEqual(r1.body, { taskState: 'failed', jobState: 'queued', replayed: false });
      let { job, tasks } = await g.job(jobId);
      assert.equal(job.state, 'queued');
      assert.equal(job.attempts, 1);
      assert.match(job.reason, /exited with code 3/);
      assert.equal(tasks[0].state, 'failed');
      assert.equal(tasks[0].exitCode, 3);
      assert.match(tasks[0].reason, /exited with code 3/);
      // The retry waits out a backoff (10 s after a first attempt, by default).
      assert.equal(Date.parse(job.retryAt), Date.parse(job.updatedAt) + 10_000);
      assert.deepEqual(await h.claim(), [], 'not before its backoff has passed');
      g.advance(10_000);
      const [a2] = await h.claim();
      assert.equal(a2.jobId, jobId);
      assert.equal(a2.attempt, 2);
      const r2 = await h.report(a2.taskId, failed(3));
      assert.deepEqual(r2.body, { taskState: 'failed', jobState: 'failed', replayed: false });
      ({ job, tasks } = await g.job(jobId));
      assert.equal(job.state, 'failed');
      assert.equal(job.attempts, 2);
      assert.match(job.reason, /exited with code 3/);
      assert.match(job.reason, /2 of 2/);
      assert.ok(job.finishedAt);
      assert.deepEqual(tasks.map((t: { attempt: number; state: string }) => [t.attempt, t.state]), [[1, 'failed'], [2, 'failed']]);
      assert.deepEqual(await h.claim(), [], 'a failed job is not handed out again');
    }));

  it('out-of-memory, timeout and image outcomes say so in the reason', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'once', { maxAttempts: 1 });
      const oom = await submitJob(g.s, P, { app: 'once' });
      const slow = await submitJob(g.s, P, { app: 'once' });
      const pull = await submitJob(g.s, P, { app: 'once' });
      const h = await g.host();
      const [a, b, c] = await h.claim();
      const r = await h.report(c.taskId, { outcome: { kind: 'image_error', message: 'manifest unknown' }, durationMs: 0 });
      assert.deepEqual(r.body, { taskState: 'failed', jobState: 'failed', replayed: false });
      assert.match((await g.job(pull)).job.reason, /image problem: manifest unknown/);
      assert.equal((await h.report(a.taskId, { outcome: { kind: 'out_of_memory', limitMiB: 512 }, durationMs: 5 })).body.jobState, 'failed');
      assert.equal((await h.report(b.taskId, { outcome: { kind: 'timeout', limitSeconds: 60 }, durationMs: 60_000 })).body.jobState, 'failed');
      const o = await g.job(oom);
      assert.match(o.job.reason, /memory limit of 512 MiB/);
      assert.equal(o.tasks[0].exitCode, null);
      assert.deepEqual(o.tasks[0].outcome, { kind: 'out_of_memory', limitMiB: 512 });
      const t = await g.job(slow);
      assert.match(t.job.reason, /longer than its limit of 60 s/);
      assert.deepEqual(t.tasks[0].outcome, { kind: 'timeout', limitSeconds: 60 });
    }));

  it('an aborted task of a running job releases it to the queue without spending an attempt', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'once', { maxAttempts: 1 });
      const jobId = await submitJob(g.s, P, { app: 'once' });
      const h = await g.host();
      const [a] = await h.claim();
      const r = await h.report(a.taskId, { outcome: { kind: 'aborted' }, durationMs: 10 });
      assert.deepEqual(r.body, { taskState: 'aborted', jobState: 'queued', replayed: false });
      const { job, tasks } = await g.job(jobId);
      assert.equal(job.state, 'queued');
      assert.equal(job.attempts, 0, 'a release does not count');
      assert.match(job.reason, /released/);
      assert.equal(tasks[0].state, 'aborted');
      const [again] = await (await g.host()).claim();
      assert.equal(again.jobId, jobId, 'the only attempt is still there to use');
      assert.equal(again.attempt, 1);
    }));

  it('an aborted task of a cancelled job leaves the job cancelled', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const late = await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const [a, b] = await h.claim();
      for (const id of [jobId, late]) assert.equal((await g.s.call('POST', `/v1/projects/${P}/jobs/${id}/cancel`)).status, 200);
      const r = await h.report(a.taskId, { outcome: { kind: 'aborted' }, durationMs: 10 });
      assert.deepEqual(r.body, { taskState: 'aborted', jobState: 'cancelled', replayed: false });
      // Even a success that raced the cancel does not revive the job.
      const s = await h.report(b.taskId, ok);
      assert.deepEqual(s.body, { taskState: 'succeeded', jobState: 'cancelled', replayed: false });
      for (const id of [jobId, late]) assert.equal((await g.job(id)).job.state, 'cancelled');
      assert.deepEqual(await h.claim(), []);
    }));

  it('outputs must be uploaded first, with their true size, under plain file names; nothing is settled otherwise', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const [a] = await h.claim();
      const data = Buffer.from('out');
      const digest = sha256(data);
      assertError(await h.report(a.taskId, { ...ok, outputs: { 'out.txt': { sha256: digest, size: 3 } } }), 400, 'invalid_request', 'body/outputs/out.txt');
      assert.equal((await h.upload(a.taskId, data)).status, 201);
      for (const name of ['../x', 'a/b', '..', '.']) {
        assertError(await h.report(a.taskId, { ...ok, outputs: { [name]: { sha256: digest, size: 3 } } }), 400, 'invalid_request', `body/outputs/${name}`);
      }
      assertError(await h.report(a.taskId, { ...ok, outputs: { 'out.txt': { sha256: digest, size: 4 } } }), 400, 'invalid_request', 'body/outputs/out.txt/size');
      const { job, tasks } = await g.job(jobId);
      assert.equal(job.state, 'running');
      assert.equal(tasks[0].state, 'assigned');
      const r = await h.report(a.taskId, { ...ok, outputs: { 'out.txt': { sha256: digest, size: 3 } } });
      assert.equal(r.status, 200, r.text);
    }));

  it('a host cannot report another host\'s task or one that does not exist', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const other = await g.host();
      const [a] = await h.claim();
      assertError(await other.report(a.taskId, ok), 404, 'not_found');
      assertError(await other.report(999_999, ok), 404, 'not_found');
      // With outputs the task is looked up first (its project's blobs are checked): the same answer.
      const outputs = { 'out.txt': { sha256: 'a'.repeat(64), size: 1 } };
      assertError(await other.report(a.taskId, { ...ok, outputs }), 404, 'not_found');
      assertError(await other.report(999_999, { ...ok, outputs }), 404, 'not_found');
      assert.equal((await g.job(jobId)).job.state, 'running');
    }));

  it('after its lease expires and the sweeper runs, the task is lost and the job queued again after a backoff that doubles, then failed when attempts are spent', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim', { maxAttempts: 3 });
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const [a] = await h.claim();
      g.advance(TIMING.leaseSeconds * 1000 - 1_000);
      assert.equal(await g.s.sweeper.sweep(), 0, 'a live lease is not expired');
      g.advance(2_000);
      assert.equal(await g.s.sweeper.sweep(), 1);
      assert.equal(await g.s.sweeper.sweep(), 0, 'a lost task is lost once');
      let { job, tasks } = await g.job(jobId);
      assert.equal(job.state, 'queued');
      assert.equal(job.attempts, 1);
      assert.match(job.reason, /stopped reporting/);
      assert.equal(tasks[0].state, 'lost');
      assert.equal(Date.parse(job.retryAt) - Date.parse(job.updatedAt), 10_000, 'first backoff: the base');
      const hb = await h.heartbeat([{ taskId: a.taskId }]);
      assert.deepEqual(hb.body.leases, []);
      assert.match(hb.body.abort[0].reason, /lost/);
      assertError(await h.upload(a.taskId, Buffer.from('late')), 409, 'conflict');

      assert.deepEqual(await h.claim(), [], 'the job waits out its backoff');
      g.advance(10_000);
      const [b] = await h.claim();
      assert.equal(b.attempt, 2);
      g.advance(TIMING.leaseSeconds * 1000 + 1_000);
      assert.equal(await g.s.sweeper.sweep(), 1);
      ({ job } = await g.job(jobId));
      assert.equal(Date.parse(job.retryAt) - Date.parse(job.updatedAt), 20_000, 'second backoff: twice the first');
      g.advance(19_000);
      assert.deepEqual(await h.claim(), []);
      g.advance(1_000);
      const [c] = await h.claim();
      assert.equal(c.attempt, 3);
      g.advance(TIMING.leaseSeconds * 1000 + 1_000);
      assert.equal(await g.s.sweeper.sweep(), 1);
      ({ job, tasks } = await g.job(jobId));
      assert.equal(job.state, 'failed');
      assert.match(job.reason, /3 of 3/);
      assert.equal(job.retryAt, null);
      assert.ok(job.finishedAt);
      assert.deepEqual(tasks.map((t: { state: string }) => t.state), ['lost', 'lost', 'lost']);
      assertError(await h.report(c.taskId, ok), 409, 'lease_expired'); // a late report once the job has ended is refused
    }));

  it('a late result from a task counted lost is still accepted while its job is open, and ends it', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim', { maxAttempts: 3 });
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const cutOff = await g.host();
      const other = await g.host();
      const [a] = await cutOff.claim();
      g.advance(TIMING.leaseSeconds * 1000 + 1_000);
      assert.equal(await g.s.sweeper.sweep(), 1);
      g.advance(10_000);
      const [b] = await other.claim();
      assert.equal(b.jobId, jobId);
      // The first host was only cut off; its result arrives while the second attempt runs.
      const late = await cutOff.report(a.taskId, ok);
      assert.equal(late.status, 200, late.text);
      assert.deepEqual(late.body, { taskState: 'succeeded', jobState: 'succeeded', replayed: false });
      const { job, tasks } = await g.job(jobId);
      assert.equal(job.state, 'succeeded');
      assert.deepEqual(tasks.map((t: { state: string }) => t.state), ['succeeded', 'assigned']);
      const hb = await other.heartbeat([{ taskId: b.taskId }]);
      assert.deepEqual(hb.body.leases, []);
      assert.match(hb.body.abort[0].reason, /succeeded/, 'the second attempt is told to stop');
      assert.equal((await cutOff.report(a.taskId, ok)).status, 200, 'the same report again is a replay');
    }));

  it('a lost task\'s late report counts with the outputs it uploaded in time; naming one it never uploaded is lease_expired, saying where its job is', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim', { maxAttempts: 3 });
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const [a] = await h.claim();
      const data = Buffer.from('out');
      const digest = sha256(data);
      assert.equal((await h.upload(a.taskId, data)).status, 201, 'uploaded while its lease held');
      g.advance(TIMING.leaseSeconds * 1000 + 1_000);
      assert.equal(await g.s.sweeper.sweep(), 1);
      assert.equal((await g.job(jobId)).job.state, 'queued');
      // An output it could not upload any more: the agent must drop this result (a 409 is final to it), not retry it.
      const never = { sha256: sha256(Buffer.from('never')), size: 5 };
      const refused = await h.report(a.taskId, { ...ok, outputs: { 'out.txt': { sha256: digest, size: 3 }, 'never.txt': never } });
      assertError(refused, 409, 'lease_expired');
      assert.match(refused.body.error.message, /counted lost and its outputs were never uploaded \(its job is queued\)/);
      assert.deepEqual((await g.job(jobId)).tasks.map((t: { state: string }) => t.state), ['lost'], 'nothing settled');
      const late = await h.report(a.taskId, { ...ok, outputs: { 'out.txt': { sha256: digest, size: 3 } } });
      assert.equal(late.status, 200, late.text);
      assert.deepEqual(late.body, { taskState: 'succeeded', jobState: 'succeeded', replayed: false });
      assert.deepEqual((await g.job(jobId)).tasks[0].outputs, { 'out.txt': { sha256: digest, size: 3 } });
    }));

  it('a heartbeat keeps a lease past its first expiry, so the sweeper leaves it alone', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const [a] = await h.claim();
      for (let i = 0; i < 3; i++) {
        g.advance(TIMING.leaseSeconds * 1000 - 5_000);
        assert.equal((await h.heartbeat([{ taskId: a.taskId }])).body.leases.length, 1);
        assert.equal(await g.s.sweeper.sweep(), 0);
      }
      assert.equal((await g.job(jobId)).tasks[0].state, 'running');
      assert.equal((await h.report(a.taskId, ok)).body.jobState, 'succeeded');
    }));

  it('a real short lease runs out on the wall clock too', () =>
    withGrid(
      async (g) => {
        g.s.ctx.now = Date.now; // the real clock for this one
        await createApp(g.s, P, 'sim');
        const jobId = await submitJob(g.s, P, { app: 'sim' });
        const h = await g.host();
        const [a] = await h.claim();
        const deadline = Date.parse(a.leaseExpiresAt);
        // Bounded poll for the lease to pass (about a second), then one sweep.
        for (let i = 0; Date.now() <= deadline; i++) {
          assert.ok(i < 100, 'the lease should have passed by now');
          await new Promise((r) => setTimeout(r, Math.max(1, deadline - Date.now() + 1)));
        }
        assert.equal(await g.s.sweeper.sweep(), 1);
        assert.equal((await g.job(jobId)).job.state, 'queued');
      },
      { timing: { leaseSeconds: 1 } },
    ));
});

describe('agent protocol: blobs and checkpoints', () => {
  it('a task downloads its own inputs only', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const input = Buffer.from('input bytes');
      const inDigest = await uploadBlob(g.s, P, input);
      const notInput = await uploadBlob(g.s, P, Buffer.from('not an input'));
      await submitJob(g.s, P, { app: 'sim', inputs: { 'in.dat': inDigest } });
      const h = await g.host();
      const other = await g.host();
      const [a] = await h.claim();
      const r = await h.download(a.taskId, inDigest);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.text, input.toString());
      assertError(await h.download(a.taskId, notInput), 404, 'not_found');
      assertError(await other.download(a.taskId, inDigest), 404, 'not_found');
      assertError(await h.download(999_999, inDigest), 404, 'not_found');
      assertError(await h.download(a.taskId, 'nothex'), 400, 'invalid_request', 'params/sha256');
      assert.equal((await h.report(a.taskId, ok)).status, 200);
      assertError(await h.download(a.taskId, inDigest), 409, 'conflict');
    }));

  it('uploads are verified and land in the job\'s project; an ended task takes no more', () =>
    withGrid(async (g) => {
      const viewer = await g.s.userWithRole('vera', 'astro', 'viewer');
      await createApp(g.s, 'astro', 'sim');
      const jobId = await submitJob(g.s, 'astro', { app: 'sim' });
      const h = await g.host();
      const other = await g.host();
      const [a] = await h.claim();
      const data = randomBytes(1000);
      const digest = sha256(data);
      assertError(await h.upload(a.taskId, Buffer.from('something else'), digest), 422, 'digest_mismatch');
      assertError(await other.upload(a.taskId, data), 404, 'not_found');
      const up = await h.upload(a.taskId, data);
      assert.equal(up.status, 201, up.text);
      assert.equal((await h.upload(a.taskId, data)).status, 200, 'the same upload again is a no-op');
      const got = await fetch(`${g.s.url}/v1/projects/astro/blobs/${digest}`, { headers: { authorization: `Bearer ${viewer}` } });
      assert.equal(got.status, 200);
      assert.deepEqual(Buffer.from(await got.arrayBuffer()), data);
      assert.equal((await g.s.call('HEAD', `/v1/projects/${P}/blobs/${digest}`)).status, 404, 'only the job\'s project holds it');
      assert.equal((await h.report(a.taskId, { ...ok, outputs: { 'r.bin': { sha256: digest, size: 1000 } } })).status, 200);
      assertError(await h.upload(a.taskId, randomBytes(10)), 409, 'conflict');
      assert.deepEqual((await g.job(jobId, 'astro')).tasks[0].outputs, { 'r.bin': { sha256: digest, size: 1000 } });
    }));

  it('asking where to upload: what the project holds is present, the rest goes to the upload route (no URLs from a directory store)', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const held = await uploadBlob(g.s, P, Buffer.from('held'));
      const inDigest = await uploadBlob(g.s, P, Buffer.from('input'));
      await submitJob(g.s, P, { app: 'sim', inputs: { 'in.dat': inDigest } });
      const h = await g.host();
      const other = await g.host();
      const [a] = await h.claim();
      assert.deepEqual(a.inputs, [{ name: 'in.dat', sha256: inDigest, size: 5 }], 'no URL');
      const fresh = sha256('fresh');
      const files = [{ sha256: held, size: 4 }, { sha256: fresh, size: 5 }];
      const uploads = (host: typeof h, taskId: number, body: unknown) => host.call('POST', `/tasks/${taskId}/uploads`, body);
      const r = await uploads(h, a.taskId, { files });
      assert.equal(r.status, 200, r.text);
      assert.deepEqual(r.body.files, [{ sha256: held, present: true }, { sha256: fresh, present: false }]);
      assert.deepEqual((await uploads(h, a.taskId, { files })).body, r.body, 'safe to repeat');

      assertError(await uploads(h, a.taskId, { files: [{ sha256: 'nothex', size: 1 }] }), 400, 'invalid_request', 'body/files/0/sha256');
      assertError(await uploads(h, a.taskId, { files: [{ sha256: fresh, size: -1 }] }), 400, 'invalid_request', 'body/files/0/size');
      assertError(await uploads(h, a.taskId, { files: [{ sha256: fresh }] }), 400, 'invalid_request', 'body/files/0/size');
      assertError(await uploads(h, a.taskId, { files: Array.from({ length: 1001 }, () => ({ sha256: fresh, size: 1 })) }), 400, 'invalid_request', 'body/files');
      assertError(await uploads(h, a.taskId, { files, more: 1 }), 400, 'invalid_request', 'body/more');
      assertError(await uploads(h, a.taskId, { files: [{ sha256: fresh, size: 5 * 1024 ** 4 }] }), 413, 'payload_too_large', 'body/files/0/size');
      assertError(await uploads(other, a.taskId, { files }), 404, 'not_found');
      assertError(await uploads(h, 999_999, { files }), 404, 'not_found');
      assert.equal((await h.report(a.taskId, ok)).status, 200);
      assertError(await uploads(h, a.taskId, { files }), 409, 'conflict');
    }));

  it('a checkpoint comes with its bytes; the next task of the job resumes from it', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'long', { checkpointing: true });
      const jobId = await submitJob(g.s, P, { app: 'long' });
      const h = await g.host();
      const [a] = await h.claim();
      const tar = randomBytes(2048);
      const digest = sha256(tar);
      assertError(await h.checkpoint(a.taskId, randomBytes(10), digest), 422, 'digest_mismatch');
      assertError(await h.checkpoint(a.taskId, tar, 'nothex'), 400, 'invalid_request', 'params/sha256');
      const other = await g.host();
      assertError(await other.checkpoint(a.taskId, tar), 404, 'not_found');
      const r = await h.checkpoint(a.taskId, tar);
      assert.equal(r.status, 201, r.text);
      assert.equal(r.body.sha256, digest);
      assert.equal((await h.checkpoint(a.taskId, tar)).status, 200, 'recording it again is harmless');
      assert.equal((await h.report(a.taskId, { outcome: { kind: 'aborted' }, durationMs: 100 })).body.jobState, 'queued');
      assertError(await h.checkpoint(a.taskId, tar), 409, 'conflict');
      const [b] = await other.claim();
      assert.equal(b.jobId, jobId);
      assert.equal(b.checkpoint, digest);
      const raw = await fetch(`${g.s.url}/agent/v1/tasks/${b.taskId}/blobs/${digest}`, { headers: { authorization: `Bearer ${other.token}` } });
      assert.equal(raw.status, 200);
      assert.deepEqual(Buffer.from(await raw.arrayBuffer()), tar);
    }));
});

describe('agent protocol: a host gets no more than it enrolled with', () => {
  it('free capacity beyond the enrolled resources is ignored', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'one-core', { resources: { cores: 1, memoryMiB: 512 } });
      for (let i = 0; i < 5; i++) await submitJob(g.s, P, { app: 'one-core' });
      const small = await g.host({ resources: { cores: 2, memoryMiB: 4096, diskMiB: 100_000, gpus: 0 } });
      const tasks = await small.claim({ free: { cores: 4096, memoryMiB: 1_000_000 }, maxTasks: 100 });
      assert.equal(tasks.length, 2, 'two 1-core tasks on a 2-core host, whatever it claims');
    }));
});

describe('agent protocol: a host reads only what its tasks were given', () => {
  it('knowing the digest of a project blob does not let a host make it its checkpoint and read it', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'long', { checkpointing: true });
      const secret = randomBytes(512);
      const digest = sha256(secret);
      const put = await g.s.call('PUT', `/v1/projects/${P}/blobs/${digest}`, { raw: secret as unknown as BodyInit, headers: { ...OCTET } });
      assert.equal(put.status, 201, put.text);
      await submitJob(g.s, P, { app: 'long' });
      const h = await g.host();
      const [a] = await h.claim();
      assertError(await h.download(a.taskId, digest), 404, 'not_found');
      assertError(await h.checkpoint(a.taskId, Buffer.from('guess'), digest), 422, 'digest_mismatch');
      assertError(await h.download(a.taskId, digest), 404, 'not_found');
    }));
});

describe('agent protocol: authentication, events, bad input', () => {
  it('user tokens get 401 on every agent route; host credentials get 401 on the user API', () =>
    withGrid(async (g) => {
      const h = await g.host();
      const digest = sha256('x');
      const agentRoutes: Array<[string, string, unknown?]> = [
        ['GET', '/self'], ['POST', '/work', { requestId: randomUUID(), free: BIG, maxTasks: 1, runtimes: ['docker'] }],
        ['POST', '/heartbeat', { tasks: [] }], ['POST', '/tasks/1/result', ok], ['POST', '/tasks/1/uploads', { files: [] }],
        ['GET', `/tasks/1/blobs/${digest}`],
      ];
      const user = await g.s.userWithRole('ulla', P, 'admin');
      for (const token of [g.s.adminToken, user, null, 'bgh_0000000000000000_nonsense']) {
        for (const [method, path, body] of agentRoutes) {
          const r = await g.s.call(method, `/agent/v1${path}`, { token, ...(body === undefined ? {} : { body }) });
          assertError(r, 401, 'unauthenticated');
        }
        const put = await g.s.call('PUT', `/agent/v1/tasks/1/blobs/${digest}`, { token, raw: 'x', headers: { ...OCTET } });
        assertError(put, 401, 'unauthenticated');
      }
      assert.equal((await h.call('GET', '/self')).status, 200);
      for (const path of ['/v1/me', '/v1/projects', `/v1/projects/${P}/jobs`, '/v1/hosts']) {
        assertError(await g.s.call('GET', path, { token: h.token }), 401, 'unauthenticated');
      }
      assertError(await g.s.call('POST', `/v1/projects/${P}/jobs`, { token: h.token, body: { app: 'x' } }), 401, 'unauthenticated');
    }));

  it('a project\'s event stream shows its job running, then succeeded', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const stream = await openEvents(g.s, `/v1/projects/${P}/events?job=${jobId}`);
      try {
        const [a] = await h.claim();
        const running = await stream.until((e) => e.event === 'job' && e.data.jobId === jobId);
        assert.equal(running.data.state, 'running');
        await h.report(a.taskId, ok);
        const done = await stream.until((e) => e.event === 'job' && e.data.jobId === jobId);
        assert.equal(done.data.state, 'succeeded');
      } finally {
        stream.close();
      }
    }));

  it('a lost lease and a release show in the event stream as the job queued again', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const stream = await openEvents(g.s, `/v1/projects/${P}/events?job=${jobId}`);
      try {
        const [a] = await h.claim();
        assert.equal((await stream.next()).data.state, 'running');
        await h.report(a.taskId, { outcome: { kind: 'aborted' }, durationMs: 1 });
        const released = await stream.next();
        assert.deepEqual([released.data.state, released.data.reason], ['queued', 'released by its host']);
        await h.claim();
        assert.equal((await stream.next()).data.state, 'running');
        g.advance(TIMING.leaseSeconds * 1000 + 1);
        await g.s.sweeper.sweep();
        const lost = await stream.next();
        assert.equal(lost.data.state, 'queued');
        assert.match(lost.data.reason, /stopped reporting/);
      } finally {
        stream.close();
      }
    }));

  it('malformed work requests are refused with the field named, and nothing is claimed', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const good = { requestId: randomUUID(), free: BIG, maxTasks: 4, runtimes: ['docker'] };
      const cases: Array<[unknown, string]> = [
        [{ ...good, extra: 1 }, 'body/extra'],
        [{ ...good, free: { ...BIG, cores: -1 } }, 'body/free/cores'],
        [{ ...good, free: { ...BIG, memoryMiB: -512 } }, 'body/free/memoryMiB'],
        [{ ...good, free: { ...BIG, diskMiB: 1.5 } }, 'body/free/diskMiB'],
        [{ ...good, free: { ...BIG, gpus: -1 } }, 'body/free/gpus'],
        [{ ...good, free: { ...BIG, tpus: 1 } }, 'body/free/tpus'],
        [{ ...good, maxTasks: 257 }, 'body/maxTasks'],
        [{ ...good, maxTasks: -1 }, 'body/maxTasks'],
        [{ ...good, runtimes: ['podman'] }, 'body/runtimes/0'],
        [{ ...good, runtimes: [] }, 'body/runtimes'],
        [{ ...good, runtimes: ['docker', 'docker'] }, 'body/runtimes'],
        [{ ...good, requestId: 'short' }, 'body/requestId'],
        [{ ...good, requestId: 'has spaces in it' }, 'body/requestId'],
      ];
      for (const [body, field] of cases) {
        assertError(await h.call('POST', '/work', body), 400, 'invalid_request', field);
      }
      const { job, tasks } = await g.job(jobId);
      assert.equal(job.state, 'queued');
      assert.deepEqual(tasks, []);
      assert.deepEqual(ids(await h.claim()), [jobId], 'and the job is still there to claim');
    }));

  it('malformed heartbeats and reports are refused with the field named, and change nothing', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const jobId = await submitJob(g.s, P, { app: 'sim' });
      const h = await g.host();
      const [a] = await h.claim();
      const beats: Array<[unknown, string]> = [
        [{ tasks: [{ taskId: a.taskId, extra: 1 }] }, 'body/tasks/0/extra'],
        [{ tasks: [{ taskId: a.taskId, progress: 1.5 }] }, 'body/tasks/0/progress'],
        [{ tasks: [{ taskId: a.taskId, log: { offset: -1, text: 'x' } }] }, 'body/tasks/0/log/offset'],
        [{ tasks: [{ taskId: a.taskId, usage: { cpuSeconds: -1, peakMemoryMiB: 1 } }] }, 'body/tasks/0/usage/cpuSeconds'],
        [{ tasks: [{ taskId: 0 }] }, 'body/tasks/0/taskId'],
      ];
      for (const [body, field] of beats) assertError(await h.call('POST', '/heartbeat', body), 400, 'invalid_request', field);
      const reports: Array<[unknown, string]> = [
        [{ ...ok, extra: true }, 'body/extra'],
        [{ outcome: { kind: 'succeeded' }, durationMs: -1 }, 'body/durationMs'],
        [{ ...ok, outputs: { 'x.txt': { sha256: 'nothex', size: 1 } } }, 'body/outputs/x.txt/sha256'],
        [{ ...ok, outputs: { 'x.txt': { sha256: sha256('x'), size: -1 } } }, 'body/outputs/x.txt/size'],
      ];
      for (const [body, field] of reports) assertError(await h.report(a.taskId, body), 400, 'invalid_request', field);
      // Outcomes are a tagged union: the error names the kinds, or the field the kind needs or forbids.
      const outcomes: Array<[unknown, string, RegExp]> = [
        [{ kind: 'exploded' }, 'body/outcome/kind', /succeeded, failed, out_of_memory, timeout, aborted, image_error, output_error, agent_error/],
        [{ kind: 'failed' }, 'body/outcome/exitCode', /required/],
        [{ kind: 'failed', exitCode: 300 }, 'body/outcome/exitCode', /255/],
        [{ kind: 'out_of_memory' }, 'body/outcome/limitMiB', /required/],
        [{ kind: 'agent_error' }, 'body/outcome/message', /required/],
        [{ kind: 'succeeded', exitCode: 0 }, 'body/outcome/exitCode', /not a known field/],
        [{ exitCode: 0 }, 'body/outcome/kind', /required/],
        ['succeeded', 'body/outcome', /object/],
      ];
      for (const [outcome, field, names] of outcomes) {
        assertError(await h.report(a.taskId, { outcome, durationMs: 1 }), 400, 'invalid_request', field, { messageNames: names });
      }
      const { job, tasks } = await g.job(jobId);
      assert.equal(job.state, 'running');
      assert.equal(tasks[0].state, 'assigned');
      assert.equal(tasks[0].progress, null);
    }));
});
