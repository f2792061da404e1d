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

/** Bytes per unit; decimal (k, M, G, T) and binary (Ki, Mi, Gi, Ti). Letters are case-insensitive. */
const UNITS: Record<string, number> = {
  '': 1, // a plain number is bytes
  k: 1e3, ki: 1024,
  m: 1e6, mi: 1024 ** 2,
  g: 1e9, gi: 1024 ** 3,
  t: 1e12, ti: 1024 ** 4,
};
const MIB = 1024 ** 2;

/**
 * Parses a size like "512Mi", "2Gi", "1.5G" or "1048576" (bytes) into whole MiB, rounding up.
 * Kubernetes' quantity suffixes, because that is what our users already type (but an 'm' is
 * mega here, never milli: nobody asks for a thousandth of a byte).
 */
export function parseSizeMiB(text: string, field: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]i?)?[bB]?\s*$/.exec(text);
  if (!m) throw invalid(field, `"${text}" is not a size (examples: 512Mi, 2Gi, 1G)`);
  const unit = (m[2] ?? '').toLowerCase();
  const factor = UNITS[unit];
  if (factor === undefined) throw invalid(field, `unknown unit in "${text}"`);
  // Round to whole bytes first: 128.974848M is exactly 123 MiB, but not in floating point.
  const mib = Math.ceil(Math.round(Number(m[1]) * factor) / MIB);
  if (mib <= 0) throw invalid(field, `"${text}" is less than 1 MiB`);
  return mib;
}
