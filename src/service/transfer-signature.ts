import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Transfer URLs let a task's staging containers move its files without holding a credential.
 * The server signs them (`POST /agent/v1/tasks/{id}/transfer-urls`, for the host that holds
 * the task), for one task and one direction, "until when", with the servers' transfer key: a
 * secret of the servers alone (BOXGRID_TRANSFER_KEY, or transfer.key in the data dir), never
 * in the database, so that a copy of the database (a backup, a replica) signs nothing. The
 * path carries everything:
 *
 *   /transfer/v1/<host id>/tasks/<task>/<inputs|outputs>/<expires (epoch s)>/<signature>/<sha256>
 *
 * A URL names no file: GET fetches any input of that task, PUT stores any output of it, each
 * by sha256, exactly as the host itself could through the agent protocol, and only while that
 * host is active and holds the task live.
 */
export type TransferDirection = 'inputs' | 'outputs';

/** The fewest bytes a transfer key has (HMAC-SHA256's block of security). */
export const TRANSFER_KEY_BYTES = 32;

export function transferSignature(key: Buffer, hostId: number, taskId: number, direction: TransferDirection, expiresAt: number): string {
  return createHmac('sha256', key).update(`boxgrid-transfer\n${hostId}\n${taskId}\n${direction}\n${expiresAt}`).digest('base64url');
}

export function signatureMatches(key: Buffer, hostId: number, taskId: number, direction: TransferDirection, expiresAt: number, signature: string): boolean {
  const want = Buffer.from(transferSignature(key, hostId, taskId, direction, expiresAt));
  const got = Buffer.from(signature);
  return want.length === got.length && timingSafeEqual(want, got);
}

/** The signed path prefix (the file's sha256 is appended after a "/"), relative to the server. */
export function transferPath(key: Buffer, hostId: number, taskId: number, direction: TransferDirection, expiresAt: number): string {
  return `/transfer/v1/${hostId}/tasks/${taskId}/${direction}/${expiresAt}/${transferSignature(key, hostId, taskId, direction, expiresAt)}`;
}

const TRANSFER_PATH_RE = /^(\/+transfer\/v1\/[^/?#]*\/tasks\/[^/?#]*\/[^/?#]*\/[^/?#]*\/)[^/?#]+/;

/**
 * A request URL (path and query) fit for a log: a transfer URL's signature is replaced, since
 * the URL is a bearer credential until it expires. Anything else is returned as it is.
 */
export function redactTransferUrl(url: string): string {
  return url.replace(TRANSFER_PATH_RE, '$1[redacted]');
}

/**
 * A transfer key as BOXGRID_TRANSFER_KEY and transfer.key hold it: hex when it is only hex
 * digits, else base64 (or base64url); at least TRANSFER_KEY_BYTES bytes.
 */
export function parseTransferKey(text: string, source: string): Buffer {
  const t = text.trim();
  let key: Buffer | null = null;
  if (/^(?:[0-9a-fA-F]{2})+$/.test(t)) key = Buffer.from(t, 'hex');
  else if (/^[A-Za-z0-9+/_-]+={0,2}$/.test(t)) key = Buffer.from(t, 'base64');
  if (!key || key.length < TRANSFER_KEY_BYTES) {
    throw new Error(
      `${source} is not a transfer key: it must be at least ${TRANSFER_KEY_BYTES} bytes, in hex or base64 ` +
        `(e.g. the output of \`openssl rand -base64 ${TRANSFER_KEY_BYTES}\`)`,
    );
  }
  return key;
}

/** A new random transfer key, as transfer.key holds it (base64, a line). */
export function newTransferKeyText(): string {
  return randomBytes(TRANSFER_KEY_BYTES).toString('base64') + '\n';
}
