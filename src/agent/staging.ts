import { chmod, copyFile, link, lstat, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { hashFile } from '../client/client.js';
import { isOutputName } from '../domain/file-names.js';
import { saveVerified } from '../client/save-verified.js';
import { isBoxgridError } from '../domain/errors.js';

/**
 * The host's cache of input files, by content: each blob is fetched once, verified against its
 * sha256 on the way in, and then linked into every task that needs it. Concurrent tasks that
 * need the same blob share one download.
 */
export class InputCache {
  private readonly inFlight = new Map<string, Promise<string>>();

  /**
   * `onFallback` hears why a source failed when another one is tried next; `retryMs` is the
   * first pause before the sources are tried again after a transient failure of all of them.
   */
  constructor(
    private readonly dir: string,
    private readonly onFallback: (sha256: string, error: Error, source: { index: number; of: number }) => void = () => {},
    private readonly retryMs = 250,
  ) {}

  /**
   * The cached file for `sha256`, fetched if missing from the first of `sources` that delivers
   * the right bytes (a pre-signed URL, say, then the server).
   */
  async get(sha256: string, sources: Array<() => Promise<Response>>): Promise<string> {
    const path = join(this.dir, sha256);
    if (await exists(path)) return path;
    let pending = this.inFlight.get(sha256);
    if (!pending) {
      pending = this.fetch(sha256, path, sources).finally(() => this.inFlight.delete(sha256));
      this.inFlight.set(sha256, pending);
    }
    return pending;
  }

  private async fetch(sha256: string, path: string, sources: Array<() => Promise<Response>>): Promise<string> {
    if (sources.length === 0) throw new Error(`no source for blob ${sha256}`);
    await mkdir(this.dir, { recursive: true });
    // A dropped connection is the network's trouble, not the task's: every source is tried
    // again after a pause, a few times, before staging fails (and the task with it).
    for (let round = 0; ; round++) {
      for (const [i, fetchBody] of sources.entries()) {
        try {
          // Verified on the way in and renamed into place: the cache never holds a partial or wrong file.
          await saveVerified(await fetchBody(), path, sha256, 0o444);
          return path;
        } catch (e) {
          const last = i === sources.length - 1;
          if (last && (round >= FETCH_ROUNDS - 1 || !transient(e))) throw e;
          this.onFallback(sha256, e as Error, { index: i, of: sources.length });
        }
      }
      await new Promise((r) => setTimeout(r, this.retryMs * 2 ** round));
    }
  }

  /**
   * Removes every cached file but `keep` (the inputs and checkpoints of the tasks the agent
   * holds), and partial downloads a crash left behind. Run at start, so the cache holds at
   * most what one run of the agent fetched.
   */
  async keepOnly(keep: Set<string>): Promise<void> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    await Promise.all(names.filter((n) => !keep.has(n)).map((n) => rm(join(this.dir, n), { force: true })));
  }
}

/** Rounds over the sources before a download fails for good (pauses of 0.25, 0.5, 1 s between them). */
const FETCH_ROUNDS = 4;

/**
 * Worth another try: the network's trouble (a dropped connection, a body cut off, which undici
 * reports as an error) or an answer the server calls retryable. Not wrong bytes: a blob that is
 * corrupt where it is stored stays so.
 */
function transient(e: unknown): boolean {
  return !isBoxgridError(e) || e.retryable;
}

/** Puts a cached file into a task's input dir under its name: a hard link, or a copy across filesystems. */
export async function placeInput(cached: string, dir: string, name: string): Promise<void> {
  const target = join(dir, name);
  try {
    await link(cached, target);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EXDEV') throw e;
    await copyFile(cached, target);
    await chmod(target, 0o444);
  }
}

export interface OutputFileOnDisk {
  name: string;
  path: string;
  sha256: string;
  size: number;
}

/**
 * Every regular file directly in `dir`, hashed. Anything else a task leaves there — a symlink
 * (which could point at the agent's own files), a directory, a device or a pipe — and any file
 * too big or badly named is refused, with the reason: the task's outputs are then refused
 * whole rather than delivered in part.
 */
export async function collectOutputs(dir: string, maxFileBytes: number): Promise<{ files: OutputFileOnDisk[]; refused: string[] }> {
  const files: OutputFileOnDisk[] = [];
  const refused: string[] = [];
  for (const name of (await readdir(dir)).sort()) {
    const path = join(dir, name);
    const st = await lstat(path); // lstat: never follow a link the task made
    if (!isOutputName(name)) refused.push(`"${name}" is not a plain file name (letters, digits, ".", "_", "-")`);
    else if (st.isSymbolicLink()) refused.push(`"${name}" is a symbolic link`);
    else if (!st.isFile()) refused.push(`"${name}" is ${st.isDirectory() ? 'a directory' : 'not a regular file'}`);
    else if (st.size > maxFileBytes) refused.push(`"${name}" is ${st.size} bytes, over the ${maxFileBytes}-byte limit`);
    else files.push({ name, path, ...(await hashFile(path)) });
  }
  return { files, refused };
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}
