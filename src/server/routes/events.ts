import { Type } from '@sinclair/typebox';
import { projectAccess, type Services } from '../services.js';
import { ProjectParams } from '../schemas.js';
import type { Api, HttpOptions } from '../server.js';
import type { StampedEvent } from '../../service/events.js';
import { invalid, notFound } from '../../domain/errors.js';

/**
 * Server-sent events: `event: job`, `event: batch` or `event: workflow`, `id:` a sequence number to resume from
 * with Last-Event-ID, `data:` JSON. Filtered to one batch or one job when asked; a job's
 * stream also carries its batch's bulk changes (a batch cancel), which are not sent per job.
 */
export function registerEventRoutes(app: Api, s: Services, opts: HttpOptions): void {
  // Open streams never end by themselves, and the HTTP server waits for every connection to
  // end before it closes: so shutdown ends them first.
  const open = new Set<() => void>();
  app.addHook('preClose', async () => {
    for (const end of open) end();
  });
  app.get(
    '/projects/:project/events',
    {
      schema: {
        tags: ['events'], params: ProjectParams,
        querystring: Type.Object(
          { batch: Type.Optional(Type.Integer({ minimum: 1 })), job: Type.Optional(Type.Integer({ minimum: 1 })), workflow: Type.Optional(Type.Integer({ minimum: 1 })) },
          { additionalProperties: false },
        ),
        headers: Type.Object({ 'last-event-id': Type.Optional(Type.String({ pattern: '^[0-9]{1,15}$' })) }),
        description: 'text/event-stream of job, batch and workflow state changes in the project (one batch, job or workflow when asked).',
      },
    },
    async (req, reply) => {
      const access = await projectAccess(s, req, req.params.project, 'read');
      const { batch, job, workflow } = req.query;
      const given = Object.entries({ batch, job, workflow }).filter(([, v]) => v !== undefined).map(([k]) => k);
      if (given.length > 1) throw invalid(`querystring/${given[1]}`, 'follow one batch, one job or one workflow, not several');
      if (workflow !== undefined && !(await s.ctx.store.getWorkflow(access.project.id, workflow))) throw notFound(`workflow ${workflow}`);
      // Existence is checked so that a typo is a 404, not a stream that never speaks.
      if (batch !== undefined && !(await s.ctx.store.getBatch(access.project.id, batch))) throw notFound(`batch ${batch}`);
      const watched = job === undefined ? null : await s.ctx.store.getJob(access.project.id, job);
      if (job !== undefined && !watched) throw notFound(`job ${job}`);
      const last = req.headers['last-event-id'];
      reply.hijack();
      const res = reply.raw;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      // A HEAD has no body to stream: its headers never left (node sends them with the body) and
      // the subscription held the connection until the client gave up.
      if (req.method === 'HEAD') return void res.end();
      res.write(': connected\n\n');
      const send = (e: StampedEvent): void => {
        res.write(`id: ${e.seq}\nevent: ${e.event.type}\ndata: ${JSON.stringify({ ...e.event, at: new Date(e.at).toISOString() })}\n\n`);
      };
      const unsubscribe = s.ctx.events.subscribe(
        {
          projectId: access.project.id, ...(batch === undefined ? {} : { batchId: batch }), ...(workflow === undefined ? {} : { workflowId: workflow }),
          ...(watched ? { jobId: watched.id, jobBatchId: watched.batchId } : {}),
        },
        last === undefined ? null : Number(last),
        send,
      );
      const keepAlive = setInterval(() => res.write(': keep-alive\n\n'), opts.sseKeepAliveSeconds * 1000);
      keepAlive.unref();
      const stop = (): void => {
        clearInterval(keepAlive);
        unsubscribe();
        open.delete(end);
      };
      const end = (): void => {
        stop();
        res.end();
      };
      open.add(end);
      req.raw.on('close', stop);
    },
  );
}
