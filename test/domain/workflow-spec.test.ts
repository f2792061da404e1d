import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { formatProblem, parseWorkflow, topologicalOrder, type ParseResult, type Problem } from '../../src/domain/workflow-spec.js';
import type { StepSpec, WorkflowSpec } from '../../src/domain/workflow.js';

const OPTS = { maxFanOut: 100 };
const SHA = 'ab'.repeat(32);

/** Lines joined, so a test reads with the line numbers it asserts. */
const y = (...lines: string[]): string => lines.join('\n') + '\n';

function ok(source: string): Extract<ParseResult, { ok: true }> {
  const r = parseWorkflow(source, OPTS);
  if (!r.ok) assert.fail(`expected no problems, got:\n${r.problems.map((p) => formatProblem(p)).join('\n')}`);
  return r;
}

function problems(source: string, opts = OPTS): Problem[] {
  const r = parseWorkflow(source, opts);
  assert.equal(r.ok, false, 'expected problems');
  return r.ok ? [] : r.problems;
}

/** Exactly one problem, at `path` on `line`, its message matching. */
function one(source: string, path: string, line: number, message: RegExp | string, opts = OPTS): Problem {
  const ps = problems(source, opts);
  assert.equal(ps.length, 1, `expected one problem, got:\n${ps.map((p) => formatProblem(p)).join('\n')}`);
  const p = ps[0]!;
  assert.equal(p.path, path);
  assert.equal(p.line, line, formatProblem(p));
  if (typeof message === 'string') assert.equal(p.message, message);
  else assert.match(p.message, message);
  return p;
}

const step = (r: { spec: WorkflowSpec }, name: string): StepSpec => r.spec.steps.find((s) => s.name === name)!;

describe('parseWorkflow: a good spec', () => {
  const source = y(
    'name: structure-search',                           // 1
    'onFailure: continue',                              // 2
    'steps:',                                           // 3
    '  generate:',                                      // 4
    '    app: search@3',                                // 5
    '    args: [generate, --count, "{count}", 1.50, true]', // 6
    '    env: {SEED: "{seed}", LEVEL: 3, DEBUG: false}', // 7
    '    params:',                                      // 8
    '      count: 100',                                 // 9
    '      seed: "7"',                                  // 10
    '    outputs:',                                     // 11
    '      candidates: {files: "cand-*.xyz"}',          // 12
    '      report: {file: report.txt}',                 // 13
    '  refine:',                                        // 14
    '    app: search',                                  // 15
    '    forEach:',                                     // 16
    '      files: steps.generate.outputs.candidates',   // 17
    '      as: cand.xyz',                               // 18
    '    inputs:',                                      // 19
    '      config.json: {file: ./config.json}',         // 20
    `      table.dat: {blob: ${SHA}}`,                  // 21
    '    resources: {cores: 0.5, memoryMiB: 256, diskMiB: 100, gpus: 0}', // 22
    '    outputs:',                                     // 23
    '      energy: {value: energy.txt, type: number}',  // 24
    '      refined: {file: refined.xyz}',               // 25
    '    retries: 2',                                   // 26
    '    priority: -5',                                 // 27
    '  rank:',                                          // 28
    '    app: rank',                                    // 29
    '    needs: [generate]',                            // 30
    '    params:',                                      // 31
    '      energies: steps.refine.outputs.energy',      // 32
    '      raw: {value: "steps.x.outputs.y"}',          // 33
    '    inputs:',                                      // 34
    '      best.xyz: steps.refine.outputs.refined',     // 35
    '    retries: null',                                // 36
  );

  it('maps every field to the model', () => {
    const r = ok(source);
    assert.equal(r.spec.name, 'structure-search');
    assert.equal(r.spec.onFailure, 'continue');
    assert.deepEqual(r.spec.steps.map((s) => s.name), ['generate', 'refine', 'rank']);
    assert.deepEqual(step(r, 'generate'), {
      name: 'generate',
      app: 'search',
      appVersion: 3,
      args: ['generate', '--count', '{count}', '1.50', 'true'],
      env: { SEED: '{seed}', LEVEL: '3', DEBUG: 'false' },
      params: { count: { kind: 'literal', value: '100' }, seed: { kind: 'literal', value: '7' } },
      inputs: {},
      resources: {},
      outputs: { candidates: { kind: 'files', glob: 'cand-*.xyz' }, report: { kind: 'file', path: 'report.txt' } },
      forEach: null,
      retries: null,
      priority: 0,
      needs: [],
    });
    const refine = step(r, 'refine');
    assert.equal(refine.appVersion, null);
    assert.deepEqual(refine.forEach, { kind: 'files', ref: { step: 'generate', output: 'candidates' }, as: 'cand.xyz' });
    assert.deepEqual(refine.inputs, { 'config.json': { kind: 'file', path: './config.json' }, 'table.dat': { kind: 'blob', sha256: SHA } });
    assert.deepEqual(refine.resources, { cores: 0.5, memoryMiB: 256, diskMiB: 100, gpus: 0 });
    assert.deepEqual(refine.outputs.energy, { kind: 'value', path: 'energy.txt', type: 'number' });
    assert.equal(refine.retries, 2);
    assert.equal(refine.priority, -5);
    assert.deepEqual(refine.needs, ['generate']);
    const rank = step(r, 'rank');
    assert.deepEqual(rank.params, {
      energies: { kind: 'ref', ref: { step: 'refine', output: 'energy' } },
      raw: { kind: 'literal', value: 'steps.x.outputs.y' },
    });
    assert.deepEqual(rank.inputs, { 'best.xyz': { kind: 'ref', ref: { step: 'refine', output: 'refined' } } });
    // Explicit needs and referenced steps, deduplicated, in the order the file mentions them.
    assert.deepEqual(rank.needs, ['generate', 'refine']);
    assert.equal(rank.retries, null);
  });

  it('at() points at steps, apps, inputs and params', () => {
    const r = ok(source);
    assert.deepEqual(r.at('steps.generate'), { line: 4, column: 3 });
    assert.deepEqual(r.at('steps.refine'), { line: 14, column: 3 });
    assert.deepEqual(r.at('steps.generate.app'), { line: 5, column: 10 });
    assert.deepEqual(r.at('steps.rank.app'), { line: 29, column: 10 });
    assert.equal(r.at('steps.refine.inputs.config.json')?.line, 20);
    assert.equal(r.at('steps.refine.inputs.table.dat')?.line, 21);
    assert.deepEqual(r.at('steps.rank.params.energies'), { line: 32, column: 17 });
    assert.equal(r.at('steps.rank.inputs.best.xyz')?.line, 35);
    assert.equal(r.at('steps.nope'), null);
  });

  it('defaults name, onFailure, and forEach.as', () => {
    const r = ok(y('steps:', '  a:', '    app: x', '    forEach: {list: [1, two, true]}'));
    assert.equal(r.spec.name, 'workflow');
    assert.equal(r.spec.onFailure, 'stop');
    assert.deepEqual(step(r, 'a').forEach, { kind: 'list', as: 'item', values: ['1', 'two', 'true'] });
  });

  it('takes a sweep, keeping numbers', () => {
    const r = ok(y('steps:', '  a:', '    app: x', '    forEach:', '      sweep: {x: {from: 1, to: 10, step: 1}, y: {values: [a, 2]}}'));
    assert.deepEqual(step(r, 'a').forEach, { kind: 'sweep', sweep: { x: { from: 1, to: 10, step: 1 }, y: { values: ['a', 2] } } });
  });

  it('takes forEach.values over a fanned-out step or a json value', () => {
    const r = ok(y(
      'steps:',
      '  score:',
      '    app: x',
      '    forEach: {list: [a, b]}',
      '    outputs: {s: {value: s.txt}, all: {value: all.json, type: json}}',
      '  each:',
      '    app: x',
      '    forEach: {values: steps.score.outputs.s, as: score}',
      '  each2:',
      '    app: x',
      '    forEach: {values: steps.score.outputs.all}',
    ));
    assert.deepEqual(step(r, 'each').forEach, { kind: 'values', ref: { step: 'score', output: 's' }, as: 'score' });
    assert.deepEqual(step(r, 'each2').forEach, { kind: 'values', ref: { step: 'score', output: 'all' }, as: 'item' });
  });

  it('reads JSON with the same result', () => {
    const json = JSON.stringify({
      steps: {
        a: { app: 'x', outputs: { o: { file: 'o.txt' } } },
        b: { app: 'y@2', args: ['-n', 3], inputs: { 'o.txt': 'steps.a.outputs.o' } },
      },
    }, null, 2);
    const r = ok(json);
    assert.deepEqual(step(r, 'b').needs, ['a']);
    assert.equal(step(r, 'b').appVersion, 2);
    assert.deepEqual(step(r, 'b').args, ['-n', '3']);
    assert.equal(r.at('steps.b')?.line, 11);
  });
});

describe('parseWorkflow: syntax and shape', () => {
  it('reports a YAML syntax error at its line', () => {
    const ps = problems(y('steps:', '  a:', '    app: a: b', '    args: [1]'));
    assert.ok(ps.length >= 1);
    assert.ok(ps.every((p) => p.path === ''));
    assert.equal(ps[0]!.line, 3, ps.map((p) => formatProblem(p)).join('\n'));
    assert.ok(problems(y('steps:', '  a:', '    app: "x', '    args: [1')).length >= 1);
  });

  it('reports a JSON syntax error at its line', () => {
    const ps = problems('{\n  "steps": {\n    "a": {"app": "x",}\n  ,\n}\n}}\n');
    assert.ok(ps.length >= 1);
    assert.ok(ps.some((p) => p.line >= 3), ps.map((p) => formatProblem(p)).join('\n'));
  });

  it('reports duplicate keys with their path, in YAML and JSON', () => {
    one(y('steps:', '  a:', '    app: x', '    app: y'), 'steps.a.app', 4, 'duplicate key "app"');
    one(y('steps:', '  a: {app: x}', '  b: {app: y}', '  a: {app: z}'), 'steps.a', 4, 'duplicate key "a"');
    one('{\n  "steps": {"a": {"app": "x"}},\n  "steps": {}\n}', 'steps', 3, 'duplicate key "steps"');
  });

  it('wants a mapping at the top', () => {
    one(y('- a', '- b'), '', 1, /must be a mapping/);
    one('[1, 2]', '', 1, /must be a mapping/);
    one('', '', 1, /empty/);
    one('# only a comment\n', '', 1, /empty/);
  });

  it('wants steps: present, a mapping, not empty', () => {
    one(y('name: x'), 'steps', 1, /needs "steps"/);
    one(y('name: x', 'steps: [a, b]'), 'steps', 2, /must be a mapping.*not a list/);
    one(y('name: x', 'steps: {}'), 'steps', 2, 'has no steps');
    one(y('name: x', 'steps:'), 'steps', 2, /must be a mapping.*not null/);
  });

  it('names unknown keys and the allowed ones', () => {
    one(y('nam: x', 'steps: {a: {app: x}}'), 'nam', 1, 'unknown key "nam" in a workflow (allowed: name, onFailure, steps)');
    one(y('steps:', '  a:', '    app: x', '    retry: 2'), 'steps.a.retry', 4, /^unknown key "retry" in a step \(allowed: app, args, env, params, inputs, resources, outputs, forEach, retries, priority, needs\)$/);
    one(y('steps:', '  a:', '    app: x', '    forEach: {list: [a], by: x}'), 'steps.a.forEach.by', 4, /unknown key "by" in forEach \(allowed: list, sweep, files, values, as\)/);
    one(y('steps:', '  a:', '    app: x', '    outputs:', '      o: {file: o.txt, kind: file}'), 'steps.a.outputs.o.kind', 5, /unknown key "kind" in an output \(allowed: file, files, value, type\)/);
    one(y('steps:', '  a:', '    app: x', '    resources:', '      memory: 3'), 'steps.a.resources.memory', 5, /unknown key "memory" in resources \(allowed: cores, memoryMiB, diskMiB, gpus\)/);
  });

  it('refuses aliases', () => {
    one(y('steps:', '  a:', '    app: &n x', '  b:', '    app: *n'), 'steps.b.app', 5, /aliases/);
  });

  it('refuses a document over 1 MiB and more than 1,000 steps', () => {
    one(`# ${'x'.repeat(1024 * 1024)}\nsteps: {a: {app: x}}`, '', 1, /larger than/);
    const many = ['steps:', ...Array.from({ length: 1001 }, (_, i) => `  s${i}: {app: x}`)];
    one(y(...many), 'steps', 1, /1001 steps, more than the limit of 1000/);
    ok(y(...many.slice(0, 1001)));
  });

  it('collects every problem, sorted by line and column', () => {
    const ps = problems(y(
      'steps:',
      '  a:',
      '    app: X',         // 3: bad app name
      '    retries: -1',    // 4
      '    args: {a: 1}',   // 5
      '  b:',
      '    priority: 1.5',  // 7
      '    needs: [c]',     // 8
    ));
    assert.deepEqual(ps.map((p) => [p.line, p.path]), [
      [3, 'steps.a.app'], [4, 'steps.a.retries'], [5, 'steps.a.args'], [6, 'steps.b.app'], [7, 'steps.b.priority'], [8, 'steps.b.needs.0'],
    ]);
  });
});

describe('parseWorkflow: types and names', () => {
  const inStep = (...lines: string[]) => y('steps:', '  s:', '    app: x', ...lines.map((l) => `    ${l}`));

  it('checks the workflow name and failure policy', () => {
    one(y('name: "a/b"', 'steps: {a: {app: x}}'), 'name', 1, /not a workflow name/);
    one(y('onFailure: halt', 'steps: {a: {app: x}}'), 'onFailure', 1, /not a failure policy/);
  });

  it('checks step names and app names', () => {
    one(y('steps:', '  a.b: {app: x}'), 'steps.a.b', 2, /not a step name/);
    one(y('steps:', '  1a: {app: x}'), 'steps.1a', 2, /not a step name/);
    one(y('steps:', '  a: {args: []}'), 'steps.a.app', 2, 'needs "app"');
    one(y('steps:', '  a:', '    app: Search'), 'steps.a.app', 3, /"Search" is not an app name/);
    one(y('steps:', '  a:', '    app: search@0'), 'steps.a.app', 3, /not an app version/);
    one(y('steps:', '  a:', '    app: 7'), 'steps.a.app', 3, /must be a string.*not the number 7/);
  });

  it('checks args, env, retries, priority', () => {
    one(inStep('args: generate'), 'steps.s.args', 4, /must be a list/);
    one(inStep('args: [a, [b]]'), 'steps.s.args.1', 4, /must be a string, number or boolean/);
    one(inStep('env: [A]'), 'steps.s.env', 4, /must be a mapping/);
    one(inStep('env: {1A: x}'), 'steps.s.env.1A', 4, /not an environment variable name/);
    one(inStep('env:', '  BOXGRID_IN: x'), 'steps.s.env.BOXGRID_IN', 5, /reserved/);
    one(inStep('env: {A: {b: 1}}'), 'steps.s.env.A', 4, /must be a string/);
    one(inStep('retries: 1.5'), 'steps.s.retries', 4, 'must be an integer from 0 to 100, not the number 1.5');
    one(inStep('retries: "2"'), 'steps.s.retries', 4, /must be an integer from 0 to 100/);
    one(inStep('retries: 101'), 'steps.s.retries', 4, /from 0 to 100/);
    one(inStep('priority: 1001'), 'steps.s.priority', 4, /from -1000 to 1000/);
  });

  it('checks params', () => {
    one(inStep('params: {2x: 1}'), 'steps.s.params.2x', 4, /not a param name/);
    one(inStep('params:', '  a: [1]'), 'steps.s.params.a', 5, /must be a string, number or boolean/);
    one(inStep('params:', '  a: {val: 1}'), 'steps.s.params.a.val', 5, /unknown key "val"/);
    one(inStep('params:', '  a: {}'), 'steps.s.params.a', 5, 'needs "value"');
  });

  it('checks inputs', () => {
    one(inStep('inputs:', '  "..": {file: x}'), 'steps.s.inputs...', 5, /not an input file name/);
    one(inStep('inputs:', '  a/b: {file: x}'), 'steps.s.inputs.a/b', 5, /not an input file name/);
    one(inStep('inputs:', '  t.dat: {blob: ABC}'), 'steps.s.inputs.t.dat.blob', 5, /"ABC" is not a sha256/);
    one(inStep('inputs:', `  t.dat: {blob: ${SHA.toUpperCase()}}`), 'steps.s.inputs.t.dat.blob', 5, /not a sha256/);
    one(inStep('inputs:', '  t.dat: {file: ""}'), 'steps.s.inputs.t.dat.file', 5, /path is empty/);
    one(inStep('inputs:', '  t.dat: {file: data/}'), 'steps.s.inputs.t.dat.file', 5, /directory/);
    one(inStep('inputs:', `  t.dat: {file: x, blob: ${SHA}}`), 'steps.s.inputs.t.dat', 5, /either "file" or "blob"/);
    one(inStep('inputs:', '  t.dat: ./t.dat'), 'steps.s.inputs.t.dat', 5, /not a reference of the form/);
    one(inStep('inputs:', '  t.dat: {path: x}'), 'steps.s.inputs.t.dat.path', 5, /unknown key "path" in an input \(allowed: file, blob\)/);
  });

  it('checks outputs', () => {
    one(inStep('outputs:', '  my-out: {file: o.txt}'), 'steps.s.outputs.my-out', 5, /not an output name/);
    one(inStep('outputs:', '  o: {file: ../o.txt}'), 'steps.s.outputs.o.file', 5, /not a plain file name/);
    one(inStep('outputs:', '  o: {files: "out/*.xyz"}'), 'steps.s.outputs.o.files', 5, /not a glob/);
    one(inStep('outputs:', '  o: {files: "[ab].xyz"}'), 'steps.s.outputs.o.files', 5, /not a glob/);
    one(inStep('outputs:', '  o: {value: v.txt, type: int}'), 'steps.s.outputs.o.type', 5, /"int" is not a value type/);
    // An output declared with a problem is reported once, not again at each reference to it.
    one(
      y('steps:', '  s:', '    app: x', '    outputs:', '      o: {value: v.txt, type: nummber}', '  t:', '    app: x', '    params: {p: steps.s.outputs.o}'),
      'steps.s.outputs.o.type', 5, /"nummber" is not a value type/,
    );
    one(inStep('outputs:', '  o: {file: a, files: b}'), 'steps.s.outputs.o', 5, /not several/);
    one(inStep('outputs:', '  o: {type: json}'), 'steps.s.outputs.o', 5, /needs one of/);
    one(inStep('outputs:', '  o: {file: a, type: json}'), 'steps.s.outputs.o.type', 5, /goes with "value" only/);
    one(inStep('outputs:', '  o: o.txt'), 'steps.s.outputs.o', 5, /must be a mapping/);
  });

  it('checks resources', () => {
    one(inStep('resources: {cores: 0}'), 'steps.s.resources.cores', 4, /above 0/);
    one(inStep('resources:', '  memoryMiB: 1.5'), 'steps.s.resources.memoryMiB', 5, /integer/);
    one(inStep('resources:', '  gpus: -1'), 'steps.s.resources.gpus', 5, /integer from 0/);
  });

  it('checks forEach', () => {
    one(inStep('forEach: {as: x}'), 'steps.s.forEach', 4, /needs one of "list", "sweep", "files" or "values"/);
    one(inStep('forEach:', '  list: [a]', '  sweep: {x: {values: [1]}}'), 'steps.s.forEach', 4, /not several/);
    one(inStep('forEach:', '  list: []'), 'steps.s.forEach.list', 5, /empty/);
    one(inStep('forEach:', '  list: [a, b, c]'), 'steps.s.forEach.list', 5, /has 3 items, more than the limit of 2/, { maxFanOut: 2 });
    one(inStep('forEach:', '  list: [a]', '  as: 1x'), 'steps.s.forEach.as', 6, /not a param name/);
    one(inStep('forEach:', '  sweep: {x: {values: [1]}}', '  as: y'), 'steps.s.forEach.as', 6, /"as" does not go with "sweep"/);
  });

  it('checks sweeps with sweep.ts, against maxFanOut', () => {
    one(inStep('forEach:', '  sweep:', '    x: {from: 1, to: 10}', '    y: {from: 1, to: 11}'), 'steps.s.forEach.sweep', 5, /expands to more than 100 jobs/);
    one(inStep('forEach:', '  sweep:', '    x: {from: 5, to: 1}'), 'steps.s.forEach.sweep.x', 6, /range ends \(1\) before it starts \(5\)/);
    one(inStep('forEach:', '  sweep:', '    x: {values: []}'), 'steps.s.forEach.sweep.x', 6, 'has no values');
    one(inStep('forEach:', '  sweep:', '    x: {from: 1}'), 'steps.s.forEach.sweep.x', 6, /needs "from" and "to"/);
    one(inStep('forEach:', '  sweep:', '    x: {from: 1, to: 2, step: 0}'), 'steps.s.forEach.sweep.x.step', 6, /above 0/);
    one(inStep('forEach:', '  sweep:', '    2x: {values: [1]}'), 'steps.s.forEach.sweep.2x', 6, /not a parameter name/);
    one(inStep('forEach:', '  sweep: {}'), 'steps.s.forEach.sweep', 5, /at least one parameter/);
  });

  it('reports clashes of forEach names with params and inputs', () => {
    one(inStep('params: {item: 1}', 'forEach:', '  list: [a]'), 'steps.s.forEach.as', 5, /"as: item" is also a param/);
    one(inStep('params: {n: 1}', 'forEach:', '  list: [a]', '  as: n'), 'steps.s.forEach.as', 5, /"as: n" is also a param/);
    one(inStep('params: {x: 1}', 'forEach:', '  sweep: {x: {values: [1]}}'), 'steps.s.forEach.sweep.x', 5, /sweep parameter "x" is also a param/);
    one(y(
      'steps:',
      '  g: {app: x, outputs: {c: {files: "*.xyz"}}}',
      '  s:',
      '    app: x',
      '    inputs: {in.xyz: {file: ./a}}',
      '    forEach: {files: steps.g.outputs.c, as: in.xyz}',
    ), 'steps.s.forEach.as', 6, /"as: in.xyz" is also an input/);
    one(y('steps:', '  g: {app: x, outputs: {c: {files: "*.xyz"}}}', '  s:', '    app: x', '    forEach: {files: steps.g.outputs.c}'), 'steps.s.forEach.as', 5, /needs "as"/);
  });
});

describe('parseWorkflow: references', () => {
  const two = (...lines: string[]) => y(
    'steps:',
    '  refine:',
    '    app: x',
    '    forEach: {list: [a, b]}',
    '    outputs: {energy: {value: e.txt, type: number}, refined: {file: r.xyz}, many: {files: "*.xyz"}, doc: {value: d.json, type: json}}',
    '  one:',
    '    app: x',
    '    outputs: {v: {value: v.txt}, j: {value: j.json, type: json}}',
    '  use:',
    '    app: x',
    ...lines.map((l) => `    ${l}`),
  );

  it('reports malformed references', () => {
    one(two('params: {e: steps.refine.output.energy}'), 'steps.use.params.e', 11, /"steps.refine.output.energy" is not a reference of the form steps.<step>.outputs.<output>; to pass it as a literal, write \{value:/);
    one(two('params: {e: steps.refine.energy}'), 'steps.use.params.e', 11, /not a reference/);
    one(two('inputs: {e: steps.refine}'), 'steps.use.inputs.e', 11, /not a reference/);
    // Strings that cannot be meant as references stay literals.
    assert.deepEqual(step(ok(two('params: {f: steps.txt, g: "steps. x y"}')), 'use').params, {
      f: { kind: 'literal', value: 'steps.txt' },
      g: { kind: 'literal', value: 'steps. x y' },
    });
    one(two('forEach: {values: refine.energy}'), 'steps.use.forEach.values', 11, /not a reference/);
  });

  it('reports unknown steps, suggesting a close name', () => {
    one(two('params: {e: steps.refin.outputs.energy}'), 'steps.use.params.e', 11, 'no step named "refin" (did you mean "refine"?)');
    one(two('params: {e: steps.other.outputs.energy}'), 'steps.use.params.e', 11, 'no step named "other"');
    one(two('needs: [one, onne]'), 'steps.use.needs.1', 11, 'no step named "onne" (did you mean "one"?)');
  });

  it('reports unknown outputs, listing those there are', () => {
    one(two('params: {e: steps.refine.outputs.energi}'), 'steps.use.params.e', 11, 'step "refine" has no output "energi" (it has: energy, refined, many, doc)');
    one(y('steps:', '  a: {app: x}', '  b:', '    app: x', '    params: {p: steps.a.outputs.o}'), 'steps.b.params.p', 5, 'step "a" has no output "o" (it has none)');
  });

  it('reports a step referencing itself', () => {
    one(y('steps:', '  a:', '    app: x', '    outputs: {o: {value: o.txt}}', '    params: {p: steps.a.outputs.o}'), 'steps.a.params.p', 5, /refers to its own output/);
    one(y('steps:', '  a:', '    app: x', '    needs: [a]'), 'steps.a.needs.0', 4, /cannot need itself/);
  });

  it('reports output kinds that do not fit the use', () => {
    one(two('params: {r: steps.refine.outputs.refined}'), 'steps.use.params.r', 11, 'steps.refine.outputs.refined is a file output; params take value outputs — give it under inputs');
    one(two('params: {r: steps.refine.outputs.many}'), 'steps.use.params.r', 11, /is a files output; params take value outputs/);
    one(two('inputs: {e.txt: steps.refine.outputs.energy}'), 'steps.use.inputs.e.txt', 11, /is a value output; inputs take file outputs — give it under params/);
    one(two('forEach: {files: steps.refine.outputs.energy, as: e.txt}'), 'steps.use.forEach.files', 11, /is a value output; forEach.files takes file outputs/);
    one(two('forEach: {values: steps.refine.outputs.many}'), 'steps.use.forEach.values', 11, /is a files output; forEach.values takes value outputs/);
    one(two('forEach: {values: steps.one.outputs.v}'), 'steps.use.forEach.values', 11, /its step does not fan out/);
    ok(two('forEach: {values: steps.one.outputs.j}'));
    ok(two('forEach: {values: steps.refine.outputs.energy}'));
    ok(two('params: {all: steps.refine.outputs.energy}', 'inputs: {r.xyz: steps.refine.outputs.refined}'));
  });

  it('reports needs naming an unknown step', () => {
    one(y('steps:', '  a:', '    app: x', '    needs: [bee]'), 'steps.a.needs.0', 4, 'no step named "bee"');
    one(y('steps:', '  a:', '    app: x', '    needs: b'), 'steps.a.needs', 4, /must be a list/);
  });

  it('reports a cycle once, at its first step', () => {
    const p = one(y(
      'steps:',
      '  x: {app: x}',
      '  a:',                // 3
      '    app: x',
      '    needs: [b]',
      '    outputs: {o: {value: o.txt}}',
      '  b:',
      '    app: x',
      '    needs: [x, c]',
      '  c:',
      '    app: x',
      '    outputs: {o: {value: o.txt}}',
      '    params: {p: steps.a.outputs.o}',
      '  d: {app: x, outputs: {o: {value: o.txt}}, needs: [a]}',
    ), 'steps.a', 3, /^cycle: a → b → c → a$/);
    assert.equal(p.column, 3);
    // Two cycles, two problems.
    const ps = problems(y('steps:', '  a: {app: x, needs: [b]}', '  b: {app: x, needs: [a]}', '  c: {app: x, needs: [d]}', '  d: {app: x, needs: [c]}'));
    assert.deepEqual(ps.map((q) => [q.line, q.message]), [[2, 'cycle: a → b → a'], [4, 'cycle: c → d → c']]);
  });
});

describe('parseWorkflow: JSON positions', () => {
  it('points at the line in a JSON spec', () => {
    const json = [
      '{',
      '  "steps": {',
      '    "a": {',
      '      "app": "x",',
      '      "retries": "two",',
      '      "inputs": {"t.dat": {"blob": "nope"}}',
      '    },',
      '    "b": {"app": "x", "needs": ["c"], "colour": 1}',
      '  }',
      '}',
    ].join('\n');
    const ps = problems(json);
    assert.deepEqual(ps.map((p) => [p.line, p.path]), [
      [5, 'steps.a.retries'], [6, 'steps.a.inputs.t.dat.blob'], [8, 'steps.b.needs.0'], [8, 'steps.b.colour'],
    ]);
    assert.match(ps[3]!.message, /unknown key "colour"/);
  });

  it('reports a JSON top level that is not an object', () => {
    one('"steps"', '', 1, /must be a mapping/);
  });
});

describe('formatProblem', () => {
  it('reads file:line:col: path: message', () => {
    assert.equal(formatProblem({ path: 'steps.a', line: 3, column: 5, message: 'bad' }, 'wf.yaml'), 'wf.yaml:3:5: steps.a: bad');
    assert.equal(formatProblem({ path: '', line: 1, column: 1, message: 'bad' }), '1:1: bad');
  });
});

describe('topologicalOrder', () => {
  it('puts every step after those it needs, else keeps file order', () => {
    const r = ok(y(
      'steps:',
      '  report: {app: x, needs: [rank, extra]}',
      '  rank: {app: x, needs: [gen]}',
      '  gen: {app: x}',
      '  extra: {app: x}',
      '  alone: {app: x}',
    ));
    const order = topologicalOrder(r.spec);
    assert.deepEqual(order, ['gen', 'rank', 'extra', 'report', 'alone']);
  });

  it('orders any acyclic spec correctly (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.array(fc.nat(), { maxLength: 4 }), { minLength: 1, maxLength: 30 }), (edges) => {
        // Step i may only need steps j < i, so the graph is acyclic; shuffle the file order.
        const lines = ['steps:'];
        const n = edges.length;
        for (let i = n - 1; i >= 0; i--) {
          const needs = [...new Set(edges[i]!.filter(() => i > 0).map((e) => `s${e % Math.max(i, 1)}`))];
          lines.push(`  s${i}: {app: x, needs: [${needs.join(', ')}]}`);
        }
        const r = ok(y(...lines));
        const order = topologicalOrder(r.spec);
        assert.equal(order.length, n);
        const pos = new Map(order.map((s, i) => [s, i]));
        for (const s of r.spec.steps) for (const d of s.needs) assert.ok(pos.get(d)! < pos.get(s.name)!);
      }),
    );
  });
});

describe('parseWorkflow never throws', () => {
  const check = (source: string) => {
    const r = parseWorkflow(source, OPTS);
    if (!r.ok) {
      assert.ok(r.problems.length > 0);
      for (const p of r.problems) assert.ok(Number.isInteger(p.line) && p.line >= 1 && Number.isInteger(p.column) && p.column >= 1, JSON.stringify(p));
    }
  };

  it('on arbitrary strings', () => {
    fc.assert(fc.property(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.string({ unit: 'grapheme-ascii' })), check), { numRuns: 500 });
  });

  it('on arbitrary JSON values, serialised', () => {
    fc.assert(fc.property(fc.jsonValue({ maxDepth: 5 }), (v) => check(JSON.stringify(v) ?? 'null')), { numRuns: 500 });
  });

  const name = fc.constantFrom('a', 'b', 'c', 'refine', 'x.y', '1', 'BOXGRID_X', '..', 'item');
  const ref = fc.tuple(name, name).map(([s, o]) => `steps.${s}.outputs.${o}`);
  const leaf = fc.oneof(name, ref, fc.integer(), fc.boolean(), fc.constant(null), fc.constant(SHA));
  const value = fc.letrec((tie) => ({
    v: fc.oneof({ depthSize: 'small' }, leaf, fc.array(tie('v'), { maxLength: 3 }), fc.dictionary(fc.oneof(name, fc.constantFrom('file', 'files', 'value', 'type', 'blob', 'list', 'sweep', 'as', 'from', 'to', 'values')), tie('v'), { maxKeys: 3 })),
  })).v;
  const stepArb = fc.record(
    { app: fc.oneof(name, fc.constant('x@2')), args: value, env: value, params: value, inputs: value, outputs: value, forEach: value, needs: fc.array(name, { maxLength: 3 }), retries: value, resources: value },
    { requiredKeys: [] },
  );

  it('on spec-shaped JSON and YAML', () => {
    fc.assert(
      fc.property(fc.dictionary(name, stepArb, { maxKeys: 5 }), fc.boolean(), (steps, asJson) => {
        const doc = { steps };
        check(asJson ? JSON.stringify(doc) : toYaml(doc, 0));
      }),
      { numRuns: 500 },
    );
  });
});

/** A tiny YAML writer (block mappings, flow for the rest) so the fuzzing also covers block style. */
function toYaml(v: unknown, indent: number): string {
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) {
    const pad = ' '.repeat(indent);
    const entries = Object.entries(v);
    if (entries.length === 0) return '{}';
    return '\n' + entries.map(([k, x]) => `${pad}${JSON.stringify(k)}: ${toYaml(x, indent + 2)}`).join('\n');
  }
  return JSON.stringify(v) ?? 'null';
}
