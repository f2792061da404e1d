import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawn } from 'node:child_process';
import { test } from 'node:test';
import { startTestServer } from '../helpers/server.js';

const MiB = 1024 * 1024;

/** A deterministic stream of `total` bytes made on the fly, so the test itself holds little. */
function generated(total: number): { stream: ReadableStream<Uint8Array>; sha256: string } {
  const chunk = Buffer.alloc(MiB);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31) & 0xff;
  const hash = createHash('sha256');
  for (let sent = 0; sent < total; sent += MiB) hash.update(chunk.subarray(0, Math.min(MiB, total - sent)));
  let sent = 0;
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (sent >= total) return controller.close();
      const n = Math.min(MiB, total - sent);
      sent += n;
      controller.enqueue(new Uint8Array(chunk.subarray(0, n)));
    },
  });
  return { stream, sha256: hash.digest('hex') };
}

test('a 512 MiB upload streams to disk: server memory stays flat and the stored blob is whole', async () => {
  const s = await startTestServer();
  try {
    const total = 512 * MiB;
    const { sha256 } = generated(total);
    const before = process.memoryUsage().rss;
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
    // The client runs in its own process so that only the server's memory is measured here.
    const out = await uploadFromChildProcess(`${s.url}/v1/projects/default/blobs/${sha256}`, s.adminToken, total);
    clearInterval(sampler);
    assert.match(out, /^201 /, out);
    const grewMiB = (peak - before) / MiB;
    assert.ok(grewMiB < 128, `server RSS grew by ${grewMiB.toFixed(0)} MiB during a 512 MiB upload`);
    const head = await fetch(`${s.url}/v1/projects/default/blobs/${sha256}`, { method: 'HEAD', headers: { authorization: `Bearer ${s.adminToken}` } });
    assert.equal(head.headers.get('content-length'), String(total));
  } finally {
    await s.stop();
  }
});

/** Streams the same bytes as generated(total) from a child process; resolves with "STATUS BODY". */
function uploadFromChildProcess(url: string, token: string, total: number): Promise<string> {
  const code = `
    const MiB = ${MiB}, total = ${total};
    const chunk = Buffer.alloc(MiB);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31) & 0xff;
    let sent = 0;
    const body = new ReadableStream({ pull(c) { if (sent >= total) return c.close(); const n = Math.min(MiB, total - sent); sent += n; c.enqueue(chunk.subarray(0, n)); } });
    try {
      const r = await fetch(process.argv[1], { method: 'PUT', headers: { authorization: 'Bearer ' + process.argv[2], 'content-type': 'application/octet-stream' }, body, duplex: 'half' });
      process.stdout.write(r.status + ' ' + await r.text());
    } catch (e) {
      process.stdout.write('ERR ' + (e.cause?.code ?? e.message));
    }`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', code, url, token], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.on('error', reject);
    child.on('exit', () => resolve(out));
  });
}

test('an upload without Content-Length that runs past the limit is cut off with 413 and nothing is stored', async () => {
  const s = await startTestServer({ limits: { maxBlobBytes: 4 * MiB } });
  try {
    const { sha256 } = generated(16 * MiB);
    const out = await uploadFromChildProcess(`${s.url}/v1/projects/default/blobs/${sha256}`, s.adminToken, 16 * MiB);
    // The server answers 413 as soon as the limit is passed; a client still sending may instead
    // see the connection close under it. Either way nothing may be stored.
    if (!out.startsWith('ERR ')) {
      assert.match(out, /^413 /, out);
      assert.equal(JSON.parse(out.slice(4)).error.code, 'payload_too_large');
    }
    assert.equal(await s.ctx.blobs.stat(sha256), null);
    assert.equal(await s.ctx.store.getBlobRef(1, sha256), null);
  } finally {
    await s.stop();
  }
});
