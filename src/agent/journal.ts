import { chmod, chown, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { atomicWrite } from './atomic-write.js';
import { join } from 'node:path';
import type { LogChunk, TaskAssignment, TaskOutcome, TaskUsage } from '../client/types.js';
import type { OutputFileOnDisk } from './staging.js';

/** How a task ended, kept on disk until the server has it. */
export interface PendingResult {
  outcome: TaskOutcome;
  durationMs: number;
  usage: TaskUsage | null;
  outputs: OutputFileOnDisk[];
  /** The output not yet sent in a heartbeat. */
  log: LogChunk | null;
  /** False between the task's end and the hashing of its outputs (a restart then does it). */
  collected: boolean;
}

export interface TaskDirs {
  root: string;
  inputs: string;
  outputs: string;
  checkpoint: string;
}

/** uid:gid tasks run as in containers unless the app says otherwise: nobody. */
export const TASK_UID = 65534;

/**
 * The agent's memory across restarts: one directory per task it holds, with the assignment
 * (task.json), the staged files, and once the task has ended its result (result.json) until
 * the server has acknowledged it. Files are replaced atomically (see atomic-write.ts).
 */
export class TaskJournal {
  private readonly dir: string;

  constructor(workDir: string) {
    this.dir = join(workDir, 'tasks');
  }

  dirs(taskId: number): TaskDirs {
    const root = join(this.dir, String(taskId));
    return { root, inputs: join(root, 'in'), outputs: join(root, 'out'), checkpoint: join(root, 'checkpoint') };
  }

  /**
   * Creates the task's directories. Container tasks run as nobody: inputs are readable by all,
   * outputs and checkpoints are handed to nobody (or opened to all when the agent is not root).
   * Native tasks run as the agent's own user (bubblewrap maps it to nobody inside), so their
   * directories stay the agent's.
   */
  async create(a: TaskAssignment): Promise<TaskDirs> {
    const d = this.dirs(a.taskId);
    await mkdir(this.dir, { recursive: true, mode: 0o711 });
    await mkdir(d.root, { recursive: true, mode: 0o711 });
    await mkdir(d.inputs, { recursive: true, mode: 0o755 });
    for (const writable of [d.outputs, d.checkpoint]) {
      await mkdir(writable, { recursive: true, mode: 0o700 });
      if (a.runtime !== 'docker') continue;
      if (process.getuid?.() === 0) await chown(writable, TASK_UID, TASK_UID);
      else await chmod(writable, 0o777);
    }
    await atomicWrite(join(d.root, 'task.json'), JSON.stringify(a), 0o600);
    return d;
  }

  async saveResult(taskId: number, r: PendingResult): Promise<void> {
    await atomicWrite(join(this.dirs(taskId).root, 'result.json'), JSON.stringify(r), 0o600);
  }

  /** Every task on disk, with its result when it has ended. Unreadable entries come back as `broken`. */
  async list(): Promise<{ tasks: Array<{ assignment: TaskAssignment; result: PendingResult | null }>; broken: number[] }> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const tasks: Array<{ assignment: TaskAssignment; result: PendingResult | null }> = [];
    const broken: number[] = [];
    for (const name of names) {
      if (!/^\d+$/.test(name)) continue;
      const root = join(this.dir, name);
      try {
        const assignment = JSON.parse(await readFile(join(root, 'task.json'), 'utf8')) as TaskAssignment;
        tasks.push({ assignment, result: await readResult(join(root, 'result.json')) });
      } catch {
        broken.push(Number(name)); // crashed before task.json was whole: nothing to resume
      }
    }
    return { tasks, broken };
  }

  async remove(taskId: number): Promise<void> {
    await rm(this.dirs(taskId).root, { recursive: true, force: true });
  }
}

/** The saved result, or null when there is none or it cannot be read (the task then counts as lost). */
async function readResult(path: string): Promise<PendingResult | null> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as PendingResult;
  } catch {
    return null;
  }
}
