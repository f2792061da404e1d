import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { BoxgridError } from '../../src/domain/errors.js';
import { expandSweep, parseSweepArg, substitute, sweepSize, type SweepDimension, type SweepSpec } from '../../src/domain/sweep.js';

function invalidRequest(field?: string | RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof BoxgridError, `expected a BoxgridError, got ${String(e)}`);
    assert.equal(e.code, 'invalid_request');
    if (typeof field === 'string') assert.equal(e.field, field);
    else if (field) assert.match(e.message, field);
    return true;
  };
}

const values = (d: SweepDimension, limit = 1_000_000) => expandSweep({ x: d }, limit).map((p) => p.x);

describe('expandSweep: cartesian product', () => {
  it('varies the first dimension slowest', () => {
    assert.deepEqual(expandSweep({ a: { values: [1, 2] }, b: { values: ['x', 'y', 'z'] } }, 100), [
      { a: 1, b: 'x' }, { a: 1, b: 'y' }, { a: 1, b: 'z' },
      { a: 2, b: 'x' }, { a: 2, b: 'y' }, { a: 2, b: 'z' },
    ]);
  });

  it('follows the spec key order, not alphabetical order', () => {
    assert.deepEqual(expandSweep({ z: { from: 1, to: 2 }, a: { values: ['p', 'q'] } }, 100), [
      { z: 1, a: 'p' }, { z: 1, a: 'q' }, { z: 2, a: 'p' }, { z: 2, a: 'q' },
    ]);
  });

  it('handles three dimensions', () => {
    const pts = expandSweep({ a: { values: [0, 1] }, b: { values: [0, 1] }, c: { values: [0, 1] } }, 100);
    assert.deepEqual(pts.map((p) => `${p.a}${p.b}${p.c}`), ['000', '001', '010', '011', '100', '101', '110', '111']);
  });

  it('a single-value dimension multiplies by one', () => {
    assert.deepEqual(expandSweep({ a: { values: ['only'] }, b: { from: 3, to: 4 } }, 10), [{ a: 'only', b: 3 }, { a: 'only', b: 4 }]);
  });

  it('keeps list values as given, strings and numbers alike', () => {
    assert.deepEqual(values({ values: ['a', 1, 2.5, '3'] }), ['a', 1, 2.5, '3']);
  });
});

describe('expandSweep: ranges', () => {
  it('steps by 1 by default and includes both ends', () => {
    assert.deepEqual(values({ from: 1, to: 5 }), [1, 2, 3, 4, 5]);
    assert.deepEqual(values({ from: 7, to: 7 }), [7]);
    assert.deepEqual(values({ from: -2, to: 2 }), [-2, -1, 0, 1, 2]);
  });

  it('0..1:0.1 gives 11 exact decimals ending at 1 (no float drift)', () => {
    const v = values({ from: 0, to: 1, step: 0.1 });
    assert.equal(v.length, 11);
    assert.deepEqual(v, [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1]);
    assert.equal(v[10], 1);
  });

  it('0..0.3:0.1 includes 0.3 even though 0.1 + 0.2 !== 0.3', () => {
    assert.deepEqual(values({ from: 0, to: 0.3, step: 0.1 }), [0, 0.1, 0.2, 0.3]);
  });

  it('decimal starts and steps keep their precision', () => {
    assert.deepEqual(values({ from: 1.25, to: 2, step: 0.25 }), [1.25, 1.5, 1.75, 2]);
    assert.deepEqual(values({ from: 0.5, to: 2.5 }), [0.5, 1.5, 2.5]);
    assert.deepEqual(values({ from: -1, to: 1, step: 0.5 }), [-1, -0.5, 0, 0.5, 1]);
    assert.deepEqual(values({ from: 0.7, to: 1.3, step: 0.2 }), [0.7, 0.9, 1.1, 1.3]);
    assert.deepEqual(values({ from: 0.01, to: 0.05, step: 0.01 }), [0.01, 0.02, 0.03, 0.04, 0.05]);
  });

  it('stops at the last value not past the end when the step does not divide the range', () => {
    assert.deepEqual(values({ from: 0, to: 1, step: 0.3 }), [0, 0.3, 0.6, 0.9]);
    assert.deepEqual(values({ from: 1, to: 10, step: 4 }), [1, 5, 9]);
  });

  it('many 0.1 steps stay exact', () => {
    const v = values({ from: 0, to: 100, step: 0.1 });
    assert.equal(v.length, 1001);
    assert.equal(v[1000], 100);
    for (let i = 0; i <= 1000; i++) assert.equal(v[i], Number((i / 10).toFixed(1)));
  });

  it('very small steps written in exponent form still produce distinct values', () => {
    // String(0.00000001) === '1e-8' has no '.', so decimalsOf returns 0 and toFixed(0) rounds every value to 0.
    const v = values({ from: 0, to: 0.0000001, step: 0.00000001 });
    assert.equal(v.length, 11);
    assert.equal(new Set(v).size, 11, `values collapsed: ${JSON.stringify(v)}`);
    assert.equal(v[10], 0.0000001);
  });
});

describe('expandSweep: validation and limits', () => {
  it('refuses an empty spec', () => {
    assert.throws(() => expandSweep({}, 10), invalidRequest('sweep'));
  });

  it('refuses a dimension with no values', () => {
    assert.throws(() => expandSweep({ x: { values: [] } }, 10), invalidRequest('sweep/x'));
  });

  it('refuses non-positive or non-finite steps', () => {
    for (const step of [0, -1, -0.1, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.throws(() => expandSweep({ x: { from: 0, to: 1, step } }, 10), invalidRequest('sweep/x/step'), String(step));
    }
  });

  it('refuses a range that ends before it starts', () => {
    assert.throws(() => expandSweep({ x: { from: 2, to: 1 } }, 10), invalidRequest('sweep/x'));
  });

  it('refuses bad parameter names and accepts good ones', () => {
    for (const name of ['1x', 'a-b', 'a b', '', 'é', 'x'.repeat(65)]) {
      assert.throws(() => expandSweep({ [name]: { values: [1] } }, 10), invalidRequest(), JSON.stringify(name));
    }
    for (const name of ['x', '_', 'X_1', 'a'.repeat(64)]) {
      assert.equal(expandSweep({ [name]: { values: [1] } }, 10).length, 1, name);
    }
  });

  it('enforces the limit on one dimension and on the product, inclusively', () => {
    assert.equal(expandSweep({ x: { from: 1, to: 10 } }, 10).length, 10);
    assert.throws(() => expandSweep({ x: { from: 1, to: 11 } }, 10), invalidRequest(/more than the limit of 10/));
    assert.throws(() => expandSweep({ x: { values: Array.from({ length: 11 }, (_, i) => i) } }, 10), invalidRequest(/more than 10 jobs/));
    assert.equal(expandSweep({ a: { from: 1, to: 5 }, b: { from: 1, to: 4 } }, 20).length, 20);
    assert.throws(() => expandSweep({ a: { from: 1, to: 5 }, b: { from: 1, to: 5 } }, 20), invalidRequest('sweep'));
    assert.throws(() => sweepSize({ a: { from: 1, to: 5 }, b: { from: 1, to: 5 } }, 20), invalidRequest('sweep'));
  });

  it('refuses a huge range before expanding it', () => {
    const t = Date.now();
    assert.throws(() => expandSweep({ x: { from: 0, to: 1e12 } }, 100_000), invalidRequest('sweep/x'));
    assert.throws(() => expandSweep({ a: { from: 0, to: 1e5 }, b: { from: 0, to: 1e5 }, c: { from: 0, to: 1e5 } }, 100_000), invalidRequest());
    assert.ok(Date.now() - t < 1000);
  });

  it('sweepSize counts without expanding', () => {
    assert.equal(sweepSize({ a: { values: [1, 2, 3] }, b: { from: 0, to: 1, step: 0.1 } }, 1000), 33);
    assert.equal(sweepSize({}, 10), 1);
  });
});

describe('expandSweep: property', () => {
  const NAMES = ['a', 'b', 'c', 'x', 'y_1', '_z'];
  const STEPS = [0.1, 0.2, 0.25, 0.5, 1, 2, 3];

  /** A dimension and its independently computed size. */
  const dimension: fc.Arbitrary<{ d: SweepDimension; size: number }> = fc.oneof(
    fc.array(fc.oneof(fc.integer({ min: -50, max: 50 }), fc.string({ minLength: 1, maxLength: 3 })), { minLength: 1, maxLength: 5 })
      .map((vs) => ({ d: { values: vs }, size: vs.length })),
    fc.record({
      from10: fc.integer({ min: -100, max: 100 }),
      step: fc.constantFrom(...STEPS),
      n: fc.integer({ min: 1, max: 8 }),
      slack: fc.constantFrom(0, 0.4), // a fraction of a step past the last value
      explicitStep: fc.boolean(),
    }).map(({ from10, step, n, slack, explicitStep }) => {
      const from = from10 / 10;
      const to = Number((from + (n - 1 + slack) * step).toFixed(4));
      const d: SweepDimension = explicitStep || step !== 1 ? { from, to, step } : { from, to };
      return { d, size: n };
    }),
  );

  const spec = fc.uniqueArray(fc.constantFrom(...NAMES), { minLength: 1, maxLength: 4 }).chain((names) =>
    fc.tuple(...names.map(() => dimension)).map((dims) => ({
      spec: Object.fromEntries(names.map((n, i) => [n, dims[i]!.d])) as SweepSpec,
      sizes: dims.map((x) => x.size),
      names,
    })),
  );

  it('expandSweep(spec).length === sweepSize(spec) === product of dimension sizes (or both refuse)', () => {
    fc.assert(
      fc.property(spec, fc.integer({ min: 1, max: 5000 }), ({ spec, sizes, names }, limit) => {
        const product = sizes.reduce((a, b) => a * b, 1);
        if (product > limit) {
          assert.throws(() => sweepSize(spec, limit), invalidRequest());
          assert.throws(() => expandSweep(spec, limit), invalidRequest());
          return;
        }
        const points = expandSweep(spec, limit);
        assert.equal(sweepSize(spec, limit), product);
        assert.equal(points.length, product);
        for (const p of points) assert.deepEqual(Object.keys(p), names);
      }),
      { numRuns: 300 },
    );
  });

  it('range values start at from, rise by step, and never pass to', () => {
    fc.assert(
      fc.property(dimension, ({ d, size }) => {
        if ('values' in d) return;
        const v = values(d);
        assert.equal(v.length, size);
        assert.equal(v[0], d.from);
        const step = d.step ?? 1;
        for (let i = 0; i < v.length; i++) {
          assert.equal(v[i], Number((d.from + i * step).toFixed(4)), `value ${i}`);
          assert.ok((v[i] as number) <= d.to + 1e-9);
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('substitute', () => {
  it('replaces {name} with the value', () => {
    assert.equal(substitute('--x={x} --y={y}', { x: 0.1, y: 'b' }), '--x=0.1 --y=b');
    assert.equal(substitute('{a}{a}{b_2}', { a: 1, b_2: -3 }), '11-3');
    assert.equal(substitute('out/{run}/part-{i}.dat', { run: 'r1', i: 7 }), 'out/r1/part-7.dat');
  });

  it('leaves unknown names and non-name braces alone', () => {
    assert.equal(substitute('{nope} {x}', { x: 1 }), '{nope} 1');
    assert.equal(substitute('{1x} {} { x } {x-y}', { x: 1 }), '{1x} {} { x } {x-y}');
    assert.equal(substitute('a { b } c', {}), 'a { b } c');
    assert.equal(substitute('no braces', { x: 1 }), 'no braces');
  });

  it('{{ and }} are literal braces', () => {
    assert.equal(substitute('{{x}}', { x: 1 }), '{x}');
    assert.equal(substitute('{{{x}}}', { x: 1 }), '{1}');
    assert.equal(substitute('awk "{{print $1}}" {x}', { x: 'f' }), 'awk "{print $1}" f');
    assert.equal(substitute('}}{{', {}), '}{');
  });

  it('does not re-substitute inside substituted values', () => {
    assert.equal(substitute('{a}', { a: '{b}', b: 'no' }), '{b}');
    assert.equal(substitute('{a}', { a: '$&' }), '$&', 'replacement patterns are not interpreted');
  });

  it('a point from expandSweep substitutes into every placeholder', () => {
    const pts = expandSweep({ x: { from: 0, to: 0.2, step: 0.1 }, name: { values: ['a', 'b'] } }, 10);
    assert.deepEqual(pts.map((p) => substitute('{name}:{x}', p)), ['a:0', 'b:0', 'a:0.1', 'b:0.1', 'a:0.2', 'b:0.2']);
  });
});

describe('parseSweepArg', () => {
  it('refuses malformed ranges instead of taking them as a one-value list', () => {
    for (const bad of ['x=1..a', 'x=1..2:-1', 'x=..5', 'x=1..2:0x1']) {
      assert.throws(() => parseSweepArg(bad), (e: unknown) => e instanceof BoxgridError && e.code === 'invalid_request' && /FROM\.\.TO/.test(e.message), bad);
    }
  });

  it('parses integer ranges', () => {
    assert.deepEqual(parseSweepArg('x=1..100'), ['x', { from: 1, to: 100 }]);
    assert.deepEqual(parseSweepArg('x=-5..-1'), ['x', { from: -5, to: -1 }]);
  });

  it('parses ranges with a step', () => {
    assert.deepEqual(parseSweepArg('x=0..1:0.1'), ['x', { from: 0, to: 1, step: 0.1 }]);
    assert.deepEqual(parseSweepArg('t=1.5..3:2'), ['t', { from: 1.5, to: 3, step: 2 }]);
  });

  it('parses lists, turning numeric items into numbers', () => {
    assert.deepEqual(parseSweepArg('y=a,b,c'), ['y', { values: ['a', 'b', 'c'] }]);
    assert.deepEqual(parseSweepArg('y=1,2.5,-3,a'), ['y', { values: [1, 2.5, -3, 'a'] }]);
    assert.deepEqual(parseSweepArg('y=solo'), ['y', { values: ['solo'] }]);
    assert.deepEqual(parseSweepArg('y=7'), ['y', { values: [7] }]);
    assert.deepEqual(parseSweepArg('y=a=b,c'), ['y', { values: ['a=b', 'c'] }], 'only the first = separates the name');
  });

  it('refuses text without a name', () => {
    for (const bad of ['x', '=1..2', '', '=']) assert.throws(() => parseSweepArg(bad), invalidRequest('sweep'), JSON.stringify(bad));
  });

  it('refuses empty list items', () => {
    for (const bad of ['y=', 'y=a,,b', 'y=a,', 'y=,a']) assert.throws(() => parseSweepArg(bad), invalidRequest('sweep/y'), bad);
  });

  it('round-trips into expandSweep', () => {
    const spec = Object.fromEntries([parseSweepArg('x=0..1:0.1'), parseSweepArg('m=a,b')]);
    assert.equal(expandSweep(spec, 100).length, 22);
    assert.deepEqual(expandSweep(spec, 100).at(-1), { x: 1, m: 'b' });
  });

  it('a step of zero parses but is refused on expansion', () => {
    const [name, d] = parseSweepArg('x=0..1:0');
    assert.throws(() => expandSweep({ [name]: d }, 10), invalidRequest('sweep/x/step'));
  });
});
