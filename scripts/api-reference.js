#!/usr/bin/env node
// Generates docs/api-reference.md from the server's own OpenAPI document: starts the built
// server (dist/) in-process on 127.0.0.1, port 0, with a throw-away data dir, reads
// GET /openapi.json, stops it and renders markdown. Run it with `npm run docs:api` (which
// builds first). render(openapi) is pure and deterministic, so test/api/api-reference.test.ts
// can regenerate the page in memory and check the committed file has not drifted.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
export const OUTPUT = join(root, 'docs', 'api-reference.md');
const METHODS = ['get', 'head', 'post', 'put', 'patch', 'delete', 'options'];
const MAX_DEPTH = 3;

/** Starts the built server on a temporary data dir and returns its OpenAPI document. */
export async function fetchOpenApi() {
  const { startServer } = await import(pathToFileURL(join(root, 'dist', 'src', 'server', 'runtime.js')).href);
  const dataDir = await mkdtemp(join(tmpdir(), 'boxgrid-apiref-'));
  try {
    const server = await startServer({ dataDir, host: '127.0.0.1', port: 0, logger: false });
    try {
      const res = await fetch(server.url + '/openapi.json');
      if (res.status !== 200) throw new Error(`GET /openapi.json: ${res.status}`);
      return await res.json();
    } finally {
      await server.close();
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** Every operation in the document as { method, path, op }, in a stable order. */
export function operations(openapi) {
  const out = [];
  for (const path of Object.keys(openapi.paths ?? {}).sort()) {
    const item = openapi.paths[path];
    for (const method of METHODS) if (item[method]) out.push({ method: method.toUpperCase(), path, op: item[method] });
  }
  return out;
}

const cell = (s) => String(s ?? '').replace(/\r?\n/g, ' ').replace(/\|/g, '\\|').trim();
const code = (s) => '`' + String(s).replace(/`/g, "'") + '`';

function typeOf(schema, depth = 0) {
  if (!schema || typeof schema !== 'object') return 'any';
  if (depth > 4) return '…';
  if ('const' in schema) return JSON.stringify(schema.const);
  const alts = schema.anyOf ?? schema.oneOf;
  if (alts) return [...new Set(alts.map((s) => typeOf(s, depth + 1)))].join(' \\| ');
  if (schema.allOf) return schema.allOf.map((s) => typeOf(s, depth + 1)).join(' & ');
  const t = schema.type;
  if (Array.isArray(t)) return t.join(' \\| ');
  if (t === 'array') return `${typeOf(schema.items, depth + 1)}[]`;
  if (t === 'object' || (!t && (schema.properties || schema.additionalProperties))) {
    if (!schema.properties && schema.additionalProperties && typeof schema.additionalProperties === 'object') {
      return `map<string, ${typeOf(schema.additionalProperties, depth + 1)}>`;
    }
    return 'object';
  }
  if (t === 'string' && schema.format) return `string (${schema.format})`;
  return t ?? 'any';
}

const LIMITS = [
  ['minLength', 'minLength'], ['maxLength', 'maxLength'], ['minimum', '≥'], ['exclusiveMinimum', '>'],
  ['maximum', '≤'], ['exclusiveMaximum', '<'], ['minItems', 'minItems'], ['maxItems', 'maxItems'],
  ['uniqueItems', 'uniqueItems'], ['minProperties', 'minProperties'], ['maxProperties', 'maxProperties'],
];

function constraints(schema, depth = 0) {
  if (!schema || typeof schema !== 'object' || depth > 2) return [];
  const out = [];
  for (const [k, label] of LIMITS) {
    if (schema[k] === undefined) continue;
    out.push(label.length === 1 ? `${label} ${schema[k]}` : schema[k] === true ? label : `${label} ${schema[k]}`);
  }
  if (schema.pattern !== undefined) out.push(`pattern ${code(schema.pattern)}`);
  if (Array.isArray(schema.enum)) out.push(`one of ${schema.enum.map((v) => code(JSON.stringify(v))).join(', ')}`);
  const alts = schema.anyOf ?? schema.oneOf;
  if (alts) {
    const consts = alts.filter((s) => s && 'const' in s).map((s) => code(JSON.stringify(s.const)));
    if (consts.length > 1 && consts.length === alts.length) out.push(`one of ${consts.join(', ')}`);
  }
  if (schema.default !== undefined) out.push(`default ${code(JSON.stringify(schema.default))}`);
  if (schema.type === 'array' && schema.items) {
    const inner = constraints(schema.items, depth + 1);
    if (inner.length) out.push(`items: ${inner.join(', ')}`);
  }
  if (schema.additionalProperties && typeof schema.additionalProperties === 'object' && !schema.properties) {
    const inner = constraints(schema.additionalProperties, depth + 1);
    if (inner.length) out.push(`values: ${inner.join(', ')}`);
  }
  return out;
}

/** The object schema to descend into, if any (an object, an array of objects, or either or null). */
function objectPart(schema) {
  if (!schema || typeof schema !== 'object') return null;
  if (schema.properties) return schema;
  const alts = schema.anyOf ?? schema.oneOf;
  if (alts) {
    const objs = alts.filter((s) => s && s.properties);
    if (objs.length === 1) return objs[0];
  }
  return null;
}

/** Rows { name, type, required, description, constraints } for an object schema, nested objects dotted. */
export function fieldRows(schema, prefix = '', depth = 0) {
  const obj = objectPart(schema);
  if (!obj) return [];
  const required = new Set(obj.required ?? []);
  const rows = [];
  for (const name of Object.keys(obj.properties)) {
    const prop = obj.properties[name];
    const full = prefix + name;
    rows.push({ name: full, type: typeOf(prop), required: required.has(name), description: prop.description ?? '', constraints: constraints(prop).join(', ') });
    if (depth + 1 < MAX_DEPTH) {
      if (objectPart(prop)) rows.push(...fieldRows(prop, full + '.', depth + 1));
      else if (prop.type === 'array' && objectPart(prop.items)) rows.push(...fieldRows(prop.items, full + '[].', depth + 1));
    }
  }
  return rows;
}

function fieldTable(rows) {
  const lines = ['| Field | Type | Required | Description | Constraints |', '| --- | --- | --- | --- | --- |'];
  for (const r of rows) lines.push(`| ${code(r.name)} | ${cell(r.type)} | ${r.required ? 'yes' : 'no'} | ${cell(r.description)} | ${cell(r.constraints)} |`);
  return lines;
}

/** A one-line shape of a response body: its top-level fields with types ("?" marks optional). */
function shape(schema) {
  if (!schema) return '';
  const obj = objectPart(schema);
  if (obj) {
    const req = new Set(obj.required ?? []);
    const fields = Object.keys(obj.properties).map((k) => `${k}${req.has(k) ? '' : '?'}: ${typeOf(obj.properties[k])}`);
    const nullable = obj !== schema ? ' \\| null' : '';
    return `${code(`{ ${fields.join(', ')} }`).replace(/\\\|/g, '|')}${nullable}`;
  }
  if (schema.type === 'array' && objectPart(schema.items)) return `array of ${shape(schema.items)}`;
  return code(typeOf(schema).replace(/\\\|/g, '|'));
}

function auth(openapi, op) {
  const sec = op.security ?? openapi.security ?? [];
  const names = [...new Set(sec.flatMap((s) => Object.keys(s)))].sort();
  return names.length === 0 ? 'none' : names.join(', ');
}

function parameters(op) {
  const params = (op.parameters ?? []).filter((p) => p.in === 'path' || p.in === 'query' || p.in === 'header');
  if (params.length === 0) return [];
  const order = { path: 0, query: 1, header: 2 };
  const lines = ['| Name | In | Type | Required | Description | Limits |', '| --- | --- | --- | --- | --- | --- |'];
  for (const p of params.map((p, i) => ({ p, i })).sort((a, b) => order[a.p.in] - order[b.p.in] || a.i - b.i).map((x) => x.p)) {
    const s = p.schema ?? {};
    lines.push(`| ${code(p.name)} | ${p.in} | ${cell(typeOf(s))} | ${p.required ? 'yes' : 'no'} | ${cell(p.description ?? s.description ?? '')} | ${cell(constraints(s).join(', '))} |`);
  }
  return lines;
}

function requestBody(op) {
  const rb = op.requestBody;
  if (!rb) return [];
  const out = [];
  for (const type of Object.keys(rb.content ?? {}).sort()) {
    const schema = rb.content[type].schema;
    out.push(`**Request body** (${code(type)}${rb.required ? ', required' : ''})${schema?.description ? ': ' + cell(schema.description) : ''}`, '');
    const rows = fieldRows(schema);
    if (rows.length) out.push(...fieldTable(rows), '');
    else out.push(`Type: ${shape(schema) || 'any'}`, '');
  }
  return out;
}

function responses(op) {
  const res = op.responses ?? {};
  const codes = Object.keys(res).sort();
  if (codes.length === 0) return [];
  const out = ['**Responses**', ''];
  for (const status of codes) {
    const r = res[status];
    const parts = [];
    const desc = r.description && r.description !== 'Default Response' ? cell(r.description) : '';
    if (desc) parts.push(desc);
    for (const type of Object.keys(r.content ?? {}).sort()) {
      const s = shape(r.content[type].schema);
      parts.push(type === 'application/json' ? s || 'JSON' : `${code(type)}${s ? ' ' + s : ''}`);
    }
    out.push(`- ${code(status)}${parts.length ? ' — ' + parts.join('; ') : ''}`);
  }
  out.push('');
  return out;
}

/** Renders the whole reference page from an OpenAPI document. Pure: same document, same text. */
export function render(openapi) {
  const ops = operations(openapi);
  const byTag = new Map();
  for (const o of ops) {
    const tag = o.op.tags?.[0] ?? 'other';
    if (!byTag.has(tag)) byTag.set(tag, []);
    byTag.get(tag).push(o);
  }
  const tags = [...byTag.keys()].sort();
  const info = openapi.info ?? {};
  const out = [
    '# HTTP API reference',
    '',
    '<!-- Generated by `npm run docs:api` from the server\'s GET /openapi.json. Do not edit by hand. -->',
    '',
    `Generated by \`npm run docs:api\` from the server's own \`GET /openapi.json\` (${cell(info.title ?? 'API')}, version ${cell(info.version ?? '?')}, OpenAPI ${cell(openapi.openapi ?? '?')}); **do not edit by hand** — a test fails if this page and the document differ. For the concepts, errors and examples see [api.md](api.md) and [errors.md](errors.md).`,
    '',
    'Auth: `bearer` means `Authorization: Bearer <token>` — a user token for `/v1`, a host credential for `/agent/v1`; `none` means no credential. ' +
      `Nested body fields are shown with dotted names up to ${MAX_DEPTH} levels deep (\`a[].b\` for fields of array items).`,
    '',
    '## Contents',
    '',
  ];
  for (const tag of tags) out.push(`- [${tag}](#${tag.toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-')}) (${byTag.get(tag).length})`);
  out.push('');
  for (const tag of tags) {
    out.push(`## ${tag}`, '');
    for (const { method, path, op } of byTag.get(tag)) {
      out.push(`### ${method} ${path}`, '');
      if (op.summary) out.push(cell(op.summary), '');
      if (op.description) out.push(cell(op.description), '');
      out.push(`Auth: ${auth(openapi, op)}`, '');
      const params = parameters(op);
      if (params.length) out.push('**Parameters**', '', ...params, '');
      out.push(...requestBody(op), ...responses(op));
    }
  }
  return out.join('\n').replace(/\n{3,}/g, '\n\n').trimEnd() + '\n';
}

async function main() {
  const text = render(await fetchOpenApi());
  await writeFile(OUTPUT, text);
  console.log(`wrote ${OUTPUT} (${text.split('\n').length} lines)`);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
