import type { Command } from 'commander';
import { defaultDataDir, DEFAULT_PORT } from '../config.js';
import { CliExit, parseNumber } from '../output.js';
import { DEFAULT_SCHEDULING, type SchedulingOptions } from '../../scheduling/options.js';
import { parseTransferKey } from '../../service/transfer-signature.js';

export /** The engine validator containers run in (owner "validator": agents on the same engine leave them alone). */
async function validatorEngine(): Promise<import('../../agent/runtime.js').TaskRuntime> {
  const { DockerRuntime } = await import('../../agent/runtimes/docker-runtime.js');
  const runtime = new DockerRuntime({ owner: 'validator' });
  if ((await runtime.version()) === null) {
    throw new CliExit(2, `error: --validators needs a container engine, and none answers at ${process.env.DOCKER_HOST ?? '/var/run/docker.sock'}. ` +
      'Start one (e.g. `sudo systemctl start docker`) or leave --validators to another server.');
  }
  return runtime;
}

function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text) ?? /^()()(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new CliExit(2, `error: --listen "${text}" is not HOST:PORT (e.g. 127.0.0.1:${DEFAULT_PORT})`);
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

interface ServerFlags {
  data: string;
  validators?: boolean;
  trustProxy?: string;
  db?: string;
  dbConnections?: number;
  blobs?: string;
  listen: string;
  logLevel: string;
  maxBlobBytes?: number;
  lease?: number;
  heartbeat?: number;
  policy?: string;
  retryBackoff?: number;
  retryBackoffMax?: number;
  hostFailures?: number;
  hostCooldown?: number;
  starvation?: number;
  speculation?: number;
  speculateAfter?: number;
  tlsCert?: string;
  tlsKey?: string;
}

/**
 * The certificate and key files, from the flags or else BOXGRID_TLS_CERT / BOXGRID_TLS_KEY,
 * each named by where it came from; none: plain HTTP. One without the other is a usage error.
 */
export function tlsFilesFrom(o: ServerFlags, env: NodeJS.ProcessEnv = process.env): { cert: { path: string; from: string }; key: { path: string; from: string } } | null {
  const pick = (flag: string | undefined, flagName: string, envName: string) =>
    flag !== undefined ? { path: flag, from: flagName } : env[envName] ? { path: env[envName]!, from: envName } : undefined;
  const cert = pick(o.tlsCert, '--tls-cert', 'BOXGRID_TLS_CERT');
  const key = pick(o.tlsKey, '--tls-key', 'BOXGRID_TLS_KEY');
  if (cert && key) return { cert, key };
  if (cert) throw new CliExit(2, `error: ${cert.from} needs --tls-key (or BOXGRID_TLS_KEY): HTTPS takes both a certificate and its key`);
  if (key) throw new CliExit(2, `error: ${key.from} needs --tls-cert (or BOXGRID_TLS_CERT): HTTPS takes both a certificate and its key`);
  return null;
}

/** The scheduling flags given, laid over the defaults (src/scheduling/options.ts). */
export function schedulingFrom(o: ServerFlags): Partial<SchedulingOptions> {
  if (o.policy !== undefined && o.policy !== 'fair' && o.policy !== 'fifo') throw new CliExit(2, `error: --policy must be "fair" or "fifo", not "${o.policy}"`);
  for (const [flag, v] of Object.entries({ '--retry-backoff': o.retryBackoff, '--retry-backoff-max': o.retryBackoffMax, '--host-cooldown': o.hostCooldown, '--starvation': o.starvation, '--speculation': o.speculation, '--speculate-after': o.speculateAfter })) {
    if (v !== undefined && v < 0) throw new CliExit(2, `error: ${flag} must not be negative`);
  }
  if (o.hostFailures !== undefined && (o.hostFailures < 1 || !Number.isInteger(o.hostFailures))) throw new CliExit(2, 'error: --host-failures must be a whole number, at least 1');
  const out: Partial<SchedulingOptions> = {};
  if (o.policy !== undefined) out.policy = o.policy as SchedulingOptions['policy'];
  if (o.retryBackoff !== undefined) out.backoffBaseSeconds = o.retryBackoff;
  if (o.retryBackoffMax !== undefined) out.backoffMaxSeconds = o.retryBackoffMax;
  if (o.hostFailures !== undefined) out.hostFailureLimit = o.hostFailures;
  if (o.hostCooldown !== undefined) out.hostCooldownSeconds = o.hostCooldown;
  if (o.starvation !== undefined) out.starvationSeconds = o.starvation;
  if (o.speculation !== undefined || o.speculateAfter !== undefined) {
    const d = DEFAULT_SCHEDULING.speculation;
    out.speculation = {
      ...d, enabled: o.speculation !== 0, maxActive: o.speculation ?? d.maxActive, minRunSeconds: o.speculateAfter ?? d.minRunSeconds,
    };
  }
  return out;
}

export function registerServer(program: Command): void {
  program
    .command('server')
    .description('run the boxgrid server (API, event stream, blob store) on a data dir')
    .option('--data <dir>', 'data directory (database, blobs, admin token, transfer.key unless $BOXGRID_TRANSFER_KEY gives the key)', defaultDataDir())
    .option('--db <url-or-file>', 'postgres://… URL (several servers may share the database) or a SQLite file; default: $BOXGRID_DATABASE_URL, else boxgrid.db in the data dir')
    .option('--db-connections <n>', 'most PostgreSQL connections this server opens (default 10)', (v) => parseNumber(v, '--db-connections'))
    .option('--blobs <dir-or-s3-url>', 'where blobs live: a directory (servers sharing a database must share it) or s3://BUCKET[/PREFIX][?endpoint=URL&pathStyle=true] (agents then use pre-signed URLs of the bucket: &publicEndpoint=URL for the address they reach it at, &presign=false to keep their bytes going through the servers); default: blobs/ in the data dir')
    .option('--listen <host:port>', 'address to listen on', `127.0.0.1:${DEFAULT_PORT}`)
    .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate (chain); needs --tls-key (env BOXGRID_TLS_CERT; default: plain HTTP)')
    .option('--tls-key <file>', 'the certificate\'s PEM private key, unencrypted (env BOXGRID_TLS_KEY); read at start only: a renewed certificate takes a restart')
    .option('--trust-proxy <addresses>', 'behind a reverse proxy: its addresses or CIDRs, comma-separated; requests from them are taken to be from the client X-Forwarded-For names (what site allowlists check). Default: the connection\'s own address')
    .option('--validators', 'run apps\' validator containers on this machine\'s Docker engine (jobs of apps with a validator wait for a server started with it)')
    .option('--log-level <level>', 'fatal, error, warn, info, debug', 'info')
    .option('--max-blob-bytes <n>', 'largest blob upload in bytes', (v) => parseNumber(v, '--max-blob-bytes'))
    .option('--lease <seconds>', 'how long a task stays with a host that stopped heartbeating (default 180)', (v) => parseNumber(v, '--lease'))
    .option('--heartbeat <seconds>', 'how often agents heartbeat (default 30; keep it well under --lease)', (v) => parseNumber(v, '--heartbeat'))
    .option('--policy <name>', 'scheduling policy: "fair" (fair share, packing, reservations, speculation) or "fifo" (first fit in submission order)')
    .option('--retry-backoff <seconds>', 'a requeued job first waits this long, doubling with each attempt (default 10; 0: no backoff)', (v) => parseNumber(v, '--retry-backoff'))
    .option('--retry-backoff-max <seconds>', 'longest backoff (default 600)', (v) => parseNumber(v, '--retry-backoff-max'))
    .option('--host-failures <n>', 'failures of one app in a row that send a host into a cool-down for that app (default 3)', (v) => parseNumber(v, '--host-failures'))
    .option('--host-cooldown <seconds>', 'how long that cool-down lasts (default 3600)', (v) => parseNumber(v, '--host-cooldown'))
    .option('--starvation <seconds>', 'a job waiting this long overrides image affinity and gets a host reserved (default 600)', (v) => parseNumber(v, '--starvation'))
    .option('--speculation <n>', 'most speculative duplicates of slow tasks running at once (default 1000; 0: none)', (v) => parseNumber(v, '--speculation'))
    .option('--speculate-after <seconds>', 'a job is copied only once its newest task has run this long (default 60)', (v) => parseNumber(v, '--speculate-after'))
    .action(async (o: ServerFlags) => {
      if (o.lease !== undefined && o.heartbeat !== undefined && o.heartbeat * 2 > o.lease) {
        throw new CliExit(2, `error: --heartbeat ${o.heartbeat} must be at most half of --lease ${o.lease}, or one late heartbeat loses the task`);
      }
      const { host, port } = parseListen(o.listen);
      const tlsFiles = tlsFilesFrom(o);
      // Loaded on demand: the server's dependencies would slow every other command's start.
      const { startServer, loadTls } = await import('../../server/runtime.js');
      let tls: { cert: string; key: string } | undefined;
      try {
        tls = tlsFiles ? await loadTls(tlsFiles.cert, tlsFiles.key) : undefined;
      } catch (e) {
        throw new CliExit(2, `error: ${(e as Error).message}`);
      }
      const { describeDatabase } = await import('../../store/open-store.js');
      // From the environment rather than a flag, a password stays out of the process list.
      const database = o.db ?? (process.env.BOXGRID_DATABASE_URL || undefined);
      if (o.dbConnections !== undefined && (!Number.isInteger(o.dbConnections) || o.dbConnections < 1)) {
        throw new CliExit(2, 'error: --db-connections must be a whole number, at least 1');
      }
      // The key transfer URLs are signed with: servers sharing a database must share it.
      let transferKey: Buffer | undefined;
      try {
        transferKey = process.env.BOXGRID_TRANSFER_KEY ? parseTransferKey(process.env.BOXGRID_TRANSFER_KEY, 'BOXGRID_TRANSFER_KEY') : undefined;
      } catch (e) {
        throw new CliExit(2, `error: ${(e as Error).message}`);
      }
      const server = await startServer({
        dataDir: o.data, host, port,
        ...(tls === undefined ? {} : { tls }),
        ...(transferKey === undefined ? {} : { transferKey }),
        ...(database === undefined ? {} : { database }),
        ...(o.dbConnections === undefined ? {} : { databaseConnections: o.dbConnections }),
        ...(o.blobs === undefined ? {} : { blobDir: o.blobs }),
        logger: { level: o.logLevel },
        ...(o.trustProxy === undefined ? {} : { http: { trustProxy: o.trustProxy } }),
        ...(o.maxBlobBytes === undefined ? {} : { limits: { maxBlobBytes: o.maxBlobBytes } }),
        timing: {
          ...(o.lease === undefined ? {} : { leaseSeconds: o.lease }),
          ...(o.heartbeat === undefined ? {} : { heartbeatSeconds: o.heartbeat }),
        },
        scheduling: schedulingFrom(o),
        ...(o.validators ? { validators: await validatorEngine() } : {}),
      });
      // One write, so that readers of a pipe see the banner whole (writes under 4 KiB are atomic).
      process.stderr.write(
        `boxgrid server listening on ${server.url} (data dir ${o.data}${database === undefined ? '' : `, database ${describeDatabase(database)}`})\n` +
          `dashboard: ${server.url}/dashboard/ (sign in with a user token)\n` +
          (server.adminToken
            ? `first start: created operator "admin" and project "default".\n` +
              `admin token (shown once, also saved with mode 0600 in ${o.data}/admin.token):\n${server.adminToken}\n`
            : ''),
      );
      // Designed shutdown: stop accepting, finish in-flight requests, close the store.
      let stopping = false;
      const stop = (signal: string): void => {
        if (stopping) return;
        stopping = true;
        process.stderr.write(`${signal}: shutting down\n`);
        server.close().then(() => process.exit(0), () => process.exit(1));
      };
      process.on('SIGINT', () => stop('SIGINT'));
      process.on('SIGTERM', () => stop('SIGTERM'));
    });
}
