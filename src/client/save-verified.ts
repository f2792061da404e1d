import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BoxgridError } from '../domain/errors.js';

/**
 * Streams a downloaded blob to `path` through a sha256, and lets the file appear (by an atomic
 * rename) only when the bytes hash to `sha256`: a reader never sees a partial or wrong file.
 */
export async function saveVerified(res: Response, path: string, sha256: string, mode = 0o644): Promise<void> {
  if (!res.body) throw new BoxgridError('unavailable', `the server sent no body for blob ${sha256}`, { retryable: true });
  const partial = `${path}.partial-${randomUUID()}`;
  const hash = createHash('sha256');
  const tap = new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      done(null, chunk);
    },
  });
  try {
    await pipeline(Readable.fromWeb(res.body as never), tap, createWriteStream(partial, { mode }));
    const got = hash.digest('hex');
    if (got !== sha256) throw new BoxgridError('digest_mismatch', `blob ${sha256} arrived with sha256 ${got}; it was not saved`);
    await rename(partial, path);
  } finally {
    await rm(partial, { force: true });
  }
}
