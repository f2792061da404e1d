import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BoxgridClient } from '../../src/client/client.js';
import { AgentProcess } from '../helpers/agent-process.js';
import { eventually } from '../helpers/grid.js';
import { bwrapSuite } from '../helpers/native.js';
import { exited, startServerProcess, type Started } from '../helpers/server-process.js';
import { makeTestPki, opensslSuite, type TestPki } from '../helpers/tls.js';
import { runCli, type CliResult } from './run-cli.js';

const suite = await opensslSuite();
const STACK_FRAME = /\n\s+at /;

/** A real `boxgrid server --tls-cert --tls-key` process and its admin token. */
async function httpsServer(pki: TestPki, dataDir: string): Promise<{ server: Started; token: string }> {
  const server = await startServerProcess(dataDir, ['--tls-cert', pki.certFile, '--tls-key', pki.keyFile]);
  return { server, token: (await readFile(join(dataDir, 'admin.token'), 'utf8')).trim() };
}

function assertUntrusted(r: CliResult): void {
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^error: the certificate of the boxgrid server at https:\/\/127\.0\.0\.1:\d+ is not trusted \(.+\)\n/);
  assert.doesNotMatch(r.stderr, STACK_FRAME);
}

describe('the CLI against an HTTPS server', { skip: suite.skip }, () => {
  let pki: TestPki;
  let dir: string;
  let server: Started;
  let env: Record<string, string>;

  before(async () => {
    pki = await makeTestPki();
    dir = await mkdtemp(join(tmpdir(), 'boxgrid-tls-cli-'));
    const s = await httpsServer(pki, join(dir, 'data'));
    server = s.server;
    env = { BOXGRID_URL: server.url, BOXGRID_TOKEN: s.token, HOME: dir };
  });
  after(async () => {
    server?.child.kill('SIGTERM');
    if (server) await exited(server.child);
    if (dir) await rm(dir, { recursive: true, force: true });
    if (pki) await rm(pki.dir, { recursive: true, force: true });
  });

  test('the server says it listens on https://', () => {
    assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/);
  });

  test('--ca-file, BOXGRID_CA_FILE and "caFile" in the config file (relative to it) each make commands work', async () => {
    const flag = await runCli(['--ca-file', pki.caFile, 'project', 'list', '--json'], env);
    assert.equal(flag.code, 0, flag.stderr);
    assert.ok(JSON.parse(flag.stdout).some((p: { name: string }) => p.name === 'default'));

    const fromEnv = await runCli(['project', 'list'], { ...env, BOXGRID_CA_FILE: pki.caFile });
    assert.equal(fromEnv.code, 0, fromEnv.stderr);

    const configDir = join(dir, 'config');
    await mkdir(configDir, { recursive: true });
    await copyFile(pki.caFile, join(configDir, 'grid-ca.pem'));
    await writeFile(join(configDir, 'config.json'), JSON.stringify({ url: server.url, token: env.BOXGRID_TOKEN, caFile: 'grid-ca.pem' }));
    const fromConfig = await runCli(['--config', join(configDir, 'config.json'), 'project', 'list'], { HOME: dir });
    assert.equal(fromConfig.code, 0, fromConfig.stderr);
  });

  test('without a CA file: the certificate is not trusted, and the error says how to pass one', async () => {
    const r = await runCli(['project', 'list'], env);
    assertUntrusted(r);
    assert.match(r.stderr, /pass that CA's certificate with --ca-file FILE, BOXGRID_CA_FILE or "caFile" in .*config\.json/);
  });

  test('with a CA that did not sign it: the error says where that CA file came from', async () => {
    const r = await runCli(['project', 'list'], { ...env, BOXGRID_CA_FILE: pki.otherCaFile });
    assertUntrusted(r);
    assert.match(r.stderr, /\(CA file from BOXGRID_CA_FILE\) it did not sign the server's certificate/);
  });

  test('a CA file that cannot be read, or is not a certificate, is a usage error (exit 2)', async () => {
    const missing = await runCli(['--ca-file', join(dir, 'missing.pem'), 'project', 'list'], env);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^error: cannot read the CA file .*missing\.pem \(ENOENT\) \(CA file from the command line\)\n$/);
    const notPem = await runCli(['--ca-file', pki.keyFile, 'project', 'list'], env);
    assert.equal(notPem.code, 2);
    assert.match(notPem.stderr, /the CA file .*server\.key holds no PEM certificate/);
  });
});

describe('boxgrid server: TLS flags', { skip: suite.skip }, () => {
  let pki: TestPki;
  let dir: string;
  before(async () => {
    pki = await makeTestPki();
    dir = await mkdtemp(join(tmpdir(), 'boxgrid-tls-flags-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    if (pki) await rm(pki.dir, { recursive: true, force: true });
  });
  const server = (args: string[], env: Record<string, string> = {}) =>
    runCli(['server', '--data', join(dir, 'data'), '--listen', '127.0.0.1:0', ...args], { HOME: dir, ...env });
  const usageError = (r: CliResult, message: RegExp) => {
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, message);
    assert.doesNotMatch(r.stderr, STACK_FRAME);
    assert.doesNotMatch(r.stderr, /listening/);
  };

  test('a certificate without a key, or a key without a certificate, names what is missing', async () => {
    usageError(await server(['--tls-cert', pki.certFile]), /^error: --tls-cert needs --tls-key \(or BOXGRID_TLS_KEY\)/);
    usageError(await server([], { BOXGRID_TLS_KEY: pki.keyFile }), /^error: BOXGRID_TLS_KEY needs --tls-cert \(or BOXGRID_TLS_CERT\)/);
  });

  test('an unreadable file, a file that is not PEM, or a key of another certificate is refused at start', async () => {
    usageError(await server(['--tls-cert', join(dir, 'nope.pem'), '--tls-key', pki.keyFile]), /^error: --tls-cert .*nope\.pem: cannot read it \(ENOENT\)\n$/);
    usageError(await server(['--tls-cert', pki.keyFile, '--tls-key', pki.keyFile]), /^error: --tls-cert .*server\.key: not a PEM certificate/);
    usageError(
      await server([], { BOXGRID_TLS_CERT: pki.certFile, BOXGRID_TLS_KEY: pki.otherCaFile.replace(/\.pem$/, '.key') }),
      /^error: BOXGRID_TLS_KEY .*other-ca\.key is not the key of the certificate/,
    );
  });

  test('the certificate and key from the environment serve HTTPS', async () => {
    const dataDir = join(dir, 'from-env');
    const s = await startServerProcess(dataDir, [], { BOXGRID_TLS_CERT: pki.certFile, BOXGRID_TLS_KEY: pki.keyFile });
    try {
      assert.match(s.url, /^https:\/\//);
      const token = (await readFile(join(dataDir, 'admin.token'), 'utf8')).trim();
      assert.equal((await new BoxgridClient({ url: s.url, token, caFile: pki.caFile }).me()).user.name, 'admin');
    } finally {
      s.child.kill('SIGTERM');
      await exited(s.child);
    }
  });
});

const native = await bwrapSuite();

describe('a real agent process against an HTTPS server', { skip: suite.skip || native.skip }, () => {
  let pki: TestPki;
  let dir: string;
  let server: Started;
  let admin: BoxgridClient;
  let env: Record<string, string>;
  let agent: AgentProcess | undefined;

  before(async () => {
    pki = await makeTestPki();
    dir = await mkdtemp(join(tmpdir(), 'boxgrid-tls-agent-'));
    const s = await httpsServer(pki, join(dir, 'data'));
    server = s.server;
    admin = new BoxgridClient({ url: server.url, token: s.token, caFile: pki.caFile });
    env = { BOXGRID_URL: server.url, BOXGRID_TOKEN: s.token, BOXGRID_CA_FILE: pki.caFile, HOME: dir };
  });
  after(async () => {
    await agent?.kill('SIGKILL');
    server?.child.kill('SIGTERM');
    if (server) await exited(server.child);
    if (dir) await rm(dir, { recursive: true, force: true });
    if (pki) await rm(pki.dir, { recursive: true, force: true });
  });

  const enrollToken = async (): Promise<string> => {
    const r = await runCli(['enroll-token', 'create', '--uses', '1', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout).token as string;
  };
  const agentArgs = (workDir: string) => ['--server', server.url, '--work-dir', workDir, '--native', '--no-docker', '--cpus', '1', '--memory', '256Mi', '--disk', '1Gi'];

  test('without --ca-file the agent cannot enrol, and says why and what to pass', async () => {
    const r = await runCli(['agent', ...agentArgs(join(dir, 'untrusting')), '--enroll-token', await enrollToken()], { HOME: dir });
    assertUntrusted(r);
    assert.match(r.stderr, /--ca-file FILE, BOXGRID_CA_FILE/);
  });

  test('with --ca-file it enrols, takes a task and delivers its result', async () => {
    agent = new AgentProcess(['--ca-file', pki.caFile, ...agentArgs(join(dir, 'agent'))]);
    agent.start(['--enroll-token', await enrollToken()]);
    await admin.createApp('default', {
      name: 'native-echo', image: 'unused/image:1', command: ['/never/run/in/a/container'],
      nativeCommand: ['sh', '-c'], resources: { cores: 0.5, memoryMiB: 128 }, maxAttempts: 1,
    });
    const { jobIds } = await admin.submitJob('default', { app: 'native-echo', args: ['echo tls > "$BOXGRID_OUT/said.txt"'] });
    const { job, tasks } = await eventually(async () => {
      const j = await admin.getJob('default', jobIds![0]!);
      return j.job.state === 'succeeded' || j.job.state === 'failed' ? j : undefined;
    }, () => `the job to end; agent said:\n${agent!.output}`, 60_000);
    assert.equal(job.state, 'succeeded', `${job.reason ?? ''}\n${agent.output}`);
    assert.match(agent.output, /enrolled with https:\/\/127\.0\.0\.1:\d+ as host/);
    assert.equal(await (await admin.download('default', tasks[0]!.outputs['said.txt']!.sha256)).text(), 'tls\n');
  });
});
