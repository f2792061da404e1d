import type { ServiceContext } from '../../service/context.js';
import { buildMetrics } from '../metrics.js';
import type { Api } from '../server.js';

/** GET /metrics in Prometheus' text format, without a token: aggregate counts only (server/metrics.ts). */
export function registerMetricsRoute(app: Api, ctx: ServiceContext): void {
  const registry = buildMetrics(ctx);
  app.get(
    '/metrics',
    { schema: { tags: ['health'], security: [], description: "Prometheus metrics: the demand for capacity by resource shape (docs/operations.md, Autoscaling)." } },
    async (_req, reply) => reply.type(registry.contentType).send(await registry.metrics()),
  );
}
