import type { Command } from 'commander';
import { mkdir } from 'node:fs/promises';
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { tlsFor } from '../config.js';
import type { CliContext } from '../context.js';
import { CliExit, parseKeyValues, parseNumber } from '../output.js';
import { checkLabelKeys } from '../../domain/labels.js';
import { parseSizeMiB, type Resources } from '../../domain/resources.js';

interface AgentFlags {
  server?: string;
  enrollToken?: string;
  workDir: string;
  name: string;
  cpus?: string;
  memory?: string;
  disk?: string;
  gpus?: string;
  maxTasks?: string;
  native?: boolean;
  docker: boolean;
  dockerSocket?: string;
  onStop: string;
  imageBudget?: string;
  maxOutput: string;
  checkpointInterval: string;
  label?: string[];
  exitWhenIdle?: string;
  walltime?: string;
}

export function defaultAgentDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.BOXGRID_AGENT_DIR) return env.BOXGRID_AGENT_DIR;
  return join(env.XDG_DATA_HOME ?? join(homedir(), '.local', 'share'), 'boxgrid-agent');
}

export function registerAgent(program: Command, ctx: CliContext): void {
  program
    .command('agent')
    .description('give this machine to the grid: enrol once, then pull tasks that fit and run them in containers')
    .option('--server <url>', 'the boxgrid server (default: the one this host enrolled with, else --url)')
    .option('--enroll-token <token>', 'an enrolment token from `boxgrid enroll-token create` (first start only; env BOXGRID_ENROLL_TOKEN)')
    .option('--work-dir <dir>', 'where the agent keeps its credential, cache and task files (env BOXGRID_AGENT_DIR)', defaultAgentDir())
    .option('--name <name>', 'this host\'s name, for people', hostname())
    .option('--cpus <n>', 'cores to give (default: all)')
    .option('--memory <size>', 'memory to give, e.g. 8Gi (default: 80% of the machine\'s)')
    .option('--disk <size>', 'disk to give for task files (default: 80% of the work dir\'s free space)')
    .option('--gpus <n>', 'GPUs to give (default: all that nvidia-smi lists)')
    .option('--max-tasks <n>', 'most tasks at once (default: one per core)')
    .option('--native', 'also run apps that declare a native command as plain processes (trusted hosts only; in bubblewrap when installed)')
    .option('--no-docker', 'do not use a container engine (with --native: native tasks only)')
    .option('--docker-socket <path>', 'Docker Engine API socket (default: DOCKER_HOST or /var/run/docker.sock)')
    .option('--on-stop <mode>', 'on SIGTERM: "wait" for running tasks, or "release" them back to the queue', 'wait')
    .option('--image-budget <size>', 'keep the images the agent pulled within this much disk, e.g. 20Gi (default: no pruning)')
    .option('--max-output <size>', 'largest output file the agent uploads', '4Gi')
    .option('--checkpoint-interval <seconds>', 'for apps that checkpoint: how often /checkpoint is uploaded', '600')
    .option('--exit-when-idle <seconds>', 'stop once no task has been held for this long (pilot jobs on a cluster)')
    .option('--walltime <seconds>', 'this agent ends this long after it starts (a pilot\'s job time limit): take only tasks whose app may finish before then')
    .option('--label <key=value...>', 'labels of this host, for jobs that select hosts by label (e.g. --label gpu-model=a100 room=b12)')
    .action(async (o: AgentFlags) => {
      if (o.onStop !== 'wait' && o.onStop !== 'release') throw new CliExit(2, `error: --on-stop must be "wait" or "release", not "${o.onStop}"`);
      if (!o.docker && !o.native) throw new CliExit(2, 'error: --no-docker leaves no runtime; add --native (trusted hosts only)');
      const enrollToken = o.enrollToken ?? process.env.BOXGRID_ENROLL_TOKEN;
      // Loaded on demand: the agent's dependencies would slow every other command's start.
      const { Agent } = await import('../../agent/agent.js');
      const { DockerRuntime } = await import('../../agent/runtimes/docker-runtime.js');
      const { NativeRuntime } = await import('../../agent/runtimes/native-runtime.js');
      const { probeHost } = await import('../../agent/probe.js');
      const { enroll, loadCredential } = await import('../../agent/host-credential.js');
      const { BoxgridClient } = await import('../../client/client.js');
      const { parseToken } = await import('../../service/credentials.js');

      const started = Date.now(); // --walltime counts from here
      for (const [flag, v] of [['--exit-when-idle', o.exitWhenIdle], ['--walltime', o.walltime]] as const) {
        if (v !== undefined && !(parseNumber(v, flag) > 0)) throw new CliExit(2, `error: ${flag} must be a number of seconds above 0`);
      }
      // The CA an https:// server's certificate chains to (--ca-file, BOXGRID_CA_FILE, the config file).
      const tls = tlsFor(ctx.connection());
      await mkdir(o.workDir, { recursive: true, mode: 0o700 });
      const socket = o.dockerSocket ? { socketPath: o.dockerSocket } : {};
      const probeEngine = o.docker ? new DockerRuntime(socket) : null;
      const engine = probeEngine ? await probeEngine.version() : null;
      if (probeEngine && engine === null && !o.native) {
        throw new CliExit(1, `error: no container engine answers at ${o.dockerSocket ?? process.env.DOCKER_HOST ?? '/var/run/docker.sock'}.\n` +
          'Start one (e.g. `sudo dockerd --bridge=none --iptables=false`, or `sudo systemctl start docker`), point --docker-socket at it, ' +
          'or on a trusted host run native tasks with --native --no-docker.');
      }
      const labels = parseKeyValues(o.label, '--label');
      try {
        checkLabelKeys(labels, '--label');
      } catch (e) {
        throw new CliExit(2, `error: ${(e as Error).message}`);
      }
      const probe = await probeHost(o.workDir, engine === null ? null : probeEngine);
      const capacity = capacityFrom(o, probe);

      let credential = await loadCredential(o.workDir);
      if (credential && o.server && credential.server !== o.server.replace(/\/+$/, '')) {
        throw new CliExit(2, `error: this work dir is enrolled with ${credential.server}, not ${o.server}. Use another --work-dir to join another server.`);
      }
      if (!credential) {
        if (!enrollToken) {
          throw new CliExit(2, `error: this host is not enrolled yet (no credential in ${o.workDir}).\n` +
            'Pass --enroll-token; an operator creates one with `boxgrid enroll-token create`.');
        }
        const server = (o.server ?? ctx.connection().url).replace(/\/+$/, '');
        credential = await enroll(o.workDir, server, enrollToken, { name: o.name, resources: capacity, platform: probe.platform }, tls);
        process.stderr.write(`enrolled with ${server} as host ${credential.hostId} (${credential.name}); credential saved in ${o.workDir}/host.json (mode 0600)\n`);
      }

      // Containers are labelled with the credential's public id: agents of several work dirs
      // (or servers) on one engine then never mistake each other's containers for leftovers.
      const owner = parseToken(credential.token)?.id ?? `host-${credential.hostId}`;
      const docker = engine === null ? null : new DockerRuntime({ ...socket, stateFile: join(o.workDir, 'images.json'), owner });
      const native = o.native ? new NativeRuntime({ scratchDir: join(o.workDir, 'scratch') }) : null;
      if (native) {
        const sandbox = await native.sandbox();
        process.stderr.write(`native runtime: ${sandbox.detail}\n`);
        if (process.getuid?.() === 0) {
          process.stderr.write('warning: native tasks of an agent running as root can read what root can (bubblewrap maps nobody to root); run the agent as an unprivileged user for --native\n');
        }
      }
      const runtimes = [
        ...(docker ? [{ kind: 'docker' as const, runtime: docker }] : []),
        ...(native ? [{ kind: 'native' as const, runtime: native }] : []),
      ];
      const client = new BoxgridClient({ url: credential.server, token: credential.token, ...tls });
      const agent = new Agent(client, {
        workDir: o.workDir, capacity, runtimes,
        maxTasks: o.maxTasks === undefined ? Math.max(1, Math.floor(capacity.cores)) : parseNumber(o.maxTasks, '--max-tasks'),
        onStop: o.onStop, maxOutputBytes: parseSizeMiB(o.maxOutput, '--max-output') * 2 ** 20,
        imageBudgetMiB: o.imageBudget === undefined ? null : parseSizeMiB(o.imageBudget, '--image-budget'),
        checkpointSeconds: parseNumber(o.checkpointInterval, '--checkpoint-interval'),
        backoff: { minMs: 1000, maxMs: 60_000 },
        labels, images: probe.images,
        ...(o.exitWhenIdle === undefined && o.walltime === undefined
          ? {}
          : {
              pilot: {
                idleMs: o.exitWhenIdle === undefined ? null : parseNumber(o.exitWhenIdle, '--exit-when-idle') * 1000,
                endsAt: o.walltime === undefined ? null : started + parseNumber(o.walltime, '--walltime') * 1000,
              },
            }),
        log: (level, message) => process.stderr.write(`${new Date().toISOString()} ${level} ${message}\n`),
      });
      process.stderr.write(
        `boxgrid agent: host ${credential.hostId} (${credential.name}) → ${credential.server}\n` +
          `  giving ${capacity.cores} cores, ${capacity.memoryMiB} MiB memory, ${capacity.diskMiB} MiB disk, ${capacity.gpus} GPUs; ` +
          `runtimes: ${runtimes.map((r) => (r.kind === 'docker' ? `docker ${engine}` : 'native')).join(', ')}; ${probe.images.length} images cached\n`,
      );
      const stop = new AbortController();
      let signals = 0;
      const onSignal = (name: string): void => {
        if (++signals > 1) {
          process.stderr.write(`${name} again: exiting now; running containers are followed again on the next start\n`);
          process.exit(130);
        }
        process.stderr.write(`${name}: no more new work; ${o.onStop === 'wait' ? 'waiting for running tasks to finish' : 'releasing running tasks'} (again to exit at once)\n`);
        stop.abort();
      };
      process.on('SIGINT', () => onSignal('SIGINT'));
      process.on('SIGTERM', () => onSignal('SIGTERM'));
      await agent.run(stop.signal);
      process.stderr.write(`boxgrid agent stopped: ${agent.stats.started} task(s) run, ${agent.stats.delivered} result(s) delivered\n`);
    });
}

/** What to give: the flags, each at most what the machine has; by default most of it. */
function capacityFrom(o: AgentFlags, probe: { cores: number; memoryMiB: number; diskFreeMiB: number; gpus: unknown[] }): Resources {
  const pick = (flag: string | undefined, name: string, parse: (t: string) => number, has: number, fallback: number): number => {
    if (flag === undefined) return fallback;
    const v = parse(flag);
    if (v > has) throw new CliExit(2, `error: --${name} ${flag} is more than this machine has (${has})`);
    return v;
  };
  return {
    cores: pick(o.cpus, 'cpus', (t) => parseNumber(t, '--cpus'), probe.cores, probe.cores),
    memoryMiB: pick(o.memory, 'memory', (t) => parseSizeMiB(t, '--memory'), probe.memoryMiB, Math.floor(probe.memoryMiB * 0.8)),
    diskMiB: pick(o.disk, 'disk', (t) => parseSizeMiB(t, '--disk'), probe.diskFreeMiB, Math.floor(probe.diskFreeMiB * 0.8)),
    gpus: pick(o.gpus, 'gpus', (t) => parseNumber(t, '--gpus'), probe.gpus.length, probe.gpus.length),
  };
}
