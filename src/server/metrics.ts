import { Gauge, Registry } from 'prom-client';
import type { ServiceContext } from '../service/context.js';
import type { DemandShape } from '../store/store.js';

/** How long one reading of the demand serves scrapes: every server of a fleet may be scraped often. */
const DEMAND_CACHE_MS = 5000;

const SHAPE = ['cores', 'memory_mib', 'disk_mib', 'gpus', 'native', 'max_runtime_seconds', 'selector'] as const;

/**
 * Prometheus metrics of the server (GET /metrics): the demand for capacity that autoscalers
 * act on (a cluster autoscaler through the Kubernetes executor, KEDA on the gauges directly),
 * by shape — resources, and what else a host must offer: a native runtime, time for the
 * longest run, labels — and in total. Only counts and sizes: no project, app, job or host.
 */
export function buildMetrics(ctx: ServiceContext): Registry {
  const registry = new Registry();
  let reading: { at: number; shapes: Promise<DemandShape[]> } | null = null;
  const demand = (): Promise<DemandShape[]> => {
    const now = ctx.now();
    if (!reading || now - reading.at >= DEMAND_CACHE_MS) {
      reading = { at: now, shapes: ctx.store.demand(now) };
      reading.shapes.catch(() => (reading = null)); // a failed reading is not kept
    }
    return reading.shapes;
  };
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
  return registry;
}
