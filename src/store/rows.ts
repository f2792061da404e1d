import { BoxgridError } from '../domain/errors.js';
import type { App, AppSpec, AuditEntry, TaskValidity, Batch, EnrollTokenRecord, Host, Job, JobSpec, Millis, OutputFile, Project, RuntimeKind, Site, Task, User } from '../domain/model.js';
import type { TaskOutcome, TaskUsage } from '../domain/outcomes.js';
import { defaultMaxReplicas, type ReplicaView } from '../domain/quorum.js';
import type { JobState, TaskState } from '../domain/states.js';
import { withOverrides } from '../domain/resources.js';
import type { SchedulingOptions } from '../scheduling/options.js';
import { retryDelayMs } from '../scheduling/retry.js';
import type { HostReliability } from '../scheduling/replication.js';
import type { NewWorkflow, WorkflowChange, WorkflowRecord, WorkflowState } from '../domain/workflow.js';
import type { DemandShape, EnrollTokenSummary, LogChunk, QueueDepth } from './store.js';

/**
 * What every SQL adapter shares: rows (snake_case columns, JSON kept as text, times as epoch
 * ms) mapped to the domain model, and the small rules for what is written. An adapter's SQL
 * differs; what its rows mean does not.
 */
export type Row = Record<string, unknown>;

/** The parts of a job kept in the `spec` JSON column. */
export type StoredJobSpec = Omit<JobSpec, 'priority' | 'deadline'>;

/** How much of a task's output a store keeps (the tail), UTF-16 code units. */
export const LOG_KEEP = 64 * 1024;

/**
 * A task's stored log tail after a chunk arrives, or null when the chunk adds nothing. Chunks
 * carry their offset, so a retried heartbeat (a chunk already stored) adds nothing and a partly
 * new one adds its new part only.
 */
export function mergeLog(stored: { text: string; endOffset: number } | null, chunk: LogChunk): { text: string; endOffset: number } | null {
  const end = stored?.endOffset ?? 0;
  const chunkEnd = chunk.offset + chunk.text.length;
  if (chunkEnd <= end) return null;
  const fresh = chunk.text.slice(Math.max(0, end - chunk.offset));
  // After a gap (output the agent dropped) the stored text is not followed by this piece: keep
  // only the piece, so that the text still starts at end_offset - length (TaskLog's contract).
  const before = chunk.offset > end ? '' : (stored?.text ?? '');
  const text = before + fresh;
  return { text: text.length > LOG_KEEP ? text.slice(text.length - LOG_KEEP) : text, endOffset: chunkEnd };
}

export function idempotencyConflict(): BoxgridError {
  return new BoxgridError('conflict', 'Idempotency-Key was already used for a different request', { field: 'headers/idempotency-key' });
}

export function mapUser(r: Row | undefined): User | null {
  return r ? { id: r.id as number, name: r.name as string, operator: r.operator === 1 || r.operator === true, createdAt: r.created_at as number } : null;
}

export function mapProject(r: Row): Project {
  return { id: r.id as number, name: r.name as string, shareWeight: r.share_weight as number, createdAt: r.created_at as number };
}

export function mapApp(r: Row): App {
  const spec = JSON.parse(r.spec as string) as AppSpec;
  // Fields added after apps were first stored get their defaults.
  return {
    ...spec, nativeCommand: spec.nativeCommand ?? null, maxReplicas: spec.maxReplicas ?? defaultMaxReplicas(spec.replicas),
    adaptiveReplication: spec.adaptiveReplication ?? false, validator: spec.validator ?? null, id: r.id as number, projectId: r.project_id as number, version: r.version as number, createdAt: r.created_at as number };
}

export function mapBatch(r: Row): Batch {
  return {
    id: r.id as number, projectId: r.project_id as number, appName: r.app_name as string, appVersion: r.app_version as number,
    size: r.size as number, labels: JSON.parse(r.labels as string), createdAt: r.created_at as number,
  };
}

/**
 * Serialises specs for the `spec` column: only non-empty parts are stored, in the order args,
 * env, inputs, resources, labels, params (stringifying empty objects is a measurable share of a
 * 100k insert). The string is built directly, without an intermediate object, and the JSON of
 * the last object seen for each part is reused: the jobs of a batch mostly share their maps
 * (the template's env, the batch's labels).
 */
export function specEncoder(): (j: JobSpec) => string {
  const memo = () => {
    let last: object | null = null;
    let json = '';
    return (o: object): string => {
      if (o !== last) {
        last = o;
        json = JSON.stringify(o);
      }
      return json;
    };
  };
  const [args, env, inputs, resources, labels, selector, params] = [memo(), memo(), memo(), memo(), memo(), memo(), memo()];
  return (j) => {
    let s = '{"args":' + args(j.args);
    if (!isEmpty(j.env)) s += ',"env":' + env(j.env);
    if (!isEmpty(j.inputs)) s += ',"inputs":' + inputs(j.inputs);
    if (!isEmpty(j.resources)) s += ',"resources":' + resources(j.resources);
    if (!isEmpty(j.labels)) s += ',"labels":' + labels(j.labels);
    if (j.selector && !isEmpty(j.selector)) s += ',"selector":' + selector(j.selector);
    if (!isEmpty(j.params)) s += ',"params":' + params(j.params);
    if (j.maxAttempts !== undefined) s += ',"maxAttempts":' + j.maxAttempts;
    return s + '}';
  };
}

/** When a job requeued after its attempt number `attempts` failed may run again (null: now). */
export function retryTime(attempts: number, rules: SchedulingOptions, now: Millis): Millis | null {
  const delay = retryDelayMs(attempts, rules);
  return delay > 0 ? now + delay : null;
}

/**
 * The queue a job of `app` belongs to, as the columns of its key (app, resources with the job's
 * overrides, canonical selector) and that key as one string.
 */
export function queueKeyOf(app: Pick<App, 'id' | 'resources'>, j: Pick<JobSpec, 'resources' | 'selector'>): { key: string; args: [number, number, number, number, number, string] } {
  const r = withOverrides(app.resources, j.resources);
  const selector = canonicalSelector(j.selector);
  return { key: `${app.id}|${r.cores}|${r.memoryMiB}|${r.diskMiB}|${r.gpus}|${selector}`, args: [app.id, r.cores, r.memoryMiB, r.diskMiB, r.gpus, selector] };
}

/** A selector as stored in a queue's key: keys sorted, so equal selectors are equal strings. */
function canonicalSelector(selector: Record<string, string> | undefined): string {
  if (!selector || isEmpty(selector)) return '{}';
  return JSON.stringify(Object.fromEntries(Object.keys(selector).sort().map((k) => [k, selector[k]])));
}

export function isEmpty(o: object): boolean {
  for (const _ in o) return false;
  return true;
}

export function mapJob(r: Row): Job {
  const stored = JSON.parse(r.spec as string) as Partial<StoredJobSpec>;
  const s: StoredJobSpec = {
    args: stored.args ?? [], env: stored.env ?? {}, inputs: stored.inputs ?? {}, resources: stored.resources ?? {},
    labels: stored.labels ?? {}, selector: stored.selector ?? {}, params: stored.params ?? {},
    ...(stored.maxAttempts === undefined ? {} : { maxAttempts: stored.maxAttempts }),
  };
  return {
    id: r.id as number,
    projectId: r.project_id as number,
    appId: r.app_id as number,
    appName: r.app_name as string,
    appVersion: r.app_version as number,
    batchId: (r.batch_id as number | null) ?? null,
    state: r.state as JobState,
    args: s.args,
    env: s.env,
    inputs: s.inputs,
    resources: s.resources,
    labels: s.labels,
    selector: s.selector,
    params: s.params,
    ...(s.maxAttempts === undefined ? {} : { maxAttempts: s.maxAttempts }),
    priority: r.priority as number,
    deadline: (r.deadline as number | null) ?? null,
    attempts: r.attempts as number,
    reason: (r.reason as string | null) ?? null,
    createdAt: r.created_at as number,
    updatedAt: r.updated_at as number,
    finishedAt: (r.finished_at as number | null) ?? null,
    checkpoint: (r.checkpoint as string | null) ?? null,
    retryAt: (r.not_before as number | null) ?? null,
    quorum: (r.quorum as number | undefined) ?? 1,
    replicasWanted: (r.replicas_wanted as number | undefined) ?? 0,
    awaitingValidator: r.awaiting_validator === 1 || r.awaiting_validator === true,
    canonicalTaskId: (r.canonical_task_id as number | null | undefined) ?? null,
  };
}

/** A JSON text column's value, or null when the column is. */
function json<T>(v: unknown): T | null {
  return v === null || v === undefined ? null : (JSON.parse(v as string) as T);
}

/** The columns mapReplicaView reads: a job's tasks with their hosts (callers add WHERE and ORDER BY). */
export const REPLICA_VIEW_SQL = 'SELECT t.id, t.state, t.outcome, t.outputs, t.host_id, h.owner FROM tasks t JOIN hosts h ON h.id = t.host_id';

/** A task row (with its host's owner) as the judge of replicas sees it. */
export function mapReplicaView(r: Row): ReplicaView {
  return {
    taskId: r.id as number, voter: (r.owner as string | null) === null ? `host ${r.host_id as number}` : `owner ${r.owner as string}`,
    state: r.state as TaskState, outcome: json<TaskOutcome>(r.outcome), outputs: json<Record<string, OutputFile>>(r.outputs) ?? {},
  };
}

/** A host_app_health row's replication columns. */
export function mapReliability(r: Row): HostReliability {
  return { validRun: r.valid_run as number, quota: (r.quota as number | null) ?? null, quotaDay: r.quota_day as number, issuedToday: r.issued_today as number };
}

export function mapHost(r: Row): Host {
  return {
    id: r.id as number, siteId: r.site_id as number, name: r.name as string, state: r.state as Host['state'],
    resources: JSON.parse(r.resources as string), platform: r.platform as string, labels: JSON.parse((r.labels as string | undefined) ?? '{}'),
    createdAt: r.created_at as number, lastSeenAt: (r.last_seen_at as number | null) ?? null,
    pace: (r.pace as number | null | undefined) ?? null,
    owner: (r.owner as string | null | undefined) ?? null,
  };
}

/** An enrolment token row without its secret's hash, with its site's name (`site_name`). */
export function mapEnrollTokenSummary(r: Row): EnrollTokenSummary {
  const { secretHash: _hash, ...t } = mapEnrollToken(r);
  return { ...t, siteName: r.site_name as string };
}

/** Why a revoked host's tasks ended, and why their jobs went back to the queue (Store.revokeHost). */
export const HOST_REVOKED = 'its host was revoked';
export const REQUEUED_AFTER_REVOKE = 'its host was revoked; requeued (the attempt is not counted)';

/** The attempts a job keeps when the tasks aborted with their host are given back: one, if a task was of its current attempt. */
export function attemptsAfterRevoke(job: Job, abortedAttempts: number[]): number {
  return abortedAttempts.includes(job.attempts) ? Math.max(0, job.attempts - 1) : job.attempts;
}

export function mapSite(r: Row): Site {
  return { id: r.id as number, name: r.name as string, createdAt: r.created_at as number, allowCidrs: JSON.parse((r.allow_cidrs as string | undefined) ?? '[]') };
}

/** An audit_log row, with the project's name when the query joined it (`project_name`). */
export function mapAudit(r: Row): AuditEntry & { projectName: string | null } {
  return {
    id: r.id as number, at: r.at as number, actorUserId: (r.actor_user_id as number | null) ?? null, actorName: r.actor_name as string,
    action: r.action as string, target: r.target as string, projectId: (r.project_id as number | null) ?? null,
    detail: JSON.parse(r.detail as string), projectName: (r.project_name as string | null | undefined) ?? null,
  };
}

export function mapEnrollToken(r: Row): EnrollTokenRecord {
  return {
    id: r.id as string, siteId: r.site_id as number, secretHash: r.secret_hash as Buffer, label: r.label as string,
    usesLeft: (r.uses_left as number | null) ?? null, expiresAt: (r.expires_at as number | null) ?? null,
    revokedAt: (r.revoked_at as number | null) ?? null, createdAt: r.created_at as number, owner: (r.owner as string | null | undefined) ?? null,
  };
}

export function mapWorkflow(r: Row): WorkflowRecord {
  return {
    id: r.id as number, projectId: r.project_id as number, name: r.name as string, state: r.state as WorkflowState,
    reason: (r.reason as string | null) ?? null, createdBy: r.created_by as number, source: r.source as string,
    spec: JSON.parse(r.spec as string), files: JSON.parse(r.files as string), progress: JSON.parse(r.progress as string),
    resumedFrom: (r.resumed_from as number | null) ?? null, version: r.version as number,
    createdAt: r.created_at as number, updatedAt: r.updated_at as number, endedAt: (r.ended_at as number | null) ?? null,
  };
}

/** The columns a new workflow is written with (Store.createWorkflow), in the order of workflowInsertValues. */
export const WORKFLOW_INSERT_COLUMNS = [
  'project_id', 'name', 'state', 'created_by', 'source', 'spec', 'files', 'progress', 'resumed_from', 'version', 'created_at', 'updated_at', 'idem_key', 'request_hash',
] as const;

/** A new workflow's values for WORKFLOW_INSERT_COLUMNS: version 1, updated when created. */
export function workflowInsertValues(w: NewWorkflow, idempotency: { key: string; requestHash: string } | null): unknown[] {
  return [
    w.projectId, w.name, w.state, w.createdBy, w.source, JSON.stringify(w.spec), JSON.stringify(w.files), JSON.stringify(w.progress),
    w.resumedFrom, 1, w.createdAt, w.createdAt, idempotency?.key ?? null, idempotency?.requestHash ?? null,
  ];
}

/** A change's values for `SET state, reason, progress, updated_at, ended_at` (Store.updateWorkflow). */
export function workflowChangeValues(c: WorkflowChange): unknown[] {
  return [c.state, c.reason, JSON.stringify(c.progress), c.updatedAt, c.endedAt];
}

/** The workflow a repeated idempotency key found: the first request's, or `conflict` for another request. */
export function replayedWorkflow(prior: Row, requestHash: string): WorkflowRecord {
  if (prior.request_hash !== requestHash) throw idempotencyConflict();
  return mapWorkflow(prior);
}

export function mapTask(r: Row): Task {
  return {
    id: r.id as number, jobId: r.job_id as number, hostId: r.host_id as number, attempt: r.attempt as number,
    replica: r.replica as number, state: r.state as Task['state'], runtime: r.runtime as RuntimeKind,
    leaseExpiresAt: r.lease_expires_at as number, createdAt: r.created_at as number,
    startedAt: (r.started_at as number | null) ?? null, endedAt: (r.ended_at as number | null) ?? null,
    exitCode: (r.exit_code as number | null) ?? null, reason: (r.reason as string | null) ?? null,
    progress: (r.progress as number | null) ?? null, usage: json<TaskUsage>(r.usage), outcome: json<TaskOutcome>(r.outcome),
    durationMs: (r.duration_ms as number | null) ?? null, outputs: json<Record<string, OutputFile>>(r.outputs) ?? {},
    validity: (r.validity as TaskValidity | null | undefined) ?? null,
  };
}

/**
 * `Store.queueDepth` in the SQL both adapters speak: queued jobs counted per queue in the two
 * partial indexes that hold them (jobs_queue_heads, jobs_backoff), summed by project, app and resources.
 */
export const QUEUE_DEPTH_SQL = `SELECT p.name AS project, a.name AS app, q.cores, q.memory_mib, q.disk_mib, q.gpus, sum(c.n) AS jobs FROM (
    SELECT queue_id, count(*) AS n FROM jobs WHERE state = 'queued' AND not_before IS NULL GROUP BY queue_id
    UNION ALL
    SELECT queue_id, count(*) FROM jobs WHERE not_before IS NOT NULL AND state = 'queued' GROUP BY queue_id
  ) c JOIN queues q ON q.id = c.queue_id JOIN apps a ON a.id = q.app_id JOIN projects p ON p.id = q.project_id
  GROUP BY p.name, a.name, q.cores, q.memory_mib, q.disk_mib, q.gpus
  ORDER BY jobs DESC, project, app, q.cores, q.memory_mib, q.disk_mib, q.gpus`;

/** A row of `queueDepth` (project, app, cores, memory_mib, disk_mib, gpus, jobs); drivers may return counts as strings. */
export function queueDepthOf(r: Row): QueueDepth {
  return {
    project: r.project as string, app: r.app as string,
    resources: { cores: Number(r.cores), memoryMiB: Number(r.memory_mib), diskMiB: Number(r.disk_mib), gpus: Number(r.gpus) },
    jobs: Number(r.jobs),
  };
}

/** Rows of (state, n) over the active tasks. */
export function activeCountsOf(rows: Row[]): { assigned: number; running: number } {
  const out = { assigned: 0, running: 0 };
  for (const r of rows) if (r.state === 'assigned' || r.state === 'running') out[r.state] = Number(r.n);
  return out;
}

/**
 * Demand rows per queue (cores, memory_mib, disk_mib, gpus, selector, ready, backing_off) with
 * each queue's app, summed by what the jobs need of a host.
 */
export function demandShapes(rows: Array<{ row: Row; app: Pick<App, 'nativeCommand' | 'maxRuntimeSeconds'> }>): DemandShape[] {
  const shapes = new Map<string, DemandShape>();
  for (const { row: r, app } of rows) {
    const d: DemandShape = {
      resources: { cores: r.cores as number, memoryMiB: r.memory_mib as number, diskMiB: r.disk_mib as number, gpus: r.gpus as number },
      native: app.nativeCommand !== null && app.nativeCommand !== undefined, maxRuntimeSeconds: app.maxRuntimeSeconds, selector: r.selector !== '{}',
      ready: 0, backingOff: 0,
    };
    const key = JSON.stringify([d.resources, d.native, d.maxRuntimeSeconds, d.selector]);
    const shape = shapes.get(key) ?? d;
    shape.ready += Number(r.ready ?? 0);
    shape.backingOff += Number(r.backing_off ?? 0);
    shapes.set(key, shape);
  }
  const order = (d: DemandShape) => [d.resources.cores, d.resources.memoryMiB, d.resources.diskMiB, d.resources.gpus, d.maxRuntimeSeconds, Number(d.native), Number(d.selector)];
  return [...shapes.values()].sort((a, b) => {
    const x = order(a);
    const y = order(b);
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
    return 0;
  });
}
