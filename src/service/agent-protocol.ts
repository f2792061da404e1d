import type { Readable } from 'node:stream';
import { SHA256_RE } from '../blobs/blob-store.js';
import { BoxgridError, invalid, notFound } from '../domain/errors.js';
import type { App, BlobRecord, Host, Job, OutputFile, RuntimeKind, Task } from '../domain/model.js';
import { OUTCOME_KINDS, type TaskOutcome, type TaskUsage } from '../domain/outcomes.js';
import { isOutputName } from '../domain/file-names.js';
import { checkLabelKeys } from '../domain/labels.js';
import { withOverrides, type Resources } from '../domain/resources.js';
import { isActiveTask } from '../domain/states.js';
import { planClaim } from '../scheduling/plan.js';
import { chooseDuplicates } from '../scheduling/speculation.js';
import type { Offer } from '../scheduling/placement.js';
import type { ClaimedTask, LogChunk } from '../store/store.js';
import type { OpenBlob } from './blobs.js';
import { BlobService } from './blobs.js';
import { canonicalHash } from './canonical.js';
import type { ServiceContext } from './context.js';
import { transferPath } from './transfer-signature.js';

/** What an agent needs to run one task; it never has to ask about the job or the app. */
export interface TaskAssignment {
  taskId: number;
  jobId: number;
  project: string;
  attempt: number;
  runtime: RuntimeKind;
  leaseExpiresAt: number;
  image: string;
  imageDigest: string | null;
  /** The app's command (or native command) followed by the job's args. */
  command: string[];
  env: Record<string, string>;
  resources: Resources;
  maxRuntimeSeconds: number;
  checkpointing: boolean;
  /** A checkpoint to resume from (a tar of /checkpoint), when an earlier task left one. */
  checkpoint: string | null;
  /** A pre-signed GET of the checkpoint, when the blob store gives them (see `inputs`). */
  checkpointUrl?: string;
  /**
   * `url`: a pre-signed GET of the input from the blob store itself, when it gives them; it
   * expires with the lease (at least PRESIGN_MIN_SECONDS). The route under /agent/v1 serves
   * the same bytes.
   */
  inputs: Array<{ name: string; sha256: string; size: number; url?: string }>;
}

/** Where one output goes: nowhere (the project holds it), a pre-signed URL, or (neither) the upload route. */
export interface UploadTarget {
  sha256: string;
  present: boolean;
  url?: string;
  headers?: Record<string, string>;
  expiresAt?: number;
}

export interface WorkRequest {
  /** Chosen by the agent per request: a retry carries the same id and gets the same tasks. */
  requestId: string;
  free: Resources;
  maxTasks: number;
  runtimes: RuntimeKind[];
  /** The host's labels (`agent --label`), matched against jobs' selectors; omitted: unchanged. */
  labels?: Record<string, string>;
  /** Images the host holds (references and digests): tasks of those apps come to it first. */
  images?: string[];
  /** The longest run the host has time left for; apps whose runs may take longer are not handed out. */
  maxRuntimeSeconds?: number;
}

export interface HeartbeatInput {
  tasks: Array<{ taskId: number; progress?: number; usage?: TaskUsage; log?: LogChunk }>;
}

export interface ReportInput {
  outcome: TaskOutcome;
  durationMs: number;
  usage?: TaskUsage;
  outputs?: Record<string, OutputFile>;
  log?: LogChunk;
}

/** Most queues one work request looks at (each read at its head only). */
const MAX_QUEUES = 500;
/**
 * Most running tasks one idle host weighs for a speculative duplicate (the oldest first). The
 * tail is often young tasks on slow hosts, so all of a grid's running tasks should fit: this
 * bounds only the cost of one idle claim at the end of a batch on a very large grid.
 */
const DUPLICATE_SCAN = 20_000;

const REQUEST_ID_RE = /^[A-Za-z0-9_-]{8,64}$/;
const MAX_OUTPUTS = 1000;
/**
 * The shortest life of a pre-signed URL. URLs live as long as the task's lease, but a short
 * lease must still leave time to fetch inputs one after another (a URL is checked when a
 * transfer starts, not while it runs).
 */
export const PRESIGN_MIN_SECONDS = 900;

/**
 * How long transfer URLs live: a day unless the host asks otherwise, at most a week. Not tied to
 * the lease: a URL opens nothing once its host no longer holds the task live, so its expiry only
 * bounds how long a leaked URL is worth anything while the task runs.
 */
export const TRANSFER_URL_SECONDS = { default: 86_400, min: 60, max: 7 * 86_400 };

/** The blob store's upload slot of a task: pre-signed PUTs land there, reports take them from there. */
const uploadSlot = (taskId: number): string => `task-${taskId}`;

/**
 * The server's side of /agent/v1. Hosts pull: they say what they have free, the server picks
 * jobs that fit and leases them out as tasks; heartbeats keep the leases; reports settle the
 * jobs. Every call is safe to repeat: claims are keyed by the agent's request id, heartbeats
 * only extend, reports are recognised by their content, and uploads are content-addressed.
 */
export class AgentProtocolService {
  private readonly blobService: BlobService;

  constructor(private readonly ctx: ServiceContext) {
    this.blobService = new BlobService(ctx);
  }

  async requestWork(host: Host, req: WorkRequest): Promise<{ tasks: TaskAssignment[]; retryAfterMs: number; heartbeatSeconds: number; replayed: boolean }> {
    if (!REQUEST_ID_RE.test(req.requestId)) throw invalid('requestId', 'must be 8–64 letters, digits, "-" or "_" (a UUID will do)');
    if (new Set(req.runtimes).size !== req.runtimes.length) throw invalid('runtimes', 'lists a runtime twice');
    // Never more than the host enrolled with: an untrusted host cannot hoard the queue by
    // claiming a machine it does not have.
    const free = {
      cores: Math.min(req.free.cores, host.resources.cores), memoryMiB: Math.min(req.free.memoryMiB, host.resources.memoryMiB),
      diskMiB: Math.min(req.free.diskMiB, host.resources.diskMiB), gpus: Math.min(req.free.gpus, host.resources.gpus),
    };
    if (req.labels !== undefined) checkLabelKeys(req.labels, 'labels');
    let labels = host.labels;
    if (req.labels !== undefined && canonicalHash(req.labels) !== canonicalHash(host.labels)) {
      await this.ctx.store.setHostLabels(host.id, req.labels);
      labels = req.labels;
    }
    const offer: Omit<Offer, 'cooledApps' | 'pace'> = {
      hostId: host.id, capacity: host.resources, free, maxTasks: req.maxTasks, platform: host.platform, runtimes: req.runtimes,
      labels, images: new Set(req.images ?? []),
      ...(req.maxRuntimeSeconds === undefined ? {} : { maxRuntimeSeconds: req.maxRuntimeSeconds }),
    };
    const o = this.ctx.scheduling;
    const now = this.ctx.now();
    const result = await this.ctx.store.claimTasks(
      {
        hostId: host.id, requestId: req.requestId, leaseMs: this.ctx.timing.leaseSeconds * 1000,
        maxQueues: MAX_QUEUES, headsPerQueue: Math.min(req.maxTasks, 64) + 2, replication: o.replication, drawKey: this.ctx.transferKey,
        plan: (g) => planClaim({ ...g, offer: { ...offer, cooledApps: g.cooledApps, pace: g.pace }, now }, o),
        duplicates: o.policy === 'fair' && o.speculation.enabled
          ? { scan: DUPLICATE_SCAN, choose: (running, active, h) => chooseDuplicates({ ...offer, cooledApps: h.cooledApps, pace: h.pace }, running, active, o, now) }
          : null,
      },
      now,
    );
    if (!result.replayed) {
      this.ctx.meter?.dispatched(result.tasks.length);
      for (const c of result.tasks) {
        if (c.task.replica > 0) continue; // a speculative copy: its job was running already
        this.ctx.events.publish(c.job.projectId, { type: 'job', jobId: c.job.id, batchId: c.job.batchId, state: 'running', reason: null });
      }
    }
    const tasks = await Promise.all(result.tasks.map((c) => this.assignment(c)));
    return { tasks, retryAfterMs: this.retryAfterMs(tasks.length), heartbeatSeconds: this.ctx.timing.heartbeatSeconds, replayed: result.replayed };
  }

  /**
   * When to ask again. With work handed out, soon: the host may have room for more. Without,
   * the idle poll spread ±50% at random, so thousands of idle hosts do not call in step.
   */
  private retryAfterMs(handedOut: number): number {
    if (handedOut > 0) return 1000;
    const base = this.ctx.timing.idlePollSeconds * 1000;
    return Math.round(base * (0.5 + this.ctx.random()));
  }

  private async assignment(c: ClaimedTask): Promise<TaskAssignment> {
    const { task, job, app } = c;
    // Inputs were checked to be the project's at submission, the checkpoint when it was recorded.
    const presign = this.ctx.blobs.presign;
    const expires = this.urlSeconds(task.leaseExpiresAt);
    const url = async (sha256: string): Promise<{ url?: string }> => (presign ? { url: await presign.get(sha256, expires) } : {});
    const inputs = await Promise.all(
      Object.entries(job.inputs).map(async ([name, sha256]) => {
        const ref = await this.ctx.store.getBlobRef(job.projectId, sha256);
        return { name, sha256, size: ref?.size ?? 0, ...(ref ? await url(sha256) : {}) };
      }),
    );
    const checkpointUrl = job.checkpoint !== null && app.checkpointing ? (await url(job.checkpoint)).url : undefined;
    return {
      taskId: task.id, jobId: job.id, project: c.projectName, attempt: task.attempt, runtime: task.runtime,
      leaseExpiresAt: task.leaseExpiresAt, image: app.image, imageDigest: app.imageDigest,
      command: [...commandFor(app, task.runtime), ...job.args], env: job.env, resources: withOverrides(app.resources, job.resources),
      maxRuntimeSeconds: app.maxRuntimeSeconds, checkpointing: app.checkpointing, checkpoint: job.checkpoint, inputs,
      ...(checkpointUrl === undefined ? {} : { checkpointUrl }),
    };
  }

  /** Seconds a pre-signed URL for a task lives: its lease, or PRESIGN_MIN_SECONDS if longer. */
  private urlSeconds(leaseExpiresAt: number): number {
    return Math.max(PRESIGN_MIN_SECONDS, Math.ceil((leaseExpiresAt - this.ctx.now()) / 1000));
  }

  async heartbeat(host: Host, input: HeartbeatInput): Promise<{ leases: Array<{ taskId: number; leaseExpiresAt: number }>; abort: Array<{ taskId: number; reason: string }>; heartbeatSeconds: number }> {
    const seen = new Set<number>();
    for (const [i, t] of input.tasks.entries()) {
      if (seen.has(t.taskId)) throw invalid(`tasks/${i}/taskId`, `task ${t.taskId} is listed twice`);
      seen.add(t.taskId);
    }
    const r = await this.ctx.store.heartbeat(
      {
        hostId: host.id,
        leaseMs: this.ctx.timing.leaseSeconds * 1000,
        tasks: input.tasks.map((t) => ({ taskId: t.taskId, progress: t.progress ?? null, usage: t.usage ?? null, log: t.log ?? null })),
      },
      this.ctx.now(),
    );
    return { ...r, heartbeatSeconds: this.ctx.timing.heartbeatSeconds };
  }

  /**
   * Settles a task with its agent's report. The outputs must have been uploaded first (each
   * is checked against the project's blobs), so a settled job never points at missing bytes.
   */
  async report(host: Host, taskId: number, input: ReportInput): Promise<{ task: Task; job: Job; replayed: boolean }> {
    checkOutcome(input.outcome);
    const outputs = input.outputs ?? {};
    const names = Object.keys(outputs);
    if (names.length > MAX_OUTPUTS) throw invalid('outputs', `has ${names.length} files; at most ${MAX_OUTPUTS} are accepted`);
    for (const name of names) {
      if (!isOutputName(name)) throw invalid(`outputs/${name}`, 'is not a plain file name (letters, digits, ".", "_", "-"; no "/" and not "." or "..")');
    }
    if (names.length > 0) await this.checkOutputs(host, taskId, outputs); // without outputs, reportTask finds (or not) the task itself
    const reportHash = canonicalHash({ outcome: input.outcome, outputs, durationMs: input.durationMs });
    const r = await this.ctx.store.reportTask(
      {
        hostId: host.id, taskId, outcome: input.outcome, durationMs: input.durationMs, usage: input.usage ?? null, outputs, log: input.log ?? null,
        reportHash, rules: this.ctx.scheduling,
      },
      this.ctx.now(),
    );
    if (!r.replayed) this.ctx.meter?.settled(input.outcome.kind, input.durationMs, input.usage ?? null);
    if (!r.replayed && r.job.state !== r.jobStateBefore) {
      this.ctx.events.publishJob(r.job);
    }
    return { task: r.task, job: r.job, replayed: r.replayed };
  }

  /** A report's outputs must be uploaded blobs of the task's project, of the sizes stored. */
  private async checkOutputs(host: Host, taskId: number, outputs: Record<string, OutputFile>): Promise<void> {
    const found = await this.ctx.store.getHostTask(host.id, taskId);
    if (!found) throw notFound(`task ${taskId}`);
    const names = Object.keys(outputs);
    const nameOf = (sha256: string): string => names.find((n) => outputs[n]!.sha256 === sha256)!;
    for (const sha256 of await this.ctx.store.missingBlobs(found.job.projectId, Object.values(outputs).map((o) => o.sha256))) {
      // Not the project's yet: it may wait in the task's upload slot (a pre-signed PUT).
      const committed = await this.blobService.commitUpload(found.job.projectId, sha256, uploadSlot(taskId)).catch((e: unknown) => {
        if (e instanceof BoxgridError && e.field !== undefined) throw new BoxgridError(e.code, e.message, { field: `outputs/${nameOf(sha256)}` });
        throw e;
      });
      if (!committed && found.task.state === 'lost') {
        // A lost task cannot upload any more (its lease ended), so this output never comes: say so
        // as the store would (409 lease_expired), which the agent takes as final and drops the
        // result, rather than a 400 about an upload it would retry for ever.
        throw new BoxgridError('lease_expired', `task ${taskId}'s lease expired before its report; the task was counted lost and its outputs were never uploaded (its job is ${found.job.state})`);
      }
      if (!committed) {
        throw invalid(`outputs/${nameOf(sha256)}`, `blob ${sha256} was not uploaded; PUT it to /agent/v1/tasks/${taskId}/blobs/${sha256} (or the URL …/uploads gave) first`);
      }
    }
    // The server knows each blob's size: a report may not record another one for users to see.
    for (const name of names) {
      const { sha256, size } = outputs[name]!;
      const stored = (await this.ctx.store.getBlobRef(found.job.projectId, sha256))?.size;
      if (stored !== undefined && stored !== size) throw invalid(`outputs/${name}/size`, `is ${size}, but blob ${sha256} has ${stored} bytes`);
    }
  }

  /** An input (or the checkpoint to resume from) of a task the host holds. */
  async openInput(host: Host, taskId: number, sha256: string): Promise<OpenBlob> {
    // A malformed digest is the caller's mistake (400), as on the user API, not an unknown input.
    if (!SHA256_RE.test(sha256)) throw invalid('sha256', 'must be 64 lower-case hex digits');
    const { job } = await this.liveTask(host, taskId);
    if (!Object.values(job.inputs).includes(sha256) && job.checkpoint !== sha256) {
      throw notFound(`blob ${sha256} among task ${taskId}'s inputs`);
    }
    return this.blobService.openInProject(job.projectId, sha256);
  }

  /**
   * Where each of a live task's outputs is to be uploaded: nowhere when the project holds it
   * already (as the upload route would not read it either), else a pre-signed PUT into the
   * task's upload slot when the blob store gives them — the report then verifies what landed
   * there and makes it the project's — else (no URL) the upload route.
   */
  async uploads(host: Host, taskId: number, files: Array<{ sha256: string; size: number }>): Promise<UploadTarget[]> {
    if (files.length > MAX_OUTPUTS) throw invalid('files', `has ${files.length} entries; at most ${MAX_OUTPUTS} are accepted`);
    const max = this.ctx.limits.maxBlobBytes;
    for (const [i, f] of files.entries()) {
      if (!SHA256_RE.test(f.sha256)) throw invalid(`files/${i}/sha256`, 'must be 64 lower-case hex digits');
      if (f.size > max) throw new BoxgridError('payload_too_large', `files/${i}/size: ${f.size} bytes is larger than the blob limit of ${max} bytes`, { field: `files/${i}/size` });
    }
    const { task, job } = await this.liveTask(host, taskId);
    const missing = new Set(await this.ctx.store.missingBlobs(job.projectId, files.map((f) => f.sha256)));
    const presign = this.ctx.blobs.presign;
    const expires = this.urlSeconds(task.leaseExpiresAt);
    return Promise.all(
      files.map(async ({ sha256, size }): Promise<UploadTarget> => {
        if (!missing.has(sha256)) return { sha256, present: true };
        if (!presign) return { sha256, present: false };
        return { sha256, present: false, ...(await presign.put(sha256, size, uploadSlot(taskId), expires)) };
      }),
    );
  }

  /** An output or checkpoint of a live task, stored in its job's project. */
  async upload(host: Host, taskId: number, sha256: string, body: Readable, length: number | undefined): Promise<{ blob: BlobRecord; created: boolean }> {
    const { job } = await this.liveTask(host, taskId);
    return this.blobService.putInProject(job.projectId, sha256, body, length);
  }

  /**
   * Stores a tar of /checkpoint and makes it the job's latest checkpoint. The bytes must come
   * with the call (even if the project already holds them): a later task downloads its
   * checkpoint, so naming a digest must not be a way to read one of the project's blobs.
   */
  async checkpoint(host: Host, taskId: number, sha256: string, body: Readable, length: number | undefined): Promise<{ blob: BlobRecord; created: boolean }> {
    const { job } = await this.liveTask(host, taskId);
    const stored = await this.blobService.putInProject(job.projectId, sha256, body, length, { proveContent: true });
    if (!(await this.ctx.store.recordCheckpoint(host.id, taskId, sha256, this.ctx.now()))) {
      throw new BoxgridError('conflict', `task ${taskId} no longer runs a live job; the checkpoint was not recorded`);
    }
    return stored;
  }

  /**
   * Signed URL prefixes through which something without the host's credential (a Kubernetes
   * task pod) may read the inputs and store the outputs of a live task the host holds (see
   * transfer-signature.ts). Paths, relative to the server: the caller prepends the address it
   * wants them used at (the server cannot know it behind a proxy). Changes nothing: safe to repeat.
   */
  async transferUrls(host: Host, taskId: number, expiresInSeconds: number = TRANSFER_URL_SECONDS.default): Promise<{ inputs: string; outputs: string; expiresAt: number }> {
    const { min, max } = TRANSFER_URL_SECONDS;
    if (!Number.isInteger(expiresInSeconds) || expiresInSeconds < min || expiresInSeconds > max) {
      throw invalid('expiresInSeconds', `must be a whole number of seconds from ${min} to ${max} (7 days)`);
    }
    await this.liveTask(host, taskId);
    const expires = Math.ceil(this.ctx.now() / 1000) + expiresInSeconds;
    const key = this.ctx.transferKey;
    return {
      inputs: transferPath(key, host.id, taskId, 'inputs', expires),
      outputs: transferPath(key, host.id, taskId, 'outputs', expires),
      expiresAt: expires * 1000,
    };
  }

  private async liveTask(host: Host, taskId: number): Promise<{ task: Task; job: Job }> {
    const found = await this.ctx.store.getHostTask(host.id, taskId);
    if (!found) throw notFound(`task ${taskId}`);
    if (!isActiveTask(found.task.state)) {
      throw new BoxgridError('conflict', `task ${taskId} has ended (${found.task.state}); it takes no more files`);
    }
    return found;
  }
}

function commandFor(app: App, runtime: RuntimeKind): string[] {
  return runtime === 'native' ? (app.nativeCommand ?? []) : app.command;
}

function checkOutcome(o: TaskOutcome): void {
  if (!OUTCOME_KINDS.includes(o.kind)) throw invalid('outcome/kind', `must be one of ${OUTCOME_KINDS.join(', ')}`);
}
