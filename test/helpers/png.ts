import { inflateSync } from 'node:zlib';
import { crc32, PNG_SIGNATURE } from '../../src/demo/png.js';

export interface DecodedPng {
  width: number;
  height: number;
  bitDepth: number;
  colourType: number;
  /** Bytes per pixel (1 grey, 3 RGB). */
  channels: number;
  /** The pixels, row after row, filter bytes removed. */
  pixels: Buffer;
  chunks: string[];
}

/**
 * Decodes the PNGs the demo writes (8-bit grey or RGB, not interlaced, filter type 0 on every
 * row), checking the signature and every chunk's CRC; anything else throws.
 */
export function decodePng(file: Buffer): DecodedPng {
  if (!file.subarray(0, 8).equals(PNG_SIGNATURE)) throw new Error('no PNG signature');
  const chunks: string[] = [];
  const idat: Buffer[] = [];
  let ihdr: Buffer | null = null;
  for (let at = 8; at < file.length; ) {
    const length = file.readUInt32BE(at);
    const type = file.subarray(at + 4, at + 8).toString('latin1');
    const body = file.subarray(at + 8, at + 8 + length);
    const crc = file.readUInt32BE(at + 8 + length);
    if (crc !== crc32(file.subarray(at + 4, at + 8), body)) throw new Error(`bad CRC in ${type}`);
    chunks.push(type);
    if (type === 'IHDR') ihdr = body;
    if (type === 'IDAT') idat.push(body);
    at += 12 + length;
  }
  if (!ihdr) throw new Error('no IHDR');
  const width = ihdr.readUInt32BE(0);
  const height = ihdr.readUInt32BE(4);
  const [bitDepth, colourType, , , interlace] = [ihdr[8]!, ihdr[9]!, ihdr[10]!, ihdr[11]!, ihdr[12]!];
  if (bitDepth !== 8 || (colourType !== 0 && colourType !== 2) || interlace !== 0) throw new Error(`unsupported PNG: depth ${bitDepth}, colour type ${colourType}, interlace ${interlace}`);
  const channels = colourType === 2 ? 3 : 1;
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  if (raw.length !== (stride + 1) * height) throw new Error(`IDAT holds ${raw.length} bytes, not ${(stride + 1) * height}`);
  const pixels = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    if (filter !== 0) throw new Error(`row ${y} has filter ${filter}`);
    raw.copy(pixels, y * stride, y * (stride + 1) + 1, (y + 1) * (stride + 1));
  }
  return { width, height, bitDepth, colourType, channels, pixels, chunks };
}

/** The pixel at (x, y) as an array of its channels. */
export function pixelAt(png: DecodedPng, x: number, y: number): number[] {
  const o = (y * png.width + x) * png.channels;
  return [...png.pixels.subarray(o, o + png.channels)];
}
