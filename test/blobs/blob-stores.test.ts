// The BlobStore conformance suite against each adapter: the filesystem one, and the S3 one
// against s3rver, an S3-protocol server in JavaScript run here on 127.0.0.1. s3rver speaks the
// object API boxgrid uses (put, multipart, copy, head, ranged get, list, delete) but checks no
// signatures or permissions and has none of a real store's consistency, limits or latency:
// this proves the adapter's protocol use, not an S3 deployment (docs/operations.md).
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { GetObjectCommand, HeadObjectCommand } from '@aws-sdk/client-s3';
import { FsBlobStore } from '../../src/blobs/fs-blob-store.js';
import { S3BlobStore, s3FromUrl, type S3BlobStoreOptions } from '../../src/blobs/s3-blob-store.js';
import { BoxgridError } from '../../src/domain/errors.js';
import { runBlobConformance } from './conformance.js';
import { BoxgridClient } from '../../src/client/client.js';
import { startServer } from '../../src/server/runtime.js';
import { startS3rver, type TestS3 } from '../helpers/s3rver.js';

runBlobConformance('FsBlobStore (blob conformance)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-blobs-'));
  return { blobs: new FsBlobStore(dir), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

let s3: TestS3;
before(async () => {
  s3 = await startS3rver();
});
after(() => s3?.close());

// Each test gets a key prefix of its own in the one bucket, as servers sharing a bucket would.
runBlobConformance('S3BlobStore on s3rver (blob conformance)', async () => {
  const { client, bucket, prefix } = s3FromUrl(s3.blobsUrl());
  return { blobs: new S3BlobStore({ client, bucket, prefix }), cleanup: async () => client.destroy() };
});


describe('a server whose blobs live in an S3 bucket', () => {
  it('stores an upload in the bucket and serves it back, whole and by range', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'boxgrid-s3-server-'));
    const blobsUrl = s3.blobsUrl();
    const server = await startServer({ dataDir, host: '127.0.0.1', port: 0, blobDir: blobsUrl });
    try {
      const client = new BoxgridClient({ url: server.url, token: server.adminToken! });
      const data = randomBytes(200_000);
      const file = join(dataDir, 'input.bin');
      await writeFile(file, data);
      const blob = await client.uploadFile('default', file);
      assert.equal(blob.size, data.length);
      // In the bucket, under the prefix, through the adapter's own reading of it.
      const opened = s3FromUrl(blobsUrl);
      assert.deepEqual(await new S3BlobStore(opened).stat(blob.sha256), { size: data.length });
      opened.client.destroy();
      const whole = Buffer.from(await (await client.download('default', blob.sha256)).arrayBuffer());
      assert.ok(whole.equals(data));
      const ranged = await fetch(`${server.url}/v1/projects/default/blobs/${blob.sha256}`, { headers: { authorization: `Bearer ${server.adminToken}`, range: 'bytes=10-19' } });
      assert.equal(ranged.status, 206);
      assert.ok(Buffer.from(await ranged.arrayBuffer()).equals(data.subarray(10, 20)));
    } finally {
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});

describe('pre-signed transfers of the S3 store, on s3rver', () => {
  const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
  const MAX = 64 * 1024 * 1024;
  /** A store on a fresh prefix; `presign` as the adapter takes it. */
  const open = (presign?: S3BlobStoreOptions['presign'], extra: Record<string, string> = {}) => {
    const opts = s3FromUrl(s3.blobsUrl(extra));
    return { store: new S3BlobStore({ ...opts, ...(presign === undefined ? {} : { presign }) }), opts };
  };
  /** `fn` with a store on a fresh prefix, its client released after. */
  const withStore = async (fn: (store: S3BlobStore) => Promise<void>, presign?: S3BlobStoreOptions['presign']): Promise<void> => {
    const { store, opts } = open(presign);
    try {
      await fn(store);
    } finally {
      opts.client.destroy();
    }
  };
  const put = (url: string, headers: Record<string, string>, data: Buffer) => fetch(url, { method: 'PUT', headers, body: data as unknown as BodyInit });

  it('a pre-signed GET answers the blob\'s bytes to a plain request', () =>
    withStore(async (store) => {
      const data = randomBytes(100_000);
      await store.put(sha(data), Readable.from([data]), MAX);
      const url = await store.presign!.get(sha(data), 60);
      assert.ok(url.startsWith(`${s3.endpoint}/`), url);
      const res = await fetch(url);
      assert.equal(res.status, 200);
      assert.ok(Buffer.from(await res.arrayBuffer()).equals(data));
      assert.equal(await store.presign!.get(sha(data), 60), url, 'signed a little longer than asked, and handed out again meanwhile');
      const longer = await store.presign!.get(sha(data), 3600);
      assert.notEqual(longer, url, 'a longer life asked for is signed anew');
      assert.equal(new URL(longer).searchParams.get('X-Amz-Expires'), String(3600 + 60));
    }));

  it('a pre-signed PUT of the right bytes goes to an upload slot, and commit moves it under its digest', () =>
    withStore(async (store) => {
      const data = randomBytes(50_000);
      const up = await store.presign!.put(sha(data), data.length, 'task-1', 60);
      assert.deepEqual(up.headers, { 'content-length': String(data.length), 'x-amz-checksum-sha256': createHash('sha256').update(data).digest('base64') });
      assert.match(new URL(up.url).searchParams.get('X-Amz-SignedHeaders') ?? '', /content-length;host;x-amz-checksum-sha256/, 'length and checksum are signed');
      assert.ok(Math.abs(up.expiresAt - (Date.now() + 60_000)) < 5000);
      assert.equal((await put(up.url, up.headers, data)).status, 200);
      assert.equal(await store.stat(sha(data)), null, 'not under the digest before it is committed');
      assert.deepEqual(await store.presign!.commit(sha(data), 'task-1', MAX), { size: data.length });
      assert.deepEqual(await store.stat(sha(data)), { size: data.length });
      assert.ok((await readAll(store.read(sha(data)))).equals(data));
      assert.equal(await store.presign!.commit(sha(data), 'task-1', MAX), null, 'the slot is emptied');
      assert.equal(await store.presign!.commit(sha(data), 'task-2', MAX), null, 'another slot never held it');
    }));

  it('wrong bytes in a slot (s3rver does not check the signed checksum) are refused by commit and leave nothing, nor harm the digest\'s own bytes', () =>
    withStore(async (store) => {
      const good = randomBytes(20_000);
      const digest = sha(good);
      const bad = randomBytes(20_000);
      // A fresh digest: wrong bytes never appear under it.
      const up = await store.presign!.put(digest, good.length, 'task-7', 60);
      assert.equal((await put(up.url, up.headers, bad)).status, 200, 's3rver takes bytes that do not match x-amz-checksum-sha256 (AWS S3 refuses them)');
      await assert.rejects(store.presign!.commit(digest, 'task-7', MAX), (e: unknown) => e instanceof BoxgridError && e.code === 'digest_mismatch');
      assert.equal(await store.stat(digest), null);
      assert.equal(await store.stat(sha(bad)), null);
      assert.equal(await store.presign!.commit(digest, 'task-7', MAX), null, 'the wrong bytes were removed');
      // A digest the store holds already: a slot is never its key, so its bytes stay.
      await store.put(digest, Readable.from([good]), MAX);
      const again = await store.presign!.put(digest, good.length, 'task-8', 60);
      assert.equal((await put(again.url, again.headers, bad)).status, 200);
      await assert.rejects(store.presign!.commit(digest, 'task-8', MAX), (e: unknown) => e instanceof BoxgridError && e.code === 'digest_mismatch');
      assert.ok((await readAll(store.read(digest))).equals(good));
      // Past the limit: refused and removed.
      const big = await store.presign!.put(sha(bad), bad.length, 'task-9', 60);
      assert.equal((await put(big.url, big.headers, bad)).status, 200);
      await assert.rejects(store.presign!.commit(sha(bad), 'task-9', 1000), (e: unknown) => e instanceof BoxgridError && e.code === 'payload_too_large');
      assert.equal(await store.presign!.commit(sha(bad), 'task-9', MAX), null);
    }));

  it('an expired URL is refused, for reading and for uploading', () =>
    // Signed two hours ago for an hour: expired, without waiting for it.
    withStore(async (store) => {
      const data = randomBytes(1000);
      await store.put(sha(data), Readable.from([data]), MAX);
      const got = await fetch(await store.presign!.get(sha(data), 3600));
      assert.equal(got.status, 403);
      assert.match(await got.text(), /expired/);
      const up = await store.presign!.put(sha(data), data.length, 'task-3', 3600);
      assert.ok(up.expiresAt < Date.now());
      assert.equal((await put(up.url, up.headers, data)).status, 403);
      assert.equal(await store.presign!.commit(sha(data), 'task-3', MAX), null);
    }, { now: () => Date.now() - 2 * 3600_000 }));

  it('a SHA-256 the store reports for a slot is trusted without reading it back; one that differs is refused', async () => {
    // s3rver keeps no checksums: this stands in for a store that checked x-amz-checksum-sha256 on the PUT.
    const { opts } = open();
    const reported = new Map<string, string>();
    let reads = 0;
    const send = opts.client.send.bind(opts.client);
    opts.client.send = (async (command: { input: { Key?: string } }) => {
      const out = (await send(command as never)) as unknown as Record<string, unknown>;
      if (command instanceof HeadObjectCommand && reported.has(command.input.Key!)) out.ChecksumSHA256 = reported.get(command.input.Key!);
      if (command instanceof GetObjectCommand) reads++;
      return out;
    }) as typeof opts.client.send;
    const store = new S3BlobStore(opts);
    try {
      const data = randomBytes(5000);
      const up = await store.presign!.put(sha(data), data.length, 'task-4', 60);
      await put(up.url, up.headers, data);
      reported.set(`${opts.prefix}incoming/task-4/${sha(data)}`, up.headers['x-amz-checksum-sha256']!);
      assert.deepEqual(await store.presign!.commit(sha(data), 'task-4', MAX), { size: data.length });
      assert.equal(reads, 0, 'not read back');
      assert.ok((await readAll(store.read(sha(data)))).equals(data));
      const other = randomBytes(5000);
      const up2 = await store.presign!.put(sha(other), other.length, 'task-5', 60);
      await put(up2.url, up2.headers, other);
      reported.set(`${opts.prefix}incoming/task-5/${sha(other)}`, createHash('sha256').update('something else').digest('base64'));
      await assert.rejects(store.presign!.commit(sha(other), 'task-5', MAX), (e: unknown) => e instanceof BoxgridError && e.code === 'digest_mismatch');
      assert.equal(await store.stat(sha(other)), null);
    } finally {
      opts.client.destroy();
    }
  });

  it('presign=false turns URLs off; publicEndpoint signs them for the address agents use', async () => {
    const off = open(undefined, { presign: 'false' });
    assert.equal(off.store.presign, undefined);
    off.opts.client.destroy();
    assert.throws(() => s3FromUrl(s3.blobsUrl({ presign: 'maybe' })), /presign=maybe/);
    const pub = open(undefined, { publicEndpoint: 'https://objects.example:9000' });
    try {
      const url = new URL(await pub.store.presign!.get(sha(Buffer.from('x')), 60));
      assert.equal(url.origin, 'https://objects.example:9000');
      assert.match(url.pathname, /^\/boxgrid-test\/run-[0-9a-f]+\/sha256\//);
    } finally {
      pub.opts.client.destroy();
    }
  });

  it('slots left unreported are swept with the temporaries once old enough', () =>
    withStore(async (store) => {
      const data = randomBytes(100);
      const up = await store.presign!.put(sha(data), data.length, 'task-6', 60);
      await put(up.url, up.headers, data);
      assert.equal(await store.sweepTemporary(Date.now() - 3600_000), 0, 'a fresh slot stays');
      assert.equal(await store.sweepTemporary(Date.now() + 60_000), 1);
      assert.equal(await store.presign!.commit(sha(data), 'task-6', MAX), null);
    }));
});

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
