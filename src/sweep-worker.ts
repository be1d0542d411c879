/*
 * A piscina worker of `pvmmu sweep`: one job is one workload run (its own machine, its
 * hypervisor thread and vCPU workers), answered with the `--json` summary.
 */
import { runOnce, type RunOptions } from './run.js';
import { summaryJson, type SummaryJson } from './summary.js';

export default async function sweepJob(opts: RunOptions): Promise<SummaryJson> {
  return summaryJson((await runOnce({ ...opts, progress: false })).summary);
}
