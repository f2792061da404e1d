import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Millis, TokenKind, TokenRecord } from '../domain/model.js';

/**
 * Bearer tokens look like `bgu_<id>_<secret>` (users) or `bgh_<id>_<secret>` (hosts). The id
 * finds the record; only sha256(secret) is stored, and it is compared in constant time. The
 * secret has 256 bits of entropy, so a fast hash is enough (no password stretching needed).
 */
const PREFIX: Record<TokenKind, string> = { user: 'bgu', host: 'bgh' };
const TOKEN_RE = /^(bgu|bgh)_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

export interface IssuedToken {
  /** The full bearer value: shown once, never stored. */
  token: string;
  record: TokenRecord;
}

export function issueToken(kind: TokenKind, subjectId: number, label: string, now: Millis, expiresAt: Millis | null = null): IssuedToken {
  const id = randomBytes(8).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  return {
    token: `${PREFIX[kind]}_${id}_${secret}`,
    record: { id, kind, subjectId, secretHash: hashSecret(secret), label, createdAt: now, expiresAt, revokedAt: null },
  };
}

export interface ParsedToken {
  kind: TokenKind;
  id: string;
  secret: string;
}

export function parseToken(bearer: string): ParsedToken | null {
  const m = TOKEN_RE.exec(bearer);
  if (!m) return null;
  return { kind: m[1] === 'bgu' ? 'user' : 'host', id: m[2]!, secret: m[3]! };
}

export function secretMatches(record: TokenRecord, secret: string): boolean {
  const h = hashSecret(secret);
  return h.length === record.secretHash.length && timingSafeEqual(h, record.secretHash);
}

function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}
