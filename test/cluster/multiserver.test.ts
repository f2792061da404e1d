// Several boxgrid servers on one PostgreSQL database: three real server processes (the CLI's
// `boxgrid server --db postgres://…`), 300 simulated agents spread over them as a load balancer
// would, and one server killed mid-run. Every job must run exactly once and none be lost.
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { BoxgridClient } from '../../src/client/client.js';
import type { TaskAssignment, WorkRequestBody } from '../../src/client/types.js';
import { BoxgridError } from '../../src/domain/errors.js';
import { newCredential } from '../../src/service/credentials.js';
import { freshDatabase, postgresSuite } from '../helpers/postgres.js';
import { children, exited, startServerProcess, type Started } from '../helpers/server-process.js';

const { skip } = await postgresSuite();
const SERVERS = 3;
const AGENTS = 300;
const JOBS = 1500;
const RESOURCES = { cores: 2, memoryMiB: 4096, diskMiB: 10_000, gpus: 0 };

/**
 * One simulated host: it enrols, then asks for work and reports each task as succeeded, each
 * call to the next server in turn. A call that finds its server gone is sent, unchanged (same
 * requestId, same report), to the next one: what a retrying agent behind a load balancer does.
 */
class SimHost {
  private clients: BoxgridClient[] = [];
  private turn: number;

  constructor(private readonly servers: () => string[], index: number) {
    this.turn = index;
  }

  private async call<T>(fn: (c: BoxgridClient) => Promise<T>): Promise<T> {
    for (let tries = 0; ; tries++) {
      const urls = this.servers();
      const client = this.clients[this.turn % urls.length] ?? this.clients[0]!;
      this.turn++;
      try {
        return await fn(client);
      } catch (e) {
        if (!(e instanceof BoxgridError && e.code === 'unavailable') || tries > 10) throw e;
      }
    }
  }

  async enroll(enrollToken: string, name: string): Promise<void> {
    const c = newCredential('host');
    const body = { enrollToken, name, resources: RESOURCES, platform: 'linux/amd64', credentialId: c.id, credentialHash: c.secretHash.toString('hex') };
    this.clients = this.servers().map((url) => new BoxgridClient({ url, retries: 0 }));
    await this.call((client) => client.enroll(body));
    this.clients = this.servers().map((url) => new BoxgridClient({ url, token: c.token, retries: 0 }));
  }

  /** Runs until `done()`; returns the tasks it was given. */
  async run(done: () => boolean, onReported: (t: TaskAssignment) => void, serverUsed: (url: string) => void): Promise<TaskAssignment[]> {
    const got: TaskAssignment[] = [];
    while (!done()) {
      const body: WorkRequestBody = { requestId: randomUUID(), free: RESOURCES, maxTasks: 2, runtimes: ['docker'] };
      const answer = await this.call(async (client) => {
        const a = await client.requestWork(body);
        if (a.tasks.length > 0) serverUsed(client.url);
        return a;
      });
      if (answer.tasks.length === 0) {
        // The agent's idle poll, shortened: the run ends once the last report is in.
        await new Promise((r) => setTimeout(r, Math.min(answer.retryAfterMs, 100)));
        continue;
      }
      for (const t of answer.tasks) {
        got.push(t);
        const r = await this.call((client) => client.reportTask(t.taskId, { outcome: { kind: 'succeeded' }, durationMs: 1, outputs: {} }));
        assert.equal(r.taskState, 'succeeded');
        onReported(t);
      }
    }
    return got;
  }
}

describe('three servers on one PostgreSQL database', { skip }, () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const c of children) c.kill('SIGKILL'); // only after a failed assertion
    for (const fn of cleanups.reverse()) await fn();
  });

  it(`runs ${JOBS} jobs once each for ${AGENTS} agents spread over the servers, one of which is killed mid-run`, async () => {
    const db = await freshDatabase();
    cleanups.push(db.drop);
    const blobs = await mkdtemp(join(tmpdir(), 'boxgrid-shared-blobs-'));
    cleanups.push(() => rm(blobs, { recursive: true, force: true }));
    const start = async (): Promise<Started> => {
      const dataDir = await mkdtemp(join(tmpdir(), 'boxgrid-multi-'));
      cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
      return startServerProcess(dataDir, ['--blobs', blobs], { BOXGRID_DATABASE_URL: db.url });
    };
    // The first start bootstraps the operator; the others find it done.
    const first = await start();
    const adminToken = /admin token[^\n]*\n(\S+)/.exec(await first.stderrMatching(/admin token[^\n]*\n\S+/))![1]!;
    const servers = [first, ...(await Promise.all(Array.from({ length: SERVERS - 1 }, start)))];
    assert.ok(servers.slice(1).every((s) => !/admin token/.test(s.stderr())), 'only the first server bootstrapped');
    let live = servers.map((s) => s.url);

    const admin = new BoxgridClient({ url: servers[1]!.url, token: adminToken });
    const { token: enrollToken } = await admin.createEnrollToken({ uses: AGENTS, label: 'multiserver' });
    await admin.createApp('default', { name: 'tiny', image: 'sci/tiny:1', command: ['true'], resources: { cores: 1, memoryMiB: 256 } });
    const { batch } = await admin.submitBatch('default', { app: 'tiny', count: JOBS });

    const hosts = Array.from({ length: AGENTS }, (_, i) => new SimHost(() => live, i));
    for (let i = 0; i < AGENTS; i += 30) await Promise.all(hosts.slice(i, i + 30).map((h, k) => h.enroll(enrollToken, `sim-${i + k}`)));

    const reported = new Set<number>();
    const usedServers = new Map<string, number>();
    let killed: Promise<number | null> | null = null;
    const victim = servers[SERVERS - 1]!;
    const onReported = (t: TaskAssignment): void => {
      reported.add(t.taskId);
      // A third of the way in, the last server dies without a chance to finish anything.
      if (killed === null && reported.size >= JOBS / 3) {
        killed = exited(victim.child);
        victim.child.kill('SIGKILL');
        live = live.filter((u) => u !== victim.url);
      }
    };
    const got = (await Promise.all(hosts.map((h) => h.run(() => reported.size >= JOBS, onReported, (u) => usedServers.set(u, (usedServers.get(u) ?? 0) + 1))))).flat();
    assert.ok(killed !== null, 'a server was killed mid-run');
    await killed;

    const taskIds = got.map((t) => t.taskId);
    const jobIds = got.map((t) => t.jobId);
    assert.equal(reported.size, JOBS, 'every job reported');
    assert.equal(new Set(jobIds).size, JOBS, 'tasks for every job');
    // A claim retried on another server after its first server died comes back as a replay,
    // so an agent may be handed the same task twice, but never another task of the same job.
    const perJob = new Map<number, Set<number>>();
    got.forEach((t) => perJob.set(t.jobId, (perJob.get(t.jobId) ?? new Set()).add(t.taskId)));
    assert.ok([...perJob.values()].every((s) => s.size === 1), 'no job handed out as two tasks');
    assert.equal(new Set(taskIds).size, JOBS);
    for (const s of servers) assert.ok((usedServers.get(s.url) ?? 0) > 0, `server ${s.url} handed out work`);

    const detail = await admin.getBatch('default', batch!.id);
    assert.equal(detail.counts.succeeded, JOBS, 'every job succeeded');
    assert.equal(detail.done, true);
    const direct = new pg.Client({ connectionString: db.url });
    await direct.connect();
    try {
      const twice = await direct.query('SELECT job_id FROM tasks GROUP BY job_id HAVING count(*) > 1');
      assert.equal(twice.rowCount, 0, 'no job has a second task in the database');
      const attempts = await direct.query('SELECT count(*)::int AS n FROM jobs WHERE attempts <> 1');
      assert.equal(attempts.rows[0].n, 0, 'every job started once');
    } finally {
      await direct.end();
    }
    for (const s of servers.slice(0, SERVERS - 1)) {
      s.child.kill('SIGTERM');
      assert.equal(await exited(s.child), 0, 'the surviving servers shut down cleanly');
    }
  });
});
