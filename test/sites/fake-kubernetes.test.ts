// The fake Kubernetes API server (test/helpers/fake-kubernetes.ts) driven by the real
// @kubernetes/client-node: what the executor's tests rely on, shown through the same client.
// No sleeps: every wait is on a watch event or fake.waitFor, each bounded.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ApiException, BatchV1Api, CoreV1Api, KubeConfig, Watch, type V1Job, type V1Pod } from '@kubernetes/client-node';
import { podRequests, startFakeKubernetes, type FakeKubernetes, type FakeKubernetesOptions, type PodScript } from '../helpers/fake-kubernetes.js';

const NS = 'boxgrid';
const BIG = [{ name: 'node-a', cpu: 16, memoryMiB: 65536, gpus: 2 }];

/* eslint-disable @typescript-eslint/no-explicit-any */
type Wire = any; // watch events carry the JSON as sent (timestamps are strings)

async function fakeWith(t: { after: (fn: () => Promise<void>) => void }, o: Partial<FakeKubernetesOptions> = {}): Promise<FakeKubernetes> {
  const fake = await startFakeKubernetes({ namespace: NS, nodes: BIG, ...o });
  t.after(() => fake.close());
  return fake;
}

function apis(fake: FakeKubernetes) {
  const kc = fake.kubeConfig();
  return { kc, batch: kc.makeApiClient(BatchV1Api), core: kc.makeApiClient(CoreV1Api) };
}

/** A Job shaped like the executor's: stage-in init container, stage-out native sidecar, task. */
function taskJob(name: string, o: { cpu?: string; memory?: string; gpus?: number; deadline?: number; podDeadline?: number; ttl?: number; backoffLimit?: number; podFailurePolicy?: any } = {}): V1Job {
  const labels = { 'app.kubernetes.io/managed-by': 'boxgrid', 'boxgrid.dev/task-id': name };
  const staging = { requests: { cpu: '50m', memory: '64Mi' }, limits: { cpu: '500m', memory: '256Mi' } };
  const amounts: Record<string, string> = { cpu: o.cpu ?? '500m', memory: o.memory ?? '256Mi', ...(o.gpus ? { 'nvidia.com/gpu': String(o.gpus) } : {}) };
  const mount = [{ name: 'scratch', mountPath: '/boxgrid' }];
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: { name, labels },
    spec: {
      backoffLimit: o.backoffLimit ?? 0,
      activeDeadlineSeconds: o.deadline,
      ttlSecondsAfterFinished: o.ttl,
      podFailurePolicy: o.podFailurePolicy,
      template: {
        metadata: { labels },
        spec: {
          restartPolicy: 'Never',
          activeDeadlineSeconds: o.podDeadline,
          volumes: [{ name: 'scratch', emptyDir: {} }],
          initContainers: [
            { name: 'stage-in', image: 'boxgrid:1', args: ['stage', 'in'], resources: staging, terminationMessagePolicy: 'FallbackToLogsOnError', volumeMounts: mount },
            { name: 'stage-out', image: 'boxgrid:1', args: ['stage', 'out'], restartPolicy: 'Always', resources: staging, volumeMounts: mount },
          ],
          containers: [
            { name: 'task', image: 'busybox:1.36', command: ['sh', '-c', 'echo hi'], resources: { requests: { ...amounts }, limits: { ...amounts } }, volumeMounts: [{ name: 'scratch', mountPath: '/out', subPath: 'out' }] },
          ],
        },
      },
    },
  };
}

/** Runs each pod by its Job's name. */
function byJob(scripts: Record<string, PodScript | (() => Promise<PodScript>)>) {
  return async (pod: V1Pod): Promise<PodScript> => {
    const s = scripts[pod.metadata?.labels?.['job-name'] ?? ''];
    return typeof s === 'function' ? s() : (s ?? {});
  };
}

function gate(): { open: () => void; wait: Promise<void> } {
  let open!: () => void;
  const wait = new Promise<void>((r) => (open = r));
  return { open, wait };
}

interface Ev { type: string; object: Wire }

/** A client Watch on a collection, collecting its events; `until` awaits one that matches. */
async function watch(fake: FakeKubernetes, path: string, query: Record<string, string> = {}) {
  const events: Ev[] = [];
  const listeners = new Set<() => void>();
  let resolveEnded!: (err: unknown) => void;
  const ended = new Promise<unknown>((r) => (resolveEnded = r));
  const ctl = await new Watch(fake.kubeConfig()).watch(
    path,
    query,
    (type, object) => {
      events.push({ type, object });
      for (const l of listeners) l();
    },
    (err) => resolveEnded(err),
  );
  const until = (pred: (e: Ev) => boolean, what: string, ms = 5000): Promise<Ev> =>
    new Promise((resolve, reject) => {
      const check = () => {
        const hit = events.find(pred);
        if (hit) {
          listeners.delete(check);
          clearTimeout(timer);
          resolve(hit);
        }
      };
      const timer = setTimeout(() => {
        listeners.delete(check);
        reject(new Error(`no watch event "${what}" within ${ms} ms; saw: ${events.map((e) => `${e.type} ${e.object?.metadata?.name} ${e.object?.status?.phase ?? ''}`).join(' | ')}`));
      }, ms);
      listeners.add(check);
      check();
    });
  return { events, until, stop: () => ctl.abort(), ended };
}
const podsPath = `/api/v1/namespaces/${NS}/pods`;
const jobsPath = `/apis/batch/v1/namespaces/${NS}/jobs`;

/** The client's error for a refused call: HTTP code and the Status it carried. */
async function refusal(call: Promise<unknown>): Promise<{ code: number; status: any }> {
  try {
    await call;
  } catch (e) {
    assert.ok(e instanceof ApiException, `expected an ApiException, got ${String(e)}`);
    const body = (e as ApiException<unknown>).body;
    return { code: (e as ApiException<unknown>).code, status: typeof body === 'string' && body ? JSON.parse(body) : body };
  }
  assert.fail('the call succeeded');
}

const container = (pod: Wire, name: string): Wire => [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])].find((c: Wire) => c.name === name);
const cond = (o: Wire, type: string): Wire => o?.status?.conditions?.find((c: Wire) => c.type === type);

test('a Job runs through stage-in, the stage-out sidecar and the task to Succeeded, as a Watch sees it', async (t) => {
  const report = JSON.stringify({ outputs: { 'out.txt': { sha256: 'ab', size: 3 } }, refused: [] });
  const fake = await fakeWith(t, {
    runPod: () => ({ stageIn: { exitCode: 0, message: 'fetched 2 inputs' }, task: { exitCode: 0, log: 'one\ntwo\nthree\n', durationMs: 20 }, stageOut: { exitCode: 0, message: report } }),
  });
  const { batch, core } = apis(fake);
  const w = await watch(fake, podsPath, { labelSelector: 'boxgrid.dev/task-id=t1' });
  t.after(() => w.stop());
  const created = await batch.createNamespacedJob({ namespace: NS, body: taskJob('t1') });
  assert.equal(created.metadata?.name, 't1');
  assert.ok(created.metadata?.uid && created.metadata.resourceVersion && created.metadata.creationTimestamp instanceof Date);
  assert.equal(created.spec?.template.metadata?.labels?.['batch.kubernetes.io/job-name'], 't1');

  const done = await w.until((e) => e.object.status?.phase === 'Succeeded', 'pod Succeeded');
  const seq = w.events.map((e) => e.object);
  const first = (pred: (p: Wire) => boolean, what: string) => {
    const i = seq.findIndex(pred);
    assert.ok(i >= 0, `never saw ${what}`);
    return i;
  };
  assert.equal(w.events[0]!.type, 'ADDED');
  assert.equal(seq[0].status.phase, 'Pending');
  const bound = first((p) => p.spec.nodeName === 'node-a' && cond(p, 'PodScheduled')?.status === 'True', 'the pod bound');
  const stageInRuns = first((p) => container(p, 'stage-in')?.state?.running, 'stage-in running');
  const stageInDone = first((p) => container(p, 'stage-in')?.state?.terminated, 'stage-in terminated');
  const sidecar = first((p) => container(p, 'stage-out')?.state?.running && container(p, 'stage-out').started === true, 'stage-out started');
  const running = first((p) => p.status.phase === 'Running' && container(p, 'task')?.state?.running?.startedAt, 'task running');
  const taskDone = first((p) => container(p, 'task')?.state?.terminated, 'task terminated');
  const end = first((p) => p.status.phase === 'Succeeded', 'Succeeded');
  assert.ok(bound < stageInRuns && stageInRuns < stageInDone && stageInDone < sidecar && sidecar < running && running < taskDone && taskDone < end, 'the steps come in order');
  assert.equal(seq[stageInDone].status.phase, 'Pending');
  assert.equal(container(seq[running], 'task').state.running.startedAt.length, '2024-01-01T00:00:00Z'.length, 'whole-second timestamps');
  // The task has ended but the sidecar still runs: the pod is still Running.
  assert.equal(seq[taskDone].status.phase, 'Running');
  assert.ok(container(seq[taskDone], 'stage-out').state.running);
  assert.deepEqual(
    { exitCode: container(seq[taskDone], 'task').state.terminated.exitCode, reason: container(seq[taskDone], 'task').state.terminated.reason },
    { exitCode: 0, reason: 'Completed' },
  );

  const pod = done.object;
  assert.equal(container(pod, 'stage-in').state.terminated.message, 'fetched 2 inputs');
  assert.equal(container(pod, 'stage-out').state.terminated.exitCode, 0);
  assert.equal(container(pod, 'stage-out').state.terminated.message, report);
  assert.match(pod.metadata.name, /^t1-[a-z0-9]{5}$/);
  assert.equal(pod.metadata.labels['job-name'], 't1');
  assert.equal(pod.metadata.labels['batch.kubernetes.io/job-name'], 't1');
  assert.equal(pod.metadata.labels['boxgrid.dev/task-id'], 't1');
  assert.deepEqual(pod.metadata.ownerReferences.map((r: Wire) => [r.kind, r.name, r.uid, r.controller]), [['Job', 't1', created.metadata?.uid, true]]);
  assert.equal(pod.status.qosClass, 'Burstable');

  const job = await fake.waitFor(() => fake.jobs().find((j) => j.status?.succeeded === 1 && j.status.conditions?.some((c) => c.type === 'Complete')));
  assert.ok(job.status?.completionTime instanceof Date);
  const read = await batch.readNamespacedJob({ name: 't1', namespace: NS });
  assert.deepEqual(read.status?.conditions?.map((c) => [c.type, c.status]), [['SuccessCriteriaMet', 'True'], ['Complete', 'True']]);

  assert.equal(await core.readNamespacedPodLog({ name: pod.metadata.name, namespace: NS, container: 'task', tailLines: 2 }), 'two\nthree\n');
  assert.equal(await core.readNamespacedPodLog({ name: pod.metadata.name, namespace: NS, container: 'task', limitBytes: 3 }), 'one');
  const byLabel = async (labelSelector: string) => (await core.listNamespacedPod({ namespace: NS, labelSelector })).items.map((p) => p.metadata?.name);
  assert.deepEqual(await byLabel('job-name=t1,app.kubernetes.io/managed-by=boxgrid'), [pod.metadata.name]);
  assert.deepEqual(await byLabel('boxgrid.dev/task-id'), [pod.metadata.name]);
  assert.deepEqual(await byLabel('boxgrid.dev/task-id=t2'), []);
  assert.deepEqual(await byLabel('!boxgrid.dev/task-id'), []);
  assert.deepEqual((await batch.listNamespacedJob({ namespace: NS, labelSelector: 'boxgrid.dev/task-id=t1' })).items.map((j) => j.metadata?.name), ['t1']);

  assert.equal(fake.stats.jobsCreated, 1);
  assert.equal(fake.stats.creations.length, 1);
  assert.equal(fake.stats.maxJobsAlive, 1);
  assert.equal(fake.stats.requests['create jobs'], 1);
  assert.equal(fake.stats.requests['watch pods'], 1);
  assert.equal(fake.stats.requests['get pods/log'], 2);
  assert.equal(fake.stats.requests['list pods'], 4);
});

test('Jobs the apiserver would refuse get 422 Invalid; the same name twice gets 409 AlreadyExists', async (t) => {
  const fake = await fakeWith(t);
  const { batch } = apis(fake);
  const bad = (mutate: (j: any) => void) => {
    const j: any = taskJob('bad');
    mutate(j);
    return refusal(batch.createNamespacedJob({ namespace: NS, body: j }));
  };

  const noName = await bad((j) => delete j.spec.template.spec.containers[0].name);
  assert.equal(noName.code, 422);
  assert.equal(noName.status.kind, 'Status');
  assert.equal(noName.status.reason, 'Invalid');
  assert.equal(noName.status.code, 422);
  assert.deepEqual(noName.status.details.causes.map((c: Wire) => c.field), ['spec.template.spec.containers[0].name']);
  assert.match(noName.status.message, /^Job\.batch "bad" is invalid: spec\.template\.spec\.containers\[0\]\.name: Required value/);

  const always = await bad((j) => (j.spec.template.spec.restartPolicy = 'Always'));
  assert.equal(always.code, 422);
  assert.match(always.status.message, /restartPolicy: Unsupported value: "Always"/);

  const noPolicy = await bad((j) => delete j.spec.template.spec.restartPolicy);
  assert.match(noPolicy.status.message, /restartPolicy: Required value/);

  const longLabel = await bad((j) => (j.spec.template.metadata.labels['boxgrid.dev/project'] = 'x'.repeat(64)));
  assert.match(longLabel.status.message, /spec\.template\.metadata\.labels: Invalid value: "x{64}": must be no more than 63 characters/);

  const gpuNoLimit = await bad((j) => {
    j.spec.template.spec.containers[0].resources = { requests: { cpu: '1', memory: '1Gi', 'nvidia.com/gpu': '1' }, limits: { cpu: '1', memory: '1Gi' } };
  });
  assert.match(gpuNoLimit.status.message, /Limit must be set for non overcommitable resources/);

  const badQuantity = await bad((j) => (j.spec.template.spec.containers[0].resources.requests.cpu = 'lots'));
  assert.equal(badQuantity.code, 422);

  const noVolume = await bad((j) => (j.spec.template.spec.volumes = []));
  assert.match(noVolume.status.message, /volumeMounts\[0\]\.name: Not found: "scratch"/);

  const twoNames = await bad((j) => (j.spec.template.spec.containers[0].name = 'stage-in'));
  assert.match(twoNames.status.message, /Duplicate value: "stage-in"/);

  assert.equal(fake.stats.jobsCreated, 0);
  assert.equal(fake.jobs().length, 0);

  await batch.createNamespacedJob({ namespace: NS, body: taskJob('twice') });
  const again = await refusal(batch.createNamespacedJob({ namespace: NS, body: taskJob('twice') }));
  assert.equal(again.code, 409);
  assert.equal(again.status.reason, 'AlreadyExists');
  assert.equal(again.status.message, 'jobs.batch "twice" already exists');
  assert.equal(fake.stats.jobsCreated, 1);
  assert.equal(fake.stats.requests['create jobs'], 10);

  const missing = await refusal(batch.readNamespacedJob({ name: 'nope', namespace: NS }));
  assert.equal(missing.code, 404);
  assert.equal(missing.status.reason, 'NotFound');
});

test('only the namespace is reachable: 401 without the token, 403 elsewhere and at cluster scope', async (t) => {
  const fake = await fakeWith(t);
  const { batch, core } = apis(fake);

  const stranger = new KubeConfig();
  stranger.loadFromOptions({
    clusters: [{ name: 'c', server: fake.url, skipTLSVerify: true }],
    users: [{ name: 'u', token: 'not-the-token' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u', namespace: NS }],
    currentContext: 'x',
  });
  const unauth = await refusal(stranger.makeApiClient(CoreV1Api).listNamespacedPod({ namespace: NS }));
  assert.equal(unauth.code, 401);

  const other = await refusal(batch.listNamespacedJob({ namespace: 'kube-system' }));
  assert.equal(other.code, 403);
  assert.equal(other.status.reason, 'Forbidden');
  assert.match(other.status.message, /cannot list resource "jobs" in API group "batch" in the namespace "kube-system"/);
  const create = await refusal(batch.createNamespacedJob({ namespace: 'default', body: taskJob('x') }));
  assert.equal(create.code, 403);
  assert.match(create.status.message, /cannot create resource "jobs"/);

  const nodes = await refusal(core.listNode());
  assert.equal(nodes.code, 403);
  assert.equal(nodes.status.reason, 'Forbidden');
  assert.match(nodes.status.message, /^nodes is forbidden: User ".*" cannot list resource "nodes" in API group "" at the cluster scope$/);
  assert.equal((await refusal(core.listNamespace())).code, 403);
  assert.equal((await refusal(core.listPodForAllNamespaces())).code, 403);

  // Inside the namespace, only the routes the executor uses exist.
  const secrets = await refusal(core.listNamespacedSecret({ namespace: NS }));
  assert.equal(secrets.code, 404);
  assert.equal(secrets.status.kind, 'Status');

  assert.equal(fake.stats.requests['list nodes'], 1);
  assert.equal(fake.stats.requests['list pods'], 1, 'the one listing every namespace');
  assert.deepEqual((await core.listNamespacedResourceQuota({ namespace: NS })).items, [], 'no quota configured');
});

test('a pod that fits no node stays Pending Unschedulable and binds when another pod ends', async (t) => {
  const release = gate();
  const fake = await fakeWith(t, {
    nodes: [{ name: 'small', cpu: 2, memoryMiB: 4096 }],
    runPod: byJob({ first: async () => (await release.wait, { task: { exitCode: 0 } }) }),
  });
  const { batch } = apis(fake);
  const w = await watch(fake, podsPath);
  t.after(() => w.stop());
  await batch.createNamespacedJob({ namespace: NS, body: taskJob('first', { cpu: '1500m' }) });
  await w.until((e) => e.object.metadata.labels['job-name'] === 'first' && e.object.spec.nodeName === 'small', 'first bound');
  await batch.createNamespacedJob({ namespace: NS, body: taskJob('second', { cpu: '1500m' }) });
  const stuck = await w.until((e) => e.object.metadata.labels['job-name'] === 'second' && cond(e.object, 'PodScheduled')?.status === 'False', 'second unschedulable');
  const c = cond(stuck.object, 'PodScheduled');
  assert.equal(c.reason, 'Unschedulable');
  assert.match(c.message, /^0\/1 nodes are available: 1 Insufficient cpu\./);
  assert.equal(stuck.object.status.phase, 'Pending');
  assert.equal(stuck.object.spec.nodeName, undefined);

  release.open();
  await w.until((e) => e.object.metadata.labels['job-name'] === 'first' && e.object.status.phase === 'Succeeded', 'first Succeeded');
  const bound = await w.until((e) => e.object.metadata.labels['job-name'] === 'second' && e.object.spec.nodeName === 'small', 'second bound');
  assert.equal(cond(bound.object, 'PodScheduled').status, 'True');
  await w.until((e) => e.object.metadata.labels['job-name'] === 'second' && e.object.status.phase === 'Succeeded', 'second Succeeded');
  assert.equal(fake.stats.maxPodsNotRunning, 2, 'the bound-but-starting pod and the unschedulable one');
  assert.equal(fake.stats.maxJobsAlive, 2);
  assert.ok(fake.events().some((e) => e.reason === 'FailedScheduling' && e.name.startsWith('second-')));
});

test('deleting a Job: Background deletes its pods, no policy orphans them, Foreground deletes pods then the Job', async (t) => {
  const fake = await fakeWith(t, { runPod: () => ({ task: 'hang' }) });
  const { batch } = apis(fake);
  const pods = await watch(fake, podsPath);
  const jobsW = await watch(fake, jobsPath);
  t.after(() => (pods.stop(), jobsW.stop()));
  const runningPod = async (job: string) => (await pods.until((e) => e.object.metadata.labels['job-name'] === job && e.object.status.phase === 'Running', `${job} Running`)).object.metadata.name as string;

  await batch.createNamespacedJob({ namespace: NS, body: taskJob('bg') });
  const bgPod = await runningPod('bg');
  const st = await batch.deleteNamespacedJob({ name: 'bg', namespace: NS, propagationPolicy: 'Background' });
  assert.equal(st.status, 'Success');
  const gone = await pods.until((e) => e.type === 'DELETED' && e.object.metadata.name === bgPod, 'bg pod DELETED');
  const terminating = pods.events.find((e) => e.type === 'MODIFIED' && e.object.metadata.name === bgPod && e.object.metadata.deletionTimestamp);
  assert.ok(terminating, 'the pod was terminating before it went');
  assert.equal(container(gone.object, 'task').state.terminated.exitCode, 143, 'SIGTERM');
  assert.ok(jobsW.events.some((e) => e.type === 'DELETED' && e.object.metadata.name === 'bg'));
  assert.equal((await refusal(batch.readNamespacedJob({ name: 'bg', namespace: NS }))).code, 404);

  await batch.createNamespacedJob({ namespace: NS, body: taskJob('orphan') });
  const orphanPod = await runningPod('orphan');
  await batch.deleteNamespacedJob({ name: 'orphan', namespace: NS });
  await jobsW.until((e) => e.type === 'DELETED' && e.object.metadata.name === 'orphan', 'orphan job DELETED');
  const left = await fake.waitFor(() => fake.pods().find((p) => p.metadata?.name === orphanPod && !p.metadata.ownerReferences));
  assert.equal(left.status?.phase, 'Running', 'an orphaned pod keeps running');

  await batch.createNamespacedJob({ namespace: NS, body: taskJob('fg') });
  const fgPod = await runningPod('fg');
  await batch.deleteNamespacedJob({ name: 'fg', namespace: NS, propagationPolicy: 'Foreground' });
  const fgGone = await jobsW.until((e) => e.type === 'DELETED' && e.object.metadata.name === 'fg', 'fg job DELETED');
  const marked = jobsW.events.findIndex((e) => e.type === 'MODIFIED' && e.object.metadata.name === 'fg' && e.object.metadata.deletionTimestamp && e.object.metadata.finalizers?.includes('foregroundDeletion'));
  assert.ok(marked >= 0 && marked < jobsW.events.indexOf(fgGone), 'the Job was marked for foreground deletion first');
  const fgPodGone = await pods.until((e) => e.type === 'DELETED' && e.object.metadata.name === fgPod, 'fg pod DELETED');
  assert.ok(Number(fgPodGone.object.metadata.resourceVersion) < Number(fgGone.object.metadata.resourceVersion), 'its pod went before it');

  assert.equal(fake.stats.jobsDeleted, 3);
  assert.equal(fake.stats.requests['delete jobs'], 3);
  assert.deepEqual(fake.jobs(), []);
});

test('eviction fails the pod as Evicted with DisruptionTarget; backoffLimit decides whether the Job retries', async (t) => {
  const fake = await fakeWith(t, { runPod: () => ({ task: 'hang' }) });
  const { batch } = apis(fake);
  const w = await watch(fake, podsPath);
  t.after(() => w.stop());

  await batch.createNamespacedJob({ namespace: NS, body: taskJob('evicted') });
  const running = await w.until((e) => e.object.metadata.labels['job-name'] === 'evicted' && e.object.status.phase === 'Running', 'Running');
  fake.evict(running.object.metadata.name, 'The node was low on resource: memory.');
  const ev = await w.until((e) => e.object.metadata.labels['job-name'] === 'evicted' && e.object.status.phase === 'Failed', 'Failed');
  assert.equal(ev.object.status.reason, 'Evicted');
  assert.equal(ev.object.status.message, 'The node was low on resource: memory.');
  assert.equal(cond(ev.object, 'DisruptionTarget').status, 'True');
  assert.equal(cond(ev.object, 'DisruptionTarget').reason, 'TerminationByKubelet');
  assert.equal(container(ev.object, 'task').state.terminated.exitCode, 137);
  const job = await fake.waitFor(() => fake.jobs().find((j) => j.metadata?.name === 'evicted' && j.status?.conditions?.some((c) => c.type === 'Failed')));
  assert.equal(job.status?.failed, 1);
  assert.equal(job.status?.conditions?.find((c) => c.type === 'Failed')?.reason, 'BackoffLimitExceeded');

  // backoffLimit 1: the Job controller replaces the evicted pod.
  await batch.createNamespacedJob({ namespace: NS, body: taskJob('retried', { backoffLimit: 1 }) });
  const first = await w.until((e) => e.object.metadata.labels['job-name'] === 'retried' && e.object.status.phase === 'Running', 'retried Running');
  fake.evict(first.object.metadata.name);
  const second = await w.until((e) => e.type === 'ADDED' && e.object.metadata.labels['job-name'] === 'retried' && e.object.metadata.name !== first.object.metadata.name, 'a replacement pod');
  assert.match(second.object.metadata.name, /^retried-/);
});

test('deletePod deletes gracefully (SIGTERM, the sidecar still reports) and the Job controller counts the pod failed', async (t) => {
  const fake = await fakeWith(t, { runPod: () => ({ task: 'hang', stageOut: { exitCode: 0, message: 'partial' } }) });
  const w = await watch(fake, podsPath);
  t.after(() => w.stop());
  await apis(fake).batch.createNamespacedJob({ namespace: NS, body: taskJob('doomed') });
  const running = await w.until((e) => e.object.status.phase === 'Running', 'Running');
  const name = running.object.metadata.name as string;
  await fake.deletePod(name);
  await w.until((e) => e.type === 'DELETED' && e.object.metadata.name === name, 'DELETED'); // the client hears it a little later
  const mine = w.events.filter((e) => e.object.metadata.name === name);
  const marked = mine.findIndex((e) => e.object.metadata.deletionTimestamp);
  const failed = mine.findIndex((e) => e.object.status.phase === 'Failed');
  const gone = mine.findIndex((e) => e.type === 'DELETED');
  assert.ok(marked >= 0 && marked < failed && failed < gone, 'terminating, then Failed, then DELETED');
  assert.equal(container(mine[failed]!.object, 'task').state.terminated.exitCode, 143);
  assert.equal(container(mine[failed]!.object, 'stage-out').state.terminated.message, 'partial');
  const job = await fake.waitFor(() => fake.jobs().find((j) => j.status?.conditions?.some((c) => c.type === 'Failed')));
  assert.equal(job.status?.failed, 1);
  assert.equal(job.status?.conditions?.find((c) => c.type === 'Failed')?.reason, 'BackoffLimitExceeded');

  const never = fake.waitFor(() => false, 60_000);
  await fake.close();
  await assert.rejects(never, /closed/);
});

test("activeDeadlineSeconds: the Job's deadline kills a hanging task (or, as a real cluster does, deletes its pod); a pod's own deadline too", async (t) => {
  const killing = await fakeWith(t, { runPod: () => ({ task: 'hang' }) });
  const deleting = await fakeWith(t, { runPod: () => ({ task: 'hang' }), jobDeadline: 'delete-pods' });
  const wk = await watch(killing, podsPath);
  const wd = await watch(deleting, podsPath);
  t.after(() => (wk.stop(), wd.stop()));
  const started = Date.now();
  await Promise.all([
    apis(killing).batch.createNamespacedJob({ namespace: NS, body: taskJob('slow', { deadline: 1 }) }),
    apis(deleting).batch.createNamespacedJob({ namespace: NS, body: taskJob('slow', { deadline: 1 }) }),
    apis(deleting).batch.createNamespacedJob({ namespace: NS, body: taskJob('slowpod', { podDeadline: 1 }) }),
  ]);

  const [killed, deleted, podDeadline] = await Promise.all([
    wk.until((e) => e.object.status.phase === 'Failed', 'killed'),
    wd.until((e) => e.type === 'DELETED' && e.object.metadata.labels['job-name'] === 'slow', 'deleted'),
    wd.until((e) => e.object.metadata.labels['job-name'] === 'slowpod' && e.object.status.phase === 'Failed', 'pod deadline'),
  ]);
  assert.ok(Date.now() - started >= 900, 'not before the deadline');

  assert.equal(killed.object.status.reason, 'DeadlineExceeded');
  assert.equal(container(killed.object, 'task').state.terminated.exitCode, 137);
  const kJob = await killing.waitFor(() => killing.jobs().find((j) => j.status?.conditions?.some((c) => c.type === 'Failed')));
  assert.equal(kJob.status?.conditions?.find((c) => c.type === 'Failed')?.reason, 'DeadlineExceeded');

  assert.equal(deleted.object.status.phase, 'Failed');
  assert.equal(deleted.object.status.reason, undefined, 'a deleted pod says nothing of the deadline');
  const dJob = await deleting.waitFor(() => deleting.jobs().find((j) => j.metadata?.name === 'slow' && j.status?.conditions?.some((c) => c.type === 'Failed')));
  assert.equal(dJob.status?.conditions?.find((c) => c.type === 'Failed')?.reason, 'DeadlineExceeded');
  assert.equal(dJob.status?.failed, 1);

  assert.equal(podDeadline.object.status.reason, 'DeadlineExceeded');
  const pJob = await deleting.waitFor(() => deleting.jobs().find((j) => j.metadata?.name === 'slowpod' && j.status?.conditions?.some((c) => c.type === 'Failed')));
  assert.equal(pJob.status?.conditions?.find((c) => c.type === 'Failed')?.reason, 'BackoffLimitExceeded');
});

test('image pull errors: the task waits ErrImagePull then ImagePullBackOff and the pod stays Pending', async (t) => {
  const fake = await fakeWith(t, {
    runPod: byJob({
      pull: { pull: { error: 'ErrImagePull', message: 'rpc error: code = NotFound desc = failed to pull and unpack image "busybox:1.36"' } },
      badname: { pull: { error: 'InvalidImageName', message: 'Failed to apply default image tag "Bad:Name": invalid reference format' } },
    }),
  });
  const { batch, core } = apis(fake);
  const w = await watch(fake, podsPath);
  t.after(() => w.stop());
  await batch.createNamespacedJob({ namespace: NS, body: taskJob('pull') });
  await batch.createNamespacedJob({ namespace: NS, body: taskJob('badname') });
  const errPull = await w.until((e) => container(e.object, 'task')?.state?.waiting?.reason === 'ErrImagePull', 'ErrImagePull');
  const backOff = await w.until((e) => container(e.object, 'task')?.state?.waiting?.reason === 'ImagePullBackOff', 'ImagePullBackOff');
  assert.ok(w.events.indexOf(errPull) < w.events.indexOf(backOff));
  assert.equal(backOff.object.status.phase, 'Pending');
  assert.match(container(backOff.object, 'task').state.waiting.message, /^Back-off pulling image "busybox:1\.36": ErrImagePull: rpc error/);
  assert.equal(container(backOff.object, 'stage-in').state.terminated.exitCode, 0);
  assert.ok(container(backOff.object, 'stage-out').state.running);
  const invalidName = await w.until((e) => container(e.object, 'task')?.state?.waiting?.reason === 'InvalidImageName', 'InvalidImageName');
  assert.equal(invalidName.object.status.phase, 'Pending');

  const log = await refusal(core.readNamespacedPodLog({ name: backOff.object.metadata.name, namespace: NS, container: 'task' }));
  assert.equal(log.code, 400);
  assert.match(log.status.message, /is waiting to start: trying and failing to pull image/);
  // It stays that way: nothing after the back-off.
  const pod = fake.pods().find((p) => p.metadata?.name === backOff.object.metadata.name);
  assert.equal(pod?.status?.phase, 'Pending');
});

test('a failed stage-in fails the pod before the task starts; an OOMKilled task ends Failed with its reason', async (t) => {
  const fake = await fakeWith(t, {
    runPod: byJob({
      nostage: { stageIn: { exitCode: 3, log: 'GET /in/abc: 404\n' } },
      oom: { task: { exitCode: 137, reason: 'OOMKilled' }, stageOut: { exitCode: 0, message: '{"outputs":{},"refused":[]}' } },
    }),
  });
  const { batch } = apis(fake);
  const w = await watch(fake, podsPath);
  t.after(() => w.stop());
  await batch.createNamespacedJob({ namespace: NS, body: taskJob('nostage') });
  await batch.createNamespacedJob({ namespace: NS, body: taskJob('oom') });

  const failed = await w.until((e) => e.object.metadata.labels['job-name'] === 'nostage' && e.object.status.phase === 'Failed', 'nostage Failed');
  const si = container(failed.object, 'stage-in').state.terminated;
  assert.deepEqual([si.exitCode, si.reason], [3, 'Error']);
  assert.equal(si.message, 'GET /in/abc: 404', 'FallbackToLogsOnError');
  assert.equal(container(failed.object, 'task').state.waiting.reason, 'PodInitializing');
  assert.ok(!w.events.some((e) => e.object.metadata.labels['job-name'] === 'nostage' && container(e.object, 'task')?.state?.running));

  const oom = await w.until((e) => e.object.metadata.labels['job-name'] === 'oom' && e.object.status.phase === 'Failed', 'oom Failed');
  assert.deepEqual([container(oom.object, 'task').state.terminated.exitCode, container(oom.object, 'task').state.terminated.reason], [137, 'OOMKilled']);
  assert.equal(container(oom.object, 'stage-out').state.terminated.message, '{"outputs":{},"refused":[]}');
});

test('quota: ResourceQuota shows hard and used; a pod over quota is not created until the quota frees', async (t) => {
  const release = gate();
  const fake = await fakeWith(t, {
    quota: { cpu: 2, memoryMiB: 4096, gpus: 1 },
    runPod: byJob({ big: async () => (await release.wait, {}) }),
  });
  const { batch, core } = apis(fake);
  const w = await watch(fake, podsPath);
  t.after(() => w.stop());
  await batch.createNamespacedJob({ namespace: NS, body: taskJob('big', { cpu: '1500m', memory: '1Gi', gpus: 1 }) });
  await w.until((e) => e.object.metadata.labels['job-name'] === 'big' && e.object.spec.nodeName, 'big bound');

  const quotas = await core.listNamespacedResourceQuota({ namespace: NS });
  assert.equal(quotas.items.length, 1);
  const q = quotas.items[0]!;
  assert.equal(q.metadata?.name, 'compute');
  assert.deepEqual(q.spec?.hard, { 'requests.cpu': '2', 'requests.memory': '4Gi', 'requests.nvidia.com/gpu': '1' });
  assert.deepEqual(q.status?.hard, q.spec?.hard);
  // 1500m + the stage-out sidecar's 50m; 1Gi + its 64Mi (the sidecar runs beside the task).
  assert.deepEqual(q.status?.used, { 'requests.cpu': '1550m', 'requests.memory': '1088Mi', 'requests.nvidia.com/gpu': '1' });

  // The Job is created; its pod is refused by quota admission and waits.
  const created = await batch.createNamespacedJob({ namespace: NS, body: taskJob('next', { cpu: '1' }) });
  assert.equal(created.metadata?.name, 'next');
  const refused = await fake.waitFor(() => fake.events().find((e) => e.kind === 'Job' && e.name === 'next' && e.reason === 'FailedCreate'));
  assert.match(refused.message, /exceeded quota: compute, requested: requests\.cpu=1050m, used: requests\.cpu=1550m, limited: requests\.cpu=2/);
  assert.ok(!fake.pods().some((p) => p.metadata?.labels?.['job-name'] === 'next'));

  release.open();
  await w.until((e) => e.object.metadata.labels['job-name'] === 'big' && e.object.status.phase === 'Succeeded', 'big Succeeded');
  await w.until((e) => e.object.metadata.labels['job-name'] === 'next' && e.object.status.phase === 'Succeeded', 'next Succeeded');
  const after = await core.listNamespacedResourceQuota({ namespace: NS });
  assert.deepEqual(after.items[0]!.status?.used, { 'requests.cpu': '0', 'requests.memory': '0', 'requests.nvidia.com/gpu': '0' });
});

test('watches: current objects first, replay after a resourceVersion, 410 when it is too old, ended by close()', async (t) => {
  const fake = await fakeWith(t, { watchHistory: 4 });
  const { batch, core } = apis(fake);
  const before = (await core.listNamespacedPod({ namespace: NS })).metadata?.resourceVersion;
  assert.ok(before);
  const live = await watch(fake, podsPath, { labelSelector: 'job-name=w1' });
  await batch.createNamespacedJob({ namespace: NS, body: taskJob('w1') });
  await batch.createNamespacedJob({ namespace: NS, body: taskJob('w2') });
  await live.until((e) => e.object.status.phase === 'Succeeded', 'w1 Succeeded');
  await fake.waitFor(() => fake.pods().filter((p) => p.status?.phase === 'Succeeded').length === 2);
  assert.ok(live.events.every((e) => e.object.metadata.labels['job-name'] === 'w1'), 'the selector filters');
  assert.ok(live.events.every((e, i) => i === 0 || Number(e.object.metadata.resourceVersion) > Number(live.events[i - 1]!.object.metadata.resourceVersion)));

  // No resourceVersion: ADDED for what exists now.
  const fresh = await watch(fake, podsPath);
  await fresh.until((e) => e.type === 'ADDED', 'ADDED');
  await fake.waitFor(() => fresh.events.length === 2);
  assert.deepEqual(fresh.events.map((e) => [e.type, e.object.status.phase]), [['ADDED', 'Succeeded'], ['ADDED', 'Succeeded']]);

  // From a recent resourceVersion: the events after it.
  const last = String(Math.max(...fake.pods().map((p) => Number(p.metadata?.resourceVersion))));
  const replay = await watch(fake, podsPath, { resourceVersion: String(Number(last) - 1) });
  const replayed = await replay.until((e) => e.object.metadata.resourceVersion === last, 'the replayed last event');
  assert.equal(replayed.type, 'MODIFIED');
  assert.equal(replay.events.length, 1);

  // From before the kept history: one ERROR event with a 410 Status, then the server closes.
  const old = await watch(fake, podsPath, { resourceVersion: before! });
  const err = await old.until((e) => e.type === 'ERROR', 'ERROR');
  assert.equal(err.object.kind, 'Status');
  assert.equal(err.object.code, 410);
  assert.equal(err.object.reason, 'Expired');
  assert.equal(await old.ended, null);

  await fake.close();
  assert.equal(await live.ended, null, 'close() ends an open watch');
  await fresh.ended;
  await replay.ended;
});

test('ttlSecondsAfterFinished 0 deletes a finished Job and its pod', async (t) => {
  const fake = await fakeWith(t);
  const { batch } = apis(fake);
  const pods = await watch(fake, podsPath);
  const jobsW = await watch(fake, jobsPath);
  t.after(() => (pods.stop(), jobsW.stop()));
  await batch.createNamespacedJob({ namespace: NS, body: taskJob('brief', { ttl: 0 }) });
  await pods.until((e) => e.type === 'DELETED', 'pod DELETED');
  await jobsW.until((e) => e.type === 'DELETED' && e.object.metadata.name === 'brief', 'job DELETED');
  assert.ok(jobsW.events.some((e) => e.object.status?.conditions?.some((c: Wire) => c.type === 'Complete')), 'it finished first');
  assert.equal(fake.stats.jobsExpired, 1);
  assert.equal(fake.stats.jobsDeleted, 0, 'jobsDeleted counts DELETE requests only');
  assert.deepEqual([fake.jobs().length, fake.pods().length], [0, 0]);
});

test('podRequests: sidecars add to the sum, regular init containers count as a maximum, requests default to limits', () => {
  const c = (name: string, cpu: string, extra: object = {}) => ({ name, image: 'x', resources: { requests: { cpu, memory: '1Mi' } }, ...extra });
  // init (800m) > task (300m) + sidecar (100m)
  assert.equal(podRequests({ initContainers: [c('in', '800m'), c('side', '100m', { restartPolicy: 'Always' })], containers: [c('task', '300m')] }).cpuMilli, 800);
  // a sidecar started before a regular init container runs beside it: 100m + 800m
  assert.equal(podRequests({ initContainers: [c('side', '100m', { restartPolicy: 'Always' }), c('in', '800m')], containers: [c('task', '300m')] }).cpuMilli, 900);
  // the executor's shape: task + sidecar
  assert.deepEqual(podRequests(taskJob('x', { cpu: '2', memory: '1Gi', gpus: 1 }).spec!.template.spec), { cpuMilli: 2050, memoryBytes: (1024 + 64) * 2 ** 20, gpus: 1 });
  assert.equal(podRequests({ containers: [{ name: 'a', image: 'x', resources: { limits: { cpu: '1500m' } } }] }).cpuMilli, 1500);
});

test('writeKubeconfig writes a kubeconfig a client loads from KUBECONFIG', async (t) => {
  const fake = await fakeWith(t);
  const dir = await mkdtemp(join(tmpdir(), 'fake-k8s-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const path = await fake.writeKubeconfig(dir);
  assert.match(await readFile(path, 'utf8'), /current-context: fake/);
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  assert.equal(kc.getContextObject(kc.getCurrentContext())?.namespace, NS);
  assert.equal(kc.getCurrentCluster()?.server, fake.url);
  await kc.makeApiClient(BatchV1Api).createNamespacedJob({ namespace: NS, body: taskJob('from-file') });
  assert.deepEqual(fake.jobs().map((j) => j.metadata?.name), ['from-file']);
});
