import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { InputCache } from '../../src/agent/staging.js';
import { BoxgridError } from '../../src/domain/errors.js';

/** The input cache's downloads: transient failures are retried, permanent ones are not, nothing partial is ever left. */
describe('InputCache downloads', () => {
  let dir: string;
  const bytes = Buffer.from('input bytes\n');
  const sha = createHash('sha256').update(bytes).digest('hex');
  const ok = (): Promise<Response> => Promise.resolve(new Response(bytes));
  /** A source that fails `times` times with `error`, then serves the bytes; it counts its calls. */
  const flaky = (times: number, error: () => Error): (() => Promise<Response>) & { calls: number } => {
    const f = Object.assign(async () => {
      f.calls++;
      if (f.calls <= times) throw error();
      return new Response(bytes);
    }, { calls: 0 });
    return f;
  };
  const dropped = (): Error => new TypeError('fetch failed'); // what undici throws for a dropped connection

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'boxgrid-staging-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('a dropped connection is tried again, and the file arrives whole', async () => {
    const d = await mkdtemp(join(dir, 'a-'));
    const source = flaky(2, dropped);
    const path = await new InputCache(d, () => undefined, 1).get(sha, [source]);
    assert.equal(source.calls, 3);
    assert.deepEqual(await readFile(path), bytes);
    assert.deepEqual(await readdir(d), [sha], 'no partial file is left');
  });

  test('a retryable answer (503) is tried again; the pre-signed URL and the server take turns', async () => {
    const d = await mkdtemp(join(dir, 'b-'));
    const presigned = flaky(9, () => new BoxgridError('unavailable', 'the blob store is busy'));
    const server = flaky(1, () => new BoxgridError('unavailable', 'HTTP 503'));
    const fallbacks: Array<{ index: number; of: number }> = [];
    await new InputCache(d, (_sha, _e, source) => fallbacks.push(source), 1).get(sha, [presigned, server]);
    assert.equal(presigned.calls, 2);
    assert.equal(server.calls, 2);
    assert.deepEqual(fallbacks, [{ index: 0, of: 2 }, { index: 1, of: 2 }, { index: 0, of: 2 }]);
  });

  test('a permanent refusal (404, wrong bytes) fails at once, without a second call', async () => {
    for (const refusal of [new BoxgridError('not_found', 'blob not found'), new BoxgridError('digest_mismatch', 'arrived with another sha256')]) {
      const d = await mkdtemp(join(dir, 'c-'));
      const source = flaky(99, () => refusal);
      await assert.rejects(new InputCache(d, () => undefined, 1).get(sha, [source]), (e: unknown) => e === refusal);
      assert.equal(source.calls, 1, refusal.code);
      assert.deepEqual(await readdir(d), []);
    }
  });

  test('bytes that do not hash to the digest are refused and not kept', async () => {
    const d = await mkdtemp(join(dir, 'd-'));
    const wrong = (): Promise<Response> => Promise.resolve(new Response(Buffer.from('other bytes')));
    await assert.rejects(new InputCache(d, () => undefined, 1).get(sha, [wrong]), { code: 'digest_mismatch' });
    assert.deepEqual(await readdir(d), []);
  });

  test('a source that keeps failing is given up after four rounds', async () => {
    const d = await mkdtemp(join(dir, 'e-'));
    const source = flaky(99, dropped);
    await assert.rejects(new InputCache(d, () => undefined, 1).get(sha, [source]), /fetch failed/);
    assert.equal(source.calls, 4);
    assert.deepEqual(await readdir(d), []);
  });

  test('concurrent tasks needing one blob share one download', async () => {
    const d = await mkdtemp(join(dir, 'f-'));
    let calls = 0;
    const counted = (): Promise<Response> => {
      calls++;
      return ok();
    };
    const cache = new InputCache(d, () => undefined, 1);
    const [a, b] = await Promise.all([cache.get(sha, [counted]), cache.get(sha, [counted])]);
    assert.equal(a, b);
    assert.equal(calls, 1);
  });
});
