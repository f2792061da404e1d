/**
 * The BlobStore port's conformance suite. Every adapter runs it:
 *
 *   runBlobConformance('FsBlobStore', async () => ({ blobs, cleanup }));
 *
 * `open` returns an empty store; `cleanup` releases what it used. Everything goes through the
 * port; an adapter's own layout (files, keys) is not looked at.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { BoxgridError } from '../../src/domain/errors.js';
import type { BlobStore } from '../../src/blobs/blob-store.js';

export type OpenBlobs = () => Promise<{ blobs: BlobStore; cleanup: () => Promise<void> }>;

const MAX = 64 * 1024 * 1024;

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** A body that arrives in pieces, as an HTTP upload does. */
function body(b: Buffer, piece = 64 * 1024): Readable {
  return Readable.from((function* () {
    for (let i = 0; i < b.length; i += piece) yield b.subarray(i, i + piece);
  })());
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (e: unknown) => e instanceof BoxgridError && e.code === code);
}

export function runBlobConformance(name: string, open: OpenBlobs, opts: { skip?: string | false } = {}): void {
  const test = (title: string, fn: (b: BlobStore) => Promise<void>) =>
    it(title, async () => {
      const { blobs, cleanup } = await open();
      try {
        await fn(blobs);
      } finally {
        await cleanup();
      }
    });

  describe(name, { skip: opts.skip ?? false }, () => {
    test('a stored blob has its size and reads back whole and by inclusive ranges', async (blobs) => {
      const data = randomBytes(300_000);
      assert.deepEqual(await blobs.put(sha(data), body(data), MAX), { size: data.length });
      assert.deepEqual(await blobs.stat(sha(data)), { size: data.length });
      assert.ok((await readAll(blobs.read(sha(data)))).equals(data));
      assert.ok((await readAll(blobs.read(sha(data), { start: 0, end: 0 }))).equals(data.subarray(0, 1)));
      assert.ok((await readAll(blobs.read(sha(data), { start: 1000, end: 250_000 }))).equals(data.subarray(1000, 250_001)));
      assert.ok((await readAll(blobs.read(sha(data), { start: data.length - 5, end: data.length - 1 }))).equals(data.subarray(data.length - 5)));
    });

    test('an empty blob is a blob', async (blobs) => {
      const empty = Buffer.alloc(0);
      assert.deepEqual(await blobs.put(sha(empty), body(empty), MAX), { size: 0 });
      assert.deepEqual(await blobs.stat(sha(empty)), { size: 0 });
      assert.equal((await readAll(blobs.read(sha(empty)))).length, 0);
    });

    test('a blob never stored has no size', async (blobs) => {
      assert.equal(await blobs.stat(sha(Buffer.from('never'))), null);
    });

    test('bytes that do not hash to the declared digest fail digest_mismatch and leave nothing', async (blobs) => {
      const data = randomBytes(10_000);
      const claimed = sha(Buffer.from('something else'));
      await rejectsWith(blobs.put(claimed, body(data), MAX), 'digest_mismatch');
      assert.equal(await blobs.stat(claimed), null);
      assert.equal(await blobs.stat(sha(data)), null, 'not stored under its true digest either');
    });

    test('a body past the limit fails payload_too_large and leaves nothing', async (blobs) => {
      const data = randomBytes(20_000);
      await rejectsWith(blobs.put(sha(data), body(data, 4096), 10_000), 'payload_too_large');
      assert.equal(await blobs.stat(sha(data)), null);
      // Exactly at the limit is fine.
      assert.deepEqual(await blobs.put(sha(data), body(data), 20_000), { size: 20_000 });
    });

    test('a body that breaks off fails and leaves nothing', async (blobs) => {
      const data = randomBytes(50_000);
      const broken = new Readable({
        read() {
          this.push(data.subarray(0, 10_000));
          this.destroy(new Error('the client went away'));
        },
      });
      await assert.rejects(blobs.put(sha(data), broken, MAX));
      assert.equal(await blobs.stat(sha(data)), null);
    });

    test('storing content again is a no-op; so is storing it twice at once', async (blobs) => {
      const data = randomBytes(40_000);
      const [a, b] = await Promise.all([blobs.put(sha(data), body(data), MAX), blobs.put(sha(data), body(data), MAX)]);
      assert.deepEqual([a, b], [{ size: 40_000 }, { size: 40_000 }]);
      assert.deepEqual(await blobs.put(sha(data), body(data), MAX), { size: 40_000 });
      assert.ok((await readAll(blobs.read(sha(data)))).equals(data));
    });

    test('a large body that does not hash right, or runs past the limit, leaves nothing (a multipart upload abandoned)', async (blobs) => {
      const data = randomBytes(7 * 1024 * 1024);
      const claimed = sha(Buffer.from('not these bytes'));
      await rejectsWith(blobs.put(claimed, body(data, 256 * 1024), MAX), 'digest_mismatch');
      await rejectsWith(blobs.put(sha(data), body(data, 256 * 1024), 6 * 1024 * 1024), 'payload_too_large');
      assert.equal(await blobs.stat(claimed), null);
      assert.equal(await blobs.stat(sha(data)), null);
      assert.equal(await blobs.sweepTemporary?.(Date.now() + 60_000), blobs.sweepTemporary ? 0 : undefined, 'no temporary left behind');
    });

    test('a large blob streams in and out (multipart where the store has it)', async (blobs) => {
      const data = randomBytes(12 * 1024 * 1024 + 123);
      assert.deepEqual(await blobs.put(sha(data), body(data, 256 * 1024), MAX), { size: data.length });
      assert.equal(sha(await readAll(blobs.read(sha(data)))), sha(data));
    });

    test('failed uploads leave no temporaries for the sweep to find; stored blobs are not swept', async (blobs) => {
      const data = randomBytes(5_000);
      await rejectsWith(blobs.put(sha(Buffer.from('x')), body(data), MAX), 'digest_mismatch');
      await blobs.put(sha(data), body(data), MAX);
      assert.equal(await blobs.sweepTemporary?.(Date.now() + 60_000), blobs.sweepTemporary ? 0 : undefined);
      assert.deepEqual(await blobs.stat(sha(data)), { size: 5_000 });
    });
  });
}
