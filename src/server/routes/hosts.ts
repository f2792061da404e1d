import { Type, type TSchema } from '@sinclair/typebox';
import { inPart } from '../http-errors.js';
import { currentUser, type Services } from '../services.js';
import type { Api } from '../server.js';

const iso = (ms: number) => new Date(ms).toISOString();
const isoOrNull = (ms: number | null) => (ms === null ? null : iso(ms));
const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);
const Owner = Type.String({ minLength: 1, maxLength: 63, description: 'the volunteer account its hosts belong to (lower-case letters, digits, ".", "_", "-"); replicas of one job go to hosts of distinct owners' });

const EnrollTokenView = Type.Object({
  id: Type.String(), site: Type.String(), label: Type.String(), owner: Nullable(Type.String()),
  usesLeft: Nullable(Type.Integer()), expiresAt: Nullable(Type.String()), revokedAt: Nullable(Type.String()), createdAt: Type.String(),
});

/** The operators' side of hosts: enrolment tokens to hand out and revoke, enrolled hosts to list and revoke. */
export function registerHostRoutes(app: Api, s: Services): void {
  const tags = ['hosts'];
  app.post(
    '/enroll-tokens',
    {
      schema: {
        tags,
        description: 'Operators: a token that hosts trade for their credential at POST /agent/v1/enroll (the secret is shown once).',
        body: Type.Object(
          {
            site: Type.Optional(Type.String({ maxLength: 63 })),
            uses: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000 })),
            ttlSeconds: Type.Optional(Type.Integer({ minimum: 60, maximum: 10 * 365 * 86400 })),
            label: Type.Optional(Type.String({ maxLength: 200 })),
            owner: Type.Optional(Owner),
          },
          { additionalProperties: false },
        ),
        response: {
          201: Type.Object({
            token: Type.String(), id: Type.String(), site: Type.String(), owner: Nullable(Type.String()),
            usesLeft: Nullable(Type.Integer()), expiresAt: Nullable(Type.String()),
          }),
        },
      },
    },
    async (req, reply) => {
      const t = await inPart('body', s.enrollment.createToken(currentUser(req), req.body));
      return reply.code(201).send({ ...t, expiresAt: isoOrNull(t.expiresAt) });
    },
  );

  app.get(
    '/enroll-tokens',
    {
      schema: {
        tags,
        description: 'Operators: every enrolment token, newest first, with its site, uses left, expiry and revocation (never its secret).',
        response: { 200: Type.Object({ tokens: Type.Array(EnrollTokenView) }) },
      },
    },
    async (req) => {
      const tokens = await s.enrollment.listTokens(currentUser(req));
      return {
        tokens: tokens.map((t) => ({
          id: t.id, site: t.siteName, label: t.label, owner: t.owner, usesLeft: t.usesLeft,
          expiresAt: isoOrNull(t.expiresAt), revokedAt: isoOrNull(t.revokedAt), createdAt: iso(t.createdAt),
        })),
      };
    },
  );

  app.delete(
    '/enroll-tokens/:id',
    {
      schema: {
        tags, params: Type.Object({ id: Type.String({ maxLength: 64 }) }),
        description: 'Operators: revoke an enrolment token; it enrols nobody from now on (hosts it enrolled keep their credentials). Again: 204, no change.',
      },
    },
    async (req, reply) => {
      await s.enrollment.revokeToken(currentUser(req), req.params.id);
      return reply.code(204).send();
    },
  );

  app.get(
    '/hosts',
    {
      schema: {
        tags,
        description: 'Operators: every enrolled host with its resources, state, owner, last contact and tasks held.',
        response: {
          200: Type.Object({
            hosts: Type.Array(
              Type.Object({
                id: Type.Integer(), name: Type.String(), site: Type.String(), state: Type.String(), platform: Type.String(),
                owner: Nullable(Type.String({ description: 'the volunteer account it was enrolled for; null: the host is its own owner' })),
                labels: Type.Record(Type.String(), Type.String()),
                resources: Type.Object({ cores: Type.Number(), memoryMiB: Type.Integer(), diskMiB: Type.Integer(), gpus: Type.Integer() }),
                enrolledAt: Type.String(), lastSeenAt: Nullable(Type.String()), activeTasks: Type.Integer(),
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
          id: h.id, name: h.name, site: h.siteName, state: h.state, platform: h.platform, owner: h.owner, labels: h.labels, resources: h.resources,
          enrolledAt: iso(h.createdAt), lastSeenAt: isoOrNull(h.lastSeenAt), activeTasks: h.activeTasks,
          pace: h.pace === null ? null : Math.round(h.pace * 100) / 100,
        })),
      };
    },
  );

  app.post(
    '/hosts/:id/revoke',
    {
      schema: {
        tags, params: Type.Object({ id: Type.Integer({ minimum: 1 }) }),
        description: 'Operators: revoke a host. Its credential stops working (401), its active tasks are aborted and their jobs requeued at once ' +
          'without spending an attempt (a job another host still runs stays running). Again: 200 with `revoked: false` and nothing changed.',
        response: {
          200: Type.Object({
            host: Type.Object({ id: Type.Integer(), name: Type.String(), state: Type.String(), owner: Nullable(Type.String()) }),
            revoked: Type.Boolean({ description: 'false: it was revoked already, and nothing changed' }),
            abortedTasks: Type.Array(Type.Integer(), { description: 'ids of the tasks aborted' }),
            requeuedJobs: Type.Array(Type.Integer(), { description: 'ids of the jobs put back in their queue (and of replicated jobs that this left with no consensus, now failed)' }),
          }),
        },
      },
    },
    async (req) => {
      const r = await s.hosts.revoke(currentUser(req), req.params.id);
      return {
        host: { id: r.host.id, name: r.host.name, state: r.host.state, owner: r.host.owner },
        revoked: r.changed, abortedTasks: r.abortedTasks.map((t) => t.id), requeuedJobs: r.requeuedJobs.map((j) => j.id),
      };
    },
  );
}
