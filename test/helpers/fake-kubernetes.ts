/*
 * An in-process fake of the small part of a Kubernetes API server (plus its scheduler, Job
 * controller, ResourceQuota admission and kubelet) that boxgrid's Kubernetes executor talks to.
 * It is a fastify server on 127.0.0.1 that speaks the wire protocol @kubernetes/client-node 1.4
 * sends and parses: JSON bodies, `Status` objects for errors, newline-delimited watch events.
 * test/sites/fake-kubernetes.test.ts drives it with that client to show it does.
 *
 * WHAT IT MODELS
 * - Authentication: every request must carry `Authorization: Bearer fake-token` (else 401).
 * - Authorization as a namespace-scoped Role would give it: only the configured namespace is
 *   reachable; any other namespace, and every cluster-scoped path (nodes, namespaces,
 *   clusterroles, …), answers 403 Forbidden with a Status naming the verb and resource.
 * - Routes (anything else in the namespace is a 404 Status):
 *     POST/GET(list, watch)/GET/DELETE  /apis/batch/v1/namespaces/NS/jobs[/NAME]
 *     GET(list, watch)/GET              /api/v1/namespaces/NS/pods[/NAME]
 *     GET                               /api/v1/namespaces/NS/pods/NAME/log
 *     GET(list)/GET                     /api/v1/namespaces/NS/resourcequotas[/compute]
 *     GET                               /version (any authenticated user may, as in a real cluster)
 *   Lists take labelSelector (`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x,y)`)
 *   and fieldSelector (`metadata.name`, `metadata.namespace`, `status.phase`, `spec.nodeName`
 *   with = / == / !=). Items of a list carry no apiVersion/kind, as the real server sends them.
 * - Job creation: structural validation with kubernetes-models (422 Invalid, its messages as
 *   causes), then the checks of the real apiserver that bite a Job-making program most often:
 *   name (DNS subdomain, at most 63 characters for a Job), label keys and values, annotation
 *   size, restartPolicy Never/OnFailure (required: the Pod default Always is refused),
 *   podFailurePolicy needs Never, container names (DNS label, unique across init and regular
 *   containers), image required, init containers' restartPolicy only Always, env var names (the
 *   pre-1.34 C-identifier-like rule), volumeMounts naming a declared volume and unique mount
 *   paths, resource quantities (requests <= limits; extended resources such as nvidia.com/gpu
 *   need a limit, are whole numbers, and requests must equal limits), activeDeadlineSeconds,
 *   backoffLimit, ttlSecondsAfterFinished non-negative, a hand-written spec.selector refused
 *   unless manualSelector. Bodies over 3 MiB: 413; stored objects over 1.5 MiB: 500 "etcdserver:
 *   request is too large". Same name again (including while a Foreground deletion is still
 *   running): 409 AlreadyExists. `generateName` and `dryRun=All` work.
 *   Defaults as the apiserver sets them: uid, resourceVersion, generation, creationTimestamp,
 *   backoffLimit 6, completions/parallelism 1, completionMode NonIndexed, suspend false,
 *   podReplacementPolicy, the generated selector and the four job labels
 *   (`batch.kubernetes.io/controller-uid`, `batch.kubernetes.io/job-name`, `controller-uid`,
 *   `job-name`) on the template, Job labels copied from the template when it has none,
 *   terminationMessagePath/Policy and imagePullPolicy on containers, terminationGracePeriodSeconds 30.
 * - Job controller (one pod at a time: completions/parallelism above 1 are stored, not honoured):
 *   creates the pod at once (`${job}-xxxxx`, labels = template labels incl. job-name, an
 *   ownerReference with controller: true, the job-tracking finalizer), counts succeeded/failed,
 *   sets status.startTime/active/ready/completionTime, and the 1.31+ condition pairs
 *   SuccessCriteriaMet+Complete and FailureTarget+Failed (reasons BackoffLimitExceeded,
 *   DeadlineExceeded, PodFailurePolicy). A failed pod is replaced while failed <= backoffLimit,
 *   at once (the real controller waits 10 s, 20 s, … between replacements).
 *   podFailurePolicy rules (onExitCodes In/NotIn, onPodConditions; actions FailJob, Ignore,
 *   Count; FailIndex acts as Count) are applied. A deleted pod that had not ended counts as failed.
 *   spec.suspend true: no pod (nothing can resume it: there is no PATCH).
 *   activeDeadlineSeconds, from the Job's startTime, in real seconds. What happens to the pod
 *   then is `opts.jobDeadline`:
 *     'kill-pods' (default): each active pod becomes phase Failed, status.reason
 *        'DeadlineExceeded', its running containers terminated (137), and it stays.
 *     'delete-pods': what a real cluster does: the Job controller DELETES the active pods
 *        (MODIFIED with deletionTimestamp, MODIFIED Failed with containers terminated 143 —
 *        no status.reason —, DELETED). Only the Job's condition says DeadlineExceeded.
 *   A pod template's own spec.activeDeadlineSeconds is enforced by the fake kubelet as the
 *   real one does: phase Failed, status.reason DeadlineExceeded, from the pod's startTime.
 *   ttlSecondsAfterFinished (0 included): the Job is deleted that long after it finished, with
 *   Foreground propagation as the real TTL controller does (so its pods go first).
 * - Deletion: propagationPolicy from the query or the DeleteOptions body (orphanDependents too).
 *   Background: the Job is gone at once (200 Status Success) and its pods are then deleted.
 *   Foreground: the Job gets deletionTimestamp + the foregroundDeletion finalizer (200 with the
 *   Job), its pods are deleted, then the Job. No policy: batch/v1 Jobs default to ORPHAN through
 *   the API (kubectl defaults to background, the API does not): the pods stay and lose their
 *   ownerReference. Pod deletion is graceful in three steps: MODIFIED (deletionTimestamp),
 *   MODIFIED (containers terminated 143, phase Failed) if it was on a node, then DELETED.
 * - Scheduler: a pending pod binds to the first node (in the order given) where its requests
 *   fit beside the requests of the non-terminated pods already bound there, for cpu, memory and
 *   nvidia.com/gpu. A pod's requests are computed as Kubernetes does: sum of the regular
 *   containers plus the sidecars (init containers with restartPolicy Always), or, if larger per
 *   resource, the largest regular init container plus the sidecars started before it; requests
 *   default to limits; spec.overhead is added. nodeSelector is matched against the node's
 *   labels (kubernetes.io/hostname, kubernetes.io/os=linux, kubernetes.io/arch=amd64 and
 *   `labels` given), NoSchedule/NoExecute taints need a toleration. A pod that fits nowhere stays
 *   Pending with PodScheduled=False reason Unschedulable and the scheduler's style of message.
 *   Scheduling re-runs whenever a pod ends or goes.
 * - ResourceQuota (only if opts.quota): one quota `compute` with hard/used for requests.cpu,
 *   requests.memory, requests.nvidia.com/gpu; used = requests of the non-terminated pods. A pod
 *   that would exceed it, or (as the real admission requires) does not request cpu/memory the
 *   quota limits, is not created: the Job exists without a pod, a FailedCreate Warning event is
 *   recorded (see `events()`), and creation is retried whenever a pod ends or goes (the real Job
 *   controller retries on a backoff). The Job's activeDeadlineSeconds still runs meanwhile.
 * - Kubelet, driven by opts.runPod (default: everything succeeds at once): sandbox (startTime,
 *   IPs, conditions PodReadyToStartContainers/Initialized/Ready/ContainersReady/PodScheduled),
 *   regular init containers in order (the one named `stage-in` follows script.stageIn, others
 *   exit 0), sidecars started (running, started: true, ready: true), then the image pull of
 *   the `task` container (or the first container), the main containers running (phase Running),
 *   terminated after durationMs (exitCode, reason default Completed/Error, termination message),
 *   then the sidecars stopped (the one named `stage-out` ends as script.stageOut says; it is the
 *   SIGTERM'd uploader), then phase Succeeded if every main container exited 0, else Failed
 *   (sidecar exit codes do not decide the phase, as in Kubernetes). A failed regular init
 *   container fails the pod (restartPolicy Never) and the others stay waiting PodInitializing.
 *   Image pull errors: the container waits ErrImagePull, then ImagePullBackOff with
 *   `Back-off pulling image "IMAGE": ErrImagePull: MESSAGE` (InvalidImageName stays as is); the
 *   pod stays Pending for good. Termination messages are cut to 4096 bytes per container as the
 *   kubelet does; FallbackToLogsOnError uses the log's last 80 lines / 2048 bytes on a non-zero
 *   exit. Timestamps have whole seconds, as metav1.Time sends them. `evict()` is a kubelet
 *   node-pressure eviction: phase Failed, reason Evicted, DisruptionTarget True
 *   (TerminationByKubelet), containers killed (137).
 * - Every change bumps one global resourceVersion and is a watch event (ADDED on create,
 *   MODIFIED, DELETED). Watches (`?watch=true`, or the client's Watch) stream newline-delimited
 *   JSON on a chunked response, filtered by the selectors; without resourceVersion (or "0") they
 *   start with ADDED for every current object; with one they replay the kept history after it,
 *   or send one ERROR event with a 410 Expired Status if it is older than the history
 *   (opts.watchHistory events per resource, default 1000). timeoutSeconds ends a watch. close()
 *   ends every open watch.
 *
 * WHAT IT DOES NOT MODEL
 * Admission webhooks and policies (PodSecurity admission included), LimitRanges and their
 * defaults, PriorityClasses and preemption, real scheduling (scoring, affinity/anti-affinity,
 * topology spread, pod count per node, ephemeral-storage, volumes, node conditions), real
 * quota semantics beyond the three request sums (limits.*, count/*, scopes, the quota
 * controller's lag), RBAC beyond the one-namespace rule (so verbs a Role might deny inside the
 * namespace are a 404 here, not a 403), API priority and fairness / 429 rate limiting, PATCH,
 * PUT, server-side apply, deletecollection, the /status subresources, pod creation or
 * deletion through the API, Events through the API, discovery (/api, /apis: so kubectl's
 * ordinary commands fail; `kubectl get --raw` works), protobuf, resourceVersionMatch, list
 * pagination (limit/continue are ignored), watch bookmarks, selector changes during a watch,
 * container restarts (restartPolicy OnFailure behaves as Never), probes, Indexed Jobs,
 * several pods per Job, Job backoff delays, image pull retries, graceful-termination timing
 * (terminationGracePeriodSeconds is recorded, not waited), node failures, and log streaming
 * (follow, timestamps, sinceSeconds are ignored; the log is whole once the container started).
 * @kubernetes/client-node itself drops fields its models do not know before sending, so a
 * misspelt field never reaches this server (nor a real one).
 */
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify';
import { createHash, randomInt, randomUUID } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { ServerResponse } from 'node:http';
import { KubeConfig, type V1Job, type V1Pod } from '@kubernetes/client-node';
// The client's own (de)serializer: snapshots and the pod handed to runPod look exactly like
// what the client's API calls return (Date objects for timestamps, and so on).
import { ObjectSerializer } from '@kubernetes/client-node/dist/gen/models/ObjectSerializer.js';
import { Job as JobModel } from 'kubernetes-models/batch/v1/Job';

export const FAKE_TOKEN = 'fake-token';
/** Who the fake says the caller is, in 403 messages. */
const FAKE_USER = (ns: string) => `system:serviceaccount:${ns}:boxgrid`;
const KUBE_VERSION = { major: '1', minor: '32', gitVersion: 'v1.32.0-fake', platform: 'linux/amd64' };

// ---------------------------------------------------------------------------------------------
// Public types

export interface FakeNode {
  name: string;
  /** Allocatable cores. */
  cpu: number;
  memoryMiB: number;
  gpus?: number;
  /** Extra node labels (kubernetes.io/hostname, kubernetes.io/os and kubernetes.io/arch are always there). */
  labels?: Record<string, string>;
  taints?: Array<{ key: string; value?: string; effect: 'NoSchedule' | 'PreferNoSchedule' | 'NoExecute' }>;
}

export interface FakeQuota {
  cpu?: number;
  memoryMiB?: number;
  gpus?: number;
}

/** How the fake kubelet runs one pod. Everything left out succeeds at once. */
export interface PodScript {
  /** The `task` container's image pull (init containers' images always pull). */
  pull?: 'ok' | { error: 'ErrImagePull' | 'ImagePullBackOff' | 'InvalidImageName'; message: string };
  /** The init container named `stage-in`. `message` is its termination message. */
  stageIn?: { exitCode: number; message?: string; log?: string };
  /**
   * The main containers (all of them, though it is meant for the one named `task`). 'hang':
   * runs until killed (deadline, eviction, deletion). `reason` defaults to Completed/Error.
   */
  task?: { exitCode: number; reason?: string; message?: string; log?: string; durationMs?: number } | 'hang';
  /** The sidecar named `stage-out`, when it is stopped after the main containers ended. */
  stageOut?: { exitCode: number; message?: string; log?: string };
}

export type PodRunner = (pod: V1Pod) => Promise<PodScript> | PodScript;

export interface FakeKubernetesOptions {
  namespace: string;
  nodes: FakeNode[];
  quota?: FakeQuota;
  runPod?: PodRunner;
  /** What a Job's activeDeadlineSeconds does to its pods (see the top of this file). Default 'kill-pods'. */
  jobDeadline?: 'kill-pods' | 'delete-pods';
  /** Watch events kept per resource for resourceVersion replay. Default 1000. */
  watchHistory?: number;
}

export interface FakeStats {
  jobsCreated: number;
  /** Jobs deleted by a DELETE request (not by ttlSecondsAfterFinished: see jobsExpired). */
  jobsDeleted: number;
  /** Jobs deleted by ttlSecondsAfterFinished. */
  jobsExpired: number;
  /** Most Jobs that existed at once. */
  maxJobsAlive: number;
  /** Most pods that existed in phase Pending at once. */
  maxPodsNotRunning: number;
  /** Date.now() of each Job creation that succeeded. */
  creations: number[];
  /** Authenticated requests by "VERB resource", e.g. "create jobs", "watch pods", "get pods/log", "list nodes". */
  requests: Record<string, number>;
}

export interface FakeEvent {
  time: number;
  kind: 'Job' | 'Pod';
  name: string;
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

export interface FakeKubernetes {
  /** http://127.0.0.1:PORT */
  url: string;
  namespace: string;
  /** A KubeConfig for the fake: cluster server = url, user token fake-token, context namespace. */
  kubeConfig(): KubeConfig;
  /** Writes a kubeconfig file (YAML) into dir and returns its path, for a process using KUBECONFIG. */
  writeKubeconfig(dir: string): Promise<string>;
  /** Copies of the Jobs that exist, as the client returns them. */
  jobs(): V1Job[];
  /** Copies of the pods that exist, as the client returns them. */
  pods(): V1Pod[];
  /** What the Job controller, scheduler and kubelet reported (what `kubectl get events` would show). */
  events(): FakeEvent[];
  stats: FakeStats;
  /** Kubelet node-pressure eviction of a pod that has not ended. */
  evict(podName: string, message?: string): void;
  /** Deletes a pod as `kubectl delete pod` would (graceful; the Job controller counts it failed). Resolves once it is gone (or the fake closed). */
  deletePod(podName: string): Promise<void>;
  /** Resolves with fn's first truthy result, checked now and after every change; rejects after timeoutMs (default 5000) or on close(). */
  waitFor<T>(fn: () => T | undefined | null | false, timeoutMs?: number): Promise<T>;
  /** Ends every watch, stops every timer, closes the server. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Quantities and pod requests

const SUFFIXES: Record<string, number> = {
  '': 1, n: 1e-9, u: 1e-6, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/** A Kubernetes quantity ("500m", "1.5", "128Mi", "1e3", 2) as a number of base units. */
export function parseQuantity(q: string | number): number {
  if (typeof q === 'number') return q;
  const m = /^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei))?$/.exec(q.trim());
  if (!m) throw new Error(`quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'`);
  const n = Number(m[1]);
  if (m[2]) return n * 10 ** Number(m[2].slice(1));
  return n * SUFFIXES[m[3] ?? '']!;
}

export interface ResourceAmounts {
  cpuMilli: number;
  memoryBytes: number;
  gpus: number;
}

const GPU = 'nvidia.com/gpu';
const ZERO: ResourceAmounts = { cpuMilli: 0, memoryBytes: 0, gpus: 0 };
const add = (a: ResourceAmounts, b: ResourceAmounts): ResourceAmounts => ({ cpuMilli: a.cpuMilli + b.cpuMilli, memoryBytes: a.memoryBytes + b.memoryBytes, gpus: a.gpus + b.gpus });
const max = (a: ResourceAmounts, b: ResourceAmounts): ResourceAmounts => ({ cpuMilli: Math.max(a.cpuMilli, b.cpuMilli), memoryBytes: Math.max(a.memoryBytes, b.memoryBytes), gpus: Math.max(a.gpus, b.gpus) });

/* eslint-disable @typescript-eslint/no-explicit-any */
// Stored objects are kept in their JSON wire form (timestamps as strings), hence `any` below.
type Obj = any;

function amounts(list: Record<string, string | number> | undefined): ResourceAmounts {
  const get = (k: string) => (list?.[k] === undefined ? 0 : parseQuantity(list[k]!));
  return { cpuMilli: Math.ceil(get('cpu') * 1000 - 1e-9), memoryBytes: Math.ceil(get('memory') - 1e-9), gpus: Math.ceil(get(GPU) - 1e-9) };
}

/** A container's requests, defaulted from its limits as the apiserver does. */
function containerRequests(c: Obj): Record<string, string | number> {
  return { ...(c?.resources?.limits ?? {}), ...(c?.resources?.requests ?? {}) };
}

/**
 * A pod's effective requests as the scheduler and quota compute them: regular containers plus
 * sidecars (init containers with restartPolicy Always), or per resource the largest regular
 * init container plus the sidecars started before it if that is more; plus spec.overhead.
 */
export function podRequests(spec: Obj): ResourceAmounts {
  let sidecars = ZERO;
  let init = ZERO;
  for (const ic of spec?.initContainers ?? []) {
    const r = amounts(containerRequests(ic));
    if (ic.restartPolicy === 'Always') {
      sidecars = add(sidecars, r);
      init = max(init, sidecars);
    } else {
      init = max(init, add(r, sidecars));
    }
  }
  let main = sidecars;
  for (const c of spec?.containers ?? []) main = add(main, amounts(containerRequests(c)));
  return add(max(main, init), amounts(spec?.overhead));
}

function fmtCpu(milli: number): string {
  return milli % 1000 === 0 ? String(milli / 1000) : `${milli}m`;
}
function fmtMem(bytes: number): string {
  if (bytes === 0) return '0';
  for (const s of ['Ei', 'Pi', 'Ti', 'Gi', 'Mi', 'Ki']) if (bytes % SUFFIXES[s]! === 0) return `${bytes / SUFFIXES[s]!}${s}`;
  return String(bytes);
}

// ---------------------------------------------------------------------------------------------
// Selectors

type Requirement = { key: string; op: 'eq' | 'ne' | 'exists' | '!exists' | 'in' | 'notin'; values: string[] };

function parseLabelSelector(s: string | undefined): Requirement[] {
  if (!s || !s.trim()) return [];
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  return parts.map((raw) => {
    const p = raw.trim();
    let m: RegExpExecArray | null;
    if ((m = /^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(p))) return { key: m[1]!, op: m[2] as 'in' | 'notin', values: m[3]!.split(',').map((v) => v.trim()) };
    if ((m = /^([^\s!=]+)\s*!=\s*([^\s]*)$/.exec(p))) return { key: m[1]!, op: 'ne', values: [m[2]!] };
    if ((m = /^([^\s!=]+)\s*==?\s*([^\s]*)$/.exec(p))) return { key: m[1]!, op: 'eq', values: [m[2]!] };
    if ((m = /^!\s*([^\s!=]+)$/.exec(p))) return { key: m[1]!, op: '!exists', values: [] };
    if ((m = /^([^\s!=(),]+)$/.exec(p))) return { key: m[1]!, op: 'exists', values: [] };
    throw new BadRequest(`unable to parse requirement: found '${p}', expected: key, !key, key=value, key!=value, key in (…), key notin (…)`);
  });
}

function labelsMatch(reqs: Requirement[], labels: Record<string, string> | undefined): boolean {
  const l = labels ?? {};
  return reqs.every((r) => {
    const has = Object.prototype.hasOwnProperty.call(l, r.key);
    switch (r.op) {
      case 'exists': return has;
      case '!exists': return !has;
      case 'eq': return has && l[r.key] === r.values[0];
      case 'ne': return !has || l[r.key] !== r.values[0];
      case 'in': return has && r.values.includes(l[r.key]!);
      case 'notin': return !has || !r.values.includes(l[r.key]!);
    }
  });
}

type FieldRequirement = { path: string; eq: boolean; value: string };
const FIELDS: Record<string, (o: Obj) => string | undefined> = {
  'metadata.name': (o) => o.metadata?.name,
  'metadata.namespace': (o) => o.metadata?.namespace,
  'status.phase': (o) => o.status?.phase,
  'spec.nodeName': (o) => o.spec?.nodeName ?? '',
};
function parseFieldSelector(s: string | undefined): FieldRequirement[] {
  if (!s || !s.trim()) return [];
  return s.split(',').map((raw) => {
    const m = /^\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*$/.exec(raw);
    if (!m || !FIELDS[m[1]!]) throw new BadRequest(`"${raw.trim()}" is not a known field selector: only "${Object.keys(FIELDS).join('", "')}"`);
    return { path: m[1]!, eq: m[2] !== '!=', value: m[3]! };
  });
}
function fieldsMatch(reqs: FieldRequirement[], o: Obj): boolean {
  return reqs.every((r) => (FIELDS[r.path]!(o) === r.value) === r.eq);
}

// ---------------------------------------------------------------------------------------------
// Errors as Status objects

class ApiError extends Error {
  constructor(readonly code: number, readonly reason: string, message: string, readonly details?: Obj) {
    super(message);
  }
  status(): Obj {
    return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: this.message, reason: this.reason, ...(this.details ? { details: this.details } : {}), code: this.code };
  }
}
class BadRequest extends ApiError {
  constructor(message: string) {
    super(400, 'BadRequest', message);
  }
}

interface Cause { reason: string; message: string; field: string }

function invalid(kind: string, group: string, name: string, causes: Cause[]): ApiError {
  const list = causes.map((c) => `${c.field}: ${c.message}`);
  const text = list.length === 1 ? list[0] : `[${list.join(', ')}]`;
  return new ApiError(422, 'Invalid', `${kind}.${group} "${name}" is invalid: ${text}`, { name, group, kind, causes });
}

// ---------------------------------------------------------------------------------------------
// Validation

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE_MSG = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const ENV_NAME = /^[-._a-zA-Z][-._a-zA-Z0-9]*$/;

/** kubernetes-models' JSON-schema check, its ajv errors turned into apiserver-style causes. */
function schemaCauses(body: Obj): Cause[] {
  try {
    new JobModel(body).validate();
    return [];
  } catch (e) {
    const errors = (e as { errors?: Array<{ instancePath: string; keyword: string; message?: string; params: Record<string, unknown> }> }).errors;
    if (!errors) return [{ reason: 'FieldValueInvalid', message: (e as Error).message, field: '<root>' }];
    const byField = new Map<string, Cause>();
    for (const err of errors) {
      const parts = err.instancePath.split('/').filter(Boolean);
      let field = parts.reduce((acc, p) => (/^\d+$/.test(p) ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '');
      if (err.keyword === 'required') {
        field = field ? `${field}.${String(err.params.missingProperty)}` : String(err.params.missingProperty);
        byField.set(field, { reason: 'FieldValueRequired', message: 'Required value', field });
      } else if (!byField.has(field)) {
        const value = parts.reduce((o: Obj, p) => o?.[p], body);
        byField.set(field, { reason: 'FieldValueInvalid', message: `Invalid value: ${JSON.stringify(value)}: ${err.message ?? err.keyword}`, field });
      }
    }
    return [...byField.values()];
  }
}

function labelCauses(labels: Obj, field: string): Cause[] {
  const out: Cause[] = [];
  for (const [k, v] of Object.entries(labels ?? {})) {
    const slash = k.lastIndexOf('/');
    const prefix = slash >= 0 ? k.slice(0, slash) : null;
    const name = slash >= 0 ? k.slice(slash + 1) : k;
    if ((prefix !== null && (!DNS_SUBDOMAIN.test(prefix) || prefix.length > 253)) || !LABEL_NAME.test(name) || name.length > 63) {
      out.push({ reason: 'FieldValueInvalid', field, message: `Invalid value: ${JSON.stringify(k)}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')` });
    }
    if (typeof v !== 'string') continue;
    if (v.length > 63) out.push({ reason: 'FieldValueInvalid', field, message: `Invalid value: ${JSON.stringify(v)}: must be no more than 63 characters` });
    else if (v !== '' && !LABEL_NAME.test(v)) out.push({ reason: 'FieldValueInvalid', field, message: `Invalid value: ${JSON.stringify(v)}: ${LABEL_VALUE_MSG}` });
  }
  return out;
}

function isExtendedResource(name: string): boolean {
  return name.includes('/') && !name.startsWith('kubernetes.io/') && !name.includes('.kubernetes.io/');
}

function containerCauses(c: Obj, field: string, volumes: Set<string>, init: boolean): Cause[] {
  const out: Cause[] = [];
  if (typeof c.name === 'string' && (!DNS_LABEL.test(c.name) || c.name.length > 63)) {
    out.push({ reason: 'FieldValueInvalid', field: `${field}.name`, message: `Invalid value: ${JSON.stringify(c.name)}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')` });
  }
  if (!c.image || !String(c.image).trim()) out.push({ reason: 'FieldValueRequired', field: `${field}.image`, message: 'Required value' });
  if (init && c.restartPolicy !== undefined && c.restartPolicy !== 'Always') {
    out.push({ reason: 'FieldValueNotSupported', field: `${field}.restartPolicy`, message: `Unsupported value: ${JSON.stringify(c.restartPolicy)}: supported values: "Always"` });
  }
  if (!init && c.restartPolicy !== undefined) out.push({ reason: 'FieldValueForbidden', field: `${field}.restartPolicy`, message: 'Forbidden: may not be set for non-init containers' });
  for (const [i, e] of (c.env ?? []).entries()) {
    if (typeof e?.name === 'string' && !ENV_NAME.test(e.name)) {
      out.push({ reason: 'FieldValueInvalid', field: `${field}.env[${i}].name`, message: `Invalid value: ${JSON.stringify(e.name)}: a valid environment variable name must consist of alphabetic characters, digits, '_', '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')` });
    }
  }
  const paths = new Set<string>();
  for (const [i, m] of (c.volumeMounts ?? []).entries()) {
    if (!volumes.has(m?.name)) out.push({ reason: 'FieldValueNotFound', field: `${field}.volumeMounts[${i}].name`, message: `Not found: ${JSON.stringify(m?.name)}` });
    if (paths.has(m?.mountPath)) out.push({ reason: 'FieldValueInvalid', field: `${field}.volumeMounts[${i}].mountPath`, message: `Invalid value: ${JSON.stringify(m?.mountPath)}: must be unique` });
    paths.add(m?.mountPath);
  }
  const req = c.resources?.requests ?? {};
  const lim = c.resources?.limits ?? {};
  for (const [name, v] of Object.entries({ ...req, ...lim })) {
    let n: number;
    try {
      n = parseQuantity(v as string | number);
    } catch (e) {
      out.push({ reason: 'FieldValueInvalid', field: `${field}.resources`, message: `Invalid value: ${JSON.stringify(v)}: ${(e as Error).message}` });
      continue;
    }
    if (isExtendedResource(name) && !Number.isInteger(n)) out.push({ reason: 'FieldValueInvalid', field: `${field}.resources.requests[${name}]`, message: `Invalid value: ${JSON.stringify(v)}: must be an integer` });
  }
  for (const [name, v] of Object.entries(req)) {
    const l = lim[name];
    if (isExtendedResource(name)) {
      if (l === undefined) out.push({ reason: 'FieldValueRequired', field: `${field}.resources.limits`, message: 'Required value: Limit must be set for non overcommitable resources' });
      else if (safeQ(l) !== safeQ(v)) out.push({ reason: 'FieldValueInvalid', field: `${field}.resources.requests[${name}]`, message: `Invalid value: ${JSON.stringify(v)}: must be equal to ${name} limit of ${l}` });
    } else if (l !== undefined && safeQ(v) > safeQ(l)) {
      out.push({ reason: 'FieldValueInvalid', field: `${field}.resources.requests`, message: `Invalid value: ${JSON.stringify(v)}: must be less than or equal to ${name} limit of ${l}` });
    }
  }
  return out;
}
function safeQ(v: unknown): number {
  try {
    return parseQuantity(v as string | number);
  } catch {
    return NaN;
  }
}

/** The apiserver's semantic checks on a (defaulted) Job that the JSON schema cannot express. */
function jobCauses(job: Obj): Cause[] {
  const out: Cause[] = [];
  const md = job.metadata ?? {};
  if (!md.name) out.push({ reason: 'FieldValueRequired', field: 'metadata.name', message: 'Required value: name or generateName is required' });
  else if (!DNS_SUBDOMAIN.test(md.name)) out.push({ reason: 'FieldValueInvalid', field: 'metadata.name', message: `Invalid value: ${JSON.stringify(md.name)}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')` });
  else if (md.name.length > 63) out.push({ reason: 'FieldValueInvalid', field: 'metadata.name', message: `Invalid value: ${JSON.stringify(md.name)}: must be no more than 63 characters` });
  out.push(...labelCauses(md.labels, 'metadata.labels'));
  const annotationBytes = Object.entries(md.annotations ?? {}).reduce((n, [k, v]) => n + Buffer.byteLength(k) + Buffer.byteLength(String(v)), 0);
  if (annotationBytes > 262144) out.push({ reason: 'FieldValueTooLong', field: 'metadata.annotations', message: 'Too long: must have at most 262144 bytes' });
  const spec = job.spec ?? {};
  for (const f of ['backoffLimit', 'ttlSecondsAfterFinished', 'parallelism', 'completions', 'activeDeadlineSeconds']) {
    if (typeof spec[f] === 'number' && spec[f] < 0) out.push({ reason: 'FieldValueInvalid', field: `spec.${f}`, message: `Invalid value: ${spec[f]}: must be greater than or equal to 0` });
  }
  if (spec.selector && !spec.manualSelector) {
    out.push({ reason: 'FieldValueInvalid', field: 'spec.selector', message: `Invalid value: ${JSON.stringify(spec.selector)}: \`selector\` not auto-generated` });
  }
  const tmpl = spec.template ?? {};
  out.push(...labelCauses(tmpl.metadata?.labels, 'spec.template.metadata.labels'));
  const ps = tmpl.spec ?? {};
  const rp = ps.restartPolicy;
  if (rp === undefined) out.push({ reason: 'FieldValueRequired', field: 'spec.template.spec.restartPolicy', message: 'Required value: valid values: "OnFailure", "Never"' });
  else if (rp !== 'Never' && rp !== 'OnFailure') out.push({ reason: 'FieldValueNotSupported', field: 'spec.template.spec.restartPolicy', message: `Unsupported value: ${JSON.stringify(rp)}: supported values: "OnFailure", "Never"` });
  else if (spec.podFailurePolicy && rp !== 'Never') out.push({ reason: 'FieldValueInvalid', field: 'spec.template.spec.restartPolicy', message: `Invalid value: ${JSON.stringify(rp)}: only "Never" is supported when podFailurePolicy is specified` });
  if (typeof ps.activeDeadlineSeconds === 'number' && (ps.activeDeadlineSeconds < 1 || ps.activeDeadlineSeconds > 2147483647)) {
    out.push({ reason: 'FieldValueInvalid', field: 'spec.template.spec.activeDeadlineSeconds', message: `Invalid value: ${ps.activeDeadlineSeconds}: must be between 1 and 2147483647, inclusive` });
  }
  const volumes = new Set<string>();
  for (const [i, v] of (ps.volumes ?? []).entries()) {
    if (volumes.has(v?.name)) out.push({ reason: 'FieldValueDuplicate', field: `spec.template.spec.volumes[${i}].name`, message: `Duplicate value: ${JSON.stringify(v?.name)}` });
    volumes.add(v?.name);
  }
  if (!Array.isArray(ps.containers) || ps.containers.length === 0) out.push({ reason: 'FieldValueRequired', field: 'spec.template.spec.containers', message: 'Required value' });
  const names = new Set<string>();
  const each = (list: Obj[] | undefined, field: string, init: boolean) => {
    for (const [i, c] of (list ?? []).entries()) {
      const f = `spec.template.spec.${field}[${i}]`;
      if (typeof c?.name === 'string') {
        if (names.has(c.name)) out.push({ reason: 'FieldValueDuplicate', field: `${f}.name`, message: `Duplicate value: ${JSON.stringify(c.name)}` });
        names.add(c.name);
      }
      out.push(...containerCauses(c ?? {}, f, volumes, init));
    }
  };
  each(ps.initContainers, 'initContainers', true);
  each(ps.containers, 'containers', false);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Small helpers

const clone = <T>(o: T): T => JSON.parse(JSON.stringify(o)) as T;
/** metav1.Time goes over the wire with whole seconds. */
const now = () => new Date().toISOString().replace(/\.\d{3}Z$/, 'Z');
const NAME_CHARS = 'bcdfghjklmnpqrstvwxz2456789';
const suffix = () => Array.from({ length: 5 }, () => NAME_CHARS[randomInt(NAME_CHARS.length)]).join('');
const hex = (s: string, n = 64) => createHash('sha256').update(s).digest('hex').slice(0, n);
const TERMINAL = new Set(['Succeeded', 'Failed']);

function tailBytes(s: string, lines: number, bytes: number): string {
  let out = s.split('\n');
  if (out.length > 0 && out[out.length - 1] === '') out = out.slice(0, -1);
  let t = out.slice(-lines).join('\n');
  const b = Buffer.from(t);
  if (b.length > bytes) t = b.subarray(b.length - bytes).toString();
  return t;
}
function headBytes(s: string, bytes: number): string {
  const b = Buffer.from(s);
  return b.length > bytes ? b.subarray(0, bytes).toString() : s;
}

function setCondition(status: Obj, type: string, value: 'True' | 'False', reason?: string, message?: string): void {
  status.conditions ??= [];
  const t = now();
  const old = status.conditions.find((c: Obj) => c.type === type);
  const c: Obj = { type, status: value, lastProbeTime: null, lastTransitionTime: old && old.status === value ? old.lastTransitionTime : t };
  if (reason) c.reason = reason;
  if (message) c.message = message;
  if (old) Object.keys(old).forEach((k) => delete old[k]), Object.assign(old, c);
  else status.conditions.push(c);
}

// ---------------------------------------------------------------------------------------------
// State

interface PodRec {
  obj: Obj;
  job: JobRec | null;
  seq: number;
  script?: PodScript;
  logs: Record<string, string>;
  /** The Job controller has taken this pod's end into account. */
  counted: boolean;
  deleting: boolean;
  gone: boolean;
  goneWaiters: Array<() => void>;
}

interface JobRec {
  obj: Obj;
  seq: number;
  pods: Set<PodRec>;
  finished: boolean;
  /** Being deleted (Foreground) or gone: the Job controller no longer acts on it. */
  deleting: boolean;
  gone: boolean;
  /** Its pod was refused (quota); retried whenever capacity frees. */
  awaitingPod: boolean;
}

interface Watcher {
  kind: 'pods' | 'jobs';
  labels: Requirement[];
  fields: FieldRequirement[];
  res: ServerResponse;
  timer?: NodeJS.Timeout;
}

interface HistoryEntry { rv: number; type: string; object: Obj }

const KINDS = {
  pods: { apiVersion: 'v1', kind: 'Pod', list: 'PodList', group: '', model: 'V1Pod' },
  jobs: { apiVersion: 'batch/v1', kind: 'Job', list: 'JobList', group: 'batch', model: 'V1Job' },
} as const;

// ---------------------------------------------------------------------------------------------

export async function startFakeKubernetes(opts: FakeKubernetesOptions): Promise<FakeKubernetes> {
  const ns = opts.namespace;
  const runPod: PodRunner = opts.runPod ?? (() => ({}));
  const jobDeadline = opts.jobDeadline ?? 'kill-pods';
  const historyLimit = opts.watchHistory ?? 1000;
  const nodes = opts.nodes.map((n, i) => ({
    ...n,
    ip: `10.0.0.${i + 10}`,
    alloc: { cpuMilli: Math.round(n.cpu * 1000), memoryBytes: Math.round(n.memoryMiB * 2 ** 20), gpus: n.gpus ?? 0 },
    labelSet: { 'kubernetes.io/hostname': n.name, 'kubernetes.io/os': 'linux', 'kubernetes.io/arch': 'amd64', ...(n.labels ?? {}) } as Record<string, string>,
  }));

  let rv = 1;
  let seq = 0;
  let podIp = 0;
  let closed = false;
  const jobs = new Map<string, JobRec>();
  const pods = new Map<string, PodRec>();
  const history: Record<'pods' | 'jobs', HistoryEntry[]> = { pods: [], jobs: [] };
  const trimmedUpTo: Record<'pods' | 'jobs', number> = { pods: 0, jobs: 0 };
  const watchers = new Set<Watcher>();
  const timers = new Set<NodeJS.Timeout>();
  const immediates = new Set<NodeJS.Immediate>();
  /** waitFor's checks, run after every change; close() fails them. */
  const waiters = new Map<() => void, (e: Error) => void>();
  const events: FakeEvent[] = [];
  const quotaUid = randomUUID();
  const quotaCreated = now();
  const stats: FakeStats = { jobsCreated: 0, jobsDeleted: 0, jobsExpired: 0, maxJobsAlive: 0, maxPodsNotRunning: 0, creations: [], requests: {} };

  // --- timers the fake owns (all cleared by close) ---
  const later = (ms: number, fn: () => void): NodeJS.Timeout => {
    const t = setTimeout(() => {
      timers.delete(t);
      if (!closed) fn();
    }, ms);
    timers.add(t);
    return t;
  };
  const cancel = (t: NodeJS.Timeout | undefined) => {
    if (t) {
      clearTimeout(t);
      timers.delete(t);
    }
  };
  const soon = (fn: () => void) => {
    const i = setImmediate(() => {
      immediates.delete(i);
      if (!closed) fn();
    });
    immediates.add(i);
  };
  const tick = () => new Promise<void>((r) => soon(r));
  const sleep = (ms: number) => (ms > 0 ? new Promise<void>((r) => later(ms, r)) : tick());

  const event = (kind: 'Job' | 'Pod', name: string, type: 'Normal' | 'Warning', reason: string, message: string) => {
    events.push({ time: Date.now(), kind, name, type, reason, message });
  };

  // --- watch events ---
  const withKind = (kind: 'pods' | 'jobs', o: Obj) => ({ apiVersion: KINDS[kind].apiVersion, kind: KINDS[kind].kind, ...o });
  function emit(kind: 'pods' | 'jobs', type: 'ADDED' | 'MODIFIED' | 'DELETED', obj: Obj): void {
    rv += 1;
    obj.metadata.resourceVersion = String(rv);
    const object = clone(withKind(kind, obj));
    const h = history[kind];
    h.push({ rv, type, object });
    while (h.length > historyLimit) trimmedUpTo[kind] = h.shift()!.rv;
    for (const w of watchers) if (w.kind === kind && labelsMatch(w.labels, object.metadata.labels) && fieldsMatch(w.fields, object)) send(w, type, object);
    // Stats and waiters see every change.
    const pending = [...pods.values()].filter((p) => p.obj.status?.phase === 'Pending').length;
    stats.maxPodsNotRunning = Math.max(stats.maxPodsNotRunning, pending);
    stats.maxJobsAlive = Math.max(stats.maxJobsAlive, jobs.size);
    for (const w of [...waiters.keys()]) w();
  }
  function send(w: Watcher, type: string, object: Obj): void {
    if (!w.res.writableEnded) w.res.write(`${JSON.stringify({ type, object })}\n`);
  }
  function endWatch(w: Watcher): void {
    watchers.delete(w);
    if (w.timer) cancel(w.timer);
    if (!w.res.writableEnded) w.res.end();
  }

  const deserialize = <T>(kind: 'pods' | 'jobs', o: Obj): T => ObjectSerializer.deserialize(clone(withKind(kind, o)), KINDS[kind].model, '') as T;
  const live = (p: PodRec) => !closed && !p.gone && !p.deleting && !TERMINAL.has(p.obj.status.phase);
  const nonTerminated = () => [...pods.values()].filter((p) => !p.gone && !TERMINAL.has(p.obj.status.phase));
  const activePods = (j: JobRec) => [...j.pods].filter((p) => !p.gone && !TERMINAL.has(p.obj.status.phase));

  // --- quota ---
  function quotaHard(): Record<string, string> {
    const q = opts.quota ?? {};
    const hard: Record<string, string> = {};
    if (q.cpu !== undefined) hard['requests.cpu'] = fmtCpu(Math.round(q.cpu * 1000));
    if (q.memoryMiB !== undefined) hard['requests.memory'] = fmtMem(Math.round(q.memoryMiB * 2 ** 20));
    if (q.gpus !== undefined) hard[`requests.${GPU}`] = String(q.gpus);
    return hard;
  }
  function quotaUsed(): ResourceAmounts {
    return nonTerminated().reduce((a, p) => add(a, podRequests(p.obj.spec)), ZERO);
  }
  function quotaObject(): Obj {
    const hard = quotaHard();
    const u = quotaUsed();
    const used: Record<string, string> = {};
    if ('requests.cpu' in hard) used['requests.cpu'] = fmtCpu(u.cpuMilli);
    if ('requests.memory' in hard) used['requests.memory'] = fmtMem(u.memoryBytes);
    if (`requests.${GPU}` in hard) used[`requests.${GPU}`] = String(u.gpus);
    return {
      metadata: { name: 'compute', namespace: ns, uid: quotaUid, resourceVersion: String(rv), creationTimestamp: quotaCreated },
      spec: { hard },
      status: { hard, used },
    };
  }
  /** The ResourceQuota admission plugin's answer for a new pod: null if admitted, else its message. */
  function quotaRefusal(podName: string, spec: Obj): string | null {
    if (!opts.quota) return null;
    const q = opts.quota;
    const missing: string[] = [];
    const all = [...(spec.initContainers ?? []), ...(spec.containers ?? [])];
    if (q.cpu !== undefined && all.some((c: Obj) => containerRequests(c).cpu === undefined)) missing.push('requests.cpu');
    if (q.memoryMiB !== undefined && all.some((c: Obj) => containerRequests(c).memory === undefined)) missing.push('requests.memory');
    if (missing.length > 0) return `pods "${podName}" is forbidden: failed quota: compute: must specify ${missing.join(',')}`;
    const want = podRequests(spec);
    const used = quotaUsed();
    const over: Array<[string, string, string, string]> = [];
    if (q.cpu !== undefined && used.cpuMilli + want.cpuMilli > Math.round(q.cpu * 1000)) over.push(['requests.cpu', fmtCpu(want.cpuMilli), fmtCpu(used.cpuMilli), fmtCpu(Math.round(q.cpu * 1000))]);
    if (q.memoryMiB !== undefined && used.memoryBytes + want.memoryBytes > Math.round(q.memoryMiB * 2 ** 20)) over.push(['requests.memory', fmtMem(want.memoryBytes), fmtMem(used.memoryBytes), fmtMem(Math.round(q.memoryMiB * 2 ** 20))]);
    if (q.gpus !== undefined && used.gpus + want.gpus > q.gpus) over.push([`requests.${GPU}`, String(want.gpus), String(used.gpus), String(q.gpus)]);
    if (over.length === 0) return null;
    const f = (i: number) => over.map((o) => `${o[0]}=${o[i]}`).join(',');
    return `pods "${podName}" is forbidden: exceeded quota: compute, requested: ${f(1)}, used: ${f(2)}, limited: ${f(3)}`;
  }

  // --- Job controller ---
  function createPodFor(job: JobRec): void {
    if (job.gone || job.deleting || job.finished || job.obj.spec.suspend) return;
    const jname: string = job.obj.metadata.name;
    const base = `${jname}-`.slice(0, 58);
    let name = `${base}${suffix()}`;
    while (pods.has(name)) name = `${base}${suffix()}`;
    const tmpl = job.obj.spec.template;
    const refusal = quotaRefusal(name, tmpl.spec);
    if (refusal) {
      if (!job.awaitingPod) event('Job', jname, 'Warning', 'FailedCreate', `Error creating: ${refusal}`);
      job.awaitingPod = true;
      return;
    }
    job.awaitingPod = false;
    const spec = clone(tmpl.spec);
    spec.serviceAccountName ??= 'default';
    spec.serviceAccount ??= spec.serviceAccountName;
    spec.priority ??= 0;
    spec.tolerations = [
      ...(spec.tolerations ?? []),
      { key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
      { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 },
    ];
    const obj: Obj = {
      metadata: {
        name,
        generateName: base,
        namespace: ns,
        uid: randomUUID(),
        creationTimestamp: now(),
        labels: { ...(tmpl.metadata?.labels ?? {}) },
        ...(tmpl.metadata?.annotations ? { annotations: { ...tmpl.metadata.annotations } } : {}),
        ownerReferences: [{ apiVersion: 'batch/v1', kind: 'Job', name: jname, uid: job.obj.metadata.uid, controller: true, blockOwnerDeletion: true }],
        finalizers: ['batch.kubernetes.io/job-tracking'],
      },
      spec,
      status: { phase: 'Pending', qosClass: qosClass(spec) },
    };
    const p: PodRec = { obj, job, seq: ++seq, logs: {}, counted: false, deleting: false, gone: false, goneWaiters: [] };
    pods.set(name, p);
    job.pods.add(p);
    event('Job', jname, 'Normal', 'SuccessfulCreate', `Created pod: ${name}`);
    emit('pods', 'ADDED', obj);
    refreshJob(job);
    kickScheduler();
  }

  function qosClass(spec: Obj): string {
    const all = [...(spec.initContainers ?? []), ...(spec.containers ?? [])];
    const any = all.some((c: Obj) => Object.keys(containerRequests(c)).length > 0);
    if (!any) return 'BestEffort';
    const guaranteed = all.every((c: Obj) => {
      const l = c.resources?.limits ?? {};
      const r = containerRequests(c);
      return ['cpu', 'memory'].every((k) => l[k] !== undefined && safeQ(l[k]) === safeQ(r[k]));
    });
    return guaranteed ? 'Guaranteed' : 'Burstable';
  }

  function refreshJob(job: JobRec): void {
    if (job.gone) return;
    const st = job.obj.status;
    const before = JSON.stringify(st);
    const act = activePods(job);
    st.active = act.length;
    st.ready = act.filter((p) => p.obj.status.conditions?.some((c: Obj) => c.type === 'Ready' && c.status === 'True')).length;
    st.terminating = act.filter((p) => p.deleting).length;
    if (!st.active) delete st.active;
    if (JSON.stringify(st) !== before) emit('jobs', 'MODIFIED', job.obj);
  }

  function finishJob(job: JobRec, type: 'Complete' | 'Failed', reason?: string, message?: string): void {
    if (job.finished) return;
    job.finished = true;
    job.awaitingPod = false;
    const st = job.obj.status;
    if (type === 'Complete') {
      setCondition(st, 'SuccessCriteriaMet', 'True', 'CompletionsReached', 'Reached expected number of succeeded pods');
      setCondition(st, 'Complete', 'True', 'CompletionsReached', 'Reached expected number of succeeded pods');
      st.completionTime = now();
      event('Job', job.obj.metadata.name, 'Normal', 'Completed', 'Job completed');
    } else {
      setCondition(st, 'FailureTarget', 'True', reason, message);
      setCondition(st, 'Failed', 'True', reason, message);
      event('Job', job.obj.metadata.name, 'Warning', reason ?? 'Failed', message ?? 'Job failed');
    }
    emit('jobs', 'MODIFIED', job.obj);
    const ttl = job.obj.spec.ttlSecondsAfterFinished;
    if (typeof ttl === 'number') {
      later(ttl * 1000, () => {
        if (job.gone || job.deleting) return;
        stats.jobsExpired += 1;
        void deleteJob(job, 'Foreground');
      });
    }
  }

  function failurePolicyAction(job: JobRec, p: PodRec): { action: string; message: string } | null {
    const rules: Obj[] = job.obj.spec.podFailurePolicy?.rules ?? [];
    const podName = `${ns}/${p.obj.metadata.name}`;
    for (const [i, rule] of rules.entries()) {
      const ec = rule.onExitCodes;
      if (ec) {
        for (const cs of p.obj.status.containerStatuses ?? []) {
          const code = cs.state?.terminated?.exitCode;
          if (code === undefined || code === 0) continue;
          if (ec.containerName && ec.containerName !== cs.name) continue;
          const inList = (ec.values ?? []).includes(code);
          if ((ec.operator === 'In' && inList) || (ec.operator === 'NotIn' && !inList)) {
            return { action: rule.action, message: `Container ${cs.name} for pod ${podName} failed with exit code ${code} matching ${rule.action} rule at index ${i}` };
          }
        }
      }
      for (const pat of rule.onPodConditions ?? []) {
        if (p.obj.status.conditions?.some((c: Obj) => c.type === pat.type && c.status === (pat.status ?? 'True'))) {
          return { action: rule.action, message: `Pod ${podName} has condition ${pat.type} matching ${rule.action} rule at index ${i}` };
        }
      }
    }
    return null;
  }

  /** The Job controller sees a pod end (or go before it ended). */
  function podEnded(p: PodRec): void {
    if (p.counted) return;
    p.counted = true;
    const job = p.job;
    if (job && !job.gone && !job.deleting && !job.finished) {
      const st = job.obj.status;
      if (p.obj.status.phase === 'Succeeded') {
        st.succeeded = (st.succeeded ?? 0) + 1;
        finishJob(job, 'Complete');
      } else {
        const rule = failurePolicyAction(job, p);
        if (rule?.action === 'Ignore') {
          soon(() => createPodFor(job));
        } else {
          st.failed = (st.failed ?? 0) + 1;
          if (rule?.action === 'FailJob') finishJob(job, 'Failed', 'PodFailurePolicy', rule.message);
          else if (st.failed > (job.obj.spec.backoffLimit ?? 6)) finishJob(job, 'Failed', 'BackoffLimitExceeded', 'Job has reached the specified backoff limit');
          else soon(() => createPodFor(job));
        }
      }
    }
    if (job) refreshJob(job);
    kickScheduler();
  }

  function jobDeadlinePassed(job: JobRec): void {
    if (job.gone || job.deleting || job.finished) return;
    const act = activePods(job).filter((p) => !p.deleting);
    job.obj.status.failed = (job.obj.status.failed ?? 0) + act.length;
    finishJob(job, 'Failed', 'DeadlineExceeded', 'Job was active longer than specified deadline');
    for (const p of act) {
      if (jobDeadline === 'kill-pods') {
        kill(p, { exitCode: 137, reason: 'DeadlineExceeded', message: 'Pod was active on the node longer than the specified deadline', sidecarsFromScript: true });
      } else {
        event('Job', job.obj.metadata.name, 'Normal', 'SuccessfulDelete', `Deleted pod: ${p.obj.metadata.name}`);
        void deletePodGraceful(p);
      }
    }
    refreshJob(job);
  }

  // --- scheduler ---
  let schedulerQueued = false;
  function kickScheduler(): void {
    if (schedulerQueued) return;
    schedulerQueued = true;
    soon(() => {
      schedulerQueued = false;
      schedule();
    });
  }
  function schedule(): void {
    // Jobs whose pod the quota refused try again first (oldest first).
    for (const j of [...jobs.values()].sort((a, b) => a.seq - b.seq)) if (j.awaitingPod) createPodFor(j);
    const queue = [...pods.values()].filter((p) => !p.gone && !p.deleting && !p.obj.spec.nodeName && !TERMINAL.has(p.obj.status.phase)).sort((a, b) => a.seq - b.seq);
    for (const p of queue) {
      const want = podRequests(p.obj.spec);
      const reasons = new Map<string, number>();
      const note = (r: string) => reasons.set(r, (reasons.get(r) ?? 0) + 1);
      let chosen: (typeof nodes)[number] | undefined;
      for (const n of nodes) {
        const sel: Record<string, string> = p.obj.spec.nodeSelector ?? {};
        if (!Object.entries(sel).every(([k, v]) => n.labelSet[k] === v)) {
          note("node(s) didn't match Pod's node affinity/selector");
          continue;
        }
        const untolerated = (n.taints ?? []).find((t) => t.effect !== 'PreferNoSchedule' && !(p.obj.spec.tolerations ?? []).some((tol: Obj) => tolerates(tol, t)));
        if (untolerated) {
          note(`node(s) had untolerated taint {${untolerated.key}: ${untolerated.value ?? ''}}`);
          continue;
        }
        const used = nonTerminated().filter((q) => q.obj.spec.nodeName === n.name).reduce((a, q) => add(a, podRequests(q.obj.spec)), ZERO);
        let fits = true;
        if (used.cpuMilli + want.cpuMilli > n.alloc.cpuMilli) (fits = false), note('Insufficient cpu');
        if (used.memoryBytes + want.memoryBytes > n.alloc.memoryBytes) (fits = false), note('Insufficient memory');
        if (used.gpus + want.gpus > n.alloc.gpus) (fits = false), note(`Insufficient ${GPU}`);
        if (fits) {
          chosen = n;
          break;
        }
      }
      const st = p.obj.status;
      if (chosen) {
        p.obj.spec.nodeName = chosen.name;
        setCondition(st, 'PodScheduled', 'True');
        event('Pod', p.obj.metadata.name, 'Normal', 'Scheduled', `Successfully assigned ${ns}/${p.obj.metadata.name} to ${chosen.name}`);
        emit('pods', 'MODIFIED', p.obj);
        void kubelet(p, chosen.ip);
      } else {
        const parts = [...reasons.entries()].map(([r, c]) => `${c} ${r}`).sort();
        const message = nodes.length === 0
          ? 'no nodes available to schedule pods'
          : `0/${nodes.length} nodes are available: ${parts.join(', ')}. preemption: 0/${nodes.length} nodes are available: ${nodes.length} No preemption victims found for incoming pod.`;
        const old = st.conditions?.find((c: Obj) => c.type === 'PodScheduled');
        if (!old || old.status !== 'False' || old.message !== message) {
          setCondition(st, 'PodScheduled', 'False', 'Unschedulable', message);
          event('Pod', p.obj.metadata.name, 'Warning', 'FailedScheduling', message);
          emit('pods', 'MODIFIED', p.obj);
        }
      }
    }
  }
  function tolerates(tol: Obj, t: { key: string; value?: string; effect: string }): boolean {
    if (tol.effect && tol.effect !== t.effect) return false;
    if (!tol.key) return tol.operator === 'Exists';
    if (tol.key !== t.key) return false;
    return tol.operator === 'Exists' || (tol.value ?? '') === (t.value ?? '');
  }

  // --- kubelet ---
  function containerStatus(c: Obj): Obj {
    return { name: c.name, image: c.image, imageID: '', ready: false, restartCount: 0, started: false, state: { waiting: { reason: 'PodInitializing' } }, lastState: {} };
  }
  function startContainer(p: PodRec, cs: Obj): void {
    const t = now();
    cs.state = { running: { startedAt: t } };
    cs.started = true;
    cs.imageID = `${String(cs.image).split('@')[0]!.replace(/:[^/:]*$/, '')}@sha256:${hex(cs.image)}`;
    cs.containerID = `containerd://${hex(`${p.obj.metadata.uid}/${cs.name}`)}`;
  }
  function terminationMessage(c: Obj, given: string | undefined, exitCode: number, log: string | undefined): string | undefined {
    let m = given;
    if (!m && exitCode !== 0 && c?.terminationMessagePolicy === 'FallbackToLogsOnError' && log) m = tailBytes(log, 80, 2048);
    return m ? headBytes(m, 4096) : undefined;
  }
  function terminate(p: PodRec, cs: Obj, spec: Obj, r: { exitCode: number; reason?: string; message?: string }): void {
    const startedAt = cs.state?.running?.startedAt ?? now();
    const message = terminationMessage(spec, r.message, r.exitCode, p.logs[cs.name]);
    cs.state = { terminated: { exitCode: r.exitCode, reason: r.reason ?? (r.exitCode === 0 ? 'Completed' : 'Error'), ...(message ? { message } : {}), startedAt, finishedAt: now(), containerID: cs.containerID } };
    cs.ready = false;
    cs.started = false;
  }
  const specOf = (p: PodRec, name: string) => [...(p.obj.spec.initContainers ?? []), ...p.obj.spec.containers].find((c: Obj) => c.name === name);
  const isSidecar = (p: PodRec, name: string) => (p.obj.spec.initContainers ?? []).some((c: Obj) => c.name === name && c.restartPolicy === 'Always');
  function mainTarget(p: PodRec): Obj {
    const list: Obj[] = p.obj.status.containerStatuses ?? [];
    return list.find((c) => c.name === 'task') ?? list[0];
  }
  function readiness(p: PodRec): void {
    const st = p.obj.status;
    const all = [...(st.initContainerStatuses ?? []).filter((c: Obj) => isSidecar(p, c.name)), ...st.containerStatuses];
    const unready = all.filter((c: Obj) => !c.ready).map((c: Obj) => c.name);
    if (unready.length === 0) {
      setCondition(st, 'Ready', 'True');
      setCondition(st, 'ContainersReady', 'True');
    } else {
      const m = `containers with unready status: [${unready.join(' ')}]`;
      setCondition(st, 'Ready', 'False', 'ContainersNotReady', m);
      setCondition(st, 'ContainersReady', 'False', 'ContainersNotReady', m);
    }
  }
  function podDone(p: PodRec, phase: 'Succeeded' | 'Failed'): void {
    const st = p.obj.status;
    st.phase = phase;
    const reason = phase === 'Succeeded' ? 'PodCompleted' : 'PodFailed';
    setCondition(st, 'PodReadyToStartContainers', 'False');
    setCondition(st, 'Ready', 'False', reason);
    setCondition(st, 'ContainersReady', 'False', reason);
  }

  async function kubelet(p: PodRec, nodeIp: string): Promise<void> {
    await tick();
    if (!live(p)) return;
    const st = p.obj.status;
    const spec = p.obj.spec;
    const ip = `10.244.${Math.floor(++podIp / 250)}.${(podIp % 250) + 2}`;
    Object.assign(st, { hostIP: nodeIp, hostIPs: [{ ip: nodeIp }], podIP: ip, podIPs: [{ ip }], startTime: now() });
    const inits: Obj[] = spec.initContainers ?? [];
    const regularInits = inits.filter((c) => c.restartPolicy !== 'Always').map((c) => c.name);
    setCondition(st, 'PodReadyToStartContainers', 'True');
    if (regularInits.length > 0) setCondition(st, 'Initialized', 'False', 'ContainersNotInitialized', `containers with incomplete status: [${regularInits.join(' ')}]`);
    else setCondition(st, 'Initialized', 'True');
    if (inits.length > 0) st.initContainerStatuses = inits.map((c) => containerStatus(c));
    st.containerStatuses = spec.containers.map((c: Obj) => containerStatus(c));
    readiness(p);
    // keep the conventional order of conditions
    const order = ['PodReadyToStartContainers', 'Initialized', 'Ready', 'ContainersReady', 'PodScheduled', 'DisruptionTarget'];
    st.conditions.sort((a: Obj, b: Obj) => order.indexOf(a.type) - order.indexOf(b.type));
    emit('pods', 'MODIFIED', p.obj);
    if (typeof spec.activeDeadlineSeconds === 'number') {
      later(spec.activeDeadlineSeconds * 1000, () => {
        if (!live(p)) return;
        kill(p, { exitCode: 137, reason: 'DeadlineExceeded', message: 'Pod was active on the node longer than the specified deadline', sidecarsFromScript: true });
      });
    }

    let script: PodScript;
    try {
      script = await runPod(deserialize<V1Pod>('pods', p.obj));
    } catch (e) {
      script = { task: { exitCode: 128, message: `runPod threw: ${(e as Error).message}` } };
    }
    if (!live(p)) return;
    p.script = script;
    const task = script.task ?? { exitCode: 0 };

    for (const ic of inits) {
      const cs = st.initContainerStatuses.find((c: Obj) => c.name === ic.name);
      await tick();
      if (!live(p)) return;
      if (ic.name === 'stage-in' && script.stageIn?.log !== undefined) p.logs[ic.name] = script.stageIn.log;
      if (ic.name === 'stage-out' && script.stageOut?.log !== undefined) p.logs[ic.name] = script.stageOut.log;
      startContainer(p, cs);
      if (ic.restartPolicy === 'Always') {
        cs.ready = true;
        event('Pod', p.obj.metadata.name, 'Normal', 'Started', `Started container ${ic.name}`);
        emit('pods', 'MODIFIED', p.obj);
        continue;
      }
      emit('pods', 'MODIFIED', p.obj);
      await tick();
      if (!live(p)) return;
      const r = ic.name === 'stage-in' ? (script.stageIn ?? { exitCode: 0 }) : { exitCode: 0 };
      terminate(p, cs, ic, r);
      const left = regularInits.slice(regularInits.indexOf(ic.name) + 1);
      if (r.exitCode !== 0) {
        // restartPolicy Never: a failed init container fails the pod; nothing after it starts.
        for (const other of st.initContainerStatuses) if (other.state.running) terminate(p, other, specOf(p, other.name), { exitCode: 137 });
        podDone(p, 'Failed');
        setCondition(st, 'Initialized', 'False', 'PodFailed');
        emit('pods', 'MODIFIED', p.obj);
        podEnded(p);
        return;
      }
      if (left.length > 0) setCondition(st, 'Initialized', 'False', 'ContainersNotInitialized', `containers with incomplete status: [${left.join(' ')}]`);
      emit('pods', 'MODIFIED', p.obj);
    }
    setCondition(st, 'Initialized', 'True');

    // Image pull and start of the main containers.
    await tick();
    if (!live(p)) return;
    const pull = script.pull ?? 'ok';
    if (pull !== 'ok') {
      const target = mainTarget(p);
      for (const cs of st.containerStatuses) if (cs !== target) cs.state = { waiting: { reason: 'ContainerCreating' } };
      if (pull.error === 'InvalidImageName') {
        target.state = { waiting: { reason: 'InvalidImageName', message: pull.message } };
        event('Pod', p.obj.metadata.name, 'Warning', 'InspectFailed', pull.message);
        emit('pods', 'MODIFIED', p.obj);
        return;
      }
      target.state = { waiting: { reason: 'ErrImagePull', message: pull.message } };
      event('Pod', p.obj.metadata.name, 'Warning', 'Failed', `Failed to pull image "${target.image}": ${pull.message}`);
      emit('pods', 'MODIFIED', p.obj);
      await tick();
      if (!live(p)) return;
      target.state = { waiting: { reason: 'ImagePullBackOff', message: `Back-off pulling image "${target.image}": ErrImagePull: ${pull.message}` } };
      event('Pod', p.obj.metadata.name, 'Normal', 'BackOff', `Back-off pulling image "${target.image}"`);
      emit('pods', 'MODIFIED', p.obj);
      return; // Stays Pending: the fake does not retry pulls.
    }
    for (const cs of st.containerStatuses) {
      if (task !== 'hang' && task.log !== undefined) p.logs[cs.name] = task.log;
      startContainer(p, cs);
      cs.ready = true;
    }
    st.phase = 'Running';
    readiness(p);
    emit('pods', 'MODIFIED', p.obj);
    if (task === 'hang') return; // until a deadline, an eviction or a deletion

    await sleep(task.durationMs ?? 0);
    if (!live(p)) return;
    for (const cs of st.containerStatuses) terminate(p, cs, specOf(p, cs.name), task);
    readiness(p);
    emit('pods', 'MODIFIED', p.obj);

    // The kubelet stops the sidecars (SIGTERM) once the main containers have ended.
    await tick();
    if (!live(p)) return;
    stopSidecars(p, true);
    podDone(p, st.containerStatuses.every((c: Obj) => c.state.terminated?.exitCode === 0) ? 'Succeeded' : 'Failed');
    emit('pods', 'MODIFIED', p.obj);
    podEnded(p);
  }

  function stopSidecars(p: PodRec, fromScript: boolean, exitCode = 143): void {
    for (const cs of p.obj.status.initContainerStatuses ?? []) {
      if (!cs.state.running) continue;
      const r = fromScript && cs.name === 'stage-out' ? (p.script?.stageOut ?? { exitCode: 0 }) : fromScript ? { exitCode: 0 } : { exitCode };
      terminate(p, cs, specOf(p, cs.name), r);
    }
  }

  /** The kubelet kills a pod that has not ended: phase Failed. */
  function kill(p: PodRec, o: { exitCode: number; reason?: string; message?: string; sidecarsFromScript: boolean; disruption?: { reason: string; message: string } }): void {
    if (p.gone || TERMINAL.has(p.obj.status.phase)) return;
    const st = p.obj.status;
    for (const cs of st.containerStatuses ?? []) if (cs.state.running) terminate(p, cs, specOf(p, cs.name), { exitCode: o.exitCode });
    for (const cs of st.initContainerStatuses ?? []) if (cs.state.running && !isSidecar(p, cs.name)) terminate(p, cs, specOf(p, cs.name), { exitCode: o.exitCode });
    stopSidecars(p, o.sidecarsFromScript, o.exitCode);
    podDone(p, 'Failed');
    if (o.reason) st.reason = o.reason;
    if (o.message) st.message = o.message;
    if (o.disruption) setCondition(st, 'DisruptionTarget', 'True', o.disruption.reason, o.disruption.message);
    event('Pod', p.obj.metadata.name, 'Normal', 'Killing', `Stopping container ${mainTarget(p)?.name ?? 'task'}${o.reason ? ` (${o.reason})` : ''}`);
    emit('pods', 'MODIFIED', p.obj);
    podEnded(p);
  }

  /** Graceful deletion: deletionTimestamp, the kubelet stops the pod, then it is gone. */
  function deletePodGraceful(p: PodRec): Promise<void> {
    if (p.gone) return Promise.resolve();
    const done = new Promise<void>((r) => p.goneWaiters.push(r));
    if (p.deleting) return done;
    p.deleting = true;
    const bound = Boolean(p.obj.spec.nodeName);
    const grace = p.obj.spec.terminationGracePeriodSeconds ?? 30;
    void (async () => {
      if (bound || TERMINAL.has(p.obj.status.phase)) {
        p.obj.metadata.deletionTimestamp = new Date(Date.now() + grace * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
        p.obj.metadata.deletionGracePeriodSeconds = grace;
        emit('pods', 'MODIFIED', p.obj);
        if (p.job) refreshJob(p.job);
        await tick();
        if (closed) return;
        if (!TERMINAL.has(p.obj.status.phase)) {
          // SIGTERM: the main containers end 143, the sidecars after them (stage-out uploads).
          const st = p.obj.status;
          for (const cs of st.containerStatuses ?? []) if (cs.state.running) terminate(p, cs, specOf(p, cs.name), { exitCode: 143 });
          for (const cs of st.initContainerStatuses ?? []) if (cs.state.running && !isSidecar(p, cs.name)) terminate(p, cs, specOf(p, cs.name), { exitCode: 143 });
          stopSidecars(p, true);
          podDone(p, 'Failed');
          emit('pods', 'MODIFIED', p.obj);
        }
        await tick();
        if (closed) return;
      }
      // The Job controller counts a pod that went before it ended as failed, then lets it go.
      podEnded(p);
      p.obj.metadata.finalizers = [];
      p.gone = true;
      pods.delete(p.obj.metadata.name);
      p.job?.pods.delete(p);
      emit('pods', 'DELETED', p.obj);
      if (p.job) refreshJob(p.job);
      kickScheduler();
      for (const w of p.goneWaiters.splice(0)) w();
    })();
    return done;
  }

  function removeJob(job: JobRec): void {
    if (job.gone) return;
    job.gone = true;
    job.deleting = true;
    jobs.delete(job.obj.metadata.name);
    emit('jobs', 'DELETED', job.obj);
  }

  /** Deletes a Job with a propagation policy; resolves once the Job is gone. */
  async function deleteJob(job: JobRec, policy: 'Orphan' | 'Background' | 'Foreground'): Promise<void> {
    if (job.gone) return;
    const owned = [...job.pods];
    if (policy === 'Orphan') {
      job.deleting = true;
      for (const p of owned) {
        p.job = null;
        delete p.obj.metadata.ownerReferences;
        if (!p.gone) emit('pods', 'MODIFIED', p.obj);
      }
      removeJob(job);
    } else if (policy === 'Background') {
      removeJob(job);
      await Promise.all(owned.map((p) => deletePodGraceful(p)));
    } else {
      job.deleting = true;
      job.obj.metadata.deletionTimestamp = now();
      job.obj.metadata.finalizers = ['foregroundDeletion'];
      emit('jobs', 'MODIFIED', job.obj);
      await Promise.all(owned.map((p) => deletePodGraceful(p)));
      if (closed) return;
      job.obj.metadata.finalizers = [];
      removeJob(job);
    }
  }

  // --- creating a Job ---
  function createJob(body: Obj, dryRun: boolean): Obj {
    if (!body || typeof body !== 'object' || Array.isArray(body)) throw new BadRequest('the body of the request was in an unknown format - accepted media types include: application/json, application/yaml');
    if (body.apiVersion !== undefined && body.apiVersion !== 'batch/v1') throw new BadRequest(`the API version in the data (${body.apiVersion}) does not match the expected API version (batch/v1)`);
    if (body.kind !== undefined && body.kind !== 'Job') throw new BadRequest(`the kind in the data (${body.kind}) does not match the expected kind (Job)`);
    if (body.metadata?.namespace !== undefined && body.metadata.namespace !== ns) throw new BadRequest('the namespace of the provided object does not match the namespace sent on the request');
    const job: Obj = clone({ apiVersion: 'batch/v1', kind: 'Job', ...body });
    job.metadata ??= {};
    if (!job.metadata.name && job.metadata.generateName) job.metadata.name = `${job.metadata.generateName}${suffix()}`;
    const name: string = job.metadata.name ?? '';
    const schema = schemaCauses(job);
    if (schema.length > 0) throw invalid('Job', 'batch', name, schema);
    // Defaulting (before validation, as the apiserver does).
    const uid = randomUUID();
    const spec = (job.spec ??= {});
    spec.parallelism ??= 1;
    spec.completions ??= 1;
    spec.backoffLimit ??= 6;
    spec.completionMode ??= 'NonIndexed';
    spec.suspend ??= false;
    spec.podReplacementPolicy ??= spec.podFailurePolicy ? 'Failed' : 'TerminatingOrFailed';
    const userSelector = spec.selector;
    const tmpl = (spec.template ??= {});
    tmpl.metadata ??= {};
    const jobLabels = { 'batch.kubernetes.io/controller-uid': uid, 'batch.kubernetes.io/job-name': name, 'controller-uid': uid, 'job-name': name };
    if (!spec.manualSelector) {
      tmpl.metadata.labels = { ...(tmpl.metadata.labels ?? {}), ...jobLabels };
      if (!userSelector) spec.selector = { matchLabels: { 'batch.kubernetes.io/controller-uid': uid } };
    }
    // A Job without labels takes its template's (the job labels included).
    if (!job.metadata.labels || Object.keys(job.metadata.labels).length === 0) job.metadata.labels = { ...(tmpl.metadata.labels ?? {}) };
    const ps = (tmpl.spec ??= {});
    ps.terminationGracePeriodSeconds ??= 30;
    ps.dnsPolicy ??= 'ClusterFirst';
    ps.schedulerName ??= 'default-scheduler';
    ps.securityContext ??= {};
    for (const c of [...(ps.initContainers ?? []), ...(ps.containers ?? [])]) {
      c.terminationMessagePath ??= '/dev/termination-log';
      c.terminationMessagePolicy ??= 'File';
      const image = String(c.image ?? '');
      c.imagePullPolicy ??= /:[^/:@]+$/.test(image) && !image.endsWith(':latest') ? 'IfNotPresent' : image.includes('@') ? 'IfNotPresent' : 'Always';
      c.resources ??= {};
      const lim = c.resources.limits;
      if (lim) c.resources.requests = { ...lim, ...(c.resources.requests ?? {}) };
    }
    const causes = jobCauses({ ...job, spec: { ...spec, selector: userSelector } });
    if (causes.length > 0) throw invalid('Job', 'batch', name, causes);
    if (jobs.has(name)) throw new ApiError(409, 'AlreadyExists', `jobs.batch "${name}" already exists`, { name, group: 'batch', kind: 'jobs' });
    Object.assign(job.metadata, { namespace: ns, uid, generation: 1, creationTimestamp: now() });
    job.status = {};
    if (Buffer.byteLength(JSON.stringify(job)) > 1.5 * 2 ** 20) throw new ApiError(500, 'InternalError', 'etcdserver: request is too large');
    if (dryRun) return job;

    delete job.apiVersion; // stored bare: list items carry no apiVersion/kind
    delete job.kind;
    const rec: JobRec = { obj: job, seq: ++seq, pods: new Set(), finished: false, deleting: false, gone: false, awaitingPod: false };
    jobs.set(name, rec);
    stats.jobsCreated += 1;
    stats.creations.push(Date.now());
    emit('jobs', 'ADDED', job);
    const response = clone(withKind('jobs', job));
    if (spec.suspend) {
      setCondition(job.status, 'Suspended', 'True', 'JobSuspended', 'Job suspended');
      emit('jobs', 'MODIFIED', job);
    } else {
      job.status.startTime = now();
      if (typeof spec.activeDeadlineSeconds === 'number') later(spec.activeDeadlineSeconds * 1000, () => jobDeadlinePassed(rec));
      createPodFor(rec);
    }
    return response;
  }

  // --- HTTP ---
  const app = Fastify({ logger: false, bodyLimit: 3 * 2 ** 20, forceCloseConnections: true });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body));
  app.setErrorHandler((err: Error & { statusCode?: number }, _req, reply) => {
    const e = err instanceof ApiError ? err
      : err.statusCode === 413 ? new ApiError(413, 'RequestEntityTooLarge', `Request entity too large: limit is ${3 * 2 ** 20}`)
      : err.statusCode && err.statusCode < 500 ? new BadRequest(err.message)
      : new ApiError(500, 'InternalError', `Internal error occurred: ${err.message}`);
    void reply.code(e.code).type('application/json').send(JSON.stringify(e.status()));
  });

  const count = (key: string) => (stats.requests[key] = (stats.requests[key] ?? 0) + 1);

  app.route({
    method: ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'],
    url: '/*',
    handler: async (req: FastifyRequest, reply: FastifyReply) => {
      if (req.headers.authorization !== `Bearer ${FAKE_TOKEN}`) throw new ApiError(401, 'Unauthorized', 'Unauthorized');
      const url = new URL(req.url, 'http://fake');
      const q = url.searchParams;
      const segs = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
      let group: string | null = null;
      let rest: string[] = [];
      if (segs[0] === 'api' && segs[1] === 'v1') (group = ''), (rest = segs.slice(2));
      else if (segs[0] === 'apis' && segs.length >= 3) (group = segs[1]!), (rest = segs.slice(3));
      if (group === null || rest.length === 0) {
        count(`${req.method.toLowerCase()} ${url.pathname}`);
        if (req.method === 'GET' && url.pathname === '/version') return reply.type('application/json').send(JSON.stringify(KUBE_VERSION));
        throw new ApiError(404, 'NotFound', 'the server could not find the requested resource');
      }
      let watch = q.get('watch') === 'true' || q.get('watch') === '1';
      if (rest[0] === 'watch') (watch = true), (rest = rest.slice(1));
      let namespace: string | null = null;
      let resource: string;
      let name: string | undefined;
      let sub: string | undefined;
      if (rest[0] === 'namespaces' && rest.length >= 3) [, namespace, resource, name, sub] = rest as [string, string, string, string?, string?];
      else [resource, name, sub] = rest as [string, string?, string?];
      const verbs: Record<string, string> = { GET: name ? 'get' : watch ? 'watch' : 'list', POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: name ? 'delete' : 'deletecollection' };
      const verb = verbs[req.method] ?? req.method.toLowerCase();
      const res = sub ? `${resource}/${sub}` : resource;
      count(`${verb} ${res}`);
      if (namespace !== ns) {
        const what = `${resource}${group ? `.${group}` : ''}${name && !sub ? ` "${name}"` : ''}`;
        throw new ApiError(403, 'Forbidden', `${what} is forbidden: User "${FAKE_USER(ns)}" cannot ${verb} resource "${res}" in API group "${group}" ${namespace === null ? 'at the cluster scope' : `in the namespace "${namespace}"`}`, { ...(name ? { name } : {}), group, kind: resource });
      }
      const notFound = () => new ApiError(404, 'NotFound', 'the server could not find the requested resource');
      const route = `${group}/${segs[0] === 'api' ? 'v1' : segs[2]} ${resource}`;
      const labels = parseLabelSelector(q.get('labelSelector') ?? undefined);
      const fields = parseFieldSelector(q.get('fieldSelector') ?? undefined);

      if ((route === 'batch/v1 jobs' || route === '/v1 pods') && !sub) {
        const kind = resource as 'jobs' | 'pods';
        const K = KINDS[kind];
        const store = kind === 'jobs' ? jobs : pods;
        const missing = (n: string) => new ApiError(404, 'NotFound', `${kind}${K.group ? `.${K.group}` : ''} "${n}" not found`, { name: n, group: K.group, kind });
        if (req.method === 'GET' && !name && watch) return startWatch(kind, labels, fields, q, reply);
        if (req.method === 'GET' && !name) {
          const items = [...store.values()].filter((r) => !r.gone).sort((a, b) => a.seq - b.seq).map((r) => r.obj).filter((o) => labelsMatch(labels, o.metadata.labels) && fieldsMatch(fields, o));
          return reply.type('application/json').send(JSON.stringify({ apiVersion: K.apiVersion, kind: K.list, metadata: { resourceVersion: String(rv) }, items }));
        }
        if (req.method === 'GET' && name) {
          const r = store.get(name);
          if (!r || r.gone) throw missing(name);
          return reply.type('application/json').send(JSON.stringify(withKind(kind, r.obj)));
        }
        if (kind === 'jobs' && req.method === 'POST' && !name) {
          const body = parseBody(req.body);
          const created = createJob(body, q.get('dryRun') === 'All');
          return reply.code(201).type('application/json').send(JSON.stringify(created));
        }
        if (kind === 'jobs' && req.method === 'DELETE' && name) {
          const job = jobs.get(name);
          if (!job || job.gone) throw missing(name);
          const body = req.body === undefined || req.body === '' ? {} : parseBody(req.body);
          const orphan = q.get('orphanDependents') ?? (body.orphanDependents === undefined ? null : String(body.orphanDependents));
          let policy = (q.get('propagationPolicy') ?? body.propagationPolicy ?? null) as string | null;
          if (policy === null && orphan !== null) policy = orphan === 'true' ? 'Orphan' : 'Background';
          // batch/v1 Jobs deleted through the API without a policy orphan their pods (kubectl sends Background itself).
          policy ??= 'Orphan';
          if (!['Orphan', 'Background', 'Foreground'].includes(policy)) {
            throw invalid('DeleteOptions', '', '', [{ reason: 'FieldValueNotSupported', field: 'propagationPolicy', message: `Unsupported value: ${JSON.stringify(policy)}: supported values: "Foreground", "Background", "Orphan", "nil"` }]);
          }
          if (q.get('dryRun') === 'All') return reply.type('application/json').send(JSON.stringify(withKind('jobs', job.obj)));
          stats.jobsDeleted += 1;
          const details = { name, group: 'batch', kind: 'jobs', uid: job.obj.metadata.uid };
          void deleteJob(job, policy as 'Orphan' | 'Background' | 'Foreground');
          if (policy === 'Foreground') return reply.type('application/json').send(JSON.stringify(withKind('jobs', job.obj)));
          return reply.type('application/json').send(JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details }));
        }
        throw notFound();
      }
      if (route === '/v1 pods' && sub === 'log' && req.method === 'GET' && name) {
        const p = pods.get(name);
        if (!p || p.gone) throw new ApiError(404, 'NotFound', `pods "${name}" not found`, { name, kind: 'pods' });
        const all: Obj[] = [...(p.obj.status.initContainerStatuses ?? []), ...(p.obj.status.containerStatuses ?? [])];
        let container = q.get('container');
        if (!container) {
          // As the apiserver: a pod with one (regular) container needs no name.
          if (p.obj.spec.containers.length === 1) container = p.obj.spec.containers[0].name;
          else {
            throw new BadRequest(`a container name must be specified for pod ${name}, choose one of: [${p.obj.spec.containers.map((c: Obj) => c.name).join(' ')}]${p.obj.spec.initContainers?.length ? ` or one of the init containers: [${p.obj.spec.initContainers.map((c: Obj) => c.name).join(' ')}]` : ''}`);
          }
        }
        if (!specOf(p, container!)) throw new BadRequest(`container ${container} is not valid for pod ${name}`);
        const cs = all.find((c) => c.name === container);
        if (!cs || cs.state?.waiting) {
          const why = cs?.state?.waiting?.reason === 'ErrImagePull' || cs?.state?.waiting?.reason === 'ImagePullBackOff' ? 'trying and failing to pull image' : (cs?.state?.waiting?.reason ?? 'ContainerCreating');
          throw new BadRequest(`container "${container}" in pod "${name}" is waiting to start: ${why}`);
        }
        let text = p.logs[container!] ?? '';
        const tail = q.get('tailLines');
        if (tail !== null) text = Number(tail) <= 0 ? '' : tailBytes(text, Number(tail), Infinity) + (text.endsWith('\n') ? '\n' : '');
        const limit = q.get('limitBytes');
        if (limit !== null) text = headBytes(text, Number(limit));
        return reply.type('text/plain').send(text);
      }
      if (route === '/v1 resourcequotas' && req.method === 'GET' && !sub) {
        const items = opts.quota ? [quotaObject()] : [];
        if (name) {
          const item = items.find((i) => i.metadata.name === name);
          if (!item) throw new ApiError(404, 'NotFound', `resourcequotas "${name}" not found`, { name, kind: 'resourcequotas' });
          return reply.type('application/json').send(JSON.stringify({ apiVersion: 'v1', kind: 'ResourceQuota', ...item }));
        }
        return reply.type('application/json').send(JSON.stringify({ apiVersion: 'v1', kind: 'ResourceQuotaList', metadata: { resourceVersion: String(rv) }, items: items.filter((i) => labelsMatch(labels, i.metadata.labels)) }));
      }
      throw notFound();
    },
  });

  function parseBody(raw: unknown): Obj {
    if (typeof raw !== 'string' || raw === '') throw new BadRequest('the body of the request was empty');
    try {
      return JSON.parse(raw);
    } catch (e) {
      throw new BadRequest(`the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (${(e as Error).message})`);
    }
  }

  function startWatch(kind: 'pods' | 'jobs', labels: Requirement[], fields: FieldRequirement[], q: URLSearchParams, reply: FastifyReply): void {
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = { kind, labels, fields, res };
    const from = q.get('resourceVersion');
    const matches = (o: Obj) => labelsMatch(labels, o.metadata.labels) && fieldsMatch(fields, o);
    if (from === null || from === '' || from === '0') {
      const store = kind === 'jobs' ? jobs : pods;
      for (const r of [...store.values()].filter((x) => !x.gone).sort((a, b) => a.seq - b.seq)) if (matches(r.obj)) send(w, 'ADDED', clone(withKind(kind, r.obj)));
    } else {
      const n = Number(from);
      if (!Number.isFinite(n) || n < trimmedUpTo[kind]) {
        const st = new ApiError(410, 'Expired', `too old resource version: ${from} (${trimmedUpTo[kind] + 1})`).status();
        res.end(`${JSON.stringify({ type: 'ERROR', object: st })}\n`);
        return;
      }
      for (const h of history[kind]) if (h.rv > n && matches(h.object)) send(w, h.type, h.object);
    }
    watchers.add(w);
    res.on('close', () => endWatch(w));
    const timeout = Number(q.get('timeoutSeconds') ?? 0);
    if (timeout > 0) w.timer = later(timeout * 1000, () => endWatch(w));
  }

  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;

  const podByName = (podName: string): PodRec => {
    const p = pods.get(podName);
    if (!p || p.gone) throw new Error(`no pod ${podName} in the fake (pods: ${[...pods.keys()].join(', ') || 'none'})`);
    return p;
  };

  const fake: FakeKubernetes = {
    url,
    namespace: ns,
    kubeConfig() {
      const kc = new KubeConfig();
      kc.loadFromOptions({
        clusters: [{ name: 'fake', server: url, skipTLSVerify: true }],
        users: [{ name: 'fake', token: FAKE_TOKEN }],
        contexts: [{ name: 'fake', cluster: 'fake', user: 'fake', namespace: ns }],
        currentContext: 'fake',
      });
      return kc;
    },
    async writeKubeconfig(dir: string) {
      await mkdir(dir, { recursive: true });
      const path = join(dir, 'kubeconfig');
      const s = JSON.stringify; // JSON strings are valid YAML scalars
      const yaml = [
        'apiVersion: v1',
        'kind: Config',
        'clusters:',
        '- name: fake',
        '  cluster:',
        `    server: ${s(url)}`,
        '    insecure-skip-tls-verify: true',
        'users:',
        '- name: fake',
        '  user:',
        `    token: ${s(FAKE_TOKEN)}`,
        'contexts:',
        '- name: fake',
        '  context:',
        '    cluster: fake',
        '    user: fake',
        `    namespace: ${s(ns)}`,
        'current-context: fake',
        '',
      ].join('\n');
      await writeFile(path, yaml, { mode: 0o600 });
      return path;
    },
    jobs: () => [...jobs.values()].filter((j) => !j.gone).sort((a, b) => a.seq - b.seq).map((j) => deserialize<V1Job>('jobs', j.obj)),
    pods: () => [...pods.values()].filter((p) => !p.gone).sort((a, b) => a.seq - b.seq).map((p) => deserialize<V1Pod>('pods', p.obj)),
    events: () => events.map((e) => ({ ...e })),
    stats,
    evict(podName: string, message = 'The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi.') {
      const p = podByName(podName);
      if (TERMINAL.has(p.obj.status.phase)) throw new Error(`pod ${podName} has already ended (${p.obj.status.phase})`);
      event('Pod', podName, 'Warning', 'Evicted', message);
      kill(p, { exitCode: 137, reason: 'Evicted', message, sidecarsFromScript: false, disruption: { reason: 'TerminationByKubelet', message } });
    },
    deletePod(podName: string) {
      return deletePodGraceful(podByName(podName));
    },
    waitFor<T>(fn: () => T | undefined | null | false, timeoutMs = 5000): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const check = () => {
          let v: T | undefined | null | false;
          try {
            v = fn();
          } catch (e) {
            finish();
            reject(e as Error);
            return;
          }
          if (v) {
            finish();
            resolve(v);
          }
        };
        const timer = setTimeout(() => {
          finish();
          reject(new Error(`waitFor: not true within ${timeoutMs} ms: ${fn.toString().slice(0, 200)}`));
        }, timeoutMs);
        const finish = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.set(check, (e) => {
          finish();
          reject(e);
        });
        check();
      });
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const w of [...watchers]) endWatch(w);
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const i of immediates) clearImmediate(i);
      immediates.clear();
      for (const fail of [...waiters.values()]) fail(new Error('the fake Kubernetes was closed'));
      for (const p of pods.values()) for (const w of p.goneWaiters.splice(0)) w();
      await app.close();
    },
  };
  return fake;
}
