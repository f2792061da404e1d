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
import { randomBytes } from 'node:crypto';
import S3rver from 's3rver';
import { FsBlobStore } from '../../src/blobs/fs-blob-store.js';
import { S3BlobStore, s3FromUrl } from '../../src/blobs/s3-blob-store.js';
import { runBlobConformance } from './conformance.js';
import { BoxgridClient } from '../../src/client/client.js';
import { startServer } from '../../src/server/runtime.js';

runBlobConformance('FsBlobStore (blob conformance)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-blobs-'));
  return { blobs: new FsBlobStore(dir), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

const BUCKET = 'boxgrid-test';
// s3rver's fixed credentials, through the AWS SDK's usual chain (the environment), as an
// operator's would reach the server.
process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
let s3dir = '';
let server: S3rver | null = null;
let endpoint = '';
before(async () => {
  s3dir = await mkdtemp(join(tmpdir(), 'boxgrid-s3rver-'));
  server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: s3dir, configureBuckets: [{ name: BUCKET, configs: [] }] });
  const { port } = await server.run();
  endpoint = `http://127.0.0.1:${port}`;
});
after(async () => {
  await server?.close();
  await rm(s3dir, { recursive: true, force: true });
});

// Each test gets a key prefix of its own in the one bucket, as servers sharing a bucket would.
runBlobConformance('S3BlobStore on s3rver (blob conformance)', async () => {
  const { client, bucket, prefix } = s3FromUrl(`s3://${BUCKET}/run-${randomBytes(4).toString('hex')}?endpoint=${encodeURIComponent(endpoint)}&pathStyle=true`);
  return { blobs: new S3BlobStore({ client, bucket, prefix }), cleanup: async () => client.destroy() };
});


describe('a server whose blobs live in an S3 bucket', () => {
  it('stores an upload in the bucket and serves it back, whole and by range', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'boxgrid-s3-server-'));
    const prefix = `server-${randomBytes(4).toString('hex')}`;
    const server = await startServer({
      dataDir, host: '127.0.0.1', port: 0, blobDir: `s3://${BUCKET}/${prefix}?endpoint=${encodeURIComponent(endpoint)}&pathStyle=true`,
    });
    try {
      const client = new BoxgridClient({ url: server.url, token: server.adminToken! });
      const data = randomBytes(200_000);
      const file = join(dataDir, 'input.bin');
      await writeFile(file, data);
      const blob = await client.uploadFile('default', file);
      assert.equal(blob.size, data.length);
      // In the bucket, under the prefix, through the adapter's own reading of it.
      const { client: s3, bucket } = s3FromUrl(`s3://${BUCKET}/${prefix}?endpoint=${encodeURIComponent(endpoint)}&pathStyle=true`);
      assert.deepEqual(await new S3BlobStore({ client: s3, bucket, prefix: `${prefix}/` }).stat(blob.sha256), { size: data.length });
      s3.destroy();
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
