import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { eventually } from '../helpers/grid.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { failed, ok, P as GRID_P, withGrid, type Grid } from './protocol-grid.js';
import { assertError, createApp, openEvents, sha256, stopAfterStreams, type SseStream } from './util.js';

/**
 * Workflows through HTTP (routes/workflows.ts), with no agent: the workflow loop of the test
 * server queues the jobs; where a job must end, a host speaks the agent protocol by hand.
 */

let s: TestServer;
const P = '/v1/projects/default';
const T = { timeout: 20_000 };
const open: SseStream[] = [];

/** Lines joined, so a test reads with the line numbers it asserts. */
const y = (...lines: string[]): string => lines.join('\n') + '\n';

/** A: one job writing a number; B: one job taking it as a param. */
const TWO_STEPS = y(
  'name: two-steps',
  'steps:',
  '  a:',
  '    app: sim',
  '    args: [emit]',
  '    retries: 0',
  '    outputs: {n: {value: n.txt, type: number}}',
  '  b:',
  '    app: sim',
  '    args: ["--n={n}"]',
  '    params: {n: steps.a.outputs.n}',
);

interface StepView {
  name: string;
  status: string;
  reason: string | null;
  jobs: number;
  counts: Record<string, number>;
  batchIds: number[];
}
interface WorkflowView {
  id: number;
  name: string;
  state: string;
  reason: string | null;
  updatedAt: string;
  steps: StepView[];
}

async function getWorkflow(server: TestServer, id: number, project = 'default'): Promise<WorkflowView> {
  const r = await server.call('GET', `/v1/projects/${project}/workflows/${id}`);
  assert.equal(r.status, 200, r.text);
  return r.body.workflow;
}

const stepOf = (w: WorkflowView, name: string): StepView => w.steps.find((st) => st.name === name)!;

/** Waits until the workflow loop has moved the workflow to where `pred` holds. */
function until(server: TestServer, id: number, pred: (w: WorkflowView) => boolean, what: string, project = 'default'): Promise<WorkflowView> {
  return eventually(async () => {
    const w = await getWorkflow(server, id, project);
    return pred(w) ? w : undefined;
  }, what, 10_000);
}

async function instances(server: TestServer, id: number, step: string, project = 'default'): Promise<Array<{ jobId: number; state: string; outputs: any }>> {
  const r = await server.call('GET', `/v1/projects/${project}/workflows/${id}/steps/${step}`);
  assert.equal(r.status, 200, r.text);
  return r.body.instances;
}

async function create(source: string, extra: Record<string, unknown> = {}): Promise<WorkflowView> {
  const r = await s.call('POST', `${P}/workflows`, { body: { source, ...extra } });
  assert.equal(r.status, 201, r.text);
  assert.equal(r.body.replayed, false);
  return r.body.workflow;
}

before(async () => {
  s = await startTestServer();
  await createApp(s, 'default', 'sim');
});
after(async () => {
  for (const st of open) st.close();
  await stopAfterStreams(s);
});

describe('checking a spec', () => {
  const missingBlob = sha256('never uploaded');
  const BAD = y(
    'steps:', //                                   1
    '  a:', //                                     2
    '    app: nosuch', //                          3
    '    inputs:', //                              4
    `      d.bin: {blob: "${missingBlob}"}`, //    5
    '  b:', //                                     6
    '    app: sim', //                             7
    '    inputs:', //                              8
    '      x.txt: {file: ./x}', //                 9
  );

  function assertBad(r: Awaited<ReturnType<TestServer['call']>>): void {
    assertError(r, 400, 'invalid_request', 'body/source', { messageNames: /source: 3:10: steps\.a\.app: no app named "nosuch".*\(and 2 more problems\)/ });
    assert.deepEqual(
      r.body.error.problems.map((p: { path: string; line: number }) => [p.path, p.line]),
      [['steps.a.app', 3], ['steps.a.inputs.d.bin', 5], ['steps.b.inputs.x.txt', 9]],
    );
    const [app, blob, file] = r.body.error.problems;
    assert.match(app.message, /no app named "nosuch" in project "default"/);
    assert.match(blob.message, new RegExp(`blob ${missingBlob} is not uploaded`));
    assert.match(file.message, /the local file \.\/x was not uploaded/);
  }

  test('a spec with several problems: 400 naming each with its line, on create and on validate; nothing is created', T, async () => {
    assertBad(await s.call('POST', `${P}/workflows`, { body: { source: BAD } }));
    assertBad(await s.call('POST', `${P}/workflows/validate`, { body: { source: BAD } }));
    const list = await s.call('GET', `${P}/workflows`);
    assert.equal(list.status, 200, list.text);
    assert.deepEqual(list.body.workflows, []);
  });

  test('a YAML syntax error: 400 with the line of the error', T, async () => {
    const source = y('steps:', '  a:', '    app: sim', '    args: [a, b', '  b:', '    app: sim');
    for (const path of ['workflows', 'workflows/validate']) {
      const r = await s.call('POST', `${P}/${path}`, { body: { source } });
      assertError(r, 400, 'invalid_request', 'body/source');
      assert.ok(r.body.error.problems.length >= 1, r.text);
      for (const p of r.body.error.problems) {
        assert.equal(p.path, '');
        assert.ok(p.line >= 4 && p.line <= 7, `line ${p.line}: ${p.message}`);
      }
    }
  });

  test('validate answers the steps and their needs; a files entry naming a blob not uploaded is a problem', T, async () => {
    const r = await s.call('POST', `${P}/workflows/validate`, { body: { source: TWO_STEPS } });
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.body, { name: 'two-steps', steps: [{ name: 'a', needs: [] }, { name: 'b', needs: ['a'] }] });
    const withFile = y('steps:', '  a:', '    app: sim', '    inputs: {x.txt: {file: ./x}}');
    const bad = await s.call('POST', `${P}/workflows/validate`, { body: { source: withFile, files: { './x': sha256('not there') } } });
    assertError(bad, 400, 'invalid_request', 'body/source');
    assert.match(bad.body.error.problems[0].message, /is not uploaded/);
  });

  test('resume of an unknown workflow: 400 on body/resume', T, async () => {
    assertError(await s.call('POST', `${P}/workflows`, { body: { source: TWO_STEPS, resume: 999_999 } }), 400, 'invalid_request', 'body/resume', { messageNames: /resume: workflow 999999 not found/ });
  });

  test('a viewer can neither create nor validate', T, async () => {
    const viewer = await s.userWithRole('vic', 'default', 'viewer');
    assertError(await s.call('POST', `${P}/workflows`, { token: viewer, body: { source: TWO_STEPS } }), 403, 'forbidden');
    assertError(await s.call('POST', `${P}/workflows/validate`, { token: viewer, body: { source: TWO_STEPS } }), 403, 'forbidden');
  });
});

describe('a running workflow', () => {
  test('201; the first step is queued with labels, the second waits; unknown steps are 404', T, async () => {
    const created = await create(TWO_STEPS);
    assert.equal(created.state, 'running');
    assert.equal(created.name, 'two-steps');
    const w = await until(s, created.id, (x) => stepOf(x, 'a').status === 'running', 'step a running');
    assert.deepEqual(
      w.steps.map((st) => [st.name, st.status, st.jobs, st.counts]),
      [
        ['a', 'running', 1, { queued: 1, running: 0, succeeded: 0, failed: 0, cancelled: 0 }],
        ['b', 'waiting', 0, { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 }],
      ],
    );
    assert.equal(stepOf(w, 'a').batchIds.length, 1);
    const [inst] = await instances(s, created.id, 'a');
    const job = await s.call('GET', `${P}/jobs/${inst!.jobId}`);
    assert.equal(job.status, 200, job.text);
    assert.equal(job.body.job.state, 'queued');
    assert.equal(job.body.job.batchId, stepOf(w, 'a').batchIds[0]);
    assert.deepEqual(job.body.job.args, ['emit']);
    assert.deepEqual(job.body.job.labels, { 'boxgrid.workflow': String(created.id), 'boxgrid.step': 'a' });
    assertError(await s.call('GET', `${P}/workflows/${created.id}/steps/nope`), 404, 'not_found');
    assertError(await s.call('GET', `${P}/workflows/999999`), 404, 'not_found');
    // Retry is for workflows that ended.
    assertError(await s.call('POST', `${P}/workflows/${created.id}/retry`), 409, 'illegal_transition');
    await s.call('POST', `${P}/workflows/${created.id}/cancel`);
  });

  test('Idempotency-Key: the same body replays (200, same workflow), another body conflicts (409)', T, async () => {
    const headers = { 'idempotency-key': 'wf-key-1' };
    const first = await s.call('POST', `${P}/workflows`, { body: { source: TWO_STEPS }, headers });
    assert.equal(first.status, 201, first.text);
    const again = await s.call('POST', `${P}/workflows`, { body: { source: TWO_STEPS }, headers });
    assert.equal(again.status, 200, again.text);
    assert.equal(again.body.replayed, true);
    assert.equal(again.body.workflow.id, first.body.workflow.id);
    const other = await s.call('POST', `${P}/workflows`, { body: { source: TWO_STEPS.replace('two-steps', 'other') }, headers });
    assertError(other, 409, 'conflict', 'headers/idempotency-key', { messageNames: /Idempotency-Key/ });
    const list = await s.call('GET', `${P}/workflows`);
    assert.equal(list.body.workflows.filter((x: WorkflowView) => x.id === first.body.workflow.id).length, 1);
    assert.equal(list.body.workflows.filter((x: WorkflowView) => x.name === 'other').length, 0);
    await s.call('POST', `${P}/workflows/${first.body.workflow.id}/cancel`);
  });

  test('cancel: its jobs cancelled, steps cancelled or skipped, an event on its stream; again: unchanged; retry: the jobs again', T, async () => {
    const created = await create(TWO_STEPS);
    await until(s, created.id, (x) => stepOf(x, 'a').status === 'running', 'step a running');
    const [before] = await instances(s, created.id, 'a');
    const st = await openEvents(s, `${P}/events?workflow=${created.id}`);
    open.push(st);

    const c = await s.call('POST', `${P}/workflows/${created.id}/cancel`);
    assert.equal(c.status, 200, c.text);
    const w: WorkflowView = c.body.workflow;
    assert.equal(w.state, 'cancelled');
    assert.equal(w.reason, 'cancelled by admin');
    assert.deepEqual(w.steps.map((x) => [x.name, x.status, x.reason]), [['a', 'cancelled', 'the workflow was cancelled'], ['b', 'skipped', 'the workflow was cancelled']]);
    assert.deepEqual(stepOf(w, 'a').counts, { queued: 0, running: 0, succeeded: 0, failed: 0, cancelled: 1 });
    assert.equal((await s.call('GET', `${P}/jobs/${before!.jobId}`)).body.job.state, 'cancelled');

    const e = await st.until((x) => x.event === 'workflow' && x.data.state === 'cancelled' && x.data.step === undefined);
    assert.equal(e.data.type, 'workflow');
    assert.equal(e.data.workflowId, created.id);
    assert.equal(e.data.reason, 'cancelled by admin');

    const again = await s.call('POST', `${P}/workflows/${created.id}/cancel`);
    assert.equal(again.status, 200, again.text);
    assert.deepEqual(again.body.workflow, w, 'a second cancel changes nothing');

    const r = await s.call('POST', `${P}/workflows/${created.id}/retry`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.body.workflow.state, 'running');
    assert.equal(r.body.workflow.reason, null);
    const w2 = await until(s, created.id, (x) => stepOf(x, 'a').status === 'running', 'step a running again');
    assert.equal(stepOf(w2, 'b').status, 'waiting');
    assert.equal(stepOf(w2, 'a').batchIds.length, 2, 'submitted again, in a new batch');
    const [after] = await instances(s, created.id, 'a');
    assert.notEqual(after!.jobId, before!.jobId);
    assert.equal(after!.state, 'queued');
    const job = await s.call('GET', `${P}/jobs/${after!.jobId}`);
    assert.equal(job.body.job.state, 'queued');
    assert.deepEqual(job.body.job.args, ['emit']);
    await s.call('POST', `${P}/workflows/${created.id}/cancel`);
  });

  test('events: following a workflow and a batch at once is 400; an unknown workflow 404', T, async () => {
    assertError(await s.call('GET', `${P}/events?workflow=1&batch=1`), 400, 'invalid_request');
    assertError(await s.call('GET', `${P}/events?workflow=999999`), 404, 'not_found');
  });
});

// ── to the end, with a host speaking the agent protocol by hand ────────────

type Host = Awaited<ReturnType<Grid['host']>>;

async function claimOne(h: Host, jobId: number): Promise<number> {
  const tasks = await h.claim({ maxTasks: 1 });
  assert.deepEqual(tasks.map((t) => t.jobId), [jobId]);
  return tasks[0].taskId;
}

/** Creates TWO_STEPS on the grid's server and has a host claim step a's job. */
async function startTwoSteps(g: Grid, app: Record<string, unknown> = {}): Promise<{ id: number; jobA: number; h: Host; taskA: number }> {
  await createApp(g.s, GRID_P, 'sim', app);
  const r = await g.s.call('POST', `/v1/projects/${GRID_P}/workflows`, { body: { source: TWO_STEPS } });
  assert.equal(r.status, 201, r.text);
  const id: number = r.body.workflow.id;
  await until(g.s, id, (x) => stepOf(x, 'a').status === 'running', 'step a running', GRID_P);
  const [a] = await instances(g.s, id, 'a', GRID_P);
  const h = await g.host();
  return { id, jobA: a!.jobId, h, taskA: await claimOne(h, a!.jobId) };
}

describe('a workflow run to the end through the agent protocol', () => {
  test('a value output of one step becomes the param of the next: its job args carry it; the workflow succeeds', T, () =>
    withGrid(async (g) => {
      const { id, h, taskA } = await startTwoSteps(g);
      const out = Buffer.from(' 42\n');
      assert.equal((await h.upload(taskA, out)).status, 201);
      const rep = await h.report(taskA, { ...ok, outputs: { 'n.txt': { sha256: sha256(out), size: out.length }, 'other.log': { sha256: sha256(out), size: out.length } } });
      assert.equal(rep.status, 200, rep.text);

      const w = await until(g.s, id, (x) => stepOf(x, 'b').status === 'running', 'step b running', GRID_P);
      assert.equal(stepOf(w, 'a').status, 'succeeded');
      const [doneA] = await instances(g.s, id, 'a', GRID_P);
      assert.deepEqual(doneA!.outputs, { n: { value: 42 } });
      const [b] = await instances(g.s, id, 'b', GRID_P);
      const jobB = (await g.job(b!.jobId)).job;
      assert.deepEqual(jobB.args, ['--n=42']);
      assert.deepEqual(jobB.labels, { 'boxgrid.workflow': String(id), 'boxgrid.step': 'b' });

      const taskB = await claimOne(h, b!.jobId);
      assert.equal((await h.report(taskB, ok)).status, 200);
      const end = await until(g.s, id, (x) => x.state !== 'running', 'the workflow ended', GRID_P);
      assert.equal(end.state, 'succeeded', JSON.stringify(end));
      assert.equal(end.reason, null);
      assert.deepEqual(end.steps.map((x) => x.status), ['succeeded', 'succeeded']);
      assertError(await g.s.call('POST', `/v1/projects/${GRID_P}/workflows/${id}/retry`), 409, 'illegal_transition');
    }));

  test('retries: 0 is honoured: one failed attempt fails the step and, under onFailure: stop, the workflow', T, () =>
    withGrid(async (g) => {
      const { id, jobA, h, taskA } = await startTwoSteps(g, { maxAttempts: 3 });
      assert.equal((await h.report(taskA, failed(3))).status, 200);
      assert.equal((await g.job(jobA)).job.state, 'failed', 'no second attempt, though the app allows 3');
      const end = await until(g.s, id, (x) => x.state !== 'running', 'the workflow ended', GRID_P);
      assert.equal(end.state, 'failed');
      assert.match(end.reason ?? '', new RegExp(`^step "a" failed: its job failed: job ${jobA}: `));
      assert.deepEqual(end.steps.map((x) => x.status), ['failed', 'skipped']);
      assert.match(stepOf(end, 'b').reason ?? '', /step "a" failed/);
    }));

  test('a value output that is not a number fails the step with why', T, () =>
    withGrid(async (g) => {
      const { id, h, taskA } = await startTwoSteps(g);
      const out = Buffer.from('lots\n');
      await h.upload(taskA, out);
      assert.equal((await h.report(taskA, { ...ok, outputs: { 'n.txt': { sha256: sha256(out), size: out.length } } })).status, 200);
      const end = await until(g.s, id, (x) => x.state !== 'running', 'the workflow ended', GRID_P);
      assert.equal(end.state, 'failed');
      assert.match(stepOf(end, 'a').reason ?? '', /output "n": n\.txt is not a number: "lots"/);
    }));
});
