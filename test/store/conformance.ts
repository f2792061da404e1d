/**
 * The Store port's conformance suite. Every adapter (SQLite now, PostgreSQL later) runs it:
 *
 *   runStoreConformance('SqliteStore', async () => ({ store, cleanup }));
 *
 * `open` must return a FRESH store whose `migrate()` has not been called yet; the suite calls
 * `migrate()` itself. After each test the suite calls `store.close()` and then `cleanup()`,
 * so `cleanup` only has to release what the adapter does not own (temp files, a schema, …).
 *
 * Everything here goes through the port: no driver types, no SQL. Where the port leaves an
 * order unspecified the suite compares sorted results.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BoxgridError, type ErrorCode } from '../../src/domain/errors.js';
import type { AppSpec, JobSpec, TokenRecord, EnrollTokenRecord } from '../../src/domain/model.js';
import type { TaskOutcome, TaskUsage } from '../../src/domain/outcomes.js';
import { JOB_STATES } from '../../src/domain/states.js';
import type { RuntimeKind } from '../../src/domain/model.js';
import type { Resources } from '../../src/domain/resources.js';
import { DEFAULT_SCHEDULING, type SchedulingOptions } from '../../src/scheduling/options.js';
import type { ClaimPlan, QueueView } from '../../src/scheduling/plan.js';
import type { RunningTask } from '../../src/scheduling/speculation.js';
import type { ClaimGathered, ClaimRequest, InsertJobsRequest, LogChunk, ReportRequest, Store } from '../../src/store/store.js';

export type OpenStore = () => Promise<{ store: Store; cleanup: () => Promise<void> }>;

const T0 = 1_700_000_000_000;

function sha(n: number): string {
  return n.toString(16).padStart(64, '0');
}

export function appSpec(name: string, overrides: Partial<AppSpec> = {}): AppSpec {
  return {
    name,
    description: `the ${name} app`,
    image: `registry.example/sci/${name}:1.0`,
    imageDigest: null,
    command: ['/bin/run', '--in', '{x}'],
    resources: { cores: 2, memoryMiB: 1024, diskMiB: 2048, gpus: 0 },
    maxRuntimeSeconds: 3600,
    maxAttempts: 3,
    replicas: 1,
    quorum: 1,
    maxReplicas: 2,
    adaptiveReplication: false, validator: null,
    checkpointing: false,
    nativeCommand: null,
    platforms: ['linux/amd64'],
    ...overrides,
  };
}

export function jobSpec(overrides: Partial<JobSpec> = {}): JobSpec {
  return {
    args: [],
    env: {},
    inputs: {},
    resources: {},
    priority: 0,
    deadline: null,
    labels: {},
    selector: {},
    params: {},
    ...overrides,
  };
}

/** Asserts the promise rejects with a BoxgridError of the given code; returns the error. */
export async function rejectsWithCode(p: Promise<unknown>, code: ErrorCode): Promise<BoxgridError> {
  let caught: unknown = undefined;
  let resolved = false;
  try {
    await p;
    resolved = true;
  } catch (e) {
    caught = e;
  }
  assert.ok(!resolved, `expected a rejection with code ${code}, but the call resolved`);
  assert.ok(caught instanceof BoxgridError, `expected a BoxgridError with code ${code}, got ${String(caught)}`);
  assert.equal(caught.code, code, `wrong error code (message: ${caught.message})`);
  return caught;
}

/** Runs `fn` against a fresh (by default migrated) store from `open`, then closes and cleans up. */
export async function withFreshStore(open: OpenStore, fn: (s: Store) => Promise<void>, opts: { migrate?: boolean } = {}): Promise<void> {
  const { store, cleanup } = await open();
  try {
    if (opts.migrate !== false) await store.migrate();
    await fn(store);
  } finally {
    try {
      await store.close();
    } finally {
      await cleanup();
    }
  }
}

export function runStoreConformance(name: string, open: OpenStore, opts: { skip?: string | false } = {}): void {
  const withStore = (fn: (s: Store) => Promise<void>, opts: { migrate?: boolean } = {}) => withFreshStore(open, fn, opts);

  /** `todo`: a known bug of the store (the reason says which); the test runs but does not fail the suite. */
  const test = (title: string, fn: (s: Store) => Promise<void>, opts: { migrate?: boolean; todo?: string } = {}) =>
    it(title, opts.todo === undefined ? {} : { todo: opts.todo }, () => withStore(fn, opts));

  /** A project with an app, ready for jobs. */
  async function projectWithApp(s: Store, projectName = 'p', appName = 'sim') {
    const project = await s.createProject(projectName, 1, T0);
    const app = await s.createAppVersion(project.id, appSpec(appName), 'new', T0);
    return { project, app };
  }

  function req(over: Partial<InsertJobsRequest> & Pick<InsertJobsRequest, 'projectId' | 'app'>): InsertJobsRequest {
    return { batch: null, jobs: [jobSpec()], idempotency: null, now: T0 + 10, ...over };
  }

  async function allJobIds(s: Store, projectId: number): Promise<number[]> {
    return (await s.listJobs(projectId, {}, { limit: 1_000_000 })).map((j) => j.id);
  }

  describe(name, { skip: opts.skip ?? false }, () => {
    // ── lifecycle ─────────────────────────────────────────────────────────────
    describe('lifecycle', () => {
      test(
        'migrate applies pending migrations once; a second call applies nothing',
        async (s) => {
          const first = await s.migrate();
          assert.ok(first.applied.length > 0, 'a fresh store has migrations to apply');
          assert.deepEqual(first.applied, [...first.applied].sort((a, b) => a - b), 'applied in ascending order');
          assert.equal(new Set(first.applied).size, first.applied.length, 'no version applied twice');
          const second = await s.migrate();
          assert.deepEqual(second.applied, []);
          // And the schema works after the no-op migrate.
          assert.equal(await s.countUsers(), 0);
        },
        { migrate: false },
      );

      test('ping resolves on a migrated store', async (s) => {
        await s.ping();
      });
    });

    // ── identity ──────────────────────────────────────────────────────────────
    describe('users and projects', () => {
      test('createUser / getUser / getUserByName / countUsers round-trip', async (s) => {
        assert.equal(await s.countUsers(), 0);
        const alice = await s.createUser('alice', true, T0);
        const bob = await s.createUser('bob', false, T0 + 1);
        assert.deepEqual(alice, { id: alice.id, name: 'alice', operator: true, createdAt: T0 });
        assert.deepEqual(bob, { id: bob.id, name: 'bob', operator: false, createdAt: T0 + 1 });
        assert.notEqual(alice.id, bob.id);
        assert.equal(await s.countUsers(), 2);
        assert.deepEqual(await s.getUser(alice.id), alice);
        assert.deepEqual(await s.getUser(bob.id), bob);
        assert.deepEqual(await s.getUserByName('bob'), bob);
        assert.equal(await s.getUser(Math.max(alice.id, bob.id) + 1000), null);
        assert.equal(await s.getUserByName('carol'), null);
        assert.equal(await s.getUserByName('Alice'), null, 'names are case-sensitive');
      });

      test('a duplicate user name throws already_exists and writes nothing', async (s) => {
        await s.createUser('alice', false, T0);
        await rejectsWithCode(s.createUser('alice', true, T0 + 1), 'already_exists');
        assert.equal(await s.countUsers(), 1);
        assert.equal((await s.getUserByName('alice'))?.operator, false);
      });

      test('createProject / getProjectByName round-trip; duplicate name throws already_exists', async (s) => {
        const p = await s.createProject('physics', 1.5, T0);
        assert.deepEqual(p, { id: p.id, name: 'physics', shareWeight: 1.5, createdAt: T0 });
        assert.deepEqual(await s.getProjectByName('physics'), p);
        assert.equal(await s.getProjectByName('chemistry'), null);
        await rejectsWithCode(s.createProject('physics', 2, T0 + 1), 'already_exists');
        assert.deepEqual(await s.getProjectByName('physics'), p, 'the original is untouched');
        const q = await s.createProject('chemistry', 1, T0);
        assert.notEqual(q.id, p.id);
      });
    });

    describe('memberships', () => {
      test('setMembership inserts, then upserts the role; getRole is per project', async (s) => {
        const u = await s.createUser('u', false, T0);
        const p1 = await s.createProject('p1', 1, T0);
        const p2 = await s.createProject('p2', 1, T0);
        assert.equal(await s.getRole(p1.id, u.id), null);
        await s.setMembership(p1.id, u.id, 'viewer');
        assert.equal(await s.getRole(p1.id, u.id), 'viewer');
        await s.setMembership(p1.id, u.id, 'admin');
        assert.equal(await s.getRole(p1.id, u.id), 'admin');
        await s.setMembership(p1.id, u.id, 'submitter');
        assert.equal(await s.getRole(p1.id, u.id), 'submitter');
        assert.equal(await s.getRole(p2.id, u.id), null, 'membership of p1 says nothing about p2');
        // The upsert did not create duplicates: the user lists p1 exactly once.
        const listed = await s.listProjectsFor(u);
        assert.deepEqual(listed.map((p) => [p.name, p.role]), [['p1', 'submitter']]);
      });

      test('listProjectsFor: operators see every project as admin; members only theirs with their role', async (s) => {
        const op = await s.createUser('op', true, T0);
        const m = await s.createUser('m', false, T0);
        const loner = await s.createUser('loner', false, T0);
        const a = await s.createProject('alpha', 1, T0);
        const b = await s.createProject('beta', 2, T0);
        const c = await s.createProject('gamma', 3, T0);
        await s.setMembership(a.id, m.id, 'viewer');
        await s.setMembership(c.id, m.id, 'submitter');
        await s.setMembership(b.id, op.id, 'viewer'); // an operator is admin everywhere regardless

        const byName = <T extends { name: string }>(xs: T[]) => [...xs].sort((x, y) => x.name.localeCompare(y.name));

        const forOp = byName(await s.listProjectsFor(op));
        assert.deepEqual(forOp, [
          { ...a, role: 'admin' },
          { ...b, role: 'admin' },
          { ...c, role: 'admin' },
        ]);
        const forM = byName(await s.listProjectsFor(m));
        assert.deepEqual(forM, [
          { ...a, role: 'viewer' },
          { ...c, role: 'submitter' },
        ]);
        assert.deepEqual(await s.listProjectsFor(loner), []);
      });
    });

    describe('tokens', () => {
      test('insertToken / getToken round-trip, including the secret hash bytes', async (s) => {
        const hash = Buffer.from(Array.from({ length: 32 }, (_, i) => (i * 37 + 5) & 0xff));
        const user: TokenRecord = {
          id: '0123456789abcdef', kind: 'user', subjectId: 7, secretHash: hash, label: 'laptop',
          createdAt: T0, expiresAt: null, revokedAt: null,
        };
        const host: TokenRecord = {
          id: 'fedcba9876543210', kind: 'host', subjectId: 3, secretHash: Buffer.alloc(32, 0xab), label: 'node-1',
          createdAt: T0 + 1, expiresAt: T0 + 86_400_000, revokedAt: T0 + 5,
        };
        await s.insertToken(user);
        await s.insertToken(host);
        const u = await s.getToken(user.id);
        assert.ok(u);
        assert.ok(Buffer.isBuffer(u.secretHash), 'secretHash comes back as a Buffer');
        assert.ok(u.secretHash.equals(hash), 'secretHash bytes are preserved');
        assert.deepEqual({ ...u, secretHash: null }, { ...user, secretHash: null });
        const h = await s.getToken(host.id);
        assert.ok(h);
        assert.ok(Buffer.isBuffer(h.secretHash) && h.secretHash.equals(host.secretHash));
        assert.deepEqual({ ...h, secretHash: null }, { ...host, secretHash: null });
        assert.equal(await s.getToken('0000000000000000'), null);
      });

      test('revokeToken marks a token revoked once; unknown ids are false', async (s) => {
        const t: TokenRecord = { id: 'aaaaaaaaaaaaaaaa', kind: 'user', subjectId: 1, secretHash: Buffer.alloc(32, 1), label: 'x', createdAt: T0, expiresAt: null, revokedAt: null };
        await s.insertToken(t);
        assert.equal(await s.revokeToken(t.id, T0 + 5), true);
        assert.equal((await s.getToken(t.id))?.revokedAt, T0 + 5);
        assert.equal(await s.revokeToken(t.id, T0 + 9), false, 'a second revoke changes nothing');
        assert.equal((await s.getToken(t.id))?.revokedAt, T0 + 5);
        assert.equal(await s.revokeToken('bbbbbbbbbbbbbbbb', T0), false);
      });
    });

    describe('bootstrap', () => {
      const token = (userId: number): TokenRecord => ({
        id: 'cccccccccccccccc', kind: 'user', subjectId: userId, secretHash: Buffer.alloc(32, 2), label: 'boot', createdAt: T0, expiresAt: null, revokedAt: null,
      });
      test('writes operator, project, admin membership and token together, once', async (s) => {
        assert.equal(await s.bootstrap({ operatorName: 'admin', projectName: 'default', token }, T0), true);
        const admin = await s.getUserByName('admin');
        assert.ok(admin?.operator);
        const project = await s.getProjectByName('default');
        assert.ok(project);
        assert.equal(await s.getRole(project.id, admin.id), 'admin');
        assert.equal((await s.getToken('cccccccccccccccc'))?.subjectId, admin.id);
        assert.equal(await s.bootstrap({ operatorName: 'admin2', projectName: 'other', token }, T0), false);
        assert.equal(await s.getUserByName('admin2'), null);
        assert.equal(await s.countUsers(), 1);
      });
      test('does nothing when users exist already', async (s) => {
        await s.createUser('someone', false, T0);
        assert.equal(await s.bootstrap({ operatorName: 'admin', projectName: 'default', token }, T0), false);
        assert.equal(await s.getProjectByName('default'), null);
        assert.equal(await s.getToken('cccccccccccccccc'), null);
      });
    });

    // ── apps ──────────────────────────────────────────────────────────────────
    describe('apps', () => {
      test("createAppVersion 'new' creates version 1; repeating it throws already_exists", async (s) => {
        const p = await s.createProject('p', 1, T0);
        const spec = appSpec('sim', { imageDigest: 'sha256:' + sha(1), checkpointing: true, platforms: ['linux/amd64', 'linux/arm64'] });
        const app = await s.createAppVersion(p.id, spec, 'new', T0);
        assert.deepEqual(app, { ...spec, id: app.id, projectId: p.id, version: 1, createdAt: T0 });
        await rejectsWithCode(s.createAppVersion(p.id, appSpec('sim'), 'new', T0 + 1), 'already_exists');
        assert.deepEqual(await s.listAppVersions(p.id, 'sim'), [app], 'the failed create wrote nothing');
      });

      test("createAppVersion 'version' throws not_found for an absent app and otherwise increments", async (s) => {
        const p = await s.createProject('p', 1, T0);
        await rejectsWithCode(s.createAppVersion(p.id, appSpec('sim'), 'version', T0), 'not_found');
        assert.deepEqual(await s.listAppVersions(p.id, 'sim'), []);
        const v1 = await s.createAppVersion(p.id, appSpec('sim'), 'new', T0);
        const v2 = await s.createAppVersion(p.id, appSpec('sim', { image: 'img:2' }), 'version', T0 + 1);
        const v3 = await s.createAppVersion(p.id, appSpec('sim', { image: 'img:3' }), 'version', T0 + 2);
        assert.deepEqual([v1.version, v2.version, v3.version], [1, 2, 3]);
        assert.equal(new Set([v1.id, v2.id, v3.id]).size, 3, 'each version is its own row');
        assert.deepEqual(await s.listAppVersions(p.id, 'sim'), [v1, v2, v3]);
      });

      test('apps are per project: the same name is independent in another project', async (s) => {
        const p = await s.createProject('p', 1, T0);
        const q = await s.createProject('q', 1, T0);
        await s.createAppVersion(p.id, appSpec('sim'), 'new', T0);
        await s.createAppVersion(p.id, appSpec('sim'), 'version', T0);
        await rejectsWithCode(s.createAppVersion(q.id, appSpec('sim'), 'version', T0), 'not_found');
        const qa = await s.createAppVersion(q.id, appSpec('sim'), 'new', T0);
        assert.equal(qa.version, 1);
        assert.equal(qa.projectId, q.id);
        assert.equal((await s.getApp(p.id, 'sim'))?.version, 2);
        assert.equal((await s.getApp(q.id, 'sim'))?.version, 1);
      });

      test('getApp returns the latest without a version and the given one with it', async (s) => {
        const p = await s.createProject('p', 1, T0);
        const q = await s.createProject('q', 1, T0);
        const v1 = await s.createAppVersion(p.id, appSpec('sim', { image: 'img:1' }), 'new', T0);
        const v2 = await s.createAppVersion(p.id, appSpec('sim', { image: 'img:2' }), 'version', T0 + 1);
        assert.deepEqual(await s.getApp(p.id, 'sim'), v2);
        assert.deepEqual(await s.getApp(p.id, 'sim', 1), v1);
        assert.deepEqual(await s.getApp(p.id, 'sim', 2), v2);
        assert.equal(await s.getApp(p.id, 'sim', 3), null);
        assert.equal(await s.getApp(p.id, 'other'), null);
        assert.equal(await s.getApp(q.id, 'sim'), null, 'scoped by project');
        assert.equal(await s.getApp(q.id, 'sim', 1), null, 'scoped by project');
      });

      test('listApps returns the latest version of each app in the project', async (s) => {
        const p = await s.createProject('p', 1, T0);
        const q = await s.createProject('q', 1, T0);
        assert.deepEqual(await s.listApps(p.id), []);
        await s.createAppVersion(p.id, appSpec('zeta'), 'new', T0);
        await s.createAppVersion(p.id, appSpec('alpha'), 'new', T0);
        await s.createAppVersion(p.id, appSpec('alpha'), 'version', T0 + 1);
        const alpha3 = await s.createAppVersion(p.id, appSpec('alpha'), 'version', T0 + 2);
        const zeta2 = await s.createAppVersion(p.id, appSpec('zeta'), 'version', T0 + 3);
        const mid = await s.createAppVersion(p.id, appSpec('mid'), 'new', T0 + 4);
        await s.createAppVersion(q.id, appSpec('other'), 'new', T0);
        await s.createAppVersion(q.id, appSpec('alpha'), 'new', T0);
        const listed = [...(await s.listApps(p.id))].sort((a, b) => a.name.localeCompare(b.name));
        assert.deepEqual(listed, [alpha3, mid, zeta2]);
      });

      test('listAppVersions lists every version in ascending order, empty for an unknown app', async (s) => {
        const p = await s.createProject('p', 1, T0);
        assert.deepEqual(await s.listAppVersions(p.id, 'sim'), []);
        const vs = [await s.createAppVersion(p.id, appSpec('sim'), 'new', T0)];
        for (let i = 0; i < 4; i++) vs.push(await s.createAppVersion(p.id, appSpec('sim', { maxAttempts: i }), 'version', T0 + i));
        assert.deepEqual(await s.listAppVersions(p.id, 'sim'), vs);
      });
    });

    // ── jobs and batches ─────────────────────────────────────────────────────
    describe('insertJobs', () => {
      test('a single job (no batch) round-trips every field through getJob', async (s) => {
        const { project, app } = await projectWithApp(s);
        const spec = jobSpec({
          args: ['--x', '1', 'with space', 'ünïcode'],
          env: { OMP_NUM_THREADS: '4', EMPTY: '' },
          inputs: { 'data.csv': sha(42) },
          resources: { cores: 0.5, memoryMiB: 256 },
          priority: -3,
          deadline: T0 + 60_000,
          labels: { run: 'r1', kind: 'test' },
          selector: { 'gpu-model': 'a100', site: 'lab-2' },
          params: { x: 1, y: 'b', z: 0.1 },
        });
        const r = await s.insertJobs(req({ projectId: project.id, app, jobs: [spec], now: T0 + 10 }));
        assert.equal(r.batch, null);
        assert.equal(r.replayed, false);
        assert.equal(r.jobIds.length, 1);
        const id = r.jobIds[0]!;
        assert.ok(Number.isInteger(id) && id > 0);
        const job = await s.getJob(project.id, id);
        assert.deepEqual(job, {
          ...spec,
          id,
          projectId: project.id,
          appId: app.id,
          appName: app.name,
          appVersion: app.version,
          batchId: null,
          state: 'queued',
          attempts: 0,
          reason: null,
          createdAt: T0 + 10,
          updatedAt: T0 + 10,
          finishedAt: null,
          checkpoint: null,
          retryAt: null,
          quorum: 1,
          replicasWanted: 0,
          awaitingValidator: false,
          canonicalTaskId: null,
        });
      });

      test('empty per-job maps and arrays come back empty (not missing)', async (s) => {
        const { project, app } = await projectWithApp(s);
        const r = await s.insertJobs(req({ projectId: project.id, app, jobs: [jobSpec()] }));
        const job = await s.getJob(project.id, r.jobIds[0]!);
        assert.ok(job);
        assert.deepEqual(
          { args: job.args, env: job.env, inputs: job.inputs, resources: job.resources, labels: job.labels, params: job.params, deadline: job.deadline },
          { args: [], env: {}, inputs: {}, resources: {}, labels: {}, params: {}, deadline: null },
        );
      });

      test('a batch returns the batch and the job ids in request order', async (s) => {
        const { project, app } = await projectWithApp(s);
        const jobs = Array.from({ length: 5 }, (_, i) => jobSpec({ args: [`job-${i}`], params: { i }, priority: i % 2 }));
        const r = await s.insertJobs(req({ projectId: project.id, app, batch: { labels: { sweep: 's1' } }, jobs, now: T0 + 20 }));
        assert.equal(r.replayed, false);
        assert.ok(r.batch);
        assert.deepEqual(r.batch, {
          id: r.batch.id, projectId: project.id, appName: app.name, appVersion: app.version, size: 5,
          labels: { sweep: 's1' }, createdAt: T0 + 20,
        });
        assert.deepEqual(await s.getBatch(project.id, r.batch.id), r.batch);
        assert.equal(r.jobIds.length, 5);
        assert.equal(new Set(r.jobIds).size, 5, 'ids are distinct');
        assert.deepEqual(r.jobIds, [...r.jobIds].sort((a, b) => a - b), 'ids ascend in request order');
        for (let i = 0; i < 5; i++) {
          const job = await s.getJob(project.id, r.jobIds[i]!);
          assert.ok(job);
          assert.deepEqual(job.args, [`job-${i}`]);
          assert.deepEqual(job.params, { i });
          assert.equal(job.priority, i % 2);
          assert.equal(job.batchId, r.batch.id);
          assert.equal(job.state, 'queued');
        }
      });

      test('a second submission gets new ids after the first', async (s) => {
        const { project, app } = await projectWithApp(s);
        const a = await s.insertJobs(req({ projectId: project.id, app, batch: { labels: {} }, jobs: [jobSpec(), jobSpec()] }));
        const b = await s.insertJobs(req({ projectId: project.id, app, batch: { labels: {} }, jobs: [jobSpec(), jobSpec()] }));
        assert.notEqual(a.batch!.id, b.batch!.id);
        assert.ok(Math.min(...b.jobIds) > Math.max(...a.jobIds));
      });

      test('idempotent replay of a single job returns the same id, replayed=true, and writes nothing', async (s) => {
        const { project, app } = await projectWithApp(s);
        const idem = { key: 'k-1', requestHash: 'h-1' };
        const first = await s.insertJobs(req({ projectId: project.id, app, jobs: [jobSpec({ args: ['a'] })], idempotency: idem }));
        assert.equal(first.replayed, false);
        const before = await allJobIds(s, project.id);
        const again = await s.insertJobs(req({ projectId: project.id, app, jobs: [jobSpec({ args: ['a'] })], idempotency: idem, now: T0 + 99 }));
        assert.deepEqual(again, { batch: null, jobIds: first.jobIds, replayed: true });
        assert.deepEqual(await allJobIds(s, project.id), before);
      });

      test('idempotent replay of a batch returns the same batch and ids, replayed=true, and writes nothing', async (s) => {
        const { project, app } = await projectWithApp(s);
        const idem = { key: 'sweep-7', requestHash: 'abc' };
        const jobs = Array.from({ length: 7 }, (_, i) => jobSpec({ args: [String(i)] }));
        const first = await s.insertJobs(req({ projectId: project.id, app, batch: { labels: { a: 'b' } }, jobs, idempotency: idem }));
        const again = await s.insertJobs(req({ projectId: project.id, app, batch: { labels: { a: 'b' } }, jobs, idempotency: idem, now: T0 + 99 }));
        assert.equal(again.replayed, true);
        assert.deepEqual(again.batch, first.batch);
        assert.deepEqual(again.jobIds, first.jobIds);
        assert.equal((await s.listBatches(project.id, { limit: 100 })).length, 1);
        assert.equal((await allJobIds(s, project.id)).length, 7);
      });

      test('findIdempotent returns the recorded outcome and request hash, per project', async (s) => {
        const { project, app } = await projectWithApp(s);
        const other = await s.createProject('q', 1, T0);
        assert.equal(await s.findIdempotent(project.id, 'k'), null);
        const first = await s.insertJobs(req({ projectId: project.id, app, batch: { labels: {} }, jobs: [jobSpec(), jobSpec()], idempotency: { key: 'k', requestHash: 'h1' } }));
        const found = await s.findIdempotent(project.id, 'k');
        assert.ok(found);
        assert.equal(found.requestHash, 'h1');
        assert.deepEqual(found.result.jobIds, first.jobIds);
        assert.equal(found.result.batch?.id, first.batch?.id);
        assert.equal(found.result.replayed, true);
        assert.equal(await s.findIdempotent(other.id, 'k'), null);
      });

      test('a different request under the same idempotency key throws conflict and writes nothing', async (s) => {
        const { project, app } = await projectWithApp(s);
        await s.insertJobs(req({ projectId: project.id, app, idempotency: { key: 'k', requestHash: 'one' } }));
        const before = await allJobIds(s, project.id);
        await rejectsWithCode(
          s.insertJobs(req({ projectId: project.id, app, batch: { labels: {} }, jobs: [jobSpec(), jobSpec()], idempotency: { key: 'k', requestHash: 'two' } })),
          'conflict',
        );
        assert.deepEqual(await allJobIds(s, project.id), before);
        assert.deepEqual(await s.listBatches(project.id, { limit: 10 }), []);
      });

      test('idempotency keys are per project', async (s) => {
        const { project: p, app: pa } = await projectWithApp(s, 'p');
        const { project: q, app: qa } = await projectWithApp(s, 'q');
        const idem = { key: 'same-key', requestHash: 'h' };
        const a = await s.insertJobs(req({ projectId: p.id, app: pa, idempotency: idem }));
        const b = await s.insertJobs(req({ projectId: q.id, app: qa, idempotency: { key: 'same-key', requestHash: 'other' } }));
        assert.equal(b.replayed, false);
        assert.notDeepEqual(b.jobIds, a.jobIds);
        assert.equal((await s.getJob(q.id, b.jobIds[0]!))?.projectId, q.id);
      });

      test('a request that fails part-way writes nothing (no jobs, no batch, key not consumed)', async (s) => {
        const { project, app } = await projectWithApp(s);
        const good = Array.from({ length: 250 }, (_, i) => jobSpec({ args: [String(i)], labels: { k: 'v' } }));
        // The last job carries a label without a value: no adapter can store it, and by then
        // the batch and the earlier jobs have been written inside the same unit of work.
        const bad = [...good, jobSpec({ labels: { k: null as unknown as string } })];
        const idem = { key: 'atomic', requestHash: 'h1' };
        await assert.rejects(s.insertJobs(req({ projectId: project.id, app, batch: { labels: {} }, jobs: bad, idempotency: idem })));
        assert.deepEqual(await allJobIds(s, project.id), []);
        assert.deepEqual(await s.listBatches(project.id, { limit: 10 }), []);
        assert.deepEqual(await s.listJobs(project.id, { label: { key: 'k', value: 'v' } }, { limit: 10 }), []);
        const retry = await s.insertJobs(req({ projectId: project.id, app, batch: { labels: {} }, jobs: good, idempotency: { key: 'atomic', requestHash: 'h2' } }));
        assert.equal(retry.replayed, false, 'the failed request did not record its idempotency key');
        assert.equal(retry.jobIds.length, 250);
      });
    });

    describe('reading jobs', () => {
      test("getJob is scoped by project: another project's id reads as null", async (s) => {
        const { project: p, app } = await projectWithApp(s, 'p');
        const q = await s.createProject('q', 1, T0);
        const r = await s.insertJobs(req({ projectId: p.id, app }));
        const id = r.jobIds[0]!;
        assert.ok(await s.getJob(p.id, id));
        assert.equal(await s.getJob(q.id, id), null);
        assert.equal(await s.getJob(p.id, id + 1000), null);
      });

      test('listTasks is empty for a new job', async (s) => {
        const { project, app } = await projectWithApp(s);
        const r = await s.insertJobs(req({ projectId: project.id, app }));
        assert.deepEqual(await s.listTasks(r.jobIds[0]!), []);
        assert.deepEqual(await s.listTasks(r.jobIds[0]! + 1000), []);
      });

      test('listJobs filters by state, app name, batch and label, and only within the project', async (s) => {
        const p = await s.createProject('p', 1, T0);
        const q = await s.createProject('q', 1, T0);
        const sim = await s.createAppVersion(p.id, appSpec('sim'), 'new', T0);
        const sim2 = await s.createAppVersion(p.id, appSpec('sim'), 'version', T0);
        const fit = await s.createAppVersion(p.id, appSpec('fit'), 'new', T0);
        const qsim = await s.createAppVersion(q.id, appSpec('sim'), 'new', T0);

        const b1 = await s.insertJobs(req({
          projectId: p.id, app: sim, batch: { labels: {} },
          jobs: [jobSpec({ labels: { color: 'red', size: 'L' } }), jobSpec({ labels: { color: 'blue' } }), jobSpec()],
        }));
        const b2 = await s.insertJobs(req({
          projectId: p.id, app: fit, batch: { labels: {} },
          jobs: [jobSpec({ labels: { color: 'red' } }), jobSpec({ labels: { size: 'red' } })],
        }));
        const single = await s.insertJobs(req({ projectId: p.id, app: sim2, jobs: [jobSpec({ labels: { color: 'red' } })] }));
        const other = await s.insertJobs(req({ projectId: q.id, app: qsim, jobs: [jobSpec({ labels: { color: 'red' } })] }));
        const cancelled = await s.cancelJob(p.id, b1.jobIds[1]!, T0 + 50);

        const ids = async (filter: Parameters<Store['listJobs']>[1]) =>
          (await s.listJobs(p.id, filter, { limit: 100 })).map((j) => j.id);
        const desc = (xs: number[]) => [...xs].sort((a, b) => b - a);

        const all = [...b1.jobIds, ...b2.jobIds, ...single.jobIds];
        assert.deepEqual(await ids({}), desc(all), 'no filter: every job of the project, newest first');
        assert.ok(!(await ids({})).includes(other.jobIds[0]!));

        assert.deepEqual(await ids({ state: 'cancelled' }), [cancelled.id]);
        assert.deepEqual(await ids({ state: 'queued' }), desc(all.filter((id) => id !== cancelled.id)));
        assert.deepEqual(await ids({ state: 'running' }), []);

        assert.deepEqual(await ids({ appName: 'fit' }), desc(b2.jobIds), 'app filter');
        assert.deepEqual(await ids({ appName: 'sim' }), desc([...b1.jobIds, ...single.jobIds]), 'app filter spans versions');
        assert.deepEqual(await ids({ appName: 'nope' }), []);

        assert.deepEqual(await ids({ batchId: b1.batch!.id }), desc(b1.jobIds));
        assert.deepEqual(await ids({ batchId: b2.batch!.id }), desc(b2.jobIds));
        assert.deepEqual(await s.listJobs(q.id, { batchId: b1.batch!.id }, { limit: 100 }), [], "another project's batch");

        assert.deepEqual(
          await ids({ label: { key: 'color', value: 'red' } }),
          desc([b1.jobIds[0]!, b2.jobIds[0]!, single.jobIds[0]!]),
          'label filter matches key and value, not other projects',
        );
        assert.deepEqual(await ids({ label: { key: 'size', value: 'red' } }), [b2.jobIds[1]!], 'key matters, not just value');
        assert.deepEqual(await ids({ label: { key: 'color', value: 'green' } }), []);

        // Combined filters intersect.
        assert.deepEqual(await ids({ appName: 'sim', label: { key: 'color', value: 'red' } }), desc([b1.jobIds[0]!, single.jobIds[0]!]));
        assert.deepEqual(await ids({ batchId: b1.batch!.id, state: 'cancelled' }), [cancelled.id]);
        assert.deepEqual(await ids({ batchId: b1.batch!.id, label: { key: 'color', value: 'blue' }, state: 'queued' }), []);
        assert.deepEqual(
          (await s.listJobs(q.id, { label: { key: 'color', value: 'red' } }, { limit: 100 })).map((j) => j.id),
          other.jobIds,
        );
      });

      test('listJobs pages newest first with beforeId, without overlaps or gaps', async (s) => {
        const { project, app } = await projectWithApp(s);
        const r = await s.insertJobs(req({ projectId: project.id, app, batch: { labels: {} }, jobs: Array.from({ length: 23 }, () => jobSpec()) }));
        const expected = [...r.jobIds].sort((a, b) => b - a);
        const seen: number[] = [];
        let beforeId: number | undefined = undefined;
        for (let pages = 0; pages < 10; pages++) {
          const page: Parameters<Store['listJobs']>[2] = beforeId === undefined ? { limit: 5 } : { limit: 5, beforeId };
          const got = (await s.listJobs(project.id, {}, page)).map((j) => j.id);
          assert.ok(got.length <= 5);
          if (got.length === 0) break;
          assert.deepEqual(got, [...got].sort((a, b) => b - a), 'each page is newest first');
          if (beforeId !== undefined) assert.ok(got.every((id) => id < beforeId!), 'a page holds only ids below beforeId');
          seen.push(...got);
          beforeId = got[got.length - 1];
        }
        assert.deepEqual(seen, expected, 'pages concatenate to every job exactly once');
        // Page boundaries combine with filters too.
        const mid = expected[10]!;
        assert.deepEqual(
          (await s.listJobs(project.id, { batchId: r.batch!.id }, { beforeId: mid, limit: 3 })).map((j) => j.id),
          expected.slice(11, 14),
        );
        assert.deepEqual(await s.listJobs(project.id, {}, { beforeId: Math.min(...expected), limit: 5 }), []);
      });
    });

    describe('cancellation', () => {
      test('cancelJob moves queued → cancelled; a second cancel is an illegal transition', async (s) => {
        const { project, app } = await projectWithApp(s);
        const r = await s.insertJobs(req({ projectId: project.id, app, now: T0 + 10 }));
        const id = r.jobIds[0]!;
        const before = await s.getJob(project.id, id);
        const c = await s.cancelJob(project.id, id, T0 + 500);
        assert.equal(c.state, 'cancelled');
        assert.equal(c.id, id);
        assert.equal(c.updatedAt, T0 + 500);
        assert.equal(c.finishedAt, T0 + 500);
        assert.equal(c.createdAt, T0 + 10);
        assert.equal(typeof c.reason, 'string');
        assert.deepEqual(await s.getJob(project.id, id), c, 'the returned job is what is stored');
        assert.deepEqual({ ...c, state: before!.state, updatedAt: before!.updatedAt, finishedAt: null, reason: null }, before);
        await rejectsWithCode(s.cancelJob(project.id, id, T0 + 600), 'illegal_transition');
        assert.deepEqual(await s.getJob(project.id, id), c, 'the refused cancel changed nothing');
      });

      test('cancelJob of an unknown id, or of another project\'s job, throws not_found', async (s) => {
        const { project: p, app } = await projectWithApp(s, 'p');
        const q = await s.createProject('q', 1, T0);
        const r = await s.insertJobs(req({ projectId: p.id, app }));
        const id = r.jobIds[0]!;
        await rejectsWithCode(s.cancelJob(p.id, id + 1000, T0), 'not_found');
        await rejectsWithCode(s.cancelJob(q.id, id, T0), 'not_found');
        assert.equal((await s.getJob(p.id, id))?.state, 'queued');
      });

      test('cancelBatch cancels only the jobs that may still be cancelled and returns how many', async (s) => {
        const { project: p, app } = await projectWithApp(s, 'p');
        const q = await s.createProject('q', 1, T0);
        const b = await s.insertJobs(req({ projectId: p.id, app, batch: { labels: {} }, jobs: Array.from({ length: 6 }, () => jobSpec()) }));
        const keep = await s.insertJobs(req({ projectId: p.id, app, batch: { labels: {} }, jobs: [jobSpec(), jobSpec()] }));
        const loose = await s.insertJobs(req({ projectId: p.id, app }));
        const early = await s.cancelJob(p.id, b.jobIds[2]!, T0 + 100);
        const batchId = b.batch!.id;

        assert.equal(await s.cancelBatch(q.id, batchId, T0 + 150), 0, "another project cannot cancel the batch");
        assert.equal((await s.batchCounts(batchId)).queued, 6 - 1);

        assert.equal(await s.cancelBatch(p.id, batchId, T0 + 200), 5);
        for (const id of b.jobIds) {
          const j = await s.getJob(p.id, id);
          assert.equal(j?.state, 'cancelled');
          if (id !== early.id) assert.equal(j?.finishedAt, T0 + 200);
        }
        assert.deepEqual(await s.getJob(p.id, early.id), early, 'an already-cancelled job is left as it was');
        assert.equal(await s.cancelBatch(p.id, batchId, T0 + 300), 0, 'nothing left to cancel');
        for (const id of [...keep.jobIds, ...loose.jobIds]) assert.equal((await s.getJob(p.id, id))?.state, 'queued', 'other jobs untouched');
        assert.equal(await s.cancelBatch(p.id, batchId + 1000, T0), 0, 'unknown batch cancels nothing');
      });
    });

    describe('batches', () => {
      test('batchCounts has every job state, counting the batch\'s jobs only', async (s) => {
        const { project, app } = await projectWithApp(s);
        const zero = Object.fromEntries(JOB_STATES.map((st) => [st, 0]));
        assert.deepEqual(await s.batchCounts(12345), zero, 'an unknown batch counts zeros');
        const b = await s.insertJobs(req({ projectId: project.id, app, batch: { labels: {} }, jobs: Array.from({ length: 4 }, () => jobSpec()) }));
        await s.insertJobs(req({ projectId: project.id, app, batch: { labels: {} }, jobs: [jobSpec()] }));
        await s.insertJobs(req({ projectId: project.id, app }));
        assert.deepEqual(await s.batchCounts(b.batch!.id), { ...zero, queued: 4 });
        await s.cancelJob(project.id, b.jobIds[0]!, T0 + 1);
        assert.deepEqual(await s.batchCounts(b.batch!.id), { ...zero, queued: 3, cancelled: 1 });
      });

      test('countJobs has every job state, counting the project\'s jobs in and out of batches', async (s) => {
        const { project: p, app } = await projectWithApp(s, 'p');
        const { project: q, app: qa } = await projectWithApp(s, 'q');
        const zero = Object.fromEntries(JOB_STATES.map((st) => [st, 0]));
        assert.deepEqual(await s.countJobs(p.id), zero, 'a project without jobs counts zeros');
        assert.deepEqual(await s.countJobs(p.id + q.id + 1000), zero, 'an unknown project counts zeros');
        const b = await s.insertJobs(req({ projectId: p.id, app, batch: { labels: {} }, jobs: Array.from({ length: 3 }, () => jobSpec()) }));
        const one = await s.insertJobs(req({ projectId: p.id, app }));
        await s.insertJobs(req({ projectId: p.id, app }));
        await s.insertJobs(req({ projectId: q.id, app: qa, batch: { labels: {} }, jobs: [jobSpec(), jobSpec()] }));
        await s.insertJobs(req({ projectId: q.id, app: qa }));
        assert.deepEqual(await s.countJobs(p.id), { ...zero, queued: 5 });
        await s.cancelJob(p.id, b.jobIds[0]!, T0 + 1);
        await s.cancelJob(p.id, one.jobIds[0]!, T0 + 1);
        assert.deepEqual(await s.countJobs(p.id), { ...zero, queued: 3, cancelled: 2 });
        assert.deepEqual(await s.countJobs(q.id), { ...zero, queued: 3 }, 'the other project counts its own only');
        assert.deepEqual(await s.countJobs(p.id, 'sim'), { ...zero, queued: 3, cancelled: 2 }, 'the app\'s jobs');
        assert.deepEqual(await s.countJobs(p.id, 'no-such-app'), zero, 'an app without jobs counts zeros');
      });

      test('getBatch is scoped by project; listBatches pages newest first within the project', async (s) => {
        const { project: p, app } = await projectWithApp(s, 'p');
        const { project: q, app: qa } = await projectWithApp(s, 'q');
        const mine = [];
        for (let i = 0; i < 7; i++) {
          const r = await s.insertJobs(req({ projectId: p.id, app, batch: { labels: { i: String(i) } }, jobs: [jobSpec()] }));
          mine.push(r.batch!);
          if (i % 3 === 0) await s.insertJobs(req({ projectId: q.id, app: qa, batch: { labels: {} }, jobs: [jobSpec()] }));
        }
        await s.insertJobs(req({ projectId: p.id, app })); // a single job makes no batch
        assert.deepEqual(await s.getBatch(p.id, mine[0]!.id), mine[0]);
        assert.equal(await s.getBatch(q.id, mine[0]!.id), null);
        assert.equal(await s.getBatch(p.id, mine[6]!.id + 1000), null);

        const newestFirst = [...mine].sort((a, b) => b.id - a.id);
        assert.deepEqual(await s.listBatches(p.id, { limit: 100 }), newestFirst);
        const page1 = await s.listBatches(p.id, { limit: 3 });
        const page2 = await s.listBatches(p.id, { limit: 3, beforeId: page1[2]!.id });
        const page3 = await s.listBatches(p.id, { limit: 3, beforeId: page2[2]!.id });
        assert.deepEqual([...page1, ...page2, ...page3], newestFirst);
        assert.equal(page3.length, 1);
        assert.equal((await s.listBatches(q.id, { limit: 100 })).length, 3);
      });
    });

    // ── blobs ─────────────────────────────────────────────────────────────────
    describe('blob refs', () => {
      test('recordBlob is idempotent and getBlobRef is scoped by project', async (s) => {
        const p = await s.createProject('p', 1, T0);
        const q = await s.createProject('q', 1, T0);
        const blob = { sha256: sha(1), size: 1234, createdAt: T0 };
        await s.recordBlob(p.id, blob);
        await s.recordBlob(p.id, blob);
        await s.recordBlob(p.id, { ...blob, createdAt: T0 + 999 });
        assert.deepEqual(await s.getBlobRef(p.id, blob.sha256), blob, 'a repeat does not overwrite the first record');
        assert.equal(await s.getBlobRef(q.id, blob.sha256), null, 'another project does not hold it');
        assert.equal(await s.getBlobRef(p.id, sha(2)), null);
        await s.recordBlob(q.id, { ...blob, createdAt: T0 + 5 });
        assert.deepEqual(await s.getBlobRef(q.id, blob.sha256), { ...blob, createdAt: T0 + 5 });
        assert.deepEqual(await s.getBlobRef(p.id, blob.sha256), blob);
      });

      test('missingBlobs returns the digests the project does not hold', async (s) => {
        const p = await s.createProject('p', 1, T0);
        const q = await s.createProject('q', 1, T0);
        await s.recordBlob(p.id, { sha256: sha(1), size: 1, createdAt: T0 });
        await s.recordBlob(p.id, { sha256: sha(2), size: 2, createdAt: T0 });
        await s.recordBlob(q.id, { sha256: sha(3), size: 3, createdAt: T0 });
        const sorted = (xs: string[]) => [...xs].sort();
        assert.deepEqual(await s.missingBlobs(p.id, []), []);
        assert.deepEqual(await s.missingBlobs(p.id, [sha(1), sha(2)]), []);
        assert.deepEqual(sorted(await s.missingBlobs(p.id, [sha(1), sha(3), sha(4), sha(2)])), sorted([sha(3), sha(4)]));
        assert.deepEqual(sorted(await s.missingBlobs(q.id, [sha(1), sha(3), sha(4)])), sorted([sha(1), sha(4)]));
      });
    });

    // ── sites and hosts ─────────────────────────────────────────────────────
    describe('sites and hosts', () => {
      test('createSite / getSiteByName round-trip; a duplicate name throws already_exists', async (s) => {
        const site = await s.createSite('lab-a', T0);
        assert.deepEqual(site, { id: site.id, name: 'lab-a', createdAt: T0, allowCidrs: [] });
        assert.deepEqual(await s.getSiteByName('lab-a'), site);
        assert.equal(await s.getSiteByName('lab-b'), null);
        await rejectsWithCode(s.createSite('lab-a', T0 + 1), 'already_exists');
        const b = await s.createSite('lab-b', T0 + 2);
        assert.notEqual(b.id, site.id);
      });

      test('createHost starts active and never seen; getHost round-trips it', async (s) => {
        const site = await s.createSite('lab', T0);
        const resources = { cores: 12.5, memoryMiB: 65536, diskMiB: 1_000_000, gpus: 2 };
        const h = await s.createHost({ siteId: site.id, name: 'node-1', resources, platform: 'linux/arm64' }, T0 + 3);
        assert.deepEqual(h, {
          id: h.id, siteId: site.id, name: 'node-1', state: 'active', resources, platform: 'linux/arm64', labels: {},
          createdAt: T0 + 3, lastSeenAt: null, pace: null, owner: null,
        });
        assert.deepEqual(await s.getHost(h.id), h);
        const h2 = await s.createHost({ siteId: site.id, name: 'node-2', resources, platform: 'linux/amd64', labels: { zone: 'b' } }, T0 + 4);
        assert.notEqual(h2.id, h.id);
        assert.deepEqual(await s.getHost(h2.id), h2);
        assert.deepEqual(h2.labels, { zone: 'b' });
        await s.setHostLabels(h2.id, { zone: 'c', gpu: 'none' });
        assert.deepEqual((await s.getHost(h2.id))?.labels, { zone: 'c', gpu: 'none' });
        assert.deepEqual((await s.getHost(h.id))?.labels, {}, 'only that host changed');
        assert.equal(await s.getHost(Math.max(h.id, h2.id) + 1000), null);
      });
    });

    describe('enrolment', () => {
      const enrollToken = (siteId: number, over: Partial<EnrollTokenRecord> = {}): EnrollTokenRecord => ({
        id: 'eeeeeeeeeeeeeeee', siteId, secretHash: Buffer.alloc(32, 9), label: 'lab', usesLeft: 2, expiresAt: null,
        revokedAt: null, createdAt: T0, owner: null, ...over,
      });
      const credential = (id: string, fill = 1): TokenRecord => ({
        id, kind: 'host', subjectId: 0, secretHash: Buffer.alloc(32, fill), label: 'host', createdAt: T0, expiresAt: null, revokedAt: null,
      });
      const host = { name: 'node', resources: { cores: 4, memoryMiB: 8192, diskMiB: 10_000, gpus: 0 }, platform: 'linux/amd64' };

      test('enrol tokens round-trip; enrolling spends a use and creates the host with its credential', async (s) => {
        const site = await s.createSite('lab', T0);
        await s.createEnrollToken(enrollToken(site.id));
        assert.equal((await s.getEnrollToken('eeeeeeeeeeeeeeee'))?.usesLeft, 2);
        const { host: h, replayed } = await s.enrollHost({ enrollTokenId: 'eeeeeeeeeeeeeeee', host, credential: credential('1111111111111111') }, T0 + 1);
        assert.equal(replayed, false);
        assert.equal(h.siteId, site.id);
        assert.equal(h.state, 'active');
        assert.equal((await s.getToken('1111111111111111'))?.subjectId, h.id);
        assert.equal((await s.getToken('1111111111111111'))?.kind, 'host');
        assert.equal((await s.getEnrollToken('eeeeeeeeeeeeeeee'))?.usesLeft, 1);
      });

      test('a retry with the same credential returns the same host and spends nothing; another secret is a conflict', async (s) => {
        const site = await s.createSite('lab', T0);
        await s.createEnrollToken(enrollToken(site.id));
        const first = await s.enrollHost({ enrollTokenId: 'eeeeeeeeeeeeeeee', host, credential: credential('1111111111111111') }, T0 + 1);
        const again = await s.enrollHost({ enrollTokenId: 'eeeeeeeeeeeeeeee', host, credential: credential('1111111111111111') }, T0 + 2);
        assert.equal(again.replayed, true);
        assert.equal(again.host.id, first.host.id);
        assert.equal((await s.getEnrollToken('eeeeeeeeeeeeeeee'))?.usesLeft, 1);
        await rejectsWithCode(s.enrollHost({ enrollTokenId: 'eeeeeeeeeeeeeeee', host, credential: credential('1111111111111111', 2) }, T0 + 3), 'conflict');
      });

      test('listHosts shows every host with its site and no tasks held yet', async (s) => {
        const lab = await s.createSite('lab', T0);
        const cloud = await s.createSite('cloud', T0);
        await s.createEnrollToken(enrollToken(lab.id));
        await s.createEnrollToken(enrollToken(cloud.id, { id: 'ffffffffffffffff' }));
        const a = await s.enrollHost({ enrollTokenId: 'eeeeeeeeeeeeeeee', host, credential: credential('1111111111111111') }, T0 + 1);
        const b = await s.enrollHost({ enrollTokenId: 'ffffffffffffffff', host: { ...host, name: 'vm' }, credential: credential('2222222222222222') }, T0 + 2);
        const hosts = await s.listHosts();
        assert.deepEqual(hosts.map((h) => [h.id, h.name, h.siteName, h.activeTasks]), [[a.host.id, 'node', 'lab', 0], [b.host.id, 'vm', 'cloud', 0]]);
      });

      test('used up, expired or revoked tokens enrol nobody and write nothing', async (s) => {
        const site = await s.createSite('lab', T0);
        await s.createEnrollToken(enrollToken(site.id, { usesLeft: 1 }));
        await s.enrollHost({ enrollTokenId: 'eeeeeeeeeeeeeeee', host, credential: credential('1111111111111111') }, T0 + 1);
        await rejectsWithCode(s.enrollHost({ enrollTokenId: 'eeeeeeeeeeeeeeee', host, credential: credential('2222222222222222') }, T0 + 2), 'unauthenticated');
        await s.createEnrollToken(enrollToken(site.id, { id: 'ffffffffffffffff', expiresAt: T0 + 5 }));
        await rejectsWithCode(s.enrollHost({ enrollTokenId: 'ffffffffffffffff', host, credential: credential('3333333333333333') }, T0 + 5), 'unauthenticated');
        await s.createEnrollToken(enrollToken(site.id, { id: 'dddddddddddddddd', revokedAt: T0 }));
        await rejectsWithCode(s.enrollHost({ enrollTokenId: 'dddddddddddddddd', host, credential: credential('4444444444444444') }, T0 + 1), 'unauthenticated');
        await rejectsWithCode(s.enrollHost({ enrollTokenId: 'cccccccccccccccc', host, credential: credential('5555555555555555') }, T0 + 1), 'unauthenticated');
        for (const id of ['2222222222222222', '3333333333333333', '4444444444444444', '5555555555555555']) assert.equal(await s.getToken(id), null);
      });
    });

    // ── sites, host revocation, audit (migration 6) ─────────────────────────
    describe('sites, revocation and audit', () => {
      const resources = { cores: 8, memoryMiB: 16384, diskMiB: 100_000, gpus: 0 };
      const credential = (id: string): TokenRecord => ({
        id, kind: 'host', subjectId: 0, secretHash: Buffer.alloc(32, 7), label: 'host', createdAt: T0, expiresAt: null, revokedAt: null,
      });
      const enrollToken = (id: string, siteId: number, over: Partial<EnrollTokenRecord> = {}): EnrollTokenRecord => ({
        id, siteId, secretHash: Buffer.alloc(32, 9), label: 'lab', usesLeft: null, expiresAt: null, revokedAt: null, createdAt: T0, owner: null, ...over,
      });
      const LEASE = 60_000;
      const T = T0 + 1_000_000;
      /** Takes every queued head offered (docker), or the given jobs only. */
      const planTaking = (only?: number[]) => (g: ClaimGathered): ClaimPlan => ({
        picks: g.queues.flatMap((q) => q.heads.filter((h) => only === undefined || only.includes(h.jobId)).map((h) => ({ jobId: h.jobId, runtime: 'docker' as const, queueId: q.queueId, cost: 0 }))),
        passes: new Map(), reserve: undefined, virtualTime: g.virtualTime,
      });
      const claim = (s: Store, hostId: number, requestId: string, now: number, over: Partial<ClaimRequest> = {}) =>
        s.claimTasks({ hostId, requestId, leaseMs: LEASE, maxQueues: 100, headsPerQueue: 100, plan: planTaking(), duplicates: null, ...over }, now);

      test('putSite creates or replaces a site\'s allowlist; getSite; listSites counts active and revoked hosts', async (s) => {
        const lab = await s.putSite('lab', ['10.0.0.0/8', '2001:db8::/32'], T0);
        assert.deepEqual(lab, { id: lab.id, name: 'lab', createdAt: T0, allowCidrs: ['10.0.0.0/8', '2001:db8::/32'] });
        assert.deepEqual(await s.getSite(lab.id), lab);
        assert.deepEqual(await s.getSiteByName('lab'), lab);
        const again = await s.putSite('lab', [], T0 + 5);
        assert.deepEqual(again, { ...lab, allowCidrs: [] }, 'the same site, created when it was, with the new list');
        const made = await s.createSite('cloud', T0 + 1);
        assert.deepEqual(made.allowCidrs, []);
        const h1 = await s.createHost({ siteId: lab.id, name: 'a', resources, platform: 'linux/amd64' }, T0);
        await s.createHost({ siteId: lab.id, name: 'b', resources, platform: 'linux/amd64', owner: 'ada' }, T0);
        assert.equal((await s.getHost(h1.id))?.owner, null);
        await s.revokeHost(h1.id, T0 + 10);
        assert.deepEqual((await s.listSites()).map((x) => [x.name, x.activeHosts, x.revokedHosts, x.allowCidrs]), [['cloud', 0, 0, []], ['lab', 1, 1, []]]);
        assert.equal(await s.getSite(made.id + lab.id + 100), null);
      });

      test('enrolment tokens carry their owner to the hosts they enrol; listEnrollTokens shows them newest first without secrets; revokeEnrollToken once', async (s) => {
        const site = await s.createSite('lab', T0);
        await s.createEnrollToken(enrollToken('aaaaaaaaaaaaaaaa', site.id, { owner: 'ada', usesLeft: 3, label: 'ada\'s laptops' }));
        await s.createEnrollToken(enrollToken('bbbbbbbbbbbbbbbb', site.id, { createdAt: T0 + 1, expiresAt: T0 + 999 }));
        const { host } = await s.enrollHost({ enrollTokenId: 'aaaaaaaaaaaaaaaa', host: { name: 'laptop', resources, platform: 'linux/amd64' }, credential: credential('1111111111111111') }, T0 + 2);
        assert.equal(host.owner, 'ada');
        assert.equal((await s.getHost(host.id))?.owner, 'ada');
        const plain = await s.enrollHost({ enrollTokenId: 'bbbbbbbbbbbbbbbb', host: { name: 'box', resources, platform: 'linux/amd64' }, credential: credential('2222222222222222') }, T0 + 3);
        assert.equal(plain.host.owner, null, 'a token without owner: the host is its own');
        assert.equal((await s.getEnrollToken('aaaaaaaaaaaaaaaa'))?.owner, 'ada');
        const listed = await s.listEnrollTokens();
        assert.deepEqual(listed, [
          { id: 'bbbbbbbbbbbbbbbb', siteId: site.id, siteName: 'lab', label: 'lab', usesLeft: null, expiresAt: T0 + 999, revokedAt: null, createdAt: T0 + 1, owner: null },
          { id: 'aaaaaaaaaaaaaaaa', siteId: site.id, siteName: 'lab', label: 'ada\'s laptops', usesLeft: 2, expiresAt: null, revokedAt: null, createdAt: T0, owner: 'ada' },
        ]);
        assert.ok(listed.every((t) => !('secretHash' in t)), 'no secret hash leaves the store in a list');
        assert.equal(await s.revokeEnrollToken('aaaaaaaaaaaaaaaa', T0 + 10), true);
        assert.equal(await s.revokeEnrollToken('aaaaaaaaaaaaaaaa', T0 + 11), false, 'revoked already');
        assert.equal(await s.revokeEnrollToken('cccccccccccccccc', T0 + 11), false, 'unknown');
        assert.equal((await s.getEnrollToken('aaaaaaaaaaaaaaaa'))?.revokedAt, T0 + 10);
        await rejectsWithCode(s.enrollHost({ enrollTokenId: 'aaaaaaaaaaaaaaaa', host: { name: 'x', resources, platform: 'linux/amd64' }, credential: credential('3333333333333333') }, T0 + 12), 'unauthenticated');
        assert.equal((await s.getToken('1111111111111111'))?.revokedAt, null, 'hosts it enrolled keep their credentials');
      });

      test('revokeHost aborts the host\'s active tasks and requeues their jobs at once with the attempt given back, in one go, once', async (s) => {
        const project = await s.createProject('p', 1, T0);
        const app = await s.createAppVersion(project.id, appSpec('sim'), 'new', T0);
        const site = await s.createSite('lab', T0);
        await s.createEnrollToken(enrollToken('eeeeeeeeeeeeeeee', site.id, { owner: 'ada' }));
        const h1 = (await s.enrollHost({ enrollTokenId: 'eeeeeeeeeeeeeeee', host: { name: 'h1', resources, platform: 'linux/amd64' }, credential: credential('1111111111111111') }, T0)).host;
        const h2 = await s.createHost({ siteId: site.id, name: 'h2', resources, platform: 'linux/amd64' }, T0);
        const [running, assigned, done, shared] = (await s.insertJobs({ projectId: app.projectId, app, batch: null, jobs: [jobSpec(), jobSpec(), jobSpec(), jobSpec()], idempotency: null, now: T0 + 10 })).jobIds;
        const claimed = new Map((await claim(s, h1.id, 'r-1', T)).tasks.map((c) => [c.job.id, c.task]));
        assert.equal(claimed.size, 4);
        await s.heartbeat({ hostId: h1.id, leaseMs: LEASE, tasks: [{ taskId: claimed.get(running!)!.id, progress: 0.5, usage: null, log: null }] }, T + 10);
        await s.reportTask({ hostId: h1.id, taskId: claimed.get(done!)!.id, outcome: { kind: 'succeeded' }, durationMs: 5, usage: null, outputs: {}, log: null, reportHash: 'ok', rules: DEFAULT_SCHEDULING }, T + 20);
        // A copy of `shared` on h2: after the revoke the job still runs there.
        const copy = await claim(s, h2.id, 'r-2', T + 30, {
          plan: planTaking([]),
          duplicates: { scan: 100, choose: (rs) => rs.filter((r) => r.jobId === shared).map((r) => ({ jobId: r.jobId, runtime: 'docker' as const })) },
        });
        assert.deepEqual(copy.tasks.map((c) => c.job.id), [shared]);
        const before = await s.getJob(project.id, shared!);

        const r = await s.revokeHost(h1.id, T + 100);
        assert.ok(r);
        assert.equal(r.changed, true);
        assert.deepEqual([r.host.id, r.host.state, r.host.owner], [h1.id, 'revoked', 'ada']);
        assert.deepEqual(r.abortedTasks.map((t) => t.jobId).sort((a, b) => a - b), [running, assigned, shared].sort((a, b) => a! - b!));
        for (const t of r.abortedTasks) assert.deepEqual([t.state, t.reason, t.endedAt, t.outcome], ['aborted', 'its host was revoked', T + 100, { kind: 'aborted' }]);
        assert.deepEqual(r.requeuedJobs.map((j) => j.id).sort((a, b) => a - b), [running, assigned].sort((a, b) => a! - b!));
        for (const j of r.requeuedJobs) {
          assert.deepEqual([j.state, j.attempts, j.retryAt, j.updatedAt], ['queued', 0, null, T + 100], 'requeued without spending an attempt or backing off');
          assert.match(j.reason!, /revoked/);
          assert.deepEqual(await s.getJob(project.id, j.id), j, 'what is returned is what is stored');
        }
        assert.deepEqual(await s.getJob(project.id, shared!), before, 'a job another host still runs stays running, untouched');
        assert.equal((await s.getJob(project.id, done!))?.state, 'succeeded');
        assert.equal((await s.listTasks(done!))[0]!.state, 'succeeded', 'an ended task is left as it was');
        assert.equal((await s.getHost(h1.id))?.state, 'revoked');
        assert.equal((await s.getToken('1111111111111111'))?.revokedAt, T + 100, 'its credential is revoked too');
        assert.equal((await s.listHosts()).find((h) => h.id === h1.id)?.activeTasks, 0);

        // The revoked host's late calls change nothing: a report is refused, a heartbeat aborts.
        await rejectsWithCode(s.reportTask({ hostId: h1.id, taskId: claimed.get(running!)!.id, outcome: { kind: 'succeeded' }, durationMs: 5, usage: null, outputs: {}, log: null, reportHash: 'late', rules: DEFAULT_SCHEDULING }, T + 150), 'conflict');
        const hb = await s.heartbeat({ hostId: h1.id, leaseMs: LEASE, tasks: [{ taskId: claimed.get(assigned!)!.id, progress: null, usage: null, log: null }] }, T + 160);
        assert.deepEqual(hb.leases, []);
        assert.match(hb.abort[0]!.reason, /revoked/);
        assert.equal((await s.getJob(project.id, running!))?.state, 'queued');

        // Again: nothing changes.
        const tasksBefore = await Promise.all([running, assigned, shared].map((j) => s.listTasks(j!)));
        const again = await s.revokeHost(h1.id, T + 200);
        assert.deepEqual(again, { host: (await s.getHost(h1.id))!, changed: false, abortedTasks: [], requeuedJobs: [] });
        assert.deepEqual(await Promise.all([running, assigned, shared].map((j) => s.listTasks(j!))), tasksBefore);
        assert.equal((await s.getToken('1111111111111111'))?.revokedAt, T + 100);
        assert.equal(await s.revokeHost(h1.id + h2.id + 100, T + 200), null, 'an unknown host');

        // The requeued jobs run again elsewhere at once, as the same attempt.
        const next = await claim(s, h2.id, 'r-3', T + 300);
        assert.deepEqual(next.tasks.map((c) => [c.job.id, c.task.attempt]).sort((a, b) => a[0]! - b[0]!), [[running, 1], [assigned, 1]].sort((a, b) => a[0]! - b[0]!));
      });

      test('appendAudit / listAudit: newest first, by action and by project, paged by id', async (s) => {
        const p = await s.createProject('p', 1, T0);
        const q = await s.createProject('q', 1, T0);
        const entry = (i: number, action: string, projectId: number | null) => ({
          at: T0 + i, actorUserId: 1, actorName: 'admin', action, target: `thing ${i}`, projectId, detail: { i, nested: { ok: true } },
        });
        const written = [];
        for (const [i, action, projectId] of [[1, 'project.create', p.id], [2, 'member.set', p.id], [3, 'token.create', null], [4, 'member.set', q.id], [5, 'host.revoke', null]] as const) {
          written.push(await s.appendAudit(entry(i, action, projectId)));
        }
        assert.deepEqual(written[0], { id: written[0]!.id, ...entry(1, 'project.create', p.id) });
        const all = await s.listAudit({}, { limit: 100 });
        assert.deepEqual(all.map((e) => e.target), ['thing 5', 'thing 4', 'thing 3', 'thing 2', 'thing 1']);
        assert.deepEqual(all[4], { ...written[0], projectName: 'p' });
        assert.equal(all[0]!.projectName, null);
        assert.deepEqual((await s.listAudit({ action: 'member.set' }, { limit: 100 })).map((e) => [e.target, e.projectName]), [['thing 4', 'q'], ['thing 2', 'p']]);
        assert.deepEqual((await s.listAudit({ projectId: p.id }, { limit: 100 })).map((e) => e.target), ['thing 2', 'thing 1']);
        assert.deepEqual((await s.listAudit({ projectId: p.id, action: 'member.set' }, { limit: 100 })).map((e) => e.target), ['thing 2']);
        const page1 = await s.listAudit({}, { limit: 2 });
        const page2 = await s.listAudit({}, { limit: 2, beforeId: page1.at(-1)!.id });
        const page3 = await s.listAudit({}, { limit: 2, beforeId: page2.at(-1)!.id });
        assert.deepEqual([...page1, ...page2, ...page3].map((e) => e.id), all.map((e) => e.id), 'pages neither overlap nor skip');
      });
    });

    // ── the agent protocol ──────────────────────────────────────────────────
    describe('agent protocol', () => {
      const LEASE = 60_000;
      const T = T0 + 1_000_000;
      /** Takes every candidate, in the order offered, under the docker runtime. */
      /** The queue heads a claim gathered, flattened to one list in (priority, age) order. */
      interface Candidate { jobId: number; resources: Resources; platforms: readonly string[]; runtimes: readonly RuntimeKind[] }
      interface Match { jobId: number; runtime: RuntimeKind }
      const takeAll = (cs: Candidate[]): Match[] => cs.map((c) => ({ jobId: c.jobId, runtime: 'docker' as const }));
      const takeNone = (): Match[] => [];
      /** Backoff off, so the tests that are not about it can claim a requeued job at once. */
      const RULES: SchedulingOptions = { ...DEFAULT_SCHEDULING, backoffBaseSeconds: 0 };
      function flatten(g: ClaimGathered): Array<Candidate & { queueId: number; priority: number }> {
        return g.queues
          .flatMap((q) => q.heads.map((h) => ({ jobId: h.jobId, resources: q.resources, platforms: q.platforms, runtimes: q.runtimes, queueId: q.queueId, priority: h.priority })))
          .sort((a, b) => b.priority - a.priority || a.jobId - b.jobId);
      }
      /** A plan from a choice among the flattened heads (the tests decide; the policy has its own tests). */
      function planOf(choose: (cs: Candidate[]) => Match[]): (g: ClaimGathered) => ClaimPlan {
        return (g) => {
          const all = flatten(g);
          const picks = choose(all.map(({ jobId, resources, platforms, runtimes }) => ({ jobId, resources, platforms, runtimes })))
            .map((m) => ({ ...m, queueId: all.find((c) => c.jobId === m.jobId)?.queueId ?? 0, cost: 0 }));
          return { picks, passes: new Map(), reserve: undefined, virtualTime: g.virtualTime };
        };
      }

      /** Projects p and q, apps (sim: 3 attempts; once: 1; native: also runs natively), a site and two hosts. */
      async function grid(s: Store) {
        const p = await s.createProject('p', 1, T0);
        const q = await s.createProject('q', 1, T0);
        const sim = await s.createAppVersion(p.id, appSpec('sim'), 'new', T0);
        const once = await s.createAppVersion(p.id, appSpec('once', { maxAttempts: 1 }), 'new', T0);
        const native = await s.createAppVersion(q.id, appSpec('native', { nativeCommand: ['/opt/run'], platforms: [] }), 'new', T0);
        const site = await s.createSite('lab', T0);
        const resources = { cores: 16, memoryMiB: 65536, diskMiB: 1_000_000, gpus: 0 };
        const h1 = await s.createHost({ siteId: site.id, name: 'h1', resources, platform: 'linux/amd64' }, T0);
        const h2 = await s.createHost({ siteId: site.id, name: 'h2', resources, platform: 'linux/amd64' }, T0);
        const jobs = async (app: typeof sim, specs: Array<Partial<JobSpec>>, now = T0 + 10): Promise<number[]> =>
          (await s.insertJobs({ projectId: app.projectId, app, batch: null, jobs: specs.map((x) => jobSpec(x)), idempotency: null, now })).jobIds;
        const claim = (hostId: number, requestId: string, now: number, choose: (cs: Candidate[]) => Match[] = takeAll, heads = 500, over: Partial<ClaimRequest> = {}) =>
          s.claimTasks({ hostId, requestId, leaseMs: LEASE, maxQueues: 100, headsPerQueue: heads, plan: planOf(choose), duplicates: null, ...over }, now);
        const beat = (hostId: number, now: number, tasks: Array<{ taskId: number; progress?: number; usage?: TaskUsage; log?: LogChunk }>) =>
          s.heartbeat({ hostId, leaseMs: LEASE, tasks: tasks.map((t) => ({ taskId: t.taskId, progress: t.progress ?? null, usage: t.usage ?? null, log: t.log ?? null })) }, now);
        const report = (hostId: number, taskId: number, outcome: TaskOutcome, now: number, over: Partial<ReportRequest> = {}) =>
          s.reportTask({ hostId, taskId, outcome, durationMs: 1000, usage: null, outputs: {}, log: null, reportHash: JSON.stringify(outcome), rules: RULES, ...over }, now);
        return { p, q, sim, once, native, h1, h2, jobs, claim, beat, report };
      }

      test('claimTasks offers queued jobs by priority then age, with effective resources; the picks become assigned tasks', async (s) => {
        const g = await grid(s);
        const [low, high, mid, old] = await g.jobs(g.sim, [{}, { priority: 5, resources: { memoryMiB: 4096 } }, {}, { priority: -1 }]);
        const cancelled = (await g.jobs(g.sim, [{ priority: 9 }]))[0]!;
        await s.cancelJob(g.p.id, cancelled, T0 + 20);
        const [nat] = await g.jobs(g.native, [{ priority: 5 }], T0 + 30);
        let offered: Candidate[] = [];
        const r = await g.claim(g.h1.id, 'request-1', T, (cs) => {
          offered = cs;
          return [{ jobId: high!, runtime: 'docker' }, { jobId: nat!, runtime: 'native' }];
        });
        const simRes = { cores: 2, memoryMiB: 1024, diskMiB: 2048, gpus: 0 };
        assert.deepEqual(offered, [
          { jobId: high, resources: { ...simRes, memoryMiB: 4096 }, platforms: ['linux/amd64'], runtimes: ['docker'] },
          { jobId: nat, resources: simRes, platforms: [], runtimes: ['docker', 'native'] },
          { jobId: low, resources: simRes, platforms: ['linux/amd64'], runtimes: ['docker'] },
          { jobId: mid, resources: simRes, platforms: ['linux/amd64'], runtimes: ['docker'] },
          { jobId: old, resources: simRes, platforms: ['linux/amd64'], runtimes: ['docker'] },
        ], 'queued jobs of every project, priority first, then oldest; a cancelled job is no candidate');
        assert.equal(r.replayed, false);
        assert.deepEqual(r.tasks.map((c) => [c.job.id, c.task.runtime, c.projectName, c.app.name]), [[high, 'docker', 'p', 'sim'], [nat, 'native', 'q', 'native']]);
        for (const c of r.tasks) {
          assert.equal(c.task.jobId, c.job.id);
          assert.equal(c.task.hostId, g.h1.id);
          assert.equal(c.task.state, 'assigned');
          assert.equal(c.task.attempt, 1);
          assert.equal(c.task.leaseExpiresAt, T + LEASE);
          assert.equal(c.task.createdAt, T);
          assert.equal(c.task.endedAt, null);
          assert.equal(c.job.state, 'running');
          assert.equal(c.job.attempts, 1);
          assert.deepEqual(await s.listTasks(c.job.id), [c.task], 'the returned task is what is stored');
          const stored = await s.getJob(c.job.projectId, c.job.id);
          assert.equal(stored?.state, 'running');
          assert.equal(stored?.attempts, 1);
          assert.equal(stored?.updatedAt, T);
        }
        assert.equal(r.tasks[1]!.app.id, g.native.id);
        assert.deepEqual(r.tasks[1]!.app.nativeCommand, ['/opt/run']);
        for (const id of [low, mid, old]) assert.equal((await s.getJob(g.p.id, id!))?.state, 'queued', 'what was not picked stays queued');
        assert.equal((await s.getHost(g.h1.id))?.lastSeenAt, T);
        assert.equal((await s.listHosts()).find((h) => h.id === g.h1.id)?.activeTasks, 2);

        // headsPerQueue bounds how many jobs of each queue are read; the running jobs are no longer offered.
        let seen: number[] = [];
        const none = await g.claim(g.h2.id, 'request-2', T + 1, (cs) => ((seen = cs.map((c) => c.jobId)), []), 2);
        assert.deepEqual(seen, [low, mid]);
        assert.deepEqual(none, { tasks: [], replayed: false });
      });

      test('a repeated requestId returns the live tasks it made and claims nothing more', async (s) => {
        const g = await grid(s);
        const ids = await g.jobs(g.sim, [{}, {}, {}]);
        const first = await g.claim(g.h1.id, 'request-1', T, (cs) => takeAll(cs).slice(0, 2));
        assert.deepEqual(first.tasks.map((c) => c.job.id), ids.slice(0, 2));
        const again = await g.claim(g.h1.id, 'request-1', T + 500);
        assert.equal(again.replayed, true);
        assert.deepEqual(again.tasks.map((c) => c.task), first.tasks.map((c) => c.task));
        assert.deepEqual(again.tasks.map((c) => c.job.state), ['running', 'running']);
        assert.equal((await s.getJob(g.p.id, ids[2]!))?.state, 'queued');
        for (const id of ids.slice(0, 2)) assert.equal((await s.listTasks(id)).length, 1);

        await g.report(g.h1.id, first.tasks[0]!.task.id, { kind: 'succeeded' }, T + 600);
        const late = await g.claim(g.h1.id, 'request-1', T + 700);
        assert.equal(late.replayed, true);
        assert.deepEqual(late.tasks.map((c) => c.task.id), [first.tasks[1]!.task.id], 'an ended task is not handed out again');
        await g.report(g.h1.id, first.tasks[1]!.task.id, { kind: 'succeeded' }, T + 800);
        assert.deepEqual(await g.claim(g.h1.id, 'request-1', T + 900), { tasks: [], replayed: true }, 'a retry after all its tasks ended claims nothing');
        assert.equal((await s.getJob(g.p.id, ids[2]!))?.state, 'queued');

        // Request ids are per host, and a request that claimed nothing leaves nothing to replay.
        const other = await g.claim(g.h2.id, 'request-1', T + 1000);
        assert.equal(other.replayed, false);
        assert.deepEqual(other.tasks.map((c) => c.job.id), [ids[2]]);
        assert.deepEqual(await g.claim(g.h1.id, 'request-empty', T + 1100, takeNone), { tasks: [], replayed: false });
        await g.jobs(g.sim, [{}]);
        assert.equal((await g.claim(g.h1.id, 'request-empty', T + 1200)).tasks.length, 1);
      });

      test('heartbeat extends live leases, marks tasks running with progress and usage, and marks the host seen', async (s) => {
        const g = await grid(s);
        await g.jobs(g.sim, [{}]);
        const [c] = (await g.claim(g.h1.id, 'request-1', T)).tasks;
        const id = c!.task.id;
        const usage = { cpuSeconds: 12.5, peakMemoryMiB: 300 };
        const r = await g.beat(g.h1.id, T + 1000, [{ taskId: id, progress: 0.5, usage }]);
        assert.deepEqual(r, { leases: [{ taskId: id, leaseExpiresAt: T + 1000 + LEASE }], abort: [] });
        let [t] = await s.listTasks(c!.job.id);
        assert.equal(t!.state, 'running');
        assert.equal(t!.startedAt, T + 1000);
        assert.equal(t!.progress, 0.5);
        assert.deepEqual(t!.usage, usage);
        assert.equal(t!.leaseExpiresAt, T + 1000 + LEASE);
        assert.equal((await s.getHost(g.h1.id))?.lastSeenAt, T + 1000);
        // Without progress or usage, the last ones stay; the start time stays.
        const r2 = await g.beat(g.h1.id, T + 2000, [{ taskId: id }]);
        assert.deepEqual(r2.leases, [{ taskId: id, leaseExpiresAt: T + 2000 + LEASE }]);
        [t] = await s.listTasks(c!.job.id);
        assert.deepEqual([t!.startedAt, t!.progress, t!.usage, t!.leaseExpiresAt], [T + 1000, 0.5, usage, T + 2000 + LEASE]);
        assert.deepEqual(await g.beat(g.h2.id, T + 3000, []), { leases: [], abort: [] });
        assert.equal((await s.getHost(g.h2.id))?.lastSeenAt, T + 3000, 'an empty heartbeat still says the host is alive');
      });

      test('heartbeat sends back unknown, foreign and ended tasks and tasks of jobs no longer running, with reasons', async (s) => {
        const g = await grid(s);
        const [a, b, c] = await g.jobs(g.sim, [{}, {}, {}]);
        const mine = (await g.claim(g.h1.id, 'request-1', T)).tasks;
        await g.jobs(g.sim, [{}]);
        const [theirs] = (await g.claim(g.h2.id, 'request-2', T)).tasks;
        const task = (jobId: number) => mine.find((x) => x.job.id === jobId)!.task.id;
        await s.cancelJob(g.p.id, b!, T + 10);
        await g.report(g.h1.id, task(c!), { kind: 'failed', exitCode: 1 }, T + 20);
        const r = await g.beat(g.h1.id, T + 1000, [
          { taskId: task(a!) }, { taskId: task(b!) }, { taskId: task(c!) }, { taskId: theirs!.task.id }, { taskId: 987_654 },
        ]);
        assert.deepEqual(r.leases, [{ taskId: task(a!), leaseExpiresAt: T + 1000 + LEASE }]);
        const why = new Map(r.abort.map((x) => [x.taskId, x.reason]));
        assert.deepEqual([...why.keys()].sort((x, y) => x - y), [task(b!), task(c!), theirs!.task.id, 987_654].sort((x, y) => x - y));
        for (const reason of why.values()) assert.ok(reason.length > 0);
        assert.match(why.get(task(b!))!, /cancelled/);
        assert.match(why.get(task(c!))!, /failed/);
        const [t] = await s.listTasks(theirs!.job.id);
        assert.deepEqual([t!.state, t!.leaseExpiresAt], ['assigned', T + LEASE], 'another host cannot keep a task alive');
        const [cancelledTask] = await s.listTasks(b!);
        assert.equal(cancelledTask!.leaseExpiresAt, T + LEASE, 'a task of a cancelled job gets no more lease');
      });

      test('log pieces are appended by offset: repeats add nothing, overlaps add their new part; getTaskLog is scoped by project', async (s) => {
        const g = await grid(s);
        await g.jobs(g.sim, [{}, {}]);
        const [c, d] = (await g.claim(g.h1.id, 'request-1', T)).tasks;
        const id = c!.task.id;
        const log = () => s.getTaskLog(g.p.id, id);
        assert.deepEqual(await log(), { taskId: id, jobId: c!.job.id, state: 'assigned', text: '', endOffset: 0 });
        await g.beat(g.h1.id, T + 1, [{ taskId: id, log: { offset: 0, text: 'hello ' } }]);
        await g.beat(g.h1.id, T + 2, [{ taskId: id, log: { offset: 0, text: 'hello ' } }]);
        assert.deepEqual(await log(), { taskId: id, jobId: c!.job.id, state: 'running', text: 'hello ', endOffset: 6 });
        await g.beat(g.h1.id, T + 3, [{ taskId: id, log: { offset: 3, text: 'lo world\n' } }]);
        await g.beat(g.h1.id, T + 4, [{ taskId: id, log: { offset: 1, text: 'ello' } }]);
        assert.deepEqual(await log(), { taskId: id, jobId: c!.job.id, state: 'running', text: 'hello world\n', endOffset: 12 });
        await g.report(g.h1.id, id, { kind: 'succeeded' }, T + 5, { log: { offset: 6, text: 'world\ndone\n' } });
        assert.deepEqual(await log(), { taskId: id, jobId: c!.job.id, state: 'succeeded', text: 'hello world\ndone\n', endOffset: 17 });
        assert.equal(await s.getTaskLog(g.q.id, id), null, "another project's id does not reach the task");
        assert.equal(await s.getTaskLog(g.p.id, id + 1000), null);

        // A piece after a gap (output the agent dropped): what is stored still ends at endOffset
        // and starts at endOffset - text.length, so it cannot keep text from before the gap.
        const e = d!.task.id;
        await g.beat(g.h1.id, T + 6, [{ taskId: e, log: { offset: 0, text: 'abc' } }]);
        await g.beat(g.h1.id, T + 7, [{ taskId: e, log: { offset: 10, text: 'xyz' } }]);
        const gap = (await s.getTaskLog(g.p.id, e))!;
        assert.equal(gap.endOffset, 13);
        assert.equal(gap.text, 'xyz');

        // A long output keeps a tail: the end of the text, at its true offset.
        await g.jobs(g.sim, [{}]);
        const [f] = (await g.claim(g.h1.id, 'request-2', T + 8)).tasks;
        const whole = Array.from({ length: 20_000 }, (_, i) => `line ${i}\n`).join('');
        for (let at = 0; at < whole.length; at += 50_000) {
          await g.beat(g.h1.id, T + 9, [{ taskId: f!.task.id, log: { offset: at, text: whole.slice(at, at + 50_000) } }]);
        }
        const tail = (await s.getTaskLog(g.p.id, f!.task.id))!;
        assert.equal(tail.endOffset, whole.length);
        assert.ok(tail.text.length > 0);
        assert.ok(whole.endsWith(tail.text), 'the stored text is the end of the output');
      });

      test('reportTask settles a success; the same report again is a replay, another one a conflict', async (s) => {
        const g = await grid(s);
        const [j] = await g.jobs(g.sim, [{}]);
        const [c] = (await g.claim(g.h1.id, 'request-1', T)).tasks;
        const id = c!.task.id;
        await rejectsWithCode(g.report(g.h2.id, id, { kind: 'succeeded' }, T + 1), 'not_found');
        await rejectsWithCode(g.report(g.h1.id, id + 1000, { kind: 'succeeded' }, T + 1), 'not_found');
        const outputs = { 'out.txt': { sha256: sha(7), size: 3 } };
        const usage = { cpuSeconds: 1, peakMemoryMiB: 2 };
        const r = await g.report(g.h1.id, id, { kind: 'succeeded' }, T + 5000, { outputs, usage, durationMs: 4000, reportHash: 'h1' });
        assert.equal(r.replayed, false);
        assert.equal(r.jobStateBefore, 'running');
        assert.deepEqual([r.job.state, r.job.finishedAt, r.job.updatedAt, r.job.attempts], ['succeeded', T + 5000, T + 5000, 1]);
        assert.deepEqual(await s.getJob(g.p.id, j!), r.job, 'the returned job is what is stored');
        assert.deepEqual(await s.listTasks(j!), [r.task]);
        assert.deepEqual(r.task, {
          ...c!.task, state: 'succeeded', startedAt: T + 1000, endedAt: T + 5000, exitCode: 0, reason: null,
          outcome: { kind: 'succeeded' }, durationMs: 4000, usage, outputs,
        });
        const again = await g.report(g.h1.id, id, { kind: 'succeeded' }, T + 6000, { outputs, usage, durationMs: 4000, reportHash: 'h1' });
        assert.equal(again.replayed, true);
        assert.deepEqual(again.task, r.task);
        assert.deepEqual(again.job, r.job);
        await rejectsWithCode(g.report(g.h1.id, id, { kind: 'failed', exitCode: 2 }, T + 7000, { reportHash: 'h2' }), 'conflict');
        assert.deepEqual(await s.listTasks(j!), [r.task], 'neither the replay nor the conflict changed anything');
        assert.deepEqual(await s.getJob(g.p.id, j!), r.job);
      });

      test('reportTask: failures requeue until maxAttempts; a release spends no attempt; an ended job is left as it is', async (s) => {
        const g = await grid(s);
        const twice = await s.createAppVersion(g.p.id, appSpec('twice', { maxAttempts: 2 }), 'new', T0);
        const [j] = await g.jobs(twice, [{}]);
        const t1 = (await g.claim(g.h1.id, 'r-1', T)).tasks[0]!.task;
        const r1 = await g.report(g.h1.id, t1.id, { kind: 'failed', exitCode: 3 }, T + 10);
        assert.deepEqual([r1.task.state, r1.task.exitCode, r1.job.state, r1.job.attempts, r1.job.finishedAt], ['failed', 3, 'queued', 1, null]);
        assert.match(r1.job.reason!, /exited with code 3/);
        assert.match(r1.task.reason!, /exited with code 3/);
        const t2 = (await g.claim(g.h1.id, 'r-2', T + 20)).tasks[0]!.task;
        assert.equal(t2.attempt, 2);
        const r2 = await g.report(g.h1.id, t2.id, { kind: 'aborted' }, T + 30);
        assert.deepEqual([r2.task.state, r2.task.exitCode, r2.job.state, r2.job.attempts], ['aborted', null, 'queued', 1]);
        assert.equal((await s.getJob(g.p.id, j!))?.attempts, 1, 'the release gave its attempt back');
        const t3 = (await g.claim(g.h1.id, 'r-3', T + 40)).tasks[0]!.task;
        assert.equal(t3.attempt, 2);
        const r3 = await g.report(g.h1.id, t3.id, { kind: 'out_of_memory', limitMiB: 1024 }, T + 50);
        assert.deepEqual([r3.task.state, r3.job.state, r3.job.attempts, r3.job.finishedAt], ['failed', 'failed', 2, T + 50]);
        assert.match(r3.job.reason!, /1024 MiB/);
        assert.deepEqual((await s.listTasks(j!)).map((t) => [t.attempt, t.state]), [[1, 'failed'], [2, 'aborted'], [2, 'failed']]);
        assert.deepEqual((await g.claim(g.h1.id, 'r-4', T + 60)).tasks, [], 'a failed job is not claimed');

        // A job cancelled under its task stays cancelled, whatever the task reports.
        const [k, l] = await g.jobs(g.sim, [{}, {}]);
        const [tk, tl] = (await g.claim(g.h1.id, 'r-5', T + 70)).tasks;
        const cancelled = await s.cancelJob(g.p.id, k!, T + 80);
        await s.cancelJob(g.p.id, l!, T + 80);
        const rk = await g.report(g.h1.id, tk!.task.id, { kind: 'aborted' }, T + 90);
        assert.deepEqual([rk.task.state, rk.job.state, rk.jobStateBefore], ['aborted', 'cancelled', 'cancelled']);
        assert.deepEqual(await s.getJob(g.p.id, k!), cancelled);
        const rl = await g.report(g.h1.id, tl!.task.id, { kind: 'succeeded' }, T + 95);
        assert.deepEqual([rl.task.state, rl.job.state], ['succeeded', 'cancelled']);
      });

      test('expireLeases loses only active tasks whose lease ended, requeues or fails their jobs, once', async (s) => {
        const g = await grid(s);
        const [a, b, done] = await g.jobs(g.sim, [{}, {}, {}]);
        const [o] = await g.jobs(g.once, [{}]);
        const [ta, tdone, to] = (await g.claim(g.h1.id, 'r-1', T, (cs) => takeAll(cs).filter((c) => c.jobId !== b))).tasks;
        const tb = (await g.claim(g.h2.id, 'r-2', T + 30_000)).tasks[0]!;
        assert.equal(tb.job.id, b);
        await g.report(g.h1.id, tdone!.task.id, { kind: 'succeeded' }, T + 1);
        assert.equal(tdone!.job.id, done);

        assert.deepEqual(await s.expireLeases(T + LEASE - 1, 100, RULES), [], 'no lease has ended yet');
        const first = await s.expireLeases(T + LEASE + 1, 100, RULES);
        assert.deepEqual(first.map((x) => x.taskId).sort((x, y) => x - y), [ta!.task.id, to!.task.id].sort((x, y) => x - y));
        const ja = first.find((x) => x.taskId === ta!.task.id)!.job;
        assert.deepEqual([ja.id, ja.state, ja.attempts, ja.finishedAt, ja.updatedAt], [a, 'queued', 1, null, T + LEASE + 1]);
        assert.ok(ja.reason && ja.reason.length > 0);
        assert.deepEqual(await s.getJob(g.p.id, a!), ja, 'the returned job is what is stored');
        const jo = first.find((x) => x.taskId === to!.task.id)!.job;
        assert.deepEqual([jo.id, jo.state, jo.attempts, jo.finishedAt], [o, 'failed', 1, T + LEASE + 1], 'its only attempt is spent');
        const [lost] = await s.listTasks(a!);
        assert.deepEqual([lost!.state, lost!.endedAt], ['lost', T + LEASE + 1]);
        assert.ok(lost!.reason && lost!.reason.length > 0);
        assert.deepEqual(await s.expireLeases(T + LEASE + 1, 100, RULES), [], 'expiring again finds nothing more');
        assert.equal((await s.listTasks(done!))[0]!.state, 'succeeded', 'an ended task is never lost');
        assert.equal((await s.listTasks(b!))[0]!.state, 'assigned', 'a later lease is still live');

        // The lost task's heartbeat is answered with an abort; its late failure is taken but
        // changes nothing (the loss was counted); a late report once the job ended is refused.
        const hb = await g.beat(g.h1.id, T + LEASE + 3, [{ taskId: ta!.task.id }]);
        assert.deepEqual(hb.leases, []);
        assert.match(hb.abort[0]!.reason, /lost/);
        const lateFail = await g.report(g.h1.id, ta!.task.id, { kind: 'failed', exitCode: 1 }, T + LEASE + 4);
        assert.deepEqual([lateFail.task.state, lateFail.job.state, lateFail.job.attempts], ['failed', 'queued', 1]);
        assert.equal((await s.getJob(g.p.id, a!))?.state, 'queued', 'the late failure changed nothing');
        await rejectsWithCode(g.report(g.h1.id, to!.task.id, { kind: 'succeeded' }, T + LEASE + 5), 'lease_expired');

        // A heartbeat keeps a lease; the limit bounds one call.
        await g.beat(g.h2.id, T + 30_000 + LEASE - 1, [{ taskId: tb.task.id }]);
        assert.deepEqual(await s.expireLeases(T + 30_000 + LEASE + 1, 100, RULES), []);
        await g.report(g.h2.id, tb.task.id, { kind: 'succeeded' }, T + 100_000);
        await g.jobs(g.sim, [{}, {}]);
        const more = (await g.claim(g.h1.id, 'r-3', T + 200_000)).tasks;
        assert.equal(more.length, 3, 'a again, and the two new jobs');
        assert.equal(more[0]!.task.attempt, 2, 'the requeued job runs its second attempt');
        assert.equal((await s.expireLeases(T + 200_000 + LEASE + 1, 2, RULES)).length, 2);
        assert.equal((await s.expireLeases(T + 200_000 + LEASE + 1, 2, RULES)).length, 1);
      });

      test('expireLeases of a task whose job was cancelled leaves the job cancelled', async (s) => {
        const g = await grid(s);
        const [j] = await g.jobs(g.sim, [{}]);
        const [c] = (await g.claim(g.h1.id, 'r-1', T)).tasks;
        const cancelled = await s.cancelJob(g.p.id, j!, T + 5);
        const expired = await s.expireLeases(T + LEASE + 1, 100, RULES);
        assert.deepEqual(expired.map((x) => [x.taskId, x.job.state]), [[c!.task.id, 'cancelled']]);
        assert.deepEqual(await s.getJob(g.p.id, j!), cancelled);
        assert.equal((await s.listTasks(j!))[0]!.state, 'lost');
      });

      test('recordCheckpoint sets the job\'s checkpoint only while the task is active on that host', async (s) => {
        const g = await grid(s);
        const [j] = await g.jobs(g.sim, [{}]);
        const [c] = (await g.claim(g.h1.id, 'r-1', T)).tasks;
        const id = c!.task.id;
        assert.equal(c!.job.checkpoint, null);
        assert.equal(await s.recordCheckpoint(g.h2.id, id, sha(1), T + 1), false, 'not on another host');
        assert.equal(await s.recordCheckpoint(g.h1.id, id + 1000, sha(1), T + 1), false);
        assert.equal((await s.getJob(g.p.id, j!))?.checkpoint, null);
        assert.equal(await s.recordCheckpoint(g.h1.id, id, sha(1), T + 2), true);
        assert.equal(await s.recordCheckpoint(g.h1.id, id, sha(2), T + 3), true, 'a later checkpoint replaces the earlier one');
        assert.equal((await s.getJob(g.p.id, j!))?.checkpoint, sha(2));
        assert.equal((await s.getHostTask(g.h1.id, id))?.job.checkpoint, sha(2));
        await g.report(g.h1.id, id, { kind: 'aborted' }, T + 4);
        assert.equal(await s.recordCheckpoint(g.h1.id, id, sha(3), T + 5), false, 'not after the task ended');
        const [next] = (await g.claim(g.h2.id, 'r-2', T + 6)).tasks;
        assert.equal(next!.job.id, j);
        assert.equal(next!.job.checkpoint, sha(2), 'the next task resumes from it');
      });

      test('getHostTask finds a task of that host only, with its job', async (s) => {
        const g = await grid(s);
        const [j] = await g.jobs(g.sim, [{}]);
        const [c] = (await g.claim(g.h1.id, 'r-1', T)).tasks;
        const found = await s.getHostTask(g.h1.id, c!.task.id);
        assert.deepEqual(found?.task, c!.task);
        assert.equal(found?.job.id, j);
        assert.equal(found?.job.state, 'running');
        assert.equal(await s.getHostTask(g.h2.id, c!.task.id), null);
        assert.equal(await s.getHostTask(g.h1.id, c!.task.id + 1000), null);
      });

      // ── scheduling state the store carries for the policy ─────────────────
      describe('scheduling', () => {
        /** Backoff on: 10 s, doubling, at most 600 s. */
        const BACKOFF: SchedulingOptions = { ...RULES, backoffBaseSeconds: 10, backoffMaxSeconds: 600 };
        const SIM_RES: Resources = { cores: 2, memoryMiB: 1024, diskMiB: 2048, gpus: 0 };
        let requests = 0;
        /** The id of the gathered queue whose heads include the job (the assertion fails otherwise). */
        function queueOf(g: ClaimGathered, jobId: number): number {
          const q = g.queues.find((x) => x.heads.some((h) => h.jobId === jobId));
          assert.ok(q, `job ${jobId} is among the gathered heads`);
          return q.queueId;
        }
        /**
         * A plan that takes exactly these jobs (a job id, or [job id, cost]) under docker, charges
         * nothing and keeps the reservation and the clock, unless `extra` says otherwise.
         */
        function plan(take: Array<number | [number, number]>, extra: Partial<ClaimPlan> = {}): (g: ClaimGathered) => ClaimPlan {
          return (g) => ({
            picks: take.map((t) => {
              const [jobId, cost] = typeof t === 'number' ? [t, 0] : t;
              return { jobId, queueId: queueOf(g, jobId), runtime: 'docker' as const, cost };
            }),
            passes: new Map(),
            reserve: undefined,
            virtualTime: g.virtualTime,
            ...extra,
          });
        }
        /** A claim with a raw plan (and optionally duplicates); a fresh request id each time. */
        function claimWith(s: Store, hostId: number, now: number, p: (g: ClaimGathered) => ClaimPlan, over: Partial<ClaimRequest> = {}) {
          return s.claimTasks({ hostId, requestId: `sched-${++requests}`, leaseMs: LEASE, maxQueues: 100, headsPerQueue: 500, plan: p, duplicates: null, ...over }, now);
        }
        /** What a claim gathers for the host, seen through a claim whose plan takes nothing and keeps the reservation. */
        async function peek(s: Store, hostId: number, now: number, over: Partial<ClaimRequest> = {}): Promise<ClaimGathered> {
          let seen: ClaimGathered | null = null;
          const r = await claimWith(s, hostId, now, (g) => ((seen = g), plan([])(g)), over);
          assert.deepEqual(r.tasks, [], 'a peek claims nothing');
          assert.ok(seen, 'the plan was called');
          return seen;
        }
        const heads = (g: ClaimGathered): number[] => flatten(g).map((c) => c.jobId);
        const only = (...ids: Array<number | undefined>) => (cs: Candidate[]): Match[] =>
          cs.filter((c) => ids.includes(c.jobId)).map((c) => ({ jobId: c.jobId, runtime: 'docker' as const }));
        const byId = (a: number | undefined, b: number | undefined) => a! - b!;
        async function thirdHost(s: Store, name = 'h3') {
          const site = await s.getSiteByName('lab');
          return s.createHost({ siteId: site!.id, name, resources: { cores: 16, memoryMiB: 65536, diskMiB: 1_000_000, gpus: 0 }, platform: 'linux/amd64' }, T0);
        }

        // ── queues ──────────────────────────────────────────────────────────
        test('jobs of one app version and effective shape share a queue; each gathered queue carries its placement, project and heads', async (s) => {
          const g = await grid(s);
          const digest = 'sha256:' + sha(9);
          const pinnedRes = { cores: 0.5, memoryMiB: 256, diskMiB: 100, gpus: 1 };
          const pinned = await s.createAppVersion(g.q.id, appSpec('pinned', { imageDigest: digest, platforms: ['linux/amd64', 'linux/arm64'], resources: pinnedRes }), 'new', T0);
          const sim2 = await s.createAppVersion(g.p.id, appSpec('sim'), 'version', T0);
          const [a, big, same, sel1, sel2, selOther, bigHigh] = await g.jobs(g.sim, [
            {},
            { resources: { memoryMiB: 4096 } },
            { resources: { memoryMiB: 1024 } }, // the app's own value: the same shape as no override
            { selector: { zone: 'x', gpu: 'none' } },
            { selector: { gpu: 'none', zone: 'x' } }, // the same selector, keys in another order
            { selector: { zone: 'y' } },
            { resources: { memoryMiB: 4096 }, priority: 3, deadline: T + 500_000 },
          ]);
          const [later] = await g.jobs(g.sim, [{ priority: 1 }], T0 + 20); // another submission joins the same queue
          const [v2] = await g.jobs(sim2, [{}]);
          const [pin] = await g.jobs(pinned, [{ resources: { cores: 1 } }]);
          const [nat] = await g.jobs(g.native, [{}]);

          const got = await peek(s, g.h1.id, T);
          const head = (jobId: number, priority = 0, submittedAt = T0 + 10, deadline: number | null = null) => ({ jobId, priority, submittedAt, queuedAt: submittedAt, deadline });
          const simImage = [g.sim.image];
          const want: Array<Omit<QueueView, 'queueId'>> = [
            { projectId: g.p.id, appId: g.sim.id, resources: SIM_RES, platforms: ['linux/amd64'], runtimes: ['docker'], selector: {}, images: simImage, maxRuntimeSeconds: 3600, estimatedMs: null,
              heads: [head(later!, 1, T0 + 20), head(a!), head(same!)] },
            { projectId: g.p.id, appId: g.sim.id, resources: { ...SIM_RES, memoryMiB: 4096 }, platforms: ['linux/amd64'], runtimes: ['docker'], selector: {}, images: simImage, maxRuntimeSeconds: 3600, estimatedMs: null,
              heads: [head(bigHigh!, 3, T0 + 10, T + 500_000), head(big!)] },
            { projectId: g.p.id, appId: g.sim.id, resources: SIM_RES, platforms: ['linux/amd64'], runtimes: ['docker'], selector: { gpu: 'none', zone: 'x' }, images: simImage, maxRuntimeSeconds: 3600, estimatedMs: null,
              heads: [head(sel1!), head(sel2!)] },
            { projectId: g.p.id, appId: g.sim.id, resources: SIM_RES, platforms: ['linux/amd64'], runtimes: ['docker'], selector: { zone: 'y' }, images: simImage, maxRuntimeSeconds: 3600, estimatedMs: null,
              heads: [head(selOther!)] },
            { projectId: g.p.id, appId: sim2.id, resources: SIM_RES, platforms: ['linux/amd64'], runtimes: ['docker'], selector: {}, images: [sim2.image], maxRuntimeSeconds: 3600, estimatedMs: null,
              heads: [head(v2!)] },
            { projectId: g.q.id, appId: pinned.id, resources: { ...pinnedRes, cores: 1 }, platforms: ['linux/amd64', 'linux/arm64'], runtimes: ['docker'], selector: {},
              images: [pinned.image, digest], maxRuntimeSeconds: 3600, estimatedMs: null, heads: [head(pin!)] },
            { projectId: g.q.id, appId: g.native.id, resources: SIM_RES, platforms: [], runtimes: ['docker', 'native'], selector: {}, images: [g.native.image], maxRuntimeSeconds: 3600, estimatedMs: null,
              heads: [head(nat!)] },
          ];
          assert.equal(got.queues.length, want.length, 'seven queues: four shapes of sim v1, sim v2, pinned, native');
          const ids = new Set(got.queues.map((q) => q.queueId));
          assert.equal(ids.size, want.length, 'each queue has its own id');
          for (const w of want) {
            const q = got.queues.find((x) => x.heads[0]?.jobId === w.heads[0]!.jobId);
            assert.ok(q, `a queue starts with job ${w.heads[0]!.jobId}`);
            assert.deepEqual(q, { queueId: q.queueId, ...w });
          }
          assert.deepEqual(got.projects, new Map([
            [g.p.id, { projectId: g.p.id, weight: 1, pass: 0 }],
            [g.q.id, { projectId: g.q.id, weight: 1, pass: 0 }],
          ]));
          assert.deepEqual([got.reservation, got.reservedElsewhere, got.cooledApps, got.virtualTime], [null, new Set(), new Set(), 0]);

          // A later submission of an existing shape joins its queue (same id).
          const [again] = await g.jobs(g.sim, [{ selector: { zone: 'y' } }], T0 + 30);
          const withAgain = await peek(s, g.h1.id, T);
          assert.equal(queueOf(withAgain, again!), queueOf(got, selOther!));
          assert.deepEqual(withAgain.queues.find((q) => q.queueId === queueOf(got, selOther!))!.heads, [head(selOther!), head(again!, 0, T0 + 30)]);

          // headsPerQueue bounds the heads of each queue; maxQueues how many queues are read.
          const one = await peek(s, g.h1.id, T, { headsPerQueue: 1 });
          assert.equal(one.queues.length, want.length);
          for (const q of one.queues) {
            const full = withAgain.queues.find((x) => x.queueId === q.queueId)!;
            assert.deepEqual(q.heads, full.heads.slice(0, 1), `queue ${q.queueId}: only its first head`);
          }
          const three = await peek(s, g.h1.id, T, { maxQueues: 3 });
          assert.equal(three.queues.length, 3);
          assert.equal(new Set(three.queues.map((q) => q.queueId)).size, 3);
          for (const q of three.queues) assert.deepEqual(q, withAgain.queues.find((x) => x.queueId === q.queueId), 'a queue read is read whole');
          assert.deepEqual([...three.projects.keys()].sort(byId), [...new Set(three.queues.map((q) => q.projectId))].sort(byId), 'projects of the queues read');

          // Cancelled and running jobs are no heads; a queue with none left is not gathered.
          await s.cancelJob(g.p.id, later!, T + 1);
          const r = await claimWith(s, g.h2.id, T + 2, plan([bigHigh!, big!, pin!]));
          assert.deepEqual(r.tasks.map((c) => c.job.id), [bigHigh, big, pin]);
          const after = await peek(s, g.h1.id, T + 3);
          assert.equal(after.queues.length, want.length - 2, "big's and pinned's queues have no eligible job left");
          assert.deepEqual(after.queues.find((q) => q.queueId === queueOf(got, a!))!.heads, [head(a!), head(same!)]);
          assert.deepEqual(heads(after).sort(byId), [a!, same!, sel1!, sel2!, selOther!, again!, v2!, nat!].sort(byId));
        });

        test('a submission that fails part-way leaves no queue behind: later jobs of that shape get a queue of their own shape', async (s) => {
          const g = await grid(s);
          // The failing request is the first of its shape (2 cores, 3000 MiB): it fails on its labels, after its jobs' queue was found.
          const bad = [jobSpec({ resources: { memoryMiB: 3000 } }), jobSpec({ resources: { memoryMiB: 3000 }, labels: { k: null as unknown as string } })];
          await assert.rejects(s.insertJobs({ projectId: g.p.id, app: g.sim, batch: null, jobs: bad, idempotency: null, now: T0 + 10 }));
          assert.deepEqual(await s.listJobs(g.p.id, {}, { limit: 10 }), [], 'nothing was written');
          const [other] = await g.jobs(g.sim, [{ resources: { memoryMiB: 5000 } }]); // another shape first
          const [j] = await g.jobs(g.sim, [{ resources: { memoryMiB: 3000 } }]);
          const got = await peek(s, g.h1.id, T);
          const queueOfJob = (jobId: number | undefined) => got.queues.find((q) => q.heads.some((h) => h.jobId === jobId));
          assert.deepEqual(queueOfJob(j)?.resources, { ...SIM_RES, memoryMiB: 3000 });
          assert.deepEqual(queueOfJob(other)?.resources, { ...SIM_RES, memoryMiB: 5000 });
          assert.equal(got.queues.length, 2);
        });

        test('setHostLabels replaces the labels a host declares', async (s) => {
          const g = await grid(s);
          const site = await s.getSiteByName('lab');
          const h = await s.createHost({ siteId: site!.id, name: 'gpu-box', resources: g.h1.resources, platform: 'linux/amd64', labels: { zone: 'a', gpu: 'a100' } }, T0);
          assert.deepEqual(h.labels, { zone: 'a', gpu: 'a100' });
          assert.deepEqual((await s.getHost(h.id))?.labels, { zone: 'a', gpu: 'a100' });
          assert.deepEqual((await s.getHost(g.h1.id))?.labels, {}, 'no labels: an empty map');
          await s.setHostLabels(h.id, { zone: 'b' });
          assert.deepEqual((await s.getHost(h.id))?.labels, { zone: 'b' }, 'replaced, not merged');
          assert.deepEqual((await s.listHosts()).find((x) => x.id === h.id)?.labels, { zone: 'b' });
          await s.setHostLabels(h.id, {});
          assert.deepEqual((await s.getHost(h.id))?.labels, {});
          assert.deepEqual((await s.getHost(g.h1.id))?.labels, {}, 'other hosts untouched');
        });

        // ── backoff ─────────────────────────────────────────────────────────
        test('demand counts queued jobs by resource shape, ready or backing off, over every app and project; started and ended jobs are none', async (s) => {
          const g = await grid(s);
          assert.deepEqual(await s.demand(T), [], 'no jobs, no demand');
          const [a, b, c] = await g.jobs(g.sim, [{}, {}, { resources: { memoryMiB: 4096 } }]);
          await g.jobs(g.native, [{}]); // another project and app, the same resources, but it also runs natively
          await g.jobs(g.native, [{ selector: { zone: 'x' } }]); // and one that selects hosts by label
          await g.claim(g.h1.id, 'd-1', T, only(a));
          const tb = (await g.claim(g.h1.id, 'd-2', T, only(b))).tasks[0]!;
          await g.report(g.h1.id, tb.task.id, { kind: 'failed', exitCode: 1 }, T + 100, { rules: BACKOFF });
          const simRes = { cores: 2, memoryMiB: 1024, diskMiB: 2048, gpus: 0 };
          const shape = (resources: typeof simRes, native: boolean, selector: boolean, ready: number, backingOff: number) =>
            ({ resources, native, maxRuntimeSeconds: 3600, selector, ready, backingOff });
          assert.deepEqual(await s.demand(T + 200), [
            shape(simRes, false, false, 0, 1),
            shape(simRes, true, false, 1, 0),
            shape(simRes, true, true, 1, 0),
            shape({ ...simRes, memoryMiB: 4096 }, false, false, 1, 0),
          ], 'the running job is no demand; the failed one waits out its backoff; shapes part by what a host needs beyond resources');
          assert.deepEqual((await s.demand(T + 100 + 10_000))[0], shape(simRes, false, false, 1, 0), 'ready once its backoff is over, released by a claim or not');
          await s.cancelJob(g.p.id, c!, T + 300);
          assert.deepEqual((await s.demand(T + 300)).map((d) => d.resources.memoryMiB), [1024, 1024, 1024], 'a cancelled job is no demand');
        });

        test('queueDepth counts queued jobs by project, app and resources, ready or backing off, most first; activeTaskCounts and countHostsSeen', async (s) => {
          const g = await grid(s);
          assert.deepEqual(await s.queueDepth(), [], 'no jobs, no depth');
          assert.deepEqual(await s.activeTaskCounts(), { assigned: 0, running: 0 });
          assert.equal(await s.countHostsSeen(0), 0, 'hosts never seen are not online');
          const [a, b, c] = await g.jobs(g.sim, [{}, {}, { resources: { memoryMiB: 4096 } }, {}]);
          await g.jobs(g.native, [{}, {}, { selector: { zone: 'x' } }]); // a selector is no part of the grouping
          const v2 = await s.createAppVersion(g.p.id, appSpec('sim'), 'version', T0);
          await g.jobs(v2, [{}]); // another version of the same app: the same group
          await g.claim(g.h1.id, 'q-1', T, only(a));
          const tb = (await g.claim(g.h2.id, 'q-2', T + 50, only(b))).tasks[0]!;
          await g.report(g.h2.id, tb.task.id, { kind: 'failed', exitCode: 1 }, T + 100, { rules: BACKOFF });
          const simRes = { cores: 2, memoryMiB: 1024, diskMiB: 2048, gpus: 0 };
          assert.deepEqual(await s.queueDepth(), [
            { project: 'p', app: 'sim', resources: simRes, jobs: 3 },
            { project: 'q', app: 'native', resources: simRes, jobs: 3 },
            { project: 'p', app: 'sim', resources: { ...simRes, memoryMiB: 4096 }, jobs: 1 },
          ], 'the running job is not queued; the failed one backing off is; versions of an app are one group');
          await s.cancelJob(g.p.id, c!, T + 300);
          assert.deepEqual((await s.queueDepth()).map((d) => d.jobs), [3, 3], 'a cancelled job is not queued');

          const [t1] = (await s.listTasks(a!));
          assert.deepEqual(await s.activeTaskCounts(), { assigned: 1, running: 0 }, 'the failed task is not active');
          await g.beat(g.h1.id, T + 400, [{ taskId: t1!.id }]);
          assert.deepEqual(await s.activeTaskCounts(), { assigned: 0, running: 1 });
          assert.equal(await s.countHostsSeen(T), 2, 'both hosts called at or after T');
          assert.equal(await s.countHostsSeen(T + 101), 1, 'h2 last called at T + 100');
          assert.equal(await s.countHostsSeen(T + 401), 0);
        });

        test('a job requeued after a failure is no head until its retryAt, which doubles with its attempts; the claim at retryAt releases it', async (s) => {
          const g = await grid(s);
          const [j, other] = await g.jobs(g.sim, [{}, {}]);
          const t1 = (await g.claim(g.h1.id, 'b-1', T, only(j))).tasks[0]!;
          assert.equal(t1.task.attempt, 1);
          const r1 = await g.report(g.h1.id, t1.task.id, { kind: 'failed', exitCode: 1 }, T + 100, { rules: BACKOFF });
          assert.deepEqual([r1.job.state, r1.job.attempts, r1.job.retryAt, r1.job.updatedAt, r1.job.finishedAt], ['queued', 1, T + 100 + 10_000, T + 100, null]);
          assert.deepEqual(await s.getJob(g.p.id, j!), r1.job, 'getJob returns the retry time');

          assert.deepEqual(heads(await peek(s, g.h2.id, T + 10_099)), [other], 'still backing off');
          assert.equal((await s.getJob(g.p.id, j!))?.retryAt, T + 10_100, 'a claim before the time keeps it');
          const released = await peek(s, g.h2.id, T + 10_100);
          assert.deepEqual(heads(released), [j, other], 'at its retryAt the job is a head again');
          const back = released.queues[0]!.heads[0]!;
          assert.deepEqual([back.jobId, back.priority, back.deadline, back.submittedAt, back.queuedAt], [j, 0, null, r1.job.createdAt, T + 10_100],
            'it keeps its place (submittedAt) and enters its queue at its retryAt (queuedAt)');
          assert.deepEqual(await s.getJob(g.p.id, j!), { ...r1.job, retryAt: null, updatedAt: T + 10_100 }, 'the claim released it and changed nothing else');

          // The second failure waits twice as long; the third spends the last attempt.
          const t2 = (await g.claim(g.h1.id, 'b-2', T + 20_000, only(j))).tasks[0]!;
          assert.equal(t2.task.attempt, 2);
          const r2 = await g.report(g.h1.id, t2.task.id, { kind: 'failed', exitCode: 1 }, T + 20_100, { rules: BACKOFF });
          assert.deepEqual([r2.job.state, r2.job.attempts, r2.job.retryAt], ['queued', 2, T + 20_100 + 20_000]);
          assert.deepEqual(heads(await peek(s, g.h2.id, T + 40_099)), [other]);
          assert.deepEqual(heads(await peek(s, g.h2.id, T + 40_100)), [j, other]);
          const t3 = (await g.claim(g.h1.id, 'b-3', T + 40_100, only(j))).tasks[0]!;
          const r3 = await g.report(g.h1.id, t3.task.id, { kind: 'failed', exitCode: 1 }, T + 40_200, { rules: BACKOFF });
          assert.deepEqual([r3.job.state, r3.job.attempts, r3.job.retryAt, r3.job.finishedAt], ['failed', 3, null, T + 40_200]);

          // backoffMaxSeconds caps the delay; backoffBaseSeconds 0 means none.
          const capped = { ...BACKOFF, backoffMaxSeconds: 15 };
          const o1 = (await g.claim(g.h1.id, 'b-4', T + 50_000, only(other))).tasks[0]!;
          assert.equal((await g.report(g.h1.id, o1.task.id, { kind: 'timeout', limitSeconds: 5 }, T + 50_000, { rules: capped })).job.retryAt, T + 60_000);
          const o2 = (await g.claim(g.h1.id, 'b-5', T + 60_000, only(other))).tasks[0]!;
          assert.equal(o2.task.attempt, 2);
          assert.equal((await g.report(g.h1.id, o2.task.id, { kind: 'failed', exitCode: 1 }, T + 60_000, { rules: capped })).job.retryAt, T + 75_000, '20 s capped at 15 s');
          const [k] = await g.jobs(g.sim, [{}]);
          const tk = (await g.claim(g.h1.id, 'b-6', T + 80_000, only(k))).tasks[0]!;
          const rk = await g.report(g.h1.id, tk.task.id, { kind: 'failed', exitCode: 1 }, T + 80_001, { rules: RULES });
          assert.deepEqual([rk.job.state, rk.job.retryAt], ['queued', null]);
          assert.ok(heads(await peek(s, g.h2.id, T + 80_001)).includes(k!), 'no backoff: a head at once');
        });

        test('a job back from its backoff keeps its place: its head carries its submission time, and its retryAt as when it entered its queue', async (s) => {
          const g = await grid(s);
          const [j] = await g.jobs(g.sim, [{}]);
          const submitted = (await s.getJob(g.p.id, j!))!.createdAt;
          const t = (await g.claim(g.h1.id, 'qa-1', T)).tasks[0]!;
          await g.report(g.h1.id, t.task.id, { kind: 'failed', exitCode: 1 }, T + 100, { rules: { ...BACKOFF, backoffBaseSeconds: 600 } });
          const got = await peek(s, g.h2.id, T + 100 + 600_000 + 5);
          assert.deepEqual(got.queues[0]!.heads, [{ jobId: j, priority: 0, submittedAt: submitted, queuedAt: T + 100 + 600_000, deadline: null }],
            'sent to the back of the line, every retry of a batch would run at its very end; counted as waiting since submission, it would look starved the moment it came back');
        });

        test('a job requeued after a lost lease waits out the same backoff', async (s) => {
          const g = await grid(s);
          const [j] = await g.jobs(g.sim, [{}]);
          await g.claim(g.h1.id, 'l-1', T);
          const [x1] = await s.expireLeases(T + LEASE + 1, 100, BACKOFF);
          assert.deepEqual([x1!.job.id, x1!.job.state, x1!.job.attempts, x1!.job.retryAt], [j, 'queued', 1, T + LEASE + 1 + 10_000]);
          assert.deepEqual(await s.getJob(g.p.id, j!), x1!.job);
          assert.deepEqual(heads(await peek(s, g.h2.id, T + LEASE + 10_000)), []);
          assert.deepEqual(heads(await peek(s, g.h2.id, T + LEASE + 10_001)), [j]);
          const T2 = T + 100_000;
          const t2 = (await g.claim(g.h2.id, 'l-2', T2)).tasks[0]!;
          assert.equal(t2.task.attempt, 2);
          const [x2] = await s.expireLeases(T2 + LEASE + 1, 100, BACKOFF);
          assert.deepEqual([x2!.job.state, x2!.job.attempts, x2!.job.retryAt], ['queued', 2, T2 + LEASE + 1 + 20_000]);
          assert.deepEqual(heads(await peek(s, g.h1.id, T2 + LEASE + 20_000)), []);
          assert.deepEqual(heads(await peek(s, g.h1.id, T2 + LEASE + 20_001)), [j]);
        });

        test('a release (an aborted task of a running job, alone) requeues with no backoff and gives the attempt back', async (s) => {
          const g = await grid(s);
          const [j] = await g.jobs(g.sim, [{}]);
          const t1 = (await g.claim(g.h1.id, 'x-1', T)).tasks[0]!;
          const r1 = await g.report(g.h1.id, t1.task.id, { kind: 'aborted' }, T + 10, { rules: BACKOFF });
          assert.deepEqual([r1.task.state, r1.job.state, r1.job.attempts, r1.job.retryAt, r1.job.updatedAt], ['aborted', 'queued', 0, null, T + 10]);
          assert.deepEqual(await s.getJob(g.p.id, j!), r1.job);
          assert.deepEqual(heads(await peek(s, g.h2.id, T + 10)), [j], 'a head again at once');

          // After a failure (attempt 1 spent) and its backoff, attempt 2 is released: attempts back to 1.
          const t2 = (await g.claim(g.h1.id, 'x-2', T + 20)).tasks[0]!;
          assert.equal(t2.task.attempt, 1);
          await g.report(g.h1.id, t2.task.id, { kind: 'failed', exitCode: 9 }, T + 30, { rules: BACKOFF });
          const t3 = (await g.claim(g.h1.id, 'x-3', T + 30 + 10_000)).tasks[0]!;
          assert.equal(t3.task.attempt, 2);
          const r3 = await g.report(g.h1.id, t3.task.id, { kind: 'aborted' }, T + 20_000, { rules: BACKOFF });
          assert.deepEqual([r3.job.state, r3.job.attempts, r3.job.retryAt], ['queued', 1, null]);
          assert.deepEqual(heads(await peek(s, g.h2.id, T + 20_000)), [j]);
          assert.equal((await g.claim(g.h2.id, 'x-4', T + 20_001)).tasks[0]!.task.attempt, 2, 'the released attempt is run again');
        });

        test('a job that ends while backing off has no retryAt', async (s) => {
          const g = await grid(s);
          const [j] = await g.jobs(g.sim, [{}]);
          const t = (await g.claim(g.h1.id, 'c-1', T)).tasks[0]!;
          const r = await g.report(g.h1.id, t.task.id, { kind: 'failed', exitCode: 1 }, T + 1, { rules: BACKOFF });
          assert.equal(r.job.retryAt, T + 10_001);
          const cancelled = await s.cancelJob(g.p.id, j!, T + 2);
          assert.deepEqual([cancelled.state, cancelled.retryAt], ['cancelled', null], 'a cancelled job will not be retried');
          assert.deepEqual(await s.getJob(g.p.id, j!), cancelled);
          // The same through a batch cancel.
          const { batch, jobIds: [k] } = await s.insertJobs({ projectId: g.p.id, app: g.sim, batch: { labels: {} }, jobs: [jobSpec()], idempotency: null, now: T + 3 });
          const tk = (await g.claim(g.h1.id, 'c-2', T + 4, only(k))).tasks[0]!;
          assert.equal((await g.report(g.h1.id, tk.task.id, { kind: 'failed', exitCode: 1 }, T + 5, { rules: BACKOFF })).job.retryAt, T + 10_005);
          assert.equal(await s.cancelBatch(g.p.id, batch!.id, T + 6), 1);
          const kc = await s.getJob(g.p.id, k!);
          assert.deepEqual([kc?.state, kc?.retryAt], ['cancelled', null]);
        });

        // ── deadlines ───────────────────────────────────────────────────────
        test('failPastDeadline fails queued and running jobs whose deadline came, once; the rest is untouched; tasks are then aborted', async (s) => {
          const g = await grid(s);
          const D = T + 100_000;
          const [queuedDue, runningDue, backingOffDue, later, none, doneDue, cancelledDue] = await g.jobs(g.sim, [
            { deadline: D }, { deadline: D - 1 }, { deadline: D }, { deadline: D + 1 }, {}, { deadline: D - 5 }, { deadline: D - 5 },
          ]);
          const claimed = (await g.claim(g.h1.id, 'd-1', T, only(runningDue, backingOffDue, doneDue))).tasks;
          const taskOf = (jobId: number | undefined) => claimed.find((c) => c.job.id === jobId)!.task;
          await g.report(g.h1.id, taskOf(doneDue).id, { kind: 'succeeded' }, T + 10);
          await g.report(g.h1.id, taskOf(backingOffDue).id, { kind: 'failed', exitCode: 1 }, T + 20, { rules: { ...BACKOFF, backoffBaseSeconds: 500 } });
          await s.cancelJob(g.p.id, cancelledDue!, T + 30);
          const snapshot = async (ids: Array<number | undefined>) => Promise.all(ids.map((id) => s.getJob(g.p.id, id!)));
          const untouched = [later, none, doneDue, cancelledDue];
          const before = await snapshot(untouched);
          assert.equal((await s.getJob(g.p.id, backingOffDue!))?.retryAt, T + 20 + 500_000);

          assert.deepEqual(await s.failPastDeadline(D - 2, 100), [], 'nothing open is due yet; ended jobs are not failed');
          const failed = (await s.failPastDeadline(D, 100)).sort((a, b) => a.id - b.id);
          assert.deepEqual(failed.map((j) => j.id), [queuedDue, runningDue, backingOffDue].sort(byId));
          const deadlineOf = new Map([[queuedDue, D], [runningDue, D - 1], [backingOffDue, D]]);
          const attemptsOf = new Map([[queuedDue, 0], [runningDue, 1], [backingOffDue, 1]]);
          for (const j of failed) {
            assert.deepEqual([j.state, j.finishedAt, j.updatedAt, j.retryAt, j.attempts], ['failed', D, D, null, attemptsOf.get(j.id)], `job ${j.id}`);
            assert.match(j.reason!, /deadline/);
            assert.ok(j.reason!.includes(new Date(deadlineOf.get(j.id)!).toISOString()), `the reason names the deadline: ${j.reason}`);
            assert.deepEqual(await s.getJob(g.p.id, j.id), j, 'the returned job is what is stored');
          }
          assert.deepEqual(await s.failPastDeadline(D, 100), [], 'once');
          assert.deepEqual(await snapshot(untouched), before, 'later, no deadline, and ended jobs are untouched');
          assert.deepEqual(heads(await peek(s, g.h2.id, D)), [later, none]);

          // The running job's task is aborted through its heartbeat; its report leaves the job failed.
          const hb = await g.beat(g.h1.id, D + 1, [{ taskId: taskOf(runningDue).id }]);
          assert.deepEqual(hb.leases, []);
          assert.deepEqual(hb.abort.map((a) => a.taskId), [taskOf(runningDue).id]);
          assert.match(hb.abort[0]!.reason, /failed/);
          const ra = await g.report(g.h1.id, taskOf(runningDue).id, { kind: 'aborted' }, D + 2);
          assert.deepEqual([ra.task.state, ra.jobStateBefore], ['aborted', 'failed']);
          assert.deepEqual(ra.job, failed.find((j) => j.id === runningDue));
          assert.deepEqual(await s.getJob(g.p.id, runningDue!), ra.job);

          // deadline <= now is due; the limit bounds one call.
          assert.deepEqual((await s.failPastDeadline(D + 1, 100)).map((j) => j.id), [later]);
          await g.jobs(g.sim, [{ deadline: D + 10 }, { deadline: D + 11 }, { deadline: D + 12 }]);
          assert.equal((await s.failPastDeadline(D + 20, 2)).length, 2);
          assert.equal((await s.failPastDeadline(D + 20, 2)).length, 1);
          assert.equal((await s.failPastDeadline(D + 20, 2)).length, 0);
          assert.equal((await s.getJob(g.p.id, none!))?.state, 'queued');
        });

        // ── host health ─────────────────────────────────────────────────────
        test('a host that fails jobs of an app which then succeed on other hosts is cooled down for that app after hostFailureLimit in a row', async (s) => {
          const g = await grid(s);
          const H: SchedulingOptions = { ...RULES, hostFailureLimit: 2, hostCooldownSeconds: 100 };
          const flaky = await s.createAppVersion(g.p.id, appSpec('flaky', { maxAttempts: 100 }), 'new', T0);
          const other = await s.createAppVersion(g.p.id, appSpec('other', { maxAttempts: 100 }), 'new', T0);
          const [a, b, c, d] = await g.jobs(flaky, [{}, {}, {}, {}]);
          const [o1, o2] = await g.jobs(other, [{}, {}]);
          let n = 0;
          const run = async (hostId: number, jobId: number, outcome: TaskOutcome, now: number) => {
            const [t] = (await g.claim(hostId, `hh-${++n}`, now, only(jobId))).tasks;
            assert.ok(t, `job ${jobId} was claimed`);
            return g.report(hostId, t.task.id, outcome, now + 1, { rules: H, reportHash: `hh-${n}` });
          };
          const cooled = async (hostId: number, now: number) => [...(await peek(s, hostId, now)).cooledApps].sort(byId);
          const fail: TaskOutcome = { kind: 'failed', exitCode: 1 };
          const ok: TaskOutcome = { kind: 'succeeded' };

          // Failures alone count for nothing: the job may be what is broken.
          await run(g.h1.id, a!, fail, T);
          await run(g.h1.id, a!, { kind: 'image_error', message: 'pull failed' }, T + 10);
          assert.deepEqual(await cooled(g.h1.id, T + 12), [], 'two failures, but nobody has shown the job can succeed');
          // a succeeds on h2: both of h1's failures were h1's — the limit is reached.
          await run(g.h2.id, a!, ok, T + 20); // reported at T + 21
          const until = T + 21 + 100_000;
          assert.deepEqual(await cooled(g.h1.id, T + 22), [flaky.id]);
          assert.deepEqual(await cooled(g.h2.id, T + 22), [], 'the host that succeeded is not blamed');
          assert.deepEqual(await cooled(g.h1.id, until - 1), [flaky.id]);
          assert.deepEqual(await cooled(g.h1.id, until), [], 'the cool-down is over');

          // Another app has its own count; a success of the host's own clears its count.
          await run(g.h1.id, o1!, fail, until + 10);
          await run(g.h2.id, o1!, ok, until + 20); // h1: 1 for other
          await run(g.h1.id, o2!, ok, until + 30); // h1's own success: 0
          await run(g.h1.id, b!, fail, until + 40);
          await run(g.h2.id, b!, ok, until + 50); // h1: 1 for flaky
          assert.deepEqual(await cooled(g.h1.id, until + 52), []);
          // A released (aborted) task is no failure; a lost one neither.
          await run(g.h1.id, c!, { kind: 'aborted' }, until + 60);
          const [lost] = (await g.claim(g.h1.id, 'hh-lost', until + 70, only(c!))).tasks;
          await s.expireLeases(until + 70 + LEASE + 1, 100, H);
          await run(g.h2.id, c!, ok, until + 70 + LEASE + 10);
          assert.ok(lost);
          assert.deepEqual(await cooled(g.h1.id, until + 70 + LEASE + 12), [], 'still one: neither the release nor the loss counted');
          await run(g.h1.id, d!, fail, until + 70 + LEASE + 20);
          await run(g.h2.id, d!, ok, until + 70 + LEASE + 30);
          assert.deepEqual(await cooled(g.h1.id, until + 70 + LEASE + 32), [flaky.id], 'the second in a row');
        });

        test('concurrent agent calls are independent: one that fails changes nothing and fails none of the others', async (s) => {
          const g = await grid(s);
          const [a, b] = await g.jobs(g.sim, [{}, {}]);
          const [ta, tb] = (await g.claim(g.h1.id, 'cc-1', T)).tasks;
          const settled = await Promise.allSettled([
            g.report(g.h1.id, ta!.task.id, { kind: 'succeeded' }, T + 1),
            g.report(g.h1.id, 987_654, { kind: 'succeeded' }, T + 1),
            g.beat(g.h1.id, T + 1, [{ taskId: tb!.task.id, progress: 0.5 }]),
            g.report(g.h2.id, tb!.task.id, { kind: 'succeeded' }, T + 1), // not h2's task
            g.claim(g.h2.id, 'cc-2', T + 1),
          ]);
          assert.deepEqual(settled.map((x) => x.status), ['fulfilled', 'rejected', 'fulfilled', 'rejected', 'fulfilled']);
          for (const i of [1, 3]) assert.equal(((settled[i] as PromiseRejectedResult).reason as BoxgridError).code, 'not_found');
          assert.equal((await s.getJob(g.p.id, a!))?.state, 'succeeded');
          const [t] = await s.listTasks(b!);
          assert.deepEqual([t!.state, t!.progress], ['running', 0.5], "the heartbeat took effect; h2's refused report did not");
        });

        // ── fair share ──────────────────────────────────────────────────────
        test("a plan's passes and clock are stored and gathered again, with each project's weight, for projects with eligible work only", async (s) => {
          const g = await grid(s);
          const idle = await s.createProject('idle', 4, T0);
          const idleApp = await s.createAppVersion(idle.id, appSpec('i'), 'new', T0);
          const busy = await s.createProject('busy', 1, T0);
          const busyApp = await s.createAppVersion(busy.id, appSpec('b'), 'new', T0);
          const waiting = await s.createProject('waiting', 1, T0);
          const waitingApp = await s.createAppVersion(waiting.id, appSpec('w'), 'new', T0);
          await s.setShareWeight(g.q.id, 2);
          await g.jobs(g.sim, [{}, {}]);
          await g.jobs(g.native, [{}]);
          const [bj] = await g.jobs(busyApp, [{}]);
          const [wj] = await g.jobs(waitingApp, [{}]);
          // waiting's only job fails and backs off.
          const tw = (await claimWith(s, g.h2.id, T - 10, plan([wj!]))).tasks[0]!;
          await g.report(g.h2.id, tw.task.id, { kind: 'failed', exitCode: 1 }, T - 5, { rules: BACKOFF });

          const first = await peek(s, g.h1.id, T);
          assert.deepEqual(first.projects, new Map([
            [g.p.id, { projectId: g.p.id, weight: 1, pass: 0 }],
            [g.q.id, { projectId: g.q.id, weight: 2, pass: 0 }],
            [busy.id, { projectId: busy.id, weight: 1, pass: 0 }],
          ]), 'idle has no jobs, waiting only one in backoff');
          assert.equal(first.virtualTime, 0);

          const r = await claimWith(s, g.h1.id, T + 1, plan([bj!], { passes: new Map([[g.p.id, 12.5], [busy.id, 3], [idle.id, 40]]), virtualTime: 7.25 }));
          assert.deepEqual(r.tasks.map((c) => c.job.id), [bj]);
          const second = await peek(s, g.h2.id, T + 2);
          assert.deepEqual(second.projects, new Map([
            [g.p.id, { projectId: g.p.id, weight: 1, pass: 12.5 }],
            [g.q.id, { projectId: g.q.id, weight: 2, pass: 0 }],
          ]), 'busy has no queued job left; q was not charged');
          assert.equal(second.virtualTime, 7.25);

          // A pass stored for a project without work shows once it has some; weights are read fresh.
          await g.jobs(idleApp, [{}]);
          await s.setShareWeight(g.p.id, 3);
          const third = await peek(s, g.h1.id, T + 3);
          assert.deepEqual(third.projects.get(idle.id), { projectId: idle.id, weight: 4, pass: 40 });
          assert.deepEqual(third.projects.get(g.p.id), { projectId: g.p.id, weight: 3, pass: 12.5 });
          assert.equal(third.virtualTime, 7.25, 'a plan that keeps the clock keeps it');

          // The backed-off project shows again when its job is eligible.
          const fourth = await peek(s, g.h1.id, T + 10_000);
          assert.ok(fourth.projects.has(waiting.id));
          assert.equal(third.projects.has(waiting.id), false);
        });

        test("a task's charge is settled when it ends: its project's pass moves by the resource-time it held less what it was charged", async (s) => {
          const g = await grid(s);
          await s.setShareWeight(g.p.id, 2);
          const [a, b, c, keep] = await g.jobs(g.sim, [{}, {}, {}, {}]);
          await claimWith(s, g.h1.id, T, plan([[a!, 30], [b!, 50], [c!, 10]], { passes: new Map([[g.p.id, 100]]) }));
          const passOfP = async (now: number) => (await peek(s, g.h2.id, now)).projects.get(g.p.id)!.pass;
          assert.equal(await passOfP(T), 100);
          // sim on a 16-core host: a dominant share of 2/16 cores, so 2 core-seconds per second held (at least 1 s).
          const tasks = new Map<number, number>();
          for (const id of [a!, b!, c!]) tasks.set(id, (await s.listTasks(id))[0]!.id);
          await g.report(g.h1.id, tasks.get(c!)!, { kind: 'aborted' }, T + 500, { durationMs: 500 }); // held 0.5 s, charged as 1 s: 2
          assert.equal(await passOfP(T + 501), 100 + (2 - 10) / 2);
          await g.report(g.h1.id, tasks.get(a!)!, { kind: 'succeeded' }, T + 4000, { durationMs: 4000 }); // 8
          assert.equal(await passOfP(T + 4001), 96 + (8 - 30) / 2);
          assert.equal((await g.report(g.h1.id, tasks.get(a!)!, { kind: 'succeeded' }, T + 4002, { durationMs: 4000 })).replayed, true);
          assert.equal(await passOfP(T + 4003), 85, 'a replay settles nothing');
          await s.expireLeases(T + LEASE + 1, 100, RULES); // b lost after 60.001 s: 120.002
          const afterLoss = 85 + (2 * (60_001 / 1000) - 50) / 2;
          assert.equal(await passOfP(T + LEASE + 2), afterLoss);
          await g.report(g.h1.id, tasks.get(b!)!, { kind: 'failed', exitCode: 1 }, T + LEASE + 3, { durationMs: 70_000 });
          assert.equal(await passOfP(T + LEASE + 4), afterLoss, 'a late report was settled at the loss already');
          assert.equal((await peek(s, g.h2.id, T + LEASE + 5)).projects.get(g.q.id), undefined, 'q had nothing to settle');
          assert.equal((await s.getJob(g.p.id, keep!))?.state, 'queued');
        });

        // ── reservations ────────────────────────────────────────────────────
        test('reserve: a job id is kept for the host and shown to the others; undefined keeps it; null clears it', async (s) => {
          const g = await grid(s);
          const h3 = await thirdHost(s);
          const [big, small, other, third] = await g.jobs(g.sim, [{ resources: { cores: 16 } }, {}, {}, {}]);
          const view = async (hostId: number, now: number) => {
            const x = await peek(s, hostId, now);
            return { reservation: x.reservation, elsewhere: [...x.reservedElsewhere].sort(byId) };
          };
          assert.deepEqual(await view(g.h1.id, T), { reservation: null, elsewhere: [] });
          const r = await claimWith(s, g.h1.id, T + 1, plan([small!], { reserve: big! }));
          assert.deepEqual(r.tasks.map((c) => c.job.id), [small], 'a plan may take jobs and reserve another');
          assert.deepEqual(await view(g.h1.id, T + 2), { reservation: big, elsewhere: [] });
          assert.deepEqual(await view(g.h2.id, T + 2), { reservation: null, elsewhere: [big] });
          assert.deepEqual(await view(g.h1.id, T + 3), { reservation: big, elsewhere: [] }, 'the peeks (reserve: undefined) kept it');

          await claimWith(s, g.h2.id, T + 4, plan([], { reserve: other! }));
          assert.deepEqual(await view(g.h1.id, T + 5), { reservation: big, elsewhere: [other] });
          assert.deepEqual(await view(g.h2.id, T + 5), { reservation: other, elsewhere: [big] });
          assert.deepEqual(await view(h3.id, T + 5), { reservation: null, elsewhere: [big, other].sort(byId) });

          await claimWith(s, g.h1.id, T + 6, plan([], { reserve: third! }));
          assert.deepEqual(await view(h3.id, T + 7), { reservation: null, elsewhere: [other, third].sort(byId) }, 'a new reservation replaces the old');
          await claimWith(s, g.h1.id, T + 8, plan([], { reserve: null }));
          assert.deepEqual(await view(g.h1.id, T + 9), { reservation: null, elsewhere: [other] });
          assert.deepEqual(await view(g.h2.id, T + 9), { reservation: other, elsewhere: [] });
          assert.deepEqual(await view(h3.id, T + 9), { reservation: null, elsewhere: [other] });
          // The reserved jobs are still queued heads: a reservation does not take a job out of its queue.
          assert.ok(heads(await peek(s, h3.id, T + 10)).includes(other!));
        });

        // ── speculative duplicates ──────────────────────────────────────────
        /** A duplicates option that records its calls and answers with `answer`. */
        function recorder(answer: (running: RunningTask[]) => number[] = () => [], scan = 100) {
          const calls: Array<{ running: RunningTask[]; active: number; cooled: number[]; pace: number | null }> = [];
          const duplicates: ClaimRequest['duplicates'] = {
            scan,
            choose: (running, active, host) => {
              calls.push({ running, active, cooled: [...host.cooledApps], pace: host.pace });
              return answer(running).map((jobId) => ({ jobId, runtime: 'docker' as const }));
            },
          };
          return { calls, duplicates };
        }
        /** What RunningTask promises (an adapter may carry more). */
        const runningView = (t: RunningTask) => ({
          jobId: t.jobId, taskId: t.taskId, startedAt: t.startedAt, progress: t.progress, estimatedMs: t.estimatedMs, copies: t.copies,
          appId: t.appId, resources: t.resources, platforms: t.platforms, runtimes: t.runtimes, selector: t.selector, images: t.images,
          hostPace: t.hostPace,
        });

        test('duplicates: choose gets the oldest active tasks (copies too) of running jobs the host does not run, and makes a copy of the same attempt', async (s) => {
          const g = await grid(s);
          const h3 = await thirdHost(s);
          const [a, b, c, d, e] = await g.jobs(g.sim, [{}, {}, {}, {}, {}]);
          const [f] = await g.jobs(g.sim, [{ resources: { memoryMiB: 4096 }, selector: { zone: 'x' } }]);
          const [n] = await g.jobs(g.once, [{}]);
          const ta = (await g.claim(g.h1.id, 'd-a', T, only(a))).tasks[0]!;
          const td = (await g.claim(g.h2.id, 'd-d', T + 500, only(d))).tasks[0]!;
          const tb = (await g.claim(g.h1.id, 'd-b', T + 1000, only(b))).tasks[0]!;
          const tc = (await g.claim(g.h2.id, 'd-c', T + 2000, only(c))).tasks[0]!;
          const tf = (await g.claim(g.h2.id, 'd-f', T + 3000, only(f))).tasks[0]!;
          await g.claim(g.h1.id, 'd-e', T + 4000, only(e));
          const tn = (await g.claim(g.h1.id, 'd-n', T + 4500, only(n))).tasks[0]!;
          await s.cancelJob(g.p.id, e!, T + 4600); // its task is still active, but the job is over
          await g.report(g.h2.id, td.task.id, { kind: 'succeeded' }, T + 5000, { durationMs: 4500 }); // the sim queue learns 4500 ms
          await g.beat(g.h1.id, T + 6000, [{ taskId: ta.task.id, progress: 0.25 }]);
          await g.report(g.h1.id, tn.task.id, { kind: 'failed', exitCode: 1 }, T + 6500); // n failed for good: no running task

          const aBefore = await s.getJob(g.p.id, a!);
          const rec = recorder(() => [a!]);
          const r = await claimWith(s, h3.id, T + 10_000, plan([]), { duplicates: rec.duplicates });
          assert.equal(rec.calls.length, 1, 'called once: the plan took nothing and h3 holds no reservation');
          const sim = { appId: g.sim.id, platforms: ['linux/amd64'], runtimes: ['docker'], selector: {}, images: [g.sim.image] };
          assert.deepEqual(rec.calls[0]!.running.map(runningView), [
            { ...sim, jobId: a, taskId: ta.task.id, startedAt: T, progress: 0.25, estimatedMs: 4500, copies: 1, hostPace: null, resources: SIM_RES },
            { ...sim, jobId: b, taskId: tb.task.id, startedAt: T + 1000, progress: null, estimatedMs: 4500, copies: 1, hostPace: null, resources: SIM_RES },
            { ...sim, jobId: c, taskId: tc.task.id, startedAt: T + 2000, progress: null, estimatedMs: 4500, copies: 1, hostPace: null, resources: SIM_RES },
            { ...sim, jobId: f, taskId: tf.task.id, startedAt: T + 3000, progress: null, estimatedMs: null, copies: 1, hostPace: null, resources: { ...SIM_RES, memoryMiB: 4096 }, selector: { zone: 'x' } },
          ], 'oldest first; startedAt is when the task was handed out (its heartbeat at T + 6000 does not move it); ended and cancelled jobs are left out');
          assert.deepEqual([rec.calls[0]!.active, rec.calls[0]!.cooled], [0, []]);

          assert.equal(r.replayed, false);
          assert.equal(r.tasks.length, 1);
          const copy = r.tasks[0]!;
          assert.deepEqual(copy.task, {
            ...ta.task, id: copy.task.id, hostId: h3.id, attempt: 1, replica: 1, state: 'assigned', runtime: 'docker',
            leaseExpiresAt: T + 10_000 + LEASE, createdAt: T + 10_000, startedAt: null, progress: null,
          });
          assert.notEqual(copy.task.id, ta.task.id);
          assert.deepEqual([copy.job.id, copy.job.state, copy.job.attempts, copy.app.id, copy.projectName], [a, 'running', 1, g.sim.id, 'p']);
          assert.deepEqual(await s.getJob(g.p.id, a!), aBefore, 'a duplicate changes nothing in its job');
          assert.deepEqual((await s.listTasks(a!)).map((t) => [t.id, t.hostId, t.attempt, t.replica, t.state]), [
            [ta.task.id, g.h1.id, 1, 0, 'running'], [copy.task.id, h3.id, 1, 1, 'assigned'],
          ]);
          assert.equal((await s.listHosts()).find((h) => h.id === h3.id)?.activeTasks, 1);
          assert.deepEqual((await claimWith(s, h3.id, T + 10_001, plan([]), { requestId: `sched-${requests}` })).tasks.map((x) => x.task.id), [copy.task.id], 'a retried request returns the copy');

          // Jobs the host already runs are left out; copies counts every active task of the job;
          // activeDuplicates counts active copies over the whole grid.
          const h1 = recorder();
          await claimWith(s, g.h1.id, T + 11_000, plan([]), { duplicates: h1.duplicates });
          assert.deepEqual(h1.calls[0]!.running.map((t) => [t.jobId, t.copies]), [[c, 1], [f, 1]], 'h1 runs a and b');
          assert.equal(h1.calls[0]!.active, 1);
          const h2 = recorder();
          await claimWith(s, g.h2.id, T + 11_000, plan([]), { duplicates: h2.duplicates });
          assert.deepEqual(h2.calls[0]!.running.map((t) => [t.jobId, t.copies]), [[a, 2], [b, 1], [a, 2]], 'a copy is a running task like the first');
          const again = recorder();
          await claimWith(s, h3.id, T + 11_000, plan([]), { duplicates: again.duplicates });
          assert.deepEqual(again.calls[0]!.running.map((t) => t.jobId), [b, c, f], 'h3 now runs a copy of a');

          // A second copy of b on h2: the next replica number again; active copies are counted over the store.
          const rb = await claimWith(s, g.h2.id, T + 12_000, plan([]), { duplicates: recorder(() => [b!]).duplicates });
          assert.deepEqual([rb.tasks[0]!.task.jobId, rb.tasks[0]!.task.replica, rb.tasks[0]!.task.attempt], [b, 1, 1]);
          const rb2 = await claimWith(s, h3.id, T + 12_001, plan([]), { duplicates: recorder(() => [b!]).duplicates });
          assert.deepEqual([rb2.tasks[0]!.task.replica, rb2.tasks[0]!.task.attempt], [2, 1]);
          const count = recorder();
          await claimWith(s, g.h1.id, T + 12_002, plan([]), { duplicates: count.duplicates });
          assert.equal(count.calls[0]!.active, 3);
          assert.equal((await s.getJob(g.p.id, b!))?.attempts, 1);

          // scan bounds how many running tasks are looked at, oldest first.
          const few = recorder(() => [], 2);
          const h4 = await thirdHost(s, 'h4');
          await claimWith(s, h4.id, T + 13_000, plan([]), { duplicates: few.duplicates });
          assert.deepEqual(few.calls[0]!.running.map((t) => t.jobId), [a, b]);
        });

        test('pace: a host\'s successes teach it, against their queue\'s typical duration; claims see the host\'s own and each running task\'s host\'s', async (s) => {
          const g = await grid(s);
          const [a, b, c, d, e] = await g.jobs(g.sim, [{}, {}, {}, {}, {}]);
          const run = async (hostId: number, job: number, at: number, outcome: TaskOutcome, durationMs: number) => {
            const t = (await g.claim(hostId, `pace-${job}`, at, only(job))).tasks[0]!;
            await g.report(hostId, t.task.id, outcome, at + durationMs, { durationMs });
          };
          await run(g.h1.id, a!, T, { kind: 'succeeded' }, 4000);
          assert.equal((await s.getHost(g.h1.id))?.pace, null, 'the queue had no typical duration to compare with');
          await run(g.h1.id, b!, T + 10_000, { kind: 'succeeded' }, 8000); // twice the 4000 ms learned: pace 2; the queue learns 4800
          await run(g.h2.id, c!, T + 20_000, { kind: 'succeeded' }, 2400); // half of 4800: pace 0.5
          await run(g.h1.id, d!, T + 30_000, { kind: 'failed', exitCode: 1 }, 100_000); // a failure teaches nothing
          await s.cancelJob(g.p.id, d!, T + 30_000 + 100_001); // (and leaves nothing backing off, which would hold speculation back)
          assert.deepEqual([(await s.getHost(g.h1.id))?.pace, (await s.getHost(g.h2.id))?.pace], [2, 0.5]);
          assert.equal((await peek(s, g.h1.id, T + 40_000)).pace, 2);
          assert.equal((await s.listHosts()).find((h) => h.id === g.h2.id)?.pace, 0.5, 'listHosts shows it too');

          await g.claim(g.h2.id, 'pace-e', T + 50_000, only(e));
          const h3 = await thirdHost(s);
          const rec = recorder();
          await claimWith(s, h3.id, T + 60_000, plan([]), { duplicates: rec.duplicates });
          assert.deepEqual(rec.calls[0]!.running.map((t) => [t.jobId, t.hostPace]), [[e, 0.5]]);
          assert.equal(rec.calls[0]!.pace, null, 'h3 has finished nothing');
        });

        test('pace: taken from the time the server saw the task held, not the duration reported; a job with a checkpoint teaches none', async (s) => {
          const g = await grid(s);
          const [a, b, c] = await g.jobs(g.sim, [{}, {}, {}]);
          const ta = (await g.claim(g.h1.id, 'pc-a', T, only(a))).tasks[0]!;
          await g.report(g.h1.id, ta.task.id, { kind: 'succeeded' }, T + 4000, { durationMs: 4000 }); // the queue learns 4000 ms
          const tb = (await g.claim(g.h2.id, 'pc-b', T + 10_000, only(b))).tasks[0]!;
          await g.report(g.h2.id, tb.task.id, { kind: 'succeeded' }, T + 18_000, { durationMs: 1 }); // held 8000 ms, claims 1
          assert.equal((await s.getHost(g.h2.id))?.pace, 2);
          const tc = (await g.claim(g.h1.id, 'pc-c', T + 20_000, only(c))).tasks[0]!;
          assert.equal(await s.recordCheckpoint(g.h1.id, tc.task.id, 'c'.repeat(64), T + 20_500), true);
          await g.report(g.h1.id, tc.task.id, { kind: 'succeeded' }, T + 21_000, { durationMs: 1000 });
          assert.equal((await s.getHost(g.h1.id))?.pace, null, 'it may have resumed half-way: a quarter of the typical time says nothing');
        });

        test('duplicates: scan counts the running tasks the host could copy, not those of jobs it runs', async (s) => {
          const g = await grid(s);
          const [a, b, c] = await g.jobs(g.sim, [{}, {}, {}]);
          await g.claim(g.h1.id, 'sc-a', T, only(a));
          await g.claim(g.h1.id, 'sc-b', T + 1, only(b));
          await g.claim(g.h2.id, 'sc-c', T + 2, only(c));
          const rec = recorder(() => [], 1);
          await claimWith(s, g.h1.id, T + 3, plan([]), { duplicates: rec.duplicates });
          assert.deepEqual(rec.calls[0]!.running.map((t) => t.jobId), [c], 'the oldest task h1 could copy');
        });

        test('duplicates: not while a job backs off — it will be queued again soon and needs the hosts', async (s) => {
          const g = await grid(s);
          const [a, b] = await g.jobs(g.sim, [{}, {}]);
          await g.claim(g.h1.id, 'bo-a', T, only(a));
          const tb = (await g.claim(g.h1.id, 'bo-b', T, only(b))).tasks[0]!;
          await g.report(g.h1.id, tb.task.id, { kind: 'failed', exitCode: 1 }, T + 1, { rules: BACKOFF }); // b backs off until T + 10_001
          const rec = recorder();
          await claimWith(s, g.h2.id, T + 5000, plan([]), { duplicates: rec.duplicates });
          assert.equal(rec.calls.length, 0, 'b is backing off: not the tail');
          await g.claim(g.h1.id, 'bo-b2', T + 10_001, only(b)); // b runs again: nothing is queued now
          await claimWith(s, g.h2.id, T + 10_002, plan([]), { duplicates: rec.duplicates });
          assert.equal(rec.calls.length, 1, 'the tail: nothing queued or backing off');
        });

        test('duplicates: choose is called only when the plan took nothing and the host is not kept free', async (s) => {
          const g = await grid(s);
          const [a, b, c, d] = await g.jobs(g.sim, [{}, {}, {}, {}]);
          await g.claim(g.h1.id, 'dc-a', T, only(a));
          const rec = recorder();
          const calls = () => rec.calls.length;
          const r1 = await claimWith(s, g.h2.id, T + 1, plan([b!]), { duplicates: rec.duplicates });
          assert.deepEqual([r1.tasks.length, calls()], [1, 0], 'the plan took a job');
          await claimWith(s, g.h2.id, T + 2, plan([], { reserve: c! }), { duplicates: rec.duplicates });
          assert.equal(calls(), 0, 'the plan reserved the host');
          await claimWith(s, g.h2.id, T + 3, plan([]), { duplicates: rec.duplicates });
          assert.equal(calls(), 0, 'the host holds a reservation');
          await claimWith(s, g.h2.id, T + 4, plan([], { reserve: null }), { duplicates: rec.duplicates });
          assert.equal(calls(), 0, 'the plan cleared the reservation and took nothing, but jobs are still queued: not the tail yet');
          await s.cancelJob(g.p.id, c!, T + 4);
          await s.cancelJob(g.p.id, d!, T + 4);
          await claimWith(s, g.h2.id, T + 4, plan([]), { duplicates: rec.duplicates });
          assert.equal(calls(), 1, 'nothing queued, the plan took nothing, no reservation: the tail');
          assert.deepEqual(rec.calls[0]!.running.map((t) => t.jobId), [a]);
          await claimWith(s, g.h2.id, T + 5, plan([]), { duplicates: rec.duplicates });
          assert.equal(calls(), 2);
          assert.ok(d);
        });

        /** Job j of sim: its first task on h1 (handed out at T), a copy on h3 (at T + 1000). */
        async function withCopy(s: Store) {
          const g = await grid(s);
          const h3 = await thirdHost(s);
          const [j] = await g.jobs(g.sim, [{}]);
          const first = (await g.claim(g.h1.id, 'wc-1', T)).tasks[0]!.task;
          const r = await claimWith(s, h3.id, T + 1000, plan([]), { duplicates: recorder(() => [j!]).duplicates });
          const copy = r.tasks[0]!.task;
          assert.deepEqual([copy.jobId, copy.replica], [j, 1]);
          return { g, h3, j: j!, first, copy };
        }

        test('duplicates: when one copy succeeds the job succeeds and the other copy is aborted', async (s) => {
          const { g, h3, j, first, copy } = await withCopy(s);
          const won = await g.report(h3.id, copy.id, { kind: 'succeeded' }, T + 5000, { durationMs: 4000 });
          assert.deepEqual([won.task.state, won.job.state, won.job.finishedAt, won.job.attempts, won.jobStateBefore], ['succeeded', 'succeeded', T + 5000, 1, 'running']);
          assert.deepEqual(await s.getJob(g.p.id, j), won.job);
          const hb = await g.beat(g.h1.id, T + 6000, [{ taskId: first.id }]);
          assert.deepEqual(hb.leases, []);
          assert.deepEqual(hb.abort.map((x) => x.taskId), [first.id]);
          assert.match(hb.abort[0]!.reason, /succeeded/);
          const stopped = await g.report(g.h1.id, first.id, { kind: 'aborted' }, T + 6500);
          assert.deepEqual([stopped.task.state, stopped.jobStateBefore], ['aborted', 'succeeded']);
          assert.deepEqual(stopped.job, won.job, 'the job stays succeeded');
          assert.deepEqual(await s.getJob(g.p.id, j), won.job);
        });

        test('duplicates: a copy that fails, is released or is lost while another is active leaves the job running on the other', async (s) => {
          const { g, h3, first, copy } = await withCopy(s);
          const failed = await g.report(g.h1.id, first.id, { kind: 'failed', exitCode: 2 }, T + 2000, { rules: BACKOFF });
          assert.deepEqual([failed.task.state, failed.job.state, failed.job.attempts, failed.job.retryAt, failed.jobStateBefore], ['failed', 'running', 1, null, 'running']);
          assert.deepEqual((await g.beat(h3.id, T + 3000, [{ taskId: copy.id }])).leases, [{ taskId: copy.id, leaseExpiresAt: T + 3000 + LEASE }]);
          const won = await g.report(h3.id, copy.id, { kind: 'succeeded' }, T + 4000);
          assert.deepEqual([won.job.state, won.job.attempts], ['succeeded', 1]);

          // Released while the other runs: the job keeps running, its attempt is not given back.
          const [k] = await g.jobs(g.sim, [{}]);
          const kFirst = (await g.claim(g.h1.id, 'wc-2', T + 10_000)).tasks[0]!.task;
          const kCopy = (await claimWith(s, h3.id, T + 11_000, plan([]), { duplicates: recorder(() => [k!]).duplicates })).tasks[0]!.task;
          const released = await g.report(h3.id, kCopy.id, { kind: 'aborted' }, T + 12_000);
          assert.deepEqual([released.task.state, released.job.state, released.job.attempts], ['aborted', 'running', 1]);

          // Lost while the other runs: the job keeps running; when the last copy then fails, the job is requeued.
          await g.beat(g.h1.id, T + 12_000, [{ taskId: kFirst.id }]);
          const [l] = await g.jobs(g.sim, [{}]);
          const lFirst = (await g.claim(g.h2.id, 'wc-3', T + 20_000)).tasks[0]!.task;
          const lCopy = (await claimWith(s, h3.id, T + 21_000, plan([]), { duplicates: recorder(() => [l!]).duplicates })).tasks[0]!.task;
          await g.beat(h3.id, T + 21_000 + LEASE - 1, [{ taskId: lCopy.id }]);
          await g.beat(g.h1.id, T + 21_000 + LEASE - 1, [{ taskId: kFirst.id }]);
          const lost = await s.expireLeases(T + 20_000 + LEASE + 1, 100, BACKOFF);
          assert.deepEqual(lost.map((x) => [x.taskId, x.job.id, x.job.state, x.job.attempts, x.jobChanged]), [[lFirst.id, l, 'running', 1, false]]);
          assert.deepEqual((await s.listTasks(l!)).map((t) => t.state), ['lost', 'running']);
          const last = await g.report(h3.id, lCopy.id, { kind: 'failed', exitCode: 1 }, T + 90_000, { rules: BACKOFF });
          assert.deepEqual([last.job.state, last.job.attempts, last.job.retryAt], ['queued', 1, T + 90_000 + 10_000]);
          assert.equal((await g.claim(g.h2.id, 'wc-4', T + 100_000, only(l))).tasks[0]!.task.attempt, 2);
        });

        // ── late results ────────────────────────────────────────────────────
        test('a late success from a task counted lost ends its open job; a late failure changes nothing; once the job ended it is lease_expired', async (s) => {
          const g = await grid(s);
          const [queuedJob, elsewhere, failing, ended, finishedElsewhere] = await g.jobs(g.sim, [{}, {}, {}, {}, {}]);
          const [once] = await g.jobs(g.once, [{}]);
          const first = new Map((await g.claim(g.h1.id, 'lt-1', T)).tasks.map((c) => [c.job.id, c.task]));
          const lost = await s.expireLeases(T + LEASE + 1, 100, BACKOFF);
          assert.equal(lost.length, 6);
          const L = T + LEASE + 1;
          assert.equal((await s.getJob(g.p.id, once!))?.state, 'failed', 'its only attempt is spent');
          // Requeued (and backing off: the report comes before its retryAt): a late success ends it.
          const q1 = await g.report(g.h1.id, first.get(queuedJob!)!.id, { kind: 'succeeded' }, L + 100, { durationMs: 50_000, reportHash: 'late-ok' });
          assert.deepEqual([q1.replayed, q1.jobStateBefore, q1.task.state, q1.task.endedAt, q1.task.durationMs], [false, 'queued', 'succeeded', L + 100, 50_000]);
          assert.deepEqual([q1.job.state, q1.job.finishedAt, q1.job.updatedAt, q1.job.retryAt, q1.job.attempts, q1.job.reason], ['succeeded', L + 100, L + 100, null, 1, null]);
          assert.deepEqual(await s.getJob(g.p.id, queuedJob!), q1.job);
          assert.deepEqual((await s.listTasks(queuedJob!)).map((t) => t.state), ['succeeded']);
          assert.deepEqual(heads(await peek(s, g.h2.id, L + 10_000)), [elsewhere, failing, ended, finishedElsewhere], 'the others are back after their backoff; it is not');
          const replay = await g.report(g.h1.id, first.get(queuedJob!)!.id, { kind: 'succeeded' }, L + 200, { durationMs: 50_000, reportHash: 'late-ok' });
          assert.deepEqual([replay.replayed, replay.task, replay.job], [true, q1.task, q1.job], 'a replay of a late report is a replay');
          await rejectsWithCode(g.report(g.h1.id, first.get(queuedJob!)!.id, { kind: 'failed', exitCode: 1 }, L + 300, { reportHash: 'other' }), 'conflict');

          // Three of them run again on h2 (after the backoff); one of those then succeeds there.
          const second = new Map((await g.claim(g.h2.id, 'lt-2', L + 10_000, only(elsewhere, failing, finishedElsewhere))).tasks.map((c) => [c.job.id, c.task]));
          assert.equal(second.size, 3);
          await g.report(g.h2.id, second.get(finishedElsewhere!)!.id, { kind: 'succeeded' }, L + 11_000);

          // Running on another host: the late success ends it, and the other task is aborted.
          const e1 = await g.report(g.h1.id, first.get(elsewhere!)!.id, { kind: 'succeeded' }, L + 12_000);
          assert.deepEqual([e1.jobStateBefore, e1.task.state, e1.job.state, e1.job.finishedAt, e1.job.attempts], ['running', 'succeeded', 'succeeded', L + 12_000, 2]);
          const hb = await g.beat(g.h2.id, L + 13_000, [{ taskId: second.get(elsewhere!)!.id }, { taskId: second.get(failing!)!.id }]);
          assert.deepEqual(hb.leases, [{ taskId: second.get(failing!)!.id, leaseExpiresAt: L + 13_000 + LEASE }]);
          assert.deepEqual(hb.abort.map((x) => x.taskId), [second.get(elsewhere!)!.id]);
          assert.match(hb.abort[0]!.reason, /succeeded/);

          // A late failure is recorded on the task and leaves the job as it is (running elsewhere).
          const failingBefore = await s.getJob(g.p.id, failing!);
          const f1 = await g.report(g.h1.id, first.get(failing!)!.id, { kind: 'failed', exitCode: 4 }, L + 14_000, { reportHash: 'late-fail' });
          assert.deepEqual([f1.task.state, f1.task.exitCode, f1.jobStateBefore], ['failed', 4, 'running']);
          assert.match(f1.task.reason!, /exited with code 4/);
          assert.deepEqual(f1.job, failingBefore);
          assert.deepEqual(await s.getJob(g.p.id, failing!), failingBefore);
          const f2 = await g.report(g.h1.id, first.get(failing!)!.id, { kind: 'failed', exitCode: 4 }, L + 15_000, { reportHash: 'late-fail' });
          assert.equal(f2.replayed, true);

          // A late failure of a requeued job that is still backing off leaves it as it is, retryAt included.
          const [k] = await g.jobs(g.sim, [{}]);
          const tk = (await g.claim(g.h1.id, 'lt-3', L + 20_000, only(k))).tasks[0]!.task;
          await s.expireLeases(L + 20_000 + LEASE + 1, 100, BACKOFF);
          const kBefore = await s.getJob(g.p.id, k!);
          assert.deepEqual([kBefore?.state, kBefore?.retryAt], ['queued', L + 20_000 + LEASE + 1 + 10_000]);
          const k1 = await g.report(g.h1.id, tk.id, { kind: 'aborted' }, L + 20_000 + LEASE + 2);
          assert.deepEqual([k1.task.state, k1.jobStateBefore], ['failed', 'queued'], 'lost → aborted is no transition: recorded as failed');
          assert.deepEqual(await s.getJob(g.p.id, k!), kBefore);

          // Once the job ended, a late report is refused.
          await rejectsWithCode(g.report(g.h1.id, first.get(once!)!.id, { kind: 'succeeded' }, L + 30_000), 'lease_expired');
          await rejectsWithCode(g.report(g.h1.id, first.get(finishedElsewhere!)!.id, { kind: 'succeeded' }, L + 30_000), 'lease_expired');
          await s.cancelJob(g.p.id, ended!, L + 30_000);
          await rejectsWithCode(g.report(g.h1.id, first.get(ended!)!.id, { kind: 'failed', exitCode: 1 }, L + 30_001), 'lease_expired');
          assert.deepEqual((await s.listTasks(ended!)).map((t) => t.state), ['lost']);
          assert.deepEqual((await s.listTasks(once!)).map((t) => t.state), ['lost']);
        });

        // ── learned durations ───────────────────────────────────────────────
        test("a queue learns its tasks' typical duration from successes: an exponentially weighted mean, per queue", async (s) => {
          const g = await grid(s);
          const [a, b, c, d, e, keep] = await g.jobs(g.sim, [{}, {}, {}, {}, {}, {}]);
          const [big, keepBig] = await g.jobs(g.sim, [{ resources: { memoryMiB: 4096 } }, { resources: { memoryMiB: 4096 } }]);
          const tasks = new Map((await g.claim(g.h1.id, 'ld-1', T, only(a, b, c, d, e, big))).tasks.map((x) => [x.job.id, x.task.id]));
          const estimates = async (now: number) => {
            const got = await peek(s, g.h2.id, now);
            return [got.queues.find((q) => q.heads.some((h) => h.jobId === keep))!.estimatedMs, got.queues.find((q) => q.heads.some((h) => h.jobId === keepBig))!.estimatedMs];
          };
          assert.deepEqual(await estimates(T), [null, null], 'nothing learned yet');
          await g.report(g.h1.id, tasks.get(a!)!, { kind: 'succeeded' }, T + 4000, { durationMs: 4000 });
          assert.deepEqual(await estimates(T + 4001), [4000, null], 'the first success is the estimate');
          await g.report(g.h1.id, tasks.get(b!)!, { kind: 'failed', exitCode: 1 }, T + 5000, { durationMs: 100_000 });
          await g.report(g.h1.id, tasks.get(e!)!, { kind: 'aborted' }, T + 5000, { durationMs: 100_000 });
          assert.deepEqual(await estimates(T + 5001), [4000, null], 'failures and releases teach nothing');
          await g.report(g.h1.id, tasks.get(c!)!, { kind: 'succeeded' }, T + 9000, { durationMs: 9000 });
          assert.deepEqual(await estimates(T + 9001), [5000, null], '0.8 × 4000 + 0.2 × 9000');
          await g.report(g.h1.id, tasks.get(d!)!, { kind: 'succeeded' }, T + 10_000, { durationMs: 1000 });
          assert.deepEqual(await estimates(T + 10_001), [4200, null], '0.8 × 5000 + 0.2 × 1000');
          await g.report(g.h1.id, tasks.get(big!)!, { kind: 'succeeded' }, T + 12_000, { durationMs: 2500 });
          assert.deepEqual(await estimates(T + 12_001), [4200, 2500], 'each queue learns its own');
        });
      });
    });
  });
}
