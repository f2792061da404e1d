import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { closeSync, openSync, statfsSync, writeSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { newCredential } from '../../src/service/credentials.js';
import { OCTET, sha256 } from '../api/util.js';
import { checkDataDir } from '../helpers/data-dir-integrity.js';
import { exited, startServerProcess, type Started } from '../helpers/server-process.js';

/**
 * The server's data dir on a filesystem that fills up (issue 9, item 4): a real `boxgrid
 * server` process on a small tmpfs; a filler file takes (almost) all of it. Writes must then
 * fail with 507 insufficient_storage, all or nothing, while reads, /healthz and the process go
 * on; once space returns the same requests succeed without a restart; the SQLite file passes
 * integrity_check and the server starts again on the same dir.
 */

const FS_MIB = 24;
/** Left free by the filler: less than any of the writes below needs. */
const ROOM = 16 * 1024;
const P = 'default';
/** No call may hang: each gets this long. */
const CALL_MS = 15_000;

/** Mounts a small tmpfs (root only). Locally, why it cannot skips the suite; under CI=true it fails it. */
async function smallFilesystem(): Promise<{ skip: string | false; dir: string | null }> {
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-diskfull-'));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${FS_MIB}m,mode=0700`, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.status === 0) return { skip: false, dir };
  await rm(dir, { recursive: true, force: true });
  const reason = `cannot mount a ${FS_MIB} MiB tmpfs for the data dir (uid ${process.getuid?.()}: ${(r.error?.message ?? r.stderr).trim().split('\n')[0] || `mount exited ${r.status}`}); run as root`;
  if (process.env.CI === 'true') throw new Error(`CI needs a small filesystem for these tests, but ${reason}`);
  return { skip: reason, dir: null };
}

const fsys = await smallFilesystem();
// A test process that dies without its after() (a timeout) still leaves no mount behind.
const unmountOnExit = (): void => {
  if (fsys.dir) spawnSync('umount', ['-l', fsys.dir]);
};
if (fsys.dir) process.once('exit', unmountOnExit);

interface Answer {
  status: number;
  text: string;
  body: any;
  headers: Headers;
}

describe('the server\'s data dir runs out of disk space', { skip: fsys.skip }, () => {
  const mount = fsys.dir!;
  const dataDir = join(mount, 'data');
  const filler = join(mount, 'filler');
  let server: Started | null = null;
  let token = '';

  const call = async (method: string, path: string, o: { body?: unknown; raw?: Buffer; token?: string; headers?: Record<string, string> } = {}): Promise<Answer> => {
    const headers: Record<string, string> = { authorization: `Bearer ${o.token ?? token}`, ...o.headers };
    let body: BodyInit | undefined;
    if (o.body !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(o.body);
    } else if (o.raw !== undefined) {
      Object.assign(headers, OCTET);
      body = o.raw as unknown as BodyInit;
    }
    const res = await fetch(server!.url + path, { method, headers, signal: AbortSignal.timeout(CALL_MS), ...(body === undefined ? {} : { body }) });
    const text = await res.text();
    // Every answer this suite checks the body of is JSON; anything else is kept as text for the message.
    const parsed: unknown = /^\s*[{[]/.test(text) ? JSON.parse(text) : undefined;
    return { status: res.status, text, body: parsed, headers: res.headers };
  };

  /** A clean 507: the stable code, a sentence saying the disk is full, no stack, no path. */
  const assertOutOfSpace = (r: Answer, what: string): void => {
    assert.equal(r.status, 507, `${what}: expected 507 insufficient_storage, got ${r.status}: ${r.text.slice(0, 500)}`);
    assert.equal(r.body?.error?.code, 'insufficient_storage', `${what}: ${r.text}`);
    assert.match(r.body.error.message, /the server has no disk space left/, what);
    assert.doesNotMatch(r.text, /\n\s+at |node_modules|SQLITE_|ENOSPC/, `${what} leaks internals: ${r.text}`);
  };

  const free = (): number => {
    const s = statfsSync(mount);
    return s.bavail * s.bsize;
  };

  /** Fills the filesystem, leaving about `room` bytes free. */
  const fill = (room: number): void => {
    const fd = openSync(filler, 'w');
    try {
      const chunk = Buffer.alloc(1024 * 1024, 0x5a);
      for (let left = free() - room; left > 0; left = free() - room) writeSync(fd, chunk, 0, Math.min(chunk.length, left));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
    } finally {
      closeSync(fd);
    }
  };

  const counts = async (): Promise<Record<string, number>> => {
    const r = await call('GET', `/v1/projects/${P}/counts`);
    assert.equal(r.status, 200, r.text);
    return r.body.counts;
  };
  const total = (c: Record<string, number>): number => Object.values(c).reduce((a, b) => a + b, 0);

  /** What the tests share: data written before the disk filled, and a host holding a task. */
  const earlier = {
    blob: randomBytes(200_000),
    small: Buffer.from('a small output, uploaded before the disk filled\n'),
    big: randomBytes(1024 * 1024),
    jobId: 0,
    taskId: 0,
    hostToken: '',
  };
  const bigBatch = () => ({
    app: 'sh',
    // ~6 MiB of job rows: far more than the room the filler leaves.
    jobs: Array.from({ length: 200 }, (_, i) => ({ args: Array.from({ length: 7 }, (_, k) => `batch job ${i}.${k} `.padEnd(4000, 'x')) })),
  });
  const earlierReport = () => ({
    outcome: { kind: 'succeeded' }, durationMs: 1000,
    outputs: { 'small.txt': { sha256: sha256(earlier.small), size: earlier.small.length }, 'big.bin': { sha256: sha256(earlier.big), size: earlier.big.length } },
  });
  const bigJob = () => ({ app: 'sh', args: Array.from({ length: 15 }, (_, i) => `${i}`.padEnd(4000, 'y')) }); // ~60 KiB, under maxJobBytes
  const bigBlobPath = () => `/v1/projects/${P}/blobs/${sha256(earlier.big)}`;

  before(async () => {
    server = await startServerProcess(dataDir, ['--lease', '600', '--heartbeat', '30']);
    token = (await readFile(join(dataDir, 'admin.token'), 'utf8')).trim();
    // Data that must read back unchanged later.
    let r = await call('POST', `/v1/projects/${P}/apps`, { body: { name: 'sh', image: 'busybox:1', command: ['sh', '-c'], resources: { cores: 1, memoryMiB: 64, diskMiB: 10 } } });
    assert.equal(r.status, 201, r.text);
    r = await call('PUT', `/v1/projects/${P}/blobs/${sha256(earlier.blob)}`, { raw: earlier.blob });
    assert.equal(r.status, 201, r.text);
    r = await call('POST', `/v1/projects/${P}/jobs`, { body: { app: 'sh', args: ['echo early'] } });
    assert.equal(r.status, 201, r.text);
    earlier.jobId = r.body.jobIds[0];
    r = await call('POST', `/v1/projects/${P}/batches`, { body: { app: 'sh', count: 3, template: { args: ['echo batch'] } } });
    assert.equal(r.status, 201, r.text);
    // A host (the agent protocol by hand) that holds the first job's task.
    const t = await call('POST', '/v1/enroll-tokens', { body: {} });
    assert.equal(t.status, 201, t.text);
    const credential = newCredential('host');
    const e = await call('POST', '/agent/v1/enroll', {
      body: {
        enrollToken: t.body.token, name: 'full-disk-host', resources: { cores: 4, memoryMiB: 4096, diskMiB: 10_000, gpus: 0 }, platform: 'linux/amd64',
        credentialId: credential.id, credentialHash: credential.secretHash.toString('hex'),
      },
    });
    assert.equal(e.status, 201, e.text);
    earlier.hostToken = credential.token;
    const w = await call('POST', '/agent/v1/work', {
      token: earlier.hostToken,
      body: { requestId: randomUUID(), free: { cores: 1, memoryMiB: 64, diskMiB: 10, gpus: 0 }, maxTasks: 1, runtimes: ['docker'] },
    });
    assert.equal(w.status, 200, w.text);
    assert.equal(w.body.tasks.length, 1, w.text);
    assert.equal(w.body.tasks[0].jobId, earlier.jobId);
    earlier.taskId = w.body.tasks[0].taskId;
    r = await call('PUT', `/agent/v1/tasks/${earlier.taskId}/blobs/${sha256(earlier.small)}`, { token: earlier.hostToken, raw: earlier.small });
    assert.equal(r.status, 201, r.text);
  });

  after(async () => {
    if (server && server.child.exitCode === null) {
      server.child.kill('SIGKILL');
      await exited(server.child);
    }
    spawnSync('umount', [mount]);
    process.off('exit', unmountOnExit);
    await rm(mount, { recursive: true, force: true });
  });

  test('while the disk is full, writes fail with a clean 507 and leave nothing half-written; reads and /healthz go on', async () => {
    const countsBefore = await counts();
    fill(ROOM);
    assert.ok(free() <= ROOM + 64 * 1024, `the filler left ${free()} bytes free`);

    // A blob upload: 507, and no partial blob under its digest nor in the upload area.
    const put = await call('PUT', bigBlobPath(), { raw: earlier.big });
    assertOutOfSpace(put, 'PUT blob');
    assert.equal((await call('HEAD', bigBlobPath())).status, 404, 'no partial blob is visible under its digest');
    assert.equal((await call('GET', bigBlobPath())).status, 404);
    assert.deepEqual(await readdir(join(dataDir, 'blobs', 'tmp')).catch(() => []), [], 'the failed upload left no temporary file');

    // A job and a batch: 507; nothing of either is stored, and the same idempotency key is still free.
    const job = await call('POST', `/v1/projects/${P}/jobs`, { body: bigJob(), headers: { 'idempotency-key': 'full-job' } });
    assertOutOfSpace(job, 'POST job');
    const batch = await call('POST', `/v1/projects/${P}/batches`, { body: bigBatch(), headers: { 'idempotency-key': 'full-batch' } });
    assertOutOfSpace(batch, 'POST batch');
    assert.deepEqual(await counts(), countsBefore, 'the batch is all or nothing: no job of it exists');
    const batches = await call('GET', `/v1/projects/${P}/batches`);
    assert.equal(batches.status, 200, batches.text);
    assert.equal(batches.body.batches.length, 1, 'no batch row was left behind');

    // The agent side: an output upload of a running task is refused the same way.
    const upload = await call('PUT', `/agent/v1/tasks/${earlier.taskId}/blobs/${sha256(earlier.big)}`, { token: earlier.hostToken, raw: earlier.big });
    assertOutOfSpace(upload, 'agent output upload');
    // A heartbeat writes too: it keeps the lease (200) or says the disk is full (507), never a 500.
    const beat = await call('POST', '/agent/v1/heartbeat', { token: earlier.hostToken, body: { tasks: [{ taskId: earlier.taskId }] } });
    if (beat.status !== 200) assertOutOfSpace(beat, 'heartbeat');

    // The report that would name the output is refused too, and ends nothing: the agent keeps it and tries again.
    const report = await call('POST', `/agent/v1/tasks/${earlier.taskId}/result`, { token: earlier.hostToken, body: earlierReport() });
    if (report.status === 400) assert.match(report.body.error.message, /was not uploaded/, report.text);
    else assertOutOfSpace(report, 'report');

    // Reads: what was there still reads back right.
    const early = await call('GET', `/v1/projects/${P}/jobs/${earlier.jobId}`);
    assert.equal(early.status, 200, early.text);
    assert.deepEqual(early.body.job.args, ['echo early']);
    const blob = await fetch(`${server!.url}/v1/projects/${P}/blobs/${sha256(earlier.blob)}`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(CALL_MS) });
    assert.equal(blob.status, 200);
    assert.ok(Buffer.from(await blob.arrayBuffer()).equals(earlier.blob), 'an earlier blob reads back byte for byte');
    const health = await fetch(`${server!.url}/healthz`, { signal: AbortSignal.timeout(CALL_MS) });
    assert.equal(health.status, 200);
    assert.equal(server!.child.exitCode, null, 'the server is still running');
    assert.doesNotMatch(server!.stderr(), /unexpected error/, 'no failure was logged as unexpected (a 500)');
  });

  test('once space returns, the same requests succeed without a restart, and the task\'s result is delivered', async () => {
    await rm(filler);
    const put = await call('PUT', bigBlobPath(), { raw: earlier.big });
    assert.equal(put.status, 201, put.text);
    const got = await fetch(server!.url + bigBlobPath(), { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(CALL_MS) });
    assert.ok(Buffer.from(await got.arrayBuffer()).equals(earlier.big), 'the blob reads back byte for byte');

    const before = total(await counts());
    const job = await call('POST', `/v1/projects/${P}/jobs`, { body: bigJob(), headers: { 'idempotency-key': 'full-job' } });
    assert.equal(job.status, 201, `the failed request was not remembered as done: ${job.text}`);
    const batch = await call('POST', `/v1/projects/${P}/batches`, { body: bigBatch(), headers: { 'idempotency-key': 'full-batch' } });
    assert.equal(batch.status, 201, batch.text);
    assert.equal(total(await counts()), before + 1 + 200);

    // The agent retries: the output upload, then the report naming both outputs.
    const upload = await call('PUT', `/agent/v1/tasks/${earlier.taskId}/blobs/${sha256(earlier.big)}`, { token: earlier.hostToken, raw: earlier.big });
    assert.ok(upload.status === 200 || upload.status === 201, upload.text); // the project holds it already (uploaded above): 200
    const held = await call('GET', `/v1/projects/${P}/jobs/${earlier.jobId}`);
    assert.equal(held.body.tasks.length, 1);
    assert.ok(['assigned', 'running'].includes(held.body.tasks[0].state), `the refused report ended nothing: ${held.text}`); // 'assigned' while no heartbeat got through
    const report = await call('POST', `/agent/v1/tasks/${earlier.taskId}/result`, { token: earlier.hostToken, body: earlierReport() });
    assert.equal(report.status, 200, report.text);
    const done = await call('GET', `/v1/projects/${P}/jobs/${earlier.jobId}`);
    assert.equal(done.body.job.state, 'succeeded', done.text);
    assert.equal(done.body.tasks.length, 1);
    assert.equal(done.body.tasks[0].outputs['big.bin'].sha256, sha256(earlier.big));
  });

  test('after it stops, the SQLite file is intact and the server starts again on the same dir', async () => {
    server!.child.kill('SIGTERM');
    assert.equal(await exited(server!.child), 0, `the server stopped cleanly: ${server!.stderr()}`);
    const report = checkDataDir(dataDir); // PRAGMA integrity_check and foreign_key_check, every blob file's digest
    assert.deepEqual(report.problems, []);
    assert.equal(report.tmpFiles, 0, 'no upload was left half-written');
    assert.ok(report.digests.has(sha256(earlier.blob)) && report.digests.has(sha256(earlier.big)));
    server = await startServerProcess(dataDir, ['--lease', '600']);
    const early = await call('GET', `/v1/projects/${P}/jobs/${earlier.jobId}`);
    assert.equal(early.status, 200, early.text);
    assert.equal(early.body.job.state, 'succeeded');
    assert.equal(total(await counts()), 1 + 3 + 1 + 200);
    const blob = await fetch(`${server.url}/v1/projects/${P}/blobs/${sha256(earlier.blob)}`, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(CALL_MS) });
    assert.ok(Buffer.from(await blob.arrayBuffer()).equals(earlier.blob));
    server.child.kill('SIGTERM');
    assert.equal(await exited(server.child), 0);
  });
});
