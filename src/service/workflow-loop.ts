import { text } from 'node:stream/consumers';
import { isBoxgridError } from '../domain/errors.js';
import type { Job, Task } from '../domain/model.js';
import { jobMachine } from '../domain/states.js';
import {
  firstFailure, nextMoves, planStep, resolveOutputs, reusable, settleStep, StepError, stopAll, valueFiles, workflowOutcome, type PlannedJob,
} from '../domain/workflow-plan.js';
import type { InstanceProgress, StepProgress, StepSpec, WorkflowProgress, WorkflowRecord } from '../domain/workflow.js';
import type { ProjectAccess } from './access.js';
import type { ServiceContext } from './context.js';
import type { BoxgridEvent } from './events.js';
import { JobService } from './jobs.js';
import { Periodic } from './periodic.js';

/** Open workflows one pass looks at; more wait for the next. */
const PER_PASS = 200;
/** Jobs read per store call when a step's batch is checked. */
const JOB_PAGE = 1000;

/**
 * The workflow loop: a reconcile pass over every running workflow — jobs that ended settle
 * their step, steps whose inputs now exist get their jobs, failures stop the workflow or skip
 * what depends on them. It runs every few seconds and at once when a job ends. Safe to run
 * again after a crash, and on several servers at once: a step's jobs are submitted under an
 * idempotency key of the workflow, step and round (a repeat gets the same jobs), and the
 * progress is written by compare and set (the loser re-reads and finds the work done).
 */
export class WorkflowLoop {
  private readonly loop: Periodic;
  private unwatch: (() => void) | null = null;

  constructor(private readonly ctx: ServiceContext, intervalSeconds = 5, private readonly warn: (message: string) => void = () => undefined) {
    this.loop = new Periodic(() => this.pass(), intervalSeconds * 1000);
  }

  start(): void {
    this.loop.start();
    // A job ending or a batch changing may move a workflow: look now rather than at the next tick.
    this.unwatch = this.ctx.events.watchAll((e) => {
      if (wakes(e.event)) this.loop.kick();
    });
  }

  async stop(): Promise<void> {
    this.unwatch?.();
    this.unwatch = null;
    await this.loop.stop();
  }

  /** One pass over the running workflows. */
  async pass(): Promise<void> {
    for (const w of await this.ctx.store.openWorkflows(PER_PASS)) {
      try {
        await advance(this.ctx, w.projectId, w.id);
      } catch (e) {
        // One workflow's trouble (a store hiccup) holds up no other; the next pass tries it again.
        this.warn(`workflow ${w.id}: ${(e as Error).message}`);
      }
    }
  }
}

/** A job ended, a batch was cancelled, or a workflow was submitted or retried (WorkflowService publishes those without a step). */
function wakes(e: BoxgridEvent): boolean {
  if (e.type === 'job') return jobMachine.isTerminal(e.state);
  if (e.type === 'batch') return e.change === 'cancelled';
  return e.step === undefined && e.state === 'running';
}

/**
 * Moves one workflow as far as it can go now, and writes where it got to. Returns the record
 * as written (or as found, when nothing moved).
 */
export async function advance(ctx: ServiceContext, projectId: number, id: number): Promise<WorkflowRecord | null> {
  for (;;) {
    const w = await ctx.store.getWorkflow(projectId, id);
    if (!w || w.state !== 'running') return w;
    const access = await accessOf(ctx, w);
    const progress = structuredClone(w.progress);
    const changes: string[] = [];
    let reason: string | null = null;
    let cancelSteps: string[] = [];
    if (!access) {
      reason = 'its creator is no longer a member of the project';
      cancelSteps = stopAll(w.spec, progress, reason);
    } else {
      await observe(ctx, access, w, progress, changes);
      const failed = w.spec.onFailure === 'stop' ? firstFailure(w.spec, progress) : null;
      if (failed !== null) {
        cancelSteps = stopAll(w.spec, progress, `the workflow stopped: step "${failed}" failed`);
        changes.push(failed, ...w.spec.steps.map((s) => s.name));
      } else {
        await startReady(ctx, access, w, progress, changes);
      }
    }
    const outcome = reason ? { state: 'failed' as const, reason } : workflowOutcome(w.spec, progress);
    if (changes.length === 0 && outcome.state === 'running') return w;
    // Jobs are cancelled before the progress says so: a crash in between leaves the cancel to be done again, never undone.
    if (access) await cancelStepJobs(ctx, access, w, cancelSteps);
    const now = ctx.now();
    const updated = await ctx.store.updateWorkflow(w.id, w.version, {
      state: outcome.state, reason: outcome.reason, progress, updatedAt: now, endedAt: outcome.state === 'running' ? null : now,
    });
    if (!updated) {
      // Another server or a user wrote first: decide again from what is there now. A repeat of
      // this pass's submissions gets the same jobs (idempotency keys), but if the workflow was
      // cancelled meanwhile nobody else knows of them: cancel them here.
      const now = await ctx.store.getWorkflow(projectId, id);
      if (access && now && now.state !== 'running') await cancelBatches(ctx, access, submittedIn(w, progress));
      continue;
    }
    for (const step of new Set(changes)) {
      const p = progress.steps[step]!;
      if (p.status !== w.progress.steps[step]!.status) {
        ctx.events.publish(projectId, { type: 'workflow', workflowId: id, state: updated.state, step, status: p.status, reason: p.reason });
      }
    }
    if (updated.state !== 'running') ctx.events.publish(projectId, { type: 'workflow', workflowId: id, state: updated.state, reason: updated.reason });
    return updated;
  }
}

/** The creator's access to the project: the workflow's jobs are theirs. Null once they may no longer submit. */
async function accessOf(ctx: ServiceContext, w: WorkflowRecord): Promise<ProjectAccess | null> {
  const user = await ctx.store.getUser(w.createdBy);
  if (!user) return null;
  const project = (await ctx.store.listProjectsFor(user)).find((p) => p.id === w.projectId);
  if (!project || project.role === 'viewer') return null;
  const { role, ...rest } = project;
  return { project: rest, role, user };
}

/** Settles the instances of running steps whose jobs ended, and the steps all of whose jobs did. */
async function observe(ctx: ServiceContext, access: ProjectAccess, w: WorkflowRecord, progress: WorkflowProgress, changes: string[]): Promise<void> {
  for (const step of w.spec.steps) {
    const p = progress.steps[step.name]!;
    if (p.status !== 'running') continue;
    const open = new Map<number, InstanceProgress>();
    for (const i of p.instances) if (i.state === 'queued' || i.state === 'running') open.set(i.jobId, i);
    if (open.size === 0) continue;
    let moved = false;
    for (const job of await jobsOf(ctx, access, p, open)) {
      const inst = open.get(job.id)!;
      // Written as they happen, so a step's counts show how far its fan-out got.
      if (job.state === 'running' && inst.state === 'queued') moved = Boolean((inst.state = 'running'));
      if (!jobMachine.isTerminal(job.state)) continue;
      moved = true;
      if (job.state === 'succeeded') await settleSucceeded(ctx, step, job, inst);
      else Object.assign(inst, { state: job.state === 'cancelled' ? 'cancelled' : 'failed', reason: job.reason ?? job.state });
    }
    const settled = settleStep(p);
    if (settled.status !== 'running') Object.assign(p, settled);
    if (moved) changes.push(step.name);
  }
}

/** The jobs behind open instances, read by batch a page at a time (a fan-out of 10,000 is 10 reads, not 10,000). */
async function jobsOf(ctx: ServiceContext, access: ProjectAccess, p: StepProgress, open: Map<number, InstanceProgress>): Promise<Job[]> {
  const found: Job[] = [];
  for (const batchId of p.batchIds) {
    let beforeId: number | undefined;
    for (;;) {
      const page = await ctx.store.listJobs(access.project.id, { batchId }, { limit: JOB_PAGE, ...(beforeId === undefined ? {} : { beforeId }) });
      for (const j of page) if (open.has(j.id)) found.push(j);
      if (page.length < JOB_PAGE) break;
      beforeId = page.at(-1)!.id;
    }
  }
  return found;
}

/** A succeeded job's declared outputs: its result task's files, value files read (each ≤ 64 KiB). */
async function settleSucceeded(ctx: ServiceContext, step: StepSpec, job: Job, inst: InstanceProgress): Promise<void> {
  const tasks = await ctx.store.listTasks(job.id);
  const result: Task | undefined = job.canonicalTaskId !== null ? tasks.find((t) => t.id === job.canonicalTaskId) : tasks.filter((t) => t.state === 'succeeded').at(-1);
  const files = result?.outputs ?? {};
  const reads: Record<string, string> = {};
  for (const sha of valueFiles(step.outputs, files)) reads[sha] = await text(ctx.blobs.read(sha));
  const r = resolveOutputs(step.outputs, files, reads);
  if ('error' in r) Object.assign(inst, { state: 'failed', reason: r.error });
  else Object.assign(inst, { state: 'succeeded', outputs: r.outputs, reason: null });
}

/**
 * Skips the steps a failure blocks for good and queues the jobs of every step whose inputs
 * now exist; a step all of whose jobs are reused succeeds at once, which may make the next
 * ready, so this goes round until nothing moves.
 */
async function startReady(ctx: ServiceContext, access: ProjectAccess, w: WorkflowRecord, progress: WorkflowProgress, changes: string[]): Promise<void> {
  let earlier: Map<string, InstanceProgress> | undefined;
  for (;;) {
    const { ready, blocked } = nextMoves(w.spec, progress);
    for (const b of blocked) {
      Object.assign(progress.steps[b.step.name]!, { status: 'skipped', reason: b.reason });
      changes.push(b.step.name);
    }
    if (ready.length === 0 && blocked.length === 0) return;
    for (const step of ready) {
      if (earlier === undefined) {
        const resumed = w.resumedFrom === null ? null : await ctx.store.getWorkflow(w.projectId, w.resumedFrom);
        earlier = reusable(resumed ? Object.values(resumed.progress.steps) : [], 'key');
      }
      await startStep(ctx, access, w, step, progress, earlier);
      changes.push(step.name);
    }
  }
}

async function startStep(ctx: ServiceContext, access: ProjectAccess, w: WorkflowRecord, step: StepSpec, progress: WorkflowProgress, earlier: Map<string, InstanceProgress>): Promise<void> {
  const p = progress.steps[step.name]!;
  const fail = (reason: string): void => void Object.assign(p, { status: 'failed', reason });
  const app = await ctx.store.getApp(access.project.id, step.app, step.appVersion ?? undefined);
  if (!app) return fail(step.appVersion === null ? `no app named "${step.app}"` : `app "${step.app}" has no version ${step.appVersion}`);
  let planned: PlannedJob[];
  try {
    planned = planStep(w.spec, step, progress, w.files, app.id, ctx.limits.maxBatchJobs);
  } catch (e) {
    if (e instanceof StepError) return fail(e.message);
    throw e;
  }
  // This step's own succeeded jobs (a retry: the same work, perhaps with a fixed app) first, then the resumed workflow's.
  const own = reusable([p], 'retryKey');
  const instances: InstanceProgress[] = [];
  const fresh: Array<{ job: PlannedJob; at: number }> = [];
  for (const job of planned) {
    const prior = own.get(job.retryKey) ?? earlier.get(job.key);
    // A retry adopts what succeeded as the step's result under today's app version: a later resume matches it by that key.
    const keys = { item: job.item, key: job.key, retryKey: job.retryKey };
    if (prior) instances.push({ ...keys, jobId: prior.jobId, state: 'succeeded', reused: true, outputs: prior.outputs, reason: null });
    else {
      fresh.push({ job, at: instances.length });
      instances.push({ ...keys, jobId: 0, state: 'queued', reused: false, outputs: null, reason: null });
    }
  }
  if (fresh.length > 0) {
    const round = p.round + 1;
    const body = {
      app: app.name,
      appVersion: app.version,
      labels: { 'boxgrid.workflow': String(w.id), 'boxgrid.step': step.name },
      jobs: fresh.map(({ job }) => ({
        args: job.args, env: job.env, inputs: job.inputs, resources: step.resources, priority: step.priority,
        ...(step.retries === null ? {} : { maxAttempts: step.retries + 1 }),
      })),
    };
    let submitted;
    try {
      submitted = await new JobService(ctx).submitBatch(access, body, { key: `workflow:${w.id}:${step.name}:${round}`, body });
    } catch (e) {
      // What the submission refuses (a job too large, a blob gone) fails the step with why; the store's trouble is retried.
      if (isBoxgridError(e) && e.code === 'invalid_request') return fail(`its jobs were refused: ${e.message}`);
      throw e;
    }
    fresh.forEach(({ at }, n) => (instances[at]!.jobId = submitted.jobIds[n]!));
    p.round = round;
    if (submitted.batch) p.batchIds.push(submitted.batch.id);
  }
  p.instances = instances;
  Object.assign(p, fresh.length > 0 ? { status: 'running', reason: null } : { status: 'succeeded', reason: null });
}

/** Cancels the open jobs of these steps, batch by batch (cancelling twice is harmless). */
export async function cancelStepJobs(ctx: ServiceContext, access: ProjectAccess, w: WorkflowRecord, steps: string[]): Promise<void> {
  await cancelBatches(ctx, access, steps.flatMap((step) => w.progress.steps[step]?.batchIds ?? []));
}

async function cancelBatches(ctx: ServiceContext, access: ProjectAccess, batchIds: number[]): Promise<void> {
  const jobs = new JobService(ctx);
  for (const batchId of batchIds) await jobs.cancelBatch(access, batchId);
}

/** The batches a pass submitted: in its progress, not in the record it started from. */
function submittedIn(w: WorkflowRecord, progress: WorkflowProgress): number[] {
  return Object.entries(progress.steps).flatMap(([name, p]) => p.batchIds.filter((b) => !w.progress.steps[name]!.batchIds.includes(b)));
}
