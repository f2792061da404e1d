import { Command, CommanderError } from 'commander';
import { cliContext } from './context.js';
import { CliExit, describeError, type ErrorContext } from './output.js';
import { defaultConfigFile } from './config.js';
import { registerServer } from './commands/server.js';
import { registerApps } from './commands/apps.js';
import { registerSubmit } from './commands/submit.js';
import { registerJobs } from './commands/jobs.js';
import { registerIdentity } from './commands/identity.js';
import { registerDemo } from './commands/demo.js';
import { registerAgent } from './commands/agent.js';
import { registerSite } from './commands/site.js';
import { registerExecutor, registerStage } from './commands/executor.js';
import { registerResults } from './commands/results.js';
import { registerExplain } from './commands/explain.js';
import { registerWorkflows } from './commands/workflows.js';

export function buildProgram(): Command {
  const program = new Command('boxgrid')
    .description('boxgrid: a grid computing platform for science that runs every job in a container')
    .version('0.1.0')
    .option('--url <url>', 'server URL (env BOXGRID_URL; default: the local server)')
    .option('--token <token>', 'API token (env BOXGRID_TOKEN; default: the local server\'s admin token)')
    .option('--project <name>', 'project (env BOXGRID_PROJECT; default "default")')
    .option('--config <file>', 'config file (env BOXGRID_CONFIG; default ~/.config/boxgrid/config.json)')
    .option('--ca-file <file>', 'PEM certificate of the CA that signed an https:// server\'s certificate, when not a public one (env BOXGRID_CA_FILE, or "caFile" in the config file)')
    .option('--json', 'print objects as JSON, for scripts')
    .showHelpAfterError()
    .exitOverride();
  const ctx = cliContext(program);
  registerServer(program);
  registerDemo(program, ctx);
  registerAgent(program, ctx);
  registerSite(program, ctx);
  registerExecutor(program, ctx);
  registerStage(program);
  registerApps(program, ctx);
  registerSubmit(program, ctx);
  registerJobs(program, ctx);
  registerResults(program, ctx);
  registerExplain(program, ctx);
  registerWorkflows(program, ctx);
  registerIdentity(program, ctx);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) return e.exitCode === 0 ? 0 : 2; // commander already printed it
    if (e instanceof CliExit) {
      if (e.message) process.stderr.write(e.message + '\n');
      return e.code;
    }
    let ctx: ErrorContext = {};
    try {
      const c = cliContext(program).connection();
      ctx = { url: c.url, urlSource: c.sources.url, tokenSource: c.sources.token, caFileSource: c.sources.caFile, configFile: program.opts<{ config?: string }>().config ?? defaultConfigFile() };
    } catch {
      // the config itself is broken; the error says so
    }
    process.stderr.write(describeError(e, ctx) + '\n');
    return 1;
  }
}
