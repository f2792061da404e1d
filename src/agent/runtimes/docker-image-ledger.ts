import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';

/** One image boxgrid pulled: the references it pulled it by, and when it last ran a task. */
export interface LedgerEntry {
  /** The engine's image id (sha256 of the config). */
  id: string;
  refs: string[];
  pulledAt: number;
  lastUsedAt: number;
}

interface LedgerFile {
  version: 1;
  images: Record<string, Omit<LedgerEntry, 'id'>>;
}

/** One queue per file, so that read-modify-write cycles of runtimes in one process never interleave. */
const queues = new Map<string, Promise<unknown>>();

/**
 * The images boxgrid pulled itself, kept in a small JSON file so that pruning survives agent
 * restarts and never touches an image the host's owner put there. Written whole to a temporary
 * file and renamed into place, so a crash leaves the old or the new state, never half of one.
 */
export class ImageLedger {
  readonly path: string;

  constructor(path: string) {
    this.path = resolve(path);
  }

  async entries(): Promise<LedgerEntry[]> {
    const file = await this.serial(() => this.read());
    return Object.entries(file.images).map(([id, e]) => ({ id, ...e }));
  }

  async recordPull(id: string, ref: string, now = Date.now()): Promise<void> {
    await this.update((f) => {
      const e = f.images[id] ?? { refs: [], pulledAt: now, lastUsedAt: now };
      if (!e.refs.includes(ref)) e.refs.push(ref);
      e.lastUsedAt = now;
      f.images[id] = e;
    });
  }

  /** Marks a use; images boxgrid did not pull stay untracked. */
  async touch(id: string, now = Date.now()): Promise<void> {
    await this.update((f) => {
      const e = f.images[id];
      if (e) e.lastUsedAt = Math.max(e.lastUsedAt, now);
    });
  }

  async forget(id: string): Promise<void> {
    await this.update((f) => {
      delete f.images[id];
    });
  }

  /** Refs that are no longer boxgrid's; the image is forgotten with its last one. */
  async dropRefs(id: string, refs: string[]): Promise<void> {
    if (refs.length === 0) return;
    await this.update((f) => {
      const e = f.images[id];
      if (!e) return;
      e.refs = e.refs.filter((r) => !refs.includes(r));
      if (e.refs.length === 0) delete f.images[id];
    });
  }

  private update(change: (f: LedgerFile) => void): Promise<void> {
    return this.serial(async () => {
      const f = await this.read();
      change(f);
      await this.write(f);
    });
  }

  private serial<T>(op: () => Promise<T>): Promise<T> {
    const next = (queues.get(this.path) ?? Promise.resolve()).then(op, op);
    queues.set(this.path, next.catch(() => undefined));
    return next;
  }

  private async read(): Promise<LedgerFile> {
    let text: string;
    try {
      text = await readFile(this.path, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return empty();
      throw e;
    }
    try {
      const f = JSON.parse(text) as LedgerFile;
      return f.version === 1 && typeof f.images === 'object' && f.images !== null ? f : empty();
    } catch {
      // An unreadable ledger forgets what boxgrid pulled: those images are then never pruned,
      // which errs on the safe side (an owner's image is never taken for ours).
      return empty();
    }
  }

  private async write(f: LedgerFile): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    const tmp = `${this.path}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(f, null, 1));
    await rename(tmp, this.path);
  }
}

function empty(): LedgerFile {
  return { version: 1, images: {} };
}
