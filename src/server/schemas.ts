import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { JOB_STATES } from '../domain/states.js';
import { EXPLAIN_CODES } from '../scheduling/explain.js';
import { ROLES } from '../domain/roles.js';
import { RESOURCE_LIMITS } from '../domain/resources.js';

/**
 * Request and response schemas of the HTTP API. The server validates requests against them and
 * serves them as the OpenAPI document, so the two cannot drift. Request objects forbid unknown
 * properties: a misspelt field is an error, not silently ignored.
 */
export const Strict = { additionalProperties: false } as const;
/** A plain `enum` (not anyOf of literals), so a wrong value's error lists every allowed one. */
export const StringEnum = <T extends string>(values: readonly T[]) => Type.Unsafe<T>({ type: 'string', enum: [...values] });
const Nullable = <T extends TSchema>(t: T) => Type.Union([t, Type.Null()]);

export const Name = Type.String({ minLength: 1, maxLength: 63, description: 'lower-case letters, digits, ".", "_", "-"' });
export const StringMap = (max: number) => Type.Record(Type.String(), Type.String({ maxLength: 4096 }), { maxProperties: max });

export const ResourcesPatch = Type.Object(
  {
    cores: Type.Optional(Type.Number({ exclusiveMinimum: 0, maximum: RESOURCE_LIMITS.cores })),
    memoryMiB: Type.Optional(Type.Integer({ minimum: 1, maximum: RESOURCE_LIMITS.memoryMiB })),
    diskMiB: Type.Optional(Type.Integer({ minimum: 1, maximum: RESOURCE_LIMITS.diskMiB })),
    gpus: Type.Optional(Type.Integer({ minimum: 0, maximum: RESOURCE_LIMITS.gpus })),
  },
  Strict,
);

export const Resources = Type.Object({ cores: Type.Number(), memoryMiB: Type.Integer(), diskMiB: Type.Integer(), gpus: Type.Integer() });

const Validator = Type.Object(
  {
    image: Type.String({ minLength: 1, maxLength: 512 }),
    command: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 256, description: 'default: the image\'s' })),
  },
  { ...Strict, description: 'compares the replicas\' results (reads /in/<task id>/…, writes /out/groups.json) instead of requiring identical files' },
);

const AppFields = {
  description: Type.Optional(Type.String({ maxLength: 2000 })),
  image: Type.String({ minLength: 1, maxLength: 512 }),
  imageDigest: Type.Optional(Type.String({ maxLength: 71 })),
  command: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 256 })),
  resources: Type.Optional(ResourcesPatch),
  maxRuntimeSeconds: Type.Optional(Type.Integer({ minimum: 1, maximum: 30 * 24 * 3600 })),
  maxAttempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
  replicas: Type.Optional(Type.Integer({ minimum: 1, maximum: 16 })),
  quorum: Type.Optional(Type.Integer({ minimum: 1, maximum: 16 })),
  maxReplicas: Type.Optional(Type.Integer({ minimum: 1, maximum: 32, description: 'most replicas a job may run before it fails with no consensus (default: replicas + 4)' })),
  adaptiveReplication: Type.Optional(Type.Boolean({ description: 'hosts with a long run of valid results get unreplicated jobs, still spot-checked' })),
  validator: Type.Optional(Nullable(Validator)),
  checkpointing: Type.Optional(Type.Boolean()),
  platforms: Type.Optional(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 16 })),
  nativeCommand: Type.Optional(Nullable(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 256, description: 'run outside a container on hosts that enable the native runtime' }))),
};
export const AppCreate = Type.Object({ name: Name, ...AppFields }, Strict);
export const AppVersionCreate = Type.Object({ ...AppFields, image: Type.Optional(AppFields.image) }, { ...Strict, description: 'Omitted fields are copied from the latest version.' });

export const App = Type.Object({
  id: Type.Integer(), name: Type.String(), version: Type.Integer(), description: Type.String(),
  image: Type.String(), imageDigest: Nullable(Type.String()), command: Type.Array(Type.String()),
  resources: Resources, maxRuntimeSeconds: Type.Integer(), maxAttempts: Type.Integer(),
  replicas: Type.Integer(), quorum: Type.Integer(), maxReplicas: Type.Integer(), adaptiveReplication: Type.Boolean(), validator: Nullable(Validator), checkpointing: Type.Boolean(),
  platforms: Type.Array(Type.String()), nativeCommand: Nullable(Type.Array(Type.String())), createdAt: Type.String({ format: 'date-time' }),
});

const JobFields = {
  args: Type.Optional(Type.Array(Type.String({ maxLength: 4096 }), { maxItems: 256 })),
  env: Type.Optional(StringMap(128)),
  inputs: Type.Optional(StringMap(256)),
  resources: Type.Optional(ResourcesPatch),
  priority: Type.Optional(Type.Integer({ minimum: -1000, maximum: 1000 })),
  deadline: Type.Optional(Type.String({ maxLength: 40, description: 'ISO 8601 time' })),
  labels: Type.Optional(Type.Record(Type.String(), Type.String({ maxLength: 256 }), { maxProperties: 32 })),
  selector: Type.Optional(
    Type.Record(Type.String(), Type.String({ maxLength: 256 }), { maxProperties: 16, description: 'labels a host must carry (key: value) to run the job' }),
  ),
};
export const JobTemplate = Type.Object(JobFields, Strict);
const AppRefFields = { app: Name, appVersion: Type.Optional(Type.Integer({ minimum: 1 })) };
export const JobCreate = Type.Object({ ...AppRefFields, ...JobFields }, Strict);

const SweepDimension = Type.Union([
  Type.Object({ from: Type.Number(), to: Type.Number(), step: Type.Optional(Type.Number({ exclusiveMinimum: 0 })) }, Strict),
  // No minItems: an empty list is refused by the service, whose message names the problem.
  Type.Object({ values: Type.Array(Type.Union([Type.String({ maxLength: 256 }), Type.Number()]), { maxItems: 100_000 }) }, Strict),
]);

export const BatchCreate = Type.Object(
  {
    ...AppRefFields,
    labels: Type.Optional(Type.Record(Type.String(), Type.String({ maxLength: 256 }), { maxProperties: 32 })),
    template: Type.Optional(JobTemplate),
    jobs: Type.Optional(Type.Array(JobTemplate, { maxItems: 100_000 })),
    count: Type.Optional(Type.Integer({ minimum: 1 })),
    sweep: Type.Optional(Type.Record(Type.String(), SweepDimension, { minProperties: 1, maxProperties: 16 })),
  },
  Strict,
);

export const JobStateSchema = StringEnum(JOB_STATES);
export const Counts = Type.Object(Object.fromEntries(JOB_STATES.map((s) => [s, Type.Integer()])) as Record<(typeof JOB_STATES)[number], ReturnType<typeof Type.Integer>>);

export const Job = Type.Object({
  id: Type.Integer(), app: Type.String(), appVersion: Type.Integer(), batchId: Nullable(Type.Integer()),
  state: JobStateSchema, args: Type.Array(Type.String()), env: Type.Record(Type.String(), Type.String()),
  inputs: Type.Record(Type.String(), Type.String()), resources: Type.Object({}, { additionalProperties: Type.Number() }),
  priority: Type.Integer(), deadline: Nullable(Type.String()), labels: Type.Record(Type.String(), Type.String()),
  selector: Type.Record(Type.String(), Type.String()),
  retryAt: Nullable(Type.String({ description: 'a requeued job waits out a backoff: it does not run before this time' })),
  params: Type.Record(Type.String(), Type.Union([Type.String(), Type.Number()])), attempts: Type.Integer(),
  reason: Nullable(Type.String()), createdAt: Type.String(), updatedAt: Type.String(), finishedAt: Nullable(Type.String()),
  checkpoint: Nullable(Type.String({ description: 'sha256 of the latest checkpoint (a tar of /checkpoint) a task uploaded; the next task resumes from it' })),
  quorum: Type.Integer({ description: 'agreeing replicas this job needs (1: its first success is its result)' }),
  resultTaskId: Nullable(Type.Integer({ description: 'the task whose outputs are the job\'s result (for replicated jobs, the canonical one)' })),
});

export const Task = Type.Object({
  id: Type.Integer(), hostId: Type.Integer(), attempt: Type.Integer(), replica: Type.Integer(), state: Type.String(),
  runtime: Type.String(), leaseExpiresAt: Type.String(), createdAt: Type.String(), startedAt: Nullable(Type.String()),
  endedAt: Nullable(Type.String()), exitCode: Nullable(Type.Integer()), reason: Nullable(Type.String()),
  outcome: Nullable(Type.Object({ kind: Type.String() }, { additionalProperties: true })),
  progress: Nullable(Type.Number()),
  usage: Nullable(Type.Object({ cpuSeconds: Type.Number(), peakMemoryMiB: Type.Number() })),
  durationMs: Nullable(Type.Integer()),
  outputs: Type.Record(Type.String(), Type.Object({ sha256: Type.String(), size: Type.Integer() }), { description: 'files the task left in /out' }),
  validity: Nullable(Type.Union([Type.Literal('valid'), Type.Literal('invalid')], { description: 'replicas of a replicated job: whether the result agreed with the quorum' })),
});

export const TaskLog = Type.Object({
  taskId: Type.Integer(), jobId: Type.Integer(), state: Type.String(),
  text: Type.String({ description: 'the stored output from `start` on (the tail of at most 64 KiB)' }),
  start: Type.Integer(), end: Type.Integer({ description: 'pass as ?after= to get only what comes next' }),
  done: Type.Boolean({ description: 'the task has ended: no more output will come' }),
});

export const Explanation = Type.Object({
  jobId: Type.Integer(),
  state: JobStateSchema,
  summary: Type.String({ description: 'one line: the main reason' }),
  reasons: Type.Array(Type.Object({
    code: StringEnum(EXPLAIN_CODES),
    message: Type.String(),
    blocking: Type.Boolean({ description: 'keeps the job from running (false: good news or a note)' }),
    details: Type.Array(Type.String()),
  }), { description: 'blocking reasons first; the notes no_quota and no_dependencies last' }),
  hosts: Nullable(Type.Object({
    live: Type.Integer({ description: 'not revoked, and seen within a lease' }),
    canRun: Type.Integer({ description: 'live hosts that could run the job when they have room' }),
    busy: Type.Integer({ description: 'of those, the ones holding tasks' }),
    excluded: Type.Array(Type.Object({
      blocker: Type.String({ description: 'resource:NAME, platform, runtime, selector:KEY or cooldown' }),
      hosts: Type.Integer(),
      message: Type.String(),
    }), { description: 'the other live hosts, by what stops them' }),
  }, { description: 'for a queued job' })),
  jobsAhead: Nullable(Type.Object({
    count: Type.Integer(),
    atLeast: Type.Boolean({ description: 'the count stopped at its cap' }),
  }, { description: 'for a queued job: eligible jobs of its queue that go before it' })),
});

export const Batch = Type.Object({
  id: Type.Integer(), app: Type.String(), appVersion: Type.Integer(), size: Type.Integer(),
  labels: Type.Record(Type.String(), Type.String()), createdAt: Type.String(),
});

export const SubmitResponse = Type.Object({
  batch: Nullable(Batch),
  jobCount: Type.Integer(),
  /** Present when the request made at most 1,000 jobs; list a batch's jobs with ?batch= otherwise. */
  jobIds: Type.Optional(Type.Array(Type.Integer())),
  replayed: Type.Boolean(),
});

export const JobListQuery = Type.Object(
  {
    state: Type.Optional(JobStateSchema),
    app: Type.Optional(Name),
    batch: Type.Optional(Type.Integer({ minimum: 1 })),
    label: Type.Optional(Type.String({ pattern: '^[^=]+=.*$', maxLength: 320, description: 'key=value' })),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 100 })),
    cursor: Type.Optional(Type.String({ maxLength: 64 })),
  },
  Strict,
);
export const PageQuery = Type.Object(
  { limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })), cursor: Type.Optional(Type.String({ maxLength: 64 })) },
  Strict,
);

export const ProjectParams = Type.Object({ project: Type.String({ maxLength: 63 }) });
export const IdParams = Type.Object({ project: Type.String({ maxLength: 63 }), id: Type.Integer({ minimum: 1 }) });
export const AppParams = Type.Object({ project: Type.String({ maxLength: 63 }), name: Type.String({ maxLength: 63 }) });
export const BlobParams = Type.Object({ project: Type.String({ maxLength: 63 }), sha256: Type.String({ maxLength: 64 }) });

export const UserCreate = Type.Object({ name: Name, operator: Type.Optional(Type.Boolean()) }, Strict);
const ShareWeight = Type.Number({ exclusiveMinimum: 0, maximum: 1000, description: 'fair-share weight: backlogged projects get throughput in proportion to their weights' });
export const ProjectCreate = Type.Object({ name: Name, shareWeight: Type.Optional(ShareWeight) }, Strict);
export const ProjectPatch = Type.Object({ shareWeight: ShareWeight }, Strict);
export const RoleSchema = StringEnum(ROLES);
export const MemberPut = Type.Object({ role: RoleSchema }, Strict);
export const TokenCreate = Type.Object(
  { user: Type.Optional(Name), label: Type.Optional(Type.String({ maxLength: 200 })), ttlSeconds: Type.Optional(Type.Integer({ minimum: 60, maximum: 10 * 365 * 86400 })) },
  Strict,
);

export const ErrorBody = Type.Object({
  error: Type.Object({
    code: Type.String(),
    message: Type.String(),
    field: Type.Optional(Type.String()),
    /** Every problem of a document checked as a whole (a workflow spec), by line. */
    problems: Type.Optional(Type.Array(Type.Object({ path: Type.String(), line: Type.Integer(), column: Type.Integer(), message: Type.String() }))),
  }),
});

export type AppCreateBody = Static<typeof AppCreate>;
export type BatchCreateBody = Static<typeof BatchCreate>;
