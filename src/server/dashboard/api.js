// The dashboard's side of the HTTP API: JSON calls with the bearer token, blob downloads, and
// the event stream read with fetch() and a stream reader (EventSource cannot send a header).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(token) {
    this.token = token;
  }

  headers(extra = {}) {
    return { authorization: `Bearer ${this.token}`, ...extra };
  }

  async get(path) {
    let res;
    try {
      res = await fetch(path, { headers: this.headers({ accept: 'application/json' }), cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, 'network', `the server did not answer (${e.message})`);
    }
    const text = await res.text();
    let body = null;
    try {
      body = text === '' ? null : JSON.parse(text);
    } catch {
      body = null;
    }
    if (!res.ok) {
      const err = body && body.error ? body.error : {};
      throw new ApiError(res.status, err.code || `http_${res.status}`, err.message || `${res.status} ${res.statusText}`);
    }
    return body;
  }

  /** Fetches a blob with the token and hands it to the browser as a download named `name`. */
  async download(path, name) {
    const res = await fetch(path, { headers: this.headers(), cache: 'no-store' });
    if (!res.ok) throw new ApiError(res.status, `http_${res.status}`, `download failed: ${res.status}`);
    const url = URL.createObjectURL(await res.blob());
    const a = document.createElement('a');
    a.href = url;
    a.download = name;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }
}

/**
 * Follows `GET path` (text/event-stream) until `stop()`: calls onEvent(type, data) for each
 * event and onStatus('live' | 'connecting' | 'offline', detail) as the connection changes.
 * Reconnects with Last-Event-ID after a drop, waiting longer each time (up to 15 s).
 */
export function followEvents(api, path, onEvent, onStatus) {
  const ctl = new AbortController();
  let lastId = null;
  let delay = 500;
  let stopped = false;

  async function once() {
    onStatus('connecting');
    const headers = api.headers({ accept: 'text/event-stream' });
    if (lastId !== null) headers['last-event-id'] = lastId;
    const res = await fetch(path, { headers, signal: ctl.signal, cache: 'no-store' });
    if (res.status === 401 || res.status === 403 || res.status === 404) {
      stopped = true;
      onStatus('offline', `the event stream was refused (${res.status})`);
      return;
    }
    if (!res.ok || !res.body) throw new Error(`event stream: ${res.status}`);
    onStatus('live');
    delay = 500;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n?/g, '\n');
      let cut;
      while ((cut = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let type = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line === '' || line.startsWith(':')) continue;
          const colon = line.indexOf(':');
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
          if (field === 'event') type = val;
          else if (field === 'data') data.push(val);
          else if (field === 'id') lastId = val;
        }
        if (data.length === 0) continue;
        let parsed;
        try {
          parsed = JSON.parse(data.join('\n'));
        } catch {
          continue;
        }
        onEvent(type, parsed);
      }
    }
  }

  (async () => {
    while (!stopped) {
      try {
        await once();
      } catch (e) {
        if (stopped || ctl.signal.aborted) return;
        onStatus('offline', e.message);
      }
      if (stopped) return;
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 15_000);
    }
  })();

  return {
    stop() {
      stopped = true;
      ctl.abort();
    },
  };
}
