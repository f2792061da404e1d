import Ajv from 'ajv';
import type { FastifySchemaCompiler } from 'fastify';

/**
 * Two validators: request bodies are checked exactly as sent (no type coercion, no silently
 * dropped unknown fields — fastify's defaults do both), while path and query strings, which
 * are text by nature, are coerced to the declared types.
 */
export function validatorCompiler(): FastifySchemaCompiler<unknown> {
  const options = { allErrors: false, removeAdditional: false, strict: false, useDefaults: true } as const;
  const exact = new Ajv.default({ ...options, coerceTypes: false });
  const coercing = new Ajv.default({ ...options, coerceTypes: 'array' });
  return ({ schema, httpPart }) => {
    const ajv = httpPart === 'body' ? exact : coercing;
    return ajv.compile(schema as object) as ReturnType<FastifySchemaCompiler<unknown>>;
  };
}
