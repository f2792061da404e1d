import { readFileSync } from 'node:fs';
import { ApiException, BatchV1Api, CoreV1Api, KubeConfig, Watch, type V1Job, type V1Pod, type V1ResourceQuota } from '@kubernetes/client-node';
import { LABELS } from './job-manifest.js';

/**
 * What the executor asks of Kubernetes, all in one namespace and all on objects carrying its
 * executor label: the whole of its RBAC Role (deploy/helm: jobs create/list/delete, pods
 * list/watch, pods/log get, resourcequotas list).
 */
export interface KubeOps {
  /** Creates a Job; "exists" when one of that name is already there (a retry after a crash). */
  createJob(job: V1Job): Promise<'created' | 'exists'>;
  /** Deletes a Job and its pods; nothing when it is already gone. */
  deleteJob(name: string): Promise<void>;
  listJobs(): Promise<V1Job[]>;
  listPods(): Promise<V1Pod[]>;
  quotas(): Promise<V1ResourceQuota[]>;
  /** The start of a container's log, at most `limitBytes`; "" when it cannot be had. */
  log(pod: string, container: string, limitBytes: number): Promise<string>;
  /** Calls `onChange` whenever one of the executor's pods changes, until `signal` aborts; re-watches after errors. */
  watchPods(onChange: () => void, signal: AbortSignal): void;
}

/** The namespace a pod runs in, from its service account mount; null outside a cluster. */
export function inClusterNamespace(): string | null {
  try {
    return readFileSync('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8').trim() || null;
  } catch {
    return null;
  }
}

/** KubeOps through the official client (@kubernetes/client-node), from a KubeConfig (in-cluster or $KUBECONFIG). */
export class ClientNodeKubeOps implements KubeOps {
  private readonly batch: BatchV1Api;
  private readonly core: CoreV1Api;
  private readonly selector: string;

  constructor(
    private readonly kc: KubeConfig,
    private readonly namespace: string,
    executor: string,
  ) {
    this.batch = kc.makeApiClient(BatchV1Api);
    this.core = kc.makeApiClient(CoreV1Api);
    this.selector = `${LABELS.executor}=${executor}`;
  }

  async createJob(job: V1Job): Promise<'created' | 'exists'> {
    try {
      await this.batch.createNamespacedJob({ namespace: this.namespace, body: job });
      return 'created';
    } catch (e) {
      if (statusOf(e) === 409) return 'exists';
      throw kubeError(e, `create Job ${job.metadata?.name}`);
    }
  }

  async deleteJob(name: string): Promise<void> {
    try {
      // Background: the Job goes now and its pods after it (the API's default for Jobs orphans them).
      await this.batch.deleteNamespacedJob({ name, namespace: this.namespace, propagationPolicy: 'Background' });
    } catch (e) {
      if (statusOf(e) !== 404) throw kubeError(e, `delete Job ${name}`);
    }
  }

  async listJobs(): Promise<V1Job[]> {
    try {
      return (await this.batch.listNamespacedJob({ namespace: this.namespace, labelSelector: this.selector })).items;
    } catch (e) {
      throw kubeError(e, 'list Jobs');
    }
  }

  async listPods(): Promise<V1Pod[]> {
    try {
      return (await this.core.listNamespacedPod({ namespace: this.namespace, labelSelector: this.selector })).items;
    } catch (e) {
      throw kubeError(e, 'list pods');
    }
  }

  async quotas(): Promise<V1ResourceQuota[]> {
    try {
      return (await this.core.listNamespacedResourceQuota({ namespace: this.namespace })).items;
    } catch (e) {
      throw kubeError(e, 'list ResourceQuotas');
    }
  }

  async log(pod: string, container: string, limitBytes: number): Promise<string> {
    try {
      return await this.core.readNamespacedPodLog({ name: pod, namespace: this.namespace, container, limitBytes });
    } catch {
      return ''; // a log is a courtesy: a pod gone or a node unreachable must not hold up the report
    }
  }

  watchPods(onChange: () => void, signal: AbortSignal): void {
    const watch = new Watch(this.kc);
    let current: AbortController | null = null;
    signal.addEventListener('abort', () => current?.abort(), { once: true });
    const start = (): void => {
      if (signal.aborted) return;
      watch
        .watch(`/api/v1/namespaces/${this.namespace}/pods`, { labelSelector: this.selector }, () => onChange(), () => {
          // A watch ends by design (timeouts, 410 Gone): the loop re-lists anyway, so just watch again.
          if (!signal.aborted) setTimeout(start, 1000).unref();
        })
        .then((ctl) => {
          current = ctl;
          if (signal.aborted) ctl.abort();
        })
        .catch(() => {
          if (!signal.aborted) setTimeout(start, 5000).unref();
        });
    };
    start();
  }
}

/**
 * A refusal or failure of the Kubernetes API. `transient` ones (429, 5xx, no answer) are worth
 * trying again as they are; the others (403, 422, …) need someone to change something.
 */
export class KubeError extends Error {
  constructor(
    message: string,
    readonly status: number | null,
  ) {
    super(message);
  }

  get transient(): boolean {
    return this.status === null || this.status === 429 || this.status >= 500;
  }
}

function statusOf(e: unknown): number | undefined {
  return e instanceof ApiException ? e.code : undefined;
}

/** An API error as one line: what was asked and what Kubernetes said (a Forbidden names the missing RBAC rule). */
function kubeError(e: unknown, what: string): KubeError {
  if (e instanceof ApiException) {
    let message = '';
    try {
      message = (typeof e.body === 'string' ? JSON.parse(e.body) : e.body)?.message ?? '';
    } catch {
      message = String(e.body).slice(0, 300);
    }
    return new KubeError(`Kubernetes refused to ${what}: HTTP ${e.code}${message ? ` ${message}` : ''}`, e.code);
  }
  return new KubeError(`cannot ${what}: ${(e as Error).message}`, null);
}
