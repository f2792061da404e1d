import { BoxgridError, invalid, notFound } from '../domain/errors.js';
import type { Host, Project, TokenRecord, User } from '../domain/model.js';
import { roleAllows, type Action, type Role } from '../domain/roles.js';
import { recordAudit } from './audit.js';
import type { ServiceContext } from './context.js';
import { issueToken, parseToken, secretMatches } from './credentials.js';
import { signatureMatches, type TransferDirection } from './transfer-signature.js';

/** Who is calling, and with which token (a token never mints one that outlives it). */
export type Actor = { kind: 'user'; user: User; token: TokenRecord } | { kind: 'host'; host: Host; token: TokenRecord };

export interface ProjectAccess {
  project: Project;
  role: Role;
  user: User;
}

const NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;

/** Names of users, projects, apps and sites share one rule (they appear in URLs and CLIs). */
export function checkName(value: string, field: string): void {
  if (!NAME_RE.test(value)) throw invalid(field, 'use 1–63 lower-case letters, digits, ".", "_" or "-"');
}

/**
 * Who is calling and what they may do. Objects in a project the caller is not a member of are
 * reported as not found, so their existence leaks nothing; a member lacking a right gets 403.
 */
export class AccessService {
  constructor(private readonly ctx: ServiceContext) {}

  async authenticate(authorization: string | undefined): Promise<Actor> {
    const m = /^Bearer (\S+)$/i.exec(authorization ?? '');
    if (!m) throw new BoxgridError('unauthenticated', 'missing "Authorization: Bearer <token>" header');
    const parsed = parseToken(m[1]!);
    const record = parsed ? await this.ctx.store.getToken(parsed.id) : null;
    const now = this.ctx.now();
    if (
      !parsed || !record || record.kind !== parsed.kind || !secretMatches(record, parsed.secret) ||
      record.revokedAt !== null || (record.expiresAt !== null && record.expiresAt <= now)
    ) {
      throw new BoxgridError('unauthenticated', 'the token is not valid (unknown, revoked or expired)');
    }
    if (record.kind === 'user') {
      const user = await this.ctx.store.getUser(record.subjectId);
      if (!user) throw new BoxgridError('unauthenticated', 'the token is not valid (its user is gone)');
      return { kind: 'user', user, token: record };
    }
    return { kind: 'host', host: await this.activeHost(record), token: record };
  }

  /**
   * The host a transfer URL was signed for (see transfer-signature.ts), if the servers' transfer
   * key made its signature, it has not expired, and the host is still active. Whether the host
   * holds the task live is the route's to check, as for the host's own calls.
   */
  async authenticateTransfer(url: { hostId: number; taskId: number; direction: TransferDirection; expiresAt: number; signature: string }): Promise<Host> {
    if (!signatureMatches(this.ctx.transferKey, url.hostId, url.taskId, url.direction, url.expiresAt, url.signature)) {
      throw new BoxgridError('unauthenticated', 'the transfer URL is not valid (bad signature: altered, or signed with another transfer key)');
    }
    if (url.expiresAt * 1000 <= this.ctx.now()) throw new BoxgridError('unauthenticated', `the transfer URL expired at ${new Date(url.expiresAt * 1000).toISOString()}`);
    const host = await this.ctx.store.getHost(url.hostId);
    if (!host || host.state !== 'active') throw new BoxgridError('unauthenticated', 'the transfer URL is not valid (its host is revoked)');
    return host;
  }

  private async activeHost(record: TokenRecord): Promise<Host> {
    const host = await this.ctx.store.getHost(record.subjectId);
    if (!host || host.state !== 'active') throw new BoxgridError('unauthenticated', 'the host credential is revoked');
    return host;
  }

  /** The project by name if the user may perform `action` in it. */
  async project(user: User, name: string, action: Action): Promise<ProjectAccess> {
    const project = await this.ctx.store.getProjectByName(name);
    const role: Role | null = !project ? null : user.operator ? 'admin' : await this.ctx.store.getRole(project.id, user.id);
    if (!project || !role) throw notFound(`project "${name}"`);
    if (!roleAllows(role, action)) {
      throw new BoxgridError('forbidden', `your role in project "${name}" is ${role}, which may not ${action}`);
    }
    return { project, role, user };
  }

  requireOperator(user: User): void {
    if (!user.operator) throw new BoxgridError('forbidden', 'only an operator may do this');
  }

  /**
   * First start: an operator "admin", a project "default" and a token for it, written in one
   * transaction. `saveToken` runs first, so a crash between the two leaves a token file that the
   * next start simply replaces, never an admin without a token. Returns the token, or null
   * when the server already has users.
   */
  async bootstrap(saveToken: (token: string) => Promise<void>): Promise<string | null> {
    if ((await this.ctx.store.countUsers()) > 0) return null;
    const now = this.ctx.now();
    const issued = issueToken('user', 0, 'bootstrap admin token', now);
    await saveToken(issued.token);
    const created = await this.ctx.store.bootstrap(
      { operatorName: 'admin', projectName: 'default', token: (userId) => ({ ...issued.record, subjectId: userId }) },
      now,
    );
    return created ? issued.token : null;
  }

  async createUser(actor: User, name: string, operator: boolean): Promise<User> {
    this.requireOperator(actor);
    checkName(name, 'name');
    const user = await this.ctx.store.createUser(name, operator, this.ctx.now());
    await recordAudit(this.ctx, actor, 'user.create', `user ${user.name}`, { detail: { operator } });
    return user;
  }

  async createProject(actor: User, name: string, shareWeight: number): Promise<Project> {
    this.requireOperator(actor);
    checkName(name, 'name');
    const project = await this.ctx.store.createProject(name, shareWeight, this.ctx.now());
    await recordAudit(this.ctx, actor, 'project.create', `project ${project.name}`, { projectId: project.id, detail: { shareWeight } });
    return project;
  }

  /** Operators set how much of the grid a project gets against the others (fair share). */
  async setShareWeight(actor: User, projectName: string, shareWeight: number): Promise<Project> {
    this.requireOperator(actor);
    const project = await this.ctx.store.getProjectByName(projectName);
    if (!project) throw notFound(`project "${projectName}"`);
    await this.ctx.store.setShareWeight(project.id, shareWeight);
    await recordAudit(this.ctx, actor, 'project.share_weight', `project ${project.name}`, { projectId: project.id, detail: { from: project.shareWeight, to: shareWeight } });
    return { ...project, shareWeight };
  }

  async setMember(actor: User, projectName: string, userName: string, role: Role): Promise<void> {
    const { project } = await this.project(actor, projectName, 'manage');
    const user = await this.ctx.store.getUserByName(userName);
    if (!user) throw notFound(`user "${userName}"`);
    await this.ctx.store.setMembership(project.id, user.id, role);
    await recordAudit(this.ctx, actor, 'member.set', `project ${project.name} user ${user.name}`, { projectId: project.id, detail: { user: user.name, role } });
  }

  async listProjects(actor: User): Promise<Array<Project & { role: Role }>> {
    return this.ctx.store.listProjectsFor(actor);
  }

  /**
   * A new token for yourself, or (operators only) for another user. It expires no later than
   * the token that asked for it, so a short-lived token cannot mint a permanent one.
   */
  async createToken(
    actor: User,
    caller: TokenRecord,
    opts: { userName?: string; label: string; ttlSeconds?: number },
  ): Promise<{ token: string; id: string; user: User; expiresAt: number | null }> {
    let user = actor;
    if (opts.userName !== undefined && opts.userName !== actor.name) {
      this.requireOperator(actor);
      const found = await this.ctx.store.getUserByName(opts.userName);
      if (!found) throw notFound(`user "${opts.userName}"`);
      user = found;
    }
    const now = this.ctx.now();
    const requested = opts.ttlSeconds === undefined ? null : now + opts.ttlSeconds * 1000;
    const expiresAt = caller.expiresAt === null ? requested : Math.min(requested ?? caller.expiresAt, caller.expiresAt);
    const issued = issueToken('user', user.id, opts.label, now, expiresAt);
    await this.ctx.store.insertToken(issued.record);
    await recordAudit(this.ctx, actor, 'token.create', `token ${issued.record.id}`, { detail: { user: user.name, label: opts.label, expiresAt } });
    return { token: issued.token, id: issued.record.id, user, expiresAt };
  }

  /** Revokes one of your own tokens, or (operators) anyone's. Unknown ids are 404. */
  async revokeToken(actor: User, id: string): Promise<void> {
    const t = await this.ctx.store.getToken(id);
    if (!t || t.kind !== 'user' || (t.subjectId !== actor.id && !actor.operator)) throw notFound(`token ${id}`);
    if (await this.ctx.store.revokeToken(id, this.ctx.now())) {
      await recordAudit(this.ctx, actor, 'token.revoke', `token ${id}`, { detail: { userId: t.subjectId } });
    }
  }
}
