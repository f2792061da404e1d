import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { BoxgridClient } from '../../src/client/client.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { runCli } from './run-cli.js';

/** `boxgrid workflow …` against a real server; no agent runs, so jobs stay queued until cancelled. */
describe('boxgrid workflow', () => {
  let s: TestServer;
  let env: Record<string, string>;
  let client: BoxgridClient;
  let dir: string;
  before(async () => {
    s = await startTestServer();
    env = { BOXGRID_DATA: s.dataDir, HOME: await mkdtemp(join(tmpdir(), 'boxgrid-home-')) };
    client = new BoxgridClient({ url: s.url, token: s.adminToken });
    // Any image string will do: no agent runs these.
    await client.createApp('default', { name: 'tool', image: 'busybox:1.36', command: ['/bin/sh', '-c'] });
    dir = await mkdtemp(join(tmpdir(), 'boxgrid-wf-'));
  });
  after(() => s.stop());

  const BAD = [
    'name: bad',
    'steps:',
    '  a:',
    '    app: tool',
    '    retries: 500',
    '    outputs:',
    '      v: {value: v.txt, type: nummber}',
    '  b:',
    '    app: tool',
    '    inputs:',
    '      x: steps.nowhere.outputs.y',
    '    forEach: {list: [1, 2], as: 3x}',
    '',
  ].join('\n');

  test('validate and run print every problem of a spec as FILE:line:col, and exit 1', async () => {
    const file = join(dir, 'bad.yaml');
    await writeFile(file, BAD);
    for (const cmd of ['validate', 'run']) {
      const r = await runCli(['workflow', cmd, file], env);
      assert.equal(r.code, 1, `${cmd}: ${r.stdout}${r.stderr}`);
      const lines = r.stderr.trim().split('\n').filter((l) => l.startsWith(`${file}:`));
      assert.ok(lines.length >= 4, `${cmd}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`^${file}:5:\\d+: steps\\.a\\.retries: `, 'm'));
      assert.match(r.stderr, new RegExp(`^${file}:7:\\d+: steps\\.a\\.outputs\\.v\\.type: .*nummber`, 'm'));
      assert.match(r.stderr, new RegExp(`^${file}:11:\\d+: steps\\.b\\.inputs\\.x: .*nowhere`, 'm'));
      assert.match(r.stderr, new RegExp(`^${file}:12:\\d+: steps\\.b\\.forEach\\.as: `, 'm'));
      assert.match(r.stderr, /\d+ problems in /);
    }
    assert.equal((await client.listWorkflows('default')).workflows.length, 0, 'nothing was started');
  });

  test('the server\'s own checks (no such app, a file that is not there) come with their lines too', async () => {
    const file = join(dir, 'apps.yaml');
    await writeFile(file, 'steps:\n  a:\n    app: nosuch\n');
    const r = await runCli(['workflow', 'run', file], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^${file}:3:10: steps\\.a\\.app: no app named "nosuch"`, 'm'));
    const missing = join(dir, 'missing.yaml');
    await writeFile(missing, 'steps:\n  a:\n    app: tool\n    inputs:\n      d: {file: ./not-here.txt}\n');
    const m = await runCli(['workflow', 'validate', missing], env);
    assert.equal(m.code, 1);
    assert.match(m.stderr, new RegExp(`^${missing}:5:\\d+: steps\\.a\\.inputs\\.d: cannot read the local file .*not-here\\.txt \\(ENOENT\\)`, 'm'));
  });

  let id = 0;
  const sha = createHash('sha256').update('hello workflows\n').digest('hex');

  test('run uploads a {file: ./data.txt} input (relative to the spec) and the step\'s job takes its digest', async () => {
    await writeFile(join(dir, 'data.txt'), 'hello workflows\n');
    const file = join(dir, 'ok.yaml');
    await writeFile(file, [
      'name: two-steps',
      'steps:',
      '  a:',
      '    app: tool',
      '    args: ["wc -l < /in/data.txt > /out/n.txt"]',
      '    inputs:',
      '      data.txt: {file: ./data.txt}',
      '    outputs:',
      '      n: {value: n.txt, type: number}',
      '  b:',
      '    app: tool',
      '    params: {n: steps.a.outputs.n}',
      '    args: ["echo {n}"]',
      '',
    ].join('\n'));
    const v = await runCli(['workflow', 'validate', file], env);
    assert.equal(v.code, 0, v.stderr);
    assert.match(v.stdout, /ok: workflow "two-steps", 2 steps: a, b \(after a\)/);

    const r = await runCli(['workflow', 'run', file, '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const w = JSON.parse(r.stdout);
    id = w.id;
    assert.equal(w.name, 'two-steps');
    assert.equal(w.state, 'running');
    const human = await runCli(['workflow', 'run', file], env);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^started workflow \d+ \(two-steps\): 2 steps\n {2}follow it: boxgrid workflow status \d+/);

    const inst = await waitFor(async () => (await client.getWorkflowStep('default', id, 'a')).instances.find((i) => i.jobId > 0));
    const { job } = await client.getJob('default', inst.jobId);
    assert.equal(job.inputs['data.txt'], sha);
    assert.equal((await s.call('GET', `/v1/projects/default/blobs/${sha}`)).text, 'hello workflows\n');
  });

  test('status shows the step table, --json the workflow, --step a step\'s jobs', async () => {
    const t = await runCli(['workflow', 'status', String(id)], env);
    assert.equal(t.code, 0, t.stderr);
    assert.match(t.stdout, new RegExp(`^workflow ${id} \\(two-steps\\): running`));
    assert.match(t.stdout, /^STEP\s+STATUS\s+JOBS\s+QUEUED\s+RUNNING\s+SUCCEEDED\s+FAILED\s+CANCELLED\s+REUSED\s+REASON$/m);
    assert.match(t.stdout, /^a\s+running\s+1\s+1\s+0\s+0\s+0\s+0\s+0\s+-$/m);
    assert.match(t.stdout, /^b\s+waiting\s+0\s/m);

    const j = await runCli(['workflow', 'status', String(id), '--json'], env);
    assert.equal(j.code, 0, j.stderr);
    const w = JSON.parse(j.stdout);
    assert.deepEqual(w.steps.map((st: { name: string; status: string }) => [st.name, st.status]), [['a', 'running'], ['b', 'waiting']]);

    const step = await runCli(['workflow', 'status', String(id), '--step', 'a'], env);
    assert.equal(step.code, 0, step.stderr);
    assert.match(step.stdout, /^ITEM\s+JOB\s+STATE\s+REUSED\s+OUTPUTS$/m);
    assert.match(step.stdout, /^-\s+\d+\s+queued\s+no\s+-$/m);
    const none = await runCli(['workflow', 'status', String(id), '--step', 'zzz'], env);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /step "zzz" of workflow \d+ not found/);
    const bad = await runCli(['workflow', 'status', 'abc'], env);
    assert.equal(bad.code, 2);
  });

  test('cancel cancels its jobs; retry runs it again; retry --wait follows it to its end', async () => {
    const c = await runCli(['workflow', 'cancel', String(id)], env);
    assert.equal(c.code, 0, c.stderr);
    assert.match(c.stdout, new RegExp(`^workflow ${id} cancelled`));
    const { instances } = await client.getWorkflowStep('default', id, 'a');
    const { job } = await client.getJob('default', instances[0]!.jobId);
    assert.equal(job.state, 'cancelled');
    assert.equal((await client.getWorkflow('default', id)).workflow.state, 'cancelled');

    const r = await runCli(['workflow', 'retry', String(id)], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`^workflow ${id} is running again`));
    const w = JSON.parse((await runCli(['workflow', 'status', String(id), '--json'], env)).stdout);
    assert.equal(w.state, 'running');
    // The loop queues step a again: a new job, not the cancelled one.
    const again = await waitFor(async () => (await client.getWorkflowStep('default', id, 'a')).instances.find((i) => i.jobId > 0 && i.jobId !== job.id));
    assert.equal((await client.getJob('default', again.jobId)).job.state, 'queued');

    // A second retry while it runs is refused; --wait follows it until someone cancels it.
    const twice = await runCli(['workflow', 'retry', String(id)], env);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /still running/);
    await client.cancelWorkflow('default', id);
    const follow = runCli(['workflow', 'retry', String(id), '--wait'], env);
    await waitFor(async () => (s.ctx.events.subscribers() > 0 ? true : undefined));
    await waitFor(async () => ((await client.getWorkflow('default', id)).workflow.steps[0]!.status === 'running' ? true : undefined));
    await client.cancelWorkflow('default', id);
    const f = await follow;
    assert.equal(f.code, 1, f.stderr);
    assert.match(f.stdout, new RegExp(`^workflow ${id} is running again`));
    assert.match(f.stdout, /^ {2}a: cancelled/m);
    assert.match(f.stdout, new RegExp(`^workflow ${id} \\(two-steps\\): cancelled`, 'm'));
  });

  test('list shows the project\'s workflows, newest first', async () => {
    const l = await runCli(['workflow', 'list'], env);
    assert.equal(l.code, 0, l.stderr);
    assert.match(l.stdout, /^ID\s+NAME\s+STATE\s+STEPS\s+CREATED\s+REASON$/m);
    assert.match(l.stdout, new RegExp(`^${id}\\s+two-steps\\s+cancelled\\s+0/2 done`, 'm'));
    const j = JSON.parse((await runCli(['--json', 'workflow', 'list'], env)).stdout) as Array<{ id: number }>;
    assert.ok(j.length >= 2);
    assert.ok(j[0]!.id > j[1]!.id);
  });
});

async function waitFor<T>(probe: () => Promise<T | undefined>, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 50));
  }
}
