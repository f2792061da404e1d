import type { BoxgridClient } from '../../client/client.js';
import type { BatchDetail, Counts, JobView } from '../../client/types.js';
import { jobMachine } from '../../domain/states.js';
import { progressBar } from '../progress.js';

const finishedOf = (c: Counts) => c.succeeded + c.failed + c.cancelled;

export function summarize(c: Counts): string {
  return `${c.succeeded} succeeded, ${c.failed} failed, ${c.cancelled} cancelled, ${c.running} running, ${c.queued} queued`;
}

/**
 * Re-reads an object on each event of its stream, and at least every `pollMs` (so a dropped
 * stream only slows the view down), until `done` says it has ended. Events arriving within
 * `coalesceMs` of each other cause one read.
 */
async function follow<T>(
  client: BoxgridClient,
  project: string,
  filter: { batch?: number; job?: number },
  read: () => Promise<T>,
  done: (value: T) => boolean,
  opts: { pollMs: number; coalesceMs: number },
): Promise<T> {
  const abort = new AbortController();
  let wake: () => void = () => {};
  const stream = client.events(project, filter, () => wake(), abort.signal).catch(() => undefined);
  try {
    for (;;) {
      const value = await read();
      if (done(value)) return value;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, opts.pollMs);
        wake = () => {
          clearTimeout(t);
          setTimeout(resolve, opts.coalesceMs);
        };
      });
    }
  } finally {
    abort.abort();
    await stream;
  }
}

/** Follows a batch with a progress bar until every job has ended; resolves with the final detail. */
export async function watchBatch(client: BoxgridClient, project: string, batchId: number, opts: { pollMs?: number; onUpdate?: (d: BatchDetail) => void } = {}): Promise<BatchDetail> {
  const bar = progressBar(`batch ${batchId}`);
  try {
    return await follow(
      client, project, { batch: batchId },
      async () => {
        const d = await client.getBatch(project, batchId);
        bar.update(finishedOf(d.counts), d.batch.size, summarize(d.counts));
        opts.onUpdate?.(d);
        return d;
      },
      (d) => d.done,
      { pollMs: opts.pollMs ?? 2000, coalesceMs: 100 }, // a batch's events come in bursts
    );
  } finally {
    bar.stop();
  }
}

/** Follows one job, printing each state it reaches, until it ends. */
export async function watchJob(client: BoxgridClient, project: string, jobId: number, opts: { pollMs?: number } = {}): Promise<JobView> {
  let last = '';
  return follow(
    client, project, { job: jobId },
    async () => {
      const { job } = await client.getJob(project, jobId);
      if (job.state !== last && process.stderr.isTTY) process.stderr.write(`job ${jobId}: ${job.state}${job.reason ? ` (${job.reason})` : ''}\n`);
      last = job.state;
      return job;
    },
    (job) => jobMachine.isTerminal(job.state),
    { pollMs: opts.pollMs ?? 2000, coalesceMs: 0 },
  );
}
