import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { BoxgridError } from '../../src/domain/errors.js';
import { StateMachine } from '../../src/domain/state-machine.js';
import {
  HOST_STATES, JOB_STATES, TASK_STATES, hostMachine, jobMachine, taskMachine,
} from '../../src/domain/states.js';

/**
 * The legal transitions, written out again independently of src/domain/states.ts, so that a
 * change to the table there has to be made deliberately here too.
 */
const CASES = [
  {
    machine: jobMachine as StateMachine<string>,
    states: JOB_STATES as readonly string[],
    legal: {
      queued: ['running', 'cancelled', 'failed', 'succeeded'],
      running: ['queued', 'succeeded', 'failed', 'cancelled'],
      succeeded: [],
      failed: [],
      cancelled: [],
    } as Record<string, string[]>,
    terminal: ['succeeded', 'failed', 'cancelled'],
  },
  {
    machine: taskMachine as StateMachine<string>,
    states: TASK_STATES as readonly string[],
    legal: {
      assigned: ['running', 'succeeded', 'failed', 'lost', 'aborted'],
      running: ['succeeded', 'failed', 'lost', 'aborted'],
      succeeded: [],
      failed: [],
      lost: ['succeeded', 'failed'],
      aborted: [],
    } as Record<string, string[]>,
    terminal: ['succeeded', 'failed', 'aborted'],
  },
  {
    machine: hostMachine as StateMachine<string>,
    states: HOST_STATES as readonly string[],
    legal: { active: ['revoked'], revoked: [] } as Record<string, string[]>,
    terminal: ['revoked'],
  },
];

for (const { machine, states, legal, terminal } of CASES) {
  describe(`${machine.name}Machine`, () => {
    it('knows exactly the expected states', () => {
      assert.deepEqual([...machine.states].sort(), Object.keys(legal).sort());
      assert.deepEqual([...states], [...machine.states]);
    });

    for (const from of states) {
      for (const to of states) {
        const ok = legal[from]!.includes(to);
        it(`${from} → ${to} is ${ok ? 'legal' : 'illegal'}`, () => {
          assert.equal(machine.can(from, to), ok);
          if (ok) {
            assert.doesNotThrow(() => machine.assert(from, to));
          } else {
            assert.throws(
              () => machine.assert(from, to, `subject-x`),
              (e: unknown) => {
                assert.ok(e instanceof BoxgridError);
                assert.equal(e.code, 'illegal_transition');
                assert.equal(e.status, 409);
                assert.equal(e.retryable, false);
                assert.match(e.message, /subject-x/);
                assert.ok(e.message.includes(`from ${from} to ${to}`), e.message);
                return true;
              },
            );
          }
        });
      }
    }

    it('names the machine in the error when no subject is given', () => {
      const from = terminal[0]!;
      assert.throws(() => machine.assert(from, states[0]!), (e: unknown) => e instanceof BoxgridError && e.message.startsWith(`${machine.name} cannot`));
    });

    it('terminal states are exactly the expected ones and have no exits', () => {
      for (const s of states) assert.equal(machine.isTerminal(s), terminal.includes(s), s);
      for (const t of terminal) for (const to of states) assert.equal(machine.can(t, to), false, `${t} → ${to}`);
    });

    it('non-terminal states all have at least one exit', () => {
      for (const s of states) if (!terminal.includes(s)) assert.ok(states.some((to) => machine.can(s, to)), s);
    });

    it('sourcesOf(x) lists every state with an edge to x, in declaration order', () => {
      for (const to of states) {
        assert.deepEqual(machine.sourcesOf(to), states.filter((from) => legal[from]!.includes(to)), `sourcesOf(${to})`);
      }
    });

    it('unknown states have no edges', () => {
      assert.equal(machine.can('nonsense', states[0]!), false);
      assert.equal(machine.can(states[0]!, 'nonsense'), false);
      assert.throws(() => machine.assert('nonsense', states[0]!), (e: unknown) => e instanceof BoxgridError && e.code === 'illegal_transition');
    });
  });
}

describe('jobMachine specifics', () => {
  it("sourcesOf('cancelled') is queued and running (what cancelBatch may touch)", () => {
    assert.deepEqual(jobMachine.sourcesOf('cancelled'), ['queued', 'running']);
  });
  it('no job state can return to itself', () => {
    for (const s of JOB_STATES) assert.equal(jobMachine.can(s, s), false, s);
  });
  it('a lost task sends a running job back to queued, but nothing reaches queued otherwise', () => {
    assert.deepEqual(jobMachine.sourcesOf('queued'), ['running']);
  });
});

describe('StateMachine', () => {
  it('refuses a table where a terminal state has exits', () => {
    assert.throws(
      () => new StateMachine<'a' | 'b'>('bad', ['a', 'b'], { a: ['b'], b: ['a'] }, ['b']),
      /bad: terminal state b has exits/,
    );
  });
  it('accepts a well-formed table', () => {
    const m = new StateMachine<'a' | 'b'>('ok', ['a', 'b'], { a: ['b'], b: [] }, ['b']);
    assert.equal(m.can('a', 'b'), true);
    assert.equal(m.can('b', 'a'), false);
    assert.deepEqual(m.sourcesOf('b'), ['a']);
    assert.deepEqual(m.sourcesOf('a'), []);
  });
});
