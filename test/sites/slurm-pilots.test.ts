// Slurm pilots against a real single-node Slurm (scripts/start-slurm.sh): `boxgrid site slurm`
// submits pilot jobs through sbatch, each runs `boxgrid agent` (native runtime, or a Podman
// service of its own with --runtime podman) on the node, pulls tasks from a real server, and
// exits when idle.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { BoxgridClient } from '../../src/client/client.js';
import type { AppInput } from '../../src/client/types.js';
import { PILOT_JOB_NAME } from '../../src/sites/slurm/slurm-site.js';
import { runCli } from '../cli/run-cli.js';
import { eventually, untilBatchDone } from '../helpers/grid.js';
import { TEST_IMAGE } from '../helpers/docker.js';
import { bwrapSuite } from '../helpers/native.js';
import { podmanSuite, podmanTaskContainers } from '../helpers/podman.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { queuedJobs, slurmSuite } from '../helpers/slurm.js';

const slurm = await slurmSuite();
const bwrap = await bwrapSuite();
const skip = slurm.skip || bwrap.skip;
const podman = await podmanSuite();
const P = 'default';
const execFileP = promisify(execFile);

/** A server for pilots to reach, a work root for them, and one small app (the rest of it as given). */
async function pilotServer(app: Pick<AppInput, 'name' | 'image' | 'command' | 'nativeCommand'>): Promise<{ s: TestServer; admin: BoxgridClient; workRoot: string }> {
  const s = await startTestServer({ timing: { leaseSeconds: 60, heartbeatSeconds: 2, idlePollSeconds: 1, sweepSeconds: 5 } });
  const admin = new BoxgridClient({ url: s.url, token: s.adminToken });
  const workRoot = await mkdtemp(join(tmpdir(), 'boxgrid-pilots-'));
  await admin.createApp(P, { ...app, resources: { cores: 0.5, memoryMiB: 64, diskMiB: 16 }, maxAttempts: 1, maxRuntimeSeconds: 120 });
  return { s, admin, workRoot };
}

describe('Slurm pilots (boxgrid site slurm)', { skip }, () => {
  let s: TestServer;
  let admin: BoxgridClient;
  let workRoot: string;
  before(async () => {
    ({ s, admin, workRoot } = await pilotServer({ name: 'count', image: 'unused/image:1', command: ['/never'], nativeCommand: ['sh', '-c'] }));
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

describe('Slurm pilots with the Podman runtime (boxgrid site slurm --runtime podman)', { skip: slurm.skip || podman.skip }, () => {
  // A name of its own: these pilots are never counted with the native suite's.
  const JOB_NAME = 'boxgrid-pilot-podman';
  let s: TestServer;
  let admin: BoxgridClient;
  let workRoot: string;
  before(async () => {
    // An app with an image and no native command: only a pilot with a container engine takes it.
    ({ s, admin, workRoot } = await pilotServer({ name: 'in-image', image: TEST_IMAGE, command: ['sh', '-c'] }));
  });
  after(async () => {
    await s?.stop();
    if (workRoot) await rm(workRoot, { recursive: true, force: true });
  });

  const site = (token: string, ...extra: string[]) =>
    runCli(['site', 'slurm', '--once', '--server', s.url, '--job-name', JOB_NAME, '--cpus', '1', '--memory', '512Mi', '--disk', '1Gi', '--walltime', '600', '--idle', '3',
      '--max-pilots', '2', '--max-pending', '2', '--work-root', workRoot, ...extra], { BOXGRID_ENROLL_TOKEN: token, PATH: process.env.PATH ?? '', ...podman.env });

  test('an app with only an image is no demand for native pilots; Podman pilots run it in containers, sandboxed, and exit when idle, their services with them', async () => {
    const { token } = await admin.createEnrollToken({ site: 'hpc-podman', uses: 100 });
    // Each task checks its own sandbox: nobody, loopback only, a read-only root; then writes /out.
    const script = '[ "$(id -u)" = 65534 ] && [ "$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " ")" = lo ] && ! touch /probe 2>/dev/null && echo sandboxed > /out/out.txt';
    const { batch } = await admin.submitBatch(P, { app: 'in-image', count: 6, template: { args: [script] } });
    await eventually(async () => (/^boxgrid_demand_cores 3$/m.test(await (await fetch(`${s.url}/metrics`)).text()) ? true : undefined), 'the demand in /metrics');

    const native = await site(token);
    assert.equal(native.code, 0, native.stderr);
    assert.deepEqual(JSON.parse(native.stdout), { demandCores: 0, pilots: { pending: 0, running: 0 }, submitted: [] }, 'no native command: no demand for a native site');

    const pass = await site(token, '--runtime', 'podman');
    assert.equal(pass.code, 0, pass.stderr);
    const first = JSON.parse(pass.stdout) as { demandCores: number; submitted: string[] };
    assert.equal(first.demandCores, 3, '6 half-core jobs of an image app');
    assert.equal(first.submitted.length, 2, 'demand for 3 one-core pilots, bounded at 2');

    const done = await untilBatchDone(admin, P, batch!.id, 120_000);
    const reasons = (await admin.listJobs(P, { batch: batch!.id })).jobs.map((j) => j.reason).filter(Boolean);
    assert.equal(done.counts.succeeded, 6, `${JSON.stringify(done.counts)} ${reasons.slice(0, 2).join('; ')}`);
    await eventually(async () => ((await queuedJobs(JOB_NAME)).length === 0 ? true : undefined), 'the pilots to exit when idle', 60_000);

    const logs = (await readdir(workRoot)).filter((f) => f.startsWith('pilot-') && f.endsWith('.log'));
    assert.equal(logs.length, 2);
    for (const f of logs) {
      const log = await readFile(join(workRoot, f), 'utf8');
      assert.match(log, /runtimes: docker \d/, `${f}: the agent ran on the pilot's Podman service (its Docker-compatible API)`);
      assert.match(log, /no work for 3 s: stopping/, `${f} says why it stopped`);
    }
    assert.deepEqual(await podmanTaskContainers(podman.env), [], 'every task container was removed');
    const services = await execFileP('pgrep', ['-f', `podman system service --time=0 unix://${workRoot}`]).then((r) => r.stdout.trim(), () => '');
    assert.equal(services, '', 'each pilot stopped its Podman service when it ended');
  });

  test("a SIGTERM to the batch shell (Slurm's warning before the time limit) reaches the agent: the running task goes back to the queue and the pilot ends", async () => {
    const { token } = await admin.createEnrollToken({ site: 'hpc-podman-term', uses: 10 });
    const { batch } = await admin.submitBatch(P, { app: 'in-image', count: 1, template: { args: ['sleep 100'] } });
    await eventually(async () => (/^boxgrid_demand_cores 0.5$/m.test(await (await fetch(`${s.url}/metrics`)).text()) ? true : undefined), 'the demand in /metrics');
    const pass = await site(token, '--runtime', 'podman');
    assert.equal(pass.code, 0, pass.stderr);
    const [pilot] = (JSON.parse(pass.stdout) as { submitted: string[] }).submitted;
    assert.ok(pilot, pass.stdout);
    await eventually(async () => ((await podmanTaskContainers(podman.env)).length === 1 ? true : undefined), 'the task\'s container', 60_000);

    // What `sbatch --signal B:TERM@60` does: the batch shell alone gets the signal.
    await execFileP('scancel', ['--batch', '--signal=TERM', pilot]);
    await eventually(async () => ((await queuedJobs(JOB_NAME)).length === 0 ? true : undefined), 'the pilot to end', 60_000);
    const [job] = (await admin.listJobs(P, { batch: batch!.id })).jobs;
    assert.equal(job!.state, 'queued', 'released, back in the queue');
    assert.match(job!.reason ?? '', /released/);
    assert.match(await readFile(join(workRoot, `pilot-${pilot}.log`), 'utf8'), /SIGTERM: no more new work; releasing running tasks/);
    assert.deepEqual(await podmanTaskContainers(podman.env), [], 'its container was removed');
    await admin.cancelBatch(P, batch!.id);
  });
});
