// boxgrid's container image (Dockerfile), built for real on the local engine and run with the
// restrictions the Helm chart gives it. No registry is reachable here, so the node:20 base the
// Dockerfile names cannot be pulled: the build uses a base made from this machine's own Node
// (the binary and the libraries ldd lists, plus a static busybox for the shell) and
// PREBUILT=true (dist/ and the production node_modules/ built here; `npm ci` needs the network
// inside the build). With BOXGRID_TEST_NODE_IMAGE=node:20-bookworm-slim (an engine that can pull
// it) the real base is used instead. The full build stage (apt-get, npm ci, tsc) is not run here.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, chown, cp, mkdir, mkdtemp, readFile, rm, stat, writeFile, copyFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { dockerSuite } from '../helpers/docker.js';
import { copyNodeRuntime } from '../../src/demo/image.js';
import { ROOT } from '../helpers/helm.js';

const run = promisify(execFile);
const docker = (args: string[], timeout = 300_000) => run('docker', args, { maxBuffer: 64 << 20, timeout });

const suite = await dockerSuite();
const IMAGE = 'boxgrid-test/boxgrid:image-test';
const VERSION = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

/** A Node base image from this machine's own node binary, built once per Node version and engine. */
async function localNodeBase(): Promise<string> {
  const tag = `boxgrid-test/node-base:${process.version}`;
  try {
    await docker(['image', 'inspect', tag]);
    return tag;
  } catch {
    // build it below
  }
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-node-base-'));
  try {
    const rootfs = join(dir, 'rootfs');
    await mkdir(join(rootfs, 'bin'), { recursive: true });
    await mkdir(join(rootfs, 'etc'), { recursive: true });
    await copyNodeRuntime(rootfs); // node and the libraries ldd lists, as the demo's image has them
    await copyFile('/bin/busybox', join(rootfs, 'bin/busybox'));
    await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n');
    await writeFile(join(rootfs, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
    await writeFile(join(dir, 'Dockerfile'), [
      'FROM scratch',
      'COPY rootfs/ /',
      'RUN ["/bin/busybox", "sh", "-c", "/bin/busybox --install -s /bin && mkdir -p /tmp /usr/bin && chmod 1777 /tmp && ln -s /bin/busybox /usr/bin/env"]',
      'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
      'CMD ["node"]',
      '',
    ].join('\n'));
    await docker(['build', '-q', '-t', tag, dir]);
    return tag;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * A build context with dist/ and the production dependencies as built on this machine, less
 * what the Dockerfile's build stage deletes anyway (a smaller context is a faster build).
 */
async function prebuiltContext(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-image-context-'));
  for (const f of ['package.json', 'package-lock.json', 'Dockerfile']) await copyFile(join(ROOT, f), join(dir, f));
  await cp(join(ROOT, 'bin'), join(dir, 'bin'), { recursive: true });
  await cp(join(ROOT, 'dist/src'), join(dir, 'dist/src'), { recursive: true });
  // `npm ls --omit=dev` lists the production dependency tree; a directory inside one listed
  // already comes with it.
  // (npm exits non-zero over a tree it finds fault with, e.g. a dev dependency missing locally,
  // but still lists it.)
  const stdout = await run('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: ROOT, maxBuffer: 16 << 20 }).then(
    (r) => r.stdout,
    (e: { stdout?: string; message: string }) => {
      if (!e.stdout) throw new Error(`npm ls failed: ${e.message}`);
      return e.stdout;
    },
  );
  const dirs = stdout.split('\n').map((p) => relative(ROOT, p)).filter((p) => p.startsWith('node_modules/')).sort();
  const tops: string[] = [];
  for (const d of dirs) if (!tops.some((t) => d.startsWith(`${t}/`))) tops.push(d);
  // Hard links where the temporary directory is on the checkout's filesystem (nothing below
  // writes to a file, it only unlinks), else copies; GNU cp either way, as fs.cp is several
  // times slower over some 15,000 files.
  await run('cp', ['-al', '--parents', ...tops, dir], { cwd: ROOT }).catch(async () => {
    await rm(join(dir, 'node_modules'), { recursive: true, force: true });
    await run('cp', ['-a', '--parents', ...tops, dir], { cwd: ROOT });
  });
  await run('find', [join(dir, 'node_modules'), '-type', 'f', '(', '-name', '*.d.ts', '-o', '-name', '*.d.mts', '-o', '-name', '*.d.cts', '-o', '-name', '*.map',
    '-o', '-name', '*.md', '-o', '-name', '*.markdown', ')', '!', '-iname', 'licen[cs]e*', '-delete']);
  const sqlite = join(dir, 'node_modules/better-sqlite3');
  for (const p of ['deps', 'src', 'build/Release/obj', 'build/Release/obj.target', 'build/Release/.deps', 'build/Release/test_extension.node', 'build/Release/sqlite3.a']) {
    await rm(join(sqlite, p), { recursive: true, force: true });
  }
  return dir;
}

/**
 * The legacy builder leaves each build's first stage as an untagged image (about 170 MB). All
 * but the newest (the next build's cache) are removed: only images whose last step is this
 * Dockerfile's PREBUILT build step, and that nothing else uses.
 */
async function removeOldBuildStages(): Promise<void> {
  const ids = (await docker(['images', '--filter', 'dangling=true', '--quiet', '--no-trunc'])).stdout.split('\n').filter(Boolean);
  const ours: Array<{ id: string; created: string }> = [];
  for (const id of new Set(ids)) {
    const top = (await docker(['history', '--no-trunc', '--format', '{{.CreatedBy}}', id]).catch(() => ({ stdout: '' }))).stdout.split('\n')[0] ?? '';
    if (!/PREBUILT=true \/bin\/sh -c set -e;\s+if \[ "\$PREBUILT" = true \]/.test(top)) continue;
    ours.push({ id, created: (await docker(['image', 'inspect', id, '--format', '{{.Created}}'])).stdout.trim() });
  }
  ours.sort((a, b) => a.created.localeCompare(b.created));
  for (const { id } of ours.slice(0, -1)) await docker(['rmi', id]).catch(() => undefined);
}

describe('container image (Dockerfile; runtime stage on a local Node base, PREBUILT=true: see the file comment)', { skip: suite.skip }, () => {
  const timings: string[] = [];
  let dataDir = '';
  let container = '';
  before(async () => {
    let t = Date.now();
    const lap = (what: string) => {
      timings.push(`${what} ${((Date.now() - t) / 1000).toFixed(1)} s`);
      t = Date.now();
    };
    const base = process.env.BOXGRID_TEST_NODE_IMAGE || (await localNodeBase());
    lap('base image');
    const context = await prebuiltContext();
    lap('build context');
    const previous = await docker(['image', 'inspect', IMAGE, '--format', '{{.Id}}']).then((r) => r.stdout.trim(), () => null);
    try {
      await docker(['build', '-q', '--force-rm', '--build-arg', `NODE_IMAGE=${base}`, '--build-arg', 'PREBUILT=true', '-t', IMAGE, context], 600_000);
      lap('docker build');
    } finally {
      await rm(context, { recursive: true, force: true });
    }
    // The image an earlier run left, untagged now: removed with the layers only it used (the
    // build cache the new image shares stays).
    const current = (await docker(['image', 'inspect', IMAGE, '--format', '{{.Id}}'])).stdout.trim();
    if (previous && previous !== current) await docker(['rmi', previous]).catch(() => undefined);
    await removeOldBuildStages();
    lap('clean-up');
  }, { timeout: 900_000 });
  after(async () => {
    if (container) await docker(['rm', '-f', container]).catch(() => undefined);
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  test('it builds, and runs `boxgrid --version` with no network', async (t) => {
    t.diagnostic(`preparing the image took: ${timings.join(', ')}`);
    const { stdout } = await docker(['run', '--rm', '--network', 'none', IMAGE, '--version']);
    assert.equal(stdout.trim(), VERSION);
    const help = await docker(['run', '--rm', '--network', 'none', IMAGE]);
    assert.match(help.stdout, /Usage: boxgrid/, 'with no arguments it prints the help');
  });

  test('it runs as uid 10001, not root, with boxgrid on PATH', async () => {
    const { stdout } = await docker(['image', 'inspect', IMAGE, '--format', '{{.Config.User}} {{json .Config.Entrypoint}}']);
    assert.equal(stdout.trim(), '10001:10001 ["node","/app/bin/boxgrid.js"]');
    const id = await docker(['run', '--rm', '--network', 'none', '--entrypoint', 'id', IMAGE]);
    assert.match(id.stdout, /^uid=10001\(boxgrid\) gid=10001\(boxgrid\)/);
    const onPath = await docker(['run', '--rm', '--network', 'none', '--entrypoint', 'boxgrid', IMAGE, '--version']);
    assert.equal(onPath.stdout.trim(), VERSION, '`kubectl exec … -- boxgrid …` finds it');
  });

  test('it holds the production dependencies only, and no sources, tests or build leftovers', async () => {
    const script = [
      'ls /app', 'echo ---', 'ls /app/dist', 'echo ---', 'ls /app/node_modules', 'echo ---',
      'ls /app/node_modules/better-sqlite3/build/Release', 'echo ---', "find /app/node_modules -name '*.d.ts' | wc -l",
    ].join('; ');
    const { stdout } = await docker(['run', '--rm', '--network', 'none', '--entrypoint', 'sh', IMAGE, '-c', script]);
    const [app, dist, modules, sqlite, declarations] = stdout.split('---\n').map((s) => s.trim().split(/\s+/));
    assert.deepEqual(app, ['bin', 'dist', 'node_modules', 'package-lock.json', 'package.json']);
    assert.deepEqual(dist, ['src']);
    for (const dev of ['typescript', 'fast-check', 's3rver', 'kubernetes-models']) assert.ok(!modules!.includes(dev), `no ${dev}`);
    for (const dep of ['fastify', 'better-sqlite3', 'pg', '@kubernetes']) assert.ok(modules!.includes(dep), `has ${dep}`);
    assert.deepEqual(sqlite, ['better_sqlite3.node']);
    assert.deepEqual(declarations, ['0']);
  });

  test('staging containers of task pods run it as nobody, on a read-only root, without capabilities', async () => {
    const r = await docker(['run', '--rm', '--network', 'none', '--read-only', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges', '--user', '65534:65534', IMAGE, 'stage', 'in', '--help']);
    assert.match(r.stdout, /--dir/);
  });

  test('the server runs as the chart runs it: read-only root, no capabilities, a volume owned by root and the pod group; the CLI inside needs no token; SIGTERM ends it cleanly', async () => {
    // As a kubelet leaves a volume with fsGroup: owned by root, group 10001, group-writable, setgid.
    dataDir = await mkdtemp(join(tmpdir(), 'boxgrid-image-data-'));
    if (process.getuid?.() === 0) {
      await chown(dataDir, 0, 10001);
      await chmod(dataDir, 0o2775);
    } else {
      await chmod(dataDir, 0o777);
    }
    const { stdout } = await docker([
      'run', '-d', '--network', 'none', '--read-only', '--tmpfs', '/tmp', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges',
      '-v', `${dataDir}:/data`, IMAGE, 'server', '--listen', '0.0.0.0:8470', '--data', '/data/server',
    ]);
    container = stdout.trim();
    const probe = async (path: string): Promise<string | undefined> => {
      const script = `fetch('http://127.0.0.1:8470${path}').then(async (r) => console.log(r.status, await r.text()), () => console.log('down'))`;
      const r = await docker(['exec', container, 'node', '-e', script]);
      return r.stdout.startsWith('200 ') ? r.stdout.trim() : undefined;
    };
    const deadline = Date.now() + 60_000;
    let ready: string | undefined;
    while (!(ready = await probe('/readyz'))) {
      const state = (await docker(['inspect', container, '--format', '{{.State.Running}}'])).stdout.trim();
      if (state !== 'true' || Date.now() > deadline) assert.fail(`the server did not become ready: ${(await docker(['logs', container])).stderr.slice(-3000)}`);
    }
    assert.equal(ready, '200 {"status":"ready"}');
    assert.equal(await probe('/healthz'), '200 {"status":"ok"}');
    // The dashboard's static files came along (npm run build copies them into dist/src).
    assert.match((await probe('/dashboard/')) ?? '', /<title>boxgrid dashboard<\/title>/, 'the image serves the dashboard');
    // What the chart's NOTES.txt tells operators to run.
    const token = await docker(['exec', container, 'boxgrid', 'enroll-token', 'create', '--uses', '1', '--json']);
    assert.match((JSON.parse(token.stdout) as { token: string }).token, /^bge_/);
    const admin = await stat(join(dataDir, 'server', 'admin.token'));
    assert.equal(admin.mode & 0o777, 0o600);
    assert.equal(admin.uid, 10001);
    await docker(['stop', '--time', '20', container]);
    const { stdout: exit } = await docker(['inspect', container, '--format', '{{.State.ExitCode}}']);
    assert.equal(exit.trim(), '0', 'SIGTERM to node as PID 1: a clean shutdown');
    const logs = await docker(['logs', container]);
    assert.match(logs.stderr, /first start: created operator "admin"/);
    assert.match(logs.stderr, /SIGTERM: shutting down/);
    await assert.rejects(access(join(dataDir, 'server', 'server.json')), 'server.json is removed on a clean shutdown');
  });

  test('.dockerignore keeps the build context to the sources', async () => {
    const lines = (await readFile(join(ROOT, '.dockerignore'), 'utf8')).split('\n').map((l) => l.trim());
    for (const p of ['.git', 'node_modules', 'dist']) assert.ok(lines.includes(p), `.dockerignore leaves out ${p}`);
  });
});
