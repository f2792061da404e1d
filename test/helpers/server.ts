import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type RunningServer, type ServerOptions } from '../../src/server/runtime.js';

export interface TestServer extends RunningServer {
  dataDir: string;
  adminToken: string;
  /** fetch against the server with a bearer token (admin's by default). */
  call(method: string, path: string, opts?: { token?: string | null; body?: unknown; headers?: Record<string, string>; raw?: BodyInit }): Promise<TestResponse>;
  /** Creates a user with a token and (optionally) a role in a project, creating the project if needed. */
  userWithRole(name: string, project?: string, role?: 'admin' | 'submitter' | 'viewer'): Promise<string>;
  stop(): Promise<void>;
}

export interface TestResponse {
  status: number;
  headers: Headers;
  body: any;
  text: string;
}

/** A real server on 127.0.0.1 with its own fresh data dir. */
export async function startTestServer(opts: Partial<ServerOptions> = {}): Promise<TestServer> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'boxgrid-test-')));
  const server = await startServer({ dataDir, host: '127.0.0.1', port: 0, logger: false, ...opts });
  if (!server.adminToken) throw new Error('expected a fresh data dir');
  const adminToken = server.adminToken;
  const call: TestServer['call'] = async (method, path, o = {}) => {
    const headers: Record<string, string> = { ...(o.headers ?? {}) };
    const token = o.token === undefined ? adminToken : o.token;
    if (token !== null) headers.authorization = `Bearer ${token}`;
    let body: BodyInit | undefined = o.raw;
    if (o.body !== undefined) {
      headers['content-type'] ??= 'application/json';
      body = typeof o.body === 'string' ? o.body : JSON.stringify(o.body);
    }
    const res = await fetch(server.url + path, { method, headers, ...(body === undefined ? {} : { body }) });
    const text = await res.text();
    let parsed: unknown = undefined;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    return { status: res.status, headers: res.headers, body: parsed, text };
  };
  const projects = new Set<string>(['default']);
  return {
    ...server,
    dataDir,
    adminToken,
    call,
    async userWithRole(name, project, role) {
      const u = await call('POST', '/v1/users', { body: { name } });
      if (u.status !== 201) throw new Error(`create user: ${u.text}`);
      if (project !== undefined) {
        if (!projects.has(project)) {
          const p = await call('POST', '/v1/projects', { body: { name: project } });
          if (p.status !== 201) throw new Error(`create project: ${p.text}`);
          projects.add(project);
        }
        const m = await call('PUT', `/v1/projects/${project}/members/${name}`, { body: { role: role ?? 'submitter' } });
        if (m.status !== 200) throw new Error(`grant: ${m.text}`);
      }
      const t = await call('POST', '/v1/tokens', { body: { user: name } });
      if (t.status !== 201) throw new Error(`token: ${t.text}`);
      return t.body.token as string;
    },
    async stop() {
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}
