import { existsSync } from 'node:fs';

/** Debian's chromium, driven by playwright-core (which downloads no browser of its own). */
export const CHROMIUM = '/usr/bin/chromium';
export const CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/**
 * Whether the browser suites can run. Locally a missing chromium skips them with the reason;
 * under CI=true it fails them, because a skipped suite in CI hides breakage (.ci/run installs it).
 */
export function chromiumSuite(): { skip: string | false } {
  if (existsSync(CHROMIUM)) return { skip: false };
  const reason = `${CHROMIUM} is missing (apt-get install chromium)`;
  if (process.env.CI === 'true') throw new Error(`CI needs Chromium for the browser tests, but ${reason}`);
  return { skip: reason };
}
