import type { Command } from 'commander';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BoxgridClient } from '../../client/client.js';
import { summarize } from './watch.js';

/**
 * The control-plane tour: a fresh server on a fresh data dir, a Monte-Carlo app, a 10,000-job
 * sweep, queries, and a cancel. Agents that run the jobs arrive with the agent (issue 3); until
 * then the demo shows what the server holds and how a scientist drives it.
 */
export function registerDemo(program: Command): void {
  program
    .command('demo')
    .description('start a throw-away server and walk through apps, a 10,000-job sweep, queries and cancel')
    .option('--data <dir>', 'data dir to use (default: a fresh temporary one)')
    .option('--keep', 'keep the server running afterwards so you can explore it with other commands')
    .action(async (o: { data?: string; keep?: boolean }) => {
      const dataDir = o.data ?? (await mkdtemp(join(tmpdir(), 'boxgrid-demo-')));
      const say = (s: string) => process.stdout.write(s + '\n');
      // Loaded on demand: the server's dependencies would slow every other command's start.
      const { startServer } = await import('../../server/runtime.js');
      const server = await startServer({ dataDir, host: '127.0.0.1', port: 0 });
      const token = server.adminToken;
      if (!token) {
        await server.close();
        throw new Error(`${dataDir} already holds a boxgrid server's data; give an empty --data dir`);
      }
      const client = new BoxgridClient({ url: server.url, token });
      try {
        say(`1. started a server at ${server.url} on data dir ${dataDir}`);
        const app = await client.createApp('default', {
          name: 'montecarlo-pi',
          description: 'estimates pi by sampling points in the unit square',
          image: 'boxgrid/demo:1',
          command: ['/bin/pi'],
          resources: { cores: 1, memoryMiB: 64 },
          maxRuntimeSeconds: 60,
        });
        say(`2. registered app ${app.name} v${app.version}: ${app.resources.cores} core, ${app.resources.memoryMiB} MiB, image ${app.image}`);
        const t0 = performance.now();
        const sub = await client.submitBatch('default', {
          app: app.name,
          template: { args: ['--seed', '{seed}', '--samples', '{samples}'] },
          sweep: { seed: { from: 1, to: 2500 }, samples: { values: [1e5, 1e6, 1e7, 1e8] } },
          labels: { demo: 'pi' },
        });
        const batchId = sub.batch!.id;
        say(`3. submitted a 2,500 × 4 parameter sweep as batch ${batchId}: ${sub.jobCount} jobs in ${(performance.now() - t0).toFixed(0)} ms`);
        const page = await client.listJobs('default', { batch: batchId, limit: 3 });
        say(`4. newest jobs of the batch:`);
        for (const j of page.jobs) say(`     job ${j.id}: ${j.state}, args ${j.args.join(' ')}`);
        const { job } = await client.getJob('default', page.jobs[0]!.id);
        say(`5. job ${job.id} in detail: params ${JSON.stringify(job.params)}, ${job.attempts} attempts, labels ${JSON.stringify(job.labels)}`);
        const cancelled = await client.cancelJob('default', job.id);
        say(`6. cancelled job ${cancelled.job.id}: ${cancelled.job.state}`);
        const d = await client.getBatch('default', batchId);
        say(`7. batch ${batchId}: ${summarize(d.counts)}`);
        say(`\nNo agent is attached, so the jobs stay queued: agents that run them in containers come next.`);
        if (o.keep) {
          say(`\nThe server keeps running (Ctrl-C to stop). In another terminal:\n  export BOXGRID_URL=${server.url} BOXGRID_TOKEN=$(cat ${join(dataDir, 'admin.token')})\n  boxgrid jobs --batch ${batchId} --limit 5\n  boxgrid cancel --batch ${batchId}`);
          await new Promise<void>((resolve) => {
            process.once('SIGINT', resolve);
            process.once('SIGTERM', resolve);
          });
        }
      } finally {
        await server.close();
      }
      say(`Data kept in ${dataDir}; the admin token is in ${join(dataDir, 'admin.token')}.`);
    });
}
