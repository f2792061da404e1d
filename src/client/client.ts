import { createHash, randomUUID, X509Certificate } from 'node:crypto';
import { createReadStream, readFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import { createParser } from 'eventsource-parser';
import type { Dispatcher } from 'undici';
import { BoxgridError, type ErrorCode, type ErrorProblem } from '../domain/errors.js';
import type * as T from './types.js';

export interface ClientOptions {
  url: string;
  token?: string;
  /** How many times an idempotent call is retried on a network failure or a retryable answer. */
  retries?: number;
  /**
   * PEM certificate(s) of the CA the server's certificate must chain to, instead of Node's
   * bundled roots (a private CA). Without it an https:// server is verified against those roots.
   */
  ca?: string;
  /** A file holding that PEM (`--ca-file`); read once, when the client is made. */
  caFile?: string;
}

/**
 * The typed HTTP client shared by the CLI, the agent, SDK users and tests. Every error it
 * throws is a BoxgridError: the server's own (code, message, field, and `problems` when a
 * document such as a workflow spec had several) or `unavailable` with the URL that could not
 * be reached.
 */
export class BoxgridClient {
  readonly url: string;
  /** The server as error messages name it (a transfer URL is a credential: its origin only). */
  private readonly shown: string;
  private readonly token: string | undefined;
  private readonly retries: number;
  /** Connections that trust the custom CA; none: Node's fetch with its bundled roots. */
  private readonly dispatcher: Dispatcher | undefined;

  constructor(opts: ClientOptions) {
    this.url = opts.url.replace(/\/+$/, '');
    this.shown = shownServer(this.url);
    this.token = opts.token;
    this.retries = opts.retries ?? 3;
    const ca = opts.ca ?? (opts.caFile === undefined ? undefined : readCaFile(opts.caFile));
    this.dispatcher = ca === undefined ? undefined : dispatcherTrusting(ca);
  }

  // ── identity ──
  me(): Promise<T.Me> {
    return this.json('GET', '/v1/me');
  }
  createUser(name: string, operator = false): Promise<T.UserView> {
    return this.json('POST', '/v1/users', { name, operator });
  }
  listProjects(): Promise<{ projects: T.ProjectView[] }> {
    return this.json('GET', '/v1/projects');
  }
  createProject(name: string, shareWeight?: number): Promise<T.ProjectView> {
    return this.json('POST', '/v1/projects', shareWeight === undefined ? { name } : { name, shareWeight });
  }
  setShareWeight(project: string, shareWeight: number): Promise<T.ProjectView> {
    return this.json('PATCH', `/v1/projects/${enc(project)}`, { shareWeight });
  }
  setMember(project: string, user: string, role: T.Role): Promise<unknown> {
    return this.json('PUT', `/v1/projects/${enc(project)}/members/${enc(user)}`, { role });
  }
  createToken(opts: { user?: string; label?: string; ttlSeconds?: number } = {}): Promise<T.TokenView> {
    return this.json('POST', '/v1/tokens', opts);
  }

  revokeToken(id: string): Promise<unknown> {
    return this.json('DELETE', `/v1/tokens/${enc(id)}`);
  }

  createEnrollToken(opts: { site?: string; uses?: number; ttlSeconds?: number; label?: string; owner?: string } = {}): Promise<T.EnrollTokenView> {
    return this.json('POST', '/v1/enroll-tokens', opts);
  }
  listEnrollTokens(): Promise<{ tokens: T.EnrollTokenInfo[] }> {
    return this.json('GET', '/v1/enroll-tokens');
  }
  revokeEnrollToken(id: string): Promise<unknown> {
    return this.json('DELETE', `/v1/enroll-tokens/${enc(id)}`);
  }
  /** Safe to repeat: a second revoke answers `revoked: false` and changes nothing. */
  revokeHost(id: number): Promise<T.HostRevocationView> {
    return this.json('POST', `/v1/hosts/${id}/revoke`, undefined, { retry: true });
  }
  listSites(): Promise<{ sites: T.SiteView[] }> {
    return this.json('GET', '/v1/sites');
  }
  putSite(name: string, allowCidrs: string[]): Promise<Pick<T.SiteView, 'name' | 'allowCidrs' | 'createdAt'>> {
    return this.json('PUT', `/v1/sites/${enc(name)}`, { allowCidrs }, { retry: true });
  }
  /** The audit log (operators), or with `project` that project's part (its admins). */
  audit(q: T.AuditQuery = {}): Promise<{ entries: T.AuditEntryView[]; nextCursor: string | null }> {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v !== undefined && k !== 'project') qs.set(k, String(v));
    const s = qs.toString();
    const base = q.project === undefined ? '/v1/audit' : `/v1/projects/${enc(q.project)}/audit`;
    return this.json('GET', `${base}${s === '' ? '' : `?${s}`}`);
  }

  listHosts(): Promise<{ hosts: T.HostView[] }> {
    return this.json('GET', '/v1/hosts');
  }

  // ── apps ──
  createApp(project: string, app: T.AppInput): Promise<T.AppView> {
    return this.json('POST', `/v1/projects/${enc(project)}/apps`, app);
  }
  newAppVersion(project: string, name: string, app: T.AppVersionInput): Promise<T.AppView> {
    return this.json('POST', `/v1/projects/${enc(project)}/apps/${enc(name)}/versions`, app);
  }
  listApps(project: string): Promise<{ apps: T.AppView[] }> {
    return this.json('GET', `/v1/projects/${enc(project)}/apps`);
  }
  getApp(project: string, name: string, version?: number): Promise<{ app: T.AppView; versions: number[] }> {
    return this.json('GET', `/v1/projects/${enc(project)}/apps/${enc(name)}${version === undefined ? '' : `?version=${version}`}`);
  }

  // ── jobs and batches (submissions carry an Idempotency-Key, so retries are safe) ──
  submitJob(project: string, job: T.JobSubmit): Promise<T.SubmitView> {
    return this.json('POST', `/v1/projects/${enc(project)}/jobs`, job, { idempotent: true });
  }
  submitBatch(project: string, batch: T.BatchSubmit): Promise<T.SubmitView> {
    return this.json('POST', `/v1/projects/${enc(project)}/batches`, batch, { idempotent: true });
  }
  listJobs(project: string, q: T.JobQuery = {}): Promise<{ jobs: T.JobView[]; nextCursor: string | null }> {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(q)) if (v !== undefined) qs.set(k, String(v));
    const s = qs.toString();
    return this.json('GET', `/v1/projects/${enc(project)}/jobs${s === '' ? '' : `?${s}`}`);
  }
  getJob(project: string, id: number): Promise<{ job: T.JobView; tasks: T.TaskView[] }> {
    return this.json('GET', `/v1/projects/${enc(project)}/jobs/${id}`);
  }
  /** Why a job is not running: a summary and reasons with stable codes. */
  explainJob(project: string, id: number): Promise<T.ExplainView> {
    return this.json('GET', `/v1/projects/${enc(project)}/jobs/${id}/explain`);
  }
  cancelJob(project: string, id: number): Promise<{ job: T.JobView }> {
    return this.json('POST', `/v1/projects/${enc(project)}/jobs/${id}/cancel`);
  }
  /** The project's jobs by state: every job, submitted alone or in a batch (`app`: only that app's). */
  projectCounts(project: string, q: { app?: string } = {}): Promise<T.ProjectCounts> {
    const qs = q.app === undefined ? '' : `?${new URLSearchParams({ app: q.app }).toString()}`;
    return this.json('GET', `/v1/projects/${enc(project)}/counts${qs}`);
  }
  listBatches(project: string, q: { limit?: number; cursor?: string } = {}): Promise<{ batches: T.BatchView[]; nextCursor: string | null }> {
    return this.json('GET', `/v1/projects/${enc(project)}/batches${query(q)}`);
  }
  getBatch(project: string, id: number): Promise<T.BatchDetail> {
    return this.json('GET', `/v1/projects/${enc(project)}/batches/${id}`);
  }
  cancelBatch(project: string, id: number): Promise<{ cancelled: number; counts: T.Counts }> {
    return this.json('POST', `/v1/projects/${enc(project)}/batches/${id}/cancel`);
  }

  // ── workflows (docs/workflows.md) ──
  /** Checks and runs a workflow; carries an Idempotency-Key, so a retried request starts it once. */
  createWorkflow(project: string, body: T.WorkflowCreate, opts: { idempotencyKey?: string } = {}): Promise<T.WorkflowAnswer> {
    return this.json('POST', `/v1/projects/${enc(project)}/workflows`, body, { idempotent: true, ...(opts.idempotencyKey === undefined ? {} : { key: opts.idempotencyKey }) });
  }
  /** Checks a workflow as a submission would, without running it; a spec with problems throws with `problems` set. */
  validateWorkflow(project: string, body: T.WorkflowCreate): Promise<T.WorkflowValidation> {
    return this.json('POST', `/v1/projects/${enc(project)}/workflows/validate`, body, { retry: true });
  }
  listWorkflows(project: string, q: { limit?: number; cursor?: string } = {}): Promise<{ workflows: T.WorkflowView[]; nextCursor: string | null }> {
    return this.json('GET', `/v1/projects/${enc(project)}/workflows${query(q)}`);
  }
  getWorkflow(project: string, id: number): Promise<{ workflow: T.WorkflowView }> {
    return this.json('GET', `/v1/projects/${enc(project)}/workflows/${id}`);
  }
  /** One step and its jobs (the fan-out items), `limit` (default 1000, at most 10,000) from `offset`. */
  getWorkflowStep(project: string, id: number, step: string, q: { offset?: number; limit?: number } = {}): Promise<T.WorkflowStepDetail> {
    return this.json('GET', `/v1/projects/${enc(project)}/workflows/${id}/steps/${enc(step)}${query(q)}`);
  }
  /** Runs again what failed, was cancelled or skipped; every succeeded job is reused. */
  retryWorkflow(project: string, id: number): Promise<{ workflow: T.WorkflowView }> {
    return this.json('POST', `/v1/projects/${enc(project)}/workflows/${id}/retry`);
  }
  /** Safe to repeat: cancelling a cancelled workflow changes nothing. */
  cancelWorkflow(project: string, id: number): Promise<{ workflow: T.WorkflowView }> {
    return this.json('POST', `/v1/projects/${enc(project)}/workflows/${id}/cancel`, undefined, { retry: true });
  }

  // ── blobs ──
  /** Hashes the file, skips the upload if the project already holds it, else streams it. */
  async uploadFile(project: string, path: string, onProgress?: (sent: number, total: number) => void): Promise<T.BlobView> {
    const { size, sha256 } = await hashFile(path);
    const blobPath = `/v1/projects/${enc(project)}/blobs/${sha256}`;
    const head = await this.fetch('HEAD', blobPath);
    if (head.status === 200) {
      onProgress?.(size, size);
      return { sha256, size, createdAt: '' };
    }
    return this.putFile(blobPath, path, size, onProgress);
  }

  /** Streams a file to a blob URL (the server verifies its sha256 on the way in). */
  private async putFile(blobPath: string, path: string, size: number, onProgress?: (sent: number, total: number) => void): Promise<T.BlobView> {
    const res = await this.fetch('PUT', blobPath, {
      body: fileBody(path, size, onProgress), headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) },
    });
    return this.parse<T.BlobView>(res);
  }

  taskLog(project: string, target: { job: number } | { task: number }, after?: number): Promise<T.TaskLogView> {
    const path = 'job' in target ? `jobs/${target.job}` : `tasks/${target.task}`;
    return this.json('GET', `/v1/projects/${enc(project)}/${path}/log${after === undefined ? '' : `?after=${after}`}`);
  }

  async download(project: string, sha256: string): Promise<Response> {
    const res = await this.fetch('GET', `/v1/projects/${enc(project)}/blobs/${sha256}`);
    if (!res.ok) await this.parse(res);
    return res;
  }

  /**
   * Follows the project's event stream (optionally one batch, job or workflow) until `signal`
   * aborts. Resolves when the stream ends; reconnecting is the caller's choice.
   */
  async events(project: string, filter: T.EventFilter, onEvent: (e: T.StreamEvent) => void, signal: AbortSignal): Promise<void> {
    const qs = new URLSearchParams();
    if (filter.batch !== undefined) qs.set('batch', String(filter.batch));
    if (filter.job !== undefined) qs.set('job', String(filter.job));
    if (filter.workflow !== undefined) qs.set('workflow', String(filter.workflow));
    const res = await this.fetch('GET', `/v1/projects/${enc(project)}/events?${qs}`, { signal, headers: { accept: 'text/event-stream' } });
    if (!res.ok || !res.body) {
      await this.parse(res);
      return;
    }
    const parser = createParser({
      onEvent: (ev) => onEvent({ type: ev.event ?? 'message', id: ev.id, data: JSON.parse(ev.data) }),
    });
    const decoder = new TextDecoder();
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) parser.feed(decoder.decode(chunk, { stream: true }));
    } catch (e) {
      if (!signal.aborted) throw e;
    }
  }

  /** The server's Prometheus text (GET /metrics, public): what pilot sites read the demand from. */
  async metricsText(): Promise<string> {
    const res = await this.fetch('GET', '/metrics');
    if (!res.ok) await this.parse(res);
    return res.text();
  }

  // ── the agent protocol (with a host credential as the token) ──
  // Every call here is idempotent on the server (see service/agent-protocol.ts), so each is retried.
  enroll(body: T.EnrollBody): Promise<T.EnrollView> {
    return this.json('POST', '/agent/v1/enroll', body, { retry: true });
  }
  agentSelf(): Promise<T.AgentSelf> {
    return this.json('GET', '/agent/v1/self');
  }
  requestWork(body: T.WorkRequestBody): Promise<T.WorkAnswer> {
    return this.json('POST', '/agent/v1/work', body, { retry: true });
  }
  heartbeat(body: T.HeartbeatBody): Promise<T.HeartbeatAnswer> {
    return this.json('POST', '/agent/v1/heartbeat', body, { retry: true });
  }
  reportTask(taskId: number, body: T.ReportBody): Promise<T.ReportAnswer> {
    return this.json('POST', `/agent/v1/tasks/${taskId}/result`, body, { retry: true });
  }
  /** Uploads a tar of a task's /checkpoint and makes it the job's latest checkpoint. */
  uploadCheckpoint(taskId: number, path: string, sha256: string, size: number): Promise<T.BlobView> {
    return this.putFile(`/agent/v1/tasks/${taskId}/checkpoint/${sha256}`, path, size);
  }
  /** Uploads an output file of a task; the sha256 must already be known. */
  uploadTaskFile(taskId: number, path: string, sha256: string, size: number): Promise<T.BlobView> {
    return this.putFile(`/agent/v1/tasks/${taskId}/blobs/${sha256}`, path, size);
  }
  async downloadTaskInput(taskId: number, sha256: string, signal?: AbortSignal): Promise<Response> {
    const res = await this.fetch('GET', `/agent/v1/tasks/${taskId}/blobs/${sha256}`, signal ? { signal } : {});
    if (!res.ok) await this.parse(res);
    return res;
  }
  /** Where to upload a task's outputs: per file present, a pre-signed PUT, or the upload route. */
  taskUploads(taskId: number, files: Array<{ sha256: string; size: number }>): Promise<{ files: T.UploadTarget[] }> {
    return this.json('POST', `/agent/v1/tasks/${taskId}/uploads`, { files }, { retry: true });
  }
  /**
   * Signed URL prefixes for a live task the host holds (the server signs them with its transfer
   * key): paths under /transfer/v1, relative to the server. Prepend the address the users of the
   * URLs reach the server at, and give each to a client made with it as `url` and no token
   * (`downloadSigned`, `uploadSigned`). Default expiry a day, at most a week.
   */
  transferUrls(taskId: number, opts: { expiresInSeconds?: number } = {}): Promise<T.TransferUrls> {
    const body = opts.expiresInSeconds === undefined ? {} : { expiresInSeconds: opts.expiresInSeconds };
    return this.json('POST', `/agent/v1/tasks/${taskId}/transfer-urls`, body, { retry: true });
  }

  // ── pre-signed URLs (the blob store's own; never sent the token) ──
  /** GET of a pre-signed URL: the response when it is 2xx, else `unavailable` saying what the store answered. */
  async fetchPresigned(url: string, signal?: AbortSignal): Promise<Response> {
    const res = await presignedFetch('GET', url, signal ? { signal } : {});
    if (!res.ok) throw await presignedError('GET', res);
    return res;
  }
  /** Streams a file to a pre-signed PUT URL with the headers it was signed with. */
  async putPresigned(url: string, headers: Record<string, string>, path: string, size: number): Promise<void> {
    const res = await presignedFetch('PUT', url, { body: fileBody(path, size), headers });
    if (!res.ok) throw await presignedError('PUT', res);
    await res.arrayBuffer();
  }

  // ── transfer URLs: a client made with a signed URL prefix (transferUrls) as its url, and no token ──
  /** Fetches the blob `sha256` through a signed transfer URL (see service/transfer-signature.ts). */
  async downloadSigned(sha256: string): Promise<Response> {
    const res = await this.fetch('GET', `/${sha256}`);
    if (!res.ok) await this.parse(res);
    return res;
  }
  /** Stores a file under its sha256 through a signed transfer URL. */
  uploadSigned(sha256: string, path: string, size: number): Promise<T.BlobView> {
    return this.putFile(`/${sha256}`, path, size);
  }

  // ── plumbing ──
  private async json<R>(method: string, path: string, body?: unknown, opts: { idempotent?: boolean; retry?: boolean; key?: string } = {}): Promise<R> {
    const headers: Record<string, string> = {};
    if (body !== undefined) headers['content-type'] = 'application/json';
    // GETs are naturally idempotent; submissions become so with a key that stays the same across retries.
    if (opts.idempotent) headers['idempotency-key'] = opts.key ?? randomUUID();
    const retryable = method === 'GET' || method === 'HEAD' || opts.idempotent === true || opts.retry === true;
    const payload = body === undefined ? undefined : JSON.stringify(body);
    for (let attempt = 0; ; attempt++) {
      try {
        const res = await this.fetch(method, path, { headers, ...(payload === undefined ? {} : { body: payload }) });
        return await this.parse<R>(res);
      } catch (e) {
        const again = retryable && attempt < this.retries && e instanceof BoxgridError && e.retryable;
        if (!again) throw e;
        await new Promise((r) => setTimeout(r, 200 * 2 ** attempt));
      }
    }
  }

  private async fetch(method: string, path: string, init: { body?: BodyInit; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Response> {
    const headers: Record<string, string> = { ...(init.headers ?? {}) };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    try {
      return await fetch(this.url + path, {
        method, headers,
        ...(init.body === undefined ? {} : { body: init.body, duplex: 'half' } as RequestInit),
        ...(init.signal ? { signal: init.signal } : {}),
        ...(this.dispatcher ? ({ dispatcher: this.dispatcher } as RequestInit) : {}),
      });
    } catch (e) {
      if (init.signal?.aborted) throw e;
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      if (cause?.code !== undefined && CERTIFICATE_ERRORS.has(cause.code)) {
        // Not retried: the same certificate will fail the same way until someone acts.
        throw new BoxgridError('unavailable', `the certificate of the boxgrid server at ${this.shown} is not trusted (${cause.message ?? cause.code})`, { retryable: false });
      }
      const detail = String(cause?.code ?? cause?.message ?? (e as Error).message).split(this.url).join(this.shown);
      throw new BoxgridError('unavailable', `cannot reach the boxgrid server at ${this.shown} (${detail})`, { retryable: true });
    }
  }

  private async parse<R>(res: Response): Promise<R> {
    const text = await res.text();
    let body: unknown;
    try {
      body = text === '' ? {} : JSON.parse(text);
    } catch {
      // A proxy's HTML page, say: worth a retry only for the answers that say "later".
      throw new BoxgridError(res.ok ? 'internal' : 'unavailable', `the server at ${this.shown} answered ${res.status} with something that is not JSON`, {
        retryable: !res.ok && (res.status === 502 || res.status === 503 || res.status === 504 || res.status === 507),
      });
    }
    if (res.ok) return body as R;
    const err = (body as { error?: { code?: string; message?: string; field?: string; problems?: ErrorProblem[] } }).error;
    const code = (err?.code ?? (res.status >= 500 ? 'unavailable' : 'invalid_request')) as ErrorCode;
    throw new BoxgridError(code, err?.message ?? `HTTP ${res.status}`, {
      ...(err?.field === undefined ? {} : { field: err.field }),
      // Every problem of a checked document (a workflow spec), each with its line and column.
      ...(Array.isArray(err?.problems) ? { problems: err.problems } : {}),
      retryable: res.status === 502 || res.status === 503 || res.status === 504 || res.status === 507,
    });
  }
}

const enc = encodeURIComponent;

/** `?a=1&b=x` of the fields given (none: ''). */
function query(q: Record<string, string | number | undefined>): string {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) if (v !== undefined) qs.set(k, String(v));
  const s = qs.toString();
  return s === '' ? '' : `?${s}`;
}

/** What Node's TLS says when a certificate fails verification (OpenSSL's codes, and the name check). */
const CERTIFICATE_ERRORS = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN', 'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_UNTRUSTED', 'CERT_SIGNATURE_FAILURE',
  'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CERT_REJECTED', 'INVALID_CA', 'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** A CA file's PEM, checked to hold a certificate, so a wrong file fails here and not at the first call. */
export function readCaFile(path: string): string {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch (e) {
    throw new BoxgridError('invalid_request', `cannot read the CA file ${path} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    new X509Certificate(pem);
  } catch {
    throw new BoxgridError('invalid_request', `the CA file ${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  }
  return pem;
}

/** One connection pool per CA, shared by the clients that trust it (the CLI and agent make several). */
const dispatchers = new Map<string, Dispatcher>();
function dispatcherTrusting(ca: string): Dispatcher {
  let d = dispatchers.get(ca);
  if (!d) {
    // Loaded only here: undici takes a fifth of a second to load, which every command would pay.
    const { Agent } = createRequire(import.meta.url)('undici') as typeof import('undici');
    dispatchers.set(ca, (d = new Agent({ connect: { ca } })));
  }
  return d;
}

/** How errors name a server: a transfer URL (a bearer credential until it expires) by its origin only. */
function shownServer(url: string): string {
  if (!url.includes('/transfer/v1/')) return url;
  try {
    return new URL(url).origin;
  } catch {
    return '(a transfer URL)';
  }
}

/** A file as a request body, counting what is sent. */
function fileBody(path: string, size: number, onProgress?: (sent: number, total: number) => void): ReadableStream<Uint8Array> {
  let sent = 0;
  return Readable.toWeb(
    createReadStream(path).on('data', (c) => {
      sent += (c as Buffer).length;
      onProgress?.(sent, size);
    }),
  ) as unknown as ReadableStream<Uint8Array>;
}

async function presignedFetch(method: 'GET' | 'PUT', url: string, init: { body?: BodyInit; headers?: Record<string, string>; signal?: AbortSignal }): Promise<Response> {
  try {
    return await fetch(url, {
      method, ...(init.headers ? { headers: init.headers } : {}),
      ...(init.body === undefined ? {} : ({ body: init.body, duplex: 'half' } as RequestInit)),
      ...(init.signal ? { signal: init.signal } : {}),
    });
  } catch (e) {
    if (init.signal?.aborted) throw e;
    const cause = (e as { cause?: { code?: string; message?: string } }).cause;
    // The URL's query is its signature: only the address is named.
    throw new BoxgridError('unavailable', `cannot reach the blob store at ${new URL(url).origin} (${cause?.code ?? cause?.message ?? (e as Error).message})`, { retryable: true });
  }
}

/** What an S3-compatible store said when it refused a pre-signed request (its XML error's code and message). */
async function presignedError(method: string, res: Response): Promise<BoxgridError> {
  const text = await res.text().catch(() => '');
  const code = /<Code>([^<]*)<\/Code>/.exec(text)?.[1];
  const message = /<Message>([^<]*)<\/Message>/.exec(text)?.[1];
  const said = [code, message].filter(Boolean).join(': ');
  return new BoxgridError('unavailable', `the blob store answered a pre-signed ${method} with ${res.status}${said ? ` (${said})` : ''}`, { retryable: res.status >= 500 });
}

/** A file's size and sha256, read once. */
export async function hashFile(path: string): Promise<{ size: number; sha256: string }> {
  const { size } = await stat(path);
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return { size, sha256: hash.digest('hex') };
}
