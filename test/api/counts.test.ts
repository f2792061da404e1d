import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { JOB_STATES } from '../../src/domain/states.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { assertError, createApp, submitJob } from './util.js';

/** GET /v1/projects/{p}/counts: every job of the project by state, in a batch or not. */

let s: TestServer;
let vic: string; // viewer in p
let oto: string; // submitter in another project
const zero = Object.fromEntries(JOB_STATES.map((st) => [st, 0]));

before(async () => {
  s = await startTestServer();
  vic = await s.userWithRole('vic', 'p', 'viewer');
  oto = await s.userWithRole('oto', 'other', 'submitter');
  await createApp(s, 'p', 'sim');
  await createApp(s, 'other', 'sim', {}, oto);
});
after(async () => {
  await s.stop();
});

describe('project counts', () => {
  test('an empty project counts zeros in every state', async () => {
    const r = await s.call('GET', '/v1/projects/p/counts', { token: vic });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body, { counts: zero });
  });

  test('counts jobs submitted alone and in batches, and nothing of another project', async () => {
    const alone = await submitJob(s, 'p', { app: 'sim' });
    await submitJob(s, 'p', { app: 'sim' });
    const batch = await s.call('POST', '/v1/projects/p/batches', { body: { app: 'sim', count: 3 } });
    assert.equal(batch.status, 201, batch.text);
    await submitJob(s, 'other', { app: 'sim' }, oto);
    assert.equal((await s.call('POST', '/v1/projects/other/batches', { body: { app: 'sim', count: 4 }, token: oto })).status, 201);

    assert.deepEqual((await s.call('GET', '/v1/projects/p/counts', { token: vic })).body, { counts: { ...zero, queued: 5 } });
    assert.equal((await s.call('POST', `/v1/projects/p/jobs/${alone}/cancel`)).status, 200);
    assert.equal((await s.call('POST', `/v1/projects/p/jobs/${batch.body.jobIds[0]}/cancel`)).status, 200);
    const r = await s.call('GET', '/v1/projects/p/counts', { token: vic });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body, { counts: { ...zero, queued: 3, cancelled: 2 } });
    assert.deepEqual((await s.call('GET', '/v1/projects/other/counts', { token: oto })).body, { counts: { ...zero, queued: 5 } });
    await createApp(s, 'p', 'viz');
    await submitJob(s, 'p', { app: 'viz' });
    assert.deepEqual((await s.call('GET', '/v1/projects/p/counts?app=sim', { token: vic })).body, { counts: { ...zero, queued: 3, cancelled: 2 } });
    assert.deepEqual((await s.call('GET', '/v1/projects/p/counts?app=viz', { token: vic })).body, { counts: { ...zero, queued: 1 } });
    assert.deepEqual((await s.call('GET', '/v1/projects/p/counts?app=none', { token: vic })).body, { counts: zero });
    assert.deepEqual((await s.call('GET', '/v1/projects/p/counts', { token: vic })).body, { counts: { ...zero, queued: 4, cancelled: 2 } });
    assertError(await s.call('GET', `/v1/projects/p/counts?app=${'x'.repeat(64)}`, { token: vic }), 400, 'invalid_request');
  });

  test("another project's user gets 404, as for a project that does not exist", async () => {
    assertError(await s.call('GET', '/v1/projects/p/counts', { token: oto }), 404, 'not_found');
    assertError(await s.call('GET', '/v1/projects/nope/counts', { token: oto }), 404, 'not_found');
  });

  test('no token: 401', async () => {
    assertError(await s.call('GET', '/v1/projects/p/counts', { token: null }), 401, 'unauthenticated');
  });
});
