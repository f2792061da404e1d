import type { Command } from 'commander';
import { ROLES, type Role } from '../../domain/roles.js';
import type { CliContext } from '../context.js';
import { registerAudit } from './audit.js';
import { registerHosts } from './hosts.js';
import { CliExit, emit, parseNumber, table } from '../output.js';

export function registerIdentity(program: Command, ctx: CliContext): void {
  const token = program.command('token').description('API tokens');
  token
    .command('create')
    .description('create a token for yourself, or (operators) for --user; it is shown once')
    .option('--user <name>', 'the user the token speaks for')
    .option('--label <text>', 'what the token is for', 'cli')
    .option('--ttl <seconds>', 'expire after this many seconds')
    .action(async (o: { user?: string; label: string; ttl?: string }) => {
      const t = await ctx.client().createToken({ label: o.label, ...(o.user ? { user: o.user } : {}), ...(o.ttl ? { ttlSeconds: parseNumber(o.ttl, '--ttl') } : {}) });
      emit(ctx.globals().json, t, () => `token for ${t.user}${t.expiresAt ? ` (expires ${t.expiresAt})` : ''}, shown once:\n${t.token}`);
    });

  token
    .command('revoke <id>')
    .description('revoke a token by its id (the part after bgu_); operators may revoke anyone\'s')
    .action(async (id: string) => {
      await ctx.client().revokeToken(id);
      emit(ctx.globals().json, { revoked: id }, () => `token ${id} revoked`);
    });

  registerHosts(program, ctx);
  registerAudit(program, ctx);

  const user = program.command('user').description('users (operators only)');
  user
    .command('create <name>')
    .option('--operator', 'may create users and projects and acts as admin everywhere')
    .action(async (name: string, o: { operator?: boolean }) => {
      const u = await ctx.client().createUser(name, o.operator ?? false);
      emit(ctx.globals().json, u, () => `created user ${u.name}${u.operator ? ' (operator)' : ''}\n  give them a token: boxgrid token create --user ${u.name}`);
    });

  const project = program.command('project').description('projects and their members');
  project.command('list').action(async () => {
    const { projects } = await ctx.client().listProjects();
    emit(ctx.globals().json, projects, () => table(['PROJECT', 'ROLE', 'SHARE'], projects.map((p) => [p.name, p.role ?? '-', p.shareWeight])));
  });
  project
    .command('create <name>')
    .option('--share <weight>', 'fair-share weight against other projects', '1')
    .action(async (name: string, o: { share: string }) => {
      const p = await ctx.client().createProject(name, parseNumber(o.share, '--share'));
      emit(ctx.globals().json, p, () => `created project ${p.name}\n  add members: boxgrid project grant ${p.name} USER submitter`);
    });
  project
    .command('set-share <project> <weight>')
    .description('operators: change a project\'s fair-share weight (backlogged projects get throughput in proportion)')
    .action(async (name: string, weight: string) => {
      const p = await ctx.client().setShareWeight(name, parseNumber(weight, 'weight'));
      emit(ctx.globals().json, p, () => `project ${p.name} now has fair-share weight ${p.shareWeight}`);
    });
  project
    .command('grant <project> <user> <role>')
    .description(`give a user a role in a project (${ROLES.join(', ')})`)
    .action(async (p: string, u: string, role: string) => {
      if (!(ROLES as readonly string[]).includes(role)) throw new CliExit(2, `error: role must be one of ${ROLES.join(', ')}`);
      const r = await ctx.client().setMember(p, u, role as Role);
      emit(ctx.globals().json, r, () => `${u} is now ${role} in ${p}`);
    });

  program
    .command('whoami')
    .description('the user behind the token, and their projects')
    .action(async () => {
      const me = await ctx.client().me();
      const c = ctx.connection();
      emit(ctx.globals().json, me, () =>
        `${me.user.name}${me.user.operator ? ' (operator)' : ''} at ${c.url} (token from ${c.sources.token})\n` +
        table(['PROJECT', 'ROLE'], me.projects.map((p) => [p.name, p.role ?? '-'])),
      );
    });
}
