import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { INPUT_NAME_RE } from '../../src/domain/names.js';
import { formatProblem, parseWorkflow } from '../../src/domain/workflow-spec.js';
import {
  failureReason, firstFailure, globToRegExp, initialProgress, instanceKey, MAX_VALUE_BYTES, nextMoves, parseValue, planStep, resetForRetry,
  resolveOutputs, reusable, settleStep, StepError, stopAll, valueFiles, workflowOutcome,
} from '../../src/domain/workflow-plan.js';
import type { InstanceProgress, InstanceState, OutputFileRef, ResolvedOutput, StepProgress, StepSpec, WorkflowProgress, WorkflowSpec } from '../../src/domain/workflow.js';

/** The planning of workflows (domain/workflow-plan.ts): specs parsed from YAML, progress made by hand. */

const MAX = 100;
const APP = 7;

/** Lines joined, so a spec reads as it would in a file. */
const y = (...lines: string[]): string => lines.join('\n') + '\n';

function parse(source: string): WorkflowSpec {
  const r = parseWorkflow(source, { maxFanOut: MAX });
  if (!r.ok) assert.fail(`expected no problems, got:\n${r.problems.map((p) => formatProblem(p)).join('\n')}`);
  return r.spec;
}

const sha = (n: number): string => n.toString(16).padStart(64, '0');
const file = (name: string, n: number): OutputFileRef => ({ name, sha256: sha(n), size: n });

function step(spec: WorkflowSpec, name: string): StepSpec {
  const s = spec.steps.find((x) => x.name === name);
  assert.ok(s, `no step ${name}`);
  return s;
}

let nextJob = 1;
function inst(outputs: Record<string, ResolvedOutput> | null, o: Partial<InstanceProgress> = {}): InstanceProgress {
  return { item: '', key: `k${nextJob}`, retryKey: `r${nextJob}`, jobId: nextJob++, state: 'succeeded', reused: false, outputs, reason: null, ...o };
}

/** Marks a step succeeded with these instances. */
function done(p: WorkflowProgress, name: string, instances: InstanceProgress[]): void {
  Object.assign(p.steps[name]!, { status: 'succeeded', reason: null, instances, round: 1 });
}

function plan(spec: WorkflowSpec, name: string, progress: WorkflowProgress, files: Record<string, string> = {}, appId = APP) {
  return planStep(spec, step(spec, name), progress, files, appId, MAX);
}

const stepProgress = (states: Array<[InstanceState, string?]>, status: StepProgress['status'] = 'running'): StepProgress => ({
  status, reason: null, round: 1, batchIds: [1],
  instances: states.map(([state, reason], i) => inst(null, { state, reason: reason ?? null, item: states.length > 1 ? `i${i}` : '', jobId: 100 + i })),
});

// ── fan-out ────────────────────────────────────────────────────────────────

describe('planStep: fan-out', () => {
  it('a step without forEach is one job with item ""', () => {
    const spec = parse(y('steps:', '  a:', '    app: x', '    args: [run, "{n}"]', '    params: {n: 3}'));
    const jobs = plan(spec, 'a', initialProgress(spec));
    assert.equal(jobs.length, 1);
    assert.equal(jobs[0]!.item, '');
    assert.deepEqual(jobs[0]!.args, ['run', '3']);
    assert.deepEqual(jobs[0]!.params, { n: '3' });
  });

  it('a list: one job per value, the value as the param `as`', () => {
    const spec = parse(y('steps:', '  a:', '    app: x', '    args: ["--mol={m}"]', '    forEach: {list: [h2o, co2, ch4], as: m}'));
    const jobs = plan(spec, 'a', initialProgress(spec));
    assert.deepEqual(jobs.map((j) => j.item), ['h2o', 'co2', 'ch4']);
    assert.deepEqual(jobs.map((j) => j.args), [['--mol=h2o'], ['--mol=co2'], ['--mol=ch4']]);
    assert.deepEqual(jobs[1]!.params, { m: 'co2' });
  });

  it('a sweep: one job per point, its params named after the dimensions, items "x=1,y=a"', () => {
    const spec = parse(y('steps:', '  a:', '    app: x', '    args: ["{x}", "{y}"]', '    forEach:', '      sweep: {x: {from: 1, to: 2, step: 1}, y: {values: [a, b]}}'));
    const jobs = plan(spec, 'a', initialProgress(spec));
    assert.deepEqual(jobs.map((j) => j.item), ['x=1,y=a', 'x=1,y=b', 'x=2,y=a', 'x=2,y=b']);
    assert.deepEqual(jobs.map((j) => j.args), [['1', 'a'], ['1', 'b'], ['2', 'a'], ['2', 'b']]);
    assert.deepEqual(jobs[3]!.params, { x: '2', y: 'b' });
  });

  it('files: one job per file of every instance of a fanned-out producer, in instance order, each as the input `as`', () => {
    const spec = parse(y(
      'steps:',
      '  gen:', '    app: x', '    forEach: {list: [p, q]}', '    outputs: {cands: {files: "*.xyz"}}',
      '  refine:', '    app: y', '    inputs: {model.bin: {blob: "' + sha(99) + '"}}', '    forEach: {files: steps.gen.outputs.cands, as: in.xyz}',
    ));
    const p = initialProgress(spec);
    done(p, 'gen', [inst({ cands: { files: [file('a.xyz', 1), file('b.xyz', 2)] } }), inst({ cands: { files: [file('c.xyz', 3)] } })]);
    const jobs = plan(spec, 'refine', p);
    assert.deepEqual(jobs.map((j) => j.item), ['a.xyz', 'b.xyz', 'c.xyz']);
    assert.deepEqual(jobs.map((j) => j.inputs), [1, 2, 3].map((n) => ({ 'model.bin': sha(99), 'in.xyz': sha(n) })));
  });

  it('files over an output that matched nothing: StepError naming it', () => {
    const spec = parse(y(
      'steps:', '  gen:', '    app: x', '    outputs: {cands: {files: "*.xyz"}}',
      '  refine:', '    app: y', '    forEach: {files: steps.gen.outputs.cands, as: in.xyz}',
    ));
    const p = initialProgress(spec);
    done(p, 'gen', [inst({ cands: { files: [] } })]);
    assert.throws(() => plan(spec, 'refine', p), (e: unknown) => e instanceof StepError && /nothing to fan out over: steps\.gen\.outputs\.cands is empty/.test(e.message));
  });

  it('values of a single producer: the items of its JSON array (non-strings as JSON)', () => {
    const spec = parse(y(
      'steps:', '  a:', '    app: x', '    outputs: {list: {value: l.json, type: json}}',
      '  b:', '    app: y', '    args: ["{v}"]', '    forEach: {values: steps.a.outputs.list, as: v}',
    ));
    const p = initialProgress(spec);
    done(p, 'a', [inst({ list: { value: ['x', 2, { k: true }] } })]);
    assert.deepEqual(plan(spec, 'b', p).map((j) => j.args[0]), ['x', '2', '{"k":true}']);
  });

  it('values of a fanned-out producer: one item per instance, its value', () => {
    const spec = parse(y(
      'steps:', '  a:', '    app: x', '    forEach: {list: [1, 2, 3]}', '    outputs: {e: {value: e.txt, type: number}}',
      '  b:', '    app: y', '    args: ["{item}"]', '    forEach: {values: steps.a.outputs.e}',
    ));
    const p = initialProgress(spec);
    done(p, 'a', [inst({ e: { value: 1.5 } }), inst({ e: { value: -2 } }), inst({ e: { value: 'n/a' } })]);
    const jobs = plan(spec, 'b', p);
    assert.deepEqual(jobs.map((j) => j.item), ['1.5', '-2', 'n/a']);
    assert.deepEqual(jobs.map((j) => j.params), [{ item: '1.5' }, { item: '-2' }, { item: 'n/a' }]);
  });

  it('values of a single producer that is not a JSON array: StepError', () => {
    const spec = parse(y(
      'steps:', '  a:', '    app: x', '    outputs: {list: {value: l.json, type: json}}',
      '  b:', '    app: y', '    forEach: {values: steps.a.outputs.list}',
    ));
    for (const value of [{ a: 1 }, 'abc', 3, null]) {
      const p = initialProgress(spec);
      done(p, 'a', [inst({ list: { value } })]);
      assert.throws(() => plan(spec, 'b', p), (e: unknown) => e instanceof StepError && e.message === 'forEach.values: steps.a.outputs.list is not a JSON array');
    }
  });

  it('more items than maxFanOut: StepError', () => {
    const spec = parse(y(
      'steps:', '  a:', '    app: x', '    outputs: {list: {value: l.json, type: json}}',
      '  b:', '    app: y', '    forEach: {values: steps.a.outputs.list}',
    ));
    const p = initialProgress(spec);
    done(p, 'a', [inst({ list: { value: Array.from({ length: 5 }, (_, i) => i) } })]);
    assert.throws(() => planStep(spec, step(spec, 'b'), p, {}, APP, 4), (e: unknown) => e instanceof StepError && /fans out to 5 jobs, more than the limit of 4/.test(e.message));
    assert.equal(planStep(spec, step(spec, 'b'), p, {}, APP, 5).length, 5);
  });

  it('property: a list fan-out is one job per item, in order, with distinct keys for distinct items', () => {
    const item = fc.string({ minLength: 1, maxLength: 12 }).filter((s) => /^[A-Za-z0-9_.-]+$/.test(s));
    fc.assert(
      fc.property(fc.uniqueArray(item, { minLength: 1, maxLength: 30 }), (values) => {
        const spec = parse(y('steps:', '  a:', '    app: x', '    args: ["--in={item}"]', '    env: {V: "{item}"}', `    forEach: {list: ${JSON.stringify(values)}}`));
        const jobs = plan(spec, 'a', initialProgress(spec));
        assert.deepEqual(jobs.map((j) => j.item), values);
        assert.deepEqual(jobs.map((j) => j.args), values.map((v) => [`--in=${v}`]));
        assert.equal(new Set(jobs.map((j) => j.key)).size, values.length);
        assert.equal(new Set(jobs.map((j) => j.retryKey)).size, values.length);
        // Planning again is deterministic.
        assert.deepEqual(plan(spec, 'a', initialProgress(spec)).map((j) => j.key), jobs.map((j) => j.key));
      }),
      { numRuns: 100 },
    );
  });
});

// ── inputs and params ──────────────────────────────────────────────────────

describe('planStep: fan-in naming of file inputs', () => {
  it('a single `file` output of a non-fanned producer keeps the input name', () => {
    const spec = parse(y('steps:', '  a:', '    app: x', '    outputs: {m: {file: model.bin}}', '  b:', '    app: y', '    inputs: {weights: steps.a.outputs.m}'));
    const p = initialProgress(spec);
    done(p, 'a', [inst({ m: { files: [file('model.bin', 5)] } })]);
    assert.deepEqual(plan(spec, 'b', p)[0]!.inputs, { weights: sha(5) });
  });

  it('a `file` output of a fanned-out producer: <input>-<n>-<file>, one per instance', () => {
    const spec = parse(y('steps:', '  a:', '    app: x', '    forEach: {list: [p, q]}', '    outputs: {m: {file: r.txt}}', '  b:', '    app: y', '    inputs: {res: steps.a.outputs.m}'));
    const p = initialProgress(spec);
    done(p, 'a', [inst({ m: { files: [file('r.txt', 1)] } }), inst({ m: { files: [file('r.txt', 2)] } })]);
    assert.deepEqual(plan(spec, 'b', p)[0]!.inputs, { 'res-1-r.txt': sha(1), 'res-2-r.txt': sha(2) });
  });

  it('a `files` output: numbered from 1, padded to sort, over every instance in order', () => {
    const spec = parse(y('steps:', '  a:', '    app: x', '    forEach: {list: [p, q]}', '    outputs: {fs: {files: "*.dat"}}', '  b:', '    app: y', '    inputs: {d: steps.a.outputs.fs}'));
    const p = initialProgress(spec);
    const first = Array.from({ length: 7 }, (_, i) => file(`f${i}.dat`, i + 1));
    const second = Array.from({ length: 5 }, (_, i) => file(`g${i}.dat`, i + 8));
    done(p, 'a', [inst({ fs: { files: first } }), inst({ fs: { files: second } })]);
    const inputs = plan(spec, 'b', p)[0]!.inputs;
    const names = Object.keys(inputs);
    assert.equal(names.length, 12);
    assert.equal(names[0], 'd-01-f0.dat');
    assert.equal(names[6], 'd-07-f6.dat');
    assert.equal(names[7], 'd-08-g0.dat');
    assert.equal(names[11], 'd-12-g4.dat');
    assert.equal(inputs['d-12-g4.dat'], sha(12));
    assert.deepEqual([...names].sort(), names, 'the padded names sort in order');
  });

  it('a `files` output of a single producer with one match is still numbered', () => {
    const spec = parse(y('steps:', '  a:', '    app: x', '    outputs: {fs: {files: "*.dat"}}', '  b:', '    app: y', '    inputs: {d: steps.a.outputs.fs}'));
    const p = initialProgress(spec);
    done(p, 'a', [inst({ fs: { files: [file('only.dat', 1)] } })]);
    assert.deepEqual(plan(spec, 'b', p)[0]!.inputs, { 'd-1-only.dat': sha(1) });
  });

  it('a name longer than an input name may be falls back to <input>-<n>', () => {
    const spec = parse(y('steps:', '  a:', '    app: x', '    outputs: {fs: {files: "*"}}', '  b:', '    app: y', '    inputs: {d: steps.a.outputs.fs}'));
    const p = initialProgress(spec);
    const long = 'x'.repeat(200);
    const fits = 'y'.repeat(128 - 'd-1-'.length);
    done(p, 'a', [inst({ fs: { files: [file(long, 1), file(fits, 2)] } })]);
    assert.deepEqual(plan(spec, 'b', p)[0]!.inputs, { 'd-1': sha(1), [`d-2-${fits}`]: sha(2) });
  });

  it('an input name so long that even <input>-<n> would not fit is cut short: every name stays a valid input name', () => {
    const name = 'i'.repeat(127);
    const spec = parse(y('steps:', '  a:', '    app: x', '    outputs: {fs: {files: "*"}}', '  b:', '    app: y', `    inputs: {${name}: steps.a.outputs.fs}`));
    const p = initialProgress(spec);
    done(p, 'a', [inst({ fs: { files: Array.from({ length: 10 }, (_, i) => file(`f${i}.txt`, i + 1)) } })]);
    const inputs = plan(spec, 'b', p)[0]!.inputs;
    assert.equal(Object.keys(inputs).length, 10);
    for (const n of Object.keys(inputs)) assert.match(n, INPUT_NAME_RE);
    assert.equal(inputs[`${'i'.repeat(125)}-01`], sha(1));
    assert.equal(inputs[`${'i'.repeat(125)}-10`], sha(10));
  });

  it('blob and file inputs: the blob digest, and the digest the `files` map gives the local path', () => {
    const spec = parse(y('steps:', '  a:', '    app: x', `    inputs: {b.bin: {blob: "${sha(1)}"}, l.txt: {file: ./data/l.txt}}`));
    assert.deepEqual(plan(spec, 'a', initialProgress(spec), { './data/l.txt': sha(2) })[0]!.inputs, { 'b.bin': sha(1), 'l.txt': sha(2) });
  });
});

describe('planStep: params', () => {
  it('a value param of a single producer is its value (text as is, numbers and JSON as JSON)', () => {
    const spec = parse(y(
      'steps:', '  a:', '    app: x', '    outputs: {s: {value: s.txt}, n: {value: n.txt, type: number}, j: {value: j.json, type: json}}',
      '  b:', '    app: y', '    args: ["{s}", "{n}", "{j}"]', '    params: {s: steps.a.outputs.s, n: steps.a.outputs.n, j: steps.a.outputs.j}',
    ));
    const p = initialProgress(spec);
    done(p, 'a', [inst({ s: { value: 'hello world' }, n: { value: 0.25 }, j: { value: { a: [1] } } })]);
    assert.deepEqual(plan(spec, 'b', p)[0]!.args, ['hello world', '0.25', '{"a":[1]}']);
  });

  it('a value param of a fanned-out producer is the JSON array of every instance\'s value, in order', () => {
    const spec = parse(y(
      'steps:', '  a:', '    app: x', '    forEach: {list: [1, 2, 3]}', '    outputs: {e: {value: e.txt, type: number}}',
      '  b:', '    app: y', '    env: {ALL: "{es}"}', '    params: {es: steps.a.outputs.e}',
    ));
    const p = initialProgress(spec);
    done(p, 'a', [inst({ e: { value: 3 } }), inst({ e: { value: 1 } }), inst({ e: { value: 2 } })]);
    const [job] = plan(spec, 'b', p);
    assert.equal(job!.params.es, '[3,1,2]');
    assert.deepEqual(job!.env, { ALL: '[3,1,2]' });
  });

  it('{name} is substituted in args and env from literal params and the fan-out; unknown names and {{ }} stay', () => {
    const spec = parse(y(
      'steps:', '  a:', '    app: x',
      '    args: ["{seed}-{item}", "{nope}", "{{seed}}"]',
      '    env: {SEED: "{seed}", ITEM: "x{item}x"}',
      '    params: {seed: 42}',
      '    forEach: {list: [a, b]}',
    ));
    const jobs = plan(spec, 'a', initialProgress(spec));
    assert.deepEqual(jobs.map((j) => j.args), [['42-a', '{nope}', '{seed}'], ['42-b', '{nope}', '{seed}']]);
    assert.deepEqual(jobs.map((j) => j.env), [{ SEED: '42', ITEM: 'xax' }, { SEED: '42', ITEM: 'xbx' }]);
  });
});

// ── keys ───────────────────────────────────────────────────────────────────

describe('keys', () => {
  it('equal work, equal key; the app id changes key but not retryKey; args and inputs change both', () => {
    const spec = parse(y('steps:', '  a:', '    app: x', '    args: [go]', `    inputs: {i: {blob: "${sha(1)}"}}`));
    const [j1] = plan(spec, 'a', initialProgress(spec));
    const [j2] = plan(spec, 'a', initialProgress(spec));
    const [j3] = plan(spec, 'a', initialProgress(spec), {}, APP + 1);
    assert.equal(j1!.key, j2!.key);
    assert.equal(j1!.retryKey, j2!.retryKey);
    assert.notEqual(j1!.key, j3!.key);
    assert.equal(j1!.retryKey, j3!.retryKey);
    assert.notEqual(j1!.key, j1!.retryKey);
    assert.equal(j1!.key, instanceKey(APP, ['go'], {}, { i: sha(1) }));
    assert.equal(j1!.retryKey, instanceKey(null, ['go'], {}, { i: sha(1) }));
    assert.notEqual(instanceKey(APP, ['go', 'x'], {}, { i: sha(1) }), j1!.key);
    assert.notEqual(instanceKey(APP, ['go'], {}, { i: sha(2) }), j1!.key);
    assert.notEqual(instanceKey(APP, ['go'], {}, { j: sha(1) }), j1!.key, 'the input name counts, not only its digest');
    assert.notEqual(instanceKey(APP, ['go'], { A: '1' }, { i: sha(1) }), j1!.key);
  });

  it('the order of inputs and env does not matter; the order of args does', () => {
    const a = instanceKey(1, ['x', 'y'], { A: '1', B: '2' }, { p: sha(1), q: sha(2) });
    assert.equal(instanceKey(1, ['x', 'y'], { B: '2', A: '1' }, { q: sha(2), p: sha(1) }), a);
    assert.notEqual(instanceKey(1, ['y', 'x'], { A: '1', B: '2' }, { p: sha(1), q: sha(2) }), a);
    assert.match(a, /^[0-9a-f]{64}$/);
  });

  it('reusable: the first succeeded instance of each key or retryKey', () => {
    const a = inst(null, { key: 'K', retryKey: 'R' });
    const b = inst(null, { key: 'K', retryKey: 'R2' });
    const c = inst(null, { key: 'K3', retryKey: 'R3', state: 'failed' });
    const steps = [{ ...stepProgress([]), instances: [a, b, c] }];
    const byKey = reusable(steps, 'key');
    assert.deepEqual([...byKey.keys()], ['K']);
    assert.equal(byKey.get('K'), a);
    assert.deepEqual([...reusable(steps, 'retryKey').keys()], ['R', 'R2']);
  });
});

// ── outputs of a finished job ──────────────────────────────────────────────

describe('resolveOutputs', () => {
  const f = (n: number, size = n) => ({ sha256: sha(n), size });

  it('file, files (glob matched, sorted) and value outputs', () => {
    const outputs = parse(y(
      'steps:', '  a:', '    app: x',
      '    outputs:',
      '      model: {file: model.bin}',
      '      cands: {files: "cand-?.xyz"}',
      '      logs: {files: "*.log"}',
      '      none: {files: "*.nothing"}',
      '      e: {value: e.txt, type: number}',
      '      j: {value: j.json, type: json}',
      '      s: {value: s.txt}',
    )).steps[0]!.outputs;
    const files = {
      'model.bin': f(1), 'cand-2.xyz': f(2), 'cand-1.xyz': f(3), 'cand-10.xyz': f(4), 'b.log': f(5), 'a.log': f(6),
      'e.txt': f(7), 'j.json': f(8), 's.txt': f(9), 'xcand-1.xyz': f(10),
    };
    const reads = { [sha(7)]: ' -1.5e3\n', [sha(8)]: '[1, "a"]', [sha(9)]: '  some text \n' };
    assert.deepEqual(valueFiles(outputs, files).sort(), [sha(7), sha(8), sha(9)]);
    const r = resolveOutputs(outputs, files, reads);
    assert.deepEqual(r, {
      outputs: {
        model: { files: [{ name: 'model.bin', sha256: sha(1), size: 1 }] },
        cands: { files: [{ name: 'cand-1.xyz', sha256: sha(3), size: 3 }, { name: 'cand-2.xyz', sha256: sha(2), size: 2 }] },
        logs: { files: [{ name: 'a.log', sha256: sha(6), size: 6 }, { name: 'b.log', sha256: sha(5), size: 5 }] },
        none: { files: [] },
        e: { value: -1500 },
        j: { value: [1, 'a'] },
        s: { value: 'some text' },
      },
    });
  });

  const one = (line: string) => parse(y('steps:', '  a:', '    app: x', '    outputs:', `      ${line}`)).steps[0]!.outputs;

  it('a missing file or value file: an error naming the output and the file', () => {
    assert.deepEqual(resolveOutputs(one('m: {file: model.bin}'), {}, {}), { error: 'output "m": the job did not write model.bin' });
    assert.deepEqual(resolveOutputs(one('e: {value: e.txt, type: number}'), { 'x.txt': f(1) }, {}), { error: 'output "e": the job did not write e.txt' });
  });

  it('a value file larger than 64 KiB: an error, and it is not read', () => {
    const outputs = one('e: {value: e.txt}');
    const files = { 'e.txt': f(1, MAX_VALUE_BYTES + 1) };
    assert.deepEqual(valueFiles(outputs, files), []);
    assert.deepEqual(resolveOutputs(outputs, files, {}), { error: `output "e": e.txt holds ${MAX_VALUE_BYTES + 1} bytes, more than the ${MAX_VALUE_BYTES} a value may` });
    assert.deepEqual(resolveOutputs(outputs, { 'e.txt': f(1, MAX_VALUE_BYTES) }, { [sha(1)]: 'ok' }), { outputs: { e: { value: 'ok' } } });
  });

  it('a value file not read: an error', () => {
    assert.deepEqual(resolveOutputs(one('e: {value: e.txt}'), { 'e.txt': f(1) }, {}), { error: 'output "e": e.txt could not be read' });
  });

  it('number and json parse errors name the output and the file', () => {
    assert.deepEqual(resolveOutputs(one('e: {value: e.txt, type: number}'), { 'e.txt': f(1) }, { [sha(1)]: 'twelve\n' }), { error: 'output "e": e.txt is not a number: "twelve"' });
    assert.deepEqual(resolveOutputs(one('j: {value: j.json, type: json}'), { 'j.json': f(1) }, { [sha(1)]: '{oops' }), { error: 'output "j": j.json is not JSON' });
  });

  it('parseValue', () => {
    assert.deepEqual(parseValue('  42 \n', 'number'), { value: 42 });
    assert.deepEqual(parseValue('\n', 'number'), { error: 'is not a number: ""' });
    assert.deepEqual(parseValue('NaN', 'number'), { error: 'is not a number: "NaN"' });
    assert.deepEqual(parseValue('Infinity', 'number'), { error: 'is not a number: "Infinity"' });
    assert.ok('error' in parseValue('x'.repeat(100), 'number'));
    assert.equal((parseValue('x'.repeat(100), 'number') as { error: string }).error, `is not a number: "${'x'.repeat(40)}"`);
    assert.deepEqual(parseValue(' "a" ', 'json'), { value: 'a' });
    assert.deepEqual(parseValue('null', 'json'), { value: null });
    assert.deepEqual(parseValue('', 'json'), { error: 'is not JSON' });
    assert.deepEqual(parseValue('\t x y \n', 'string'), { value: 'x y' });
  });

  it('globToRegExp: * and ? are wildcards, everything else literal', () => {
    const re = globToRegExp('a.b+c(*)?');
    assert.ok(re.test('a.b+c(xyz)1'));
    assert.ok(re.test('a.b+c()1'));
    assert.ok(!re.test('aXb+c(xyz)1'), '. is literal');
    assert.ok(!re.test('a.b+c(xyz)'), '? is exactly one character');
    assert.ok(!re.test('za.b+c()1'), 'anchored');
    assert.ok(globToRegExp('$x^').test('$x^'));
  });
});

// ── where steps and the workflow stand ─────────────────────────────────────

describe('settleStep and failureReason', () => {
  it('running while any job is open, succeeded when all did, else failed with the reason', () => {
    assert.deepEqual(settleStep(stepProgress([['succeeded'], ['queued']])), { status: 'running', reason: null });
    assert.deepEqual(settleStep(stepProgress([['failed', 'x'], ['running']])), { status: 'running', reason: null });
    assert.deepEqual(settleStep(stepProgress([['succeeded'], ['succeeded']])), { status: 'succeeded', reason: null });
    assert.deepEqual(settleStep(stepProgress([['succeeded'], ['failed', 'exit code 3']])), { status: 'failed', reason: '1 of 2 jobs failed: job 101 (i1): exit code 3' });
  });

  it('failureReason: one job, several, cancelled ones, the first failed one named', () => {
    assert.equal(failureReason(stepProgress([['failed', 'exit code 1']])), 'its job failed: job 100: exit code 1');
    assert.equal(failureReason(stepProgress([['cancelled', 'cancelled by user']])), 'its job was cancelled: job 100: cancelled by user');
    assert.equal(failureReason(stepProgress([['cancelled', 'c'], ['succeeded'], ['failed', 'oom'], ['failed', 'later']])), '3 of 4 jobs failed: job 102 (i2): oom');
    assert.equal(failureReason(stepProgress([['cancelled', 'c1'], ['cancelled', 'c2'], ['succeeded']])), '2 of 3 jobs were cancelled: job 100 (i0): c1');
    assert.equal(failureReason(stepProgress([['failed']])), 'its job failed: job 100: failed', 'no reason: the state');
    assert.equal(failureReason(stepProgress([['succeeded']])), 'failed');
  });
});

const CHAIN = y(
  'steps:',
  '  a:', '    app: x',
  '  b:', '    app: x', '    needs: [a]',
  '  c:', '    app: x', '    needs: [b]',
  '  d:', '    app: x',
);

describe('nextMoves', () => {
  it('ready: waiting steps whose needs all succeeded; steps whose needs are running wait', () => {
    const spec = parse(CHAIN);
    const p = initialProgress(spec);
    let m = nextMoves(spec, p);
    assert.deepEqual(m.ready.map((s) => s.name), ['a', 'd']);
    assert.deepEqual(m.blocked, []);
    p.steps.a!.status = 'running';
    p.steps.d!.status = 'running';
    m = nextMoves(spec, p);
    assert.deepEqual([m.ready, m.blocked], [[], []]);
    p.steps.a!.status = 'succeeded';
    assert.deepEqual(nextMoves(spec, p).ready.map((s) => s.name), ['b']);
  });

  it('blocked: a need that failed, was skipped or cancelled, with the reason', () => {
    const spec = parse(CHAIN);
    for (const [status, word] of [['failed', 'failed'], ['skipped', 'was skipped'], ['cancelled', 'was cancelled']] as const) {
      const p = initialProgress(spec);
      p.steps.a!.status = status;
      const m = nextMoves(spec, p);
      assert.deepEqual(m.blocked.map((b) => [b.step.name, b.reason]), [['b', `needs step "a", which ${word}`]]);
      assert.deepEqual(m.ready.map((s) => s.name), ['d']);
    }
  });

  it('a step needing one failed and one running need is blocked at once', () => {
    const spec = parse(y('steps:', '  a:', '    app: x', '  b:', '    app: x', '  c:', '    app: x', '    needs: [a, b]'));
    const p = initialProgress(spec);
    Object.assign(p.steps, { a: { ...p.steps.a!, status: 'running' }, b: { ...p.steps.b!, status: 'failed' } });
    assert.deepEqual(nextMoves(spec, p).blocked.map((b) => b.reason), ['needs step "b", which failed']);
  });
});

describe('firstFailure, stopAll, resetForRetry, workflowOutcome', () => {
  it('firstFailure: a step already failed, or a running one with a failed job (marked failed at once)', () => {
    const spec = parse(CHAIN);
    const p = initialProgress(spec);
    assert.equal(firstFailure(spec, p), null);
    p.steps.a = stepProgress([['succeeded'], ['failed', 'exit code 2'], ['running']]);
    assert.equal(firstFailure(spec, p), 'a');
    assert.equal(p.steps.a.status, 'failed');
    assert.equal(p.steps.a.reason, '1 of 3 jobs failed: job 101 (i1): exit code 2');
    assert.equal(p.steps.a.instances[2]!.state, 'running', 'its open jobs are left to stopAll');
    const q = initialProgress(spec);
    q.steps.a = stepProgress([['succeeded'], ['running']]);
    q.steps.d = { ...stepProgress([]), status: 'failed', reason: 'x' };
    assert.equal(firstFailure(spec, q), 'd');
    assert.equal(q.steps.a.status, 'running');
  });

  it('stopAll: waiting steps skipped, running cancelled, open jobs cancelled; returns the steps with jobs to cancel', () => {
    const spec = parse(CHAIN);
    const p = initialProgress(spec);
    p.steps.a = stepProgress([['succeeded'], ['failed', 'boom'], ['queued'], ['running']]);
    firstFailure(spec, p);
    p.steps.d = stepProgress([['running']]);
    const toCancel = stopAll(spec, p, 'the workflow stopped');
    assert.deepEqual(toCancel, ['a', 'd']);
    assert.deepEqual([p.steps.a.status, p.steps.b!.status, p.steps.c!.status, p.steps.d.status], ['failed', 'skipped', 'skipped', 'cancelled']);
    assert.deepEqual([p.steps.b!.reason, p.steps.d.reason], ['the workflow stopped', 'the workflow stopped']);
    assert.match(p.steps.a.reason!, /^1 of 4 jobs failed/, 'a failed step keeps its own reason');
    assert.deepEqual(p.steps.a.instances.map((i) => [i.state, i.reason]), [['succeeded', null], ['failed', 'boom'], ['cancelled', 'the workflow stopped'], ['cancelled', 'the workflow stopped']]);
    assert.deepEqual(p.steps.d.instances.map((i) => i.state), ['cancelled']);
    assert.deepEqual(stopAll(spec, p, 'again'), [], 'nothing open any more');
  });

  it('resetForRetry: every step that did not succeed waits again; succeeded steps and all instances are kept', () => {
    const spec = parse(CHAIN);
    const p = initialProgress(spec);
    p.steps.a = { ...stepProgress([['succeeded']]), status: 'succeeded' };
    p.steps.b = { ...stepProgress([['succeeded'], ['failed', 'x']]), status: 'failed', reason: 'x' };
    p.steps.c = { ...p.steps.c!, status: 'skipped', reason: 's' };
    p.steps.d = { ...stepProgress([['cancelled', 'c']]), status: 'cancelled', reason: 'c' };
    const before = structuredClone(p);
    assert.deepEqual(resetForRetry(spec, p), ['b', 'c', 'd']);
    assert.deepEqual(p.steps.a, before.steps.a);
    for (const s of ['b', 'c', 'd']) {
      assert.equal(p.steps[s]!.status, 'waiting');
      assert.equal(p.steps[s]!.reason, null);
      assert.deepEqual(p.steps[s]!.instances, before.steps[s]!.instances, 'instances kept: their succeeded jobs are reused by retryKey');
      assert.equal(p.steps[s]!.round, before.steps[s]!.round);
    }
    assert.deepEqual(nextMoves(spec, p).ready.map((s) => s.name), ['b', 'd']);
  });

  it('workflowOutcome', () => {
    const spec = parse(CHAIN);
    const p = initialProgress(spec);
    assert.deepEqual(workflowOutcome(spec, p), { state: 'running', reason: null });
    for (const s of ['a', 'b', 'c', 'd']) p.steps[s]!.status = 'succeeded';
    assert.deepEqual(workflowOutcome(spec, p), { state: 'succeeded', reason: null });
    p.steps.c!.status = 'running';
    assert.deepEqual(workflowOutcome(spec, p), { state: 'running', reason: null });
    Object.assign(p.steps.c!, { status: 'skipped', reason: 'needs step "b", which failed' });
    Object.assign(p.steps.b!, { status: 'failed', reason: 'its job failed: job 3: exit code 1' });
    assert.deepEqual(workflowOutcome(spec, p), { state: 'failed', reason: 'step "b" failed: its job failed: job 3: exit code 1' });
    Object.assign(p.steps.b!, { status: 'succeeded', reason: null });
    assert.deepEqual(workflowOutcome(spec, p), { state: 'failed', reason: 'step "c" was skipped' });
    Object.assign(p.steps.c!, { status: 'cancelled' });
    assert.deepEqual(workflowOutcome(spec, p), { state: 'failed', reason: 'step "c" was cancelled' });
  });
});
