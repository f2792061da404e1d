import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { BoxgridClient } from '../../client/client.js';
import type { Resources } from '../../domain/resources.js';
import { WALLTIME_MARGIN_SECONDS } from '../../agent/agent.js';
import { demandCores, parseDemand, pilotsToSubmit, type PilotCount, type PilotRuntime, type PilotShape } from '../pilot-policy.js';

const run = promisify(execFile);

/** The job name every pilot of a site carries: how the site finds its own in squeue. */
export const PILOT_JOB_NAME = 'boxgrid-pilot';

export interface SlurmSiteOptions {
  /** The boxgrid server pilots talk to (and whose /metrics says the demand). */
  server: string;
  /**
   * The CA an https:// server's certificate chains to (`--ca-file`), when not a public one: for
   * reading the demand, and handed to the pilots, so at a path the compute nodes read too.
   */
  caFile?: string;
  /** An enrolment token with uses enough for every pilot (each enrols as a host of its own). */
  enrollToken: string;
  partition: string | null;
  account: string | null;
  /** The job name of this site's pilots: how it finds its own in squeue (two sites of one user need two). */
  jobName: string;
  /** What one pilot is: resources, runtime (native processes or a Podman service of its own), bounds. */
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
/** And for the Podman service a Podman pilot runs beside it (~50 MiB resident measured, plus a conmon per task). */
const PODMAN_MEMORY_MIB = 128;
/** The longest path a Unix socket may have (sun_path holds 108 bytes with the final NUL). */
const MAX_SOCKET_PATH = 107;

/**
 * The Slurm side of a site: each pass reads the demand from the server and the site's pilots
 * from squeue, and submits the pilots missing with sbatch. Pilots are `boxgrid agent` runs that
 * pull real work (the DIRAC way) and exit when idle or before their time limit; nothing is
 * cancelled here, so a pass is safe to repeat and a crashed site loses nothing.
 */
export class SlurmSite {
  constructor(private readonly o: SlurmSiteOptions) {
    if (o.shape.runtime === 'podman') {
      // Job ids of up to 10 digits: a socket path that long fails in the pilot, not here.
      const longest = podmanSocket(join(o.workRoot, 'pilot-$SLURM_JOB_ID')).replace('$SLURM_JOB_ID', '9'.repeat(10));
      if (Buffer.byteLength(longest) > MAX_SOCKET_PATH) {
        throw new Error(`--work-root ${o.workRoot} is too long for the pilots' Podman sockets (${longest} is over ${MAX_SOCKET_PATH} bytes): choose a shorter one`);
      }
    }
  }

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
    const cores = demandCores(demand, { resources, runtime: this.o.shape.runtime, maxRuntimeSeconds: tasksFit });
    if (n > 0) this.o.log(`demand a pilot can take: ${cores} cores; pilots pending ${pilots.pending}, running ${pilots.running}; submitted ${n}: ${submitted.join(', ')}`);
    return { demandCores: cores, pilots, submitted };
  }

  private async demand() {
    const server = new BoxgridClient({ url: this.o.server, retries: 0, ...(this.o.caFile === undefined ? {} : { caFile: this.o.caFile }) });
    return parseDemand(await server.metricsText());
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
    const runtime = this.o.shape.runtime;
    const workDir = join(this.o.workRoot, 'pilot-$SLURM_JOB_ID');
    const kept = AGENT_MEMORY_MIB + (runtime === 'podman' ? PODMAN_MEMORY_MIB : 0);
    const agent = [
      ...this.o.boxgrid, 'agent', '--server', this.o.server, '--work-dir', workDir, '--name', 'pilot-$SLURM_JOB_ID',
      ...(this.o.caFile === undefined ? [] : ['--ca-file', this.o.caFile]),
      ...(runtime === 'podman' ? ['--docker-socket', podmanSocket(workDir)] : ['--native', '--no-docker']),
      '--cpus', String(r.cores), '--memory', `${Math.max(64, r.memoryMiB - kept)}Mi`, '--disk', `${r.diskMiB}Mi`,
      '--gpus', String(r.gpus), '--walltime', String(agentSeconds), '--exit-when-idle', String(this.o.idleSeconds), '--on-stop', 'release',
    ];
    const args = [
      '--parsable', '--job-name', this.o.jobName, '--time', String(minutes),
      '--cpus-per-task', String(Math.ceil(r.cores)), '--mem', `${r.memoryMiB}M`, ...(r.gpus > 0 ? ['--gres', `gpu:${r.gpus}`] : []),
      ...(this.o.partition ? ['--partition', this.o.partition] : []), ...(this.o.account ? ['--account', this.o.account] : []),
      '--output', join(this.o.workRoot, 'pilot-%j.log'),
      // Only what the pilot needs of this environment: the token travels in the job's
      // environment (not on a command line others can read), and nothing else of the site's does
      // but, for Podman, where its configuration is (node-local storage, say), when set.
      '--export', ['PATH', 'HOME', 'LANG', 'BOXGRID_ENROLL_TOKEN', ...(runtime === 'podman' ? PODMAN_ENV : [])].join(','),
      // Slurm sends SIGTERM before the time limit ends a job: the agent hands back what it runs.
      '--signal', `B:TERM@${WARNING_SECONDS}`,
      '--wrap', pilotScript(runtime, agent, workDir),
    ];
    const { stdout } = await run('sbatch', args, { env: { ...process.env, BOXGRID_ENROLL_TOKEN: this.o.enrollToken } });
    return stdout.trim().split(';')[0]!;
  }
}

/** Podman's own settings that a Podman pilot takes from the site's environment when they are set there. */
const PODMAN_ENV = ['CONTAINERS_CONF', 'CONTAINERS_STORAGE_CONF', 'CONTAINERS_REGISTRIES_CONF'];

/** Where a Podman pilot's service listens: in the pilot's work dir, so pilots sharing a node never meet. */
export function podmanSocket(workDir: string): string {
  return join(workDir, 'podman.sock');
}

/**
 * The batch script of a pilot (sbatch --wrap, run by /bin/sh). Native: the agent is the
 * script's process (exec), so it gets Slurm's SIGTERM itself. Podman: the script starts a
 * Podman API service of its own on a socket in the work dir, waits until it answers, runs the
 * agent against it, hands a SIGTERM on to the agent (which then releases its tasks), and stops
 * the service when it ends (trap EXIT). The agent runs in the background because a shell runs
 * a trap only once its foreground command is over.
 */
export function pilotScript(runtime: PilotRuntime, agent: string[], workDir: string): string {
  const command = agent.map(shellWord).join(' ');
  if (runtime === 'native') return `exec ${command}`;
  const socket = shellWord(podmanSocket(workDir));
  return [
    "trap 'exit 143' TERM",
    `mkdir -p ${shellWord(workDir)} || exit 1`,
    `podman system service --time=0 unix://${socket} &`,
    'svc=$!',
    "trap 'kill $svc 2>/dev/null; wait $svc 2>/dev/null' EXIT",
    // Up to ~30 s for the service to answer (it checks its storage first); at once if it died.
    'i=0',
    `until podman --remote --url unix://${socket} version >/dev/null 2>&1; do`,
    `  if [ $i -ge 300 ] || ! kill -0 $svc 2>/dev/null; then echo "boxgrid pilot: podman system service did not answer at "${socket} >&2; exit 1; fi`,
    '  i=$((i+1)); sleep 0.1',
    'done',
    // Rootless Podman on cgroup v1 cannot limit a container or pause it: say so in the pilot's log.
    `if [ "$(podman --remote --url unix://${socket} info --format '{{.Host.Security.Rootless}} {{.Host.CgroupsVersion}}' 2>/dev/null)" = "true v1" ]; then`,
    '  echo "boxgrid pilot: warning: rootless Podman on cgroup v1 ignores the memory, CPU and pid limits of tasks (they share the job\'s) and cannot pause them for checkpoints" >&2',
    'fi',
    `${command} &`,
    'agent=$!',
    "trap 'kill -TERM $agent 2>/dev/null' TERM",
    // A trapped signal ends `wait` early: wait again until the agent has really ended.
    'wait $agent; rc=$?',
    'while kill -0 $agent 2>/dev/null; do wait $agent; rc=$?; done',
    'exit $rc',
  ].join('\n');
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
