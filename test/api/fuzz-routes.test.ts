import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import fc from 'fast-check';
import { ACTIVE_TASK_STATES } from '../../src/domain/states.js';
import { assertFuzzAnswer, deepNesting, hostileScalar, hostileSegment, mergeJsonText, prototypeKeys, registeredRoutes } from './fuzz-util.js';
import { P, withGrid, type Grid, type Host } from './protocol-grid.js';
import { createApp, sha256, submitJob, uploadBlob } from './util.js';

/**
 * Property-based fuzzing of every route the running server registers (read from fastify's
 * router, so a new route is fuzzed without a line here; one whose path parameter has no
 * generator fails the first check, named). Each route is fuzzed with malformed, oversized and
 * hostile path parameters, query strings, headers and bodies: the user API with an operator's
 * token and with a viewer's, the agent protocol with a real enrolled host's token and a task it
 * really holds (so the service code runs, not just authentication), enrolment, transfer and the
 * public routes with none. Every answer is a 2xx or a 4xx with the documented JSON error and no
 * stack trace or path; after each route's property the server is healthy and the stored data
 * is as it was, but for what the route's accepted (2xx) requests may change (EFFECTS).
 *
 * Runs: FUZZ_RUNS (as fuzz.test.ts; default 200) / 20 runs per route and caller, so ~10 by default.
 */

const RUNS = Math.max(1, Math.round(Number(process.env.FUZZ_RUNS ?? 200) / 20));
const PP = `/v1/projects/${P}`;
const BODY_LIMIT = 1024 * 1024; // server.ts: bodyLimit

// ── the routes ───────────────────────────────────────────────────────────────

type Caller = 'operator' | 'viewer' | 'host' | 'anonymous';

interface Route {
  key: string; // "METHOD /path" as fastify registers it
  method: string;
  path: string;
  params: string[];
  callers: Caller[];
  /** Answers that are no JSON error by design: HEAD, the dashboard's static files. */
  bare: boolean;
}

function routeOf(key: string): Route {
  const [method, path] = key.split(' ') as [string, string];
  const params = [...path.matchAll(/:(\w+)/g)].map((m) => m[1]!);
  const callers: Caller[] = path.startsWith('/v1/')
    ? ['operator', 'viewer']
    : path.startsWith('/agent/v1/') && path !== '/agent/v1/enroll'
      ? ['host']
      : ['anonymous'];
  return { key, method, path, params, callers, bare: method === 'HEAD' || path.startsWith('/dashboard') };
}

// ── the fixtures ─────────────────────────────────────────────────────────────

const fx = { digest: '', batch: 0, workflow: 0, viewer: '' };
/** The task the host holds live (re-taken when a fuzzed request legitimately ended it). */
const held = { task: 0, job: 0, transfer: { hostId: '', expires: '', signature: '' } };

/**
 * Per path parameter: the real values a request may name (the fuzz's own objects; for routes that
 * would destroy a fixture, such as revoking a host, none: hostile values only), given the route.
 */
const PARAMS: Record<string, (path: string) => Array<string | number>> = {
  project: () => [P, P, 'no-such-project'],
  id: (path) => {
    if (/\/tasks\/:id/.test(path)) return [held.task];
    if (path.includes('/jobs/:id')) return [held.job];
    if (path.includes('/batches/:id')) return [fx.batch];
    if (path.includes('/workflows/:id')) return [fx.workflow];
    return []; // /v1/hosts/:id, /v1/tokens/:id, /v1/enroll-tokens/:id: never a real one
  },
  sha256: () => [fx.digest, sha256('nothing of the fuzz')],
  name: (path) => (path.includes('/apps/') ? ['fz', 'no-such-app'] : ['fuzz-site']),
  user: () => ['fuzz-nobody'],
  step: () => ['only', 'no-such-step'],
  file: () => ['app.js', 'index.html', 'no-such-file.js'],
  hostId: () => [held.transfer.hostId],
  expires: () => [held.transfer.expires],
  signature: () => [held.transfer.signature],
};

// ── the server's own schemas (its OpenAPI document) as generators ────────────

type Schema = Record<string, any>;
interface OpenApi {
  paths: Record<string, Record<string, { parameters?: Array<{ in: string; name: string; schema: Schema }>; requestBody?: { content: Record<string, { schema: Schema }> } }>>;
  components?: { schemas?: Record<string, Schema> };
}
let doc: OpenApi;

function operation(r: Route) {
  const method = r.method === 'HEAD' && !doc.paths[r.path.replace(/:(\w+)/g, '{$1}')]?.head ? 'get' : r.method.toLowerCase();
  return doc.paths[r.path.replace(/:(\w+)/g, '{$1}')]?.[method];
}

/** Strings the service knows: they take a near-valid request past the lookups. */
const known = (): Array<string | number> => ['fz', P, 'only', fx.digest, held.task, held.job];

/** A value of the schema most of the time, now and then a hostile scalar in its place. */
function mutated(schema: Schema, depth = 0): fc.Arbitrary<unknown> {
  return fc.oneof({ weight: 14, arbitrary: ofSchema(schema, depth) }, { weight: 1, arbitrary: hostileScalar });
}

function ofSchema(schema: Schema, depth: number): fc.Arbitrary<unknown> {
  if (depth > 8) return hostileScalar;
  if (schema.$ref) {
    const target = doc.components?.schemas?.[String(schema.$ref).split('/').pop()!];
    if (!target) throw new Error(`no generator: unresolved $ref ${schema.$ref}`);
    return ofSchema(target, depth);
  }
  if ('const' in schema) return fc.constant(schema.const);
  if (schema.enum) return fc.constantFrom(...(schema.enum as unknown[]));
  const alternatives = (schema.anyOf ?? schema.oneOf) as Schema[] | undefined;
  if (alternatives) return fc.oneof(...alternatives.map((a) => mutated(a, depth + 1)));
  // A tagged union as if/then branches (agent.ts's Outcome): one branch's fields.
  const branches = ((schema.allOf ?? []) as Schema[]).filter((b) => b.then).map((b) => ({ ...b.then, type: 'object' }));
  if (branches.length > 0) return fc.oneof(...branches.map((b) => ofSchema(b, depth + 1)));
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case 'object': {
      const props = (schema.properties ?? {}) as Record<string, Schema>;
      const required = ((schema.required ?? []) as string[]).filter((k) => k in props);
      const record = fc.record(Object.fromEntries(Object.entries(props).map(([k, v]) => [k, mutated(v, depth + 1)])), { requiredKeys: required });
      const values = Object.values((schema.patternProperties ?? {}) as Record<string, Schema>)[0] ?? (typeof schema.additionalProperties === 'object' ? schema.additionalProperties : undefined);
      const extra = values
        ? fc.dictionary(fc.oneof(fc.stringMatching(/^[a-z][a-z0-9._-]{0,6}$/), fc.string({ maxLength: 8 }), fc.constantFrom('in.dat', 'FOO')), mutated(values, depth + 1), { maxKeys: 3 })
        : fc.constant({});
      const unknown = fc.option(fc.dictionary(fc.string({ maxLength: 8 }), hostileScalar, { minKeys: 1, maxKeys: 2 }), { freq: 8 });
      return fc.tuple(record, extra, unknown).map(([r, e, u]) => ({ ...e, ...(u ?? {}), ...r }));
    }
    case 'array': {
      const min = schema.minItems ?? 0;
      const item = mutated(schema.items ?? {}, depth + 1);
      const normal = fc.array(item, { minLength: min, maxLength: Math.max(min, Math.min(schema.maxItems ?? 3, 3)) });
      if (schema.maxItems === undefined || schema.maxItems > 5000) return normal;
      // One past the bound, of one repeated item.
      return fc.oneof({ weight: 8, arbitrary: normal }, { weight: 1, arbitrary: item.map((x) => Array.from({ length: schema.maxItems + 1 }, () => x)) });
    }
    case 'string': {
      const min = schema.minLength ?? 0;
      const max = schema.maxLength as number | undefined;
      let base: fc.Arbitrary<string>;
      if (schema.pattern) base = fc.stringMatching(new RegExp(schema.pattern)).filter((x) => x.length >= min && x.length <= (max ?? Infinity));
      else if (schema.format === 'date-time') base = fc.date({ min: new Date(0), max: new Date(4e12), noInvalidDate: true }).map((d) => d.toISOString());
      else base = fc.string({ minLength: min, maxLength: Math.max(min, Math.min(max ?? 16, 16)) });
      const arbs: Array<fc.WeightedArbitrary<string>> = [{ weight: 6, arbitrary: base }, { weight: 2, arbitrary: fc.constantFrom(...known().map(String)) }];
      // Exactly at the bound and one past it.
      if (max !== undefined && max <= BODY_LIMIT / 2) arbs.push({ weight: 1, arbitrary: fc.constantFrom(max, max + 1).map((n) => 'é'.repeat(n)) });
      return fc.oneof(...arbs);
    }
    case 'integer':
    case 'number': {
      const lo = schema.minimum ?? (typeof schema.exclusiveMinimum === 'number' ? schema.exclusiveMinimum : -1e6);
      const hi = schema.maximum ?? 1e9;
      const inRange = type === 'integer' ? fc.integer({ min: Math.ceil(lo), max: Math.floor(hi) }) : fc.double({ min: lo, max: hi, noNaN: true });
      const edges = fc.constantFrom(lo - 1, hi + 1, lo, hi, 2 ** 53, -(2 ** 53), ...known().filter((k): k is number => typeof k === 'number'));
      return fc.oneof({ weight: 5, arbitrary: inRange }, { weight: 2, arbitrary: edges });
    }
    case 'boolean':
      return fc.boolean();
    case 'null':
      return fc.constant(null);
    case undefined:
      return fc.jsonValue({ maxDepth: 1 }); // any value
    default:
      throw new Error(`no generator for the schema type ${JSON.stringify(type)}`);
  }
}

// ── requests ─────────────────────────────────────────────────────────────────

interface FuzzRequest {
  path: string;
  headers: Record<string, string>;
  body?: string | Uint8Array;
  /** what the request is, for a failure's message */
  note: string;
}

interface BodyChoice {
  body: string | Uint8Array | undefined;
  type: string | undefined;
  note: string;
}

const hostileQueryValue = fc.oneof(
  fc.constantFrom('1e9', '-1', '0', '1.5', '99999999999999999999', '', 'null', 'true', '[]', 'a=b', '%00', '%zz', '%', 'x'.repeat(3000), 'queued', 'bm90IGEgY3Vyc29y'),
  fc.string({ maxLength: 20 }).map(encodeURIComponent),
  fc.integer().map(String),
);
const headerText = fc.oneof(fc.constantFrom('', ' ', '0', '-1', 'bytes=0-', 'bytes=-0', 'bytes=5-1', 'bytes=0-0,1-1', 'bytes=99999999999999999999-', 'x'.repeat(300)), fc.stringMatching(/^[!-~]{0,40}$/));
const CONTENT_TYPES = ['application/json', 'text/plain', 'application/octet-stream', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json; charset=latin1', 'application/xml', 'image/png', ''];

/** The request generator of one route, from its path, its OpenAPI operation and the current fixtures. */
function requestsOf(r: Route): fc.Arbitrary<FuzzRequest> {
  const op = operation(r);
  const segment = (name: string): fc.Arbitrary<string> => {
    const real = PARAMS[name]!(r.path).map((v) => encodeURIComponent(String(v)));
    return real.length === 0 ? hostileSegment : fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...real) }, { weight: 1, arbitrary: hostileSegment });
  };
  const path = fc.tuple(...r.params.map(segment)).map((values) => r.params.reduce((p, name, i) => p.replace(`:${name}`, values[i]!), r.path));

  const queryParams = (op?.parameters ?? []).filter((p) => p.in === 'query');
  const entry = fc.oneof(
    ...(queryParams.length > 0
      ? [{ weight: 4, arbitrary: fc.constantFrom(...queryParams).chain((p) => fc.tuple(fc.constant(p.name), mutated(p.schema).map((v) => encodeURIComponent(typeof v === 'string' ? v : JSON.stringify(v))))) }]
      : []),
    { weight: 2, arbitrary: fc.tuple(fc.constantFrom('limit', 'cursor', 'after', 'state', 'app', 'batch', 'job', 'label', '__proto__', 'constructor[prototype][x]', 'a[b]', ''), hostileQueryValue) },
    { weight: 1, arbitrary: fc.tuple(fc.string({ maxLength: 8 }).map(encodeURIComponent), hostileQueryValue) },
  );
  const query = fc.oneof(fc.constant(''), fc.array(entry, { minLength: 1, maxLength: 5 }).map((es) => `?${es.map(([k, v]) => `${k}=${v}`).join('&')}`));

  const headerParams = (op?.parameters ?? []).filter((p) => p.in === 'header').map((p) => p.name);
  const headers = fc.option(fc.dictionary(fc.constantFrom('range', 'last-event-id', 'idempotency-key', 'if-none-match', 'accept', ...headerParams), headerText, { maxKeys: 2 }), { freq: 3 }).map((h) => h ?? {});

  const none: fc.Arbitrary<BodyChoice> = fc.constant({ body: undefined, type: undefined, note: 'no body' });
  let body = none;
  if (r.method !== 'GET' && r.method !== 'HEAD') {
    const schema = op?.requestBody?.content?.['application/json']?.schema;
    const near = schema ? mutated(schema) : fc.jsonValue({ maxDepth: 2 });
    const json = (a: fc.Arbitrary<string>, note: string): fc.Arbitrary<BodyChoice> => a.map((text) => ({ body: text, type: 'application/json', note: `${note} ${text.slice(0, 300)}` }));
    const blobPut = r.method === 'PUT' && r.path.endsWith(':sha256');
    body = fc.oneof<Array<fc.WeightedArbitrary<BodyChoice>>>(
      { weight: 1, arbitrary: none },
      { weight: blobPut ? 1 : 6, arbitrary: json(near.map((v) => JSON.stringify(v) ?? 'null'), 'near-valid') },
      { weight: 2, arbitrary: json(fc.tuple(near, prototypeKeys).map(([v, p]) => mergeJsonText(JSON.stringify(v) ?? 'null', p)), 'prototype keys') },
      { weight: 2, arbitrary: json(fc.oneof(fc.jsonValue({ maxDepth: 4 }).map((v) => JSON.stringify(v)), fc.json().map((j) => j.slice(0, -1)), fc.string({ unit: 'binary', maxLength: 40 })), 'hostile') },
      { weight: 1, arbitrary: json(deepNesting, 'deep') },
      // Near the body limit: just under, and just over.
      { weight: 1, arbitrary: fc.constantFrom(BODY_LIMIT - 64, BODY_LIMIT + 1).map((n): BodyChoice => ({ body: `{"name":"${'a'.repeat(n - 11)}"}`, type: 'application/json', note: `${n} bytes` })) },
      {
        weight: blobPut ? 2 : 1,
        arbitrary: fc.tuple(fc.constantFrom(...CONTENT_TYPES), fc.uint8Array({ maxLength: 300 })).map(([type, bytes]): BodyChoice => ({ body: bytes, type: type || undefined, note: `${bytes.length} bytes as "${type}"` })),
      },
      // Blob uploads: random bytes under a digest that is not theirs.
      ...(blobPut ? [{ weight: 6, arbitrary: fc.uint8Array({ minLength: 1, maxLength: 4096 }).map((bytes): BodyChoice => ({ body: bytes, type: 'application/octet-stream', note: `${bytes.length} random bytes` })) }] : []),
    );
  }
  return fc.tuple(path, query, headers, body).map(([p, q, h, b]) => ({
    path: p + q,
    headers: { ...h, ...(b.type === undefined ? {} : { 'content-type': b.type }) },
    ...(b.body === undefined ? {} : { body: b.body }),
    note: `${p.slice(0, 300)}${q.slice(0, 300)} ${JSON.stringify(h).slice(0, 200)} ${b.note}`,
  }));
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  body: any;
  stream: boolean;
}

async function send(g: Grid, method: string, req: FuzzRequest, token: string | null): Promise<Answer> {
  const headers = { ...req.headers, ...(token === null ? {} : { authorization: `Bearer ${token}` }) };
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(new Error(`${method} ${req.note}: no answer in 10 s`)), 10_000);
  try {
    const res = await fetch(g.s.url + req.path, { method, headers, redirect: 'manual', signal: ac.signal, ...(req.body === undefined ? {} : { body: req.body as BodyInit }) });
    if ((res.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
      ac.abort();
      await res.body?.cancel().catch(() => {});
      return { status: res.status, headers: res.headers, text: '', body: undefined, stream: true };
    }
    const text = await res.text();
    let body: unknown;
    try {
      body = text === '' ? undefined : JSON.parse(text);
    } catch {
      body = undefined;
    }
    return { status: res.status, headers: res.headers, text, body, stream: false };
  } finally {
    clearTimeout(timer);
  }
}

// ── what stored data a route's accepted requests may change ──────────────────

const PARTS = ['jobs', 'counts', 'batches', 'apps', 'workflows', 'blob', 'hosts', 'heldTask', 'projects', 'viewer'] as const;
type Part = (typeof PARTS)[number];
const RUN: Part[] = ['jobs', 'counts', 'batches', 'workflows', 'heldTask', 'hosts'];

/** A route's 2xx answers explain changes to these parts; a mutating route not listed: to all. */
const EFFECTS: Array<[RegExp, Part[]]> = [
  [/^(GET|HEAD) /, []],
  [/^POST \/v1\/projects\/:project\/(jobs|batches|workflows)$/, ['jobs', 'counts', 'batches', 'workflows']],
  [/^POST \/v1\/projects\/:project\/workflows\/validate$/, []],
  [/^POST \/v1\/projects\/:project\/(jobs|batches|workflows)\/:id\/(cancel|retry)$/, RUN],
  [/^POST \/v1\/projects\/:project\/apps/, ['apps']],
  [/^PUT \/v1\/projects\/:project\/blobs\/:sha256$/, []], // a new blob: the fixture's is there already
  [/^PUT \/v1\/projects\/:project\/members\/:user$/, ['projects', 'viewer']],
  [/^(POST|PATCH) \/v1\/projects(\/:project)?$/, ['projects', 'viewer']],
  [/^(POST|DELETE) \/v1\/(users|tokens|enroll-tokens)/, []],
  [/^PUT \/v1\/sites\/:name$/, []], // only "fuzz-site", which no host is of
  [/^POST \/agent\/v1\/(work|heartbeat|tasks\/:id\/result)$/, RUN],
  [/^POST \/agent\/v1\/tasks\/:id\/(uploads|transfer-urls)$/, []],
  [/^PUT \/(agent|transfer)\/v1\/.*\/(blobs|outputs\/[^/]+\/[^/]+)\/:sha256$/, []], // outputs: new blobs only
  [/^PUT \/agent\/v1\/tasks\/:id\/checkpoint\/:sha256$/, ['jobs', 'heldTask']],
  [/^POST \/agent\/v1\/enroll$/, ['hosts']],
];
const effectsOf = (key: string): readonly Part[] => EFFECTS.find(([re]) => re.test(key))?.[1] ?? PARTS;

async function snapshot(g: Grid): Promise<Record<Part, string>> {
  const s = g.s;
  // What the workflow loop would do in the background (a created workflow's first jobs) is done
  // first, so that it lands in the snapshot of the property that caused it, not in the next one's.
  await s.workflowLoop.pass();
  const read = async (path: string, token?: string): Promise<unknown> => {
    const r = await s.call('GET', path, token === undefined ? {} : { token });
    return [r.status, r.body];
  };
  const pages = async (path: string, field: string): Promise<unknown[]> => {
    const out: unknown[] = [];
    let cursor: string | null = null;
    do {
      const r = await s.call('GET', `${path}?limit=1000${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`);
      assert.equal(r.status, 200, r.text);
      out.push(...r.body[field]);
      cursor = r.body.nextCursor;
    } while (cursor !== null);
    return out;
  };
  const [blob, jobs, counts, batches, batch, apps, app, workflows, workflow, hosts, heldTask, projects, viewer] = await Promise.all([
    s.call('HEAD', `${PP}/blobs/${fx.digest}`), pages(`${PP}/jobs`, 'jobs'), read(`${PP}/counts`), pages(`${PP}/batches`, 'batches'), read(`${PP}/batches/${fx.batch}`),
    read(`${PP}/apps`), read(`${PP}/apps/fz`), pages(`${PP}/workflows`, 'workflows'), read(`${PP}/workflows/${fx.workflow}`), read('/v1/hosts'),
    read(`${PP}/jobs/${held.job}`), read('/v1/projects'), read('/v1/me', fx.viewer),
  ]);
  const parts: Record<Part, unknown> = {
    jobs, counts, batches: [batches, batch], apps: [apps, app], workflows: [workflows, workflow], blob: [blob.status, blob.headers.get('content-length')],
    hosts, heldTask, projects, viewer,
  };
  return Object.fromEntries(
    Object.entries(parts).map(([k, v]) => [k, JSON.stringify(v).replace(/"(lastSeenAt|leaseExpiresAt)":"[^"]*"/g, '"$1":"…"')]),
  ) as Record<Part, string>;
}

/**
 * Makes sure the host holds a live task (a fuzzed report or cancel may have ended the last);
 * true when it took a new one.
 */
async function holdTask(g: Grid, h: Host): Promise<boolean> {
  if (held.task !== 0) {
    const { tasks } = await g.job(held.job);
    if (tasks.some((t: { id: number; state: string }) => t.id === held.task && ACTIVE_TASK_STATES.includes(t.state as never))) return false;
  }
  await submitJob(g.s, P, { app: 'fz', inputs: { 'in.dat': fx.digest } });
  const [task] = await h.claim({ maxTasks: 1 });
  assert.ok(task, 'the host takes a task');
  held.task = task.taskId;
  held.job = task.jobId;
  const urls = await h.call('POST', `/tasks/${held.task}/transfer-urls`, {});
  assert.equal(urls.status, 200, urls.text);
  // /transfer/v1/<hostId>/tasks/<id>/inputs/<expires>/<signature>
  const [, , , hostId, , , , expires, signature] = (urls.body.inputs as string).split('/');
  held.transfer = { hostId: hostId!, expires: expires!, signature: signature! };
  return true;
}

// ── the test ─────────────────────────────────────────────────────────────────

test('every registered route, fuzzed: 2xx or a 4xx JSON error, nothing leaked, nothing changed by refusals', { timeout: 600_000 }, async (t: TestContext) => {
  await withGrid(
    async (g) => {
      const s = g.s;
      fx.viewer = await s.userWithRole('vera', P, 'viewer');
      await createApp(s, P, 'fz', { checkpointing: true, resources: { cores: 1, memoryMiB: 64 } });
      fx.digest = await uploadBlob(s, P, Buffer.from('fuzz routes input'));
      // Host 1 is a spare: hostile ids such as "+1" and "00000001" are 1 to the coercing validator,
      // so revoking it may be accepted; the fuzzing host is another.
      await g.host();
      const host = await g.host();
      assert.notEqual(host.id, 1);
      await holdTask(g, host);
      fx.batch = (await s.call('POST', `${PP}/batches`, { body: { app: 'fz', count: 2 } })).body.batch.id;
      const wf = await s.call('POST', `${PP}/workflows`, { body: { source: 'steps:\n  only:\n    app: fz\n' } });
      assert.equal(wf.status, 201, wf.text);
      fx.workflow = wf.body.workflow.id;
      doc = s.app.swagger() as unknown as OpenApi;
      const tokens: Record<Caller, string | null> = { operator: s.adminToken, viewer: fx.viewer, host: host.token, anonymous: null };

      const routes = registeredRoutes(s.app.printRoutes({ commonPrefix: false })).map(routeOf);
      const unfuzzable: string[] = [];
      for (const r of routes) {
        const missing = r.params.filter((p) => !PARAMS[p]);
        if (missing.length > 0) unfuzzable.push(`${r.key}: no generator for the path parameter(s) ${missing.join(', ')} (PARAMS in test/api/fuzz-routes.test.ts)`);
        else {
          try {
            requestsOf(r);
          } catch (e) {
            unfuzzable.push(`${r.key}: ${(e as Error).message}`);
          }
        }
      }
      await t.test('every registered route can be fuzzed', () => {
        assert.ok(routes.length >= 50, `found only ${routes.length} routes: is printRoutes parsed right?`);
        assert.deepEqual(unfuzzable, []);
      });

      const accepted: Record<string, number> = {};
      let last: Record<Part, string> | null = null;
      let requests = 0;
      for (const r of routes.filter((x) => !unfuzzable.some((u) => u.startsWith(`${x.key}:`)))) {
        for (const caller of r.callers) {
          await t.test(`${r.key} as ${caller}`, async () => {
            const t0 = Date.now();
            // The last property's closing snapshot is this one's opening, unless a task was taken since.
            const retaken = await holdTask(g, host);
            const before = !retaken && last !== null ? last : await snapshot(g);
            last = null;
            const t1 = Date.now();
            let changed = 0;
            const seen: string[] = [];
            await fc.assert(
              fc.asyncProperty(requestsOf(r), async (req) => {
                requests++;
                const a = await send(g, r.method, req, tokens[caller]);
                const what = `${r.method} ${req.note} as ${caller}`;
                if (r.path.startsWith('/dashboard') && a.status === 308) return; // /dashboard → /dashboard/
                assertFuzzAnswer(a, what, { bare: r.bare || a.stream, dataDir: s.dataDir });
                if (a.status < 300 && r.method !== 'GET' && r.method !== 'HEAD') changed++;
                if (process.env.FUZZ_DEBUG) seen.push(`${a.status}${a.body?.error ? ` ${a.body.error.code} ${String(a.body.error.message).slice(0, 60)}` : ''}`);
              }),
              { numRuns: RUNS },
            );
            accepted[`${r.key} as ${caller}`] = changed;
            if (process.env.FUZZ_DEBUG) console.log(`${r.key} as ${caller} (setup ${t1 - t0} ms, fuzz ${Date.now() - t1} ms):\n  ${seen.join('\n  ')}`);
            assert.deepEqual((await s.call('GET', '/healthz', { token: null })).body, { status: 'ok' });
            assert.deepEqual((await s.call('GET', '/readyz', { token: null })).body, { status: 'ready' });
            const after = await snapshot(g);
            const explained = changed > 0 ? effectsOf(r.key) : [];
            for (const part of PARTS) {
              if (!explained.includes(part)) assert.equal(after[part], before[part], `${part} changed, though ${changed === 0 ? 'every request was refused' : `only ${explained.join(', ')} may`}`);
            }
            last = after;
          });
        }
      }
      const fuzzed = Object.keys(accepted).length;
      const taken = Object.entries(accepted).filter(([, n]) => n > 0).map(([k, n]) => `${k}: ${n}`);
      t.diagnostic(`${routes.length} routes, ${fuzzed} route×caller properties, ${requests} requests; accepted changes: ${taken.join('; ') || 'none'}`);
    },
    { timing: { leaseSeconds: 3600 }, server: { limits: { maxBatchJobs: 200 } } },
  );
});
