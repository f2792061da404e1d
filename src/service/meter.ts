import type { OutcomeKind, TaskUsage } from '../domain/outcomes.js';

/**
 * What the agent protocol and the lease sweeper tell about the work they do in this process, as
 * it happens: server/metrics.ts counts it (per server: a fleet's totals are sums over its
 * servers). Called after the store committed, never for a replayed call; it must not throw.
 */
export interface ProtocolMeter {
  /** A work request handed out these many tasks (speculative copies included). */
  dispatched(tasks: number): void;
  /** A report settled a task: how it ended, how long it ran (the agent's measure), what it used. */
  settled(outcome: OutcomeKind, durationMs: number, usage: TaskUsage | null): void;
  /** The sweeper found these many tasks whose lease had expired (lost). */
  lost(tasks: number): void;
}
