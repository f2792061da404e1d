import type { BlobStore } from '../blobs/blob-store.js';
import type { Store } from '../store/store.js';
import type { SchedulingOptions } from '../scheduling/options.js';
import type { EventBus } from './events.js';
import type { ProtocolMeter } from './meter.js';

export interface Limits {
  /** Most jobs one batch request may create (a list, --count or an expanded sweep). */
  maxBatchJobs: number;
  /** Largest blob upload, bytes. */
  maxBlobBytes: number;
  /** Most text (args, env, inputs, labels) one job may carry, bytes. */
  maxJobBytes: number;
  /** Most text all jobs of one batch may carry together, bytes, checked before a sweep expands. */
  maxBatchBytes: number;
}

export const DEFAULT_LIMITS: Limits = {
  maxBatchJobs: 100_000,
  maxBlobBytes: 4 * 1024 * 1024 * 1024,
  maxJobBytes: 64 * 1024,
  maxBatchBytes: 256 * 1024 * 1024,
};

/** The agent protocol's clock: how long leases last and how often agents should call. */
export interface AgentTiming {
  /** A task's lease: an agent that has not heartbeated for this long has lost it. */
  leaseSeconds: number;
  /** How often agents heartbeat; well inside the lease, so one lost heartbeat costs nothing. */
  heartbeatSeconds: number;
  /** The delay suggested to an agent that got no work (jittered, so hosts do not call in step). */
  idlePollSeconds: number;
  /** How often the server looks for expired leases. */
  sweepSeconds: number;
}

export const DEFAULT_TIMING: AgentTiming = { leaseSeconds: 180, heartbeatSeconds: 30, idlePollSeconds: 15, sweepSeconds: 10 };

/** What every service needs: the ports, the event bus, the clock and the limits. */
export interface ServiceContext {
  store: Store;
  blobs: BlobStore;
  events: EventBus;
  now: () => number;
  limits: Limits;
  timing: AgentTiming;
  scheduling: SchedulingOptions;
  /** Uniform in [0, 1): jitter. Math.random in a server; the simulator's seeded generator, so a run replays exactly. */
  random: () => number;
  /**
   * The HMAC key of transfer URLs (service/transfer-signature.ts): the servers' own secret,
   * never stored in the database. Servers sharing a database must share it.
   */
  transferKey: Buffer;
  /** Told of tasks handed out, settled and lost in this process (server/metrics.ts installs it); absent: nobody counts. */
  meter?: ProtocolMeter;
}
