import type { Command } from 'commander';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { isOutputName } from '../../domain/file-names.js';
import { saveVerified } from '../../client/save-verified.js';
import { resultTask } from '../../client/result-task.js';
import type { TaskView } from '../../client/types.js';
import type { CliContext } from '../context.js';
import { CliExit, emit, parseId } from '../output.js';
import { progressBar, type Progress } from '../progress.js';

/** `boxgrid logs` and `boxgrid fetch`: what a job printed, and what it produced. */
export function registerResults(program: Command, ctx: CliContext): void {
  program
    .command('logs [job-id]')
    .description("a job's output (its latest task's), or one task's with --task; the stored tail of at most 64 KiB")
    .option('--task <id>', 'this task instead of a job\'s latest')
    .option('-f, --follow', 'keep printing new output until the task ends')
    .option('--interval <ms>', 'how often --follow asks for more', '1000')
    .action(async (jobText: string | undefined, o: { task?: string; follow?: boolean; interval: string }) => {
      if ((jobText === undefined) === (o.task === undefined)) throw new CliExit(2, 'error: give a job id, or --task ID (not both)');
      const target = o.task !== undefined ? { task: parseId(o.task, '--task') } : { job: parseId(jobText!, 'job id') };
      const client = ctx.client();
      const project = ctx.connection().project;
      let page = await client.taskLog(project, target);
      const json = ctx.globals().json === true;
      if (json && !o.follow) return emit(true, page, () => '');
      // With --follow --json: one JSON object a line, each a new piece (start, end, text, done).
      const print = (p: typeof page): void => void process.stdout.write(json ? `${JSON.stringify(p)}\n` : p.text);
      print(page);
      // Output arrives with the agent's heartbeats, not as events: asking again is the way.
      const pause = parseId(o.interval, '--interval');
      while (o.follow && !page.done) {
        await new Promise((r) => setTimeout(r, pause));
        page = await client.taskLog(project, { task: page.taskId }, page.end);
        if (json && page.text === '' && !page.done) continue; // nothing new: no line
        print(page);
      }
    });

  program
    .command('fetch <job-id>')
    .description("download a finished job's outputs, each verified against its sha256")
    .requiredOption('--out <dir>', 'where to put them (created if missing)')
    .action(async (jobText: string, o: { out: string }) => {
      const client = ctx.client();
      const project = ctx.connection().project;
      const { job, tasks } = await client.getJob(project, parseId(jobText, 'job id'));
      const winner: TaskView | undefined = resultTask(job, tasks);
      if (!winner) {
        throw new CliExit(1, `error: job ${job.id} is ${job.state}${job.reason ? ` (${job.reason})` : ''}: it has no outputs to fetch` +
          (job.state === 'queued' || job.state === 'running' ? `; wait with \`boxgrid watch --job ${job.id}\`` : ''));
      }
      await mkdir(o.out, { recursive: true });
      const fetched: Array<{ name: string; sha256: string; size: number; path: string }> = [];
      const files = Object.entries(winner.outputs);
      const total = files.reduce((n, [, f]) => n + f.size, 0);
      // One bar over every file's bytes, on a terminal only (progressBar is silent otherwise).
      const bar = progressBar(`fetch job ${job.id}`, process.stderr, { bytes: true });
      let received = 0;
      try {
        for (const [name, file] of files) {
          // The server only accepts plain names; checked again so no answer can write outside --out.
          if (!isOutputName(name)) throw new CliExit(1, `error: refusing output name "${name}"`);
          const path = join(o.out, name);
          const res = await client.download(project, file.sha256);
          await saveVerified(counted(res, bar, (n) => (received += n, received), total, name), path, file.sha256);
          fetched.push({ name, ...file, path });
        }
      } finally {
        bar.stop();
      }
      emit(ctx.globals().json, { job: job.id, task: winner.id, files: fetched }, () => {
        const bytes = fetched.reduce((n, f) => n + f.size, 0);
        return fetched.length === 0
          ? `job ${job.id} succeeded without leaving files in /out`
          : `fetched ${fetched.length} file(s), ${bytes} bytes, to ${o.out}: ${fetched.map((f) => f.name).join(', ')}`;
      });
    });
}

/** The same response, its body counted into the bar as it streams. */
export function counted(res: Response, bar: Progress, add: (bytes: number) => number, total: number, detail: string): Response {
  if (!res.body) return res;
  const body = res.body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, out) {
        bar.update(add(chunk.byteLength), total, detail);
        out.enqueue(chunk);
      },
    }),
  );
  return new Response(body, { status: res.status, headers: res.headers });
}
