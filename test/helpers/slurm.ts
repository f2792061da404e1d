import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Whether the Slurm suites can run: a cluster answers sinfo with a node ready for jobs. Locally
 * a missing one skips them with the reason; under CI=true it fails them, because a skipped
 * suite in CI hides breakage.
 */
export async function slurmSuite(): Promise<{ skip: string | false }> {
  let reason: string;
  try {
    const { stdout } = await run('sinfo', ['--noheader', '--format', '%t']);
    if (/idle|mix|alloc/.test(stdout)) return { skip: false };
    reason = `no Slurm node is up (sinfo: ${stdout.trim() || 'nothing'})`;
  } catch (e) {
    reason = `no Slurm cluster answers (${(e as Error).message.split('\n')[0]})`;
  }
  if (process.env.CI === 'true') throw new Error(`CI needs Slurm for these tests, but ${reason}`);
  return { skip: `${reason} (start one with: bash scripts/start-slurm.sh, after apt-get install slurm-wlm munge)` };
}

/** Job ids of this user's jobs with the given name still in squeue. */
export async function queuedJobs(name: string): Promise<string[]> {
  const { stdout } = await run('squeue', ['--noheader', '--me', '--name', name, '--format', '%i']);
  return stdout.split('\n').map((s) => s.trim()).filter(Boolean);
}
