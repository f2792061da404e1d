import { AccessService } from '../../service/access.js';
import type { ServiceContext } from '../../service/context.js';
import { buildMetrics } from '../metrics.js';
import type { Api } from '../server.js';

/**
 * GET /metrics in Prometheus' text format (server/metrics.ts). Without a token: aggregate counts
 * and sizes only. With an operator's token (Prometheus' `authorization` in the scrape config):
 * the queue depth by project and app too; a token that does not authenticate is 401, any other
 * valid one sees what anyone does. Installs the metrics' meter on the context: the agent
 * protocol's work in this process is counted from then on.
 */
export function registerMetricsRoute(app: Api, ctx: ServiceContext): void {
  const metrics = buildMetrics(ctx);
  ctx.meter = metrics.meter;
  const access = new AccessService(ctx);
  app.get(
    '/metrics',
    {
      schema: {
        tags: ['health'], security: [],
        description: "Prometheus metrics: demand for capacity by resource shape, tasks, hosts online, this server's dispatches and reports; with an operator's token, the queue depth by project and app (docs/operations.md, Metrics).",
      },
    },
    async (req, reply) => {
      let registry = metrics.anonymous;
      if (req.headers.authorization !== undefined) {
        const actor = await access.authenticate(req.headers.authorization);
        if (actor.kind === 'user' && actor.user.operator) registry = metrics.operator;
      }
      return reply.type(registry.contentType).send(await registry.metrics());
    },
  );
}
