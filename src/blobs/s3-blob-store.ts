import { randomBytes } from 'node:crypto';
import { PassThrough, Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  CopyObjectCommand, DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { BoxgridError } from '../domain/errors.js';
import { uploadMeter, type BlobStore, type PresignedTransfers, type PresignedUpload } from './blob-store.js';

export interface S3BlobStoreOptions {
  bucket: string;
  /** Keys start with this ('' or ending in '/'). */
  prefix: string;
  client: S3Client;
  /**
   * Pre-signed URLs for agents, on unless `false`. `client` signs them (default: `client`
   * above): one configured with the endpoint agents reach the store at, when that is not the
   * server's. `now` is the signing clock (tests make expired URLs with it).
   */
  presign?: false | { client?: S3Client; now?: () => number };
}

/** S3 refuses pre-signed URLs that live longer than a week. */
const MAX_PRESIGN_SECONDS = 7 * 86_400;
/**
 * A GET URL is signed this much longer than asked and handed out again meanwhile: signing one
 * costs about a millisecond of the server's CPU, and the tasks of a batch often share inputs.
 */
const GET_REUSE_SECONDS = 60;
const GET_CACHE_ENTRIES = 10_000;
const SLOT_RE = /^[A-Za-z0-9_-]{1,64}$/;

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
  /** One CopyObject (temporary key → digest) copies at most 5 GiB, as one pre-signed PUT takes. */
  readonly maxBlobBytes = 5 * 1024 ** 3;
  readonly presign?: PresignedTransfers;

  constructor(opts: S3BlobStoreOptions) {
    if (opts.prefix !== '' && !opts.prefix.endsWith('/')) throw new Error(`an S3 key prefix must end in "/": "${opts.prefix}"`);
    this.bucket = opts.bucket;
    this.prefix = opts.prefix;
    this.client = opts.client;
    if (opts.presign !== false) this.presign = this.presigner(opts.presign?.client ?? opts.client, opts.presign?.now ?? Date.now);
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
      await this.copyUnderDigest(tmp, sha256);
      return { size: meter.size() };
    } catch (e) {
      if (!uploaded) await upload.abort().catch(() => {});
      throw e;
    } finally {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: tmp })).catch(() => {});
    }
  }

  /** Temporaries of server uploads (`tmp/`) and upload slots agents never reported (`incoming/`). */
  /** Copies a verified object to the digest's key, unless the digest is there already (S3 has no rename). */
  private async copyUnderDigest(source: string, sha256: string): Promise<void> {
    if ((await this.stat(sha256)) !== null) return;
    await this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: this.key(sha256), CopySource: `${this.bucket}/${source.split('/').map(encodeURIComponent).join('/')}` }));
  }

  async sweepTemporary(before: number): Promise<number> {
    let removed = 0;
    for (const area of ['tmp/', 'incoming/']) {
      let token: string | undefined;
      do {
        const page = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: `${this.prefix}${area}`, ContinuationToken: token }));
        for (const o of page.Contents ?? []) {
          // Age, not a blanket wipe: another server sharing this bucket may be mid-upload.
          if (o.Key && o.LastModified && o.LastModified.getTime() < before) {
            await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: o.Key }));
            removed++;
          }
        }
        token = page.IsTruncated ? page.NextContinuationToken : undefined;
      } while (token);
    }
    return removed;
  }

  /**
   * Pre-signed GETs of digests, and PUTs into upload slots `<prefix>incoming/<slot>/<digest>`
   * signed with the bytes' length and `x-amz-checksum-sha256`: a store that checks checksums
   * (AWS S3 does) refuses wrong bytes at once. A slot is moved under its digest only by
   * `commit`: at once when the store reports the SHA-256 it checked, else after the server has
   * read the slot back and stored it through `put` (hashed, then copied) — so on a store that
   * checks nothing, a URL holder can still put nothing wrong under a digest.
   */
  private presigner(signer: S3Client, now: () => number): PresignedTransfers {
    const lifetime = (expiresSeconds: number): { expiresIn: number; signingDate: Date } => ({
      expiresIn: Math.min(MAX_PRESIGN_SECONDS, Math.max(1, Math.ceil(expiresSeconds))), signingDate: new Date(now()),
    });
    const slotKey = (slot: string, sha256: string): string => {
      if (!SLOT_RE.test(slot)) throw new Error(`upload slot "${slot}" is not 1-64 letters, digits, "-" or "_"`);
      return `${this.prefix}incoming/${slot}/${sha256}`;
    };
    const gets = new Map<string, { url: string; expiresAt: number }>();
    return {
      get: async (sha256, expiresSeconds) => {
        const cached = gets.get(sha256);
        if (cached && cached.expiresAt - now() >= expiresSeconds * 1000) return cached.url;
        const life = lifetime(expiresSeconds + GET_REUSE_SECONDS);
        const url = await getSignedUrl(signer, new GetObjectCommand({ Bucket: this.bucket, Key: this.key(sha256) }), life);
        if (gets.size >= GET_CACHE_ENTRIES) gets.clear();
        gets.set(sha256, { url, expiresAt: life.signingDate.getTime() + life.expiresIn * 1000 });
        return url;
      },
      put: async (sha256, size, slot, expiresSeconds): Promise<PresignedUpload> => {
        const checksum = Buffer.from(sha256, 'hex').toString('base64');
        const life = lifetime(expiresSeconds);
        const url = await getSignedUrl(
          signer,
          new PutObjectCommand({ Bucket: this.bucket, Key: slotKey(slot, sha256), ContentLength: size, ChecksumSHA256: checksum }),
          // A header, not a query parameter: signed, so the PUT must carry it as given.
          { ...life, unhoistableHeaders: new Set(['x-amz-checksum-sha256']) },
        );
        return {
          url, headers: { 'content-length': String(size), 'x-amz-checksum-sha256': checksum },
          expiresAt: life.signingDate.getTime() + life.expiresIn * 1000,
        };
      },
      commit: async (sha256, slot, maxBytes) => {
        const key = slotKey(slot, sha256);
        let head;
        try {
          head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key, ChecksumMode: 'ENABLED' }));
        } catch (e) {
          if (notFound(e)) return null;
          throw e;
        }
        const size = head.ContentLength ?? 0;
        const drop = () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
        let stored = { size };
        try {
          if (size > maxBytes) throw new BoxgridError('payload_too_large', `the upload of blob ${sha256} is ${size} bytes, more than the limit of ${maxBytes}`, { field: 'size' });
          const checked = head.ChecksumSHA256;
          if (checked !== undefined && !checked.includes('-')) {
            // The store computed it over the bytes it received (a "-N" suffix would mark a
            // checksum of part checksums, not of the bytes).
            if (checked !== Buffer.from(sha256, 'hex').toString('base64')) {
              throw new BoxgridError('digest_mismatch', `the bytes uploaded for blob ${sha256} have another sha256 (the store's checksum is ${checked})`, { field: 'sha256' });
            }
            await this.copyUnderDigest(key, sha256);
          } else {
            // No checksum the store vouches for: read the slot back through `put`, which hashes
            // what it stores, so bytes swapped in the slot meanwhile cannot slip past the check.
            const body = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
            stored = await this.put(sha256, body.Body as Readable, maxBytes);
          }
        } catch (e) {
          if (e instanceof BoxgridError) await drop().catch(() => {});
          throw e;
        }
        await drop();
        return stored;
      },
    };
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
 * want the bucket in the path, `presign=false` to keep agents' bytes going through the servers,
 * `publicEndpoint=URL` for the address agents reach the store at when it is not `endpoint`.
 * Credentials are not part of the URL.
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
  const presign = u.searchParams.get('presign') ?? 'true';
  if (presign !== 'true' && presign !== 'false') throw new Error(`presign=${presign} in "${url}" is neither true nor false`);
  const publicEndpoint = u.searchParams.get('publicEndpoint');
  // URLs are signed for the host agents will call: the signature covers it.
  const signer = new S3Client({
    ...config, ...(publicEndpoint ? { endpoint: publicEndpoint } : {}),
    // No CRC32 of an empty body nor a checksum mode added to the URLs: only what is asked for.
    requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
  });
  return {
    bucket: u.hostname, prefix: path === '' || path.endsWith('/') ? path : `${path}/`, client: new S3Client(config),
    presign: presign === 'false' ? false : { client: signer },
  };
}
