import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { BoxgridError, isBoxgridError, type ErrorProblem } from '../domain/errors.js';

export interface ErrorResponse {
  error: { code: string; message: string; field?: string; problems?: ErrorProblem[] };
}

/**
 * The one place where anything thrown becomes an HTTP answer. Client mistakes become 4xx with
 * the field and the problem; everything else is a 500 whose details go to the log, never to
 * the client.
 */
export function toHttpError(err: unknown): { status: number; body: ErrorResponse; unexpected: boolean } {
  const e = normalise(err);
  const body: ErrorResponse = { error: { code: e.code, message: e.message } };
  if (e.field !== undefined) {
    body.error.field = e.field;
    // Every message about a field starts with that field, whoever raised it.
    if (!e.message.startsWith(`${e.field}:`)) body.error.message = `${e.field}: ${e.message}`;
  }
  if (e.problems) body.error.problems = e.problems;
  return { status: e.status, body, unexpected: e.code === 'internal' };
}

export function normalise(err: unknown): BoxgridError {
  if (isBoxgridError(err)) return err;
  const fe = err as Partial<FastifyError> & { validation?: Array<{ instancePath: string; message?: string; params?: Record<string, unknown> }>; validationContext?: string };
  if (fe.validation && fe.validation.length > 0) {
    const v = fe.validation[0]!;
    const extra = v.params?.additionalProperty;
    // A missing field is named itself (body/free), not the object that lacks it.
    const missing = v.params?.missingProperty;
    const named = extra ?? missing;
    const path = `${fe.validationContext ?? 'body'}${v.instancePath}${named === undefined ? '' : `/${String(named)}`}`;
    const problem = extra !== undefined ? 'is not a known field' : missing !== undefined ? 'is required' : allowedValues(v) ?? v.message ?? 'is invalid';
    return new BoxgridError('invalid_request', `${path}: ${problem}`, { field: path });
  }
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new BoxgridError('payload_too_large', 'request body is larger than this route accepts', { field: 'body' });
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new BoxgridError('unsupported_media_type', 'unsupported Content-Type (send application/json, or application/octet-stream for blobs)', { field: 'headers/content-type' });
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new BoxgridError('invalid_request', 'body: is empty but Content-Type is application/json', { field: 'body' });
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new BoxgridError('invalid_request', 'Content-Length does not match the body', { field: 'headers/content-length' });
  }
  if (err instanceof SyntaxError || fe.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
    return new BoxgridError('invalid_request', `body: is not valid JSON (${(err as Error).message})`, { field: 'body' });
  }
  const status = fe.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new BoxgridError(status === 413 ? 'payload_too_large' : status === 404 ? 'not_found' : 'invalid_request', fe.message ?? 'bad request');
  }
  const code = String((err as { code?: unknown } | undefined)?.code ?? '');
  if (code === 'ENOSPC' || code.startsWith('SQLITE_FULL')) {
    return new BoxgridError('insufficient_storage', 'the server has no disk space left; nothing was written');
  }
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    return new BoxgridError('unavailable', 'the store is busy; retry shortly');
  }
  return new BoxgridError('internal', 'internal error; the server log has the details');
}

function allowedValues(v: { message?: string; params?: Record<string, unknown> }): string | undefined {
  const allowed = v.params?.allowedValues ?? (v.params?.allowedValue !== undefined ? [v.params.allowedValue] : undefined);
  return Array.isArray(allowed) ? `must be one of ${allowed.join(', ')}` : undefined;
}

const LOCATED = /^(body|querystring|params|headers)(\/|$)/;

/**
 * Services name fields relative to their input ("sweep/x", "jobs/17/env/FOO"); the route knows
 * which part of the request that input was, and this puts it in front ("body/sweep/x"), so that
 * every `field` the API reports has the same form as the schema validator's.
 */
export async function inPart<T>(part: 'body' | 'querystring' | 'params', work: Promise<T>): Promise<T> {
  try {
    return await work;
  } catch (e) {
    if (!isBoxgridError(e) || e.field === undefined || LOCATED.test(e.field)) throw e;
    const field = `${part}/${e.field}`;
    const message = e.message.startsWith(`${e.field}:`) ? field + e.message.slice(e.field.length) : e.message;
    throw new BoxgridError(e.code, message, { field, retryable: e.retryable });
  }
}

export function sendError(request: FastifyRequest, reply: FastifyReply, err: unknown): FastifyReply {
  const { status, body, unexpected } = toHttpError(err);
  if (unexpected) request.log.error({ err }, 'unexpected error');
  else request.log.info({ code: body.error.code, field: body.error.field }, body.error.message);
  return reply.code(status).type('application/json').send(body);
}
