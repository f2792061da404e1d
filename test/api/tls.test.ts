import assert from 'node:assert/strict';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:https';
import { connect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BoxgridClient, readCaFile } from '../../src/client/client.js';
import { BoxgridError } from '../../src/domain/errors.js';
import { loadTls } from '../../src/server/runtime.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { makeTestPki, opensslSuite, type TestPki } from '../helpers/tls.js';

const suite = await opensslSuite();

/** The error a call fails with (it must fail). */
async function failure(call: () => Promise<unknown>): Promise<BoxgridError> {
  try {
    await call();
  } catch (e) {
    assert.ok(e instanceof BoxgridError, `expected a BoxgridError, got ${String(e)}`);
    return e;
  }
  assert.fail('the call succeeded');
}

describe('HTTPS: the server serves it, the client verifies it', { skip: suite.skip }, () => {
  let pki: TestPki;
  let server: TestServer;

  before(async () => {
    pki = await makeTestPki();
    server = await startTestServer({ tls: await loadTls({ path: pki.certFile, from: '--tls-cert' }, { path: pki.keyFile, from: '--tls-key' }) });
  });
  after(async () => {
    await server?.stop();
    if (pki) await rm(pki.dir, { recursive: true, force: true });
  });

  test('the server listens on https:// and a client trusting its CA gets answers, bodies streamed both ways', async () => {
    assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    const client = new BoxgridClient({ url: server.url, token: server.adminToken, caFile: pki.caFile });
    assert.equal((await client.me()).user.name, 'admin');
    const file = join(pki.dir, 'input.txt');
    await writeFile(file, 'over TLS\n');
    const blob = await client.uploadFile('default', file);
    assert.equal(await (await client.download('default', blob.sha256)).text(), 'over TLS\n');
  });

  test('the event stream follows over TLS with the same CA', async () => {
    const client = new BoxgridClient({ url: server.url, token: server.adminToken, ca: pki.ca });
    await client.createApp('default', { name: 'tls-app', image: 'sci/x:1', command: ['true'] });
    const stop = new AbortController();
    let seen = false;
    const first = new Promise<void>((resolve) => {
      void client.events('default', {}, () => {
        seen = true;
        resolve();
      }, stop.signal);
    });
    // The stream says nothing when it opens: submit until a submission shows on it.
    for (let i = 0; !seen && i < 100; i++) {
      await client.submitJob('default', { app: 'tls-app' });
      await Promise.race([first, new Promise((r) => setTimeout(r, 100))]);
    }
    stop.abort();
    assert.ok(seen, 'an event arrived on the stream');
  });

  test('the metrics a Slurm site reads the demand from come over TLS too', async () => {
    const text = await new BoxgridClient({ url: server.url, caFile: pki.caFile }).metricsText();
    assert.match(text, /^boxgrid_demand_cores /m);
  });

  test('without the CA the call fails at once with a clear, non-retryable error naming the server', async () => {
    const e = await failure(() => new BoxgridClient({ url: server.url, token: server.adminToken }).me());
    assert.equal(e.code, 'unavailable');
    assert.equal(e.retryable, false);
    assert.match(e.message, /^the certificate of the boxgrid server at https:\/\/127\.0\.0\.1:\d+ is not trusted \(.+\)$/);
  });

  test('a CA that did not sign the certificate fails the same way', async () => {
    const e = await failure(() => new BoxgridClient({ url: server.url, token: server.adminToken, caFile: pki.otherCaFile }).me());
    assert.match(e.message, /certificate of the boxgrid server .* is not trusted/);
  });

  test('a certificate that does not name the host in the URL is refused, even from the right CA', async () => {
    // The same CA's certificate for another name, served on 127.0.0.1.
    const other = createServer({ cert: await readFile(pki.elsewhereCertFile, 'utf8'), key: pki.key }, (_req, res) => res.end('{}'));
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    try {
      const url = `https://127.0.0.1:${(other.address() as AddressInfo).port}`;
      const e = await failure(() => new BoxgridClient({ url, caFile: pki.caFile }).me());
      assert.match(e.message, /certificate of the boxgrid server .* is not trusted \(.*(altnames|does not match).*\)/i);
    } finally {
      other.closeAllConnections();
      await new Promise((r) => other.close(r));
    }
  });

  test('a CA file that cannot be read or holds no certificate is an error when the client is made', async () => {
    assert.throws(() => readCaFile(join(pki.dir, 'missing.pem')), /cannot read the CA file .*missing\.pem \(ENOENT\)/);
    assert.throws(() => new BoxgridClient({ url: server.url, caFile: pki.keyFile }), /the CA file .*server\.key holds no PEM certificate/);
  });
});

describe('loadTls: the server\'s certificate and key are checked at start', { skip: suite.skip }, () => {
  let pki: TestPki;
  before(async () => {
    pki = await makeTestPki();
  });
  after(async () => {
    if (pki) await rm(pki.dir, { recursive: true, force: true });
  });
  const cert = (path: string) => ({ path, from: '--tls-cert' });
  const key = (path: string) => ({ path, from: '--tls-key' });

  test('a missing file is named with its flag', async () => {
    await assert.rejects(loadTls(cert(join(pki.dir, 'nope.pem')), key(pki.keyFile)), /^Error: --tls-cert .*nope\.pem: cannot read it \(ENOENT\)$/);
  });
  test('a file that is not PEM is named', async () => {
    await assert.rejects(loadTls(cert(pki.keyFile), key(pki.keyFile)), /--tls-cert .*server\.key: not a PEM certificate/);
    await assert.rejects(loadTls(cert(pki.certFile), key(pki.certFile)), /--tls-key .*server\.pem: not an unencrypted PEM private key/);
  });
  test('a key that is not the certificate\'s is refused', async () => {
    const otherKey = pki.otherCaFile.replace(/\.pem$/, '.key');
    await assert.rejects(loadTls(cert(pki.certFile), key(otherKey)), /--tls-key .*other-ca\.key is not the key of the certificate/);
  });
  test('a matching pair loads', async () => {
    const tls = await loadTls(cert(pki.certFile), key(pki.keyFile));
    assert.equal(tls.cert, pki.cert);
    assert.equal(tls.key, pki.key);
  });
});

describe('closing an HTTPS server', { skip: suite.skip }, () => {
  test('a connection that never finishes its TLS handshake is cut after the grace period, not kept for minutes', { timeout: 60_000 }, async () => {
    const pki = await makeTestPki();
    const server = await startTestServer({ tls: await loadTls({ path: pki.certFile, from: '--tls-cert' }, { path: pki.keyFile, from: '--tls-key' }) });
    // A client that connects and says nothing: Node's HTTP layer does not know the socket yet,
    // and TLS alone would wait 120 s (handshakeTimeout) for it.
    const silent = connect(Number(new URL(server.url).port), '127.0.0.1');
    silent.on('error', () => undefined);
    await new Promise((resolve) => silent.once('connect', resolve));
    const cut = new Promise((resolve) => silent.once('close', resolve));
    const started = Date.now();
    await server.stop();
    await cut;
    const took = Date.now() - started;
    assert.ok(took < 20_000, `the close took ${took} ms`);
    await rm(pki.dir, { recursive: true, force: true });
  });
});
