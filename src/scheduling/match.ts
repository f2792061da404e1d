import type { RuntimeKind } from '../domain/model.js';
import { fits, subtract, type Resources } from '../domain/resources.js';

/** What a host offers in one work request. */
export interface Offer {
  /** Capacity not taken by the tasks the host is already running. */
  free: Resources;
  /** Most tasks to hand out in this answer. */
  maxTasks: number;
  /** OCI platform, e.g. linux/amd64. */
  platform: string;
  /** The runtimes the host accepts, in its order of preference. */
  runtimes: readonly RuntimeKind[];
}

/** A queued job as matching sees it. */
export interface Candidate {
  jobId: number;
  resources: Resources;
  /** Platforms the app's image runs on; empty means any. */
  platforms: readonly string[];
  /** Runtimes the app can run under (every app has an image; some also declare a native command). */
  runtimes: readonly RuntimeKind[];
}

export interface Match {
  jobId: number;
  runtime: RuntimeKind;
}

/**
 * First fit, in the order the candidates come (the store hands them out by priority, then
 * age): each job that fits what is still free on the host is taken, so one request can fill
 * the whole host. Pure, so the server, the simulator and the tests run the same code. Fair
 * share, packing and anti-starvation belong to the scheduling issue and will refine the order.
 */
export function matchOffer(offer: Offer, candidates: Iterable<Candidate>): Match[] {
  const out: Match[] = [];
  let free = exactCores(offer.free);
  for (const c of candidates) {
    if (out.length >= offer.maxTasks) break;
    if (!fits(c.resources, free)) continue;
    if (c.platforms.length > 0 && !c.platforms.includes(offer.platform)) continue;
    const runtime = offer.runtimes.find((r) => c.runtimes.includes(r));
    if (runtime === undefined) continue;
    out.push({ jobId: c.jobId, runtime });
    free = exactCores(subtract(free, c.resources));
  }
  return out;
}

/**
 * Cores are fractional: without rounding, 0.3 - 0.1 - 0.1 is 0.09999999999999998 and a third
 * 0.1-core job would not fit. Free cores are kept to a thousandth (millicores).
 */
function exactCores(r: Resources): Resources {
  return { ...r, cores: Math.round(r.cores * 1000) / 1000 };
}
