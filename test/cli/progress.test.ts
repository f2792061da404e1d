import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PassThrough } from 'node:stream';
import { formatBytes, progressBar } from '../../src/cli/progress.js';
import { counted } from '../../src/cli/commands/results.js';

test('progressBar writes nothing when the stream is not a terminal', () => {
  const out = new PassThrough();
  let written = '';
  out.on('data', (d) => (written += d));
  const bar = progressBar('x', out as unknown as NodeJS.WriteStream);
  bar.update(1, 2);
  bar.stop();
  assert.equal(written, '');
});

test('counted passes a download through unchanged and reports the bytes as they stream', async () => {
  const data = new Uint8Array(100_000).fill(3);
  const seen: Array<[number, number]> = [];
  let sum = 0;
  const res = counted(new Response(data), { update: (d, t) => seen.push([d, t]), stop() {} }, (n) => (sum += n), data.length, 'f');
  const back = new Uint8Array(await res.arrayBuffer());
  assert.deepEqual(back, data);
  assert.ok(seen.length > 0);
  assert.deepEqual(seen.at(-1), [data.length, data.length]);
});

test('byte counts read as MiB', () => {
  assert.equal(formatBytes(90_000_000), '85.8 MiB');
  assert.equal(formatBytes(2_395_136, false), '2.3');
});
