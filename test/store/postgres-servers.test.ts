// PostgreSQL specifics: what several servers sharing one database rely on. Each test opens three
// PostgresStore instances (three servers' worth of connection pools) on one fresh schema and
// makes them race.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import pg from 'pg';
import { checksum } from '../../src/store/migration.js';
import { POSTGRES_MIGRATIONS } from '../../src/store/postgres/migrations.js';
import { PostgresStore } from '../../src/store/postgres/postgres-store.js';
import { DEFAULT_SCHEDULING } from '../../src/scheduling/options.js';
import type { ClaimRequest } from '../../src/store/store.js';
import type { QueueView } from '../../src/scheduling/plan.js';
import type { Host } from '../../src/domain/model.js';
import { dropSchema, freshSchemaName, postgresSuite, TEST_POSTGRES } from '../helpers/postgres.js';
import { appSpec, jobSpec } from './conformance.js';

const { skip } = await postgresSuite();
const T0 = 1_700_000_000_000;
const SERVERS = 3;

/** A plan that takes the heads of one project's queues (the tests share one schema). */
function mine(queues: QueueView[], projectId: number) {
  return queues.filter((q) => q.projectId === projectId).flatMap((q) => q.heads.map((h) => ({ jobId: h.jobId, queueId: q.queueId, runtime: 'docker' as const, cost: 0 })));
}

describe('PostgresStore with several servers on one database', { skip }, () => {
  let schema: string;
  let stores: PostgresStore[];

  before(() => {
    schema = freshSchemaName();
    stores = Array.from({ length: SERVERS }, () => new PostgresStore({ connectionString: TEST_POSTGRES, schema, maxConnections: 8 }));
  });
  after(async () => {
    await Promise.all(stores.map((s) => s.close()));
    await dropSchema(schema);
  });

  it('migrates once when the servers start together, and records each migration with its checksum', async () => {
    const results = await Promise.all(stores.map((s) => s.migrate()));
    const applied = results.flatMap((r) => r.applied);
    assert.deepEqual(applied, POSTGRES_MIGRATIONS.map((m) => m.version), 'every migration applied by exactly one server');
    const client = new pg.Client({ connectionString: TEST_POSTGRES });
    await client.connect();
    try {
      const rows = (await client.query(`SELECT version, name, checksum FROM ${schema}.schema_migrations ORDER BY version`)).rows;
      assert.deepEqual(rows, POSTGRES_MIGRATIONS.map((m) => ({ version: m.version, name: m.name, checksum: checksum(m) })));
    } finally {
      await client.end();
    }
  });

  it('refuses to start on a database whose applied migration was edited', async () => {
    const edited = POSTGRES_MIGRATIONS.map((m, i) => (i === 0 ? { ...m, sql: m.sql + '\n-- edited' } : m));
    const store = new PostgresStore({ connectionString: TEST_POSTGRES, schema }, edited);
    try {
      await assert.rejects(store.migrate(), /edited after it was applied/);
    } finally {
      await store.close();
    }
  });

  it('bootstraps one operator when the servers start together', async () => {
    const token = (userId: number) => ({
      id: `tok${userId}`.padEnd(16, '0'), kind: 'user' as const, subjectId: userId, secretHash: Buffer.alloc(32, 1), label: 'boot',
      createdAt: T0, expiresAt: null, revokedAt: null,
    });
    const done = await Promise.all(stores.map((s) => s.bootstrap({ operatorName: 'admin', projectName: 'default', token }, T0)));
    assert.equal(done.filter(Boolean).length, 1, 'exactly one server bootstrapped');
    assert.equal(await stores[0]!.countUsers(), 1);
  });

  it('gives each batch consecutive ids while the servers insert at once, and an idempotency key one outcome', async () => {
    const project = await stores[0]!.createProject('ids', 1, T0);
    const app = await stores[0]!.createAppVersion(project.id, appSpec('ids'), 'new', T0);
    const inserts = await Promise.all(
      Array.from({ length: 9 }, (_, i) =>
        stores[i % SERVERS]!.insertJobs({ projectId: project.id, app, batch: { labels: {} }, jobs: Array.from({ length: 200 }, () => jobSpec()), idempotency: null, now: T0 }),
      ),
    );
    for (const r of inserts) {
      const ids = r.jobIds;
      assert.deepEqual(ids, ids.map((_, k) => ids[0]! + k), 'consecutive ids');
      assert.equal((await stores[1]!.listJobs(project.id, { batchId: r.batch!.id }, { limit: 1000 })).length, 200);
    }
    const keyed = await Promise.all(
      stores.map((s) =>
        s.insertJobs({ projectId: project.id, app, batch: { labels: {} }, jobs: [jobSpec(), jobSpec()], idempotency: { key: 'k1', requestHash: 'h1' }, now: T0 }),
      ),
    );
    assert.equal(new Set(keyed.map((r) => r.batch!.id)).size, 1, 'one batch for one key');
    assert.equal(keyed.filter((r) => !r.replayed).length, 1, 'the others are replays');
  });

  it('enrols a host once when its enrolment reaches every server at once, even on a single-use token', async () => {
    const site = await stores[0]!.createSite('race', T0);
    await stores[0]!.createEnrollToken({ id: 'rrrrrrrrrrrrrrrr', siteId: site.id, secretHash: Buffer.alloc(32, 2), label: 'race', usesLeft: 1, expiresAt: null, revokedAt: null, createdAt: T0, owner: null });
    const credential = { id: 'cccccccccccccccc', kind: 'host' as const, subjectId: 0, secretHash: Buffer.alloc(32, 3), label: 'h', createdAt: T0, expiresAt: null, revokedAt: null };
    const host = { name: 'racer', resources: { cores: 4, memoryMiB: 8192, diskMiB: 10_000, gpus: 0 }, platform: 'linux/amd64' };
    const results = await Promise.all(stores.map((s) => s.enrollHost({ enrollTokenId: 'rrrrrrrrrrrrrrrr', host, credential }, T0)));
    assert.equal(new Set(results.map((r) => r.host.id)).size, 1);
    assert.equal(results.filter((r) => !r.replayed).length, 1);
    assert.equal((await stores[2]!.getEnrollToken('rrrrrrrrrrrrrrrr'))!.usesLeft, 0, 'one use spent: the others were replays, not refused for want of uses');
  });

  it('hands every job out once while hosts on all servers claim and report at once', async () => {
    const s0 = stores[0]!;
    const project = await s0.createProject('race', 1, T0);
    const app = await s0.createAppVersion(project.id, appSpec('race', { resources: { cores: 1, memoryMiB: 256, diskMiB: 100, gpus: 0 } }), 'new', T0);
    const JOBS = 400;
    const { jobIds } = await s0.insertJobs({ projectId: project.id, app, batch: { labels: {} }, jobs: Array.from({ length: JOBS }, () => jobSpec()), idempotency: null, now: T0 });
    const site = await s0.createSite('grid', T0);
    const hosts: Host[] = [];
    for (let i = 0; i < 24; i++) {
      hosts.push(await s0.createHost({ siteId: site.id, name: `h${i}`, resources: { cores: 4, memoryMiB: 4096, diskMiB: 10_000, gpus: 0 }, platform: 'linux/amd64' }, T0));
    }
    // The plan takes up to three heads; the store must still never start a job twice.
    const claim = (hostId: number, n: number): ClaimRequest => ({
      hostId, requestId: `r${hostId}-${n}`, leaseMs: 600_000, maxQueues: 8, headsPerQueue: 3, duplicates: null,
      plan: (g) => ({ picks: mine(g.queues, project.id).slice(0, 3), passes: new Map(), reserve: undefined, virtualTime: g.virtualTime }),
    });
    let claimedTasks = 0;
    await Promise.all(
      hosts.map(async (h, i) => {
        const store = stores[i % SERVERS]!;
        for (let n = 0; ; n++) {
          const { tasks } = await store.claimTasks(claim(h.id, n), T0 + 1);
          if (tasks.length === 0) return;
          claimedTasks += tasks.length;
          // Reports go to another server than the claim, as behind a load balancer.
          await Promise.all(tasks.map((t, k) => stores[(i + k + 1) % SERVERS]!.reportTask({
            hostId: h.id, taskId: t.task.id, outcome: { kind: 'succeeded' }, durationMs: 5, usage: null, outputs: {}, log: null,
            reportHash: `rep${t.task.id}`, rules: DEFAULT_SCHEDULING,
          }, T0 + 2)));
        }
      }),
    );
    assert.equal(claimedTasks, JOBS, `one task per job (${claimedTasks} tasks for ${JOBS} jobs)`);
    const jobs = await stores[1]!.listJobs(project.id, {}, { limit: JOBS + 1 });
    assert.equal(jobs.length, JOBS);
    assert.deepEqual([...new Set(jobs.map((j) => j.state))], ['succeeded'], 'every job finished');
    for (const id of jobIds.slice(0, 50)) {
      const tasks = await stores[2]!.listTasks(id);
      assert.equal(tasks.length, 1, `job ${id} ran once`);
    }
    assert.ok(jobs.every((j) => j.attempts === 1), 'no job started twice');
  });

  it('expires each lapsed lease once when every server sweeps at once', async () => {
    const s0 = stores[0]!;
    const project = await s0.createProject('sweep', 1, T0);
    const app = await s0.createAppVersion(project.id, appSpec('sweep', { resources: { cores: 1, memoryMiB: 256, diskMiB: 100, gpus: 0 } }), 'new', T0);
    await s0.insertJobs({ projectId: project.id, app, batch: null, jobs: Array.from({ length: 60 }, () => jobSpec()), idempotency: null, now: T0 });
    const site = await s0.createSite('sweepers', T0);
    const host = await s0.createHost({ siteId: site.id, name: 'gone', resources: { cores: 64, memoryMiB: 65536, diskMiB: 100_000, gpus: 0 }, platform: 'linux/amd64' }, T0);
    const { tasks } = await s0.claimTasks({
      hostId: host.id, requestId: 'all', leaseMs: 1000, maxQueues: 8, headsPerQueue: 64, duplicates: null,
      plan: (g) => ({ picks: mine(g.queues, project.id), passes: new Map(), reserve: undefined, virtualTime: g.virtualTime }),
    }, T0);
    assert.equal(tasks.length, 60);
    const swept = (await Promise.all(stores.flatMap((s) => [s.expireLeases(T0 + 5000, 25, DEFAULT_SCHEDULING), s.expireLeases(T0 + 5000, 25, DEFAULT_SCHEDULING)]))).flat();
    const again = await s0.expireLeases(T0 + 5000, 100, DEFAULT_SCHEDULING);
    const ids = [...swept, ...again].map((e) => e.taskId);
    assert.equal(ids.length, 60, 'every lapsed task expired');
    assert.equal(new Set(ids).size, 60, 'none twice');
    const jobs = await s0.listJobs(project.id, {}, { limit: 100 });
    assert.ok(jobs.every((j) => j.state === 'queued' && j.attempts === 1), 'every job back in its queue once');
  });
});
