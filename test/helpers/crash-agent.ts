import { createHash, randomUUID } from 'node:crypto';
import { HOST_RESOURCES, type SimHost } from '../../bench/dispatch.js';
import { HttpClient, type HttpResponse } from '../../bench/harness.js';

/**
 * Simulated hosts for fault tests: plain HTTP clients speaking /agent/v1 the way
 * src/agent/agent.ts does when the server goes away — a call that fails on the way (connection
 * refused or reset, a timeout, a 5xx) is sent again unchanged after an exponential, jittered
 * backoff (the same requestId, the same report), and the host keeps going once the server is
 * back. Every answer is written down in a `Ledger`, so a test can say afterwards whether the
 * server lost or double-counted anything.
 */

/** Where the hosts find the server. A test that restarts it elsewhere changes `url`; each host follows on its next call. */
export interface Endpoint {
  url: string;
}

/** What the hosts saw, over all of them. */
export class Ledger {
  /** Tasks handed out, by id: the job each belongs to. */
  readonly jobOfTask = new Map<number, number>();
  /** Tasks handed out per job (more than one: the job was handed out twice). */
  readonly tasksOfJob = new Map<number, number[]>();
  /** Reports the server accepted as new (`replayed: false`), per task. */
  readonly newReports = new Map<number, number>();
  /** Reports accepted as new, in all. */
  accepted = 0;
  /** Tasks whose report the server has (accepted as new, or recognised as a repeat): the jobs done. */
  readonly reported = new Set<number>();
  /** Reports answered `replayed: true`: a repeat the server recognised. */
  replayedReports = 0;
  /** Of those, reports whose first answer was a replay: the call got through before a crash, its answer did not. */
  committedUnanswered = 0;
  /** Answered calls sent again after a restart (`replayAnswered`) and recognised. */
  replayedAfterRestart = 0;
  /** Their tasks. */
  readonly committedUnansweredTasks = new Set<number>();
  /** Work requests answered `replayed: true`. */
  replayedWork = 0;
  /** Answers thrown away on purpose (as if lost on the way back), then asked again. */
  dropped = 0;
  /** Calls that failed on the way (no answer, or a 5xx) and were sent again. */
  retried = 0;
  /** 5xx answers among those. */
  serverErrors = 0;
  /** Outputs uploaded (PUT) and outputs the server already had (`present`). */
  uploaded = 0;
  present = 0;
  /** The output each job's report named: job id → sha256. */
  readonly outputOfJob = new Map<number, string>();
  /** Anything the server must never answer. Empty after a clean run. */
  readonly problems: string[] = [];

  done(taskId: number): void {
    this.reported.add(taskId);
  }

  problem(msg: string): void {
    if (this.problems.length < 100) this.problems.push(msg);
  }
}

export interface CrashAgentOptions {
  endpoint: Endpoint;
  ledger: Ledger;
  /** This host's random numbers (seeded by the test: which answers are dropped, how long tasks "run"). */
  random: () => number;
  /** Share of mutating calls whose answer is thrown away and the call sent again, as after a lost answer. */
  dropRate: number;
  /** The bytes job `jobId`'s task leaves as its one output, or null for none. */
  outputFor: (jobId: number) => Buffer | null;
  /** Set once every job is done: stop asking for work. */
  done: () => boolean;
  /** Set when the test has failed: give up at once, even on held tasks. */
  abandoned: () => boolean;
  maxTasks: number;
  /** How long a host that got nothing waits before asking again, in ms (default 300; the server suggests its idle poll, 15 s: too long for a test). */
  idleCapMs?: number;
}

/** An answer, and how many times its call had failed before (the server down, a 5xx). */
type Answer = HttpResponse & { failures: number };

export interface Assignment {
  taskId: number;
  jobId: number;
}

/** Thrown out of a host's loop when the test gives up; not a failure of its own. */
class Abandoned extends Error {}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
/** The agent's backoff (1 s doubling to 60 s, jittered over its upper half), scaled down for a test: 50 ms doubling to 1 s. */
const backoffMs = (failures: number, random: () => number): number => {
  const cap = Math.min(1000, 50 * 2 ** failures);
  return cap / 2 + (random() * cap) / 2;
};
/** Per call: long enough for a loaded 2-core machine, short enough that a hung server shows. */
const CALL_TIMEOUT_MS = 20_000;

export class CrashTolerantAgent {
  private client: HttpClient | null = null;
  private clientUrl = '';
  /** The last work request that got tasks, and the last report accepted: what `replayAnswered` sends again. */
  private lastWork: { body: unknown; taskIds: number[] } | null = null;
  private lastReport: { taskId: number; body: unknown } | null = null;

  constructor(readonly host: SimHost, private readonly o: CrashAgentOptions) {}

  /** Asks for work, "runs" what it gets and reports it, until `done()` (or `abandoned()`). */
  async run(): Promise<void> {
    try {
      while (!this.o.done()) {
        const tasks = await this.requestWork();
        if (tasks === null) {
          await sleep(this.o.idleCapMs ?? 300);
          continue;
        }
        await this.heartbeat(tasks);
        await Promise.all(tasks.map((t) => this.runTask(t)));
      }
    } catch (e) {
      if (!(e instanceof Abandoned)) throw e;
    } finally {
      this.client?.close();
    }
  }

  close(): void {
    this.client?.close();
  }

  /**
   * Sends this host's last answered work request and report again, as a host whose answers
   * were lost in a crash would (a test calls it after restarting the server): the report must
   * be recognised (`replayed`, not counted again), the work request must claim nothing new
   * (`replayed`, only tasks it handed out then that are still live).
   */
  async replayAnswered(): Promise<void> {
    const { ledger } = this.o;
    const report = this.lastReport;
    const work = this.lastWork;
    try {
      if (report !== null) {
        const r = await this.retrying('POST', `/agent/v1/tasks/${report.taskId}/result`, report.body);
        if (r.status !== 200 || r.body.replayed !== true || r.body.taskState !== 'succeeded') {
          ledger.problem(`task ${report.taskId}'s report sent again after a restart answered ${r.status}: ${r.text.slice(0, 300)}`);
        } else ledger.replayedAfterRestart++;
      }
      if (work !== null) {
        const r = await this.retrying('POST', '/agent/v1/work', work.body);
        const ids = r.status === 200 ? (r.body.tasks as Assignment[]).map((t) => t.taskId) : [];
        if (r.status !== 200 || r.body.replayed !== true || ids.some((id) => !work.taskIds.includes(id))) {
          ledger.problem(`host ${this.host.name}: work request sent again after a restart answered ${r.status} ${r.text.slice(0, 300)}; first [${work.taskIds.join(',')}]`);
        } else ledger.replayedAfterRestart++;
      }
    } catch (e) {
      if (!(e instanceof Abandoned)) throw e;
    }
  }

  // ── the protocol ─────────────────────────────────────────────────────────

  /** POST /agent/v1/work with the whole host free; null when nothing was handed out. */
  private async requestWork(): Promise<Assignment[] | null> {
    const { ledger } = this.o;
    const body = { requestId: randomUUID(), free: HOST_RESOURCES, maxTasks: this.o.maxTasks, runtimes: ['docker'] };
    const answers = await this.mutate('POST', '/agent/v1/work', body);
    const last = answers[answers.length - 1]!;
    for (const r of answers) {
      if (r.status !== 200) {
        ledger.problem(`host ${this.host.name}: work request ${body.requestId} answered ${r.status}: ${r.text.slice(0, 300)}`);
        return null;
      }
      if (r.body.replayed === true) ledger.replayedWork++;
    }
    const ids = (r: HttpResponse): string => (r.body.tasks as Assignment[]).map((t) => t.taskId).sort((a, b) => a - b).join(',');
    if (answers[0]!.body.replayed === true && answers[0]!.failures === 0) {
      ledger.problem(`host ${this.host.name}: a new work request ${body.requestId} answered replayed, tasks [${ids(answers[0]!)}]`);
    }
    if (answers.length === 2 && answers[0]!.body.tasks.length > 0) {
      // The first answer was "lost": the repeat must be a replay with the very same tasks, none
      // more. (A request that got nothing claimed nothing: its repeat is a new request.)
      if (last.body.replayed !== true || ids(answers[0]!) !== ids(last)) {
        ledger.problem(`host ${this.host.name}: work request ${body.requestId} repeated answered replayed=${last.body.replayed} tasks [${ids(last)}], first [${ids(answers[0]!)}]`);
      }
    }
    const tasks = last.body.tasks as Assignment[];
    if (tasks.length > 0) this.lastWork = { body, taskIds: tasks.map((t) => t.taskId) };
    for (const t of tasks) {
      const known = ledger.jobOfTask.get(t.taskId);
      if (known !== undefined) {
        ledger.problem(`task ${t.taskId} (job ${t.jobId}) was handed out twice (to ${this.host.name} the second time)`);
        continue;
      }
      ledger.jobOfTask.set(t.taskId, t.jobId);
      const of = ledger.tasksOfJob.get(t.jobId) ?? [];
      of.push(t.taskId);
      ledger.tasksOfJob.set(t.jobId, of);
      if (of.length > 1) ledger.problem(`job ${t.jobId} was handed out again: tasks ${of.join(', ')}`);
    }
    return tasks.length === 0 ? null : tasks;
  }

  /** One heartbeat for the new tasks: each must get its lease, none an abort. */
  private async heartbeat(tasks: Assignment[]): Promise<void> {
    const r = await this.retrying('POST', '/agent/v1/heartbeat', { tasks: tasks.map((t) => ({ taskId: t.taskId, progress: 0 })) });
    if (r.status !== 200) {
      this.o.ledger.problem(`host ${this.host.name}: heartbeat answered ${r.status}: ${r.text.slice(0, 300)}`);
      return;
    }
    const aborts = r.body.abort as Array<{ taskId: number; reason: string }>;
    if (aborts.length > 0) this.o.ledger.problem(`host ${this.host.name}: heartbeat aborts ${JSON.stringify(aborts)}`);
  }

  /** "Runs" a task (a few ms), uploads its output if it has one, and reports it succeeded. */
  private async runTask(t: Assignment): Promise<void> {
    const { ledger, random } = this.o;
    await sleep(random() * 5);
    const outputs: Record<string, { sha256: string; size: number }> = {};
    const bytes = this.o.outputFor(t.jobId);
    if (bytes !== null) {
      const digest = sha256(bytes);
      outputs['result.txt'] = { sha256: digest, size: bytes.length };
      await this.upload(t.taskId, digest, bytes);
    }
    // The report is fixed once (the agent writes result.json first): every repeat is the same.
    const report = { outcome: { kind: 'succeeded' }, durationMs: Math.round(random() * 50), outputs };
    const answers = await this.mutate('POST', `/agent/v1/tasks/${t.taskId}/result`, report);
    for (const [i, r] of answers.entries()) {
      if (r.status !== 200 || r.body.taskState !== 'succeeded' || r.body.jobState !== 'succeeded') {
        ledger.problem(`report of task ${t.taskId} (job ${t.jobId}) answered ${r.status}: ${r.text.slice(0, 300)}`);
        continue;
      }
      if (r.body.replayed === true) {
        // A repeat (dropped on purpose, or sent again after no answer): the first try got through.
        if (i === 0 && r.failures === 0) ledger.problem(`the first report of task ${t.taskId} (job ${t.jobId}) answered replayed`);
        ledger.replayedReports++;
        if (i === 0) {
          ledger.committedUnanswered++;
          ledger.committedUnansweredTasks.add(t.taskId);
        }
        ledger.done(t.taskId);
        continue;
      }
      if (i > 0) ledger.problem(`the repeated report of task ${t.taskId} (job ${t.jobId}) was accepted as new: counted twice`);
      const n = (ledger.newReports.get(t.taskId) ?? 0) + 1;
      ledger.newReports.set(t.taskId, n);
      if (n > 1) ledger.problem(`task ${t.taskId}'s report was accepted as new ${n} times`);
      ledger.accepted++;
      ledger.done(t.taskId);
      this.lastReport = { taskId: t.taskId, body: report };
    }
    if (bytes !== null) ledger.outputOfJob.set(t.jobId, outputs['result.txt']!.sha256);
  }

  /**
   * As the agent uploads: ask where (`…/uploads`), then PUT what the project lacks. A 409 means
   * the task has ended on the server — its report got through before a crash — and the report
   * that follows is then a replay.
   */
  private async upload(taskId: number, digest: string, bytes: Buffer): Promise<void> {
    const { ledger } = this.o;
    const where = await this.retrying('POST', `/agent/v1/tasks/${taskId}/uploads`, { files: [{ sha256: digest, size: bytes.length }] });
    if (where.status === 409) return;
    if (where.status !== 200) {
      ledger.problem(`task ${taskId}: uploads answered ${where.status}: ${where.text.slice(0, 300)}`);
      return;
    }
    if ((where.body.files as Array<{ present: boolean }>)[0]!.present) {
      ledger.present++;
      return;
    }
    const put = await this.retryingPut(`/agent/v1/tasks/${taskId}/blobs/${digest}`, bytes);
    if (put === 409) return;
    if (put !== 200 && put !== 201) ledger.problem(`task ${taskId}: PUT of output ${digest} answered ${put}`);
    else ledger.uploaded++;
  }

  // ── calls ────────────────────────────────────────────────────────────────

  private http(): HttpClient {
    const { url } = this.o.endpoint;
    if (this.client === null || this.clientUrl !== url) {
      this.client?.close();
      this.client = new HttpClient(url, this.host.token);
      this.clientUrl = url;
    }
    return this.client;
  }

  /**
   * A mutating call, retried until it gets an answer; now and then (dropRate) that answer is
   * thrown away as if lost on the way back and the same call is sent again. Both answers are
   * returned (the first one only when it was dropped), for the caller to compare.
   */
  private async mutate(method: string, path: string, body: unknown): Promise<Answer[]> {
    const first = await this.retrying(method, path, body);
    if (first.status !== 200 || this.o.random() >= this.o.dropRate) return [first];
    this.o.ledger.dropped++;
    return [first, await this.retrying(method, path, body)];
  }

  /** Sends the call until an answer below 500 comes back, with the agent's backoff between tries. */
  private async retrying(method: string, path: string, body: unknown): Promise<Answer> {
    for (let failures = 0; ; failures++) {
      if (this.o.abandoned()) throw new Abandoned();
      try {
        // HttpClient's timeout is the socket's idle time; this one bounds the whole call.
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('no answer in time')), CALL_TIMEOUT_MS)));
        const r = await Promise.race([this.http().call(method, path, body, CALL_TIMEOUT_MS), timeout]).finally(() => clearTimeout(timer));
        if (r.status < 500) return { ...r, failures };
        this.o.ledger.serverErrors++;
      } catch {
        /* no answer: the server is down or went down mid-call */
      }
      this.o.ledger.retried++;
      await sleep(backoffMs(failures, this.o.random));
    }
  }

  /** An output's bytes (application/octet-stream, which HttpClient does not send), retried like any call; the status. */
  private async retryingPut(path: string, bytes: Buffer): Promise<number> {
    for (let failures = 0; ; failures++) {
      if (this.o.abandoned()) throw new Abandoned();
      try {
        const r = await fetch(this.o.endpoint.url + path, {
          method: 'PUT', body: new Uint8Array(bytes), signal: AbortSignal.timeout(CALL_TIMEOUT_MS),
          headers: { authorization: `Bearer ${this.host.token}`, 'content-type': 'application/octet-stream' },
        });
        await r.arrayBuffer();
        if (r.status < 500) return r.status;
        this.o.ledger.serverErrors++;
      } catch {
        /* no answer */
      }
      this.o.ledger.retried++;
      await sleep(backoffMs(failures, this.o.random));
    }
  }
}
