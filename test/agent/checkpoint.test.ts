import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { dockerSuite, ensureTestImage } from '../helpers/docker.js';
import { eventually, ownDockerRuntime, startGrid, type TestGrid } from '../helpers/grid.js';

const suite = await dockerSuite();
const P = 'default';

/** Counts to 12, a step every 0.2 s, saving its count atomically in /checkpoint and starting from it. */
const COUNTER = [
  'n=$(cat /checkpoint/n 2>/dev/null || echo 0); echo "start $n"',
  'while [ "$n" -lt 12 ]; do n=$((n+1)); echo "$n" > /checkpoint/n.tmp && mv /checkpoint/n.tmp /checkpoint/n; echo "step $n"; sleep 0.2; done',
  'echo "$n" > /out/n.txt',
].join('; ');

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
  });
});
