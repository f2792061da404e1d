import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve, sep } from 'node:path';
import { gzipSync } from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import * as tar from 'tar';
import { CHECKPOINT_LIMITS, CheckpointRefused, packCheckpoint, refusedEntry, unpackCheckpoint } from '../../src/agent/checkpoints.js';

/**
 * A checkpoint is a tar.gz that any host running the job may have written, and the next host
 * unpacks it: so unpacking must refuse whatever could reach outside the task's /checkpoint
 * (links, devices, absolute paths, "..") and whatever would fill the disk (a tar bomb), and
 * must write nothing at all of a refused archive. No Docker needed.
 */

let root: string;
/** Where an escape would land: a place outside every case's directory. */
const OUTSIDE = join(tmpdir(), 'boxgrid-checkpoint-outside');
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'boxgrid-checkpoint-safety-'));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

let n = 0;
/** A fresh work area: `parent/` holding the archive and `parent/checkpoint/`, the target. */
async function area(): Promise<{ parent: string; dir: string; file: string }> {
  const parent = join(root, `case-${++n}`);
  const dir = join(parent, 'checkpoint');
  await mkdir(dir, { recursive: true });
  return { parent, dir, file: join(parent, 'c.tgz') };
}

interface RawEntry {
  path: string;
  /** tar type flag: '0' file, '1' hard link, '2' symlink, '3' char device, '4' block device, '5' directory, '6' FIFO */
  type?: string;
  body?: Buffer;
  /** the size the header claims (default: the body's) */
  size?: number;
  linkpath?: string;
  mode?: number;
}

/** One 512-byte ustar header, written by hand so that it can say anything. */
function header(e: RawEntry, path: string): Buffer {
  const b = Buffer.alloc(512);
  const str = (s: string, off: number, len: number) => b.write(s, off, len, 'utf8');
  const oct = (v: number, off: number, len: number) => str(v.toString(8).padStart(len - 1, '0') + '\0', off, len);
  str(path, 0, 100);
  oct(e.mode ?? 0o644, 100, 8);
  oct(0, 108, 8);
  oct(0, 116, 8);
  const size = e.size ?? e.body?.length ?? 0;
  if (size < 8 ** 11) oct(size, 124, 12);
  else {
    // base-256 for sizes past 8 GiB, as GNU tar writes them
    b[124] = 0x80;
    let v = BigInt(size);
    for (let i = 135; i > 124; i--) {
      b[i] = Number(v & 0xffn);
      v >>= 8n;
    }
  }
  oct(Math.floor(Date.now() / 1000), 136, 12);
  b.fill(' ', 148, 156);
  str(e.type ?? '0', 156, 1);
  if (e.linkpath) str(e.linkpath, 157, 100);
  str('ustar\0', 257, 6);
  str('00', 263, 2);
  let sum = 0;
  for (const byte of b) sum += byte;
  str(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8);
  return b;
}

const pad = (len: number): Buffer => Buffer.alloc((512 - (len % 512)) % 512);

/** A gzipped tar of the given entries; names that ustar cannot hold go in a pax header. */
function tarball(entries: RawEntry[], opts: { truncate?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    if (Buffer.byteLength(e.path) > 99) {
      const rec = (k: string, v: string) => {
        const body = ` ${k}=${v}\n`;
        let len = Buffer.byteLength(body);
        len += String(len).length;
        if (String(len).length !== String(len - String(len).length).length) len++;
        return `${len}${body}`;
      };
      const pax = Buffer.from(rec('path', e.path));
      parts.push(header({ path: 'PaxHeader', type: 'x', body: pax }, 'PaxHeader'), pax, pad(pax.length));
    }
    parts.push(header(e, e.path.slice(0, 99)));
    if (e.body) parts.push(e.body, pad(e.body.length));
  }
  if (!opts.truncate) parts.push(Buffer.alloc(1024));
  return gzipSync(Buffer.concat(parts), { level: 9 });
}

/** Every path under `dir`, relative. */
async function tree(dir: string): Promise<string[]> {
  return (await readdir(dir, { recursive: true })).map(String).sort();
}

/** Unpacks `entries` and expects a refusal naming `reason`, with nothing written anywhere. */
async function refused(entries: RawEntry[], reason: RegExp, limits?: { maxBytes: number; maxEntries: number }): Promise<void> {
  const { parent, dir, file } = await area();
  await writeFile(file, tarball(entries));
  const parentBefore = await tree(parent);
  await assert.rejects(unpackCheckpoint(file, dir, null, limits), (e: Error) => {
    assert.ok(e instanceof CheckpointRefused, `${e.name}: ${e.message}`);
    assert.match(e.message, /^checkpoint refused: /);
    assert.match(e.message, reason);
    return true;
  });
  assert.deepEqual(await tree(dir), [], 'nothing of a refused checkpoint is written');
  assert.deepEqual(await tree(parent), parentBefore, 'nothing is written beside it');
}

const file = (path: string, text = 'data\n'): RawEntry => ({ path, body: Buffer.from(text) });

describe('what a checkpoint may hold', () => {
  test('a checkpoint the agent packed comes back whole: files, directories, empty files, long names', async () => {
    const { parent, dir, file: tgz } = await area();
    const src = join(parent, 'src');
    const long = 'n'.repeat(200);
    await mkdir(join(src, 'sub', 'deeper'), { recursive: true });
    await writeFile(join(src, 'state.json'), '{"step":41}');
    await writeFile(join(src, 'sub', 'deeper', 'weights.bin'), randomBytes(70_000));
    await writeFile(join(src, 'empty'), '');
    await writeFile(join(src, long), 'long name');
    const packed = await packCheckpoint(src, tgz);
    assert.ok(packed !== null);
    await unpackCheckpoint(tgz, dir, null);
    assert.deepEqual(await tree(dir), await tree(src));
    for (const p of ['state.json', 'sub/deeper/weights.bin', 'empty', long]) {
      assert.deepEqual(await readFile(join(dir, p)), await readFile(join(src, p)), p);
    }
  });

  test('a checkpoint of mostly zeros (inflating more than 1000 times) comes back whole: the limits bound bytes, not ratios', async () => {
    const { parent, dir, file: tgz } = await area();
    const src = join(parent, 'src');
    await mkdir(src);
    await writeFile(join(src, 'sparse-array.bin'), Buffer.alloc(48 * 1024 * 1024));
    const packed = await packCheckpoint(src, tgz);
    assert.ok(packed !== null && packed.size < 100_000, `${packed?.size} bytes`);
    await unpackCheckpoint(tgz, dir, null);
    assert.equal((await stat(join(dir, 'sparse-array.bin'))).size, 48 * 1024 * 1024);
  });

  test('setuid, setgid and sticky bits are dropped; the permission bits stay', async () => {
    const { dir, file: tgz } = await area();
    await writeFile(tgz, tarball([{ ...file('suid'), mode: 0o4755 }, { ...file('sgid'), mode: 0o2750 }, { path: 'sticky/', type: '5', mode: 0o1777 }]));
    await unpackCheckpoint(tgz, dir, null);
    assert.equal((await stat(join(dir, 'suid'))).mode & 0o7000, 0);
    assert.equal((await stat(join(dir, 'suid'))).mode & 0o100, 0o100, 'the owner may still run it');
    assert.equal((await stat(join(dir, 'sgid'))).mode & 0o7000, 0);
    assert.equal((await stat(join(dir, 'sticky'))).mode & 0o7000, 0);
  });
});

describe('a hostile checkpoint is refused whole, and nothing of it is written', () => {
  const cases: Array<[string, RawEntry[], RegExp]> = [
    ['a path with ".."', [file('../escape.txt')], /"\.\.\/escape\.txt" has a "\.\." in its path/],
    ['".." in the middle', [file('a/../../escape.txt')], /has a "\.\." in its path/],
    ['a directory named ".."', [{ path: '../', type: '5' }], /has a "\.\." in its path/],
    ['".." written with backslashes', [file('a\\..\\..\\escape.txt')], /has a "\.\." in its path/],
    ['an absolute path', [file(`${OUTSIDE}/absolute-escape.txt`)], /has an absolute path/],
    ['a Windows drive path', [file('C:/escape.txt')], /has an absolute path/],
    ['a symlink to an absolute path', [{ path: 'passwd', type: '2', linkpath: '/etc/passwd' }], /"passwd" is a symbolic link/],
    ['a symlink out of the directory', [{ path: 'up', type: '2', linkpath: '../..' }], /is a symbolic link/],
    ['a symlink that stays inside (still refused: the packer never writes one)', [file('a'), { path: 'b', type: '2', linkpath: 'a' }], /is a symbolic link/],
    ['a symlink and then a file through it', [{ path: 'd', type: '2', linkpath: OUTSIDE }, file('d/through-link.txt')], /is a symbolic link/],
    ['a hard link to a host file', [{ path: 'shadow', type: '1', linkpath: '/etc/shadow' }], /is a hard link/],
    ['a hard link within', [file('a'), { path: 'b', type: '1', linkpath: 'a' }], /is a hard link/],
    ['a character device', [{ path: 'null', type: '3' }], /is a character device/],
    ['a block device', [{ path: 'sda', type: '4' }], /is a block device/],
    ['a FIFO', [{ path: 'pipe', type: '6' }], /is a FIFO/],
    ['good files first, then a bad one', [file('ok-1.txt'), file('ok-2.txt'), file('../late-escape.txt')], /has a "\.\." in its path/],
  ];
  for (const [name, entries, reason] of cases) test(name, () => refused(entries, reason));

  test('nothing reached outside either', () => {
    for (const p of ['escape.txt', 'late-escape.txt', 'absolute-escape.txt', 'through-link.txt']) {
      for (const d of [root, tmpdir(), OUTSIDE]) assert.ok(!existsSync(join(d, p)), join(d, p));
    }
  });
});

describe('a tar bomb is refused before it is expanded', () => {
  test('more entries than the limit (and exactly the limit is fine)', async () => {
    const entries = Array.from({ length: 51 }, (_, i) => file(`f${i}`, ''));
    await refused(entries, /more than 50 entries/, { maxBytes: 1e9, maxEntries: 50 });
    const { dir, file: tgz } = await area();
    await writeFile(tgz, tarball(entries.slice(0, 50)));
    await unpackCheckpoint(tgz, dir, null, { maxBytes: 1e9, maxEntries: 50 });
    assert.equal((await tree(dir)).length, 50);
  });

  test('files adding up to more bytes than the limit (and exactly the limit is fine)', async () => {
    const entries = [file('a', 'x'.repeat(600)), file('b', 'y'.repeat(401))];
    await refused(entries, /add up to more than 1000 bytes/, { maxBytes: 1000, maxEntries: 10 });
    const { dir, file: tgz } = await area();
    await writeFile(tgz, tarball([file('a', 'x'.repeat(600)), file('b', 'y'.repeat(400))]));
    await unpackCheckpoint(tgz, dir, null, { maxBytes: 1000, maxEntries: 10 });
    assert.equal((await stat(join(dir, 'b'))).size, 400);
  });

  test('highly compressible content: 32 MiB of zeros in a 32 KiB archive, limit 1 MiB', async () => {
    const big = Buffer.alloc(32 * 1024 * 1024);
    const { dir, file: tgz } = await area();
    const gz = tarball([{ path: 'zeros', body: big }]);
    assert.ok(gz.length < 256 * 1024, `${gz.length} bytes`);
    await writeFile(tgz, gz);
    await assert.rejects(unpackCheckpoint(tgz, dir, null, { maxBytes: 1024 * 1024, maxEntries: 10 }), /checkpoint refused: its files add up to more than 1048576 bytes/);
    assert.deepEqual(await tree(dir), []);
  });

  test('a header that claims a huge (sparse-like) file is refused by the default limits from the header alone', async () => {
    // 1 TiB claimed, no data sent: the refusal comes from the header, before any data is read.
    const { dir, file: tgz } = await area();
    await writeFile(tgz, tarball([{ path: 'huge', size: 1024 ** 4 }], { truncate: true }));
    await assert.rejects(unpackCheckpoint(tgz, dir, null), /checkpoint refused: its files add up to more than 17179869184 bytes/);
    assert.deepEqual(await tree(dir), []);
    assert.deepEqual(CHECKPOINT_LIMITS, { maxBytes: 16 * 1024 ** 3, maxEntries: 100_000 });
  });

  test('entry types tar itself would skip (a GNU sparse file, an unknown type) are refused, not skipped', async () => {
    await refused([file('ok'), { path: 'sparse', type: 'S', size: 0 }], /"sparse" is of type SparseFile/);
    await refused([{ path: 'odd', type: 'Q', size: 0 }], /"odd" is of type Unsupported/);
  });

  test('what is not a tar.gz at all is refused, with the reason', async () => {
    const { dir, file: tgz } = await area();
    await writeFile(tgz, gzipSync(Buffer.from('not a tar archive, just text'.repeat(40))));
    await assert.rejects(unpackCheckpoint(tgz, dir, null), (e: Error) => e instanceof CheckpointRefused);
    await writeFile(tgz, tarball([{ path: 'l', type: '2' }])); // a symlink with no target
    await assert.rejects(unpackCheckpoint(tgz, dir, null), (e: Error) => e instanceof CheckpointRefused && /not a readable tar\.gz|symbolic link/.test(e.message));
    assert.deepEqual(await tree(dir), []);
  });
});

describe('the rule, as a property', () => {
  const segment = fc.oneof(
    fc.constantFrom('..', '.', '', 'a', 'b.txt', '...', '..a', 'a..'),
    fc.string({ unit: fc.constantFrom('a', '.', '/', '\\', '-', '_', ':', 'C', '\0'), minLength: 1, maxLength: 6 }),
  );
  const anyPath = fc.array(segment, { minLength: 1, maxLength: 6 }).chain((segs) => fc.constantFrom(segs.join('/'), segs.join('\\'), `/${segs.join('/')}`));

  test('any path a file entry may have stays inside the directory it is unpacked into', () => {
    const dir = resolve('/srv/task/checkpoint');
    fc.assert(
      fc.property(anyPath, (path) => {
        if (refusedEntry({ path, type: 'File', size: 0 }) !== null) return;
        // as tar resolves it on POSIX, and as it would be if "\" were a separator
        for (const p of [path, path.replace(/\\/g, '/')]) {
          const target = resolve(dir, p);
          assert.ok(target === dir || target.startsWith(dir + sep), `${JSON.stringify(path)} → ${target}`);
        }
      }),
      { numRuns: 2000 },
    );
  });

  test('any path with a ".." segment, an absolute start or a NUL is refused, whatever it holds besides', () => {
    const hostile = fc.oneof(
      fc.tuple(fc.array(segment, { maxLength: 3 }), fc.array(segment, { maxLength: 3 }), fc.constantFrom('/', '\\')).map(([a, b, s]) => [...a, '..', ...b].join(s)),
      anyPath.map((p) => `/${p}`),
      anyPath.map((p) => `${p}\0`),
    );
    fc.assert(fc.property(hostile, (path) => refusedEntry({ path, type: 'File', size: 0 }) !== null), { numRuns: 2000 });
  });

  test('only files and directories, whatever the path', () => {
    fc.assert(
      fc.property(fc.constantFrom('SymbolicLink', 'Link', 'CharacterDevice', 'BlockDevice', 'FIFO', 'SparseFile', 'ContiguousFile', 'GNUDumpDir', 'Unsupported'), fc.constantFrom('a', 'dir/a', 'x.bin'), (type, path) => {
        const r = refusedEntry({ path, type, size: 0 });
        assert.equal(r === null, type === 'ContiguousFile', `${type}: ${r}`);
      }),
    );
  });
});

// The tar module this relies on: listing sees the same entries the checks do.
test('a hand-made archive reads as tar itself reads it (the helper is sound)', async () => {
  const { file: tgz } = await area();
  await writeFile(tgz, tarball([file('a'), { path: 'l', type: '2', linkpath: '/etc/passwd' }, file('x'.repeat(150))]));
  const seen: Array<[string, string]> = [];
  await tar.t({ file: tgz, onReadEntry: (e) => void seen.push([e.path, e.type]) });
  assert.deepEqual(seen, [['a', 'File'], ['l', 'SymbolicLink'], ['x'.repeat(150), 'File']]);
});
