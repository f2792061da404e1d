/**
 * Typed errors with stable codes. Every error a client can see is one of these; the HTTP
 * layer maps `status` to the response and never leaks anything else (see server/errors.ts).
 * Codes are documented in docs/errors.md — add a row there when you add one here.
 */
export type ErrorCode =
  | 'invalid_request'
  | 'unauthenticated'
  | 'forbidden'
  | 'not_found'
  | 'already_exists'
  | 'conflict'
  | 'illegal_transition'
  | 'lease_expired'
  | 'payload_too_large'
  | 'unsupported_media_type'
  | 'digest_mismatch'
  | 'range_not_satisfiable'
  | 'insufficient_storage'
  | 'unavailable'
  | 'internal';

const STATUS: Record<ErrorCode, number> = {
  invalid_request: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  already_exists: 409,
  conflict: 409,
  illegal_transition: 409,
  lease_expired: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  digest_mismatch: 422,
  range_not_satisfiable: 416,
  insufficient_storage: 507,
  unavailable: 503,
  internal: 500,
};

export class BoxgridError extends Error {
  readonly code: ErrorCode;
  /** JSON-pointer-ish path of the offending field, when one field is to blame. */
  readonly field: string | undefined;
  /** Whether retrying the same call later may succeed (used by the agent and client). */
  readonly retryable: boolean;
  /** Every problem found, when a check reports several at once (a workflow spec, by line). */
  readonly problems: ErrorProblem[] | undefined;

  constructor(code: ErrorCode, message: string, opts: { field?: string; retryable?: boolean; problems?: ErrorProblem[] } = {}) {
    super(message);
    this.name = 'BoxgridError';
    this.code = code;
    this.field = opts.field;
    this.retryable = opts.retryable ?? (code === 'unavailable' || code === 'insufficient_storage');
    this.problems = opts.problems;
  }

  get status(): number {
    return STATUS[this.code];
  }
}

/** One of several problems in a document, where it is: `path` within the document, 1-based line and column. */
export interface ErrorProblem {
  path: string;
  line: number;
  column: number;
  message: string;
}

export const invalid = (field: string, problem: string): BoxgridError =>
  new BoxgridError('invalid_request', `${field}: ${problem}`, { field });

export const notFound = (what: string): BoxgridError => new BoxgridError('not_found', `${what} not found`);

export const alreadyExists = (what: string, field?: string): BoxgridError =>
  new BoxgridError('already_exists', `${what} already exists`, field === undefined ? {} : { field });

export function isBoxgridError(e: unknown): e is BoxgridError {
  return e instanceof BoxgridError;
}
