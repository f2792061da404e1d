import { Random } from './random.js';
import type { Scenario, SimApp, SimHost, SimJob } from './scenario.js';

/**
 * The grids and workloads the `sim` benchmark runs, each built from its seed. Every scenario is
 * sized so that the ideal makespan is about `IDEAL_SECONDS`: tasks last tens of minutes and a
 * run is a few hours long, so what is measured is scheduling, not the protocol's own delays
 * (a lease, a poll). `scale` multiplies the number of hosts (and with it the number of jobs,
 * so the ideal makespan stays the same): 1 for the benchmark, ~0.01 for tests.
 */
export interface ScenarioSize {
  scale: number;
  /** Overrides each scenario's own seed (different seeds must give different runs). */
  seed?: number;
}

export const IDEAL_SECONDS = 4 * 3600;

const GiB = 1024;
const MINUTE = 60;

export const SCENARIO_NAMES = ['mixed-cores', 'two-memory-apps', 'long-tail', 'vanishing-hosts', 'churn'] as const;
export type ScenarioName = (typeof SCENARIO_NAMES)[number];

export function buildScenario(name: ScenarioName, size: ScenarioSize): Scenario {
  switch (name) {
    case 'mixed-cores':
      return mixedCores(size);
    case 'two-memory-apps':
      return twoMemoryApps(size);
    case 'long-tail':
      return longTail(size);
    case 'vanishing-hosts':
      return vanishingHosts(size);
    case 'churn':
      return churn(size);
  }
}

export function allScenarios(size: ScenarioSize): Scenario[] {
  return SCENARIO_NAMES.map((n) => buildScenario(n, size));
}

/**
 * 1-, 2-, 4-, 8- and 16-core tasks (equally many of each) on identical 24-core hosts. First fit
 * keeps every host a little busy with small tasks, so the 16-core ones find no room until the
 * end and then leave 8 cores of each host idle.
 */
function mixedCores(size: ScenarioSize): Scenario {
  const seed = size.seed ?? 101;
  const r = new Random(seed);
  const hosts = Array.from({ length: count(100, size) }, (): SimHost => ({ cores: 24, memoryMiB: 96 * GiB, diskMiB: 500 * GiB, speed: 1, joinAt: 0 }));
  const jobs = jobsFor(hosts, () => {
    const cores = r.pick([1, 2, 4, 8, 16]);
    return { cores, memoryMiB: cores * GiB, seconds: duration(r, 20 * MINUTE, 0.3) };
  });
  return {
    name: 'mixed-cores',
    description: '1/2/4/8/16-core tasks, equally many of each, on identical 24-core hosts',
    seed, projects: [{ name: 'physics', weight: 1 }], apps: [app('mc', 'physics', 1, GiB)], hosts,
    batches: [{ at: 0, app: 'mc', jobs }], failureRate: 0,
  };
}

/**
 * Two apps of one project on hosts with 8 cores and 6 GiB: one needs 256 MiB per (1-core)
 * task, the other 1.25 GiB, as much work each, submitted one batch after the other. Alone, the
 * big one fits 4 tasks in a host's memory and leaves 4 cores idle; 4 of each fill both cores
 * and memory. Taken in submission order, the second batch runs alone at the end.
 */
function twoMemoryApps(size: ScenarioSize): Scenario {
  const seed = size.seed ?? 202;
  const r = new Random(seed);
  const hosts = Array.from({ length: count(50, size) }, (): SimHost => ({ cores: 8, memoryMiB: 6 * GiB, diskMiB: 200 * GiB, speed: 1, joinAt: 0 }));
  const half = { ...capacityOf(hosts), work: capacityOf(hosts).work / 2 };
  const small = jobsUntil(half.work, () => ({ cores: 1, memoryMiB: 256, seconds: duration(r, 20 * MINUTE, 0.3) }));
  const big = jobsUntil(half.work, () => ({ cores: 1, memoryMiB: 1280, seconds: duration(r, 20 * MINUTE, 0.3) }));
  return {
    name: 'two-memory-apps',
    description: 'two 1-core apps, 256 MiB and 1.25 GiB per task, as much work each, submitted one batch after the other, on 8-core 6 GiB hosts',
    seed, projects: [{ name: 'genomics', weight: 1 }],
    apps: [app('align', 'genomics', 1, 256), app('assemble', 'genomics', 1, 1280)], hosts,
    batches: [{ at: 0, app: 'align', jobs: small }, { at: 0, app: 'assemble', jobs: big }], failureRate: 0,
  };
}

/**
 * Hosts of very different speeds: most at 1, a fifth at half speed and one in twenty at a fifth.
 * A task that lands on a slow host near the end of the batch runs five times as long as on a
 * fast one and holds the makespan, unless it is started elsewhere too.
 */
function longTail(size: ScenarioSize): Scenario {
  const seed = size.seed ?? 303;
  const r = new Random(seed);
  const hosts = Array.from({ length: count(150, size) }, (): SimHost => {
    const x = r.next();
    return { cores: 16, memoryMiB: 64 * GiB, diskMiB: 200 * GiB, speed: x < 0.05 ? 0.2 : x < 0.25 ? 0.5 : 1, joinAt: 0 };
  });
  const jobs = jobsFor(hosts, () => ({ cores: 4, memoryMiB: 4 * GiB, seconds: duration(r, 20 * MINUTE, 0.3) }));
  return {
    name: 'long-tail',
    description: '4-core tasks on 16-core hosts of speeds 1 (75%), 0.5 (20%) and 0.2 (5%)',
    seed, projects: [{ name: 'climate', weight: 1 }], apps: [app('ensemble', 'climate', 4, 4 * GiB)], hosts,
    batches: [{ at: 0, app: 'ensemble', jobs }], failureRate: 0,
  };
}

/**
 * Hundreds of 8-core hosts; halfway through the ideal makespan a tenth of them vanish without
 * a word. Their tasks are lost only when their leases run out, and must run again elsewhere.
 */
function vanishingHosts(size: ScenarioSize): Scenario {
  const seed = size.seed ?? 404;
  const r = new Random(seed);
  const hosts = Array.from({ length: count(200, size) }, (): SimHost => ({ cores: 8, memoryMiB: 32 * GiB, diskMiB: 200 * GiB, speed: 1, joinAt: 0 }));
  // Work for the ideal makespan with every host there; the vanishing ones then stretch it.
  const jobs = jobsFor(hosts, () => {
    const cores = r.pick([1, 2, 4]);
    return { cores, memoryMiB: cores * 2 * GiB, seconds: duration(r, 20 * MINUTE, 0.3) };
  });
  const vanishing = Math.max(1, Math.round(hosts.length / 10));
  for (const i of r.sample(hosts.length, vanishing)) hosts[i]!.leave = { at: IDEAL_SECONDS / 2, how: 'vanish' };
  return {
    name: 'vanishing-hosts',
    description: '1/2/4-core tasks on 8-core hosts; 10% of the hosts vanish halfway through',
    seed, projects: [{ name: 'astro', weight: 1 }], apps: [app('survey', 'astro', 1, 2 * GiB)], hosts,
    batches: [{ at: 0, app: 'survey', jobs }], failureRate: 0,
  };
}

/**
 * A volunteer-style grid: 8- and 16-core hosts of speeds 0.6–1.4; throughout the run hosts
 * leave (half switched off, half stopped cleanly, handing their tasks back) and new ones join,
 * and 2% of tasks fail part-way and are retried.
 */
function churn(size: ScenarioSize): Scenario {
  const seed = size.seed ?? 505;
  const r = new Random(seed);
  const host = (joinAt: number): SimHost => ({
    cores: r.pick([8, 16]), memoryMiB: 64 * GiB, diskMiB: 200 * GiB, speed: Math.round(r.uniform(0.6, 1.4) * 100) / 100, joinAt,
  });
  const initial = count(200, size);
  const hosts = Array.from({ length: initial }, () => host(0));
  // A third of the hosts leave at random times; as many new ones join, so capacity stays about level.
  const leaving = Math.max(1, Math.round(initial / 3));
  for (const i of r.sample(initial, leaving)) {
    hosts[i]!.leave = { at: Math.round(r.uniform(0.05, 1) * IDEAL_SECONDS), how: r.next() < 0.5 ? 'vanish' : 'release' };
  }
  for (let i = 0; i < leaving; i++) hosts.push(host(Math.round(r.uniform(0.05, 1) * IDEAL_SECONDS)));
  const jobs = jobsFor(hosts.slice(0, initial), () => {
    const cores = r.pick([1, 2, 4, 8]);
    return { cores, memoryMiB: cores * 2 * GiB, seconds: duration(r, 20 * MINUTE, 0.3) };
  });
  return {
    name: 'churn',
    description: '1/2/4/8-core tasks on 8/16-core hosts of speeds 0.6–1.4; a third of the hosts leave during the run (half vanish, half hand their tasks back) and as many join; 2% of tasks fail',
    seed, projects: [{ name: 'bio', weight: 1 }], apps: [app('fold', 'bio', 1, 2 * GiB)], hosts,
    batches: [{ at: 0, app: 'fold', jobs }], failureRate: 0.02,
  };
}

/**
 * Validation on an untrusted grid (the `validation` benchmark; not one of SCENARIO_NAMES, whose
 * makespans the `sim` benchmark compares against a bound that knows nothing of replicas):
 * `jobs` single-core jobs of an app with 2 replicas, quorum 2 and adaptive replication, on
 * 4-core volunteer hosts of speeds 0.5–1.5, `wrongFraction` of which return wrong results
 * (each its own) every time, or at `wrongRate`; 1% of tasks fail.
 */
export function validationScenario(opts: { jobs: number; hosts: number; wrongFraction: number; wrongRate?: number; seed?: number }): Scenario {
  const seed = opts.seed ?? 701;
  const r = new Random(seed);
  const wrong = Math.round(opts.hosts * opts.wrongFraction);
  // The wrong hosts spread evenly among the others: host i is wrong when the count of wrong hosts steps up at i.
  const isWrong = (i: number) => Math.floor(((i + 1) * wrong) / opts.hosts) > Math.floor((i * wrong) / opts.hosts);
  const hosts = Array.from({ length: opts.hosts }, (_, i): SimHost => ({
    cores: 4, memoryMiB: 8 * GiB, diskMiB: 100 * GiB, speed: 0.5 + r.next(), joinAt: 0, ...(isWrong(i) ? { wrongRate: opts.wrongRate ?? 1 } : {}),
  }));
  const jobs = Array.from({ length: opts.jobs }, (): SimJob => ({ cores: 1, memoryMiB: GiB, seconds: duration(r, 10 * MINUTE, 0.3) }));
  return {
    name: 'validation',
    description: `${opts.jobs} single-core jobs (2 replicas, quorum 2, adaptive replication) on ${opts.hosts} 4-core hosts of speeds 0.5–1.5, ${wrong} of which return wrong results ${opts.wrongRate === undefined || opts.wrongRate === 1 ? 'every time' : `${opts.wrongRate * 100}% of the time`}; 1% of tasks fail`,
    seed, projects: [{ name: 'volunteers', weight: 1 }],
    apps: [{ ...app('check', 'volunteers', 1, GiB), replication: { replicas: 2, quorum: 2, adaptive: true } }], hosts,
    batches: [{ at: 0, app: 'check', jobs }], failureRate: 0.01,
  };
}

// ── helpers ────────────────────────────────────────────────────────────────

function count(full: number, size: ScenarioSize): number {
  return Math.max(4, Math.round(full * size.scale));
}

function app(name: string, project: string, cores: number, memoryMiB: number): SimApp {
  return { name, project, cores, memoryMiB, diskMiB: 1024, maxAttempts: 5 };
}

/**
 * Log-normal around `median`, kept within half and twice of it: the scheduler cannot tell one
 * job of a queue from another, so a task many times longer than the rest, started late by
 * chance, would set the makespan whatever the policy.
 */
function duration(r: Random, median: number, sigma: number): number {
  return Math.round(Math.min(2 * median, Math.max(median / 2, r.logNormal(median, sigma))));
}

/** Core-seconds of speed-1 work the hosts do in IDEAL_SECONDS. */
function capacityOf(hosts: readonly SimHost[]): { work: number } {
  return { work: hosts.reduce((w, h) => w + h.cores * h.speed, 0) * IDEAL_SECONDS };
}

/** Jobs until they hold as much work as the hosts do in IDEAL_SECONDS. */
function jobsFor(hosts: readonly SimHost[], next: () => SimJob): SimJob[] {
  return jobsUntil(capacityOf(hosts).work, next);
}

function jobsUntil(work: number, next: () => SimJob): SimJob[] {
  const jobs: SimJob[] = [];
  for (let w = 0; w < work; ) {
    const j = next();
    jobs.push(j);
    w += j.cores * j.seconds;
  }
  return jobs;
}
