/**
 * Builders for the pure scheduling modules' inputs. Every default is spelled out here (not taken
 * from DEFAULT_SCHEDULING), so that a change of a default in src/ cannot silently change what a
 * test exercises.
 */
import type { RuntimeKind } from '../../src/domain/model.js';
import type { Resources } from '../../src/domain/resources.js';
import type { ProjectShare } from '../../src/scheduling/fair-share.js';
import type { SchedulingOptions } from '../../src/scheduling/options.js';
import type { Offer } from '../../src/scheduling/placement.js';
import type { ClaimInput, ClaimPlan, JobHead, QueueView } from '../../src/scheduling/plan.js';

export const NOW = 10_000_000_000;
export const SECOND = 1000;

export function res(cores: number, memoryMiB = 512, diskMiB = 0, gpus = 0): Resources {
  return { cores, memoryMiB, diskMiB, gpus };
}

export function options(over: Partial<SchedulingOptions> = {}): SchedulingOptions {
  return {
    policy: 'fair',
    backoffBaseSeconds: 10,
    backoffMaxSeconds: 600,
    hostFailureLimit: 3,
    hostCooldownSeconds: 3600,
    starvationSeconds: 600,
    speculation: { enabled: true, maxCopies: 1, maxActive: 100, minRunSeconds: 60 },
    replication: { trustAfter: 10, spotCheck: 0.1, dailyQuota: 5000 },
    ...over,
  };
}

export const FAIR = options({ policy: 'fair' });
export const FIFO = options({ policy: 'fifo' });

/** An idle 8-core, 16 GiB linux/amd64 docker host. */
export function offer(over: Partial<Offer> = {}): Offer {
  const capacity = over.capacity ?? res(8, 16384, 100_000, 0);
  return {
    hostId: 1,
    capacity,
    free: capacity,
    maxTasks: 100,
    platform: 'linux/amd64',
    runtimes: ['docker'],
    pace: null,
    labels: {},
    images: new Set(),
    cooledApps: new Set(),
    ...over,
  };
}

/** A head that entered its queue when it was submitted (unless `over` says otherwise). */
export function head(jobId: number, over: Partial<JobHead> = {}): JobHead {
  const submittedAt = over.submittedAt ?? NOW - 10 * SECOND;
  return { jobId, priority: 0, submittedAt, queuedAt: over.queuedAt ?? submittedAt, deadline: null, ...over };
}

/** Heads with the given job ids, all alike otherwise. */
export function heads(ids: readonly number[], over: Partial<JobHead> = {}): JobHead[] {
  return ids.map((id) => head(id, over));
}

export function range(first: number, count: number): number[] {
  return Array.from({ length: count }, (_, i) => first + i);
}

/** A 1-core, 512 MiB docker queue of project 1 whose app is its id and whose image is `img<id>`. */
export function queue(queueId: number, over: Partial<QueueView> = {}): QueueView {
  return {
    queueId,
    projectId: 1,
    appId: queueId,
    resources: res(1),
    platforms: [],
    runtimes: ['docker'] as RuntimeKind[],
    selector: {},
    images: [`img${queueId}`],
    maxRuntimeSeconds: 3600,
    estimatedMs: null,
    heads: [],
    ...over,
  };
}

export function projects(...shares: ProjectShare[]): Map<number, ProjectShare> {
  return new Map(shares.map((s) => [s.projectId, s]));
}

export function claim(over: Partial<ClaimInput> = {}): ClaimInput {
  return {
    offer: offer(),
    queues: [],
    replicaWork: [],
    projects: new Map(),
    reservation: null,
    reservedElsewhere: new Set(),
    virtualTime: 0,
    now: NOW,
    ...over,
  };
}

export function pickedJobs(plan: ClaimPlan): number[] {
  return plan.picks.map((p) => p.jobId);
}

export function pickedQueues(plan: ClaimPlan): number[] {
  return plan.picks.map((p) => p.queueId);
}
