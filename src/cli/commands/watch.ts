import type { BoxgridClient } from '../../client/client.js';
import type { BatchDetail, Counts, JobView } from '../../client/types.js';
import { progressBar } from '../progress.js';

const finishedOf = (c: Counts) => c.succeeded + c.failed + c.cancelled;

export function summarize(c: Counts): string {
  return `${c.succeeded} succeeded, ${c.failed} failed, ${c.cancelled} cancelled, ${c.running} running, ${c.queued} queued`;
}

/**
 * Follows a batch until every job has ended, redrawing on each event (and at least every
 * `pollMs`, so a dropped stream only slows the bar down). Resolves with the final detail.
 */
export async function watchBatch(client: BoxgridClient, project: string, batchId: number, opts: { pollMs?: number; onUpdate?: (d: BatchDetail) => void } = {}): Promise<BatchDetail> {
  const bar = progressBar(`batch ${batchId}`);
  const abort = new AbortController();
  let wake: () => void = () => {};
  const stream = client.events(project, { batch: batchId }, () => wake(), abort.signal).catch(() => undefined);
  try {
    for (;;) {
      const d = await client.getBatch(project, batchId);
      bar.update(finishedOf(d.counts), d.batch.size, summarize(d.counts));
      opts.onUpdate?.(d);
      if (d.done) return d;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, opts.pollMs ?? 2000);
        wake = () => {
          clearTimeout(t);
          // Coalesce bursts of events into one refresh.
          setTimeout(resolve, 100);
        };
      });
    }
  } finally {
    abort.abort();
    await stream;
    bar.stop();
  }
}

const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

export async function watchJob(client: BoxgridClient, project: string, jobId: number, opts: { pollMs?: number } = {}): Promise<JobView> {
  const abort = new AbortController();
  let wake: () => void = () => {};
  const stream = client.events(project, { job: jobId }, () => wake(), abort.signal).catch(() => undefined);
  let last = '';
  try {
    for (;;) {
      const { job } = await client.getJob(project, jobId);
      if (job.state !== last && process.stderr.isTTY) process.stderr.write(`job ${jobId}: ${job.state}${job.reason ? ` (${job.reason})` : ''}\n`);
      last = job.state;
      if (TERMINAL.has(job.state)) return job;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, opts.pollMs ?? 2000);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  } finally {
    abort.abort();
    await stream;
  }
}
