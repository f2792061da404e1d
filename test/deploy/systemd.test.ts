// The agent's systemd unit (deploy/systemd/boxgrid-agent.service) and its environment file:
// checked by systemd's own `systemd-analyze verify` and `security --offline`, and its command
// line run the way systemd would run it (the environment file read, $BOXGRID_AGENT_OPTS split
// into words) against a real server. Not done here: starting it under a running systemd (this
// machine's PID 1 is not systemd), so the sandboxing directives were analysed, not exercised.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { BoxgridClient } from '../../src/client/client.js';
import { BIN, runCli } from '../cli/run-cli.js';
import { ROOT } from '../helpers/helm.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

const run = promisify(execFile);
const UNIT = join(ROOT, 'deploy/systemd/boxgrid-agent.service');
const ENV_EXAMPLE = join(ROOT, 'deploy/systemd/agent.env.example');
const ANALYZE = '/usr/bin/systemd-analyze';

function systemdSuite(): { skip: string | false } {
  if (existsSync(ANALYZE)) return { skip: false };
  const reason = `${ANALYZE} is missing (apt-get install systemd)`;
  if (process.env.CI === 'true') throw new Error(`CI needs systemd-analyze for these tests, but ${reason}`);
  return { skip: reason };
}

/** The [Service] section as key → values (a key may repeat). */
function serviceSection(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const head = /^\[(.+)\]$/.exec(line);
    if (head) {
      section = head[1]!;
      continue;
    }
    if (section !== 'Service') continue;
    const eq = line.indexOf('=');
    const k = line.slice(0, eq);
    out.set(k, [...(out.get(k) ?? []), line.slice(eq + 1)]);
  }
  return out;
}

/** An EnvironmentFile as systemd reads it: KEY=VALUE lines, # comments, values taken literally. */
function environmentFile(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue;
    const eq = line.indexOf('=');
    env[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return env;
}

/** ExecStart's words after systemd's expansion: "$VAR" splits on whitespace, "${VAR}" is one word. */
function expandExecStart(line: string, env: Record<string, string>): string[] {
  return line.split(/\s+/).flatMap((word) => {
    const split = /^\$([A-Za-z_][A-Za-z0-9_]*)$/.exec(word);
    if (split) return (env[split[1]!] ?? '').split(/\s+/).filter(Boolean);
    return [word.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_m, name: string) => env[name] ?? '')];
  });
}

describe('systemd unit for agents (deploy/systemd)', { skip: systemdSuite().skip }, () => {
  let unit = '';
  let dir = '';
  before(async () => {
    unit = await readFile(UNIT, 'utf8');
    dir = await mkdtemp(join(tmpdir(), 'boxgrid-systemd-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('systemd-analyze verify finds nothing wrong but the boxgrid binary this machine has not installed', async () => {
    // The unit names /usr/local/bin/boxgrid, which `npm install -g` makes; the test machine runs
    // boxgrid from its checkout, so verify once as it is (that one complaint, nothing else) and
    // once with ExecStart pointed at an executable that exists (no complaint at all).
    const asIs = await run(ANALYZE, ['verify', UNIT]).then(() => ({ stderr: '' }), (e: { stderr: string }) => e);
    const complaints = asIs.stderr.split('\n').filter(Boolean);
    for (const c of complaints) assert.match(c, /Command \/usr\/local\/bin\/boxgrid is not executable: No such file or directory/);
    const copy = join(dir, 'boxgrid-agent.service');
    await writeFile(copy, unit.replace(/^ExecStart=\/usr\/local\/bin\/boxgrid /m, `ExecStart=${process.execPath} `));
    const { stderr } = await run(ANALYZE, ['verify', copy]);
    assert.equal(stderr, '');
  });

  test('it runs the agent as its own user with the Docker group, keeps its work dir, reads the token from a file, and stops gently', () => {
    const s = serviceSection(unit);
    const one = (k: string) => {
      assert.equal(s.get(k)?.length, 1, `${k} set once`);
      return s.get(k)![0]!;
    };
    assert.equal(one('User'), 'boxgrid-agent');
    assert.equal(one('SupplementaryGroups'), 'docker');
    assert.equal(one('StateDirectory'), 'boxgrid-agent');
    assert.equal(one('StateDirectoryMode'), '0700');
    assert.ok(s.get('Environment')?.includes('BOXGRID_AGENT_DIR=/var/lib/boxgrid-agent'), 'the work dir is the state directory');
    assert.equal(one('EnvironmentFile'), '-/etc/boxgrid/agent.env');
    assert.equal(one('ExecStart'), '/usr/local/bin/boxgrid agent $BOXGRID_AGENT_OPTS');
    assert.equal(one('Restart'), 'on-failure');
    assert.equal(one('RestartPreventExitStatus'), '2', 'no retrying a usage error');
    assert.equal(one('KillSignal'), 'SIGTERM');
    assert.equal(one('KillMode'), 'mixed', 'SIGTERM to the agent alone: it decides what its tasks get');
    assert.match(one('TimeoutStopSec'), /^(1[0-9]|[2-9][0-9])min$/, 'time for --on-stop wait');
    for (const k of ['NoNewPrivileges', 'ProtectHome', 'PrivateTmp', 'ProtectKernelModules', 'ProtectControlGroups', 'RestrictSUIDSGID', 'LockPersonality']) assert.equal(one(k), 'yes', k);
    assert.equal(one('ProtectSystem'), 'strict');
    assert.equal(one('CapabilityBoundingSet'), '');
    // What would break the Docker socket, bubblewrap or Node itself stays out.
    for (const k of ['ProtectKernelTunables', 'ProtectKernelLogs', 'ProtectProc', 'RestrictNamespaces', 'PrivateDevices', 'DevicePolicy', 'MemoryDenyWriteExecute', 'SystemCallFilter', 'DynamicUser', 'PrivateNetwork', 'IPAddressDeny']) {
      assert.equal(s.has(k), false, `no ${k}`);
    }
    assert.deepEqual(one('RestrictAddressFamilies').split(' ').sort(), ['AF_INET', 'AF_INET6', 'AF_NETLINK', 'AF_UNIX']);
  });

  test("systemd's own exposure score for it is at most 5 (\"OK\")", async () => {
    const copy = join(dir, 'boxgrid-agent.service');
    await writeFile(copy, unit.replace(/^ExecStart=\/usr\/local\/bin\/boxgrid /m, `ExecStart=${process.execPath} `));
    const { stdout } = await run(ANALYZE, ['security', '--offline=true', '--no-pager', copy]);
    const m = /Overall exposure level for boxgrid-agent\.service: ([0-9.]+) (\w+)/.exec(stdout);
    assert.ok(m, stdout.slice(-500));
    assert.ok(Number(m[1]) <= 5, `exposure ${m[1]} ${m[2]}`);
  });

  test("the example environment file's flags are ones `boxgrid agent` has", async () => {
    const env = environmentFile(await readFile(ENV_EXAMPLE, 'utf8'));
    assert.deepEqual(Object.keys(env).sort(), ['BOXGRID_AGENT_OPTS', 'BOXGRID_ENROLL_TOKEN', 'BOXGRID_URL']);
    const help = await runCli(['agent', '--help']);
    assert.equal(help.code, 0);
    const flags = env.BOXGRID_AGENT_OPTS!.split(/\s+/).filter((w) => w.startsWith('--'));
    assert.ok(flags.length > 0);
    for (const f of flags) assert.ok(help.stdout.includes(`${f} `), `boxgrid agent has ${f}`);
  });

  describe('its command line, run as systemd runs it', () => {
    let server: TestServer;
    before(async () => {
      server = await startTestServer();
    });
    after(async () => server?.stop());

    /** ExecStart with the environment systemd gives it: Environment=, then the EnvironmentFile. */
    const start = async (fileEnv: Record<string, string>, workDir: string): Promise<{ code: number; stderr: string }> => {
      const s = serviceSection(unit);
      const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
      for (const e of s.get('Environment') ?? []) {
        const eq = e.indexOf('=');
        env[e.slice(0, eq)] = e.slice(eq + 1).replace('/var/lib/boxgrid-agent', workDir); // StateDirectory, here a temporary one
      }
      Object.assign(env, fileEnv);
      const [binary, ...args] = expandExecStart(s.get('ExecStart')![0]!, env);
      assert.equal(binary, '/usr/local/bin/boxgrid');
      return new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
        let stderr = '';
        child.stderr.on('data', (d) => (stderr += d));
        child.on('error', reject);
        child.on('close', (code) => resolve({ code: code ?? -1, stderr }));
      });
    };

    test('the first start enrols with BOXGRID_URL and BOXGRID_ENROLL_TOKEN into the state directory; later starts need neither', async () => {
      const example = environmentFile(await readFile(ENV_EXAMPLE, 'utf8'));
      const admin = new BoxgridClient({ url: server.url, token: server.adminToken });
      const { token } = await admin.createEnrollToken({ site: 'desktops', uses: 1 });
      const workDir = join(dir, 'state');
      // The example's own flags ask for more than a CI machine may have; these fit any, and the
      // native runtime and --exit-when-idle let it end without a Docker engine or a task.
      const opts = '--native --no-docker --cpus 1 --memory 256Mi --disk 64Mi --exit-when-idle 1';
      const first = await start({ ...example, BOXGRID_URL: server.url, BOXGRID_ENROLL_TOKEN: token, BOXGRID_AGENT_OPTS: opts }, workDir);
      assert.equal(first.code, 0, first.stderr);
      assert.match(first.stderr, new RegExp(`enrolled with ${server.url.replace(/[.]/g, '\\.')} as host \\d+`));
      const credential = await stat(join(workDir, 'host.json'));
      assert.equal(credential.mode & 0o777, 0o600);
      const { hosts } = await admin.listHosts();
      assert.equal(hosts.length, 1);
      // The token was for one use: the second start lives on the saved credential alone.
      const again = await start({ BOXGRID_AGENT_OPTS: opts }, workDir);
      assert.equal(again.code, 0, again.stderr);
      assert.doesNotMatch(again.stderr, /enrolled with/);
      assert.match(again.stderr, new RegExp(`boxgrid agent: host ${hosts[0]!.id} `));
    });

    test('without a credential or a token it exits with 2, which the unit does not restart', async () => {
      const r = await start({ BOXGRID_AGENT_OPTS: '--native --no-docker --cpus 1 --memory 256Mi --disk 64Mi' }, join(dir, 'empty'));
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /not enrolled yet/);
    });
  });
});
