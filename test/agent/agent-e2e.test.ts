import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Docker from 'dockerode';
import { LABEL_OWNER, LABEL_TASK } from '../../src/agent/runtimes/docker-runtime.js';
import { dockerSuite, ensureTestImage } from '../helpers/docker.js';
import { eventually, ownDockerRuntime, startGrid, untilBatchDone, type RunningAgent, type TestGrid } from '../helpers/grid.js';

const suite = await dockerSuite();
const P = 'default';

describe('agent and server on a real Docker engine', { skip: suite.skip }, () => {
  let grid: TestGrid;
  let agent: RunningAgent;
  const runtime = ownDockerRuntime();
  let image: string;
  let files: string;
  const docker = new Docker();

  before(async () => {
    image = await ensureTestImage();
    files = await mkdtemp(join(tmpdir(), 'boxgrid-e2e-'));
    grid = await startGrid();
    agent = await grid.startAgent(runtime);
    // One app runs any shell script it is given; failures are final at once (maxAttempts 1).
    await grid.admin.createApp(P, { name: 'sh', image, command: ['sh', '-c'], resources: { cores: 0.5, memoryMiB: 64, diskMiB: 100 }, maxAttempts: 1, maxRuntimeSeconds: 60 });
  });
  after(async () => {
    await grid?.stop();
    await rm(files, { recursive: true, force: true });
  });

  async function upload(name: string, text: string): Promise<string> {
    const path = join(files, name);
    await writeFile(path, text);
    return (await grid.admin.uploadFile(P, path)).sha256;
  }

  async function containersOf(taskId: number): Promise<number> {
    return (await docker.listContainers({ all: true, filters: { label: [`${LABEL_TASK}=${taskId}`, `${LABEL_OWNER}=${runtime.owner}`] } })).length;
  }

  test('a batch with input files runs to completion and its outputs come back, verified', async () => {
    const alpha = await upload('alpha.txt', 'alpha beta\n');
    const gamma = await upload('gamma.txt', 'gamma delta epsilon\n');
    const script = 'tr a-z A-Z < /in/data.txt > /out/upper.txt && wc -w < /in/data.txt > /out/words.txt && echo "done $N"';
    const inputsOf = [alpha, gamma, alpha, gamma, alpha, gamma];
    const submitted = await grid.admin.submitBatch(P, {
      app: 'sh',
      jobs: inputsOf.map((sha, i) => ({ args: [script], env: { N: String(i) }, inputs: { 'data.txt': sha } })),
    });
    const detail = await untilBatchDone(grid.admin, P, submitted.batch!.id);
    assert.equal(detail.counts.succeeded, 6, JSON.stringify(detail.counts));

    for (const [i, jobId] of submitted.jobIds!.entries()) {
      const { job, tasks } = await grid.admin.getJob(P, jobId);
      assert.equal(job.state, 'succeeded');
      assert.equal(tasks.length, 1, 'each job ran once');
      const t = tasks[0]!;
      assert.deepEqual(Object.keys(t.outputs).sort(), ['upper.txt', 'words.txt']);
      const expected = inputsOf[i] === alpha ? ['ALPHA BETA\n', '2\n'] : ['GAMMA DELTA EPSILON\n', '3\n'];
      for (const [k, name] of ['upper.txt', 'words.txt'].entries()) {
        const res = await grid.admin.download(P, t.outputs[name]!.sha256);
        const bytes = Buffer.from(await res.arrayBuffer());
        assert.equal(bytes.toString(), expected[k]);
        assert.equal(createHash('sha256').update(bytes).digest('hex'), t.outputs[name]!.sha256);
      }
      assert.equal(t.outcome?.kind, 'succeeded');
      assert.ok(t.durationMs !== null && t.durationMs >= 0);
      const log = await grid.admin.taskLog(P, { task: t.id });
      assert.equal(log.text, `done ${i}\n`);
      assert.equal(log.done, true);
      assert.equal(await containersOf(t.id), 0, 'the container is removed');
    }
    // Each input was fetched once and shared through the cache; task dirs are gone once delivered.
    assert.deepEqual((await readdir(join(agent.workDir, 'cache'))).sort(), [alpha, gamma].sort());
    assert.deepEqual(await readdir(join(agent.workDir, 'tasks')), []);
  });

  test('the sandbox holds through the whole path, and each way of ending is reported as itself', async () => {
    const server = new URL(grid.server.url);
    const scripts = {
      nonRoot: 'id -u > /out/uid.txt; id -g >> /out/uid.txt',
      readOnlyRoot: 'touch /etc/written',
      network: `wget -q -T 3 -O /out/page http://${server.hostname}:${server.port}/healthz`,
      failed: 'echo going down >&2; exit 3',
    };
    const submitted = await grid.admin.submitBatch(P, { app: 'sh', jobs: Object.values(scripts).map((s) => ({ args: [s] })) });
    await untilBatchDone(grid.admin, P, submitted.batch!.id);
    const [nonRoot, readOnly, network, failed] = await Promise.all(submitted.jobIds!.map((id) => grid.admin.getJob(P, id)));

    assert.equal(nonRoot!.job.state, 'succeeded');
    const uid = await grid.admin.download(P, nonRoot!.tasks[0]!.outputs['uid.txt']!.sha256);
    assert.equal(await uid.text(), '65534\n65534\n', 'tasks run as nobody');

    assert.equal(readOnly!.job.state, 'failed');
    assert.match((await grid.admin.taskLog(P, { job: readOnly!.job.id })).text, /read-only file system/i);

    assert.equal(network!.job.state, 'failed', 'a task cannot reach the server on the host');
    assert.equal(network!.tasks[0]!.outputs.page, undefined);

    assert.equal(failed!.job.state, 'failed');
    assert.deepEqual(failed!.tasks[0]!.outcome, { kind: 'failed', exitCode: 3 });
    assert.match(failed!.job.reason ?? '', /exited with code 3/);
    assert.match((await grid.admin.taskLog(P, { job: failed!.job.id })).text, /going down/);
  });

  test('over its memory limit a task is reported out of memory; past its runtime, timed out', async () => {
    await grid.admin.createApp(P, { name: 'brief', image, command: ['sh', '-c'], resources: { cores: 0.5, memoryMiB: 32 }, maxAttempts: 1, maxRuntimeSeconds: 2 });
    const submitted = await grid.admin.submitBatch(P, {
      app: 'brief',
      jobs: [{ args: ['x=a; while true; do x="$x$x"; done'] }, { args: ['sleep 30'] }],
    });
    await untilBatchDone(grid.admin, P, submitted.batch!.id);
    const [oom, slow] = await Promise.all(submitted.jobIds!.map((id) => grid.admin.getJob(P, id)));
    assert.equal(oom!.job.state, 'failed');
    assert.deepEqual(oom!.tasks[0]!.outcome, { kind: 'out_of_memory', limitMiB: 32 });
    assert.match(oom!.job.reason ?? '', /memory limit of 32 MiB/);
    assert.equal(slow!.job.state, 'failed');
    assert.deepEqual(slow!.tasks[0]!.outcome, { kind: 'timeout', limitSeconds: 2 });
    assert.match(slow!.job.reason ?? '', /longer than its limit of 2 s/);
  });

  test('cancelling a running job stops its container at the next heartbeat', async () => {
    const { jobIds } = await grid.admin.submitJob(P, { app: 'sh', args: ['echo started; sleep 300'] });
    const jobId = jobIds![0]!;
    // "running" only says the agent holds the task; its output says the container runs.
    const taskId = await eventually(async () => {
      const task = (await grid.admin.getJob(P, jobId)).tasks[0];
      if (!task) return undefined;
      return (await grid.admin.taskLog(P, { task: task.id })).text.includes('started') ? task.id : undefined;
    }, 'the task to print that it started');
    assert.equal(await containersOf(taskId), 1);
    await grid.admin.cancelJob(P, jobId);
    const task = await eventually(async () => {
      const t = (await grid.admin.getJob(P, jobId)).tasks[0]!;
      return t.state === 'aborted' ? t : undefined;
    }, 'the task to be aborted');
    assert.deepEqual(task.outcome, { kind: 'aborted' });
    assert.equal((await grid.admin.getJob(P, jobId)).job.state, 'cancelled');
    assert.equal(await containersOf(taskId), 0);
    assert.match((await grid.admin.taskLog(P, { task: taskId })).text, /started/);
  });

  test('heartbeats carry a running task\'s progress and measured usage to the server', async () => {
    const { jobIds } = await grid.admin.submitJob(P, { app: 'sh', args: ['echo 0.25 > /out/.boxgrid-progress; sleep 300'] });
    const jobId = jobIds![0]!;
    const task = await eventually(async () => {
      const t = (await grid.admin.getJob(P, jobId)).tasks[0];
      return t && t.progress === 0.25 && t.usage !== null ? t : undefined;
    }, 'progress and usage to arrive');
    assert.equal(task.state, 'running');
    assert.ok(task.usage!.peakMemoryMiB > 0);
    await grid.admin.cancelJob(P, jobId);
    await eventually(async () => ((await grid.admin.getJob(P, jobId)).tasks[0]!.state === 'aborted' ? true : undefined), 'the task to stop');
  });

  test('a task that makes its progress file a FIFO does not stall the heartbeat', async () => {
    const { jobIds } = await grid.admin.submitJob(P, { app: 'sh', args: ['mkfifo /out/.boxgrid-progress && echo fifo made; sleep 300'] });
    const jobId = jobIds![0]!;
    await eventually(async () => {
      const task = (await grid.admin.getJob(P, jobId)).tasks[0];
      return task && (await grid.admin.taskLog(P, { task: task.id })).text.includes('fifo made') ? true : undefined;
    }, 'the FIFO to exist');
    await agent.agent.heartbeat(); // a blocking open of the FIFO would never return
    await grid.admin.cancelJob(P, jobId);
    await eventually(async () => ((await grid.admin.getJob(P, jobId)).tasks[0]!.state === 'aborted' ? true : undefined), 'the task to stop');
  });

  test('a task that leaves a symbolic link in /out is refused, not uploaded', async () => {
    const { jobIds } = await grid.admin.submitJob(P, { app: 'sh', args: ['echo ok > /out/fine.txt; ln -s /etc/passwd /out/leak'] });
    const jobId = jobIds![0]!;
    const { job, tasks } = await eventually(async () => {
      const j = await grid.admin.getJob(P, jobId);
      return j.job.state === 'failed' ? j : undefined;
    }, 'the job to fail');
    assert.equal(tasks[0]!.outcome?.kind, 'output_error');
    assert.match(job.reason ?? '', /"leak" is a symbolic link/);
    assert.deepEqual(tasks[0]!.outputs, {});
  });
});
