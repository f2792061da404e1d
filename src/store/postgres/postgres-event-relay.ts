import { randomUUID } from 'node:crypto';
import pg from 'pg';
import type { BoxgridEvent, EventRelay } from '../../service/events.js';

/** NOTIFY payloads must stay under 8000 bytes; events are packed up to this many characters. */
const PAYLOAD_CHARS = 7000;
/** How long a listener that lost its connection waits before it connects again. */
const RECONNECT_MS = 1000;

interface Packet {
  origin: string;
  events: Array<[projectId: number, event: BoxgridEvent]>;
}

/**
 * The servers on one PostgreSQL database tell each other their events with LISTEN/NOTIFY: each
 * server sends what it publishes, packed per event-loop turn, on a channel of its schema, and
 * listens on one connection of its own for the others'. PostgreSQL delivers notifications
 * after their transaction commits and in commit order; a server that is not listening (its
 * connection dropped, being re-established) misses what was sent meanwhile, as a watcher that
 * is not connected does.
 */
export class PostgresEventRelay implements EventRelay {
  private readonly origin = randomUUID();
  private readonly channel: string;
  private listener: pg.Client | null = null;
  private deliver: ((projectId: number, event: BoxgridEvent) => void) | null = null;
  private pending: Packet['events'] = [];
  private flushing = false;
  private closed = false;
  private reconnect: NodeJS.Timeout | null = null;

  constructor(private readonly pool: pg.Pool, private readonly clientConfig: pg.ClientConfig, schema: string | null) {
    this.channel = `boxgrid_events_${schema ?? 'public'}`;
  }

  async start(deliver: (projectId: number, event: BoxgridEvent) => void): Promise<void> {
    this.deliver = deliver;
    await this.listen();
  }

  private async listen(): Promise<void> {
    const client = new pg.Client(this.clientConfig);
    client.on('notification', (n) => this.received(n.payload));
    // A dropped connection: listen again on a new one, unless the relay is closing.
    client.on('error', () => this.relisten(client));
    client.on('end', () => this.relisten(client));
    await client.connect();
    await client.query(`LISTEN ${this.channel}`);
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
        this.reconnect = setTimeout(retry, RECONNECT_MS);
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
    if (!this.flushing) {
      this.flushing = true;
      setImmediate(() => void this.flush());
    }
  }

  /** Sends what this turn published, in packets under the payload limit; a failure loses only those events. */
  private async flush(): Promise<void> {
    const events = this.pending;
    this.pending = [];
    this.flushing = false;
    let packet: Packet['events'] = [];
    let size = 0;
    const packets: Array<Packet['events']> = [];
    for (const e of events) {
      const chars = JSON.stringify(e).length + 1;
      if (size + chars > PAYLOAD_CHARS && packet.length > 0) {
        packets.push(packet);
        packet = [];
        size = 0;
      }
      packet.push(e);
      size += chars;
    }
    if (packet.length > 0) packets.push(packet);
    for (const p of packets) {
      await this.pool.query('SELECT pg_notify($1, $2)', [this.channel, JSON.stringify({ origin: this.origin, events: p } satisfies Packet)]).catch(() => {});
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.reconnect) clearTimeout(this.reconnect);
    const listener = this.listener;
    this.listener = null;
    await listener?.end().catch(() => {});
  }
}
