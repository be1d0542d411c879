/*
 * truncate-race: the seed's window (fault-vs-truncate-race.txt). vCPU 0 alternates
 * direct-I/O writes inside i_size -- unmap the range and write the disk in one step, then
 * invalidate_inode_pages2_range one page at a time, each page's unmapping and its removal
 * from the page cache in separate steps -- with truncations beyond i_size (i_size_write
 * and unmap_mapping_range in one step, truncate_inode_pages in the next, then extend).
 * Every vCPU runs tasks that fault the file's pages in, each fault in two halves (find
 * the page; install the pte), and read what they mapped, comparing it with the file.
 *
 * Without lock_page in the fault path, a fault inside an invalidation's window maps a
 * page that then leaves the page cache: BUG_ON(page_mapped) and a task reading stale
 * data (dataErrors). Truncation, guarded by i_size and truncate_count, stays clean.
 * Runs under both schedulers: the file's lock makes each step's changes atomic.
 */
import type { Rng } from '../lib/random.js';
import type { Kernel } from '../kernel/kernel.js';
import { C_DATA_ERRORS } from '../../src/abi/kernel.js';
import { doExit, runTask, taskCreate } from '../mm/memory.js';
import { FILE_PAGES, FileMapping } from '../mm/truncate.js';
import type { Workload } from './driver.js';

const TASKS = 3;

export interface TruncateRaceOptions {
  /** lock_page across the fault (Nick Piggin's fix). */
  lockPage: boolean;
  /** Direct-I/O writes and their invalidation (default true); off: truncation only. */
  invalidate?: boolean;
}

/** vCPU 0's file operation in progress. */
type Op =
  | { kind: 'idle' }
  | { kind: 'truncate'; phase: 'pages' | 'extend' }
  | { kind: 'invalidate'; i: number; end: number; pfn: number };

export class TruncateRace implements Workload {
  readonly #o: Required<TruncateRaceOptions>;
  #file: FileMapping | null = null;
  #op: Op = { kind: 'idle' };
  readonly #tasks: number[] = [];
  readonly #pt = new Int32Array(8);
  #orphansAtExit = 0;
  /** A fault between its two halves: task, index, page, truncate_count it saw. */
  #pending: [t: number, i: number, pfn: number, seq: number] | null = null;

  constructor(o: TruncateRaceOptions) {
    this.#o = { invalidate: true, ...o };
  }

  init(k: Kernel): void {
    this.#file = new FileMapping(k, k.state.fileState(), this.#o.lockPage);
    if (k.id === 0) this.#file.extend(FILE_PAGES);
  }

  step(k: Kernel, rng: Rng): void {
    const f = this.#file!;
    if (k.id === 0 && (this.#op.kind !== 'idle' || rng.nextInt(2) === 0) && rng.nextInt(3) !== 0) {
      this.#fileOp(f, rng);
      return;
    }
    if (this.#pending !== null) {
      const [t, i, pfn, seq] = this.#pending;
      this.#pending = null;
      f.faultFinish(t, i, pfn, seq);
      return;
    }
    const tasks = this.#tasks;
    if (tasks.length < TASKS) {
      const t = taskCreate(k, 1);
      if (t >= 0) tasks.push(t);
      return;
    }
    const r = rng.nextInt(10);
    const j = rng.nextInt(tasks.length);
    const t = tasks[j]!;
    if (r < 6) {
      const idx = rng.nextInt(FILE_PAGES);
      const pfn = f.faultBegin(t, idx);
      if (pfn >= 0) this.#pending = [t, idx, pfn, f.sequence];
    } else if (r < 9) {
      const bad = f.runAndCheck(t, () => runTask(k, t, this.#pt));
      if (bad < 0) tasks.splice(j, 1);
      else if (bad > 0) k.state.count(C_DATA_ERRORS, bad);
    } else {
      this.#exit(k, t);
      tasks.splice(j, 1);
    }
  }

  /** One step of vCPU 0's current file operation (a new one when idle). */
  #fileOp(f: FileMapping, rng: Rng): void {
    const op = this.#op;
    if (op.kind === 'idle') {
      const size = f.size;
      if (this.#o.invalidate && size > 0 && rng.nextInt(2) === 0) {
        // A direct-I/O write of 1-2 pages inside i_size.
        const from = rng.nextInt(size);
        const end = Math.min(size, from + 1 + rng.nextInt(2));
        f.directIoWrite(from, end);
        this.#op = { kind: 'invalidate', i: from, end, pfn: -1 };
      } else {
        this.#op = { kind: 'truncate', phase: 'pages' };
        f.truncateSize(FILE_PAGES / 2);
      }
      return;
    }
    if (op.kind === 'truncate') {
      if (op.phase === 'pages') {
        if (f.truncateInodePages(FILE_PAGES / 2)) op.phase = 'extend';
      } else {
        f.extend(FILE_PAGES);
        f.counts.truncates++;
        this.#op = { kind: 'idle' };
      }
      return;
    }
    // invalidate_inode_pages2_range, a page at a time in two steps.
    if (op.pfn < 0) {
      const r = f.invalidateUnmap(op.i);
      if (r === 'busy') return; // a fault holds the page lock: come back
      if (r !== 'none') {
        op.pfn = r;
        return; // the window: the removal is the next step
      }
    } else {
      f.invalidateRemove(op.i, op.pfn);
      op.pfn = -1;
    }
    if (++op.i >= op.end) {
      f.counts.invalidates++;
      this.#op = { kind: 'idle' };
    }
  }

  #exit(k: Kernel, t: number): void {
    const f = this.#file!;
    this.#orphansAtExit += f.orphansOf(t);
    f.zapTask(t);
    doExit(k, t, this.#pt);
  }

  fini(k: Kernel): void {
    const f = this.#file!;
    if (this.#pending !== null) {
      const [t, i, pfn, seq] = this.#pending;
      this.#pending = null;
      f.faultFinish(t, i, pfn, seq);
    }
    const op = this.#op;
    if (op.kind === 'invalidate' && op.pfn >= 0) f.invalidateRemove(op.i, op.pfn);
    this.#op = { kind: 'idle' };
    for (const t of this.#tasks.splice(0)) this.#exit(k, t);
    // The last vCPU to finish drops the file: no fault is pending anywhere then.
    f.finish(k.cfg.vcpus);
  }

  stats(): Record<string, number> {
    const c = this.#file?.counts;
    return c ? { ...c, orphansAtExit: this.#orphansAtExit } : {};
  }
}
