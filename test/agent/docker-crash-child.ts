// An agent that dies mid-task: runs one task with a DockerRuntime, tells its parent (over the
// fork IPC channel) when the task's first output arrives, and waits there to be SIGKILLed.
// Used by docker-runtime.test.ts to leave a real leftover container behind, the way a crash does.
import type { TaskRunSpec } from '../../src/agent/runtime.js';
import { DockerRuntime } from '../../src/agent/runtimes/docker-runtime.js';

const spec = JSON.parse(process.argv[2] ?? '{}') as TaskRunSpec;
let told = false;
const result = await new DockerRuntime({ owner: process.argv[3] }).run({
  ...spec,
  onOutput: () => {
    if (told) return;
    told = true;
    process.send?.('output');
  },
});
process.send?.(`ended: ${JSON.stringify(result.outcome)}`);
