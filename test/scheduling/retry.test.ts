import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { OUTCOME_KINDS, type OutcomeKind } from '../../src/domain/outcomes.js';
import { nextHealth, retryDelayMs, type HostAppHealth } from '../../src/scheduling/retry.js';
import { NOW } from './fixtures.js';

describe('retryDelayMs', () => {
  const o = { backoffBaseSeconds: 10, backoffMaxSeconds: 600 };

  it('doubles from the base with each attempt', () => {
    assert.deepEqual([1, 2, 3, 4, 5, 6].map((a) => retryDelayMs(a, o)), [10_000, 20_000, 40_000, 80_000, 160_000, 320_000]);
  });

  it('caps at backoffMaxSeconds, however many attempts', () => {
    assert.equal(retryDelayMs(7, o), 600_000);
    assert.equal(retryDelayMs(8, o), 600_000);
    assert.equal(retryDelayMs(31, o), 600_000);
    assert.equal(retryDelayMs(1000, o), 600_000);
    assert.equal(retryDelayMs(Number.MAX_SAFE_INTEGER, o), 600_000);
  });

  it('a cap below the base caps the first retry too', () => {
    assert.equal(retryDelayMs(1, { backoffBaseSeconds: 10, backoffMaxSeconds: 5 }), 5000);
  });

  it('a fractional base keeps its fraction', () => {
    assert.equal(retryDelayMs(2, { backoffBaseSeconds: 0.5, backoffMaxSeconds: 600 }), 1000);
  });

  it('a base of 0 disables backoff', () => {
    for (const a of [1, 2, 10]) assert.equal(retryDelayMs(a, { backoffBaseSeconds: 0, backoffMaxSeconds: 600 }), 0);
  });

  it('no attempt yet, no wait', () => {
    assert.equal(retryDelayMs(0, o), 0);
    assert.equal(retryDelayMs(-1, o), 0);
  });

  it('property: never negative, never above the cap, and never shorter after a later attempt', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200 }), fc.integer({ min: 0, max: 3600 }), fc.integer({ min: 0, max: 86_400 }), (attempt, base, max) => {
        const p = { backoffBaseSeconds: base, backoffMaxSeconds: max };
        const d = retryDelayMs(attempt, p);
        assert.ok(d >= 0 && d <= max * 1000);
        assert.ok(retryDelayMs(attempt + 1, p) >= d);
        if (base > 0 && base * 2 ** (attempt - 1) <= max) assert.equal(d, base * 2 ** (attempt - 1) * 1000);
      }),
    );
  });
});

describe('nextHealth', () => {
  const o = { hostFailureLimit: 3, hostCooldownSeconds: 3600 };
  const FAIL = 'failed_where_others_succeeded' as const;

  it('a success resets the failure count (and leaves a running cool-down as it is)', () => {
    assert.deepEqual(nextHealth({ failures: 2, cooldownUntil: null }, 'succeeded', o, NOW), { failures: 0, cooldownUntil: null });
    assert.deepEqual(nextHealth({ failures: 1, cooldownUntil: NOW + 5 }, 'succeeded', o, NOW), { failures: 0, cooldownUntil: NOW + 5 });
  });

  it('a failure another host proved needless counts: the limit-th in a row starts a cool-down and resets the count', () => {
    let h: HostAppHealth = { failures: 0, cooldownUntil: null };
    h = nextHealth(h, FAIL, o, NOW);
    assert.deepEqual(h, { failures: 1, cooldownUntil: null });
    h = nextHealth(h, FAIL, o, NOW + 1);
    assert.deepEqual(h, { failures: 2, cooldownUntil: null });
    h = nextHealth(h, FAIL, o, NOW + 2);
    assert.deepEqual(h, { failures: 0, cooldownUntil: NOW + 2 + 3600_000 });
  });

  it('a success between failures starts the count again', () => {
    let h: HostAppHealth = { failures: 0, cooldownUntil: null };
    for (const k of [FAIL, FAIL, 'succeeded', FAIL, FAIL] as const) h = nextHealth(h, k, o, NOW);
    assert.deepEqual(h, { failures: 2, cooldownUntil: null });
    h = nextHealth(h, FAIL, o, NOW + 7);
    assert.deepEqual(h, { failures: 0, cooldownUntil: NOW + 7 + 3600_000 });
  });

  it('with a limit of 1, the first failure cools the host down', () => {
    assert.deepEqual(nextHealth({ failures: 0, cooldownUntil: null }, FAIL, { hostFailureLimit: 1, hostCooldownSeconds: 60 }, NOW), { failures: 0, cooldownUntil: NOW + 60_000 });
  });

  it('a failure that ends a run again after a cool-down starts a new one from now', () => {
    const h = nextHealth({ failures: 2, cooldownUntil: NOW - 1000 }, FAIL, o, NOW);
    assert.deepEqual(h, { failures: 0, cooldownUntil: NOW + 3600_000 });
  });
});
