// The Helm chart (deploy/helm/boxgrid), rendered with several sets of values and held to
// Kubernetes' schemas and to the security properties it promises. The renderer is
// test/deploy/helm-render, a stand-in for `helm template` built here from Debian's Go and sprig
// (no helm binary can be had on this machine): `helm lint` and `helm template` were not run,
// and nothing here was applied to a cluster.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { runCli } from '../cli/run-cli.js';
import { buildRenderer, CHART, ROOT, helmRenderSuite, parseManifests, RENDERER_NOTE, type K8sObject, type RenderOptions, type Renderer } from '../helpers/helm.js';
import { schemaErrors } from '../helpers/kube-schema.js';
import { parseTransferKey } from '../../src/service/transfer-signature.js';

const suite = await helmRenderSuite();
const CI_VALUES = (name: string) => join(CHART, 'ci', `${name}-values.yaml`);
const RELEASE = { name: 'bg', namespace: 'grid' };
const SERVER = 'bg-boxgrid-server';
const EXECUTOR = 'bg-boxgrid-executor';
const POSTGRESQL = 'bg-boxgrid-postgresql';
const TRANSFER_KEY = 'bg-boxgrid-server-transfer-key';
/** The labels the executor puts on a task pod (src/sites/kubernetes/job-manifest.ts). */
const TASK_POD_LABELS = {
  'app.kubernetes.io/managed-by': 'boxgrid', 'boxgrid.dev/component': 'task', 'boxgrid.dev/executor': 'k8s', 'boxgrid.dev/task-id': '7', 'boxgrid.dev/job-id': '3',
};

/** The value sets the tests render: name → options. */
const VARIANTS: Record<string, RenderOptions> = {
  'defaults (built-in PostgreSQL)': {},
  'ci/postgresql-values.yaml': { values: [CI_VALUES('postgresql')] },
  'ci/external-db-values.yaml': { values: [CI_VALUES('external-db')] },
  'ci/executor-only-values.yaml': { values: [CI_VALUES('executor-only')] },
};

// Plain-data views of what the tests look into.
interface Container {
  name: string; image: string; args?: string[]; env?: Array<{ name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean } } }>;
  envFrom?: Array<{ secretRef?: { name: string } }>;
  ports?: Array<{ name?: string; containerPort: number }>; resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: Record<string, unknown>; livenessProbe?: Probe; readinessProbe?: Probe; startupProbe?: Probe;
  volumeMounts?: Array<{ name: string; mountPath: string }>;
}
interface Probe { httpGet?: { path: string; port: number | string }; exec?: { command: string[] } }
interface PodSpec {
  containers: Container[]; initContainers?: Container[]; securityContext?: Record<string, unknown>; serviceAccountName?: string;
  automountServiceAccountToken?: boolean; hostNetwork?: boolean; hostPID?: boolean; hostIPC?: boolean;
  volumes?: Array<{ name: string; hostPath?: unknown; emptyDir?: unknown; persistentVolumeClaim?: { claimName: string } }>;
}
interface Workload { obj: K8sObject; labels: Record<string, string>; spec: PodSpec }
interface Selector { matchLabels?: Record<string, string>; matchExpressions?: unknown[] }

function workloads(objs: K8sObject[]): Workload[] {
  return objs
    .filter((o) => ['Deployment', 'StatefulSet', 'DaemonSet', 'Job', 'CronJob'].includes(o.kind))
    .map((o) => {
      const template = (o as { spec: { template: { metadata: { labels: Record<string, string> }; spec: PodSpec } } }).spec.template;
      return { obj: o, labels: template.metadata.labels, spec: template.spec };
    });
}
const find = (objs: K8sObject[], kind: string, name: string): K8sObject | undefined => objs.find((o) => o.kind === kind && o.metadata.name === name);
function get<T = Record<string, unknown>>(objs: K8sObject[], kind: string, name: string): K8sObject & T {
  const o = find(objs, kind, name);
  assert.ok(o, `a ${kind} ${name} is rendered (have: ${objs.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')})`);
  return o as K8sObject & T;
}
function workload(objs: K8sObject[], kind: string, name: string): Workload {
  const w = workloads(objs).find((x) => x.obj.kind === kind && x.obj.metadata.name === name);
  assert.ok(w, `a ${kind} ${name} is rendered`);
  return w;
}
/** Whether a label selector (matchLabels only: the chart uses no expressions) picks these labels. */
function selects(selector: Selector, labels: Record<string, string>): boolean {
  assert.equal(selector.matchExpressions, undefined, 'the chart selects by matchLabels only');
  return Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
}
const kinds = (objs: K8sObject[]) => objs.map((o) => `${o.kind}/${o.metadata.name}`).sort();
function flagValue(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i < 0 ? undefined : args[i + 1];
}
const flagValues = (args: string[], flag: string) => args.flatMap((a, i) => (a === flag ? [args[i + 1]!] : []));
/** The `--long-flags` a `boxgrid … --help` lists. */
async function helpFlags(...command: string[]): Promise<Set<string> | null> {
  const r = await runCli([...command, '--help']);
  if (r.code !== 0) return null;
  return new Set(r.stdout.match(/--[a-z][a-z0-9-]*/g) ?? []);
}

describe(`Helm chart (${RENDERER_NOTE})`, { skip: suite.skip }, () => {
  let renderer: Renderer;
  const rendered = new Map<string, K8sObject[]>();
  const render = async (o: RenderOptions = {}): Promise<K8sObject[]> => {
    const r = await renderer.render({ ...RELEASE, ...o });
    assert.equal(r.code, 0, `render failed: ${r.stderr}`);
    return parseManifests(r.stdout);
  };
  const renderError = async (o: RenderOptions): Promise<string> => {
    const r = await renderer.render({ ...RELEASE, ...o });
    assert.notEqual(r.code, 0, `rendering ${JSON.stringify(o)} should fail, but gave:\n${r.stdout.slice(0, 500)}`);
    assert.equal(r.stdout, '', 'a failed render prints no manifests');
    return r.stderr.trim();
  };
  before(async () => {
    renderer = await buildRenderer();
    for (const [name, opts] of Object.entries(VARIANTS)) rendered.set(name, await render(opts));
  });
  after(async () => renderer?.close());

  test('each set of values renders exactly the objects it should', () => {
    const common = [`Role/${EXECUTOR}`, `RoleBinding/${EXECUTOR}`, `ServiceAccount/${EXECUTOR}`, `Deployment/${EXECUTOR}`, `NetworkPolicy/${EXECUTOR}`, 'NetworkPolicy/bg-boxgrid-tasks', `PersistentVolumeClaim/${EXECUTOR}`];
    const server = [`Deployment/${SERVER}`, `Service/${SERVER}`, `ServiceAccount/${SERVER}`, `NetworkPolicy/${SERVER}`, `Secret/${TRANSFER_KEY}`];
    const postgresql = [`StatefulSet/${POSTGRESQL}`, `Service/${POSTGRESQL}`, `Secret/${POSTGRESQL}`, `NetworkPolicy/${POSTGRESQL}`];
    const expected: Record<string, string[]> = {
      'defaults (built-in PostgreSQL)': [...common, ...server, ...postgresql, `PersistentVolumeClaim/${SERVER}`],
      'ci/postgresql-values.yaml': [...common, ...server, ...postgresql, `PersistentVolumeClaim/${SERVER}`, `Ingress/${SERVER}`],
      'ci/external-db-values.yaml': [...common, ...server, `PodDisruptionBudget/${SERVER}`],
      'ci/executor-only-values.yaml': common,
    };
    for (const [name, want] of Object.entries(expected)) assert.deepEqual(kinds(rendered.get(name)!), want.sort(), name);
  });

  test('every rendered object is a valid Kubernetes object (kubernetes-models schemas; no unknown fields)', async () => {
    for (const [name, objs] of rendered) {
      for (const o of objs) {
        assert.deepEqual(await schemaErrors(o), [], `${name}: ${o.kind} ${o.metadata.name}`);
        assert.ok(o.metadata.labels?.['app.kubernetes.io/instance'] === 'bg' && o.metadata.labels['helm.sh/chart'] === 'boxgrid-0.1.0', `${name}: ${o.kind} ${o.metadata.name} carries the chart's labels`);
      }
    }
    // The schema check itself bites: a misspelt field and a wrong type are caught.
    const d = get(rendered.get('defaults (built-in PostgreSQL)')!, 'Deployment', SERVER);
    const bad = structuredClone(d) as K8sObject & { spec: { template: { spec: PodSpec } } };
    bad.spec.template.spec.containers[0]!.securityContext = { readOnlyRootFileSystem: true };
    (bad.spec.template.spec.containers[0]!.ports![0] as { containerPort: unknown }).containerPort = '8470';
    const errors = await schemaErrors(bad);
    assert.ok(errors.some((e) => /containerPort must be integer/.test(e)), errors.join('\n'));
    assert.ok(errors.some((e) => /unknown field "readOnlyRootFileSystem"/.test(e)), errors.join('\n'));
  });

  test('every container runs locked down: not root, read-only root, no escalation, no capabilities, RuntimeDefault seccomp, resource requests', () => {
    for (const [name, objs] of rendered) {
      for (const w of workloads(objs)) {
        const where = `${name}: ${w.obj.kind} ${w.obj.metadata.name}`;
        const pod = w.spec;
        assert.notEqual(pod.hostNetwork, true, where);
        assert.notEqual(pod.hostPID, true, where);
        assert.notEqual(pod.hostIPC, true, where);
        for (const v of pod.volumes ?? []) {
          const kinds = Object.keys(v).filter((k) => k !== 'name');
          assert.ok(kinds.length === 1 && ['emptyDir', 'persistentVolumeClaim'].includes(kinds[0]!), `${where}: volume ${v.name} is an emptyDir or a claim (no hostPath)`);
        }
        assert.equal(pod.securityContext?.runAsNonRoot, true, where);
        assert.deepEqual(pod.securityContext?.seccompProfile, { type: 'RuntimeDefault' }, where);
        // Only the executor talks to the Kubernetes API.
        assert.equal(pod.automountServiceAccountToken, w.obj.metadata.name === EXECUTOR, `${where}: service account token mounted only into the executor`);
        const containers = [...pod.containers, ...(pod.initContainers ?? [])];
        assert.ok(containers.length > 0, where);
        for (const c of containers) {
          const sc = c.securityContext ?? {};
          const at = `${where}, container ${c.name}`;
          assert.equal(sc.runAsNonRoot, true, at);
          assert.ok(typeof sc.runAsUser === 'number' && sc.runAsUser > 0, `${at}: runs as a uid other than 0`);
          assert.equal(sc.readOnlyRootFilesystem, true, at);
          assert.equal(sc.allowPrivilegeEscalation, false, at);
          assert.notEqual(sc.privileged, true, at);
          assert.deepEqual(sc.capabilities, { drop: ['ALL'] }, `${at}: drops every capability, adds none`);
          assert.deepEqual(sc.seccompProfile, { type: 'RuntimeDefault' }, at);
          assert.ok(c.resources?.requests?.cpu && c.resources.requests.memory, `${at}: requests cpu and memory`);
          assert.ok(c.resources?.limits?.memory, `${at}: a memory limit`);
          // A read-only root needs somewhere to write: /tmp is an emptyDir everywhere.
          assert.ok(c.volumeMounts?.some((m) => m.mountPath === '/tmp'), `${at}: a writable /tmp`);
        }
      }
    }
  });

  test('the server: /healthz liveness, /readyz readiness, on the port from the values, which the Service and the policies use', async () => {
    for (const port of [8470, 9000]) {
      const objs = port === 8470 ? rendered.get('defaults (built-in PostgreSQL)')! : await render({ set: [`server.port=${port}`, 'server.service.port=80'] });
      const { spec } = workload(objs, 'Deployment', SERVER);
      const c = spec.containers[0]!;
      assert.equal(flagValue(c.args!, '--listen'), `0.0.0.0:${port}`);
      assert.deepEqual(c.ports, [{ name: 'http', containerPort: port, protocol: 'TCP' }]);
      assert.deepEqual(c.livenessProbe?.httpGet, { path: '/healthz', port: 'http' });
      assert.deepEqual(c.readinessProbe?.httpGet, { path: '/readyz', port: 'http' });
      assert.deepEqual(c.startupProbe?.httpGet, { path: '/healthz', port: 'http' }, 'a startup probe gives migrations time before liveness counts');
      const service = get<{ spec: { ports: Array<{ port: number; targetPort: string }>; selector: Record<string, string> } }>(objs, 'Service', SERVER);
      assert.deepEqual(service.spec.ports.map((p) => [p.port, p.targetPort]), [[port === 8470 ? 8470 : 80, 'http']]);
      assert.ok(selects({ matchLabels: service.spec.selector }, workload(objs, 'Deployment', SERVER).labels));
      const policy = get<{ spec: { ingress: Array<{ ports: Array<{ port: number }> }> } }>(objs, 'NetworkPolicy', SERVER);
      assert.deepEqual(policy.spec.ingress[0]!.ports, [{ protocol: 'TCP', port }], 'the server policy opens the port the server listens on');
      const executor = workload(objs, 'Deployment', EXECUTOR).spec.containers[0]!;
      assert.equal(flagValue(executor.args!, '--server'), `http://${SERVER}.grid.svc:${port === 8470 ? 8470 : 80}`, 'the executor reaches the server through its Service');
    }
  });

  test("the chart's server and executor flags are ones the CLI has", async (t) => {
    const server = await helpFlags('server');
    assert.ok(server, '`boxgrid server --help` answers');
    const objs = rendered.get('ci/external-db-values.yaml')!;
    for (const a of workload(objs, 'Deployment', SERVER).spec.containers[0]!.args!.filter((x) => x.startsWith('--'))) {
      assert.ok(server.has(a), `boxgrid server has ${a}`);
    }
    const executor = await helpFlags('executor', 'kubernetes');
    if (executor === null) {
      t.skip('`boxgrid executor kubernetes` is not in this build of the CLI yet: its flags were checked against the agreed list only');
      return;
    }
    const args = workload(rendered.get('ci/postgresql-values.yaml')!, 'Deployment', EXECUTOR).spec.containers[0]!.args!;
    assert.deepEqual(args.slice(0, 2), ['executor', 'kubernetes']);
    for (const a of args.filter((x) => x.startsWith('--'))) assert.ok(executor.has(a), `boxgrid executor kubernetes has ${a}`);
  });

  test('built-in PostgreSQL: one password Secret for both sides, kept out of the URL; probes; only the server may connect', async () => {
    const objs = rendered.get('defaults (built-in PostgreSQL)')!;
    const secret = get<{ data: { password: string } }>(objs, 'Secret', POSTGRESQL);
    assert.match(Buffer.from(secret.data.password, 'base64').toString(), /^[A-Za-z0-9]{32}$/);
    assert.equal(secret.metadata.annotations?.['helm.sh/resource-policy'], 'keep', 'an uninstall keeps the password the database was made with');
    const server = workload(objs, 'Deployment', SERVER).spec.containers[0]!;
    const env = Object.fromEntries((server.env ?? []).map((e) => [e.name, e]));
    assert.deepEqual(env.PGPASSWORD?.valueFrom?.secretKeyRef, { name: POSTGRESQL, key: 'password' });
    assert.equal(env.BOXGRID_DATABASE_URL?.value, `postgres://boxgrid@${POSTGRESQL}:5432/boxgrid`, 'no password in the URL (node-postgres takes PGPASSWORD)');
    assert.equal(flagValue(server.args!, '--db'), undefined, 'the URL comes from the environment, not the command line');
    const pg = workload(objs, 'StatefulSet', POSTGRESQL);
    const pgc = pg.spec.containers[0]!;
    const pgEnv = Object.fromEntries((pgc.env ?? []).map((e) => [e.name, e]));
    assert.deepEqual(pgEnv.POSTGRES_PASSWORD?.valueFrom?.secretKeyRef, { name: POSTGRESQL, key: 'password' });
    assert.equal(pgEnv.PGDATA?.value, '/var/lib/postgresql/data/pgdata');
    for (const p of [pgc.livenessProbe, pgc.readinessProbe]) assert.equal(p?.exec?.command[0], 'pg_isready');
    const service = get<{ spec: { selector: Record<string, string> } }>(objs, 'Service', POSTGRESQL);
    assert.ok(selects({ matchLabels: service.spec.selector }, pg.labels));
    const policy = get<{ spec: { podSelector: Selector; policyTypes: string[]; ingress: Array<{ from: Array<{ podSelector: Selector }>; ports: unknown[] }> } }>(objs, 'NetworkPolicy', POSTGRESQL);
    assert.ok(selects(policy.spec.podSelector, pg.labels), 'the policy covers the PostgreSQL pod');
    assert.deepEqual(policy.spec.policyTypes, ['Ingress']);
    assert.equal(policy.spec.ingress.length, 1);
    assert.deepEqual(policy.spec.ingress[0]!.ports, [{ protocol: 'TCP', port: 5432 }]);
    const from = policy.spec.ingress[0]!.from;
    assert.equal(from.length, 1);
    for (const w of workloads(objs)) {
      assert.equal(selects(from[0]!.podSelector, w.labels), w.obj.metadata.name === SERVER, `${w.obj.metadata.name} may${w.obj.metadata.name === SERVER ? '' : ' not'} reach PostgreSQL`);
    }
    assert.equal(selects(from[0]!.podSelector, TASK_POD_LABELS), false, 'task pods may not reach PostgreSQL');
    // An existing Secret instead of a generated one.
    const own = await render({ set: ['postgresql.auth.existingSecret=pg-own'] });
    assert.equal(find(own, 'Secret', POSTGRESQL), undefined, 'no generated Secret');
    const e = workload(own, 'Deployment', SERVER).spec.containers[0]!.env!.find((x) => x.name === 'PGPASSWORD');
    assert.deepEqual(e?.valueFrom?.secretKeyRef, { name: 'pg-own', key: 'password' });
    assert.deepEqual(workload(own, 'StatefulSet', POSTGRESQL).spec.containers[0]!.env!.find((x) => x.name === 'POSTGRES_PASSWORD')?.valueFrom?.secretKeyRef, { name: 'pg-own', key: 'password' });
  });

  test('external database: the URL from the operator\'s Secret, and no PostgreSQL object at all', () => {
    const objs = rendered.get('ci/external-db-values.yaml')!;
    assert.deepEqual(objs.filter((o) => /postgres/i.test(JSON.stringify(o.metadata)) || o.kind === 'StatefulSet' || (o.kind === 'Secret' && o.metadata.name !== TRANSFER_KEY)), []);
    const server = workload(objs, 'Deployment', SERVER).spec.containers[0]!;
    const url = server.env?.find((e) => e.name === 'BOXGRID_DATABASE_URL');
    assert.deepEqual(url?.valueFrom?.secretKeyRef, { name: 'boxgrid-db', key: 'url' });
    assert.equal(server.env?.find((e) => e.name === 'PGPASSWORD'), undefined);
    assert.deepEqual(server.envFrom, [{ secretRef: { name: 'boxgrid-s3' } }], 'S3 credentials from their Secret');
    assert.equal(server.image, 'registry.example/boxgrid@sha256:2b7412e6465c3c7fc5bb21d3e6f1917c167358449fecac8176c6e496e5c1f05f', 'a digest pins the image');
  });

  test('several servers: only with S3 blobs; nothing of one pod is shared (no volume claim), and a disruption budget', () => {
    const objs = rendered.get('ci/external-db-values.yaml')!;
    const d = workload(objs, 'Deployment', SERVER);
    assert.equal((d.obj as { spec: { replicas: number } }).spec.replicas, 3);
    assert.equal((d.obj as { spec: { strategy?: unknown } }).spec.strategy, undefined, 'a rolling update (one server at a time)');
    assert.equal(flagValue(d.spec.containers[0]!.args!, '--blobs'), 's3://boxgrid-blobs/prod?endpoint=https://s3.example:9000&pathStyle=true');
    assert.equal(find(objs, 'PersistentVolumeClaim', SERVER), undefined);
    assert.deepEqual(d.spec.volumes?.find((v) => v.name === 'data'), { name: 'data', emptyDir: {} });
    const pdb = get<{ spec: { minAvailable: number; selector: Selector } }>(objs, 'PodDisruptionBudget', SERVER);
    assert.equal(pdb.spec.minAvailable, 1);
    assert.ok(selects(pdb.spec.selector, d.labels));
    // One server keeps its data dir (admin token, blobs) on a claim and is replaced, not rolled.
    const one = rendered.get('defaults (built-in PostgreSQL)')!;
    const single = workload(one, 'Deployment', SERVER);
    assert.deepEqual((single.obj as { spec: { strategy?: unknown } }).spec.strategy, { type: 'Recreate' });
    assert.deepEqual(single.spec.volumes?.find((v) => v.name === 'data')?.persistentVolumeClaim, { claimName: SERVER });
    assert.equal(flagValue(single.spec.containers[0]!.args!, '--data'), '/data/server');
    assert.ok(single.spec.containers[0]!.volumeMounts?.some((m) => m.name === 'data' && m.mountPath === '/data'));
  });

  test('the transfer key: one Secret, made once (kept on upgrades by lookup) or the operator\'s, that every server reads as BOXGRID_TRANSFER_KEY', async () => {
    for (const name of ['defaults (built-in PostgreSQL)', 'ci/external-db-values.yaml']) {
      const objs = rendered.get(name)!;
      const secret = get<{ type: string; data: Record<string, string> }>(objs, 'Secret', TRANSFER_KEY);
      assert.equal(secret.type, 'Opaque');
      assert.deepEqual(Object.keys(secret.data), ['key'], name);
      const text = Buffer.from(secret.data.key!, 'base64').toString();
      assert.match(text, /^[A-Za-z0-9+/]{43}=$/, `${name}: 32 random bytes, base64`);
      assert.equal(parseTransferKey(text, 'the Secret').length, 32, `${name}: a key the server takes`);
      assert.equal(secret.metadata.labels?.['app.kubernetes.io/component'], 'server');
      const d = workload(objs, 'Deployment', SERVER);
      const env = d.spec.containers[0]!.env!.filter((e) => e.name === 'BOXGRID_TRANSFER_KEY');
      assert.deepEqual(env, [{ name: 'BOXGRID_TRANSFER_KEY', valueFrom: { secretKeyRef: { name: TRANSFER_KEY, key: 'key' } } }], `${name}: every replica the same key, from the Secret`);
    }
    assert.equal((workload(rendered.get('ci/external-db-values.yaml')!, 'Deployment', SERVER).obj as { spec: { replicas: number } }).spec.replicas, 3, 'several servers share it');
    // Under `helm template` lookup finds nothing: each render makes a new key (hence existingSecret for such tools).
    const again = get<{ data: Record<string, string> }>(await render(), 'Secret', TRANSFER_KEY);
    assert.notEqual(again.data.key, get<{ data: Record<string, string> }>(rendered.get('defaults (built-in PostgreSQL)')!, 'Secret', TRANSFER_KEY).data.key);
    // The operator's Secret instead.
    const own = await render({ set: ['server.transferKey.existingSecret=grid-transfer-key', 'server.transferKey.key=k'] });
    assert.equal(find(own, 'Secret', TRANSFER_KEY), undefined, 'no generated Secret');
    assert.deepEqual(workload(own, 'Deployment', SERVER).spec.containers[0]!.env!.find((e) => e.name === 'BOXGRID_TRANSFER_KEY')?.valueFrom?.secretKeyRef, { name: 'grid-transfer-key', key: 'k' });
    // No server, no key: the executor never signs.
    const executorOnly = rendered.get('ci/executor-only-values.yaml')!;
    assert.equal(executorOnly.some((o) => o.kind === 'Secret'), false);
    assert.ok(!JSON.stringify(executorOnly).includes('BOXGRID_TRANSFER_KEY'));
  });

  test("the executor's Role: namespaced (Role + RoleBinding, no ClusterRole), exactly the verbs it needs, nothing on Secrets", async () => {
    const withJobNamespace = await render({ set: ['executor.jobNamespace=boxgrid-tasks'] });
    const cases: Array<[string, K8sObject[], string]> = [
      ['defaults', rendered.get('defaults (built-in PostgreSQL)')!, 'grid'],
      ['executor only, tasks in their own namespace', rendered.get('ci/executor-only-values.yaml')!, 'boxgrid-tasks'],
      ['executor.jobNamespace', withJobNamespace, 'boxgrid-tasks'],
    ];
    for (const [name, objs, jobNamespace] of cases) {
      assert.deepEqual(objs.filter((o) => /^Cluster/.test(o.kind)), [], `${name}: no cluster-wide RBAC`);
      const roles = objs.filter((o) => o.kind === 'Role');
      assert.equal(roles.length, 1, name);
      const role = roles[0] as K8sObject & { rules: Array<{ apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[]; nonResourceURLs?: string[] }> };
      assert.equal(role.metadata.namespace, jobNamespace, `${name}: the Role is in the namespace of the task Jobs`);
      const grants = role.rules.flatMap((r) => {
        assert.equal(r.nonResourceURLs, undefined);
        return r.apiGroups.flatMap((g) => r.resources.flatMap((res) => r.verbs.map((v) => `${g === '' ? 'core' : g}/${res}:${v}`)));
      });
      assert.deepEqual(grants.sort(), [
        'batch/jobs:create', 'batch/jobs:delete', 'batch/jobs:list',
        'core/pods/log:get', 'core/pods:list', 'core/pods:watch',
        'core/resourcequotas:list',
      ], `${name}: exactly these grants`);
      assert.ok(!JSON.stringify(role.rules).includes('*'), `${name}: no wildcard`);
      assert.ok(!/secrets|configmaps|escalate|bind|impersonate/.test(JSON.stringify(role.rules)), name);
      const binding = objs.find((o) => o.kind === 'RoleBinding') as K8sObject & { roleRef: unknown; subjects: unknown[] };
      assert.equal(binding.metadata.namespace, jobNamespace);
      assert.deepEqual(binding.roleRef, { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: role.metadata.name });
      assert.deepEqual(binding.subjects, [{ kind: 'ServiceAccount', name: EXECUTOR, namespace: 'grid' }]);
      const executor = workload(objs, 'Deployment', EXECUTOR);
      assert.equal(executor.spec.serviceAccountName, EXECUTOR, `${name}: the executor runs as the bound account`);
      assert.equal(flagValue(executor.spec.containers[0]!.args!, '--namespace'), jobNamespace, `${name}: and makes its Jobs where the Role is`);
      const sa = get<{ automountServiceAccountToken: boolean }>(objs, 'ServiceAccount', EXECUTOR);
      assert.equal(sa.automountServiceAccountToken, false, 'the token is mounted by the executor pod alone');
    }
  });

  test('NetworkPolicies: task pods take no connection and reach only DNS and the server; the server takes only its port; the executor nothing', async () => {
    const dns = {
      to: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } }, podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } } }],
      ports: [{ protocol: 'UDP', port: 53 }, { protocol: 'TCP', port: 53 }],
    };
    const serverPods = { 'app.kubernetes.io/name': 'boxgrid', 'app.kubernetes.io/instance': 'bg', 'app.kubernetes.io/component': 'server' };
    const cases: Array<[string, K8sObject[], string, unknown]> = [
      ['defaults', rendered.get('defaults (built-in PostgreSQL)')!, 'grid', { to: [{ podSelector: { matchLabels: serverPods } }], ports: [{ protocol: 'TCP', port: 8470 }] }],
      ['tasks in another namespace', await render({ set: ['executor.jobNamespace=boxgrid-tasks'] }), 'boxgrid-tasks',
        { to: [{ podSelector: { matchLabels: serverPods }, namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'grid' } } }], ports: [{ protocol: 'TCP', port: 8470 }] }],
      ['the server elsewhere', rendered.get('ci/executor-only-values.yaml')!, 'boxgrid-tasks', { to: [{ ipBlock: { cidr: '203.0.113.10/32' } }], ports: [{ protocol: 'TCP', port: 443 }] }],
    ];
    for (const [name, objs, namespace, toServer] of cases) {
      const tasks = get<{ spec: { podSelector: Selector; policyTypes: string[]; ingress: unknown[]; egress: unknown[] } }>(objs, 'NetworkPolicy', 'bg-boxgrid-tasks');
      assert.equal(tasks.metadata.namespace, namespace, `${name}: the policy sits where the task pods run`);
      assert.ok(selects(tasks.spec.podSelector, TASK_POD_LABELS), `${name}: it covers task pods`);
      for (const w of workloads(objs)) assert.equal(selects(tasks.spec.podSelector, w.labels), false, `${name}: and not ${w.obj.metadata.name}`);
      assert.deepEqual(tasks.spec.policyTypes, ['Ingress', 'Egress'], `${name}: default-deny both ways`);
      assert.deepEqual(tasks.spec.ingress, [], `${name}: no ingress at all`);
      assert.deepEqual(tasks.spec.egress, [dns, toServer], `${name}: egress to DNS and the server only`);
      if (name === 'defaults') {
        const server = workload(objs, 'Deployment', SERVER);
        assert.ok(selects((toServer as { to: Array<{ podSelector: Selector }> }).to[0]!.podSelector, server.labels), 'the egress rule picks the server pods');
      }
      const executor = get<{ spec: { podSelector: Selector; policyTypes: string[]; ingress: unknown[] } }>(objs, 'NetworkPolicy', EXECUTOR);
      assert.ok(selects(executor.spec.podSelector, workload(objs, 'Deployment', EXECUTOR).labels));
      assert.deepEqual([executor.spec.policyTypes, executor.spec.ingress], [['Ingress'], []], `${name}: nothing may connect to the executor`);
    }
    const objs = rendered.get('defaults (built-in PostgreSQL)')!;
    const server = get<{ spec: { podSelector: Selector; policyTypes: string[]; ingress: unknown[] } }>(objs, 'NetworkPolicy', SERVER);
    assert.ok(selects(server.spec.podSelector, workload(objs, 'Deployment', SERVER).labels));
    for (const w of workloads(objs)) assert.equal(selects(server.spec.podSelector, w.labels), w.obj.metadata.name === SERVER);
    assert.deepEqual([server.spec.policyTypes, server.spec.ingress], [['Ingress'], [{ ports: [{ protocol: 'TCP', port: 8470 }] }]], 'its port, from anywhere, and nothing else');
    const narrowed = get<{ spec: { ingress: unknown[] } }>(rendered.get('ci/external-db-values.yaml')!, 'NetworkPolicy', SERVER);
    assert.deepEqual(narrowed.spec.ingress, [{ ports: [{ protocol: 'TCP', port: 8470 }], from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'ingress-nginx' } } }] }], 'networkPolicy.server.from narrows who');
    const off = await render({ set: ['networkPolicy.enabled=false'] });
    assert.deepEqual(off.filter((o) => o.kind === 'NetworkPolicy'), [], 'networkPolicy.enabled=false renders none');
  });

  test('the executor: its flags from the values, the token from an optional Secret, its credential on its own volume', () => {
    const objs = rendered.get('ci/postgresql-values.yaml')!;
    const c = workload(objs, 'Deployment', EXECUTOR);
    const args = c.spec.containers[0]!.args!;
    assert.deepEqual(args, [
      'executor', 'kubernetes',
      '--name', 'bg-boxgrid',
      '--server', `http://${SERVER}.grid.svc:8470`,
      '--state-dir', '/state',
      '--namespace', 'grid',
      '--job-image', 'registry.example/boxgrid:0.1.0',
      '--max-pending', '10',
      '--create-rate', '5',
      '--max-cores', '64',
      '--max-memory', '256Gi',
      '--max-gpus', '0',
      '--max-task-disk', '20Gi',
      '--node-selector', 'pool=batch',
      '--toleration', 'dedicated=grid:NoSchedule',
      '--ttl-seconds', '600',
      '--staging-seconds', '300',
      '--pending-timeout', '600',
    ]);
    assert.equal(c.spec.containers[0]!.image, 'registry.example/boxgrid:0.1.0');
    assert.deepEqual(c.spec.containers[0]!.env?.find((e) => e.name === 'BOXGRID_ENROLL_TOKEN')?.valueFrom?.secretKeyRef, { name: 'bg-boxgrid-enroll-token', key: 'token', optional: true });
    assert.deepEqual(c.spec.volumes?.find((v) => v.name === 'state')?.persistentVolumeClaim, { claimName: EXECUTOR });
    assert.ok(c.spec.containers[0]!.volumeMounts?.some((m) => m.name === 'state' && m.mountPath === '/state'));
    assert.equal((c.obj as { spec: { replicas: number } }).spec.replicas, 1, 'one executor per credential');
    const defaults = workload(rendered.get('defaults (built-in PostgreSQL)')!, 'Deployment', EXECUTOR).spec.containers[0]!.args!;
    for (const flag of ['--node-selector', '--toleration', '--transfer-server']) assert.equal(defaults.includes(flag), false, `no ${flag} by default`);
    assert.deepEqual(['--max-cores', '--max-memory', '--max-gpus', '--ttl-seconds'].map((f) => flagValue(defaults, f)), ['8', '16Gi', '0', '3600'], 'the share is explicit in the values');
    assert.equal(flagValue(defaults, '--job-image'), 'boxgrid/boxgrid:0.1.0', "staging runs boxgrid's own image, by default the chart's appVersion");
    const elsewhere = workload(rendered.get('ci/executor-only-values.yaml')!, 'Deployment', EXECUTOR).spec.containers[0]!;
    assert.equal(flagValue(elsewhere.args!, '--server'), 'https://grid.example.org');
    assert.deepEqual(elsewhere.env?.find((e) => e.name === 'BOXGRID_ENROLL_TOKEN')?.valueFrom?.secretKeyRef, { name: 'grid-enroll', key: 'token', optional: true });
  });

  test('several node selectors and tolerations become one flag each; a transfer server of its own widens the task policy only as told', async () => {
    const extraEgress = [{ to: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'ingress-nginx' } } }], ports: [{ protocol: 'TCP', port: 443 }] }];
    const objs = await render({
      values: [{
        executor: { name: 'k8s-a', transferServer: 'https://grid.example.org', taskNodeSelector: { pool: 'batch', 'topology.kubernetes.io/zone': 'a' }, taskTolerations: ['a=b:NoSchedule', 'gpu:NoExecute'], maxCores: 0.5 },
        networkPolicy: { tasks: { extraEgress } },
      }],
    });
    const args = workload(objs, 'Deployment', EXECUTOR).spec.containers[0]!.args!;
    assert.deepEqual(flagValues(args, '--node-selector'), ['pool=batch', 'topology.kubernetes.io/zone=a']);
    assert.deepEqual(flagValues(args, '--toleration'), ['a=b:NoSchedule', 'gpu:NoExecute']);
    assert.equal(flagValue(args, '--max-cores'), '0.5');
    assert.equal(flagValue(args, '--name'), 'k8s-a');
    assert.equal(flagValue(args, '--transfer-server'), 'https://grid.example.org');
    const long = await render({ set: ['fullnameOverride=a-very-long-release-name-that-is-longer-than-forty'] });
    assert.equal(flagValue(workload(long, 'Deployment', 'a-very-long-release-name-that-is-longer-than-forty-executor').spec.containers[0]!.args!, '--name'),
      'a-very-long-release-name-that-is-longer', 'the default name is cut to the CLI\'s 40 characters');
    const tasks = get<{ spec: { egress: unknown[] } }>(objs, 'NetworkPolicy', 'bg-boxgrid-tasks');
    assert.equal(tasks.spec.egress.length, 3);
    assert.deepEqual(tasks.spec.egress[2], extraEgress[0]);
  });

  test('NOTES.txt tells the operator commands that fit the manifests and the CLI', async () => {
    const r = await renderer.render({ ...RELEASE, notes: true });
    assert.equal(r.code, 0, r.stderr);
    const objs = rendered.get('defaults (built-in PostgreSQL)')!;
    const server = workload(objs, 'Deployment', SERVER).spec.containers[0]!;
    const dataDir = flagValue(server.args!, '--data')!;
    assert.ok(r.stdout.includes(`kubectl -n grid exec deploy/${SERVER} -- cat ${dataDir}/admin.token`), r.stdout);
    assert.equal(server.env?.find((e) => e.name === 'BOXGRID_DATA')?.value, dataDir, '`kubectl exec … -- boxgrid …` finds the server through BOXGRID_DATA');
    const ref = workload(objs, 'Deployment', EXECUTOR).spec.containers[0]!.env!.find((e) => e.name === 'BOXGRID_ENROLL_TOKEN')!.valueFrom!.secretKeyRef!;
    assert.ok(r.stdout.includes(`kubectl -n grid create secret generic ${ref.name} --from-literal=${ref.key}="$TOKEN"`), r.stdout);
    const create = /boxgrid enroll-token create ([^|]+)\|/.exec(r.stdout);
    assert.ok(create, r.stdout);
    const help = (await runCli(['enroll-token', 'create', '--help'])).stdout + (await runCli(['--help'])).stdout; // --json is global
    for (const flag of create[1]!.match(/--[a-z-]+/g)!) assert.ok(help.includes(`${flag} `), `enroll-token create has ${flag}`);
  });

  test("Chart.yaml: boxgrid's version is the appVersion (the default image tag); Kubernetes 1.29 or later (native sidecars)", async () => {
    const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    const chart = parse(await readFile(join(CHART, 'Chart.yaml'), 'utf8')) as { appVersion: string; kubeVersion: string };
    assert.equal(chart.appVersion, pkg.version);
    const old = await renderer.render({ ...RELEASE, kubeVersion: 'v1.28.9' });
    assert.notEqual(old.code, 0);
    assert.match(old.stderr, /chart requires kubeVersion: >=1\.29\.0-0 which is incompatible with Kubernetes v1\.28\.9/);
    assert.equal((await renderer.render({ ...RELEASE, kubeVersion: 'v1.33.1' })).code, 0);
  });

  test('values that cannot work fail the render with a message that says what to set', async () => {
    const cases: Array<[RenderOptions, RegExp]> = [
      [{ set: ['postgresql.enabled=false'] }, /externalDatabase\.existingSecret is required when postgresql\.enabled=false/],
      [{ set: ['server.replicas=3'] }, /server\.replicas=3 needs blobs every server shares: set server\.blobs to an s3:\/\/BUCKET/],
      [{ set: ['server.replicas=2', 'server.blobs=/mnt/shared'] }, /server\.replicas=2 needs blobs every server shares/],
      [{ set: ['postgresql.enabled=false', 'externalDatabase.existingSecret=db', 'server.replicas=2'] }, /server\.replicas=2 needs blobs every server shares/],
      [{ set: ['externalDatabase.existingSecret=db'] }, /postgresql\.enabled=true and externalDatabase\.existingSecret are both set/],
      [{ set: ['server.enabled=false', 'postgresql.enabled=false'] }, /executor\.server is required when server\.enabled=false|networkPolicy\.tasks\.serverCIDR is required/],
      [{ set: ['server.enabled=false', 'postgresql.enabled=false', 'executor.server=https://grid.example.org'] }, /networkPolicy\.tasks\.serverCIDR is required when server\.enabled=false/],
      [{ set: ['server.enabled=false'] }, /postgresql\.enabled=true needs server\.enabled=true/],
      [{ values: [{ executor: { taskTolerations: ['dedicated=grid'] } }] }, /executor\.taskTolerations: "dedicated=grid" is not key=value:Effect or key:Effect/],
      [{ values: [{ executor: { taskTolerations: ['a=b:Sometimes'] } }] }, /executor\.taskTolerations: "a=b:Sometimes" is not key=value:Effect/],
      [{ set: ['executor.name=Grid_A'] }, /executor\.name "Grid_A" must be 1-40 lower-case letters/],
      [{ set: ['executor.maxCores=0'] }, /executor\.maxCores must be a number above 0/],
      [{ values: [{ executor: { taskTolerations: 'a=b:NoSchedule' } }] }, /executor\.taskTolerations must be a list/],
      [{ set: ['server.ingress.enabled=true'] }, /server\.ingress\.host is required/],
    ];
    for (const [opts, message] of cases) {
      const stderr = await renderError(opts);
      assert.match(stderr, /^Error: execution error at \(boxgrid\/templates\/[a-z-]+\.yaml:\d+:\d+\): /, `${JSON.stringify(opts)}: Helm's form of error`);
      assert.match(stderr, message, JSON.stringify(opts));
      assert.ok(!/HELM_ERR|error calling|executing "/.test(stderr), `the message alone, not the template machinery: ${stderr}`);
    }
  });
});
