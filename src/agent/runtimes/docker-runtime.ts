import Docker from 'dockerode';
import type { RuntimeProbe } from '../probe.js';
import { LOG_TAIL_BYTES, type TaskOutcome, type TaskRunResult, type TaskRunSpec, type TaskRuntime } from '../runtime.js';

/** Labels that tie a container to its task, so a restarted agent can find (or clean up) its own. */
export const LABEL_TASK = 'io.boxgrid.task';
export const LABEL_JOB = 'io.boxgrid.job';

export interface DockerRuntimeOptions {
  /** Docker Engine socket; dockerode's default (DOCKER_HOST or /var/run/docker.sock) otherwise. */
  socketPath?: string;
  /** Size of the writable tmpfs at /tmp, MiB. */
  tmpMiB?: number;
  /** Most processes (and threads) one task may have: a fork bomb stops here. */
  pidsLimit?: number;
}

/**
 * Runs each task in its own container with the tightest sandbox that still runs science code:
 * no network, a read-only root, no capabilities, no privilege gain, a non-root user, hard
 * memory (no swap beyond it), CPU and pid limits, and the task's directories as the only
 * writable places. The container is removed however the task ends.
 */
export class DockerRuntime implements TaskRuntime, RuntimeProbe {
  readonly name = 'docker';
  private readonly docker: Docker;

  constructor(private readonly opts: DockerRuntimeOptions = {}) {
    this.docker = new Docker(opts.socketPath ? { socketPath: opts.socketPath } : undefined);
  }

  /** Engine version, or null when no engine answers (the agent then says how to start one). */
  async version(): Promise<string | null> {
    try {
      return (await this.docker.version()).Version;
    } catch {
      return null;
    }
  }

  /** Tags and digests of the images the engine holds. */
  async images(): Promise<string[]> {
    const list = await this.docker.listImages();
    return list.flatMap((i) => [...(i.RepoTags ?? []), ...(i.RepoDigests ?? [])]).filter((t) => t !== '<none>:<none>' && t !== '<none>@<none>');
  }

  async run(spec: TaskRunSpec, signal?: AbortSignal): Promise<TaskRunResult> {
    const started = Date.now();
    const image = await this.checkImage(spec);
    if (image !== null) return { outcome: image, logTail: '', durationMs: Date.now() - started };
    let container: Docker.Container | undefined;
    try {
      container = await this.docker.createContainer(this.containerConfig(spec));
      // Asked before start, so no exit can be missed; 'next-exit' because the default
      // ('not-running') answers at once for a container that has not started yet.
      const waited = container.wait({ condition: 'next-exit' });
      try {
        await container.start();
      } catch (e) {
        // The engine refuses to start a command the image does not have: the task's fault, not ours.
        const message = (e as Error).message;
        if (/executable file not found|no such file or directory/i.test(message)) {
          return { outcome: { kind: 'failed', exitCode: 127 }, logTail: message, durationMs: Date.now() - started };
        }
        throw e;
      }
      const outcome = await this.waitForEnd(container, waited, spec, signal);
      const logTail = await this.logTail(container);
      return { outcome, logTail, durationMs: Date.now() - started };
    } catch (e) {
      return { outcome: { kind: 'agent_error', message: (e as Error).message }, logTail: '', durationMs: Date.now() - started };
    } finally {
      if (container) await container.remove({ force: true, v: true }).catch(() => undefined);
    }
  }

  containerConfig(spec: TaskRunSpec): Docker.ContainerCreateOptions {
    const memoryBytes = spec.resources.memoryMiB * 1024 * 1024;
    const binds = [`${spec.inputsDir}:/in:ro`, `${spec.outputsDir}:/out:rw`];
    if (spec.checkpointDir) binds.push(`${spec.checkpointDir}:/checkpoint:rw`);
    return {
      Image: spec.image,
      Cmd: spec.command,
      Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
      User: spec.user,
      WorkingDir: '/out',
      Labels: { [LABEL_TASK]: String(spec.taskId), [LABEL_JOB]: String(spec.jobId) },
      NetworkDisabled: true,
      HostConfig: {
        NetworkMode: 'none',
        ReadonlyRootfs: true,
        Tmpfs: { '/tmp': `rw,nosuid,nodev,size=${this.opts.tmpMiB ?? 64}m` },
        CapDrop: ['ALL'],
        SecurityOpt: ['no-new-privileges'],
        Memory: memoryBytes,
        MemorySwap: memoryBytes, // equal to Memory: no swap on top of the limit
        NanoCpus: Math.round(spec.resources.cores * 1e9),
        PidsLimit: this.opts.pidsLimit ?? 256,
        Binds: binds,
        // GPUs the NVIDIA container toolkit's way; untested here (no GPU on this machine).
        ...(spec.resources.gpus > 0 ? { DeviceRequests: [{ Driver: 'nvidia', Count: spec.resources.gpus, Capabilities: [['gpu']] }] } : {}),
      },
    };
  }

  /** Null when the image is present (and, if pinned, has the pinned digest); an outcome otherwise. */
  private async checkImage(spec: TaskRunSpec): Promise<TaskOutcome | null> {
    let info: Docker.ImageInspectInfo;
    try {
      info = await this.docker.getImage(spec.image).inspect();
    } catch {
      // Pulling (with registry auth and progress) arrives with the agent; until then the image must be there.
      return { kind: 'image_error', message: `image ${spec.image} is not on this host` };
    }
    if (spec.imageDigest !== null) {
      const digests = [info.Id, ...(info.RepoDigests ?? []).map((d) => d.slice(d.indexOf('@') + 1))];
      if (!digests.includes(spec.imageDigest)) {
        return { kind: 'image_error', message: `image ${spec.image} does not have the pinned digest ${spec.imageDigest}` };
      }
    }
    return null;
  }

  private async waitForEnd(container: Docker.Container, waited: Promise<unknown>, spec: TaskRunSpec, signal?: AbortSignal): Promise<TaskOutcome> {
    let stopReason: 'timeout' | 'aborted' | null = null;
    const stop = (reason: 'timeout' | 'aborted'): void => {
      if (stopReason !== null) return;
      stopReason = reason;
      container.kill().catch(() => undefined); // already gone is fine
    };
    const timer = setTimeout(() => stop('timeout'), spec.maxRuntimeSeconds * 1000);
    const onAbort = (): void => stop('aborted');
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) onAbort();
    try {
      await waited;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
    const state = (await container.inspect()).State;
    if (stopReason === 'timeout') return { kind: 'timeout', limitSeconds: spec.maxRuntimeSeconds };
    if (stopReason === 'aborted') return { kind: 'aborted' };
    if (state.OOMKilled) return { kind: 'out_of_memory', limitMiB: spec.resources.memoryMiB };
    return state.ExitCode === 0 ? { kind: 'succeeded' } : { kind: 'failed', exitCode: state.ExitCode };
  }

  private async logTail(container: Docker.Container): Promise<string> {
    const raw = (await container.logs({ stdout: true, stderr: true, follow: false, tail: 500 })) as unknown as Buffer;
    const text = demultiplex(raw);
    return text.subarray(Math.max(0, text.length - LOG_TAIL_BYTES)).toString('utf8');
  }
}

/**
 * Without a TTY the engine frames stdout and stderr: an 8-byte header (stream, 0, 0, 0, length
 * as big-endian uint32) before each chunk. Returns the payloads in order.
 */
export function demultiplex(raw: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  while (at + 8 <= raw.length) {
    const length = raw.readUInt32BE(at + 4);
    parts.push(raw.subarray(at + 8, Math.min(raw.length, at + 8 + length)));
    at += 8 + length;
  }
  return Buffer.concat(parts);
}
