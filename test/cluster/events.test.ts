// Events across servers: a watcher connected to one server sees what is done through another
// on the same PostgreSQL database (LISTEN/NOTIFY, store/postgres/postgres-event-relay.ts).
import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BoxgridClient } from '../../src/client/client.js';
import type { StreamEvent } from '../../src/client/types.js';
import { startServer, type RunningServer } from '../../src/server/runtime.js';
import { PostgresStore } from '../../src/store/postgres/postgres-store.js';
import { dropSchema, freshSchemaName, postgresSuite, TEST_POSTGRES } from '../helpers/postgres.js';

const { skip } = await postgresSuite();

describe('events across servers on one PostgreSQL database', { skip }, () => {
  const cleanups: Array<() => Promise<void>> = [];
  after(async () => {
    for (const fn of cleanups.reverse()) await fn();
  });

  it("a watcher on one server sees a batch submitted and cancelled through another, and nothing of the other's other projects", async () => {
    const schema = freshSchemaName();
    cleanups.push(() => dropSchema(schema));
    const blobs = await mkdtemp(join(tmpdir(), 'boxgrid-events-blobs-'));
    cleanups.push(() => rm(blobs, { recursive: true, force: true }));
    const start = async (): Promise<RunningServer> => {
      const dataDir = await mkdtemp(join(tmpdir(), 'boxgrid-events-'));
      const server = await startServer({ dataDir, host: '127.0.0.1', port: 0, blobDir: blobs, store: new PostgresStore({ connectionString: TEST_POSTGRES, schema }) });
      cleanups.push(async () => {
        await server.close();
        await rm(dataDir, { recursive: true, force: true });
      });
      return server;
    };
    const a = await start();
    const b = await start();
    const token = a.adminToken;
    assert.ok(token, 'the first server bootstrapped');
    assert.equal(b.adminToken, null, 'the second found the operator there');
    const viaA = new BoxgridClient({ url: a.url, token });
    const viaB = new BoxgridClient({ url: b.url, token });
    await viaA.createProject('other');
    await viaA.createApp('default', { name: 'tiny', image: 'sci/tiny:1', command: ['true'] });
    await viaA.createApp('other', { name: 'tiny', image: 'sci/tiny:1', command: ['true'] });

    const seen: StreamEvent[] = [];
    const controller = new AbortController();
    let wake: (() => void) | null = null;
    const until = (pred: (e: StreamEvent[]) => boolean): Promise<void> =>
      new Promise((resolve) => {
        const check = (): void => {
          if (pred(seen)) resolve();
          else wake = check;
        };
        check();
      });
    const watching = viaB.events('default', {}, (e) => {
      seen.push(e);
      wake?.();
    }, controller.signal);
    // The stream is open once the server's relay listens; a first event through B proves both.
    const first = await viaB.submitBatch('default', { app: 'tiny', count: 1 });
    await until((es) => es.some((e) => (e.data as { batchId?: number }).batchId === first.batch!.id));

    await viaA.submitBatch('other', { app: 'tiny', count: 2 });
    const { batch } = await viaA.submitBatch('default', { app: 'tiny', count: 3 });
    await until((es) => es.some((e) => (e.data as { batchId?: number; change?: string }).batchId === batch!.id));
    await viaA.cancelBatch('default', batch!.id);
    await until((es) => es.some((e) => (e.data as { batchId?: number; change?: string }).batchId === batch!.id && (e.data as { change?: string }).change === 'cancelled'));
    controller.abort();
    await watching;

    const batchEvents = seen.map((e) => e.data as { type?: string; batchId?: number; change?: string }).filter((d) => d.type === 'batch');
    assert.deepEqual(batchEvents.filter((d) => d.batchId === batch!.id).map((d) => d.change), ['submitted', 'cancelled'], "A's events reached B's watcher, in order");
    const ids = new Set(batchEvents.map((d) => d.batchId));
    assert.equal(ids.size, 2, "only the watched project's batches (B's own and A's), nothing of the other project");
  });
});
