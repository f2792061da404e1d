import { Type } from '@sinclair/typebox';
import { inPart } from '../http-errors.js';
import { currentUser, type Services } from '../services.js';
import type { Api } from '../server.js';

const iso = (ms: number) => new Date(ms).toISOString();

/** The operators' side of hosts: enrolment tokens to hand out, and the list of enrolled hosts. */
export function registerHostRoutes(app: Api, s: Services): void {
  app.post(
    '/enroll-tokens',
    {
      schema: {
        tags: ['hosts'],
        description: 'Operators: a token that hosts trade for their credential at POST /agent/v1/enroll.',
        body: Type.Object(
          {
            site: Type.Optional(Type.String({ maxLength: 63 })),
            uses: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
            ttlSeconds: Type.Optional(Type.Integer({ minimum: 60, maximum: 10 * 365 * 86400 })),
            label: Type.Optional(Type.String({ maxLength: 200 })),
          },
          { additionalProperties: false },
        ),
        response: {
          201: Type.Object({
            token: Type.String(), id: Type.String(), site: Type.String(),
            usesLeft: Type.Union([Type.Integer(), Type.Null()]), expiresAt: Type.Union([Type.String(), Type.Null()]),
          }),
        },
      },
    },
    async (req, reply) => {
      const t = await inPart('body', s.enrollment.createToken(currentUser(req), req.body));
      return reply.code(201).send({ ...t, expiresAt: t.expiresAt === null ? null : iso(t.expiresAt) });
    },
  );

  app.get(
    '/hosts',
    {
      schema: {
        tags: ['hosts'],
        description: 'Operators: every enrolled host with its resources, state, last contact and tasks held.',
        response: {
          200: Type.Object({
            hosts: Type.Array(
              Type.Object({
                id: Type.Integer(), name: Type.String(), site: Type.String(), state: Type.String(), platform: Type.String(),
                labels: Type.Record(Type.String(), Type.String()),
                resources: Type.Object({ cores: Type.Number(), memoryMiB: Type.Integer(), diskMiB: Type.Integer(), gpus: Type.Integer() }),
                enrolledAt: Type.String(), lastSeenAt: Type.Union([Type.String(), Type.Null()]), activeTasks: Type.Integer(),
                pace: Type.Union([Type.Number(), Type.Null()], { description: 'How long tasks take on this host against their typical duration (1: typical, 2: twice as long); null until it finished one' }),
              }),
            ),
          }),
        },
      },
    },
    async (req) => {
      const hosts = await s.hosts.list(currentUser(req));
      return {
        hosts: hosts.map((h) => ({
          id: h.id, name: h.name, site: h.siteName, state: h.state, platform: h.platform, labels: h.labels, resources: h.resources,
          enrolledAt: iso(h.createdAt), lastSeenAt: h.lastSeenAt === null ? null : iso(h.lastSeenAt), activeTasks: h.activeTasks,
          pace: h.pace === null ? null : Math.round(h.pace * 100) / 100,
        })),
      };
    },
  );
}
