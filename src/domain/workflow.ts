import type { Millis } from './model.js';
import type { Resources } from './resources.js';
import type { SweepSpec } from './sweep.js';

/**
 * Workflows: DAGs of steps, each step one job or a fan-out of jobs, outputs passed between
 * steps as blob references (docs/workflows.md). This module holds the model only; parsing and
 * checking a spec is workflow-spec.ts, deciding what runs next is workflow-plan.ts.
 */

/** `steps.<step>.outputs.<output>`: what a step consumes of another. */
export interface OutputRef {
  step: string;
  output: string;
}

/** Where a value a step's args and env take (`{name}`) comes from. */
export type ParamSource =
  | { kind: 'literal'; value: string }
  /** A `value` output; of a fanned-out step (and the consumer not fanned over it): a JSON array of them all. */
  | { kind: 'ref'; ref: OutputRef };

/** Where a file in a step's /in comes from. */
export type InputSource =
  | { kind: 'blob'; sha256: string }
  /** A local path the CLI uploads before it submits (the request's `files` maps it to a blob). */
  | { kind: 'file'; path: string }
  /** A `file` or `files` output; several files are named `<input>-<n>-<file name>`. */
  | { kind: 'ref'; ref: OutputRef };

export type ValueType = 'string' | 'number' | 'json';

/** What a step leaves in /out that others may use. */
export type OutputSpec =
  /** One file, which must exist. */
  | { kind: 'file'; path: string }
  /** Every file matching a glob (`*` and `?`), possibly none. */
  | { kind: 'files'; glob: string }
  /** A small file (≤ 64 KiB) read as a value: trimmed text, a number, or JSON. */
  | { kind: 'value'; path: string; type: ValueType };

/** How a step fans out: one job per item. */
export type ForEach =
  | { kind: 'list'; as: string; values: string[] }
  | { kind: 'sweep'; sweep: SweepSpec }
  /** One job per file of a `file`/`files` output (all instances' files, in order); the file is the input `as`. */
  | { kind: 'files'; ref: OutputRef; as: string }
  /** One job per value: a `json` value that is an array, or a value of each instance of a fanned-out step; the param `as`. */
  | { kind: 'values'; ref: OutputRef; as: string };

export type FailurePolicy = 'stop' | 'continue';

export interface StepSpec {
  name: string;
  app: string;
  /** null: the app's latest version when the step is queued. */
  appVersion: number | null;
  args: string[];
  env: Record<string, string>;
  params: Record<string, ParamSource>;
  inputs: Record<string, InputSource>;
  resources: Partial<Resources>;
  outputs: Record<string, OutputSpec>;
  forEach: ForEach | null;
  /** Attempts after the first; null: the app's maxAttempts decides. */
  retries: number | null;
  priority: number;
  /** Every step this one waits for: those it takes outputs from and those named in `needs`. */
  needs: string[];
}

export interface WorkflowSpec {
  name: string;
  onFailure: FailurePolicy;
  /** In the order of the file. */
  steps: StepSpec[];
}

// ── progress: what has happened, kept with the workflow ────────────────────

export type WorkflowState = 'running' | 'succeeded' | 'failed' | 'cancelled';
export const WORKFLOW_STATES: readonly WorkflowState[] = ['running', 'succeeded', 'failed', 'cancelled'];

export type StepStatus = 'waiting' | 'running' | 'succeeded' | 'failed' | 'skipped' | 'cancelled';

export type InstanceState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

export interface OutputFileRef {
  name: string;
  sha256: string;
  size: number;
}

/** A succeeded instance's declared outputs. */
export type ResolvedOutput = { files: OutputFileRef[] } | { value: string | number | unknown };

/** One job of a step (one item of its fan-out). */
export interface InstanceProgress {
  /** The fan-out item, for people ("candidate-17.xyz", "x=3"); '' for a step that does not fan out. */
  item: string;
  /** sha256 of app version, args, env and input digests: equal keys, equal work (a resumed spec reuses by it). */
  key: string;
  /**
   * sha256 of args, env and input digests alone: what a retry matches its step's succeeded jobs
   * by, since a retry may run a fixed version of the app and must not rerun what succeeded.
   */
  retryKey: string;
  jobId: number;
  state: InstanceState;
  /** Its output came from an earlier run of this workflow (retry) or of the one it resumes. */
  reused: boolean;
  /** Set once it succeeded. */
  outputs: Record<string, ResolvedOutput> | null;
  reason: string | null;
}

export interface StepProgress {
  status: StepStatus;
  reason: string | null;
  /** How many times the step's jobs were submitted: part of each submission's idempotency key. */
  round: number;
  /** The batches this step's jobs were submitted in (cancel reaches them through these). */
  batchIds: number[];
  instances: InstanceProgress[];
}

export interface WorkflowProgress {
  steps: Record<string, StepProgress>;
}

/** A workflow as the store keeps it; `spec` and `progress` are opaque JSON to the store. */
export interface WorkflowRecord {
  id: number;
  projectId: number;
  name: string;
  state: WorkflowState;
  reason: string | null;
  /** The user it runs as: its jobs are submitted with that user's access to the project. */
  createdBy: number;
  /** The spec as written (YAML or JSON), for line numbers and for people. */
  source: string;
  spec: WorkflowSpec;
  /** Local paths of the spec → sha256 of the blobs the CLI uploaded for them. */
  files: Record<string, string>;
  progress: WorkflowProgress;
  /** The workflow whose succeeded steps this one reuses (a resumed, changed spec). */
  resumedFrom: number | null;
  /** Bumped by every update: updates say which version they replace (compare and set). */
  version: number;
  createdAt: Millis;
  updatedAt: Millis;
  endedAt: Millis | null;
}

export type NewWorkflow = Omit<WorkflowRecord, 'id' | 'version' | 'updatedAt' | 'endedAt' | 'reason'>;

export interface WorkflowChange {
  state: WorkflowState;
  reason: string | null;
  progress: WorkflowProgress;
  updatedAt: Millis;
  endedAt: Millis | null;
}

export const isOpenWorkflow = (s: WorkflowState): boolean => s === 'running';
