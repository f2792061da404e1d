import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { promisify } from 'node:util';
import { inflateSync } from 'node:zlib';
import { assemble, parseTile, TILE_FILE, TILE_PROGRAM } from '../../src/demo/mandelbrot.js';
import { crc32, encodePng, PNG_SIGNATURE } from '../../src/demo/png.js';
import { decodePng, pixelAt } from '../helpers/png.js';

const run = promisify(execFile);

describe('the demo PNG encoder', () => {
  test('crc32 is the standard CRC-32 (check value of "123456789")', () => {
    assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
    assert.equal(crc32(Buffer.from('1234'), Buffer.from('56789')), 0xcbf43926, 'over several parts as over one');
  });

  test('an RGB image: signature, IHDR, and IDAT that inflates to filter-0 rows of the bytes given', () => {
    const data = Uint8Array.from({ length: 3 * 2 * 3 }, (_, i) => i * 7);
    const png = encodePng({ width: 3, height: 2, channels: 3, data });
    assert.deepEqual(png.subarray(0, 8), PNG_SIGNATURE);
    assert.equal(png.readUInt32BE(8), 13, 'IHDR is 13 bytes');
    assert.equal(png.subarray(12, 16).toString('latin1'), 'IHDR');
    assert.equal(png.readUInt32BE(16), 3);
    assert.equal(png.readUInt32BE(20), 2);
    assert.deepEqual([...png.subarray(24, 29)], [8, 2, 0, 0, 0], 'depth 8, truecolour, deflate, filter 0, no interlace');
    const idatAt = 8 + 25;
    assert.equal(png.subarray(idatAt + 4, idatAt + 8).toString('latin1'), 'IDAT');
    const raw = inflateSync(png.subarray(idatAt + 8, idatAt + 8 + png.readUInt32BE(idatAt)));
    assert.deepEqual([...raw], [0, ...data.subarray(0, 9), 0, ...data.subarray(9)]);
    assert.deepEqual(png.subarray(-12), Buffer.from([0, 0, 0, 0, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82]), 'IEND with its well-known CRC');
    const decoded = decodePng(png); // every chunk's CRC checked
    assert.deepEqual(decoded.chunks, ['IHDR', 'IDAT', 'IEND']);
    assert.deepEqual(pixelAt(decoded, 2, 1), [...data.subarray(15, 18)]);
  });

  test('a grey image, and a refusal of data of the wrong size', () => {
    const decoded = decodePng(encodePng({ width: 2, height: 2, channels: 1, data: Uint8Array.from([0, 64, 128, 255]) }));
    assert.equal(decoded.colourType, 0);
    assert.deepEqual([...decoded.pixels], [0, 64, 128, 255]);
    assert.throws(() => encodePng({ width: 2, height: 2, channels: 3, data: new Uint8Array(4) }), /not 12/);
  });
});

describe('the Mandelbrot tile program', () => {
  test('run by node as the native runtime runs it, it writes a PGM tile that assembles into a picture', async () => {
    const out = await mkdtemp(join(tmpdir(), 'boxgrid-tile-'));
    try {
      // A 1 × 1 grid: the whole view in one 16-pixel tile.
      const { stdout } = await run(process.execPath, ['-e', TILE_PROGRAM, '--', 'tile.js', '0', '0', '1', '16', '100'], { env: { BOXGRID_OUT: out } });
      assert.match(stdout, /^tile 0,0: \d+ of 256 points in the set/);
      const file = await readFile(join(out, TILE_FILE));
      const tile = parseTile(file, 16);
      assert.equal(tile[8 * 16 + 5], 0, 'centre-left (about -1.1 + 0i) is in the set');
      assert.ok(tile[0]! > 0, 'the corner (-2.2 + 1.5i) escapes');
      const picture = assemble(1, 16, new Map([['0,0', tile]]));
      assert.equal(picture.width, 16);
      assert.deepEqual([...picture.data.subarray((8 * 16 + 5) * 3, (8 * 16 + 5) * 3 + 3)], [0, 0, 0], 'the set is black');
      assert.throws(() => parseTile(file, 8), /not 8×8/);
      await assert.rejects(run(process.execPath, ['-e', TILE_PROGRAM, '--', 'tile.js', '3', '0', '2'], { env: { BOXGRID_OUT: out } }), /usage/);
    } finally {
      await rm(out, { recursive: true, force: true });
    }
  });
});
