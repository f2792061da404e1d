import { randomUUID } from 'node:crypto';
import type { V1Job, V1Pod } from '@kubernetes/client-node';
import type { BoxgridClient } from '../../client/client.js';
import type { ReportBody, TaskAssignment } from '../../client/types.js';
import type { Resources } from '../../domain/resources.js';
import { BoxgridError } from '../../domain/errors.js';
import { FINAL_REFUSALS } from '../../agent/agent.js';
import { freeShare, round3, sumShare, type Share } from './capacity.js';
import { FlowControl } from './flow-control.js';
import { ANNOTATIONS, CONTAINERS, LABELS, STAGING_OVERHEAD, jobName, taskJob, type ManifestOptions } from './job-manifest.js';
import { KubeError, type KubeOps } from './kube-ops.js';
import { observeTask, time } from './pod-outcome.js';

export interface KubernetesExecutorOptions {
  /** The executor's name: the label on its Jobs and pods (two executors in one namespace need two). */
  name: string;
  /** The agent protocol, with the executor's host credential. */
  client: BoxgridClient;
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
  manifest: Omit<ManifestOptions, 'transfer' | 'executor' | 'pendingTimeoutSeconds'>;
  log: (level: 'info' | 'warn', message: string) => void;
  now?: () => number;
}

/** A task the executor holds: its Job, and once it ended, the report still to be delivered. */
interface Held {
  taskId: number;
  jobId: number;
  resources: Resources;
  maxRuntimeSeconds: number;
  job: string;
  since: number;
  /** The Job to create, until Kubernetes has it (null for adopted Jobs, which exist). */
  manifest: V1Job | null;
  created: boolean;
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
/** The longest life of a transfer URL the server grants (a week). */
const MAX_URL_SECONDS = 7 * 86_400;
/** Most tasks in one heartbeat (the protocol's limit). */
const HEARTBEAT_CHUNK = 1024;
/** Watch events start a pass at most this often: each pass lists the executor's pods and Jobs. */
const MIN_PASS_INTERVAL_MS = 1000;

/**
 * Runs boxgrid tasks as Kubernetes Jobs. It is a host to the server (it leases work through
 * the agent protocol, for the share of the cluster it has free) and a controller to the
 * cluster: each `pass` keeps the leases of what it holds, compares those tasks with its Jobs
 * and pods, and acts on the difference — reports pods that ended and deletes their Jobs, stops
 * apps past their time, gives back pods that cannot start, adopts Jobs it does not know (an
 * earlier run's) — and then creates Jobs for new work within the flow control's bounds.
 * Everything it needs is in the cluster or on the server, so a pass after a crash carries on
 * where the last one stopped.
 */
export class KubernetesExecutor {
  private readonly held = new Map<number, Held>();
  private readonly flow: FlowControl;
  private readonly now: () => number;
  private heartbeatDue = 0;
  private heartbeatSeconds = 30;
  private askAfter = 0;
  /** The work request in flight: kept until answered, so a retry gets the same tasks. */
  private requestId: string | null = null;
  /** Creations Kubernetes refused for good in a row: leasing backs off while it refuses. */
  private refusals = 0;
  private beating: Promise<void> | null = null;

  constructor(private readonly o: KubernetesExecutorOptions) {
    this.now = o.now ?? Date.now;
    this.flow = new FlowControl(o.flow, this.now());
  }

  /** The tasks held now (for tests and logs). */
  get tasks(): number[] {
    return [...this.held.keys()];
  }

  /** One reconcile pass. Safe to run at any time, any number of times. */
  async pass(): Promise<PassSummary> {
    // Leases first, and whatever Kubernetes says: an API outage must not lose the tasks.
    await this.keepLeases().catch((e: Error) => this.o.log('warn', `heartbeat failed (${e.message}); will retry`));
    const [pods, jobs] = await Promise.all([this.o.kube.listPods(), this.o.kube.listJobs()]);
    const podOf = indexBy(pods, (p) => p.metadata?.labels?.[LABELS.task]);
    const jobOf = indexBy(jobs, (j) => j.metadata?.name);
    this.adopt(jobs);
    let pending = 0;
    let running = 0;
    let reported = 0;
    for (const h of [...this.held.values()]) {
      try {
        if (h.report === null) {
          const state = await this.reconcile(h, podOf.get(String(h.taskId)), jobOf.get(h.job));
          if (state === 'pending') pending++;
          if (state === 'running') running++;
          if (state !== 'ended') continue;
        }
        if (await this.deliver(h)) reported++;
      } catch (e) {
        this.o.log('warn', `task ${h.taskId}: ${(e as Error).message}; will retry`);
      }
    }
    const notInQuota = sumShare([...this.held.values()].filter((h) => h.report === null && !podOf.has(String(h.taskId))).map((h) => h.resources), STAGING_OVERHEAD);
    const created = await this.lease(pending, notInQuota);
    return { created, reported, pending: pending + created, running };
  }

  /**
   * Passes until `signal` aborts: soon after a pod changes, else every few seconds. Heartbeats
   * keep their own time beside the passes, which back off while Kubernetes does not answer.
   */
  async run(signal: AbortSignal): Promise<void> {
    const beats = this.heartbeats(signal);
    await this.passes(signal);
    await beats;
  }

  private async heartbeats(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      await this.keepLeases().catch((e: Error) => this.o.log('warn', `heartbeat failed (${e.message}); will retry`));
      await sleep(Math.max(250, Math.min(this.heartbeatSeconds * 1000, this.heartbeatDue - this.now())), signal);
    }
  }

  private async passes(signal: AbortSignal): Promise<void> {
    let wake: (() => void) | null = null;
    let changed = false;
    this.o.kube.watchPods(() => {
      changed = true;
      wake?.();
    }, signal);
    let failures = 0;
    while (!signal.aborted) {
      changed = false;
      const started = this.now();
      try {
        await this.pass();
        failures = 0;
      } catch (e) {
        failures++;
        this.o.log('warn', `pass failed (${(e as Error).message}); retrying`);
      }
      const idle = failures > 0 ? Math.min(30_000, 1000 * 2 ** failures) : Math.max(250, Math.min(5000, this.flow.msUntilToken(this.now())));
      const soonest = Math.max(0, started + MIN_PASS_INTERVAL_MS - this.now());
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(t);
          signal.removeEventListener('abort', done);
          resolve();
        };
        let t = setTimeout(done, changed ? soonest : idle);
        // A pod changed while waiting: pass again, but not before the minimum interval.
        wake = () => {
          clearTimeout(t);
          t = setTimeout(done, Math.max(0, started + MIN_PASS_INTERVAL_MS - this.now()));
        };
        signal.addEventListener('abort', done, { once: true });
      });
      wake = null;
    }
  }

  /**
   * Takes on the Jobs with this executor's label it does not hold (an earlier run's, or left
   * by a failed start): their tasks are still leased to this host, so the next heartbeat keeps
   * them, or the server says abort and the Job goes.
   */
  private adopt(jobs: V1Job[]): void {
    let adopted = 0;
    for (const job of jobs) {
      const taskId = Number(job.metadata?.labels?.[LABELS.task]);
      if (!Number.isInteger(taskId) || this.held.has(taskId) || job.metadata?.deletionTimestamp) continue;
      const a = job.metadata?.annotations ?? {};
      this.held.set(taskId, {
        taskId, jobId: Number(job.metadata?.labels?.[LABELS.job]), resources: parseResources(a[ANNOTATIONS.resources]),
        maxRuntimeSeconds: Number(a[ANNOTATIONS.maxRuntime] ?? 0), job: job.metadata!.name!,
        since: time(job.metadata?.creationTimestamp) ?? this.now(), manifest: null, created: true, report: null,
      });
      adopted++;
    }
    if (adopted > 0) {
      this.o.log('info', `adopted ${adopted} Job(s) left by an earlier run`);
      this.heartbeatDue = 0;
    }
  }

  /** Brings one task's Job along: creates it, reads its pod, and decides on the pod's state. */
  private async reconcile(h: Held, pod: V1Pod | undefined, job: V1Job | undefined): Promise<'pending' | 'running' | 'ended'> {
    if (job && job.metadata?.labels?.[LABELS.job] !== String(h.jobId)) {
      // A Job of the same name for another job (a database restored, task ids reused): not ours to report.
      this.o.log('warn', `task ${h.taskId}: Job ${h.job} belongs to job ${job.metadata?.labels?.[LABELS.job]}, not ${h.jobId}; deleting it`);
      await this.o.kube.deleteJob(h.job);
      h.report = { outcome: { kind: 'aborted' }, durationMs: 0 };
      return 'ended';
    }
    if (!h.created) {
      await this.create(h);
      return h.report === null ? 'pending' : 'ended';
    }
    const seen = observeTask(h, pod, job);
    const waited = this.now() - h.since;
    if (seen.phase === 'pending') {
      if (!seen.scheduled && waited > this.o.pendingTimeoutSeconds * 1000) {
        // No node took it: give it back (no attempt spent); a node with room may come.
        this.o.log('warn', `task ${h.taskId}: its pod was not scheduled in ${this.o.pendingTimeoutSeconds} s (${seen.reason ?? 'no reason given'}); giving it back`);
        h.report = { outcome: { kind: 'aborted' }, durationMs: 0 };
        return 'ended';
      }
      if (seen.scheduled && waited > (this.o.pendingTimeoutSeconds + this.o.manifest.stagingSeconds) * 1000) {
        // On a node, but stuck (pulling, staging): that does cost an attempt, or it would loop.
        h.report = { outcome: { kind: 'agent_error', message: `the pod did not start in ${Math.round(waited / 1000)} s: ${seen.reason ?? 'no reason given'}` }, durationMs: 0 };
        return 'ended';
      }
      return 'pending';
    }
    if (seen.phase === 'running') {
      // The app's limit counts from its own start, which the Job's deadline cannot see.
      const ran = this.now() - seen.startedAt;
      if (ran <= h.maxRuntimeSeconds * 1000) return 'running';
      this.o.log('info', `task ${h.taskId}: ran past its limit of ${h.maxRuntimeSeconds} s; stopping it`);
      h.report = { outcome: { kind: 'timeout', limitSeconds: h.maxRuntimeSeconds }, durationMs: Math.round(ran), ...(await this.logOf(pod)) };
      return 'ended';
    }
    h.report = {
      outcome: seen.outcome,
      durationMs: Math.round(seen.durationMs),
      ...(Object.keys(seen.outputs).length > 0 ? { outputs: seen.outputs } : {}),
      ...(await this.logOf(pod)),
    };
    return 'ended';
  }

  /**
   * Creates a task's Job. Kubernetes' passing troubles (429, 5xx, no answer) leave it for the
   * next pass; a refusal (a Role without the right, a policy, a quota on objects) gives the task
   * back unspent and holds off leasing, doubling, while refusals go on.
   */
  private async create(h: Held): Promise<void> {
    try {
      await this.o.kube.createJob(h.manifest!);
      h.created = true;
      h.since = this.now();
      this.flow.spend(1, this.now());
      this.refusals = 0;
    } catch (e) {
      if (e instanceof KubeError && e.transient) {
        this.o.log('warn', `task ${h.taskId}: ${e.message}; will retry`);
        return;
      }
      this.refusals++;
      const pause = Math.min(600_000, 10_000 * 2 ** (this.refusals - 1));
      this.askAfter = this.now() + pause;
      this.o.log('warn', `task ${h.taskId}: ${(e as Error).message}; giving it back, and asking for no work for ${pause / 1000} s`);
      h.report = { outcome: { kind: 'aborted' }, durationMs: 0 };
    }
  }

  private async logOf(pod: V1Pod | undefined): Promise<Pick<ReportBody, 'log'>> {
    const text = pod?.metadata?.name ? await this.o.kube.log(pod.metadata.name, CONTAINERS.task, LOG_BYTES) : '';
    return text ? { log: { offset: 0, text } } : {};
  }

  /** Reports an ended task (idempotent on the server), then deletes its Job. True once both are done. */
  private async deliver(h: Held): Promise<boolean> {
    try {
      await this.o.client.reportTask(h.taskId, h.report!);
    } catch (e) {
      // The server will never take it (the lease ran out, the job was cancelled, the report is
      // refused): nothing to deliver, and the Job is still to be cleaned up.
      const final = e instanceof BoxgridError && (FINAL_REFUSALS.has(e.code) || (!e.retryable && e.code !== 'unauthenticated'));
      if (!final) {
        this.o.log('warn', `task ${h.taskId}: report not delivered (${(e as Error).message}); will retry`);
        return false;
      }
      this.o.log('warn', `task ${h.taskId}: the server refused its report (${(e as Error).message}); dropping it`);
    }
    if (h.created) await this.o.kube.deleteJob(h.job);
    this.held.delete(h.taskId);
    return true;
  }

  /**
   * Heartbeats every held task each period, the ended ones whose report is not delivered yet
   * too; the tasks the server wants stopped lose their Jobs.
   */
  private keepLeases(): Promise<void> {
    // One heartbeat at a time, whether a pass or the heartbeat loop asks.
    this.beating ??= this.beat().finally(() => (this.beating = null));
    return this.beating;
  }

  private async beat(): Promise<void> {
    if (this.now() < this.heartbeatDue || this.held.size === 0) return;
    const all = [...this.held.keys()];
    for (let i = 0; i < all.length; i += HEARTBEAT_CHUNK) {
      const answer = await this.o.client.heartbeat({ tasks: all.slice(i, i + HEARTBEAT_CHUNK).map((taskId) => ({ taskId })) });
      this.heartbeatSeconds = answer.heartbeatSeconds;
      for (const { taskId, reason } of answer.abort) {
        const h = this.held.get(taskId);
        if (!h) continue;
        this.o.log('info', `task ${taskId}: stopping, as the server asks (${reason})`);
        await this.o.kube.deleteJob(h.job);
        this.held.delete(taskId);
      }
    }
    this.heartbeatDue = this.now() + this.heartbeatSeconds * 1000;
  }

  /** Asks for as much work as the flow control and the free share allow, and makes a Job for each task. */
  private async lease(pending: number, notInQuota: Share): Promise<number> {
    const now = this.now();
    if (now < this.askAfter) return 0;
    const room = Math.min(MAX_TASKS_PER_REQUEST, this.flow.allowance(pending, now));
    if (room === 0) return 0;
    const held = sumShare([...this.held.values()].map((h) => h.resources), STAGING_OVERHEAD);
    const free = freeShare(this.o.limit, held, await this.o.kube.quotas(), notInQuota);
    // Room for the staging sidecar of the next pod too.
    const offer = { cores: round3(free.cores - STAGING_OVERHEAD.cores), memoryMiB: free.memoryMiB - STAGING_OVERHEAD.memoryMiB, gpus: free.gpus };
    if (offer.cores <= 0 || offer.memoryMiB <= 0) return 0;
    this.requestId ??= randomUUID();
    const answer = await this.o.client.requestWork({
      requestId: this.requestId, maxTasks: room, runtimes: ['docker'], free: { ...offer, diskMiB: this.o.maxTaskDiskMiB },
    });
    this.requestId = null;
    if (answer.tasks.length === 0) this.askAfter = this.now() + answer.retryAfterMs;
    let created = 0;
    for (const task of answer.tasks) {
      const h: Held = {
        taskId: task.taskId, jobId: task.jobId, resources: task.resources, maxRuntimeSeconds: task.maxRuntimeSeconds,
        job: jobName(this.o.name, task.taskId), since: this.now(), manifest: null, created: false, report: null,
      };
      this.held.set(task.taskId, h);
      h.manifest = await this.jobFor(task).catch((e: Error) => {
        this.o.log('warn', `task ${task.taskId}: no transfer URLs (${e.message}); giving it back`);
        h.report = { outcome: { kind: 'aborted' }, durationMs: 0 };
        return null;
      });
      if (h.manifest) await this.create(h);
      if (h.created) created++;
      if (h.report) await this.deliver(h).catch(() => false);
    }
    if (answer.tasks.length > 0) this.heartbeatDue = 0; // tell the server at once that the new tasks run
    return created;
  }

  /** The Job for a task, with the transfer URLs the server signs for it. */
  private async jobFor(task: TaskAssignment): Promise<V1Job> {
    // The URLs outlive every wait the task may have (a pending pod, its run, the upload); the
    // server honours them only while this host holds the task anyway.
    const expiresInSeconds = Math.max(60, Math.min(MAX_URL_SECONDS, this.o.pendingTimeoutSeconds + task.maxRuntimeSeconds + 3 * this.o.manifest.stagingSeconds));
    const urls = await this.o.client.transferUrls(task.taskId, { expiresInSeconds });
    return taskJob(task, {
      ...this.o.manifest, pendingTimeoutSeconds: this.o.pendingTimeoutSeconds, executor: this.o.name,
      transfer: { inputs: this.o.transferServer + urls.inputs, outputs: this.o.transferServer + urls.outputs },
    });
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

/** Waits `ms`, or less if `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const t = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
