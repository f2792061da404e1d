import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { outputOf } from '../cli/run-cli.js';

const run = promisify(execFile);

/** The repository root (this file runs from dist/test/helpers). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const CHART = join(ROOT, 'deploy/helm/boxgrid');
const RENDERER_SRC = join(ROOT, 'test/deploy/helm-render');
/** Debian's packaged Go sources the renderer builds from, offline (GOPATH mode). */
const GOPATH = '/usr/share/gocode';
const GO_PACKAGES = ['github.com/Masterminds/sprig', 'github.com/ghodss/yaml'];

export const RENDERER_NOTE =
  'rendered by test/deploy/helm-render, a stand-in for `helm template` (Go text/template + sprig + Helm\'s own functions); ' +
  'no helm binary is to be had here, so `helm lint` and `helm template` themselves were not run';

/**
 * Whether the chart suites can run: Go and the Debian-packaged sprig and yaml sources. Locally a
 * missing piece skips them with the reason; under CI=true it fails them (.ci/run installs them).
 */
export async function helmRenderSuite(): Promise<{ skip: string | false }> {
  const reason = await missingGo();
  if (reason === null) return { skip: false };
  if (process.env.CI === 'true') throw new Error(`CI needs Go to render the Helm chart, but ${reason}`);
  return { skip: `${reason} (apt-get install golang-go golang-github-masterminds-sprig-dev golang-github-ghodss-yaml-dev)` };
}

async function missingGo(): Promise<string | null> {
  try {
    await run('go', ['version']);
  } catch (e) {
    return `no go command (${(e as Error).message.split('\n')[0]})`;
  }
  for (const p of GO_PACKAGES) if (!existsSync(join(GOPATH, 'src', p))) return `${GOPATH}/src/${p} is missing`;
  return null;
}

export interface Renderer {
  render(opts?: RenderOptions): Promise<RenderResult>;
  close(): Promise<void>;
}

export interface RenderOptions {
  /** Values files, as objects (written to temporary files) or paths. */
  values?: Array<Record<string, unknown> | string>;
  set?: string[];
  name?: string;
  namespace?: string;
  /** .Capabilities.KubeVersion (default v1.29.0), checked against Chart.yaml's kubeVersion. */
  kubeVersion?: string;
  /** Print the rendered NOTES.txt instead of the manifests (what `helm install` shows). */
  notes?: boolean;
}

export interface RenderResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Builds the renderer (a few seconds; Go caches the packages) into a temporary directory. */
export async function buildRenderer(): Promise<Renderer> {
  const dir = await mkdtemp(join(tmpdir(), 'boxgrid-helm-render-'));
  const bin = join(dir, 'helm-render');
  const env: NodeJS.ProcessEnv = { ...process.env, GO111MODULE: 'off', GOPATH, GOFLAGS: '', GOTOOLCHAIN: 'local' };
  if (!env.HOME && !env.GOCACHE) env.GOCACHE = join(tmpdir(), 'boxgrid-go-build-cache');
  await run('go', ['build', '-o', bin, '.'], { cwd: RENDERER_SRC, env });
  let files = 0;
  return {
    async render(o = {}) {
      const args = ['--name', o.name ?? 'bg', '--namespace', o.namespace ?? 'grid'];
      for (const v of o.values ?? []) {
        let path = v;
        if (typeof v !== 'string') {
          path = join(dir, `values-${++files}.json`);
          await writeFile(path, JSON.stringify(v)); // JSON is YAML
        }
        args.push('-f', path as string);
      }
      for (const s of o.set ?? []) args.push('--set', s);
      if (o.kubeVersion) args.push('--kube-version', o.kubeVersion);
      if (o.notes) args.push('--notes');
      args.push(CHART);
      return outputOf(spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    },
    close: () => rm(dir, { recursive: true, force: true }),
  };
}

/** A Kubernetes object as rendered (plain data). */
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: unknown;
  [key: string]: unknown;
}

/** Parses rendered output into objects; a document that is not valid YAML fails the test. */
export function parseManifests(text: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`rendered YAML does not parse: ${doc.errors.map((e) => e.message).join('; ')}`);
    const value = doc.toJS() as K8sObject | null;
    if (value !== null) out.push(value);
  }
  return out;
}
