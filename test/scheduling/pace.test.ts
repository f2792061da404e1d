import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { expectedMs, learnPace } from '../../src/scheduling/pace.js';

describe('learnPace', () => {
  it('the first finished task sets the pace: its duration over the queue\'s typical one', () => {
    assert.equal(learnPace(null, 300_000, 100_000), 3);
    assert.equal(learnPace(null, 50_000, 100_000), 0.5);
  });

  it('later ones move it by 30% of the difference', () => {
    assert.equal(learnPace(1, 300_000, 100_000), 0.7 * 1 + 0.3 * 3);
    assert.equal(learnPace(2, 100_000, 100_000), 0.7 * 2 + 0.3 * 1);
  });

  it('a queue with no typical duration yet teaches nothing', () => {
    assert.equal(learnPace(null, 300_000, null), null);
    assert.equal(learnPace(1.5, 300_000, null), 1.5);
    assert.equal(learnPace(1.5, 300_000, 0), 1.5);
  });

  it('one task counts at most 20 times slower or 20 times faster than typical', () => {
    assert.equal(learnPace(null, 10_000_000, 1000), 20);
    assert.equal(learnPace(null, 0, 1000), 0.05);
  });

  it('property: the pace stays within the bounds of one task\'s ratio, and moves towards each new one', () => {
    fc.assert(
      fc.property(
        fc.option(fc.double({ min: 0.05, max: 20, noNaN: true }), { nil: null }),
        fc.integer({ min: 0, max: 1e8 }),
        fc.integer({ min: 1, max: 1e7 }),
        (previous, duration, typical) => {
          const next = learnPace(previous, duration, typical)!;
          assert.ok(next >= 0.05 - 1e-12 && next <= 20 + 1e-12);
          const ratio = Math.min(20, Math.max(0.05, duration / typical));
          if (previous !== null) assert.ok(Math.abs(next - ratio) <= Math.abs(previous - ratio) + 1e-12);
        },
      ),
    );
  });
});

describe('expectedMs', () => {
  it('the typical duration times the pace; without a pace, the typical duration', () => {
    assert.equal(expectedMs(60_000, 2), 120_000);
    assert.equal(expectedMs(60_000, 0.5), 30_000);
    assert.equal(expectedMs(60_000, null), 60_000);
  });
});
