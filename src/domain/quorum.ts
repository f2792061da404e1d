import { createHash } from 'node:crypto';
import type { OutputFile } from './model.js';
import { describeOutcome, type Settlement, type TaskOutcome } from './outcomes.js';
import type { JobState, TaskState } from './states.js';

/**
 * Replicated jobs (apps with `replicas` > 1): a job runs on several hosts and ends only when
 * `quorum` of its successful replicas agree. The pure rule here judges a job's replicas after
 * each of them ends; the store applies the verdict in the same transaction.
 */

/**
 * Unless an app says otherwise, a job may run four replicas more than it wants: room for four
 * errors, losses or wrong results. Twice the replicas was too few on a grid where a fifth of the
 * hosts are wrong (the `validation` benchmark lost 0.2% of its jobs to "no consensus").
 */
export function defaultMaxReplicas(replicas: number): number {
  return Math.min(replicas + 4, 32);
}

/** A job's reason while its replicas' results wait for the app's validator. */
export const AWAITING_VALIDATOR = "its replicas' results await the app's validator (run by servers started with --validators)";

/** A job's reason while replicas it wants wait for hosts (cleared when the last is handed out). */
export function wantingReplicas(n: number): string {
  return `waiting for ${n} more replica${n === 1 ? '' : 's'} on hosts, of owners, that have not run it`;
}

/** One replica (task) of a replicated job, as the judge sees it. */
export interface ReplicaView {
  taskId: number;
  /**
   * Who stands behind the result: the host's owner, or the host itself when it has none. Results
   * of one voter count once, so a volunteer cannot outvote others with several machines.
   */
  voter: string;
  state: TaskState;
  outcome: TaskOutcome | null;
  outputs: Record<string, OutputFile>;
}

export interface QuorumRule {
  /** Agreeing successful replicas that make a result canonical. */
  quorum: number;
  /** Most replicas a job may run, errors and disagreements included, before it fails. */
  maxReplicas: number;
  /** The app names a validator: results whose files differ may still agree, as it says. */
  validator?: boolean;
}

export type Verdict =
  /** `valid` agree (the canonical result is the first of them); `invalid` succeeded but disagree. */
  | { kind: 'accepted'; canonical: number; valid: number[]; invalid: number[] }
  /** Not decided yet: `issue` more replicas are wanted (0: wait for the ones out). */
  | { kind: 'pending'; issue: number }
  /** Enough replicas succeeded to make a quorum, but their files differ: the app's validator decides. */
  | { kind: 'validate' }
  /** The limit is reached and no result has a quorum: the job fails. */
  | { kind: 'no_consensus'; reason: string };

/**
 * What a successful replica's result is, for comparison by content: a digest of its output
 * files' names and digests. Two replicas agree when their digests are equal.
 */
export function resultDigest(outputs: Record<string, OutputFile>): string {
  const lines = Object.keys(outputs).sort().map((name) => `${name}\0${outputs[name]!.sha256}`);
  return createHash('sha256').update(lines.join('\n')).digest('hex');
}

/** The successful replicas grouped by result digest, each group in task order. */
export function groupByDigest(replicas: readonly ReplicaView[]): number[][] {
  const groups = new Map<string, number[]>();
  for (const r of succeeded(replicas)) {
    const key = resultDigest(r.outputs);
    const g = groups.get(key);
    if (g) g.push(r.taskId);
    else groups.set(key, [r.taskId]);
  }
  return [...groups.values()];
}

/** A group's replicas, one per voter (the first). */
function votes(group: number[], replicas: readonly ReplicaView[]): number[] {
  const seen = new Set<string>();
  return group.filter((id) => {
    const voter = replicas.find((r) => r.taskId === id)?.voter;
    if (voter === undefined || seen.has(voter)) return false;
    seen.add(voter);
    return true;
  });
}

/**
 * Judges a replicated job. The largest group of agreeing replicas (the earliest on a tie) is
 * accepted once it reaches the quorum, and the other successes are invalid. Otherwise enough
 * replicas must be out to reach the quorum if they all agree with that group: more are
 * issued, as long as the job has run fewer than `maxReplicas` (replicas released by their host,
 * `aborted`, are not counted: they ran nothing). When none can be issued and none is out, the
 * job has no consensus. `pending` counts replicas wanted but not yet handed to a host;
 * `groups` says which successes agree (by digest unless a validator said otherwise). With
 * `rule.validator`, successes whose files differ but that could make a quorum are sent to the
 * validator (`validate`), whose groups the job is then judged on.
 */
export function judge(replicas: readonly ReplicaView[], pending: number, rule: QuorumRule, groups = groupByDigest(replicas)): Verdict {
  const ok = succeeded(replicas).map((r) => r.taskId);
  const best = largest(groups.map((g) => votes(g.filter((id) => ok.includes(id)), replicas)).filter((g) => g.length > 0));
  if (best && best.length >= rule.quorum) {
    // Every replica with the accepted result is valid, a voter's second copy too.
    const agreeing = groups.find((g) => g.includes(best[0]!))!.filter((id) => ok.includes(id));
    return { kind: 'accepted', canonical: best[0]!, valid: agreeing, invalid: ok.filter((id) => !agreeing.includes(id)) };
  }
  // Identical files need no validator; differing ones go to it once they could make a quorum.
  if (rule.validator && new Set(succeeded(replicas).map((r) => r.voter)).size >= rule.quorum) return { kind: 'validate' };
  const out = replicas.filter((r) => r.state === 'assigned' || r.state === 'running').length + pending;
  const needed = rule.quorum - (best?.length ?? 0);
  if (out >= needed) return { kind: 'pending', issue: 0 };
  const ran = replicas.filter((r) => r.state !== 'aborted').length + pending;
  const issue = Math.min(needed - out, rule.maxReplicas - ran);
  if (issue > 0) return { kind: 'pending', issue };
  if (out > 0) return { kind: 'pending', issue: 0 };
  return { kind: 'no_consensus', reason: noConsensus(replicas, ok.length, best?.length ?? 0, rule) };
}

function succeeded(replicas: readonly ReplicaView[]): ReplicaView[] {
  return replicas.filter((r) => r.state === 'succeeded' && r.outcome?.kind === 'succeeded');
}

function largest(groups: number[][]): number[] | undefined {
  let best: number[] | undefined;
  for (const g of groups) if (!best || g.length > best.length || (g.length === best.length && g[0]! < best[0]!)) best = g;
  return best;
}

function noConsensus(replicas: readonly ReplicaView[], successes: number, agreeing: number, rule: QuorumRule): string {
  const ran = replicas.filter((r) => r.state !== 'aborted').length;
  if (successes === 0) {
    const last = [...replicas].reverse().find((r) => r.outcome !== null && r.outcome.kind !== 'succeeded');
    const lost = replicas.filter((r) => r.state === 'lost').length;
    const why = last?.outcome ? describeOutcome(last.outcome) : lost > 0 ? 'their hosts stopped reporting' : 'no result';
    return `no consensus: none of ${ran} replicas succeeded (last: ${why})`;
  }
  return `no consensus: ${successes} of ${ran} replicas succeeded, at most ${agreeing} agreeing, ${rule.quorum} needed (the limit is ${rule.maxReplicas} replicas)`;
}

/**
 * Where a replica's report leaves it and its job (the counterpart of outcomes.ts `settle` for
 * replicated jobs): a success or failure ends the replica; a release (aborted, not late) ends
 * it without counting. The job moves only on the verdict: accepted → succeeded, no consensus →
 * failed; a job that is not running (cancelled, or decided) is left as it is.
 */
export function settleReplica(outcome: TaskOutcome, jobState: JobState, late: boolean, verdict: Verdict | null): Settlement {
  const task = replicaState(outcome, late);
  const reason = outcome.kind === 'succeeded' ? null : describeOutcome(outcome);
  if (jobState !== 'running' || verdict === null || verdict.kind === 'pending' || verdict.kind === 'validate') return { task, job: null, reason, countsAsAttempt: true, backoff: false };
  if (verdict.kind === 'accepted') return { task, job: 'succeeded', reason: null, countsAsAttempt: true, backoff: false };
  return { task, job: 'failed', reason: verdict.reason, countsAsAttempt: true, backoff: false };
}

/** The state a replica's report leaves it in. */
export function replicaState(outcome: TaskOutcome, late: boolean): TaskState {
  return outcome.kind === 'succeeded' ? 'succeeded' : outcome.kind === 'aborted' && !late ? 'aborted' : 'failed';
}

/** The job's replicas as the judge sees them once a report of one of them is applied. */
export function withReport(replicas: readonly ReplicaView[], taskId: number, outcome: TaskOutcome, outputs: Record<string, OutputFile>, late: boolean): ReplicaView[] {
  return replicas.map((r) => (r.taskId === taskId ? { ...r, state: replicaState(outcome, late), outcome, outputs } : r));
}

/**
 * The validity of a replica that succeeds after its job was decided: valid when its files equal
 * those of a replica found valid; otherwise invalid — unless the app has a validator, whose
 * verdict on bytes that differ is not known (the replica is then left unjudged, its host's
 * record untouched).
 */
export function lateValidity(outputs: Record<string, OutputFile>, valid: ReadonlyArray<Record<string, OutputFile>>, hasValidator: boolean): 'valid' | 'invalid' | null {
  const digest = resultDigest(outputs);
  if (valid.some((v) => resultDigest(v) === digest)) return 'valid';
  return hasValidator ? null : 'invalid';
}

/** Whether a task's outcome counts against its host's quota: it ran and went wrong (a release is no error). */
export function isError(outcome: TaskOutcome): boolean {
  return outcome.kind !== 'succeeded' && outcome.kind !== 'aborted';
}

/** The rule a job is judged by: its quorum (1 for adaptive replication's singles), its app's limit and validator. */
export function ruleFor(job: { quorum: number }, app: { maxReplicas: number; validator: unknown }): QuorumRule {
  return { quorum: job.quorum, maxReplicas: app.maxReplicas, validator: app.validator !== null };
}

/** What a validator said of the successful replicas it was shown (`basis`). */
export type ValidatorAnswer = { groups: number[][] } | { error: string };

/**
 * Judges a job on its validator's answer: `stale` when the job's successful replicas are no
 * longer those the validator was shown (another succeeded meanwhile: it must look again);
 * otherwise the verdict on the validator's groups (ids it was not shown are ignored), or the
 * job's failure when the validator itself failed.
 */
export function judgeValidation(
  replicas: readonly ReplicaView[],
  pending: number,
  rule: QuorumRule,
  basis: readonly number[],
  answer: ValidatorAnswer,
): Verdict | { kind: 'stale' } {
  const ok = succeeded(replicas).map((r) => r.taskId).sort((a, b) => a - b);
  const shown = [...basis].sort((a, b) => a - b);
  if (ok.length !== shown.length || ok.some((id, i) => id !== shown[i])) return { kind: 'stale' };
  if ('error' in answer) return { kind: 'no_consensus', reason: `the app's validator failed: ${answer.error}` };
  const groups = answer.groups.map((g) => [...new Set(g)].filter((id) => ok.includes(id)).sort((a, b) => a - b));
  return judge(replicas, pending, { ...rule, validator: false }, groups);
}
