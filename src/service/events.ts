import { EventEmitter } from 'node:events';
import type { StateCounts } from '../domain/model.js';
import type { JobState } from '../domain/states.js';

/** A state change worth telling watchers about. Bulk changes are one `batch` event, not N job events. */
export type BoxgridEvent =
  | { type: 'job'; jobId: number; batchId: number | null; state: JobState; reason: string | null }
  | { type: 'batch'; batchId: number; change: 'submitted' | 'cancelled' | 'progress'; counts?: StateCounts };

export interface StampedEvent {
  /**
   * Monotonic per project within this server process (so its gaps say nothing about other
   * projects); SSE clients resume with Last-Event-ID.
   */
  seq: number;
  projectId: number;
  at: number;
  event: BoxgridEvent;
}

export interface EventFilter {
  projectId: number;
  batchId?: number;
  jobId?: number;
  /** With `jobId`: the job's batch, whose bulk events (a batch cancel) concern the job too. */
  jobBatchId?: number | null;
}

export function matches(f: EventFilter, e: StampedEvent): boolean {
  if (e.projectId !== f.projectId) return false;
  const ev = e.event;
  if (f.jobId !== undefined) {
    if (ev.type === 'job') return ev.jobId === f.jobId;
    return f.jobBatchId !== undefined && f.jobBatchId !== null && ev.batchId === f.jobBatchId && ev.change !== 'submitted';
  }
  if (f.batchId !== undefined) return ev.batchId === f.batchId;
  return true;
}

/**
 * In-process fan-out of events to SSE streams, with a bounded replay buffer so a client that
 * reconnects with Last-Event-ID misses nothing recent. Several servers on one database (a later
 * issue) will need the events in the store instead; this class is the seam for that.
 */
export class EventBus {
  private readonly emitter = new EventEmitter();
  /** The last `keep` events, a ring: `next` is where the next one goes (dropping the array's head cost O(keep) per event). */
  private readonly recent: StampedEvent[] = [];
  private next = 0;
  private readonly seqs = new Map<number, number>();

  constructor(private readonly keep = 10_000) {
    this.emitter.setMaxListeners(0);
  }

  publish(projectId: number, event: BoxgridEvent): void {
    const seq = (this.seqs.get(projectId) ?? 0) + 1;
    this.seqs.set(projectId, seq);
    const stamped: StampedEvent = { seq, projectId, at: Date.now(), event };
    if (this.recent.length < this.keep) this.recent.push(stamped);
    else this.recent[this.next] = stamped;
    this.next = (this.next + 1) % this.keep;
    this.emitter.emit('event', stamped);
  }

  /** Live subscriptions (open event streams), for metrics and tests. */
  subscribers(): number {
    return this.emitter.listenerCount('event');
  }

  /** Events after `afterSeq` still in the buffer, then live ones; returns the unsubscribe function. */
  subscribe(filter: EventFilter, afterSeq: number | null, onEvent: (e: StampedEvent) => void): () => void {
    if (afterSeq !== null) {
      // Oldest first: once the ring is full, its oldest event is the one `next` will overwrite.
      const start = this.recent.length < this.keep ? 0 : this.next;
      for (let i = 0; i < this.recent.length; i++) {
        const e = this.recent[(start + i) % this.recent.length]!;
        if (e.seq > afterSeq && matches(filter, e)) onEvent(e);
      }
    }
    const listener = (e: StampedEvent): void => {
      if (matches(filter, e)) onEvent(e);
    };
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }
}
