import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Docker from 'dockerode';
import type { TaskRunSpec } from '../../src/agent/runtime.js';
import { DockerRuntime, LABEL_TASK, demultiplex } from '../../src/agent/runtimes/docker-runtime.js';
import { dockerSuite, ensureTestImage } from '../helpers/docker.js';

const suite = await dockerSuite();

describe('Docker runtime on a real engine', { skip: suite.skip }, () => {
  const runtime = new DockerRuntime();
  let image: string;
  let work: string;
  let n = 0;

  before(async () => {
    image = await ensureTestImage();
    work = await mkdtemp(join(tmpdir(), 'boxgrid-rt-'));
  });
  after(() => rm(work, { recursive: true, force: true }));

  /** A task spec with its own in/out dirs; `script` runs under sh -c. */
  async function spec(script: string, over: Partial<TaskRunSpec> = {}): Promise<TaskRunSpec> {
    const id = ++n;
    const inputsDir = join(work, `in-${id}`);
    const outputsDir = join(work, `out-${id}`);
    await mkdir(inputsDir);
    await mkdir(outputsDir);
    await chmod(outputsDir, 0o777); // the task runs as nobody
    return {
      taskId: 1000 + id, jobId: 1, image, imageDigest: null, command: ['sh', '-c', script], env: {},
      resources: { cores: 1, memoryMiB: 64, diskMiB: 100, gpus: 0 }, maxRuntimeSeconds: 30,
      inputsDir, outputsDir, checkpointDir: null, user: '65534:65534', ...over,
    };
  }

  test('a task reads /in, writes /out, sees its env, and its log tail comes back', async () => {
    const s = await spec('cat /in/data.txt; echo "x=$X" > /out/result.txt; echo to-stderr >&2', { env: { X: '42' } });
    await writeFile(join(s.inputsDir, 'data.txt'), 'input bytes\n');
    const r = await runtime.run(s);
    assert.deepEqual(r.outcome, { kind: 'succeeded' });
    assert.equal(await readFile(join(s.outputsDir, 'result.txt'), 'utf8'), 'x=42\n');
    assert.match(r.logTail, /input bytes/);
    assert.match(r.logTail, /to-stderr/);
  });

  test('a non-zero exit is "failed" with its code', async () => {
    const r = await runtime.run(await spec('exit 7'));
    assert.deepEqual(r.outcome, { kind: 'failed', exitCode: 7 });
  });

  test('a command the image does not have fails the task (127), it is not an agent error', async () => {
    const r = await runtime.run({ ...(await spec('')), command: ['/no/such/program'] });
    assert.deepEqual(r.outcome, { kind: 'failed', exitCode: 127 });
    assert.match(r.logTail, /no such file|not found/i);
  });

  test('using more memory than the limit is reported as out of memory, not as a crash', async () => {
    // Grow a shell variable far past 32 MiB; swap is capped at the same limit.
    const r = await runtime.run(await spec('x=a; while true; do x="$x$x"; done', { resources: { cores: 1, memoryMiB: 32, diskMiB: 100, gpus: 0 } }));
    assert.deepEqual(r.outcome, { kind: 'out_of_memory', limitMiB: 32 });
  });

  test('running past the max runtime is a timeout', async () => {
    const r = await runtime.run(await spec('sleep 60', { maxRuntimeSeconds: 1 }));
    assert.deepEqual(r.outcome, { kind: 'timeout', limitSeconds: 1 });
  });

  test('an abort signal stops the task', async () => {
    const ac = new AbortController();
    const s = await spec('echo started > /out/started; sleep 60');
    const running = runtime.run(s, ac.signal);
    const docker = new Docker();
    // Abort once the container exists and has started (an event, not a sleep).
    for (;;) {
      const found = await docker.listContainers({ filters: { label: [`${LABEL_TASK}=${s.taskId}`], status: ['running'] } });
      if (found.length > 0) break;
      await new Promise((r) => setImmediate(r));
    }
    ac.abort();
    assert.deepEqual((await running).outcome, { kind: 'aborted' });
  });

  test('the sandbox: no network but loopback, read-only root, nobody, no capabilities, no privilege gain', async () => {
    const s = await spec(
      [
        'ls /sys/class/net > /out/net',
        'touch /root-write 2> /out/rootfs; echo $? >> /out/rootfs',
        'touch /tmp/ok && echo tmp-ok > /out/tmp',
        'id -u > /out/uid',
        'grep -E "^(CapEff|CapPrm|NoNewPrivs)" /proc/self/status > /out/caps',
      ].join('; '),
    );
    const r = await runtime.run(s);
    assert.deepEqual(r.outcome, { kind: 'succeeded' }, r.logTail);
    const read = (f: string) => readFile(join(s.outputsDir, f), 'utf8');
    assert.deepEqual((await read('net')).trim().split(/\s+/), ['lo']);
    assert.match(await read('rootfs'), /Read-only file system/);
    assert.equal((await read('tmp')).trim(), 'tmp-ok');
    assert.equal((await read('uid')).trim(), '65534');
    const caps = await read('caps');
    assert.match(caps, /CapEff:\s+0000000000000000/);
    assert.match(caps, /CapPrm:\s+0000000000000000/);
    assert.match(caps, /NoNewPrivs:\s+1/);
  });

  test('a fork bomb stops at the pid limit', async () => {
    const r = await runtime.run(await spec('i=0; while [ $i -lt 400 ]; do sleep 30 & i=$((i+1)); done; wait', { maxRuntimeSeconds: 5 }));
    assert.match(r.logTail, /(can't fork|Resource temporarily unavailable)/);
  });

  test('containers are removed however the task ends', async () => {
    const docker = new Docker();
    const left = await docker.listContainers({ all: true, filters: { label: [LABEL_TASK] } });
    assert.deepEqual(left.map((c) => c.Labels[LABEL_TASK]), []);
  });

  test('a missing image and a wrong pinned digest are image errors', async () => {
    const missing = await runtime.run(await spec('true', { image: 'boxgrid-test/does-not-exist:1' }));
    assert.equal(missing.outcome.kind, 'image_error');
    const pinned = await runtime.run(await spec('true', { imageDigest: `sha256:${'0'.repeat(64)}` }));
    assert.equal(pinned.outcome.kind, 'image_error');
    const id = (await new Docker().getImage(image).inspect()).Id;
    const right = await runtime.run(await spec('true', { imageDigest: id }));
    assert.deepEqual(right.outcome, { kind: 'succeeded' });
  });
});

test('engine log frames are taken apart into their payloads', () => {
  const frame = (stream: number, text: string) => {
    const body = Buffer.from(text);
    const head = Buffer.alloc(8);
    head[0] = stream;
    head.writeUInt32BE(body.length, 4);
    return Buffer.concat([head, body]);
  };
  assert.equal(demultiplex(Buffer.concat([frame(1, 'out '), frame(2, 'err'), frame(1, '\n')])).toString(), 'out err\n');
  assert.equal(demultiplex(Buffer.alloc(0)).toString(), '');
});
