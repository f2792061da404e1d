import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestResponse, type TestServer } from '../helpers/server.js';
import { allJobIds, assertError, assertNoLeak, batchCount, createApp, sha256 } from './util.js';

/**
 * Bad input: each is a 4xx whose JSON error names the field, nothing is stored, and no answer
 * is a 5xx or shows a stack trace. Every answer of this file passes through `call`, which
 * checks the last part for all of them.
 */

let s: TestServer;
const P = '/v1/projects/default';
const answers: Array<[string, TestResponse]> = [];
let jobsBefore: number[];
let batchesBefore: number;

async function call(method: string, path: string, opts: Parameters<TestServer['call']>[2] = {}): Promise<TestResponse> {
  const r = await s.call(method, path, opts);
  answers.push([`${method} ${path}`, r]);
  return r;
}

/** POSTs `body` and expects a 4xx naming `field`. */
async function rejects(path: string, body: unknown, status: number, code: string, field: string, opts: { messageNames?: string | RegExp } = {}): Promise<TestResponse> {
  const r = await call('POST', path, { body });
  assertError(r, status, code, field, opts);
  return r;
}

before(async () => {
  s = await startTestServer();
  await createApp(s, 'default', 'sim');
  await createApp(s, 'default', 'other');
  const seed = await s.call('POST', `${P}/batches`, { body: { app: 'sim', count: 3 } });
  assert.equal(seed.status, 201);
  jobsBefore = await allJobIds(s, 'default');
  batchesBefore = await batchCount(s, 'default');
});

after(async () => {
  await s.stop();
});

describe('malformed bodies', () => {
  const routes = [`${P}/jobs`, `${P}/batches`, `${P}/apps`, '/v1/users', '/v1/projects', '/v1/tokens'];

  test('malformed JSON is 400 naming the body', async () => {
    for (const path of routes) {
      for (const text of ['{"app":', '{app: "sim"}', "{'a': 1}", '{"a":1}}', '\u0000', '{"a":1,}']) {
        const r = await call('POST', path, { body: text });
        assertError(r, 400, 'invalid_request', 'body');
        assert.match(r.body.error.message, /JSON/);
      }
    }
    const m = await call('PUT', `${P}/members/admin`, { body: '{"role":' });
    assertError(m, 400, 'invalid_request', 'body');
  });

  test('an empty JSON body is 400 naming the body', async () => {
    for (const path of routes) {
      assertError(await call('POST', path, { raw: '', headers: { 'content-type': 'application/json' } }), 400, 'invalid_request', 'body');
    }
  });

  test('JSON that is not an object is 400 naming the body', async () => {
    for (const path of routes) {
      for (const v of ['null', '[]', '"sim"', '42', 'true']) {
        const r = await call('POST', path, { body: v });
        assertError(r, 400, 'invalid_request', 'body');
      }
    }
  });

  test('__proto__ keys are refused, not merged', async () => {
    const r = await call('POST', `${P}/jobs`, { body: '{"app":"sim","env":{"__proto__":{"polluted":"1"}}}' });
    assertError(r, 400, 'invalid_request', 'body');
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  test('a JSON body over 1 MiB on a non-batch route is 413', async () => {
    const big = 'x'.repeat(1024 * 1024 + 10);
    assertError(await call('POST', `${P}/jobs`, { body: { app: 'sim', args: [big] } }), 413, 'payload_too_large', 'body');
    assertError(await call('POST', `${P}/apps`, { body: { name: 'huge', image: 'sci/huge', description: big } }), 413, 'payload_too_large', 'body');
    assertError(await call('POST', '/v1/users', { body: { name: big } }), 413, 'payload_too_large', 'body');
    assertError(await call('GET', `${P}/apps/huge`), 404, 'not_found');
  });

  test('a body in a type the route does not take is 415 (or 400 for text) naming what is wrong', async () => {
    const xml = await call('POST', `${P}/jobs`, { raw: '<job app="sim"/>', headers: { 'content-type': 'application/xml' } });
    assertError(xml, 415, 'unsupported_media_type', 'headers/content-type');
    const form = await call('POST', `${P}/apps`, { raw: 'name=x&image=y', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    assertError(form, 415, 'unsupported_media_type', 'headers/content-type');
    const text = await call('POST', `${P}/jobs`, { raw: '{"app":"sim"}', headers: { 'content-type': 'text/plain' } });
    assert.ok(text.status === 400 || text.status === 415, text.text);
    assert.ok(typeof text.body.error.field === 'string' && text.body.error.message.includes(text.body.error.field), text.text);
    const blob = await call('PUT', `${P}/blobs/${sha256('{}')}`, { body: {} });
    assertError(blob, 415, 'unsupported_media_type', 'headers/content-type');
  });
});

describe('unknown fields', () => {
  const cases: Array<[string, string, unknown, string]> = [
    ['top level of a job', `${P}/jobs`, { app: 'sim', bogus: 1 }, 'body/bogus'],
    ['a misspelt job field', `${P}/jobs`, { app: 'sim', arg: ['x'] }, 'body/arg'],
    ['inside resources', `${P}/jobs`, { app: 'sim', resources: { cpus: 2 } }, 'body/resources/cpus'],
    ['the 4th item of a batch', `${P}/batches`, { app: 'sim', jobs: [{}, {}, {}, { bogus: 1 }] }, 'body/jobs/3/bogus'],
    ['a batch template', `${P}/batches`, { app: 'sim', count: 2, template: { app: 'other' } }, 'body/template/app'],
    ['a batch', `${P}/batches`, { app: 'sim', count: 2, size: 2 }, 'body/size'],
    ['an app', `${P}/apps`, { name: 'n1', image: 'sci/n', gpu: true }, 'body/gpu'],
    ['app resources', `${P}/apps`, { name: 'n1', image: 'sci/n', resources: { ram: 1 } }, 'body/resources/ram'],
    ['an app version', `${P}/apps/sim/versions`, { name: 'renamed' }, 'body/name'],
    ['a user', '/v1/users', { name: 'u1', admin: true }, 'body/admin'],
    ['a project', '/v1/projects', { name: 'p1', owner: 'admin' }, 'body/owner'],
    ['a token', '/v1/tokens', { label: 'x', scope: 'all' }, 'body/scope'],
  ];
  for (const [what, path, body, field] of cases) {
    test(`in ${what}: 400 ${field}`, async () => {
      const r = await rejects(path, body, 400, 'invalid_request', field);
      assert.match(r.body.error.message, /not a known field/);
    });
  }

  test('in a sweep dimension: 400 naming the dimension', async () => {
    const r = await call('POST', `${P}/batches`, { body: { app: 'sim', sweep: { x: { from: 1, to: 2, by: 1 } } } });
    assertError(r, 400, 'invalid_request');
    assert.match(r.body.error.field, /^body\/sweep\/x/);
    assert.ok(r.body.error.message.includes(r.body.error.field));
  });

  test('in the query string: 400 naming the parameter', async () => {
    assertError(await call('GET', `${P}/jobs?bogus=1`), 400, 'invalid_request', 'querystring/bogus');
    assertError(await call('GET', `${P}/batches?state=queued`), 400, 'invalid_request', 'querystring/state');
    assertError(await call('GET', `${P}/apps/sim?v=1`), 400, 'invalid_request', 'querystring/v');
  });
});

describe('wrong types (no coercion of JSON bodies)', () => {
  const cases: Array<[string, unknown, string]> = [
    [`${P}/jobs`, { app: 'sim', args: 'run --fast' }, 'body/args'],
    [`${P}/jobs`, { app: 'sim', args: ['ok', 2] }, 'body/args/1'],
    [`${P}/jobs`, { app: 'sim', env: { A: 1 } }, 'body/env/A'],
    [`${P}/jobs`, { app: 'sim', env: ['A=1'] }, 'body/env'],
    [`${P}/jobs`, { app: 'sim', priority: 'high' }, 'body/priority'],
    [`${P}/jobs`, { app: 'sim', priority: '5' }, 'body/priority'],
    [`${P}/jobs`, { app: 'sim', priority: 1.5 }, 'body/priority'],
    [`${P}/jobs`, { app: 'sim', deadline: 1_900_000_000_000 }, 'body/deadline'],
    [`${P}/jobs`, { app: 'sim', labels: { k: true } }, 'body/labels/k'],
    [`${P}/jobs`, { app: 'sim', appVersion: '1' }, 'body/appVersion'],
    [`${P}/jobs`, { app: 42 }, 'body/app'],
    [`${P}/jobs`, { app: null }, 'body/app'],
    [`${P}/batches`, { app: 'sim', count: '5' }, 'body/count'],
    [`${P}/batches`, { app: 'sim', jobs: {} }, 'body/jobs'],
    [`${P}/batches`, { app: 'sim', jobs: ['x'] }, 'body/jobs/0'],
    [`${P}/apps`, { name: 'n1', image: 'sci/n', replicas: '2' }, 'body/replicas'],
    [`${P}/apps`, { name: 'n1', image: 'sci/n', checkpointing: 'yes' }, 'body/checkpointing'],
    [`${P}/apps`, { name: 'n1', image: 'sci/n', command: 'run' }, 'body/command'],
    [`${P}/apps`, { name: 'n1', image: ['sci/n'] }, 'body/image'],
    [`${P}/apps`, { name: 123, image: 'sci/n' }, 'body/name'],
    ['/v1/users', { name: 'u1', operator: 'true' }, 'body/operator'],
    ['/v1/projects', { name: 'p1', shareWeight: '2' }, 'body/shareWeight'],
    ['/v1/tokens', { ttlSeconds: '3600' }, 'body/ttlSeconds'],
  ];
  for (const [path, body, field] of cases) {
    test(`${path.replace(P, '')} ${JSON.stringify(body)}: 400 ${field}`, () => rejects(path, body, 400, 'invalid_request', field).then(() => undefined));
  }

  test('missing required fields are named themselves', async () => {
    await rejects(`${P}/jobs`, {}, 400, 'invalid_request', 'body/app', { messageNames: /required/ });
    await rejects(`${P}/apps`, { name: 'n1' }, 400, 'invalid_request', 'body/image', { messageNames: /required/ });
    await rejects('/v1/users', {}, 400, 'invalid_request', 'body/name', { messageNames: /required/ });
    const m = await call('PUT', `${P}/members/admin`, { body: {} });
    assertError(m, 400, 'invalid_request', 'body/role', { messageNames: /required/ });
  });

  test('path parameters', async () => {
    assertError(await call('GET', `${P}/jobs/abc`), 400, 'invalid_request', 'params/id');
    assertError(await call('GET', `${P}/jobs/0`), 400, 'invalid_request', 'params/id');
    assertError(await call('POST', `${P}/batches/-1/cancel`), 400, 'invalid_request', 'params/id');
    assertError(await call('GET', `/v1/projects/${'p'.repeat(64)}/jobs`), 400, 'invalid_request', 'params/project');
  });
});

describe('out-of-range values', () => {
  const cases: Array<[string, unknown, string]> = [
    [`${P}/jobs`, { app: 'sim', priority: 5000 }, 'body/priority'],
    [`${P}/jobs`, { app: 'sim', priority: -1001 }, 'body/priority'],
    [`${P}/jobs`, { app: 'sim', resources: { cores: 0 } }, 'body/resources/cores'],
    [`${P}/jobs`, { app: 'sim', resources: { cores: -1 } }, 'body/resources/cores'],
    [`${P}/jobs`, { app: 'sim', resources: { cores: 5000 } }, 'body/resources/cores'],
    [`${P}/jobs`, { app: 'sim', resources: { memoryMiB: 0 } }, 'body/resources/memoryMiB'],
    [`${P}/jobs`, { app: 'sim', resources: { gpus: -1 } }, 'body/resources/gpus'],
    [`${P}/jobs`, { app: 'sim', appVersion: 0 }, 'body/appVersion'],
    [`${P}/jobs`, { app: 'sim', args: Array(257).fill('a') }, 'body/args'],
    [`${P}/jobs`, { app: 'sim', args: ['a'.repeat(4097)] }, 'body/args/0'],
    [`${P}/jobs`, { app: 'sim', labels: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, 'v'])) }, 'body/labels'],
    [`${P}/jobs`, { app: 'x'.repeat(64) }, 'body/app'],
    [`${P}/jobs`, { app: '' }, 'body/app'],
    [`${P}/batches`, { app: 'sim', count: 0 }, 'body/count'],
    [`${P}/batches`, { app: 'sim', count: -3 }, 'body/count'],
    [`${P}/batches`, { app: 'sim', sweep: {} }, 'body/sweep'],
    [`${P}/batches`, { app: 'sim', sweep: { x: { from: 0, to: 1, step: 0 } } }, 'body/sweep/x/step'],
    [`${P}/batches`, { app: 'sim', sweep: { x: { from: 0, to: 1, step: -1 } } }, 'body/sweep/x/step'],
    [`${P}/apps`, { name: 'n1', image: 'sci/n', replicas: 0 }, 'body/replicas'],
    [`${P}/apps`, { name: 'n1', image: 'sci/n', replicas: 17 }, 'body/replicas'],
    [`${P}/apps`, { name: 'n1', image: 'sci/n', quorum: 0 }, 'body/quorum'],
    [`${P}/apps`, { name: 'n1', image: 'sci/n', maxAttempts: 0 }, 'body/maxAttempts'],
    [`${P}/apps`, { name: 'n1', image: 'sci/n', maxRuntimeSeconds: 0 }, 'body/maxRuntimeSeconds'],
    [`${P}/apps`, { name: 'n1', image: 'sci/n', resources: { cores: 0 } }, 'body/resources/cores'],
    [`${P}/apps`, { name: 'n1', image: '' }, 'body/image'],
    ['/v1/projects', { name: 'p1', shareWeight: 0 }, 'body/shareWeight'],
    ['/v1/tokens', { ttlSeconds: 10 }, 'body/ttlSeconds'],
    ['/v1/users', { name: 'u'.repeat(64) }, 'body/name'],
  ];
  for (const [path, body, field] of cases) {
    test(`${path.replace(P, '')} ${JSON.stringify(body).slice(0, 80)}: 400 ${field}`, () => rejects(path, body, 400, 'invalid_request', field).then(() => undefined));
  }

  test('quorum greater than replicas: 400 quorum (create and new version)', async () => {
    await rejects(`${P}/apps`, { name: 'q1', image: 'sci/q', replicas: 2, quorum: 3 }, 400, 'invalid_request', 'body/quorum');
    await rejects(`${P}/apps`, { name: 'q1', image: 'sci/q', quorum: 2 }, 400, 'invalid_request', 'body/quorum');
    await rejects(`${P}/apps/sim/versions`, { quorum: 2 }, 400, 'invalid_request', 'body/quorum');
    // Replicas are compared: a quorum of one would take any single replica's result.
    await rejects(`${P}/apps`, { name: 'q1', image: 'sci/q', replicas: 3, quorum: 1 }, 400, 'invalid_request', 'body/quorum');
    await rejects(`${P}/apps`, { name: 'q1', image: 'sci/q', maxReplicas: 1, replicas: 2 }, 400, 'invalid_request', 'body/maxReplicas');
    await rejects(`${P}/apps`, { name: 'q1', image: 'sci/q', adaptiveReplication: true }, 400, 'invalid_request', 'body/adaptiveReplication');
    await rejects(`${P}/apps`, { name: 'q1', image: 'sci/q', validator: { image: 'sci/check' } }, 400, 'invalid_request', 'body/validator');
    const versions = await call('GET', `${P}/apps/sim`);
    assert.deepEqual(versions.body.versions, [1]);
  });

  test('list limits: limit 5000 and limit 0 are 400 querystring/limit', async () => {
    for (const q of ['limit=5000', 'limit=0', 'limit=-1', 'limit=1.5', 'limit=ten']) {
      assertError(await call('GET', `${P}/jobs?${q}`), 400, 'invalid_request', 'querystring/limit');
      assertError(await call('GET', `${P}/batches?${q}`), 400, 'invalid_request', 'querystring/limit');
    }
  });

  test('batch size limits: count and jobs over 100,000', async () => {
    await rejects(`${P}/batches`, { app: 'sim', count: 100_001 }, 400, 'invalid_request', 'body/count');
    await rejects(`${P}/batches`, { app: 'sim', count: 1e12 }, 400, 'invalid_request', 'body/count');
    await rejects(`${P}/batches`, { app: 'sim', jobs: Array(100_001).fill({}) }, 400, 'invalid_request', 'body/jobs');
  });
});

describe('names, references and duplicates', () => {
  test('invalid names are 400 naming the field', async () => {
    await rejects(`${P}/apps`, { name: 'Bad Name', image: 'sci/x' }, 400, 'invalid_request', 'body/name');
    await rejects(`${P}/apps`, { name: '-dash', image: 'sci/x' }, 400, 'invalid_request', 'body/name');
    await rejects('/v1/users', { name: 'UPPER' }, 400, 'invalid_request', 'body/name');
    await rejects('/v1/projects', { name: 'has space' }, 400, 'invalid_request', 'body/name');
    await rejects(`${P}/apps`, { name: 'img', image: 'Not An Image!' }, 400, 'invalid_request', 'body/image');
    await rejects(`${P}/apps`, { name: 'img', image: 'sci/x', imageDigest: 'md5:abc' }, 400, 'invalid_request', 'body/imageDigest');
    await rejects(`${P}/apps`, { name: 'img', image: `sci/x@sha256:${'a'.repeat(64)}`, imageDigest: `sha256:${'b'.repeat(64)}` }, 400, 'invalid_request', 'body/imageDigest');
    await rejects(`${P}/apps`, { name: 'img', image: 'sci/x', platforms: ['linux/amd64', 'windows'] }, 400, 'invalid_request', 'body/platforms/1');
  });

  test('unknown app and unknown app version', async () => {
    await rejects(`${P}/jobs`, { app: 'nope' }, 400, 'invalid_request', 'body/app');
    await rejects(`${P}/jobs`, { app: 'sim', appVersion: 9 }, 400, 'invalid_request', 'body/appVersion');
    await rejects(`${P}/batches`, { app: 'nope', count: 1 }, 400, 'invalid_request', 'body/app');
    await rejects(`${P}/batches`, { app: 'sim', appVersion: 9, count: 1 }, 400, 'invalid_request', 'body/appVersion');
    assertError(await call('GET', `${P}/apps/nope`), 404, 'not_found');
    assertError(await call('GET', `${P}/apps/sim?version=9`), 404, 'not_found');
    assertError(await call('POST', `${P}/apps/nope/versions`, { body: { image: 'sci/nope' } }), 404, 'not_found');
    assertError(await call('PUT', `${P}/members/nobody`, { body: { role: 'viewer' } }), 404, 'not_found');
    assertError(await call('POST', '/v1/tokens', { body: { user: 'nobody' } }), 404, 'not_found');
    assertError(await call('GET', '/v1/projects/nope/apps'), 404, 'not_found');
  });

  test('duplicate app, user and project names are 409 already_exists naming the field', async () => {
    const app = await rejects(`${P}/apps`, { name: 'sim', image: 'sci/another' }, 409, 'already_exists', 'body/name', { messageNames: '"sim"' });
    assert.match(app.body.error.message, /already exists/);
    const versions = await call('GET', `${P}/apps/sim`);
    assert.deepEqual(versions.body.versions, [1]);
    assert.equal(versions.body.app.image, 'sci/sim:1');
    await rejects('/v1/users', { name: 'admin' }, 409, 'already_exists', 'body/name', { messageNames: '"admin"' });
    await rejects('/v1/projects', { name: 'default' }, 409, 'already_exists', 'body/name', { messageNames: '"default"' });
    assert.equal((await call('POST', '/v1/users', { body: { name: 'dup' } })).status, 201);
    await rejects('/v1/users', { name: 'dup', operator: true }, 409, 'already_exists', 'body/name', { messageNames: '"dup"' });
    const me = await s.call('POST', '/v1/tokens', { body: { user: 'dup' } });
    assert.equal((await s.call('GET', '/v1/me', { token: me.body.token })).body.user.operator, false, 'the duplicate did not overwrite the user');
  });

  test('a bad role is 400 naming the role', async () => {
    assertError(await call('PUT', `${P}/members/admin`, { body: { role: 'owner' } }), 400, 'invalid_request', 'body/role');
  });

  test('a bad role\'s message lists every allowed role', async () => {
    const r = await call('PUT', `${P}/members/admin`, { body: { role: 'owner' } });
    assert.match(r.body.error.message, /admin.*submitter.*viewer/);
    const q = await call('GET', `${P}/jobs?state=zombie`);
    assert.match(q.body.error.message, /queued.*running.*succeeded.*failed.*cancelled/);
  });
});

describe('batch forms and sweeps', () => {
  test('a batch with none, two or three of jobs/count/sweep is 400 naming jobs', async () => {
    for (const body of [
      { app: 'sim' },
      { app: 'sim', template: { args: ['x'] } },
      { app: 'sim', count: 2, jobs: [{}] },
      { app: 'sim', count: 2, sweep: { x: { values: [1] } } },
      { app: 'sim', jobs: [{}], sweep: { x: { values: [1] } } },
      { app: 'sim', count: 1, jobs: [{}], sweep: { x: { values: [1] } } },
    ]) {
      const r = await rejects(`${P}/batches`, body, 400, 'invalid_request', 'body/jobs');
      assert.match(r.body.error.message, /count/);
      assert.match(r.body.error.message, /sweep/);
    }
    await rejects(`${P}/batches`, { app: 'sim', jobs: [] }, 400, 'invalid_request', 'body/jobs');
  });

  test('a sweep dimension with no values is 400 naming the dimension', async () => {
    const r = await call('POST', `${P}/batches`, { body: { app: 'sim', sweep: { x: { values: [] } } } });
    assertError(r, 400, 'invalid_request');
    assert.match(r.body.error.field, /^body\/sweep\/x/);
    assert.ok(r.body.error.message.includes(r.body.error.field));
  });

  test('the message for a sweep dimension with no values speaks of its values', async () => {
    const r = await call('POST', `${P}/batches`, { body: { app: 'sim', sweep: { x: { values: [] } } } });
    assert.match(r.body.error.message, /values/);
    assert.doesNotMatch(r.body.error.message, /'from'/);
  });

  test('a range that ends before it starts is 400 naming the dimension', async () => {
    const r = await rejects(`${P}/batches`, { app: 'sim', sweep: { x: { from: 10, to: 1 } } }, 400, 'invalid_request', 'body/sweep/x');
    assert.match(r.body.error.message, /before it starts/);
  });

  test('more than 100,000 points is 400, counted before anything is expanded', async () => {
    const product = await rejects(`${P}/batches`, { app: 'sim', sweep: { x: { from: 1, to: 1000 }, y: { from: 1, to: 101 } } }, 400, 'invalid_request', 'body/sweep');
    assert.match(product.body.error.message, /100000/);
    const one = await rejects(`${P}/batches`, { app: 'sim', sweep: { x: { from: 0, to: 1e15 } } }, 400, 'invalid_request', 'body/sweep/x');
    assert.match(one.body.error.message, /more than the limit/);
    await rejects(`${P}/batches`, { app: 'sim', sweep: { x: { from: 0, to: 1, step: 1e-300 } } }, 400, 'invalid_request', 'body/sweep/x');
    await rejects(`${P}/batches`, { app: 'sim', sweep: { a: { values: Array(400).fill(1) }, b: { values: Array(400).fill(2) } } }, 400, 'invalid_request', 'body/sweep');
    // Exactly at the limit on a smaller server is fine: see routes.test.ts for sweeps that run.
  });

  test('a bad sweep parameter name is 400 naming it', async () => {
    await rejects(`${P}/batches`, { app: 'sim', sweep: { 'a-b': { values: [1] } } }, 400, 'invalid_request', 'body/sweep/a-b');
    await rejects(`${P}/batches`, { app: 'sim', sweep: { '1x': { values: [1] } } }, 400, 'invalid_request', 'body/sweep/1x');
  });
});

describe('job fields the service checks', () => {
  const past = '2001-01-01T00:00:00Z';
  const cases: Array<[string, string, unknown, string]> = [
    ['a deadline in the past', `${P}/jobs`, { app: 'sim', deadline: past }, 'body/deadline'],
    ['a deadline that is not a date', `${P}/jobs`, { app: 'sim', deadline: 'tomorrow' }, 'body/deadline'],
    ['an empty deadline', `${P}/jobs`, { app: 'sim', deadline: '' }, 'body/deadline'],
    ['an impossible date', `${P}/jobs`, { app: 'sim', deadline: '2999-13-45T99:00:00Z' }, 'body/deadline'],
    ['a past deadline in a template', `${P}/batches`, { app: 'sim', count: 2, template: { deadline: past } }, 'body/template/deadline'],
    ['a bad deadline in the 3rd job', `${P}/batches`, { app: 'sim', jobs: [{}, {}, { deadline: 'soon' }] }, 'body/jobs/2/deadline'],
    ['an env name starting with a digit', `${P}/jobs`, { app: 'sim', env: { '1X': 'a' } }, 'body/env/1X'],
    ['an env name with a dash', `${P}/jobs`, { app: 'sim', env: { 'A-B': 'a' } }, 'body/env/A-B'],
    ['an env name with "="', `${P}/jobs`, { app: 'sim', env: { 'A=B': 'a' } }, 'body/env/A=B'],
    ['an empty env name', `${P}/jobs`, { app: 'sim', env: { '': 'a' } }, 'body/env/'],
    ['the BOXGRID_ prefix', `${P}/jobs`, { app: 'sim', env: { BOXGRID_TOKEN: 'x' } }, 'body/env/BOXGRID_TOKEN'],
    ['the BOXGRID_ prefix in a template', `${P}/batches`, { app: 'sim', count: 2, template: { env: { BOXGRID_X: '1' } } }, 'body/template/env/BOXGRID_X'],
    ['the BOXGRID_ prefix in a sweep template', `${P}/batches`, { app: 'sim', sweep: { x: { values: [1] } }, template: { env: { BOXGRID_X: '{x}' } } }, 'body/template/env/BOXGRID_X'],
    ['an input named ".."', `${P}/jobs`, { app: 'sim', inputs: { '..': 'a'.repeat(64) } }, 'body/inputs/..'],
    ['an input named "."', `${P}/jobs`, { app: 'sim', inputs: { '.': 'a'.repeat(64) } }, 'body/inputs/.'],
    ['an input name with a slash', `${P}/jobs`, { app: 'sim', inputs: { '../etc/passwd': 'a'.repeat(64) } }, 'body/inputs/../etc/passwd'],
    ['an input that is not a digest', `${P}/jobs`, { app: 'sim', inputs: { 'in.txt': 'A'.repeat(64) } }, 'body/inputs/in.txt'],
    ['an input named ".." in the 2nd job', `${P}/batches`, { app: 'sim', jobs: [{}, { inputs: { '..': 'a'.repeat(64) } }] }, 'body/jobs/1/inputs/..'],
    ['a bad label key', `${P}/jobs`, { app: 'sim', labels: { '-x': 'y' } }, 'body/labels/-x'],
    ['a bad batch label key', `${P}/batches`, { app: 'sim', count: 1, labels: { 'a b': 'y' } }, 'body/labels/a b'],
  ];
  for (const [what, path, body, field] of cases) {
    test(`${what}: 400 ${field}`, () => rejects(path, body, 400, 'invalid_request', field).then(() => undefined));
  }
});

describe('deadlines in other date formats', () => {
  test('a deadline that is a date but not ISO 8601 is 400 naming the deadline', async () => {
    // Its own server: while the defect lasts these are accepted, and must not disturb the counts here.
    const other = await startTestServer();
    try {
      await createApp(other, 'default', 'sim');
      for (const deadline of ['December 17, 2995', 'Tue, 01 Jan 2999 00:00:00 GMT', '2999/01/01']) {
        assertError(await other.call('POST', `${P}/jobs`, { body: { app: 'sim', deadline } }), 400, 'invalid_request', 'body/deadline');
      }
    } finally {
      await other.stop();
    }
  });
});

describe('query strings', () => {
  test('a bad cursor is 400 naming the cursor', async () => {
    for (const c of ['zzz', Buffer.from('x:5').toString('base64url'), Buffer.from('j:-1').toString('base64url'), Buffer.from('j:1234567890123456').toString('base64url'), '%00']) {
      assertError(await call('GET', `${P}/jobs?cursor=${c}`), 400, 'invalid_request', 'querystring/cursor');
      assertError(await call('GET', `${P}/batches?cursor=${c}`), 400, 'invalid_request', 'querystring/cursor');
    }
    assertError(await call('GET', `${P}/jobs?cursor=${'a'.repeat(65)}`), 400, 'invalid_request', 'querystring/cursor');
  });

  test('bad filters are 400 naming the parameter', async () => {
    assertError(await call('GET', `${P}/jobs?state=zombie`), 400, 'invalid_request', 'querystring/state');
    assertError(await call('GET', `${P}/jobs?batch=abc`), 400, 'invalid_request', 'querystring/batch');
    assertError(await call('GET', `${P}/jobs?batch=0`), 400, 'invalid_request', 'querystring/batch');
    assertError(await call('GET', `${P}/jobs?label=novalue`), 400, 'invalid_request', 'querystring/label');
    assertError(await call('GET', `${P}/jobs?label==x`), 400, 'invalid_request', 'querystring/label');
    assertError(await call('GET', `${P}/jobs?app=${'a'.repeat(64)}`), 400, 'invalid_request', 'querystring/app');
    assertError(await call('GET', `${P}/apps/sim?version=0`), 400, 'invalid_request', 'querystring/version');
    assertError(await call('GET', `${P}/apps/sim?version=x`), 400, 'invalid_request', 'querystring/version');
  });
});

describe('a rejected batch writes nothing at all', () => {
  const N = 50_000;
  const valid = () => Array.from({ length: N }, (_, i) => ({ args: [String(i)], labels: { i: String(i % 7) } }));

  test('the 50,000th job breaking a service rule (reserved env name)', async () => {
    const jobs: unknown[] = valid();
    jobs[N - 1] = { env: { BOXGRID_SECRET: '1' } };
    await rejects(`${P}/batches`, { app: 'sim', jobs }, 400, 'invalid_request', `body/jobs/${N - 1}/env/BOXGRID_SECRET`);
    assert.deepEqual(await allJobIds(s, 'default'), jobsBefore);
    assert.equal(await batchCount(s, 'default'), batchesBefore);
  });

  test('the 50,000th job with an unknown field (schema)', async () => {
    const jobs: unknown[] = valid();
    jobs[N - 1] = { args: ['x'], bogus: true };
    await rejects(`${P}/batches`, { app: 'sim', jobs }, 400, 'invalid_request', `body/jobs/${N - 1}/bogus`);
    assert.deepEqual(await allJobIds(s, 'default'), jobsBefore);
    assert.equal(await batchCount(s, 'default'), batchesBefore);
  });

  test('the 50,000th job naming a blob the project does not hold', async () => {
    const jobs: unknown[] = valid();
    jobs[N - 1] = { inputs: { 'in.bin': sha256('missing') } };
    await rejects(`${P}/batches`, { app: 'sim', jobs }, 400, 'invalid_request', 'body/inputs');
    assert.deepEqual(await allJobIds(s, 'default'), jobsBefore);
    assert.equal(await batchCount(s, 'default'), batchesBefore);
    const labelled = await call('GET', `${P}/jobs?label=i=3`);
    assert.deepEqual(labelled.body.jobs, [], 'no job labels were left behind');
  });
});

describe('whatever came back', () => {
  test('no answer in this file was a 5xx, a stack trace or a path', () => {
    assert.ok(answers.length > 200, `only ${answers.length} answers were checked`);
    for (const [what, r] of answers) assertNoLeak(r, what);
  });

  test('nothing any rejected request sent was stored', async () => {
    assert.deepEqual(await allJobIds(s, 'default'), jobsBefore);
    assert.equal(await batchCount(s, 'default'), batchesBefore);
    const apps = await s.call('GET', `${P}/apps`);
    assert.deepEqual(apps.body.apps.map((a: { name: string; version: number }) => [a.name, a.version]), [['other', 1], ['sim', 1]]);
    const projects = await s.call('GET', '/v1/projects');
    assert.deepEqual(projects.body.projects.map((p: { name: string }) => p.name), ['default']);
    const db = await s.call('GET', '/v1/me');
    assert.equal(db.status, 200);
  });
});
