import { EventEmitter } from 'node:events';
import type { Job, StateCounts } from '../domain/model.js';
import type { JobState } from '../domain/states.js';
import type { StepStatus, WorkflowState } from '../domain/workflow.js';

/** A state change worth telling watchers about. Bulk changes are one `batch` event, not N job events. */
export type BoxgridEvent =
  | { type: 'job'; jobId: number; batchId: number | null; state: JobState; reason: string | null }
  | { type: 'batch'; batchId: number; change: 'submitted' | 'cancelled' | 'progress'; counts?: StateCounts }
  /** A workflow's state, or (with `step`) one of its steps' status, changed. */
  | { type: 'workflow'; workflowId: number; state: WorkflowState; step?: string; status?: StepStatus; reason: string | null };

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
  workflowId?: number;
}

export function matches(f: EventFilter, e: StampedEvent): boolean {
  if (e.projectId !== f.projectId) return false;
  const ev = e.event;
  if (f.workflowId !== undefined) return ev.type === 'workflow' && ev.workflowId === f.workflowId;
  if (ev.type === 'workflow') return f.jobId === undefined && f.batchId === undefined;
  if (f.jobId !== undefined) {
    if (ev.type === 'job') return ev.jobId === f.jobId;
    return f.jobBatchId !== undefined && f.jobBatchId !== null && ev.batchId === f.jobBatchId && ev.change !== 'submitted';
  }
  if (f.batchId !== undefined) return ev.batchId === f.batchId;
  return true;
}

/**
 * Carries events between servers that share a database, so that a client watching through one
 * server sees what happened through another (store/postgres/postgres-event-relay.ts).
 */
export interface EventRelay {
  /** Sends one of this server's events to the others (fire and forget). */
  send(projectId: number, event: BoxgridEvent): void;
  /** Starts handing the other servers' events to `deliver`. */
  start(deliver: (projectId: number, event: BoxgridEvent) => void): Promise<void>;
  close(): Promise<void>;
}

/**
 * Fan-out of events to SSE streams, with a bounded replay buffer so a client that reconnects
 * with Last-Event-ID misses nothing recent. With a relay, events published through the other
 * servers on the same database arrive here too; sequence numbers stay this server's own.
 */
export class EventBus {
  private readonly emitter = new EventEmitter();
  /** The last `keep` events, a ring: `next` is where the next one goes (dropping the array's head cost O(keep) per event). */
  private readonly recent: StampedEvent[] = [];
  private next = 0;
  private readonly seqs = new Map<number, number>();
  private relay: EventRelay | null = null;

  constructor(private readonly keep = 10_000) {
    this.emitter.setMaxListeners(0);
  }

  /** Joins the other servers on the relay: from now on their events are delivered here and ours sent there. */
  async connect(relay: EventRelay): Promise<void> {
    await relay.start((projectId, event) => this.deliver(projectId, event));
    this.relay = relay;
  }

  async disconnect(): Promise<void> {
    const relay = this.relay;
    this.relay = null;
    await relay?.close();
  }

  /** A job's state as it now is, to its project's watchers. */
  publishJob(job: Pick<Job, 'id' | 'projectId' | 'batchId' | 'state' | 'reason'>): void {
    this.publish(job.projectId, { type: 'job', jobId: job.id, batchId: job.batchId, state: job.state, reason: job.reason });
  }

  publish(projectId: number, event: BoxgridEvent): void {
    this.deliver(projectId, event);
    this.relay?.send(projectId, event);
  }

  private deliver(projectId: number, event: BoxgridEvent): void {
    const seq = (this.seqs.get(projectId) ?? 0) + 1;
    this.seqs.set(projectId, seq);
    const stamped: StampedEvent = { seq, projectId, at: Date.now(), event };
    if (this.recent.length < this.keep) this.recent.push(stamped);
    else this.recent[this.next] = stamped;
    this.next = (this.next + 1) % this.keep;
    this.emitter.emit('event', stamped);
    this.emitter.emit('all', stamped);
  }

  /** Every event of every project, this server's and relayed ones (the workflow loop wakes on them); returns the unsubscribe function. */
  watchAll(onEvent: (e: StampedEvent) => void): () => void {
    this.emitter.on('all', onEvent);
    return () => this.emitter.off('all', onEvent);
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
