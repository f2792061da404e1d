import { Type } from '@sinclair/typebox';
import { currentHost, type Services } from '../services.js';
import { Resources } from '../schemas.js';
import type { Api } from '../server.js';

/**
 * The agent protocol, /agent/v1, authenticated by host credentials only. This issue gives it
 * its auth boundary and `self`; enrolment, work requests, heartbeats and reports come with the
 * agent.
 */
export function registerAgentRoutes(app: Api, _s: Services): void {
  app.get(
    '/self',
    { schema: { tags: ['agent'], response: { 200: Type.Object({ id: Type.Integer(), name: Type.String(), state: Type.String(), resources: Resources, platform: Type.String() }) } } },
    async (req) => {
      const h = currentHost(req);
      return { id: h.id, name: h.name, state: h.state, resources: h.resources, platform: h.platform };
    },
  );
}
