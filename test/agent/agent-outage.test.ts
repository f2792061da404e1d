import assert from 'node:assert/strict';
import { access, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startServer, type RunningServer } from '../../src/server/runtime.js';
import { dockerSuite, ensureTestImage } from '../helpers/docker.js';
import { eventually, ownDockerRuntime, startGrid, type TestGrid } from '../helpers/grid.js';

const suite = await dockerSuite();
const P = 'default';

describe('the server goes away while an agent works', { skip: suite.skip }, () => {
  let grid: TestGrid;
  let restarted: RunningServer | null = null;

  before(async () => {
    const image = await ensureTestImage();
    grid = await startGrid();
    await grid.admin.createApp(P, { name: 'sh', image, command: ['sh', '-c'], resources: { cores: 0.5, memoryMiB: 64 } });
  });
  after(async () => {
    await restarted?.close();
    await grid?.stop();
  });

  test('the running task goes on, its result waits on disk, and is delivered once the server is back', async () => {
    const agent = await grid.startAgent(ownDockerRuntime());
    const { jobIds } = await grid.admin.submitJob(P, { app: 'sh', args: ['sleep 1; echo made > /out/made.txt'] });
    const jobId = jobIds![0]!;
    const taskId = await eventually(async () => {
      const t = (await grid.admin.getJob(P, jobId)).tasks[0];
      return t?.state === 'running' ? t.id : undefined;
    }, 'the task to run');

    const { port } = new URL(grid.server.url);
    await grid.server.close(); // the data dir stays
    const result = join(agent.workDir, 'tasks', String(taskId), 'result.json');
    await eventually(() => access(result).then(() => true, () => undefined), 'the result to be kept on disk');
    assert.equal(agent.agent.stats.delivered, 0);

    restarted = await startServer({
      dataDir: grid.server.dataDir, host: '127.0.0.1', port: Number(port), logger: false,
      timing: { leaseSeconds: 60, heartbeatSeconds: 1, idlePollSeconds: 1, sweepSeconds: 1 },
    });
    const { job, tasks } = await eventually(async () => {
      const j = await grid.admin.getJob(P, jobId);
      return j.job.state === 'succeeded' ? j : undefined;
    }, 'the job to succeed once the server is back');
    assert.equal(job.attempts, 1, 'it ran once');
    assert.equal(tasks.length, 1);
    assert.equal(await (await grid.admin.download(P, tasks[0]!.outputs['made.txt']!.sha256)).text(), 'made\n');
    await eventually(async () => ((await readdir(join(agent.workDir, 'tasks'))).length === 0 ? true : undefined), 'the task dir to be removed after delivery');
  });
});
