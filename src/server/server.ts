import swagger from '@fastify/swagger';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { BoxgridError } from '../domain/errors.js';
import type { Host, TokenRecord, User } from '../domain/model.js';
import { sendError } from './http-errors.js';
import { validatorCompiler } from './validation.js';
import { Services } from './services.js';
import type { ServiceContext } from '../service/context.js';
import { redactTransferUrl } from '../service/transfer-signature.js';
import { registerIdentityRoutes } from './routes/identity.js';
import { registerHostRoutes } from './routes/hosts.js';
import { registerSiteRoutes } from './routes/sites.js';
import { registerAuditRoutes } from './routes/audit.js';
import { registerAppRoutes } from './routes/apps.js';
import { registerJobRoutes } from './routes/jobs.js';
import { registerBatchRoutes } from './routes/batches.js';
import { registerWorkflowRoutes } from './routes/workflows.js';
import { registerEventRoutes } from './routes/events.js';
import { registerBlobRoutes } from './routes/blobs.js';
import { registerHealthRoutes } from './routes/health.js';
import { registerMetricsRoute } from './routes/metrics.js';
import { registerAgentRoutes, registerEnrollRoute } from './routes/agent.js';
import { registerTransferRoutes } from './routes/transfer.js';
import { registerDashboardRoutes } from './routes/dashboard.js';

export type Api = FastifyInstance<any, any, any, any, TypeBoxTypeProvider>;

export interface HttpOptions {
  /** pino options (a `stream` too), or false for silence (tests). Requests are logged by `requestForLog`. */
  logger: boolean | object;
  /** Largest JSON body of a batch submission, bytes. Other routes accept 1 MiB. */
  maxBatchBodyBytes: number;
  /** Seconds between SSE keep-alive comments. */
  sseKeepAliveSeconds: number;
  /**
   * fastify's trustProxy: behind a reverse proxy, its address(es) (CIDRs too), so that req.ip
   * (which site allowlists check) is the client's, from X-Forwarded-For. Default false: the
   * connection's own address. See docs/operations.md, "Sites and enrolment".
   */
  trustProxy?: boolean | string | string[];
  /** PEM certificate (chain) and key: serve HTTPS instead of HTTP. */
  tls?: { cert: string; key: string };
}

export const DEFAULT_HTTP: HttpOptions = { logger: true, maxBatchBodyBytes: 256 * 1024 * 1024, sseKeepAliveSeconds: 15 };

/**
 * What the log says of a request: fastify's fields, with a transfer URL's signature replaced
 * (the URL is a bearer credential until it expires, and logs travel further than secrets should).
 */
export function requestForLog(req: FastifyRequest): Record<string, unknown> {
  return {
    method: req.method, url: redactTransferUrl(req.url), version: req.headers?.['accept-version'],
    host: req.host, remoteAddress: req.ip, remotePort: req.socket?.remotePort,
  };
}

function loggerOptions(logger: boolean | object): boolean | object {
  if (logger === false) return false;
  const given = (logger === true ? {} : logger) as { serializers?: Record<string, unknown> };
  return { ...given, serializers: { ...given.serializers, req: requestForLog } };
}

/** Builds the HTTP server (not yet listening) over the given services. */
export async function buildHttpServer(ctx: ServiceContext, opts: HttpOptions = DEFAULT_HTTP): Promise<Api> {
  const app = Fastify({
    ...(opts.tls ? { https: opts.tls } : {}),
    logger: loggerOptions(opts.logger),
    bodyLimit: 1024 * 1024,
    trustProxy: opts.trustProxy ?? false,
    // Our own 503 below, so that even shutdown answers in the documented error shape.
    return503OnClosing: false,
    // Errors fastify raises before routing (a malformed URL, say) get the same shape as ours.
    frameworkErrors: (err, req, reply) => {
      sendError(req, reply, err);
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  const services = new Services(ctx);

  app.setValidatorCompiler(validatorCompiler());
  app.decorateRequest('user', null as User | null);
  app.decorateRequest('agentHost', null as Host | null);
  app.decorateRequest('credential', null as TokenRecord | null);
  // JSON routes take JSON only: anything else is 415, not a string that fails validation.
  app.removeContentTypeParser('text/plain');
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onRequest', async () => {
    if (closing) throw new BoxgridError('unavailable', 'the server is shutting down; retry shortly');
  });
  app.setErrorHandler((err, req, reply) => sendError(req, reply, err));
  app.setNotFoundHandler((req, reply) => sendError(req, reply, new BoxgridError('not_found', `no route ${req.method} ${redactTransferUrl(req.url.split('?')[0]!)}`)));

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'boxgrid API', version: '1', description: 'User API (/v1) and agent protocol (/agent/v1). Errors: docs/errors.md.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
  });

  registerHealthRoutes(app, ctx);
  registerMetricsRoute(app, ctx);
  await app.register(async (v1) => {
    v1.addHook('onRequest', async (req) => {
      const actor = await services.access.authenticate(req.headers.authorization);
      if (actor.kind !== 'user') throw new BoxgridError('unauthenticated', 'host credentials cannot call the user API');
      req.user = actor.user;
      req.credential = actor.token;
    });
    registerIdentityRoutes(v1 as Api, services);
    registerHostRoutes(v1 as Api, services);
    registerSiteRoutes(v1 as Api, services);
    registerAuditRoutes(v1 as Api, services);
    registerAppRoutes(v1 as Api, services);
    registerJobRoutes(v1 as Api, services);
    registerBatchRoutes(v1 as Api, services, opts);
    registerWorkflowRoutes(v1 as Api, services);
    registerEventRoutes(v1 as Api, services, opts);
    await v1.register(async (blobRoutes) => {
      // Blob bodies stay streams, here only: hashed on their way to disk, never buffered whole.
      blobRoutes.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
      registerBlobRoutes(blobRoutes as Api, services);
    });
  }, { prefix: '/v1' });
  await app.register(async (agent) => {
    agent.addHook('onRequest', async (req) => {
      const actor = await services.access.authenticate(req.headers.authorization);
      if (actor.kind !== 'host') throw new BoxgridError('unauthenticated', 'user tokens cannot call the agent protocol');
      // A host credential works only from its site's addresses, when the site lists any.
      await services.sites.checkHostAddress(actor.host.siteId, req.ip);
      req.agentHost = actor.host;
      req.credential = actor.token;
    });
    registerAgentRoutes(agent as Api, services);
  }, { prefix: '/agent/v1' });

  await app.register(async (enroll) => registerEnrollRoute(enroll as Api, services), { prefix: '/agent/v1' });
  // Signed URLs authenticate themselves (the signature in the path), so no bearer token here.
  await app.register(async (transfer) => registerTransferRoutes(transfer as Api, services), { prefix: '/transfer/v1' });

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
  // The web dashboard's static files: public (they hold no data), hidden from the OpenAPI document.
  registerDashboardRoutes(app);
  return app;
}
