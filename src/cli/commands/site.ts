import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { tlsFor } from '../config.js';
import type { CliContext } from '../context.js';
import { parseSizeMiB } from '../../domain/resources.js';
import { CliExit, parseNumber } from '../output.js';

interface SlurmFlags {
  server?: string;
  enrollToken?: string;
  partition?: string;
  account?: string;
  jobName: string;
  runtime: string;
  cpus: string;
  memory: string;
  disk: string;
  gpus: string;
  maxPilots: string;
  maxPending: string;
  walltime: string;
  idle: string;
  interval: string;
  workRoot: string;
  once?: boolean;
}

export function registerSite(program: Command, ctx: CliContext): void {
  const site = program.command('site').description('bring a cluster\'s capacity to the grid');
  site
    .command('slurm')
    .description('watch the queue and submit pilot jobs through sbatch: each runs `boxgrid agent` on a compute node, pulls tasks, and exits when idle')
    .option('--server <url>', 'the boxgrid server the pilots talk to (default: the CLI\'s own)')
    .option('--enroll-token <token>', 'an enrolment token with uses for every pilot, e.g. `boxgrid enroll-token create --site hpc --uses 100000`; better in env BOXGRID_ENROLL_TOKEN, out of the process list')
    .option('--partition <name>', 'the Slurm partition (default: the cluster\'s default)')
    .option('--account <name>', 'the Slurm account to charge')
    .option('--job-name <name>', 'the job name of this site\'s pilots, how it counts them in squeue: give each site of one user its own', 'boxgrid-pilot')
    .option('--runtime <runtime>', 'what runs the pilots\' tasks: "native" (plain processes, apps with a native command only; in bubblewrap when the nodes have it) or "podman" (each pilot starts a Podman service of its own and runs any app in its image; the nodes need podman)', 'native')
    .option('--cpus <n>', 'cores per pilot', '2')
    .option('--memory <size>', 'memory per pilot', '2Gi')
    .option('--disk <size>', 'disk per pilot for task files', '10Gi')
    .option('--gpus <n>', 'GPUs per pilot', '0')
    .option('--max-pilots <n>', 'most pilots queued or running at once', '10')
    .option('--max-pending <n>', 'most pilots waiting in Slurm\'s queue at once', '2')
    .option('--walltime <seconds>', 'a pilot\'s time limit (capped at the partition\'s): it takes only tasks that can finish within it', '3600')
    .option('--idle <seconds>', 'a pilot exits after holding no task this long', '120')
    .option('--interval <seconds>', 'time between passes', '30')
    .option('--work-root <dir>', 'where pilots keep their work dirs and logs (a path the compute nodes can write)', join(homedir(), '.local', 'share', 'boxgrid-pilots'))
    .option('--once', 'one pass, then exit (for cron, or to see what it would do)')
    .action(async (o: SlurmFlags) => {
      const enrollToken = o.enrollToken ?? process.env.BOXGRID_ENROLL_TOKEN;
      if (!enrollToken) throw new CliExit(2, 'error: pilots need an enrolment token: --enroll-token or BOXGRID_ENROLL_TOKEN (`boxgrid enroll-token create --uses N`)');
      const positive = (text: string, flag: string, whole = true): number => {
        const n = parseNumber(text, flag);
        if (!(n > 0) || (whole && !Number.isInteger(n))) throw new CliExit(2, `error: ${flag} must be a ${whole ? 'whole ' : ''}number above 0`);
        return n;
      };
      const gpus = parseNumber(o.gpus, '--gpus');
      if (!Number.isInteger(gpus) || gpus < 0) throw new CliExit(2, 'error: --gpus must be a whole number, 0 or more');
      const maxPilots = positive(o.maxPilots, '--max-pilots');
      if (o.runtime !== 'native' && o.runtime !== 'podman') throw new CliExit(2, `error: --runtime must be "native" or "podman", not "${o.runtime}"`);
      const runtime: 'native' | 'podman' = o.runtime;
      const { SlurmSite, thisBoxgrid } = await import('../../sites/slurm/slurm-site.js');
      const server = (o.server ?? ctx.connection().url).replace(/\/+$/, '');
      // Checked here; the pilots get the path, absolute, as their own --ca-file.
      const caFile = tlsFor(ctx.connection()).ca === undefined ? undefined : resolve(ctx.connection().caFile!);
      const s = new SlurmSite({
        server, enrollToken, ...(caFile === undefined ? {} : { caFile }), partition: o.partition ?? null, account: o.account ?? null, jobName: o.jobName,
        shape: {
          resources: { cores: positive(o.cpus, '--cpus', false), memoryMiB: parseSizeMiB(o.memory, '--memory'), diskMiB: parseSizeMiB(o.disk, '--disk'), gpus },
          runtime, maxPilots, maxPending: Math.min(maxPilots, positive(o.maxPending, '--max-pending')),
        },
        walltimeSeconds: positive(o.walltime, '--walltime'), idleSeconds: positive(o.idle, '--idle'), workRoot: o.workRoot,
        boxgrid: thisBoxgrid(), log: (m) => process.stderr.write(`${new Date().toISOString()} ${m}\n`),
      });
      const interval = positive(o.interval, '--interval', false) * 1000;
      if (o.once) {
        const r = await s.pass();
        process.stdout.write(`${JSON.stringify(r)}\n`);
        return;
      }
      process.stderr.write(`boxgrid site slurm: pilots for ${server}, a pass every ${interval / 1000} s (Ctrl-C to stop; running pilots finish on their own)\n`);
      const stop = new AbortController();
      const onSignal = (): void => stop.abort();
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      // A reconcile loop: a failed pass (the server or Slurm away) is logged and tried again.
      while (!stop.signal.aborted) {
        try {
          await s.pass();
        } catch (e) {
          process.stderr.write(`${new Date().toISOString()} pass failed: ${(e as Error).message}\n`);
        }
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, interval);
          stop.signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
        });
      }
    });
}
