import type { Readable } from 'node:stream';
import { SHA256_RE } from '../blobs/blob-store.js';
import { BoxgridError, invalid, notFound } from '../domain/errors.js';
import type { BlobRecord } from '../domain/model.js';
import type { ProjectAccess } from './access.js';
import type { ServiceContext } from './context.js';

/**
 * Upload and download of content-addressed files, scoped by project: a project reads only the
 * blobs it uploaded or its jobs produced, even when another project stored the same bytes.
 */
export class BlobService {
  constructor(private readonly ctx: ServiceContext) {}

  /** The project's reference to a blob, or null. Cheap: lets clients skip uploads (HEAD). */
  async find(access: ProjectAccess, sha256: string): Promise<BlobRecord | null> {
    checkDigest(sha256);
    return this.ctx.store.getBlobRef(access.project.id, sha256);
  }

  /**
   * Idempotent upload. If the project already holds the blob the body is not read at all. If
   * only another project holds it, the body is still received and verified: knowing a digest
   * must not grant access to content.
   */
  async put(access: ProjectAccess, sha256: string, body: Readable, declaredLength: number | undefined): Promise<{ blob: BlobRecord; created: boolean }> {
    return this.putInProject(access.project.id, sha256, body, declaredLength);
  }

  /**
   * `put` for a project the caller was checked against some other way (an agent's task). With
   * `proveContent` the body is received and verified even when the project already holds the
   * blob: the caller then has shown the bytes, not just named a digest.
   */
  async putInProject(
    projectId: number, sha256: string, body: Readable, declaredLength: number | undefined, opts: { proveContent?: boolean } = {},
  ): Promise<{ blob: BlobRecord; created: boolean }> {
    checkDigest(sha256);
    const existing = await this.ctx.store.getBlobRef(projectId, sha256);
    if (existing && !opts.proveContent) {
      body.resume(); // drain: the connection may be reused
      return { blob: existing, created: false };
    }
    const max = this.ctx.limits.maxBlobBytes;
    if (declaredLength !== undefined && declaredLength > max) {
      throw new BoxgridError('payload_too_large', `Content-Length ${declaredLength} is larger than the blob limit of ${max} bytes`, { field: 'headers/content-length' });
    }
    const { size } = await this.ctx.blobs.put(sha256, body, max);
    if (existing) return { blob: existing, created: false };
    const blob: BlobRecord = { sha256, size, createdAt: this.ctx.now() };
    await this.ctx.store.recordBlob(projectId, blob);
    return { blob, created: true };
  }

  /**
   * A pre-signed upload into the blob store's `slot`, verified there and made the project's;
   * null when the slot holds no such upload (or the store gives no pre-signed uploads). The
   * bytes came with the upload, as with `proveContent`: naming a digest proves nothing.
   */
  async commitUpload(projectId: number, sha256: string, slot: string): Promise<BlobRecord | null> {
    checkDigest(sha256);
    const stored = await this.ctx.blobs.presign?.commit(sha256, slot, this.ctx.limits.maxBlobBytes);
    if (!stored) return null;
    const blob: BlobRecord = { sha256, size: stored.size, createdAt: this.ctx.now() };
    await this.ctx.store.recordBlob(projectId, blob); // a repeat changes nothing
    return blob;
  }

  /**
   * The project's blob, checked once: its record (for size and Range) and a way to read the
   * bytes without looking it up again.
   */
  async open(access: ProjectAccess, sha256: string): Promise<OpenBlob> {
    return this.openInProject(access.project.id, sha256);
  }

  /** `open` for a project the caller was checked against some other way (an agent's task). */
  async openInProject(projectId: number, sha256: string): Promise<OpenBlob> {
    checkDigest(sha256);
    const blob = await this.ctx.store.getBlobRef(projectId, sha256);
    if (!blob) throw notFound(`blob ${sha256}`);
    return { blob, read: (range) => this.ctx.blobs.read(sha256, range) };
  }
}

export interface OpenBlob {
  blob: BlobRecord;
  read: (range?: { start: number; end: number }) => Readable;
}

function checkDigest(sha256: string): void {
  if (!SHA256_RE.test(sha256)) throw invalid('sha256', 'must be 64 lower-case hex digits');
}
