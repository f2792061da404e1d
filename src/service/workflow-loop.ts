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
import type { JobFilter } from '../store/store.js';
import type { BoxgridEvent } from './events.js';
import { idemFor, JobService, type SubmitResult } from './jobs.js';
import { Periodic } from './periodic.js';

/** Running workflows read per store call; a pass reads them all. */
const PAGE = 200;
/** Kicks (jobs ending) this close together make one pass. */
const KICK_GAP_MS = 200;
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
  private kickTimer: NodeJS.Timeout | null = null;

  constructor(private readonly ctx: ServiceContext, intervalSeconds = 5, private readonly warn: (message: string) => void = () => undefined) {
    this.loop = new Periodic(() => this.pass(), intervalSeconds * 1000);
  }

  start(): void {
    this.loop.start();
    // A job ending or a batch changing may move a workflow: look soon rather than at the next
    // tick. Kicks within KICK_GAP_MS make one pass, so a busy grid does not run passes back to back.
    this.unwatch = this.ctx.events.watchAll((e) => {
      if (!wakes(e.event) || this.kickTimer) return;
      this.kickTimer = setTimeout(() => {
        this.kickTimer = null;
        this.loop.kick();
      }, KICK_GAP_MS);
      this.kickTimer.unref();
    });
  }

  async stop(): Promise<void> {
    this.unwatch?.();
    this.unwatch = null;
    if (this.kickTimer) clearTimeout(this.kickTimer);
    this.kickTimer = null;
    await this.loop.stop();
  }

  /** One pass over every running workflow, a page at a time. */
  async pass(): Promise<void> {
    let afterId = 0;
    for (;;) {
      const page = await this.ctx.store.openWorkflows(PAGE, afterId);
      for (const w of page) {
        try {
          await advance(this.ctx, w.projectId, w.id);
        } catch (e) {
          // One workflow's trouble (a store hiccup) holds up no other; the next pass tries it again.
          this.warn(`workflow ${w.id}: ${(e as Error).message}`);
        }
      }
      if (page.length < PAGE) return;
      afterId = page.at(-1)!.id;
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
    if (!access) {
      reason = 'its creator is no longer a member of the project';
      stopAll(w.spec, progress, reason);
    } else {
      await observe(ctx, access, w, progress, changes);
      const failed = w.spec.onFailure === 'stop' ? firstFailure(w.spec, progress) : null;
      if (failed !== null) {
        stopAll(w.spec, progress, `the workflow stopped: step "${failed}" failed`);
        changes.push(...w.spec.steps.map((s) => s.name));
      } else {
        await startReady(ctx, access, w, progress, changes);
      }
    }
    // A stop leaves no step waiting or running, so it always ends the workflow here.
    const outcome = reason ? { state: 'failed' as const, reason } : workflowOutcome(w.spec, progress);
    if (changes.length === 0 && outcome.state === 'running') return w;
    // Jobs are cancelled before the progress says so: a crash in between leaves the cancel to be done again, never undone.
    if (outcome.state !== 'running') await cancelWorkflowJobs(ctx, w, progress);
    const now = ctx.now();
    const updated = await ctx.store.updateWorkflow(w.id, w.version, {
      state: outcome.state, reason: outcome.reason, progress, updatedAt: now, endedAt: outcome.state === 'running' ? null : now,
    });
    if (!updated) {
      // Another server or a user wrote first: decide again from what is there now. A repeat of
      // this pass's submissions gets the same jobs (idempotency keys), but if the workflow was
      // cancelled meanwhile nobody else knows of them: cancel them here.
      const now = await ctx.store.getWorkflow(projectId, id);
      if (now && now.state !== 'running') await cancelWorkflowJobs(ctx, now, progress);
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
      // Written with the next job that ends (a write of the whole progress per start would cost more than it tells).
      if (job.state === 'running' && inst.state === 'queued') inst.state = 'running';
      if (!jobMachine.isTerminal(job.state)) continue;
      // Ends are written as they happen, so a step's counts show how far its fan-out got.
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
  for (const batchId of p.batchIds) for await (const j of allJobs(ctx, access.project.id, { batchId })) if (open.has(j.id)) found.push(j);
  return found;
}

/** Every job of the project the filter matches, newest first, read JOB_PAGE at a time. */
async function* allJobs(ctx: ServiceContext, projectId: number, filter: JobFilter): AsyncGenerator<Job> {
  let beforeId: number | undefined;
  for (;;) {
    const page = await ctx.store.listJobs(projectId, filter, { limit: JOB_PAGE, ...(beforeId === undefined ? {} : { beforeId }) });
    yield* page;
    if (page.length < JOB_PAGE) return;
    beforeId = page.at(-1)!.id;
  }
}

/** A succeeded job's declared outputs: its result task's files, value files read (each ≤ 64 KiB). */
async function settleSucceeded(ctx: ServiceContext, step: StepSpec, job: Job, inst: InstanceProgress): Promise<void> {
  const tasks = await ctx.store.listTasks(job.id);
  const result: Task | undefined = job.canonicalTaskId !== null ? tasks.find((t) => t.id === job.canonicalTaskId) : tasks.filter((t) => t.state === 'succeeded').at(-1);
  const files = result?.outputs ?? {};
  const reads: Record<string, string> = {};
  for (const sha of valueFiles(step.outputs, files)) {
    try {
      reads[sha] = await text(ctx.blobs.read(sha));
    } catch {
      // Left out: resolveOutputs fails the job's outputs with "could not be read" rather than the pass failing for ever.
    }
  }
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
  // A stop marks open jobs cancelled from what the last pass saw: one may have succeeded since. Its result counts.
  for (const inst of p.instances) {
    if (inst.state !== 'cancelled') continue;
    const job = await ctx.store.getJob(access.project.id, inst.jobId);
    if (job?.state === 'succeeded') await settleSucceeded(ctx, step, job, inst);
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
    const body = {
      app: app.name,
      appVersion: app.version,
      labels: { 'boxgrid.workflow': String(w.id), 'boxgrid.step': step.name },
      jobs: fresh.map(({ job }) => ({
        args: job.args, env: job.env, inputs: job.inputs, resources: step.resources, priority: step.priority,
        ...(step.retries === null ? {} : { maxAttempts: step.retries + 1 }),
      })),
    };
    const jobs = new JobService(ctx);
    let round = p.round + 1;
    let submitted: SubmitResult;
    for (;;) {
      const idem = { key: `workflow:${w.id}:${step.name}:${round}`, body, system: true };
      try {
        submitted = await jobs.submitBatch(access, body, idem);
        break;
      } catch (e) {
        if (isBoxgridError(e) && e.code === 'conflict' && round <= p.round + 3) {
          // A pass that crashed before writing its round submitted other jobs under this key
          // (the app had a new version since): those are nobody's now. Cancel them, next round.
          const prior = await ctx.store.findIdempotent(access.project.id, idemFor(access, idem)!.key);
          if (prior?.result.batch) await jobs.cancelBatchOf(access.project.id, prior.result.batch.id);
          round++;
          continue;
        }
        // What the submission refuses (a job too large, a blob gone) fails the step with why; the store's trouble is retried.
        if (isBoxgridError(e) && e.code === 'invalid_request') return fail(`its jobs were refused: ${e.message}`);
        throw e;
      }
    }
    fresh.forEach(({ at }, n) => (instances[at]!.jobId = submitted.jobIds[n]!));
    p.round = round;
    if (submitted.batch) p.batchIds.push(submitted.batch.id);
  }
  p.instances = instances;
  Object.assign(p, fresh.length > 0 ? { status: 'running', reason: null } : { status: 'succeeded', reason: null });
}

/**
 * Cancels every open job of a workflow that is stopping: the batches its progress lists, and
 * any batch of a job labelled with the workflow that a pass submitted but never recorded (it
 * crashed, or lost its write). Cancelling twice is harmless, so a cancel that failed half way
 * is simply done again.
 */
export async function cancelWorkflowJobs(ctx: ServiceContext, w: WorkflowRecord, ...more: WorkflowProgress[]): Promise<void> {
  const batchIds = new Set<number>();
  for (const progress of [w.progress, ...more]) for (const p of Object.values(progress.steps)) for (const b of p.batchIds) batchIds.add(b);
  const label = { key: 'boxgrid.workflow', value: String(w.id) };
  for (const state of ['queued', 'running'] as const) {
    for await (const j of allJobs(ctx, w.projectId, { label, state })) if (j.batchId !== null) batchIds.add(j.batchId);
  }
  const jobs = new JobService(ctx);
  for (const b of batchIds) await jobs.cancelBatchOf(w.projectId, b);
}
