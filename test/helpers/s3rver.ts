import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import S3rver from 's3rver';

/**
 * s3rver, an S3-protocol server in JavaScript, on 127.0.0.1 with one bucket. It speaks the
 * object API boxgrid uses (put, multipart, copy, head, ranged get, list, delete) and checks the
 * expiry of pre-signed URLs, but no signatures, permissions or checksums, and has none of a
 * real store's consistency, limits or latency (docs/operations.md).
 */
export interface TestS3 {
  endpoint: string;
  bucket: string;
  /** A `--blobs` URL for a fresh key prefix of the bucket (each test its own, as servers sharing a bucket would), with `extra` query parameters. */
  blobsUrl(extra?: Record<string, string>): string;
  close(): Promise<void>;
}

export async function startS3rver(bucket = 'boxgrid-test'): Promise<TestS3> {
  // s3rver's fixed credentials, through the AWS SDK's usual chain (the environment), as an
  // operator's would reach the server.
  process.env.AWS_ACCESS_KEY_ID = 'S3RVER';
  process.env.AWS_SECRET_ACCESS_KEY = 'S3RVER';
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-s3rver-'));
  const server = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir, configureBuckets: [{ name: bucket, configs: [] }] });
  const { port } = await server.run();
  const endpoint = `http://127.0.0.1:${port}`;
  return {
    endpoint,
    bucket,
    blobsUrl: (extra = {}) =>
      `s3://${bucket}/run-${randomBytes(4).toString('hex')}?${new URLSearchParams({ endpoint, pathStyle: 'true', ...extra })}`,
    async close() {
      await server.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
