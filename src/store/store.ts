import type {
  App, AppSpec, AuditEntry, Batch, BlobRecord, EnrollTokenRecord, Host, Job, JobSpec, Millis, Project, Site, StateCounts, Task,
  TokenRecord, User,
} from '../domain/model.js';
import type { Role } from '../domain/roles.js';
import type { JobState, TaskState } from '../domain/states.js';
import type { TaskOutcome, TaskUsage } from '../domain/outcomes.js';
import type { OutputFile } from '../domain/model.js';
import type { ValidatorAnswer } from '../domain/quorum.js';
import type { ClaimPlan, QueueView, ReplicaWork } from '../scheduling/plan.js';
import type { HostReliability, ReplicationOptions } from '../scheduling/replication.js';
import type { ProjectShare } from '../scheduling/fair-share.js';
import type { RunningTask } from '../scheduling/speculation.js';
import type { SchedulingOptions } from '../scheduling/options.js';
import type { RuntimeKind } from '../domain/model.js';
import type { Resources } from '../domain/resources.js';
import type { EventRelay } from '../service/events.js';
import type { NewWorkflow, WorkflowChange, WorkflowRecord } from '../domain/workflow.js';

/**
 * The persistence port. Adapters (SQLite now, PostgreSQL later) implement it and must pass
 * test/store/conformance.ts. It exposes no driver, connection or transaction type: each method
 * is one atomic unit of work, and every method is asynchronous even where the driver is not.
 *
 * Errors: adapters throw BoxgridError (`already_exists`, `not_found`, `illegal_transition`,
 * `conflict`) for outcomes a caller can act on, and let anything else propagate.
 */
export interface Store {
  /** Applies pending numbered migrations; refuses to run if an applied one was edited. */
  migrate(): Promise<{ applied: number[] }>;
  /** Resolves when the store answers a trivial query (readiness). */
  ping(): Promise<void>;
  close(): Promise<void>;

  // ── identity ──────────────────────────────────────────────────────────────
  countUsers(): Promise<number>;
  createUser(name: string, operator: boolean, now: Millis): Promise<User>;
  getUser(id: number): Promise<User | null>;
  getUserByName(name: string): Promise<User | null>;
  createProject(name: string, shareWeight: number, now: Millis): Promise<Project>;
  getProjectByName(name: string): Promise<Project | null>;
  /** Changes a project's fair-share weight. */
  setShareWeight(projectId: number, shareWeight: number): Promise<void>;
  /** All projects for operators; otherwise those the user is a member of, with the role. */
  listProjectsFor(user: User): Promise<Array<Project & { role: Role }>>;
  setMembership(projectId: number, userId: number, role: Role): Promise<void>;
  getRole(projectId: number, userId: number): Promise<Role | null>;
  insertToken(token: TokenRecord): Promise<void>;
  getToken(id: string): Promise<TokenRecord | null>;
  /** Marks a token revoked; false if it was unknown or already revoked. */
  revokeToken(id: string, now: Millis): Promise<boolean>;
  /**
   * First start, in one transaction: if there are no users yet, an operator, a project where it
   * is admin, and its token. False (and nothing written) when users already exist.
   */
  bootstrap(b: Bootstrap, now: Millis): Promise<boolean>;

  // ── apps ──────────────────────────────────────────────────────────────────
  /**
   * Creates version 1 of a new app (`mode: 'new'`, fails `already_exists` if the name is taken)
   * or the next version of an existing one (`mode: 'version'`, fails `not_found` otherwise).
   */
  createAppVersion(projectId: number, spec: AppSpec, mode: 'new' | 'version', now: Millis): Promise<App>;
  /** The given version, or the latest when `version` is omitted. */
  getApp(projectId: number, name: string, version?: number): Promise<App | null>;
  /** The latest version of each app in the project, by name. */
  listApps(projectId: number): Promise<App[]>;
  listAppVersions(projectId: number, name: string): Promise<App[]>;

  // ── jobs and batches ─────────────────────────────────────────────────────
  /**
   * Writes all jobs (and the batch, when given) in one transaction: all or nothing.
   * With an idempotency key, a repeat with the same request hash returns the first outcome
   * and writes nothing; a different request under the same key fails with `conflict`.
   */
  insertJobs(req: InsertJobsRequest): Promise<InsertJobsResult>;
  /** The outcome recorded under an idempotency key, with the hash of the request that made it. */
  findIdempotent(projectId: number, key: string): Promise<{ requestHash: string; result: InsertJobsResult } | null>;
  getJob(projectId: number, id: number): Promise<Job | null>;
  listJobs(projectId: number, filter: JobFilter, page: Page): Promise<Job[]>;
  listTasks(jobId: number): Promise<Task[]>;
  /** Moves the job to `cancelled` if its state allows; throws `illegal_transition` otherwise. */
  cancelJob(projectId: number, id: number, now: Millis): Promise<Job>;
  /** Cancels every job of the batch that may still be cancelled; returns how many were. */
  cancelBatch(projectId: number, batchId: number, now: Millis): Promise<number>;
  getBatch(projectId: number, id: number): Promise<Batch | null>;
  listBatches(projectId: number, page: Page): Promise<Batch[]>;
  batchCounts(batchId: number): Promise<StateCounts>;
  /**
   * The project's jobs by state, every job in or out of a batch (only the app's with `appName`);
   * every state present (0 if none). One aggregate: over jobs_by_project_state (project_id,
   * state, id; index entries only) for the project; for one app, the planner's pick of
   * jobs_by_project_state or jobs_by_project_app plus the project's job rows.
   */
  countJobs(projectId: number, appName?: string): Promise<StateCounts>;

  // ── blobs (which project may read which content) ────────────────────────
  recordBlob(projectId: number, blob: BlobRecord): Promise<void>;
  getBlobRef(projectId: number, sha256: string): Promise<BlobRecord | null>;
  /** The digests among `sha256s` that the project does not hold. */
  missingBlobs(projectId: number, sha256s: string[]): Promise<string[]>;

  // ── sites and hosts ─────────────────────────────────────────────────────
  createSite(name: string, now: Millis): Promise<Site>;
  getSiteByName(name: string): Promise<Site | null>;
  getSite(id: number): Promise<Site | null>;
  /** Sets a site's address allowlist (CIDRs, already checked; [] for any address), creating the site if there is none of that name. */
  putSite(name: string, allowCidrs: string[], now: Millis): Promise<Site>;
  /** Every site, by name, with how many active and revoked hosts it has. */
  listSites(): Promise<SiteSummary[]>;
  createHost(host: Omit<Host, 'id' | 'createdAt' | 'lastSeenAt' | 'state' | 'labels' | 'pace' | 'owner'> & { labels?: Record<string, string>; owner?: string | null }, now: Millis): Promise<Host>;
  /** Replaces the labels a host declares (its agent restarted with other `--label`s). */
  setHostLabels(hostId: number, labels: Record<string, string>): Promise<void>;
  getHost(id: number): Promise<Host | null>;
  /** Every host with its site's name and how many tasks it holds (assigned or running). */
  listHosts(): Promise<HostSummary[]>;
  /**
   * Revokes a host, in one transaction: the host becomes `revoked` (its credentials too, and
   * its reservation is dropped), each of its active tasks `aborted` ("its host was revoked"),
   * and each of their running jobs that no other task still runs goes back to its queue at
   * once, without backoff, the attempt given back (as for a release). Revoking a revoked host
   * changes nothing (`changed: false`). Null for an unknown host.
   */
  revokeHost(hostId: number, now: Millis): Promise<HostRevocation | null>;

  // ── enrolment ───────────────────────────────────────────────────────────
  createEnrollToken(t: EnrollTokenRecord): Promise<void>;
  getEnrollToken(id: string): Promise<EnrollTokenRecord | null>;
  /** Every enrolment token, newest first, with its site's name (and without its secret's hash). */
  listEnrollTokens(): Promise<EnrollTokenSummary[]>;
  /** Marks an enrolment token revoked; false if it was unknown or already revoked. */
  revokeEnrollToken(id: string, now: Millis): Promise<boolean>;
  /**
   * In one transaction: checks that the enrolment token is live (not revoked, not expired, uses
   * left; `unauthenticated` otherwise), uses one, and creates the host and its credential. If
   * the credential id is already enrolled with the same hash, this is a retry: the host comes
   * back and no use is spent; with another hash it is `conflict`.
   */
  enrollHost(req: EnrollRequest, now: Millis): Promise<{ host: Host; replayed: boolean }>;

  // ── workflows (service/workflows.ts; the spec and progress are JSON the store keeps whole) ──
  /**
   * Writes a new workflow (version 1). With an idempotency key, a repeat with the same request
   * hash returns the first workflow (`replayed`) and writes nothing; another request under the
   * same key fails with `conflict`. Keys are per project.
   */
  createWorkflow(w: NewWorkflow, idempotency: { key: string; requestHash: string } | null): Promise<{ workflow: WorkflowRecord; replayed: boolean }>;
  /**
   * The workflow an earlier create wrote under this idempotency key, or null; `conflict` when
   * that create was another request. Asked before a repeat is checked again, so it gets its
   * first answer even when what the check reads has changed since.
   */
  findIdempotentWorkflow(projectId: number, idempotency: { key: string; requestHash: string }): Promise<WorkflowRecord | null>;
  getWorkflow(projectId: number, id: number): Promise<WorkflowRecord | null>;
  /** The project's workflows, newest first (keyset pagination by id). */
  listWorkflows(projectId: number, page: Page): Promise<WorkflowRecord[]>;
  /** Running workflows of every project, oldest first (those after `afterId`: the next page), for the workflow loop. */
  openWorkflows(limit: number, afterId?: number): Promise<Array<{ id: number; projectId: number }>>;
  /**
   * Compare and set: replaces the workflow's state, reason, progress and times only if its
   * version is still `expectedVersion`, and bumps the version. Null (nothing written) when
   * another writer got there first or the workflow does not exist.
   */
  updateWorkflow(id: number, expectedVersion: number, change: WorkflowChange): Promise<WorkflowRecord | null>;

  // ── audit (service/audit.ts) ────────────────────────────────────────────
  appendAudit(entry: Omit<AuditEntry, 'id'>): Promise<AuditEntry>;
  /** Entries newest first (keyset pagination by id), with their project's name. */
  listAudit(filter: AuditFilter, page: Page): Promise<AuditListEntry[]>;

  // ── the agent protocol ──────────────────────────────────────────────────
  /**
   * Hands a host work, in one transaction. First jobs whose backoff has passed return to their
   * queues. Then the adapter gathers what the policy decides on — the heads of up to
   * `maxQueues` queues (`headsPerQueue` eligible jobs each, by priority then age), the
   * projects' fair-share passes, the host's reservation and cool-downs — and applies what
   * `plan` (pure scheduling policy) returns: for each pick an `assigned` task under a lease and
   * the job `running` (one more attempt) with the cost charged, the new passes and fair-share
   * clock, the reservation. Only at the tail of the work — the plan picked nothing, no job is
   * queued at all (none backing off either), and the host is not reserved — may `duplicates`
   * add speculative copies of running tasks (same attempt, next replica number) of jobs the
   * host does not run yet. When a task ends (reported or lost) its project's pass is settled
   * against the resource-time it really held (scheduling/fair-share.ts `settledPass`).
   * A repeated `requestId` from the same host is a retry: the tasks it created come back
   * (those still active) and nothing new is claimed. Marks the host seen.
   */
  claimTasks(req: ClaimRequest, now: Millis): Promise<ClaimResult>;
  /**
   * One call for all the tasks a host runs: each live task of a running job gets its lease
   * extended (and `running` if it was `assigned`), its progress, usage and log recorded; the
   * rest come back in `abort`. Marks the host seen.
   */
  heartbeat(req: HeartbeatRequest, now: Millis): Promise<HeartbeatResult>;
  /**
   * Ends a task with its agent's report and settles its job (see domain/outcomes.ts `settle`),
   * in one transaction. The same report again is a replay and changes nothing; another
   * report for an ended task is `conflict`; a report for a task whose lease expired first is
   * `lease_expired`. Marks the host seen.
   */
  reportTask(req: ReportRequest, now: Millis): Promise<ReportResult>;
  /**
   * Fails every queued or running job whose deadline passed before `now` (their tasks are then
   * aborted through heartbeats). Safe to run again; returns the jobs it failed.
   */
  failPastDeadline(now: Millis, limit: number): Promise<Job[]>;
  /** A task of this host with its job (for its inputs and project), or null. */
  getHostTask(hostId: number, taskId: number): Promise<{ task: Task; job: Job } | null>;
  /** Records the job's latest checkpoint; only while the task is active on that host. */
  recordCheckpoint(hostId: number, taskId: number, sha256: string, now: Millis): Promise<boolean>;
  /**
   * Marks every active task whose lease ended before `now` as lost and puts its job back in
   * the queue after a backoff (or fails it when its attempts are spent); a job another task
   * still runs stays running. Safe to run again, and from several servers: a task is expired
   * once.
   */
  expireLeases(now: Millis, limit: number, rules: SchedulingOptions): Promise<ExpiredTask[]>;
  /** A task of the project (through its job) with its stored log tail. */
  getTaskLog(projectId: number, taskId: number): Promise<TaskLog | null>;

  // ── explain (why a queued job waits; scheduling/explain.ts) ─────────────
  /**
   * How many eligible queued jobs of the job's queue go before it (a higher priority, or the
   * same priority and a smaller id), counting no further than `limit`. Eligible: no backoff,
   * or one whose time has come by `now`. Null unless the job is queued in the project.
   */
  jobsAhead(projectId: number, jobId: number, now: Millis, limit: number): Promise<number | null>;
  /**
   * Running jobs whose replicas' results wait for their app's validator (domain/quorum.ts),
   * oldest first, with their app and tasks.
   */
  jobsAwaitingValidator(limit: number): Promise<Array<{ job: Job; app: App; tasks: Task[] }>>;
  /**
   * Judges a job on its validator's answer about the successful replicas `basis`, in one
   * transaction (domain/quorum.ts `judgeValidation`): accepted, more replicas, or failed; left
   * waiting (`stale`) when other replicas succeeded since. Null when the job no longer waits
   * (cancelled, decided, or judged by another server).
   */
  recordValidation(req: { jobId: number; basis: number[]; answer: ValidatorAnswer; rules: SchedulingOptions }, now: Millis): Promise<{ job: Job; stale: boolean } | null>;
  /** A host's record with an app for replication and quotas (scheduling/replication.ts); a fresh one if it has none. */
  hostReliability(hostId: number, appId: number): Promise<HostReliability>;
  /** Ids of the hosts cooling down from the app at `now` (after failing it; see ReportRequest's rules). */
  hostsCoolingDown(appId: number, now: Millis): Promise<number[]>;
  /** The host being kept free for the job (its reservation), or null. */
  reservedHostFor(jobId: number): Promise<number | null>;

  // ── demand (autoscaling signals; server/metrics.ts) ─────────────────────
  /**
   * Queued jobs by what they need of a host: resources (with each job's overrides), whether
   * their app runs natively, its longest run, whether they select hosts by label; how many
   * could start at `now` and how many are backing off after a failure. Shapes with no queued
   * job are left out; in the order of their resources, then the rest.
   */
  demand(now: Millis): Promise<DemandShape[]>;

  // ── gauges (server/metrics.ts: each one aggregate query, read at most every 5 s) ──
  /**
   * Queued jobs (ready or backing off) by project, app (all its versions) and the resources
   * each wants (with each job's overrides), counted per queue in the two partial indexes that
   * hold the queued jobs. Groups with no queued job are left out; most jobs first, then by
   * project, app and resources.
   */
  queueDepth(): Promise<QueueDepth[]>;
  /**
   * Active tasks by state, counted among the active tasks only (their partial indexes): ended
   * tasks are not counted, as that would read every task ever run.
   */
  activeTaskCounts(): Promise<{ assigned: number; running: number }>;
  /** How many hosts called (a work request, heartbeat or report) at or after `since`. */
  countHostsSeen(since: Millis): Promise<number>;

  // ── several servers ─────────────────────────────────────────────────────
  /**
   * Adapters that several servers share offer a relay for the events each server publishes
   * (service/events.ts). Absent: the store has one server, whose events stay in its process.
   */
  openEventRelay?(): EventRelay;
}

export interface DemandShape {
  resources: Resources;
  /** The app can run as a native process (it has a native command): pilots without an engine can take it. */
  native: boolean;
  /** The longest a run may take (the app's maxRuntimeSeconds): a host needs this much time left. */
  maxRuntimeSeconds: number;
  /** The jobs select hosts by label. */
  selector: boolean;
  /** Queued jobs that may start now. */
  ready: number;
  /** Queued jobs waiting out a backoff. */
  backingOff: number;
}

export interface QueueDepth {
  project: string;
  app: string;
  resources: Resources;
  /** Queued jobs, ready or backing off. */
  jobs: number;
}

/**
 * Running jobs wanting replicas a claim looks at (oldest first, those this host or its owner ran
 * left out): enough to fill any host, few enough that a claim stays cheap when many wait.
 */
export const DEFAULT_REPLICA_SCAN = 256;

export interface ClaimRequest {
  hostId: number;
  requestId: string;
  leaseMs: number;
  /** Most queues (with eligible jobs) to look at. */
  maxQueues: number;
  /** Jobs read from the head of each queue. */
  headsPerQueue: number;
  /** Most running jobs wanting replicas to look at (default DEFAULT_REPLICA_SCAN). */
  replicaScan?: number;
  /** Adaptive replication (how a starting job of a replicated app is replicated) and daily quotas (default DEFAULT_REPLICATION). */
  replication?: ReplicationOptions;
  /** The servers' secret that keys adaptive replication's draw (replication.ts `draw`); required for apps with adaptive replication. */
  drawKey?: Buffer;
  plan: (input: ClaimGathered) => ClaimPlan;
  /** Speculative duplicates when the plan handed out nothing; null: none. */
  duplicates: {
    /** Most running tasks (oldest first) to consider. */
    scan: number;
    choose: (running: RunningTask[], activeDuplicates: number, host: Pick<ClaimGathered, 'cooledApps' | 'pace'>) => Array<{ jobId: number; runtime: RuntimeKind }>;
  } | null;
}

/** What the store gathers for the policy in a claim. */
export interface ClaimGathered {
  queues: QueueView[];
  /** Running replicated jobs that want another replica and have none on this host or its owner's others. */
  replicaWork: ReplicaWork[];
  /** What is left of the host's daily quotas today, by app (scheduling/replication.ts). */
  quota: { left: ReadonlyMap<number, number>; fresh: number };
  projects: Map<number, ProjectShare>;
  /** The job this host is kept free for, if any. */
  reservation: number | null;
  reservedElsewhere: Set<number>;
  /** Apps this host is cooling down from. */
  cooledApps: Set<number>;
  /** The host's pace as learned so far (scheduling/pace.ts). */
  pace: number | null;
  /** The fair-share clock (the plan returns its next value). */
  virtualTime: number;
}

export interface ClaimedTask {
  task: Task;
  job: Job;
  app: App;
  projectName: string;
}

export interface ClaimResult {
  tasks: ClaimedTask[];
  replayed: boolean;
}

export interface LogChunk {
  /** Where `text` starts in the task's whole output (UTF-16 code units). */
  offset: number;
  text: string;
}

export interface HeartbeatRequest {
  hostId: number;
  leaseMs: number;
  tasks: Array<{ taskId: number; progress: number | null; usage: TaskUsage | null; log: LogChunk | null }>;
}

export interface HeartbeatResult {
  leases: Array<{ taskId: number; leaseExpiresAt: Millis }>;
  abort: Array<{ taskId: number; reason: string }>;
}

export interface ReportRequest {
  hostId: number;
  taskId: number;
  outcome: TaskOutcome;
  durationMs: number;
  usage: TaskUsage | null;
  outputs: Record<string, OutputFile>;
  log: LogChunk | null;
  /** A hash of the report's content: a replay carries the same one. */
  reportHash: string;
  /** Backoff and host cool-down rules. */
  rules: SchedulingOptions;
}

export interface ReportResult {
  task: Task;
  job: Job;
  /** The job's state before the report, to tell whether it changed. */
  jobStateBefore: JobState;
  replayed: boolean;
}

export interface ExpiredTask {
  taskId: number;
  /** The job after the expiry. */
  job: Job;
  /** False when the job had already ended (a cancel, say) and was left as it was. */
  jobChanged: boolean;
}

export interface TaskLog {
  taskId: number;
  jobId: number;
  state: TaskState;
  text: string;
  /** Offset just past the stored text in the task's whole output; text starts at endOffset - text.length. */
  endOffset: number;
}

export interface Bootstrap {
  operatorName: string;
  projectName: string;
  /** Builds the operator's token record once its user id is known. */
  token: (userId: number) => TokenRecord;
}

export interface HostSummary extends Host {
  siteName: string;
  activeTasks: number;
}

export interface SiteSummary extends Site {
  activeHosts: number;
  revokedHosts: number;
}

export interface EnrollTokenSummary extends Omit<EnrollTokenRecord, 'secretHash'> {
  siteName: string;
}

export interface HostRevocation {
  host: Host;
  /** False when the host was revoked already: nothing changed. */
  changed: boolean;
  abortedTasks: Task[];
  /** The jobs put back in their queue (a job another task still runs stays running, and is not here). */
  requeuedJobs: Job[];
}

export interface AuditFilter {
  action?: string;
  projectId?: number;
}

export interface AuditListEntry extends AuditEntry {
  projectName: string | null;
}

export interface EnrollRequest {
  enrollTokenId: string;
  host: { name: string; resources: Resources; platform: string };
  /** The host's credential; its subjectId is filled in with the new host's id. */
  credential: TokenRecord;
}

export interface InsertJobsRequest {
  projectId: number;
  app: App;
  /** Present for batch submissions; single jobs have no batch. */
  batch: { labels: Record<string, string> } | null;
  jobs: JobSpec[];
  idempotency: { key: string; requestHash: string } | null;
  now: Millis;
}

export interface InsertJobsResult {
  batch: Batch | null;
  /** Ids of the inserted jobs, in request order. */
  jobIds: number[];
  /** True when this was a repeat of an earlier request with the same idempotency key. */
  replayed: boolean;
}

export interface JobFilter {
  state?: JobState;
  appName?: string;
  batchId?: number;
  label?: { key: string; value: string };
}

export interface Page {
  /** Return only items with a smaller id (newest first, keyset pagination). */
  beforeId?: number;
  limit: number;
}

export type { Resources };
