import type { Resources } from '../domain/resources.js';

/** Queued demand as the server's /metrics tells it: jobs that could start now, by shape. */
export interface DemandSample {
  resources: Resources;
  jobs: number;
}

export interface PilotShape {
  /** What one pilot asks its cluster for (and gives the grid). */
  resources: Resources;
  /** Most pilots queued or running at once. */
  maxPilots: number;
  /** Most pilots waiting in the cluster's queue at once: the flow control that keeps a large batch from flooding it. */
  maxPending: number;
}

/** Pilots of a site as the cluster reports them. */
export interface PilotCount {
  pending: number;
  running: number;
}

/** The queued jobs a pilot of this shape could run at all, as cores: a job larger than a pilot is not its demand. */
export function demandCores(demand: readonly DemandSample[], pilot: Resources): number {
  let cores = 0;
  for (const d of demand) {
    const r = d.resources;
    if (r.cores <= pilot.cores && r.memoryMiB <= pilot.memoryMiB && r.diskMiB <= pilot.diskMiB && r.gpus <= pilot.gpus) cores += d.jobs * r.cores;
  }
  return cores;
}

/**
 * How many pilots to submit now: enough for the queued cores a pilot could run, less those
 * already queued or running, within the site's bounds on all pilots and on pending ones.
 * Never negative; nothing when nothing fits.
 */
export function pilotsToSubmit(demand: readonly DemandSample[], now: PilotCount, shape: PilotShape): number {
  const cores = demandCores(demand, shape.resources);
  const wanted = Math.min(shape.maxPilots, Math.ceil(cores / Math.max(shape.resources.cores, 1e-9)));
  const more = wanted - (now.pending + now.running);
  return Math.max(0, Math.min(more, shape.maxPending - now.pending, shape.maxPilots - (now.pending + now.running)));
}

/** The demand samples of a Prometheus text exposition (boxgrid_demand_jobs{cores, memory_mib, disk_mib, gpus}). */
export function parseDemand(metrics: string): DemandSample[] {
  const out: DemandSample[] = [];
  for (const line of metrics.split('\n')) {
    const m = /^boxgrid_demand_jobs\{([^}]*)\} (\S+)$/.exec(line.trim());
    if (!m) continue;
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1]!, Number(x[2])]));
    out.push({
      resources: { cores: labels.cores ?? 0, memoryMiB: labels.memory_mib ?? 0, diskMiB: labels.disk_mib ?? 0, gpus: labels.gpus ?? 0 },
      jobs: Number(m[2]),
    });
  }
  return out;
}
