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

/**
 * Issue 9, item 2: an agent SIGKILLed mid-task that stays down past its lease. Unlike
 * test/agent/agent-restart.test.ts (restarted at once, the task followed to its end), here the
 * server must give up on it: the task is lost, its job runs on another host, and when the dead
 * agent finally comes back its orphaned container is removed and its late result refused.
 */

const suite = await dockerSuite();
const P = 'default';
/** Leases of 3 s swept every second: a silent host's task is lost within a few seconds. */
const TIMING = { leaseSeconds: 3, heartbeatSeconds: 1, idlePollSeconds: 1, sweepSeconds: 1 };
/** Each wait; CI runs two suites at once on two cores. */
const WAIT_MS = 40_000;

describe('an agent SIGKILLed mid-task and down past its lease', { skip: suite.skip, timeout: 170_000 }, () => {
  let grid: TestGrid;
  const dirs: string[] = [];
  const agents: AgentProcess[] = [];
  const docker = new Docker();

  /** A `boxgrid agent` process with a work dir of its own, enrolled as a new host. */
  const agentProcess = async (name: string): Promise<{ agent: AgentProcess; workDir: string }> => {
    const workDir = await mkdtemp(join(tmpdir(), `boxgrid-crash-${name}-`));
    dirs.push(workDir);
    const { token } = await grid.admin.createEnrollToken({ uses: 1 });
    const agent = new AgentProcess(['--server', grid.server.url, '--work-dir', workDir, '--cpus', '2', '--memory', '1Gi', '--disk', '1Gi', '--name', name]);
    agents.push(agent);
    agent.start(['--enroll-token', token]);
    await eventually(() => stat(join(workDir, 'host.json')).then(() => true, () => undefined), () => `${name} to enrol; it said:\n${agent.output}`, WAIT_MS);
    return { agent, workDir };
  };
  const credentialOf = async (workDir: string): Promise<{ token: string; owner: string }> => {
    const token = JSON.parse(await readFile(join(workDir, 'host.json'), 'utf8')).token as string;
    return { token, owner: token.split('_')[1]! }; // the agent labels its containers with its credential's public id
  };
  const containers = async (taskId: number, owner: string) =>
    docker.listContainers({ all: true, filters: { label: [`${LABEL_TASK}=${taskId}`, `${LABEL_OWNER}=${owner}`] } });

  before(async () => {
    const image = await ensureTestImage();
    grid = await startGrid({ timing: TIMING });
    await grid.admin.createApp(P, { name: 'sh', image, command: ['sh', '-c'], resources: { cores: 0.5, memoryMiB: 64, diskMiB: 100 }, maxAttempts: 3 });
  });
  after(async () => {
    for (const a of agents) await a.kill('SIGKILL');
    // A test that failed half-way may leave the killed agents' containers behind.
    for (const d of dirs) {
      const owner = await credentialOf(d).then((c) => c.owner, () => null);
      if (owner === null) continue;
      for (const c of await docker.listContainers({ all: true, filters: { label: [`${LABEL_OWNER}=${owner}`] } })) {
        await docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
      }
    }
    await grid?.stop();
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  /** Shared by the tests below, which follow one job in order. */
  let a: { agent: AgentProcess; workDir: string };
  let ownerA = '';
  let jobId = 0;
  let taskA = { id: 0, container: '' };
  let outputB = { sha256: '', text: '' };

  test('the dead agent\'s task is lost when its lease ends, and runs again on another host', async () => {
    a = await agentProcess('agent-a');
    ownerA = (await credentialOf(a.workDir)).owner;
    // Each run writes its container's host name (the container id): which run's output the job keeps is then plain.
    const { jobIds } = await grid.admin.submitJob(P, { app: 'sh', args: ['echo begun; sleep 15; echo "done $(hostname)" > /out/r.txt'] });
    jobId = jobIds![0]!;

    // Agent A runs it; SIGKILL A while its container runs.
    taskA = await eventually(async () => {
      const t = (await grid.admin.getJob(P, jobId)).tasks.at(-1);
      if (t?.state !== 'running') return undefined;
      const [c] = await containers(t.id, ownerA);
      return c?.State === 'running' ? { id: t.id, container: c.Id } : undefined;
    }, () => `job ${jobId} to run on agent A; it said:\n${a.agent.output}`, WAIT_MS);
    assert.equal(await a.agent.kill('SIGKILL'), null, 'killed, not exited');

    // Nobody heartbeats for it: the lease ends, the task is lost, the job waits for another host.
    const lost = await eventually(async () => {
      const j = await grid.admin.getJob(P, jobId);
      return j.tasks[0]?.state === 'lost' ? j : undefined;
    }, `task ${taskA.id} to be lost`, WAIT_MS);
    assert.equal(lost.tasks[0]!.id, taskA.id);
    assert.match(lost.tasks[0]!.reason ?? '', /lease expired/);
    assert.equal(lost.job.state, 'queued', 'the job is requeued, not failed');
    assert.match(lost.job.reason ?? '', /attempt 1 lost: its host stopped reporting; retrying/);
    assert.equal(lost.tasks.length, 1, 'no host took it yet');
    assert.equal((await containers(taskA.id, ownerA)).length, 1, 'the container outlives its agent');

    // Agent B, another host, runs it to the end.
    const b = await agentProcess('agent-b');
    const done = await eventually(async () => {
      const j = await grid.admin.getJob(P, jobId);
      return j.job.state === 'succeeded' ? j : undefined;
    }, () => `job ${jobId} to succeed on agent B; it said:\n${b.agent.output}`, WAIT_MS);
    assert.deepEqual(done.tasks.map((t) => t.state), ['lost', 'succeeded']);
    const taskB = done.tasks[1]!;
    assert.notEqual(taskB.hostId, lost.tasks[0]!.hostId, 'the second run was on the other host');
    assert.equal(done.job.attempts, 2);
    assert.equal(done.job.resultTaskId, taskB.id);
    const sha256 = taskB.outputs['r.txt']!.sha256;
    outputB = { sha256, text: await (await grid.admin.download(P, sha256)).text() };
    assert.match(outputB.text, /^done [0-9a-f]{12}\n$/);
    assert.ok(!taskA.container.startsWith(outputB.text.slice(5, 17)), 'the output is B\'s run, not A\'s');
    // A's container, orphaned, has ended by now with a result of its own.
    await eventually(async () => ((await containers(taskA.id, ownerA))[0]?.State === 'exited' ? true : undefined), 'A\'s container to end', WAIT_MS);
  });

  test('restarted on its old work dir, the dead agent removes its orphaned container and its late result counts for nothing', async () => {
    a.agent.start(); // the saved credential; no enrolment
    await eventually(async () => ((await containers(taskA.id, ownerA)).length === 0 ? true : undefined), () => `A's orphaned container to be removed; A said:\n${a.agent.output}`, WAIT_MS);
    // A has tried to deliver its result (and been refused) at least once.
    await eventually(
      async () => (new RegExp(`task ${taskA.id}: (the server refused its result|delivering its result failed)`).test(a.agent.output) ? true : undefined),
      () => `A to deliver its late result; A said:\n${a.agent.output}`,
      WAIT_MS,
    );
    const final = await grid.admin.getJob(P, jobId);
    assert.equal(final.job.state, 'succeeded');
    assert.equal(final.job.attempts, 2);
    assert.deepEqual(final.tasks.map((t) => t.state), ['lost', 'succeeded'], 'exactly one succeeded task; the lost one stays lost');
    assert.match(final.tasks[0]!.reason ?? '', /lease expired/);
    assert.deepEqual(final.tasks[0]!.outputs, {}, 'the lost task records no outputs');
    assert.equal(final.tasks[1]!.outputs['r.txt']!.sha256, outputB.sha256, 'the job\'s output is still B\'s');

    // What the server answers A's late report (asked by hand with A's credential): 409 lease_expired.
    const { token } = await credentialOf(a.workDir);
    for (const outputs of [{}, { 'r.txt': { sha256: outputB.sha256, size: outputB.text.length } }]) {
      const late = await grid.server.call('POST', `/agent/v1/tasks/${taskA.id}/result`, { token, body: { outcome: { kind: 'succeeded' }, durationMs: 15_000, outputs } });
      assert.equal(late.status, 409, late.text);
      assert.equal(late.body.error.code, 'lease_expired');
      assert.match(late.body.error.message, new RegExp(`task ${taskA.id}'s lease expired before its report; the task was counted lost and its job is succeeded`));
    }
  });

  // A lost task takes no uploads, so a late result whose outputs the project does not hold can
  // never count: the report is answered 409 lease_expired (not a 400 about an upload, which the
  // agent would take for a passing failure and retry for ever), and the agent drops it.
  test('the dead agent gives up on its late result at once: refused, dropped, nothing left on disk', async () => {
    const { token } = await credentialOf(a.workDir);
    const unknown = { 'r.txt': { sha256: 'ab'.repeat(32), size: 17 } };
    const late = await grid.server.call('POST', `/agent/v1/tasks/${taskA.id}/result`, { token, body: { outcome: { kind: 'succeeded' }, durationMs: 15_000, outputs: unknown } });
    assert.equal(late.status, 409, `a late report with outputs of its own: ${late.text}`);
    assert.equal(late.body.error.code, 'lease_expired');
    await eventually(
      async () => (new RegExp(`task ${taskA.id}: the server refused its result \\(task ${taskA.id}'s lease expired before its report; .*\\); dropping it`).test(a.agent.output) ? true : undefined),
      () => `A to give up on its late result; A said:\n${a.agent.output}`,
      10_000,
    );
    assert.deepEqual(await readdir(join(a.workDir, 'tasks')).catch(() => []), [], 'nothing of the task is left on disk');
    assert.doesNotMatch(a.agent.output, /delivering its result failed/, 'A never took the refusal for a passing failure');
  });

  test('the restarted agent stops cleanly, and was not enrolled twice', async () => {
    assert.equal(await a.agent.kill('SIGTERM'), 0, 'SIGTERM stops A cleanly');
    assert.equal((await grid.admin.listHosts()).hosts.length, 2, 'two hosts: A and B');
    assert.equal((await grid.admin.getJob(P, jobId)).tasks.length, 2, 'nothing ran a third time');
  });
});
