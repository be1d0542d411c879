/*
 * fork-storm: tasks are exec'd, forked, run and exit at random on every vCPU -- the
 * page-table churn (pgd_alloc, pin at first run, unpin at exit, pages back on the hot
 * lists) that meets whatever stray alias the rest of the kernel left behind.
 */
import type { Rng } from '../lib/random.js';
import type { Kernel } from '../kernel/kernel.js';
import { doExit, doFork, runTask, taskCreate } from '../mm/memory.js';
import { MAX_USER_PAGES } from '../kernel/state.js';
import type { Workload } from './driver.js';

/** Tasks a vCPU keeps alive at most. */
export const MAX_TASKS_PER_CPU = 8;

export class ForkStorm implements Workload {
  readonly #tasks: number[] = [];
  readonly #pt = new Int32Array(8);
  #runs = 0;
  #refusedRuns = 0;
  readonly pagesPerTask: number;

  constructor(pagesPerTask = 4) {
    if (!Number.isInteger(pagesPerTask) || pagesPerTask < 1 || pagesPerTask > MAX_USER_PAGES) {
      throw new RangeError(`fork-storm: pages per task must be an integer in 1..${MAX_USER_PAGES}`);
    }
    this.pagesPerTask = pagesPerTask;
  }

  init(): void {}

  step(k: Kernel, rng: Rng): void {
    const tasks = this.#tasks;
    const r = rng.nextInt(10);
    if (tasks.length === 0 || (r < 2 && tasks.length < MAX_TASKS_PER_CPU)) {
      const t = taskCreate(k, 1 + rng.nextInt(this.pagesPerTask));
      if (t >= 0) tasks.push(t);
    } else if (r < 5 && tasks.length < MAX_TASKS_PER_CPU) {
      const child = doFork(k, tasks[rng.nextInt(tasks.length)]!);
      if (child >= 0) tasks.push(child);
    } else if (r < 8) {
      const i = rng.nextInt(tasks.length);
      this.#runs++;
      if (!runTask(k, tasks[i]!, this.#pt)) {
        this.#refusedRuns++;
        tasks.splice(i, 1);
      }
    } else {
      const i = rng.nextInt(tasks.length);
      doExit(k, tasks[i]!, this.#pt);
      tasks.splice(i, 1);
    }
  }

  fini(k: Kernel): void {
    for (const t of this.#tasks.splice(0)) doExit(k, t, this.#pt);
  }

  stats(): Record<string, number> {
    return { taskRuns: this.#runs, tasksRefused: this.#refusedRuns };
  }
}
