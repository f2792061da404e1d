/**
 * How many Jobs the executor may create now. Two bounds keep a 100,000-job batch from becoming
 * 100,000 Kubernetes objects: pods created but not yet running stay under `maxPending` (the
 * queue stays in boxgrid, where it costs a row, not an etcd object and a scheduler pass), and
 * creations follow a token bucket of `ratePerSecond` with a burst of `burst` (the API server
 * sees a steady trickle, never a flood). Pure: the clock is passed in.
 */
export class FlowControl {
  private tokens: number;
  private last: number;

  constructor(
    private readonly o: { maxPending: number; ratePerSecond: number; burst: number },
    now: number,
  ) {
    this.tokens = o.burst;
    this.last = now;
  }

  /** Jobs that may be created now, given how many of the executor's pods are not yet running. */
  allowance(pending: number, now: number): number {
    this.refill(now);
    return Math.max(0, Math.min(this.o.maxPending - pending, Math.floor(this.tokens)));
  }

  /** Spends one token per Job created. */
  spend(n: number, now: number): void {
    this.refill(now);
    this.tokens = Math.max(0, this.tokens - n);
  }

  /** When the next token comes (ms from `now`), for a loop that waits for it. */
  msUntilToken(now: number): number {
    this.refill(now);
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) / this.o.ratePerSecond) * 1000);
  }

  private refill(now: number): void {
    this.tokens = Math.min(this.o.burst, this.tokens + (Math.max(0, now - this.last) / 1000) * this.o.ratePerSecond);
    this.last = now;
  }
}
