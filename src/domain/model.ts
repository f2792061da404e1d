import type { TaskOutcome, TaskUsage } from './outcomes.js';
import type { Resources } from './resources.js';
import type { Role } from './roles.js';
import type { HostState, JobState, TaskState } from './states.js';

/** How a task runs on a host: in a container, or as a plain process on a trusted host. */
export type RuntimeKind = 'docker' | 'native';
export const RUNTIME_KINDS: readonly RuntimeKind[] = ['docker', 'native'];

/** Times are epoch milliseconds inside boxgrid; the HTTP layer renders them as ISO 8601. */
export type Millis = number;

export interface Project {
  id: number;
  name: string;
  /** Weight for fair share across projects (the scheduler uses it). */
  shareWeight: number;
  createdAt: Millis;
}

export interface User {
  id: number;
  name: string;
  /** Operators run the server: they create projects and users and act as admin everywhere. */
  operator: boolean;
  createdAt: Millis;
}

export interface Membership {
  projectId: number;
  userId: number;
  role: Role;
}

export type TokenKind = 'user' | 'host';

export interface TokenRecord {
  id: string;
  kind: TokenKind;
  /** The user or host the token speaks for. */
  subjectId: number;
  /** sha256 of the secret part; the secret itself is never stored. */
  secretHash: Buffer;
  label: string;
  createdAt: Millis;
  expiresAt: Millis | null;
  revokedAt: Millis | null;
}

export interface AppSpec {
  name: string;
  description: string;
  /** Image reference, e.g. "registry/sci/mandel:1.2" or "sci/mandel@sha256:…". */
  image: string;
  /** Content digest of the image when known ("sha256:…"); agents then run exactly that image. */
  imageDigest: string | null;
  command: string[];
  resources: Resources;
  maxRuntimeSeconds: number;
  maxAttempts: number;
  /** Hosts each job runs on, for validation (1: no replication). */
  replicas: number;
  /** Agreeing successful replicas that make a job's result canonical (domain/quorum.ts). */
  quorum: number;
  /** Most replicas a job may run (errors and disagreements included) before it fails with no consensus. */
  maxReplicas: number;
  /** Trusted hosts get unreplicated jobs, still spot-checked (scheduling/replication.ts). */
  adaptiveReplication: boolean;
  /**
   * The container that compares replicas' results when equal files are too much to ask (floating
   * point): null, results agree when their files are identical (docs/security.md).
   */
  validator: ValidatorSpec | null;
  checkpointing: boolean;
  /** OCI platforms the image runs on, e.g. "linux/amd64". */
  platforms: string[];
  /**
   * The command to run outside a container on trusted hosts that enable the native runtime;
   * null: the app runs only in its image.
   */
  nativeCommand: string[] | null;
}

/** A validator container: it reads /in/<task id>/… of each replica and writes /out/groups.json. */
export interface ValidatorSpec {
  image: string;
  command: string[];
}

/** One immutable version of an app. New versions are new rows; jobs pin the version they were submitted against. */
export interface App extends AppSpec {
  id: number;
  projectId: number;
  version: number;
  createdAt: Millis;
}

/** What a submitter may set per job; the app supplies the rest. */
export interface JobSpec {
  args: string[];
  env: Record<string, string>;
  /** Input file name → sha256 of a blob the project holds. */
  inputs: Record<string, string>;
  resources: Partial<Resources>;
  priority: number;
  deadline: Millis | null;
  labels: Record<string, string>;
  /** Labels a host must carry (each with this value) to run the job. */
  selector: Record<string, string>;
  /** Sweep parameters this job was expanded from, if any. */
  params: Record<string, string | number>;
  /** Attempts this job may take, overriding its app's (a workflow step's `retries`); absent: the app's. */
  maxAttempts?: number;
}

export interface Job extends JobSpec {
  id: number;
  projectId: number;
  appId: number;
  appName: string;
  appVersion: number;
  batchId: number | null;
  state: JobState;
  attempts: number;
  reason: string | null;
  createdAt: Millis;
  updatedAt: Millis;
  finishedAt: Millis | null;
  /** The latest checkpoint a task of this job uploaded (sha256 of a tar of /checkpoint); the next task resumes from it. */
  checkpoint: string | null;
  /** A requeued job waits out a backoff: it may not run before this time (null: it may now). */
  retryAt: Millis | null;
  /**
   * Agreeing replicas this attempt needs: 1 for unreplicated jobs (and adaptive replication's
   * single replicas), the app's quorum for replicated ones.
   */
  quorum: number;
  /** Replicas wanted but not yet handed to a host. */
  replicasWanted: number;
  /** Its replicas' results wait for the app's validator (the validator loop picks the job up). */
  awaitingValidator: boolean;
  /** The task whose result is the job's (the canonical result of a replicated job). */
  canonicalTaskId: number | null;
}

export interface Batch {
  id: number;
  projectId: number;
  appName: string;
  appVersion: number;
  size: number;
  labels: Record<string, string>;
  createdAt: Millis;
}

export type StateCounts = Record<JobState, number>;

export interface Task {
  id: number;
  jobId: number;
  hostId: number;
  attempt: number;
  replica: number;
  state: TaskState;
  runtime: RuntimeKind;
  leaseExpiresAt: Millis;
  createdAt: Millis;
  /** When the agent first said the task was running. */
  startedAt: Millis | null;
  endedAt: Millis | null;
  exitCode: number | null;
  reason: string | null;
  /** 0..1 as the task last reported it through its agent, when it reports any. */
  progress: number | null;
  usage: TaskUsage | null;
  outcome: TaskOutcome | null;
  durationMs: number | null;
  /** Files the task left in /out: name → blob. */
  outputs: Record<string, OutputFile>;
  /** For replicas of a replicated job: whether its result agreed with the quorum (null: not judged). */
  validity: TaskValidity | null;
}

export type TaskValidity = 'valid' | 'invalid';

export interface OutputFile {
  sha256: string;
  size: number;
}

/** Buys host credentials at one site: limited in uses and time, revocable. */
export interface EnrollTokenRecord {
  id: string;
  siteId: number;
  secretHash: Buffer;
  label: string;
  /** Null: unlimited. */
  usesLeft: number | null;
  expiresAt: Millis | null;
  revokedAt: Millis | null;
  createdAt: Millis;
  /** The volunteer account the hosts enrolled with it belong to (Host.owner); null: none. */
  owner: string | null;
}

export interface Site {
  id: number;
  name: string;
  createdAt: Millis;
  /** Addresses (CIDRs) its hosts may enrol and call from; empty: any address (domain/cidr.ts). */
  allowCidrs: string[];
}

export interface Host {
  id: number;
  siteId: number;
  name: string;
  state: HostState;
  resources: Resources;
  platform: string;
  /** Labels the host's agent declares (`--label k=v`), matched against jobs' selectors. */
  labels: Record<string, string>;
  createdAt: Millis;
  lastSeenAt: Millis | null;
  /** How long tasks take on this host against their typical duration (scheduling/pace.ts); null until one finished. */
  pace: number | null;
  /**
   * The volunteer account it was enrolled for (its enrolment token's owner). Replicas of one job
   * go to hosts of distinct owners; null: the host is its own owner.
   */
  owner: string | null;
}

export interface BlobRecord {
  sha256: string;
  size: number;
  createdAt: Millis;
}

/** One admin action (service/audit.ts): who did what to which object, when. Never a secret. */
export interface AuditEntry {
  id: number;
  at: Millis;
  /** Null if the user is gone; the name is kept as it was. */
  actorUserId: number | null;
  actorName: string;
  action: string;
  /** What was acted on, e.g. "host 12", "project physics". */
  target: string;
  /** The project the action concerns, if one (project admins read their project's entries). */
  projectId: number | null;
  detail: Record<string, unknown>;
}
