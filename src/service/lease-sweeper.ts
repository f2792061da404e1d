import type { ServiceContext } from './context.js';
import { Periodic } from './periodic.js';

/** Most leases one pass expires per transaction; a backlog takes several (short) transactions. */
const PER_PASS = 500;

/**
 * Expires the leases of tasks whose hosts stopped reporting: the task is lost and its job goes
 * back to the queue after a backoff (or fails when its attempts are spent); and fails the jobs
 * whose deadline passed. A reconcile loop: each pass looks
 * at the store afresh, so it is safe after a crash and alongside other servers.
 */
export class LeaseSweeper {
  private loop: Periodic | null = null;

  constructor(private readonly ctx: ServiceContext) {}

  /** One full pass; returns how many tasks it found lost. Jobs past their deadline fail too. */
  async sweep(): Promise<number> {
    let total = 0;
    for (;;) {
      const expired = await this.ctx.store.expireLeases(this.ctx.now(), PER_PASS, this.ctx.scheduling);
      for (const { job, jobChanged } of expired) if (jobChanged) this.ctx.events.publishJob(job);
      if (expired.length > 0) this.ctx.meter?.lost(expired.length);
      total += expired.length;
      if (expired.length < PER_PASS) break;
    }
    for (;;) {
      const late = await this.ctx.store.failPastDeadline(this.ctx.now(), PER_PASS);
      for (const job of late) this.ctx.events.publishJob(job);
      if (late.length < PER_PASS) return total;
    }
  }

  /**
   * Sweeps every `sweepSeconds`, but only once a whole lease has passed since the start:
   * leases ran on while the server was down, and its hosts need one lease period to heartbeat
   * again before their tasks can be counted lost.
   */
  start(): void {
    if (this.loop) return;
    const graceUntil = this.ctx.now() + this.ctx.timing.leaseSeconds * 1000;
    this.loop = new Periodic(() => this.sweep(), this.ctx.timing.sweepSeconds * 1000, () => this.ctx.now() >= graceUntil);
    this.loop.start();
  }

  /** Stops the loop and waits for a pass in progress, so the store can close after it. */
  async stop(): Promise<void> {
    const loop = this.loop;
    this.loop = null;
    await loop?.stop();
  }
}
