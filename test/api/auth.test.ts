import assert from 'node:assert/strict';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { issueToken } from '../../src/service/credentials.js';
import { assertError, openDb } from './util.js';

/** Who may call what: bearer tokens, their two kinds, and how they are kept. */

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(async () => {
  await s.stop();
});

async function hostToken(name: string): Promise<{ token: string; hostId: number }> {
  const now = Date.now();
  const site = (await s.ctx.store.getSiteByName('lab')) ?? (await s.ctx.store.createSite('lab', now));
  const host = await s.ctx.store.createHost({ siteId: site.id, name, resources: { cores: 2, memoryMiB: 1024, diskMiB: 1024, gpus: 0 }, platform: 'linux/amd64' }, now);
  const issued = issueToken('host', host.id, 'test', now);
  await s.ctx.store.insertToken(issued.record);
  return { token: issued.token, hostId: host.id };
}

describe('user API rejects bad credentials with 401 unauthenticated', () => {
  const cases: Array<[string, () => Record<string, string> | string | null]> = [
    ['no Authorization header', () => null],
    ['a Basic scheme', () => ({ authorization: 'Basic YWRtaW46YWRtaW4=' })],
    ['"Bearer" with no token', () => ({ authorization: 'Bearer ' })],
    ['a malformed token', () => 'not-a-token'],
    ['a token with a bad secret length', () => s.adminToken.slice(0, -1)],
    ['the right id with a wrong secret', () => s.adminToken.replace(/_[^_]+$/, '_' + 'A'.repeat(43))],
    ['an unknown id', () => s.adminToken.replace(/^bgu_[0-9a-f]{16}/, 'bgu_0000000000000000')],
    ['a kind that does not exist', () => s.adminToken.replace(/^bgu_/, 'bgx_')],
    ['a user token presented as a host token', () => s.adminToken.replace(/^bgu_/, 'bgh_')],
  ];
  for (const [name, make] of cases) {
    test(name, async () => {
      const m = make();
      const opts = m === null ? { token: null } : typeof m === 'string' ? { token: m } : { token: null, headers: m };
      for (const [method, path] of [['GET', '/v1/me'], ['GET', '/v1/projects/default/jobs'], ['POST', '/v1/users']] as const) {
        const r = await s.call(method, path, { ...opts, ...(method === 'POST' ? { body: { name: 'intruder' } } : {}) });
        assertError(r, 401, 'unauthenticated');
      }
    });
  }

  test('nothing was created by the rejected calls', async () => {
    const db = openDb(s);
    try {
      assert.equal((db.prepare(`SELECT count(*) AS n FROM users WHERE name = 'intruder'`).get() as { n: number }).n, 0);
    } finally {
      db.close();
    }
  });

  test('an expired token', async () => {
    const admin = await s.ctx.store.getUserByName('admin');
    const issued = issueToken('user', admin!.id, 'old', Date.now() - 7_200_000, Date.now() - 3_600_000);
    await s.ctx.store.insertToken(issued.record);
    assertError(await s.call('GET', '/v1/me', { token: issued.token }), 401, 'unauthenticated');
  });

  test('a revoked token', async () => {
    const admin = await s.ctx.store.getUserByName('admin');
    const issued = issueToken('user', admin!.id, 'revoked', Date.now());
    await s.ctx.store.insertToken({ ...issued.record, revokedAt: Date.now() - 1 });
    assertError(await s.call('GET', '/v1/me', { token: issued.token }), 401, 'unauthenticated');
  });

  test('a token whose user was deleted', async () => {
    const token = await s.userWithRole('gone', 'default', 'submitter');
    assert.equal((await s.call('GET', '/v1/me', { token })).status, 200);
    const db = openDb(s);
    try {
      const id = (db.prepare(`SELECT id FROM users WHERE name = 'gone'`).get() as { id: number }).id;
      db.prepare('DELETE FROM memberships WHERE user_id = ?').run(id);
      db.prepare('DELETE FROM users WHERE id = ?').run(id);
    } finally {
      db.close();
    }
    assertError(await s.call('GET', '/v1/me', { token }), 401, 'unauthenticated');
    assertError(await s.call('GET', '/v1/projects/default/jobs', { token }), 401, 'unauthenticated');
  });

  test('a token naming a host that does not exist', async () => {
    const issued = issueToken('host', 424242, 'ghost', Date.now());
    await s.ctx.store.insertToken(issued.record);
    assertError(await s.call('GET', '/agent/v1/self', { token: issued.token }), 401, 'unauthenticated');
  });

  test('a host whose credential was revoked', async () => {
    const { token, hostId } = await hostToken('revoked-host');
    assert.equal((await s.call('GET', '/agent/v1/self', { token })).status, 200);
    const db = openDb(s);
    try {
      db.prepare(`UPDATE hosts SET state = 'revoked' WHERE id = ?`).run(hostId);
    } finally {
      db.close();
    }
    assertError(await s.call('GET', '/agent/v1/self', { token }), 401, 'unauthenticated');
  });

  test('health, readiness and the OpenAPI document need no token', async () => {
    for (const p of ['/healthz', '/readyz', '/openapi.json']) assert.equal((await s.call('GET', p, { token: null })).status, 200, p);
  });
});

describe('the two APIs take only their own kind of credential', () => {
  test('a host credential cannot call /v1', async () => {
    const { token } = await hostToken('h-v1');
    for (const [method, path] of [['GET', '/v1/me'], ['GET', '/v1/projects'], ['GET', '/v1/projects/default/jobs'], ['POST', '/v1/projects/default/jobs']] as const) {
      const r = await s.call(method, path, { token, ...(method === 'POST' ? { body: { app: 'x' } } : {}) });
      assertError(r, 401, 'unauthenticated');
    }
  });

  test('a host credential can call /agent/v1/self and sees its own host', async () => {
    const { token, hostId } = await hostToken('h-self');
    const r = await s.call('GET', '/agent/v1/self', { token });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body, { id: hostId, name: 'h-self', state: 'active', resources: { cores: 2, memoryMiB: 1024, diskMiB: 1024, gpus: 0 }, platform: 'linux/amd64' });
  });

  test('a user token (even an operator\'s) cannot call /agent/v1', async () => {
    assertError(await s.call('GET', '/agent/v1/self'), 401, 'unauthenticated');
    const user = await s.userWithRole('plain');
    assertError(await s.call('GET', '/agent/v1/self', { token: user }), 401, 'unauthenticated');
    assertError(await s.call('GET', '/agent/v1/self', { token: null }), 401, 'unauthenticated');
  });
});

describe('how tokens are kept', () => {
  test('neither the admin token nor its secret appears in the SQLite files; only its id does', async () => {
    // Make some more writes so that the WAL has content as well as the main file.
    const extra = await s.call('POST', '/v1/tokens', { body: { label: 'extra' } });
    assert.equal(extra.status, 201);
    const files = [join(s.dataDir, 'boxgrid.db'), join(s.dataDir, 'boxgrid.db-wal')];
    const bytes = Buffer.concat(await Promise.all(files.map((f) => readFile(f).catch(() => Buffer.alloc(0)))));
    assert.ok(bytes.length > 0);
    for (const token of [s.adminToken, extra.body.token as string]) {
      const [, id, secret] = /^bgu_([0-9a-f]{16})_(.+)$/.exec(token)!;
      assert.ok(bytes.includes(Buffer.from(id!)), 'the token id should be stored (sanity check of the search)');
      assert.ok(!bytes.includes(Buffer.from(token)), 'the raw token is stored');
      assert.ok(!bytes.includes(Buffer.from(secret!)), 'the secret is stored');
      assert.ok(!bytes.includes(Buffer.from(secret!, 'base64url')), 'the decoded secret is stored');
      assert.ok(!bytes.includes(Buffer.from(secret!.slice(0, 24))), 'part of the secret is stored');
    }
  });

  test('admin.token holds the bootstrap token and has mode 0600', async () => {
    const file = join(s.dataDir, 'admin.token');
    const st = await stat(file);
    assert.equal(st.mode & 0o777, 0o600);
    assert.equal((await readFile(file, 'utf8')).trim(), s.adminToken);
  });
});
