// The real agent on a real Docker engine, with a server whose blobs live in an S3 bucket
// (s3rver on 127.0.0.1): inputs are fetched and outputs uploaded through the pre-signed URLs
// the server hands out, and through the server's own routes when a URL fails.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { S3BlobStore, s3FromUrl } from '../../src/blobs/s3-blob-store.js';
import { dockerSuite, ensureTestImage } from '../helpers/docker.js';
import { ownDockerRuntime, startGrid, untilBatchDone, type TestGrid } from '../helpers/grid.js';
import { startS3rver, type TestS3 } from '../helpers/s3rver.js';

const suite = await dockerSuite();
const P = 'default';

describe('an agent moves task files through pre-signed URLs of the blob store', { skip: suite.skip }, () => {
  let s3: TestS3;
  let blobsUrl: string;
  let grid: TestGrid;
  let files: string;
  const warnings: string[] = [];
  /** Blob routes of the server called since the test began. */
  let blobRequests: string[] = [];

  before(async () => {
    const image = await ensureTestImage();
    s3 = await startS3rver();
    blobsUrl = s3.blobsUrl();
    files = await mkdtemp(join(tmpdir(), 'boxgrid-presigned-'));
    grid = await startGrid({ blobDir: blobsUrl });
    grid.server.app.server.on('request', (req: IncomingMessage) => {
      if (/\/blobs\//.test(req.url ?? '')) blobRequests.push(`${req.method} ${req.url}`);
    });
    await grid.startAgent(ownDockerRuntime(), { log: (level, m) => (level === 'warn' ? warnings.push(m) : undefined) });
    await grid.admin.createApp(P, { name: 'sh', image, command: ['sh', '-c'], resources: { cores: 0.5, memoryMiB: 64, diskMiB: 100 }, maxAttempts: 1, maxRuntimeSeconds: 60 });
  });
  after(async () => {
    await grid?.stop();
    await s3?.close();
    await rm(files, { recursive: true, force: true });
  });

  /**
   * Uploads a fresh input (through the server, as a user does) and runs a job that writes it
   * twice to one output and a tag to another (both new to the project); returns what came back.
   */
  async function runCopyJob(): Promise<{ input: Buffer; taskId: number; copy: Buffer; made: string; tag: string; inDigest: string; outDigests: string[] }> {
    const input = randomBytes(100_000);
    const path = join(files, `in-${input.subarray(0, 4).toString('hex')}`);
    await writeFile(path, input);
    const inDigest = (await grid.admin.uploadFile(P, path)).sha256;
    blobRequests = [];
    const tag = randomBytes(8).toString('hex');
    const script = 'cat /in/data.bin /in/data.bin > /out/copy.bin && echo "$TAG" > /out/made.txt';
    const submitted = await grid.admin.submitBatch(P, { app: 'sh', jobs: [{ args: [script], env: { TAG: tag }, inputs: { 'data.bin': inDigest } }] });
    const detail = await untilBatchDone(grid.admin, P, submitted.batch!.id);
    assert.equal(detail.counts.succeeded, 1, JSON.stringify(detail.counts));
    const { tasks } = await grid.admin.getJob(P, submitted.jobIds![0]!);
    const outputs = tasks[0]!.outputs;
    const copy = Buffer.from(await (await grid.admin.download(P, outputs['copy.bin']!.sha256)).arrayBuffer());
    const made = await (await grid.admin.download(P, outputs['made.txt']!.sha256)).text();
    return { input, taskId: tasks[0]!.id, copy, made, tag, inDigest, outDigests: [outputs['copy.bin']!.sha256, outputs['made.txt']!.sha256] };
  }

  test('inputs come from the store and outputs go to it: the server\'s blob routes carry none of the task\'s bytes', async () => {
    const r = await runCopyJob();
    assert.ok(r.copy.equals(Buffer.concat([r.input, r.input])));
    assert.equal(r.made, `${r.tag}\n`);
    // Only the user's two downloads above went through the server (the next test sees the agent's when it uses the routes).
    assert.deepEqual(blobRequests.filter((x) => x.includes('/agent/v1/')), []);
    assert.equal(blobRequests.length, 2, blobRequests.join('\n'));
    assert.deepEqual(warnings, []);
  });

  test('when a URL has expired, the agent fetches and uploads through the server instead', async () => {
    const late = s3FromUrl(blobsUrl);
    const current = grid.server.ctx.blobs;
    // The same bucket and prefix, signing with a clock two hours behind: every URL has expired.
    grid.server.ctx.blobs = new S3BlobStore({ ...late, presign: { now: () => Date.now() - 2 * 3600_000 } });
    try {
      const r = await runCopyJob();
      assert.ok(r.copy.equals(Buffer.concat([r.input, r.input])));
      const agentCalls = blobRequests.filter((x) => x.includes('/agent/v1/'));
      assert.deepEqual(agentCalls.sort(), [
        `GET /agent/v1/tasks/${r.taskId}/blobs/${r.inDigest}`,
        ...r.outDigests.map((d) => `PUT /agent/v1/tasks/${r.taskId}/blobs/${d}`),
      ].sort());
      assert.ok(warnings.some((w) => /pre-signed URL failed .*403/.test(w)), warnings.join('\n'));
      assert.ok(warnings.some((w) => /copy\.bin to its pre-signed URL failed .*403/.test(w)), warnings.join('\n'));
    } finally {
      grid.server.ctx.blobs = current;
      late.client.destroy();
    }
  });
});
