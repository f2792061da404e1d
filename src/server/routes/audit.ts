import { Type } from '@sinclair/typebox';
import { AUDIT_ACTIONS, type AuditQuery } from '../../service/audit.js';
import type { AuditListEntry } from '../../store/store.js';
import { inPart } from '../http-errors.js';
import { ProjectParams } from '../schemas.js';
import { currentUser, projectAccess, type Services } from '../services.js';
import type { Api } from '../server.js';

const AuditListQuery = Type.Object(
  {
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
    cursor: Type.Optional(Type.String({ maxLength: 64 })),
    action: Type.Optional(Type.Unsafe<AuditQuery['action']>({ type: 'string', enum: [...AUDIT_ACTIONS] })),
  },
  { additionalProperties: false },
);

const AuditEntryView = Type.Object({
  id: Type.Integer(), at: Type.String({ format: 'date-time' }),
  actor: Type.Object({ id: Type.Union([Type.Integer(), Type.Null()]), name: Type.String() }),
  action: Type.String(), target: Type.String(), project: Type.Union([Type.String(), Type.Null()]),
  detail: Type.Record(Type.String(), Type.Unknown()),
});
const AuditPage = Type.Object({ entries: Type.Array(AuditEntryView), nextCursor: Type.Union([Type.String(), Type.Null()]) });

function render(e: AuditListEntry) {
  return {
    id: e.id, at: new Date(e.at).toISOString(), actor: { id: e.actorUserId, name: e.actorName }, action: e.action, target: e.target,
    project: e.projectName, detail: e.detail,
  };
}

/** The audit log of admin actions (service/audit.ts lists them): all of it for operators, a project's part for its admins. */
export function registerAuditRoutes(app: Api, s: Services): void {
  const tags = ['audit'];
  app.get(
    '/audit',
    {
      schema: {
        tags, querystring: AuditListQuery, response: { 200: AuditPage },
        description: 'Operators: admin actions (who, what, when), newest first; `cursor` is the previous page\'s nextCursor.',
      },
    },
    async (req) => {
      const q = req.query;
      const page = await inPart('querystring', s.audit.list(currentUser(req), { limit: q.limit ?? 100, ...(q.cursor === undefined ? {} : { cursor: q.cursor }), ...(q.action === undefined ? {} : { action: q.action }) }));
      return { entries: page.entries.map(render), nextCursor: page.nextCursor };
    },
  );

  app.get(
    '/projects/:project/audit',
    {
      schema: {
        tags, params: ProjectParams, querystring: AuditListQuery, response: { 200: AuditPage },
        description: 'Project admins: the admin actions on this project (its creation, share weight, members), newest first.',
      },
    },
    async (req) => {
      const access = await projectAccess(s, req, req.params.project, 'manage');
      const q = req.query;
      const page = await inPart('querystring', s.audit.listProject(access, { limit: q.limit ?? 100, ...(q.cursor === undefined ? {} : { cursor: q.cursor }), ...(q.action === undefined ? {} : { action: q.action }) }));
      return { entries: page.entries.map(render), nextCursor: page.nextCursor };
    },
  );
}
