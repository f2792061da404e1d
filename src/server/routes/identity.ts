import { inPart } from '../http-errors.js';
import { Type } from '@sinclair/typebox';
import { currentCredential, currentUser, type Services } from '../services.js';
import { MemberPut, ProjectCreate, ProjectPatch, RoleSchema, TokenCreate, UserCreate } from '../schemas.js';
import type { Api } from '../server.js';

const User = Type.Object({ id: Type.Integer(), name: Type.String(), operator: Type.Boolean(), createdAt: Type.String() });
const Project = Type.Object({ name: Type.String(), shareWeight: Type.Number(), createdAt: Type.String(), role: Type.Optional(RoleSchema) });
const iso = (ms: number) => new Date(ms).toISOString();

export function registerIdentityRoutes(app: Api, s: Services): void {
  const tags = ['identity'];
  app.get('/me', { schema: { tags, response: { 200: Type.Object({ user: User, projects: Type.Array(Project) }) } } }, async (req) => {
    const user = currentUser(req);
    const projects = await s.access.listProjects(user);
    return {
      user: { ...user, createdAt: iso(user.createdAt) },
      projects: projects.map((p) => ({ name: p.name, shareWeight: p.shareWeight, createdAt: iso(p.createdAt), role: p.role })),
    };
  });

  app.post('/users', { schema: { tags, body: UserCreate, response: { 201: User } } }, async (req, reply) => {
    const u = await inPart('body', s.access.createUser(currentUser(req), req.body.name, req.body.operator ?? false));
    return reply.code(201).send({ ...u, createdAt: iso(u.createdAt) });
  });

  app.get('/projects', { schema: { tags, response: { 200: Type.Object({ projects: Type.Array(Project) }) } } }, async (req) => {
    const projects = await s.access.listProjects(currentUser(req));
    return { projects: projects.map((p) => ({ name: p.name, shareWeight: p.shareWeight, createdAt: iso(p.createdAt), role: p.role })) };
  });

  app.post('/projects', { schema: { tags, body: ProjectCreate, response: { 201: Project } } }, async (req, reply) => {
    const p = await inPart('body', s.access.createProject(currentUser(req), req.body.name, req.body.shareWeight ?? 1));
    return reply.code(201).send({ name: p.name, shareWeight: p.shareWeight, createdAt: iso(p.createdAt) });
  });

  app.patch(
    '/projects/:project',
    { schema: { tags, params: Type.Object({ project: Type.String({ maxLength: 63 }) }), body: ProjectPatch, response: { 200: Project }, description: 'Operators: change a project\'s fair-share weight.' } },
    async (req) => {
      const p = await s.access.setShareWeight(currentUser(req), req.params.project, req.body.shareWeight);
      return { name: p.name, shareWeight: p.shareWeight, createdAt: iso(p.createdAt) };
    },
  );

  app.put(
    '/projects/:project/members/:user',
    { schema: { tags, params: Type.Object({ project: Type.String({ maxLength: 63 }), user: Type.String({ maxLength: 63 }) }), body: MemberPut, response: { 200: Type.Object({ project: Type.String(), user: Type.String(), role: RoleSchema }) } } },
    async (req) => {
      await s.access.setMember(currentUser(req), req.params.project, req.params.user, req.body.role);
      return { project: req.params.project, user: req.params.user, role: req.body.role };
    },
  );

  app.post(
    '/tokens',
    { schema: { tags, body: TokenCreate, response: { 201: Type.Object({ token: Type.String(), id: Type.String(), user: Type.String(), expiresAt: Type.Union([Type.String(), Type.Null()]) }) } } },
    async (req, reply) => {
      const t = await s.access.createToken(currentUser(req), currentCredential(req), {
        label: req.body.label ?? 'cli', ...(req.body.user === undefined ? {} : { userName: req.body.user }),
        ...(req.body.ttlSeconds === undefined ? {} : { ttlSeconds: req.body.ttlSeconds }),
      });
      return reply.code(201).send({ token: t.token, id: t.id, user: t.user.name, expiresAt: t.expiresAt === null ? null : iso(t.expiresAt) });
    },
  );

  app.delete(
    '/tokens/:id',
    { schema: { tags, params: Type.Object({ id: Type.String({ maxLength: 64 }) }), description: 'Revoke one of your tokens (operators: anyone\'s).' } },
    async (req, reply) => {
      await s.access.revokeToken(currentUser(req), req.params.id);
      return reply.code(204).send();
    },
  );
}
