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

/**
 * A host's record with an app moves on two events: its own success clears the count; a failure
 * of its that another host then proved needless — the same job succeeded elsewhere — adds one,
 * and the `hostFailureLimit`-th in a row sends the host into a cool-down for that app (and
 * starts the count again). Failures alone do not count: when a job fails everywhere the fault is
 * the job's (a crash for some parameters, a bug), and keeping hosts away would only stall the
 * app's other jobs — on a one-host grid, all of them.
 */
export function nextHealth(
  prev: HostAppHealth,
  event: 'succeeded' | 'failed_where_others_succeeded',
  o: Pick<SchedulingOptions, 'hostFailureLimit' | 'hostCooldownSeconds'>,
  now: number,
): HostAppHealth {
  if (event === 'succeeded') return { failures: 0, cooldownUntil: prev.cooldownUntil };
  const failures = prev.failures + 1;
  if (failures >= o.hostFailureLimit) return { failures: 0, cooldownUntil: now + o.hostCooldownSeconds * 1000 };
  return { failures, cooldownUntil: prev.cooldownUntil };
}
