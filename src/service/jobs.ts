import { canonicalHash } from './canonical.js';
import { SHA256_RE } from '../blobs/blob-store.js';
import { BoxgridError, invalid, notFound } from '../domain/errors.js';
import type { App, Batch, Job, JobSpec, StateCounts, Task } from '../domain/model.js';
import type { Resources } from '../domain/resources.js';
import { checkLabelKeys } from '../domain/labels.js';
import { ENV_NAME_RE, INPUT_NAME_RE } from '../domain/names.js';
import { isActiveTask, jobMachine, type JobState, type TaskState } from '../domain/states.js';
import { expandSweep, substitute, sweepSize, type SweepPoint, type SweepSpec } from '../domain/sweep.js';
import type { JobFilter } from '../store/store.js';
import type { ProjectAccess } from './access.js';
import type { ServiceContext } from './context.js';

/** Per-job fields a client may send (alone, as a batch template, or as one item of a batch). */
export interface JobTemplate {
  args?: string[];
  env?: Record<string, string>;
  inputs?: Record<string, string>;
  resources?: Partial<Resources>;
  priority?: number;
  /** ISO 8601 time after which the job fails instead of running. */
  deadline?: string;
  labels?: Record<string, string>;
  /** Labels a host must carry to run the job (`gpu-model: a100`, `site: lab-2`). */
  selector?: Record<string, string>;
  /** Attempts the job may take (1–101), instead of its app's. */
  maxAttempts?: number;
}

export interface AppRef {
  app: string;
  appVersion?: number;
}

export type SubmitJobInput = AppRef & JobTemplate;

/** Exactly one of `jobs`, `count` or `sweep` says how many jobs the batch has. */
export interface SubmitBatchInput extends AppRef {
  labels?: Record<string, string>;
  template?: JobTemplate;
  jobs?: JobTemplate[];
  count?: number;
  sweep?: SweepSpec;
}

export interface SubmitResult {
  batch: Batch | null;
  jobIds: number[];
  replayed: boolean;
}

// Date.parse also takes "December 17, 2995" and RFC 1123 dates; the API promises ISO 8601.
const ISO_8601 = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/;
/** Epoch ms of an ISO 8601 time, or NaN; unlike Date.parse, "2999-02-30" is not March 2nd. */
function isoTime(text: string): number {
  const m = ISO_8601.exec(text);
  if (!m) return NaN;
  const [y, mo, d] = text.slice(0, 10).split('-').map(Number) as [number, number, number];
  const daysInMonth = new Date(Date.UTC(y, mo, 0)).getUTCDate();
  if (mo < 1 || mo > 12 || d < 1 || d > daysInMonth) return NaN;
  return Date.parse(text);
}

/** What substituting one sweep value may add to a job, for the size check before expansion. */
const SWEEP_VALUE_ALLOWANCE = 64;

export interface Idempotency {
  key: string;
  /**
   * A key of boxgrid's own (the workflow loop's), kept apart from every key a client sends:
   * those are scoped to their user, these to the system, so no header can claim one.
   */
  system?: boolean;
  /** The request body as received, hashed to tell a retry from a different request. */
  body: unknown;
}

export class JobService {
  constructor(private readonly ctx: ServiceContext) {}

  async submitJob(access: ProjectAccess, input: SubmitJobInput, idem: Idempotency | null): Promise<SubmitResult> {
    const key = idemFor(access, idem);
    const prior = await this.priorOutcome(access, key);
    if (prior) return prior;
    const app = await this.resolveApp(access, input);
    const spec = this.toSpec(input, {}, '', this.ctx.now());
    this.checkWeight(spec, 'body');
    await this.checkInputs(access, [spec]);
    const result = await this.ctx.store.insertJobs({
      projectId: access.project.id, app, batch: null, jobs: [spec], idempotency: key, now: this.ctx.now(),
    });
    if (!result.replayed) {
      this.ctx.events.publish(access.project.id, { type: 'job', jobId: result.jobIds[0]!, batchId: null, state: 'queued', reason: null });
    }
    return result;
  }

  async submitBatch(access: ProjectAccess, input: SubmitBatchInput, idem: Idempotency | null): Promise<SubmitResult> {
    const key = idemFor(access, idem);
    const prior = await this.priorOutcome(access, key);
    if (prior) return prior;
    const forms = [input.jobs !== undefined, input.count !== undefined, input.sweep !== undefined].filter(Boolean).length;
    if (forms !== 1) throw invalid('jobs', 'give exactly one of "jobs", "count" or "sweep"');
    const app = await this.resolveApp(access, input);
    const now = this.ctx.now();
    const limit = this.ctx.limits.maxBatchJobs;
    const template = input.template ?? {};
    const batchLabels = input.labels ?? {};
    checkLabels(batchLabels, '', 'labels');
    const base = this.toSpec(template, batchLabels, 'template', now);
    const baseWeight = this.checkWeight(base, 'template');
    let specs: JobSpec[];
    if (input.jobs !== undefined) {
      const items = input.jobs;
      if (items.length === 0) throw invalid('jobs', 'is empty');
      if (items.length > limit) throw invalid('jobs', `has ${items.length} jobs, more than the limit of ${limit}`);
      let total = 0;
      for (let i = 0; i < items.length; i++) total += baseWeight + this.checkWeight(items[i]!, `jobs/${i}`);
      this.checkBatchWeight(total);
      // A plain loop over checkTemplate + mergeSpec: the per-item cost is most of a 100k list's service time.
      specs = new Array<JobSpec>(items.length);
      for (let i = 0; i < items.length; i++) {
        const item = items[i]!;
        specs[i] = mergeSpec(base, item, this.checkTemplate(item, i, now));
      }
    } else if (input.count !== undefined) {
      if (input.count > limit) throw invalid('count', `${input.count} is more than the limit of ${limit}`);
      this.checkBatchWeight(baseWeight * input.count);
      specs = Array.from({ length: input.count }, () => ({ ...base }));
    } else {
      // Checked before expanding: a 1 MB template swept 100,000 times is 100 GB.
      this.checkBatchWeight((baseWeight + SWEEP_VALUE_ALLOWANCE) * sweepSize(input.sweep!, limit));
      specs = expandSweep(input.sweep!, limit).map((point) => applyPoint(base, point));
    }
    await this.checkInputs(access, specs);
    const result = await this.ctx.store.insertJobs({
      projectId: access.project.id, app, batch: { labels: batchLabels }, jobs: specs, idempotency: key, now,
    });
    if (!result.replayed && result.batch) {
      this.ctx.events.publish(access.project.id, { type: 'batch', batchId: result.batch.id, change: 'submitted' });
    }
    return result;
  }

  async get(access: ProjectAccess, id: number): Promise<{ job: Job; tasks: Task[] }> {
    const job = await this.ctx.store.getJob(access.project.id, id);
    if (!job) throw notFound(`job ${id}`);
    return { job, tasks: await this.ctx.store.listTasks(id) };
  }

  /**
   * A task's stored output from `after` on (what the store still holds of it: the tail). With a
   * job instead of a task, its latest task's.
   */
  async log(access: ProjectAccess, target: { taskId: number } | { jobId: number }, after = 0): Promise<TaskLogPage> {
    let taskId: number;
    if ('jobId' in target) {
      const { tasks } = await this.get(access, target.jobId);
      const latest = tasks.at(-1);
      if (!latest) throw new BoxgridError('not_found', `job ${target.jobId} has not run yet: it has no log`);
      taskId = latest.id;
    } else {
      taskId = target.taskId;
    }
    const log = await this.ctx.store.getTaskLog(access.project.id, taskId);
    if (!log) throw notFound(`task ${taskId}`);
    const textStart = log.endOffset - log.text.length;
    const start = Math.min(Math.max(after, textStart), log.endOffset);
    return {
      taskId: log.taskId, jobId: log.jobId, state: log.state, text: log.text.slice(start - textStart), start, end: log.endOffset,
      done: !isActiveTask(log.state),
    };
  }

  async list(access: ProjectAccess, filter: JobFilter, limit: number, cursor?: string): Promise<{ jobs: Job[]; nextCursor: string | null }> {
    const beforeId = cursor === undefined ? undefined : decodeCursor(cursor);
    const jobs = await this.ctx.store.listJobs(access.project.id, filter, { limit, ...(beforeId === undefined ? {} : { beforeId }) });
    const last = jobs.at(-1);
    return { jobs, nextCursor: jobs.length === limit && last ? encodeCursor(last.id) : null };
  }

  async cancel(access: ProjectAccess, id: number): Promise<Job> {
    const job = await this.ctx.store.cancelJob(access.project.id, id, this.ctx.now());
    this.ctx.events.publishJob(job);
    return job;
  }

  /** The project's jobs by state, in batches or not (only the app's with `appName`). */
  async counts(access: ProjectAccess, appName?: string): Promise<StateCounts> {
    return this.ctx.store.countJobs(access.project.id, appName);
  }

  async cancelBatch(access: ProjectAccess, batchId: number): Promise<{ cancelled: number; counts: StateCounts }> {
    if (!(await this.ctx.store.getBatch(access.project.id, batchId))) throw notFound(`batch ${batchId}`);
    return this.cancelBatchOf(access.project.id, batchId);
  }

  /** Cancels what is open of a batch known to be the project's, and tells watchers (the workflow loop stops a workflow's batches through this). */
  async cancelBatchOf(projectId: number, batchId: number): Promise<{ cancelled: number; counts: StateCounts }> {
    const cancelled = await this.ctx.store.cancelBatch(projectId, batchId, this.ctx.now());
    const counts = await this.ctx.store.batchCounts(batchId);
    this.ctx.events.publish(projectId, { type: 'batch', batchId, change: 'cancelled', counts });
    return { cancelled, counts };
  }

  async getBatch(access: ProjectAccess, id: number): Promise<{ batch: Batch; counts: StateCounts; done: boolean }> {
    const batch = await this.ctx.store.getBatch(access.project.id, id);
    if (!batch) throw notFound(`batch ${id}`);
    const counts = await this.ctx.store.batchCounts(id);
    const open = (Object.keys(counts) as JobState[]).some((s) => !jobMachine.isTerminal(s) && counts[s] > 0);
    return { batch, counts, done: !open };
  }

  async listBatches(access: ProjectAccess, limit: number, cursor?: string): Promise<{ batches: Batch[]; nextCursor: string | null }> {
    const beforeId = cursor === undefined ? undefined : decodeCursor(cursor);
    const batches = await this.ctx.store.listBatches(access.project.id, { limit, ...(beforeId === undefined ? {} : { beforeId }) });
    const last = batches.at(-1);
    return { batches, nextCursor: batches.length === limit && last ? encodeCursor(last.id) : null };
  }

  /**
   * Bytes of text a job carries (args, env, inputs, labels), roughly what it costs to store.
   * Each job is capped, and so is a whole batch, so that `count` or `sweep` cannot multiply a
   * large template into gigabytes.
   */
  private checkWeight(t: Pick<JobTemplate, 'args' | 'env' | 'inputs' | 'labels'>, at: string): number {
    let n = 0;
    for (const a of t.args ?? []) n += a.length;
    for (const m of [t.env, t.inputs, t.labels]) for (const k in m) n += k.length + m[k]!.length;
    const max = this.ctx.limits.maxJobBytes;
    if (n > max) throw invalid(at, `carries ${n} bytes of args, env, inputs and labels, more than the limit of ${max} per job`);
    return n;
  }

  private checkBatchWeight(total: number): void {
    const max = this.ctx.limits.maxBatchBytes;
    if (total > max) throw invalid('jobs', `the batch would carry about ${total} bytes of args, env, inputs and labels, more than the limit of ${max}`);
  }

  /**
   * A retry is answered before anything is checked again: its deadline may have passed or its
   * app changed since the first attempt succeeded. (insertJobs checks the key once more, inside
   * its transaction, for retries that race the first attempt.)
   */
  private async priorOutcome(access: ProjectAccess, key: { key: string; requestHash: string } | null): Promise<SubmitResult | null> {
    if (!key) return null;
    const prior = await this.ctx.store.findIdempotent(access.project.id, key.key);
    if (!prior) return null;
    if (prior.requestHash !== key.requestHash) {
      throw new BoxgridError('conflict', 'Idempotency-Key was already used for a different request', { field: 'headers/idempotency-key' });
    }
    return prior.result;
  }

  private async resolveApp(access: ProjectAccess, ref: AppRef): Promise<App> {
    const app = await this.ctx.store.getApp(access.project.id, ref.app, ref.appVersion);
    if (!app) {
      throw ref.appVersion === undefined
        ? invalid('app', `no app named "${ref.app}" in project "${access.project.name}"`)
        : invalid('appVersion', `app "${ref.app}" has no version ${ref.appVersion}`);
    }
    return app;
  }

  /** Checks one template's fields and builds its spec; `at` prefixes field names in errors ("template"). */
  private toSpec(t: JobTemplate, extraLabels: Record<string, string>, at: string, now: number): JobSpec {
    const deadline = this.checkTemplate(t, at, now);
    return {
      args: t.args ?? [],
      env: t.env ?? {},
      inputs: t.inputs ?? {},
      resources: t.resources ?? {},
      priority: t.priority ?? 0,
      deadline,
      labels: isEmpty(extraLabels) ? t.labels ?? {} : { ...extraLabels, ...t.labels },
      selector: t.selector ?? {},
      params: {},
      ...(t.maxAttempts === undefined ? {} : { maxAttempts: t.maxAttempts }),
    };
  }

  /**
   * Checks one template's fields and returns its deadline (epoch ms) or null. `at` says where the
   * template is, for field names in errors: '' (top level), 'template', or the index of an item
   * of "jobs" (field "jobs/17/..."). Allocates nothing unless a check fails.
   */
  private checkTemplate(t: JobTemplate, at: string | number, now: number): number | null {
    for (const k in t.env) {
      if (!ENV_NAME_RE.test(k)) throw invalid(fieldAt(at, `env/${k}`), 'is not a valid environment variable name');
      if (k.startsWith('BOXGRID_')) throw invalid(fieldAt(at, `env/${k}`), 'names starting with BOXGRID_ are reserved');
    }
    for (const k in t.inputs) {
      if (!INPUT_NAME_RE.test(k)) throw invalid(fieldAt(at, `inputs/${k}`), 'input names are plain file names (letters, digits, ".", "_", "-")');
      if (!SHA256_RE.test(t.inputs[k]!)) throw invalid(fieldAt(at, `inputs/${k}`), 'must be the sha256 of an uploaded blob (64 hex digits)');
    }
    if (t.labels) checkLabels(t.labels, at, 'labels');
    if (t.selector) checkLabels(t.selector, at, 'selector');
    if (t.maxAttempts !== undefined && !(Number.isInteger(t.maxAttempts) && t.maxAttempts >= 1 && t.maxAttempts <= 101)) {
      throw invalid(fieldAt(at, 'maxAttempts'), 'must be an integer from 1 to 101');
    }
    if (t.deadline === undefined) return null;
    const deadline = isoTime(t.deadline);
    if (Number.isNaN(deadline)) throw invalid(fieldAt(at, 'deadline'), `"${t.deadline}" is not an ISO 8601 time`);
    if (deadline <= now) throw invalid(fieldAt(at, 'deadline'), 'is in the past');
    return deadline;
  }

  private async checkInputs(access: ProjectAccess, specs: JobSpec[]): Promise<void> {
    const wanted = new Set<string>();
    for (const s of specs) for (const k in s.inputs) wanted.add(s.inputs[k]!);
    if (wanted.size === 0) return;
    const missing = await this.ctx.store.missingBlobs(access.project.id, [...wanted]);
    if (missing.length > 0) throw invalid('inputs', `blob ${missing[0]} is not uploaded to project "${access.project.name}"`);
  }
}

/**
 * One item of a "jobs" list laid over the batch's base spec (template and batch labels); the
 * item wins field by field, maps merge key by key. A map that only one side has is shared, not
 * copied (specs are never mutated), which keeps a 100k-job list from allocating 400k objects.
 */
function mergeSpec(base: JobSpec, raw: JobTemplate, deadline: number | null): JobSpec {
  return {
    args: raw.args !== undefined ? raw.args : base.args,
    env: mergeMap(base.env, raw.env),
    inputs: mergeMap(base.inputs, raw.inputs),
    resources: mergeMap(base.resources, raw.resources),
    priority: raw.priority !== undefined ? raw.priority : base.priority,
    deadline: raw.deadline !== undefined ? deadline : base.deadline,
    labels: mergeMap(base.labels, raw.labels),
    selector: mergeMap(base.selector, raw.selector),
    params: {},
    ...(raw.maxAttempts !== undefined ? { maxAttempts: raw.maxAttempts } : base.maxAttempts !== undefined ? { maxAttempts: base.maxAttempts } : {}),
  };
}

function mergeMap<T extends object>(base: T, item: T | undefined): T {
  if (item === undefined || isEmpty(item)) return base;
  if (isEmpty(base)) return item;
  return { ...base, ...item };
}

function applyPoint(base: JobSpec, point: SweepPoint): JobSpec {
  const env: Record<string, string> = {};
  for (const k in base.env) env[k] = substitute(base.env[k]!, point);
  return { ...base, args: base.args.map((a) => substitute(a, point)), env, params: point };
}

function checkLabels(labels: Record<string, string>, at: string | number, field: string): void {
  checkLabelKeys(labels, fieldAt(at, field));
}

/** A field name in an error: `at` is '' (top level), a prefix such as 'template', or a "jobs" index. */
function fieldAt(at: string | number, field: string): string {
  if (typeof at === 'number') return `jobs/${at}/${field}`;
  return at === '' ? field : `${at}/${field}`;
}

function isEmpty(o: object): boolean {
  for (const _ in o) return false;
  return true;
}

export interface TaskLogPage {
  taskId: number;
  jobId: number;
  state: TaskState;
  text: string;
  start: number;
  end: number;
  done: boolean;
}

/**
 * Keys are scoped to the user as well as the project (two people's "retry-1" are different
 * requests), and the body is hashed with sorted keys, so a retry that re-serialised the same
 * body in another order is still the same request.
 */
export function idemFor(access: ProjectAccess, idem: Idempotency | null): { key: string; requestHash: string } | null {
  if (!idem) return null;
  return { key: idem.system ? `system:${idem.key}` : `${access.user.id}:${idem.key}`, requestHash: canonicalHash(idem.body) };
}

export function encodeCursor(id: number): string {
  return Buffer.from(`j:${id}`).toString('base64url');
}

export function decodeCursor(cursor: string): number {
  const m = /^j:(\d{1,15})$/.exec(Buffer.from(cursor, 'base64url').toString());
  if (!m) throw invalid('cursor', 'is not a cursor this server gave out');
  return Number(m[1]);
}
