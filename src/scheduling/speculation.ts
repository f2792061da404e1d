import type { RuntimeKind } from '../domain/model.js';
import { fits } from '../domain/resources.js';
import type { SchedulingOptions } from './options.js';
import { UNKNOWN_DURATION_MS } from './fair-share.js';
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
}

/** How long the task will still take, judged from its progress or, without one, from its age. */
export function remainingMs(t: RunningTask, now: number): number {
  const elapsed = Math.max(now - t.startedAt, 0);
  if (t.progress !== null && t.progress > 0.01) return (elapsed * (1 - Math.min(t.progress, 1))) / t.progress;
  const typical = t.estimatedMs ?? UNKNOWN_DURATION_MS;
  return Math.max(typical - elapsed, elapsed); // no progress yet: at least as long again as it has run
}

/**
 * The long tail: when a host would otherwise idle, duplicate the running tasks that will finish
 * last, on condition that a fresh copy is expected to finish sooner (it takes about the queue's
 * typical duration; a task with no history is duplicated only once it has run longer than
 * that default). The first valid result wins and the server aborts the others. Bounded: at
 * most `maxCopies` duplicates per job and `maxActive` over the grid, and never on a host that
 * already runs the job.
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
  const worth = running
    .filter((t) => t.copies < 1 + o.speculation.maxCopies && now - t.startedAt >= minRunMs && mismatch(offer, t) === null)
    .map((t) => ({ t, left: remainingMs(t, now) }))
    .filter(({ t, left }) => left > (t.estimatedMs ?? UNKNOWN_DURATION_MS))
    .sort((a, b) => b.left - a.left || a.t.taskId - b.t.taskId);
  const picks: Array<{ jobId: number; runtime: RuntimeKind }> = [];
  const chosen = new Set<number>();
  let free = offer.free;
  for (const { t } of worth) {
    if (budget <= 0) break;
    if (chosen.has(t.jobId) || !fits(t.resources, free)) continue;
    picks.push({ jobId: t.jobId, runtime: runtimeFor(offer, t)! });
    chosen.add(t.jobId);
    free = takeFrom(free, t.resources);
    budget--;
  }
  return picks;
}
