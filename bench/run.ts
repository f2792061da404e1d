/**
 * Benchmark runner.
 *
 *   npm run bench                     run every benchmark, rewrite bench/RESULTS.md
 *   npm run bench -- NAME             run one, print a summary
 *   npm run bench -- NAME --json      run one; the LAST line of stdout is one JSON object
 *   npm run bench -- --list           list the benchmarks
 *
 * BENCH_TIMEOUT_SECONDS=N caps each benchmark's run time (default: its own timeoutSeconds).
 * Progress goes to stderr. Benchmarks are registered below; each declares its targets and
 * returns its figures, and the runner judges them, so adding one is one entry in BENCHMARKS.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { fileURLToPath } from 'node:url';
import { cleanupAll, targetMet, type Benchmark, type Field, type Fields, type Target } from './harness.js';
import { containersBenchmark } from './containers.js';
import { depthBenchmark } from './depth.js';
import { dispatchBenchmark } from './dispatch.js';
import { queryBenchmark } from './query.js';
import { simBenchmark } from './sim.js';
import { submitBenchmark } from './submit.js';

const BENCHMARKS: Benchmark[] = [submitBenchmark, queryBenchmark, containersBenchmark, dispatchBenchmark, depthBenchmark, simBenchmark];

interface Outcome {
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

interface Machine {
  cpu: string;
  cores: number;
  ramGiB: number;
  node: string;
  platform: string;
}

function machine(): Machine {
  let cpu = cpus()[0]?.model ?? 'unknown';
  try {
    cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? cpu;
  } catch {
    /* not Linux */
  }
  return { cpu, cores: cpus().length, ramGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10, node: process.version, platform: `${process.platform}/${process.arch}` };
}

async function runOne(b: Benchmark, quiet: boolean): Promise<Outcome> {
  const log = (msg: string): void => {
    process.stderr.write(`[${b.name}] ${msg}\n`);
  };
  if (!quiet) log(b.description);
  const started = performance.now();
  const loadAtStart = loadAverage();
  const base = { benchmark: b.name, description: b.description, command: `npm run bench -- ${b.name} --json`, machine: machine(), date: new Date().toISOString() };
  let timer: NodeJS.Timeout | undefined;
  const limit = Number(process.env.BENCH_TIMEOUT_SECONDS) > 0 ? Number(process.env.BENCH_TIMEOUT_SECONDS) : b.timeoutSeconds;
  try {
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${limit} s`)), limit * 1000);
    });
    const fields = await Promise.race([b.run(log), timeout]);
    const targets = b.targets.map((t) => ({ ...t, actual: fields[t.field], met: targetMet(t, fields) }));
    return { ...base, ok: true, fields, targets, met: targets.every((t) => t.met), seconds: secondsSince(started), loadAverage: { start: loadAtStart, end: loadAverage() } };
  } catch (e) {
    const error = e instanceof Error ? e.message : String(e);
    log(`FAILED: ${error}`);
    return { ...base, ok: false, error, fields: {}, targets: b.targets.map((t) => ({ ...t, actual: undefined, met: false })), met: false, seconds: secondsSince(started), loadAverage: { start: loadAtStart, end: loadAverage() } };
  } finally {
    clearTimeout(timer);
    cleanupAll(); // a timed-out run's server and temp dir go too
  }
}

function loadAverage(): number {
  try {
    return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
  } catch {
    return NaN;
  }
}

function secondsSince(t: number): number {
  return Math.round((performance.now() - t) / 100) / 10;
}

function summary(o: Outcome): string {
  const lines = [`${o.benchmark}: ${o.ok ? (o.met ? 'all targets met' : 'TARGET MISSED') : `FAILED (${o.error})`}`];
  for (const t of o.targets) lines.push(`  ${t.field} = ${fmt(t.actual)} (target ${t.op} ${fmt(t.value)} ${t.unit}) ${t.met ? 'met' : 'NOT met'}`);
  for (const [k, v] of Object.entries(o.fields)) if (!o.targets.some((t) => t.field === k)) lines.push(`  ${k} = ${typeof v === 'object' && v !== null ? JSON.stringify(v) : fmt(v)}`);
  return lines.join('\n');
}

function fmt(v: Field | undefined): string {
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

function markdown(outcomes: Outcome[]): string {
  const m = outcomes[0]?.machine ?? machine();
  const out: string[] = [
    '# boxgrid benchmarks',
    '',
    'Written by `npm run bench` (bench/run.ts): rerun it rather than editing above the notes at the end, which it keeps. One benchmark alone: `npm run bench -- NAME --json`.',
    '',
    `- Date: ${outcomes[0]?.date ?? new Date().toISOString()}`,
    `- Machine: ${m.cpu}, ${m.cores} cores, ${m.ramGiB} GiB RAM, ${m.platform}`,
    `- Node: ${m.node}`,
    '',
  ];
  for (const o of outcomes) {
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
  }
  return out.join('\n');
}

/** RESULTS.md from this marker on is written by people (what changed, earlier figures) and kept on rewrite. */
const NOTES_MARKER = '<!-- Notes: everything from this line on is kept when `npm run bench` rewrites this file. -->';

function keptNotes(file: string): string {
  let old = '';
  try {
    old = readFileSync(file, 'utf8');
  } catch {
    /* first run */
  }
  const at = old.indexOf(NOTES_MARKER);
  return '\n' + (at >= 0 ? old.slice(at) : NOTES_MARKER + '\n');
}

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const json = args.includes('--json');
  const names = args.filter((a) => !a.startsWith('--'));
  if (args.includes('--list')) {
    for (const b of BENCHMARKS) process.stdout.write(`${b.name}\t${b.description}\n`);
    return 0;
  }
  if (names.length > 1) throw new Error('give one benchmark name, or none to run them all');
  if (names.length === 1) {
    const b = BENCHMARKS.find((x) => x.name === names[0]);
    if (!b) throw new Error(`no benchmark "${names[0]}" (have: ${BENCHMARKS.map((x) => x.name).join(', ')})`);
    const o = await runOne(b, json);
    process.stdout.write(json ? JSON.stringify(o) + '\n' : summary(o) + '\n');
    return o.ok ? 0 : 1;
  }
  const outcomes: Outcome[] = [];
  for (const b of BENCHMARKS) {
    const o = await runOne(b, false);
    outcomes.push(o);
    process.stdout.write(summary(o) + '\n');
  }
  const file = fileURLToPath(new URL('../../bench/RESULTS.md', import.meta.url));
  writeFileSync(file, markdown(outcomes) + keptNotes(file));
  process.stderr.write(`wrote ${file}\n`);
  if (json) process.stdout.write(JSON.stringify({ benchmarks: outcomes }) + '\n');
  return outcomes.every((o) => o.ok) ? 0 : 1;
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    cleanupAll();
    process.exit(130);
  });
}

main().then(
  (code) => {
    cleanupAll();
    process.exit(code);
  },
  (e: unknown) => {
    cleanupAll();
    const error = e instanceof Error ? e.message : String(e);
    process.stderr.write(`bench: ${error}\n`);
    if (process.argv.includes('--json')) process.stdout.write(JSON.stringify({ ok: false, error }) + '\n');
    process.exit(2);
  },
);
