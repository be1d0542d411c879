/*
 * Worker entry of `pvmmu fuzz` (in-process mode): runs the given fuzz runs of one paging
 * mode on hypervisor/fuzz.ts and reports progress and the coverage, stopping at the first
 * failure. The host starts it by path (distEntry) and never imports the hypervisor.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { type FuzzWorkerData, type FuzzWorkerMessage, emptyCoverage, runSeed } from '../src/abi/fuzz.js';
import { fuzzRun } from './fuzz.js';

const data = workerData as FuzzWorkerData;
const port = parentPort!;
const coverage = emptyCoverage();
let runsDone = 0;
let failure = null;
let last = Date.now();
for (const k of data.runs) {
  failure = fuzzRun(data.paging, runSeed(data.seed, k), data.steps, coverage);
  runsDone++;
  if (failure !== null) break;
  if (Date.now() - last > 250) {
    last = Date.now();
    port.postMessage({ event: 'progress', runsDone } satisfies FuzzWorkerMessage);
  }
}
port.postMessage({ event: 'done', runsDone, coverage, failure } satisfies FuzzWorkerMessage);
