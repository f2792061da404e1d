import { createHash } from 'node:crypto';
import { Transform, type Readable } from 'node:stream';
import { BoxgridError } from '../domain/errors.js';

export const SHA256_RE = /^[0-9a-f]{64}$/;

/**
 * Content-addressed storage for inputs, outputs, checkpoints and logs. Which project may read
 * a blob is the store's business (blob_refs), not this port's: here content is just content.
 */
export interface BlobStore {
  /** Size of the stored blob, or null when it is absent. */
  stat(sha256: string): Promise<{ size: number } | null>;
  /**
   * Streams `body` into storage, hashing as it goes. Fails with `digest_mismatch` when the
   * bytes do not hash to `sha256` and with `payload_too_large` past `maxBytes`; nothing partial
   * is ever visible under the digest. Storing content that already exists is a no-op.
   */
  put(sha256: string, body: Readable, maxBytes: number): Promise<{ size: number }>;
  /** Removes uploads abandoned in the middle (a crash) that started before `before` (epoch ms). */
  sweepTemporary?(before: number): Promise<number>;
  /** Reads bytes [start, end] inclusive, or the whole blob. */
  read(sha256: string, range?: { start: number; end: number }): Readable;
  /** The largest blob the store can hold, if it has a limit (the server refuses to start with a larger --max-blob-bytes). */
  readonly maxBlobBytes?: number;
  /**
   * Transfers that bypass the server, present when the store can sign URLs (and they are not
   * turned off): agents then move bytes to and from the store itself.
   */
  readonly presign?: PresignedTransfers;
}

/**
 * Pre-signed URLs for a store that agents reach directly. A download URL reads a blob; an
 * upload URL takes one PUT of a blob's bytes into an upload *slot* (a key of its own, never the
 * digest's), and `commit` moves it under its digest only once the bytes are proven to hash to
 * it — so whatever a URL holder sends, nothing wrong is ever visible under a digest.
 */
export interface PresignedTransfers {
  /** A URL that answers one plain GET with the blob's bytes until `expiresSeconds` have passed. */
  get(sha256: string, expiresSeconds: number): Promise<string>;
  /**
   * A URL and the headers to send with it (they are signed: the length and the checksum of
   * the bytes) for one PUT of the blob into upload slot `slot` (letters, digits, "-", "_").
   */
  put(sha256: string, size: number, slot: string, expiresSeconds: number): Promise<PresignedUpload>;
  /**
   * What was PUT into `slot` for `sha256`, verified and moved under the digest: null when
   * nothing was; `digest_mismatch` (or `payload_too_large` past `maxBytes`) when the bytes are
   * wrong, which are then removed. The slot is removed once its bytes are under the digest, so
   * a repeat finds nothing in it (null) and the caller looks for the digest instead.
   */
  commit(sha256: string, slot: string, maxBytes: number): Promise<{ size: number } | null>;
}

export interface PresignedUpload {
  url: string;
  /** Headers the PUT must carry exactly as given. */
  headers: Record<string, string>;
  /** When the URL stops being accepted (epoch ms). */
  expiresAt: number;
}

/**
 * The stream every adapter passes an upload through: it counts and hashes the bytes, and fails
 * with `payload_too_large` once they pass `maxBytes`. `check` then fails with `digest_mismatch`
 * unless they hashed to the declared digest.
 */
export function uploadMeter(sha256: string, maxBytes: number): { stream: Transform; size: () => number; check: () => void } {
  const hash = createHash('sha256');
  let size = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      size += chunk.length;
      if (size > maxBytes) {
        done(new BoxgridError('payload_too_large', `blob is larger than the limit of ${maxBytes} bytes`, { field: 'body' }));
        return;
      }
      hash.update(chunk);
      done(null, chunk);
    },
  });
  return {
    stream,
    size: () => size,
    check: () => {
      const actual = hash.digest('hex');
      if (actual !== sha256) throw new BoxgridError('digest_mismatch', `body hashes to sha256 ${actual}, not the declared ${sha256}`, { field: 'sha256' });
    },
  };
}
