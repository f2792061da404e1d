import type { Store } from './store.js';

/** Where a server keeps its state: a PostgreSQL URL, or the path of a SQLite file. */
export function isPostgresUrl(database: string): boolean {
  return /^postgres(ql)?:\/\//i.test(database);
}

/**
 * Opens the store a `--db` value names. Each adapter is loaded only when used, so a server on
 * SQLite never loads the PostgreSQL driver, and the other way round.
 */
export async function openStore(database: string, opts: { maxConnections?: number } = {}): Promise<Store> {
  if (isPostgresUrl(database)) {
    const { PostgresStore } = await import('./postgres/postgres-store.js');
    return new PostgresStore({ connectionString: database, ...(opts.maxConnections === undefined ? {} : { maxConnections: opts.maxConnections }) });
  }
  const { SqliteStore } = await import('./sqlite/sqlite-store.js');
  return new SqliteStore(database);
}

/** The database for logs and banners: a URL's password is never shown. */
export function describeDatabase(database: string): string {
  if (!isPostgresUrl(database)) return database;
  try {
    const u = new URL(database);
    if (u.password) u.password = '***';
    u.searchParams.delete('password');
    return u.toString();
  } catch {
    return 'postgres://(unparsable URL)';
  }
}
