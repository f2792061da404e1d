/**
 * What a simulation runs: hosts (what they have, how fast they are, when they come and go),
 * apps and the batches submitted to them, and how often tasks fail. Plain data, built by
 * scenarios.ts from a seed, so a scenario can be printed, compared and rebuilt exactly.
 * Times are seconds from the start of the simulation.
 */
export interface SimHost {
  cores: number;
  memoryMiB: number;
  diskMiB: number;
  /** Work done per second relative to a reference host: a task of d seconds takes d / speed here. */
  speed: number;
  /** When the host starts calling the server (it is enrolled then). */
  joinAt: number;
  /**
   * When it stops. `vanish`: it just stops calling (switched off, cut off); its tasks are lost
   * when their leases run out. `release`: its agent is stopped and hands its tasks back first.
   */
  leave?: { at: number; how: 'vanish' | 'release' };
  /**
   * A host whose results are wrong (broken, overclocked or malicious): the share of its
   * successful tasks whose outputs differ from the right ones. Each wrong result is its own
   * (hosts do not collude). Absent: always right.
   */
  wrongRate?: number;
}

export interface SimApp {
  name: string;
  project: string;
  /** What each task asks for unless its job says otherwise. */
  cores: number;
  memoryMiB: number;
  diskMiB: number;
  maxAttempts: number;
  /** Validation (domain/quorum.ts): absent, jobs are not replicated. */
  replication?: { replicas: number; quorum: number; adaptive: boolean };
}

/** One job: what its task holds on a host, and for how long on a speed-1 host. */
export interface SimJob {
  cores: number;
  memoryMiB: number;
  seconds: number;
}

export interface SimBatch {
  at: number;
  app: string;
  jobs: SimJob[];
}

export interface Scenario {
  name: string;
  description: string;
  seed: number;
  projects: Array<{ name: string; weight: number }>;
  apps: SimApp[];
  hosts: SimHost[];
  /** Submitted in this order (ties in `at` keep it). */
  batches: SimBatch[];
  /** Chance that a task fails (exit code 1) part-way instead of finishing. */
  failureRate: number;
}
