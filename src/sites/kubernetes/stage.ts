import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { BoxgridClient } from '../../client/client.js';
import { saveVerified } from '../../client/save-verified.js';
import { BoxgridError } from '../../domain/errors.js';
import { isOutputName } from '../../domain/file-names.js';
import { unpackCheckpoint } from '../../agent/checkpoints.js';
import { collectOutputs } from '../../agent/staging.js';
import { PROGRESS_FILE } from '../../agent/agent.js';
import type { StageInSpec, StageOutReport } from './job-manifest.js';

/**
 * The two halves of a task pod's staging (see job-manifest.ts), run by boxgrid's own image:
 * `stageIn` fills in/ (and checkpoint/) of the pod's scratch volume before the app starts;
 * `stageOut` stores out/ once the app has ended. Both use only the task's signed URLs.
 */
export async function stageIn(dir: string, spec: StageInSpec): Promise<void> {
  const client = new BoxgridClient({ url: spec.url });
  const inDir = join(dir, 'in');
  await Promise.all(['in', 'out', 'checkpoint'].map((d) => mkdir(join(dir, d), { recursive: true, mode: 0o755 })));
  for (const input of spec.inputs) {
    if (!isOutputName(input.name)) throw new BoxgridError('invalid_request', `input name "${input.name}" is not a plain file name`);
    await retried(async () => saveVerified(await client.downloadSigned(input.sha256), join(inDir, input.name), input.sha256, 0o444));
  }
  if (spec.checkpoint !== null) {
    const file = join(dir, 'checkpoint.tar.gz');
    await retried(async () => saveVerified(await client.downloadSigned(spec.checkpoint!), file, spec.checkpoint!));
    await unpackCheckpoint(file, join(dir, 'checkpoint'), null);
    await rm(file, { force: true });
  }
}

/**
 * Stores every file in out/ and says what it stored. Anything the agent would refuse (links,
 * directories, bad names, files over `maxFileBytes`) is named in `refused` and nothing is
 * stored: the outputs are taken whole or not at all, as on a host.
 */
export async function stageOut(dir: string, url: string, maxFileBytes: number, deadline: number): Promise<StageOutReport> {
  const client = new BoxgridClient({ url });
  const collected = await collectOutputs(join(dir, 'out'), maxFileBytes);
  const files = collected.files.filter((f) => f.name !== PROGRESS_FILE); // the agent's progress file is not an output
  if (collected.refused.length > 0) return { outputs: {}, refused: collected.refused };
  const outputs: StageOutReport['outputs'] = Object.fromEntries(files.map((f) => [f.name, { sha256: f.sha256, size: f.size }]));
  // Checked before anything is sent: a report Kubernetes would cut short is of no use.
  if (JSON.stringify({ outputs, refused: [] }).length > MAX_REPORT_BYTES) {
    return { outputs: {}, refused: [`${files.length} output files are too many to list in a pod's termination message (${MAX_REPORT_BYTES} bytes); pack them into one archive`] };
  }
  for (const f of files) await retried(() => client.uploadSigned(f.sha256, f.path, f.size), deadline);
  return { outputs, refused: [] };
}

/** Kubernetes keeps 4096 bytes of a container's termination message. */
export const MAX_REPORT_BYTES = 4096;

/** Tries again what the network or a busy server refused, until `deadline` (epoch ms); anything else fails at once. */
async function retried<T>(step: () => Promise<T>, deadline = Date.now() + 60_000): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await step();
    } catch (e) {
      const wait = Math.min(30_000, 500 * 2 ** attempt);
      if (!(e instanceof BoxgridError && e.retryable) || Date.now() + wait > deadline) throw e;
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}
