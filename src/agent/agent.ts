import { randomUUID } from 'node:crypto';
import { constants } from 'node:fs';
import { open, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { BoxgridClient } from '../client/client.js';
import type { TaskAssignment, TaskOutcome, TaskUsage, UploadTarget } from '../client/types.js';
import { describeOutcome } from '../domain/outcomes.js';
import { BoxgridError } from '../domain/errors.js';
import { subtract, type Resources } from '../domain/resources.js';
import type { RuntimeKind } from '../domain/model.js';
import { TaskJournal, TASK_UID, type PendingResult, type TaskDirs } from './journal.js';
import { LogBuffer } from './log-buffer.js';
import type { TaskRunResult, TaskRunSpec, TaskRuntime } from './runtime.js';
import { packCheckpoint, unpackCheckpoint } from './checkpoints.js';
import { collectOutputs, InputCache, placeInput, type OutputFileOnDisk } from './staging.js';

export type AgentLogger = (level: 'info' | 'warn' | 'error', message: string) => void;

export interface AgentOptions {
  workDir: string;
  /** What this host gives the grid (at most what it has). */
  capacity: Resources;
  /** The runtimes this host offers, in order of preference. */
  runtimes: Array<{ kind: RuntimeKind; runtime: TaskRuntime }>;
  /** Most tasks at once, whatever their size. */
  maxTasks: number;
  /** On stop: let running tasks finish (`wait`), or abort them and hand their jobs back (`release`). */
  onStop: 'wait' | 'release';
  /** Largest output file the agent uploads. */
  maxOutputBytes: number;
  /** Images the agent pulled are pruned, least recently used first, to fit this budget. */
  imageBudgetMiB: number | null;
  /** For apps that checkpoint: how often /checkpoint is uploaded while the task runs (and once more on stop). */
  checkpointSeconds: number;
  /** Backoff while the server cannot be reached: doubling from `min`, capped at `max`, with jitter. */
  backoff: { minMs: number; maxMs: number };
  /** This host's labels (`--label k=v`), matched against jobs' selectors. */
  labels?: Record<string, string>;
  /** Images the runtime held at start (the probe's list); tasks of their apps come here first. */
  images?: string[];
  /**
   * A pilot's ends (a batch job on a cluster): stop asking for work after holding nothing for
   * `idleMs`, and take only tasks whose app may run no longer than the time left before
   * `endsAt` (epoch ms) less a margin for staging and delivery. Absent: an agent that stays.
   */
  pilot?: { idleMs: number | null; endsAt: number | null };
  /**
   * Refusals of one result (RESULT_REFUSALS) after which it is given up: reported instead as
   * an `agent_error` that says why, so its job runs again elsewhere (default 8, some minutes of
   * backoff). If the server refuses that too, the result is dropped.
   */
  resultRefusals?: number;
  log: AgentLogger;
}

/** Kept back from a pilot's time left: staging inputs before a task, delivering after it. */
export const WALLTIME_MARGIN_SECONDS = 30;

/** Most image names a work request carries (the most recently used). */
const MAX_IMAGES_SENT = 512;

/** Answers after which a result is dropped: the server will never take it. */
export const FINAL_REFUSALS: ReadonlySet<string> = new Set(['lease_expired', 'conflict', 'not_found']);

/**
 * Answers about one result alone (a field it refuses, an upload that did not match): it is kept
 * and tried again later, and the results behind it are delivered meanwhile. Any other failure
 * (unreachable, a 5xx, this host's credential) would fail them all alike: delivery waits.
 */
export const RESULT_REFUSALS: ReadonlySet<string> = new Set(['invalid_request', 'digest_mismatch', 'payload_too_large']);

/** What a result refused resultRefusals times is reported as (its outputs and log left out). */
const GIVEN_UP = 'the server refused its result';

/** A file the task may write to say how far it has got: a number from 0 to 1. */
export const PROGRESS_FILE = '.boxgrid-progress';

interface Running {
  a: TaskAssignment;
  abort: AbortController;
  log: LogBuffer;
  outputsDir: string;
  /** sha256 of the last checkpoint the server has, so an unchanged one is not sent again. */
  checkpoint: string | null;
  /** A checkpoint save in progress. */
  saving: Promise<void> | null;
  /** Starts a checkpoint save now (one at a time), while a checkpointing task runs. */
  saveNow: (() => void) | null;
  /** The latest usage the runtime measured, sent with heartbeats. */
  usage: TaskUsage | null;
}

/** Runtimes that can keep the image cache in a budget (the Docker runtime). */
interface PrunesImages {
  pruneImages(budgetMiB: number, inUse: string[]): Promise<{ removed: string[] }>;
}

/**
 * The worker side of the grid, as three reconcile loops over one piece of state (the tasks it
 * holds, mirrored on disk by the journal):
 * - work: while there is room, ask the server for tasks that fit, and start them;
 * - heartbeat: one call for all running tasks, which keeps their leases and learns of aborts;
 * - delivery: results wait on disk until the server has them (outputs first, then the report).
 * Every call to the server is idempotent, so each loop simply retries, with backoff, when the
 * server cannot be reached; running tasks go on meanwhile. A restart re-reads the journal and
 * the runtimes' leftovers and carries on from there.
 */
export class Agent {
  private readonly journal: TaskJournal;
  private readonly cache: InputCache;
  private readonly running = new Map<number, Running>();
  private readonly tasks = new Set<Promise<void>>();
  private readonly outbox = new Map<number, PendingResult>();
  /** Results refused for themselves (RESULT_REFUSALS): how often so far. */
  private readonly refusals = new Map<number, number>();
  private heartbeatSeconds = 30;
  /** Kept until the server answers, so a retried work request cannot claim tasks twice. */
  private requestId: string | null = null;
  /** Images this host holds, as far as it knows: the probe's list, plus what tasks ran, less what was pruned. */
  private readonly images: Set<string>;
  private readonly work = new Waker();
  private readonly delivery = new Waker();
  private readonly beat = new Waker();
  private stopping = false;
  /** Counts for tests and the CLI: what this process did. */
  readonly stats = { started: 0, reattached: 0, delivered: 0, dropped: 0 };

  constructor(private readonly client: BoxgridClient, private readonly opts: AgentOptions) {
    this.images = new Set(opts.images ?? []);
    this.journal = new TaskJournal(opts.workDir);
    // Sources are the pre-signed URL (when the store gives one), then the server.
    this.cache = new InputCache(join(opts.workDir, 'cache'), (sha256, e, source) =>
      this.opts.log('warn', source.of > 1 && source.index === 0
        ? `input ${sha256}: its pre-signed URL failed (${e.message}); fetching it through the server`
        : `input ${sha256}: fetching it through the server failed (${e.message}); trying again`),
    );
  }

  /** Runs until `stop` aborts, then winds down as `onStop` says; resolves when it has. */
  async run(stop: AbortSignal): Promise<void> {
    await this.recover();
    const heartbeatStop = new AbortController();
    const heartbeat = this.heartbeatLoop(heartbeatStop.signal);
    const delivery = this.deliveryLoop();
    await this.workLoop(stop);
    this.stopping = true;
    if (this.opts.onStop === 'release') {
      for (const r of this.running.values()) r.abort.abort('released: the agent is stopping');
    } else {
      // A SIGTERM often means the host is going away (a shutdown's SIGKILL follows it): save
      // each checkpoint now rather than at the next interval, so a task that dies before it
      // finishes is resumed from here on another host.
      for (const r of this.running.values()) r.saveNow?.();
    }
    if (this.running.size > 0) this.opts.log('info', `stopping: waiting for ${this.running.size} task(s) to ${this.opts.onStop === 'release' ? 'stop' : 'finish'}`);
    await Promise.all(this.tasks);
    heartbeatStop.abort();
    this.delivery.wake();
    await Promise.all([heartbeat, delivery]);
  }

  // ── recovery ─────────────────────────────────────────────────────────────

  /**
   * After a restart: results already on disk are delivered (their outputs collected first if
   * the agent died before it could); tasks whose container is still there are followed to
   * their end; tasks that vanished are reported lost, so their jobs run again; containers,
   * cached inputs and scratch files no held task needs are removed.
   */
  private async recover(): Promise<void> {
    const { tasks, broken } = await this.journal.list();
    for (const id of broken) await this.journal.remove(id);
    for (const { assignment: a, result } of tasks) {
      if (!result) continue;
      if (result.collected) {
        this.outbox.set(a.taskId, result);
      } else {
        const done = await this.collect(a, result); // the agent died while hashing them
        await this.journal.saveResult(a.taskId, done);
        this.outbox.set(a.taskId, done);
      }
    }
    const owned = new Set<number>();
    for (const { kind, runtime } of this.opts.runtimes) {
      const leftovers = new Set(await runtime.leftovers());
      for (const { assignment: a, result } of tasks) {
        if (a.runtime !== kind || result) continue;
        if (leftovers.has(a.taskId)) {
          owned.add(a.taskId);
          this.opts.log('info', `task ${a.taskId}: still running after a restart; following it`);
          this.startTask(a, 'reattach');
        } else {
          const lost: PendingResult = {
            outcome: { kind: 'agent_error', message: 'the agent restarted and the task was no longer running' },
            durationMs: 0, usage: null, outputs: [], log: null, collected: true,
          };
          await this.journal.saveResult(a.taskId, lost);
          this.outbox.set(a.taskId, lost);
        }
      }
      for (const id of leftovers) {
        if (!owned.has(id)) await runtime.remove(id);
      }
    }
    const offered = new Set(this.opts.runtimes.map((r) => r.kind));
    for (const { assignment: a, result } of tasks) {
      // Unfinished tasks of a runtime this start does not offer: nothing can follow them (the
      // server requeues them when their lease ends). Finished ones are still delivered.
      if (!offered.has(a.runtime) && !result) await this.journal.remove(a.taskId);
    }
    const needed = tasks.flatMap(({ assignment: a }) => [...a.inputs.map((i) => i.sha256), ...(a.checkpoint ? [a.checkpoint] : [])]);
    await this.cache.keepOnly(new Set(needed));
    await rm(join(this.opts.workDir, 'scratch'), { recursive: true, force: true });
  }

  // ── work ─────────────────────────────────────────────────────────────────

  private free(): Resources {
    let free = this.opts.capacity;
    for (const r of this.running.values()) free = subtract(free, r.a.resources);
    return free;
  }

  private async workLoop(stop: AbortSignal): Promise<void> {
    let failures = 0;
    const idleMs = this.opts.pilot?.idleMs ?? null;
    const endsAt = this.opts.pilot?.endsAt ?? null;
    let busyAt = Date.now();
    while (!stop.aborted) {
      if (this.running.size > 0 || this.outbox.size > 0) busyAt = Date.now();
      else if (idleMs !== null && Date.now() - busyAt >= idleMs) {
        this.opts.log('info', `no work for ${Math.round(idleMs / 1000)} s: stopping (--exit-when-idle)`);
        return;
      }
      const left = endsAt === null ? null : Math.floor((endsAt - Date.now()) / 1000) - WALLTIME_MARGIN_SECONDS;
      if (left !== null && left < 1) {
        this.opts.log('info', 'no time left for another task before the walltime: stopping (--walltime)');
        return;
      }
      const free = this.free();
      const room = this.opts.maxTasks - this.running.size;
      if (room <= 0 || free.cores <= 0 || free.memoryMiB <= 0) {
        await this.work.wait(left === null ? null : (left + 1) * 1000, stop);
        continue;
      }
      let delay: number;
      try {
        this.requestId ??= randomUUID();
        const answer = await this.client.requestWork({
          requestId: this.requestId, free, maxTasks: room, runtimes: this.opts.runtimes.map((r) => r.kind),
          labels: this.opts.labels ?? {}, images: [...this.images].slice(-MAX_IMAGES_SENT),
          ...(left === null ? {} : { maxRuntimeSeconds: left }),
        });
        this.requestId = null;
        failures = 0;
        this.heartbeatSeconds = answer.heartbeatSeconds;
        for (const a of answer.tasks) {
          if (!this.running.has(a.taskId) && !this.outbox.has(a.taskId)) this.startTask(a, 'run');
        }
        // A first heartbeat at once tells the server the new tasks run (and sets the period).
        if (answer.tasks.length > 0) this.beat.wake();
        delay = answer.retryAfterMs;
      } catch (e) {
        delay = this.backoff(failures++);
        this.opts.log('warn', `asking for work failed (${(e as Error).message}); trying again in ${Math.round(delay / 1000)} s`);
      }
      // An idle pilot looks again when its idle time is up, not a whole poll later.
      if (idleMs !== null && this.running.size === 0 && this.outbox.size === 0) delay = Math.min(delay, Math.max(0, busyAt + idleMs - Date.now()));
      await this.work.wait(delay, stop);
    }
  }

  private startTask(a: TaskAssignment, mode: 'run' | 'reattach'): void {
    const runtime = this.opts.runtimes.find((r) => r.kind === a.runtime)?.runtime;
    const dirs = this.journal.dirs(a.taskId);
    const r: Running = { a, abort: new AbortController(), log: new LogBuffer(), outputsDir: dirs.outputs, checkpoint: a.checkpoint, saving: null, saveNow: null, usage: null };
    this.running.set(a.taskId, r);
    if (mode === 'run') this.stats.started++;
    else this.stats.reattached++;
    const done = this.execute(r, runtime, mode)
      .then(async (result) => {
        await this.journal.saveResult(a.taskId, result);
        this.outbox.set(a.taskId, result);
        if (a.runtime === 'docker' && result.outcome.kind !== 'image_error') this.heldImage(a);
        this.opts.log('info', `task ${a.taskId} (job ${a.jobId}): ${describeOutcome(result.outcome)}`);
      })
      .catch((e) => this.opts.log('error', `task ${a.taskId}: could not record its result (${(e as Error).message}); its lease will run out and its job run again`))
      .finally(() => {
        this.running.delete(a.taskId);
        this.tasks.delete(done);
        this.work.wake();
        this.delivery.wake();
        void this.pruneImages();
      });
    this.tasks.add(done);
  }

  /** Stages, runs (or follows) and collects one task; every failure becomes an outcome. */
  private async execute(r: Running, runtime: TaskRuntime | undefined, mode: 'run' | 'reattach'): Promise<PendingResult> {
    const a = r.a;
    const started = Date.now();
    const failed = (outcome: TaskOutcome): PendingResult => ({
      outcome, durationMs: Date.now() - started, usage: null, outputs: [], log: r.log.final(''), collected: true,
    });
    if (!runtime) return failed({ kind: 'agent_error', message: `this host does not offer the ${a.runtime} runtime` });
    let dirs: TaskDirs;
    let result: TaskRunResult;
    try {
      dirs = mode === 'run' ? await this.stage(a) : this.journal.dirs(a.taskId);
      const spec = this.spec(a, dirs, r);
      // One save at a time: a slow one is not overtaken by the next tick.
      const tick = (): void => {
        r.saving ??= this.saveCheckpoint(r, dirs, runtime).finally(() => (r.saving = null));
      };
      const saving = a.checkpointing ? setInterval(tick, this.opts.checkpointSeconds * 1000) : null;
      if (a.checkpointing) r.saveNow = tick;
      try {
        result = mode === 'run' ? await runtime.run(spec, r.abort.signal) : await runtime.reattach(spec, r.abort.signal);
      } finally {
        if (saving) clearInterval(saving);
        r.saveNow = null;
      }
      await r.saving;
      // Released while stopping: the next host resumes from what the task had saved.
      if (a.checkpointing && result.outcome.kind === 'aborted' && this.stopping) await this.saveCheckpoint(r, dirs, null);
    } catch (e) {
      if (r.abort.signal.aborted) return failed({ kind: 'aborted' });
      return failed({ kind: 'agent_error', message: `staging failed: ${(e as Error).message}` });
    }
    // On disk before the outputs are hashed (which can take long): a crash from here on loses
    // no finished work, as a restart collects the outputs itself.
    const ran: PendingResult = {
      outcome: result.outcome, durationMs: result.durationMs, usage: result.usage, log: r.log.final(result.logTail), outputs: [], collected: false,
    };
    await this.journal.saveResult(a.taskId, ran);
    return this.collect(a, ran);
  }

  /** A finished task's outputs (only a success has any), hashed and checked. */
  private async collect(a: TaskAssignment, ran: PendingResult): Promise<PendingResult> {
    const done: PendingResult = { ...ran, collected: true };
    if (ran.outcome.kind !== 'succeeded') return done;
    try {
      const { files, refused } = await collectOutputs(this.journal.dirs(a.taskId).outputs, this.opts.maxOutputBytes);
      if (refused.length > 0) return { ...done, outcome: { kind: 'output_error', message: refused.join('; ') } };
      return { ...done, outputs: files.filter((f) => f.name !== PROGRESS_FILE) };
    } catch (e) {
      return { ...done, outcome: { kind: 'agent_error', message: `collecting the outputs failed: ${(e as Error).message}` } };
    }
  }

  /**
   * The task's directories, with its inputs fetched (or found in the cache), verified and
   * linked in, and the checkpoint it resumes from unpacked.
   */
  private async stage(a: TaskAssignment): Promise<TaskDirs> {
    const dirs = await this.journal.create(a);
    // Not tied to this task's abort: another task may be waiting for the same download. A
    // pre-signed URL (the blob store's own) first when the server gave one, then the server.
    const fetch = (sha256: string, url: string | undefined) =>
      this.cache.get(sha256, [...(url ? [() => this.client.fetchPresigned(url)] : []), () => this.client.downloadTaskInput(a.taskId, sha256)]);
    for (const input of a.inputs) await placeInput(await fetch(input.sha256, input.url), dirs.inputs, input.name);
    if (a.checkpointing && a.checkpoint !== null) {
      const owner = a.runtime === 'docker' && process.getuid?.() === 0 ? TASK_UID : null;
      await unpackCheckpoint(await fetch(a.checkpoint, a.checkpointUrl), dirs.checkpoint, owner);
    }
    return dirs;
  }

  /**
   * Uploads /checkpoint when it changed; a failure is only logged (the next interval tries
   * again). While the task runs (`runtime` given) its processes are frozen for the packing, so
   * it cannot swap a file for a link to the agent's own files between the packer's check and
   * its read; a runtime that cannot freeze gets no checkpoints while running, only on release.
   */
  private async saveCheckpoint(r: Running, dirs: TaskDirs, runtime: TaskRuntime | null): Promise<void> {
    const file = join(dirs.root, `checkpoint-${randomUUID()}.tgz`);
    try {
      let packed: { sha256: string; size: number } | null;
      if (runtime) {
        if (!runtime.freeze) {
          this.opts.log('info', `task ${r.a.taskId}: not checkpointed while it runs: the ${r.a.runtime} runtime cannot freeze a task (its checkpoint is saved when it is released)`);
          return;
        }
        const thaw = await runtime.freeze(r.a.taskId);
        if (!thaw) {
          // Not started yet (a long pull) or ended meanwhile (its result will say so). A runtime that cannot freeze it throws, logged below.
          this.opts.log('info', `task ${r.a.taskId}: not checkpointed now: its container is not running (not yet, or no more)`);
          return;
        }
        try {
          packed = await packCheckpoint(dirs.checkpoint, file);
        } finally {
          await thaw();
        }
      } else {
        packed = await packCheckpoint(dirs.checkpoint, file);
      }
      if (packed === null || packed.sha256 === r.checkpoint) return;
      await this.client.uploadCheckpoint(r.a.taskId, file, packed.sha256, packed.size);
      r.checkpoint = packed.sha256;
    } catch (e) {
      this.opts.log('warn', `task ${r.a.taskId}: saving its checkpoint failed (${(e as Error).message})`);
    } finally {
      await rm(file, { force: true });
    }
  }

  private spec(a: TaskAssignment, dirs: TaskDirs, r: Running): TaskRunSpec {
    return {
      taskId: a.taskId, jobId: a.jobId, image: a.image, imageDigest: a.imageDigest, command: a.command, env: a.env,
      resources: a.resources, maxRuntimeSeconds: a.maxRuntimeSeconds, inputsDir: dirs.inputs, outputsDir: dirs.outputs,
      checkpointDir: a.checkpointing ? dirs.checkpoint : null, user: `${TASK_UID}:${TASK_UID}`,
      onOutput: (chunk) => r.log.push(chunk),
      onUsage: (usage) => (r.usage = usage),
    };
  }

  /** Moves the task's image to the most recent end of the list. */
  private heldImage(a: TaskAssignment): void {
    for (const name of a.imageDigest ? [a.image, a.imageDigest] : [a.image]) {
      this.images.delete(name);
      this.images.add(name);
    }
  }

  private async pruneImages(): Promise<void> {
    if (this.opts.imageBudgetMiB === null) return;
    const inUse = [...this.running.values()].map((r) => r.a.image);
    for (const { runtime } of this.opts.runtimes) {
      const pruner = runtime as Partial<PrunesImages>;
      if (typeof pruner.pruneImages !== 'function') continue;
      try {
        const { removed } = await pruner.pruneImages(this.opts.imageBudgetMiB, inUse);
        if (removed.length > 0) this.opts.log('info', `image cache over its budget: removed ${removed.join(', ')}`);
        for (const image of removed) this.images.delete(image);
      } catch (e) {
        this.opts.log('warn', `pruning images failed: ${(e as Error).message}`);
      }
    }
  }

  // ── heartbeat ────────────────────────────────────────────────────────────

  private async heartbeatLoop(stop: AbortSignal): Promise<void> {
    let failures = 0;
    while (!stop.aborted) {
      await this.beat.wait(failures > 0 ? Math.min(this.backoff(failures), this.heartbeatSeconds * 1000) : this.heartbeatSeconds * 1000, stop);
      if (stop.aborted || this.running.size + this.outbox.size === 0) continue;
      try {
        await this.heartbeat();
        failures = 0;
      } catch (e) {
        failures++;
        this.opts.log('warn', `heartbeat failed (${(e as Error).message}); tasks keep running`);
      }
    }
  }

  /** One heartbeat for every running task; exposed for tests, which call it instead of waiting. */
  async heartbeat(): Promise<void> {
    const tasks = [...this.running.values()];
    const body = await Promise.all(
      tasks.map(async (r) => {
        const progress = await readProgress(r.outputsDir);
        const log = r.log.take();
        return { taskId: r.a.taskId, ...(progress === undefined ? {} : { progress }), ...(r.usage ? { usage: r.usage } : {}), ...(log ? { log } : {}) };
      }),
    );
    // Finished results waiting for delivery keep their leases too (a long upload, an outage).
    for (const taskId of this.outbox.keys()) if (!this.running.has(taskId)) body.push({ taskId });
    const answer = await this.client.heartbeat({ tasks: body });
    this.heartbeatSeconds = answer.heartbeatSeconds;
    const sent = new Map(body.map((b) => [b.taskId, b.log]));
    for (const lease of answer.leases) {
      const log = sent.get(lease.taskId);
      if (log) this.running.get(lease.taskId)?.log.ack(log.offset + log.text.length);
    }
    for (const { taskId, reason } of answer.abort) {
      const r = this.running.get(taskId);
      if (r && !r.abort.signal.aborted) {
        this.opts.log('info', `task ${taskId}: aborting, as the server asks (${reason})`);
        r.abort.abort(reason);
      }
    }
  }

  // ── delivery ─────────────────────────────────────────────────────────────

  private async deliveryLoop(): Promise<void> {
    let failures = 0;
    for (;;) {
      let unreachable = false;
      let held = false;
      const tried = new Set<number>();
      for (const [taskId, result] of [...this.outbox]) {
        tried.add(taskId);
        try {
          await this.deliver(taskId, result);
          this.stats.delivered++;
        } catch (e) {
          if (e instanceof BoxgridError && FINAL_REFUSALS.has(e.code)) {
            // The server will never take it (its lease expired, say): keeping it helps nobody.
            this.opts.log('warn', `task ${taskId}: the server refused its result (${e.message}); dropping it`);
            this.stats.dropped++;
            await this.forget(taskId);
          } else if (e instanceof BoxgridError && RESULT_REFUSALS.has(e.code)) {
            // Perhaps a passing server fault: kept for a while, but it holds up no other result.
            held = await this.refused(taskId, result, e) || held;
          } else {
            // Unreachable, or an answer that may change (a 5xx, a credential being fixed): keep it.
            unreachable = true;
            this.opts.log('warn', `task ${taskId}: delivering its result failed (${(e as Error).message}); it waits on disk`);
            break;
          }
        }
      }
      // Stopping with the server unreachable or refusing: results stay on disk for the next start
      // (but a result that arrived during the pass is tried first).
      const allTried = [...this.outbox.keys()].every((id) => tried.has(id));
      if (this.stopping && this.running.size === 0 && (this.outbox.size === 0 || unreachable || (held && allTried))) return;
      // Backing off until a pass delivers everything; a task that ends wakes the loop sooner.
      if (!unreachable && !held) failures = 0;
      await this.delivery.wait(unreachable || held ? this.backoff(failures++) : null, null);
    }
  }

  /**
   * A result the server refused for itself: kept (true) until refused `resultRefusals` times,
   * then replaced by an `agent_error` report that says why (true: it is offered next pass); a
   * replacement refused in turn is dropped (false), as a final refusal would be.
   */
  private async refused(taskId: number, result: PendingResult, e: BoxgridError): Promise<boolean> {
    const n = (this.refusals.get(taskId) ?? 0) + 1;
    this.refusals.set(taskId, n);
    const givenUp = result.outcome.kind === 'agent_error' && result.outcome.message.startsWith(GIVEN_UP);
    if (givenUp) {
      this.opts.log('error', `task ${taskId}: the server refused even the report that it could not take the result (${e.message}); dropping it: its job runs again once its lease is over`);
      this.stats.dropped++;
      await this.forget(taskId);
      return false;
    }
    if (n < (this.opts.resultRefusals ?? 8)) {
      this.opts.log('warn', `task ${taskId}: the server refused its result (${e.message}); it waits on disk, and is offered again later`);
      return true;
    }
    this.opts.log('error', `task ${taskId}: the server refused its result ${n} times (${e.message}); reporting an agent error instead, so that its job runs again`);
    const instead: PendingResult = {
      outcome: { kind: 'agent_error', message: `${GIVEN_UP} ${n} times: ${e.message}`.slice(0, 1000) },
      durationMs: result.durationMs, usage: result.usage, outputs: [], log: null, collected: true,
    };
    await this.journal.saveResult(taskId, instead);
    this.outbox.set(taskId, instead);
    return true;
  }

  /** Outputs first (content-addressed, so repeats are free), then the report that names them. */
  private async deliver(taskId: number, result: PendingResult): Promise<void> {
    try {
      await this.upload(taskId, result.outputs);
    } catch (e) {
      if (!(e instanceof BoxgridError)) throw e;
      if (e.code === 'payload_too_large') {
        // Over the server's blob limit: the task's outputs are refused, and the report says so.
        result = { ...result, outcome: { kind: 'output_error', message: `the server refused an output: ${e.message}` }, outputs: [] };
        await this.journal.saveResult(taskId, result);
      } else if (e.code !== 'conflict') {
        throw e;
      }
      // conflict: the task has ended on the server (a report that got through before a crash,
      // say); the report below is then a replay, or says why it is refused.
    }
    await this.client.reportTask(taskId, {
      outcome: result.outcome, durationMs: result.durationMs,
      ...(result.usage ? { usage: result.usage } : {}),
      outputs: Object.fromEntries(result.outputs.map((f) => [f.name, { sha256: f.sha256, size: f.size }])),
      ...(result.log ? { log: result.log } : {}),
    });
    await this.forget(taskId);
  }

  /**
   * Each output where the server says: nowhere when its project holds it, else to the blob
   * store through a pre-signed URL (once; on failure through the server), else through the
   * server. A server without the call gets every output through it, as before.
   */
  private async upload(taskId: number, outputs: OutputFileOnDisk[]): Promise<void> {
    if (outputs.length === 0) return;
    const targets = new Map<string, UploadTarget>();
    try {
      const files = [...new Map(outputs.map((f) => [f.sha256, { sha256: f.sha256, size: f.size }])).values()];
      for (const t of (await this.client.taskUploads(taskId, files)).files) targets.set(t.sha256, t);
    } catch (e) {
      // The server's word on the task (ended, too large) or unreachable: the caller decides.
      if (!(e instanceof BoxgridError) || e.retryable || e.code === 'conflict' || e.code === 'payload_too_large') throw e;
      this.opts.log('warn', `task ${taskId}: asking where to upload failed (${e.message}); uploading through the server`);
    }
    const sent = new Set<string>();
    for (const f of outputs) {
      const target = targets.get(f.sha256);
      if (target?.present || sent.has(f.sha256)) continue;
      sent.add(f.sha256);
      if (target?.url) {
        try {
          await this.client.putPresigned(target.url, target.headers ?? {}, f.path, f.size);
          continue;
        } catch (e) {
          this.opts.log('warn', `task ${taskId}: uploading ${f.name} to its pre-signed URL failed (${(e as Error).message}); uploading through the server`);
        }
      }
      await this.client.uploadTaskFile(taskId, f.path, f.sha256, f.size);
    }
  }

  private async forget(taskId: number): Promise<void> {
    this.outbox.delete(taskId);
    this.refusals.delete(taskId);
    await this.journal.remove(taskId);
  }

  // ── timing ───────────────────────────────────────────────────────────────

  /** Exponential backoff, jittered over its upper half: hosts that lost the server together do not return together. */
  private backoff(failures: number): number {
    const ceiling = Math.min(this.opts.backoff.maxMs, this.opts.backoff.minMs * 2 ** Math.min(failures, 20));
    return Math.round(ceiling / 2 + (Math.random() * ceiling) / 2);
  }
}

/**
 * Wakes a loop that waits for something to do. A wake-up that comes while the loop is busy is
 * kept, so the next wait returns at once: no result or free slot is ever left waiting for a
 * timer.
 */
class Waker {
  private pending = false;
  private resolve: (() => void) | null = null;

  wake(): void {
    this.pending = true;
    this.resolve?.();
  }

  /** Waits `ms` (for ever when null), returning early on a wake-up or on `stop`. */
  wait(ms: number | null, stop: AbortSignal | null): Promise<void> {
    if (this.pending || stop?.aborted) {
      this.pending = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        if (timer) clearTimeout(timer);
        stop?.removeEventListener('abort', done);
        this.resolve = null;
        this.pending = false;
        resolve();
      };
      const timer = ms === null ? null : setTimeout(done, ms);
      stop?.addEventListener('abort', done, { once: true });
      this.resolve = done;
    });
  }
}

/**
 * The number a task wrote to its progress file. The task controls that path: a FIFO would block
 * a plain read for ever and a link could point anywhere, so it is opened without following
 * links or waiting, must be a regular file, and only its first bytes are read.
 */
async function readProgress(outputsDir: string): Promise<number | undefined> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(join(outputsDir, PROGRESS_FILE), constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    if (!(await handle.stat()).isFile()) return undefined;
    const { buffer, bytesRead } = await handle.read(Buffer.alloc(32), 0, 32, 0);
    const n = Number(buffer.subarray(0, bytesRead).toString('utf8').trim());
    return Number.isFinite(n) ? Math.min(1, Math.max(0, n)) : undefined;
  } catch {
    return undefined;
  } finally {
    await handle?.close();
  }
}
