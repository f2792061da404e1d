import { inPart } from '../http-errors.js';
import { Type } from '@sinclair/typebox';
import { currentHost, type Services } from '../services.js';
import { BlobInfo, receiveBlob, sendBlob } from './blobs.js';
import { Resources } from '../schemas.js';
import type { Api } from '../server.js';

const FreeResources = Type.Object(
  {
    cores: Type.Number({ minimum: 0, maximum: 4096 }), memoryMiB: Type.Integer({ minimum: 0 }),
    diskMiB: Type.Integer({ minimum: 0 }), gpus: Type.Integer({ minimum: 0, maximum: 64 }),
  },
  { additionalProperties: false },
);
const RuntimeSchema = Type.Union([Type.Literal('docker'), Type.Literal('native')]);
const WorkBody = Type.Object(
  {
    requestId: Type.String({ maxLength: 64, description: 'new per request, the same on a retry: a retry gets the same tasks' }),
    free: FreeResources,
    maxTasks: Type.Integer({ minimum: 0, maximum: 256 }),
    runtimes: Type.Array(RuntimeSchema, { minItems: 1, maxItems: 2, description: 'in order of preference' }),
  },
  { additionalProperties: false },
);
const Assignment = Type.Object({
  taskId: Type.Integer(), jobId: Type.Integer(), project: Type.String(), attempt: Type.Integer(), runtime: RuntimeSchema,
  leaseExpiresAt: Type.String({ format: 'date-time' }), image: Type.String(), imageDigest: Type.Union([Type.String(), Type.Null()]),
  command: Type.Array(Type.String()), env: Type.Record(Type.String(), Type.String()), resources: Resources,
  maxRuntimeSeconds: Type.Integer(), checkpointing: Type.Boolean(), checkpoint: Type.Union([Type.String(), Type.Null()]),
  inputs: Type.Array(Type.Object({ name: Type.String(), sha256: Type.String(), size: Type.Integer() })),
});
const Usage = Type.Object({ cpuSeconds: Type.Number({ minimum: 0 }), peakMemoryMiB: Type.Number({ minimum: 0 }) }, { additionalProperties: false });
const Log = Type.Object(
  { offset: Type.Integer({ minimum: 0 }), text: Type.String({ maxLength: 256 * 1024 }) },
  { additionalProperties: false, description: "a piece of the task's output and where it starts in it; repeats are ignored" },
);
const HeartbeatBody = Type.Object(
  {
    tasks: Type.Array(
      Type.Object(
        { taskId: Type.Integer({ minimum: 1 }), progress: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })), usage: Type.Optional(Usage), log: Type.Optional(Log) },
        { additionalProperties: false },
      ),
      { maxItems: 1024 },
    ),
  },
  { additionalProperties: false },
);
const Outcome = Type.Union([
  Type.Object({ kind: Type.Literal('succeeded') }, { additionalProperties: false }),
  Type.Object({ kind: Type.Literal('failed'), exitCode: Type.Integer({ minimum: -255, maximum: 255 }) }, { additionalProperties: false }),
  Type.Object({ kind: Type.Literal('out_of_memory'), limitMiB: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
  Type.Object({ kind: Type.Literal('timeout'), limitSeconds: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
  Type.Object({ kind: Type.Literal('aborted') }, { additionalProperties: false }),
  Type.Object({ kind: Type.Literal('image_error'), message: Type.String({ maxLength: 4096 }) }, { additionalProperties: false }),
  Type.Object({ kind: Type.Literal('output_error'), message: Type.String({ maxLength: 4096 }) }, { additionalProperties: false }),
  Type.Object({ kind: Type.Literal('agent_error'), message: Type.String({ maxLength: 4096 }) }, { additionalProperties: false }),
]);
const ReportBody = Type.Object(
  {
    outcome: Outcome,
    durationMs: Type.Integer({ minimum: 0 }),
    usage: Type.Optional(Usage),
    outputs: Type.Optional(Type.Record(Type.String({ maxLength: 255 }), Type.Object({ sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }), size: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }))),
    log: Type.Optional(Log),
  },
  { additionalProperties: false },
);
const TaskParams = Type.Object({ id: Type.Integer({ minimum: 1 }) });
const TaskBlobParams = Type.Object({ id: Type.Integer({ minimum: 1 }), sha256: Type.String({ maxLength: 64 }) });
const iso = (ms: number): string => new Date(ms).toISOString();

/**
 * The agent protocol, /agent/v1, authenticated by host credentials only (enrolment, which
 * has none yet, is registered apart: see registerEnrollRoute). Every mutating call is safe to
 * repeat: see service/agent-protocol.ts.
 */
export function registerAgentRoutes(app: Api, s: Services): void {
  const tags = ['agent'];
  app.get(
    '/self',
    { schema: { tags, response: { 200: Type.Object({ id: Type.Integer(), name: Type.String(), state: Type.String(), resources: Resources, platform: Type.String() }) } } },
    async (req) => {
      const h = currentHost(req);
      return { id: h.id, name: h.name, state: h.state, resources: h.resources, platform: h.platform };
    },
  );

  app.post(
    '/work',
    {
      schema: {
        tags, body: WorkBody,
        description: 'Ask for tasks that fit the free capacity. Answers 0..n tasks, each under a lease, and when to ask again.',
        response: { 200: Type.Object({ tasks: Type.Array(Assignment), retryAfterMs: Type.Integer(), heartbeatSeconds: Type.Integer(), replayed: Type.Boolean() }) },
      },
    },
    async (req) => {
      const r = await inPart('body', s.agent.requestWork(currentHost(req), req.body));
      return { ...r, tasks: r.tasks.map((t) => ({ ...t, leaseExpiresAt: iso(t.leaseExpiresAt) })) };
    },
  );

  app.post(
    '/heartbeat',
    {
      schema: {
        tags, body: HeartbeatBody,
        description: 'One call for all running tasks: progress, usage, log pieces. Extends the live leases; lists tasks to abort.',
        response: {
          200: Type.Object({
            leases: Type.Array(Type.Object({ taskId: Type.Integer(), leaseExpiresAt: Type.String({ format: 'date-time' }) })),
            abort: Type.Array(Type.Object({ taskId: Type.Integer(), reason: Type.String() })),
            heartbeatSeconds: Type.Integer(),
          }),
        },
      },
    },
    async (req) => {
      const r = await inPart('body', s.agent.heartbeat(currentHost(req), req.body));
      return { ...r, leases: r.leases.map((l) => ({ taskId: l.taskId, leaseExpiresAt: iso(l.leaseExpiresAt) })) };
    },
  );

  app.post(
    '/tasks/:id/result',
    {
      schema: {
        tags, params: TaskParams, body: ReportBody,
        description: 'Report how a task ended, with its outputs (uploaded first). The same report again answers 200 with replayed: true.',
        response: { 200: Type.Object({ taskState: Type.String(), jobState: Type.String(), replayed: Type.Boolean() }) },
      },
    },
    async (req) => {
      const r = await inPart('body', s.agent.report(currentHost(req), req.params.id, req.body));
      return { taskState: r.task.state, jobState: r.job.state, replayed: r.replayed };
    },
  );

  app.post(
    '/tasks/:id/checkpoint',
    {
      schema: {
        tags, params: TaskParams, body: Type.Object({ sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }) }, { additionalProperties: false }),
        description: "Make an uploaded tar of /checkpoint the job's latest checkpoint; a later task resumes from it.",
        response: { 200: Type.Object({ recorded: Type.Boolean() }) },
      },
    },
    async (req) => {
      await inPart('body', s.agent.checkpoint(currentHost(req), req.params.id, req.body.sha256));
      return { recorded: true };
    },
  );

  app.get(
    '/tasks/:id/blobs/:sha256',
    { exposeHeadRoute: false, schema: { tags, params: TaskBlobParams, description: "Download one of the task's inputs (or the checkpoint it resumes from)." } },
    async (req, reply) => sendBlob(req, reply, await inPart('params', s.agent.openInput(currentHost(req), req.params.id, req.params.sha256))),
  );

  void app.register(async (uploads) => {
    uploads.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
    (uploads as Api).put(
      '/tasks/:id/blobs/:sha256',
      {
        schema: {
          tags, params: TaskBlobParams, response: { 201: BlobInfo, 200: BlobInfo },
          description: "Upload an output or checkpoint of a live task (application/octet-stream, under its sha256); it joins the job's project.",
        },
      },
      async (req, reply) => receiveBlob(req, reply, (body, length) => s.agent.upload(currentHost(req), req.params.id, req.params.sha256, body, length)),
    );
  });
}

const EnrollBody = Type.Object(
  {
    enrollToken: Type.String({ maxLength: 100 }),
    name: Type.String({ minLength: 1, maxLength: 253, description: 'the host name, for people' }),
    resources: Type.Object(
      {
        cores: Type.Number({ exclusiveMinimum: 0, maximum: 4096 }), memoryMiB: Type.Integer({ minimum: 1 }),
        diskMiB: Type.Integer({ minimum: 0 }), gpus: Type.Integer({ minimum: 0, maximum: 64 }),
      },
      { additionalProperties: false },
    ),
    platform: Type.String({ pattern: '^[a-z0-9]+/[a-z0-9_]+(/[a-z0-9]+)?$', maxLength: 64 }),
    credentialId: Type.String({ maxLength: 16 }),
    credentialHash: Type.String({ maxLength: 64 }),
  },
  { additionalProperties: false },
);
const EnrollAnswer = Type.Object({ hostId: Type.Integer(), name: Type.String(), siteId: Type.Integer(), replayed: Type.Boolean() });

/** POST /agent/v1/enroll: an enrolment token (in the body) buys a host credential. Safe to retry. */
export function registerEnrollRoute(app: Api, s: Services): void {
  app.post(
    '/enroll',
    { schema: { tags: ['agent'], security: [], body: EnrollBody, response: { 201: EnrollAnswer, 200: EnrollAnswer } } },
    async (req, reply) => {
      const { host, replayed } = await inPart('body', s.enrollment.enroll(req.body));
      return reply.code(replayed ? 200 : 201).send({ hostId: host.id, name: host.name, siteId: host.siteId, replayed });
    },
  );
}
