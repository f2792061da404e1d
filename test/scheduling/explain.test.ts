import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  duration, explainJob, isLive, type ExplainCode, type ExplainHost, type ExplainInput, type Explanation,
} from '../../src/scheduling/explain.js';
import { placementOf, type Placement } from '../../src/scheduling/placement.js';
import { FAIR, FIFO, NOW, SECOND, res } from './fixtures.js';

const LEASE = 60 * SECOND;
const iso = (ms: number) => new Date(ms).toISOString();

function placement(over: Partial<Placement> = {}): Placement {
  return { appId: 7, resources: res(1, 512, 100, 0), platforms: [], runtimes: ['docker'], selector: {}, images: ['sci/app:1'], maxRuntimeSeconds: 3600, ...over };
}

let nextHost = 0;
/** A live, idle 8-core 16 GiB linux/amd64 host (seen a second ago). */
function host(over: Partial<ExplainHost> = {}): ExplainHost {
  const id = ++nextHost;
  return {
    id, name: `node-${id}`, resources: res(8, 16384, 100_000, 0), platform: 'linux/amd64', labels: {}, state: 'active',
    lastSeenAt: NOW - SECOND, activeTasks: 0, ...over,
  };
}

function input(over: Partial<ExplainInput> = {}, job: Partial<ExplainInput['job']> = {}): ExplainInput {
  return {
    job: { id: 42, state: 'queued', retryAt: null, deadline: null, priority: 0, attempts: 0, reason: null, updatedAt: NOW - 30 * SECOND, ...job },
    placement: placement(), hosts: [host()], cooling: new Set(), reservedHost: null, jobsAhead: { count: 0, atLeast: false },
    options: FAIR, leaseMs: LEASE, now: NOW, ...over,
  };
}

const codes = (e: Explanation): ExplainCode[] => e.reasons.map((r) => r.code);
function reasonOf(e: Explanation, code: ExplainCode) {
  const r = e.reasons.find((x) => x.code === code);
  assert.ok(r, `no ${code} among ${codes(e).join(', ')}`);
  return r;
}

describe('explainJob: jobs that are not waiting', () => {
  it('not_queued: a running job says so, with its attempt, and nothing else', () => {
    const e = explainJob(input({}, { state: 'running', attempts: 2 }));
    assert.deepEqual(codes(e), ['not_queued']);
    assert.equal(e.summary, 'job 42: it is running (attempt 2), not waiting');
    assert.equal(e.reasons[0]!.blocking, false);
    assert.equal(e.hosts, null);
    assert.equal(e.jobsAhead, null);
  });

  it('not_queued: an ended job gives its state and reason', () => {
    const e = explainJob(input({}, { state: 'failed', reason: 'exit code 3' }));
    assert.deepEqual(codes(e), ['not_queued']);
    assert.equal(e.summary, 'job 42: it has ended: failed (exit code 3)');
    assert.equal(explainJob(input({}, { state: 'cancelled' })).summary, 'job 42: it has ended: cancelled');
  });

  it('deadline_passed: a queued job past its deadline will not run', () => {
    const deadline = NOW - 5 * SECOND;
    const e = explainJob(input({}, { deadline }));
    assert.deepEqual(codes(e), ['deadline_passed']);
    assert.equal(e.summary, `job 42 will not run: its deadline passed at ${iso(deadline)}`);
    assert.match(e.reasons[0]!.message, /fails it at its next sweep/);
    assert.equal(e.reasons[0]!.blocking, true);
    assert.ok(!codes(explainJob(input({}, { deadline: NOW + SECOND }))).includes('deadline_passed'), 'a deadline still ahead is no reason');
  });
});

describe('explainJob: backoff', () => {
  it('until when, after which attempt, and why the attempt ended', () => {
    const retryAt = NOW + 20 * SECOND;
    const e = explainJob(input({}, { retryAt, attempts: 1, reason: 'attempt 1 lost: its host stopped reporting; retrying' }));
    const r = reasonOf(e, 'backoff');
    assert.equal(r.blocking, true);
    assert.equal(r.message, `it waits out a retry backoff after attempt 1 (lost: its host stopped reporting) until ${iso(retryAt)}, 20 s from now`);
    const failed = explainJob(input({}, { retryAt, attempts: 3, reason: 'attempt 3 exited with code 2; retrying' }));
    assert.match(reasonOf(failed, 'backoff').message, /^it waits out a retry backoff after attempt 3 \(exited with code 2\) until /);
    assert.equal(e.summary, `job 42 is waiting out a retry backoff after attempt 1 until ${iso(retryAt)}, 20 s from now`);
    assert.equal(codes(e)[0], 'backoff', 'blocking reasons come first');
  });

  it('a backoff whose time has come (not yet cleared by a claim) holds nothing', () => {
    const e = explainJob(input({}, { retryAt: NOW, attempts: 1 }));
    assert.ok(!codes(e).includes('backoff'));
    assert.equal(codes(e)[0], 'ready');
  });

  it('a job no host can run says that first, the backoff second', () => {
    const e = explainJob(input({ placement: placement({ resources: res(16) }) }, { retryAt: NOW + 5 * SECOND, attempts: 2 }));
    assert.deepEqual(codes(e).slice(0, 2), ['backoff', 'no_host_fits']);
    assert.match(e.summary, /^job 42 cannot run on any live host: needs 16 cores; the largest live host has 8$/);
  });
});

describe('explainJob: hosts', () => {
  it('no_hosts: none enrolled', () => {
    const e = explainJob(input({ hosts: [] }));
    assert.equal(reasonOf(e, 'no_hosts').message, 'no live host: no host is enrolled');
    assert.equal(e.summary, 'job 42 is waiting: no live host: no host is enrolled');
    assert.deepEqual(e.hosts, { live: 0, canRun: 0, busy: 0, excluded: [] });
  });

  it('no_hosts: revoked hosts and hosts not seen within a lease are not live', () => {
    const stale = host({ lastSeenAt: NOW - LEASE - 1 });
    const never = host({ lastSeenAt: null });
    const revoked = host({ state: 'revoked' });
    const e = explainJob(input({ hosts: [stale, never, revoked] }));
    const r = reasonOf(e, 'no_hosts');
    assert.equal(r.message, 'no live host: none of the 2 enrolled hosts has been seen in the last 1 min (a lease); 1 more revoked');
    assert.deepEqual(r.details, [], 'the job would fit them when they are back');
    assert.equal(e.hosts!.live, 0);
  });

  it('no_hosts: says when even the enrolled hosts could not run it', () => {
    const e = explainJob(input({ hosts: [host({ lastSeenAt: null })], placement: placement({ resources: res(32) }) }));
    assert.deepEqual(reasonOf(e, 'no_hosts').details, ['nor could any enrolled host run it: needs 32 cores; the largest enrolled host has 8']);
  });

  it('isLive: active and seen within a lease, the boundary included', () => {
    assert.equal(isLive({ state: 'active', lastSeenAt: NOW - LEASE }, LEASE, NOW), true);
    assert.equal(isLive({ state: 'active', lastSeenAt: NOW - LEASE - 1 }, LEASE, NOW), false);
    assert.equal(isLive({ state: 'revoked', lastSeenAt: NOW }, LEASE, NOW), false);
    assert.equal(isLive({ state: 'active', lastSeenAt: null }, LEASE, NOW), false);
  });

  it('no_host_fits: too big, naming the resource and the largest live host', () => {
    const hosts = [host(), host({ resources: res(4, 8192, 100_000, 0) }), host({ lastSeenAt: null, resources: res(64) })];
    const e = explainJob(input({ hosts, placement: placement({ resources: res(16) }) }));
    const r = reasonOf(e, 'no_host_fits');
    assert.equal(r.blocking, true);
    assert.equal(r.message, 'none of the 2 live hosts can run it: needs 16 cores; the largest live host has 8', 'the 64-core host is not live');
    assert.deepEqual(r.details, ['2 hosts have too few cores (it needs 16 cores; the largest has 8)']);
    assert.equal(e.summary, 'job 42 cannot run on any live host: needs 16 cores; the largest live host has 8');
    assert.deepEqual(e.hosts, { live: 2, canRun: 0, busy: 0, excluded: [{ blocker: 'resource:cores', hosts: 2, message: r.details[0] }] });
  });

  it('no_host_fits: memory and GPUs in their units', () => {
    const mem = explainJob(input({ placement: placement({ resources: res(1, 65536) }) }));
    assert.match(reasonOf(mem, 'no_host_fits').message, /needs 64 GiB of memory; the largest live host has 16 GiB/);
    const gpu = explainJob(input({ placement: placement({ resources: res(1, 512, 0, 1) }) }));
    assert.match(reasonOf(gpu, 'no_host_fits').message, /needs 1 GPU; the largest live host has 0/);
    assert.deepEqual(reasonOf(gpu, 'no_host_fits').details, ['1 host has too few GPUs (it needs 1 GPU; it has 0)']);
  });

  it('no_host_fits: a label no live host has; and the values the hosts do have', () => {
    const hosts = [host({ labels: { 'gpu-model': 'v100' } }), host(), host({ labels: { 'gpu-model': 'a100' }, lastSeenAt: null })];
    const e = explainJob(input({ hosts, placement: placement({ selector: { 'gpu-model': 'a100' } }) }));
    const r = reasonOf(e, 'no_host_fits');
    assert.equal(r.message, 'none of the 2 live hosts can run it: needs label gpu-model=a100; no live host has it');
    assert.deepEqual(r.details, ['2 hosts lack label gpu-model=a100 (they have gpu-model=v100)']);
    assert.equal(e.hosts!.excluded[0]!.blocker, 'selector:gpu-model');
  });

  it('no_host_fits: a selector key named like an Object member is not taken from the prototype', () => {
    const e = explainJob(input({ placement: placement({ selector: { constructor: 'x' } }) }));
    assert.deepEqual(reasonOf(e, 'no_host_fits').details, ['1 host lacks label constructor=x']);
  });

  it('no_host_fits: platform, runtime (when the host names its runtimes) and cool-down', () => {
    const arm = explainJob(input({ placement: placement({ platforms: ['linux/arm64'] }) }));
    assert.equal(reasonOf(arm, 'no_host_fits').message, 'the only live host cannot run it: needs platform linux/arm64; no live host is (linux/amd64)');
    assert.deepEqual(reasonOf(arm, 'no_host_fits').details, ['1 host is linux/amd64 (it needs linux/arm64)']);

    const nativeOnly = explainJob(input({ hosts: [host({ runtimes: ['native'] })] }));
    assert.equal(reasonOf(nativeOnly, 'no_host_fits').message, 'the only live host cannot run it: needs runtime docker; no live host offers it');
    assert.deepEqual(reasonOf(nativeOnly, 'no_host_fits').details, ['1 host offers native (it needs docker)']);
    assert.equal(codes(explainJob(input({ hosts: [host()] })))[0], 'ready', 'unknown runtimes are taken to suit');

    const h = host();
    const cooled = explainJob(input({ hosts: [h], cooling: new Set([h.id]) }));
    assert.equal(reasonOf(cooled, 'no_host_fits').message, 'the only live host cannot run it: every live host is cooling down from this app after failing it repeatedly');
    assert.deepEqual(reasonOf(cooled, 'no_host_fits').details, ['1 host is cooling down from this app after failing it 3 times in a row']);
  });

  it('no_host_fits: hosts stopped by different things are counted by what stops each', () => {
    const hosts = [host({ labels: { zone: 'a' } }), host({ labels: { zone: 'a' }, resources: res(2) }), host({ labels: { zone: 'b' } }), host()];
    const e = explainJob(input({ hosts, placement: placement({ resources: res(4), selector: { zone: 'a' } }), cooling: new Set([hosts[0]!.id]) }));
    const r = reasonOf(e, 'no_host_fits');
    // Every constraint is met by some host, so the message lists the groups instead.
    assert.deepEqual(e.hosts!.excluded.map((x) => [x.blocker, x.hosts]), [['cooldown', 1], ['resource:cores', 1], ['selector:zone', 2]]);
    assert.equal(r.message, `none of the 4 live hosts can run it: ${r.details.join('; ')}`);
    assert.deepEqual(r.details, [
      '1 host is cooling down from this app after failing it 3 times in a row',
      '1 host has too few cores (it needs 4 cores; it has 2)',
      '2 hosts lack label zone=a (they have zone=b)',
    ]);
  });

  it('hosts_busy: the hosts that could run it all hold tasks; and the jobs ahead of it', () => {
    const hosts = [host({ activeTasks: 2 }), host({ activeTasks: 1 }), host({ activeTasks: 5 }), host({ resources: res(0.5) })];
    const e = explainJob(input({ hosts, jobsAhead: { count: 12, atLeast: false } }));
    const r = reasonOf(e, 'hosts_busy');
    assert.equal(r.blocking, true);
    assert.equal(r.message, '3 live hosts could run it, all busy (8 tasks between them); 12 jobs ahead of it in its queue');
    assert.equal(e.summary, `job 42 is waiting for room: ${r.message}`);
    assert.deepEqual(r.details, [
      'the other live host cannot run it: 1 host has too few cores (it needs 1 core; it has 0.5)',
      'hosts take work from projects by fair share, then within a project by priority, then by age',
    ]);
    assert.deepEqual({ ...e.hosts, excluded: undefined }, { live: 4, canRun: 3, busy: 3, excluded: undefined });
    assert.deepEqual(e.jobsAhead, { count: 12, atLeast: false });
  });

  it('hosts_busy: a capped count says "at least"; one host says "it"', () => {
    const e = explainJob(input({ hosts: [host({ activeTasks: 1 })], jobsAhead: { count: 100_000, atLeast: true } }));
    assert.equal(reasonOf(e, 'hosts_busy').message, '1 live host could run it, and it is busy (1 task); at least 100000 jobs ahead of it in its queue');
  });

  it('hosts_busy at the head of its queue: when a host will be kept free for it (fair policy)', () => {
    const waiting = explainJob(input({ hosts: [host({ activeTasks: 1 })] }, { updatedAt: NOW - 30 * SECOND }));
    assert.match(reasonOf(waiting, 'hosts_busy').message, /; it is at the head of its queue$/);
    assert.ok(reasonOf(waiting, 'hosts_busy').details.includes('once it has waited 10 min (--starvation), a host that could run it but lacks the room is kept free for it'));
    const starved = explainJob(input({ hosts: [host({ activeTasks: 1 })] }, { updatedAt: NOW - 700 * SECOND }));
    assert.ok(reasonOf(starved, 'hosts_busy').details.includes(
      'it has waited 11 min 40 s, longer than 10 min (--starvation): the next host that could run it but lacks the room is kept free for it',
    ));
    const fifo = explainJob(input({ hosts: [host({ activeTasks: 1 })], options: FIFO }));
    assert.deepEqual(reasonOf(fifo, 'hosts_busy').details, ['hosts take queued jobs in priority order, then by age, first fit']);
  });

  it('reserved: a host is being kept free for it (named when the caller may see names)', () => {
    const h = host({ activeTasks: 2 });
    const named = explainJob(input({ hosts: [h], reservedHost: { id: h.id, name: h.name } }));
    const r = reasonOf(named, 'reserved');
    assert.equal(r.blocking, false);
    assert.equal(r.message, `host ${h.name} is being kept free for it: it takes no other work until this job fits`);
    assert.equal(named.summary, `job 42 is next: ${r.message}`);
    assert.deepEqual(codes(named), ['hosts_busy', 'reserved', 'no_quota', 'no_dependencies']);
    assert.ok(!reasonOf(named, 'hosts_busy').details.some((d) => d.includes('--starvation')), 'already reserved');

    const anonymous = explainJob(input({ hosts: [h, host({ activeTasks: 1 })], reservedHost: { id: 999, name: null } }));
    assert.equal(reasonOf(anonymous, 'reserved').message, 'a host is being kept free for it: it takes no other work until this job fits (but it has not been seen in the last 1 min)');
  });

  it('ready: a live host that could run it holds no tasks', () => {
    const e = explainJob(input({ hosts: [host(), host({ activeTasks: 3 })], jobsAhead: { count: 4, atLeast: false } }));
    const r = reasonOf(e, 'ready');
    assert.equal(r.blocking, false);
    assert.equal(r.message, '2 live hosts could run it and 1 of them holds no tasks: it should start when one next asks for work (4 jobs ahead of it in its queue go first)');
    assert.equal(e.summary, `job 42 should start soon: ${r.message}`);
  });

  it('no_quota and no_dependencies: informational, last, for every queued job', () => {
    for (const e of [explainJob(input()), explainJob(input({ hosts: [] })), explainJob(input({ placement: placement({ resources: res(99) }) }))]) {
      assert.deepEqual(codes(e).slice(-2), ['no_quota', 'no_dependencies']);
      assert.equal(reasonOf(e, 'no_quota').blocking, false);
      assert.match(reasonOf(e, 'no_quota').message, /^boxgrid has no quotas: projects share the hosts by fair-share weight/);
      assert.match(reasonOf(e, 'no_dependencies').message, /no dependencies \(there are no workflows yet\)/);
    }
    assert.match(reasonOf(explainJob(input({ options: FIFO })), 'no_quota').message, /--policy fifo/);
  });
});

describe('placementOf and duration', () => {
  it('builds the placement as the store builds a queue: overrides, runtimes, images, selector', () => {
    const app = { id: 3, resources: res(2, 1024, 2048, 0), platforms: ['linux/amd64'], nativeCommand: null, image: 'sci/a:1', imageDigest: null, maxRuntimeSeconds: 600 };
    assert.deepEqual(placementOf(app, { resources: { cores: 16 }, selector: { zone: 'a' } }), {
      appId: 3, resources: res(16, 1024, 2048, 0), platforms: ['linux/amd64'], runtimes: ['docker'], selector: { zone: 'a' }, images: ['sci/a:1'], maxRuntimeSeconds: 600,
    });
    const native = placementOf({ ...app, nativeCommand: ['/bin/run'], imageDigest: 'sha256:ab' }, { resources: {}, selector: {} });
    assert.deepEqual([native.runtimes, native.images], [['docker', 'native'], ['sci/a:1', 'sha256:ab']]);
  });

  it('duration: seconds, then two units at most', () => {
    assert.deepEqual([0, 999, 20_000, 60_000, 700_000, 3_600_000, 3_660_000, 90_061_000].map(duration), [
      '0 s', '1 s', '20 s', '1 min', '11 min 40 s', '1 h', '1 h 1 min', '1 d 1 h',
    ]);
  });
});
