import type { FastifyRequest } from 'fastify';
import { BoxgridError } from '../domain/errors.js';
import type { Host, TokenRecord, User } from '../domain/model.js';
import type { Action } from '../domain/roles.js';
import { AccessService, type ProjectAccess } from '../service/access.js';
import { AppService } from '../service/apps.js';
import { BlobService } from '../service/blobs.js';
import type { ServiceContext } from '../service/context.js';
import { JobService } from '../service/jobs.js';
import { EnrollmentService } from '../service/enrollment.js';
import { HostService } from '../service/hosts.js';
import { AgentProtocolService } from '../service/agent-protocol.js';
import { ExplainService } from '../service/explain.js';
import { SiteService } from '../service/sites.js';
import { AuditService } from '../service/audit.js';
import { WorkflowService } from '../service/workflows.js';

/** The application services the routes call; routes hold no logic of their own. */
export class Services {
  readonly access: AccessService;
  readonly apps: AppService;
  readonly jobs: JobService;
  readonly blobs: BlobService;
  readonly enrollment: EnrollmentService;
  readonly hosts: HostService;
  readonly agent: AgentProtocolService;
  readonly explain: ExplainService;
  readonly sites: SiteService;
  readonly audit: AuditService;
  readonly workflows: WorkflowService;

  constructor(readonly ctx: ServiceContext) {
    this.access = new AccessService(ctx);
    this.apps = new AppService(ctx);
    this.jobs = new JobService(ctx);
    this.blobs = new BlobService(ctx);
    this.enrollment = new EnrollmentService(ctx);
    this.hosts = new HostService(ctx);
    this.agent = new AgentProtocolService(ctx);
    this.explain = new ExplainService(ctx);
    this.sites = new SiteService(ctx);
    this.audit = new AuditService(ctx);
    this.workflows = new WorkflowService(ctx);
  }
}

declare module 'fastify' {
  interface FastifyRequest {
    user: User | null;
    /** The token the caller authenticated with. */
    credential: TokenRecord | null;
    agentHost: Host | null;
  }
}

export function currentUser(req: FastifyRequest): User {
  if (!req.user) throw new BoxgridError('unauthenticated', 'a user token is required');
  return req.user;
}

export function currentCredential(req: FastifyRequest): TokenRecord {
  if (!req.credential) throw new BoxgridError('unauthenticated', 'a token is required');
  return req.credential;
}

export function currentHost(req: FastifyRequest): Host {
  if (!req.agentHost) throw new BoxgridError('unauthenticated', 'a host credential is required');
  return req.agentHost;
}

export async function projectAccess(services: Services, req: FastifyRequest, project: string, action: Action): Promise<ProjectAccess> {
  return services.access.project(currentUser(req), project, action);
}
