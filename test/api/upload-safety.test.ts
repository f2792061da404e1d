import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import { isOutputName } from '../../src/domain/file-names.js';
import { newCredential } from '../../src/service/credentials.js';
import { runCli } from '../cli/run-cli.js';
import { startTestServer, type TestResponse, type TestServer } from '../helpers/server.js';
import { assertError, OCTET, sha256 } from './util.js';

/**
 * What comes in as files is bounded and checked: every route that takes a blob refuses one over
 * the size limit (413) or one that does not hash to the digest it is put under (422) and stores
 * nothing either way; output names are plain file names at the report, again in `boxgrid fetch`
 * if a server ever sent another. (Checkpoint archives: test/agent/checkpoint-safety.test.ts.)
 */

const LIMIT = 1000;
let s: TestServer;
let host = '';
let taskId = 0;
let jobId = 0;
let transferOutputs = '';

before(async () => {
  s = await startTestServer({ limits: { maxBlobBytes: LIMIT } });
  assert.equal((await s.call('POST', '/v1/projects/default/apps', { body: { name: 'sim', image: 'sci/sim:1', checkpointing: true } })).status, 201);
  jobId = (await s.call('POST', '/v1/projects/default/jobs', { body: { app: 'sim' } })).body.jobIds[0];
  const t = await s.call('POST', '/v1/enroll-tokens', { body: {} });
  const c = newCredential('host');
  const e = await s.call('POST', '/agent/v1/enroll', {
    token: null,
    body: { enrollToken: t.body.token, name: 'h', resources: { cores: 4, memoryMiB: 4096, diskMiB: 4096, gpus: 0 }, platform: 'linux/amd64', credentialId: c.id, credentialHash: c.secretHash.toString('hex') },
  });
  assert.equal(e.status, 201, e.text);
  host = c.token;
  const w = await s.call('POST', '/agent/v1/work', { token: host, body: { requestId: randomUUID(), free: { cores: 4, memoryMiB: 4096, diskMiB: 4096, gpus: 0 }, maxTasks: 1, runtimes: ['docker'] } });
  assert.equal(w.status, 200, w.text);
  taskId = w.body.tasks[0].taskId;
  const urls = await s.call('POST', `/agent/v1/tasks/${taskId}/transfer-urls`, { token: host, body: {} });
  assert.equal(urls.status, 200, urls.text);
  transferOutputs = urls.body.outputs;
});
after(async () => {
  await s.stop();
});

/** Every file under the blob store (stored blobs and temporaries). */
async function blobFiles(): Promise<string[]> {
  try {
    return (await readdir(join(s.dataDir, 'blobs'), { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name)).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** The four routes that take a blob's bytes, each as its caller uses it. */
const UPLOADS: Array<{ name: string; path: (digest: string) => string; token: () => string | null }> = [
  { name: 'user API: PUT /v1/projects/{p}/blobs/{sha256}', path: (d) => `/v1/projects/default/blobs/${d}`, token: () => s.adminToken },
  { name: 'agent: PUT /agent/v1/tasks/{id}/blobs/{sha256} (an output)', path: (d) => `/agent/v1/tasks/${taskId}/blobs/${d}`, token: () => host },
  { name: 'agent: PUT /agent/v1/tasks/{id}/checkpoint/{sha256}', path: (d) => `/agent/v1/tasks/${taskId}/checkpoint/${d}`, token: () => host },
  { name: 'transfer: PUT /transfer/v1/…/outputs/…/{sha256} (a signed URL)', path: (d) => `${transferOutputs}/${d}`, token: () => null },
];

/** A PUT of `body`, with Content-Length (a Buffer) or chunked with none (a stream). */
async function put(path: string, token: string | null, body: Buffer, opts: { chunked?: boolean; contentType?: string } = {}): Promise<TestResponse> {
  const headers: Record<string, string> = { 'content-type': opts.contentType ?? OCTET['content-type'] };
  if (token !== null) headers.authorization = `Bearer ${token}`;
  const init: RequestInit & { duplex?: 'half' } = { method: 'PUT', headers };
  if (opts.chunked) {
    const half = Math.floor(body.length / 2);
    init.body = new ReadableStream({
      start(c) {
        c.enqueue(body.subarray(0, half));
        c.enqueue(body.subarray(half));
        c.close();
      },
    });
    init.duplex = 'half';
  } else {
    init.body = body as unknown as BodyInit;
  }
  const res = await fetch(s.url + path, init);
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, body: parsed, text };
}

const isStored = async (digest: string): Promise<boolean> => (await s.call('HEAD', `/v1/projects/default/blobs/${digest}`)).status === 200;

describe('size limits: over the limit is 413 and nothing is stored, on every upload route', () => {
  for (const u of UPLOADS) {
    test(u.name, async () => {
      const before = await blobFiles();
      const job = (await s.call('GET', `/v1/projects/default/jobs/${jobId}`)).body.job;
      for (const chunked of [false, true]) {
        const big = randomBytes(LIMIT + 1);
        const r = await put(u.path(sha256(big)), u.token(), big, { chunked });
        assertError(r, 413, 'payload_too_large');
        assert.match(r.body.error.message, /1000 bytes/);
        assert.equal(await isStored(sha256(big)), false);
        assert.deepEqual(await blobFiles(), before, 'nothing stored, no temporary left');
      }
      assert.equal((await s.call('GET', `/v1/projects/default/jobs/${jobId}`)).body.job.checkpoint, job.checkpoint, 'the checkpoint did not change');
      // Exactly at the limit is fine.
      const fits = randomBytes(LIMIT);
      const ok = await put(u.path(sha256(fits)), u.token(), fits, { chunked: true });
      assert.equal(ok.status, 201, ok.text);
      assert.equal(ok.body.size, LIMIT);
      assert.equal(await isStored(sha256(fits)), true);
    });
  }

  test('a Content-Length over the limit is refused from the header, naming it', async () => {
    const r = await fetch(s.url + UPLOADS[0]!.path(sha256('x')), {
      method: 'PUT', headers: { authorization: `Bearer ${s.adminToken}`, ...OCTET, 'content-length': String(10 * LIMIT) }, body: Buffer.alloc(10 * LIMIT) as unknown as BodyInit,
    });
    const body = (await r.json()) as { error: { code: string; field: string } };
    assert.equal(r.status, 413);
    assert.deepEqual([body.error.code, body.error.field], ['payload_too_large', 'headers/content-length']);
  });

  test('an agent asking where to upload a file over the limit is told 413, naming the file', async () => {
    const r = await s.call('POST', `/agent/v1/tasks/${taskId}/uploads`, { token: host, body: { files: [{ sha256: sha256('a'), size: 1 }, { sha256: sha256('b'), size: LIMIT + 1 }] } });
    assertError(r, 413, 'payload_too_large', 'body/files/1/size', { messageNames: 'files/1/size' });
  });
});

describe('digests: bytes that do not hash to the sha256 they are put under are 422 and nothing is stored, on every upload route', () => {
  for (const u of UPLOADS) {
    test(u.name, async () => {
      const before = await blobFiles();
      const claimed = sha256(`what the caller says it sends ${u.name}`);
      for (const chunked of [false, true]) {
        const r = await put(u.path(claimed), u.token(), Buffer.from('other bytes'), { chunked });
        assertError(r, 422, 'digest_mismatch', 'params/sha256');
        assert.ok(r.body.error.message.includes(claimed));
        assert.equal(await isStored(claimed), false);
        assert.deepEqual(await blobFiles(), before);
      }
      assert.notEqual((await s.call('GET', `/v1/projects/default/jobs/${jobId}`)).body.job.checkpoint, claimed);
      // A digest that is not one: 400 before any byte is read.
      assertError(await put(u.path(claimed.toUpperCase()), u.token(), Buffer.from('x')), 400, 'invalid_request', 'params/sha256');
      // Not octets: 415.
      assertError(await put(u.path(sha256('x')), u.token(), Buffer.from('x'), { contentType: 'text/plain' }), 415, 'unsupported_media_type', 'headers/content-type');
    });
  }
});

// ── output names ─────────────────────────────────────────────────────────────

/** Names no output may have, and why. */
const HOSTILE_NAMES: Array<[string, string]> = [
  ['..', 'the parent directory'],
  ['.', 'the directory itself'],
  ['', 'empty'],
  ['../escape.txt', 'a relative path out'],
  ['../../../../etc/passwd', 'deep traversal'],
  ['/etc/passwd', 'an absolute path'],
  ['sub/file.txt', 'a directory'],
  ['a\\b.txt', 'a backslash'],
  ['..\\..\\escape.txt', 'traversal with backslashes'],
  ['C:escape.txt', 'a drive letter'],
  ['file\u0000.txt', 'a NUL'],
  ['line\nbreak', 'a newline'],
  [' spaced.txt', 'a space'],
  ['x'.repeat(256), 'a name longer than 255'],
  ['über.txt', 'not ASCII'],
  ['%2e%2e', 'URL-encoded dots'],
];

describe('output names are plain file names, refused at the report with a 400 naming the field', () => {
  const digest = sha256('the output');
  before(async () => {
    const r = await s.call('PUT', `/agent/v1/tasks/${taskId}/blobs/${digest}`, { token: host, raw: 'the output', headers: { ...OCTET } });
    assert.ok(r.status === 201 || r.status === 200, r.text);
  });
  const report = (outputs: Record<string, unknown>) => s.call('POST', `/agent/v1/tasks/${taskId}/result`, { token: host, body: { outcome: { kind: 'succeeded' }, durationMs: 5, outputs } });

  for (const [name, why] of HOSTILE_NAMES) {
    test(`${why}: ${JSON.stringify(name.length > 40 ? `${name.slice(0, 20)}…` : name)}`, async () => {
      const r = await report({ 'fine.txt': { sha256: digest, size: 10 }, [name]: { sha256: digest, size: 10 } });
      assert.equal(r.status, 400, r.text);
      assert.equal(r.body.error.code, 'invalid_request');
      assert.ok(r.body.error.field.startsWith('body/outputs'), r.text);
      if (name.length <= 255) assert.equal(r.body.error.field, `body/outputs/${name}`);
      assert.match(r.body.error.message, /plain file name|must NOT have more than 255|255/);
    });
  }

  test('any generated name with a separator, a NUL, a control character or over 255 characters, or "." / "..", is refused; the task stays as it was', async () => {
    const unit = fc.constantFrom('a', 'b', '.', '-', '_', '/', '\\', '\0', '\n', '\t', ':', ' ', '~', '$', '%', 'é');
    const hostile = fc.oneof(
      fc.string({ unit, minLength: 0, maxLength: 12 }).filter((n) => !isOutputName(n)),
      fc.constantFrom('.', '..', ''),
      fc.string({ unit: fc.constantFrom('a', '.', '_'), minLength: 256, maxLength: 300 }),
      fc.tuple(fc.string({ unit: fc.constantFrom('a', '.'), maxLength: 5 }), fc.constantFrom('/', '\\', '\0'), fc.string({ unit: fc.constantFrom('a', '.'), maxLength: 5 })).map(([a, sep, b]) => a + sep + b),
    );
    await fc.assert(
      fc.asyncProperty(hostile, async (name) => {
        const r = await report({ [name]: { sha256: digest, size: 10 } });
        assert.equal(r.status, 400, `${JSON.stringify(name)}: ${r.text}`);
        assert.ok(r.body.error.field.startsWith('body/outputs'), r.text);
      }),
      { numRuns: 150 },
    );
    const { tasks } = (await s.call('GET', `/v1/projects/default/jobs/${jobId}`)).body;
    assert.equal(tasks[0].state, 'assigned', 'no refused report settled the task');
    assert.deepEqual(tasks[0].outputs, {});
  });

  test('a plain name is taken (the refusals above were about the names)', async () => {
    const r = await report({ 'result-1.final.txt': { sha256: digest, size: 10 } });
    assert.equal(r.status, 200, r.text);
    const { tasks } = (await s.call('GET', `/v1/projects/default/jobs/${jobId}`)).body;
    assert.deepEqual(tasks[0].outputs, { 'result-1.final.txt': { sha256: digest, size: 10 } });
  });
});

describe('the one rule for output names (src/domain/file-names.ts), as properties', () => {
  test('any accepted name is one path segment directly inside the directory it is saved to', () => {
    const dir = resolve('/home/user/results');
    fc.assert(
      fc.property(fc.string({ unit: fc.constantFrom('a', 'Z', '0', '.', '-', '_', '/', '\\', '\0', ' ', ':', '~'), maxLength: 260 }), (name) => {
        if (!isOutputName(name)) return;
        const target = resolve(dir, name);
        assert.equal(dirname(target), dir, JSON.stringify(name));
        assert.equal(target, join(dir, name));
        assert.ok(name !== '.' && name !== '..' && name.length <= 255);
      }),
      { numRuns: 3000 },
    );
  });

  test('every hostile name of the list is refused, and these plain ones are accepted', () => {
    for (const [name] of HOSTILE_NAMES) assert.equal(isOutputName(name), false, JSON.stringify(name));
    for (const name of ['a', 'out.txt', '.hidden', '...', 'x'.repeat(255), 'A-b_c.1.tar.gz']) assert.equal(isOutputName(name), true, name);
  });
});

// ── boxgrid fetch, against a server that lies ────────────────────────────────

describe('boxgrid fetch refuses an output name no server should send, writing nothing outside --out', () => {
  let fake: Server;
  let url = '';
  let outputs: Record<string, { sha256: string; size: number }> = {};
  const bytes = Buffer.from('pwned\n');
  let dir: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'boxgrid-fetch-hostile-'));
    // Just enough of the user API for `fetch`: the job, its succeeded task, and blob downloads.
    fake = createServer((req, res) => {
      if (req.url === '/v1/projects/default/jobs/1') {
        const now = new Date().toISOString();
        const task = {
          id: 7, hostId: 1, attempt: 1, replica: 0, state: 'succeeded', runtime: 'docker', leaseExpiresAt: now, createdAt: now, startedAt: now, endedAt: now,
          exitCode: 0, reason: null, outcome: { kind: 'succeeded' }, progress: 1, usage: null, durationMs: 1, outputs, validity: null,
        };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ job: { id: 1, state: 'succeeded', reason: null, resultTaskId: 7 }, tasks: [task] }));
      } else if (req.url?.startsWith('/v1/projects/default/blobs/')) {
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bytes.length }).end(bytes);
      } else {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"error":{"code":"not_found","message":"no"}}');
      }
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const addr = fake.address();
    url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
  });
  after(async () => {
    await new Promise<void>((r) => fake.close(() => r()));
    await rm(dir, { recursive: true, force: true });
  });

  const names: Array<[string, string]> = [
    ['../../escape-deep.txt', 'escape-deep.txt'],
    [`${'/'}tmp/boxgrid-fetch-absolute-${process.pid}.txt`, `boxgrid-fetch-absolute-${process.pid}.txt`],
    ['sub/inner.txt', 'inner.txt'],
    ['..', '..'],
    ['a\\..\\b.txt', 'b.txt'],
    ['nul\u0000.txt', 'nul'],
  ];
  for (const [name, marker] of names) {
    test(JSON.stringify(name), async () => {
      const work = join(dir, randomUUID());
      const out = join(work, 'nested', 'out');
      await mkdir(join(work, 'nested'), { recursive: true });
      outputs = { 'fine.txt': { sha256: sha256(bytes), size: bytes.length }, [name]: { sha256: sha256(bytes), size: bytes.length } };
      const r = await runCli(['fetch', '1', '--out', out], { BOXGRID_URL: url, BOXGRID_TOKEN: 'bgu_0000000000000000_' + 'A'.repeat(43), HOME: work });
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(r.stderr, /refusing output name/);
      // What is plain was fetched (and verified); nothing else exists anywhere near.
      assert.deepEqual(await readdir(out), ['fine.txt']);
      assert.equal(await readFile(join(out, 'fine.txt'), 'utf8'), 'pwned\n');
      assert.deepEqual((await readdir(work, { recursive: true })).map(String).sort(), ['nested', 'nested/out', 'nested/out/fine.txt']);
      assert.ok(!existsSync(join(tmpdir(), marker)) || marker === '..', marker);
    });
  }
});
