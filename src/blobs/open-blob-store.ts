import type { BlobStore } from './blob-store.js';

/**
 * The blob store a `--blobs` value names: `s3://BUCKET[/PREFIX][?endpoint=…]` for an
 * S3-compatible object store, anything else a directory. The S3 adapter (and the AWS SDK) is
 * loaded only when used.
 */
export async function openBlobStore(spec: string): Promise<BlobStore> {
  if (spec.startsWith('s3://')) {
    const { S3BlobStore, s3FromUrl } = await import('./s3-blob-store.js');
    return new S3BlobStore(s3FromUrl(spec));
  }
  const { FsBlobStore } = await import('./fs-blob-store.js');
  return new FsBlobStore(spec);
}
