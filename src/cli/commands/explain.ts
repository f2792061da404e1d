import type { Command } from 'commander';
import type { ExplainView } from '../../client/types.js';
import type { CliContext } from '../context.js';
import { emit, parseId } from '../output.js';

/** The human form: the summary, then each reason (✗ blocking, · the rest) with its details indented. */
export function renderExplanation(e: ExplainView): string {
  const lines = [e.summary];
  for (const r of e.reasons) {
    lines.push(`  ${r.blocking ? '✗' : '·'} ${r.code}: ${r.message}`);
    for (const d of r.details) lines.push(`      ${d}`);
  }
  return lines.join('\n');
}

/** `boxgrid explain JOB`: why a queued job is not running. */
export function registerExplain(program: Command, ctx: CliContext): void {
  program
    .command('explain <job-id>')
    .description('why a job is not running: hosts that cannot fit it (and why), busy hosts, backoff, deadline; --json for the structure')
    .action(async (idText: string) => {
      const e = await ctx.client().explainJob(ctx.connection().project, parseId(idText, 'job id'));
      emit(ctx.globals().json, e, () => renderExplanation(e));
    });
}
