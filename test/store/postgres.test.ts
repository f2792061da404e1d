import { runStoreConformance } from './conformance.js';
import { runExplainConformance } from './explain-conformance.js';
import { runReplicationConformance } from './replication-conformance.js';
import { runWorkflowConformance } from './workflow-conformance.js';
import { freshPostgresStore, postgresSuite } from '../helpers/postgres.js';

const { skip } = await postgresSuite();

// ── the port's conformance suites, one fresh schema per test ────────────────
runStoreConformance('PostgresStore (conformance)', async () => freshPostgresStore(), { skip });
runExplainConformance('PostgresStore (explain conformance)', async () => freshPostgresStore(), { skip });
runReplicationConformance('PostgresStore (replication conformance)', async () => freshPostgresStore(), { skip });
runWorkflowConformance('PostgresStore (workflow conformance)', async () => freshPostgresStore(), { skip });
