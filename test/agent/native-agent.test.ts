import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { NativeRuntime } from '../../src/agent/runtimes/native-runtime.js';
import { bwrapSuite } from '../helpers/native.js';
import { eventually, startGrid, type TestGrid } from '../helpers/grid.js';

const suite = await bwrapSuite();
const P = 'default';

describe('the native runtime through the agent (bubblewrap)', { skip: suite.skip }, () => {
  let grid: TestGrid;

  before(async () => {
    grid = await startGrid();
    await grid.startAgent(new NativeRuntime(), { runtimes: [{ kind: 'native', runtime: new NativeRuntime() }] });
  });
  after(() => grid?.stop());

  const finished = (jobId: number) =>
    eventually(async () => {
      const j = await grid.admin.getJob(P, jobId);
      return j.job.state === 'succeeded' || j.job.state === 'failed' ? j : undefined;
    }, `job ${jobId} to end`);

  test('an app that declares a native command runs as a sandboxed process and its outputs come back', async () => {
    await grid.admin.createApp(P, {
      name: 'native-sh', image: 'unused/image:1', command: ['/never/run/in/a/container'],
      nativeCommand: ['sh', '-c'], resources: { cores: 0.5, memoryMiB: 256 }, maxAttempts: 1,
    });
    const { jobIds } = await grid.admin.submitJob(P, { app: 'native-sh', args: ['echo "$BOXGRID_OUT $(id -u)" > "$BOXGRID_OUT/where.txt"; echo hi'] });
    const { job, tasks } = await finished(jobIds![0]!);
    assert.equal(job.state, 'succeeded', job.reason ?? '');
    assert.equal(tasks[0]!.runtime, 'native');
    const out = await grid.admin.download(P, tasks[0]!.outputs['where.txt']!.sha256);
    assert.equal(await out.text(), '/out 65534\n', 'inside the sandbox, as nobody, /out is the outputs dir');
    assert.equal((await grid.admin.taskLog(P, { task: tasks[0]!.id })).text, 'hi\n');
  });

  test('an app without a native command never goes to a native-only host', async () => {
    await grid.admin.createApp(P, { name: 'container-only', image: 'sci/x:1', command: ['true'], maxAttempts: 1 });
    const { jobIds } = await grid.admin.submitJob(P, { app: 'container-only' });
    const probe = await grid.admin.submitJob(P, { app: 'native-sh', args: ['true'] });
    await finished(probe.jobIds![0]!); // the agent has asked for work since
    const { job, tasks } = await grid.admin.getJob(P, jobIds![0]!);
    assert.equal(job.state, 'queued');
    assert.equal(tasks.length, 0);
    await grid.admin.cancelJob(P, jobIds![0]!);
  });
});
