import { validationScenario } from '../src/sim/scenarios.js';
import { simulate } from '../src/sim/simulator.js';
import { DEFAULT_REPLICATION } from '../src/scheduling/replication.js';
import { round, type Benchmark, type Fields } from './harness.js';

/** BOXGRID_VALIDATION_JOBS and BOXGRID_VALIDATION_HOSTS resize the run (defaults 10,000 and 100). */
const JOBS = Number(process.env.BOXGRID_VALIDATION_JOBS ?? 10_000);
const HOSTS = Number(process.env.BOXGRID_VALIDATION_HOSTS ?? 100);
const WRONG = 0.2;
const INTERMITTENT = 0.1;

/**
 * Result validation on an untrusted grid, simulated through the server's own services, store
 * and scheduling code (docs/simulator.md): replicas, the quorum judged in each report's
 * transaction, hosts' runs of valid results and adaptive replication (docs/security.md).
 */
export const validationBenchmark: Benchmark = {
  name: 'validation',
  description:
    `${JOBS} jobs of an app with 2 replicas, quorum 2 and adaptive replication (trusted after ${DEFAULT_REPLICATION.trustAfter} valid results in a row, ` +
    `spot checks at least ${DEFAULT_REPLICATION.spotCheck * 100}%), simulated on ${HOSTS} 4-core hosts of which ${WRONG * 100}% return a wrong result every time ` +
    `(each its own) and 1% of all tasks fail. wrongAccepted = jobs whose accepted result is wrong; tasksPerJob = tasks started per job; ` +
    `tasksPerJobOnceTrusted = the same over jobs whose first task went to a host trusted at that moment. ` +
    `Then the same grid with hosts wrong only ${INTERMITTENT * 100}% of the time (they earn trust, so adaptive replication accepts some of their ` +
    `wrong results alone until a spot check catches them): wrongAcceptedIntermittent, tasksPerJobIntermittent (no target: the price of adaptive replication).`,
  targets: [
    { field: 'wrongAccepted', op: '<=', value: 0, unit: 'jobs' },
    { field: 'tasksPerJobOnceTrusted', op: '<=', value: 1.3, unit: 'tasks per job' },
  ],
  timeoutSeconds: 1800,
  async run(log): Promise<Fields> {
    const r = await simulate(validationScenario({ jobs: JOBS, hosts: HOSTS, wrongFraction: WRONG }), { policy: 'fair' });
    const v = r.validation!;
    log(`${v.jobs} jobs, ${r.tasks.started} tasks, ${v.jobsOnceTrusted} started on trusted hosts, ${r.events} events in ${r.wallSeconds.toFixed(1)} s`);
    const sometimes = (await simulate(validationScenario({ jobs: JOBS, hosts: HOSTS, wrongFraction: WRONG, wrongRate: INTERMITTENT }), { policy: 'fair' })).validation!;
    log(`hosts wrong ${INTERMITTENT * 100}% of the time: ${sometimes.wrongAccepted} wrong results accepted`);
    return {
      jobs: v.jobs,
      maliciousFraction: WRONG,
      wrongAccepted: v.wrongAccepted,
      noConsensus: v.noConsensus,
      jobsFailed: r.jobsFailed,
      tasksPerJob: round(v.tasksPerJob, 3),
      tasksPerJobOnceTrusted: round(v.tasksPerJobOnceTrusted, 3),
      jobsOnceTrusted: v.jobsOnceTrusted,
      tasksFailed: r.tasks.failed,
      wrongAcceptedIntermittent: sometimes.wrongAccepted,
      tasksPerJobIntermittent: round(sometimes.tasksPerJob, 3),
      simulatedHours: round(r.makespanSeconds / 3600, 2),
      wallSeconds: round(r.wallSeconds, 1),
    };
  },
};
