import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer, type AddressInfo } from 'node:net';
import { delimiter, join } from 'node:path';
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

/** Names under which Debian (docker-registry) and upstream (registry) ship the distribution registry. */
const REGISTRY_BINARIES = ['docker-registry', 'registry'];

export interface LocalRegistry {
  /** host:port to prefix image names with. */
  host: string;
  stop(): Promise<void>;
}

/**
 * Whether the registry suites can run: like dockerSuite, plus a registry binary. Skips locally
 * with the reason, fails under CI=true (.ci/run installs Debian's docker-registry).
 */
export async function registrySuite(): Promise<{ skip: string | false }> {
  const docker = await dockerSuite();
  if (docker.skip) return docker;
  if (registryBinary() !== null) return { skip: false };
  const reason = `no registry binary (${REGISTRY_BINARIES.join(' or ')}) is on PATH (apt-get install docker-registry)`;
  if (process.env.CI === 'true') throw new Error(`CI needs a local registry for these tests, but ${reason}`);
  return { skip: reason };
}

function registryBinary(): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    for (const name of REGISTRY_BINARIES) if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}

/**
 * Runs a distribution registry on 127.0.0.1 only, storing in a temporary directory, in the
 * foreground of a child process (never the system service). The engine allows plain HTTP to
 * 127.0.0.0/8 registries without configuration. Resolves once the registry says it listens.
 */
export async function startRegistry(): Promise<LocalRegistry> {
  const binary = registryBinary();
  if (binary === null) throw new Error('no registry binary');
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-registry-'));
  const port = await freePort();
  const config = [
    'version: 0.1',
    'log: { level: info }',
    `storage: { filesystem: { rootdirectory: ${join(dir, 'data')} }, delete: { enabled: true } }`,
    `http: { addr: 127.0.0.1:${port} }`,
  ].join('\n');
  await writeFile(join(dir, 'config.yml'), config);
  // stdout carries only the access log, which no test reads.
  const child = spawn(binary, ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // A test process that ends without stop() (a failed before(), a timeout) takes the registry with it.
  const orphaned = (): void => void child.kill('SIGKILL');
  process.once('exit', orphaned);
  await new Promise<void>((resolve, reject) => {
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      log = (log + s).slice(-8000); // enough to say why it failed, bounded however long it runs
      if (log.includes(`listening on 127.0.0.1:${port}`)) resolve();
    });
    child.once('error', reject);
    void exited.then(() => reject(new Error(`the registry exited before it listened: ${log.slice(-2000)}`)));
  });
  return {
    host: `127.0.0.1:${port}`,
    stop: async () => {
      process.off('exit', orphaned);
      child.kill('SIGTERM');
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** Builds `tag` from the test image plus `files` (no RUN step, so no container network is needed). */
export async function buildImage(tag: string, files: Record<string, string | Buffer>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-image-'));
  try {
    const copies = Object.keys(files).map((name) => `COPY ${name} /${name}`);
    for (const [name, body] of Object.entries(files)) await writeFile(join(dir, name), body);
    await writeFile(join(dir, 'Dockerfile'), [`FROM ${await ensureTestImage()}`, ...copies, ''].join('\n'));
    await run('docker', ['build', '-q', '-t', tag, dir]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * Pushes `tag` to its registry and removes it from the engine, so that the next use must pull
 * it. Returns the manifest digest the registry holds it under.
 */
export async function pushAndForget(tag: string): Promise<string> {
  await run('docker', ['push', '-q', tag]);
  const info = await new Docker().getImage(tag).inspect();
  const repo = tag.slice(0, tag.lastIndexOf(':'));
  const digest = (info.RepoDigests ?? []).find((d) => d.startsWith(`${repo}@`))?.split('@')[1];
  if (!digest) throw new Error(`no digest for ${tag} after push: ${JSON.stringify(info.RepoDigests)}`);
  await new Docker().getImage(tag).remove();
  return digest;
}

/** Whether the engine holds an image by this name or id. */
export async function hasImage(name: string): Promise<boolean> {
  try {
    await new Docker().getImage(name).inspect();
    return true;
  } catch {
    return false;
  }
}

/**
 * Builds `tag` from the test image plus `files`, then runs `steps` (exec form, with no network)
 * in it: for what COPY cannot do, such as a setuid bit, which the legacy builder drops.
 */
export async function buildImageWithSteps(tag: string, files: Record<string, string | Buffer>, steps: string[][]): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-image-'));
  try {
    const copies = Object.keys(files).map((name) => `COPY ${name} /${name}`);
    const runs = steps.map((argv) => `RUN ${JSON.stringify(argv)}`);
    for (const [name, body] of Object.entries(files)) await writeFile(join(dir, name), body);
    await writeFile(join(dir, 'Dockerfile'), [`FROM ${await ensureTestImage()}`, ...copies, ...runs, ''].join('\n'));
    await run('docker', ['build', '-q', '--network', 'none', '-t', tag, dir]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
