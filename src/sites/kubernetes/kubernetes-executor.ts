import { randomUUID } from 'node:crypto';
import type { V1Job, V1Pod } from '@kubernetes/client-node';
import type { BoxgridClient } from '../../client/client.js';
import type { ReportBody, TaskAssignment } from '../../client/types.js';
import type { Resources } from '../../domain/resources.js';
import { transferUrl } from '../../service/transfer-signature.js';
import { freeShare, sumShare, type Share } from './capacity.js';
import { FlowControl } from './flow-control.js';
import { ANNOTATIONS, CONTAINERS, LABELS, taskJob, type ManifestOptions } from './job-manifest.js';
import type { KubeOps } from './kube-ops.js';
import { observeTask, time, type PodObservation } from './pod-outcome.js';

export interface KubernetesExecutorOptions {
  /** The executor's name: the label on its Jobs and pods (two executors in one namespace need two). */
  name: string;
  /** The agent protocol, with the executor's host credential. */
  client: BoxgridClient;
  /** That credential (signs the pods' transfer URLs). */
  token: string;
  /** The server as pods reach it (often a Service name, not what the executor uses). */
  transferServer: string;
  kube: KubeOps;
  /** Pods created but not yet running stay under this; creations follow this rate. */
  flow: { maxPending: number; ratePerSecond: number; burst: number };
  /** The share of the cluster boxgrid may use (further bounded by the namespace's ResourceQuotas). */
  limit: Share;
  /** Disk a task may ask for (its scratch emptyDir), in MiB. */
  maxTaskDiskMiB: number;
  /** A pod that has not started after this long (no node has room, say) is given back to the queue. */
  pendingTimeoutSeconds: number;
  manifest: Omit<ManifestOptions, 'transfer' | 'executor'>;
  log: (level: 'info' | 'warn', message: string) => void;
  now?: () => number;
}

/** A task the executor holds: its Job, and once it ended, the report still to be delivered. */
interface Held {
  taskId: number;
  resources: Resources;
  maxRuntimeSeconds: number;
  job: string;
  since: number;
  /** Set once the pod has ended: kept here, so a Job removed by its TTL before delivery loses nothing. */
  report: ReportBody | null;
}

export interface PassSummary {
  created: number;
  reported: number;
  pending: number;
  running: number;
}

/** Most tasks asked for in one work request. */
const MAX_TASKS_PER_REQUEST = 32;
/** The largest log start attached to a report. */
const LOG_BYTES = 256 * 1024;

/**
 * Runs boxgrid tasks as Kubernetes Jobs. It is a host to the server (it leases work through
 * the agent protocol, for the share of the cluster it has free) and a controller to the
 * cluster: each `pass` compares the tasks it holds with its Jobs and pods and acts on the
 * difference — reports pods that ended and deletes their Jobs, gives back pods that cannot
 * start, keeps the leases of the rest, and creates Jobs for new work within the flow control's
 * bounds. Everything it needs is in the cluster or the server, so a pass after a crash (see
 * `adopt`) carries on where the last one stopped.
 */
export class KubernetesExecutor {
  private readonly held = new Map<number, Held>();
  private readonly flow: FlowControl;
  private readonly now: () => number;
  private heartbeatDue = 0;
  private heartbeatSeconds = 30;
  private askAfter = 0;

  constructor(private readonly o: KubernetesExecutorOptions) {
    this.now = o.now ?? Date.now;
    this.flow = new FlowControl(o.flow, this.now());
  }

  /** The tasks held now (for tests and logs). */
  get tasks(): number[] {
    return [...this.held.keys()];
  }

  /**
   * Takes back the Jobs an earlier run of this executor left (found by its label): their tasks
   * are still leased to this host, so the next heartbeat keeps them, or the server says abort.
   */
  async adopt(): Promise<number> {
    let adopted = 0;
    for (const job of await this.o.kube.listJobs()) {
      const taskId = Number(job.metadata?.labels?.[LABELS.task]);
      if (!Number.isInteger(taskId) || this.held.has(taskId)) continue;
      const a = job.metadata?.annotations ?? {};
      this.held.set(taskId, {
        taskId,
        resources: parseResources(a[ANNOTATIONS.resources]),
        maxRuntimeSeconds: Number(a[ANNOTATIONS.maxRuntime] ?? 0),
        job: job.metadata!.name!,
        since: time(job.metadata?.creationTimestamp) ?? this.now(),
        report: null,
      });
      adopted++;
    }
    if (adopted > 0) this.o.log('info', `adopted ${adopted} Job(s) left by an earlier run`);
    return adopted;
  }

  /** One reconcile pass. Safe to run at any time, any number of times. */
  async pass(): Promise<PassSummary> {
    const [pods, jobs] = await Promise.all([this.o.kube.listPods(), this.o.kube.listJobs()]);
    const podOf = indexBy(pods, (p) => p.metadata?.labels?.[LABELS.task]);
    const jobOf = indexBy(jobs, (j) => j.metadata?.name);
    let pending = 0;
    let running = 0;
    let reported = 0;

    for (const h of [...this.held.values()]) {
      if (h.report === null) {
        const pod = podOf.get(String(h.taskId));
        const seen = observeTask(h, pod, jobOf.get(h.job));
        if (seen.phase === 'pending') {
          if (this.now() - h.since > this.o.pendingTimeoutSeconds * 1000) {
            this.o.log('warn', `task ${h.taskId}: its pod did not start in ${this.o.pendingTimeoutSeconds} s (${seen.reason ?? 'no reason given'}); giving it back`);
            h.report = { outcome: { kind: 'aborted' }, durationMs: 0 };
          } else {
            pending++;
            continue;
          }
        } else if (seen.phase === 'running') {
          running++;
          continue;
        } else {
          h.report = await this.reportOf(seen, pod);
        }
      }
      if (await this.deliver(h)) reported++;
    }

    await this.keepLeases();
    const created = await this.lease(pending);
    return { created, reported, pending: pending + created, running };
  }

  /** Passes until `signal` aborts: at once when a pod changes, else every few seconds. */
  async run(signal: AbortSignal): Promise<void> {
    let wake: (() => void) | null = null;
    let changed = false;
    this.o.kube.watchPods(() => {
      changed = true;
      wake?.();
    }, signal);
    await this.adopt().catch((e: Error) => this.o.log('warn', `cannot list the Jobs of an earlier run (${e.message}); will retry`));
    let failures = 0;
    while (!signal.aborted) {
      changed = false;
      try {
        await this.pass();
        failures = 0;
      } catch (e) {
        failures++;
        this.o.log('warn', `pass failed (${(e as Error).message}); retrying`);
      }
      if (changed) continue;
      const ms = failures > 0 ? Math.min(30_000, 1000 * 2 ** failures) : Math.max(250, Math.min(5000, this.flow.msUntilToken(this.now())));
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(t);
          signal.removeEventListener('abort', done);
          resolve();
        };
        const t = setTimeout(done, ms);
        wake = done;
        signal.addEventListener('abort', done, { once: true });
      });
      wake = null;
    }
  }

  private async reportOf(seen: PodObservation & { phase: 'ended' }, pod: V1Pod | undefined): Promise<ReportBody> {
    const text = pod?.metadata?.name ? await this.o.kube.log(pod.metadata.name, CONTAINERS.task, LOG_BYTES) : '';
    return {
      outcome: seen.outcome,
      durationMs: Math.round(seen.durationMs),
      ...(Object.keys(seen.outputs).length > 0 ? { outputs: seen.outputs } : {}),
      ...(text ? { log: { offset: 0, text } } : {}),
    };
  }

  /** Reports an ended task (idempotent on the server), then deletes its Job. True once both are done. */
  private async deliver(h: Held): Promise<boolean> {
    try {
      await this.o.client.reportTask(h.taskId, h.report!);
    } catch (e) {
      const code = (e as { code?: string }).code;
      // The server no longer gives the task to this host (its lease ran out, its job was
      // cancelled): the report has nowhere to go, and the Job is still to be cleaned up.
      if (code !== 'not_found' && code !== 'conflict') {
        this.o.log('warn', `task ${h.taskId}: report not delivered (${(e as Error).message}); will retry`);
        return false;
      }
      this.o.log('info', `task ${h.taskId}: the server refused its report (${(e as Error).message})`);
    }
    await this.o.kube.deleteJob(h.job);
    this.held.delete(h.taskId);
    return true;
  }

  /** One heartbeat for every task not yet ended, each period; the tasks the server wants stopped are stopped. */
  private async keepLeases(): Promise<void> {
    if (this.now() < this.heartbeatDue) return;
    const live = [...this.held.values()].filter((h) => h.report === null);
    if (live.length === 0) return;
    const answer = await this.o.client.heartbeat({ tasks: live.map((h) => ({ taskId: h.taskId })) });
    this.heartbeatSeconds = answer.heartbeatSeconds;
    this.heartbeatDue = this.now() + this.heartbeatSeconds * 1000;
    for (const { taskId, reason } of answer.abort) {
      const h = this.held.get(taskId);
      if (!h) continue;
      this.o.log('info', `task ${taskId}: stopping, as the server asks (${reason})`);
      await this.o.kube.deleteJob(h.job);
      this.held.delete(taskId);
    }
  }

  /** Asks for as much work as the flow control and the free share allow, and makes a Job for each task. */
  private async lease(pending: number): Promise<number> {
    const now = this.now();
    if (now < this.askAfter) return 0;
    const room = Math.min(MAX_TASKS_PER_REQUEST, this.flow.allowance(pending, now));
    if (room === 0) return 0;
    const free = freeShare(this.o.limit, sumShare([...this.held.values()].map((h) => h.resources)), await this.o.kube.quotas());
    if (free.cores <= 0 || free.memoryMiB <= 0) return 0;
    const answer = await this.o.client.requestWork({
      requestId: randomUUID(), maxTasks: room, runtimes: ['docker'],
      free: { ...free, diskMiB: this.o.maxTaskDiskMiB },
    });
    if (answer.tasks.length === 0) this.askAfter = this.now() + answer.retryAfterMs;
    let created = 0;
    for (const task of answer.tasks) {
      const job = this.jobFor(task);
      this.held.set(task.taskId, {
        taskId: task.taskId, resources: task.resources, maxRuntimeSeconds: task.maxRuntimeSeconds, job: job.metadata!.name!, since: this.now(), report: null,
      });
      try {
        if ((await this.o.kube.createJob(job)) === 'created') created++;
        this.flow.spend(1, this.now());
      } catch (e) {
        // Refused for good (a quota, a policy): the task goes back, and nothing is left behind.
        this.o.log('warn', `task ${task.taskId}: ${(e as Error).message}; giving it back`);
        this.held.get(task.taskId)!.report = { outcome: { kind: 'agent_error', message: (e as Error).message.slice(0, 4000) }, durationMs: 0 };
      }
    }
    if (created > 0) this.heartbeatDue = 0; // tell the server at once that the new tasks run
    return created;
  }

  private jobFor(task: TaskAssignment): V1Job {
    // The URLs outlive every wait the task may have (a pending pod, its run, the upload); the
    // server honours them only while this host holds the task anyway.
    const expires = Math.ceil(this.now() / 1000) + this.o.pendingTimeoutSeconds + task.maxRuntimeSeconds + 2 * this.o.manifest.stagingSeconds;
    const url = (direction: 'inputs' | 'outputs') => transferUrl(this.o.transferServer, this.o.token, task.taskId, direction, expires);
    return taskJob(task, { ...this.o.manifest, executor: this.o.name, transfer: { inputs: url('inputs'), outputs: url('outputs') } });
  }
}

function indexBy<T>(items: T[], key: (t: T) => string | undefined): Map<string, T> {
  const m = new Map<string, T>();
  for (const i of items) {
    const k = key(i);
    if (k !== undefined) m.set(k, i);
  }
  return m;
}

function parseResources(text: string | undefined): Resources {
  try {
    const r = JSON.parse(text ?? '') as Resources;
    return { cores: Number(r.cores) || 0, memoryMiB: Number(r.memoryMiB) || 0, diskMiB: Number(r.diskMiB) || 0, gpus: Number(r.gpus) || 0 };
  } catch {
    return { cores: 0, memoryMiB: 0, diskMiB: 0, gpus: 0 };
  }
}
