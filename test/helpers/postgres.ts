import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { PostgresStore } from '../../src/store/postgres/postgres-store.js';

/**
 * The PostgreSQL server the suites use: BOXGRID_TEST_POSTGRES, or the one
 * scripts/start-postgres.sh starts (a throwaway cluster on 127.0.0.1:55432).
 */
export const TEST_POSTGRES = process.env.BOXGRID_TEST_POSTGRES ?? 'postgres://boxgrid@127.0.0.1:55432/boxgrid';

/**
 * Whether the PostgreSQL suites can run. Locally a missing server skips them with the reason;
 * under CI=true it fails them, because a skipped suite in CI hides breakage.
 */
export async function postgresSuite(): Promise<{ skip: string | false }> {
  const client = new pg.Client({ connectionString: TEST_POSTGRES, connectionTimeoutMillis: 3000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return { skip: false };
  } catch (e) {
    const reason = `no PostgreSQL answers at ${TEST_POSTGRES} (${(e as Error).message})`;
    if (process.env.CI === 'true') throw new Error(`CI needs PostgreSQL for these tests, but ${reason}`);
    return { skip: `${reason} (start one with: bash scripts/start-postgres.sh)` };
  } finally {
    await client.end().catch(() => {});
  }
}

/** A schema of its own for one test: what a fresh database would be, at a fraction of the cost. */
export function freshSchemaName(): string {
  return `t_${randomBytes(6).toString('hex')}`;
}

export async function dropSchema(schema: string): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_POSTGRES });
  await client.connect();
  try {
    await client.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
  } finally {
    await client.end();
  }
}

/** A fresh, unmigrated PostgresStore in a schema of its own, and how to drop that schema. */
export function freshPostgresStore(opts: { maxConnections?: number } = {}): { store: PostgresStore; schema: string; cleanup: () => Promise<void> } {
  const schema = freshSchemaName();
  const store = new PostgresStore({ connectionString: TEST_POSTGRES, schema, maxConnections: opts.maxConnections ?? 4 });
  return { store, schema, cleanup: () => dropSchema(schema) };
}

/**
 * A fresh database on the test server, as an operator would create one for boxgrid, with the
 * URL servers connect to; `drop` removes it (after its servers have closed their connections).
 */
export async function freshDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `bxg_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: TEST_POSTGRES });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(TEST_POSTGRES);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    // Not WITH (FORCE): that needs the right to end other roles' sessions, autovacuum's among
    // them. The servers are gone by now; a session still closing is waited for.
    drop: async () => {
      const c = new pg.Client({ connectionString: TEST_POSTGRES });
      await c.connect();
      try {
        for (let attempt = 1; ; attempt++) {
          try {
            await c.query(`DROP DATABASE IF EXISTS ${name}`);
            return;
          } catch (e) {
            if ((e as { code?: string }).code !== '55006' || attempt >= 50) throw e; // object_in_use
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      } finally {
        await c.end();
      }
    },
  };
}
