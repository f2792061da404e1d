import type { Resources } from '../domain/resources.js';
import type { TaskOutcome, TaskUsage } from '../domain/outcomes.js';

export { describeOutcome, type TaskOutcome, type TaskUsage } from '../domain/outcomes.js';

/**
 * The port between the agent's loop and whatever runs a task (a container engine, or a plain
 * process on trusted hosts). A runtime runs one task to an outcome; it never throws for what
 * the task did, only for its own failures, and even those come back as an `agent_error`.
 */
export interface TaskRuntime {
  readonly name: string;
  run(spec: TaskRunSpec, signal?: AbortSignal): Promise<TaskRunResult>;
  /**
   * Tasks this runtime still holds from an earlier agent process (containers found by label),
   * so a restarted agent can re-attach to them or clean them up.
   */
  leftovers(): Promise<number[]>;
  /**
   * Waits for a leftover task (see `leftovers`) to end and returns its result as `run` would;
   * an `agent_error` when it cannot be followed (the task is then reported lost).
   */
  reattach(spec: TaskRunSpec, signal?: AbortSignal): Promise<TaskRunResult>;
  /** Removes whatever is left of a task (its container); nothing when there is none. */
  remove(taskId: number): Promise<void>;
  /**
   * Stops every process of a running task until the returned function is called (Docker:
   * the cgroup freezer), so the agent can read the task's files while nothing can change them
   * under it (a checkpoint packed while running). Absent where that is not possible; null
   * when the task does not run now (not started yet, or ended); throws when it runs but could
   * not be frozen.
   */
  freeze?(taskId: number): Promise<(() => Promise<void>) | null>;
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
  /** uid:gid inside the container: nobody (apps cannot choose another user yet). */
  user: string;
  /** Called with stdout/stderr bytes as the task writes them (for live logs); optional. */
  onOutput?: (chunk: Buffer) => void;
  /** Called with the usage so far whenever the runtime measures it while the task runs; optional. */
  onUsage?: (usage: TaskUsage) => void;
}

export interface TaskRunResult {
  outcome: TaskOutcome;
  /** The last lines of stdout and stderr interleaved, at most LOG_TAIL_BYTES. */
  logTail: string;
  durationMs: number;
  /** What the task used, as far as the runtime could measure; null when it could not. */
  usage: TaskUsage | null;
}

export const LOG_TAIL_BYTES = 64 * 1024;
