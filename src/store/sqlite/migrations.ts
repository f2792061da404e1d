import type { Migration } from '../migration.js';

/**
 * SQLite schema, append-only. Times are epoch ms. Job details that are only ever read whole
 * live in one JSON `spec` column (one parse per row); columns exist for what we filter or
 * sort on. Foreign keys are declared on the small tables only: on `jobs` they would cost the
 * 100k-job insert more than they protect (the service checks app and batch first).
 *
 * Every index on `jobs` is paid for by each of a batch's 100k inserts, so there are only the
 * ones job lists need, each ending in `id` (lists are newest first); the store intersects them
 * for combined filters. A batch's jobs are inserted in one transaction and so are the
 * consecutive ids first_job_id .. first_job_id + size - 1 (NULL only inside that transaction):
 * batch lists, counts and cancels use that range instead of an index on batch_id.
 */
export const SQLITE_MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: 'initial',
    sql: `
CREATE TABLE users (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  operator INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE projects (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  share_weight REAL NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE memberships (
  project_id INTEGER NOT NULL REFERENCES projects(id),
  user_id INTEGER NOT NULL REFERENCES users(id),
  role TEXT NOT NULL CHECK (role IN ('admin', 'submitter', 'viewer')),
  PRIMARY KEY (project_id, user_id)
) WITHOUT ROWID;
CREATE TABLE tokens (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL CHECK (kind IN ('user', 'host')),
  subject_id INTEGER NOT NULL,
  secret_hash BLOB NOT NULL,
  label TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER,
  revoked_at INTEGER
) WITHOUT ROWID;
CREATE TABLE apps (
  id INTEGER PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects(id),
  name TEXT NOT NULL,
  version INTEGER NOT NULL,
  spec TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  UNIQUE (project_id, name, version)
);
CREATE TABLE batches (
  id INTEGER PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects(id),
  app_name TEXT NOT NULL,
  app_version INTEGER NOT NULL,
  size INTEGER NOT NULL,
  labels TEXT NOT NULL,
  first_job_id INTEGER,
  created_at INTEGER NOT NULL
);
CREATE INDEX batches_by_project ON batches (project_id, id);
CREATE TABLE jobs (
  id INTEGER PRIMARY KEY,
  project_id INTEGER NOT NULL,
  app_id INTEGER NOT NULL,
  app_name TEXT NOT NULL,
  app_version INTEGER NOT NULL,
  batch_id INTEGER,
  state TEXT NOT NULL,
  priority INTEGER NOT NULL,
  deadline INTEGER,
  attempts INTEGER NOT NULL DEFAULT 0,
  reason TEXT,
  spec TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  finished_at INTEGER
);
CREATE INDEX jobs_by_project_state ON jobs (project_id, state, id);
CREATE INDEX jobs_by_project_app ON jobs (project_id, app_name, id);
CREATE TABLE job_labels (
  project_id INTEGER NOT NULL,
  key TEXT NOT NULL,
  value TEXT NOT NULL,
  job_id INTEGER NOT NULL,
  PRIMARY KEY (project_id, key, value, job_id)
) WITHOUT ROWID;
CREATE TABLE idempotency_keys (
  project_id INTEGER NOT NULL,
  key TEXT NOT NULL,
  request_hash TEXT NOT NULL,
  batch_id INTEGER,
  job_id INTEGER,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (project_id, key)
) WITHOUT ROWID;
CREATE TABLE sites (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL
);
CREATE TABLE hosts (
  id INTEGER PRIMARY KEY,
  site_id INTEGER NOT NULL REFERENCES sites(id),
  name TEXT NOT NULL,
  state TEXT NOT NULL,
  resources TEXT NOT NULL,
  platform TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  last_seen_at INTEGER
);
CREATE TABLE tasks (
  id INTEGER PRIMARY KEY,
  job_id INTEGER NOT NULL,
  host_id INTEGER NOT NULL REFERENCES hosts(id),
  attempt INTEGER NOT NULL,
  replica INTEGER NOT NULL,
  state TEXT NOT NULL,
  lease_expires_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  ended_at INTEGER,
  exit_code INTEGER,
  reason TEXT
);
CREATE INDEX tasks_by_job ON tasks (job_id, id);
CREATE TABLE blob_refs (
  project_id INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (project_id, sha256)
) WITHOUT ROWID;
`,
  },
  {
    version: 2,
    name: 'enrolment tokens',
    sql: `
CREATE TABLE enroll_tokens (
  id TEXT PRIMARY KEY,
  site_id INTEGER NOT NULL REFERENCES sites(id),
  secret_hash BLOB NOT NULL,
  label TEXT NOT NULL,
  uses_left INTEGER,
  expires_at INTEGER,
  revoked_at INTEGER,
  created_at INTEGER NOT NULL
) WITHOUT ROWID;
`,
  },
  {
    version: 3,
    name: 'agent protocol',
    // jobs_queued is what a work request scans: queued jobs by priority, then age. Partial, so
    // it holds only the queue, not the history.
    sql: `
ALTER TABLE jobs ADD COLUMN checkpoint TEXT;
CREATE INDEX jobs_queued ON jobs (priority DESC, id) WHERE state = 'queued';
ALTER TABLE tasks ADD COLUMN request_id TEXT;
ALTER TABLE tasks ADD COLUMN runtime TEXT NOT NULL DEFAULT 'docker';
ALTER TABLE tasks ADD COLUMN started_at INTEGER;
ALTER TABLE tasks ADD COLUMN progress REAL;
ALTER TABLE tasks ADD COLUMN usage TEXT;
ALTER TABLE tasks ADD COLUMN outcome TEXT;
ALTER TABLE tasks ADD COLUMN duration_ms INTEGER;
ALTER TABLE tasks ADD COLUMN outputs TEXT;
ALTER TABLE tasks ADD COLUMN report_hash TEXT;
CREATE INDEX tasks_by_host_request ON tasks (host_id, request_id);
CREATE INDEX tasks_by_host_active ON tasks (host_id, id) WHERE state IN ('assigned', 'running');
CREATE INDEX tasks_by_lease ON tasks (lease_expires_at) WHERE state IN ('assigned', 'running');
CREATE TABLE task_logs (
  task_id INTEGER PRIMARY KEY,
  text TEXT NOT NULL,
  end_offset INTEGER NOT NULL
);
`,
  },
  {
    version: 4,
    name: 'scheduling',
    // A queue per app version and shape: jobs_queue_heads gives each queue's next jobs in
    // (priority, age) order, and a work request reads only the heads, whatever the depth.
    // A job backing off after a failure has not_before set and leaves that index until the
    // time comes (jobs_backoff finds the ones whose time has come).
    sql: `
CREATE TABLE queues (
  id INTEGER PRIMARY KEY,
  project_id INTEGER NOT NULL,
  app_id INTEGER NOT NULL,
  cores REAL NOT NULL,
  memory_mib INTEGER NOT NULL,
  disk_mib INTEGER NOT NULL,
  gpus INTEGER NOT NULL,
  selector TEXT NOT NULL,
  estimated_ms REAL,
  UNIQUE (app_id, cores, memory_mib, disk_mib, gpus, selector)
);
ALTER TABLE jobs ADD COLUMN queue_id INTEGER;
ALTER TABLE jobs ADD COLUMN not_before INTEGER;
INSERT OR IGNORE INTO queues (project_id, app_id, cores, memory_mib, disk_mib, gpus, selector)
  SELECT DISTINCT j.project_id, j.app_id,
    coalesce(json_extract(j.spec, '$.resources.cores'), json_extract(a.spec, '$.resources.cores')),
    coalesce(json_extract(j.spec, '$.resources.memoryMiB'), json_extract(a.spec, '$.resources.memoryMiB')),
    coalesce(json_extract(j.spec, '$.resources.diskMiB'), json_extract(a.spec, '$.resources.diskMiB')),
    coalesce(json_extract(j.spec, '$.resources.gpus'), json_extract(a.spec, '$.resources.gpus')),
    '{}'
  FROM jobs j JOIN apps a ON a.id = j.app_id WHERE j.state IN ('queued', 'running');
UPDATE jobs SET queue_id = (
  SELECT q.id FROM queues q JOIN apps a ON a.id = jobs.app_id
  WHERE q.app_id = jobs.app_id AND q.selector = '{}'
    AND q.cores = coalesce(json_extract(jobs.spec, '$.resources.cores'), json_extract(a.spec, '$.resources.cores'))
    AND q.memory_mib = coalesce(json_extract(jobs.spec, '$.resources.memoryMiB'), json_extract(a.spec, '$.resources.memoryMiB'))
    AND q.disk_mib = coalesce(json_extract(jobs.spec, '$.resources.diskMiB'), json_extract(a.spec, '$.resources.diskMiB'))
    AND q.gpus = coalesce(json_extract(jobs.spec, '$.resources.gpus'), json_extract(a.spec, '$.resources.gpus'))
) WHERE state IN ('queued', 'running');
DROP INDEX jobs_queued;
CREATE INDEX jobs_queue_heads ON jobs (queue_id, priority DESC, id) WHERE state = 'queued' AND not_before IS NULL;
CREATE INDEX jobs_backoff ON jobs (not_before) WHERE not_before IS NOT NULL;
CREATE INDEX jobs_deadline ON jobs (deadline) WHERE deadline IS NOT NULL AND state IN ('queued', 'running');
ALTER TABLE projects ADD COLUMN fair_pass REAL NOT NULL DEFAULT 0;
ALTER TABLE hosts ADD COLUMN labels TEXT NOT NULL DEFAULT '{}';
ALTER TABLE hosts ADD COLUMN reserved_job INTEGER;
ALTER TABLE hosts ADD COLUMN reserved_at INTEGER;
CREATE INDEX hosts_reserved ON hosts (reserved_job) WHERE reserved_job IS NOT NULL;
CREATE TABLE host_app_health (
  host_id INTEGER NOT NULL,
  app_id INTEGER NOT NULL,
  failures INTEGER NOT NULL,
  cooldown_until INTEGER,
  PRIMARY KEY (host_id, app_id)
) WITHOUT ROWID;
CREATE INDEX tasks_active_by_start ON tasks (created_at) WHERE state IN ('assigned', 'running');
ALTER TABLE tasks ADD COLUMN charge REAL;
CREATE TABLE fair_share_clock (id INTEGER PRIMARY KEY CHECK (id = 1), virtual_time REAL NOT NULL);
INSERT INTO fair_share_clock (id, virtual_time) VALUES (1, 0);
CREATE INDEX tasks_active_duplicates ON tasks (job_id) WHERE replica > 0 AND state IN ('assigned', 'running');
`,
  },
  {
    version: 5,
    name: 'host pace',
    // How long tasks take on a host against their queue's typical duration (scheduling/pace.ts).
    sql: `ALTER TABLE hosts ADD COLUMN pace REAL;`,
  },
  {
    version: 6,
    name: 'sites and audit',
    // A site's address allowlist (JSON array of CIDRs; '[]': any address); the volunteer account
    // an enrolment token and its hosts belong to; the audit log of admin actions, read newest
    // first, by action or by project.
    sql: `
ALTER TABLE sites ADD COLUMN allow_cidrs TEXT NOT NULL DEFAULT '[]';
ALTER TABLE enroll_tokens ADD COLUMN owner TEXT;
ALTER TABLE hosts ADD COLUMN owner TEXT;
CREATE TABLE audit_log (
  id INTEGER PRIMARY KEY,
  at INTEGER NOT NULL,
  actor_user_id INTEGER,
  actor_name TEXT NOT NULL,
  action TEXT NOT NULL,
  target TEXT NOT NULL,
  project_id INTEGER,
  detail TEXT NOT NULL
);
CREATE INDEX audit_by_action ON audit_log (action, id);
CREATE INDEX audit_by_project ON audit_log (project_id, id) WHERE project_id IS NOT NULL;
`,
  },
  {
    version: 7,
    name: 'replication',
    // Replicated jobs (domain/quorum.ts): the quorum this attempt needs, replicas still to hand
    // out (their own partial index: claims look for them first), jobs whose replicas await the
    // app's validator (the validator loop's partial index), the canonical task; each
    // replica's validity; a host's run of valid results and daily quota per app
    // (scheduling/replication.ts).
    sql: `
ALTER TABLE jobs ADD COLUMN quorum INTEGER NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN replicas_wanted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN canonical_task_id INTEGER;
CREATE INDEX jobs_wanting_replicas ON jobs (id) WHERE replicas_wanted > 0 AND state = 'running';
ALTER TABLE jobs ADD COLUMN awaiting_validator INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_awaiting_validator ON jobs (id) WHERE awaiting_validator = 1 AND state = 'running';
ALTER TABLE tasks ADD COLUMN validity TEXT;
ALTER TABLE host_app_health ADD COLUMN valid_run INTEGER NOT NULL DEFAULT 0;
ALTER TABLE host_app_health ADD COLUMN quota INTEGER;
ALTER TABLE host_app_health ADD COLUMN quota_day INTEGER NOT NULL DEFAULT 0;
ALTER TABLE host_app_health ADD COLUMN issued_today INTEGER NOT NULL DEFAULT 0;
`,
  },
  {
    version: 8,
    name: 'workflows',
    // Workflows (domain/workflow.ts): spec, files and progress are JSON the store keeps whole;
    // `version` is the compare-and-set counter of updateWorkflow. A project's list reads
    // workflows_by_project newest first; the workflow loop reads the running ones from their
    // partial index (the history stays out of it). An idempotency key is unique per project,
    // so two creates racing with one key make one row.
    sql: `
CREATE TABLE workflows (
  id INTEGER PRIMARY KEY,
  project_id INTEGER NOT NULL REFERENCES projects(id),
  name TEXT NOT NULL,
  state TEXT NOT NULL,
  reason TEXT,
  created_by INTEGER NOT NULL REFERENCES users(id),
  source TEXT NOT NULL,
  spec TEXT NOT NULL,
  files TEXT NOT NULL,
  progress TEXT NOT NULL,
  resumed_from INTEGER REFERENCES workflows(id),
  version INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  ended_at INTEGER,
  idem_key TEXT,
  request_hash TEXT
);
CREATE INDEX workflows_by_project ON workflows (project_id, id);
CREATE INDEX workflows_running ON workflows (id) WHERE state = 'running';
CREATE UNIQUE INDEX workflows_idempotency ON workflows (project_id, idem_key) WHERE idem_key IS NOT NULL;
`,
  },
];
