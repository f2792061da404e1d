import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { OUTCOME_KINDS, describeOutcome, settle, type Settlement, type TaskOutcome } from '../../src/domain/outcomes.js';
import { JOB_STATES, jobMachine, taskMachine, type JobState } from '../../src/domain/states.js';

const MAX = 3;
const ok: TaskOutcome = { kind: 'succeeded' };
const exit2: TaskOutcome = { kind: 'failed', exitCode: 2 };
const abort: TaskOutcome = { kind: 'aborted' };

function s(outcome: TaskOutcome, state: JobState, attempts: number, othersActive: number, late: boolean): Settlement {
  return settle(outcome, { state, attempts }, MAX, { othersActive, late });
}

const FAILURES: TaskOutcome[] = [
  exit2,
  { kind: 'out_of_memory', limitMiB: 512 },
  { kind: 'timeout', limitSeconds: 30 },
  { kind: 'image_error', message: 'manifest unknown' },
  { kind: 'output_error', message: '/out/x is a symlink' },
  { kind: 'agent_error', message: 'disk full' },
];

describe('describeOutcome', () => {
  it('says how the task ended', () => {
    assert.equal(describeOutcome(ok), 'exited 0');
    assert.equal(describeOutcome(exit2), 'exited with code 2');
    assert.equal(describeOutcome({ kind: 'out_of_memory', limitMiB: 512 }), 'killed: used more than its memory limit of 512 MiB');
    assert.equal(describeOutcome({ kind: 'timeout', limitSeconds: 30 }), 'killed: ran longer than its limit of 30 s');
    assert.equal(describeOutcome(abort), 'aborted before it finished');
    assert.equal(describeOutcome({ kind: 'image_error', message: 'manifest unknown' }), 'image problem: manifest unknown');
    assert.equal(describeOutcome({ kind: 'output_error', message: 'too big' }), 'outputs refused: too big');
    assert.equal(describeOutcome({ kind: 'agent_error', message: 'disk full' }), 'agent error: disk full');
  });
});

describe('settle: success', () => {
  const succeeded = { task: 'succeeded', job: 'succeeded', reason: null, countsAsAttempt: true, backoff: false };
  const taskOnly = { ...succeeded, job: null };

  it('ends a running job', () => {
    assert.deepEqual(s(ok, 'running', 1, 0, false), succeeded);
  });
  it('ends a running job even while other tasks of it still run (they are aborted afterwards)', () => {
    assert.deepEqual(s(ok, 'running', 1, 2, false), succeeded);
  });
  it('ends the job even late: from a task counted lost whose job was requeued', () => {
    assert.deepEqual(s(ok, 'queued', 1, 0, true), succeeded);
  });
  it('ends the job even late: when the requeued job already runs again elsewhere', () => {
    assert.deepEqual(s(ok, 'running', 2, 1, true), succeeded);
  });
  it('leaves an ended job alone (a duplicate finishing second, a cancelled job)', () => {
    for (const state of ['succeeded', 'failed', 'cancelled'] as JobState[]) {
      assert.deepEqual(s(ok, state, 1, 0, false), taskOnly, state);
    }
  });
  it('a success that is not late does not end a job that is queued (no task of a queued job is active)', () => {
    assert.deepEqual(s(ok, 'queued', 1, 0, false), taskOnly);
  });
  it('ends the job even after its last attempt', () => {
    assert.deepEqual(s(ok, 'running', 5, 0, false), succeeded);
  });
});

describe('settle: failure', () => {
  it('requeues a running job alone, with a backoff, while attempts remain', () => {
    assert.deepEqual(s(exit2, 'running', 1, 0, false), {
      task: 'failed', job: 'queued', reason: 'attempt 1 exited with code 2; retrying', countsAsAttempt: true, backoff: true,
    });
    assert.deepEqual(s(exit2, 'running', 2, 0, false).job, 'queued');
  });

  it('fails the job once its attempts are spent, saying why and how many', () => {
    assert.deepEqual(s(exit2, 'running', 3, 0, false), {
      task: 'failed', job: 'failed', reason: 'exited with code 2 (attempt 3 of 3)', countsAsAttempt: true, backoff: false,
    });
    assert.equal(s(exit2, 'running', 4, 0, false).job, 'failed', 'more attempts than allowed (the limit was lowered)');
  });

  for (const outcome of FAILURES) {
    it(`${outcome.kind}: retried with its description while attempts remain, the job failed after`, () => {
      const retry = s(outcome, 'running', 1, 0, false);
      assert.equal(retry.task, 'failed');
      assert.equal(retry.job, 'queued');
      assert.equal(retry.backoff, true);
      assert.equal(retry.reason, `attempt 1 ${describeOutcome(outcome)}; retrying`);
      const last = s(outcome, 'running', MAX, 0, false);
      assert.equal(last.job, 'failed');
      assert.equal(last.backoff, false);
      assert.equal(last.reason, `${describeOutcome(outcome)} (attempt ${MAX} of ${MAX})`);
    });
  }

  it('out of memory reads as such', () => {
    assert.equal(s({ kind: 'out_of_memory', limitMiB: 512 }, 'running', 3, 0, false).reason, 'killed: used more than its memory limit of 512 MiB (attempt 3 of 3)');
  });

  it('leaves the job running while another of its tasks is active — even on the last attempt', () => {
    for (const attempts of [1, 3]) {
      assert.deepEqual(s(exit2, 'running', attempts, 1, false), {
        task: 'failed', job: null, reason: 'exited with code 2', countsAsAttempt: true, backoff: false,
      });
    }
  });

  it('a late failure changes nothing (its loss was counted already)', () => {
    for (const state of ['queued', 'running'] as JobState[]) {
      for (const attempts of [1, 3]) {
        const r = s(exit2, state, attempts, 0, true);
        assert.equal(r.task, 'failed');
        assert.equal(r.job, null, `${state}, attempt ${attempts}`);
        assert.equal(r.backoff, false);
      }
    }
  });

  it('leaves an ended job alone', () => {
    for (const state of ['succeeded', 'failed', 'cancelled'] as JobState[]) {
      const r = s(exit2, state, 1, 0, false);
      assert.equal(r.task, 'failed');
      assert.equal(r.job, null, state);
      assert.equal(r.backoff, false);
    }
  });
});

describe('settle: abort', () => {
  it('a task released by its agent requeues its job, alone, without spending an attempt or a backoff', () => {
    assert.deepEqual(s(abort, 'running', 1, 0, false), {
      task: 'aborted', job: 'queued', reason: 'released by its host', countsAsAttempt: false, backoff: false,
    });
  });

  it('a release requeues the job even on its last attempt (it spent none)', () => {
    assert.equal(s(abort, 'running', MAX, 0, false).job, 'queued');
  });

  it('a release while another task of the job runs leaves the job to that task', () => {
    const r = s(abort, 'running', 1, 1, false);
    assert.equal(r.task, 'aborted');
    assert.equal(r.job, null);
    assert.equal(r.backoff, false);
  });

  it('an abort of a cancelled job changes nothing', () => {
    assert.deepEqual(s(abort, 'cancelled', 1, 0, false), { task: 'aborted', job: null, reason: null, countsAsAttempt: true, backoff: false });
  });

  it('a late abort (the task was counted lost) ends the task failed and changes nothing else', () => {
    for (const state of ['queued', 'running'] as JobState[]) {
      const r = s(abort, state, 1, 0, true);
      assert.equal(r.task, 'failed', 'lost → aborted is not a transition; lost → failed is');
      assert.equal(r.job, null);
      assert.equal(r.backoff, false);
      assert.equal(r.reason, 'aborted before it finished');
    }
  });
});

describe('settle: properties over every outcome, job state, attempts, othersActive and lateness', () => {
  const outcomeArb = fc.constantFrom<TaskOutcome>(ok, abort, ...FAILURES);
  const arb = fc.record({
    outcome: outcomeArb,
    state: fc.constantFrom(...JOB_STATES),
    attempts: fc.integer({ min: 1, max: 5 }),
    othersActive: fc.integer({ min: 0, max: 3 }),
    late: fc.boolean(),
  });

  it('covers every outcome kind', () => {
    assert.deepEqual([...new Set([ok, abort, ...FAILURES].map((o) => o.kind))].sort(), [...OUTCOME_KINDS].sort());
  });

  it('asks only for legal task and job transitions', () => {
    fc.assert(
      fc.property(arb, ({ outcome, state, attempts, othersActive, late }) => {
        const r = s(outcome, state, attempts, othersActive, late);
        const from = late ? 'lost' : 'running';
        assert.ok(taskMachine.can(from, r.task), `task ${from} → ${r.task}`);
        if (!late) assert.ok(taskMachine.can('assigned', r.task));
        if (r.job !== null) assert.ok(jobMachine.can(state, r.job), `job ${state} → ${r.job}`);
      }),
      { numRuns: 500 },
    );
  });

  it('an ended job is never moved; a late report moves its job only to success', () => {
    fc.assert(
      fc.property(arb, ({ outcome, state, attempts, othersActive, late }) => {
        const r = s(outcome, state, attempts, othersActive, late);
        if (jobMachine.isTerminal(state)) assert.equal(r.job, null);
        if (late && r.job !== null) assert.equal(r.job, 'succeeded');
        if (outcome.kind !== 'succeeded' && othersActive > 0) assert.equal(r.job, null, 'another active task carries the job');
      }),
      { numRuns: 500 },
    );
  });

  it('backoff only on a retry after a failure; an attempt given back only on a release; failure only when attempts are spent', () => {
    fc.assert(
      fc.property(arb, ({ outcome, state, attempts, othersActive, late }) => {
        const r = s(outcome, state, attempts, othersActive, late);
        assert.equal(r.backoff, r.job === 'queued' && r.task === 'failed');
        assert.equal(r.countsAsAttempt, !(r.job === 'queued' && r.task === 'aborted'));
        if (r.job === 'queued') assert.ok(outcome.kind === 'aborted' || attempts < MAX);
        if (r.job === 'failed') assert.ok(attempts >= MAX && outcome.kind !== 'succeeded' && outcome.kind !== 'aborted');
        if (r.job === 'succeeded') assert.equal(outcome.kind, 'succeeded');
        if (outcome.kind === 'succeeded') assert.equal(r.reason, null);
        if (r.job !== null && r.job !== 'succeeded') assert.ok(r.reason && r.reason.length > 0);
      }),
      { numRuns: 500 },
    );
  });

  it('a running job with one task is never left running by its report', () => {
    fc.assert(
      fc.property(outcomeArb, fc.integer({ min: 1, max: 5 }), (outcome, attempts) => {
        assert.notEqual(s(outcome, 'running', attempts, 0, false).job, null);
      }),
    );
  });
});
