// The batch script of a Podman pilot, run by /bin/sh as sbatch would, with stand-ins for podman
// and the agent (shell scripts on PATH): no Slurm or Podman needed. What it checks is the
// script's own plumbing: the service started before the agent and stopped after it, Slurm's
// SIGTERM handed on to the agent, the agent's exit code kept. test/sites/slurm-pilots.test.ts
// runs the real thing.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { pilotScript, podmanSocket, SlurmSite } from '../../src/sites/slurm/slurm-site.js';

// `podman system service` records its start and its stop; `podman --remote … version` answers
// once the service has started; `info` says "false v2" (rootful, cgroup v2: no warning).
const FAKE_PODMAN = `#!/bin/sh
case "$1" in
  system)
    trap 'echo stopped >> "$FAKE/log"; exit 0' TERM
    echo "service $4" >> "$FAKE/log"
    touch "$FAKE/up"
    while :; do sleep 0.05; done ;;
  --remote)
    [ -f "$FAKE/up" ] || exit 1
    [ "$4" = info ] && echo "false v2"
    exit 0 ;;
esac
exit 2
`;
// The agent: says it started (on stdout, which the test waits for), releases on SIGTERM.
const FAKE_AGENT = `#!/bin/sh
trap 'echo "agent released" >> "$FAKE/log"; exit 0' TERM
echo "agent $*" >> "$FAKE/log"
echo started
while [ ! -f "$FAKE/idle" ]; do sleep 0.05; done
echo "agent idle" >> "$FAKE/log"
exit "$(cat "$FAKE/idle")"
`;

describe('the batch script of a Podman pilot', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'boxgrid-pilot-script-'));
    await writeFile(join(dir, 'podman'), FAKE_PODMAN);
    await writeFile(join(dir, 'agent'), FAKE_AGENT);
    await chmod(join(dir, 'podman'), 0o755);
    await chmod(join(dir, 'agent'), 0o755);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  /** Runs the script as job 42 and resolves once the agent has started. */
  async function start(): Promise<{ child: ChildProcess; exit: Promise<number | null> }> {
    await rm(join(dir, 'log'), { force: true });
    await rm(join(dir, 'up'), { force: true });
    await rm(join(dir, 'idle'), { force: true });
    const workDir = join(dir, 'pilot-$SLURM_JOB_ID');
    const script = pilotScript('podman', [join(dir, 'agent'), '--docker-socket', podmanSocket(workDir)], workDir);
    const child = spawn('/bin/sh', ['-c', script], { env: { PATH: `${dir}:${process.env.PATH ?? ''}`, FAKE: dir, SLURM_JOB_ID: '42' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    const exit = once(child, 'exit').then(([code]) => code as number | null);
    await new Promise<void>((resolve, reject) => {
      child.stdout!.setEncoding('utf8').on('data', (s: string) => s.includes('started') && resolve());
      void exit.then((code) => reject(new Error(`the script exited (${code}) before the agent started: ${stderr}`)));
    });
    return { child, exit };
  }

  test('an idle agent ends the pilot with its exit code, and the service stops after it', async () => {
    const { exit } = await start();
    // Whole, by a rename: the stand-in agent reads it the moment it exists.
    await writeFile(join(dir, 'idle.tmp'), '3');
    await rename(join(dir, 'idle.tmp'), join(dir, 'idle'));
    assert.equal(await exit, 3, "the agent's exit code is the pilot's");
    const log = (await readFile(join(dir, 'log'), 'utf8')).trim().split('\n');
    assert.deepEqual(log, [`service unix://${dir}/pilot-42/podman.sock`, `agent --docker-socket ${dir}/pilot-42/podman.sock`, 'agent idle', 'stopped'],
      'the service on the socket of this job, then the agent on it, then the service stopped');
  });

  test("Slurm's SIGTERM to the batch shell reaches the agent, which releases its tasks before the service stops", async () => {
    const { child, exit } = await start();
    child.kill('SIGTERM');
    assert.equal(await exit, 0);
    const log = (await readFile(join(dir, 'log'), 'utf8')).trim().split('\n');
    assert.deepEqual(log.slice(1), [`agent --docker-socket ${dir}/pilot-42/podman.sock`, 'agent released', 'stopped']);
  });

  test('a native pilot is the agent itself (exec), as before', () => {
    assert.equal(pilotScript('native', ['/usr/bin/node', 'boxgrid.js', 'agent', '--work-dir', '/w/pilot-$SLURM_JOB_ID'], '/w/pilot-$SLURM_JOB_ID'),
      'exec /usr/bin/node boxgrid.js agent --work-dir "/w/pilot-$SLURM_JOB_ID"');
  });

  test('a work root too long for a socket path is refused before any pilot is submitted', () => {
    const site = (workRoot: string) => new SlurmSite({
      server: 'http://127.0.0.1:1', enrollToken: 'x', partition: null, account: null, jobName: 'boxgrid-pilot',
      shape: { resources: { cores: 1, memoryMiB: 512, diskMiB: 1024, gpus: 0 }, runtime: 'podman', maxPilots: 1, maxPending: 1 },
      walltimeSeconds: 600, idleSeconds: 10, workRoot, boxgrid: ['boxgrid'], log: () => undefined,
    });
    assert.throws(() => site(`/${'x'.repeat(80)}`), /too long for the pilots' Podman sockets/);
    assert.doesNotThrow(() => site('/home/someone/.local/share/boxgrid-pilots'));
  });
});
