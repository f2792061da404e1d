import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import {
  NEW_HOST, dayOf, draw, nextReliability, quotaLeft, replicationFor, replicationProbability, type HostReliability, type ReplicationOptions,
} from '../../src/scheduling/replication.js';

const O: ReplicationOptions = { trustAfter: 10, spotCheck: 0.1, dailyQuota: 100 };
const NOW = 1_800_000_000_000;
const KEY = Buffer.alloc(32, 1);

describe('replication: adaptive replication and quotas', () => {
  it('replicates always below trustAfter, then less as the run grows, never below spotCheck', () => {
    assert.equal(replicationProbability(0, O), 1);
    assert.equal(replicationProbability(9, O), 1);
    assert.equal(replicationProbability(10, O), 1);
    assert.equal(replicationProbability(20, O), 0.25);
    assert.equal(replicationProbability(1000, O), 0.1);
  });

  it('a trusted host gets single replicas of adaptive apps as often as the draw allows; others never', () => {
    const adaptive = { replicas: 2, quorum: 2, adaptiveReplication: true };
    const trusted: HostReliability = { ...NEW_HOST, validRun: 1000 };
    let singles = 0;
    for (let job = 1; job <= 2000; job++) {
      const r = replicationFor(adaptive, trusted, job, 7, O, KEY);
      assert.equal(r.quorum, r.replicas === 1 ? 1 : 2);
      if (r.replicas === 1) singles++;
      assert.deepEqual(replicationFor({ ...adaptive, adaptiveReplication: false }, trusted, job, 7, O, KEY), { quorum: 2, replicas: 2 });
      assert.deepEqual(replicationFor(adaptive, NEW_HOST, job, 7, O, KEY), { quorum: 2, replicas: 2 });
    }
    assert.ok(singles > 1700 && singles < 1900, `about 90% single with a 10% spot check, got ${singles} of 2000`);
    assert.equal(draw(5, 7, KEY), draw(5, 7, KEY), 'the draw is fixed by job, host and key');
    assert.notEqual(draw(5, 7, KEY), draw(5, 7, Buffer.alloc(32, 2)), 'and cannot be computed without the key');
    assert.throws(() => replicationFor(adaptive, trusted, 1, 7, O, undefined), /draw key/);
    assert.deepEqual(replicationFor({ replicas: 1, quorum: 1, adaptiveReplication: false }, NEW_HOST, 1, 1, O, KEY), { quorum: 1, replicas: 1 });
  });

  it('valid results extend the run and double the quota back; invalid ones reset the run and halve it; errors take one', () => {
    let r = nextReliability(NEW_HOST, 'valid', O, NOW);
    assert.deepEqual([r.validRun, r.quota], [1, null]);
    r = nextReliability(r, 'invalid', O, NOW);
    assert.deepEqual([r.validRun, r.quota], [0, 50]);
    r = nextReliability(r, 'error', O, NOW);
    assert.deepEqual([r.validRun, r.quota], [0, 49]);
    r = nextReliability(r, 'valid', O, NOW);
    assert.deepEqual([r.validRun, r.quota], [1, 98]);
    r = nextReliability(r, 'valid', O, NOW);
    assert.equal(r.quota, null, 'back to the full quota');
    let low: HostReliability = { ...NEW_HOST, quota: 1 };
    low = nextReliability(nextReliability(low, 'invalid', O, NOW), 'error', O, NOW);
    assert.equal(low.quota, 1, 'never below one task a day');
  });

  it('counts tasks handed out per day, and what is left of the quota', () => {
    let r = NEW_HOST;
    for (let i = 0; i < 3; i++) r = nextReliability(r, 'issued', O, NOW);
    assert.deepEqual([r.quotaDay, r.issuedToday], [dayOf(NOW), 3]);
    r = { ...r, quota: 5 };
    assert.deepEqual(quotaLeft(new Map([[9, r]]), O, NOW), { left: new Map([[9, 2]]), fresh: 100 });
    const tomorrow = NOW + 86_400_000;
    assert.deepEqual(quotaLeft(new Map([[9, r]]), O, tomorrow).left.get(9), 5, 'a new day starts the count again, at the cut quota');
    assert.equal(nextReliability(r, 'issued', O, tomorrow).issuedToday, 1);
  });
});
