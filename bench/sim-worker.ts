/**
 * One simulation in a worker thread, for bench/sim.ts: simulations are independent and each is
 * single-threaded, so the benchmark runs several at once.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { buildScenario, type ScenarioName } from '../src/sim/scenarios.js';
import { simulate } from '../src/sim/simulator.js';

export interface SimJobRequest {
  scenario: ScenarioName;
  scale: number;
  policy: 'fair' | 'fifo';
  /** Overrides the scenario's own seed. */
  seed: number;
}

const req = workerData as SimJobRequest;
try {
  const result = await simulate(buildScenario(req.scenario, { scale: req.scale, seed: req.seed }), { policy: req.policy });
  parentPort!.postMessage({ ok: true, result });
} catch (e) {
  parentPort!.postMessage({ ok: false, error: e instanceof Error ? e.message : String(e) });
}
