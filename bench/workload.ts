/** Request bodies the benchmarks send. Built before any timing starts. */

export interface BatchBodyOptions {
  app: string;
  jobs: number;
  /** Makes every run's args distinct from other runs'. */
  tag: string;
  labels?: Record<string, string>;
  /** Per-job labels, e.g. (i) => ({ shard: `s${i % 16}` }). */
  jobLabels?: (i: number) => Record<string, string>;
}

/**
 * A batch in the "jobs" list form: every job has its own args (the form the server cannot
 * shortcut, unlike "count"). Serialised once into a Buffer.
 */
export function batchBody(o: BatchBodyOptions): Buffer {
  const jobs = new Array<object>(o.jobs);
  for (let i = 0; i < o.jobs; i++) {
    const job: { args: string[]; labels?: Record<string, string> } = { args: ['--seed', String(i), '--input', `${o.tag}-${i}.dat`] };
    if (o.jobLabels) job.labels = o.jobLabels(i);
    jobs[i] = job;
  }
  return Buffer.from(JSON.stringify({ app: o.app, ...(o.labels ? { labels: o.labels } : {}), jobs }));
}

export function appBody(name: string): object {
  return { name, image: 'sci/bench-sim:1.0', command: ['simulate'], resources: { cores: 1, memoryMiB: 512 } };
}
