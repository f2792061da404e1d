/**
 * The demo image, built here with no registry: FROM scratch, plus this machine's own `node`
 * binary (process.execPath) and the shared libraries `ldd` lists for it, copied to the same
 * paths, plus /app/tile.js. The build context is a tar made in a temporary directory and sent
 * to the Docker Engine API (dockerode); the Dockerfile has no RUN step, so the build starts no
 * container and needs no network. The tag carries a hash of what went in (the program, the
 * node version and binary path), so a later demo reuses the image, and a changed one is built
 * anew.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import type Docker from 'dockerode';
import { create as tarCreate } from 'tar';
import { TILE_PROGRAM } from './mandelbrot.js';

const exec = promisify(execFile);

export const DEMO_REPOSITORY = 'boxgrid-demo/mandelbrot';
/** Where the binary goes in the image, on PATH. */
const NODE_IN_IMAGE = '/usr/local/bin/node';

export interface DemoImage {
  tag: string;
  /** False when an earlier demo had built it. */
  built: boolean;
  /** Shared libraries copied in (0 when it was reused). */
  libraries: number;
  seconds: number;
}

export function demoImageTag(version: string): string {
  const hash = createHash('sha256').update(TILE_PROGRAM).update(`\0${process.version}\0${process.arch}\0${process.execPath}`).digest('hex').slice(0, 12);
  return `${DEMO_REPOSITORY}:${version}-${hash}`;
}

/** The shared libraries the dynamic loader would load for `binary` (absolute paths; none for a static binary). */
/**
 * Copies this machine's node (to /usr/local/bin/node) and the shared libraries it loads into
 * `rootfs`: enough for a FROM scratch image to run node, with no registry. Returns the libraries.
 */
export async function copyNodeRuntime(rootfs: string): Promise<string[]> {
  const libs = await sharedLibraries(process.execPath);
  await mkdir(join(rootfs, dirname(NODE_IN_IMAGE)), { recursive: true });
  await copyFile(process.execPath, join(rootfs, NODE_IN_IMAGE));
  for (const lib of libs) {
    await mkdir(join(rootfs, dirname(lib)), { recursive: true });
    await copyFile(lib, join(rootfs, lib)); // follows symlinks: the library itself, under the name the loader asks for
  }
  return libs;
}

export async function sharedLibraries(binary: string): Promise<string[]> {
  let stdout: string;
  try {
    ({ stdout } = await exec('ldd', [binary]));
  } catch (e) {
    const out = (e as { stdout?: string; stderr?: string }).stdout ?? '';
    if (/not a dynamic executable|statically linked/.test(out + ((e as { stderr?: string }).stderr ?? ''))) return [];
    throw new Error(`ldd ${binary} failed (${(e as Error).message.split('\n')[0]}); is ldd (libc-bin) installed?`);
  }
  // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" and "/lib64/ld-linux-x86-64.so.2 (0x…)"; not linux-vdso.
  return [...new Set(stdout.match(/(?<=^|\s)\/\S+/gm) ?? [])];
}

/** The image to run tiles in: the existing one, or one built now. */
export async function ensureDemoImage(docker: Docker, version: string): Promise<DemoImage> {
  const t0 = Date.now();
  const tag = demoImageTag(version);
  try {
    await docker.getImage(tag).inspect();
    return { tag, built: false, libraries: 0, seconds: (Date.now() - t0) / 1000 };
  } catch {
    // build it below
  }
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-demo-image-'));
  try {
    const rootfs = join(dir, 'rootfs');
    for (const d of ['app', 'etc', 'tmp', 'in', 'out']) await mkdir(join(rootfs, d), { recursive: true });
    await chmod(join(rootfs, 'tmp'), 0o1777);
    const libs = await copyNodeRuntime(rootfs);
    await writeFile(join(rootfs, 'app/tile.js'), TILE_PROGRAM);
    await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n');
    await writeFile(join(rootfs, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
    await writeFile(join(dir, 'Dockerfile'), [
      'FROM scratch',
      'COPY rootfs/ /',
      // HOME and TMPDIR on /tmp: the agent's containers have a read-only root with a tmpfs there.
      'ENV PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp TMPDIR=/tmp',
      'USER 65534:65534',
      'WORKDIR /out',
      'CMD ["node", "/app/tile.js"]',
      '',
    ].join('\n'));
    const context = join(dir, 'context.tar');
    await tarCreate({ cwd: dir, file: context }, ['Dockerfile', 'rootfs']);
    const stream = await docker.buildImage(context, {
      t: tag, rm: true, forcerm: true,
      labels: { 'org.opencontainers.image.title': 'boxgrid demo: Mandelbrot tiles', 'io.boxgrid.demo.node': process.version },
    });
    const output = await new Promise<Array<{ error?: string; stream?: string }>>((resolve, reject) => {
      docker.modem.followProgress(stream, (err: Error | null, out: Array<{ error?: string; stream?: string }>) => (err ? reject(err) : resolve(out)));
    });
    const failed = output.find((o) => o.error);
    if (failed) throw new Error(`docker build failed: ${failed.error}`);
    await docker.getImage(tag).inspect(); // the build said nothing wrong; make sure it is there
    return { tag, built: true, libraries: libs.length, seconds: (Date.now() - t0) / 1000 };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
