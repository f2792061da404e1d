import type { RuntimeKind } from '../domain/model.js';
import { fits, type Resources } from '../domain/resources.js';
import { charged, effectivePass, taskCost, type ProjectShare } from './fair-share.js';
import type { SchedulingOptions } from './options.js';
import { packingScore } from './packing.js';
import { holdsImage, mismatch, runtimeFor, takeFrom, type Offer, type Placement } from './placement.js';

/**
 * One queue per app version and shape ("application-oriented scheduling"): every job in it
 * asks the same of a host, so if its head does not fit, none of its jobs does, and a work
 * request needs to look only at the heads of the queues, however deep they are.
 */
export interface QueueView extends Placement {
  queueId: number;
  projectId: number;
  /** Typical duration of the queue's tasks (learned), or null before the first one ends. */
  estimatedMs: number | null;
  /** The first eligible jobs of the queue, best first: priority, then submission order. */
  heads: JobHead[];
}

export interface JobHead {
  jobId: number;
  priority: number;
  /**
   * When the job was submitted. Its place in line counts from there, retries included: a job
   * requeued after a lost or failed task keeps its place rather than going to the back, as in
   * batch systems (left at the back, retries would all run at the end of a batch and make its tail).
   */
  submittedAt: number;
  /**
   * When the job (last) entered its queue. A job reserves a host when it entered its queue
   * `starvationSeconds` before the job about to be served was submitted: a large job back from
   * a backoff (or failing every attempt) waits anew rather than draining a host on each
   * return, and a job retried in the middle of a batch submitted at once does not make the
   * rest of the batch look starved.
   */
  queuedAt: number;
  deadline: number | null;
}

/**
 * A running replicated job that wants another replica (domain/quorum.ts) on a host that has not
 * run it (nor has a host of the same owner). Replicas go before new jobs: a job half replicated
 * holds its first results hostage until the rest come.
 */
export interface ReplicaWork extends Omit<QueueView, 'heads'> {
  jobId: number;
}

export interface ClaimInput {
  offer: Offer;
  queues: QueueView[];
  /** Replicas wanted by running jobs this host may run, oldest job first. */
  replicaWork: ReplicaWork[];
  /**
   * Tasks the host may still start today, by app (its daily quota, scheduling/replication.ts);
   * `fresh` for apps not in `left`. Absent: no quota.
   */
  quota?: { left: ReadonlyMap<number, number>; fresh: number };
  projects: ReadonlyMap<number, ProjectShare>;
  /** The job this host is being kept free for, if any. */
  reservation: number | null;
  /** Jobs other hosts are being kept free for: not this host's to take or reserve. */
  reservedElsewhere: ReadonlySet<number>;
  /** The fair-share clock: the pass of the last project served (see fair-share.ts). */
  virtualTime: number;
  now: number;
}

export interface Pick {
  jobId: number;
  queueId: number;
  runtime: RuntimeKind;
  /** What the task is charged to its project's fair share now (settled against its real duration when it ends). */
  cost: number;
  /** Another replica of a running job, not the start of a queued one. */
  replica?: true;
}

export interface ClaimPlan {
  picks: Pick[];
  /** New passes of the projects that were charged. */
  passes: Map<number, number>;
  /** undefined: keep the host's reservation as it is; null: clear it; a job id: reserve it. */
  reserve: number | null | undefined;
  /** The fair-share clock after this plan. */
  virtualTime: number;
}

/** What is left of the host's daily quotas as a plan hands out tasks. */
class QuotaLeft {
  private readonly left: Map<number, number>;
  constructor(private readonly quota: ClaimInput['quota']) {
    this.left = new Map(quota?.left ?? []);
  }
  allows(appId: number): boolean {
    return this.quota === undefined || (this.left.get(appId) ?? this.quota.fresh) > 0;
  }
  use(appId: number): void {
    if (this.quota !== undefined) this.left.set(appId, (this.left.get(appId) ?? this.quota.fresh) - 1);
  }
}

/** The scheduling decision for one work request: which jobs, in which order, for this host. */
export function planClaim(input: ClaimInput, o: SchedulingOptions): ClaimPlan {
  return o.policy === 'fifo' ? planFifo(input) : planFair(input, o);
}

interface Candidate {
  queue: QueueView;
  /** Index of the queue's next untaken head. */
  next: number;
  runtime: RuntimeKind;
  held: boolean;
}

function usable(input: ClaimInput): Candidate[] {
  const out: Candidate[] = [];
  for (const queue of input.queues) {
    if (mismatch(input.offer, queue) !== null) continue;
    out.push({ queue, next: 0, runtime: runtimeFor(input.offer, queue)!, held: holdsImage(input.offer, queue) });
  }
  return out;
}

/** Moves past heads that cannot be handed out: past their deadline, or (fair policy) kept for another host. */
function head(c: Candidate, input: ClaimInput, honourReservations = true): JobHead | undefined {
  for (;;) {
    const h = c.queue.heads[c.next];
    if (h === undefined) return undefined;
    if ((h.deadline !== null && h.deadline <= input.now) || (honourReservations && input.reservedElsewhere.has(h.jobId))) {
      c.next++;
      continue;
    }
    return h;
  }
}

/**
 * The baseline: all heads in (priority, submission) order, first fit. No fair share, no
 * packing, no reservations — what a plain batch queue does, kept so the simulator can show
 * what the policy buys.
 */
function planFifo(input: ClaimInput): ClaimPlan {
  const { offer } = input;
  const all: Array<{ h: JobHead; c: Candidate }> = [];
  for (const c of usable(input)) {
    for (; ; c.next++) {
      const h = head(c, input, false);
      if (!h) break;
      all.push({ h, c });
    }
  }
  all.sort((a, b) => b.h.priority - a.h.priority || a.h.jobId - b.h.jobId);
  const picks: Pick[] = [];
  let free = offer.free;
  const quota = new QuotaLeft(input.quota);
  for (const { work, runtime } of replicasThatFit(input, quota)) {
    picks.push({ jobId: work.jobId, queueId: work.queueId, runtime, cost: 0, replica: true });
    free = takeFrom(free, work.resources);
  }
  for (const { h, c } of all) {
    if (picks.length >= offer.maxTasks) break;
    if (!fits(c.queue.resources, free) || !quota.allows(c.queue.appId)) continue;
    picks.push({ jobId: h.jobId, queueId: c.queue.queueId, runtime: c.runtime, cost: 0 });
    free = takeFrom(free, c.queue.resources);
    quota.use(c.queue.appId);
  }
  return { picks, passes: new Map(), reserve: undefined, virtualTime: input.virtualTime };
}

/**
 * boxgrid's policy, one task at a time until the host is full:
 *  1. a job this host is reserved for comes first; until it fits, the host takes nothing else;
 *  2. across projects, weighted fair share (fair-share.ts): the project with work that fits
 *     and the lowest pass;
 *  3. within the project (chooseWithinProject): priority, then age (within
 *     `starvationSeconds` of the oldest head), then image affinity, then packing (packing.ts),
 *     then submission order.
 * Before each pick: if a job that does not fit what is free (though it fits the host) entered
 * its queue `starvationSeconds` before the one about to be served was submitted, it is being overtaken by a
 * stream of others that keep every host a little busy: the host is reserved for it instead,
 * and takes nothing more until it fits. In a backlog submitted at once nobody overtakes by
 * that much, so reservations stay rare.
 */
function planFair(input: ClaimInput, o: SchedulingOptions): ClaimPlan {
  const { offer } = input;
  const candidates = usable(input);
  const picks: Pick[] = [];
  const passes = new Map<number, number>();
  let free = offer.free;
  let reserve: number | null | undefined = undefined;
  const quota = new QuotaLeft(input.quota);

  // Start-time fair queueing: a project's pass never lags the clock (the pass of the last
  // project served), so a project back from idleness starts level with the others.
  let virtualTime = input.virtualTime;
  const shareOf = (projectId: number): ProjectShare => input.projects.get(projectId) ?? { projectId, weight: 1, pass: 0 };
  const passOf = (share: ProjectShare): number => passes.get(share.projectId) ?? effectivePass(share, virtualTime);
  const take = (c: Candidate, h: JobHead): void => {
    const share = shareOf(c.queue.projectId);
    const pass = passOf(share);
    const cost = taskCost(c.queue.resources, offer.capacity, c.queue.estimatedMs);
    picks.push({ jobId: h.jobId, queueId: c.queue.queueId, runtime: c.runtime, cost });
    free = takeFrom(free, c.queue.resources);
    quota.use(c.queue.appId);
    c.next++;
    virtualTime = Math.max(virtualTime, pass);
    passes.set(share.projectId, charged(pass, cost, share.weight));
  };

  if (input.reservation !== null) {
    const c = candidates.find((x) => head(x, input)?.jobId === input.reservation);
    if (!c) {
      reserve = null; // started elsewhere, cancelled, or this host no longer suits it
    } else if (fits(c.queue.resources, free) && quota.allows(c.queue.appId) && offer.maxTasks > 0) {
      take(c, head(c, input)!);
      reserve = null;
    } else {
      return { picks, passes, reserve: undefined, virtualTime }; // drain: take nothing until it fits
    }
  }

  for (const { work, runtime } of replicasThatFit({ ...input, offer: { ...offer, free, maxTasks: offer.maxTasks - picks.length } }, quota)) {
    const share = shareOf(work.projectId);
    const pass = passOf(share);
    const cost = taskCost(work.resources, offer.capacity, work.estimatedMs);
    picks.push({ jobId: work.jobId, queueId: work.queueId, runtime, cost, replica: true });
    free = takeFrom(free, work.resources);
    virtualTime = Math.max(virtualTime, pass);
    passes.set(share.projectId, charged(pass, cost, share.weight));
  }

  const starvationMs = o.starvationSeconds * 1000;
  while (picks.length < offer.maxTasks) {
    // The project: lowest pass among those with a job that fits (lower id on a tie).
    const fitting: Array<{ c: Candidate; h: JobHead }> = [];
    let project = -1;
    let lowest = Infinity;
    for (const c of candidates) {
      const h = head(c, input);
      if (!h || !fits(c.queue.resources, free) || !quota.allows(c.queue.appId)) continue;
      fitting.push({ c, h });
      const pass = passOf(shareOf(c.queue.projectId));
      if (pass < lowest || (pass === lowest && c.queue.projectId < project)) {
        lowest = pass;
        project = c.queue.projectId;
      }
    }
    if (fitting.length === 0) break;
    const best = chooseWithinProject(fitting.filter((x) => x.c.queue.projectId === project), free, offer.capacity, starvationMs);
    // A job that waited far longer than the one about to be served, and that no host has
    // room for, is being overtaken by a stream of others: keep this host for it instead.
    if (reserve === undefined && input.reservation === null && starvationMs > 0) {
      const starved = overtaken(candidates, input, free, best.h.submittedAt - starvationMs);
      if (starved) {
        reserve = starved;
        break;
      }
    }
    take(best.c, best.h);
  }
  return { picks, passes, reserve, virtualTime };
}

/** The replicas this host takes first, in order, as far as they fit what is free. */
function replicasThatFit(input: ClaimInput, quota: QuotaLeft): Array<{ work: ReplicaWork; runtime: RuntimeKind }> {
  const out: Array<{ work: ReplicaWork; runtime: RuntimeKind }> = [];
  let free = input.offer.free;
  for (const work of input.replicaWork) {
    if (out.length >= input.offer.maxTasks) break;
    if (mismatch(input.offer, work) !== null || !fits(work.resources, free) || !quota.allows(work.appId)) continue;
    out.push({ work, runtime: runtimeFor(input.offer, work)! });
    free = takeFrom(free, work.resources);
    quota.use(work.appId);
  }
  return out;
}

/**
 * The oldest head (highest priority first) that does not fit what is free, though it fits the
 * host, and entered its queue no later than `before`; null if none.
 */
function overtaken(candidates: Candidate[], input: ClaimInput, free: Resources, before: number): number | null {
  let starved: JobHead | null = null;
  for (const c of candidates) {
    const h = head(c, input);
    if (!h || h.queuedAt > before || fits(c.queue.resources, free)) continue;
    if (!starved || h.priority > starved.priority || (h.priority === starved.priority && h.queuedAt < starved.queuedAt)) starved = h;
  }
  return starved?.jobId ?? null;
}

/**
 * Within one project: the highest priority; among those, heads that waited within
 * `starvationSeconds` of the longest-waiting one (an older head is never passed over by more
 * than that); among those, a queue whose image the host holds; then the best packing; then
 * submission order. Each step narrows the set, so the choice does not depend on the order the
 * queues come in.
 */
function chooseWithinProject(
  options: Array<{ c: Candidate; h: JobHead }>,
  free: Resources,
  capacity: Resources,
  starvationMs: number,
): { c: Candidate; h: JobHead } {
  const top = Math.max(...options.map((x) => x.h.priority));
  let set = options.filter((x) => x.h.priority === top);
  if (starvationMs > 0) {
    const oldest = Math.min(...set.map((x) => x.h.submittedAt));
    set = set.filter((x) => x.h.submittedAt - oldest < starvationMs);
  }
  if (set.some((x) => x.c.held)) set = set.filter((x) => x.c.held);
  let best = set[0]!;
  let bestScore = packingScore(best.c.queue.resources, free, capacity);
  for (const x of set.slice(1)) {
    const score = packingScore(x.c.queue.resources, free, capacity);
    if (score > bestScore || (score === bestScore && x.h.jobId < best.h.jobId)) {
      best = x;
      bestScore = score;
    }
  }
  return best;
}
