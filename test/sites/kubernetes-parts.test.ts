import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import { Job } from 'kubernetes-models/batch/v1';
import type { TaskAssignment } from '../../src/client/types.js';
import { freeShare, quantity } from '../../src/sites/kubernetes/capacity.js';
import { FlowControl } from '../../src/sites/kubernetes/flow-control.js';
import { CONTAINERS, LABELS, parseToleration, taskJob, type ManifestOptions } from '../../src/sites/kubernetes/job-manifest.js';
import { observePod, observeTask } from '../../src/sites/kubernetes/pod-outcome.js';

/** The pure parts of the Kubernetes executor: the Job it makes, how it reads pods, its bounds. */

export function assignment(over: Partial<TaskAssignment> = {}): TaskAssignment {
  return {
    taskId: 41, jobId: 7, project: 'astro', attempt: 2, runtime: 'docker', leaseExpiresAt: new Date().toISOString(),
    image: 'registry.example/sci/mandel:1.2', imageDigest: null, command: ['/bin/mandel', '--tile', '3'], env: { SEED: '42' },
    resources: { cores: 1.5, memoryMiB: 768, diskMiB: 2048, gpus: 0 }, maxRuntimeSeconds: 600, checkpointing: false, checkpoint: null,
    inputs: [{ name: 'params.json', sha256: 'a'.repeat(64), size: 10 }],
    ...over,
  };
}

const OPTIONS: ManifestOptions = {
  executor: 'bx', stagingImage: 'boxgrid:0.1.0', nodeSelector: {}, tolerations: [], ttlSecondsAfterFinished: 3600, stagingSeconds: 300, pendingTimeoutSeconds: 600,
  transfer: { inputs: 'http://boxgrid:8080/transfer/v1/i', outputs: 'http://boxgrid:8080/transfer/v1/o' },
};

const allContainers = (job: ReturnType<typeof taskJob>): V1Container[] => [...job.spec!.template.spec!.initContainers!, ...job.spec!.template.spec!.containers];

describe('kubernetes executor: the Job for a task', () => {
  it('is a valid batch/v1 Job by Kubernetes\' own schema, with or without GPUs, selectors, tolerations and checkpoints', () => {
    for (const job of [
      taskJob(assignment(), OPTIONS),
      taskJob(assignment({ resources: { cores: 4, memoryMiB: 16_384, diskMiB: 0, gpus: 2 }, checkpointing: true, imageDigest: 'sha256:' + 'b'.repeat(64) }), {
        ...OPTIONS, nodeSelector: { 'nvidia.com/gpu.present': 'true' }, tolerations: [parseToleration('nvidia.com/gpu:NoSchedule'), parseToleration('team=astro:NoExecute')],
      }),
    ]) {
      assert.doesNotThrow(() => new Job(job as never).validate(), 'kubernetes-models validates it');
    }
    // And the schema check is not vacuous: a mistyped field fails it.
    const broken = taskJob(assignment(), OPTIONS) as unknown as { spec: { backoffLimit: unknown } };
    broken.spec.backoffLimit = 'none';
    assert.throws(() => new Job(broken as never).validate(), /backoffLimit/);
  });

  it('leaves retries to boxgrid, bounds the run, cleans up after itself and carries the executor\'s labels', () => {
    const job = taskJob(assignment(), OPTIONS);
    assert.equal(job.metadata!.name, 'bx-task-41', 'the same name on a retry: a second create is AlreadyExists');
    assert.equal(job.spec!.backoffLimit, 0);
    assert.equal(job.spec!.activeDeadlineSeconds, 600 + 2 * 300 + 600, 'a backstop: pending, staging in and out, and the app\'s limit');
    assert.equal(job.spec!.ttlSecondsAfterFinished, 3600);
    const pod = job.spec!.template;
    assert.equal(pod.spec!.restartPolicy, 'Never');
    for (const labels of [job.metadata!.labels!, pod.metadata!.labels!]) {
      assert.deepEqual(
        { managed: labels[LABELS.managedBy], component: labels[LABELS.component], executor: labels[LABELS.executor], task: labels[LABELS.task] },
        { managed: 'boxgrid', component: 'task', executor: 'bx', task: '41' },
      );
    }
  });

  it('asks for the app\'s size as requests equal to limits, GPUs as nvidia.com/gpu', () => {
    const cpuOnly = taskJob(assignment(), OPTIONS).spec!.template.spec!.containers[0]!;
    assert.deepEqual(cpuOnly.resources, {
      requests: { cpu: '1500m', memory: '768Mi', 'ephemeral-storage': '2048Mi' },
      limits: { cpu: '1500m', memory: '768Mi', 'ephemeral-storage': '2048Mi' },
    });
    const gpu = taskJob(assignment({ resources: { cores: 2, memoryMiB: 1024, diskMiB: 0, gpus: 1 } }), OPTIONS).spec!.template.spec!.containers[0]!;
    assert.equal(gpu.resources!.limits!['nvidia.com/gpu'], '1');
    assert.equal(gpu.resources!.requests!['nvidia.com/gpu'], '1');
  });

  it('locks every container down: non-root, read-only root, no privilege escalation, no capabilities, no service account token', () => {
    const job = taskJob(assignment(), OPTIONS);
    const spec = job.spec!.template.spec!;
    assert.equal(spec.automountServiceAccountToken, false, 'the app gets no Kubernetes credential');
    assert.equal(spec.securityContext!.runAsNonRoot, true);
    assert.equal(spec.securityContext!.seccompProfile!.type, 'RuntimeDefault');
    assert.equal(allContainers(job).length, 3);
    for (const c of allContainers(job)) {
      assert.equal(c.securityContext!.runAsNonRoot, true, c.name);
      assert.equal(c.securityContext!.readOnlyRootFilesystem, true, c.name);
      assert.equal(c.securityContext!.allowPrivilegeEscalation, false, c.name);
      assert.deepEqual(c.securityContext!.capabilities!.drop, ['ALL'], c.name);
      assert.ok(c.resources?.requests?.cpu && c.resources.limits?.memory, `${c.name} has requests and limits`);
    }
  });

  it('stages with boxgrid\'s image around the app: inputs read-only at /in, outputs at /out, signed URLs only', () => {
    const job = taskJob(assignment({ imageDigest: 'sha256:' + 'c'.repeat(64) }), OPTIONS);
    const [stageIn, stageOut] = job.spec!.template.spec!.initContainers!;
    const task = job.spec!.template.spec!.containers[0]!;
    assert.equal(stageIn!.name, CONTAINERS.stageIn);
    assert.equal(stageIn!.image, 'boxgrid:0.1.0');
    assert.equal(stageIn!.restartPolicy, undefined, 'runs to the end before the app starts');
    assert.equal(stageOut!.name, CONTAINERS.stageOut);
    assert.equal(stageOut!.restartPolicy, 'Always', 'a native sidecar: stopped only after the app ends');
    const spec = JSON.parse(stageIn!.env!.find((e) => e.name === 'BOXGRID_STAGE')!.value!);
    assert.deepEqual(spec, { inputs: assignment().inputs, checkpoint: null, url: OPTIONS.transfer.inputs });
    assert.equal(stageOut!.env!.find((e) => e.name === 'BOXGRID_STAGE_URL')!.value, OPTIONS.transfer.outputs);
    assert.equal(task.image, `registry.example/sci/mandel@sha256:${'c'.repeat(64)}`, 'the pinned digest runs, not the tag');
    assert.deepEqual(task.args, assignment().command, 'the image\'s entrypoint stays, as under the agent');
    assert.equal(task.command, undefined);
    assert.equal(task.workingDir, '/out');
    assert.deepEqual(task.env, [{ name: 'SEED', value: '42' }]);
    const mounts = Object.fromEntries(task.volumeMounts!.map((m) => [m.mountPath, m]));
    assert.equal(mounts['/in']!.readOnly, true);
    assert.equal(mounts['/out']!.readOnly, false);
    assert.ok(mounts['/tmp'], 'a writable /tmp beside the read-only root');
    for (const c of allContainers(job)) {
      for (const e of c.env ?? []) assert.doesNotMatch(e.value ?? '', /bg[hue]_/, `${c.name} holds no credential`);
    }
  });

  it('reads tolerations as key=value:Effect or key:Effect, and refuses anything else', () => {
    assert.deepEqual(parseToleration('dedicated=batch:NoSchedule'), { key: 'dedicated', operator: 'Equal', value: 'batch', effect: 'NoSchedule' });
    assert.deepEqual(parseToleration('nvidia.com/gpu:NoSchedule'), { key: 'nvidia.com/gpu', operator: 'Exists', effect: 'NoSchedule' });
    assert.throws(() => parseToleration('dedicated=batch'), /key=value:Effect/);
    assert.throws(() => parseToleration('a=b:Sometimes'), /Effect/);
  });
});

// ── pods, as the API shows them ──

const running = { running: { startedAt: new Date('2026-01-01T00:00:00Z') } };
const terminated = (exitCode: number, extra: Record<string, unknown> = {}) => ({
  terminated: { exitCode, startedAt: new Date('2026-01-01T00:00:00Z'), finishedAt: new Date('2026-01-01T00:00:05Z'), ...extra },
});
function pod(status: Record<string, unknown>): V1Pod {
  return { metadata: { name: 'bx-task-41-abcde' }, status: status as V1Pod['status'] };
}
const LIMITS = { maxRuntimeSeconds: 600, memoryMiB: 768 };
const stageOutSaid = (message: string | undefined, exitCode = 0) => ({ name: CONTAINERS.stageOut, state: terminated(exitCode, message === undefined ? {} : { message }) });

describe('kubernetes executor: reading a task pod', () => {
  it('waits while the pod is unscheduled, pulling or staging, and says why', () => {
    const unschedulable = observePod(pod({ phase: 'Pending', conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable', message: '0/3 nodes are available' }] }), LIMITS);
    assert.deepEqual(unschedulable, { phase: 'pending', scheduled: false, reason: 'Unschedulable: 0/3 nodes are available' });
    const onNode = (status: Record<string, unknown>): V1Pod => ({ ...pod(status), spec: { nodeName: 'node-1', containers: [] } });
    const pulling = observePod(onNode({ phase: 'Pending', containerStatuses: [{ name: 'task', state: { waiting: { reason: 'ErrImagePull' } } }] }), LIMITS);
    assert.deepEqual(pulling, { phase: 'pending', scheduled: true, reason: 'ErrImagePull' }, 'a first pull error may clear up: wait for the back-off');
    const limited = observePod(onNode({ phase: 'Pending', containerStatuses: [{ name: 'task', state: { waiting: { reason: 'ImagePullBackOff', message: 'toomanyrequests: rate limit' } } }] }), LIMITS);
    assert.equal(limited.phase, 'pending', 'a rate limit is waited out, not called a missing image');
    assert.equal(observePod(pod({ phase: 'Running', containerStatuses: [{ name: 'task', state: running }] }), LIMITS).phase, 'running');
  });

  it('reports a succeeded task with the outputs its sidecar stored, and only once the sidecar has said so', () => {
    const outputs = { 'tile.png': { sha256: 'd'.repeat(64), size: 99 } };
    const appDone = { phase: 'Running', containerStatuses: [{ name: 'task', state: terminated(0) }] };
    assert.equal(observePod(pod({ ...appDone, initContainerStatuses: [{ name: CONTAINERS.stageOut, state: running }] }), LIMITS).phase, 'running', 'still uploading');
    const done = observePod(pod({ ...appDone, phase: 'Succeeded', initContainerStatuses: [stageOutSaid(JSON.stringify({ outputs, refused: [] }))] }), LIMITS);
    assert.deepEqual(done, { phase: 'ended', outcome: { kind: 'succeeded' }, outputs, durationMs: 5000 });
    const refused = observePod(pod({ ...appDone, initContainerStatuses: [stageOutSaid(JSON.stringify({ outputs: {}, refused: ['"x" is a symbolic link'] }))] }), LIMITS);
    assert.deepEqual(refused.phase === 'ended' && refused.outcome, { kind: 'output_error', message: '"x" is a symbolic link' });
    const silent = observePod(pod({ ...appDone, initContainerStatuses: [stageOutSaid(undefined, 137)] }), LIMITS);
    assert.equal(silent.phase === 'ended' && silent.outcome.kind, 'output_error', 'a sidecar killed before it reported: the outputs are not there');
  });

  it('tells the app\'s failures (exit code, memory, deadline) from the platform\'s (eviction, image, staging)', () => {
    const outcome = (status: Record<string, unknown>) => {
      const o = observePod(pod(status), LIMITS);
      assert.equal(o.phase, 'ended');
      return o.phase === 'ended' ? o.outcome : null;
    };
    assert.deepEqual(outcome({ phase: 'Failed', containerStatuses: [{ name: 'task', state: terminated(3) }] }), { kind: 'failed', exitCode: 3 });
    assert.deepEqual(outcome({ phase: 'Failed', containerStatuses: [{ name: 'task', state: terminated(137, { reason: 'OOMKilled' }) }] }), { kind: 'out_of_memory', limitMiB: 768 });
    assert.deepEqual(outcome({ phase: 'Failed', reason: 'DeadlineExceeded', containerStatuses: [{ name: 'task', state: running }] }), { kind: 'timeout', limitSeconds: 600 });
    assert.deepEqual(outcome({ phase: 'Failed', reason: 'Evicted', message: 'node low on memory', containerStatuses: [{ name: 'task', state: running }] }), { kind: 'aborted' }, 'the platform\'s doing: no attempt spent');
    assert.equal(outcome({ phase: 'Failed', reason: 'Evicted', message: 'Pod ephemeral local storage usage exceeds the total limit', containerStatuses: [{ name: 'task', state: terminated(137) }] })!.kind, 'agent_error', 'its own disk use is the app\'s doing');
    assert.deepEqual(outcome({ phase: 'Pending', initContainerStatuses: [{ name: CONTAINERS.stageIn, state: { waiting: { reason: 'ImagePullBackOff', message: 'boxgrid:9: not found' } } }] }), {
      kind: 'agent_error', message: 'staging container stage-in: ImagePullBackOff: boxgrid:9: not found',
    }, 'a broken staging image is the executor\'s set-up, not the app\'s image');
    assert.deepEqual(outcome({ phase: 'Pending', containerStatuses: [{ name: 'task', state: { waiting: { reason: 'ImagePullBackOff', message: 'manifest unknown' } } }] }), {
      kind: 'image_error', message: 'ImagePullBackOff: manifest unknown',
    });
    assert.deepEqual(outcome({ phase: 'Failed', initContainerStatuses: [{ name: CONTAINERS.stageIn, state: terminated(1, { message: 'blob abc arrived with sha256 def' }) }] }), {
      kind: 'agent_error', message: 'staging inputs failed: blob abc arrived with sha256 def',
    });
  });
});

describe('kubernetes executor: reading a task from its Job and pod', () => {
  const limits = { maxRuntimeSeconds: 600, resources: { memoryMiB: 768 } };
  const job = (conditions: unknown[] = []) => ({ metadata: { name: 'bx-task-41' }, status: { conditions } }) as never;
  it('takes the Job\'s deadline over a pod killed with 143 for it, as a real Job controller deletes the pod', () => {
    const killed = { metadata: { name: 'p', deletionTimestamp: new Date() }, status: { phase: 'Failed', containerStatuses: [{ name: 'task', state: terminated(143) }] } } as V1Pod;
    const deadline = job([{ type: 'Failed', status: 'True', reason: 'DeadlineExceeded' }]);
    assert.deepEqual(observeTask(limits, killed, deadline), { phase: 'ended', outcome: { kind: 'timeout', limitSeconds: 600 }, outputs: {}, durationMs: 600_000 });
    const gone = observeTask(limits, undefined, deadline);
    assert.equal(gone.phase === 'ended' && gone.outcome.kind, 'timeout', 'and when the pod is already gone');
    const deleted = observeTask(limits, killed, job());
    assert.equal(deleted.phase === 'ended' && deleted.outcome.kind, 'aborted', 'a pod deleted under the task is not the app\'s failure');
  });
  it('waits for a Job\'s pod, and calls a vanished Job lost', () => {
    assert.deepEqual(observeTask(limits, undefined, job()), { phase: 'pending', scheduled: false, reason: 'the Job has no pod yet' });
    const complete = observeTask(limits, undefined, job([{ type: 'Complete', status: 'True' }]));
    assert.deepEqual(complete.phase === 'ended' && complete.outcome, { kind: 'agent_error', message: 'its pod was gone before its outcome was read' });
    const lost = observeTask(limits, undefined, undefined);
    assert.deepEqual(lost.phase === 'ended' && lost.outcome, { kind: 'agent_error', message: 'its Job was deleted outside boxgrid' });
  });
  it('calls an eviction the platform\'s doing even when the kubelet killed the container', () => {
    const evicted = observeTask(limits, pod({ phase: 'Failed', reason: 'Evicted', message: 'low on memory', containerStatuses: [{ name: 'task', state: terminated(137) }] }), job());
    assert.equal(evicted.phase === 'ended' && evicted.outcome.kind, 'aborted');
  });
});

describe('kubernetes executor: flow control and capacity', () => {
  it('never lets pods not yet running pass the bound, and creates at the set rate after a burst', () => {
    const f = new FlowControl({ maxPending: 10, ratePerSecond: 5, burst: 10 }, 0);
    assert.equal(f.allowance(0, 0), 10, 'a burst up to the bound');
    assert.equal(f.allowance(7, 0), 3, 'only what the bound leaves');
    assert.equal(f.allowance(12, 0), 0, 'never negative');
    f.spend(10, 0);
    assert.equal(f.allowance(0, 0), 0, 'tokens spent');
    assert.equal(f.msUntilToken(0), 200, 'one token every 1/5 s');
    assert.equal(f.allowance(0, 1000), 5, 'refilled at 5 per second');
    assert.equal(f.allowance(0, 60_000), 10, 'but never past the burst');
    // Over a long run the creations follow the rate, whatever the pending bound allows.
    const g = new FlowControl({ maxPending: 1000, ratePerSecond: 5, burst: 10 }, 0);
    let created = 0;
    for (let t = 0; t <= 60_000; t += 100) {
      const n = g.allowance(0, t);
      g.spend(n, t);
      created += n;
    }
    assert.equal(created, 10 + 5 * 60, 'the burst, then 5 per second for 60 s');
  });

  it('leases only what both the executor\'s share and the namespace\'s quotas leave', () => {
    const limit = { cores: 16, memoryMiB: 32_768, gpus: 2 };
    const held = { cores: 4, memoryMiB: 8192, gpus: 1 };
    assert.deepEqual(freeShare(limit, held, []), { cores: 12, memoryMiB: 24_576, gpus: 1 });
    const quota = { status: { hard: { 'requests.cpu': '10', 'requests.memory': '20Gi', 'requests.nvidia.com/gpu': '1' }, used: { 'requests.cpu': '4500m', 'requests.memory': '8Gi', 'requests.nvidia.com/gpu': '1' } } };
    assert.deepEqual(freeShare(limit, held, [quota]), { cores: 5.5, memoryMiB: 12_288, gpus: 0 });
    assert.deepEqual(freeShare(limit, { cores: 20, memoryMiB: 0, gpus: 0 }, []).cores, 0, 'never below zero');
  });

  it('reads Kubernetes quantities', () => {
    assert.equal(quantity('500m'), 0.5);
    assert.equal(quantity('2'), 2);
    assert.equal(quantity('1Gi'), 2 ** 30);
    assert.equal(quantity('1.5G'), 1.5e9);
    assert.equal(quantity('100Mi') / 2 ** 20, 100);
    assert.throws(() => quantity('lots'), /not a Kubernetes quantity/);
  });
});
