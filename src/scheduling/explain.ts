import type { Job, Millis, RuntimeKind } from '../domain/model.js';
import type { Resources } from '../domain/resources.js';
import type { HostState, JobState } from '../domain/states.js';
import type { SchedulingOptions } from './options.js';
import { RESOURCE_NAMES, mismatch, type Mismatch, type Placement, type ResourceName } from './placement.js';

/**
 * `boxgrid explain JOB`: why a queued job is not running. Pure: the service gathers the facts
 * (the job, what it asks of a host, the hosts, cool-downs, its reservation and its place in its
 * queue) and this says which of them keep it waiting, each as a stable code and a sentence.
 *
 * It reasons from what the server records. Two limits follow: a host's free capacity is not
 * recorded (only how many tasks it holds), so "busy" means "holds tasks"; and neither are the
 * runtimes a host offers (its agent names them in each work request), so a host whose
 * runtimes are unknown is taken to offer what the app needs.
 */

export const EXPLAIN_CODES = [
  'not_queued', 'deadline_passed', 'backoff', 'no_hosts', 'no_host_fits', 'reserved', 'hosts_busy', 'ready', 'no_quota', 'no_dependencies',
] as const;
export type ExplainCode = (typeof EXPLAIN_CODES)[number];

export interface ExplainReason {
  code: ExplainCode;
  message: string;
  /** True when this keeps the job from running; false for good news and notes. */
  blocking: boolean;
  /** Further lines (how many hosts each constraint stops, say); may be empty. */
  details: string[];
}

/** Live hosts that cannot run the job, grouped by the first thing that stops them (`mismatch`). */
export interface ExcludedHosts {
  /** `resource:cores`, `resource:memoryMiB`, …, `platform`, `runtime`, `selector:KEY` or `cooldown`. */
  blocker: string;
  hosts: number;
  message: string;
}

export interface Explanation {
  jobId: number;
  state: JobState;
  /** One line: the main reason. */
  summary: string;
  /** Blocking reasons first, then the rest; informational notes (`no_quota`, `no_dependencies`) last. */
  reasons: ExplainReason[];
  /** For a queued job: live hosts, how many could ever run it, how many of those hold tasks, and why the others cannot. */
  hosts: { live: number; canRun: number; busy: number; excluded: ExcludedHosts[] } | null;
  /** For a queued job: eligible queued jobs of its queue that go before it. */
  jobsAhead: JobsAhead | null;
}

export interface JobsAhead {
  count: number;
  /** The count stopped at a cap: there are at least `count`. */
  atLeast: boolean;
}

export type ExplainJob = Pick<Job, 'id' | 'state' | 'retryAt' | 'deadline' | 'priority' | 'attempts' | 'reason' | 'updatedAt'>;

export interface ExplainHost {
  id: number;
  name: string;
  /** What it enrolled with: the most it can ever run at once. */
  resources: Resources;
  platform: string;
  labels: Readonly<Record<string, string>>;
  state: HostState;
  lastSeenAt: Millis | null;
  /** Tasks it holds (assigned or running). */
  activeTasks: number;
  /** The runtimes it offers, when known; omitted: taken to offer what the job needs. */
  runtimes?: readonly RuntimeKind[];
}

export interface ExplainInput {
  job: ExplainJob;
  /** What the job asks of a host (`placementOf`). */
  placement: Placement;
  hosts: readonly ExplainHost[];
  /** Hosts cooling down from the job's app. */
  cooling: ReadonlySet<number>;
  /** The host being kept free for the job, if any (its name may be withheld: null). */
  reservedHost: { id: number; name: string | null } | null;
  /** Null when unknown. */
  jobsAhead: JobsAhead | null;
  options: SchedulingOptions;
  /** A host not seen for this long is not live. */
  leaseMs: number;
  now: Millis;
}

/** Whether the host counts: not revoked, and seen within a lease. */
export function isLive(h: Pick<ExplainHost, 'state' | 'lastSeenAt'>, leaseMs: number, now: Millis): boolean {
  return h.state === 'active' && h.lastSeenAt !== null && now - h.lastSeenAt <= leaseMs;
}

export function explainJob(input: ExplainInput): Explanation {
  const { job, now } = input;
  const name = `job ${job.id}`;
  if (job.state !== 'queued') {
    const message = job.state === 'running'
      ? `it is running (attempt ${job.attempts}), not waiting`
      : `it has ended: ${job.state}${job.reason ? ` (${job.reason})` : ''}`;
    return {
      jobId: job.id, state: job.state, summary: `${name}: ${message}`,
      reasons: [reason('not_queued', message, false)], hosts: null, jobsAhead: null,
    };
  }
  if (job.deadline !== null && job.deadline <= now) {
    const message = `its deadline passed at ${iso(job.deadline)}: it will not run, and the server fails it at its next sweep`;
    return {
      jobId: job.id, state: job.state, summary: `${name} will not run: its deadline passed at ${iso(job.deadline)}`,
      reasons: [reason('deadline_passed', message, true)], hosts: null, jobsAhead: input.jobsAhead,
    };
  }

  const reasons: ExplainReason[] = [];
  /** The summary each reason would give, if it is the main one. */
  const headline = new Map<ExplainCode, string>();

  // A backoff whose time has come is only cleared at the next work request: it no longer holds the job.
  if (job.retryAt !== null && job.retryAt > now) {
    const after = job.attempts > 0 ? ` after attempt ${job.attempts}` : '';
    // The job's reason reads "attempt 2 exited with code 1; retrying": the middle says how the attempt ended.
    const how = job.reason?.replace(/^attempt \d+ /, '').replace(/; retrying$/, '');
    const ended = how ? ` (${how})` : '';
    const until = `until ${iso(job.retryAt)}, ${duration(job.retryAt - now)} from now`;
    reasons.push(reason('backoff', `it waits out a retry backoff${after}${ended} ${until}`, true));
    headline.set('backoff', `${name} is waiting out a retry backoff${after} ${until}`);
  }

  const hosts = input.hosts.filter((h) => h.state === 'active');
  const live = hosts.filter((h) => isLive(h, input.leaseMs, now));
  const p = input.placement;
  const groups = new Map<string, Array<{ host: ExplainHost; m: Mismatch }>>();
  const fit: ExplainHost[] = [];
  for (const h of live) {
    const cooledApps = input.cooling.has(h.id) ? new Set([p.appId]) : new Set<number>();
    const m = mismatch({ capacity: h.resources, platform: h.platform, runtimes: h.runtimes ?? p.runtimes, labels: h.labels, cooledApps }, p);
    if (m === null) {
      fit.push(h);
      continue;
    }
    const key = blockerOf(m);
    let g = groups.get(key);
    if (!g) groups.set(key, (g = []));
    g.push({ host: h, m });
  }
  const excluded: ExcludedHosts[] = [...groups].map(([blocker, g]) => ({ blocker, hosts: g.length, message: groupFact(g, p, input.options) }));
  const busy = fit.filter((h) => h.activeTasks > 0);
  const exclusions = excluded.map((e) => e.message);

  if (live.length === 0) {
    const revoked = input.hosts.length - hosts.length;
    const message = hosts.length === 0
      ? `no live host: no host is enrolled${revoked > 0 ? ` (${revoked} revoked)` : ''}`
      : `no live host: ${hosts.length === 1 ? 'the only enrolled host has not' : `none of the ${hosts.length} enrolled hosts has`} been seen in the last ${duration(input.leaseMs)} (a lease)${revoked > 0 ? `; ${revoked} more revoked` : ''}`;
    // Whether the job could run once they are back: say so if it never could.
    const never = universalFacts(hosts, p, input.cooling, 'enrolled');
    reasons.push(reason('no_hosts', message, true, never.length > 0 ? [`nor could any enrolled host run it: ${never.join('; ')}`] : []));
    headline.set('no_hosts', `${name} is waiting: ${message}`);
  } else if (fit.length === 0) {
    const universal = universalFacts(live, p, input.cooling, 'live');
    const facts = universal.length > 0 ? universal : exclusions;
    const none = live.length === 1 ? 'the only live host cannot run it' : `none of the ${live.length} live hosts can run it`;
    reasons.push(reason('no_host_fits', `${none}: ${facts.join('; ')}`, true, exclusions));
    headline.set('no_host_fits', `${name} cannot run on any live host: ${facts[0]}`);
  } else {
    const ahead = input.jobsAhead;
    const aheadText = ahead === null ? null
      : ahead.count === 0 ? 'it is at the head of its queue'
      : `${ahead.atLeast ? 'at least ' : ''}${count(ahead.count, 'job')} ahead of it in its queue`;
    const unfit = live.length - fit.length;
    const others = unfit > 0 ? [`${unfit === 1 ? 'the other live host cannot' : `the other ${unfit} live hosts cannot`} run it: ${exclusions.join('; ')}`] : [];
    const notes = [...others, ...waitNotes(input, ahead)];
    if (input.reservedHost !== null) {
      const r = input.reservedHost;
      const which = r.name === null ? 'a host' : `host ${r.name}`;
      const stale = live.some((h) => h.id === r.id) ? '' : ` (but it has not been seen in the last ${duration(input.leaseMs)})`;
      const message = `${which} is being kept free for it: it takes no other work until this job fits${stale}`;
      reasons.push(reason('reserved', message, false));
      headline.set('reserved', `${name} is next: ${message}`);
    }
    const couldRun = `${count(fit.length, 'live host')} could run it`;
    if (busy.length === fit.length) {
      const tasks = busy.reduce((n, h) => n + h.activeTasks, 0);
      const held = fit.length === 1 ? `and it is busy (${count(tasks, 'task')})` : `all busy (${count(tasks, 'task')} between them)`;
      const message = `${couldRun}, ${held}${aheadText === null ? '' : `; ${aheadText}`}`;
      reasons.push(reason('hosts_busy', message, true, notes));
      headline.set('hosts_busy', `${name} is waiting for room: ${message}`);
    } else {
      const idle = fit.length - busy.length;
      const first = aheadText === null || ahead?.count === 0 ? '' : ` (${aheadText} go first)`;
      const message = `${couldRun} and ${idle === 1 ? '1 of them holds' : `${idle} of them hold`} no tasks: it should start when one next asks for work${first}`;
      reasons.push(reason('ready', message, false, notes));
      headline.set('ready', `${name} should start soon: ${message}`);
    }
  }
  // A job no host can run is stuck until the grid changes; a backoff only for a while.
  const main = SUMMARY_ORDER.find((c) => headline.has(c))!;
  const summary = headline.get(main)!;
  reasons.sort((a, b) => Number(b.blocking) - Number(a.blocking));

  reasons.push(
    reason('no_quota', input.options.policy === 'fifo'
      ? 'boxgrid has no quotas: this server hands out work in plain priority order (--policy fifo)'
      : 'boxgrid has no quotas: projects share the hosts by fair-share weight, which orders work but caps no project', false),
    reason('no_dependencies', 'boxgrid jobs have no dependencies (there are no workflows yet): it waits for no other job', false),
  );
  return {
    jobId: job.id, state: job.state, summary, reasons,
    hosts: { live: live.length, canRun: fit.length, busy: busy.length, excluded }, jobsAhead: input.jobsAhead,
  };
}

/** Which reason's headline becomes the summary, when several apply. */
const SUMMARY_ORDER: readonly ExplainCode[] = ['no_host_fits', 'backoff', 'no_hosts', 'reserved', 'hosts_busy', 'ready'];

/** What else decides when a runnable job starts: priority and age within its queue, fair share, reservation for the starved. */
function waitNotes(input: ExplainInput, ahead: JobsAhead | null): string[] {
  const o = input.options;
  if (o.policy === 'fifo') return ['hosts take queued jobs in priority order, then by age, first fit'];
  const notes = ['hosts take work from projects by fair share, then within a project by priority, then by age'];
  const inBackoff = input.job.retryAt !== null && input.job.retryAt > input.now;
  if (ahead?.count === 0 && input.reservedHost === null && !inBackoff && o.starvationSeconds > 0) {
    const waited = input.now - input.job.updatedAt;
    notes.push(waited >= o.starvationSeconds * 1000
      ? `it has waited ${duration(waited)}, longer than ${duration(o.starvationSeconds * 1000)} (--starvation): the next host that could run it but lacks the room is kept free for it`
      : `once it has waited ${duration(o.starvationSeconds * 1000)} (--starvation), a host that could run it but lacks the room is kept free for it`);
  }
  return notes;
}

function blockerOf(m: Mismatch): string {
  switch (m.kind) {
    case 'resource':
      return `resource:${m.resource}`;
    case 'selector':
      return `selector:${m.key}`;
    default:
      return m.kind;
  }
}

const TOO_LITTLE: Record<ResourceName, string> = { cores: 'too few cores', memoryMiB: 'too little memory', diskMiB: 'too little disk', gpus: 'too few GPUs' };

/** One line for the live hosts one blocker stops: "2 hosts have too few cores (it needs 16; the largest has 8)". */
function groupFact(g: Array<{ host: ExplainHost; m: Mismatch }>, p: Placement, o: SchedulingOptions): string {
  const n = g.length;
  const m = g[0]!.m;
  const hosts = count(n, 'host');
  const verb = (one: string, many: string) => (n === 1 ? one : many);
  switch (m.kind) {
    case 'resource': {
      const largest = Math.max(...g.map((x) => x.host.resources[m.resource]));
      return `${hosts} ${verb('has', 'have')} ${TOO_LITTLE[m.resource]} (it needs ${amount(m.resource, m.need)}; ${verb('it has', 'the largest has')} ${amount(m.resource, largest, false)})`;
    }
    case 'platform':
      return `${hosts} ${verb('is', 'are')} ${distinct(g.map((x) => x.host.platform)).join(', ')} (it needs ${p.platforms.join(' or ')})`;
    case 'runtime':
      return `${hosts} ${verb('offers', 'offer')} ${distinct(g.flatMap((x) => x.host.runtimes ?? [])).join(', ') || 'no runtime'} (it needs ${p.runtimes.join(' or ')})`;
    case 'selector': {
      const others = distinct(g.map((x) => label(x.host, m.key)).filter((v): v is string => v !== null));
      const shown = others.slice(0, 3).map((v) => `${m.key}=${v}`).join(', ') + (others.length > 3 ? ', …' : '');
      return `${hosts} ${verb('lacks', 'lack')} label ${m.key}=${m.need}${others.length > 0 ? ` (${verb('it has', 'they have')} ${shown})` : ''}`;
    }
    case 'cooldown':
      return `${hosts} ${verb('is', 'are')} cooling down from this app after failing it ${o.hostFailureLimit} times in a row`;
    case 'walltime': // offers only: enrolled hosts have no walltime
      return `${hosts} ${verb('has', 'have')} less time left than its runs may take (${m.need} s)`;
  }
}

/** Constraints that none of `hosts` meets: each alone keeps the job off all of them. */
function universalFacts(hosts: readonly ExplainHost[], p: Placement, cooling: ReadonlySet<number>, which: 'live' | 'enrolled'): string[] {
  const facts: string[] = [];
  if (hosts.length === 0) return facts;
  if (p.platforms.length > 0 && !hosts.some((h) => p.platforms.includes(h.platform))) {
    facts.push(`needs platform ${p.platforms.join(' or ')}; no ${which} host is (${distinct(hosts.map((h) => h.platform)).join(', ')})`);
  }
  if (hosts.every((h) => h.runtimes !== undefined && !h.runtimes.some((r) => p.runtimes.includes(r)))) {
    facts.push(`needs runtime ${p.runtimes.join(' or ')}; no ${which} host offers it`);
  }
  for (const [key, value] of Object.entries(p.selector)) {
    if (!hosts.some((h) => label(h, key) === value)) facts.push(`needs label ${key}=${value}; no ${which} host has it`);
  }
  for (const r of RESOURCE_NAMES) {
    const largest = Math.max(...hosts.map((h) => h.resources[r]));
    if (p.resources[r] > largest) facts.push(`needs ${amount(r, p.resources[r])}; the largest ${which} host has ${amount(r, largest, false)}`);
  }
  if (hosts.every((h) => cooling.has(h.id))) facts.push(`every ${which} host is cooling down from this app after failing it repeatedly`);
  return facts;
}

/** The host's value of a label; own keys only (a selector key "constructor" is not Object's). */
function label(h: ExplainHost, key: string): string | null {
  return Object.hasOwn(h.labels, key) ? h.labels[key]! : null;
}

function reason(code: ExplainCode, message: string, blocking: boolean, details: string[] = []): ExplainReason {
  return { code, message, blocking, details };
}

/** "16 cores", "64 GiB of memory", "1 GPU"; without the noun when `noun` is false ("8", "16 GiB"). */
function amount(r: ResourceName, v: number, noun = true): string {
  switch (r) {
    case 'cores':
      return noun ? `${v} ${v === 1 ? 'core' : 'cores'}` : String(v);
    case 'gpus':
      return noun ? `${v} ${v === 1 ? 'GPU' : 'GPUs'}` : String(v);
    case 'memoryMiB':
      return `${mib(v)}${noun ? ' of memory' : ''}`;
    case 'diskMiB':
      return `${mib(v)}${noun ? ' of disk' : ''}`;
  }
}

function mib(v: number): string {
  if (v >= 1024 * 1024 && v % (1024 * 1024) === 0) return `${v / (1024 * 1024)} TiB`;
  if (v >= 1024 && v % 1024 === 0) return `${v / 1024} GiB`;
  return `${v} MiB`;
}

function count(n: number, noun: string): string {
  return `${n} ${n === 1 ? noun : `${noun}s`}`;
}

function distinct<T>(xs: readonly T[]): T[] {
  return [...new Set(xs)];
}

function iso(ms: Millis): string {
  return new Date(ms).toISOString();
}

/** "45 s", "3 min 20 s", "2 h 5 min", "3 d 4 h": rounded up to the second, two units at most. */
export function duration(ms: number): string {
  const s = Math.max(0, Math.ceil(ms / 1000));
  const two = (big: number, bigUnit: string, small: number, smallUnit: string) => `${big} ${bigUnit}${small > 0 ? ` ${small} ${smallUnit}` : ''}`;
  if (s < 60) return `${s} s`;
  if (s < 3600) return two(Math.floor(s / 60), 'min', s % 60, 's');
  if (s < 86400) return two(Math.floor(s / 3600), 'h', Math.floor((s % 3600) / 60), 'min');
  return two(Math.floor(s / 86400), 'd', Math.floor((s % 86400) / 3600), 'h');
}
