import assert from 'node:assert/strict';
import { after, before, describe, it, test } from 'node:test';
import { newCredential, parseToken } from '../../src/service/credentials.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { BIG, ok, P, withGrid } from './protocol-grid.js';
import { assertError, createApp, openEvents, submitJob } from './util.js';

/** Sites and enrolment (tokens with owners, address allowlists), host revocation and the audit log, through HTTP. */

const RESOURCES = { cores: 8, memoryMiB: 16384, diskMiB: 100_000, gpus: 0 };

/** What an agent does to enrol: its own credential, the id and hash sent with the enrolment token. */
async function enroll(s: TestServer, enrollToken: string, opts: { name?: string; headers?: Record<string, string> } = {}) {
  const credential = newCredential('host');
  const r = await s.call('POST', '/agent/v1/enroll', {
    token: null, ...(opts.headers ? { headers: opts.headers } : {}),
    body: { enrollToken, name: opts.name ?? 'node', resources: RESOURCES, platform: 'linux/amd64', credentialId: credential.id, credentialHash: credential.secretHash.toString('hex') },
  });
  return { r, credential };
}

async function newToken(s: TestServer, body: Record<string, unknown> = {}) {
  const t = await s.call('POST', '/v1/enroll-tokens', { body });
  assert.equal(t.status, 201, t.text);
  return t.body as { token: string; id: string; site: string; owner: string | null };
}

describe('sites and enrolment', () => {
  let s: TestServer;
  let ada: string;
  before(async () => {
    s = await startTestServer();
    ada = await s.userWithRole('ada', 'default', 'admin');
  });
  after(() => s.stop());

  test('enrolment tokens: an owner passes to the hosts; operators list them without secrets and revoke them, idempotently', async () => {
    const t = await newToken(s, { site: 'volunteers', owner: 'grace', uses: 5, label: 'grace\'s machines' });
    assert.equal(t.owner, 'grace');
    const { r } = await enroll(s, t.token, { name: 'grace-pc' });
    assert.equal(r.status, 201, r.text);
    const hosts = (await s.call('GET', '/v1/hosts')).body.hosts;
    assert.equal(hosts.find((h: { id: number }) => h.id === r.body.hostId).owner, 'grace');

    const list = await s.call('GET', '/v1/enroll-tokens');
    assert.equal(list.status, 200, list.text);
    const listed = list.body.tokens.find((x: { id: string }) => x.id === t.id);
    assert.deepEqual({ ...listed, createdAt: 'x' }, {
      id: t.id, site: 'volunteers', label: 'grace\'s machines', owner: 'grace', usesLeft: 4, expiresAt: null, revokedAt: null, createdAt: 'x',
    });
    const secret = parseToken(t.token)!.secret; // base64url: it may hold '_' itself
    assert.ok(!list.text.includes(secret), 'no secret in the list');

    assert.equal((await s.call('DELETE', `/v1/enroll-tokens/${t.id}`)).status, 204);
    assert.equal((await s.call('DELETE', `/v1/enroll-tokens/${t.id}`)).status, 204, 'again: no error, no change');
    const after = (await s.call('GET', '/v1/enroll-tokens')).body.tokens.find((x: { id: string }) => x.id === t.id);
    assert.match(after.revokedAt, /^\d{4}-/);
    assert.equal((await enroll(s, t.token, { name: 'late' })).r.status, 401, 'a revoked token enrols nobody');
    assert.equal((await s.call('GET', '/agent/v1/self', { token: (await enroll(s, t.token)).credential.token })).status, 401);
    assertError(await s.call('DELETE', '/v1/enroll-tokens/0000000000000000'), 404, 'not_found');
  });

  test('enrolment tokens: bad owners are 400 naming the field; only operators create, list and revoke them', async () => {
    assertError(await s.call('POST', '/v1/enroll-tokens', { body: { owner: 'Not An Account' } }), 400, 'invalid_request', 'body/owner');
    assertError(await s.call('POST', '/v1/enroll-tokens', { body: { owner: 'x'.repeat(64) } }), 400, 'invalid_request', 'body/owner');
    const t = await newToken(s);
    assertError(await s.call('GET', '/v1/enroll-tokens', { token: ada }), 403, 'forbidden');
    assertError(await s.call('DELETE', `/v1/enroll-tokens/${t.id}`, { token: ada }), 403, 'forbidden');
    assertError(await s.call('POST', '/v1/enroll-tokens', { token: ada, body: { owner: 'ada' } }), 403, 'forbidden');
    assert.equal((await s.call('GET', '/v1/enroll-tokens')).body.tokens.find((x: { id: string }) => x.id === t.id).revokedAt, null);
  });

  test('an allowlist of 10.0.0.0/8 refuses enrolment from 127.0.0.1 (403, nothing written); 127.0.0.0/8 admits it', async () => {
    const put = await s.call('PUT', '/v1/sites/lab', { body: { allowCidrs: ['10.0.0.0/8', '2001:DB8::/32'] } });
    assert.equal(put.status, 200, put.text);
    assert.deepEqual(put.body.allowCidrs, ['10.0.0.0/8', '2001:db8::/32']);
    const t = await newToken(s, { site: 'lab', uses: 1 });
    const before = (await s.call('GET', '/v1/hosts')).body.hosts.length;
    const refused = await enroll(s, t.token);
    assertError(refused.r, 403, 'forbidden');
    assert.match(refused.r.body.error.message, /127\.0\.0\.1.*not allowed at site "lab"/);
    assert.equal((await s.call('GET', '/v1/hosts')).body.hosts.length, before, 'no host was created');
    assert.equal((await s.call('GET', '/v1/enroll-tokens')).body.tokens.find((x: { id: string }) => x.id === t.id).usesLeft, 1, 'no use was spent');

    await s.call('PUT', '/v1/sites/lab', { body: { allowCidrs: ['10.0.0.0/8', '127.0.0.0/8'] } });
    const admitted = await enroll(s, t.token);
    assert.equal(admitted.r.status, 201, admitted.r.text);
    const sites = (await s.call('GET', '/v1/sites')).body.sites;
    assert.deepEqual(sites.find((x: { name: string }) => x.name === 'lab'), { ...sites.find((x: { name: string }) => x.name === 'lab'), allowCidrs: ['10.0.0.0/8', '127.0.0.0/8'], activeHosts: 1, revokedHosts: 0 });
  });

  test('agent calls of a site\'s hosts from outside its allowlist are refused as soon as it changes; v4-mapped ranges match IPv4 clients', async () => {
    const t = await newToken(s, { site: 'campus' });
    const { r, credential } = await enroll(s, t.token);
    assert.equal(r.status, 201, r.text);
    const self = () => s.call('GET', '/agent/v1/self', { token: credential.token });
    assert.equal((await self()).status, 200);
    await s.call('PUT', '/v1/sites/campus', { body: { allowCidrs: ['10.0.0.0/8'] } });
    const refused = await self();
    assertError(refused, 403, 'forbidden');
    assert.match(refused.body.error.message, /not allowed at site "campus"/);
    await s.call('PUT', '/v1/sites/campus', { body: { allowCidrs: ['::ffff:127.0.0.0/104'] } });
    assert.equal((await self()).status, 200, 'an IPv4 client matches the IPv4-mapped IPv6 range');
    await s.call('PUT', '/v1/sites/campus', { body: {} });
    assert.equal((await self()).status, 200, 'no list: any address');
  });

  test('site changes: bad CIDRs are 400 naming the entry and change nothing; bad names 400; operators only', async () => {
    await s.call('PUT', '/v1/sites/strict', { body: { allowCidrs: ['192.168.0.0/16'] } });
    for (const bad of ['10.0.0.0/33', 'nope', '10.0.0.0/8/1', 'fe80::1%eth0/64', '2001:db8::/129', '10.0.0/8']) {
      const r = await s.call('PUT', '/v1/sites/strict', { body: { allowCidrs: ['10.0.0.0/8', bad] } });
      assertError(r, 400, 'invalid_request', 'body/allowCidrs/1');
    }
    assertError(await s.call('PUT', '/v1/sites/strict', { body: { allowCidrs: '10.0.0.0/8' } }), 400, 'invalid_request', 'body/allowCidrs');
    assertError(await s.call('PUT', '/v1/sites/strict', { body: { allow: [] } }), 400, 'invalid_request', 'body/allow');
    assert.deepEqual((await s.call('GET', '/v1/sites')).body.sites.find((x: { name: string }) => x.name === 'strict').allowCidrs, ['192.168.0.0/16']);
    assertError(await s.call('PUT', '/v1/sites/Bad%20Name', { body: { allowCidrs: [] } }), 400, 'invalid_request', 'params/name');
    assertError(await s.call('PUT', '/v1/sites/strict', { token: ada, body: { allowCidrs: [] } }), 403, 'forbidden');
    assertError(await s.call('GET', '/v1/sites', { token: ada }), 403, 'forbidden');
  });
});

describe('behind a proxy (trustProxy)', () => {
  it('with the proxy trusted, the client address comes from X-Forwarded-For; without, the header is ignored', async () => {
    for (const trusted of [true, false]) {
      const s = await startTestServer(trusted ? { http: { trustProxy: '127.0.0.1' } } : {});
      try {
        await s.call('PUT', '/v1/sites/lab', { body: { allowCidrs: ['10.0.0.0/8'] } });
        const t = await newToken(s, { site: 'lab' });
        const { r } = await enroll(s, t.token, { headers: { 'x-forwarded-for': '10.1.2.3' } });
        assert.equal(r.status, trusted ? 201 : 403, r.text);
      } finally {
        await s.stop();
      }
    }
  });
});

describe('host revocation', () => {
  it('aborts the host\'s tasks, requeues their jobs at once without spending an attempt, locks the host out; again changes nothing', () =>
    withGrid(async (g) => {
      await createApp(g.s, P, 'sim');
      const jobs = [await submitJob(g.s, P, { app: 'sim' }), await submitJob(g.s, P, { app: 'sim' }), await submitJob(g.s, P, { app: 'sim' })];
      const h1 = await g.host();
      const h2 = await g.host();
      const tasks = await h1.claim({ free: BIG, maxTasks: 3 });
      assert.equal(tasks.length, 3);
      assert.equal((await h1.heartbeat([{ taskId: tasks[0].taskId }])).status, 200);
      assert.equal((await h1.report(tasks[2].taskId, ok)).status, 200);
      const stream = await openEvents(g.s, `/v1/projects/${P}/events?job=${tasks[0].jobId}`);
      try {
        const r = await g.s.call('POST', `/v1/hosts/${h1.id}/revoke`);
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.revoked, true);
        assert.equal(r.body.host.state, 'revoked');
        assert.deepEqual([...r.body.abortedTasks].sort(), [tasks[0].taskId, tasks[1].taskId].sort());
        assert.deepEqual([...r.body.requeuedJobs].sort(), [tasks[0].jobId, tasks[1].jobId].sort());
        const event = await stream.until((e) => e.data.state === 'queued');
        assert.match(event.data.reason, /revoked/);
      } finally {
        stream.close();
      }
      for (const t of tasks.slice(0, 2)) {
        const { job, tasks: ts } = await g.job(t.jobId);
        assert.deepEqual([job.state, job.attempts, job.retryAt], ['queued', 0, null]);
        assert.deepEqual([ts[0].state, ts[0].reason], ['aborted', 'its host was revoked']);
      }
      assert.equal((await g.job(tasks[2].jobId)).job.state, 'succeeded', 'what the host finished stands');

      // The host's credential no longer works, for any call.
      assertError(await h1.call('GET', '/self'), 401, 'unauthenticated');
      assertError(await h1.report(tasks[0].taskId, ok), 401, 'unauthenticated');
      assertError(await h1.heartbeat([{ taskId: tasks[1].taskId }]), 401, 'unauthenticated');
      const listed = (await g.s.call('GET', '/v1/hosts')).body.hosts.find((h: { id: number }) => h.id === h1.id);
      assert.deepEqual([listed.state, listed.activeTasks], ['revoked', 0]);

      const again = await g.s.call('POST', `/v1/hosts/${h1.id}/revoke`);
      assert.equal(again.status, 200, again.text);
      assert.deepEqual([again.body.revoked, again.body.abortedTasks, again.body.requeuedJobs], [false, [], []]);

      // Another host takes the requeued jobs at once, as the same attempt.
      const next = await h2.claim({ free: BIG, maxTasks: 3 });
      assert.deepEqual(next.map((t) => [t.jobId, t.attempt]).sort(), [[tasks[0].jobId, 1], [tasks[1].jobId, 1]].sort());
      assert.ok(jobs.includes(next[0].jobId));

      assertError(await g.s.call('POST', '/v1/hosts/99999/revoke'), 404, 'not_found');
      assertError(await g.s.call('POST', '/v1/hosts/0/revoke'), 400, 'invalid_request', 'params/id');
      const ada = await g.s.userWithRole('ada', P, 'admin');
      assertError(await g.s.call('POST', `/v1/hosts/${h2.id}/revoke`, { token: ada }), 403, 'forbidden');
      assert.equal((await h2.call('GET', '/self')).status, 200);
    }));
});

describe('audit log', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(() => s.stop());

  test('operators\' and admins\' actions are logged (who, what, when) without secrets; newest first, by action, paged', async () => {
    const start = Date.now();
    assert.equal((await s.call('POST', '/v1/projects', { body: { name: 'physics' } })).status, 201);
    assert.equal((await s.call('POST', '/v1/users', { body: { name: 'bob' } })).status, 201);
    assert.equal((await s.call('PUT', '/v1/projects/physics/members/bob', { body: { role: 'admin' } })).status, 200);
    const bobToken = await s.call('POST', '/v1/tokens', { body: { user: 'bob', label: 'laptop' } });
    assert.equal(bobToken.status, 201);
    assert.equal((await s.call('PATCH', '/v1/projects/physics', { body: { shareWeight: 3 } })).status, 200);
    const et = await newToken(s, { site: 'lab', owner: 'bob' });
    assert.equal((await s.call('DELETE', `/v1/enroll-tokens/${et.id}`)).status, 204);
    assert.equal((await s.call('PUT', '/v1/sites/lab', { body: { allowCidrs: ['10.0.0.0/8'] } })).status, 200);
    // Bob, project admin: grants a member himself; his own token revoked.
    assert.equal((await s.call('POST', '/v1/users', { body: { name: 'carol' } })).status, 201);
    assert.equal((await s.call('PUT', '/v1/projects/physics/members/carol', { token: bobToken.body.token, body: { role: 'viewer' } })).status, 200);
    assert.equal((await s.call('DELETE', `/v1/tokens/${bobToken.body.id}`, { token: bobToken.body.token })).status, 204);

    const r = await s.call('GET', '/v1/audit?limit=1000');
    assert.equal(r.status, 200, r.text);
    const entries = r.body.entries as Array<{ id: number; at: string; actor: { name: string }; action: string; target: string; project: string | null; detail: Record<string, unknown> }>;
    assert.deepEqual(entries.map((e) => [e.actor.name, e.action, e.target]), [
      ['bob', 'token.revoke', `token ${bobToken.body.id}`],
      ['bob', 'member.set', 'project physics user carol'],
      ['admin', 'user.create', 'user carol'],
      ['admin', 'site.update', 'site lab'],
      ['admin', 'enroll_token.revoke', `enroll-token ${et.id}`],
      ['admin', 'enroll_token.create', `enroll-token ${et.id}`],
      ['admin', 'project.share_weight', 'project physics'],
      ['admin', 'token.create', `token ${bobToken.body.id}`],
      ['admin', 'member.set', 'project physics user bob'],
      ['admin', 'user.create', 'user bob'],
      ['admin', 'project.create', 'project physics'],
    ]);
    for (const e of entries) assert.ok(Date.parse(e.at) >= start - 1000 && Date.parse(e.at) <= Date.now());
    assert.deepEqual(entries.find((e) => e.action === 'project.share_weight')!.detail, { from: 1, to: 3 });
    assert.deepEqual(entries.find((e) => e.action === 'site.update')!.detail, { allowCidrs: ['10.0.0.0/8'] });
    assert.deepEqual(entries.find((e) => e.action === 'enroll_token.create')!.detail, { site: 'lab', label: '', uses: null, expiresAt: null, owner: 'bob' });
    assert.equal(entries.find((e) => e.action === 'member.set')!.project, 'physics');
    // The whole secret (base64url may hold '_': a piece after the last one can be a few letters found anywhere).
    for (const token of [bobToken.body.token, et.token, s.adminToken]) assert.ok(!r.text.includes(parseToken(token)!.secret), 'no secret is logged');

    const byAction = await s.call('GET', '/v1/audit?action=member.set');
    assert.deepEqual(byAction.body.entries.map((e: { target: string }) => e.target), ['project physics user carol', 'project physics user bob']);
    const seen: number[] = [];
    let cursor: string | null = null;
    do {
      const page: { body: { entries: Array<{ id: number }>; nextCursor: string | null } } = await s.call('GET', `/v1/audit?limit=4${cursor === null ? '' : `&cursor=${cursor}`}`);
      seen.push(...page.body.entries.map((e) => e.id));
      cursor = page.body.nextCursor;
    } while (cursor !== null);
    assert.deepEqual(seen, entries.map((e) => e.id), 'pages neither overlap nor skip');
  });

  test('project admins read their project\'s entries; others 403 or 404; bad queries are 400 naming the field', async () => {
    const dora = await s.userWithRole('dora', 'chem', 'admin');
    const eve = await s.userWithRole('eve', 'chem', 'submitter');
    const frank = await s.userWithRole('frank');
    const mine = await s.call('GET', '/v1/projects/chem/audit', { token: dora });
    assert.equal(mine.status, 200, mine.text);
    assert.deepEqual(mine.body.entries.map((e: { action: string; project: string }) => [e.action, e.project]), [
      ['member.set', 'chem'], ['member.set', 'chem'], ['project.create', 'chem'],
    ]);
    assertError(await s.call('GET', '/v1/audit', { token: dora }), 403, 'forbidden');
    assertError(await s.call('GET', '/v1/projects/chem/audit', { token: eve }), 403, 'forbidden');
    assertError(await s.call('GET', '/v1/projects/chem/audit', { token: frank }), 404, 'not_found');
    assertError(await s.call('GET', '/v1/audit?cursor=bm9wZQ'), 400, 'invalid_request', 'querystring/cursor');
    assertError(await s.call('GET', '/v1/audit?action=job.submit'), 400, 'invalid_request', 'querystring/action');
    assertError(await s.call('GET', '/v1/audit?limit=0'), 400, 'invalid_request', 'querystring/limit');
  });
});
