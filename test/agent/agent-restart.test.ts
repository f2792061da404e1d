import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Docker from 'dockerode';
import { LABEL_OWNER, LABEL_TASK } from '../../src/agent/runtimes/docker-runtime.js';
import { AgentProcess } from '../helpers/agent-process.js';
import { dockerSuite, ensureTestImage } from '../helpers/docker.js';
import { eventually, startGrid, type TestGrid } from '../helpers/grid.js';

const suite = await dockerSuite();
const P = 'default';
/** Generous: the agent is a separate process, and CI runs two suites at once on two cores. */
const LOADED_MS = 90_000;

describe('an agent killed with SIGKILL and started again', { skip: suite.skip }, () => {
  let grid: TestGrid;
  let workDir: string;
  let agent: AgentProcess;
  const docker = new Docker();

  before(async () => {
    const image = await ensureTestImage();
    grid = await startGrid();
    workDir = await mkdtemp(join(tmpdir(), 'boxgrid-agent-proc-'));
    await grid.admin.createApp(P, { name: 'sh', image, command: ['sh', '-c'], resources: { cores: 0.5, memoryMiB: 64, diskMiB: 100 }, maxAttempts: 3 });
    const { token } = await grid.admin.createEnrollToken({ uses: 1 });
    agent = new AgentProcess(['--server', grid.server.url, '--work-dir', workDir, '--cpus', '2', '--memory', '1Gi', '--disk', '1Gi', '--name', 'killable']);
    agent.start(['--enroll-token', token]);
  });
  after(async () => {
    await agent?.kill('SIGKILL');
    await grid?.stop();
    await rm(workDir, { recursive: true, force: true });
  });

  /** The agent labels its containers with its credential's public id. */
  const owner = async () => (JSON.parse(await readFile(join(workDir, 'host.json'), 'utf8')).token as string).split('_')[1]!;
  const containersOf = async (taskId: number) =>
    (await docker.listContainers({ all: true, filters: { label: [`${LABEL_TASK}=${taskId}`, `${LABEL_OWNER}=${await owner()}`] } })).length;
  const jobOnce = (jobId: number, state: string) =>
    eventually(async () => {
      const j = await grid.admin.getJob(P, jobId);
      return j.job.state === state ? j : undefined;
    }, () => `job ${jobId} to be ${state}; the agent said:\n${agent.output}`, LOADED_MS);
  /** The job's task once its container exists ("running" on the server only says the agent holds it). */
  const runningTask = (jobId: number) =>
    eventually(async () => {
      const t = (await grid.admin.getJob(P, jobId)).tasks.at(-1);
      return t?.state === 'running' && (await containersOf(t.id)) === 1 ? t.id : undefined;
    }, () => `job ${jobId} to run; the agent said:\n${agent.output}`, LOADED_MS);

  test('a task still running after the restart is followed to its end: nothing lost, nothing run twice', async () => {
    await eventually(() => stat(join(workDir, 'host.json')).then(() => true, () => undefined), () => `enrolment; the agent said:\n${agent.output}`, LOADED_MS);
    assert.equal((await stat(join(workDir, 'host.json'))).mode & 0o777, 0o600, 'the credential is private');
    const first = await grid.admin.submitJob(P, { app: 'sh', args: ['echo early > /out/early.txt'] });
    await jobOnce(first.jobIds![0]!, 'succeeded');

    const { jobIds } = await grid.admin.submitJob(P, { app: 'sh', args: ['echo begun; sleep 4; echo finished > /out/late.txt'] });
    const jobId = jobIds![0]!;
    const taskId = await runningTask(jobId);
    assert.equal(await agent.kill('SIGKILL'), null, 'killed, not exited');
    assert.equal(await containersOf(taskId), 1, 'the container outlives its agent');

    agent.start(); // no enrolment token: the saved credential is reused
    const { tasks } = await jobOnce(jobId, 'succeeded');
    assert.equal(tasks.length, 1, 'the job ran once, on the task it had');
    const out = await grid.admin.download(P, tasks[0]!.outputs['late.txt']!.sha256);
    assert.equal(await out.text(), 'finished\n');
    assert.match((await grid.admin.taskLog(P, { task: taskId })).text, /begun/);
    assert.equal((await grid.admin.getJob(P, first.jobIds![0]!)).tasks.length, 1, 'a job that had finished did not run again');
    await eventually(async () => ((await containersOf(taskId)) === 0 ? true : undefined), 'the container to be removed', LOADED_MS);
    const hosts = (await grid.admin.listHosts()).hosts;
    assert.equal(hosts.length, 1, 'the restart did not enrol a second host');
  });

  test('a task whose container vanished while the agent was down is reported lost and runs again; strays are removed', async () => {
    const { jobIds } = await grid.admin.submitJob(P, { app: 'sh', args: ['sleep 3; echo again > /out/r.txt'] });
    const jobId = jobIds![0]!;
    const taskId = await runningTask(jobId);
    await agent.kill('SIGKILL');
    for (const c of await docker.listContainers({ all: true, filters: { label: [`${LABEL_TASK}=${taskId}`, `${LABEL_OWNER}=${await owner()}`] } })) {
      await docker.getContainer(c.Id).remove({ force: true });
    }
    // A container that looks like ours but that no task of this agent owns.
    const stray = await docker.createContainer({ Image: await ensureTestImage(), Cmd: ['sleep', '300'], Labels: { [LABEL_TASK]: '987654', [LABEL_OWNER]: await owner() }, HostConfig: { NetworkMode: 'none' } });
    await stray.start();

    agent.start();
    const { job, tasks } = await jobOnce(jobId, 'succeeded');
    assert.equal(tasks.length, 2);
    assert.equal(tasks[0]!.outcome?.kind, 'agent_error');
    assert.match(tasks[0]!.reason ?? '', /no longer running/);
    assert.equal(job.attempts, 2);
    await eventually(async () => ((await containersOf(987654)) === 0 ? true : undefined), 'the stray container to be removed', LOADED_MS);
    assert.equal(await agent.kill('SIGTERM'), 0, 'SIGTERM stops the agent cleanly');
    assert.deepEqual(await readdir(join(workDir, 'tasks')), [], 'nothing is left staged');
  });
});
