import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { allJobIds, assertError, batchCount, createApp } from './util.js';

/** Idempotency-Key on POST jobs and POST batches: a retry replays, a reuse for something else is a conflict. */

let s: TestServer;
const P = '/v1/projects/default';
before(async () => {
  s = await startTestServer();
  await createApp(s, 'default', 'sim');
  await s.call('POST', '/v1/projects', { body: { name: 'other' } });
  await createApp(s, 'other', 'sim');
});
after(async () => {
  await s.stop();
});

const key = (k: string) => ({ 'idempotency-key': k });

describe('POST jobs with Idempotency-Key', () => {
  test('a retry with the same key and body returns 200, replayed, the same id, and writes nothing', async () => {
    const body = { app: 'sim', args: ['a'], labels: { try: '1' } };
    const first = await s.call('POST', `${P}/jobs`, { body, headers: key('job-1') });
    assert.equal(first.status, 201, first.text);
    assert.equal(first.body.replayed, false);
    const before = await allJobIds(s, 'default');
    const retry = await s.call('POST', `${P}/jobs`, { body, headers: key('job-1') });
    assert.equal(retry.status, 200, retry.text);
    assert.equal(retry.body.replayed, true);
    assert.deepEqual(retry.body.jobIds, first.body.jobIds);
    assert.equal(retry.body.jobCount, 1);
    assert.equal(retry.body.batch, null);
    assert.deepEqual(await allJobIds(s, 'default'), before);
  });

  test('the same key with a different body is 409 conflict and writes nothing', async () => {
    const first = await s.call('POST', `${P}/jobs`, { body: { app: 'sim', args: ['x'] }, headers: key('job-2') });
    assert.equal(first.status, 201);
    const before = await allJobIds(s, 'default');
    const other = await s.call('POST', `${P}/jobs`, { body: { app: 'sim', args: ['y'] }, headers: key('job-2') });
    assertError(other, 409, 'conflict', 'headers/idempotency-key', { messageNames: /Idempotency-Key/ });
    assert.deepEqual(await allJobIds(s, 'default'), before);
    // The original is untouched and still replays.
    const job = await s.call('GET', `${P}/jobs/${first.body.jobIds[0]}`);
    assert.deepEqual(job.body.job.args, ['x']);
    const again = await s.call('POST', `${P}/jobs`, { body: { app: 'sim', args: ['x'] }, headers: key('job-2') });
    assert.equal(again.status, 200);
    assert.deepEqual(again.body.jobIds, first.body.jobIds);
  });

  test('without a key, or with another key, the same body makes new jobs', async () => {
    const body = { app: 'sim', args: ['dup'] };
    const a = await s.call('POST', `${P}/jobs`, { body });
    const b = await s.call('POST', `${P}/jobs`, { body });
    const c = await s.call('POST', `${P}/jobs`, { body, headers: key('job-3a') });
    const d = await s.call('POST', `${P}/jobs`, { body, headers: key('job-3b') });
    for (const r of [a, b, c, d]) assert.equal(r.status, 201);
    assert.equal(new Set([a, b, c, d].map((r) => r.body.jobIds[0])).size, 4);
  });

  test('a retry after the job was cancelled replays the cancelled job and does not requeue it', async () => {
    const body = { app: 'sim', args: ['c'] };
    const first = await s.call('POST', `${P}/jobs`, { body, headers: key('job-4') });
    const id = first.body.jobIds[0];
    assert.equal((await s.call('POST', `${P}/jobs/${id}/cancel`)).status, 200);
    const retry = await s.call('POST', `${P}/jobs`, { body, headers: key('job-4') });
    assert.equal(retry.status, 200);
    assert.deepEqual(retry.body.jobIds, [id]);
    assert.equal((await s.call('GET', `${P}/jobs/${id}`)).body.job.state, 'cancelled');
  });

  test('concurrent retries with one key make exactly one job', async () => {
    const before = (await allJobIds(s, 'default')).length;
    const body = { app: 'sim', args: ['race'] };
    const rs = await Promise.all(Array.from({ length: 6 }, () => s.call('POST', `${P}/jobs`, { body, headers: key('job-race') })));
    assert.deepEqual(rs.map((r) => r.status).sort(), [200, 200, 200, 200, 200, 201]);
    assert.equal(new Set(rs.map((r) => r.body.jobIds[0])).size, 1);
    assert.equal(rs.filter((r) => r.body.replayed).length, 5);
    assert.equal((await allJobIds(s, 'default')).length, before + 1);
  });

  test('keys are per project', async () => {
    const body = { app: 'sim', args: ['p'] };
    const a = await s.call('POST', `${P}/jobs`, { body, headers: key('shared-key') });
    const b = await s.call('POST', '/v1/projects/other/jobs', { body, headers: key('shared-key') });
    assert.equal(a.status, 201);
    assert.equal(b.status, 201);
    assert.equal(b.body.replayed, false);
    assert.notEqual(a.body.jobIds[0], b.body.jobIds[0]);
  });
});

describe('POST batches with Idempotency-Key', () => {
  test('a retry returns 200, replayed, the same batch and job ids, and writes nothing', async () => {
    const body = { app: 'sim', count: 3, labels: { k: 'v' } };
    const first = await s.call('POST', `${P}/batches`, { body, headers: key('batch-1') });
    assert.equal(first.status, 201, first.text);
    assert.equal(first.body.replayed, false);
    const jobsBefore = await allJobIds(s, 'default');
    const batchesBefore = await batchCount(s, 'default');
    const retry = await s.call('POST', `${P}/batches`, { body, headers: key('batch-1') });
    assert.equal(retry.status, 200, retry.text);
    assert.equal(retry.body.replayed, true);
    assert.deepEqual(retry.body.batch, first.body.batch);
    assert.deepEqual(retry.body.jobIds, first.body.jobIds);
    assert.equal(retry.body.jobCount, 3);
    assert.deepEqual(await allJobIds(s, 'default'), jobsBefore);
    assert.equal(await batchCount(s, 'default'), batchesBefore);
  });

  test('the same key with a different body is 409 conflict and writes nothing', async () => {
    const first = await s.call('POST', `${P}/batches`, { body: { app: 'sim', count: 2 }, headers: key('batch-2') });
    assert.equal(first.status, 201);
    const jobsBefore = await allJobIds(s, 'default');
    const batchesBefore = await batchCount(s, 'default');
    for (const body of [{ app: 'sim', count: 3 }, { app: 'sim', jobs: [{}, {}] }, { app: 'sim', sweep: { x: { values: [1, 2] } } }]) {
      const r = await s.call('POST', `${P}/batches`, { body, headers: key('batch-2') });
      assertError(r, 409, 'conflict', 'headers/idempotency-key', { messageNames: /Idempotency-Key/ });
    }
    assert.deepEqual(await allJobIds(s, 'default'), jobsBefore);
    assert.equal(await batchCount(s, 'default'), batchesBefore);
  });

  test('a key used for a job cannot be reused for a batch (and vice versa)', async () => {
    const j = await s.call('POST', `${P}/jobs`, { body: { app: 'sim' }, headers: key('mixed-1') });
    assert.equal(j.status, 201);
    assertError(await s.call('POST', `${P}/batches`, { body: { app: 'sim', count: 1 }, headers: key('mixed-1') }), 409, 'conflict', 'headers/idempotency-key', { messageNames: /Idempotency-Key/ });
    const b = await s.call('POST', `${P}/batches`, { body: { app: 'sim', count: 1 }, headers: key('mixed-2') });
    assert.equal(b.status, 201);
    assertError(await s.call('POST', `${P}/jobs`, { body: { app: 'sim' }, headers: key('mixed-2') }), 409, 'conflict', 'headers/idempotency-key', { messageNames: /Idempotency-Key/ });
  });

  test('a large batch replays by batch id (no id list) and writes nothing', async () => {
    const body = { app: 'sim', count: 2000 };
    const first = await s.call('POST', `${P}/batches`, { body, headers: key('batch-big') });
    assert.equal(first.status, 201);
    assert.equal(first.body.jobIds, undefined);
    const before = (await allJobIds(s, 'default')).length;
    const retry = await s.call('POST', `${P}/batches`, { body, headers: key('batch-big') });
    assert.equal(retry.status, 200);
    assert.equal(retry.body.replayed, true);
    assert.equal(retry.body.batch.id, first.body.batch.id);
    assert.equal(retry.body.jobCount, 2000);
    assert.equal((await allJobIds(s, 'default')).length, before);
  });

  test('a rejected request does not use up its key', async () => {
    const bad = await s.call('POST', `${P}/batches`, { body: { app: 'nope', count: 1 }, headers: key('batch-3') });
    assertError(bad, 400, 'invalid_request', 'body/app');
    const good = await s.call('POST', `${P}/batches`, { body: { app: 'sim', count: 1 }, headers: key('batch-3') });
    assert.equal(good.status, 201, good.text);
    assert.equal(good.body.replayed, false);
  });

  test('an empty or over-long key is a 400 naming the header', async () => {
    assertError(await s.call('POST', `${P}/jobs`, { body: { app: 'sim' }, headers: key('') }), 400, 'invalid_request', 'headers/idempotency-key');
    assertError(await s.call('POST', `${P}/batches`, { body: { app: 'sim', count: 1 }, headers: key('k'.repeat(201)) }), 400, 'invalid_request', 'headers/idempotency-key');
  });
});
