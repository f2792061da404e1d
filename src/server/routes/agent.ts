import { inPart } from '../http-errors.js';
import { Type } from '@sinclair/typebox';
import { currentHost, type Services } from '../services.js';
import { Resources } from '../schemas.js';
import type { Api } from '../server.js';

/**
 * The agent protocol, /agent/v1, authenticated by host credentials only (enrolment, which
 * has none yet, is registered apart: see registerEnrollRoute). Work requests, heartbeats and
 * reports come with the agent.
 */
export function registerAgentRoutes(app: Api, _s: Services): void {
  app.get(
    '/self',
    { schema: { tags: ['agent'], response: { 200: Type.Object({ id: Type.Integer(), name: Type.String(), state: Type.String(), resources: Resources, platform: Type.String() }) } } },
    async (req) => {
      const h = currentHost(req);
      return { id: h.id, name: h.name, state: h.state, resources: h.resources, platform: h.platform };
    },
  );
}

const EnrollBody = Type.Object(
  {
    enrollToken: Type.String({ maxLength: 100 }),
    name: Type.String({ minLength: 1, maxLength: 253, description: 'the host name, for people' }),
    resources: Type.Object(
      {
        cores: Type.Number({ exclusiveMinimum: 0, maximum: 4096 }), memoryMiB: Type.Integer({ minimum: 1 }),
        diskMiB: Type.Integer({ minimum: 0 }), gpus: Type.Integer({ minimum: 0, maximum: 64 }),
      },
      { additionalProperties: false },
    ),
    platform: Type.String({ pattern: '^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$', maxLength: 64 }),
    credentialId: Type.String({ maxLength: 16 }),
    credentialHash: Type.String({ maxLength: 64 }),
  },
  { additionalProperties: false },
);
const EnrollAnswer = Type.Object({ hostId: Type.Integer(), name: Type.String(), siteId: Type.Integer(), replayed: Type.Boolean() });

/** POST /agent/v1/enroll: an enrolment token (in the body) buys a host credential. Safe to retry. */
export function registerEnrollRoute(app: Api, s: Services): void {
  app.post(
    '/enroll',
    { schema: { tags: ['agent'], security: [], body: EnrollBody, response: { 201: EnrollAnswer, 200: EnrollAnswer } } },
    async (req, reply) => {
      const { host, replayed } = await inPart('body', s.enrollment.enroll(req.body));
      return reply.code(replayed ? 200 : 201).send({ hostId: host.id, name: host.name, siteId: host.siteId, replayed });
    },
  );
}
