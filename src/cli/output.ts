import { BoxgridError, isBoxgridError } from '../domain/errors.js';
import { parseSizeMiB, type Resources } from '../domain/resources.js';

/** Prints objects as JSON (--json, for scripts) or as the human form the command gives. */
export function emit(json: boolean | undefined, value: unknown, human: () => string): void {
  process.stdout.write(json ? JSON.stringify(value, null, 2) + '\n' : human() + '\n');
}

/** A fixed-width table; columns sized to content. */
export function table(headers: string[], rows: Array<Array<string | number | null>>): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => (c === null ? '-' : String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n');
}

/** Usage errors exit 2, everything else 1; `watch` uses 3 for "finished, but not all succeeded". */
export class CliExit extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** Where the connection came from, for hints. */
export interface ErrorContext {
  url?: string;
  urlSource?: string;
  tokenSource?: string;
  /** Where --ca-file came from ('nowhere' when not given). */
  caFileSource?: string;
  configFile?: string;
}

/** One line that says what went wrong and what to do next; never a stack trace. */
export function describeError(e: unknown, ctx: ErrorContext): string {
  if (e instanceof CliExit) return e.message;
  if (isBoxgridError(e)) return `error: ${e.message}${hint(e, ctx)}`;
  return `error: ${(e as Error)?.message ?? String(e)}`;
}

function hint(e: BoxgridError, ctx: ErrorContext): string {
  switch (e.code) {
    case 'unavailable':
      if (e.message.startsWith('the certificate of the boxgrid server')) {
        return ctx.caFileSource === undefined || ctx.caFileSource === 'nowhere'
          ? `\n  if the server's certificate comes from a private CA, pass that CA's certificate with --ca-file FILE, ` +
              `BOXGRID_CA_FILE or "caFile" in ${ctx.configFile ?? 'the config file'}`
          : `\n  (CA file from ${ctx.caFileSource}) it did not sign the server's certificate, or the certificate does not name the host in the URL`;
      }
      // Only for the server itself: a blob store's or an engine's trouble has its own words.
      if (!e.message.startsWith('cannot reach the boxgrid server')) return '';
      return `\n  (URL from ${ctx.urlSource ?? 'the default'}) start a server with \`boxgrid server\`, ` +
        `or point to one with --url, BOXGRID_URL or "url" in ${ctx.configFile ?? 'the config file'}`;
    case 'unauthenticated':
      return ctx.tokenSource === 'nowhere'
        ? `\n  no token found: pass --token, set BOXGRID_TOKEN, or run \`boxgrid server\` locally so its admin token can be found`
        : `\n  (token taken from ${ctx.tokenSource}) ask an admin for a new one: \`boxgrid token create --user NAME\``;
    case 'not_found':
      return e.message.startsWith('project')
        ? `\n  choose the project with --project or BOXGRID_PROJECT; \`boxgrid project list\` lists yours`
        : '';
    default:
      return '';
  }
}

export function parseKeyValues(values: string[] | undefined, what: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values ?? []) {
    const eq = v.indexOf('=');
    if (eq <= 0) throw new CliExit(2, `error: ${what} "${v}" is not KEY=VALUE`);
    out[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return out;
}

/** A number from a flag; the server checks ranges, but "abc" should not travel as null. */
export function parseNumber(text: string, flag: string): number {
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n)) throw new CliExit(2, `error: ${flag} "${text}" is not a number`);
  return n;
}

/** The --cores/--memory/--disk/--gpus flags that apps and submissions share; only those given. */
export function resourceFlags(o: { cores?: string; memory?: string; disk?: string; gpus?: string }): Partial<Resources> {
  const r: Partial<Resources> = {};
  if (o.cores !== undefined) r.cores = parseNumber(o.cores, '--cores');
  if (o.memory !== undefined) r.memoryMiB = parseSizeMiB(o.memory, '--memory');
  if (o.disk !== undefined) r.diskMiB = parseSizeMiB(o.disk, '--disk');
  if (o.gpus !== undefined) r.gpus = parseNumber(o.gpus, '--gpus');
  return r;
}

export function parseId(text: string, what: string): number {
  if (!/^\d{1,15}$/.test(text) || Number(text) < 1) throw new CliExit(2, `error: ${what} "${text}" is not a positive number`);
  return Number(text);
}
