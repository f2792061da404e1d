import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { groupByDigest, judge, lateValidity, resultDigest, settleReplica, type ReplicaView, type Verdict } from '../../src/domain/quorum.js';
import type { TaskState } from '../../src/domain/states.js';

const SHA = (n: number) => n.toString(16).padStart(64, '0');
let nextId = 1;
/** A replica of voter `voter`: `result` is its output's content (null: it failed; 'out': still running). */
function replica(voter: string, result: number | null | 'out' | 'lost' | 'released'): ReplicaView {
  const taskId = nextId++;
  if (result === 'out') return { taskId, voter, state: 'running', outcome: null, outputs: {} };
  if (result === 'lost') return { taskId, voter, state: 'lost', outcome: null, outputs: {} };
  if (result === 'released') return { taskId, voter, state: 'aborted', outcome: { kind: 'aborted' }, outputs: {} };
  if (result === null) return { taskId, voter, state: 'failed', outcome: { kind: 'failed', exitCode: 1 }, outputs: {} };
  return { taskId, voter, state: 'succeeded', outcome: { kind: 'succeeded' }, outputs: { 'r.txt': { sha256: SHA(result), size: 1 } } };
}
const RULE = { quorum: 2, maxReplicas: 4 };

describe('quorum: judging replicated jobs', () => {
  it('compares results by the names and digests of their files, not their order', () => {
    const a = { x: { sha256: SHA(1), size: 1 }, y: { sha256: SHA(2), size: 1 } };
    const b = { y: { sha256: SHA(2), size: 1 }, x: { sha256: SHA(1), size: 1 } };
    assert.equal(resultDigest(a), resultDigest(b));
    assert.notEqual(resultDigest(a), resultDigest({ ...a, y: { sha256: SHA(3), size: 1 } }));
    assert.notEqual(resultDigest({ x: a.x }), resultDigest({ z: a.x }), 'a renamed file is another result');
  });

  it('accepts the first quorum of agreeing replicas; the others are invalid', () => {
    const rs = [replica('a', 1), replica('b', 2), replica('c', 1)];
    assert.deepEqual(judge(rs, 0, RULE), { kind: 'accepted', canonical: rs[0]!.taskId, valid: [rs[0]!.taskId, rs[2]!.taskId], invalid: [rs[1]!.taskId] });
  });

  it('waits while enough replicas are out, and asks for just enough more otherwise', () => {
    assert.deepEqual(judge([replica('a', 1), replica('b', 'out')], 0, RULE), { kind: 'pending', issue: 0 });
    assert.deepEqual(judge([replica('a', 1), replica('b', 2)], 0, RULE), { kind: 'pending', issue: 1 }, 'one agreeing result more settles it');
    assert.deepEqual(judge([replica('a', null), replica('b', null)], 0, RULE), { kind: 'pending', issue: 2 }, 'two errors: two more');
    assert.deepEqual(judge([replica('a', 1), replica('b', 2)], 1, RULE), { kind: 'pending', issue: 0 }, 'a replica wanted already counts as out');
  });

  it('counts errors and lost replicas against the limit, releases not; at the limit with none out there is no consensus', () => {
    assert.deepEqual(judge([replica('a', 1), replica('b', 'released'), replica('c', 'released'), replica('d', 'released')], 0, RULE), { kind: 'pending', issue: 1 });
    const v = judge([replica('a', 1), replica('b', 2), replica('c', null), replica('d', 'lost')], 0, RULE);
    assert.equal(v.kind, 'no_consensus');
    assert.match((v as { reason: string }).reason, /2 of 4 replicas succeeded, at most 1 agreeing, 2 needed/);
    assert.deepEqual(judge([replica('a', 1), replica('b', 2), replica('c', null), replica('d', 'out')], 0, RULE), { kind: 'pending', issue: 0 }, 'the last one out may still agree');
    const none = judge([replica('a', null), replica('b', null), replica('c', null), replica('d', null)], 0, RULE);
    assert.match((none as { reason: string }).reason, /none of 4 replicas succeeded \(last: exited with code 1\)/);
  });

  it('a voter counts once: two hosts of one owner cannot make a quorum', () => {
    const rs = [replica('mallory', 666), replica('mallory', 666)];
    assert.deepEqual(judge(rs, 0, RULE), { kind: 'pending', issue: 1 });
    const honest = replica('alice', 666);
    const v = judge([...rs, honest], 0, RULE);
    assert.equal(v.kind, 'accepted');
    assert.deepEqual((v as { valid: number[] }).valid, [rs[0]!.taskId, rs[1]!.taskId, honest.taskId], 'every replica with the accepted result is valid');
  });

  it('a validator may group results that differ in their bytes', () => {
    const rs = [replica('a', 1), replica('b', 2)];
    assert.equal(judge(rs, 0, RULE).kind, 'pending');
    assert.equal(judge(rs, 0, RULE, [[rs[0]!.taskId, rs[1]!.taskId]]).kind, 'accepted');
  });

  it('property: an accepted result has a quorum of distinct voters with one digest; nothing else is accepted', () => {
    const arb = fc.array(fc.record({ voter: fc.constantFrom('a', 'b', 'c', 'd', 'e'), result: fc.oneof(fc.integer({ min: 1, max: 3 }), fc.constant(null), fc.constant('out' as const)) }), { maxLength: 8 });
    fc.assert(fc.property(arb, fc.integer({ min: 1, max: 4 }), fc.integer({ min: 0, max: 2 }), (spec, quorum, pending) => {
      const rs = spec.map((x) => replica(x.voter, x.result));
      const rule = { quorum, maxReplicas: 6 };
      const v = judge(rs, pending, rule);
      const ok = rs.filter((r) => r.state === 'succeeded');
      const voters = (digest: string) => new Set(ok.filter((r) => resultDigest(r.outputs) === digest).map((r) => r.voter)).size;
      const best = Math.max(0, ...groupByDigest(rs).map((g) => voters(resultDigest(rs.find((r) => r.taskId === g[0])!.outputs))));
      if (v.kind === 'accepted') {
        const canonical = rs.find((r) => r.taskId === v.canonical)!;
        assert.ok(voters(resultDigest(canonical.outputs)) >= quorum);
        assert.equal(v.valid.length + v.invalid.length, ok.length);
      } else {
        assert.ok(best < quorum, 'a quorum was there but not accepted');
      }
      if (v.kind === 'pending') assert.ok(v.issue >= 0 && rs.filter((r) => r.state !== 'aborted').length + pending + v.issue <= Math.max(rule.maxReplicas, rs.length + pending));
      if (v.kind === 'no_consensus') assert.ok(!rs.some((r) => r.state === 'running') && pending === 0);
    }));
  });

  it('a late replica is valid when its files equal a valid replica\'s; with a validator, differing files are left unjudged', () => {
    const valid = [{ 'r.txt': { sha256: SHA(1), size: 1 } }, { 'r.txt': { sha256: SHA(2), size: 1 } }];
    assert.equal(lateValidity({ 'r.txt': { sha256: SHA(2), size: 1 } }, valid, true), 'valid', 'equal to the second valid replica, not the canonical one');
    assert.equal(lateValidity({ 'r.txt': { sha256: SHA(3), size: 1 } }, valid, true), null);
    assert.equal(lateValidity({ 'r.txt': { sha256: SHA(3), size: 1 } }, valid, false), 'invalid');
  });

  it('settleReplica moves the job only on a verdict, and never a job that is not running', () => {
    const ok = { kind: 'succeeded' } as const;
    const accepted: Verdict = { kind: 'accepted', canonical: 1, valid: [1], invalid: [] };
    assert.deepEqual([settleReplica(ok, 'running', false, accepted).task, settleReplica(ok, 'running', false, accepted).job], ['succeeded', 'succeeded']);
    assert.equal(settleReplica(ok, 'running', false, { kind: 'pending', issue: 1 }).job, null);
    assert.equal(settleReplica({ kind: 'failed', exitCode: 2 }, 'running', false, { kind: 'no_consensus', reason: 'no consensus: x' }).job, 'failed');
    assert.equal(settleReplica(ok, 'cancelled', false, accepted).job, null);
    const states: Array<[boolean, TaskState]> = [[false, 'aborted'], [true, 'failed']];
    for (const [late, state] of states) assert.equal(settleReplica({ kind: 'aborted' }, 'running', late, null).task, state);
  });
});
