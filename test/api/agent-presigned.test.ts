// The agent protocol with a server whose blobs live in an S3 bucket (s3rver on 127.0.0.1):
// inputs come with pre-signed GETs, outputs go up through pre-signed PUTs, and the server
// checks what landed when the report names it. s3rver checks the expiry of URLs but not their
// signatures nor the signed checksum, so the server's own check is what these tests prove.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { S3BlobStore, s3FromUrl } from '../../src/blobs/s3-blob-store.js';
import { BoxgridClient } from '../../src/client/client.js';
import { BoxgridError } from '../../src/domain/errors.js';
import { startS3rver, type TestS3 } from '../helpers/s3rver.js';
import type { TestServer } from '../helpers/server.js';
import { BIG, ok, TIMING, withGrid, type Host } from './protocol-grid.js';
import { assertError, createApp, sha256, submitJob, uploadBlob } from './util.js';

let s3: TestS3;
before(async () => {
  s3 = await startS3rver();
});
after(() => s3?.close());

/** Every request the server receives from now on, as "METHOD /path". */
function requestsTo(s: TestServer): string[] {
  const seen: string[] = [];
  s.app.server.on('request', (req: IncomingMessage) => seen.push(`${req.method} ${req.url?.split('?')[0]}`));
  return seen;
}

/** The client an agent uses, with the host's credential. */
const agentClient = (s: TestServer, h: Host) => new BoxgridClient({ url: s.url, token: h.token, retries: 0 });

async function file(s: TestServer, data: Buffer): Promise<string> {
  const path = join(s.dataDir, `file-${randomUUID()}`);
  await writeFile(path, data);
  return path;
}

const bytesOf = async (res: Response): Promise<Buffer> => Buffer.from(await res.arrayBuffer());

describe('agent protocol with blobs in an S3 bucket: pre-signed transfers', () => {
  it('inputs and outputs move between the host and the store, not through the server; the outputs are the project\'s only', () =>
    withGrid(
      async (g) => {
        const alice = await g.s.userWithRole('alice', 'astro', 'viewer');
        const bob = await g.s.userWithRole('bob', 'other', 'submitter');
        await createApp(g.s, 'astro', 'sim', { checkpointing: true });
        const input = randomBytes(300_000);
        const inDigest = await uploadBlob(g.s, 'astro', input);
        const jobId = await submitJob(g.s, 'astro', { app: 'sim', inputs: { 'in.bin': inDigest } });
        const h = await g.host();
        const agent = agentClient(g.s, h);
        const seen = requestsTo(g.s);

        const { tasks: [a] } = await agent.requestWork({ requestId: randomUUID(), free: BIG, maxTasks: 1, runtimes: ['docker'] });
        assert.ok(a, 'a task');
        const url = a.inputs[0]!.url!;
        assert.ok(url.startsWith(`${s3.endpoint}/`), `the input comes with a URL of the store: ${url}`);
        assert.equal(a.checkpointUrl, undefined, 'no checkpoint yet');
        assert.ok((await bytesOf(await agent.fetchPresigned(url))).equals(input));

        const output = randomBytes(200_000);
        const outDigest = sha256(output);
        const { files } = await agent.taskUploads(a.taskId, [{ sha256: outDigest, size: output.length }, { sha256: inDigest, size: input.length }]);
        assert.equal(files.length, 2);
        assert.equal(files[1]!.present, true, 'the project holds its input already');
        assert.equal(files[1]!.url, undefined);
        const up = files[0]!;
        assert.equal(up.present, false);
        assert.ok(up.url!.startsWith(`${s3.endpoint}/`), up.url);
        assert.equal(up.headers!['content-length'], String(output.length));
        assert.ok(Date.parse(up.expiresAt!) > Date.now() + 10 * 60_000, 'lives at least 15 minutes');
        await agent.putPresigned(up.url!, up.headers!, await file(g.s, output), output.length);

        const report = await agent.reportTask(a.taskId, { ...ok, outputs: { 'out.bin': { sha256: outDigest, size: output.length }, 'copy.bin': { sha256: inDigest, size: input.length } } } as never);
        assert.equal(report.jobState, 'succeeded');
        // Through the server: the work request, the upload plan, the report. No blob route.
        assert.deepEqual(seen, ['POST /agent/v1/work', `POST /agent/v1/tasks/${a.taskId}/uploads`, `POST /agent/v1/tasks/${a.taskId}/result`]);

        assert.deepEqual((await g.job(jobId, 'astro')).tasks[0].outputs['out.bin'], { sha256: outDigest, size: output.length });
        const whole = await fetch(`${g.s.url}/v1/projects/astro/blobs/${outDigest}`, { headers: { authorization: `Bearer ${alice}` } });
        assert.ok((await bytesOf(whole)).equals(output), 'the project\'s user downloads the output');
        assertError(await g.s.call('GET', `/v1/projects/astro/blobs/${outDigest}`, { token: bob }), 404, 'not_found');
        assertError(await g.s.call('GET', `/v1/projects/other/blobs/${outDigest}`, { token: bob }), 404, 'not_found');
      },
      { server: { blobDir: s3.blobsUrl() } },
    ));

  it('a checkpoint still goes through the server, and the next task gets a URL for it', () =>
    withGrid(
      async (g) => {
        await createApp(g.s, 'default', 'long', { checkpointing: true });
        const jobId = await submitJob(g.s, 'default', { app: 'long' });
        const h = await g.host();
        const [a] = await h.claim();
        const tar = randomBytes(4096);
        assert.equal((await h.checkpoint(a.taskId, tar)).status, 201);
        assert.equal((await h.report(a.taskId, { outcome: { kind: 'aborted' }, durationMs: 10 })).body.jobState, 'queued');
        const [b] = await (await g.host()).claim();
        assert.equal(b.jobId, jobId);
        assert.equal(b.checkpoint, sha256(tar));
        assert.ok((await bytesOf(await fetch(b.checkpointUrl))).equals(tar));
      },
      { server: { blobDir: s3.blobsUrl() } },
    ));

  it('a blob the store holds for another project must still be uploaded, and right: naming its digest proves nothing', () =>
    withGrid(
      async (g) => {
        await g.s.userWithRole('owner', 'other', 'submitter');
        await g.s.userWithRole('alice', 'astro', 'submitter');
        const secret = randomBytes(10_000);
        const digest = await uploadBlob(g.s, 'other', secret);
        await createApp(g.s, 'astro', 'sim');
        await submitJob(g.s, 'astro', { app: 'sim' });
        const h = await g.host();
        const agent = agentClient(g.s, h);
        const [a] = await h.claim();
        const { files: [t] } = await agent.taskUploads(a.taskId, [{ sha256: digest, size: secret.length }]);
        assert.equal(t!.present, false, 'the store has it, the job\'s project does not');
        const claim = { ...ok, outputs: { 'leak.bin': { sha256: digest, size: secret.length } } };
        assertError(await h.report(a.taskId, claim), 400, 'invalid_request', 'body/outputs/leak.bin');

        const wrong = randomBytes(secret.length);
        await agent.putPresigned(t!.url!, t!.headers!, await file(g.s, wrong), wrong.length); // s3rver takes it
        assertError(await h.report(a.taskId, claim), 422, 'digest_mismatch', 'body/outputs/leak.bin');
        assert.equal((await g.s.call('HEAD', `/v1/projects/astro/blobs/${digest}`)).status, 404);
        assert.ok((await bytesOf(await fetch(`${g.s.url}/v1/projects/other/blobs/${digest}`, { headers: { authorization: `Bearer ${g.s.adminToken}` } }))).equals(secret), 'the other project\'s bytes are untouched');
        assert.equal((await g.job(a.jobId, 'astro')).job.state, 'running', 'nothing was settled');

        const { files: [again] } = await agent.taskUploads(a.taskId, [{ sha256: digest, size: secret.length }]);
        await agent.putPresigned(again!.url!, again!.headers!, await file(g.s, secret), secret.length);
        const r = await h.report(a.taskId, claim);
        assert.equal(r.status, 200, r.text);
        assert.equal(r.body.jobState, 'succeeded');
        assert.equal((await g.s.call('HEAD', `/v1/projects/astro/blobs/${digest}`)).status, 200, 'shown, so now the project\'s');
        assert.equal((await h.report(a.taskId, claim)).body.replayed, true, 'a repeated report is a replay');
      },
      { server: { blobDir: s3.blobsUrl() } },
    ));

  it('an expired URL is refused by the store; the server\'s routes still take the task\'s files', () => {
    const blobsUrl = s3.blobsUrl();
    return withGrid(
      async (g) => {
        // The same bucket and prefix, signing with a clock two hours behind: every URL is expired.
        const late = s3FromUrl(blobsUrl);
        g.s.ctx.blobs = new S3BlobStore({ ...late, presign: { now: () => Date.now() - 2 * 3600_000 } });
        try {
          await createApp(g.s, 'default', 'sim');
          const input = randomBytes(1000);
          const inDigest = await uploadBlob(g.s, 'default', input);
          await submitJob(g.s, 'default', { app: 'sim', inputs: { 'in.bin': inDigest } });
          const h = await g.host();
          const agent = agentClient(g.s, h);
          const [a] = await h.claim();
          await assert.rejects(agent.fetchPresigned(a.inputs[0].url), (e: unknown) => e instanceof BoxgridError && /403 \(AccessDenied: Request has expired\)/.test(e.message));
          const through = await fetch(`${g.s.url}/agent/v1/tasks/${a.taskId}/blobs/${inDigest}`, { headers: { authorization: `Bearer ${h.token}` } });
          assert.ok((await bytesOf(through)).equals(input), 'the server\'s route serves it');

          const output = randomBytes(1000);
          const { files: [t] } = await agent.taskUploads(a.taskId, [{ sha256: sha256(output), size: output.length }]);
          assert.ok(Date.parse(t!.expiresAt!) < Date.now());
          await assert.rejects(agent.putPresigned(t!.url!, t!.headers!, await file(g.s, output), output.length), /403/);
          const claim = { ...ok, outputs: { 'out.bin': { sha256: sha256(output), size: output.length } } };
          assertError(await h.report(a.taskId, claim), 400, 'invalid_request', 'body/outputs/out.bin');
          assert.equal((await h.upload(a.taskId, output)).status, 201);
          assert.equal((await h.report(a.taskId, claim)).body.jobState, 'succeeded');
        } finally {
          late.client.destroy();
        }
      },
      { server: { blobDir: blobsUrl } },
    );
  });

  it('a lost task\'s output waiting in its pre-signed slot counts when its late report names it', () =>
    withGrid(
      async (g) => {
        await createApp(g.s, 'default', 'sim', { maxAttempts: 3 });
        const jobId = await submitJob(g.s, 'default', { app: 'sim' });
        const h = await g.host();
        const agent = agentClient(g.s, h);
        const { tasks: [a] } = await agent.requestWork({ requestId: randomUUID(), free: BIG, maxTasks: 1, runtimes: ['docker'] });
        const output = randomBytes(1000);
        const digest = sha256(output);
        const { files: [up] } = await agent.taskUploads(a!.taskId, [{ sha256: digest, size: output.length }]);
        await agent.putPresigned(up!.url!, up!.headers!, await file(g.s, output), output.length);
        // The lease ends before the report: the task is lost, its job queued again; the output is in the slot, not yet the project's.
        g.advance(TIMING.leaseSeconds * 1000 + 1_000);
        assert.equal(await g.s.sweeper.sweep(), 1);
        assert.equal((await g.job(jobId, 'default')).job.state, 'queued');
        assert.equal((await g.s.call('GET', `/v1/projects/default/blobs/${digest}`)).status, 404, 'the output is in the slot only');
        const report = await agent.reportTask(a!.taskId, { ...ok, outputs: { 'out.bin': { sha256: digest, size: output.length } } } as never);
        assert.deepEqual(report, { taskState: 'succeeded', jobState: 'succeeded', replayed: false });
        assert.deepEqual((await g.job(jobId, 'default')).tasks[0].outputs['out.bin'], { sha256: digest, size: output.length });
        const res = await g.s.call('GET', `/v1/projects/default/blobs/${digest}`);
        assert.equal(res.status, 200, 'the project holds the output');
      },
      { server: { blobDir: s3.blobsUrl() } },
    ));

  it('with presign=false in the URL, the bytes go through the server as before', () =>
    withGrid(
      async (g) => {
        await createApp(g.s, 'default', 'sim');
        const inDigest = await uploadBlob(g.s, 'default', randomBytes(100));
        await submitJob(g.s, 'default', { app: 'sim', inputs: { 'in.bin': inDigest } });
        const h = await g.host();
        const [a] = await h.claim();
        assert.equal(a.inputs[0].url, undefined);
        const output = randomBytes(100);
        const r = await h.call('POST', `/tasks/${a.taskId}/uploads`, { files: [{ sha256: sha256(output), size: 100 }] });
        assert.equal(r.status, 200, r.text);
        assert.deepEqual(r.body.files, [{ sha256: sha256(output), present: false }]);
      },
      { server: { blobDir: s3.blobsUrl({ presign: 'false' }) } },
    ));
});
