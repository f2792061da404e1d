import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  describeMismatch, holdsImage, mismatch, runtimeFor, shortfall, takeFrom, type Placement,
} from '../../src/scheduling/placement.js';
import { offer, res } from './fixtures.js';

function placement(over: Partial<Placement> = {}): Placement {
  return { appId: 1, resources: res(1), platforms: [], runtimes: ['docker'], selector: {}, images: ['repo/app:1'], maxRuntimeSeconds: 3600, ...over };
}

describe('mismatch', () => {
  it('walltime: an offer with little time left refuses apps whose runs may take longer', () => {
    assert.deepEqual(mismatch(offer({ maxRuntimeSeconds: 600 }), placement({ maxRuntimeSeconds: 3600 })), { kind: 'walltime', need: 3600, have: 600 });
    assert.equal(mismatch(offer({ maxRuntimeSeconds: 3600 }), placement({ maxRuntimeSeconds: 3600 })), null, 'exactly the time left');
    assert.equal(mismatch(offer(), placement({ maxRuntimeSeconds: 86_400 })), null, 'no limit');
    assert.equal(describeMismatch({ kind: 'walltime', need: 3600, have: 600 }), 'runs may take 3600 s, the host has 600 s left');
  });

  it('null when the host can run the placement', () => {
    assert.equal(mismatch(offer(), placement()), null);
    assert.equal(mismatch(offer(), placement({ resources: res(8, 16384, 100_000) })), null, 'exactly the whole host');
  });

  it('platform: one of the image\'s platforms, or any when it lists none', () => {
    assert.deepEqual(mismatch(offer(), placement({ platforms: ['linux/arm64'] })), { kind: 'platform', need: ['linux/arm64'], have: 'linux/amd64' });
    assert.equal(mismatch(offer(), placement({ platforms: ['linux/arm64', 'linux/amd64'] })), null);
  });

  it('runtime: some runtime in common', () => {
    assert.deepEqual(mismatch(offer({ runtimes: ['docker'] }), placement({ runtimes: ['native'] })), { kind: 'runtime', need: ['native'], have: ['docker'] });
    assert.deepEqual(mismatch(offer({ runtimes: [] }), placement()), { kind: 'runtime', need: ['docker'], have: [] });
    assert.equal(mismatch(offer({ runtimes: ['native', 'docker'] }), placement({ runtimes: ['docker'] })), null);
  });

  it('selector: each key with the same value; names the first key that differs', () => {
    const host = offer({ labels: { zone: 'a', gpu: 'a100' } });
    assert.equal(mismatch(host, placement({ selector: { zone: 'a' } })), null);
    assert.deepEqual(mismatch(host, placement({ selector: { zone: 'b' } })), { kind: 'selector', key: 'zone', need: 'b', have: 'a' });
    assert.deepEqual(mismatch(host, placement({ selector: { rack: '1' } })), { kind: 'selector', key: 'rack', need: '1', have: null });
    assert.deepEqual(mismatch(host, placement({ selector: { zone: 'a', gpu: 'v100' } })), { kind: 'selector', key: 'gpu', need: 'v100', have: 'a100' });
  });

  it('a label named like an Object.prototype member is not found on a host without it', () => {
    assert.deepEqual(mismatch(offer(), placement({ selector: { constructor: 'x' } })), { kind: 'selector', key: 'constructor', need: 'x', have: null });
  });

  it('cool-down: the app, not others', () => {
    assert.deepEqual(mismatch(offer({ cooledApps: new Set([1]) }), placement()), { kind: 'cooldown' });
    assert.equal(mismatch(offer({ cooledApps: new Set([2]) }), placement()), null);
  });

  it('capacity, not what is free: a busy host still suits a job it could run when idle', () => {
    const busy = offer({ capacity: res(8, 16384, 1000, 1), free: res(0, 0, 0, 0) });
    assert.equal(mismatch(busy, placement({ resources: res(8, 16384, 1000, 1) })), null);
    assert.deepEqual(mismatch(busy, placement({ resources: res(9) })), { kind: 'resource', resource: 'cores', need: 9, have: 8 });
    assert.deepEqual(mismatch(busy, placement({ resources: res(1, 512, 1001) })), { kind: 'resource', resource: 'diskMiB', need: 1001, have: 1000 });
    assert.deepEqual(mismatch(busy, placement({ resources: res(1, 512, 1, 2) })), { kind: 'resource', resource: 'gpus', need: 2, have: 1 });
  });

  it('reports platform before runtime before selector before cool-down before resources', () => {
    const host = offer({ runtimes: ['docker'], cooledApps: new Set([1]), capacity: res(1, 1) });
    const all = placement({ platforms: ['linux/arm64'], runtimes: ['native'], selector: { a: 'b' }, resources: res(9) });
    assert.equal(mismatch(host, all)?.kind, 'platform');
    assert.equal(mismatch(host, { ...all, platforms: [] })?.kind, 'runtime');
    assert.equal(mismatch(host, { ...all, platforms: [], runtimes: ['docker'] })?.kind, 'selector');
    assert.equal(mismatch(host, { ...all, platforms: [], runtimes: ['docker'], selector: {} })?.kind, 'cooldown');
    assert.equal(mismatch(host, { ...all, platforms: [], runtimes: ['docker'], selector: {}, appId: 2 })?.kind, 'resource');
  });
});

describe('shortfall', () => {
  it('the first resource short, in the order cores, memory, disk, GPUs', () => {
    assert.equal(shortfall(res(1, 1, 1, 0), res(1, 1, 1, 0)), null);
    assert.deepEqual(shortfall(res(2, 2, 2, 2), res(1, 1, 1, 1)), { kind: 'resource', resource: 'cores', need: 2, have: 1 });
    assert.deepEqual(shortfall(res(1, 2, 2, 2), res(1, 1, 1, 1)), { kind: 'resource', resource: 'memoryMiB', need: 2, have: 1 });
    assert.deepEqual(shortfall(res(1, 1, 2, 2), res(1, 1, 1, 1)), { kind: 'resource', resource: 'diskMiB', need: 2, have: 1 });
    assert.deepEqual(shortfall(res(1, 1, 1, 2), res(1, 1, 1, 1)), { kind: 'resource', resource: 'gpus', need: 2, have: 1 });
  });
});

describe('runtimeFor', () => {
  it('the host\'s most preferred runtime among the app\'s', () => {
    assert.equal(runtimeFor(offer({ runtimes: ['native', 'docker'] }), placement({ runtimes: ['docker', 'native'] })), 'native');
    assert.equal(runtimeFor(offer({ runtimes: ['docker', 'native'] }), placement({ runtimes: ['native', 'docker'] })), 'docker');
    assert.equal(runtimeFor(offer({ runtimes: ['native', 'docker'] }), placement({ runtimes: ['docker'] })), 'docker');
    assert.equal(runtimeFor(offer({ runtimes: ['native'] }), placement({ runtimes: ['docker'] })), undefined);
  });
});

describe('holdsImage', () => {
  it('by reference or by digest', () => {
    const p = placement({ images: ['repo/app:1', 'sha256:abc'] });
    assert.equal(holdsImage(offer({ images: new Set(['repo/app:1']) }), p), true);
    assert.equal(holdsImage(offer({ images: new Set(['sha256:abc']) }), p), true);
    assert.equal(holdsImage(offer({ images: new Set(['repo/app:2', 'sha256:def']) }), p), false);
    assert.equal(holdsImage(offer(), p), false);
  });
});

describe('takeFrom', () => {
  it('subtracts every resource', () => {
    assert.deepEqual(takeFrom(res(8, 16384, 1000, 2), res(2, 1024, 100, 1)), res(6, 15360, 900, 1));
  });

  it('keeps cores to the millicore, so that 0.1-core jobs add up', () => {
    let free = res(0.3, 1000);
    for (let i = 0; i < 3; i++) {
      assert.ok(free.cores >= 0.1, `the ${i + 1}th 0.1-core job fits (free ${free.cores})`);
      free = takeFrom(free, res(0.1, 1));
    }
    assert.equal(free.cores, 0);
  });

  it('property: for whole millicores, exactly the difference', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000 }), fc.integer({ min: 0, max: 1_000_000 }), (a, b) => {
        assert.equal(takeFrom(res(a / 1000), res(b / 1000)).cores, (a - b) / 1000);
      }),
    );
  });

  it('never lets repeated fractional jobs take more cores than were free', () => {
    let free = res(1, 1000);
    let taken = 0;
    while (free.cores >= 0.3334) {
      free = takeFrom(free, res(0.3334, 1));
      taken += 0.3334;
    }
    assert.ok(taken <= 1, `${taken} cores taken from 1`);
  });
});

describe('describeMismatch', () => {
  it('says why, in words', () => {
    assert.equal(describeMismatch({ kind: 'resource', resource: 'memoryMiB', need: 2048, have: 1024 }), 'needs 2048 MiB of memory, has 1024');
    assert.equal(describeMismatch({ kind: 'resource', resource: 'cores', need: 9, have: 8 }), 'needs 9 cores, has 8');
    assert.equal(describeMismatch({ kind: 'platform', need: ['linux/arm64', 'linux/arm/v7'], have: 'linux/amd64' }), 'needs platform linux/arm64 or linux/arm/v7, is linux/amd64');
    assert.equal(describeMismatch({ kind: 'runtime', need: ['native'], have: [] }), 'needs runtime native, offers none');
    assert.equal(describeMismatch({ kind: 'selector', key: 'zone', need: 'a', have: null }), 'needs label zone=a, has no zone');
    assert.equal(describeMismatch({ kind: 'selector', key: 'zone', need: 'a', have: 'b' }), 'needs label zone=a, has zone=b');
    assert.match(describeMismatch({ kind: 'cooldown' }), /cooling down/);
  });
});
