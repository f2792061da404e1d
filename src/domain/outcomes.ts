import type { JobState, TaskState } from './states.js';

/** Each way a task can end, kept apart so that users and the scheduler can tell them apart. */
export type TaskOutcome =
  | { kind: 'succeeded' }
  | { kind: 'failed'; exitCode: number }
  | { kind: 'out_of_memory'; limitMiB: number }
  | { kind: 'timeout'; limitSeconds: number }
  /** Stopped on purpose: its job was cancelled, or the agent released it while shutting down. */
  | { kind: 'aborted' }
  | { kind: 'image_error'; message: string }
  /** The task ran, but left something in /out the agent refuses to upload (a symlink, a device, too big). */
  | { kind: 'output_error'; message: string }
  | { kind: 'agent_error'; message: string };

export type OutcomeKind = TaskOutcome['kind'];
export const OUTCOME_KINDS: readonly OutcomeKind[] = ['succeeded', 'failed', 'out_of_memory', 'timeout', 'aborted', 'image_error', 'output_error', 'agent_error'];

/** What a task used, as far as its runtime could measure. */
export interface TaskUsage {
  cpuSeconds: number;
  peakMemoryMiB: number;
}

export function describeOutcome(o: TaskOutcome): string {
  switch (o.kind) {
    case 'succeeded':
      return 'exited 0';
    case 'failed':
      return `exited with code ${o.exitCode}`;
    case 'out_of_memory':
      return `killed: used more than its memory limit of ${o.limitMiB} MiB`;
    case 'timeout':
      return `killed: ran longer than its limit of ${o.limitSeconds} s`;
    case 'aborted':
      return 'aborted before it finished';
    case 'image_error':
      return `image problem: ${o.message}`;
    case 'output_error':
      return `outputs refused: ${o.message}`;
    case 'agent_error':
      return `agent error: ${o.message}`;
  }
}

/** Where a reported outcome leaves the task and its job. */
export interface Settlement {
  task: TaskState;
  /** The job's next state, or null to leave it as it is. */
  job: JobState | null;
  reason: string | null;
  /** Whether this attempt counts against the app's max attempts (a release does not). */
  countsAsAttempt: boolean;
  /** The job goes back to the queue after a failure: it waits out a backoff first. */
  backoff: boolean;
}

/** What else settling a task depends on besides its outcome. */
export interface SettleContext {
  /** Other tasks of the job that are still active (speculative duplicates, replicas). */
  othersActive: number;
  /** The task had been counted lost when its report came: a late result. */
  late: boolean;
}

/**
 * The pure rule for a task's report. A success ends the job while it is open — even a late
 * one, from a task already counted lost and its job requeued; the job's other tasks are then
 * aborted. A failure requeues the job (after a backoff) until the app's attempts are spent,
 * unless another task of the job still runs, which then carries it. An aborted task of an open
 * job was released by its agent (shutting down): the job goes back to the queue without
 * spending an attempt. A job that already ended (cancelled, say) is left alone whatever its
 * task says, and a late failure changes nothing (its loss was counted already).
 */
export function settle(outcome: TaskOutcome, job: { state: JobState; attempts: number }, maxAttempts: number, ctx: SettleContext): Settlement {
  const open = job.state === 'running' || (ctx.late && job.state === 'queued');
  const alone = ctx.othersActive === 0 && !ctx.late;
  if (outcome.kind === 'succeeded') return { task: 'succeeded', job: open ? 'succeeded' : null, reason: null, countsAsAttempt: true, backoff: false };
  if (outcome.kind === 'aborted' && !ctx.late) {
    const release = open && alone;
    return { task: 'aborted', job: release ? 'queued' : null, reason: release ? 'released by its host' : null, countsAsAttempt: !release, backoff: false };
  }
  const why = describeOutcome(outcome);
  if (!open || !alone) return { task: 'failed', job: null, reason: why, countsAsAttempt: true, backoff: false };
  if (job.attempts >= maxAttempts) {
    return { task: 'failed', job: 'failed', reason: `${why} (attempt ${job.attempts} of ${maxAttempts})`, countsAsAttempt: true, backoff: false };
  }
  return { task: 'failed', job: 'queued', reason: `attempt ${job.attempts} ${why}; retrying`, countsAsAttempt: true, backoff: true };
}
