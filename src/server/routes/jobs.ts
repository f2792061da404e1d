import { inPart } from '../http-errors.js';
import { Type } from '@sinclair/typebox';
import { invalid } from '../../domain/errors.js';
import { projectAccess, type Services } from '../services.js';
import { Counts, Explanation, IdParams, Job, JobCreate, JobListQuery, Name, ProjectParams, SubmitResponse, Task, TaskLog } from '../schemas.js';
import { renderJob, renderTask } from '../render.js';
import type { Api } from '../server.js';
import { IdemHeader, idempotencyKey, renderSubmit } from './submit-response.js';


export function registerJobRoutes(app: Api, s: Services): void {
  const tags = ['jobs'];
  app.post(
    '/projects/:project/jobs',
    { schema: { tags, params: ProjectParams, headers: IdemHeader, body: JobCreate, response: { 201: SubmitResponse, 200: SubmitResponse } } },
    async (req, reply) => {
      const access = await projectAccess(s, req, req.params.project, 'submit');
      const key = idempotencyKey(req.headers['idempotency-key']);
      const result = await inPart('body', s.jobs.submitJob(access, req.body, key === null ? null : { key, body: req.body }));
      return reply.code(result.replayed ? 200 : 201).send(renderSubmit(result));
    },
  );

  app.get(
    '/projects/:project/jobs',
    { schema: { tags, params: ProjectParams, querystring: JobListQuery, response: { 200: Type.Object({ jobs: Type.Array(Job), nextCursor: Type.Union([Type.String(), Type.Null()]) }) } } },
    async (req) => {
      const access = await projectAccess(s, req, req.params.project, 'read');
      const q = req.query;
      let label: { key: string; value: string } | undefined;
      if (q.label !== undefined) {
        const eq = q.label.indexOf('=');
        if (eq <= 0) throw invalid('querystring/label', 'must be key=value');
        label = { key: q.label.slice(0, eq), value: q.label.slice(eq + 1) };
      }
      const { jobs, nextCursor } = await inPart('querystring', s.jobs.list(
        access,
        { ...(q.state && { state: q.state }), ...(q.app && { appName: q.app }), ...(q.batch && { batchId: q.batch }), ...(label && { label }) },
        q.limit ?? 100,
        q.cursor,
      ));
      return { jobs: jobs.map(renderJob), nextCursor };
    },
  );

  const CountsQuery = Type.Object({ app: Type.Optional(Name) }, { additionalProperties: false });
  app.get(
    '/projects/:project/counts',
    {
      schema: {
        tags, params: ProjectParams, querystring: CountsQuery, response: { 200: Type.Object({ counts: Counts }) },
        description: "The project's jobs by state: every job, submitted alone or in a batch (`app`: only that app's).",
      },
    },
    async (req) => {
      const access = await projectAccess(s, req, req.params.project, 'read');
      return { counts: await s.jobs.counts(access, req.query.app) };
    },
  );

  app.get(
    '/projects/:project/jobs/:id',
    { schema: { tags, params: IdParams, response: { 200: Type.Object({ job: Job, tasks: Type.Array(Task) }) } } },
    async (req) => {
      const access = await projectAccess(s, req, req.params.project, 'read');
      const { job, tasks } = await s.jobs.get(access, req.params.id);
      return { job: renderJob(job), tasks: tasks.map(renderTask) };
    },
  );

  const LogQuery = Type.Object({ after: Type.Optional(Type.Integer({ minimum: 0, description: 'the `end` of the previous answer' })) }, { additionalProperties: false });
  app.get(
    '/projects/:project/jobs/:id/log',
    { schema: { tags, params: IdParams, querystring: LogQuery, description: "The output of the job's latest task.", response: { 200: TaskLog } } },
    async (req) => {
      const access = await projectAccess(s, req, req.params.project, 'read');
      return s.jobs.log(access, { jobId: req.params.id }, req.query.after);
    },
  );
  app.get(
    '/projects/:project/tasks/:id/log',
    { schema: { tags, params: IdParams, querystring: LogQuery, description: "A task's output: the stored tail, from `after` on.", response: { 200: TaskLog } } },
    async (req) => {
      const access = await projectAccess(s, req, req.params.project, 'read');
      return s.jobs.log(access, { taskId: req.params.id }, req.query.after);
    },
  );

  app.get(
    '/projects/:project/jobs/:id/explain',
    {
      schema: {
        tags, params: IdParams, response: { 200: Explanation },
        description: 'Why the job is not running: no host can fit it (and which resource, label, platform or cool-down), hosts busy, backoff, deadline; each reason with a stable code.',
      },
    },
    async (req) => {
      const access = await projectAccess(s, req, req.params.project, 'read');
      return s.explain.explain(access, req.params.id);
    },
  );

  app.post('/projects/:project/jobs/:id/cancel', { schema: { tags, params: IdParams, response: { 200: Type.Object({ job: Job }) } } }, async (req) => {
    const access = await projectAccess(s, req, req.params.project, 'submit');
    return { job: renderJob(await s.jobs.cancel(access, req.params.id)) };
  });
}
