import { notFound } from '../domain/errors.js';
import { explainJob, type Explanation, type ExplainInput } from '../scheduling/explain.js';
import { placementOf } from '../scheduling/placement.js';
import type { ProjectAccess } from './access.js';
import type { ServiceContext } from './context.js';

/** Counting the jobs ahead of one in its queue stops here: each counted job is a row read (~0.3 µs… a few ms at the cap), and the synchronous driver blocks the server meanwhile. */
export const JOBS_AHEAD_CAP = 10_000;

/**
 * `boxgrid explain JOB`: gathers what the scheduler decides on for one job — its placement,
 * the hosts, their cool-downs from its app, its reservation, its place in its queue — and
 * lets scheduling/explain.ts say why it is not running. Anyone who may read the project may
 * ask; host names are shown to operators only (the host list is theirs, see HostService),
 * everyone else gets counts and sizes.
 */
export class ExplainService {
  constructor(private readonly ctx: ServiceContext) {}

  async explain(access: ProjectAccess, jobId: number): Promise<Explanation> {
    const store = this.ctx.store;
    const job = await store.getJob(access.project.id, jobId);
    if (!job) throw notFound(`job ${jobId}`);
    const app = await store.getApp(access.project.id, job.appName, job.appVersion);
    if (!app) throw notFound(`app ${job.appName} v${job.appVersion} of job ${jobId}`);
    const now = this.ctx.now();
    const base: ExplainInput = {
      job, placement: placementOf(app, job), hosts: [], cooling: new Set(), reservedHost: null, jobsAhead: null,
      options: this.ctx.scheduling, leaseMs: this.ctx.timing.leaseSeconds * 1000, now,
    };
    if (job.state !== 'queued') return explainJob(base);
    const [hosts, cooling, reservedId, ahead] = await Promise.all([
      store.listHosts(),
      store.hostsCoolingDown(app.id, now),
      store.reservedHostFor(job.id),
      store.jobsAhead(access.project.id, job.id, now, JOBS_AHEAD_CAP),
    ]);
    const reserved = reservedId === null ? null : hosts.find((h) => h.id === reservedId) ?? null;
    return explainJob({
      ...base,
      hosts,
      cooling: new Set(cooling),
      reservedHost: reservedId === null ? null : { id: reservedId, name: access.user.operator && reserved ? reserved.name : null },
      jobsAhead: ahead === null ? null : { count: ahead, atLeast: ahead >= JOBS_AHEAD_CAP },
    });
  }
}
