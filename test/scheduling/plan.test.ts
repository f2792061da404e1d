import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { RuntimeKind } from '../../src/domain/model.js';
import type { Resources } from '../../src/domain/resources.js';
import type { ProjectShare } from '../../src/scheduling/fair-share.js';
import type { SchedulingOptions } from '../../src/scheduling/options.js';
import type { Offer } from '../../src/scheduling/placement.js';
import { planClaim, type ClaimInput, type ClaimPlan, type JobHead, type QueueView } from '../../src/scheduling/plan.js';
import {
  FAIR, FIFO, NOW, SECOND, claim, head, heads, offer, options, pickedJobs, pickedQueues, projects, queue, range, res,
} from './fixtures.js';

const POLICIES: Array<[string, SchedulingOptions]> = [['fair', FAIR], ['fifo', FIFO]];

// ---------------------------------------------------------------------------------------------
// An independent statement of the rules every plan obeys, used by the properties below. It is
// written from the documentation (placement.ts, plan.ts), not from the code: integer
// millicores, so that no floating-point rounding is involved.
// ---------------------------------------------------------------------------------------------

interface Ints { milli: number; memoryMiB: number; diskMiB: number; gpus: number }
const ints = (r: Resources): Ints => ({ milli: Math.round(r.cores * 1000), memoryMiB: r.memoryMiB, diskMiB: r.diskMiB, gpus: r.gpus });
const fitsInts = (need: Ints, free: Ints): boolean =>
  need.milli <= free.milli && need.memoryMiB <= free.memoryMiB && need.diskMiB <= free.diskMiB && need.gpus <= free.gpus;
const minus = (a: Ints, b: Ints): Ints => ({ milli: a.milli - b.milli, memoryMiB: a.memoryMiB - b.memoryMiB, diskMiB: a.diskMiB - b.diskMiB, gpus: a.gpus - b.gpus });

/** Whether the host may ever run the queue's jobs: platform, runtime, selector, cool-down, capacity. */
function canRun(o: Offer, q: QueueView): boolean {
  if (q.platforms.length > 0 && !q.platforms.includes(o.platform)) return false;
  if (!q.runtimes.some((r) => o.runtimes.includes(r))) return false;
  for (const [k, v] of Object.entries(q.selector)) if (o.labels[k] !== v) return false;
  if (o.cooledApps.has(q.appId)) return false;
  return fitsInts(ints(q.resources), ints(o.capacity));
}

/** Not past its deadline, and (under the fair policy; FIFO has no reservations) not kept for another host. */
function eligibleHead(h: JobHead, input: ClaimInput, honourReservations = true): boolean {
  return (h.deadline === null || h.deadline > input.now) && !(honourReservations && input.reservedElsewhere.has(h.jobId));
}

/** FIFO as documented: every eligible head, (priority desc, id asc), first fit. */
function fifoOracle(input: ClaimInput): number[] {
  const all: Array<{ h: JobHead; q: QueueView }> = [];
  for (const q of input.queues) {
    if (!canRun(input.offer, q)) continue;
    for (const h of q.heads) if (eligibleHead(h, input, false)) all.push({ h, q });
  }
  all.sort((a, b) => (b.h.priority !== a.h.priority ? b.h.priority - a.h.priority : a.h.jobId - b.h.jobId));
  let free = ints(input.offer.free);
  const out: number[] = [];
  for (const { h, q } of all) {
    if (out.length >= input.offer.maxTasks) break;
    const need = ints(q.resources);
    if (!fitsInts(need, free)) continue;
    out.push(h.jobId);
    free = minus(free, need);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Random claims: a few projects, queues with every kind of placement constraint, heads past
// their deadline or reserved elsewhere, sometimes a reservation.
// ---------------------------------------------------------------------------------------------

// Skewed towards what matches and fits (a constraint applies to about one queue in six), so
// that most claims have several picks to order; assertRich() checks that it stays so.
const rarely = <T>(usual: T, ...others: T[]): fc.Arbitrary<T> =>
  fc.oneof({ weight: 5, arbitrary: fc.constant(usual) }, { weight: 1, arbitrary: fc.constantFrom(...others) });
const PLATFORMS = rarely<string[]>([], ['linux/amd64'], ['linux/arm64'], ['linux/arm64', 'linux/amd64']);
const RUNTIME_SETS = rarely<RuntimeKind[]>(['docker'], ['native'], ['docker', 'native'], ['native', 'docker']);
const HOST_RUNTIMES: RuntimeKind[][] = [['docker'], ['docker', 'native'], ['native', 'docker'], ['docker', 'native'], ['native']];
const SELECTORS = rarely<Record<string, string>>({}, { zone: 'a' }, { zone: 'b' }, { zone: 'a', gpu: 'yes' });
const LABELS: Array<Record<string, string>> = [{}, { zone: 'a' }, { zone: 'a', gpu: 'yes' }, { zone: 'a', gpu: 'yes' }, { zone: 'b' }];
const FRACTIONS = [1, 1, 1, 1, 1, 0.9, 0.75, 0.5, 0.25, 0.1, 0];

const needArb = fc.record({
  cores: fc.oneof(fc.constantFrom(0.1, 0.25, 0.5, 1, 1, 1, 2, 2, 3, 4, 8), fc.integer({ min: 1, max: 4000 }).map((m) => m / 1000)),
  memoryMiB: fc.oneof(fc.constantFrom(0, 256, 512, 1024, 1024, 2048, 4096, 8192), fc.integer({ min: 0, max: 4096 })),
  diskMiB: fc.constantFrom(0, 100, 1024, 2048),
  gpus: fc.constantFrom(0, 0, 0, 0, 0, 0, 1, 2),
});
const hostArb = fc.record({
  cores: fc.oneof(fc.constantFrom(2, 4, 8, 8, 16, 16, 24, 32), fc.integer({ min: 1000, max: 32000 }).map((m) => m / 1000)),
  memoryMiB: fc.constantFrom(4096, 8192, 16384, 16384, 32768, 65536),
  diskMiB: fc.constantFrom(4096, 16384, 65536),
  gpus: fc.constantFrom(0, 0, 1, 2, 4),
});
const headArb = fc.record({
  priority: fc.integer({ min: 0, max: 2 }),
  waitedS: fc.integer({ min: 0, max: 1500 }),
  /** Time in its queue, if less than since its submission (a job back from a backoff). */
  inQueueS: fc.integer({ min: 0, max: 1500 }),
  deadline: fc.constantFrom('none', 'none', 'none', 'none', 'past', 'now', 'future'),
  elsewhere: fc.integer({ min: 0, max: 9 }).map((x) => x === 0),
});
const queueArb = fc.record({
  projectId: fc.integer({ min: 1, max: 3 }),
  appId: fc.constantFrom(1, 2, 3, 4, 5, 6, 7, 8),
  resources: needArb,
  platforms: PLATFORMS,
  runtimes: RUNTIME_SETS,
  selector: SELECTORS,
  held: fc.boolean(),
  estimatedMs: fc.option(fc.integer({ min: 0, max: 600_000 }), { nil: null }),
  heads: fc.array(headArb, { minLength: 1, maxLength: 5 }),
});
const claimArb = fc.record({
  capacity: hostArb,
  freeFraction: fc.record({ c: fc.constantFrom(...FRACTIONS), m: fc.constantFrom(...FRACTIONS), d: fc.constantFrom(...FRACTIONS), g: fc.constantFrom(...FRACTIONS) }),
  maxTasks: fc.constantFrom(0, 1, 2, 3, 4, 6, 8, 8, 8, 8),
  runtimes: fc.constantFrom(...HOST_RUNTIMES),
  labels: fc.constantFrom(...LABELS),
  cooled: rarely<number[]>([], [1], [2, 3]),
  queues: fc.array(queueArb, { minLength: 2, maxLength: 6 }),
  shares: fc.array(fc.record({ weight: fc.integer({ min: 1, max: 3 }), pass: fc.integer({ min: 0, max: 1000 }) }), { minLength: 3, maxLength: 3 }),
  virtualTime: fc.integer({ min: 0, max: 1000 }),
  reservation: fc.option(fc.nat({ max: 40 }), { nil: null, freq: 3 }),
  starvationSeconds: fc.constantFrom(0, 600),
});

/** Guards the generator: a property whose claims seldom have two picks proves little. */
function assertRich(plans: ClaimPlan[], min = 0.15): void {
  // About 30% have two picks or more; 15% leaves room for chance (n = 400).
  const rich = plans.filter((p) => p.picks.length >= 2).length / plans.length;
  assert.ok(rich >= min, `only ${(rich * 100).toFixed(0)}% of the generated claims had two picks or more`);
}

type ClaimSeed = typeof claimArb extends fc.Arbitrary<infer T> ? T : never;

function buildClaim(g: ClaimSeed): { input: ClaimInput; o: SchedulingOptions } {
  const cap = g.capacity;
  const free: Resources = {
    cores: Math.floor(cap.cores * 1000 * g.freeFraction.c) / 1000,
    memoryMiB: Math.floor(cap.memoryMiB * g.freeFraction.m),
    diskMiB: Math.floor(cap.diskMiB * g.freeFraction.d),
    gpus: Math.floor(cap.gpus * g.freeFraction.g),
  };
  let nextJob = 1;
  const elsewhere = new Set<number>();
  const queues: QueueView[] = g.queues.map((q, i) => {
    const hs: JobHead[] = q.heads.map((h) => {
      const jobId = nextJob++;
      if (h.elsewhere) elsewhere.add(jobId);
      return {
        jobId,
        priority: h.priority,
        submittedAt: NOW - h.waitedS * SECOND,
        queuedAt: NOW - Math.min(h.waitedS, h.inQueueS) * SECOND,
        deadline: h.deadline === 'none' ? null : h.deadline === 'past' ? NOW - 1 : h.deadline === 'now' ? NOW : NOW + 1,
      };
    });
    hs.sort((a, b) => b.priority - a.priority || a.jobId - b.jobId); // as the store hands them over
    return queue(i + 1, {
      projectId: q.projectId, appId: q.appId, resources: q.resources, platforms: q.platforms, runtimes: q.runtimes,
      selector: q.selector, images: [`img${i + 1}`], estimatedMs: q.estimatedMs, heads: hs,
    });
  });
  const allIds = queues.flatMap((q) => q.heads.map((h) => h.jobId));
  const reservation = g.reservation === null ? null : g.reservation < allIds.length ? allIds[g.reservation]! : 99_999;
  const images = new Set(g.queues.flatMap((q, i) => (q.held ? [`img${i + 1}`] : [])));
  const input = claim({
    offer: offer({ capacity: cap, free, maxTasks: g.maxTasks, runtimes: g.runtimes, labels: g.labels, cooledApps: new Set(g.cooled), images }),
    queues,
    projects: projects(...g.shares.map((s, i): ProjectShare => ({ projectId: i + 1, weight: s.weight, pass: s.pass }))),
    reservation,
    reservedElsewhere: elsewhere,
    virtualTime: g.virtualTime,
  });
  return { input, o: options({ starvationSeconds: g.starvationSeconds }) };
}

function queueOf(input: ClaimInput, jobId: number): QueueView | undefined {
  return input.queues.find((q) => q.heads.some((h) => h.jobId === jobId));
}

/** The checks every plan passes, whatever the policy. */
function checkCommon(input: ClaimInput, plan: ClaimPlan, honourReservations = true): void {
  assert.ok(plan.picks.length <= input.offer.maxTasks, `${plan.picks.length} picks for maxTasks ${input.offer.maxTasks}`);
  assert.equal(new Set(pickedJobs(plan)).size, plan.picks.length, 'a job picked twice');
  let used: Ints = { milli: 0, memoryMiB: 0, diskMiB: 0, gpus: 0 };
  for (const p of plan.picks) {
    const q = queueOf(input, p.jobId);
    assert.ok(q, `job ${p.jobId} is not among the heads`);
    assert.equal(p.queueId, q.queueId);
    assert.ok(canRun(input.offer, q), `job ${p.jobId}'s queue cannot run on this host`);
    const h = q.heads.find((x) => x.jobId === p.jobId)!;
    assert.ok(eligibleHead(h, input, honourReservations), `job ${p.jobId} is past its deadline or reserved elsewhere`);
    assert.equal(p.runtime, input.offer.runtimes.find((r) => q.runtimes.includes(r)), 'not the host\'s preferred runtime');
    const n = ints(q.resources);
    used = { milli: used.milli + n.milli, memoryMiB: used.memoryMiB + n.memoryMiB, diskMiB: used.diskMiB + n.diskMiB, gpus: used.gpus + n.gpus };
  }
  assert.ok(fitsInts(used, ints(input.offer.free)), `picks use ${JSON.stringify(used)}, more than free ${JSON.stringify(input.offer.free)}`);
}

/** No eligible head that was left behind would still fit: the host is filled (or maxTasks reached). */
function checkFull(input: ClaimInput, plan: ClaimPlan, honourReservations = true): void {
  if (plan.picks.length >= input.offer.maxTasks) return;
  const picked = new Set(pickedJobs(plan));
  let free = ints(input.offer.free);
  for (const p of plan.picks) free = minus(free, ints(queueOf(input, p.jobId)!.resources));
  for (const q of input.queues) {
    if (!canRun(input.offer, q)) continue;
    for (const h of q.heads) {
      if (picked.has(h.jobId) || !eligibleHead(h, input, honourReservations)) continue;
      assert.ok(!fitsInts(ints(q.resources), free), `job ${h.jobId} was left behind though it fits what is still free`);
    }
  }
}

describe('planClaim: invariants of every plan (properties)', () => {
  it('fifo: within maxTasks and free capacity, only eligible heads on hosts that suit them, in (priority, id) order first fit', () => {
    const seen: ClaimPlan[] = [];
    fc.assert(
      fc.property(claimArb, (g) => {
        const { input } = buildClaim(g);
        const plan = planClaim(input, FIFO);
        seen.push(plan);
        checkCommon(input, plan, false);
        checkFull(input, plan, false);
        assert.deepEqual(pickedJobs(plan), fifoOracle(input));
        assert.equal(plan.passes.size, 0, 'fifo charges no project');
        assert.equal(plan.reserve, undefined, 'fifo never reserves or clears a reservation');
        assert.equal(plan.virtualTime, input.virtualTime, 'fifo does not move the fair-share clock');
      }),
      { numRuns: 400 },
    );
    assertRich(seen);
  });

  it('fair: within maxTasks and free capacity, only eligible heads on hosts that suit them; fills the host unless draining for a reservation', () => {
    const seen: ClaimPlan[] = [];
    fc.assert(
      fc.property(claimArb, (g) => {
        const { input, o } = buildClaim(g);
        const plan = planClaim(input, o);
        seen.push(plan);
        checkCommon(input, plan);
        if (typeof plan.reserve === 'number') return; // the host starts draining now: it may stay part-empty
        if (input.reservation === null) {
          checkFull(input, plan);
          return;
        }
        // A reservation is honoured when the job is the first eligible head of a queue that suits
        // the host: taken first once it fits (and maxTasks allows), else the host drains.
        const q = input.queues.find((x) => canRun(input.offer, x) && x.heads.find((h) => eligibleHead(h, input))?.jobId === input.reservation);
        if (!q) {
          assert.equal(plan.reserve, null, 'a reservation for a job not at the front of a suitable queue is cleared');
          checkFull(input, plan);
        } else if (fitsInts(ints(q.resources), ints(input.offer.free)) && input.offer.maxTasks > 0) {
          assert.equal(plan.picks[0]?.jobId, input.reservation, 'the reserved job comes first');
          assert.equal(plan.reserve, null, 'taking the reserved job clears the reservation');
          checkFull(input, plan);
        } else {
          assert.deepEqual(plan.picks, [], 'a reserved host takes nothing until its job fits');
          assert.equal(plan.reserve, undefined, 'and keeps its reservation');
        }
      }),
      { numRuns: 400 },
    );
    assertRich(seen);
  });

  it('fair: charges exactly the projects it picked for, forward from their pass and the clock; the clock never goes back', () => {
    fc.assert(
      fc.property(claimArb, (g) => {
        const { input, o } = buildClaim(g);
        const plan = planClaim(input, o);
        const charged = new Set(plan.picks.map((p) => queueOf(input, p.jobId)!.projectId));
        assert.deepEqual([...plan.passes.keys()].sort(), [...charged].sort());
        for (const [projectId, pass] of plan.passes) {
          const before = input.projects.get(projectId)!;
          assert.ok(pass > Math.max(before.pass, input.virtualTime), `project ${projectId}: pass ${pass} from ${before.pass} (clock ${input.virtualTime})`);
        }
        assert.ok(plan.virtualTime >= input.virtualTime);
        if (plan.picks.length === 0) assert.equal(plan.virtualTime, input.virtualTime);
        for (const p of plan.picks) assert.ok(p.cost > 0, 'every task costs something');
      }),
      { numRuns: 300 },
    );
  });

  it('fair: each pick goes to the project with the lowest pass among those with work that fits (lower id on a tie), charged its resource-time', () => {
    fc.assert(
      fc.property(claimArb, (g) => {
        const { input, o } = buildClaim(g);
        const plan = planClaim(input, o);
        const share = (p: number) => input.projects.get(p)!;
        const passes = new Map<number, number>();
        let clock = input.virtualTime;
        const passOf = (p: number) => passes.get(p) ?? Math.max(share(p).pass, clock);
        let free = ints(input.offer.free);
        const taken = new Set<number>();
        plan.picks.forEach((pick, i) => {
          const q = queueOf(input, pick.jobId)!;
          // Resource-time: the dominant share of the host in cores × the expected seconds (at least 1).
          const cap = input.offer.capacity;
          const dominant = Math.max(q.resources.cores / cap.cores, q.resources.memoryMiB / cap.memoryMiB, cap.gpus > 0 ? q.resources.gpus / cap.gpus : 0);
          const expected = dominant * cap.cores * Math.max(q.estimatedMs ?? 60_000, 1000) / 1000;
          assert.ok(Math.abs(pick.cost - expected) <= 1e-9 * Math.max(1, expected), `cost ${pick.cost}, expected ${expected}`);
          const reservedFirst = i === 0 && pick.jobId === input.reservation;
          if (!reservedFirst) {
            const withWork = new Set<number>();
            for (const x of input.queues) {
              if (!canRun(input.offer, x) || !fitsInts(ints(x.resources), free)) continue;
              if (x.heads.some((h) => eligibleHead(h, input) && !taken.has(h.jobId))) withWork.add(x.projectId);
            }
            const best = [...withWork].sort((a, b) => passOf(a) - passOf(b) || a - b)[0];
            assert.equal(q.projectId, best, `pick ${i + 1} went to project ${q.projectId}, not ${best}`);
          }
          const before = passOf(q.projectId);
          clock = Math.max(clock, before);
          passes.set(q.projectId, before + pick.cost / share(q.projectId).weight);
          free = minus(free, ints(q.resources));
          taken.add(pick.jobId);
        });
        assert.deepEqual(plan.passes, passes);
        assert.equal(plan.virtualTime, clock);
      }),
      { numRuns: 300 },
    );
  });

  it('fair: a new reservation is for an eligible head that fits the host but not what is left free, and that a fitting head at least starvationSeconds younger would overtake', () => {
    fc.assert(
      fc.property(claimArb, (g) => {
        const { input, o } = buildClaim(g);
        const plan = planClaim(input, o);
        if (typeof plan.reserve !== 'number') return;
        assert.equal(input.reservation, null, 'a host already reserved is not reserved again in the same plan');
        const q = queueOf(input, plan.reserve);
        assert.ok(q && canRun(input.offer, q));
        const h = q.heads.find((x) => x.jobId === plan.reserve)!;
        assert.ok(eligibleHead(h, input) && o.starvationSeconds > 0);
        let free = ints(input.offer.free);
        for (const p of plan.picks) free = minus(free, ints(queueOf(input, p.jobId)!.resources));
        assert.ok(!fitsInts(ints(q.resources), free));
        const picked = new Set(pickedJobs(plan));
        const overtaker = input.queues.some((x) => canRun(input.offer, x) && fitsInts(ints(x.resources), free) &&
          x.heads.some((y) => !picked.has(y.jobId) && eligibleHead(y, input) && y.submittedAt >= h.queuedAt + o.starvationSeconds * 1000));
        assert.ok(overtaker, 'reserved only when a much younger job would otherwise be served');
      }),
      { numRuns: 400 },
    );
  });
});

describe('planClaim: placement (both policies)', () => {
  for (const [name, o] of POLICIES) {
    it(`${name}: platform — an image for other platforms is not offered, an image for any platform is`, () => {
      const input = claim({
        queues: [
          queue(1, { platforms: ['linux/arm64'], heads: heads([1]) }),
          queue(2, { platforms: ['linux/arm64', 'linux/amd64'], heads: heads([2]) }),
          queue(3, { platforms: [], heads: heads([3]) }),
        ],
      });
      assert.deepEqual(pickedJobs(planClaim(input, o)).sort(), [2, 3]);
    });

    it(`${name}: runtime — the host's most preferred runtime the app supports; an app with none of the host's runtimes is not offered`, () => {
      const input = claim({
        offer: offer({ runtimes: ['native', 'docker'] }),
        queues: [
          queue(1, { runtimes: ['docker', 'native'], heads: heads([1]) }),
          queue(2, { runtimes: ['docker'], heads: heads([2]) }),
        ],
      });
      const plan = planClaim(input, o);
      assert.deepEqual(Object.fromEntries(plan.picks.map((p) => [p.jobId, p.runtime])), { 1: 'native', 2: 'docker' });

      const dockerOnlyHost = claim({ offer: offer({ runtimes: ['docker'] }), queues: [queue(1, { runtimes: ['native'], heads: heads([1]) })] });
      assert.deepEqual(planClaim(dockerOnlyHost, o).picks, []);
    });

    it(`${name}: selector — every selector label must be on the host with that value; extra host labels do not matter`, () => {
      const input = claim({
        offer: offer({ labels: { zone: 'a', gpu: 'a100', extra: 'x' } }),
        queues: [
          queue(1, { selector: { zone: 'a' }, heads: heads([1]) }),
          queue(2, { selector: { zone: 'b' }, heads: heads([2]) }),
          queue(3, { selector: { zone: 'a', gpu: 'a100' }, heads: heads([3]) }),
          queue(4, { selector: { rack: '7' }, heads: heads([4]) }),
          queue(5, { selector: {}, heads: heads([5]) }),
        ],
      });
      assert.deepEqual(pickedJobs(planClaim(input, o)).sort(), [1, 3, 5]);
    });

    it(`${name}: an app the host is cooling down from is not offered to it (other apps are)`, () => {
      const input = claim({
        offer: offer({ cooledApps: new Set([7]) }),
        queues: [queue(1, { appId: 7, heads: heads([1]) }), queue(2, { appId: 8, heads: heads([2]) })],
      });
      assert.deepEqual(pickedJobs(planClaim(input, o)), [2]);
    });

    it(`${name}: a job larger than the whole host is never offered, on any resource`, () => {
      const host = offer({ capacity: res(8, 16384, 1000, 1), free: res(8, 16384, 1000, 1) });
      const input = claim({
        offer: host,
        queues: [
          queue(1, { resources: res(9, 1), heads: heads([1], { submittedAt: NOW - 3600 * SECOND }) }),
          queue(2, { resources: res(1, 16385), heads: heads([2], { submittedAt: NOW - 3600 * SECOND }) }),
          queue(3, { resources: res(1, 1, 1001), heads: heads([3], { submittedAt: NOW - 3600 * SECOND }) }),
          queue(4, { resources: res(1, 1, 1, 2), heads: heads([4], { submittedAt: NOW - 3600 * SECOND }) }),
          queue(5, { resources: res(8, 16384, 1000, 1), heads: heads([5]) }),
        ],
      });
      const plan = planClaim(input, o);
      assert.deepEqual(pickedJobs(plan), [5]);
      assert.equal(plan.reserve, undefined, 'a job the host can never run is not reserved on it, however long it waited');
    });

    it(`${name}: fits on every resource — a job short of only GPUs, disk, memory or cores is not taken`, () => {
      const free = res(4, 4096, 4096, 1);
      const input = claim({
        offer: offer({ capacity: res(8, 16384, 8192, 2), free, maxTasks: 10 }),
        queues: [
          queue(1, { resources: res(1, 1, 1, 2), heads: heads([1]) }),
          queue(2, { resources: res(1, 1, 4097, 0), heads: heads([2]) }),
          queue(3, { resources: res(1, 4097, 1, 0), heads: heads([3]) }),
          queue(4, { resources: res(4.001, 1, 1, 0), heads: heads([4]) }),
          queue(5, { resources: res(4, 4096, 4096, 1), heads: heads([5]) }),
        ],
      });
      assert.deepEqual(pickedJobs(planClaim(input, o)), [5]);
    });

    it(`${name}: fractional cores are counted to the millicore (ten 0.1-core jobs fill one core)`, () => {
      const input = claim({
        offer: offer({ capacity: res(1, 16384), free: res(1, 16384) }),
        queues: [queue(1, { resources: res(0.1, 1), heads: heads(range(1, 12)) })],
      });
      assert.equal(planClaim(input, o).picks.length, 10);
    });

    it(`${name}: maxTasks bounds the answer, and 0 takes nothing`, () => {
      const q = queue(1, { heads: heads(range(1, 8)) });
      assert.equal(planClaim(claim({ offer: offer({ maxTasks: 3 }), queues: [q] }), o).picks.length, 3);
      assert.equal(planClaim(claim({ offer: offer({ maxTasks: 0 }), queues: [q] }), o).picks.length, 0);
    });

    it(`${name}: no queues, no picks`, () => {
      const plan = planClaim(claim(), o);
      assert.deepEqual(plan.picks, []);
      assert.equal(plan.passes.size, 0);
      assert.equal(plan.reserve, undefined);
    });
  }
});

describe('planClaim: heads that cannot be handed out (both policies)', () => {
  for (const [name, o] of POLICIES) {
    it(`${name}: a head at or past its deadline is skipped for the next one of its queue`, () => {
      const input = claim({
        offer: offer({ maxTasks: 1 }),
        queues: [queue(1, { heads: [head(1, { deadline: NOW - 1 }), head(2, { deadline: NOW }), head(3, { deadline: NOW + 1 }), head(4)] })],
      });
      assert.deepEqual(pickedJobs(planClaim(input, o)), [3]);
      const all = planClaim({ ...input, offer: offer({ maxTasks: 10 }) }, o);
      assert.deepEqual(pickedJobs(all), [3, 4]);
    });

    it(`${name}: a job another host is kept free for is not taken here (fair; FIFO has no reservations), but the jobs behind it are`, () => {
      const input = claim({
        queues: [queue(1, { heads: heads([1, 2, 3]) })],
        reservedElsewhere: new Set([1, 3]),
      });
      assert.deepEqual(pickedJobs(planClaim(input, o)), o.policy === 'fair' ? [2] : [1, 2, 3]);
    });
  }
});

describe('planClaim fair: priority', () => {
  it('within a project, the queue whose head has the highest priority goes first', () => {
    const input = claim({
      offer: offer({ maxTasks: 4 }),
      queues: [
        queue(1, { heads: heads([1, 2]) }),
        queue(2, { heads: heads([3], { priority: 5 }) }),
        queue(3, { heads: heads([4], { priority: 2 }) }),
      ],
    });
    assert.deepEqual(pickedJobs(planClaim(input, FAIR)), [3, 4, 1, 2]);
  });

  it('priority outranks a longer wait, image affinity and packing', () => {
    const input = claim({
      offer: offer({ maxTasks: 1, images: new Set(['img1']) }),
      queues: [
        queue(1, { resources: res(4, 4096), heads: heads([1], { submittedAt: NOW - 7200 * SECOND }) }),
        queue(2, { heads: heads([2], { priority: 1 }) }),
      ],
    });
    assert.deepEqual(pickedJobs(planClaim(input, FAIR)), [2]);
  });

  it('across projects, fair share comes before priority: a high-priority job of a project ahead in its share waits', () => {
    const input = claim({
      offer: offer({ maxTasks: 1 }),
      projects: projects({ projectId: 1, weight: 1, pass: 500 }, { projectId: 2, weight: 1, pass: 100 }),
      virtualTime: 100,
      queues: [queue(1, { projectId: 1, heads: heads([1], { priority: 9 }) }), queue(2, { projectId: 2, heads: heads([2]) })],
    });
    assert.deepEqual(pickedJobs(planClaim(input, FAIR)), [2]);
  });

  it('within one queue, heads are taken in the order given (the store sorts them)', () => {
    const input = claim({ offer: offer({ maxTasks: 3 }), queues: [queue(1, { heads: [head(9, { priority: 3 }), head(4, { priority: 1 }), head(5)] })] });
    assert.deepEqual(pickedJobs(planClaim(input, FAIR)), [9, 4, 5]);
  });
});

/**
 * Successive work requests of one host, the store's part played here: the passes and the clock
 * each plan returns are fed into the next, as claimTasks does. Each round every queue gets fresh
 * heads (a deep backlog).
 */
function simulate(
  rounds: number,
  shares: ProjectShare[],
  queuesOf: (round: number) => Array<Omit<QueueView, 'heads' | 'queueId'> & { queueId: number }>,
  o: SchedulingOptions = FAIR,
  host: Offer = offer({ maxTasks: 1 }),
  state: { projects: Map<number, ProjectShare>; virtualTime: number } = { projects: projects(...shares), virtualTime: 0 },
): { picks: number[]; state: { projects: Map<number, ProjectShare>; virtualTime: number } } {
  let nextJob = 1_000_000;
  const order: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const queues = queuesOf(i).map((q) => ({ ...q, heads: heads(range(nextJob, host.maxTasks + 1)) }));
    nextJob += host.maxTasks + 1;
    const plan = planClaim(claim({ offer: host, queues, projects: state.projects, virtualTime: state.virtualTime }), o);
    for (const p of plan.picks) order.push(queues.find((q) => q.queueId === p.queueId)!.projectId);
    for (const [projectId, pass] of plan.passes) {
      const s = state.projects.get(projectId) ?? { projectId, weight: 1, pass: 0 };
      state.projects.set(projectId, { ...s, pass });
    }
    state.virtualTime = plan.virtualTime;
  }
  return { picks: order, state };
}

const count = (xs: number[], x: number): number => xs.filter((y) => y === x).length;

describe('planClaim fair: fair share across projects', () => {
  it('weights 2 and 1, equal tasks: over 300 successive one-task plans the picks split exactly 200:100, and never drift more than one task from 2:1', () => {
    const { picks } = simulate(
      300,
      [{ projectId: 1, weight: 2, pass: 0 }, { projectId: 2, weight: 1, pass: 0 }],
      () => [queue(1, { projectId: 1 }), queue(2, { projectId: 2 })],
    );
    assert.equal(picks.length, 300);
    assert.equal(count(picks, 1), 200);
    assert.equal(count(picks, 2), 100);
    for (let n = 1; n <= picks.length; n++) {
      const a = count(picks.slice(0, n), 1);
      assert.ok(Math.abs(a - (2 * n) / 3) <= 1, `after ${n} picks project 1 has ${a}`);
    }
  });

  it('the same split holds with the weights the other way round and the projects listed in the other order', () => {
    const { picks } = simulate(
      300,
      [{ projectId: 1, weight: 1, pass: 0 }, { projectId: 2, weight: 2, pass: 0 }],
      () => [queue(2, { projectId: 2 }), queue(1, { projectId: 1 })],
    );
    assert.equal(count(picks, 1), 100);
    assert.equal(count(picks, 2), 200);
  });

  it('weights 2 and 1 within a single plan of six tasks: four and two', () => {
    const input = claim({
      offer: offer({ maxTasks: 6 }),
      projects: projects({ projectId: 1, weight: 2, pass: 0 }, { projectId: 2, weight: 1, pass: 0 }),
      queues: [queue(1, { projectId: 1, heads: heads(range(1, 10)) }), queue(2, { projectId: 2, heads: heads(range(101, 10)) })],
    });
    const plan = planClaim(input, FAIR);
    const byProject = plan.picks.map((p) => (p.jobId < 100 ? 1 : 2));
    assert.equal(count(byProject, 1), 4);
    assert.equal(count(byProject, 2), 2);
  });

  it('equal weights: a project of 2-core tasks gets half as many tasks as a project of 1-core tasks (cost is the dominant share)', () => {
    const { picks } = simulate(
      300,
      [{ projectId: 1, weight: 1, pass: 0 }, { projectId: 2, weight: 1, pass: 0 }],
      () => [queue(1, { projectId: 1, resources: res(2, 512) }), queue(2, { projectId: 2, resources: res(1, 512) })],
    );
    assert.equal(count(picks, 1), 100);
    assert.equal(count(picks, 2), 200);
  });

  it('equal weights: a project whose tasks run twice as long (learned) gets half as many', () => {
    const { picks } = simulate(
      300,
      [{ projectId: 1, weight: 1, pass: 0 }, { projectId: 2, weight: 1, pass: 0 }],
      () => [queue(1, { projectId: 1, estimatedMs: 120_000 }), queue(2, { projectId: 2, estimatedMs: 60_000 })],
    );
    assert.equal(count(picks, 1), 100);
    assert.equal(count(picks, 2), 200);
  });

  it('between projects level on pass, the lower project id goes first, whatever the order of the queues', () => {
    const input = claim({
      offer: offer({ maxTasks: 1 }),
      projects: projects({ projectId: 1, weight: 1, pass: 300 }, { projectId: 2, weight: 3, pass: 300 }),
      virtualTime: 300,
      queues: [queue(2, { projectId: 2, heads: heads([1]) }), queue(1, { projectId: 1, heads: heads([2]) })],
    });
    assert.deepEqual(pickedJobs(planClaim(input, FAIR)), [2]);
  });

  it('a project with no work that fits does not hold the others up', () => {
    const input = claim({
      offer: offer({ maxTasks: 3, free: res(2, 16384) }),
      projects: projects({ projectId: 1, weight: 1, pass: 0 }, { projectId: 2, weight: 1, pass: 900 }),
      queues: [queue(1, { projectId: 1, resources: res(4), heads: heads([1]) }), queue(2, { projectId: 2, heads: heads([2, 3, 4]) })],
    });
    assert.deepEqual(pickedJobs(planClaim(input, FAIR)), [2, 3]);
  });

  it('a project unknown to the map is treated as weight 1, pass 0', () => {
    const input = claim({
      offer: offer({ maxTasks: 1 }),
      projects: projects({ projectId: 1, weight: 1, pass: 50 }),
      virtualTime: 0,
      queues: [queue(1, { projectId: 1, heads: heads([1]) }), queue(2, { projectId: 2, heads: heads([2]) })],
    });
    const plan = planClaim(input, FAIR);
    assert.deepEqual(pickedJobs(plan), [2]);
    assert.equal(plan.passes.get(2), 60, '1 core of 8 on an 8-core host for the default 60 s: 60 core-seconds');
  });

  it('charges each pick its cost over the weight: 1 core of an 8-core host for 60 s is 60, halved for weight 2', () => {
    const input = claim({
      offer: offer({ maxTasks: 2 }),
      projects: projects({ projectId: 1, weight: 2, pass: 1000 }),
      virtualTime: 1000,
      queues: [queue(1, { projectId: 1, heads: heads([1, 2]) })],
    });
    const plan = planClaim(input, FAIR);
    assert.deepEqual(plan.picks.map((p) => p.cost), [60, 60]);
    assert.equal(plan.passes.get(1), 1060);
  });
});

describe('planClaim fair: the virtual-time floor (no burst after idleness)', () => {
  it('a project whose pass lags the clock is charged from the clock, not from its old pass', () => {
    const input = claim({
      offer: offer({ maxTasks: 1 }),
      projects: projects({ projectId: 1, weight: 1, pass: 1000 }, { projectId: 2, weight: 1, pass: 0 }),
      virtualTime: 940,
      queues: [queue(1, { projectId: 1, heads: heads([1]) }), queue(2, { projectId: 2, heads: heads([2]) })],
    });
    const plan = planClaim(input, FAIR);
    assert.deepEqual(pickedJobs(plan), [2]);
    assert.equal(plan.passes.get(2), 1000, 'charged from the clock (940) + 60');
    assert.equal(plan.virtualTime, 940);
  });

  it('the clock moves to the pass the served project had when it was served', () => {
    const input = claim({
      offer: offer({ maxTasks: 1 }),
      projects: projects({ projectId: 1, weight: 1, pass: 500 }),
      virtualTime: 100,
      queues: [queue(1, { projectId: 1, heads: heads([1]) })],
    });
    assert.equal(planClaim(input, FAIR).virtualTime, 500);
  });

  it('a project back from idleness gets its share from then on, not a burst: equal weights alternate', () => {
    // Project 1 runs alone for 50 requests while project 2 (pass 0) has nothing queued.
    const shares = [{ projectId: 1, weight: 1, pass: 0 }, { projectId: 2, weight: 1, pass: 0 }];
    const alone = simulate(50, shares, () => [queue(1, { projectId: 1 })]);
    assert.equal(count(alone.picks, 1), 50);
    assert.equal(alone.state.projects.get(2)!.pass, 0, 'an idle project is not charged');
    // Project 2 comes back.
    const both = simulate(20, shares, () => [queue(1, { projectId: 1 }), queue(2, { projectId: 2 })], FAIR, offer({ maxTasks: 1 }), alone.state);
    assert.equal(count(both.picks, 2), 10, `picks after the return: ${both.picks.join('')}`);
    let run = 0;
    let longest = 0;
    for (const p of both.picks) {
      run = p === 2 ? run + 1 : 0;
      longest = Math.max(longest, run);
    }
    assert.ok(longest <= 1, `project 2 got ${longest} tasks in a row: ${both.picks.join('')}`);
  });

  it('a project back from idleness with weight 2 gets two of every three tasks, not more', () => {
    const shares = [{ projectId: 1, weight: 1, pass: 0 }, { projectId: 2, weight: 2, pass: 0 }];
    const alone = simulate(60, shares, () => [queue(1, { projectId: 1 })]);
    const both = simulate(30, shares, () => [queue(1, { projectId: 1 }), queue(2, { projectId: 2 })], FAIR, offer({ maxTasks: 1 }), alone.state);
    assert.equal(count(both.picks, 2), 20, `picks after the return: ${both.picks.join('')}`);
  });
});

describe('planClaim fair: packing', () => {
  it('on a 24-core host, larger tasks first (16 then 8 cores), where FIFO takes the earliest submitted small ones', () => {
    const GiB = 1024;
    const sizes = [1, 2, 4, 8, 16];
    const queues = sizes.map((c, i) => queue(i + 1, { resources: res(c, c * GiB), heads: heads(range((i + 1) * 100, 3)) }));
    const host = offer({ capacity: res(24, 96 * GiB, 100_000), free: res(24, 96 * GiB, 100_000) });
    const fair = planClaim(claim({ offer: host, queues }), FAIR);
    assert.deepEqual(pickedQueues(fair).map((q) => sizes[q - 1]), [16, 8]);
    const fifo = planClaim(claim({ offer: host, queues }), FIFO);
    assert.deepEqual(pickedQueues(fifo).map((q) => sizes[q - 1]), [1, 1, 1, 2, 2, 2, 4, 4, 4]);
  });

  it('larger first, then smaller ones fill the rest: 8, 8, 4, 4 on 24 cores, though the small ones were submitted first', () => {
    const queues = [
      queue(1, { resources: res(1, 1024), heads: heads(range(1, 30)) }),
      queue(2, { resources: res(2, 1024), heads: heads(range(40, 30)) }),
      queue(3, { resources: res(4, 1024), heads: heads(range(80, 3)) }),
      queue(4, { resources: res(8, 1024), heads: heads(range(90, 2)) }),
    ];
    const host = offer({ capacity: res(24, 96 * 1024, 100_000), free: res(24, 96 * 1024, 100_000) });
    const plan = planClaim(claim({ offer: host, queues }), FAIR);
    assert.deepEqual(pickedJobs(plan), [90, 91, 80, 81]);
  });

  it('on a part-used host, packing looks at what is free: the largest task that still fits goes first', () => {
    const queues = [queue(1, { resources: res(2, 512), heads: heads([1, 2]) }), queue(2, { resources: res(8, 512), heads: heads([3]) })];
    const host = offer({ capacity: res(24, 96 * 1024), free: res(6, 96 * 1024), maxTasks: 1 });
    assert.deepEqual(pickedJobs(planClaim(claim({ offer: host, queues }), FAIR)), [1]);
  });

  it('a memory-heavy task goes first where memory is what is left', () => {
    // 8 cores, 32 GiB, of which 4 cores and 24 GiB free: both tasks fit; the memory-heavy one
    // uses the resource the host has most of.
    const queues = [queue(1, { resources: res(2, 1024), heads: heads([1]) }), queue(2, { resources: res(1, 8192), heads: heads([2]) })];
    const host = offer({ capacity: res(8, 32768), free: res(4, 24576), maxTasks: 1 });
    assert.deepEqual(pickedJobs(planClaim(claim({ offer: host, queues }), FAIR)), [2]);
  });

  it('on a memory-bound host, 256 MiB and 1280 MiB apps are mixed: both kinds run, and memory is filled', () => {
    // 16 cores, 12 GiB. FIFO (the 256 MiB jobs were submitted first) fills the cores with 16
    // small tasks and leaves 8 GiB idle; the policy must run the 1280 MiB app too.
    const queues = [
      queue(1, { resources: res(1, 256), heads: heads(range(1, 40)) }),
      queue(2, { resources: res(1, 1280), heads: heads(range(100, 40)) }),
    ];
    const host = offer({ capacity: res(16, 12288, 100_000), free: res(16, 12288, 100_000) });
    const fifo = planClaim(claim({ offer: host, queues }), FIFO);
    assert.deepEqual([count(pickedQueues(fifo), 1), count(pickedQueues(fifo), 2)], [16, 0]);
    const fair = planClaim(claim({ offer: host, queues }), FAIR);
    const small = count(pickedQueues(fair), 1);
    const big = count(pickedQueues(fair), 2);
    assert.ok(small > 0 && big > 0, `${small} small, ${big} big`);
    assert.equal(small * 256 + big * 1280, 12288, 'memory is filled');
  });

  it('on a memory-bound host, 256 MiB and 1280 MiB apps are mixed so that cores and memory both fill (8 + 8)', () => {
    const queues = [
      queue(1, { resources: res(1, 256), heads: heads(range(1, 40)) }),
      queue(2, { resources: res(1, 1280), heads: heads(range(100, 40)) }),
    ];
    const host = offer({ capacity: res(16, 12288, 100_000), free: res(16, 12288, 100_000) });
    const fair = planClaim(claim({ offer: host, queues }), FAIR);
    assert.deepEqual([count(pickedQueues(fair), 1), count(pickedQueues(fair), 2)], [8, 8]);
  });

  it('packing breaks ties after image affinity: a held image beats a better fit', () => {
    const queues = [queue(1, { resources: res(4, 4096), heads: heads([1]) }), queue(2, { resources: res(1, 512), heads: heads([2]) })];
    const host = offer({ maxTasks: 1, images: new Set(['img2']) });
    assert.deepEqual(pickedJobs(planClaim(claim({ offer: host, queues }), FAIR)), [2]);
    assert.deepEqual(pickedJobs(planClaim(claim({ offer: offer({ maxTasks: 1 }), queues }), FAIR)), [1], 'without the image, the better fit');
  });
});

describe('planClaim fair: image affinity and starvation', () => {
  const waitedS = (s: number) => ({ submittedAt: NOW - s * SECOND });

  it('between equal heads, the queue whose image the host holds wins; without it, submission order decides', () => {
    const queues = [queue(1, { heads: heads([1]) }), queue(2, { heads: heads([2]) })];
    assert.deepEqual(pickedJobs(planClaim(claim({ offer: offer({ maxTasks: 1 }), queues }), FAIR)), [1]);
    assert.deepEqual(pickedJobs(planClaim(claim({ offer: offer({ maxTasks: 1, images: new Set(['img2']) }), queues }), FAIR)), [2]);
  });

  it('the image counts when held by digest as well as by reference', () => {
    const queues = [queue(1, { heads: heads([1]) }), queue(2, { images: ['repo/app:1', 'sha256:abc'], heads: heads([2]) })];
    assert.deepEqual(pickedJobs(planClaim(claim({ offer: offer({ maxTasks: 1, images: new Set(['sha256:abc']) }), queues }), FAIR)), [2]);
    assert.deepEqual(pickedJobs(planClaim(claim({ offer: offer({ maxTasks: 1, images: new Set(['repo/app:1']) }), queues }), FAIR)), [2]);
  });

  it('a queue whose head waited starvationSeconds longer beats the held image; one second less does not', () => {
    for (const order of [[1, 2], [2, 1]]) {
      const build = (olderWaitedS: number) => {
        const all = { 1: queue(1, { heads: heads([1], waitedS(olderWaitedS)) }), 2: queue(2, { heads: heads([2], waitedS(400)) }) } as Record<number, QueueView>;
        return claim({ offer: offer({ maxTasks: 1, images: new Set(['img2']) }), queues: order.map((i) => all[i]!) });
      };
      assert.deepEqual(pickedJobs(planClaim(build(1000), FAIR)), [1], `waited 600 s longer (queues in order ${order})`);
      assert.deepEqual(pickedJobs(planClaim(build(999), FAIR)), [2], `waited 599 s longer (queues in order ${order})`);
    }
  });

  it('the choice within a project does not depend on the order of the queues, and never falls on a head that waited starvationSeconds less than another', () => {
    const A = queue(1, { resources: res(1), heads: heads([1], waitedS(1800)) });
    const B = queue(2, { resources: res(1), heads: heads([2], waitedS(1400)) });
    const C = queue(3, { resources: res(2), heads: heads([3], waitedS(1000)) });
    const host = offer({ maxTasks: 1, images: new Set(['img2', 'img3']) });
    const picks = [[A, B, C], [A, C, B], [B, A, C], [B, C, A], [C, A, B], [C, B, A]].map((queues) => pickedJobs(planClaim(claim({ offer: host, queues }), FAIR))[0]);
    assert.equal(new Set(picks).size, 1, `picks by queue order: ${picks.join(', ')}`);
    assert.notEqual(picks[0], 3, 'C waited 800 s less than A');
  });

  it('with starvationSeconds 0, waiting never overrides affinity', () => {
    const queues = [queue(1, { heads: heads([1], waitedS(100_000)) }), queue(2, { heads: heads([2], waitedS(1)) })];
    const plan = planClaim(claim({ offer: offer({ maxTasks: 1, images: new Set(['img2']) }), queues }), options({ starvationSeconds: 0 }));
    assert.deepEqual(pickedJobs(plan), [2]);
  });

  it('a long wait also overrides packing', () => {
    const queues = [queue(1, { resources: res(1), heads: heads([1], waitedS(700)) }), queue(2, { resources: res(4, 4096), heads: heads([2], waitedS(10)) })];
    assert.deepEqual(pickedJobs(planClaim(claim({ offer: offer({ maxTasks: 1 }), queues }), FAIR)), [1]);
  });
});

describe('planClaim fair: reservations for starved jobs', () => {
  const starved = (id: number, over: Partial<JobHead> = {}) => head(id, { submittedAt: NOW - 700 * SECOND, ...over });
  // An 8-core host with 3 cores free; a starved 8-core job and plenty of 1-core jobs.
  const big = (over: Partial<QueueView> = {}) => queue(1, { resources: res(8, 1024), heads: [starved(100)], ...over });
  const small = (over: Partial<QueueView> = {}) => queue(2, { resources: res(1, 512), heads: heads(range(1, 20)), ...over });
  const busy = offer({ capacity: res(8, 16384), free: res(3, 8192) });

  it('a job that does not fit what is free, but fits the host, and would be overtaken by one starvationSeconds younger, gets the host reserved at once', () => {
    const plan = planClaim(claim({ offer: busy, queues: [big(), small()] }), FAIR);
    assert.equal(plan.reserve, 100);
    assert.deepEqual(pickedJobs(plan), [], 'the host takes nothing more: it starts draining now');
  });

  it('no reservation in a backlog submitted at once: nobody overtakes the large job by that much', () => {
    const plan = planClaim(claim({ offer: busy, queues: [big(), small({ heads: range(1, 20).map((id) => head(id, { submittedAt: NOW - 650 * SECOND })) })] }), FAIR);
    assert.equal(plan.reserve, undefined);
    assert.deepEqual(pickedJobs(plan), [1, 2, 3]);
  });

  it('the wait is measured from its queue entry to the next job\'s submission: exactly starvationSeconds earlier reserves, a second less does not', () => {
    // The small jobs entered their queue 10 s ago (the fixtures' default).
    const at = (s: number) => planClaim(claim({ offer: busy, queues: [big({ heads: [head(100, { submittedAt: NOW - s * SECOND })] }), small()] }), FAIR).reserve;
    assert.equal(at(610), 100);
    assert.equal(at(609), undefined);
  });

  it('a job back from a backoff must wait in its queue again before it reserves, however long ago it was submitted', () => {
    // The small jobs were submitted 10 s ago (the fixtures' default).
    const back = (inQueueS: number) => head(100, { submittedAt: NOW - 5000 * SECOND, queuedAt: NOW - inQueueS * SECOND });
    assert.equal(planClaim(claim({ offer: busy, queues: [big({ heads: [back(30)] }), small()] }), FAIR).reserve, undefined);
    assert.equal(planClaim(claim({ offer: busy, queues: [big({ heads: [back(700)] }), small()] }), FAIR).reserve, 100);
  });

  it('a retry in the middle of a batch submitted at once does not make the rest of the batch look starved', () => {
    // Served next: a small job of the batch, back from a backoff (queued just now, submitted with the rest).
    const retried = small({ heads: [head(1, { submittedAt: NOW - 5000 * SECOND, queuedAt: NOW })] });
    const plan = planClaim(claim({ offer: busy, queues: [big({ heads: [head(100, { submittedAt: NOW - 5000 * SECOND })] }), retried] }), FAIR);
    assert.equal(plan.reserve, undefined);
    assert.deepEqual(pickedJobs(plan), [1]);
  });

  it('while its submission keeps its place in line: the older job is served first among those that fit', () => {
    const host = offer({ maxTasks: 1 });
    const queues = [queue(1, { heads: [head(1, { submittedAt: NOW - 100 * SECOND })] }), queue(2, { heads: [head(2, { submittedAt: NOW - 5000 * SECOND, queuedAt: NOW })] })];
    assert.deepEqual(pickedJobs(planClaim(claim({ offer: host, queues }), FAIR)), [2]);
  });

  it('no reservation when starvationSeconds is 0', () => {
    const plan = planClaim(claim({ offer: busy, queues: [big({ heads: [starved(100, { submittedAt: 0 })] }), small()] }), options({ starvationSeconds: 0 }));
    assert.equal(plan.reserve, undefined);
  });

  it('no reservation for a starved job that fits what is free (it was just not picked)', () => {
    const plan = planClaim(claim({ offer: offer({ capacity: res(8, 16384), maxTasks: 0 }), queues: [big()] }), FAIR);
    assert.deepEqual(plan.picks, []);
    assert.equal(plan.reserve, undefined);
  });

  it('no reservation for a starved job of a queue this host does not suit (selector)', () => {
    const plan = planClaim(claim({ offer: busy, queues: [big({ selector: { gpu: 'yes' } }), small()] }), FAIR);
    assert.equal(plan.reserve, undefined);
  });

  it('a starved job reserved on another host is not reserved here; the next starved one is', () => {
    const queues = [big({ heads: [starved(100), starved(101)] }), small()];
    const plan = planClaim(claim({ offer: busy, queues, reservedElsewhere: new Set([100]) }), FAIR);
    assert.equal(plan.reserve, 101);
  });

  it('among starved jobs, the highest priority, then the longest wait, is reserved', () => {
    const queues = [
      queue(1, { resources: res(8), heads: [starved(100, { submittedAt: NOW - 5000 * SECOND })] }),
      queue(3, { resources: res(7), heads: [starved(101, { priority: 2, submittedAt: NOW - 700 * SECOND })] }),
      queue(4, { resources: res(6), heads: [starved(102, { priority: 2, submittedAt: NOW - 900 * SECOND })] }),
      small(),
    ];
    assert.equal(planClaim(claim({ offer: busy, queues }), FAIR).reserve, 102);
  });

  it('a reserved host takes nothing while the job does not fit, even work that would', () => {
    const plan = planClaim(claim({ offer: busy, queues: [big(), small()], reservation: 100 }), FAIR);
    assert.deepEqual(plan.picks, []);
    assert.equal(plan.reserve, undefined, 'the reservation is kept');
    assert.equal(plan.passes.size, 0);
  });

  it('once the job fits, it is taken first and the reservation cleared; the rest of the host then fills', () => {
    const host = offer({ capacity: res(10, 16384), free: res(10, 16384) });
    const plan = planClaim(claim({ offer: host, queues: [small(), big()], reservation: 100 }), FAIR);
    assert.deepEqual(pickedJobs(plan), [100, 1, 2]);
    assert.equal(plan.reserve, null);
  });

  it('the reserved job goes first even when its project is behind on fair share, and its project is charged', () => {
    const host = offer({ capacity: res(8, 16384), free: res(8, 16384) });
    const input = claim({
      offer: host,
      projects: projects({ projectId: 1, weight: 1, pass: 0 }, { projectId: 2, weight: 1, pass: 5000 }),
      queues: [small({ projectId: 1 }), big({ projectId: 2 })],
      reservation: 100,
    });
    const plan = planClaim(input, FAIR);
    assert.deepEqual(pickedJobs(plan), [100]);
    assert.equal(plan.passes.get(2), 5000 + 480, 'the whole 8-core host for 60 s');
  });

  it('a reservation for a job no longer among the heads is cleared, and the host takes work again', () => {
    const plan = planClaim(claim({ offer: busy, queues: [small()], reservation: 100 }), FAIR);
    assert.equal(plan.reserve, null);
    assert.deepEqual(pickedJobs(plan), [1, 2, 3]);
  });

  it('a reservation for a job past its deadline, or whose app this host now cools down from, is cleared', () => {
    const late = planClaim(claim({ offer: busy, queues: [big({ heads: [starved(100, { deadline: NOW })] }), small()], reservation: 100 }), FAIR);
    assert.equal(late.reserve, null);
    const cooled = planClaim(claim({ offer: offer({ ...busy, cooledApps: new Set([1]) }), queues: [big(), small()], reservation: 100 }), FAIR);
    assert.equal(cooled.reserve, null);
    assert.deepEqual(pickedJobs(cooled), [1, 2, 3]);
  });

  it('a reserved job that fits is still not taken when maxTasks is 0 (the reservation stays)', () => {
    const host = offer({ capacity: res(8, 16384), free: res(8, 16384), maxTasks: 0 });
    const plan = planClaim(claim({ offer: host, queues: [big()], reservation: 100 }), FAIR);
    assert.deepEqual(plan.picks, []);
    assert.equal(plan.reserve, undefined);
  });
});

describe('planClaim fifo', () => {
  it('strict (priority, id) order across queues and projects, first fit (a job that does not fit is passed over)', () => {
    const input = claim({
      offer: offer({ capacity: res(8, 16384), free: res(5, 16384) }),
      projects: projects({ projectId: 1, weight: 1, pass: 9999 }, { projectId: 2, weight: 1, pass: 0 }),
      queues: [
        queue(1, { projectId: 1, resources: res(1), heads: [head(5), head(9)] }),
        queue(2, { projectId: 2, resources: res(4), heads: [head(8, { priority: 1 }), head(4)] }),
        queue(3, { projectId: 2, resources: res(2), heads: [head(6), head(7)] }),
      ],
    });
    // Order: 8 (prio 1), 4, 5, 6, 7, 9. Free 5: 8 (4 cores) → 1 left; 4 no; 5 (1 core) → 0; rest no.
    assert.deepEqual(pickedJobs(planClaim(input, FIFO)), [8, 5]);
  });

  it('ignores fair share, image affinity and packing', () => {
    const input = claim({
      offer: offer({ maxTasks: 2, images: new Set(['img2']) }),
      projects: projects({ projectId: 1, weight: 1, pass: 1e9 }, { projectId: 2, weight: 10, pass: 0 }),
      queues: [queue(1, { projectId: 1, heads: heads([1, 2]) }), queue(2, { projectId: 2, resources: res(4, 8192), heads: heads([3]) })],
    });
    assert.deepEqual(pickedJobs(planClaim(input, FIFO)), [1, 2]);
  });

  it('no reservation for a starved job, and a host reservation neither blocks nor is cleared', () => {
    const queues = [queue(1, { resources: res(8), heads: [head(100, { submittedAt: 0 })] }), queue(2, { heads: heads(range(1, 5)) })];
    const busy = offer({ capacity: res(8, 16384), free: res(3, 16384) });
    const fresh = planClaim(claim({ offer: busy, queues }), FIFO);
    assert.equal(fresh.reserve, undefined);
    assert.deepEqual(pickedJobs(fresh), [1, 2, 3]);
    const reserved = planClaim(claim({ offer: busy, queues, reservation: 100 }), FIFO);
    assert.equal(reserved.reserve, undefined);
    assert.deepEqual(pickedJobs(reserved), [1, 2, 3]);
  });

  it('no passes and no cost, and the clock is passed through', () => {
    const plan = planClaim(claim({ virtualTime: 77, queues: [queue(1, { heads: heads([1]) })] }), FIFO);
    assert.equal(plan.passes.size, 0);
    assert.equal(plan.virtualTime, 77);
    assert.deepEqual(pickedJobs(plan), [1]);
  });
});
