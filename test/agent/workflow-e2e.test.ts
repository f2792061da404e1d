import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { dockerSuite, ensureTestImage } from '../helpers/docker.js';
import { eventually, ownDockerRuntime, startGrid, type TestGrid } from '../helpers/grid.js';
import type { WorkflowOutputView, WorkflowStepView, WorkflowView } from '../../src/client/types.js';

/**
 * Workflows on real containers: a three-level DAG (one job writes 100 candidates, 100 jobs
 * refine one each, one job ranks them all), a failure in the middle fixed by a new app
 * version and a retry, a changed spec resumed — with every task counted, to prove that
 * nothing that succeeded ran again.
 */
const suite = await dockerSuite();
const valueOf = (o: WorkflowOutputView | undefined): unknown => (o && 'value' in o ? o.value : undefined);
const P = 'default';
const RESOURCES = { cores: 0.25, memoryMiB: 64, diskMiB: 100 };

/** The refine app: v1 fails on candidate 37 (the "bug"), v2 is fixed. */
const refineScript = (buggy: boolean): string =>
  'n=$(cat /in/cand.txt); ' + (buggy ? '[ "$n" = 37 ] && { echo "cannot refine 37" >&2; exit 3; }; ' : '') + 'echo $((n*n)) > /out/energy.txt; echo "refined $n" > /out/refined.txt';

const spec = (rankArgs: string): string => `
name: three-level
onFailure: continue
steps:
  generate:
    app: sh
    args: ["for i in $(seq 1 100); do echo $i > /out/cand-$i.txt; done"]
    outputs:
      candidates: {files: "cand-*.txt"}
  refine:
    app: refine
    forEach: {files: steps.generate.outputs.candidates, as: cand.txt}
    retries: 0
    outputs:
      energy: {value: energy.txt, type: number}
      refined: {file: refined.txt}
  rank:
    app: sh
    params:
      energies: steps.refine.outputs.energy
    inputs:
      refined: steps.refine.outputs.refined
    args: ["${rankArgs}"]
    outputs:
      count: {value: count.txt, type: number}
      total: {value: total.txt, type: number}
`;
const RANK_V1 = "ls /in | wc -l > /out/count.txt; echo '{energies}' | tr -d '[]' | tr ',' '\\\\n' | awk '{s+=$1} END {print s}' > /out/total.txt";
const RANK_V2 = `${RANK_V1}; echo changed`;

describe('workflows on a real Docker engine', { skip: suite.skip }, () => {
  let grid: TestGrid;
  const runtime = ownDockerRuntime();

  const workflow = async (id: number): Promise<WorkflowView> => (await grid.admin.getWorkflow(P, id)).workflow;
  const step = (w: WorkflowView, name: string): WorkflowStepView => w.steps.find((s) => s.name === name)!;
  const instances = async (id: number, name: string) => (await grid.admin.getWorkflowStep(P, id, name, { limit: 10_000 })).instances;
  const ended = async (id: number, timeoutMs = 120_000): Promise<WorkflowView> => {
    try {
      return await eventually(async () => {
        const w = await workflow(id);
        return w.state === 'running' ? undefined : w;
      }, `workflow ${id} to end`, timeoutMs);
    } catch (e) {
      throw new Error(`${(e as Error).message}\n${await whereItStands(id)}`);
    }
  };
  /** For a timeout: each step's status and counts, and the jobs not yet ended with their tasks. */
  const whereItStands = async (id: number): Promise<string> => {
    const w = await workflow(id);
    const lines = w.steps.map((s) => `step ${s.name}: ${s.status} ${JSON.stringify(s.counts)} ${s.reason ?? ''}`);
    for (const state of ['queued', 'running'] as const) {
      for (const j of (await grid.admin.listJobs(P, { state, limit: 20 })).jobs) {
        const { tasks } = await grid.admin.getJob(P, j.id);
        lines.push(`job ${j.id} ${j.state}: ${tasks.map((t) => `task ${t.id} ${t.state} host ${t.hostId}`).join(', ') || 'no task'}`);
      }
    }
    return lines.join('\n');
  };
  const tasksOf = async (jobId: number): Promise<number> => (await grid.admin.getJob(P, jobId)).tasks.length;
  /** Every job of the project → how many tasks it ran. */
  const taskCounts = async (): Promise<Map<number, number>> => {
    const counts = new Map<number, number>();
    let cursor: string | undefined;
    do {
      const page = await grid.admin.listJobs(P, { limit: 500, ...(cursor ? { cursor } : {}) });
      for (const j of page.jobs) counts.set(j.id, await tasksOf(j.id));
      cursor = page.nextCursor ?? undefined;
    } while (cursor);
    return counts;
  };
  const sum = (m: Map<number, number>): number => [...m.values()].reduce((a, b) => a + b, 0);
  /** The jobs that are new since `before`, after checking that no earlier job ran another task. */
  const newJobsSince = async (before: Map<number, number>): Promise<number[]> => {
    const now = await taskCounts();
    for (const [id, n] of before) assert.equal(now.get(id), n, `job ${id} ran ${now.get(id)! - n} more task(s)`);
    return [...now.keys()].filter((id) => !before.has(id)).sort((a, b) => a - b);
  };
  /** For failure messages: the jobs that ran more than once, and how each task ended. */
  const twice = async (): Promise<string> => {
    const out: string[] = [];
    for (const j of (await grid.admin.listJobs(P, { limit: 500 })).jobs) {
      const { tasks } = await grid.admin.getJob(P, j.id);
      if (tasks.length > 1) out.push(`job ${j.id} (${j.app} ${j.args.join(' ').slice(0, 40)}): ${tasks.map((t) => `${t.state}/${t.replica}/${t.reason ?? ''}`).join(', ')}`);
    }
    return out.join('\n') || 'no job ran twice';
  };

  before(async () => {
    const image = await ensureTestImage();
    // No speculative copies (a slow container on a busy machine would get one): every task here is one the workflow asked for.
    grid = await startGrid({ scheduling: { speculation: { enabled: false, maxCopies: 0, maxActive: 0, minRunSeconds: 60 } } });
    await grid.startAgent(runtime);
    await grid.startAgent(runtime);
    await grid.admin.createApp(P, { name: 'sh', image, command: ['sh', '-c'], resources: RESOURCES, maxAttempts: 3, maxRuntimeSeconds: 60 });
    await grid.admin.createApp(P, { name: 'refine', image, command: ['sh', '-c', refineScript(true)], resources: RESOURCES, maxAttempts: 3, maxRuntimeSeconds: 60 });
  });
  after(async () => {
    await grid?.stop();
  });

  test('fan-out of 100 and fan-in; a failure mid-way, fixed and retried, reruns only what failed; a changed spec resumes', async () => {
    // ── first run: candidate 37 fails; the other branches go on (onFailure: continue); rank is skipped.
    const id = (await grid.admin.createWorkflow(P, { source: spec(RANK_V1) })).workflow.id;
    let w = await ended(id);
    assert.equal(w.state, 'failed');
    assert.equal(step(w, 'generate').status, 'succeeded');
    assert.equal(step(w, 'refine').status, 'failed');
    assert.deepEqual(step(w, 'refine').counts, { queued: 0, running: 0, succeeded: 99, failed: 1, cancelled: 0 });
    assert.match(step(w, 'refine').reason!, /1 of 100 jobs failed: job \d+ \(cand-37\.txt\)/);
    assert.equal(step(w, 'rank').status, 'skipped');
    assert.match(step(w, 'rank').reason!, /needs step "refine", which failed/);
    const firstRefine = await instances(id, 'refine');
    assert.equal(firstRefine.length, 100);
    const failedJob = firstRefine.find((i) => i.state === 'failed')!;
    assert.equal(failedJob.item, 'cand-37.txt');
    // retries: 0 → one attempt, though the app allows three.
    assert.equal(await tasksOf(failedJob.jobId), 1);
    const afterFirst = await taskCounts();
    assert.equal(afterFirst.size, 101, 'generate and 100 candidates');
    assert.equal(sum(afterFirst), 101, await twice());
    const energy = valueOf(firstRefine.find((i) => i.item === 'cand-12.txt')!.outputs!.energy);
    assert.equal(energy, 144, 'a number output is parsed');

    // ── fix the app (a new version; the step is not pinned) and retry: only candidate 37 runs again, then rank.
    await grid.admin.newAppVersion(P, 'refine', { command: ['sh', '-c', refineScript(false)] });
    assert.equal((await grid.admin.retryWorkflow(P, id)).workflow.state, 'running');
    w = await ended(id);
    assert.equal(w.state, 'succeeded', JSON.stringify(w));
    assert.equal(step(w, 'generate').reused, 0, 'generate had succeeded: it was not planned again');
    assert.equal(step(w, 'refine').reused, 99, 'the 99 refined candidates are reused');
    const secondRefine = await instances(id, 'refine');
    for (const i of secondRefine) {
      const before = firstRefine.find((f) => f.item === i.item)!;
      if (i.item === 'cand-37.txt') assert.notEqual(i.jobId, before.jobId, 'the failed candidate is a new job');
      else assert.equal(i.jobId, before.jobId, `${i.item} keeps its job`);
      assert.equal(await tasksOf(i.jobId), 1, `${i.item} ran once`);
    }
    const [rank] = await instances(id, 'rank');
    const expectedTotal = Array.from({ length: 100 }, (_, k) => (k + 1) ** 2).reduce((a, b) => a + b, 0);
    assert.equal(valueOf(rank!.outputs!.count), 100, 'rank got all 100 refined files');
    assert.equal(valueOf(rank!.outputs!.total), expectedTotal, 'rank got all 100 energies');
    const retriedJobs = await newJobsSince(afterFirst);
    assert.deepEqual(retriedJobs, [secondRefine.find((i) => i.item === 'cand-37.txt')!.jobId, rank!.jobId].sort((a, b) => a - b), 'the retry ran candidate 37 and rank, nothing else');
    const afterRetry = await taskCounts();

    // ── a changed spec (rank's args), resumed from the first: only rank runs.
    const resumed = await grid.admin.createWorkflow(P, { source: spec(RANK_V2), resume: id });
    assert.equal(resumed.workflow.resumedFrom, id);
    const w2 = await ended(resumed.workflow.id);
    assert.equal(w2.state, 'succeeded');
    assert.equal(step(w2, 'generate').reused, 1);
    assert.equal(step(w2, 'refine').reused, 100);
    assert.equal(step(w2, 'rank').reused, 0);
    const [rank2] = await instances(w2.id, 'rank');
    assert.deepEqual(await newJobsSince(afterRetry), [rank2!.jobId], 'the resume ran rank alone');
  });

  test('onFailure: stop cancels the running branch and skips what had not started', async () => {
    const source = `
steps:
  bad:
    app: sh
    args: ["exit 1"]
    retries: 0
  slow:
    app: sh
    args: ["sleep 60"]
  later:
    app: sh
    args: ["true"]
    needs: [slow]
`;
    const w = await ended((await grid.admin.createWorkflow(P, { source })).workflow.id, 60_000);
    assert.equal(w.state, 'failed');
    assert.match(w.reason!, /step "bad" failed/);
    assert.equal(step(w, 'slow').status, 'cancelled');
    assert.equal(step(w, 'later').status, 'skipped');
    const [slow] = await instances(w.id, 'slow');
    await eventually(async () => ((await grid.admin.getJob(P, slow!.jobId)).job.state === 'cancelled' ? true : undefined), 'the slow job to be cancelled');
  });
});
