import type { Command } from 'commander';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type { BoxgridClient } from '../../client/client.js';
import { resultTask } from '../../client/result-task.js';
import type { JobView, TaskView } from '../../client/types.js';
import type { AgentOptions } from '../../agent/agent.js';
import type { CliContext } from '../context.js';
import { CliExit, parseNumber } from '../output.js';
import { summarize, watchBatch } from './watch.js';
import { assemble, parseTile, TILE_FILE, TILE_PROGRAM } from '../../demo/mandelbrot.js';
import { encodePng } from '../../demo/png.js';

interface DemoFlags {
  data?: string;
  out?: string;
  tiles: string;
  tileSize: string;
  iterations: string;
  docker: boolean;
  dockerSocket?: string;
  keep?: boolean;
}

const PROJECT = 'default';
const APP = 'mandelbrot';
/** The app `--keep` adds for exploring: `node -e SCRIPT ARGS…`. */
const NODE_APP = 'node';

/** What the demo writes next to the picture (summary.json), and prints with --json. */
export interface DemoSummary {
  app: string;
  runtime: 'docker' | 'native';
  /** The demo image (docker), or the node binary that ran the tiles (native). */
  image: string | null;
  picture: { path: string; width: number; height: number; tiles: number; tileSize: number; iterations: number };
  tasks: { total: number; succeeded: number; failed: number; cancelled: number };
  hosts: Array<{ id: number; name: string; tasks: number }>;
  /** From submitting the batch to its last job ending. */
  wallSeconds: number;
  tasksPerSecond: number;
  /** How long one task ran, as its agent measured it (start of the container or process to its end). */
  perTaskSeconds: { mean: number; median: number; min: number; max: number };
  /** Output bytes downloaded, each file checked against its sha256. */
  downloadedBytes: number;
  server: string;
  dashboard: string;
  dataDir: string;
  /** False when the data dir was a temporary one the demo removed at its end. */
  dataKept: boolean;
  outputDir: string;
}

/**
 * The platform tour: a server and an agent in this process on a fresh data dir, a real science
 * app (Mandelbrot tiles, in a demo image built here with no registry, or natively when no
 * container engine answers), a parameter sweep of tiles with a progress bar, the outputs
 * downloaded and assembled into mandelbrot.png, and a summary.
 */
export function registerDemo(program: Command, ctx: CliContext): void {
  program
    .command('demo')
    .description('the tour: a throw-away server and agent compute the Mandelbrot set as a sweep of tiles, and assemble the picture')
    .option('--data <dir>', 'data dir for the server and agent (default: a fresh temporary one, removed at the end)')
    .option('--out <dir>', 'where mandelbrot.png and summary.json go', 'boxgrid-demo-output')
    .option('--tiles <n>', 'tiles per side: n × n tasks', '10')
    .option('--tile-size <px>', 'pixels per tile side', '64')
    .option('--iterations <n>', 'most iterations per point', '256')
    .option('--no-docker', 'run the tiles on the native runtime even when a container engine answers')
    .option('--docker-socket <path>', 'Docker Engine API socket (default: DOCKER_HOST or /var/run/docker.sock)')
    .option('--keep', 'keep the server and agent running afterwards, to explore with other commands (Ctrl-C stops)')
    .action(async (o: DemoFlags) => {
      const json = ctx.globals().json === true;
      const grid = intIn(o.tiles, '--tiles', 1, 64);
      const size = intIn(o.tileSize, '--tile-size', 4, 1024);
      const iterations = intIn(o.iterations, '--iterations', 1, 100_000);
      const { tiles: _t, tileSize: _s, iterations: _i, ...rest } = o;
      await runDemo({ ...rest, grid, size, iterations, json });
    });
}

function intIn(text: string, flag: string, min: number, max: number): number {
  const n = parseNumber(text, flag);
  if (!Number.isInteger(n) || n < min || n > max) throw new CliExit(2, `error: ${flag} must be a whole number from ${min} to ${max}`);
  return n;
}

type DemoRun = Omit<DemoFlags, 'tiles' | 'tileSize' | 'iterations'> & { grid: number; size: number; iterations: number; json: boolean };

async function runDemo(o: DemoRun): Promise<void> {
  const t0 = performance.now();
  // With --json, stdout carries the summary alone; the tour goes to stderr.
  const say = (s: string) => (o.json ? process.stderr : process.stdout).write(s + '\n');
  const ownData = o.data === undefined;
  const dataDir = ownData ? await mkdtemp(join(tmpdir(), 'boxgrid-demo-')) : resolve(o.data!);
  const outDir = resolve(o.out ?? 'boxgrid-demo-output');
  const serverDir = join(dataDir, 'server');
  const agentDir = join(dataDir, 'agent');
  await mkdir(dataDir, { recursive: true });

  // Loaded on demand: the server's and agent's dependencies would slow every other command's start.
  const { startServer } = await import('../../server/runtime.js');
  const { BoxgridClient } = await import('../../client/client.js');
  const { Agent } = await import('../../agent/agent.js');
  const { DockerRuntime } = await import('../../agent/runtimes/docker-runtime.js');
  const { NativeRuntime } = await import('../../agent/runtimes/native-runtime.js');
  const { probeHost } = await import('../../agent/probe.js');
  const { enroll } = await import('../../agent/host-credential.js');
  const { parseToken } = await import('../../service/credentials.js');

  // ── the runtime: containers when an engine answers (the image built here), else native ──
  const socket = o.dockerSocket ? { socketPath: o.dockerSocket } : {};
  const where = o.dockerSocket ?? process.env.DOCKER_HOST ?? '/var/run/docker.sock';
  let engine: string | null = null;
  let image: string | null = null;
  if (!o.docker) {
    say('--no-docker: the tiles run on the native runtime, as processes of this machine\'s node');
  } else {
    engine = await new DockerRuntime(socket).version();
    if (engine === null) {
      say(`no container engine answers at ${where}, so the demo runs natively instead (for containers, start one: ` +
        '`sudo systemctl start docker`, or `sudo dockerd --bridge=none --iptables=false`, or point --docker-socket at one)');
    } else {
      const { ensureDemoImage } = await import('../../demo/image.js');
      const { default: Docker } = await import('dockerode');
      try {
        const built = await ensureDemoImage(new Docker(o.dockerSocket ? { socketPath: o.dockerSocket } : undefined), await packageVersion());
        image = built.tag;
        say(built.built
          ? `0. built the demo image ${built.tag} in ${built.seconds.toFixed(1)} s, with no registry: FROM scratch, this machine's node ${process.version} and the ${built.libraries} libraries ldd lists for it, and tile.js`
          : `0. the demo image ${built.tag} is already here (built by an earlier demo from this machine's node ${process.version})`);
      } catch (e) {
        engine = null;
        say(`could not build the demo image on the engine at ${where} (${firstLine(e)}), so the demo runs natively instead`);
      }
    }
  }
  const runtime: 'docker' | 'native' = engine !== null && image !== null ? 'docker' : 'native';

  // ── the server ──
  const server = await startServer({
    dataDir: serverDir, host: '127.0.0.1', port: 0,
    // Idle agents ask again within 1-3 s, so work submitted while exploring (--keep) starts soon.
    timing: { idlePollSeconds: 2, heartbeatSeconds: 5 },
  });
  const token = server.adminToken;
  if (!token) {
    await server.close();
    throw new CliExit(1, `error: ${serverDir} already holds a boxgrid server's data; give an empty --data dir`);
  }
  const dashboard = `${server.url}/dashboard`;
  const client = new BoxgridClient({ url: server.url, token });
  const agentStop = new AbortController();
  let agentRun: Promise<void> | null = null;
  let agentLog: ReturnType<typeof createWriteStream> | null = null;
  let closed = false;
  const shutdown = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    agentStop.abort();
    await agentRun?.catch(() => undefined);
    await server.close();
    if (agentLog) await new Promise<void>((r) => agentLog!.end(r));
  };
  const interrupted = (): void => {
    process.stderr.write('\ninterrupted: stopping the agent (its tasks go back to the queue) and the server\n');
    void shutdown().finally(() => process.exit(130));
  };
  process.once('SIGINT', interrupted);
  process.once('SIGTERM', interrupted);

  try {
    say(`1. started a server at ${server.url} on ${serverDir}; watch the run at ${dashboard} (sign in with the token in ${join(serverDir, 'admin.token')})`);

    // ── the app and the sweep (submitted before the agent starts, so its first request finds work) ──
    const memoryMiB = runtime === 'native' ? 1024 : 128; // see nativeCommand below
    const app = await client.createApp(PROJECT, {
      name: APP,
      description: 'one tile of the Mandelbrot set per job: escape-time iterations of z² + c',
      // Natively the image is not used (and not built); an app names one all the same.
      image: image ?? `${(await import('../../demo/image.js')).DEMO_REPOSITORY}:${await packageVersion()}`,
      command: ['node', '/app/tile.js'],
      // On the native runtime: the same program, run by this machine's node. Its memory limit
      // is on address space (RLIMIT_AS), and node reserves about 1 GiB of it at start, hence
      // the larger size when the tiles run natively.
      nativeCommand: [process.execPath, '-e', TILE_PROGRAM, '--', 'tile.js'],
      resources: { cores: 0.5, memoryMiB },
      maxRuntimeSeconds: 120,
      maxAttempts: 3,
    });
    say(`2. registered the app ${app.name} v${app.version}: ${runtime === 'docker' ? `image ${app.image}, ` : 'native command: node tile.js, '}` +
      `${app.resources.cores} core and ${app.resources.memoryMiB} MiB per task`);
    const submitted = performance.now();
    const sub = await client.submitBatch(PROJECT, {
      app: app.name,
      template: { args: ['{x}', '{y}', String(o.grid), String(o.size), String(o.iterations)] },
      sweep: { x: { from: 0, to: o.grid - 1 }, y: { from: 0, to: o.grid - 1 } },
      labels: { demo: 'mandelbrot' },
    });
    const batchId = sub.batch!.id;
    say(`3. submitted a ${o.grid} × ${o.grid} sweep of tiles (${o.size}×${o.size} px, up to ${o.iterations} iterations a point) as batch ${batchId}: ${sub.jobCount} jobs`);

    // ── the agent, as `boxgrid agent` builds it, in this process ──
    await mkdir(agentDir, { recursive: true, mode: 0o700 });
    const docker = runtime === 'docker' ? new DockerRuntime(socket) : null;
    const nativeOpts = { scratchDir: join(agentDir, 'scratch'), readOnlyPaths: nodeTree() };
    const probe = await probeHost(agentDir, docker ?? new NativeRuntime(nativeOpts));
    const capacity = { cores: probe.cores, memoryMiB: Math.floor(probe.memoryMiB * 0.8), diskMiB: Math.floor(probe.diskFreeMiB * 0.8), gpus: 0 };
    const { token: enrollToken } = await client.createEnrollToken({ uses: 1 });
    const credential = await enroll(agentDir, server.url, enrollToken, { name: `${hostname()}-demo`, resources: capacity, platform: probe.platform });
    const owner = parseToken(credential.token)?.id ?? `host-${credential.hostId}`;
    let runtimeDetail: string;
    let runtimes: AgentOptions['runtimes'];
    if (runtime === 'docker') {
      runtimes = [{ kind: 'docker' as const, runtime: new DockerRuntime({ ...socket, stateFile: join(agentDir, 'images.json'), owner }) }];
      runtimeDetail = `containers on Docker ${engine} (no network, read-only root, as nobody)`;
    } else {
      const native = new NativeRuntime(nativeOpts);
      const sandbox = await native.sandbox();
      if (sandbox.error) throw new CliExit(1, `error: the native runtime cannot run tasks here: ${sandbox.error}`);
      runtimes = [{ kind: 'native' as const, runtime: native }];
      runtimeDetail = `native processes (${sandbox.sandboxed ? `sandboxed by ${sandbox.detail}` : sandbox.detail})`;
    }
    agentLog = createWriteStream(join(dataDir, 'agent.log'), { flags: 'a' });
    const agent = new Agent(new BoxgridClient({ url: credential.server, token: credential.token }), {
      workDir: agentDir, capacity, runtimes,
      // Tasks of half a core: two per core, which keeps the cores busy while containers start.
      maxTasks: Math.max(2, Math.floor(capacity.cores * 2)),
      onStop: 'release', maxOutputBytes: 64 * 2 ** 20, imageBudgetMiB: null, checkpointSeconds: 600,
      backoff: { minMs: 500, maxMs: 5000 }, images: probe.images,
      log: (level, message) => agentLog?.write(`${new Date().toISOString()} ${level} ${message}\n`),
    });
    agentRun = agent.run(agentStop.signal);
    say(`4. started an agent in this process: host ${credential.hostId} (${credential.name}), ${capacity.cores} cores, ` +
      `up to ${Math.max(2, Math.floor(capacity.cores * 2))} tasks at once, as ${runtimeDetail}; its log: ${join(dataDir, 'agent.log')}`);

    // ── progress, then the outputs ──
    const done = await watchBatch(client, PROJECT, batchId, { pollMs: 500 });
    const wallSeconds = (performance.now() - submitted) / 1000;
    say(`5. batch ${batchId} done in ${wallSeconds.toFixed(1)} s (${(done.batch.size / wallSeconds).toFixed(1)} tasks/s): ${summarize(done.counts)}`);

    const jobs = await allJobs(client, batchId);
    const hostNames = new Map((await client.listHosts()).hosts.map((h) => [h.id, h.name]));
    const tiles = new Map<string, Uint8Array>();
    const durations: number[] = [];
    const perHost = new Map<number, number>();
    let downloaded = 0;
    const problems: string[] = [];
    await eachLimited(jobs, 8, async (job) => {
      const { tasks } = await client.getJob(PROJECT, job.id);
      const task = resultTask(job, tasks) ?? tasks.at(-1);
      if (task) {
        perHost.set(task.hostId, (perHost.get(task.hostId) ?? 0) + 1);
        if (task.durationMs !== null) durations.push(task.durationMs / 1000);
      }
      if (job.state !== 'succeeded') return void problems.push(`job ${job.id} (tile ${job.params.x},${job.params.y}) ${job.state}${job.reason ? `: ${job.reason}` : ''}`);
      try {
        const bytes = await fetchOutput(client, task, TILE_FILE);
        downloaded += bytes.length;
        tiles.set(`${job.params.x},${job.params.y}`, parseTile(bytes, o.size));
      } catch (e) {
        problems.push(`job ${job.id} (tile ${job.params.x},${job.params.y}): ${firstLine(e)}`);
      }
    });
    const picture = assemble(o.grid, o.size, tiles);
    await mkdir(outDir, { recursive: true });
    const pngPath = join(outDir, 'mandelbrot.png');
    const png = encodePng(picture);
    await writeFile(pngPath, png);
    say(`6. downloaded ${tiles.size} tiles (${(downloaded / 1024).toFixed(0)} KiB, each checked against its sha256) and assembled a ${picture.width}×${picture.height} picture` +
      (problems.length > 0 ? `; ${problems.length} missing, drawn grey:\n     ${problems.slice(0, 5).join('\n     ')}` : ''));

    durations.sort((a, b) => a - b);
    const mean = durations.reduce((s, d) => s + d, 0) / Math.max(1, durations.length);
    const summary: DemoSummary = {
      app: `${app.name} v${app.version}`,
      runtime,
      image: runtime === 'docker' ? image : process.execPath,
      picture: { path: pngPath, width: picture.width, height: picture.height, tiles: tiles.size, tileSize: o.size, iterations: o.iterations },
      tasks: { total: done.batch.size, succeeded: done.counts.succeeded, failed: done.counts.failed, cancelled: done.counts.cancelled },
      hosts: [...perHost].map(([id, n]) => ({ id, name: hostNames.get(id) ?? `host ${id}`, tasks: n })),
      wallSeconds: round(wallSeconds),
      tasksPerSecond: round(done.batch.size / wallSeconds),
      perTaskSeconds: {
        mean: round(mean), median: round(durations[Math.floor(durations.length / 2)] ?? 0),
        min: round(durations[0] ?? 0), max: round(durations.at(-1) ?? 0),
      },
      downloadedBytes: downloaded,
      server: server.url, dashboard, dataDir, dataKept: !ownData || o.keep === true, outputDir: outDir,
    };
    const summaryPath = join(outDir, 'summary.json');
    await writeFile(summaryPath, JSON.stringify(summary, null, 2) + '\n');
    say(`7. ${summary.tasks.succeeded} of ${summary.tasks.total} tasks succeeded on ${summary.hosts.length} host(s); a task took ${summary.perTaskSeconds.mean} s on average ` +
      `(median ${summary.perTaskSeconds.median}, ${summary.perTaskSeconds.min}–${summary.perTaskSeconds.max}); the whole tour ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    say('');
    say(`  picture:   ${pngPath}`);
    say(`  summary:   ${summaryPath}`);
    say(`  server:    ${server.url}`);
    say(`  dashboard: ${dashboard}${o.keep ? ` (token: ${join(serverDir, 'admin.token')})` : ' (the server stops now: add --keep, e.g. `npm run demo -- --keep`, to keep browsing it)'}`);
    if (o.json) process.stdout.write(JSON.stringify(summary, null, 2) + '\n');

    if (o.keep) {
      process.off('SIGINT', interrupted);
      process.off('SIGTERM', interrupted);
      // For exploring: an app that runs inline JavaScript (`node -e SCRIPT ARGS…`), which examples/workflows/ use.
      const nodeApp = await client.createApp(PROJECT, {
        name: NODE_APP,
        description: 'node -e SCRIPT [ARGS…]: inline JavaScript, in the demo image (or natively, this machine\'s node)',
        image: app.image, command: ['node', '-e'], nativeCommand: [process.execPath, '-e'],
        resources: { cores: 0.5, memoryMiB }, maxRuntimeSeconds: 120, maxAttempts: 2,
      });
      say(`\nThe server and the agent keep running (Ctrl-C stops them), with one more app, ${nodeApp.name} v${nodeApp.version} ` +
        `(\`node -e SCRIPT ARGS…\`, which the workflows of examples/workflows/ use). In another terminal:\n` +
        `  export BOXGRID_URL=${server.url} BOXGRID_TOKEN=$(cat ${join(serverDir, 'admin.token')})\n` +
        `  boxgrid jobs --batch ${batchId} --limit 5\n` +
        `  boxgrid submit ${APP} --sweep 'x=0..${o.grid - 1}' --sweep 'y=0..${o.grid - 1}' -- '{x}' '{y}' ${o.grid} ${o.size} 1000\n` +
        `  boxgrid watch ${batchId + 1}\n` +
        `  boxgrid workflow run examples/workflows/structure-search.yaml --wait   # from the boxgrid checkout (npx boxgrid there)`);
      await new Promise<void>((r) => {
        process.once('SIGINT', () => r());
        process.once('SIGTERM', () => r());
      });
      say('stopping');
    }
  } finally {
    process.off('SIGINT', interrupted);
    process.off('SIGTERM', interrupted);
    await shutdown();
    if (ownData && !o.keep) await rm(dataDir, { recursive: true, force: true }).catch(() => undefined);
  }
  if (o.keep || !ownData) say(`Data kept in ${dataDir}; the admin token is in ${join(serverDir, 'admin.token')}.`);
}

/** The node installation, for the native sandbox to show read-only when it lies outside the system directories it shows anyway. */
function nodeTree(): string[] {
  const exe = process.execPath;
  if (['/usr/', '/bin/', '/sbin/', '/lib/', '/lib64/', '/etc/'].some((p) => exe.startsWith(p))) return [];
  return [dirname(dirname(exe))];
}

async function allJobs(client: BoxgridClient, batch: number): Promise<JobView[]> {
  const jobs: JobView[] = [];
  let cursor: string | undefined;
  do {
    const page = await client.listJobs(PROJECT, { batch, limit: 500, ...(cursor ? { cursor } : {}) });
    jobs.push(...page.jobs);
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  return jobs;
}

/** One output of a task, checked against its sha256. */
async function fetchOutput(client: BoxgridClient, task: TaskView | undefined, name: string): Promise<Buffer> {
  const ref = task?.outputs[name];
  if (!ref) throw new Error(`no ${name} among its outputs`);
  const res = await client.download(PROJECT, ref.sha256);
  const bytes = Buffer.from(await res.arrayBuffer());
  const sha = createHash('sha256').update(bytes).digest('hex');
  if (sha !== ref.sha256) throw new Error(`${name} arrived with sha256 ${sha}, not ${ref.sha256}`);
  return bytes;
}

async function eachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await fn(items[next++]!);
  }));
}

async function packageVersion(): Promise<string> {
  // dist/src/cli/commands/demo.js → the package root.
  const pkg = JSON.parse(await readFile(new URL('../../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const round = (n: number): number => Math.round(n * 1000) / 1000;
const firstLine = (e: unknown): string => (e instanceof Error ? e.message : String(e)).split('\n')[0]!;
