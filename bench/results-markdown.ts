/**
 * bench/RESULTS.md: what each benchmark's outcome looks like there, and how a run rewrites the
 * file (all of it, keeping the notes at its end) or one benchmark's section.
 */
import { readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import type { Field, Fields, Target } from './harness.js';

export interface Outcome {
  benchmark: string;
  description: string;
  ok: boolean;
  error?: string;
  fields: Fields;
  targets: Array<Target & { actual: Field | undefined; met: boolean }>;
  met: boolean;
  seconds: number;
  /** 1-minute load average when the benchmark started and ended: other work on the machine skews timings. */
  loadAverage: { start: number; end: number };
  command: string;
  machine: Machine;
  date: string;
}

export interface Machine {
  cpu: string;
  cores: number;
  ramGiB: number;
  node: string;
  platform: string;
}

export function machine(): Machine {
  let cpu = cpus()[0]?.model ?? 'unknown';
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? cpu;
  } catch {
    /* not Linux */
  }
  return { cpu, cores: cpus().length, ramGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10, node: process.version, platform: `${process.platform}/${process.arch}` };
}

export function fmt(v: Field | undefined): string {
  if (typeof v === 'number') return Number.isInteger(v) ? v.toLocaleString('en') : String(v);
  return v === undefined ? '—' : String(v);
}

/** A list or map of flat objects as a table (one row each), anything else as JSON. */
function nestedTable(v: Field): string[] {
  const rows = Array.isArray(v) ? v.map((x, i) => [String(i + 1), x] as const) : Object.entries(v as Record<string, Field>);
  const flat = rows.every(([, x]) => typeof x === 'object' && x !== null && !Array.isArray(x) && Object.values(x).every((y) => typeof y !== 'object' || y === null));
  if (rows.length === 0 || !flat) return ['```json', JSON.stringify(v), '```'];
  const cols = [...new Set(rows.flatMap(([, x]) => Object.keys(x as object)))];
  return [
    `| ${Array.isArray(v) ? '#' : ''} | ${cols.join(' | ')} |`,
    `|---|${cols.map(() => '---').join('|')}|`,
    ...rows.map(([key, x]) => `| ${key} | ${cols.map((c) => fmt((x as Record<string, Field>)[c])).join(' | ')} |`),
  ];
}

export function markdown(outcomes: Outcome[]): string {
  const m = outcomes[0]?.machine ?? machine();
  const out: string[] = [
    '# boxgrid benchmarks',
    '',
    'Written by `npm run bench` (bench/run.ts): rerun it rather than editing above the notes at the end, which it keeps. One benchmark alone: `npm run bench -- NAME --json`; with `--record` it replaces its own section.',
    '',
    `- Date: ${outcomes[0]?.date ?? new Date().toISOString()}`,
    `- Machine: ${m.cpu}, ${m.cores} cores, ${m.ramGiB} GiB RAM, ${m.platform}`,
    `- Node: ${m.node}`,
    '',
  ];
  for (const o of outcomes) out.push(...section(o));
  return out.join('\n');
}

/** One benchmark's part of RESULTS.md, from its `## NAME` heading to the blank line after its machine. */
function section(o: Outcome): string[] {
  const out: string[] = [];
  out.push(`## ${o.benchmark}`, '', o.description, '');
  if (!o.ok) out.push(`**Failed:** ${o.error}`, '');
  out.push('| figure | value | target | met |', '|---|---|---|---|');
  for (const t of o.targets) out.push(`| ${t.field} | ${fmt(t.actual)} | ${t.op} ${fmt(t.value)} ${t.unit} | ${t.met ? 'yes' : '**no**'} |`);
  for (const [k, v] of Object.entries(o.fields)) {
    if (o.targets.some((t) => t.field === k) || (typeof v === 'object' && v !== null)) continue;
    out.push(`| ${k} | ${fmt(v)} | | |`);
  }
  out.push('');
  for (const [k, v] of Object.entries(o.fields)) {
    if (typeof v !== 'object' || v === null) continue;
    out.push(`${k}:`, '', ...nestedTable(v), '');
  }
  out.push(
    `- Command: \`${o.command}\``,
    `- Date: ${o.date} (took ${o.seconds} s)`,
    `- Machine: ${o.machine.cpu}, ${o.machine.cores} cores, ${o.machine.ramGiB} GiB RAM, Node ${o.machine.node}`,
    `- Load average (1 min) at start / end: ${o.loadAverage.start} / ${o.loadAverage.end} (on ${o.machine.cores} cores; other work on the machine slows every figure)`,
    '',
  );
  return out;
}

/**
 * RESULTS.md with one benchmark's section replaced (or added before the notes), the others and
 * the notes kept: for rerunning one benchmark after a change to it.
 */
export function withSection(old: string, o: Outcome): string {
  const text = section(o).join('\n');
  const heading = `## ${o.benchmark}\n`;
  const notes = old.indexOf(NOTES_MARKER);
  const limit = notes >= 0 ? notes : old.length;
  const start = old.startsWith(heading) ? 0 : old.indexOf(`\n${heading}`) + 1; // 0: not found, unless at the very start
  const found = old.startsWith(heading) || start > 0;
  if (!found || start > limit) return old.slice(0, limit) + text + '\n' + old.slice(limit);
  const next = old.indexOf('\n## ', start + heading.length);
  const end = next >= 0 && next < limit ? next + 1 : limit;
  return old.slice(0, start) + text + '\n' + old.slice(end);
}

/** RESULTS.md from this marker on is written by people (what changed, earlier figures) and kept on rewrite. */
export const NOTES_MARKER = '<!-- Notes: everything from this line on is kept when `npm run bench` rewrites this file. -->';

export function keptNotes(file: string): string {
  let old = '';
  try {
    old = readFileSync(file, 'utf8');
  } catch {
    /* first run */
  }
  const at = old.indexOf(NOTES_MARKER);
  return '\n' + (at >= 0 ? old.slice(at) : NOTES_MARKER + '\n');
}
