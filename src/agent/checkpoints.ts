import { createReadStream } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import * as tar from 'tar';
import { hashFile } from '../client/client.js';

/**
 * A task's /checkpoint directory as one gzipped tar, so that a job can move between hosts. Only
 * regular files and directories travel: links could point outside the directory on the host
 * that unpacks them, and a checkpoint may come from an untrusted host.
 */
export async function packCheckpoint(dir: string, file: string): Promise<{ sha256: string; size: number } | null> {
  const entries = await readdir(dir);
  if (entries.length === 0) return null;
  await rm(file, { force: true });
  await tar.c(
    { gzip: true, cwd: dir, file, portable: true, filter: (_path, st) => ('isFile' in st ? st.isFile() || st.isDirectory() : true) },
    entries,
  );
  return hashFile(file);
}

/** How much a checkpoint may unpack to: bytes of its files, and entries (files and directories). */
export interface CheckpointLimits {
  maxBytes: number;
  maxEntries: number;
}

/**
 * The bounds when the caller gives none: a checkpoint is a blob (at most --max-blob-bytes, 4 GiB
 * by default, compressed), and gzip expands up to ~1000 times, so without a bound a small
 * upload could fill the host's disk or inodes ("tar bomb").
 */
export const CHECKPOINT_LIMITS: CheckpointLimits = { maxBytes: 16 * 1024 ** 3, maxEntries: 100_000 };

/**
 * tar's own guard against bombs refuses archives that inflate more than 1000 times, which an
 * honest checkpoint of mostly zeros (a sparse array, a preallocated file) does: the limits above
 * bound what is written instead, whatever the ratio.
 */
const NO_RATIO_LIMIT = { maxDecompressionRatio: Number.POSITIVE_INFINITY };

/** A checkpoint that is refused before anything of it is written. */
export class CheckpointRefused extends Error {
  constructor(message: string) {
    super(`checkpoint refused: ${message}`);
    this.name = 'CheckpointRefused';
  }
}

/** What the packer writes: regular files (in their three tar spellings) and directories. */
const ACCEPTED_TYPES = new Set(['File', 'OldFile', 'ContiguousFile', 'Directory']);
const TYPE_NAMES: Record<string, string> = {
  SymbolicLink: 'a symbolic link', Link: 'a hard link', CharacterDevice: 'a character device', BlockDevice: 'a block device', FIFO: 'a FIFO',
};

interface EntryHeader {
  path: string;
  type: string;
  size: number;
}

/** Why an entry may not be unpacked, or null. Paths are judged as written in the archive. */
export function refusedEntry(e: EntryHeader): string | null {
  const shown = JSON.stringify(e.path.length > 200 ? `${e.path.slice(0, 200)}…` : e.path);
  if (!ACCEPTED_TYPES.has(e.type)) return `entry ${shown} is ${TYPE_NAMES[e.type] ?? `of type ${e.type}`}; only files and directories are accepted`;
  if (e.path === '' || e.path.includes('\0')) return `entry ${shown} has an empty name or a NUL in it`;
  if (e.path.startsWith('/') || e.path.startsWith('\\') || /^[A-Za-z]:/.test(e.path)) return `entry ${shown} has an absolute path`;
  if (e.path.split(/[/\\]/).includes('..')) return `entry ${shown} has a ".." in its path`;
  return null;
}

/**
 * Reads every header of a checkpoint (nothing is written) and fails with CheckpointRefused at
 * the first entry that is not a plain file or directory with a relative path free of "..", or
 * once the entries or their sizes pass `limits`: reading stops there, so a bomb is not expanded.
 */
export async function checkCheckpoint(file: string, limits: CheckpointLimits = CHECKPOINT_LIMITS): Promise<{ entries: number; bytes: number }> {
  let entries = 0;
  let bytes = 0;
  const input = createReadStream(file);
  const parser: tar.Parser = new tar.Parser({
    strict: true, ...NO_RATIO_LIMIT,
    onReadEntry: (entry) => {
      const problem =
        refusedEntry(entry) ??
        (++entries > limits.maxEntries ? `it has more than ${limits.maxEntries} entries` : null) ??
        ((bytes += entry.size) > limits.maxBytes ? `its files add up to more than ${limits.maxBytes} bytes` : null);
      if (problem !== null) {
        input.destroy();
        parser.abort(new CheckpointRefused(problem));
      }
      entry.resume();
    },
  });
  // What tar itself skips (types it does not know, oversized metadata) is refused too.
  parser.on('ignoredEntry', (entry: tar.ReadEntry) => {
    input.destroy();
    parser.abort(new CheckpointRefused(refusedEntry(entry) ?? `entry ${JSON.stringify(entry.path)} of type ${entry.type} is not accepted`));
  });
  await new Promise<void>((resolve, reject) => {
    const fail = (e: Error): void => reject(e instanceof CheckpointRefused ? e : new CheckpointRefused(`it is not a readable tar.gz (${e.message})`));
    parser.on('error', fail);
    input.on('error', fail);
    parser.on('end', resolve);
    input.pipe(parser as unknown as NodeJS.WritableStream);
  });
  return { entries, bytes };
}

/**
 * Unpacks a checkpoint into `dir`, after `checkCheckpoint` has accepted all of it: a hostile
 * archive (a link, a device, an absolute path or "..", too many entries or bytes) is refused as
 * a whole, with nothing written. The same rules filter the extraction itself, and the setuid,
 * setgid and sticky bits are dropped. Files are given to `owner` (the task's user) when the agent
 * runs as root, so the task can write its next checkpoint over them.
 */
export async function unpackCheckpoint(file: string, dir: string, owner: number | null, limits: CheckpointLimits = CHECKPOINT_LIMITS): Promise<void> {
  await checkCheckpoint(file, limits);
  let entries = 0;
  let bytes = 0;
  await tar.x({
    file, cwd: dir, strict: true, preservePaths: false, ...NO_RATIO_LIMIT,
    filter: (_path, entry) => {
      if (!('type' in entry) || refusedEntry(entry) !== null) return false;
      // The archive was checked a moment ago; this only holds if it changed since.
      if (++entries > limits.maxEntries || (bytes += entry.size) > limits.maxBytes) return false;
      if (typeof entry.mode === 'number') entry.mode &= 0o777;
      return true;
    },
    ...(owner === null ? {} : { uid: owner, gid: owner, preserveOwner: false }),
  });
}
