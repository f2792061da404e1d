import { Type } from '@sinclair/typebox';
import { inPart } from '../http-errors.js';
import type { Services } from '../services.js';
import type { Api } from '../server.js';
import { BlobInfo, receiveBlob, sendBlob } from './blobs.js';

const Signed = {
  hostId: Type.Integer({ minimum: 1 }),
  id: Type.Integer({ minimum: 1 }),
  expires: Type.Integer({ minimum: 0, description: 'epoch seconds' }),
  signature: Type.String({ pattern: '^[A-Za-z0-9_-]{43}$' }),
  sha256: Type.String({ maxLength: 64 }),
};
const TransferParams = Type.Object(Signed);

/**
 * /transfer/v1: a task's files through URLs the server signed for its host
 * (service/transfer-signature.ts, POST /agent/v1/tasks/{id}/transfer-urls), for staging
 * containers that hold no credential (the Kubernetes executor's pods). The same rules as the
 * agent protocol apply, as that host: only a live task's inputs are readable, and outputs join
 * its job's project. The signature never reaches a log (see server.ts).
 */
export function registerTransferRoutes(app: Api, s: Services): void {
  const tags = ['agent'];
  const host = (p: { hostId: number; id: number; expires: number; signature: string }, direction: 'inputs' | 'outputs') =>
    s.access.authenticateTransfer({ hostId: p.hostId, taskId: p.id, direction, expiresAt: p.expires, signature: p.signature });

  app.get(
    '/:hostId/tasks/:id/inputs/:expires/:signature/:sha256',
    { exposeHeadRoute: false, schema: { tags, security: [], params: TransferParams, description: "Download an input (or the checkpoint) of a live task through a URL signed for its host." } },
    async (req, reply) => {
      const h = await host(req.params, 'inputs');
      return sendBlob(req, reply, await inPart('params', s.agent.openInput(h, req.params.id, req.params.sha256)));
    },
  );

  void app.register(async (uploads) => {
    uploads.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
    (uploads as Api).put(
      '/:hostId/tasks/:id/outputs/:expires/:signature/:sha256',
      {
        schema: {
          tags, security: [], params: TransferParams, response: { 201: BlobInfo, 200: BlobInfo },
          description: "Upload an output of a live task (application/octet-stream, under its sha256) through a URL signed for its host.",
        },
      },
      async (req, reply) => {
        const h = await host(req.params, 'outputs');
        return receiveBlob(req, reply, (body, length) => s.agent.upload(h, req.params.id, req.params.sha256, body, length));
      },
    );
  });
}
