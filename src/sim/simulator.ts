import { createHash } from 'node:crypto';
import type { App, Host, OutputFile } from '../domain/model.js';
import { defaultMaxReplicas } from '../domain/quorum.js';
import type { TaskOutcome } from '../domain/outcomes.js';
import { jobMachine, type JobState } from '../domain/states.js';
import type { SchedulingOptions } from '../scheduling/options.js';
import type { AgentTiming } from '../service/context.js';
import type { Store } from '../store/store.js';
import { EventQueue } from './event-queue.js';
import { lowerBound, type LowerBound } from './lower-bound.js';
import { Random } from './random.js';
import type { Scenario, SimJob } from './scenario.js';
import { SimAgent, type AgentEnv, type HostEvent, type SimTask } from './sim-agent.js';
import { SIM_EPOCH, SIM_TIMING, startSimServer, type SimServer } from './sim-server.js';

export interface SimOptions {
  /** `fair`: boxgrid's policy; `fifo`: the first-fit baseline. */
  policy: SchedulingOptions['policy'];
  timing?: AgentTiming;
  /**
   * A run whose jobs have not all ended after this much simulated time fails (a lost job, a
   * stuck grid); by default three times the lower bound and an hour. A run where no job ends
   * for a long while (the slowest task, a lease, the longest backoff and an hour) fails too.
   */
  maxSimulatedSeconds?: number;
  /** Called with the store before it closes (tests look at the tasks). */
  inspect?: (run: { store: Store; jobIds: number[]; vanishedHostIds: ReadonlySet<number> }) => Promise<void>;
}

export interface SimResult {
  scenario: string;
  policy: SchedulingOptions['policy'];
  seed: number;
  hosts: number;
  jobs: number;
  /** From the first submission until every job had ended, seconds. */
  makespanSeconds: number;
  lowerBound: LowerBound;
  /** makespan ÷ lower bound: 1 is perfect. */
  ratio: number;
  /** Core-seconds of the tasks that ended their jobs successfully ÷ core-seconds the hosts had until the makespan. */
  utilisation: number;
  jobsSucceeded: number;
  jobsFailed: number;
  tasks: { started: number; succeeded: number; failed: number; aborted: number; lost: number; duplicates: number };
  /** Scenarios with replicated apps or hosts that return wrong results: how validation fared (see SimValidation). */
  validation: SimValidation | null;
  /** Service calls made, and the wall time they took (ms): what a simulation spends its time on. */
  calls: Record<'work' | 'heartbeat' | 'report' | 'sweep', { n: number; ms: number }>;
  droppedReports: number;
  events: number;
  wallSeconds: number;
}

export interface SimValidation {
  jobs: number;
  /** Jobs whose accepted result is wrong (it came from a host that returned a wrong one). */
  wrongAccepted: number;
  /** Jobs that failed with no consensus. */
  noConsensus: number;
  /** Tasks started per job, replicas, errors and disagreements included. */
  tasksPerJob: number;
  /** The same over jobs whose first task went to a host that was trusted then (a run of at least trustAfter valid results). */
  tasksPerJobOnceTrusted: number;
  /** Jobs whose first task went to a trusted host. */
  jobsOnceTrusted: number;
}

type SimEvent = HostEvent | { kind: 'submit'; batch: number } | { kind: 'join'; host: number } | { kind: 'leave'; host: number } | { kind: 'sweep' };

/**
 * Runs a scenario through the server's own service layer (sim-server.ts) with simulated agents
 * (sim-agent.ts) in simulated time: a discrete-event loop over a seeded agenda, so the same
 * scenario and policy always give the same figures. Which task goes where is decided only by
 * the production scheduling code. Every job must end exactly once; a run that loses a job
 * throws instead of reporting figures.
 */
export async function simulate(scenario: Scenario, opts: SimOptions): Promise<SimResult> {
  const random = new Random(scenario.seed);
  const failures = random.fork();
  const jitter = random.fork();
  return run(scenario, opts, failures, jitter);
}

async function run(scenario: Scenario, opts: SimOptions, failures: Random, jitter: Random): Promise<SimResult> {
  const started = performance.now();
  const timing = opts.timing ?? SIM_TIMING;
  const server = await startSimServer(opts.policy, () => jitter.next(), timing);
  try {
    return await new Simulation(scenario, opts, timing, server, failures).run(started);
  } catch (e) {
    if (e instanceof Error) e.message = `${scenario.name} (${opts.policy}, seed ${scenario.seed}): ${e.message}`;
    throw e;
  } finally {
    await server.close();
  }
}

class Simulation {
  private readonly queue = new EventQueue<SimEvent>();
  private now = SIM_EPOCH;
  private readonly agents: SimAgent[];
  private readonly jobs = new Map<number, SimJob>();
  private readonly jobProject = new Map<number, number>();
  private readonly jobIds: number[] = [];
  private readonly batchIds: number[] = [];
  private readonly apps = new Map<string, App>();
  private siteId = 0;
  private readonly totalJobs: number;
  private submitted = 0;
  private readonly ended = new Map<number, JobState>();
  private readonly violations: string[] = [];
  private lastEnd = 0;
  private usefulCoreMs = 0;
  /** The report being sent, so the job end it causes can be credited to its task. */
  private reporting: { jobId: number; coreMs: number } | null = null;
  private lost = 0;
  private events = 0;
  /** Draws which results of wrong hosts are wrong (its own stream, so other draws do not move). */
  private readonly wrongDraws: Random;
  /** Whether validation is measured: some app is replicated, or some host returns wrong results. */
  private readonly validated: boolean;
  private readonly trustedAtStart = new Map<number, boolean>();
  private readonly calls: SimResult['calls'] = { work: { n: 0, ms: 0 }, heartbeat: { n: 0, ms: 0 }, report: { n: 0, ms: 0 }, sweep: { n: 0, ms: 0 } };

  constructor(
    private readonly scenario: Scenario,
    private readonly opts: SimOptions,
    private readonly timing: AgentTiming,
    private readonly server: SimServer,
    failures: Random,
  ) {
    this.wrongDraws = new Random(scenario.seed + 7919);
    this.validated = scenario.apps.some((a) => (a.replication?.replicas ?? 1) > 1) || scenario.hosts.some((h) => (h.wrongRate ?? 0) > 0);
    const protocol = server.protocol;
    const env: AgentEnv = {
      protocol: {
        requestWork: async (host, req) => {
          const answer = await this.timed('work', () => protocol.requestWork(host, req));
          await this.noteStarts(host, answer.tasks.map((t) => t.taskId));
          return answer;
        },
        heartbeat: (host, input) => this.timed('heartbeat', () => protocol.heartbeat(host, input)),
      },
      now: () => this.now,
      schedule: (at, e) => this.queue.push(at, e),
      random: failures,
      failureRate: scenario.failureRate,
      heartbeatSeconds: timing.heartbeatSeconds,
      job: (id) => this.jobs.get(id) ?? fail(`the server handed out job ${id}, which the simulation never submitted`),
      report: (host, task, outcome, durationMs) => this.report(host, task, outcome, durationMs),
    };
    this.agents = scenario.hosts.map((h, i) => new SimAgent(i, h, env));
    this.totalJobs = scenario.batches.reduce((n, b) => n + b.jobs.length, 0);
  }

  async run(started: number): Promise<SimResult> {
    const { store } = this.server.ctx;
    const s = this.scenario;
    this.siteId = (await store.createSite('sim', this.now)).id;
    const projectIds = new Map<string, number>();
    for (const p of s.projects) {
      const project = await store.createProject(p.name, p.weight, this.now);
      projectIds.set(p.name, project.id);
      this.server.ctx.events.subscribe({ projectId: project.id }, null, (e) => {
        if (e.event.type === 'job' && jobMachine.isTerminal(e.event.state)) this.jobEnded(e.event.jobId, e.event.state);
      });
    }
    for (const a of s.apps) {
      const projectId = projectIds.get(a.project) ?? fail(`app ${a.name}: no project ${a.project}`);
      const app = await store.createAppVersion(projectId, {
        name: a.name, description: `simulated app ${a.name}`, image: `sim/${a.name}:1`, imageDigest: null, command: ['run'],
        resources: { cores: a.cores, memoryMiB: a.memoryMiB, diskMiB: a.diskMiB, gpus: 0 }, maxRuntimeSeconds: 7 * 86400,
        maxAttempts: a.maxAttempts, replicas: a.replication?.replicas ?? 1, quorum: a.replication?.quorum ?? 1,
        maxReplicas: defaultMaxReplicas(a.replication?.replicas ?? 1), adaptiveReplication: a.replication?.adaptive ?? false, validator: null,
        checkpointing: false, platforms: ['linux/amd64'], nativeCommand: null,
      }, 'new', this.now);
      this.apps.set(a.name, app);
    }

    // Submissions first: at equal times they go before the hosts that would ask for them.
    const at = (seconds: number): number => SIM_EPOCH + Math.round(seconds * 1000); // whole ms, as the store keeps times
    s.batches.forEach((b, i) => this.queue.push(at(b.at), { kind: 'submit', batch: i }));
    s.hosts.forEach((h, i) => {
      this.queue.push(at(h.joinAt), { kind: 'join', host: i });
      if (h.leave) this.queue.push(at(h.leave.at), { kind: 'leave', host: i });
    });
    this.queue.push(SIM_EPOCH + this.timing.sweepSeconds * 1000, { kind: 'sweep' });

    const firstSubmission = Math.min(...s.batches.map((b) => b.at));
    const t0 = at(firstSubmission);
    const bound = lowerBound(s.hosts, s.batches.flatMap((b) => b.jobs), firstSubmission);
    // Three times the ideal is beyond any scheduler worth measuring: jobs are stuck. So is a grid
    // where no job has ended for longer than the slowest task, a lease, the longest backoff and an hour.
    const limit = t0 + (this.opts.maxSimulatedSeconds ?? 3 * bound.seconds + 3600) * 1000;
    const longest = s.batches.reduce((m, b) => b.jobs.reduce((mm, j) => Math.max(mm, j.seconds), m), 0);
    const slowest = longest / s.hosts.reduce((m, h) => Math.min(m, h.speed), Infinity);
    const stallMs = (slowest + this.timing.leaseSeconds + this.server.ctx.scheduling.backoffMaxSeconds + 3600) * 1000;
    while (!(this.submitted === s.batches.length && this.ended.size >= this.totalJobs)) {
      const next = this.queue.pop();
      if (!next) throw new Error(`${await this.unfinished()}; the simulation ran out of events`);
      if (next.at > limit) throw new Error(`${await this.unfinished()} after ${(limit - t0) / 1000} simulated seconds`);
      if (next.at - Math.max(this.lastEnd, t0) > stallMs) {
        throw new Error(`${await this.unfinished()}: none ended in the last ${stallMs / 1000} simulated seconds`);
      }
      this.now = next.at;
      this.server.setTime(next.at);
      this.events++;
      await this.handle(next.event);
      if (this.violations.length > 0) throw new Error(`job ends went wrong: ${this.violations.slice(0, 5).join('; ')}`);
    }

    const end = this.lastEnd;
    const makespanSeconds = (end - t0) / 1000;
    const tasks = await this.checkStore();
    const validation = await this.validation();
    const vanishedHostIds = new Set<number>();
    for (const a of this.agents) if (a.spec.leave?.how === 'vanish' && a.spec.leave.at * 1000 + SIM_EPOCH <= end && a.hostId !== null) vanishedHostIds.add(a.hostId);
    await this.opts.inspect?.({ store, jobIds: this.jobIds, vanishedHostIds });

    let capacityCoreSeconds = 0;
    for (const h of s.hosts) {
      const from = Math.max(h.joinAt, firstSubmission);
      const until = Math.min(h.leave?.at ?? Infinity, firstSubmission + makespanSeconds);
      if (until > from) capacityCoreSeconds += h.cores * (until - from);
    }
    const states = [...this.ended.values()];
    return {
      scenario: s.name,
      policy: this.opts.policy,
      seed: s.seed,
      hosts: s.hosts.length,
      jobs: this.totalJobs,
      makespanSeconds,
      lowerBound: bound,
      ratio: makespanSeconds / bound.seconds,
      utilisation: this.usefulCoreMs / 1000 / capacityCoreSeconds,
      jobsSucceeded: states.filter((x) => x === 'succeeded').length,
      jobsFailed: states.filter((x) => x === 'failed').length,
      tasks: { ...tasks, lost: this.lost },
      validation,
      calls: this.calls,
      droppedReports: this.agents.reduce((n, a) => n + a.droppedReports, 0),
      events: this.events,
      wallSeconds: (performance.now() - started) / 1000,
    };
  }

  private async handle(e: SimEvent): Promise<void> {
    switch (e.kind) {
      case 'submit':
        return this.submit(e.batch);
      case 'join': {
        const h = this.scenario.hosts[e.host]!;
        const record = await this.server.ctx.store.createHost(
          { siteId: this.siteId, name: `sim-${e.host}`, resources: { cores: h.cores, memoryMiB: h.memoryMiB, diskMiB: h.diskMiB, gpus: 0 }, platform: 'linux/amd64' },
          this.now,
        );
        this.agents[e.host]!.join(record);
        return;
      }
      case 'leave':
        return this.agents[e.host]!.leave(this.scenario.hosts[e.host]!.leave!.how);
      case 'sweep':
        this.lost += await this.timed('sweep', () => this.server.sweeper.sweep());
        this.queue.push(this.now + this.timing.sweepSeconds * 1000, { kind: 'sweep' });
        return;
      default:
        return this.agents[e.host]!.handle(e);
    }
  }

  private async submit(index: number): Promise<void> {
    const b = this.scenario.batches[index]!;
    const app = this.apps.get(b.app) ?? fail(`batch ${index}: no app ${b.app}`);
    const r = await this.server.ctx.store.insertJobs({
      projectId: app.projectId, app, batch: { labels: { sim: this.scenario.name } }, idempotency: null, now: this.now,
      jobs: b.jobs.map((j) => ({
        args: ['--seconds', String(j.seconds)], env: {}, inputs: {}, resources: { cores: j.cores, memoryMiB: j.memoryMiB },
        priority: 0, deadline: null, labels: {}, selector: {}, params: {},
      })),
    });
    r.jobIds.forEach((id, i) => {
      this.jobs.set(id, b.jobs[i]!);
      this.jobProject.set(id, app.projectId);
      this.jobIds.push(id);
    });
    this.batchIds.push(r.batch!.id);
    this.submitted++;
  }

  private async report(host: Host, task: SimTask, outcome: TaskOutcome, durationMs: number): Promise<void> {
    this.reporting = { jobId: task.jobId, coreMs: task.resources.cores * durationMs };
    try {
      const outputs = outcome.kind === 'succeeded' ? await this.outputsOf(host, task.jobId) : {};
      await this.timed('report', () => this.server.protocol.report(host, task.taskId, { outcome, durationMs, outputs }));
    } finally {
      this.reporting = null;
    }
  }

  /**
   * A successful task's outputs: one file, the job's right result, or (at the host's
   * `wrongRate`) a wrong one of its own. Recorded as uploaded, as an agent's upload would.
   */
  private async outputsOf(host: Host, jobId: number): Promise<Record<string, OutputFile>> {
    const index = this.agents.findIndex((a) => a.hostId === host.id);
    const rate = this.scenario.hosts[index]?.wrongRate ?? 0;
    const wrong = rate > 0 && this.wrongDraws.next() < rate;
    const sha256 = createHash('sha256').update(wrong ? `wrong ${jobId} from ${index}` : `result ${jobId}`).digest('hex');
    await this.server.ctx.store.recordBlob(this.jobProject.get(jobId)!, { sha256, size: 64, createdAt: this.now });
    return { result: { sha256, size: 64 } };
  }

  /** Notes, for each job starting, whether its first host was trusted then (SimValidation.tasksPerJobOnceTrusted). */
  private async noteStarts(host: Host, taskIds: number[]): Promise<void> {
    if (!this.validated) return;
    const { store } = this.server.ctx;
    for (const taskId of taskIds) {
      const found = await store.getHostTask(host.id, taskId);
      if (!found || found.task.replica !== 0 || this.trustedAtStart.has(found.job.id)) continue;
      const run = (await store.hostReliability(host.id, found.job.appId)).validRun;
      this.trustedAtStart.set(found.job.id, run >= this.server.ctx.scheduling.replication.trustAfter);
    }
  }

  /** How validation fared, from the store's rows (null when not measured). */
  private async validation(): Promise<SimValidation | null> {
    if (!this.validated) return null;
    const { store } = this.server.ctx;
    let jobs = 0, wrongAccepted = 0, noConsensus = 0, tasks = 0, trustedJobs = 0, trustedTasks = 0;
    for (const id of this.jobIds) {
      const job = (await store.getJob(this.jobProject.get(id)!, id))!;
      const all = await store.listTasks(id);
      jobs++;
      tasks += all.length;
      if (this.trustedAtStart.get(id) === true) {
        trustedJobs++;
        trustedTasks += all.length;
      }
      if (job.state === 'failed' && (job.reason ?? '').startsWith('no consensus')) noConsensus++;
      const result = all.find((t) => t.id === job.canonicalTaskId);
      const right = createHash('sha256').update(`result ${id}`).digest('hex');
      if (job.state === 'succeeded' && result?.outputs.result?.sha256 !== right) wrongAccepted++;
    }
    return {
      jobs, wrongAccepted, noConsensus, tasksPerJob: tasks / Math.max(jobs, 1),
      tasksPerJobOnceTrusted: trustedTasks / Math.max(trustedJobs, 1), jobsOnceTrusted: trustedJobs,
    };
  }

  private jobEnded(jobId: number, state: JobState): void {
    const before = this.ended.get(jobId);
    if (before !== undefined) {
      this.violations.push(`job ${jobId} ended twice (${before}, then ${state})`);
      return;
    }
    if (!this.jobs.has(jobId)) this.violations.push(`job ${jobId} ended, but the simulation never submitted it`);
    this.ended.set(jobId, state);
    this.lastEnd = this.now;
    if (state === 'succeeded') {
      if (this.reporting?.jobId === jobId) this.usefulCoreMs += this.reporting.coreMs;
      else this.violations.push(`job ${jobId} succeeded without a task reporting success`);
    }
  }

  /** Which jobs never ended, with the first few as the store has them, to show where they got stuck. */
  private async unfinished(): Promise<string> {
    const open = this.jobIds.filter((id) => !this.ended.has(id));
    const shown: string[] = [];
    for (const id of open.slice(0, 3)) {
      const job = await this.server.ctx.store.getJob(this.jobProject.get(id)!, id);
      const tasks = await this.server.ctx.store.listTasks(id);
      const alive = new Set(this.agents.filter((a) => a.isAlive).map((a) => a.hostId));
      shown.push(
        `job ${id} ${job?.state} (attempts ${job?.attempts}, retry at ${job?.retryAt === null ? '-' : (job!.retryAt! - SIM_EPOCH) / 1000} s, ${job?.reason}) tasks [` +
          tasks.map((t) => `${t.id}: ${t.state} replica ${t.replica} on host ${t.hostId}${alive.has(t.hostId) ? '' : ' (gone)'}, lease until ${(t.leaseExpiresAt - SIM_EPOCH) / 1000} s`).join('; ') + ']',
      );
    }
    return `${open.length} of ${this.totalJobs} jobs never ended (${shown.join(' | ')})`;
  }

  /**
   * The store must agree with the job ends the events told of: every job in a final state, as
   * many succeeded and failed. Also counts the tasks, from the store's own rows.
   */
  private async checkStore(): Promise<Omit<SimResult['tasks'], 'lost'>> {
    const { store } = this.server.ctx;
    const byState: Partial<Record<JobState, number>> = {};
    for (const id of this.batchIds) {
      for (const [state, n] of Object.entries(await store.batchCounts(id))) byState[state as JobState] = (byState[state as JobState] ?? 0) + n;
    }
    const heard = (st: JobState): number => [...this.ended.values()].filter((x) => x === st).length;
    for (const st of ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const) {
      const stored = byState[st] ?? 0;
      const expected = jobMachine.isTerminal(st) ? heard(st) : 0;
      if (stored !== expected) throw new Error(`the store has ${stored} ${st} jobs, the simulation saw ${expected} end so`);
    }
    const tasks = { started: 0, succeeded: 0, failed: 0, aborted: 0, duplicates: 0 };
    for (const id of this.jobIds) {
      for (const t of await store.listTasks(id)) {
        tasks.started++;
        if (t.replica > 0) tasks.duplicates++;
        if (t.state === 'succeeded' || t.state === 'failed' || t.state === 'aborted') tasks[t.state]++;
      }
    }
    return tasks;
  }

  private async timed<T>(kind: keyof SimResult['calls'], fn: () => Promise<T>): Promise<T> {
    const t = performance.now();
    try {
      return await fn();
    } finally {
      this.calls[kind].n++;
      this.calls[kind].ms += performance.now() - t;
    }
  }
}

function fail(message: string): never {
  throw new Error(message);
}
