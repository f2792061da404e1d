import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { SchedulingOptions } from '../../src/scheduling/options.js';
import type { ServerOptions } from '../../src/server/runtime.js';
import { newCredential } from '../../src/service/credentials.js';
import { startTestServer, type TestResponse, type TestServer } from '../helpers/server.js';
import { OCTET, sha256, stopAfterStreams } from './util.js';

/**
 * A server and hosts that speak the agent protocol (/agent/v1) through HTTP, as agents do.
 * Each test gets its own server: work requests hand out any project's queued jobs, so tests
 * must not share a queue. Time is constructed, not waited for: `g.advance(ms)` moves the
 * server's clock (ctx.now).
 */

export const TIMING = { leaseSeconds: 60, heartbeatSeconds: 7, idlePollSeconds: 4, sweepSeconds: 3600 };
export const BIG = { cores: 64, memoryMiB: 262_144, diskMiB: 10_000_000, gpus: 8 };
export const P = 'default';

export interface Host {
  id: number;
  token: string;
  call(method: string, path: string, body?: unknown): Promise<TestResponse>;
  /** POST /work with a fresh request id (unless given) and a big free capacity (unless given). */
  work(body?: Partial<{ requestId: string; free: Partial<typeof BIG>; maxTasks: number; runtimes: string[]; labels: Record<string, string>; images: string[]; maxRuntimeSeconds: number }>): Promise<TestResponse>;
  /** POST /work and return the assignments, asserting 200. */
  claim(body?: Parameters<Host['work']>[0]): Promise<any[]>;
  heartbeat(tasks: unknown[]): Promise<TestResponse>;
  report(taskId: number, body: unknown): Promise<TestResponse>;
  upload(taskId: number, data: Buffer, digest?: string): Promise<TestResponse>;
  download(taskId: number, digest: string): Promise<TestResponse>;
  checkpoint(taskId: number, data: Buffer, digest?: string): Promise<TestResponse>;
}

export interface Grid {
  s: TestServer;
  host(opts?: { platform?: string; name?: string; resources?: typeof BIG }): Promise<Host>;
  /** Moves the server's clock forward (leases, heartbeats and the sweeper all read it). */
  advance(ms: number): void;
  job(jobId: number, project?: string): Promise<{ job: any; tasks: any[] }>;
}

export async function withGrid(
  fn: (g: Grid) => Promise<void>,
  opts: { timing?: Partial<typeof TIMING>; scheduling?: Partial<SchedulingOptions>; server?: Partial<ServerOptions> } = {},
): Promise<void> {
  const s = await startTestServer({ ...opts.server, timing: { ...TIMING, ...opts.timing }, ...(opts.scheduling ? { scheduling: opts.scheduling } : {}) });
  let offset = 0;
  s.ctx.now = () => Date.now() + offset;
  let n = 0;
  const g: Grid = {
    s,
    advance(ms) {
      offset += ms;
    },
    async job(jobId, project = P) {
      const r = await s.call('GET', `/v1/projects/${project}/jobs/${jobId}`);
      assert.equal(r.status, 200, r.text);
      return r.body;
    },
    async host(o = {}) {
      const t = await s.call('POST', '/v1/enroll-tokens', { body: {} });
      assert.equal(t.status, 201, t.text);
      const credential = newCredential('host');
      const e = await s.call('POST', '/agent/v1/enroll', {
        token: null,
        body: {
          enrollToken: t.body.token, name: o.name ?? `node-${++n}`, resources: o.resources ?? BIG, platform: o.platform ?? 'linux/amd64',
          credentialId: credential.id, credentialHash: credential.secretHash.toString('hex'),
        },
      });
      assert.equal(e.status, 201, e.text);
      const token = credential.token;
      const call: Host['call'] = (method, path, body) => s.call(method, `/agent/v1${path}`, { token, ...(body === undefined ? {} : { body }) });
      const h: Host = {
        id: e.body.hostId,
        token,
        call,
        work: (b = {}) =>
          call('POST', '/work', {
            requestId: b.requestId ?? randomUUID(), free: { ...BIG, ...b.free }, maxTasks: b.maxTasks ?? 16, runtimes: b.runtimes ?? ['docker'],
            ...(b.labels ? { labels: b.labels } : {}), ...(b.images ? { images: b.images } : {}),
            ...(b.maxRuntimeSeconds === undefined ? {} : { maxRuntimeSeconds: b.maxRuntimeSeconds }),
          }),
        async claim(b) {
          const r = await h.work(b);
          assert.equal(r.status, 200, r.text);
          return r.body.tasks;
        },
        heartbeat: (tasks) => call('POST', '/heartbeat', { tasks }),
        report: (taskId, body) => call('POST', `/tasks/${taskId}/result`, body),
        upload: (taskId, data, digest = sha256(data)) =>
          s.call('PUT', `/agent/v1/tasks/${taskId}/blobs/${digest}`, { token, raw: data as unknown as BodyInit, headers: { ...OCTET } }),
        download: (taskId, digest) => call('GET', `/tasks/${taskId}/blobs/${digest}`),
        checkpoint: (taskId, data, digest = sha256(data)) =>
          s.call('PUT', `/agent/v1/tasks/${taskId}/checkpoint/${digest}`, { token, raw: data as unknown as BodyInit, headers: { ...OCTET } }),
      };
      return h;
    },
  };
  try {
    await fn(g);
  } finally {
    // Closes every connection as it stops: a connection fetch keeps after a streamed blob (or an
    // event stream) can otherwise hold the server's close for its keep-alive timeout.
    await stopAfterStreams(s);
  }
}

export const ok = { outcome: { kind: 'succeeded' }, durationMs: 1200 };
export const failed = (exitCode: number) => ({ outcome: { kind: 'failed', exitCode }, durationMs: 300 });
export const ids = (tasks: Array<{ jobId: number }>) => tasks.map((t) => t.jobId);

