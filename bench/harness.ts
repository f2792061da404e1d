/**
 * What every benchmark shares: the registry types, a real server in a child process, a small
 * keep-alive HTTP client, latency statistics and cleanup that runs even on failure.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export type Field = number | string | boolean | null | Field[] | { [k: string]: Field };
export type Fields = Record<string, Field>;

export interface Target {
  /** The field of the result the target is about. */
  field: string;
  op: '>=' | '<=';
  value: number;
  unit: string;
}

export interface Benchmark {
  name: string;
  description: string;
  targets: Target[];
  /** The whole run, setup included, is abandoned after this long. */
  timeoutSeconds: number;
  run(log: (msg: string) => void): Promise<Fields>;
}

export function targetMet(t: Target, fields: Fields): boolean {
  const v = fields[t.field];
  if (typeof v !== 'number' || !Number.isFinite(v)) return false;
  return t.op === '>=' ? v >= t.value : v <= t.value;
}

// ── cleanup ───────────────────────────────────────────────────────────────

const cleanups = new Set<() => void>();

/** Registers a synchronous cleanup; returns a function that runs it now (once) and forgets it. */
export function onCleanup(fn: () => void): () => void {
  let done = false;
  const run = (): void => {
    if (done) return;
    done = true;
    cleanups.delete(run);
    try {
      fn();
    } catch {
      /* best effort */
    }
  };
  cleanups.add(run);
  return run;
}

/** Runs every pending cleanup (children killed, temp dirs removed). Safe to call repeatedly. */
export function cleanupAll(): void {
  for (const fn of [...cleanups]) fn();
}

process.on('exit', cleanupAll);

// ── the server under test ────────────────────────────────────────────────

export interface ServerUnderTest {
  url: string;
  adminToken: string;
  pid: number;
  dataDir: string;
  client: HttpClient;
  /** VmRSS and VmHWM (peak) of the server process, MiB. */
  memory(): { rssMb: number; peakRssMb: number };
  stop(): Promise<void>;
}

export interface ServerProcessOptions {
  startTimeoutMs?: number;
  /** Overrides the server's agent-protocol clock (heartbeat, idle poll, …), as `startServer` takes it. */
  timing?: Record<string, number>;
  /** A postgres:// URL instead of the data dir's SQLite file. */
  database?: string;
  /** Joins servers already on `database`: the first one's admin token, since this one bootstraps nothing. */
  adminToken?: string;
}

/**
 * Starts dist/bench/server-process.js on a fresh temp data dir and waits for its URL.
 * BENCH_SERVER_NODE_ARGS passes flags to the server's node, e.g. `--cpu-prof --cpu-prof-dir=DIR`
 * to profile the server under load (NODE_OPTIONS refuses --cpu-prof).
 */
export async function startServerProcess(opts: ServerProcessOptions = {}): Promise<ServerUnderTest> {
  const startTimeoutMs = opts.startTimeoutMs ?? 30_000;
  const dataDir = mkdtempSync(join(tmpdir(), 'boxgrid-bench-'));
  const removeDir = onCleanup(() => rmSync(dataDir, { recursive: true, force: true }));
  const script = fileURLToPath(new URL('./server-process.js', import.meta.url));
  const args = [script, dataDir, JSON.stringify({ timing: opts.timing, database: opts.database ?? process.env.BENCH_DATABASE_URL, joining: opts.adminToken !== undefined })];
  const nodeArgs = (process.env.BENCH_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child: ChildProcess = spawn(process.execPath, [...nodeArgs, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
  const killChild = onCleanup(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let exited = child.exitCode !== null;
  const exitedP = new Promise<void>((resolve) => child.once('exit', () => { exited = true; resolve(); }));

  const info = await new Promise<{ url: string; adminToken: string | null; pid: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server process did not start in time')), startTimeoutMs);
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      // Anything else on stdout (node's own diagnostics, say) is passed through to stderr.
      if (!line.startsWith('{"url"')) {
        process.stderr.write(`server: ${line}\n`);
        return;
      }
      clearTimeout(timer);
      try {
        resolve(JSON.parse(line));
      } catch {
        reject(new Error(`server process said: ${line}`));
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`server process exited (${code ?? signal}) before listening`));
    });
  }).catch((e) => {
    killChild();
    removeDir();
    throw e;
  });

  const adminToken = opts.adminToken ?? info.adminToken!;
  const client = new HttpClient(info.url, adminToken);
  return {
    ...info,
    adminToken,
    dataDir,
    client,
    memory() {
      const status = readFileSync(`/proc/${info.pid}/status`, 'utf8');
      const kb = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
      return { rssMb: round(kb('VmRSS') / 1024, 1), peakRssMb: round(kb('VmHWM') / 1024, 1) };
    },
    async stop() {
      client.close();
      if (!exited) {
        child.stdin!.end();
        child.kill('SIGTERM');
        const timeout = new Promise<void>((resolve) => setTimeout(resolve, 5000).unref());
        await Promise.race([exitedP, timeout]);
      }
      killChild();
      removeDir();
    },
  };
}

// ── HTTP ──────────────────────────────────────────────────────────────────

export interface HttpResponse {
  status: number;
  body: any;
  text: string;
  /** Milliseconds from starting to send the request until the whole response was read. */
  ms: number;
}

/** node:http over one keep-alive connection: far less client overhead than fetch per request. */
export class HttpClient {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 4 });

  constructor(readonly baseUrl: string, private readonly token: string) {}

  async call(method: string, path: string, body?: unknown, timeoutMs = 120_000): Promise<HttpResponse> {
    const payload: Buffer | undefined =
      body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    const headers: Record<string, string | number> = { authorization: `Bearer ${this.token}` };
    if (payload) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = payload.length;
    }
    return new Promise<HttpResponse>((resolve, reject) => {
      const started = performance.now();
      const req = request(this.baseUrl + path, { method, headers, agent: this.agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const ms = performance.now() - started;
          const text = Buffer.concat(chunks).toString('utf8');
          let parsed: unknown;
          try {
            parsed = text === '' ? undefined : JSON.parse(text);
          } catch {
            parsed = undefined;
          }
          resolve({ status: res.statusCode ?? 0, body: parsed, text, ms });
        });
        res.on('error', reject);
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path}: no answer in ${timeoutMs} ms`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  /** Like call, but throws unless the status is the expected one. */
  async expect(status: number, method: string, path: string, body?: unknown, timeoutMs?: number): Promise<HttpResponse> {
    const r = await this.call(method, path, body, timeoutMs);
    if (r.status !== status) throw new Error(`${method} ${path}: expected ${status}, got ${r.status}: ${r.text.slice(0, 500)}`);
    return r;
  }

  close(): void {
    this.agent.destroy();
  }
}

// ── statistics ───────────────────────────────────────────────────────────

export function round(x: number, digits = 2): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Nearest-rank percentile (p in 0..100) of a sample. */
export function percentile(sample: number[], p: number): number {
  if (sample.length === 0) return NaN;
  const sorted = [...sample].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[rank - 1]!;
}

export function median(sample: number[]): number {
  return percentile(sample, 50);
}

export function latencySummary(ms: number[]): { n: number; p50: number; p99: number; max: number } {
  return { n: ms.length, p50: round(percentile(ms, 50), 3), p99: round(percentile(ms, 99), 3), max: round(Math.max(...ms), 3) };
}

/** Deterministic pseudo-random numbers (mulberry32), so every run asks the same questions. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
