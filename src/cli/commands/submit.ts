import type { Command } from 'commander';
import type { BatchSubmit, JobTemplate } from '../../client/types.js';
import { parseSweepArg, type SweepSpec } from '../../domain/sweep.js';
import type { CliContext } from '../context.js';
import { CliExit, emit, parseKeyValues, parseNumber, resourceFlags } from '../output.js';
import { progressBar } from '../progress.js';
import { summarize, watchBatch, watchJob } from './watch.js';

interface SubmitFlags {
  count?: string;
  sweep?: string[];
  env?: string[];
  input?: string[];
  label?: string[];
  selector?: string[];
  priority?: string;
  deadline?: string;
  cores?: string;
  memory?: string;
  disk?: string;
  gpus?: string;
  appVersion?: string;
  watch?: boolean;
}

export function registerSubmit(program: Command, ctx: CliContext): void {
  program
    .command('submit <app> [args...]')
    .description('submit one job, N copies (--count) or a parameter sweep (--sweep); {name} in args is replaced by sweep values')
    .option('--count <n>', 'submit N identical jobs as one batch')
    .option('--sweep <name=spec...>', 'sweep a parameter: x=1..100, x=0..1:0.1 or y=a,b,c (repeat for a cartesian product)')
    .option('--env <KEY=VALUE...>', 'environment variables for the job')
    .option('--input <name=path...>', 'upload a local file and give it to the job as an input')
    .option('--label <key=value...>', 'labels to filter by later')
    .option('--selector <key=value...>', 'run only on hosts with these labels (agent --label)')
    .option('--priority <n>', 'higher runs first within the project (-1000..1000)')
    .option('--deadline <iso-time>', 'fail instead of running after this time')
    .option('--cores <n>', 'override the app\'s cores')
    .option('--memory <size>', 'override the app\'s memory, e.g. 2Gi')
    .option('--disk <size>', 'override the app\'s disk')
    .option('--gpus <n>', 'override the app\'s GPUs')
    .option('--app-version <n>', 'pin an app version (default: latest)')
    .option('--watch', 'follow progress until the jobs end')
    .action(async (appName: string, args: string[], o: SubmitFlags) => {
      const conn = ctx.connection();
      const client = ctx.client();
      const json = ctx.globals().json;
      const template: JobTemplate = {};
      if (args.length > 0) template.args = args;
      const env = parseKeyValues(o.env, '--env');
      if (Object.keys(env).length > 0) template.env = env;
      const labels = parseKeyValues(o.label, '--label');
      const selector = parseKeyValues(o.selector, '--selector');
      if (Object.keys(selector).length > 0) template.selector = selector;
      if (o.priority !== undefined) template.priority = parseNumber(o.priority, '--priority');
      if (o.deadline !== undefined) template.deadline = o.deadline;
      const resources = resourceFlags(o);
      if (Object.keys(resources).length > 0) template.resources = resources;
      const inputs = parseKeyValues(o.input, '--input');
      if (Object.keys(inputs).length > 0) {
        template.inputs = {};
        for (const [name, path] of Object.entries(inputs)) {
          const bar = progressBar(`upload ${name}`, process.stderr, { bytes: true });
          const blob = await client.uploadFile(conn.project, path, (sent, total) => bar.update(sent, total));
          bar.stop();
          template.inputs[name] = blob.sha256;
        }
      }
      const appVersion = o.appVersion === undefined ? {} : { appVersion: parseNumber(o.appVersion, '--app-version') };
      if (o.count !== undefined && o.sweep !== undefined) throw new CliExit(2, 'error: use --count or --sweep, not both');

      if (o.count === undefined && o.sweep === undefined) {
        const r = await client.submitJob(conn.project, { app: appName, ...appVersion, ...template, ...(Object.keys(labels).length ? { labels } : {}) });
        const id = r.jobIds![0]!;
        if (!o.watch) return emit(json, r, () => `submitted job ${id}\n  follow it: boxgrid watch --job ${id}`);
        const job = await watchJob(client, conn.project, id);
        emit(json, job, () => `job ${id} ${job.state}${job.reason ? `: ${job.reason}` : ''}`);
        if (job.state !== 'succeeded') throw new CliExit(3, '');
        return;
      }
      const batch: BatchSubmit = { app: appName, ...appVersion, template };
      if (Object.keys(labels).length > 0) batch.labels = labels;
      if (o.count !== undefined) batch.count = parseNumber(o.count, '--count');
      else {
        const sweep: SweepSpec = {};
        for (const s of o.sweep!) {
          const [name, dim] = parseSweepArg(s);
          sweep[name] = dim;
        }
        batch.sweep = sweep;
      }
      const r = await client.submitBatch(conn.project, batch);
      const id = r.batch!.id;
      if (!o.watch) return emit(json, r, () => `submitted batch ${id} with ${r.jobCount} jobs\n  follow it: boxgrid watch ${id}`);
      const d = await watchBatch(client, conn.project, id);
      emit(json, d, () => `batch ${id}: ${summarize(d.counts)}`);
      if (d.counts.succeeded !== d.batch.size) throw new CliExit(3, '');
    });
}
