/*
 * mm/vmalloc: the guest kernel's vmalloc space, after Nick Piggin's vmap layer of Linux
 * 2.6.28 ("mm: rewrite vmap layer"), in the pre-2.6.37 form where a lazy vunmap leaves the
 * PTEs in place until the purge -- the form in which a Xen PV guest can see it.
 *
 * ----------------------------------------------------------------------------------------
 * Invariants (read these before changing anything here)
 * ----------------------------------------------------------------------------------------
 * A vmap_area is a range [va_start, va_end) of the vmalloc space, page-aligned, that no
 * other area overlaps. vmap/vmalloc areas end with one unmapped guard page (the guard is
 * part of the area, as it is part of Linux's vm_struct size). Its state is in `flags`:
 *
 *   VM_VM_AREA        live: it has an owner (a vmap/vmalloc caller) and its PTEs are valid.
 *   VM_LAZY_FREE      unmapped by its owner, lazily: the owner is gone, but its PTEs are
 *                     STILL PRESENT (pre-2.6.37) and other vCPUs may still cache them. It
 *                     counts (va_end - va_start) / PAGE_SIZE pages in vmap_lazy_nr.
 *   VM_LAZY_FREEING   taken by a purge (or an eager unmap) that is clearing its PTEs.
 *
 * What "lazy" means: vunmap does not touch the page tables and does not flush. It only
 * marks the area and counts its pages. A purge (__purge_vmap_area_lazy) later takes every
 * lazy area at once, clears all their PTEs, issues ONE flushTlbKernelRange over
 * [min va_start, max va_end) and only then frees the areas. A purge runs when
 * vmap_lazy_nr > lazyMaxPages() (trylock: skipped if another purge runs), when an
 * allocation finds no space (synchronous, then the allocation retries once), and from
 * vmUnmapAliases() (synchronous, with the flush forced even if nothing was lazy).
 *
 * When an ADDRESS may be reused: only after its area has been freed, i.e. after its PTEs
 * were cleared AND the TLB flush over its range was issued. So a lazily unmapped address is
 * never handed out again while a stale translation of it can exist anywhere: the stale
 * entries are harmless to the kernel itself (nobody uses that address).
 *
 * When a PAGE may be freed (given back to the page allocator): that is the caller's
 * business, and here is the 2007 bug: vunmap returns at once, the caller frees its pages,
 * and the lazy PTEs keep writable aliases of free pages -- of page tables, once the pages
 * are reused as such, which Xen refuses to pin. vfree frees its own pages right after the
 * lazy unmap, exactly as 2.6.28 did. The cures this module offers:
 *   - strategy 'eager' (pre-2.6.28 / Jeremy's CONFIG_XEN workaround): vunmap clears the
 *     PTEs and flushes before it returns; costs one shootdown per vunmap.
 *   - vmapPages/vunmapPages (Dave Chinner): every mapped page holds a reference (getPage)
 *     that is dropped only after its PTE is cleared AND flushed (at the purge, when lazy).
 *     A page mapped by vmapPages can therefore never reach the allocator while an alias
 *     exists.
 *   - vmUnmapAliases(): purge everything now, plus the dirty parts of vmap blocks, with a
 *     forced flush. After it returns no lazily aliased page remains in any PTE or TLB.
 *
 * vm_map_ram (per-CPU vmap blocks): mappings of at most VMAP_MAX_ALLOC pages are carved out
 * of a VMAP_BBMAP_BITS-page block owned by one CPU, buddy-style (power-of-two, aligned).
 * vm_unmap_ram marks the region dirty and leaves its PTEs (pre-2.6.37). A dirty region is
 * never handed out again; when the whole block is dirty the block's area is freed lazily,
 * like a vunmap. A block left with dirt and unusable holes but no allocation is released
 * the same way (purge_fragmented_blocks, 2.6.34: without it vm_map_ram leaks the window).
 * vmUnmapAliases clears the dirty regions of every block.
 *
 * ----------------------------------------------------------------------------------------
 * Data structures (all in one SharedArrayBuffer; any vCPU worker can attach)
 * ----------------------------------------------------------------------------------------
 * Areas are slots in typed-array columns (no object per area). Instead of Linux's rbtree:
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
 * the pool is the shadow of the vmalloc L1 entries this module installed (-1 = none), so
 * it needs no allocator of its own and a query can find every alias of a pfn. This is
 * why the managed window is bounded: i386 PAE's 120 MiB vmalloc space is 30,720 entries;
 * on x86_64 the default window is the first 1 GiB of the real 32 TiB space.
 *
 * Locks (guest/mm/spinlock.ts on Int32 words of the header), in this order:
 *   purge_lock -> vbq lock (per CPU) -> vmap_block lock -> vmap_area_lock.
 * (A synchronous purge releases fragmented vmap blocks; nothing that holds a vbq or block
 * lock ever waits for purge_lock.)
 * No shootdown is issued under vmap_area_lock or a block lock; the purge issues its one
 * flush under purge_lock (as Linux does), so a vCPU waiting for purge_lock must keep
 * serving flush IPIs: deps.onSpin.
 * The purge clears PTEs and calls into the page allocator WITHOUT vmap_area_lock (areas it
 * took are marked VM_LAZY_FREEING, which nobody else touches), as Linux does under RCU.
 * vmap_lazy_nr and the counters are updated with Atomics.
 */
import { LogBuf } from '../kernel/printk.js';
import { EINVAL, ENOMEM, PAGE_SIZE } from '../../src/abi/xen.js';
import { formatKernelVa, MAX_VCPUS_PER_DOMAIN, type VirtualLayout } from '../../src/abi/layout.js';
import { spinLock, spinTrylock, spinUnlock } from './spinlock.js';
import { PAGE_KERNEL, type KernelPageTables, type PageAllocator, type PageRefs } from './kernel_pt.js';

/* ----------------------------------------------------------------------- flags */

/** vmap_area.flags, with 2.6.28's values. */
export const VM_LAZY_FREE = 0x01;
export const VM_LAZY_FREEING = 0x02;
export const VM_VM_AREA = 0x04;
/** Model-private area flags: a per-CPU vmap block; a vm_map_ram mapping too big for one. */
export const VA_VMAP_BLOCK = 0x10;
export const VA_RAM = 0x20;
/** Transient: taken by the purge in progress. */
const VA_PURGE_SELECTED = 0x100;

/** vm_struct.flags, with Linux's values. */
export const VM_IOREMAP = 0x01;
export const VM_ALLOC = 0x02;
export const VM_MAP = 0x04;
export const VM_USERMAP = 0x08;
export const VM_VPAGES = 0x10;
/** Model: the area holds a page reference per mapped page (vmap_pages). */
export const VM_HOLD_REFS = 0x100;
/** What vmap accepts (VM_ALLOC is vmalloc's: its pages are vfree's to free). */
const VMAP_FLAGS_ACCEPTED = VM_IOREMAP | VM_MAP | VM_USERMAP | VM_VPAGES | VM_HOLD_REFS;

/** vm_map_ram: largest mapping served from a vmap block (pages). */
export const VMAP_MAX_ALLOC = 64;
export const VMAP_BBMAP_BITS_MIN = VMAP_MAX_ALLOC * 2;
export const VMAP_BBMAP_BITS_MAX = 1024;
/** VMALLOC_OFFSET: the hole between the direct map's end and VMALLOC_START on i386. */
export const VMALLOC_OFFSET = 8 * 1024 * 1024;
/** Linux x86_64 VMALLOC_START (2.6.31+), as a 48-bit VA. */
export const X86_64_VMALLOC_START = 0xc90000000000;
/** Default managed window on x86_64 (see the pool comment at the top). */
export const X86_64_VMALLOC_WINDOW = 1024 * 1024 * 1024;
/** Largest pool this model accepts (pages): 16 GiB of vmalloc space, a 16 MiB column. */
export const MAX_POOL_PAGES = 1 << 22;

export type VunmapStrategy = 'lazy' | 'eager';
const STRATEGY_LAZY = 0;
const STRATEGY_EAGER = 1;

/** fls(): 1-based index of the most significant set bit, 0 for 0. */
export function fls(x: number): number {
  return x === 0 ? 0 : 32 - Math.clz32(x);
}

/** lazy_max_pages() for a number of online CPUs: fls(cpus) * (32 MiB / PAGE_SIZE). */
export function lazyMaxPagesFor(numOnlineCpus: number): number {
  return fls(numOnlineCpus) * ((32 * 1024 * 1024) / PAGE_SIZE);
}

/* ------------------------------------------------------------- shared header */
/** Int32 header words. The first two are the locks (exported for tests). */
export const H_VMAP_AREA_LOCK = 0;
export const H_PURGE_LOCK = 1;
const H_LAZY_NR = 2;
const H_NR_AREAS = 3;
const H_HEAD = 13; /** first area in address order, -1 when none */
const H_CACHE_SLOT = 14; /** free_vmap_cache: the area the last full-window allocation made */
const H_LAZY_HEAD = 15; /** the lazy list: areas marked VM_LAZY_FREE, newest first */
const H_FREE_SLOT = 4;
const H_MAX_AREAS = 5;
const H_POOL_PAGES = 6;
const H_STRATEGY = 7;
const H_NUM_CPUS = 8;
const H_LAZY_MAX = 9;
const H_BLOCK_PAGES = 10;
const H_NR_BLOCKS = 11;
const H_VA_BITS = 12;
/* counters */
const C_VMAPS = 16;
const C_VUNMAPS = 17;
const C_VMALLOCS = 18;
const C_VFREES = 19;
const C_PURGES = 20;
const C_PURGE_SKIPPED = 21;
const C_FLUSHES = 22;
const C_LAZY_PAGES = 23;
const C_LAZY_PEAK = 24;
const C_REF_PAGES = 25;
const C_ALLOC_RETRIES = 26;
const C_ALLOC_FAILURES = 27;
const C_MISUSE = 28;
const C_RAM_MAPS = 29;
const C_RAM_UNMAPS = 30;
const C_BLOCKS_NEW = 31;
const C_BLOCKS_FREED = 32;
const C_UNMAP_ALIASES = 33;
const C_PTES_SET = 34;
const C_PTES_CLEARED = 35;
const HDR_WORDS = 64;
/** Float64 header. */
const F_VMALLOC_START = 0;
const F_VMALLOC_END = 1;
const F_BLOCK_IDX_BASE = 2;
/** cached_hole_size: no hole below the cache's end is larger than this (bytes). */
const F_CACHED_HOLE = 3;
const HDR_F64 = 8;

export interface VmallocConfig {
  layout: VirtualLayout;
  /** num_online_cpus(): sizes lazy_max_pages() and the per-CPU vmap block queues. */
  numOnlineCpus: number;
  /** Default 'lazy' (2.6.28). */
  strategy?: VunmapStrategy;
  /** Override lazy_max_pages() (pages of vmalloc space, > 0). */
  lazyMaxPages?: number;
  /** Default: i386 high_memory + VMALLOC_OFFSET; x86_64 X86_64_VMALLOC_START. */
  vmallocStart?: number;
  /** Default: layout.vmallocEnd (x86_64: vmallocStart + X86_64_VMALLOC_WINDOW). */
  vmallocEnd?: number;
  /** Capacity of the area table. Default min(pool pages / 2, 65536). */
  maxAreas?: number;
  /** VMAP_BBMAP_BITS, a power of two. Default: Linux's formula, rounded down to 2^k. */
  vmapBlockPages?: number;
}

export interface VmallocDeps {
  /** This vCPU's number: the lock owner (unique per thread) and vm_map_ram's default CPU. */
  cpu: number;
  /**
   * Called while spinning on a lock: a vCPU must keep acknowledging TLB-flush IPIs while
   * it waits, or a purge holding purge_lock across its shootdown would wait for it forever.
   */
  onSpin?: () => void;
  /** This vCPU's kernel page tables. */
  kpt: KernelPageTables;
  /** get_page/put_page (vmapPages). */
  refs: PageRefs;
  /** alloc_page/__free_page (vmalloc/vfree). */
  allocator: PageAllocator;
  /** Where kernel-style messages go, besides `messages` (printk). */
  report?: (line: string) => void;
}

export interface VmallocStats {
  strategy: VunmapStrategy;
  vmaps: number;
  vunmaps: number;
  vmallocs: number;
  vfrees: number;
  purges: number;
  /** Opportunistic purges skipped because another purge held purge_lock. */
  purgesSkipped: number;
  /** flushTlbKernelRange calls issued by this layer. */
  flushes: number;
  /** vmap_lazy_nr: pages of vmalloc space (guard pages included) awaiting a purge. */
  lazyNr: number;
  lazyMaxPages: number;
  /** Data pages whose PTEs are still present after their unmap, now and at peak. */
  lazyPages: number;
  lazyPeakPages: number;
  /** Page references currently held by vmapPages mappings. */
  refPages: number;
  /** Allocations that failed, purged and retried. */
  allocRetries: number;
  allocFailures: number;
  misuse: number;
  areas: number;
  ramMaps: number;
  ramUnmaps: number;
  blocksNew: number;
  blocksFreed: number;
  unmapAliases: number;
  ptesSet: number;
  ptesCleared: number;
}

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

export type VmapAliasKind = 'live' | 'lazy' | 'vmap-block' | 'vmap-block-dirty';

export interface VmapAlias {
  /** The page's va inside the area. */
  va: number;
  areaStart: number;
  areaEnd: number;
  kind: VmapAliasKind;
}

interface Geometry {
  maxAreas: number;
  poolPages: number;
  nrBlocks: number;
  blockPages: number;
  blockWords: number;
  numCpus: number;
}

/** Byte offsets of every column, from the geometry: the Int32 header at 0, then Float64. */
function columnOffsets(g: Geometry) {
  let off = 0;
  const take = (bytes: number): number => {
    const at = off;
    off += bytes;
    return at;
  };
  const hdr = take(HDR_WORDS * 4); // 256 bytes: what follows stays 8-aligned
  const f64 = take(HDR_F64 * 8);
  const aStart = take(g.maxAreas * 8);
  const aEnd = take(g.maxAreas * 8);
  const a = g.maxAreas * 4;
  const aFlags = take(a);
  const aVmFlags = take(a);
  const aNrPages = take(a);
  const aProt = take(a);
  const aNext = take(a);
  const aPrev = take(a);
  const aLazyNext = take(a);
  const pool = take(g.poolPages * 4);
  const areaAt = take(g.poolPages * 4);
  const b = g.nrBlocks * 4;
  const vbState = take(b);
  const vbCpu = take(b);
  const vbFree = take(b);
  const vbDirty = take(b);
  const vbNext = take(b);
  const vbPrev = take(b);
  const vbOnList = take(b);
  const vbLock = take(b);
  const allocMap = take(b * g.blockWords);
  const dirtyMap = take(b * g.blockWords);
  const vbqHead = take(g.numCpus * 4);
  const vbqLock = take(g.numCpus * 4);
  const regionMap = take(g.nrBlocks * g.blockPages); // Uint8: last, no alignment needed
  return {
    f64,
    aStart,
    aEnd,
    hdr,
    aFlags,
    aVmFlags,
    aNrPages,
    aProt,
    aNext,
    aPrev,
    aLazyNext,
    pool,
    areaAt,
    vbState,
    vbCpu,
    vbFree,
    vbDirty,
    vbNext,
    vbPrev,
    vbOnList,
    vbLock,
    allocMap,
    dirtyMap,
    vbqHead,
    vbqLock,
    regionMap,
    total: off,
  };
}

const isPow2 = (x: number): boolean => Number.isInteger(x) && x > 0 && (x & (x - 1)) === 0;
const floorPow2 = (x: number): number => (x < 1 ? 0 : 2 ** Math.floor(Math.log2(x)));
const alignUp = (x: number, a: number): number => Math.ceil(x / a) * a;
/** get_order() in pages: the smallest k with 2^k >= n. */
const orderOf = (n: number): number => (n <= 1 ? 0 : 32 - Math.clz32(n - 1));

const MESSAGE_CAPACITY = 256;

export class VmallocSpace {
  readonly sab: SharedArrayBuffer;
  /** The Int32 header (locks at H_VMAP_AREA_LOCK / H_PURGE_LOCK; for tests and tools). */
  readonly header: Int32Array;
  readonly vmallocStart: number;
  readonly vmallocEnd: number;
  readonly maxAreas: number;
  readonly poolPages: number;
  readonly numOnlineCpus: number;
  /** VMAP_BBMAP_BITS: pages per vmap block. */
  readonly vmapBlockPages: number;
  /** Recent kernel-style messages from this vCPU (bounded). */
  readonly #log: LogBuf;
  /** Recent kernel-style messages from this vCPU (bounded). */
  get messages(): string[] {
    return this.#log.lines;
  }

  /** This vCPU (deps.cpu). */
  readonly cpu: number;
  readonly #onSpin: (() => void) | undefined;
  readonly #kpt: KernelPageTables;
  readonly #refs: PageRefs;
  readonly #allocator: PageAllocator;

  readonly #hdr: Int32Array;
  readonly #f64: Float64Array;
  readonly #aStart: Float64Array;
  readonly #aEnd: Float64Array;
  readonly #aFlags: Int32Array;
  readonly #aVmFlags: Int32Array;
  readonly #aNrPages: Int32Array;
  readonly #aProt: Int32Array;
  readonly #aNext: Int32Array;
  /** Address order (doubly linked); a free slot's aNext links the free-slot list. */
  readonly #aPrev: Int32Array;
  readonly #aLazyNext: Int32Array;
  /** Per page of the window: the slot of the area starting there, else -1. */
  readonly #areaAt: Int32Array;
  readonly #pool: Int32Array;
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
  /** Per block page: 1 + order at the first page of an allocated region, else 0. */
  readonly #regionMap: Uint8Array;
  readonly #nrBlocks: number;
  readonly #blockWords: number;
  readonly #blockSize: number;
  readonly #blockIdxBase: number;
  /** This vCPU's purge scratch: the slots a purge took. */
  readonly #scratch: Int32Array;

  /* ------------------------------------------------------------ construction */

  /** Create the shared state (validating the config) and this vCPU's handle on it. */
  static create(config: VmallocConfig, deps: VmallocDeps): VmallocSpace {
    const g = VmallocSpace.#geometry(config);
    const offs = columnOffsets(g.geometry);
    const sab = new SharedArrayBuffer(offs.total);
    const f64 = new Float64Array(sab, offs.f64, HDR_F64);
    const hdr = new Int32Array(sab, offs.hdr, HDR_WORDS);
    hdr[H_VA_BITS] = config.layout.vaBits;
    f64[F_VMALLOC_START] = g.start;
    f64[F_VMALLOC_END] = g.end;
    f64[F_BLOCK_IDX_BASE] = g.blockIdxBase;
    hdr[H_MAX_AREAS] = g.geometry.maxAreas;
    hdr[H_POOL_PAGES] = g.geometry.poolPages;
    hdr[H_NUM_CPUS] = g.geometry.numCpus;
    hdr[H_LAZY_MAX] = g.lazyMax;
    hdr[H_BLOCK_PAGES] = g.blockPages;
    hdr[H_NR_BLOCKS] = g.geometry.nrBlocks;
    hdr[H_STRATEGY] = (config.strategy ?? 'lazy') === 'eager' ? STRATEGY_EAGER : STRATEGY_LAZY;
    const vm = new VmallocSpace(sab, deps);
    vm.#pool.fill(-1);
    vm.#areaAt.fill(-1);
    vm.#vbqHead.fill(-1);
    hdr[H_HEAD] = -1;
    hdr[H_CACHE_SLOT] = -1;
    hdr[H_LAZY_HEAD] = -1;
    for (let i = 0; i < vm.maxAreas; i++) vm.#aNext[i] = i + 1 < vm.maxAreas ? i + 1 : -1;
    hdr[H_FREE_SLOT] = vm.maxAreas > 0 ? 0 : -1;
    return vm;
  }

  /** A vCPU worker's handle on state created elsewhere (VmallocSpace.create().sab). */
  static attach(sab: SharedArrayBuffer, deps: VmallocDeps): VmallocSpace {
    return new VmallocSpace(sab, deps);
  }

  static #geometry(config: VmallocConfig) {
    const { layout } = config;
    const cpus = config.numOnlineCpus;
    if (!Number.isInteger(cpus) || cpus < 1 || cpus > MAX_VCPUS_PER_DOMAIN) {
      throw new RangeError(`numOnlineCpus must be an integer in 1..${MAX_VCPUS_PER_DOMAIN}, got ${cpus}`);
    }
    const strategy = config.strategy ?? 'lazy';
    if (strategy !== 'lazy' && strategy !== 'eager') {
      throw new TypeError(`strategy must be 'lazy' or 'eager', got ${String(strategy)}`);
    }
    const start =
      config.vmallocStart ??
      (layout.paging === 'pae'
        ? layout.pageOffset + layout.maxLowmemFrames * PAGE_SIZE + VMALLOC_OFFSET
        : X86_64_VMALLOC_START);
    const end =
      config.vmallocEnd ??
      (layout.paging === 'pae' ? layout.vmallocEnd : Math.min(layout.vmallocEnd, start + X86_64_VMALLOC_WINDOW));
    for (const [name, v] of [
      ['vmallocStart', start],
      ['vmallocEnd', end],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 0 || v % PAGE_SIZE !== 0) {
        throw new RangeError(`${name} must be a page-aligned address, got ${v}`);
      }
    }
    if (end <= start) {
      throw new RangeError(`vmallocEnd (${end.toString(16)}) must be above vmallocStart (${start.toString(16)})`);
    }
    const poolPages = (end - start) / PAGE_SIZE;
    if (poolPages > MAX_POOL_PAGES) {
      throw new RangeError(`the vmalloc window holds ${poolPages} pages; at most ${MAX_POOL_PAGES} are accepted`);
    }
    const lazyMax = config.lazyMaxPages ?? lazyMaxPagesFor(cpus);
    if (!Number.isInteger(lazyMax) || lazyMax < 1 || lazyMax > 0x3fffffff) {
      throw new RangeError(`lazyMaxPages must be a positive integer, got ${lazyMax}`);
    }
    const maxAreas = config.maxAreas ?? Math.min(Math.ceil(poolPages / 2), 65536);
    if (!Number.isInteger(maxAreas) || maxAreas < 1 || maxAreas > 1 << 22) {
      throw new RangeError(`maxAreas must be an integer in 1..${1 << 22}, got ${maxAreas}`);
    }
    let blockPages = config.vmapBlockPages;
    if (blockPages === undefined) {
      const linux = Math.min(VMAP_BBMAP_BITS_MAX, Math.max(VMAP_BBMAP_BITS_MIN, Math.floor(poolPages / cpus / 16)));
      blockPages = Math.min(floorPow2(linux), floorPow2(poolPages));
    } else if (!isPow2(blockPages) || blockPages > VMAP_BBMAP_BITS_MAX || blockPages > poolPages) {
      throw new RangeError(
        `vmapBlockPages must be a power of two <= ${VMAP_BBMAP_BITS_MAX} and <= the window ` +
          `(${poolPages} pages), got ${blockPages}`,
      );
    }
    const blockSize = blockPages * PAGE_SIZE;
    const blockIdxBase = Math.floor(start / blockSize);
    const nrBlocks = Math.floor((end - 1) / blockSize) - blockIdxBase + 1;
    return {
      start,
      end,
      lazyMax,
      blockPages,
      blockIdxBase,
      geometry: { maxAreas, poolPages, nrBlocks, blockPages, blockWords: Math.ceil(blockPages / 32), numCpus: cpus },
    };
  }

  private constructor(sab: SharedArrayBuffer, deps: VmallocDeps) {
    this.sab = sab;
    if (!Number.isInteger(deps.cpu) || deps.cpu < 0 || deps.cpu >= MAX_VCPUS_PER_DOMAIN) {
      throw new RangeError(`deps.cpu must be an integer in 0..${MAX_VCPUS_PER_DOMAIN - 1}, got ${deps.cpu}`);
    }
    this.cpu = deps.cpu;
    this.#onSpin = deps.onSpin;
    this.#kpt = deps.kpt;
    this.#refs = deps.refs;
    this.#allocator = deps.allocator;
    this.#log = new LogBuf(MESSAGE_CAPACITY, deps.report ?? null);
    if (sab.byteLength < HDR_WORDS * 4 + HDR_F64 * 8) throw new TypeError('not a VmallocSpace buffer (too small)');
    const hdr0 = new Int32Array(sab, 0, HDR_WORDS);
    const f64 = new Float64Array(sab, HDR_WORDS * 4, HDR_F64);
    const maxAreas = hdr0[H_MAX_AREAS]!;
    const geometry: Geometry = {
      maxAreas,
      poolPages: hdr0[H_POOL_PAGES]!,
      nrBlocks: hdr0[H_NR_BLOCKS]!,
      blockPages: hdr0[H_BLOCK_PAGES]!,
      blockWords: Math.ceil(hdr0[H_BLOCK_PAGES]! / 32),
      numCpus: hdr0[H_NUM_CPUS]!,
    };
    const o = columnOffsets(geometry);
    if (o.total !== sab.byteLength) throw new TypeError('not a VmallocSpace buffer (size mismatch)');
    this.#f64 = f64;
    this.#hdr = this.header = hdr0;
    this.#aStart = new Float64Array(sab, o.aStart, maxAreas);
    this.#aEnd = new Float64Array(sab, o.aEnd, maxAreas);
    this.#aFlags = new Int32Array(sab, o.aFlags, maxAreas);
    this.#aVmFlags = new Int32Array(sab, o.aVmFlags, maxAreas);
    this.#aNrPages = new Int32Array(sab, o.aNrPages, maxAreas);
    this.#aProt = new Int32Array(sab, o.aProt, maxAreas);
    this.#aNext = new Int32Array(sab, o.aNext, maxAreas);
    this.#aPrev = new Int32Array(sab, o.aPrev, maxAreas);
    this.#aLazyNext = new Int32Array(sab, o.aLazyNext, maxAreas);
    this.#areaAt = new Int32Array(sab, o.areaAt, geometry.poolPages);
    this.#pool = new Int32Array(sab, o.pool, geometry.poolPages);
    const nb = geometry.nrBlocks;
    this.#vbState = new Int32Array(sab, o.vbState, nb);
    this.#vbCpu = new Int32Array(sab, o.vbCpu, nb);
    this.#vbFreeCount = new Int32Array(sab, o.vbFree, nb);
    this.#vbDirtyCount = new Int32Array(sab, o.vbDirty, nb);
    this.#vbNext = new Int32Array(sab, o.vbNext, nb);
    this.#vbPrev = new Int32Array(sab, o.vbPrev, nb);
    this.#vbOnList = new Int32Array(sab, o.vbOnList, nb);
    this.#vbLock = new Int32Array(sab, o.vbLock, nb);
    this.#allocMap = new Int32Array(sab, o.allocMap, nb * geometry.blockWords);
    this.#dirtyMap = new Int32Array(sab, o.dirtyMap, nb * geometry.blockWords);
    this.#vbqHead = new Int32Array(sab, o.vbqHead, geometry.numCpus);
    this.#vbqLock = new Int32Array(sab, o.vbqLock, geometry.numCpus);
    this.#regionMap = new Uint8Array(sab, o.regionMap, nb * geometry.blockPages);
    this.vmallocStart = f64[F_VMALLOC_START]!;
    this.vmallocEnd = f64[F_VMALLOC_END]!;
    this.maxAreas = maxAreas;
    this.poolPages = geometry.poolPages;
    this.numOnlineCpus = geometry.numCpus;
    this.vmapBlockPages = hdr0[H_BLOCK_PAGES]!;
    this.#nrBlocks = nb;
    this.#blockWords = geometry.blockWords;
    this.#blockSize = this.vmapBlockPages * PAGE_SIZE;
    this.#blockIdxBase = f64[F_BLOCK_IDX_BASE]!;
    this.#scratch = new Int32Array(maxAreas);
  }

  /* ----------------------------------------------------------- configuration */

  /** lazy_max_pages(): vmap_lazy_nr above this triggers a purge. */
  lazyMaxPages(): number {
    return this.#hdr[H_LAZY_MAX]!;
  }

  /** Change the threshold at run time (the benchmarks' knob). */
  setLazyMaxPages(pages: number): void {
    if (!Number.isInteger(pages) || pages < 1 || pages > 0x3fffffff) {
      throw new RangeError(`lazyMaxPages must be a positive integer, got ${pages}`);
    }
    Atomics.store(this.#hdr, H_LAZY_MAX, pages);
  }

  get strategy(): VunmapStrategy {
    return Atomics.load(this.#hdr, H_STRATEGY) === STRATEGY_EAGER ? 'eager' : 'lazy';
  }

  /** Switch strategy. Areas already lazy stay lazy until the next purge. */
  setStrategy(s: VunmapStrategy): void {
    if (s !== 'lazy' && s !== 'eager') throw new TypeError(`strategy must be 'lazy' or 'eager', got ${String(s)}`);
    Atomics.store(this.#hdr, H_STRATEGY, s === 'eager' ? STRATEGY_EAGER : STRATEGY_LAZY);
  }

  /* -------------------------------------------------------- area allocation */

  /**
   * alloc_vmap_area: reserve [va, va + size) in [vstart, vend), first fit, aligned. On no
   * space, purge the lazy areas synchronously and retry once. Returns the va or -ENOMEM
   * (-EINVAL for bad arguments). The area has no mapping; release it with freeVmapArea.
   */
  allocVmapArea(size: number, align = PAGE_SIZE, vstart = this.vmallocStart, vend = this.vmallocEnd): number {
    if (
      !Number.isSafeInteger(size) ||
      size <= 0 ||
      size % PAGE_SIZE !== 0 ||
      !isPow2(align) ||
      align < PAGE_SIZE ||
      !(vstart >= this.vmallocStart && vend <= this.vmallocEnd && vstart < vend)
    ) {
      return this.#misuse(
        `alloc_vmap_area: bad request size ${size} align ${align} range ${this.#fmt(vstart)}-${this.#fmt(vend)}`,
      );
    }
    const slot = this.#allocVmapArea(size, align, vstart, vend, 0);
    return slot < 0 ? slot : this.#aStart[slot]!;
  }

  /**
   * free_vmap_area: give back an area from allocVmapArea at once. The caller has cleared
   * and flushed any mapping it made there. Returns 0 or -EINVAL.
   */
  freeVmapArea(va: number): number {
    const h = this.#hdr;
    this.#lock(h, H_VMAP_AREA_LOCK);
    const slot = this.#slotAt(va);
    if (slot < 0 || this.#aFlags[slot] !== 0) {
      this.#unlock(h, H_VMAP_AREA_LOCK);
      return this.#misuse(`free_vmap_area: no raw vmap area at ${this.#fmt(va)}`);
    }
    this.#unlinkArea(slot);
    this.#unlock(h, H_VMAP_AREA_LOCK);
    return 0;
  }

  /* ------------------------------------------------------------- vmap/vunmap */

  /**
   * vmap: map count pages (pfns) virtually contiguously; vm_struct flags (VM_MAP, ...),
   * PTE flags prot. Returns the va, or -ENOMEM / -EINVAL.
   */
  vmap(pages: ArrayLike<number>, count: number, flags = VM_MAP, prot = PAGE_KERNEL): number {
    const bad = this.#checkPages(pages, count, 'vmap');
    if (bad < 0) return bad;
    if (!Number.isInteger(flags) || flags & ~VMAP_FLAGS_ACCEPTED) {
      return this.#misuse(`vmap: flags ${flags} not accepted (VM_IOREMAP|VM_MAP|VM_USERMAP|VM_VPAGES|VM_HOLD_REFS)`);
    }
    const slot = this.#getVmArea(count, flags, prot);
    if (slot < 0) return slot;
    if (flags & VM_HOLD_REFS) {
      for (let i = 0; i < count; i++) this.#refs.getPage(pages[i]!);
      Atomics.add(this.#hdr, C_REF_PAGES, count);
    }
    this.#mapPages(this.#aStart[slot]!, pages, count, prot);
    Atomics.add(this.#hdr, C_VMAPS, 1);
    return this.#aStart[slot]!;
  }

  /**
   * vmap_pages (Dave Chinner): vmap that takes a reference on every page. The references
   * are dropped by vunmapPages only once the PTEs are cleared and flushed.
   */
  vmapPages(pages: ArrayLike<number>, count: number, flags = VM_MAP, prot = PAGE_KERNEL): number {
    return this.vmap(pages, count, flags | VM_HOLD_REFS, prot);
  }

  /** vunmap: release a vmap area (lazily or eagerly per the strategy). 0 or -EINVAL. */
  vunmap(va: number): number {
    return this.#unmapArea(va, 'vunmap');
  }

  /** vunmap_pages: vunmap of a vmapPages area; the page references go with the PTEs. */
  vunmapPages(va: number): number {
    return this.#unmapArea(va, 'vunmap_pages');
  }

  /* ----------------------------------------------------------- vmalloc/vfree */

  /**
   * vmalloc: size bytes (rounded up to pages) of pages from the injected allocator,
   * mapped PAGE_KERNEL. Returns the va, or -ENOMEM / -EINVAL.
   */
  vmalloc(size: number): number {
    if (!Number.isSafeInteger(size) || size <= 0) return this.#misuse(`vmalloc: bad size ${size}`);
    const count = Math.ceil(size / PAGE_SIZE);
    const slot = this.#getVmArea(count, VM_ALLOC, PAGE_KERNEL);
    if (slot < 0) return slot;
    const va = this.#aStart[slot]!;
    const idx = this.#poolIndex(va);
    const pool = this.#pool;
    for (let i = 0; i < count; i++) {
      const pfn = this.#allocator.allocPage();
      if (pfn < 0) {
        // Nothing is mapped yet: give the pages and the area back at once.
        for (let j = 0; j < i; j++) {
          this.#allocator.freePage(pool[idx + j]!);
          pool[idx + j] = -1;
        }
        this.#lock(this.#hdr, H_VMAP_AREA_LOCK);
        this.#unlinkArea(this.#slotAt(va));
        this.#unlock(this.#hdr, H_VMAP_AREA_LOCK);
        Atomics.add(this.#hdr, C_ALLOC_FAILURES, 1);
        this.#printk(`vmalloc: allocation failure, allocated ${i * PAGE_SIZE} of ${count * PAGE_SIZE} bytes`);
        return -ENOMEM;
      }
      pool[idx + i] = pfn;
    }
    const kpt = this.#kpt;
    for (let i = 0; i < count; i++) kpt.setPte(va + i * PAGE_SIZE, kpt.pfnToMfn(pool[idx + i]!), PAGE_KERNEL);
    kpt.flushPending();
    Atomics.add(this.#hdr, C_PTES_SET, count);
    Atomics.add(this.#hdr, C_VMALLOCS, 1);
    return va;
  }

  /**
   * vfree: unmap (per the strategy) and free the pages. In lazy mode the pages are freed
   * while their PTEs are still present, as in 2.6.28: vmUnmapAliases() is the cure.
   * vfree(0) does nothing. Returns 0 or -EINVAL.
   */
  vfree(va: number): number {
    if (va === 0) return 0;
    return this.#unmapArea(va, 'vfree');
  }

  /* ----------------------------------------------------------------- purging */

  /** purge_vmap_area_lazy: a synchronous purge (waits for purge_lock). */
  purgeVmapAreaLazy(): void {
    this.#purgeVmapAreaLazy(true, false, Infinity, -Infinity);
  }

  /** try_purge_vmap_area_lazy: purge unless another purge is running. */
  tryPurgeVmapAreaLazy(): void {
    this.#purgeVmapAreaLazy(false, false, Infinity, -Infinity);
  }

  /**
   * vm_unmap_aliases: clear the dirty regions of every vmap block (2.6.28 scanned only the
   * blocks on the per-CPU free lists and so missed full blocks; this scans all), then
   * purge synchronously with a forced flush. Afterwards no page that has been unmapped
   * through this layer is reachable through any PTE or TLB entry of the vmalloc space.
   */
  vmUnmapAliases(): void {
    let start = Infinity;
    let end = -Infinity;
    let cleared = 0;
    const kpt = this.#kpt;
    const pool = this.#pool;
    const bp = this.vmapBlockPages;
    for (let b = 0; b < this.#nrBlocks; b++) {
      if (Atomics.load(this.#vbState, b) === 0) continue;
      this.#lock(this.#vbLock, b);
      if (this.#vbState[b] !== 0 && this.#vbDirtyCount[b]! > 0) {
        const bva = this.#blockVa(b);
        const base = this.#poolIndex(bva);
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
      this.#unlock(this.#vbLock, b);
    }
    if (cleared > 0) {
      kpt.flushPending();
      Atomics.sub(this.#hdr, C_LAZY_PAGES, cleared);
      Atomics.add(this.#hdr, C_PTES_CLEARED, cleared);
    }
    Atomics.add(this.#hdr, C_UNMAP_ALIASES, 1);
    this.#purgeVmapAreaLazy(true, true, start, end);
  }

  /* ---------------------------------------------------------- vm_map_ram */

  /**
   * vm_map_ram: map count pages for a short while, from a vmap block of `cpu` (default:
   * this vCPU) when count <= VMAP_MAX_ALLOC (and fits a block), else as a plain area
   * without guard. Returns the va, or -ENOMEM / -EINVAL.
   */
  vmMapRam(pages: ArrayLike<number>, count: number, prot = PAGE_KERNEL, cpu = this.cpu): number {
    const bad = this.#checkPages(pages, count, 'vm_map_ram');
    if (bad < 0) return bad;
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= this.numOnlineCpus) {
      return this.#misuse(`vm_map_ram: bad cpu ${cpu}`);
    }
    let va: number;
    if (this.#usesBlock(count)) {
      va = this.#vbAlloc(count, cpu);
    } else {
      const slot = this.#allocVmapArea(count * PAGE_SIZE, PAGE_SIZE, this.vmallocStart, this.vmallocEnd, VA_RAM);
      if (slot >= 0) {
        this.#aNrPages[slot] = count;
        this.#aProt[slot] = prot;
      }
      va = slot < 0 ? slot : this.#aStart[slot]!;
    }
    if (va < 0) return va;
    this.#mapPages(va, pages, count, prot);
    Atomics.add(this.#hdr, C_RAM_MAPS, 1);
    return va;
  }

  /** vm_unmap_ram: release a vmMapRam mapping of count pages. 0 or -EINVAL. */
  vmUnmapRam(va: number, count: number): number {
    if (!Number.isInteger(count) || count < 1 || count > this.poolPages) {
      return this.#misuse(`vm_unmap_ram: bad count ${count}`);
    }
    const rc = this.#usesBlock(count) ? this.#vbFree(va, count) : this.#unmapArea(va, 'vm_unmap_ram');
    if (rc === 0) Atomics.add(this.#hdr, C_RAM_UNMAPS, 1);
    return rc;
  }

  /* ----------------------------------------------------------------- queries */

  /**
   * Every alias of pfn in the vmalloc space: live mappings, lazily unmapped areas, live
   * vmap-block mappings and dirty (unmapped, not yet cleared) vmap-block regions.
   */
  vmapAliasesOf(pfn: number): VmapAlias[] {
    return this.#aliases((p) => p === pfn, false);
  }

  /** The XFS query: lazily unmapped areas (and dirty vmap-block regions) still mapping pfn. */
  lazyAliasesOf(pfn: number): VmapAlias[] {
    return this.#aliases((p) => p === pfn, true);
  }

  /** lazyAliasesOf by machine frame (through this vCPU's pfnToMfn). */
  lazyAliasesOfMfn(mfn: number): VmapAlias[] {
    const kpt = this.#kpt;
    return this.#aliases((p) => kpt.pfnToMfn(p) === mfn, true);
  }

  /** The area starting at or containing va, or null. */
  findVmapArea(va: number): VmapAreaInfo | null {
    if (!(va >= this.vmallocStart && va < this.vmallocEnd)) return null;
    this.#lock(this.#hdr, H_VMAP_AREA_LOCK);
    let info: VmapAreaInfo | null = null;
    // Back from va's page to the nearest area start: O(size of the area), a query only.
    for (let p = Math.floor(this.#poolIndex(va)); p >= 0; p--) {
      const s = this.#areaAt[p]!;
      if (s < 0) continue;
      if (this.#aEnd[s]! > va) info = this.#info(s);
      break;
    }
    this.#unlock(this.#hdr, H_VMAP_AREA_LOCK);
    return info;
  }

  /** Every area in address order (a snapshot; for tests and tools). */
  areas(): VmapAreaInfo[] {
    this.#lock(this.#hdr, H_VMAP_AREA_LOCK);
    const out: VmapAreaInfo[] = [];
    for (let s = this.#hdr[H_HEAD]!; s >= 0; s = this.#aNext[s]!) out.push(this.#info(s));
    this.#unlock(this.#hdr, H_VMAP_AREA_LOCK);
    return out;
  }

  /** The pfns mapped at [va, va + count pages) as this layer installed them (-1: none). */
  pagesAt(va: number, count: number): number[] {
    const idx = this.#poolIndex(va);
    const out: number[] = [];
    for (let i = 0; i < count; i++) out.push(this.#pool[idx + i] ?? -1);
    return out;
  }

  stats(): VmallocStats {
    const h = this.#hdr;
    const c = (i: number): number => Atomics.load(h, i);
    return {
      strategy: this.strategy,
      vmaps: c(C_VMAPS),
      vunmaps: c(C_VUNMAPS),
      vmallocs: c(C_VMALLOCS),
      vfrees: c(C_VFREES),
      purges: c(C_PURGES),
      purgesSkipped: c(C_PURGE_SKIPPED),
      flushes: c(C_FLUSHES),
      lazyNr: c(H_LAZY_NR),
      lazyMaxPages: c(H_LAZY_MAX),
      lazyPages: c(C_LAZY_PAGES),
      lazyPeakPages: c(C_LAZY_PEAK),
      refPages: c(C_REF_PAGES),
      allocRetries: c(C_ALLOC_RETRIES),
      allocFailures: c(C_ALLOC_FAILURES),
      misuse: c(C_MISUSE),
      areas: c(H_NR_AREAS),
      ramMaps: c(C_RAM_MAPS),
      ramUnmaps: c(C_RAM_UNMAPS),
      blocksNew: c(C_BLOCKS_NEW),
      blocksFreed: c(C_BLOCKS_FREED),
      unmapAliases: c(C_UNMAP_ALIASES),
      ptesSet: c(C_PTES_SET),
      ptesCleared: c(C_PTES_CLEARED),
    };
  }

  /**
   * The debug self-check: every structural invariant, recomputed from scratch. Returns the
   * violations (empty when all hold). Call it when no other vCPU is inside this layer.
   */
  checkInvariants(): string[] {
    const bad: string[] = [];
    const h = this.#hdr;
    const n = h[H_NR_AREAS]!;
    const inIndex = new Uint8Array(this.maxAreas);
    let lazyNr = 0;
    let lazyPages = 0;
    let refPages = 0;
    let prevEnd = this.vmallocStart;
    const covered = new Uint8Array(this.poolPages);
    const order: number[] = [];
    const seen = new Uint8Array(this.maxAreas);
    for (let s = h[H_HEAD]!, prev = -1; s >= 0; prev = s, s = this.#aNext[s]!) {
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
      const st = this.#aStart[s]!;
      const en = this.#aEnd[s]!;
      const f = this.#aFlags[s]!;
      if (st < prevEnd) bad.push(`area ${i} [${this.#fmt(st)}, ${this.#fmt(en)}) overlaps or is out of order`);
      if (en <= st || en > this.vmallocEnd || st % PAGE_SIZE || en % PAGE_SIZE) bad.push(`area ${i} has bad bounds`);
      if (f & (VM_LAZY_FREEING | VA_PURGE_SELECTED)) bad.push(`area ${this.#fmt(st)} is left in a purge state`);
      prevEnd = en;
      const idx = this.#poolIndex(st);
      if (this.#areaAt[idx] !== s) bad.push(`start table does not point at the area at ${this.#fmt(st)}`);
      const pages = (en - st) / PAGE_SIZE;
      for (let p = 0; p < pages; p++) covered[idx + p] = 1;
      let mapped = 0;
      for (let p = 0; p < pages; p++) if (this.#pool[idx + p]! >= 0) mapped++;
      if (f & VM_LAZY_FREE) {
        lazyNr += pages;
        if (!(f & VA_VMAP_BLOCK)) lazyPages += mapped;
      }
      if (this.#aVmFlags[s]! & VM_HOLD_REFS) refPages += this.#aNrPages[s]!;
      if (f & VM_VM_AREA && this.#pool[idx + pages - 1]! >= 0) bad.push(`guard page of ${this.#fmt(st)} is mapped`);
    }
    let starts = 0;
    for (let p = 0; p < this.poolPages; p++) {
      if (!covered[p] && this.#pool[p]! >= 0) {
        bad.push(`pool entry for ${this.#fmt(this.vmallocStart + p * PAGE_SIZE)} outside any area`);
        break;
      }
      if (this.#areaAt[p]! >= 0) starts++;
    }
    if (starts !== n) bad.push(`start table holds ${starts} areas, nr_areas ${n}`);
    // the lazy list is exactly the VM_LAZY_FREE areas
    let lazyListed = 0;
    let lazyAreas = 0;
    for (let s = h[H_LAZY_HEAD]!; s >= 0 && lazyListed <= n; s = this.#aLazyNext[s]!) {
      if (!inIndex[s] || !(this.#aFlags[s]! & VM_LAZY_FREE)) {
        bad.push(`slot ${s} on the lazy list is not a lazy area`);
      }
      lazyListed++;
    }
    for (const s of order) if (this.#aFlags[s]! & VM_LAZY_FREE) lazyAreas++;
    if (lazyListed !== lazyAreas) bad.push(`lazy list holds ${lazyListed} areas, ${lazyAreas} are lazy`);
    // the first-fit cache: no hole below the cache area's end is bigger than cached_hole_size
    const cache = h[H_CACHE_SLOT]!;
    if (cache >= 0) {
      if (!inIndex[cache]) bad.push('the first-fit cache points at a free slot');
      let lo = this.vmallocStart;
      for (const s of order) {
        if (this.#aStart[s]! - lo > this.#f64[F_CACHED_HOLE]!) {
          bad.push(
            `hole of ${this.#aStart[s]! - lo} bytes below the cache exceeds ` +
              `cached_hole_size ${this.#f64[F_CACHED_HOLE]}`,
          );
        }
        if (s === cache) break;
        lo = this.#aEnd[s]!;
      }
    }
    let free = 0;
    for (let s = h[H_FREE_SLOT]!; s >= 0 && free <= this.maxAreas; s = this.#aNext[s]!) {
      if (inIndex[s]) bad.push(`slot ${s} is both free and in the index`);
      free++;
    }
    if (free + n !== this.maxAreas) bad.push(`slots: ${n} in the index + ${free} free != ${this.maxAreas}`);
    // vmap blocks
    let blockLazyPages = 0;
    for (let b = 0; b < this.#nrBlocks; b++) {
      const bva = this.#blockVa(b);
      const base = this.#poolIndex(bva);
      if (this.#vbState[b] === 0) {
        if (this.#vbOnList[b]) bad.push(`dead block ${this.#fmt(bva)} on a free list`);
        continue;
      }
      let alloc = 0;
      let dirty = 0;
      for (let p = 0; p < this.vmapBlockPages; p++) {
        const a = this.#testBit(this.#allocMap, b, p);
        const d = this.#testBit(this.#dirtyMap, b, p);
        if (a) alloc++;
        if (d) dirty++;
        if (d && !a) bad.push(`block ${this.#fmt(bva)} page ${p} dirty but not allocated`);
        if (!a && this.#pool[base + p]! >= 0) bad.push(`block ${this.#fmt(bva)} page ${p} mapped but free`);
        if (d && this.#pool[base + p]! >= 0) blockLazyPages++;
        const r = this.#regionMap[b * this.vmapBlockPages + p]!;
        if (r > 0 && (!this.#allBits(this.#allocMap, b, p, 1 << (r - 1), true) || d)) {
          bad.push(`block ${this.#fmt(bva)} region at ${p} is not a live allocation`);
        }
      }
      const where = `block ${this.#fmt(bva)}`;
      const free = this.#vbFreeCount[b]!;
      if (free !== this.vmapBlockPages - alloc)
        bad.push(`${where} free count ${free} != ${this.vmapBlockPages - alloc}`);
      if (this.#vbDirtyCount[b] !== dirty) bad.push(`${where} dirty count ${this.#vbDirtyCount[b]} != ${dirty}`);
      if (free > 0 !== (this.#vbOnList[b] === 1)) bad.push(`${where} free-list membership wrong`);
      const bs = this.#slotAt(bva);
      if (bs < 0 || !(this.#aFlags[bs]! & VA_VMAP_BLOCK)) bad.push(`live block ${this.#fmt(bva)} has no area`);
    }
    // lazily freed blocks: their remaining PTEs were counted when their regions got dirty
    for (const s of order) {
      if ((this.#aFlags[s]! & (VM_LAZY_FREE | VA_VMAP_BLOCK)) === (VM_LAZY_FREE | VA_VMAP_BLOCK)) {
        const idx = this.#poolIndex(this.#aStart[s]!);
        for (let p = 0; p < this.vmapBlockPages; p++) if (this.#pool[idx + p]! >= 0) blockLazyPages++;
      }
    }
    if (h[H_LAZY_NR] !== lazyNr) bad.push(`vmap_lazy_nr ${h[H_LAZY_NR]} != ${lazyNr} pages in lazy areas`);
    const left = lazyPages + blockLazyPages;
    if (h[C_LAZY_PAGES] !== left) bad.push(`lazy pages ${h[C_LAZY_PAGES]} != ${left} PTEs left by unmaps`);
    if (h[C_REF_PAGES] !== refPages) bad.push(`held references ${h[C_REF_PAGES]} != ${refPages}`);
    if (h[H_VMAP_AREA_LOCK] !== 0 || h[H_PURGE_LOCK] !== 0) bad.push('a lock is held');
    return bad;
  }

  /* ============================================================== internals */

  #lock(word: Int32Array, index: number): void {
    spinLock(word, index, this.cpu, this.#onSpin);
  }

  #trylock(word: Int32Array, index: number): boolean {
    return spinTrylock(word, index, this.cpu);
  }

  #unlock(word: Int32Array, index: number): void {
    spinUnlock(word, index, this.cpu);
  }

  /** An address as the kernel prints %p (sign-extended on x86_64). */
  #fmt(va: number): string {
    return formatKernelVa(va, this.#hdr[H_VA_BITS]!);
  }

  #printk(line: string): void {
    this.#log.printk(line);
  }

  /** Report a caller's mistake, count it, return -EINVAL. */
  #misuse(line: string): number {
    Atomics.add(this.#hdr, C_MISUSE, 1);
    this.#printk(line);
    return -EINVAL;
  }

  #poolIndex(va: number): number {
    return (va - this.vmallocStart) / PAGE_SIZE;
  }

  #info(s: number): VmapAreaInfo {
    return {
      start: this.#aStart[s]!,
      end: this.#aEnd[s]!,
      flags: this.#aFlags[s]! & ~VA_PURGE_SELECTED,
      vmFlags: this.#aVmFlags[s]!,
      nrPages: this.#aNrPages[s]!,
      prot: this.#aProt[s]!,
    };
  }

  /** Arguments a caller can get wrong. A count too big for the window is -ENOMEM, later. */
  #checkPages(pages: ArrayLike<number>, count: number, caller: string): number {
    if (!Number.isInteger(count) || count < 1 || count > 0x7fffffff || pages.length < count) {
      return this.#misuse(`${caller}: bad page count ${count} (${pages.length} pages given)`);
    }
    for (let i = 0; i < count; i++) {
      const pfn = pages[i]!;
      if (!Number.isInteger(pfn) || pfn < 0 || pfn > 0x7fffffff) {
        return this.#misuse(`${caller}: bad pfn ${pfn} at ${i}`);
      }
    }
    return 0;
  }

  /* ---- the address index (callers hold vmap_area_lock) -------------------- */

  /** The area starting exactly at va, or -1: O(1) through the per-page start table. */
  #slotAt(va: number): number {
    if (!(va >= this.vmallocStart && va < this.vmallocEnd) || va % PAGE_SIZE !== 0) return -1;
    return this.#areaAt[this.#poolIndex(va)]!;
  }

  /**
   * Put a VM_LAZY_FREE area on the lazy list, its pages already counted in vmap_lazy_nr
   * (so a purge never subtracts what was not added). Returns the new vmap_lazy_nr.
   */
  #lazyListAdd(s: number, vaPages: number): number {
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
  #unlinkArea(s: number): void {
    const h = this.#hdr;
    const prev = this.#aPrev[s]!;
    const next = this.#aNext[s]!;
    const cache = h[H_CACHE_SLOT]!;
    if (cache === s) {
      h[H_CACHE_SLOT] = prev;
    } else if (cache >= 0 && this.#aStart[s]! < this.#aStart[cache]!) {
      const lo = prev >= 0 ? this.#aEnd[prev]! : this.vmallocStart;
      const hole = this.#aStart[next]! - lo; // next exists: the cache is above s
      if (hole > this.#f64[F_CACHED_HOLE]!) this.#f64[F_CACHED_HOLE] = hole;
    }
    if (prev >= 0) this.#aNext[prev] = next;
    else h[H_HEAD] = next;
    if (next >= 0) this.#aPrev[next] = prev;
    this.#areaAt[this.#poolIndex(this.#aStart[s]!)] = -1;
    h[H_NR_AREAS] = h[H_NR_AREAS]! - 1;
    this.#releaseSlot(s);
  }

  #releaseSlot(s: number): void {
    const idx = this.#poolIndex(this.#aStart[s]!);
    this.#pool.fill(-1, idx, idx + (this.#aEnd[s]! - this.#aStart[s]!) / PAGE_SIZE);
    this.#aFlags[s] = 0;
    this.#aVmFlags[s] = 0;
    this.#aNrPages[s] = 0;
    this.#aNext[s] = this.#hdr[H_FREE_SLOT]!;
    this.#hdr[H_FREE_SLOT] = s;
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
    const aStart = this.#aStart;
    const aEnd = this.#aEnd;
    const aNext = this.#aNext;
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
    this.#areaAt[this.#poolIndex(addr)] = slot;
    h[H_NR_AREAS] = h[H_NR_AREAS]! + 1;
    aStart[slot] = addr;
    aEnd[slot] = addr + size;
    this.#aFlags[slot] = vaFlags;
    this.#aVmFlags[slot] = 0;
    this.#aNrPages[slot] = 0;
    this.#aProt[slot] = 0;
    if (full) {
      // The alignment slop before the new area is a hole below it too.
      if (addr - prevEnd > holeMax) holeMax = addr - prevEnd;
      h[H_CACHE_SLOT] = slot;
      this.#f64[F_CACHED_HOLE] = holeMax;
    }
    return slot;
  }

  /** alloc_vmap_area with Linux's single purge-and-retry. Slot or -ENOMEM. */
  #allocVmapArea(size: number, align: number, vstart: number, vend: number, vaFlags: number): number {
    const h = this.#hdr;
    for (let purged = false; ; purged = true) {
      this.#lock(h, H_VMAP_AREA_LOCK);
      const slot = this.#allocLocked(size, align, vstart, vend, vaFlags);
      this.#unlock(h, H_VMAP_AREA_LOCK);
      if (slot >= 0) return slot;
      if (purged) break;
      Atomics.add(h, C_ALLOC_RETRIES, 1);
      this.purgeVmapAreaLazy();
    }
    Atomics.add(h, C_ALLOC_FAILURES, 1);
    this.#printk(`vmap allocation for size ${size} failed: use vmalloc=<size> to increase size.`);
    return -ENOMEM;
  }

  /** get_vm_area: an area for count pages plus the guard page, VM_VM_AREA. */
  #getVmArea(count: number, vmFlags: number, prot: number): number {
    const size = (count + 1) * PAGE_SIZE;
    const slot = this.#allocVmapArea(size, PAGE_SIZE, this.vmallocStart, this.vmallocEnd, VM_VM_AREA);
    if (slot >= 0) {
      this.#aVmFlags[slot] = vmFlags;
      this.#aNrPages[slot] = count;
      this.#aProt[slot] = prot;
    }
    return slot;
  }

  /** Install the PTEs of a fresh mapping and record them in the pool. */
  #mapPages(va: number, pages: ArrayLike<number>, count: number, prot: number): void {
    const kpt = this.#kpt;
    const pool = this.#pool;
    const idx = this.#poolIndex(va);
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
    const pool = this.#pool;
    const st = this.#aStart[s]!;
    const idx = this.#poolIndex(st);
    const pages = (this.#aEnd[s]! - st) / PAGE_SIZE;
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
    if (!(this.#aVmFlags[s]! & VM_HOLD_REFS)) return;
    const idx = this.#poolIndex(this.#aStart[s]!);
    const n = this.#aNrPages[s]!;
    for (let p = 0; p < n; p++) this.#refs.putPage(this.#pool[idx + p]!);
    this.#aVmFlags[s] = this.#aVmFlags[s]! & ~VM_HOLD_REFS;
    Atomics.sub(this.#hdr, C_REF_PAGES, n);
  }

  #addLazyPages(n: number): void {
    const h = this.#hdr;
    const now = Atomics.add(h, C_LAZY_PAGES, n) + n;
    let peak = Atomics.load(h, C_LAZY_PEAK);
    while (now > peak) {
      const seen = Atomics.compareExchange(h, C_LAZY_PEAK, peak, now);
      if (seen === peak) break;
      peak = seen;
    }
  }

  /* ---- unmapping ---------------------------------------------------------- */

  /**
   * The common tail of vunmap, vunmap_pages, vfree and the large vm_unmap_ram: find the
   * area, check it is the caller's kind, detach it, then unmap it eagerly or lazily.
   */
  #unmapArea(va: number, caller: 'vunmap' | 'vunmap_pages' | 'vfree' | 'vm_unmap_ram'): number {
    const h = this.#hdr;
    if (!Number.isSafeInteger(va) || va % PAGE_SIZE !== 0) {
      return this.#misuse(`Trying to ${caller}() bad address (${this.#fmt(va)})`);
    }
    const lazy = Atomics.load(h, H_STRATEGY) === STRATEGY_LAZY;
    this.#lock(h, H_VMAP_AREA_LOCK);
    const s = this.#slotAt(va);
    const f = s < 0 ? 0 : this.#aFlags[s]!;
    const vf = s < 0 ? 0 : this.#aVmFlags[s]!;
    let why = '';
    if (caller === 'vm_unmap_ram') {
      if (!(f & VA_RAM) || f & (VM_LAZY_FREE | VM_LAZY_FREEING)) {
        why = `Trying to vm_unmap_ram() nonexistent mapping (${this.#fmt(va)})`;
      }
    } else if (!(f & VM_VM_AREA)) {
      why = `Trying to ${caller}() nonexistent vm area (${this.#fmt(va)})`;
    } else if (caller === 'vfree' && !(vf & VM_ALLOC)) {
      why = `vfree(${this.#fmt(va)}): not a vmalloc area (use vunmap)`;
    } else if (caller !== 'vfree' && vf & VM_ALLOC) {
      why = `${caller}(${this.#fmt(va)}): a vmalloc area (use vfree)`;
    } else if (caller === 'vunmap_pages' && !(vf & VM_HOLD_REFS)) {
      why = `vunmap_pages(${this.#fmt(va)}): not mapped by vmap_pages (use vunmap)`;
    }
    if (why !== '') {
      this.#unlock(h, H_VMAP_AREA_LOCK);
      return this.#misuse(why);
    }
    // Detached: VM_LAZY_FREEING is "being unmapped by its owner"; no purge takes it.
    this.#aFlags[s] = (f & ~VM_VM_AREA) | VM_LAZY_FREEING;
    this.#unlock(h, H_VMAP_AREA_LOCK);

    const freePages = caller === 'vfree';
    if (lazy) {
      // 2.6.28: the pages go back now, the PTEs stay until the purge.
      if (freePages) this.#freeAreaPages(s);
      // Read the size before the area becomes purgeable: once it is on the lazy list
      // another vCPU's purge may free the slot and reuse it.
      const vaPages = (this.#aEnd[s]! - this.#aStart[s]!) / PAGE_SIZE;
      this.#lock(h, H_VMAP_AREA_LOCK);
      this.#aFlags[s] = (this.#aFlags[s]! & ~VM_LAZY_FREEING) | VM_LAZY_FREE;
      const nr = this.#lazyListAdd(s, vaPages);
      this.#addLazyPages(this.#aNrPages[s]!);
      this.#unlock(h, H_VMAP_AREA_LOCK);
      this.#countUnmap(caller);
      this.#purgeIfOverLimit(nr);
    } else {
      this.#unmapEager(s, freePages);
      this.#countUnmap(caller);
    }
    return 0;
  }

  #countUnmap(caller: string): void {
    if (caller === 'vfree') Atomics.add(this.#hdr, C_VFREES, 1);
    else if (caller !== 'vm_unmap_ram') Atomics.add(this.#hdr, C_VUNMAPS, 1);
  }

  #freeAreaPages(s: number): void {
    const idx = this.#poolIndex(this.#aStart[s]!);
    const n = this.#aNrPages[s]!;
    for (let p = 0; p < n; p++) this.#allocator.freePage(this.#pool[idx + p]!);
  }

  /** The tail of free_unmap_vmap_area_noflush: past lazy_max_pages(), try to purge. */
  #purgeIfOverLimit(nr: number): void {
    if (nr > Atomics.load(this.#hdr, H_LAZY_MAX)) this.tryPurgeVmapAreaLazy();
  }

  /** Eager unmap of a detached (VM_LAZY_FREEING) area: clear, flush, release, free. */
  #unmapEager(s: number, freePages: boolean): void {
    const kpt = this.#kpt;
    const h = this.#hdr;
    const cleared = this.#clearAreaPtes(s);
    kpt.flushPending();
    if (cleared > 0) {
      kpt.flushTlbKernelRange(this.#aStart[s]!, this.#aEnd[s]!);
      Atomics.add(h, C_FLUSHES, 1);
      Atomics.add(h, C_PTES_CLEARED, cleared);
    }
    if (freePages) this.#freeAreaPages(s);
    this.#putAreaRefs(s);
    this.#lock(h, H_VMAP_AREA_LOCK);
    this.#unlinkArea(s);
    this.#unlock(h, H_VMAP_AREA_LOCK);
  }

  /**
   * __purge_vmap_area_lazy. sync: wait for purge_lock (else trylock and give up);
   * force: flush [start, end) even if no area was lazy (vm_unmap_aliases passes the range
   * of the block regions it cleared; an empty range becomes the whole window, as x86's
   * flush_tlb_kernel_range flushed everything).
   */
  #purgeVmapAreaLazy(sync: boolean, force: boolean, start: number, end: number): void {
    const h = this.#hdr;
    if (!sync && !force) {
      if (!this.#trylock(h, H_PURGE_LOCK)) {
        Atomics.add(h, C_PURGE_SKIPPED, 1);
        return;
      }
    } else {
      this.#lock(h, H_PURGE_LOCK);
    }
    try {
      if (sync) {
        for (let cpu = 0; cpu < this.numOnlineCpus; cpu++) this.#purgeFragmentedBlocks(cpu, false);
      }
      const kpt = this.#kpt;
      const aFlags = this.#aFlags;
      const scratch = this.#scratch;
      // 1. Take every lazy area: detach the lazy list (vunmap may be adding to it).
      let k = 0;
      let nrVa = 0;
      this.#lock(h, H_VMAP_AREA_LOCK);
      for (let s = h[H_LAZY_HEAD]!; s >= 0; s = this.#aLazyNext[s]!) {
        const f = aFlags[s]!;
        aFlags[s] = (f & ~VM_LAZY_FREE) | VM_LAZY_FREEING | VA_PURGE_SELECTED;
        scratch[k++] = s;
        const st = this.#aStart[s]!;
        const en = this.#aEnd[s]!;
        if (st < start) start = st;
        if (en > end) end = en;
        nrVa += (en - st) / PAGE_SIZE;
      }
      h[H_LAZY_HEAD] = -1;
      this.#unlock(h, H_VMAP_AREA_LOCK);
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
        this.#lock(h, H_VMAP_AREA_LOCK);
        for (let j = 0; j < k; j++) this.#unlinkArea(scratch[j]!);
        this.#unlock(h, H_VMAP_AREA_LOCK);
      }
    } finally {
      this.#unlock(h, H_PURGE_LOCK);
    }
  }

  /* ---- vmap blocks ---------------------------------------------------------- */

  #usesBlock(count: number): boolean {
    return count <= VMAP_MAX_ALLOC && 1 << orderOf(count) <= this.vmapBlockPages;
  }

  #blockVa(b: number): number {
    return (b + this.#blockIdxBase) * this.#blockSize;
  }

  #blockOf(va: number): number {
    const b = Math.floor(va / this.#blockSize) - this.#blockIdxBase;
    return b >= 0 && b < this.#nrBlocks ? b : -1;
  }

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
    for (let p = 0; p + n <= this.vmapBlockPages; p += n) {
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

  /** vb_alloc: count pages from one of cpu's blocks, or a new block. va or -ENOMEM. */
  #vbAlloc(count: number, cpu: number): number {
    const order = orderOf(count);
    const n = 1 << order;
    const q = this.#vbqLock;
    const bp = this.vmapBlockPages;
    let fragmented = false;
    this.#lock(q, cpu);
    for (let b = this.#vbqHead[cpu]!; b >= 0; b = this.#vbNext[b]!) {
      this.#lock(this.#vbLock, b);
      if (this.#vbFreeCount[b]! + this.#vbDirtyCount[b]! === bp && this.#vbDirtyCount[b]! > 0) {
        fragmented = true; // no allocation left in it: only dirt and unusable holes
      }
      if (this.#vbFreeCount[b]! >= n) {
        const p = this.#findFreeRegion(b, order);
        if (p >= 0) {
          this.#regionMap[b * this.vmapBlockPages + p] = order + 1;
          this.#vbFreeCount[b] = this.#vbFreeCount[b]! - n;
          if (this.#vbFreeCount[b] === 0) this.#vbqRemove(cpu, b);
          this.#unlock(this.#vbLock, b);
          this.#unlock(q, cpu);
          return this.#blockVa(b) + p * PAGE_SIZE;
        }
      }
      this.#unlock(this.#vbLock, b);
    }
    this.#unlock(q, cpu);
    if (fragmented) this.#purgeFragmentedBlocks(cpu, true);
    return this.#newVmapBlock(cpu, order);
  }

  /**
   * purge_fragmented_blocks (2.6.34, the fix for vm_map_ram leaking vmalloc space under
   * XFS): a block on a free list with no allocation left (free + dirty == all, some dirt)
   * can never become fully dirty; release it like a fully dirty one. From vb_alloc for the
   * CPU's own queue; from a synchronous purge for every CPU (then checkLimit false: the caller is
   * the purge, which collects the areas itself). Returns the vmap_lazy_nr reached.
   */
  #purgeFragmentedBlocks(cpu: number, checkLimit: boolean): number {
    const bp = this.vmapBlockPages;
    const words = this.#blockWords;
    const q = this.#vbqLock;
    const found: number[] = [];
    this.#lock(q, cpu);
    for (let b = this.#vbqHead[cpu]!; b >= 0; ) {
      const next = this.#vbNext[b]!;
      this.#lock(this.#vbLock, b);
      if (this.#vbFreeCount[b]! + this.#vbDirtyCount[b]! === bp && this.#vbDirtyCount[b]! > 0) {
        this.#vbFreeCount[b] = 0; // no more allocations from it
        this.#vbDirtyCount[b] = bp;
        this.#allocMap.fill(-1, b * words, (b + 1) * words);
        this.#dirtyMap.fill(-1, b * words, (b + 1) * words);
        this.#vbqRemove(cpu, b);
        Atomics.store(this.#vbState, b, 0);
        found.push(this.#blockVa(b));
      }
      this.#unlock(this.#vbLock, b);
      b = next;
    }
    this.#unlock(q, cpu);
    let nr = Atomics.load(this.#hdr, H_LAZY_NR);
    for (const bva of found) nr = this.#releaseBlockArea(bva, checkLimit);
    return nr;
  }

  /** new_vmap_block: a block-aligned area for cpu, its first region taken. va or -ENOMEM. */
  #newVmapBlock(cpu: number, order: number): number {
    const bp = this.vmapBlockPages;
    const bs = this.#blockSize;
    const slot = this.#allocVmapArea(bs, bs, this.vmallocStart, this.vmallocEnd, VA_VMAP_BLOCK);
    if (slot < 0) return slot;
    const va = this.#aStart[slot]!;
    const b = this.#blockOf(va);
    this.#aNrPages[slot] = bp;
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
      this.#lock(this.#vbqLock, cpu);
      this.#vbqAdd(cpu, b);
      this.#unlock(this.#vbqLock, cpu);
    }
    return va;
  }

  /**
   * vb_free: the region becomes dirty. Lazy: its PTEs stay (pre-2.6.37) until the block is
   * fully dirty and purged, or vmUnmapAliases. Eager: cleared and flushed now.
   */
  #vbFree(va: number, count: number): number {
    const order = orderOf(count);
    const n = 1 << order;
    const b = Number.isSafeInteger(va) && va % PAGE_SIZE === 0 ? this.#blockOf(va) : -1;
    if (b < 0 || Atomics.load(this.#vbState, b) === 0) {
      return this.#misuse(`Trying to vm_unmap_ram() nonexistent mapping (${this.#fmt(va)})`);
    }
    const h = this.#hdr;
    const kpt = this.#kpt;
    const pool = this.#pool;
    this.#lock(this.#vbLock, b);
    const bva = this.#blockVa(b);
    const p = (va - bva) / PAGE_SIZE;
    if (this.#vbState[b] === 0 || this.#regionMap[b * this.vmapBlockPages + p] !== order + 1) {
      this.#unlock(this.#vbLock, b);
      return this.#misuse(`vm_unmap_ram(${this.#fmt(va)}, ${count}): not a live vm_map_ram mapping of that size`);
    }
    this.#regionMap[b * this.vmapBlockPages + p] = 0;
    this.#setBits(this.#dirtyMap, b, p, n, 1);
    this.#vbDirtyCount[b] = this.#vbDirtyCount[b]! + n;
    const base = this.#poolIndex(bva) + p;
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
    if (!eager) this.#addLazyPages(mapped);
    const full = this.#vbDirtyCount[b] === this.vmapBlockPages;
    if (full) Atomics.store(this.#vbState, b, 0);
    this.#unlock(this.#vbLock, b);
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
    const h = this.#hdr;
    const lazy = Atomics.load(h, H_STRATEGY) === STRATEGY_LAZY;
    this.#lock(h, H_VMAP_AREA_LOCK);
    const s = this.#slotAt(bva);
    this.#aFlags[s] = this.#aFlags[s]! | (lazy ? VM_LAZY_FREE : VM_LAZY_FREEING);
    const nr = lazy ? this.#lazyListAdd(s, this.vmapBlockPages) : Atomics.load(h, H_LAZY_NR);
    this.#unlock(h, H_VMAP_AREA_LOCK);
    Atomics.add(h, C_BLOCKS_FREED, 1);
    if (!lazy) this.#unmapEager(s, false);
    else if (checkLimit) this.#purgeIfOverLimit(nr);
    return nr;
  }

  /* ---- alias queries ------------------------------------------------------------ */

  #aliases(match: (pfn: number) => boolean, lazyOnly: boolean): VmapAlias[] {
    const out: VmapAlias[] = [];
    const h = this.#hdr;
    const pool = this.#pool;
    this.#lock(h, H_VMAP_AREA_LOCK);
    for (let s = h[H_HEAD]!; s >= 0; s = this.#aNext[s]!) {
      const f = this.#aFlags[s]!;
      const isLazy = (f & (VM_LAZY_FREE | VM_LAZY_FREEING)) !== 0;
      if (lazyOnly && !isLazy) {
        if (!(f & VA_VMAP_BLOCK)) continue; // a live block may hold dirty regions
      }
      const st = this.#aStart[s]!;
      const en = this.#aEnd[s]!;
      const idx = this.#poolIndex(st);
      const pages = (en - st) / PAGE_SIZE;
      const b = f & VA_VMAP_BLOCK && !isLazy ? this.#blockOf(st) : -1;
      for (let p = 0; p < pages; p++) {
        const pfn = pool[idx + p]!;
        if (pfn < 0 || !match(pfn)) continue;
        let kind: VmapAliasKind;
        if (isLazy) kind = 'lazy';
        else if (b >= 0) kind = this.#testBit(this.#dirtyMap, b, p) ? 'vmap-block-dirty' : 'vmap-block';
        else kind = 'live';
        if (lazyOnly && kind !== 'lazy' && kind !== 'vmap-block-dirty') continue;
        out.push({ va: st + p * PAGE_SIZE, areaStart: st, areaEnd: en, kind });
      }
    }
    this.#unlock(h, H_VMAP_AREA_LOCK);
    return out;
  }
}
