import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { chooseDuplicates, freshCopyMs, remainingMs, SPECULATION_GAIN, type RunningTask } from '../../src/scheduling/speculation.js';
import { FAIR, FIFO, NOW, SECOND, offer, options, res } from './fixtures.js';

/** A 1-core task of a queue whose tasks typically take 60 s, started `ranS` seconds ago, without progress. */
function task(taskId: number, over: Partial<RunningTask> & { ranS?: number } = {}): RunningTask {
  const { ranS = 120, ...rest } = over;
  return {
    jobId: taskId,
    taskId,
    startedAt: NOW - ranS * SECOND,
    progress: null,
    estimatedMs: 60_000,
    copies: 1,
    hostPace: null,
    appId: 1,
    resources: res(1),
    platforms: [],
    runtimes: ['docker'],
    selector: {},
    images: ['img'],
    maxRuntimeSeconds: 3600,
    ...rest,
  };
}

const jobs = (picks: Array<{ jobId: number }>): number[] => picks.map((p) => p.jobId);
const spec = (over: Partial<ReturnType<typeof options>['speculation']>) => options({ speculation: { ...FAIR.speculation, ...over } });

describe('remainingMs', () => {
  it('from progress: what has run so far times what is left over what is done', () => {
    assert.equal(remainingMs(task(1, { ranS: 100, progress: 0.25 }), NOW), 300_000);
    assert.equal(remainingMs(task(1, { ranS: 100, progress: 0.5 }), NOW), 100_000);
    assert.equal(remainingMs(task(1, { ranS: 100, progress: 1 }), NOW), 0);
  });

  it('progress above 1 counts as done', () => {
    assert.equal(remainingMs(task(1, { ranS: 100, progress: 1.5 }), NOW), 0);
  });

  it('without usable progress (none, 0, or at most 1%): the typical duration less the age, but at least the age', () => {
    assert.equal(remainingMs(task(1, { ranS: 100, estimatedMs: 600_000 }), NOW), 500_000);
    assert.equal(remainingMs(task(1, { ranS: 400, estimatedMs: 600_000 }), NOW), 400_000);
    assert.equal(remainingMs(task(1, { ranS: 700, estimatedMs: 600_000 }), NOW), 700_000);
    assert.equal(remainingMs(task(1, { ranS: 100, estimatedMs: 600_000, progress: 0 }), NOW), 500_000);
    assert.equal(remainingMs(task(1, { ranS: 100, estimatedMs: 600_000, progress: 0.01 }), NOW), 500_000);
  });

  it('without progress, the typical duration is scaled by the pace of the task\'s host', () => {
    assert.equal(remainingMs(task(1, { ranS: 100, estimatedMs: 600_000, hostPace: 2 }), NOW), 1_100_000);
    assert.equal(remainingMs(task(1, { ranS: 100, estimatedMs: 600_000, hostPace: 0.5 }), NOW), 200_000);
    assert.equal(remainingMs(task(1, { ranS: 100, progress: 0.5, hostPace: 2 }), NOW), 100_000, 'progress says more than pace');
  });

  it('a queue without history is taken to run 60 s', () => {
    assert.equal(remainingMs(task(1, { ranS: 10, estimatedMs: null }), NOW), 50_000);
    assert.equal(remainingMs(task(1, { ranS: 90, estimatedMs: null }), NOW), 90_000);
  });

  it('a start in the future (clock skew) counts as just started', () => {
    assert.equal(remainingMs(task(1, { startedAt: NOW + 5000, estimatedMs: 30_000 }), NOW), 30_000);
    assert.equal(remainingMs(task(1, { startedAt: NOW + 5000, progress: 0.5 }), NOW), 0);
  });
});

describe('freshCopyMs', () => {
  it('without progress: the queue\'s typical duration at the offering host\'s pace (unknown: 1)', () => {
    assert.equal(freshCopyMs(task(1, { estimatedMs: 600_000 }), 0.5, NOW), 300_000);
    assert.equal(freshCopyMs(task(1, { estimatedMs: 600_000, hostPace: 4 }), null, NOW), 600_000);
    assert.equal(freshCopyMs(task(1, { estimatedMs: null }), 2, NOW), 120_000);
  });

  it('with progress and its host\'s pace: the task\'s own length, scaled from its host\'s pace to the offering host\'s', () => {
    // 100 s for a quarter: 400 s long on a host of pace 2, so 200 s at pace 1 and 100 s at pace 0.5.
    assert.equal(freshCopyMs(task(1, { ranS: 100, progress: 0.25, hostPace: 2, estimatedMs: 10_000 }), null, NOW), 200_000);
    assert.equal(freshCopyMs(task(1, { ranS: 100, progress: 0.25, hostPace: 2, estimatedMs: 10_000 }), 0.5, NOW), 100_000);
    assert.equal(freshCopyMs(task(1, { ranS: 100, progress: 0.25, estimatedMs: 10_000 }), 2, NOW), 20_000, 'its host\'s pace unknown: the typical duration');
  });
});

describe('chooseDuplicates', () => {
  // Three tasks worth a copy, with different remaining times (age-based: remaining = age once past 60 s).
  const three = [task(1, { ranS: 200 }), task(2, { ranS: 400 }), task(3, { ranS: 300 })];

  it('only under the fair policy with speculation enabled', () => {
    assert.deepEqual(jobs(chooseDuplicates(offer(), three, 0, FAIR, NOW)), [2, 3, 1], 'positive control');
    assert.deepEqual(chooseDuplicates(offer(), three, 0, FIFO, NOW), []);
    assert.deepEqual(chooseDuplicates(offer(), three, 0, spec({ enabled: false }), NOW), []);
  });

  it('slowest first by remaining time, progress-based and age-based alike', () => {
    const running = [
      task(1, { ranS: 100, progress: 0.25, estimatedMs: 120_000, hostPace: 4 }), // 300 s left, a copy here 100 s
      task(2, { ranS: 500, estimatedMs: 120_000 }), // no progress, 500 s old: 500 s left
      task(3, { ranS: 100, progress: 0.1, estimatedMs: 120_000, hostPace: 4 }), // 900 s left
      task(4, { ranS: 200, estimatedMs: 120_000 }), // 200 s left
    ];
    assert.deepEqual(jobs(chooseDuplicates(offer(), running, 0, FAIR, NOW)), [3, 2, 1, 4]);
    assert.deepEqual(jobs(chooseDuplicates(offer({ maxTasks: 2 }), running, 0, FAIR, NOW)), [3, 2]);
  });

  it('equal remaining times: the lower task id first, whatever the input order', () => {
    const running = [task(9, { ranS: 200 }), task(4, { ranS: 200 }), task(6, { ranS: 200 })];
    assert.deepEqual(jobs(chooseDuplicates(offer(), running, 0, FAIR, NOW)), [4, 6, 9]);
  });

  it('only a job that a copy here is expected to finish in at most SPECULATION_GAIN of the time it still needs', () => {
    // Without progress: a copy takes the typical 300 s, so the task must have SPECULATION_GAIN × more left.
    const due = 300 / SPECULATION_GAIN; // seconds left (= age, once past the typical duration) that make a copy worth it
    const aged = (ranS: number) => jobs(chooseDuplicates(offer(), [task(1, { ranS, estimatedMs: 300_000 })], 0, FAIR, NOW));
    assert.deepEqual(aged(Math.floor(due) - 1), []);
    assert.deepEqual(aged(Math.ceil(due) + 1), [1]);
    // With progress: only on a host enough faster than the task's, and only while enough is left.
    const running = [
      task(1, { ranS: 100, progress: 0.25, hostPace: 3 }), // a copy here takes 133 s of the 300 s left: yes
      task(2, { ranS: 300, progress: 0.75, hostPace: 3 }), // a copy here takes 133 s of the 100 s left: no
      task(3, { ranS: 10, progress: 0.05, hostPace: 1 }), // as fast a host: a copy takes 200 s of the 190 s left: no
      task(4, { ranS: 10, progress: 0.05, estimatedMs: 60_000 }), // its host not measured: a copy takes the typical 60 s of 190 s left: yes
    ];
    assert.deepEqual(jobs(chooseDuplicates(offer(), running, 0, spec({ minRunSeconds: 0 }), NOW)), [1, 4]);
  });

  it('a slow host does not copy what a fast one would: the copy is judged at the offering host\'s pace', () => {
    const running = [task(1, { ranS: 200, estimatedMs: 100_000 })]; // 200 s left
    assert.deepEqual(jobs(chooseDuplicates(offer({ pace: 0.5 }), running, 0, FAIR, NOW)), [1], 'a copy here: 50 s');
    assert.deepEqual(chooseDuplicates(offer({ pace: 3 }), running, 0, FAIR, NOW), [], 'a copy here: 300 s');
    const progressing = [task(1, { ranS: 100, progress: 0.2, hostPace: 2 })]; // 400 s left of 500 s on a pace-2 host
    assert.deepEqual(jobs(chooseDuplicates(offer({ pace: 1 }), progressing, 0, FAIR, NOW)), [1], 'a copy here: 250 s');
    assert.deepEqual(chooseDuplicates(offer({ pace: 2 }), progressing, 0, FAIR, NOW), [], 'a copy here: 500 s');
  });

  it('without history, a task is duplicated once it has run well past the 60 s default', () => {
    const o = spec({ minRunSeconds: 0 });
    const due = 60 / SPECULATION_GAIN;
    assert.deepEqual(chooseDuplicates(offer(), [task(1, { estimatedMs: null, ranS: Math.floor(due) - 1 })], 0, o, NOW), []);
    assert.deepEqual(jobs(chooseDuplicates(offer(), [task(1, { estimatedMs: null, ranS: Math.ceil(due) + 1 })], 0, o, NOW)), [1]);
  });

  it('a job is judged by its copy that will finish first, and not copied again before its newest copy has run minRunSeconds', () => {
    const o = spec({ maxCopies: 2, minRunSeconds: 60 });
    // Job 7: a slow first task and a copy well on its way; a further copy would not beat the copy.
    const judged = [task(1, { jobId: 7, copies: 2, ranS: 1000, progress: 0.1, hostPace: 5 }), task(2, { jobId: 7, copies: 2, ranS: 100, progress: 0.8, hostPace: 1 })];
    assert.deepEqual(chooseDuplicates(offer({ pace: 1 }), judged, 0, o, NOW), []);
    assert.deepEqual(jobs(chooseDuplicates(offer({ pace: 1 }), [judged[0]!], 0, o, NOW)), [7], 'positive control: the slow task alone');
    const fresh = [task(1, { jobId: 8, copies: 2, ranS: 1000, estimatedMs: 10_000 }), task(2, { jobId: 8, copies: 2, ranS: 30, estimatedMs: 10_000 })];
    assert.deepEqual(chooseDuplicates(offer(), fresh, 0, o, NOW), []);
    assert.deepEqual(jobs(chooseDuplicates(offer(), fresh, 0, spec({ maxCopies: 2, minRunSeconds: 30 }), NOW)), [8]);
  });

  it('only tasks that have run minRunSeconds (at least)', () => {
    const o = spec({ minRunSeconds: 60 });
    // Queue typically 1 s: the age alone would make these worth a copy.
    assert.deepEqual(chooseDuplicates(offer(), [task(1, { ranS: 59, estimatedMs: 1000 })], 0, o, NOW), []);
    assert.deepEqual(jobs(chooseDuplicates(offer(), [task(1, { ranS: 60, estimatedMs: 1000 })], 0, o, NOW)), [1]);
  });

  it('bounded by maxCopies: a job already running 1 + maxCopies tasks gets no more', () => {
    const two = task(1, { copies: 2 });
    assert.deepEqual(chooseDuplicates(offer(), [two], 0, spec({ maxCopies: 1 }), NOW), []);
    assert.deepEqual(jobs(chooseDuplicates(offer(), [two], 0, spec({ maxCopies: 2 }), NOW)), [1]);
    assert.deepEqual(chooseDuplicates(offer(), [task(1, { copies: 3 })], 0, spec({ maxCopies: 2 }), NOW), []);
    assert.deepEqual(chooseDuplicates(offer(), [task(1)], 0, spec({ maxCopies: 0 }), NOW), []);
  });

  it('bounded by maxActive over the grid, counting the duplicates already running', () => {
    const o = spec({ maxActive: 10 });
    assert.deepEqual(jobs(chooseDuplicates(offer(), three, 8, o, NOW)), [2, 3]);
    assert.deepEqual(jobs(chooseDuplicates(offer(), three, 9, o, NOW)), [2]);
    assert.deepEqual(chooseDuplicates(offer(), three, 10, o, NOW), []);
    assert.deepEqual(chooseDuplicates(offer(), three, 12, o, NOW), []);
    assert.deepEqual(chooseDuplicates(offer(), three, 0, spec({ maxActive: 0 }), NOW), []);
  });

  it('bounded by maxTasks', () => {
    assert.deepEqual(jobs(chooseDuplicates(offer({ maxTasks: 1 }), three, 0, FAIR, NOW)), [2]);
    assert.deepEqual(chooseDuplicates(offer({ maxTasks: 0 }), three, 0, FAIR, NOW), []);
  });

  it('never two copies of one job in one answer', () => {
    const running = [task(1, { jobId: 7, ranS: 300 }), task(2, { jobId: 7, ranS: 200 }), task(3, { jobId: 8, ranS: 100 })];
    assert.deepEqual(jobs(chooseDuplicates(offer(), running, 0, FAIR, NOW)), [7, 8]);
  });

  it('respects what is free: a copy that does not fit is passed over for a smaller one, and copies use up the room', () => {
    const host = offer({ capacity: res(8, 16384), free: res(3, 16384) });
    const running = [task(1, { ranS: 900, resources: res(4) }), task(2, { ranS: 800, resources: res(2) }), task(3, { ranS: 700, resources: res(2) }), task(4, { ranS: 600, resources: res(1) })];
    assert.deepEqual(jobs(chooseDuplicates(host, running, 0, FAIR, NOW)), [2, 4]);
    const noMemory = offer({ capacity: res(8, 16384), free: res(8, 256) });
    assert.deepEqual(chooseDuplicates(noMemory, [task(1, { resources: res(1, 512) })], 0, FAIR, NOW), []);
  });

  it('respects placement: platform, runtime, selector, cool-down and capacity', () => {
    const host = offer({ labels: { zone: 'a' }, cooledApps: new Set([5]), capacity: res(8, 16384), runtimes: ['docker'] });
    const running = [
      task(1, { platforms: ['linux/arm64'] }),
      task(2, { runtimes: ['native'] }),
      task(3, { selector: { zone: 'b' } }),
      task(4, { appId: 5 }),
      task(5, { resources: res(9) }),
      task(6, { selector: { zone: 'a' }, platforms: ['linux/amd64'] }),
    ];
    assert.deepEqual(jobs(chooseDuplicates(host, running, 0, FAIR, NOW)), [6]);
  });

  it('answers with the host\'s preferred runtime among the app\'s', () => {
    const host = offer({ runtimes: ['native', 'docker'] });
    const picks = chooseDuplicates(host, [task(1, { runtimes: ['docker', 'native'] }), task(2, { runtimes: ['docker'], ranS: 100 })], 0, FAIR, NOW);
    assert.deepEqual(picks, [{ jobId: 1, runtime: 'native' }, { jobId: 2, runtime: 'docker' }]);
  });

  it('property: within every bound, distinct jobs, each worth a copy, and fitting together', () => {
    const taskArb = fc.record({
      jobId: fc.integer({ min: 1, max: 6 }),
      ranS: fc.integer({ min: 0, max: 2000 }),
      progress: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: null }),
      estimatedMs: fc.option(fc.integer({ min: 0, max: 1_000_000 }), { nil: null }),
      copies: fc.integer({ min: 1, max: 3 }),
      hostPace: fc.option(fc.double({ min: 0.1, max: 5, noNaN: true }), { nil: null }),
      cores: fc.integer({ min: 1, max: 4 }),
      zone: fc.constantFrom('a', 'b', null),
    });
    fc.assert(
      fc.property(
        fc.array(taskArb, { maxLength: 10 }),
        fc.integer({ min: 0, max: 5 }),
        fc.integer({ min: 0, max: 8 }),
        fc.record({ maxCopies: fc.integer({ min: 0, max: 2 }), maxActive: fc.integer({ min: 0, max: 6 }), minRunSeconds: fc.integer({ min: 0, max: 600 }) }),
        fc.integer({ min: 0, max: 8 }),
        fc.option(fc.double({ min: 0.1, max: 5, noNaN: true }), { nil: null }),
        (seeds, maxTasks, freeCores, s, active, pace) => {
          const running = seeds.map((x, i) =>
            task(i + 1, { jobId: x.jobId, ranS: x.ranS, progress: x.progress, estimatedMs: x.estimatedMs, copies: x.copies, hostPace: x.hostPace, resources: res(x.cores), selector: x.zone ? { zone: x.zone } : {} }),
          );
          const host = offer({ capacity: res(8, 16384), free: res(freeCores, 16384), maxTasks, labels: { zone: 'a' }, pace });
          const o = spec({ ...s, enabled: true });
          const picks = chooseDuplicates(host, running, active, o, NOW);
          assert.ok(picks.length <= Math.max(0, Math.min(maxTasks, s.maxActive - active)));
          assert.equal(new Set(jobs(picks)).size, picks.length);
          let cores = 0;
          for (const p of picks) {
            const cands = running.filter((t) => t.jobId === p.jobId);
            // The job's copy that finishes first decides, by the definitions the unit tests pin down.
            const best = cands.reduce((a, b) => (remainingMs(b, NOW) < remainingMs(a, NOW) ? b : a));
            const newest = Math.max(...cands.map((t) => t.startedAt));
            const ok = best.copies <= s.maxCopies && NOW - newest >= s.minRunSeconds * 1000
              && freshCopyMs(best, pace, NOW) <= SPECULATION_GAIN * remainingMs(best, NOW) && (best.selector.zone ?? 'a') === 'a';
            assert.ok(ok, `job ${p.jobId} was not worth a copy`);
            cores += Math.min(...cands.map((t) => t.resources.cores));
          }
          assert.ok(cores <= freeCores, `copies use ${cores} cores of ${freeCores} free`);
        },
      ),
      { numRuns: 400 },
    );
  });
});
