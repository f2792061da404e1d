import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BoxgridClient } from '../client/client.js';
import type { Resources } from '../domain/resources.js';
import { BoxgridError } from '../domain/errors.js';
import { newCredential } from '../service/credentials.js';
import { atomicWrite } from './atomic-write.js';

/** What a host keeps to speak for itself: the server it enrolled with, its id and its credential. */
export interface HostCredential {
  server: string;
  hostId: number;
  name: string;
  token: string;
}

const FILE = 'host.json';
/** The credential made but not yet acknowledged: a retry after a crash sends the same one. */
const PENDING = 'host.pending.json';

export async function loadCredential(workDir: string): Promise<HostCredential | null> {
  try {
    return JSON.parse(await readFile(join(workDir, FILE), 'utf8')) as HostCredential;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new BoxgridError('invalid_request', `${join(workDir, FILE)} is not a host credential file (${(e as Error).message}); move it away to enrol again`);
  }
}

/**
 * Enrols the host once: the agent makes its credential itself and sends only its id and
 * hash, so the secret never crosses the network. The credential is written (mode 0600) before
 * it is sent, so a crash or a lost answer is retried with the same one and the server
 * recognises the retry instead of spending another use of the enrolment token.
 */
export async function enroll(
  workDir: string,
  server: string,
  enrollToken: string,
  host: { name: string; resources: Resources; platform: string },
  tls: { ca?: string } = {},
): Promise<HostCredential> {
  await mkdir(workDir, { recursive: true, mode: 0o700 });
  const pendingPath = join(workDir, PENDING);
  let pending: { token: string; id: string; hash: string };
  try {
    pending = JSON.parse(await readFile(pendingPath, 'utf8'));
  } catch {
    const c = newCredential('host');
    pending = { token: c.token, id: c.id, hash: c.secretHash.toString('hex') };
    await atomicWrite(pendingPath, JSON.stringify(pending), 0o600);
  }
  const answer = await new BoxgridClient({ url: server, ...tls }).enroll({
    enrollToken, name: host.name, resources: host.resources, platform: host.platform, credentialId: pending.id, credentialHash: pending.hash,
  });
  const credential: HostCredential = { server, hostId: answer.hostId, name: answer.name, token: pending.token };
  await atomicWrite(join(workDir, FILE), JSON.stringify(credential, null, 2) + '\n', 0o600);
  await rm(pendingPath, { force: true });
  return credential;
}
