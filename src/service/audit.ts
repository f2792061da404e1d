import { BoxgridError, invalid } from '../domain/errors.js';
import type { User } from '../domain/model.js';
import type { AuditListEntry } from '../store/store.js';
import type { ProjectAccess } from './access.js';
import type { ServiceContext } from './context.js';

/**
 * Admin actions: what operators and project admins do to users, projects, memberships, tokens,
 * sites and hosts. Submitting work and registering apps are a project's everyday business
 * (every submitter does them) and are not audited.
 */
export const AUDIT_ACTIONS = [
  'user.create', 'project.create', 'project.share_weight', 'member.set', 'token.create', 'token.revoke',
  'enroll_token.create', 'enroll_token.revoke', 'site.update', 'host.revoke',
] as const;
export type AuditAction = (typeof AUDIT_ACTIONS)[number];

/**
 * Appends an entry once the action has committed (a failure here fails the request, though the
 * action stands). `detail` says what changed; it never holds a secret, only public token ids.
 */
export async function recordAudit(
  ctx: ServiceContext,
  actor: User,
  action: AuditAction,
  target: string,
  opts: { projectId?: number | null; detail?: Record<string, unknown> } = {},
): Promise<void> {
  await ctx.store.appendAudit({
    at: ctx.now(), actorUserId: actor.id, actorName: actor.name, action, target, projectId: opts.projectId ?? null, detail: opts.detail ?? {},
  });
}

export interface AuditQuery {
  limit: number;
  cursor?: string;
  action?: AuditAction;
}

/** Reading the audit log: all of it for operators, a project's own entries for its admins. */
export class AuditService {
  constructor(private readonly ctx: ServiceContext) {}

  async list(actor: User, q: AuditQuery): Promise<{ entries: AuditListEntry[]; nextCursor: string | null }> {
    if (!actor.operator) throw new BoxgridError('forbidden', 'only an operator may read the audit log');
    return this.page({ ...(q.action === undefined ? {} : { action: q.action }) }, q);
  }

  /** `access` must allow 'manage' (the route asks for it): project admins and operators. */
  async listProject(access: ProjectAccess, q: AuditQuery): Promise<{ entries: AuditListEntry[]; nextCursor: string | null }> {
    return this.page({ projectId: access.project.id, ...(q.action === undefined ? {} : { action: q.action }) }, q);
  }

  private async page(filter: { action?: string; projectId?: number }, q: AuditQuery): Promise<{ entries: AuditListEntry[]; nextCursor: string | null }> {
    const beforeId = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
    const entries = await this.ctx.store.listAudit(filter, { limit: q.limit, ...(beforeId === undefined ? {} : { beforeId }) });
    const last = entries.at(-1);
    return { entries, nextCursor: entries.length === q.limit && last ? Buffer.from(`a:${last.id}`).toString('base64url') : null };
  }
}

function decodeCursor(cursor: string): number {
  const m = /^a:(\d{1,15})$/.exec(Buffer.from(cursor, 'base64url').toString());
  if (!m) throw invalid('cursor', 'is not a cursor this server gave out');
  return Number(m[1]);
}
