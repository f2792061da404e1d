/**
 * Name rules shared by job submission (service/jobs.ts) and workflow specs
 * (domain/workflow-spec.ts), so that a spec that parses is one the job API accepts.
 */

/** Environment variable names; those starting BOXGRID_ are reserved for the runtime. */
export const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,127}$/;
export const RESERVED_ENV_PREFIX = 'BOXGRID_';

/** Names of files in a job's /in: plain file names, never "." or "..". */
export const INPUT_NAME_RE = /^(?!\.{1,2}$)[A-Za-z0-9._-]{1,128}$/;

/** Names substituted as `{name}` in args and env (sweep parameters follow the same rule). */
export const PARAM_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,63}$/;

/** App names, as projects' other resource names (service/access.ts). */
export const APP_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
