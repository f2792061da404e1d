/** The API's JSON shapes as clients see them (times are ISO 8601 strings). */
import type { Resources } from '../domain/resources.js';
import type { Role } from '../domain/roles.js';
import type { JobState } from '../domain/states.js';
import type { SweepSpec } from '../domain/sweep.js';
import type { AppInput, AppVersionInput } from '../service/apps.js';
import type { TaskOutcome } from '../domain/outcomes.js';
import type { JobTemplate } from '../service/jobs.js';
import type { Explanation } from '../scheduling/explain.js';

export type { AppInput, AppVersionInput, JobTemplate, Role, JobState, Resources, SweepSpec, TaskOutcome };
export type Counts = Record<JobState, number>;

export interface UserView { id: number; name: string; operator: boolean; createdAt: string }
export interface ProjectView { name: string; shareWeight: number; createdAt: string; role?: Role }
export interface Me { user: UserView; projects: ProjectView[] }
export interface EnrollTokenView { token: string; id: string; site: string; owner: string | null; usesLeft: number | null; expiresAt: string | null }
/** GET /v1/enroll-tokens: a token as listed, without its secret. */
export interface EnrollTokenInfo {
  id: string; site: string; label: string; owner: string | null; usesLeft: number | null; expiresAt: string | null; revokedAt: string | null; createdAt: string;
}
export interface HostRevocationView {
  host: { id: number; name: string; state: string; owner: string | null }; revoked: boolean; abortedTasks: number[]; requeuedJobs: number[];
}
export interface SiteView { name: string; allowCidrs: string[]; activeHosts: number; revokedHosts: number; createdAt: string }
export interface AuditEntryView {
  id: number; at: string; actor: { id: number | null; name: string }; action: string; target: string; project: string | null; detail: Record<string, unknown>;
}
export interface AuditQuery { project?: string; action?: string; limit?: number; cursor?: string }
export interface HostView {
  id: number; name: string; site: string; state: string; platform: string; labels: Record<string, string>; resources: Resources;
  enrolledAt: string; lastSeenAt: string | null; activeTasks: number; pace: number | null; owner: string | null;
}
export interface TokenView { token: string; id: string; user: string; expiresAt: string | null }

export interface AppView {
  id: number; name: string; version: number; description: string; image: string; imageDigest: string | null;
  command: string[]; resources: Resources; maxRuntimeSeconds: number; maxAttempts: number; replicas: number;
  quorum: number; maxReplicas: number; adaptiveReplication: boolean; validator: { image: string; command: string[] } | null;
  checkpointing: boolean; platforms: string[];
  nativeCommand: string[] | null; createdAt: string;
}

export interface JobSubmit extends JobTemplate { app: string; appVersion?: number }
export interface BatchSubmit {
  app: string; appVersion?: number; labels?: Record<string, string>; template?: JobTemplate;
  jobs?: JobTemplate[]; count?: number; sweep?: SweepSpec;
}

export interface BatchView { id: number; app: string; appVersion: number; size: number; labels: Record<string, string>; createdAt: string }
export interface BatchDetail { batch: BatchView; counts: Counts; done: boolean }
/** GET /v1/projects/{p}/counts: every job of the project by state, in a batch or not. */
export interface ProjectCounts { counts: Counts }
export interface SubmitView { batch: BatchView | null; jobCount: number; jobIds?: number[]; replayed: boolean }

export interface JobView {
  id: number; app: string; appVersion: number; batchId: number | null; state: JobState; args: string[];
  env: Record<string, string>; inputs: Record<string, string>; resources: Partial<Resources>; priority: number;
  deadline: string | null; labels: Record<string, string>; selector: Record<string, string>; retryAt: string | null; params: Record<string, string | number>; attempts: number;
  reason: string | null; createdAt: string; updatedAt: string; finishedAt: string | null; checkpoint: string | null;
  /** Agreeing replicas the job needs (1: unreplicated). */
  quorum: number;
  /** The task whose outputs are the job's result (for replicated jobs, the canonical one). */
  resultTaskId: number | null;
}
export interface TaskView {
  id: number; hostId: number; attempt: number; replica: number; state: string; runtime: string; leaseExpiresAt: string;
  createdAt: string; startedAt: string | null; endedAt: string | null; exitCode: number | null; reason: string | null;
  outcome: { kind: string; [k: string]: unknown } | null; progress: number | null;
  usage: { cpuSeconds: number; peakMemoryMiB: number } | null; durationMs: number | null;
  outputs: Record<string, { sha256: string; size: number }>;
  validity: 'valid' | 'invalid' | null;
}
/** GET …/jobs/{id}/explain: why a job is not running (scheduling/explain.ts has no times to render). */
export type ExplainView = Explanation;
export interface TaskLogView { taskId: number; jobId: number; state: string; text: string; start: number; end: number; done: boolean }
export interface JobQuery { state?: JobState; app?: string; batch?: number; label?: string; limit?: number; cursor?: string }
export interface BlobView { sha256: string; size: number; createdAt: string }
export interface StreamEvent { type: string; id: string | undefined; data: Record<string, unknown> }
/** GET …/events: the whole project, or one batch, one job or one workflow. */
export interface EventFilter { batch?: number; job?: number; workflow?: number }

// ── workflows (docs/workflows.md) ──
export type WorkflowState = 'running' | 'succeeded' | 'failed' | 'cancelled';
export type WorkflowStepStatus = 'waiting' | 'running' | 'succeeded' | 'failed' | 'skipped' | 'cancelled';
export type WorkflowInstanceState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';
/** POST …/workflows and …/workflows/validate. */
export interface WorkflowCreate {
  /** The spec, YAML or JSON. */
  source: string;
  /** Local paths the spec names (`{file: PATH}`) → sha256 of the blob uploaded for each. */
  files?: Record<string, string>;
  /** A workflow whose succeeded jobs this one reuses where app version, args, env and inputs are unchanged. */
  resume?: number;
}
export interface WorkflowStepView {
  name: string; app: string; appVersion: number | null; status: WorkflowStepStatus; reason: string | null; needs: string[];
  forEach: 'list' | 'sweep' | 'files' | 'values' | null;
  /** Its jobs (fan-out items) so far, and those by state. */
  jobs: number; counts: Record<WorkflowInstanceState, number>;
  /** Jobs taken from an earlier run (retry) or from the workflow it resumes. */
  reused: number; batchIds: number[];
}
export interface WorkflowView {
  id: number; name: string; state: WorkflowState; reason: string | null; onFailure: 'stop' | 'continue'; resumedFrom: number | null;
  createdAt: string; updatedAt: string; endedAt: string | null; steps: WorkflowStepView[];
}
export interface WorkflowAnswer { workflow: WorkflowView; replayed?: boolean }
export interface WorkflowValidation { name: string; steps: Array<{ name: string; needs: string[] }> }
export interface WorkflowOutputFile { name: string; sha256: string; size: number }
/** A succeeded instance's declared output: its files (blob references) or its value. */
export type WorkflowOutputView = { files: WorkflowOutputFile[] } | { value: unknown };
export interface WorkflowInstanceView {
  /** The fan-out item ("cand-3.xyz", "x=3"); '' for a step that does not fan out. */
  item: string; jobId: number; state: WorkflowInstanceState; reused: boolean; reason: string | null;
  outputs: Record<string, WorkflowOutputView> | null;
}
export interface WorkflowStepDetail { step: WorkflowStepView; instances: WorkflowInstanceView[] }
/** `event: workflow` of the event stream: the workflow's state, or with `step` one step's status. */
export interface WorkflowEventData { workflowId: number; state: WorkflowState; step?: string; status?: WorkflowStepStatus; reason: string | null }

// ── the agent protocol ──
export type RuntimeKind = 'docker' | 'native';
export interface EnrollBody {
  enrollToken: string; name: string; resources: Resources; platform: string; credentialId: string; credentialHash: string;
}
export interface EnrollView { hostId: number; name: string; siteId: number; replayed: boolean }
export interface AgentSelf { id: number; name: string; state: string; resources: Resources; platform: string }
export interface WorkRequestBody {
  requestId: string; free: Resources; maxTasks: number; runtimes: RuntimeKind[];
  labels?: Record<string, string>; images?: string[]; maxRuntimeSeconds?: number;
}
export interface TaskAssignment {
  taskId: number; jobId: number; project: string; attempt: number; runtime: RuntimeKind; leaseExpiresAt: string;
  image: string; imageDigest: string | null; command: string[]; env: Record<string, string>; resources: Resources;
  maxRuntimeSeconds: number; checkpointing: boolean; checkpoint: string | null;
  /** Pre-signed GETs from the blob store itself, when the server's store gives them. */
  checkpointUrl?: string;
  inputs: Array<{ name: string; sha256: string; size: number; url?: string }>;
}
/** Per output: present (nothing to do), a pre-signed PUT (`url` with `headers`), or neither (the upload route). */
export interface UploadTarget { sha256: string; present: boolean; url?: string; headers?: Record<string, string>; expiresAt?: string }
/** Signed transfer URL prefixes of a task: paths under /transfer/v1, to be put after the server address the caller wants them used at. */
export interface TransferUrls { inputs: string; outputs: string; expiresAt: string }
export interface WorkAnswer { tasks: TaskAssignment[]; retryAfterMs: number; heartbeatSeconds: number; replayed: boolean }
export interface LogChunk { offset: number; text: string }
export interface TaskUsage { cpuSeconds: number; peakMemoryMiB: number }
export interface HeartbeatBody { tasks: Array<{ taskId: number; progress?: number; usage?: TaskUsage; log?: LogChunk }> }
export interface HeartbeatAnswer {
  leases: Array<{ taskId: number; leaseExpiresAt: string }>; abort: Array<{ taskId: number; reason: string }>; heartbeatSeconds: number;
}
export interface ReportBody {
  outcome: TaskOutcome; durationMs: number; usage?: TaskUsage; outputs?: Record<string, { sha256: string; size: number }>; log?: LogChunk;
}
export interface ReportAnswer { taskState: string; jobState: string; replayed: boolean }
