import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { chromium, type Browser, type Page } from 'playwright-core';
import { dashboardDir, loadDashboardFiles } from '../../src/server/routes/dashboard.js';
import { CHROMIUM, CHROMIUM_ARGS, chromiumSuite } from '../helpers/chromium.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { BIG, ok } from '../api/protocol-grid.js';
import { createApp, sha256, stopAfterStreams, OCTET } from '../api/util.js';
import { newCredential } from '../../src/service/credentials.js';
import { randomUUID } from 'node:crypto';

/**
 * The web dashboard (docs/dashboard.md): its static route (public, strict headers, only known
 * files), and in Debian's chromium: sign-in, every page without console errors, a batch that
 * progresses on the page through the event stream, project isolation, a screenshot.
 */

/** How long a change may take to reach the page through the event stream (well under the 30 s poll). */
const LIVE = 8_000;
const run = promisify(execFile);
const ARTIFACTS = join(new URL('../../..', import.meta.url).pathname, 'test-artifacts');

/** A raw GET, so that the path reaches the server exactly as written (fetch would resolve `..`). */
function rawGet(url: string, path: string): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method: 'GET' }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the dashboard route', () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer();
  });
  after(async () => {
    await s.stop();
  });

  test('serves its files without a token, with a strict CSP and nosniff', async () => {
    for (const [path, type] of [['/dashboard/', 'text/html'], ['/dashboard/app.js', 'text/javascript'], ['/dashboard/api.js', 'text/javascript'], ['/dashboard/dashboard.css', 'text/css'], ['/dashboard/icon.svg', 'image/svg+xml']] as const) {
      const r = await s.call('GET', path, { token: null });
      assert.equal(r.status, 200, `${path}: ${r.text}`);
      assert.ok(r.headers.get('content-type')?.startsWith(type), `${path}: ${r.headers.get('content-type')}`);
      assert.match(r.headers.get('content-security-policy') ?? '', /^default-src 'self'(;|$)/);
      assert.doesNotMatch(r.headers.get('content-security-policy') ?? '', /unsafe-inline|unsafe-eval/);
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    }
    const index = await s.call('GET', '/dashboard/', { token: null });
    assert.doesNotMatch(index.text, /<script>|<script(?![^>]*\bsrc=)[^>]*>|\sstyle=|\son[a-z]+=/i, 'no inline script, style or handler');
    assert.doesNotMatch(index.text, /https?:\/\//, 'no external URL');
    const bare = await rawGet(s.url, '/dashboard');
    assert.equal(bare.status, 308);
    assert.equal(bare.headers.location, '/dashboard/');
  });

  test('serves only its known files: no traversal, no listing', async () => {
    for (const path of [
      '/dashboard/../package.json', '/dashboard/..%2Fpackage.json', '/dashboard/%2e%2e%2f%2e%2e%2fpackage.json', '/dashboard/..%2f..%2f..%2f..%2fpackage.json',
      '/dashboard/%2e%2e/%2e%2e/%2e%2e/%2e%2e/package.json', '/dashboard/..\\..\\package.json', '/dashboard/app.js%00.html', '/dashboard/.',
      '/dashboard/..', '/dashboard/nope.js', '/dashboard/app.ts', '/dashboard/x/app.js', '/dashboard//etc/passwd', '/dashboard/%2Fetc%2Fpasswd',
      '/dashboard/index.html/', '/dashboard/APP.JS',
    ]) {
      const r = await rawGet(s.url, path);
      assert.ok(r.status === 404 || r.status === 400 || (r.status === 200 && path === '/dashboard/..' && /<title>boxgrid/.test(r.body)), `${path}: ${r.status} ${r.body.slice(0, 80)}`);
      assert.doesNotMatch(r.body, /"name": "boxgrid"|root:x:0|registerDashboardRoutes/, `${path} leaked a file`);
    }
    // Known files only; the directory itself answers with the page, never a listing.
    const dir = await rawGet(s.url, '/dashboard/');
    assert.match(dir.body, /<title>boxgrid dashboard<\/title>/);
    assert.doesNotMatch(dir.body, /Index of|app\.ts/);
  });

  test('its scripts parse, and none of its files refers to another origin', async () => {
    const dir = dashboardDir();
    assert.ok(dir, 'src/server/dashboard/ is found');
    const names = [...loadDashboardFiles(dir).keys()];
    assert.deepEqual(names.sort(), ['api.js', 'app.js', 'dashboard.css', 'icon.svg', 'index.html']);
    for (const name of names) {
      if (name.endsWith('.js')) await run(process.execPath, ['--check', join(dir, name)]);
      const text = await readFile(join(dir, name), 'utf8');
      assert.doesNotMatch(text.replace(/http:\/\/www\.w3\.org\/2000\/svg/g, ''), /(https?:)?\/\/[a-z0-9.-]+\.[a-z]{2,}\//i, `${name} refers to another origin`);
      assert.doesNotMatch(text, /innerHTML|eval\(|new Function|localStorage|document\.cookie/, `${name}: no HTML from strings, eval, localStorage or cookies`);
    }
  });

  test('is not in /openapi.json and the API still wants a token', async () => {
    const r = await s.call('GET', '/openapi.json', { token: null });
    assert.ok(!Object.keys(r.body.paths).some((p) => p.startsWith('/dashboard')));
    assert.equal((await s.call('GET', '/v1/projects', { token: null })).status, 401);
  });
});

const suite = chromiumSuite();

describe('the dashboard in chromium', { skip: suite.skip }, () => {
  let s: TestServer;
  let browser: Browser;
  let page: Page;
  const errors: string[] = [];
  /** Errors expected in a step (the browser logs each refused request as a console error). */
  let allowed: RegExp | null = null;

  before(async () => {
    s = await startTestServer({ timing: { leaseSeconds: 60, heartbeatSeconds: 7, idlePollSeconds: 4, sweepSeconds: 3600 } });
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
    const context = await browser.newContext({ viewport: { width: 1366, height: 860 }, acceptDownloads: true });
    page = await context.newPage();
    page.setDefaultTimeout(10_000);
    page.on('console', (m) => {
      if (m.type() === 'error' && !(allowed && allowed.test(m.text()))) errors.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  });
  after(async () => {
    await browser?.close();
    if (s) await stopAfterStreams(s);
  });

  const noErrors = (what: string) => assert.deepEqual(errors.splice(0), [], `${what}: errors in the page`);
  const count = (name: string) => page.locator(`[data-count="${name}"] .value`);

  async function host() {
    const t = await s.call('POST', '/v1/enroll-tokens', { body: {} });
    const credential = newCredential('host');
    const e = await s.call('POST', '/agent/v1/enroll', {
      token: null,
      body: { enrollToken: t.body.token, name: 'lab-1', resources: BIG, platform: 'linux/amd64', credentialId: credential.id, credentialHash: credential.secretHash.toString('hex') },
    });
    assert.equal(e.status, 201, e.text);
    const token = credential.token;
    const call = (method: string, path: string, body?: unknown) => s.call(method, `/agent/v1${path}`, { token, ...(body === undefined ? {} : { body }) });
    return {
      claim: async (maxTasks: number) => {
        const r = await call('POST', '/work', { requestId: randomUUID(), free: BIG, maxTasks, runtimes: ['docker'] });
        assert.equal(r.status, 200, r.text);
        return r.body.tasks as Array<{ taskId: number; jobId: number }>;
      },
      heartbeat: (tasks: unknown[]) => call('POST', '/heartbeat', { tasks }),
      upload: (taskId: number, data: Buffer) => s.call('PUT', `/agent/v1/tasks/${taskId}/blobs/${sha256(data)}`, { token, raw: data as unknown as BodyInit, headers: { ...OCTET } }),
      report: (taskId: number, body: unknown) => call('POST', `/tasks/${taskId}/result`, body),
    };
  }

  test('a wrong token is refused with a clear message', async () => {
    await page.goto(`${s.url}/dashboard/`);
    await page.locator('#signin-form').waitFor();
    noErrors('sign-in page');
    allowed = /status of 401/;
    await page.fill('#token', 'bgu_0000000000000000_not-a-real-token');
    await page.click('#signin-form button[type=submit]');
    await page.locator('#signin-error').waitFor({ state: 'visible' });
    assert.match(await page.textContent('#signin-error') ?? '', /not accepted \(401 unauthenticated\)/);
    allowed = null;
    errors.splice(0);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('boxgrid.token')), null);
    assert.ok(!page.url().includes('bgu_'));
  });

  test('signs in, follows a batch live through the event stream, and shows every page', async () => {
    await createApp(s, 'default', 'mc', { command: ['/bin/mc'] });
    await page.fill('#token', s.adminToken);
    await page.click('#signin-form button[type=submit]');
    await page.locator('#nav').waitFor({ state: 'visible' });
    await page.locator('#live.live-on').waitFor({ timeout: 10_000 });
    assert.equal(await page.evaluate(() => sessionStorage.getItem('boxgrid.token')), s.adminToken);
    assert.ok(!page.url().includes(s.adminToken));
    assert.equal((await page.context().cookies()).length, 0);
    await assertText(count('queued'), '0');
    noErrors('overview');

    // A batch appears on the open page without a reload, through the event stream: the batch
    // pages poll only every 30 s, in case the stream drops (the overview samples every 5 s).
    await page.goto(`${s.url}/dashboard/#/batches`);
    await assertText(page.locator('#view'), /No batches yet/);
    const sub = await s.call('POST', '/v1/projects/default/batches', { body: { app: 'mc', labels: { run: 'ui' }, template: { args: ['--seed', '{seed}'] }, sweep: { seed: { from: 1, to: 6 } } } });
    assert.equal(sub.status, 201, sub.text);
    const batchId = sub.body.batch.id as number;
    await assertText(page.locator(`tr[data-batch="${batchId}"]`), /run=ui/, LIVE);

    await page.goto(`${s.url}/dashboard/#/batches/${batchId}`);
    await assertText(page.locator('#batch-progress-text'), /0 of 6 finished/);
    const h = await host();
    const tasks = await h.claim(3);
    assert.equal(tasks.length, 3);
    await assertText(page.locator('#batch-counts [data-count="running"] .value'), '3', LIVE);
    const first = tasks[0]!;
    const out = Buffer.from('pi ~ 3.14159\n');
    assert.equal((await h.upload(first.taskId, out)).status, 201);
    await h.heartbeat(tasks.map((t) => ({ taskId: t.taskId, log: { offset: 0, text: `seed of job ${t.jobId}: running\n` } })));
    for (const t of tasks) {
      const r = await h.report(t.taskId, { ...ok, outputs: t === first ? { 'result.txt': { sha256: sha256(out), size: out.length } } : {} });
      assert.equal(r.status, 200, r.text);
    }
    await assertText(page.locator('#batch-progress-text'), /3 of 6 finished \(50%\)/, LIVE);
    assert.equal(await page.locator('#batch-counts [data-count="succeeded"] .value').textContent(), '3');
    noErrors('batch page');

    // Jobs, filtered; then one job with its tasks, log tail and output.
    await page.goto(`${s.url}/dashboard/#/jobs?state=succeeded&batch=${batchId}`);
    await page.locator('tr[data-job]').first().waitFor();
    assert.equal(await page.locator('tr[data-job]').count(), 3);
    await page.selectOption('#job-filters select[name=state]', 'queued');
    await page.click('#job-filters button[type=submit]');
    await page.waitForFunction(() => location.hash.includes('state=queued'));
    await page.waitForFunction(() => document.querySelectorAll('tr[data-job]').length === 3 && [...document.querySelectorAll('tr[data-job] .state')].every((e) => e.textContent === 'queued'));
    noErrors('jobs page');

    await page.goto(`${s.url}/dashboard/#/jobs/${first.jobId}`);
    await page.locator('#outputs button').waitFor();
    assert.match(await page.textContent('#log') ?? '', new RegExp(`seed of job ${first.jobId}: running`));
    assert.match(await page.textContent('#view') ?? '', /succeeded/);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#outputs button')]);
    assert.equal(download.suggestedFilename(), 'result.txt');
    noErrors('job page');

    for (const [hash, expect] of [['#/apps', /mc/], ['#/batches', /ui|run=ui/], ['#/hosts', /lab-1/]] as const) {
      await page.goto(`${s.url}/dashboard/${hash}`);
      await assertText(page.locator('#view'), expect);
      noErrors(hash);
    }
    assert.match(await page.textContent('#view') ?? '', /online/);

    // Finish the batch while the overview watches, and keep its picture.
    await page.goto(`${s.url}/dashboard/`);
    await assertText(count('succeeded'), '3');
    const rest = await h.claim(3);
    await assertText(count('running'), '3', LIVE);
    for (const t of rest) await h.report(t.taskId, ok);
    await assertText(count('succeeded'), '6', LIVE);
    await assertText(count('queued'), '0');
    assert.match(await page.textContent('#view') ?? '', /hosts online/);
    await page.waitForTimeout(5_500); // one more sample for the chart
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, 'dashboard-overview.png'), fullPage: true });
    noErrors('overview at the end');

    // A job submitted alone, not in a batch, is counted too: on the overview and the apps page.
    const single = await s.call('POST', '/v1/projects/default/jobs', { body: { app: 'mc' } });
    assert.equal(single.status, 201, single.text);
    await assertText(count('queued'), '1', LIVE);
    assert.equal(await count('succeeded').textContent(), '6');
    assert.equal(await count('finished').textContent(), '6');
    await page.goto(`${s.url}/dashboard/#/apps`);
    const mc = page.locator('#view tr').filter({ hasText: 'sci/mc:1' }).locator('td');
    await assertText(mc.nth(6), '1');
    assert.equal(await mc.nth(7).textContent(), '0');
    assert.equal(await mc.nth(8).textContent(), '6');
    noErrors('apps page with a job outside any batch');
  });

  test("a viewer of another project sees none of this project's jobs", async () => {
    const viewer = await s.userWithRole('vic', 'other', 'viewer');
    await page.click('#signout');
    await page.locator('#signin-form').waitFor({ state: 'visible' });
    await page.fill('#token', viewer);
    await page.click('#signin-form button[type=submit]');
    await page.locator('#nav').waitFor({ state: 'visible' });
    assert.deepEqual(await page.locator('#project option').allTextContents(), ['other']);
    await page.goto(`${s.url}/dashboard/#/jobs`);
    await assertText(page.locator('#view'), /No jobs match/);
    await page.goto(`${s.url}/dashboard/#/hosts`);
    await assertText(page.locator('#view'), /for operators/);
    noErrors('viewer pages');
    // Asking for the default project's job 1 by URL: the API says 404, the page says so.
    allowed = /status of 404/;
    await page.evaluate(() => sessionStorage.setItem('boxgrid.project', 'default'));
    await page.reload();
    await page.locator('#nav').waitFor({ state: 'visible' });
    assert.deepEqual(await page.locator('#project option').allTextContents(), ['other']);
    await page.goto(`${s.url}/dashboard/#/jobs/1`);
    await page.locator('#banner').waitFor({ state: 'visible' });
    assert.match(await page.textContent('#banner') ?? '', /not_found/);
    assert.doesNotMatch(await page.textContent('#view') ?? '', /seed/);
    allowed = null;
    errors.splice(0);
  });
});

async function assertText(loc: import('playwright-core').Locator, expect: string | RegExp, timeout = 10_000): Promise<void> {
  const deadline = Date.now() + timeout;
  let last = '';
  while (Date.now() < deadline) {
    last = (await loc.textContent({ timeout: Math.max(1, deadline - Date.now()) }).catch(() => '')) ?? '';
    if (typeof expect === 'string' ? last.trim() === expect : expect.test(last)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`expected ${expect} within ${timeout} ms, saw ${JSON.stringify(last.slice(0, 200))}`);
}
