import { createHash } from 'node:crypto';
import { expandSweep, substitute, type SweepPoint } from './sweep.js';
import type { OutputFile } from './model.js';
import type {
  InstanceProgress, OutputFileRef, OutputSpec, ResolvedOutput, StepProgress, StepSpec, StepStatus, ValueType, WorkflowProgress,
  WorkflowSpec, WorkflowState,
} from './workflow.js';

/**
 * What a workflow does next, decided from its spec and progress alone (no I/O): which steps
 * may be queued, which must be skipped, the jobs of a step with their inputs resolved to blob
 * digests, a finished job's declared outputs, and where the workflow stands. The workflow loop
 * (service/workflow-loop.ts) reads the store, asks this module, and writes what it says.
 */

/** The largest value output read (a value is a number or a short text, not data). */
export const MAX_VALUE_BYTES = 64 * 1024;
const INPUT_NAME_MAX = 128;

export function initialProgress(spec: WorkflowSpec): WorkflowProgress {
  const steps: Record<string, StepProgress> = {};
  for (const s of spec.steps) steps[s.name] = { status: 'waiting', reason: null, round: 0, batchIds: [], instances: [] };
  return { steps };
}

const ENDED_BADLY: ReadonlySet<StepStatus> = new Set(['failed', 'skipped', 'cancelled']);

/** Waiting steps whose needs all succeeded (ready), and those a need that ended badly blocks for good. */
export function nextMoves(spec: WorkflowSpec, progress: WorkflowProgress): { ready: StepSpec[]; blocked: Array<{ step: StepSpec; reason: string }> } {
  const ready: StepSpec[] = [];
  const blocked: Array<{ step: StepSpec; reason: string }> = [];
  for (const step of spec.steps) {
    if (progress.steps[step.name]!.status !== 'waiting') continue;
    const bad = step.needs.find((n) => ENDED_BADLY.has(progress.steps[n]!.status));
    if (bad !== undefined) blocked.push({ step, reason: `needs step "${bad}", which ${statusWord(progress.steps[bad]!.status)}` });
    else if (step.needs.every((n) => progress.steps[n]!.status === 'succeeded')) ready.push(step);
  }
  return { ready, blocked };
}

function statusWord(s: StepStatus): string {
  return s === 'skipped' ? 'was skipped' : s === 'cancelled' ? 'was cancelled' : s;
}

/** One job a ready step asks for. */
export interface PlannedJob {
  item: string;
  args: string[];
  env: Record<string, string>;
  /** Input file name → sha256. */
  inputs: Record<string, string>;
  params: Record<string, string>;
  key: string;
  retryKey: string;
}

export class StepError extends Error {}

/**
 * The jobs of a ready step, every input a blob digest: the outputs of the steps it needs
 * (which all succeeded), the spec's own blobs, and `files` (local paths the CLI uploaded).
 * Throws StepError when the outputs do not fit (a `values` fan-out over something not a list).
 */
export function planStep(spec: WorkflowSpec, step: StepSpec, progress: WorkflowProgress, files: Record<string, string>, appId: number, maxFanOut: number): PlannedJob[] {
  const base: Record<string, string> = {};
  for (const [name, src] of Object.entries(step.params)) {
    base[name] = src.kind === 'literal' ? src.value : valueParam(spec, progress, src.ref.step, src.ref.output);
  }
  const inputs: Record<string, string> = {};
  for (const [name, src] of Object.entries(step.inputs)) {
    if (src.kind === 'blob') putInput(inputs, name, src.sha256);
    else if (src.kind === 'file') putInput(inputs, name, files[src.path]!);
    else addFiles(inputs, name, filesOf(progress, src.ref.step, src.ref.output), single(spec, src.ref.step, src.ref.output));
  }
  const items = fanOut(spec, step, progress, maxFanOut);
  return items.map((it) => {
    const params = { ...base, ...it.params };
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(step.env)) env[k] = substitute(v, params);
    const args = step.args.map((a) => substitute(a, params));
    const all = it.inputs ? { ...inputs, ...it.inputs } : inputs;
    return { item: it.item, args, env, inputs: all, params, key: instanceKey(appId, args, env, all), retryKey: instanceKey(null, args, env, all) };
  });
}

interface FanItem {
  item: string;
  params: Record<string, string>;
  inputs?: Record<string, string>;
}

function fanOut(spec: WorkflowSpec, step: StepSpec, progress: WorkflowProgress, maxFanOut: number): FanItem[] {
  const f = step.forEach;
  if (!f) return [{ item: '', params: {} }];
  let items: FanItem[];
  switch (f.kind) {
    case 'list':
      items = f.values.map((v) => ({ item: v, params: { [f.as]: v } }));
      break;
    case 'sweep':
      items = expandSweep(f.sweep, maxFanOut).map((p: SweepPoint) => {
        const params: Record<string, string> = {};
        for (const [k, v] of Object.entries(p)) params[k] = String(v);
        return { item: Object.entries(params).map(([k, v]) => `${k}=${v}`).join(','), params };
      });
      break;
    case 'files':
      items = filesOf(progress, f.ref.step, f.ref.output).map((file) => ({ item: file.name, params: {}, inputs: { [f.as]: file.sha256 } }));
      break;
    case 'values': {
      const values = valueItems(spec, progress, f.ref.step, f.ref.output);
      items = values.map((v) => ({ item: v, params: { [f.as]: v } }));
      break;
    }
  }
  if (items.length > maxFanOut) throw new StepError(`fans out to ${items.length} jobs, more than the limit of ${maxFanOut}`);
  if (items.length === 0) throw new StepError(`has nothing to fan out over: ${describeForEach(step)} is empty`);
  return items;
}

function describeForEach(step: StepSpec): string {
  const f = step.forEach!;
  return f.kind === 'files' || f.kind === 'values' ? `steps.${f.ref.step}.outputs.${f.ref.output}` : `forEach.${f.kind}`;
}

/** Every file an output of a (succeeded) step holds, over its instances in order. */
function filesOf(progress: WorkflowProgress, step: string, output: string): OutputFileRef[] {
  const out: OutputFileRef[] = [];
  for (const inst of progress.steps[step]!.instances) {
    const r = inst.outputs?.[output];
    if (r && 'files' in r) out.push(...r.files);
  }
  return out;
}

/** A file input takes its one file under its own name when the producer runs once and declares one `file`. */
function single(spec: WorkflowSpec, producer: string, output: string): boolean {
  const p = producerOf(spec, producer);
  return p.forEach === null && p.outputs[output]?.kind === 'file';
}

function producerOf(spec: WorkflowSpec, name: string): StepSpec {
  return spec.steps.find((s) => s.name === name)!;
}

/**
 * Several files under one input name: `<input>-<n>-<file name>` (n from 1, padded so they sort),
 * or `<input>-<n>` when that would be too long for an input name (the input name cut short
 * when even that would be).
 */
function addFiles(into: Record<string, string>, name: string, files: OutputFileRef[], one: boolean): void {
  const put = (key: string, sha: string): void => putInput(into, key, sha);
  if (one) return put(name, files[0]!.sha256);
  const width = String(files.length).length;
  files.forEach((f, i) => {
    const n = String(i + 1).padStart(width, '0');
    const long = `${name}-${n}-${f.name}`;
    put(long.length <= INPUT_NAME_MAX ? long : `${name.slice(0, INPUT_NAME_MAX - n.length - 1)}-${n}`, f.sha256);
  });
}

/** Two inputs whose names meet (a shortened name, an input called "x-1-a.txt"): one would silently hide the other. */
function putInput(into: Record<string, string>, key: string, sha: string): void {
  if (key in into) throw new StepError(`two of its input files would both be named "${key}": rename one of its inputs`);
  into[key] = sha;
}

/** A param from a value output: the value itself, or the JSON array of every instance's when the producer fans out. */
function valueParam(spec: WorkflowSpec, progress: WorkflowProgress, step: string, output: string): string {
  const values = progress.steps[step]!.instances.map((i) => valueOf(i, output));
  return producerOf(spec, step).forEach === null ? asText(values[0]) : JSON.stringify(values);
}

/** The items of a `values` fan-out: each instance's value, or the one instance's JSON array. */
function valueItems(spec: WorkflowSpec, progress: WorkflowProgress, step: string, output: string): string[] {
  const instances = progress.steps[step]!.instances;
  if (producerOf(spec, step).forEach !== null) return instances.map((i) => asText(valueOf(i, output)));
  const v = valueOf(instances[0]!, output);
  if (!Array.isArray(v)) throw new StepError(`forEach.values: steps.${step}.outputs.${output} is not a JSON array`);
  return v.map(asText);
}

function valueOf(inst: InstanceProgress, output: string): unknown {
  const r = inst.outputs?.[output];
  return r && 'value' in r ? r.value : null;
}

function asText(v: unknown): string {
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** Equal keys, equal work: the app version (image and command; null: left out), args, env and input digests. */
export function instanceKey(appId: number | null, args: string[], env: Record<string, string>, inputs: Record<string, string>): string {
  const sorted = (m: Record<string, string>): Array<[string, string]> => Object.entries(m).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return createHash('sha256').update(JSON.stringify([appId, args, sorted(env), sorted(inputs)])).digest('hex');
}

// ── outputs of a finished job ──────────────────────────────────────────────

/** What the workflow needs to read to resolve a step's outputs: value files' text, by digest. */
export type ValueReads = Record<string, string>;

/**
 * The value outputs whose files must be read (digest and size) before `resolveOutputs`; a
 * missing or oversized file is left to resolveOutputs to report.
 */
export function valueFiles(outputs: Record<string, OutputSpec>, files: Record<string, OutputFile>): string[] {
  const wanted: string[] = [];
  for (const o of Object.values(outputs)) {
    if (o.kind !== 'value') continue;
    const f = files[o.path];
    if (f && f.size <= MAX_VALUE_BYTES) wanted.push(f.sha256);
  }
  return wanted;
}

/** A succeeded job's declared outputs from the files it left, or why they are not what the step declared. */
export function resolveOutputs(outputs: Record<string, OutputSpec>, files: Record<string, OutputFile>, reads: ValueReads): { outputs: Record<string, ResolvedOutput> } | { error: string } {
  const resolved: Record<string, ResolvedOutput> = {};
  for (const [name, o] of Object.entries(outputs)) {
    if (o.kind === 'files') {
      const re = globToRegExp(o.glob);
      const matched = Object.keys(files).filter((f) => re.test(f)).sort();
      resolved[name] = { files: matched.map((f) => ({ name: f, sha256: files[f]!.sha256, size: files[f]!.size })) };
      continue;
    }
    const f = files[o.path];
    if (!f) return { error: `output "${name}": the job did not write ${o.path}` };
    if (o.kind === 'file') {
      resolved[name] = { files: [{ name: o.path, sha256: f.sha256, size: f.size }] };
      continue;
    }
    if (f.size > MAX_VALUE_BYTES) return { error: `output "${name}": ${o.path} holds ${f.size} bytes, more than the ${MAX_VALUE_BYTES} a value may` };
    const text = reads[f.sha256];
    if (text === undefined) return { error: `output "${name}": ${o.path} could not be read` };
    const v = parseValue(text, o.type);
    if ('error' in v) return { error: `output "${name}": ${o.path} ${v.error}` };
    resolved[name] = { value: v.value };
  }
  return { outputs: resolved };
}

export function parseValue(text: string, type: ValueType): { value: unknown } | { error: string } {
  const t = text.trim();
  if (type === 'string') return { value: t };
  if (type === 'number') {
    const n = Number(t);
    return t !== '' && Number.isFinite(n) ? { value: n } : { error: `is not a number: "${t.slice(0, 40)}"` };
  }
  try {
    return { value: JSON.parse(t) as unknown };
  } catch {
    return { error: 'is not JSON' };
  }
}

/** `*` any run of characters, `?` one; output names are plain file names, so nothing else is special. */
export function globToRegExp(glob: string): RegExp {
  const body = glob.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  return new RegExp(`^${body}$`);
}

// ── where a step and the workflow stand ────────────────────────────────────

/** A step whose jobs were all queued: running while any is open, else succeeded or failed. */
export function settleStep(p: StepProgress): { status: StepStatus; reason: string | null } {
  if (p.instances.some(isOpen)) return { status: 'running', reason: null };
  if (p.instances.every((i) => i.state === 'succeeded')) return { status: 'succeeded', reason: null };
  return { status: 'failed', reason: failureReason(p) };
}

/** "3 of 100 jobs failed: job 17 (cand-3.xyz): why", for the step and the workflow. */
export function failureReason(p: StepProgress): string {
  const bad = p.instances.filter((i) => i.state === 'failed' || i.state === 'cancelled');
  const first = bad.find((i) => i.state === 'failed') ?? bad[0];
  if (!first) return 'failed';
  const cancelled = bad.every((i) => i.state === 'cancelled');
  const what = p.instances.length === 1 ? `its job ${cancelled ? 'was cancelled' : 'failed'}` : `${bad.length} of ${p.instances.length} jobs ${cancelled ? 'were cancelled' : 'failed'}`;
  return `${what}: job ${first.jobId}${first.item ? ` (${first.item})` : ''}: ${first.reason ?? first.state}`;
}

const isOpen = (i: InstanceProgress): boolean => i.state === 'queued' || i.state === 'running';

/** Under `onFailure: stop`, the first step with a failed job: it fails at once, without waiting for the rest of its jobs. */
export function firstFailure(spec: WorkflowSpec, progress: WorkflowProgress): string | null {
  for (const s of spec.steps) {
    const p = progress.steps[s.name]!;
    if (p.status === 'failed') return s.name;
    if (p.status === 'running' && p.instances.some((i) => i.state === 'failed')) {
      Object.assign(p, { status: 'failed', reason: failureReason(p) });
      return s.name;
    }
  }
  return null;
}

/** The workflow's state once no step can move: succeeded, or failed naming the first failed step. */
export function workflowOutcome(spec: WorkflowSpec, progress: WorkflowProgress): { state: WorkflowState; reason: string | null } {
  const open = spec.steps.some((s) => {
    const st = progress.steps[s.name]!.status;
    return st === 'waiting' || st === 'running';
  });
  if (open) return { state: 'running', reason: null };
  const failed = spec.steps.find((s) => progress.steps[s.name]!.status === 'failed');
  if (failed) return { state: 'failed', reason: `step "${failed.name}" failed: ${progress.steps[failed.name]!.reason ?? ''}`.trim() };
  const other = spec.steps.find((s) => progress.steps[s.name]!.status !== 'succeeded');
  if (other) return { state: 'failed', reason: `step "${other.name}" ${statusWord(progress.steps[other.name]!.status)}` };
  return { state: 'succeeded', reason: null };
}

/**
 * The workflow stops (a failure under `onFailure: stop`, a cancel): every step still waiting
 * is skipped, every running one cancelled, and every open job marked cancelled. Returns the
 * steps whose jobs the loop must cancel.
 */
export function stopAll(spec: WorkflowSpec, progress: WorkflowProgress, why: string): string[] {
  const toCancel: string[] = [];
  for (const s of spec.steps) {
    const p = progress.steps[s.name]!;
    if (p.status === 'waiting') Object.assign(p, { status: 'skipped', reason: why });
    else if (p.status === 'running') Object.assign(p, { status: 'cancelled', reason: why });
    const open = p.instances.filter(isOpen);
    for (const i of open) Object.assign(i, { state: 'cancelled', reason: why });
    if (open.length > 0) toCancel.push(s.name);
  }
  return toCancel;
}

/**
 * Retry: every step that did not succeed waits again (its succeeded jobs are kept and reused by
 * key when it is planned anew). Returns the steps reset.
 */
export function resetForRetry(spec: WorkflowSpec, progress: WorkflowProgress): string[] {
  const reset: string[] = [];
  for (const s of spec.steps) {
    const p = progress.steps[s.name]!;
    if (p.status === 'succeeded') continue;
    p.status = 'waiting';
    p.reason = null;
    reset.push(s.name);
  }
  return reset;
}

/** The succeeded instances of steps by `key` (what a resumed spec may reuse) or `retryKey` (what a retry of the step reuses). */
export function reusable(steps: StepProgress[], by: 'key' | 'retryKey'): Map<string, InstanceProgress> {
  const m = new Map<string, InstanceProgress>();
  for (const p of steps) for (const i of p.instances) if (i.state === 'succeeded' && !m.has(i[by])) m.set(i[by], i);
  return m;
}
