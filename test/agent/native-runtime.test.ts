import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LOG_TAIL_BYTES, type TaskRunSpec } from '../../src/agent/runtime.js';
import { NativeRuntime } from '../../src/agent/runtimes/native-runtime.js';
import { bwrapSuite } from '../helpers/native.js';

const sandboxed = await bwrapSuite();
const HAS_TIME = existsSync('/usr/bin/time');

let work: string;
let n = 0;
before(async () => {
  work = await mkdtemp(join(tmpdir(), 'boxgrid-native-test-'));
});
after(() => rm(work, { recursive: true, force: true }));

/** A task spec with its own in/out/checkpoint dirs; `script` runs under sh -c. */
async function spec(script: string, over: Partial<TaskRunSpec> = {}): Promise<TaskRunSpec> {
  const id = ++n;
  const dir = (name: string) => join(work, `${name}-${id}`);
  await Promise.all([mkdir(dir('in')), mkdir(dir('out')), mkdir(dir('ckpt'))]);
  return {
    taskId: 5000 + id, jobId: 1, image: 'ignored', imageDigest: null, command: ['sh', '-c', script], env: {},
    resources: { cores: 1, memoryMiB: 256, diskMiB: 100, gpus: 0 }, maxRuntimeSeconds: 20,
    inputsDir: dir('in'), outputsDir: dir('out'), checkpointDir: dir('ckpt'), user: '65534:65534', ...over,
  };
}

/** A number no other test's process has on its command line, for `sleep <marker>`. */
function marker(): string {
  return `3600.${process.pid}${++n}`;
}

/** Host pids of live (not zombie) processes whose whole command line is `text` (arguments joined by spaces). */
async function pidsWith(text: string): Promise<number[]> {
  const found: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).replace(/\0$/, '').split('\0').join(' ');
      const state = (await readFile(`/proc/${entry}/stat`, 'utf8')).replace(/^.*\) /s, '')[0];
      if (cmdline === text && state !== 'Z') found.push(Number(entry));
    } catch {
      // it ended while we looked
    }
  }
  return found;
}

/** Whether a process runs (a zombie does not: it has ended and waits to be reaped). */
function alive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] !== 'Z';
  } catch {
    return false;
  }
}

/** Polls (an event we cannot subscribe to: processes appearing) until `find` returns something. */
async function until<T>(what: string, find: () => Promise<T | null>, ms = 10_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await find();
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Resolves when the task's output contains `text` (given as spec.onOutput). */
function outputWatcher(text: string): { onOutput: (c: Buffer) => void; seen: Promise<void> } {
  let all = '';
  let done!: () => void;
  const seen = new Promise<void>((r) => (done = r));
  return { onOutput: (c) => { all += c.toString(); if (all.includes(text)) done(); }, seen };
}

const modes = [
  { mode: 'unsandboxed', options: { bwrap: null }, skip: false as string | false },
  { mode: 'in bubblewrap', options: { bwrap: 'bwrap' }, skip: sandboxed.skip },
];

for (const m of modes) {
  describe(`native runtime, ${m.mode}`, { skip: m.skip }, () => {
    const runtime = new NativeRuntime(m.options);

    test('it says how it runs tasks', async () => {
      const s = await runtime.sandbox();
      assert.equal(s.error, null);
      assert.equal(s.sandboxed, m.mode === 'in bubblewrap', s.detail);
      assert.equal(await runtime.version(), s.sandboxed ? s.detail.replace(/ at .*/, '') : 'unsandboxed');
    });

    test('a task reads its inputs, writes outputs and a checkpoint, sees its env (only), and its output comes back', async () => {
      process.env.BOXGRID_AGENT_SECRET_FOR_TEST = 'must-not-leak';
      const s = await spec(
        'cat "$BOXGRID_IN/data.txt"; echo "x=$X" > "$BOXGRID_OUT/result.txt"; echo saved > "$BOXGRID_CHECKPOINT/state"; pwd > where; env > "$BOXGRID_OUT/env"; echo to-stderr >&2',
        { env: { X: '42' } },
      );
      await writeFile(join(s.inputsDir, 'data.txt'), 'input bytes\n');
      const chunks: Buffer[] = [];
      const r = await runtime.run({ ...s, onOutput: (c) => chunks.push(c) });
      delete process.env.BOXGRID_AGENT_SECRET_FOR_TEST;
      assert.deepEqual(r.outcome, { kind: 'succeeded' }, r.logTail);
      assert.equal(await readFile(join(s.outputsDir, 'result.txt'), 'utf8'), 'x=42\n');
      assert.equal(await readFile(join(s.checkpointDir!, 'state'), 'utf8'), 'saved\n');
      const env = await readFile(join(s.outputsDir, 'env'), 'utf8');
      assert.doesNotMatch(env, /BOXGRID_AGENT_SECRET_FOR_TEST/);
      assert.match(env, /^X=42$/m);
      if (m.mode === 'in bubblewrap') {
        assert.equal((await readFile(join(s.outputsDir, 'where'), 'utf8')).trim(), '/out');
        assert.match(env, /^BOXGRID_IN=\/in$/m);
        assert.match(env, /^BOXGRID_OUT=\/out$/m);
        assert.match(env, /^BOXGRID_CHECKPOINT=\/checkpoint$/m);
        assert.match(env, /^HOME=\/tmp$/m);
      } else {
        assert.equal((await readFile(join(s.outputsDir, 'where'), 'utf8')).trim(), s.outputsDir);
        assert.match(env, new RegExp(`^BOXGRID_IN=${s.inputsDir}$`, 'm'));
      }
      assert.match(r.logTail, /input bytes/);
      assert.match(r.logTail, /to-stderr/);
      assert.equal(Buffer.concat(chunks).toString(), r.logTail);
      assert.ok(r.durationMs >= 0);
    });

    test('without a checkpoint directory BOXGRID_CHECKPOINT is unset, even when the job sets it', async () => {
      const s = await spec('echo "[${BOXGRID_CHECKPOINT-unset}]"', { checkpointDir: null, env: { BOXGRID_CHECKPOINT: '/etc' } });
      const r = await runtime.run(s);
      assert.deepEqual(r.outcome, { kind: 'succeeded' }, r.logTail);
      assert.equal(r.logTail.trim(), '[unset]');
    });

    test('a scratch dir that does not exist yet (a fresh work dir, as the agent gives it) is made', async () => {
      const fresh = new NativeRuntime({ ...m.options, scratchDir: join(work, `scratch-${++n}`, 'nested') });
      assert.deepEqual((await fresh.run(await spec('true'))).outcome, { kind: 'succeeded' });
    });

    test('a non-zero exit is "failed" with its code; death by a signal is 128 + its number', async () => {
      assert.deepEqual((await runtime.run(await spec('exit 7'))).outcome, { kind: 'failed', exitCode: 7 });
      assert.deepEqual((await runtime.run(await spec('kill -SEGV $$'))).outcome, { kind: 'failed', exitCode: 139 });
    });

    test('a program that does not exist fails the task with 127 (not an agent error), and says so', async () => {
      const r = await runtime.run({ ...(await spec('')), command: ['/no/such/program', 'arg'] });
      assert.deepEqual(r.outcome, { kind: 'failed', exitCode: 127 });
      assert.match(r.logTail, /\/no\/such\/program: No such file or directory/);
      const byName = await runtime.run({ ...(await spec('')), command: ['no-such-program-boxgrid'] });
      assert.deepEqual(byName.outcome, { kind: 'failed', exitCode: 127 });
    });

    test('running past the max runtime is a timeout that kills the whole process tree', async () => {
      const child = marker();
      const grandchild = marker();
      const w = outputWatcher('up');
      const s = await spec(`(sleep ${grandchild} & wait) & sleep ${child} & echo up; wait`, { maxRuntimeSeconds: 2, onOutput: w.onOutput });
      const running = runtime.run(s);
      await w.seen;
      const pids = await until('both sleeps', async () => {
        const p = [...(await pidsWith(`sleep ${child}`)), ...(await pidsWith(`sleep ${grandchild}`))];
        return p.length === 2 ? p : null;
      });
      const r = await running;
      assert.deepEqual(r.outcome, { kind: 'timeout', limitSeconds: 2 });
      assert.equal(r.usage, null);
      for (const pid of pids) assert.equal(alive(pid), false, `pid ${pid} still runs`);
    });

    test('an abort signal stops the task and its processes', async () => {
      const ac = new AbortController();
      const sleeper = marker();
      const w = outputWatcher('started');
      const s = await spec(`echo started; sleep ${sleeper}`, { onOutput: w.onOutput });
      const running = runtime.run(s, ac.signal);
      await w.seen;
      const [pid] = await until('the sleep', async () => ((await pidsWith(`sleep ${sleeper}`)).length === 1 ? await pidsWith(`sleep ${sleeper}`) : null));
      ac.abort();
      const r = await running;
      assert.deepEqual(r.outcome, { kind: 'aborted' });
      assert.equal(alive(pid!), false);
      // Aborted before it starts: nothing runs.
      assert.deepEqual((await runtime.run(await spec('touch "$BOXGRID_OUT/ran"'), AbortSignal.abort())).outcome, { kind: 'aborted' });
    });

    test('background processes the task leaves behind end with it', async () => {
      const sleeper = marker();
      const s = await spec(`sleep ${sleeper} > /dev/null 2>&1 & echo $! > "$BOXGRID_OUT/pid"`);
      const r = await runtime.run(s);
      assert.deepEqual(r.outcome, { kind: 'succeeded' }, r.logTail);
      const pid = Number(await readFile(join(s.outputsDir, 'pid'), 'utf8'));
      if (m.mode === 'in bubblewrap') {
        // Gone by the time the run returns: the kernel ended the pid namespace first.
        assert.deepEqual(await pidsWith(`sleep ${sleeper}`), []);
      } else {
        // Sent SIGKILL by then, which it cannot survive, but it may still be finishing dying.
        await until('the background sleep to end', async () => (alive(pid) ? null : true), 2000);
      }
    });

    test('the memory limit (address space) makes a large allocation fail; the task fails, it is not called out of memory', async () => {
      // sort holds a 100 MB line (no newline) in memory: too much for 64 MiB, fine under 1 GiB.
      const script = 'head -c 100000000 /dev/zero | sort > /dev/null';
      const small = await runtime.run(await spec(script, { resources: { cores: 1, memoryMiB: 64, diskMiB: 100, gpus: 0 } }));
      assert.equal(small.outcome.kind, 'failed', small.logTail);
      assert.match(small.logTail, /memory exhausted|Cannot allocate memory/i);
      const big = await runtime.run(await spec(script, { resources: { cores: 1, memoryMiB: 1024, diskMiB: 100, gpus: 0 } }));
      assert.deepEqual(big.outcome, { kind: 'succeeded' }, big.logTail);
      if (HAS_TIME) {
        assert.ok(big.usage !== null);
        assert.ok(big.usage.peakMemoryMiB >= 90, `peak ${big.usage.peakMemoryMiB} MiB`);
        assert.ok(big.usage.cpuSeconds > 0, `cpu ${big.usage.cpuSeconds} s`);
      } else {
        assert.equal(big.usage, null);
      }
    });

    test('a task dies with its agent (which is why leftovers() is empty)', async () => {
      const child = marker();
      const grandchild = marker();
      const moduleUrl = new URL('../../src/agent/runtimes/native-runtime.js', import.meta.url).href;
      const s = await spec(`sleep ${grandchild} & echo up; sleep ${child}`);
      const agent = spawn(
        process.execPath,
        [
          '--input-type=module', '-e',
          `import { NativeRuntime } from ${JSON.stringify(moduleUrl)};
           const spec = JSON.parse(process.argv[1]);
           spec.onOutput = (c) => { if (String(c).includes('up')) console.log('ready'); };
           await new NativeRuntime(${JSON.stringify(m.options)}).run(spec);`,
          JSON.stringify(s),
        ],
        // Its scratch directory, which a killed agent leaves, goes with this test's.
        { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, TMPDIR: work } },
      );
      let pids: number[] = [];
      try {
        await new Promise<void>((resolve, reject) => {
          agent.stdout.on('data', (c: Buffer) => String(c).includes('ready') && resolve());
          agent.on('exit', () => reject(new Error('the agent process ended early')));
        });
        pids = await until('both sleeps', async () => {
          const p = [...(await pidsWith(`sleep ${child}`)), ...(await pidsWith(`sleep ${grandchild}`))];
          return p.length === 2 ? p : null;
        });
        agent.kill('SIGKILL');
        await until('the task to die with its agent', async () => (pids.every((p) => !alive(p)) ? true : null), 5000);
      } finally {
        // Whatever this test started and left (only when it failed).
        agent.kill('SIGKILL');
        for (const p of pids.filter(alive)) process.kill(p, 'SIGKILL');
      }
    });

    test('the log tail keeps the last LOG_TAIL_BYTES', async () => {
      const r = await runtime.run(await spec("head -c 300000 /dev/zero | tr '\\0' x; echo; echo to-stderr-last >&2"));
      assert.deepEqual(r.outcome, { kind: 'succeeded' });
      assert.ok(Buffer.byteLength(r.logTail) <= LOG_TAIL_BYTES);
      assert.ok(Buffer.byteLength(r.logTail) > LOG_TAIL_BYTES - 2048);
      assert.match(r.logTail, /to-stderr-last\n$/);
    });
  });
}

describe('native runtime sandbox (bubblewrap)', { skip: sandboxed.skip }, () => {
  const runtime = new NativeRuntime({ bwrap: 'bwrap' });
  let server: Server;
  let port: number;
  let connections = 0;

  before(async () => {
    server = createServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as { port: number }).port;
  });
  after(() => new Promise<void>((r) => server.close(() => r())));

  test('no network: the host loopback is out of reach (it is, unsandboxed) and only lo exists', async () => {
    const connect = `bash -c 'echo hello > /dev/tcp/127.0.0.1/${port}'`;
    const open = await new NativeRuntime({ bwrap: null }).run(await spec(connect));
    assert.deepEqual(open.outcome, { kind: 'succeeded' }, open.logTail);
    assert.equal(connections, 1);
    const s = await spec(`${connect}; echo "rc=$?"; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > "$BOXGRID_OUT/ifaces"`);
    const r = await runtime.run(s);
    assert.deepEqual(r.outcome, { kind: 'succeeded' }, r.logTail);
    assert.match(r.logTail, /Connection refused/);
    assert.match(r.logTail, /rc=1/);
    assert.equal(connections, 1);
    assert.deepEqual((await readFile(join(s.outputsDir, 'ifaces'), 'utf8')).trim().split('\n'), ['lo']);
  });

  test('bwrap\'s own failures are agent errors; without GNU time a missing program is still 127', async () => {
    const broken = await new NativeRuntime({ bwrap: 'bwrap', readOnlyPaths: ['/no/such/dir'] }).run(await spec('true'));
    assert.equal(broken.outcome.kind, 'agent_error');
    assert.match((broken.outcome as { message: string }).message, /the sandbox failed: bwrap: .*\/no\/such\/dir/);
    const untimed = new NativeRuntime({ bwrap: 'bwrap', time: null });
    const r = await untimed.run({ ...(await spec('')), command: ['/no/such/program'] });
    assert.deepEqual(r.outcome, { kind: 'failed', exitCode: 127 });
    assert.match(r.logTail, /execvp \/no\/such\/program: No such file or directory/);
    assert.equal(r.usage, null);
    const ok = await untimed.run(await spec('exit 3'));
    assert.deepEqual(ok.outcome, { kind: 'failed', exitCode: 3 });
    assert.equal(ok.usage, null);
  });

  test('a bwrap that refuses --size (older than 0.7, or setuid) still sandboxes, with unsized tmpfs', async () => {
    const real = await NativeRuntime.detect();
    assert.ok(real.usable);
    const fake = join(work, 'bwrap-without-size');
    await writeFile(fake, `#!/bin/sh\ncase " $* " in *" --size "*) echo "bwrap: Unknown option --size" >&2; exit 1;; esac\nexec ${real.path} "$@"\n`, { mode: 0o755 });
    const check = await NativeRuntime.detect(fake);
    assert.equal(check.usable && check.sizedTmpfs, false, JSON.stringify(check));
    assert.equal(check.usable, true, JSON.stringify(check));
    const runtime = new NativeRuntime({ bwrap: fake });
    assert.match((await runtime.sandbox()).detail, /cannot size \/tmp/);
    const r = await runtime.run(await spec('touch /tmp/x && touch /x'));
    assert.deepEqual(r.outcome, { kind: 'failed', exitCode: 1 });
    assert.match(r.logTail, /Read-only file system/);
  });

  test('read-only root, /usr, /etc, /in and /dev; writable /out, /checkpoint and /tmp; nobody, no capabilities, no privilege gain, own pids', async () => {
    const s = await spec(
      [
        'for p in /x /usr/x /etc/x /in/x /dev/x; do touch $p 2>> "$BOXGRID_OUT/ro"; done',
        'touch /out/x /checkpoint/x /tmp/x /dev/shm/x && echo writable-ok',
        'id -u > /out/uid',
        'grep -E "^(CapEff|CapPrm|CapBnd|NoNewPrivs)" /proc/self/status > /out/caps',
        'ls /proc | grep -c "^[0-9]" > /out/pids',
        'ls / > /out/root',
      ].join('; '),
    );
    await writeFile(join(s.inputsDir, 'data'), 'x');
    const r = await runtime.run(s);
    assert.deepEqual(r.outcome, { kind: 'succeeded' }, r.logTail);
    assert.match(r.logTail, /writable-ok/);
    const read = (f: string) => readFile(join(s.outputsDir, f), 'utf8');
    const ro = (await read('ro')).trim().split('\n');
    assert.equal(ro.length, 5, ro.join('\n'));
    for (const line of ro) assert.match(line, /Read-only file system/);
    assert.equal(existsSync(join(s.inputsDir, 'x')), false);
    assert.equal((await read('uid')).trim(), '65534');
    const caps = await read('caps');
    assert.match(caps, /CapEff:\s+0000000000000000/);
    assert.match(caps, /CapPrm:\s+0000000000000000/);
    assert.match(caps, /NoNewPrivs:\s+1/);
    assert.ok(Number((await read('pids')).trim()) < 8, `sees ${(await read('pids')).trim()} processes`);
    const root = (await read('root')).trim().split('\n');
    assert.ok(!root.includes('home') && !root.includes('root') && !root.includes('var') && !root.includes('sys'), root.join(' '));
  });

});

describe('native runtime without a usable bwrap', () => {
  test('detect says why', async () => {
    const r = await NativeRuntime.detect('/no/such/bwrap');
    assert.equal(r.usable, false);
    assert.match((r as { reason: string }).reason, /not installed/);
  });

  test('a bwrap that cannot make namespaces is not usable, and says why', async () => {
    const fake = join(work, 'bwrap-no-userns');
    await writeFile(fake, '#!/bin/sh\n[ "$1" = --version ] && { echo "bubblewrap 9.9"; exit 0; }\necho "bwrap: No permissions to creating new namespace, likely because the kernel does not allow non-privileged user namespaces." >&2\nexit 1\n', { mode: 0o755 });
    const check = await NativeRuntime.detect(fake);
    assert.equal(check.usable, false);
    assert.match((check as { reason: string }).reason, /cannot make a sandbox here: bwrap: No permissions .* \(are unprivileged user namespaces disabled\?/);
    const runtime = new NativeRuntime({ bwrap: fake });
    const r = await runtime.run(await spec('true'));
    assert.equal(r.outcome.kind, 'agent_error');
    assert.deepEqual((await runtime.sandbox()).sandboxed, false);
    assert.deepEqual((await new NativeRuntime().run({ ...(await spec('true')), command: [] })).outcome, { kind: 'agent_error', message: 'the task has no command' });
  });

  test('a bwrap asked for by path that is not there is an agent error, never a silent downgrade', async () => {
    const runtime = new NativeRuntime({ bwrap: '/no/such/bwrap' });
    const r = await runtime.run(await spec('true'));
    assert.equal(r.outcome.kind, 'agent_error');
    assert.equal(await runtime.version(), null);
  });

  test('native tasks are not found again after a restart, and there is nothing to remove', async () => {
    const runtime = new NativeRuntime({ bwrap: null });
    assert.deepEqual(await runtime.leftovers(), []);
    const r = await runtime.reattach(await spec('true'));
    assert.deepEqual(r.outcome, { kind: 'agent_error', message: 'native tasks do not survive an agent restart' });
    await runtime.remove(1);
    assert.deepEqual(await runtime.images(), []);
    assert.equal(runtime.name, 'native');
  });
});
