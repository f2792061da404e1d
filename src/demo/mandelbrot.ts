/**
 * The demo's science app: the Mandelbrot set, computed as a parameter sweep of square tiles.
 * TILE_PROGRAM is the whole program one task runs (`node /app/tile.js X Y GRID SIZE ITERATIONS`
 * in the demo image, or the same text through `node -e` on the native runtime); the rest puts
 * the tiles back together into a picture.
 */
import type { RasterImage } from './png.js';

/** The part of the complex plane shown: real part from X0, imaginary part from Y0 down, SPAN wide and high. */
export const VIEW = { x0: -2.2, y0: 1.5, span: 3 } as const;

/** The output file each task writes. */
export const TILE_FILE = 'tile.pgm';

/**
 * One tile, as a plain CommonJS program for the node binary alone (no dependencies, nothing
 * but its arguments and /out). It writes a binary PGM (P5) of SIZE×SIZE grey levels: 0 for a
 * point in the set (no escape within ITERATIONS), else 1..255 growing with the escape time.
 */
export const TILE_PROGRAM = `'use strict';
// boxgrid demo: one tile of the Mandelbrot set.
// usage: node tile.js X Y GRID [SIZE] [ITERATIONS]   (tile X, Y of a GRID x GRID picture)
// writes ${TILE_FILE} (binary PGM, SIZE x SIZE grey levels; 0 = in the set) to $BOXGRID_OUT or /out
const fs = require('node:fs');
const path = require('node:path');
const [x, y, grid, size = 64, iterations = 256] = process.argv.slice(2).map(Number);
const ok = [x, y, grid, size, iterations].every(Number.isInteger) && x >= 0 && y >= 0 && x < grid && y < grid &&
  size >= 1 && size <= 4096 && iterations >= 1;
if (!ok) {
  console.error('usage: node tile.js X Y GRID [SIZE] [ITERATIONS], with 0 <= X, Y < GRID');
  process.exit(2);
}
const X0 = ${VIEW.x0}, Y0 = ${VIEW.y0}, SPAN = ${VIEW.span};
const width = grid * size;
const pixels = Buffer.alloc(size * size);
const started = Date.now();
let inside = 0, steps = 0;
for (let j = 0; j < size; j++) {
  const ci = Y0 - (SPAN * (y * size + j + 0.5)) / width;
  for (let i = 0; i < size; i++) {
    const cr = X0 + (SPAN * (x * size + i + 0.5)) / width;
    let zr = 0, zi = 0, k = 0;
    while (k < iterations && zr * zr + zi * zi <= 4) {
      const t = zr * zr - zi * zi + cr;
      zi = 2 * zr * zi + ci;
      zr = t;
      k++;
    }
    steps += k;
    if (k >= iterations) inside++;
    pixels[j * size + i] = k >= iterations ? 0 : 1 + Math.floor(254 * Math.sqrt(k / iterations));
  }
}
const out = process.env.BOXGRID_OUT || '/out';
fs.writeFileSync(path.join(out, '${TILE_FILE}'), Buffer.concat([Buffer.from('P5\\n' + size + ' ' + size + '\\n255\\n'), pixels]));
console.log('tile ' + x + ',' + y + ': ' + inside + ' of ' + size * size + ' points in the set, ' + steps + ' iterations, ' + (Date.now() - started) + ' ms');
`;

/** A tile's grey levels from its PGM file; throws on anything else. */
export function parseTile(file: Uint8Array, size: number): Uint8Array {
  const head = /^P5\s+(\d+)\s+(\d+)\s+(\d+)\s/.exec(Buffer.from(file.subarray(0, 64)).toString('latin1'));
  if (!head) throw new Error('not a binary PGM file');
  const [w, h, max] = [Number(head[1]), Number(head[2]), Number(head[3])];
  if (w !== size || h !== size || max !== 255) throw new Error(`a ${w}×${h} PGM of depth ${max}, not ${size}×${size} of 255`);
  const data = file.subarray(head[0].length);
  if (data.length !== size * size) throw new Error(`${data.length} bytes of pixels, not ${size * size}`);
  return data;
}

/** Colour stops over the escape-time level (0..1), dark blue through white to orange; the set itself is black. */
const STOPS: Array<[number, [number, number, number]]> = [
  [0, [0, 7, 100]], [0.16, [32, 107, 203]], [0.42, [237, 255, 255]], [0.6425, [255, 170, 0]], [0.8575, [0, 2, 0]], [1, [0, 7, 100]],
];
const PALETTE = (() => {
  const p = new Uint8Array(256 * 3);
  for (let v = 1; v < 256; v++) {
    const t = v / 255;
    let s = 0;
    while (s < STOPS.length - 2 && STOPS[s + 1]![0] < t) s++;
    const [t0, c0] = STOPS[s]!;
    const [t1, c1] = STOPS[s + 1]!;
    const f = (t - t0) / (t1 - t0);
    for (let c = 0; c < 3; c++) p[v * 3 + c] = Math.round(c0[c]! + (c1[c]! - c0[c]!) * f);
  }
  return p; // level 0 (in the set) stays black
})();

/** Missing tiles (a task that failed) are drawn mid-grey. */
export const MISSING_TILE_RGB = [128, 128, 128] as const;

/** The picture: `tiles` maps "x,y" to each tile's grey levels. */
export function assemble(grid: number, size: number, tiles: Map<string, Uint8Array>): RasterImage {
  const width = grid * size;
  const data = new Uint8Array(width * width * 3);
  for (let ty = 0; ty < grid; ty++) {
    for (let tx = 0; tx < grid; tx++) {
      const tile = tiles.get(`${tx},${ty}`);
      for (let j = 0; j < size; j++) {
        let o = ((ty * size + j) * width + tx * size) * 3;
        for (let i = 0; i < size; i++, o += 3) {
          if (!tile) {
            data.set(MISSING_TILE_RGB, o);
          } else {
            const v = tile[j * size + i]!;
            data[o] = PALETTE[v * 3]!;
            data[o + 1] = PALETTE[v * 3 + 1]!;
            data[o + 2] = PALETTE[v * 3 + 2]!;
          }
        }
      }
    }
  }
  return { width, height: width, channels: 3, data };
}
