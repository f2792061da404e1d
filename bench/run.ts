/**
 * Benchmark runner.
 *
 *   npm run bench                     run every benchmark, rewrite bench/RESULTS.md
 *   npm run bench -- NAME             run one, print a summary
 *   npm run bench -- NAME --json      run one; the LAST line of stdout is one JSON object
 *   npm run bench -- NAME --record    run one and replace its section of bench/RESULTS.md
 *   npm run bench -- --list           list the benchmarks
 *
 * BENCH_TIMEOUT_SECONDS=N caps each benchmark's run time (default: its own timeoutSeconds).
 * Progress goes to stderr. Benchmarks are registered below; each declares its targets and
 * returns its figures, and the runner judges them, so adding one is one entry in BENCHMARKS.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { cleanupAll, targetMet, type Benchmark } from './harness.js';
import { fmt, keptNotes, machine, markdown, withSection, type Outcome } from './results-markdown.js';
import { containersBenchmark } from './containers.js';
import { depthBenchmark } from './depth.js';
import { dispatchBenchmark } from './dispatch.js';
import { multiserverBenchmark } from './multiserver.js';
import { pilotsBenchmark } from './pilots.js';
import { queryBenchmark } from './query.js';
import { simBenchmark } from './sim.js';
import { soakBenchmark } from './soak.js';
import { submitBenchmark } from './submit.js';
import { validationBenchmark } from './validation.js';

const BENCHMARKS: Benchmark[] = [submitBenchmark, queryBenchmark, containersBenchmark, dispatchBenchmark, multiserverBenchmark, pilotsBenchmark, depthBenchmark, simBenchmark, validationBenchmark, soakBenchmark];

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

function resultsFile(): string {
  return fileURLToPath(new URL('../../bench/RESULTS.md', import.meta.url));
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
    if (args.includes('--record')) {
      if (!o.ok) throw new Error(`${b.name} failed: RESULTS.md is left as it was`);
      const file = resultsFile();
      writeFileSync(file, withSection(readFileSync(file, 'utf8'), o));
      process.stderr.write(`wrote the ${b.name} section of ${file}\n`);
    }
    return o.ok ? 0 : 1;
  }
  const outcomes: Outcome[] = [];
  for (const b of BENCHMARKS) {
    const o = await runOne(b, false);
    outcomes.push(o);
    process.stdout.write(summary(o) + '\n');
  }
  const file = resultsFile();
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
