import type { Command } from 'commander';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { BoxgridClient } from '../../client/client.js';
import type { WorkflowInstanceView, WorkflowOutputView, WorkflowView } from '../../client/types.js';
import { submitWorkflow, uploadLocalFiles } from '../../client/workflow-builder.js';
import { isBoxgridError } from '../../domain/errors.js';
import { formatProblem } from '../../domain/workflow-spec.js';
import type { CliContext } from '../context.js';
import { CliExit, emit, parseId, table } from '../output.js';
import { progressBar } from '../progress.js';

interface JsonFlag {
  json?: boolean;
}

/** `boxgrid workflow …`: run, validate, follow, retry and cancel workflows (docs/workflows.md). */
export function registerWorkflows(program: Command, ctx: CliContext): void {
  const wf = program.command('workflow').description('run DAGs of steps whose outputs feed each other (docs/workflows.md)');
  const json = (o: JsonFlag): boolean => o.json === true || ctx.globals().json === true;

  wf.command('run <file>')
    .description('upload the local files the spec names (relative to its directory) and start the workflow')
    .option('--resume <id>', 'reuse the succeeded jobs of this earlier workflow where app version, args, env and inputs are unchanged')
    .option('--wait', 'follow it until it ends (exit 0 if it succeeded, 1 if not)')
    .option('--json', 'print the workflow as JSON')
    .action(async (file: string, o: JsonFlag & { resume?: string; wait?: boolean }) => {
      const resume = o.resume === undefined ? undefined : parseId(o.resume, '--resume');
      const source = await readSpec(file);
      const client = ctx.client();
      const project = ctx.connection().project;
      const bars = new Map<string, ReturnType<typeof progressBar>>();
      const answer = await withProblems(file, () =>
        submitWorkflow(client, project, source, {
          baseDir: dirname(file), ...(resume === undefined ? {} : { resume }),
          onUpload: (path, sent, total) => {
            let bar = bars.get(path);
            if (!bar) bars.set(path, (bar = progressBar(`upload ${path}`, process.stderr, { bytes: true })));
            bar.update(sent, total);
            if (sent >= total) bar.stop();
          },
        }),
      );
      const w = answer.workflow;
      if (!o.wait) {
        return emit(json(o), w, () => `started workflow ${w.id} (${w.name}): ${w.steps.length} step${w.steps.length === 1 ? '' : 's'}` +
          `${w.resumedFrom === null ? '' : `, reusing what workflow ${w.resumedFrom} did`}\n  follow it: boxgrid workflow status ${w.id}`);
      }
      if (!json(o)) process.stdout.write(`started workflow ${w.id} (${w.name})\n`);
      await waitAndReport(client, project, w.id, json(o));
    });

  wf.command('validate <file>')
    .description('check a spec on the server as a run would (apps, files, references), without running it; every problem as FILE:line:col')
    .option('--json', 'print the answer as JSON')
    .action(async (file: string, o: JsonFlag) => {
      const source = await readSpec(file);
      const client = ctx.client();
      const project = ctx.connection().project;
      const r = await withProblems(file, async () => {
        // The server checks that each local file is uploaded: upload them (content-addressed, so `run` will not again).
        const files = await uploadLocalFiles(client, project, source, { baseDir: dirname(file) });
        return client.validateWorkflow(project, { source, ...(Object.keys(files).length > 0 ? { files } : {}) });
      });
      emit(json(o), r, () => `${file}: ok: workflow "${r.name}", ${r.steps.length} step${r.steps.length === 1 ? '' : 's'}: ` +
        r.steps.map((s) => (s.needs.length === 0 ? s.name : `${s.name} (after ${s.needs.join(', ')})`)).join(', '));
    });

  wf.command('status <id>')
    .description('where each step stands; with --step, that step\'s jobs and their outputs')
    .option('--step <name>', 'one step\'s jobs (fan-out items)')
    .option('--offset <n>', 'with --step: skip this many jobs', '0')
    .option('--limit <n>', 'with --step: at most this many jobs', '100')
    .option('--json', 'print as JSON')
    .action(async (idText: string, o: JsonFlag & { step?: string; offset: string; limit: string }) => {
      const id = parseId(idText, 'workflow id');
      const client = ctx.client();
      const project = ctx.connection().project;
      if (o.step === undefined) {
        const { workflow: w } = await client.getWorkflow(project, id);
        return emit(json(o), w, () => describeWorkflow(w));
      }
      const offset = o.offset === '0' ? 0 : parseId(o.offset, '--offset');
      const d = await client.getWorkflowStep(project, id, o.step, { offset, limit: parseId(o.limit, '--limit') });
      emit(json(o), d, () => {
        const s = d.step;
        const head = `step ${s.name} of workflow ${id}: ${s.status}${s.reason ? ` (${s.reason})` : ''}; ${s.jobs} job${s.jobs === 1 ? '' : 's'}, ${s.reused} reused`;
        if (d.instances.length === 0) return `${head}\n  no jobs${s.status === 'waiting' ? ' yet' : ''}`;
        const shown = offset + d.instances.length < s.jobs ? `\n  jobs ${offset + 1}-${offset + d.instances.length} of ${s.jobs}: more with --offset ${offset + d.instances.length}` : '';
        return `${head}\n${instanceTable(d.instances)}${shown}`;
      });
    });

  wf.command('list')
    .description('the project\'s workflows, newest first')
    .option('--limit <n>', 'at most this many', '50')
    .option('--json', 'print as JSON')
    .action(async (o: JsonFlag & { limit: string }) => {
      const { workflows } = await ctx.client().listWorkflows(ctx.connection().project, { limit: parseId(o.limit, '--limit') });
      emit(json(o), workflows, () =>
        workflows.length === 0
          ? 'no workflows yet: boxgrid workflow run FILE'
          : table(['ID', 'NAME', 'STATE', 'STEPS', 'CREATED', 'REASON'], workflows.map((w) => [
            w.id, w.name, w.state, `${w.steps.filter((s) => s.status === 'succeeded').length}/${w.steps.length} done`, w.createdAt, w.reason,
          ])),
      );
    });

  wf.command('retry <id>')
    .description('run again the steps that failed, were cancelled or skipped, reusing every job that succeeded (unpinned apps take their latest version)')
    .option('--wait', 'follow it until it ends (exit 0 if it succeeded, 1 if not)')
    .option('--json', 'print the workflow as JSON')
    .action(async (idText: string, o: JsonFlag & { wait?: boolean }) => {
      const id = parseId(idText, 'workflow id');
      const client = ctx.client();
      const project = ctx.connection().project;
      const { workflow: w } = await client.retryWorkflow(project, id);
      if (!o.wait) return emit(json(o), w, () => `workflow ${w.id} is ${w.state} again\n  follow it: boxgrid workflow status ${w.id}`);
      if (!json(o)) process.stdout.write(`workflow ${w.id} is ${w.state} again\n`);
      await waitAndReport(client, project, id, json(o));
    });

  wf.command('cancel <id>')
    .description('cancel the workflow\'s queued and running jobs; steps not started are skipped')
    .option('--json', 'print the workflow as JSON')
    .action(async (idText: string, o: JsonFlag) => {
      const { workflow: w } = await ctx.client().cancelWorkflow(ctx.connection().project, parseId(idText, 'workflow id'));
      const jobs = w.steps.reduce((n, s) => n + s.counts.cancelled, 0);
      emit(json(o), w, () => `workflow ${w.id} ${w.state}${w.reason ? ` (${w.reason})` : ''}${jobs > 0 ? `: ${jobs} job${jobs === 1 ? '' : 's'} cancelled` : ''}`);
    });
}

async function readSpec(file: string): Promise<string> {
  try {
    return await readFile(file, 'utf8');
  } catch (e) {
    throw new CliExit(1, `error: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

/** Runs a call that checks the spec; its problems become `FILE:line:col: path: message` lines and exit 1. */
async function withProblems<T>(file: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (e) {
    if (isBoxgridError(e) && e.problems && e.problems.length > 0) {
      const n = e.problems.length;
      throw new CliExit(1, `${e.problems.map((p) => formatProblem(p, file)).join('\n')}\n${n} problem${n === 1 ? '' : 's'} in ${file}`);
    }
    throw e;
  }
}

/** Follows a workflow to its end, prints the step table (or the workflow as JSON); exit 1 unless it succeeded. */
async function waitAndReport(client: BoxgridClient, project: string, id: number, asJson: boolean): Promise<void> {
  const say = (line: string): void => void (asJson ? process.stderr : process.stdout).write(line + '\n');
  const w = await watchWorkflow(client, project, id, { onStep: (s, status, reason) => say(`  ${s}: ${status}${reason ? ` (${reason})` : ''}`) });
  emit(asJson, w, () => describeWorkflow(w));
  if (w.state !== 'succeeded') throw new CliExit(1, '');
}

/**
 * Follows a workflow until it ends: re-read on each of its events and at least every `pollMs`
 * (a dropped stream only slows it down), telling each step's status as it changes.
 */
export async function watchWorkflow(
  client: BoxgridClient,
  project: string,
  id: number,
  opts: { pollMs?: number; onStep?: (step: string, status: string, reason: string | null) => void } = {},
): Promise<WorkflowView> {
  const seen = new Map<string, string>();
  const abort = new AbortController();
  let wake: () => void = () => {};
  const stream = client.events(project, { workflow: id }, () => wake(), abort.signal).catch(() => undefined);
  try {
    for (;;) {
      const { workflow: w } = await client.getWorkflow(project, id);
      for (const s of w.steps) {
        if (seen.get(s.name) !== s.status && (seen.has(s.name) || s.status !== 'waiting')) opts.onStep?.(s.name, s.status, s.reason);
        seen.set(s.name, s.status);
      }
      if (w.state !== 'running') return w;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, opts.pollMs ?? 2000);
        wake = () => {
          clearTimeout(t);
          setTimeout(resolve, 100); // a step's jobs end in bursts
        };
      });
    }
  } finally {
    abort.abort();
    await stream;
  }
}

export function describeWorkflow(w: WorkflowView): string {
  const head = `workflow ${w.id} (${w.name}): ${w.state}${w.reason ? ` (${w.reason})` : ''}` +
    `${w.resumedFrom === null ? '' : `, resumed from workflow ${w.resumedFrom}`}; on failure: ${w.onFailure}`;
  const rows = w.steps.map((s) => [
    s.name, s.status, s.jobs, s.counts.queued, s.counts.running, s.counts.succeeded, s.counts.failed, s.counts.cancelled, s.reused, s.reason,
  ]);
  return `${head}\n${table(['STEP', 'STATUS', 'JOBS', 'QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'REUSED', 'REASON'], rows)}`;
}

function instanceTable(instances: WorkflowInstanceView[]): string {
  return table(
    ['ITEM', 'JOB', 'STATE', 'REUSED', 'OUTPUTS'],
    instances.map((i) => [i.item === '' ? '-' : i.item, i.jobId, i.state, i.reused ? 'yes' : 'no', i.outputs === null ? (i.reason ?? null) : briefOutputs(i.outputs)]),
  );
}

/** `energy=-1.25 refined=refined.xyz (3f2a9c1b…)`: values in short, files by name and digest. */
function briefOutputs(outputs: Record<string, WorkflowOutputView>): string {
  return Object.entries(outputs).map(([name, o]) => {
    if ('files' in o) {
      if (o.files.length === 1) return `${name}=${o.files[0]!.name} (${o.files[0]!.sha256.slice(0, 8)}…)`;
      return `${name}=${o.files.length} files`;
    }
    const text = JSON.stringify(o.value) ?? 'null';
    return `${name}=${text.length > 40 ? `${text.slice(0, 39)}…` : text}`;
  }).join(' ');
}
