import { createHmac } from 'node:crypto';
import type { App } from '../domain/model.js';

/**
 * Adaptive replication and host quotas, as BOINC does them, pure. Hosts are not trusted: each
 * has, per app, a run of consecutive results that a quorum found valid. A host with a long run
 * gets unreplicated work with a probability that grows with the run, and is still spot-checked;
 * an invalid result ends the run and halves the host's daily quota for the app; an error takes
 * one from it; valid results double it back up to the full quota.
 */
export interface ReplicationOptions {
  /** Consecutive valid results before a host may get unreplicated work of an app. */
  trustAfter: number;
  /** The least share of a trusted host's jobs still replicated: the spot checks. */
  spotCheck: number;
  /** Tasks of one app a host may start per day, before errors and invalid results cut it. */
  dailyQuota: number;
}

export const DEFAULT_REPLICATION: ReplicationOptions = { trustAfter: 10, spotCheck: 0.1, dailyQuota: 5000 };

/** A host's record with an app, for replication and quotas. */
export interface HostReliability {
  /** Consecutive results of the host that a quorum found valid. */
  validRun: number;
  /** Tasks the host may start per day (null: the full `dailyQuota`). */
  quota: number | null;
  /** The day (UTC, days since the epoch) `issuedToday` counts. */
  quotaDay: number;
  issuedToday: number;
}

export const NEW_HOST: HostReliability = { validRun: 0, quota: null, quotaDay: 0, issuedToday: 0 };

export const dayOf = (ms: number): number => Math.floor(ms / 86_400_000);

/**
 * How often a host's job is replicated: always below `trustAfter`; then (trustAfter / run)²,
 * never below `spotCheck`. The square lets trust grow quickly once earned (a run of twice the
 * threshold replicates a quarter of the jobs), while the spot checks keep every trusted host
 * under test: a host that turns bad is caught within about 1 / spotCheck of its jobs.
 */
export function replicationProbability(validRun: number, o: ReplicationOptions): number {
  if (validRun < o.trustAfter) return 1;
  return Math.max(o.spotCheck, (o.trustAfter / validRun) ** 2);
}

/**
 * A draw in [0, 1) fixed by the job and host, keyed with a secret of the servers (their
 * transfer key): the decision is pure and repeatable, a host cannot change it by asking again,
 * and — the key being secret — cannot compute which of its jobs go unchecked (a host that
 * could would cheat on exactly those).
 */
export function draw(jobId: number, hostId: number, key: Buffer): number {
  return createHmac('sha256', key).update(`${jobId}:${hostId}`).digest().readUInt32BE(0) / 2 ** 32;
}

/**
 * How a job starting on a host is replicated: the app's replicas and quorum, or — for an app
 * with adaptive replication, on a host the draw trusts — a single replica whose success is
 * accepted alone.
 */
export function replicationFor(
  app: Pick<App, 'replicas' | 'quorum' | 'adaptiveReplication'>,
  host: HostReliability,
  jobId: number,
  hostId: number,
  o: ReplicationOptions,
  key: Buffer | undefined,
): { quorum: number; replicas: number } {
  if (app.replicas <= 1) return { quorum: 1, replicas: 1 };
  if (app.adaptiveReplication) {
    if (!key) throw new Error('adaptive replication needs the servers\' draw key');
    if (draw(jobId, hostId, key) >= replicationProbability(host.validRun, o)) return { quorum: 1, replicas: 1 };
  }
  return { quorum: app.quorum, replicas: app.replicas };
}

/**
 * `valid`/`invalid`: a quorum judged one of the host's results; `error`: one of its tasks went
 * wrong; `succeeded`: one of its unreplicated tasks succeeded (unchecked: it restores the quota,
 * not trust); `issued`: it was handed a task.
 */
export type ReliabilityEvent = 'valid' | 'invalid' | 'error' | 'succeeded' | 'issued';

/** A host's record after an event: see the module comment. */
export function nextReliability(prev: HostReliability, event: ReliabilityEvent, o: ReplicationOptions, now: number): HostReliability {
  const quota = prev.quota ?? o.dailyQuota;
  const full = (q: number): number | null => (q >= o.dailyQuota ? null : q);
  switch (event) {
    case 'valid':
      return { ...prev, validRun: prev.validRun + 1, quota: full(Math.min(o.dailyQuota, quota * 2)) };
    case 'invalid':
      return { ...prev, validRun: 0, quota: Math.max(1, Math.floor(quota / 2)) };
    case 'error':
      return { ...prev, quota: full(Math.max(1, quota - 1)) };
    case 'succeeded':
      return { ...prev, quota: full(Math.min(o.dailyQuota, quota * 2)) };
    case 'issued': {
      const day = dayOf(now);
      return { ...prev, quotaDay: day, issuedToday: (prev.quotaDay === day ? prev.issuedToday : 0) + 1 };
    }
  }
}

/** Tasks the host may still start today, by app, from its records (the plan's `quota`). */
export function quotaLeft(records: ReadonlyMap<number, HostReliability>, o: ReplicationOptions, now: number): { left: Map<number, number>; fresh: number } {
  const today = dayOf(now);
  const left = new Map<number, number>();
  for (const [appId, r] of records) left.set(appId, (r.quota ?? o.dailyQuota) - (r.quotaDay === today ? r.issuedToday : 0));
  return { left, fresh: o.dailyQuota };
}
