import assert from 'node:assert/strict';
import { fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import Docker from 'dockerode';
import { LOG_TAIL_BYTES, describeOutcome, type TaskRunSpec } from '../../src/agent/runtime.js';
import { ImageLedger } from '../../src/agent/runtimes/docker-image-ledger.js';
import { DockerRuntime, LABEL_OWNER, LABEL_TASK, classify, demultiplex, pullRef, repositoryOf } from '../../src/agent/runtimes/docker-runtime.js';
import { FrameDecoder, UsageMeter } from '../../src/agent/runtimes/docker-streams.js';
import { TailBuffer } from '../../src/agent/tail-buffer.js';
import { buildImage, dockerSuite, ensureTestImage, hasImage, pushAndForget, registrySuite, startRegistry, type LocalRegistry } from '../helpers/docker.js';

const suite = await dockerSuite();
const registry = await registrySuite();
const docker = new Docker();

// Task ids of this file, far from other suites' (test files run two at a time on one engine).
const firstId = 700_000_000 + Math.floor(Math.random() * 1_000_000) * 100;
let lastId = firstId;
const usedIds = new Set<number>();
// This file's runtimes own their containers, so an agent under test elsewhere on this engine
// (with its own owner) never takes them for its leftovers, and these tests never take its.
const owner = `docker-runtime-test-${process.pid}`;
const newRuntime = (opts: ConstructorParameters<typeof DockerRuntime>[0] = {}) => new DockerRuntime({ owner, ...opts });
let work = '';

before(async () => {
  if (suite.skip) return;
  await ensureTestImage();
  work = await mkdtemp(join(tmpdir(), 'boxgrid-rt-'));
});
after(() => (work ? rm(work, { recursive: true, force: true }) : undefined));

/** A task spec with its own in/out dirs; `script` runs under sh -c. */
async function spec(script: string, over: Partial<TaskRunSpec> = {}): Promise<TaskRunSpec> {
  const id = ++lastId;
  usedIds.add(id);
  const inputsDir = join(work, `in-${id}`);
  const outputsDir = join(work, `out-${id}`);
  await mkdir(inputsDir);
  await mkdir(outputsDir);
  await chmod(outputsDir, 0o777); // the task runs as nobody
  return {
    taskId: id, jobId: 1, image: await ensureTestImage(), imageDigest: null, command: ['sh', '-c', script], env: {},
    resources: { cores: 1, memoryMiB: 64, diskMiB: 100, gpus: 0 }, maxRuntimeSeconds: 30,
    inputsDir, outputsDir, checkpointDir: null, user: '65534:65534', ...over,
  };
}

async function containersOf(taskId: number): Promise<Docker.ContainerInfo[]> {
  return docker.listContainers({ all: true, filters: { label: [`${LABEL_TASK}=${taskId}`] } });
}

/** Resolves with everything the task wrote once `text` has arrived through onOutput. */
function outputCollector(): { onOutput: (chunk: Buffer) => void; text: () => string; seen: (text: string) => Promise<string> } {
  const chunks: Buffer[] = [];
  const waiters: Array<{ text: string; resolve: (all: string) => void }> = [];
  const text = () => Buffer.concat(chunks).toString('utf8');
  return {
    onOutput: (chunk) => {
      chunks.push(chunk);
      const all = text();
      for (const w of waiters.filter((w) => all.includes(w.text))) w.resolve(all);
    },
    text,
    seen: (wanted) => new Promise((resolve) => {
      if (text().includes(wanted)) resolve(text());
      else waiters.push({ text: wanted, resolve });
    }),
  };
}

/** Resolves once the container has written `text`; fails if its log ends first. */
async function logged(container: Docker.Container, text: string): Promise<void> {
  const logs = (await container.logs({ follow: true, stdout: true, stderr: true })) as Readable;
  const decoder = new FrameDecoder();
  let seen = '';
  try {
    await new Promise<void>((resolve, reject) => {
      logs.on('data', (c: Buffer) => {
        seen += Buffer.concat(decoder.push(c)).toString();
        if (seen.includes(text)) resolve();
      });
      logs.on('end', () => reject(new Error(`the container's log ended without ${JSON.stringify(text)}: ${JSON.stringify(seen)}`)));
      logs.on('error', reject);
    });
  } finally {
    logs.destroy();
  }
}

/** Fails when `p` (the task) ends first: the event awaited must come while the task still runs. */
async function beforeEnd<T>(event: Promise<T>, task: Promise<unknown>, what: string): Promise<T> {
  return Promise.race([event, task.then(() => Promise.reject(new Error(`the task ended before ${what}`)))]);
}

describe('Docker runtime on a real engine', { skip: suite.skip }, () => {
  const runtime = newRuntime();

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
    const out = outputCollector();
    const s = await spec('echo started; sleep 60', { onOutput: out.onOutput });
    const running = runtime.run(s, ac.signal);
    await beforeEnd(out.seen('started\n'), running, 'it printed');
    ac.abort();
    assert.deepEqual((await running).outcome, { kind: 'aborted' });
  });

  test('freeze pauses a running task until thawed; one paused by someone else is refused with why; an ended task is not frozen (null)', async () => {
    const ac = new AbortController();
    const out = outputCollector();
    const s = await spec('echo started; sleep 60', { onOutput: out.onOutput });
    const running = runtime.run(s, ac.signal);
    await beforeEnd(out.seen('started\n'), running, 'it printed');
    const [info] = await containersOf(s.taskId);
    const container = docker.getContainer(info!.Id);
    const thaw = await runtime.freeze(s.taskId);
    assert.ok(thaw, 'a running task is frozen');
    assert.equal((await container.inspect()).State.Paused, true);
    await thaw();
    assert.equal((await container.inspect()).State.Paused, false, 'and thawed');
    // Paused by another hand: the agent neither takes it for its own freeze nor thaws it.
    await container.pause();
    await assert.rejects(runtime.freeze(s.taskId), /paused already/);
    assert.equal((await container.inspect()).State.Paused, true);
    await container.unpause();
    ac.abort();
    assert.deepEqual((await running).outcome, { kind: 'aborted' });
    assert.equal(await runtime.freeze(s.taskId), null, 'no container any more');
  });

  test('an abort before the start or while the container is being made leaves no container behind', async () => {
    const ac = new AbortController();
    ac.abort();
    const first = await spec('echo should-not-run');
    const r = await runtime.run(first, ac.signal);
    assert.deepEqual(r.outcome, { kind: 'aborted' });
    assert.equal(r.logTail, '');

    // Abort the moment the engine reports the container created.
    const second = await spec('echo started; sleep 60');
    const events = (await docker.getEvents({ filters: { type: ['container'], event: ['create'], label: [`${LABEL_TASK}=${second.taskId}`] } })) as Readable;
    const late = new AbortController();
    events.once('data', () => late.abort());
    try {
      assert.deepEqual((await runtime.run(second, late.signal)).outcome, { kind: 'aborted' });
    } finally {
      events.destroy();
    }
    assert.equal(late.signal.aborted, true);
    assert.deepEqual(await containersOf(first.taskId), []);
    assert.deepEqual(await containersOf(second.taskId), []);
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

  test('an image pinned by its id runs; a local image with another digest is not run', async () => {
    const id = (await docker.getImage(await ensureTestImage()).inspect()).Id;
    const right = await runtime.run(await spec('true', { imageDigest: id }));
    assert.deepEqual(right.outcome, { kind: 'succeeded' });
    // Named under a registry that refuses connections on loopback, so the pull by digest fails
    // here at once instead of reaching for the internet.
    const local = `127.0.0.1:9/boxgrid-test/pinned-${process.pid}:1`;
    await docker.getImage(await ensureTestImage()).tag({ repo: local.slice(0, local.lastIndexOf(':')), tag: '1' });
    try {
      const wrong = await runtime.run(await spec('true', { image: local, imageDigest: `sha256:${'0'.repeat(64)}` }));
      assert.equal(wrong.outcome.kind, 'image_error');
      assert.match(describeOutcome(wrong.outcome), /another digest/);
    } finally {
      await docker.getImage(local).remove();
    }
  });

  describe('usage', () => {
    test('peak memory: a task holding ~40 MiB reports more than 40 MiB', async () => {
      // The command substitution holds 40 MiB in a shell variable (busybox doubles its buffer on
      // the way); the sleep lets the engine's once-a-second stats sample see it.
      const r = await runtime.run(await spec('x=$(head -c 40m /dev/zero | tr "\\0" a); sleep 2; echo ${#x}', { resources: { cores: 1, memoryMiB: 256, diskMiB: 100, gpus: 0 } }));
      assert.deepEqual(r.outcome, { kind: 'succeeded' }, r.logTail);
      assert.equal(r.logTail.trim(), String(40 * 2 ** 20));
      assert.ok(r.usage, 'usage was measured');
      assert.ok(r.usage.peakMemoryMiB > 40, `peak ${r.usage.peakMemoryMiB} MiB`);
      assert.ok(r.usage.peakMemoryMiB <= 256, `peak ${r.usage.peakMemoryMiB} MiB is within the limit`);
    });

    test('CPU: a task that computes for ~2 s of CPU reports more than 1 s', async () => {
      // A fixed amount of work (not a wall-clock span, so a loaded machine only makes it slower),
      // then a pause in which a stats sample sees the whole of it.
      const r = await runtime.run(await spec('i=0; while [ $i -lt 600000 ]; do i=$((i+1)); done; sleep 1.5'));
      assert.deepEqual(r.outcome, { kind: 'succeeded' }, r.logTail);
      assert.ok(r.usage, 'usage was measured');
      assert.ok(r.usage.cpuSeconds > 1, `cpu ${r.usage.cpuSeconds} s`);
      assert.ok(r.usage.cpuSeconds * 1000 < r.durationMs, `cpu ${r.usage.cpuSeconds} s within one core over ${r.durationMs} ms`);
    });
  });

  describe('live output', () => {
    test('onOutput gets stdout and stderr as written, stdout lines in order, and the same bytes as the log tail', async () => {
      const out = outputCollector();
      const r = await runtime.run(await spec('i=1; while [ $i -le 300 ]; do echo line-$i; i=$((i+1)); done; echo err-line >&2', { onOutput: out.onOutput }));
      assert.deepEqual(r.outcome, { kind: 'succeeded' });
      const lines = out.text().split('\n').filter(Boolean);
      assert.deepEqual(lines.filter((l) => l.startsWith('line-')), Array.from({ length: 300 }, (_, i) => `line-${i + 1}`));
      assert.ok(lines.includes('err-line'));
      assert.equal(r.logTail, out.text());
    });

    test('a line printed before a long sleep arrives while the task still runs', async () => {
      const ac = new AbortController();
      const out = outputCollector();
      const running = runtime.run(await spec('echo before-the-sleep; sleep 60', { onOutput: out.onOutput, maxRuntimeSeconds: 25 }), ac.signal);
      assert.equal(await beforeEnd(out.seen('before-the-sleep\n'), running, 'its first line arrived'), 'before-the-sleep\n');
      ac.abort();
      const r = await running;
      assert.deepEqual(r.outcome, { kind: 'aborted' });
      assert.equal(r.logTail, 'before-the-sleep\n');
    });

    test('the log tail stays bounded while onOutput sees every byte', async () => {
      const line = '0123456789012345678901234567890123456789\n'; // 41 bytes
      let bytes = 0;
      const r = await runtime.run(await spec(`yes ${line.trim()} | head -n 8000; echo the-end`, { onOutput: (c) => (bytes += c.length) }));
      assert.deepEqual(r.outcome, { kind: 'succeeded' });
      assert.equal(bytes, 8000 * line.length + 'the-end\n'.length);
      assert.ok(Buffer.byteLength(r.logTail) <= LOG_TAIL_BYTES, `tail of ${Buffer.byteLength(r.logTail)} bytes`);
      assert.ok(Buffer.byteLength(r.logTail) > LOG_TAIL_BYTES - 2 * line.length);
      assert.ok(r.logTail.endsWith(`${line}the-end\n`));
      assert.ok(r.logTail.startsWith(line), 'starts with a whole line');
    });
    // Docker 20.10's json-file follow sometimes ends a follow cleanly before the last lines of a
    // container that just exited, and a stream can fail midway: onOutput still gets every byte.
    for (const cut of ['ends', 'fails'] as const) {
      test(`onOutput sees every byte, once and in order, when the live log stream ${cut} short midway`, async () => {
        class ShortStream extends DockerRuntime {
          protected override async openLogStream(container: Docker.Container): Promise<NodeJS.ReadableStream> {
            const real = (await super.openLogStream(container)) as Readable;
            const short = new PassThrough();
            let passed = 0;
            real.on('data', (chunk: Buffer) => {
              if (short.writableEnded || short.destroyed) return;
              const room = 5_003 - passed; // mid-frame, to leave the decoder a partial payload
              short.write(chunk.subarray(0, Math.max(0, room)));
              passed += chunk.length;
              if (passed >= 5_003) {
                real.destroy();
                if (cut === 'ends') short.end();
                else short.destroy(new Error('the stream broke'));
              }
            });
            real.on('end', () => short.end());
            return short;
          }
        }
        const out = outputCollector();
        const r = await new ShortStream({ owner }).run(await spec('i=1; while [ $i -le 2000 ]; do echo line-$i; i=$((i+1)); done; echo the-end', { onOutput: out.onOutput }));
        assert.deepEqual(r.outcome, { kind: 'succeeded' });
        const expected = Array.from({ length: 2000 }, (_, i) => `line-${i + 1}\n`).join('') + 'the-end\n';
        assert.equal(out.text(), expected);
        assert.equal(r.logTail, expected.slice(-Buffer.byteLength(r.logTail)));
        assert.ok(r.logTail.endsWith('line-2000\nthe-end\n'));
      });
    }
  });

  describe('leftovers of a crashed agent', () => {
    test('an agent killed mid-task leaves its container; a new agent finds it, follows it to its exit code and log, and removes it', async () => {
      const s = await spec('echo before-the-crash; while [ ! -e /in/go ]; do sleep 0.1; done; echo after-the-crash; exit 3');
      const child = fork(fileURLToPath(new URL('./docker-crash-child.js', import.meta.url)), [JSON.stringify(s), owner], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
      const exited = once(child, 'exit');
      const [message] = (await Promise.race([once(child, 'message'), exited.then(() => Promise.reject(new Error('the child agent exited early')))])) as [string];
      assert.equal(message, 'output');
      child.kill('SIGKILL');
      await exited;

      const restarted = newRuntime();
      assert.ok((await restarted.leftovers()).includes(s.taskId));
      const out = outputCollector();
      const following = restarted.reattach({ ...s, onOutput: out.onOutput });
      await beforeEnd(out.seen('before-the-crash\n'), following, 'the earlier output was replayed');
      await writeFile(join(s.inputsDir, 'go'), ''); // lets the task finish
      const r = await following;
      assert.deepEqual(r.outcome, { kind: 'failed', exitCode: 3 });
      assert.equal(r.logTail, 'before-the-crash\nafter-the-crash\n');
      assert.ok(r.durationMs > 0);
      assert.deepEqual(await containersOf(s.taskId), []);
      assert.ok(!(await restarted.leftovers()).includes(s.taskId));
    });

    test('the time limit counts from the container start, not from the re-attach', async () => {
      const s = await spec('echo a; sleep 2; echo b; sleep 60', { maxRuntimeSeconds: 3 });
      const container = await docker.createContainer(runtime.containerConfig(s));
      await container.start();
      await logged(container, 'b\n');
      const t0 = Date.now();
      const r = await newRuntime().reattach(s);
      assert.deepEqual(r.outcome, { kind: 'timeout', limitSeconds: 3 });
      assert.ok(Date.now() - t0 < 2500, `killed after ${Date.now() - t0} ms, not a full limit after the re-attach`);
      assert.ok(r.durationMs >= 3000);
      assert.ok(r.usage, 'usage sampled while it was followed');
      assert.ok(r.usage.peakMemoryMiB > 0);
      assert.deepEqual(await containersOf(s.taskId), []);
    });

    test('a task that ended while no agent watched is reported with its exit code and log', async () => {
      const s = await spec('echo bye; exit 5');
      const container = await docker.createContainer(runtime.containerConfig(s));
      const waited = container.wait({ condition: 'next-exit' });
      await container.start();
      await waited;
      const fresh = newRuntime();
      assert.ok((await fresh.leftovers()).includes(s.taskId));
      const r = await fresh.reattach(s);
      assert.deepEqual(r.outcome, { kind: 'failed', exitCode: 5 });
      assert.equal(r.logTail, 'bye\n');
      assert.deepEqual(await containersOf(s.taskId), []);
    });

    test('an abort while re-attached stops the task', async () => {
      const s = await spec('echo up; sleep 60');
      const container = await docker.createContainer(runtime.containerConfig(s));
      await container.start();
      const ac = new AbortController();
      const out = outputCollector();
      const following = newRuntime().reattach({ ...s, onOutput: out.onOutput }, ac.signal);
      await beforeEnd(out.seen('up\n'), following, 'it was followed');
      ac.abort();
      assert.deepEqual((await following).outcome, { kind: 'aborted' });
      assert.deepEqual(await containersOf(s.taskId), []);
    });

    test('a container the crashed agent made but never started is started and followed; remove() and reattach() on none', async () => {
      const s = await spec('echo first-start; exit 4');
      await docker.createContainer(runtime.containerConfig(s)); // created, never started
      const fresh = newRuntime();
      assert.ok((await fresh.leftovers()).includes(s.taskId));
      const r = await fresh.reattach(s);
      assert.deepEqual(r.outcome, { kind: 'failed', exitCode: 4 });
      assert.equal(r.logTail, 'first-start\n');
      assert.deepEqual(await containersOf(s.taskId), []);

      const running = await spec('sleep 60');
      await (await docker.createContainer(runtime.containerConfig(running))).start();
      await fresh.remove(running.taskId);
      assert.deepEqual(await containersOf(running.taskId), []);
      await fresh.remove(running.taskId); // nothing left: no error
      const none = await fresh.reattach(running);
      assert.equal(none.outcome.kind, 'agent_error');
      assert.match(describeOutcome(none.outcome), /no container/);
    });

    test("another agent's containers on the same engine are neither leftovers nor removed", async () => {
      const s = await spec('sleep 60');
      const other = new DockerRuntime({ owner: `${owner}-other` });
      const container = await docker.createContainer(other.containerConfig(s));
      try {
        assert.equal((await container.inspect()).Config.Labels[LABEL_OWNER], `${owner}-other`);
        const mine = newRuntime();
        assert.ok(!(await mine.leftovers()).includes(s.taskId));
        await mine.remove(s.taskId);
        assert.equal((await containersOf(s.taskId)).length, 1);
        assert.ok((await other.leftovers()).includes(s.taskId));
        assert.ok(!(await new DockerRuntime().leftovers()).includes(s.taskId), 'nor are they leftovers of a runtime without an owner');
      } finally {
        await container.remove({ force: true });
      }
    });
  });
});

describe('image pulls from a registry on 127.0.0.1', { skip: suite.skip || registry.skip }, () => {
  let reg: LocalRegistry;
  let state: string;
  before(async () => {
    reg = await startRegistry();
    state = join(work, `ledger-${process.pid}.json`);
  });
  after(async () => {
    await reg?.stop();
    // Untag what the tests pulled from it: names under this run's registry only, so an image
    // goes only when none of its other names (the test image's, anyone's) is left.
    for (const i of await docker.listImages()) {
      for (const name of [...(i.RepoTags ?? []), ...(i.RepoDigests ?? [])]) {
        if (reg && name.startsWith(`${reg.host}/`)) await docker.getImage(name).remove().catch(() => undefined);
      }
    }
  });

  /** A fresh image only the registry has: its name, digest and marker text. */
  async function remoteImage(name: string): Promise<{ image: string; digest: string; marker: string }> {
    const marker = `marker-${randomBytes(8).toString('hex')}`;
    const image = `${reg.host}/boxgrid-test/${name}:1`;
    await buildImage(image, { 'marker.txt': `${marker}\n` });
    const digest = await pushAndForget(image);
    assert.equal(await hasImage(image), false);
    return { image, digest, marker };
  }

  /**
   * Pull requests the engine served for a repository since `sinceMs`: one "pull" event each, even
   * when the engine joins concurrent pulls of one image internally (so the registry's log cannot tell).
   */
  async function enginePulls(repository: string, sinceMs: number): Promise<number> {
    const events = (await docker.getEvents({ since: Math.floor(sinceMs / 1000), until: Math.ceil(Date.now() / 1000), filters: { type: ['image'], event: ['pull'] } })) as Readable;
    let text = '';
    events.on('data', (c: Buffer) => (text += c.toString()));
    await once(events, 'end');
    return text.split('\n').filter(Boolean).filter((l) => (JSON.parse(l) as { id: string }).id.startsWith(`${repository}@`)).length;
  }

  test('a missing image is pulled by its pinned digest, verified, run and recorded as pulled', async () => {
    const runtime = newRuntime({ stateFile: state });
    const { image, digest, marker } = await remoteImage('by-digest');
    const r = await runtime.run(await spec('cat /marker.txt', { image, imageDigest: digest }));
    assert.deepEqual(r.outcome, { kind: 'succeeded' }, r.logTail);
    assert.equal(r.logTail, `${marker}\n`);
    assert.equal(await hasImage(`${repositoryOf(image)}@${digest}`), true);
    const recorded = await new ImageLedger(state).entries();
    assert.ok(recorded.some((e) => e.refs.includes(pullRef({ image, imageDigest: digest }))));
  });

  test('concurrent runs needing the same missing image pull it once', async () => {
    const runtime = newRuntime();
    const { image, digest, marker } = await remoteImage('shared');
    const specs = await Promise.all([1, 2, 3].map(() => spec('cat /marker.txt', { image, imageDigest: digest })));
    const t0 = Date.now();
    const results = await Promise.all(specs.map((s) => runtime.run(s)));
    for (const r of results) assert.equal(r.logTail, `${marker}\n`);
    assert.equal(await enginePulls(repositoryOf(image), t0), 1, 'one pull asked of the engine');
  });

  test('a pinned digest the registry does not have is an image error that says so', async () => {
    const { image } = await remoteImage('wrong-digest');
    const wrong = `sha256:${'0'.repeat(64)}`;
    const r = await newRuntime().run(await spec('true', { image, imageDigest: wrong }));
    assert.equal(r.outcome.kind, 'image_error');
    assert.match(describeOutcome(r.outcome), new RegExp(`could not pull .*${escape(`${repositoryOf(image)}@${wrong}`)}.*(manifest unknown|not found)`));
  });

  test('an unknown image is an image error naming the image and what the engine said', async () => {
    const image = `${reg.host}/boxgrid-test/no-such-image:1`;
    const r = await newRuntime().run(await spec('true', { image }));
    assert.equal(r.outcome.kind, 'image_error');
    assert.match(describeOutcome(r.outcome), new RegExp(`could not pull ${escape(image)}: .*(manifest unknown|not found)`));
  });

  test('a local tag that moved away from the pinned digest does not run: the pinned image is pulled', async () => {
    const { image, digest, marker } = await remoteImage('moved-tag');
    await docker.getImage(await ensureTestImage()).tag({ repo: repositoryOf(image), tag: '1' }); // the tag now names another image
    try {
      const r = await newRuntime().run(await spec('cat /marker.txt', { image, imageDigest: digest }));
      assert.equal(r.logTail, `${marker}\n`);
    } finally {
      await docker.getImage(image).remove();
    }
  });

  test('an abort during a pull returns at once and leaves no container', async () => {
    // A "registry" that accepts connections and never answers, so the pull hangs.
    const sockets: Socket[] = [];
    let connected!: (s: Socket) => void;
    const firstConnection = new Promise<Socket>((resolve) => (connected = resolve));
    const server = createServer((s) => {
      sockets.push(s);
      connected(s);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const port = (server.address() as AddressInfo).port;
      const ac = new AbortController();
      const s = await spec('true', { image: `127.0.0.1:${port}/boxgrid-test/hangs:1` });
      const running = newRuntime().run(s, ac.signal);
      await beforeEnd(firstConnection, running, 'the engine reached the registry');
      const t0 = Date.now();
      ac.abort();
      assert.deepEqual((await running).outcome, { kind: 'aborted' });
      // The engine itself would wait 10 s for the TLS handshake before even trying plain HTTP.
      assert.ok(Date.now() - t0 < 2000, `returned ${Date.now() - t0} ms after the abort`);
      assert.deepEqual(await containersOf(s.taskId), []);
    } finally {
      for (const s of sockets) s.destroy();
      server.close();
    }
  });

  test('pruning removes the least recently used pulled images until the rest fit, never one in use, never the owner\'s', async () => {
    const ledger = join(work, `prune-${process.pid}.json`);
    const runtime = newRuntime({ stateFile: ledger });
    const images = [];
    for (const name of ['prune-1', 'prune-2', 'prune-3']) images.push(await remoteImage(name));
    const [one, two, three] = images as [typeof images[0], typeof images[0], typeof images[0]];
    const refOf = (i: typeof one) => pullRef({ image: i.image, imageDigest: i.digest });
    // Used in the order 1, 2, 3, 1: 2 is the least recently used, then 3, then 1.
    for (const i of [one, two, three, one]) {
      assert.equal((await runtime.run(await spec('true', { image: i.image, imageDigest: i.digest }))).outcome.kind, 'succeeded');
    }
    // An image the owner has: used by a task, never pulled by boxgrid.
    assert.equal((await runtime.run(await spec('true'))).outcome.kind, 'succeeded');

    const sizeMiB = async (i: typeof one) => (await docker.getImage(refOf(i)).inspect()).Size / 2 ** 20;
    // Room for one and a half images; 3 is in use (named by its tag, which this host never had:
    // the whole repository is then kept), so 2 and then 1 go.
    const budget = (await sizeMiB(three)) * 1.5;
    const first = await runtime.pruneImages(budget, [three.image]);
    assert.deepEqual(first.removed, [refOf(two), refOf(one)]);
    assert.equal(await hasImage(refOf(two)), false);
    assert.equal(await hasImage(refOf(one)), false);
    assert.equal(await hasImage(refOf(three)), true);

    // The owner tags the last pulled image too: boxgrid drops its own reference, the image stays.
    const ownersRepo = `boxgrid-owner/prune-${process.pid}`;
    await docker.getImage(refOf(three)).tag({ repo: ownersRepo, tag: '1' });
    try {
      const all = await runtime.pruneImages(0, []);
      assert.deepEqual(all.removed, [refOf(three)]);
      assert.equal(await hasImage(`${ownersRepo}:1`), true);
      assert.equal(await hasImage(await ensureTestImage()), true, "the owner's image stays");
      assert.deepEqual(await new ImageLedger(ledger).entries(), []);
      assert.deepEqual((await runtime.pruneImages(0, [])).removed, []);
    } finally {
      await docker.getImage(`${ownersRepo}:1`).remove();
    }
  });
});

test('every container of this file was removed however its task ended', { skip: suite.skip }, async () => {
  const left = await docker.listContainers({ all: true, filters: { label: [LABEL_TASK] } });
  assert.deepEqual(left.map((c) => Number(c.Labels[LABEL_TASK])).filter((id) => usedIds.has(id)), []);
});

test('engine log frames are taken apart into their payloads, however the stream splits them', () => {
  const frame = (stream: number, text: string) => {
    const body = Buffer.from(text);
    const head = Buffer.alloc(8);
    head[0] = stream;
    head.writeUInt32BE(body.length, 4);
    return Buffer.concat([head, body]);
  };
  const raw = Buffer.concat([frame(1, 'out '), frame(2, 'err'), frame(1, '\n')]);
  assert.equal(demultiplex(raw).toString(), 'out err\n');
  assert.equal(demultiplex(Buffer.alloc(0)).toString(), '');
  for (let size = 1; size <= raw.length; size++) {
    const decoder = new FrameDecoder();
    const parts: Buffer[] = [];
    for (let at = 0; at < raw.length; at += size) parts.push(...decoder.push(raw.subarray(at, at + size)));
    assert.equal(Buffer.concat(parts).toString(), 'out err\n', `chunks of ${size}`);
  }
});

test('the tail buffer keeps the last bytes, cut at a line start', () => {
  const tail = new TailBuffer(10);
  for (const s of ['aaaa\n', 'bbbb\n', 'cccc\n']) tail.push(Buffer.from(s));
  assert.equal(tail.text(), 'cccc\n');
  const small = new TailBuffer(100);
  small.push(Buffer.from('whole\n'));
  assert.equal(small.text(), 'whole\n');
});

test('usage comes from the last CPU total and the memory peak; empty samples do not count', () => {
  const meter = new UsageMeter();
  assert.equal(meter.usage(), null);
  meter.add({ read: '0001-01-01T00:00:00Z', memory_stats: {}, cpu_stats: { cpu_usage: { total_usage: 0 } } });
  assert.equal(meter.usage(), null);
  meter.add({ read: '2026-01-01T00:00:00Z', memory_stats: { usage: 10 * 2 ** 20, max_usage: 50 * 2 ** 20 }, cpu_stats: { cpu_usage: { total_usage: 1.5e9 } } });
  meter.add({ read: '2026-01-01T00:00:01Z', memory_stats: { usage: 20 * 2 ** 20 }, cpu_stats: { cpu_usage: { total_usage: 2.25e9 } } });
  assert.deepEqual(meter.usage(), { cpuSeconds: 2.25, peakMemoryMiB: 50 });
});

test('image references: the repository, and what to pull for a pinned digest', () => {
  const d = `sha256:${'a'.repeat(64)}`;
  assert.equal(repositoryOf('busybox'), 'busybox');
  assert.equal(repositoryOf('busybox:1.36'), 'busybox');
  assert.equal(repositoryOf('127.0.0.1:5000/a/b'), '127.0.0.1:5000/a/b');
  assert.equal(repositoryOf('127.0.0.1:5000/a/b:2'), '127.0.0.1:5000/a/b');
  assert.equal(repositoryOf(`ghcr.io/x/y:3@${d}`), 'ghcr.io/x/y');
  assert.equal(pullRef({ image: 'host:5000/x:1', imageDigest: d }), `host:5000/x@${d}`);
  assert.equal(pullRef({ image: 'host:5000/x:1', imageDigest: null }), 'host:5000/x:1');
});

test('a 137 after the whole limit is a timeout an earlier agent did not live to report', () => {
  const s = { maxRuntimeSeconds: 10, resources: { cores: 1, memoryMiB: 64, diskMiB: 1, gpus: 0 } } as TaskRunSpec;
  const state = (exit: number, seconds: number) => ({ ExitCode: exit, OOMKilled: false, StartedAt: '2026-01-01T00:00:00Z', FinishedAt: new Date(Date.parse('2026-01-01T00:00:00Z') + seconds * 1000).toISOString() });
  assert.deepEqual(classify(state(137, 10.2), null, s), { kind: 'timeout', limitSeconds: 10 });
  assert.deepEqual(classify(state(137, 2), null, s), { kind: 'failed', exitCode: 137 });
  assert.deepEqual(classify(state(0, 20), null, s), { kind: 'succeeded' });
});

test('the ledger records pulls and uses, forgets dropped references, and survives a garbled file', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-ledger-'));
  try {
    const path = join(dir, 'sub', 'images.json');
    const ledger = new ImageLedger(path);
    assert.deepEqual(await ledger.entries(), []);
    await Promise.all([ledger.recordPull('sha256:a', 'r/a@x', 1), ledger.recordPull('sha256:b', 'r/b:1', 2)]);
    await ledger.touch('sha256:a', 5);
    await ledger.touch('sha256:untracked', 6);
    assert.deepEqual(await new ImageLedger(path).entries(), [
      { id: 'sha256:a', refs: ['r/a@x'], pulledAt: 1, lastUsedAt: 5 },
      { id: 'sha256:b', refs: ['r/b:1'], pulledAt: 2, lastUsedAt: 2 },
    ]);
    await ledger.dropRefs('sha256:b', ['r/b:1']);
    assert.deepEqual((await ledger.entries()).map((e) => e.id), ['sha256:a']);
    await writeFile(path, '{ not json');
    assert.deepEqual(await ledger.entries(), []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

test('a task that asks for GPUs gets an NVIDIA device request for that many (no GPU here: the request is what can be checked)', () => {
  const runtime = new DockerRuntime();
  const base: TaskRunSpec = {
    taskId: 1, jobId: 1, image: 'sci/gpu:1', imageDigest: null, command: ['run'], env: {},
    resources: { cores: 1, memoryMiB: 64, diskMiB: 100, gpus: 0 }, maxRuntimeSeconds: 30,
    inputsDir: '/tmp/in', outputsDir: '/tmp/out', checkpointDir: null, user: '65534:65534',
  };
  assert.equal(runtime.containerConfig(base).HostConfig?.DeviceRequests, undefined);
  const gpu = runtime.containerConfig({ ...base, resources: { ...base.resources, gpus: 2 } });
  assert.deepEqual(gpu.HostConfig?.DeviceRequests, [{ Driver: 'nvidia', Count: 2, Capabilities: [['gpu']] }]);
  assert.equal(gpu.HostConfig?.NetworkMode, 'none', 'a GPU does not loosen the sandbox');
});
