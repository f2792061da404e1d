import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { dockerSuite, ensureTestImage } from '../helpers/docker.js';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { eventually, ownDockerRuntime, startGrid, type RunningAgent, type TestGrid } from '../helpers/grid.js';

/**
 * A result the server refuses for itself alone (a 400, as a server fault might answer) holds up
 * no other: a real agent, one task at a time, behind a proxy that answers the success report of
 * one task with 400. The results behind it are delivered meanwhile; the refused one stays on
 * disk and gets through once the refusals end, or, refused too often, is reported as an agent
 * error so that its job runs again.
 */
const suite = await dockerSuite();
const P = 'default';
const REPORT = /^\/agent\/v1\/tasks\/(\d+)\/result$/;

describe('a refused result holds up no other', { skip: suite.skip }, () => {
  let grid: TestGrid;
  let proxy: FaultProxy;
  const agents: RunningAgent[] = [];
  /** The task whose success reports the proxy refuses (the first reported after `refuseNext`), while `refusing`. */
  let refuseNext = false;
  let refusedTask: number | null = null;
  let refusing = false;
  let refusals = 0;

  // One task at a time: the refused result is first in the agent's outbox when the next arrives.
  const startAgent = async (resultRefusals: number): Promise<void> => {
    agents.push(await grid.startAgent(ownDockerRuntime(), { url: proxy.url, maxTasks: 1, resultRefusals }));
  };
  const stopAgents = async (): Promise<void> => {
    await Promise.all(agents.splice(0).map((a) => a.stop()));
  };
  const jobOf = async (id: number) => grid.admin.getJob(P, id);

  before(async () => {
    grid = await startGrid({ scheduling: { speculation: { enabled: false, maxCopies: 0, maxActive: 0, minRunSeconds: 60 } } });
    proxy = await startFaultProxy({
      target: grid.server.url, seed: 1, rate: 0, maxDelayMs: 0,
      answerFor: (method, path, body) => {
        const m = REPORT.exec(path);
        if (method !== 'POST' || !m || !refusing) return null;
        if (refuseNext) [refuseNext, refusedTask] = [false, Number(m[1])];
        if (Number(m[1]) !== refusedTask || (JSON.parse(body.toString()) as { outcome: { kind: string } }).outcome.kind !== 'succeeded') return null;
        refusals++;
        return { status: 400, body: { error: { code: 'invalid_request', message: 'the proxy refuses this result', field: 'outcome' } } };
      },
    });
    await grid.admin.createApp(P, { name: 'sh', image: await ensureTestImage(), command: ['sh', '-c'], resources: { cores: 0.25, memoryMiB: 64 }, maxRuntimeSeconds: 60, maxAttempts: 3 });
  });

  after(async () => {
    refusing = false;
    await stopAgents();
    await proxy?.close();
    await grid?.stop();
  });

  test('the next result is delivered while the refused one waits on disk; it gets through once the refusals end', async () => {
    [refusing, refuseNext, refusals] = [true, true, 0];
    await startAgent(1000);
    const [first, second] = (await grid.admin.submitBatch(P, { app: 'sh', jobs: [{ args: ['echo one'] }, { args: ['echo two'] }] })).jobIds!;
    await eventually(async () => ((await jobOf(second!)).job.state === 'succeeded' ? true : undefined), 'the second job to succeed while the first result is refused');
    assert.ok(refusals >= 1, 'the first result was refused');
    const { job: held, tasks } = await jobOf(first!);
    assert.equal(held.state, 'running', 'the refused result is not counted');
    assert.equal(refusedTask, tasks[0]!.id, 'the refused report was the first job\'s');

    refusing = false;
    await eventually(async () => ((await jobOf(first!)).job.state === 'succeeded' ? true : undefined), 'the refused result to get through');
    assert.equal((await jobOf(first!)).tasks.length, 1, 'the first job ran once: its result was kept, not run again');
    await stopAgents();
  });

  test('a result refused resultRefusals times is reported as an agent error instead, and its job runs again', async () => {
    [refusing, refuseNext, refusals] = [true, true, 0];
    await startAgent(3);
    const [id] = (await grid.admin.submitBatch(P, { app: 'sh', jobs: [{ args: ['echo three'] }] })).jobIds!;
    const { job, tasks } = await eventually(async () => {
      const j = await jobOf(id!);
      return j.job.state === 'succeeded' ? j : undefined;
    }, 'the job to succeed on its second task');
    assert.equal(refusals, 3, 'the success was offered three times');
    assert.deepEqual(tasks.map((t) => t.state), ['failed', 'succeeded']);
    assert.equal(tasks[0]!.id, refusedTask);
    assert.equal(tasks[0]!.outcome?.kind, 'agent_error');
    assert.match(String(tasks[0]!.outcome?.message), /^the server refused its result 3 times: the proxy refuses this result/);
    assert.equal(job.resultTaskId, tasks[1]!.id);
  });
});
