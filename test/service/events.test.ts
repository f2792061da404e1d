import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventBus, type StampedEvent } from '../../src/service/events.js';

const job = (jobId: number) => ({ type: 'job' as const, jobId, batchId: null, state: 'running' as const, reason: null });

function replay(bus: EventBus, projectId: number, afterSeq: number): number[] {
  const got: StampedEvent[] = [];
  bus.subscribe({ projectId }, afterSeq, (e) => got.push(e))();
  return got.map((e) => e.seq);
}

describe('EventBus replay', () => {
  it('replays the events after a seq, oldest first, before it fills', () => {
    const bus = new EventBus(5);
    for (let i = 1; i <= 3; i++) bus.publish(1, job(i));
    assert.deepEqual(replay(bus, 1, 0), [1, 2, 3]);
    assert.deepEqual(replay(bus, 1, 2), [3]);
  });

  it('keeps the last `keep` events once it wraps, oldest first, however many times it wrapped', () => {
    const bus = new EventBus(3);
    for (let i = 1; i <= 4; i++) bus.publish(1, job(i));
    assert.deepEqual(replay(bus, 1, 0), [2, 3, 4]);
    for (let i = 5; i <= 11; i++) bus.publish(1, job(i));
    assert.deepEqual(replay(bus, 1, 0), [9, 10, 11]);
    assert.deepEqual(replay(bus, 1, 9), [10, 11]);
  });

  it('counts seqs per project and replays only the asked project\'s', () => {
    const bus = new EventBus(10);
    bus.publish(1, job(1));
    bus.publish(2, job(2));
    bus.publish(1, job(3));
    assert.deepEqual(replay(bus, 1, 0), [1, 2]);
    assert.deepEqual(replay(bus, 2, 0), [1]);
  });
});
