/*
 * truncate-race: vCPU 0 extends and truncates a shared file again and again, each
 * truncate in its two steps (unmap_mapping_range, then truncate_inode_pages) as separate
 * scheduler steps; every vCPU runs tasks that fault the file's pages in. Under the det
 * scheduler some fault lands between the two steps: without the lock_page fix the page
 * leaves the page cache while mapped (the kernel BUG) and the pte is an orphan.
 * Runs under the det scheduler only (steps are the unit of atomicity here).
 */
import type { Rng } from '../lib/random.js';
import type { Kernel } from '../kernel/kernel.js';
import { doExit, runTask, taskCreate } from '../mm/memory.js';
import { FILE_PAGES, FileMapping } from '../mm/truncate.js';
import type { Workload } from './driver.js';

const TASKS = 3;

export class TruncateRace implements Workload {
  readonly #lockPage: boolean;
  #file: FileMapping | null = null;
  #phase = 0;
  readonly #tasks: number[] = [];
  readonly #pt = new Int32Array(8);
  #orphans = 0;
  /** A fault between its two halves: task, index, page. */
  #pending: [t: number, i: number, pfn: number] | null = null;

  constructor(lockPage: boolean) {
    this.#lockPage = lockPage;
  }

  init(k: Kernel): void {
    this.#file = new FileMapping(k, k.state.fileState(), this.#lockPage);
    if (k.id === 0) this.#file.extend(FILE_PAGES);
  }

  step(k: Kernel, rng: Rng): void {
    const f = this.#file!;
    if (k.id === 0 && rng.nextInt(3) === 0) {
      // The truncate, one step at a time: extend, unmap, drop from the cache.
      const half = FILE_PAGES / 2;
      if (this.#phase === 0) {
        f.extend(FILE_PAGES);
      } else if (this.#phase === 1) {
        f.truncateSize(half);
        f.unmapMappingRange(half);
      } else {
        if (!f.truncateInodePages(half)) return; // a page is locked by a fault: come back
        f.counts.truncates++;
      }
      this.#phase = (this.#phase + 1) % 3;
      return;
    }
    if (this.#pending !== null) {
      const [t, i, pfn] = this.#pending;
      this.#pending = null;
      f.faultFinish(t, i, pfn);
      return;
    }
    const tasks = this.#tasks;
    if (tasks.length < TASKS) {
      const t = taskCreate(k, 1);
      if (t >= 0) tasks.push(t);
      return;
    }
    const r = rng.nextInt(10);
    const i = rng.nextInt(tasks.length);
    const t = tasks[i]!;
    if (r < 6) {
      const idx = rng.nextInt(FILE_PAGES);
      const pfn = f.faultBegin(t, idx);
      if (pfn >= 0) this.#pending = [t, idx, pfn];
    } else if (r < 9) {
      if (!runTask(k, t, this.#pt)) tasks.splice(i, 1);
    } else {
      this.#exit(k, t);
      tasks.splice(i, 1);
    }
  }

  #exit(k: Kernel, t: number): void {
    const f = this.#file!;
    this.#orphans += f.orphansOf(t);
    f.zapTask(t);
    doExit(k, t, this.#pt);
  }

  fini(k: Kernel): void {
    if (this.#pending !== null) {
      const [t, i, pfn] = this.#pending;
      this.#pending = null;
      this.#file!.faultFinish(t, i, pfn);
    }
    for (const t of this.#tasks.splice(0)) this.#exit(k, t);
    // The last vCPU to tear down (det order) drops the file: no fault is pending then.
    if (k.id === k.cfg.vcpus - 1) this.#file!.evictAll();
  }

  stats(): Record<string, number> {
    const c = this.#file?.counts;
    return c ? { ...c, orphans: this.#orphans } : {};
  }
}
