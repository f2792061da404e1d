import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { startTestServer } from '../helpers/server.js';

test('shutdown ends open event streams instead of waiting for them forever', async () => {
  const s = await startTestServer();
  try {
    const res = await fetch(`${s.url}/v1/projects/default/events`, { headers: { authorization: `Bearer ${s.adminToken}` } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/event-stream');
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    assert.match(first, /^: connected/);
    assert.equal(s.ctx.events.subscribers(), 1);
    await s.close();
    // The stream ends (done), and the subscription is gone.
    for (;;) if ((await reader.read()).done) break;
    assert.equal(s.ctx.events.subscribers(), 0);
  } finally {
    await s.stop();
  }
});

test('shutdown right after a streamed download does not wait for the keep-alive timeout', async () => {
  const s = await startTestServer();
  try {
    const data = Buffer.alloc(4 * 1024 * 1024, 7);
    const digest = createHash('sha256').update(data).digest('hex');
    const auth = { authorization: `Bearer ${s.adminToken}` };
    const put = await fetch(`${s.url}/v1/projects/default/blobs/${digest}`, { method: 'PUT', headers: { ...auth, 'content-type': 'application/octet-stream' }, body: data });
    assert.equal(put.status, 201);
    const res = await fetch(`${s.url}/v1/projects/default/blobs/${digest}`, { headers: auth });
    const reading = res.arrayBuffer();
    // Closing starts while the response is still streaming; its connection turns idle later.
    const closed = s.close().then(() => 'closed');
    assert.equal(Buffer.from(await reading).length, data.length);
    // fastify's keep-alive timeout is 72 s: a close still waiting after 10 s is the bug.
    const bound = new Promise((r) => setTimeout(r, 10_000, 'still waiting')).then((v) => v);
    assert.equal(await Promise.race([closed, bound]), 'closed');
  } finally {
    await s.stop();
  }
});
