import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Api } from '../server.js';

/**
 * The web dashboard's static files (docs/dashboard.md), public because they hold no data: the
 * page asks for a token and calls /v1 with it. Only the files read at start-up are served, from
 * memory, by exact name: nothing from the request reaches the filesystem, so there is no path
 * to traverse and no directory to list. Every answer forbids inline scripts and sniffing.
 */

/**
 * Where the assets live: src/server/dashboard/ of a checkout (found from the compiled module in
 * dist/src/server/routes/), else the copy `npm run build` puts beside it (dist/src/server/dashboard/:
 * the container image holds only dist/src).
 */
export function dashboardDir(): string | null {
  const candidates = ['../../../../src/server/dashboard/', '../dashboard/'].map((rel) => fileURLToPath(new URL(rel, import.meta.url)));
  return candidates.find((d) => existsSync(`${d}index.html`)) ?? null;
}

const TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  css: 'text/css; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  svg: 'image/svg+xml',
};

/** Security headers of every dashboard answer. */
export const DASHBOARD_HEADERS: Record<string, string> = {
  'content-security-policy': "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
};

export function loadDashboardFiles(dir: string): Map<string, { type: string; body: Buffer }> {
  const files = new Map<string, { type: string; body: Buffer }>();
  for (const name of readdirSync(dir)) {
    const m = /^[a-z0-9][a-z0-9-]*\.(html|css|js|svg)$/.exec(name);
    if (!m) continue;
    files.set(name, { type: TYPES[m[1]!]!, body: readFileSync(`${dir}${name}`) });
  }
  return files;
}

export function registerDashboardRoutes(app: Api): void {
  const dir = dashboardDir();
  const files = dir === null ? new Map<string, { type: string; body: Buffer }>() : loadDashboardFiles(dir);
  const schema = { hide: true } as const;
  const send = (name: string, reply: import('fastify').FastifyReply) => {
    const f = files.get(name);
    if (!f) return reply.code(404).headers(DASHBOARD_HEADERS).type('text/plain; charset=utf-8').send('not found\n');
    return reply.code(200).headers(DASHBOARD_HEADERS).type(f.type).send(f.body);
  };
  app.get('/dashboard', { schema }, async (_req, reply) => reply.code(308).headers(DASHBOARD_HEADERS).header('location', '/dashboard/').send());
  app.get('/dashboard/', { schema }, async (_req, reply) => {
    if (!files.has('index.html')) {
      return reply.code(404).headers(DASHBOARD_HEADERS).type('text/plain; charset=utf-8').send('the dashboard files are not installed (src/server/dashboard/)\n');
    }
    return send('index.html', reply);
  });
  app.get('/dashboard/:file', { schema }, async (req, reply) => send((req.params as { file: string }).file, reply));
}
