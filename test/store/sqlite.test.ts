import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { assertWellFormed, checksum, type Migration } from '../../src/store/migration.js';
import { SQLITE_MIGRATIONS } from '../../src/store/sqlite/migrations.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import type { App, Project } from '../../src/domain/model.js';
import { DEFAULT_SCHEDULING } from '../../src/scheduling/options.js';
import type { ClaimGathered } from '../../src/store/store.js';
import { appSpec, jobSpec, runStoreConformance } from './conformance.js';

const T0 = 1_700_000_000_000;

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'boxgrid-sqlite-test-'));
}

// ── the port's conformance suite, one fresh database file per test ─────────
runStoreConformance('SqliteStore (conformance)', async () => {
  const dir = await tempDir();
  const store = new SqliteStore(join(dir, 'boxgrid.db'));
  return { store, cleanup: () => rm(dir, { recursive: true, force: true }) };
});

// ── SQLite-specific behaviour ───────────────────────────────────────────────
describe('SqliteStore (SQLite specifics)', () => {
  const dirs: string[] = [];
  after(async () => {
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  });
  async function dbFile(): Promise<string> {
    const dir = await tempDir();
    dirs.push(dir);
    return join(dir, 'nested', 'boxgrid.db'); // the store creates missing parent directories
  }
  /** Reads the file with a separate connection, as an operator's sqlite3 shell would. */
  function inspect<T>(file: string, fn: (db: Database.Database) => T): T {
    const db = new Database(file, { readonly: true, fileMustExist: true });
    try {
      return fn(db);
    } finally {
      db.close();
    }
  }

  it('puts the database file in WAL mode', async () => {
    const file = await dbFile();
    const store = new SqliteStore(file);
    try {
      await store.migrate();
      assert.equal(inspect(file, (db) => db.pragma('journal_mode', { simple: true })), 'wal');
    } finally {
      await store.close();
    }
    // WAL mode is persistent: it is still set after the store has closed.
    assert.equal(inspect(file, (db) => db.pragma('journal_mode', { simple: true })), 'wal');
  });

  it('records every applied migration in schema_migrations with its checksum', async () => {
    const file = await dbFile();
    const store = new SqliteStore(file);
    const before = Date.now();
    try {
      const { applied } = await store.migrate();
      assert.deepEqual(applied, SQLITE_MIGRATIONS.map((m) => m.version));
    } finally {
      await store.close();
    }
    const rows = inspect(file, (db) => db.prepare('SELECT version, name, checksum, applied_at FROM schema_migrations ORDER BY version').all()) as Array<{
      version: number; name: string; checksum: string; applied_at: number;
    }>;
    assert.deepEqual(
      rows.map((r) => ({ version: r.version, name: r.name, checksum: r.checksum })),
      SQLITE_MIGRATIONS.map((m) => ({ version: m.version, name: m.name, checksum: checksum(m) })),
    );
    for (const r of rows) assert.ok(r.applied_at >= before && r.applied_at <= Date.now(), 'applied_at is the wall-clock time');
  });

  it('reopening an up-to-date file applies nothing and keeps the data', async () => {
    const file = await dbFile();
    const a = new SqliteStore(file);
    await a.migrate();
    await a.createUser('alice', true, T0);
    await a.close();
    const b = new SqliteStore(file);
    try {
      assert.deepEqual(await b.migrate(), { applied: [] });
      assert.equal((await b.getUserByName('alice'))?.operator, true);
    } finally {
      await b.close();
    }
  });

  it('applies only a newly appended migration on the next start', async () => {
    const file = await dbFile();
    const a = new SqliteStore(file);
    await a.migrate();
    await a.close();
    const next = SQLITE_MIGRATIONS.length + 1;
    const extended: Migration[] = [...SQLITE_MIGRATIONS, { version: next, name: 'extra', sql: 'CREATE TABLE extra_things (id INTEGER PRIMARY KEY);' }];
    const b = new SqliteStore(file, extended);
    try {
      assert.deepEqual(await b.migrate(), { applied: [next] });
      assert.deepEqual(await b.migrate(), { applied: [] });
    } finally {
      await b.close();
    }
    assert.ok(inspect(file, (db) => db.prepare(`SELECT 1 FROM sqlite_master WHERE name = 'extra_things'`).get()));
  });

  it("refuses to migrate when an applied migration's SQL was edited (append-only)", async () => {
    const file = await dbFile();
    const a = new SqliteStore(file);
    await a.migrate();
    await a.close();
    const edited: Migration[] = SQLITE_MIGRATIONS.map((m, i) => (i === 0 ? { ...m, sql: m.sql + '\n-- a harmless-looking edit\n' } : m));
    assert.notEqual(checksum(edited[0]!), checksum(SQLITE_MIGRATIONS[0]!));
    const b = new SqliteStore(file, edited);
    try {
      await assert.rejects(b.migrate(), (e: unknown) => {
        assert.ok(e instanceof Error);
        assert.match(e.message, /append-only/);
        return true;
      });
    } finally {
      await b.close();
    }
  });

  it('refuses to start on a database that has a migration this build does not know', async () => {
    const file = await dbFile();
    const future: Migration[] = [
      ...SQLITE_MIGRATIONS,
      { version: SQLITE_MIGRATIONS.length + 1, name: 'from-the-future', sql: 'CREATE TABLE future_things (id INTEGER PRIMARY KEY);' },
    ];
    const newer = new SqliteStore(file, future);
    await newer.migrate();
    await newer.close();
    const older = new SqliteStore(file);
    try {
      await assert.rejects(older.migrate(), (e: unknown) => {
        assert.ok(e instanceof Error);
        assert.match(e.message, new RegExp(`migration ${SQLITE_MIGRATIONS.length + 1}\\b`));
        return true;
      });
    } finally {
      await older.close();
    }
    // Nothing was rolled back or recorded by the refused start.
    const versions = inspect(file, (db) => db.prepare('SELECT version FROM schema_migrations ORDER BY version').pluck().all());
    assert.deepEqual(versions, future.map((m) => m.version));
  });

  it('assertWellFormed accepts SQLITE_MIGRATIONS and refuses gaps, repeats and a bad start', () => {
    assertWellFormed(SQLITE_MIGRATIONS);
    assert.ok(SQLITE_MIGRATIONS.length > 0);
    const m = (version: number): Migration => ({ version, name: `m${version}`, sql: 'SELECT 1;' });
    assertWellFormed([]);
    assertWellFormed([m(1), m(2), m(3)]);
    assert.throws(() => assertWellFormed([m(1), m(3)]), /m3 has version 3, expected 2/);
    assert.throws(() => assertWellFormed([m(1), m(2), m(2)]), /expected 3/);
    assert.throws(() => assertWellFormed([m(2)]), /expected 1/);
    assert.throws(() => assertWellFormed([m(2), m(1)]), /expected 1/);
    assert.throws(() => assertWellFormed([...SQLITE_MIGRATIONS, m(SQLITE_MIGRATIONS.length + 2)]));
  });

  it('migration 4 puts the queued and running jobs of an older database into queues by app and effective shape', async () => {
    const file = await dbFile();
    const T = T0 + 1_000_000;
    // A database as the store left it before migration 4.
    const old = new SqliteStore(file, SQLITE_MIGRATIONS.slice(0, 3));
    assert.deepEqual(await old.migrate(), { applied: [1, 2, 3] });
    const p = await old.createProject('p', 1, T0);
    const app = await old.createAppVersion(p.id, appSpec('sim'), 'new', T0); // 2 cores, 1024 MiB, 2048 MiB disk, no GPU
    const site = await old.createSite('lab', T0);
    await old.close();
    const raw = new Database(file);
    const job = raw.prepare(
      `INSERT INTO jobs (project_id, app_id, app_name, app_version, state, priority, attempts, spec, created_at, updated_at, finished_at)
       VALUES (?, ?, 'sim', 1, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const add = (state: string, priority: number, spec: object, at: number, attempts = 0) =>
      Number(job.run(p.id, app.id, state, priority, attempts, JSON.stringify({ args: [], ...spec }), at, at, state === 'succeeded' ? at : null).lastInsertRowid);
    const a = add('queued', 0, {}, T0 + 1);
    const big = add('queued', 5, { resources: { memoryMiB: 4096 } }, T0 + 2);
    const same = add('queued', 0, { resources: { memoryMiB: 1024 } }, T0 + 3); // the app's own value
    const d = add('queued', 2, {}, T0 + 4);
    const half = add('queued', 0, { resources: { cores: 0.5 } }, T0 + 5);
    const running = add('running', 0, { resources: { cores: 4 } }, T0 + 6, 1);
    const done = add('succeeded', 0, { resources: { cores: 8 } }, T0 + 7, 1);
    const resources = { cores: 16, memoryMiB: 65536, diskMiB: 1_000_000, gpus: 0 };
    const hostId = Number(raw.prepare(`INSERT INTO hosts (site_id, name, state, resources, platform, created_at) VALUES (?, 'h1', 'active', ?, 'linux/amd64', ?)`)
      .run(site.id, JSON.stringify(resources), T0).lastInsertRowid);
    const taskId = Number(raw.prepare(
      `INSERT INTO tasks (job_id, host_id, attempt, replica, state, lease_expires_at, created_at, runtime, request_id, outputs)
       VALUES (?, ?, 1, 0, 'running', ?, ?, 'docker', 'old-request', '{}')`,
    ).run(running, hostId, T + 60_000, T).lastInsertRowid);
    raw.close();

    const store = new SqliteStore(file);
    try {
      assert.deepEqual(await store.migrate(), { applied: SQLITE_MIGRATIONS.slice(3).map((m) => m.version) });
      let n = 0;
      const peek = async (now: number, take: number[] = []): Promise<ClaimGathered> => {
        let seen: ClaimGathered | null = null;
        const r = await store.claimTasks({
          hostId, requestId: `m-${++n}`, leaseMs: 60_000, maxQueues: 100, headsPerQueue: 100, duplicates: null,
          plan: (g) => {
            seen = g;
            const picks = take.map((jobId) => ({ jobId, queueId: g.queues.find((q) => q.heads.some((h) => h.jobId === jobId))!.queueId, runtime: 'docker' as const, cost: 0 }));
            return { picks, passes: new Map(), reserve: undefined, virtualTime: g.virtualTime };
          },
        }, now);
        assert.deepEqual(r.tasks.map((c) => c.job.id), take);
        return seen!;
      };
      const simRes = { cores: 2, memoryMiB: 1024, diskMiB: 2048, gpus: 0 };
      const placement = { projectId: p.id, appId: app.id, platforms: ['linux/amd64'], runtimes: ['docker'], selector: {}, images: [app.image], maxRuntimeSeconds: app.maxRuntimeSeconds, estimatedMs: null };
      const head = (jobId: number, priority: number, submittedAt: number) => ({ jobId, priority, submittedAt, queuedAt: submittedAt, deadline: null });
      const g = await peek(T);
      const byFirst = (x: ClaimGathered, jobId: number) => x.queues.find((q) => q.heads[0]?.jobId === jobId);
      assert.equal(g.queues.length, 3, 'three shapes are queued; the running job has a queue of its own without heads');
      assert.deepEqual(byFirst(g, d), { ...placement, queueId: byFirst(g, d)?.queueId, resources: simRes, heads: [head(d, 2, T0 + 4), head(a, 0, T0 + 1), head(same, 0, T0 + 3)] });
      assert.deepEqual(byFirst(g, big), { ...placement, queueId: byFirst(g, big)?.queueId, resources: { ...simRes, memoryMiB: 4096 }, heads: [head(big, 5, T0 + 2)] });
      assert.deepEqual(byFirst(g, half), { ...placement, queueId: byFirst(g, half)?.queueId, resources: { ...simRes, cores: 0.5 }, heads: [head(half, 0, T0 + 5)] });
      assert.deepEqual(g.projects, new Map([[p.id, { projectId: p.id, weight: 1, pass: 0 }]]));
      assert.equal(g.virtualTime, 0);

      // The running job was given its queue: its success teaches that queue, which new jobs of its shape join.
      const rep = await store.reportTask({
        hostId, taskId, outcome: { kind: 'succeeded' }, durationMs: 3000, usage: null, outputs: {}, log: null, reportHash: 'h', rules: DEFAULT_SCHEDULING,
      }, T + 3000);
      assert.deepEqual([rep.job.state, rep.task.state], ['succeeded', 'succeeded']);
      const [four, plain] = (await store.insertJobs({
        projectId: p.id, app, batch: null, jobs: [jobSpec({ resources: { cores: 4 } }), jobSpec()], idempotency: null, now: T + 4000,
      })).jobIds;
      const g2 = await peek(T + 5000);
      assert.deepEqual(byFirst(g2, four!), { ...placement, queueId: byFirst(g2, four!)?.queueId, resources: { ...simRes, cores: 4 }, estimatedMs: 3000, heads: [head(four!, 0, T + 4000)] });
      const plainQueue = g2.queues.find((q) => q.heads.some((h) => h.jobId === plain));
      assert.equal(plainQueue?.queueId, byFirst(g, d)?.queueId, 'a new job of a migrated shape joins its queue');
      assert.equal(g2.queues.length, 4);

      // The migrated jobs are claimed like any other.
      const g3 = await peek(T + 6000, [big, d, a, same, half]);
      assert.equal(g3.queues.length, 4);
      for (const id of [big, d, a, same, half]) {
        const j = await store.getJob(p.id, id);
        assert.deepEqual([j?.state, j?.attempts, j?.retryAt], ['running', 1, null], `job ${id}`);
      }
      assert.deepEqual((await peek(T + 7000)).queues.map((q) => q.heads.map((h) => h.jobId)).flat().sort((x, y) => x - y), [four, plain].sort((x, y) => x! - y!));
      assert.equal((await store.getJob(p.id, done))?.state, 'succeeded', 'ended jobs are left as they were');
    } finally {
      await store.close();
    }
  });

  /** A migrated store on a fresh file with project "p" and app "sim"; closed afterwards. */
  async function withProjectApp(fn: (store: SqliteStore, p: Project, app: App) => Promise<void>): Promise<void> {
    const store = new SqliteStore(await dbFile());
    try {
      await store.migrate();
      const p = await store.createProject('p', 1, T0);
      await fn(store, p, await store.createAppVersion(p.id, appSpec('sim'), 'new', T0));
    } finally {
      await store.close();
    }
  }

  it('inserts around chunk boundaries with consecutive ids matching getJob', () =>
    withProjectApp(async (store, p, app) => {
      for (const n of [1, 99, 100, 101, 250]) {
        const jobs = Array.from({ length: n }, (_, i) => jobSpec({ args: [`${n}:${i}`] }));
        const r = await store.insertJobs({ projectId: p.id, app, batch: { labels: {} }, jobs, idempotency: null, now: T0 });
        assert.equal(r.jobIds.length, n);
        for (let i = 0; i < n; i++) {
          assert.equal(r.jobIds[i], r.jobIds[0]! + i, `n=${n}: ids are consecutive`);
          assert.deepEqual((await store.getJob(p.id, r.jobIds[i]!))?.args, [`${n}:${i}`], `n=${n}, job ${i}`);
        }
        assert.equal((await store.batchCounts(r.batch!.id)).queued, n);
      }
    }));

  it('a 20,000-job batch gets consecutive ids that match getJob, with filterable labels', () =>
    withProjectApp(async (store, p, app) => {
      const N = 20_000;
      const SHARDS = 7;
      // A job before the batch so ids do not start at 1.
      const first = await store.insertJobs({ projectId: p.id, app, batch: null, jobs: [jobSpec({ labels: { shard: '3' } })], idempotency: null, now: T0 });
      const jobs = Array.from({ length: N }, (_, i) =>
        jobSpec({
          args: [`--i=${i}`],
          params: { i },
          priority: i % 5,
          labels: i % 2 === 0 ? { shard: String(i % SHARDS), parity: 'even' } : { shard: String(i % SHARDS) },
        }),
      );
      const r = await store.insertJobs({ projectId: p.id, app, batch: { labels: { big: 'yes' } }, jobs, idempotency: { key: 'big', requestHash: 'h' }, now: T0 + 1 });
      assert.equal(r.jobIds.length, N);
      assert.ok(r.jobIds[0]! > first.jobIds[0]!);
      for (let i = 0; i < N; i++) {
        if (r.jobIds[i] !== r.jobIds[0]! + i) assert.fail(`job ${i} has id ${r.jobIds[i]}, expected ${r.jobIds[0]! + i}`);
        const job = await store.getJob(p.id, r.jobIds[i]!);
        if (job?.args[0] !== `--i=${i}` || job.params.i !== i || job.priority !== i % 5 || job.batchId !== r.batch!.id) {
          assert.fail(`getJob(${r.jobIds[i]}) returned ${JSON.stringify(job)}, expected request job ${i}`);
        }
      }
      assert.equal(await store.getJob(p.id, r.jobIds[N - 1]! + 1), null, 'no extra rows past the last id');

      // Labels: every shard filter returns exactly the jobs with that shard, newest first.
      for (let shard = 0; shard < SHARDS; shard++) {
        const got = (await store.listJobs(p.id, { label: { key: 'shard', value: String(shard) }, batchId: r.batch!.id }, { limit: N })).map((j) => j.id);
        const want = r.jobIds.filter((_, i) => i % SHARDS === shard).reverse();
        assert.deepEqual(got, want, `shard ${shard}`);
      }
      const three = await store.listJobs(p.id, { label: { key: 'shard', value: '3' } }, { limit: N + 10 });
      assert.equal(three.length, Math.ceil((N - 3) / SHARDS) + 1, 'the label filter also finds the job outside the batch');
      const even = await store.listJobs(p.id, { label: { key: 'parity', value: 'even' } }, { limit: N });
      assert.equal(even.length, N / 2);
      assert.ok(even.every((j) => (j.params.i as number) % 2 === 0));

      // The idempotent replay of the big batch returns the same ids.
      const again = await store.insertJobs({ projectId: p.id, app, batch: { labels: { big: 'yes' } }, jobs, idempotency: { key: 'big', requestHash: 'h' }, now: T0 + 2 });
      assert.equal(again.replayed, true);
      assert.deepEqual(again.jobIds, r.jobIds);
    }));
});
