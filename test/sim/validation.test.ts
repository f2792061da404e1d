import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validationScenario } from '../../src/sim/scenarios.js';
import { simulate } from '../../src/sim/simulator.js';

/**
 * Validation on a simulated untrusted grid, small (the `validation` benchmark runs the same at
 * 10,000 jobs): replication keeps every wrong result out; without it, wrong results are
 * accepted — so the first assertion would fail if validation broke.
 */
describe('simulated validation', () => {
  const scenario = validationScenario({ jobs: 400, hosts: 20, wrongFraction: 0.2 });

  it('with replicas, a quorum and adaptive replication, no wrong result is accepted, and trusted hosts run most jobs alone', async () => {
    assert.equal(scenario.hosts.filter((h) => h.wrongRate === 1).length, 4);
    const r = await simulate(scenario, { policy: 'fair' });
    const v = r.validation!;
    assert.equal(v.jobs, 400);
    assert.equal(r.jobsSucceeded + r.jobsFailed, 400);
    assert.equal(v.wrongAccepted, 0);
    assert.equal(v.noConsensus, 0);
    assert.ok(v.jobsOnceTrusted > 200, `hosts earn trust: ${v.jobsOnceTrusted} jobs started on trusted hosts`);
    assert.ok(v.tasksPerJobOnceTrusted < v.tasksPerJob && v.tasksPerJobOnceTrusted < 1.5, `${v.tasksPerJobOnceTrusted} tasks per job once trusted, ${v.tasksPerJob} overall`);
  });

  it('without replication the same grid accepts wrong results', async () => {
    const plain = { ...scenario, apps: scenario.apps.map((a) => ({ ...a, replication: { replicas: 1, quorum: 1, adaptive: false } })) };
    const v = (await simulate(plain, { policy: 'fair' })).validation!;
    assert.ok(v.wrongAccepted > 40, `about a fifth of 400 jobs ran on wrong hosts: ${v.wrongAccepted} accepted wrong`);
    assert.equal(v.tasksPerJob < 1.1, true);
  });
});
