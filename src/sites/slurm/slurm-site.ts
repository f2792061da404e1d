import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import type { Resources } from '../../domain/resources.js';
import { WALLTIME_MARGIN_SECONDS } from '../../agent/agent.js';
import { demandCores, parseDemand, pilotsToSubmit, type PilotCount, type PilotShape } from '../pilot-policy.js';

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
  /** The job name of this site's pilots: how it finds its own in squeue (two sites of one user need two). */
  jobName: string;
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

/** Slurm signals a pilot this long before its time limit ends it (`--signal B:TERM@…`). */
const WARNING_SECONDS = 60;
/** A pilot's agent is told its time ends this much before the limit: the warning, and the pilot's own start. */
const AGENT_WALLTIME_SLACK_SECONDS = 2 * WARNING_SECONDS;
/** Memory a pilot keeps for the agent itself (Node.js), out of what it asks Slurm for. */
const AGENT_MEMORY_MIB = 256;

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
    const resources = fitPilot(this.o.shape.resources, limits);
    // Whole minutes, as sbatch --time takes them; the agent's share ends before the warning.
    const minutes = Math.max(1, Math.floor(Math.min(this.o.walltimeSeconds, limits.timeSeconds ?? Infinity) / 60));
    const agentSeconds = minutes * 60 - AGENT_WALLTIME_SLACK_SECONDS;
    const tasksFit = agentSeconds - WALLTIME_MARGIN_SECONDS; // the longest run the agent will take
    const n = tasksFit < 1 ? 0 : pilotsToSubmit(demand, pilots, { ...this.o.shape, resources }, tasksFit);
    if (tasksFit < 1) this.o.log(`a pilot of ${minutes} min has no time left for tasks: raise --walltime`);
    const submitted: string[] = [];
    for (let i = 0; i < n; i++) submitted.push(await this.submit(resources, minutes, agentSeconds));
    const cores = demandCores(demand, { resources, maxRuntimeSeconds: tasksFit });
    if (n > 0) this.o.log(`demand a pilot can take: ${cores} cores; pilots pending ${pilots.pending}, running ${pilots.running}; submitted ${n}: ${submitted.join(', ')}`);
    return { demandCores: cores, pilots, submitted };
  }

  private async demand() {
    const res = await fetch(`${this.o.server.replace(/\/+$/, '')}/metrics`);
    if (!res.ok) throw new Error(`${this.o.server}/metrics answered ${res.status}`);
    return parseDemand(await res.text());
  }

  /** This site's pilots in squeue, by state; finished ones are gone from it. */
  async pilots(): Promise<PilotCount> {
    const args = ['--noheader', '--me', '--name', this.o.jobName, '--format', '%T %r', ...(this.o.partition ? ['--partition', this.o.partition] : [])];
    const { stdout } = await run('squeue', args);
    const count: PilotCount = { pending: 0, running: 0 };
    const held = new Set<string>();
    for (const line of stdout.split('\n').map((s) => s.trim()).filter(Boolean)) {
      const [state, reason] = line.split(/\s+/, 2);
      if (state === 'PENDING' || state === 'CONFIGURING' || state === 'REQUEUED') {
        count.pending++;
        // Pending for a reason that waiting will not cure fills --max-pending for good: say so.
        if (reason && !['Priority', 'Resources', 'None', 'BeginTime'].includes(reason)) held.add(reason);
      } else count.running++; // RUNNING, COMPLETING, SUSPENDED …: holding the cluster's resources
    }
    if (held.size > 0) this.o.log(`pilots pending because of ${[...held].join(', ')}: check the partition, account and QOS limits`);
    return count;
  }

  /** The partition's (or the default partition's) time limit and its largest node, from sinfo: pilots are cut to fit. */
  private async partitionLimits(): Promise<{ timeSeconds: number | null; cores: number; memoryMiB: number }> {
    const args = ['--noheader', '--format', '%P %l %c %m', ...(this.o.partition ? ['--partition', this.o.partition] : [])];
    const { stdout } = await run('sinfo', args);
    let timeSeconds: number | null = null;
    let cores = 0;
    let memoryMiB = 0;
    for (const line of stdout.split('\n').map((l) => l.trim()).filter(Boolean)) {
      const [partition, limit, c, m] = line.split(/\s+/);
      // Without --partition, sbatch uses the default one: sinfo marks it with a '*'.
      if (!this.o.partition && !partition!.endsWith('*')) continue;
      const t = slurmDuration(limit!);
      if (t !== null) timeSeconds = timeSeconds === null ? t : Math.max(timeSeconds, t);
      cores = Math.max(cores, parseInt(c!, 10) || 0);
      memoryMiB = Math.max(memoryMiB, parseInt(m!, 10) || 0);
    }
    return { timeSeconds, cores, memoryMiB };
  }

  private async submit(r: Resources, minutes: number, agentSeconds: number): Promise<string> {
    await mkdir(this.o.workRoot, { recursive: true });
    const agent = [
      ...this.o.boxgrid, 'agent', '--server', this.o.server, '--work-dir', join(this.o.workRoot, 'pilot-$SLURM_JOB_ID'), '--name', 'pilot-$SLURM_JOB_ID',
      '--native', '--no-docker', '--cpus', String(r.cores), '--memory', `${Math.max(64, r.memoryMiB - AGENT_MEMORY_MIB)}Mi`, '--disk', `${r.diskMiB}Mi`,
      '--gpus', String(r.gpus), '--walltime', String(agentSeconds), '--exit-when-idle', String(this.o.idleSeconds), '--on-stop', 'release',
    ];
    const args = [
      '--parsable', '--job-name', this.o.jobName, '--time', String(minutes),
      '--cpus-per-task', String(Math.ceil(r.cores)), '--mem', `${r.memoryMiB}M`, ...(r.gpus > 0 ? ['--gres', `gpu:${r.gpus}`] : []),
      ...(this.o.partition ? ['--partition', this.o.partition] : []), ...(this.o.account ? ['--account', this.o.account] : []),
      '--output', join(this.o.workRoot, 'pilot-%j.log'),
      // Only what the pilot needs of this environment: the token travels in the job's
      // environment (not on a command line others can read), and nothing else of the site's does.
      '--export', 'PATH,HOME,LANG,BOXGRID_ENROLL_TOKEN',
      // Slurm sends SIGTERM before the time limit ends a job: the agent hands back what it runs.
      '--signal', `B:TERM@${WARNING_SECONDS}`,
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
