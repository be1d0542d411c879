/*
 * mm/vmalloc: the guest kernel's vmalloc space, after Nick Piggin's vmap layer of Linux
 * 2.6.28 ("mm: rewrite vmap layer"), in the pre-2.6.37 form where a lazy vunmap leaves the
 * PTEs in place until the purge -- the form in which a Xen PV guest can see it.
 *
 * This file is the facade: vmap/vunmap, vmap_pages, vmalloc/vfree, vm_map_ram and
 * vm_unmap_aliases, the queries and the self-check. The machinery is in three files, each
 * opening with its own invariants:
 *   - vmap_area.ts: the vmap_area allocator (first fit with 2.6.36's free_vmap_cache) and
 *     the lazy purge; also the eager strategy, which is that allocator without the lazy
 *     list, not a layer of its own;
 *   - vmap_block.ts: the per-CPU vmap blocks of vm_map_ram;
 *   - vmalloc_layout.ts: the one SharedArrayBuffer they share (header words, columns).
 *
 * ----------------------------------------------------------------------------------------
 * The 2007 bug, and the cures this layer offers
 * ----------------------------------------------------------------------------------------
 * When a PAGE may be freed (given back to the page allocator) is the caller's business,
 * and here is the bug: vunmap returns at once, the caller frees its pages, and the lazy
 * PTEs keep writable aliases of free pages -- of page tables, once the pages are reused
 * as such, which Xen refuses to pin. vfree frees its own pages right after the lazy unmap,
 * exactly as 2.6.28 did. The cures:
 *   - strategy 'eager' (pre-2.6.28 / Jeremy's CONFIG_XEN workaround): vunmap clears the
 *     PTEs and flushes before it returns; costs one shootdown per vunmap.
 *   - vmapPages/vunmapPages (Dave Chinner): every mapped page holds a reference (getPage)
 *     that is dropped only after its PTE is cleared AND flushed (at the purge, when lazy).
 *     A page mapped by vmapPages can therefore never reach the allocator while an alias
 *     exists.
 *   - vmUnmapAliases(): purge everything now, plus the dirty parts of vmap blocks, with a
 *     forced flush. After it returns no lazily aliased page remains in any PTE or TLB.
 *
 * Locks (guest/mm/spinlock.ts on Int32 words of the shared buffer), in this order:
 *   purge_lock -> vbq lock (per CPU) -> vmap_block lock -> vmap_area_lock.
 * No shootdown is issued under vmap_area_lock or a block lock; the purge issues its one
 * flush under purge_lock, so a vCPU waiting for purge_lock must keep serving flush IPIs:
 * deps.onSpin.
 */
import { ENOMEM, PAGE_SIZE } from '../../src/abi/xen.js';
import { MAX_VCPUS_PER_DOMAIN, type VirtualLayout } from '../../src/abi/layout.js';
import {
  attachColumns,
  attachHeaders,
  createColumns,
  SharedKernelCtx,
  type SharedKernelDeps,
} from '../lib/shared_columns.js';
import { PAGE_KERNEL, type KernelPageTables, type PageAllocator, type PageRefs } from './kernel_pt.js';
import {
  C_ALLOC_FAILURES,
  C_BLOCKS_FREED,
  C_BLOCKS_NEW,
  C_FLUSHES,
  C_LAZY_PAGES,
  C_LAZY_PEAK,
  C_MISUSE,
  C_PTES_CLEARED,
  C_PTES_SET,
  C_PURGE_SKIPPED,
  C_PURGES,
  C_RAM_MAPS,
  C_RAM_UNMAPS,
  C_REF_PAGES,
  C_ALLOC_RETRIES,
  C_UNMAP_ALIASES,
  C_VFREES,
  C_VMALLOCS,
  C_VMAPS,
  C_VUNMAPS,
  F_BLOCK_IDX_BASE,
  F_VMALLOC_END,
  F_VMALLOC_START,
  H_BLOCK_PAGES,
  H_LAZY_MAX,
  H_LAZY_NR,
  H_MAX_AREAS,
  H_NR_AREAS,
  H_NR_BLOCKS,
  H_NUM_CPUS,
  H_POOL_PAGES,
  H_PURGE_LOCK,
  H_STRATEGY,
  H_VA_BITS,
  H_VMAP_AREA_LOCK,
  HDR_F64,
  HDR_WORDS,
  readGeometry,
  STRATEGY_EAGER,
  STRATEGY_LAZY,
  vmallocColumns,
  type VmallocGeometry,
} from './vmalloc_layout.js';
import {
  VA_RAM,
  VA_VMAP_BLOCK,
  VM_ALLOC,
  VM_HOLD_REFS,
  VM_IOREMAP,
  VM_LAZY_FREE,
  VM_LAZY_FREEING,
  VM_MAP,
  VM_USERMAP,
  VM_VM_AREA,
  VM_VPAGES,
} from './vmalloc_flags.js';
import { isPow2, type VmapAreaInfo, VmapAreas } from './vmap_area.js';
import { VMAP_BBMAP_BITS_MAX, VMAP_BBMAP_BITS_MIN, VmapBlocks } from './vmap_block.js';

export { H_PURGE_LOCK, H_VMAP_AREA_LOCK } from './vmalloc_layout.js';
export * from './vmalloc_flags.js';
export type { VmapAreaInfo } from './vmap_area.js';
export { VMAP_BBMAP_BITS_MAX, VMAP_BBMAP_BITS_MIN, VMAP_MAX_ALLOC } from './vmap_block.js';

/** What vmap accepts (VM_ALLOC is vmalloc's: its pages are vfree's to free). */
const VMAP_FLAGS_ACCEPTED = VM_IOREMAP | VM_MAP | VM_USERMAP | VM_VPAGES | VM_HOLD_REFS;

/** VMALLOC_OFFSET: the hole between the direct map's end and VMALLOC_START on i386. */
export const VMALLOC_OFFSET = 8 * 1024 * 1024;
/** Linux x86_64 VMALLOC_START (2.6.31+), as a 48-bit VA. */
export const X86_64_VMALLOC_START = 0xc90000000000;
/** Default managed window on x86_64 (see the pool comment in vmap_area.ts). */
export const X86_64_VMALLOC_WINDOW = 1024 * 1024 * 1024;
/** Largest pool this model accepts (pages): 16 GiB of vmalloc space, a 16 MiB column. */
export const MAX_POOL_PAGES = 1 << 22;

export type VunmapStrategy = 'lazy' | 'eager';

/** fls(): 1-based index of the most significant set bit, 0 for 0. */
export function fls(x: number): number {
  return x === 0 ? 0 : 32 - Math.clz32(x);
}

/** lazy_max_pages() for a number of online CPUs: fls(cpus) * (32 MiB / PAGE_SIZE). */
export function lazyMaxPagesFor(numOnlineCpus: number): number {
  return fls(numOnlineCpus) * ((32 * 1024 * 1024) / PAGE_SIZE);
}

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

/**
 * cpu is also vm_map_ram's default CPU; onSpin matters most for purge_lock, which a purge
 * holds across its shootdown.
 */
export interface VmallocDeps extends SharedKernelDeps {
  /** This vCPU's kernel page tables. */
  kpt: KernelPageTables;
  /** get_page/put_page (vmapPages). */
  refs: PageRefs;
  /** alloc_page/__free_page (vmalloc/vfree). */
  allocator: PageAllocator;
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

export type VmapAliasKind = 'live' | 'lazy' | 'vmap-block' | 'vmap-block-dirty';

export interface VmapAlias {
  /** The page's va inside the area. */
  va: number;
  areaStart: number;
  areaEnd: number;
  kind: VmapAliasKind;
}

const floorPow2 = (x: number): number => (x < 1 ? 0 : 2 ** Math.floor(Math.log2(x)));

export class VmallocSpace {
  readonly sab: SharedArrayBuffer;
  /** The Int32 header (locks at H_VMAP_AREA_LOCK / H_PURGE_LOCK; for tests and tools). */
  readonly header: Int32Array;
  /** This vCPU (deps.cpu). */
  readonly cpu: number;
  readonly vmallocStart: number;
  readonly vmallocEnd: number;
  readonly maxAreas: number;
  readonly poolPages: number;
  readonly numOnlineCpus: number;
  /** VMAP_BBMAP_BITS: pages per vmap block. */
  readonly vmapBlockPages: number;
  readonly #ctx: SharedKernelCtx;
  readonly #kpt: KernelPageTables;
  readonly #refs: PageRefs;
  readonly #allocator: PageAllocator;
  readonly #hdr: Int32Array;
  readonly #areas: VmapAreas;
  readonly #blocks: VmapBlocks;

  /** Recent kernel-style messages from this vCPU (bounded). */
  get messages(): string[] {
    return this.#ctx.log.lines;
  }

  /* ------------------------------------------------------------ construction */

  /** Create the shared state (validating the config) and this vCPU's handle on it. */
  static create(config: VmallocConfig, deps: VmallocDeps): VmallocSpace {
    const g = VmallocSpace.#geometry(config);
    const { sab, cols } = createColumns(vmallocColumns(g.geometry));
    const { hdr, f64 } = cols;
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
    vm.#areas.init();
    vm.#blocks.init();
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
    const geometry: VmallocGeometry = {
      maxAreas,
      poolPages,
      nrBlocks,
      blockPages,
      blockWords: Math.ceil(blockPages / 32),
      numCpus: cpus,
    };
    return { start, end, lazyMax, blockPages, blockIdxBase, geometry };
  }

  private constructor(sab: SharedArrayBuffer, deps: VmallocDeps) {
    this.sab = sab;
    SharedKernelCtx.check(deps);
    this.cpu = deps.cpu;
    this.#kpt = deps.kpt;
    this.#refs = deps.refs;
    this.#allocator = deps.allocator;
    const { hdr, f64 } = attachHeaders(sab, HDR_WORDS, HDR_F64, 'VmallocSpace');
    const geometry = readGeometry(hdr);
    const cols = attachColumns(sab, vmallocColumns(geometry), 'VmallocSpace');
    this.#hdr = this.header = cols.hdr;
    this.#ctx = SharedKernelCtx.forVcpu(deps, cols.hdr, C_MISUSE, H_VA_BITS);
    this.vmallocStart = f64[F_VMALLOC_START]!;
    this.vmallocEnd = f64[F_VMALLOC_END]!;
    this.maxAreas = geometry.maxAreas;
    this.poolPages = geometry.poolPages;
    this.numOnlineCpus = geometry.numCpus;
    this.vmapBlockPages = geometry.blockPages;
    this.#areas = new VmapAreas(cols, this.#ctx, deps, this.vmallocStart, this.vmallocEnd);
    this.#blocks = new VmapBlocks(cols, this.#ctx, deps.kpt, this.#areas, {
      blockPages: geometry.blockPages,
      blockWords: geometry.blockWords,
      blockIdxBase: f64[F_BLOCK_IDX_BASE]!,
      numCpus: geometry.numCpus,
    });
    const blocks = this.#blocks;
    this.#areas.setPurgeFragmentedBlocks(() => blocks.purgeFragmentedBlocksAllCpus());
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
      const ctx = this.#ctx;
      return ctx.misuse(
        `alloc_vmap_area: bad request size ${size} align ${align} range ${ctx.fmt(vstart)}-${ctx.fmt(vend)}`,
      );
    }
    const slot = this.#areas.allocVmapArea(size, align, vstart, vend, 0);
    return slot < 0 ? slot : this.#areas.aStart[slot]!;
  }

  /**
   * free_vmap_area: give back an area from allocVmapArea at once. The caller has cleared
   * and flushed any mapping it made there. Returns 0 or -EINVAL.
   */
  freeVmapArea(va: number): number {
    const h = this.#hdr;
    const ctx = this.#ctx;
    const areas = this.#areas;
    ctx.lock(h, H_VMAP_AREA_LOCK);
    const slot = areas.__slotAt(va);
    if (slot < 0 || areas.aFlags[slot] !== 0) {
      ctx.unlock(h, H_VMAP_AREA_LOCK);
      return ctx.misuse(`free_vmap_area: no raw vmap area at ${ctx.fmt(va)}`);
    }
    areas.__freeVmapArea(slot);
    ctx.unlock(h, H_VMAP_AREA_LOCK);
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
      return this.#ctx.misuse(
        `vmap: flags ${flags} not accepted (VM_IOREMAP|VM_MAP|VM_USERMAP|VM_VPAGES|VM_HOLD_REFS)`,
      );
    }
    const areas = this.#areas;
    const slot = areas.getVmArea(count, flags, prot);
    if (slot < 0) return slot;
    if (flags & VM_HOLD_REFS) {
      for (let i = 0; i < count; i++) this.#refs.getPage(pages[i]!);
      Atomics.add(this.#hdr, C_REF_PAGES, count);
    }
    areas.mapPages(areas.aStart[slot]!, pages, count, prot);
    Atomics.add(this.#hdr, C_VMAPS, 1);
    return areas.aStart[slot]!;
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
    if (!Number.isSafeInteger(size) || size <= 0) return this.#ctx.misuse(`vmalloc: bad size ${size}`);
    const areas = this.#areas;
    const count = Math.ceil(size / PAGE_SIZE);
    const slot = areas.getVmArea(count, VM_ALLOC, PAGE_KERNEL);
    if (slot < 0) return slot;
    const va = areas.aStart[slot]!;
    const idx = areas.poolIndex(va);
    const pool = areas.pool;
    for (let i = 0; i < count; i++) {
      const pfn = this.#allocator.allocPage();
      if (pfn < 0) {
        // Nothing is mapped yet: give the pages and the area back at once.
        for (let j = 0; j < i; j++) {
          this.#allocator.freePage(pool[idx + j]!);
          pool[idx + j] = -1;
        }
        areas.freeVmapArea(slot);
        Atomics.add(this.#hdr, C_ALLOC_FAILURES, 1);
        this.#ctx.printk(`vmalloc: allocation failure, allocated ${i * PAGE_SIZE} of ${count * PAGE_SIZE} bytes`);
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
    this.#areas.purgeVmapAreaLazy(true, false, Infinity, -Infinity);
  }

  /** try_purge_vmap_area_lazy: purge unless another purge is running. */
  tryPurgeVmapAreaLazy(): void {
    this.#areas.purgeVmapAreaLazy(false, false, Infinity, -Infinity);
  }

  /**
   * vm_unmap_aliases: clear the dirty regions of every vmap block, then purge
   * synchronously with a forced flush. Afterwards no page that has been unmapped through
   * this layer is reachable through any PTE or TLB entry of the vmalloc space.
   */
  vmUnmapAliases(): void {
    const { start, end } = this.#blocks.clearDirtyRegions();
    Atomics.add(this.#hdr, C_UNMAP_ALIASES, 1);
    this.#areas.purgeVmapAreaLazy(true, true, start, end);
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
      return this.#ctx.misuse(`vm_map_ram: bad cpu ${cpu}`);
    }
    const areas = this.#areas;
    let va: number;
    if (this.#blocks.usesBlock(count)) {
      va = this.#blocks.vbAlloc(count, cpu);
    } else {
      const slot = areas.allocVmapArea(count * PAGE_SIZE, PAGE_SIZE, this.vmallocStart, this.vmallocEnd, VA_RAM);
      if (slot >= 0) {
        areas.aNrPages[slot] = count;
        areas.aProt[slot] = prot;
      }
      va = slot < 0 ? slot : areas.aStart[slot]!;
    }
    if (va < 0) return va;
    areas.mapPages(va, pages, count, prot);
    Atomics.add(this.#hdr, C_RAM_MAPS, 1);
    return va;
  }

  /** vm_unmap_ram: release a vmMapRam mapping of count pages. 0 or -EINVAL. */
  vmUnmapRam(va: number, count: number): number {
    if (!Number.isInteger(count) || count < 1 || count > this.poolPages) {
      return this.#ctx.misuse(`vm_unmap_ram: bad count ${count}`);
    }
    const rc = this.#blocks.usesBlock(count) ? this.#blocks.vbFree(va, count) : this.#unmapArea(va, 'vm_unmap_ram');
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
    return this.#areas.findVmapArea(va);
  }

  /** Every area in address order (a snapshot; for tests and tools). */
  areas(): VmapAreaInfo[] {
    return this.#areas.areas();
  }

  /** The pfns mapped at [va, va + count pages) as this layer installed them (-1: none). */
  pagesAt(va: number, count: number): number[] {
    const idx = this.#areas.poolIndex(va);
    const out: number[] = [];
    for (let i = 0; i < count; i++) out.push(this.#areas.pool[idx + i] ?? -1);
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
    const { order, lazyNr, lazyPages, refPages } = this.#areas.checkInvariants(bad);
    const blockLazyPages = this.#blocks.checkInvariants(bad, order);
    if (h[H_LAZY_NR] !== lazyNr) bad.push(`vmap_lazy_nr ${h[H_LAZY_NR]} != ${lazyNr} pages in lazy areas`);
    const left = lazyPages + blockLazyPages;
    if (h[C_LAZY_PAGES] !== left) bad.push(`lazy pages ${h[C_LAZY_PAGES]} != ${left} PTEs left by unmaps`);
    if (h[C_REF_PAGES] !== refPages) bad.push(`held references ${h[C_REF_PAGES]} != ${refPages}`);
    if (h[H_VMAP_AREA_LOCK] !== 0 || h[H_PURGE_LOCK] !== 0) bad.push('a lock is held');
    return bad;
  }

  /* ============================================================== internals */

  /** Arguments a caller can get wrong. A count too big for the window is -ENOMEM, later. */
  #checkPages(pages: ArrayLike<number>, count: number, caller: string): number {
    if (!Number.isInteger(count) || count < 1 || count > 0x7fffffff || pages.length < count) {
      return this.#ctx.misuse(`${caller}: bad page count ${count} (${pages.length} pages given)`);
    }
    for (let i = 0; i < count; i++) {
      const pfn = pages[i]!;
      if (!Number.isInteger(pfn) || pfn < 0 || pfn > 0x7fffffff) {
        return this.#ctx.misuse(`${caller}: bad pfn ${pfn} at ${i}`);
      }
    }
    return 0;
  }

  /**
   * The common tail of vunmap, vunmap_pages, vfree and the large vm_unmap_ram: find the
   * area, check it is the caller's kind, detach it, then unmap it eagerly or lazily.
   */
  #unmapArea(va: number, caller: 'vunmap' | 'vunmap_pages' | 'vfree' | 'vm_unmap_ram'): number {
    const h = this.#hdr;
    const ctx = this.#ctx;
    const areas = this.#areas;
    if (!Number.isSafeInteger(va) || va % PAGE_SIZE !== 0) {
      return ctx.misuse(`Trying to ${caller}() bad address (${ctx.fmt(va)})`);
    }
    const lazy = Atomics.load(h, H_STRATEGY) === STRATEGY_LAZY;
    ctx.lock(h, H_VMAP_AREA_LOCK);
    const s = areas.__slotAt(va);
    const f = s < 0 ? 0 : areas.aFlags[s]!;
    const vf = s < 0 ? 0 : areas.aVmFlags[s]!;
    let why = '';
    if (caller === 'vm_unmap_ram') {
      if (!(f & VA_RAM) || f & (VM_LAZY_FREE | VM_LAZY_FREEING)) {
        why = `Trying to vm_unmap_ram() nonexistent mapping (${ctx.fmt(va)})`;
      }
    } else if (!(f & VM_VM_AREA)) {
      why = `Trying to ${caller}() nonexistent vm area (${ctx.fmt(va)})`;
    } else if (caller === 'vfree' && !(vf & VM_ALLOC)) {
      why = `vfree(${ctx.fmt(va)}): not a vmalloc area (use vunmap)`;
    } else if (caller !== 'vfree' && vf & VM_ALLOC) {
      why = `${caller}(${ctx.fmt(va)}): a vmalloc area (use vfree)`;
    } else if (caller === 'vunmap_pages' && !(vf & VM_HOLD_REFS)) {
      why = `vunmap_pages(${ctx.fmt(va)}): not mapped by vmap_pages (use vunmap)`;
    }
    if (why !== '') {
      ctx.unlock(h, H_VMAP_AREA_LOCK);
      return ctx.misuse(why);
    }
    // Detached: VM_LAZY_FREEING is "being unmapped by its owner"; no purge takes it.
    areas.aFlags[s] = (f & ~VM_VM_AREA) | VM_LAZY_FREEING;
    ctx.unlock(h, H_VMAP_AREA_LOCK);

    const freePages = caller === 'vfree';
    if (lazy) {
      // 2.6.28: the pages go back now, the PTEs stay until the purge.
      const nr = areas.unmapLazy(s, freePages);
      this.#countUnmap(caller);
      areas.purgeIfOverLimit(nr);
    } else {
      areas.unmapEager(s, freePages);
      this.#countUnmap(caller);
    }
    return 0;
  }

  #countUnmap(caller: string): void {
    if (caller === 'vfree') Atomics.add(this.#hdr, C_VFREES, 1);
    else if (caller !== 'vm_unmap_ram') Atomics.add(this.#hdr, C_VUNMAPS, 1);
  }

  #aliases(match: (pfn: number) => boolean, lazyOnly: boolean): VmapAlias[] {
    const out: VmapAlias[] = [];
    const h = this.#hdr;
    const ctx = this.#ctx;
    const areas = this.#areas;
    const blocks = this.#blocks;
    const pool = areas.pool;
    ctx.lock(h, H_VMAP_AREA_LOCK);
    for (let s = areas.__head(); s >= 0; s = areas.aNext[s]!) {
      const f = areas.aFlags[s]!;
      const isLazy = (f & (VM_LAZY_FREE | VM_LAZY_FREEING)) !== 0;
      if (lazyOnly && !isLazy) {
        if (!(f & VA_VMAP_BLOCK)) continue; // a live block may hold dirty regions
      }
      const st = areas.aStart[s]!;
      const en = areas.aEnd[s]!;
      const idx = areas.poolIndex(st);
      const pages = (en - st) / PAGE_SIZE;
      const b = f & VA_VMAP_BLOCK && !isLazy ? blocks.blockOf(st) : -1;
      for (let p = 0; p < pages; p++) {
        const pfn = pool[idx + p]!;
        if (pfn < 0 || !match(pfn)) continue;
        let kind: VmapAliasKind;
        if (isLazy) kind = 'lazy';
        else if (b >= 0) kind = blocks.isDirty(b, p) ? 'vmap-block-dirty' : 'vmap-block';
        else kind = 'live';
        if (lazyOnly && kind !== 'lazy' && kind !== 'vmap-block-dirty') continue;
        out.push({ va: st + p * PAGE_SIZE, areaStart: st, areaEnd: en, kind });
      }
    }
    ctx.unlock(h, H_VMAP_AREA_LOCK);
    return out;
  }
}
