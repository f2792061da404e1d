import { inPart } from '../http-errors.js';
import { Type } from '@sinclair/typebox';
import { currentHost, type Services } from '../services.js';
import { BlobInfo, receiveBlob, sendBlob } from './blobs.js';
import { Resources } from '../schemas.js';
import type { Api } from '../server.js';
import { OUTCOME_KINDS, type OutcomeKind, type TaskOutcome } from '../../domain/outcomes.js';
import { TRANSFER_URL_SECONDS } from '../../service/agent-protocol.js';

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
    labels: Type.Optional(
      Type.Record(Type.String({ maxLength: 64 }), Type.String({ maxLength: 256 }), {
        maxProperties: 32, description: "the host's labels (agent --label), matched against jobs' selectors; omitted: as before",
      }),
    ),
    images: Type.Optional(
      Type.Array(Type.String({ maxLength: 512 }), { maxItems: 512, description: 'images the host holds (references or digests): tasks of their apps come to it first' }),
    ),
    maxRuntimeSeconds: Type.Optional(
      Type.Integer({ minimum: 1, description: 'the longest run the host has time for (a pilot near the end of its allocation): apps whose runs may take longer are not handed out' }),
    ),
  },
  { additionalProperties: false },
);
const Assignment = Type.Object({
  taskId: Type.Integer(), jobId: Type.Integer(), project: Type.String(), attempt: Type.Integer(), runtime: RuntimeSchema,
  leaseExpiresAt: Type.String({ format: 'date-time' }), image: Type.String(), imageDigest: Type.Union([Type.String(), Type.Null()]),
  command: Type.Array(Type.String()), env: Type.Record(Type.String(), Type.String()), resources: Resources,
  maxRuntimeSeconds: Type.Integer(), checkpointing: Type.Boolean(), checkpoint: Type.Union([Type.String(), Type.Null()]),
  checkpointUrl: Type.Optional(Type.String({ description: 'a pre-signed GET of the checkpoint from the blob store, when it gives them' })),
  inputs: Type.Array(Type.Object({
    name: Type.String(), sha256: Type.String(), size: Type.Integer(),
    url: Type.Optional(Type.String({ description: 'a pre-signed GET from the blob store itself, when it gives them; expires with the lease (15 minutes at least); GET /tasks/{id}/blobs/{sha256} serves the same bytes' })),
  })),
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
/** The fields each outcome kind carries besides `kind`. */
const OUTCOME_FIELDS: Record<OutcomeKind, Record<string, object>> = {
  succeeded: {},
  failed: { exitCode: { type: 'integer', minimum: -255, maximum: 255 } },
  out_of_memory: { limitMiB: { type: 'integer', minimum: 0 } },
  timeout: { limitSeconds: { type: 'integer', minimum: 0 } },
  aborted: {},
  image_error: { message: { type: 'string', maxLength: 4096 } },
  output_error: { message: { type: 'string', maxLength: 4096 } },
  agent_error: { message: { type: 'string', maxLength: 4096 } },
};
/**
 * A tagged union written as "a known kind, then that kind's fields" (if/then), not as anyOf:
 * a validator reports a failed anyOf against its first branch, so a bad kind or a missing
 * exitCode came back as "kind: must be one of succeeded", naming neither the problem nor the kinds.
 */
const Outcome = Type.Unsafe<TaskOutcome>({
  type: 'object',
  required: ['kind'],
  properties: { kind: { type: 'string', enum: [...OUTCOME_KINDS] } },
  allOf: OUTCOME_KINDS.map((kind) => ({
    if: { properties: { kind: { const: kind } } },
    then: {
      properties: { kind: { const: kind }, ...OUTCOME_FIELDS[kind] },
      required: ['kind', ...Object.keys(OUTCOME_FIELDS[kind])],
      additionalProperties: false,
    },
  })),
});
const ReportBody = Type.Object(
  {
    outcome: Outcome,
    durationMs: Type.Integer({ minimum: 0, maximum: 10 * 365 * 86_400_000 }),
    usage: Type.Optional(Usage),
    outputs: Type.Optional(Type.Record(Type.String({ maxLength: 255 }), Type.Object({ sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }), size: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }))),
    log: Type.Optional(Log),
  },
  { additionalProperties: false },
);
const UploadsBody = Type.Object(
  {
    files: Type.Array(
      Type.Object({ sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }), size: Type.Integer({ minimum: 0 }) }, { additionalProperties: false }),
      { maxItems: 1000, description: "the task's outputs, by content" },
    ),
  },
  { additionalProperties: false },
);
const UploadTarget = Type.Object({
  sha256: Type.String(),
  present: Type.Boolean({ description: "the job's project holds it already: nothing to upload" }),
  url: Type.Optional(Type.String({ description: 'PUT the bytes here (to the blob store itself), with `headers`' })),
  headers: Type.Optional(Type.Record(Type.String(), Type.String(), { description: 'to send with the PUT exactly as given (signed)' })),
  expiresAt: Type.Optional(Type.String({ format: 'date-time' })),
});
const TransferUrlsBody = Type.Object(
  {
    expiresInSeconds: Type.Optional(
      Type.Integer({
        minimum: TRANSFER_URL_SECONDS.min, maximum: TRANSFER_URL_SECONDS.max,
        description: `how long the URLs are valid (default ${TRANSFER_URL_SECONDS.default}: a day); they open nothing once the task has ended anyway`,
      }),
    ),
  },
  { additionalProperties: false },
);
const TransferUrls = Type.Object({
  inputs: Type.String({ description: "path of the signed prefix for the task's inputs (and checkpoint): GET <server><inputs>/<sha256>" }),
  outputs: Type.String({ description: "path of the signed prefix for the task's outputs: PUT <server><outputs>/<sha256>" }),
  expiresAt: Type.String({ format: 'date-time' }),
});
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
    '/tasks/:id/uploads',
    {
      schema: {
        tags, params: TaskParams, body: UploadsBody,
        description:
          "Where to upload a live task's outputs: per file, present (nothing to do), or a pre-signed PUT to the blob store (its bytes are verified when the report names it), " +
          'or neither, when the store gives no URLs: PUT it to /tasks/{id}/blobs/{sha256}. Safe to repeat.',
        response: { 200: Type.Object({ files: Type.Array(UploadTarget) }) },
      },
    },
    async (req) => {
      const files = await inPart('body', s.agent.uploads(currentHost(req), req.params.id, req.body.files));
      return { files: files.map(({ expiresAt, ...f }) => (expiresAt === undefined ? f : { ...f, expiresAt: iso(expiresAt) })) };
    },
  );

  app.post(
    '/tasks/:id/transfer-urls',
    {
      schema: {
        tags, params: TaskParams, body: TransferUrlsBody,
        description:
          "Signed URL prefixes (paths under /transfer/v1, relative to the server) through which something holding no credential — a Kubernetes task pod — reads a live task's inputs and stores its outputs. " +
          'Prepend the server address they are to be used at. Signed by the server with its transfer key; valid until expiresAt and only while this host holds the task live. Safe to repeat.',
        response: { 200: TransferUrls },
      },
    },
    async (req) => {
      const r = await inPart('body', s.agent.transferUrls(currentHost(req), req.params.id, req.body.expiresInSeconds));
      return { ...r, expiresAt: iso(r.expiresAt) };
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
          description: "Upload an output of a live task (application/octet-stream, under its sha256); it joins the job's project.",
        },
      },
      async (req, reply) => receiveBlob(req, reply, (body, length) => s.agent.upload(currentHost(req), req.params.id, req.params.sha256, body, length)),
    );
    (uploads as Api).put(
      '/tasks/:id/checkpoint/:sha256',
      {
        schema: {
          tags, params: TaskBlobParams, response: { 201: BlobInfo, 200: BlobInfo },
          description: "Upload a tar of the task's /checkpoint (application/octet-stream, under its sha256) and make it the job's latest checkpoint; a later task resumes from it.",
        },
      },
      async (req, reply) => receiveBlob(req, reply, (body, length) => s.agent.checkpoint(currentHost(req), req.params.id, req.params.sha256, body, length)),
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
      const { host, replayed } = await inPart('body', s.enrollment.enroll(req.body, req.ip));
      return reply.code(replayed ? 200 : 201).send({ hostId: host.id, name: host.name, siteId: host.siteId, replayed });
    },
  );
}
