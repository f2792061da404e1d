import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { Agent } from '../src/agent/agent.js';
import { enroll } from '../src/agent/host-credential.js';
import { TASK_UID } from '../src/agent/journal.js';
import { DockerRuntime } from '../src/agent/runtimes/docker-runtime.js';
import { BoxgridClient } from '../src/client/client.js';
import { onCleanup, round, startServerProcess, type Benchmark, type Field, type Fields } from './harness.js';

/** Tasks per timed run; BENCH_CONTAINERS_TASKS overrides. */
const TASKS = envInt('BENCH_CONTAINERS_TASKS', 100);
/** Containers at once, both ways; BENCH_CONTAINERS_PARALLEL overrides. */
const PARALLEL = envInt('BENCH_CONTAINERS_PARALLEL', 4);
/** The same image the test suites build from the host's static busybox (no registry is reachable here). */
const IMAGE = 'boxgrid-test/busybox:1';
const COMMAND = ['true'];
/** The app's size; the agent is given room for exactly PARALLEL of them. */
const APP_CORES = 0.5;
const APP_MEMORY_MIB = 64;
/** The server's agent clock: short, so that polling is not what is measured. */
const TIMING = { leaseSeconds: 60, heartbeatSeconds: 1, idlePollSeconds: 1, sweepSeconds: 1 };
const PROJECT = 'default';

const run = promisify(execFile);

/**
 * One agent running trivial-container tasks end to end through a real server, against plain
 * `docker run --rm` with the same parallelism, image, command and sandbox flags, on the same
 * engine, in one run.
 *
 * - Agent: the server runs in its own process (short heartbeat and idle poll); the agent runs
 *   in this process with the DockerRuntime, maxTasks = P and room for exactly P tasks. The
 *   clock runs from just before POSTing a batch of N jobs (`count` form) until GET of the batch
 *   (polled every 50 ms) shows all N succeeded: claim, staging, container, result on disk and
 *   report to the server are all inside it.
 * - Raw: P workers, each running `docker run --rm <the runtime's sandbox flags> IMAGE true`
 *   one after another until N have run in all.
 * - Engine API (context, not the target): the same P loops through dockerode with the exact
 *   config DockerRuntime.containerConfig makes, and only the calls a container needs (create,
 *   wait, start, inspect, remove): the floor the agent's own engine calls could reach. The
 *   docker CLI costs more per container than this (a process, an attach, a wait for removal).
 * - Every way warms up first (P containers each), so image and first-container costs are not
 *   counted on one side only.
 *
 * ratio = agentTasksPerSecond / rawTasksPerSecond.
 * overheadMsPerTask = (agentSeconds − rawSeconds) × P / N × 1000: the extra wall-clock time each
 * task holds one of the P slots for, compared with a plain `docker run --rm`.
 */
export const containersBenchmark: Benchmark = {
  name: 'containers',
  description:
    `${TASKS} trivial-container tasks (\`${COMMAND.join(' ')}\` in ${IMAGE}), ${PARALLEL} at once: one agent (DockerRuntime, maxTasks ${PARALLEL}) ` +
    `end to end through a server in its own process (submit a ${TASKS}-job batch until GET of the batch shows all succeeded; heartbeat and idle poll 1 s) ` +
    `vs ${PARALLEL} parallel loops of \`docker run --rm\` with the runtime's sandbox flags (network none, read-only root, tmpfs /tmp, no capabilities, no-new-privileges, ` +
    `memory/cpu/pids limits, user nobody, /in and /out bind mounts). P warm-up containers each way first; then raw, agent, Engine API in that order. ` +
    `ratio = agentTasksPerSecond / rawTasksPerSecond; overheadMsPerTask = (agentSeconds − rawSeconds) × P / N × 1000 (extra slot time per task; negative: the agent is faster). ` +
    `engineApi*: for context, the same ${PARALLEL} loops straight through the Engine API with DockerRuntime's own container config (create, wait, start, inspect, remove; no log or stats stream), ` +
    `engineApiRatio = agent / that. agentPhasesMs: wall-clock time of the agent's calls (server, journal, engine), per call and per task, during the timed agent run.`,
  targets: [{ field: 'ratio', op: '>=', value: 0.9, unit: '(agent / raw)' }],
  timeoutSeconds: 600,
  async run(log): Promise<Fields> {
    await checkEngine();
    const image = await ensureImage();
    const scratch = mkdtempSync(join(tmpdir(), 'boxgrid-bench-containers-'));
    const removeScratch = onCleanup(() => rmSync(scratch, { recursive: true, force: true }));
    const sandbox = sandboxFlags(scratch);

    const server = await startServerProcess({ timing: TIMING });
    let stopAgent: (() => Promise<void>) | null = null;
    try {
      const admin = new BoxgridClient({ url: server.url, token: server.adminToken });
      await admin.createApp(PROJECT, {
        name: 'bench-true', image, command: COMMAND, resources: { cores: APP_CORES, memoryMiB: APP_MEMORY_MIB, diskMiB: 100 }, maxAttempts: 1, maxRuntimeSeconds: 60,
      });
      const workDir = mkdtempSync(join(tmpdir(), 'boxgrid-bench-agent-'));
      onCleanup(() => rmSync(workDir, { recursive: true, force: true }));
      const capacity = { cores: APP_CORES * PARALLEL, memoryMiB: APP_MEMORY_MIB * PARALLEL, diskMiB: 100 * PARALLEL, gpus: 0 };
      const { token } = await admin.createEnrollToken({ uses: 1 });
      const credential = await enroll(workDir, server.url, token, { name: 'bench-host', resources: capacity, platform: 'linux/amd64' });
      const runtime = new DockerRuntime({ owner: `bench-${process.pid}` });
      const agent = new Agent(new BoxgridClient({ url: server.url, token: credential.token }), {
        workDir, capacity, runtimes: [{ kind: 'docker', runtime }], maxTasks: PARALLEL, onStop: 'wait',
        maxOutputBytes: 1024 * 1024, imageBudgetMiB: null, checkpointSeconds: 60, backoff: { minMs: 50, maxMs: 500 },
        log: (level, m) => {
          if (level !== 'info') log(`agent ${level}: ${m}`);
        },
      });
      const profile = new Profile();
      profile.instrument(agent, runtime);
      const stopper = new AbortController();
      const running = agent.run(stopper.signal);
      stopAgent = async () => {
        stopper.abort();
        await running;
      };

      // The Engine-API floor: what DockerRuntime asks of the engine, and nothing else.
      const engine = new Docker();
      const config = runtime.containerConfig({
        taskId: 0, jobId: 0, image, imageDigest: null, command: COMMAND, env: {}, resources: { cores: APP_CORES, memoryMiB: APP_MEMORY_MIB, diskMiB: 100, gpus: 0 },
        maxRuntimeSeconds: 60, inputsDir: join(scratch, 'in'), outputsDir: join(scratch, 'out'), checkpointDir: null, user: `${TASK_UID}:${TASK_UID}`,
      });
      config.Labels = { 'io.boxgrid.bench': 'engine-api' }; // not a task's: a restarted agent must not take it for its own
      const rawArgs = ['--rm', ...sandbox, image, ...COMMAND];

      // ── warm-up, every way ──
      await rawLoop(PARALLEL, PARALLEL, rawArgs);
      await agentBatch(admin, PARALLEL);
      await apiLoop(engine, PARALLEL, PARALLEL, config);
      log(`warmed up (${PARALLEL} containers each way)`);

      // ── timed: raw, agent, Engine API ──
      const rawSeconds = await rawLoop(TASKS, PARALLEL, rawArgs);
      log(`raw docker run --rm: ${TASKS} in ${rawSeconds.toFixed(2)} s (${(TASKS / rawSeconds).toFixed(2)}/s)`);
      profile.reset();
      const agentSeconds = await agentBatch(admin, TASKS);
      const phases = profile.summary(TASKS, agentSeconds, PARALLEL);
      log(`agent: ${TASKS} in ${agentSeconds.toFixed(2)} s (${(TASKS / agentSeconds).toFixed(2)}/s)`);
      const apiSeconds = await apiLoop(engine, TASKS, PARALLEL, config);
      log(`Engine API create/start/wait/inspect/remove: ${TASKS} in ${apiSeconds.toFixed(2)} s (${(TASKS / apiSeconds).toFixed(2)}/s)`);

      const agentTasksPerSecond = TASKS / agentSeconds;
      const rawTasksPerSecond = TASKS / rawSeconds;
      return {
        tasks: TASKS,
        parallel: PARALLEL,
        agentTasksPerSecond: round(agentTasksPerSecond, 2),
        rawTasksPerSecond: round(rawTasksPerSecond, 2),
        ratio: round(agentTasksPerSecond / rawTasksPerSecond, 3),
        overheadMsPerTask: Math.round(((agentSeconds - rawSeconds) * PARALLEL * 1000) / TASKS),
        agentSeconds: round(agentSeconds, 2),
        rawSeconds: round(rawSeconds, 2),
        engineApiTasksPerSecond: round(TASKS / apiSeconds, 2),
        engineApiRatio: round(apiSeconds / agentSeconds, 3),
        engineApiOverheadMsPerTask: Math.round(((agentSeconds - apiSeconds) * PARALLEL * 1000) / TASKS),
        agentPhasesMs: phases,
      };
    } finally {
      await stopAgent?.();
      await server.stop();
      removeScratch();
    }
  },
};

/** Submits `n` jobs of the benchmark app and waits for all of them to succeed; seconds from submit to seeing them done. */
async function agentBatch(admin: BoxgridClient, n: number): Promise<number> {
  const started = performance.now();
  const submitted = await admin.submitBatch(PROJECT, { app: 'bench-true', count: n });
  const batchId = submitted.batch!.id;
  for (;;) {
    const d = await admin.getBatch(PROJECT, batchId);
    if (d.done) {
      const seconds = (performance.now() - started) / 1000;
      if (d.counts.succeeded !== n) throw new Error(`batch ${batchId}: expected ${n} succeeded, got ${JSON.stringify(d.counts)}`);
      return seconds;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** `n` runs of `docker run ARGS` in `parallel` loops; seconds for all of them. */
function rawLoop(n: number, parallel: number, args: string[]): Promise<number> {
  return loops(n, parallel, () => dockerRun(args));
}

/**
 * `n` containers in `parallel` loops straight through the Engine API over one dockerode
 * handle, each as DockerRuntime runs one minus its log and stats streams: create, wait
 * (asked before start), start, inspect, remove.
 */
function apiLoop(docker: Docker, n: number, parallel: number, config: Docker.ContainerCreateOptions): Promise<number> {
  return loops(n, parallel, async () => {
    const c = await docker.createContainer(config);
    try {
      const waited = c.wait({ condition: 'next-exit' });
      await c.start();
      const { StatusCode } = (await waited) as { StatusCode: number };
      const state = (await c.inspect()).State;
      if (StatusCode !== 0 || state.ExitCode !== 0) throw new Error(`container exited ${state.ExitCode}`);
    } finally {
      await c.remove({ force: true, v: true });
    }
  });
}

async function loops(n: number, parallel: number, one: () => Promise<void>): Promise<number> {
  let next = 0;
  const started = performance.now();
  const worker = async (): Promise<void> => {
    while (next < n) {
      next++;
      await one();
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
  return (performance.now() - started) / 1000;
}

function dockerRun(args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn('docker', ['run', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`docker run exited ${code}: ${err.trim()}`))));
  });
}

/** What DockerRuntime.containerConfig asks of the engine for this app, as `docker run` flags. */
function sandboxFlags(scratch: string): string[] {
  const inputs = join(scratch, 'in');
  const outputs = join(scratch, 'out');
  mkdirSync(inputs, { mode: 0o755 });
  mkdirSync(outputs, { mode: 0o777 });
  const memory = `${APP_MEMORY_MIB}m`;
  return [
    '--network', 'none', '--read-only', '--tmpfs', '/tmp:rw,nosuid,nodev,size=64m', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges',
    '--memory', memory, '--memory-swap', memory, '--cpus', String(APP_CORES), '--pids-limit', '256', '--user', `${TASK_UID}:${TASK_UID}`,
    '--workdir', '/out', '-v', `${inputs}:/in:ro`, '-v', `${outputs}:/out:rw`, '--label', 'io.boxgrid.bench=raw',
  ];
}

async function checkEngine(): Promise<void> {
  try {
    await new Docker().ping();
  } catch (e) {
    throw new Error(`no Docker engine answers (${(e as Error).message}); start one with: dockerd --bridge=none --iptables=false --ip6tables=false`);
  }
}

/** The test suites' busybox image, built here from the host's static busybox if the engine lacks it. */
async function ensureImage(): Promise<string> {
  try {
    await new Docker().getImage(IMAGE).inspect();
    return IMAGE;
  } catch {
    // build it below
  }
  if (!existsSync('/bin/busybox')) throw new Error(`${IMAGE} is missing and /bin/busybox is not there to build it (apt-get install busybox-static)`);
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-image-'));
  try {
    await copyFile('/bin/busybox', join(dir, 'busybox'));
    await writeFile(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n');
    await run('docker', ['build', '-q', '-t', IMAGE, dir]);
    return IMAGE;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function envInt(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return Number.isInteger(v) && v > 0 ? v : fallback;
}

// ── where the agent's time goes ─────────────────────────────────────────────

type AnyFn = (...args: any[]) => any;

/**
 * Wall-clock time of every call the agent makes to the engine, the server and its journal,
 * measured by wrapping methods on this benchmark's own instances (the agent's private journal
 * and client, the runtime's private dockerode handle). A stream call (logs, stats) counts until
 * its stream closes. Nothing global is patched; a field that is not where this expects it is
 * simply not measured.
 */
class Profile {
  private calls = new Map<string, number[]>();

  reset(): void {
    this.calls.clear();
  }

  private record(name: string, ms: number): void {
    let list = this.calls.get(name);
    if (!list) this.calls.set(name, (list = []));
    list.push(ms);
  }

  /** Replaces `obj[method]` by a timed version; `after` may wrap the result (a stream, a container). */
  private wrap(obj: any, method: string, name: string, after?: (result: any, started: number) => any): void {
    const original = obj?.[method] as AnyFn | undefined;
    if (typeof original !== 'function') return;
    const self = this;
    obj[method] = function (this: unknown, ...args: unknown[]) {
      const started = performance.now();
      const result = original.apply(this, args);
      if (result && typeof result.then === 'function') {
        return result.then((value: unknown) => {
          if (after) return after(value, started);
          self.record(name, performance.now() - started);
          return value;
        }, (e: unknown) => {
          self.record(`${name} (failed)`, performance.now() - started);
          throw e;
        });
      }
      if (after) return after(result, started);
      self.record(name, performance.now() - started);
      return result;
    };
  }

  instrument(agent: Agent, runtime: DockerRuntime): void {
    const a = agent as any;
    this.wrap(a.client, 'requestWork', 'server: requestWork');
    this.wrap(a.client, 'heartbeat', 'server: heartbeat');
    this.wrap(a.client, 'reportTask', 'server: reportTask');
    this.wrap(a.journal, 'create', 'agent: stage (journal.create)');
    this.wrap(a.journal, 'saveResult', 'agent: journal.saveResult');
    this.wrap(a.journal, 'remove', 'agent: journal.remove');
    this.wrap(runtime, 'run', 'runtime.run (whole)');
    const docker = (runtime as any).docker;
    if (!docker) return;
    const untilClosed = (name: string) => (stream: Readable | Buffer, started: number): Readable | Buffer => {
      this.record(`${name} (answer)`, performance.now() - started);
      if (!Buffer.isBuffer(stream)) stream.once('close', () => this.record(`${name} (until closed)`, performance.now() - started));
      return stream;
    };
    const wrapContainer = (c: any): any => {
      if (c.__profiled) return c;
      c.__profiled = true;
      this.wrap(c, 'start', 'docker: start');
      this.wrap(c, 'wait', 'docker: wait (asked before start)');
      this.wrap(c, 'inspect', 'docker: container inspect');
      this.wrap(c, 'remove', 'docker: remove');
      this.wrap(c, 'logs', 'docker: logs', untilClosed('docker: logs'));
      this.wrap(c, 'stats', 'docker: stats', untilClosed('docker: stats'));
      return c;
    };
    const getContainer = docker.getContainer.bind(docker) as AnyFn;
    docker.getContainer = (id: string) => wrapContainer(getContainer(id));
    this.wrap(docker, 'createContainer', 'docker: create');
    const getImage = docker.getImage.bind(docker) as AnyFn;
    docker.getImage = (name: string) => {
      const img = getImage(name);
      this.wrap(img, 'inspect', 'docker: image inspect');
      return img;
    };
  }

  /** Per call name: calls, mean ms per call, and ms per task (total / tasks). */
  summary(tasks: number, agentSeconds: number, parallel: number): Record<string, Field> {
    const out: Record<string, Field> = {
      'slot time per task (agentSeconds × P / N)': { calls: tasks, meanMs: Math.round((agentSeconds * parallel * 1000) / tasks), msPerTask: Math.round((agentSeconds * parallel * 1000) / tasks) },
    };
    for (const [name, ms] of [...this.calls].sort(([a], [b]) => a.localeCompare(b))) {
      const total = ms.reduce((s, x) => s + x, 0);
      out[name] = { calls: ms.length, meanMs: round(total / ms.length, 1), msPerTask: round(total / tasks, 1) };
    }
    return out;
  }
}
