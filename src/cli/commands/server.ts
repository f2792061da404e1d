import type { Command } from 'commander';
import { defaultDataDir, DEFAULT_PORT } from '../config.js';
import { CliExit, parseNumber } from '../output.js';

export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text) ?? /^()()(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port > 65535) throw new CliExit(2, `error: --listen "${text}" is not HOST:PORT (e.g. 127.0.0.1:${DEFAULT_PORT})`);
  return { host: m[1] || m[2] || '127.0.0.1', port };
}

export function registerServer(program: Command): void {
  program
    .command('server')
    .description('run the boxgrid server (API, event stream, blob store) on a data dir')
    .option('--data <dir>', 'data directory (database, blobs, admin token)', defaultDataDir())
    .option('--listen <host:port>', 'address to listen on', `127.0.0.1:${DEFAULT_PORT}`)
    .option('--log-level <level>', 'fatal, error, warn, info, debug', 'info')
    .option('--max-blob-bytes <n>', 'largest blob upload in bytes', (v) => parseNumber(v, '--max-blob-bytes'))
    .option('--lease <seconds>', 'how long a task stays with a host that stopped heartbeating (default 180)', (v) => parseNumber(v, '--lease'))
    .option('--heartbeat <seconds>', 'how often agents heartbeat (default 30; keep it well under --lease)', (v) => parseNumber(v, '--heartbeat'))
    .action(async (o: { data: string; listen: string; logLevel: string; maxBlobBytes?: number; lease?: number; heartbeat?: number }) => {
      if (o.lease !== undefined && o.heartbeat !== undefined && o.heartbeat * 2 > o.lease) {
        throw new CliExit(2, `error: --heartbeat ${o.heartbeat} must be at most half of --lease ${o.lease}, or one late heartbeat loses the task`);
      }
      const { host, port } = parseListen(o.listen);
      // Loaded on demand: the server's dependencies would slow every other command's start.
      const { startServer } = await import('../../server/runtime.js');
      const server = await startServer({
        dataDir: o.data, host, port,
        logger: { level: o.logLevel },
        ...(o.maxBlobBytes === undefined ? {} : { limits: { maxBlobBytes: o.maxBlobBytes } }),
        timing: {
          ...(o.lease === undefined ? {} : { leaseSeconds: o.lease }),
          ...(o.heartbeat === undefined ? {} : { heartbeatSeconds: o.heartbeat }),
        },
      });
      // One write, so that readers of a pipe see the banner whole (writes under 4 KiB are atomic).
      process.stderr.write(
        `boxgrid server listening on ${server.url} (data dir ${o.data})\n` +
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
