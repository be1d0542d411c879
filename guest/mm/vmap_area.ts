/*
 * mm/vmalloc, part 1: the vmap_area allocator -- the address space of the vmalloc window,
 * its first-fit cache, and the lazy purge. (Part 2 is vmap_block.ts; the public API is
 * vmalloc.ts.)
 *
 * ----------------------------------------------------------------------------------------
 * Invariants
 * ----------------------------------------------------------------------------------------
 * A vmap_area is a range [va_start, va_end) of the vmalloc space, page-aligned, that no
 * other area overlaps. vmap/vmalloc areas end with one unmapped guard page (the guard is
 * part of the area, as it is part of Linux's vm_struct size). Its state is in aFlags:
 *
 *   VM_VM_AREA        live: it has an owner (a vmap/vmalloc caller) and its PTEs are valid.
 *   VM_LAZY_FREE      unmapped by its owner, lazily: the owner is gone, but its PTEs are
 *                     STILL PRESENT (pre-2.6.37) and other vCPUs may still cache them. It
 *                     counts (va_end - va_start) / PAGE_SIZE pages in vmap_lazy_nr and is
 *                     on the lazy list.
 *   VM_LAZY_FREEING   taken by a purge (or an eager unmap) that is clearing its PTEs;
 *                     nobody else touches it.
 *   0                 a raw area of allocVmapArea (no mapping of this layer's).
 *
 * What "lazy" means: an unmap does not touch the page tables and does not flush. It only
 * marks the area and counts its pages. A purge (__purge_vmap_area_lazy) later takes every
 * lazy area at once, clears all their PTEs, issues ONE flushTlbKernelRange over
 * [min va_start, max va_end) and only then frees the areas. A purge runs when
 * vmap_lazy_nr > lazy_max_pages() (trylock: skipped if another purge runs), when an
 * allocation finds no space (synchronous, then the allocation retries once), and from
 * vm_unmap_aliases (synchronous, with the flush forced even if nothing was lazy).
 *
 * When an ADDRESS may be reused: only after its area has been freed, i.e. after its PTEs
 * were cleared AND the TLB flush over its range was issued. So a lazily unmapped address
 * is never handed out again while a stale translation of it can exist anywhere.
 *
 * When a vmap_pages REFERENCE is dropped: only after the page's PTE is cleared and
 * flushed -- at the purge when lazy, at the unmap when eager.
 *
 * The eager strategy (2.6.23's vunmap, Jeremy's CONFIG_XEN workaround) is not a layer of
 * its own here: it is this allocator with unmapEager in place of the lazy list, plus one
 * branch in vmap_block.ts's vbFree.
 *
 * ----------------------------------------------------------------------------------------
 * Data structures (columns of vmalloc_layout.ts; no object per area)
 * ----------------------------------------------------------------------------------------
 * Instead of Linux's rbtree:
 *   - address order: a doubly linked list through the slots (aNext/aPrev), O(1) insert
 *     and remove once the neighbour is known;
 *   - lookup by start address (vunmap, vfree): O(1), a per-page table of the window
 *     (areaAt[(va - vmallocStart) / PAGE_SIZE] = slot);
 *   - first fit: a walk of the list, from the lowest area or -- 2.6.36's free_vmap_cache,
 *     kept exact -- from the area the last allocation made when the request is larger than
 *     every hole below it (cached_hole_size). Result identical to a plain first fit (the
 *     slow twin in test/vmalloc.test.ts checks it); sequential allocation is O(1);
 *   - the lazy areas are also on their own list, so a purge costs O(lazy areas), not O(all).
 * Why not a sorted array with binary search (the first version): on a SharedArrayBuffer,
 * V8's TypedArray.copyWithin copies element by element (~2 ns/element, 20x the cost on a
 * plain ArrayBuffer), and lazy mode's first fit walked every lazy area. Measured, node 20
 * on this container, vmap(4 pages)+vunmap against a no-op KernelPageTables, best of 5:
 *                            sorted array (1 run)   this list + start table + cache
 *     eager, 1,000 live areas         5.7 us             0.40 us
 *     eager, 10,000 live areas       57   us             0.55 us
 *     lazy, 1 CPU (purge amortised)   6.0 us             0.57 us   (0.66 with 10,000 live)
 * i.e. flat, and below one hypercall round trip: the benchmarks measure flushes, not this.
 * The "pages array" of an area is a range of one pfn pool indexed by the page number of
 * the address inside the vmalloc space (handle = (va_start - vmallocStart) / PAGE_SIZE):
 * the pool is the shadow of the vmalloc L1 entries this layer installed (-1 = none), so
 * it needs no allocator of its own and a query can find every alias of a pfn. The vmap
 * blocks (vmap_block.ts) use the same pool for their pages.
 *
 * Locks: purge_lock -> (vmap_block.ts's locks) -> vmap_area_lock. The purge issues its one
 * flush under purge_lock (as Linux does), never under vmap_area_lock; it clears PTEs and
 * calls into the page allocator WITHOUT vmap_area_lock (the areas it took are
 * VM_LAZY_FREEING), as Linux does under RCU. vmap_lazy_nr and the counters use Atomics.
 */
import { ENOMEM, PAGE_SIZE } from '../../src/abi/xen.js';
import type { SharedKernelCtx } from '../lib/shared_columns.js';
import type { KernelPageTables, PageAllocator, PageRefs } from './kernel_pt.js';
import {
  C_ALLOC_FAILURES,
  C_ALLOC_RETRIES,
  C_FLUSHES,
  C_LAZY_PAGES,
  C_LAZY_PEAK,
  C_PTES_CLEARED,
  C_PTES_SET,
  C_PURGE_SKIPPED,
  C_PURGES,
  C_REF_PAGES,
  F_CACHED_HOLE,
  H_CACHE_SLOT,
  H_FREE_SLOT,
  H_HEAD,
  H_LAZY_HEAD,
  H_LAZY_MAX,
  H_LAZY_NR,
  H_NR_AREAS,
  H_PURGE_LOCK,
  H_VMAP_AREA_LOCK,
  type VmallocColumns,
} from './vmalloc_layout.js';
import { VA_VMAP_BLOCK, VM_HOLD_REFS, VM_LAZY_FREE, VM_LAZY_FREEING, VM_VM_AREA } from './vmalloc_flags.js';

/** Area flag, transient: taken by the purge in progress. */
const VA_PURGE_SELECTED = 0x100;

export const isPow2 = (x: number): boolean => Number.isInteger(x) && x > 0 && (x & (x - 1)) === 0;
const alignUp = (x: number, a: number): number => Math.ceil(x / a) * a;

export interface VmapAreaInfo {
  start: number;
  end: number;
  /** vmap_area flags (VM_LAZY_FREE, VM_VM_AREA, VA_VMAP_BLOCK ...). */
  flags: number;
  /** vm_struct flags (VM_MAP, VM_ALLOC, VM_HOLD_REFS ...). */
  vmFlags: number;
  nrPages: number;
  prot: number;
}

/** What checkInvariants found in the areas, for the checks that span both parts. */
export interface AreaTotals {
  /** Live slots in address order. */
  order: number[];
  lazyNr: number;
  /** PTEs still present in lazy areas other than vmap blocks. */
  lazyPages: number;
  refPages: number;
}

export class VmapAreas {
  readonly vmallocStart: number;
  readonly vmallocEnd: number;
  readonly maxAreas: number;
  readonly poolPages: number;
  /* The area columns, read by the facade and by vmap_block.ts (see the invariants). */
  readonly aStart: Float64Array;
  readonly aEnd: Float64Array;
  readonly aFlags: Int32Array;
  readonly aVmFlags: Int32Array;
  readonly aNrPages: Int32Array;
  readonly aProt: Int32Array;
  readonly aNext: Int32Array;
  /** The pfn pool: the shadow of the vmalloc L1 entries (-1 = none). */
  readonly pool: Int32Array;

  readonly #ctx: SharedKernelCtx;
  readonly #kpt: KernelPageTables;
  readonly #refs: PageRefs;
  readonly #allocator: PageAllocator;
  readonly #hdr: Int32Array;
  readonly #f64: Float64Array;
  readonly #aPrev: Int32Array;
  readonly #aLazyNext: Int32Array;
  readonly #areaAt: Int32Array;
  /** This vCPU's purge scratch: the slots a purge took. */
  readonly #scratch: Int32Array;
  /** purge_fragmented_blocks_allcpus, run by a synchronous purge (set by the facade). */
  #purgeFragmentedBlocks: () => void = () => {};

  constructor(
    cols: VmallocColumns,
    ctx: SharedKernelCtx,
    deps: { kpt: KernelPageTables; refs: PageRefs; allocator: PageAllocator },
    vmallocStart: number,
    vmallocEnd: number,
  ) {
    this.#ctx = ctx;
    this.#kpt = deps.kpt;
    this.#refs = deps.refs;
    this.#allocator = deps.allocator;
    this.#hdr = cols.hdr;
    this.#f64 = cols.f64;
    this.aStart = cols.aStart;
    this.aEnd = cols.aEnd;
    this.aFlags = cols.aFlags;
    this.aVmFlags = cols.aVmFlags;
    this.aNrPages = cols.aNrPages;
    this.aProt = cols.aProt;
    this.aNext = cols.aNext;
    this.#aPrev = cols.aPrev;
    this.#aLazyNext = cols.aLazyNext;
    this.#areaAt = cols.areaAt;
    this.pool = cols.pool;
    this.vmallocStart = vmallocStart;
    this.vmallocEnd = vmallocEnd;
    this.maxAreas = cols.aStart.length;
    this.poolPages = cols.pool.length;
    this.#scratch = new Int32Array(this.maxAreas);
  }

  /** Fresh state: no area, every slot free, nothing mapped. */
  init(): void {
    const h = this.#hdr;
    this.pool.fill(-1);
    this.#areaAt.fill(-1);
    h[H_HEAD] = -1;
    h[H_CACHE_SLOT] = -1;
    h[H_LAZY_HEAD] = -1;
    for (let i = 0; i < this.maxAreas; i++) this.aNext[i] = i + 1 < this.maxAreas ? i + 1 : -1;
    h[H_FREE_SLOT] = this.maxAreas > 0 ? 0 : -1;
  }

  /** Hook for vmap_block.ts: what a synchronous purge releases first. */
  setPurgeFragmentedBlocks(fn: () => void): void {
    this.#purgeFragmentedBlocks = fn;
  }

  poolIndex(va: number): number {
    return (va - this.vmallocStart) / PAGE_SIZE;
  }

  info(s: number): VmapAreaInfo {
    return {
      start: this.aStart[s]!,
      end: this.aEnd[s]!,
      flags: this.aFlags[s]! & ~VA_PURGE_SELECTED,
      vmFlags: this.aVmFlags[s]!,
      nrPages: this.aNrPages[s]!,
      prot: this.aProt[s]!,
    };
  }

  /* ---- the address index (callers hold vmap_area_lock) -------------------- */

  /** The lowest area (walk on with aNext), or -1. */
  __head(): number {
    return this.#hdr[H_HEAD]!;
  }

  /** The area starting exactly at va, or -1: O(1) through the per-page start table. */
  __slotAt(va: number): number {
    if (!(va >= this.vmallocStart && va < this.vmallocEnd) || va % PAGE_SIZE !== 0) return -1;
    return this.#areaAt[this.poolIndex(va)]!;
  }

  /**
   * Put a VM_LAZY_FREE area on the lazy list, its pages already counted in vmap_lazy_nr
   * (so a purge never subtracts what was not added). Returns the new vmap_lazy_nr.
   */
  __lazyListAdd(s: number, vaPages: number): number {
    const nr = Atomics.add(this.#hdr, H_LAZY_NR, vaPages) + vaPages;
    this.#aLazyNext[s] = this.#hdr[H_LAZY_HEAD]!;
    this.#hdr[H_LAZY_HEAD] = s;
    return nr;
  }

  /**
   * __free_vmap_area: unlink an area and free its slot, keeping the first-fit cache exact:
   * freeing the cache area moves the cache to its predecessor (holes below are unchanged);
   * freeing an area below it may merge a bigger hole below it, which cached_hole_size
   * must then cover.
   */
  __freeVmapArea(s: number): void {
    const h = this.#hdr;
    const prev = this.#aPrev[s]!;
    const next = this.aNext[s]!;
    const cache = h[H_CACHE_SLOT]!;
    if (cache === s) {
      h[H_CACHE_SLOT] = prev;
    } else if (cache >= 0 && this.aStart[s]! < this.aStart[cache]!) {
      const lo = prev >= 0 ? this.aEnd[prev]! : this.vmallocStart;
      const hole = this.aStart[next]! - lo; // next exists: the cache is above s
      if (hole > this.#f64[F_CACHED_HOLE]!) this.#f64[F_CACHED_HOLE] = hole;
    }
    if (prev >= 0) this.aNext[prev] = next;
    else h[H_HEAD] = next;
    if (next >= 0) this.#aPrev[next] = prev;
    this.#areaAt[this.poolIndex(this.aStart[s]!)] = -1;
    h[H_NR_AREAS] = h[H_NR_AREAS]! - 1;
    this.#releaseSlot(s);
  }

  #releaseSlot(s: number): void {
    const idx = this.poolIndex(this.aStart[s]!);
    this.pool.fill(-1, idx, idx + (this.aEnd[s]! - this.aStart[s]!) / PAGE_SIZE);
    this.aFlags[s] = 0;
    this.aVmFlags[s] = 0;
    this.aNrPages[s] = 0;
    this.aNext[s] = this.#hdr[H_FREE_SLOT]!;
    this.#hdr[H_FREE_SLOT] = s;
  }

  /** freeVmapArea under its lock. */
  freeVmapArea(s: number): void {
    this.#ctx.lock(this.#hdr, H_VMAP_AREA_LOCK);
    this.__freeVmapArea(s);
    this.#ctx.unlock(this.#hdr, H_VMAP_AREA_LOCK);
  }

  /**
   * First fit under the lock, walking the address list from the lowest area -- or, as
   * 2.6.36's free_vmap_cache does, from the area the last full-window allocation made,
   * when the request is larger than every hole below that area (cached_hole_size): then
   * nothing below can fit and the result is the same first fit. Returns the new slot, or
   * -1 when no gap fits or no slot is free.
   */
  #allocLocked(size: number, align: number, vstart: number, vend: number, vaFlags: number): number {
    const h = this.#hdr;
    const slot = h[H_FREE_SLOT]!;
    if (slot < 0) return -1;
    const aStart = this.aStart;
    const aEnd = this.aEnd;
    const aNext = this.aNext;
    const full = vstart === this.vmallocStart;
    const cache = full ? h[H_CACHE_SLOT]! : -1;
    let prev: number;
    let cur: number;
    let addr: number;
    let holeMax: number;
    if (cache >= 0 && size > this.#f64[F_CACHED_HOLE]!) {
      prev = cache;
      cur = aNext[cache]!;
      addr = alignUp(aEnd[cache]!, align);
      holeMax = this.#f64[F_CACHED_HOLE]!;
    } else {
      prev = -1;
      cur = h[H_HEAD]!;
      addr = alignUp(vstart, align);
      holeMax = 0;
    }
    let prevEnd = prev >= 0 ? aEnd[prev]! : this.vmallocStart;
    for (;;) {
      if (addr + size > vend) return -1;
      if (cur < 0) break;
      const cs = aStart[cur]!;
      const ce = aEnd[cur]!;
      if (ce > addr && addr + size <= cs) break; // the gap before cur fits
      // Step over cur (it overlaps, or alignment/vstart carried addr past it).
      if (cs - prevEnd > holeMax) holeMax = cs - prevEnd;
      if (ce > addr) addr = alignUp(ce, align);
      prevEnd = ce;
      prev = cur;
      cur = aNext[cur]!;
    }
    h[H_FREE_SLOT] = aNext[slot]!;
    aNext[slot] = cur;
    this.#aPrev[slot] = prev;
    if (prev >= 0) aNext[prev] = slot;
    else h[H_HEAD] = slot;
    if (cur >= 0) this.#aPrev[cur] = slot;
    this.#areaAt[this.poolIndex(addr)] = slot;
    h[H_NR_AREAS] = h[H_NR_AREAS]! + 1;
    aStart[slot] = addr;
    aEnd[slot] = addr + size;
    this.aFlags[slot] = vaFlags;
    this.aVmFlags[slot] = 0;
    this.aNrPages[slot] = 0;
    this.aProt[slot] = 0;
    if (full) {
      // The alignment slop before the new area is a hole below it too.
      if (addr - prevEnd > holeMax) holeMax = addr - prevEnd;
      h[H_CACHE_SLOT] = slot;
      this.#f64[F_CACHED_HOLE] = holeMax;
    }
    return slot;
  }

  /**
   * alloc_vmap_area with Linux's single purge-and-retry: reserve [va, va + size) in
   * [vstart, vend), first fit, aligned, with area flags vaFlags. Slot or -ENOMEM.
   */
  allocVmapArea(size: number, align: number, vstart: number, vend: number, vaFlags: number): number {
    const h = this.#hdr;
    const ctx = this.#ctx;
    for (let purged = false; ; purged = true) {
      ctx.lock(h, H_VMAP_AREA_LOCK);
      const slot = this.#allocLocked(size, align, vstart, vend, vaFlags);
      ctx.unlock(h, H_VMAP_AREA_LOCK);
      if (slot >= 0) return slot;
      if (purged) break;
      Atomics.add(h, C_ALLOC_RETRIES, 1);
      this.purgeVmapAreaLazy(true, false, Infinity, -Infinity);
    }
    Atomics.add(h, C_ALLOC_FAILURES, 1);
    ctx.printk(`vmap allocation for size ${size} failed: use vmalloc=<size> to increase size.`);
    return -ENOMEM;
  }

  /** get_vm_area: an area for count pages plus the guard page, VM_VM_AREA. Slot or -ENOMEM. */
  getVmArea(count: number, vmFlags: number, prot: number): number {
    const size = (count + 1) * PAGE_SIZE;
    const slot = this.allocVmapArea(size, PAGE_SIZE, this.vmallocStart, this.vmallocEnd, VM_VM_AREA);
    if (slot >= 0) {
      this.aVmFlags[slot] = vmFlags;
      this.aNrPages[slot] = count;
      this.aProt[slot] = prot;
    }
    return slot;
  }

  /* ---- mapping and unmapping ---------------------------------------------- */

  /** Install the PTEs of a fresh mapping and record them in the pool. */
  mapPages(va: number, pages: ArrayLike<number>, count: number, prot: number): void {
    const kpt = this.#kpt;
    const pool = this.pool;
    const idx = this.poolIndex(va);
    for (let i = 0; i < count; i++) {
      const pfn = pages[i]!;
      pool[idx + i] = pfn;
      kpt.setPte(va + i * PAGE_SIZE, kpt.pfnToMfn(pfn), prot);
    }
    kpt.flushPending();
    Atomics.add(this.#hdr, C_PTES_SET, count);
  }

  /** Clear the PTEs this layer installed in an area (pool kept: the pfns are still needed). */
  #clearAreaPtes(s: number): number {
    const kpt = this.#kpt;
    const pool = this.pool;
    const st = this.aStart[s]!;
    const idx = this.poolIndex(st);
    const pages = (this.aEnd[s]! - st) / PAGE_SIZE;
    let cleared = 0;
    for (let p = 0; p < pages; p++) {
      if (pool[idx + p]! >= 0) {
        kpt.setPte(st + p * PAGE_SIZE, -1, 0);
        cleared++;
      }
    }
    return cleared;
  }

  /** Drop the vmapPages references of an area whose PTEs are cleared and flushed. */
  #putAreaRefs(s: number): void {
    if (!(this.aVmFlags[s]! & VM_HOLD_REFS)) return;
    const idx = this.poolIndex(this.aStart[s]!);
    const n = this.aNrPages[s]!;
    for (let p = 0; p < n; p++) this.#refs.putPage(this.pool[idx + p]!);
    this.aVmFlags[s] = this.aVmFlags[s]! & ~VM_HOLD_REFS;
    Atomics.sub(this.#hdr, C_REF_PAGES, n);
  }

  /** Count n more data pages whose PTEs outlive their unmap (and the peak). */
  addLazyPages(n: number): void {
    const h = this.#hdr;
    const now = Atomics.add(h, C_LAZY_PAGES, n) + n;
    let peak = Atomics.load(h, C_LAZY_PEAK);
    while (now > peak) {
      const seen = Atomics.compareExchange(h, C_LAZY_PEAK, peak, now);
      if (seen === peak) break;
      peak = seen;
    }
  }

  /** vfree's part: give an area's pages back to the page allocator. */
  freeAreaPages(s: number): void {
    const idx = this.poolIndex(this.aStart[s]!);
    const n = this.aNrPages[s]!;
    for (let p = 0; p < n; p++) this.#allocator.freePage(this.pool[idx + p]!);
  }

  /**
   * free_unmap_vmap_area_noflush, 2.6.28: a detached (VM_LAZY_FREEING) area becomes
   * VM_LAZY_FREE with its PTEs in place; with freePages, its pages go back now. Returns
   * the new vmap_lazy_nr, for purgeIfOverLimit.
   */
  unmapLazy(s: number, freePages: boolean): number {
    const h = this.#hdr;
    if (freePages) this.freeAreaPages(s);
    // Read the size before the area becomes purgeable: once it is on the lazy list
    // another vCPU's purge may free the slot and reuse it.
    const vaPages = (this.aEnd[s]! - this.aStart[s]!) / PAGE_SIZE;
    this.#ctx.lock(h, H_VMAP_AREA_LOCK);
    this.aFlags[s] = (this.aFlags[s]! & ~VM_LAZY_FREEING) | VM_LAZY_FREE;
    const nr = this.__lazyListAdd(s, vaPages);
    this.addLazyPages(this.aNrPages[s]!);
    this.#ctx.unlock(h, H_VMAP_AREA_LOCK);
    return nr;
  }

  /** The tail of free_unmap_vmap_area_noflush: past lazy_max_pages(), try to purge. */
  purgeIfOverLimit(nr: number): void {
    if (nr > Atomics.load(this.#hdr, H_LAZY_MAX)) this.purgeVmapAreaLazy(false, false, Infinity, -Infinity);
  }

  /**
   * Eager unmap of a detached (VM_LAZY_FREEING) area: clear, flush, release, free. A vmap
   * block's area still maps only the regions vm_unmap_ram left dirty while the strategy was
   * lazy (an eager vm_unmap_ram clears its own): those PTEs were counted in the lazy pages,
   * and leave the count here.
   */
  unmapEager(s: number, freePages: boolean): void {
    const kpt = this.#kpt;
    const h = this.#hdr;
    const cleared = this.#clearAreaPtes(s);
    kpt.flushPending();
    if (cleared > 0) {
      kpt.flushTlbKernelRange(this.aStart[s]!, this.aEnd[s]!);
      Atomics.add(h, C_FLUSHES, 1);
      Atomics.add(h, C_PTES_CLEARED, cleared);
      if (this.aFlags[s]! & VA_VMAP_BLOCK) Atomics.sub(h, C_LAZY_PAGES, cleared);
    }
    if (freePages) this.freeAreaPages(s);
    this.#putAreaRefs(s);
    this.freeVmapArea(s);
  }

  /* ---- the purge -------------------------------------------------------------- */

  /**
   * __purge_vmap_area_lazy. sync: wait for purge_lock (else trylock and give up), and
   * release fragmented vmap blocks first; force: flush [start, end) even if no area was
   * lazy (vm_unmap_aliases passes the range of the block regions it cleared; an empty
   * range becomes the whole window, as x86's flush_tlb_kernel_range flushed everything).
   */
  purgeVmapAreaLazy(sync: boolean, force: boolean, start: number, end: number): void {
    const h = this.#hdr;
    const ctx = this.#ctx;
    if (!sync && !force) {
      if (!ctx.trylock(h, H_PURGE_LOCK)) {
        Atomics.add(h, C_PURGE_SKIPPED, 1);
        return;
      }
    } else {
      ctx.lock(h, H_PURGE_LOCK);
    }
    try {
      if (sync) this.#purgeFragmentedBlocks();
      const kpt = this.#kpt;
      const aFlags = this.aFlags;
      const scratch = this.#scratch;
      // 1. Take every lazy area: detach the lazy list (vunmap may be adding to it).
      let k = 0;
      let nrVa = 0;
      ctx.lock(h, H_VMAP_AREA_LOCK);
      for (let s = h[H_LAZY_HEAD]!; s >= 0; s = this.#aLazyNext[s]!) {
        const f = aFlags[s]!;
        aFlags[s] = (f & ~VM_LAZY_FREE) | VM_LAZY_FREEING | VA_PURGE_SELECTED;
        scratch[k++] = s;
        const st = this.aStart[s]!;
        const en = this.aEnd[s]!;
        if (st < start) start = st;
        if (en > end) end = en;
        nrVa += (en - st) / PAGE_SIZE;
      }
      h[H_LAZY_HEAD] = -1;
      ctx.unlock(h, H_VMAP_AREA_LOCK);
      // 2. Clear their PTEs (the pool keeps the pfns for the references).
      let cleared = 0;
      for (let j = 0; j < k; j++) cleared += this.#clearAreaPtes(scratch[j]!);
      kpt.flushPending();
      if (nrVa > 0) Atomics.sub(h, H_LAZY_NR, nrVa);
      // 3. ONE flush over the union of their ranges.
      if (k > 0 || force) {
        if (!(start < end)) {
          start = this.vmallocStart;
          end = this.vmallocEnd;
        }
        kpt.flushTlbKernelRange(start, end);
        Atomics.add(h, C_FLUSHES, 1);
        Atomics.add(h, C_PURGES, 1);
      }
      // 4. No translation of these pages is left anywhere: drop vmap_pages references.
      for (let j = 0; j < k; j++) this.#putAreaRefs(scratch[j]!);
      if (cleared > 0) {
        Atomics.sub(h, C_LAZY_PAGES, cleared);
        Atomics.add(h, C_PTES_CLEARED, cleared);
      }
      // 5. Free the areas: their addresses may be reused from now on.
      if (k > 0) {
        ctx.lock(h, H_VMAP_AREA_LOCK);
        for (let j = 0; j < k; j++) this.__freeVmapArea(scratch[j]!);
        ctx.unlock(h, H_VMAP_AREA_LOCK);
      }
    } finally {
      ctx.unlock(h, H_PURGE_LOCK);
    }
  }

  /* ---- queries -------------------------------------------------------------- */

  /** The area starting at or containing va, or null. */
  findVmapArea(va: number): VmapAreaInfo | null {
    if (!(va >= this.vmallocStart && va < this.vmallocEnd)) return null;
    this.#ctx.lock(this.#hdr, H_VMAP_AREA_LOCK);
    let info: VmapAreaInfo | null = null;
    // Back from va's page to the nearest area start: O(size of the area), a query only.
    for (let p = Math.floor(this.poolIndex(va)); p >= 0; p--) {
      const s = this.#areaAt[p]!;
      if (s < 0) continue;
      if (this.aEnd[s]! > va) info = this.info(s);
      break;
    }
    this.#ctx.unlock(this.#hdr, H_VMAP_AREA_LOCK);
    return info;
  }

  /** Every area in address order (a snapshot). */
  areas(): VmapAreaInfo[] {
    this.#ctx.lock(this.#hdr, H_VMAP_AREA_LOCK);
    const out: VmapAreaInfo[] = [];
    for (let s = this.#hdr[H_HEAD]!; s >= 0; s = this.aNext[s]!) out.push(this.info(s));
    this.#ctx.unlock(this.#hdr, H_VMAP_AREA_LOCK);
    return out;
  }

  /**
   * The area allocator's part of the debug self-check: the address list, the start
   * table, the pool, the lazy list, the first-fit cache and the free slots. Appends
   * violations to `bad`; returns what the checks spanning both parts need.
   */
  checkInvariants(bad: string[]): AreaTotals {
    const h = this.#hdr;
    const fmt = (va: number): string => this.#ctx.fmt(va);
    const n = h[H_NR_AREAS]!;
    const inIndex = new Uint8Array(this.maxAreas);
    let lazyNr = 0;
    let lazyPages = 0;
    let refPages = 0;
    let prevEnd = this.vmallocStart;
    const covered = new Uint8Array(this.poolPages);
    const order: number[] = [];
    const seen = new Uint8Array(this.maxAreas);
    for (let s = h[H_HEAD]!, prev = -1; s >= 0; prev = s, s = this.aNext[s]!) {
      if (order.length > n || seen[s]) {
        bad.push('the address list is longer than nr_areas or loops');
        break;
      }
      if (this.#aPrev[s] !== prev) bad.push(`area slot ${s}: prev link ${this.#aPrev[s]} != ${prev}`);
      seen[s] = 1;
      order.push(s);
    }
    if (order.length !== n) bad.push(`the address list has ${order.length} areas, nr_areas ${n}`);
    for (let i = 0; i < order.length; i++) {
      const s = order[i]!;
      inIndex[s] = 1;
      const st = this.aStart[s]!;
      const en = this.aEnd[s]!;
      const f = this.aFlags[s]!;
      if (st < prevEnd) bad.push(`area ${i} [${fmt(st)}, ${fmt(en)}) overlaps or is out of order`);
      if (en <= st || en > this.vmallocEnd || st % PAGE_SIZE || en % PAGE_SIZE) bad.push(`area ${i} has bad bounds`);
      if (f & (VM_LAZY_FREEING | VA_PURGE_SELECTED)) bad.push(`area ${fmt(st)} is left in a purge state`);
      prevEnd = en;
      const idx = this.poolIndex(st);
      if (this.#areaAt[idx] !== s) bad.push(`start table does not point at the area at ${fmt(st)}`);
      const pages = (en - st) / PAGE_SIZE;
      for (let p = 0; p < pages; p++) covered[idx + p] = 1;
      let mapped = 0;
      for (let p = 0; p < pages; p++) if (this.pool[idx + p]! >= 0) mapped++;
      if (f & VM_LAZY_FREE) {
        lazyNr += pages;
        if (!(f & VA_VMAP_BLOCK)) lazyPages += mapped;
      }
      if (this.aVmFlags[s]! & VM_HOLD_REFS) refPages += this.aNrPages[s]!;
      if (f & VM_VM_AREA && this.pool[idx + pages - 1]! >= 0) bad.push(`guard page of ${fmt(st)} is mapped`);
    }
    let starts = 0;
    for (let p = 0; p < this.poolPages; p++) {
      if (!covered[p] && this.pool[p]! >= 0) {
        bad.push(`pool entry for ${fmt(this.vmallocStart + p * PAGE_SIZE)} outside any area`);
        break;
      }
      if (this.#areaAt[p]! >= 0) starts++;
    }
    if (starts !== n) bad.push(`start table holds ${starts} areas, nr_areas ${n}`);
    // the lazy list is exactly the VM_LAZY_FREE areas
    let lazyListed = 0;
    let lazyAreas = 0;
    for (let s = h[H_LAZY_HEAD]!; s >= 0 && lazyListed <= n; s = this.#aLazyNext[s]!) {
      if (!inIndex[s] || !(this.aFlags[s]! & VM_LAZY_FREE)) {
        bad.push(`slot ${s} on the lazy list is not a lazy area`);
      }
      lazyListed++;
    }
    for (const s of order) if (this.aFlags[s]! & VM_LAZY_FREE) lazyAreas++;
    if (lazyListed !== lazyAreas) bad.push(`lazy list holds ${lazyListed} areas, ${lazyAreas} are lazy`);
    // the first-fit cache: no hole below the cache area's end is bigger than cached_hole_size
    const cache = h[H_CACHE_SLOT]!;
    if (cache >= 0) {
      if (!inIndex[cache]) bad.push('the first-fit cache points at a free slot');
      let lo = this.vmallocStart;
      for (const s of order) {
        if (this.aStart[s]! - lo > this.#f64[F_CACHED_HOLE]!) {
          bad.push(
            `hole of ${this.aStart[s]! - lo} bytes below the cache exceeds ` +
              `cached_hole_size ${this.#f64[F_CACHED_HOLE]}`,
          );
        }
        if (s === cache) break;
        lo = this.aEnd[s]!;
      }
    }
    let free = 0;
    for (let s = h[H_FREE_SLOT]!; s >= 0 && free <= this.maxAreas; s = this.aNext[s]!) {
      if (inIndex[s]) bad.push(`slot ${s} is both free and in the index`);
      free++;
    }
    if (free + n !== this.maxAreas) bad.push(`slots: ${n} in the index + ${free} free != ${this.maxAreas}`);
    return { order, lazyNr, lazyPages, refPages };
  }
}
