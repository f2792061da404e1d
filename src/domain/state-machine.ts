import { BoxgridError } from './errors.js';

/**
 * A state machine written once as a table of legal transitions. Code never assigns a state
 * directly: it asks the machine, and an illegal transition throws instead of doing nothing.
 * Store adapters use `sourcesOf` to turn a transition into a guarded bulk UPDATE, so the
 * same table rules single-row and set-at-a-time changes.
 */
export class StateMachine<S extends string> {
  private readonly edges: ReadonlyMap<S, ReadonlySet<S>>;

  constructor(
    readonly name: string,
    readonly states: readonly S[],
    transitions: Readonly<Record<S, readonly S[]>>,
    readonly terminal: readonly S[],
  ) {
    const edges = new Map<S, ReadonlySet<S>>();
    for (const s of states) edges.set(s, new Set(transitions[s]));
    this.edges = edges;
    for (const t of terminal) {
      if ((transitions[t] ?? []).length > 0) throw new Error(`${name}: terminal state ${t} has exits`);
    }
  }

  can(from: S, to: S): boolean {
    return this.edges.get(from)?.has(to) ?? false;
  }

  /** Throws `illegal_transition` unless from → to is in the table. */
  assert(from: S, to: S, subject = this.name): void {
    if (!this.can(from, to)) {
      throw new BoxgridError('illegal_transition', `${subject} cannot go from ${from} to ${to}`);
    }
  }

  /** Every state from which `to` may be reached in one step. */
  sourcesOf(to: S): S[] {
    return this.states.filter((s) => this.can(s, to));
  }

  isTerminal(s: S): boolean {
    return this.terminal.includes(s);
  }
}
