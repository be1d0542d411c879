/*
 * A flat KernelPageTables for the vmalloc bench's `--kpt flat`: one Float64 slot per page
 * of the vmalloc window (the mfn, or -1) in a SharedArrayBuffer that every worker of a case
 * shares -- one kernel page table for all CPUs, as in the kernel -- updates applied at
 * once, flushes counted. A slot belongs to one vmap area at a time, so plain stores do.
 * It keeps the contract of guest/mm/kernel_pt.ts but none of the reference's bookkeeping
 * (Maps of entries, a Set per mfn, logs of every flush), so a run with it shows what the
 * vmap layer itself costs; a run with the reference shows the layer plus that bookkeeping.
 * There is no TLB to model: touch() reads the entry, which is what "*p = 1" needs to prove.
 */
import { PAGE_SIZE } from '../../src/abi/xen.js';
import type { KernelPageTables } from '../../guest/mm/kernel_pt.js';
import { REF_MFN_OFFSET } from '../../guest/mm/kernel_pt_ref.js';

export class FlatKernelPageTables implements KernelPageTables {
  readonly #start: number;
  readonly #mfn: Float64Array;
  kernelRangeFlushes = 0;
  localFlushes = 0;

  /** A table for a window of windowPages pages: new, every entry clear. */
  static createTable(windowPages: number): SharedArrayBuffer {
    const sab = new SharedArrayBuffer(windowPages * 8);
    new Float64Array(sab).fill(-1);
    return sab;
  }

  constructor(windowStart: number, table: SharedArrayBuffer) {
    this.#start = windowStart;
    this.#mfn = new Float64Array(table);
  }

  setPte(va: number, mfnOrMinus1: number, _flags: number): void {
    const i = (va - this.#start) / PAGE_SIZE;
    if (!(i >= 0 && i < this.#mfn.length))
      throw new RangeError(`FlatKernelPageTables: va 0x${va.toString(16)} outside the window`);
    this.#mfn[i] = mfnOrMinus1;
  }

  flushPending(): void {}

  flushTlbKernelRange(_start: number, _end: number): void {
    this.kernelRangeFlushes++;
  }

  flushTlbLocal(_va: number): void {
    this.localFlushes++;
  }

  pfnToMfn(pfn: number): number {
    return pfn + REF_MFN_OFFSET;
  }

  /** An access to va: the mfn it reaches, or -1 (a fault). */
  touch(va: number): number {
    const i = Math.floor((va - this.#start) / PAGE_SIZE);
    return i >= 0 && i < this.#mfn.length ? this.#mfn[i]! : -1;
  }

  /** Nothing is logged; present for the same call sites as the reference's. */
  resetCounters(): void {
    this.kernelRangeFlushes = this.localFlushes = 0;
  }
}
