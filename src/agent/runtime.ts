import type { Resources } from '../domain/resources.js';

/**
 * The port between the agent's loop and whatever runs a task (a container engine, or a plain
 * process on trusted hosts). A runtime runs one task to an outcome; it never throws for what
 * the task did, only for its own failures, and even those come back as an `agent_error`.
 */
export interface TaskRuntime {
  readonly name: string;
  run(spec: TaskRunSpec, signal?: AbortSignal): Promise<TaskRunResult>;
}

export interface TaskRunSpec {
  taskId: number;
  jobId: number;
  image: string;
  /** When the app pins a digest, the image that runs must have it. */
  imageDigest: string | null;
  /** The app's command followed by the job's args. */
  command: string[];
  env: Record<string, string>;
  resources: Resources;
  maxRuntimeSeconds: number;
  /** Host directories: inputs are mounted read-only at /in, outputs writable at /out. */
  inputsDir: string;
  outputsDir: string;
  checkpointDir: string | null;
  /** uid:gid inside the container; nobody unless the app says otherwise. */
  user: string;
}

/** Each way a task can end, kept apart so that users and the scheduler can tell them apart. */
export type TaskOutcome =
  | { kind: 'succeeded' }
  | { kind: 'failed'; exitCode: number }
  | { kind: 'out_of_memory'; limitMiB: number }
  | { kind: 'timeout'; limitSeconds: number }
  | { kind: 'aborted' }
  | { kind: 'image_error'; message: string }
  | { kind: 'agent_error'; message: string };

export interface TaskRunResult {
  outcome: TaskOutcome;
  /** The last lines of stdout and stderr interleaved, at most LOG_TAIL_BYTES. */
  logTail: string;
  durationMs: number;
}

export const LOG_TAIL_BYTES = 64 * 1024;

export function describeOutcome(o: TaskOutcome): string {
  switch (o.kind) {
    case 'succeeded':
      return 'exited 0';
    case 'failed':
      return `exited with code ${o.exitCode}`;
    case 'out_of_memory':
      return `killed: used more than its memory limit of ${o.limitMiB} MiB`;
    case 'timeout':
      return `killed: ran longer than its limit of ${o.limitSeconds} s`;
    case 'aborted':
      return 'aborted before it finished';
    case 'image_error':
      return `image problem: ${o.message}`;
    case 'agent_error':
      return `agent error: ${o.message}`;
  }
}
