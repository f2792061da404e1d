import { execFile } from 'node:child_process';
import { statfs } from 'node:fs/promises';
import { arch, availableParallelism, platform, totalmem } from 'node:os';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface GpuInfo {
  index: number;
  name: string;
  memoryMiB: number;
  uuid: string;
}

/** What a host has, as the agent reports it when it enrols and asks for work. */
export interface HostProbe {
  cores: number;
  memoryMiB: number;
  /** Free space where tasks' files go. */
  diskFreeMiB: number;
  gpus: GpuInfo[];
  /** OCI platform, e.g. linux/amd64. */
  platform: string;
  runtime: { name: string; version: string } | null;
  /** Images the runtime already holds (tags and digests), so work that needs them can come here first. */
  images: string[];
}

/** The container runtime's side of the probe; null fields when no engine answers. */
export interface RuntimeProbe {
  name: string;
  version(): Promise<string | null>;
  images(): Promise<string[]>;
}

const ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

/** This machine's OCI platform, e.g. linux/amd64. */
export function ociPlatform(): string {
  return `${platform()}/${ARCH[arch()] ?? arch()}`;
}

export async function probeHost(workDir: string, runtime: RuntimeProbe | null, nvidiaSmi = 'nvidia-smi'): Promise<HostProbe> {
  const fs = await statfs(workDir);
  const version = runtime ? await runtime.version() : null;
  return {
    cores: availableParallelism(),
    memoryMiB: Math.floor(totalmem() / 2 ** 20),
    diskFreeMiB: Math.floor((fs.bavail * fs.bsize) / 2 ** 20),
    gpus: await probeGpus(nvidiaSmi),
    platform: ociPlatform(),
    runtime: runtime && version !== null ? { name: runtime.name, version } : null,
    images: runtime && version !== null ? await runtime.images() : [],
  };
}

/** GPUs as nvidia-smi lists them; none when it is not installed or finds no device. */
export async function probeGpus(nvidiaSmi = 'nvidia-smi'): Promise<GpuInfo[]> {
  try {
    const { stdout } = await run(nvidiaSmi, ['--query-gpu=index,name,memory.total,uuid', '--format=csv,noheader,nounits'], { timeout: 10_000 });
    return parseNvidiaSmi(stdout);
  } catch {
    return [];
  }
}

/** Parses `nvidia-smi --query-gpu=index,name,memory.total,uuid --format=csv,noheader,nounits`. */
export function parseNvidiaSmi(csv: string): GpuInfo[] {
  const gpus: GpuInfo[] = [];
  for (const line of csv.split('\n')) {
    if (line.trim() === '') continue;
    const cells = line.split(',').map((c) => c.trim());
    if (cells.length < 4) continue;
    const uuid = cells.at(-1)!;
    const memory = Number(cells.at(-2));
    const index = Number(cells[0]);
    // A GPU name may itself contain commas: it is everything between the index and the memory.
    const name = cells.slice(1, -2).join(', ');
    if (!Number.isInteger(index) || !Number.isFinite(memory) || !uuid.startsWith('GPU-')) continue;
    gpus.push({ index, name, memoryMiB: memory, uuid });
  }
  return gpus;
}
