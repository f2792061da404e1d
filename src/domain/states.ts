import { StateMachine } from './state-machine.js';

/** A job is one unit of science work; it ends exactly once, in a terminal state. */
export const JOB_STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const;
export type JobState = (typeof JOB_STATES)[number];
export const jobMachine = new StateMachine<JobState>(
  'job',
  JOB_STATES,
  {
    // failed: its deadline passed while it waited; succeeded: a task presumed lost reported late
    queued: ['running', 'cancelled', 'failed', 'succeeded'],
    running: ['queued', 'succeeded', 'failed', 'cancelled'], // queued: its task was lost, try again
    succeeded: [],
    failed: [],
    cancelled: [],
  },
  ['succeeded', 'failed', 'cancelled'],
);

/** A task is one attempt (or replica) of a job on one host, held under a lease. */
export const TASK_STATES = ['assigned', 'running', 'succeeded', 'failed', 'lost', 'aborted'] as const;
export type TaskState = (typeof TASK_STATES)[number];
export const taskMachine = new StateMachine<TaskState>(
  'task',
  TASK_STATES,
  {
    assigned: ['running', 'succeeded', 'failed', 'lost', 'aborted'],
    running: ['succeeded', 'failed', 'lost', 'aborted'],
    succeeded: [],
    failed: [],
    // A lost task's host may only have been cut off: its result is still taken while the job is open.
    lost: ['succeeded', 'failed'],
    aborted: [],
  },
  ['succeeded', 'failed', 'aborted'],
);

/** Tasks that hold a lease and resources on their host. */
export const ACTIVE_TASK_STATES: readonly TaskState[] = ['assigned', 'running'];
export function isActiveTask(s: TaskState): boolean {
  return s === 'assigned' || s === 'running';
}

/** A host's credential is live until an operator revokes it. Online/offline is derived from last-seen. */
export const HOST_STATES = ['active', 'revoked'] as const;
export type HostState = (typeof HOST_STATES)[number];
export const hostMachine = new StateMachine<HostState>(
  'host',
  HOST_STATES,
  { active: ['revoked'], revoked: [] },
  ['revoked'],
);
