import { inPart } from '../http-errors.js';
import { Type } from '@sinclair/typebox';
import { projectAccess, type Services } from '../services.js';
import { Batch, BatchCreate, Counts, IdParams, PageQuery, ProjectParams, SubmitResponse } from '../schemas.js';
import { renderBatch } from '../render.js';
import type { Api, HttpOptions } from '../server.js';
import { IdemHeader, idempotencyKey, renderSubmit } from './submit-response.js';

const BatchDetail = Type.Object({ batch: Batch, counts: Counts, done: Type.Boolean() });

export function registerBatchRoutes(app: Api, s: Services, opts: HttpOptions): void {
  const tags = ['batches'];
  app.post(
    '/projects/:project/batches',
    {
      bodyLimit: opts.maxBatchBodyBytes,
      // Up to 256 MiB of JSON is parsed only for callers who may submit to this project.
      onRequest: async (req) => {
        await projectAccess(s, req, (req.params as { project: string }).project, 'submit');
      },
      schema: {
        tags, params: ProjectParams, headers: IdemHeader, body: BatchCreate, response: { 201: SubmitResponse, 200: SubmitResponse },
        description: 'Submit up to 100,000 jobs at once: a list ("jobs"), N copies ("count") or a parameter sweep ("sweep"), all or nothing.',
      },
    },
    async (req, reply) => {
      const access = await projectAccess(s, req, req.params.project, 'submit');
      const key = idempotencyKey(req.headers['idempotency-key']);
      const result = await inPart('body', s.jobs.submitBatch(access, req.body, key === null ? null : { key, body: req.body }));
      return reply.code(result.replayed ? 200 : 201).send(renderSubmit(result));
    },
  );

  app.get(
    '/projects/:project/batches',
    { schema: { tags, params: ProjectParams, querystring: PageQuery, response: { 200: Type.Object({ batches: Type.Array(Batch), nextCursor: Type.Union([Type.String(), Type.Null()]) }) } } },
    async (req) => {
      const access = await projectAccess(s, req, req.params.project, 'read');
      const { batches, nextCursor } = await inPart('querystring', s.jobs.listBatches(access, req.query.limit ?? 100, req.query.cursor));
      return { batches: batches.map(renderBatch), nextCursor };
    },
  );

  app.get('/projects/:project/batches/:id', { schema: { tags, params: IdParams, response: { 200: BatchDetail } } }, async (req) => {
    const access = await projectAccess(s, req, req.params.project, 'read');
    const d = await s.jobs.getBatch(access, req.params.id);
    return { batch: renderBatch(d.batch), counts: d.counts, done: d.done };
  });

  app.post(
    '/projects/:project/batches/:id/cancel',
    { schema: { tags, params: IdParams, response: { 200: Type.Object({ cancelled: Type.Integer(), counts: Counts }) } } },
    async (req) => {
      const access = await projectAccess(s, req, req.params.project, 'submit');
      return s.jobs.cancelBatch(access, req.params.id);
    },
  );
}
