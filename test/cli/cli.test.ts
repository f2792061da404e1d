import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { mkdtemp, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { runCli } from './run-cli.js';

describe('boxgrid CLI against a local server', () => {
  let s: TestServer;
  let env: Record<string, string>;
  before(async () => {
    s = await startTestServer();
    // BOXGRID_DATA points at the server's data dir: the CLI must find URL and admin token there.
    env = { BOXGRID_DATA: s.dataDir, HOME: await mkdtemp(join(tmpdir(), 'boxgrid-home-')) };
  });
  after(() => s.stop());

  test('a newcomer creates an app, submits a 10,000-job sweep, lists, inspects and cancels', async () => {
    const created = await runCli(['app', 'create', 'sim', '--image', 'busybox:1.36', '--memory', '256Mi', '--command', '/bin/sh -c'], env);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /created app sim v1/);
    assert.match(created.stdout, /256 MiB memory/);

    const sub = await runCli(['--json', 'submit', 'sim', '--sweep', 'x=1..100', '--sweep', 'y=1..100', '--label', 'run=one', '--', 'echo {x} {y}'], env);
    assert.equal(sub.code, 0, sub.stderr);
    const result = JSON.parse(sub.stdout);
    assert.equal(result.jobCount, 10_000);
    const batchId = result.batch.id as number;

    const listed = await runCli(['--json', 'jobs', '--batch', String(batchId), '--limit', '5'], env);
    assert.equal(listed.code, 0, listed.stderr);
    const jobs = JSON.parse(listed.stdout);
    assert.equal(jobs.length, 5);
    assert.deepEqual(jobs[0].args, ['echo 100 100']);
    assert.deepEqual(jobs[0].params, { x: 100, y: 100 });

    const human = await runCli(['jobs', '--label', 'run=one', '--limit', '2'], env);
    assert.match(human.stdout, /^ID\s+APP\s+BATCH\s+STATE/m);

    const one = await runCli(['job', String(jobs[0].id)], env);
    assert.equal(one.code, 0);
    assert.match(one.stdout, /params:\s+x=100 y=100/);

    const cancelOne = await runCli(['cancel', String(jobs[0].id)], env);
    assert.equal(cancelOne.code, 0, cancelOne.stderr);
    const again = await runCli(['cancel', String(jobs[0].id)], env);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /cannot go from cancelled to cancelled/);

    const batch = await runCli(['--json', 'batch', String(batchId)], env);
    assert.equal(JSON.parse(batch.stdout).counts.cancelled, 1);

    const cancelBatch = await runCli(['cancel', '--batch', String(batchId)], env);
    assert.equal(cancelBatch.code, 0, cancelBatch.stderr);
    assert.match(cancelBatch.stdout, /cancelled 9999 jobs/);

    // Everything ended, but nothing succeeded: watch reports and exits non-zero.
    const watched = await runCli(['watch', String(batchId)], env);
    assert.equal(watched.code, 3);
    assert.match(watched.stdout, /10000 cancelled/);
  });

  test('watch follows a batch until it ends', async () => {
    const sub = await runCli(['--json', 'submit', 'sim', '--count', '3'], env);
    const batchId = JSON.parse(sub.stdout).batch.id as number;
    const watching = runCli(['watch', String(batchId)], env);
    // Cancel once the watcher is subscribed to the event stream: it must notice and end.
    await waitFor(async () => s.ctx.events.subscribers() > 0);
    const cancelled = await s.call('POST', `/v1/projects/default/batches/${batchId}/cancel`);
    assert.equal(cancelled.status, 200);
    const w = await watching;
    assert.equal(w.code, 3);
    assert.match(w.stdout, /3 cancelled/);
  });

  test('--input uploads a file once and the job refers to its digest', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'boxgrid-in-'));
    const file = join(dir, 'data.txt');
    await writeFile(file, 'hello science\n');
    const a = await runCli(['--json', 'submit', 'sim', '--input', `data=${file}`], env);
    assert.equal(a.code, 0, a.stderr);
    const id = JSON.parse(a.stdout).jobIds[0];
    const job = await runCli(['--json', 'job', String(id)], env);
    const digest = JSON.parse(job.stdout).job.inputs.data as string;
    assert.match(digest, /^[0-9a-f]{64}$/);
    const blob = await s.call('GET', `/v1/projects/default/blobs/${digest}`);
    assert.equal(blob.text, 'hello science\n');
  });

  test('app version keeps what it does not change; app show picks versions', async () => {
    const v2 = await runCli(['--json', 'app', 'version', 'sim', '--image', 'busybox:1.37'], env);
    assert.equal(v2.code, 0, v2.stderr);
    const app = JSON.parse(v2.stdout);
    assert.equal(app.version, 2);
    assert.equal(app.resources.memoryMiB, 256);
    assert.deepEqual(app.command, ['/bin/sh', '-c']);
    const show = await runCli(['app', 'show', 'sim', '--app-version', '1'], env);
    assert.match(show.stdout, /busybox:1\.36/);
    assert.match(show.stdout, /versions:\s+1, 2/);
  });

  test('operators manage users, projects and tokens; the new token works and is scoped', async () => {
    assert.equal((await runCli(['project', 'create', 'lab'], env)).code, 0);
    assert.equal((await runCli(['user', 'create', 'ada'], env)).code, 0);
    assert.equal((await runCli(['project', 'grant', 'lab', 'ada', 'viewer'], env)).code, 0);
    const t = await runCli(['--json', 'token', 'create', '--user', 'ada'], env);
    const token = JSON.parse(t.stdout).token as string;
    const who = await runCli(['--json', 'whoami'], { ...env, BOXGRID_TOKEN: token });
    assert.deepEqual(JSON.parse(who.stdout).projects.map((p: { name: string }) => p.name), ['lab']);
    const denied = await runCli(['--project', 'lab', 'app', 'create', 'x', '--image', 'busybox'], { ...env, BOXGRID_TOKEN: token });
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /viewer, which may not submit/);
    const hidden = await runCli(['jobs'], { ...env, BOXGRID_TOKEN: token });
    assert.equal(hidden.code, 1);
    assert.match(hidden.stderr, /project "default" not found/);
    const revoked = await runCli(['token', 'revoke', JSON.parse(t.stdout).id], env);
    assert.equal(revoked.code, 0, revoked.stderr);
    const gone = await runCli(['whoami'], { ...env, BOXGRID_TOKEN: token });
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /token is not valid/);
  });

  test('enroll-token create prints a token hosts can enrol with', async () => {
    const r = await runCli(['--json', 'enroll-token', 'create', '--site', 'lab-2', '--uses', '3', '--expires', '1d'], env);
    assert.equal(r.code, 0, r.stderr);
    const t = JSON.parse(r.stdout);
    assert.match(t.token, /^bge_/);
    assert.equal(t.site, 'lab-2');
    assert.equal(t.usesLeft, 3);
    assert.ok(Math.abs(Date.parse(t.expiresAt) - Date.now() - 86400_000) < 60_000);
    const hosts = await runCli(['hosts'], env);
    assert.equal(hosts.code, 0, hosts.stderr);
    assert.match(hosts.stdout, /no hosts yet/);
    const bad = await runCli(['enroll-token', 'create', '--expires', 'soon'], env);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /--expires: "soon" is not a duration/);
  });

  test('flags beat environment, which beats the config file, which beats the local server', async () => {
    const cfgDir = await mkdtemp(join(tmpdir(), 'boxgrid-cfg-'));
    await mkdir(join(cfgDir, 'boxgrid'), { recursive: true });
    await writeFile(join(cfgDir, 'boxgrid', 'config.json'), JSON.stringify({ url: 'http://127.0.0.1:1', project: 'lab' }));
    const fromFile = await runCli(['jobs'], { ...env, XDG_CONFIG_HOME: cfgDir });
    assert.equal(fromFile.code, 1);
    assert.match(fromFile.stderr, /cannot reach the boxgrid server at http:\/\/127\.0\.0\.1:1/);
    assert.match(fromFile.stderr, /boxgrid server/);
    const fromEnv = await runCli(['--json', 'jobs', '--limit', '1'], { ...env, XDG_CONFIG_HOME: cfgDir, BOXGRID_URL: s.url, BOXGRID_TOKEN: s.adminToken, BOXGRID_PROJECT: 'default' });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);
    const fromFlag = await runCli(['--url', 'http://127.0.0.1:2', 'jobs'], { ...env, BOXGRID_URL: s.url });
    assert.match(fromFlag.stderr, /127\.0\.0\.1:2/);
  });

  test('errors say what to do next: the URL tried and where it came from, how to get a token, how to list projects', async () => {
    const unreachable = await runCli(['--url', 'http://127.0.0.1:1', 'jobs'], env);
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.stderr, /cannot reach the boxgrid server at http:\/\/127\.0\.0\.1:1/);
    assert.match(unreachable.stderr, /URL from the command line/);
    assert.match(unreachable.stderr, /--url, BOXGRID_URL or "url" in .*config\.json/);
    const fromEnv = await runCli(['jobs'], { ...env, BOXGRID_URL: 'http://127.0.0.1:1' });
    assert.match(fromEnv.stderr, /URL from BOXGRID_URL/);

    const badToken = await runCli(['whoami'], { ...env, BOXGRID_TOKEN: 'bgu_0000000000000000_' + 'a'.repeat(43) });
    assert.equal(badToken.code, 1);
    assert.match(badToken.stderr, /token taken from BOXGRID_TOKEN/);
    assert.match(badToken.stderr, /boxgrid token create/);
    const noToken = await runCli(['jobs'], { HOME: env.HOME!, BOXGRID_URL: s.url });
    assert.equal(noToken.code, 1);
    assert.match(noToken.stderr, /no token found: pass --token, set BOXGRID_TOKEN/);

    const noProject = await runCli(['--project', 'nosuch', 'jobs'], env);
    assert.equal(noProject.code, 1);
    assert.match(noProject.stderr, /project "nosuch" not found/);
    assert.match(noProject.stderr, /boxgrid project list/);
    for (const r of [unreachable, fromEnv, badToken, noToken, noProject]) {
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
      assert.equal(r.stdout, '', 'errors go to stderr only');
    }
  });

  test('--input upload and non-TTY runs stay quiet: no progress bar on a pipe', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'boxgrid-quiet-'));
    const file = join(dir, 'big.bin');
    await writeFile(file, Buffer.alloc(256 * 1024, 7));
    const r = await runCli(['submit', 'sim', '--input', `big=${file}`], env);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    assert.match(r.stdout, /submitted job \d+/);
  });

  test('bad input and bad tokens give one clear line and a non-zero exit, never a stack trace', async () => {
    const cases: Array<[string[], RegExp, number, Record<string, string>?]> = [
      [['submit', 'nope'], /no app named "nope"/, 1],
      [['submit', 'sim', '--sweep', 'x=5..1'], /range ends/, 1],
      [['submit', 'sim', '--count', '2', '--sweep', 'x=1..2'], /--count or --sweep, not both/, 2],
      [['jobs', '--state', 'done'], /--state must be one of/, 2],
      [['job', 'abc'], /not a positive number/, 2],
      [['app', 'create', 'Bad Name', '--image', 'busybox'], /name: use 1–63 lower-case/, 1],
      [['app', 'create', 'x', '--image', 'busybox', '--memory', 'lots'], /not a size/, 1],
      [['frobnicate'], /unknown command/, 2],
      [['submit', 'sim', '--count', 'many'], /--count "many" is not a number/, 2],
      [['app', 'create', 'y', '--image', 'busybox', '--cores', 'two'], /--cores "two" is not a number/, 2],
      [['jobs'], /token is not valid/, 1, { BOXGRID_TOKEN: 'bgu_0000000000000000_' + 'a'.repeat(43) }],
    ];
    for (const [args, message, code, extra] of cases) {
      const r = await runCli(args, { ...env, ...extra });
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message, args.join(' '));
      assert.doesNotMatch(r.stderr, /\n\s+at /, `stack trace for ${args.join(' ')}`);
    }
  });
});

async function waitFor(check: () => Promise<boolean>): Promise<void> {
  while (!(await check())) await new Promise((r) => setImmediate(r));
}
