import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Docker from 'dockerode';
import { unpackCheckpoint } from '../../src/agent/checkpoints.js';
import { LABEL_OWNER } from '../../src/agent/runtimes/docker-runtime.js';
import type { BoxgridClient } from '../../src/client/client.js';
import { AgentProcess } from '../helpers/agent-process.js';
import { dockerSuite, ensureTestImage } from '../helpers/docker.js';
import { eventually, ownDockerRuntime, startGrid, type TestGrid } from '../helpers/grid.js';

const suite = await dockerSuite();
const P = 'default';
/** Generous: the killed agent is a separate process, and CI runs two suites at once on two cores. */
const LOADED_MS = 90_000;

/** Counts to `to`, a step every 0.2 s, saving its count atomically in /checkpoint and starting from it. */
const counter = (to: number): string => [
  'n=$(cat /checkpoint/n 2>/dev/null || echo 0); echo "start $n"',
  `while [ "$n" -lt ${to} ]; do n=$((n+1)); echo "$n" > /checkpoint/n.tmp && mv /checkpoint/n.tmp /checkpoint/n; echo "step $n"; sleep 0.2; done`,
  'echo "$n" > /out/n.txt',
].join('; ');
const COUNTER = counter(12);

/** The steps a counter's log shows, in order. */
const stepsIn = (log: string): number[] => [...log.matchAll(/^step (\d+)$/gm)].map((m) => Number(m[1]));
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

const docker = new Docker();
/** An agent process labels its containers with its credential's public id. */
const ownerIn = async (workDir: string): Promise<string> => (JSON.parse(await readFile(join(workDir, 'host.json'), 'utf8')).token as string).split('_')[1]!;
const containersOf = async (owner: string) => docker.listContainers({ all: true, filters: { label: [`${LABEL_OWNER}=${owner}`] } });
/** Removes what an agent process left on the engine (what its host's death would take with it). */
const removeContainersOf = async (owner: string): Promise<void> => {
  for (const c of await containersOf(owner)) await docker.getContainer(c.Id).remove({ force: true, v: true });
};

/** The count a checkpoint of the counter holds (the server keeps it as a blob of the job's project). */
async function checkpointedCount(admin: BoxgridClient, sha256: string): Promise<number> {
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-checkpoint-'));
  try {
    await writeFile(join(dir, 'c.tgz'), Buffer.from(await (await admin.download(P, sha256)).arrayBuffer()));
    await mkdir(join(dir, 'c'));
    await unpackCheckpoint(join(dir, 'c.tgz'), join(dir, 'c'), null);
    return Number((await readFile(join(dir, 'c', 'n'), 'utf8')).trim());
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('checkpoint and restart on a real Docker engine', { skip: suite.skip }, () => {
  let grid: TestGrid;

  before(async () => {
    const image = await ensureTestImage();
    grid = await startGrid();
    await grid.admin.createApp(P, { name: 'counter', image, command: ['sh', '-c'], resources: { cores: 0.5, memoryMiB: 64 }, checkpointing: true, maxAttempts: 2 });
  });
  after(() => grid?.stop());

  test('a task released by a stopping agent resumes from its checkpoint on another host: the work continues, it does not start over', async () => {
    const first = await grid.startAgent(ownDockerRuntime(), { onStop: 'release' });
    const { jobIds } = await grid.admin.submitJob(P, { app: 'counter', args: [COUNTER] });
    const jobId = jobIds![0]!;
    await eventually(async () => ((await grid.admin.getJob(P, jobId)).job.checkpoint !== null ? true : undefined), 'a checkpoint');
    await first.stop(); // SIGTERM with --on-stop release: abort, save /checkpoint once more, hand the job back

    const released = await grid.admin.getJob(P, jobId);
    assert.equal(released.job.state, 'queued');
    assert.equal(released.job.attempts, 0, 'a release does not spend an attempt');
    assert.deepEqual(released.tasks[0]!.outcome, { kind: 'aborted' });
    const firstLog = (await grid.admin.taskLog(P, { task: released.tasks[0]!.id })).text;
    const reached = Math.max(...[...firstLog.matchAll(/step (\d+)/g)].map((m) => Number(m[1])));
    assert.match(firstLog, /^start 0\n/);
    assert.ok(reached >= 1 && reached < 12, `the first task was stopped part-way (at ${reached})`);

    const second = await grid.startAgent(ownDockerRuntime());
    const done = await eventually(async () => {
      const j = await grid.admin.getJob(P, jobId);
      return j.job.state === 'succeeded' ? j : undefined;
    }, 'the job to finish on the second host');
    const task = done.tasks[1]!;
    assert.equal(task.hostId, second.hostId);
    assert.notEqual(task.hostId, released.tasks[0]!.hostId);
    const secondLog = (await grid.admin.taskLog(P, { task: task.id })).text;
    const resumedAt = Number(/^start (\d+)/.exec(secondLog)?.[1]);
    assert.ok(resumedAt >= 1, `the second task resumed from the checkpoint, not from 0 (log: ${secondLog.slice(0, 60)})`);
    assert.ok(resumedAt >= reached - 1, 'the checkpoint saved on release is (nearly) where the first task stopped');
    assert.doesNotMatch(secondLog, /step 1\n/, 'step 1 did not run again');
    const out = await grid.admin.download(P, task.outputs['n.txt']!.sha256);
    assert.equal(await out.text(), '12\n');
    await second.stop(); // the next test's job is for its own agent
  });

  test('an agent stopped with --on-stop wait saves /checkpoint at once (its host may be going away), then lets the task finish', async () => {
    // No periodic save within this test: a checkpoint can only be the one taken on stop.
    const said: string[] = [];
    const agent = await grid.startAgent(ownDockerRuntime(), { onStop: 'wait', checkpointSeconds: 3600, log: (level, m) => void said.push(`${level} ${m}`) });
    const { jobIds } = await grid.admin.submitJob(P, { app: 'counter', args: [counter(30)] });
    const jobId = jobIds![0]!;
    const taskId = await eventually(async () => (await grid.admin.getJob(P, jobId)).tasks[0]?.id, 'the job to start');
    const count = join(agent.workDir, 'tasks', String(taskId), 'checkpoint', 'n');
    await eventually(() => readFile(count, 'utf8').then((t) => (Number(t) >= 1 ? true : undefined), () => undefined), 'the task to count');
    assert.equal((await grid.admin.getJob(P, jobId)).job.checkpoint, null, 'nothing was saved before the stop');

    const stopping = agent.stop(); // SIGTERM with --on-stop wait
    const saved = await eventually(async () => (await grid.admin.getJob(P, jobId)).job.checkpoint ?? undefined, () => `the checkpoint saved on stop; the agent said:\n${said.join('\n')}`);
    await stopping;
    const at = await checkpointedCount(grid.admin, saved);
    assert.ok(at >= 1 && at < 30, `the checkpoint was taken while the task ran (at ${at}), not at its end`);

    const done = await grid.admin.getJob(P, jobId);
    assert.equal(done.job.state, 'succeeded');
    assert.equal(done.tasks.length, 1, 'the task was not released: it ran to its end on the stopping agent');
    const log = (await grid.admin.taskLog(P, { task: taskId })).text;
    assert.match(log, /^start 0\n/);
    assert.deepEqual(stepsIn(log), range(1, 30));
    const out = await grid.admin.download(P, done.tasks[0]!.outputs['n.txt']!.sha256);
    assert.equal(await out.text(), '30\n');
  });
});

describe('checkpoint and restart when a host dies without a word', { skip: suite.skip }, () => {
  const TO = 30; // 6 s of counting: the host is killed well before the end
  let grid: TestGrid;
  let workDir: string;
  let doomed: AgentProcess | undefined;
  const owner = () => ownerIn(workDir);

  before(async () => {
    const image = await ensureTestImage();
    // A short lease, so a silent host's task is counted lost within seconds; no retry backoff,
    // so its job may run again at once.
    grid = await startGrid({ timing: { leaseSeconds: 3, heartbeatSeconds: 1, idlePollSeconds: 1, sweepSeconds: 1 }, scheduling: { backoffBaseSeconds: 0 } });
    await grid.admin.createApp(P, { name: 'counter', image, command: ['sh', '-c'], resources: { cores: 0.5, memoryMiB: 64 }, checkpointing: true, maxAttempts: 2 });
    workDir = await mkdtemp(join(tmpdir(), 'boxgrid-agent-doomed-'));
  });
  after(async () => {
    await doomed?.kill('SIGKILL');
    const o = await owner().catch(() => null); // null: it never enrolled, so it ran nothing
    if (o !== null) await removeContainersOf(o);
    await grid?.stop();
    await rm(workDir, { recursive: true, force: true });
  });

  test('a task whose host was killed is counted lost when its lease runs out, and resumes from its latest checkpoint on another host: the work continues', async () => {
    const { token } = await grid.admin.createEnrollToken({ uses: 1 });
    doomed = new AgentProcess(['--server', grid.server.url, '--work-dir', workDir, '--cpus', '2', '--memory', '1Gi', '--disk', '1Gi', '--name', 'doomed', '--checkpoint-interval', '1']);
    doomed.start(['--enroll-token', token]);
    const { jobIds } = await grid.admin.submitJob(P, { app: 'counter', args: [counter(TO)] });
    const jobId = jobIds![0]!;
    await eventually(async () => ((await grid.admin.getJob(P, jobId)).job.checkpoint !== null ? true : undefined), () => `a checkpoint; the agent said:\n${doomed!.output}`, LOADED_MS);

    // The host dies: its agent gets no chance to say anything, nor to save anything more.
    assert.equal(await doomed.kill('SIGKILL'), null, 'killed, not exited');
    const o = await owner();
    assert.equal((await containersOf(o)).length, 1, 'the container outlived its agent');
    await removeContainersOf(o); // as the host's death would
    assert.deepEqual(await containersOf(o), []);

    // Nobody tells the server: the lease runs out, the task is lost, the job is requeued and the attempt counts.
    const requeued = await eventually(async () => {
      const j = await grid.admin.getJob(P, jobId);
      return j.job.state === 'queued' ? j : undefined;
    }, 'the lease to run out and the job to be requeued', LOADED_MS);
    const lost = requeued.tasks[0]!;
    assert.equal(requeued.tasks.length, 1);
    assert.equal(lost.state, 'lost');
    assert.match(lost.reason ?? '', /lease expired/);
    assert.equal(requeued.job.attempts, 1, 'the lost attempt is counted');
    // Read once the lease has run out: no upload of the dead host can still be on its way.
    const latest = requeued.job.checkpoint!;
    const at = await checkpointedCount(grid.admin, latest);
    assert.ok(at >= 1 && at < TO, `the first task had counted part of the way when its host died (checkpointed at ${at})`);

    const second = await grid.startAgent(ownDockerRuntime());
    const done = await eventually(async () => {
      const j = await grid.admin.getJob(P, jobId);
      return j.job.state === 'succeeded' ? j : undefined;
    }, 'the job to finish on the second host', LOADED_MS);
    assert.equal(done.tasks.length, 2);
    assert.equal(done.job.attempts, 2, 'the requeued job kept its attempt count');
    const task = done.tasks[1]!;
    assert.equal(task.hostId, second.hostId);
    assert.notEqual(task.hostId, lost.hostId);
    const log = (await grid.admin.taskLog(P, { task: task.id })).text;
    assert.match(log, new RegExp(`^start ${at}\\n`), `the second task resumed from the latest checkpoint (${at}), not from 0 (log: ${log.slice(0, 60)})`);
    assert.deepEqual(stepsIn(log), range(at + 1, TO), 'only the steps after the checkpoint ran; none it held ran again');
    const out = await grid.admin.download(P, task.outputs['n.txt']!.sha256);
    assert.equal(await out.text(), `${TO}\n`);
    assert.deepEqual(await containersOf(o), [], 'the dead host left nothing on the engine');
  });
});

describe('an agent killed while a task was frozen for packing its checkpoint', { skip: suite.skip }, () => {
  let grid: TestGrid;
  let workDir: string;
  let agent: AgentProcess | undefined;

  before(async () => {
    const image = await ensureTestImage();
    grid = await startGrid();
    // A time limit well inside the wait below: a task left frozen would end as a timeout.
    await grid.admin.createApp(P, { name: 'counter', image, command: ['sh', '-c'], resources: { cores: 0.5, memoryMiB: 64 }, checkpointing: true, maxAttempts: 1, maxRuntimeSeconds: 30 });
    workDir = await mkdtemp(join(tmpdir(), 'boxgrid-agent-frozen-'));
  });
  after(async () => {
    await agent?.kill('SIGKILL');
    const o = await ownerIn(workDir).catch(() => null);
    if (o !== null) await removeContainersOf(o);
    await grid?.stop();
    await rm(workDir, { recursive: true, force: true });
  });

  test('its next start thaws the container it follows again: the task runs on to its end', async () => {
    const { token } = await grid.admin.createEnrollToken({ uses: 1 });
    agent = new AgentProcess(['--server', grid.server.url, '--work-dir', workDir, '--cpus', '2', '--memory', '1Gi', '--disk', '1Gi', '--name', 'frozen']);
    agent.start(['--enroll-token', token]);
    const { jobIds } = await grid.admin.submitJob(P, { app: 'counter', args: [COUNTER] });
    const jobId = jobIds![0]!;
    const running = await eventually(async () => {
      const o = await ownerIn(workDir).catch(() => null);
      const [c] = o === null ? [] : await containersOf(o);
      return c?.State === 'running' ? c : undefined;
    }, () => `the task's container to run; the agent said:\n${agent!.output}`, LOADED_MS);
    assert.equal(await agent.kill('SIGKILL'), null, 'killed, not exited');
    // Killed between freezing the container and thawing it (a second Ctrl-C while a checkpoint is packed, say).
    const container = docker.getContainer(running.Id);
    await container.pause();
    assert.equal((await container.inspect()).State.Paused, true);

    agent.start(); // the saved credential
    const { job, tasks } = await eventually(async () => {
      const j = await grid.admin.getJob(P, jobId);
      return j.job.state === 'succeeded' || j.job.state === 'failed' ? j : undefined;
    }, () => `the job to end; the agent said:\n${agent!.output}`, LOADED_MS);
    assert.equal(job.state, 'succeeded', `the task was not left frozen (${tasks[0]?.reason ?? ''})`);
    assert.equal(tasks.length, 1, 'it ran on the task it had');
    const log = (await grid.admin.taskLog(P, { task: tasks[0]!.id })).text;
    assert.deepEqual(stepsIn(log), range(1, 12), 'every step ran once');
    const out = await grid.admin.download(P, tasks[0]!.outputs['n.txt']!.sha256);
    assert.equal(await out.text(), '12\n');
    await eventually(async () => ((await containersOf(await ownerIn(workDir))).length === 0 ? true : undefined), 'the container to be removed', LOADED_MS);
  });
});
