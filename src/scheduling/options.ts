import { DEFAULT_REPLICATION, type ReplicationOptions } from './replication.js';

/**
 * The knobs of the scheduler. The server reads them from its options (`boxgrid server`
 * flags); the simulator sets them per scenario. Times are seconds.
 */
export interface SchedulingOptions {
  /**
   * `fair`: boxgrid's policy (fair share across projects, priority within one, packing,
   * reservations for starved large jobs, image affinity, speculative duplicates).
   * `fifo`: first fit in (priority, submission) order and nothing else — the baseline the
   * simulator compares against.
   */
  policy: 'fair' | 'fifo';
  /** A requeued job waits base × 2^(attempt−1) seconds, at most `backoffMaxSeconds`. */
  backoffBaseSeconds: number;
  backoffMaxSeconds: number;
  /** Failures of one app in a row on one host before that host is kept away from the app… */
  hostFailureLimit: number;
  /** …for this long. */
  hostCooldownSeconds: number;
  /**
   * A queue whose oldest job has waited this long overrides image affinity, and a job that
   * still finds no host with room gets one reserved for it (the host takes nothing smaller
   * until the job fits).
   */
  starvationSeconds: number;
  /** Speculative duplicates of the slowest running tasks when hosts would otherwise idle. */
  speculation: {
    enabled: boolean;
    /** Duplicates per job on top of the running task. */
    maxCopies: number;
    /** Most duplicates running at once, over the whole grid. */
    maxActive: number;
    /** A job gets a copy only once its newest task (first or copy) has run this long. */
    minRunSeconds: number;
  };
  /** Adaptive replication and hosts' daily quotas (replication.ts). */
  replication: ReplicationOptions;
}

export const DEFAULT_SCHEDULING: SchedulingOptions = {
  policy: 'fair',
  backoffBaseSeconds: 10,
  backoffMaxSeconds: 600,
  hostFailureLimit: 3,
  hostCooldownSeconds: 3600,
  starvationSeconds: 600,
  speculation: { enabled: true, maxCopies: 2, maxActive: 1000, minRunSeconds: 60 },
  replication: DEFAULT_REPLICATION,
};
