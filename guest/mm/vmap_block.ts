/*
 * mm/vmalloc, part 2: the per-CPU vmap blocks behind vm_map_ram (Linux 2.6.28, with
 * 2.6.34's purge_fragmented_blocks). Part 1, the area allocator the blocks are carved
 * from, is vmap_area.ts; the public API is vmalloc.ts.
 *
 * ----------------------------------------------------------------------------------------
 * Invariants
 * ----------------------------------------------------------------------------------------
 * A vmap block is one block-aligned area of VMAP_BBMAP_BITS pages (flag VA_VMAP_BLOCK),
 * owned by one CPU, indexed by its position in the window (b). vm_map_ram mappings of at
 * most VMAP_MAX_ALLOC pages are carved out of it buddy-style: power-of-two regions,
 * aligned to their size, recorded in allocMap and, at their first page, in regionMap
 * (1 + order).
 *   - live (vbState 1): free == pages not in allocMap; dirty == pages in dirtyMap; every
 *     dirty page is allocated; a page that is not allocated has no PTE of this layer.
 *   - on its CPU's free list (vbq) exactly when free > 0.
 *   - vm_unmap_ram marks the region dirty and leaves its PTEs (pre-2.6.37; eager: clears
 *     and flushes them at once). A dirty region is never handed out again.
 *   - when the whole block is dirty it dies (vbState 0) and its area is released like a
 *     vunmap: lazily, or at once when eager.
 *   - a block left with dirt and unusable holes but no allocation is released the same way
 *     (purge_fragmented_blocks, 2.6.34: without it vm_map_ram leaks the window).
 *   - vm_unmap_aliases clears the dirty regions of every block (clearDirtyRegions).
 * The PTEs of dirty regions count in the lazy pages (C_LAZY_PAGES) until cleared.
 *
 * Locks: vbq lock (per CPU) -> vmap_block lock -> vmap_area_lock. Nothing that holds a
 * vbq or block lock ever waits for purge_lock, and no shootdown is issued under a block
 * lock.
 */
import { PAGE_SIZE } from '../../src/abi/xen.js';
import type { SharedKernelCtx } from '../lib/shared_columns.js';
import type { KernelPageTables } from './kernel_pt.js';
import {
  C_BLOCKS_FREED,
  C_BLOCKS_NEW,
  C_FLUSHES,
  C_LAZY_PAGES,
  C_PTES_CLEARED,
  H_LAZY_NR,
  H_STRATEGY,
  H_VMAP_AREA_LOCK,
  STRATEGY_EAGER,
  STRATEGY_LAZY,
  type VmallocColumns,
} from './vmalloc_layout.js';
import { VA_VMAP_BLOCK, VM_LAZY_FREE, VM_LAZY_FREEING } from './vmalloc_flags.js';
import type { VmapAreas } from './vmap_area.js';

/** vm_map_ram: largest mapping served from a vmap block (pages). */
export const VMAP_MAX_ALLOC = 64;
export const VMAP_BBMAP_BITS_MIN = VMAP_MAX_ALLOC * 2;
export const VMAP_BBMAP_BITS_MAX = 1024;

/** get_order() in pages: the smallest k with 2^k >= n. */
const orderOf = (n: number): number => (n <= 1 ? 0 : 32 - Math.clz32(n - 1));

export class VmapBlocks {
  /** VMAP_BBMAP_BITS: pages per block. */
  readonly blockPages: number;
  readonly nrBlocks: number;
  readonly #ctx: SharedKernelCtx;
  readonly #kpt: KernelPageTables;
  readonly #areas: VmapAreas;
  readonly #hdr: Int32Array;
  readonly #pool: Int32Array;
  readonly #numCpus: number;
  readonly #blockWords: number;
  readonly #blockSize: number;
  readonly #blockIdxBase: number;
  readonly #vbState: Int32Array;
  readonly #vbCpu: Int32Array;
  readonly #vbFreeCount: Int32Array;
  readonly #vbDirtyCount: Int32Array;
  readonly #vbNext: Int32Array;
  readonly #vbPrev: Int32Array;
  readonly #vbOnList: Int32Array;
  readonly #vbLock: Int32Array;
  readonly #allocMap: Int32Array;
  readonly #dirtyMap: Int32Array;
  readonly #vbqHead: Int32Array;
  readonly #vbqLock: Int32Array;
  readonly #regionMap: Uint8Array;

  constructor(
    cols: VmallocColumns,
    ctx: SharedKernelCtx,
    kpt: KernelPageTables,
    areas: VmapAreas,
    geometry: { blockPages: number; blockWords: number; blockIdxBase: number; numCpus: number },
  ) {
    this.#ctx = ctx;
    this.#kpt = kpt;
    this.#areas = areas;
    this.#hdr = cols.hdr;
    this.#pool = cols.pool;
    this.blockPages = geometry.blockPages;
    this.nrBlocks = cols.vbState.length;
    this.#numCpus = geometry.numCpus;
    this.#blockWords = geometry.blockWords;
    this.#blockSize = geometry.blockPages * PAGE_SIZE;
    this.#blockIdxBase = geometry.blockIdxBase;
    this.#vbState = cols.vbState;
    this.#vbCpu = cols.vbCpu;
    this.#vbFreeCount = cols.vbFree;
    this.#vbDirtyCount = cols.vbDirty;
    this.#vbNext = cols.vbNext;
    this.#vbPrev = cols.vbPrev;
    this.#vbOnList = cols.vbOnList;
    this.#vbLock = cols.vbLock;
    this.#allocMap = cols.allocMap;
    this.#dirtyMap = cols.dirtyMap;
    this.#vbqHead = cols.vbqHead;
    this.#vbqLock = cols.vbqLock;
    this.#regionMap = cols.regionMap;
  }

  /** Fresh state: every CPU's free list empty. */
  init(): void {
    this.#vbqHead.fill(-1);
  }

  /** Does a vm_map_ram of count pages come from a block (else from a plain area)? */
  usesBlock(count: number): boolean {
    return count <= VMAP_MAX_ALLOC && 1 << orderOf(count) <= this.blockPages;
  }

  blockVa(b: number): number {
    return (b + this.#blockIdxBase) * this.#blockSize;
  }

  blockOf(va: number): number {
    const b = Math.floor(va / this.#blockSize) - this.#blockIdxBase;
    return b >= 0 && b < this.nrBlocks ? b : -1;
  }

  /** Is page p of block b in a dirty (unmapped, not yet cleared) region? */
  isDirty(b: number, p: number): boolean {
    return this.#testBit(this.#dirtyMap, b, p);
  }

  /* ---- bitmaps ---------------------------------------------------------------- */

  #testBit(map: Int32Array, b: number, p: number): boolean {
    return (map[b * this.#blockWords + (p >>> 5)]! & (1 << (p & 31))) !== 0;
  }

  /** Set (value 1) or clear bits [p, p + n) of block b's bitmap. */
  #setBits(map: Int32Array, b: number, p: number, n: number, value: 0 | 1): void {
    const base = b * this.#blockWords;
    for (let i = p; i < p + n; i++) {
      const w = base + (i >>> 5);
      if (value) map[w] = map[w]! | (1 << (i & 31));
      else map[w] = map[w]! & ~(1 << (i & 31));
    }
  }

  /** Are bits [p, p + n) of block b's bitmap all equal to value? */
  #allBits(map: Int32Array, b: number, p: number, n: number, value: boolean): boolean {
    for (let i = p; i < p + n; i++) if (this.#testBit(map, b, i) !== value) return false;
    return true;
  }

  /** bitmap_find_free_region: an aligned free run of 2^order bits, taken; or -1. */
  #findFreeRegion(b: number, order: number): number {
    const n = 1 << order;
    const map = this.#allocMap;
    const base = b * this.#blockWords;
    for (let p = 0; p + n <= this.blockPages; p += n) {
      let free: boolean;
      if (n < 32) {
        const mask = ((1 << n) - 1) << (p & 31);
        free = (map[base + (p >>> 5)]! & mask) === 0;
      } else {
        free = true;
        for (let w = p >>> 5; w < (p + n) >>> 5; w++) if (map[base + w] !== 0) free = false;
      }
      if (free) {
        this.#setBits(map, b, p, n, 1);
        return p;
      }
    }
    return -1;
  }

  /* ---- the per-CPU free lists (callers hold the CPU's vbq lock) ------------------ */

  #vbqAdd(cpu: number, b: number): void {
    const head = this.#vbqHead[cpu]!;
    this.#vbNext[b] = head;
    this.#vbPrev[b] = -1;
    if (head >= 0) this.#vbPrev[head] = b;
    this.#vbqHead[cpu] = b;
    this.#vbOnList[b] = 1;
  }

  #vbqRemove(cpu: number, b: number): void {
    const next = this.#vbNext[b]!;
    const prev = this.#vbPrev[b]!;
    if (prev >= 0) this.#vbNext[prev] = next;
    else this.#vbqHead[cpu] = next;
    if (next >= 0) this.#vbPrev[next] = prev;
    this.#vbOnList[b] = 0;
    this.#vbNext[b] = this.#vbPrev[b] = -1;
  }

  /* ---- vb_alloc / vb_free --------------------------------------------------------- */

  /** vb_alloc: count pages from one of cpu's blocks, or a new block. va or -ENOMEM. */
  vbAlloc(count: number, cpu: number): number {
    const ctx = this.#ctx;
    const order = orderOf(count);
    const n = 1 << order;
    const q = this.#vbqLock;
    const bp = this.blockPages;
    let fragmented = false;
    ctx.lock(q, cpu);
    for (let b = this.#vbqHead[cpu]!; b >= 0; b = this.#vbNext[b]!) {
      ctx.lock(this.#vbLock, b);
      if (this.#vbFreeCount[b]! + this.#vbDirtyCount[b]! === bp && this.#vbDirtyCount[b]! > 0) {
        fragmented = true; // no allocation left in it: only dirt and unusable holes
      }
      if (this.#vbFreeCount[b]! >= n) {
        const p = this.#findFreeRegion(b, order);
        if (p >= 0) {
          this.#regionMap[b * this.blockPages + p] = order + 1;
          this.#vbFreeCount[b] = this.#vbFreeCount[b]! - n;
          if (this.#vbFreeCount[b] === 0) this.#vbqRemove(cpu, b);
          ctx.unlock(this.#vbLock, b);
          ctx.unlock(q, cpu);
          return this.blockVa(b) + p * PAGE_SIZE;
        }
      }
      ctx.unlock(this.#vbLock, b);
    }
    ctx.unlock(q, cpu);
    if (fragmented) this.purgeFragmentedBlocks(cpu, true);
    return this.#newVmapBlock(cpu, order);
  }

  /** purge_fragmented_blocks_allcpus: what a synchronous purge runs first. */
  purgeFragmentedBlocksAllCpus(): void {
    for (let cpu = 0; cpu < this.#numCpus; cpu++) this.purgeFragmentedBlocks(cpu, false);
  }

  /**
   * purge_fragmented_blocks (2.6.34, the fix for vm_map_ram leaking vmalloc space under
   * XFS): a block on a free list with no allocation left (free + dirty == all, some dirt)
   * can never become fully dirty; release it like a fully dirty one. From vb_alloc for the
   * CPU's own queue; from a synchronous purge for every CPU (then checkLimit false: the
   * caller is the purge, which collects the areas itself). Returns the vmap_lazy_nr reached.
   */
  purgeFragmentedBlocks(cpu: number, checkLimit: boolean): number {
    const ctx = this.#ctx;
    const bp = this.blockPages;
    const words = this.#blockWords;
    const q = this.#vbqLock;
    const found: number[] = [];
    ctx.lock(q, cpu);
    for (let b = this.#vbqHead[cpu]!; b >= 0; ) {
      const next = this.#vbNext[b]!;
      ctx.lock(this.#vbLock, b);
      if (this.#vbFreeCount[b]! + this.#vbDirtyCount[b]! === bp && this.#vbDirtyCount[b]! > 0) {
        this.#vbFreeCount[b] = 0; // no more allocations from it
        this.#vbDirtyCount[b] = bp;
        this.#allocMap.fill(-1, b * words, (b + 1) * words);
        this.#dirtyMap.fill(-1, b * words, (b + 1) * words);
        this.#vbqRemove(cpu, b);
        Atomics.store(this.#vbState, b, 0);
        found.push(this.blockVa(b));
      }
      ctx.unlock(this.#vbLock, b);
      b = next;
    }
    ctx.unlock(q, cpu);
    let nr = Atomics.load(this.#hdr, H_LAZY_NR);
    for (const bva of found) nr = this.#releaseBlockArea(bva, checkLimit);
    return nr;
  }

  /** new_vmap_block: a block-aligned area for cpu, its first region taken. va or -ENOMEM. */
  #newVmapBlock(cpu: number, order: number): number {
    const areas = this.#areas;
    const bp = this.blockPages;
    const bs = this.#blockSize;
    const slot = areas.allocVmapArea(bs, bs, areas.vmallocStart, areas.vmallocEnd, VA_VMAP_BLOCK);
    if (slot < 0) return slot;
    const va = areas.aStart[slot]!;
    const b = this.blockOf(va);
    areas.aNrPages[slot] = bp;
    const words = this.#blockWords;
    this.#allocMap.fill(0, b * words, (b + 1) * words);
    this.#dirtyMap.fill(0, b * words, (b + 1) * words);
    const n = 1 << order;
    this.#setBits(this.#allocMap, b, 0, n, 1);
    this.#regionMap.fill(0, b * bp, (b + 1) * bp);
    this.#regionMap[b * bp] = order + 1;
    this.#vbCpu[b] = cpu;
    this.#vbFreeCount[b] = bp - n;
    this.#vbDirtyCount[b] = 0;
    this.#vbOnList[b] = 0;
    Atomics.store(this.#vbState, b, 1);
    Atomics.add(this.#hdr, C_BLOCKS_NEW, 1);
    if (bp - n > 0) {
      this.#ctx.lock(this.#vbqLock, cpu);
      this.#vbqAdd(cpu, b);
      this.#ctx.unlock(this.#vbqLock, cpu);
    }
    return va;
  }

  /**
   * vb_free: the region becomes dirty. Lazy: its PTEs stay (pre-2.6.37) until the block is
   * fully dirty and purged, or vmUnmapAliases. Eager: cleared and flushed now. 0 or -EINVAL.
   */
  vbFree(va: number, count: number): number {
    const ctx = this.#ctx;
    const order = orderOf(count);
    const n = 1 << order;
    const b = Number.isSafeInteger(va) && va % PAGE_SIZE === 0 ? this.blockOf(va) : -1;
    if (b < 0 || Atomics.load(this.#vbState, b) === 0) {
      return ctx.misuse(`Trying to vm_unmap_ram() nonexistent mapping (${ctx.fmt(va)})`);
    }
    const h = this.#hdr;
    const kpt = this.#kpt;
    const pool = this.#pool;
    ctx.lock(this.#vbLock, b);
    const bva = this.blockVa(b);
    const p = (va - bva) / PAGE_SIZE;
    if (this.#vbState[b] === 0 || this.#regionMap[b * this.blockPages + p] !== order + 1) {
      ctx.unlock(this.#vbLock, b);
      return ctx.misuse(`vm_unmap_ram(${ctx.fmt(va)}, ${count}): not a live vm_map_ram mapping of that size`);
    }
    this.#regionMap[b * this.blockPages + p] = 0;
    this.#setBits(this.#dirtyMap, b, p, n, 1);
    this.#vbDirtyCount[b] = this.#vbDirtyCount[b]! + n;
    const base = this.#areas.poolIndex(bva) + p;
    const eager = Atomics.load(h, H_STRATEGY) === STRATEGY_EAGER;
    let mapped = 0;
    for (let i = 0; i < n; i++) {
      if (pool[base + i]! < 0) continue;
      mapped++;
      if (eager) {
        kpt.setPte(va + i * PAGE_SIZE, -1, 0); // queued; issued below, before the flush
        pool[base + i] = -1;
      }
    }
    if (!eager) this.#areas.addLazyPages(mapped);
    const full = this.#vbDirtyCount[b] === this.blockPages;
    if (full) Atomics.store(this.#vbState, b, 0);
    ctx.unlock(this.#vbLock, b);
    // The shootdown runs outside the block lock (the region is dirty: nobody reuses it).
    if (eager) {
      kpt.flushPending();
      if (mapped > 0) {
        kpt.flushTlbKernelRange(va, va + n * PAGE_SIZE);
        Atomics.add(h, C_FLUSHES, 1);
        Atomics.add(h, C_PTES_CLEARED, mapped);
      }
    }
    if (full) this.#releaseBlockArea(bva, true);
    return 0;
  }

  /**
   * free_vmap_block: the block's area (already dead to vb_alloc/vb_free) is released like
   * any unmapped area: lazily, or at once in eager mode (its regions were flushed when
   * they were unmapped). checkLimit false: the caller is a purge. Returns vmap_lazy_nr.
   */
  #releaseBlockArea(bva: number, checkLimit: boolean): number {
    const ctx = this.#ctx;
    const areas = this.#areas;
    const h = this.#hdr;
    const lazy = Atomics.load(h, H_STRATEGY) === STRATEGY_LAZY;
    ctx.lock(h, H_VMAP_AREA_LOCK);
    const s = areas.__slotAt(bva);
    areas.aFlags[s] = areas.aFlags[s]! | (lazy ? VM_LAZY_FREE : VM_LAZY_FREEING);
    const nr = lazy ? areas.__lazyListAdd(s, this.blockPages) : Atomics.load(h, H_LAZY_NR);
    ctx.unlock(h, H_VMAP_AREA_LOCK);
    Atomics.add(h, C_BLOCKS_FREED, 1);
    if (!lazy) areas.unmapEager(s, false);
    else if (checkLimit) areas.purgeIfOverLimit(nr);
    return nr;
  }

  /**
   * vm_unmap_aliases' part: clear the PTEs of the dirty regions of every live block (2.6.28
   * scanned only the blocks on the per-CPU free lists and so missed full blocks; this
   * scans all). Returns the range it cleared, [start, end), empty when nothing was.
   */
  clearDirtyRegions(): { start: number; end: number } {
    const ctx = this.#ctx;
    let start = Infinity;
    let end = -Infinity;
    let cleared = 0;
    const kpt = this.#kpt;
    const pool = this.#pool;
    const bp = this.blockPages;
    for (let b = 0; b < this.nrBlocks; b++) {
      if (Atomics.load(this.#vbState, b) === 0) continue;
      ctx.lock(this.#vbLock, b);
      if (this.#vbState[b] !== 0 && this.#vbDirtyCount[b]! > 0) {
        const bva = this.blockVa(b);
        const base = this.#areas.poolIndex(bva);
        for (let p = 0; p < bp; p++) {
          if (!this.#testBit(this.#dirtyMap, b, p) || pool[base + p]! < 0) continue;
          const va = bva + p * PAGE_SIZE;
          kpt.setPte(va, -1, 0);
          pool[base + p] = -1;
          cleared++;
          if (va < start) start = va;
          if (va + PAGE_SIZE > end) end = va + PAGE_SIZE;
        }
      }
      ctx.unlock(this.#vbLock, b);
    }
    if (cleared > 0) {
      kpt.flushPending();
      Atomics.sub(this.#hdr, C_LAZY_PAGES, cleared);
      Atomics.add(this.#hdr, C_PTES_CLEARED, cleared);
    }
    return { start, end };
  }

  /**
   * The blocks' part of the debug self-check. `order` is the live area slots in address
   * order. Returns the PTEs left by vm_unmap_ram (dirty regions of live blocks, and what
   * remains mapped in lazily freed blocks), for the lazy-pages total.
   */
  checkInvariants(bad: string[], order: readonly number[]): number {
    const areas = this.#areas;
    const fmt = (va: number): string => this.#ctx.fmt(va);
    let blockLazyPages = 0;
    for (let b = 0; b < this.nrBlocks; b++) {
      const bva = this.blockVa(b);
      const base = areas.poolIndex(bva);
      if (this.#vbState[b] === 0) {
        if (this.#vbOnList[b]) bad.push(`dead block ${fmt(bva)} on a free list`);
        continue;
      }
      let alloc = 0;
      let dirty = 0;
      for (let p = 0; p < this.blockPages; p++) {
        const a = this.#testBit(this.#allocMap, b, p);
        const d = this.#testBit(this.#dirtyMap, b, p);
        if (a) alloc++;
        if (d) dirty++;
        if (d && !a) bad.push(`block ${fmt(bva)} page ${p} dirty but not allocated`);
        if (!a && this.#pool[base + p]! >= 0) bad.push(`block ${fmt(bva)} page ${p} mapped but free`);
        if (d && this.#pool[base + p]! >= 0) blockLazyPages++;
        const r = this.#regionMap[b * this.blockPages + p]!;
        if (r > 0 && (!this.#allBits(this.#allocMap, b, p, 1 << (r - 1), true) || d)) {
          bad.push(`block ${fmt(bva)} region at ${p} is not a live allocation`);
        }
      }
      const where = `block ${fmt(bva)}`;
      const free = this.#vbFreeCount[b]!;
      if (free !== this.blockPages - alloc) bad.push(`${where} free count ${free} != ${this.blockPages - alloc}`);
      if (this.#vbDirtyCount[b] !== dirty) bad.push(`${where} dirty count ${this.#vbDirtyCount[b]} != ${dirty}`);
      if (free > 0 !== (this.#vbOnList[b] === 1)) bad.push(`${where} free-list membership wrong`);
      const bs = areas.__slotAt(bva);
      if (bs < 0 || !(areas.aFlags[bs]! & VA_VMAP_BLOCK)) bad.push(`live block ${fmt(bva)} has no area`);
    }
    // lazily freed blocks: their remaining PTEs were counted when their regions got dirty
    for (const s of order) {
      if ((areas.aFlags[s]! & (VM_LAZY_FREE | VA_VMAP_BLOCK)) === (VM_LAZY_FREE | VA_VMAP_BLOCK)) {
        const idx = areas.poolIndex(areas.aStart[s]!);
        for (let p = 0; p < this.blockPages; p++) if (this.#pool[idx + p]! >= 0) blockLazyPages++;
      }
    }
    return blockLazyPages;
  }
}
