import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { alignment, dominantShare } from '../../src/scheduling/packing.js';
import { res } from './fixtures.js';

const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} ≠ ${b}`);

describe('alignment', () => {
  const cap = res(8, 16384, 1000, 2);

  it('is the dot product of demand and free capacity, each as a fraction of the host', () => {
    // cores 2/8 × 4/8 + memory 4096/16384 × 8192/16384 + GPUs 1/2 × 2/2
    close(alignment(res(2, 4096, 0, 1), res(4, 8192, 1000, 2), cap), 0.125 + 0.125 + 0.5);
  });

  it('ignores disk', () => {
    close(alignment(res(2, 4096, 900), res(4, 8192, 10), cap), alignment(res(2, 4096, 0), res(4, 8192, 1000), cap));
  });

  it('on an empty host, a larger task scores higher', () => {
    assert.ok(alignment(res(4, 2048), cap, cap) > alignment(res(2, 2048), cap, cap));
    assert.ok(alignment(res(2, 4096), cap, cap) > alignment(res(2, 2048), cap, cap));
  });

  it('a task heavy in the resource the host has most of left scores higher', () => {
    const memoryLeft = res(2, 14336, 1000, 0); // 2 of 8 cores, 14 of 16 GiB free
    const coreHeavy = res(2, 1024);
    const memoryHeavy = res(1, 8192);
    assert.ok(alignment(memoryHeavy, memoryLeft, cap) > alignment(coreHeavy, memoryLeft, cap));
    const coresLeft = res(7, 2048, 1000, 0);
    assert.ok(alignment(coreHeavy, coresLeft, cap) > alignment(memoryHeavy, coresLeft, cap));
  });

  it('a resource the host has none of adds nothing (no division by zero)', () => {
    const noGpu = res(8, 16384, 1000, 0);
    close(alignment(res(8, 0), noGpu, noGpu), 1);
    close(alignment(res(0, 0, 0, 0), noGpu, noGpu), 0);
    assert.equal(alignment(res(1, 1), res(0, 0, 0, 0), res(0, 0, 0, 0)), 0);
  });
});

describe('dominantShare', () => {
  const cap = res(8, 16384, 1000, 2);
  it('is the largest share over cores, memory and GPUs', () => {
    assert.equal(dominantShare(res(2, 1024), cap), 0.25);
    assert.equal(dominantShare(res(1, 8192), cap), 0.5);
    assert.equal(dominantShare(res(1, 1024, 0, 2), cap), 1);
  });
  it('ignores disk', () => {
    assert.equal(dominantShare(res(2, 1024, 1000), cap), 0.25);
  });
  it('ignores a resource the host has none of', () => {
    assert.equal(dominantShare(res(2, 1024, 0, 1), res(8, 16384, 1000, 0)), 0.25);
    assert.equal(dominantShare(res(1, 1), res(0, 0, 0, 0)), 0);
  });
  it('property: between 0 and 1 for a task that fits, and 1 for a task that fills the host on some resource', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 64 }), fc.integer({ min: 1, max: 65536 }), fc.integer({ min: 0, max: 4 }), fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), (cores, mem, gpus, fc1, fm) => {
        const c = res(cores, mem, 1, gpus);
        const need = res(cores * fc1, Math.floor(mem * fm), 0, 0);
        const s = dominantShare(need, c);
        assert.ok(s >= 0 && s <= 1);
        assert.equal(dominantShare(res(cores, 0, 0, 0), c), 1);
      }),
    );
  });
});
