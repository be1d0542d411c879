/*
 * KernelPageTables over the hypervisor: how a PV kernel changes its own (pinned) kernel
 * page tables. Linux's xen_set_pte_at in lazy MMU mode: every set_pte is queued as an
 * mmu_update request and the queue goes to Xen as one batched hypercall (Linux merges
 * consecutive mmu_updates into one multicall entry of up to 256 requests). TLB flushes
 * are mmuext ops: flush_tlb_kernel_range is a flush of every vCPU of the domain -- the
 * shootdown whose cost the benchmarks measure -- and a local invlpg stays local.
 */
import {
  MMUEXT_INVLPG_LOCAL,
  MMUEXT_TLB_FLUSH_ALL,
  _PAGE_PRESENT,
  rcName,
  FRAME_WORDS,
  PAGE_SIZE,
} from '../../../src/abi/xen.js';
import { type VirtualLayout, layoutFor, vaHiWord, vaIndex } from '../../../src/abi/layout.js';
import { entryMaddrHi, entryMaddrLo, pteHi, pteLo, pteMfn } from '../../../src/abi/pte.js';
import type { KernelPageTables } from '../../mm/kernel_pt.js';
import type { Vcpu } from '../../vcpu.js';
import { TN, type TraceBuffer, traceNowUs } from '../../../src/abi/trace.js';
import { mmuUpdate, mmuextOne } from './hypercall.js';

/** Requests per batched mmu_update (Linux: 4 KiB of multicall argument space). */
export const PTE_BATCH = 256;

export interface KernelPtStats {
  ptesSet: number;
  batches: number;
  shootdowns: number;
  localFlushes: number;
  failures: number;
}

export class XenKernelPageTables implements KernelPageTables {
  readonly #cpu: Vcpu;
  readonly #layout: VirtualLayout;
  readonly #mem32: Uint32Array;
  readonly #p2m: readonly number[];
  readonly #reqs = new Uint32Array(PTE_BATCH * 4);
  #n = 0;
  /** Called with Linux-style lines when Xen refuses an update (a guest bug, reported). */
  onError: (line: string) => void = () => {};
  readonly stats: KernelPtStats = { ptesSet: 0, batches: 0, shootdowns: 0, localFlushes: 0, failures: 0 };
  /** --trace recorder, or null. */
  trace: TraceBuffer | null = null;
  /** Called for every kernel mapping made (mobility's debug check of vmapped pages), or null. */
  onMap: ((va: number, mfn: number) => void) | null = null;

  constructor(cpu: Vcpu, mem: SharedArrayBuffer) {
    this.#cpu = cpu;
    this.#layout = layoutFor(cpu.info.paging);
    this.#mem32 = new Uint32Array(mem);
    this.#p2m = cpu.info.p2m;
  }

  /**
   * The L1 that maps kernel address `va`, found as the hardware walker would (kernel
   * L2 entries never change after boot, so any pgd's copy leads to the same L1).
   */
  l1For(va: number): number {
    let table = this.#cpu.mmu.baseptr;
    const m = this.#mem32;
    for (let level = this.#layout.levels; level > 1; level--) {
      const w = table * FRAME_WORDS + 2 * vaIndex(va, level);
      const lo = m[w]!;
      if ((lo & _PAGE_PRESENT) === 0) return -1;
      table = pteMfn(lo, m[w + 1]!);
    }
    return table;
  }

  setPte(va: number, mfn: number, flags: number): void {
    const l1 = this.l1For(va);
    if (l1 < 0) throw new Error(`set_pte: no kernel page table maps ${va.toString(16)}`);
    const i = 4 * this.#n;
    const r = this.#reqs;
    r[i] = entryMaddrLo(l1, vaIndex(va, 1));
    r[i + 1] = entryMaddrHi(l1);
    r[i + 2] = mfn < 0 ? 0 : pteLo(mfn, flags);
    r[i + 3] = mfn < 0 ? 0 : pteHi(mfn);
    this.stats.ptesSet++;
    if (mfn >= 0) this.onMap?.(va, mfn);
    if (++this.#n === PTE_BATCH) this.flushPending();
  }

  flushPending(): void {
    const n = this.#n;
    if (n === 0) return;
    this.#n = 0;
    this.stats.batches++;
    let from = 0;
    // Xen stops at the first refused request; report it and carry on with the rest.
    while (from < n) {
      const { rc, done } = mmuUpdate(this.#cpu, this.#reqs.subarray(from * 4), n - from);
      if (rc >= 0) break;
      this.stats.failures++;
      const k = from + done;
      const r = this.#reqs;
      this.onError(
        `mmu_update: request ${k} (ptr ${r[4 * k + 1]!.toString(16)}${r[4 * k]!.toString(16).padStart(8, '0')}, ` +
          `val ${r[4 * k + 3]!.toString(16)}${r[4 * k + 2]!.toString(16).padStart(8, '0')}) failed: ${rc} (${rcName(rc)})`,
      );
      from = k + 1;
    }
  }

  flushTlbKernelRange(start: number, end: number): void {
    this.flushPending();
    this.stats.shootdowns++;
    const t0 = this.trace === null ? 0 : traceNowUs();
    const rc = mmuextOne(this.#cpu, MMUEXT_TLB_FLUSH_ALL);
    if (this.trace !== null)
      this.trace.complete(TN.flush_tlb_kernel_range, t0, traceNowUs() - t0, (end - start) / PAGE_SIZE);
    if (rc < 0) this.onError(`flush_tlb_kernel_range: MMUEXT_TLB_FLUSH_ALL failed: ${rc}`);
  }

  flushTlbLocal(va: number): void {
    this.flushPending();
    this.stats.localFlushes++;
    const rc = mmuextOne(this.#cpu, MMUEXT_INVLPG_LOCAL, va >>> 0, vaHiWord(va));
    if (rc < 0) this.onError(`invlpg: MMUEXT_INVLPG_LOCAL failed: ${rc}`);
  }

  pfnToMfn(pfn: number): number {
    return this.#p2m[pfn]!;
  }
}
