import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { allJobIds, assertError, createApp, OCTET, sha256 } from './util.js';

/** Content-addressed blobs: upload, HEAD, download, ranges, and what a bad upload leaves behind. */

let s: TestServer;
const P = '/v1/projects/default';
const data = randomBytes(100_000);
const digest = sha256(data);
const N = data.length;

before(async () => {
  s = await startTestServer();
  await createApp(s, 'default', 'sim');
});
after(async () => {
  await s.stop();
});

async function getBytes(path: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; bytes: Buffer }> {
  const res = await fetch(s.url + path, { headers: { authorization: `Bearer ${s.adminToken}`, ...headers } });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

const put = (d: string, raw: BodyInit, headers: Record<string, string> = { ...OCTET }) => s.call('PUT', `${P}/blobs/${d}`, { raw, headers });

/** Every file under the blob store's data folder (stored blobs and leftovers in tmp). */
async function blobFiles(): Promise<string[]> {
  try {
    return (await readdir(join(s.dataDir, 'blobs'), { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

describe('upload and download', () => {
  test('PUT stores a new blob (201) under its digest', async () => {
    const r = await put(digest, data as unknown as BodyInit);
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.sha256, digest);
    assert.equal(r.body.size, N);
    assert.ok(!Number.isNaN(Date.parse(r.body.createdAt)));
    const files = await blobFiles();
    const stored = files.find((f) => f.endsWith(digest));
    assert.ok(stored, `no file for ${digest} in ${files}`);
    assert.ok((await readFile(stored)).equals(data));
  });

  test('a repeated PUT is a 200 no-op that keeps the first record and content', async () => {
    const first = await s.call('HEAD', `${P}/blobs/${digest}`);
    const filesBefore = await blobFiles();
    const r = await put(digest, data as unknown as BodyInit);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.sha256, digest);
    assert.equal(r.body.size, N);
    const again = await put(digest, data as unknown as BodyInit);
    assert.equal(again.status, 200);
    assert.equal(again.body.createdAt, r.body.createdAt);
    assert.deepEqual(await blobFiles(), filesBefore);
    assert.equal((await s.call('HEAD', `${P}/blobs/${digest}`)).headers.get('content-length'), first.headers.get('content-length'));
    assert.ok((await getBytes(`${P}/blobs/${digest}`)).bytes.equals(data));
  });

  test('HEAD tells the size without a body; 404 when absent', async () => {
    const r = await s.call('HEAD', `${P}/blobs/${digest}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('content-length'), String(N));
    assert.equal(r.headers.get('accept-ranges'), 'bytes');
    assert.equal(r.text, '');
    const missing = await s.call('HEAD', `${P}/blobs/${sha256('never uploaded')}`);
    assert.equal(missing.status, 404);
    assert.equal(missing.text, '');
  });

  test('GET returns the exact bytes with length and etag', async () => {
    const r = await getBytes(`${P}/blobs/${digest}`);
    assert.equal(r.status, 200);
    assert.ok(r.bytes.equals(data));
    assert.equal(r.headers.get('content-type'), 'application/octet-stream');
    assert.equal(r.headers.get('content-length'), String(N));
    assert.equal(r.headers.get('etag'), `"${digest}"`);
    assert.equal(r.headers.get('accept-ranges'), 'bytes');
    assertError(await s.call('GET', `${P}/blobs/${sha256('never uploaded')}`), 404, 'not_found');
  });

  test('an empty blob', async () => {
    const empty = sha256('');
    const r = await put(empty, '');
    assert.equal(r.status, 201, r.text);
    assert.equal(r.body.size, 0);
    const g = await getBytes(`${P}/blobs/${empty}`);
    assert.equal(g.status, 200);
    assert.equal(g.bytes.length, 0);
    assertError(await s.call('GET', `${P}/blobs/${empty}`, { headers: { range: 'bytes=0-' } }), 416, 'range_not_satisfiable', 'headers/range', { messageNames: /Range/ });
  });
});

describe('Range requests', () => {
  const ranged = async (range: string, start: number, end: number) => {
    const r = await getBytes(`${P}/blobs/${digest}`, { range });
    assert.equal(r.status, 206, `${range}: ${r.status}`);
    assert.equal(r.headers.get('content-range'), `bytes ${start}-${end}/${N}`);
    assert.equal(r.headers.get('content-length'), String(end - start + 1));
    assert.ok(r.bytes.equals(data.subarray(start, end + 1)), `${range}: wrong bytes`);
  };

  test('bytes=START-END', () => ranged('bytes=10-19', 10, 19));
  test('one byte', () => ranged('bytes=0-0', 0, 0));
  test('the last byte by position', () => ranged(`bytes=${N - 1}-${N - 1}`, N - 1, N - 1));
  test('bytes=START- (to the end)', () => ranged('bytes=99990-', 99990, N - 1));
  test('an END past the end is clamped', () => ranged('bytes=50000-999999999', 50000, N - 1));
  test('suffix range bytes=-N (the last N bytes)', () => ranged('bytes=-7', N - 7, N - 1));
  test('a suffix longer than the blob is the whole blob', () => ranged('bytes=-999999999', 0, N - 1));

  for (const range of [`bytes=${N}-`, `bytes=${N + 5}-${N + 10}`, 'bytes=20-10', 'bytes=-0', 'bytes=-', 'bytes=abc']) {
    test(`416 for ${range}`, async () => {
      const r = await s.call('GET', `${P}/blobs/${digest}`, { headers: { range } });
      assertError(r, 416, 'range_not_satisfiable', 'headers/range', { messageNames: /Range/ });
    });
  }

  test('several ranges: the whole blob is sent (200)', async () => {
    const r = await getBytes(`${P}/blobs/${digest}`, { range: 'bytes=0-1,5-6' });
    assert.equal(r.status, 200);
    assert.ok(r.bytes.equals(data));
  });

  test('a 416 tells the blob size in Content-Range: bytes */N', async () => {
    const r = await s.call('GET', `${P}/blobs/${digest}`, { headers: { range: `bytes=${N}-` } });
    assert.equal(r.status, 416);
    assert.equal(r.headers.get('content-range'), `bytes */${N}`);
  });

  test('a Range in a unit other than bytes is ignored (200, whole blob)', async () => {
    const r = await getBytes(`${P}/blobs/${digest}`, { range: 'items=0-1' });
    assert.equal(r.status, 200);
    assert.ok(r.bytes.equals(data));
  });
});

describe('rejected uploads store nothing', () => {
  test('bytes that do not hash to the digest: 422 digest_mismatch, nothing stored or left in tmp', async () => {
    const claimed = sha256('the real content');
    const filesBefore = await blobFiles();
    const r = await put(claimed, 'something else entirely');
    assertError(r, 422, 'digest_mismatch', 'params/sha256');
    assert.ok(r.body.error.message.includes(claimed));
    assert.equal((await s.call('HEAD', `${P}/blobs/${claimed}`)).status, 404);
    assertError(await s.call('GET', `${P}/blobs/${claimed}`), 404, 'not_found');
    assert.deepEqual(await blobFiles(), filesBefore);
    // The digest is still free for the right content.
    assert.equal((await put(claimed, 'the real content')).status, 201);
  });

  test('an upload cut off midway stores nothing and leaves no temporary file', async () => {
    const whole = randomBytes(200_000);
    const d = sha256(whole);
    // Know when the server has given up on the upload: wrap the running server's blob store.
    const store = s.ctx.blobs;
    const original = store.put;
    let started!: () => void;
    const putStarted = new Promise<void>((resolve) => (started = resolve));
    const settled = new Promise<void>((resolve) => {
      store.put = (...args) => {
        started();
        const p = original.apply(store, args);
        p.then(() => resolve(), () => resolve());
        return p;
      };
    });
    try {
      const url = new URL(`${P}/blobs/${d}`, s.url);
      const req = request(url, { method: 'PUT', headers: { authorization: `Bearer ${s.adminToken}`, 'content-type': 'application/octet-stream', 'content-length': String(whole.length) } });
      req.on('error', () => {});
      req.write(whole.subarray(0, 50_000));
      await putStarted; // the server is streaming the body to disk
      req.destroy(); // the client goes away with three quarters unsent
      await settled;
    } finally {
      store.put = original;
    }
    assert.equal((await s.call('HEAD', `${P}/blobs/${d}`)).status, 404);
    const files = await blobFiles();
    assert.ok(!files.some((f) => f.includes(d)), `left behind: ${files.filter((f) => f.includes(d))}`);
  });

  test('a wrong Content-Type is 415 and stores nothing', async () => {
    const body = 'typed wrong';
    const d = sha256(body);
    const types: Array<Record<string, string>> = [{ 'content-type': 'text/plain' }, { 'content-type': 'application/json' }, { 'content-type': 'multipart/form-data; boundary=x' }, {}];
    for (const headers of types) {
      // A Buffer body makes fetch send no Content-Type at all for the last case.
      const raw = headers['content-type'] === undefined ? (Buffer.from(body) as unknown as BodyInit) : headers['content-type'] === 'application/json' ? JSON.stringify(body) : body;
      const r = await put(d, raw, headers);
      assertError(r, 415, 'unsupported_media_type', 'headers/content-type');
    }
    assert.equal((await s.call('HEAD', `${P}/blobs/${d}`)).status, 404);
    assert.ok(!(await blobFiles()).some((f) => f.endsWith(d)));
  });

  test('a digest that is not 64 lower-case hex digits is 400 naming sha256', async () => {
    for (const bad of [digest.toUpperCase(), digest.slice(0, 63), 'g'.repeat(64), 'x']) {
      assertError(await put(bad, 'x'), 400, 'invalid_request', 'params/sha256');
      assertError(await s.call('GET', `${P}/blobs/${bad}`), 400, 'invalid_request', 'params/sha256');
    }
    assertError(await put(digest + '0', 'x'), 400, 'invalid_request', 'params/sha256');
  });

  // Over the size limit (413, nothing stored) on this and every other upload route, with and
  // without a Content-Length: upload-safety.test.ts.
});

describe('job inputs', () => {
  test('a job whose input blob is uploaded is accepted and shows its inputs', async () => {
    const r = await s.call('POST', `${P}/jobs`, { body: { app: 'sim', inputs: { 'data.bin': digest, 'in-2.txt': digest } } });
    assert.equal(r.status, 201, r.text);
    const j = await s.call('GET', `${P}/jobs/${r.body.jobIds[0]}`);
    assert.deepEqual(j.body.job.inputs, { 'data.bin': digest, 'in-2.txt': digest });
  });

  test('a job, or a batch, referring to a missing blob is rejected and writes nothing', async () => {
    const missing = sha256('not uploaded anywhere');
    const before = await allJobIds(s, 'default');
    const single = await s.call('POST', `${P}/jobs`, { body: { app: 'sim', inputs: { 'x.bin': missing } } });
    assertError(single, 400, 'invalid_request', 'body/inputs');
    assert.ok(single.body.error.message.includes(missing));
    const viaTemplate = await s.call('POST', `${P}/batches`, { body: { app: 'sim', count: 3, template: { inputs: { 'x.bin': missing } } } });
    assertError(viaTemplate, 400, 'invalid_request', 'body/inputs');
    const oneOfMany = await s.call('POST', `${P}/batches`, { body: { app: 'sim', jobs: [{ inputs: { a: digest } }, { inputs: { a: digest } }, { inputs: { a: missing } }] } });
    assertError(oneOfMany, 400, 'invalid_request', 'body/inputs');
    assert.deepEqual(await allJobIds(s, 'default'), before);
  });

  test('an input that is not a digest is 400 naming the input', async () => {
    assertError(await s.call('POST', `${P}/jobs`, { body: { app: 'sim', inputs: { 'x.bin': 'abc' } } }), 400, 'invalid_request', 'body/inputs/x.bin');
  });
});
