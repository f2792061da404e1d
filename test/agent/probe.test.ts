import assert from 'node:assert/strict';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { parseNvidiaSmi, probeGpus, probeHost } from '../../src/agent/probe.js';
import { DockerRuntime } from '../../src/agent/runtimes/docker-runtime.js';
import { dockerSuite, ensureTestImage, TEST_IMAGE } from '../helpers/docker.js';

describe('GPU probing (no GPU here: parsing is tested on nvidia-smi\'s output format)', () => {
  test('parses one line per GPU, names with commas included', () => {
    const out = '0, NVIDIA A100-SXM4-40GB, 40960, GPU-5e9f2c4a-0000-1111-2222-333344445555\n1, Tesla T4, Rev. B, 15360, GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee\n\n';
    assert.deepEqual(parseNvidiaSmi(out), [
      { index: 0, name: 'NVIDIA A100-SXM4-40GB', memoryMiB: 40960, uuid: 'GPU-5e9f2c4a-0000-1111-2222-333344445555' },
      { index: 1, name: 'Tesla T4, Rev. B', memoryMiB: 15360, uuid: 'GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee' },
    ]);
  });

  test('ignores what is not a GPU line (errors, headers, blank output)', () => {
    assert.deepEqual(parseNvidiaSmi(''), []);
    assert.deepEqual(parseNvidiaSmi('NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver.\n'), []);
    assert.deepEqual(parseNvidiaSmi('index, name, memory.total [MiB], uuid\n'), []);
  });

  test('runs nvidia-smi when there is one, and finds no GPU when there is none', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'boxgrid-smi-'));
    try {
      const fake = join(dir, 'nvidia-smi');
      await writeFile(fake, '#!/bin/sh\necho "0, Test GPU, 1024, GPU-00000000-0000-0000-0000-000000000000"\n');
      await chmod(fake, 0o755);
      assert.deepEqual((await probeGpus(fake)).map((g) => g.name), ['Test GPU']);
      assert.deepEqual(await probeGpus(join(dir, 'absent')), []);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

test('probing this machine finds its cores, memory, free disk and platform', async () => {
  const p = await probeHost(tmpdir(), null, '/nonexistent/nvidia-smi');
  assert.ok(p.cores >= 1);
  assert.ok(p.memoryMiB > 0);
  assert.ok(p.diskFreeMiB > 0);
  assert.match(p.platform, /^linux\/(amd64|arm64)$/);
  assert.equal(p.runtime, null);
  assert.deepEqual(p.gpus, []);
});

const suite = await dockerSuite();
test('with a Docker engine, the probe names it and lists the images it holds', { skip: suite.skip }, async () => {
  await ensureTestImage();
  const p = await probeHost(tmpdir(), new DockerRuntime(), '/nonexistent/nvidia-smi');
  assert.equal(p.runtime?.name, 'docker');
  assert.match(p.runtime?.version ?? '', /^\d+\.\d+/);
  assert.ok(p.images.includes(TEST_IMAGE), `${TEST_IMAGE} in ${p.images.join(', ')}`);
});
