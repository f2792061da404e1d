import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { Agent } from '../../src/agent/agent.js';
import { BoxgridClient } from '../../src/client/client.js';
import { dockerSuite, ensureTestImage } from '../helpers/docker.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { AGENT_CAPACITY, eventually, ownDockerRuntime, startGrid, type TestGrid } from '../helpers/grid.js';

/**
 * A result the server refuses for itself alone (a 400, as a server bug might answer) holds up
 * no other: a real agent, one task at a time, behind a proxy that answers the first task's
 * report with 400 until told to stop. The second task's result is delivered meanwhile; the
 * first stays on disk and gets through once the refusals end.
 */
const suite = await dockerSuite();
const P = 'default';

describe('a refused result holds up no other', { skip: suite.skip }, () => {
  let grid: TestGrid;
  let proxy: FaultProxy;
  let stopAgent: () => Promise<void>;
  /** The report path the proxy refuses (the first it sees), while `refusing`. */
  let refused: string | null = null;
  let refusing = true;
  let refusals = 0;

  before(async () => {
    grid = await startGrid({ scheduling: { speculation: { enabled: false, maxCopies: 0, maxActive: 0, minRunSeconds: 60 } } });
    proxy = await startFaultProxy({
      target: grid.server.url, seed: 1, rate: 0, maxDelayMs: 0,
      answerFor: (method, path) => {
        if (method !== 'POST' || !/^\/agent\/v1\/tasks\/\d+\/result$/.test(path)) return null;
        refused ??= path;
        if (!refusing || path !== refused) return null;
        refusals++;
        return { status: 400, body: { error: { code: 'invalid_request', message: 'the proxy refuses this result', field: 'outcome' } } };
      },
    });
    await grid.admin.createApp(P, { name: 'sh', image: await ensureTestImage(), command: ['sh', '-c'], resources: { cores: 0.25, memoryMiB: 64 }, maxRuntimeSeconds: 60 });
    const host = await grid.enrollHost('refused');
    // One task at a time: the refused result is first in the agent's outbox when the second arrives.
    const agent = new Agent(new BoxgridClient({ url: proxy.url, token: host.credential.token }), {
      workDir: host.workDir, capacity: AGENT_CAPACITY, runtimes: [{ kind: 'docker', runtime: ownDockerRuntime() }], maxTasks: 1, onStop: 'wait',
      maxOutputBytes: 1024 * 1024, imageBudgetMiB: null, checkpointSeconds: 60, backoff: { minMs: 50, maxMs: 500 },
      log: process.env.BOXGRID_TEST_LOG ? (level, m) => process.stderr.write(`agent ${level}: ${m}\n`) : () => undefined,
    });
    const stopper = new AbortController();
    const done = agent.run(stopper.signal);
    stopAgent = () => (stopper.abort(), done);
  });

  after(async () => {
    refusing = false;
    await stopAgent?.();
    await proxy?.close();
    await grid?.stop();
  });

  test('the next result is delivered while the refused one waits on disk; it gets through once the refusals end', async () => {
    const [first, second] = (await grid.admin.submitBatch(P, { app: 'sh', jobs: [{ args: ['echo one'] }, { args: ['echo two'] }] })).jobIds!;
    const job = async (id: number) => (await grid.admin.getJob(P, id!)).job;
    await eventually(async () => ((await job(second!)).state === 'succeeded' ? true : undefined), 'the second job to succeed while the first result is refused');
    assert.ok(refusals >= 1, 'the first result was refused');
    const { job: held, tasks } = await grid.admin.getJob(P, first!);
    assert.equal(held.state, 'running', 'the refused result is not counted');
    assert.equal(refused, `/agent/v1/tasks/${tasks[0]!.id}/result`, 'the refused report was the first job\'s');

    refusing = false;
    await eventually(async () => ((await job(first!)).state === 'succeeded' ? true : undefined), 'the refused result to get through');
    assert.equal((await grid.admin.getJob(P, first!)).tasks.length, 1, 'the first job ran once: its result was kept, not run again');
  });
});
