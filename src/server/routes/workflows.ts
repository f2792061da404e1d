import { Type } from '@sinclair/typebox';
import { inPart } from '../http-errors.js';
import { projectAccess, type Services } from '../services.js';
import { IdParams, PageQuery, ProjectParams, StringEnum, Strict } from '../schemas.js';
import { renderInstance, renderStep, renderWorkflow } from '../render.js';
import type { Api } from '../server.js';
import { IdemHeader, idempotencyKey } from './submit-response.js';
import { MAX_SPEC_BYTES } from '../../service/workflows.js';
import { notFound } from '../../domain/errors.js';
import { WORKFLOW_STATES } from '../../domain/workflow.js';

const Sha256 = Type.String({ pattern: '^[0-9a-f]{64}$' });
const WorkflowCreate = Type.Object(
  {
    source: Type.String({ minLength: 1, maxLength: MAX_SPEC_BYTES, description: 'The workflow spec, YAML or JSON (docs/workflows.md).' }),
    files: Type.Optional(Type.Record(Type.String({ minLength: 1, maxLength: 4096 }), Sha256, { description: 'Local paths the spec names ({file: PATH}) → sha256 of the blob uploaded for each.' })),
    resume: Type.Optional(Type.Integer({ minimum: 1, description: 'A workflow whose succeeded jobs this one reuses where the app version, args, env and inputs are unchanged.' })),
  },
  Strict,
);
const StepStatusSchema = StringEnum(['waiting', 'running', 'succeeded', 'failed', 'skipped', 'cancelled'] as const);
const InstanceStateSchema = StringEnum(['queued', 'running', 'succeeded', 'failed', 'cancelled'] as const);
const Count = Type.Integer({ minimum: 0 });
const Step = Type.Object({
  name: Type.String(), app: Type.String(), appVersion: Type.Union([Type.Integer(), Type.Null()]), status: StepStatusSchema, reason: Type.Union([Type.String(), Type.Null()]),
  needs: Type.Array(Type.String()), forEach: Type.Union([StringEnum(['list', 'sweep', 'files', 'values'] as const), Type.Null()]),
  jobs: Count, counts: Type.Object({ queued: Count, running: Count, succeeded: Count, failed: Count, cancelled: Count }), reused: Count, batchIds: Type.Array(Type.Integer()),
});
const Workflow = Type.Object({
  id: Type.Integer(), name: Type.String(), state: StringEnum(WORKFLOW_STATES), reason: Type.Union([Type.String(), Type.Null()]),
  onFailure: StringEnum(['stop', 'continue'] as const), resumedFrom: Type.Union([Type.Integer(), Type.Null()]),
  createdAt: Type.String(), updatedAt: Type.String(), endedAt: Type.Union([Type.String(), Type.Null()]), steps: Type.Array(Step),
});
const OutputFile = Type.Object({ name: Type.String(), sha256: Type.String(), size: Type.Integer() });
const Instance = Type.Object({
  item: Type.String(), jobId: Type.Integer(), state: InstanceStateSchema, reused: Type.Boolean(), reason: Type.Union([Type.String(), Type.Null()]),
  outputs: Type.Union([Type.Record(Type.String(), Type.Union([Type.Object({ files: Type.Array(OutputFile) }), Type.Object({ value: Type.Unknown() })])), Type.Null()]),
});
const WorkflowAnswer = Type.Object({ workflow: Workflow, replayed: Type.Optional(Type.Boolean()) });
const StepParams = Type.Object({ project: Type.String({ maxLength: 63 }), id: Type.Integer({ minimum: 1 }), step: Type.String({ maxLength: 63 }) });

export function registerWorkflowRoutes(app: Api, s: Services): void {
  const tags = ['workflows'];
  app.post(
    '/projects/:project/workflows',
    {
      bodyLimit: MAX_SPEC_BYTES * 2,
      schema: {
        tags, params: ProjectParams, headers: IdemHeader, body: WorkflowCreate, response: { 201: WorkflowAnswer, 200: WorkflowAnswer },
        description: 'Check a workflow spec (every problem with its line) and run it: each step is queued as soon as the outputs it takes exist.',
      },
    },
    async (req, reply) => {
      const access = await projectAccess(s, req, req.params.project, 'submit');
      const key = idempotencyKey(req.headers['idempotency-key']);
      const { workflow, replayed } = await inPart('body', s.workflows.create(access, req.body, key === null ? null : { key, body: req.body }));
      return reply.code(replayed ? 200 : 201).send({ workflow: renderWorkflow(workflow), replayed });
    },
  );

  app.post(
    '/projects/:project/workflows/validate',
    {
      bodyLimit: MAX_SPEC_BYTES * 2,
      schema: {
        tags, params: ProjectParams, body: WorkflowCreate,
        response: { 200: Type.Object({ name: Type.String(), steps: Type.Array(Type.Object({ name: Type.String(), needs: Type.Array(Type.String()) })) }) },
        description: 'Check a workflow spec as a submission would, without running it.',
      },
    },
    async (req) => {
      const access = await projectAccess(s, req, req.params.project, 'submit');
      const spec = await inPart('body', s.workflows.check(access, req.body));
      return { name: spec.name, steps: spec.steps.map((st) => ({ name: st.name, needs: st.needs })) };
    },
  );

  app.get(
    '/projects/:project/workflows',
    { schema: { tags, params: ProjectParams, querystring: PageQuery, response: { 200: Type.Object({ workflows: Type.Array(Workflow), nextCursor: Type.Union([Type.String(), Type.Null()]) }) } } },
    async (req) => {
      const access = await projectAccess(s, req, req.params.project, 'read');
      const { workflows, nextCursor } = await inPart('querystring', s.workflows.list(access, req.query.limit ?? 100, req.query.cursor));
      return { workflows: workflows.map(renderWorkflow), nextCursor };
    },
  );

  app.get('/projects/:project/workflows/:id', { schema: { tags, params: IdParams, response: { 200: WorkflowAnswer } } }, async (req) => {
    const access = await projectAccess(s, req, req.params.project, 'read');
    return { workflow: renderWorkflow(await s.workflows.get(access, req.params.id)) };
  });

  app.get(
    '/projects/:project/workflows/:id/steps/:step',
    {
      schema: {
        tags, params: StepParams,
        querystring: Type.Object({ offset: Type.Optional(Type.Integer({ minimum: 0 })), limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10_000 })) }, Strict),
        response: { 200: Type.Object({ step: Step, instances: Type.Array(Instance) }) },
        description: "One step's jobs: the fan-out item, job, state, whether it was reused, and its declared outputs (blob references and values).",
      },
    },
    async (req) => {
      const access = await projectAccess(s, req, req.params.project, 'read');
      const w = await s.workflows.get(access, req.params.id);
      const spec = w.spec.steps.find((st) => st.name === req.params.step);
      if (!spec) throw notFound(`step "${req.params.step}" of workflow ${w.id}`);
      const p = w.progress.steps[spec.name]!;
      const offset = req.query.offset ?? 0;
      return { step: renderStep(spec, p), instances: p.instances.slice(offset, offset + (req.query.limit ?? 1000)).map(renderInstance) };
    },
  );

  for (const action of ['retry', 'cancel'] as const) {
    app.post(
      `/projects/:project/workflows/:id/${action}`,
      {
        schema: {
          tags, params: IdParams, response: { 200: WorkflowAnswer },
          description: action === 'retry'
            ? 'Run again the steps that failed, were cancelled or skipped, reusing every job that succeeded.'
            : "Cancel the workflow's queued and running jobs; steps not started are skipped.",
        },
      },
      async (req) => {
        const access = await projectAccess(s, req, req.params.project, 'submit');
        return { workflow: renderWorkflow(await s.workflows[action](access, req.params.id)) };
      },
    );
  }
}
