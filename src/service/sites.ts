import { BoxgridError } from '../domain/errors.js';
import { AddressAllowlist, checkCidrs } from '../domain/cidr.js';
import type { Site, User } from '../domain/model.js';
import type { SiteSummary } from '../store/store.js';
import { checkName } from './access.js';
import { recordAudit } from './audit.js';
import type { ServiceContext } from './context.js';

/**
 * How long a server trusts the allowlist it read for a site. The server that changes a list
 * forgets its copy at once; servers sharing the database see the change within this time.
 */
export const ALLOWLIST_TTL_MS = 10_000;

/** Refuses a client address the site's allowlist does not admit (403, naming the address and site). */
export function assertAdmitted(site: Pick<Site, 'name' | 'allowCidrs'>, allowlist: AddressAllowlist, address: string | undefined): void {
  if (!allowlist.allows(address)) {
    throw new BoxgridError('forbidden', `the address ${address ?? '(unknown)'} is not allowed at site "${site.name}" (its allowlist of client addresses does not include it)`);
  }
}

/**
 * Sites (operators): their address allowlists, and the check every agent call of a site's hosts
 * passes through (server.ts), served from a short-lived cache so that it costs no query per call.
 */
export class SiteService {
  private readonly cache = new Map<number, { until: number; entry: Promise<{ site: Site; allowlist: AddressAllowlist } | null> }>();

  constructor(private readonly ctx: ServiceContext) {}

  async list(actor: User): Promise<SiteSummary[]> {
    if (!actor.operator) throw new BoxgridError('forbidden', 'only an operator may list sites');
    return this.ctx.store.listSites();
  }

  /** Sets the site's allowlist (creating the site if needed); [] admits any address. */
  async put(actor: User, name: string, allowCidrs: readonly string[]): Promise<Site> {
    if (!actor.operator) throw new BoxgridError('forbidden', 'only an operator may change a site');
    checkName(name, 'name');
    const cidrs = checkCidrs(allowCidrs, 'allowCidrs');
    const site = await this.ctx.store.putSite(name, cidrs, this.ctx.now());
    this.cache.delete(site.id);
    await recordAudit(this.ctx, actor, 'site.update', `site ${site.name}`, { detail: { allowCidrs: site.allowCidrs } });
    return site;
  }

  /** Throws `forbidden` unless the host's site admits the address its call came from. */
  async checkHostAddress(siteId: number, address: string | undefined): Promise<void> {
    const entry = await this.allowlistOf(siteId);
    if (entry) assertAdmitted(entry.site, entry.allowlist, address);
  }

  private allowlistOf(siteId: number): Promise<{ site: Site; allowlist: AddressAllowlist } | null> {
    const now = this.ctx.now();
    const cached = this.cache.get(siteId);
    if (cached && cached.until > now) return cached.entry;
    const entry = this.ctx.store.getSite(siteId).then((site) => (site ? { site, allowlist: new AddressAllowlist(site.allowCidrs) } : null));
    this.cache.set(siteId, { until: now + ALLOWLIST_TTL_MS, entry });
    entry.catch(() => {
      if (this.cache.get(siteId)?.entry === entry) this.cache.delete(siteId); // a failed read is not remembered
    });
    return entry;
  }
}
