import assert from 'node:assert/strict';
import { mkdir, mkdtemp, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FsBlobStore } from '../../src/blobs/fs-blob-store.js';
import { toHttpError } from '../../src/server/http-errors.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const P = '/v1/projects/default';

describe('tokens cannot outlive the token that made them, and can be revoked', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(() => s.stop());

  test('a token made with a 60 s token expires with it, whatever it asks for', async () => {
    const short = await s.call('POST', '/v1/tokens', { body: { ttlSeconds: 60 } });
    assert.equal(short.status, 201);
    const minted = await s.call('POST', '/v1/tokens', { token: short.body.token, body: {} });
    assert.equal(minted.status, 201);
    assert.equal(minted.body.expiresAt, short.body.expiresAt);
    const longer = await s.call('POST', '/v1/tokens', { token: short.body.token, body: { ttlSeconds: 86400 } });
    assert.equal(longer.body.expiresAt, short.body.expiresAt);
    const shorter = await s.call('POST', '/v1/tokens', { token: short.body.token, body: { ttlSeconds: 60 } });
    assert.ok(Date.parse(shorter.body.expiresAt) <= Date.parse(short.body.expiresAt));
  });

  test('revoking a token makes it fail at once; others cannot revoke it; operators can', async () => {
    const ada = await s.userWithRole('ada', 'default', 'submitter');
    const bob = await s.userWithRole('bob', 'default', 'submitter');
    const second = await s.call('POST', '/v1/tokens', { token: ada, body: {} });
    const id = second.body.id as string;
    const foreign = await s.call('DELETE', `/v1/tokens/${id}`, { token: bob });
    assert.equal(foreign.status, 404);
    assert.equal((await s.call('GET', '/v1/me', { token: second.body.token })).status, 200);
    assert.equal((await s.call('DELETE', `/v1/tokens/${id}`, { token: ada })).status, 204);
    const after = await s.call('GET', '/v1/me', { token: second.body.token });
    assert.equal(after.status, 401);
    assert.equal((await s.call('GET', '/v1/me', { token: ada })).status, 200, 'only the revoked token stops working');
    const bobs = await s.call('POST', '/v1/tokens', { token: bob, body: {} });
    assert.equal((await s.call('DELETE', `/v1/tokens/${bobs.body.id}`)).status, 204, 'the operator revokes anyone\'s');
    assert.equal((await s.call('GET', '/v1/me', { token: bobs.body.token })).status, 401);
    assert.equal((await s.call('DELETE', '/v1/tokens/0000000000000000')).status, 404);
  });
});

describe('idempotent submission', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
    assert.equal((await s.call('POST', `${P}/apps`, { body: { name: 'sim', image: 'sci/sim' } })).status, 201);
  });
  after(() => s.stop());

  test('a retry is answered from the first outcome even after its deadline has passed', async () => {
    const deadline = new Date(Date.now() + 3600_000).toISOString();
    const body = { app: 'sim', args: ['x'], deadline };
    const first = await s.call('POST', `${P}/jobs`, { body, headers: { 'idempotency-key': 'k-deadline' } });
    assert.equal(first.status, 201);
    const realNow = s.ctx.now;
    s.ctx.now = () => realNow() + 2 * 3600_000;
    try {
      const retry = await s.call('POST', `${P}/jobs`, { body, headers: { 'idempotency-key': 'k-deadline' } });
      assert.equal(retry.status, 200, retry.text);
      assert.equal(retry.body.replayed, true);
      assert.deepEqual(retry.body.jobIds, first.body.jobIds);
    } finally {
      s.ctx.now = realNow;
    }
  });

  test('the same body with its keys in another order is the same request', async () => {
    const first = await s.call('POST', `${P}/batches`, { body: { app: 'sim', count: 3, labels: { a: '1', b: '2' } }, headers: { 'idempotency-key': 'k-order' } });
    assert.equal(first.status, 201);
    const retry = await s.call('POST', `${P}/batches`, { raw: JSON.stringify({ labels: { b: '2', a: '1' }, count: 3, app: 'sim' }), headers: { 'idempotency-key': 'k-order', 'content-type': 'application/json' } });
    assert.equal(retry.status, 200, retry.text);
    assert.equal(retry.body.batch.id, first.body.batch.id);
  });

  test('two users\' identical keys are two requests', async () => {
    const ann = await s.userWithRole('ann', 'default', 'submitter');
    const body = { app: 'sim', args: ['same'] };
    const mine = await s.call('POST', `${P}/jobs`, { body, headers: { 'idempotency-key': 'shared' } });
    const hers = await s.call('POST', `${P}/jobs`, { token: ann, body, headers: { 'idempotency-key': 'shared' } });
    assert.equal(mine.status, 201);
    assert.equal(hers.status, 201);
    assert.notDeepEqual(hers.body.jobIds, mine.body.jobIds);
  });
});

describe('limits and request shapes', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ limits: { maxJobBytes: 1024, maxBatchBytes: 100_000 } });
    assert.equal((await s.call('POST', `${P}/apps`, { body: { name: 'sim', image: 'sci/sim' } })).status, 201);
  });
  after(() => s.stop());

  const jobCount = async () => (await s.call('GET', `${P}/jobs?limit=1000`)).body.jobs.length as number;

  test('a job carrying more text than the per-job limit is refused', async () => {
    const r = await s.call('POST', `${P}/jobs`, { body: { app: 'sim', args: ['x'.repeat(2000)] } });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.field, 'body');
    assert.match(r.body.error.message, /more than the limit of 1024 per job/);
  });

  test('count and sweep cannot multiply a template past the batch limit; nothing is written', async () => {
    const before = await jobCount();
    const big = { args: ['y'.repeat(900)] };
    const count = await s.call('POST', `${P}/batches`, { body: { app: 'sim', template: big, count: 1000 } });
    assert.equal(count.status, 400);
    assert.equal(count.body.error.field, 'body/jobs');
    const sweep = await s.call('POST', `${P}/batches`, { body: { app: 'sim', template: big, sweep: { x: { from: 1, to: 1000 } } } });
    assert.equal(sweep.status, 400);
    assert.match(sweep.body.error.message, /more than the limit of 100000/);
    assert.equal(await jobCount(), before);
    assert.equal((await s.call('POST', `${P}/batches`, { body: { app: 'sim', template: big, count: 50 } })).status, 201);
  });

  test('a non-member\'s batch body is not even parsed: 404, not 400', async () => {
    const outsider = await s.userWithRole('outsider');
    const r = await s.call('POST', `${P}/batches`, { token: outsider, raw: '{"this is": not json', headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 404);
    assert.equal(r.body.error.code, 'not_found');
  });

  test('JSON routes refuse other content types with 415', async () => {
    for (const type of ['text/plain', 'application/octet-stream']) {
      const r = await s.call('POST', `${P}/jobs`, { raw: '{"app":"sim"}', headers: { 'content-type': type } });
      assert.equal(r.status, 415, `${type}: ${r.text}`);
      assert.equal(r.body.error.code, 'unsupported_media_type');
    }
  });

  test('an impossible calendar date is not a deadline', async () => {
    const r = await s.call('POST', `${P}/jobs`, { body: { app: 'sim', deadline: '2999-02-30T00:00:00Z' } });
    assert.equal(r.status, 400);
    assert.equal(r.body.error.field, 'body/deadline');
    assert.equal((await s.call('POST', `${P}/jobs`, { body: { app: 'sim', deadline: '2999-02-28T00:00:00Z' } })).status, 201);
  });

  test('an event stream follows one batch, job or workflow, not several', async () => {
    const r = await s.call('GET', `${P}/events?batch=1&job=1`);
    assert.equal(r.status, 400);
    assert.equal(r.body.error.field, 'querystring/job');
    const w = await s.call('GET', `${P}/events?job=1&workflow=1`);
    assert.equal(w.status, 400);
    assert.equal(w.body.error.field, 'querystring/workflow');
  });

  test('a malformed URL gets the documented error shape', async () => {
    const r = await s.call('GET', '/v1/projects/%ZZ/apps');
    assert.equal(r.status, 400);
    assert.equal(r.body.error.code, 'invalid_request');
  });

  test('event ids count per project, so they say nothing about other projects', async () => {
    await s.userWithRole('quiet', 'quiet', 'admin');
    const busy = await s.call('POST', `${P}/jobs`, { body: { app: 'sim' } });
    assert.equal(busy.status, 201);
    const seen: number[] = [];
    s.ctx.events.subscribe({ projectId: 2 }, 0, (e) => seen.push(e.seq));
    s.ctx.events.publish(2, { type: 'batch', batchId: 1, change: 'progress' });
    assert.deepEqual(seen, [1]);
  });
});

describe('storage faults and the data dir', () => {
  test('SQLite reporting a full disk is a 507, a busy store a retryable 503', () => {
    const full = toHttpError(Object.assign(new Error('database or disk is full'), { code: 'SQLITE_FULL' }));
    assert.equal(full.status, 507);
    assert.equal(full.body.error.code, 'insufficient_storage');
    const busy = toHttpError(Object.assign(new Error('database is locked'), { code: 'SQLITE_BUSY' }));
    assert.equal(busy.status, 503);
  });

  test('a data dir that already existed with loose permissions is made private on start', async () => {
    const dir = join(await mkdtemp(join(tmpdir(), 'boxgrid-perm-')), 'data');
    await mkdir(dir, { mode: 0o755 });
    const s = await startTestServer({ dataDir: dir });
    try {
      assert.equal((await stat(dir)).mode & 0o777, 0o700);
    } finally {
      await s.stop();
    }
  });

  test('uploads abandoned in blobs/tmp by a crash are swept, recent ones are kept', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'boxgrid-blobs-'));
    await mkdir(join(dir, 'tmp'));
    const old = join(dir, 'tmp', 'old.part');
    const fresh = join(dir, 'tmp', 'fresh.part');
    await writeFile(old, 'x');
    await writeFile(fresh, 'y');
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    await utimes(old, twoHoursAgo, twoHoursAgo);
    const removed = await new FsBlobStore(dir).sweepTemporary(Date.now() - 3600_000);
    assert.equal(removed, 1);
    await assert.rejects(stat(old));
    await stat(fresh);
  });
});
