// Checks rendered Kubernetes objects against Kubernetes' own schemas, without a cluster:
// kubernetes-models (its OpenAPI schemas compiled to validators: types, required fields,
// formats) and, for what those let through (they accept unknown fields, so a misspelt
// `readOnlyRootFileSystem` would pass), the field lists of @kubernetes/client-node's models,
// generated from the same OpenAPI document, walked like `kubectl apply --validate=strict`.
import * as k8s from '@kubernetes/client-node';
import type { K8sObject } from './helm.js';

interface Attribute {
  baseName: string;
  type: string;
}
type ModelClass = { getAttributeTypeMap?: () => Attribute[] };
const MODELS = k8s as unknown as Record<string, ModelClass | undefined>;

/** Every problem with one object; empty when it is valid. */
export async function schemaErrors(obj: K8sObject): Promise<string[]> {
  const where = `${obj.kind} ${obj.metadata?.name}`;
  const errors: string[] = [];
  let mod: Record<string, unknown>;
  try {
    mod = (await import(`kubernetes-models/${obj.apiVersion}`)) as Record<string, unknown>;
  } catch {
    return [`${where}: apiVersion ${obj.apiVersion} is not one Kubernetes serves`];
  }
  const Model = mod[obj.kind] as (new (data: unknown) => { validate(): void }) | undefined;
  if (typeof Model !== 'function') return [`${where}: no kind ${obj.kind} in ${obj.apiVersion}`];
  try {
    new Model(obj).validate();
  } catch (e) {
    errors.push(`${where}: ${(e as Error).message}`);
  }
  const version = obj.apiVersion.split('/').pop() ?? '';
  const className = `${version[0]?.toUpperCase()}${version.slice(1)}${obj.kind}`;
  if (!MODELS[className]?.getAttributeTypeMap) errors.push(`${where}: no @kubernetes/client-node model ${className} to check its fields`);
  else unknownFields(obj, className, where, errors);
  return errors;
}

function unknownFields(value: unknown, type: string, path: string, errors: string[]): void {
  if (value === null || value === undefined) return;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(v, array[1]!, `${path}[${i}]`, errors));
    return;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    if (typeof value === 'object') for (const [k, v] of Object.entries(value)) unknownFields(v, map[1]!, `${path}.${k}`, errors);
    return;
  }
  const attributes = MODELS[type]?.getAttributeTypeMap?.();
  if (!attributes || typeof value !== 'object' || Array.isArray(value)) return; // a scalar, IntOrString, a quantity …
  const known = new Map(attributes.map((a) => [a.baseName, a.type]));
  for (const [k, v] of Object.entries(value)) {
    const t = known.get(k);
    if (t === undefined) errors.push(`${path}: unknown field "${k}" (${type} has ${[...known.keys()].join(', ')})`);
    else unknownFields(v, t, `${path}.${k}`, errors);
  }
}
