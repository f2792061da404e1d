import type { JobView, TaskView } from './types.js';

/**
 * The task whose outputs are a job's result: the one the server names (for replicated jobs,
 * the canonical replica a quorum agreed on); for jobs finished before the server named one,
 * the last that succeeded. None while a replicated job waits for its quorum.
 */
export function resultTask(job: Pick<JobView, 'state' | 'resultTaskId'>, tasks: TaskView[]): TaskView | undefined {
  if (job.resultTaskId !== null) return tasks.find((t) => t.id === job.resultTaskId);
  return job.state === 'succeeded' ? tasks.filter((t) => t.state === 'succeeded').at(-1) : undefined;
}
