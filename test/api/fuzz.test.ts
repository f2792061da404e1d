import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { startTestServer, type TestResponse, type TestServer } from '../helpers/server.js';
import { assertFuzzAnswer } from './fuzz-util.js';
import { createApp, sha256, uploadBlob } from './util.js';

/**
 * Property-based fuzzing of the POST routes: whatever the body, the answer is a 2xx or a 4xx
 * with a JSON error, never a 5xx or a stack trace, and the server stays healthy. Bounded to a
 * few hundred requests per property so the file runs in seconds.
 */

let s: TestServer;
let digest: string;
const P = '/v1/projects/default';
const ROUTES = [`${P}/apps`, `${P}/jobs`, `${P}/batches`, `${P}/apps/fz/versions`, `${P}/workflows`, `${P}/workflows/validate`];
// FUZZ_RUNS raises the bound for a longer hunt by hand; the suite keeps it small.
const RUNS = { numRuns: Number(process.env.FUZZ_RUNS ?? 200) };

before(async () => {
  // A low batch limit keeps the occasional valid random batch cheap.
  s = await startTestServer({ limits: { maxBatchJobs: 200 } });
  await createApp(s, 'default', 'fz');
  digest = await uploadBlob(s, 'default', Buffer.from('fuzz input'));
});
after(async () => {
  await s.stop();
});

const check = (r: TestResponse, what: string): void => assertFuzzAnswer(r, what);

const route = fc.constantFrom(...ROUTES);

test('random JSON values as bodies get 2xx or 4xx', async () => {
  await fc.assert(
    fc.asyncProperty(route, fc.jsonValue({ maxDepth: 4 }), async (path, value) => {
      const r = await s.call('POST', path, { body: JSON.stringify(value) });
      check(r, `POST ${path} ${JSON.stringify(value).slice(0, 200)}`);
    }),
    RUNS,
  );
});

test('random strings as JSON bodies get 2xx or 4xx', async () => {
  const text = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.string({ unit: 'binary-ascii' }), fc.json().map((j) => j.slice(0, -1)));
  await fc.assert(
    fc.asyncProperty(route, text, async (path, body) => {
      const r = await s.call('POST', path, { raw: body, headers: { 'content-type': 'application/json' } });
      check(r, `POST ${path} ${JSON.stringify(body).slice(0, 200)}`);
    }),
    RUNS,
  );
});

test('random bytes with random content types get 2xx or 4xx', async () => {
  const type = fc.constantFrom('application/json', 'text/plain', 'application/octet-stream', 'application/x-www-form-urlencoded', 'application/json; charset=latin1', 'multipart/form-data');
  await fc.assert(
    fc.asyncProperty(route, type, fc.uint8Array({ maxLength: 200 }), async (path, ct, bytes) => {
      const r = await s.call('POST', path, { raw: bytes as unknown as BodyInit, headers: { 'content-type': ct } });
      check(r, `POST ${path} (${ct}, ${bytes.length} bytes)`);
    }),
    RUNS,
  );
});

/** Values that are mostly right, sometimes nearly right, now and then anything at all. */
const any = fc.jsonValue({ maxDepth: 2 });
const mix = <T>(good: fc.Arbitrary<T>) => fc.oneof({ weight: 12, arbitrary: good }, { weight: 1, arbitrary: any });
const smallString = fc.string({ maxLength: 12 });
const odd = fc.constantFrom('BOXGRID_X', '..', '.', 'a/b', '', '1X', '-x', '__proto__x', 'constructor', 'a b', 'Ä');
const key = (good: fc.Arbitrary<string>) => fc.oneof({ weight: 8, arbitrary: good }, { weight: 1, arbitrary: odd }, { weight: 1, arbitrary: smallString });
const envKey = key(fc.stringMatching(/^[A-Z_][A-Z0-9_]{0,6}$/));
const labelKey = key(fc.stringMatching(/^[a-z0-9][a-z0-9._/-]{0,6}$/));
const inputKey = key(fc.stringMatching(/^[a-z0-9_-][a-z0-9._-]{0,6}$/));
const names = mix(fc.oneof({ weight: 6, arbitrary: fc.constant('fz') }, fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,8}$/), smallString));
const version = mix(fc.oneof({ weight: 4, arbitrary: fc.constant(1) }, fc.integer({ min: -1, max: 4 })));
const resources = mix(fc.record(
  {
    cores: mix(fc.oneof({ weight: 6, arbitrary: fc.double({ min: 0.01, max: 64, noNaN: true }) }, fc.double({ noNaN: true }))),
    memoryMiB: mix(fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 1 << 16 }) }, fc.integer())),
    diskMiB: mix(fc.integer({ min: 0, max: 1 << 20 })),
    gpus: mix(fc.integer({ min: -1, max: 70 })),
  },
  { requiredKeys: [] },
));
const deadline = mix(fc.oneof(
  { weight: 4, arbitrary: fc.date({ min: new Date(Date.now() + 86_400_000), max: new Date(8.64e15), noInvalidDate: true }).map((d) => d.toISOString()) },
  fc.date({ min: new Date(-8.64e15), max: new Date(8.64e15), noInvalidDate: true }).map((d) => d.toISOString()),
  fc.constantFrom('2999-01-01', 'tomorrow', '', '+275760-09-13T00:00:00.000Z', '2001-01-01T00:00:00Z', 'December 17, 2995', '1', 'NaN'),
  smallString,
));
const jobFields = {
  args: mix(fc.array(fc.oneof(smallString, fc.constantFrom('{x}', '{{x}}', '{y}', '}{')), { maxLength: 4 })),
  env: mix(fc.dictionary(envKey, fc.oneof(smallString, fc.constant('{x}')), { maxKeys: 4 })),
  inputs: mix(fc.dictionary(inputKey, fc.oneof({ weight: 4, arbitrary: fc.constant(sha256('fuzz input')) }, fc.constant(sha256('absent')), smallString), { maxKeys: 3 })),
  resources,
  priority: mix(fc.integer({ min: -1100, max: 1100 })),
  deadline,
  labels: mix(fc.dictionary(labelKey, smallString, { maxKeys: 3 })),
};
const jobTemplate = fc.record(jobFields, { requiredKeys: [] });
const range = fc.double({ min: -1e3, max: 1e3, noNaN: true });
const dimension = fc.oneof(
  fc.record({ from: mix(range), to: mix(range), step: mix(fc.oneof(fc.double({ min: 0.5, max: 1e3, noNaN: true }), fc.double({ min: -1, max: 1e6, noNaN: true }))) }, { requiredKeys: ['from', 'to'] }),
  fc.record({ from: fc.integer({ min: -20, max: 20 }), to: fc.integer({ min: -20, max: 20 }) }),
  fc.record({ values: mix(fc.array(fc.oneof(smallString, fc.double({ noNaN: true }), fc.integer()), { maxLength: 6 })) }),
);
const sweepName = fc.oneof({ weight: 6, arbitrary: fc.stringMatching(/^[a-z_][a-z0-9_]{0,3}$/) }, smallString);
const appFields = {
  description: mix(smallString),
  image: mix(fc.oneof({ weight: 4, arbitrary: fc.constantFrom('sci/fz:1', `sci/fz@sha256:${'a'.repeat(64)}`, 'reg:5000/a/b:c', 'busybox') }, smallString)),
  imageDigest: mix(fc.oneof(fc.constant(`sha256:${'a'.repeat(64)}`), fc.constant(`sha256:${'b'.repeat(64)}`), smallString)),
  command: jobFields.args,
  resources,
  maxRuntimeSeconds: mix(fc.integer({ min: 0, max: 3_000_000 })),
  maxAttempts: mix(fc.integer({ min: 0, max: 101 })),
  replicas: mix(fc.integer({ min: 0, max: 17 })),
  quorum: mix(fc.integer({ min: 0, max: 17 })),
  checkpointing: mix(fc.boolean()),
  platforms: mix(fc.array(fc.oneof({ weight: 4, arbitrary: fc.constantFrom('linux/amd64', 'linux/arm64/v8') }, smallString), { maxLength: 3 })),
};
const structured = fc.oneof(
  fc.record({ path: fc.constant(`${P}/jobs`), body: fc.record({ app: names, appVersion: version, ...jobFields }, { requiredKeys: ['app'] }) }),
  fc.record({
    path: fc.constant(`${P}/batches`),
    body: fc.oneof(
      ...(['jobs', 'count', 'sweep'] as const).map((form) =>
        fc
          .tuple(
            fc.record(
              {
                app: names, appVersion: version, labels: jobFields.labels, template: mix(jobTemplate),
                jobs: mix(fc.array(mix(jobTemplate), { minLength: 1, maxLength: 5 })), count: mix(fc.integer({ min: -1, max: 250 })),
                sweep: mix(fc.dictionary(sweepName, dimension, { minKeys: 1, maxKeys: 3 })),
              },
              { requiredKeys: ['app', form] },
            ),
            fc.nat(3),
          )
          // Mostly one form only; now and then the others join it.
          .map(([b, n]) => (n === 0 ? b : Object.fromEntries(Object.entries(b).filter(([k]) => k === form || !['jobs', 'count', 'sweep'].includes(k))))),
      ),
    ),
  }),
  fc.record({ path: fc.constant(`${P}/apps`), body: fc.record({ name: names, ...appFields }, { requiredKeys: ['name', 'image'] }) }),
  fc.record({ path: fc.constant(`${P}/apps/fz/versions`), body: fc.record(appFields, { requiredKeys: [] }) }),
);

test('workflow specs of random text, and random specs of the right shape, get 2xx or 4xx with every problem placed', async () => {
  const step = fc.record(
    {
      app: fc.oneof(fc.constant('fz'), fc.constant('fz@1'), smallString),
      args: fc.array(smallString, { maxLength: 3 }),
      needs: fc.array(fc.constantFrom('a', 'b', 'c', 'zz'), { maxLength: 2 }),
      params: fc.dictionary(fc.constantFrom('x', 'y'), fc.oneof(smallString, fc.constantFrom('steps.a.outputs.v', 'steps.b.outputs.f'))),
      outputs: fc.dictionary(fc.constantFrom('v', 'f'), fc.oneof(fc.constant({ value: 'v.txt' }), fc.constant({ file: 'f.txt' }), fc.constant({ files: '*.txt' }))),
      forEach: fc.oneof(fc.constant({ list: [1, 2] }), fc.constant({ files: 'steps.a.outputs.f', as: 'in.txt' }), fc.constant({ values: 'steps.b.outputs.v' })),
      retries: fc.integer({ min: -1, max: 101 }),
    },
    { requiredKeys: ['app'] },
  );
  const spec = fc.record({ steps: fc.dictionary(fc.constantFrom('a', 'b', 'c'), step, { minKeys: 1 }), onFailure: fc.constantFrom('stop', 'continue', 'never') }, { requiredKeys: ['steps'] });
  const source = fc.oneof(fc.string(), fc.string({ unit: 'binary' }), spec.map((x) => JSON.stringify(x, null, 2)));
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(`${P}/workflows`, `${P}/workflows/validate`), source, async (path, text) => {
      const r = await s.call('POST', path, { body: { source: text } });
      check(r, `POST ${path} ${JSON.stringify(text).slice(0, 200)}`);
      for (const p of r.body?.error?.problems ?? []) assert.ok(p.line >= 1 && p.column >= 1 && p.message.length > 0, JSON.stringify(p));
    }),
    RUNS,
  );
});

test('near-valid structured bodies get 2xx or 4xx, and 2xx answers are consistent', async () => {
  let accepted = 0;
  await fc.assert(
    fc.asyncProperty(structured, fc.option(fc.stringMatching(/^[a-z0-9-]{1,20}$/)), async ({ path, body }, key) => {
      const r = await s.call('POST', path, { body, ...(key === null ? {} : { headers: { 'idempotency-key': key } }) });
      check(r, `POST ${path} ${JSON.stringify(body).slice(0, 300)}`);
      if (process.env.FUZZ_DEBUG) console.log(r.status, path, r.text.slice(0, 120));
      if (r.status < 300) {
        accepted++;
        if (path.endsWith('/jobs') || path.endsWith('/batches')) {
          assert.equal(typeof r.body.jobCount, 'number');
          assert.equal(typeof r.body.replayed, 'boolean');
          if (r.body.jobIds) assert.equal(r.body.jobIds.length, r.body.jobCount);
        } else {
          assert.equal(typeof r.body.version, 'number');
        }
      }
    }),
    { numRuns: Math.round(RUNS.numRuns * 1.5) },
  );
  assert.ok(accepted > 0, 'no structured body was ever accepted: the generator is too far from valid');
});

test('after the fuzzing the server is healthy and still serves its data', async () => {
  assert.deepEqual((await s.call('GET', '/healthz', { token: null })).body, { status: 'ok' });
  assert.deepEqual((await s.call('GET', '/readyz', { token: null })).body, { status: 'ready' });
  const jobs = await s.call('GET', `${P}/jobs?limit=1000`);
  assert.equal(jobs.status, 200);
  for (const j of jobs.body.jobs) assert.equal(typeof j.id, 'number');
  const batches = await s.call('GET', `${P}/batches?limit=1000`);
  assert.equal(batches.status, 200);
  for (const b of batches.body.batches) {
    const d = await s.call('GET', `${P}/batches/${b.id}`);
    assert.equal(d.status, 200);
    const total = Object.values(d.body.counts as Record<string, number>).reduce((x, y) => x + y, 0);
    assert.equal(total, b.size, `batch ${b.id} has ${total} jobs, says ${b.size}`);
  }
  const apps = await s.call('GET', `${P}/apps`);
  assert.equal(apps.status, 200);
  assert.ok(apps.body.apps.some((a: { name: string }) => a.name === 'fz'));
  assert.equal((await s.call('HEAD', `${P}/blobs/${digest}`)).status, 200);
});
