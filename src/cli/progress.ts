import cliProgress from 'cli-progress';

/**
 * A progress bar on an interactive terminal; nothing at all otherwise (quiet by default, so
 * logs and pipes stay clean).
 */
export interface Progress {
  update(done: number, total: number, detail?: string): void;
  stop(): void;
}

export function progressBar(label: string, stream: NodeJS.WriteStream = process.stderr, opts: { bytes?: boolean } = {}): Progress {
  if (!stream.isTTY) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} [{bar}] {percentage}% | {value}/{total} {detail}`, stream, hideCursor: true, clearOnComplete: false,
      // Byte counts read as sizes ("12.3/90.0 MiB"), not as raw numbers.
      ...(opts.bytes ? { formatValue: (v: number, _o: unknown, type: string) => (type === 'value' || type === 'total' ? formatBytes(v, type === 'total') : String(v)) } : {}),
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(done, total, detail = '') {
      if (!started) {
        bar.start(total, done, { detail });
        started = true;
      } else {
        bar.setTotal(total);
        bar.update(done, { detail });
      }
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

/** A byte count in MiB with one decimal (the unit only on the total: "12.3/90.0 MiB"). */
export function formatBytes(n: number, withUnit = true): string {
  return `${(n / 2 ** 20).toFixed(1)}${withUnit ? ' MiB' : ''}`;
}
