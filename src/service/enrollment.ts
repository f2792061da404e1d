import { BoxgridError, invalid } from '../domain/errors.js';
import type { Host, User } from '../domain/model.js';
import type { Resources } from '../domain/resources.js';
import { checkName } from './access.js';
import type { ServiceContext } from './context.js';
import { newCredential, parseToken, secretMatches } from './credentials.js';

export const DEFAULT_SITE = 'default';

export interface EnrollInput {
  enrollToken: string;
  name: string;
  resources: Resources;
  platform: string;
  /**
   * The host makes its own credential (`bgh_<id>_<secret>`) and sends only the id and
   * sha256(secret): the secret never crosses the network, and a retried enrolment is
   * recognised by the id without any secret having to be shown twice.
   */
  credentialId: string;
  credentialHash: string;
}

/**
 * Sites hand out enrolment tokens (operators only); a host trades one for a host credential.
 * Tokens expire, run out of uses and can be revoked; hosts never share a credential.
 */
export class EnrollmentService {
  constructor(private readonly ctx: ServiceContext) {}

  async createToken(
    actor: User,
    opts: { site?: string; uses?: number; ttlSeconds?: number; label?: string },
  ): Promise<{ token: string; id: string; site: string; usesLeft: number | null; expiresAt: number | null }> {
    if (!actor.operator) throw new BoxgridError('forbidden', 'only an operator may create enrolment tokens');
    const siteName = opts.site ?? DEFAULT_SITE;
    checkName(siteName, 'site');
    const now = this.ctx.now();
    const site = (await this.ctx.store.getSiteByName(siteName)) ?? (await this.ctx.store.createSite(siteName, now));
    const c = newCredential('enroll');
    const expiresAt = opts.ttlSeconds === undefined ? null : now + opts.ttlSeconds * 1000;
    await this.ctx.store.createEnrollToken({
      id: c.id, siteId: site.id, secretHash: c.secretHash, label: opts.label ?? '', usesLeft: opts.uses ?? null,
      expiresAt, revokedAt: null, createdAt: now,
    });
    return { token: c.token, id: c.id, site: site.name, usesLeft: opts.uses ?? null, expiresAt };
  }

  async enroll(input: EnrollInput): Promise<{ host: Host; replayed: boolean }> {
    const parsed = parseToken(input.enrollToken);
    const record = parsed?.kind === 'enroll' ? await this.ctx.store.getEnrollToken(parsed.id) : null;
    if (!parsed || !record || !secretMatches(record, parsed.secret)) {
      throw new BoxgridError('unauthenticated', 'the enrolment token is not valid (unknown or mistyped)');
    }
    if (!/^[0-9a-f]{16}$/.test(input.credentialId)) throw invalid('credentialId', 'must be 16 lower-case hex digits');
    if (!/^[0-9a-f]{64}$/.test(input.credentialHash)) throw invalid('credentialHash', 'must be the sha256 of the secret, 64 lower-case hex digits');
    const now = this.ctx.now();
    return this.ctx.store.enrollHost(
      {
        enrollTokenId: record.id,
        host: { name: input.name, resources: input.resources, platform: input.platform },
        credential: {
          id: input.credentialId, kind: 'host', subjectId: 0, secretHash: Buffer.from(input.credentialHash, 'hex'),
          label: `host ${input.name}`, createdAt: now, expiresAt: null, revokedAt: null,
        },
      },
      now,
    );
  }
}
