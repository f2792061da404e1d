import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AgentProcess } from '../helpers/agent-process.js';
import { dockerSuite, ensureTestImage } from '../helpers/docker.js';
import { eventually, startGrid, type TestGrid } from '../helpers/grid.js';
import { runCli } from './run-cli.js';

const suite = await dockerSuite();

describe('the README flow: server, agent, a batch with input files, outputs fetched', { skip: suite.skip }, () => {
  let grid: TestGrid;
  let dir: string;
  let agent: AgentProcess;
  let env: Record<string, string>;

  before(async () => {
    const image = await ensureTestImage();
    grid = await startGrid();
    dir = await mkdtemp(join(tmpdir(), 'boxgrid-cli-agent-'));
    env = { BOXGRID_URL: grid.server.url, BOXGRID_TOKEN: grid.server.adminToken, HOME: dir };
    const app = await runCli(['app', 'create', 'words', '--image', image, '--command', '["sh","-c"]', '--cores', '0.5', '--memory', '64Mi'], env);
    assert.equal(app.code, 0, app.stderr);
  });
  after(async () => {
    await agent?.kill('SIGKILL');
    await grid?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('enroll-token create → agent → submit --input → watch → job → logs → fetch', async () => {
    const token = await runCli(['enroll-token', 'create', '--uses', '1', '--json'], env);
    assert.equal(token.code, 0, token.stderr);
    agent = new AgentProcess(['--server', grid.server.url, '--work-dir', join(dir, 'agent'), '--cpus', '1', '--memory', '512Mi', '--disk', '1Gi']);
    agent.start(['--enroll-token', JSON.parse(token.stdout).token]);

    await writeFile(join(dir, 'poem.txt'), 'so much depends\nupon\na red wheel\nbarrow\n');
    const submit = await runCli(['submit', 'words', '--count', '3', '--input', `poem.txt=${join(dir, 'poem.txt')}`, '--json', '--',
      'wc -l < /in/poem.txt > /out/lines.txt; echo counted; echo 0.5 > /out/.boxgrid-progress'], env);
    assert.equal(submit.code, 0, submit.stderr);
    const batchId = JSON.parse(submit.stdout).batch.id as number;

    const watch = await runCli(['watch', String(batchId)], env);
    assert.equal(watch.code, 0, `watch: ${watch.stderr}\nagent: ${agent.output}`);

    const jobs = await runCli(['jobs', '--batch', String(batchId), '--json'], env);
    const jobId = JSON.parse(jobs.stdout)[0].id as number;
    const job = await runCli(['job', String(jobId)], env);
    assert.match(job.stdout, /succeeded/);
    assert.match(job.stdout, /outputs: +lines\.txt \(2 B\)/);

    const logs = await runCli(['logs', String(jobId)], env);
    assert.equal(logs.code, 0, logs.stderr);
    assert.equal(logs.stdout, 'counted\n');

    const out = join(dir, 'results');
    const fetched = await runCli(['fetch', String(jobId), '--out', out], env);
    assert.equal(fetched.code, 0, fetched.stderr);
    assert.match(fetched.stdout, /fetched 1 file/);
    assert.equal(fetched.stderr, '', 'no progress bar when stderr is not a terminal');
    assert.deepEqual(await readdir(out), ['lines.txt'], 'the progress file is not an output');
    assert.equal(await readFile(join(out, 'lines.txt'), 'utf8'), '4\n');

    const hosts = await runCli(['hosts'], env);
    assert.match(hosts.stdout, /^\s*\d+\s+\S+\s+default\s+active\s+1\s+512Mi/m);
  });

  test('logs --follow prints output as a running task writes it, and ends with the task', async () => {
    const submit = await runCli(['submit', 'words', '--json', '--', 'echo one; sleep 2; echo two'], env);
    const jobId = JSON.parse(submit.stdout).jobIds[0] as number;
    await eventually(async () => ((await grid.admin.getJob('default', jobId)).tasks.length > 0 ? true : undefined), 'the job to start');
    const follow = await runCli(['logs', String(jobId), '--follow', '--interval', '200'], env);
    assert.equal(follow.code, 0, follow.stderr);
    assert.equal(follow.stdout, 'one\ntwo\n');
    // --json with --follow: a JSON object a line, whose pieces join into the same output, the last one done.
    const lines = await runCli(['logs', String(jobId), '--follow', '--json', '--interval', '200'], env);
    assert.equal(lines.code, 0, lines.stderr);
    const pieces = lines.stdout.trim().split('\n').map((l) => JSON.parse(l) as { text: string; done: boolean });
    assert.equal(pieces.map((p) => p.text).join(''), 'one\ntwo\n');
    assert.equal(pieces.at(-1)!.done, true);
  });

  test('fetch of a job that has not succeeded says why and what to do', async () => {
    const submit = await runCli(['submit', 'words', '--json', '--', 'exit 9'], env);
    const jobId = JSON.parse(submit.stdout).jobIds[0] as number;
    await eventually(async () => ((await grid.admin.getJob('default', jobId)).job.state === 'queued' ? undefined : true), 'the job to start');
    const r = await runCli(['fetch', String(jobId), '--out', join(dir, 'none')], env);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`job ${jobId} is (running|queued|failed)`));
  });

  test('an agent that is not enrolled says how to enrol', async () => {
    const r = await runCli(['agent', '--server', grid.server.url, '--work-dir', join(dir, 'fresh')], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /not enrolled yet/);
    assert.match(r.stderr, /boxgrid enroll-token create/);
  });
});
