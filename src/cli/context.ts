import type { Command } from 'commander';
import type { BoxgridClient } from '../client/client.js';
import { clientFor, resolveConnection, type Connection, type GlobalOptions } from './config.js';

/** What every command needs: the global flags, the resolved connection and a client. */
export interface CliContext {
  globals(): GlobalOptions;
  connection(): Connection;
  client(): BoxgridClient;
}

export function cliContext(program: Command): CliContext {
  let conn: Connection | undefined;
  return {
    globals: () => program.opts<GlobalOptions>(),
    connection: () => (conn ??= resolveConnection(program.opts<GlobalOptions>())),
    client: () => clientFor((conn ??= resolveConnection(program.opts<GlobalOptions>()))),
  };
}
