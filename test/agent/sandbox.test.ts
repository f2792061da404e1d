// The sandbox suite: tasks that attack the host or each other, each run on a real Docker engine
// through the DockerRuntime (and a few through a real server and agent), each contained and
// reported with the outcome a user would see. Every attack is bounded by its task's time limit.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import Docker from 'dockerode';
import { describeOutcome, type TaskRunResult, type TaskRunSpec } from '../../src/agent/runtime.js';
import { DockerRuntime, LABEL_OWNER, LABEL_TASK, overDiskMessage } from '../../src/agent/runtimes/docker-runtime.js';
import { buildImageWithSteps, dockerSuite, ensureTestImage } from '../helpers/docker.js';
import { ownDockerRuntime, startGrid, untilBatchDone, type TestGrid } from '../helpers/grid.js';

const suite = await dockerSuite();
const docker = new Docker();
const execFileP = promisify(execFile);

// Task ids far from other suites' (test files run two at a time on one engine); containers
// carry this file's owner, so no agent elsewhere takes them for its leftovers.
let lastId = 800_000_000 + Math.floor(Math.random() * 1_000_000) * 100;
const owner = `sandbox-test-${process.pid}`;
const PIDS_LIMIT = 128;
const runtime = new DockerRuntime({ owner, pidsLimit: PIDS_LIMIT });
/** An image with a setuid-root program that exits 0 when it runs as root (euid 0), 13 when not. */
const SETUID_IMAGE = 'boxgrid-test/setuid-root:1';
const SETUID_PROGRAM = '/become-root';
let work = '';

before(async () => {
  if (suite.skip) return;
  await ensureTestImage();
  work = await mkdtemp(join(tmpdir(), 'boxgrid-sandbox-'));
  if (process.arch === 'x64') {
    await buildImageWithSteps(SETUID_IMAGE, { 'become-root': euidProbe() }, [['/bin/chmod', '4755', SETUID_PROGRAM]]);
  }
});
after(() => (work ? rm(work, { recursive: true, force: true }) : undefined));

/** A task with its own dirs (/checkpoint only with `checkpoint`), run as nobody; `script` runs under sh -c. */
async function spec(script: string, over: Partial<TaskRunSpec> = {}, { checkpoint = false } = {}): Promise<TaskRunSpec> {
  const id = ++lastId;
  const dir = (name: string) => join(work, `${name}-${id}`);
  for (const d of ['in', 'out', 'checkpoint']) {
    await mkdir(dir(d));
    if (d !== 'in') await chmod(dir(d), 0o777); // writable by the task's nobody, as the agent does when not root
  }
  return {
    taskId: id, jobId: 1, image: await ensureTestImage(), imageDigest: null, command: ['sh', '-c', script], env: {},
    resources: { cores: 1, memoryMiB: 64, diskMiB: 100, gpus: 0 }, maxRuntimeSeconds: 20,
    inputsDir: dir('in'), outputsDir: dir('out'), checkpointDir: checkpoint ? dir('checkpoint') : null, user: '65534:65534', ...over,
  };
}

async function containersLeft(taskId: number, by = owner): Promise<number> {
  return (await docker.listContainers({ all: true, filters: { label: [`${LABEL_TASK}=${taskId}`, `${LABEL_OWNER}=${by}`] } })).length;
}

/** Runs a task and checks what every attack must leave: no container. */
async function runContained(s: TaskRunSpec, signal?: AbortSignal): Promise<TaskRunResult> {
  const r = await runtime.run(s, signal);
  assert.equal(await containersLeft(s.taskId), 0, 'the container is removed');
  return r;
}

/** Runs `script` in a plain container of `image`, with the engine's defaults but no network: the control that shows an attack would work without the sandbox. */
async function unsandboxed(image: string, user: string, script: string): Promise<{ exitCode: number; log: string }> {
  const container = await docker.createContainer({ Image: image, User: user, Cmd: ['sh', '-c', script], NetworkDisabled: true, HostConfig: { NetworkMode: 'none' } });
  try {
    await container.start();
    const { StatusCode } = (await container.wait()) as { StatusCode: number };
    const log = (await container.logs({ stdout: true, stderr: true })) as Buffer;
    return { exitCode: StatusCode, log: log.toString('latin1') };
  } finally {
    await container.remove({ force: true });
  }
}

describe('the sandbox holds against hostile tasks (real Docker engine)', { skip: suite.skip }, () => {
  test('network: a task has only lo; it reaches neither a listener on the host\'s loopback nor a routable address', async () => {
    let connections = 0;
    const listener = createServer((socket) => {
      connections++;
      socket.destroy();
    });
    await new Promise<void>((resolve) => listener.listen(0, '127.0.0.1', resolve));
    const { port } = listener.address() as AddressInfo;
    try {
      // 192.0.2.1 is TEST-NET-1 (RFC 5737): routable in form, reserved, so nothing could answer even if a packet left.
      const s = await spec(`
        tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /out/interfaces
        nc -w 2 192.0.2.1 80 </dev/null
        nc -w 2 127.0.0.1 ${port} </dev/null`);
      const r = await runContained(s);
      assert.deepEqual(r.outcome, { kind: 'failed', exitCode: 1 }, r.logTail);
      assert.match(r.logTail, /network is unreachable/i);
      assert.match(r.logTail, /connection refused/i, 'its 127.0.0.1 is its own loopback, where nothing listens');
      assert.equal(await readFile(join(s.outputsDir, 'interfaces'), 'utf8'), 'lo\n');
      assert.equal(connections, 0, 'the host listener saw no connection');
    } finally {
      listener.close();
    }
  });

  test('write to /: the root and system directories are read-only; the task fails with its exit code and the host is untouched', async () => {
    const marker = `boxgrid-was-here-${randomBytes(4).toString('hex')}`;
    const s = await spec(`
      refused=0
      for dir in / /bin /etc /sys; do touch "$dir/${marker}" || refused=$((refused+1)); done
      (echo hacked > /proc/sys/kernel/hostname) || refused=$((refused+1))
      mount -o remount,rw / || refused=$((refused+1))
      exit $refused`);
    const r = await runContained(s);
    assert.deepEqual(r.outcome, { kind: 'failed', exitCode: 6 }, r.logTail);
    assert.equal(describeOutcome(r.outcome), 'exited with code 6');
    assert.equal(r.logTail.match(/read-only file system/gi)?.length, 5, r.logTail);
    assert.match(r.logTail, /mount: permission denied/);
    for (const dir of ['/', '/bin', '/etc']) assert.equal(existsSync(join(dir, marker)), false, dir);
  });

  test('privilege gain: a setuid-root program does not make the task root (no-new-privileges); it runs as 65534 with no capabilities', { skip: process.arch === 'x64' ? false : 'the setuid probe is x86-64 machine code' }, async () => {
    // The control: the same image without the sandbox's options runs the program as root.
    const control = await unsandboxed(SETUID_IMAGE, '65534:65534', `exec ${SETUID_PROGRAM}`);
    assert.equal(control.exitCode, 0, 'without no-new-privileges the setuid bit gives euid 0 (the image is a real test)');

    const s = await spec(`
      id -u > /out/uid
      ls -ln ${SETUID_PROGRAM} | cut -c1-10 > /out/mode
      grep -E '^(NoNewPrivs|CapEff|CapBnd)' /proc/self/status > /out/status
      exec ${SETUID_PROGRAM}`, { image: SETUID_IMAGE });
    const r = await runContained(s);
    assert.deepEqual(r.outcome, { kind: 'failed', exitCode: 13 }, 'the program found it was not root');
    assert.equal(await readFile(join(s.outputsDir, 'uid'), 'utf8'), '65534\n');
    assert.equal(await readFile(join(s.outputsDir, 'mode'), 'utf8'), '-rwsr-xr-x\n', 'the program is setuid root inside');
    assert.equal(await readFile(join(s.outputsDir, 'status'), 'utf8'), 'CapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nNoNewPrivs:\t1\n');
  });

  test('capabilities: chown, mknod, a raw socket (ping) and setting the clock are refused, even to uid 0 inside', async () => {
    // Each attempt that works adds one to the exit code. `date -s` exits 0 even when refused: its message tells.
    const attempts = `
      ok=0
      mkdir -p /tmp && touch /tmp/f
      chown 1:1 /tmp/f && ok=$((ok+1))
      mknod /tmp/mem c 1 1 && ok=$((ok+1))
      ping -c 1 -W 1 127.0.0.1 && ok=$((ok+1))
      said=$(date -s 2001-01-01 2>&1); echo "$said"
      case "$said" in *"can't set date"*) ;; *) ok=$((ok+1)) ;; esac
      exit $ok`;
    const control = await unsandboxed(await ensureTestImage(), '0:0', attempts);
    assert.ok(control.exitCode >= 2, `with the engine's default capabilities root can chown and mknod (exit ${control.exitCode}): ${control.log}`);

    for (const user of ['65534:65534', '0:0']) {
      const r = await runContained(await spec(attempts, { user }));
      assert.deepEqual(r.outcome, { kind: 'succeeded' }, `as ${user}, none of the four worked: ${r.logTail}`);
      assert.equal(r.logTail.match(/operation not permitted/gi)?.length, 3, r.logTail); // chown, mknod, date
      assert.match(r.logTail, /ping: permission denied/);
    }
    assert.ok(new Date().getFullYear() > 2001, 'the host clock is untouched');
  });

  test('fork bomb: held at the pid limit while the host stays responsive; it ends at its time limit and its container is removed', async () => {
    // The bomb goes off in a subshell, so the task's own shell, blocked reading a FIFO it holds
    // open (no fork, no CPU), is not ended by a fork of its own failing (a shell whose fork fails
    // exits 2): the task ends at its time limit however the race goes.
    const s = await spec('echo bombing; mkfifo /tmp/hold; (bomb() { bomb | bomb & }; bomb) & read x <> /tmp/hold', { maxRuntimeSeconds: 5 });
    const running = runContained(s);
    // Watch the container's pid count until the bomb presses on the limit (or the task ends):
    // processes die and are replaced all the time, so a sample seldom catches the exact limit.
    const pressing = Math.floor(PIDS_LIMIT * 0.9);
    let most = 0;
    for (let ended = false; !ended && most < pressing; ) {
      const [c] = await docker.listContainers({ filters: { label: [`${LABEL_TASK}=${s.taskId}`] } });
      if (c) {
        const stats = (await docker.getContainer(c.Id).stats({ stream: false, 'one-shot': true }).catch(() => null)) as { pids_stats?: { current?: number } } | null;
        most = Math.max(most, stats?.pids_stats?.current ?? 0);
      }
      ended = await Promise.race([running.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 100))]);
    }
    assert.ok(most >= pressing && most <= PIDS_LIMIT, `the bomb pressed on its pid limit of ${PIDS_LIMIT} (${most} processes seen)`);
    const t0 = Date.now();
    await execFileP('sh', ['-c', 'echo host alive']);
    await docker.ping();
    assert.ok(Date.now() - t0 < 3_000, `the host forks and the engine answers (${Date.now() - t0} ms)`);
    const r = await running;
    assert.deepEqual(r.outcome, { kind: 'timeout', limitSeconds: 5 });
    assert.equal(describeOutcome(r.outcome), 'killed: ran longer than its limit of 5 s');
    assert.match(r.logTail, /bombing/);
    assert.match(r.logTail, /can't fork/, 'the limit refused its forks');
  });

  test('memory: allocating past the limit is "out of memory" with the limit in MiB', async () => {
    const r = await runContained(await spec('x=a; while true; do x="$x$x"; done', { resources: { cores: 1, memoryMiB: 32, diskMiB: 100, gpus: 0 }, maxRuntimeSeconds: 15 }));
    assert.deepEqual(r.outcome, { kind: 'out_of_memory', limitMiB: 32 });
    assert.equal(describeOutcome(r.outcome), 'killed: used more than its memory limit of 32 MiB');
  });

  test('CPU: four busy threads with a share of half a core use about half a core', async () => {
    const share = 0.5;
    const s = await spec('for i in 1 2 3 4; do timeout 3 sh -c "while :; do :; done" & done; wait', { resources: { cores: share, memoryMiB: 64, diskMiB: 100, gpus: 0 } });
    const r = await runContained(s);
    assert.deepEqual(r.outcome, { kind: 'succeeded' }, r.logTail);
    assert.ok(r.usage, 'the runtime measured the task');
    const wallSeconds = r.durationMs / 1000;
    const used = r.usage.cpuSeconds / wallSeconds;
    // Unlimited, the threads would take both cores of this machine (2.0); the bound allows for sampling and load.
    assert.ok(used <= share * 1.5 + 0.1, `used ${used.toFixed(2)} cores (${r.usage.cpuSeconds} s in ${wallSeconds} s)`);
    assert.ok(r.usage.cpuSeconds > 0.3, `it did burn CPU (${r.usage.cpuSeconds} s)`);
  });

  describe('disk: writing past resources.diskMiB', () => {
    const limited = { cores: 1, memoryMiB: 64, diskMiB: 16, gpus: 0 };

    test('into /out: the runtime measures /out while the task runs and kills it once it holds more than the limit', async () => {
      // 1 MiB files, so no single file meets the per-file cap: only the measurement can stop it.
      const s = await spec('i=0; while [ $i -lt 48 ]; do dd if=/dev/zero of=/out/part$i bs=1M count=1 2>/dev/null; i=$((i+1)); done; echo wrote; sleep 60', { resources: limited });
      const r = await runContained(s);
      assert.deepEqual(r.outcome, { kind: 'output_error', message: 'wrote more than its disk limit of 16 MiB to /out' });
      assert.equal(describeOutcome(r.outcome), 'outputs refused: wrote more than its disk limit of 16 MiB to /out');
      assert.ok(r.durationMs < 10_000, `killed by the disk watch, long before its ${s.maxRuntimeSeconds} s limit (${r.durationMs} ms)`);
    });

    test('into /checkpoint, one huge file: no file may pass the limit (fallocate and write are cut at once); reported the same', async () => {
      const s = await spec('fallocate -l 100G /checkpoint/huge; dd if=/dev/zero of=/checkpoint/big bs=1M count=1000', { resources: limited }, { checkpoint: true });
      const r = await runContained(s);
      assert.deepEqual(r.outcome, { kind: 'output_error', message: overDiskMessage(s) });
      assert.match(overDiskMessage(s), /of 16 MiB to \/out and \/checkpoint$/);
      assert.match(r.logTail, /file size limit exceeded/i);
      assert.equal((await stat(join(s.checkpointDir!, 'huge'))).blocks, 0, 'fallocate got no space at all');
      assert.equal((await stat(join(s.checkpointDir!, 'big'))).size, 17 * 2 ** 20, 'the write stopped at the limit plus 1 MiB');
    });

    test('into /tmp: a tmpfs no bigger than the limit; the write fails with ENOSPC and the task with its exit code', async () => {
      const r = await runContained(await spec('dd if=/dev/zero of=/tmp/fill bs=1M count=1000', { resources: limited }));
      assert.deepEqual(r.outcome, { kind: 'failed', exitCode: 1 }, r.logTail);
      assert.match(r.logTail, /no space left on device/i);
      assert.match(r.logTail, /^16\+0 records out/m, 'it got exactly the 16 MiB of its limit');
    });

    test('under the limit a task succeeds and keeps its outputs', async () => {
      const s = await spec('dd if=/dev/zero of=/out/data bs=1M count=12 2>/dev/null', { resources: limited });
      const r = await runContained(s);
      assert.deepEqual(r.outcome, { kind: 'succeeded' });
      assert.equal((await stat(join(s.outputsDir, 'data'))).size, 12 * 2 ** 20);
    });
  });

  test('another task\'s files: a task sees neither the /in, /out and /checkpoint of a task running beside it, nor the host\'s root or the Docker socket', async () => {
    const secret = randomBytes(16).toString('hex');
    const a = await spec(`echo ${secret} > /out/secret; echo ${secret} > /checkpoint/secret; echo ready; sleep 60`, {}, { checkpoint: true });
    await writeFile(join(a.inputsDir, 'secret'), `${secret}\n`);
    let ready: () => void = () => undefined;
    const readyNow = new Promise<void>((resolve) => (ready = resolve));
    const stopA = new AbortController();
    const runningA = runContained({ ...a, onOutput: (chunk) => chunk.toString().includes('ready') && ready() }, stopA.signal);
    const endedEarly = runningA.then((r) => Promise.reject(new Error(`task A ended before it was ready: ${JSON.stringify(r.outcome)} ${r.logTail}`)));
    endedEarly.catch(() => undefined); // read only by the race below
    await Promise.race([readyNow, endedEarly]);

    // Task B knows every host path of task A's and tries them all, plus the ways around: ../,
    // /proc (other processes' roots), a search of its whole file system, the engine's socket.
    const b = await spec(`
      for f in ${a.inputsDir}/secret ${a.outputsDir}/secret ${a.checkpointDir!}/secret /out/../out-${a.taskId}/secret /in/../../in-${a.taskId}/secret /proc/*/root/out/secret /proc/*/root${a.outputsDir}/secret; do
        cat "$f" 2>/dev/null && echo "READ $f"
      done
      find / -path /proc -prune -o -path /sys -prune -o -name secret -print 2>/dev/null
      ls /proc | grep -c '^[0-9]*$' > /out/processes
      ls /proc/1/root/ > /out/root-of-1
      ls -l /var/run/docker.sock /run/docker.sock 2>&1 | grep -c 'No such file' > /out/sockets-missing
      exit 0`);
    const rb = await runContained(b);
    stopA.abort();
    const ra = await runningA;

    assert.deepEqual(rb.outcome, { kind: 'succeeded' });
    assert.doesNotMatch(rb.logTail, new RegExp(secret), 'task B read none of task A\'s files');
    assert.doesNotMatch(rb.logTail, /READ|secret/, rb.logTail);
    assert.ok(Number(await readFile(join(b.outputsDir, 'processes'), 'utf8')) <= 6, 'task B sees only its own few processes');
    const rootOf1 = (await readFile(join(b.outputsDir, 'root-of-1'), 'utf8')).split('\n');
    assert.ok(rootOf1.includes('out') && !rootOf1.includes('usr') && !rootOf1.includes('var'), `/proc/1/root is task B's own root, not the host's: ${rootOf1.join(' ')}`);
    assert.equal(await readFile(join(b.outputsDir, 'sockets-missing'), 'utf8'), '2\n', 'no Docker socket inside');
    assert.deepEqual(ra.outcome, { kind: 'aborted' });
    assert.equal(await readFile(join(a.outputsDir, 'secret'), 'utf8'), `${secret}\n`, 'task A\'s files are intact');
  });
});

describe('the sandbox through the whole path: a real server and agent report each attack as itself', { skip: suite.skip }, () => {
  const P = 'default';
  let grid: TestGrid;
  const agentRuntime = ownDockerRuntime();

  before(async () => {
    grid = await startGrid();
    await grid.startAgent(agentRuntime);
    const image = process.arch === 'x64' ? SETUID_IMAGE : await ensureTestImage();
    await grid.admin.createApp(P, { name: 'hostile', image, command: ['sh', '-c'], resources: { cores: 0.5, memoryMiB: 48, diskMiB: 16 }, maxAttempts: 1, maxRuntimeSeconds: 5 });
  });
  after(() => grid?.stop());

  test('over the disk limit, a fork bomb, a setuid program, over memory, a write to /: each job fails with its reason', async () => {
    const jobs = {
      // One file, cut at the per-file cap and found over the limit when the task ends: quick
      // however loaded the machine (the watch's own kill is tested on the runtime above).
      disk: 'dd if=/dev/zero of=/out/big bs=1M count=64',
      // As on the runtime above: the bomb in a subshell, the task's shell blocked without forking.
      forkBomb: 'mkfifo /tmp/hold; (bomb() { bomb | bomb & }; bomb) & read x <> /tmp/hold',
      setuid: process.arch === 'x64' ? `exec ${SETUID_PROGRAM}` : 'exit 13',
      memory: 'x=a; while true; do x="$x$x"; done',
      rootWrite: 'touch /etc/passwd-boxgrid',
    };
    const submitted = await grid.admin.submitBatch(P, { app: 'hostile', jobs: Object.values(jobs).map((script) => ({ args: [script] })) });
    await untilBatchDone(grid.admin, P, submitted.batch!.id);
    const [disk, forkBomb, setuid, memory, rootWrite] = await Promise.all(submitted.jobIds!.map((id) => grid.admin.getJob(P, id)));
    const expect = [
      [disk, { kind: 'output_error', message: 'wrote more than its disk limit of 16 MiB to /out' }, 'outputs refused: wrote more than its disk limit of 16 MiB to /out (attempt 1 of 1)'],
      [forkBomb, { kind: 'timeout', limitSeconds: 5 }, 'killed: ran longer than its limit of 5 s (attempt 1 of 1)'],
      [setuid, { kind: 'failed', exitCode: 13 }, 'exited with code 13 (attempt 1 of 1)'],
      [memory, { kind: 'out_of_memory', limitMiB: 48 }, 'killed: used more than its memory limit of 48 MiB (attempt 1 of 1)'],
      [rootWrite, { kind: 'failed', exitCode: 1 }, 'exited with code 1 (attempt 1 of 1)'],
    ] as const;
    for (const [detail, outcome, reason] of expect) {
      assert.equal(detail!.job.state, 'failed');
      assert.deepEqual(detail!.tasks[0]!.outcome, outcome);
      assert.equal(detail!.job.reason, reason);
      assert.equal(await containersLeft(detail!.tasks[0]!.id, agentRuntime.owner), 0, 'the container is removed');
    }
    assert.deepEqual(Object.keys(disk!.tasks[0]!.outputs), [], 'nothing of the over-limit task is uploaded');
    assert.match((await grid.admin.taskLog(P, { job: rootWrite!.job.id })).text, /read-only file system/i);
  });
});

/**
 * A minimal static x86-64 ELF program: exits 0 when its effective uid is 0, 13 otherwise. Made
 * here rather than compiled, so the suite needs no compiler. Installed setuid root, it tells
 * whether the sandbox lets a setuid bit raise privileges.
 */
function euidProbe(): Buffer {
  // prettier-ignore
  const code = Buffer.from([
    0xb8, 0x6b, 0, 0, 0, //  mov eax, 107 (geteuid)
    0x0f, 0x05, //           syscall
    0x85, 0xc0, //           test eax, eax
    0xbf, 13, 0, 0, 0, //    mov edi, 13
    0x75, 0x05, //           jnz exit
    0xbf, 0, 0, 0, 0, //     mov edi, 0
    0xb8, 0x3c, 0, 0, 0, //  exit: mov eax, 60 (exit)
    0x0f, 0x05, //           syscall
  ]);
  const base = 0x400000n;
  const headers = 64 + 56; // ELF header, one program header
  const size = BigInt(headers + code.length);
  const h = Buffer.alloc(headers);
  h.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]); // ELF, 64-bit, little-endian, version 1
  h.writeUInt16LE(2, 16); // executable
  h.writeUInt16LE(0x3e, 18); // x86-64
  h.writeUInt32LE(1, 20);
  h.writeBigUInt64LE(base + BigInt(headers), 24); // entry: the code after the headers
  h.writeBigUInt64LE(64n, 32); // program headers right after this one
  h.writeUInt16LE(64, 52);
  h.writeUInt16LE(56, 54);
  h.writeUInt16LE(1, 56);
  h.writeUInt32LE(1, 64); // PT_LOAD the whole file…
  h.writeUInt32LE(5, 68); // …readable and executable
  h.writeBigUInt64LE(base, 80);
  h.writeBigUInt64LE(base, 88);
  h.writeBigUInt64LE(size, 96);
  h.writeBigUInt64LE(size, 104);
  h.writeBigUInt64LE(0x1000n, 112);
  return Buffer.concat([h, code]);
}

test('the disk limit in the container\'s config: /tmp no bigger than it, each file capped just past it; none for a limit of 0 or where files cannot be capped', () => {
  const rt = new DockerRuntime();
  const base = {
    taskId: 1, jobId: 1, image: 'sci/app:1', imageDigest: null, command: ['run'], env: {},
    resources: { cores: 1, memoryMiB: 64, diskMiB: 16, gpus: 0 }, maxRuntimeSeconds: 30,
    inputsDir: '/tmp/in', outputsDir: '/tmp/out', checkpointDir: null, user: '65534:65534',
  } satisfies TaskRunSpec;
  const capped = rt.containerConfig(base).HostConfig!;
  assert.deepEqual(capped.Tmpfs, { '/tmp': 'rw,nosuid,nodev,size=16m' });
  assert.deepEqual(capped.Ulimits, [{ Name: 'fsize', Soft: 17 * 2 ** 20, Hard: 17 * 2 ** 20 }]);
  assert.equal(rt.containerConfig(base, base.image, { capFileSize: false }).HostConfig!.Ulimits, undefined);
  const unlimited = rt.containerConfig({ ...base, resources: { ...base.resources, diskMiB: 0 } }).HostConfig!;
  assert.deepEqual(unlimited.Tmpfs, { '/tmp': 'rw,nosuid,nodev,size=64m' });
  assert.equal(unlimited.Ulimits, undefined);
});
