import { SHA256_RE } from '../blobs/blob-store.js';
import { BoxgridError, notFound, type ErrorProblem } from '../domain/errors.js';
import { initialProgress, resetForRetry, stopAll } from '../domain/workflow-plan.js';
import { formatProblem, parseWorkflow } from '../domain/workflow-spec.js';
import type { WorkflowRecord, WorkflowSpec } from '../domain/workflow.js';
import type { ProjectAccess } from './access.js';
import { canonicalHash } from './canonical.js';
import type { ServiceContext } from './context.js';
import { decodeCursor, encodeCursor } from './jobs.js';
import { cancelWorkflowJobs } from './workflow-loop.js';

/** A workflow as submitted: the spec's text and the blobs of its local files. */
export interface WorkflowInput {
  /** The spec, YAML or JSON. */
  source: string;
  /** Local paths the spec names (`{file: ./x}`) → sha256 of the blob uploaded for each. */
  files?: Record<string, string>;
  /** A workflow of this project whose succeeded jobs this one reuses where nothing changed. */
  resume?: number;
}

/** The largest spec accepted, bytes. */
export const MAX_SPEC_BYTES = 1024 * 1024;

/**
 * Workflows as users see them: check, submit, look at, retry and cancel. What runs next is the
 * workflow loop's business (workflow-loop.ts); this service only writes the intent.
 */
export class WorkflowService {
  constructor(private readonly ctx: ServiceContext) {}

  /** Everything that can be known before anything runs: the spec, its apps, blobs and files. */
  async check(access: ProjectAccess, input: WorkflowInput): Promise<WorkflowSpec> {
    const parsed = parseWorkflow(input.source, { maxFanOut: this.ctx.limits.maxBatchJobs });
    if (!parsed.ok) throw specProblems(parsed.problems);
    const { spec } = parsed;
    const problems: ErrorProblem[] = [];
    const report = (path: string, message: string): void => {
      const pos = parsed.at(path) ?? { line: 1, column: 1 };
      problems.push({ path, line: pos.line, column: pos.column, message });
    };
    const files = input.files ?? {};
    for (const [path, sha] of Object.entries(files)) {
      if (!SHA256_RE.test(sha)) throw new BoxgridError('invalid_request', `files: "${path}" must map to the sha256 of an uploaded blob`, { field: 'body/files' });
    }
    const blobs = new Map<string, string>();
    for (const step of spec.steps) {
      const app = await this.ctx.store.getApp(access.project.id, step.app, step.appVersion ?? undefined);
      if (!app) {
        report(`steps.${step.name}.app`, step.appVersion === null ? `no app named "${step.app}" in project "${access.project.name}"` : `app "${step.app}" has no version ${step.appVersion}`);
      }
      for (const [name, src] of Object.entries(step.inputs)) {
        const path = `steps.${step.name}.inputs.${name}`;
        if (src.kind === 'blob') blobs.set(src.sha256, path);
        if (src.kind === 'file') {
          const sha = files[src.path];
          if (sha === undefined) report(path, `the local file ${src.path} was not uploaded (the CLI uploads it; through the API, give "files": {"${src.path}": "<sha256>"})`);
          else blobs.set(sha, path);
        }
      }
    }
    if (blobs.size > 0) {
      for (const sha of await this.ctx.store.missingBlobs(access.project.id, [...blobs.keys()])) {
        report(blobs.get(sha)!, `blob ${sha} is not uploaded to project "${access.project.name}"`);
      }
    }
    if (problems.length > 0) throw specProblems(problems.sort((a, b) => a.line - b.line || a.column - b.column));
    return spec;
  }

  async create(access: ProjectAccess, input: WorkflowInput, idem: { key: string; body: unknown } | null): Promise<{ workflow: WorkflowRecord; replayed: boolean }> {
    const key = idem ? { key: `${access.user.id}:${idem.key}`, requestHash: canonicalHash(idem.body) } : null;
    // A repeat gets its first answer, even if an app or blob its spec names is gone since.
    const prior = key ? await this.ctx.store.findIdempotentWorkflow(access.project.id, key) : null;
    if (prior) return { workflow: prior, replayed: true };
    const spec = await this.check(access, input);
    if (input.resume !== undefined && !(await this.ctx.store.getWorkflow(access.project.id, input.resume))) {
      throw new BoxgridError('invalid_request', `resume: workflow ${input.resume} not found in project "${access.project.name}"`, { field: 'body/resume' });
    }
    const now = this.ctx.now();
    const result = await this.ctx.store.createWorkflow(
      {
        projectId: access.project.id, name: spec.name, state: 'running', createdBy: access.user.id, source: input.source, spec,
        files: input.files ?? {}, progress: initialProgress(spec), resumedFrom: input.resume ?? null, createdAt: now,
      },
      key,
    );
    if (!result.replayed) {
      // The workflow loop wakes on this and queues the first steps.
      this.ctx.events.publish(access.project.id, { type: 'workflow', workflowId: result.workflow.id, state: 'running', reason: null });
    }
    return result;
  }

  async get(access: ProjectAccess, id: number): Promise<WorkflowRecord> {
    const w = await this.ctx.store.getWorkflow(access.project.id, id);
    if (!w) throw notFound(`workflow ${id}`);
    return w;
  }

  async list(access: ProjectAccess, limit: number, cursor?: string): Promise<{ workflows: WorkflowRecord[]; nextCursor: string | null }> {
    const beforeId = cursor === undefined ? undefined : decodeCursor(cursor);
    const workflows = await this.ctx.store.listWorkflows(access.project.id, { limit, ...(beforeId === undefined ? {} : { beforeId }) });
    const last = workflows.at(-1);
    return { workflows, nextCursor: workflows.length === limit && last ? encodeCursor(last.id) : null };
  }

  /**
   * Runs again every step that did not succeed, and what depends on it; every job that
   * succeeded is reused (by key), so nothing that succeeded runs again. Apps not pinned to a
   * version take their latest: fix the app, then retry.
   */
  async retry(access: ProjectAccess, id: number): Promise<WorkflowRecord> {
    return this.change(access, id, (w) => {
      if (w.state === 'running') throw new BoxgridError('illegal_transition', `workflow ${id} is still running: retry it once it has failed or been cancelled`);
      if (w.state === 'succeeded') throw new BoxgridError('illegal_transition', `workflow ${id} succeeded: nothing to retry`);
      const progress = structuredClone(w.progress);
      resetForRetry(w.spec, progress);
      return { state: 'running', reason: null, progress, endedAt: null };
    });
  }

  /**
   * Cancels the workflow's queued and running jobs; steps not started are skipped. Cancelling a
   * cancelled workflow cancels its jobs again (a cancel that failed half way is finished) and
   * is no error.
   */
  async cancel(access: ProjectAccess, id: number): Promise<WorkflowRecord> {
    const w = await this.change(access, id, (w) => {
      if (w.state === 'cancelled') return null;
      if (w.state !== 'running') throw new BoxgridError('illegal_transition', `workflow ${id} already ${w.state}`);
      const progress = structuredClone(w.progress);
      stopAll(w.spec, progress, 'the workflow was cancelled');
      return { state: 'cancelled', reason: `cancelled by ${access.user.name}`, progress, endedAt: this.ctx.now() };
    });
    // After the write: from then on no pass submits anything for it (one that lost the race cancels what it submitted).
    await cancelWorkflowJobs(this.ctx, w);
    return w;
  }

  /** Compare and set over the store, re-read and re-decided when another writer (the loop) got there first. */
  private async change(access: ProjectAccess, id: number, decide: (w: WorkflowRecord) => Omit<Parameters<ServiceContext['store']['updateWorkflow']>[2], 'updatedAt'> | null): Promise<WorkflowRecord> {
    for (;;) {
      const w = await this.get(access, id);
      const next = decide(w);
      if (!next) return w;
      const updated = await this.ctx.store.updateWorkflow(w.id, w.version, { ...next, updatedAt: this.ctx.now() });
      if (updated) {
        this.ctx.events.publish(access.project.id, { type: 'workflow', workflowId: id, state: updated.state, reason: updated.reason });
        return updated;
      }
    }
  }
}

function specProblems(problems: ErrorProblem[]): BoxgridError {
  const first = problems[0]!;
  const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''})` : '';
  return new BoxgridError('invalid_request', `body/source: ${formatProblem(first)}${more}`, { field: 'body/source', problems });
}
