import { Type } from '@sinclair/typebox';
import { MAX_ALLOW_CIDRS } from '../../domain/cidr.js';
import { checkName } from '../../service/access.js';
import { inPart } from '../http-errors.js';
import { currentUser, type Services } from '../services.js';
import type { Api } from '../server.js';

const iso = (ms: number) => new Date(ms).toISOString();

const AllowCidrs = Type.Array(Type.String({ maxLength: 64 }), {
  maxItems: MAX_ALLOW_CIDRS,
  description: 'client addresses the site\'s hosts may enrol and call from, e.g. "10.0.0.0/8", "2001:db8::/32" (a bare address is one host); empty: any address',
});

/** Sites (operators): where hosts belong, and the addresses they may come from. */
export function registerSiteRoutes(app: Api, s: Services): void {
  const tags = ['hosts'];
  app.get(
    '/sites',
    {
      schema: {
        tags,
        description: 'Operators: every site with its address allowlist and how many active and revoked hosts it has.',
        response: {
          200: Type.Object({
            sites: Type.Array(Type.Object({ name: Type.String(), allowCidrs: Type.Array(Type.String()), activeHosts: Type.Integer(), revokedHosts: Type.Integer(), createdAt: Type.String() })),
          }),
        },
      },
    },
    async (req) => {
      const sites = await s.sites.list(currentUser(req));
      return { sites: sites.map((x) => ({ name: x.name, allowCidrs: x.allowCidrs, activeHosts: x.activeHosts, revokedHosts: x.revokedHosts, createdAt: iso(x.createdAt) })) };
    },
  );

  app.put(
    '/sites/:name',
    {
      schema: {
        tags, params: Type.Object({ name: Type.String({ maxLength: 63 }) }),
        body: Type.Object({ allowCidrs: Type.Optional(AllowCidrs) }, { additionalProperties: false }),
        description: 'Operators: set a site\'s address allowlist (the site is created if new). Enrolments and agent calls of its hosts from other addresses are refused (403).',
        response: { 200: Type.Object({ name: Type.String(), allowCidrs: Type.Array(Type.String()), createdAt: Type.String() }) },
      },
    },
    async (req) => {
      checkName(req.params.name, 'params/name');
      const site = await inPart('body', s.sites.put(currentUser(req), req.params.name, req.body.allowCidrs ?? []));
      return { name: site.name, allowCidrs: site.allowCidrs, createdAt: iso(site.createdAt) };
    },
  );
}
