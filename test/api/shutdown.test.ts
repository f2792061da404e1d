import assert from 'node:assert/strict';
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
