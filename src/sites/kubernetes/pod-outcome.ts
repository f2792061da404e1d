import type { V1ContainerStatus, V1Job, V1Pod } from '@kubernetes/client-node';
import type { TaskOutcome } from '../../domain/outcomes.js';
import { CONTAINERS, type StageOutReport } from './job-manifest.js';

/** Where a task's pod is, as far as the executor needs to know. */
export type PodObservation =
  /**
   * Not started yet. `scheduled` is false while no node has taken the pod (the executor gives
   * such a task back after a while); `reason` says what it waits for.
   */
  | { phase: 'pending'; scheduled: boolean; reason: string | null }
  | { phase: 'running'; startedAt: number }
  /** Over: report `outcome` (with `outputs` when it succeeded) and delete the Job. */
  | { phase: 'ended'; outcome: TaskOutcome; outputs: StageOutReport['outputs']; durationMs: number };

/** Waiting reasons that never clear up by themselves. */
const HOPELESS_IMAGES = new Set(['InvalidImageName', 'ErrImageNeverPull']);
/** A pull back-off whose message says the image is not there or not allowed: waiting will not help. */
const IMAGE_MISSING = /not found|manifest unknown|unauthorized|denied|does not exist|no such host|invalid reference|forbidden/i;
/** Waiting reasons that mean the pod as made cannot start (a bad spec, or a node problem). */
const CONFIG_ERRORS = new Set(['CreateContainerConfigError', 'CreateContainerError', 'RunContainerError']);
/** An eviction for the pod's own disk use is the app's doing (it wrote past its limit), not the platform's. */
const OWN_DISK = /ephemeral|emptyDir|local storage/i;

/**
 * A task from its Job and pod. The Job speaks first when it failed as a whole: past its
 * deadline a real Job controller deletes the pod (its containers end with 143 and no reason),
 * so only the Job's condition says DeadlineExceeded. A Job with no pod yet is pending; a Job
 * that ended with its pod gone, or no Job at all, lost what the pod said.
 */
export function observeTask(limits: { maxRuntimeSeconds: number; resources: { memoryMiB: number } }, pod: V1Pod | undefined, job: V1Job | undefined): PodObservation {
  const failed = job?.status?.conditions?.find((c) => (c.type === 'Failed' || c.type === 'FailureTarget') && c.status === 'True');
  if (failed?.reason === 'DeadlineExceeded') return ended({ kind: 'timeout', limitSeconds: limits.maxRuntimeSeconds }, limits.maxRuntimeSeconds * 1000);
  if (pod) return observePod(pod, { maxRuntimeSeconds: limits.maxRuntimeSeconds, memoryMiB: limits.resources.memoryMiB });
  if (!job) return ended({ kind: 'agent_error', message: 'its Job was deleted outside boxgrid' }, 0);
  if (failed) return ended({ kind: 'agent_error', message: `its Job failed without a pod: ${failed.reason ?? ''} ${failed.message ?? ''}`.trim() }, 0);
  if (job.status?.conditions?.some((c) => c.type === 'Complete' && c.status === 'True')) {
    return ended({ kind: 'agent_error', message: 'its pod was gone before its outcome was read' }, 0);
  }
  return { phase: 'pending', scheduled: false, reason: 'the Job has no pod yet' };
}

/**
 * Reads a task pod's status into an observation. Pure: the executor's loop decides what to do
 * with it. What the platform did to the pod (an eviction, a preemption, a drain) is `aborted`:
 * the task is given back and its job requeued without spending an attempt. A pod that cannot
 * start as made (its staging image, a config error) is `agent_error`; the app's image missing
 * is `image_error`; the app's own exit is `failed` or `out_of_memory`.
 */
export function observePod(pod: V1Pod, limits: { maxRuntimeSeconds: number; memoryMiB: number }): PodObservation {
  const status = pod.status ?? {};
  const task = status.containerStatuses?.find((c) => c.name === CONTAINERS.task);
  const stageIn = status.initContainerStatuses?.find((c) => c.name === CONTAINERS.stageIn);
  const stageOut = status.initContainerStatuses?.find((c) => c.name === CONTAINERS.stageOut);
  const startedAt = time(task?.state?.running?.startedAt ?? task?.state?.terminated?.startedAt);
  const ranMs = (end: unknown) => (startedAt === null ? 0 : Math.max(0, (time(end) ?? startedAt) - startedAt));

  // The platform ended the pod (its containers die with 137 or 143, which is not the app's doing).
  if (status.reason === 'Evicted' || hasCondition(pod, 'DisruptionTarget')) {
    const why = status.message ?? status.reason ?? 'disruption';
    if (status.reason === 'Evicted' && OWN_DISK.test(why)) return ended({ kind: 'agent_error', message: `pod evicted for its disk use: ${why}` }, ranMs(undefined));
    return ended({ kind: 'aborted' }, ranMs(task?.state?.terminated?.finishedAt));
  }
  if (status.reason === 'DeadlineExceeded') {
    return ended({ kind: 'timeout', limitSeconds: limits.maxRuntimeSeconds }, ranMs(undefined));
  }
  // A staging container that cannot start is the executor's set-up, not the app.
  for (const c of status.initContainerStatuses ?? []) {
    const w = c.state?.waiting;
    if (w?.reason && (HOPELESS_IMAGES.has(w.reason) || CONFIG_ERRORS.has(w.reason) || (w.reason === 'ImagePullBackOff' && IMAGE_MISSING.test(w.message ?? '')))) {
      return ended({ kind: 'agent_error', message: `staging container ${c.name}: ${w.reason}: ${w.message ?? ''}`.trim() }, 0);
    }
  }
  const waiting = task?.state?.waiting;
  if (waiting?.reason && (HOPELESS_IMAGES.has(waiting.reason) || (waiting.reason === 'ImagePullBackOff' && IMAGE_MISSING.test(waiting.message ?? '')))) {
    return ended({ kind: 'image_error', message: `${waiting.reason}: ${waiting.message ?? 'the image could not be pulled'}` }, 0);
  }
  if (waiting?.reason && CONFIG_ERRORS.has(waiting.reason)) {
    return ended({ kind: 'agent_error', message: `${waiting.reason}: ${waiting.message ?? 'the container could not be created'}` }, 0);
  }
  const stageInEnd = stageIn?.state?.terminated;
  if (stageInEnd && stageInEnd.exitCode !== 0) {
    return ended({ kind: 'agent_error', message: `staging inputs failed: ${oneLine(stageInEnd.message) ?? `exit code ${stageInEnd.exitCode}`}` }, 0);
  }

  const end = task?.state?.terminated;
  if (!end) {
    if (status.phase === 'Failed' || status.phase === 'Succeeded') {
      return ended({ kind: 'agent_error', message: `pod ${status.phase.toLowerCase()} before the task ran: ${status.message ?? status.reason ?? 'no reason given'}` }, 0);
    }
    if (task?.state?.running && startedAt !== null) return { phase: 'running', startedAt };
    const unscheduled = pendingReason(pod);
    return { phase: 'pending', scheduled: unscheduled === null && !!pod.spec?.nodeName, reason: waiting?.reason ?? unscheduled };
  }
  const durationMs = ranMs(end.finishedAt);
  // Killed because its pod was being deleted (by someone, or a drained node): not the app's doing.
  if (pod.metadata?.deletionTimestamp && end.exitCode !== 0 && end.reason !== 'OOMKilled') return ended({ kind: 'aborted' }, durationMs);
  if (end.reason === 'OOMKilled') return ended({ kind: 'out_of_memory', limitMiB: limits.memoryMiB }, durationMs);
  if (end.exitCode !== 0) return ended({ kind: 'failed', exitCode: clampExit(end.exitCode) }, durationMs);
  // The app succeeded: its outputs count only once the sidecar has said what it stored.
  const out = stageOut?.state?.terminated;
  if (!out) return { phase: 'running', startedAt: startedAt ?? 0 };
  const report = parseStageOut(out);
  if ('error' in report) return ended({ kind: 'output_error', message: report.error }, durationMs);
  if (report.refused.length > 0) return ended({ kind: 'output_error', message: report.refused.join('; ') }, durationMs);
  return { phase: 'ended', outcome: { kind: 'succeeded' }, outputs: report.outputs, durationMs };
}

function ended(outcome: TaskOutcome, durationMs: number): PodObservation {
  return { phase: 'ended', outcome, outputs: {}, durationMs };
}

function parseStageOut(s: NonNullable<V1ContainerStatus['state']>['terminated'] & object): StageOutReport | { error: string } {
  if (!s.message) return { error: `the outputs were not stored (stage-out ended with code ${s.exitCode}${s.reason ? `, ${s.reason}` : ''} and said nothing)` };
  try {
    const r = JSON.parse(s.message) as StageOutReport;
    if (typeof r !== 'object' || r === null || typeof r.outputs !== 'object' || !Array.isArray(r.refused)) throw new Error('not a stage-out report');
    return r;
  } catch {
    return { error: `the outputs were not stored: ${oneLine(s.message)}` };
  }
}

/** Why a pod that has not started is waiting, e.g. "Unschedulable: 0/3 nodes are available…". */
function pendingReason(pod: V1Pod): string | null {
  const c = pod.status?.conditions?.find((x) => x.type === 'PodScheduled' && x.status === 'False');
  return c ? `${c.reason ?? 'Unscheduled'}${c.message ? `: ${c.message}` : ''}` : null;
}

function hasCondition(pod: V1Pod, type: string): boolean {
  return pod.status?.conditions?.some((c) => c.type === type && c.status === 'True') ?? false;
}

/** A Kubernetes timestamp (a Date from the client, or a string) in epoch ms. */
export function time(t: unknown): number | null {
  if (t instanceof Date) return t.getTime();
  if (typeof t === 'string') return Date.parse(t);
  return null;
}

function oneLine(s: string | undefined): string | undefined {
  return s?.trim().split('\n').slice(-3).join(' ').slice(0, 1000);
}

function clampExit(code: number): number {
  return Math.max(-255, Math.min(255, code));
}
