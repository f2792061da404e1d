import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { createApp, submitJob } from '../api/util.js';
import { P, withGrid } from '../api/protocol-grid.js';
import { runCli } from './run-cli.js';

describe('boxgrid explain', () => {
  test('prints the summary and each reason with its details; --json gives the structure; usage errors exit 2', () =>
    withGrid(async (g) => {
      const home = await mkdtemp(join(tmpdir(), 'boxgrid-home-'));
      try {
        const env = { BOXGRID_URL: g.s.url, BOXGRID_TOKEN: g.s.adminToken, HOME: home };
        await createApp(g.s, P, 'sim', { resources: { cores: 1, memoryMiB: 512, diskMiB: 1024, gpus: 0 } });
        const job = await submitJob(g.s, P, { app: 'sim', resources: { cores: 100 }, selector: { 'gpu-model': 'a100' } });
        const h = await g.host();
        assert.deepEqual(await h.claim({ labels: { 'gpu-model': 'v100' } }), []);

        const human = await runCli(['explain', String(job)], env);
        assert.equal(human.code, 0, human.stderr);
        assert.equal(
          human.stdout,
          [
            `job ${job} cannot run on any live host: needs label gpu-model=a100; no live host has it`,
            '  ✗ no_host_fits: the only live host cannot run it: needs label gpu-model=a100; no live host has it; needs 100 cores; the largest live host has 64',
            '      1 host lacks label gpu-model=a100 (it has gpu-model=v100)',
            '  · no_quota: boxgrid has no quotas: projects share the hosts by fair-share weight, which orders work but caps no project',
            '  · no_dependencies: boxgrid jobs have no dependencies (there are no workflows yet): it waits for no other job',
            '',
          ].join('\n'),
        );

        const json = await runCli(['--json', 'explain', String(job)], env);
        assert.equal(json.code, 0, json.stderr);
        const e = JSON.parse(json.stdout);
        assert.equal(e.jobId, job);
        assert.deepEqual(e.reasons.map((r: { code: string }) => r.code), ['no_host_fits', 'no_quota', 'no_dependencies']);
        assert.deepEqual(e.hosts.excluded, [{ blocker: 'selector:gpu-model', hosts: 1, message: '1 host lacks label gpu-model=a100 (it has gpu-model=v100)' }]);

        const missing = await runCli(['explain', '999999'], env);
        assert.equal(missing.code, 1);
        assert.match(missing.stderr, /job 999999 not found/);
        const bad = await runCli(['explain', 'x1'], env);
        assert.equal(bad.code, 2);
        assert.match(bad.stderr, /job id "x1" is not a positive number/);
      } finally {
        await rm(home, { recursive: true, force: true });
      }
    }));
});
