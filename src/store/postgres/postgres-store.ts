import pg from 'pg';
import { BoxgridError, alreadyExists, notFound } from '../../domain/errors.js';
import type {
  App, AppSpec, AuditEntry, Batch, OutputFile, BlobRecord, EnrollTokenRecord, Host, Job, JobSpec, Millis, Project, Site, StateCounts, Task,
  TokenRecord, User,
} from '../../domain/model.js';
import { describeOutcome, settle, type Settlement } from '../../domain/outcomes.js';
import { AWAITING_VALIDATOR, wantingReplicas, isError, judge, lateValidity, judgeValidation, ruleFor, settleReplica, withReport, type ReplicaView, type ValidatorAnswer, type Verdict } from '../../domain/quorum.js';
import type { Role } from '../../domain/roles.js';
import { ACTIVE_TASK_STATES, JOB_STATES, hostMachine, isActiveTask, jobMachine, taskMachine, type JobState, type TaskState } from '../../domain/states.js';
import { DURATION_WEIGHTS, effectivePass, settledPass, type ProjectShare } from '../../scheduling/fair-share.js';
import { DEFAULT_SCHEDULING, type SchedulingOptions } from '../../scheduling/options.js';
import { learnPace } from '../../scheduling/pace.js';
import { placementOf } from '../../scheduling/placement.js';
import type { QueueView, ReplicaWork } from '../../scheduling/plan.js';
import { DEFAULT_REPLICATION, NEW_HOST, nextReliability, quotaLeft, replicationFor, type HostReliability, type ReliabilityEvent, type ReplicationOptions } from '../../scheduling/replication.js';
import { nextHealth, type HostAppHealth } from '../../scheduling/retry.js';
import type { RunningTask } from '../../scheduling/speculation.js';
import { checksum, pendingMigrations, type Migration } from '../migration.js';
import {
  activeCountsOf, demandShapes, QUEUE_DEPTH_SQL, queueDepthOf, queueKeyOf, idempotencyConflict, mapApp, mapBatch, mapEnrollToken, mapHost, mapJob, mapProject, mapTask, mapUser, mergeLog,
  retryTime, specEncoder, mapReliability, mapReplicaView, REPLICA_VIEW_SQL, type Row,
} from '../rows.js';
import type {
  Bootstrap, ClaimedTask, ClaimGathered, ClaimRequest, ClaimResult, DemandShape, EnrollRequest, QueueDepth, ExpiredTask, HeartbeatRequest, HeartbeatResult, HostSummary,
  InsertJobsRequest, InsertJobsResult, JobFilter, LogChunk, Page, ReportRequest, ReportResult, Store, TaskLog,
} from '../store.js';
import type { AuditFilter, AuditListEntry, EnrollTokenSummary, HostRevocation, SiteSummary } from '../store.js';
import { HOST_REVOKED, REQUEUED_AFTER_REVOKE, attemptsAfterRevoke, mapAudit, mapEnrollTokenSummary, mapSite } from '../rows.js';
import { WORKFLOW_INSERT_COLUMNS, mapWorkflow, replayedWorkflow, workflowChangeValues, workflowInsertValues } from '../rows.js';
import type { NewWorkflow, WorkflowChange, WorkflowRecord } from '../../domain/workflow.js';
import { DEFAULT_REPLICA_SCAN } from '../store.js';
import { POSTGRES_MIGRATIONS } from './migrations.js';
import { PostgresEventRelay } from './postgres-event-relay.js';
import type { EventRelay } from '../../service/events.js';

const ACTIVE_TASK_SQL = ACTIVE_TASK_STATES.map((s) => `'${s}'`).join(', ');
const CANCELLABLE_SQL = jobMachine.sourcesOf('cancelled').map((s) => `'${s}'`).join(', ');
/** Rows per INSERT … SELECT FROM unnest(…): one round trip carries this many jobs. */
const JOB_CHUNK = 5000;

/**
 * Advisory lock keys (first half of the two-key form; "bxg" in ASCII, so they do not collide
 * with another application's locks on a shared server).
 */
const LOCK_SPACE = 0x627867;
const LOCK = { migrate: 1, duplicates: 2, insertJobs: 3, bootstrap: 4, appName: 5 } as const;

/** SQLSTATEs after which a whole transaction is safely run again. */
const RETRYABLE = new Set(['40001', '40P01']); // serialization failure, deadlock detected
const UNIQUE_VIOLATION = '23505';
const MAX_ATTEMPTS = 5;
/** Connections for the statistics statements (see PostgresStore.recordStats). */
const STATS_CONNECTIONS = 4;

/**
 * bigint comes back from node-postgres as a string (it may not fit a double). Ids and epoch-ms
 * times here stay far below 2^53, so they are read as numbers, as the port's types say.
 */
const INT8_ARRAY = 1016;
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => {
    if (oid === pg.types.builtins.INT8) return (v: string) => Number(v);
    if (oid === INT8_ARRAY) {
      const strings = pg.types.getTypeParser(oid as never, format) as (v: string) => Array<string | null>;
      return (v: string) => strings(v).map((x) => (x === null ? null : Number(x)));
    }
    return pg.types.getTypeParser(oid, format);
  }) as typeof pg.types.getTypeParser,
};

export interface PostgresStoreOptions {
  /** postgres://user:password@host:port/database (libpq-style parameters are understood). */
  connectionString: string;
  /** Keep boxgrid's tables in this schema (created if missing) instead of the role's default. */
  schema?: string;
  /** Most connections this server opens (node-postgres pool). */
  maxConnections?: number;
}

/** What a call has to add to the statistics (PostgresStore.recordStats). */
interface Stats {
  /** Each project's pass becomes max(pass, floor) + charge: a claim catches a project up to the clock once, however many claims raced. */
  passes: Array<{ projectId: number; floor: number; charge: number }>;
  learned: { queueId: number; durationMs: number } | null;
  /** The fair-share clock moves up to this (null: not at all). */
  clock: number | null;
}

const STATS_SQL = `
  WITH d AS (SELECT * FROM unnest($1::bigint[], $2::float8[], $3::float8[]) AS d(id, floor, charge)),
  locked AS (SELECT p.id FROM projects p WHERE p.id IN (SELECT id FROM d) ORDER BY p.id FOR UPDATE),
  passes AS (
    UPDATE projects p SET fair_pass = greatest(p.fair_pass, d.floor) + d.charge FROM d WHERE p.id = d.id AND p.id IN (SELECT id FROM locked)),
  learned AS (UPDATE queues SET estimated_ms = coalesce($4::float8 * estimated_ms + $5::float8 * $6::float8, $6::float8) WHERE id = $7)
  UPDATE fair_share_clock SET virtual_time = $8 WHERE id = 1 AND virtual_time < $8::float8`;

/** Statements sent to the server (each one a round trip), BEGIN and COMMIT included. */
interface RoundTrips {
  count: number;
}

/** One connection inside a transaction (or a single statement outside one). */
class Conn {
  constructor(private readonly client: pg.PoolClient | pg.Pool, private readonly trips: RoundTrips) {}

  async all(sql: string, values: unknown[] = []): Promise<Row[]> {
    this.trips.count++;
    return (await this.client.query<Row>({ name: statementName(sql), text: sql, values })).rows;
  }
  async one(sql: string, values: unknown[] = []): Promise<Row | undefined> {
    return (await this.all(sql, values))[0];
  }
  /** The first column of the first row. */
  async value<T>(sql: string, values: unknown[] = []): Promise<T | undefined> {
    const r = await this.one(sql, values);
    return r === undefined ? undefined : (Object.values(r)[0] as T);
  }
  /** Rows changed. */
  async run(sql: string, values: unknown[] = []): Promise<number> {
    this.trips.count++;
    return (await this.client.query({ name: statementName(sql), text: sql, values })).rowCount ?? 0;
  }
  async lock(key: number, sub = 0): Promise<void> {
    await this.run('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_SPACE + key, sub]);
  }
}

const statementNames = new Map<string, string>();

/** Each distinct query text is prepared once per connection, under a name of its own. */
function statementName(sql: string): string {
  let name = statementNames.get(sql);
  if (name === undefined) {
    name = `bxg${statementNames.size}`;
    statementNames.set(sql, name);
  }
  return name;
}

function pgCode(e: unknown): string | undefined {
  return e instanceof Error ? (e as { code?: string }).code : undefined;
}

function uniqueViolation(e: unknown, make: () => BoxgridError): unknown {
  return pgCode(e) === UNIQUE_VIOLATION ? make() : e;
}

/**
 * The store for several servers on one database. Each method is one transaction at READ
 * COMMITTED; what several servers could race on is made safe explicitly:
 * - a claim locks the queue heads it reads, skipping heads another claim holds, so concurrent
 *   claims are handed different jobs; one host's claims run one at a time (an advisory lock),
 *   so a request retried on another server finds its first try's tasks;
 * - a task or job that a call reads in order to rewrite is read FOR UPDATE; lease and deadline
 *   sweeps take rows with SKIP LOCKED, so two servers sweeping at once share the work and each
 *   row is handled once;
 * - rows that every call of a kind writes (a project's pass, a queue's typical duration, the
 *   fair-share clock) are statistics, written as changes in single statements after the call's
 *   transaction (pass += change, duration learned in SQL, clock only forward): no update is
 *   lost, and no call waits for another's commit on them (see recordStats);
 * - a batch's jobs take consecutive ids (the batch range queries rely on it): job inserts take
 *   an advisory lock of their own;
 * - a deadlock or serialization failure reruns the whole transaction.
 */
export class PostgresStore implements Store {
  private readonly pool: pg.Pool;

  constructor(opts: PostgresStoreOptions, private readonly migrations: readonly Migration[] = POSTGRES_MIGRATIONS) {
    if (opts.schema !== undefined && !/^[a-z_][a-z0-9_]{0,62}$/.test(opts.schema)) {
      throw new Error(`schema "${opts.schema}" is not a plain lower-case identifier`);
    }
    this.schema = opts.schema ?? null;
    const searchPath = opts.schema ? `-c search_path=${opts.schema}` : '';
    this.clientConfig = { connectionString: opts.connectionString, types: TYPES, ...(searchPath ? { options: searchPath } : {}) };
    this.pool = new pg.Pool({
      connectionString: opts.connectionString, max: opts.maxConnections ?? 10, types: TYPES, ...(searchPath ? { options: searchPath } : {}),
    });
    this.statsPool = new pg.Pool({
      connectionString: opts.connectionString, max: STATS_CONNECTIONS, types: TYPES, options: `${searchPath} -c synchronous_commit=off`.trim(),
    });
    // An idle connection the server dropped must not take the process down.
    this.pool.on('error', () => {});
    this.statsPool.on('error', () => {});
  }

  /**
   * Statistics every call of a kind writes: the projects' fair-share passes, the fair-share
   * clock, the queues' typical durations and the hosts' paces. They are written after the call's
   * own transaction, as single statements that do not wait for the disk (synchronous_commit
   * off), so that the few rows all calls share are each held for one statement's execution,
   * not for a transaction and its fsync: with them inside, those rows made every claim and
   * report queue behind each other (bench/multiserver.ts). A database crash may forget the last
   * moments of learning; a job, task or lease is never among what it forgets. A server that
   * dies between a call's commit and its statistics loses that call's contribution alone.
   */
  private readonly statsPool: pg.Pool;
  private statsLost = 0;

  /** Statistics writes given up on (after retries); they are best-effort, the call they follow stands. */
  get lostStatistics(): number {
    return this.statsLost;
  }

  /**
   * Writes statistics in one statement: projects' passes (raised to a floor, then charged; a
   * project's rows locked in id order), a queue's typical duration (learnDuration, in SQL, so
   * that no concurrent sample is lost) and the fair-share clock (only forward). A deadlock
   * rolls the statement back whole, so it is sent again; any other failure, or too many
   * deadlocks, loses these statistics and nothing else: the call's own transaction has
   * committed, and failing its answer would only make the agent retry it as a replay.
   */
  private async recordStats(s: Stats): Promise<void> {
    const passes = [...s.passes].sort((a, b) => a.projectId - b.projectId);
    const values = [
      passes.map((p) => p.projectId), passes.map((p) => p.floor), passes.map((p) => p.charge),
      DURATION_WEIGHTS.kept, DURATION_WEIGHTS.learned, s.learned?.durationMs ?? null, s.learned?.queueId ?? null, s.clock,
    ];
    for (let attempt = 1; ; attempt++) {
      try {
        this.trips.count++;
        await this.statsPool.query({ name: statementName(STATS_SQL), text: STATS_SQL, values });
        return;
      } catch (e) {
        const code = pgCode(e);
        if (attempt < MAX_ATTEMPTS && code !== undefined && RETRYABLE.has(code)) continue;
        this.statsLost++;
        return;
      }
    }
  }

  private readonly schema: string | null;
  private readonly clientConfig: pg.ClientConfig;
  private readonly trips: RoundTrips = { count: 0 };

  /** Statements this store has sent so far, BEGIN and COMMIT included (bench/multiserver.ts). */
  get roundTrips(): number {
    return this.trips.count;
  }

  private get db(): Conn {
    return new Conn(this.pool, this.trips);
  }

  /** Runs `fn` in one transaction, again from the start after a deadlock or serialization failure. */
  private async tx<T>(fn: (c: Conn) => Promise<T>, retryOn: ReadonlySet<string> = RETRYABLE): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const client = await this.pool.connect();
      let broken = false;
      const c = new Conn(client, this.trips);
      try {
        await c.run('BEGIN');
        const result = await fn(c);
        await c.run('COMMIT');
        return result;
      } catch (e) {
        try {
          await c.run('ROLLBACK');
        } catch {
          broken = true; // the connection itself failed: do not hand it out again
        }
        const code = pgCode(e);
        if (attempt >= MAX_ATTEMPTS || code === undefined || !retryOn.has(code)) throw e;
      } finally {
        client.release(broken);
      }
    }
  }

  async migrate(): Promise<{ applied: number[] }> {
    const client = await this.pool.connect();
    try {
      // Several servers may start at once: one migrates, the others wait and find it done.
      await client.query('SELECT pg_advisory_lock($1, 0)', [LOCK_SPACE + LOCK.migrate]);
      try {
        if (this.schema) await client.query(`CREATE SCHEMA IF NOT EXISTS ${this.schema}`);
        await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
          version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, applied_at bigint NOT NULL)`);
        const done = new Map<number, string>(
          (await client.query<Row>('SELECT version, checksum FROM schema_migrations')).rows.map((r) => [r.version as number, r.checksum as string]),
        );
        const applied: number[] = [];
        for (const m of pendingMigrations(this.migrations, done)) {
          await client.query('BEGIN');
          try {
            await client.query(m.sql);
            await client.query('INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES ($1, $2, $3, $4)', [
              m.version, m.name, checksum(m), Date.now(),
            ]);
            await client.query('COMMIT');
          } catch (e) {
            await client.query('ROLLBACK');
            throw e;
          }
          applied.push(m.version);
        }
        return { applied };
      } finally {
        await client.query('SELECT pg_advisory_unlock($1, 0)', [LOCK_SPACE + LOCK.migrate]);
      }
    } finally {
      client.release();
    }
  }

  openEventRelay(): EventRelay {
    return new PostgresEventRelay(this.pool, this.clientConfig, this.schema);
  }

  async ping(): Promise<void> {
    await this.pool.query('SELECT 1');
  }

  async close(): Promise<void> {
    if (!this.pool.ended) await this.pool.end();
    if (!this.statsPool.ended) await this.statsPool.end();
  }

  // ── identity ──────────────────────────────────────────────────────────────

  async countUsers(): Promise<number> {
    return (await this.db.value<number>('SELECT count(*) FROM users'))!;
  }

  async createUser(name: string, operator: boolean, now: Millis): Promise<User> {
    try {
      const id = await this.db.value<number>('INSERT INTO users (name, operator, created_at) VALUES ($1, $2, $3) RETURNING id', [name, operator, now]);
      return { id: id!, name, operator, createdAt: now };
    } catch (e) {
      throw uniqueViolation(e, () => alreadyExists(`user "${name}"`, 'name'));
    }
  }

  async getUser(id: number): Promise<User | null> {
    return mapUser(await this.db.one('SELECT * FROM users WHERE id = $1', [id]));
  }

  async getUserByName(name: string): Promise<User | null> {
    return mapUser(await this.db.one('SELECT * FROM users WHERE name = $1', [name]));
  }

  async createProject(name: string, shareWeight: number, now: Millis): Promise<Project> {
    try {
      const id = await this.db.value<number>('INSERT INTO projects (name, share_weight, created_at) VALUES ($1, $2, $3) RETURNING id', [name, shareWeight, now]);
      return { id: id!, name, shareWeight, createdAt: now };
    } catch (e) {
      throw uniqueViolation(e, () => alreadyExists(`project "${name}"`, 'name'));
    }
  }

  async setShareWeight(projectId: number, shareWeight: number): Promise<void> {
    await this.db.run('UPDATE projects SET share_weight = $1 WHERE id = $2', [shareWeight, projectId]);
  }

  async getProjectByName(name: string): Promise<Project | null> {
    const r = await this.db.one('SELECT * FROM projects WHERE name = $1', [name]);
    return r ? mapProject(r) : null;
  }

  async listProjectsFor(user: User): Promise<Array<Project & { role: Role }>> {
    const rows = user.operator
      ? await this.db.all(`SELECT p.*, 'admin' AS role FROM projects p ORDER BY p.name`)
      : await this.db.all('SELECT p.*, m.role FROM projects p JOIN memberships m ON m.project_id = p.id WHERE m.user_id = $1 ORDER BY p.name', [user.id]);
    return rows.map((r) => ({ ...mapProject(r), role: r.role as Role }));
  }

  async setMembership(projectId: number, userId: number, role: Role): Promise<void> {
    await this.db.run(
      'INSERT INTO memberships (project_id, user_id, role) VALUES ($1, $2, $3) ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role',
      [projectId, userId, role],
    );
  }

  async getRole(projectId: number, userId: number): Promise<Role | null> {
    return ((await this.db.value<string>('SELECT role FROM memberships WHERE project_id = $1 AND user_id = $2', [projectId, userId])) as Role | undefined) ?? null;
  }

  async insertToken(t: TokenRecord): Promise<void> {
    await insertToken(this.db, t);
  }

  async revokeToken(id: string, now: Millis): Promise<boolean> {
    return (await this.db.run('UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL', [now, id])) === 1;
  }

  async bootstrap(b: Bootstrap, now: Millis): Promise<boolean> {
    return this.tx(async (c) => {
      await c.lock(LOCK.bootstrap); // servers starting together: one bootstraps, the others see users
      if ((await c.value<number>('SELECT count(*) FROM users'))! > 0) return false;
      const userId = (await c.value<number>('INSERT INTO users (name, operator, created_at) VALUES ($1, true, $2) RETURNING id', [b.operatorName, now]))!;
      const projectId = await c.value<number>('INSERT INTO projects (name, share_weight, created_at) VALUES ($1, 1, $2) RETURNING id', [b.projectName, now]);
      await c.run(`INSERT INTO memberships (project_id, user_id, role) VALUES ($1, $2, 'admin')`, [projectId, userId]);
      await insertToken(c, b.token(userId));
      return true;
    });
  }

  async getToken(id: string): Promise<TokenRecord | null> {
    const r = await this.db.one('SELECT * FROM tokens WHERE id = $1', [id]);
    if (!r) return null;
    return {
      id: r.id as string, kind: r.kind as TokenRecord['kind'], subjectId: r.subject_id as number, secretHash: r.secret_hash as Buffer,
      label: r.label as string, createdAt: r.created_at as number, expiresAt: (r.expires_at as number | null) ?? null,
      revokedAt: (r.revoked_at as number | null) ?? null,
    };
  }

  // ── apps ──────────────────────────────────────────────────────────────────

  async createAppVersion(projectId: number, spec: AppSpec, mode: 'new' | 'version', now: Millis): Promise<App> {
    return this.tx(async (c) => {
      await c.lock(LOCK.appName, projectId); // two new versions at once must not both read the same latest
      const current = (await c.value<number | null>('SELECT max(version) FROM apps WHERE project_id = $1 AND name = $2', [projectId, spec.name])) ?? 0;
      if (mode === 'new' && current > 0) throw alreadyExists(`app "${spec.name}"`, 'name');
      if (mode === 'version' && current === 0) throw notFound(`app "${spec.name}"`);
      const version = current + 1;
      const id = await c.value<number>('INSERT INTO apps (project_id, name, version, spec, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id', [
        projectId, spec.name, version, JSON.stringify(spec), now,
      ]);
      return { ...spec, id: id!, projectId, version, createdAt: now };
    });
  }

  async getApp(projectId: number, name: string, version?: number): Promise<App | null> {
    const r = version === undefined
      ? await this.db.one('SELECT * FROM apps WHERE project_id = $1 AND name = $2 ORDER BY version DESC LIMIT 1', [projectId, name])
      : await this.db.one('SELECT * FROM apps WHERE project_id = $1 AND name = $2 AND version = $3', [projectId, name, version]);
    return r ? mapApp(r) : null;
  }

  async listApps(projectId: number): Promise<App[]> {
    const rows = await this.db.all('SELECT DISTINCT ON (name) * FROM apps WHERE project_id = $1 ORDER BY name, version DESC', [projectId]);
    return rows.map(mapApp);
  }

  async listAppVersions(projectId: number, name: string): Promise<App[]> {
    return (await this.db.all('SELECT * FROM apps WHERE project_id = $1 AND name = $2 ORDER BY version', [projectId, name])).map(mapApp);
  }

  // ── jobs and batches ─────────────────────────────────────────────────────

  async insertJobs(req: InsertJobsRequest): Promise<InsertJobsResult> {
    const { projectId, app, now } = req;
    return this.tx(async (c): Promise<InsertJobsResult> => {
      // One insert at a time: a batch's ids must be consecutive, and a repeated idempotency key
      // must find the first request's outcome, not race it.
      await c.lock(LOCK.insertJobs);
      if (req.idempotency) {
        const prior = await idempotentOutcome(c, projectId, req.idempotency.key);
        if (prior) {
          if (prior.requestHash !== req.idempotency.requestHash) throw idempotencyConflict();
          return prior.result;
        }
      }
      let batch: Batch | null = null;
      if (req.batch) {
        const id = await c.value<number>(
          'INSERT INTO batches (project_id, app_name, app_version, size, labels, created_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING id',
          [projectId, app.name, app.version, req.jobs.length, JSON.stringify(req.batch.labels), now],
        );
        batch = { id: id!, projectId, appName: app.name, appVersion: app.version, size: req.jobs.length, labels: req.batch.labels, createdAt: now };
      }
      const batchId = batch?.id ?? null;
      const jobIds = await this.insertJobRows(c, projectId, app, batchId, req.jobs, now);
      if (batchId !== null && jobIds.length > 0) {
        const first = jobIds[0]!;
        if (jobIds[jobIds.length - 1] !== first + jobIds.length - 1) throw new Error('job ids of a batch are not consecutive');
        await c.run('UPDATE batches SET first_job_id = $1 WHERE id = $2', [first, batchId]);
      }
      if (req.idempotency) {
        await c.run('INSERT INTO idempotency_keys (project_id, key, request_hash, batch_id, job_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)', [
          projectId, req.idempotency.key, req.idempotency.requestHash, batchId, batchId === null ? jobIds[0] ?? null : null, now,
        ]);
      }
      return { batch, jobIds, replayed: false };
    });
  }

  /** Jobs as arrays unnested by the server: one statement per JOB_CHUNK jobs, ids in request order. */
  private async insertJobRows(c: Conn, projectId: number, app: App, batchId: number | null, jobs: JobSpec[], now: Millis): Promise<number[]> {
    const encode = specEncoder();
    const queueOf = queueFinder(c, projectId, app);
    const ids: number[] = [];
    for (let start = 0; start < jobs.length; start += JOB_CHUNK) {
      const chunk = jobs.slice(start, start + JOB_CHUNK);
      const priorities: number[] = [];
      const deadlines: Array<number | null> = [];
      const specs: string[] = [];
      const queues: number[] = [];
      for (const j of chunk) {
        priorities.push(j.priority);
        deadlines.push(j.deadline);
        specs.push(encode(j));
        queues.push(await queueOf(j));
      }
      const rows = await c.all(
        `INSERT INTO jobs (project_id, app_id, app_name, app_version, batch_id, state, priority, deadline, spec, queue_id, created_at, updated_at)
         SELECT $1, $2, $3, $4, $5, 'queued', u.p, u.d, u.s, u.q, $6, $6
         FROM unnest($7::integer[], $8::bigint[], $9::text[], $10::bigint[]) WITH ORDINALITY AS u(p, d, s, q, n) ORDER BY u.n
         RETURNING id`,
        [projectId, app.id, app.name, app.version, batchId, now, priorities, deadlines, specs, queues],
      );
      // Rows are numbered as they are inserted, in the ORDER BY's order.
      for (const id of rows.map((r) => r.id as number).sort((a, b) => a - b)) ids.push(id);
    }
    const keys: string[] = [];
    const values: string[] = [];
    const jobIds: number[] = [];
    jobs.forEach((j, i) => {
      for (const key in j.labels) {
        keys.push(key);
        values.push(j.labels[key]!);
        jobIds.push(ids[i]!);
      }
    });
    for (let start = 0; start < keys.length; start += JOB_CHUNK) {
      await c.run('INSERT INTO job_labels (project_id, key, value, job_id) SELECT $1, k, v, j FROM unnest($2::text[], $3::text[], $4::bigint[]) AS u(k, v, j)', [
        projectId, keys.slice(start, start + JOB_CHUNK), values.slice(start, start + JOB_CHUNK), jobIds.slice(start, start + JOB_CHUNK),
      ]);
    }
    return ids;
  }

  async findIdempotent(projectId: number, key: string): Promise<{ requestHash: string; result: InsertJobsResult } | null> {
    return idempotentOutcome(this.db, projectId, key);
  }

  async getJob(projectId: number, id: number): Promise<Job | null> {
    const r = await this.db.one('SELECT * FROM jobs WHERE id = $1 AND project_id = $2', [id, projectId]);
    return r ? mapJob(r) : null;
  }

  /**
   * Newest first, every filter in one statement: the planner combines the indexes (state, app,
   * a label's key, a batch's id range) as it sees fit.
   */
  async listJobs(projectId: number, filter: JobFilter, page: Page): Promise<Job[]> {
    if (page.limit <= 0) return [];
    const where = ['j.project_id = $1'];
    const args: unknown[] = [projectId];
    const add = (sql: string, ...values: unknown[]) => {
      where.push(sql.replace(/\?/g, () => `$${args.push(values.shift()) }`));
    };
    if (page.beforeId !== undefined) add('j.id < ?', page.beforeId);
    if (filter.batchId !== undefined) {
      const range = await batchRange(this.db, filter.batchId);
      if (!range) return [];
      add('j.id BETWEEN ? AND ?', range.first, range.last);
      add('j.batch_id = ?', filter.batchId);
    }
    if (filter.state !== undefined) add('j.state = ?', filter.state);
    if (filter.appName !== undefined) add('j.app_name = ?', filter.appName);
    if (filter.label !== undefined) {
      add('EXISTS (SELECT 1 FROM job_labels l WHERE l.project_id = j.project_id AND l.key = ? AND l.value = ? AND l.job_id = j.id)', filter.label.key, filter.label.value);
    }
    args.push(page.limit);
    const rows = await this.db.all(`SELECT j.* FROM jobs j WHERE ${where.join(' AND ')} ORDER BY j.id DESC LIMIT $${args.length}`, args);
    return rows.map(mapJob);
  }

  async listTasks(jobId: number): Promise<Task[]> {
    return (await this.db.all('SELECT * FROM tasks WHERE job_id = $1 ORDER BY id', [jobId])).map(mapTask);
  }

  async cancelJob(projectId: number, id: number, now: Millis): Promise<Job> {
    return this.tx(async (c) => {
      const r = await c.one('SELECT * FROM jobs WHERE id = $1 AND project_id = $2 FOR UPDATE', [id, projectId]);
      if (!r) throw notFound(`job ${id}`);
      jobMachine.assert(r.state as JobState, 'cancelled', `job ${id}`);
      await c.run(`UPDATE jobs SET state = 'cancelled', reason = 'cancelled by user', updated_at = $1, finished_at = $1, not_before = NULL WHERE id = $2`, [now, id]);
      return mapJob({ ...r, state: 'cancelled', reason: 'cancelled by user', updated_at: now, finished_at: now, not_before: null });
    });
  }

  async cancelBatch(projectId: number, batchId: number, now: Millis): Promise<number> {
    const range = await batchRange(this.db, batchId);
    if (!range) return 0;
    // In a transaction of its own, so that losing a deadlock (with a claim or a sweep that
    // locks some of these jobs in another order) runs it again.
    return this.tx((c) => c.run(
      `UPDATE jobs SET state = 'cancelled', reason = 'batch cancelled by user', updated_at = $1, finished_at = $1, not_before = NULL
       WHERE id BETWEEN $2 AND $3 AND batch_id = $4 AND project_id = $5 AND state IN (${CANCELLABLE_SQL})`,
      [now, range.first, range.last, batchId, projectId],
    ));
  }

  async getBatch(projectId: number, id: number): Promise<Batch | null> {
    const r = await this.db.one('SELECT * FROM batches WHERE id = $1 AND project_id = $2', [id, projectId]);
    return r ? mapBatch(r) : null;
  }

  async listBatches(projectId: number, page: Page): Promise<Batch[]> {
    const rows = await this.db.all('SELECT * FROM batches WHERE project_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3', [
      projectId, page.beforeId ?? Number.MAX_SAFE_INTEGER, page.limit,
    ]);
    return rows.map(mapBatch);
  }

  async batchCounts(batchId: number): Promise<StateCounts> {
    const counts = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as StateCounts;
    const b = await this.db.one('SELECT project_id, first_job_id, size FROM batches WHERE id = $1', [batchId]);
    if (!b || b.first_job_id === null) return counts;
    const rows = await this.db.all('SELECT state, count(*) AS n FROM jobs WHERE project_id = $1 AND id BETWEEN $2 AND $3 GROUP BY state', [
      b.project_id, b.first_job_id, (b.first_job_id as number) + (b.size as number) - 1,
    ]);
    for (const r of rows) counts[r.state as JobState] = r.n as number;
    return counts;
  }

  async countJobs(projectId: number, appName?: string): Promise<StateCounts> {
    const counts = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as StateCounts;
    // One aggregate over the index jobs_by_project_state (project_id, state, id); for one app,
    // over a project_id index (jobs_by_project_app or that one) and the rows.
    const rows = appName === undefined
      ? await this.db.all('SELECT state, count(*) AS n FROM jobs WHERE project_id = $1 GROUP BY state', [projectId])
      : await this.db.all('SELECT state, count(*) AS n FROM jobs WHERE project_id = $1 AND app_name = $2 GROUP BY state', [projectId, appName]);
    for (const r of rows) counts[r.state as JobState] = Number(r.n);
    return counts;
  }

  // ── blobs ─────────────────────────────────────────────────────────────────

  async recordBlob(projectId: number, blob: BlobRecord): Promise<void> {
    await this.db.run('INSERT INTO blob_refs (project_id, sha256, size, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING', [
      projectId, blob.sha256, blob.size, blob.createdAt,
    ]);
  }

  async getBlobRef(projectId: number, sha256: string): Promise<BlobRecord | null> {
    const r = await this.db.one('SELECT * FROM blob_refs WHERE project_id = $1 AND sha256 = $2', [projectId, sha256]);
    return r ? { sha256: r.sha256 as string, size: r.size as number, createdAt: r.created_at as number } : null;
  }

  async missingBlobs(projectId: number, sha256s: string[]): Promise<string[]> {
    const wanted = [...new Set(sha256s)];
    if (wanted.length === 0) return [];
    const held = new Set((await this.db.all('SELECT sha256 FROM blob_refs WHERE project_id = $1 AND sha256 = ANY($2::text[])', [projectId, wanted])).map((r) => r.sha256 as string));
    return wanted.filter((s) => !held.has(s));
  }

  // ── sites and hosts ─────────────────────────────────────────────────────

  async createSite(name: string, now: Millis): Promise<Site> {
    try {
      const id = await this.db.value<number>('INSERT INTO sites (name, created_at) VALUES ($1, $2) RETURNING id', [name, now]);
      return { id: id!, name, createdAt: now, allowCidrs: [] };
    } catch (e) {
      throw uniqueViolation(e, () => alreadyExists(`site "${name}"`, 'name'));
    }
  }

  async getSiteByName(name: string): Promise<Site | null> {
    const r = await this.db.one('SELECT * FROM sites WHERE name = $1', [name]);
    return r ? mapSite(r) : null;
  }

  async getSite(id: number): Promise<Site | null> {
    const r = await this.db.one('SELECT * FROM sites WHERE id = $1', [id]);
    return r ? mapSite(r) : null;
  }

  async putSite(name: string, allowCidrs: string[], now: Millis): Promise<Site> {
    const r = await this.db.one(
      'INSERT INTO sites (name, created_at, allow_cidrs) VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET allow_cidrs = excluded.allow_cidrs RETURNING *',
      [name, now, JSON.stringify(allowCidrs)],
    );
    return mapSite(r!);
  }

  async listSites(): Promise<SiteSummary[]> {
    const rows = await this.db.all(
      `SELECT s.*,
         (SELECT count(*) FROM hosts h WHERE h.site_id = s.id AND h.state = 'active') AS active_hosts,
         (SELECT count(*) FROM hosts h WHERE h.site_id = s.id AND h.state = 'revoked') AS revoked_hosts
       FROM sites s ORDER BY s.name`,
    );
    return rows.map((r) => ({ ...mapSite(r), activeHosts: r.active_hosts as number, revokedHosts: r.revoked_hosts as number }));
  }

  async createHost(h: Omit<Host, 'id' | 'createdAt' | 'lastSeenAt' | 'state' | 'labels' | 'pace' | 'owner'> & { labels?: Record<string, string>; owner?: string | null }, now: Millis): Promise<Host> {
    const labels = h.labels ?? {};
    const owner = h.owner ?? null;
    const id = await this.db.value<number>(
      `INSERT INTO hosts (site_id, name, state, resources, platform, labels, owner, created_at) VALUES ($1, $2, 'active', $3, $4, $5, $6, $7) RETURNING id`,
      [h.siteId, h.name, JSON.stringify(h.resources), h.platform, JSON.stringify(labels), owner, now],
    );
    return { ...h, labels, owner, id: id!, state: 'active', createdAt: now, lastSeenAt: null, pace: null };
  }

  async setHostLabels(hostId: number, labels: Record<string, string>): Promise<void> {
    await this.db.run('UPDATE hosts SET labels = $1 WHERE id = $2', [JSON.stringify(labels), hostId]);
  }

  async createEnrollToken(t: EnrollTokenRecord): Promise<void> {
    await this.db.run(
      'INSERT INTO enroll_tokens (id, site_id, secret_hash, label, uses_left, expires_at, revoked_at, created_at, owner) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)',
      [t.id, t.siteId, t.secretHash, t.label, t.usesLeft, t.expiresAt, t.revokedAt, t.createdAt, t.owner],
    );
  }

  async getEnrollToken(id: string): Promise<EnrollTokenRecord | null> {
    const r = await this.db.one('SELECT * FROM enroll_tokens WHERE id = $1', [id]);
    return r ? mapEnrollToken(r) : null;
  }

  async listEnrollTokens(): Promise<EnrollTokenSummary[]> {
    const rows = await this.db.all(
      `SELECT e.id, e.site_id, e.label, e.uses_left, e.expires_at, e.revoked_at, e.created_at, e.owner, s.name AS site_name
       FROM enroll_tokens e JOIN sites s ON s.id = e.site_id ORDER BY e.created_at DESC, e.id`,
    );
    return rows.map(mapEnrollTokenSummary);
  }

  async revokeEnrollToken(id: string, now: Millis): Promise<boolean> {
    return (await this.db.run('UPDATE enroll_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL', [now, id])) === 1;
  }

  async enrollHost(req: EnrollRequest, now: Millis): Promise<{ host: Host; replayed: boolean }> {
    // The same enrolment sent to two servers at once: the second insert of the credential fails
    // unique, and its rerun finds the first one's host (a replay).
    return this.tx(async (c) => {
      // The enrolment token first: a concurrent enrolment of the same credential commits before
      // this one reads, so it is seen as a replay rather than spending another use.
      const row = await c.one('SELECT * FROM enroll_tokens WHERE id = $1 FOR UPDATE', [req.enrollTokenId]);
      const prior = await c.one('SELECT * FROM tokens WHERE id = $1', [req.credential.id]);
      if (prior) {
        const same = prior.kind === 'host' && Buffer.compare(prior.secret_hash as Buffer, req.credential.secretHash) === 0;
        if (!same) throw new BoxgridError('conflict', 'this credential id is already enrolled with another secret', { field: 'credentialId' });
        const host = await hostRow(c, prior.subject_id as number);
        if (host) return { host, replayed: true };
      }
      const t = row ? mapEnrollToken(row) : null;
      if (!t || t.revokedAt !== null) throw new BoxgridError('unauthenticated', 'the enrolment token is not valid (unknown or revoked)');
      if (t.expiresAt !== null && t.expiresAt <= now) throw new BoxgridError('unauthenticated', 'the enrolment token has expired');
      if (t.usesLeft !== null && t.usesLeft <= 0) throw new BoxgridError('unauthenticated', 'the enrolment token has no uses left');
      if (t.usesLeft !== null) await c.run('UPDATE enroll_tokens SET uses_left = uses_left - 1 WHERE id = $1', [t.id]);
      const hostId = (await c.value<number>(
        `INSERT INTO hosts (site_id, name, state, resources, platform, owner, created_at) VALUES ($1, $2, 'active', $3, $4, $5, $6) RETURNING id`,
        [t.siteId, req.host.name, JSON.stringify(req.host.resources), req.host.platform, t.owner, now],
      ))!;
      await insertToken(c, { ...req.credential, kind: 'host', subjectId: hostId });
      return { host: (await hostRow(c, hostId))!, replayed: false };
    }, new Set([...RETRYABLE, UNIQUE_VIOLATION]));
  }

  async getHost(id: number): Promise<Host | null> {
    return hostRow(this.db, id);
  }

  async listHosts(): Promise<HostSummary[]> {
    const rows = await this.db.all(
      `SELECT h.*, s.name AS site_name,
         (SELECT count(*) FROM tasks t WHERE t.host_id = h.id AND t.state IN (${ACTIVE_TASK_SQL})) AS active_tasks
       FROM hosts h JOIN sites s ON s.id = h.site_id ORDER BY h.id`,
    );
    return rows.map((r) => ({ ...mapHost(r), siteName: r.site_name as string, activeTasks: r.active_tasks as number }));
  }

  async revokeHost(hostId: number, now: Millis): Promise<HostRevocation | null> {
    const { result, passes } = await this.tx(async (c) => {
      // The host's row first, as each of its own calls takes it: a report or heartbeat of the
      // host runs wholly before or after this.
      const hostRow0 = await c.one('SELECT * FROM hosts WHERE id = $1 FOR UPDATE', [hostId]);
      if (!hostRow0) return { result: null, passes: [] };
      const before = mapHost(hostRow0);
      if (before.state === 'revoked') return { result: { host: before, changed: false, abortedTasks: [], requeuedJobs: [] }, passes: [] };
      hostMachine.assert(before.state, 'revoked', `host ${hostId}`);
      await c.run(`UPDATE hosts SET state = 'revoked', reserved_job = NULL, reserved_at = NULL WHERE id = $1`, [hostId]);
      await c.run(`UPDATE tokens SET revoked_at = $1 WHERE kind = 'host' AND subject_id = $2 AND revoked_at IS NULL`, [now, hostId]);
      const rows = (await c.all(
        `UPDATE tasks SET state = 'aborted', ended_at = $1, reason = $2, outcome = '{"kind":"aborted"}'
         WHERE host_id = $3 AND state IN (${ACTIVE_TASK_SQL}) RETURNING *`,
        [now, HOST_REVOKED, hostId],
      )).sort((a, b) => (a.id as number) - (b.id as number));
      const jobIds = [...new Set(rows.map((r) => r.job_id as number))];
      // In id order, as every other call that locks several jobs.
      const jobRows = await c.all('SELECT * FROM jobs WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE', [jobIds]);
      const byId = new Map(jobRows.map((j) => [j.id as number, j]));
      const passes: Array<[number, number] | null> = [];
      for (const row of rows) passes.push(await this.chargeChange(c, row, byId.get(row.job_id as number)!, now - (row.created_at as number)));
      const requeuedJobs: Job[] = [];
      for (const jobId of jobIds) {
        const job = mapJob(byId.get(jobId)!);
        if (job.quorum > 1 && job.state === 'running') {
          // A replicated job wants other replicas in place of the host's (a failure only at its limit).
          const after = await decide(c, job, judge(await replicaViews(c, job.id), job.replicasWanted, ruleFor(job, await this.appRow(c, job.appId))), [], now);
          if (after.state !== job.state) requeuedJobs.push(after); // ended, at its limit
          continue;
        }
        const othersActive = (await c.value<number>(`SELECT count(*) FROM tasks WHERE job_id = $1 AND state IN (${ACTIVE_TASK_SQL})`, [jobId]))!;
        if (job.state !== 'running' || othersActive > 0) continue; // ended already, or another task carries it
        const attempts = attemptsAfterRevoke(job, rows.filter((r) => r.job_id === jobId).map((r) => r.attempt as number));
        requeuedJobs.push(await moveJob(c, job, 'queued', REQUEUED_AFTER_REVOKE, attempts, now, DEFAULT_SCHEDULING, false));
      }
      const host = (await hostRow(c, hostId))!;
      return { result: { host, changed: true, abortedTasks: rows.map(mapTask), requeuedJobs }, passes };
    });
    const charges = new Map<number, number>();
    for (const p of passes) if (p !== null && p[1] !== 0) charges.set(p[0], (charges.get(p[0]) ?? 0) + p[1]);
    if (charges.size > 0) await this.recordStats({ passes: [...charges].map(([projectId, charge]) => ({ projectId, floor: -Infinity, charge })), learned: null, clock: null });
    return result;
  }

  // ── workflows ───────────────────────────────────────────────────────────

  async createWorkflow(w: NewWorkflow, idempotency: { key: string; requestHash: string } | null): Promise<{ workflow: WorkflowRecord; replayed: boolean }> {
    // The same key sent to two servers at once: the second insert waits for the first to commit
    // and fails unique (workflows_idempotency), and its rerun finds the first one's workflow.
    return this.tx(async (c) => {
      const prior = idempotency ? await idempotentWorkflow(c, w.projectId, idempotency) : null;
      if (prior) return { workflow: prior, replayed: true };
      const row = await c.one(
        `INSERT INTO workflows (${WORKFLOW_INSERT_COLUMNS.join(', ')}) VALUES (${WORKFLOW_INSERT_COLUMNS.map((_, i) => `$${i + 1}`).join(', ')}) RETURNING *`,
        workflowInsertValues(w, idempotency),
      );
      return { workflow: mapWorkflow(row!), replayed: false };
    }, new Set([...RETRYABLE, UNIQUE_VIOLATION]));
  }

  async findIdempotentWorkflow(projectId: number, idempotency: { key: string; requestHash: string }): Promise<WorkflowRecord | null> {
    return idempotentWorkflow(this.db, projectId, idempotency);
  }

  async getWorkflow(projectId: number, id: number): Promise<WorkflowRecord | null> {
    const r = await this.db.one('SELECT * FROM workflows WHERE id = $1 AND project_id = $2', [id, projectId]);
    return r ? mapWorkflow(r) : null;
  }

  async listWorkflows(projectId: number, page: Page): Promise<WorkflowRecord[]> {
    const rows = await this.db.all('SELECT * FROM workflows WHERE project_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3', [
      projectId, page.beforeId ?? Number.MAX_SAFE_INTEGER, page.limit,
    ]);
    return rows.map(mapWorkflow);
  }

  async openWorkflows(limit: number, afterId = 0): Promise<Array<{ id: number; projectId: number }>> {
    const rows = await this.db.all(`SELECT id, project_id FROM workflows WHERE state = 'running' AND id > $1 ORDER BY id LIMIT $2`, [afterId, limit]);
    return rows.map((r) => ({ id: r.id as number, projectId: r.project_id as number }));
  }

  async updateWorkflow(id: number, expectedVersion: number, change: WorkflowChange): Promise<WorkflowRecord | null> {
    // One statement: a concurrent update of the same version waits for the row, then finds the
    // version moved on (READ COMMITTED rechecks the WHERE on the new row) and writes nothing.
    const r = await this.db.one(
      'UPDATE workflows SET state = $1, reason = $2, progress = $3, updated_at = $4, ended_at = $5, version = version + 1 WHERE id = $6 AND version = $7 RETURNING *',
      [...workflowChangeValues(change), id, expectedVersion],
    );
    return r ? mapWorkflow(r) : null;
  }

  // ── audit ───────────────────────────────────────────────────────────────

  async appendAudit(e: Omit<AuditEntry, 'id'>): Promise<AuditEntry> {
    const id = await this.db.value<number>(
      'INSERT INTO audit_log (at, actor_user_id, actor_name, action, target, project_id, detail) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id',
      [e.at, e.actorUserId, e.actorName, e.action, e.target, e.projectId, JSON.stringify(e.detail)],
    );
    return { ...e, id: id! };
  }

  async listAudit(filter: AuditFilter, page: Page): Promise<AuditListEntry[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const add = (condition: (n: string) => string, value: unknown) => {
      args.push(value);
      where.push(condition(`$${args.length}`));
    };
    if (filter.action !== undefined) add((n) => `a.action = ${n}`, filter.action);
    if (filter.projectId !== undefined) add((n) => `a.project_id = ${n}`, filter.projectId);
    if (page.beforeId !== undefined) add((n) => `a.id < ${n}`, page.beforeId);
    args.push(page.limit);
    const rows = await this.db.all(
      `SELECT a.*, p.name AS project_name FROM audit_log a LEFT JOIN projects p ON p.id = a.project_id
       ${where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`} ORDER BY a.id DESC LIMIT $${args.length}`,
      args,
    );
    return rows.map(mapAudit);
  }

  // ── the agent protocol ──────────────────────────────────────────────────

  async claimTasks(req: ClaimRequest, now: Millis): Promise<ClaimResult> {
    const { result, stats } = await this.tx(async (c): Promise<{ result: ClaimResult; stats: Stats | null }> => {
      // The host's row, locked until the commit: one claim per host at a time, so a request
      // retried on another server waits for its first try and then, in the next statement (a
      // new snapshot), finds its tasks.
      // A host revoked since its credential was checked gets nothing.
      const host = await c.one(`UPDATE hosts SET last_seen_at = $1 WHERE id = $2 AND state = 'active' RETURNING reserved_job, pace, owner`, [now, req.hostId]);
      if (!host) return { result: { tasks: [], replayed: false }, stats: null };
      // Jobs whose backoff is over go back to their queues, entering them now (JobHead.queuedAt)
      // but in their place (JobHead.submittedAt); the gathering below sees them.
      const prior = await c.all(
        `WITH released AS (
           UPDATE jobs SET updated_at = not_before, not_before = NULL WHERE not_before IS NOT NULL AND not_before <= $3 AND state = 'queued')
         SELECT to_jsonb(t) AS task, to_jsonb(j) AS job FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.host_id = $1 AND t.request_id = $2 ORDER BY t.id`,
        [req.hostId, req.requestId, now],
      );
      if (prior.length > 0) {
        const tasks: ClaimedTask[] = [];
        for (const r of prior) {
          const task = mapTask(r.task as Row);
          if (isActiveTask(task.state)) tasks.push(await this.claimed(c, task, mapJob(r.job as Row)));
        }
        return { result: { tasks, replayed: true }, stats: null };
      }
      const gathered = await this.gatherForClaim(c, req, host, now);
      // The job this host is kept free for is still queued but another claim holds it as a head
      // (and will pass over it: it is reserved here). The plan would take it for started
      // elsewhere and drop the reservation; instead the host takes nothing this time.
      if (gathered.reservedHeld) return { result: { tasks: [], replayed: false }, stats: null };
      const plan = req.plan(gathered.input);
      const replication = req.replication ?? DEFAULT_REPLICATION;
      const tasks: ClaimedTask[] = [];
      // Replicas of running jobs. Another claim may have taken one since the gathering, or given
      // one to another host of this owner: once the job's row is locked (any such claim has
      // committed), the update checks both again in a statement of its own — a snapshot that
      // sees that claim's task — and the pick is skipped.
      for (const pick of plan.picks.filter((p) => p.replica)) {
        if (!(await c.one(`SELECT 1 FROM jobs WHERE id = $1 AND state = 'running' AND replicas_wanted > 0 FOR UPDATE`, [pick.jobId]))) continue;
        const r = await c.one(
          `UPDATE jobs j SET replicas_wanted = replicas_wanted - 1, reason = CASE WHEN replicas_wanted = 1 THEN NULL ELSE reason END
           WHERE id = $1 AND state = 'running' AND replicas_wanted > 0
             AND NOT EXISTS (SELECT 1 FROM tasks t JOIN hosts h ON h.id = t.host_id WHERE t.job_id = j.id AND (t.host_id = $2 OR h.owner = $3))
           RETURNING *`,
          [pick.jobId, req.hostId, host.owner ?? null],
        );
        if (!r) continue;
        const job = mapJob(r);
        const t = await c.one(
          `INSERT INTO tasks (job_id, host_id, attempt, replica, state, runtime, lease_expires_at, created_at, request_id, outputs, charge)
           VALUES ($1, $2, $3, (SELECT max(replica) + 1 FROM tasks WHERE job_id = $1), 'assigned', $4, $5, $6, $7, '{}', $8) RETURNING *`,
          [job.id, req.hostId, job.attempts, pick.runtime, now + req.leaseMs, now, req.requestId, pick.cost],
        );
        tasks.push(await this.claimed(c, mapTask(t!), job));
      }
      const starts = plan.picks.filter((p) => !p.replica);
      const reservation = plan.reserve !== undefined ? plan.reserve : gathered.input.reservation;
      // Speculation is for the tail of the work: not while any job waits, even one backing off
      // or held by another claim.
      if (plan.picks.length === 0 && reservation === null && req.duplicates && !gathered.anyQueued) {
        // Copies one at a time across servers: each claim decides on the copies the others made.
        await c.lock(LOCK.duplicates);
        const running = await this.runningForDuplicates(c, req.hostId, req.duplicates.scan);
        const active = (await c.value<number>(`SELECT count(*) FROM tasks WHERE replica > 0 AND state IN (${ACTIVE_TASK_SQL})`))!;
        for (const pick of req.duplicates.choose(running, active, gathered.input)) {
          const r = await c.one(`SELECT * FROM jobs WHERE id = $1 AND state = 'running' FOR UPDATE`, [pick.jobId]);
          if (!r) continue; // ended since the gathering
          const job = mapJob(r);
          const replica = (await c.value<number>('SELECT max(replica) FROM tasks WHERE job_id = $1', [job.id]))! + 1;
          const t = await c.one(
            `INSERT INTO tasks (job_id, host_id, attempt, replica, state, runtime, lease_expires_at, created_at, request_id, outputs, charge)
             VALUES ($1, $2, $3, $4, 'assigned', $5, $6, $7, $8, '{}', 0) RETURNING *`,
            [job.id, req.hostId, job.attempts, replica, pick.runtime, now + req.leaseMs, now, req.requestId],
          );
          tasks.push(await this.claimed(c, mapTask(t!), job));
        }
      }
      // The picks in one statement. Heads stay locked from the gathering to the commit, so a
      // pick is still queued (a cancel waits for this claim); the state test is a safeguard.
      const started = await c.all(
        `WITH picks AS (SELECT * FROM unnest($1::bigint[], $2::text[], $3::float8[]) WITH ORDINALITY AS u(job_id, runtime, cost, n)),
         started AS (
           UPDATE jobs j SET state = 'running', attempts = j.attempts + 1, reason = NULL, updated_at = $4
           FROM picks p WHERE j.id = p.job_id AND j.state = 'queued' RETURNING j.*),
         created AS (
           INSERT INTO tasks (job_id, host_id, attempt, replica, state, runtime, lease_expires_at, created_at, request_id, outputs, charge)
           SELECT s.id, $5, s.attempts, 0, 'assigned', p.runtime, $6, $4, $7, '{}', p.cost FROM started s JOIN picks p ON p.job_id = s.id ORDER BY p.n
           RETURNING *),
         reserve AS (UPDATE hosts SET reserved_job = $8, reserved_at = $9 WHERE id = $5 AND $10::boolean)
         SELECT to_jsonb(t) AS task, to_jsonb(s) AS job FROM created t JOIN started s ON s.id = t.job_id ORDER BY t.id`,
        [
          starts.map((p) => p.jobId), starts.map((p) => p.runtime), starts.map((p) => p.cost), now, req.hostId, now + req.leaseMs, req.requestId,
          reservation, reservation === null ? null : now, plan.reserve !== undefined,
        ],
      );
      const fresh: ClaimedTask[] = [];
      for (const r of started) fresh.push(await this.claimed(c, mapTask(r.task as Row), mapJob(r.job as Row)));
      await this.replicateAndCount(c, req.hostId, [...fresh, ...tasks], gathered.reliability, replication, req.drawKey, now);
      // Passes as a catch-up and a charge, not values: a report may have settled one meanwhile,
      // and another claim may have caught the same project up to the clock.
      const passes = [...plan.passes].map(([projectId, pass]) => {
        const share = gathered.input.projects.get(projectId);
        const floor = share ? effectivePass(share, gathered.input.virtualTime) : pass;
        return { projectId, floor, charge: pass - floor };
      });
      const clock = plan.virtualTime > gathered.input.virtualTime ? plan.virtualTime : null;
      return {
        result: { tasks: [...tasks, ...fresh], replayed: false },
        stats: passes.length > 0 || clock !== null ? { passes, learned: null, clock } : null,
      };
    });
    if (stats) await this.recordStats(stats);
    return result;
  }

  /**
   * After a claim: jobs of replicated apps that started are replicated as the host's record says
   * (scheduling/replication.ts), and the host's daily quota counts every task handed out — one
   * statement each, from the records the gathering read (the host's row is locked meanwhile).
   */
  private async replicateAndCount(
    c: Conn, hostId: number, claimed: ClaimedTask[], records: Map<number, HostReliability>, o: ReplicationOptions, key: Buffer | undefined, now: Millis,
  ): Promise<void> {
    if (claimed.length === 0) return;
    const replicated = claimed.filter((t) => t.task.replica === 0 && (t.app.replicas > 1 || t.job.quorum !== 1));
    if (replicated.length > 0) {
      const plans = replicated.map((t) => replicationFor(t.app, records.get(t.app.id) ?? NEW_HOST, t.job.id, hostId, o, key));
      const reasons = plans.map((p) => (p.replicas > 1 ? wantingReplicas(p.replicas - 1) : null));
      await c.run('UPDATE jobs j SET quorum = u.quorum, replicas_wanted = u.wanted, reason = u.reason FROM unnest($1::bigint[], $2::int[], $3::int[], $4::text[]) AS u(id, quorum, wanted, reason) WHERE j.id = u.id', [
        replicated.map((t) => t.job.id), plans.map((p) => p.quorum), plans.map((p) => p.replicas - 1), reasons,
      ]);
      replicated.forEach((t, i) => Object.assign(t, { job: { ...t.job, quorum: plans[i]!.quorum, replicasWanted: plans[i]!.replicas - 1, reason: reasons[i]! } }));
    }
    const next = new Map<number, HostReliability>();
    for (const t of claimed) next.set(t.app.id, nextReliability(next.get(t.app.id) ?? records.get(t.app.id) ?? NEW_HOST, 'issued', o, now));
    await c.run(
      `INSERT INTO host_app_health (host_id, app_id, failures, cooldown_until, valid_run, quota, quota_day, issued_today)
       SELECT $1, u.app_id, 0, NULL, u.valid_run, u.quota, u.quota_day, u.issued_today FROM unnest($2::bigint[], $3::int[], $4::int[], $5::int[], $6::int[]) AS u(app_id, valid_run, quota, quota_day, issued_today)
       ON CONFLICT (host_id, app_id) DO UPDATE SET quota_day = excluded.quota_day, issued_today = excluded.issued_today`,
      [hostId, [...next.keys()], [...next.values()].map((r) => r.validRun), [...next.values()].map((r) => r.quota), [...next.values()].map((r) => r.quotaDay), [...next.values()].map((r) => r.issuedToday)],
    );
  }

  private async claimed(c: Conn, task: Task, job: Job): Promise<ClaimedTask> {
    return { task, job, app: await this.appRow(c, job.appId), projectName: await this.projectName(c, job.projectId) };
  }

  private readonly projectNames = new Map<number, string>();

  /** Projects are never renamed: each name is read once. */
  private async projectName(c: Conn, id: number): Promise<string> {
    let name = this.projectNames.get(id);
    if (name === undefined) {
      name = (await c.value<string>('SELECT name FROM projects WHERE id = $1', [id]))!;
      this.projectNames.set(id, name);
    }
    return name;
  }

  /**
   * What the policy decides a claim on, in one statement whatever the number of queues: the
   * queues with eligible jobs by a loose index scan of jobs_queue_heads (as in SQLite), each
   * queue's heads through a LATERAL join, and what else the plan weighs. The heads are locked,
   * and heads another claim holds are skipped: concurrent claims see different jobs instead of
   * racing for the same ones.
   */
  private async gatherForClaim(
    c: Conn, req: ClaimRequest, host: Row, now: Millis,
  ): Promise<{ input: ClaimGathered; reliability: Map<number, HostReliability>; anyQueued: boolean; reservedHeld: boolean }> {
    const s = (await c.one(
      `WITH RECURSIVE q(id) AS (
         SELECT (SELECT min(queue_id) FROM jobs WHERE state = 'queued' AND not_before IS NULL)
         UNION ALL
         SELECT (SELECT min(queue_id) FROM jobs WHERE state = 'queued' AND not_before IS NULL AND queue_id > q.id) FROM q WHERE q.id IS NOT NULL
       ),
       heads AS (
         SELECT qs.id AS queue_id, h.id, h.priority, h.created_at, h.updated_at, h.deadline
         FROM (SELECT id FROM q WHERE id IS NOT NULL LIMIT $1) qs
         CROSS JOIN LATERAL (
           SELECT id, priority, created_at, updated_at, deadline FROM jobs
           WHERE queue_id = qs.id AND state = 'queued' AND not_before IS NULL ORDER BY priority DESC, id LIMIT $2
           FOR UPDATE SKIP LOCKED) h
       ),
       reserved_free AS (SELECT id FROM jobs WHERE id = $6 FOR UPDATE SKIP LOCKED),
       -- Replicas go to hosts that have not run the job, of owners that have not either. Read
       -- without locks (a claim takes only what it picks, and checks again when it does).
       wanting AS (
         SELECT j.id, j.queue_id FROM jobs j WHERE j.replicas_wanted > 0 AND j.state = 'running' AND j.queue_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM tasks t JOIN hosts h ON h.id = t.host_id WHERE t.job_id = j.id AND (t.host_id = $3 OR h.owner = $7))
         ORDER BY j.id LIMIT $8)
       SELECT
         (SELECT coalesce(jsonb_agg(jsonb_build_array(id, queue_id) ORDER BY id), '[]') FROM wanting) AS wanting,
         (SELECT coalesce(jsonb_agg(jsonb_build_array(app_id, valid_run, quota, quota_day, issued_today)), '[]') FROM host_app_health WHERE host_id = $3) AS reliability,
         (SELECT coalesce(jsonb_agg(jsonb_build_array(queue_id, id, priority, created_at, updated_at, deadline) ORDER BY queue_id, priority DESC, id), '[]') FROM heads) AS heads,
         (SELECT coalesce(jsonb_agg(jsonb_build_array(id, estimated_ms, project_id)), '[]') FROM queues WHERE id IN (SELECT queue_id FROM heads)) AS queues,
         (SELECT coalesce(jsonb_agg(jsonb_build_array(id, share_weight, fair_pass)), '[]') FROM projects
            WHERE id IN (SELECT project_id FROM queues WHERE id IN (SELECT queue_id FROM heads))) AS projects,
         (SELECT virtual_time FROM fair_share_clock WHERE id = 1) AS virtual_time,
         (SELECT coalesce(array_agg(reserved_job), '{}') FROM hosts WHERE reserved_job IS NOT NULL AND id != $3 AND last_seen_at >= $4) AS reserved_elsewhere,
         (SELECT coalesce(array_agg(app_id), '{}') FROM host_app_health WHERE host_id = $3 AND cooldown_until > $5) AS cooled,
         -- Read without locks: heads another claim holds are still queued work.
         EXISTS (SELECT 1 FROM jobs WHERE state = 'queued' AND not_before IS NULL)
           OR EXISTS (SELECT 1 FROM jobs WHERE not_before IS NOT NULL AND state = 'queued') AS any_queued,
         (SELECT state = 'queued' AND not_before IS NULL FROM jobs WHERE id = $6) AND NOT EXISTS (SELECT 1 FROM reserved_free) AS reserved_held`,
      // A reservation holds only while its host keeps calling: a host gone silent frees its job.
      [req.maxQueues, req.headsPerQueue, req.hostId, now - req.leaseMs, now, host.reserved_job ?? null, host.owner ?? null, req.replicaScan ?? DEFAULT_REPLICA_SCAN],
    ))!;
    const estimates = new Map((s.queues as Array<[number, number | null, number]>).map(([id, est]) => [id, est]));
    const wanting = s.wanting as Array<[number, number]>;
    const views = await this.queueViews(c, [...new Set([...estimates.keys(), ...wanting.map(([, q]) => q)])], estimates);
    const replicaWork: ReplicaWork[] = wanting.map(([jobId, queueId]) => {
      const { heads: _h, ...view } = views.get(queueId)!;
      return { ...view, jobId };
    });
    const reliability = new Map((s.reliability as Array<[number, number, number | null, number, number]>).map(([appId, validRun, quota, quotaDay, issuedToday]) => [
      appId, { validRun, quota, quotaDay, issuedToday },
    ]));
    const quota = quotaLeft(reliability, req.replication ?? DEFAULT_REPLICATION, now);
    const queues: QueueView[] = [];
    for (const [queueId, jobId, priority, submittedAt, queuedAt, deadline] of s.heads as Array<[number, number, number, number, number, number | null]>) {
      const view = views.get(queueId)!;
      if (view.heads.length === 0) queues.push(view);
      view.heads.push({ jobId, priority, submittedAt, queuedAt, deadline });
    }
    const projects = new Map<number, ProjectShare>(
      (s.projects as Array<[number, number, number]>).map(([projectId, weight, pass]) => [projectId, { projectId, weight, pass }]),
    );
    return {
      reliability,
      input: {
        queues, replicaWork, quota, projects,
        reservation: (host.reserved_job as number | null) ?? null,
        reservedElsewhere: new Set(s.reserved_elsewhere as number[]),
        cooledApps: new Set(s.cooled as number[]),
        pace: (host.pace as number | null) ?? null,
        virtualTime: s.virtual_time as number,
      },
      anyQueued: s.any_queued as boolean,
      reservedHeld: s.reserved_held === true,
    };
  }

  /**
   * Queue placements (fixed for a queue's life, read once) with their learned durations: read
   * fresh, unless the caller read them already (`estimates`).
   */
  private async queueViews(c: Conn, ids: number[], estimates?: Map<number, number | null>): Promise<Map<number, QueueView>> {
    const out = new Map<number, QueueView>();
    const unknown = ids.filter((id) => !this.queueDefs.has(id) || !estimates?.has(id));
    const rows = unknown.length === 0 ? [] : await c.all('SELECT * FROM queues WHERE id = ANY($1::bigint[])', [unknown]);
    const fresh = new Map<number, number | null>(estimates ?? []);
    for (const q of rows) {
      const id = q.id as number;
      fresh.set(id, (q.estimated_ms as number | null) ?? null);
      if (!this.queueDefs.has(id)) {
        const app = await this.appRow(c, q.app_id as number);
        const shape = { cores: q.cores as number, memoryMiB: q.memory_mib as number, diskMiB: q.disk_mib as number, gpus: q.gpus as number };
        this.queueDefs.set(id, { queueId: id, projectId: q.project_id as number, ...placementOf(app, { resources: shape, selector: JSON.parse(q.selector as string) as Record<string, string> }) });
      }
    }
    for (const id of ids) {
      const def = this.queueDefs.get(id);
      if (def) out.set(id, { ...def, estimatedMs: fresh.get(id) ?? null, heads: [] });
    }
    return out;
  }

  private readonly queueDefs = new Map<number, Omit<QueueView, 'estimatedMs' | 'heads'>>();

  /** The oldest active tasks of running jobs, with what speculation decides on (see SqliteStore). */
  private async runningForDuplicates(c: Conn, hostId: number, scan: number): Promise<RunningTask[]> {
    const rows = await c.all(
      `WITH active AS (SELECT id, job_id, host_id, created_at, progress FROM tasks WHERE state IN (${ACTIVE_TASK_SQL}))
       SELECT a.id, a.job_id, a.created_at, a.progress, j.queue_id, h.pace AS host_pace, count(*) OVER (PARTITION BY a.job_id) AS copies
       FROM active a JOIN jobs j ON j.id = a.job_id LEFT JOIN hosts h ON h.id = a.host_id
       WHERE j.state = 'running' AND j.queue_id IS NOT NULL AND j.quorum = 1 AND j.replicas_wanted = 0
         AND a.job_id NOT IN (SELECT job_id FROM tasks WHERE host_id = $1 AND state IN (${ACTIVE_TASK_SQL}))
       ORDER BY a.created_at, a.id LIMIT $2`,
      [hostId, scan],
    );
    const views = await this.queueViews(c, [...new Set(rows.map((r) => r.queue_id as number))]);
    const out: RunningTask[] = [];
    for (const r of rows) {
      const { queueId: _q, projectId: _p, heads: _h, ...placement } = views.get(r.queue_id as number)!;
      // A copy's result would be accepted alone: never for an app whose results need a quorum.
      if ((await this.appRow(c, placement.appId)).replicas > 1) continue;
      out.push({
        ...placement, jobId: r.job_id as number, taskId: r.id as number, startedAt: r.created_at as number,
        progress: (r.progress as number | null) ?? null, copies: r.copies as number, hostPace: (r.host_pace as number | null) ?? null,
      });
    }
    return out;
  }

  private readonly apps = new Map<number, App>();

  /** App versions are immutable: each is read once. */
  private async appRow(c: Conn, id: number): Promise<App> {
    let a = this.apps.get(id);
    if (!a) {
      a = mapApp((await c.one('SELECT * FROM apps WHERE id = $1', [id]))!);
      this.apps.set(id, a);
    }
    return a;
  }

  async heartbeat(req: HeartbeatRequest, now: Millis): Promise<HeartbeatResult> {
    return this.tx(async (c): Promise<HeartbeatResult> => {
      await c.run('UPDATE hosts SET last_seen_at = $1 WHERE id = $2', [now, req.hostId]);
      const leases: HeartbeatResult['leases'] = [];
      const abort: HeartbeatResult['abort'] = [];
      const lease = now + req.leaseMs;
      // The host's tasks, locked (in id order) so that a report or a sweep on another server
      // cannot end one between this check and the lease extension.
      const rows = await c.all(
        `SELECT t.id, t.state AS task_state, t.reason AS task_reason, j.state AS job_state
         FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = ANY($1::bigint[]) AND t.host_id = $2 ORDER BY t.id FOR UPDATE OF t`,
        [req.tasks.map((t) => t.taskId), req.hostId],
      );
      const byId = new Map(rows.map((r) => [r.id as number, r]));
      const live: HeartbeatRequest['tasks'] = [];
      for (const report of req.tasks) {
        const r = byId.get(report.taskId);
        const why = !r
          ? 'the server knows no such task of this host'
          : !isActiveTask(r.task_state as TaskState)
            ? `the task is ${r.task_state as string}${r.task_reason ? ` (${r.task_reason as string})` : ''}`
            : r.job_state !== 'running'
              ? `its job is ${r.job_state as string}`
              : null;
        if (why !== null) abort.push({ taskId: report.taskId, reason: why });
        else {
          live.push(report);
          leases.push({ taskId: report.taskId, leaseExpiresAt: lease });
        }
      }
      if (live.length > 0) {
        await c.run(
          `UPDATE tasks t SET lease_expires_at = $1, state = 'running', started_at = coalesce(t.started_at, $2),
             progress = coalesce(u.progress, t.progress), usage = coalesce(u.usage, t.usage)
           FROM unnest($3::bigint[], $4::float8[], $5::text[]) AS u(id, progress, usage) WHERE t.id = u.id`,
          [lease, now, live.map((t) => t.taskId), live.map((t) => t.progress), live.map((t) => (t.usage ? JSON.stringify(t.usage) : null))],
        );
      }
      for (const report of live) if (report.log) await appendLog(c, report.taskId, report.log);
      return { leases, abort };
    });
  }

  async reportTask(req: ReportRequest, now: Millis): Promise<ReportResult> {
    const { result, stats } = await this.tx(async (c): Promise<{ result: ReportResult; stats: Stats | null }> => {
      // The host's row, locked until the commit: its calls run one at a time, so its health
      // for the app and its pace, read below, are not raced by another of its reports.
      const hostRow = await c.one('UPDATE hosts SET last_seen_at = $1 WHERE id = $2 RETURNING *', [now, req.hostId]);
      const locked = await c.one(
        'SELECT to_jsonb(t) AS task, to_jsonb(j) AS job FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = $1 AND t.host_id = $2 FOR UPDATE OF t, j',
        [req.taskId, req.hostId],
      );
      if (!locked || !hostRow) throw notFound(`task ${req.taskId}`);
      const row = locked.task as Row;
      const jobRow = locked.job as Row;
      const task = mapTask(row);
      const job = mapJob(jobRow);
      const late = task.state === 'lost';
      if (!isActiveTask(task.state)) {
        if (row.report_hash === req.reportHash) return { result: { task, job, jobStateBefore: job.state, replayed: true }, stats: null };
        if (late && jobMachine.isTerminal(job.state)) {
          throw new BoxgridError('lease_expired', `task ${task.id}'s lease expired before its report; the task was counted lost and its job is ${job.state}`);
        }
        if (!late) throw new BoxgridError('conflict', `task ${task.id} was already reported (${task.state}) with a different result`);
      }
      const app = await this.appRow(c, job.appId);
      const queueId = (jobRow.queue_id as number | null) ?? null;
      // After the locks, so in a snapshot that has every sibling task's latest state (their
      // reports and copies lock the job row too).
      const info = (await c.one(
        `SELECT
           (SELECT count(*) FROM tasks WHERE job_id = $1 AND id != $2 AND state IN (${ACTIVE_TASK_SQL})) AS others,
           -- In host order: host_app_health rows are locked in host order everywhere (recordReliability).
           (SELECT coalesce(array_agg(host_id ORDER BY host_id, id), '{}') FROM tasks
              WHERE job_id = $1 AND state = 'failed' AND host_id != $3 AND outcome NOT LIKE '{"kind":"aborted"%') AS failed_on,
           (SELECT share_weight FROM projects WHERE id = $4) AS weight,
           (SELECT estimated_ms FROM queues WHERE id = $5) AS typical,
           (SELECT jsonb_build_array(failures, cooldown_until, quota) FROM host_app_health WHERE host_id = $3 AND app_id = $6) AS health`,
        [job.id, task.id, req.hostId, job.projectId, queueId, job.appId],
      ))!;
      const replicated = job.quorum > 1;
      let verdict: Verdict | null = null;
      let s: Settlement;
      if (replicated) {
        const replicas = withReport(await replicaViews(c, job.id), task.id, req.outcome, req.outputs, late);
        if (job.state === 'running') verdict = judge(replicas, job.replicasWanted, ruleFor(job, app));
        s = settleReplica(req.outcome, job.state, late, verdict);
      } else {
        s = settle(req.outcome, job, job.maxAttempts ?? app.maxAttempts, { othersActive: info.others as number, late });
      }
      taskMachine.assert(task.state, s.task, `task ${task.id}`);
      // The task whose outputs are the job's result, when this report decides it.
      const resultTask = verdict?.kind === 'accepted' ? verdict.canonical : !replicated && s.job === 'succeeded' ? task.id : null;
      const exitCode = req.outcome.kind === 'succeeded' ? 0 : req.outcome.kind === 'failed' ? req.outcome.exitCode : null;
      const reason = req.outcome.kind === 'succeeded' ? null : describeOutcome(req.outcome);
      const after = s.job === null ? job : movedJob(job, s.job, s.reason, s.countsAsAttempt ? job.attempts : job.attempts - 1, now, req.rules, s.backoff);
      // A success teaches the host's pace: from the time the server saw it hold the task, not
      // the duration it reports (see SqliteStore), against the queue's typical duration as this
      // report found it. The host's row is locked, so no other call of it learns meanwhile.
      const learns = req.outcome.kind === 'succeeded' && queueId !== null;
      const pace = learns && job.checkpoint === null ? learnPace((hostRow.pace as number | null) ?? null, now - task.createdAt, (info.typical as number | null) ?? null) : null;
      // The task, its job and the host's pace in one statement.
      const ended = await c.one(
        `WITH ended AS (
           UPDATE tasks SET state = $1, ended_at = $2, exit_code = $3, reason = $4, outcome = $5, duration_ms = $6,
             usage = coalesce($7, usage), outputs = $8, report_hash = $9, started_at = coalesce(started_at, $10) WHERE id = $11 RETURNING *),
         moved AS (
           UPDATE jobs SET state = $12, reason = $13, attempts = $14, updated_at = $15, finished_at = $16, not_before = $17,
             canonical_task_id = coalesce($22::bigint, canonical_task_id) WHERE id = $18 AND $19::boolean),
         paced AS (UPDATE hosts SET pace = $20::float8 WHERE id = $21 AND $20::float8 IS NOT NULL)
         SELECT * FROM ended`,
        [
          s.task, now, exitCode, reason, JSON.stringify(req.outcome), req.durationMs, req.usage ? JSON.stringify(req.usage) : null,
          JSON.stringify(req.outputs), req.reportHash, now - req.durationMs, task.id,
          after.state, after.reason, after.attempts, after.updatedAt, after.finishedAt, after.retryAt, job.id, s.job !== null,
          pace, req.hostId, resultTask,
        ],
      );
      if (req.log) await appendLog(c, task.id, req.log);
      let judged = resultTask === null ? after : { ...after, canonicalTaskId: resultTask };
      const replication = req.rules.replication;
      const events: ReliabilityChange[] = isError(req.outcome) ? [{ hostId: req.hostId, event: 'error' }] : [];
      if (verdict !== null) {
        judged = await applyVerdict(c, judged, verdict, events);
      } else if (replicated && req.outcome.kind === 'succeeded' && job.canonicalTaskId !== null) {
        // A replica that succeeds after its job was decided is checked against the replicas found valid.
        const valid = (await c.all(`SELECT outputs FROM tasks WHERE job_id = $1 AND validity = 'valid'`, [job.id])).map((r) => JSON.parse(r.outputs as string) as Record<string, OutputFile>);
        const validity = lateValidity(req.outputs, valid, app.validator !== null);
        if (validity !== null) {
          await c.run('UPDATE tasks SET validity = $1 WHERE id = $2', [validity, task.id]);
          events.push({ hostId: req.hostId, event: validity });
        }
      } else if (!replicated && req.outcome.kind === 'succeeded' && (info.health as unknown[] | null)?.[2] != null) {
        // An unchecked success restores a quota that errors cut.
        events.push({ hostId: req.hostId, event: 'succeeded' });
      }
      await recordReliability(c, job.appId, events, replication, now);
      let passChange = 0;
      if (!late) {
        if (req.outcome.kind === 'succeeded' && !replicated) {
          const [failures, cooldownUntil] = (info.health as [number, number | null, number | null] | null) ?? [0, null];
          await saveHealth(c, req.hostId, job.appId, { failures, cooldownUntil }, 'succeeded', req.rules, now);
          // The job's earlier failures on other hosts were the hosts', not the job's.
          for (const hostId of info.failed_on as number[]) await recordHealth(c, hostId, job.appId, 'failed_where_others_succeeded', req.rules, now);
        }
        const view = queueId === null ? undefined : (await this.queueViews(c, [queueId], new Map([[queueId, (info.typical as number | null) ?? null]]))).get(queueId);
        // settledPass moves a pass by a difference that does not depend on the pass itself.
        if (view) passChange = settledPass(0, (row.charge as number | null) ?? 0, view.resources, mapHost(hostRow).resources, req.durationMs, info.weight as number);
      }
      const stats: Stats | null = learns || passChange !== 0
        ? {
            passes: passChange === 0 ? [] : [{ projectId: job.projectId, floor: -Infinity, charge: passChange }],
            learned: learns ? { queueId: queueId!, durationMs: req.durationMs } : null, clock: null,
          }
        : null;
      return { result: { task: mapTask(ended!), job: judged, jobStateBefore: job.state, replayed: false }, stats };
    });
    if (stats) await this.recordStats(stats);
    return result;
  }

  /**
   * A task ended: its project pays for the resource-time it really held, less what it was
   * charged. Returned as a change of the project's pass, for the statistics.
   */
  private async chargeChange(c: Conn, task: Row, job: Row, heldMs: number): Promise<[projectId: number, change: number] | null> {
    const queueId = (job.queue_id as number | null) ?? null;
    const host = await hostRow(c, task.host_id as number);
    if (queueId === null || !host) return null;
    const weight = (await c.value<number>('SELECT share_weight FROM projects WHERE id = $1', [job.project_id]))!;
    const view = (await this.queueViews(c, [queueId])).get(queueId)!;
    return [job.project_id as number, settledPass(0, (task.charge as number | null) ?? 0, view.resources, host.resources, heldMs, weight)];
  }

  async getHostTask(hostId: number, taskId: number): Promise<{ task: Task; job: Job } | null> {
    const row = await this.db.one('SELECT * FROM tasks WHERE id = $1 AND host_id = $2', [taskId, hostId]);
    if (!row) return null;
    const task = mapTask(row);
    return { task, job: mapJob((await this.db.one('SELECT * FROM jobs WHERE id = $1', [task.jobId]))!) };
  }

  async recordCheckpoint(hostId: number, taskId: number, sha256: string, now: Millis): Promise<boolean> {
    const n = await this.db.run(
      `UPDATE jobs SET checkpoint = $1, updated_at = $2 WHERE id = (
         SELECT job_id FROM tasks WHERE id = $3 AND host_id = $4 AND state IN (${ACTIVE_TASK_SQL})) AND state = 'running'`,
      [sha256, now, taskId, hostId],
    );
    return n === 1;
  }

  async expireLeases(now: Millis, limit: number, rules: SchedulingOptions): Promise<ExpiredTask[]> {
    const { out, passes } = await this.tx(async (c) => {
      // SKIP LOCKED: a task another server is sweeping (or a report is ending) is left to it.
      const rows = await c.all(
        `SELECT * FROM tasks WHERE state IN (${ACTIVE_TASK_SQL}) AND lease_expires_at < $1 ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED`,
        [now, limit],
      );
      const out: ExpiredTask[] = [];
      const passes: Array<[number, number] | null> = [];
      for (const row of rows) {
        const task = mapTask(row);
        await c.run(`UPDATE tasks SET state = 'lost', ended_at = $1, reason = 'its lease expired: the host stopped reporting' WHERE id = $2`, [now, task.id]);
        const jobRow = (await c.one('SELECT * FROM jobs WHERE id = $1 FOR UPDATE', [task.jobId]))!;
        const job = mapJob(jobRow);
        passes.push(await this.chargeChange(c, row, jobRow, now - task.createdAt));
        const app = await this.appRow(c, job.appId);
        if (job.quorum > 1 && job.state === 'running') {
          // A lost replica: the judge asks for another, or gives up when the limit is reached.
          const after = await decide(c, job, judge(await replicaViews(c, job.id), job.replicasWanted, ruleFor(job, app)), [], now);
          out.push({ taskId: task.id, job: after, jobChanged: after.state !== job.state });
          continue;
        }
        const othersActive = (await c.value<number>(`SELECT count(*) FROM tasks WHERE job_id = $1 AND state IN (${ACTIVE_TASK_SQL})`, [job.id]))!;
        if (job.state !== 'running' || othersActive > 0) {
          out.push({ taskId: task.id, job, jobChanged: false });
          continue;
        }
        const maxAttempts = job.maxAttempts ?? app.maxAttempts;
        const after = job.attempts >= maxAttempts
          ? await moveJob(c, job, 'failed', `its host stopped reporting (attempt ${job.attempts} of ${maxAttempts})`, job.attempts, now, rules, false)
          : await moveJob(c, job, 'queued', `attempt ${job.attempts} lost: its host stopped reporting; retrying`, job.attempts, now, rules, true);
        out.push({ taskId: task.id, job: after, jobChanged: true });
      }
      return { out, passes };
    });
    const charges = new Map<number, number>();
    for (const p of passes) if (p !== null && p[1] !== 0) charges.set(p[0], (charges.get(p[0]) ?? 0) + p[1]);
    if (charges.size > 0) await this.recordStats({ passes: [...charges].map(([projectId, charge]) => ({ projectId, floor: -Infinity, charge })), learned: null, clock: null });
    return out;
  }

  async failPastDeadline(now: Millis, limit: number): Promise<Job[]> {
    const rules = DEFAULT_SCHEDULING; // no backoff: the jobs fail
    return this.tx(async (c): Promise<Job[]> => {
      const rows = await c.all(
        `SELECT * FROM jobs WHERE deadline IS NOT NULL AND deadline <= $1 AND state IN ('queued', 'running') ORDER BY deadline LIMIT $2 FOR UPDATE SKIP LOCKED`,
        [now, limit],
      );
      const out: Job[] = [];
      for (const job of rows.map(mapJob)) {
        out.push(await moveJob(c, job, 'failed', `its deadline passed (${new Date(job.deadline!).toISOString()}) before it finished`, job.attempts, now, rules, false));
      }
      return out;
    });
  }

  async getTaskLog(projectId: number, taskId: number): Promise<TaskLog | null> {
    const r = await this.db.one(
      `SELECT t.id, t.job_id, t.state, l.text, l.end_offset FROM tasks t JOIN jobs j ON j.id = t.job_id
       LEFT JOIN task_logs l ON l.task_id = t.id WHERE t.id = $1 AND j.project_id = $2`,
      [taskId, projectId],
    );
    if (!r) return null;
    return { taskId: r.id as number, jobId: r.job_id as number, state: r.state as TaskState, text: (r.text as string | null) ?? '', endOffset: (r.end_offset as number | null) ?? 0 };
  }

  // ── explain ─────────────────────────────────────────────────────────────

  async jobsAhead(projectId: number, jobId: number, now: Millis, limit: number): Promise<number | null> {
    const job = await this.db.one(`SELECT queue_id, priority FROM jobs WHERE id = $1 AND project_id = $2 AND state = 'queued'`, [jobId, projectId]);
    if (!job || job.queue_id === null) return null;
    const n = (await this.db.value<number>(
      `SELECT (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE queue_id = $1 AND state = 'queued' AND not_before IS NULL AND priority > $2 LIMIT $5) a)
            + (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE queue_id = $1 AND state = 'queued' AND not_before IS NULL AND priority = $2 AND id < $3 LIMIT $5) b)
            + (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE not_before IS NOT NULL AND not_before <= $4 AND queue_id = $1 AND state = 'queued'
                 AND (priority > $2 OR (priority = $2 AND id < $3)) LIMIT $5) c)`,
      [job.queue_id, job.priority, jobId, now, limit],
    ))!;
    return Math.min(Number(n), limit);
  }

  async jobsAwaitingValidator(limit: number): Promise<Array<{ job: Job; app: App; tasks: Task[] }>> {
    const rows = await this.db.all(
      `SELECT to_jsonb(j) AS job, (SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.id), '[]') FROM tasks t WHERE t.job_id = j.id) AS tasks
       FROM jobs j WHERE awaiting_validator = 1 AND state = 'running' ORDER BY id LIMIT $1`,
      [limit],
    );
    const out: Array<{ job: Job; app: App; tasks: Task[] }> = [];
    for (const r of rows) {
      const job = mapJob(r.job as Row);
      out.push({ job, app: await this.tx((c) => this.appRow(c, job.appId)), tasks: (r.tasks as Row[]).map(mapTask) });
    }
    return out;
  }

  async recordValidation(req: { jobId: number; basis: number[]; answer: ValidatorAnswer; rules: SchedulingOptions }, now: Millis): Promise<{ job: Job; stale: boolean } | null> {
    return this.tx(async (c) => {
      const row = await c.one(`SELECT * FROM jobs WHERE id = $1 AND state = 'running' AND awaiting_validator = 1 FOR UPDATE`, [req.jobId]);
      if (!row) return null;
      const job = mapJob(row);
      const app = await this.appRow(c, job.appId);
      const verdict = judgeValidation(await replicaViews(c, job.id), job.replicasWanted, ruleFor(job, app), req.basis, req.answer);
      if (verdict.kind === 'stale') return { job, stale: true };
      await c.run('UPDATE jobs SET awaiting_validator = 0, reason = NULL WHERE id = $1', [job.id]);
      const events: ReliabilityChange[] = [];
      const after = await decide(c, { ...job, awaitingValidator: false, reason: null }, verdict, events, now);
      await recordReliability(c, job.appId, events, req.rules.replication, now);
      return { job: after, stale: false };
    });
  }

  async hostReliability(hostId: number, appId: number): Promise<HostReliability> {
    const r = await this.db.one('SELECT * FROM host_app_health WHERE host_id = $1 AND app_id = $2', [hostId, appId]);
    return r ? mapReliability(r) : NEW_HOST;
  }

  async hostsCoolingDown(appId: number, now: Millis): Promise<number[]> {
    return (await this.db.all('SELECT host_id FROM host_app_health WHERE app_id = $1 AND cooldown_until > $2 ORDER BY host_id', [appId, now])).map((r) => r.host_id as number);
  }

  /** Counted per queue in the two partial indexes that hold the queued jobs (as in SQLite). */
  async demand(now: Millis): Promise<DemandShape[]> {
    const rows = await this.db.all(
      `SELECT q.cores, q.memory_mib, q.disk_mib, q.gpus, q.selector, q.app_id, c.ready, c.backing_off FROM (
         SELECT queue_id, sum(ready) AS ready, sum(backing_off) AS backing_off FROM (
           SELECT queue_id, count(*) AS ready, 0 AS backing_off FROM jobs WHERE state = 'queued' AND not_before IS NULL GROUP BY queue_id
           UNION ALL
           SELECT queue_id, count(*) FILTER (WHERE not_before <= $1), count(*) FILTER (WHERE not_before > $1)
           FROM jobs WHERE not_before IS NOT NULL AND state = 'queued' GROUP BY queue_id
         ) u GROUP BY queue_id
       ) c JOIN queues q ON q.id = c.queue_id`,
      [now],
    );
    const withApps = [];
    for (const row of rows) withApps.push({ row, app: await this.appRow(this.db, row.app_id as number) });
    return demandShapes(withApps);
  }

  /** Counted per queue in the two partial indexes that hold the queued jobs, as `demand` does. */
  async queueDepth(): Promise<QueueDepth[]> {
    const rows = await this.db.all(QUEUE_DEPTH_SQL);
    return rows.map(queueDepthOf);
  }

  async activeTaskCounts(): Promise<{ assigned: number; running: number }> {
    return activeCountsOf(await this.db.all(`SELECT state, count(*) AS n FROM tasks WHERE state IN ('assigned', 'running') GROUP BY state`));
  }

  async countHostsSeen(since: Millis): Promise<number> {
    return Number(await this.db.value('SELECT count(*) FROM hosts WHERE last_seen_at >= $1', [since]));
  }

  async reservedHostFor(jobId: number): Promise<number | null> {
    return (await this.db.value<number>('SELECT id FROM hosts WHERE reserved_job = $1 ORDER BY id LIMIT 1', [jobId])) ?? null;
  }
}

async function insertToken(c: Conn, t: TokenRecord): Promise<void> {
  await c.run('INSERT INTO tokens (id, kind, subject_id, secret_hash, label, created_at, expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)', [
    t.id, t.kind, t.subjectId, t.secretHash, t.label, t.createdAt, t.expiresAt, t.revokedAt,
  ]);
}

async function hostRow(c: Conn, id: number): Promise<Host | null> {
  const r = await c.one('SELECT * FROM hosts WHERE id = $1', [id]);
  return r ? mapHost(r) : null;
}

/** The id range of a batch's jobs (see insertJobs), or null if there is no such batch. */
async function batchRange(c: Conn, batchId: number): Promise<{ first: number; last: number } | null> {
  const r = await c.one('SELECT first_job_id, size FROM batches WHERE id = $1', [batchId]);
  if (!r || r.first_job_id === null) return null;
  const first = r.first_job_id as number;
  return { first, last: first + (r.size as number) - 1 };
}

async function idempotentOutcome(c: Conn, projectId: number, key: string): Promise<{ requestHash: string; result: InsertJobsResult } | null> {
  const prior = await c.one('SELECT request_hash, batch_id, job_id FROM idempotency_keys WHERE project_id = $1 AND key = $2', [projectId, key]);
  if (!prior) return null;
  if (prior.batch_id === null) return { requestHash: prior.request_hash as string, result: { batch: null, jobIds: [prior.job_id as number], replayed: true } };
  const batchId = prior.batch_id as number;
  const batch = mapBatch((await c.one('SELECT * FROM batches WHERE id = $1 AND project_id = $2', [batchId, projectId]))!);
  const range = await batchRange(c, batchId);
  const ids = range
    ? (await c.all('SELECT id FROM jobs WHERE id BETWEEN $1 AND $2 AND batch_id = $3 ORDER BY id', [range.first, range.last, batchId])).map((r) => r.id as number)
    : [];
  return { requestHash: prior.request_hash as string, result: { batch, jobIds: ids, replayed: true } };
}

/** The queue each job of an insert belongs to (see SqliteStore.queueFinder). */
function queueFinder(c: Conn, projectId: number, app: App): (j: JobSpec) => Promise<number> {
  const queueIds = new Map<string, number>();
  let lastResources: object | null = null;
  let lastSelector: object | null = null;
  let lastId = 0;
  return async (j) => {
    if (j.resources === lastResources && j.selector === lastSelector) return lastId;
    const { key, args } = queueKeyOf(app, j);
    let id = queueIds.get(key);
    if (id === undefined) {
      await c.run('INSERT INTO queues (project_id, app_id, cores, memory_mib, disk_mib, gpus, selector) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING', [projectId, ...args]);
      id = (await c.value<number>('SELECT id FROM queues WHERE app_id = $1 AND cores = $2 AND memory_mib = $3 AND disk_mib = $4 AND gpus = $5 AND selector = $6', args))!;
      queueIds.set(key, id);
    }
    lastResources = j.resources;
    lastSelector = j.selector;
    lastId = id;
    return id;
  };
}

/** Adds a chunk of a task's output to its stored tail (see mergeLog); the task row is locked by the caller. */
async function appendLog(c: Conn, taskId: number, chunk: LogChunk): Promise<void> {
  const r = await c.one('SELECT text, end_offset FROM task_logs WHERE task_id = $1', [taskId]);
  const merged = mergeLog(r ? { text: r.text as string, endOffset: r.end_offset as number } : null, chunk);
  if (merged === null) return;
  await c.run(
    'INSERT INTO task_logs (task_id, text, end_offset) VALUES ($1, $2, $3) ON CONFLICT (task_id) DO UPDATE SET text = excluded.text, end_offset = excluded.end_offset',
    [taskId, merged.text, merged.endOffset],
  );
}

/** A job in its next state (checked against the job machine); a requeued one may wait out a backoff. */
function movedJob(job: Job, to: JobState, reason: string | null, attempts: number, now: Millis, rules: SchedulingOptions, backoff: boolean): Job {
  jobMachine.assert(job.state, to, `job ${job.id}`);
  const retryAt = backoff ? retryTime(attempts, rules, now) : null;
  return { ...job, state: to, reason, attempts, updatedAt: now, finishedAt: jobMachine.isTerminal(to) ? now : null, retryAt };
}

/** The job's replicas for the judge (domain/quorum.ts), with who stands behind each. */
async function replicaViews(c: Conn, jobId: number): Promise<ReplicaView[]> {
  // A revoked host's results no longer count.
  const rows = await c.all(`${REPLICA_VIEW_SQL} WHERE t.job_id = $1 AND h.state = 'active' ORDER BY t.id`, [jobId]);
  return rows.map(mapReplicaView);
}

interface ReliabilityChange {
  hostId: number;
  event: ReliabilityEvent;
}

/**
 * Applies the judge's verdict on a running replicated job whose state the report moved
 * already (and, when accepted, its result named): an accepted result marks the replicas valid
 * or invalid, adding the hosts' record changes to `events`; a pending one asks for the replicas
 * it wants.
 */
async function applyVerdict(c: Conn, job: Job, verdict: Verdict, events: ReliabilityChange[]): Promise<Job> {
  if (verdict.kind === 'pending') {
    if (verdict.issue === 0) return job;
    const reason = wantingReplicas(job.replicasWanted + verdict.issue);
    await c.run('UPDATE jobs SET replicas_wanted = replicas_wanted + $1, reason = $2 WHERE id = $3', [verdict.issue, reason, job.id]);
    return { ...job, replicasWanted: job.replicasWanted + verdict.issue, reason };
  }
  if (verdict.kind === 'no_consensus') return job;
  if (verdict.kind === 'validate') {
    await c.run('UPDATE jobs SET awaiting_validator = 1, reason = $1 WHERE id = $2', [AWAITING_VALIDATOR, job.id]);
    return { ...job, awaitingValidator: true, reason: AWAITING_VALIDATOR };
  }
  const marked = await c.all(
    `UPDATE tasks SET validity = CASE WHEN id = ANY($1::bigint[]) THEN 'valid' ELSE 'invalid' END WHERE id = ANY($1::bigint[] || $2::bigint[]) RETURNING host_id, validity`,
    [verdict.valid, verdict.invalid],
  );
  for (const r of marked) events.push({ hostId: r.host_id as number, event: r.validity as 'valid' | 'invalid' });
  await c.run('UPDATE jobs SET replicas_wanted = 0, awaiting_validator = 0, canonical_task_id = $1 WHERE id = $2', [verdict.canonical, job.id]);
  return { ...job, replicasWanted: 0, awaitingValidator: false, canonicalTaskId: verdict.canonical };
}

/**
 * Moves hosts' records with an app (scheduling/replication.ts) on the events of one report:
 * the rows are read locked, in host order (two reports touching the same hosts' rows take
 * them in the same order), and only the columns reports own are written (claims write the
 * day's count).
 */
async function recordReliability(c: Conn, appId: number, events: ReliabilityChange[], o: ReplicationOptions, now: Millis): Promise<void> {
  if (events.length === 0) return;
  const hostIds = [...new Set(events.map((e) => e.hostId))].sort((a, b) => a - b);
  const rows = await c.all('SELECT * FROM host_app_health WHERE app_id = $1 AND host_id = ANY($2::bigint[]) ORDER BY host_id FOR UPDATE', [appId, hostIds]);
  const records = new Map<number, HostReliability>(rows.map((r) => [r.host_id as number, mapReliability(r)]));
  for (const e of events) records.set(e.hostId, nextReliability(records.get(e.hostId) ?? NEW_HOST, e.event, o, now));
  await c.run(
    `INSERT INTO host_app_health (host_id, app_id, failures, cooldown_until, valid_run, quota, quota_day, issued_today)
     SELECT u.host_id, $1, 0, NULL, u.valid_run, u.quota, 0, 0 FROM unnest($2::bigint[], $3::int[], $4::int[]) AS u(host_id, valid_run, quota)
     ON CONFLICT (host_id, app_id) DO UPDATE SET valid_run = excluded.valid_run, quota = excluded.quota`,
    [appId, hostIds, hostIds.map((h) => records.get(h)!.validRun), hostIds.map((h) => records.get(h)!.quota)],
  );
}

/** A verdict reached outside a report (a lost replica, a revoked host, a validator): the job's move, then the verdict. */
async function decide(c: Conn, job: Job, verdict: Verdict, events: ReliabilityChange[], now: Millis): Promise<Job> {
  let after = job;
  if (verdict.kind === 'accepted') after = await moveJob(c, job, 'succeeded', null, job.attempts, now, DEFAULT_SCHEDULING, false);
  if (verdict.kind === 'no_consensus') after = await moveJob(c, job, 'failed', verdict.reason, job.attempts, now, DEFAULT_SCHEDULING, false);
  return applyVerdict(c, after, verdict, events);
}

/** Moves a job to its next state; the job row is locked by the caller. */
async function moveJob(c: Conn, job: Job, to: JobState, reason: string | null, attempts: number, now: Millis, rules: SchedulingOptions, backoff: boolean): Promise<Job> {
  const after = movedJob(job, to, reason, attempts, now, rules, backoff);
  await c.run('UPDATE jobs SET state = $1, reason = $2, attempts = $3, updated_at = $4, finished_at = $5, not_before = $6 WHERE id = $7', [
    after.state, after.reason, after.attempts, after.updatedAt, after.finishedAt, after.retryAt, job.id,
  ]);
  return after;
}

/** A health event of a host for an app, read (locked) and saved. */
async function recordHealth(c: Conn, hostId: number, appId: number, event: 'succeeded' | 'failed_where_others_succeeded', rules: SchedulingOptions, now: Millis): Promise<void> {
  const r = await c.one('SELECT failures, cooldown_until FROM host_app_health WHERE host_id = $1 AND app_id = $2 FOR UPDATE', [hostId, appId]);
  const prev: HostAppHealth = { failures: (r?.failures as number | undefined) ?? 0, cooldownUntil: (r?.cooldown_until as number | null | undefined) ?? null };
  await saveHealth(c, hostId, appId, prev, event, rules, now);
}

/** Saves a host's health for an app after an event, when it changes. */
async function saveHealth(c: Conn, hostId: number, appId: number, prev: HostAppHealth, event: 'succeeded' | 'failed_where_others_succeeded', rules: SchedulingOptions, now: Millis): Promise<void> {
  const next = nextHealth(prev, event, rules, now);
  if (next.failures === prev.failures && next.cooldownUntil === prev.cooldownUntil) return;
  await c.run(
    `INSERT INTO host_app_health (host_id, app_id, failures, cooldown_until) VALUES ($1, $2, $3, $4)
     ON CONFLICT (host_id, app_id) DO UPDATE SET failures = excluded.failures, cooldown_until = excluded.cooldown_until`,
    [hostId, appId, next.failures, next.cooldownUntil],
  );
}

/** The workflow created under the key, read on `c` (createWorkflow's replay in its transaction, and the lookup before it). */
async function idempotentWorkflow(c: Conn, projectId: number, idempotency: { key: string; requestHash: string }): Promise<WorkflowRecord | null> {
  const prior = await c.one('SELECT * FROM workflows WHERE project_id = $1 AND idem_key = $2', [projectId, idempotency.key]);
  return prior ? replayedWorkflow(prior, idempotency.requestHash) : null;
}
