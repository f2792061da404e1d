import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { KubeConfig } from '@kubernetes/client-node';
import { enroll } from '../../src/agent/host-credential.js';
import { BoxgridClient } from '../../src/client/client.js';
import { ClientNodeKubeOps } from '../../src/sites/kubernetes/kube-ops.js';
import { KubernetesExecutor } from '../../src/sites/kubernetes/kubernetes-executor.js';

/**
 * The executor against a real cluster. It runs only when told where everything is, since a
 * cluster's pods must reach a boxgrid server and pull boxgrid's image:
 *
 *   KUBECONFIG                 a cluster (the test uses its current context's namespace, or BOXGRID_K8S_NAMESPACE)
 *   BOXGRID_K8S_SERVER         a running boxgrid server that both this test and the cluster's pods reach
 *   BOXGRID_K8S_ADMIN_TOKEN    an operator token of that server
 *   BOXGRID_K8S_JOB_IMAGE      boxgrid's own image, pullable by the cluster (the staging containers)
 *   BOXGRID_K8S_APP_IMAGE      an image with a POSIX shell for the app (default busybox:1.36)
 *
 * Without them it skips and says so: no cluster is reachable where boxgrid is built and tested,
 * so this has not run in CI (the fake-API suite, test/sites/kubernetes-executor.test.ts, has).
 */
const env = process.env;
const missing = ['KUBECONFIG', 'BOXGRID_K8S_SERVER', 'BOXGRID_K8S_ADMIN_TOKEN', 'BOXGRID_K8S_JOB_IMAGE'].filter((k) => !env[k]);
const skip = missing.length > 0 ? `no Kubernetes cluster configured for the live test (${missing.join(', ')} not set); it did NOT run` : false;

describe('kubernetes executor on a real cluster', { skip }, () => {
  it('runs a small batch as Jobs, reports the outputs and deletes the Jobs', { timeout: 600_000 }, async () => {
    const admin = new BoxgridClient({ url: env.BOXGRID_K8S_SERVER!, token: env.BOXGRID_K8S_ADMIN_TOKEN! });
    const project = `k8s-live-${Date.now()}`;
    await admin.createProject(project);
    await admin.createApp(project, {
      name: 'square', image: env.BOXGRID_K8S_APP_IMAGE ?? 'busybox:1.36',
      command: ['sh', '-c', 'echo $(( $0 * $0 )) > /out/square.txt'],
      resources: { cores: 0.1, memoryMiB: 64, diskMiB: 16, gpus: 0 }, maxRuntimeSeconds: 120,
    });
    const batch = await admin.submitBatch(project, { app: 'square', sweep: { n: { from: 1, to: 3 } }, template: { args: ['{n}'] } });

    const stateDir = await mkdtemp(join(tmpdir(), 'boxgrid-k8s-live-'));
    const token = await admin.createEnrollToken({ label: 'kubernetes live test', uses: 1 });
    const credential = await enroll(stateDir, env.BOXGRID_K8S_SERVER!, token.token, {
      name: 'k8s-live', resources: { cores: 1, memoryMiB: 1024, diskMiB: 1024, gpus: 0 }, platform: 'linux/amd64',
    });
    const kc = new KubeConfig();
    kc.loadFromDefault();
    const namespace = env.BOXGRID_K8S_NAMESPACE ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
    const name = `live${Date.now() % 100_000}`;
    const ops = new ClientNodeKubeOps(kc, namespace, name);
    const ex = new KubernetesExecutor({
      name, client: new BoxgridClient({ url: credential.server, token: credential.token }),
      transferServer: env.BOXGRID_K8S_SERVER!, kube: ops,
      flow: { maxPending: 3, ratePerSecond: 2, burst: 3 }, limit: { cores: 1, memoryMiB: 1024, gpus: 0 }, maxTaskDiskMiB: 1024,
      pendingTimeoutSeconds: 300,
      manifest: { stagingImage: env.BOXGRID_K8S_JOB_IMAGE!, nodeSelector: {}, tolerations: [], ttlSecondsAfterFinished: 600, stagingSeconds: 120 },
      log: (level, m) => process.stderr.write(`executor ${level}: ${m}\n`),
    });
    const stop = new AbortController();
    const running = ex.run(stop.signal);
    try {
      for (;;) {
        const b = await admin.getBatch(project, batch.batch!.id);
        if (b.counts.queued + b.counts.running === 0) {
          assert.equal(b.counts.succeeded, 3, JSON.stringify(b.counts));
          break;
        }
        await new Promise((r) => setTimeout(r, 2000)); // polling a remote cluster: there is no event to await here
      }
    } finally {
      stop.abort();
      await running;
      await rm(stateDir, { recursive: true, force: true });
    }
    const { jobs } = await admin.listJobs(project);
    const outputs = await Promise.all(
      jobs.map(async (j) => {
        const done = (await admin.getJob(project, j.id)).tasks.find((t) => t.state === 'succeeded')!;
        return (await admin.download(project, done.outputs['square.txt']!.sha256)).text();
      }),
    );
    assert.deepEqual(outputs.map((o) => Number(o.trim())).sort(), [1, 4, 9]);
    assert.deepEqual(await ops.listJobs(), [], 'every Job deleted once reported');
  });
});
