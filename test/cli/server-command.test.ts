import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { BIN } from './run-cli.js';
import { children, exited, startServerProcess } from '../helpers/server-process.js';

describe('boxgrid server', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const c of children) c.kill('SIGKILL'); // only after a failed assertion
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  test('first start prints the admin token once and saves it 0600; SIGTERM shuts down cleanly; a restart keeps the data', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'boxgrid-srv-'));
    dirs.push(dataDir);
    const first = await startServerProcess(dataDir);
    const token = (await readFile(join(dataDir, 'admin.token'), 'utf8')).trim();
    assert.match(token, /^bgu_[0-9a-f]{16}_/);
    await first.stderrMatching(new RegExp(token)); // printed once on first start
    assert.equal((await stat(join(dataDir, 'admin.token'))).mode & 0o777, 0o600);
    assert.equal((await stat(dataDir)).mode & 0o777, 0o700);
    const info = JSON.parse(await readFile(join(dataDir, 'server.json'), 'utf8'));
    assert.equal(info.url, first.url);

    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const created = await fetch(`${first.url}/v1/projects/default/apps`, { method: 'POST', headers, body: JSON.stringify({ name: 'keep', image: 'busybox' }) });
    assert.equal(created.status, 201);
    assert.equal((await fetch(`${first.url}/readyz`)).status, 200);

    const code = exited(first.child);
    first.child.kill('SIGTERM');
    assert.equal(await code, 0);
    assert.equal(existsSync(join(dataDir, 'server.json')), false, 'server.json is removed on clean shutdown');

    const second = await startServerProcess(dataDir);
    try {
      assert.ok(!second.stderr().includes('admin token'), 'the token is not printed again');
      const apps = await (await fetch(`${second.url}/v1/projects/default/apps`, { headers })).json();
      assert.deepEqual(apps.apps.map((a: { name: string }) => a.name), ['keep']);
    } finally {
      const c = exited(second.child);
      second.child.kill('SIGTERM');
      assert.equal(await c, 0);
    }
  });

  test('after kill -9 the server starts again on the same data dir and nothing accepted is lost', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'boxgrid-srv-'));
    dirs.push(dataDir);
    const first = await startServerProcess(dataDir);
    const token = (await readFile(join(dataDir, 'admin.token'), 'utf8')).trim();
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    await fetch(`${first.url}/v1/projects/default/apps`, { method: 'POST', headers, body: JSON.stringify({ name: 'a', image: 'busybox' }) });
    const sub = await fetch(`${first.url}/v1/projects/default/batches`, { method: 'POST', headers, body: JSON.stringify({ app: 'a', count: 5000 }) });
    assert.equal(sub.status, 201);
    const batchId = (await sub.json()).batch.id;
    const killed = exited(first.child);
    first.child.kill('SIGKILL');
    await killed;

    const second = await startServerProcess(dataDir);
    try {
      const d = await (await fetch(`${second.url}/v1/projects/default/batches/${batchId}`, { headers })).json();
      assert.equal(d.counts.queued, 5000, 'an answered submission survives kill -9');
    } finally {
      const c = exited(second.child);
      second.child.kill('SIGTERM');
      await c;
    }
  });

  test('a bad --listen is a usage error', async () => {
    const child = spawn(process.execPath, [BIN, 'server', '--listen', 'nowhere'], { env: { PATH: process.env.PATH ?? '' } });
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    assert.equal(await exited(child), 2);
    assert.match(err, /--listen "nowhere" is not HOST:PORT/);
  });
});
