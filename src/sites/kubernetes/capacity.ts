import type { V1ResourceQuota } from '@kubernetes/client-node';
import type { Resources } from '../../domain/resources.js';

/** Resources as Kubernetes counts them in a namespace: cores, MiB of memory, GPUs. */
export interface Share {
  cores: number;
  memoryMiB: number;
  gpus: number;
}

/**
 * What the executor may still lease: the share the operator gave it (`--max-cores` …) less
 * what its tasks hold, and never more than the namespace's ResourceQuotas have left (their
 * `used` already counts every pod in the namespace, the executor's own included). Without a
 * quota and without a limit on a resource, the executor asks for none of it.
 */
export function freeShare(limit: Share, held: Share, quotas: V1ResourceQuota[], notYetInQuota: Share = { cores: 0, memoryMiB: 0, gpus: 0 }): Share {
  const free: Share = {
    cores: limit.cores - held.cores,
    memoryMiB: limit.memoryMiB - held.memoryMiB,
    gpus: limit.gpus - held.gpus,
  };
  for (const q of quotas) {
    const hard = q.status?.hard ?? q.spec?.hard ?? {};
    const used = q.status?.used ?? {};
    const left = (keys: string[], unit: (s: string) => number): number => {
      const key = keys.find((k) => hard[k] !== undefined);
      return key === undefined ? Infinity : unit(hard[key]!) - unit(used[key] ?? '0');
    };
    // Held tasks whose pods do not exist yet are not in `used`, but will be.
    free.cores = Math.min(free.cores, left(['requests.cpu', 'cpu'], quantity) - notYetInQuota.cores);
    free.memoryMiB = Math.min(free.memoryMiB, left(['requests.memory', 'memory'], mebibytes) - notYetInQuota.memoryMiB);
    free.gpus = Math.min(free.gpus, left(['requests.nvidia.com/gpu'], Number) - notYetInQuota.gpus);
  }
  return { cores: Math.max(0, round3(free.cores)), memoryMiB: Math.max(0, Math.floor(free.memoryMiB)), gpus: Math.max(0, Math.floor(free.gpus)) };
}

/** Adds up what tasks hold, each with `overhead` on top (what its pod asks for besides the app). */
export function sumShare(rs: Iterable<Resources>, overhead: Share = { cores: 0, memoryMiB: 0, gpus: 0 }): Share {
  const s: Share = { cores: 0, memoryMiB: 0, gpus: 0 };
  for (const r of rs) {
    s.cores += r.cores + overhead.cores;
    s.memoryMiB += r.memoryMiB + overhead.memoryMiB;
    s.gpus += r.gpus + overhead.gpus;
  }
  return s;
}

const SUFFIX: Record<string, number> = {
  n: 1e-9, u: 1e-6, m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
};

/** A Kubernetes quantity ("500m", "2Gi", "1.5", "1e3") as a plain number. */
export function quantity(q: string): number {
  const m = /^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(n|u|m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/.exec(q.trim());
  if (!m) throw new Error(`"${q}" is not a Kubernetes quantity`);
  return Number(m[1]) * SUFFIX[m[2] ?? '']!;
}

function mebibytes(q: string): number {
  return quantity(q) / 2 ** 20;
}

/** Cores to a thousandth (millicores), rounded down. */
export function round3(x: number): number {
  return Math.floor(x * 1000) / 1000;
}
