import type { Resources } from '../domain/resources.js';
import { dominantShare } from './packing.js';

/**
 * Fair share across projects is weighted fair queueing (stride scheduling): every project has a
 * virtual "pass"; handing out a task advances its project's pass by the task's cost divided by
 * the project's weight, and the next task goes to the project with work whose pass is lowest.
 * Two backlogged projects of weights 2 and 1 thus get tasks of equal cost in a 2:1 ratio,
 * however long the tasks run and however fast hosts ask.
 *
 * A task's cost is the resource-time it holds: its dominant share of the host it lands on, in
 * cores, times its duration — so a project of long or large tasks does not get as many of them
 * as a project of short small ones. The duration is not known when the task is handed out: it
 * is charged the typical duration of its queue then, and the difference when it ends.
 */
export interface ProjectShare {
  projectId: number;
  weight: number;
  pass: number;
}

/** The duration charged for tasks of a queue that has no finished task to learn from yet. */
export const UNKNOWN_DURATION_MS = 60_000;
/** The least a task is charged, so that instant tasks still count. */
const MIN_CHARGE_MS = 1000;

export function taskCost(need: Resources, capacity: Resources, estimatedMs: number | null): number {
  const seconds = Math.max(estimatedMs ?? UNKNOWN_DURATION_MS, MIN_CHARGE_MS) / 1000;
  return dominantShare(need, capacity) * capacity.cores * seconds;
}

/**
 * A project that had no work keeps its old pass, which may lie far behind the others': counting
 * from there it would take every task until it caught up. It starts instead from the grid's
 * virtual time — the pass of the project served last (start-time fair queueing) — so idleness
 * earns no credit.
 */
export function effectivePass(share: ProjectShare, virtualTime: number): number {
  return Math.max(share.pass, virtualTime);
}

export function charged(pass: number, cost: number, weight: number): number {
  return pass + cost / Math.max(weight, 1e-9);
}

/**
 * A task's true cost once it ended (or was lost) after `heldMs`, against what was charged when it
 * was handed out: the project's pass moves by the difference.
 */
export function settledPass(pass: number, charge: number, need: Resources, capacity: Resources, heldMs: number, weight: number): number {
  const actual = taskCost(need, capacity, Math.max(heldMs, 0));
  return charged(pass, actual - charge, weight);
}

/** How a queue's typical duration moves with each new one: kept × previous + learned × new. */
export const DURATION_WEIGHTS = { kept: 0.8, learned: 0.2 } as const;

/** Typical duration of a queue's tasks: an exponentially weighted mean of the latest ones. */
export function learnDuration(previousMs: number | null, observedMs: number): number {
  return previousMs === null ? observedMs : DURATION_WEIGHTS.kept * previousMs + DURATION_WEIGHTS.learned * observedMs;
}
