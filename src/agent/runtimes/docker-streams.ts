import type { TaskUsage } from '../runtime.js';

/**
 * Streaming form of the engine's stdout/stderr framing (no TTY): an 8-byte header (stream,
 * 0, 0, 0, length as big-endian uint32) before each payload. Frames may be split across or
 * packed into network chunks in any way; `push` returns the payloads completed so far, in order.
 */
export class FrameDecoder {
  private pending: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): Buffer[] {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    const out: Buffer[] = [];
    let at = 0;
    while (at + 8 <= this.pending.length) {
      const length = this.pending.readUInt32BE(at + 4);
      if (at + 8 + length > this.pending.length) break;
      out.push(this.pending.subarray(at + 8, at + 8 + length));
      at += 8 + length;
    }
    this.pending = this.pending.subarray(at);
    return out;
  }

  /** Whatever a stream that ended mid-frame left behind: the partial payload, so no byte is lost. */
  rest(): Buffer {
    return this.pending.length > 8 ? this.pending.subarray(8) : Buffer.alloc(0);
  }
}


/** Splits a stream of newline-delimited JSON (engine stats, pull progress) into objects. */
export class JsonLines {
  private buf = '';

  push(chunk: Buffer | string): unknown[] {
    this.buf += chunk.toString();
    const out: unknown[] = [];
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line === '') continue;
      try {
        out.push(JSON.parse(line));
      } catch {
        // A garbled line costs one sample or one progress message, not the task.
      }
    }
    return out;
  }
}

/** The parts of an engine stats sample this runtime reads (cgroup v1 and v2 shapes). */
export interface StatsSample {
  read?: string;
  memory_stats?: { usage?: number; max_usage?: number };
  cpu_stats?: { cpu_usage?: { total_usage?: number } };
}

/**
 * What a task used, from the engine's stats samples (about one per second while it runs).
 * CPU time is cumulative in the cgroup, so the last sample is the best figure; memory peak is
 * cgroup v1's `max_usage` (peak since the container started, page cache included) or, where the
 * engine does not report it (cgroup v2), the highest `usage` seen in a sample.
 *
 * Imprecise by construction: the cgroup goes away with the container, so whatever the task did
 * after the last sample (up to ~1 s of CPU, a late memory spike on cgroup v2) is not counted, and
 * a task that ends before the first sample has no figures at all (null).
 */
export class UsageMeter {
  private cpuNs = 0;
  private peakBytes = 0;
  private samples = 0;

  add(sample: StatsSample): void {
    // A stopped container answers with an empty sample (zero time, no memory): not a measurement.
    if (!sample.read || sample.read.startsWith('0001-')) return;
    const mem = sample.memory_stats ?? {};
    const cpu = sample.cpu_stats?.cpu_usage?.total_usage ?? 0;
    this.cpuNs = Math.max(this.cpuNs, cpu);
    this.peakBytes = Math.max(this.peakBytes, mem.max_usage ?? 0, mem.usage ?? 0);
    this.samples++;
  }

  usage(): TaskUsage | null {
    if (this.samples === 0) return null;
    return { cpuSeconds: round(this.cpuNs / 1e9, 3), peakMemoryMiB: round(this.peakBytes / 2 ** 20, 1) };
  }
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
