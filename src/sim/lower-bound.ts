import type { SimHost, SimJob } from './scenario.js';

/**
 * A lower bound on the makespan of a scenario that no scheduler can beat, so that
 * makespan ÷ bound says how far from ideal a run was (1 = perfect):
 *  - capacity: the time by which the hosts, with their speeds, joins and leaves, could have done
 *    all the work even if it could be split at will — for cores, and for memory (a grid whose
 *    hosts run out of memory before cores is bound by memory);
 *  - the longest task: the earliest any host that fits it could finish it (on a grid whose
 *    fastest host is there from the start, the longest task's duration on that host).
 */
export interface LowerBound {
  seconds: number;
  coresSeconds: number;
  memorySeconds: number;
  longestTaskSeconds: number;
  binding: 'cores' | 'memory' | 'longest task';
}

/** `start`: when work could first begin (the first submission), seconds; the bound counts from there. */
export function lowerBound(hosts: readonly SimHost[], jobs: Iterable<SimJob>, start: number): LowerBound {
  let coreWork = 0;
  let memoryWork = 0;
  const longest = new Map<string, SimJob>();
  for (const j of jobs) {
    coreWork += j.cores * j.seconds;
    memoryWork += j.memoryMiB * j.seconds;
    const shape = `${j.cores}/${j.memoryMiB}`;
    const prev = longest.get(shape);
    if (!prev || j.seconds > prev.seconds) longest.set(shape, j);
  }
  const coresSeconds = timeToDo(coreWork, hosts, (h) => h.cores * h.speed, start);
  const memorySeconds = timeToDo(memoryWork, hosts, (h) => h.memoryMiB * h.speed, start);
  let longestTaskSeconds = 0;
  for (const j of longest.values()) longestTaskSeconds = Math.max(longestTaskSeconds, earliestFinish(j, hosts, start));
  const seconds = Math.max(coresSeconds, memorySeconds, longestTaskSeconds);
  const binding = seconds === coresSeconds ? 'cores' : seconds === memorySeconds ? 'memory' : 'longest task';
  return { seconds, coresSeconds, memorySeconds, longestTaskSeconds, binding };
}

/**
 * How long after `start` the hosts' combined rate (piecewise constant: it steps at every join
 * and leave) has done `work`; Infinity if it never does.
 */
export function timeToDo(work: number, hosts: readonly SimHost[], rate: (h: SimHost) => number, start: number): number {
  if (work <= 0) return 0;
  const steps: Array<{ at: number; delta: number }> = [];
  for (const h of hosts) {
    const from = Math.max(h.joinAt, start);
    const until = h.leave?.at ?? Infinity;
    if (until <= from) continue;
    steps.push({ at: from, delta: rate(h) });
    if (Number.isFinite(until)) steps.push({ at: until, delta: -rate(h) });
  }
  steps.sort((a, b) => a.at - b.at);
  let t = start;
  let current = 0;
  let done = 0;
  for (const s of steps) {
    if (s.at > t && current > 0) {
      const here = current * (s.at - t);
      if (done + here >= work) return t + (work - done) / current - start;
      done += here;
    }
    t = Math.max(t, s.at);
    current += s.delta;
  }
  return current > 0 ? t + (work - done) / current - start : Infinity;
}

/** Seconds after `start` at which the earliest host that fits the job and stays long enough could finish it. */
function earliestFinish(j: SimJob, hosts: readonly SimHost[], start: number): number {
  let best = Infinity;
  for (const h of hosts) {
    if (h.cores < j.cores || h.memoryMiB < j.memoryMiB) continue;
    const finish = Math.max(h.joinAt, start) + j.seconds / h.speed;
    if (h.leave && h.leave.at < finish) continue;
    best = Math.min(best, finish);
  }
  return best - start;
}
