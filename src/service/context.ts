import type { BlobStore } from '../blobs/blob-store.js';
import type { Store } from '../store/store.js';
import type { EventBus } from './events.js';

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

/** What every service needs: the ports, the event bus, the clock and the limits. */
export interface ServiceContext {
  store: Store;
  blobs: BlobStore;
  events: EventBus;
  now: () => number;
  limits: Limits;
}
