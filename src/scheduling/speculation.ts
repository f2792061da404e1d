import type { RuntimeKind } from '../domain/model.js';
import { fits } from '../domain/resources.js';
import type { SchedulingOptions } from './options.js';
import { UNKNOWN_DURATION_MS } from './fair-share.js';
import { expectedMs } from './pace.js';
import { mismatch, runtimeFor, takeFrom, type Offer, type Placement } from './placement.js';

/** A running task that might be worth a duplicate on another host. */
export interface RunningTask extends Placement {
  jobId: number;
  taskId: number;
  /** When the task was handed out: its time includes staging and image pulls, which a slow host is slow at too. */
  startedAt: number;
  /** 0..1 as the task last reported it, or null. */
  progress: number | null;
  /** Typical duration of its queue's tasks, or null. */
  estimatedMs: number | null;
  /** Active tasks of its job (this one included). */
  copies: number;
  /** Pace of the host that runs it (pace.ts), or null. */
  hostPace: number | null;
}

/**
 * How long the task will still take, judged from its progress or, without one, from what tasks
 * of its queue take on its host and from its age.
 */
export function remainingMs(t: RunningTask, now: number): number {
  const elapsed = Math.max(now - t.startedAt, 0);
  if (t.progress !== null && t.progress > 0.01) return (elapsed * (1 - Math.min(t.progress, 1))) / t.progress;
  const expected = expectedMs(t.estimatedMs ?? UNKNOWN_DURATION_MS, t.hostPace);
  return Math.max(expected - elapsed, elapsed); // no progress yet: at least as long again as it has run
}

/**
 * How long a fresh copy of the task would take on a host of pace `pace`. When the task reports
 * progress and its host's pace is known, the task's own length (what it has run over the
 * fraction done) scaled from that pace to this one: tasks of one queue differ in length, and the
 * ones still running at the end of a batch are the long ones. Otherwise the queue's typical
 * duration at this pace (a task far slower than typical on a host not yet measured is taken
 * to be on a slow host).
 */
export function freshCopyMs(t: RunningTask, pace: number | null, now: number): number {
  if (t.progress === null || t.progress <= 0.01 || t.hostPace === null) return expectedMs(t.estimatedMs ?? UNKNOWN_DURATION_MS, pace);
  const length = Math.max(now - t.startedAt, 0) / Math.min(t.progress, 1);
  return (length * (pace ?? 1)) / t.hostPace;
}

/**
 * A copy is made only if it is expected to finish in at most this fraction of the time the job's
 * running copies still need: a copy that would merely tie holds a host for nothing. Copies are
 * made only from idle capacity at the end of the work, so the bar is low (the simulator's
 * long-tail and churn scenarios did better at 0.9 than at 0.67 or 0.5).
 */
export const SPECULATION_GAIN = 0.9;

/**
 * The long tail: when a host would otherwise idle, duplicate the running jobs that will finish
 * last, on condition that a fresh copy on this host is expected to finish sooner than
 * the job's running copies (SPECULATION_GAIN, freshCopyMs): the copy's time is judged at this
 * host's pace, so a slow host does not copy a task that a fast one is about to finish; a task
 * with no history is duplicated only once it has run well past the default duration.
 * The first valid result wins and the server aborts the others. Bounded: at most `maxCopies`
 * duplicates per job and `maxActive` over the grid, none before the job's newest copy has run
 * `minRunSeconds`, and never on a host that already runs the job.
 */
export function chooseDuplicates(
  offer: Offer,
  running: readonly RunningTask[],
  activeDuplicates: number,
  o: SchedulingOptions,
  now: number,
): Array<{ jobId: number; runtime: RuntimeKind }> {
  if (o.policy !== 'fair' || !o.speculation.enabled) return [];
  let budget = Math.min(offer.maxTasks, o.speculation.maxActive - activeDuplicates);
  if (budget <= 0) return [];
  const minRunMs = o.speculation.minRunSeconds * 1000;
  // A job is as late as its copy that will finish first, and as settled as its newest copy.
  const jobs = new Map<number, { t: RunningTask; left: number; newest: number }>();
  for (const t of running) {
    const left = remainingMs(t, now);
    const j = jobs.get(t.jobId);
    if (!j) jobs.set(t.jobId, { t, left, newest: t.startedAt });
    else jobs.set(t.jobId, { ...(left < j.left ? { t, left } : j), newest: Math.max(j.newest, t.startedAt) });
  }
  const worth = [...jobs.values()]
    .filter(({ t, newest }) => t.copies < 1 + o.speculation.maxCopies && now - newest >= minRunMs && mismatch(offer, t) === null)
    .filter(({ t, left }) => freshCopyMs(t, offer.pace, now) <= SPECULATION_GAIN * left)
    .sort((a, b) => b.left - a.left || a.t.taskId - b.t.taskId);
  const picks: Array<{ jobId: number; runtime: RuntimeKind }> = [];
  let free = offer.free;
  for (const { t } of worth) {
    if (budget <= 0) break;
    if (!fits(t.resources, free)) continue;
    picks.push({ jobId: t.jobId, runtime: runtimeFor(offer, t)! });
    free = takeFrom(free, t.resources);
    budget--;
  }
  return picks;
}
