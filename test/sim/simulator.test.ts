import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { lowerBound, timeToDo } from '../../src/sim/lower-bound.js';
import { Random } from '../../src/sim/random.js';
import type { Scenario, SimHost, SimJob } from '../../src/sim/scenario.js';
import { allScenarios, buildScenario } from '../../src/sim/scenarios.js';
import { simulate, type SimResult } from '../../src/sim/simulator.js';

/**
 * The simulator drives the real service layer, so these tests run whole (small) grids. They
 * check the simulator's own promises — reproducible, every job ends once, vanished hosts'
 * tasks are lost and run again, the lower bound is right — not how good the policy is (that is
 * the `sim` benchmark's business).
 */

/** Small enough for a test (a few hosts, a few hundred jobs), same shape as the benchmark's. */
const TINY = { scale: 0.004 };

/** What must not differ between two runs of one seed (wall-clock timings may). */
function figures(r: SimResult): unknown {
  const { wallSeconds: _w, calls, ...rest } = r;
  return { ...rest, calls: Object.fromEntries(Object.entries(calls).map(([k, v]) => [k, v.n])) };
}

function host(over: Partial<SimHost> = {}): SimHost {
  return { cores: 1, memoryMiB: 4096, diskMiB: 10_000, speed: 1, joinAt: 0, ...over };
}

/** One project, one 1-core app, one batch of `jobs` at time 0. */
function handMade(hosts: SimHost[], jobs: SimJob[], failureRate = 0): Scenario {
  return {
    name: 'hand-made', description: 'test', seed: 7, projects: [{ name: 'p', weight: 1 }],
    apps: [{ name: 'a', project: 'p', cores: 1, memoryMiB: 512, diskMiB: 1024, maxAttempts: 5 }],
    hosts, batches: [{ at: 0, app: 'a', jobs }], failureRate,
  };
}

describe('simulator: lower bound', () => {
  it('integrates capacity over joins and speeds, and takes the longest task on the host that finishes it first', () => {
    // A: 4 cores at speed 1 from 0; B: 4 cores at speed 2 from 100 s. Ten 1-core 100 s tasks = 1000 core-s.
    // Cores: 0–100 s does 400, then 12 per second: 600 more by 150 s. Memory (512 MiB each): 512,000 MiB·s;
    // 0–100 s does 409,600, then 12,288 per second: by 108.33 s. Longest task: 100 s on A, 150 s on B.
    const hosts = [host({ cores: 4, memoryMiB: 4096 }), host({ cores: 4, memoryMiB: 4096, speed: 2, joinAt: 100 })];
    const jobs = Array.from({ length: 10 }, () => ({ cores: 1, memoryMiB: 512, seconds: 100 }));
    const b = lowerBound(hosts, jobs, 0);
    assert.equal(b.coresSeconds, 150);
    assert.ok(Math.abs(b.memorySeconds - (100 + 102_400 / 12_288)) < 1e-9, String(b.memorySeconds));
    assert.equal(b.longestTaskSeconds, 100);
    assert.deepEqual([b.seconds, b.binding], [150, 'cores']);

    // 2 GiB per task: memory binds. 2,048,000 MiB·s: 409,600 by 100 s, the rest at 12,288 per second.
    const heavy = lowerBound(hosts, jobs.map((j) => ({ ...j, memoryMiB: 2048 })), 0);
    assert.equal(heavy.binding, 'memory');
    assert.ok(Math.abs(heavy.seconds - (100 + 1_638_400 / 12_288)) < 1e-9, String(heavy.seconds));

    // One 500 s task: the longest task binds (it finishes first on B: 100 + 250 s).
    const long = lowerBound(hosts, [...jobs, { cores: 1, memoryMiB: 512, seconds: 500 }], 0);
    assert.deepEqual([long.seconds, long.binding], [350, 'longest task']);
  });

  it('counts only hosts that are there: leaves, joins after the start, a start after joins', () => {
    const hosts = [host({ cores: 4, leave: { at: 50, how: 'vanish' } }), host({ cores: 4 })];
    // 0–50 s at 8 cores does 400; the remaining 200 at 4 cores takes 50 s more.
    assert.equal(timeToDo(600, hosts, (h) => h.cores * h.speed, 0), 100);
    // Counted from 20 s: 30 s at 8 (240), then 360 at 4: 90 s more.
    assert.equal(timeToDo(600, hosts, (h) => h.cores * h.speed, 20), 120);
    assert.equal(timeToDo(0, hosts, (h) => h.cores, 0), 0);
    assert.equal(timeToDo(600, [host({ cores: 4, leave: { at: 50, how: 'vanish' } })], (h) => h.cores, 0), Infinity);
    // A task no host that stays long enough can finish has no finite bound either.
    assert.equal(lowerBound([host({ leave: { at: 50, how: 'release' } })], [{ cores: 1, memoryMiB: 1, seconds: 100 }], 0).seconds, Infinity);
  });
});

describe('simulator: random numbers and scenarios', () => {
  it('a seed gives one stream; another seed another', () => {
    const a = new Random(42);
    const b = new Random(42);
    const xs = Array.from({ length: 100 }, () => a.next());
    assert.deepEqual(xs, Array.from({ length: 100 }, () => b.next()));
    assert.notDeepEqual(xs, Array.from({ length: 100 }, () => new Random(43).next()));
    assert.ok(xs.every((x) => x >= 0 && x < 1));
    assert.deepEqual(new Set(new Random(1).sample(10, 10)), new Set(Array.from({ length: 10 }, (_, i) => i)));
  });

  it('builds the same scenario from the same seed, and sizes it by scale', () => {
    assert.deepEqual(buildScenario('churn', TINY), buildScenario('churn', TINY));
    assert.notDeepEqual(buildScenario('churn', { ...TINY, seed: 1 }), buildScenario('churn', { ...TINY, seed: 2 }));
    const small = buildScenario('mixed-cores', { scale: 0.1 });
    const large = buildScenario('mixed-cores', { scale: 0.2 });
    assert.equal(large.hosts.length, 2 * small.hosts.length);
    const jobs = (s: Scenario): number => s.batches.reduce((n, b) => n + b.jobs.length, 0);
    assert.ok(Math.abs(jobs(large) / jobs(small) - 2) < 0.1, `${jobs(small)} → ${jobs(large)} jobs`);
  });
});

describe('simulator: runs', () => {
  for (const policy of ['fifo', 'fair'] as const) {
    it(`the same seed gives identical figures; different seeds differ (${policy})`, async () => {
      // Churn: joins, leaves, releases, failures and the server's jitter all draw on the seed.
      const first = await simulate(buildScenario('churn', TINY), { policy });
      const again = await simulate(buildScenario('churn', TINY), { policy });
      assert.deepEqual(figures(again), figures(first));
      const other = await simulate(buildScenario('churn', { ...TINY, seed: 999 }), { policy });
      assert.notEqual(other.makespanSeconds, first.makespanSeconds);
      assert.notDeepEqual(figures(other), figures(first));
    });
  }

  for (const policy of ['fifo', 'fair'] as const) {
    it(`every job of every scenario ends exactly once (${policy})`, async () => {
      for (const scenario of allScenarios(TINY)) {
        const total = scenario.batches.reduce((n, b) => n + b.jobs.length, 0);
        let withSuccess = 0;
        const r = await simulate(scenario, {
          policy,
          inspect: async ({ store, jobIds }) => {
            assert.equal(new Set(jobIds).size, total);
            for (const id of jobIds) {
              const tasks = await store.listTasks(id);
              assert.ok(tasks.length > 0, `${scenario.name}: job ${id} never ran`);
              if (tasks.some((t) => t.state === 'succeeded')) withSuccess++;
            }
          },
        });
        assert.equal(withSuccess, r.jobsSucceeded, `${scenario.name}: jobs with a successful task`);
        assert.equal(r.jobs, total, scenario.name);
        assert.equal(r.jobsSucceeded + r.jobsFailed, total, scenario.name);
        assert.ok(r.makespanSeconds > 0 && Number.isFinite(r.ratio) && r.ratio >= 1, `${scenario.name}: ratio ${r.ratio}`);
        assert.ok(r.utilisation > 0 && r.utilisation <= 1, `${scenario.name}: utilisation ${r.utilisation}`);
        if (scenario.failureRate === 0) assert.equal(r.jobsFailed, 0, scenario.name);
      }
    });
  }

  it('a vanished host stops calling: its tasks are lost when their leases run out and run again elsewhere', async () => {
    // Two 1-core hosts, two 1000 s jobs; host 0 vanishes at 500 s. Its task is lost after the
    // lease (600 s from its last heartbeat, found by a sweep), and the job runs on host 1 after
    // the other job: it ends a little after 2 × 1000 s + backoff.
    const scenario = handMade(
      [host({ leave: { at: 500, how: 'vanish' } }), host()],
      [{ cores: 1, memoryMiB: 512, seconds: 1000 }, { cores: 1, memoryMiB: 512, seconds: 1000 }],
    );
    let checked = false;
    const r = await simulate(scenario, {
      policy: 'fifo',
      inspect: async ({ store, jobIds, vanishedHostIds }) => {
        assert.equal(vanishedHostIds.size, 1);
        const tasks = (await Promise.all(jobIds.map((id) => store.listTasks(id)))).flat();
        const lost = tasks.filter((t) => t.state === 'lost');
        assert.equal(lost.length, 1);
        assert.ok(vanishedHostIds.has(lost[0]!.hostId));
        const rerun = tasks.filter((t) => t.jobId === lost[0]!.jobId && t.state === 'succeeded');
        assert.equal(rerun.length, 1);
        assert.ok(!vanishedHostIds.has(rerun[0]!.hostId));
        assert.equal(rerun[0]!.attempt, 2);
        checked = true;
      },
    });
    assert.ok(checked);
    assert.deepEqual([r.jobsSucceeded, r.tasks.lost, r.tasks.succeeded], [2, 1, 2]);
    assert.ok(r.makespanSeconds > 2000 && r.makespanSeconds < 2000 + 600, `makespan ${r.makespanSeconds}`);
    // Capacity: host 0 for 500 s, host 1 until the end; useful work: the two successful tasks.
    assert.ok(Math.abs(r.utilisation - 2000 / (500 + r.makespanSeconds)) < 1e-9, `utilisation ${r.utilisation}`);
  });

  it('the vanishing-hosts scenario loses tasks on the vanished hosts only, and every job still succeeds', async () => {
    const r = await simulate(buildScenario('vanishing-hosts', TINY), {
      policy: 'fifo',
      inspect: async ({ store, jobIds, vanishedHostIds }) => {
        assert.ok(vanishedHostIds.size > 0);
        for (const id of jobIds) {
          const tasks = await store.listTasks(id);
          for (const t of tasks.filter((x) => x.state === 'lost')) {
            assert.ok(vanishedHostIds.has(t.hostId), `job ${id}: task ${t.id} lost on host ${t.hostId}, which did not vanish`);
            assert.ok(tasks.some((x) => x.state === 'succeeded' && x.hostId !== t.hostId), `job ${id} did not run again elsewhere`);
          }
        }
      },
    });
    assert.ok(r.tasks.lost > 0, 'some tasks were lost');
    assert.equal(r.jobsSucceeded, r.jobs);
  });

  it('a host that is stopped hands its tasks back: no lease runs out, no attempt is spent', async () => {
    const scenario = handMade([host({ leave: { at: 500, how: 'release' } }), host()], [{ cores: 1, memoryMiB: 512, seconds: 1000 }]);
    const r = await simulate(scenario, {
      policy: 'fifo',
      inspect: async ({ store, jobIds }) => {
        const tasks = await store.listTasks(jobIds[0]!);
        assert.deepEqual(tasks.map((t) => [t.state, t.attempt]), [['aborted', 1], ['succeeded', 1]]);
      },
    });
    assert.deepEqual([r.tasks.lost, r.tasks.aborted, r.jobsSucceeded], [0, 1, 1]);
    assert.ok(r.makespanSeconds >= 1500 && r.makespanSeconds < 1500 + 180, `makespan ${r.makespanSeconds}`);
  });

  it('refuses to report figures when jobs never end', async () => {
    // The only host vanishes before its task ends: nothing can ever finish the job.
    const scenario = handMade([host({ leave: { at: 100, how: 'vanish' } })], [{ cores: 1, memoryMiB: 512, seconds: 1000 }]);
    await assert.rejects(simulate(scenario, { policy: 'fifo', maxSimulatedSeconds: 7200 }), /1 of 1 jobs never ended/);
  });
});
