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

  it('a validator that answers with a FIFO or a link fails its job without blocking the server; one whose image is missing waits and holds up no other', () =>
    withGrid(async (g) => {
      await buildImage(CHECK_IMAGE, { 'check.sh': CHECK });
      await createApp(g.s, P, 'fifo', { replicas: 2, quorum: 2, validator: { image: CHECK_IMAGE, command: ['sh', '-c', 'mkfifo /out/groups.json'] } });
      await createApp(g.s, P, 'link', { replicas: 2, quorum: 2, validator: { image: CHECK_IMAGE, command: ['sh', '-c', 'ln -s /etc/passwd /out/groups.json'] } });
      await createApp(g.s, P, 'gone', { replicas: 2, quorum: 2, validator: { image: '127.0.0.1:1/no-such-validator:1', command: [] } /* a registry on loopback that is not there: no traffic leaves the machine */ });
      const gone = await submitJob(g.s, P, { app: 'gone' });
      const fifo = await submitJob(g.s, P, { app: 'fifo' });
      const link = await submitJob(g.s, P, { app: 'link' });
      const [a, b] = [await g.host(), await g.host()];
      for (const [job, values] of [[gone, ['1', '2']], [fifo, ['1', '2']], [link, ['1', '2']]] as const) {
        await replica(a, job, values[0]);
        await replica(b, job, values[1]);
      }
      assert.equal(await g.s.validatorLoop!.pass(), 2, 'the two that ran are judged; the one that could not is passed over');
      for (const id of [fifo, link]) {
        const j = await g.job(id);
        assert.equal(j.job.state, 'failed');
        assert.match(j.job.reason, /the app's validator failed: it wrote no \/out\/groups.json \(a regular file\)/);
      }
      const waiting = await g.job(gone);
      assert.equal(waiting.job.state, 'running', 'an image the engine cannot get is no verdict: the job waits for the next try');
      assert.match(waiting.job.reason, /await the app's validator/);
    }, { server: { validators: runtime() } }));
});
