import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { V1Pod } from '@kubernetes/client-node';
import { enroll } from '../../src/agent/host-credential.js';
import { BoxgridClient } from '../../src/client/client.js';
import { CONTAINERS, LABELS, STAGE_OUT_READY_FILE } from '../../src/sites/kubernetes/job-manifest.js';
import { ClientNodeKubeOps, KubeError, type KubeOps } from '../../src/sites/kubernetes/kube-ops.js';
import { KubernetesExecutor, type KubernetesExecutorOptions } from '../../src/sites/kubernetes/kubernetes-executor.js';
import { BIN, runCli } from '../cli/run-cli.js';
import { startFakeKubernetes, type FakeKubernetes, type FakeNode, type PodRunner, type PodScript } from '../helpers/fake-kubernetes.js';
import { eventually, untilBatchDone } from '../helpers/grid.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * The Kubernetes executor against an in-process fake of the API (test/helpers/fake-kubernetes.ts,
 * whose header lists what it does not model), through the real @kubernetes/client-node and a
 * real boxgrid server. Where a test says "real staging", the fake's kubelet runs the pod's
 * `boxgrid stage in` and `boxgrid stage out` as real processes on a scratch dir, with the URLs
 * the executor signed; only the app's container is played by the test. No Kubernetes cluster
 * is involved: see kubernetes-live.test.ts for that.
 */

const NS = 'boxgrid-jobs';
const P = 'default';
const TIMING = { leaseSeconds: 60, heartbeatSeconds: 1, idlePollSeconds: 1, sweepSeconds: 3600 };

interface Setup {
  s: TestServer;
  admin: BoxgridClient;
  k8s: FakeKubernetes;
  /** The executor's way to the fake API, for tests to wrap. */
  kube(): KubeOps;
  executor(over?: Partial<KubernetesExecutorOptions>): Promise<{ ex: KubernetesExecutor; stop: () => Promise<void> }>;
  logs: string[];
  close(): Promise<void>;
}

async function setup(
  opts: { nodes?: FakeNode[]; runPod?: PodRunner; quota?: { cpu?: number; memoryMiB?: number }; jobDeadline?: 'kill-pods' | 'delete-pods'; timing?: Partial<typeof TIMING> } = {},
): Promise<Setup> {
  const s = await startTestServer({ timing: { ...TIMING, ...opts.timing }, scheduling: { backoffBaseSeconds: 0 } });
  const admin = new BoxgridClient({ url: s.url, token: s.adminToken });
  const k8s = await startFakeKubernetes({
    namespace: NS, nodes: opts.nodes ?? [{ name: 'node-1', cpu: 8, memoryMiB: 16_384 }],
    ...(opts.runPod ? { runPod: opts.runPod } : {}), ...(opts.quota ? { quota: opts.quota } : {}), ...(opts.jobDeadline ? { jobDeadline: opts.jobDeadline } : {}),
  });
  const stateDir = await mkdtemp(join(tmpdir(), 'boxgrid-k8s-'));
  const token = await admin.createEnrollToken({ label: 'k8s' });
  const credential = await enroll(stateDir, s.url, token.token, { name: 'bx@fake', resources: { cores: 8, memoryMiB: 16_384, diskMiB: 100_000, gpus: 0 }, platform: 'linux/amd64' });
  const logs: string[] = [];
  const running: Array<() => Promise<void>> = [];
  return {
    s, admin, k8s, logs,
    kube: () => new ClientNodeKubeOps(k8s.kubeConfig(), NS, 'bx'),
    async executor(over = {}) {
      const ex = new KubernetesExecutor({
        name: 'bx', client: new BoxgridClient({ url: s.url, token: credential.token }), transferServer: s.url,
        kube: new ClientNodeKubeOps(k8s.kubeConfig(), NS, 'bx'),
        flow: { maxPending: 5, ratePerSecond: 50, burst: 5 }, limit: { cores: 8, memoryMiB: 16_384, gpus: 0 }, maxTaskDiskMiB: 10_000,
        pendingTimeoutSeconds: 600,
        manifest: { stagingImage: 'boxgrid:test', nodeSelector: {}, tolerations: [], ttlSecondsAfterFinished: 3600, stagingSeconds: 60 },
        log: (level, m) => logs.push(`${level} ${m}`),
        ...over,
      });
      const ctl = new AbortController();
      const loop = ex.run(ctl.signal);
      const stop = async () => {
        ctl.abort();
        await loop;
      };
      running.push(stop);
      return { ex, stop };
    },
    async close() {
      for (const stop of running) await stop();
      await k8s.close();
      await s.stop();
      await rm(stateDir, { recursive: true, force: true });
    },
  };
}

async function app(admin: BoxgridClient, name: string, extra: Record<string, unknown> = {}): Promise<void> {
  await admin.createApp(P, { name, image: `sci/${name}:1`, command: [name], resources: { cores: 1, memoryMiB: 256, diskMiB: 64, gpus: 0 }, maxRuntimeSeconds: 60, ...extra });
}

/** A pod that runs and stores no output (the sidecar reports an empty list). */
const SUCCEEDS = (durationMs = 0): PodScript => ({ task: { exitCode: 0, durationMs }, stageOut: { exitCode: 0, message: JSON.stringify({ outputs: {}, refused: [] }) } });

const args = (pod: V1Pod): string[] => pod.spec!.containers.find((c) => c.name === CONTAINERS.task)!.args ?? [];
const env = (pod: V1Pod, container: string, name: string): string =>
  [...(pod.spec!.initContainers ?? []), ...pod.spec!.containers].find((c) => c.name === container)!.env!.find((e) => e.name === name)!.value!;

/** Runs `boxgrid stage …` as a real process; resolves with its exit code and the message it left. */
function stage(direction: 'in' | 'out', dir: string, envVars: Record<string, string>): { done: Promise<{ exitCode: number; message: string }>; terminate: () => void } {
  const messageFile = join(dir, `.message-${direction}`);
  const child = spawn(process.execPath, [BIN, 'stage', direction, '--dir', dir, '--message-file', messageFile], {
    env: { PATH: process.env.PATH ?? '', ...envVars }, stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const ready = new Promise<void>((resolve) => child.once('spawn', () => resolve()));
  const done = new Promise<{ exitCode: number; message: string }>((resolve) =>
    child.on('exit', async (code) => resolve({ exitCode: code ?? 137, message: await readFile(messageFile, 'utf8').catch(() => stderr.slice(-2000)) })),
  );
  return { done, terminate: () => void ready.then(() => child.kill('SIGTERM')) };
}

/** A startup probe, as the kubelet runs one: look, and look again a moment later. */
async function probe(file: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (await readFile(file).then(() => true, () => false)) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${file} never appeared: stage-out did not start`);
}

/**
 * A kubelet that stages for real: `stage in` fills the scratch dir, `app` plays the app's
 * container on it (reading in/, writing out/), then `stage out` is stopped with SIGTERM, as
 * Kubernetes stops a native sidecar, and stores out/.
 */
function realStaging(appRun: (argv: string[], inDir: string, outDir: string) => Promise<PodScript['task']>): PodRunner {
  return async (pod) => {
    const dir = await mkdtemp(join(tmpdir(), 'boxgrid-pod-'));
    try {
      const stageIn = await stage('in', dir, { BOXGRID_STAGE: env(pod, CONTAINERS.stageIn, 'BOXGRID_STAGE') }).done;
      if (stageIn.exitCode !== 0) return { stageIn };
      // The sidecar starts before the app, and the app only once its startup probe passes.
      const stageOut = stage('out', dir, { BOXGRID_STAGE_URL: env(pod, CONTAINERS.stageOut, 'BOXGRID_STAGE_URL') });
      await probe(join(dir, STAGE_OUT_READY_FILE));
      const task = await appRun(args(pod), join(dir, 'in'), join(dir, 'out'));
      stageOut.terminate();
      return { stageIn, task, stageOut: await stageOut.done };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  };
}

describe('kubernetes executor (fake API, real server)', () => {
  it('runs a batch as one Job per task with real staging: inputs in, outputs out, Jobs deleted once reported', async () => {
    const square = realStaging(async (argv, inDir, outDir) => {
      const offset = Number(await readFile(join(inDir, 'offset.txt'), 'utf8'));
      const n = Number(argv[1]);
      await writeFile(join(outDir, 'square.txt'), String(n * n + offset));
      return { exitCode: 0, log: `squared ${n}\n` };
    });
    const g = await setup({ runPod: square });
    try {
      await app(g.admin, 'square');
      const offset = join(tmpdir(), `offset-${process.pid}.txt`);
      await writeFile(offset, '1000');
      const blob = await g.admin.uploadFile(P, offset);
      await rm(offset);
      const batch = await g.admin.submitBatch(P, { app: 'square', sweep: { n: { from: 1, to: 6 } }, template: { args: ['{n}'], inputs: { 'offset.txt': blob.sha256 } } });
      await g.executor();
      const done = await untilBatchDone(g.admin, P, batch.batch!.id);
      const first = (await g.admin.listJobs(P, { batch: batch.batch!.id })).jobs[0]!;
      assert.equal(done.counts.succeeded, 6, `${JSON.stringify(done.counts)} ${JSON.stringify((await g.admin.getJob(P, first.id)).tasks)} ${g.logs.join('\n')}`);

      const { jobs } = await g.admin.listJobs(P, { batch: batch.batch!.id });
      for (const j of jobs) {
        const { tasks } = await g.admin.getJob(P, j.id);
        assert.equal(tasks.length, 1, 'each job ran once');
        const out = await (await g.admin.download(P, tasks[0]!.outputs['square.txt']!.sha256)).text();
        assert.equal(Number(out), Number(j.params.n) ** 2 + 1000, `job ${j.id}: the app read its staged input and its output came back`);
        const log = await g.admin.taskLog(P, { task: tasks[0]!.id });
        assert.match(log.text, /squared \d/, 'the app\'s log went with the report');
      }
      await g.k8s.waitFor(() => g.k8s.jobs().length === 0);
      assert.equal(g.k8s.stats.jobsCreated, 6);
      assert.equal(g.k8s.stats.jobsDeleted, 6, 'the executor deleted each Job itself');
      const verbs = Object.keys(g.k8s.stats.requests).sort();
      const allowed = ['create jobs', 'delete jobs', 'list jobs', 'list pods', 'watch pods', 'get pods/log', 'list resourcequotas'];
      for (const v of verbs) assert.ok(allowed.includes(v), `"${v}" is within the executor's Role`);
    } finally {
      await g.close();
    }
  });

  it('keeps a 1,000-job batch out of the cluster: pending pods under the bound, Jobs created at the rate', async () => {
    // Two cores of nodes for a share of 100: without the bound every task would become a pending pod.
    const g = await setup({ nodes: [{ name: 'small', cpu: 2, memoryMiB: 4096 }], runPod: () => SUCCEEDS(5) });
    try {
      await app(g.admin, 'tiny');
      const batch = await g.admin.submitBatch(P, { app: 'tiny', count: 1000 });
      const { stop } = await g.executor({ flow: { maxPending: 5, ratePerSecond: 20, burst: 5 }, limit: { cores: 100, memoryMiB: 100_000, gpus: 0 } });
      await eventually(async () => ((await g.admin.getBatch(P, batch.batch!.id)).counts.succeeded >= 40 ? true : undefined), () => `forty tasks done ${g.logs.slice(-20).join('\n')} ${JSON.stringify(g.k8s.stats)}`, 60_000);
      await stop();
      assert.ok(g.k8s.stats.maxPodsNotRunning <= 5, `at most 5 pods pending at once (saw ${g.k8s.stats.maxPodsNotRunning})`);
      // Jobs alive: at most the pending bound, the two running, and a few ended but not yet deleted.
      assert.ok(g.k8s.stats.maxJobsAlive <= 5 + 2 + 5, `Kubernetes never held more than a dozen Jobs (saw ${g.k8s.stats.maxJobsAlive})`);
      const c = g.k8s.stats.creations;
      for (let i = 0; i < c.length; i++) {
        const inOneSecond = c.filter((t) => t >= c[i]! && t < c[i]! + 1000).length;
        assert.ok(inOneSecond <= 5 + 20, `at most a burst of 5 plus 20 per second (saw ${inOneSecond})`);
      }
      const counts = (await g.admin.getBatch(P, batch.batch!.id)).counts;
      assert.ok(counts.queued >= 900, 'the rest waits in boxgrid, not in the cluster');
    } finally {
      await g.close();
    }
  });

  it('reports each way a pod ends, and the job goes where boxgrid\'s rules send it', async () => {
    const script: Record<string, PodScript | 'evict'> = {
      exit3: { task: { exitCode: 3, log: 'bad parameter\n' } },
      oom: { task: { exitCode: 137, reason: 'OOMKilled' } },
      pull: { pull: { error: 'ImagePullBackOff', message: 'manifest unknown' } },
      refused: { task: { exitCode: 0 }, stageOut: { exitCode: 0, message: JSON.stringify({ outputs: {}, refused: ['"link" is a symbolic link'] }) } },
      silent: { task: { exitCode: 0 }, stageOut: { exitCode: 137 } },
      evict: 'evict',
    };
    const evicted = new Set<string>();
    const g = await setup({
      runPod: (pod) => {
        const which = args(pod)[1]!;
        const s = script[which]!;
        if (s !== 'evict') return s;
        if (evicted.has(which)) return SUCCEEDS();
        evicted.add(which);
        return { task: 'hang' };
      },
    });
    try {
      // One attempt each: an eviction must not spend it.
      await app(g.admin, 'once', { maxAttempts: 1 });
      const ids: Record<string, number> = {};
      for (const which of Object.keys(script)) ids[which] = (await g.admin.submitJob(P, { app: 'once', args: [which] })).jobIds![0]!;
      await g.executor();
      const evictedPod = await g.k8s.waitFor(() => g.k8s.pods().find((p) => p.status?.phase === 'Running' && args(p)[1] === 'evict'), 20_000);
      g.k8s.evict(evictedPod.metadata!.name!, 'The node was low on resource: memory.');
      const outcomes = async (which: string) => (await g.admin.getJob(P, ids[which]!)).tasks.map((t) => t.outcome?.kind);
      const settled = async (which: string, kinds: string[]) =>
        eventually(async () => (JSON.stringify(await outcomes(which)) === JSON.stringify(kinds) ? true : undefined), () => `${which}: ${kinds.join(', ')}`, 30_000);
      await settled('exit3', ['failed']);
      await settled('oom', ['out_of_memory']);
      await settled('pull', ['image_error']);
      await settled('refused', ['output_error']);
      await settled('silent', ['output_error']);
      await settled('evict', ['aborted', 'succeeded']);
      const job = async (which: string) => (await g.admin.getJob(P, ids[which]!)).job;
      assert.equal((await job('evict')).state, 'succeeded', 'an eviction is the platform\'s doing: the job ran again, on its one attempt, and finished');
      const failedTask = (await g.admin.getJob(P, ids.exit3!)).tasks[0]!;
      assert.equal(failedTask.exitCode, 3);
      assert.match((await g.admin.taskLog(P, { task: failedTask.id })).text, /bad parameter/);
      assert.match((await g.admin.getJob(P, ids.pull!)).tasks[0]!.reason ?? JSON.stringify((await g.admin.getJob(P, ids.pull!)).tasks[0]!.outcome), /manifest unknown/);
    } finally {
      await g.close();
    }
  });

  it('times a task out at its Job\'s deadline, stops the Job of a cancelled job, and gives back a pod no node can take', async () => {
    // delete-pods: past a Job's deadline a real Job controller deletes the pod, and only the Job says why.
    const g = await setup({ runPod: () => ({ task: 'hang' }), nodes: [{ name: 'node-1', cpu: 4, memoryMiB: 8192 }], jobDeadline: 'delete-pods' });
    try {
      await app(g.admin, 'slow', { maxRuntimeSeconds: 1, maxAttempts: 1 });
      await app(g.admin, 'long', { maxRuntimeSeconds: 600 });
      await app(g.admin, 'huge', { resources: { cores: 6, memoryMiB: 256, diskMiB: 64, gpus: 0 } });
      const slow = (await g.admin.submitJob(P, { app: 'slow', args: ['hang'] })).jobIds![0]!;
      const long = (await g.admin.submitJob(P, { app: 'long', args: ['hang'] })).jobIds![0]!;
      const huge = (await g.admin.submitJob(P, { app: 'huge', args: ['hang'] })).jobIds![0]!;
      await g.executor({ pendingTimeoutSeconds: 2, manifest: { stagingImage: 'boxgrid:test', nodeSelector: {}, tolerations: [], ttlSecondsAfterFinished: 3600, stagingSeconds: 1 } });
      await eventually(async () => ((await g.admin.getJob(P, slow)).job.state === 'failed' ? true : undefined), 'the slow job timed out', 20_000);
      assert.equal((await g.admin.getJob(P, slow)).tasks[0]!.outcome?.kind, 'timeout');

      await g.k8s.waitFor(() => g.k8s.pods().some((p) => p.status?.phase === 'Running' && p.metadata?.labels?.[LABELS.job] === String(long)), 10_000);
      await g.admin.cancelJob(P, long);
      await g.k8s.waitFor(() => !g.k8s.jobs().some((j) => j.metadata?.labels?.[LABELS.job] === String(long)), 10_000);

      // 6 cores on a 4-core node: Unschedulable, given back after the pending timeout, not left to pile up.
      await eventually(async () => ((await g.admin.getJob(P, huge)).tasks.some((t) => t.outcome?.kind === 'aborted') ? true : undefined), 'the unschedulable task given back', 20_000);
      assert.ok(g.logs.some((l) => /was not scheduled in 2 s \(Unschedulable/.test(l)), g.logs.join('\n'));
    } finally {
      await g.close();
    }
  });

  it('after a crash, a new executor adopts the Jobs it left and reports them: no task runs twice', async () => {
    let release: () => void = () => undefined;
    const released = new Promise<void>((r) => (release = r));
    const g = await setup({ runPod: async () => (await released, SUCCEEDS()) });
    try {
      await app(g.admin, 'calc');
      const batch = await g.admin.submitBatch(P, { app: 'calc', count: 4 });
      const first = await g.executor();
      await g.k8s.waitFor(() => g.k8s.jobs().length === 4, 10_000);
      await first.stop(); // the executor dies; its Jobs run on
      await g.executor();
      release();
      const done = await untilBatchDone(g.admin, P, batch.batch!.id);
      assert.equal(done.counts.succeeded, 4, `${JSON.stringify(done.counts)} ${g.logs.join('\n')}`);
      assert.equal(g.k8s.stats.jobsCreated, 4, 'no Job made twice');
      const { jobs } = await g.admin.listJobs(P, { batch: batch.batch!.id });
      for (const j of jobs) assert.equal((await g.admin.getJob(P, j.id)).tasks.length, 1, 'each job ran once');
      assert.ok(g.logs.some((l) => /adopted 4 Job/.test(l)));
      await g.k8s.waitFor(() => g.k8s.jobs().length === 0);
    } finally {
      await g.close();
    }
  });

  it('boxgrid executor kubernetes: enrols once, reads KUBECONFIG, and a pass makes the Jobs; bad flags are clear errors', async () => {
    const g = await setup({ runPod: () => ({ task: 'hang' }) });
    const dir = await mkdtemp(join(tmpdir(), 'boxgrid-k8s-cli-'));
    try {
      await app(g.admin, 'calc');
      await g.admin.submitBatch(P, { app: 'calc', count: 3 });
      const token = await g.admin.createEnrollToken({ label: 'cli', uses: 1 });
      const kubeconfig = await g.k8s.writeKubeconfig(dir);
      const flags = ['--server', g.s.url, '--state-dir', join(dir, 'state'), '--namespace', NS, '--name', 'cli', '--job-image', 'boxgrid:test'];
      const first = await runCli(['executor', 'kubernetes', ...flags, '--once'], { KUBECONFIG: kubeconfig, BOXGRID_ENROLL_TOKEN: token.token });
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stderr, /enrolled with .* as host \d+/);
      assert.equal(JSON.parse(first.stdout).created, 3);
      assert.deepEqual(g.k8s.jobs().map((j) => j.metadata!.name).sort(), ['cli-task-1', 'cli-task-2', 'cli-task-3'].sort());
      // Enrolled now: the token is spent and not needed; a second pass finds the Jobs and makes none.
      const second = await runCli(['executor', 'kubernetes', ...flags, '--once'], { KUBECONFIG: kubeconfig });
      assert.equal(second.code, 0, second.stderr);
      assert.deepEqual({ created: JSON.parse(second.stdout).created, jobs: g.k8s.stats.jobsCreated }, { created: 0, jobs: 3 });

      for (const [bad, message] of [
        [['--max-pending', '0'], /--max-pending must be a whole number, 1 or more/],
        [['--toleration', 'gpu=yes'], /--toleration: .*key=value:Effect/],
        [['--name', 'Bad_Name'], /--name must be/],
      ] as const) {
        const r = await runCli(['executor', 'kubernetes', ...flags, ...bad, '--once'], { KUBECONFIG: kubeconfig });
        assert.equal(r.code, 2, r.stderr);
        assert.match(r.stderr, message);
        assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
      await g.close();
    }
  });

  it('keeps the app\'s time from the app\'s start: a slow start is no timeout', async () => {
    // Two and a half seconds of pulling and staging, for an app allowed one second.
    const g = await setup({ runPod: async () => (await new Promise((r) => setTimeout(r, 2500)), SUCCEEDS(200)) });
    try {
      await app(g.admin, 'quick', { maxRuntimeSeconds: 1, maxAttempts: 1 });
      const id = (await g.admin.submitJob(P, { app: 'quick' })).jobIds![0]!;
      await g.executor({ manifest: { stagingImage: 'boxgrid:test', nodeSelector: {}, tolerations: [], ttlSecondsAfterFinished: 3600, stagingSeconds: 1 } });
      await eventually(async () => ((await g.admin.getJob(P, id)).job.state === 'succeeded' ? true : undefined), 'the quick job succeeded', 20_000);
    } finally {
      await g.close();
    }
  });

  it('keeps its leases through a Kubernetes API outage longer than a lease', async () => {
    let release: () => void = () => undefined;
    const released = new Promise<void>((r) => (release = r));
    const g = await setup({ runPod: async () => (await released, SUCCEEDS()), timing: { leaseSeconds: 3, sweepSeconds: 1 } });
    try {
      await app(g.admin, 'calc', { maxAttempts: 1 });
      const batch = await g.admin.submitBatch(P, { app: 'calc', count: 3 });
      let down = false;
      const real = g.kube();
      const outage = (): void => {
        if (down) throw new KubeError('cannot list pods: connect ECONNREFUSED', null);
      };
      const kube: KubeOps = {
        ...real,
        createJob: (j) => real.createJob(j), deleteJob: (n) => real.deleteJob(n), log: (p, c, b) => real.log(p, c, b), quotas: () => real.quotas(),
        watchPods: (f, sig) => real.watchPods(f, sig),
        listPods: async () => (outage(), real.listPods()),
        listJobs: async () => (outage(), real.listJobs()),
      };
      await g.executor({ kube });
      await g.k8s.waitFor(() => g.k8s.jobs().length === 3, 10_000);
      down = true;
      const downSince = Date.now();
      await eventually(async () => (g.logs.filter((l) => /pass failed \(cannot list pods/.test(l)).length >= 3 && Date.now() - downSince > 4000 ? true : undefined), 'an outage of more than a lease', 20_000);
      down = false;
      release();
      const done = await untilBatchDone(g.admin, P, batch.batch!.id);
      assert.equal(done.counts.succeeded, 3, JSON.stringify(done.counts));
      const { jobs } = await g.admin.listJobs(P, { batch: batch.batch!.id });
      for (const j of jobs) assert.deepEqual((await g.admin.getJob(P, j.id)).tasks.map((t) => t.state), ['succeeded'], 'no task was lost while Kubernetes was away');
    } finally {
      release();
      await g.close();
    }
  });

  it('retries a Job Kubernetes could not create for now, and gives back unspent what it refuses', async () => {
    const g = await setup({ runPod: () => SUCCEEDS() });
    try {
      await app(g.admin, 'calc', { maxAttempts: 1 });
      const real = g.kube();
      const answers: Array<KubeError | null> = [new KubeError('Kubernetes refused to create Job: HTTP 503 etcd leader changed', 503), null];
      let refuse = false;
      const kube: KubeOps = {
        ...real,
        listPods: () => real.listPods(), listJobs: () => real.listJobs(), deleteJob: (n) => real.deleteJob(n), log: (p, c, b) => real.log(p, c, b),
        quotas: () => real.quotas(), watchPods: (f, sig) => real.watchPods(f, sig),
        createJob: async (j) => {
          if (refuse) throw new KubeError('Kubernetes refused to create Job: HTTP 403 jobs.batch is forbidden', 403);
          const e = answers.shift();
          if (e) throw e;
          return real.createJob(j);
        },
      };
      const first = (await g.admin.submitJob(P, { app: 'calc' })).jobIds![0]!;
      const { stop } = await g.executor({ kube });
      await eventually(async () => ((await g.admin.getJob(P, first)).job.state === 'succeeded' ? true : undefined), 'the job created on the second try', 20_000);
      assert.equal(g.k8s.stats.jobsCreated, 1, 'one Job, after a passing 503');
      assert.ok(g.logs.some((l) => /HTTP 503 .*will retry/.test(l)), g.logs.join('\n'));

      refuse = true;
      const second = (await g.admin.submitJob(P, { app: 'calc' })).jobIds![0]!;
      await eventually(async () => ((await g.admin.getJob(P, second)).tasks.some((t) => t.outcome?.kind === 'aborted') ? true : undefined), 'the refused task given back', 20_000);
      await stop();
      const { job } = await g.admin.getJob(P, second);
      assert.equal(job.state, 'queued', 'back in the queue, its one attempt not spent');
      assert.ok(g.logs.some((l) => /HTTP 403 .*giving it back, and asking for no work for 10 s/.test(l)), g.logs.join('\n'));
    } finally {
      await g.close();
    }
  });
});
