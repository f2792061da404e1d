import type { OutcomeKind } from '../domain/outcomes.js';
import type { SchedulingOptions } from './options.js';

/**
 * How long a job that just lost or failed its attempt number `attempt` waits before it may run
 * again: base × 2^(attempt−1), capped. Spreads retries out, so a job that breaks every host it
 * touches does not burn through its attempts (and the hosts) in seconds.
 */
export function retryDelayMs(attempt: number, o: Pick<SchedulingOptions, 'backoffBaseSeconds' | 'backoffMaxSeconds'>): number {
  if (attempt <= 0 || o.backoffBaseSeconds <= 0) return 0;
  return Math.min(o.backoffBaseSeconds * 2 ** Math.min(attempt - 1, 30), o.backoffMaxSeconds) * 1000;
}

/** A host's record with one app: failures in a row, and until when it is kept away from the app. */
export interface HostAppHealth {
  failures: number;
  cooldownUntil: number | null;
}

/** Outcomes that count against a host: anything that went wrong except a deliberate stop. */
const HOST_FAILURES: ReadonlySet<OutcomeKind> = new Set(['failed', 'out_of_memory', 'timeout', 'image_error', 'output_error', 'agent_error']);

/**
 * A success clears the record; the `hostFailureLimit`-th failure in a row sends the host into
 * a cool-down for that app (and starts the count again); an abort changes nothing.
 */
export function nextHealth(
  prev: HostAppHealth,
  outcome: OutcomeKind,
  o: Pick<SchedulingOptions, 'hostFailureLimit' | 'hostCooldownSeconds'>,
  now: number,
): HostAppHealth {
  if (outcome === 'succeeded') return { failures: 0, cooldownUntil: prev.cooldownUntil };
  if (!HOST_FAILURES.has(outcome)) return prev;
  const failures = prev.failures + 1;
  if (failures >= o.hostFailureLimit) return { failures: 0, cooldownUntil: now + o.hostCooldownSeconds * 1000 };
  return { failures, cooldownUntil: prev.cooldownUntil };
}
