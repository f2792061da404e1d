import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Millis, TokenKind, TokenRecord } from '../domain/model.js';

/**
 * Bearer tokens look like `bgu_<id>_<secret>` (users) or `bgh_<id>_<secret>` (hosts). The id
 * finds the record; only sha256(secret) is stored, and it is compared in constant time. The
 * secret has 256 bits of entropy, so a fast hash is enough (no password stretching needed).
 */
/** Enrolment tokens (`bge_…`) live in their own table and only buy host credentials. */
export type CredentialKind = TokenKind | 'enroll';
const PREFIX: Record<CredentialKind, string> = { user: 'bgu', host: 'bgh', enroll: 'bge' };
const KIND_OF: Record<string, CredentialKind> = { bgu: 'user', bgh: 'host', bge: 'enroll' };
const TOKEN_RE = /^(bgu|bgh|bge)_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

export interface IssuedToken {
  /** The full bearer value: shown once, never stored. */
  token: string;
  record: TokenRecord;
}

/** A fresh random credential of any kind: the bearer value, its public id and the hash to store. */
export function newCredential(kind: CredentialKind): { token: string; id: string; secretHash: Buffer } {
  const id = randomBytes(8).toString('hex');
  const secret = randomBytes(32).toString('base64url');
  return { token: `${PREFIX[kind]}_${id}_${secret}`, id, secretHash: hashSecret(secret) };
}

export function issueToken(kind: TokenKind, subjectId: number, label: string, now: Millis, expiresAt: Millis | null = null): IssuedToken {
  const c = newCredential(kind);
  return {
    token: c.token,
    record: { id: c.id, kind, subjectId, secretHash: c.secretHash, label, createdAt: now, expiresAt, revokedAt: null },
  };
}

export interface ParsedToken {
  kind: CredentialKind;
  id: string;
  secret: string;
}

export function parseToken(bearer: string): ParsedToken | null {
  const m = TOKEN_RE.exec(bearer);
  if (!m) return null;
  return { kind: KIND_OF[m[1]!]!, id: m[2]!, secret: m[3]! };
}

export function secretMatches(record: { secretHash: Buffer }, secret: string): boolean {
  const h = hashSecret(secret);
  return h.length === record.secretHash.length && timingSafeEqual(h, record.secretHash);
}

export function hashSecret(secret: string): Buffer {
  return createHash('sha256').update(secret).digest();
}
