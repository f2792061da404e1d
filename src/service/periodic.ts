/**
 * A reconcile pass run every `intervalMs`: never two at once (a slow pass is not overtaken by
 * the next), a failed one left to the next tick (a store outage shows on /readyz), and stopped
 * by waiting for the pass in progress, so the store can close after it. `ready` may hold the
 * passes back (the lease sweeper's grace after a start).
 */
export class Periodic {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  /** A kick arrived during a pass: run another as soon as it ends. */
  private again = false;
  private stopped = false;

  constructor(private readonly pass: () => Promise<unknown>, private readonly intervalMs: number, private readonly ready: () => boolean = () => true) {}

  start(): void {
    if (this.timer) return;
    this.stopped = false;
    this.timer = setInterval(() => this.run(), this.intervalMs);
    this.timer.unref();
  }

  /**
   * A pass now rather than at the next tick (something it acts on just changed); during a pass,
   * one more right after it, however many kicks arrive.
   */
  kick(): void {
    if (this.running) this.again = true;
    else this.run();
  }

  private run(): void {
    if (this.running || this.stopped || !this.timer || !this.ready()) return;
    this.again = false;
    this.running = this.pass()
      .catch(() => undefined)
      .finally(() => {
        this.running = null;
        if (this.again) this.run();
      });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    // A pass that ends during the wait starts no other (stopped), so one await is enough.
    await this.running;
  }
}
