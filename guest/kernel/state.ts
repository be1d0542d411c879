/*
 * The kernel's own shared state beside mm: event counters every vCPU adds to, the task
 * table (one row of Int32 columns per task: no object per task), and the deterministic
 * scheduler's turn word. One SharedArrayBuffer, fixed offsets.
 */
import {
  COUNTER_NAMES,
  COUNTERS_BASE,
  type KernelConfig,
  MOBILITY_COUNTER_NAMES,
  NR_COUNTERS,
} from '../../src/abi/kernel.js';

/* Header words. */
const H_BOOTED = 0;
export const H_TURN = 1;
export const H_RNG = 2;
export const H_STOP = 3;
/** The parallel scheduler's start barrier: vCPUs that finished init() (guest/workloads/driver.ts). */
export const H_START = 11;
const H_COUNTERS = COUNTERS_BASE;
const HEADER_WORDS = H_COUNTERS + NR_COUNTERS;

/* Task rows. */
export const MAX_TASKS = 1024;
export const TASK_WORDS = 32;
export const T_STATE = 0; /** TASK_FREE / TASK_NEW (page tables unpinned) / TASK_PINNED */
export const T_CPU = 1; /** the vCPU that owns it (tasks never migrate here) */
export const T_PGD = 2; /** pfn of the pgd */
export const T_PMD = 3; /** pae: 4 pmd pfns (slot 3: the copy of the kernel's); x86_64: [pud, pmd] */
export const T_PTE = 7; /** pfn of the one user PTE page, -1 when none */
export const T_NPAGES = 8;
export const T_PAGES = 9; /** user page pfns */
export const MAX_USER_PAGES = 16;
/** Words of shared state for the truncate-race file (guest/mm/truncate.ts). */
export const FILE_STATE_WORDS = 128;
export const TASK_FREE = 0;
export const TASK_NEW = 1;
export const TASK_PINNED = 2;

export class KernState {
  readonly w: Int32Array;

  static create(cfg: KernelConfig): SharedArrayBuffer {
    const sab = new SharedArrayBuffer((HEADER_WORDS + MAX_TASKS * TASK_WORDS + FILE_STATE_WORDS) * 4);
    const w = new Int32Array(sab);
    w[H_RNG] = (cfg.seed ^ 0x9e3779b9) | 1;
    Atomics.store(w, H_BOOTED, 1);
    return sab;
  }

  constructor(sab: SharedArrayBuffer) {
    this.w = new Int32Array(sab);
  }

  /** The shared state of the one file the truncate-race workload uses. */
  fileState(): Int32Array {
    return this.w.subarray(HEADER_WORDS + MAX_TASKS * TASK_WORDS);
  }

  count(c: number, n = 1): void {
    Atomics.add(this.w, H_COUNTERS + c, n);
  }

  counter(c: number): number {
    return Atomics.load(this.w, H_COUNTERS + c);
  }

  counters(): Record<string, number> {
    const out: Record<string, number> = {};
    COUNTER_NAMES.forEach((name, i) => (out[name] = this.counter(i)));
    for (const [i, name] of MOBILITY_COUNTER_NAMES) out[name] = this.counter(i);
    return out;
  }

  /** Word index of field `f` of task `t`. */
  t(t: number, f: number): number {
    return HEADER_WORDS + t * TASK_WORDS + f;
  }

  /** Claim a free task row for `cpu`; -1 when the table is full. */
  allocTask(cpu: number): number {
    const w = this.w;
    for (let t = 0; t < MAX_TASKS; t++) {
      if (Atomics.compareExchange(w, this.t(t, T_STATE), TASK_FREE, TASK_NEW) === TASK_FREE) {
        w[this.t(t, T_CPU)] = cpu;
        w[this.t(t, T_PTE)] = -1;
        w[this.t(t, T_NPAGES)] = 0;
        return t;
      }
    }
    return -1;
  }

  freeTask(t: number): void {
    Atomics.store(this.w, this.t(t, T_STATE), TASK_FREE);
  }

  liveTasks(): number[] {
    const out: number[] = [];
    for (let t = 0; t < MAX_TASKS; t++) if (Atomics.load(this.w, this.t(t, T_STATE)) !== TASK_FREE) out.push(t);
    return out;
  }
}
