import { invalid, notFound } from '../domain/errors.js';
import type { App, AppSpec } from '../domain/model.js';
import { defaultMaxReplicas } from '../domain/quorum.js';
import { DEFAULT_RESOURCES, type Resources } from '../domain/resources.js';
import type { ProjectAccess } from './access.js';
import { checkName } from './access.js';
import type { ServiceContext } from './context.js';

/** What a client sends to create an app or a new version; omitted fields take defaults. */
export interface AppInput {
  name: string;
  description?: string;
  image: string;
  imageDigest?: string;
  command?: string[];
  resources?: Partial<Resources>;
  maxRuntimeSeconds?: number;
  maxAttempts?: number;
  replicas?: number;
  quorum?: number;
  maxReplicas?: number;
  adaptiveReplication?: boolean;
  validator?: { image: string; command?: string[] } | null;
  checkpointing?: boolean;
  platforms?: string[];
  nativeCommand?: string[] | null;
}

/** A new version: every field optional, omitted ones come from the latest version. */
export type AppVersionInput = Partial<Omit<AppInput, 'name'>>;

// An OCI reference: [registry[:port]/]path[:tag][@sha256:digest]. Loose on purpose: the engine is the judge.
const IMAGE_RE = /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[0-9a-f]{64})?$/;
const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;
const PLATFORM_RE = /^[a-z0-9]+\/[a-z0-9_]+(?:\/[a-z0-9]+)?$/;

export function appSpecFrom(input: AppInput): AppSpec {
  checkName(input.name, 'name');
  if (!IMAGE_RE.test(input.image)) throw invalid('image', `"${input.image}" is not an image reference (e.g. "sci/mandel:1.2" or "sci/mandel@sha256:…")`);
  const pinned = /@(sha256:[0-9a-f]{64})$/.exec(input.image)?.[1] ?? null;
  const imageDigest = input.imageDigest ?? pinned;
  if (imageDigest !== null && !DIGEST_RE.test(imageDigest)) throw invalid('imageDigest', 'must be "sha256:" and 64 hex digits');
  if (pinned !== null && imageDigest !== pinned) throw invalid('imageDigest', 'differs from the digest in image');
  const replicas = input.replicas ?? 1;
  const quorum = input.quorum ?? replicas;
  if (quorum > replicas) throw invalid('quorum', `must not exceed replicas (${replicas})`);
  // Replicas are for validation: a quorum of one would accept any single replica's result.
  if (replicas > 1 && quorum < 2) throw invalid('quorum', `must be at least 2 when replicas is ${replicas}: replicas are compared, and one result alone proves nothing`);
  const maxReplicas = input.maxReplicas ?? defaultMaxReplicas(replicas);
  if (maxReplicas < replicas) throw invalid('maxReplicas', `must be at least replicas (${replicas})`);
  if (input.validator) {
    if (replicas < 2) throw invalid('validator', 'compares replicas: it needs replicas of 2 or more');
    if (!IMAGE_RE.test(input.validator.image)) throw invalid('validator/image', `"${input.validator.image}" is not an image reference`);
  }
  if (input.adaptiveReplication === true && replicas < 2) throw invalid('adaptiveReplication', 'needs replicas of 2 or more: it decides when a job runs unreplicated');
  if (input.nativeCommand !== undefined && input.nativeCommand !== null && input.nativeCommand.length === 0) {
    throw invalid('nativeCommand', 'must name a program (or be null for container-only apps)');
  }
  for (const [i, p] of (input.platforms ?? []).entries()) {
    if (!PLATFORM_RE.test(p)) throw invalid(`platforms/${i}`, `"${p}" is not os/arch[/variant], e.g. linux/amd64`);
  }
  return {
    name: input.name,
    description: input.description ?? '',
    image: input.image,
    imageDigest,
    command: input.command ?? [],
    resources: { ...DEFAULT_RESOURCES, ...(input.resources ?? {}) },
    maxRuntimeSeconds: input.maxRuntimeSeconds ?? 3600,
    maxAttempts: input.maxAttempts ?? 3,
    replicas,
    quorum,
    maxReplicas,
    adaptiveReplication: input.adaptiveReplication ?? false,
    validator: input.validator ? { image: input.validator.image, command: input.validator.command ?? [] } : null,
    checkpointing: input.checkpointing ?? false,
    platforms: input.platforms ?? ['linux/amd64'],
    nativeCommand: input.nativeCommand ?? null,
  };
}

export class AppService {
  constructor(private readonly ctx: ServiceContext) {}

  async create(access: ProjectAccess, input: AppInput): Promise<App> {
    return this.ctx.store.createAppVersion(access.project.id, appSpecFrom(input), 'new', this.ctx.now());
  }

  /**
   * A new version of an existing app. Fields the request omits are copied from the latest
   * version (resources field by field), so publishing a new image is one field.
   */
  async newVersion(access: ProjectAccess, name: string, input: AppVersionInput): Promise<App> {
    const latest = await this.ctx.store.getApp(access.project.id, name);
    if (!latest) throw notFound(`app "${name}"`);
    const imageChanged = input.image !== undefined && input.image !== latest.image;
    const merged: AppInput = {
      name,
      description: input.description ?? latest.description,
      image: input.image ?? latest.image,
      command: input.command ?? latest.command,
      resources: { ...latest.resources, ...input.resources },
      maxRuntimeSeconds: input.maxRuntimeSeconds ?? latest.maxRuntimeSeconds,
      maxAttempts: input.maxAttempts ?? latest.maxAttempts,
      replicas: input.replicas ?? latest.replicas,
      quorum: input.quorum ?? (input.replicas !== undefined ? input.replicas : latest.quorum),
      // A new replica count brings its own default limit, unless one is given.
      maxReplicas: input.maxReplicas ?? (input.replicas !== undefined ? undefined : latest.maxReplicas),
      adaptiveReplication: input.adaptiveReplication ?? latest.adaptiveReplication,
      validator: input.validator === undefined ? latest.validator : input.validator,
      checkpointing: input.checkpointing ?? latest.checkpointing,
      platforms: input.platforms ?? latest.platforms,
      nativeCommand: input.nativeCommand === undefined ? latest.nativeCommand : input.nativeCommand,
    };
    // A digest belongs to an image: keep the old one only while the image stays the same.
    const digest = input.imageDigest ?? (imageChanged ? undefined : latest.imageDigest ?? undefined);
    if (digest !== undefined) merged.imageDigest = digest;
    return this.ctx.store.createAppVersion(access.project.id, appSpecFrom(merged), 'version', this.ctx.now());
  }

  async list(access: ProjectAccess): Promise<App[]> {
    return this.ctx.store.listApps(access.project.id);
  }

  async get(access: ProjectAccess, name: string, version?: number): Promise<{ app: App; versions: number[] }> {
    const versions = await this.ctx.store.listAppVersions(access.project.id, name);
    const app = version === undefined ? versions.at(-1) : versions.find((v) => v.version === version);
    if (!app) throw notFound(version === undefined ? `app "${name}"` : `app "${name}" version ${version}`);
    return { app, versions: versions.map((v) => v.version) };
  }
}
