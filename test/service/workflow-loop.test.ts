import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { advance, WorkflowLoop } from '../../src/service/workflow-loop.js';
import { createApp } from '../api/util.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

/**
 * The workflow loop is a reconcile loop: passes racing each other (several servers) and a
 * pass that crashes between submitting a step's jobs and writing the progress leave exactly
 * one batch per step, never two.
 */
let s: TestServer;
const P = 'default';
const SPEC = `
steps:
  first:
    app: wl
    forEach: {list: [a, b, c, d, e]}
    args: ["{item}"]
  second:
    app: wl
    needs: [first]
`;

before(async () => {
  s = await startTestServer();
  // The server's own loop would race the test's passes on its own timer; stop it, so each test says who runs.
  await s.workflowLoop.stop();
  await createApp(s, P, 'wl');
});
after(async () => {
  await s.stop();
});

async function create(): Promise<{ id: number; projectId: number }> {
  const r = await s.call('POST', `/v1/projects/${P}/workflows`, { body: { source: SPEC } });
  assert.equal(r.status, 201, r.text);
  const w = (await s.ctx.store.openWorkflows(1000)).find((o) => o.id === r.body.workflow.id)!;
  return w;
}

/** A pass that dies between submitting a step's jobs and writing the progress (a crash, a lost connection). */
async function crashBeforeWrite(w: { id: number; projectId: number }): Promise<void> {
  const store = s.ctx.store;
  const real = store.updateWorkflow.bind(store);
  store.updateWorkflow = async () => {
    throw new Error('crash before the progress was written');
  };
  try {
    await assert.rejects(advance(s.ctx, w.projectId, w.id), /crash before/);
  } finally {
    store.updateWorkflow = real;
  }
}

async function batchesOf(workflowId: number): Promise<number> {
  const r = await s.call('GET', `/v1/projects/${P}/batches?limit=1000`);
  return (r.body.batches as Array<{ labels: Record<string, string> }>).filter((b) => b.labels['boxgrid.workflow'] === String(workflowId)).length;
}

test('passes racing over one workflow submit its first step once', async () => {
  const w = await create();
  await Promise.all(Array.from({ length: 6 }, () => advance(s.ctx, w.projectId, w.id)));
  assert.equal(await batchesOf(w.id), 1);
  const after = (await s.ctx.store.getWorkflow(w.projectId, w.id))!;
  assert.equal(after.progress.steps.first!.status, 'running');
  assert.equal(after.progress.steps.first!.instances.length, 5);
  assert.equal(new Set(after.progress.steps.first!.instances.map((i) => i.jobId)).size, 5);
  assert.equal(after.progress.steps.second!.status, 'waiting');
});

test('a pass that crashes after submitting and before writing is redone without a second batch', async () => {
  const w = await create();
  await crashBeforeWrite(w);
  const store = s.ctx.store;
  assert.equal(await batchesOf(w.id), 1, 'the crashed pass submitted');
  assert.equal((await store.getWorkflow(w.projectId, w.id))!.progress.steps.first!.status, 'waiting', 'and wrote nothing');
  const redone = (await advance(s.ctx, w.projectId, w.id))!;
  assert.equal(await batchesOf(w.id), 1, 'the redo got the same jobs back');
  assert.equal(redone.progress.steps.first!.status, 'running');
  const jobs = await s.call('GET', `/v1/projects/${P}/jobs?limit=1000`);
  const ids = redone.progress.steps.first!.instances.map((i) => i.jobId);
  for (const id of ids) assert.ok((jobs.body.jobs as Array<{ id: number }>).some((j) => j.id === id), `job ${id} exists`);
});

test('a workflow cancelled while a pass submitted its jobs gets those jobs cancelled too', async () => {
  const w = await create();
  const store = s.ctx.store;
  const real = store.updateWorkflow.bind(store);
  // The user's cancel lands between the pass's submission and its write.
  store.updateWorkflow = async (id, version, change) => {
    store.updateWorkflow = real;
    const r = await s.call('POST', `/v1/projects/${P}/workflows/${id}/cancel`);
    assert.equal(r.status, 200, r.text);
    return real(id, version, change);
  };
  try {
    await advance(s.ctx, w.projectId, w.id);
  } finally {
    store.updateWorkflow = real;
  }
  const after = (await store.getWorkflow(w.projectId, w.id))!;
  assert.equal(after.state, 'cancelled');
  const batches = (await s.call('GET', `/v1/projects/${P}/batches?limit=1000`)).body.batches as Array<{ id: number; labels: Record<string, string> }>;
  const mine = batches.filter((b) => b.labels['boxgrid.workflow'] === String(w.id));
  assert.equal(mine.length, 1);
  const detail = await s.call('GET', `/v1/projects/${P}/batches/${mine[0]!.id}`);
  assert.equal(detail.body.counts.cancelled, 5, JSON.stringify(detail.body.counts));
});

test('a crashed pass whose jobs changed since (a new app version) has them cancelled, and the step goes on in a new round', async () => {
  await createApp(s, P, 'wl2');
  const r = await s.call('POST', `/v1/projects/${P}/workflows`, { body: { source: SPEC.replaceAll('app: wl\n', 'app: wl2\n') } });
  assert.equal(r.status, 201, r.text);
  const w = (await s.ctx.store.getWorkflow(1, r.body.workflow.id))!;
  await crashBeforeWrite(w);
  // Before the pass is redone, the app gets a version: the same round's jobs would differ.
  const v = await s.call('POST', `/v1/projects/${P}/apps/wl2/versions`, { body: { description: 'fixed' } });
  assert.equal(v.status, 201, v.text);
  const redone = (await advance(s.ctx, w.projectId, w.id))!;
  const first = redone.progress.steps.first!;
  assert.equal(first.status, 'running');
  assert.equal(first.round, 2, 'a new round');
  const batches = (await s.call('GET', `/v1/projects/${P}/batches?limit=1000`)).body.batches as Array<{ id: number; appVersion: number; labels: Record<string, string> }>;
  const mine = batches.filter((b) => b.labels['boxgrid.workflow'] === String(w.id)).sort((a, b) => a.id - b.id);
  assert.equal(mine.length, 2);
  assert.deepEqual(mine.map((b) => b.appVersion), [1, 2]);
  assert.equal((await s.call('GET', `/v1/projects/${P}/batches/${mine[0]!.id}`)).body.counts.cancelled, 5, 'the orphaned round is cancelled');
  assert.deepEqual(first.batchIds, [mine[1]!.id]);
});

test("a client's Idempotency-Key cannot claim the loop's keys", async () => {
  const w = await create();
  // The same text as the loop's key for this workflow's first step, sent as a header for other jobs.
  const claim = await s.call('POST', `/v1/projects/${P}/batches`, { body: { app: 'wl', count: 1 }, headers: { 'idempotency-key': `workflow:${w.id}:first:1` } });
  assert.equal(claim.status, 201, claim.text);
  const after = (await advance(s.ctx, w.projectId, w.id))!;
  assert.equal(after.progress.steps.first!.status, 'running');
  assert.equal(after.progress.steps.first!.instances.length, 5);
});

test('cancelling finds the jobs a crashed pass submitted but never recorded', async () => {
  const w = await create();
  await crashBeforeWrite(w);
  const r = await s.call('POST', `/v1/projects/${P}/workflows/${w.id}/cancel`);
  assert.equal(r.status, 200, r.text);
  const batches = (await s.call('GET', `/v1/projects/${P}/batches?limit=1000`)).body.batches as Array<{ id: number; labels: Record<string, string> }>;
  const mine = batches.filter((b) => b.labels['boxgrid.workflow'] === String(w.id));
  assert.equal(mine.length, 1);
  assert.equal((await s.call('GET', `/v1/projects/${P}/batches/${mine[0]!.id}`)).body.counts.cancelled, 5);
});

test('one pass reaches every running workflow, however many there are', async () => {
  const ids: number[] = [];
  for (let i = 0; i < 210; i++) {
    const r = await s.call('POST', `/v1/projects/${P}/workflows`, { body: { source: 'steps:\n  only:\n    app: wl\n' } });
    assert.equal(r.status, 201, r.text);
    ids.push(r.body.workflow.id);
  }
  await new WorkflowLoop(s.ctx).pass();
  for (const id of ids) assert.equal((await s.ctx.store.getWorkflow(1, id))!.progress.steps.only!.status, 'running', `workflow ${id}`);
});
