import { BoxgridError, notFound } from '../domain/errors.js';
import type { User } from '../domain/model.js';
import type { HostRevocation, HostSummary } from '../store/store.js';
import { recordAudit } from './audit.js';
import type { ServiceContext } from './context.js';

/** The grid's machines, for operators: shared capacity is not any one project's business. */
export class HostService {
  constructor(private readonly ctx: ServiceContext) {}

  async list(actor: User): Promise<HostSummary[]> {
    if (!actor.operator) throw new BoxgridError('forbidden', 'only an operator may list hosts');
    return this.ctx.store.listHosts();
  }

  /**
   * Revokes a host (a stolen credential, a machine retired): its credential stops working, its
   * tasks are aborted and their jobs requeued at once without spending an attempt
   * (Store.revokeHost). Revoking it again changes nothing.
   */
  async revoke(actor: User, hostId: number): Promise<HostRevocation> {
    if (!actor.operator) throw new BoxgridError('forbidden', 'only an operator may revoke hosts');
    const r = await this.ctx.store.revokeHost(hostId, this.ctx.now());
    if (!r) throw notFound(`host ${hostId}`);
    for (const job of r.requeuedJobs) {
      this.ctx.events.publishJob(job);
    }
    if (r.changed) {
      await recordAudit(this.ctx, actor, 'host.revoke', `host ${r.host.id}`, {
        detail: { name: r.host.name, abortedTasks: r.abortedTasks.map((t) => t.id), requeuedJobs: r.requeuedJobs.map((j) => j.id) },
      });
    }
    return r;
  }
}
