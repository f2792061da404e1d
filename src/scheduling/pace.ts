/**
 * A host's pace: how long tasks take on it against their queue's typical duration (1: typical,
 * 2: twice as long). Learned from the tasks it finishes, because a grid's hosts differ by
 * several times in speed and nothing they declare says so (BOINC keeps the same per host).
 * Speculation uses it to put a duplicate where it will finish first, not merely somewhere.
 */

/** One task's ratio counts at most this far either way: a task of unusual length is no guide. */
const MIN_RATIO = 0.05;
const MAX_RATIO = 20;

/** An exponentially weighted mean of duration ÷ the queue's typical duration before it ended. */
export function learnPace(previous: number | null, durationMs: number, typicalMs: number | null): number | null {
  if (typicalMs === null || typicalMs <= 0) return previous; // nothing to compare with yet
  const ratio = Math.min(MAX_RATIO, Math.max(MIN_RATIO, durationMs / typicalMs));
  return previous === null ? ratio : 0.7 * previous + 0.3 * ratio;
}

/** How long a task of a queue should take on a host of this pace (unknown pace: typical). */
export function expectedMs(typicalMs: number, pace: number | null): number {
  return typicalMs * (pace ?? 1);
}
