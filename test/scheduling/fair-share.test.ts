import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { UNKNOWN_DURATION_MS, charged, effectivePass, learnDuration, settledPass, taskCost } from '../../src/scheduling/fair-share.js';
import { res } from './fixtures.js';

const host = res(8, 16384, 100_000, 2); // 8 cores, 16 GiB, 2 GPUs

describe('taskCost', () => {
  it('is the dominant share of the host, in cores, times the expected duration in seconds', () => {
    assert.equal(taskCost(res(2, 1024), host, 120_000), 240); // cores dominate: 2/8 × 8 × 120
    assert.equal(taskCost(res(1, 8192), host, 60_000), 240); // memory dominates: 1/2 × 8 × 60
    assert.equal(taskCost(res(1, 1024, 0, 1), host, 10_000), 40); // a GPU dominates: 1/2 × 8 × 10
    assert.equal(taskCost(res(8, 16384, 0, 2), host, 1000), 8); // the whole host for a second
  });

  it('is proportional to the duration and to the dominant share', () => {
    assert.equal(taskCost(res(1), host, 30_000) * 2, taskCost(res(1), host, 60_000));
    assert.equal(taskCost(res(1), host, 60_000) * 4, taskCost(res(4), host, 60_000));
  });

  it('measures in cores of the host it lands on: one core costs the same on any host', () => {
    assert.equal(taskCost(res(1, 512), res(8, 65536), 60_000), 60);
    assert.equal(taskCost(res(1, 512), res(64, 262144), 60_000), 60);
  });

  it('disk does not count toward the share', () => {
    assert.equal(taskCost(res(1, 512, 100_000), host, 60_000), 60);
  });

  it('a queue with no history is charged 60 s', () => {
    assert.equal(UNKNOWN_DURATION_MS, 60_000);
    assert.equal(taskCost(res(1), host, null), 60);
  });

  it('is charged at least one second, so that instant tasks still count', () => {
    assert.equal(taskCost(res(1), host, 0), 1);
    assert.equal(taskCost(res(1), host, 999), 1);
    assert.equal(taskCost(res(1), host, 1001), 1.001);
  });

  it('a resource the host has none of is ignored rather than dividing by zero', () => {
    assert.equal(taskCost(res(2, 512, 0, 0), res(8, 16384, 1000, 0), 60_000), 120);
  });

  it('property: positive and finite for any task that fits a host', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 64_000 }), fc.integer({ min: 1, max: 1000 }), fc.option(fc.integer({ min: 0, max: 1e9 }), { nil: null }),
        (capMilli, pct, est) => {
          const cap = res(capMilli / 1000, 16384);
          const need = res(Math.max(0.001, Math.floor((capMilli * pct) / 1000) / 1000), 0);
          const c = taskCost(need, cap, est);
          assert.ok(Number.isFinite(c) && c > 0);
        },
      ),
    );
  });
});

describe('effectivePass', () => {
  it('a pass behind the clock starts from the clock', () => {
    assert.equal(effectivePass({ projectId: 1, weight: 1, pass: 10 }, 500), 500);
  });
  it('a pass ahead of the clock is kept', () => {
    assert.equal(effectivePass({ projectId: 1, weight: 1, pass: 900 }, 500), 900);
    assert.equal(effectivePass({ projectId: 1, weight: 3, pass: 500 }, 500), 500);
  });
});

describe('charged', () => {
  it('advances the pass by the cost over the weight', () => {
    assert.equal(charged(100, 60, 1), 160);
    assert.equal(charged(100, 60, 2), 130);
    assert.equal(charged(100, 60, 0.5), 220);
  });
  it('a weight of 0 charges enormously instead of dividing by zero', () => {
    const p = charged(100, 60, 0);
    assert.ok(Number.isFinite(p) && p >= 1e10);
  });
});

describe('settledPass', () => {
  // 1 core of an 8-core host, charged the default 60 s when handed out: 60.
  it('a task that ran shorter than charged gives the difference back', () => {
    assert.equal(settledPass(1000, 60, res(1), host, 30_000, 1), 970);
  });
  it('a task that ran longer pays the difference', () => {
    assert.equal(settledPass(1000, 60, res(1), host, 180_000, 1), 1120);
  });
  it('the difference is divided by the weight', () => {
    assert.equal(settledPass(1000, 60, res(1), host, 180_000, 2), 1060);
  });
  it('an exact estimate changes nothing', () => {
    assert.equal(settledPass(1000, 60, res(1), host, 60_000, 1), 1000);
  });
  it('a task that held its slot no time is still charged the one-second floor; a negative time counts as none', () => {
    assert.equal(settledPass(1000, 60, res(1), host, 0, 1), 941);
    assert.equal(settledPass(1000, 60, res(1), host, -5000, 1), 941);
  });
  it('charge and settlement together cost the project exactly the resource-time it held', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1000, max: 3_600_000 }), fc.integer({ min: 1000, max: 3_600_000 }), fc.integer({ min: 1, max: 4 }), (cores, estimated, held, weight) => {
        const charge = taskCost(res(cores), host, estimated);
        const after = settledPass(charged(0, charge, weight), charge, res(cores), host, held, weight);
        // cores/8 of the 8-core host = `cores` core-seconds per second held.
        assert.ok(Math.abs(after - (cores * held) / 1000 / weight) < 1e-6, `${after}`);
      }),
    );
  });
});

describe('learnDuration', () => {
  it('the first observation is taken as it is', () => {
    assert.equal(learnDuration(null, 1234), 1234);
  });
  it('later ones move the mean a fifth of the way', () => {
    assert.equal(learnDuration(1000, 2000), 1200);
    assert.equal(learnDuration(1000, 0), 800);
    assert.equal(learnDuration(5000, 5000), 5000);
  });
  it('converges on a steady duration', () => {
    let d: number | null = null;
    d = learnDuration(d, 100_000);
    for (let i = 0; i < 60; i++) d = learnDuration(d, 10_000);
    assert.ok(Math.abs(d - 10_000) < 1, `${d}`);
  });
});
