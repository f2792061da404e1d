import { BoxgridError } from '../domain/errors.js';
import type { User } from '../domain/model.js';
import type { HostSummary } from '../store/store.js';
import type { ServiceContext } from './context.js';

/** The grid's machines, for operators: shared capacity is not any one project's business. */
export class HostService {
  constructor(private readonly ctx: ServiceContext) {}

  async list(actor: User): Promise<HostSummary[]> {
    if (!actor.operator) throw new BoxgridError('forbidden', 'only an operator may list hosts');
    return this.ctx.store.listHosts();
  }
}
