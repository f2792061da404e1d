import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { allJobIds, assertError, assertNoLeak, createApp, openDb, submitJob } from './util.js';

/** Happy paths of every route of the user API, with what each one stored. */

let s: TestServer;
before(async () => {
  s = await startTestServer();
});
after(async () => {
  await s.stop();
});

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

async function newProject(name: string): Promise<void> {
  const r = await s.call('POST', '/v1/projects', { body: { name } });
  assert.equal(r.status, 201, r.text);
}

describe('identity', () => {
  test('GET /v1/me shows the bootstrap operator and its project', async () => {
    const r = await s.call('GET', '/v1/me');
    assert.equal(r.status, 200);
    assert.equal(r.body.user.name, 'admin');
    assert.equal(r.body.user.operator, true);
    assert.equal(typeof r.body.user.id, 'number');
    assert.match(r.body.user.createdAt, ISO);
    const def = r.body.projects.find((p: { name: string }) => p.name === 'default');
    assert.deepEqual({ ...def, createdAt: undefined }, { name: 'default', shareWeight: 1, role: 'admin', createdAt: undefined });
  });

  test('POST /v1/users creates a user who can then act with a token', async () => {
    const r = await s.call('POST', '/v1/users', { body: { name: 'ida' } });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.name, 'ida');
    assert.equal(r.body.operator, false);
    assert.equal(typeof r.body.id, 'number');
    assert.match(r.body.createdAt, ISO);
    const t = await s.call('POST', '/v1/tokens', { body: { user: 'ida', label: 'laptop' } });
    assert.equal(t.status, 201, t.text);
    assert.equal(t.body.user, 'ida');
    assert.equal(t.body.expiresAt, null);
    assert.match(t.body.token, /^bgu_[0-9a-f]{16}_/);
    assert.ok(t.body.token.includes(t.body.id));
    const me = await s.call('GET', '/v1/me', { token: t.body.token });
    assert.equal(me.status, 200);
    assert.equal(me.body.user.name, 'ida');
    assert.equal(me.body.user.operator, false);
    assert.deepEqual(me.body.projects, []);
    const op = await s.call('POST', '/v1/users', { body: { name: 'olga', operator: true } });
    assert.equal(op.status, 201);
    assert.equal(op.body.operator, true);
  });

  test('POST /v1/projects creates a project; GET /v1/projects lists it', async () => {
    const r = await s.call('POST', '/v1/projects', { body: { name: 'astro', shareWeight: 2.5 } });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.name, 'astro');
    assert.equal(r.body.shareWeight, 2.5);
    assert.match(r.body.createdAt, ISO);
    const d = await s.call('POST', '/v1/projects', { body: { name: 'bio' } });
    assert.equal(d.body.shareWeight, 1);
    const list = await s.call('GET', '/v1/projects');
    assert.equal(list.status, 200);
    const names = list.body.projects.map((p: { name: string }) => p.name);
    assert.ok(names.includes('astro') && names.includes('bio') && names.includes('default'));
    assert.deepEqual(names, [...names].sort());
    for (const p of list.body.projects) assert.equal(p.role, 'admin'); // the operator is admin everywhere
  });

  test('PUT members grants and changes a role, visible in the member\'s /me and /projects', async () => {
    const token = await s.userWithRole('mel');
    let me = await s.call('GET', '/v1/me', { token });
    assert.deepEqual(me.body.projects, []);
    const r = await s.call('PUT', '/v1/projects/astro/members/mel', { body: { role: 'viewer' } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body, { project: 'astro', user: 'mel', role: 'viewer' });
    me = await s.call('GET', '/v1/me', { token });
    assert.deepEqual(me.body.projects.map((p: { name: string; role: string }) => [p.name, p.role]), [['astro', 'viewer']]);
    const r2 = await s.call('PUT', '/v1/projects/astro/members/mel', { body: { role: 'submitter' } });
    assert.deepEqual(r2.body, { project: 'astro', user: 'mel', role: 'submitter' });
    const list = await s.call('GET', '/v1/projects', { token });
    assert.deepEqual(list.body.projects.map((p: { name: string; role: string }) => [p.name, p.role]), [['astro', 'submitter']]);
    // A project admin (not an operator) may manage members too.
    const boss = await s.userWithRole('boss');
    assert.equal((await s.call('PUT', '/v1/projects/astro/members/boss', { body: { role: 'admin' } })).status, 200);
    const r3 = await s.call('PUT', '/v1/projects/astro/members/mel', { token: boss, body: { role: 'viewer' } });
    assert.equal(r3.status, 200, r3.text);
    me = await s.call('GET', '/v1/me', { token });
    assert.equal(me.body.projects[0].role, 'viewer');
  });

  test('POST /v1/tokens: a token for yourself, with a ttl, and (operator) for another user', async () => {
    const token = await s.userWithRole('tess');
    const own = await s.call('POST', '/v1/tokens', { token, body: { label: 'ci', ttlSeconds: 3600 } });
    assert.equal(own.status, 201, own.text);
    assert.equal(own.body.user, 'tess');
    const expires = Date.parse(own.body.expiresAt);
    assert.ok(Math.abs(expires - (Date.now() + 3600_000)) < 60_000, own.body.expiresAt);
    const me = await s.call('GET', '/v1/me', { token: own.body.token });
    assert.equal(me.body.user.name, 'tess');
    const named = await s.call('POST', '/v1/tokens', { token, body: { user: 'tess' } });
    assert.equal(named.status, 201); // naming yourself is fine
    assert.notEqual(named.body.token, own.body.token);
    const other = await s.call('POST', '/v1/tokens', { body: { user: 'tess' } });
    assert.equal(other.status, 201);
    assert.equal((await s.call('GET', '/v1/me', { token: other.body.token })).body.user.name, 'tess');
  });
});

describe('apps', () => {
  before(() => newProject('apps'));

  test('POST apps stores every field and fills defaults', async () => {
    const digest = 'sha256:' + 'ab'.repeat(32);
    const full = {
      name: 'mandel', description: 'fractals', image: `reg.example:5000/sci/mandel:1.2@${digest}`, command: ['mandel', '--fast'],
      resources: { cores: 2.5, memoryMiB: 2048, diskMiB: 100, gpus: 1 }, maxRuntimeSeconds: 600, maxAttempts: 5,
      replicas: 3, quorum: 2, maxReplicas: 5, adaptiveReplication: true, validator: { image: 'sci/mandel-check:1', command: ['check', '--tolerance', '1e-9'] }, checkpointing: true, platforms: ['linux/amd64', 'linux/arm64/v8'],
      nativeCommand: ['/opt/mandel/bin/mandel'],
    };
    const r = await s.call('POST', '/v1/projects/apps/apps', { body: full });
    assert.equal(r.status, 201, r.text);
    const { id, createdAt, ...rest } = r.body;
    assert.equal(typeof id, 'number');
    assert.match(createdAt, ISO);
    assert.deepEqual(rest, { ...full, version: 1, imageDigest: digest });
    const min = await s.call('POST', '/v1/projects/apps/apps', { body: { name: 'tiny', image: 'busybox' } });
    assert.equal(min.status, 201, min.text);
    assert.deepEqual(
      { ...min.body, id: 0, createdAt: '' },
      {
        id: 0, createdAt: '', name: 'tiny', version: 1, description: '', image: 'busybox', imageDigest: null, command: [],
        resources: { cores: 1, memoryMiB: 512, diskMiB: 1024, gpus: 0 }, maxRuntimeSeconds: 3600, maxAttempts: 3,
        replicas: 1, quorum: 1, maxReplicas: 5, adaptiveReplication: false, validator: null, checkpointing: false, platforms: ['linux/amd64'], nativeCommand: null,
      },
    );
  });

  test('new versions, GET with and without ?version, and the list of latest versions', async () => {
    await createApp(s, 'apps', 'zeta', { description: 'v1' });
    const v2 = await s.call('POST', '/v1/projects/apps/apps/zeta/versions', { body: { image: 'sci/zeta:2', description: 'v2' } });
    assert.equal(v2.status, 201, v2.text);
    assert.equal(v2.body.name, 'zeta');
    assert.equal(v2.body.version, 2);
    assert.equal(v2.body.image, 'sci/zeta:2');
    // Omitted fields are copied from the latest version (resources field by field).
    const v3 = await s.call('POST', '/v1/projects/apps/apps/zeta/versions', { body: { replicas: 2, resources: { cores: 4 } } });
    assert.equal(v3.status, 201, v3.text);
    assert.equal(v3.body.version, 3);
    assert.equal(v3.body.image, 'sci/zeta:2');
    assert.equal(v3.body.description, 'v2');
    assert.equal(v3.body.quorum, 2); // quorum follows a new replicas
    assert.deepEqual(v3.body.resources, { cores: 4, memoryMiB: 512, diskMiB: 1024, gpus: 0 });

    const latest = await s.call('GET', '/v1/projects/apps/apps/zeta');
    assert.equal(latest.status, 200);
    assert.equal(latest.body.app.version, 3);
    assert.deepEqual(latest.body.versions, [1, 2, 3]);
    const first = await s.call('GET', '/v1/projects/apps/apps/zeta?version=1');
    assert.equal(first.status, 200);
    assert.equal(first.body.app.version, 1);
    assert.equal(first.body.app.description, 'v1');
    assert.equal(first.body.app.image, 'sci/zeta:1');
    assert.deepEqual(first.body.versions, [1, 2, 3]);
    const second = await s.call('GET', '/v1/projects/apps/apps/zeta?version=2');
    assert.equal(second.body.app.description, 'v2');

    const list = await s.call('GET', '/v1/projects/apps/apps');
    assert.equal(list.status, 200);
    assert.deepEqual(
      list.body.apps.map((a: { name: string; version: number }) => [a.name, a.version]),
      [['mandel', 1], ['tiny', 1], ['zeta', 3]],
    );
  });

  test('jobs pin the app version: latest by default, or the one asked for', async () => {
    const latest = await submitJob(s, 'apps', { app: 'zeta' });
    const pinned = await submitJob(s, 'apps', { app: 'zeta', appVersion: 1 });
    assert.equal((await s.call('GET', `/v1/projects/apps/jobs/${latest}`)).body.job.appVersion, 3);
    assert.equal((await s.call('GET', `/v1/projects/apps/jobs/${pinned}`)).body.job.appVersion, 1);
    await s.call('POST', '/v1/projects/apps/apps/zeta/versions', { body: { image: 'sci/zeta:4' } });
    assert.equal((await s.call('GET', `/v1/projects/apps/jobs/${latest}`)).body.job.appVersion, 3, 'a new version leaves old jobs alone');
  });
});

describe('jobs', () => {
  before(async () => {
    await newProject('jobs');
    await createApp(s, 'jobs', 'sim');
  });

  test('POST jobs submits one job with every field; GET shows it with a tasks array', async () => {
    const deadline = new Date(Date.now() + 86_400_000).toISOString();
    const body = {
      app: 'sim', args: ['--seed', '7'], env: { SEED: '7', _x: 'y' }, resources: { cores: 0.5, memoryMiB: 64 }, priority: -5,
      deadline, labels: { owner: 'ida', 'k8s.io/part-of': 'x' },
    };
    const r = await s.call('POST', '/v1/projects/jobs/jobs', { body });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.batch, null);
    assert.equal(r.body.jobCount, 1);
    assert.equal(r.body.replayed, false);
    assert.equal(r.body.jobIds.length, 1);
    const id = r.body.jobIds[0];
    const g = await s.call('GET', `/v1/projects/jobs/jobs/${id}`);
    assert.equal(g.status, 200, g.text);
    const j = g.body.job;
    assert.equal(j.id, id);
    assert.equal(j.app, 'sim');
    assert.equal(j.appVersion, 1);
    assert.equal(j.batchId, null);
    assert.equal(j.state, 'queued');
    assert.deepEqual(j.args, body.args);
    assert.deepEqual(j.env, body.env);
    assert.deepEqual(j.inputs, {});
    assert.deepEqual(j.resources, body.resources);
    assert.equal(j.priority, -5);
    assert.equal(j.deadline, deadline);
    assert.deepEqual(j.labels, body.labels);
    assert.deepEqual(j.params, {});
    assert.equal(j.attempts, 0);
    assert.equal(j.reason, null);
    assert.equal(j.finishedAt, null);
    assert.match(j.createdAt, ISO);
    assert.equal(j.updatedAt, j.createdAt);
    assert.deepEqual(g.body.tasks, []);
  });

  test('GET job renders its tasks (rows arranged in the store, as an agent would leave them)', async () => {
    const id = await submitJob(s, 'jobs', { app: 'sim' });
    const site = await s.ctx.store.createSite('lab', Date.now());
    const host = await s.ctx.store.createHost({ siteId: site.id, name: 'h1', resources: { cores: 4, memoryMiB: 4096, diskMiB: 4096, gpus: 0 }, platform: 'linux/amd64' }, Date.now());
    const db = openDb(s);
    try {
      const ins = db.prepare('INSERT INTO tasks (job_id, host_id, attempt, replica, state, lease_expires_at, created_at, ended_at, exit_code, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)');
      ins.run(id, host.id, 1, 0, 'lost', 2_000_000_000_000, 1_900_000_000_000, 1_900_000_100_000, null, 'lease expired');
      ins.run(id, host.id, 2, 0, 'running', 2_000_000_000_000, 1_900_000_200_000, null, null, null);
    } finally {
      db.close();
    }
    const g = await s.call('GET', `/v1/projects/jobs/jobs/${id}`);
    assert.equal(g.status, 200, g.text);
    assert.equal(g.body.tasks.length, 2);
    const [a, b] = g.body.tasks;
    assert.deepEqual(
      { ...a, id: 0 },
      {
        id: 0, hostId: host.id, attempt: 1, replica: 0, state: 'lost', runtime: 'docker', leaseExpiresAt: new Date(2_000_000_000_000).toISOString(),
        createdAt: new Date(1_900_000_000_000).toISOString(), startedAt: null, endedAt: new Date(1_900_000_100_000).toISOString(), exitCode: null,
        reason: 'lease expired', outcome: null, progress: null, usage: null, durationMs: null, outputs: {}, validity: null,
      },
    );
    assert.equal(b.attempt, 2);
    assert.equal(b.state, 'running');
    assert.equal(b.endedAt, null);
    assert.ok(b.id > a.id);
  });

  test('POST jobs/:id/cancel cancels a queued job once; a second cancel is 409 and changes nothing', async () => {
    const id = await submitJob(s, 'jobs', { app: 'sim' });
    const c = await s.call('POST', `/v1/projects/jobs/jobs/${id}/cancel`);
    assert.equal(c.status, 200, c.text);
    assert.equal(c.body.job.id, id);
    assert.equal(c.body.job.state, 'cancelled');
    assert.equal(c.body.job.reason, 'cancelled by user');
    assert.match(c.body.job.finishedAt, ISO);
    const g = await s.call('GET', `/v1/projects/jobs/jobs/${id}`);
    assert.equal(g.body.job.state, 'cancelled');
    assert.equal(g.body.job.finishedAt, c.body.job.finishedAt);
    const again = await s.call('POST', `/v1/projects/jobs/jobs/${id}/cancel`);
    assertError(again, 409, 'illegal_transition');
    const g2 = await s.call('GET', `/v1/projects/jobs/jobs/${id}`);
    assert.deepEqual(g2.body.job, g.body.job);
    assertError(await s.call('POST', '/v1/projects/jobs/jobs/999999/cancel'), 404, 'not_found');
    assertError(await s.call('GET', '/v1/projects/jobs/jobs/999999'), 404, 'not_found');
  });
});

describe('job list: filters and cursor pagination', () => {
  // 10 single alpha jobs (labels grp=even/odd, 3 of them cancelled), 5 single beta jobs,
  // one alpha batch of 8 (batch label run=r1), one beta batch of 4 with a label holding "=".
  const alphaSingles: number[] = [];
  const betaSingles: number[] = [];
  let batch1: { id: number; jobs: number[] };
  let batch2: { id: number; jobs: number[] };
  const cancelled: number[] = [];
  const P = '/v1/projects/pages';

  before(async () => {
    await newProject('pages');
    await createApp(s, 'pages', 'alpha');
    await createApp(s, 'pages', 'beta');
    for (let i = 0; i < 10; i++) alphaSingles.push(await submitJob(s, 'pages', { app: 'alpha', labels: { grp: i % 2 ? 'odd' : 'even' } }));
    for (let i = 0; i < 5; i++) betaSingles.push(await submitJob(s, 'pages', { app: 'beta' }));
    const b1 = await s.call('POST', `${P}/batches`, { body: { app: 'alpha', count: 8, labels: { run: 'r1' } } });
    batch1 = { id: b1.body.batch.id, jobs: b1.body.jobIds };
    const b2 = await s.call('POST', `${P}/batches`, { body: { app: 'beta', jobs: [{}, {}, {}, {}], template: { labels: { expr: 'a=b' } } } });
    batch2 = { id: b2.body.batch.id, jobs: b2.body.jobIds };
    for (const id of [alphaSingles[1]!, alphaSingles[4]!, alphaSingles[8]!]) {
      assert.equal((await s.call('POST', `${P}/jobs/${id}/cancel`)).status, 200);
      cancelled.push(id);
    }
  });

  const desc = (ids: number[]) => [...ids].sort((a, b) => b - a);

  /** Walks every page of a query with a small limit, checking each page's shape. */
  async function walk(query: string, limit: number): Promise<{ ids: number[]; pages: number }> {
    const ids: number[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const url: string = `${P}/jobs?${query}${query ? '&' : ''}limit=${limit}${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`;
      const r = await s.call('GET', url);
      assert.equal(r.status, 200, r.text);
      assert.ok(r.body.jobs.length <= limit);
      if (r.body.nextCursor !== null) assert.equal(r.body.jobs.length, limit, 'only a full page promises more');
      ids.push(...r.body.jobs.map((j: { id: number }) => j.id));
      cursor = r.body.nextCursor;
      pages++;
      assert.ok(pages < 100, 'pagination does not end');
    } while (cursor !== null);
    return { ids, pages };
  }

  test('all jobs across pages: newest first, no duplicates, no gaps', async () => {
    const everything = desc([...alphaSingles, ...betaSingles, ...batch1.jobs, ...batch2.jobs]);
    assert.equal(everything.length, 27);
    const { ids, pages } = await walk('', 4);
    assert.deepEqual(ids, everything);
    assert.equal(new Set(ids).size, ids.length);
    assert.equal(pages, 7);
    // The default limit returns everything at once here.
    const one = await s.call('GET', `${P}/jobs`);
    assert.deepEqual(one.body.jobs.map((j: { id: number }) => j.id), everything);
    assert.equal(one.body.nextCursor, null);
    // A page exactly as long as what is left ends with an empty page, still without repeats.
    const exact = await walk('', 9);
    assert.deepEqual(exact.ids, everything);
  });

  test('filter by state', async () => {
    assert.deepEqual((await walk('state=cancelled', 2)).ids, desc(cancelled));
    const queued = desc([...alphaSingles, ...betaSingles, ...batch1.jobs, ...batch2.jobs].filter((id) => !cancelled.includes(id)));
    assert.deepEqual((await walk('state=queued', 5)).ids, queued);
    assert.deepEqual((await walk('state=running', 5)).ids, []);
  });

  test('filter by app, and by app and state together', async () => {
    assert.deepEqual((await walk('app=beta', 3)).ids, desc([...betaSingles, ...batch2.jobs]));
    assert.deepEqual((await walk('app=alpha', 3)).ids, desc([...alphaSingles, ...batch1.jobs]));
    assert.deepEqual((await walk('app=alpha&state=cancelled', 1)).ids, desc(cancelled));
    assert.deepEqual((await walk('app=nope', 3)).ids, []);
  });

  test('filter by batch', async () => {
    assert.deepEqual((await walk(`batch=${batch1.id}`, 3)).ids, desc(batch1.jobs));
    assert.deepEqual((await walk(`batch=${batch2.id}`, 3)).ids, desc(batch2.jobs));
    const r = await s.call('GET', `${P}/jobs?batch=${batch1.id}`);
    for (const j of r.body.jobs) assert.equal(j.batchId, batch1.id);
  });

  test('filter by label, including batch labels and values containing "="', async () => {
    assert.deepEqual((await walk('label=grp=odd', 2)).ids, desc(alphaSingles.filter((_, i) => i % 2 === 1)));
    assert.deepEqual((await walk('label=grp=even', 2)).ids, desc(alphaSingles.filter((_, i) => i % 2 === 0)));
    assert.deepEqual((await walk('label=run=r1', 3)).ids, desc(batch1.jobs));
    assert.deepEqual((await walk(`label=${encodeURIComponent('expr=a=b')}`, 3)).ids, desc(batch2.jobs));
    assert.deepEqual((await walk('label=grp=odd&state=queued', 2)).ids, desc(alphaSingles.filter((id, i) => i % 2 === 1 && !cancelled.includes(id))));
    assert.deepEqual((await walk('label=grp=', 2)).ids, []);
  });
});

describe('batches', () => {
  const P = '/v1/projects/batches';
  before(async () => {
    await newProject('batches');
    await createApp(s, 'batches', 'sim');
  });

  test('jobs form: template and items merge, batch labels reach every job', async () => {
    const r = await s.call('POST', `${P}/batches`, {
      body: {
        app: 'sim', labels: { run: 'r7' },
        template: { args: ['base'], env: { A: '1', B: '2' }, priority: 3, labels: { t: 'x' }, resources: { cores: 2 } },
        jobs: [{}, { args: ['own'], env: { B: 'b' }, priority: -1, labels: { t: 'y', i: '1' }, resources: { memoryMiB: 10 } }],
      },
    });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.replayed, false);
    assert.equal(r.body.jobCount, 2);
    assert.equal(r.body.batch.size, 2);
    assert.equal(r.body.batch.app, 'sim');
    assert.equal(r.body.batch.appVersion, 1);
    assert.deepEqual(r.body.batch.labels, { run: 'r7' });
    const [a, b] = await Promise.all(r.body.jobIds.map(async (id: number) => (await s.call('GET', `${P}/jobs/${id}`)).body.job));
    assert.equal(a.batchId, r.body.batch.id);
    assert.deepEqual([a.args, a.env, a.priority, a.labels, a.resources], [['base'], { A: '1', B: '2' }, 3, { run: 'r7', t: 'x' }, { cores: 2 }]);
    assert.deepEqual([b.args, b.env, b.priority, b.labels, b.resources], [['own'], { A: '1', B: 'b' }, -1, { run: 'r7', t: 'y', i: '1' }, { cores: 2, memoryMiB: 10 }]);
  });

  test('count form makes N identical jobs', async () => {
    const r = await s.call('POST', `${P}/batches`, { body: { app: 'sim', count: 5, template: { args: ['same'] } } });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.jobCount, 5);
    assert.equal(r.body.jobIds.length, 5);
    assert.equal(new Set(r.body.jobIds).size, 5);
    const listed = await s.call('GET', `${P}/jobs?batch=${r.body.batch.id}`);
    assert.equal(listed.body.jobs.length, 5);
    for (const j of listed.body.jobs) assert.deepEqual([j.args, j.state, j.params], [['same'], 'queued', {}]);
  });

  test('sweep form: the cartesian product, {x} substituted in args and env, params recorded', async () => {
    const r = await s.call('POST', `${P}/batches`, {
      body: {
        app: 'sim',
        template: { args: ['--x={x}', '--mode={mode}', '{{x}}', '{unknown}'], env: { X: 'x is {x}' } },
        sweep: { x: { from: 1, to: 3 }, mode: { values: ['fast', 'slow'] }, t: { from: 0, to: 0.2, step: 0.1 } },
      },
    });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.jobCount, 18);
    assert.equal(r.body.batch.size, 18);
    const jobs = await Promise.all(r.body.jobIds.map(async (id: number) => (await s.call('GET', `${P}/jobs/${id}`)).body.job));
    const expected: Array<Record<string, string | number>> = [];
    for (const x of [1, 2, 3]) for (const mode of ['fast', 'slow']) for (const t of [0, 0.1, 0.2]) expected.push({ x, mode, t });
    assert.deepEqual(jobs.map((j) => j.params), expected, 'first dimension varies slowest, decimals do not drift');
    for (const j of jobs) {
      assert.deepEqual(j.args, [`--x=${j.params.x}`, `--mode=${j.params.mode}`, '{x}', '{unknown}']);
      assert.deepEqual(j.env, { X: `x is ${j.params.x}` });
    }
  });

  test('sweep with a step written in exponent notation keeps its values', async () => {
    const r = await s.call('POST', `${P}/batches`, { body: { app: 'sim', sweep: { eps: { from: 0, to: 0.0000003, step: 0.0000001 } } } });
    assert.equal(r.status, 201, r.text);
    const jobs = await Promise.all(r.body.jobIds.map(async (id: number) => (await s.call('GET', `${P}/jobs/${id}`)).body.job));
    assert.deepEqual(jobs.map((j) => j.params.eps), [0, 1e-7, 2e-7, 3e-7]);
  });

  test('GET batch shows counts and done; cancel cancels what is open and is then done', async () => {
    const r = await s.call('POST', `${P}/batches`, { body: { app: 'sim', count: 4 } });
    const id = r.body.batch.id;
    const g = await s.call('GET', `${P}/batches/${id}`);
    assert.equal(g.status, 200);
    assert.deepEqual(g.body.batch, r.body.batch);
    assert.deepEqual(g.body.counts, { queued: 4, running: 0, succeeded: 0, failed: 0, cancelled: 0 });
    assert.equal(g.body.done, false);
    // One job cancelled on its own first: the batch cancel counts only what it changed.
    assert.equal((await s.call('POST', `${P}/jobs/${r.body.jobIds[0]}/cancel`)).status, 200);
    const c = await s.call('POST', `${P}/batches/${id}/cancel`);
    assert.equal(c.status, 200, c.text);
    assert.equal(c.body.cancelled, 3);
    assert.deepEqual(c.body.counts, { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 4 });
    const after = await s.call('GET', `${P}/batches/${id}`);
    assert.equal(after.body.done, true);
    assert.deepEqual(after.body.counts, c.body.counts);
    const jobs = await s.call('GET', `${P}/jobs?batch=${id}`);
    for (const j of jobs.body.jobs) {
      assert.equal(j.state, 'cancelled');
      assert.match(j.finishedAt, ISO);
    }
    assert.equal(jobs.body.jobs.filter((j: { reason: string }) => j.reason === 'batch cancelled by user').length, 3);
    const again = await s.call('POST', `${P}/batches/${id}/cancel`);
    assert.equal(again.status, 200);
    assert.equal(again.body.cancelled, 0);
    assertError(await s.call('GET', `${P}/batches/999999`), 404, 'not_found');
    assertError(await s.call('POST', `${P}/batches/999999/cancel`), 404, 'not_found');
  });

  test('GET batches lists newest first with cursor pagination', async () => {
    await newProject('blist');
    await createApp(s, 'blist', 'sim');
    const made: number[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await s.call('POST', '/v1/projects/blist/batches', { body: { app: 'sim', count: 1, labels: { i: String(i) } } });
      made.push(r.body.batch.id);
    }
    const seen: number[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const r = await s.call('GET', `/v1/projects/blist/batches?limit=2${cursor === null ? '' : `&cursor=${cursor}`}`);
      assert.equal(r.status, 200, r.text);
      for (const b of r.body.batches) {
        assert.equal(b.app, 'sim');
        assert.equal(b.size, 1);
        assert.equal(b.labels.i, String(made.indexOf(b.id)));
      }
      seen.push(...r.body.batches.map((b: { id: number }) => b.id));
      cursor = r.body.nextCursor;
      pages++;
    } while (cursor !== null);
    assert.deepEqual(seen, [...made].reverse());
    assert.equal(pages, 3);
  });

  test('a batch body over 1 MiB is accepted (batches have their own body limit)', async () => {
    const jobs = Array.from({ length: 300 }, (_, i) => ({ args: ['x'.repeat(4000), String(i)] }));
    const r = await s.call('POST', `${P}/batches`, { body: { app: 'sim', jobs } });
    assert.equal(r.status, 201, r.text.slice(0, 300));
    assert.equal(r.body.jobCount, 300);
    const ids = await allJobIds(s, 'batches', `batch=${r.body.batch.id}`);
    assert.equal(ids.length, 300);
  });

  test('a batch of more than 1,000 jobs answers with its batch, not the ids', async () => {
    const r = await s.call('POST', `${P}/batches`, { body: { app: 'sim', count: 1500 } });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.jobCount, 1500);
    assert.equal(r.body.jobIds, undefined);
    const ids = await allJobIds(s, 'batches', `batch=${r.body.batch.id}`);
    assert.equal(ids.length, 1500);
  });
});

describe('health and OpenAPI', () => {
  test('/healthz and /readyz answer without a token', async () => {
    const h = await s.call('GET', '/healthz', { token: null });
    assert.equal(h.status, 200);
    assert.deepEqual(h.body, { status: 'ok' });
    const r = await s.call('GET', '/readyz', { token: null });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { status: 'ready' });
  });

  const ROUTES: Array<[string, string]> = [
    ['get', '/healthz'], ['get', '/readyz'], ['get', '/metrics'],
    ['get', '/v1/me'], ['post', '/v1/users'], ['get', '/v1/projects'], ['post', '/v1/projects'],
    ['patch', '/v1/projects/{project}'], ['put', '/v1/projects/{project}/members/{user}'], ['post', '/v1/tokens'], ['delete', '/v1/tokens/{id}'],
    ['post', '/v1/projects/{project}/apps'], ['get', '/v1/projects/{project}/apps'], ['get', '/v1/projects/{project}/apps/{name}'],
    ['post', '/v1/projects/{project}/apps/{name}/versions'],
    ['post', '/v1/projects/{project}/jobs'], ['get', '/v1/projects/{project}/jobs'], ['get', '/v1/projects/{project}/jobs/{id}'],
    ['post', '/v1/projects/{project}/jobs/{id}/cancel'], ['get', '/v1/projects/{project}/jobs/{id}/explain'],
    ['post', '/v1/projects/{project}/batches'], ['get', '/v1/projects/{project}/batches'], ['get', '/v1/projects/{project}/batches/{id}'],
    ['post', '/v1/projects/{project}/batches/{id}/cancel'],
    ['post', '/v1/projects/{project}/workflows'], ['post', '/v1/projects/{project}/workflows/validate'], ['get', '/v1/projects/{project}/workflows'],
    ['get', '/v1/projects/{project}/workflows/{id}'], ['get', '/v1/projects/{project}/workflows/{id}/steps/{step}'],
    ['post', '/v1/projects/{project}/workflows/{id}/retry'], ['post', '/v1/projects/{project}/workflows/{id}/cancel'],
    ['get', '/v1/projects/{project}/counts'],
    ['get', '/v1/projects/{project}/events'],
    ['put', '/v1/projects/{project}/blobs/{sha256}'], ['get', '/v1/projects/{project}/blobs/{sha256}'], ['head', '/v1/projects/{project}/blobs/{sha256}'],
    ['get', '/agent/v1/self'], ['post', '/agent/v1/enroll'], ['post', '/v1/enroll-tokens'], ['get', '/v1/hosts'],
    ['get', '/v1/enroll-tokens'], ['delete', '/v1/enroll-tokens/{id}'], ['post', '/v1/hosts/{id}/revoke'],
    ['get', '/v1/sites'], ['put', '/v1/sites/{name}'], ['get', '/v1/audit'], ['get', '/v1/projects/{project}/audit'],
    ['get', '/v1/projects/{project}/jobs/{id}/log'], ['get', '/v1/projects/{project}/tasks/{id}/log'],
    ['post', '/agent/v1/work'], ['post', '/agent/v1/heartbeat'], ['post', '/agent/v1/tasks/{id}/result'], ['post', '/agent/v1/tasks/{id}/uploads'],
    ['post', '/agent/v1/tasks/{id}/transfer-urls'],
    ['get', '/agent/v1/tasks/{id}/blobs/{sha256}'], ['put', '/agent/v1/tasks/{id}/blobs/{sha256}'], ['put', '/agent/v1/tasks/{id}/checkpoint/{sha256}'],
    ['get', '/transfer/v1/{hostId}/tasks/{id}/inputs/{expires}/{signature}/{sha256}'],
    ['put', '/transfer/v1/{hostId}/tasks/{id}/outputs/{expires}/{signature}/{sha256}'],
  ];

  test('/openapi.json documents every route, each of which the server answers', async () => {
    const r = await s.call('GET', '/openapi.json', { token: null });
    assert.equal(r.status, 200);
    assert.equal(r.body.openapi, '3.1.0');
    const documented = new Set<string>();
    for (const [path, ops] of Object.entries(r.body.paths as Record<string, Record<string, unknown>>)) {
      for (const m of Object.keys(ops)) documented.add(`${m} ${path}`);
    }
    for (const [m, p] of ROUTES) assert.ok(documented.has(`${m} ${p}`), `${m.toUpperCase()} ${p} is not in /openapi.json`);
    assert.equal(documented.size, ROUTES.length, `undocumented or unexpected: ${[...documented].filter((d) => !ROUTES.some(([m, p]) => `${m} ${p}` === d))}`);
    // Each documented route exists (no "no route" 404) when called.
    const fill = (p: string) => p.replace('{hostId}', '1').replace('{expires}', '1').replace('{signature}', 'A'.repeat(43)).replace('{project}', 'default').replace('{user}', 'admin').replace('{name}', 'x').replace('{id}', '1').replace('{sha256}', 'a'.repeat(64)).replace('{step}', 's');
    for (const [m, p] of ROUTES) {
      // The event stream is asked for a batch that does not exist, so that it answers at once.
      const url = p.endsWith('/events') ? `${fill(p)}?batch=999999` : fill(p);
      const res = await s.call(m.toUpperCase(), url, m === 'get' || m === 'head' ? {} : { body: {} });
      assert.ok(!(res.status === 404 && /no route/.test(res.text)), `${m} ${p}: ${res.text}`);
      assertNoLeak(res, `${m} ${p}`);
    }
  });

  test('/openapi.json documents HEAD of a blob', async () => {
    const r = await s.call('GET', '/openapi.json', { token: null });
    assert.ok(r.body.paths['/v1/projects/{project}/blobs/{sha256}']?.head, 'HEAD blob is missing from /openapi.json');
  });
});
