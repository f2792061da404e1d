import { createHash, randomUUID } from 'node:crypto';
import pg from 'pg';
import type { BoxgridEvent, EventRelay } from '../../service/events.js';

/** NOTIFY payloads must stay under 8000 bytes; events are packed up to this many (UTF-8) bytes. */
const PAYLOAD_BYTES = 7000;
/** How long a listener that lost its connection waits before it connects again. */
const RECONNECT_MS = 1000;

type Packed = [projectId: number, event: BoxgridEvent];

interface Packet {
  origin: string;
  events: Packed[];
}

/**
 * The servers on one PostgreSQL database tell each other their events with LISTEN/NOTIFY: each
 * server sends what it publishes, packed per event-loop turn and in order, on a channel of its
 * schema, and listens on one connection of its own for the others'. PostgreSQL delivers
 * notifications after their transaction commits and in commit order; a server that is not
 * listening (its connection dropped, being re-established) misses what was sent meanwhile, as
 * a watcher that is not connected does.
 */
export class PostgresEventRelay implements EventRelay {
  private readonly origin = randomUUID();
  private readonly channel: string;
  private listener: pg.Client | null = null;
  private deliver: ((projectId: number, event: BoxgridEvent) => void) | null = null;
  private pending: Packed[] = [];
  /** The flush in progress: the next one waits for it, so packets go out in the order published. */
  private sending: Promise<void> = Promise.resolve();
  private scheduled = false;
  private closed = false;
  private reconnect: NodeJS.Timeout | null = null;

  constructor(private readonly pool: pg.Pool, private readonly clientConfig: pg.ClientConfig, schema: string | null) {
    // Channel names are identifiers of at most 63 bytes: a schema's is hashed.
    this.channel = schema === null ? 'boxgrid_events' : `boxgrid_events_${createHash('sha256').update(schema).digest('hex').slice(0, 16)}`;
  }

  async start(deliver: (projectId: number, event: BoxgridEvent) => void): Promise<void> {
    this.deliver = deliver;
    await this.listen();
  }

  private async listen(): Promise<void> {
    // keepAlive: a connection that died without a word (a half-open TCP one) is noticed.
    const client = new pg.Client({ ...this.clientConfig, keepAlive: true });
    client.on('notification', (n) => this.received(n.payload));
    // A dropped connection: listen again on a new one, unless the relay is closing.
    client.on('error', () => this.relisten(client));
    client.on('end', () => this.relisten(client));
    try {
      await client.connect();
      await client.query(`LISTEN ${this.channel}`);
    } catch (e) {
      await client.end().catch(() => {});
      throw e;
    }
    if (this.closed) {
      await client.end().catch(() => {});
      return;
    }
    this.listener = client;
  }

  private relisten(client: pg.Client): void {
    if (this.closed || this.listener !== client || this.reconnect) return;
    this.listener = null;
    client.end().catch(() => {});
    const retry = (): void => {
      this.reconnect = null;
      if (this.closed) return;
      this.listen().catch(() => {
        if (!this.closed) this.reconnect = setTimeout(retry, RECONNECT_MS);
      });
    };
    this.reconnect = setTimeout(retry, RECONNECT_MS);
  }

  private received(payload: string | undefined): void {
    if (!payload || !this.deliver) return;
    let packet: Packet;
    try {
      packet = JSON.parse(payload) as Packet;
    } catch {
      return; // not ours
    }
    if (packet.origin === this.origin || !Array.isArray(packet.events)) return; // our own, delivered when published
    for (const [projectId, event] of packet.events) this.deliver(projectId, event);
  }

  send(projectId: number, event: BoxgridEvent): void {
    if (this.closed) return;
    this.pending.push([projectId, event]);
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        const events = this.pending;
        this.pending = [];
        this.sending = this.sending.then(() => this.flush(events));
      });
    }
  }

  /** Sends events in packets under the payload limit; a failure loses only those events. */
  private async flush(events: Packed[]): Promise<void> {
    for (const packet of packets(events)) {
      await this.pool.query('SELECT pg_notify($1, $2)', [this.channel, JSON.stringify({ origin: this.origin, events: packet } satisfies Packet)]).catch(() => {});
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.reconnect) clearTimeout(this.reconnect);
    await this.sending;
    const listener = this.listener;
    this.listener = null;
    await listener?.end().catch(() => {});
  }
}

/** Events in packets of at most PAYLOAD_BYTES; an event too large alone goes with its reason cut, or not at all. */
function packets(events: Packed[]): Packed[][] {
  const out: Packed[][] = [];
  let packet: Packed[] = [];
  let size = 0;
  const room = PAYLOAD_BYTES - 100; // the packet's own wrapping
  for (let e of events) {
    let bytes = Buffer.byteLength(JSON.stringify(e)) + 1;
    if (bytes > room && e[1].type === 'job' && e[1].reason !== null) {
      e = [e[0], { ...e[1], reason: e[1].reason.slice(0, 1000) + '…' }];
      bytes = Buffer.byteLength(JSON.stringify(e)) + 1;
    }
    if (bytes > room) continue;
    if (size + bytes > room && packet.length > 0) {
      out.push(packet);
      packet = [];
      size = 0;
    }
    packet.push(e);
    size += bytes;
  }
  if (packet.length > 0) out.push(packet);
  return out;
}
