import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { BoxgridClient } from '../../src/client/client.js';
import { BoxgridError } from '../../src/domain/errors.js';
import { startServer } from '../../src/server/runtime.js';
import { hashSecret, parseToken } from '../../src/service/credentials.js';
import { parseTransferKey, redactTransferUrl, transferPath } from '../../src/service/transfer-signature.js';
import { PostgresStore } from '../../src/store/postgres/postgres-store.js';
import { exited, startServerProcess } from '../helpers/server-process.js';
import { dropSchema, freshSchemaName, postgresSuite, TEST_POSTGRES } from '../helpers/postgres.js';
import { assertError, createApp, OCTET, openDb, sha256, submitJob, uploadBlob } from './util.js';
import { ok, P, withGrid, type Grid, type Host } from './protocol-grid.js';

/**
 * /transfer/v1: a task's files through URLs the server signs for the host holding it
 * (POST /agent/v1/tasks/{id}/transfer-urls), with no credential in the request.
 */

const pg = await postgresSuite();

async function taskWithInput(g: Grid) {
  await createApp(g.s, P, 'sim');
  const input = Buffer.from('the input');
  const digest = await uploadBlob(g.s, P, input);
  const jobId = await submitJob(g.s, P, { app: 'sim', inputs: { 'in.dat': digest } });
  const h = await g.host();
  const [a] = await h.claim();
  return { h, a, input, digest, jobId };
}

/** The URL prefixes the server signs for `h`'s task, asserting 200. */
async function urlsOf(h: Host, taskId: number, body: unknown = {}): Promise<{ inputs: string; outputs: string; expiresAt: string }> {
  const r = await h.call('POST', `/tasks/${taskId}/transfer-urls`, body);
  assert.equal(r.status, 200, r.text);
  return r.body;
}

const noToken = { token: null } as const;
const put = (g: Grid, path: string, data: Buffer) => g.s.call('PUT', path, { ...noToken, raw: data as unknown as BodyInit, headers: { ...OCTET } });
/** A log sink: pino writes each line to it. */
function logSink(): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  return { stream: new Writable({ write: (c, _e, cb) => (chunks.push(String(c)), cb()) }), text: () => chunks.join('') };
}

describe('transfer URLs', () => {
  it("are paths the server signs for a live task's host: fetch its inputs, store its outputs without a token, and the report then takes them", () =>
    withGrid(async (g) => {
      const { h, a, input, digest, jobId } = await taskWithInput(g);
      const before = Date.now();
      const urls = await urlsOf(h, a.taskId);
      assert.match(urls.inputs, new RegExp(`^/transfer/v1/${h.id}/tasks/${a.taskId}/inputs/\\d+/[A-Za-z0-9_-]{43}$`), 'a path relative to the server');
      assert.match(urls.outputs, new RegExp(`^/transfer/v1/${h.id}/tasks/${a.taskId}/outputs/\\d+/[A-Za-z0-9_-]{43}$`));
      const expiresAt = Date.parse(urls.expiresAt);
      assert.ok(Math.abs(expiresAt - (before + 86_400_000)) < 5000, `a day by default, whatever the lease: ${urls.expiresAt}`);
      assert.equal(Number(urls.inputs.split('/')[7]) * 1000, expiresAt, 'the path names the expiry');
      // Safe to repeat: another call signs again, and both work.
      const again = await urlsOf(h, a.taskId, { expiresInSeconds: 3600 });
      assert.ok(Math.abs(Date.parse(again.expiresAt) - (Date.now() + 3600_000)) < 5000);

      const got = await g.s.call('GET', `${urls.inputs}/${digest}`, noToken);
      assert.equal(got.status, 200, got.text);
      assert.equal(got.text, input.toString());
      // The staging side: a client made with the server address + the path, and no token.
      const viaClient = await new BoxgridClient({ url: g.s.url + again.inputs }).downloadSigned(digest);
      assert.equal(await viaClient.text(), input.toString());

      const output = Buffer.from('the result');
      const stored = await put(g, `${urls.outputs}/${sha256(output)}`, output);
      assert.equal(stored.status, 201, stored.text);
      assertError(await put(g, `${urls.outputs}/${sha256('something else')}`, output), 422, 'digest_mismatch');
      const file = join(g.s.dataDir, 'second-output');
      const second = Buffer.from('a second output');
      await writeFile(file, second);
      assert.equal((await new BoxgridClient({ url: g.s.url + urls.outputs }).uploadSigned(sha256(second), file, second.length)).sha256, sha256(second));

      const r = await h.report(a.taskId, { ...ok, outputs: { 'out.txt': { sha256: sha256(output), size: output.length }, 'two.txt': { sha256: sha256(second), size: second.length } } });
      assert.equal(r.status, 200, r.text);
      assert.equal((await g.job(jobId)).job.state, 'succeeded');
      const download = await g.s.call('GET', `/v1/projects/${P}/blobs/${sha256(output)}`);
      assert.equal(download.text, output.toString(), 'the output joined the project');
      // The task has ended: its URLs open nothing more, and none are signed for it.
      assertError(await g.s.call('GET', `${urls.inputs}/${digest}`, noToken), 409, 'conflict');
      assertError(await put(g, `${urls.outputs}/${sha256('late')}`, Buffer.from('late')), 409, 'conflict');
      assertError(await h.call('POST', `/tasks/${a.taskId}/transfer-urls`, {}), 409, 'conflict');
    }));

  it('are signed only for a task the host holds, for a bounded time, on a host credential', () =>
    withGrid(async (g) => {
      const { h, a } = await taskWithInput(g);
      const other = await g.host();
      assertError(await other.call('POST', `/tasks/${a.taskId}/transfer-urls`, {}), 404, 'not_found');
      assertError(await h.call('POST', '/tasks/999999/transfer-urls', {}), 404, 'not_found');
      assertError(await h.call('POST', `/tasks/${a.taskId}/transfer-urls`, { expiresInSeconds: 7 * 86_400 + 1 }), 400, 'invalid_request', 'body/expiresInSeconds');
      assertError(await h.call('POST', `/tasks/${a.taskId}/transfer-urls`, { expiresInSeconds: 59 }), 400, 'invalid_request', 'body/expiresInSeconds');
      assertError(await h.call('POST', `/tasks/${a.taskId}/transfer-urls`, { hostId: 1 }), 400, 'invalid_request', 'body/hostId');
      assert.ok(Math.abs(Date.parse((await urlsOf(h, a.taskId, { expiresInSeconds: 7 * 86_400 })).expiresAt) - (Date.now() + 7 * 86_400_000)) < 5000, 'a week at most');
      assertError(await g.s.call('POST', `/agent/v1/tasks/${a.taskId}/transfer-urls`, { body: {} }), 401, 'unauthenticated');
      assertError(await g.s.call('POST', `/agent/v1/tasks/${a.taskId}/transfer-urls`, { token: null, body: {} }), 401, 'unauthenticated');
    }));

  it('refuse a forged, altered, expired or revoked URL, one signed with the secretHash a database holds, and a file the task does not have', () =>
    withGrid(async (g) => {
      const { h, a, digest } = await taskWithInput(g);
      const other = await g.host();
      const good = (await urlsOf(h, a.taskId, { expiresInSeconds: 600 })).inputs;
      const get = (path: string) => g.s.call('GET', `${path}/${digest}`, noToken);
      assert.equal((await get(good)).status, 200);

      const [, , , hostId, , taskId, , expires, signature] = good.split('/');
      assert.equal(Number(hostId), h.id);
      const base = '/transfer/v1';
      const flipped = signature!.replace(/^./, (c) => (c === 'A' ? 'B' : 'A'));
      for (const [what, altered] of [
        ['host id', `${base}/${other.id}/tasks/${taskId}/inputs/${expires}/${signature}`],
        ['task id', `${base}/${hostId}/tasks/${Number(taskId) + 1}/inputs/${expires}/${signature}`],
        ['expiry', `${base}/${hostId}/tasks/${taskId}/inputs/${Number(expires) + 1}/${signature}`],
        ['signature', `${base}/${hostId}/tasks/${taskId}/inputs/${expires}/${flipped}`],
      ] as const) {
        const r = await get(altered);
        assertError(r, 401, 'unauthenticated');
        assert.match(r.body.error.message, /not valid/, what);
      }
      const asOutputs = `${base}/${hostId}/tasks/${taskId}/outputs/${expires}/${signature}`;
      assertError(await put(g, `${asOutputs}/${sha256('x')}`, Buffer.from('x')), 401, 'unauthenticated');

      // What a reader of the database has: the host credential's secretHash. It signs nothing.
      const secretHash = hashSecret(parseToken(h.token)!.secret);
      assertError(await get(transferPath(secretHash, h.id, a.taskId, 'inputs', Number(expires))), 401, 'unauthenticated');
      // A URL the server's key signed for a host that does not hold the task: 404, as that host's own call would be.
      assertError(await get(transferPath(g.s.ctx.transferKey, other.id, a.taskId, 'inputs', Number(expires))), 404, 'not_found');

      const notAnInput = await uploadBlob(g.s, P, Buffer.from('not an input'));
      assertError(await g.s.call('GET', `${good}/${notAnInput}`, noToken), 404, 'not_found');
      assertError(await g.s.call('GET', `${base}/${hostId}/tasks/${taskId}/inputs/${expires}/short/${digest}`, noToken), 400, 'invalid_request', 'params/signature');
      assertError(await g.s.call('GET', `${base}/0123456789abcdef/tasks/${taskId}/inputs/${expires}/${signature}/${digest}`, noToken), 400, 'invalid_request', 'params/hostId');

      // Expired: the clock moves past the URL's expiry.
      g.advance(601_000);
      const e = await get(good);
      assertError(e, 401, 'unauthenticated');
      assert.match(e.body.error.message, /expired/);
      g.advance(-601_000);
      assert.equal((await get(good)).status, 200);

      // A revoked host's URLs open nothing.
      const db = openDb(g.s);
      try {
        db.prepare("UPDATE hosts SET state = 'revoked' WHERE id = ?").run(h.id);
      } finally {
        db.close();
      }
      const revoked = await get(good);
      assertError(revoked, 401, 'unauthenticated');
      assert.match(revoked.body.error.message, /revoked/);
    }));

  it('the transfer key is what signs, not the database: a server on the same database with another key refuses the URLs, one with the same key takes them', () =>
    withGrid(async (g) => {
      const { h, a, input, digest } = await taskWithInput(g);
      const urls = await urlsOf(h, a.taskId);
      const keyFile = join(g.s.dataDir, 'transfer.key');
      assert.equal((await stat(keyFile)).mode & 0o777, 0o600, 'transfer.key is made with mode 0600');
      assert.deepEqual(parseTransferKey(await readFile(keyFile, 'utf8'), keyFile), g.s.ctx.transferKey, 'the key of the first start is in the data dir');
      assert.equal(g.s.ctx.transferKey.length, 32);
      const shared = { database: join(g.s.dataDir, 'boxgrid.db'), blobDir: join(g.s.dataDir, 'blobs') };

      // Another server, its own data dir (so its own transfer.key), the same database and blobs.
      const otherDir = await mkdtemp(join(tmpdir(), 'boxgrid-transfer-'));
      const stranger = await startServer({ dataDir: otherDir, host: '127.0.0.1', port: 0, ...shared });
      try {
        assert.notDeepEqual(stranger.ctx.transferKey, g.s.ctx.transferKey);
        const r = await fetch(`${stranger.url}${urls.inputs}/${digest}`);
        assert.equal(r.status, 401, await r.text());
        // And the URLs it signs are refused by the first server.
        const theirs = await new BoxgridClient({ url: stranger.url, token: h.token }).transferUrls(a.taskId);
        assertError(await g.s.call('GET', `${theirs.inputs}/${digest}`, noToken), 401, 'unauthenticated');
      } finally {
        await stranger.close();
        await rm(otherDir, { recursive: true, force: true });
      }

      // A `boxgrid server` process given the first server's key (BOXGRID_TRANSFER_KEY) takes them.
      const processDir = await mkdtemp(join(tmpdir(), 'boxgrid-transfer-'));
      const key = (await readFile(keyFile, 'utf8')).trim();
      const sibling = await startServerProcess(processDir, ['--db', shared.database, '--blobs', shared.blobDir], { BOXGRID_TRANSFER_KEY: key });
      try {
        const r = await fetch(`${sibling.url}${urls.inputs}/${digest}`);
        assert.equal(r.status, 200);
        assert.equal(await r.text(), input.toString());
        await assert.rejects(stat(join(processDir, 'transfer.key')), /ENOENT/, 'no key file when the environment gives the key');
      } finally {
        sibling.child.kill('SIGTERM');
        await exited(sibling.child);
        await rm(processDir, { recursive: true, force: true });
      }
    }));

  it('the key survives a restart; BOXGRID_TRANSFER_KEY is hex or base64 of at least 32 bytes, and a bad one stops the server', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'boxgrid-transfer-'));
    try {
      const first = await startServer({ dataDir, host: '127.0.0.1', port: 0 });
      const key = first.ctx.transferKey;
      await first.close();
      const second = await startServer({ dataDir, host: '127.0.0.1', port: 0 });
      assert.deepEqual(second.ctx.transferKey, key, 'outstanding URLs stay valid across a restart');
      await second.close();
      const hex = 'ab'.repeat(32);
      assert.deepEqual(parseTransferKey(hex, 'k'), Buffer.alloc(32, 0xab));
      assert.deepEqual(parseTransferKey(` ${Buffer.alloc(40, 7).toString('base64')}\n`, 'k'), Buffer.alloc(40, 7));
      assert.deepEqual(parseTransferKey(Buffer.alloc(32, 0xfb).toString('base64url'), 'k'), Buffer.alloc(32, 0xfb));
      for (const bad of ['', 'ab'.repeat(31), Buffer.alloc(31).toString('base64'), 'not a key!']) {
        assert.throws(() => parseTransferKey(bad, 'BOXGRID_TRANSFER_KEY'), /BOXGRID_TRANSFER_KEY is not a transfer key: it must be at least 32 bytes/);
      }
      await assert.rejects(
        startServerProcess(dataDir, [], { BOXGRID_TRANSFER_KEY: 'too-short' }),
        /BOXGRID_TRANSFER_KEY is not a transfer key/,
      );
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('signatures stay out of the logs, and out of the client\'s errors', async () => {
    const sink = logSink();
    await withGrid(async (g) => {
      const { h, a, digest } = await taskWithInput(g);
      const urls = await urlsOf(h, a.taskId);
      const signature = urls.inputs.split('/')[8]!;
      const outSignature = urls.outputs.split('/')[8]!;
      assert.equal((await g.s.call('GET', `${urls.inputs}/${digest}`, noToken)).status, 200);
      assertError(await g.s.call('GET', `${urls.inputs}/${'0'.repeat(64)}`, noToken), 404, 'not_found');
      // No GET route for outputs: the not-found answer (and its log line) name the path redacted.
      const noRoute = await g.s.call('GET', `${urls.outputs}/${digest}?x=1`, noToken);
      assertError(noRoute, 404, 'not_found');
      assert.ok(!noRoute.text.includes(outSignature), noRoute.text);
      assert.equal((await put(g, `${urls.outputs}/${sha256('out')}`, Buffer.from('out'))).status, 201);
      await sleep(50); // "request completed" lines are written after the answer
      const log = sink.text();
      assert.ok(log.includes(`"url":"/transfer/v1/${h.id}/tasks/${a.taskId}/inputs/${urls.inputs.split('/')[7]}/[redacted]/${digest}"`), log);
      assert.ok(log.includes(`/outputs/${urls.outputs.split('/')[7]}/[redacted]/${digest}?x=1`), 'the query stays, the signature goes');
      assert.ok(!log.includes(signature) && !log.includes(outSignature), 'no signature in the server log');
      assert.ok(log.includes('"url":"/agent/v1/tasks/'), 'other requests are logged as they were');
    }, { server: { logger: { level: 'info', stream: sink.stream } } });

    assert.equal(redactTransferUrl('/transfer/v1/3/tasks/9/inputs/1700000000/SIGNATURE/abc?q=1'), '/transfer/v1/3/tasks/9/inputs/1700000000/[redacted]/abc?q=1');
    assert.equal(redactTransferUrl('/transfer/v1/3/tasks/9/inputs/1700000000/SIGNATURE'), '/transfer/v1/3/tasks/9/inputs/1700000000/[redacted]');
    assert.equal(redactTransferUrl('/v1/projects/p/jobs?x=/transfer/v1/'), '/v1/projects/p/jobs?x=/transfer/v1/');
    assert.equal(redactTransferUrl('//transfer/v1/3/tasks/9/outputs/1/SIG/abc'), '//transfer/v1/3/tasks/9/outputs/1/[redacted]/abc', 'a base URL ending in "/" too');

    // A transfer client that cannot reach its server names the origin only.
    const path = '/transfer/v1/3/tasks/9/inputs/1700000000/SECRETSIGNATUREXXXXXXXXXXXXXXXXXXXXXXXXXXXX';
    const e = await new BoxgridClient({ url: `http://127.0.0.1:1${path}`, retries: 0 }).downloadSigned('0'.repeat(64)).catch((x: unknown) => x);
    assert.ok(e instanceof BoxgridError && e.code === 'unavailable', String(e));
    assert.match(e.message, /cannot reach the boxgrid server at http:\/\/127\.0\.0\.1:1 \(/);
    assert.ok(!e.message.includes('SECRETSIGNATURE'), e.message);
    // A proxy answering something that is not JSON: the same.
    const proxy = createServer((_req, res) => res.writeHead(502, { 'content-type': 'text/html' }).end('<html>bad gateway</html>'));
    await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
    try {
      const port = (proxy.address() as { port: number }).port;
      const html = await new BoxgridClient({ url: `http://127.0.0.1:${port}${path}`, retries: 0 }).downloadSigned('0'.repeat(64)).catch((x: unknown) => x);
      assert.ok(html instanceof BoxgridError, String(html));
      assert.match(html.message, new RegExp(`^the server at http://127\\.0\\.0\\.1:${port} answered 502`));
      assert.ok(!html.message.includes('SECRETSIGNATURE'), html.message);
    } finally {
      proxy.close();
    }
  });

  it('a server on a database others may share warns when it made a transfer key of its own', { skip: pg.skip }, async () => {
    const schema = freshSchemaName();
    const dirs: string[] = [];
    try {
      const start = async (transferKey?: Buffer) => {
        const dataDir = await mkdtemp(join(tmpdir(), 'boxgrid-transfer-'));
        dirs.push(dataDir);
        const sink = logSink();
        const server = await startServer({
          dataDir, host: '127.0.0.1', port: 0, store: new PostgresStore({ connectionString: TEST_POSTGRES, schema }),
          logger: { level: 'warn', stream: sink.stream }, ...(transferKey ? { transferKey } : {}),
        });
        await server.close();
        return sink.text();
      };
      const made = await start();
      assert.match(made, /"level":40/);
      assert.match(made, /created the transfer key .*transfer\.key.*servers sharing a database must share one transfer key.*BOXGRID_TRANSFER_KEY/);
      assert.equal(await start(Buffer.alloc(32, 1)), '', 'no warning when the key is given');
    } finally {
      for (const d of dirs) await rm(d, { recursive: true, force: true });
      await dropSchema(schema);
    }
  });
});
