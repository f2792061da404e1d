import type { V1Job, V1ResourceRequirements, V1SecurityContext, V1Toleration } from '@kubernetes/client-node';
import type { TaskAssignment } from '../../client/types.js';
import { pullRef } from '../../domain/image-ref.js';

/** Labels every object the executor makes carries: how it finds its own, and how a NetworkPolicy picks task pods. */
export const LABELS = {
  managedBy: 'app.kubernetes.io/managed-by',
  component: 'boxgrid.dev/component',
  executor: 'boxgrid.dev/executor',
  task: 'boxgrid.dev/task-id',
  job: 'boxgrid.dev/job-id',
} as const;

export const ANNOTATIONS = {
  attempt: 'boxgrid.dev/attempt',
  project: 'boxgrid.dev/project',
  resources: 'boxgrid.dev/resources',
  maxRuntime: 'boxgrid.dev/max-runtime-seconds',
} as const;

/** The names of a task pod's containers (the executor reads their statuses by name). */
export const CONTAINERS = { stageIn: 'stage-in', stageOut: 'stage-out', task: 'task' } as const;

/** Where a task pod's shared scratch volume is mounted in the staging containers. */
export const STAGING_DIR = '/boxgrid';
/** The file stage-out writes in the scratch dir once it is ready for SIGTERM (its startup probe looks for it). */
export const STAGE_OUT_READY_FILE = '.stage-out-ready';
const STAGE_OUT_READY = `${STAGING_DIR}/${STAGE_OUT_READY_FILE}`;

export interface ManifestOptions {
  /** The executor's name: a label value on everything it makes. */
  executor: string;
  /** boxgrid's own image, run by the staging containers. */
  stagingImage: string;
  nodeSelector: Record<string, string>;
  tolerations: V1Toleration[];
  /** Finished Jobs are removed by Kubernetes this long after they end, if the executor has not already. */
  ttlSecondsAfterFinished: number;
  /** Time allowed for each of staging in and out, on top of the app's run time. */
  stagingSeconds: number;
  /** How long the executor lets a pod wait to start (part of the Job's backstop deadline). */
  pendingTimeoutSeconds: number;
  /** The staging containers' transfer URLs for this task. */
  transfer: TransferUrls;
}

/** URLs the staging containers use instead of a credential: signed for one task, and expiring. */
export interface TransferUrls {
  /** GET `${inputs}/${sha256}` fetches an input (or the checkpoint). */
  inputs: string;
  /** PUT `${outputs}/${sha256}` stores an output. */
  outputs: string;
}

/** What the stage-in container reads from $BOXGRID_STAGE: the files to fetch and where they go. */
export interface StageInSpec {
  inputs: Array<{ name: string; sha256: string; size: number }>;
  checkpoint: string | null;
  url: string;
}

/** What the stage-out sidecar writes as its termination message: the outputs it stored, or why it refused them. */
export interface StageOutReport {
  outputs: Record<string, { sha256: string; size: number }>;
  refused: string[];
}

/** A Job's name for a task: the same on every retry, so creating it twice is caught as AlreadyExists. */
export function jobName(executor: string, taskId: number): string {
  return `${executor}-task-${taskId}`.slice(0, 63);
}

/** Kubernetes quantities for a task's size: requests equal limits, so the pod is Guaranteed and packs as boxgrid counted it. */
export function taskResources(r: TaskAssignment['resources']): V1ResourceRequirements {
  const amounts: Record<string, string> = {
    cpu: `${Math.max(1, Math.round(r.cores * 1000))}m`,
    memory: `${r.memoryMiB}Mi`,
    ...(r.diskMiB > 0 ? { 'ephemeral-storage': `${r.diskMiB}Mi` } : {}),
    ...(r.gpus > 0 ? { 'nvidia.com/gpu': String(r.gpus) } : {}),
  };
  return { requests: { ...amounts }, limits: { ...amounts } };
}

/** Staging containers are small and bounded; they only move files. */
const STAGING_RESOURCES: V1ResourceRequirements = {
  requests: { cpu: '50m', memory: '64Mi' },
  limits: { cpu: '500m', memory: '256Mi' },
};
/** What a task pod asks for besides the app: the stage-out sidecar runs beside it (stage-in ran before). */
export const STAGING_OVERHEAD = { cores: 0.05, memoryMiB: 64, gpus: 0 } as const;

/** Every container: no root, no privilege, no capability, nothing written outside its volumes. */
const LOCKED_DOWN: V1SecurityContext = {
  runAsNonRoot: true,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  privileged: false,
  capabilities: { drop: ['ALL'] },
};

/** nobody:nogroup, as the agent runs containers. */
const NOBODY = 65534;

/**
 * The batch/v1 Job that runs one task. Its pod has three containers around one scratch
 * volume: `stage-in` (an init container, boxgrid's image) fetches the inputs; `task` (the
 * app's image) reads /in and writes /out; `stage-out` (a native sidecar, boxgrid's image)
 * waits, and when Kubernetes stops it after `task` has ended it stores /out and writes what it
 * stored as its termination message, which the executor reads back from the pod's status.
 * No credential enters the pod: the staging containers use URLs signed for this task only.
 */
export function taskJob(task: TaskAssignment, o: ManifestOptions): V1Job {
  const labels = {
    [LABELS.managedBy]: 'boxgrid',
    [LABELS.component]: 'task',
    [LABELS.executor]: o.executor,
    [LABELS.task]: String(task.taskId),
    [LABELS.job]: String(task.jobId),
  };
  const stageIn: StageInSpec = { inputs: task.inputs, checkpoint: task.checkpoint, url: o.transfer.inputs };
  const scratch = (subPath: string, mountPath: string, readOnly = false) => ({ name: 'scratch', subPath, mountPath, readOnly });
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: {
      name: jobName(o.executor, task.taskId),
      labels,
      // What the executor needs to adopt the Job after a restart (see KubernetesExecutor.adopt).
      annotations: {
        [ANNOTATIONS.attempt]: String(task.attempt),
        [ANNOTATIONS.project]: task.project,
        [ANNOTATIONS.resources]: JSON.stringify(task.resources),
        [ANNOTATIONS.maxRuntime]: String(task.maxRuntimeSeconds),
      },
    },
    spec: {
      // Retries are boxgrid's: a failed pod is reported, and boxgrid decides where the job runs next.
      backoffLimit: 0,
      // A backstop only: it counts from the Job's creation (scheduling, pulls and staging too),
      // so the app's own limit is kept by the executor from the app's start.
      activeDeadlineSeconds: o.pendingTimeoutSeconds + 2 * o.stagingSeconds + task.maxRuntimeSeconds,
      ttlSecondsAfterFinished: o.ttlSecondsAfterFinished,
      template: {
        metadata: {
          labels,
          // A service mesh's proxy would be a main container that never exits: the sidecar would
          // never be told the app ended, and the termination messages would share less room.
          annotations: { 'sidecar.istio.io/inject': 'false', 'linkerd.io/inject': 'disabled' },
        },
        spec: {
          restartPolicy: 'Never',
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          // The sidecar's upload happens after SIGTERM: this is its time to finish.
          terminationGracePeriodSeconds: o.stagingSeconds,
          securityContext: { runAsNonRoot: true, runAsUser: NOBODY, runAsGroup: NOBODY, fsGroup: NOBODY, seccompProfile: { type: 'RuntimeDefault' } },
          ...(Object.keys(o.nodeSelector).length > 0 ? { nodeSelector: o.nodeSelector } : {}),
          ...(o.tolerations.length > 0 ? { tolerations: o.tolerations } : {}),
          volumes: [
            { name: 'scratch', emptyDir: task.resources.diskMiB > 0 ? { sizeLimit: `${task.resources.diskMiB}Mi` } : {} },
            { name: 'tmp', emptyDir: { medium: 'Memory', sizeLimit: '64Mi' } },
          ],
          initContainers: [
            {
              name: CONTAINERS.stageIn,
              image: o.stagingImage,
              args: ['stage', 'in', '--dir', STAGING_DIR],
              env: [{ name: 'BOXGRID_STAGE', value: JSON.stringify(stageIn) }],
              resources: STAGING_RESOURCES,
              securityContext: LOCKED_DOWN,
              terminationMessagePolicy: 'FallbackToLogsOnError',
              volumeMounts: [{ name: 'scratch', mountPath: STAGING_DIR }],
            },
            {
              name: CONTAINERS.stageOut,
              image: o.stagingImage,
              // restartPolicy Always makes it a native sidecar (Kubernetes 1.29+): it runs beside
              // `task` and is stopped only after `task` has ended.
              restartPolicy: 'Always',
              args: ['stage', 'out', '--dir', STAGING_DIR, '--grace-seconds', String(o.stagingSeconds)],
              env: [{ name: 'BOXGRID_STAGE_URL', value: o.transfer.outputs }],
              // The app starts only once this passes, that is once stage-out listens for SIGTERM:
              // a SIGTERM before that would kill it before it stored anything.
              startupProbe: { exec: { command: ['node', '-e', `require('fs').accessSync('${STAGE_OUT_READY}')`] }, periodSeconds: 1, failureThreshold: 60 },
              resources: STAGING_RESOURCES,
              securityContext: LOCKED_DOWN,
              volumeMounts: [{ name: 'scratch', mountPath: STAGING_DIR }],
            },
          ],
          containers: [
            {
              name: CONTAINERS.task,
              image: pullRef(task),
              // As the agent runs it under Docker: the command as the image's arguments (its
              // ENTRYPOINT, if any, stays), in /out.
              ...(task.command.length > 0 ? { args: task.command } : {}),
              workingDir: '/out',
              env: Object.entries(task.env).map(([name, value]) => ({ name, value })),
              resources: taskResources(task.resources),
              securityContext: LOCKED_DOWN,
              volumeMounts: [
                scratch('in', '/in', true),
                scratch('out', '/out'),
                ...(task.checkpointing ? [scratch('checkpoint', '/checkpoint')] : []),
                { name: 'tmp', mountPath: '/tmp' },
              ],
            },
          ],
        },
      },
    },
  };
}

/** `key=value:Effect` or `key:Effect` (operator Exists) as a toleration. */
export function parseToleration(text: string): V1Toleration {
  const m = /^([A-Za-z0-9./_-]+)(?:=([A-Za-z0-9._-]*))?:(NoSchedule|PreferNoSchedule|NoExecute)$/.exec(text);
  if (!m) throw new Error(`"${text}" is not a toleration: write key=value:Effect or key:Effect (Effect: NoSchedule, PreferNoSchedule or NoExecute)`);
  const [, key, value, effect] = m;
  return value === undefined ? { key: key!, operator: 'Exists', effect: effect! } : { key: key!, operator: 'Equal', value, effect: effect! };
}
