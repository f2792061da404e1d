import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { allJobIds, assertError, createApp, OCTET, openEvents, stopAfterStreams, submitJob, uploadBlob, type SseStream } from './util.js';

/**
 * Projects are walls: a non-member learns nothing about another project (404, exactly as for a
 * project that does not exist), a viewer may read but not change, and only operators manage
 * users and projects.
 */

let s: TestServer;
let ana: string; // submitter in a
let vic: string; // viewer in a
let pam: string; // project admin in a (not an operator)
const b = { job: 0, job2: 0, batch: 0, batchJobs: [] as number[], digest: '', bytes: Buffer.from('project b secret data\n') };
const a = { job: 0, batch: 0, digest: '' };
const streams: SseStream[] = [];

before(async () => {
  s = await startTestServer();
  ana = await s.userWithRole('ana', 'a', 'submitter');
  vic = await s.userWithRole('vic', 'a', 'viewer');
  pam = await s.userWithRole('pam', 'a', 'admin');
  await s.call('POST', '/v1/projects', { body: { name: 'b' } });
  await createApp(s, 'b', 'sim');
  b.job = await submitJob(s, 'b', { app: 'sim', labels: { secret: 'yes' } });
  b.job2 = await submitJob(s, 'b', { app: 'sim' });
  const batch = await s.call('POST', '/v1/projects/b/batches', { body: { app: 'sim', count: 3 } });
  b.batch = batch.body.batch.id;
  b.batchJobs = batch.body.jobIds;
  b.digest = await uploadBlob(s, 'b', b.bytes);
  await createApp(s, 'a', 'sim');
  a.job = await submitJob(s, 'a', { app: 'sim' });
  a.batch = (await s.call('POST', '/v1/projects/a/batches', { body: { app: 'sim', count: 2 } })).body.batch.id;
  a.digest = await uploadBlob(s, 'a', Buffer.from('project a data'));
});
after(async () => {
  for (const st of streams) st.close();
  await stopAfterStreams(s);
});

// Every route under /v1/projects/{p}, method by method — a non-member's 404 equal to a missing
// project's, a viewer's 403 — is proven in route-access.test.ts, which reads the routes from the
// server itself. Here: what the walls look like from the member's side.
describe('a member of project a sees only a', () => {
  test('its /me and /projects name a alone', async () => {
    const me = await s.call('GET', '/v1/me', { token: ana });
    assert.deepEqual(me.body.projects.map((p: { name: string }) => p.name), ['a']);
    const list = await s.call('GET', '/v1/projects', { token: ana });
    assert.deepEqual(list.body.projects.map((p: { name: string }) => p.name), ['a']);
  });
});

describe('ids of b\'s objects asked for through project a', () => {
  test('a job of b is not found in a, and cannot be cancelled through a', async () => {
    assertError(await s.call('GET', `/v1/projects/a/jobs/${b.job}`, { token: ana }), 404, 'not_found');
    assertError(await s.call('POST', `/v1/projects/a/jobs/${b.job2}/cancel`, { token: ana }), 404, 'not_found');
    assert.equal((await s.call('GET', `/v1/projects/b/jobs/${b.job2}`)).body.job.state, 'queued');
    assert.ok(!(await allJobIds(s, 'a', '', ana)).includes(b.job));
    const filtered = await s.call('GET', `/v1/projects/a/jobs?batch=${b.batch}`, { token: ana });
    assert.deepEqual(filtered.body.jobs, []);
    const labelled = await s.call('GET', '/v1/projects/a/jobs?label=secret=yes', { token: ana });
    assert.deepEqual(labelled.body.jobs, []);
  });

  test('a batch of b is not found in a, and cannot be cancelled through a', async () => {
    assertError(await s.call('GET', `/v1/projects/a/batches/${b.batch}`, { token: ana }), 404, 'not_found');
    assertError(await s.call('POST', `/v1/projects/a/batches/${b.batch}/cancel`, { token: ana }), 404, 'not_found');
    assertError(await s.call('GET', `/v1/projects/a/events?batch=${b.batch}`, { token: ana }), 404, 'not_found');
    assertError(await s.call('GET', `/v1/projects/a/events?job=${b.job}`, { token: ana }), 404, 'not_found');
    const g = await s.call('GET', `/v1/projects/b/batches/${b.batch}`);
    assert.equal(g.body.counts.queued, 3);
  });

  test('b\'s app is unknown to a', async () => {
    await s.call('POST', '/v1/projects/b/apps', { body: { name: 'only-b', image: 'sci/b' } });
    assertError(await s.call('GET', '/v1/projects/a/apps/only-b', { token: ana }), 404, 'not_found');
    assertError(await s.call('POST', '/v1/projects/a/jobs', { token: ana, body: { app: 'only-b' } }), 400, 'invalid_request', 'body/app');
  });

  test('a blob b uploaded is not readable through a even by its digest, nor usable as a job input', async () => {
    assert.equal((await s.call('HEAD', `/v1/projects/a/blobs/${b.digest}`, { token: ana })).status, 404);
    assertError(await s.call('GET', `/v1/projects/a/blobs/${b.digest}`, { token: ana }), 404, 'not_found');
    assertError(await s.call('GET', `/v1/projects/a/blobs/${b.digest}`, { token: ana, headers: { range: 'bytes=0-3' } }), 404, 'not_found');
    const before = await allJobIds(s, 'a', '', ana);
    const r = await s.call('POST', '/v1/projects/a/jobs', { token: ana, body: { app: 'sim', inputs: { 'data.txt': b.digest } } });
    assertError(r, 400, 'invalid_request', 'body/inputs');
    assert.deepEqual(await allJobIds(s, 'a', '', ana), before);
  });

  test('claiming b\'s digest with other bytes fails and changes neither project', async () => {
    const r = await s.call('PUT', `/v1/projects/a/blobs/${b.digest}`, { token: ana, raw: 'forged content', headers: { ...OCTET } });
    assertError(r, 422, 'digest_mismatch', 'params/sha256');
    assert.equal((await s.call('HEAD', `/v1/projects/a/blobs/${b.digest}`, { token: ana })).status, 404);
    const orig = await s.call('GET', `/v1/projects/b/blobs/${b.digest}`);
    assert.equal(orig.text, b.bytes.toString());
  });

  test('once a uploads the same bytes itself, a can read them (and b still can)', async () => {
    const r = await s.call('PUT', `/v1/projects/a/blobs/${b.digest}`, { token: ana, raw: b.bytes as unknown as BodyInit, headers: { ...OCTET } });
    assert.equal(r.status, 201, r.text); // new for a, even though the content was stored for b
    assert.equal(r.body.size, b.bytes.length);
    const got = await s.call('GET', `/v1/projects/a/blobs/${b.digest}`, { token: ana });
    assert.equal(got.status, 200);
    assert.equal(got.text, b.bytes.toString());
    assert.equal((await s.call('GET', `/v1/projects/b/blobs/${b.digest}`)).text, b.bytes.toString());
    const job = await s.call('POST', '/v1/projects/a/jobs', { token: ana, body: { app: 'sim', inputs: { 'data.txt': b.digest } } });
    assert.equal(job.status, 201, job.text);
  });

  test('a\'s event stream does not carry b\'s events', { timeout: 10_000 }, async () => {
    const st = await openEvents(s, '/v1/projects/a/events', { token: ana });
    streams.push(st);
    const bJob = await submitJob(s, 'b', { app: 'sim' });
    assert.equal((await s.call('POST', `/v1/projects/b/jobs/${bJob}/cancel`)).status, 200);
    assert.equal((await s.call('POST', `/v1/projects/b/batches/${b.batch}/cancel`)).status, 200);
    const aJob = await submitJob(s, 'a', { app: 'sim' }, ana);
    const first = await st.next();
    assert.equal(first.event, 'job');
    assert.equal(first.data.jobId, aJob, `a's stream got ${JSON.stringify(first)}`);
    st.close();
  });
});

describe('a viewer reads but does not change its own project', () => {
  const P = '/v1/projects/a';
  test('200 on every read', { timeout: 10_000 }, async () => {
    const reads: Array<[string, string]> = [
      ['GET', '/v1/me'], ['GET', '/v1/projects'], ['GET', `${P}/apps`], ['GET', `${P}/apps/sim`], ['GET', `${P}/apps/sim?version=1`],
      ['GET', `${P}/jobs`], ['GET', `${P}/jobs?state=queued`], ['GET', `${P}/jobs/${a.job}`], ['GET', `${P}/batches`],
      ['GET', `${P}/batches/${a.batch}`], ['HEAD', `${P}/blobs/${a.digest}`], ['GET', `${P}/blobs/${a.digest}`],
    ];
    for (const [method, path] of reads) {
      const r = await s.call(method, path, { token: vic });
      assert.equal(r.status, 200, `${method} ${path}: ${r.text}`);
    }
    assert.equal((await s.call('GET', `${P}/blobs/${a.digest}`, { token: vic })).text, 'project a data');
    const st = await openEvents(s, `${P}/events?batch=${a.batch}`, { token: vic });
    streams.push(st);
    assert.match(st.contentType ?? '', /text\/event-stream/);
    st.close();
  });

  test('the viewer can still make tokens for itself', async () => {
    const t = await s.call('POST', '/v1/tokens', { token: vic, body: { label: 'mine' } });
    assert.equal(t.status, 201);
    assert.equal(t.body.user, 'vic');
  });
});

describe('a submitter registers apps but does not manage members', () => {
  test('a submitter creates apps and app versions (scientists bring their own applications)', async () => {
    const created = await s.call('POST', '/v1/projects/a/apps', { token: ana, body: { name: 'by-submitter', image: 'sci/s' } });
    assert.equal(created.status, 201);
    const v2 = await s.call('POST', '/v1/projects/a/apps/by-submitter/versions', { token: ana, body: { image: 'sci/s:2' } });
    assert.equal(v2.status, 201);
    assert.equal(v2.body.version, 2);
  });
});

describe('only operators manage users, projects and other people\'s tokens', () => {
  for (const [who, token] of [['a submitter', () => ana], ['a project admin', () => pam], ['a viewer', () => vic]] as const) {
    test(`${who} gets 403 creating users, projects or tokens for others, and nothing is created`, async () => {
      assertError(await s.call('POST', '/v1/users', { token: token(), body: { name: 'mallory' } }), 403, 'forbidden');
      assertError(await s.call('POST', '/v1/users', { token: token(), body: { name: 'mallory-op', operator: true } }), 403, 'forbidden');
      assertError(await s.call('POST', '/v1/projects', { token: token(), body: { name: 'rogue' } }), 403, 'forbidden');
      assertError(await s.call('POST', '/v1/tokens', { token: token(), body: { user: 'admin' } }), 403, 'forbidden');
      const other = token() === vic ? 'ana' : 'vic';
      assertError(await s.call('POST', '/v1/tokens', { token: token(), body: { user: other } }), 403, 'forbidden');
      assertError(await s.call('POST', '/v1/tokens', { token: token(), body: { user: 'nobody-at-all' } }), 403, 'forbidden');
      const projects = await s.call('GET', '/v1/projects');
      assert.ok(!projects.body.projects.some((p: { name: string }) => p.name === 'rogue'));
    });
  }

  test('the names the rejected calls tried are still free', async () => {
    assert.equal((await s.call('POST', '/v1/users', { body: { name: 'mallory' } })).status, 201);
    assert.equal((await s.call('POST', '/v1/users', { body: { name: 'mallory-op' } })).status, 201);
    assert.equal((await s.call('POST', '/v1/projects', { body: { name: 'rogue' } })).status, 201);
  });

  test('a submitter may not manage members; a project admin may, in its own project only', async () => {
    assertError(await s.call('PUT', '/v1/projects/a/members/ana', { token: ana, body: { role: 'admin' } }), 403, 'forbidden');
    const me = await s.call('GET', '/v1/me', { token: ana });
    assert.equal(me.body.projects[0].role, 'submitter');
    const ok = await s.call('PUT', '/v1/projects/a/members/mallory', { token: pam, body: { role: 'viewer' } });
    assert.equal(ok.status, 200, ok.text);
    assertError(await s.call('PUT', '/v1/projects/b/members/pam', { token: pam, body: { role: 'admin' } }), 404, 'not_found');
  });
});
