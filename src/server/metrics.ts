import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { OUTCOME_KINDS } from '../domain/outcomes.js';
import type { ServiceContext } from '../service/context.js';
import type { ProtocolMeter } from '../service/meter.js';
import type { DemandShape, QueueDepth } from '../store/store.js';

/** How long one reading of the store serves scrapes: every server of a fleet may be scraped often. */
const STORE_CACHE_MS = 5000;

/**
 * Most (project, app, resources) series of `boxgrid_queue_jobs`: the groups with the most
 * queued jobs; the rest are summed into one series whose labels are all `(other)`.
 */
export const MAX_QUEUE_SERIES = 100;
export const OTHER = '(other)';

const SHAPE = ['cores', 'memory_mib', 'disk_mib', 'gpus', 'native', 'max_runtime_seconds', 'selector'] as const;
const QUEUE = ['project', 'app', 'cores', 'memory_mib', 'disk_mib', 'gpus'] as const;

/** Seconds: from quick tasks to day-long runs. */
const DURATION_BUCKETS = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21_600, 86_400];
/** Bytes: 64 MiB to 128 GiB, doubling. */
const MEMORY_BUCKETS = Array.from({ length: 12 }, (_, i) => 2 ** (26 + i));

export interface ServerMetrics {
  /** What anyone may scrape (GET /metrics without a token): counts and sizes, no project, app, job or host. */
  anonymous: Registry;
  /** The same and the queue depth by project and app: for a scrape with an operator's token. */
  operator: Registry;
  /** Counts the work of this process; routes/metrics.ts installs it on the context. */
  meter: ProtocolMeter;
}

/**
 * Prometheus metrics of the server (GET /metrics, docs/operations.md "Metrics").
 *
 * Read from the store, global to a fleet sharing a database, each reading kept 5 s: the demand
 * for capacity that autoscalers act on (a cluster autoscaler through the Kubernetes executor,
 * KEDA on the gauges directly) by shape — resources, and what else a host must offer: a native
 * runtime, time for the longest run, labels — and in total; active tasks by state; hosts online;
 * for operators, the queue depth by project, app and resources.
 *
 * Counted in this process as it happens, per server (sum them over servers): tasks handed out,
 * settled (duration histogram by outcome, CPU seconds, peak memory) and lost; and the process's
 * own metrics (prom-client's defaults, on this registry, not the global one).
 */
export function buildMetrics(ctx: ServiceContext): ServerMetrics {
  const registry = new Registry();
  const cached = <T>(read: (now: number) => Promise<T>): (() => Promise<T>) => {
    let reading: { at: number; value: Promise<T> } | null = null;
    return () => {
      const now = ctx.now();
      if (!reading || now - reading.at >= STORE_CACHE_MS) {
        const r = { at: now, value: read(now) };
        reading = r;
        r.value.catch(() => {
          if (reading === r) reading = null; // a failed reading is not kept
        });
      }
      return reading.value;
    };
  };

  // ── demand (autoscaling) ──
  const demand = cached((now) => ctx.store.demand(now));
  const shapeLabels = (d: DemandShape) => ({
    cores: d.resources.cores, memory_mib: d.resources.memoryMiB, disk_mib: d.resources.diskMiB, gpus: d.resources.gpus,
    native: String(d.native), max_runtime_seconds: d.maxRuntimeSeconds, selector: String(d.selector),
  });
  const perShape = (name: string, help: string, value: (d: DemandShape) => number) =>
    new Gauge({
      name, help, labelNames: SHAPE, registers: [registry],
      async collect() {
        this.reset();
        for (const d of await demand()) this.set(shapeLabels(d), value(d));
      },
    });
  const total = (name: string, help: string, value: (d: DemandShape) => number) =>
    new Gauge({
      name, help, registers: [registry],
      async collect() {
        this.set((await demand()).reduce((sum, d) => sum + value(d), 0));
      },
    });
  perShape('boxgrid_demand_jobs', 'Queued jobs that could start now, by the resources each wants', (d) => d.ready);
  perShape('boxgrid_demand_backing_off_jobs', 'Queued jobs waiting out a retry backoff, by the resources each wants', (d) => d.backingOff);
  total('boxgrid_demand_cores', 'Cores the queued jobs that could start now want in all', (d) => d.ready * d.resources.cores);
  total('boxgrid_demand_memory_bytes', 'Memory the queued jobs that could start now want in all', (d) => d.ready * d.resources.memoryMiB * 1024 * 1024);
  total('boxgrid_demand_gpus', 'GPUs the queued jobs that could start now want in all', (d) => d.ready * d.resources.gpus);

  // ── tasks and hosts, from the store ──
  const active = cached(() => ctx.store.activeTaskCounts());
  new Gauge({
    name: 'boxgrid_tasks', help: 'Active tasks by state (assigned: handed out, not yet heartbeated; running)', labelNames: ['state'], registers: [registry],
    async collect() {
      const counts = await active();
      this.set({ state: 'assigned' }, counts.assigned);
      this.set({ state: 'running' }, counts.running);
    },
  });
  const online = cached((now) => ctx.store.countHostsSeen(now - ctx.timing.leaseSeconds * 1000));
  new Gauge({
    name: 'boxgrid_hosts_online', help: 'Hosts that called the server within the lease period', registers: [registry],
    async collect() {
      this.set(await online());
    },
  });

  // ── this process's work (per server) ──
  const dispatched = new Counter({ name: 'boxgrid_tasks_dispatched_total', help: 'Tasks handed out by work requests to this server (speculative copies included)', registers: [registry] });
  const duration = new Histogram({
    name: 'boxgrid_task_duration_seconds', help: 'How long settled tasks ran (as their agents measured), by outcome; reports to this server',
    labelNames: ['outcome'], buckets: DURATION_BUCKETS, registers: [registry],
  });
  const cpu = new Counter({ name: 'boxgrid_task_cpu_seconds_total', help: 'CPU seconds used by settled tasks, as their reports to this server say', registers: [registry] });
  const memory = new Histogram({
    name: 'boxgrid_task_peak_memory_bytes', help: 'Peak memory of each settled task whose report to this server gives its usage',
    buckets: MEMORY_BUCKETS, registers: [registry],
  });
  const lost = new Counter({ name: 'boxgrid_tasks_lost_total', help: "Tasks this server's lease sweeper found lost (lease expired)", registers: [registry] });
  for (const outcome of OUTCOME_KINDS) duration.zero({ outcome }); // every outcome shows, 0 until one happens
  const meter: ProtocolMeter = {
    dispatched: (n) => dispatched.inc(n),
    settled(outcome, durationMs, usage) {
      duration.observe({ outcome }, Math.max(0, durationMs) / 1000);
      if (usage) {
        cpu.inc(Math.max(0, usage.cpuSeconds));
        memory.observe(Math.max(0, usage.peakMemoryMiB) * 1024 * 1024);
      }
    },
    lost: (n) => lost.inc(n),
  };
  collectDefaultMetrics({ register: registry });

  // ── operators only: names of projects and apps ──
  const named = new Registry();
  const depth = cached(() => ctx.store.queueDepth());
  new Gauge({
    name: 'boxgrid_queue_jobs', help: `Queued jobs (ready or backing off) by project, app and the resources each wants; the ${MAX_QUEUE_SERIES} largest groups, the rest as ${OTHER}`,
    labelNames: QUEUE, registers: [named],
    async collect() {
      this.reset();
      for (const q of boundedDepth(await depth())) this.set(q.labels, q.jobs);
    },
  });
  return { anonymous: registry, operator: Registry.merge([registry, named]), meter };
}

/** The largest MAX_QUEUE_SERIES groups (the store gives them largest first) and one for the rest. */
export function boundedDepth(rows: QueueDepth[]): Array<{ labels: Record<(typeof QUEUE)[number], string | number>; jobs: number }> {
  const out: Array<{ labels: Record<(typeof QUEUE)[number], string | number>; jobs: number }> = rows.slice(0, MAX_QUEUE_SERIES).map((q) => ({
    labels: { project: q.project, app: q.app, cores: q.resources.cores, memory_mib: q.resources.memoryMiB, disk_mib: q.resources.diskMiB, gpus: q.resources.gpus },
    jobs: q.jobs,
  }));
  const rest = rows.slice(MAX_QUEUE_SERIES).reduce((sum, q) => sum + q.jobs, 0);
  if (rows.length > MAX_QUEUE_SERIES) {
    out.push({ labels: { project: OTHER, app: OTHER, cores: OTHER, memory_mib: OTHER, disk_mib: OTHER, gpus: OTHER }, jobs: rest });
  }
  return out;
}
