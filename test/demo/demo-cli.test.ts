// `boxgrid demo`, the README's main command, run for real as a process: a server and an agent
// in it, 100 Mandelbrot tiles, the picture and the summary. Once in containers on the local
// Docker engine (the demo image built from this machine's node, no registry), once on the
// native runtime as the demo falls back to it when no engine answers.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Docker from 'dockerode';
import type { DemoSummary } from '../../src/cli/commands/demo.js';
import { DEMO_REPOSITORY } from '../../src/demo/image.js';
import { runCli, type CliResult } from '../cli/run-cli.js';
import { decodePng, pixelAt } from '../helpers/png.js';

/** Locally a missing engine skips the container run with the reason; under CI=true it fails it. */
async function engineSuite(): Promise<{ skip: string | false }> {
  try {
    await new Docker().ping();
    return { skip: false };
  } catch (e) {
    const reason = `no Docker engine answers (${(e as Error).message})`;
    if (process.env.CI === 'true') throw new Error(`CI needs a Docker engine for the demo test, but ${reason}`);
    return { skip: `${reason} (start one with: dockerd --bridge=none --iptables=false --ip6tables=false)` };
  }
}

const TILES = 10;
const TILE_SIZE = 32;
const env = (): Record<string, string> => (process.env.DOCKER_HOST ? { DOCKER_HOST: process.env.DOCKER_HOST } : {});

/** What every run must show: exit 0, a picture of the set, and a summary of 100 tasks that succeeded. */
async function checkRun(r: CliResult, outDir: string, runtime: 'docker' | 'native'): Promise<DemoSummary> {
  assert.equal(r.code, 0, `the demo exits 0; it printed:\n${r.stdout}\n${r.stderr}`);
  const png = await readFile(join(outDir, 'mandelbrot.png'));
  assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'the PNG signature');
  assert.equal(png.subarray(12, 16).toString('latin1'), 'IHDR');
  assert.equal(png.readUInt32BE(16), TILES * TILE_SIZE, 'IHDR width');
  assert.equal(png.readUInt32BE(20), TILES * TILE_SIZE, 'IHDR height');
  const picture = decodePng(png);
  const side = TILES * TILE_SIZE;
  const centreLeft = pixelAt(picture, Math.floor(side * 0.35), side / 2); // about -1.15 + 0i: inside the set
  const corner = pixelAt(picture, 0, 0); // -2.2 + 1.5i: outside it
  assert.deepEqual(centreLeft, [0, 0, 0], 'a point inside the set is black');
  assert.notDeepEqual(corner, centreLeft, 'a corner outside the set is not');
  assert.ok(!picture.pixels.every((b, i) => b === picture.pixels[i % 3]), 'the picture is not uniform');
  const summary = JSON.parse(await readFile(join(outDir, 'summary.json'), 'utf8')) as DemoSummary;
  assert.equal(summary.runtime, runtime);
  assert.deepEqual(summary.tasks, { total: 100, succeeded: 100, failed: 0, cancelled: 0 });
  assert.equal(summary.picture.tiles, 100);
  assert.equal(summary.hosts.length, 1);
  assert.equal(summary.hosts[0]!.tasks, 100);
  assert.ok(summary.wallSeconds > 0 && summary.tasksPerSecond > 0 && summary.perTaskSeconds.mean > 0);
  assert.match(summary.dashboard, /^http:\/\/127\.0\.0\.1:\d+\/dashboard$/);
  return summary;
}

const engine = await engineSuite();

describe('boxgrid demo', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'boxgrid-demo-test-'));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('refuses a grid of no tiles, saying what it takes', async () => {
    const r = await runCli(['demo', '--tiles', '0']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /--tiles must be a whole number from 1 to 64/);
  });

  test('in containers: builds (or reuses) the demo image, runs 100 tiles, writes the picture and the summary (--json)', { skip: engine.skip, timeout: 180_000 }, async (t) => {
    const out = join(dir, 'docker-out');
    const started = Date.now();
    const r = await runCli(['demo', '--tiles', String(TILES), '--tile-size', String(TILE_SIZE), '--data', join(dir, 'docker-data'), '--out', out, '--json'], env());
    t.diagnostic(`the demo took ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const summary = await checkRun(r, out, 'docker');
    assert.deepEqual(JSON.parse(r.stdout), summary, 'with --json, stdout is the summary alone');
    assert.ok(summary.image?.startsWith(`${DEMO_REPOSITORY}:`), summary.image ?? 'no image');
    assert.match(r.stderr, /0\. (built the demo image|the demo image .* is already here)/);
    assert.match(r.stderr, /dashboard: http:\/\/127\.0\.0\.1:\d+\/dashboard/);
    const info = await new Docker().getImage(summary.image!).inspect();
    assert.equal(info.Config.User, '65534:65534', 'the image runs as nobody');
    assert.deepEqual(info.Config.Cmd, ['node', '/app/tile.js']);
  });

  test('with no container engine: says so in one line and runs the same demo on the native runtime', { timeout: 180_000 }, async (t) => {
    const out = join(dir, 'native-out');
    const started = Date.now();
    const r = await runCli(['demo', '--tiles', String(TILES), '--tile-size', String(TILE_SIZE), '--data', join(dir, 'native-data'), '--out', out,
      '--docker-socket', join(dir, 'no-engine.sock')]);
    t.diagnostic(`the demo took ${((Date.now() - started) / 1000).toFixed(1)} s`);
    await checkRun(r, out, 'native');
    const lines = r.stdout.split('\n');
    assert.match(lines[0]!, /^no container engine answers at .*no-engine\.sock, so the demo runs natively instead \(for containers, start one: .*systemctl start docker/);
    assert.match(r.stdout, /picture: +.*native-out\/mandelbrot\.png/);
    assert.match(r.stdout, /as native processes/);
  });
});
