/**
 * A reconcile pass run every `intervalMs`: never two at once (a slow pass is not overtaken by
 * the next), a failed one left to the next tick (a store outage shows on /readyz), and stopped
 * by waiting for the pass in progress, so the store can close after it. `ready` may hold the
 * passes back (the lease sweeper's grace after a start).
 */
export class Periodic {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;

  constructor(private readonly pass: () => Promise<unknown>, private readonly intervalMs: number, private readonly ready: () => boolean = () => true) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => {
      if (this.running || !this.ready()) return;
      this.running = this.pass()
        .catch(() => undefined)
        .finally(() => (this.running = null));
    }, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}
