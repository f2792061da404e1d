/** How far into a cut tail a line start is looked for. */
const LINE_SLACK = 1024;

/** Keeps the last `limit` bytes of a stream without holding the whole stream. */
export class TailBuffer {
  private chunks: Buffer[] = [];
  private size = 0;
  private truncated = false;

  constructor(private readonly limit: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    // Compact only once twice the limit is held, so a stream of small chunks costs O(1) each.
    if (this.size > 2 * this.limit) this.compact();
  }

  /**
   * The tail as text. When it had to be cut, it starts at the next line when one begins within
   * `LINE_SLACK` bytes (so it does not open mid-line or mid-character); a long line is kept cut.
   */
  text(): string {
    this.compact();
    const all = Buffer.concat(this.chunks);
    if (!this.truncated) return all.toString('utf8');
    const nl = all.indexOf(0x0a);
    return (nl >= 0 && nl < Math.min(LINE_SLACK, all.length - 1) ? all.subarray(nl + 1) : all).toString('utf8');
  }

  private compact(): void {
    if (this.size <= this.limit) return;
    const all = Buffer.concat(this.chunks);
    this.chunks = [all.subarray(all.length - this.limit)];
    this.size = this.limit;
    this.truncated = true;
  }
}
