import { BoxgridError } from '../domain/errors.js';
import type { Host } from '../domain/model.js';
import type { TaskOutcome } from '../domain/outcomes.js';
import { subtract, type Resources } from '../domain/resources.js';
import type { AgentProtocolService, TaskAssignment } from '../service/agent-protocol.js';
import type { Random } from './random.js';
import type { SimHost, SimJob } from './scenario.js';

/** What a simulated agent needs from the simulation around it. */
export interface AgentEnv {
  protocol: Pick<AgentProtocolService, 'requestWork' | 'heartbeat'>;
  /** Simulated epoch ms. */
  now(): number;
  schedule(at: number, event: HostEvent): void;
  /** Decides which tasks fail; shared by all hosts and drawn in event order. */
  random: Random;
  failureRate: number;
  heartbeatSeconds: number;
  job(jobId: number): SimJob;
  /** Sends a task's report (through the simulator, which credits the work that ended a job). */
  report(host: Host, task: SimTask, outcome: TaskOutcome, durationMs: number): Promise<void>;
}

/** Things that happen to one host, in simulated time. */
export type HostEvent =
  | { kind: 'ask'; host: number; token: number }
  | { kind: 'beat'; host: number; token: number }
  | { kind: 'end'; host: number; taskId: number };

/** A task as its host runs it: the "container" is this record and a scheduled end. */
export interface SimTask {
  taskId: number;
  jobId: number;
  resources: Resources;
  startedAt: number;
  /** How long it takes on this host if it does not fail. */
  fullMs: number;
  endsAt: number;
  fails: boolean;
  images: string[];
}

/**
 * One host's agent, behaving as src/agent/agent.ts does over the network, minus the network
 * and the containers: it asks for work with its free capacity (a fresh request id each time),
 * runs what it gets, heartbeats all its tasks every `heartbeatSeconds` (and at once after getting
 * new ones), stops the tasks a heartbeat answer aborts, reports each task when it ends,
 * and asks again when a task ends or after the delay the server suggested. A vanished host
 * simply stops calling.
 */
export class SimAgent {
  private record: Host | null = null;
  private alive = false;
  private readonly running = new Map<number, SimTask>();
  /** Images the host holds, most recent last (sent with work requests, as the agent does). */
  private readonly images = new Set<string>();
  /**
   * Each scheduled ask or heartbeat carries the token current when it was scheduled; a wake-up
   * (a task ended, new tasks arrived) takes a new one, so the timer it replaces is skipped when
   * it comes up (the agenda cannot take events out).
   */
  private askToken = 0;
  private beatToken = 0;
  private requests = 0;
  private heartbeatMs: number;
  readonly maxTasks: number;
  /** Reports the server refused for good (the agent drops those). */
  droppedReports = 0;

  constructor(readonly index: number, readonly spec: SimHost, private readonly env: AgentEnv) {
    this.heartbeatMs = env.heartbeatSeconds * 1000;
    this.maxTasks = Math.max(1, Math.floor(spec.cores)); // the agent's default (cli/commands/agent.ts)
  }

  get hostId(): number | null {
    return this.record?.id ?? null;
  }

  get isAlive(): boolean {
    return this.alive;
  }

  /** The host's agent starts: it asks for work at once. */
  join(record: Host): void {
    this.record = record;
    this.alive = true;
    this.wakeWork();
    this.scheduleBeat(this.env.now() + this.heartbeatMs);
  }

  /** Vanishing: nothing more is sent, not even reports. Releasing: the agent aborts its tasks and reports them first. */
  async leave(how: 'vanish' | 'release'): Promise<void> {
    if (!this.alive) return;
    if (how === 'release') {
      for (const t of [...this.running.values()]) await this.stop(t, { kind: 'aborted' });
    }
    this.alive = false;
  }

  async handle(e: HostEvent): Promise<void> {
    if (!this.alive) return;
    if (e.kind === 'ask') {
      if (e.token === this.askToken) await this.ask();
    } else if (e.kind === 'beat') {
      if (e.token === this.beatToken) await this.beat();
    } else {
      const t = this.running.get(e.taskId);
      if (t) await this.stop(t, t.fails ? { kind: 'failed', exitCode: 1 } : { kind: 'succeeded' }); // absent: aborted earlier
    }
  }

  private free(): Resources {
    let free: Resources = { cores: this.spec.cores, memoryMiB: this.spec.memoryMiB, diskMiB: this.spec.diskMiB, gpus: 0 };
    for (const t of this.running.values()) free = subtract(free, t.resources);
    return free;
  }

  private async ask(): Promise<void> {
    const free = this.free();
    const room = this.maxTasks - this.running.size;
    if (room <= 0 || free.cores <= 0 || free.memoryMiB <= 0) return; // full: a task's end wakes it
    const answer = await this.env.protocol.requestWork(this.record!, {
      requestId: `sim-h${this.index}-r${++this.requests}`, free, maxTasks: room, runtimes: ['docker'], labels: {}, images: [...this.images],
    });
    this.heartbeatMs = answer.heartbeatSeconds * 1000;
    for (const a of answer.tasks) if (!this.running.has(a.taskId)) this.start(a);
    if (answer.tasks.length > 0) this.scheduleBeat(this.env.now()); // the agent's first heartbeat at once
    this.askToken++;
    this.env.schedule(this.env.now() + answer.retryAfterMs, { kind: 'ask', host: this.index, token: this.askToken });
  }

  private start(a: TaskAssignment): void {
    const now = this.env.now();
    const fullMs = Math.max(1, Math.round((this.env.job(a.jobId).seconds * 1000) / this.spec.speed));
    const fails = this.env.random.next() < this.env.failureRate;
    const endsAt = now + (fails ? Math.max(1, Math.round(fullMs * this.env.random.next())) : fullMs);
    const images = a.imageDigest ? [a.image, a.imageDigest] : [a.image];
    this.running.set(a.taskId, { taskId: a.taskId, jobId: a.jobId, resources: a.resources, startedAt: now, fullMs, endsAt, fails, images });
    this.env.schedule(endsAt, { kind: 'end', host: this.index, taskId: a.taskId });
  }

  private async beat(): Promise<void> {
    const now = this.env.now();
    if (this.running.size > 0) {
      const tasks = [...this.running.values()].map((t) => ({ taskId: t.taskId, progress: Math.min(1, (now - t.startedAt) / t.fullMs) }));
      const answer = await this.env.protocol.heartbeat(this.record!, { tasks });
      this.heartbeatMs = answer.heartbeatSeconds * 1000;
      for (const { taskId } of answer.abort) {
        const t = this.running.get(taskId);
        if (t) await this.stop(t, { kind: 'aborted' });
      }
    }
    this.scheduleBeat(now + this.heartbeatMs);
  }

  /** The task's container is gone (ended or stopped): report it, free its room, ask for more. */
  private async stop(t: SimTask, outcome: TaskOutcome): Promise<void> {
    this.running.delete(t.taskId);
    if (outcome.kind !== 'aborted') {
      for (const image of t.images) {
        this.images.delete(image);
        this.images.add(image);
      }
    }
    try {
      await this.env.report(this.record!, t, outcome, this.env.now() - t.startedAt);
    } catch (e) {
      // As the agent does: a result the server will never take is dropped.
      if (!(e instanceof BoxgridError && ['lease_expired', 'conflict', 'not_found'].includes(e.code))) throw e;
      this.droppedReports++;
    }
    this.wakeWork();
  }

  private wakeWork(): void {
    this.askToken++;
    this.env.schedule(this.env.now(), { kind: 'ask', host: this.index, token: this.askToken });
  }

  private scheduleBeat(at: number): void {
    this.beatToken++;
    this.env.schedule(at, { kind: 'beat', host: this.index, token: this.beatToken });
  }
}
