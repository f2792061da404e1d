import { createPrivateKey, X509Certificate } from 'node:crypto';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { openBlobStore } from '../blobs/open-blob-store.js';
import { DEFAULT_LIMITS, DEFAULT_TIMING, type AgentTiming, type Limits, type ServiceContext } from '../service/context.js';
import { EventBus } from '../service/events.js';
import { LeaseSweeper } from '../service/lease-sweeper.js';
import { WorkflowLoop } from '../service/workflow-loop.js';
import { ContainerValidatorRunner, ValidatorLoop } from '../service/validator-loop.js';
import type { TaskRuntime } from '../agent/runtime.js';
import { DEFAULT_SCHEDULING, type SchedulingOptions } from '../scheduling/options.js';
import { AccessService } from '../service/access.js';
import { newTransferKeyText, parseTransferKey, TRANSFER_KEY_BYTES } from '../service/transfer-signature.js';
import { describeDatabase, openStore } from '../store/open-store.js';
import type { Store } from '../store/store.js';
import { dataFiles } from './data-files.js';
import { buildHttpServer, DEFAULT_HTTP, type Api, type HttpOptions } from './server.js';

/** How long a closing server waits for in-flight requests before it cuts their connections. */
const CLOSE_GRACE_MS = 10_000;

export interface ServerOptions {
  dataDir: string;
  host: string;
  port: number;
  logger?: boolean | object;
  limits?: Partial<Limits>;
  timing?: Partial<AgentTiming>;
  scheduling?: Partial<SchedulingOptions>;
  http?: Partial<HttpOptions>;
  /**
   * Where the state lives: a postgres:// URL (several servers may share it) or a SQLite file.
   * Default: boxgrid.db in the data dir.
   */
  database?: string;
  /** Most database connections this server opens (PostgreSQL only). */
  databaseConnections?: number;
  /**
   * Where blobs live: a directory (several servers share one on a common filesystem) or
   * `s3://BUCKET[/PREFIX][?endpoint=URL]`. Default: blobs/ in the data dir.
   */
  blobDir?: string;
  /** Use this store instead of opening `database` (tests). */
  store?: Store;
  /**
   * The key transfer URLs are signed with (`BOXGRID_TRANSFER_KEY`, which the CLI reads).
   * Default: transfer.key in the data dir, made on the first start. Servers sharing a
   * database must have the same one.
   */
  transferKey?: Buffer;
  /** PEM certificate (chain) and private key: serve HTTPS (see `loadTls`). Default: plain HTTP. */
  tls?: { cert: string; key: string };
  /**
   * The runtime apps' validator containers run in (service/validator-loop.ts); absent, the
   * jobs of apps with a validator wait for a server that has one.
   */
  validators?: TaskRuntime;
}

/** Where a TLS file came from, as errors name it: the flag or the environment variable. */
export interface TlsFile {
  path: string;
  from: string;
}

/**
 * Reads and checks the server's certificate and key, so that a wrong file is a sentence
 * naming it at start and not a TLS failure at the first connection. Only read at start: a
 * renewed certificate takes a restart.
 */
export async function loadTls(cert: TlsFile, key: TlsFile): Promise<{ cert: string; key: string }> {
  const read = (f: TlsFile) =>
    readFile(f.path, 'utf8').catch((e: NodeJS.ErrnoException) => {
      throw new Error(`${f.from} ${f.path}: cannot read it (${e.code ?? e.message})`);
    });
  const [certPem, keyPem] = [await read(cert), await read(key)];
  let x509: X509Certificate;
  try {
    x509 = new X509Certificate(certPem);
  } catch {
    throw new Error(`${cert.from} ${cert.path}: not a PEM certificate (-----BEGIN CERTIFICATE-----)`);
  }
  let privateKey;
  try {
    privateKey = createPrivateKey(keyPem);
  } catch {
    throw new Error(`${key.from} ${key.path}: not an unencrypted PEM private key (-----BEGIN PRIVATE KEY-----)`);
  }
  if (!x509.checkPrivateKey(privateKey)) throw new Error(`${key.from} ${key.path} is not the key of the certificate ${cert.path}`);
  return { cert: certPem, key: keyPem };
}

export interface RunningServer {
  url: string;
  app: Api;
  ctx: ServiceContext;
  /** Expires leases on its own every `timing.sweepSeconds`; `sweep()` runs a pass now (tests, tools). */
  sweeper: LeaseSweeper;
  /** Moves running workflows along (service/workflow-loop.ts). */
  workflowLoop: WorkflowLoop;
  /** The validator loop, when the server runs validators. */
  validatorLoop: ValidatorLoop | null;
  /** The bootstrap admin token if this start created it (first start only). */
  adminToken: string | null;
  close(): Promise<void>;
}

/**
 * The transfer key: the one given (BOXGRID_TRANSFER_KEY), else the data dir's transfer.key,
 * made (32 random bytes, base64, mode 0600) when it is missing — or empty, as a crash between
 * creating and writing it would leave it. `created` says the key is new.
 */
async function loadTransferKey(file: string, given: Buffer | undefined): Promise<{ key: Buffer; created: boolean }> {
  if (given !== undefined) {
    if (given.length < TRANSFER_KEY_BYTES) throw new Error(`the transfer key has ${given.length} bytes; it needs at least ${TRANSFER_KEY_BYTES}`);
    return { key: given, created: false };
  }
  let text = await readFile(file, 'utf8').catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return '';
    throw e;
  });
  const created = text.trim() === '';
  if (created) {
    text = newTransferKeyText();
    await writeFile(file, text, { mode: 0o600 });
  }
  await chmod(file, 0o600); // mode above applies only when the file is new
  return { key: parseTransferKey(text, file), created };
}

/**
 * Opens (or creates) a data dir, migrates the store, creates the first admin on first start,
 * and listens. Safe to call again after a crash: migrations and bootstrap are idempotent.
 */
export async function startServer(opts: ServerOptions): Promise<RunningServer> {
  const files = dataFiles(opts.dataDir);
  await mkdir(opts.dataDir, { recursive: true, mode: 0o700 });
  // Every start, not only the first: the store holds every project's data, and mkdir's mode
  // does nothing to a directory that already existed.
  await chmod(opts.dataDir, 0o700);
  const transfer = await loadTransferKey(files.transferKey, opts.transferKey);
  const database = opts.database ?? files.database;
  const store = opts.store ?? (await openStore(database, { maxConnections: opts.databaseConnections }));
  try {
    await store.migrate();
  } catch (e) {
    await store.close().catch(() => {});
    throw new Error(`the database ${opts.store ? '' : describeDatabase(database) + ' '}cannot be used: ${(e as Error).message}`);
  }
  const ctx: ServiceContext = {
    store,
    blobs: await openBlobStore(opts.blobDir ?? files.blobs),
    events: new EventBus(),
    now: Date.now,
    limits: { ...DEFAULT_LIMITS, ...opts.limits },
    timing: { ...DEFAULT_TIMING, ...opts.timing },
    scheduling: { ...DEFAULT_SCHEDULING, ...opts.scheduling },
    random: Math.random,
    transferKey: transfer.key,
  };
  if (ctx.blobs.maxBlobBytes !== undefined && ctx.limits.maxBlobBytes > ctx.blobs.maxBlobBytes) {
    await store.close();
    throw new Error(`--max-blob-bytes ${ctx.limits.maxBlobBytes} is more than this blob store holds in one blob (${ctx.blobs.maxBlobBytes})`);
  }
  const adminToken = await new AccessService(ctx).bootstrap(async (token) => {
    await writeFile(files.adminToken, token + '\n', { mode: 0o600 });
    await chmod(files.adminToken, 0o600); // mode above applies only when the file is new
  });
  await ctx.blobs.sweepTemporary?.(ctx.now() - 3600_000);
  // Servers sharing the database see each other's events (a watcher may use any of them).
  const relay = store.openEventRelay?.();
  if (relay) await ctx.events.connect(relay);
  const sweeper = new LeaseSweeper(ctx);
  const app = await buildHttpServer(ctx, { ...DEFAULT_HTTP, logger: opts.logger ?? false, ...opts.http, ...(opts.tls ? { tls: opts.tls } : {}) });
  const workflowLoop = new WorkflowLoop(ctx, 5, (m) => app.log.warn(m));
  const validatorLoop = opts.validators ? new ValidatorLoop(ctx, new ContainerValidatorRunner(ctx, opts.validators), 5, (m) => app.log.warn(m)) : null;
  // A store that relays events is one several servers may share (PostgreSQL): a key of this
  // server's own would make the others refuse the transfer URLs it signs, and the other way round.
  if (transfer.created && store.openEventRelay) {
    app.log.warn(
      `created the transfer key ${files.transferKey}, which only this server has: servers sharing a database must share one ` +
        'transfer key, or each refuses the transfer URLs (of Kubernetes task pods) the others sign. Give every server the same ' +
        'BOXGRID_TRANSFER_KEY (e.g. the contents of this file); see docs/operations.md, "The transfer key"',
    );
  }
  // Every socket, also those the HTTP layer does not know yet (a TLS handshake under way, which
  // closeAllConnections leaves alone): the close below cuts them all after its grace period.
  const sockets = new Set<Socket>();
  app.server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await app.listen({ host: opts.host, port: opts.port });
  sweeper.start();
  workflowLoop.start();
  validatorLoop?.start();
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : opts.port;
  const host = opts.host.includes(':') ? `[${opts.host}]` : opts.host;
  const url = `${opts.tls ? 'https' : 'http'}://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`;
  await writeFile(files.serverInfo, JSON.stringify({ url, pid: process.pid }) + '\n', { mode: 0o600 });
  let closed = false;
  return {
    url, app, ctx, sweeper, workflowLoop, validatorLoop, adminToken,
    async close() {
      if (closed) return;
      closed = true;
      await sweeper.stop();
      await workflowLoop.stop();
      await validatorLoop?.stop();
      // Node closes the connections that are idle when closing starts, once: one that finishes
      // a response (a long download) afterwards would keep the close waiting for its
      // keep-alive timeout. So idle ones are closed again until the server is, and whatever is
      // still open after a grace period is cut.
      const sweepIdle = setInterval(() => app.server.closeIdleConnections(), 250);
      const cut = setTimeout(() => {
        app.server.closeAllConnections();
        for (const socket of sockets) socket.destroy();
      }, CLOSE_GRACE_MS);
      try {
        await app.close();
      } finally {
        clearInterval(sweepIdle);
        clearTimeout(cut);
      }
      await ctx.events.disconnect();
      await store.close();
      await rm(files.serverInfo, { force: true });
    },
  };
}
