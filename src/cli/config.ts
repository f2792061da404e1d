import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { BoxgridClient, readCaFile } from '../client/client.js';
import { BoxgridError } from '../domain/errors.js';
import { dataFiles } from '../server/data-files.js';
import { CliExit } from './output.js';

export interface GlobalOptions {
  url?: string;
  token?: string;
  project?: string;
  config?: string;
  json?: boolean;
  caFile?: string;
}

export interface Connection {
  url: string;
  token: string | undefined;
  project: string;
  /** PEM file of the CA the server's certificate must chain to; none: Node's bundled roots. */
  caFile: string | undefined;
  /** Where each value came from, for error messages ("token from BOXGRID_TOKEN"). */
  sources: { url: string; token: string; caFile: string };
}

export const DEFAULT_PORT = 8470;
export const DEFAULT_URL = `http://127.0.0.1:${DEFAULT_PORT}`;

export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.BOXGRID_DATA) return env.BOXGRID_DATA;
  return join(env.XDG_DATA_HOME ?? join(homedir(), '.local', 'share'), 'boxgrid');
}

export function defaultConfigFile(env: NodeJS.ProcessEnv = process.env): string {
  return env.BOXGRID_CONFIG ?? join(env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), 'boxgrid', 'config.json');
}

interface FileConfig {
  url?: string;
  token?: string;
  project?: string;
  /** Relative to the config file's directory. */
  caFile?: string;
}

function readJson(path: string): Record<string, unknown> | null {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new BoxgridError('invalid_request', `cannot read ${path}: ${(e as Error).message}`);
  }
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return null;
  }
}

/**
 * Where to connect and as whom: flags, then environment (BOXGRID_URL, BOXGRID_TOKEN,
 * BOXGRID_PROJECT, BOXGRID_CA_FILE), then the config file, then a local server's data dir (its server.json
 * and admin.token), so `boxgrid server` in one terminal and any command in another just work.
 */
export function resolveConnection(flags: GlobalOptions, env: NodeJS.ProcessEnv = process.env): Connection {
  const configPath = flags.config ?? defaultConfigFile(env);
  const file = (readJson(configPath) ?? {}) as FileConfig;
  const local = dataFiles(defaultDataDir(env));
  const localInfo = readJson(local.serverInfo) as { url?: string } | null;

  const pick = (flag: string | undefined, envName: string, fileValue: string | undefined, localValue: string | undefined): [string | undefined, string] => {
    if (flag !== undefined) return [flag, 'the command line'];
    if (env[envName]) return [env[envName], envName];
    if (fileValue !== undefined) return [fileValue, configPath];
    if (localValue !== undefined) return [localValue, defaultDataDir(env)];
    return [undefined, 'nowhere'];
  };
  const [url, urlSource] = pick(flags.url, 'BOXGRID_URL', file.url, localInfo?.url);
  const finalUrl = url ?? DEFAULT_URL;
  // The local admin token is only offered to the local server it belongs to.
  const localToken = localInfo?.url === finalUrl ? readText(local.adminToken) ?? undefined : undefined;
  const [token, tokenSource] = pick(flags.token, 'BOXGRID_TOKEN', file.token, localToken);
  const [project] = pick(flags.project, 'BOXGRID_PROJECT', file.project, undefined);
  const [caFile, caFileSource] = pick(flags.caFile, 'BOXGRID_CA_FILE', file.caFile === undefined ? undefined : resolve(dirname(configPath), file.caFile), undefined);
  return {
    url: finalUrl,
    token,
    project: project ?? 'default',
    caFile,
    sources: { url: url === undefined ? 'the default' : urlSource, token: tokenSource, caFile: caFileSource },
  };
}

/** The CA the connection trusts, read now: a CA file that cannot be used is a usage error saying where it was named. */
export function tlsFor(c: Connection): { ca?: string } {
  if (c.caFile === undefined) return {};
  try {
    return { ca: readCaFile(c.caFile) };
  } catch (e) {
    throw new CliExit(2, `error: ${(e as Error).message} (CA file from ${c.sources.caFile})`);
  }
}

export function clientFor(c: Connection): BoxgridClient {
  return new BoxgridClient({ url: c.url, ...(c.token === undefined ? {} : { token: c.token }), ...tlsFor(c) });
}
