import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BoxgridError } from '../domain/errors.js';
import { uploadMeter, type BlobStore } from './blob-store.js';

/** Blobs as files under `<dir>/sha256/ab/<digest>`; uploads land in `<dir>/tmp` and are renamed in. */
export class FsBlobStore implements BlobStore {
  constructor(private readonly dir: string) {}

  private path(sha256: string): string {
    return join(this.dir, 'sha256', sha256.slice(0, 2), sha256);
  }

  async stat(sha256: string): Promise<{ size: number } | null> {
    try {
      return { size: (await stat(this.path(sha256))).size };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw e;
    }
  }

  async put(sha256: string, body: Readable, maxBytes: number): Promise<{ size: number }> {
    const tmpDir = join(this.dir, 'tmp');
    await mkdir(tmpDir, { recursive: true });
    const tmp = join(tmpDir, `${sha256}.${randomBytes(6).toString('hex')}`);
    const meter = uploadMeter(sha256, maxBytes);
    try {
      await pipeline(body, meter.stream, createWriteStream(tmp, { flags: 'wx' }));
      meter.check();
      const final = this.path(sha256);
      await mkdir(join(this.dir, 'sha256', sha256.slice(0, 2)), { recursive: true });
      await rename(tmp, final); // atomic: readers see all of the blob or none of it
      return { size: meter.size() };
    } catch (e) {
      await rm(tmp, { force: true });
      if ((e as NodeJS.ErrnoException).code === 'ENOSPC') {
        throw new BoxgridError('insufficient_storage', 'the server has no disk space left for blobs');
      }
      throw e;
    }
  }

  async sweepTemporary(before: number): Promise<number> {
    const tmpDir = join(this.dir, 'tmp');
    let removed = 0;
    let names: string[];
    try {
      names = await readdir(tmpDir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 0;
      throw e;
    }
    for (const name of names) {
      const path = join(tmpDir, name);
      // Age, not a blanket wipe: another server sharing this directory may be mid-upload.
      if ((await stat(path)).mtimeMs < before) {
        await rm(path, { force: true });
        removed++;
      }
    }
    return removed;
  }

  read(sha256: string, range?: { start: number; end: number }): Readable {
    return createReadStream(this.path(sha256), range ? { start: range.start, end: range.end } : {});
  }
}
