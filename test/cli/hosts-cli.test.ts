import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { newCredential, parseToken } from '../../src/service/credentials.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { runCli } from './run-cli.js';

/** `boxgrid host token|list|revoke|site` and `boxgrid audit` against a local server. */
describe('boxgrid host and audit commands', () => {
  let s: TestServer;
  let env: Record<string, string>;
  before(async () => {
    s = await startTestServer();
    env = { BOXGRID_DATA: s.dataDir, HOME: await mkdtemp(join(tmpdir(), 'boxgrid-home-')) };
  });
  after(() => s.stop());

  test('host token create --owner, list (no secrets), revoke; the older enroll-token name lists the same', async () => {
    const created = await runCli(['--json', 'host', 'token', 'create', '--site', 'lab', '--owner', 'ada', '--uses', '2', '--label', 'ada laptops'], env);
    assert.equal(created.code, 0, created.stderr);
    const t = JSON.parse(created.stdout);
    assert.equal(t.owner, 'ada');
    assert.match(t.token, /^bge_/);

    const listed = await runCli(['host', 'token', 'list'], env);
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /^ID\s+SITE\s+OWNER\s+LABEL\s+USES LEFT\s+EXPIRES\s+REVOKED/m);
    assert.match(listed.stdout, new RegExp(`${t.id}\\s+lab\\s+ada\\s+ada laptops\\s+2\\s+never\\s+-`));
    assert.ok(!listed.stdout.includes(parseToken(t.token)!.secret), 'the secret is not shown again');

    const revoked = await runCli(['host', 'token', 'revoke', t.id], env);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, /revoked/);
    const alias = JSON.parse((await runCli(['--json', 'enroll-token', 'list'], env)).stdout);
    assert.match(alias.find((x: { id: string }) => x.id === t.id).revokedAt, /^\d{4}-/);

    const bad = await runCli(['host', 'token', 'create', '--owner', 'Not Valid'], env);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /owner/);
  });

  test('host site allow sets a site\'s allowlist; host list shows owners; host revoke revokes once; audit shows it all', async () => {
    const allow = await runCli(['host', 'site', 'allow', 'campus', '127.0.0.0/8', '10.0.0.0/8'], env);
    assert.equal(allow.code, 0, allow.stderr);
    assert.match(allow.stdout, /site campus: only from 127\.0\.0\.0\/8, 10\.0\.0\.0\/8/);
    const badCidr = await runCli(['host', 'site', 'allow', 'campus', '10.0.0.0/99'], env);
    assert.equal(badCidr.code, 1);
    assert.match(badCidr.stderr, /allowCidrs\/0/);

    const t = JSON.parse((await runCli(['--json', 'host', 'token', 'create', '--site', 'campus', '--owner', 'grace'], env)).stdout);
    const credential = newCredential('host');
    const e = await s.call('POST', '/agent/v1/enroll', {
      token: null,
      body: { enrollToken: t.token, name: 'grace-pc', resources: { cores: 2, memoryMiB: 2048, diskMiB: 10_000, gpus: 0 }, platform: 'linux/amd64', credentialId: credential.id, credentialHash: credential.secretHash.toString('hex') },
    });
    assert.equal(e.status, 201, e.text);

    const hosts = await runCli(['host', 'list'], env);
    assert.equal(hosts.code, 0, hosts.stderr);
    assert.match(hosts.stdout, /^HOST\s+NAME\s+SITE\s+STATE\s+CORES\s+MEMORY\s+GPUS\s+TASKS\s+LAST SEEN\s+OWNER$/m);
    assert.match(hosts.stdout, new RegExp(`^${e.body.hostId}\\s+grace-pc\\s+campus\\s+active\\s.*\\sgrace$`, 'm'));
    const sites = await runCli(['host', 'site', 'list'], env);
    assert.match(sites.stdout, /campus\s+127\.0\.0\.0\/8,10\.0\.0\.0\/8\s+1\s+0/);

    const revoke = await runCli(['host', 'revoke', String(e.body.hostId)], env);
    assert.equal(revoke.code, 0, revoke.stderr);
    assert.match(revoke.stdout, new RegExp(`host ${e.body.hostId} \\(grace-pc\\) revoked: 0 task\\(s\\) aborted, 0 job\\(s\\) requeued`));
    const again = await runCli(['host', 'revoke', String(e.body.hostId)], env);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /was revoked already; nothing changed/);
    assert.equal((await s.call('GET', '/agent/v1/self', { token: credential.token })).status, 401);
    const missing = await runCli(['host', 'revoke', '99999'], env);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /host 99999 not found/);

    const audit = await runCli(['audit'], env);
    assert.equal(audit.code, 0, audit.stderr);
    assert.match(audit.stdout, /^ID\s+AT\s+ACTOR\s+ACTION\s+TARGET\s+PROJECT/m);
    assert.match(audit.stdout, new RegExp(`admin\\s+host\\.revoke\\s+host ${e.body.hostId}`));
    const json = JSON.parse((await runCli(['--json', 'audit', '--action', 'site.update'], env)).stdout);
    assert.deepEqual(json.entries.map((x: { target: string; detail: unknown }) => [x.target, x.detail]), [['site campus', { allowCidrs: ['127.0.0.0/8', '10.0.0.0/8'] }]]);
    const paged = await runCli(['audit', '--limit', '1'], env);
    assert.equal(paged.code, 0, paged.stderr);
    assert.match(paged.stdout, /more: boxgrid audit --cursor \S+/);
  });
});
