import { execFile } from 'node:child_process';
import { existsSync, rmSync } from 'node:fs';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { TEST_IMAGE } from './docker.js';

const run = promisify(execFile);
const BUSYBOX = '/bin/busybox';

export interface PodmanSetup {
  skip: string | false;
  /**
   * What a Podman pilot of the tests needs in its environment (sbatch exports it): empty, or
   * CONTAINERS_CONF where root may not raise its resource limits (see podmanEnv).
   */
  env: Record<string, string>;
}

/**
 * Whether the Podman suites can run: podman is installed, the test image is in its storage
 * (built here from the static busybox, as for Docker: no registry is reachable) and a container
 * runs, with network none. Locally anything missing skips them with the reason; under CI=true
 * it fails them, because a skipped suite in CI hides breakage. Never creates a network: every
 * container and build here uses network none.
 */
export async function podmanSuite(): Promise<PodmanSetup> {
  let reason: string | null = null;
  let env: Record<string, string> = {};
  try {
    await run('podman', ['--version']);
  } catch (e) {
    reason = `podman is not installed (${(e as Error).message.split('\n')[0]}; apt-get install podman)`;
  }
  if (reason === null && !existsSync(BUSYBOX)) reason = `${BUSYBOX} is missing (apt-get install busybox-static)`;
  if (reason === null) {
    try {
      env = await podmanEnv();
      await ensurePodmanImage(env);
      await run('podman', ['run', '--rm', '--network', 'none', TEST_IMAGE, 'true'], { env: { ...process.env, ...env } });
    } catch (e) {
      const err = e as Error & { stderr?: string };
      reason = `podman cannot run a container here: ${(err.stderr || err.message).trim().split('\n').slice(-1)[0]}`;
    }
  }
  if (reason === null) return { skip: false, env };
  if (process.env.CI === 'true') throw new Error(`CI needs Podman for these tests, but ${reason}`);
  return { skip: reason, env };
}

/**
 * Rootful Podman gives each container RLIMIT_NOFILE 1048576 and RLIMIT_NPROC 4194304 unless
 * told otherwise, and lowers its own RLIMIT_NPROC to 32768 when it starts. Where root lacks
 * CAP_SYS_RESOURCE (this machine, CI: a VM's sandbox) the OCI runtime cannot raise the limits
 * that far and every container fails to start ("error setting rlimits for ready process …
 * operation not permitted"). There, a containers.conf of the test's own sets the defaults to
 * what root has; CONTAINERS_CONF takes the place of the system's files, whose only settings on
 * Debian are the defaults anyway. Elsewhere (root with the capability, or rootless Podman,
 * which keeps its own limits) nothing is needed.
 */
async function podmanEnv(): Promise<Record<string, string>> {
  if (process.getuid?.() !== 0) return {};
  const status = await readFile('/proc/self/status', 'utf8');
  const effective = BigInt(`0x${/^CapEff:\s*([0-9a-f]+)/m.exec(status)?.[1] ?? '0'}`);
  const CAP_SYS_RESOURCE = 24n;
  if ((effective >> CAP_SYS_RESOURCE) & 1n) return {};
  const limits = await readFile('/proc/self/limits', 'utf8');
  const hard = (name: string): number => {
    const m = new RegExp(`^${name}\\s+\\S+\\s+(\\S+)`, 'm').exec(limits);
    return m && m[1] !== 'unlimited' ? Number(m[1]) : Infinity;
  };
  const nofile = Math.min(hard('Max open files'), 1_048_576);
  const nproc = Math.min(hard('Max processes'), 32_768);
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-podman-conf-'));
  const file = join(dir, 'containers.conf');
  await writeFile(file, `# boxgrid tests: root here lacks CAP_SYS_RESOURCE (see test/helpers/podman.ts)\n[containers]\ndefault_ulimits = ["nofile=${nofile}:${nofile}", "nproc=${nproc}:${nproc}"]\n`);
  process.once('exit', () => rmSync(dir, { recursive: true, force: true }));
  return { CONTAINERS_CONF: file };
}

/** Builds the test image into Podman's storage (FROM scratch, the static busybox, its applets linked in) unless it is there. */
async function ensurePodmanImage(env: Record<string, string>): Promise<void> {
  const opts = { env: { ...process.env, ...env } };
  try {
    await run('podman', ['image', 'exists', TEST_IMAGE], opts);
    return;
  } catch {
    // build it below
  }
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-image-'));
  try {
    await copyFile(BUSYBOX, join(dir, 'busybox'));
    await writeFile(join(dir, 'Containerfile'), 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n');
    // --network none: the RUN step would otherwise get Podman's default bridge network.
    await run('podman', ['build', '--network', 'none', '-q', '-t', TEST_IMAGE, dir], opts);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** Containers in Podman's storage made by boxgrid agents (the task label): none should outlive its pilot. */
export async function podmanTaskContainers(env: Record<string, string>): Promise<string[]> {
  const { stdout } = await run('podman', ['ps', '--all', '--quiet', '--filter', 'label=io.boxgrid.task'], { env: { ...process.env, ...env } });
  return stdout.split('\n').map((s) => s.trim()).filter(Boolean);
}
