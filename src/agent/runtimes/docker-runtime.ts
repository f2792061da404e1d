import type { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { pullRef, repositoryOf } from '../../domain/image-ref.js';
import Docker from 'dockerode';
import type { RuntimeProbe } from '../probe.js';
import { LOG_TAIL_BYTES, type TaskOutcome, type TaskRunResult, type TaskRunSpec, type TaskRuntime, type TaskUsage } from '../runtime.js';
import { ImageLedger, type LedgerEntry } from './docker-image-ledger.js';
import { FrameDecoder, JsonLines, UsageMeter, type StatsSample } from './docker-streams.js';
import { TailBuffer } from '../tail-buffer.js';
import { diskUsage, watchDisk } from './disk-limit.js';

/** Labels that tie a container to its task, so a restarted agent can find (or clean up) its own. */
export const LABEL_TASK = 'io.boxgrid.task';
export const LABEL_JOB = 'io.boxgrid.job';
/** Which agent a container belongs to (see DockerRuntimeOptions.owner). */
export const LABEL_OWNER = 'io.boxgrid.owner';

export interface DockerRuntimeOptions {
  /** Docker Engine socket; dockerode's default (DOCKER_HOST or /var/run/docker.sock) otherwise. */
  socketPath?: string;
  /** Size of the writable tmpfs at /tmp, MiB (at most the task's disk limit). */
  tmpMiB?: number;
  /** Most processes (and threads) one task may have: a fork bomb stops here. */
  pidsLimit?: number;
  /**
   * JSON file recording the images this runtime pulled and when each last ran a task, so that
   * `pruneImages` can free space without touching the owner's images. Without it nothing is
   * recorded and nothing is ever pruned.
   */
  stateFile?: string;
  /**
   * Which agent this runtime works for (its host id, say). Its containers carry it, and
   * `leftovers`/`remove`/`reattach` see only containers with the same owner, so two agents (or
   * test suites) on one engine never take each other's containers for leftovers. Runtimes
   * without an owner share the containers that have none.
   */
  owner?: string;
}

/** A task that printed more than this gets no catch-up read of its log (see followOutput): it would be held in memory whole. */
const CATCH_UP_MAX_BYTES = 64 * 2 ** 20;
/** After a container exits, how long its log stream may take to drain before the tail is read instead. */
const LOG_DRAIN_MS = 5_000;
/** Tries at pausing a running container for a checkpoint, the waits between them growing from FREEZE_RETRY_MS. */
const FREEZE_TRIES = 4;
const FREEZE_RETRY_MS = 250;
/** Longest wait for the engine's answer on whether a container was killed for memory. */
const OOM_LOOKUP_MS = 3_000;
/** Lines asked for when the tail has to be read after the fact (the engine cannot cut by bytes). */
const TAIL_LINES = 2_000;

/** Why the runtime killed a container: its time limit, an abort, or its disk limit (see watchDisk). */
type StopReason = 'timeout' | 'aborted' | 'disk' | null;
type Ended = Omit<TaskRunResult, 'durationMs'>;

/** A pull in flight, shared by every run that needs the same reference. */
interface PullJob {
  done: Promise<void>;
  waiters: number;
  cancel(): void;
}

/**
 * Runs each task in its own container with the tightest sandbox that still runs science code:
 * no network, a read-only root, no capabilities, no privilege gain, a non-root user, hard
 * memory (no swap beyond it), CPU and pid limits, and the task's directories as the only
 * writable places, held to its disk limit (see follow). The container is removed however the
 * task ends.
 *
 * Around that: missing images are pulled (by the pinned digest, once however many tasks wait
 * for them) and what runs is the image id that was verified; output streams to `onOutput` as
 * it is written; usage is sampled from the engine's stats while the task runs; containers left
 * by an agent that died are found by label and followed to their end; images boxgrid pulled
 * are pruned least recently used first.
 */
export class DockerRuntime implements TaskRuntime, RuntimeProbe {
  readonly name = 'docker';
  private readonly docker: Docker;
  private readonly ledger: ImageLedger | null;
  private readonly pulls = new Map<string, PullJob>();
  /** Tasks this process runs or follows, with the image references they need (never pruned, never leftovers). */
  private readonly active = new Map<number, string[]>();
  /** Whether the engine is Podman's compat service, once known (see isPodman). */
  private podman: boolean | null = null;

  constructor(private readonly opts: DockerRuntimeOptions = {}) {
    this.docker = new Docker(opts.socketPath ? { socketPath: opts.socketPath } : undefined);
    this.ledger = opts.stateFile ? new ImageLedger(opts.stateFile) : null;
  }

  /** Engine version, or null when no engine answers (the agent then says how to start one). */
  async version(): Promise<string | null> {
    try {
      return (await this.docker.version()).Version;
    } catch {
      return null;
    }
  }

  /** Tags and digests of the images the engine holds. */
  async images(): Promise<string[]> {
    const list = await this.docker.listImages();
    return list.flatMap((i) => [...(i.RepoTags ?? []), ...(i.RepoDigests ?? [])]).filter((t) => t !== '<none>:<none>' && t !== '<none>@<none>');
  }

  async run(spec: TaskRunSpec, signal?: AbortSignal): Promise<TaskRunResult> {
    const started = Date.now();
    const early = (outcome: TaskOutcome): TaskRunResult => ({ outcome, logTail: '', durationMs: Date.now() - started, usage: null });
    if (signal?.aborted) return early({ kind: 'aborted' });
    this.active.set(spec.taskId, [spec.image, pullRef(spec)]);
    try {
      const image = await this.prepareImage(spec, signal);
      if (typeof image !== 'string') return early(image);
      // Bookkeeping for pruning only: a failed write must not fail the task.
      await this.ledger?.touch(image).catch(() => undefined);
      return { ...(await this.runContainer(spec, image, signal)), durationMs: Date.now() - started };
    } catch (e) {
      return early({ kind: 'agent_error', message: (e as Error).message });
    } finally {
      this.active.delete(spec.taskId);
    }
  }

  /**
   * The container for a task; `image` is what runs (run() passes the id it verified, so a moved
   * tag cannot swap it). `capFileSize` false leaves files uncapped (see isPodman).
   */
  containerConfig(spec: TaskRunSpec, image: string = spec.image, { capFileSize = true } = {}): Docker.ContainerCreateOptions {
    const memoryBytes = spec.resources.memoryMiB * 1024 * 1024;
    const diskMiB = spec.resources.diskMiB; // 0: the app states no disk limit
    const tmpMiB = diskMiB > 0 ? Math.min(this.opts.tmpMiB ?? 64, diskMiB) : (this.opts.tmpMiB ?? 64);
    const binds = [`${spec.inputsDir}:/in:ro`, `${spec.outputsDir}:/out:rw`];
    if (spec.checkpointDir) binds.push(`${spec.checkpointDir}:/checkpoint:rw`);
    return {
      Image: image,
      Cmd: spec.command,
      Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
      User: spec.user,
      WorkingDir: '/out',
      Labels: { [LABEL_TASK]: String(spec.taskId), [LABEL_JOB]: String(spec.jobId), ...(this.opts.owner !== undefined ? { [LABEL_OWNER]: this.opts.owner } : {}) },
      NetworkDisabled: true,
      HostConfig: {
        NetworkMode: 'none',
        ReadonlyRootfs: true,
        Tmpfs: { '/tmp': `rw,nosuid,nodev,size=${tmpMiB}m` },
        CapDrop: ['ALL'],
        SecurityOpt: ['no-new-privileges'],
        Memory: memoryBytes,
        MemorySwap: memoryBytes, // equal to Memory: no swap on top of the limit
        NanoCpus: Math.round(spec.resources.cores * 1e9),
        PidsLimit: this.opts.pidsLimit ?? 256,
        // No one file past the disk limit: a write (or fallocate) over it fails at once with
        // SIGXFSZ/EFBIG, where the watch on /out and /checkpoint would only see it afterwards.
        // One MiB of slack so that the file that hits the cap is over the limit the watch checks.
        ...(diskMiB > 0 && capFileSize ? { Ulimits: [{ Name: 'fsize', Soft: (diskMiB + 1) * 2 ** 20, Hard: (diskMiB + 1) * 2 ** 20 }] } : {}),
        Binds: binds,
        // GPUs the NVIDIA container toolkit's way; untested here (no GPU on this machine).
        ...(spec.resources.gpus > 0 ? { DeviceRequests: [{ Driver: 'nvidia', Count: spec.resources.gpus, Capabilities: [['gpu']] }] } : {}),
      },
    };
  }

  /**
   * Whether the engine is Podman. Podman 4.3's compat API, given any `Ulimits`, drops the
   * `default_ulimits` of containers.conf and sets its own RLIMIT_NOFILE of 1048576, which fails
   * every container where root lacks CAP_SYS_RESOURCE (docs/operations.md, Podman pilots): there
   * files are not capped, and only the measurements hold the disk limit. Asked once; a failed
   * answer is asked again next time.
   */
  private async isPodman(): Promise<boolean> {
    if (this.podman !== null) return this.podman;
    try {
      const v = await this.docker.version();
      this.podman = (v.Components ?? []).some((c) => /podman/i.test(c.Name));
      return this.podman;
    } catch {
      return false;
    }
  }

  // ---- leftovers of an earlier agent process ----

  async leftovers(): Promise<number[]> {
    const ids = new Set<number>();
    for (const c of await this.ours(LABEL_TASK)) {
      const id = Number(c.Labels[LABEL_TASK]);
      if (Number.isSafeInteger(id) && !this.active.has(id)) ids.add(id);
    }
    return [...ids].sort((a, b) => a - b);
  }

  async reattach(spec: TaskRunSpec, signal?: AbortSignal): Promise<TaskRunResult> {
    const lost = (message: string): TaskRunResult => ({ outcome: { kind: 'agent_error', message }, logTail: '', durationMs: 0, usage: null });
    this.active.set(spec.taskId, [spec.image]);
    try {
      const [newest] = await this.taskContainers(spec.taskId);
      if (!newest) return lost(`no container is left for task ${spec.taskId}`);
      const container = this.docker.getContainer(newest.Id);
      const state = (await container.inspect()).State;
      const startedAt = Date.parse(state.StartedAt);
      if (!(startedAt > 0)) {
        // The earlier agent died between creating and starting it: the task never ran, so it starts now.
        const t0 = Date.now();
        const ended = signal?.aborted ? { outcome: { kind: 'aborted' } as const, logTail: '', usage: null } : await this.startAndFollow(container, spec, signal);
        return { ...ended, durationMs: Date.now() - t0 };
      }
      // An agent that died while it packed a checkpoint left the container frozen (see freeze).
      if (state.Paused) await container.unpause().catch(ignoreGone);
      // 'not-running' answers at once for a container that ended while no agent watched it.
      const waited = state.Running ? container.wait({ condition: 'not-running' }) : Promise.resolve();
      const ended = await this.follow(container, waited, spec, signal, startedAt, state.Running);
      return { ...ended, durationMs: Date.now() - startedAt };
    } catch (e) {
      return lost(`could not follow the container of task ${spec.taskId}: ${(e as Error).message}`);
    } finally {
      this.active.delete(spec.taskId);
      await this.remove(spec.taskId).catch(() => undefined);
    }
  }

  async freeze(taskId: number): Promise<(() => Promise<void>) | null> {
    // Podman pauses or it never will (rootless on cgroup v1): one try there.
    const tries = (await this.isPodman()) ? 1 : FREEZE_TRIES;
    let why = '';
    for (let attempt = 1; ; attempt++) {
      // Looked at again after each failed try: a task that ended meanwhile is no failure.
      const [newest] = await this.taskContainers(taskId);
      const state = newest?.State;
      if (state === 'paused') throw new Error('its container is paused already (by someone else: the agent thaws what it freezes)');
      // Not started yet (a long pull) or ended: nothing to freeze now. Created or restarting: in between, try again.
      if (!newest || (state !== 'running' && state !== 'created' && state !== 'restarting')) return null;
      if (attempt > tries) throw new Error(`the engine would not pause its container: ${why}`);
      why = `it is ${state}`;
      if (state === 'running') {
        const container = this.docker.getContainer(newest.Id);
        try {
          await container.pause();
          return async () => {
            await container.unpause().catch(ignoreGone);
          };
        } catch (e) {
          // The freezer can time out on a busy machine (a process of the task stuck in a disk
          // write); the save on a stop has no next tick, so try again while the task runs.
          why = (e as Error).message;
        }
      }
      if (attempt < tries) await new Promise((resolve) => setTimeout(resolve, FREEZE_RETRY_MS * attempt));
    }
  }

  async remove(taskId: number): Promise<void> {
    for (const c of await this.taskContainers(taskId)) {
      await this.docker.getContainer(c.Id).remove({ force: true, v: true }).catch(ignoreGone);
    }
  }

  /** The task's containers, newest first (there is one unless something went badly wrong). */
  private async taskContainers(taskId: number): Promise<Docker.ContainerInfo[]> {
    return (await this.ours(`${LABEL_TASK}=${taskId}`)).sort((a, b) => b.Created - a.Created);
  }

  /** Containers matching a label filter that have this runtime's owner (none when it has none). */
  private async ours(label: string): Promise<Docker.ContainerInfo[]> {
    const list = await this.docker.listContainers({ all: true, filters: { label: [label] } });
    return list.filter((c) => c.Labels[LABEL_OWNER] === this.opts.owner);
  }

  // ---- images: find, pull (once per reference), verify, prune ----

  /** The id of the image to run (present, pulled if it was not, and with the pinned digest), or why there is none. */
  private async prepareImage(spec: TaskRunSpec, signal?: AbortSignal): Promise<string | TaskOutcome> {
    const local = await this.findLocal(spec);
    if (local.id !== null) return local.id;
    const ref = pullRef(spec);
    const what = ref === spec.image ? ref : `${spec.image} by its pinned digest (${ref})`;
    try {
      await this.pull(ref, signal);
    } catch (e) {
      if (signal?.aborted) return { kind: 'aborted' };
      const here = local.otherDigest ? ` (the ${spec.image} on this host has another digest)` : '';
      return { kind: 'image_error', message: `could not pull ${what}${here}: ${engineMessage(e)}` };
    }
    const info = await this.inspectImage(ref);
    if (info === null) return { kind: 'image_error', message: `pulled ${what}, but the engine does not find it` };
    if (!hasDigest(info, spec.imageDigest)) {
      return { kind: 'image_error', message: `image ${spec.image} does not have the pinned digest ${spec.imageDigest}` };
    }
    return info.Id;
  }

  /** The local image that fits the spec; `otherDigest` when one with the name exists but is not the pinned one. */
  private async findLocal(spec: TaskRunSpec): Promise<{ id: string | null; otherDigest: boolean }> {
    let otherDigest = false;
    for (const name of new Set([pullRef(spec), spec.image])) {
      const info = await this.inspectImage(name);
      if (info === null) continue;
      if (hasDigest(info, spec.imageDigest)) return { id: info.Id, otherDigest: false };
      otherDigest = true;
    }
    return { id: null, otherDigest };
  }

  /** Null when the engine has no such image; engine failures throw (they are the agent's, not the image's). */
  private async inspectImage(name: string): Promise<Docker.ImageInspectInfo | null> {
    try {
      return await this.docker.getImage(name).inspect();
    } catch (e) {
      if ((e as { statusCode?: number }).statusCode === 404) return null;
      throw e;
    }
  }

  /**
   * Pulls `ref`, joining a pull of the same reference already in flight. An aborted caller stops
   * waiting at once; the pull itself is cancelled only when no other run still waits for it.
   */
  private async pull(ref: string, signal?: AbortSignal): Promise<void> {
    let job = this.pulls.get(ref);
    if (!job) {
      const created = this.startPull(ref, () => {
        if (this.pulls.get(ref) === created) this.pulls.delete(ref);
      });
      this.pulls.set(ref, created);
      job = created;
    }
    job.waiters++;
    try {
      await untilAborted(job.done, signal);
    } finally {
      job.waiters--;
      if (job.waiters === 0 && signal?.aborted) job.cancel();
    }
  }

  private startPull(ref: string, forget: () => void): PullJob {
    // Aborting closes our request, which cancels the pull's context in the engine; a registry
    // that never answers can still hold the engine's side until its own timeouts (seen on 20.10).
    const abort = new AbortController();
    const done = (async () => {
      const stream = (await this.docker.pull(ref, { abortSignal: abort.signal })) as Readable;
      abort.signal.addEventListener('abort', () => stream.destroy(), { once: true });
      if (abort.signal.aborted) stream.destroy();
      await consumePull(stream);
      const info = await this.docker.getImage(ref).inspect();
      // Only what boxgrid pulled goes in the ledger; a failed write means the image is never pruned.
      await this.ledger?.recordPull(info.Id, ref).catch(() => undefined);
    })();
    done.then(forget, forget);
    return {
      done,
      waiters: 0,
      cancel: () => {
        forget(); // a later run starts a fresh pull rather than joining a cancelled one
        abort.abort();
      },
    };
  }

  /**
   * Removes images this runtime pulled, least recently used first, until those still here fit
   * `budgetMiB`. Never an image in use (`inUse` names or ids, the images of this runtime's own
   * tasks, the image of any container; a name the engine does not know, such as the tag of an
   * image pulled by digest, keeps every image of its repository), never one boxgrid did not
   * pull: only the references it pulled are removed, so an image the owner also tagged stays
   * (and stops counting as ours).
   * Sizes are the engine's, which count a shared base layer in every image built on it: an
   * over-estimate, so pruning errs towards freeing more. Returns the references removed.
   */
  async pruneImages(budgetMiB: number, inUse: string[]): Promise<{ removed: string[] }> {
    const removed: string[] = [];
    if (!this.ledger) return { removed };
    const sizes = new Map((await this.docker.listImages()).map((i) => [i.Id, i.Size]));
    const ours: LedgerEntry[] = [];
    for (const e of await this.ledger.entries()) {
      if (sizes.has(e.id)) ours.push(e);
      else await this.ledger.forget(e.id); // gone already (the owner removed it)
    }
    let total = ours.reduce((sum, e) => sum + (sizes.get(e.id) ?? 0), 0);
    const keep = await this.imagesInUse(inUse);
    for (const e of ours.sort((a, b) => a.lastUsedAt - b.lastUsedAt)) {
      if (total <= budgetMiB * 2 ** 20) break;
      if (keep.ids.has(e.id) || e.refs.some((r) => keep.repositories.has(repositoryOf(r)))) continue;
      const { untagged, done } = await this.untag(e);
      removed.push(...untagged);
      await this.ledger.dropRefs(e.id, done);
      if (done.length === e.refs.length) total -= sizes.get(e.id) ?? 0;
    }
    return { removed };
  }

  /** Images that must stay: named by the caller, needed by this runtime's tasks, or under any container. */
  private async imagesInUse(inUse: string[]): Promise<{ ids: Set<string>; repositories: Set<string> }> {
    const ids = new Set<string>();
    const repositories = new Set<string>();
    for (const name of new Set([...inUse, ...[...this.active.values()].flat()])) {
      const info = await this.inspectImage(name).catch(() => null);
      if (info) ids.add(info.Id);
      else if (!/^sha256:/.test(name)) repositories.add(repositoryOf(name));
    }
    for (const c of await this.docker.listContainers({ all: true })) ids.add(c.ImageID);
    return { ids, repositories };
  }

  /**
   * Removes boxgrid's references to one image. A reference that now names another image (the
   * owner pulled the tag again) is left alone but no longer ours. `done`: refs no longer ours;
   * `untagged`: those actually removed. The engine refuses (409) while a container uses it.
   */
  private async untag(e: LedgerEntry): Promise<{ untagged: string[]; done: string[] }> {
    const untagged: string[] = [];
    const done: string[] = [];
    for (const ref of e.refs) {
      const info = await this.inspectImage(ref);
      if (info !== null && info.Id === e.id) {
        try {
          await this.docker.getImage(ref).remove();
          untagged.push(ref);
        } catch (err) {
          if ((err as { statusCode?: number }).statusCode !== 404) continue; // in use or engine trouble: keep it ours
        }
      }
      done.push(ref);
    }
    return { untagged, done };
  }

  // ---- running and following a container ----

  private async runContainer(spec: TaskRunSpec, image: string, signal?: AbortSignal): Promise<Ended> {
    let container: Docker.Container | undefined;
    try {
      container = await this.docker.createContainer(this.containerConfig(spec, image, { capFileSize: !(await this.isPodman()) }));
      if (signal?.aborted) return { outcome: { kind: 'aborted' }, logTail: '', usage: null };
      return await this.startAndFollow(container, spec, signal);
    } catch (e) {
      return { outcome: { kind: 'agent_error', message: (e as Error).message }, logTail: '', usage: null };
    } finally {
      if (container) await container.remove({ force: true, v: true }).catch(() => undefined);
    }
  }

  private async startAndFollow(container: Docker.Container, spec: TaskRunSpec, signal?: AbortSignal): Promise<Ended> {
    try {
      await container.start();
    } catch (e) {
      // The engine refuses to start a command the image does not have: the task's fault, not ours.
      const message = (e as Error).message;
      if (/executable file not found|no such file or directory/i.test(message)) {
        return { outcome: { kind: 'failed', exitCode: 127 }, logTail: message, usage: null };
      }
      throw e;
    }
    // Asked once started, as 'not-running', which answers at once for a container that has
    // already exited. A 'next-exit' wait asked before the start misses the exit when the engine
    // subscribes it only after a quick container has ended (seen about once in 160 starts here),
    // and then never answers: the task would hold its slot for good.
    const dropWait = new AbortController();
    const waited = container.wait({ condition: 'not-running', abortSignal: dropWait.signal });
    waited.catch(() => undefined); // awaited in follow()
    try {
      return await this.follow(container, waited, spec, signal, Date.now(), true);
    } finally {
      dropWait.abort(); // unanswered when a refused kill (409) ended the wait for it
    }
  }

  /**
   * Follows a started container to its end: output as it comes, usage samples, the time limit
   * counted from `startedAt`, the abort signal, the disk limit. `enforce` false for a container
   * that has already ended (reattach), whose limits and abort no longer apply.
   *
   * The disk limit (`resources.diskMiB`; 0 for none) covers /out and /checkpoint, bind mounts of
   * the host's disk that nothing else bounds: they are measured while the task runs (the
   * container is killed as soon as they hold more), and once more when it has ended on its own,
   * to catch what was written since the last measurement. /tmp is a tmpfs (memory) that is
   * itself no bigger than the limit.
   */
  private async follow(container: Docker.Container, waited: Promise<unknown>, spec: TaskRunSpec, signal: AbortSignal | undefined, startedAt: number, enforce: boolean): Promise<Ended> {
    const output = this.followOutput(container, spec.onOutput);
    const meter = this.meterUsage(container, spec.onUsage);
    const limitBytes = spec.resources.diskMiB * 2 ** 20;
    const writable = spec.checkpointDir ? [spec.outputsDir, spec.checkpointDir] : [spec.outputsDir];
    const disk = enforce && limitBytes > 0 ? watchDisk(writable, limitBytes) : null;
    try {
      const stopReason = enforce ? await this.waitForEnd(container, waited, spec, signal, startedAt, disk?.over) : null;
      disk?.stop();
      const state = (await container.inspect()).State;
      let outcome = classify(state, stopReason, spec);
      if (outcome.kind === 'failed' && outcome.exitCode === 137 && (await this.oomEventSince(container.id, startedAt))) {
        outcome = classify({ ...state, OOMKilled: true }, stopReason, spec);
      }
      const endedOnItsOwn = outcome.kind === 'succeeded' || outcome.kind === 'failed';
      if (endedOnItsOwn && limitBytes > 0 && (await diskUsage(writable)) > limitBytes) outcome = classify(state, 'disk', spec);
      return { outcome, logTail: await output.tail(), usage: meter.usage() };
    } finally {
      disk?.stop();
      output.stop();
      meter.stop();
    }
  }

  /**
   * Whether the engine logged an "oom" event for the container since `sinceMs`. Under load
   * Docker sometimes clears State.OOMKilled when it handles the exit after the OOM (seen about
   * once in 30 OOM kills here) though it did log the event; a SIGKILL we did not send is then
   * looked up here. When it logged nothing either, the task stays "failed" with exit code 137.
   * Not on Podman, which reports no OOM kills this way and whose events query may not end; and
   * never longer than OOM_LOOKUP_MS, so that no engine can hold the task here.
   */
  private async oomEventSince(id: string, sinceMs: number): Promise<boolean> {
    if (await this.isPodman()) return false;
    try {
      const stream = (await this.docker.getEvents({
        since: dockerTime(sinceMs - 1000), until: dockerTime(Date.now()), filters: { container: [id], event: ['oom'] },
        abortSignal: AbortSignal.timeout(OOM_LOOKUP_MS),
      } as unknown as Docker.GetEventsOptions)) as Readable;
      return (await text(stream)).trim().length > 0;
    } catch {
      return false;
    }
  }

  private async waitForEnd(container: Docker.Container, waited: Promise<unknown>, spec: TaskRunSpec, signal: AbortSignal | undefined, startedAt: number, overDisk?: Promise<void>): Promise<StopReason> {
    let reason: StopReason = null;
    let ended = false;
    let killed: Promise<boolean> = Promise.resolve(false);
    // A kill answered 409 says the container is no longer running, whatever the wait says.
    let notRunning: () => void = () => undefined;
    const endedBeforeKill = new Promise<void>((resolve) => (notRunning = resolve));
    const stop = (why: Exclude<StopReason, null>): void => {
      if (reason !== null || ended) return;
      reason = why;
      // 409: it was no longer running, so it ended on its own and the reason does not apply.
      killed = container.kill().then(
        () => true,
        (e: { statusCode?: number }) => {
          if (e.statusCode === 409) notRunning();
          return e.statusCode !== 409;
        },
      );
    };
    const left = Math.max(0, spec.maxRuntimeSeconds * 1000 - (Date.now() - startedAt));
    const timer = setTimeout(() => stop('timeout'), left);
    const onAbort = (): void => stop('aborted');
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();
    void overDisk?.then(() => stop('disk'));
    try {
      await Promise.race([waited, endedBeforeKill]);
    } finally {
      ended = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
    return (await killed) ? reason : null;
  }

  /**
   * Streams the container's stdout and stderr (the engine's log, from its first byte) to
   * `onOutput` and into a bounded tail. `tail()`, called once the container has ended, waits for
   * the stream to drain (at most LOG_DRAIN_MS), then reconciles it with the engine's log: the live
   * stream can end short without an error (Docker 20.10's json-file follow sometimes closes a
   * follow cleanly before the last lines of a container that just exited) or fail, so the whole
   * log is read once more (follow: false), the bytes already delivered are skipped (counted) and
   * the rest goes to `onOutput` and the tail. onOutput thus sees every byte, in order, with no
   * byte twice; the catch-up arrives at the end rather than live. The cost is one more read of
   * the log per task. If that read fails too, the tail is what the stream gave, or, when the
   * stream failed, the engine's last lines.
   */
  private followOutput(container: Docker.Container, onOutput?: (chunk: Buffer) => void): { tail(): Promise<string>; stop(): void } {
    const buffer = new TailBuffer(LOG_TAIL_BYTES);
    const decoder = new FrameDecoder();
    let stream: Readable | undefined;
    let stopped = false;
    let closed = false; // no more live delivery: the catch-up has begun, or we stopped
    let delivered = 0;
    const deliver = (chunk: Buffer): void => {
      delivered += chunk.length;
      buffer.push(chunk);
      try {
        onOutput?.(chunk);
      } catch {
        // A listener's failure is not the task's.
      }
    };
    const drained = (async (): Promise<boolean> => {
      try {
        const s = (await this.openLogStream(container)) as Readable;
        stream = s;
        if (stopped) s.destroy();
        await new Promise<void>((resolve, reject) => {
          s.on('data', (chunk: Buffer) => {
            if (!closed) decoder.push(chunk).forEach(deliver);
          });
          s.on('end', resolve);
          s.on('close', resolve);
          s.on('error', reject);
        });
        return true;
      } catch {
        return false;
      }
    })();
    const catchUp = async (): Promise<boolean> => {
      // The engine answers with the whole log in memory: past this much, keep what the stream gave.
      if (delivered > CATCH_UP_MAX_BYTES) return false;
      try {
        const full = demultiplex((await container.logs({ stdout: true, stderr: true, follow: false })) as Buffer);
        if (full.length > delivered) deliver(full.subarray(delivered));
        return true;
      } catch {
        return false;
      }
    };
    return {
      tail: async () => {
        const ok = await within(drained, LOG_DRAIN_MS, false);
        closed = true;
        stream?.destroy();
        // A frame the stream left unfinished is in the engine's log whole: the catch-up delivers it.
        if (await catchUp()) return buffer.text();
        const rest = decoder.rest();
        if (ok && rest.length > 0) deliver(rest);
        return ok ? buffer.text() : readTail(container);
      },
      stop: () => {
        stopped = true;
        closed = true;
        stream?.destroy();
      },
    };
  }

  /** The container's log as a live stream; a seam for tests. */
  protected openLogStream(container: Docker.Container): Promise<NodeJS.ReadableStream> {
    return container.logs({ follow: true, stdout: true, stderr: true });
  }

  /** Samples the container's stats while it runs; see UsageMeter for what this misses. */
  private meterUsage(container: Docker.Container, onUsage?: (u: TaskUsage) => void): { usage(): TaskUsage | null; stop(): void } {
    const meter = new UsageMeter();
    const lines = new JsonLines();
    let stream: Readable | undefined;
    let stopped = false;
    container
      .stats({ stream: true })
      .then((s) => {
        stream = s as Readable;
        if (stopped) stream.destroy();
        stream.on('data', (chunk: Buffer) => {
          lines.push(chunk).forEach((x) => meter.add(x as StatsSample));
          const now = meter.usage();
          if (now && onUsage) {
            try {
              onUsage(now);
            } catch {
              // the agent's bookkeeping must not break the measurement
            }
          }
        });
        stream.on('error', () => undefined); // a broken stream costs the figures, not the task
      })
      .catch(() => undefined);
    return {
      usage: () => meter.usage(),
      stop: () => {
        stopped = true;
        stream?.destroy();
      },
    };
  }
}

/** How a followed container ended. A 137 after at least the limit is a timeout whose kill an earlier agent did not live to report. */
export function classify(state: { ExitCode: number; OOMKilled: boolean; StartedAt: string; FinishedAt: string }, stop: StopReason, spec: TaskRunSpec): TaskOutcome {
  if (stop === 'timeout') return { kind: 'timeout', limitSeconds: spec.maxRuntimeSeconds };
  if (stop === 'aborted') return { kind: 'aborted' };
  if (stop === 'disk') return { kind: 'output_error', message: overDiskMessage(spec) };
  if (state.OOMKilled) return { kind: 'out_of_memory', limitMiB: spec.resources.memoryMiB };
  const ranMs = Date.parse(state.FinishedAt) - Date.parse(state.StartedAt);
  if (state.ExitCode === 137 && ranMs >= spec.maxRuntimeSeconds * 1000) return { kind: 'timeout', limitSeconds: spec.maxRuntimeSeconds };
  return state.ExitCode === 0 ? { kind: 'succeeded' } : { kind: 'failed', exitCode: state.ExitCode };
}

/** A time for the engine's events API: seconds and nanoseconds (a bare fraction would be read as nanoseconds). */
function dockerTime(ms: number): string {
  return `${Math.floor(ms / 1000)}.${String(ms % 1000).padStart(3, '0')}000000`;
}

/** What a task that wrote past its disk limit is told (the outcome's message). */
export function overDiskMessage(spec: Pick<TaskRunSpec, 'resources' | 'checkpointDir'>): string {
  return `wrote more than its disk limit of ${spec.resources.diskMiB} MiB to ${spec.checkpointDir ? '/out and /checkpoint' : '/out'}`;
}

/** Whether an image has the pinned digest: its id (a local build) or the manifest digest it was pulled by. */
function hasDigest(info: Docker.ImageInspectInfo, digest: string | null): boolean {
  if (digest === null) return true;
  const digests = [info.Id, ...(info.RepoDigests ?? []).map((d) => d.slice(d.indexOf('@') + 1))];
  return digests.includes(digest);
}

/** Reads a pull's progress stream to its end; the engine reports a failed pull inside the stream. */
function consumePull(stream: Readable): Promise<void> {
  return new Promise((resolve, reject) => {
    const lines = new JsonLines();
    let error: string | null = null;
    let ended = false;
    stream.on('data', (chunk: Buffer) => {
      for (const m of lines.push(chunk) as Array<{ error?: string; errorDetail?: { message?: string } }>) {
        error = m.errorDetail?.message ?? m.error ?? error;
      }
    });
    stream.on('end', () => {
      ended = true;
      if (error !== null) reject(new Error(error));
      else resolve();
    });
    stream.on('close', () => {
      if (!ended) reject(new Error('the pull stopped before it finished'));
    });
    stream.on('error', reject);
  });
}

/** The engine's own words, without dockerode's "(HTTP code 404) unexpected - " prefix. */
function engineMessage(e: unknown): string {
  return String((e as Error).message ?? e)
    .replace(/^\(HTTP code \d+\) [^-]*- /, '')
    .trim();
}

function ignoreGone(e: { statusCode?: number }): void {
  // 404: already gone; 409: its removal is already under way.
  if (e.statusCode !== 404 && e.statusCode !== 409) throw e;
}

/** The log tail read after the fact (when following the stream failed). */
async function readTail(container: Docker.Container): Promise<string> {
  try {
    const raw = await container.logs({ stdout: true, stderr: true, follow: false, tail: TAIL_LINES });
    const tail = new TailBuffer(LOG_TAIL_BYTES);
    tail.push(demultiplex(raw));
    return tail.text();
  } catch {
    return '';
  }
}

/** Rejects as soon as the signal aborts; otherwise settles as `p` does. */
function untilAborted<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new Error('aborted'));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** `p`'s value, or `fallback` once `ms` have passed. */
async function within<T>(p: Promise<T>, ms: number, fallback: T): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<T>((resolve) => {
    timer = setTimeout(() => resolve(fallback), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Without a TTY the engine frames stdout and stderr: an 8-byte header (stream, 0, 0, 0, length
 * as big-endian uint32) before each chunk. Returns the payloads in order.
 */
export function demultiplex(raw: Buffer): Buffer {
  const decoder = new FrameDecoder();
  return Buffer.concat([...decoder.push(raw), decoder.rest()]);
}

export { pullRef, repositoryOf };
