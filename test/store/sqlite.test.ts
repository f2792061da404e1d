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
