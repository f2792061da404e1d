import { AddressAllowlist } from '../domain/cidr.js';
import { BoxgridError, invalid, notFound } from '../domain/errors.js';
import type { Host, User } from '../domain/model.js';
import type { Resources } from '../domain/resources.js';
import type { EnrollTokenSummary } from '../store/store.js';
import { checkName } from './access.js';
import { recordAudit } from './audit.js';
import type { ServiceContext } from './context.js';
import { newCredential, parseToken, secretMatches } from './credentials.js';
import { assertAdmitted } from './sites.js';

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

export interface EnrollTokenOptions {
  site?: string;
  uses?: number;
  ttlSeconds?: number;
  label?: string;
  /** The volunteer account the hosts belong to (Host.owner); the same rule as user names. */
  owner?: string;
}

/**
 * Sites hand out enrolment tokens (operators only); a host trades one for a host credential.
 * Tokens expire, run out of uses and can be revoked; hosts never share a credential; a site
 * with an address allowlist enrols only from its addresses.
 */
export class EnrollmentService {
  constructor(private readonly ctx: ServiceContext) {}

  async createToken(
    actor: User,
    opts: EnrollTokenOptions,
  ): Promise<{ token: string; id: string; site: string; usesLeft: number | null; expiresAt: number | null; owner: string | null }> {
    if (!actor.operator) throw new BoxgridError('forbidden', 'only an operator may create enrolment tokens');
    const siteName = opts.site ?? DEFAULT_SITE;
    checkName(siteName, 'site');
    if (opts.owner !== undefined) checkName(opts.owner, 'owner');
    const owner = opts.owner ?? null;
    const now = this.ctx.now();
    const site = (await this.ctx.store.getSiteByName(siteName)) ?? (await this.ctx.store.createSite(siteName, now));
    const c = newCredential('enroll');
    const expiresAt = opts.ttlSeconds === undefined ? null : now + opts.ttlSeconds * 1000;
    const label = opts.label ?? '';
    await this.ctx.store.createEnrollToken({
      id: c.id, siteId: site.id, secretHash: c.secretHash, label, usesLeft: opts.uses ?? null,
      expiresAt, revokedAt: null, createdAt: now, owner,
    });
    await recordAudit(this.ctx, actor, 'enroll_token.create', `enroll-token ${c.id}`, {
      detail: { site: site.name, label, uses: opts.uses ?? null, expiresAt, owner },
    });
    return { token: c.token, id: c.id, site: site.name, usesLeft: opts.uses ?? null, expiresAt, owner };
  }

  /** Every enrolment token, newest first; never their secrets. */
  async listTokens(actor: User): Promise<EnrollTokenSummary[]> {
    if (!actor.operator) throw new BoxgridError('forbidden', 'only an operator may list enrolment tokens');
    return this.ctx.store.listEnrollTokens();
  }

  /** Revokes an enrolment token: it enrols nobody from now on (hosts it enrolled keep their credentials). Again: no change. */
  async revokeToken(actor: User, id: string): Promise<void> {
    if (!actor.operator) throw new BoxgridError('forbidden', 'only an operator may revoke enrolment tokens');
    if (!(await this.ctx.store.getEnrollToken(id))) throw notFound(`enrolment token ${id}`);
    if (await this.ctx.store.revokeEnrollToken(id, this.ctx.now())) {
      await recordAudit(this.ctx, actor, 'enroll_token.revoke', `enroll-token ${id}`);
    }
  }

  /** `address`: where the request came from (fastify's req.ip: see docs/operations.md on trustProxy). */
  async enroll(input: EnrollInput, address?: string): Promise<{ host: Host; replayed: boolean }> {
    const parsed = parseToken(input.enrollToken);
    const record = parsed?.kind === 'enroll' ? await this.ctx.store.getEnrollToken(parsed.id) : null;
    if (!parsed || !record || !secretMatches(record, parsed.secret)) {
      throw new BoxgridError('unauthenticated', 'the enrolment token is not valid (unknown or mistyped)');
    }
    // Read afresh, not from the agent calls' cache: enrolments are rare, and a list just
    // tightened must hold for them at once.
    const site = await this.ctx.store.getSite(record.siteId);
    if (site) assertAdmitted(site, new AddressAllowlist(site.allowCidrs), address);
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
