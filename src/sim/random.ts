/**
 * Seeded pseudo-random numbers for the simulator: mulberry32 (Tommy Ettinger's 32-bit
 * generator), small and well known, with a few draws built on it. The same seed gives the same
 * stream on every machine and Node version, which is what makes a simulation reproducible.
 */
export class Random {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[Math.floor(this.next() * items.length)]!;
  }

  /** `k` distinct integers in [0, n), in the order drawn (a partial Fisher–Yates shuffle). */
  sample(n: number, k: number): number[] {
    if (k > n) throw new Error(`cannot draw ${k} of ${n}`);
    const pool = Array.from({ length: n }, (_, i) => i);
    for (let i = 0; i < k; i++) {
      const j = i + Math.floor(this.next() * (n - i));
      [pool[i], pool[j]] = [pool[j]!, pool[i]!];
    }
    return pool.slice(0, k);
  }

  /** Exponentially distributed with the given mean (time between independent events). */
  exponential(mean: number): number {
    return -mean * Math.log(1 - this.next());
  }

  /**
   * Log-normal with the given median; `sigma` is the spread of its logarithm. Task durations
   * on real grids are skewed like this: most near the median, a few several times longer.
   */
  logNormal(median: number, sigma: number): number {
    // Box–Muller; 1 - next() keeps log away from 0.
    const z = Math.sqrt(-2 * Math.log(1 - this.next())) * Math.cos(2 * Math.PI * this.next());
    return median * Math.exp(sigma * z);
  }

  /** An independent stream derived from this one (splitting keeps one use from shifting another's draws). */
  fork(): Random {
    return new Random(Math.floor(this.next() * 4294967296) ^ 0x5bd1e995);
  }
}
