import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { allScenarios, IDEAL_SECONDS, type ScenarioName } from '../src/sim/scenarios.js';
import type { SimResult } from '../src/sim/simulator.js';
import { onCleanup, round, type Benchmark, type Field, type Fields } from './harness.js';
import type { SimJobRequest } from './sim-worker.js';

/** BOXGRID_SIM_SCALE multiplies every scenario's hosts and jobs (1: the sizes in src/sim/scenarios.ts). */
const SCALE = Number(process.env.BOXGRID_SIM_SCALE ?? 1);
/**
 * Runs of each scenario and policy, each from its own seed (BOXGRID_SIM_SEEDS, default 3): which
 * task happens to start last, or to fail late, moves one run's makespan by several percent, so
 * one seed cannot tell two policies apart.
 */
const SEEDS = Math.max(1, Number(process.env.BOXGRID_SIM_SEEDS ?? 3));
/** Simulations run at once, each in its own worker thread (BOXGRID_SIM_WORKERS; default: one per CPU). */
const WORKERS = Math.max(1, Number(process.env.BOXGRID_SIM_WORKERS ?? availableParallelism()));
const POLICIES = ['fifo', 'fair'] as const;

/**
 * Every scenario of src/sim/scenarios.ts, simulated under the FIFO first-fit baseline and under
 * boxgrid's policy, from SEEDS seeds each, through the server's own service layer and scheduling
 * code (docs/simulator.md). Deterministic: the figures change only when the code or the
 * scenarios do.
 */
export const simBenchmark: Benchmark = {
  name: 'sim',
  description:
    `Seeded grid simulation through the real service layer (in-memory SQLite, virtual clock): ` +
    `${allScenarios({ scale: SCALE }).map((s) => `${s.name} (${s.hosts.length} hosts, ${s.batches.reduce((n, b) => n + b.jobs.length, 0)} jobs from its own seed)`).join(', ')}, ` +
    `each under FIFO first fit and under the fair policy, from ${SEEDS} seeds each (the scenario's own and the next ${SEEDS - 1}). ` +
    `ratio = makespan ÷ lower bound (work ÷ capacity over time, for cores and memory, or the longest task on the host that could finish it first), ` +
    `averaged over the seeds (worstSeedRatio: the largest of one seed); worstRatio = the largest ratio of a scenario; ` +
    `worstRatioVsFifo = the largest ratio ÷ fifoRatio (below 1: better than FIFO in every scenario).`,
  targets: [
    { field: 'worstRatio', op: '<=', value: 1.15, unit: '× lower bound' },
    { field: 'worstRatioVsFifo', op: '<=', value: 0.999, unit: '× FIFO ratio' },
  ],
  timeoutSeconds: 3600,
  async run(log): Promise<Fields> {
    const scenarios = allScenarios({ scale: SCALE });
    // Largest first, so the last simulation to finish is a short one.
    const requests: SimJobRequest[] = scenarios
      .flatMap((s) =>
        POLICIES.flatMap((policy) =>
          Array.from({ length: SEEDS }, (_, k) => ({ scenario: s.name as ScenarioName, scale: SCALE, policy, seed: s.seed + k, jobs: s.batches.reduce((n, b) => n + b.jobs.length, 0) })),
        ),
      )
      .sort((a, b) => b.jobs - a.jobs)
      .map(({ jobs: _, ...r }) => r);
    log(`${requests.length} simulations, ${Math.min(WORKERS, requests.length)} at a time`);
    const results = new Map<string, SimResult[]>();
    const failures: string[] = [];
    let next = 0;
    const lane = async (): Promise<void> => {
      while (next < requests.length) {
        const req = requests[next++]!;
        const answer = await inWorker(req);
        if (!answer.ok) {
          // Go on with the others, so one run shows every scenario that went wrong.
          failures.push(answer.error);
          log(`FAILED: ${answer.error}`);
          continue;
        }
        const r = answer.result;
        const key = `${r.scenario}/${r.policy}`;
        results.set(key, [...(results.get(key) ?? []), r]);
        log(
          `${r.scenario} ${r.policy} seed ${r.seed}: makespan ${hours(r.makespanSeconds)} h, bound ${hours(r.lowerBound.seconds)} h (${r.lowerBound.binding}), ` +
            `ratio ${r.ratio.toFixed(3)}, utilisation ${r.utilisation.toFixed(3)}; tasks ${JSON.stringify(r.tasks)}; ` +
            `${r.events} events in ${r.wallSeconds.toFixed(1)} s`,
        );
      }
    };
    await Promise.all(Array.from({ length: Math.min(WORKERS, requests.length) }, lane));
    // A simulation that lost a job (or failed otherwise) reports no figures.
    if (failures.length > 0) throw new Error(failures.join(' | '));

    const mean = (runs: SimResult[], f: (r: SimResult) => number): number => runs.reduce((sum, r) => sum + f(r), 0) / runs.length;
    const rows: Array<Record<string, Field>> = [];
    const ratios: Array<{ fair: number; fifo: number }> = [];
    for (const s of scenarios) {
      // By seed: workers finish in any order, and a table must not depend on it.
      const bySeed = (runs: SimResult[]): SimResult[] => [...runs].sort((a, b) => a.seed - b.seed);
      const fifo = bySeed(results.get(`${s.name}/fifo`)!);
      const fair = bySeed(results.get(`${s.name}/fair`)!);
      const ratio = mean(fair, (r) => r.ratio);
      const fifoRatio = mean(fifo, (r) => r.ratio);
      ratios.push({ fair: ratio, fifo: fifoRatio });
      rows.push({
        // The seeds draw different jobs until the hosts' capacity is filled: their mean count.
        name: s.name, hosts: fair[0]!.hosts, jobs: Math.round(mean(fair, (r) => r.jobs)), seeds: fair.map((r) => r.seed).join(' '),
        lowerBound: Math.round(mean(fair, (r) => r.lowerBound.seconds)), bound: fair[0]!.lowerBound.binding,
        makespan: Math.round(mean(fair, (r) => r.makespanSeconds)), ratio: round(ratio, 3), worstSeedRatio: round(Math.max(...fair.map((r) => r.ratio)), 3),
        fifoMakespan: Math.round(mean(fifo, (r) => r.makespanSeconds)), fifoRatio: round(fifoRatio, 3), fifoWorstSeedRatio: round(Math.max(...fifo.map((r) => r.ratio)), 3),
        utilisation: round(mean(fair, (r) => r.utilisation), 3), fifoUtilisation: round(mean(fifo, (r) => r.utilisation), 3),
        // Per run, averaged over the seeds.
        lost: Math.round(mean(fair, (r) => r.tasks.lost)), duplicates: Math.round(mean(fair, (r) => r.tasks.duplicates)), failedTasks: Math.round(mean(fair, (r) => r.tasks.failed)),
      });
    }
    const runs = [...results.values()].flat();
    const callMs = (kind: keyof SimResult['calls']): number => {
      const n = runs.reduce((sum, r) => sum + r.calls[kind].n, 0);
      return n === 0 ? 0 : round(runs.reduce((sum, r) => sum + r.calls[kind].ms, 0) / n, 3);
    };
    return {
      worstRatio: round(Math.max(...ratios.map((r) => r.fair)), 3),
      worstRatioVsFifo: round(Math.max(...ratios.map((r) => r.fair / r.fifo)), 4),
      scenarios: rows,
      scale: SCALE,
      seedsPerScenario: SEEDS,
      idealMakespanSeconds: IDEAL_SECONDS,
      simulatedEvents: runs.reduce((sum, r) => sum + r.events, 0),
      // Wall time of all simulations added up (they run in parallel, so more than the benchmark took).
      simulationSeconds: round(runs.reduce((sum, r) => sum + r.wallSeconds, 0), 1),
      // What one call through the service layer costs, ms (mean over every run): where a simulation's time goes.
      workRequestMs: callMs('work'),
      heartbeatMs: callMs('heartbeat'),
      reportMs: callMs('report'),
      sweepMs: callMs('sweep'),
    };
  },
};

type Answer = { ok: true; result: SimResult } | { ok: false; error: string };

function inWorker(req: SimJobRequest): Promise<Answer> {
  return new Promise((resolve) => {
    const worker = new Worker(new URL('./sim-worker.js', import.meta.url), { workerData: req });
    const stop = onCleanup(() => void worker.terminate()); // a timed-out benchmark leaves no simulation running
    let answered = false;
    worker.once('message', (m: Answer) => {
      answered = true;
      resolve(m);
    });
    worker.once('error', (e) => {
      answered = true;
      resolve({ ok: false, error: `${req.scenario} (${req.policy}, seed ${req.seed}): ${e.message}` });
    });
    worker.once('exit', (code) => {
      stop();
      if (!answered) resolve({ ok: false, error: `${req.scenario} (${req.policy}, seed ${req.seed}): the worker exited (${code}) without an answer` });
    });
  });
}

function hours(s: number): string {
  return (s / 3600).toFixed(2);
}
