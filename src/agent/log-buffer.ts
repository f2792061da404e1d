import { StringDecoder } from 'node:string_decoder';
import type { LogChunk } from '../client/types.js';

/** Most output sent in one piece; older unsent output is dropped (the server keeps a tail anyway). */
export const LOG_CHUNK_MAX = 64 * 1024;

/**
 * A task's output on its way to the server. Pieces carry their offset in the whole output, so
 * a heartbeat that is retried, or lost after the server stored it, sends nothing twice: the
 * server skips what it already holds. Offsets count UTF-16 code units of the decoded text.
 */
export class LogBuffer {
  private readonly decoder = new StringDecoder('utf8');
  /** Offset of the first unacknowledged character. */
  private acked = 0;
  private pending = '';

  /** Bytes as the task wrote them; a UTF-8 character split across writes is kept whole. */
  push(bytes: Buffer): void {
    this.pending += this.decoder.write(bytes);
    if (this.pending.length > LOG_CHUNK_MAX) {
      const drop = this.pending.length - LOG_CHUNK_MAX;
      this.pending = this.pending.slice(drop);
      this.acked += drop;
    }
  }

  /** Everything the task wrote so far, as an offset. */
  get end(): number {
    return this.acked + this.pending.length;
  }

  /** The unacknowledged output, or null when there is none. */
  take(): LogChunk | null {
    return this.pending === '' ? null : { offset: this.acked, text: this.pending };
  }

  /** The server has stored output up to `end`. */
  ack(end: number): void {
    if (end <= this.acked) return;
    this.pending = this.pending.slice(Math.min(end - this.acked, this.pending.length));
    this.acked = end;
  }

  /**
   * The last piece, for the final report. When nothing was streamed (a task followed after an
   * agent restart), the runtime's stored tail stands in for the whole output.
   */
  final(runtimeTail: string): LogChunk | null {
    this.pending += this.decoder.end();
    if (this.end === 0 && runtimeTail !== '') return { offset: 0, text: runtimeTail.slice(-LOG_CHUNK_MAX) };
    return this.take();
  }
}
