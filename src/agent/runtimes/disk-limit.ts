import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** Shortest pause between two measurements of a task's directories. */
const MIN_INTERVAL_MS = 500;
/** A walk may take at most this share of the time: a task with very many files is measured less often. */
const MAX_WALK_SHARE = 0.1;

/**
 * Bytes the entries under `dirs` take on disk: allocated blocks (a sparse file costs what it
 * holds, not its length), a file with several hard links counted once. Only what this
 * process can read is counted: entries that vanish during the walk are skipped, and so is
 * whatever lies in a directory the task made unreadable to it (see docs/agent.md, "Sandbox").
 */
export async function diskUsage(dirs: string[]): Promise<number> {
  const linked = new Set<string>();
  const pending = [...dirs];
  let bytes = 0;
  while (pending.length > 0) {
    const dir = pending.pop()!;
    const names = await readdir(dir).catch(() => [] as string[]);
    for (const name of names) {
      const path = join(dir, name);
      const st = await lstat(path).catch(() => null);
      if (st === null) continue;
      if (st.isDirectory()) pending.push(path);
      else if (st.nlink > 1) {
        const key = `${st.dev}:${st.ino}`;
        if (linked.has(key)) continue;
        linked.add(key);
      }
      bytes += st.blocks * 512;
    }
  }
  return bytes;
}

export interface DiskWatch {
  /** Resolves as soon as a measurement finds more than the limit; never rejects. */
  over: Promise<void>;
  stop(): void;
}

/**
 * Measures `dirs` again and again while a task runs, and says when they hold more than
 * `limitBytes`. A poll, not a quota: between two measurements a task can write past the
 * limit (at its disk's speed, for at most the interval), which is why the runtime also caps
 * each file's size (RLIMIT_FSIZE) and measures once more when the task has ended.
 */
export function watchDisk(dirs: string[], limitBytes: number): DiskWatch {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let found: () => void = () => undefined;
  const over = new Promise<void>((resolve) => (found = resolve));
  const measure = async (): Promise<void> => {
    const t0 = Date.now();
    const bytes = await diskUsage(dirs);
    if (stopped) return;
    if (bytes > limitBytes) return found();
    const walkMs = Date.now() - t0;
    timer = setTimeout(() => void measure(), Math.max(MIN_INTERVAL_MS, walkMs / MAX_WALK_SHARE));
  };
  timer = setTimeout(() => void measure(), MIN_INTERVAL_MS);
  return {
    over,
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
