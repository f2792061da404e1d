import { chmod, open, rename } from 'node:fs/promises';

/**
 * Replaces a file whole: written to a temporary name with `mode`, flushed to disk, then
 * renamed over the old one, so a crash leaves the old version or the new one, never half.
 */
export async function atomicWrite(path: string, text: string, mode: number): Promise<void> {
  const temp = `${path}.tmp`;
  const handle = await open(temp, 'w', mode);
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await chmod(temp, mode); // the mode above applies only to a new file
  await rename(temp, path);
}
