import { NativeRuntime } from '../../src/agent/runtimes/native-runtime.js';

/**
 * Whether the sandboxed (bubblewrap) native-runtime suites can run. Locally a missing or
 * unusable bwrap skips them with the reason; under CI=true it fails them, because a skipped
 * suite in CI hides breakage.
 */
export async function bwrapSuite(): Promise<{ skip: string | false }> {
  const check = await NativeRuntime.detect();
  if (check.usable) return { skip: false };
  if (process.env.CI === 'true') throw new Error(`CI needs a working bubblewrap for these tests, but ${check.reason}`);
  return { skip: check.reason };
}
