import assert from 'node:assert/strict';
import { randomInt } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { TaskRuntime } from '../../src/agent/runtime.js';
import { NativeRuntime } from '../../src/agent/runtimes/native-runtime.js';
import { BoxgridClient } from '../../src/client/client.js';
import type { TaskView } from '../../src/client/types.js';
import type { RuntimeKind } from '../../src/domain/model.js';
import { dockerSuite, ensureTestImage } from '../helpers/docker.js';
import { FAULT_KINDS, startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.js';
import { ownDockerRuntime, startGrid, untilBatchDone, type RunningAgent, type TestGrid } from '../helpers/grid.js';

/**
 * Three real agents reach the server only through a proxy that drops, delays and duplicates
 * requests and drops and delays responses. Every agent call is meant to be idempotent (docs/
 * agent.md, "The loop"), so the faults may cost time but never a job's result, a second
 * success, or a report counted twice. BOXGRID_FAULT_SEED=N replays a seed's faults (their
 * order; which call each hits depends on timing too).
 */

/**
 * The native runtime (bubblewrap) when it works here, else Docker; CI=true fails without either.
 * BOXGRID_FAULT_RUNTIME=docker takes Docker even where bubblewrap works.
 */
async function runtimeSuite(): Promise<{ skip: string | false; kind: RuntimeKind }> {
  const native = process.env.BOXGRID_FAULT_RUNTIME === 'docker' ? { usable: false, reason: 'BOXGRID_FAULT_RUNTIME=docker' } : await NativeRuntime.detect();
  if (native.usable) return { skip: false, kind: 'native' };
  const docker = await dockerSuite(); // throws under CI=true when no engine answers
  if (docker.skip) return { skip: `no runtime for real agents: ${native.reason}; ${docker.skip}`, kind: 'docker' };
  return { skip: false, kind: 'docker' };
}

const suite = await runtimeSuite();
const P = 'default';
const JOBS = 150;
const AGENTS = 3;
/** Jobs each agent runs after the faults stop, to show it recovered. */
const AFTER = 3;
/** The inputs' multipliers: job n reads MULTIPLIERS[n % 5] from /in/m.txt. */
const MULTIPLIERS = [2, 3, 5, 7, 11];
/** Each fault kind at least this often (about 2 % of ~1000 exchanges each: some 20). */
const MIN_PER_KIND = 3;

/** Job n's script: its output file is n*n*m, its log one line. */
const script = (n: number): string => `read m < /in/m.txt; echo $((${n} * ${n} * m)) > /out/r.txt; echo "job ${n}"`;

describe('agents working through a faulty network', { skip: suite.skip }, () => {
  const seed = Number(process.env.BOXGRID_FAULT_SEED ?? randomInt(2 ** 31));
  let grid: TestGrid;
  let proxy: FaultProxy;
  let inputs: string;
  const agents: Array<RunningAgent & { label: string }> = [];

  before(async () => {
    process.stderr.write(`network faults: seed ${seed} (BOXGRID_FAULT_SEED=${seed} replays it), ${suite.kind} runtime\n`);
    // Heartbeats every second, and a lease ten times that: lost heartbeats (and their retries'
    // backoff of at most half a second) do not cost a task; a task is lost only if its agent
    // could not get through for ten seconds.
    grid = await startGrid({
      timing: { leaseSeconds: 10, heartbeatSeconds: 1, idlePollSeconds: 1, sweepSeconds: 1 },
      // No speculative copies: each job should have one task, unless a fault cost one.
      scheduling: { speculation: { enabled: false, maxCopies: 0, maxActive: 0, minRunSeconds: 60 } },
    });
    proxy = await startFaultProxy({ target: grid.server.url, seed, rate: 0.1, maxDelayMs: 300 });
    const image = suite.kind === 'docker' ? await ensureTestImage() : 'unused/image:1';
    await grid.admin.createApp(P, {
      name: 'square', image, command: ['sh', '-c'], ...(suite.kind === 'native' ? { nativeCommand: ['sh', '-c'] } : {}),
      resources: { cores: 0.5, memoryMiB: 64 }, maxRuntimeSeconds: 60, maxAttempts: 3,
    });
    inputs = await mkdtemp(join(tmpdir(), 'boxgrid-faults-'));
    for (let i = 0; i < AGENTS; i++) {
      // Enrolled directly (the setup is not under test); every later call goes through the proxy.
      const host = await grid.enrollHost(`faulty-${i}`);
      const runtime: TaskRuntime = suite.kind === 'native' ? new NativeRuntime() : ownDockerRuntime();
      const label = `a${i}`;
      const running = await grid.startAgent(runtime, {
        url: proxy.url, credential: host.credential, workDir: host.workDir, runtimes: [{ kind: suite.kind, runtime }], checkpointSeconds: 60, labels: { agent: label },
        log: process.env.BOXGRID_TEST_LOG ? (level, m) => process.stderr.write(`agent ${label} ${level}: ${m}\n`) : () => undefined,
      });
      agents.push({ ...running, label });
    }
  });

  after(async () => {
    proxy?.setFaulty(false); // winding down: let the last deliveries through
    await Promise.all(agents.map((a) => a.stop()));
    await proxy?.close();
    await grid?.stop();
    if (inputs) await rm(inputs, { recursive: true, force: true });
  });

  test('every job succeeds exactly once, with the right output, and the agents recover', { timeout: 170_000 }, async () => {
    const started = Date.now();
    const blobs: string[] = [];
    for (const m of MULTIPLIERS) {
      const path = join(inputs, `m${m}.txt`);
      await writeFile(path, `${m}\n`);
      blobs.push((await grid.admin.uploadFile(P, path)).sha256);
    }
    const expected = (n: number): string => `${n * n * MULTIPLIERS[n % MULTIPLIERS.length]!}\n`;
    const jobs = Array.from({ length: JOBS }, (_, n) => ({ args: [script(n)], inputs: { 'm.txt': blobs[n % blobs.length]! } }));
    const { batch } = await grid.admin.submitBatch(P, { app: 'square', jobs });
    const detail = await untilBatchDone(grid.admin, P, batch!.id, 75_000);
    const faultsEnded = Date.now();
    proxy.setFaulty(false);
    const counts = structuredClone(proxy.counts);

    // Recovery: each agent, still running, takes its own jobs once the network is sound again.
    const recovery = await grid.admin.submitBatch(P, {
      app: 'square',
      jobs: agents.flatMap((a, i) => Array.from({ length: AFTER }, (_, k) => {
        const n = JOBS + i * AFTER + k;
        return { args: [script(n)], inputs: { 'm.txt': blobs[n % blobs.length]! }, selector: { agent: a.label } };
      })),
    });
    const recovered = await untilBatchDone(grid.admin, P, recovery.batch!.id, 20_000);
    process.stderr.write(`network faults: seed ${seed}: ${JSON.stringify(counts)}; ${JOBS} jobs in ${faultsEnded - started} ms\n`);

    assert.equal(detail.counts.succeeded, JOBS, `every job succeeds: ${JSON.stringify(detail.counts)}`);
    assert.equal(recovered.counts.succeeded, AGENTS * AFTER, `every agent recovered: ${JSON.stringify(recovered.counts)}`);

    // Each job: one success, which is its result, with the right output and log, once.
    const problems: string[] = [];
    const spare: string[] = [];
    let tasksSeen = 0;
    let reported = 0;
    let lost = 0;
    const total = JOBS + AGENTS * AFTER;
    const ids = [
      ...(await listIds(grid.admin, batch!.id)),
      ...(await listIds(grid.admin, recovery.batch!.id)),
    ];
    assert.equal(ids.length, total);
    for (const id of ids) {
      const { job, tasks } = await grid.admin.getJob(P, id);
      const n = Number(/echo "job (\d+)"/.exec(job.args[0]!)![1]);
      tasksSeen += tasks.length;
      const wins = tasks.filter((t) => t.state === 'succeeded');
      if (job.state !== 'succeeded') problems.push(`job ${id} (n=${n}): ${job.state} ${job.reason ?? ''}`);
      if (wins.length !== 1) problems.push(`job ${id} (n=${n}): ${wins.length} succeeded tasks: ${showTasks(tasks)}`);
      if (job.attempts !== tasks.length) problems.push(`job ${id} (n=${n}): ${job.attempts} attempts but ${tasks.length} tasks: ${showTasks(tasks)}`);
      const win = wins[0];
      if (!win) continue;
      if (job.resultTaskId !== win.id) problems.push(`job ${id}: its result is task ${job.resultTaskId}, not its success ${win.id}`);
      if (Object.keys(win.outputs).join() !== 'r.txt') problems.push(`job ${id}: outputs ${Object.keys(win.outputs).join()}`);
      const out = win.outputs['r.txt'] ? await (await grid.admin.download(P, win.outputs['r.txt'].sha256)).text() : null;
      if (out !== expected(n)) problems.push(`job ${id} (n=${n}): output ${JSON.stringify(out)}, expected ${JSON.stringify(expected(n))}`);
      const log = (await grid.admin.taskLog(P, { task: win.id })).text;
      if (log !== `job ${n}\n`) problems.push(`job ${id} (n=${n}): log ${JSON.stringify(log)} (a piece stored twice or lost?)`);
      for (const t of tasks) {
        if (t.state === 'succeeded' || t.state === 'failed') reported++;
        if (t.state === 'lost') lost++;
        if (t === win) continue;
        spare.push(`job ${id} task ${t.id} (host ${t.hostId}): ${t.state} ${t.outcome?.kind ?? ''} ${t.reason ?? ''}`);
        // No task may be spent on a fault: the agent retries its calls and its input downloads
        // (staging.ts), and a lease outlasts ten heartbeats, so only a task no agent holds could be lost.
        problems.push(`job ${id} (n=${n}): a second task: ${showTasks([t])}`);
      }
    }
    for (const [i, a] of agents.entries()) {
      const mine = await Promise.all(ids.slice(JOBS + i * AFTER, JOBS + (i + 1) * AFTER).map((id) => grid.admin.getJob(P, id)));
      for (const { job, tasks } of mine) {
        const win = tasks.find((t) => t.state === 'succeeded');
        if (win?.hostId !== a.hostId) problems.push(`recovery job ${job.id} ran on host ${win?.hostId}, not agent ${a.label}'s ${a.hostId}`);
        if (win && Date.parse(win.endedAt!) < faultsEnded) problems.push(`recovery job ${job.id} ended before the faults did`);
      }
    }
    if (spare.length > 0) process.stderr.write(`network faults: extra tasks:\n  ${spare.join('\n  ')}\n`);
    assert.deepEqual(problems, [], `seed ${seed}:\n${problems.join('\n')}`);

    // The server's own counts: each dispatch, report and loss counted once.
    const metrics = await (await fetch(`${grid.server.url}/metrics`)).text();
    const settledByReport = sumOf(metrics, /^boxgrid_task_duration_seconds_count\{outcome="[a-z_]+"\} (\d+)$/gm);
    assert.equal(sumOf(metrics, /^boxgrid_tasks_dispatched_total (\d+)$/gm), tasksSeen, 'every task dispatched once');
    assert.equal(settledByReport, reported, 'every report counted once (a replayed one not again)');
    assert.equal(sumOf(metrics, /^boxgrid_tasks_lost_total (\d+)$/gm), lost, 'every lost task counted once');

    // The faults all happened, on the calls that matter.
    for (const kind of FAULT_KINDS) assert.ok(counts.byKind[kind] >= MIN_PER_KIND, `${kind}: ${counts.byKind[kind]} times, fewer than ${MIN_PER_KIND}: ${JSON.stringify(counts)}`);
    const hit = (route: RegExp): number => Object.entries(counts.byRoute).filter(([k]) => route.test(k)).reduce((s, [, v]) => s + v, 0);
    assert.ok(hit(/ POST \/agent\/v1\/work$/) > 0, 'work requests were faulted');
    assert.ok(hit(/ POST \/agent\/v1\/heartbeat$/) > 0, 'heartbeats were faulted');
    assert.ok(hit(/ POST \/agent\/v1\/tasks\/:n\/result$/) > 0, 'reports were faulted');
    assert.ok(hit(/ PUT \/agent\/v1\/tasks\/:n\/blobs\/:sha256$/) > 0, 'output uploads were faulted');
    assert.equal(counts.exchanges, counts.passed + FAULT_KINDS.reduce((s, k) => s + counts.byKind[k], 0));

    // Nothing left behind: every result delivered, none dropped as refused.
    for (const a of agents) assert.equal(a.agent.stats.dropped, 0, `agent ${a.label} dropped a result the server refused`);
  });
});

/** The ids of a batch's jobs, oldest first. */
async function listIds(client: BoxgridClient, batch: number): Promise<number[]> {
  const ids: number[] = [];
  let cursor: string | undefined;
  do {
    const page = await client.listJobs(P, { batch, limit: 100, ...(cursor ? { cursor } : {}) });
    ids.push(...page.jobs.map((j) => j.id));
    cursor = page.nextCursor ?? undefined;
  } while (cursor);
  return ids.sort((a, b) => a - b);
}

function showTasks(tasks: TaskView[]): string {
  return tasks.map((t) => `task ${t.id} host ${t.hostId} ${t.state} ${t.outcome?.kind ?? ''} ${t.reason ?? ''}`).join('; ');
}

function sumOf(text: string, re: RegExp): number {
  let sum = 0;
  for (const m of text.matchAll(re)) sum += Number(m[1]);
  return sum;
}
