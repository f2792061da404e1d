import type { Resources } from '../domain/resources.js';

/**
 * What runs a pilot's tasks: `native`, plain processes (only apps with a native command), or
 * `podman`, a Podman service the pilot starts for itself (any app, in its image).
 */
export type PilotRuntime = 'native' | 'podman';

/** Queued demand as the server's /metrics tells it: jobs that could start now, by shape. */
export interface DemandSample {
  resources: Resources;
  /** The app has a native command (what a pilot without a container engine can run). */
  native: boolean;
  /** The longest a run may take: a pilot needs that much time left. */
  maxRuntimeSeconds: number;
  /** The jobs select hosts by label (pilots carry none). */
  selector: boolean;
  jobs: number;
}

export interface PilotShape {
  /** What one pilot asks its cluster for (and gives the grid). */
  resources: Resources;
  runtime: PilotRuntime;
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

/** What a pilot can run: its resources, the apps its runtime takes, runs no longer than the time it has. */
export interface PilotCan {
  resources: Resources;
  runtime: PilotRuntime;
  maxRuntimeSeconds: number;
}

/**
 * The queued jobs a pilot could run at all, as cores. A job larger than a pilot, of an app
 * with no native command when the pilot runs native tasks (every app has an image, so a
 * Podman pilot takes any), one that may run longer than a pilot lives, or one that selects
 * hosts by label is not its demand: pilots submitted for it would only sit idle and exit.
 */
export function demandCores(demand: readonly DemandSample[], pilot: PilotCan): number {
  let cores = 0;
  for (const d of demand) {
    const r = d.resources;
    const fits = r.cores <= pilot.resources.cores && r.memoryMiB <= pilot.resources.memoryMiB && r.diskMiB <= pilot.resources.diskMiB && r.gpus <= pilot.resources.gpus;
    const runs = pilot.runtime === 'podman' || d.native;
    if (fits && runs && !d.selector && d.maxRuntimeSeconds <= pilot.maxRuntimeSeconds) cores += d.jobs * r.cores;
  }
  return cores;
}

/**
 * How many pilots to submit now: enough for the queued cores a pilot could run, less the
 * pilots still pending (running ones have taken their work off the queue already), within
 * the site's bounds on all pilots and on pending ones. Never negative; none when nothing fits.
 */
export function pilotsToSubmit(demand: readonly DemandSample[], now: PilotCount, shape: PilotShape, maxRuntimeSeconds: number): number {
  const cores = demandCores(demand, { resources: shape.resources, runtime: shape.runtime, maxRuntimeSeconds });
  const wanted = Math.ceil(cores / Math.max(shape.resources.cores, 1e-9)) - now.pending;
  return Math.max(0, Math.min(wanted, shape.maxPending - now.pending, shape.maxPilots - (now.pending + now.running)));
}

/** The demand samples of a Prometheus text exposition (boxgrid_demand_jobs{cores, memory_mib, disk_mib, gpus}). */
export function parseDemand(metrics: string): DemandSample[] {
  const out: DemandSample[] = [];
  for (const line of metrics.split('\n')) {
    const m = /^boxgrid_demand_jobs\{([^}]*)\} (\S+)$/.exec(line.trim());
    if (!m) continue;
    const labels = Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1]!, x[2]!]));
    out.push({
      resources: { cores: Number(labels.cores ?? 0), memoryMiB: Number(labels.memory_mib ?? 0), diskMiB: Number(labels.disk_mib ?? 0), gpus: Number(labels.gpus ?? 0) },
      native: labels.native === 'true', maxRuntimeSeconds: Number(labels.max_runtime_seconds ?? Infinity), selector: labels.selector === 'true',
      jobs: Number(m[2]),
    });
  }
  return out;
}
