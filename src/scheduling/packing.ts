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

/** The largest share of the host a task takes, over cores, memory and GPUs (as in DRF). */
export function dominantShare(need: Resources, capacity: Resources): number {
  let share = 0;
  if (capacity.cores > 0) share = Math.max(share, need.cores / capacity.cores);
  if (capacity.memoryMiB > 0) share = Math.max(share, need.memoryMiB / capacity.memoryMiB);
  if (capacity.gpus > 0) share = Math.max(share, need.gpus / capacity.gpus);
  return share;
}
