import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { DockerRuntime } from '../../src/agent/runtimes/docker-runtime.js';
import { buildImage, dockerSuite } from '../helpers/docker.js';
import { P, withGrid, type Grid, type Host } from './protocol-grid.js';
import { createApp, sha256, submitJob } from './util.js';

/**
 * An app's validator container on a real engine (service/validator-loop.ts): replicas whose
 * files differ are judged by what the validator says of them. The validator here compares
 * the numbers in result.txt within a relative 1e-6, as a floating-point app would.
 */
const CHECK_IMAGE = 'boxgrid-test/tolerance-check:1';
const CHECK = `#!/bin/sh
# Groups replicas whose result.txt numbers agree within a relative 1e-6; writes /out/groups.json.
cd /in
awk -v tol=1e-6 '
  BEGIN { n = 0 }
  FNR == 1 { split(FILENAME, p, "/"); id[n] = p[1]; v[n] = $1 + 0; n++ }
  END {
    out = ""
    for (i = 0; i < n; i++) {
      if (i in taken) continue
      members = id[i]
      for (j = i + 1; j < n; j++) {
        if (j in taken) continue
        d = v[i] - v[j]; if (d < 0) d = -d
        m = v[i]; if (m < 0) m = -m
        if (d <= tol * m) { taken[j] = 1; members = members "," id[j] }
      }
      out = out (out == "" ? "" : ",") "[" members "]"
    }
    printf "{\\"groups\\":[%s]}\\n", out > "/out/groups.json"
  }' */result.txt
`;

const { skip } = await dockerSuite();

describe('validator containers', { skip }, () => {
  const runtime = () => new DockerRuntime({ owner: 'validator-test' });

  /** One replica of `jobId` on `h`, reporting `value` in result.txt. */
  async function replica(h: Host, jobId: number, value: string): Promise<number> {
    const [t] = await h.claim({ maxTasks: 1 });
    assert.equal(t?.jobId, jobId, 'the host gets a replica of the job');
    const data = Buffer.from(`${value}\n`);
    assert.ok((await h.upload(t.taskId, data)).status < 300);
    const r = await h.report(t.taskId, { outcome: { kind: 'succeeded' }, durationMs: 10, outputs: { 'result.txt': { sha256: sha256(data), size: data.length } } });
    assert.equal(r.status, 200, r.text);
    return t.taskId;
  }

  async function setup(g: Grid, validator: { image: string; command: string[] }): Promise<number> {
    await buildImage(CHECK_IMAGE, { 'check.sh': CHECK });
    await createApp(g.s, P, 'float', { replicas: 2, quorum: 2, validator });
    return submitJob(g.s, P, { app: 'float' });
  }

  it('results that differ in their last digits agree as the validator says; the job succeeds with both valid', () =>
    withGrid(async (g) => {
      const job = await setup(g, { image: CHECK_IMAGE, command: ['sh', '/check.sh'] });
      const [a, b] = [await g.host(), await g.host()];
      const ta = await replica(a, job, '3.14159265358979');
      const tb = await replica(b, job, '3.14159265358983');
      let j = await g.job(job);
      assert.equal(j.job.state, 'running', 'the files differ: the job waits for the validator');
      assert.match(j.job.reason, /await the app's validator/);
      assert.equal(await g.s.validatorLoop!.pass(), 1);
      j = await g.job(job);
      assert.equal(j.job.state, 'succeeded', JSON.stringify(j.job));
      assert.equal(j.job.resultTaskId, ta);
      assert.deepEqual(j.tasks.map((t: { id: number; validity: string }) => [t.id, t.validity]), [[ta, 'valid'], [tb, 'valid']]);
      assert.equal(await g.s.validatorLoop!.pass(), 0, 'nothing left to validate');
    }, { server: { validators: runtime() } }));

  it('when the validator finds no quorum, another replica runs, and the odd result out is invalid', () =>
    withGrid(async (g) => {
      const job = await setup(g, { image: CHECK_IMAGE, command: ['sh', '/check.sh'] });
      const [a, b, c] = [await g.host(), await g.host(), await g.host()];
      const ta = await replica(a, job, '2.5');
      const tb = await replica(b, job, '7.25');
      await g.s.validatorLoop!.pass();
      assert.equal((await g.job(job)).job.state, 'running');
      const tc = await replica(c, job, '7.2500000001');
      await g.s.validatorLoop!.pass();
      const j = await g.job(job);
      assert.equal(j.job.state, 'succeeded');
      assert.equal(j.job.resultTaskId, tb);
      assert.deepEqual(j.tasks.map((t: { id: number; validity: string }) => [t.id, t.validity]), [[ta, 'invalid'], [tb, 'valid'], [tc, 'valid']]);
    }, { server: { validators: runtime() } }));

  it('identical files need no validator; a failing validator fails the job and says why', () =>
    withGrid(async (g) => {
      const job = await setup(g, { image: CHECK_IMAGE, command: ['sh', '-c', 'echo "cannot parse result.txt" >&2; exit 3'] });
      const [a, b] = [await g.host(), await g.host()];
      await replica(a, job, '1.5');
      await replica(b, job, '1.50');
      await g.s.validatorLoop!.pass();
      const j = await g.job(job);
      assert.equal(j.job.state, 'failed');
      assert.match(j.job.reason, /the app's validator failed: exited with code 3 \(cannot parse result.txt\)/);

      const same = await submitJob(g.s, P, { app: 'float' });
      await replica(a, same, '4.0');
      await replica(b, same, '4.0');
      assert.equal((await g.job(same)).job.state, 'succeeded', 'identical results are accepted in the report itself');
    }, { server: { validators: runtime() } }));
});
