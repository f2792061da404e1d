import { chmod, chown, mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import { constants, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { TASK_UID } from '../agent/journal.js';
import type { TaskRuntime } from '../agent/runtime.js';
import { describeOutcome } from '../domain/outcomes.js';
import type { App, Job, OutputFile } from '../domain/model.js';
import type { ValidatorAnswer } from '../domain/quorum.js';
import type { ServiceContext } from './context.js';
import { Periodic } from './periodic.js';

/** Jobs one pass validates; a backlog takes several passes. */
const PER_PASS = 20;
/** What a validator container gets, whatever the app asks of its tasks. */
const VALIDATOR_RESOURCES = { cores: 1, memoryMiB: 1024, diskMiB: 1024, gpus: 0 };
const VALIDATOR_SECONDS = 600;
/** The largest groups.json read: a validator that writes more is broken. */
const MAX_ANSWER_BYTES = 1024 * 1024;
/** The most replica output one validation copies to the server's disk. */
const MAX_INPUT_BYTES = 1024 ** 3;
/** A job whose validation could not run waits this long before the next try, doubling up to an hour. */
const RETRY_MS = 60_000;
const RETRY_MAX_MS = 3_600_000;

/** Runs an app's validator on replicas' outputs. */
export interface ValidatorRunner {
  /**
   * The validator's answer about these replicas. Throws only when the validator could not be
   * run at all (no engine): the job then waits for the next pass.
   */
  validate(app: App, job: Job, replicas: Array<{ taskId: number; outputs: Record<string, OutputFile> }>): Promise<ValidatorAnswer>;
}

/**
 * Runs validators in containers of the server's own engine, sandboxed as tasks are (no
 * network, read-only root, nobody): each replica's outputs under /in/<task id>/, and the
 * validator writes /out/groups.json — `{"groups": [[task ids that agree], …]}`, replicas left
 * out being wrong. A validator that fails, or answers anything else, fails the job with why.
 */
export class ContainerValidatorRunner implements ValidatorRunner {
  constructor(private readonly ctx: Pick<ServiceContext, 'blobs'>, private readonly runtime: TaskRuntime, private readonly workDir = tmpdir()) {}

  async validate(app: App, job: Job, replicas: Array<{ taskId: number; outputs: Record<string, OutputFile> }>): Promise<ValidatorAnswer> {
    const total = replicas.reduce((n, r) => n + Object.values(r.outputs).reduce((m, f) => m + f.size, 0), 0);
    if (total > MAX_INPUT_BYTES) return { error: `the replicas' outputs hold ${total} bytes, more than the ${MAX_INPUT_BYTES} a validator is given` };
    const dir = await mkdtemp(join(this.workDir, `boxgrid-validate-${job.id}-`));
    try {
      const inputs = join(dir, 'in');
      const outputs = join(dir, 'out');
      await mkdir(outputs, { recursive: true, mode: 0o700 });
      // The validator runs as nobody, as tasks do (agent/journal.ts).
      if (process.getuid?.() === 0) await chown(outputs, TASK_UID, TASK_UID);
      else await chmod(outputs, 0o777);
      for (const r of replicas) {
        await mkdir(join(inputs, String(r.taskId)), { recursive: true });
        // Output names are plain file names (domain/file-names.ts): nothing escapes the replica's dir.
        for (const [name, file] of Object.entries(r.outputs)) await pipeline(this.ctx.blobs.read(file.sha256), createWriteStream(join(inputs, String(r.taskId), name)));
      }
      const result = await this.runtime.run({
        taskId: job.id, jobId: job.id, image: app.validator!.image, imageDigest: null, command: app.validator!.command, env: {},
        resources: VALIDATOR_RESOURCES, maxRuntimeSeconds: VALIDATOR_SECONDS, inputsDir: inputs, outputsDir: outputs, checkpointDir: null, user: `${TASK_UID}:${TASK_UID}`,
      });
      // Not the validator's answer but the engine's trouble (an image it cannot get, say): try again later.
      if (result.outcome.kind === 'agent_error' || result.outcome.kind === 'image_error') {
        throw new Error(`the validator of job ${job.id} could not run: ${result.outcome.message}`);
      }
      if (result.outcome.kind !== 'succeeded') {
        const last = result.logTail.trim().split('\n').at(-1);
        return { error: `${describeOutcome(result.outcome)}${last ? ` (${last.slice(0, 200)})` : ''}` };
      }
      return parseAnswer(await readAnswer(join(outputs, 'groups.json')));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }
}

/**
 * The validator's answer file, as the server reads it: a regular file (not a link to one of the
 * server's files, not a FIFO that would block the loop), at most MAX_ANSWER_BYTES + 1 read.
 */
async function readAnswer(path: string): Promise<Buffer | null> {
  let handle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    if (!(await handle.stat()).isFile()) return null;
    const buffer = Buffer.alloc(MAX_ANSWER_BYTES + 1);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
    return buffer.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

/** A validator's /out/groups.json, checked: an array of arrays of task ids. */
export function parseAnswer(bytes: Buffer | null): ValidatorAnswer {
  if (bytes === null) return { error: 'it wrote no /out/groups.json (a regular file)' };
  if (bytes.length > MAX_ANSWER_BYTES) return { error: `its /out/groups.json is larger than ${MAX_ANSWER_BYTES} bytes` };
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch {
    return { error: '/out/groups.json is not JSON' };
  }
  const groups = (v as { groups?: unknown } | null)?.groups;
  if (!Array.isArray(groups) || !groups.every((g) => Array.isArray(g) && g.every((id) => Number.isSafeInteger(id)))) {
    return { error: '/out/groups.json is not {"groups": [[task id, …], …]}' };
  }
  return { groups: groups as number[][] };
}

/**
 * The servers' loop for validators: jobs whose replicas wait for their app's validator are
 * validated and judged (Store.recordValidation). A reconcile loop like the lease sweeper: each
 * pass reads the store afresh, so it is safe after a crash and alongside other servers (two
 * servers may validate one job; the store judges it once).
 */
export class ValidatorLoop {
  private readonly loop: Periodic;
  /** Jobs whose validation could not run, and when to try again (one job's trouble holds up no other). */
  private readonly retries = new Map<number, { at: number; delayMs: number }>();

  constructor(
    private readonly ctx: ServiceContext,
    private readonly runner: ValidatorRunner,
    intervalSeconds = 5,
    private readonly log: (message: string) => void = () => {},
  ) {
    this.loop = new Periodic(() => this.pass(), intervalSeconds * 1000); // no engine, a store outage: the next pass tries again
  }

  /** One pass; returns how many jobs it judged. */
  async pass(): Promise<number> {
    let judged = 0;
    const now = this.ctx.now();
    for (const { job, app, tasks } of await this.ctx.store.jobsAwaitingValidator(PER_PASS + this.retries.size)) {
      const retry = this.retries.get(job.id);
      if (retry && retry.at > now) continue;
      const replicas = tasks.filter((t) => t.state === 'succeeded' && t.outcome?.kind === 'succeeded').map((t) => ({ taskId: t.id, outputs: t.outputs }));
      let answer: ValidatorAnswer;
      try {
        answer = await this.runner.validate(app, job, replicas);
      } catch (e) {
        const delayMs = Math.min((retry?.delayMs ?? RETRY_MS / 2) * 2, RETRY_MAX_MS);
        this.retries.set(job.id, { at: now + delayMs, delayMs });
        this.log(`${(e as Error).message}; trying again in ${delayMs / 1000} s`);
        continue;
      }
      this.retries.delete(job.id);
      const r = await this.ctx.store.recordValidation({ jobId: job.id, basis: replicas.map((x) => x.taskId), answer, rules: this.ctx.scheduling }, this.ctx.now());
      if (!r || r.stale) continue;
      judged++;
      if (r.job.state !== job.state) this.ctx.events.publishJob(r.job);
    }
    return judged;
  }

  start(): void {
    this.loop.start();
  }

  /** Stops the loop and waits for a pass in progress. */
  stop(): Promise<void> {
    return this.loop.stop();
  }
}
