import { createHash } from 'node:crypto';

/**
 * sha256 of a value's JSON with object keys sorted, so that a retry which re-serialised the
 * same content in another order is recognised as the same request.
 */
export function canonicalHash(value: unknown): string {
  const json = JSON.stringify(value, (_k, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, (v as Record<string, unknown>)[k]])) : v,
  );
  return createHash('sha256').update(json).digest('hex');
}
