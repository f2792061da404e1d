import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { boundedDepth, buildMetrics, MAX_QUEUE_SERIES, OTHER } from '../../src/server/metrics.js';
import type { ServiceContext } from '../../src/service/context.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { appSpec, jobSpec } from '../store/conformance.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { createApp } from './util.js';
import { failed, ok, P, TIMING, withGrid } from './protocol-grid.js';

/** The samples of a Prometheus text exposition: `name{labels}` → value. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

describe('GET /metrics', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(async () => {
    await s.stop();
  });

  it('answers without a token, in Prometheus text format, the demand by resource shape and in total', async () => {
    await createApp(s, 'default', 'small', { resources: { cores: 1, memoryMiB: 512, diskMiB: 1024 } });
    await createApp(s, 'default', 'gpu', { resources: { cores: 4, memoryMiB: 8192, diskMiB: 1024, gpus: 1 } });
    assert.equal((await s.call('POST', '/v1/projects/default/batches', { body: { app: 'small', count: 3 } })).status, 201);
    assert.equal((await s.call('POST', '/v1/projects/default/batches', { body: { app: 'gpu', count: 2 } })).status, 201);
    assert.equal((await s.call('POST', '/v1/projects/default/jobs', { body: { app: 'small', resources: { memoryMiB: 2048 } } })).status, 201);

    const r = await s.call('GET', '/metrics', { token: null });
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const m = samples(r.text);
    assert.equal(m.get('boxgrid_demand_jobs{cores="1",memory_mib="512",disk_mib="1024",gpus="0",native="false",max_runtime_seconds="3600",selector="false"}'), 3);
    assert.equal(m.get('boxgrid_demand_jobs{cores="1",memory_mib="2048",disk_mib="1024",gpus="0",native="false",max_runtime_seconds="3600",selector="false"}'), 1, "a job's own resources make its shape");
    assert.equal(m.get('boxgrid_demand_jobs{cores="4",memory_mib="8192",disk_mib="1024",gpus="1",native="false",max_runtime_seconds="3600",selector="false"}'), 2);
    assert.equal(m.get('boxgrid_demand_cores'), 3 + 1 + 8);
    assert.equal(m.get('boxgrid_demand_gpus'), 2);
    assert.equal(m.get('boxgrid_demand_memory_bytes'), (3 * 512 + 2048 + 2 * 8192) * 1024 * 1024);
    assert.doesNotMatch(r.text, /default|small|gpu"/, 'no project or app names');
  });
});

describe('demand metrics', () => {
  it('read the store at most once per 5 s however often scraped, and show what changed after', async () => {
    const store = new SqliteStore(':memory:');
    await store.migrate();
    try {
      const project = await store.createProject('p', 1, 0);
      const app = await store.createAppVersion(project.id, appSpec('a'), 'new', 0);
      let now = 1_000_000;
      let reads = 0;
      const counting = new Proxy(store, {
        get: (target, key) => (key === 'demand' ? (t: number) => (reads++, target.demand(t)) : Reflect.get(target, key)),
      });
      const registry = buildMetrics({ store: counting, now: () => now, timing: TIMING } as unknown as ServiceContext).anonymous;
      const jobsNow = async () => samples(await registry.metrics()).get('boxgrid_demand_jobs{cores="2",memory_mib="1024",disk_mib="2048",gpus="0",native="false",max_runtime_seconds="3600",selector="false"}');
      assert.equal(await jobsNow(), undefined, 'no queued jobs: no shape');
      await store.insertJobs({ projectId: project.id, app, batch: null, jobs: [jobSpec(), jobSpec()], idempotency: null, now });
      assert.equal(await jobsNow(), undefined, 'within 5 s of the last reading, the same reading');
      now += 5000;
      assert.equal(await jobsNow(), 2);
      assert.equal(reads, 2, 'one reading per 5 s, shared by all five gauges of a scrape');
    } finally {
      await store.close();
    }
  });
});

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Every sample of an exposition, its labels parsed (label values here hold no `,` or `"`). */
function parse(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of m[2] ? m[2].split(',') : []) {
      const [k, v] = pair.split('=');
      labels[k!] = JSON.parse(v!);
    }
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

/** The value of the one sample with this name and (at least) these labels; undefined if none. */
function valueOf(samples: Sample[], name: string, labels: Record<string, string | number> = {}): number | undefined {
  const found = samples.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === String(v)));
  assert.ok(found.length <= 1, `one sample of ${name} ${JSON.stringify(labels)}, not ${found.length}`);
  return found[0]?.value;
}

describe('GET /metrics after work through the agent protocol', () => {
  it('shows queue depth by app (operators only), tasks by state, dispatches, durations, hosts online, usage and the process; per-server counters count each event once', async () => {
    await withGrid(async (g) => {
      const { s } = g;
      await createApp(s, P, 'small', { resources: { cores: 1, memoryMiB: 512, diskMiB: 1024 } });
      await createApp(s, P, 'big', { resources: { cores: 4, memoryMiB: 8192, diskMiB: 1024 } });
      assert.equal((await s.call('POST', `/v1/projects/${P}/batches`, { body: { app: 'small', count: 5 } })).status, 201);
      assert.equal((await s.call('POST', `/v1/projects/${P}/batches`, { body: { app: 'big', count: 2 } })).status, 201);
      const h1 = await g.host();
      const h2 = await g.host();
      await g.host(); // enrolled, never called: not online

      const t1 = await h1.claim({ maxTasks: 3 });
      const t2 = await h2.claim({ maxTasks: 1 });
      assert.equal(t1.length + t2.length, 4);
      assert.equal((await h1.heartbeat([{ taskId: t1[0].taskId, usage: { cpuSeconds: 1, peakMemoryMiB: 50 } }])).status, 200);
      const usageOk = { cpuSeconds: 2.5, peakMemoryMiB: 300 };
      assert.equal((await h1.report(t1[1].taskId, { ...ok, usage: usageOk })).status, 200);
      assert.equal((await h1.report(t1[1].taskId, { ...ok, usage: usageOk })).status, 200, 'a replay');
      assert.equal((await h1.report(t1[2].taskId, { ...failed(1), usage: { cpuSeconds: 0.5, peakMemoryMiB: 100 } })).status, 200);
      assert.equal((await h2.work({ requestId: 'none-left-for-me', maxTasks: 1, free: { cores: 0 } })).status, 200, 'a claim that hands out nothing');

      // What is still queued, by app: submitted, less the claimed, plus the failed job if it went back to its queue.
      const claimed = [...t1, ...t2];
      const requeued = (await g.job(t1[2].jobId)).job.state === 'queued' ? 1 : 0;
      const isSmall = (t: any) => t.resources.cores === 1;
      const queuedSmall = 5 - claimed.filter(isSmall).length + (isSmall(t1[2]) ? requeued : 0);
      const queuedBig = 2 - claimed.filter((t) => !isSmall(t)).length + (isSmall(t1[2]) ? 0 : requeued);

      const anon = await s.call('GET', '/metrics', { token: null });
      assert.equal(anon.status, 200);
      assert.doesNotMatch(anon.text, /default|small|big"|boxgrid_queue_jobs/, 'without a token: no project or app names, no queue depth by app');
      const asOperator = await s.call('GET', '/metrics');
      assert.equal(asOperator.status, 200);
      const m = parse(asOperator.text);
      const shape = { cores: 1, memory_mib: 512, disk_mib: 1024, gpus: 0 };
      assert.equal(valueOf(m, 'boxgrid_queue_jobs', { project: P, app: 'small', ...shape }) ?? 0, queuedSmall);
      assert.equal(valueOf(m, 'boxgrid_queue_jobs', { project: P, app: 'big', cores: 4, memory_mib: 8192 }) ?? 0, queuedBig);
      assert.equal(valueOf(m, 'boxgrid_tasks', { state: 'running' }), 1, 'the heartbeated task');
      assert.equal(valueOf(m, 'boxgrid_tasks', { state: 'assigned' }), 1, "h2's task; the reported ones ended");
      assert.equal(valueOf(m, 'boxgrid_tasks_dispatched_total'), 4, 'every task handed out, once');
      assert.equal(valueOf(m, 'boxgrid_task_duration_seconds_count', { outcome: 'succeeded' }), 1, 'the replayed report counted once');
      assert.equal(valueOf(m, 'boxgrid_task_duration_seconds_count', { outcome: 'failed' }), 1);
      assert.equal(valueOf(m, 'boxgrid_task_duration_seconds_count', { outcome: 'timeout' }), 0, 'every outcome shows');
      assert.equal(valueOf(m, 'boxgrid_task_duration_seconds_sum', { outcome: 'succeeded' }), 1.2);
      assert.equal(valueOf(m, 'boxgrid_task_duration_seconds_bucket', { outcome: 'succeeded', le: 1 }), 0);
      assert.equal(valueOf(m, 'boxgrid_task_duration_seconds_bucket', { outcome: 'succeeded', le: 5 }), 1);
      assert.equal(m.filter((x) => x.name === 'boxgrid_task_duration_seconds_count').reduce((sum, x) => sum + x.value, 0), 2, 'as many as the reports');
      assert.equal(valueOf(m, 'boxgrid_hosts_online'), 2, 'the host that never called is not online');
      assert.equal(valueOf(m, 'boxgrid_task_cpu_seconds_total'), 3, "the reports' CPU seconds (heartbeats count no usage)");
      assert.equal(valueOf(m, 'boxgrid_task_peak_memory_bytes_count'), 2);
      assert.equal(valueOf(m, 'boxgrid_task_peak_memory_bytes_sum'), 400 * 1024 * 1024);
      assert.equal(valueOf(m, 'boxgrid_task_peak_memory_bytes_bucket', { le: 2 ** 28 }), 1, '100 MiB ≤ 256 MiB < 300 MiB');
      assert.equal(valueOf(m, 'boxgrid_tasks_lost_total'), 0);
      assert.ok((valueOf(m, 'process_cpu_user_seconds_total') ?? 0) > 0, "the process's own metrics");
      assert.ok((valueOf(m, 'nodejs_heap_size_used_bytes') ?? 0) > 0);
      assert.equal(valueOf(parse(anon.text), 'boxgrid_tasks_dispatched_total'), 4, 'the anonymous view has the rest');

      const viewer = await s.userWithRole('watcher', P, 'viewer');
      const asViewer = await s.call('GET', '/metrics', { token: viewer });
      assert.equal(asViewer.status, 200);
      assert.doesNotMatch(asViewer.text, /boxgrid_queue_jobs/, 'only operators see names');
      assert.equal((await s.call('GET', '/metrics', { token: 'not-a-token' })).status, 401, 'a token that does not authenticate is refused');

      // The leases expire: the sweeper loses both active tasks; hosts go offline (and the readings are older than 5 s).
      g.advance((TIMING.leaseSeconds + 1) * 1000);
      assert.equal(await s.sweeper.sweep(), 2);
      const later = parse((await s.call('GET', '/metrics', { token: null })).text);
      assert.equal(valueOf(later, 'boxgrid_tasks_lost_total'), 2);
      assert.equal(valueOf(later, 'boxgrid_tasks', { state: 'running' }), 0);
      assert.equal(valueOf(later, 'boxgrid_tasks', { state: 'assigned' }), 0);
      assert.equal(valueOf(later, 'boxgrid_hosts_online'), 0);
    });
  });

  it('the Grafana dashboard is importable and its queries use only metrics the server exports', async () => {
    const dashboard = JSON.parse(await readFile(new URL('../../../deploy/grafana/boxgrid.json', import.meta.url), 'utf8'));
    assert.deepEqual(dashboard.__inputs.map((i: any) => [i.name, i.type, i.pluginId]), [['DS_PROMETHEUS', 'datasource', 'prometheus']]);
    const panels: any[] = dashboard.panels;
    const titles = panels.map((p) => p.title).join('\n');
    for (const want of [/queue depth/i, /tasks by state/i, /dispatch/i, /duration/i, /hosts online/i, /demand.*cores/i, /demand.*memory/i, /cpu/i, /process memory/i]) {
      assert.match(titles, want);
    }
    assert.match(JSON.stringify(panels), /boxgrid_demand_gpus/);
    assert.equal(new Set(panels.map((p) => p.id)).size, panels.length, 'panel ids are unique');
    const exprs: string[] = [];
    for (const p of panels) {
      assert.equal(p.datasource?.uid, '${DS_PROMETHEUS}', `panel ${p.title}: the datasource input`);
      assert.ok(p.targets.length > 0, `panel ${p.title} has queries`);
      for (const t of p.targets) exprs.push(t.expr);
    }

    let exported: Set<string> = new Set();
    await withGrid(async (g) => {
      await createApp(g.s, P, 'small', { resources: { cores: 1, memoryMiB: 512, diskMiB: 1024 } });
      assert.equal((await g.s.call('POST', `/v1/projects/${P}/batches`, { body: { app: 'small', count: 3 } })).status, 201);
      const h = await g.host();
      const [t] = await h.claim({ maxTasks: 1 });
      assert.equal((await h.report(t.taskId, { ...ok, usage: { cpuSeconds: 1, peakMemoryMiB: 64 } })).status, 200);
      exported = new Set(parse((await g.s.call('GET', '/metrics')).text).map((x) => x.name));
    });
    const used = new Set(exprs.flatMap(metricNames));
    assert.ok(used.size >= 10, `the queries name metrics: ${[...used].join(', ')}`);
    const unknown = [...used].filter((n) => !exported.has(n));
    assert.deepEqual(unknown, [], 'every metric the dashboard queries is exported');
  });
});

const PROMQL_WORDS = new Set(['and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'inf', 'nan']);

/** The metric names a PromQL expression reads: identifiers outside label matchers, ranges, strings and groupings that are not calls. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '');
  const names: string[] = [];
  for (const m of bare.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?/g)) {
    if (m[2] !== undefined || PROMQL_WORDS.has(m[1]!.toLowerCase())) continue;
    names.push(m[1]!);
  }
  return names;
}

describe('queue depth series', () => {
  it(`are the ${MAX_QUEUE_SERIES} largest groups and one more for the rest`, () => {
    const rows = Array.from({ length: MAX_QUEUE_SERIES + 5 }, (_, i) => ({
      project: 'p', app: `a${i}`, resources: { cores: 1, memoryMiB: 512, diskMiB: 1024, gpus: 0 }, jobs: 1000 - i,
    }));
    const series = boundedDepth(rows);
    assert.equal(series.length, MAX_QUEUE_SERIES + 1);
    assert.deepEqual(series[0], { labels: { project: 'p', app: 'a0', cores: 1, memory_mib: 512, disk_mib: 1024, gpus: 0 }, jobs: 1000 });
    assert.deepEqual(series.at(-1), {
      labels: { project: OTHER, app: OTHER, cores: OTHER, memory_mib: OTHER, disk_mib: OTHER, gpus: OTHER },
      jobs: [0, 1, 2, 3, 4].reduce((sum, k) => sum + 1000 - MAX_QUEUE_SERIES - k, 0),
    });
    assert.equal(boundedDepth(rows.slice(0, MAX_QUEUE_SERIES)).length, MAX_QUEUE_SERIES, 'no (other) when all fit');
  });
});
