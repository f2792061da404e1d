import { inPart } from '../http-errors.js';
import { Type } from '@sinclair/typebox';
import { projectAccess, type Services } from '../services.js';
import { App, AppCreate, AppParams, AppVersionCreate, ProjectParams } from '../schemas.js';
import { renderApp } from '../render.js';
import type { Api } from '../server.js';

export function registerAppRoutes(app: Api, s: Services): void {
  const tags = ['apps'];
  app.post('/projects/:project/apps', { schema: { tags, params: ProjectParams, body: AppCreate, response: { 201: App } } }, async (req, reply) => {
    const access = await projectAccess(s, req, req.params.project, 'submit');
    return reply.code(201).send(renderApp(await inPart('body', s.apps.create(access, req.body))));
  });

  app.get('/projects/:project/apps', { schema: { tags, params: ProjectParams, response: { 200: Type.Object({ apps: Type.Array(App) }) } } }, async (req) => {
    const access = await projectAccess(s, req, req.params.project, 'read');
    return { apps: (await s.apps.list(access)).map(renderApp) };
  });

  app.get(
    '/projects/:project/apps/:name',
    {
      schema: {
        tags, params: AppParams,
        querystring: Type.Object({ version: Type.Optional(Type.Integer({ minimum: 1 })) }, { additionalProperties: false }),
        response: { 200: Type.Object({ app: App, versions: Type.Array(Type.Integer()) }) },
      },
    },
    async (req) => {
      const access = await projectAccess(s, req, req.params.project, 'read');
      const { app: found, versions } = await s.apps.get(access, req.params.name, req.query.version);
      return { app: renderApp(found), versions };
    },
  );

  app.post('/projects/:project/apps/:name/versions', { schema: { tags, params: AppParams, body: AppVersionCreate, response: { 201: App } } }, async (req, reply) => {
    const access = await projectAccess(s, req, req.params.project, 'submit');
    return reply.code(201).send(renderApp(await inPart('body', s.apps.newVersion(access, req.params.name, req.body))));
  });
}
