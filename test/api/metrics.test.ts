import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildMetrics } from '../../src/server/metrics.js';
import type { ServiceContext } from '../../src/service/context.js';
import { SqliteStore } from '../../src/store/sqlite/sqlite-store.js';
import { appSpec, jobSpec } from '../store/conformance.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { createApp } from './util.js';

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
      const registry = buildMetrics({ store: counting, now: () => now } as unknown as ServiceContext);
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
