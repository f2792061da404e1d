import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { BoxgridClient } from '../../src/client/client.js';
import {
  file, files, forEachFile, forEachItem, forEachSweep, forEachValue, literal, submitWorkflow, value, workflow,
} from '../../src/client/workflow-builder.js';
import { isBoxgridError } from '../../src/domain/errors.js';
import { parseWorkflow } from '../../src/domain/workflow-spec.js';
import type { StepSpec } from '../../src/domain/workflow.js';
import { startTestServer } from '../helpers/server.js';

const parse = (source: string) => {
  const r = parseWorkflow(source, { maxFanOut: 100_000 });
  if (!r.ok) assert.fail(r.problems.map((p) => `${p.line}:${p.column} ${p.path}: ${p.message}`).join('\n'));
  return r.spec;
};

const step = (over: Partial<StepSpec> & Pick<StepSpec, 'name' | 'app'>): StepSpec => ({
  appVersion: null, args: [], env: {}, params: {}, inputs: {}, resources: {}, outputs: {}, forEach: null, retries: null, priority: 0, needs: [], ...over,
});

describe('the workflow builder', () => {
  test('its source parses to the steps it was given', () => {
    const wf = workflow('search', { onFailure: 'continue' });
    const gen = wf.step('generate', {
      app: 'chem', appVersion: 3, args: ['gen', '{count}', 7], env: { SEED: 42 }, params: { count: 20 },
      inputs: { 'params.txt': file('./params.txt') }, resources: { cores: 2, memoryMiB: 512 },
      outputs: { candidates: files('cand-*.xyz'), report: file('report.txt') },
    });
    const refine = wf.step('refine', {
      app: 'chem', forEach: forEachFile(gen.output('candidates'), 'structure.xyz'), retries: 2, priority: 5,
      outputs: { energy: value('energy.txt', 'number'), label: value('label.txt') },
    });
    const sweep = wf.step('sweep', { app: 'chem', forEach: forEachSweep({ x: { from: 1, to: 3 }, y: { values: ['a', 'b'] } }), args: ['{x}', '{y}'] });
    wf.step('score', { app: 'chem', forEach: forEachValue(refine.output('label'), 'label'), args: ['{label}'] });
    wf.step('rank', {
      app: 'chem', params: { energies: refine.output('energy'), note: literal('steps.not.outputs.a-ref') },
      inputs: { refined: gen.output('report') }, needs: [sweep, 'score'],
    });
    wf.step('list', { app: 'chem', forEach: forEachItem(['a', 'b'], 'letter') });

    const spec = parse(wf.toSource());
    assert.equal(spec.name, 'search');
    assert.equal(spec.onFailure, 'continue');
    assert.deepEqual(spec.steps, [
      step({
        name: 'generate', app: 'chem', appVersion: 3, args: ['gen', '{count}', '7'], env: { SEED: '42' }, params: { count: { kind: 'literal', value: '20' } },
        inputs: { 'params.txt': { kind: 'file', path: './params.txt' } }, resources: { cores: 2, memoryMiB: 512 },
        outputs: { candidates: { kind: 'files', glob: 'cand-*.xyz' }, report: { kind: 'file', path: 'report.txt' } },
      }),
      step({
        name: 'refine', app: 'chem', forEach: { kind: 'files', ref: { step: 'generate', output: 'candidates' }, as: 'structure.xyz' }, retries: 2, priority: 5,
        outputs: { energy: { kind: 'value', path: 'energy.txt', type: 'number' }, label: { kind: 'value', path: 'label.txt', type: 'string' } },
        needs: ['generate'],
      }),
      step({ name: 'sweep', app: 'chem', args: ['{x}', '{y}'], forEach: { kind: 'sweep', sweep: { x: { from: 1, to: 3 }, y: { values: ['a', 'b'] } } } }),
      step({ name: 'score', app: 'chem', args: ['{label}'], forEach: { kind: 'values', ref: { step: 'refine', output: 'label' }, as: 'label' }, needs: ['refine'] }),
      step({
        name: 'rank', app: 'chem',
        params: { energies: { kind: 'ref', ref: { step: 'refine', output: 'energy' } }, note: { kind: 'literal', value: 'steps.not.outputs.a-ref' } },
        inputs: { refined: { kind: 'ref', ref: { step: 'generate', output: 'report' } } },
        needs: spec.steps[4]!.needs,
      }),
      step({ name: 'list', app: 'chem', forEach: { kind: 'list', as: 'letter', values: ['a', 'b'] } }),
    ]);
    assert.deepEqual([...spec.steps[4]!.needs].sort(), ['generate', 'refine', 'score', 'sweep']);
  });

  test('a reference to an output the step did not declare throws at build time', () => {
    const wf = workflow('w');
    const a = wf.step('a', { app: 'x', outputs: { out: file('o.txt') } });
    assert.equal(a.output('out'), 'steps.a.outputs.out');
    assert.throws(() => a.output('nope'), (e) => isBoxgridError(e) && /step "a" has no output "nope" \(it declares out\)/.test(e.message));
    const b = wf.step('b', { app: 'x' });
    assert.throws(() => b.output('x'), /it declares no outputs/);
    assert.throws(() => wf.step('a', { app: 'x' }), /already has a step "a"/);
    assert.throws(() => wf.step('1bad', { app: 'x' }), /not a step name/);
  });

  test('submitWorkflow uploads the local files relative to baseDir and sends the files map', async () => {
    const s = await startTestServer();
    try {
      const client = new BoxgridClient({ url: s.url, token: s.adminToken });
      await client.createApp('default', { name: 'chem', image: 'busybox:1.36' });
      const dir = await mkdtemp(join(tmpdir(), 'boxgrid-wfb-'));
      await writeFile(join(dir, 'params.txt'), 'seed=1\n');
      const wf = workflow('up');
      wf.step('a', { app: 'chem', inputs: { 'p.txt': file('./params.txt') } });
      const { workflow: w } = await submitWorkflow(client, 'default', wf, { baseDir: dir });
      assert.equal(w.name, 'up');
      const missing = await submitWorkflow(client, 'default', wf, { baseDir: join(dir, 'nowhere') }).catch((e: unknown) => e);
      assert.ok(isBoxgridError(missing) && missing.problems?.[0]?.path === 'steps.a.inputs.p.txt', String(missing));
    } finally {
      await s.stop();
    }
  });
});
