import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { setImmediate as tick } from 'node:timers/promises';
import Database from 'better-sqlite3';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TestResponse, TestServer } from '../helpers/server.js';

/** Shared helpers of the HTTP API suite (not a test file itself). */

export const sha256 = (data: string | Buffer): string => createHash('sha256').update(data).digest('hex');
export const OCTET = { 'content-type': 'application/octet-stream' } as const;

/** No answer may be a 5xx or carry a stack trace or a path into node_modules. */
export function assertNoLeak(r: TestResponse, what = ''): void {
  assert.ok(r.status < 500, `${what} answered ${r.status}: ${r.text}`);
  assert.doesNotMatch(r.text, /\n\s+at /, `${what} leaks a stack trace: ${r.text}`);
  assert.ok(!r.text.includes('node_modules'), `${what} leaks a path: ${r.text}`);
}

/**
 * Asserts a JSON error answer: the status, error.code, a message, and (when given) error.field
 * exactly, which the message must also name (unless `messageNames` says what it names instead).
 */
export function assertError(
  r: TestResponse,
  status: number,
  code: string,
  field?: string,
  opts: { messageNames?: string | RegExp } = {},
): void {
  assert.equal(r.status, status, `expected ${status} ${code}, got ${r.status}: ${r.text}`);
  assert.match(r.headers.get('content-type') ?? '', /application\/json/);
  assert.equal(r.body?.error?.code, code, r.text);
  assert.equal(typeof r.body.error.message, 'string');
  assert.ok(r.body.error.message.length > 0);
  if (field !== undefined) {
    assert.equal(r.body.error.field, field, r.text);
    const names = opts.messageNames ?? field;
    if (typeof names === 'string') assert.ok(r.body.error.message.includes(names), `message "${r.body.error.message}" does not name ${names}`);
    else assert.match(r.body.error.message, names);
  }
  assertNoLeak(r);
}

/** Every job id of a project (newest first), paging through the whole list. */
export async function allJobIds(s: TestServer, project: string, query = '', token?: string): Promise<number[]> {
  const ids: number[] = [];
  let cursor: string | null = null;
  do {
    const q: string = [query, 'limit=1000', cursor === null ? '' : `cursor=${cursor}`].filter(Boolean).join('&');
    const r = await s.call('GET', `/v1/projects/${project}/jobs?${q}`, token === undefined ? {} : { token });
    assert.equal(r.status, 200, r.text);
    ids.push(...r.body.jobs.map((j: { id: number }) => j.id));
    cursor = r.body.nextCursor;
  } while (cursor !== null);
  return ids;
}

export async function batchCount(s: TestServer, project: string): Promise<number> {
  let n = 0;
  let cursor: string | null = null;
  do {
    const r = await s.call('GET', `/v1/projects/${project}/batches?limit=1000${cursor === null ? '' : `&cursor=${cursor}`}`);
    assert.equal(r.status, 200, r.text);
    n += r.body.batches.length;
    cursor = r.body.nextCursor;
  } while (cursor !== null);
  return n;
}

export async function createApp(s: TestServer, project: string, name: string, extra: Record<string, unknown> = {}, token?: string) {
  const r = await s.call('POST', `/v1/projects/${project}/apps`, { body: { name, image: `sci/${name}:1`, ...extra }, ...(token === undefined ? {} : { token }) });
  assert.equal(r.status, 201, r.text);
  return r.body;
}

export async function submitJob(s: TestServer, project: string, body: Record<string, unknown>, token?: string): Promise<number> {
  const r = await s.call('POST', `/v1/projects/${project}/jobs`, { body, ...(token === undefined ? {} : { token }) });
  assert.equal(r.status, 201, r.text);
  return r.body.jobIds[0];
}

export async function uploadBlob(s: TestServer, project: string, data: Buffer, token?: string): Promise<string> {
  const digest = sha256(data);
  const r = await s.call('PUT', `/v1/projects/${project}/blobs/${digest}`, { raw: data as unknown as BodyInit, headers: { ...OCTET }, ...(token === undefined ? {} : { token }) });
  assert.ok(r.status === 201 || r.status === 200, r.text);
  return digest;
}

/** A second connection to the server's SQLite file, for arranging what the API cannot. */
export function openDb(s: TestServer): Database.Database {
  const db = new Database(join(s.dataDir, 'boxgrid.db'));
  db.pragma('busy_timeout = 5000');
  return db;
}

// ── server-sent events ───────────────────────────────────────────────────────

export interface SseEvent {
  id: string | undefined;
  event: string;
  data: any;
}

export interface SseStream {
  status: number;
  contentType: string | null;
  /** The next event (comments skipped). */
  next(): Promise<SseEvent>;
  /** Skips events until one satisfies `pred`. */
  until(pred: (e: SseEvent) => boolean): Promise<SseEvent>;
  close(): void;
}

/**
 * Opens an SSE stream with fetch and resolves once the server's ": connected" comment has
 * arrived, i.e. once the server is subscribed; events published after that are delivered.
 */
export async function openEvents(s: TestServer, path: string, opts: { token?: string; lastEventId?: string } = {}): Promise<SseStream> {
  const ac = new AbortController();
  const headers: Record<string, string> = { authorization: `Bearer ${opts.token ?? s.adminToken}`, accept: 'text/event-stream' };
  if (opts.lastEventId !== undefined) headers['last-event-id'] = opts.lastEventId;
  const res = await fetch(s.url + path, { headers, signal: ac.signal });
  assert.equal(res.status, 200, `SSE ${path}: ${res.status} ${res.status === 200 ? '' : await res.text()}`);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const queue: Array<SseEvent | { comment: string }> = [];
  const readBlock = async (): Promise<SseEvent | { comment: string }> => {
    for (;;) {
      const queued = queue.shift();
      if (queued) return queued;
      const { value, done } = await reader.read();
      if (done) throw new Error(`SSE stream ${path} ended`);
      buffer += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        queue.push(parseBlock(block));
      }
    }
  };
  const first = await readBlock();
  assert.deepEqual(first, { comment: ' connected' });
  const next = async (): Promise<SseEvent> => {
    for (;;) {
      const b = await readBlock();
      if (!('comment' in b)) return b;
    }
  };
  return {
    status: res.status,
    contentType: res.headers.get('content-type'),
    next,
    async until(pred) {
      for (;;) {
        const e = await next();
        if (pred(e)) return e;
      }
    },
    close() {
      ac.abort();
      reader.cancel().catch(() => {});
    },
  };
}

function parseBlock(block: string): SseEvent | { comment: string } {
  const lines = block.split('\n');
  if (lines.every((l) => l.startsWith(':'))) return { comment: lines.map((l) => l.slice(1)).join('\n') };
  let id: string | undefined;
  let event = 'message';
  const data: string[] = [];
  for (const line of lines) {
    if (line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
    if (name === 'id') id = value;
    else if (name === 'event') event = value;
    else if (name === 'data') data.push(value);
  }
  return { id, event, data: JSON.parse(data.join('\n')) };
}

/**
 * Resolves when the server has seen the connection of the next request to `pathPrefix` close
 * (its response's 'close' event), plus one turn of the event loop so that the route's own
 * 'close' handlers have run. Register before making the request.
 */
export function serverSawClose(s: TestServer, pathPrefix: string): Promise<void> {
  return new Promise((resolve) => {
    const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
      if (!req.url?.startsWith(pathPrefix)) return;
      s.app.server.off('request', onRequest);
      res.once('close', () => void tick().then(() => resolve()));
    };
    s.app.server.prependListener('request', onRequest);
  });
}

/**
 * Stops a server that served event streams. After a stream is aborted, fetch's connection pool
 * leaves a fresh connection open that has sent no request; the HTTP server's close waits for it
 * until the client drops it (~4 s), so the test drops it here. Close the streams first.
 */
export async function stopAfterStreams(s: TestServer): Promise<void> {
  const stopping = s.stop();
  s.app.server.closeAllConnections();
  await stopping;
}
