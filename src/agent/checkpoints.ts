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

/**
 * Unpacks a checkpoint into `dir`. node-tar refuses absolute paths and `..` on its own; links
 * and special files are skipped here. Files are given to `owner` (the task's user) when the
 * agent runs as root, so the task can write its next checkpoint over them.
 */
export async function unpackCheckpoint(file: string, dir: string, owner: number | null): Promise<void> {
  await tar.x({
    file, cwd: dir, strict: true, preservePaths: false,
    filter: (_path, entry) => 'type' in entry && (entry.type === 'File' || entry.type === 'Directory'),
    ...(owner === null ? {} : { uid: owner, gid: owner, preserveOwner: false }),
  });
}
