import type { App, Job, RuntimeKind } from '../domain/model.js';
import { withOverrides, type Resources } from '../domain/resources.js';

/** What a host offers in one work request: the facts matching decides on. */
export interface Offer {
  hostId: number;
  /** What the host enrolled with: the most it can ever run at once. */
  capacity: Resources;
  /** Capacity not taken by the tasks the host already runs. */
  free: Resources;
  /** Most tasks to hand out in this answer. */
  maxTasks: number;
  /** OCI platform, e.g. linux/amd64. */
  platform: string;
  /** The runtimes the host accepts, in its order of preference. */
  runtimes: readonly RuntimeKind[];
  /** The host's labels, matched against jobs' selectors. */
  labels: Readonly<Record<string, string>>;
  /** Images the host already holds (references and digests). */
  images: ReadonlySet<string>;
  /** Apps this host is kept away from for a while, because it kept failing them. */
  cooledApps: ReadonlySet<number>;
  /** How long tasks take on this host against their typical duration (pace.ts); null: not known yet. */
  pace: number | null;
  /**
   * The longest run the host has time left for (a pilot job near the end of its allocation):
   * apps whose runs may take longer are not handed out. Absent: no limit.
   */
  maxRuntimeSeconds?: number;
}

/** What a job asks of a host, shared by every job of one queue. */
export interface Placement {
  appId: number;
  resources: Resources;
  /** Platforms the app's image runs on; empty means any. */
  platforms: readonly string[];
  /** Runtimes the app can run under. */
  runtimes: readonly RuntimeKind[];
  /** Labels a host must carry, each with this value. */
  selector: Readonly<Record<string, string>>;
  /** The app's image reference and digest (when known): a host holding either needs no pull. */
  images: readonly string[];
  /** The longest a run of the app may take (its maxRuntimeSeconds). */
  maxRuntimeSeconds: number;
}

/**
 * What a job asks of a host: the app's resources with the job's overrides, its platforms, the
 * runtimes it can run under (docker, plus native when the app has a native command), the job's
 * selector, and the image names a host may already hold. The store builds queues with it and
 * `explain` the job it explains, so both judge a host alike.
 */
export function placementOf(app: Pick<App, 'id' | 'resources' | 'platforms' | 'nativeCommand' | 'image' | 'imageDigest' | 'maxRuntimeSeconds'>, job: Pick<Job, 'resources' | 'selector'>): Placement {
  return {
    appId: app.id,
    resources: withOverrides(app.resources, job.resources),
    platforms: app.platforms,
    runtimes: app.nativeCommand ? ['docker', 'native'] : ['docker'],
    selector: job.selector,
    images: app.imageDigest ? [app.image, app.imageDigest] : [app.image],
    maxRuntimeSeconds: app.maxRuntimeSeconds,
  };
}

export const RESOURCE_NAMES = ['cores', 'memoryMiB', 'diskMiB', 'gpus'] as const;
export type ResourceName = (typeof RESOURCE_NAMES)[number];

/** Why a host can never run a placement (whatever it is busy with), or null if it can. */
export type Mismatch =
  | { kind: 'resource'; resource: ResourceName; need: number; have: number }
  | { kind: 'platform'; need: readonly string[]; have: string }
  | { kind: 'runtime'; need: readonly RuntimeKind[]; have: readonly RuntimeKind[] }
  | { kind: 'selector'; key: string; need: string; have: string | null }
  | { kind: 'cooldown' }
  | { kind: 'walltime'; need: number; have: number };

/** The resources `need` lacks in `have`, first one only: enough to say why. */
export function shortfall(need: Resources, have: Resources): Mismatch | null {
  for (const r of RESOURCE_NAMES) {
    if (need[r] > have[r]) return { kind: 'resource', resource: r, need: need[r], have: have[r] };
  }
  return null;
}

/**
 * Whether the host could ever run the placement: platform, runtime, labels, cool-down and its
 * whole capacity. The runtime it would use is the host's most preferred one the app supports.
 */
export function mismatch(offer: Pick<Offer, 'capacity' | 'platform' | 'runtimes' | 'labels' | 'cooledApps' | 'maxRuntimeSeconds'>, p: Placement): Mismatch | null {
  if (p.platforms.length > 0 && !p.platforms.includes(offer.platform)) return { kind: 'platform', need: p.platforms, have: offer.platform };
  if (!offer.runtimes.some((r) => p.runtimes.includes(r))) return { kind: 'runtime', need: p.runtimes, have: offer.runtimes };
  for (const [key, value] of Object.entries(p.selector)) {
    const have = Object.hasOwn(offer.labels, key) ? offer.labels[key]! : null; // not a label named like an Object member
    if (have !== value) return { kind: 'selector', key, need: value, have };
  }
  if (offer.cooledApps.has(p.appId)) return { kind: 'cooldown' };
  if (offer.maxRuntimeSeconds !== undefined && p.maxRuntimeSeconds > offer.maxRuntimeSeconds) {
    return { kind: 'walltime', need: p.maxRuntimeSeconds, have: offer.maxRuntimeSeconds };
  }
  return shortfall(p.resources, offer.capacity);
}

export function runtimeFor(offer: Pick<Offer, 'runtimes'>, p: Placement): RuntimeKind | undefined {
  return offer.runtimes.find((r) => p.runtimes.includes(r));
}

export function holdsImage(offer: Pick<Offer, 'images'>, p: Placement): boolean {
  return p.images.some((i) => offer.images.has(i));
}

/**
 * Cores are fractional: without rounding, 0.3 - 0.1 - 0.1 is 0.09999999999999998 and a third
 * 0.1-core job would not fit. Free cores are kept to a thousandth (millicores), rounded down
 * (past float noise) so that rounding never hands out more than was free.
 */
export function takeFrom(free: Resources, need: Resources): Resources {
  return {
    cores: Math.floor((free.cores - need.cores) * 1000 + 1e-6) / 1000,
    memoryMiB: free.memoryMiB - need.memoryMiB,
    diskMiB: free.diskMiB - need.diskMiB,
    gpus: free.gpus - need.gpus,
  };
}

export function describeMismatch(m: Mismatch): string {
  switch (m.kind) {
    case 'resource':
      return `needs ${m.need} ${UNIT[m.resource]}, has ${m.have}`;
    case 'platform':
      return `needs platform ${m.need.join(' or ')}, is ${m.have}`;
    case 'runtime':
      return `needs runtime ${m.need.join(' or ')}, offers ${m.have.join(', ') || 'none'}`;
    case 'selector':
      return m.have === null ? `needs label ${m.key}=${m.need}, has no ${m.key}` : `needs label ${m.key}=${m.need}, has ${m.key}=${m.have}`;
    case 'cooldown':
      return 'is cooling down after failing this app repeatedly';
    case 'walltime':
      return `runs may take ${m.need} s, the host has ${m.have} s left`;
  }
}

const UNIT: Record<ResourceName, string> = { cores: 'cores', memoryMiB: 'MiB of memory', diskMiB: 'MiB of disk', gpus: 'GPUs' };
