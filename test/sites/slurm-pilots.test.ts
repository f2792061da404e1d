// Slurm pilots against a real single-node Slurm (scripts/start-slurm.sh): `boxgrid site slurm`
// submits pilot jobs through sbatch, each runs `boxgrid agent` (native runtime) on the node,
// pulls tasks from a real server, and exits when idle.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BoxgridClient } from '../../src/client/client.js';
import { PILOT_JOB_NAME } from '../../src/sites/slurm/slurm-site.js';
import { runCli } from '../cli/run-cli.js';
import { eventually, untilBatchDone } from '../helpers/grid.js';
import { bwrapSuite } from '../helpers/native.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { queuedJobs, slurmSuite } from '../helpers/slurm.js';

const slurm = await slurmSuite();
const bwrap = await bwrapSuite();
const skip = slurm.skip || bwrap.skip;
const P = 'default';

describe('Slurm pilots (boxgrid site slurm)', { skip }, () => {
  let s: TestServer;
  let admin: BoxgridClient;
  let workRoot: string;
  before(async () => {
    s = await startTestServer({ timing: { leaseSeconds: 60, heartbeatSeconds: 2, idlePollSeconds: 1, sweepSeconds: 5 } });
    admin = new BoxgridClient({ url: s.url, token: s.adminToken });
    workRoot = await mkdtemp(join(tmpdir(), 'boxgrid-pilots-'));
    await admin.createApp(P, {
      name: 'count', image: 'unused/image:1', command: ['/never'], nativeCommand: ['sh', '-c'],
      resources: { cores: 0.5, memoryMiB: 64, diskMiB: 16 }, maxAttempts: 1, maxRuntimeSeconds: 120,
    });
  });
  after(async () => {
    await s?.stop();
    if (workRoot) await rm(workRoot, { recursive: true, force: true });
  });

  const site = (token: string, ...extra: string[]) =>
    runCli(['site', 'slurm', '--once', '--server', s.url, '--cpus', '1', '--memory', '512Mi', '--disk', '1Gi', '--walltime', '600', '--idle', '3',
      '--max-pilots', '2', '--max-pending', '2', '--work-root', workRoot, ...extra], { BOXGRID_ENROLL_TOKEN: token, PATH: process.env.PATH ?? '' });

  test('no demand, no pilots; queued jobs bring pilots (within the bounds) that run them all and exit when idle', async () => {
    const { token } = await admin.createEnrollToken({ site: 'hpc', uses: 100 });
    const idle = await site(token);
    assert.equal(idle.code, 0, idle.stderr);
    assert.deepEqual(JSON.parse(idle.stdout).submitted, [], 'nothing queued: nothing submitted');

    const { batch } = await admin.submitBatch(P, { app: 'count', count: 8, template: { args: ['echo pilot $BOXGRID_OUT > "$BOXGRID_OUT/out.txt"'] } });
    // The server reads the demand at most every 5 s: wait until its metrics show the batch.
    await eventually(async () => (/^boxgrid_demand_cores 4$/m.test(await (await fetch(`${s.url}/metrics`)).text()) ? true : undefined), 'the demand in /metrics');
    const pass = await site(token);
    assert.equal(pass.code, 0, pass.stderr);
    const first = JSON.parse(pass.stdout) as { demandCores: number; submitted: string[] };
    assert.equal(first.demandCores, 4, '8 half-core jobs');
    assert.equal(first.submitted.length, 2, 'demand for 4 one-core pilots, bounded at 2');
    const again = JSON.parse((await site(token)).stdout) as { submitted: string[]; pilots: { pending: number; running: number } };
    assert.deepEqual(again.submitted, [], 'a second pass adds none: the bound counts the pilots in flight');
    assert.equal(again.pilots.pending + again.pilots.running, 2);

    const done = await untilBatchDone(admin, P, batch!.id, 120_000);
    const reasons = (await admin.listJobs(P, { batch: batch!.id })).jobs.map((j) => j.reason).filter(Boolean);
    assert.equal(done.counts.succeeded, 8, `${JSON.stringify(done.counts)} ${reasons.slice(0, 2).join('; ')}`);
    await eventually(async () => ((await queuedJobs(PILOT_JOB_NAME)).length === 0 ? true : undefined), 'the pilots to exit when idle', 60_000);

    const hosts = (await admin.listHosts()).hosts.filter((h) => h.name.startsWith('pilot-'));
    assert.equal(hosts.length, 2, 'each pilot enrolled as a host of its own');
    const logs = (await readdir(workRoot)).filter((f) => f.startsWith('pilot-') && f.endsWith('.log'));
    assert.equal(logs.length, 2);
    for (const f of logs) assert.match(await readFile(join(workRoot, f), 'utf8'), /no work for 3 s: stopping/, `${f} says why it stopped`);
  });
});
