import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { BoxgridError, alreadyExists, notFound } from '../../domain/errors.js';
import type {
  App, AppSpec, AuditEntry, Batch, OutputFile, BlobRecord, EnrollTokenRecord, Host, Job, JobSpec, Millis, Project, Site, StateCounts, Task,
  TokenRecord, User,
} from '../../domain/model.js';
import type { RuntimeKind } from '../../domain/model.js';
import { describeOutcome, settle, type Settlement } from '../../domain/outcomes.js';
import { AWAITING_VALIDATOR, wantingReplicas, isError, judge, lateValidity, judgeValidation, ruleFor, settleReplica, withReport, type ReplicaView, type ValidatorAnswer, type Verdict } from '../../domain/quorum.js';
import { DEFAULT_REPLICATION, NEW_HOST, nextReliability, quotaLeft, replicationFor, type HostReliability, type ReliabilityEvent, type ReplicationOptions } from '../../scheduling/replication.js';
import type { Role } from '../../domain/roles.js';
import { learnDuration, settledPass } from '../../scheduling/fair-share.js';
import { learnPace } from '../../scheduling/pace.js';
import type { ProjectShare } from '../../scheduling/fair-share.js';
import type { SchedulingOptions } from '../../scheduling/options.js';
import type { QueueView, ReplicaWork } from '../../scheduling/plan.js';
import { placementOf } from '../../scheduling/placement.js';
import { nextHealth, type HostAppHealth } from '../../scheduling/retry.js';
import type { RunningTask } from '../../scheduling/speculation.js';
import { ACTIVE_TASK_STATES, JOB_STATES, hostMachine, isActiveTask, jobMachine, taskMachine, type JobState, type TaskState } from '../../domain/states.js';
import { checksum, pendingMigrations, type Migration } from '../migration.js';
import type {
  Bootstrap, ClaimedTask, ClaimGathered, ClaimRequest, ClaimResult, DemandShape, EnrollRequest, QueueDepth, ExpiredTask, HeartbeatRequest, HeartbeatResult, HostSummary,
  InsertJobsRequest, InsertJobsResult, JobFilter, LogChunk, Page, ReportRequest, ReportResult, Store, TaskLog,
} from '../store.js';
import type { AuditFilter, AuditListEntry, EnrollTokenSummary, HostRevocation, SiteSummary } from '../store.js';
import { HOST_REVOKED, REQUEUED_AFTER_REVOKE, attemptsAfterRevoke, mapAudit, mapEnrollTokenSummary, mapSite } from '../rows.js';
import { WORKFLOW_INSERT_COLUMNS, mapWorkflow, replayedWorkflow, workflowChangeValues, workflowInsertValues } from '../rows.js';
import type { NewWorkflow, WorkflowChange, WorkflowRecord } from '../../domain/workflow.js';
import {
  activeCountsOf, demandShapes, QUEUE_DEPTH_SQL, queueDepthOf, queueKeyOf, idempotencyConflict, mapApp, mapBatch, mapEnrollToken, mapHost, mapJob, mapProject, mapTask, mapUser, mergeLog,
  retryTime, specEncoder, mapReliability, mapReplicaView, REPLICA_VIEW_SQL, type Row,
} from '../rows.js';
import { DEFAULT_REPLICA_SCAN } from '../store.js';
import { SQLITE_MIGRATIONS } from './migrations.js';


/**
 * A filter as an index read in id order: the rows of `from` whose columns `eq` equal `args`,
 * with the job's id in column `id`.
 */
interface IdStream {
  from: 'jobs' | 'job_labels';
  id: 'id' | 'job_id';
  eq: string[];
  args: unknown[];
}

function streamWhere(s: IdStream, alias = ''): string {
  return s.eq.map((c) => `${alias}${c} = ?`).join(' AND ');
}

const CANCELLABLE = jobMachine.sourcesOf('cancelled');
const ACTIVE_TASK_SQL = ACTIVE_TASK_STATES.map((s) => `'${s}'`).join(', ');
const JOB_CHUNK = 100;
const ROW_PARAMS = 4;
const LABEL_CHUNK = 250;
const LABEL_PARAMS = 4;
/** Most agent calls committed together (group commit): bounds the latency one group adds. */
const GROUP_MAX = 64;
const CANCELLABLE_SQL = CANCELLABLE.map((s) => `'${s}'`).join(', ');

/**
 * The embedded default store: one SQLite file in WAL mode. better-sqlite3 is synchronous, so
 * each method runs to completion inside one call (a transaction never spans an await) and is
 * wrapped in a Promise to honour the port.
 */
export class SqliteStore implements Store {
  private readonly db: Database.Database;

  constructor(file: string, private readonly migrations: readonly Migration[] = SQLITE_MIGRATIONS) {
    if (file !== ':memory:') mkdirSync(dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    // FULL: a commit is on disk before we answer, so "accepted" means durable.
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
  }

  async migrate(): Promise<{ applied: number[] }> {
    const db = this.db;
    db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version INTEGER PRIMARY KEY, name TEXT NOT NULL, checksum TEXT NOT NULL, applied_at INTEGER NOT NULL)`);
    const done = new Map<number, string>(
      (db.prepare('SELECT version, checksum FROM schema_migrations').all() as Row[]).map((r) => [
        r.version as number,
        r.checksum as string,
      ]),
    );
    const applied: number[] = [];
    for (const m of pendingMigrations(this.migrations, done)) {
      db.transaction(() => {
        db.exec(m.sql);
        db.prepare('INSERT INTO schema_migrations (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)').run(
          m.version, m.name, checksum(m), Date.now(),
        );
      })();
      applied.push(m.version);
    }
    return { applied };
  }

  async ping(): Promise<void> {
    this.stmt('SELECT 1').get();
  }

  async close(): Promise<void> {
    this.flushGroup(); // calls already accepted are committed (or rejected) before the file closes
    if (this.db.open) this.db.close();
  }

  // ── group commit ────────────────────────────────────────────────────────
  //
  // A commit here is an fsync (synchronous=FULL), ~0.4 ms that blocks the event loop, and the
  // agent protocol makes two or more per task. The hot agent calls (claim, heartbeat, report)
  // therefore wait for the end of the event-loop turn and commit together: each runs in its
  // own SAVEPOINT inside one IMMEDIATE transaction, so one call's error rolls back only its own
  // changes, and every promise settles after the single COMMIT — an answer still means durable.

  private group: Array<{ run: () => unknown; resolve: (v: unknown) => void; reject: (e: unknown) => void }> = [];
  private groupScheduled = false;

  private grouped<T>(run: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.group.push({ run, resolve: resolve as (v: unknown) => void, reject });
      if (this.group.length >= GROUP_MAX) this.flushGroup();
      else if (!this.groupScheduled) {
        this.groupScheduled = true;
        setImmediate(() => this.flushGroup());
      }
    });
  }

  private flushGroup(): void {
    this.groupScheduled = false;
    const ops = this.group;
    if (ops.length === 0) return;
    this.group = [];
    const results: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    try {
      this.db.transaction(() => {
        for (const op of ops) {
          try {
            results.push({ ok: true, value: this.db.transaction(op.run)() }); // nested: a savepoint
          } catch (error) {
            results.push({ ok: false, error });
          }
        }
      }).immediate();
    } catch (error) {
      for (const op of ops) op.reject(error); // BEGIN or COMMIT failed: nothing of the group was kept
      return;
    }
    ops.forEach((op, i) => {
      const r = results[i]!;
      if (r.ok) op.resolve(r.value);
      else op.reject(r.error);
    });
  }

  // ── identity ──────────────────────────────────────────────────────────────

  async countUsers(): Promise<number> {
    return (this.stmt('SELECT count(*) AS n FROM users').get() as Row).n as number;
  }

  async createUser(name: string, operator: boolean, now: Millis): Promise<User> {
    try {
      const r = this.stmt('INSERT INTO users (name, operator, created_at) VALUES (?, ?, ?)').run(name, operator ? 1 : 0, now);
      return { id: Number(r.lastInsertRowid), name, operator, createdAt: now };
    } catch (e) {
      throw uniqueViolation(e, () => alreadyExists(`user "${name}"`, 'name'));
    }
  }

  async getUser(id: number): Promise<User | null> {
    return mapUser(this.stmt('SELECT * FROM users WHERE id = ?').get(id) as Row | undefined);
  }

  async getUserByName(name: string): Promise<User | null> {
    return mapUser(this.stmt('SELECT * FROM users WHERE name = ?').get(name) as Row | undefined);
  }

  async createProject(name: string, shareWeight: number, now: Millis): Promise<Project> {
    try {
      const r = this.stmt('INSERT INTO projects (name, share_weight, created_at) VALUES (?, ?, ?)').run(name, shareWeight, now);
      return { id: Number(r.lastInsertRowid), name, shareWeight, createdAt: now };
    } catch (e) {
      throw uniqueViolation(e, () => alreadyExists(`project "${name}"`, 'name'));
    }
  }

  async setShareWeight(projectId: number, shareWeight: number): Promise<void> {
    this.stmt('UPDATE projects SET share_weight = ? WHERE id = ?').run(shareWeight, projectId);
  }

  async getProjectByName(name: string): Promise<Project | null> {
    const r = this.stmt('SELECT * FROM projects WHERE name = ?').get(name) as Row | undefined;
    return r ? mapProject(r) : null;
  }

  async listProjectsFor(user: User): Promise<Array<Project & { role: Role }>> {
    const rows = user.operator
      ? (this.stmt(`SELECT p.*, 'admin' AS role FROM projects p ORDER BY p.name`).all() as Row[])
      : (this.db
          .prepare('SELECT p.*, m.role FROM projects p JOIN memberships m ON m.project_id = p.id WHERE m.user_id = ? ORDER BY p.name')
          .all(user.id) as Row[]);
    return rows.map((r) => ({ ...mapProject(r), role: r.role as Role }));
  }

  async setMembership(projectId: number, userId: number, role: Role): Promise<void> {
    this.db
      .prepare('INSERT INTO memberships (project_id, user_id, role) VALUES (?, ?, ?) ON CONFLICT (project_id, user_id) DO UPDATE SET role = excluded.role')
      .run(projectId, userId, role);
  }

  async getRole(projectId: number, userId: number): Promise<Role | null> {
    const r = this.stmt('SELECT role FROM memberships WHERE project_id = ? AND user_id = ?').get(projectId, userId) as Row | undefined;
    return r ? (r.role as Role) : null;
  }

  async insertToken(t: TokenRecord): Promise<void> {
    this.db
      .prepare('INSERT INTO tokens (id, kind, subject_id, secret_hash, label, created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(t.id, t.kind, t.subjectId, t.secretHash, t.label, t.createdAt, t.expiresAt, t.revokedAt);
  }

  async revokeToken(id: string, now: Millis): Promise<boolean> {
    return this.stmt('UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(now, id).changes === 1;
  }

  async bootstrap(b: Bootstrap, now: Millis): Promise<boolean> {
    return this.db.transaction(() => {
      if ((this.stmt('SELECT count(*) FROM users').pluck().get() as number) > 0) return false;
      const user = this.stmt('INSERT INTO users (name, operator, created_at) VALUES (?, 1, ?)').run(b.operatorName, now);
      const project = this.stmt('INSERT INTO projects (name, share_weight, created_at) VALUES (?, 1, ?)').run(b.projectName, now);
      this.stmt(`INSERT INTO memberships (project_id, user_id, role) VALUES (?, ?, 'admin')`).run(project.lastInsertRowid, user.lastInsertRowid);
      const t = b.token(Number(user.lastInsertRowid));
      this.db
        .prepare('INSERT INTO tokens (id, kind, subject_id, secret_hash, label, created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
        .run(t.id, t.kind, t.subjectId, t.secretHash, t.label, t.createdAt, t.expiresAt, t.revokedAt);
      return true;
    }).immediate();
  }

  async getToken(id: string): Promise<TokenRecord | null> {
    const r = this.stmt('SELECT * FROM tokens WHERE id = ?').get(id) as Row | undefined;
    if (!r) return null;
    return {
      id: r.id as string,
      kind: r.kind as TokenRecord['kind'],
      subjectId: r.subject_id as number,
      secretHash: r.secret_hash as Buffer,
      label: r.label as string,
      createdAt: r.created_at as number,
      expiresAt: (r.expires_at as number | null) ?? null,
      revokedAt: (r.revoked_at as number | null) ?? null,
    };
  }

  // ── apps ──────────────────────────────────────────────────────────────────

  async createAppVersion(projectId: number, spec: AppSpec, mode: 'new' | 'version', now: Millis): Promise<App> {
    return this.db.transaction(() => {
      const latest = this.db
        .prepare('SELECT max(version) AS v FROM apps WHERE project_id = ? AND name = ?')
        .get(projectId, spec.name) as Row;
      const current = (latest.v as number | null) ?? 0;
      if (mode === 'new' && current > 0) throw alreadyExists(`app "${spec.name}"`, 'name');
      if (mode === 'version' && current === 0) throw notFound(`app "${spec.name}"`);
      const version = current + 1;
      const r = this.db
        .prepare('INSERT INTO apps (project_id, name, version, spec, created_at) VALUES (?, ?, ?, ?, ?)')
        .run(projectId, spec.name, version, JSON.stringify(spec), now);
      return { ...spec, id: Number(r.lastInsertRowid), projectId, version, createdAt: now };
    }).immediate();
  }

  async getApp(projectId: number, name: string, version?: number): Promise<App | null> {
    const r = (version === undefined
      ? this.stmt('SELECT * FROM apps WHERE project_id = ? AND name = ? ORDER BY version DESC LIMIT 1').get(projectId, name)
      : this.stmt('SELECT * FROM apps WHERE project_id = ? AND name = ? AND version = ?').get(projectId, name, version)) as
      | Row
      | undefined;
    return r ? mapApp(r) : null;
  }

  async listApps(projectId: number): Promise<App[]> {
    const rows = this.db
      .prepare(
        `SELECT a.* FROM apps a JOIN (SELECT name, max(version) AS v FROM apps WHERE project_id = ? GROUP BY name) l
           ON a.name = l.name AND a.version = l.v WHERE a.project_id = ? ORDER BY a.name`,
      )
      .all(projectId, projectId) as Row[];
    return rows.map(mapApp);
  }

  async listAppVersions(projectId: number, name: string): Promise<App[]> {
    return (this.stmt('SELECT * FROM apps WHERE project_id = ? AND name = ? ORDER BY version').all(projectId, name) as Row[]).map(mapApp);
  }

  // ── jobs and batches ─────────────────────────────────────────────────────

  async insertJobs(req: InsertJobsRequest): Promise<InsertJobsResult> {
    const { projectId, app, now } = req;
    return this.db.transaction((): InsertJobsResult => {
      if (req.idempotency) {
        const prior = this.idempotentOutcome(projectId, req.idempotency.key);
        if (prior) {
          if (prior.requestHash !== req.idempotency.requestHash) throw idempotencyConflict();
          return prior.result;
        }
      }
      let batch: Batch | null = null;
      if (req.batch) {
        const r = this
          .stmt('INSERT INTO batches (project_id, app_name, app_version, size, labels, created_at) VALUES (?, ?, ?, ?, ?, ?)')
          .run(projectId, app.name, app.version, req.jobs.length, JSON.stringify(req.batch.labels), now);
        batch = {
          id: Number(r.lastInsertRowid), projectId, appName: app.name, appVersion: app.version,
          size: req.jobs.length, labels: req.batch.labels, createdAt: now,
        };
      }
      const batchId = batch?.id ?? null;
      const jobIds = this.insertJobRows(projectId, app, batchId, req.jobs, now);
      if (batchId !== null && jobIds.length > 0) {
        // A batch's jobs are the ids first_job_id .. first_job_id + size - 1: batch queries use the range.
        const first = jobIds[0]!;
        if (jobIds[jobIds.length - 1] !== first + jobIds.length - 1) throw new Error('job ids of a batch are not consecutive');
        this.stmt('UPDATE batches SET first_job_id = ? WHERE id = ?').run(first, batchId);
      }
      if (req.idempotency) {
        this.stmt('INSERT INTO idempotency_keys (project_id, key, request_hash, batch_id, job_id, created_at) VALUES (?, ?, ?, ?, ?, ?)').run(
          projectId, req.idempotency.key, req.idempotency.requestHash, batchId, batchId === null ? jobIds[0] ?? null : null, now,
        );
      }
      return { batch, jobIds, replayed: false };
    }).immediate();
  }

  /**
   * Multi-row INSERTs of JOB_CHUNK rows: per-statement overhead, not SQLite, dominates a
   * row-at-a-time loop (measured: 100k jobs in ~0.75 s row by row, ~0.25 s chunked), and binding
   * is a large share of the rest, so values all rows share are bound once per statement. Labels
   * go the same way, LABEL_CHUNK rows per statement.
   * Inside one write transaction rowids are consecutive, so the ids follow from the last one.
   */
  private insertJobRows(projectId: number, app: App, batchId: number | null, jobs: JobSpec[], now: Millis): number[] {
    const ids = new Array<number>(jobs.length);
    const encode = specEncoder();
    // Columns the whole insert shares are bound once per statement, by name.
    const shared = { projectId, appId: app.id, appName: app.name, appVersion: app.version, batchId, now };
    const queueOf = this.queueFinder(projectId, app);
    for (let start = 0; start < jobs.length; start += JOB_CHUNK) {
      const n = Math.min(JOB_CHUNK, jobs.length - start);
      const params = new Array<unknown>(n * ROW_PARAMS);
      for (let k = 0; k < n; k++) {
        const j = jobs[start + k]!;
        const at = k * ROW_PARAMS;
        params[at] = j.priority;
        params[at + 1] = j.deadline;
        params[at + 2] = encode(j);
        params[at + 3] = queueOf(j);
      }
      const last = Number(this.jobInsert(n).run(params, shared).lastInsertRowid);
      for (let k = 0; k < n; k++) ids[start + k] = last - n + 1 + k;
    }
    this.insertLabelRows(projectId, jobs, ids);
    return ids;
  }

  private insertLabelRows(projectId: number, jobs: JobSpec[], ids: number[]): void {
    let params = new Array<unknown>(LABEL_CHUNK * LABEL_PARAMS);
    let n = 0;
    for (let i = 0; i < jobs.length; i++) {
      const labels = jobs[i]!.labels;
      for (const key in labels) {
        const at = n * LABEL_PARAMS;
        params[at] = projectId;
        params[at + 1] = key;
        params[at + 2] = labels[key];
        params[at + 3] = ids[i];
        if (++n === LABEL_CHUNK) {
          this.labelInsert(n).run(params);
          params = new Array<unknown>(LABEL_CHUNK * LABEL_PARAMS);
          n = 0;
        }
      }
    }
    if (n > 0) this.labelInsert(n).run(params.slice(0, n * LABEL_PARAMS));
  }

  /**
   * The queue each job of an insert belongs to: its app version and shape (resources with the
   * job's overrides, selector). Jobs of one batch usually share one, so the last is remembered.
   */
  private queueFinder(projectId: number, app: App): (j: JobSpec) => number {
    // Per insert, not kept: a queue created by an insert that then rolls back must not be remembered.
    const queueIds = new Map<string, number>();
    let lastResources: object | null = null;
    let lastSelector: object | null = null;
    let lastId = 0;
    return (j) => {
      if (j.resources === lastResources && j.selector === lastSelector) return lastId;
      const { key, args } = queueKeyOf(app, j);
      let id = queueIds.get(key);
      if (id === undefined) {
        this.stmt(
          `INSERT OR IGNORE INTO queues (project_id, app_id, cores, memory_mib, disk_mib, gpus, selector) VALUES (?, ?, ?, ?, ?, ?, ?)`,
        ).run(projectId, ...args);
        id = this.stmt(`SELECT id FROM queues WHERE app_id = ? AND cores = ? AND memory_mib = ? AND disk_mib = ? AND gpus = ? AND selector = ?`)
          .pluck().get(...args) as number;
        queueIds.set(key, id);
      }
      lastResources = j.resources;
      lastSelector = j.selector;
      lastId = id;
      return id;
    };
  }

  private readonly jobInserts = new Map<number, Database.Statement>();
  private readonly labelInserts = new Map<number, Database.Statement>();

  /** A cached INSERT of n job rows: ROW_PARAMS anonymous parameters per row, the shared columns named. */
  private jobInsert(n: number): Database.Statement {
    let st = this.jobInserts.get(n);
    if (!st) {
      const rows = new Array<string>(n).fill(`(@projectId, @appId, @appName, @appVersion, @batchId, 'queued', ?, ?, ?, ?, @now, @now)`);
      st = this.db.prepare(
        `INSERT INTO jobs (project_id, app_id, app_name, app_version, batch_id, state, priority, deadline, spec, queue_id, created_at, updated_at)
         VALUES ${rows.join(', ')}`,
      );
      this.jobInserts.set(n, st);
    }
    return st;
  }

  /** A cached INSERT of n label rows, LABEL_PARAMS anonymous parameters per row. */
  private labelInsert(n: number): Database.Statement {
    let st = this.labelInserts.get(n);
    if (!st) {
      st = this.db.prepare(`INSERT INTO job_labels (project_id, key, value, job_id) VALUES ${new Array<string>(n).fill('(?, ?, ?, ?)').join(', ')}`);
      this.labelInserts.set(n, st);
    }
    return st;
  }

  async findIdempotent(projectId: number, key: string): Promise<{ requestHash: string; result: InsertJobsResult } | null> {
    return this.idempotentOutcome(projectId, key);
  }

  private idempotentOutcome(projectId: number, key: string): { requestHash: string; result: InsertJobsResult } | null {
    const prior = this.db
      .prepare('SELECT request_hash, batch_id, job_id FROM idempotency_keys WHERE project_id = ? AND key = ?')
      .get(projectId, key) as Row | undefined;
    return prior ? { requestHash: prior.request_hash as string, result: this.replay(projectId, prior) } : null;
  }

  private replay(projectId: number, prior: Row): InsertJobsResult {
    if (prior.batch_id !== null) {
      const batchId = prior.batch_id as number;
      const batch = mapBatch(this.stmt('SELECT * FROM batches WHERE id = ? AND project_id = ?').get(batchId, projectId) as Row);
      const range = this.batchRange(batchId);
      const ids = range
        ? (this.stmt('SELECT id FROM jobs WHERE id BETWEEN ? AND ? AND batch_id = ? ORDER BY id').pluck().all(range.first, range.last, batchId) as number[])
        : [];
      return { batch, jobIds: ids, replayed: true };
    }
    return { batch: null, jobIds: [prior.job_id as number], replayed: true };
  }

  async getJob(projectId: number, id: number): Promise<Job | null> {
    const r = this.stmt('SELECT * FROM jobs WHERE id = ? AND project_id = ?').get(id, projectId) as Row | undefined;
    return r ? mapJob(r) : null;
  }

  /**
   * Newest first. Every filter is an index that yields ids in descending order: state and app
   * (jobs_by_project_state, jobs_by_project_app), a label (job_labels' key), and a batch, whose
   * jobs are one id range. One filter reads its index in order; several are intersected by
   * leapfrogging (each index seeks to the largest id at or below the others' candidate), so a
   * page costs a few index seeks per job returned or per run of non-matching ids skipped — never
   * a scan of every job a filter matches. See bench/query.ts.
   */
  async listJobs(projectId: number, filter: JobFilter, page: Page): Promise<Job[]> {
    let lo = 1;
    let hi = page.beforeId === undefined ? Number.MAX_SAFE_INTEGER : page.beforeId - 1;
    let appName = filter.appName;
    if (filter.batchId !== undefined) {
      const b = this.stmt('SELECT project_id, app_name FROM batches WHERE id = ?').get(filter.batchId) as Row | undefined;
      const range = b ? this.batchRange(filter.batchId) : null;
      // All of a batch's jobs have its project and app.
      if (!b || !range || b.project_id !== projectId || (appName !== undefined && appName !== b.app_name)) return [];
      lo = range.first;
      hi = Math.min(hi, range.last);
      appName = undefined;
    }
    if (hi < lo || page.limit <= 0) return [];

    const streams: IdStream[] = [];
    if (filter.state !== undefined) {
      streams.push({ from: 'jobs', id: 'id', eq: ['project_id', 'state'], args: [projectId, filter.state] });
    }
    if (appName !== undefined) {
      streams.push({ from: 'jobs', id: 'id', eq: ['project_id', 'app_name'], args: [projectId, appName] });
    }
    if (filter.label !== undefined) {
      streams.push({ from: 'job_labels', id: 'job_id', eq: ['project_id', 'key', 'value'], args: [projectId, filter.label.key, filter.label.value] });
    }

    let rows: Row[];
    if (streams.length === 0 && filter.batchId !== undefined) {
      // The project and batch predicates keep the query right on its own; the unary + stops
      // SQLite from trading the key range for the (far less selective) project index.
      rows = this.stmt('SELECT * FROM jobs WHERE id BETWEEN ? AND ? AND +project_id = ? AND +batch_id = ? ORDER BY id DESC LIMIT ?')
        .all(lo, hi, projectId, filter.batchId, page.limit) as Row[];
    } else if (streams.length === 0) {
      // No index is ordered by id within a project alone, but the state index is, per state: take
      // the newest `limit` of each state and keep the newest `limit` of those.
      const perState = JOB_STATES.map(() => 'SELECT id FROM (SELECT id FROM jobs WHERE project_id = ? AND state = ? AND id BETWEEN ? AND ? ORDER BY id DESC LIMIT ?)');
      const args = JOB_STATES.flatMap((state) => [projectId, state, lo, hi, page.limit]);
      rows = this.stmt(`SELECT * FROM jobs WHERE id IN (${perState.join(' UNION ALL ')} ORDER BY id DESC LIMIT ?) ORDER BY id DESC`)
        .all(...args, page.limit) as Row[];
    } else if (streams.length === 1 && streams[0]!.from === 'jobs') {
      const s = streams[0]!;
      rows = this.stmt(`SELECT * FROM jobs WHERE ${streamWhere(s)} AND id BETWEEN ? AND ? ORDER BY id DESC LIMIT ?`).all(...s.args, lo, hi, page.limit) as Row[];
    } else if (streams.length === 1) {
      // Read the label's index in order, fetching each job by id (CROSS JOIN keeps that join order).
      const s = streams[0]!;
      rows = this.stmt(
        `SELECT j.* FROM ${s.from} s CROSS JOIN jobs j ON j.id = s.${s.id}
         WHERE ${streamWhere(s, 's.')} AND s.${s.id} BETWEEN ? AND ? ORDER BY s.${s.id} DESC LIMIT ?`,
      ).all(...s.args, lo, hi, page.limit) as Row[];
    } else {
      const ids = this.intersect(streams, lo, hi, page.limit);
      if (ids.length === 0) return [];
      rows = this.stmt('SELECT * FROM jobs WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id DESC').all(JSON.stringify(ids)) as Row[];
    }
    return rows.map(mapJob);
  }

  /** Up to `limit` ids in [lo, hi] that every stream has, largest first (leapfrog intersection). */
  private intersect(streams: IdStream[], lo: number, hi: number, limit: number): number[] {
    const seeks = streams.map((s) => {
      const st = this.stmt(`SELECT ${s.id} FROM ${s.from} WHERE ${streamWhere(s)} AND ${s.id} BETWEEN ? AND ? ORDER BY ${s.id} DESC LIMIT 1`).pluck();
      return (atMost: number) => st.get(...s.args, lo, atMost) as number | undefined;
    });
    const ids: number[] = [];
    let candidate = hi;
    let agreeing = 0;
    for (let i = 0; ids.length < limit; i = (i + 1) % seeks.length) {
      const id = seeks[i]!(candidate);
      if (id === undefined) break;
      if (id === candidate) agreeing++;
      else {
        candidate = id;
        agreeing = 1;
      }
      if (agreeing === seeks.length) {
        ids.push(candidate);
        candidate--;
        agreeing = 0;
        if (candidate < lo) break;
      }
    }
    return ids;
  }

  /** The id range of a batch's jobs (see insertJobs), or null if there is no such batch. */
  private batchRange(batchId: number): { first: number; last: number } | null {
    const r = this.stmt('SELECT first_job_id, size FROM batches WHERE id = ?').get(batchId) as Row | undefined;
    if (!r || r.first_job_id === null) return null;
    const first = r.first_job_id as number;
    return { first, last: first + (r.size as number) - 1 };
  }

  private readonly statements = new Map<string, Database.Statement>();

  /**
   * A prepared statement, cached by its text: every query here is one of a small fixed set, and
   * preparing is a measurable share of a short request (auth alone runs four).
   */
  private stmt(sql: string): Database.Statement {
    let st = this.statements.get(sql);
    if (!st) {
      st = this.db.prepare(sql);
      this.statements.set(sql, st);
    }
    return st;
  }

  async listTasks(jobId: number): Promise<Task[]> {
    return (this.stmt('SELECT * FROM tasks WHERE job_id = ? ORDER BY id').all(jobId) as Row[]).map(mapTask);
  }

  async cancelJob(projectId: number, id: number, now: Millis): Promise<Job> {
    return this.db.transaction(() => {
      const r = this.stmt('SELECT * FROM jobs WHERE id = ? AND project_id = ?').get(id, projectId) as Row | undefined;
      if (!r) throw notFound(`job ${id}`);
      jobMachine.assert(r.state as JobState, 'cancelled', `job ${id}`);
      this.db
        .prepare(`UPDATE jobs SET state = 'cancelled', reason = 'cancelled by user', updated_at = ?, finished_at = ?, not_before = NULL WHERE id = ?`)
        .run(now, now, id);
      return mapJob({ ...r, state: 'cancelled', reason: 'cancelled by user', updated_at: now, finished_at: now, not_before: null });
    }).immediate();
  }

  async cancelBatch(projectId: number, batchId: number, now: Millis): Promise<number> {
    const range = this.batchRange(batchId);
    if (!range) return 0;
    const r = this.db
      .prepare(
        `UPDATE jobs SET state = 'cancelled', reason = 'batch cancelled by user', updated_at = ?, finished_at = ?, not_before = NULL
         WHERE id BETWEEN ? AND ? AND batch_id = ? AND project_id = ? AND state IN (${CANCELLABLE_SQL})`,
      )
      .run(now, now, range.first, range.last, batchId, projectId);
    return r.changes;
  }

  async getBatch(projectId: number, id: number): Promise<Batch | null> {
    const r = this.stmt('SELECT * FROM batches WHERE id = ? AND project_id = ?').get(id, projectId) as Row | undefined;
    return r ? mapBatch(r) : null;
  }

  async listBatches(projectId: number, page: Page): Promise<Batch[]> {
    const rows = (page.beforeId === undefined
      ? this.stmt('SELECT * FROM batches WHERE project_id = ? ORDER BY id DESC LIMIT ?').all(projectId, page.limit)
      : this.stmt('SELECT * FROM batches WHERE project_id = ? AND id < ? ORDER BY id DESC LIMIT ?').all(projectId, page.beforeId, page.limit)) as Row[];
    return rows.map(mapBatch);
  }

  async batchCounts(batchId: number): Promise<StateCounts> {
    const counts = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as StateCounts;
    const b = this.stmt('SELECT project_id FROM batches WHERE id = ?').get(batchId) as Row | undefined;
    const range = b ? this.batchRange(batchId) : null;
    if (!b || !range) return counts;
    // Counted in the state index over the batch's id range: index entries only, no table rows
    // (one count per state is faster than GROUP BY over an IN list).
    const count = this.stmt('SELECT count(*) FROM jobs WHERE project_id = ? AND state = ? AND id BETWEEN ? AND ?').pluck();
    for (const state of JOB_STATES) counts[state] = count.get(b.project_id, state, range.first, range.last) as number;
    return counts;
  }

  async countJobs(projectId: number, appName?: string): Promise<StateCounts> {
    const counts = Object.fromEntries(JOB_STATES.map((s) => [s, 0])) as StateCounts;
    // One aggregate over the covering index jobs_by_project_state (project_id, state, id), in
    // state order (no sort); for one app, over a project_id index and the rows.
    const rows = (appName === undefined
      ? this.stmt('SELECT state, count(*) AS n FROM jobs WHERE project_id = ? GROUP BY state').all(projectId)
      : this.stmt('SELECT state, count(*) AS n FROM jobs WHERE project_id = ? AND app_name = ? GROUP BY state').all(projectId, appName)) as Row[];
    for (const r of rows) counts[r.state as JobState] = r.n as number;
    return counts;
  }

  // ── blobs ─────────────────────────────────────────────────────────────────

  async recordBlob(projectId: number, blob: BlobRecord): Promise<void> {
    this.db
      .prepare('INSERT INTO blob_refs (project_id, sha256, size, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING')
      .run(projectId, blob.sha256, blob.size, blob.createdAt);
  }

  async getBlobRef(projectId: number, sha256: string): Promise<BlobRecord | null> {
    const r = this.stmt('SELECT * FROM blob_refs WHERE project_id = ? AND sha256 = ?').get(projectId, sha256) as Row | undefined;
    return r ? { sha256: r.sha256 as string, size: r.size as number, createdAt: r.created_at as number } : null;
  }

  async missingBlobs(projectId: number, sha256s: string[]): Promise<string[]> {
    const stmt = this.stmt('SELECT 1 FROM blob_refs WHERE project_id = ? AND sha256 = ?').pluck();
    return [...new Set(sha256s)].filter((s) => stmt.get(projectId, s) === undefined);
  }

  // ── sites and hosts ─────────────────────────────────────────────────────

  async createSite(name: string, now: Millis): Promise<Site> {
    try {
      const r = this.stmt('INSERT INTO sites (name, created_at) VALUES (?, ?)').run(name, now);
      return { id: Number(r.lastInsertRowid), name, createdAt: now, allowCidrs: [] };
    } catch (e) {
      throw uniqueViolation(e, () => alreadyExists(`site "${name}"`, 'name'));
    }
  }

  async getSiteByName(name: string): Promise<Site | null> {
    const r = this.stmt('SELECT * FROM sites WHERE name = ?').get(name) as Row | undefined;
    return r ? mapSite(r) : null;
  }

  async getSite(id: number): Promise<Site | null> {
    const r = this.stmt('SELECT * FROM sites WHERE id = ?').get(id) as Row | undefined;
    return r ? mapSite(r) : null;
  }

  async putSite(name: string, allowCidrs: string[], now: Millis): Promise<Site> {
    const r = this.stmt(
      'INSERT INTO sites (name, created_at, allow_cidrs) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET allow_cidrs = excluded.allow_cidrs RETURNING *',
    ).get(name, now, JSON.stringify(allowCidrs)) as Row;
    return mapSite(r);
  }

  async listSites(): Promise<SiteSummary[]> {
    const rows = this.stmt(
      `SELECT s.*,
         (SELECT count(*) FROM hosts h WHERE h.site_id = s.id AND h.state = 'active') AS active_hosts,
         (SELECT count(*) FROM hosts h WHERE h.site_id = s.id AND h.state = 'revoked') AS revoked_hosts
       FROM sites s ORDER BY s.name`,
    ).all() as Row[];
    return rows.map((r) => ({ ...mapSite(r), activeHosts: r.active_hosts as number, revokedHosts: r.revoked_hosts as number }));
  }

  async createHost(h: Omit<Host, 'id' | 'createdAt' | 'lastSeenAt' | 'state' | 'labels' | 'pace' | 'owner'> & { labels?: Record<string, string>; owner?: string | null }, now: Millis): Promise<Host> {
    const labels = h.labels ?? {};
    const owner = h.owner ?? null;
    const r = this.db
      .prepare(`INSERT INTO hosts (site_id, name, state, resources, platform, labels, owner, created_at) VALUES (?, ?, 'active', ?, ?, ?, ?, ?)`)
      .run(h.siteId, h.name, JSON.stringify(h.resources), h.platform, JSON.stringify(labels), owner, now);
    return { ...h, labels, owner, id: Number(r.lastInsertRowid), state: 'active', createdAt: now, lastSeenAt: null, pace: null };
  }

  async setHostLabels(hostId: number, labels: Record<string, string>): Promise<void> {
    this.stmt('UPDATE hosts SET labels = ? WHERE id = ?').run(JSON.stringify(labels), hostId);
  }

  async createEnrollToken(t: EnrollTokenRecord): Promise<void> {
    this.db
      .prepare('INSERT INTO enroll_tokens (id, site_id, secret_hash, label, uses_left, expires_at, revoked_at, created_at, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)')
      .run(t.id, t.siteId, t.secretHash, t.label, t.usesLeft, t.expiresAt, t.revokedAt, t.createdAt, t.owner);
  }

  async getEnrollToken(id: string): Promise<EnrollTokenRecord | null> {
    const r = this.stmt('SELECT * FROM enroll_tokens WHERE id = ?').get(id) as Row | undefined;
    return r ? mapEnrollToken(r) : null;
  }

  async listEnrollTokens(): Promise<EnrollTokenSummary[]> {
    const rows = this.stmt(
      `SELECT e.id, e.site_id, e.label, e.uses_left, e.expires_at, e.revoked_at, e.created_at, e.owner, s.name AS site_name
       FROM enroll_tokens e JOIN sites s ON s.id = e.site_id ORDER BY e.created_at DESC, e.id`,
    ).all() as Row[];
    return rows.map(mapEnrollTokenSummary);
  }

  async revokeEnrollToken(id: string, now: Millis): Promise<boolean> {
    return this.stmt('UPDATE enroll_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(now, id).changes === 1;
  }

  async enrollHost(req: EnrollRequest, now: Millis): Promise<{ host: Host; replayed: boolean }> {
    return this.db.transaction(() => {
      const prior = this.stmt('SELECT * FROM tokens WHERE id = ?').get(req.credential.id) as Row | undefined;
      if (prior) {
        const same = prior.kind === 'host' && Buffer.compare(prior.secret_hash as Buffer, req.credential.secretHash) === 0;
        if (!same) throw new BoxgridError('conflict', 'this credential id is already enrolled with another secret', { field: 'credentialId' });
        const host = this.hostRow(prior.subject_id as number);
        if (host) return { host, replayed: true };
      }
      const row = this.stmt('SELECT * FROM enroll_tokens WHERE id = ?').get(req.enrollTokenId) as Row | undefined;
      const t = row ? mapEnrollToken(row) : null;
      if (!t || t.revokedAt !== null) throw new BoxgridError('unauthenticated', 'the enrolment token is not valid (unknown or revoked)');
      if (t.expiresAt !== null && t.expiresAt <= now) throw new BoxgridError('unauthenticated', 'the enrolment token has expired');
      if (t.usesLeft !== null && t.usesLeft <= 0) throw new BoxgridError('unauthenticated', 'the enrolment token has no uses left');
      if (t.usesLeft !== null) this.stmt('UPDATE enroll_tokens SET uses_left = uses_left - 1 WHERE id = ?').run(t.id);
      const r = this.db
        .prepare(`INSERT INTO hosts (site_id, name, state, resources, platform, owner, created_at) VALUES (?, ?, 'active', ?, ?, ?, ?)`)
        .run(t.siteId, req.host.name, JSON.stringify(req.host.resources), req.host.platform, t.owner, now);
      const hostId = Number(r.lastInsertRowid);
      const c = { ...req.credential, subjectId: hostId };
      this.db
        .prepare('INSERT INTO tokens (id, kind, subject_id, secret_hash, label, created_at, expires_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
        .run(c.id, 'host', c.subjectId, c.secretHash, c.label, c.createdAt, c.expiresAt, c.revokedAt);
      return { host: this.hostRow(hostId)!, replayed: false };
    }).immediate();
  }

  private hostRow(id: number): Host | null {
    const r = this.stmt('SELECT * FROM hosts WHERE id = ?').get(id) as Row | undefined;
    return r ? mapHost(r) : null;
  }

  async getHost(id: number): Promise<Host | null> {
    return this.hostRow(id);
  }

  async listHosts(): Promise<HostSummary[]> {
    const rows = this.db
      .prepare(
        `SELECT h.*, s.name AS site_name,
           (SELECT count(*) FROM tasks t WHERE t.host_id = h.id AND t.state IN (${ACTIVE_TASK_SQL})) AS active_tasks
         FROM hosts h JOIN sites s ON s.id = h.site_id ORDER BY h.id`,
      )
      .all() as Row[];
    return rows.map((r) => ({ ...mapHost(r), siteName: r.site_name as string, activeTasks: r.active_tasks as number }));
  }

  async revokeHost(hostId: number, now: Millis): Promise<HostRevocation | null> {
    return this.db.transaction((): HostRevocation | null => {
      const before = this.hostRow(hostId);
      if (!before) return null;
      if (before.state === 'revoked') return { host: before, changed: false, abortedTasks: [], requeuedJobs: [] };
      hostMachine.assert(before.state, 'revoked', `host ${hostId}`);
      this.stmt(`UPDATE hosts SET state = 'revoked', reserved_job = NULL, reserved_at = NULL WHERE id = ?`).run(hostId);
      this.stmt(`UPDATE tokens SET revoked_at = ? WHERE kind = 'host' AND subject_id = ? AND revoked_at IS NULL`).run(now, hostId);
      const rows = this.stmt(`SELECT * FROM tasks WHERE host_id = ? AND state IN (${ACTIVE_TASK_SQL}) ORDER BY id`).all(hostId) as Row[];
      const abort = this.stmt(`UPDATE tasks SET state = 'aborted', ended_at = ?, reason = ?, outcome = '{"kind":"aborted"}' WHERE id = ?`);
      for (const row of rows) {
        abort.run(now, HOST_REVOKED, row.id);
        this.settleCharge(row, this.stmt('SELECT * FROM jobs WHERE id = ?').get(row.job_id) as Row, now - (row.created_at as number));
      }
      const requeuedJobs: Job[] = [];
      for (const jobId of new Set(rows.map((r) => r.job_id as number))) {
        const job = mapJob(this.stmt('SELECT * FROM jobs WHERE id = ?').get(jobId) as Row);
        if (job.quorum > 1 && job.state === 'running') {
          // A replicated job wants other replicas in place of the host's (a failure only at its limit).
          const after = this.decide(job, judge(this.replicaViews(job.id), job.replicasWanted, ruleFor(job, this.appRow(job.appId))), DEFAULT_REPLICATION, now);
          if (after.state !== job.state) requeuedJobs.push(after); // ended, at its limit
          continue;
        }
        const othersActive = this.stmt(`SELECT count(*) FROM tasks WHERE job_id = ? AND state IN (${ACTIVE_TASK_SQL})`).pluck().get(jobId) as number;
        if (job.state !== 'running' || othersActive > 0) continue; // ended already, or another task carries it
        const attempts = attemptsAfterRevoke(job, rows.filter((r) => r.job_id === jobId).map((r) => r.attempt as number));
        requeuedJobs.push(this.moveJob(job, 'queued', REQUEUED_AFTER_REVOKE, attempts, null, now));
      }
      return { host: this.hostRow(hostId)!, changed: true, abortedTasks: rows.map((r) => this.taskRow(r.id as number)!), requeuedJobs };
    }).immediate();
  }

  // ── workflows ───────────────────────────────────────────────────────────

  async createWorkflow(w: NewWorkflow, idempotency: { key: string; requestHash: string } | null): Promise<{ workflow: WorkflowRecord; replayed: boolean }> {
    return this.db.transaction((): { workflow: WorkflowRecord; replayed: boolean } => {
      const prior = idempotency ? this.idempotentWorkflow(w.projectId, idempotency) : null;
      if (prior) return { workflow: prior, replayed: true };
      const row = this.stmt(
        `INSERT INTO workflows (${WORKFLOW_INSERT_COLUMNS.join(', ')}) VALUES (${WORKFLOW_INSERT_COLUMNS.map(() => '?').join(', ')}) RETURNING *`,
      ).get(...workflowInsertValues(w, idempotency)) as Row;
      return { workflow: mapWorkflow(row), replayed: false };
    }).immediate();
  }

  async findIdempotentWorkflow(projectId: number, idempotency: { key: string; requestHash: string }): Promise<WorkflowRecord | null> {
    return this.idempotentWorkflow(projectId, idempotency);
  }

  /** The workflow created under the key (createWorkflow's replay, and the lookup before it). */
  private idempotentWorkflow(projectId: number, idempotency: { key: string; requestHash: string }): WorkflowRecord | null {
    const prior = this.stmt('SELECT * FROM workflows WHERE project_id = ? AND idem_key = ?').get(projectId, idempotency.key) as Row | undefined;
    return prior ? replayedWorkflow(prior, idempotency.requestHash) : null;
  }

  async getWorkflow(projectId: number, id: number): Promise<WorkflowRecord | null> {
    const r = this.stmt('SELECT * FROM workflows WHERE id = ? AND project_id = ?').get(id, projectId) as Row | undefined;
    return r ? mapWorkflow(r) : null;
  }

  async listWorkflows(projectId: number, page: Page): Promise<WorkflowRecord[]> {
    const rows = this.stmt('SELECT * FROM workflows WHERE project_id = ? AND id < ? ORDER BY id DESC LIMIT ?')
      .all(projectId, page.beforeId ?? Number.MAX_SAFE_INTEGER, page.limit) as Row[];
    return rows.map(mapWorkflow);
  }

  async openWorkflows(limit: number, afterId = 0): Promise<Array<{ id: number; projectId: number }>> {
    const rows = this.stmt(`SELECT id, project_id FROM workflows WHERE state = 'running' AND id > ? ORDER BY id LIMIT ?`).all(afterId, limit) as Row[];
    return rows.map((r) => ({ id: r.id as number, projectId: r.project_id as number }));
  }

  async updateWorkflow(id: number, expectedVersion: number, change: WorkflowChange): Promise<WorkflowRecord | null> {
    const r = this.stmt(
      'UPDATE workflows SET state = ?, reason = ?, progress = ?, updated_at = ?, ended_at = ?, version = version + 1 WHERE id = ? AND version = ? RETURNING *',
    ).get(...workflowChangeValues(change), id, expectedVersion) as Row | undefined;
    return r ? mapWorkflow(r) : null;
  }

  // ── audit ───────────────────────────────────────────────────────────────

  async appendAudit(e: Omit<AuditEntry, 'id'>): Promise<AuditEntry> {
    const r = this.stmt('INSERT INTO audit_log (at, actor_user_id, actor_name, action, target, project_id, detail) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(e.at, e.actorUserId, e.actorName, e.action, e.target, e.projectId, JSON.stringify(e.detail));
    return { ...e, id: Number(r.lastInsertRowid) };
  }

  async listAudit(filter: AuditFilter, page: Page): Promise<AuditListEntry[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    const add = (condition: string, value: unknown) => {
      where.push(condition);
      args.push(value);
    };
    if (filter.action !== undefined) add('a.action = ?', filter.action);
    if (filter.projectId !== undefined) add('a.project_id = ?', filter.projectId);
    if (page.beforeId !== undefined) add('a.id < ?', page.beforeId);
    const rows = this.stmt(
      `SELECT a.*, p.name AS project_name FROM audit_log a LEFT JOIN projects p ON p.id = a.project_id
       ${where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`} ORDER BY a.id DESC LIMIT ?`,
    ).all(...args, page.limit) as Row[];
    return rows.map(mapAudit);
  }

  // ── the agent protocol ──────────────────────────────────────────────────

  async claimTasks(req: ClaimRequest, now: Millis): Promise<ClaimResult> {
    return this.grouped((): ClaimResult => {
      // A host revoked since its credential was checked gets nothing.
      if (this.stmt(`UPDATE hosts SET last_seen_at = ? WHERE id = ? AND state = 'active'`).run(now, req.hostId).changes === 0) return { tasks: [], replayed: false };
      const prior = this.stmt(`SELECT * FROM tasks WHERE host_id = ? AND request_id = ? ORDER BY id`).all(req.hostId, req.requestId) as Row[];
      if (prior.length > 0) {
        const live = prior.map(mapTask).filter((t) => isActiveTask(t.state));
        return { tasks: live.map((t) => this.claimed(t)), replayed: true };
      }
      // Jobs whose backoff is over go back to their queues, entering them now (JobHead.queuedAt)
      // but in their place (JobHead.submittedAt).
      this.stmt('UPDATE jobs SET updated_at = not_before, not_before = NULL WHERE not_before IS NOT NULL AND not_before <= ?').run(now);
      const gathered = this.gatherForClaim(req, now);
      const plan = req.plan(gathered);
      const tasks: ClaimedTask[] = [];
      const start = this.stmt(`UPDATE jobs SET state = 'running', attempts = attempts + 1, reason = NULL, updated_at = ? WHERE id = ? AND state = 'queued'`);
      const replication = req.replication ?? DEFAULT_REPLICATION;
      for (const pick of plan.picks) {
        if (pick.replica) {
          const taken = this.stmt(
            `UPDATE jobs SET replicas_wanted = replicas_wanted - 1, reason = CASE WHEN replicas_wanted = 1 THEN NULL ELSE reason END
             WHERE id = ? AND state = 'running' AND replicas_wanted > 0`,
          ).run(pick.jobId);
          if (taken.changes !== 1) throw new Error(`scheduling chose a replica of job ${pick.jobId}, which wants none`);
          const job = mapJob(this.stmt('SELECT * FROM jobs WHERE id = ?').get(pick.jobId) as Row);
          tasks.push(this.newTask(req, job, job.attempts, this.nextReplica(job.id), pick.runtime, pick.cost, now));
          continue;
        }
        if (start.run(now, pick.jobId).changes !== 1) throw new Error(`scheduling chose job ${pick.jobId}, which is not queued`);
        let job = mapJob(this.stmt('SELECT * FROM jobs WHERE id = ?').get(pick.jobId) as Row);
        const app = this.appRow(job.appId);
        if (app.replicas > 1 || job.quorum !== 1) {
          const r = replicationFor(app, this.reliability(req.hostId, app.id), job.id, req.hostId, replication, req.drawKey);
          const reason = r.replicas > 1 ? wantingReplicas(r.replicas - 1) : null;
          this.stmt('UPDATE jobs SET quorum = ?, replicas_wanted = ?, reason = ? WHERE id = ?').run(r.quorum, r.replicas - 1, reason, job.id);
          job = { ...job, quorum: r.quorum, replicasWanted: r.replicas - 1, reason };
        }
        tasks.push(this.newTask(req, job, job.attempts, 0, pick.runtime, pick.cost, now));
      }
      for (const [projectId, pass] of plan.passes) this.stmt('UPDATE projects SET fair_pass = ? WHERE id = ?').run(pass, projectId);
      if (plan.virtualTime !== gathered.virtualTime) this.stmt('UPDATE fair_share_clock SET virtual_time = ? WHERE id = 1').run(plan.virtualTime);
      let reservation = gathered.reservation;
      if (plan.reserve !== undefined) {
        reservation = plan.reserve;
        this.stmt('UPDATE hosts SET reserved_job = ?, reserved_at = ? WHERE id = ?').run(reservation, reservation === null ? null : now, req.hostId);
      }
      // Speculation is for the tail of the work: not while any job waits, even one backing off
      // (hosts busy with copies would not be free when it returns).
      const tail = gathered.queues.length === 0 && this.stmt(`SELECT 1 FROM jobs WHERE not_before IS NOT NULL AND state = 'queued' LIMIT 1`).get() === undefined;
      if (plan.picks.length === 0 && reservation === null && req.duplicates && tail) {
        const running = this.runningForDuplicates(req.hostId, req.duplicates.scan);
        const active = this.stmt(`SELECT count(*) FROM tasks WHERE replica > 0 AND state IN (${ACTIVE_TASK_SQL})`).pluck().get() as number;
        for (const pick of req.duplicates.choose(running, active, gathered)) {
          const job = mapJob(this.stmt('SELECT * FROM jobs WHERE id = ?').get(pick.jobId) as Row);
          if (job.state !== 'running') throw new Error(`scheduling duplicated job ${pick.jobId}, which is not running`);
          tasks.push(this.newTask(req, job, job.attempts, this.nextReplica(job.id), pick.runtime, 0, now));
        }
      }
      // Each task counts against the host's daily quota for its app, speculative copies too (as on PostgreSQL).
      const issued = new Map<number, number>();
      for (const t of tasks) issued.set(t.app.id, (issued.get(t.app.id) ?? 0) + 1);
      for (const [appId, n] of issued) this.recordReliability(req.hostId, appId, 'issued', replication, now, n);
      return { tasks, replayed: false };
    });
  }

  /** The replica number of a job's next task beside those it has (a replica, a speculative copy). */
  private nextReplica(jobId: number): number {
    return (this.stmt('SELECT max(replica) FROM tasks WHERE job_id = ?').pluck().get(jobId) as number) + 1;
  }

  private newTask(req: ClaimRequest, job: Job, attempt: number, replica: number, runtime: RuntimeKind, charge: number, now: Millis): ClaimedTask {
    const r = this.stmt(
      `INSERT INTO tasks (job_id, host_id, attempt, replica, state, runtime, lease_expires_at, created_at, request_id, outputs, charge)
       VALUES (?, ?, ?, ?, 'assigned', ?, ?, ?, ?, '{}', ?)`,
    ).run(job.id, req.hostId, attempt, replica, runtime, now + req.leaseMs, now, req.requestId, charge);
    return { task: this.taskRow(Number(r.lastInsertRowid))!, job, app: this.appRow(job.appId), projectName: this.projectName(job.projectId) };
  }

  /**
   * What the policy decides a claim on. The queues with eligible jobs are found by skipping
   * through jobs_queue_heads one queue at a time (a loose index scan), so a claim costs the
   * same with a thousand queued jobs or a million.
   */
  private gatherForClaim(req: ClaimRequest, now: Millis): ClaimGathered {
    const queueIds = this.stmt(
      `WITH RECURSIVE q(id) AS (
         SELECT (SELECT min(queue_id) FROM jobs WHERE state = 'queued' AND not_before IS NULL)
         UNION ALL
         SELECT (SELECT min(queue_id) FROM jobs WHERE state = 'queued' AND not_before IS NULL AND queue_id > q.id) FROM q WHERE q.id IS NOT NULL
       ) SELECT id FROM q WHERE id IS NOT NULL LIMIT ?`,
    ).pluck().all(req.maxQueues) as number[];
    const heads = this.stmt(
      `SELECT id, priority, created_at, updated_at, deadline FROM jobs WHERE queue_id = ? AND state = 'queued' AND not_before IS NULL
       ORDER BY priority DESC, id LIMIT ?`,
    );
    const queues: QueueView[] = [];
    const projects = new Map<number, ProjectShare>();
    for (const id of queueIds) {
      const q = this.queueView(id);
      q.heads = (heads.all(id, req.headsPerQueue) as Row[]).map((r) => ({
        jobId: r.id as number, priority: r.priority as number, submittedAt: r.created_at as number, queuedAt: r.updated_at as number, deadline: (r.deadline as number | null) ?? null,
      }));
      queues.push(q);
      if (!projects.has(q.projectId)) {
        const p = this.stmt('SELECT share_weight, fair_pass FROM projects WHERE id = ?').get(q.projectId) as Row;
        projects.set(q.projectId, { projectId: q.projectId, weight: p.share_weight as number, pass: p.fair_pass as number });
      }
    }
    const host = this.stmt('SELECT reserved_job, pace, owner FROM hosts WHERE id = ?').get(req.hostId) as Row | undefined;
    const reservation = (host?.reserved_job as number | null | undefined) ?? null;
    // Replicas go to hosts that have not run the job, of owners that have not either.
    const wanting = this.stmt(
      `SELECT j.id, j.queue_id FROM jobs j WHERE j.replicas_wanted > 0 AND j.state = 'running' AND j.queue_id IS NOT NULL
         AND NOT EXISTS (SELECT 1 FROM tasks t JOIN hosts h ON h.id = t.host_id WHERE t.job_id = j.id AND (t.host_id = ? OR h.owner = ?))
       ORDER BY j.id LIMIT ?`,
    ).all(req.hostId, (host?.owner as string | null | undefined) ?? null, req.replicaScan ?? DEFAULT_REPLICA_SCAN) as Row[];
    const replicaWork: ReplicaWork[] = wanting.map((r) => {
      const { heads: _h, ...view } = this.queueView(r.queue_id as number);
      return { ...view, jobId: r.id as number };
    });
    // A reservation holds only while its host keeps calling: a host gone silent frees its job.
    const reservedElsewhere = new Set(
      this.stmt('SELECT reserved_job FROM hosts WHERE reserved_job IS NOT NULL AND id != ? AND last_seen_at >= ?').pluck().all(req.hostId, now - req.leaseMs) as number[],
    );
    const virtualTime = this.stmt('SELECT virtual_time FROM fair_share_clock WHERE id = 1').pluck().get() as number;
    const pace = (host?.pace as number | null | undefined) ?? null;
    const records = new Map(
      (this.stmt('SELECT * FROM host_app_health WHERE host_id = ?').all(req.hostId) as Row[]).map((r) => [r.app_id as number, mapReliability(r)]),
    );
    const quota = quotaLeft(records, req.replication ?? DEFAULT_REPLICATION, now);
    return { queues, replicaWork, quota, projects, reservation, reservedElsewhere, cooledApps: this.cooledApps(req.hostId, now), pace, virtualTime };
  }

  private cooledApps(hostId: number, now: Millis): Set<number> {
    return new Set(this.stmt('SELECT app_id FROM host_app_health WHERE host_id = ? AND cooldown_until > ?').pluck().all(hostId, now) as number[]);
  }

  private reliability(hostId: number, appId: number): HostReliability {
    const r = this.stmt('SELECT valid_run, quota, quota_day, issued_today FROM host_app_health WHERE host_id = ? AND app_id = ?').get(hostId, appId) as Row | undefined;
    return r ? mapReliability(r) : NEW_HOST;
  }

  /** Moves a host's record with an app on an event (replication.ts `nextReliability`). */
  private recordReliability(hostId: number, appId: number, event: ReliabilityEvent, o: ReplicationOptions, now: Millis, times = 1): void {
    let r = this.reliability(hostId, appId);
    for (let i = 0; i < times; i++) r = nextReliability(r, event, o, now);
    this.stmt(
      `INSERT INTO host_app_health (host_id, app_id, failures, cooldown_until, valid_run, quota, quota_day, issued_today) VALUES (?, ?, 0, NULL, ?, ?, ?, ?)
       ON CONFLICT (host_id, app_id) DO UPDATE SET valid_run = excluded.valid_run, quota = excluded.quota, quota_day = excluded.quota_day, issued_today = excluded.issued_today`,
    ).run(hostId, appId, r.validRun, r.quota, r.quotaDay, r.issuedToday);
  }

  /** A queue's placement (fixed for its life) with its learned duration (read fresh). */
  private queueView(id: number): QueueView {
    let def = this.queueDefs.get(id);
    if (!def) {
      const q = this.stmt('SELECT * FROM queues WHERE id = ?').get(id) as Row;
      const app = this.appRow(q.app_id as number);
      const shape = { cores: q.cores as number, memoryMiB: q.memory_mib as number, diskMiB: q.disk_mib as number, gpus: q.gpus as number };
      def = { queueId: id, projectId: q.project_id as number, ...placementOf(app, { resources: shape, selector: JSON.parse(q.selector as string) as Record<string, string> }) };
      this.queueDefs.set(id, def);
    }
    const estimatedMs = (this.stmt('SELECT estimated_ms FROM queues WHERE id = ?').pluck().get(id) as number | null) ?? null;
    return { ...def, estimatedMs, heads: [] };
  }

  private readonly queueDefs = new Map<number, Omit<QueueView, 'estimatedMs' | 'heads'>>();

  /**
   * The oldest active tasks of running jobs, with what speculation decides on; jobs that
   * already have a task on this host are left out (two copies of a job never share a host).
   * Copies count as much as first tasks: a job whose first task failed may be left running on
   * a slow copy.
   */
  private runningForDuplicates(hostId: number, scan: number): RunningTask[] {
    const rows = this.stmt(
      // One pass over the active tasks (a partial index: the planner would rather read every
      // task in job order for the window); the window counts each job's copies.
      `WITH active AS (SELECT id, job_id, host_id, created_at, progress FROM tasks INDEXED BY tasks_active_by_start WHERE state IN (${ACTIVE_TASK_SQL}))
       SELECT a.id, a.job_id, a.created_at, a.progress, j.queue_id, h.pace AS host_pace, count(*) OVER (PARTITION BY a.job_id) AS copies
       FROM active a JOIN jobs j ON j.id = a.job_id LEFT JOIN hosts h ON h.id = a.host_id
       WHERE j.state = 'running' AND j.queue_id IS NOT NULL AND j.quorum = 1 AND j.replicas_wanted = 0
         AND a.job_id NOT IN (SELECT job_id FROM tasks WHERE host_id = ? AND state IN (${ACTIVE_TASK_SQL}))
       ORDER BY a.created_at LIMIT ?`,
    ).all(hostId, scan) as Row[];
    const out: RunningTask[] = [];
    const views = new Map<number, QueueView>();
    for (const r of rows) {
      const id = r.queue_id as number;
      if (!views.has(id)) views.set(id, this.queueView(id));
      const { queueId: _q, projectId: _p, heads: _h, ...placement } = views.get(id)!;
      // A copy's result would be accepted alone: never for an app whose results need a quorum.
      if (this.appRow(placement.appId).replicas > 1) continue;
      out.push({
        ...placement, jobId: r.job_id as number, taskId: r.id as number, startedAt: r.created_at as number,
        progress: (r.progress as number | null) ?? null, copies: r.copies as number, hostPace: (r.host_pace as number | null) ?? null,
      });
    }
    return out;
  }

  private readonly apps = new Map<number, App>();

  /** App versions are immutable: each is read once. */
  private appRow(id: number): App {
    let a = this.apps.get(id);
    if (!a) {
      a = mapApp(this.stmt('SELECT * FROM apps WHERE id = ?').get(id) as Row);
      this.apps.set(id, a);
    }
    return a;
  }

  /** A claimed task as a retried work request sees it again. */
  private claimed(task: Task): ClaimedTask {
    const job = mapJob(this.stmt('SELECT * FROM jobs WHERE id = ?').get(task.jobId) as Row);
    return { task, job, app: this.appRow(job.appId), projectName: this.projectName(job.projectId) };
  }

  private projectName(id: number): string {
    return this.stmt('SELECT name FROM projects WHERE id = ?').pluck().get(id) as string;
  }

  private taskRow(id: number): Task | null {
    const r = this.stmt('SELECT * FROM tasks WHERE id = ?').get(id) as Row | undefined;
    return r ? mapTask(r) : null;
  }

  async heartbeat(req: HeartbeatRequest, now: Millis): Promise<HeartbeatResult> {
    return this.grouped((): HeartbeatResult => {
      this.stmt('UPDATE hosts SET last_seen_at = ? WHERE id = ?').run(now, req.hostId);
      const leases: HeartbeatResult['leases'] = [];
      const abort: HeartbeatResult['abort'] = [];
      const lease = now + req.leaseMs;
      for (const report of req.tasks) {
        const r = this.stmt(
          `SELECT t.state AS task_state, t.reason AS task_reason, j.state AS job_state
           FROM tasks t JOIN jobs j ON j.id = t.job_id WHERE t.id = ? AND t.host_id = ?`,
        ).get(report.taskId, req.hostId) as Row | undefined;
        const why = !r
          ? 'the server knows no such task of this host'
          : !isActiveTask(r.task_state as TaskState)
            ? `the task is ${r.task_state as string}${r.task_reason ? ` (${r.task_reason as string})` : ''}`
            : r.job_state !== 'running'
              ? `its job is ${r.job_state as string}`
              : null;
        if (why !== null) {
          abort.push({ taskId: report.taskId, reason: why });
          continue;
        }
        this.stmt(
          `UPDATE tasks SET lease_expires_at = ?, state = 'running', started_at = coalesce(started_at, ?),
             progress = coalesce(?, progress), usage = coalesce(?, usage) WHERE id = ?`,
        ).run(lease, now, report.progress, report.usage ? JSON.stringify(report.usage) : null, report.taskId);
        if (report.log) this.appendLog(report.taskId, report.log);
        leases.push({ taskId: report.taskId, leaseExpiresAt: lease });
      }
      return { leases, abort };
    });
  }

  /** Adds a chunk of a task's output to its stored tail (see mergeLog). */
  private appendLog(taskId: number, chunk: LogChunk): void {
    const r = this.stmt('SELECT text, end_offset FROM task_logs WHERE task_id = ?').get(taskId) as Row | undefined;
    const merged = mergeLog(r ? { text: r.text as string, endOffset: r.end_offset as number } : null, chunk);
    if (merged === null) return;
    this.stmt('INSERT INTO task_logs (task_id, text, end_offset) VALUES (?, ?, ?) ON CONFLICT (task_id) DO UPDATE SET text = excluded.text, end_offset = excluded.end_offset')
      .run(taskId, merged.text, merged.endOffset);
  }

  async reportTask(req: ReportRequest, now: Millis): Promise<ReportResult> {
    return this.grouped((): ReportResult => {
      this.stmt('UPDATE hosts SET last_seen_at = ? WHERE id = ?').run(now, req.hostId);
      const row = this.stmt('SELECT * FROM tasks WHERE id = ? AND host_id = ?').get(req.taskId, req.hostId) as Row | undefined;
      if (!row) throw notFound(`task ${req.taskId}`);
      const task = mapTask(row);
      const jobRow = this.stmt('SELECT * FROM jobs WHERE id = ?').get(task.jobId) as Row;
      const job = mapJob(jobRow);
      const late = task.state === 'lost';
      if (!isActiveTask(task.state)) {
        if (row.report_hash === req.reportHash) return { task, job, jobStateBefore: job.state, replayed: true };
        if (late && jobMachine.isTerminal(job.state)) {
          throw new BoxgridError('lease_expired', `task ${task.id}'s lease expired before its report; the task was counted lost and its job is ${job.state}`);
        }
        if (!late) throw new BoxgridError('conflict', `task ${task.id} was already reported (${task.state}) with a different result`);
      }
      const app = this.appRow(job.appId);
      const replicated = job.quorum > 1;
      let verdict: Verdict | null = null;
      let s: Settlement;
      if (replicated) {
        const replicas = withReport(this.replicaViews(job.id), task.id, req.outcome, req.outputs, late);
        if (job.state === 'running') verdict = judge(replicas, job.replicasWanted, ruleFor(job, app));
        s = settleReplica(req.outcome, job.state, late, verdict);
      } else {
        const othersActive = this.stmt(`SELECT count(*) FROM tasks WHERE job_id = ? AND id != ? AND state IN (${ACTIVE_TASK_SQL})`).pluck().get(job.id, task.id) as number;
        s = settle(req.outcome, job, job.maxAttempts ?? app.maxAttempts, { othersActive, late });
      }
      taskMachine.assert(task.state, s.task, `task ${task.id}`);
      const exitCode = req.outcome.kind === 'succeeded' ? 0 : req.outcome.kind === 'failed' ? req.outcome.exitCode : null;
      const reason = req.outcome.kind === 'succeeded' ? null : describeOutcome(req.outcome);
      this.stmt(
        `UPDATE tasks SET state = ?, ended_at = ?, exit_code = ?, reason = ?, outcome = ?, duration_ms = ?,
           usage = coalesce(?, usage), outputs = ?, report_hash = ?, started_at = coalesce(started_at, ?) WHERE id = ?`,
      ).run(
        s.task, now, exitCode, reason, JSON.stringify(req.outcome), req.durationMs, req.usage ? JSON.stringify(req.usage) : null,
        JSON.stringify(req.outputs), req.reportHash, now - req.durationMs, task.id,
      );
      if (req.log) this.appendLog(task.id, req.log);
      let after = job;
      if (s.job !== null) {
        const attempts = s.countsAsAttempt ? job.attempts : job.attempts - 1;
        after = this.moveJob(job, s.job, s.reason, attempts, s.backoff ? retryTime(attempts, req.rules, now) : null, now);
      }
      const replication = req.rules.replication;
      if (verdict !== null) after = this.applyVerdict(after, verdict, replication, now);
      else if (replicated && req.outcome.kind === 'succeeded' && job.canonicalTaskId !== null) this.validateLate(job, app, task.id, req.hostId, req.outputs, replication, now);
      else if (!replicated && s.job === 'succeeded') after = this.setResult(after, task.id);
      if (isError(req.outcome)) this.recordReliability(req.hostId, job.appId, 'error', replication, now);
      // An unchecked success restores a quota that errors cut (a write only when one was cut).
      if (!replicated && req.outcome.kind === 'succeeded' && this.reliability(req.hostId, job.appId).quota !== null) this.recordReliability(req.hostId, job.appId, 'succeeded', replication, now);
      if (!late) {
        if (req.outcome.kind === 'succeeded' && !replicated) {
          this.recordHealth(req.hostId, job.appId, 'succeeded', req.rules, now);
          // The job's earlier failures on other hosts were the hosts', not the job's.
          const failedOn = this.stmt(`SELECT host_id FROM tasks WHERE job_id = ? AND state = 'failed' AND host_id != ? AND outcome NOT LIKE '{"kind":"aborted"%' ORDER BY id`)
            .pluck().all(job.id, req.hostId) as number[];
          for (const hostId of failedOn) this.recordHealth(hostId, job.appId, 'failed_where_others_succeeded', req.rules, now);
        }
        this.settleCharge(row, jobRow, req.durationMs);
      }
      const queueId = (jobRow.queue_id as number | null) ?? null;
      if (req.outcome.kind === 'succeeded' && queueId !== null) {
        const prev = (this.stmt('SELECT estimated_ms FROM queues WHERE id = ?').pluck().get(queueId) as number | null) ?? null;
        this.stmt('UPDATE queues SET estimated_ms = ? WHERE id = ?').run(learnDuration(prev, req.durationMs), queueId);
        // The host's pace from the time the server saw it hold the task, not the duration it
        // reports: a host claiming instant runs would otherwise look fast and draw copies of
        // other hosts' tasks. A task that may have resumed from a checkpoint says nothing of pace.
        if (job.checkpoint === null) {
          const pace = (this.stmt('SELECT pace FROM hosts WHERE id = ?').pluck().get(req.hostId) as number | null) ?? null;
          this.stmt('UPDATE hosts SET pace = ? WHERE id = ?').run(learnPace(pace, now - task.createdAt, prev), req.hostId);
        }
      }
      return { task: this.taskRow(task.id)!, job: after, jobStateBefore: job.state, replayed: false };
    });
  }

  /**
   * Moves a job to its next state (checked against the job machine); a job requeued after a
   * failure waits out its backoff (not_before) before it shows in its queue's heads again.
   */
  private moveJob(job: Job, to: JobState, reason: string | null, attempts: number, retryAt: Millis | null, now: Millis): Job {
    jobMachine.assert(job.state, to, `job ${job.id}`);
    const finished = jobMachine.isTerminal(to) ? now : null;
    this.stmt('UPDATE jobs SET state = ?, reason = ?, attempts = ?, updated_at = ?, finished_at = ?, not_before = ? WHERE id = ?')
      .run(to, reason, attempts, now, finished, retryAt, job.id);
    return { ...job, state: to, reason, attempts, updatedAt: now, finishedAt: finished, retryAt };
  }

  /** The job's replicas for the judge (domain/quorum.ts), with who stands behind each. */
  private replicaViews(jobId: number): ReplicaView[] {
    // A revoked host's results no longer count (REPLICA_VIEW_SQL).
    const rows = this.stmt(`${REPLICA_VIEW_SQL} WHERE t.job_id = ? AND h.state = 'active' ORDER BY t.id`).all(jobId) as Row[];
    return rows.map(mapReplicaView);
  }

  private setResult(job: Job, taskId: number): Job {
    this.stmt('UPDATE jobs SET canonical_task_id = ? WHERE id = ?').run(taskId, job.id);
    return { ...job, canonicalTaskId: taskId };
  }

  /** A verdict reached outside a report (a lost replica, a revoked host, a validator): the job's move, then the verdict. */
  private decide(job: Job, verdict: Verdict, o: ReplicationOptions, now: Millis): Job {
    let after = job;
    if (verdict.kind === 'accepted') after = this.moveJob(job, 'succeeded', null, job.attempts, null, now);
    if (verdict.kind === 'no_consensus') after = this.moveJob(job, 'failed', verdict.reason, job.attempts, null, now);
    return this.applyVerdict(after, verdict, o, now);
  }

  /**
   * Applies the judge's verdict on a running replicated job (whose state `settleReplica` has
   * moved already): an accepted result marks the replicas valid or invalid, names the job's
   * result and moves the hosts' records; a pending one asks for the replicas it wants.
   */
  private applyVerdict(job: Job, verdict: Verdict, o: ReplicationOptions, now: Millis): Job {
    if (verdict.kind === 'pending') {
      if (verdict.issue === 0) return job;
      const reason = wantingReplicas(job.replicasWanted + verdict.issue);
      this.stmt('UPDATE jobs SET replicas_wanted = replicas_wanted + ?, reason = ? WHERE id = ?').run(verdict.issue, reason, job.id);
      return { ...job, replicasWanted: job.replicasWanted + verdict.issue, reason };
    }
    if (verdict.kind === 'no_consensus') return job;
    if (verdict.kind === 'validate') {
      this.stmt('UPDATE jobs SET awaiting_validator = 1, reason = ? WHERE id = ?').run(AWAITING_VALIDATOR, job.id);
      return { ...job, awaitingValidator: true, reason: AWAITING_VALIDATOR };
    }
    const mark = this.stmt('UPDATE tasks SET validity = ? WHERE id = ? RETURNING host_id');
    for (const [ids, validity] of [[verdict.valid, 'valid'], [verdict.invalid, 'invalid']] as const) {
      for (const id of ids) this.recordReliability((mark.get(validity, id) as Row).host_id as number, job.appId, validity, o, now);
    }
    this.stmt('UPDATE jobs SET replicas_wanted = 0, awaiting_validator = 0 WHERE id = ?').run(job.id);
    return { ...this.setResult(job, verdict.canonical), replicasWanted: 0, awaitingValidator: false };
  }

  /** A replica that succeeds after its job was decided is checked against the replicas found valid (domain/quorum.ts `lateValidity`). */
  private validateLate(job: Job, app: App, taskId: number, hostId: number, outputs: Record<string, OutputFile>, o: ReplicationOptions, now: Millis): void {
    const valid = (this.stmt(`SELECT outputs FROM tasks WHERE job_id = ? AND validity = 'valid'`).pluck().all(job.id) as string[]).map((x) => JSON.parse(x) as Record<string, OutputFile>);
    const validity = lateValidity(outputs, valid, app.validator !== null);
    if (validity === null) return;
    this.stmt('UPDATE tasks SET validity = ? WHERE id = ?').run(validity, taskId);
    this.recordReliability(hostId, job.appId, validity, o, now);
  }

  /** A task ended: its project pays for the resource-time it really held, less what it was charged. */
  private settleCharge(task: Row, job: Row, heldMs: number): void {
    const queueId = (job.queue_id as number | null) ?? null;
    const host = this.hostRow(task.host_id as number);
    if (queueId === null || !host) return;
    const p = this.stmt('SELECT share_weight, fair_pass FROM projects WHERE id = ?').get(job.project_id) as Row;
    const pass = settledPass(p.fair_pass as number, (task.charge as number | null) ?? 0, this.queueView(queueId).resources, host.resources, heldMs, p.share_weight as number);
    this.stmt('UPDATE projects SET fair_pass = ? WHERE id = ?').run(pass, job.project_id);
  }

  private recordHealth(hostId: number, appId: number, event: 'succeeded' | 'failed_where_others_succeeded', rules: SchedulingOptions, now: Millis): void {
    const r = this.stmt('SELECT failures, cooldown_until FROM host_app_health WHERE host_id = ? AND app_id = ?').get(hostId, appId) as Row | undefined;
    const prev: HostAppHealth = { failures: (r?.failures as number | undefined) ?? 0, cooldownUntil: (r?.cooldown_until as number | null | undefined) ?? null };
    const next = nextHealth(prev, event, rules, now);
    if (next.failures === prev.failures && next.cooldownUntil === prev.cooldownUntil) return;
    this.stmt(
      `INSERT INTO host_app_health (host_id, app_id, failures, cooldown_until) VALUES (?, ?, ?, ?)
       ON CONFLICT (host_id, app_id) DO UPDATE SET failures = excluded.failures, cooldown_until = excluded.cooldown_until`,
    ).run(hostId, appId, next.failures, next.cooldownUntil);
  }

  async getHostTask(hostId: number, taskId: number): Promise<{ task: Task; job: Job } | null> {
    const row = this.stmt('SELECT * FROM tasks WHERE id = ? AND host_id = ?').get(taskId, hostId) as Row | undefined;
    if (!row) return null;
    const task = mapTask(row);
    return { task, job: mapJob(this.stmt('SELECT * FROM jobs WHERE id = ?').get(task.jobId) as Row) };
  }

  async recordCheckpoint(hostId: number, taskId: number, sha256: string, now: Millis): Promise<boolean> {
    const r = this.stmt(
      `UPDATE jobs SET checkpoint = ?, updated_at = ? WHERE id = (
         SELECT job_id FROM tasks WHERE id = ? AND host_id = ? AND state IN (${ACTIVE_TASK_SQL})) AND state = 'running'`,
    ).run(sha256, now, taskId, hostId);
    return r.changes === 1;
  }

  async expireLeases(now: Millis, limit: number, rules: SchedulingOptions): Promise<ExpiredTask[]> {
    return this.db.transaction((): ExpiredTask[] => {
      const rows = this.stmt(
        `SELECT * FROM tasks WHERE state IN (${ACTIVE_TASK_SQL}) AND lease_expires_at < ? ORDER BY lease_expires_at LIMIT ?`,
      ).all(now, limit) as Row[];
      const out: ExpiredTask[] = [];
      for (const row of rows) {
        const task = mapTask(row);
        this.stmt(`UPDATE tasks SET state = 'lost', ended_at = ?, reason = 'its lease expired: the host stopped reporting' WHERE id = ?`).run(now, task.id);
        const jobRow = this.stmt('SELECT * FROM jobs WHERE id = ?').get(task.jobId) as Row;
        const job = mapJob(jobRow);
        this.settleCharge(row, jobRow, now - task.createdAt);
        const app = this.appRow(job.appId);
        if (job.quorum > 1 && job.state === 'running') {
          // A lost replica: the judge asks for another, or gives up when the limit is reached.
          const after = this.decide(job, judge(this.replicaViews(job.id), job.replicasWanted, ruleFor(job, app)), rules.replication, now);
          out.push({ taskId: task.id, job: after, jobChanged: after.state !== job.state });
          continue;
        }
        const othersActive = this.stmt(`SELECT count(*) FROM tasks WHERE job_id = ? AND state IN (${ACTIVE_TASK_SQL})`).pluck().get(job.id) as number;
        if (job.state !== 'running' || othersActive > 0) {
          out.push({ taskId: task.id, job, jobChanged: false }); // ended already, or another task carries it
          continue;
        }
        const maxAttempts = job.maxAttempts ?? app.maxAttempts;
        const spent = job.attempts >= maxAttempts;
        const after = spent
          ? this.moveJob(job, 'failed', `its host stopped reporting (attempt ${job.attempts} of ${maxAttempts})`, job.attempts, null, now)
          : this.moveJob(job, 'queued', `attempt ${job.attempts} lost: its host stopped reporting; retrying`, job.attempts, retryTime(job.attempts, rules, now), now);
        out.push({ taskId: task.id, job: after, jobChanged: true });
      }
      return out;
    }).immediate();
  }

  async failPastDeadline(now: Millis, limit: number): Promise<Job[]> {
    return this.db.transaction((): Job[] => {
      const rows = this.stmt(
        `SELECT * FROM jobs WHERE deadline IS NOT NULL AND deadline <= ? AND state IN ('queued', 'running') ORDER BY deadline LIMIT ?`,
      ).all(now, limit) as Row[];
      return rows.map(mapJob).map((job) =>
        this.moveJob(job, 'failed', `its deadline passed (${new Date(job.deadline!).toISOString()}) before it finished`, job.attempts, null, now),
      );
    }).immediate();
  }

  async getTaskLog(projectId: number, taskId: number): Promise<TaskLog | null> {
    const r = this.stmt(
      `SELECT t.id, t.job_id, t.state, l.text, l.end_offset FROM tasks t JOIN jobs j ON j.id = t.job_id
       LEFT JOIN task_logs l ON l.task_id = t.id WHERE t.id = ? AND j.project_id = ?`,
    ).get(taskId, projectId) as Row | undefined;
    if (!r) return null;
    return {
      taskId: r.id as number, jobId: r.job_id as number, state: r.state as TaskState,
      text: (r.text as string | null) ?? '', endOffset: (r.end_offset as number | null) ?? 0,
    };
  }

  // ── explain ─────────────────────────────────────────────────────────────

  /**
   * Two range reads of jobs_queue_heads (higher priorities; then the same priority and smaller
   * ids), each stopped at `limit`, and the jobs whose backoff ended by `now` that no claim has
   * put back in the index yet (through jobs_backoff: each claim clears them, so they are few).
   */
  async jobsAhead(projectId: number, jobId: number, now: Millis, limit: number): Promise<number | null> {
    const job = this.stmt(`SELECT queue_id, priority FROM jobs WHERE id = ? AND project_id = ? AND state = 'queued'`).get(jobId, projectId) as Row | undefined;
    if (!job || job.queue_id === null) return null;
    const n = this.stmt(
      `SELECT (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE queue_id = @q AND state = 'queued' AND not_before IS NULL AND priority > @p LIMIT @limit))
            + (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE queue_id = @q AND state = 'queued' AND not_before IS NULL AND priority = @p AND id < @id LIMIT @limit))
            + (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE not_before IS NOT NULL AND not_before <= @now AND queue_id = @q AND state = 'queued'
                 AND (priority > @p OR (priority = @p AND id < @id)) LIMIT @limit))`,
    ).pluck().get({ q: job.queue_id, p: job.priority, id: jobId, now, limit }) as number;
    return Math.min(n, limit);
  }

  /** Per host, a seek of host_app_health's key (host, app): no index by app is needed. */
  async jobsAwaitingValidator(limit: number): Promise<Array<{ job: Job; app: App; tasks: Task[] }>> {
    const rows = this.stmt(`SELECT * FROM jobs WHERE awaiting_validator = 1 AND state = 'running' ORDER BY id LIMIT ?`).all(limit) as Row[];
    return rows.map((r) => {
      const job = mapJob(r);
      return { job, app: this.appRow(job.appId), tasks: (this.stmt('SELECT * FROM tasks WHERE job_id = ? ORDER BY id').all(job.id) as Row[]).map(mapTask) };
    });
  }

  async recordValidation(req: { jobId: number; basis: number[]; answer: ValidatorAnswer; rules: SchedulingOptions }, now: Millis): Promise<{ job: Job; stale: boolean } | null> {
    return this.grouped(() => {
      const row = this.stmt(`SELECT * FROM jobs WHERE id = ? AND state = 'running' AND awaiting_validator = 1`).get(req.jobId) as Row | undefined;
      if (!row) return null;
      const job = mapJob(row);
      const app = this.appRow(job.appId);
      const verdict = judgeValidation(this.replicaViews(job.id), job.replicasWanted, ruleFor(job, app), req.basis, req.answer);
      if (verdict.kind === 'stale') return { job, stale: true };
      this.stmt('UPDATE jobs SET awaiting_validator = 0, reason = NULL WHERE id = ?').run(job.id);
      return { job: this.decide({ ...job, awaitingValidator: false, reason: null }, verdict, req.rules.replication, now), stale: false };
    });
  }

  async hostReliability(hostId: number, appId: number): Promise<HostReliability> {
    return this.reliability(hostId, appId);
  }

  async hostsCoolingDown(appId: number, now: Millis): Promise<number[]> {
    return this.stmt(
      `SELECT h.id FROM hosts h CROSS JOIN host_app_health a ON a.host_id = h.id AND a.app_id = ? WHERE a.cooldown_until > ? ORDER BY h.id`,
    ).pluck().all(appId, now) as number[];
  }

  /**
   * Counted per queue in the two partial indexes that hold the queued jobs (jobs_queue_heads,
   * jobs_backoff): index entries only, the queued jobs and no others.
   */
  async demand(now: Millis): Promise<DemandShape[]> {
    const rows = this.stmt(
      `SELECT q.cores, q.memory_mib, q.disk_mib, q.gpus, q.selector, q.app_id, c.ready, c.backing_off FROM (
         SELECT queue_id, sum(ready) AS ready, sum(backing_off) AS backing_off FROM (
           SELECT queue_id, count(*) AS ready, 0 AS backing_off FROM jobs WHERE state = 'queued' AND not_before IS NULL GROUP BY queue_id
           UNION ALL
           SELECT queue_id, sum(not_before <= @now), sum(not_before > @now) FROM jobs WHERE not_before IS NOT NULL AND state = 'queued' GROUP BY queue_id
         ) GROUP BY queue_id
       ) c JOIN queues q ON q.id = c.queue_id`,
    ).all({ now }) as Row[];
    return demandShapes(rows.map((row) => ({ row, app: this.appRow(row.app_id as number) })));
  }

  /** Counted per queue in the two partial indexes that hold the queued jobs, as `demand` does. */
  async queueDepth(): Promise<QueueDepth[]> {
    const rows = this.stmt(QUEUE_DEPTH_SQL).all() as Row[];
    return rows.map(queueDepthOf);
  }

  async activeTaskCounts(): Promise<{ assigned: number; running: number }> {
    const rows = this.stmt(`SELECT state, count(*) AS n FROM tasks WHERE state IN ('assigned', 'running') GROUP BY state`).all() as Row[];
    return activeCountsOf(rows);
  }

  async countHostsSeen(since: Millis): Promise<number> {
    return this.stmt('SELECT count(*) FROM hosts WHERE last_seen_at >= ?').pluck().get(since) as number;
  }

  async reservedHostFor(jobId: number): Promise<number | null> {
    return (this.stmt('SELECT id FROM hosts WHERE reserved_job = ? ORDER BY id LIMIT 1').pluck().get(jobId) as number | undefined) ?? null;
  }
}

function uniqueViolation(e: unknown, make: () => BoxgridError): unknown {
  return e instanceof Error && (e as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE' ? make() : e;
}
