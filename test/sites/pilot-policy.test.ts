import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { demandCores, parseDemand, pilotsToSubmit } from '../../src/sites/pilot-policy.js';
import { slurmDuration } from '../../src/sites/slurm/slurm-site.js';

const pilot = { cores: 4, memoryMiB: 8192, diskMiB: 10_000, gpus: 0 };
const shape = { resources: pilot, maxPilots: 10, maxPending: 3 };
const jobs = (n: number, cores = 1, memoryMiB = 1024, gpus = 0) => ({ resources: { cores, memoryMiB, diskMiB: 100, gpus }, jobs: n });

describe('pilot policy', () => {
  it('counts only the demand a pilot could run', () => {
    assert.equal(demandCores([jobs(10), jobs(3, 8), jobs(2, 1, 16_384), jobs(5, 1, 1024, 1)], pilot), 10, 'too many cores, too much memory, a GPU: not its demand');
  });

  it('submits enough pilots for the demand, less those in flight, within both bounds', () => {
    assert.equal(pilotsToSubmit([], { pending: 0, running: 0 }, shape), 0, 'nothing queued');
    assert.equal(pilotsToSubmit([jobs(6)], { pending: 0, running: 0 }, shape), 2, '6 cores: two 4-core pilots');
    assert.equal(pilotsToSubmit([jobs(6)], { pending: 1, running: 1 }, shape), 0, 'already there');
    assert.equal(pilotsToSubmit([jobs(1000)], { pending: 0, running: 0 }, shape), 3, 'at most 3 pending');
    assert.equal(pilotsToSubmit([jobs(1000)], { pending: 2, running: 7 }, shape), 1, 'at most 10 in all');
    assert.equal(pilotsToSubmit([jobs(1000)], { pending: 3, running: 0 }, shape), 0, 'pending bound reached');
    assert.equal(pilotsToSubmit([jobs(2)], { pending: 0, running: 5 }, shape), 0, 'more running than wanted: none, and none cancelled');
  });

  it('reads the demand from the server\'s metrics text', () => {
    const text = [
      '# HELP boxgrid_demand_jobs Queued jobs that could start now',
      '# TYPE boxgrid_demand_jobs gauge',
      'boxgrid_demand_jobs{cores="0.5",memory_mib="512",disk_mib="1024",gpus="0"} 12',
      'boxgrid_demand_jobs{cores="8",memory_mib="65536",disk_mib="1024",gpus="2"} 1',
      'boxgrid_demand_cores 14',
    ].join('\n');
    assert.deepEqual(parseDemand(text), [
      { resources: { cores: 0.5, memoryMiB: 512, diskMiB: 1024, gpus: 0 }, jobs: 12 },
      { resources: { cores: 8, memoryMiB: 65536, diskMiB: 1024, gpus: 2 }, jobs: 1 },
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
