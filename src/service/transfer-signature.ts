import { createHmac, timingSafeEqual } from 'node:crypto';
import { hashSecret, parseToken } from './credentials.js';

/**
 * Transfer URLs let a task's staging containers move its files without holding a credential:
 * a host signs, for one task and one direction, "until when", with a key only it and the
 * servers know — sha256 of its credential's secret, which the servers store anyway (so every
 * server can check a URL, and revoking the host voids its URLs). The path carries everything:
 *
 *   /transfer/v1/<credential id>/tasks/<task>/<inputs|outputs>/<expires (epoch s)>/<signature>/<sha256>
 *
 * A URL names no file: GET fetches any input of that task, PUT stores any output of it, each
 * by sha256, exactly as the host itself could through the agent protocol, and no more.
 */
export type TransferDirection = 'inputs' | 'outputs';

export function transferSignature(key: Buffer, credentialId: string, taskId: number, direction: TransferDirection, expiresAt: number): string {
  return createHmac('sha256', key).update(`boxgrid-transfer\n${credentialId}\n${taskId}\n${direction}\n${expiresAt}`).digest('base64url');
}

export function signatureMatches(key: Buffer, credentialId: string, taskId: number, direction: TransferDirection, expiresAt: number, signature: string): boolean {
  const want = Buffer.from(transferSignature(key, credentialId, taskId, direction, expiresAt));
  const got = Buffer.from(signature);
  return want.length === got.length && timingSafeEqual(want, got);
}

/** The URL prefix (the file's sha256 is appended after a "/") a host with `token` signs for a task. */
export function transferUrl(server: string, token: string, taskId: number, direction: TransferDirection, expiresAt: number): string {
  const parsed = parseToken(token);
  if (!parsed || parsed.kind !== 'host') throw new Error('transfer URLs are signed with a host credential');
  const sig = transferSignature(hashSecret(parsed.secret), parsed.id, taskId, direction, expiresAt);
  return `${server.replace(/\/+$/, '')}/transfer/v1/${parsed.id}/tasks/${taskId}/${direction}/${expiresAt}/${sig}`;
}
