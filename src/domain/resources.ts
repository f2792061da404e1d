import { invalid } from './errors.js';

/** What a task needs, or what a host offers. Memory and disk in MiB; cores may be fractional. */
export interface Resources {
  cores: number;
  memoryMiB: number;
  diskMiB: number;
  gpus: number;
}

export const DEFAULT_RESOURCES: Resources = { cores: 1, memoryMiB: 512, diskMiB: 1024, gpus: 0 };

export const RESOURCE_LIMITS: Resources = { cores: 1024, memoryMiB: 16 * 1024 * 1024, diskMiB: 1024 * 1024 * 1024, gpus: 64 };

/** An app's size with a job's overrides laid over it. */
export function withOverrides(base: Resources, overrides: Partial<Resources> | undefined): Resources {
  return { ...base, ...(overrides ?? {}) };
}

export function fits(need: Resources, free: Resources): boolean {
  return need.cores <= free.cores && need.memoryMiB <= free.memoryMiB && need.diskMiB <= free.diskMiB && need.gpus <= free.gpus;
}

export function subtract(a: Resources, b: Resources): Resources {
  return { cores: a.cores - b.cores, memoryMiB: a.memoryMiB - b.memoryMiB, diskMiB: a.diskMiB - b.diskMiB, gpus: a.gpus - b.gpus };
}

const UNITS: Record<string, number> = {
  '': 1 / (1024 * 1024), // plain number = bytes
  k: 1000 / (1024 * 1024), ki: 1 / 1024,
  m: 1e6 / (1024 * 1024), mi: 1,
  g: 1e9 / (1024 * 1024), gi: 1024,
  t: 1e12 / (1024 * 1024), ti: 1024 * 1024,
};

/**
 * Parses a size like "512Mi", "2Gi", "1.5G" or "1048576" (bytes) into whole MiB, rounding up.
 * Kubernetes' quantity suffixes, because that is what our users already type.
 */
export function parseSizeMiB(text: string, field: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?)?[bB]?\s*$/.exec(text);
  if (!m) throw invalid(field, `"${text}" is not a size (examples: 512Mi, 2Gi, 1G)`);
  const unit = (m[2] ?? '').toLowerCase();
  const factor = UNITS[unit];
  if (factor === undefined) throw invalid(field, `unknown unit in "${text}"`);
  const mib = Math.ceil(Number(m[1]) * factor);
  if (mib <= 0) throw invalid(field, `"${text}" is less than 1 MiB`);
  return mib;
}
