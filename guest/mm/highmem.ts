/*
 * mm/highmem (+ arch/x86/mm/highmem_32): kmap and kmap_atomic for a 32-bit PAE guest, as
 * in Linux 2.6.2x. Pure data structures in shared memory; page tables only through
 * KernelPageTables.
 *
 * ----------------------------------------------------------------------------------------
 * Invariants
 * ----------------------------------------------------------------------------------------
 * pkmap (kmap/kunmap): LAST_PKMAP slots from PKMAP_BASE, under kmap_lock. pkmap_count[i]:
 *   0      the slot's PTE is clear and the clear has been flushed from every TLB: free.
 *   1      the slot maps a page that nobody uses any more, but a TLB may still hold the
 *          translation: NOT reusable until flush_all_zero_pkmaps has cleared and flushed.
 *   n > 1  n - 1 users (kmap calls not yet balanced by kunmap).
 * kunmap drops a count to 1, never to 0: only flushAllZeroPkmaps takes slots from 1 to 0,
 * all at once, with ONE flushTlbKernelRange over the whole window. It runs when the slot
 * cursor (last_pkmap_nr) wraps, and from kmapFlushUnused() -- which is how a Xen guest
 * removes residual kmap aliases of a page before pinning it as a page table. A page at
 * count 1 is still in the page_address hash: kmapping it again reuses its slot (1 -> 2).
 * kmap of a lowmem page is its direct-map address and takes no slot.
 * When no slot is free after LAST_PKMAP probes Linux sleeps on pkmap_map_wait; a vCPU of
 * this model cannot sleep inside the kernel, so kmap returns -EAGAIN (counted in
 * wouldSleep) and the caller reports it or retries after a kunmap.
 *
 * kmap_atomic: per-CPU fixmap slots, slot = KM_TYPE_NR * cpu + type, at
 * fixaddrTop - (fixKmapBegin + slot) * PAGE_SIZE. No lock: a slot belongs to its CPU.
 * kunmapAtomic must get an address inside the page kmapAtomic returned for that slot (any
 * offset in it, as the SLUB thread established); anything else is reported and counted as
 * misuse, never thrown. What kunmapAtomic does to the page tables follows 2.6.2x i386:
 *   debugHighmem false (default, CONFIG_DEBUG_HIGHMEM off): nothing. The PTE stays -- a
 *     residual alias of the page (with HIGHPTE, of a page-table page) until the slot is
 *     reused. The next kmapAtomic on the slot overwrites the PTE and invalidates the old
 *     translation on this vCPU (flushTlbLocal).
 *   debugHighmem true: the PTE is cleared and invalidated on this vCPU only
 *     (flushTlbLocal), never with a shootdown.
 * Residual kmap_atomic aliases are reported by aliasesOf/strayAliasesOf; kmapFlushUnused
 * does not remove them (it did not in Linux either).
 */
import { EAGAIN, PAGE_SIZE } from '../../src/abi/xen.js';
import { MAX_VCPUS_PER_DOMAIN, type VirtualLayout } from '../../src/abi/layout.js';
import {
  attachColumns,
  attachHeaders,
  createColumns,
  f64,
  i32,
  SharedKernelCtx,
  type SharedKernelDeps,
} from '../lib/shared_columns.js';
import { PAGE_KERNEL, type KernelPageTables } from './kernel_pt.js';

/* ---------------------------------------------------------------- km_type */
/** enum km_type of Linux 2.6.2x i386, in its order. */
export const KM_BOUNCE_READ = 0;
export const KM_SKB_SUNRPC_DATA = 1;
export const KM_SKB_DATA_SOFTIRQ = 2;
export const KM_USER0 = 3;
export const KM_USER1 = 4;
export const KM_BIO_SRC_IRQ = 5;
export const KM_BIO_DST_IRQ = 6;
export const KM_PTE0 = 7;
export const KM_PTE1 = 8;
export const KM_IRQ0 = 9;
export const KM_IRQ1 = 10;
export const KM_SOFTIRQ0 = 11;
export const KM_SOFTIRQ1 = 12;
export const KM_TYPE_NR = 13;

export const KM_TYPE_NAMES: readonly string[] = [
  'KM_BOUNCE_READ',
  'KM_SKB_SUNRPC_DATA',
  'KM_SKB_DATA_SOFTIRQ',
  'KM_USER0',
  'KM_USER1',
  'KM_BIO_SRC_IRQ',
  'KM_BIO_DST_IRQ',
  'KM_PTE0',
  'KM_PTE1',
  'KM_IRQ0',
  'KM_IRQ1',
  'KM_SOFTIRQ0',
  'KM_SOFTIRQ1',
];

/** page_address_htable: 1 << PA_HASH_ORDER buckets. */
export const PA_HASH_ORDER = 7;
const PA_HASH_SIZE = 1 << PA_HASH_ORDER;

/* ---------------------------------------------------------------- header */
export const H_KMAP_LOCK = 0;
const H_LAST_PKMAP_NR = 1;
const H_LAST_PKMAP = 2;
const H_NUM_CPUS = 3;
const H_DEBUG = 4;
const H_KMAP_PROT = 5;
const H_VA_BITS = 6;
const H_FIX_KMAP_BEGIN = 7;
const C_KMAPS = 16;
const C_KUNMAPS = 17;
const C_PKMAP_FLUSHES = 18;
const C_WRAPS = 19;
const C_FLUSH_UNUSED = 20;
const C_WOULD_SLEEP = 21;
const C_MISUSE = 22;
const C_ATOMIC_MAPS = 23;
const C_ATOMIC_UNMAPS = 24;
const C_ATOMIC_MISUSE = 25;
const C_LOCAL_FLUSHES = 26;
const C_PKMAP_CLEARED = 27;
const HDR_WORDS = 64;
const F_PKMAP_BASE = 0;
const F_FIXADDR_TOP = 1;
const F_PAGE_OFFSET = 2;
const F_HIGHMEM_START = 3;
const HDR_F64 = 8;

export interface HighmemConfig {
  layout: VirtualLayout;
  /** CPUs with kmap_atomic slots. */
  numCpus: number;
  /** CONFIG_DEBUG_HIGHMEM: kunmapAtomic clears the PTE (default false: residual aliases). */
  debugHighmem?: boolean;
  /** First highmem pfn (default layout.maxLowmemFrames; no highmem without a pkmap window). */
  highmemStartPfn?: number;
  /** kmap_prot (default PAGE_KERNEL). */
  kmapProt?: number;
  /** Fixmap index of the first kmap_atomic slot below fixaddrTop (default 0). */
  fixKmapBegin?: number;
}

/** cpu owns kmap_lock; onSpin keeps serving flush IPIs while it waits for it. */
export interface HighmemDeps extends SharedKernelDeps {
  kpt: KernelPageTables;
}

export interface HighmemStats {
  kmaps: number;
  kunmaps: number;
  /** flush_all_zero_pkmaps runs that cleared something and flushed the window. */
  pkmapFlushes: number;
  /** pkmap slots taken from 1 to 0 by those runs. */
  pkmapCleared: number;
  /** Wraps of last_pkmap_nr. */
  wraps: number;
  kmapFlushUnusedCalls: number;
  /** kmap calls that would have slept (returned -EAGAIN). */
  wouldSleep: number;
  /** kmap/kunmap misuse (unbalanced kunmap, bad pfn). */
  misuse: number;
  atomicMaps: number;
  atomicUnmaps: number;
  /** kmap_atomic/kunmap_atomic misuse (wrong address, slot in use, bad type). */
  atomicMisuse: number;
  localFlushes: number;
  /** kmap_atomic slots whose PTE still maps a page nobody uses (residual aliases). */
  atomicResidual: number;
}

export type HighmemAliasKind = 'pkmap' | 'kmap_atomic';

export interface HighmemAlias {
  va: number;
  kind: HighmemAliasKind;
  /** Current users: pkmap_count - 1, or 1/0 for a kmap_atomic slot in use / residual. */
  users: number;
  /** kmap_atomic only. */
  cpu?: number;
  type?: number;
}

/** The column table: the headers, the kmap_atomic slots, then pkmap and its hash. */
function highmemColumns(lastPkmap: number, numCpus: number) {
  const nAtomic = numCpus * KM_TYPE_NR;
  return {
    hdr: i32(HDR_WORDS),
    f64: f64(HDR_F64),
    atomicReturned: f64(nAtomic),
    pkmapCount: i32(lastPkmap),
    pkmapPfn: i32(lastPkmap),
    slotNext: i32(lastPkmap),
    hashHead: i32(PA_HASH_SIZE),
    atomicPfn: i32(nAtomic),
    atomicInUse: i32(nAtomic),
  };
}

export class Highmem {
  readonly sab: SharedArrayBuffer;
  /** The Int32 header (kmap_lock at H_KMAP_LOCK). */
  readonly header: Int32Array;
  /** LAST_PKMAP. */
  readonly lastPkmap: number;
  readonly pkmapBase: number;
  readonly fixaddrTop: number;
  readonly pageOffset: number;
  /** First highmem pfn (Infinity when there is no highmem). */
  readonly highmemStartPfn: number;
  readonly numCpus: number;
  /** Recent kernel-style messages from this vCPU (bounded). */
  get messages(): string[] {
    return this.#ctx.log.lines;
  }

  readonly cpu: number;
  readonly #ctx: SharedKernelCtx;
  readonly #kpt: KernelPageTables;
  readonly #hdr: Int32Array;
  readonly #pkmapCount: Int32Array;
  readonly #pkmapPfn: Int32Array;
  readonly #slotNext: Int32Array;
  readonly #hashHead: Int32Array;
  readonly #atomicReturned: Float64Array;
  readonly #atomicPfn: Int32Array;
  readonly #atomicInUse: Int32Array;
  readonly #mask: number;

  static create(config: HighmemConfig, deps: HighmemDeps): Highmem {
    const { layout } = config;
    const cpus = config.numCpus;
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_VCPUS_PER_DOMAIN) {
      throw new RangeError(`numCpus must be an integer in 1..${MAX_VCPUS_PER_DOMAIN}, got ${cpus}`);
    }
    const last = layout.lastPkmap;
    if (last !== 0 && (!Number.isInteger(last) || last < 1 || (last & (last - 1)) !== 0)) {
      throw new RangeError(`layout.lastPkmap must be 0 or a power of two, got ${last}`);
    }
    const hasHighmem = last > 0 && layout.pkmapBase > 0 && layout.fixaddrTop > 0;
    const highStart = hasHighmem ? (config.highmemStartPfn ?? layout.maxLowmemFrames) : Infinity;
    if (hasHighmem && (!Number.isInteger(highStart) || highStart < 0 || highStart > 0x7fffffff)) {
      throw new RangeError(`highmemStartPfn must be a pfn, got ${highStart}`);
    }
    const fixKmapBegin = config.fixKmapBegin ?? 0;
    if (!Number.isInteger(fixKmapBegin) || fixKmapBegin < 0) {
      throw new RangeError(`fixKmapBegin must be a non-negative integer, got ${fixKmapBegin}`);
    }
    if (hasHighmem) {
      const lowestFix = layout.fixaddrTop - (fixKmapBegin + cpus * KM_TYPE_NR - 1) * PAGE_SIZE;
      if (lowestFix < layout.pkmapBase + last * PAGE_SIZE) {
        throw new RangeError(`${cpus} CPUs of kmap_atomic slots reach below the fixmap into the pkmap window`);
      }
    }
    const prot = config.kmapProt ?? PAGE_KERNEL;
    const { sab, cols } = createColumns(highmemColumns(last, cpus));
    const { hdr, f64 } = cols;
    hdr[H_LAST_PKMAP] = last;
    hdr[H_NUM_CPUS] = cpus;
    hdr[H_DEBUG] = config.debugHighmem ? 1 : 0;
    hdr[H_KMAP_PROT] = prot;
    hdr[H_VA_BITS] = layout.vaBits;
    hdr[H_FIX_KMAP_BEGIN] = fixKmapBegin;
    f64[F_PKMAP_BASE] = layout.pkmapBase;
    f64[F_FIXADDR_TOP] = layout.fixaddrTop;
    f64[F_PAGE_OFFSET] = layout.pageOffset;
    f64[F_HIGHMEM_START] = highStart;
    const hm = new Highmem(sab, deps);
    hm.#pkmapPfn.fill(-1);
    hm.#slotNext.fill(-1);
    hm.#hashHead.fill(-1);
    hm.#atomicPfn.fill(-1);
    return hm;
  }

  static attach(sab: SharedArrayBuffer, deps: HighmemDeps): Highmem {
    return new Highmem(sab, deps);
  }

  private constructor(sab: SharedArrayBuffer, deps: HighmemDeps) {
    this.sab = sab;
    SharedKernelCtx.check(deps);
    this.cpu = deps.cpu;
    this.#kpt = deps.kpt;
    const headers = attachHeaders(sab, HDR_WORDS, HDR_F64, 'Highmem');
    const last = headers.hdr[H_LAST_PKMAP]!;
    const cpus = headers.hdr[H_NUM_CPUS]!;
    const cols = attachColumns(sab, highmemColumns(last, cpus), 'Highmem');
    const f64 = cols.f64;
    this.#hdr = this.header = cols.hdr;
    this.#ctx = SharedKernelCtx.forVcpu(deps, cols.hdr, C_MISUSE, H_VA_BITS);
    this.#pkmapCount = cols.pkmapCount;
    this.#pkmapPfn = cols.pkmapPfn;
    this.#slotNext = cols.slotNext;
    this.#hashHead = cols.hashHead;
    this.#atomicReturned = cols.atomicReturned;
    this.#atomicPfn = cols.atomicPfn;
    this.#atomicInUse = cols.atomicInUse;
    this.lastPkmap = last;
    this.#mask = last - 1;
    this.numCpus = cpus;
    this.pkmapBase = f64[F_PKMAP_BASE]!;
    this.fixaddrTop = f64[F_FIXADDR_TOP]!;
    this.pageOffset = f64[F_PAGE_OFFSET]!;
    this.highmemStartPfn = f64[F_HIGHMEM_START]!;
  }

  /* ----------------------------------------------------------------- config */

  get debugHighmem(): boolean {
    return Atomics.load(this.#hdr, H_DEBUG) !== 0;
  }

  setDebugHighmem(on: boolean): void {
    Atomics.store(this.#hdr, H_DEBUG, on ? 1 : 0);
  }

  /* ----------------------------------------------------------------- helpers */

  /** PageHighMem. */
  isHighmem(pfn: number): boolean {
    return pfn >= this.highmemStartPfn;
  }

  /** PKMAP_ADDR(nr). */
  pkmapAddr(nr: number): number {
    return this.pkmapBase + nr * PAGE_SIZE;
  }

  /** PKMAP_NR(va), or -1 outside the window. */
  pkmapNr(va: number): number {
    const nr = Math.floor((va - this.pkmapBase) / PAGE_SIZE);
    return nr >= 0 && nr < this.lastPkmap ? nr : -1;
  }

  /** pkmap_count[nr]. */
  pkmapCount(nr: number): number {
    return Atomics.load(this.#pkmapCount, nr);
  }

  /** The pkmap slot currently holding pfn (at any count >= 1), or -1. */
  pkmapSlotOf(pfn: number): number {
    this.#ctx.lock(this.#hdr, H_KMAP_LOCK);
    const nr = this.#lookup(pfn);
    this.#ctx.unlock(this.#hdr, H_KMAP_LOCK);
    return nr;
  }

  /** last_pkmap_nr: the slot the last new mapping took. */
  lastPkmapNr(): number {
    return Atomics.load(this.#hdr, H_LAST_PKMAP_NR);
  }

  /** __fix_to_virt(FIX_KMAP_BEGIN + KM_TYPE_NR * cpu + type). */
  kmapAtomicAddr(type: number, cpu: number): number {
    return this.fixaddrTop - (this.#hdr[H_FIX_KMAP_BEGIN]! + KM_TYPE_NR * cpu + type) * PAGE_SIZE;
  }

  /* ---------------------------------------------------------------- kmap */

  /**
   * page_address: the kernel address of pfn -- its direct-map address for lowmem, its
   * pkmap address while kmapped (count >= 1), else 0 (NULL).
   */
  pageAddress(pfn: number): number {
    if (!this.isHighmem(pfn)) return this.pageOffset + pfn * PAGE_SIZE;
    this.#ctx.lock(this.#hdr, H_KMAP_LOCK);
    const nr = this.#lookup(pfn);
    this.#ctx.unlock(this.#hdr, H_KMAP_LOCK);
    return nr < 0 ? 0 : this.pkmapAddr(nr);
  }

  /**
   * kmap: a kernel address for pfn, valid until kunmap. Lowmem: the direct map. Highmem:
   * its pkmap slot (a new one if it has none). Returns the va, -EAGAIN when Linux would
   * sleep for a free slot, or -EINVAL for a bad pfn.
   */
  kmap(pfn: number): number {
    if (!Number.isInteger(pfn) || pfn < 0 || pfn > 0x7fffffff) return this.#ctx.misuse(`kmap: bad pfn ${pfn}`);
    if (!this.isHighmem(pfn)) return this.pageOffset + pfn * PAGE_SIZE;
    const h = this.#hdr;
    this.#ctx.lock(h, H_KMAP_LOCK);
    let nr = this.#lookup(pfn);
    if (nr < 0) nr = this.#mapNewVirtual(pfn);
    if (nr < 0) {
      this.#ctx.unlock(h, H_KMAP_LOCK);
      Atomics.add(h, C_WOULD_SLEEP, 1);
      this.#ctx.printk(
        `kmap: all ${this.lastPkmap} pkmap slots busy after LAST_PKMAP probes ` +
          `(pfn ${pfn.toString(16)}): would sleep on pkmap_map_wait`,
      );
      return -EAGAIN;
    }
    this.#pkmapCount[nr] = this.#pkmapCount[nr]! + 1; // >= 2: mapped and used
    this.#ctx.unlock(h, H_KMAP_LOCK);
    Atomics.add(h, C_KMAPS, 1);
    return this.pkmapAddr(nr);
  }

  /** kunmap: one user fewer; the slot stays mapped (count >= 1). 0 or -EINVAL. */
  kunmap(pfn: number): number {
    if (!Number.isInteger(pfn) || pfn < 0 || pfn > 0x7fffffff) return this.#ctx.misuse(`kunmap: bad pfn ${pfn}`);
    if (!this.isHighmem(pfn)) return 0;
    const h = this.#hdr;
    this.#ctx.lock(h, H_KMAP_LOCK);
    const nr = this.#lookup(pfn);
    if (nr < 0 || this.#pkmapCount[nr]! < 2) {
      this.#ctx.unlock(h, H_KMAP_LOCK);
      return this.#ctx.misuse(
        nr < 0
          ? `kernel BUG: kunmap_high: page ${pfn.toString(16)} is not kmapped`
          : `kernel BUG: kunmap_high: pkmap_count[${nr}] would drop to 0 (page ${pfn.toString(16)} has no kmap user)`,
      );
    }
    this.#pkmapCount[nr] = this.#pkmapCount[nr]! - 1; // 1: unused, still mapped
    this.#ctx.unlock(h, H_KMAP_LOCK);
    Atomics.add(h, C_KUNMAPS, 1);
    return 0;
  }

  /** kmap_flush_unused: clear and flush every slot nobody uses (count 1). */
  kmapFlushUnused(): void {
    const h = this.#hdr;
    this.#ctx.lock(h, H_KMAP_LOCK);
    try {
      this.#flushAllZeroPkmaps();
    } finally {
      this.#ctx.unlock(h, H_KMAP_LOCK);
    }
    Atomics.add(h, C_FLUSH_UNUSED, 1);
  }

  /* ------------------------------------------------------------- kmap_atomic */

  /**
   * kmap_atomic: map pfn at this CPU's `type` slot. Lowmem: the direct map, no slot PTE.
   * Returns the va or -EINVAL (bad type/cpu/pfn). A slot already in use is reported (the
   * caller nested two users of one type) and then reused, as the hardware would.
   */
  kmapAtomic(pfn: number, type: number, cpu: number, prot = this.#hdr[H_KMAP_PROT]!): number {
    const slot = this.#atomicSlot(type, cpu, 'kmap_atomic');
    if (slot < 0) return slot;
    if (!Number.isInteger(pfn) || pfn < 0 || pfn > 0x7fffffff) {
      return this.#atomicMisuse(`kmap_atomic: bad pfn ${pfn}`);
    }
    if (this.#atomicInUse[slot]) {
      this.#atomicMisuse(
        `BUG: kmap_atomic(${KM_TYPE_NAMES[type]}) on cpu ${cpu}: slot still in use ` +
          `(${this.#ctx.fmt(this.#atomicReturned[slot]!)} not kunmapped)`,
      );
    }
    Atomics.add(this.#hdr, C_ATOMIC_MAPS, 1);
    if (!this.isHighmem(pfn)) {
      const va = this.pageOffset + pfn * PAGE_SIZE;
      this.#atomicReturned[slot] = va;
      this.#atomicInUse[slot] = 1;
      return va;
    }
    const va = this.kmapAtomicAddr(type, cpu);
    const kpt = this.#kpt;
    const hadPte = this.#atomicPfn[slot]! >= 0;
    kpt.setPte(va, kpt.pfnToMfn(pfn), prot);
    kpt.flushPending();
    if (hadPte) {
      // The residual translation of the previous page may be in this CPU's TLB.
      kpt.flushTlbLocal(va);
      Atomics.add(this.#hdr, C_LOCAL_FLUSHES, 1);
    }
    this.#atomicPfn[slot] = pfn;
    this.#atomicReturned[slot] = va;
    this.#atomicInUse[slot] = 1;
    return va;
  }

  /**
   * kunmap_atomic: va must lie in the page kmapAtomic returned for (type, cpu). A wrong
   * address is reported and counted, the slot is given up and its PTE left in place
   * (Linux cleared nothing either). Returns 0 or -EINVAL.
   */
  kunmapAtomic(va: number, type: number, cpu: number): number {
    const slot = this.#atomicSlot(type, cpu, 'kunmap_atomic');
    if (slot < 0) return slot;
    const name = KM_TYPE_NAMES[type];
    if (!this.#atomicInUse[slot]) {
      return this.#atomicMisuse(`BUG: kunmap_atomic(${this.#ctx.fmt(va)}, ${name}) on cpu ${cpu}: slot not in use`);
    }
    const page = this.#atomicReturned[slot]!;
    this.#atomicInUse[slot] = 0;
    if (!Number.isSafeInteger(va) || va < page || va >= page + PAGE_SIZE) {
      return this.#atomicMisuse(
        `BUG: kunmap_atomic(${this.#ctx.fmt(va)}, ${name}) on cpu ${cpu}: ` +
          `address outside the page kmap_atomic returned (${this.#ctx.fmt(page)})`,
      );
    }
    Atomics.add(this.#hdr, C_ATOMIC_UNMAPS, 1);
    if (page === this.kmapAtomicAddr(type, cpu) && Atomics.load(this.#hdr, H_DEBUG)) {
      const kpt = this.#kpt;
      kpt.setPte(page, -1, 0);
      kpt.flushPending();
      kpt.flushTlbLocal(page);
      Atomics.add(this.#hdr, C_LOCAL_FLUSHES, 1);
      this.#atomicPfn[slot] = -1;
    }
    return 0;
  }

  /* ----------------------------------------------------------------- queries */

  /** Every pkmap / kmap_atomic mapping of pfn, with its users (0 = a stray alias). */
  aliasesOf(pfn: number): HighmemAlias[] {
    const out: HighmemAlias[] = [];
    if (!this.isHighmem(pfn)) return out;
    const nr = this.pkmapSlotOf(pfn);
    if (nr >= 0) out.push({ va: this.pkmapAddr(nr), kind: 'pkmap', users: Math.max(0, this.pkmapCount(nr) - 1) });
    for (let cpu = 0; cpu < this.numCpus; cpu++) {
      for (let type = 0; type < KM_TYPE_NR; type++) {
        const slot = cpu * KM_TYPE_NR + type;
        if (this.#atomicPfn[slot] !== pfn) continue;
        const va = this.kmapAtomicAddr(type, cpu);
        const users = this.#atomicInUse[slot] && this.#atomicReturned[slot] === va ? 1 : 0;
        out.push({ va, kind: 'kmap_atomic', users, cpu, type });
      }
    }
    return out;
  }

  /** Mappings of pfn that nobody uses: what must go before Xen can pin it. */
  strayAliasesOf(pfn: number): HighmemAlias[] {
    return this.aliasesOf(pfn).filter((a) => a.users === 0);
  }

  stats(): HighmemStats {
    const h = this.#hdr;
    const c = (i: number): number => Atomics.load(h, i);
    let residual = 0;
    for (let s = 0; s < this.#atomicPfn.length; s++) {
      if (this.#atomicPfn[s]! >= 0 && !this.#atomicInUse[s]) residual++;
    }
    return {
      kmaps: c(C_KMAPS),
      kunmaps: c(C_KUNMAPS),
      pkmapFlushes: c(C_PKMAP_FLUSHES),
      pkmapCleared: c(C_PKMAP_CLEARED),
      wraps: c(C_WRAPS),
      kmapFlushUnusedCalls: c(C_FLUSH_UNUSED),
      wouldSleep: c(C_WOULD_SLEEP),
      misuse: c(C_MISUSE),
      atomicMaps: c(C_ATOMIC_MAPS),
      atomicUnmaps: c(C_ATOMIC_UNMAPS),
      atomicMisuse: c(C_ATOMIC_MISUSE),
      localFlushes: c(C_LOCAL_FLUSHES),
      atomicResidual: residual,
    };
  }

  /** Structural self-check (pkmap counts vs. pfns vs. the hash). Empty when all hold. */
  checkInvariants(): string[] {
    const bad: string[] = [];
    const seen = new Uint8Array(this.lastPkmap);
    for (let b = 0; b < PA_HASH_SIZE; b++) {
      for (let nr = this.#hashHead[b]!, steps = 0; nr >= 0; nr = this.#slotNext[nr]!, steps++) {
        if (steps > this.lastPkmap) {
          bad.push(`hash bucket ${b} loops`);
          break;
        }
        if (seen[nr]) bad.push(`slot ${nr} hashed twice`);
        seen[nr] = 1;
        if (this.#hash(this.#pkmapPfn[nr]!) !== b) bad.push(`slot ${nr} in the wrong bucket`);
      }
    }
    for (let nr = 0; nr < this.lastPkmap; nr++) {
      const c = this.#pkmapCount[nr]!;
      const pfn = this.#pkmapPfn[nr]!;
      if (c < 0) bad.push(`pkmap_count[${nr}] = ${c}`);
      if (c === 0 && (pfn >= 0 || seen[nr])) bad.push(`free slot ${nr} still maps pfn ${pfn}`);
      if (c > 0 && (pfn < 0 || !seen[nr])) bad.push(`slot ${nr} at count ${c} maps nothing or is not hashed`);
    }
    if (this.#hdr[H_KMAP_LOCK] !== 0) bad.push('kmap_lock is held');
    return bad;
  }

  /* ============================================================== internals */

  /** A kmap_atomic caller's mistake: counted apart from kmap's. */
  #atomicMisuse(line: string): number {
    return this.#ctx.misuse(line, C_ATOMIC_MISUSE);
  }

  #atomicSlot(type: number, cpu: number, caller: string): number {
    if (!Number.isInteger(type) || type < 0 || type >= KM_TYPE_NR) {
      return this.#atomicMisuse(`${caller}: bad km_type ${type} (0..${KM_TYPE_NR - 1}: ${KM_TYPE_NAMES.join(', ')})`);
    }
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= this.numCpus) {
      return this.#atomicMisuse(`${caller}: bad cpu ${cpu} (0..${this.numCpus - 1})`);
    }
    return cpu * KM_TYPE_NR + type;
  }

  #hash(pfn: number): number {
    return Math.imul(pfn, 0x9e370001) >>> (32 - PA_HASH_ORDER);
  }

  /** The slot mapping pfn, or -1 (kmap_lock held). */
  #lookup(pfn: number): number {
    for (let nr = this.#hashHead[this.#hash(pfn)]!; nr >= 0; nr = this.#slotNext[nr]!) {
      if (this.#pkmapPfn[nr] === pfn) return nr;
    }
    return -1;
  }

  #hashRemove(nr: number): void {
    const b = this.#hash(this.#pkmapPfn[nr]!);
    let prev = -1;
    for (let cur = this.#hashHead[b]!; cur >= 0; prev = cur, cur = this.#slotNext[cur]!) {
      if (cur !== nr) continue;
      if (prev < 0) this.#hashHead[b] = this.#slotNext[cur]!;
      else this.#slotNext[prev] = this.#slotNext[cur]!;
      this.#slotNext[cur] = -1;
      return;
    }
  }

  /**
   * map_new_virtual (kmap_lock held): probe from last_pkmap_nr + 1 for a slot at count 0,
   * flushing all unused slots when the cursor wraps to 0. After LAST_PKMAP fruitless probes
   * since the last wrap: -1 (Linux would sleep). Else the slot, mapped, at count 1.
   */
  #mapNewVirtual(pfn: number): number {
    const h = this.#hdr;
    const counts = this.#pkmapCount;
    let last = h[H_LAST_PKMAP_NR]!;
    let probes = this.lastPkmap;
    for (;;) {
      last = (last + 1) & this.#mask;
      if (last === 0) {
        Atomics.add(h, C_WRAPS, 1);
        this.#flushAllZeroPkmaps();
        probes = this.lastPkmap;
      }
      if (counts[last] === 0) break;
      if (--probes === 0) {
        h[H_LAST_PKMAP_NR] = last;
        return -1;
      }
    }
    h[H_LAST_PKMAP_NR] = last;
    const kpt = this.#kpt;
    kpt.setPte(this.pkmapAddr(last), kpt.pfnToMfn(pfn), h[H_KMAP_PROT]!);
    kpt.flushPending();
    counts[last] = 1;
    this.#pkmapPfn[last] = pfn;
    const b = this.#hash(pfn);
    this.#slotNext[last] = this.#hashHead[b]!;
    this.#hashHead[b] = last;
    return last;
  }

  /**
   * flush_all_zero_pkmaps (kmap_lock held): every slot at 1 is cleared and goes to 0, then
   * ONE flush over the whole window -- only if something was cleared.
   */
  #flushAllZeroPkmaps(): void {
    const kpt = this.#kpt;
    const counts = this.#pkmapCount;
    let cleared = 0;
    for (let nr = 0; nr < this.lastPkmap; nr++) {
      if (counts[nr] !== 1) continue;
      counts[nr] = 0;
      kpt.setPte(this.pkmapAddr(nr), -1, 0);
      this.#hashRemove(nr);
      this.#pkmapPfn[nr] = -1;
      cleared++;
    }
    if (cleared === 0) return;
    kpt.flushPending();
    kpt.flushTlbKernelRange(this.pkmapAddr(0), this.pkmapAddr(this.lastPkmap));
    Atomics.add(this.#hdr, C_PKMAP_FLUSHES, 1);
    Atomics.add(this.#hdr, C_PKMAP_CLEARED, cleared);
  }
}
