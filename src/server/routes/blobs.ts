import { inPart } from '../http-errors.js';
import { Type } from '@sinclair/typebox';
import type { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import type { BlobRecord } from '../../domain/model.js';
import type { OpenBlob } from '../../service/blobs.js';
import { BoxgridError } from '../../domain/errors.js';
import { projectAccess, type Services } from '../services.js';
import { BlobParams } from '../schemas.js';
import type { Api } from '../server.js';

export const BlobInfo = Type.Object({ sha256: Type.String(), size: Type.Integer(), createdAt: Type.String() });

export function registerBlobRoutes(app: Api, s: Services): void {
  const tags = ['blobs'];
  app.put(
    '/projects/:project/blobs/:sha256',
    {
      schema: {
        tags, params: BlobParams, response: { 201: BlobInfo, 200: BlobInfo },
        description: 'Upload a blob as application/octet-stream under its sha256. Repeats are cheap no-ops (200).',
      },
    },
    async (req, reply) => {
      const access = await projectAccess(s, req, req.params.project, 'submit');
      return receiveBlob(req, reply, (body, length) => s.blobs.put(access, req.params.sha256, body, length));
    },
  );

  app.head('/projects/:project/blobs/:sha256', { schema: { tags, params: BlobParams, description: 'Size of a blob the project holds; 404 otherwise.' }, config: { swagger: { exposeHeadRoute: true } } }, async (req, reply) => {
    const access = await projectAccess(s, req, req.params.project, 'read');
    const blob = await inPart('params', s.blobs.find(access, req.params.sha256));
    if (!blob) return reply.code(404).send();
    return reply.header('content-length', blob.size).header('accept-ranges', 'bytes').code(200).send();
  });

  app.get(
    '/projects/:project/blobs/:sha256',
    { exposeHeadRoute: false, schema: { tags, params: BlobParams, description: 'Download a blob; a single HTTP Range is honoured.' } },
    async (req, reply) => {
      const access = await projectAccess(s, req, req.params.project, 'read');
      return sendBlob(req, reply, await inPart('params', s.blobs.open(access, req.params.sha256)));
    },
  );
}

/**
 * Stores an upload (application/octet-stream, streamed) through `put` and answers 201 when it
 * was new, 200 when it was already there.
 */
export async function receiveBlob(
  req: FastifyRequest,
  reply: FastifyReply,
  put: (body: Readable, length: number | undefined) => Promise<{ blob: BlobRecord; created: boolean }>,
): Promise<FastifyReply> {
  if (!req.headers['content-type']?.startsWith('application/octet-stream')) {
    throw new BoxgridError('unsupported_media_type', 'send the blob as Content-Type: application/octet-stream', { field: 'headers/content-type' });
  }
  const length = req.headers['content-length'] === undefined ? undefined : Number(req.headers['content-length']);
  let stored: { blob: BlobRecord; created: boolean };
  try {
    stored = await inPart('params', put(req.body as Readable, length));
  } catch (e) {
    // The rest of the body was not read: close the connection after answering, or it
    // would sit paused and unusable (and hold up shutdown).
    reply.header('connection', 'close');
    throw e;
  }
  const { blob, created } = stored;
  return reply.code(created ? 201 : 200).send({ sha256: blob.sha256, size: blob.size, createdAt: new Date(blob.createdAt).toISOString() });
}

/** Sends a blob, honouring a single HTTP Range. */
export function sendBlob(req: FastifyRequest, reply: FastifyReply, opened: OpenBlob): FastifyReply {
  const { blob: found, read } = opened;
  let range: { start: number; end: number } | null;
  try {
    range = parseRange(req.headers.range, found.size);
  } catch (e) {
    reply.header('content-range', `bytes */${found.size}`); // RFC 9110: say what the size is
    throw e;
  }
  const stream = read(range ?? undefined);
  reply.header('accept-ranges', 'bytes').header('etag', `"${found.sha256}"`).type('application/octet-stream');
  if (range) {
    reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${found.size}`).header('content-length', range.end - range.start + 1);
  } else {
    reply.header('content-length', found.size);
  }
  return reply.send(stream);
}

/**
 * One `bytes=a-b`, `bytes=a-` or `bytes=-n` range; null for none, for several (we then send it
 * all) and for units other than bytes (which RFC 9110 says to ignore).
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | null {
  if (header === undefined || !/^\s*bytes=/i.test(header)) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) {
    if (/^bytes=.+,/.test(header)) return null;
    throw new BoxgridError('range_not_satisfiable', `Range "${header}" is not bytes=START-END`, { field: 'headers/range' });
  }
  let start: number;
  let end: number;
  if (m[1] === '' && m[2] === '') throw new BoxgridError('range_not_satisfiable', 'Range has neither start nor end', { field: 'headers/range' });
  if (m[1] === '') {
    start = Math.max(0, size - Number(m[2]));
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || start > end) {
    throw new BoxgridError('range_not_satisfiable', `Range ${header} is outside the blob's ${size} bytes`, { field: 'headers/range' });
  }
  return { start, end };
}
