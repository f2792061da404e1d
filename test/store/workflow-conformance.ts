import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import type { NewWorkflow, WorkflowChange, WorkflowProgress, WorkflowRecord, WorkflowSpec } from '../../src/domain/workflow.js';
import type { Store } from '../../src/store/store.js';
import { rejectsWithCode, withFreshStore, type OpenStore } from './conformance.js';

/**
 * Workflows through the Store port (service/workflows.ts keeps them): every adapter must keep
 * the spec, files and progress whole, scope reads by project, replay idempotent creates (also
 * when they race) and update only through compare and set on the version.
 */
const T0 = 1_700_000_000_000;
const SHA = (n: number) => n.toString(16).padStart(64, '0');

const SPEC: WorkflowSpec = {
  name: 'screen',
  onFailure: 'continue',
  steps: [
    {
      name: 'prepare', app: 'prep', appVersion: 3, args: ['--in', '/in/raw'], env: { MODE: 'fast' }, params: { n: { kind: 'literal', value: '17' } },
      inputs: { raw: { kind: 'blob', sha256: SHA(1) }, extra: { kind: 'file', path: './data/extra.csv' } },
      resources: { cores: 2 }, outputs: { list: { kind: 'files', glob: '*.xyz' }, count: { kind: 'value', path: 'count.json', type: 'json' } },
      forEach: null, retries: null, priority: 0, needs: [],
    },
    {
      name: 'dock', app: 'dock', appVersion: null, args: ['{candidate}'], env: {}, params: { count: { kind: 'ref', ref: { step: 'prepare', output: 'count' } } },
      inputs: {}, resources: {}, outputs: { score: { kind: 'value', path: 'score', type: 'number' } },
      forEach: { kind: 'files', ref: { step: 'prepare', output: 'list' }, as: 'candidate' }, retries: 2, priority: 5, needs: ['prepare'],
    },
  ],
};

const PROGRESS: WorkflowProgress = {
  steps: {
    prepare: {
      status: 'succeeded', reason: null, round: 1, batchIds: [4],
      instances: [{
        item: '', key: SHA(9), retryKey: SHA(8), jobId: 41, state: 'succeeded', reused: false,
        outputs: { list: { files: [{ name: 'a.xyz', sha256: SHA(2), size: 10 }] }, count: { value: { n: 1, nested: [null, 'é'] } } }, reason: null,
      }],
    },
    dock: { status: 'waiting', reason: null, round: 0, batchIds: [], instances: [] },
  },
};

const EMPTY: WorkflowProgress = { steps: {} };

export function runWorkflowConformance(name: string, open: OpenStore, opts: { skip?: string | false } = {}): void {
  const test = (title: string, fn: (s: Store) => Promise<void>) => it(title, () => withFreshStore(open, fn));

  /** Two projects and a user; `wf` makes a running workflow in a project, created at T0 + `at`. */
  async function world(s: Store) {
    const user = await s.createUser('alice', false, T0);
    const p = await s.createProject('p', 1, T0);
    const q = await s.createProject('q', 1, T0);
    const newWorkflow = (projectId: number, at: number, over: Partial<NewWorkflow> = {}): NewWorkflow => ({
      projectId, name: `wf-${at}`, state: 'running', createdBy: user.id, source: `name: wf-${at}\n`, spec: SPEC, files: {}, progress: EMPTY,
      resumedFrom: null, createdAt: T0 + at, ...over,
    });
    const wf = async (projectId: number, at: number, over: Partial<NewWorkflow> = {}): Promise<WorkflowRecord> =>
      (await s.createWorkflow(newWorkflow(projectId, at, over), null)).workflow;
    return { user, p, q, newWorkflow, wf };
  }

  const change = (over: Partial<WorkflowChange> = {}): WorkflowChange => ({ state: 'running', reason: null, progress: PROGRESS, updatedAt: T0 + 100, endedAt: null, ...over });

  describe(name, { skip: opts.skip ?? false }, () => {
    test('a workflow round-trips every field through getWorkflow', async (s) => {
      const g = await world(s);
      const first = await g.wf(g.p.id, 1);
      const w = g.newWorkflow(g.p.id, 2, {
        name: 'screen ✓', source: 'name: screen\nsteps:\n  - name: prepare # "quoted" \\ and unicode é\n', spec: SPEC,
        files: { './data/extra.csv': SHA(3), 'other file.txt': SHA(4) }, progress: PROGRESS, resumedFrom: first.id,
      });
      const created = await s.createWorkflow(w, { key: 'k1', requestHash: 'h1' });
      assert.equal(created.replayed, false);
      const expected: WorkflowRecord = { ...w, id: created.workflow.id, version: 1, reason: null, updatedAt: w.createdAt, endedAt: null };
      assert.deepEqual(created.workflow, expected);
      const got = await s.getWorkflow(g.p.id, created.workflow.id);
      assert.deepEqual(got, expected);
      assert.deepEqual(got!.spec, SPEC);
      assert.deepEqual(got!.progress, PROGRESS);
      assert.notEqual(created.workflow.id, first.id);
    });

    test("another project's workflow, or an unknown id, is null", async (s) => {
      const g = await world(s);
      const w = await g.wf(g.p.id, 1);
      assert.equal(await s.getWorkflow(g.q.id, w.id), null);
      assert.equal(await s.getWorkflow(g.p.id, w.id + 1000), null);
      assert.deepEqual(await s.listWorkflows(g.q.id, { limit: 10 }), []);
    });

    test('lists a project’s workflows newest first, a page at a time', async (s) => {
      const g = await world(s);
      const ids: number[] = [];
      for (let i = 0; i < 5; i++) {
        ids.push((await g.wf(g.p.id, i)).id);
        await g.wf(g.q.id, 100 + i); // interleaved: another project's rows in between
      }
      const seen: number[][] = [];
      let beforeId: number | undefined;
      for (;;) {
        const page = await s.listWorkflows(g.p.id, beforeId === undefined ? { limit: 2 } : { limit: 2, beforeId });
        if (page.length === 0) break;
        assert.ok(page.every((w) => w.projectId === g.p.id));
        seen.push(page.map((w) => w.id));
        beforeId = page[page.length - 1]!.id;
      }
      assert.deepEqual(seen, [[ids[4], ids[3]], [ids[2], ids[1]], [ids[0]]]);
      const [newest] = await s.listWorkflows(g.p.id, { limit: 1 });
      assert.deepEqual(newest, await s.getWorkflow(g.p.id, ids[4]!), 'list rows are whole records');
    });

    test('an idempotent create replays the first workflow; another request under the key is a conflict', async (s) => {
      const g = await world(s);
      const first = await s.createWorkflow(g.newWorkflow(g.p.id, 1), { key: 'k', requestHash: 'h' });
      const again = await s.createWorkflow(g.newWorkflow(g.p.id, 2), { key: 'k', requestHash: 'h' });
      assert.equal(again.replayed, true);
      assert.deepEqual(again.workflow, first.workflow, 'the first workflow, not the repeat');
      assert.equal((await s.listWorkflows(g.p.id, { limit: 10 })).length, 1, 'no second row');

      const e = await rejectsWithCode(s.createWorkflow(g.newWorkflow(g.p.id, 3), { key: 'k', requestHash: 'other' }), 'conflict');
      assert.equal(e.message, 'Idempotency-Key was already used for a different request');
      assert.equal(e.field, 'headers/idempotency-key');
      assert.equal((await s.listWorkflows(g.p.id, { limit: 10 })).length, 1);

      const elsewhere = await s.createWorkflow(g.newWorkflow(g.q.id, 4), { key: 'k', requestHash: 'other' });
      assert.equal(elsewhere.replayed, false, 'keys are per project');
      assert.notEqual(elsewhere.workflow.id, first.workflow.id);

      // Looked up alone (before a repeat is checked again): the first workflow, a conflict, or nothing.
      assert.deepEqual(await s.findIdempotentWorkflow(g.p.id, { key: 'k', requestHash: 'h' }), first.workflow);
      await rejectsWithCode(s.findIdempotentWorkflow(g.p.id, { key: 'k', requestHash: 'other' }), 'conflict');
      assert.equal(await s.findIdempotentWorkflow(g.p.id, { key: 'never-used', requestHash: 'h' }), null);
      assert.deepEqual(await s.findIdempotentWorkflow(g.q.id, { key: 'k', requestHash: 'other' }), elsewhere.workflow, 'per project');
      await g.wf(g.p.id, 5);
      await g.wf(g.p.id, 6);
      assert.equal((await s.listWorkflows(g.p.id, { limit: 10 })).length, 3, 'creates without a key are never replays');
    });

    test('concurrent creates with one key make one workflow', async (s) => {
      const g = await world(s);
      const results = await Promise.all(Array.from({ length: 5 }, (_, i) => s.createWorkflow(g.newWorkflow(g.p.id, i), { key: 'race', requestHash: 'h' })));
      assert.equal(new Set(results.map((r) => r.workflow.id)).size, 1, 'every request gets the same workflow');
      assert.equal(results.filter((r) => !r.replayed).length, 1, 'exactly one wrote it');
      const rows = await s.listWorkflows(g.p.id, { limit: 10 });
      assert.equal(rows.length, 1);
      assert.deepEqual(rows[0], results.find((r) => !r.replayed)!.workflow);
    });

    test('openWorkflows lists the running workflows of every project, oldest first, up to the limit', async (s) => {
      const g = await world(s);
      const a = await g.wf(g.p.id, 1);
      await g.wf(g.p.id, 2, { state: 'succeeded' });
      const c = await g.wf(g.q.id, 3);
      const d = await g.wf(g.p.id, 4);
      const e = await g.wf(g.q.id, 5);
      const ref = (w: WorkflowRecord) => ({ id: w.id, projectId: w.projectId });
      assert.deepEqual(await s.openWorkflows(10), [a, c, d, e].map(ref));
      assert.deepEqual(await s.openWorkflows(2), [a, c].map(ref));
      assert.deepEqual(await s.openWorkflows(2, c.id), [d, e].map(ref), 'the next page');
      assert.ok(await s.updateWorkflow(a.id, a.version, change({ state: 'failed', reason: 'step prepare failed', endedAt: T0 + 100 })));
      assert.ok(await s.updateWorkflow(d.id, d.version, change({ state: 'cancelled', endedAt: T0 + 100 })));
      assert.deepEqual(await s.openWorkflows(10), [c, e].map(ref), 'ended workflows leave the list');
    });

    test('updateWorkflow is compare and set on the version', async (s) => {
      const g = await world(s);
      const w = await g.wf(g.p.id, 1);
      const other = await g.wf(g.p.id, 2);
      const ended = change({ state: 'succeeded', reason: 'all steps succeeded', progress: PROGRESS, updatedAt: T0 + 50, endedAt: T0 + 50 });
      const updated = await s.updateWorkflow(w.id, 1, ended);
      const expected: WorkflowRecord = { ...w, ...ended, version: 2 };
      assert.deepEqual(updated, expected);
      assert.deepEqual(await s.getWorkflow(g.p.id, w.id), expected);

      assert.equal(await s.updateWorkflow(w.id, 1, change({ state: 'failed', updatedAt: T0 + 60 })), null, 'a stale version writes nothing');
      assert.deepEqual(await s.getWorkflow(g.p.id, w.id), expected, 'the row is unchanged');
      assert.equal(await s.updateWorkflow(w.id + 1000, 1, change()), null, 'an unknown workflow');
      assert.deepEqual(await s.getWorkflow(g.p.id, other.id), other, 'other workflows are untouched');

      const next = await s.updateWorkflow(w.id, 2, change({ state: 'succeeded', progress: EMPTY, updatedAt: T0 + 70, endedAt: T0 + 50 }));
      assert.equal(next?.version, 3);
      assert.deepEqual(next?.progress, EMPTY);
      assert.equal(next?.reason, null);
    });

    test('of two concurrent updates of one version, exactly one wins', async (s) => {
      const g = await world(s);
      const w = await g.wf(g.p.id, 1);
      const changes = [0, 1].map((i) => change({ reason: `writer ${i}`, updatedAt: T0 + 10 + i }));
      const results = await Promise.all(changes.map((c) => s.updateWorkflow(w.id, w.version, c)));
      const winners = results.filter((r): r is WorkflowRecord => r !== null);
      assert.equal(winners.length, 1, `one winner, got ${results.map((r) => (r === null ? 'null' : r.reason)).join(', ')}`);
      assert.equal(winners[0]!.version, 2);
      assert.deepEqual(await s.getWorkflow(g.p.id, w.id), winners[0]);
    });
  });
}
