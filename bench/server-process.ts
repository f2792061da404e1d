/**
 * A real boxgrid server for the benchmarks, run as a child process so that its CPU, memory and
 * event loop are its own. Usage: node dist/bench/server-process.js <fresh-data-dir> [options-json]
 *
 * Prints one JSON line on stdout once listening: {"url", "adminToken", "pid"}. It stops (and
 * closes the store cleanly) on SIGTERM/SIGINT or when its stdin closes, so it cannot outlive a
 * benchmark process that dies without cleaning up. The data dir belongs to the caller, which
 * removes it. Options: `timing` overrides the agent timing (`ServerOptions.timing`), `database`
 * a postgres:// URL to use instead of the data dir's SQLite file, `joining` says that other
 * servers already use that database (so this one bootstraps nothing and has no admin token).
 */
import { startServer, type ServerOptions } from '../src/server/runtime.js';

interface Options {
  timing?: ServerOptions['timing'];
  database?: string;
  joining?: boolean;
}

async function main(): Promise<void> {
  const dataDir = process.argv[2];
  if (!dataDir) throw new Error('usage: server-process <data-dir> [options-json]');
  const o = (process.argv[3] ? JSON.parse(process.argv[3]) : {}) as Options;
  const server = await startServer({
    dataDir, host: '127.0.0.1', port: 0, logger: false, ...(o.timing ? { timing: o.timing } : {}), ...(o.database ? { database: o.database } : {}),
  });
  if (server.adminToken === null && !o.joining) throw new Error(`${dataDir} is not a fresh data dir (or its database is not fresh)`);

  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    const force = setTimeout(() => process.exit(1), 5000);
    force.unref();
    server.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdin.on('end', stop);
  process.stdin.on('error', stop);
  process.stdin.resume();

  process.stdout.write(JSON.stringify({ url: server.url, adminToken: server.adminToken, pid: process.pid }) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`server-process: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  process.exit(1);
});
