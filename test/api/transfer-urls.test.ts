import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { transferUrl } from '../../src/service/transfer-signature.js';
import { assertError, createApp, OCTET, sha256, submitJob, uploadBlob } from './util.js';
import { ok, P, withGrid, type Grid } from './protocol-grid.js';

/** /transfer/v1: a task's files through URLs its host signed, with no credential in the request. */

const inAnHour = () => Math.floor(Date.now() / 1000) + 3600;

async function taskWithInput(g: Grid) {
  await createApp(g.s, P, 'sim');
  const input = Buffer.from('the input');
  const digest = await uploadBlob(g.s, P, input);
  const jobId = await submitJob(g.s, P, { app: 'sim', inputs: { 'in.dat': digest } });
  const h = await g.host();
  const [a] = await h.claim();
  return { h, a, input, digest, jobId };
}

/** The URL's path on the test server (the signed prefix is made for its real address). */
const path = (g: Grid, url: string) => url.slice(g.s.url.length);

describe('transfer URLs', () => {
  it('fetch a live task\'s inputs and store its outputs without a token, and the report then takes them', () =>
    withGrid(async (g) => {
      const { h, a, input, digest, jobId } = await taskWithInput(g);
      const inputs = transferUrl(g.s.url, h.token, a.taskId, 'inputs', inAnHour());
      const got = await g.s.call('GET', path(g, `${inputs}/${digest}`), { token: null });
      assert.equal(got.status, 200, got.text);
      assert.equal(got.text, input.toString());

      const output = Buffer.from('the result');
      const outputs = transferUrl(g.s.url, h.token, a.taskId, 'outputs', inAnHour());
      const put = await g.s.call('PUT', path(g, `${outputs}/${sha256(output)}`), { token: null, raw: output as unknown as BodyInit, headers: { ...OCTET } });
      assert.equal(put.status, 201, put.text);
      const wrong = await g.s.call('PUT', path(g, `${outputs}/${sha256('something else')}`), { token: null, raw: output as unknown as BodyInit, headers: { ...OCTET } });
      assertError(wrong, 422, 'digest_mismatch');

      const r = await h.report(a.taskId, { ...ok, outputs: { 'out.txt': { sha256: sha256(output), size: output.length } } });
      assert.equal(r.status, 200, r.text);
      const job = (await g.job(jobId)).job;
      assert.equal(job.state, 'succeeded');
      const download = await g.s.call('GET', `/v1/projects/${P}/blobs/${sha256(output)}`);
      assert.equal(download.text, output.toString(), 'the output joined the project');
      // The task has ended: its URLs open nothing more.
      assertError(await g.s.call('GET', path(g, `${inputs}/${digest}`), { token: null }), 409, 'conflict');
    }));

  it('refuse a forged, altered, expired or misdirected URL, and a file the task does not have', () =>
    withGrid(async (g) => {
      const { h, a, digest } = await taskWithInput(g);
      const other = await g.host();
      const good = transferUrl(g.s.url, h.token, a.taskId, 'inputs', inAnHour());
      const get = (url: string) => g.s.call('GET', path(g, `${url}/${digest}`), { token: null });
      assert.equal((await get(good)).status, 200);

      const [credentialId, , , , expires, signature] = good.slice(`${g.s.url}/transfer/v1/`.length).split('/');
      const base = `${g.s.url}/transfer/v1`;
      // Another host signing for this host's task: the signature is its own, but the task is not.
      assertError(await get(transferUrl(g.s.url, other.token, a.taskId, 'inputs', inAnHour())), 404, 'not_found');
      // This host's signature moved to another host's credential id, task, expiry or direction.
      const otherId = transferUrl(g.s.url, other.token, a.taskId, 'inputs', inAnHour()).slice(base.length + 1).split('/')[0];
      for (const altered of [
        `${base}/${otherId}/tasks/${a.taskId}/inputs/${expires}/${signature}`,
        `${base}/${credentialId}/tasks/${a.taskId + 1}/inputs/${expires}/${signature}`,
        `${base}/${credentialId}/tasks/${a.taskId}/inputs/${Number(expires) + 1}/${signature}`,
        `${base}/${credentialId}/tasks/${a.taskId}/inputs/${expires}/${signature!.replace(/^./, (c) => (c === 'A' ? 'B' : 'A'))}`,
      ]) {
        assertError(await get(altered), 401, 'unauthenticated');
      }
      const asOutputs = `${base}/${credentialId}/tasks/${a.taskId}/outputs/${expires}/${signature}`;
      assertError(await g.s.call('PUT', path(g, `${asOutputs}/${digest}`), { token: null, raw: Buffer.from('x') as unknown as BodyInit, headers: { ...OCTET } }), 401, 'unauthenticated');

      const expired = transferUrl(g.s.url, h.token, a.taskId, 'inputs', Math.floor(Date.now() / 1000) - 1);
      const e = await get(expired);
      assertError(e, 401, 'unauthenticated');
      assert.match(e.body.error.message, /expired/);

      const notAnInput = await uploadBlob(g.s, P, Buffer.from('not an input'));
      assertError(await g.s.call('GET', path(g, `${good}/${notAnInput}`), { token: null }), 404, 'not_found');
      assertError(await g.s.call('GET', `/transfer/v1/${credentialId}/tasks/${a.taskId}/inputs/${expires}/short/${digest}`, { token: null }), 400, 'invalid_request', 'params/signature');
    }));
});
