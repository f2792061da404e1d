import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, type AgentOptions } from '../../src/agent/agent.js';
import { enroll, type HostCredential } from '../../src/agent/host-credential.js';
import type { TaskRuntime } from '../../src/agent/runtime.js';
import { DockerRuntime } from '../../src/agent/runtimes/docker-runtime.js';
import { BoxgridClient } from '../../src/client/client.js';
import type { BatchDetail } from '../../src/client/types.js';
import type { ServerOptions } from '../../src/server/runtime.js';
import { startTestServer, type TestServer } from './server.js';

/** A server with an admin client and a way to enrol agents: the grid in one process. */
export interface TestGrid {
  server: TestServer;
  admin: BoxgridClient;
  /** Enrols a fresh host (its own work dir) with a new enrolment token. */
  enrollHost(name?: string): Promise<{ credential: HostCredential; workDir: string; client: BoxgridClient }>;
  /**
   * Starts an in-process agent; `stop()` winds it down as a SIGTERM would and waits for it.
   * `url`: where it reaches the server (a proxy in front of it), if not the server's own.
   */
  startAgent(runtime: TaskRuntime, opts?: Partial<AgentOptions> & { workDir?: string; credential?: HostCredential; url?: string }): Promise<RunningAgent>;
  stop(): Promise<void>;
}

export interface RunningAgent {
  agent: Agent;
  workDir: string;
  hostId: number;
  /** Resolves when the agent's run ends (stopped, or on its own: a pilot). */
  finished: Promise<void>;
  stop(): Promise<void>;
}

export const AGENT_CAPACITY = { cores: 2, memoryMiB: 2048, diskMiB: 10_000, gpus: 0 };

export async function startGrid(opts: Partial<ServerOptions> = {}): Promise<TestGrid> {
  // A retry waits 1 s, not the default 10: these suites are about agents, not backoff.
  const server = await startTestServer({
    timing: { leaseSeconds: 60, heartbeatSeconds: 1, idlePollSeconds: 1, sweepSeconds: 1 },
    ...opts,
    scheduling: { backoffBaseSeconds: 1, ...opts.scheduling },
  });
  const admin = new BoxgridClient({ url: server.url, token: server.adminToken });
  const dirs: string[] = [];
  const agents: RunningAgent[] = [];
  let n = 0;
  const grid: TestGrid = {
    server,
    admin,
    async enrollHost(name = `host-${++n}`) {
      const workDir = await mkdtemp(join(tmpdir(), 'boxgrid-agent-'));
      dirs.push(workDir);
      const { token } = await admin.createEnrollToken({ uses: 1 });
      const credential = await enroll(workDir, server.url, token, { name, resources: AGENT_CAPACITY, platform: 'linux/amd64' });
      return { credential, workDir, client: new BoxgridClient({ url: server.url, token: credential.token }) };
    },
    async startAgent(runtime, { url = server.url, ...o } = {}) {
      const host = o.credential && o.workDir ? { credential: o.credential, workDir: o.workDir } : await grid.enrollHost();
      const client = new BoxgridClient({ url, token: host.credential.token });
      const agent = new Agent(client, {
        workDir: host.workDir, capacity: AGENT_CAPACITY, runtimes: [{ kind: 'docker', runtime }], maxTasks: 4, onStop: 'wait',
        maxOutputBytes: 1024 * 1024, imageBudgetMiB: null, checkpointSeconds: 1, backoff: { minMs: 50, maxMs: 500 },
        log: process.env.BOXGRID_TEST_LOG ? (level, m) => process.stderr.write(`agent ${level}: ${m}\n`) : () => undefined,
        ...o,
      });
      const stopper = new AbortController();
      const done = agent.run(stopper.signal);
      const running: RunningAgent = {
        agent, workDir: host.workDir, hostId: host.credential.hostId, finished: done,
        async stop() {
          stopper.abort();
          await done;
        },
      };
      agents.push(running);
      return running;
    },
    async stop() {
      await Promise.all(agents.map((a) => a.stop()));
      await server.stop();
      await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
    },
  };
  return grid;
}

/**
 * A Docker runtime whose containers carry an owner of their own, so that agents of suites
 * running side by side on one engine never see (or clean up) each other's containers.
 */
export function ownDockerRuntime(): DockerRuntime & { owner: string } {
  const owner = `test-${randomUUID()}`;
  return Object.assign(new DockerRuntime({ owner }), { owner });
}

/** Resolves with the batch's detail once all its jobs have ended, following the event stream. */
export async function untilBatchDone(client: BoxgridClient, project: string, batchId: number, timeoutMs = 60_000): Promise<BatchDetail> {
  const stream = new AbortController();
  const timer = setTimeout(() => stream.abort(), timeoutMs);
  let last: BatchDetail | null = null;
  try {
    let settled: ((d: BatchDetail) => void) | null = null;
    const done = new Promise<BatchDetail>((resolve) => (settled = resolve));
    const check = async (): Promise<void> => {
      last = await client.getBatch(project, batchId);
      if (last.done) settled!(last);
    };
    const following = client.events(project, { batch: batchId }, () => void check(), stream.signal);
    await check(); // it may have ended before the stream opened
    const ended = await Promise.race([done, following.then(() => null)]);
    if (ended) return ended;
    throw new Error(`batch ${batchId} did not finish within ${timeoutMs} ms: ${JSON.stringify(last)}`);
  } finally {
    clearTimeout(timer);
    stream.abort();
  }
}

/** Polls `probe` until it returns a value (not undefined); for states no event announces. */
export async function eventually<T>(probe: () => Promise<T | undefined>, what: string | (() => string), timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${typeof what === 'string' ? what : what()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
