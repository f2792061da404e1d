import type { Command } from 'commander';
import type { AppVersionInput, AppView } from '../../client/types.js';
import type { CliContext } from '../context.js';
import { CliExit, emit, parseId, parseNumber, resourceFlags, table } from '../output.js';

interface AppFlags {
  image?: string;
  digest?: string;
  description?: string;
  command?: string;
  cores?: string;
  memory?: string;
  disk?: string;
  gpus?: string;
  maxRuntime?: string;
  maxAttempts?: string;
  replicas?: string;
  quorum?: string;
  maxReplicas?: string;
  adaptive?: boolean;
  checkpointing?: boolean;
  platform?: string[];
  nativeCommand?: string;
}

function appOptions(c: Command, imageRequired: boolean): Command {
  const image = 'container image, e.g. sci/mandel:1.2 or sci/mandel@sha256:…';
  return (imageRequired ? c.requiredOption('--image <ref>', image) : c.option('--image <ref>', `${image} (default: unchanged)`))
    .option('--digest <sha256:…>', 'image content digest, when known')
    .option('--description <text>', 'what the app computes')
    .option('--command <cmd>', 'default command, split on spaces or a JSON array (the job args are appended)')
    .option('--cores <n>', 'cores per task (default 1)')
    .option('--memory <size>', 'memory per task, e.g. 512Mi, 2Gi (default 512Mi)')
    .option('--disk <size>', 'scratch disk per task (default 1Gi)')
    .option('--gpus <n>', 'GPUs per task (default 0)')
    .option('--max-runtime <seconds>', 'kill a task after this long (default 3600)')
    .option('--max-attempts <n>', 'attempts before a job fails (default 3)')
    .option('--replicas <n>', 'replicas per job, for validation (default 1)')
    .option('--quorum <n>', 'agreeing replicas needed (default: replicas)')
    .option('--max-replicas <n>', 'most replicas a job may run before it fails with no consensus (default: replicas + 4)')
    .option('--adaptive', 'adaptive replication: hosts with a long run of valid results get unreplicated jobs, still spot-checked')
    .option('--checkpointing', 'the app writes /checkpoint and can resume from it')
    .option('--platform <os/arch...>', 'platforms the image runs on (default linux/amd64)')
    .option('--native-command <cmd>', 'also runnable without a container on hosts started with --native (same syntax as --command)');
}

function toInput(o: AppFlags): AppVersionInput {
  const num = (v: string | undefined, flag: string) => (v === undefined ? undefined : parseNumber(v, flag));
  const resources = resourceFlags(o);
  const input: AppVersionInput = {};
  if (o.image !== undefined) input.image = o.image;
  if (o.digest !== undefined) input.imageDigest = o.digest;
  if (o.description !== undefined) input.description = o.description;
  if (o.command !== undefined) input.command = parseCommand(o.command);
  if (Object.keys(resources).length > 0) input.resources = resources;
  const set = <K extends keyof AppVersionInput>(k: K, v: AppVersionInput[K] | undefined) => {
    if (v !== undefined) input[k] = v;
  };
  set('maxRuntimeSeconds', num(o.maxRuntime, '--max-runtime'));
  set('maxAttempts', num(o.maxAttempts, '--max-attempts'));
  set('replicas', num(o.replicas, '--replicas'));
  set('quorum', num(o.quorum, '--quorum'));
  set('maxReplicas', num(o.maxReplicas, '--max-replicas'));
  if (o.adaptive) input.adaptiveReplication = true;
  if (o.checkpointing) input.checkpointing = true;
  set('platforms', o.platform);
  if (o.nativeCommand !== undefined) input.nativeCommand = parseCommand(o.nativeCommand);
  return input;
}

/** `/bin/sh -c` or `["/bin/sh","-c","echo a b"]` (for arguments with spaces). */
export function parseCommand(text: string): string[] {
  if (text.trim().startsWith('[')) {
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      throw new CliExit(2, `error: --command looks like JSON but is not: ${text}`);
    }
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw new CliExit(2, 'error: --command JSON must be an array of strings');
    return v;
  }
  return text.split(/\s+/).filter((x) => x !== '');
}

export function describeApp(a: AppView): string {
  const r = a.resources;
  return [
    `${a.name} v${a.version}${a.description ? ` — ${a.description}` : ''}`,
    `  image:       ${a.image}${a.imageDigest && !a.image.includes('@') ? ` (${a.imageDigest})` : ''}`,
    `  command:     ${a.command.length ? a.command.join(' ') : '(image default)'}`,
    `  resources:   ${r.cores} cores, ${r.memoryMiB} MiB memory, ${r.diskMiB} MiB disk, ${r.gpus} GPUs`,
    `  runtime:     at most ${a.maxRuntimeSeconds} s, ${a.maxAttempts} attempts`,
    `  replication: ${a.replicas === 1 ? 'none' : `${a.replicas} replicas, quorum ${a.quorum}, at most ${a.maxReplicas}${a.adaptiveReplication ? ', adaptive' : ''}`}`,
    ...(a.checkpointing ? ['  checkpointing: yes'] : []),
    `  platforms:   ${a.platforms.join(', ')}`,
    ...(a.nativeCommand ? [`  native:      ${JSON.stringify(a.nativeCommand)}`] : []),
  ].join('\n');
}

export function registerApps(program: Command, ctx: CliContext): void {
  const app = program.command('app').description('register and inspect science applications');

  appOptions(app.command('create <name>').description('register a new app (version 1)'), true).action(async (name: string, o: AppFlags) => {
    const a = await ctx.client().createApp(ctx.connection().project, { name, image: o.image!, ...toInput(o) });
    emit(ctx.globals().json, a, () => `created app ${describeApp(a)}`);
  });

  appOptions(app.command('version <name>').description('publish a new version of an app (omitted settings are kept); existing jobs keep theirs'), false).action(
    async (name: string, o: AppFlags) => {
      const a = await ctx.client().newAppVersion(ctx.connection().project, name, toInput(o));
      emit(ctx.globals().json, a, () => `published ${describeApp(a)}`);
    },
  );

  app.command('list').description('apps of the project (latest versions)').action(async () => {
    const { apps } = await ctx.client().listApps(ctx.connection().project);
    emit(ctx.globals().json, apps, () =>
      apps.length === 0
        ? 'no apps yet: boxgrid app create NAME --image IMAGE'
        : table(['NAME', 'VERSION', 'IMAGE', 'CORES', 'MEMORY'], apps.map((a) => [a.name, a.version, a.image, a.resources.cores, `${a.resources.memoryMiB}Mi`])),
    );
  });

  app
    .command('show <name>')
    .description('one app (latest version unless --app-version)')
    .option('--app-version <n>', 'a specific version')
    .action(async (name: string, o: { appVersion?: string }) => {
      const r = await ctx.client().getApp(ctx.connection().project, name, o.appVersion === undefined ? undefined : parseId(o.appVersion, '--app-version'));
      emit(ctx.globals().json, r, () => `${describeApp(r.app)}\n  versions:    ${r.versions.join(', ')}`);
    });
}
