// An agent as a pilot job runs it: it stops on its own once idle, and takes only tasks that
// can finish before its walltime. Native runtime, so no container engine is needed.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { NativeRuntime } from '../../src/agent/runtimes/native-runtime.js';
import { WALLTIME_MARGIN_SECONDS } from '../../src/agent/agent.js';
import { bwrapSuite } from '../helpers/native.js';
import { startGrid, type TestGrid } from '../helpers/grid.js';

const suite = await bwrapSuite();
const P = 'default';

describe('an agent as a pilot', { skip: suite.skip }, () => {
  let grid: TestGrid;
  before(async () => {
    grid = await startGrid();
    const app = (name: string, maxRuntimeSeconds: number) =>
      grid.admin.createApp(P, { name, image: 'unused/image:1', command: ['/never'], nativeCommand: ['sh', '-c'], resources: { cores: 0.5, memoryMiB: 128 }, maxAttempts: 1, maxRuntimeSeconds });
    await app('quick', 60);
    await app('long', 3600);
  });
  after(() => grid?.stop());
  const native = () => ({ runtimes: [{ kind: 'native' as const, runtime: new NativeRuntime() }] });

  test('runs what is queued, then stops by itself once it has held nothing for its idle time', async () => {
    const { jobIds } = await grid.admin.submitBatch(P, { app: 'quick', count: 3, template: { args: ['echo done'] } }).then(async (b) => ({
      jobIds: (await grid.admin.listJobs(P, { batch: b.batch!.id })).jobs.map((j) => j.id),
    }));
    const pilot = await grid.startAgent(new NativeRuntime(), { ...native(), pilot: { idleMs: 1500, endsAt: null } });
    await pilot.finished; // no stop(): it ends on its own
    for (const id of jobIds) assert.equal((await grid.admin.getJob(P, id)).job.state, 'succeeded');
    assert.equal(pilot.agent.stats.delivered, 3, 'every result delivered before it stopped');
  });

  test('takes only tasks whose app may finish before its walltime, and leaves the rest queued', async () => {
    const long = (await grid.admin.submitJob(P, { app: 'long', args: ['true'], priority: 9 })).jobIds![0]!;
    const quick = (await grid.admin.submitJob(P, { app: 'quick', args: ['true'] })).jobIds![0]!;
    // 100 s left: a 60 s app fits (with the margin kept back), a 3600 s one does not.
    assert.ok(100 - WALLTIME_MARGIN_SECONDS >= 60);
    const pilot = await grid.startAgent(new NativeRuntime(), { ...native(), pilot: { idleMs: 1500, endsAt: Date.now() + 100_000 } });
    await pilot.finished;
    assert.equal((await grid.admin.getJob(P, quick)).job.state, 'succeeded');
    const left = await grid.admin.getJob(P, long);
    assert.deepEqual([left.job.state, left.tasks.length], ['queued', 0], 'the long job, higher priority as it is, was never handed out');
    await grid.admin.cancelJob(P, long);
  });

  test('with no time left for any task it stops at once and runs nothing', async () => {
    const pilot = await grid.startAgent(new NativeRuntime(), { ...native(), pilot: { idleMs: null, endsAt: Date.now() + (WALLTIME_MARGIN_SECONDS - 5) * 1000 } });
    await pilot.finished;
    assert.equal(pilot.agent.stats.started, 0);
  });
});
