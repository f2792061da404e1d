import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { isAbsolute, resolve } from 'node:path';
import { BoxgridError, type ErrorProblem } from '../domain/errors.js';
import type { Resources } from '../domain/resources.js';
import type { SweepSpec } from '../domain/sweep.js';
import { parseWorkflow } from '../domain/workflow-spec.js';
import type { FailurePolicy, ValueType } from '../domain/workflow.js';
import type { BoxgridClient } from './client.js';
import type { WorkflowAnswer } from './types.js';

/*
 * A typed builder of workflow specs, for TypeScript users who would rather not write YAML:
 *
 *   const wf = workflow('search', { onFailure: 'continue' });
 *   const gen = wf.step('generate', { app: 'chem', args: ['gen', '20'], outputs: { candidates: files('cand-*.xyz') } });
 *   const refine = wf.step('refine', {
 *     app: 'chem', forEach: forEachFile(gen.output('candidates'), 'structure.xyz'),
 *     outputs: { energy: value('energy.txt', 'number') },
 *   });
 *   wf.step('rank', { app: 'chem', params: { energies: refine.output('energy') } });
 *   await submitWorkflow(client, 'default', wf, { baseDir: __dirname });
 *
 * toSource() is JSON text in the format of docs/workflows.md, which the server parses as it
 * parses YAML; the builder checks what it can see (names, references to declared outputs),
 * the server checks the rest and answers every problem with its line.
 */

/** `steps.<step>.outputs.<output>`, as StepHandle.output() makes it. */
export type OutputReference = `steps.${string}.outputs.${string}`;

export type OutputDecl = { file: string } | { files: string } | { value: string; type?: ValueType };
export type InputDecl = OutputReference | { file: string } | { blob: string };
type Literal = string | number | boolean;
/** A literal, a reference to a value output, or `{value: x}` (always a literal, even "steps.a.outputs.b"). */
export type ParamDecl = Literal | OutputReference | { value: Literal };
export type ForEachDecl =
  | { list: Literal[]; as?: string }
  | { sweep: SweepSpec }
  | { files: OutputReference; as: string }
  | { values: OutputReference; as?: string };

export interface StepOptions {
  /** The app's name; `app@3` or `appVersion: 3` pins a version (else the latest when the step is queued). */
  app: string;
  appVersion?: number;
  args?: Literal[];
  env?: Record<string, Literal>;
  params?: Record<string, ParamDecl>;
  /** /in file name → a reference to another step's file(s), a local file (`file('./x')`) or a blob. */
  inputs?: Record<string, InputDecl>;
  resources?: Partial<Resources>;
  outputs?: Record<string, OutputDecl>;
  forEach?: ForEachDecl;
  retries?: number | null;
  priority?: number;
  /** Steps to wait for without taking their outputs. */
  needs?: Array<StepHandle | string>;
}

/** One file of /out (an output), or a local file to upload (an input): both are written `{file: PATH}`. */
export const file = (path: string): { file: string } => ({ file: path });
/** Every file of /out matching a glob (`*`, `?`); possibly none. */
export const files = (glob: string): { files: string } => ({ files: glob });
/** A small file of /out (≤ 64 KiB) read as a value: trimmed text, a number, or JSON. */
export const value = (path: string, type: ValueType = 'string'): { value: string; type: ValueType } => ({ value: path, type });
/** A blob already uploaded to the project, by its sha256. */
export const blob = (sha256: string): { blob: string } => ({ blob: sha256 });
/** A param taken as written, never as a reference. */
export const literal = (v: Literal): { value: Literal } => ({ value: v });
/** One job per file of a file/files output (every instance's files, in order), each given as the input `as`. */
export const forEachFile = (ref: OutputReference, as: string): ForEachDecl => ({ files: ref, as });
/** One job per value: a json array value, or the value of each instance of a fanned-out step; the param `as` (default "item"). */
export const forEachValue = (ref: OutputReference, as?: string): ForEachDecl => (as === undefined ? { values: ref } : { values: ref, as });
/** One job per item of a list; the param `as` (default "item"). */
export const forEachItem = (list: Literal[], as?: string): ForEachDecl => (as === undefined ? { list } : { list, as });
/** One job per point of a cartesian sweep; each dimension is a param. */
export const forEachSweep = (sweep: SweepSpec): ForEachDecl => ({ sweep });

const STEP_NAME_RE = /^[A-Za-z][A-Za-z0-9_-]{0,62}$/;

/** A step added to a workflow: what others refer to. */
export class StepHandle {
  constructor(readonly name: string, private readonly outputs: readonly string[]) {}

  /** The reference to one of its declared outputs; throws when the step declared no such output. */
  output(name: string): OutputReference {
    if (!this.outputs.includes(name)) {
      const declared = this.outputs.length === 0 ? 'it declares no outputs' : `it declares ${this.outputs.join(', ')}`;
      throw new BoxgridError('invalid_request', `step "${this.name}" has no output "${name}" (${declared})`);
    }
    return `steps.${this.name}.outputs.${name}`;
  }
}

export class WorkflowBuilder {
  private readonly steps = new Map<string, Record<string, unknown>>();

  constructor(readonly name: string, private readonly opts: { onFailure?: FailurePolicy } = {}) {}

  /** Adds a step (in order: a step refers to steps added before it). */
  step(name: string, o: StepOptions): StepHandle {
    if (!STEP_NAME_RE.test(name)) throw new BoxgridError('invalid_request', `"${name}" is not a step name (a letter, then up to 62 letters, digits, "_" or "-")`);
    if (this.steps.has(name)) throw new BoxgridError('invalid_request', `the workflow already has a step "${name}"`);
    const s: Record<string, unknown> = { app: o.appVersion === undefined ? o.app : `${o.app}@${o.appVersion}` };
    if (o.args !== undefined) s.args = o.args;
    if (o.env !== undefined) s.env = o.env;
    if (o.params !== undefined) s.params = o.params;
    if (o.inputs !== undefined) s.inputs = o.inputs;
    if (o.resources !== undefined) s.resources = o.resources;
    if (o.outputs !== undefined) s.outputs = o.outputs;
    if (o.forEach !== undefined) s.forEach = o.forEach;
    if (o.retries !== undefined) s.retries = o.retries;
    if (o.priority !== undefined) s.priority = o.priority;
    if (o.needs !== undefined) s.needs = o.needs.map((n) => (typeof n === 'string' ? n : n.name));
    this.steps.set(name, s);
    return new StepHandle(name, Object.keys(o.outputs ?? {}));
  }

  /** The spec as a plain object (docs/workflows.md). */
  toJSON(): { name: string; onFailure?: FailurePolicy; steps: Record<string, unknown> } {
    return { name: this.name, ...(this.opts.onFailure === undefined ? {} : { onFailure: this.opts.onFailure }), steps: Object.fromEntries(this.steps) };
  }

  /** The spec as JSON text, which the server (and `boxgrid workflow run`) takes as it takes YAML. */
  toSource(): string {
    return JSON.stringify(this.toJSON(), null, 2) + '\n';
  }
}

export function workflow(name: string, opts: { onFailure?: FailurePolicy } = {}): WorkflowBuilder {
  return new WorkflowBuilder(name, opts);
}

export interface SubmitWorkflowOptions {
  /** What the spec's `{file: PATH}` inputs are relative to (default: the working directory). */
  baseDir?: string;
  /** A workflow whose succeeded jobs this one reuses where nothing changed. */
  resume?: number;
  /** Told about each local file as it is uploaded. */
  onUpload?: (path: string, sent: number, total: number) => void;
}

/**
 * Uploads the local files a spec names (`{file: PATH}` inputs, relative to `baseDir`) and
 * submits the workflow with the `files` map; `boxgrid workflow run` is this. A spec that does
 * not parse is sent as it is, for the server to answer every problem; a local file that cannot
 * be read throws `invalid_request` with a problem at its line.
 */
export async function submitWorkflow(client: BoxgridClient, project: string, spec: WorkflowBuilder | string, opts: SubmitWorkflowOptions = {}): Promise<WorkflowAnswer> {
  const source = typeof spec === 'string' ? spec : spec.toSource();
  const files = await uploadLocalFiles(client, project, source, opts);
  return client.createWorkflow(project, {
    source,
    ...(Object.keys(files).length > 0 ? { files } : {}),
    ...(opts.resume === undefined ? {} : { resume: opts.resume }),
  });
}

/** The spec's local files, uploaded: path as written → sha256. */
export async function uploadLocalFiles(client: BoxgridClient, project: string, source: string, opts: SubmitWorkflowOptions = {}): Promise<Record<string, string>> {
  // Fan-out sizes are the server's to check: here only the files matter.
  const parsed = parseWorkflow(source, { maxFanOut: Number.MAX_SAFE_INTEGER });
  if (!parsed.ok) return {};
  const wanted = new Map<string, string>();
  for (const step of parsed.spec.steps) {
    for (const [name, src] of Object.entries(step.inputs)) if (src.kind === 'file' && !wanted.has(src.path)) wanted.set(src.path, `steps.${step.name}.inputs.${name}`);
  }
  const problems: ErrorProblem[] = [];
  const found: Array<[string, string]> = [];
  for (const [path, at] of wanted) {
    const full = isAbsolute(path) ? path : resolve(opts.baseDir ?? '.', path);
    try {
      if (!(await stat(full)).isFile()) throw Object.assign(new Error('not a file'), { code: 'not a regular file' });
      await access(full, constants.R_OK);
      found.push([path, full]);
    } catch (e) {
      const pos = parsed.at(at) ?? { line: 1, column: 1 };
      problems.push({ path: at, ...pos, message: `cannot read the local file ${full} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})` });
    }
  }
  if (problems.length > 0) {
    throw new BoxgridError('invalid_request', `${problems.length} local file${problems.length > 1 ? 's' : ''} of the spec cannot be read`, { problems });
  }
  const out: Record<string, string> = {};
  for (const [path, full] of found) {
    const b = await client.uploadFile(project, full, opts.onUpload && ((sent, total) => opts.onUpload!(path, sent, total)));
    out[path] = b.sha256;
  }
  return out;
}
