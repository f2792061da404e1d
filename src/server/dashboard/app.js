// The boxgrid dashboard: hash routes over the /v1 JSON API, kept live by the project's event
// stream. No framework: views build DOM nodes with el() (text is always text, never HTML).
import { Api, ApiError, followEvents } from './api.js';

const TOKEN_KEY = 'boxgrid.token';
const FINISHED = ['succeeded', 'failed', 'cancelled'];
const STATES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const FALLBACK_REFRESH_MS = 30_000; // the event stream drives updates; this only catches drops
const SAMPLE_MS = 5_000;
const ONLINE_MS = 3 * 60_000; // a host seen within a lease counts as online

const $ = (id) => document.getElementById(id);

/** el('td', {class: 'num'}, 'text', node…): attributes set one by one, children as text or nodes. */
function el(tag, attrs = {}, ...children) {
  const svg = ['svg', 'polyline', 'line', 'text', 'g', 'rect'].includes(tag);
  const n = svg ? document.createElementNS('http://www.w3.org/2000/svg', tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
    else n.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return n;
}

const state = {
  api: null,
  me: null,
  projects: [],
  project: null,
  events: null,
  view: null,
  batchCache: new Map(), // `${project}/${id}` → {counts, done}
  samples: new Map(), // project → [{t, queued, running, finished}]
  refreshTimer: null,
};

// ---------- formatting ----------
function ago(iso) {
  if (!iso) return '—';
  const s = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (s < 0) return 'in ' + dur(-s * 1000);
  if (s < 5) return 'just now';
  return dur(s * 1000) + ' ago';
}
function dur(ms) {
  if (ms === null || ms === undefined) return '—';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}
function time(iso) {
  return iso ? new Date(iso).toLocaleString() : '—';
}
function size(bytes) {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = bytes;
  while (v >= 1024 && i < u.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${u[i]}`;
}
const mib = (m) => size(m * 1024 * 1024);
const badge = (s) => el('span', { class: `state ${s}` }, s);
const num = (n) => (typeof n === 'number' ? n.toLocaleString() : '—');
const labels = (o) => Object.entries(o || {}).map(([k, v]) => `${k}=${v}`).join(', ');
const sum = (counts, keys) => keys.reduce((a, k) => a + (counts[k] || 0), 0);
const p = (path) => `/v1/projects/${encodeURIComponent(state.project)}${path}`;

function progressBar(counts, big = false) {
  const total = sum(counts, STATES);
  const bar = el('div', { class: `progress${big ? ' big' : ''}`, role: 'progressbar', 'aria-valuemin': 0, 'aria-valuemax': total, 'aria-valuenow': sum(counts, FINISHED) });
  for (const s of ['succeeded', 'failed', 'cancelled', 'running', 'queued']) {
    if (!counts[s]) continue;
    const seg = el('span', { class: s, title: `${s}: ${counts[s]}` });
    seg.style.width = `${(100 * counts[s]) / total}%`; // CSSOM, not a style attribute: allowed by the CSP
    bar.append(seg);
  }
  return bar;
}

function table(head, rows, empty = 'nothing yet') {
  if (rows.length === 0) return el('p', { class: 'muted' }, empty);
  const th = (h) => (h instanceof Node ? h : el('th', { class: h.startsWith('#') ? 'num' : undefined }, h.replace(/^#/, '')));
  return el('div', { class: 'table-wrap' }, el('table', {}, el('thead', {}, el('tr', {}, head.map(th))), el('tbody', {}, rows)));
}

function showBanner(msg) {
  const b = $('banner');
  b.textContent = msg || '';
  b.hidden = !msg;
}

// ---------- data ----------
/** Every batch of the project with its counts; the counts of finished batches are kept, since they never change. */
async function projectBatches(maxBatches = 5000) {
  const batches = [];
  let cursor = null;
  do {
    const r = await state.api.get(p(`/batches?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`));
    batches.push(...r.batches);
    cursor = r.nextCursor;
  } while (cursor && batches.length < maxBatches);
  await withCounts(batches);
  return batches;
}

async function withCounts(batches) {
  const todo = batches.filter((b) => !(state.batchCache.get(`${state.project}/${b.id}`) || {}).done);
  const queue = [...todo];
  await Promise.all(Array.from({ length: Math.min(6, queue.length) }, async () => {
    for (let b = queue.shift(); b; b = queue.shift()) {
      const d = await state.api.get(p(`/batches/${b.id}`));
      state.batchCache.set(`${state.project}/${b.id}`, { counts: d.counts, done: d.done });
    }
  }));
  for (const b of batches) Object.assign(b, state.batchCache.get(`${state.project}/${b.id}`));
}

/** Every job of the project (or of one app) by state, in a batch or not: one aggregate on the server. */
async function projectCounts(app) {
  const r = await state.api.get(p(`/counts${app === undefined ? '' : `?app=${encodeURIComponent(app)}`}`));
  return r.counts;
}

function sample(project, t) {
  const list = state.samples.get(project) || [];
  list.push({ t: Date.now(), queued: t.queued, running: t.running, finished: sum(t, FINISHED) });
  while (list.length > 360) list.shift();
  state.samples.set(project, list);
  return list;
}

async function hostsIfOperator() {
  if (!state.me.user.operator) return null;
  return (await state.api.get('/v1/hosts')).hosts;
}
const online = (h) => h.state === 'active' && h.lastSeenAt && Date.now() - Date.parse(h.lastSeenAt) < ONLINE_MS;

// ---------- chart ----------
function chart(samples) {
  const W = 720, H = 200, L = 44, R = 10, T = 10, B = 24;
  const svg = el('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'queued, running and finished jobs over time' });
  const max = Math.max(1, ...samples.flatMap((s) => [s.queued, s.running, s.finished]));
  const t0 = samples.length ? samples[0].t : Date.now();
  const t1 = samples.length > 1 ? samples[samples.length - 1].t : t0 + 1;
  const x = (t) => L + ((t - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  for (const f of [0, 0.5, 1]) {
    const v = Math.round(max * f);
    svg.append(el('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    svg.append(el('text', { class: 'axis', x: L - 6, y: y(v) + 4, 'text-anchor': 'end' }, v.toLocaleString()));
  }
  svg.append(el('text', { class: 'axis', x: L, y: H - 6 }, samples.length ? new Date(t0).toLocaleTimeString() : ''));
  svg.append(el('text', { class: 'axis', x: W - R, y: H - 6, 'text-anchor': 'end' }, samples.length > 1 ? new Date(t1).toLocaleTimeString() : 'sampling…'));
  if (samples.length > 0) {
    for (const k of ['queued', 'running', 'finished']) {
      const pts = samples.length === 1 ? [[L, y(samples[0][k])], [W - R, y(samples[0][k])]] : samples.map((s) => [x(s.t), y(s[k])]);
      svg.append(el('polyline', { class: `s-${k}`, points: pts.map(([a, b]) => `${a.toFixed(1)},${b.toFixed(1)}`).join(' ') }));
    }
  }
  return svg;
}

function throughput(samples) {
  if (samples.length < 2) return null;
  const last = samples[samples.length - 1];
  const from = samples.find((s) => last.t - s.t <= 60_000) || samples[0];
  const span = last.t - from.t;
  if (span <= 0) return null;
  return ((last.finished - from.finished) / span) * 60_000;
}

// ---------- views ----------
/** A view: build() once for the skeleton, refresh() whenever data may have changed. */
const views = {
  overview: () => {
    const cards = el('div', { class: 'cards', id: 'counts' });
    const chartBox = el('div', { id: 'chart' });
    const extra = el('div', { class: 'cards', id: 'rates' });
    const recent = el('div', { id: 'recent' });
    return {
      title: 'Overview',
      build: () => [
        el('h1', {}, `Overview · ${state.project}`),
        cards,
        el('div', { class: 'panel' },
          el('div', { class: 'row' }, el('strong', {}, 'Jobs over time'),
            el('span', { class: 'legend' }, el('span', {}, el('span', { class: 'sw queued' }), 'queued'), el('span', {}, el('span', { class: 'sw running' }), 'running'), el('span', {}, el('span', { class: 'sw finished' }), 'finished')),
            el('span', { class: 'muted' }, 'sampled in this page')),
          chartBox),
        extra,
        el('h2', {}, 'Recent batches'),
        recent,
      ],
      refresh: async () => {
        const [t, batches, hosts] = await Promise.all([projectCounts(), projectBatches(), hostsIfOperator()]);
        const samples = sample(state.project, t);
        const card = (cls, label, value) => el('div', { class: `card ${cls}`, 'data-count': cls }, el('div', { class: 'label' }, label), el('div', { class: 'value' }, value));
        cards.replaceChildren(
          card('queued', 'queued', num(t.queued)), card('running', 'running', num(t.running)),
          card('succeeded', 'succeeded', num(t.succeeded)), card('failed', 'failed', num(t.failed)),
          card('cancelled', 'cancelled', num(t.cancelled)), card('finished', 'finished', num(sum(t, FINISHED))),
        );
        chartBox.replaceChildren(chart(samples));
        const rate = throughput(samples);
        extra.replaceChildren(
          card('rate', 'throughput (last minute)', rate === null ? '—' : `${rate.toFixed(1)}/min`),
          card('batches', 'batches', num(batches.length)),
          hosts === null ? null : card('hosts', 'hosts online', `${hosts.filter(online).length} / ${hosts.length}`),
        );
        extra.style.marginTop = '1rem';
        recent.replaceChildren(batchTable(batches.slice(0, 10)));
      },
      tick: SAMPLE_MS,
    };
  },

  apps: () => {
    const box = el('div');
    return {
      title: 'Apps',
      build: () => [el('h1', {}, 'Apps and their queues'), box],
      refresh: async () => {
        const { apps } = await state.api.get(p('/apps'));
        const byApp = new Map();
        const queue = apps.map((a) => a.name);
        await Promise.all(Array.from({ length: Math.min(6, queue.length) }, async () => {
          for (let name = queue.shift(); name !== undefined; name = queue.shift()) byApp.set(name, await projectCounts(name));
        }));
        box.replaceChildren(table(['app', '#version', 'image', 'resources', 'max runtime', '#attempts', '#queued', '#running', '#finished', 'progress'], apps.map((a) => {
          const c = byApp.get(a.name) || Object.fromEntries(STATES.map((s) => [s, 0]));
          const r = a.resources;
          return el('tr', {},
            el('td', {}, el('a', { href: `#/jobs?app=${encodeURIComponent(a.name)}` }, a.name)),
            el('td', { class: 'num' }, a.version),
            el('td', { class: 'wrap mono' }, a.image),
            el('td', {}, `${r.cores} cores, ${mib(r.memoryMiB)}${r.gpus ? `, ${r.gpus} GPU` : ''}`),
            el('td', {}, dur(a.maxRuntimeSeconds * 1000)),
            el('td', { class: 'num' }, a.maxAttempts),
            el('td', { class: 'num' }, num(c.queued)), el('td', { class: 'num' }, num(c.running)), el('td', { class: 'num' }, num(sum(c, FINISHED))),
            el('td', {}, sum(c, STATES) ? progressBar(c) : el('span', { class: 'muted' }, 'no jobs')),
          );
        }), 'No apps in this project yet (boxgrid app create).'));
      },
    };
  },

  jobs: (q) => {
    const box = el('div');
    const more = el('div');
    const form = el('form', { class: 'filters', id: 'job-filters' },
      el('label', {}, 'state', el('select', { name: 'state' }, el('option', { value: '' }, 'any'), STATES.map((s) => el('option', { value: s, selected: q.get('state') === s }, s)))),
      el('label', {}, 'app', el('input', { name: 'app', value: q.get('app') || '', placeholder: 'any' })),
      el('label', {}, 'batch', el('input', { name: 'batch', value: q.get('batch') || '', placeholder: 'any', inputmode: 'numeric' })),
      el('button', { type: 'submit' }, 'Filter'),
      el('a', { href: '#/jobs' }, 'clear'),
    );
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      const f = new FormData(form);
      const qs = new URLSearchParams();
      for (const k of ['state', 'app', 'batch']) if (String(f.get(k) || '').trim()) qs.set(k, String(f.get(k)).trim());
      location.hash = `#/jobs${qs.toString() ? `?${qs}` : ''}`;
    });
    const query = () => {
      const qs = new URLSearchParams({ limit: '100' });
      for (const k of ['state', 'app', 'batch']) if (q.get(k)) qs.set(k, q.get(k));
      return qs;
    };
    const rows = (jobs) => jobs.map((j) => el('tr', { 'data-job': j.id },
      el('td', { class: 'num' }, el('a', { href: `#/jobs/${j.id}` }, j.id)),
      el('td', {}, el('a', { href: `#/jobs?app=${encodeURIComponent(j.app)}` }, j.app), el('span', { class: 'muted' }, ` v${j.appVersion}`)),
      el('td', { class: 'num' }, j.batchId ? el('a', { href: `#/batches/${j.batchId}` }, j.batchId) : '—'),
      el('td', {}, badge(j.state)),
      el('td', { class: 'num' }, j.attempts),
      el('td', { class: 'wrap mono' }, Object.keys(j.params).length ? labels(j.params) : j.args.join(' ')),
      el('td', { class: 'wrap' }, j.reason || ''),
      el('td', { title: time(j.updatedAt) }, ago(j.updatedAt)),
    ));
    const head = ['#id', 'app', '#batch', 'state', '#attempts', 'params / args', 'reason', 'updated'];
    return {
      title: 'Jobs',
      build: () => [el('h1', {}, 'Jobs'), form, box, more],
      refresh: async () => {
        const r = await state.api.get(p(`/jobs?${query()}`));
        box.replaceChildren(table(head, rows(r.jobs), 'No jobs match.'));
        let cursor = r.nextCursor;
        const next = () => {
          more.replaceChildren(cursor ? el('button', {
            type: 'button',
            onclick: async () => {
              const qs = query();
              qs.set('cursor', cursor);
              const n = await state.api.get(p(`/jobs?${qs}`));
              box.querySelector('tbody')?.append(...rows(n.jobs));
              cursor = n.nextCursor;
              next();
            },
          }, 'More') : '');
        };
        next();
      },
    };
  },

  job: (_q, id) => {
    const box = el('div');
    let logEnd = 0;
    let logText = '';
    let logTask = null;
    return {
      title: `Job ${id}`,
      build: () => [el('h1', {}, `Job ${id}`), box],
      refresh: async () => {
        const { job, tasks } = await state.api.get(p(`/jobs/${id}`));
        // The latest task's output, read on from where the last read ended (a new task starts afresh).
        const latest = tasks.length ? tasks[tasks.length - 1].id : null;
        if (latest !== logTask) {
          logTask = latest;
          logEnd = 0;
          logText = '';
        }
        const log = latest === null ? null : await state.api.get(p(`/tasks/${latest}/log?after=${logEnd}`)).catch(() => null);
        if (log) {
          logText = log.start > logEnd ? log.text : logText + log.text;
          logEnd = log.end;
        }
        const explain = job.state === 'queued' ? await state.api.get(p(`/jobs/${id}/explain`)).catch(() => null) : null;
        const outputs = [];
        for (const t of tasks) for (const [name, o] of Object.entries(t.outputs || {})) outputs.push({ task: t.id, name, ...o });
        const facts = [
          ['state', badge(job.state)], ['app', `${job.app} v${job.appVersion}`],
          ['batch', job.batchId ? el('a', { href: `#/batches/${job.batchId}` }, job.batchId) : '—'],
          ['attempts', job.attempts], ['reason', job.reason || '—'], ['args', el('span', { class: 'mono' }, job.args.join(' ') || '—')],
          ['params', labels(job.params) || '—'], ['labels', labels(job.labels) || '—'], ['priority', job.priority],
          ['created', time(job.createdAt)], ['finished', time(job.finishedAt)],
          explain ? ['why waiting', explain.summary] : null,
        ].filter(Boolean);
        box.replaceChildren(
          el('div', { class: 'grid2' },
            el('div', { class: 'panel' }, el('dl', { class: 'facts' }, facts.map(([k, v]) => [el('dt', {}, k), el('dd', {}, v)]))),
            el('div', { class: 'panel' }, el('strong', {}, 'Outputs'),
              outputs.length === 0 ? el('p', { class: 'muted' }, 'none yet') : el('ul', { id: 'outputs' }, outputs.map((o) => el('li', {},
                el('button', { type: 'button', onclick: () => state.api.download(p(`/blobs/${o.sha256}`), o.name).catch((e) => showBanner(e.message)) }, o.name),
                ' ', el('span', { class: 'muted' }, `${size(o.size)} · task ${o.task} · `), el('span', { class: 'mono muted', title: o.sha256 }, o.sha256.slice(0, 12)))))),
          ),
          el('h2', {}, 'Tasks'),
          table(['#task', '#host', '#attempt', 'state', 'runtime', 'started', 'ended', 'duration', 'outcome', 'cpu / peak mem'], tasks.map((t) => el('tr', {},
            el('td', { class: 'num' }, t.id), el('td', { class: 'num' }, t.hostId), el('td', { class: 'num' }, t.attempt), el('td', {}, badge(t.state)),
            el('td', {}, t.runtime), el('td', {}, time(t.startedAt)), el('td', {}, time(t.endedAt)), el('td', {}, dur(t.durationMs)),
            el('td', { class: 'wrap' }, t.outcome ? `${t.outcome.kind}${t.exitCode !== null ? ` (exit ${t.exitCode})` : ''}` : t.reason || '—'),
            el('td', {}, t.usage ? `${t.usage.cpuSeconds.toFixed(1)} s / ${mib(t.usage.peakMemoryMiB)}` : '—'),
          )), 'No task yet: the job waits in its queue.'),
          el('h2', {}, 'Log tail'),
          log ? el('pre', { class: 'log', id: 'log' }, logText || '(no output yet)') : el('p', { class: 'muted' }, 'no output yet'),
        );
      },
    };
  },

  batches: () => {
    const box = el('div');
    return {
      title: 'Batches',
      build: () => [el('h1', {}, 'Batches'), box],
      refresh: async () => {
        const r = await state.api.get(p('/batches?limit=100'));
        await withCounts(r.batches);
        box.replaceChildren(batchTable(r.batches));
      },
    };
  },

  batch: (_q, id) => {
    const box = el('div');
    return {
      title: `Batch ${id}`,
      build: () => [el('h1', {}, `Batch ${id}`), box],
      refresh: async () => {
        const d = await state.api.get(p(`/batches/${id}`));
        state.batchCache.set(`${state.project}/${id}`, { counts: d.counts, done: d.done });
        const c = d.counts;
        const total = sum(c, STATES);
        const fin = sum(c, FINISHED);
        box.replaceChildren(
          el('div', { class: 'panel' },
            el('div', { class: 'row' }, el('strong', { id: 'batch-progress-text' }, `${fin.toLocaleString()} of ${total.toLocaleString()} finished (${total ? Math.floor((100 * fin) / total) : 0}%)`), d.done ? el('span', { class: 'state succeeded' }, 'done') : el('span', { class: 'state running' }, 'in progress')),
            el('div', { class: 'row' }, el('div', { class: 'grow' }, progressBar(c, true))),
            el('div', { class: 'cards', id: 'batch-counts' }, STATES.map((s) => el('div', { class: `card ${s}`, 'data-count': s }, el('div', { class: 'label' }, el('a', { href: `#/jobs?batch=${id}&state=${s}` }, s)), el('div', { class: 'value' }, num(c[s]))))),
          ),
          el('div', { class: 'panel' }, el('dl', { class: 'facts' },
            el('dt', {}, 'app'), el('dd', {}, `${d.batch.app} v${d.batch.appVersion}`),
            el('dt', {}, 'size'), el('dd', {}, num(d.batch.size)),
            el('dt', {}, 'labels'), el('dd', {}, labels(d.batch.labels) || '—'),
            el('dt', {}, 'submitted'), el('dd', {}, time(d.batch.createdAt)),
            el('dt', {}, 'jobs'), el('dd', {}, el('a', { href: `#/jobs?batch=${id}` }, 'list this batch\'s jobs')),
          )),
        );
        box.querySelectorAll('.row .grow').forEach((g) => { g.style.flex = '1'; });
      },
    };
  },

  hosts: () => {
    const box = el('div');
    return {
      title: 'Hosts',
      build: () => [el('h1', {}, 'Hosts'), box],
      refresh: async () => {
        if (!state.me.user.operator) {
          box.replaceChildren(el('p', { class: 'muted' }, 'The host list is for operators; this token is not an operator\'s.'));
          return;
        }
        const { hosts } = await state.api.get('/v1/hosts');
        box.replaceChildren(table(['#id', 'name', 'site', 'state', 'platform', '#cores', '#memory', '#disk', '#GPUs', '#pace', 'last seen', '#running tasks', 'labels'], hosts.map((h) => el('tr', {},
          el('td', { class: 'num' }, h.id), el('td', {}, h.name), el('td', {}, h.site),
          el('td', {}, h.state === 'active' ? badge(online(h) ? 'online' : 'offline') : badge(h.state)),
          el('td', {}, h.platform), el('td', { class: 'num' }, h.resources.cores), el('td', { class: 'num' }, mib(h.resources.memoryMiB)),
          el('td', { class: 'num' }, mib(h.resources.diskMiB)), el('td', { class: 'num' }, h.resources.gpus),
          el('td', { class: 'num', title: 'task durations here against their typical duration (1 = typical)' }, h.pace === null ? '—' : `${h.pace}×`),
          el('td', { title: time(h.lastSeenAt) }, ago(h.lastSeenAt)), el('td', { class: 'num' }, h.activeTasks),
          el('td', { class: 'wrap' }, labels(h.labels)),
        )), 'No hosts enrolled (boxgrid enroll-token create, then boxgrid agent).'));
      },
      tick: 10_000,
    };
  },
};

function batchTable(batches) {
  return table(['#batch', 'app', '#size', 'labels', 'submitted', 'progress', '#queued', '#running', '#finished'], batches.map((b) => {
    const c = b.counts || {};
    return el('tr', { 'data-batch': b.id },
      el('td', { class: 'num' }, el('a', { href: `#/batches/${b.id}` }, b.id)),
      el('td', {}, b.app), el('td', { class: 'num' }, num(b.size)), el('td', { class: 'wrap' }, labels(b.labels)),
      el('td', { title: time(b.createdAt) }, ago(b.createdAt)),
      el('td', {}, progressBar(c)),
      el('td', { class: 'num' }, num(c.queued)), el('td', { class: 'num' }, num(c.running)), el('td', { class: 'num' }, num(sum(c, FINISHED))),
    );
  }), 'No batches yet (boxgrid submit).');
}

// ---------- routing ----------
function parseHash() {
  const h = location.hash.replace(/^#\/?/, '');
  const [path, qs] = h.split('?');
  const parts = (path || '').split('/').filter(Boolean);
  const q = new URLSearchParams(qs || '');
  if (parts.length === 0) return { page: 'overview', q };
  if (parts[0] === 'jobs' && parts[1]) return { page: 'job', id: Number(parts[1]), q };
  if (parts[0] === 'batches' && parts[1]) return { page: 'batch', id: Number(parts[1]), q };
  if (views[parts[0]]) return { page: parts[0], q };
  return { page: 'overview', q };
}

let generation = 0;
async function route() {
  if (!state.api) return;
  const { page, id, q } = parseHash();
  const gen = ++generation;
  clearInterval(state.tickTimer);
  const v = views[page](q, id);
  state.view = { v, gen };
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === page || (a.dataset.page === 'jobs' && page === 'job') || (a.dataset.page === 'batches' && page === 'batch'));
  document.title = `${v.title} · boxgrid`;
  $('view').replaceChildren(...v.build().filter(Boolean));
  await refresh(gen);
  state.tickTimer = setInterval(() => refresh(gen), v.tick || FALLBACK_REFRESH_MS);
}

let refreshing = false;
let again = false;
async function refresh(gen = generation) {
  if (!state.view || state.view.gen !== gen) return;
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = true;
  try {
    await state.view.v.refresh();
    showBanner(null);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return signOut('Your token is no longer accepted (401 unauthenticated): sign in again.');
    showBanner(e instanceof ApiError ? `${e.message} (${e.code})` : `The page failed: ${e.message}`);
  } finally {
    refreshing = false;
    if (again) {
      again = false;
      setTimeout(() => refresh(), 0);
    }
  }
}

/** Many events can arrive at once (a batch finishing): one refresh per quarter second is plenty. */
function scheduleRefresh() {
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    refresh();
  }, 250);
}

function onEvent(type, data) {
  if (data.batchId) {
    const key = `${state.project}/${data.batchId}`;
    if (type === 'batch' && data.counts) state.batchCache.set(key, { counts: data.counts, done: data.counts.queued + data.counts.running === 0 });
    else state.batchCache.delete(key);
  }
  scheduleRefresh();
}

function setLive(status, detail) {
  const l = $('live');
  l.textContent = status === 'live' ? 'live' : status;
  l.className = `live ${status === 'live' ? 'live-on' : status}`;
  l.title = detail || 'event stream';
}

function follow() {
  if (state.events) state.events.stop();
  state.events = followEvents(state.api, p('/events'), onEvent, setLive);
}

// ---------- sign-in ----------
async function signIn(token) {
  const api = new Api(token);
  let me;
  try {
    me = await api.get('/v1/me');
  } catch (e) {
    sessionStorage.removeItem(TOKEN_KEY);
    const msg = e.status === 401
      ? 'That token was not accepted (401 unauthenticated): it is unknown, revoked or expired, or it is a host credential. Check it and try again.'
      : `Could not sign in: ${e.message}`;
    showSignIn(msg);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  state.api = api;
  state.me = me;
  state.projects = me.user.operator ? (await api.get('/v1/projects')).projects.map((x) => x.name) : me.projects.map((x) => x.name);
  const saved = sessionStorage.getItem('boxgrid.project');
  state.project = state.projects.includes(saved) ? saved : state.projects.includes('default') ? 'default' : state.projects[0] || null;
  $('signin').hidden = true;
  $('nav').hidden = false;
  $('session').hidden = false;
  $('who').textContent = `${me.user.name}${me.user.operator ? ' (operator)' : ''}`;
  $('project').replaceChildren(...state.projects.map((n) => el('option', { value: n, selected: n === state.project }, n)));
  if (!state.project) {
    $('view').replaceChildren(el('p', { class: 'muted' }, 'This user is not a member of any project yet: ask a project admin for a role.'));
    return;
  }
  follow();
  await route();
}

function showSignIn(error) {
  $('signin').hidden = false;
  $('nav').hidden = true;
  $('session').hidden = true;
  $('view').replaceChildren();
  const err = $('signin-error');
  err.textContent = error || '';
  err.hidden = !error;
  $('token').focus();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.events) state.events.stop();
  clearInterval(state.tickTimer);
  state.api = null;
  state.me = null;
  state.view = null;
  state.batchCache.clear();
  state.samples.clear();
  showBanner(null);
  setLive('offline');
  showSignIn(message || null);
}

function start() {
  $('signin-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('token').value.trim();
    $('token').value = '';
    if (t) signIn(t);
  });
  $('signout').addEventListener('click', () => signOut());
  $('project').addEventListener('change', (e) => {
    state.project = e.target.value;
    sessionStorage.setItem('boxgrid.project', state.project);
    follow();
    route();
  });
  window.addEventListener('hashchange', () => route());
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
  else showSignIn(null);
}

start();
