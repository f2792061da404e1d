import { Agent as HttpAgent, createServer, request, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Random } from '../../src/sim/random.js';

/**
 * What the proxy can do to one exchange. Request faults happen on the way to the server (it never
 * sees a dropped request, sees a duplicated one twice); response faults on the way back (the
 * server has acted, the client never hears of it or hears late).
 */
export const REQUEST_FAULTS = ['drop-request', 'delay-request', 'duplicate-request'] as const;
export const RESPONSE_FAULTS = ['drop-response', 'delay-response'] as const;
export const FAULT_KINDS = [...REQUEST_FAULTS, ...RESPONSE_FAULTS] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface FaultProxyOptions {
  /** The server's URL (http://127.0.0.1:PORT). */
  target: string;
  seed: number;
  /** Share of exchanges that get a fault (each kind equally likely). */
  rate: number;
  /** Longest added delay. */
  maxDelayMs: number;
  /** An answer the proxy gives itself instead of the server's (the server never sees the request); null passes it on. */
  answerFor?: (method: string, path: string, body: Buffer) => { status: number; body: unknown } | null;
}

export interface FaultCounts {
  /** Exchanges the proxy took from clients (each faulted or not). */
  exchanges: number;
  /** Exchanges passed through untouched. */
  passed: number;
  byKind: Record<FaultKind, number>;
  /** `kind METHOD /path/with/:n` → count: which calls the faults hit. */
  byRoute: Record<string, number>;
}

export interface FaultProxy {
  url: string;
  seed: number;
  counts: FaultCounts;
  /** Faults on (the rate given) or off (everything passes). */
  setFaulty(on: boolean): void;
  close(): Promise<void>;
}

/** The request as buffered from the client, to forward once or twice. */
interface Exchange {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** Hop-by-hop headers, and the framing the proxy sets itself from the buffered body. */
const NOT_FORWARDED = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'content-length', 'host']);

/**
 * A loopback HTTP proxy in front of a server that, with a seeded generator, breaks about `rate`
 * of the exchanges in one of five ways (FAULT_KINDS). Bodies are buffered both ways (blob uploads
 * and downloads included), so it suits small transfers only; streams that never end (the event
 * stream) would hang in it. Binds 127.0.0.1 only.
 */
export async function startFaultProxy(opts: FaultProxyOptions): Promise<FaultProxy> {
  const random = new Random(opts.seed);
  const target = new URL(opts.target);
  const upstream = new HttpAgent({ keepAlive: true, maxSockets: 64 });
  const counts: FaultCounts = { exchanges: 0, passed: 0, byKind: Object.fromEntries(FAULT_KINDS.map((k) => [k, 0])) as Record<FaultKind, number>, byRoute: {} };
  let faulty = true;

  const forward = (x: Exchange): Promise<Answer> =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string | string[]> = { host: target.host };
      // A body goes with its length (a streamed upload's chunks were buffered); a bodyless GET stays bodyless.
      if (x.body.length > 0 || x.headers['content-length'] !== undefined || x.headers['transfer-encoding'] !== undefined) headers['content-length'] = String(x.body.length);
      for (const [k, v] of Object.entries(x.headers)) if (v !== undefined && !NOT_FORWARDED.has(k)) headers[k] = v;
      const req = request({ host: target.hostname, port: target.port, method: x.method, path: x.path, headers, agent: upstream }, (res) => {
        collect(res).then((body) => resolve({ status: res.statusCode ?? 502, headers: res.headers, body }), reject);
      });
      req.on('error', reject);
      req.end(x.body);
    });

  const answer = (res: ServerResponse, a: Answer): void => {
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(a.headers)) if (v !== undefined && !NOT_FORWARDED.has(k)) headers[k] = v;
    // A HEAD's answer has no body but tells the length of the one a GET would get.
    headers['content-length'] = res.req.method === 'HEAD' ? String(a.headers['content-length'] ?? 0) : String(a.body.length);
    res.writeHead(a.status, headers);
    res.end(a.body);
  };

  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
  const delay = (): number => random.uniform(0, opts.maxDelayMs);

  const server = createServer((req, res) => {
    void (async () => {
      const x: Exchange = { method: req.method ?? 'GET', path: req.url ?? '/', headers: req.headers, body: await collect(req) };
      counts.exchanges++;
      const own = opts.answerFor?.(x.method, x.path, x.body);
      if (own) {
        answer(res, { status: own.status, headers: { 'content-type': 'application/json' }, body: Buffer.from(JSON.stringify(own.body)) });
        return;
      }
      const kind: FaultKind | null = faulty && random.next() < opts.rate ? random.pick(FAULT_KINDS) : null;
      if (kind === null) {
        counts.passed++;
      } else {
        counts.byKind[kind]++;
        const route = `${kind} ${x.method} ${routeOf(x.path)}`;
        counts.byRoute[route] = (counts.byRoute[route] ?? 0) + 1;
      }
      // Drawn now, in arrival order, so that one seed gives one sequence of draws.
      const wait = kind === 'delay-request' || kind === 'delay-response' ? delay() : 0;
      const second = kind === 'duplicate-request' ? random.uniform(0, 50) : 0;
      const useSecond = kind === 'duplicate-request' && random.next() < 0.5;
      switch (kind) {
        case 'drop-request':
          req.socket.destroy();
          return;
        case 'delay-request':
          await sleep(wait);
          answer(res, await forward(x));
          return;
        case 'duplicate-request': {
          // The second copy a little later, as a client's retransmission would come: both reach the server.
          const copies = await Promise.allSettled([forward(x), sleep(second).then(() => forward(x))]);
          const [chosen, other] = useSecond ? [copies[1], copies[0]] : [copies[0], copies[1]];
          const ok = chosen.status === 'fulfilled' ? chosen : other;
          if (ok.status === 'fulfilled') answer(res, ok.value);
          else throw ok.reason;
          return;
        }
        case 'drop-response':
          await forward(x); // the server acts on it...
          req.socket.destroy(); // ...and the client never hears
          return;
        case 'delay-response': {
          const a = await forward(x);
          await sleep(wait);
          answer(res, a);
          return;
        }
        default:
          answer(res, await forward(x));
      }
    })().catch(() => {
      // The server unreachable (stopping), or the client gone: the client sees a broken exchange.
      req.socket.destroy();
    });
  });
  server.on('clientError', (_e, socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    seed: opts.seed,
    counts,
    setFaulty(on) {
      faulty = on;
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
      upstream.destroy();
    },
  };
}

/** A path with its ids and digests generalised, to count faults by call. */
export function routeOf(path: string): string {
  return path.replace(/\?.*$/, '').replace(/\/[0-9a-f]{64}(?=\/|$)/g, '/:sha256').replace(/\/\d+(?=\/|$)/g, '/:n');
}

function collect(stream: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('end', () => resolve(Buffer.concat(chunks)));
    stream.on('error', reject);
    stream.on('aborted', () => reject(new Error('aborted')));
  });
}
