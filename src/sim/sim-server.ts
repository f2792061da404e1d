import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FsBlobStore } from '../blobs/fs-blob-store.js';
import { DEFAULT_SCHEDULING, type SchedulingOptions } from '../scheduling/options.js';
import { AgentProtocolService } from '../service/agent-protocol.js';
import { DEFAULT_LIMITS, type AgentTiming, type ServiceContext } from '../service/context.js';
import { EventBus } from '../service/events.js';
import { LeaseSweeper } from '../service/lease-sweeper.js';
import { SqliteStore } from '../store/sqlite/sqlite-store.js';

/**
 * The agent-protocol clock for simulated grids. Tasks run for tens of minutes, so agents call
 * far less often than the defaults (made for interactive use) would have them: that keeps a
 * simulated day of thousands of hosts to a few hundred thousand calls.
 */
export const SIM_TIMING: AgentTiming = { leaseSeconds: 600, heartbeatSeconds: 120, idlePollSeconds: 120, sweepSeconds: 30 };

/** Simulated time starts here (epoch ms), so stored times look like real ones. */
export const SIM_EPOCH = Date.UTC(2030, 0, 1);

/**
 * The server as the simulator runs it: the same services, store and scheduling code that
 * src/server/runtime.ts assembles, on an in-memory SQLite store, with a clock the simulator
 * moves. Nothing listens: the simulated agents call the services directly (the network is
 * what is simulated away).
 */
export interface SimServer {
  ctx: ServiceContext;
  protocol: AgentProtocolService;
  sweeper: LeaseSweeper;
  /** Sets the server's clock (epoch ms); it never goes back. */
  setTime(ms: number): void;
  close(): Promise<void>;
}

export async function startSimServer(policy: SchedulingOptions['policy'], random: () => number, timing: AgentTiming = SIM_TIMING): Promise<SimServer> {
  const blobDir = await mkdtemp(join(tmpdir(), 'boxgrid-sim-'));
  const store = new SqliteStore(':memory:');
  await store.migrate();
  let now = SIM_EPOCH;
  const ctx: ServiceContext = {
    store,
    blobs: new FsBlobStore(blobDir), // no task has inputs or outputs: never written to
    events: new EventBus(),
    now: () => now,
    limits: DEFAULT_LIMITS,
    timing,
    scheduling: { ...DEFAULT_SCHEDULING, policy },
    random, // the idle-poll jitter comes from the run's seed
    // No simulated task moves files through transfer URLs; the key also keys adaptive
    // replication's draw, so it is fixed: the same scenario gives the same figures.
    transferKey: Buffer.alloc(32, 7),
  };
  return {
    ctx,
    protocol: new AgentProtocolService(ctx),
    sweeper: new LeaseSweeper(ctx),
    setTime(ms) {
      if (ms < now) throw new Error(`the clock went back from ${now} to ${ms}`);
      now = ms;
    },
    async close() {
      await store.close();
      await rm(blobDir, { recursive: true, force: true });
    },
  };
}
