import type { Command } from 'commander';
import { parseDurationSeconds } from '../../domain/duration.js';
import type { CliContext } from '../context.js';
import { emit, parseId, parseNumber, table } from '../output.js';

/**
 * Enrolment tokens: `boxgrid host token create|list|revoke`, also under the older name
 * `boxgrid enroll-token`, which scripts and docs use.
 */
function registerEnrollTokenCommands(parent: Command, ctx: CliContext): void {
  parent
    .command('create')
    .description('create one; hand it to the hosts of a site (shown once)')
    .option('--site <name>', 'the site the hosts join', 'default')
    .option('--uses <n>', 'how many hosts may enrol with it (default: unlimited)')
    .option('--expires <duration>', 'e.g. 12h, 1d, 2w (default: never)')
    .option('--label <text>', 'what it is for')
    .option('--owner <account>', 'the volunteer account its hosts belong to (replicas of a job go to hosts of distinct owners)')
    .action(async (o: { site: string; uses?: string; expires?: string; label?: string; owner?: string }) => {
      const t = await ctx.client().createEnrollToken({
        site: o.site,
        ...(o.uses === undefined ? {} : { uses: parseNumber(o.uses, '--uses') }),
        ...(o.expires === undefined ? {} : { ttlSeconds: parseDurationSeconds(o.expires, '--expires') }),
        ...(o.label === undefined ? {} : { label: o.label }),
        ...(o.owner === undefined ? {} : { owner: o.owner }),
      });
      emit(ctx.globals().json, t, () =>
        `enrolment token for site ${t.site}${t.owner ? ` (owner ${t.owner})` : ''} (${t.usesLeft === null ? 'unlimited uses' : `${t.usesLeft} uses`}, ` +
        `${t.expiresAt ? `expires ${t.expiresAt}` : 'no expiry'}), shown once:\n${t.token}`,
      );
    });

  parent
    .command('list')
    .description('every enrolment token, newest first: site, owner, uses left, expiry, revocation (never the secret)')
    .action(async () => {
      const { tokens } = await ctx.client().listEnrollTokens();
      emit(ctx.globals().json, tokens, () =>
        tokens.length === 0
          ? 'no enrolment tokens yet: boxgrid host token create'
          : table(
              ['ID', 'SITE', 'OWNER', 'LABEL', 'USES LEFT', 'EXPIRES', 'REVOKED'],
              tokens.map((t) => [t.id, t.site, t.owner, t.label || null, t.usesLeft ?? 'unlimited', t.expiresAt ?? 'never', t.revokedAt]),
            ),
      );
    });

  parent
    .command('revoke <id>')
    .description('revoke one by its id (the part after bge_): it enrols nobody from now on; hosts it enrolled keep working')
    .action(async (id: string) => {
      await ctx.client().revokeEnrollToken(id);
      emit(ctx.globals().json, { revoked: id }, () => `enrolment token ${id} revoked`);
    });
}

async function listHosts(ctx: CliContext): Promise<void> {
  const { hosts } = await ctx.client().listHosts();
  emit(ctx.globals().json, hosts, () =>
    hosts.length === 0
      ? 'no hosts yet: boxgrid host token create, then start an agent with it'
      : table(
          ['HOST', 'NAME', 'SITE', 'STATE', 'CORES', 'MEMORY', 'GPUS', 'TASKS', 'LAST SEEN', 'OWNER'],
          hosts.map((h) => [h.id, h.name, h.site, h.state, h.resources.cores, `${h.resources.memoryMiB}Mi`, h.resources.gpus, h.activeTasks, h.lastSeenAt ?? 'never', h.owner]),
        ),
  );
}

/** Operators' commands for hosts, their enrolment tokens and their sites' address allowlists. */
export function registerHosts(program: Command, ctx: CliContext): void {
  const host = program.command('host').description('enrolled hosts, enrolment tokens and sites (operators)');
  host.command('list').description('enrolled hosts: resources, state, owner, last contact, tasks held').action(() => listHosts(ctx));
  host
    .command('revoke <id>')
    .description('revoke a host: its credential stops working, its tasks are aborted and their jobs requeued without spending an attempt')
    .action(async (id: string) => {
      const r = await ctx.client().revokeHost(parseId(id, 'host id'));
      emit(ctx.globals().json, r, () =>
        r.revoked
          ? `host ${r.host.id} (${r.host.name}) revoked: ${r.abortedTasks.length} task(s) aborted, ${r.requeuedJobs.length} job(s) requeued`
          : `host ${r.host.id} (${r.host.name}) was revoked already; nothing changed`,
      );
    });
  registerEnrollTokenCommands(host.command('token').description('enrolment tokens that hosts trade for their credential'), ctx);

  const site = host.command('site').description('sites and the client addresses their hosts may use');
  site.command('list').description('every site with its address allowlist and host counts').action(async () => {
    const { sites } = await ctx.client().listSites();
    emit(ctx.globals().json, sites, () =>
      table(['SITE', 'ALLOWED ADDRESSES', 'ACTIVE HOSTS', 'REVOKED HOSTS'], sites.map((x) => [x.name, x.allowCidrs.join(',') || 'any', x.activeHosts, x.revokedHosts])),
    );
  });
  site
    .command('allow <name> [cidrs...]')
    .description('set the addresses a site\'s hosts may enrol and call from, e.g. 10.0.0.0/8 2001:db8::/32; none: any address')
    .action(async (name: string, cidrs: string[]) => {
      const r = await ctx.client().putSite(name, cidrs);
      emit(ctx.globals().json, r, () => `site ${r.name}: ${r.allowCidrs.length === 0 ? 'any address' : `only from ${r.allowCidrs.join(', ')}`}`);
    });

  // The older names, kept for scripts and docs.
  registerEnrollTokenCommands(program.command('enroll-token').description('enrolment tokens (operators; the same as `boxgrid host token`)'), ctx);
  program.command('hosts').description('enrolled hosts (operators; the same as `boxgrid host list`)').action(() => listHosts(ctx));
}
