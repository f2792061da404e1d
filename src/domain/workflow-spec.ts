import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument } from 'yaml';
import { SHA256_RE } from '../blobs/blob-store.js';
import { isBoxgridError, type ErrorProblem } from './errors.js';
import { OUTPUT_NAME_RE } from './file-names.js';
import { APP_NAME_RE, ENV_NAME_RE, INPUT_NAME_RE, PARAM_NAME_RE, RESERVED_ENV_PREFIX } from './names.js';
import { RESOURCE_LIMITS, type Resources } from './resources.js';
import { sweepSize, type SweepDimension, type SweepSpec } from './sweep.js';
import type { FailurePolicy, ForEach, InputSource, OutputRef, OutputSpec, ParamSource, StepSpec, ValueType, WorkflowSpec } from './workflow.js';

/*
 * Parses and checks a workflow spec, YAML or JSON (YAML's parser reads both), into a
 * WorkflowSpec. Pure: no I/O. Every problem carries the dotted path and the line:column of
 * the node at fault; all problems are collected, not just the first, and nothing throws.
 *
 * The format:
 *
 *   name: structure-search     # optional, default "workflow"; 1-100 of [A-Za-z0-9._ -]
 *   onFailure: stop            # stop (default) | continue (branches not depending on the failure go on)
 *   steps:                     # mapping name → step, file order kept; /^[A-Za-z][A-Za-z0-9_-]{0,62}$/
 *     generate:
 *       app: search            # app name, or "search@3" to pin version 3
 *       args: [gen, "{count}"] # strings; numbers and booleans taken as written
 *       env: {SEED: "{seed}"}  # env names (not BOXGRID_*) → strings (numbers, booleans as written)
 *       params:                # param name → literal | reference | {value: literal} (always literal)
 *         count: 100
 *         best: steps.rank.outputs.best     # a string exactly steps.<step>.outputs.<output>
 *                                           # (other strings "steps.<x>.<y…>" are taken as mistyped references)
 *       inputs:                # /in file name → {file: local path} | {blob: sha256} | reference
 *         model.bin: steps.train.outputs.model
 *       resources: {cores: 1, memoryMiB: 256, diskMiB: 100, gpus: 0}
 *       outputs:               # output name → {file: name} | {files: glob} | {value: name, type: string|number|json}
 *         energy: {value: energy.txt, type: number}
 *       forEach:               # exactly one of list / sweep / files / values, plus `as`
 *         list: [a, b, c]      # `as`: a param name, default "item"
 *         # sweep: {x: {from: 1, to: 10, step: 1}, y: {values: [a, b]}}   # params x, y; no `as`
 *         # files: steps.generate.outputs.candidates   # `as` required: the input file name
 *         # values: steps.score.outputs.list           # `as`: a param name, default "item"
 *       retries: 2             # 0..100; null or absent: the app decides
 *       priority: 0            # -1000..1000
 *       needs: [other]         # steps to wait for without taking data
 *
 * Anchors and aliases (&a / *a) are refused: expanding them could multiply a 1 MiB document
 * into far more than the limits below are meant to allow.
 */

/** Where and what: the same shape the API returns in an error's `problems`. */
export type Problem = ErrorProblem;

export interface Position {
  line: number;
  column: number;
}

export type ParseResult =
  | { ok: true; spec: WorkflowSpec; at(path: string): Position | null }
  | { ok: false; problems: Problem[] };

export const MAX_SPEC_BYTES = 1024 * 1024;
export const MAX_STEPS = 1000;

const WORKFLOW_NAME_RE = /^[A-Za-z0-9._ -]{1,100}$/;
const STEP_NAME_RE = /^[A-Za-z][A-Za-z0-9_-]{0,62}$/;
const APP_REF_RE = /^([^@]*)@([0-9]+)$/;
const REF_RE = /^steps\.([A-Za-z][A-Za-z0-9_-]{0,62})\.outputs\.([A-Za-z_][A-Za-z0-9_]{0,63})$/;
const REF_FORM = 'steps.<step>.outputs.<output>';
/** A param meant as a reference but mistyped ("steps.a.output.b"), not a literal like "steps.txt". */
const LOOKS_LIKE_REF_RE = /^steps\.[^.\s]+\.\S*$/;

const TOP_KEYS = ['name', 'onFailure', 'steps'] as const;
const STEP_KEYS = ['app', 'args', 'env', 'params', 'inputs', 'resources', 'outputs', 'forEach', 'retries', 'priority', 'needs'] as const;
const FOR_EACH_KEYS = ['list', 'sweep', 'files', 'values', 'as'] as const;
const FAN_KINDS = ['list', 'sweep', 'files', 'values'] as const;
const OUTPUT_KEYS = ['file', 'files', 'value', 'type'] as const;
const INPUT_KEYS = ['file', 'blob'] as const;
const RESOURCE_KEYS = ['cores', 'memoryMiB', 'diskMiB', 'gpus'] as const;
const VALUE_TYPES: readonly ValueType[] = ['string', 'number', 'json'];
const FAILURE_POLICIES: readonly FailurePolicy[] = ['stop', 'continue'];

// ── where problems go ──────────────────────────────────────────────────────

/** Collects problems and the position of every path seen, for `at()`. */
class Report {
  readonly problems: Problem[] = [];
  readonly positions = new Map<string, Position>();
  constructor(private readonly lines: LineCounter) {}

  pos(offset: number): Position {
    const { line, col } = this.lines.linePos(offset);
    return { line, column: col };
  }

  add(path: string, offset: number, message: string): void {
    this.problems.push({ path, ...this.pos(offset), message });
  }
}

/**
 * A node of the document and its path. Typed getters report a problem at the node and return
 * undefined when it is not what is wanted, so callers carry on and collect the rest.
 */
class Cursor {
  constructor(
    private readonly report: Report,
    readonly path: string,
    /** A yaml node, or null for an absent value (`key:` with nothing after it in flow style). */
    private readonly node: unknown,
    /** Where the key of this entry starts (for the root: 0). */
    readonly keyOffset: number,
    /** An alias: already reported, so every getter stays silent. */
    private readonly muted = false,
  ) {}

  /**
   * Where problems with the value point: a scalar's start; for a collection its key (a block
   * mapping starts on the line after its key, and the key is what people look for); the key
   * too when the value is empty or missing.
   */
  get offset(): number {
    const range = rangeOf(this.node);
    if (!range || (isScalar(this.node) && this.node.value === null && range[0] === range[1])) return this.keyOffset;
    return isScalar(this.node) || this.path === '' ? range[0] : this.keyOffset;
  }

  /** Unknown keys were found by fields(): a "needs X" on top would only repeat the typo. */
  sawUnknownKeys = false;

  problem(message: string, sub?: string): void {
    if (this.muted) return;
    const path = sub === undefined ? this.path : this.path === '' ? sub : `${this.path}.${sub}`;
    this.report.add(path, this.offset, message);
  }

  /** A problem of something missing in this mapping, unless a misspelt key already explains it. */
  missing(message: string, sub?: string): void {
    if (!this.sawUnknownKeys) this.problem(message, sub);
  }

  keyProblem(message: string): void {
    this.report.add(this.path, this.keyOffset, message);
  }

  get isMap(): boolean {
    return !this.muted && isMap(this.node);
  }

  get isNull(): boolean {
    return this.node === null || (isScalar(this.node) && this.node.value === null);
  }

  child(key: string, node: unknown, keyOffset: number): Cursor {
    const path = this.path === '' ? key : `${this.path}.${key}`;
    const alias = isAlias(node);
    if (alias) this.report.add(path, (node.range ?? [keyOffset])[0], `aliases (*${node.source}) are not supported: write the value out`);
    const c = new Cursor(this.report, path, node, keyOffset, alias);
    // A scalar's position is its value's (what a later "no such app" points at); a collection's its key's.
    this.report.positions.set(path, this.report.pos(isScalar(node) && !c.isNull ? c.offset : keyOffset));
    return c;
  }

  /** The entries of a mapping, in file order; duplicate and non-string keys are reported and dropped. */
  entries(what: string): Array<[string, Cursor]> | undefined {
    if (this.muted) return undefined;
    if (!isMap(this.node)) return this.wrong(`must be a mapping (${what})`);
    const seen = new Set<string>();
    const out: Array<[string, Cursor]> = [];
    for (const pair of this.node.items) {
      const k = pair.key;
      const keyOffset = rangeOf(k)?.[0] ?? this.offset;
      const key = isScalar(k) && (typeof k.value === 'string' || typeof k.value === 'number' || typeof k.value === 'boolean') ? String(k.value) : undefined;
      if (key === undefined) {
        this.report.add(this.path, keyOffset, 'keys must be plain strings');
        continue;
      }
      const c = this.child(key, pair.value, keyOffset);
      if (seen.has(key)) {
        c.keyProblem(`duplicate key "${key}"`);
        continue;
      }
      seen.add(key);
      out.push([key, c]);
    }
    return out;
  }

  /** A mapping whose keys must be among `allowed`; unknown keys are reported, naming the allowed ones. */
  fields<K extends string>(allowed: readonly K[], what: string): Partial<Record<K, Cursor>> | undefined {
    const entries = this.entries(what);
    if (!entries) return undefined;
    const out: Partial<Record<K, Cursor>> = {};
    for (const [key, c] of entries) {
      if ((allowed as readonly string[]).includes(key)) out[key as K] = c;
      else {
        c.keyProblem(`unknown key "${key}" in ${what} (allowed: ${allowed.join(', ')})`);
        this.sawUnknownKeys = true;
      }
    }
    return out;
  }

  list(what: string): Cursor[] | undefined {
    if (this.muted) return undefined;
    if (!isSeq(this.node)) return this.wrong(`must be a list (${what})`);
    return this.node.items.map((n, i) => this.child(String(i), n, rangeOf(n)?.[0] ?? this.offset));
  }

  private scalar(): unknown {
    return isScalar(this.node) ? this.node.value : undefined;
  }

  string(what: string): string | undefined {
    if (this.muted) return undefined;
    const v = this.scalar();
    return typeof v === 'string' ? v : this.wrong(`must be a string (${what})`);
  }

  /** A string, number or boolean as text; numbers as written ("1.0" stays "1.0"). */
  literal(what: string): string | undefined {
    if (this.muted) return undefined;
    const v = this.scalar();
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'bigint') return (this.node as { source?: string }).source || String(v);
    if (typeof v === 'boolean') return String(v);
    return this.wrong(`must be a string, number or boolean (${what})`);
  }

  /** A string or number as it is (for sweep values, which keep numbers); a boolean as text. */
  scalarValue(what: string): string | number | undefined {
    if (this.muted) return undefined;
    const v = this.scalar();
    if (typeof v === 'string' || typeof v === 'number') return v;
    if (typeof v === 'boolean') return String(v);
    return this.wrong(`must be a string or number (${what})`);
  }

  number(what: string, check: (n: number) => boolean = Number.isFinite): number | undefined {
    if (this.muted) return undefined;
    const v = this.scalar();
    return typeof v === 'number' && Number.isFinite(v) && check(v) ? v : this.wrong(`must be ${what}`);
  }

  integer(min: number, max: number): number | undefined {
    return this.number(`an integer from ${min} to ${max}`, (n) => Number.isInteger(n) && n >= min && n <= max);
  }

  /** Reports that the value is of the wrong kind, saying what it is. */
  private wrong(message: string): undefined {
    this.problem(`${message}, not ${describe(this.node)}`);
    return undefined;
  }
}

function rangeOf(node: unknown): readonly [number, number, number] | undefined {
  return (node as { range?: [number, number, number] | null } | null)?.range ?? undefined;
}

function describe(node: unknown): string {
  if (isMap(node)) return 'a mapping';
  if (isSeq(node)) return 'a list';
  if (node === null || node === undefined) return 'nothing';
  if (!isScalar(node)) return 'that';
  const v = node.value;
  if (v === null) return 'null';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return `${typeof v === 'boolean' ? 'the boolean' : 'the number'} ${String(v)}`;
  return 'that';
}

// ── one step, on its own ───────────────────────────────────────────────────

/** How a step uses another's output; decides which output kinds fit. */
type Use = 'param' | 'input' | 'files' | 'values';

interface RefUse {
  ref: OutputRef;
  use: Use;
  at: Cursor;
}

/** A parsed step with what cannot be checked before every step is known. */
interface Draft {
  spec: StepSpec;
  at: Cursor;
  refs: RefUse[];
  needs: Array<{ name: string; at: Cursor }>;
  /** Every output name the step declares, also those whose declaration has a problem (already reported: references to them add none). */
  declared: Set<string>;
}

/** A string that should be a reference: the ref, or a problem and undefined. */
function reference(c: Cursor, text: string, use: Use, refs: RefUse[]): OutputRef | undefined {
  const m = REF_RE.exec(text);
  if (!m) {
    const hint = use === 'param' ? `; to pass it as a literal, write {value: ${JSON.stringify(text)}}` : '';
    c.problem(`"${text}" is not a reference of the form ${REF_FORM}${hint}`);
    return undefined;
  }
  const ref = { step: m[1]!, output: m[2]! };
  refs.push({ ref, use, at: c });
  return ref;
}

function parseParams(c: Cursor, refs: RefUse[]): Record<string, ParamSource> {
  const params: Record<string, ParamSource> = {};
  for (const [name, p] of c.entries('param name → value') ?? []) {
    if (!PARAM_NAME_RE.test(name)) p.keyProblem(`"${name}" is not a param name (a letter or _, then letters, digits, _; at most 64)`);
    if (p.isMap) {
      const f = p.fields(['value'], 'a literal param');
      if (!f) continue;
      const v = f.value ? f.value.literal('the literal value') : (p.missing('needs "value"'), undefined);
      if (v !== undefined) params[name] = { kind: 'literal', value: v };
      continue;
    }
    const v = p.literal(`a literal, a reference ${REF_FORM} or {value: literal}`);
    if (v === undefined) continue;
    if (LOOKS_LIKE_REF_RE.test(v)) {
      const ref = reference(p, v, 'param', refs);
      if (ref) params[name] = { kind: 'ref', ref };
    } else {
      params[name] = { kind: 'literal', value: v };
    }
  }
  return params;
}

function parseInputs(c: Cursor, refs: RefUse[]): Record<string, InputSource> {
  const inputs: Record<string, InputSource> = {};
  for (const [name, i] of c.entries('input file name → source') ?? []) {
    if (!INPUT_NAME_RE.test(name)) i.keyProblem(`"${name}" is not an input file name (letters, digits, ".", "_", "-"; at most 128; not "." or "..")`);
    if (i.isMap) {
      const f = i.fields(INPUT_KEYS, 'an input');
      if (!f) continue;
      if (f.file && f.blob) i.problem('give either "file" or "blob", not both');
      else if (f.file) {
        const path = f.file.string('a local path');
        if (path !== undefined) {
          const bad = localPathProblem(path);
          if (bad) f.file.problem(bad);
          else inputs[name] = { kind: 'file', path };
        }
      } else if (f.blob) {
        const sha = f.blob.string('a sha256');
        if (sha !== undefined && !SHA256_RE.test(sha)) f.blob.problem(`"${sha}" is not a sha256 (64 lower-case hex digits)`);
        else if (sha !== undefined) inputs[name] = { kind: 'blob', sha256: sha };
      } else i.missing('needs "file" (a local path) or "blob" (a sha256)');
      continue;
    }
    const text = i.string(`{file: path}, {blob: sha256} or a reference ${REF_FORM}`);
    if (text === undefined) continue;
    const ref = reference(i, text, 'input', refs);
    if (ref) inputs[name] = { kind: 'ref', ref };
  }
  return inputs;
}

function localPathProblem(path: string): string | null {
  if (path === '') return 'the path is empty';
  if (path.length > 4096) return 'the path is longer than 4096 characters';
  if (path.includes('\0')) return 'the path contains a NUL character';
  if (path.endsWith('/')) return `"${path}" names a directory; give a file`;
  return null;
}

function parseOutputs(c: Cursor, declared: Set<string>): Record<string, OutputSpec> {
  const outputs: Record<string, OutputSpec> = {};
  for (const [name, o] of c.entries('output name → {file | files | value}') ?? []) {
    declared.add(name);
    if (!PARAM_NAME_RE.test(name)) o.keyProblem(`"${name}" is not an output name (a letter or _, then letters, digits, _; at most 64)`);
    const f = o.fields(OUTPUT_KEYS, 'an output');
    if (!f) continue;
    const kinds = (['file', 'files', 'value'] as const).filter((k) => f[k]);
    if (kinds.length !== 1) {
      if (kinds.length === 0) o.missing('needs one of "file", "files" or "value"');
      else o.problem(`give one of ${kinds.map((k) => `"${k}"`).join(', ')}, not several`);
      continue;
    }
    if (f.type && !f.value) f.type.keyProblem('"type" goes with "value" only');
    const kind = kinds[0]!;
    const at = f[kind]!;
    const text = at.string(kind === 'files' ? 'a glob' : 'a file name');
    if (text === undefined) continue;
    if (kind === 'files') {
      // A glob is a plain file name once its wildcards are letters.
      if (!OUTPUT_NAME_RE.test(text.replace(/[*?]/g, 'x'))) at.problem(`"${text}" is not a glob over plain file names (letters, digits, ".", "_", "-", "*", "?")`);
      else outputs[name] = { kind: 'files', glob: text };
      continue;
    }
    if (!OUTPUT_NAME_RE.test(text)) {
      at.problem(`"${text}" is not a plain file name in /out (letters, digits, ".", "_", "-")`);
      continue;
    }
    if (kind === 'file') {
      outputs[name] = { kind: 'file', path: text };
      continue;
    }
    let type: ValueType = 'string';
    if (f.type) {
      const t = f.type.string(VALUE_TYPES.join(', '));
      if (t === undefined) continue;
      if (!(VALUE_TYPES as readonly string[]).includes(t)) {
        f.type.problem(`"${t}" is not a value type (${VALUE_TYPES.join(', ')})`);
        continue;
      }
      type = t as ValueType;
    }
    outputs[name] = { kind: 'value', path: text, type };
  }
  return outputs;
}

function parseResources(c: Cursor): Partial<Resources> {
  const out: Partial<Resources> = {};
  const f = c.fields(RESOURCE_KEYS, 'resources');
  for (const key of RESOURCE_KEYS) {
    const at = f?.[key];
    if (!at) continue;
    const limit = RESOURCE_LIMITS[key];
    const n =
      key === 'cores'
        ? at.number(`a number above 0, at most ${limit}`, (v) => v > 0 && v <= limit)
        : at.integer(0, limit);
    if (n !== undefined) out[key] = n;
  }
  return out;
}

function parseSweep(c: Cursor, maxFanOut: number): SweepSpec | undefined {
  const entries = c.entries('parameter → {from, to, step} or {values}');
  if (!entries) return undefined;
  if (entries.length === 0) return void c.problem('needs at least one parameter');
  const sweep: SweepSpec = {};
  const dims = new Map(entries);
  let ok = true;
  for (const [name, d] of entries) {
    if (!PARAM_NAME_RE.test(name)) {
      d.keyProblem(`"${name}" is not a parameter name (a letter or _, then letters, digits, _; at most 64)`);
      ok = false;
    }
    const dim = parseDimension(d);
    if (dim) sweep[name] = dim;
    else ok = false;
  }
  if (!ok) return undefined;
  try {
    sweepSize(sweep, maxFanOut);
  } catch (e) {
    if (!isBoxgridError(e)) throw e;
    // sweep.ts names the field "sweep/x[/step]" and prefixes the message with it.
    const field = e.field ?? 'sweep';
    const [, dim, sub] = field.split('/');
    const message = e.message.startsWith(`${field}: `) ? e.message.slice(field.length + 2) : e.message;
    (dims.get(dim ?? '') ?? c).problem(message, sub);
    return undefined;
  }
  return sweep;
}

function parseDimension(d: Cursor): SweepDimension | undefined {
  const f = d.fields(['from', 'to', 'step', 'values'], 'a sweep parameter');
  if (!f) return undefined;
  if (f.values) {
    if (f.from || f.to || f.step) return void d.problem('give either "values" or "from"/"to"/"step", not both');
    const items = f.values.list('values');
    if (!items) return undefined;
    const values = items.map((i) => i.scalarValue('a sweep value'));
    return values.every((v): v is string | number => v !== undefined) ? { values } : undefined;
  }
  if (!f.from || !f.to) return void d.missing('needs "from" and "to" (and optionally "step"), or "values"');
  const from = f.from.number('a number');
  const to = f.to.number('a number');
  const step = f.step?.number('a number above 0', (n) => n > 0);
  if (from === undefined || to === undefined || (f.step && step === undefined)) return undefined;
  return step === undefined ? { from, to } : { from, to, step };
}

function parseForEach(c: Cursor, refs: RefUse[], maxFanOut: number): ForEach | null {
  const f = c.fields(FOR_EACH_KEYS, 'forEach');
  if (!f) return null;
  const kinds = FAN_KINDS.filter((k) => f[k]);
  if (kinds.length !== 1) {
    if (kinds.length === 0) c.missing('needs one of "list", "sweep", "files" or "values"');
    else c.problem(`give one of ${kinds.map((k) => `"${k}"`).join(', ')}, not several`);
    return null;
  }
  const kind = kinds[0]!;
  const at = f[kind]!;
  let as: string | undefined = kind === 'files' ? undefined : 'item';
  if (f.as) {
    if (kind === 'sweep') {
      f.as.keyProblem('"as" does not go with "sweep": each sweep parameter is a param of its own');
      return null;
    }
    as = f.as.string('a name');
    if (as === undefined) return null;
    const [re, rule] = kind === 'files' ? [INPUT_NAME_RE, 'an input file name'] : [PARAM_NAME_RE, 'a param name'];
    if (!re.test(as)) {
      f.as.problem(`"${as}" is not ${rule}`);
      return null;
    }
  } else if (kind === 'files') {
    c.problem('"files" needs "as": the input file name each job gets its file as', 'as');
    return null;
  }
  switch (kind) {
    case 'list': {
      const items = at.list('the items');
      if (!items) return null;
      if (items.length === 0 || items.length > maxFanOut) {
        at.problem(items.length === 0 ? 'is empty: a step needs at least one job' : `has ${items.length} items, more than the limit of ${maxFanOut}`);
        return null;
      }
      const values = items.map((i) => i.literal('an item'));
      return values.every((v): v is string => v !== undefined) ? { kind: 'list', as: as!, values } : null;
    }
    case 'sweep': {
      const sweep = parseSweep(at, maxFanOut);
      return sweep ? { kind: 'sweep', sweep } : null;
    }
    case 'files':
    case 'values': {
      const text = at.string(`a reference ${REF_FORM}`);
      const ref = text === undefined ? undefined : reference(at, text, kind, refs);
      return ref ? { kind, ref, as: as! } : null;
    }
  }
}

function parseStep(name: string, c: Cursor, maxFanOut: number): Draft {
  const refs: RefUse[] = [];
  const needs: Draft['needs'] = [];
  const spec: StepSpec = {
    name, app: '', appVersion: null, args: [], env: {}, params: {}, inputs: {}, resources: {}, outputs: {},
    forEach: null, retries: null, priority: 0, needs: [],
  };
  const draft: Draft = { spec, at: c, refs, needs, declared: new Set() };
  if (!STEP_NAME_RE.test(name)) c.keyProblem(`"${name}" is not a step name (a letter, then letters, digits, "_", "-"; at most 63; no dots)`);
  const f = c.fields(STEP_KEYS, 'a step');
  if (!f) return draft;

  if (!f.app) c.missing('needs "app"', 'app');
  else {
    const text = f.app.string('an app name, or name@version');
    const pinned = text === undefined ? null : APP_REF_RE.exec(text);
    const app = pinned ? pinned[1]! : text;
    if (app !== undefined && !APP_NAME_RE.test(app)) f.app.problem(`"${app}" is not an app name (lower-case letters, digits, ".", "_", "-"; at most 63)`);
    else if (app !== undefined) spec.app = app;
    if (pinned) {
      const v = Number(pinned[2]);
      if (v >= 1 && Number.isSafeInteger(v)) spec.appVersion = v;
      else f.app.problem(`"${pinned[2]}" is not an app version (a whole number from 1)`);
    }
  }
  if (f.args) {
    const items = f.args.list('strings');
    for (const item of items ?? []) {
      const v = item.literal('an argument');
      if (v !== undefined) spec.args.push(v);
    }
  }
  if (f.env) {
    for (const [key, v] of f.env.entries('variable → value') ?? []) {
      if (!ENV_NAME_RE.test(key)) v.keyProblem(`"${key}" is not an environment variable name`);
      else if (key.startsWith(RESERVED_ENV_PREFIX)) v.keyProblem(`"${key}": names starting with ${RESERVED_ENV_PREFIX} are reserved`);
      const text = v.literal('a value');
      if (text !== undefined) spec.env[key] = text;
    }
  }
  if (f.params) spec.params = parseParams(f.params, refs);
  if (f.inputs) spec.inputs = parseInputs(f.inputs, refs);
  if (f.resources) spec.resources = parseResources(f.resources);
  if (f.outputs) spec.outputs = parseOutputs(f.outputs, draft.declared);
  if (f.forEach && !f.forEach.isNull) spec.forEach = parseForEach(f.forEach, refs, maxFanOut);
  if (f.retries && !f.retries.isNull) spec.retries = f.retries.integer(0, 100) ?? null;
  if (f.priority) spec.priority = f.priority.integer(-1000, 1000) ?? 0;
  if (f.needs) {
    for (const item of f.needs.list('step names') ?? []) {
      const n = item.string('a step name');
      if (n !== undefined) needs.push({ name: n, at: item });
    }
  }
  checkClashes(spec, f.forEach);
  return draft;
}

/** Names a fan-out brings in must not shadow the step's own params or inputs. */
function checkClashes(spec: StepSpec, at: Cursor | undefined): void {
  const fe = spec.forEach;
  if (!fe || !at) return;
  if (fe.kind === 'sweep') {
    for (const p of Object.keys(fe.sweep)) if (p in spec.params) at.problem(`sweep parameter "${p}" is also a param of the step`, `sweep.${p}`);
  } else if (fe.kind === 'files') {
    if (fe.as in spec.inputs) at.problem(`"as: ${fe.as}" is also an input of the step`, 'as');
  } else if (fe.as in spec.params) {
    at.problem(`"as: ${fe.as}" is also a param of the step`, 'as');
  }
}

// ── across steps ───────────────────────────────────────────────────────────

/** Checks references and needs against the other steps and fills in each step's `needs`. */
function link(drafts: Draft[]): void {
  const byName = new Map<string, Draft>();
  for (const d of drafts) if (!byName.has(d.spec.name)) byName.set(d.spec.name, d);
  const unknownStep = suggester([...byName.keys()]);
  for (const d of drafts) {
    const deps: Array<{ name: string; offset: number }> = [];
    for (const { ref, use, at } of d.refs) {
      if (ref.step === d.spec.name) {
        at.problem(`step "${ref.step}" refers to its own output: a step cannot take its own outputs`);
        continue;
      }
      const target = byName.get(ref.step);
      if (!target) {
        at.problem(unknownStep(ref.step));
        continue;
      }
      const out = target.spec.outputs[ref.output];
      if (!out && target.declared.has(ref.output)) {
        deps.push({ name: ref.step, offset: at.offset });
        continue;
      }
      if (!out) {
        const has = Object.keys(target.spec.outputs);
        at.problem(`step "${ref.step}" has no output "${ref.output}" (${has.length === 0 ? 'it has none' : `it has: ${has.join(', ')}`})`);
        continue;
      }
      const bad = mismatch(use, out, target.spec.forEach !== null, `steps.${ref.step}.outputs.${ref.output}`);
      if (bad) at.problem(bad);
      deps.push({ name: ref.step, offset: at.offset });
    }
    for (const { name, at } of d.needs) {
      if (name === d.spec.name) at.problem(`step "${name}" cannot need itself`);
      else if (!byName.has(name)) at.problem(unknownStep(name));
      else deps.push({ name, offset: at.offset });
    }
    // First seen in the file, whichever field it was seen in.
    deps.sort((a, b) => a.offset - b.offset);
    d.spec.needs = [...new Set(deps.map((x) => x.name))];
  }
}

/** Why an output cannot be used that way, or null. */
function mismatch(use: Use, out: OutputSpec, fansOut: boolean, ref: string): string | null {
  const isFile = out.kind !== 'value';
  switch (use) {
    case 'param':
      return isFile ? `${ref} is a ${out.kind} output; params take value outputs — give it under inputs` : null;
    case 'input':
      return isFile ? null : `${ref} is a value output; inputs take file outputs — give it under params`;
    case 'files':
      return isFile ? null : `${ref} is a value output; forEach.files takes file outputs — use forEach.values`;
    case 'values':
      if (isFile) return `${ref} is a ${out.kind} output; forEach.values takes value outputs — use forEach.files`;
      if (!fansOut && out.type !== 'json') return `${ref} is one ${out.type} value (its step does not fan out); forEach.values needs a json array or a fanned-out step`;
      return null;
  }
}

/**
 * "no step named …" with the closest name, if any is near. Only the first 100 distinct unknown
 * names get a suggestion: a hostile spec of thousands of them must not cost minutes.
 */
function suggester(names: string[]): (name: string) => string {
  const cache = new Map<string, string>();
  return (name) => {
    let message = cache.get(name);
    if (message === undefined) {
      const near = cache.size < 100 ? closest(name, names) : null;
      message = `no step named "${name}"${near ? ` (did you mean "${near}"?)` : ''}`;
      cache.set(name, message);
    }
    return message;
  };
}

function closest(name: string, names: string[]): string | null {
  let best: string | null = null;
  let bestD = 3;
  for (const n of names) {
    const d = editDistance(name, n, bestD);
    if (d < bestD) [best, bestD] = [n, d];
  }
  return best;
}

/** Levenshtein distance, or `cap` once it is certain to be at least that. */
function editDistance(a: string, b: string, cap: number): number {
  if (Math.abs(a.length - b.length) >= cap) return cap;
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) cur.push(Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1)));
    if (Math.min(...cur) >= cap) return cap;
    prev = cur;
  }
  return Math.min(prev[b.length]!, cap);
}

/** One problem per strongly connected component with a cycle, at the component's first step. */
function checkCycles(drafts: Draft[]): void {
  const order = new Map(drafts.map((d, i) => [d.spec.name, i] as const));
  for (const scc of stronglyConnected(drafts.map((d) => d.spec))) {
    if (scc.length < 2) continue; // self-needs are reported, and dropped, by link()
    const members = new Set(scc);
    const start = scc.reduce((a, b) => (order.get(a)! <= order.get(b)! ? a : b));
    const cycle = cycleThrough(start, members, new Map(drafts.map((d) => [d.spec.name, d.spec.needs])));
    const d = drafts[order.get(start)!]!;
    d.at.keyProblem(`cycle: ${[...cycle, start].join(' → ')}`);
  }
}

/** Tarjan's algorithm, iteratively (a chain of 1,000 steps must not blow the stack). */
function stronglyConnected(steps: StepSpec[]): string[][] {
  const needs = new Map(steps.map((s) => [s.name, s.needs]));
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const out: string[][] = [];
  let next = 0;
  for (const root of needs.keys()) {
    if (index.has(root)) continue;
    const work: Array<{ v: string; i: number }> = [{ v: root, i: 0 }];
    index.set(root, next);
    low.set(root, next++);
    stack.push(root);
    onStack.add(root);
    while (work.length > 0) {
      const top = work[work.length - 1]!;
      const edges = needs.get(top.v) ?? [];
      if (top.i < edges.length) {
        const w = edges[top.i++]!;
        if (!needs.has(w)) continue;
        if (!index.has(w)) {
          index.set(w, next);
          low.set(w, next++);
          stack.push(w);
          onStack.add(w);
          work.push({ v: w, i: 0 });
        } else if (onStack.has(w)) {
          low.set(top.v, Math.min(low.get(top.v)!, index.get(w)!));
        }
        continue;
      }
      work.pop();
      const parent = work[work.length - 1];
      if (parent) low.set(parent.v, Math.min(low.get(parent.v)!, low.get(top.v)!));
      if (low.get(top.v) === index.get(top.v)) {
        const scc: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          scc.push(w);
        } while (w !== top.v);
        out.push(scc);
      }
    }
  }
  return out;
}

/** A shortest path start → … → start within `members` (breadth first), without the final start. */
function cycleThrough(start: string, members: Set<string>, needs: Map<string, string[]>): string[] {
  const from = new Map<string, string>();
  const queue = [start];
  for (let q = 0; q < queue.length; q++) {
    const v = queue[q]!;
    for (const w of needs.get(v) ?? []) {
      if (!members.has(w)) continue;
      if (w === start) {
        const path = [v];
        while (path[0] !== start) path.unshift(from.get(path[0]!)!);
        return path;
      }
      if (!from.has(w)) {
        from.set(w, v);
        queue.push(w);
      }
    }
  }
  return [start]; // unreachable for a real component
}

// ── the document ───────────────────────────────────────────────────────────

function utf8Length(s: string): number {
  return s.length * 3 <= MAX_SPEC_BYTES ? s.length : Buffer.byteLength(s, 'utf8');
}

export function parseWorkflow(source: string, opts: { maxFanOut: number }): ParseResult {
  if (utf8Length(source) > MAX_SPEC_BYTES) {
    return { ok: false, problems: [{ path: '', line: 1, column: 1, message: `the spec is larger than ${MAX_SPEC_BYTES} bytes (1 MiB)` }] };
  }
  const lines = new LineCounter();
  const report = new Report(lines);
  let doc: ReturnType<typeof parseDocument>;
  try {
    // Duplicate keys are found below, where the path to them is known.
    doc = parseDocument(source, { lineCounter: lines, prettyErrors: false, uniqueKeys: false });
  } catch (e) {
    // The composer recurses: absurd nesting can overflow the stack.
    return { ok: false, problems: [{ path: '', line: 1, column: 1, message: `the spec cannot be parsed: ${e instanceof Error ? e.message : String(e)}` }] };
  }
  if (doc.errors.length > 0) {
    for (const e of doc.errors) report.add('', e.pos[0], e.message);
    return { ok: false, problems: sorted(report.problems) };
  }

  const root = new Cursor(report, '', doc.contents, 0);
  if (root.isNull) return { ok: false, problems: [{ path: '', line: 1, column: 1, message: 'the spec is empty: it needs at least "steps"' }] };
  const top = root.fields(TOP_KEYS, 'a workflow');
  if (!top) return { ok: false, problems: sorted(report.problems) };

  let name = 'workflow';
  if (top.name) {
    const n = top.name.string('the workflow name');
    if (n !== undefined && !WORKFLOW_NAME_RE.test(n)) top.name.problem(`"${n}" is not a workflow name (1-100 letters, digits, ".", "_", " ", "-")`);
    else if (n !== undefined) name = n;
  }
  let onFailure: FailurePolicy = 'stop';
  if (top.onFailure) {
    const p = top.onFailure.string(FAILURE_POLICIES.join(' or '));
    if (p !== undefined && !(FAILURE_POLICIES as readonly string[]).includes(p)) top.onFailure.problem(`"${p}" is not a failure policy (stop or continue)`);
    else if (p !== undefined) onFailure = p as FailurePolicy;
  }

  const drafts: Draft[] = [];
  if (!top.steps) root.problem('needs "steps": a mapping of step name → step', 'steps');
  else {
    const entries = top.steps.entries('step name → step');
    if (entries && entries.length === 0) top.steps.problem('has no steps');
    else if (entries && entries.length > MAX_STEPS) top.steps.problem(`has ${entries.length} steps, more than the limit of ${MAX_STEPS}`);
    else for (const [stepName, c] of entries ?? []) drafts.push(parseStep(stepName, c, opts.maxFanOut));
  }
  link(drafts);
  checkCycles(drafts);

  if (report.problems.length > 0) return { ok: false, problems: sorted(report.problems) };
  const positions = report.positions;
  return { ok: true, spec: { name, onFailure, steps: drafts.map((d) => d.spec) }, at: (path) => positions.get(path) ?? null };
}

function sorted(problems: Problem[]): Problem[] {
  return problems.sort((a, b) => a.line - b.line || a.column - b.column);
}

/** "file:line:col: path: message" for CLIs; file and path are left out when absent. */
export function formatProblem(p: Problem, file?: string): string {
  return `${file === undefined ? '' : `${file}:`}${p.line}:${p.column}: ${p.path === '' ? '' : `${p.path}: `}${p.message}`;
}

/** Steps in an order where each comes after every step it needs, otherwise in file order. */
export function topologicalOrder(spec: WorkflowSpec): string[] {
  const needs = new Map(spec.steps.map((s) => [s.name, s.needs]));
  const done = new Set<string>();
  const out: string[] = [];
  // Depth first without recursion; `done` is set on entry, so even a cyclic spec terminates.
  for (const s of spec.steps) {
    if (done.has(s.name)) continue;
    done.add(s.name);
    const work: Array<{ v: string; i: number }> = [{ v: s.name, i: 0 }];
    while (work.length > 0) {
      const top = work[work.length - 1]!;
      const edges = needs.get(top.v)!;
      if (top.i < edges.length) {
        const w = edges[top.i++]!;
        if (needs.has(w) && !done.has(w)) {
          done.add(w);
          work.push({ v: w, i: 0 });
        }
        continue;
      }
      work.pop();
      out.push(top.v);
    }
  }
  return out;
}
