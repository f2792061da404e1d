import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { tlsFor } from '../config.js';
import { parseSizeMiB } from '../../domain/resources.js';
import { CliExit, parseKeyValues, parseNumber } from '../output.js';

interface KubernetesFlags {
  server?: string;
  transferServer?: string;
  enrollToken?: string;
  stateDir: string;
  name: string;
  namespace?: string;
  jobImage: string;
  maxPending: string;
  createRate: string;
  maxCores: string;
  maxMemory: string;
  maxGpus: string;
  maxTaskDisk: string;
  nodeSelector?: string[];
  toleration?: string[];
  ttlSeconds: string;
  stagingSeconds: string;
  pendingTimeout: string;
  once?: boolean;
}

export function registerExecutor(program: Command, ctx: CliContext): void {
  const executor = program.command('executor').description('run the grid\'s tasks on a cluster\'s own scheduler');
  executor
    .command('kubernetes')
    .description('lease work for a share of a Kubernetes cluster and run each task as a batch/v1 Job in one namespace (run it inside the cluster, see deploy/helm)')
    .option('--server <url>', 'the boxgrid server (default: the one the state dir enrolled with, else the CLI\'s own)')
    .option('--transfer-server <url>', 'the server as task pods reach it, for their signed transfer URLs (default: --server)')
    .option('--enroll-token <token>', 'an enrolment token, first start only (better in env BOXGRID_ENROLL_TOKEN)')
    .option('--state-dir <dir>', 'where the executor keeps its host credential (a volume that survives restarts)', '/var/lib/boxgrid-executor')
    .option('--name <name>', 'this executor\'s name: the label on its Jobs (two executors in one namespace need two names)', 'boxgrid')
    .option('--namespace <ns>', 'the namespace for task Jobs (default: the pod\'s own, else the kubeconfig context\'s)')
    .option('--job-image <image>', 'boxgrid\'s own image, run by the staging containers of task pods', 'boxgrid:0.1.0')
    .option('--max-pending <n>', 'most task pods created but not yet running', '10')
    .option('--create-rate <per-second>', 'most Jobs created per second (a burst of up to --max-pending)', '5')
    .option('--max-cores <n>', 'cores boxgrid may use in the cluster (the namespace\'s ResourceQuota bounds it too)', '8')
    .option('--max-memory <size>', 'memory boxgrid may use, e.g. 32Gi', '16Gi')
    .option('--max-gpus <n>', 'GPUs (nvidia.com/gpu) boxgrid may use', '0')
    .option('--max-task-disk <size>', 'scratch disk one task may ask for (its emptyDir)', '20Gi')
    .option('--node-selector <key=value...>', 'only nodes with these labels run tasks')
    .option('--toleration <key=value:Effect...>', 'taints task pods tolerate (key=value:Effect, or key:Effect for any value)')
    .option('--ttl-seconds <n>', 'Kubernetes removes a finished Job this long after it ends, should the executor not have', '3600')
    .option('--staging-seconds <n>', 'time allowed for staging files in and out, on top of an app\'s run time', '300')
    .option('--pending-timeout <seconds>', 'a task pod not started after this long is given back to the queue', '600')
    .option('--once', 'one reconcile pass, then exit (it does lease work and create Jobs; for scripts and tests)')
    .action(async (o: KubernetesFlags) => {
      const whole = (text: string, flag: string, min = 0): number => {
        const n = parseNumber(text, flag);
        if (!Number.isInteger(n) || n < min) throw new CliExit(2, `error: ${flag} must be a whole number, ${min} or more`);
        return n;
      };
      const positive = (text: string, flag: string): number => {
        const n = parseNumber(text, flag);
        if (!(n > 0)) throw new CliExit(2, `error: ${flag} must be a number above 0`);
        return n;
      };
      if (!/^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$/.test(o.name)) throw new CliExit(2, 'error: --name must be 1–40 lower-case letters, digits or "-" (it names Jobs and labels)');
      const { parseToleration } = await import('../../sites/kubernetes/job-manifest.js');
      let tolerations;
      try {
        tolerations = (o.toleration ?? []).map(parseToleration);
      } catch (e) {
        throw new CliExit(2, `error: --toleration: ${(e as Error).message}`);
      }
      const { ociPlatform } = await import('../../agent/probe.js');
      // Tasks go to nodes of the platform the executor enrolled with (the server matches apps to it).
      const [os, arch] = ociPlatform().split('/');
      const nodeSelector = { 'kubernetes.io/os': os!, 'kubernetes.io/arch': arch!, ...parseKeyValues(o.nodeSelector, '--node-selector') };
      const ttlSeconds = whole(o.ttlSeconds, '--ttl-seconds');
      if (ttlSeconds < 300) throw new CliExit(2, 'error: --ttl-seconds must be 300 or more: Kubernetes must not remove a finished Job before the executor has read it');
      const maxPending = whole(o.maxPending, '--max-pending', 1);
      const limit = { cores: positive(o.maxCores, '--max-cores'), memoryMiB: parseSizeMiB(o.maxMemory, '--max-memory'), gpus: whole(o.maxGpus, '--max-gpus') };

      const { KubeConfig } = await import('@kubernetes/client-node');
      const { ClientNodeKubeOps, inClusterNamespace } = await import('../../sites/kubernetes/kube-ops.js');
      const { KubernetesExecutor } = await import('../../sites/kubernetes/kubernetes-executor.js');
      const { enroll, loadCredential } = await import('../../agent/host-credential.js');
      const { BoxgridClient } = await import('../../client/client.js');

      const kc = new KubeConfig();
      kc.loadFromDefault(); // in a pod: its service account; elsewhere: $KUBECONFIG or ~/.kube/config
      const namespace = o.namespace ?? inClusterNamespace() ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';

      const tls = tlsFor(ctx.connection());
      let credential = await loadCredential(o.stateDir);
      if (!credential) {
        const enrollToken = o.enrollToken ?? process.env.BOXGRID_ENROLL_TOKEN;
        if (!enrollToken) throw new CliExit(2, `error: the executor is not enrolled yet (no credential in ${o.stateDir}); pass --enroll-token or set BOXGRID_ENROLL_TOKEN`);
        const server = (o.server ?? ctx.connection().url).replace(/\/+$/, '');
        credential = await enroll(o.stateDir, server, enrollToken, {
          name: `${o.name}@${namespace}`, resources: { ...limit, diskMiB: parseSizeMiB(o.maxTaskDisk, '--max-task-disk') }, platform: ociPlatform(),
        }, tls);
        process.stderr.write(`enrolled with ${server} as host ${credential.hostId}; credential saved in ${o.stateDir}/host.json (mode 0600)\n`);
      }
      const log = (level: string, m: string): void => void process.stderr.write(`${new Date().toISOString()} ${level} ${m}\n`);
      const ex = new KubernetesExecutor({
        name: o.name,
        client: new BoxgridClient({ url: credential.server, token: credential.token, ...tls }),
        transferServer: (o.transferServer ?? credential.server).replace(/\/+$/, ''),
        kube: new ClientNodeKubeOps(kc, namespace, o.name),
        flow: { maxPending, ratePerSecond: positive(o.createRate, '--create-rate'), burst: maxPending },
        limit,
        maxTaskDiskMiB: parseSizeMiB(o.maxTaskDisk, '--max-task-disk'),
        pendingTimeoutSeconds: positive(o.pendingTimeout, '--pending-timeout'),
        manifest: {
          stagingImage: o.jobImage, nodeSelector, tolerations,
          ttlSecondsAfterFinished: ttlSeconds, stagingSeconds: whole(o.stagingSeconds, '--staging-seconds', 30),
        },
        log,
      });
      if (o.once) {
        process.stdout.write(`${JSON.stringify(await ex.pass())}\n`);
        return;
      }
      log('info', `executor "${o.name}" in namespace ${namespace} for ${credential.server} (host ${credential.hostId}); Ctrl-C or SIGTERM to stop, running Jobs carry on and are adopted on restart`);
      const stop = new AbortController();
      process.once('SIGINT', () => stop.abort());
      process.once('SIGTERM', () => stop.abort());
      await ex.run(stop.signal);
    });
}

/**
 * `boxgrid stage in|out`: the staging containers of a task pod (see
 * sites/kubernetes/job-manifest.ts). Not for people; they run in boxgrid's own image.
 */
export function registerStage(program: Command): void {
  const stage = program.command('stage', { hidden: true }).description('stage a task pod\'s files (run by the Kubernetes executor\'s pods)');
  stage
    .command('in')
    .requiredOption('--dir <dir>', 'the pod\'s scratch volume')
    .option('--message-file <path>', 'where a failure is written for Kubernetes to show', '/dev/termination-log')
    .action(async (o: { dir: string; messageFile: string }) => {
      const { stageIn } = await import('../../sites/kubernetes/stage.js');
      const spec = process.env.BOXGRID_STAGE;
      try {
        if (!spec) throw new Error('BOXGRID_STAGE is not set');
        await stageIn(o.dir, JSON.parse(spec));
      } catch (e) {
        await writeFile(o.messageFile, (e as Error).message).catch(() => undefined);
        throw new CliExit(1, `error: staging inputs failed: ${(e as Error).message}`);
      }
    });
  stage
    .command('out')
    .requiredOption('--dir <dir>', 'the pod\'s scratch volume')
    .option('--message-file <path>', 'where the report is written for the executor to read (the termination message)', '/dev/termination-log')
    .option('--max-output <size>', 'largest output file', '4Gi')
    .option('--now', 'store the outputs at once instead of waiting for SIGTERM')
    .option('--grace-seconds <n>', 'the time Kubernetes gives after SIGTERM (the pod\'s terminationGracePeriodSeconds)', '300')
    .action(async (o: { dir: string; messageFile: string; maxOutput: string; now?: boolean; graceSeconds: string }) => {
      const { stageOut } = await import('../../sites/kubernetes/stage.js');
      const { STAGE_OUT_READY_FILE } = await import('../../sites/kubernetes/job-manifest.js');
      const url = process.env.BOXGRID_STAGE_URL;
      if (!url) throw new CliExit(2, 'error: BOXGRID_STAGE_URL is not set');
      // A native sidecar: Kubernetes sends SIGTERM once the task's container has ended. The
      // ready file tells the startup probe the handler is in place (the app starts after it).
      if (!o.now) {
        const alive = setInterval(() => undefined, 2 ** 30); // a signal handler alone keeps no process alive
        const stopped = new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
        await writeFile(join(o.dir, STAGE_OUT_READY_FILE), '');
        await stopped;
        clearInterval(alive);
      }
      let message: string;
      try {
        // Uploads may take the pod's grace period (--staging-seconds), less a margin to write the report.
        const deadline = Date.now() + Math.max(10, parseNumber(o.graceSeconds, '--grace-seconds') - 5) * 1000;
        message = JSON.stringify(await stageOut(o.dir, url, parseSizeMiB(o.maxOutput, '--max-output') * 2 ** 20, deadline));
      } catch (e) {
        message = `storing the outputs failed: ${(e as Error).message}`.slice(0, 4096);
      }
      await writeFile(o.messageFile, message);
      process.stderr.write(`${message}\n`);
    });
}
