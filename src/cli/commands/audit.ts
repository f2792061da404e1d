import type { Command } from 'commander';
import type { CliContext } from '../context.js';
import { emit, parseNumber, table } from '../output.js';

/** `boxgrid audit`: the admin actions, newest first (operators; `--project` for a project's admins). */
export function registerAudit(program: Command, ctx: CliContext): void {
  program
    .command('audit')
    .description('admin actions (who, what, when), newest first: operators see all; project admins pass --project')
    .option('--project <name>', 'only the actions on this project (its admins may read them)')
    .option('--action <action>', 'only this action, e.g. host.revoke, token.create')
    .option('--limit <n>', 'most entries', '50')
    .option('--cursor <cursor>', 'the next page, as the previous one printed it')
    .action(async (o: { project?: string; action?: string; limit: string; cursor?: string }) => {
      const page = await ctx.client().audit({
        limit: parseNumber(o.limit, '--limit'),
        ...(o.project === undefined ? {} : { project: o.project }),
        ...(o.action === undefined ? {} : { action: o.action }),
        ...(o.cursor === undefined ? {} : { cursor: o.cursor }),
      });
      emit(ctx.globals().json, page, () => {
        if (page.entries.length === 0) return 'no audit entries';
        const rows = table(
          ['ID', 'AT', 'ACTOR', 'ACTION', 'TARGET', 'PROJECT'],
          page.entries.map((e) => [e.id, e.at, e.actor.name, e.action, e.target, e.project]),
        );
        return page.nextCursor === null ? rows : `${rows}\nmore: boxgrid audit --cursor ${page.nextCursor}`;
      });
    });
}
