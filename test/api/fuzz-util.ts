import assert from 'node:assert/strict';
import fc from 'fast-check';

/**
 * Shared pieces of the fuzz suites (fuzz.test.ts, fuzz-routes.test.ts); not a test file itself.
 */

/** An HTTP answer as the fuzz suites see it. */
export interface FuzzAnswer {
  status: number;
  text: string;
  body: any;
}

/**
 * What every answer to a fuzzed request must be: a 2xx or a 4xx, never a 5xx; no stack trace,
 * no path into the code or the data dir; a 4xx carries the documented JSON error (except where
 * `bare` says the answer has no JSON body by design: a HEAD, an event stream).
 */
export function assertFuzzAnswer(r: FuzzAnswer, what: string, opts: { bare?: boolean; dataDir?: string } = {}): void {
  const ok = (r.status >= 200 && r.status < 300) || (r.status >= 400 && r.status < 500);
  assert.ok(ok, `${what} answered ${r.status}: ${r.text.slice(0, 500)}`);
  assert.doesNotMatch(r.text, /\n\s+at /, `${what}: stack trace in ${r.text.slice(0, 500)}`);
  assert.ok(!r.text.includes('node_modules'), `${what}: path in the answer`);
  if (opts.dataDir !== undefined) assert.ok(!r.text.includes(opts.dataDir), `${what}: the data dir in the answer`);
  if (r.status >= 400) {
    assert.doesNotMatch(r.text, /(?:\/work\/|\/src\/|\/dist\/)\S*\.[jt]s\b|\.[jt]s:\d+:\d+/, `${what}: source path in ${r.text.slice(0, 300)}`);
    if (opts.bare) return;
    assert.equal(typeof r.body?.error?.code, 'string', `${what}: ${r.text.slice(0, 300)}`);
    assert.equal(typeof r.body.error.message, 'string', `${what}: ${r.text.slice(0, 300)}`);
  }
}

/**
 * Every "METHOD /path" of fastify's router, from its printRoutes() tree (commonPrefix: false:
 * one node per registered path piece, its methods in brackets, children indented by 4).
 */
export function registeredRoutes(tree: string): string[] {
  const out: string[] = [];
  const stack: string[] = [];
  for (const line of tree.split('\n')) {
    const m = /^((?:[│ ] {3})*)[├└]── (.*?)(?: \(([A-Z, ]+)\))?$/.exec(line);
    if (!m) {
      assert.equal(line.trim(), '', `unparsed line of printRoutes: "${line}"`);
      continue;
    }
    const depth = m[1]!.length / 4;
    stack.length = depth;
    const path = (depth === 0 ? '' : stack[depth - 1]!) + m[2]!;
    stack.push(path);
    for (const method of m[3]?.split(', ') ?? []) out.push(`${method} ${path}`);
  }
  return out;
}

// ── hostile values ───────────────────────────────────────────────────────────

/** Path segments as they go into a URL (already encoded, or hostile as raw text). */
export const hostileSegment: fc.Arbitrary<string> = fc.oneof(
  {
    weight: 6,
    arbitrary: fc.constantFrom(
      '0', '-1', '-0', '+1', '1e3', '1.5', '0x10', '00000001', '9007199254740993', '99999999999999999999999', '1e309', 'NaN', 'Infinity',
      '%20', '..', '.', '%2e%2e', '%2E%2E%2F%2E%2E%2Fetc%2Fpasswd', '..%2f..%2fpackage.json', '..%5c..%5cpackage.json', '%00', 'a%00b', '%ff', '%', '%zz',
      '%E2%80%AE', '%C3%A9', '%F0%9F%92%A5', '__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'null', 'undefined', 'true', '%5B%5D', '%7B%7D',
      "'%3B%20DROP%20TABLE%20jobs%3B--", '%22', '%3Cscript%3E', 'a'.repeat(64), 'A'.repeat(65), 'f'.repeat(64), 'x'.repeat(4000),
    ),
  },
  { weight: 2, arbitrary: fc.oneof(fc.integer({ min: -(2 ** 31), max: -1 }), fc.integer({ min: 10_000_000 }), fc.bigInt({ min: 2n ** 53n, max: 2n ** 80n })).map(String) },
  { weight: 2, arbitrary: fc.oneof(fc.string({ maxLength: 20 }), fc.string({ unit: 'grapheme', maxLength: 10 }), fc.string({ unit: 'binary', maxLength: 10 })).map(encodeURIComponent) },
  { weight: 1, arbitrary: fc.double().map((d) => encodeURIComponent(String(d))) },
);

/** Scalars where a schema wants something else. */
export const hostileScalar: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom(null, true, false, 0, -1, 1e308, -1e308, 2 ** 53 + 1, 0.5, '', ' ', '0', '__proto__', 'constructor', '\u0000', '\u202e', 'é', '💥', [], {}, [null], { '': '' }),
  fc.string({ maxLength: 12 }),
  fc.integer(),
  fc.double(),
);

/** JSON text of an object whose keys are the prototype's (which JSON.stringify cannot write). */
export const prototypeKeys: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom('__proto__', 'constructor', 'prototype', '__defineGetter__', 'toString', 'hasOwnProperty'), fc.jsonValue({ maxDepth: 2 }))
  .map(([k, v]) => (k === 'constructor' ? `{"constructor":{"prototype":${JSON.stringify(v)}}}` : `{${JSON.stringify(k)}:${JSON.stringify(v)}}`));

/** Puts the members of an object's JSON text into another object's JSON text. */
export function mergeJsonText(into: string, members: string): string {
  if (!into.startsWith('{') || !members.startsWith('{')) return members;
  const inner = members.slice(1, -1);
  return into === '{}' ? `{${inner}}` : `{${inner},${into.slice(1)}}`;
}

/** Deeply nested JSON text (arrays or objects), `depth` levels. */
export const deepNesting: fc.Arbitrary<string> = fc
  .tuple(fc.constantFrom(64, 512, 5000, 20_000), fc.boolean())
  .map(([n, arrays]) => (arrays ? '['.repeat(n) + ']'.repeat(n) : '{"a":'.repeat(n) + '1' + '}'.repeat(n)));
