import { randomBytes } from 'node:crypto';
import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  CopyObjectCommand, DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, S3Client, type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { uploadMeter, type BlobStore } from './blob-store.js';

export interface S3BlobStoreOptions {
  bucket: string;
  /** Keys start with this ('' or ending in '/'). */
  prefix: string;
  client: S3Client;
}

/**
 * Blobs as objects of an S3-compatible store: `<prefix>sha256/ab/<digest>`. An upload goes to
 * `<prefix>tmp/<digest>.<random>` (multipart for large ones, streamed: it is never held whole
 * in memory), is hashed on the way, and only when its digest is right is it copied to its
 * final key (S3 has no rename) and the temporary removed, so nothing partial or wrong is ever
 * visible under a digest. Credentials come from the AWS SDK's usual chain (environment,
 * shared files, instance roles).
 */
export class S3BlobStore implements BlobStore {
  private readonly bucket: string;
  private readonly prefix: string;
  private readonly client: S3Client;
  /** One CopyObject (temporary key → digest) copies at most 5 GiB. */
  readonly maxBlobBytes = 5 * 1024 ** 3;

  constructor(opts: S3BlobStoreOptions) {
    if (opts.prefix !== '' && !opts.prefix.endsWith('/')) throw new Error(`an S3 key prefix must end in "/": "${opts.prefix}"`);
    this.bucket = opts.bucket;
    this.prefix = opts.prefix;
    this.client = opts.client;
  }

  private key(sha256: string): string {
    return `${this.prefix}sha256/${sha256.slice(0, 2)}/${sha256}`;
  }

  async stat(sha256: string): Promise<{ size: number } | null> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(sha256) }));
      return { size: head.ContentLength ?? 0 };
    } catch (e) {
      if (notFound(e)) return null;
      throw e;
    }
  }

  async put(sha256: string, body: Readable, maxBytes: number): Promise<{ size: number }> {
    const tmp = `${this.prefix}tmp/${sha256}.${randomBytes(6).toString('hex')}`;
    const meter = uploadMeter(sha256, maxBytes);
    // queueSize 2: at most two 5 MiB parts of an upload in memory at once.
    const upload = new Upload({ client: this.client, params: { Bucket: this.bucket, Key: tmp, Body: meter.stream }, queueSize: 2 });
    let uploaded = false;
    try {
      const piped = pipeline(body, meter.stream);
      // An upload that fails stops the meter too, or the body would wait on it forever.
      const sent = upload.done().catch((e: unknown) => {
        meter.stream.destroy(e as Error);
        throw e;
      });
      const [fed, stored] = await Promise.allSettled([piped, sent]);
      // The body's own failure (too large, the client gone) explains a failed upload best.
      if (fed.status === 'rejected') throw fed.reason;
      if (stored.status === 'rejected') throw stored.reason;
      uploaded = true;
      meter.check();
      if ((await this.stat(sha256)) === null) {
        await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: this.key(sha256), CopySource: `${this.bucket}/${tmp.split('/').map(encodeURIComponent).join('/')}` }));
      }
      return { size: meter.size() };
    } catch (e) {
      if (!uploaded) await upload.abort().catch(() => {});
      throw e;
    } finally {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: tmp })).catch(() => {});
    }
  }

  async sweepTemporary(before: number): Promise<number> {
    let removed = 0;
    let token: string | undefined;
    do {
      const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: `${this.prefix}tmp/`, ContinuationToken: token }));
      for (const o of page.Contents ?? []) {
        // Age, not a blanket wipe: another server sharing this bucket may be mid-upload.
        if (o.Key && o.LastModified && o.LastModified.getTime() < before) {
          await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: o.Key }));
          removed++;
        }
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return removed;
  }

  read(sha256: string, range?: { start: number; end: number }): Readable {
    const out = new PassThrough();
    this.client
      .send(new GetObjectCommand({ Bucket: this.bucket, Key: this.key(sha256), ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) }))
      .then((r) => {
        // A store that answers more than the range asked for (s3rver answers bytes=0-0 with the
        // whole object) says so in Content-Range, or leaves it out: the range is then cut here.
        const served = /^bytes (\d+)-(\d+)\//.exec(r.ContentRange ?? '');
        const from = served ? Number(served[1]) : 0;
        const exact = !range || (served !== null && from === range.start && Number(served[2]) === range.end);
        return exact ? pipeline(r.Body as Readable, out) : pipeline(r.Body as Readable, cut(range.start - from, range.end - from), out);
      })
      .catch((e: unknown) => out.destroy(e as Error));
    return out;
  }
}

/** Passes bytes [start, end] (inclusive) of a stream and drops the rest. */
function cut(start: number, end: number): Transform {
  let at = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      const from = Math.max(0, start - at);
      const to = Math.min(chunk.length, end + 1 - at);
      at += chunk.length;
      done(null, from < to ? chunk.subarray(from, to) : undefined);
    },
  });
}

function notFound(e: unknown): boolean {
  const status = (e as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
  return status === 404 || (e as { name?: string }).name === 'NotFound' || (e as { name?: string }).name === 'NoSuchKey';
}

/**
 * `s3://BUCKET/PREFIX?endpoint=URL&region=R&pathStyle=true` as adapter options: `endpoint` for
 * S3-compatible stores other than AWS (MinIO, Ceph, Garage …), `pathStyle` for those that
 * want the bucket in the path. Credentials are not part of the URL.
 */
export function s3FromUrl(url: string): S3BlobStoreOptions {
  const u = new URL(url);
  if (u.protocol !== 's3:' || !u.hostname) throw new Error(`"${url}" is not s3://BUCKET[/PREFIX]`);
  const path = decodeURIComponent(u.pathname).replace(/^\/+/, '');
  const config: S3ClientConfig = {
    region: u.searchParams.get('region') ?? process.env.AWS_REGION ?? 'us-east-1',
    // A stuck store fails calls instead of hanging them; many agents' downloads at once get sockets.
    requestHandler: { connectionTimeout: 10_000, requestTimeout: 120_000, httpAgent: { maxSockets: 256 }, httpsAgent: { maxSockets: 256 } },
  };
  const endpoint = u.searchParams.get('endpoint');
  if (endpoint) config.endpoint = endpoint;
  if (u.searchParams.get('pathStyle') === 'true') config.forcePathStyle = true;
  return { bucket: u.hostname, prefix: path === '' || path.endsWith('/') ? path : `${path}/`, client: new S3Client(config) };
}
