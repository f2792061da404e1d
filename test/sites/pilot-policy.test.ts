import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { demandCores, parseDemand, pilotsToSubmit, type DemandSample } from '../../src/sites/pilot-policy.js';
import { slurmDuration } from '../../src/sites/slurm/slurm-site.js';

const pilot = { cores: 4, memoryMiB: 8192, diskMiB: 10_000, gpus: 0 };
const shape = { resources: pilot, runtime: 'native' as const, maxPilots: 10, maxPending: 3 };
const jobs = (n: number, cores = 1, memoryMiB = 1024, gpus = 0, over: Partial<DemandSample> = {}): DemandSample =>
  ({ resources: { cores, memoryMiB, diskMiB: 100, gpus }, native: true, maxRuntimeSeconds: 600, selector: false, jobs: n, ...over });
const TIME = 3000;

describe('pilot policy', () => {
  it('counts only the demand a pilot could run', () => {
    assert.equal(demandCores([jobs(10), jobs(3, 8), jobs(2, 1, 16_384), jobs(5, 1, 1024, 1)], { resources: pilot, runtime: 'native', maxRuntimeSeconds: TIME }), 10, 'too many cores, too much memory, a GPU: not its demand');
    assert.equal(demandCores([jobs(4, 1, 1024, 0, { native: false }), jobs(4, 1, 1024, 0, { selector: true }), jobs(4, 1, 1024, 0, { maxRuntimeSeconds: 7200 }), jobs(1)], { resources: pilot, runtime: 'native', maxRuntimeSeconds: TIME }), 1,
      'a container-only app, a label selector, a run longer than the pilot lives: not its demand either');
  });

  it('a Podman pilot takes container-only apps too, within the same bounds of size, time and selectors', () => {
    const podman = { resources: pilot, runtime: 'podman' as const, maxRuntimeSeconds: TIME };
    const demand = [jobs(4, 1, 1024, 0, { native: false }), jobs(2), jobs(3, 8, 1024, 0, { native: false }), jobs(4, 1, 1024, 0, { native: false, selector: true }), jobs(4, 1, 1024, 0, { native: false, maxRuntimeSeconds: 7200 })];
    assert.equal(demandCores(demand, podman), 6, 'both apps that fit, with or without a native command; not too large, selecting, or too long');
    assert.equal(demandCores(demand, { ...podman, runtime: 'native' }), 2, 'a native pilot: only the app with a native command');
    assert.equal(pilotsToSubmit([jobs(8, 1, 1024, 0, { native: false })], { pending: 0, running: 0 }, { ...shape, runtime: 'podman' }, TIME), 2, '8 container-only cores: two 4-core Podman pilots');
    assert.equal(pilotsToSubmit([jobs(8, 1, 1024, 0, { native: false })], { pending: 0, running: 0 }, shape, TIME), 0, 'and no native pilot');
  });

  it('submits enough pilots for the demand, less those in flight, within both bounds', () => {
    const submit = (d: DemandSample[], pending: number, running: number) => pilotsToSubmit(d, { pending, running }, shape, TIME);
    assert.equal(submit([], 0, 0), 0, 'nothing queued');
    assert.equal(submit([jobs(6)], 0, 0), 2, '6 cores: two 4-core pilots');
    assert.equal(submit([jobs(6)], 2, 0), 0, 'two pending already');
    assert.equal(submit([jobs(6)], 1, 5), 1, 'the queue holds what running pilots have not taken: one more besides the pending one');
    assert.equal(submit([jobs(60)], 0, 8), 2, 'running pilots do not count against the queue, only against the bound of 10');
    assert.equal(submit([jobs(1000)], 0, 0), 3, 'at most 3 pending');
    assert.equal(submit([jobs(1000)], 2, 7), 1, 'at most 10 in all');
    assert.equal(submit([jobs(1000)], 3, 0), 0, 'pending bound reached');
    assert.equal(submit([jobs(6, 1, 1024, 0, { maxRuntimeSeconds: TIME + 1 })], 0, 0), 0, 'runs longer than a pilot has: none');
  });

  it('reads the demand from the server\'s metrics text', () => {
    const text = [
      '# HELP boxgrid_demand_jobs Queued jobs that could start now',
      '# TYPE boxgrid_demand_jobs gauge',
      'boxgrid_demand_jobs{cores="0.5",memory_mib="512",disk_mib="1024",gpus="0",native="true",max_runtime_seconds="600",selector="false"} 12',
      'boxgrid_demand_jobs{cores="8",memory_mib="65536",disk_mib="1024",gpus="2",native="false",max_runtime_seconds="86400",selector="true"} 1',
      'boxgrid_demand_cores 14',
    ].join('\n');
    assert.deepEqual(parseDemand(text), [
      { resources: { cores: 0.5, memoryMiB: 512, diskMiB: 1024, gpus: 0 }, native: true, maxRuntimeSeconds: 600, selector: false, jobs: 12 },
      { resources: { cores: 8, memoryMiB: 65536, diskMiB: 1024, gpus: 2 }, native: false, maxRuntimeSeconds: 86400, selector: true, jobs: 1 },
    ]);
  });

  it('reads Slurm time limits', () => {
    assert.equal(slurmDuration('UNLIMITED'), null);
    assert.equal(slurmDuration('30'), 1800, 'minutes');
    assert.equal(slurmDuration('30:00'), 1800, 'minutes:seconds');
    assert.equal(slurmDuration('1:00:00'), 3600);
    assert.equal(slurmDuration('2-00:00:00'), 2 * 86_400);
    assert.equal(slurmDuration('1-02:03:04'), 86_400 + 2 * 3600 + 3 * 60 + 4);
  });
});
