import type { Resources } from '../domain/resources.js';

/**
 * How well a task fills what a host has free, the "alignment" of Tetris (Grandl et al., 2014):
 * the dot product of the task's demand and the free capacity, each as a fraction of the host.
 * Large tasks score high, and so do tasks heavy in the resource the host has most of left — a
 * memory-hungry task on a host with memory to spare and few cores, say — so hosts fill up
 * instead of leaving a stranded resource, and big tasks go first while they still fit.
 */
export function alignment(need: Resources, free: Resources, capacity: Resources): number {
  let score = 0;
  if (capacity.cores > 0) score += (need.cores / capacity.cores) * (free.cores / capacity.cores);
  if (capacity.memoryMiB > 0) score += (need.memoryMiB / capacity.memoryMiB) * (free.memoryMiB / capacity.memoryMiB);
  if (capacity.gpus > 0) score += (need.gpus / capacity.gpus) * (free.gpus / capacity.gpus);
  return score;
}

/**
 * Alignment, less a penalty when the task would leave memory scarcer than cores (as fractions
 * of the host): cores stranded for want of memory are capacity lost, so a memory-hungry task
 * that a lighter one could replace is put off until the mix balances. Cores are the resource
 * utilisation is counted in; memory left over when cores run out costs nothing, so only that
 * direction is penalised. On a 16-core, 12 GiB host with 256 MiB and 1280 MiB one-core tasks
 * this mixes them 8 + 8 (both full) where alignment alone takes 9 big ones and 3 small ones.
 */
export function packingScore(need: Resources, free: Resources, capacity: Resources): number {
  let score = alignment(need, free, capacity);
  if (capacity.cores > 0 && capacity.memoryMiB > 0) {
    const coresLeft = (free.cores - need.cores) / capacity.cores;
    const memoryLeft = (free.memoryMiB - need.memoryMiB) / capacity.memoryMiB;
    if (memoryLeft < coresLeft) score -= coresLeft - memoryLeft;
  }
  return score;
}

/** The largest share of the host a task takes, over cores, memory and GPUs (as in DRF). */
export function dominantShare(need: Resources, capacity: Resources): number {
  let share = 0;
  if (capacity.cores > 0) share = Math.max(share, need.cores / capacity.cores);
  if (capacity.memoryMiB > 0) share = Math.max(share, need.memoryMiB / capacity.memoryMiB);
  if (capacity.gpus > 0) share = Math.max(share, need.gpus / capacity.gpus);
  return share;
}
