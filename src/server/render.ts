import type { App, Batch, Job, Task } from '../domain/model.js';
import type { InstanceProgress, StepProgress, StepSpec, WorkflowRecord } from '../domain/workflow.js';

/** Domain objects as the API shows them: ISO times, project ids left out. */
const iso = (ms: number): string => new Date(ms).toISOString();
const isoOrNull = (ms: number | null): string | null => (ms === null ? null : iso(ms));

export function renderApp(a: App) {
  return {
    id: a.id, name: a.name, version: a.version, description: a.description, image: a.image, imageDigest: a.imageDigest,
    command: a.command, resources: a.resources, maxRuntimeSeconds: a.maxRuntimeSeconds, maxAttempts: a.maxAttempts,
    replicas: a.replicas, quorum: a.quorum, maxReplicas: a.maxReplicas, adaptiveReplication: a.adaptiveReplication, validator: a.validator, checkpointing: a.checkpointing, platforms: a.platforms,
    nativeCommand: a.nativeCommand, createdAt: iso(a.createdAt),
  };
}

export function renderJob(j: Job) {
  return {
    id: j.id, app: j.appName, appVersion: j.appVersion, batchId: j.batchId, state: j.state, args: j.args, env: j.env,
    inputs: j.inputs, resources: j.resources, priority: j.priority, deadline: isoOrNull(j.deadline), labels: j.labels,
    selector: j.selector, retryAt: isoOrNull(j.retryAt), params: j.params, attempts: j.attempts, reason: j.reason, createdAt: iso(j.createdAt), updatedAt: iso(j.updatedAt),
    finishedAt: isoOrNull(j.finishedAt), checkpoint: j.checkpoint, quorum: j.quorum, resultTaskId: j.canonicalTaskId,
  };
}

export function renderTask(t: Task) {
  return {
    id: t.id, hostId: t.hostId, attempt: t.attempt, replica: t.replica, state: t.state, runtime: t.runtime,
    leaseExpiresAt: iso(t.leaseExpiresAt), createdAt: iso(t.createdAt), startedAt: isoOrNull(t.startedAt), endedAt: isoOrNull(t.endedAt),
    exitCode: t.exitCode, reason: t.reason, outcome: t.outcome, progress: t.progress, usage: t.usage, durationMs: t.durationMs,
    outputs: t.outputs, validity: t.validity,
  };
}

export function renderBatch(b: Batch) {
  return { id: b.id, app: b.appName, appVersion: b.appVersion, size: b.size, labels: b.labels, createdAt: iso(b.createdAt) };
}

/** A workflow with where each step stands (its jobs counted by state; the jobs themselves per step). */
export function renderWorkflow(w: WorkflowRecord) {
  return {
    id: w.id, name: w.name, state: w.state, reason: w.reason, onFailure: w.spec.onFailure, resumedFrom: w.resumedFrom,
    createdAt: iso(w.createdAt), updatedAt: iso(w.updatedAt), endedAt: isoOrNull(w.endedAt),
    steps: w.spec.steps.map((s) => renderStep(s, w.progress.steps[s.name]!)),
  };
}

export function renderStep(s: StepSpec, p: StepProgress) {
  const counts = { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
  let reused = 0;
  for (const i of p.instances) {
    counts[i.state]++;
    if (i.reused) reused++;
  }
  return {
    name: s.name, app: s.app, appVersion: s.appVersion, status: p.status, reason: p.reason, needs: s.needs, forEach: s.forEach?.kind ?? null,
    jobs: p.instances.length, counts, reused, batchIds: p.batchIds,
  };
}

export function renderInstance(i: InstanceProgress) {
  return { item: i.item, jobId: i.jobId, state: i.state, reused: i.reused, reason: i.reason, outputs: i.outputs };
}
