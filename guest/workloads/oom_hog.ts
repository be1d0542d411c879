/*
 * oom-hog: a guest that exhausts its memory. Every step execs a task that faults in all
 * of its user pages and runs (its page tables pinned), and keeps it; once the domain's
 * memory is gone, the fault of the next task finds no page, the OOM killer reports it as
 * Linux does ("Out of memory: kill process ...") and the task is torn down. Now and then a
 * kept task exits, so memory comes back and runs out again. Everything is freed at the end.
 */
import type { Rng } from '../lib/random.js';
import type { Kernel } from '../kernel/kernel.js';
import { doExit, runTask, taskCreate } from '../mm/memory.js';
import { MAX_USER_PAGES } from '../kernel/state.js';
import type { Workload } from './driver.js';

export class OomHog implements Workload {
  readonly #tasks: number[] = [];
  readonly #pt = new Int32Array(8);
  #oomKills = 0;
  #created = 0;

  init(): void {}

  step(k: Kernel, rng: Rng): void {
    if (this.#tasks.length > 0 && rng.nextInt(16) === 0) {
      doExit(k, this.#tasks.splice(rng.nextInt(this.#tasks.length), 1)[0]!, this.#pt);
      return;
    }
    const t = taskCreate(k, MAX_USER_PAGES);
    if (t < 0) {
      this.#oomKills++;
      return;
    }
    this.#created++;
    if (runTask(k, t, this.#pt)) this.#tasks.push(t);
  }

  fini(k: Kernel): void {
    for (const t of this.#tasks.splice(0)) doExit(k, t, this.#pt);
  }

  stats(): Record<string, number> {
    return { hogTasks: this.#created, oomFailedExecs: this.#oomKills };
  }
}
