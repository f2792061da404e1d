import type { Command } from 'commander';
import { resultTask } from '../../client/result-task.js';
import type { JobQuery, JobState, JobView, TaskView } from '../../client/types.js';
import { JOB_STATES } from '../../domain/states.js';
import type { CliContext } from '../context.js';
import { CliExit, emit, parseId, table } from '../output.js';
import { summarize, watchBatch, watchJob } from './watch.js';

function jobRow(j: JobView): Array<string | number | null> {
  return [j.id, `${j.app}:${j.appVersion}`, j.batchId, j.state, j.attempts, j.args.join(' ').slice(0, 40), j.updatedAt];
}

/** The outputs of the job's result, if it has one. */
function outputsOf(job: JobView, tasks: TaskView[]): string[] {
  const won = resultTask(job, tasks);
  if (!won) return [];
  const files = Object.entries(won.outputs);
  return [`  outputs:   ${files.length === 0 ? '(none)' : files.map(([n, f]) => `${n} (${f.size} B)`).join(', ')}${files.length ? '  — boxgrid fetch JOB --out DIR' : ''}`];
}

export function registerJobs(program: Command, ctx: CliContext): void {
  program
    .command('jobs')
    .description('list jobs, newest first')
    .option('--state <state>', `one of ${JOB_STATES.join(', ')}`)
    .option('--app <name>', 'only jobs of this app')
    .option('--batch <id>', 'only jobs of this batch')
    .option('--label <key=value>', 'only jobs with this label')
    .option('--limit <n>', 'how many (at most 1000 per page)', '50')
    .option('--all', 'follow the cursor to the end')
    .action(async (o: { state?: string; app?: string; batch?: string; label?: string; limit: string; all?: boolean }) => {
      if (o.state !== undefined && !(JOB_STATES as readonly string[]).includes(o.state)) {
        throw new CliExit(2, `error: --state must be one of ${JOB_STATES.join(', ')}`);
      }
      const q: JobQuery = { limit: Math.min(parseId(o.limit, '--limit'), 1000) };
      if (o.state) q.state = o.state as JobState;
      if (o.app) q.app = o.app;
      if (o.batch) q.batch = parseId(o.batch, '--batch');
      if (o.label) q.label = o.label;
      const jobs: JobView[] = [];
      for (;;) {
        const page = await ctx.client().listJobs(ctx.connection().project, q);
        jobs.push(...page.jobs);
        if (!o.all || page.nextCursor === null) break;
        q.cursor = page.nextCursor;
      }
      emit(ctx.globals().json, jobs, () =>
        jobs.length === 0 ? 'no jobs match' : table(['ID', 'APP', 'BATCH', 'STATE', 'ATTEMPTS', 'ARGS', 'UPDATED'], jobs.map(jobRow)),
      );
    });

  program
    .command('job <id>')
    .description('one job with its task history')
    .action(async (idText: string) => {
      const r = await ctx.client().getJob(ctx.connection().project, parseId(idText, 'job id'));
      const j = r.job;
      emit(ctx.globals().json, r, () =>
        [
          `job ${j.id}: ${j.state}${j.reason ? ` (${j.reason})` : ''}`,
          `  app:       ${j.app} v${j.appVersion}${j.batchId ? `, batch ${j.batchId}` : ''}`,
          `  args:      ${j.args.length ? j.args.join(' ') : '(none)'}`,
          ...(Object.keys(j.params).length ? [`  params:    ${Object.entries(j.params).map(([k, v]) => `${k}=${v}`).join(' ')}`] : []),
          ...(Object.keys(j.env).length ? [`  env:       ${Object.keys(j.env).join(', ')}`] : []),
          ...(Object.keys(j.inputs).length ? [`  inputs:    ${Object.entries(j.inputs).map(([k, v]) => `${k}=${v.slice(0, 12)}…`).join(' ')}`] : []),
          ...(Object.keys(j.labels).length ? [`  labels:    ${Object.entries(j.labels).map(([k, v]) => `${k}=${v}`).join(' ')}`] : []),
          `  priority:  ${j.priority}${j.deadline ? `, deadline ${j.deadline}` : ''}`,
          `  attempts:  ${j.attempts}${j.quorum > 1 ? `, quorum ${j.quorum} (replicated)` : ''}`,
          `  created:   ${j.createdAt}, updated ${j.updatedAt}${j.finishedAt ? `, finished ${j.finishedAt}` : ''}`,
          r.tasks.length === 0
            ? '  tasks:     none yet'
            : '  tasks:\n' + table(
                ['TASK', 'HOST', 'ATTEMPT', 'STATE', 'RUNTIME', 'SECONDS', 'CPU S', 'PEAK MIB', 'REASON'],
                r.tasks.map((t) => [
                  t.id, t.hostId, t.attempt, `${t.state}${t.validity ? ` (${t.validity}${t.id === j.resultTaskId ? ', result' : ''})` : ''}`, t.runtime, t.durationMs === null ? null : (t.durationMs / 1000).toFixed(1),
                  t.usage ? t.usage.cpuSeconds.toFixed(1) : null, t.usage ? Math.round(t.usage.peakMemoryMiB) : null, t.reason,
                ]),
              ).replace(/^/gm, '    '),
          ...outputsOf(r.job, r.tasks),
        ].join('\n'),
      );
    });

  program
    .command('cancel [job-id]')
    .description('cancel a job, or a whole batch with --batch')
    .option('--batch <id>', 'cancel every job of this batch that has not ended')
    .action(async (idText: string | undefined, o: { batch?: string }) => {
      const project = ctx.connection().project;
      if (o.batch !== undefined) {
        const r = await ctx.client().cancelBatch(project, parseId(o.batch, '--batch'));
        return emit(ctx.globals().json, r, () => `cancelled ${r.cancelled} jobs of batch ${o.batch}; now ${summarize(r.counts)}`);
      }
      if (idText === undefined) throw new CliExit(2, 'error: give a job id, or --batch ID');
      const r = await ctx.client().cancelJob(project, parseId(idText, 'job id'));
      emit(ctx.globals().json, r, () => `job ${r.job.id} cancelled`);
    });

  program
    .command('batches')
    .description('list batches, newest first')
    .option('--limit <n>', 'how many', '20')
    .action(async (o: { limit: string }) => {
      const client = ctx.client();
      const project = ctx.connection().project;
      const { batches } = await client.listBatches(project, { limit: parseId(o.limit, '--limit') });
      const details = await Promise.all(batches.map((b) => client.getBatch(project, b.id)));
      emit(ctx.globals().json, details, () =>
        details.length === 0
          ? 'no batches yet'
          : table(['BATCH', 'APP', 'SIZE', 'PROGRESS', 'CREATED'], details.map((d) => [d.batch.id, `${d.batch.app}:${d.batch.appVersion}`, d.batch.size, summarize(d.counts), d.batch.createdAt])),
      );
    });

  program
    .command('batch <id>')
    .description('progress counts of one batch')
    .action(async (idText: string) => {
      const d = await ctx.client().getBatch(ctx.connection().project, parseId(idText, 'batch id'));
      emit(ctx.globals().json, d, () => `batch ${d.batch.id} (${d.batch.app} v${d.batch.appVersion}, ${d.batch.size} jobs${d.done ? ', done' : ''}): ${summarize(d.counts)}`);
    });

  program
    .command('watch [batch-id]')
    .description('follow a batch (or --job ID) with a live progress bar until it ends; exits 3 unless everything succeeded')
    .option('--job <id>', 'follow one job instead')
    .action(async (idText: string | undefined, o: { job?: string }) => {
      const client = ctx.client();
      const project = ctx.connection().project;
      if (o.job !== undefined) {
        const job = await watchJob(client, project, parseId(o.job, '--job'));
        emit(ctx.globals().json, job, () => `job ${job.id} ${job.state}${job.reason ? `: ${job.reason}` : ''}`);
        if (job.state !== 'succeeded') throw new CliExit(3, '');
        return;
      }
      if (idText === undefined) throw new CliExit(2, 'error: give a batch id, or --job ID');
      const d = await watchBatch(client, project, parseId(idText, 'batch id'));
      emit(ctx.globals().json, d, () => `batch ${d.batch.id}: ${summarize(d.counts)}`);
      if (d.counts.succeeded !== d.batch.size) throw new CliExit(3, '');
    });
}
