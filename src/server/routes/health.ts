import { Type } from '@sinclair/typebox';
import type { ServiceContext } from '../../service/context.js';
import type { Api } from '../server.js';

/** Liveness (the process answers) and readiness (the store answers too). No token needed. */
export function registerHealthRoutes(app: Api, ctx: ServiceContext): void {
  const Status = Type.Object({ status: Type.String() });
  app.get('/healthz', { schema: { tags: ['health'], security: [], response: { 200: Status } } }, async () => ({ status: 'ok' }));
  app.get('/readyz', { schema: { tags: ['health'], security: [], response: { 200: Status, 503: Status } } }, async (_req, reply) => {
    try {
      await ctx.store.ping();
      return { status: 'ready' };
    } catch {
      return reply.code(503).send({ status: 'store unavailable' });
    }
  });
}
