import { Type } from '@sinclair/typebox';
import type { SubmitResult } from '../../service/jobs.js';
import { renderBatch } from '../render.js';

/** Job ids are listed for small submissions only; a 100k batch answers with its batch id. */
export const MAX_LISTED_IDS = 1000;

export function renderSubmit(r: SubmitResult) {
  return {
    batch: r.batch ? renderBatch(r.batch) : null,
    jobCount: r.jobIds.length,
    ...(r.jobIds.length <= MAX_LISTED_IDS ? { jobIds: r.jobIds } : {}),
    replayed: r.replayed,
  };
}

export function idempotencyKey(header: string | string[] | undefined): string | null {
  if (typeof header !== 'string' || header === '') return null;
  return header;
}

/** Submissions may carry an Idempotency-Key so that a retry after a timeout is answered, not repeated. */
export const IdemHeader = Type.Object({ 'idempotency-key': Type.Optional(Type.String({ minLength: 1, maxLength: 200 })) });
