import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Docker from 'dockerode';

const run = promisify(execFile);

export const TEST_IMAGE = 'boxgrid-test/busybox:1';
const BUSYBOX = '/bin/busybox';

/**
 * Whether the real-engine suites can run. Locally a missing engine skips them with the reason;
 * under CI=true it fails them, because a skipped suite in CI hides breakage.
 */
export async function dockerSuite(): Promise<{ skip: string | false }> {
  const reason = await missing();
  if (reason === null) return { skip: false };
  if (process.env.CI === 'true') throw new Error(`CI needs a Docker engine for these tests, but ${reason}`);
  return { skip: `${reason} (start one with: dockerd --bridge=none --iptables=false --ip6tables=false)` };
}

async function missing(): Promise<string | null> {
  try {
    await new Docker().ping();
  } catch (e) {
    return `no Docker engine answers (${(e as Error).message})`;
  }
  if (!existsSync(BUSYBOX)) return `${BUSYBOX} is missing (apt-get install busybox-static)`;
  // `file` may itself be absent; then the build below is the check.
  const { stdout } = await run('file', ['-L', BUSYBOX]).catch(() => ({ stdout: 'statically linked (unchecked)' }));
  if (!/statically linked/.test(stdout)) return `${BUSYBOX} is not the static busybox (apt-get install busybox-static)`;
  return null;
}

/**
 * Builds the test image from the host's static busybox (no registry is reachable): FROM scratch,
 * one binary, its applets linked in. Built once per engine; later calls find it.
 */
export async function ensureTestImage(): Promise<string> {
  const docker = new Docker();
  try {
    await docker.getImage(TEST_IMAGE).inspect();
    return TEST_IMAGE;
  } catch {
    // build it below
  }
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-image-'));
  try {
    await copyFile(BUSYBOX, join(dir, 'busybox'));
    await writeFile(join(dir, 'Dockerfile'), 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n');
    await run('docker', ['build', '-q', '-t', TEST_IMAGE, dir]);
    return TEST_IMAGE;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
