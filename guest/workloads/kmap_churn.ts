/*
 * kmap-churn: page-cache reads of highmem pages (kmap, kunmap, drop) interleaved with
 * fork/exec/exit. With HIGHPTE, a dropped page-cache page is the next PTE page on that
 * vCPU; its leftover kmap alias makes Xen refuse the pin unless kmap_flush_unused()
 * runs first (the --kmap-flush switch).
 */
import type { Rng } from '../lib/random.js';
import type { Kernel } from '../kernel/kernel.js';
import { readAndDropPages } from '../mm/filemap.js';
import type { Workload } from './driver.js';
import { ForkStorm } from './fork_storm.js';

export class KmapChurn implements Workload {
  readonly #tasks = new ForkStorm(2);
  #pagesRead = 0;

  init(): void {}

  step(k: Kernel, rng: Rng, now: number): void {
    if (rng.nextInt(3) === 0) this.#pagesRead += readAndDropPages(k, 1 + rng.nextInt(4), now);
    else this.#tasks.step(k, rng);
  }

  fini(k: Kernel): void {
    this.#tasks.fini(k);
  }

  stats(): Record<string, number> {
    return { ...this.#tasks.stats(), pagesRead: this.#pagesRead };
  }
}
