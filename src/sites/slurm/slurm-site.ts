import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import type { Resources } from '../../domain/resources.js';
import { parseDemand, pilotsToSubmit, type PilotCount, type PilotShape } from '../pilot-policy.js';

const run = promisify(execFile);

/** The job name every pilot of a site carries: how the site finds its own in squeue. */
export const PILOT_JOB_NAME = 'boxgrid-pilot';

export interface SlurmSiteOptions {
  /** The boxgrid server pilots talk to (and whose /metrics says the demand). */
  server: string;
  /** An enrolment token with uses enough for every pilot (each enrols as a host of its own). */
  enrollToken: string;
  partition: string | null;
  account: string | null;
  shape: PilotShape;
  /** A pilot's time limit, seconds (capped at the partition's). */
  walltimeSeconds: number;
  /** A pilot stops after holding no task this long. */
  idleSeconds: number;
  /** Where pilots keep their work dirs and logs: a path the compute nodes can write. */
  workRoot: string;
  /** The command that starts boxgrid on a compute node (default: this node, this install). */
  boxgrid: string[];
  log: (message: string) => void;
}

export interface PassResult {
  demandCores: number;
  pilots: PilotCount;
  submitted: string[];
}

/**
 * The Slurm side of a site: each pass reads the demand from the server and the site's pilots
 * from squeue, and submits the pilots missing with sbatch. Pilots are `boxgrid agent` runs that
 * pull real work (the DIRAC way) and exit when idle or before their time limit; nothing is
 * cancelled here, so a pass is safe to repeat and a crashed site loses nothing.
 */
export class SlurmSite {
  constructor(private readonly o: SlurmSiteOptions) {}

  async pass(): Promise<PassResult> {
    const [demand, pilots, limits] = await Promise.all([this.demand(), this.pilots(), this.partitionLimits()]);
    const shape = { ...this.o.shape, resources: fitPilot(this.o.shape.resources, limits) };
    const n = pilotsToSubmit(demand, pilots, shape);
    const submitted: string[] = [];
    for (let i = 0; i < n; i++) submitted.push(await this.submit(shape.resources, Math.min(this.o.walltimeSeconds, limits.timeSeconds ?? Infinity)));
    const cores = demand.reduce((a, d) => a + d.jobs * d.resources.cores, 0);
    if (n > 0) this.o.log(`demand ${cores} cores; pilots pending ${pilots.pending}, running ${pilots.running}; submitted ${n}: ${submitted.join(', ')}`);
    return { demandCores: cores, pilots, submitted };
  }

  private async demand() {
    const res = await fetch(`${this.o.server.replace(/\/+$/, '')}/metrics`);
    if (!res.ok) throw new Error(`${this.o.server}/metrics answered ${res.status}`);
    return parseDemand(await res.text());
  }

  /** This user's pilots in squeue, by state; finished ones are gone from it. */
  async pilots(): Promise<PilotCount> {
    const { stdout } = await run('squeue', ['--noheader', '--me', '--name', PILOT_JOB_NAME, '--format', '%T']);
    const count: PilotCount = { pending: 0, running: 0 };
    for (const state of stdout.split('\n').map((s) => s.trim()).filter(Boolean)) {
      if (state === 'PENDING' || state === 'CONFIGURING' || state === 'REQUEUED') count.pending++;
      else count.running++; // RUNNING, COMPLETING, SUSPENDED …: holding the cluster's resources
    }
    return count;
  }

  /** The partition's time limit and its largest node, from sinfo: pilots are cut to fit. */
  private async partitionLimits(): Promise<{ timeSeconds: number | null; cores: number; memoryMiB: number }> {
    const args = ['--noheader', '--format', '%l %c %m', ...(this.o.partition ? ['--partition', this.o.partition] : [])];
    const { stdout } = await run('sinfo', args);
    let timeSeconds: number | null = null;
    let cores = 0;
    let memoryMiB = 0;
    for (const line of stdout.split('\n').map((l) => l.trim()).filter(Boolean)) {
      const [limit, c, m] = line.split(/\s+/);
      const t = slurmDuration(limit!);
      if (t !== null) timeSeconds = timeSeconds === null ? t : Math.max(timeSeconds, t);
      cores = Math.max(cores, parseInt(c!, 10) || 0);
      memoryMiB = Math.max(memoryMiB, parseInt(m!, 10) || 0);
    }
    return { timeSeconds, cores, memoryMiB };
  }

  private async submit(r: Resources, walltimeSeconds: number): Promise<string> {
    await mkdir(this.o.workRoot, { recursive: true });
    const agent = [
      ...this.o.boxgrid, 'agent', '--server', this.o.server, '--work-dir', join(this.o.workRoot, 'pilot-$SLURM_JOB_ID'), '--name', 'pilot-$SLURM_JOB_ID',
      '--native', '--no-docker', '--cpus', String(r.cores), '--memory', `${r.memoryMiB}Mi`, '--disk', `${r.diskMiB}Mi`, '--gpus', String(r.gpus),
      '--walltime', String(walltimeSeconds), '--exit-when-idle', String(this.o.idleSeconds), '--on-stop', 'release',
    ];
    const args = [
      '--parsable', '--job-name', PILOT_JOB_NAME, '--time', String(Math.max(1, Math.floor(walltimeSeconds / 60))),
      '--cpus-per-task', String(Math.ceil(r.cores)), '--mem', `${r.memoryMiB}M`, ...(r.gpus > 0 ? ['--gres', `gpu:${r.gpus}`] : []),
      ...(this.o.partition ? ['--partition', this.o.partition] : []), ...(this.o.account ? ['--account', this.o.account] : []),
      '--output', join(this.o.workRoot, 'pilot-%j.log'),
      // The token travels in the job's environment, not on a command line others can read.
      '--export', 'ALL,BOXGRID_ENROLL_TOKEN',
      // Slurm sends SIGTERM before the time limit ends a job: the agent hands back what it runs.
      '--signal', 'B:TERM@60',
      // exec: the agent is the batch script's process and gets that signal itself.
      '--wrap', `exec ${agent.map(shellWord).join(' ')}`,
    ];
    const { stdout } = await run('sbatch', args, { env: { ...process.env, BOXGRID_ENROLL_TOKEN: this.o.enrollToken } });
    return stdout.trim().split(';')[0]!;
  }
}

/** A pilot no larger than the partition's largest node. */
function fitPilot(r: Resources, limits: { cores: number; memoryMiB: number }): Resources {
  return { ...r, cores: limits.cores > 0 ? Math.min(r.cores, limits.cores) : r.cores, memoryMiB: limits.memoryMiB > 0 ? Math.min(r.memoryMiB, limits.memoryMiB) : r.memoryMiB };
}

/** Slurm's time limits ("UNLIMITED", "30:00", "1:00:00", "2-00:00:00") in seconds; null: none. */
export function slurmDuration(text: string): number | null {
  if (text === 'UNLIMITED' || text === 'infinite' || text === 'n/a') return null;
  const [days, rest] = text.includes('-') ? [Number(text.split('-')[0]), text.split('-')[1]!] : [0, text];
  const parts = rest.split(':').map(Number);
  if (parts.some((p) => !Number.isFinite(p))) return null;
  const [h, m, s] = parts.length === 3 ? parts : parts.length === 2 ? [0, parts[0]!, parts[1]!] : [0, parts[0]!, 0];
  return days * 86_400 + h! * 3600 + m! * 60 + s!;
}

/** A word for `sh -c` (what sbatch --wrap runs): $SLURM_JOB_ID is expanded by the shell, nothing else. */
export function shellWord(w: string): string {
  if (/^[\w@%+=:,./-]+$/.test(w)) return w;
  return `"${w.replace(/(["\\`])/g, '\\$1').replace(/\$(?!SLURM_JOB_ID\b)/g, '\\$')}"`;
}

/** How this node starts boxgrid: this Node.js binary and this install's bin/boxgrid.js. */
export function thisBoxgrid(): string[] {
  return [process.execPath, fileURLToPath(new URL('../../../../bin/boxgrid.js', import.meta.url))];
}
