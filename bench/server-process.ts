/**
 * A real boxgrid server for the benchmarks, run as a child process so that its CPU, memory and
 * event loop are its own. Usage: node dist/bench/server-process.js <fresh-data-dir>
 *
 * Prints one JSON line on stdout once listening: {"url", "adminToken", "pid"}. It stops (and
 * closes the store cleanly) on SIGTERM/SIGINT or when its stdin closes, so it cannot outlive a
 * benchmark process that dies without cleaning up. The data dir belongs to the caller, which
 * removes it. An optional second argument, JSON, overrides the agent timing (`ServerOptions.timing`).
 */
import { startServer, type ServerOptions } from '../src/server/runtime.js';

async function main(): Promise<void> {
  const dataDir = process.argv[2];
  if (!dataDir) throw new Error('usage: server-process <data-dir> [timing-json]');
  const timing = process.argv[3] ? (JSON.parse(process.argv[3]) as ServerOptions['timing']) : undefined;
  // BENCH_DATABASE_URL: run on that PostgreSQL database instead of the data dir's SQLite file.
  const database = process.env.BENCH_DATABASE_URL;
  const server = await startServer({ dataDir, host: '127.0.0.1', port: 0, logger: false, ...(timing ? { timing } : {}), ...(database ? { database } : {}) });
  if (server.adminToken === null) throw new Error(`${dataDir} is not a fresh data dir`);

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
