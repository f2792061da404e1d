import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { newCredential } from '../../src/service/credentials.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const RESOURCES = { cores: 8, memoryMiB: 16384, diskMiB: 100_000, gpus: 0 };

describe('host enrolment', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(() => s.stop());

  /** What an agent does: make its own credential, send the id and hash with the enrol token. */
  async function enroll(enrollToken: string, name = 'node-1', credential = newCredential('host')) {
    const r = await s.call('POST', '/agent/v1/enroll', {
      token: null,
      body: { enrollToken, name, resources: RESOURCES, platform: 'linux/amd64', credentialId: credential.id, credentialHash: credential.secretHash.toString('hex') },
    });
    return { r, credential };
  }

  test('an operator\'s enrolment token buys a host credential that works on the agent protocol only', async () => {
    const t = await s.call('POST', '/v1/enroll-tokens', { body: { site: 'lab', uses: 2, ttlSeconds: 3600 } });
    assert.equal(t.status, 201, t.text);
    assert.match(t.body.token, /^bge_[0-9a-f]{16}_/);
    assert.equal(t.body.site, 'lab');
    assert.equal(t.body.usesLeft, 2);
    const { r, credential } = await enroll(t.body.token);
    assert.equal(r.status, 201, r.text);
    const self = await s.call('GET', '/agent/v1/self', { token: credential.token });
    assert.equal(self.status, 200);
    assert.equal(self.body.id, r.body.hostId);
    assert.deepEqual(self.body.resources, RESOURCES);
    assert.equal((await s.call('GET', '/v1/me', { token: credential.token })).status, 401);
    assert.equal((await s.call('GET', '/agent/v1/self', { token: t.body.token })).status, 401, 'the enrolment token itself is no credential');
  });

  test('a retried enrolment returns the same host and spends no use; uses run out', async () => {
    const t = await s.call('POST', '/v1/enroll-tokens', { body: { uses: 2 } });
    assert.equal(t.body.site, 'default');
    const first = await enroll(t.body.token, 'a');
    const retry = await enroll(t.body.token, 'a', first.credential);
    assert.equal(retry.r.status, 200);
    assert.equal(retry.r.body.replayed, true);
    assert.equal(retry.r.body.hostId, first.r.body.hostId);
    assert.equal((await enroll(t.body.token, 'b')).r.status, 201, 'the retry did not spend the second use');
    const third = await enroll(t.body.token, 'c');
    assert.equal(third.r.status, 401);
    assert.match(third.r.body.error.message, /no uses left/);
    assert.equal((await s.call('GET', '/agent/v1/self', { token: third.credential.token })).status, 401);
  });

  test('bad enrolment tokens and malformed credentials are refused', async () => {
    const t = await s.call('POST', '/v1/enroll-tokens', { body: {} });
    const wrongSecret = t.body.token.slice(0, -4) + 'AAAA';
    assert.equal((await enroll(wrongSecret)).r.status, 401);
    assert.equal((await enroll(s.adminToken)).r.status, 401, 'a user token is not an enrolment token');
    const bad = await s.call('POST', '/agent/v1/enroll', {
      token: null,
      body: { enrollToken: t.body.token, name: 'x', resources: RESOURCES, platform: 'linux/amd64', credentialId: 'abc', credentialHash: 'nothex' },
    });
    assert.equal(bad.status, 400);
    assert.equal(bad.body.error.field, 'body/credentialId');
  });

  test('only operators create enrolment tokens and list hosts', async () => {
    const ada = await s.userWithRole('ada', 'default', 'admin');
    const r = await s.call('POST', '/v1/enroll-tokens', { token: ada, body: {} });
    assert.equal(r.status, 403);
    assert.equal((await s.call('GET', '/v1/hosts', { token: ada })).status, 403);
  });

  test('operators see every enrolled host with its site and resources', async () => {
    const t = await s.call('POST', '/v1/enroll-tokens', { body: { site: 'listing' } });
    const { r } = await enroll(t.body.token, 'listed-node');
    const list = await s.call('GET', '/v1/hosts');
    assert.equal(list.status, 200);
    const h = list.body.hosts.find((x: { id: number }) => x.id === r.body.hostId);
    assert.equal(h.name, 'listed-node');
    assert.equal(h.site, 'listing');
    assert.equal(h.state, 'active');
    assert.deepEqual(h.resources, RESOURCES);
    assert.equal(h.lastSeenAt, null);
    assert.equal(h.activeTasks, 0);
    assert.equal(h.pace, null, 'it has finished no task');
  });
});
