import { createHash } from 'node:crypto';

/** A numbered schema change. Migrations are append-only: never edit one that has shipped. */
export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export function checksum(m: Migration): string {
  return createHash('sha256').update(m.sql).digest('hex');
}

/**
 * The migrations still to apply to a database that has applied `done` (version → checksum).
 * Throws before anything is applied if the database has a migration this build does not know
 * (an older boxgrid on newer data) or one of its applied migrations was edited since.
 */
export function pendingMigrations(migrations: readonly Migration[], done: ReadonlyMap<number, string>): Migration[] {
  const known = new Set(migrations.map((m) => m.version));
  for (const v of done.keys()) {
    if (!known.has(v)) throw new Error(`database has migration ${v}, which this boxgrid does not know: is it older than the data?`);
  }
  for (const m of migrations) {
    const have = done.get(m.version);
    if (have !== undefined && have !== checksum(m)) throw new Error(`migration ${m.version} (${m.name}) was edited after it was applied; migrations are append-only`);
  }
  return migrations.filter((m) => !done.has(m.version));
}

/** Throws unless versions run 1, 2, 3 … without gaps or repeats (caught by tests, not in production). */
export function assertWellFormed(migrations: readonly Migration[]): void {
  migrations.forEach((m, i) => {
    if (m.version !== i + 1) throw new Error(`migration ${m.name} has version ${m.version}, expected ${i + 1}`);
  });
}
