/*
 * A plain reference implementation of KernelPageTables for tests: a Map from va to entry,
 * counters of every operation, and a small model of per-vCPU TLBs so a test can see what a
 * missing or misplaced flush leaves behind.
 *
 * The TLB model: touch(va, cpu) is an access by that vCPU. It is served from the vCPU's TLB
 * when the va is cached there, otherwise from the page tables (and then cached, if the
 * entry is present). flushTlbKernelRange drops the range from every vCPU's TLB,
 * flushTlbLocal one page from the current vCPU's (`currentCpu`). staleTlbEntries() lists the
 * cached translations that no longer match the page tables: after a correct unmap-and-flush
 * there are none.
 *
 * Batching: with `batched: true`, setPte only queues; flushPending applies the queue in
 * order. A TLB flush issued while updates are still queued is counted in
 * flushesWithPendingPtes (the queued updates are NOT applied by it): callers must
 * flushPending first.
 *
 * Not a hot path: objects and Maps are fine here.
 */
import { _PAGE_PRESENT, _PAGE_RW, PAGE_SIZE } from '../../src/abi/xen.js';
import type { KernelPageTables } from './kernel_pt.js';

/** Default P2M of the reference: mfn = pfn + REF_MFN_OFFSET, so pfn/mfn mix-ups show. */
export const REF_MFN_OFFSET = 0x40000;

export interface KernelPageTablesRefOptions {
  /** pfn -> mfn (default pfn + REF_MFN_OFFSET). Must be a bijection with mfnToPfn. */
  pfnToMfn?: (pfn: number) => number;
  mfnToPfn?: (mfn: number) => number;
  /** Queue setPte until flushPending (default false: apply at once). */
  batched?: boolean;
  /** vCPUs with a TLB (default 1). */
  nrCpus?: number;
}

export interface RefPte {
  mfn: number;
  flags: number;
}

export interface RefTlbEntry {
  cpu: number;
  va: number;
  mfn: number;
  flags: number;
}

// An entry is packed as mfn * 4096 + flags (exact while mfn < 2^41).
const pack = (mfn: number, flags: number): number => mfn * PAGE_SIZE + (flags & 0xfff);
const mfnOf = (packed: number): number => Math.floor(packed / PAGE_SIZE);
const flagsOf = (packed: number): number => packed % PAGE_SIZE;

export class KernelPageTablesRef implements KernelPageTables {
  /** The vCPU the next flushTlbLocal / touch acts on. */
  currentCpu = 0;
  readonly batched: boolean;
  readonly nrCpus: number;

  /* counters */
  setPteCalls = 0;
  ptesInstalled = 0;
  ptesCleared = 0;
  /** Clears of an entry that was not present. */
  clearsOfNonPresent = 0;
  flushPendingCalls = 0;
  /** flushPending calls that had something queued. */
  batchesIssued = 0;
  kernelRangeFlushes = 0;
  localFlushes = 0;
  flushesWithPendingPtes = 0;
  /** Every flushTlbKernelRange, in order, as [start, end). */
  readonly flushedRanges: Array<[number, number]> = [];
  /** Every flushTlbLocal, in order, as [cpu, va]. */
  readonly localFlushLog: Array<[number, number]> = [];

  readonly #p2m: (pfn: number) => number;
  readonly #m2p: (mfn: number) => number;
  readonly #ptes = new Map<number, number>();
  readonly #byMfn = new Map<number, Set<number>>();
  readonly #pending: number[] = [];
  readonly #tlb: Map<number, number>[];

  constructor(opts: KernelPageTablesRefOptions = {}) {
    this.#p2m = opts.pfnToMfn ?? ((pfn) => pfn + REF_MFN_OFFSET);
    this.#m2p = opts.mfnToPfn ?? ((mfn) => mfn - REF_MFN_OFFSET);
    this.batched = opts.batched ?? false;
    this.nrCpus = opts.nrCpus ?? 1;
    this.#tlb = Array.from({ length: this.nrCpus }, () => new Map<number, number>());
  }

  /* ------------------------------------------------------------ the interface */

  setPte(va: number, mfnOrMinus1: number, flags: number): void {
    this.setPteCalls++;
    if (this.batched) {
      this.#pending.push(va, mfnOrMinus1, flags);
    } else {
      this.#apply(va, mfnOrMinus1, flags);
    }
  }

  flushPending(): void {
    this.flushPendingCalls++;
    if (this.#pending.length === 0) return;
    this.batchesIssued++;
    for (let i = 0; i < this.#pending.length; i += 3) {
      this.#apply(this.#pending[i]!, this.#pending[i + 1]!, this.#pending[i + 2]!);
    }
    this.#pending.length = 0;
  }

  flushTlbKernelRange(start: number, end: number): void {
    this.kernelRangeFlushes++;
    this.flushedRanges.push([start, end]);
    if (this.#pending.length > 0) this.flushesWithPendingPtes++;
    for (const tlb of this.#tlb) {
      for (const va of tlb.keys()) if (va >= start && va < end) tlb.delete(va);
    }
  }

  flushTlbLocal(va: number): void {
    this.localFlushes++;
    this.localFlushLog.push([this.currentCpu, va]);
    if (this.#pending.length > 0) this.flushesWithPendingPtes++;
    this.#tlb[this.currentCpu]!.delete(va - (va % PAGE_SIZE));
  }

  pfnToMfn(pfn: number): number {
    return this.#p2m(pfn);
  }

  mfnToPfn(mfn: number): number {
    return this.#m2p(mfn);
  }

  /* ----------------------------------------------------------------- queries */

  /** The entry for va (page-aligned), or undefined when not present. */
  lookup(va: number): RefPte | undefined {
    const e = this.#ptes.get(va);
    return e === undefined ? undefined : { mfn: mfnOf(e), flags: flagsOf(e) };
  }

  /** Number of present entries. */
  get size(): number {
    return this.#ptes.size;
  }

  /** Updates queued and not yet issued. */
  get pendingUpdates(): number {
    return this.#pending.length / 3;
  }

  /** Every present va, ascending. */
  presentVas(): number[] {
    return [...this.#ptes.keys()].sort((a, b) => a - b);
  }

  /** The vas whose entry maps mfn (only writable ones if asked), ascending. */
  vasMappingMfn(mfn: number, writableOnly = false): number[] {
    const set = this.#byMfn.get(mfn);
    if (set === undefined) return [];
    const out: number[] = [];
    for (const va of set) {
      if (!writableOnly || flagsOf(this.#ptes.get(va)!) & _PAGE_RW) out.push(va);
    }
    return out.sort((a, b) => a - b);
  }

  /** Which vas map pfn (through the P2M), writable ones only if asked. */
  vasMappingPfn(pfn: number, writableOnly = false): number[] {
    return this.vasMappingMfn(this.#p2m(pfn), writableOnly);
  }

  /** Which vas map pfn writable: what Xen would count against a pin of that frame. */
  writableAliasesOfPfn(pfn: number): number[] {
    return this.vasMappingPfn(pfn, true);
  }

  /* --------------------------------------------------------------- TLB model */

  /** An access to va by cpu: returns the mfn it reaches, or -1 (a fault). */
  touch(va: number, cpu = this.currentCpu): number {
    const page = va - (va % PAGE_SIZE);
    const tlb = this.#tlb[cpu]!;
    const cached = tlb.get(page);
    if (cached !== undefined) return mfnOf(cached);
    const e = this.#ptes.get(page);
    if (e === undefined) return -1;
    tlb.set(page, e);
    return mfnOf(e);
  }

  /** Cached translations that no longer match the page tables. */
  staleTlbEntries(): RefTlbEntry[] {
    const out: RefTlbEntry[] = [];
    this.#tlb.forEach((tlb, cpu) => {
      for (const [va, e] of tlb) {
        if (this.#ptes.get(va) !== e) out.push({ cpu, va, mfn: mfnOf(e), flags: flagsOf(e) });
      }
    });
    return out;
  }

  /** Cached translations (stale or not) reaching pfn, writable ones only if asked. */
  tlbAliasesOfPfn(pfn: number, writableOnly = false): RefTlbEntry[] {
    const mfn = this.#p2m(pfn);
    const out: RefTlbEntry[] = [];
    this.#tlb.forEach((tlb, cpu) => {
      for (const [va, e] of tlb) {
        if (mfnOf(e) === mfn && (!writableOnly || flagsOf(e) & _PAGE_RW)) {
          out.push({ cpu, va, mfn, flags: flagsOf(e) });
        }
      }
    });
    return out;
  }

  resetCounters(): void {
    this.setPteCalls = this.ptesInstalled = this.ptesCleared = this.clearsOfNonPresent = 0;
    this.flushPendingCalls = this.batchesIssued = 0;
    this.kernelRangeFlushes = this.localFlushes = this.flushesWithPendingPtes = 0;
    this.flushedRanges.length = 0;
    this.localFlushLog.length = 0;
  }

  /* ----------------------------------------------------------------- private */

  #apply(va: number, mfn: number, flags: number): void {
    const old = this.#ptes.get(va);
    if (old !== undefined) {
      const set = this.#byMfn.get(mfnOf(old))!;
      set.delete(va);
      if (set.size === 0) this.#byMfn.delete(mfnOf(old));
    }
    if (mfn < 0 || !(flags & _PAGE_PRESENT)) {
      if (old === undefined) this.clearsOfNonPresent++;
      else this.ptesCleared++;
      this.#ptes.delete(va);
      return;
    }
    this.ptesInstalled++;
    this.#ptes.set(va, pack(mfn, flags));
    let set = this.#byMfn.get(mfn);
    if (set === undefined) this.#byMfn.set(mfn, (set = new Set()));
    set.add(va);
  }
}
