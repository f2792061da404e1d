import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { newCredential } from '../../src/service/credentials.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { assertError, assertNoLeak, OCTET, sha256, stopAfterStreams } from './util.js';
import { registeredRoutes } from './fuzz-util.js';

/**
 * Every route the server registers, classified, and each class's walls proven route by route:
 * a member of another project gets the same 404 as for nothing at all, a viewer cannot change
 * anything, a project admin is no operator, the two APIs take only their own kind of
 * credential, and nothing but the public routes answers without one. The routes are read from
 * the running server (fastify's router), so a route added without a line in ROUTES fails here.
 * (isolation.test.ts and auth.test.ts tell the same story in prose, with snapshots; this suite is
 * the exhaustive one.)
 */

// ── the classification ───────────────────────────────────────────────────────

type Kind =
  | 'project-read' // /v1/projects/:project/…, any member (viewers too)
  | 'project-submit' // /v1/projects/:project/…, submitters and admins of the project
  | 'project-manage' // /v1/projects/:project/…, the project's admins
  | 'user' // /v1, any user, about themselves
  | 'operator' // /v1, operators only
  | 'agent' // /agent/v1, host credentials only
  | 'enrolment' // /agent/v1/enroll: an enrolment token in the body, no bearer
  | 'transfer' // /transfer/v1: the URL's signature is the credential
  | 'public'; // no credential at all

/** One project's objects, as a route's request names them. */
interface Fx {
  project: string;
  app: string;
  job: number;
  /** a queued job of the project to cancel */
  cancelJob: number;
  batch: number;
  task: number;
  digest: string;
  /** a running workflow (cancelled by its route's check) and a cancelled one (retried by its) */
  workflow: number;
  stoppedWorkflow: number;
}

/** The host-side objects: a task the host holds live, an input of it, and its signed URLs. */
interface HostFx {
  task: number;
  input: string;
  transfer: { inputs: string; outputs: string };
}

interface Req {
  path: string;
  body?: unknown;
  raw?: Buffer;
}

interface Route {
  kind: Kind;
  /** The request, for project `f`'s objects (project routes) or the host's (agent routes). */
  req: (f: Fx, h: HostFx) => Req;
  /** Its success changes or uses up a fixture: run its success check after the others. */
  destructive?: boolean;
}

/** A one-step workflow of the project's app. */
const workflowSource = (f: Fx): string => `steps:\n  only:\n    app: ${f.app}\n`;

let seq = 0;
const uniq = (p: string): string => `${p}-${++seq}`;
const probeBytes = (): Buffer => Buffer.from(`probe ${randomUUID()}\n`);
const FREE = { cores: 1, memoryMiB: 1024, diskMiB: 1024, gpus: 0 };
const PP = (f: Fx): string => `/v1/projects/${f.project}`;

/**
 * "METHOD /path" as fastify registers it → its class and a real request. A HEAD that fastify
 * adds beside a GET takes the GET's entry. Keep it in the order of the routes' files.
 */
const ROUTES: Record<string, Route> = {
  // health.ts, metrics.ts, server.ts, dashboard.ts
  'GET /healthz': { kind: 'public', req: () => ({ path: '/healthz' }) },
  'GET /readyz': { kind: 'public', req: () => ({ path: '/readyz' }) },
  'GET /metrics': { kind: 'public', req: () => ({ path: '/metrics' }) },
  'GET /openapi.json': { kind: 'public', req: () => ({ path: '/openapi.json' }) },
  'GET /dashboard': { kind: 'public', req: () => ({ path: '/dashboard' }) },
  'GET /dashboard/': { kind: 'public', req: () => ({ path: '/dashboard/' }) },
  'GET /dashboard/:file': { kind: 'public', req: () => ({ path: '/dashboard/app.js' }) },

  // identity.ts
  'GET /v1/me': { kind: 'user', req: () => ({ path: '/v1/me' }) },
  'POST /v1/users': { kind: 'operator', req: () => ({ path: '/v1/users', body: { name: uniq('user') } }) },
  'GET /v1/projects': { kind: 'user', req: () => ({ path: '/v1/projects' }) },
  'POST /v1/projects': { kind: 'operator', req: () => ({ path: '/v1/projects', body: { name: uniq('proj') } }) },
  'PATCH /v1/projects/:project': { kind: 'operator', req: (f) => ({ path: PP(f), body: { shareWeight: 1 } }) },
  'PUT /v1/projects/:project/members/:user': { kind: 'project-manage', req: (f) => ({ path: `${PP(f)}/members/vera`, body: { role: 'viewer' } }) },
  'POST /v1/tokens': { kind: 'user', req: () => ({ path: '/v1/tokens', body: { label: 'probe' } }) },
  // Whose token: see "a user revokes only their own tokens" below; here the caller's own is
  // not known in advance, so an unknown id (404 for a user, a real revoke is tested there).
  'DELETE /v1/tokens/:id': { kind: 'user', req: () => ({ path: '/v1/tokens/0000000000000000' }) },

  // hosts.ts
  'POST /v1/enroll-tokens': { kind: 'operator', req: () => ({ path: '/v1/enroll-tokens', body: { site: 'lab' } }) },
  'GET /v1/enroll-tokens': { kind: 'operator', req: () => ({ path: '/v1/enroll-tokens' }) },
  'DELETE /v1/enroll-tokens/:id': { kind: 'operator', req: () => ({ path: `/v1/enroll-tokens/${spare.enrolTokenId}` }), destructive: true },
  'GET /v1/hosts': { kind: 'operator', req: () => ({ path: '/v1/hosts' }) },
  'POST /v1/hosts/:id/revoke': { kind: 'operator', req: () => ({ path: `/v1/hosts/${spare.hostId}/revoke` }), destructive: true },

  // sites.ts
  'GET /v1/sites': { kind: 'operator', req: () => ({ path: '/v1/sites' }) },
  'PUT /v1/sites/:name': { kind: 'operator', req: () => ({ path: '/v1/sites/probe-site', body: { allowCidrs: [] } }) },

  // audit.ts
  'GET /v1/audit': { kind: 'operator', req: () => ({ path: '/v1/audit' }) },
  'GET /v1/projects/:project/audit': { kind: 'project-manage', req: (f) => ({ path: `${PP(f)}/audit` }) },

  // apps.ts
  'POST /v1/projects/:project/apps': { kind: 'project-submit', req: (f) => ({ path: `${PP(f)}/apps`, body: { name: uniq('app'), image: 'sci/probe:1' } }) },
  'GET /v1/projects/:project/apps': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/apps` }) },
  'GET /v1/projects/:project/apps/:name': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/apps/${f.app}` }) },
  'POST /v1/projects/:project/apps/:name/versions': { kind: 'project-submit', req: (f) => ({ path: `${PP(f)}/apps/${f.app}/versions`, body: { description: 'probe' } }) },

  // jobs.ts
  'POST /v1/projects/:project/jobs': { kind: 'project-submit', req: (f) => ({ path: `${PP(f)}/jobs`, body: { app: f.app, inputs: { 'in.dat': f.digest } } }) },
  'GET /v1/projects/:project/jobs': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/jobs?batch=${f.batch}` }) },
  'GET /v1/projects/:project/counts': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/counts?app=${f.app}` }) },
  'GET /v1/projects/:project/jobs/:id': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/jobs/${f.job}` }) },
  'GET /v1/projects/:project/jobs/:id/log': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/jobs/${f.job}/log` }) },
  'GET /v1/projects/:project/tasks/:id/log': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/tasks/${f.task}/log` }) },
  'GET /v1/projects/:project/jobs/:id/explain': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/jobs/${f.cancelJob}/explain` }) },
  'POST /v1/projects/:project/jobs/:id/cancel': { kind: 'project-submit', req: (f) => ({ path: `${PP(f)}/jobs/${f.cancelJob}/cancel` }), destructive: true },

  // batches.ts
  'POST /v1/projects/:project/batches': { kind: 'project-submit', req: (f) => ({ path: `${PP(f)}/batches`, body: { app: f.app, count: 2 } }) },
  'GET /v1/projects/:project/batches': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/batches` }) },
  'GET /v1/projects/:project/batches/:id': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/batches/${f.batch}` }) },
  'POST /v1/projects/:project/batches/:id/cancel': { kind: 'project-submit', req: (f) => ({ path: `${PP(f)}/batches/${f.batch}/cancel` }), destructive: true },

  // workflows.ts
  'POST /v1/projects/:project/workflows': { kind: 'project-submit', req: (f) => ({ path: `${PP(f)}/workflows`, body: { source: workflowSource(f) } }) },
  'POST /v1/projects/:project/workflows/validate': { kind: 'project-submit', req: (f) => ({ path: `${PP(f)}/workflows/validate`, body: { source: workflowSource(f) } }) },
  'GET /v1/projects/:project/workflows': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/workflows` }) },
  'GET /v1/projects/:project/workflows/:id': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/workflows/${f.workflow}` }) },
  'GET /v1/projects/:project/workflows/:id/steps/:step': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/workflows/${f.workflow}/steps/only` }) },
  'POST /v1/projects/:project/workflows/:id/retry': { kind: 'project-submit', req: (f) => ({ path: `${PP(f)}/workflows/${f.stoppedWorkflow}/retry` }), destructive: true },
  'POST /v1/projects/:project/workflows/:id/cancel': { kind: 'project-submit', req: (f) => ({ path: `${PP(f)}/workflows/${f.workflow}/cancel` }), destructive: true },

  // events.ts (a stream: its success is its 200 and content type)
  'GET /v1/projects/:project/events': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/events?job=${f.job}` }) },

  // blobs.ts
  'PUT /v1/projects/:project/blobs/:sha256': {
    kind: 'project-submit',
    req: (f) => {
      const raw = probeBytes();
      return { path: `${PP(f)}/blobs/${sha256(raw)}`, raw };
    },
  },
  'HEAD /v1/projects/:project/blobs/:sha256': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/blobs/${f.digest}` }) },
  'GET /v1/projects/:project/blobs/:sha256': { kind: 'project-read', req: (f) => ({ path: `${PP(f)}/blobs/${f.digest}` }) },

  // agent.ts
  'GET /agent/v1/self': { kind: 'agent', req: () => ({ path: '/agent/v1/self' }) },
  'POST /agent/v1/work': { kind: 'agent', req: () => ({ path: '/agent/v1/work', body: { requestId: randomUUID(), free: FREE, maxTasks: 0, runtimes: ['docker'] } }) },
  'POST /agent/v1/heartbeat': { kind: 'agent', req: (_f, h) => ({ path: '/agent/v1/heartbeat', body: { tasks: [{ taskId: h.task, progress: 0.5 }] } }) },
  'POST /agent/v1/tasks/:id/result': { kind: 'agent', req: (_f, h) => ({ path: `/agent/v1/tasks/${h.task}/result`, body: { outcome: { kind: 'succeeded' }, durationMs: 10 } }), destructive: true },
  'POST /agent/v1/tasks/:id/uploads': { kind: 'agent', req: (_f, h) => ({ path: `/agent/v1/tasks/${h.task}/uploads`, body: { files: [{ sha256: sha256('an output'), size: 9 }] } }) },
  'POST /agent/v1/tasks/:id/transfer-urls': { kind: 'agent', req: (_f, h) => ({ path: `/agent/v1/tasks/${h.task}/transfer-urls`, body: {} }) },
  'GET /agent/v1/tasks/:id/blobs/:sha256': { kind: 'agent', req: (_f, h) => ({ path: `/agent/v1/tasks/${h.task}/blobs/${h.input}` }) },
  'PUT /agent/v1/tasks/:id/blobs/:sha256': {
    kind: 'agent',
    req: (_f, h) => {
      const raw = probeBytes();
      return { path: `/agent/v1/tasks/${h.task}/blobs/${sha256(raw)}`, raw };
    },
  },
  'PUT /agent/v1/tasks/:id/checkpoint/:sha256': {
    kind: 'agent',
    req: (_f, h) => {
      const raw = probeBytes();
      return { path: `/agent/v1/tasks/${h.task}/checkpoint/${sha256(raw)}`, raw };
    },
  },
  'POST /agent/v1/enroll': { kind: 'enrolment', req: () => ({ path: '/agent/v1/enroll', body: enrolBody(enrolToken) }) },

  // transfer.ts
  'GET /transfer/v1/:hostId/tasks/:id/inputs/:expires/:signature/:sha256': { kind: 'transfer', req: (_f, h) => ({ path: `${h.transfer.inputs}/${h.input}` }) },
  'PUT /transfer/v1/:hostId/tasks/:id/outputs/:expires/:signature/:sha256': {
    kind: 'transfer',
    req: (_f, h) => {
      const raw = probeBytes();
      return { path: `${h.transfer.outputs}/${sha256(raw)}`, raw };
    },
  },
};

const PROJECT_KINDS: readonly Kind[] = ['project-read', 'project-submit', 'project-manage'];
const V1_KINDS: readonly Kind[] = [...PROJECT_KINDS, 'user', 'operator'];
const MUTATING: readonly Kind[] = ['project-submit', 'project-manage'];

// ── the routes the server has ────────────────────────────────────────────────

/** The table's entry of a registered route: its own, or (an automatic HEAD) its GET's. */
function entryOf(route: string): { key: string; route: Route } | null {
  if (ROUTES[route]) return { key: route, route: ROUTES[route] };
  if (route.startsWith('HEAD ')) {
    const get = `GET ${route.slice(5)}`;
    if (ROUTES[get]) return { key: get, route: ROUTES[get] };
  }
  return null;
}

// ── the server and its fixtures ──────────────────────────────────────────────

let s: TestServer;
let routes: string[];
const tok = { ana: '', vera: '', sam: '', pam: '', host: '', host2: '', enrol: '' };
let enrolToken = '';
const fx: { a: Fx; b: Fx; ghost: Fx } = {} as never;
let h1: HostFx;
/** Operator routes' objects that their success uses up: a host to revoke, an enrolment token to revoke. */
const spare = { hostId: 0, enrolTokenId: '' };
/** What a 404 must not carry: names and values only project b's members may see. */
const SECRETS = ['b-secret-app', 'b secret-label', 'b secret input'];

function enrolBody(token: string) {
  const c = newCredential('host');
  return { enrollToken: token, name: uniq('enrolled'), resources: FREE, platform: 'linux/amd64', credentialId: c.id, credentialHash: c.secretHash.toString('hex') };
}

interface Answer {
  status: number;
  headers: Headers;
  contentType: string;
  text: string;
  body: any;
}

/**
 * One request. `token`: a bearer token, or null for none. An event stream is not read: its
 * status and content type are the answer.
 */
async function call(method: string, r: Req, token: string | null): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (token !== null) headers.authorization = `Bearer ${token}`;
  let body: BodyInit | undefined;
  if (r.raw !== undefined) {
    headers['content-type'] = OCTET['content-type'];
    body = r.raw as unknown as BodyInit;
  } else if (r.body !== undefined) {
    headers['content-type'] = 'application/json';
    body = JSON.stringify(r.body);
  }
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`${method} ${r.path}: no answer in 10 s`)), 10_000);
  const res = await fetch(s.url + r.path, { method, headers, redirect: 'manual', signal: ac.signal, ...(body === undefined ? {} : { body }) }).finally(() => clearTimeout(timer));
  const contentType = res.headers.get('content-type') ?? '';
  if (contentType.startsWith('text/event-stream')) {
    ac.abort();
    await res.body?.cancel().catch(() => {});
    return { status: res.status, headers: res.headers, contentType, text: '', body: undefined };
  }
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, contentType, text, body: parsed };
}

/** An answer with ids, digests and the given names made anonymous: what two 404s may differ in. */
function anonymous(a: Answer, names: string[]): string {
  let t = a.text;
  // as the names appear inside a JSON string
  for (const n of names) t = t.split(JSON.stringify(n).slice(1, -1)).join('<name>');
  return `${a.status} ${t.replace(/\b[0-9a-f]{64}\b/g, '<sha256>').replace(/\b\d+\b/g, '<n>')}`;
}

async function setUp(): Promise<void> {
  s = await startTestServer();
  routes = registeredRoutes(s.app.printRoutes({ commonPrefix: false }));
  const admin = (method: string, path: string, o: { body?: unknown; raw?: Buffer } = {}) =>
    s.call(method, path, { ...(o.body === undefined ? {} : { body: o.body }), ...(o.raw === undefined ? {} : { raw: o.raw as unknown as BodyInit, headers: { ...OCTET } }) });
  const ok = async (r: Promise<{ status: number; text: string; body: any }>) => {
    const x = await r;
    assert.ok(x.status < 300, x.text);
    return x.body;
  };
  tok.ana = await s.userWithRole('ana', 'a', 'submitter');
  tok.vera = await s.userWithRole('vera', 'b', 'viewer');
  tok.sam = await s.userWithRole('sam', 'b', 'submitter');
  tok.pam = await s.userWithRole('pam', 'b', 'admin');

  // Two hosts: h1 holds a task of b's, h2 holds nothing of it.
  const enrolHost = async (): Promise<{ token: string; id: number }> => {
    const t = await ok(admin('POST', '/v1/enroll-tokens', { body: { site: 'lab' } }));
    const c = newCredential('host');
    const e = await s.call('POST', '/agent/v1/enroll', { token: null, body: { ...enrolBody(t.token), credentialId: c.id, credentialHash: c.secretHash.toString('hex') } });
    assert.equal(e.status, 201, e.text);
    return { token: c.token, id: e.body.hostId };
  };
  tok.host = (await enrolHost()).token;
  tok.host2 = (await enrolHost()).token;
  spare.hostId = (await enrolHost()).id;
  enrolToken = (await ok(admin('POST', '/v1/enroll-tokens', { body: { site: 'lab' } }))).token;
  tok.enrol = (await ok(admin('POST', '/v1/enroll-tokens', { body: { site: 'lab' } }))).token;
  spare.enrolTokenId = (await ok(admin('POST', '/v1/enroll-tokens', { body: { site: 'lab' } }))).id;

  const make = async (project: string, app: string, secret: string): Promise<Fx> => {
    await ok(admin('POST', `/v1/projects/${project}/apps`, { body: { name: app, image: `sci/${app}:1`, checkpointing: true } }));
    const bytes = Buffer.from(`${secret} input of ${project}`);
    const digest = sha256(bytes);
    await ok(admin('PUT', `/v1/projects/${project}/blobs/${digest}`, { raw: bytes }));
    const job = (await ok(admin('POST', `/v1/projects/${project}/jobs`, { body: { app, inputs: { 'in.dat': digest }, labels: { secret: `${secret}-label` } } }))).jobIds[0];
    return { project, app, job, cancelJob: 0, batch: 0, task: 0, digest, workflow: 0, stoppedWorkflow: 0 };
  };
  fx.b = await make('b', 'b-secret-app', 'b secret');
  fx.a = await make('a', 'a-app', 'a plain');
  // h1 takes both jobs (the only ones queued yet): b's is the one the agent routes use.
  for (let i = 0; i < 4 && (fx.a.task === 0 || fx.b.task === 0); i++) {
    const work = await s.call('POST', '/agent/v1/work', { token: tok.host, body: { requestId: randomUUID(), free: { cores: 64, memoryMiB: 65536, diskMiB: 65536, gpus: 0 }, maxTasks: 2, runtimes: ['docker'] } });
    assert.equal(work.status, 200, work.text);
    for (const t of work.body.tasks as Array<{ taskId: number; project: string }>) fx[t.project as 'a' | 'b'].task = t.taskId;
  }
  assert.ok(fx.a.task > 0 && fx.b.task > 0, 'h1 holds a task of each project');
  for (const f of [fx.a, fx.b]) {
    f.cancelJob = (await ok(admin('POST', `/v1/projects/${f.project}/jobs`, { body: { app: f.app } }))).jobIds[0];
    f.batch = (await ok(admin('POST', `/v1/projects/${f.project}/batches`, { body: { app: f.app, count: 2 } }))).batch.id;
    f.workflow = (await ok(admin('POST', `/v1/projects/${f.project}/workflows`, { body: { source: workflowSource(f) } }))).workflow.id;
    f.stoppedWorkflow = (await ok(admin('POST', `/v1/projects/${f.project}/workflows`, { body: { source: workflowSource(f) } }))).workflow.id;
    await ok(admin('POST', `/v1/projects/${f.project}/workflows/${f.stoppedWorkflow}/cancel`));
  }
  // The workflow loop submits the running workflows' jobs in the background: a pass now has it
  // done before any snapshot of a project is taken (a later one finds nothing to do).
  await s.workflowLoop.pass();
  const urls = await s.call('POST', `/agent/v1/tasks/${fx.b.task}/transfer-urls`, { token: tok.host, body: {} });
  assert.equal(urls.status, 200, urls.text);
  h1 = { task: fx.b.task, input: fx.b.digest, transfer: { inputs: urls.body.inputs, outputs: urls.body.outputs } };
  fx.ghost = {
    project: 'no-such-project', app: 'no-such-app', job: 987_654, cancelJob: 987_653, batch: 987_652, task: 987_651, digest: sha256('nothing at all'),
    workflow: 987_650, stoppedWorkflow: 987_649,
  };
}

before(setUp);
after(async () => {
  await stopAfterStreams(s);
});

/** The registered routes of the given kinds, each with its entry. */
function routesOf(...kinds: Kind[]): Array<{ route: string; method: string; entry: Route }> {
  return routes.flatMap((route) => {
    const e = entryOf(route);
    return e && kinds.includes(e.route.kind) ? [{ route, method: route.split(' ')[0]!, entry: e.route }] : [];
  });
}

/**
 * Tests are made per route once the server is up (the list is the running server's); node:test
 * runs a describe's body at load time, so each check loops over the routes inside one test and
 * reports every route that failed it, not just the first.
 */
async function forEach(
  list: Array<{ route: string; method: string; entry: Route }>,
  check: (r: { route: string; method: string; entry: Route }) => Promise<void>,
): Promise<number> {
  const failures: string[] = [];
  for (const r of list) {
    try {
      await check(r);
    } catch (e) {
      failures.push(`${r.route}: ${(e as Error).message}`);
    }
  }
  assert.deepEqual(failures, []);
  return list.length;
}

/** A refusal: its status, and (all but a HEAD's, which has no body) the documented JSON error. */
function assertRefused(a: Answer, method: string, status: number, code: string): void {
  if (method === 'HEAD') {
    assert.equal(a.status, status, `HEAD: ${a.status}`);
    assert.equal(a.text, '');
  } else {
    assertError(a as never, status, code);
  }
}

/** The 401 of the two authenticated APIs, in the documented shape. */
function assertUnauthenticated(a: Answer, what: string): void {
  assert.equal(a.status, 401, `${what}: ${a.status} ${a.text}`);
  // A HEAD's answer has no body; every other one is the documented JSON error.
  if (a.text !== '') assert.equal(a.body?.error?.code, 'unauthenticated', `${what}: ${a.text}`);
  assertNoLeak({ status: a.status, text: a.text } as never, what);
  for (const secret of SECRETS) assert.ok(!a.text.includes(secret), `${what} leaks "${secret}"`);
}

// ── the tests ────────────────────────────────────────────────────────────────

describe('the route table', () => {
  test('every route the server registers is classified, and every entry is a route it registers', () => {
    assert.ok(routes.length >= 50, `found only ${routes.length} routes: is printRoutes parsed right?\n${routes.join('\n')}`);
    const unclassified = routes.filter((r) => entryOf(r) === null);
    assert.deepEqual(unclassified, [], 'routes with no line in ROUTES (test/api/route-access.test.ts): classify them, with a real request');
    const stale = Object.keys(ROUTES).filter((k) => !routes.includes(k));
    assert.deepEqual(stale, [], 'lines of ROUTES for routes the server no longer has');
  });

  test('the parse of the router agrees with fastify and with the OpenAPI document', async () => {
    for (const r of routes) {
      const [method, url] = r.split(' ') as [string, string];
      assert.ok(s.app.hasRoute({ method: method as 'GET', url }), `fastify does not know ${r}`);
    }
    const doc = (await s.call('GET', '/openapi.json', { token: null })).body as { paths: Record<string, Record<string, unknown>> };
    for (const [p, ops] of Object.entries(doc.paths)) {
      const path = p.replace(/\{([^}]+)\}/g, ':$1');
      for (const m of Object.keys(ops)) assert.ok(routes.includes(`${m.toUpperCase()} ${path}`), `documented but not found by the parse: ${m} ${p}`);
    }
  });

  test('each project route names its project, and only project routes do', () => {
    for (const r of routes) {
      const kind = entryOf(r)?.route.kind;
      if (kind === undefined) continue;
      const underProject = r.includes(' /v1/projects/:project/');
      if (PROJECT_KINDS.includes(kind)) assert.ok(underProject, `${r} is classified ${kind}`);
      else if (underProject) assert.fail(`${r} is under a project but classified ${kind}`);
      if (V1_KINDS.includes(kind)) assert.ok(r.includes(' /v1/'), `${r} is classified ${kind} but is not under /v1`);
      if (kind === 'agent' || kind === 'enrolment') assert.ok(r.includes(' /agent/v1/'), `${r} is classified ${kind}`);
      if (kind === 'transfer') assert.ok(r.includes(' /transfer/v1/'), `${r} is classified ${kind}`);
    }
  });
});

describe('(a) a member of another project gets 404, the same 404 as for a project that does not exist, and nothing changes', () => {
  let snapshot: string;
  before(async () => {
    snapshot = await snapshotB();
  });

  test("b's secrets are there to leak (so their absence below means something)", async () => {
    const job = await s.call('GET', `/v1/projects/b/jobs/${fx.b.job}`, { token: tok.vera });
    assert.ok(job.text.includes(SECRETS[0]!) && job.text.includes(SECRETS[1]!), job.text);
    assert.ok((await s.call('GET', `/v1/projects/b/blobs/${fx.b.digest}`, { token: tok.vera })).text.includes(SECRETS[2]!));
  });

  test('every project route, every method', async () => {
    await forEach(routesOf(...PROJECT_KINDS), async ({ route, method, entry }) => {
      const foreign = await call(method, entry.req(fx.b, h1), tok.ana);
      const ghost = await call(method, entry.req({ ...fx.b, project: fx.ghost.project }, h1), tok.ana);
      assert.equal(foreign.status, 404, `${foreign.status} ${foreign.text}`);
      for (const secret of SECRETS) assert.ok(!foreign.text.includes(secret), `${route} leaks "${secret}": ${foreign.text}`);
      assert.equal(anonymous(foreign, ['"b"']), anonymous(ghost, [`"${fx.ghost.project}"`]), `${route}: the 404s differ`);
      assertRefused(foreign, method, 404, 'not_found');
    });
  });

  test("b's objects named through the member's own project a: the same answer as ids that exist nowhere", async () => {
    let objectRoutes = 0;
    await forEach(routesOf(...PROJECT_KINDS), async ({ route, method, entry }) => {
      // a's request with b's ids, digests and app; against a's request with ids of nothing.
      const mixed = { ...fx.b, project: 'a' };
      const nowhere = { ...fx.ghost, project: 'a' };
      const frozen = (f: Fx): string => {
        const at = seq;
        const r = entry.req(f, h1);
        seq = at;
        return JSON.stringify(r.path) + JSON.stringify(r.body);
      };
      if (frozen(fx.a) === frozen(mixed) || entry.req(mixed, h1).raw !== undefined) return; // names no object of the project
      objectRoutes++;
      const foreign = await call(method, entry.req(mixed, h1), tok.ana);
      const ghost = await call(method, entry.req(nowhere, h1), tok.ana);
      // Not found (or, for a job's input, not one of the project's blobs); a filter by another
      // project's batch or app finds nothing, exactly as one by an id that does not exist.
      if (foreign.status < 300) assert.ok(method === 'GET' || method === 'HEAD', `${method} took b's object: ${foreign.status} ${foreign.text}`);
      else assert.ok(foreign.status === 404 || foreign.status === 400, `${foreign.status} ${foreign.text}`);
      for (const secret of SECRETS.slice(1)) assert.ok(!foreign.text.includes(secret), `leaks "${secret}": ${foreign.text}`);
      assert.equal(anonymous(foreign, [fx.b.app]), anonymous(ghost, [fx.ghost.app]));
    });
    assert.ok(objectRoutes >= 12, `only ${objectRoutes} routes name an object`);
  });

  test('project b is exactly as it was', async () => {
    assert.equal(await snapshotB(), snapshot);
  });
});

describe('(b) a viewer reads but changes nothing; a submitter does not manage members', () => {
  let snapshot: string;
  before(async () => {
    snapshot = await snapshotB();
  });

  test('a viewer of b gets 403 forbidden from every route of b that needs more than reading (all that change something), naming the role', async () => {
    const n = await forEach(routesOf(...MUTATING), async ({ method, entry }) => {
      const r = await call(method, entry.req(fx.b, h1), tok.vera);
      assertRefused(r, method, 403, 'forbidden');
      if (method !== 'HEAD') assert.match(r.body.error.message, /viewer/);
    });
    assert.ok(n >= 8, `only ${n} mutating project routes`);
  });

  test('a submitter of b gets 403 from every route that manages b', async () => {
    await forEach(routesOf('project-manage'), async ({ method, entry }) => {
      assertRefused(await call(method, entry.req(fx.b, h1), tok.sam), method, 403, 'forbidden');
    });
  });

  test('a viewer of b reads every read route of b', async () => {
    await forEach(routesOf('project-read'), async ({ method, entry }) => {
      const r = await call(method, entry.req(fx.b, h1), tok.vera);
      assert.equal(r.status, 200, r.text);
    });
  });

  test('project b is exactly as it was', async () => {
    assert.equal(await snapshotB(), snapshot);
  });
});

describe('(c) credentials other than a user token get 401 on every user API route', () => {
  for (const [who, token] of [['a host credential', () => tok.host], ['an enrolment token', () => tok.enrol]] as const) {
    test(who, async () => {
      const n = await forEach(routesOf(...V1_KINDS), async ({ route, method, entry }) => {
        assertUnauthenticated(await call(method, entry.req(fx.b, h1), token()), `${route} with ${who}`);
      });
      assert.ok(n >= 30, `only ${n} user API routes`);
    });
  }
});

describe('(d) user tokens get 401 on every agent protocol route', () => {
  for (const [who, token] of [["an operator's token", () => s.adminToken], ["a project admin's", () => tok.pam], ['an enrolment token', () => tok.enrol]] as const) {
    test(who, async () => {
      const n = await forEach(routesOf('agent'), async ({ route, method, entry }) => {
        assertUnauthenticated(await call(method, entry.req(fx.b, h1), token()), `${route} with ${who}`);
      });
      assert.ok(n >= 9, `only ${n} agent routes`);
    });
  }

  test("another host gets 404 for a task h1 holds: the same answer as for a task that does not exist", async () => {
    const taskRoutes = routesOf('agent').filter((r) => r.route.includes('/tasks/:id'));
    assert.ok(taskRoutes.length >= 6);
    await forEach(taskRoutes, async ({ method, entry }) => {
      const r = entry.req(fx.b, h1);
      const other = await call(method, r, tok.host2);
      const ghost = await call(method, { ...r, path: r.path.replace(`/tasks/${h1.task}/`, `/tasks/${fx.ghost.task}/`) }, tok.host2);
      assert.equal(other.status, 404, other.text);
      assert.equal(anonymous(other, []), anonymous(ghost, []));
      for (const secret of SECRETS) assert.ok(!other.text.includes(secret), other.text);
    });
  });
});

describe("blobs are stored once, but a project's presence answers are its own", () => {
  test("an agent asking where to upload a digest only project a holds is told it is not present in b's task", async () => {
    const aBytes = Buffer.from('a plain input of a');
    assert.equal(sha256(aBytes), fx.a.digest);
    const r = await call('POST', { path: `/agent/v1/tasks/${h1.task}/uploads`, body: { files: [{ sha256: fx.a.digest, size: aBytes.length }, { sha256: fx.b.digest, size: 19 }] } }, tok.host);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body.files.map((f: { sha256: string; present: boolean }) => [f.sha256, f.present]), [[fx.a.digest, false], [fx.b.digest, true]]);
    // And the user API: b's members see no trace of it either.
    assert.equal((await call('HEAD', { path: `/v1/projects/b/blobs/${fx.a.digest}` }, tok.sam)).status, 404);
  });
});

describe('(e) no token gets 401 on every route that is not public', () => {
  test('the user API and the agent protocol', async () => {
    await forEach(routesOf(...V1_KINDS, 'agent'), async ({ route, method, entry }) => {
      assertUnauthenticated(await call(method, entry.req(fx.b, h1), null), route);
    });
  });

  test('a transfer URL whose signature is altered is 401 whatever bearer token comes with it; one for another task too', async () => {
    await forEach(routesOf('transfer'), async ({ route, method, entry }) => {
      const r = entry.req(fx.b, h1);
      const parts = r.path.split('/'); // '', transfer, v1, hostId, tasks, id, dir, expires, signature, sha256
      const flipped = parts[8]!.startsWith('A') ? `B${parts[8]!.slice(1)}` : `A${parts[8]!.slice(1)}`;
      const altered = [...parts.slice(0, 8), flipped, parts[9]].join('/');
      const otherTask = [...parts.slice(0, 5), String(fx.a.task), ...parts.slice(6)].join('/');
      const otherHost = [...parts.slice(0, 3), '1', ...parts.slice(4)].join('/');
      for (const token of [null, s.adminToken, tok.host, tok.ana]) {
        for (const path of [altered, otherTask, ...(parts[3] === '1' ? [] : [otherHost])]) {
          assertUnauthenticated(await call(method, { ...r, path }, token), `${route} at ${path.replace(parts[8]!, '<sig>')} with ${token === null ? 'no token' : 'a token'}`);
        }
      }
    });
  });

  test('enrolment: a bad enrolment token is 401 whatever bearer token comes with it', async () => {
    await forEach(routesOf('enrolment'), async ({ method, entry }) => {
      // A real token's id with a wrong secret (the secret may hold "_" itself: rebuilt, not replaced).
      const bad = { ...entry.req(fx.b, h1), body: enrolBody(`bge_${tok.enrol.split('_')[1]}_${'A'.repeat(43)}`) };
      for (const token of [null, s.adminToken, tok.host]) assertUnauthenticated(await call(method, bad, token), `enrol with ${token}`);
      const userAsEnrol = { ...bad, body: enrolBody(s.adminToken) };
      assertUnauthenticated(await call(method, userAsEnrol, null), 'a user token as the enrolment token');
    });
  });

  test('the public routes answer without a token', async () => {
    await forEach(routesOf('public'), async ({ method, entry }) => {
      const r = await call(method, entry.req(fx.b, h1), null);
      assert.ok(r.status < 400, `${r.status} ${r.text.slice(0, 200)}`);
    });
  });

  test('the dashboard serves its own files by exact name only: no path reaches the disk', async () => {
    for (const path of ['/dashboard/..%2f..%2fpackage.json', '/dashboard/%2e%2e%2f%2e%2e%2fpackage.json', '/dashboard/..%5c..%5cpackage.json', '/dashboard/.%2fapp.js', '/dashboard/app.js%00.html']) {
      const r = await call('GET', { path }, null);
      assert.ok(r.status === 404 || r.status === 400, `${path}: ${r.status}`);
      assert.ok(!r.text.includes('"devDependencies"'), path);
    }
  });

  test('/metrics: a token that does not authenticate is 401; a valid non-operator one sees what anyone does', async () => {
    assertUnauthenticated(await call('GET', { path: '/metrics' }, 'bgu_0000000000000000_' + 'A'.repeat(43)), 'metrics');
    const anon = await call('GET', { path: '/metrics' }, null);
    const op = await call('GET', { path: '/metrics' }, s.adminToken);
    const names = (t: string) => [...new Set([...t.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]))].sort();
    for (const token of [tok.pam, tok.host]) assert.deepEqual(names((await call('GET', { path: '/metrics' }, token)).text), names(anon.text));
    assert.ok(names(op.text).length > names(anon.text).length, 'the operator sees more');
    assert.ok(!anon.text.includes('b-secret-app'), 'anonymous metrics name no app');
  });
});

describe('(f) only operators may call operator routes', () => {
  test('a project admin, a submitter and a viewer get 403 forbidden, and nothing is created', async () => {
    const n = await forEach(routesOf('operator'), async ({ route, method, entry }) => {
      for (const [who, token] of [['pam (admin of b)', tok.pam], ['sam (submitter)', tok.sam], ['vera (viewer)', tok.vera], ['ana (other project)', tok.ana]] as const) {
        const r = await call(method, entry.req(fx.b, h1), token);
        assert.equal(r.status, 403, `${route} by ${who}: ${r.status} ${r.text}`);
        assertRefused(r, method, 403, 'forbidden');
      }
    });
    assert.ok(n >= 5, `only ${n} operator routes`);
    const users = (await s.call('GET', '/v1/projects')).body.projects.map((p: { name: string }) => p.name);
    assert.deepEqual(users.filter((p: string) => p.startsWith('proj-')), []);
  });
});

describe('user routes act on the caller only', () => {
  test("a user revokes only their own tokens: another user's token id is 404, as an unknown id, and the token still works", async () => {
    const anaToken = await s.call('POST', '/v1/tokens', { token: tok.ana, body: { label: 'spare' } });
    const id = anaToken.body.id as string;
    const foreign = await call('DELETE', { path: `/v1/tokens/${id}` }, tok.sam);
    const ghost = await call('DELETE', { path: '/v1/tokens/0123456789abcdef' }, tok.sam);
    assertError(foreign as never, 404, 'not_found');
    assert.equal(anonymous(foreign, [id]), anonymous(ghost, ['0123456789abcdef']));
    assert.equal((await s.call('GET', '/v1/me', { token: anaToken.body.token })).status, 200);
    // A host credential's id is no user token either.
    const hostId = tok.host.split('_')[1]!;
    assertError((await call('DELETE', { path: `/v1/tokens/${hostId}` }, tok.sam)) as never, 404, 'not_found');
    assert.equal((await call('GET', { path: '/agent/v1/self' }, tok.host)).status, 200);
  });
});

describe("a project's audit log is the project's only", () => {
  test("b's admin sees b's entries and nothing of a's or of the server's own", async () => {
    const r = await call('GET', { path: '/v1/projects/b/audit?limit=1000' }, tok.pam);
    assert.equal(r.status, 200, r.text);
    const entries = r.body.entries as Array<{ project: string | null; target: string; action: string }>;
    assert.ok(entries.some((e) => e.action === 'member.set'), r.text);
    for (const e of entries) assert.equal(e.project, 'b', JSON.stringify(e));
    assert.ok(!r.text.includes('ana'), "a's member is not named");
    const all = await call('GET', { path: '/v1/audit?limit=1000' }, s.adminToken);
    assert.ok((all.body.entries as Array<{ project: string | null }>).some((e) => e.project === 'a'), 'the global log has a\'s entries (so the filter above was tested)');
  });
});

describe('the right caller succeeds on every route (so the refusals above are about the caller)', () => {
  /** Who may: for project routes b's submitter (its admin to manage), else the kind's own credential. */
  const rightToken = (kind: Kind): string | null =>
    ({ 'project-read': tok.vera, 'project-submit': tok.sam, 'project-manage': tok.pam, user: tok.ana, operator: s.adminToken, agent: tok.host, enrolment: null, transfer: null, public: null })[kind];

  test('every registered route and method answers below 400; the destructive ones run last', async () => {
    const all = routesOf('project-read', 'project-submit', 'project-manage', 'user', 'operator', 'agent', 'enrolment', 'transfer', 'public');
    const ordered = [...all.filter((r) => !r.entry.destructive), ...all.filter((r) => r.entry.destructive)];
    const n = await forEach(ordered, async ({ route, method, entry }) => {
      const r = await call(method, entry.req(fx.b, h1), rightToken(entry.kind));
      const expectNotFound = route === 'DELETE /v1/tokens/:id'; // an id of nobody's: the real revoke is tested above
      if (expectNotFound) assertError(r as never, 404, 'not_found');
      else assert.ok(r.status < 400, `${r.status} ${r.text.slice(0, 300)}`);
    });
    assert.equal(n, routes.length);
  });
});

/** Project b as its operator sees it (everything a refused call might have changed). */
async function snapshotB(): Promise<string> {
  const P = '/v1/projects/b';
  const reads = [
    `${P}/apps`, `${P}/apps/${fx.b.app}`, `${P}/jobs?limit=1000`, `${P}/batches`, `${P}/batches/${fx.b.batch}`, `${P}/counts`,
    `${P}/jobs/${fx.b.job}`, `${P}/jobs/${fx.b.cancelJob}`, '/v1/hosts', `${P}/workflows`, `${P}/workflows/${fx.b.workflow}`,
  ];
  const got = await Promise.all(reads.map((p) => s.call('GET', p)));
  const members = await Promise.all([tok.vera, tok.sam, tok.pam, tok.ana].map((t) => s.call('GET', '/v1/me', { token: t })));
  const projects = await s.call('GET', '/v1/projects');
  return JSON.stringify([...got, ...members, projects].map((r) => [r.status, r.body]))
    .replace(/"lastSeenAt":"[^"]*"/g, '"lastSeenAt":"…"')
    .replace(/"leaseExpiresAt":"[^"]*"/g, '"leaseExpiresAt":"…"');
}
