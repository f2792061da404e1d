/**
 * The native runtime: each task runs as a plain process of the agent's user, for trusted
 * machines that have no container engine (an HPC node, say). Opt-in: the agent uses it only
 * when started with native enabled, and only for apps that declare a native command.
 *
 * What it does, with bubblewrap (`bwrap`, used when installed and able to make a sandbox):
 * - new user, pid, network, ipc, uts and cgroup namespaces (`--unshare-all`): no network but a
 *   private loopback; the task sees only its own processes; no capabilities, no privilege gain
 *   (bwrap always sets no_new_privs), and the uid:gid of `spec.user` *inside* the sandbox (on
 *   the host every file it writes belongs to the agent's user: a user namespace maps one uid);
 * - a read-only root that holds only the host's /usr, /etc, the /bin, /sbin and /lib* links or
 *   directories, and the extra `readOnlyPaths`: not /home, /var, /run, nor the agent's work
 *   directory and its host credential (unless it lies under one of those); /etc can be read
 *   as the agent's user can read it. A fresh /proc; a minimal /dev (null, zero, random, tty…)
 *   that is read-only but for a small /dev/shm; a small private tmpfs at /tmp; inputs read-only
 *   at /in, outputs writable at /out (the working directory), the checkpoint directory
 *   writable at /checkpoint;
 * - a clean environment: PATH, HOME=/tmp, TMPDIR=/tmp, the job's env, BOXGRID_IN=/in,
 *   BOXGRID_OUT=/out and BOXGRID_CHECKPOINT=/checkpoint (when there is one);
 * - when the task's main process exits, when it is stopped, or when the agent dies, the pid
 *   namespace ends, which kills every process the task started, even daemonised ones.
 *
 * Without bubblewrap (not installed, cannot make namespaces here, or turned off): the command
 * runs directly, in the outputs directory, with the same clean environment but host paths
 * (BOXGRID_IN/OUT/CHECKPOINT name the host directories, HOME and TMPDIR a private scratch
 * directory), so one program works both ways. Nothing is isolated then: the task can read and
 * write whatever the agent's user can (the agent's own host credential among it: it could act
 * as the host), and use the network. Its processes are killed as a
 * process group (when it ends, is stopped, or the agent dies); one that leaves the group
 * (setsid, a daemon) escapes that kill.
 *
 * Limits, and what they are not:
 * - memory: RLIMIT_AS (`prlimit --as`), per process. Address space is cruder than a cgroup's
 *   memory limit: it counts reserved-but-unused mappings (thread stacks, malloc arenas; the JVM
 *   and Go runtimes reserve far more than they touch and may not start under a tight one), it
 *   does not add up the task's processes, and tmpfs files (/tmp, /dev/shm: at most 2 × tmpMiB,
 *   unbounded with a bwrap older than 0.7 or a setuid one, which refuse --size) are not in it.
 *   An allocation past it fails; the program then usually exits non-zero (or dies of SIGSEGV),
 *   which is reported as `failed` with that code: there is no reliable way to tell that the
 *   cause was memory, so `out_of_memory` is never reported (a cgroup, which needs systemd-run
 *   with delegation, is not assumed).
 * - CPU: none. `resources.cores` is only what the scheduler counts; the task can use every core.
 * - processes: none. RLIMIT_NPROC counts every process of the (host) user, not the task's, so it
 *   is no honest per-task limit; a fork bomb is not contained.
 * - disk: none beyond the size of /tmp; /out is the host's filesystem.
 * - run time: a timer kills the whole process group (SIGKILL), as does an abort.
 *
 * Usage: GNU time (`/usr/bin/time`, when installed) runs the command, waits for it, and reports
 * its rusage: cpuSeconds = user + system time of the command and of every descendant that was
 * waited for (a process orphaned by its parent is not counted), peakMemoryMiB = the largest peak
 * resident size of any *one* of those processes (that is what rusage keeps; not their sum). A
 * task that was killed (timeout, abort) takes GNU time with it, so its usage is null, as it is
 * without GNU time. The task inherits the file GNU time reports to (fd 3) and could write
 * to it: usage is the task's own account, good for accounting on a trusted host, not proof.
 */
import { execFile, spawn } from 'node:child_process';
import { access, constants, lstat, mkdir, mkdtemp, open, readFile, readlink, rm, stat } from 'node:fs/promises';
import { constants as os, tmpdir } from 'node:os';
import { delimiter, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { RuntimeProbe } from '../probe.js';
import { LOG_TAIL_BYTES, type TaskOutcome, type TaskRunResult, type TaskRunSpec, type TaskRuntime, type TaskUsage } from '../runtime.js';
import { TailBuffer } from '../tail-buffer.js';

const exec = promisify(execFile);

export interface NativeRuntimeOptions {
  /**
   * bubblewrap: a path or a name looked up in PATH. Undefined: `bwrap` when it is installed and
   * can make a sandbox here, otherwise tasks run unsandboxed (`sandbox()` says which and why).
   * A string: it must work, or every task ends in an agent error (never a silent downgrade).
   * Null: never sandbox.
   */
  bwrap?: string | null;
  /** Size of the sandbox's private /tmp and of its /dev/shm, MiB each (tmpfs: host memory). Default 64. */
  tmpMiB?: number;
  /** More host directories to show read-only, at the same path, inside the sandbox (/opt, a module tree…). */
  readOnlyPaths?: string[];
  /** GNU time, to measure usage; null to skip measuring. Default: /usr/bin/time when installed. */
  time?: string | null;
  /**
   * Where each task gets a private scratch directory (GNU time's report; HOME and TMPDIR when
   * unsandboxed), removed when the run ends. Default: the OS temp dir. One left by an agent
   * that was killed is not cleaned up; the agent's work dir is a better place.
   */
  scratchDir?: string;
}

/** Whether bubblewrap can sandbox tasks on this machine, and if not, why. */
export type BwrapCheck =
  /** `sizedTmpfs` false: bwrap older than 0.7, or setuid, which refuse --size: /tmp and /dev/shm are then unbounded. */
  | { usable: true; path: string; version: string; sizedTmpfs: boolean }
  | { usable: false; reason: string };

interface Setup {
  /** Why no task can run (a tool is missing, or the bwrap asked for does not work); null when they can. */
  error: string | null;
  bwrap: { path: string; version: string; sizedTmpfs: boolean } | null;
  /** Why tasks run unsandboxed, when they do. */
  unsandboxed: string | null;
  prlimit: string;
  setpriv: string;
  time: string | null;
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** Shown in the sandbox as the host has them: a symlink (merged /usr) or a read-only directory. */
const SYSTEM_LINKS = ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32'];
const SYSTEM_DIRS = ['/usr', '/etc'];
const NOBODY = 65534;
const USAGE_MARK = 'boxgrid-usage';
/** How long to wait for a task's output to drain after its processes were killed. */
const DRAIN_MS = 2000;

export class NativeRuntime implements TaskRuntime, RuntimeProbe {
  readonly name = 'native';
  private setupOnce: Promise<Setup> | undefined;

  constructor(private readonly opts: NativeRuntimeOptions = {}) {}

  /**
   * Whether `bwrap` (a path or a name in PATH) is installed and can make the sandbox tasks run
   * in: tried for real, with the same namespaces and mounts, because whether unprivileged user
   * namespaces are allowed is up to the kernel's configuration, not to the binary.
   */
  static async detect(bwrap = 'bwrap'): Promise<BwrapCheck> {
    const path = await which(bwrap);
    if (path === null) return { usable: false, reason: `${bwrap} is not installed (apt-get install bubblewrap)` };
    let version: string;
    try {
      version = (await exec(path, ['--version'], { timeout: 10_000 })).stdout.trim();
    } catch (e) {
      return { usable: false, reason: `${path} --version failed: ${firstLine(e)}` };
    }
    const dir = await mkdtemp(join(tmpdir(), 'boxgrid-bwrap-check-'));
    const spec = { inputsDir: dir, outputsDir: dir, checkpointDir: dir, env: {}, user: `${NOBODY}:${NOBODY}` };
    const attempt = async (tmpMiB: number | null): Promise<string | null> => {
      try {
        await exec(path, [...(await sandboxArgs(spec, tmpMiB, [])), '--', 'true'], { timeout: 10_000, env: {} });
        return null;
      } catch (e) {
        return firstLine(e);
      }
    };
    try {
      const sized = await attempt(1);
      if (sized === null) return { usable: true, path, version, sizedTmpfs: true };
      // --size came with bubblewrap 0.7 and is refused in setuid mode; the rest is older.
      const unsized = /size/i.test(sized) ? await attempt(null) : sized;
      if (unsized === null) return { usable: true, path, version, sizedTmpfs: false };
      const hint = /namespace|permission|operation not permitted/i.test(unsized)
        ? ' (are unprivileged user namespaces disabled? see sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, kernel.apparmor_restrict_unprivileged_userns)'
        : '';
      return { usable: false, reason: `${path} cannot make a sandbox here: ${unsized}${hint}` };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /** Whether tasks run sandboxed, and how or why not. Null `error` when tasks can run at all. */
  async sandbox(): Promise<{ sandboxed: boolean; detail: string; error: string | null }> {
    const s = await this.setup();
    const detail = s.bwrap
      ? `${s.bwrap.version} at ${s.bwrap.path}${s.bwrap.sizedTmpfs ? '' : ' (it cannot size /tmp: unbounded)'}`
      : `not sandboxed: ${s.unsandboxed ?? s.error}`;
    return { sandboxed: s.bwrap !== null, detail, error: s.error };
  }

  /** For the host probe: bubblewrap's version, "unsandboxed", or null when no task can run here. */
  async version(): Promise<string | null> {
    const s = await this.setup();
    if (s.error !== null) return null;
    return s.bwrap ? s.bwrap.version : 'unsandboxed';
  }

  /** A native runtime has no images. */
  async images(): Promise<string[]> {
    return [];
  }

  async run(spec: TaskRunSpec, signal?: AbortSignal): Promise<TaskRunResult> {
    const started = Date.now();
    const end = (outcome: TaskOutcome, logTail = '', usage: TaskUsage | null = null): TaskRunResult => ({ outcome, logTail, durationMs: Date.now() - started, usage });
    let scratch: string | undefined;
    try {
      const setup = await this.setup();
      if (setup.error !== null) return end({ kind: 'agent_error', message: setup.error });
      if (spec.command.length === 0) return end({ kind: 'agent_error', message: 'the task has no command' });
      if (signal?.aborted) return end({ kind: 'aborted' });
      // Relative directories would be taken from the wrong place (the sandbox's cwd is not ours).
      spec = { ...spec, inputsDir: resolve(spec.inputsDir), outputsDir: resolve(spec.outputsDir), checkpointDir: spec.checkpointDir && resolve(spec.checkpointDir) };
      // The agent clears its scratch dir at start (recovery): it may not exist yet.
      const scratchRoot = this.opts.scratchDir ?? tmpdir();
      await mkdir(scratchRoot, { recursive: true, mode: 0o700 });
      scratch = await mkdtemp(join(scratchRoot, `boxgrid-native-${spec.taskId}-`));
      const { argv, cwd, env } = await this.invocation(setup, spec, scratch);
      // GNU time reports on fd 3, a file we read afterwards (a regular file: time re-opens
      // /proc/self/fd/3, which works across the sandbox for a file but not for node's sockets).
      const reportFile = join(scratch, 'usage');
      const report = await open(reportFile, 'w', 0o600);
      let ran: Execution;
      try {
        ran = await execute(argv, cwd, env, report.fd, setup.bwrap !== null, spec, signal);
      } finally {
        await report.close();
      }
      if (ran.spawnError !== null) return end({ kind: 'agent_error', message: `cannot start the task: ${ran.spawnError}` }, ran.logTail);
      if (ran.stopped === 'timeout') return end({ kind: 'timeout', limitSeconds: spec.maxRuntimeSeconds }, ran.logTail);
      if (ran.stopped === 'aborted') return end({ kind: 'aborted' }, ran.logTail);
      const usage = setup.time ? parseUsage(await readFile(reportFile, 'utf8')) : null;
      if (setup.bwrap && ran.exitCode === 1) {
        // bwrap reports its own failures as exit 1 with a last stderr line "bwrap: …" (the
        // task could print the same, but then it asked for it). Not finding or not being
        // allowed to run the program is the task's fault, as a shell would say: 127 and 126.
        const said = lastLine(ran.stderrTail);
        if (said.startsWith('bwrap: ')) {
          if (/^bwrap: execvp .*: No such file or directory$/.test(said)) return end({ kind: 'failed', exitCode: 127 }, ran.logTail, usage);
          if (/^bwrap: execvp .*: Permission denied$/.test(said)) return end({ kind: 'failed', exitCode: 126 }, ran.logTail, usage);
          return end({ kind: 'agent_error', message: `the sandbox failed: ${said}` }, ran.logTail);
        }
      }
      return end(ran.exitCode === 0 ? { kind: 'succeeded' } : { kind: 'failed', exitCode: ran.exitCode }, ran.logTail, usage);
    } catch (e) {
      return end({ kind: 'agent_error', message: (e as Error).message });
    } finally {
      if (scratch) await rm(scratch, { recursive: true, force: true }).catch(() => undefined);
    }
  }

  /**
   * None: a native task is a child of the agent and does not outlive it. Its first process has
   * a parent-death signal (set by setpriv). Sandboxed, that is SIGKILL for bwrap, whose death
   * kills the sandbox's init (--die-with-parent), whose death kills everything in its pid
   * namespace. Unsandboxed, it is SIGTERM for a watchdog shell that SIGKILLs the task's process
   * group (what left the group survives). So there is nothing to re-attach to after a restart.
   */
  async leftovers(): Promise<number[]> {
    return [];
  }

  async reattach(_spec: TaskRunSpec, _signal?: AbortSignal): Promise<TaskRunResult> {
    return { outcome: { kind: 'agent_error', message: 'native tasks do not survive an agent restart' }, logTail: '', durationMs: 0, usage: null };
  }

  /** Nothing to remove: a task's scratch directory goes when its run ends. */
  async remove(_taskId: number): Promise<void> {}

  private setup(): Promise<Setup> {
    this.setupOnce ??= this.findTools();
    return this.setupOnce;
  }

  private async findTools(): Promise<Setup> {
    const [prlimit, setpriv] = await Promise.all([which('prlimit'), which('setpriv')]);
    const time = this.opts.time === null ? null : await which(this.opts.time ?? '/usr/bin/time');
    const base = { prlimit: prlimit ?? '', setpriv: setpriv ?? '', time };
    // Both are util-linux; without them there is no memory limit, and tasks could outlive the agent.
    const missingTool = prlimit === null ? 'prlimit' : setpriv === null ? 'setpriv' : null;
    if (missingTool !== null) {
      return { ...base, error: `${missingTool} is not installed (util-linux): the native runtime needs it`, bwrap: null, unsandboxed: null };
    }
    if (this.opts.bwrap === null) return { ...base, error: null, bwrap: null, unsandboxed: 'turned off (bwrap: null)' };
    const check = await NativeRuntime.detect(this.opts.bwrap ?? 'bwrap');
    if (check.usable) return { ...base, error: null, bwrap: { path: check.path, version: check.version, sizedTmpfs: check.sizedTmpfs }, unsandboxed: null };
    if (this.opts.bwrap !== undefined) return { ...base, error: check.reason, bwrap: null, unsandboxed: null };
    return { ...base, error: null, bwrap: null, unsandboxed: check.reason };
  }

  /**
   * The process chain (each link exec's the next, but for the forks noted):
   * sandboxed:   setpriv (SIGKILL when the agent dies) → prlimit (memory) → bwrap → GNU time
   *              (forks) → the command. When bwrap dies its sandbox's init dies (--die-with-parent),
   *              and with it everything in the pid namespace.
   * unsandboxed: setpriv (SIGTERM when the agent dies) → sh, a watchdog that then SIGKILLs the
   *              task's process group (forks) → GNU time (forks) → prlimit → the command.
   * GNU time runs inside the sandbox because bwrap exits as soon as it learns the command's
   * status, without waiting for the sandbox's init, so the rusage of what ran inside never
   * reaches a time outside it. It writes its figures to fd 3, a file outside (none is bound in).
   */
  private async invocation(setup: Setup, spec: TaskRunSpec, scratch: string): Promise<{ argv: string[]; cwd: string; env: Record<string, string> }> {
    const memoryBytes = Math.max(1, Math.round(spec.resources.memoryMiB)) * 1024 * 1024;
    const limit = [setup.prlimit, `--as=${memoryBytes}`, '--'];
    const measure = setup.time ? [setup.time, '-o', '/proc/self/fd/3', '-f', `${USAGE_MARK} %U %S %M`, '--'] : [];
    if (setup.bwrap) {
      const extra = setup.time && !setup.time.startsWith('/usr/') ? [setup.time] : [];
      const sandbox = await sandboxArgs(spec, setup.bwrap.sizedTmpfs ? (this.opts.tmpMiB ?? 64) : null, [...(this.opts.readOnlyPaths ?? []), ...extra]);
      // bwrap itself needs no environment: it clears it and sets the task's (see sandboxArgs).
      const argv = [setup.setpriv, '--pdeathsig', 'KILL', '--', ...limit, setup.bwrap.path, ...sandbox, '--json-status-fd', '4', '--', ...measure, ...spec.command];
      return { argv, cwd: scratch, env: { PATH: DEFAULT_PATH } };
    }
    const home = join(scratch, 'home');
    await mkdir(home, { mode: 0o700 });
    const env = taskEnv(spec, home, { in: spec.inputsDir, out: spec.outputsDir, checkpoint: spec.checkpointDir });
    const argv = [setup.setpriv, '--pdeathsig', 'TERM', '--', '/bin/sh', '-c', WATCHDOG, 'boxgrid-task', ...measure, ...limit, ...spec.command];
    return { argv, cwd: spec.outputsDir, env };
  }
}

/**
 * Unsandboxed, the task's first process: runs the rest in the background and waits, so that a
 * SIGTERM (the agent died: setpriv's parent-death signal) can kill the task's whole process
 * group, which nothing else would once the agent is gone. Its exit status is the task's. (As
 * any shell does for a background command, it starts the task with SIGINT and SIGQUIT ignored.)
 */
const WATCHDOG = "trap 'kill -KILL 0' TERM; \"$@\" & wait $!";

/** The task's environment: sane defaults, then the job's, then where its directories are. */
function taskEnv(spec: Pick<TaskRunSpec, 'env'>, home: string, dirs: { in: string; out: string; checkpoint: string | null }): Record<string, string> {
  const env: Record<string, string> = { PATH: DEFAULT_PATH, HOME: home, TMPDIR: home, LANG: 'C.UTF-8', ...spec.env };
  env.BOXGRID_IN = dirs.in;
  env.BOXGRID_OUT = dirs.out;
  if (dirs.checkpoint !== null) env.BOXGRID_CHECKPOINT = dirs.checkpoint;
  else delete env.BOXGRID_CHECKPOINT;
  return env;
}

/** bwrap's arguments for a task; `tmpMiB` null leaves /tmp and /dev/shm unsized (see BwrapCheck). */
async function sandboxArgs(spec: Pick<TaskRunSpec, 'inputsDir' | 'outputsDir' | 'checkpointDir' | 'env' | 'user'>, tmpMiB: number | null, readOnlyPaths: string[]): Promise<string[]> {
  const [uid, gid] = parseUser(spec.user);
  const size = tmpMiB === null ? [] : ['--size', String(Math.max(1, Math.round(tmpMiB)) * 1024 * 1024)];
  const args = [
    '--unshare-all', '--unshare-user', '--uid', String(uid), '--gid', String(gid),
    '--cap-drop', 'ALL', // only matters when the agent runs as root, which keeps capabilities otherwise
    '--die-with-parent', '--new-session', '--clearenv',
  ];
  const env = taskEnv(spec, '/tmp', { in: '/in', out: '/out', checkpoint: spec.checkpointDir === null ? null : '/checkpoint' });
  for (const [k, v] of Object.entries(env)) args.push('--setenv', k, v);
  for (const dir of [...SYSTEM_DIRS, ...readOnlyPaths]) args.push('--ro-bind', dir, dir);
  for (const link of SYSTEM_LINKS) {
    const kind = await lstat(link).catch(() => null);
    if (kind?.isSymbolicLink()) args.push('--symlink', await readlink(link), link);
    else if (kind?.isDirectory()) args.push('--ro-bind', link, link);
  }
  args.push(
    '--proc', '/proc',
    '--dev', '/dev', ...size, '--tmpfs', '/dev/shm', '--remount-ro', '/dev',
    ...size, '--tmpfs', '/tmp',
    '--ro-bind', spec.inputsDir, '/in',
    '--bind', spec.outputsDir, '/out',
  );
  if (spec.checkpointDir !== null) args.push('--bind', spec.checkpointDir, '/checkpoint');
  args.push('--remount-ro', '/', '--chdir', '/out');
  return args;
}

/** "uid[:gid]" in numbers; anything else (a user name) is nobody, as Docker's default is. */
function parseUser(user: string): [number, number] {
  const m = /^(\d+)(?::(\d+))?$/.exec(user.trim());
  if (!m) return [NOBODY, NOBODY];
  const uid = Number(m[1]);
  return [uid, m[2] === undefined ? uid : Number(m[2])];
}

interface Execution {
  /** The exit code, or 128 + the signal's number when a signal ended it (as a shell reports it). */
  exitCode: number;
  stopped: 'timeout' | 'aborted' | null;
  spawnError: string | null;
  logTail: string;
  /** The end of stderr alone, to recognise bwrap's own complaints. */
  stderrTail: string;
}

/**
 * Runs argv as the leader of a new process group, which the timer and an abort kill whole, as
 * is whatever the main process leaves running when it ends (a container's processes go with its
 * init too). With `sandboxed`, bwrap reports its sandbox's init on fd 4 (--json-status-fd), and
 * the run ends only once that init is gone: the kernel kills the rest of the pid namespace
 * before it lets the init go, so nothing of the task can still write to /out afterwards.
 * (Unsandboxed, the group is sent SIGKILL, which no process survives, but may still be
 * finishing dying when this returns.)
 */
async function execute(argv: string[], cwd: string, env: Record<string, string>, fd3: number, sandboxed: boolean, spec: TaskRunSpec, signal?: AbortSignal): Promise<Execution> {
  const tail = new TailBuffer(LOG_TAIL_BYTES);
  const errTail = new TailBuffer(4096);
  const [file, ...args] = argv as [string, ...string[]];
  const child = spawn(file, args, { cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe', fd3, sandboxed ? 'pipe' : 'ignore'] });
  const stdout = child.stdout!;
  const stderr = child.stderr!;
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null } | { error: Error }>((resolve) => {
    child.on('exit', (code, sig) => resolve({ code, signal: sig }));
    child.on('error', (error) => resolve({ error })); // only spawn failures: kills go through process.kill
  });
  const closed = new Promise<void>((resolve) => child.on('close', () => resolve()));
  // The sandbox's init, once bwrap has said (or null once its status stream has ended without it).
  let sandboxInit: number | null = null;
  const initKnown = new Promise<void>((resolve) => {
    const statusStream = child.stdio[4];
    if (!statusStream) return resolve();
    let status = '';
    statusStream.on('data', (c: Buffer) => {
      status += c.toString();
      sandboxInit ??= Number(/"child-pid": *(\d+)/.exec(status)?.[1]) || null;
      if (sandboxInit !== null) resolve();
    });
    statusStream.on('close', () => resolve());
  });
  const onChunk = (chunk: Buffer, isErr: boolean): void => {
    tail.push(chunk);
    if (isErr) errTail.push(chunk);
    try {
      spec.onOutput?.(chunk);
    } catch {
      // A failing listener must not end the task.
    }
  };
  stdout.on('data', (c: Buffer) => onChunk(c, false));
  stderr.on('data', (c: Buffer) => onChunk(c, true));

  let stopped: Execution['stopped'] = null;
  let ended = false;
  const killGroup = (): void => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // ESRCH: the group is already gone.
    }
  };
  const stop = (reason: 'timeout' | 'aborted'): void => {
    if (stopped !== null || ended) return;
    stopped = reason;
    killGroup();
  };
  // setTimeout holds at most 2^31-1 ms (~24.8 days); a longer limit is cut to that.
  const timer = setTimeout(() => stop('timeout'), Math.min(spec.maxRuntimeSeconds * 1000, 2 ** 31 - 1));
  const onAbort = (): void => stop('aborted');
  signal?.addEventListener('abort', onAbort, { once: true });
  if (signal?.aborted) onAbort();
  try {
    const exit = await exited;
    ended = true;
    killGroup();
    if ('error' in exit) return { exitCode: -1, stopped, spawnError: exit.error.message, logTail: tail.text(), stderrTail: errTail.text() };
    const deadline = Date.now() + DRAIN_MS;
    if (sandboxed) await Promise.race([initKnown, new Promise((r) => setTimeout(r, DRAIN_MS).unref())]);
    if (sandboxInit !== null) {
      // Its parent (bwrap) is gone, so we cannot wait for it: look until it has ended (a zombie
      // has) or is no longer there. Takes a few ms, as the kernel kills the namespace.
      while (Date.now() < deadline && (await running(sandboxInit))) await new Promise((r) => setTimeout(r, 5));
    }
    // Output ends when the last holder of the pipes is gone; one that escaped the group (setsid,
    // unsandboxed) could hold them for ever, so wait only so long.
    await Promise.race([closed, new Promise((r) => setTimeout(r, Math.max(0, deadline - Date.now())).unref())]);
    const exitCode = exit.code ?? (exit.signal ? 128 + (os.signals[exit.signal] ?? 0) : -1);
    return { exitCode, stopped, spawnError: null, logTail: tail.text(), stderrTail: errTail.text() };
  } finally {
    clearTimeout(timer);
    signal?.removeEventListener('abort', onAbort);
    stdout.destroy();
    stderr.destroy();
    child.stdio[4]?.destroy();
  }
}

/** Whether a process is there and has not ended (a zombie has ended). */
async function running(pid: number): Promise<boolean> {
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** GNU time's line: "boxgrid-usage <user s> <system s> <max RSS KiB>"; null when absent. */
function parseUsage(text: string): TaskUsage | null {
  const m = new RegExp(`^${USAGE_MARK} ([\\d.]+) ([\\d.]+) (\\d+)$`, 'm').exec(text);
  if (!m) return null;
  return { cpuSeconds: Math.round((Number(m[1]) + Number(m[2])) * 100) / 100, peakMemoryMiB: Math.round((Number(m[3]) / 1024) * 10) / 10 };
}

/** A command's path: as given when it holds a slash, else looked up in PATH; null when not executable. */
async function which(command: string): Promise<string | null> {
  const candidates = command.includes('/') ? [command] : (process.env.PATH ?? DEFAULT_PATH).split(delimiter).concat(DEFAULT_PATH.split(':')).filter(Boolean).map((d) => join(d, command));
  for (const c of candidates) {
    try {
      await access(c, constants.X_OK);
      if ((await stat(c)).isFile()) return c;
    } catch {
      // next
    }
  }
  return null;
}

function lastLine(text: string): string {
  const lines = text.trimEnd().split('\n');
  return lines[lines.length - 1] ?? '';
}

function firstLine(e: unknown): string {
  const err = e as { stderr?: string; message?: string };
  const text = (err.stderr && err.stderr.trim()) || err.message || String(e);
  return text.split('\n')[0] ?? text;
}
