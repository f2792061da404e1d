/** The API's JSON shapes as clients see them (times are ISO 8601 strings). */
import type { Resources } from '../domain/resources.js';
import type { Role } from '../domain/roles.js';
import type { JobState } from '../domain/states.js';
import type { SweepSpec } from '../domain/sweep.js';
import type { AppInput, AppVersionInput } from '../service/apps.js';
import type { JobTemplate } from '../service/jobs.js';

export type { AppInput, AppVersionInput, JobTemplate, Role, JobState, Resources, SweepSpec };
export type Counts = Record<JobState, number>;

export interface UserView { id: number; name: string; operator: boolean; createdAt: string }
export interface ProjectView { name: string; shareWeight: number; createdAt: string; role?: Role }
export interface Me { user: UserView; projects: ProjectView[] }
export interface EnrollTokenView { token: string; id: string; site: string; usesLeft: number | null; expiresAt: string | null }
export interface HostView {
  id: number; name: string; site: string; state: string; platform: string; resources: Resources;
  enrolledAt: string; lastSeenAt: string | null; activeTasks: number;
}
export interface TokenView { token: string; id: string; user: string; expiresAt: string | null }

export interface AppView {
  id: number; name: string; version: number; description: string; image: string; imageDigest: string | null;
  command: string[]; resources: Resources; maxRuntimeSeconds: number; maxAttempts: number; replicas: number;
  quorum: number; checkpointing: boolean; platforms: string[]; createdAt: string;
}

export interface JobSubmit extends JobTemplate { app: string; appVersion?: number }
export interface BatchSubmit {
  app: string; appVersion?: number; labels?: Record<string, string>; template?: JobTemplate;
  jobs?: JobTemplate[]; count?: number; sweep?: SweepSpec;
}

export interface BatchView { id: number; app: string; appVersion: number; size: number; labels: Record<string, string>; createdAt: string }
export interface BatchDetail { batch: BatchView; counts: Counts; done: boolean }
export interface SubmitView { batch: BatchView | null; jobCount: number; jobIds?: number[]; replayed: boolean }

export interface JobView {
  id: number; app: string; appVersion: number; batchId: number | null; state: JobState; args: string[];
  env: Record<string, string>; inputs: Record<string, string>; resources: Partial<Resources>; priority: number;
  deadline: string | null; labels: Record<string, string>; params: Record<string, string | number>; attempts: number;
  reason: string | null; createdAt: string; updatedAt: string; finishedAt: string | null;
}
export interface TaskView {
  id: number; hostId: number; attempt: number; replica: number; state: string; leaseExpiresAt: string;
  createdAt: string; endedAt: string | null; exitCode: number | null; reason: string | null;
}
export interface JobQuery { state?: JobState; app?: string; batch?: number; label?: string; limit?: number; cursor?: string }
export interface BlobView { sha256: string; size: number; createdAt: string }
export interface StreamEvent { type: string; id: string | undefined; data: Record<string, unknown> }
