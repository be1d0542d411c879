/*
 * The guest kernel's page allocator: zones, a binary buddy allocator per zone, per-CPU
 * hot/cold page lists, all in one SharedArrayBuffer shared by the domain's vCPU workers.
 *
 * Invariants
 * ----------
 * struct page (page.ts):
 *  - _count is the number of references. A free page has 0. An allocated block has 1 on
 *    its first page and 0 on the others; with __GFP_COMP the others are tails and every
 *    get_page/put_page on a tail goes to the head. A 0-order page inside a live block that
 *    is not compound must never reach 0 from 1 (the ALSA bug: it would be freed while the
 *    block lives). When a count reaches 0 the page goes back here, never earlier.
 *  - _mapcount is the number of ptes mapping the page minus one: -1 = unmapped. It must be
 *    -1 when the page is freed.
 *  - mapping is 0 (NULL) on every free page and at free time.
 *
 * Where a free page is (exactly one of):
 *  - the head of a free buddy block of order k: PG_buddy set, order column = k, linked in
 *    zone->free_area[k] through lruNext/lruPrev;
 *  - inside such a block (not a head): no mark, no links;
 *  - on CPU c's per-CPU list of its zone: PG_pcp set, order 0, linked through lruNext/lruPrev.
 * zone->free_pages counts the buddy pages only; nrFreePages() adds the per-CPU lists.
 * A buddy block never crosses its zone's bounds; zones need not be MAX_ORDER aligned
 * because a buddy is merged only when its head lies in the same zone.
 *
 * Who may touch what:
 *  - zone->lock guards the zone's free_area lists, nr_free and free_pages, and the lru
 *    links, PG_buddy and order of the pages on them.
 *  - A per-CPU list (count, head, tail and the links of its pages) is touched only by its
 *    own CPU, without a lock: every worker uses its own vCPU number as `cpu`, one thread per
 *    number. Pages move between a per-CPU list and the buddy lists only under zone->lock.
 *    Another CPU's list is never drained from outside (Linux drains remote lists by IPI;
 *    here a vCPU drains its own, e.g. from a shrinker or its interrupt path).
 *  - Callbacks (zeroPage, shrinkers, wakeupKswapd, onReport) run with no lock held.
 *  - The fields of an allocated page belong to its owner.
 *
 * Reports, not exceptions: a page in a bad state at free or at allocation is reported by
 * badPage with Linux's text and "fixed up" as 2.6.15 did (flags cleared, counts reset); a
 * page found with PG_reserved (or a compound mark, at an order-0 free) is reported and not
 * freed, and a page that is already free is reported and left alone, so the free lists stay
 * consistent. Caller errors (bad GFP bits, order, cpu, pfn) are a WARNING and NULL, as in
 * Linux; RangeError is for the host's configuration only.
 */
import { type PagingMode, PAGE_SIZE } from '../../src/abi/xen.js';
import { layoutFor } from '../../src/abi/layout.js';
import {
  MAX_NR_ZONES,
  MemMap,
  PAGE_MAPPING_ANON,
  PG_active,
  PG_arch_1,
  PG_buddy,
  PG_checked,
  PG_dirty,
  PG_error,
  PG_head,
  PG_locked,
  PG_lru,
  PG_mappedtodisk,
  PG_pcp,
  PG_pinned,
  PG_private,
  PG_reclaim,
  PG_referenced,
  PG_reserved,
  PG_slab,
  PG_swapcache,
  PG_tail,
  PG_uptodate,
  PG_writeback,
  ZONES_PGSHIFT,
  ZONE_DMA,
  ZONE_HIGHMEM,
  ZONE_NAMES,
  ZONE_NORMAL,
  formatPageFlags,
  formatPointer,
  memMapLayout,
  pagePointer,
  type PageFreer,
} from './page.js';
import { spinLock, spinUnlock } from './spinlock.js';

/* ---------------------------------------------------------------- GFP flags */

export const __GFP_DMA = 0x01;
export const __GFP_HIGHMEM = 0x02;
export const __GFP_WAIT = 0x10;
export const __GFP_HIGH = 0x20;
export const __GFP_IO = 0x40;
export const __GFP_FS = 0x80;
export const __GFP_COLD = 0x100;
export const __GFP_NOWARN = 0x200;
export const __GFP_REPEAT = 0x400;
export const __GFP_NOFAIL = 0x800;
export const __GFP_NORETRY = 0x1000;
export const __GFP_NO_GROW = 0x2000;
export const __GFP_COMP = 0x4000;
export const __GFP_ZERO = 0x8000;
export const __GFP_NOMEMALLOC = 0x10000;
export const __GFP_HARDWALL = 0x20000;
export const __GFP_THISNODE = 0x40000;
/*
 * 2.6.24's values: grouping by mobility added __GFP_RECLAIMABLE at 0x80000 and moved
 * __GFP_MOVABLE (0x80000 in 2.6.23, the seed's value) up to 0x100000.
 */
export const __GFP_RECLAIMABLE = 0x80000;
export const __GFP_MOVABLE = 0x100000;
export const __GFP_BITS_SHIFT = 21;
/** GFP_MOVABLE_MASK: the bits gfpflags_to_migratetype reads. */
export const GFP_MOVABLE_MASK = __GFP_RECLAIMABLE | __GFP_MOVABLE;
/** 0x04 (__GFP_DMA32) and 0x08 name no zone this guest has. */
export const GFP_VALID_MASK = ((1 << __GFP_BITS_SHIFT) - 1) & ~0x0c;

export const GFP_NOWAIT = 0;
export const GFP_ATOMIC = __GFP_HIGH;
export const GFP_NOIO = __GFP_WAIT;
export const GFP_NOFS = __GFP_WAIT | __GFP_IO;
export const GFP_KERNEL = __GFP_WAIT | __GFP_IO | __GFP_FS;
export const GFP_USER = GFP_KERNEL | __GFP_HARDWALL;
export const GFP_HIGHUSER = GFP_USER | __GFP_HIGHMEM;
export const GFP_HIGHUSER_MOVABLE = GFP_HIGHUSER | __GFP_MOVABLE;
export const GFP_DMA = __GFP_DMA;
/** Slab caches with SLAB_RECLAIM_ACCOUNT (dentries, inodes, XFS buffers' pages in 2.6.24). */
export const GFP_NOFS_RECLAIMABLE = GFP_NOFS | __GFP_RECLAIMABLE;

const GFP_BIT_NAMES: readonly [number, string][] = [
  [__GFP_DMA, '__GFP_DMA'],
  [__GFP_HIGHMEM, '__GFP_HIGHMEM'],
  [__GFP_WAIT, '__GFP_WAIT'],
  [__GFP_HIGH, '__GFP_HIGH'],
  [__GFP_IO, '__GFP_IO'],
  [__GFP_FS, '__GFP_FS'],
  [__GFP_COLD, '__GFP_COLD'],
  [__GFP_NOWARN, '__GFP_NOWARN'],
  [__GFP_REPEAT, '__GFP_REPEAT'],
  [__GFP_NOFAIL, '__GFP_NOFAIL'],
  [__GFP_NORETRY, '__GFP_NORETRY'],
  [__GFP_NO_GROW, '__GFP_NO_GROW'],
  [__GFP_COMP, '__GFP_COMP'],
  [__GFP_ZERO, '__GFP_ZERO'],
  [__GFP_NOMEMALLOC, '__GFP_NOMEMALLOC'],
  [__GFP_HARDWALL, '__GFP_HARDWALL'],
  [__GFP_THISNODE, '__GFP_THISNODE'],
  [__GFP_RECLAIMABLE, '__GFP_RECLAIMABLE'],
  [__GFP_MOVABLE, '__GFP_MOVABLE'],
];

/** "GFP_KERNEL|__GFP_ZERO"-style name of a mask (the composite names first). */
export function gfpName(gfp: number): string {
  const out: string[] = [];
  let rest = gfp;
  for (const [v, n] of [
    [GFP_HIGHUSER_MOVABLE, 'GFP_HIGHUSER_MOVABLE'],
    [GFP_HIGHUSER, 'GFP_HIGHUSER'],
    [GFP_USER, 'GFP_USER'],
    [GFP_KERNEL, 'GFP_KERNEL'],
    [GFP_NOFS, 'GFP_NOFS'],
  ] as const) {
    if ((rest & v) === v) {
      out.push(n);
      rest &= ~v;
      break;
    }
  }
  for (const [v, n] of GFP_BIT_NAMES) if (rest & v) out.push(n);
  rest &= ~((1 << __GFP_BITS_SHIFT) - 1);
  if (rest) out.push(`0x${rest.toString(16)}`);
  return out.length ? out.join('|') : 'GFP_NOWAIT';
}

/** What is wrong with `gfp` (naming what is accepted), or null when nothing is. */
export function gfpError(gfp: number, fn: string): string | null {
  if (!Number.isInteger(gfp) || gfp < 0 || (gfp & ~GFP_VALID_MASK) !== 0) {
    const bad = Number.isInteger(gfp) ? `0x${(gfp & ~GFP_VALID_MASK).toString(16)}` : String(gfp);
    return (
      `${fn}: unknown GFP bits ${bad} in mode ${String(gfp)}; accepted: ` +
      GFP_BIT_NAMES.map(([v, n]) => `${n} 0x${v.toString(16)}`).join(', ')
    );
  }
  if ((gfp & (__GFP_DMA | __GFP_HIGHMEM)) === (__GFP_DMA | __GFP_HIGHMEM))
    return `${fn}: __GFP_DMA and __GFP_HIGHMEM together name no zone (mode 0x${gfp.toString(16)})`;
  return null;
}

/** Throws a RangeError naming what is wrong with `gfp` and what is accepted (for slab's own checks). */
export function checkGfp(gfp: number, fn: string): void {
  const why = gfpError(gfp, fn);
  if (why !== null) throw new RangeError(why);
}

/* --------------------------------------------------------------- constants */

export const MAX_ORDER = 11;

/*
 * Grouping pages by mobility (2.6.24, Mel Gorman). Every pageblock of 2^pageblock_order
 * pages has one migrate type; every zone has a free list per (order, type); a free block
 * goes on the list of its pageblock's type. An allocation takes from its own type's lists
 * first, then falls back in FALLBACKS order from the LARGEST block down, so that a
 * fallback splits as few pageblocks as possible; a fallback that takes a large block
 * (order >= pageblock_order / 2, or any block for a reclaimable allocation) moves every
 * free page of that pageblock to its own type, and relabels the pageblock when more than
 * half of it was free. MIGRATE_RESERVE blocks (the first min_free_kbytes' worth of each
 * zone, rounded up to whole blocks) are taken only when every other list is empty: they
 * stay whole for the high-order atomic allocations: only an allocation that cannot sleep
 * may take them (see __rmqueueFallback for how that differs from 2.6.24).
 * With mobility off (2.6.23), every block is UNMOVABLE and every allocation is too: one
 * list per order, exactly the allocator before grouping.
 */
export const MIGRATE_UNMOVABLE = 0;
export const MIGRATE_RECLAIMABLE = 1;
export const MIGRATE_MOVABLE = 2;
export const MIGRATE_RESERVE = 3;
export const MIGRATE_TYPES = 4;
/** Per-CPU lists exist for the first three types; a RESERVE page bypasses them. */
export const MIGRATE_PCPTYPES = 3;
export const MIGRATETYPE_NAMES = ['Unmovable', 'Reclaimable', 'Movable', 'Reserve'] as const;
/** fallbacks[]: the lists an allocation of each type falls back to, in order (RESERVE last). */
export const FALLBACKS: readonly (readonly number[])[] = [
  [MIGRATE_RECLAIMABLE, MIGRATE_MOVABLE, MIGRATE_RESERVE],
  [MIGRATE_UNMOVABLE, MIGRATE_MOVABLE, MIGRATE_RESERVE],
  [MIGRATE_RECLAIMABLE, MIGRATE_UNMOVABLE, MIGRATE_RESERVE],
  [MIGRATE_RESERVE, MIGRATE_RESERVE, MIGRATE_RESERVE], // never used
];
/** x86 without hugepages: pageblock_order = MAX_ORDER - 1 (4 MiB blocks). */
export const PAGEBLOCK_ORDER = 9;
/** Per-page record of how a block was allocated: not by the allocator (boot, reserved). */
export const ALLOC_MIGRATETYPE_NONE = 0xff;
/**
 * Who may not take a RESERVE block: a caller that may sleep (it reclaims instead), and one
 * that asked for no emergency reserves (__GFP_NOMEMALLOC: page migration's new pages).
 */
const RESERVE_DENY = __GFP_WAIT | __GFP_NOMEMALLOC;
/** SWAP_CLUSTER_MAX: LRU pages the reclaim scan looks at per call. */
export const SWAP_CLUSTER_MAX = 32;

/**
 * gfpflags_to_migratetype: __GFP_MOVABLE -> MOVABLE, __GFP_RECLAIMABLE -> RECLAIMABLE,
 * neither -> UNMOVABLE; everything UNMOVABLE when grouping is off. Both bits at once is a
 * caller's mistake (allocPages WARNs and refuses it before this is reached).
 */
export function gfpflagsToMigratetype(gfp: number, mobility: boolean): number {
  if (!mobility) return MIGRATE_UNMOVABLE;
  return ((gfp & __GFP_MOVABLE) !== 0 ? 2 : 0) | ((gfp & __GFP_RECLAIMABLE) !== 0 ? 1 : 0);
}
/** pfns of ZONE_DMA: the first 16 MiB. */
export const MAX_DMA_PFN = (16 * 1024 * 1024) / PAGE_SIZE;
/** Linux's SHRINK_BATCH: objects a shrinker is asked to scan per call. */
export const SHRINK_BATCH = 128;
/** Reclaim rounds (shrinkers + local drain) a sleeping allocation tries before failing. */
export const MAX_RECLAIM_ROUNDS = 8;
/** Reports kept in memory per opener (all are counted in the SAB). */
export const MAX_KEPT_REPORTS = 10_000;

/* alloc_flags of get_page_from_freelist, Linux's values. */
export const ALLOC_NO_WATERMARKS = 0x01;
export const ALLOC_WMARK_MIN = 0x02;
export const ALLOC_WMARK_LOW = 0x04;
export const ALLOC_WMARK_HIGH = 0x08;
export const ALLOC_HARDER = 0x10;
export const ALLOC_HIGH = 0x20;

const bit = (b: number): number => 1 << b;

/** What free_pages_check refuses (2.6.2x's list, plus pvmmu's below). */
export const PAGE_FLAGS_CHECK_AT_FREE =
  bit(PG_lru) |
  bit(PG_private) |
  bit(PG_locked) |
  bit(PG_active) |
  bit(PG_reclaim) |
  bit(PG_slab) |
  bit(PG_swapcache) |
  bit(PG_writeback) |
  bit(PG_reserved) |
  bit(PG_buddy) |
  /*
   * Xen: a page-table page still pinned when freed would come back as an ordinary page
   * that Xen still types as a page table. Linux leaves this to the pte_free paths.
   */
  bit(PG_pinned) |
  /* A compound mark at an order-0 free: part of a live compound page, or its head. */
  bit(PG_head) |
  bit(PG_tail);
/** What prep_new_page refuses: as at free, plus PG_dirty. */
export const PAGE_FLAGS_CHECK_AT_PREP = PAGE_FLAGS_CHECK_AT_FREE | bit(PG_dirty);
/** What bad_page clears ("fixes up"): 2.6.15's list (not PG_reserved), plus PG_pinned. */
export const PAGE_FLAGS_FIXUP =
  bit(PG_lru) |
  bit(PG_private) |
  bit(PG_locked) |
  bit(PG_active) |
  bit(PG_dirty) |
  bit(PG_reclaim) |
  bit(PG_slab) |
  bit(PG_swapcache) |
  bit(PG_writeback) |
  bit(PG_pinned);
/** Flags that keep a page from being freed after the report (2.6.15 leaked PG_reserved pages). */
export const PAGE_FLAGS_KEEP_AT_FREE = bit(PG_reserved) | bit(PG_head) | bit(PG_tail);
/** What prep_new_page clears on a page it hands out. */
export const PAGE_FLAGS_CLEAR_AT_PREP =
  bit(PG_uptodate) | bit(PG_error) | bit(PG_referenced) | bit(PG_arch_1) | bit(PG_checked) | bit(PG_mappedtodisk);

/* ------------------------------------------------------------------ reports */

export interface BadPageReport {
  kind: 'bad_page';
  /** bad_state: a check failed; double_free: the page was already free; compound: destroy_compound_page. */
  reason: 'bad_state' | 'double_free' | 'compound';
  function: string;
  comm: string;
  cpu: number;
  pfn: number;
  /** %p of the struct page. */
  page: string;
  flags: number;
  mapping: number;
  mapcount: number;
  count: number;
  lines: string[];
}

export interface AllocFailureReport {
  kind: 'page_allocation_failure';
  comm: string;
  cpu: number;
  order: number;
  gfpMask: number;
  lines: string[];
}

export interface SlabErrorReport {
  kind: 'slab_error';
  reason: 'double_free' | 'invalid_pointer' | 'not_slab';
  comm: string;
  cpu: number;
  cache: string;
  addr: number;
  pfn: number;
  lines: string[];
}

/** WARN_ON: a caller's mistake, or a broken invariant the debug checks found. */
export interface WarningReport {
  kind: 'warning';
  comm: string;
  cpu: number;
  function: string;
  pfn?: number;
  lines: string[];
}

export type MmReport = BadPageReport | AllocFailureReport | SlabErrorReport | WarningReport;

/* ----------------------------------------------------------------- shrinkers */

/**
 * A shrinker, with Linux 2.6.2x's contract: shrink(0, gfp) returns how many objects it
 * could free; shrink(n, gfp) frees up to n of them and returns how many remain, or -1 when
 * it cannot work under `gfp`. Called with no allocator lock held, on the allocating CPU.
 */
export interface Shrinker {
  readonly name: string;
  shrink(nrToScan: number, gfpMask: number, cpu: number): number;
}

/* ------------------------------------------------------------------- config */

export interface PageAllocConfig {
  nrPages: number;
  /** vCPUs that will use the allocator (cpu arguments are 0..nrCpus-1). */
  nrCpus: number;
  /** Default 'pae'. */
  paging?: PagingMode;
  /** pae: pfns below this are lowmem, above is ZONE_HIGHMEM. Default: what the direct map covers. */
  lowmemPages?: number;
  /** pfns below stay reserved with one reference (the domain builder's). Default 0. */
  firstFreePfn?: number;
  /** Linux's min_free_kbytes; 0 turns watermarks off. Default sqrt(16 x lowmem KiB) in [128, 65536]. */
  minFreeKbytes?: number;
  /** Per-CPU list batch and high mark; default zone_batchsize() and 6 x batch. */
  pcpBatch?: number;
  pcpHigh?: number;
  /** Group pages by mobility (2.6.24); false is 2.6.23 and earlier. Default false. */
  mobility?: boolean;
  /** pageblock_order: log2 of the pages of one pageblock. Default MAX_ORDER - 1. */
  pageblockOrder?: number;
}

export interface PageAllocHooks {
  /** Clear page `pfn` (through the MMU: the allocator does not own machine memory). */
  zeroPage(pfn: number): void;
  /** current->comm on `cpu`, for reports. Default 'swapper'. */
  comm?(cpu: number): string;
  /** Every report, as it is made. */
  onReport?(report: MmReport): void;
  /** Called while spinning on a lock (must not re-enter the allocator). */
  onSpin?(): void;
  /**
   * An allocation fell below pages_low. There is no kswapd thread: without this hook, a
   * context that may sleep (__GFP_WAIT) runs one reclaim round itself.
   */
  wakeupKswapd?(zone: number, order: number, cpu: number): void;
  /**
   * migrate_pages for one anonymous page (grouping by mobility: MOVABLE means it can
   * move): copy `pfn` to a new page outside [avoidStart, avoidEnd), repoint the pte that
   * maps it and free it. Called by lumpy reclaim with no allocator lock held; true when
   * the page moved. Without it, anonymous memory stays where it is (there is no swap).
   */
  migratePage?(pfn: number, avoidStart: number, avoidEnd: number, cpu: number): boolean;
  /** MemMap option: page_mapping() returns NULL for slab pages (default true). */
  slubPageMappingFix?: boolean;
}

/* ------------------------------------------------------------ the SAB layout */
/*
 * [header: HEADER_BYTES][mem_map columns][zones: MAX_NR_ZONES x ZONE_WORDS][pcp: zones x cpus x PCP_WORDS]
 * [pageblock types: one byte per pageblock][alloc migratetype: one byte per page]
 */
const MAGIC = 0x50414c43; // 'PALC'
const VERSION = 2;
export const HEADER_BYTES = 256;
const H_MAGIC = 0;
const H_VERSION = 1;
const H_NR_PAGES = 2;
const H_NR_CPUS = 3;
const H_PAGING = 4;
const H_LOWMEM = 5;
const H_FIRST_FREE = 6;
const H_NR_BAD_PAGES = 7;
const H_NR_ALLOC_FAILURES = 8;
const H_STATE_OFFSET = 9;
const H_READY = 10;
const H_MIN_FREE_KBYTES = 11;
const H_MOBILITY = 12;
const H_PAGEBLOCK_ORDER = 13;
/** Pages pinned as page tables or vmapped inside a MOVABLE block, allocated MOVABLE. */
const H_NR_MOBILITY_VIOLATIONS = 14;
/** __rmqueue_fallback calls that found a block, and pageblocks they relabelled. */
const H_NR_FALLBACKS = 15;
const H_NR_STEALS = 16;
/** Page-cache pages dropped by reclaim, and those taken as block-mates (lumpy). */
const H_NR_RECLAIMED = 17;
const H_NR_LUMPY = 18;
/** Anonymous pages lumpy reclaim moved out of its block (migratePage). */
const H_NR_MIGRATED = 19;

/*
 * Zone words. The lock sits alone in its cache line; the lock-guarded fields follow; the
 * LRU lock has a line of its own; then the free-list heads, one per (migrate type, order).
 */
const ZONE_WORDS = 128;
const Z_LOCK = 0;
const Z_FREE_PAGES = 16;
const Z_NR_FREE = 17; // .. 27: free_area[order].nr_free (all types)
const Z_START = 32;
const Z_END = 33;
const Z_PRESENT = 34;
const Z_MIN = 35;
const Z_LOW = 36;
const Z_HIGH = 37;
const Z_NR_RESERVE = 38;
/* The zone's LRU of page-cache pages (zone->inactive_list), under Z_LRU_LOCK. */
const Z_LRU_HEAD = 39; // newest
const Z_LRU_TAIL = 40; // oldest
const Z_NR_LRU = 41;
const Z_LRU_LOCK = 48;
const Z_FREE_HEAD = 64; // + type * 16 + order: free_area[order].free_list[type]
const Z_TYPE_STRIDE = 16;

/* Per-CPU pages, one cache line per (zone, cpu): a list per migrate type, one count. */
const PCP_WORDS = 16;
const P_COUNT = 0;
const P_HIGH = 1;
const P_BATCH = 2;
const P_HEAD = 3; // + 2 * type
const P_TAIL = 4; // + 2 * type

interface ResolvedConfig {
  nrPages: number;
  nrCpus: number;
  paging: PagingMode;
  lowmemPages: number;
  firstFreePfn: number;
  minFreeKbytes: number;
  pcpBatch: number | undefined;
  pcpHigh: number | undefined;
  mobility: boolean;
  pageblockOrder: number;
}

function intIn(v: unknown, lo: number, hi: number, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw new RangeError(`PageAllocConfig.${what} must be an integer in ${lo}..${hi}, got ${String(v)}`);
  }
  return v;
}

/** Validates a config and fills in Linux's defaults. */
export function resolvePageAllocConfig(cfg: PageAllocConfig): ResolvedConfig {
  const nrPages = intIn(cfg.nrPages, 1, 2 ** 26, 'nrPages');
  const nrCpus = intIn(cfg.nrCpus, 1, 64, 'nrCpus');
  const paging = cfg.paging ?? 'pae';
  if (paging !== 'pae' && paging !== 'x86_64') {
    throw new RangeError(`PageAllocConfig.paging must be 'pae' or 'x86_64', got ${String(paging)}`);
  }
  let lowmemPages: number;
  if (paging === 'x86_64') {
    if (cfg.lowmemPages !== undefined && cfg.lowmemPages !== nrPages) {
      throw new RangeError(
        `PageAllocConfig.lowmemPages: x86_64 has no highmem, so it must be nrPages (${nrPages}) or unset, got ${cfg.lowmemPages}`,
      );
    }
    lowmemPages = nrPages;
  } else {
    const max = Math.min(nrPages, layoutFor('pae').maxLowmemFrames);
    lowmemPages = cfg.lowmemPages === undefined ? max : intIn(cfg.lowmemPages, 1, max, 'lowmemPages');
  }
  const firstFreePfn = cfg.firstFreePfn === undefined ? 0 : intIn(cfg.firstFreePfn, 0, nrPages, 'firstFreePfn');
  let minFreeKbytes: number;
  if (cfg.minFreeKbytes === undefined) {
    const lowKb = Math.min(lowmemPages, nrPages) * (PAGE_SIZE / 1024);
    minFreeKbytes = Math.min(65536, Math.max(128, Math.floor(Math.sqrt(lowKb * 16))));
  } else {
    minFreeKbytes = intIn(cfg.minFreeKbytes, 0, 1 << 24, 'minFreeKbytes');
  }
  const pcpBatch = cfg.pcpBatch === undefined ? undefined : intIn(cfg.pcpBatch, 1, 1 << 16, 'pcpBatch');
  const pcpHigh = cfg.pcpHigh === undefined ? undefined : intIn(cfg.pcpHigh, 1, 1 << 20, 'pcpHigh');
  if (pcpHigh !== undefined && pcpBatch !== undefined && pcpHigh < pcpBatch) {
    throw new RangeError(`PageAllocConfig.pcpHigh (${pcpHigh}) must be >= pcpBatch (${pcpBatch})`);
  }
  if (cfg.mobility !== undefined && typeof cfg.mobility !== 'boolean')
    throw new RangeError(`PageAllocConfig.mobility must be true or false, got ${String(cfg.mobility)}`);
  const mobility = cfg.mobility ?? false;
  const pageblockOrder =
    cfg.pageblockOrder === undefined ? PAGEBLOCK_ORDER : intIn(cfg.pageblockOrder, 1, MAX_ORDER - 1, 'pageblockOrder');
  return {
    nrPages,
    nrCpus,
    paging,
    lowmemPages,
    firstFreePfn,
    minFreeKbytes,
    pcpBatch,
    pcpHigh,
    mobility,
    pageblockOrder,
  };
}

/** [start, end) pfns of each zone (ZONE_DMA32 is always empty). */
export function zoneSpans(nrPages: number, lowmemPages: number, paging: PagingMode): [number, number][] {
  const low = paging === 'x86_64' ? nrPages : Math.min(lowmemPages, nrPages);
  const dmaEnd = Math.min(MAX_DMA_PFN, low);
  return [
    [0, dmaEnd],
    [dmaEnd, dmaEnd],
    [dmaEnd, low],
    [low, paging === 'pae' ? nrPages : low],
  ];
}

/** Zone of `pfn` for the given spans. */
export function zoneOfPfn(spans: readonly [number, number][], pfn: number): number {
  for (let z = 0; z < MAX_NR_ZONES; z++) if (pfn >= spans[z]![0] && pfn < spans[z]![1]) return z;
  throw new RangeError(`pfn ${pfn} is in no zone`);
}

/** zone_batchsize: about a quarter of a 1/1024th of the zone, at most 128 pages, 2^n - 1. */
export function zoneBatchsize(present: number): number {
  let batch = Math.floor(present / 1024);
  if (batch * PAGE_SIZE > 512 * 1024) batch = (512 * 1024) / PAGE_SIZE;
  batch = Math.floor(batch / 4);
  if (batch < 1) batch = 1;
  const v = batch + Math.floor(batch / 2);
  const fls = 32 - Math.clz32(v);
  return Math.max(1, (1 << (fls - 1)) - 1);
}

/** Watermarks per zone: [min, low, high], setup_per_zone_pages_min's arithmetic. */
export function zoneWatermarks(spans: readonly [number, number][], minFreeKbytes: number): [number, number, number][] {
  const pagesMin = minFreeKbytes >> 2; // KiB -> 4 KiB pages
  let lowmem = 0;
  for (let z = 0; z < MAX_NR_ZONES; z++) if (z !== ZONE_HIGHMEM) lowmem += spans[z]![1] - spans[z]![0];
  const out: [number, number, number][] = [];
  for (let z = 0; z < MAX_NR_ZONES; z++) {
    const present = spans[z]![1] - spans[z]![0];
    let min: number;
    if (present === 0 || minFreeKbytes === 0) {
      min = 0;
    } else if (z === ZONE_HIGHMEM) {
      // Highmem needs little: between SWAP_CLUSTER_MAX and 128 pages.
      min = Math.min(128, Math.max(32, Math.floor(present / 1024)));
    } else {
      min = Math.floor((pagesMin * present) / lowmem);
    }
    out.push([min, min + (min >> 2), min + (min >> 1)]);
  }
  return out;
}

function stateLayout(
  nrPages: number,
  nrCpus: number,
  pageblockOrder: number,
): { memMapOffset: number; stateOffset: number; pageblockOffset: number; allocTypeOffset: number; bytes: number } {
  const mm = memMapLayout(nrPages, HEADER_BYTES);
  const stateOffset = HEADER_BYTES + mm.bytes;
  const pageblockOffset = stateOffset + (MAX_NR_ZONES * ZONE_WORDS + MAX_NR_ZONES * nrCpus * PCP_WORDS) * 4;
  const allocTypeOffset = pageblockOffset + nrPageblocks(nrPages, pageblockOrder);
  const bytes = allocTypeOffset + nrPages;
  return { memMapOffset: HEADER_BYTES, stateOffset, pageblockOffset, allocTypeOffset, bytes };
}

function nrPageblocks(nrPages: number, pageblockOrder: number): number {
  return (nrPages + (1 << pageblockOrder) - 1) >>> pageblockOrder;
}

/** Bytes of the SAB a PageAllocator with this config needs (header + mem_map + zones + pcp). */
export function pageAllocBytes(cfg: PageAllocConfig): number {
  const r = resolvePageAllocConfig(cfg);
  return stateLayout(r.nrPages, r.nrCpus, r.pageblockOrder).bytes;
}

/* ---------------------------------------------------------------- allocator */

export class PageAllocator implements PageFreer {
  readonly sab: SharedArrayBuffer;
  readonly memMap: MemMap;
  readonly nrPages: number;
  readonly nrCpus: number;
  readonly paging: PagingMode;
  readonly lowmemPages: number;
  readonly firstFreePfn: number;
  /** Grouping by mobility is on (2.6.24). */
  readonly mobility: boolean;
  readonly pageblockOrder: number;
  /** Reports made through this opener (the last MAX_KEPT_REPORTS). */
  readonly reports: MmReport[] = [];

  /* Columns, held directly: the hot paths index them. */
  readonly #flags: Uint32Array;
  readonly #flagsI32: Int32Array;
  readonly #count: Int32Array;
  readonly #mapcount: Int32Array;
  readonly #mapping: Int32Array;
  readonly #priv: Int32Array;
  readonly #next: Int32Array;
  readonly #prev: Int32Array;
  readonly #order: Int32Array;
  readonly #firstPage: Int32Array;
  /** Header words. */
  readonly #hdr: Int32Array;
  /** Zones then per-CPU pages, Int32 words. */
  readonly #z: Int32Array;
  readonly #pcpBase0: number;
  /** The pageblock bitmap: one migrate type per pageblock (zone->lock to change). */
  readonly #pageblockTypes: Uint8Array;
  /** Debug: the migrate type each allocated page was asked for (ALLOC_MIGRATETYPE_NONE otherwise). */
  readonly #allocTypes: Uint8Array;
  /** zonelists[gfp & 3]: zone numbers to try, best first. */
  readonly #zonelists: Int32Array[];
  readonly #hooks: PageAllocHooks;
  readonly onSpin: (() => void) | undefined;
  readonly #shrinkers: Shrinker[] = [];

  /** Formats a new buffer for `cfg` and opens it. */
  static create(cfg: PageAllocConfig, hooks: PageAllocHooks): PageAllocator {
    const r = resolvePageAllocConfig(cfg);
    const sab = new SharedArrayBuffer(stateLayout(r.nrPages, r.nrCpus, r.pageblockOrder).bytes);
    PageAllocator.format(sab, cfg);
    return new PageAllocator(sab, hooks);
  }

  /**
   * Formats `sab` (pageAllocBytes(cfg) bytes, zero-filled): mem_map initialised, pages from
   * firstFreePfn up given to the buddy allocator (as free_all_bootmem: aligned blocks, low
   * to high). Done once, before any worker opens the buffer.
   */
  static format(sab: SharedArrayBuffer, cfg: PageAllocConfig): void {
    const r = resolvePageAllocConfig(cfg);
    const lay = stateLayout(r.nrPages, r.nrCpus, r.pageblockOrder);
    if (sab.byteLength < lay.bytes) {
      throw new RangeError(`PageAllocator.format: the config needs ${lay.bytes} bytes, the SAB has ${sab.byteLength}`);
    }
    const hdr = new Int32Array(sab, 0, HEADER_BYTES / 4);
    if (Atomics.load(hdr, H_READY) !== 0) throw new Error('PageAllocator.format: this buffer is already formatted');
    hdr[H_MAGIC] = MAGIC;
    hdr[H_VERSION] = VERSION;
    hdr[H_NR_PAGES] = r.nrPages;
    hdr[H_NR_CPUS] = r.nrCpus;
    hdr[H_PAGING] = r.paging === 'pae' ? 0 : 1;
    hdr[H_LOWMEM] = r.lowmemPages;
    hdr[H_FIRST_FREE] = r.firstFreePfn;
    hdr[H_STATE_OFFSET] = lay.stateOffset;
    hdr[H_MIN_FREE_KBYTES] = r.minFreeKbytes;
    hdr[H_MOBILITY] = r.mobility ? 1 : 0;
    hdr[H_PAGEBLOCK_ORDER] = r.pageblockOrder;
    // memmap_init_zone: every pageblock starts MOVABLE (UNMOVABLE, i.e. one list, when off).
    new Uint8Array(sab, lay.pageblockOffset, nrPageblocks(r.nrPages, r.pageblockOrder)).fill(
      r.mobility ? MIGRATE_MOVABLE : MIGRATE_UNMOVABLE,
    );
    new Uint8Array(sab, lay.allocTypeOffset, r.nrPages).fill(ALLOC_MIGRATETYPE_NONE);

    const spans = zoneSpans(r.nrPages, r.lowmemPages, r.paging);
    const mm = new MemMap(sab, r.nrPages, { byteOffset: lay.memMapOffset, paging: r.paging });
    mm.initPages((pfn) => zoneOfPfn(spans, pfn));

    const z = new Int32Array(sab, lay.stateOffset, MAX_NR_ZONES * ZONE_WORDS + MAX_NR_ZONES * r.nrCpus * PCP_WORDS);
    const marks = zoneWatermarks(spans, r.minFreeKbytes);
    for (let zone = 0; zone < MAX_NR_ZONES; zone++) {
      const zb = zone * ZONE_WORDS;
      const [start, end] = spans[zone]!;
      z[zb + Z_START] = start;
      z[zb + Z_END] = end;
      z[zb + Z_PRESENT] = end - start;
      z[zb + Z_MIN] = marks[zone]![0];
      z[zb + Z_LOW] = marks[zone]![1];
      z[zb + Z_HIGH] = marks[zone]![2];
      for (let t = 0; t < MIGRATE_TYPES; t++)
        for (let o = 0; o < MAX_ORDER; o++) z[zb + Z_FREE_HEAD + t * Z_TYPE_STRIDE + o] = -1;
      z[zb + Z_LRU_HEAD] = -1;
      z[zb + Z_LRU_TAIL] = -1;
      const batch = r.pcpBatch ?? zoneBatchsize(end - start);
      const high = r.pcpHigh ?? Math.max(batch, 6 * batch);
      for (let cpu = 0; cpu < r.nrCpus; cpu++) {
        const pb = MAX_NR_ZONES * ZONE_WORDS + (zone * r.nrCpus + cpu) * PCP_WORDS;
        z[pb + P_HIGH] = high;
        z[pb + P_BATCH] = batch;
        for (let t = 0; t < MIGRATE_PCPTYPES; t++) {
          z[pb + P_HEAD + 2 * t] = -1;
          z[pb + P_TAIL + 2 * t] = -1;
        }
      }
    }
    Atomics.store(hdr, H_READY, 1);
    // Hand the free pages to the buddy allocator through an opener of the fresh buffer.
    const pa = new PageAllocator(sab, { zeroPage: () => {} });
    for (let zone = 0; zone < MAX_NR_ZONES; zone++) {
      const [start, end] = spans[zone]!;
      let pfn = Math.max(start, r.firstFreePfn);
      while (pfn < end) {
        let o = MAX_ORDER - 1;
        while (o > 0 && (pfn % (1 << o) !== 0 || pfn + (1 << o) > end)) o--;
        pa.#freeBootmemBlock(pfn, o);
        pfn += 1 << o;
      }
      if (r.mobility) pa.setupZoneMigrateReserve(zone);
    }
  }

  /** Opens a formatted buffer (in any worker). */
  constructor(sab: SharedArrayBuffer, hooks: PageAllocHooks) {
    if (sab.byteLength < HEADER_BYTES)
      throw new RangeError('PageAllocator: the SAB is too small to hold a page allocator');
    const hdr = new Int32Array(sab, 0, HEADER_BYTES / 4);
    if (hdr[H_MAGIC] !== MAGIC || hdr[H_VERSION] !== VERSION) {
      throw new Error('PageAllocator: this SAB is not a pvmmu page allocator buffer (bad magic or version)');
    }
    if (Atomics.load(hdr, H_READY) !== 1)
      throw new Error('PageAllocator: this SAB has not been formatted (call PageAllocator.format first)');
    if (typeof hooks?.zeroPage !== 'function') throw new TypeError('PageAllocator: hooks.zeroPage(pfn) is required');
    this.sab = sab;
    this.#hdr = hdr;
    this.#hooks = hooks;
    this.onSpin = hooks.onSpin;
    this.nrPages = hdr[H_NR_PAGES]!;
    this.nrCpus = hdr[H_NR_CPUS]!;
    this.paging = hdr[H_PAGING] === 0 ? 'pae' : 'x86_64';
    this.lowmemPages = hdr[H_LOWMEM]!;
    this.firstFreePfn = hdr[H_FIRST_FREE]!;
    this.mobility = hdr[H_MOBILITY] === 1;
    this.pageblockOrder = hdr[H_PAGEBLOCK_ORDER]!;
    const lay = stateLayout(this.nrPages, this.nrCpus, this.pageblockOrder);
    this.memMap = new MemMap(sab, this.nrPages, {
      byteOffset: lay.memMapOffset,
      paging: this.paging,
      slubPageMappingFix: hooks.slubPageMappingFix ?? true,
    });
    this.memMap.setFreer(this);
    const mm = this.memMap;
    this.#flags = mm.flags;
    this.#flagsI32 = mm.flagsI32;
    this.#count = mm.count;
    this.#mapcount = mm.mapcount;
    this.#mapping = mm.mapping;
    this.#priv = mm.private;
    this.#next = mm.lruNext;
    this.#prev = mm.lruPrev;
    this.#order = mm.order;
    this.#firstPage = mm.firstPage;
    this.#z = new Int32Array(sab, lay.stateOffset, MAX_NR_ZONES * ZONE_WORDS + MAX_NR_ZONES * this.nrCpus * PCP_WORDS);
    this.#pcpBase0 = MAX_NR_ZONES * ZONE_WORDS;
    this.#pageblockTypes = new Uint8Array(sab, lay.pageblockOffset, nrPageblocks(this.nrPages, this.pageblockOrder));
    this.#allocTypes = new Uint8Array(sab, lay.allocTypeOffset, this.nrPages);
    const list = (zones: number[]): Int32Array =>
      Int32Array.from(zones.filter((zn) => this.#z[zn * ZONE_WORDS + Z_PRESENT]! > 0));
    this.#zonelists = [
      list([ZONE_NORMAL, ZONE_DMA]),
      list([ZONE_DMA]),
      list([ZONE_HIGHMEM, ZONE_NORMAL, ZONE_DMA]),
      new Int32Array(0),
    ];
  }

  /* ------------------------------------------------------------ helpers */

  #pcpBase(zone: number, cpu: number): number {
    return this.#pcpBase0 + (zone * this.nrCpus + cpu) * PCP_WORDS;
  }

  #lockZone(zb: number, cpu: number): void {
    spinLock(this.#z, zb + Z_LOCK, cpu, this.onSpin);
  }

  #unlockZone(zb: number, cpu: number): void {
    spinUnlock(this.#z, zb + Z_LOCK, cpu);
  }

  /*
   * A guest caller's mistake (a bad cpu, order, pfn or GFP mask) is handled as Linux does:
   * printk a WARNING, then NULL (-1) or nothing done -- never an exception, which would
   * kill the vCPU. RangeError is kept for the host's configuration (PageAllocConfig).
   */

  #cpuError(cpu: number, fn: string): string | null {
    return Number.isInteger(cpu) && cpu >= 0 && cpu < this.nrCpus
      ? null
      : `${fn}: cpu ${cpu} is not a vCPU of this allocator (0..${this.nrCpus - 1})`;
  }

  #orderError(order: number, fn: string): string | null {
    return Number.isInteger(order) && order >= 0 && order < MAX_ORDER
      ? null
      : `${fn}: order ${order} is outside 0..${MAX_ORDER - 1}`;
  }

  #pfnError(pfn: number, fn: string): string | null {
    return Number.isInteger(pfn) && pfn >= 0 && pfn < this.nrPages
      ? null
      : `${fn}: pfn ${pfn} is outside the mem_map (0..${this.nrPages - 1})`;
  }

  #blockError(pfn: number, order: number, fn: string): string | null {
    const bad = this.#orderError(order, fn) ?? this.#pfnError(pfn, fn);
    if (bad !== null) return bad;
    if (pfn % (1 << order) !== 0 || pfn + (1 << order) > this.nrPages)
      return `${fn}: pfn ${pfn} is not the start of an order-${order} block inside the mem_map`;
    const zone = this.#flags[pfn]! >>> ZONES_PGSHIFT;
    if (this.#flags[pfn + (1 << order) - 1]! >>> ZONES_PGSHIFT !== zone)
      return `${fn}: the order-${order} block at pfn ${pfn} crosses the end of zone ${ZONE_NAMES[zone]}`;
    return null;
  }

  /** printk + WARN_ON for a caller's mistake; true when there was one (the caller then bails out). */
  #misuse(why: string | null, fn: string, cpu: number): boolean {
    if (why === null) return false;
    const c = Number.isInteger(cpu) && cpu >= 0 && cpu < this.nrCpus ? cpu : 0;
    this.report({
      kind: 'warning',
      comm: this.#comm(c),
      cpu: c,
      function: fn,
      lines: [`WARNING: at mm/page_alloc.c: ${why}`],
    });
    return true;
  }

  /* ------------------------------------------------------------ free lists */

  /** Word index of free_area[order].free_list[type] in `z`. */
  #freeHead(zb: number, type: number, order: number): number {
    return zb + Z_FREE_HEAD + type * Z_TYPE_STRIDE + order;
  }

  /** list_add to free_area[order].free_list[type] (the head end). zone->lock held. */
  #addToFreeArea(zb: number, order: number, pfn: number, type: number): void {
    const z = this.#z;
    const h = zb + Z_FREE_HEAD + type * Z_TYPE_STRIDE + order;
    const head = z[h]!;
    this.#next[pfn] = head;
    this.#prev[pfn] = -1;
    if (head !== -1) this.#prev[head] = pfn;
    z[h] = pfn;
    z[zb + Z_NR_FREE + order]!++;
    this.#order[pfn] = order;
    // page_private of a free page: the list it is on (page->lru says as much in Linux).
    this.#priv[pfn] = type;
    // PG_buddy is published last, with a barrier, so an unlocked reader that sees it also
    // sees the order (the double-free check reads both without zone->lock).
    Atomics.or(this.#flagsI32, pfn, 1 << PG_buddy);
  }

  /** list_del from the free list the block is on. zone->lock held. */
  #delFromFreeArea(zb: number, order: number, pfn: number): void {
    const z = this.#z;
    Atomics.and(this.#flagsI32, pfn, ~(1 << PG_buddy));
    const n = this.#next[pfn]!;
    const p = this.#prev[pfn]!;
    if (p !== -1) this.#next[p] = n;
    else z[zb + Z_FREE_HEAD + this.#priv[pfn]! * Z_TYPE_STRIDE + order] = n;
    if (n !== -1) this.#prev[n] = p;
    z[zb + Z_NR_FREE + order]!--;
    this.#next[pfn] = -1;
    this.#prev[pfn] = -1;
    this.#priv[pfn] = 0;
  }

  /** expand: keep the low part of an order-`high` block at `pfn`, free the high halves to `type`. */
  #expand(zb: number, pfn: number, order: number, high: number, type: number): void {
    while (high > order) {
      high--;
      this.#addToFreeArea(zb, high, pfn + (1 << high), type);
    }
  }

  /** __rmqueue_smallest: the first block of the smallest order on `type`'s lists. zone->lock held. */
  #__rmqueueSmallest(zb: number, order: number, type: number): number {
    const z = this.#z;
    const base = zb + Z_FREE_HEAD + type * Z_TYPE_STRIDE;
    for (let cur = order; cur < MAX_ORDER; cur++) {
      const pfn = z[base + cur]!;
      if (pfn === -1) continue;
      this.#delFromFreeArea(zb, cur, pfn);
      z[zb + Z_FREE_PAGES]! -= 1 << order;
      this.#expand(zb, pfn, order, cur, type);
      return pfn;
    }
    return -1;
  }

  /**
   * __rmqueue_fallback: take from another type's lists, largest block first. A large
   * block (order >= pageblock_order / 2), or any block for a RECLAIMABLE allocation, pulls
   * every free page of its pageblock onto `start`'s lists, and the pageblock becomes
   * `start`'s when more than half of it was free; a whole pageblock taken is relabelled
   * outright. RESERVE only when nothing else is left, and only for an atomic allocation
   * (`reserve`): the blocks are kept for high-order atomic allocations, while a caller
   * that may sleep reclaims instead. (2.6.24 let any allocation have RESERVE last; with
   * pageblocks larger than the min watermark that lets ordinary allocations eat the
   * reserve before reclaim ever runs.) zone->lock held.
   */
  #__rmqueueFallback(zb: number, order: number, start: number, reserve: boolean): number {
    const z = this.#z;
    const pbo = this.pageblockOrder;
    const fb = FALLBACKS[start]!;
    for (let cur = MAX_ORDER - 1; cur >= order; cur--) {
      for (let i = 0; i < MIGRATE_TYPES - 1; i++) {
        let type = fb[i]!;
        if (type === MIGRATE_RESERVE) continue;
        const pfn = z[zb + Z_FREE_HEAD + type * Z_TYPE_STRIDE + cur]!;
        if (pfn === -1) continue;
        Atomics.add(this.#hdr, H_NR_FALLBACKS, 1);
        if (cur >= pbo >> 1 || start === MIGRATE_RECLAIMABLE) {
          const moved = this.#moveFreepagesBlock(zb, pfn, start);
          if (moved >= 1 << (pbo - 1)) this.#setPageblockMigratetype(pfn, start, 1);
          type = start;
        }
        this.#delFromFreeArea(zb, cur, pfn);
        z[zb + Z_FREE_PAGES]! -= 1 << order;
        if (cur >= pbo) this.#setPageblockMigratetype(pfn, start, 1 << (cur - pbo));
        this.#expand(zb, pfn, order, cur, type);
        return pfn;
      }
    }
    return reserve ? this.#__rmqueueSmallest(zb, order, MIGRATE_RESERVE) : -1;
  }

  /** __rmqueue: own type first, then the fallbacks (RESERVE for atomic callers). zone->lock held. */
  #__rmqueue(zb: number, order: number, type: number, reserve: boolean): number {
    const pfn = this.#__rmqueueSmallest(zb, order, type);
    if (pfn !== -1 || !this.mobility) return pfn;
    return this.#__rmqueueFallback(zb, order, type, reserve);
  }

  /**
   * move_freepages_block: every free buddy block of the pageblock holding `pfn` onto
   * `type`'s lists; returns the pages moved. A pageblock that runs past the end of the
   * zone is left alone (0); one that starts before it is scanned from `pfn`. zone->lock held.
   */
  #moveFreepagesBlock(zb: number, pfn: number, type: number): number {
    const pbn = 1 << this.pageblockOrder;
    let start = pfn & ~(pbn - 1);
    const end = start + pbn;
    if (start < this.#z[zb + Z_START]!) start = pfn;
    if (end > this.#z[zb + Z_END]!) return 0;
    let moved = 0;
    for (let p = start; p < end; ) {
      if ((this.#flags[p]! & (1 << PG_buddy)) === 0) {
        p++;
        continue;
      }
      const o = this.#order[p]!;
      this.#delFromFreeArea(zb, o, p);
      this.#addToFreeArea(zb, o, p, type);
      p += 1 << o;
      moved += 1 << o;
    }
    return moved;
  }

  /** set_pageblock_migratetype for `n` pageblocks from the one holding `pfn`. zone->lock held. */
  #setPageblockMigratetype(pfn: number, type: number, n: number): void {
    const b = pfn >>> this.pageblockOrder;
    for (let i = b; i < b + n && i < this.#pageblockTypes.length; i++) {
      if (this.#pageblockTypes[i] !== type) Atomics.add(this.#hdr, H_NR_STEALS, 1);
      this.#pageblockTypes[i] = type;
    }
  }

  /**
   * setup_zone_migrate_reserve: the first min-watermark's worth of the zone's pageblocks
   * (rounded up to whole blocks) become MIGRATE_RESERVE, their free pages with them.
   * Format time.
   */
  setupZoneMigrateReserve(zone: number): void {
    const z = this.#z;
    const zb = zone * ZONE_WORDS;
    const pbo = this.pageblockOrder;
    const pbn = 1 << pbo;
    let reserve = (z[zb + Z_MIN]! + pbn - 1) >>> pbo;
    z[zb + Z_NR_RESERVE] = reserve;
    for (let pfn = z[zb + Z_START]!; pfn < z[zb + Z_END]!; pfn += pbn) {
      const t = this.#pageblockTypes[pfn >>> pbo]!;
      if (reserve > 0 && t === MIGRATE_RESERVE) {
        reserve--;
        continue;
      }
      if (reserve > 0 && t === MIGRATE_MOVABLE) {
        this.#pageblockTypes[pfn >>> pbo] = MIGRATE_RESERVE;
        this.#moveFreepagesBlock(zb, pfn, MIGRATE_RESERVE);
        reserve--;
        continue;
      }
      if (t === MIGRATE_RESERVE) {
        this.#pageblockTypes[pfn >>> pbo] = MIGRATE_MOVABLE;
        this.#moveFreepagesBlock(zb, pfn, MIGRATE_MOVABLE);
      }
    }
  }

  /**
   * __free_one_page: merge with free buddies as far as they go, onto the list of the
   * pageblock's type. zone->lock held.
   */
  #__freeOnePage(zb: number, pfn: number, order: number): void {
    const z = this.#z;
    const start = z[zb + Z_START]!;
    const end = z[zb + Z_END]!;
    const type = this.#pageblockTypes[pfn >>> this.pageblockOrder]!;
    z[zb + Z_FREE_PAGES]! += 1 << order;
    while (order < MAX_ORDER - 1) {
      const buddy = pfn ^ (1 << order);
      if (buddy < start || buddy >= end) break;
      if ((this.#flags[buddy]! & (1 << PG_buddy)) === 0 || this.#order[buddy] !== order) break;
      this.#delFromFreeArea(zb, order, buddy);
      pfn &= buddy;
      order++;
    }
    this.#addToFreeArea(zb, order, pfn, type);
  }

  /** Put `pfn` on the tail (cold end) of list `type` of the per-CPU pages at `pb`. */
  #pcpAddTail(pb: number, type: number, pfn: number): void {
    const z = this.#z;
    const tail = z[pb + P_TAIL + 2 * type]!;
    this.#prev[pfn] = tail;
    this.#next[pfn] = -1;
    if (tail === -1) z[pb + P_HEAD + 2 * type] = pfn;
    else this.#next[tail] = pfn;
    z[pb + P_TAIL + 2 * type] = pfn;
  }

  /** rmqueue_bulk: `count` order-0 pages of `type` onto the tail of its per-CPU list. Returns how many. */
  #rmqueueBulk(zb: number, pb: number, count: number, cpu: number, type: number, reserve: boolean): number {
    const z = this.#z;
    let i = 0;
    this.#lockZone(zb, cpu);
    for (; i < count; i++) {
      const pfn = this.#__rmqueue(zb, 0, type, reserve);
      if (pfn === -1) break;
      this.#flags[pfn] = (this.#flags[pfn]! | (1 << PG_pcp)) >>> 0;
      this.#pcpAddTail(pb, type, pfn);
    }
    this.#unlockZone(zb, cpu);
    z[pb + P_COUNT]! += i;
    return i;
  }

  /**
   * free_pages_bulk: `count` pages from the cold ends of a CPU's lists back to the buddies,
   * one list after another (UNMOVABLE, RECLAIMABLE, MOVABLE, again), skipping empty ones.
   */
  #freePagesBulk(zb: number, pb: number, count: number, cpu: number): void {
    const z = this.#z;
    let i = 0;
    let type = 0;
    this.#lockZone(zb, cpu);
    for (; i < count; i++) {
      let pfn = -1;
      for (let tries = 0; tries < MIGRATE_PCPTYPES; tries++) {
        pfn = z[pb + P_TAIL + 2 * type]!;
        if (pfn !== -1) break;
        type = type + 1 === MIGRATE_PCPTYPES ? 0 : type + 1;
      }
      if (pfn === -1) break;
      const p = this.#prev[pfn]!;
      z[pb + P_TAIL + 2 * type] = p;
      if (p === -1) z[pb + P_HEAD + 2 * type] = -1;
      else this.#next[p] = -1;
      this.#prev[pfn] = -1;
      this.#flags[pfn] = (this.#flags[pfn]! & ~(1 << PG_pcp)) >>> 0;
      this.#priv[pfn] = 0;
      this.#__freeOnePage(zb, pfn, 0);
      type = type + 1 === MIGRATE_PCPTYPES ? 0 : type + 1;
    }
    this.#unlockZone(zb, cpu);
    z[pb + P_COUNT]! -= i;
  }

  /* ---------------------------------------------------------- allocation */

  /**
   * zone_watermark_ok: would the zone keep more than `mark` free pages (less for
   * ALLOC_HIGH / ALLOC_HARDER) after this allocation, with enough of them in blocks of at
   * least `order`? Reads free counts without the lock, as Linux does.
   */
  #zoneWatermarkOk(zb: number, order: number, mark: number, allocFlags: number): boolean {
    const z = this.#z;
    let min = mark;
    let free = z[zb + Z_FREE_PAGES]! - (1 << order) + 1;
    if (allocFlags & ALLOC_HIGH) min -= min >> 1;
    if (allocFlags & ALLOC_HARDER) min -= min >> 2;
    if (free <= min) return false;
    for (let o = 0; o < order; o++) {
      free -= z[zb + Z_NR_FREE + o]! << o;
      min >>= 1;
      if (free <= min) return false;
    }
    return true;
  }

  /** get_page_from_freelist: the first zone of the list that passes its watermark and has pages. */
  #getPageFromFreelist(
    gfp: number,
    order: number,
    cpu: number,
    zl: Int32Array,
    allocFlags: number,
    type: number,
  ): number {
    for (let i = 0; i < zl.length; i++) {
      const zone = zl[i]!;
      const zb = zone * ZONE_WORDS;
      if ((allocFlags & ALLOC_NO_WATERMARKS) === 0) {
        const mark =
          allocFlags & ALLOC_WMARK_MIN
            ? this.#z[zb + Z_MIN]!
            : allocFlags & ALLOC_WMARK_LOW
              ? this.#z[zb + Z_LOW]!
              : this.#z[zb + Z_HIGH]!;
        if (!this.#zoneWatermarkOk(zb, order, mark, allocFlags)) continue;
      }
      const pfn = this.#bufferedRmqueue(zone, order, gfp, cpu, type);
      if (pfn !== -1) return pfn;
    }
    return -1;
  }

  /**
   * buffered_rmqueue: order 0 from this CPU's list of the allocation's migrate type
   * (refilled by `batch` from the buddies when empty), hot end unless __GFP_COLD; higher
   * orders from the buddies under zone->lock.
   */
  #bufferedRmqueue(zone: number, order: number, gfp: number, cpu: number, type: number): number {
    const z = this.#z;
    const zb = zone * ZONE_WORDS;
    for (;;) {
      let pfn: number;
      if (order === 0) {
        const pb = this.#pcpBase(zone, cpu);
        const h = pb + P_HEAD + 2 * type;
        const tl = pb + P_TAIL + 2 * type;
        if (z[h] === -1 && this.#rmqueueBulk(zb, pb, z[pb + P_BATCH]!, cpu, type, (gfp & RESERVE_DENY) === 0) === 0)
          return -1;
        if ((gfp & __GFP_COLD) === 0) {
          pfn = z[h]!;
          const n = this.#next[pfn]!;
          z[h] = n;
          if (n === -1) z[tl] = -1;
          else this.#prev[n] = -1;
        } else {
          pfn = z[tl]!;
          const p = this.#prev[pfn]!;
          z[tl] = p;
          if (p === -1) z[h] = -1;
          else this.#next[p] = -1;
        }
        this.#next[pfn] = -1;
        this.#prev[pfn] = -1;
        z[pb + P_COUNT]!--;
        this.#flags[pfn] = (this.#flags[pfn]! & ~(1 << PG_pcp)) >>> 0;
      } else {
        this.#lockZone(zb, cpu);
        pfn = this.#__rmqueue(zb, order, type, (gfp & RESERVE_DENY) === 0);
        this.#unlockZone(zb, cpu);
        if (pfn === -1) return -1;
      }
      if (this.#prepNewPage(pfn, order, gfp, cpu)) return pfn;
      // A bad page: reported and dropped (leaked, as Linux did); try another.
    }
  }

  /** prep_new_page: check every page of the block, then make it an allocated block. */
  #prepNewPage(pfn: number, order: number, gfp: number, cpu: number): boolean {
    const n = 1 << order;
    let ok = true;
    for (let p = pfn; p < pfn + n; p++) {
      if (
        this.#mapcount[p] !== -1 ||
        this.#mapping[p] !== 0 ||
        this.#count[p] !== 0 ||
        (this.#flags[p]! & PAGE_FLAGS_CHECK_AT_PREP) !== 0
      ) {
        this.badPage(p, 'prep_new_page', 'bad_state', cpu);
        ok = false;
      }
    }
    if (!ok) return false;
    // The debug record of what was asked for: the GFP's own type, whether grouping is on or not.
    const asked = ((gfp & __GFP_MOVABLE) !== 0 ? 2 : 0) | ((gfp & __GFP_RECLAIMABLE) !== 0 ? 1 : 0);
    for (let p = pfn; p < pfn + n; p++) {
      this.#flags[p] = (this.#flags[p]! & ~PAGE_FLAGS_CLEAR_AT_PREP) >>> 0;
      this.#priv[p] = 0;
      this.#allocTypes[p] = asked;
    }
    this.#count[pfn] = 1;
    if (order > 0 && (gfp & __GFP_COMP) !== 0) this.#prepCompoundPage(pfn, order);
    if ((gfp & __GFP_ZERO) !== 0) {
      const zero = this.#hooks.zeroPage;
      for (let p = pfn; p < pfn + n; p++) zero(p);
    }
    return true;
  }

  /** prep_compound_page: head with its order, tails pointing at it. */
  #prepCompoundPage(pfn: number, order: number): void {
    this.#order[pfn] = order;
    this.#flags[pfn] = (this.#flags[pfn]! | (1 << PG_head)) >>> 0;
    for (let p = pfn + 1; p < pfn + (1 << order); p++) {
      this.#flags[p] = (this.#flags[p]! | (1 << PG_tail)) >>> 0;
      this.#firstPage[p] = pfn;
    }
  }

  /**
   * __alloc_pages / alloc_pages: a block of 2^order pages, as its first pfn, or -1.
   *
   *  1. every zone of the zonelist at pages_low;
   *  2. below it: wake kswapd (the hook), or -- no kswapd here -- one reclaim round when
   *     the caller may sleep, and retry at pages_low;
   *  3. at pages_min (less for __GFP_HIGH, and for callers that cannot sleep);
   *  4. callers that may sleep: reclaim rounds (shrinkers, then this CPU's lists drained)
   *     while they make progress, up to MAX_RECLAIM_ROUNDS (one with __GFP_NORETRY);
   *  5. fail, with "page allocation failure" unless __GFP_NOWARN.
   */
  allocPages(gfp: number, order: number, cpu: number): number {
    if (
      ((gfp | 0) !== gfp || (gfp & ~GFP_VALID_MASK) !== 0 || (gfp & 3) === 3) &&
      this.#misuse(gfpError(gfp, 'alloc_pages'), 'alloc_pages', cpu)
    )
      return -1;
    if (
      (order !== (order & 15) || order >= MAX_ORDER) &&
      this.#misuse(this.#orderError(order, 'alloc_pages'), 'alloc_pages', cpu)
    )
      return -1;
    if (
      (cpu !== (cpu & 63) || cpu >= this.nrCpus) &&
      this.#misuse(this.#cpuError(cpu, 'alloc_pages'), 'alloc_pages', cpu)
    )
      return -1;
    if ((gfp & GFP_MOVABLE_MASK) === GFP_MOVABLE_MASK) return this.#warnMovableMask(gfp, cpu);
    const zl = this.#zonelists[gfp & 3]!;
    const type = this.mobility ? gfpflagsToMigratetype(gfp, true) : MIGRATE_UNMOVABLE;
    const pfn = this.#getPageFromFreelist(gfp, order, cpu, zl, ALLOC_WMARK_LOW, type);
    if (pfn !== -1) return pfn;
    return this.#allocPagesSlowpath(gfp, order, cpu, zl, type);
  }

  /** WARN_ON((gfp & GFP_MOVABLE_MASK) == GFP_MOVABLE_MASK): a caller's mistake; NULL. */
  #warnMovableMask(gfp: number, cpu: number): number {
    const comm = this.#comm(cpu);
    this.report({
      kind: 'warning',
      comm,
      cpu,
      function: 'alloc_pages',
      lines: [
        `WARNING: at mm/page_alloc.c: alloc_pages() (${comm}, cpu ${cpu}): mode:0x${gfp.toString(16)} (${gfpName(gfp)}) is both __GFP_MOVABLE and __GFP_RECLAIMABLE`,
      ],
    });
    return -1;
  }

  /** __alloc_pages (same thing; Linux's name for the zonelist-level entry). */
  __allocPages(gfp: number, order: number, cpu: number): number {
    return this.allocPages(gfp, order, cpu);
  }

  /** alloc_page. */
  allocPage(gfp: number, cpu: number): number {
    return this.allocPages(gfp, 0, cpu);
  }

  #allocPagesSlowpath(gfp: number, order: number, cpu: number, zl: Int32Array, type: number): number {
    const wait = (gfp & __GFP_WAIT) !== 0;
    let pfn: number;
    if (zl.length > 0) {
      if (this.#hooks.wakeupKswapd !== undefined) {
        for (let i = 0; i < zl.length; i++) this.#hooks.wakeupKswapd(zl[i]!, order, cpu);
      } else if (wait && this.#reclaimRound(gfp, order, cpu, zl)) {
        pfn = this.#getPageFromFreelist(gfp, order, cpu, zl, ALLOC_WMARK_LOW, type);
        if (pfn !== -1) return pfn;
      }
    }
    let allocFlags = ALLOC_WMARK_MIN;
    if (!wait) allocFlags |= ALLOC_HARDER;
    if (gfp & __GFP_HIGH) allocFlags |= ALLOC_HIGH;
    pfn = this.#getPageFromFreelist(gfp, order, cpu, zl, allocFlags, type);
    if (pfn !== -1) return pfn;
    if (wait) {
      const rounds = gfp & __GFP_NORETRY ? 1 : MAX_RECLAIM_ROUNDS;
      for (let r = 0; r < rounds; r++) {
        if (!this.#reclaimRound(gfp, order, cpu, zl)) break;
        pfn = this.#getPageFromFreelist(gfp, order, cpu, zl, allocFlags, type);
        if (pfn !== -1) return pfn;
      }
    }
    Atomics.add(this.#hdr, H_NR_ALLOC_FAILURES, 1);
    if ((gfp & __GFP_NOWARN) === 0) {
      const comm = this.#comm(cpu);
      this.report({
        kind: 'page_allocation_failure',
        comm,
        cpu,
        order,
        gfpMask: gfp,
        lines: [`${comm}: page allocation failure. order:${order}, mode:0x${gfp.toString(16)}`],
      });
    }
    return -1;
  }

  /**
   * One round of what try_to_free_pages stands for here: ask every shrinker for up to
   * SHRINK_BATCH objects, drop clean page-cache pages from the old end of the zones' LRUs
   * (with lumpy reclaim's block-mates for order > 0), then drain this CPU's lists into the
   * buddies. True when the zonelist's buddy free pages grew.
   */
  #reclaimRound(gfp: number, order: number, cpu: number, zl: Int32Array): boolean {
    const before = this.#zonelistFree(zl);
    this.shrinkSlab(gfp, cpu);
    for (let i = 0; i < zl.length; i++) this.shrinkInactiveList(zl[i]!, order, cpu);
    this.drainLocalPages(cpu);
    return this.#zonelistFree(zl) > before;
  }

  #zonelistFree(zl: Int32Array): number {
    let n = 0;
    for (let i = 0; i < zl.length; i++) n += this.#z[zl[i]! * ZONE_WORDS + Z_FREE_PAGES]!;
    return n;
  }

  /** shrink_slab: each registered shrinker, in registration order. */
  shrinkSlab(gfp: number, cpu: number): void {
    for (const s of this.#shrinkers.slice()) {
      const n = s.shrink(0, gfp, cpu);
      if (n > 0) s.shrink(Math.min(n, SHRINK_BATCH), gfp, cpu);
    }
  }

  /** register_shrinker (on this opener: shrinkers are JS callbacks, local to a worker). */
  registerShrinker(s: Shrinker): void {
    if (typeof s?.shrink !== 'function')
      throw new TypeError('registerShrinker: a shrinker needs a shrink(nrToScan, gfpMask, cpu) function');
    if (this.#shrinkers.includes(s)) throw new Error(`registerShrinker: '${s.name}' is already registered`);
    this.#shrinkers.push(s);
  }

  unregisterShrinker(s: Shrinker): void {
    const i = this.#shrinkers.indexOf(s);
    if (i < 0) throw new Error(`unregisterShrinker: '${s?.name}' is not registered`);
    this.#shrinkers.splice(i, 1);
  }

  /* ------------------------------------------ the page-cache LRU and reclaim */
  /*
   * zone->inactive_list, reduced to what reclaim here needs: page-cache pages, linked
   * through their lru links (an allocated page's links are its owner's, and the page
   * cache is the owner), newest at the head, under the zone's lru_lock. Anonymous memory
   * never goes on it: there is no swap.
   */

  /**
   * add_to_page_cache_lru: page-cache page `pfn` (the caller's reference becomes the
   * cache's; its mapping set by the caller) goes on its zone's LRU, newest end.
   * Returns 0, or -EINVAL (with a WARNING) for a page that cannot be a page-cache page.
   */
  lruCacheAdd(pfn: number, cpu: number): number {
    const fn = 'add_to_page_cache_lru';
    if (this.#misuse(this.#pfnError(pfn, fn) ?? this.#cpuError(cpu, fn), fn, cpu)) return -22;
    const f = this.#flags[pfn]!;
    if ((f & ((1 << PG_lru) | (1 << PG_buddy) | (1 << PG_pcp) | (1 << PG_slab))) !== 0 || this.#count[pfn]! < 1) {
      this.report({
        kind: 'warning',
        comm: this.#comm(cpu),
        cpu,
        function: 'add_to_page_cache_lru',
        pfn,
        lines: [
          `WARNING: at mm/filemap.c: add_to_page_cache_lru: pfn ${pfn} (flags:0x${formatPageFlags(f >>> 0, this.paging)} count:${this.#count[pfn]}) cannot go on the LRU`,
        ],
      });
      return -22;
    }
    const zb = (f >>> ZONES_PGSHIFT) * ZONE_WORDS;
    const z = this.#z;
    spinLock(z, zb + Z_LRU_LOCK, cpu, this.onSpin);
    const head = z[zb + Z_LRU_HEAD]!;
    this.#next[pfn] = head;
    this.#prev[pfn] = -1;
    if (head === -1) z[zb + Z_LRU_TAIL] = pfn;
    else this.#prev[head] = pfn;
    z[zb + Z_LRU_HEAD] = pfn;
    z[zb + Z_NR_LRU]!++;
    Atomics.or(this.#flagsI32, pfn, 1 << PG_lru);
    spinUnlock(z, zb + Z_LRU_LOCK, cpu);
    return 0;
  }

  /** Unlink from the LRU and clear PG_lru. lru_lock held. */
  #lruDel(zb: number, pfn: number): void {
    const z = this.#z;
    const n = this.#next[pfn]!;
    const p = this.#prev[pfn]!;
    if (p === -1) z[zb + Z_LRU_HEAD] = n;
    else this.#next[p] = n;
    if (n === -1) z[zb + Z_LRU_TAIL] = p;
    else this.#prev[n] = p;
    this.#next[pfn] = -1;
    this.#prev[pfn] = -1;
    z[zb + Z_NR_LRU]!--;
    Atomics.and(this.#flagsI32, pfn, ~(1 << PG_lru));
  }

  /**
   * remove_from_page_cache + page_cache_release: off the LRU, mapping cleared, the
   * cache's reference dropped (the last one frees the page). Only while the page is on
   * the LRU with page->mapping `mapping`: false when reclaim took it first (whoever
   * unlinks it under lru_lock owns the cache's reference).
   */
  removeFromPageCache(pfn: number, mapping: number, cpu: number): boolean {
    const fn = 'remove_from_page_cache';
    if (this.#misuse(this.#pfnError(pfn, fn) ?? this.#cpuError(cpu, fn), fn, cpu)) return false;
    const zb = (this.#flags[pfn]! >>> ZONES_PGSHIFT) * ZONE_WORDS;
    spinLock(this.#z, zb + Z_LRU_LOCK, cpu, this.onSpin);
    const mine = (this.#flags[pfn]! & (1 << PG_lru)) !== 0 && this.#mapping[pfn] === mapping;
    if (mine) this.#lruDel(zb, pfn);
    spinUnlock(this.#z, zb + Z_LRU_LOCK, cpu);
    if (!mine) return false;
    this.#mapping[pfn] = 0;
    this.memMap.putPage(pfn, cpu);
    return true;
  }

  /** Could reclaim drop this LRU page now: clean, unlocked, unmapped, referenced only by the cache. */
  #pageReclaimable(pfn: number): boolean {
    return (
      (this.#flags[pfn]! & ((1 << PG_lru) | (1 << PG_dirty) | (1 << PG_locked) | (1 << PG_writeback))) ===
        1 << PG_lru &&
      this.#mapcount[pfn] === -1 &&
      this.#count[pfn] === 1
    );
  }

  /**
   * shrink_inactive_list with 2.6.23's lumpy reclaim: look at up to SWAP_CLUSTER_MAX pages
   * from the old end of the zone's LRU and drop each reclaimable one; for order > 0 also
   * drop every reclaimable LRU page of its order-aligned block (isolate_lru_pages' cursor),
   * so that the block can come free as a whole. Returns the pages dropped.
   */
  shrinkInactiveList(zone: number, order: number, cpu: number): number {
    const z = this.#z;
    const zb = zone * ZONE_WORDS;
    if (z[zb + Z_NR_LRU] === 0) return 0;
    const taken: number[] = [];
    /** Anonymous block-mates to move (start, end of their block, pfn), when there is a migratePage hook. */
    const movers: number[] = [];
    const migrate = this.#hooks.migratePage;
    let lumpy = 0;
    spinLock(z, zb + Z_LRU_LOCK, cpu, this.onSpin);
    let p = z[zb + Z_LRU_TAIL]!;
    for (let scanned = 0; p !== -1 && scanned < SWAP_CLUSTER_MAX; scanned++) {
      let older = this.#prev[p]!;
      if (this.#pageReclaimable(p)) {
        this.#lruDel(zb, p);
        taken.push(p);
      }
      if (order > 0) {
        const start = p & ~((1 << order) - 1);
        const zs = z[zb + Z_START]!;
        const ze = z[zb + Z_END]!;
        for (let q = Math.max(start, zs); q < start + (1 << order) && q < ze; q++) {
          if (migrate !== undefined && q !== p && this.#pageMigratable(q)) movers.push(start, start + (1 << order), q);
          if (q === p || !this.#pageReclaimable(q)) continue;
          if (q === older) older = this.#prev[q]!;
          this.#lruDel(zb, q);
          taken.push(q);
          lumpy++;
        }
      }
      p = older;
    }
    spinUnlock(z, zb + Z_LRU_LOCK, cpu);
    for (const q of taken) {
      this.#mapping[q] = 0;
      this.memMap.putPage(q, cpu);
    }
    Atomics.add(this.#hdr, H_NR_RECLAIMED, taken.length);
    Atomics.add(this.#hdr, H_NR_LUMPY, lumpy);
    let moved = 0;
    for (let i = 0; i < movers.length; i += 3) {
      const q = movers[i + 2]!;
      if (this.#pageMigratable(q) && migrate!(q, movers[i]!, movers[i + 1]!, cpu)) moved++;
    }
    Atomics.add(this.#hdr, H_NR_MIGRATED, moved);
    return taken.length + moved;
  }

  /** An anonymous page mapped once, unlocked, referenced only by its pte: migrate_pages could move it. */
  #pageMigratable(pfn: number): boolean {
    return (
      (this.#mapping[pfn]! & PAGE_MAPPING_ANON) !== 0 &&
      this.#count[pfn] === 1 &&
      this.#mapcount[pfn] === -1 &&
      (this.#flags[pfn]! &
        ((1 << PG_lru) |
          (1 << PG_locked) |
          (1 << PG_pinned) |
          (1 << PG_reserved) |
          (1 << PG_buddy) |
          (1 << PG_pcp))) ===
        0
    );
  }

  /** Pages on `zone`'s LRU, oldest first (call when no CPU is changing it). */
  lruList(zone: number): number[] {
    const out: number[] = [];
    for (let p = this.#z[zone * ZONE_WORDS + Z_LRU_TAIL]!; p !== -1 && out.length <= this.nrPages; p = this.#prev[p]!)
      out.push(p);
    return out;
  }

  /* ------------------------------------------------------ grouping: checks */

  /** get_pageblock_migratetype of the block holding `pfn`. */
  pageblockMigratetype(pfn: number): number {
    this.memMap.checkPfn(pfn, 'get_pageblock_migratetype');
    return this.#pageblockTypes[pfn >>> this.pageblockOrder]!;
  }

  /** The migrate type the GFP flags of `pfn`'s allocation asked for, or ALLOC_MIGRATETYPE_NONE. */
  allocMigratetype(pfn: number): number {
    this.memMap.checkPfn(pfn, 'alloc_migratetype');
    return this.#allocTypes[pfn]!;
  }

  /**
   * The seed's invariant as a debug check: a page that is pinned as a page table, or held
   * by a vmap, can never move, so it must not have been allocated MOVABLE into a MOVABLE
   * pageblock. Reports a WARNING and counts it; true when the page is fine.
   */
  checkUnmovable(pfn: number, what: string, cpu: number): boolean {
    if (!this.mobility) return true;
    if (
      this.#allocTypes[pfn] !== MIGRATE_MOVABLE ||
      this.#pageblockTypes[pfn >>> this.pageblockOrder] !== MIGRATE_MOVABLE
    )
      return true;
    Atomics.add(this.#hdr, H_NR_MOBILITY_VIOLATIONS, 1);
    this.report({
      kind: 'warning',
      comm: this.#comm(cpu),
      cpu,
      function: 'check_unmovable',
      pfn,
      lines: [
        `WARNING: at mm/page_alloc.c: pfn ${pfn} ${what}, but it was allocated __GFP_MOVABLE in a Movable pageblock`,
      ],
    });
    return false;
  }

  /** Violations checkUnmovable found, by every opener. */
  nrMobilityViolations(): number {
    return Atomics.load(this.#hdr, H_NR_MOBILITY_VIOLATIONS);
  }

  /** What grouping did: fallbacks, pageblocks relabelled, page-cache pages reclaimed (lumpy: block-mates). */
  mobilityStats(): {
    fallbacks: number;
    steals: number;
    reclaimed: number;
    lumpy: number;
    violations: number;
    migrated: number;
  } {
    return {
      migrated: Atomics.load(this.#hdr, H_NR_MIGRATED),
      fallbacks: Atomics.load(this.#hdr, H_NR_FALLBACKS),
      steals: Atomics.load(this.#hdr, H_NR_STEALS),
      reclaimed: Atomics.load(this.#hdr, H_NR_RECLAIMED),
      lumpy: Atomics.load(this.#hdr, H_NR_LUMPY),
      violations: Atomics.load(this.#hdr, H_NR_MOBILITY_VIOLATIONS),
    };
  }

  /**
   * /proc/pagetypeinfo: free pages per order and migrate type (buddy lists, in blocks), and
   * the pageblocks of each type, per populated zone (call when no CPU is allocating).
   */
  pagetypeinfo(): { zone: string; free: number[][]; blocks: number[] }[] {
    const out: { zone: string; free: number[][]; blocks: number[] }[] = [];
    const pbo = this.pageblockOrder;
    for (let zone = 0; zone < MAX_NR_ZONES; zone++) {
      const zb = zone * ZONE_WORDS;
      const start = this.#z[zb + Z_START]!;
      const end = this.#z[zb + Z_END]!;
      if (end <= start) continue;
      const free: number[][] = [];
      for (let t = 0; t < MIGRATE_TYPES; t++) {
        const row: number[] = [];
        for (let o = 0; o < MAX_ORDER; o++) {
          let n = 0;
          for (let p = this.#z[this.#freeHead(zb, t, o)]!; p !== -1 && n <= this.nrPages; p = this.#next[p]!) n++;
          row.push(n);
        }
        free.push(row);
      }
      const blocks = [0, 0, 0, 0];
      for (let b = start >>> pbo; b << pbo < end; b++) blocks[this.#pageblockTypes[b]!]!++;
      out.push({ zone: ZONE_NAMES[zone]!, free, blocks });
    }
    return out;
  }

  /**
   * Pageblocks by type, and how many are "mixed": holding allocated pages of more than one
   * mobility (as their GFP flags asked, whether grouping is on or not). Also the pages of
   * each kind in blocks of each type. Call when no CPU is allocating.
   */
  pageblockCensus(): { byType: number[]; mixed: number; pagesByBlockType: number[][] } {
    const pbo = this.pageblockOrder;
    const byType = [0, 0, 0, 0];
    const pagesByBlockType = [
      [0, 0, 0],
      [0, 0, 0],
      [0, 0, 0],
      [0, 0, 0],
    ];
    let mixed = 0;
    for (let b = 0; b < this.#pageblockTypes.length; b++) {
      const bt = this.#pageblockTypes[b]!;
      byType[bt]!++;
      let seen = 0;
      const end = Math.min(this.nrPages, (b + 1) << pbo);
      for (let p = b << pbo; p < end; p++) {
        const t = this.#allocTypes[p]!;
        if (t === ALLOC_MIGRATETYPE_NONE) continue;
        seen |= 1 << t;
        pagesByBlockType[bt]![t]!++;
      }
      if ((seen & (seen - 1)) !== 0) mixed++;
    }
    return { byType, mixed, pagesByBlockType };
  }

  /* ---------------------------------------------------------------- free */

  /** __free_pages: drop the caller's reference; the last one frees the block. */
  freePages(pfn: number, order: number, cpu: number): void {
    if (
      (order !== 0 || (pfn | 0) !== pfn || pfn < 0 || pfn >= this.nrPages) &&
      this.#misuse(this.#blockError(pfn, order, '__free_pages'), '__free_pages', cpu)
    )
      return;
    if (
      (cpu !== (cpu & 63) || cpu >= this.nrCpus) &&
      this.#misuse(this.#cpuError(cpu, '__free_pages'), '__free_pages', cpu)
    )
      return;
    if (this.memMap.putPageTestzero(pfn, '__free_pages', cpu)) {
      if (order === 0) this.#__freeHotColdPage(pfn, false, cpu, false);
      else this.#freePagesOk(pfn, order, cpu, false);
    }
  }

  /** Alias with Linux's spelling. */
  __freePages(pfn: number, order: number, cpu: number): void {
    this.freePages(pfn, order, cpu);
  }

  /** __free_page. */
  freePage(pfn: number, cpu: number): void {
    this.freePages(pfn, 0, cpu);
  }

  /** get_page / put_page (page.ts); here for convenience. */
  getPage(pfn: number): void {
    this.memMap.getPage(pfn);
  }
  putPage(pfn: number, cpu: number): void {
    this.memMap.putPage(pfn, cpu);
  }

  /**
   * free_hot_cold_page: an order-0 page whose last reference is gone goes to the HOT end
   * of this CPU's list (the next allocation on this CPU returns it), or the cold end.
   * When the list reaches `high`, `batch` pages from the cold end go back to the buddies.
   * The caller has dropped the count to 0 itself.
   */
  freeHotColdPage(pfn: number, cold: boolean, cpu: number): void {
    this.#__freeHotColdPage(pfn, cold, cpu, true);
  }

  /**
   * `lookInBlocks`: also check that the page is not inside a free buddy block. Skipped
   * when put_page_testzero has just taken the count from 1 to 0 (__free_pages, put_page):
   * the page was in use. That saves ~25 ns of a ~100 ns alloc+free pair (measured
   * locally); a page freed twice is still caught by its PG_pcp/PG_buddy mark or its count.
   */
  #__freeHotColdPage(pfn: number, cold: boolean, cpu: number, lookInBlocks: boolean): void {
    const fn = 'free_hot_cold_page';
    if (((pfn | 0) !== pfn || pfn < 0 || pfn >= this.nrPages) && this.#misuse(this.#pfnError(pfn, fn), fn, cpu)) return;
    if ((cpu !== (cpu & 63) || cpu >= this.nrCpus) && this.#misuse(this.#cpuError(cpu, fn), fn, cpu)) return;
    if ((this.#mapping[pfn]! & PAGE_MAPPING_ANON) !== 0) this.#mapping[pfn] = 0;
    if (this.#freePagesCheck(pfn, 'free_hot_cold_page', cpu, lookInBlocks)) return;
    const z = this.#z;
    const zone = this.#flags[pfn]! >>> ZONES_PGSHIFT;
    this.#allocTypes[pfn] = ALLOC_MIGRATETYPE_NONE;
    const type = this.#pageblockTypes[pfn >>> this.pageblockOrder]!;
    if (type === MIGRATE_RESERVE) {
      // A reserve block's page goes straight back to its buddies, so the block stays whole.
      const zb = zone * ZONE_WORDS;
      this.#lockZone(zb, cpu);
      this.#__freeOnePage(zb, pfn, 0);
      this.#unlockZone(zb, cpu);
      return;
    }
    const pb = this.#pcpBase(zone, cpu);
    this.#flags[pfn] = (this.#flags[pfn]! | (1 << PG_pcp)) >>> 0;
    if (!cold) {
      const h = pb + P_HEAD + 2 * type;
      const head = z[h]!;
      this.#next[pfn] = head;
      this.#prev[pfn] = -1;
      if (head === -1) z[pb + P_TAIL + 2 * type] = pfn;
      else this.#prev[head] = pfn;
      z[h] = pfn;
    } else {
      this.#pcpAddTail(pb, type, pfn);
    }
    if (++z[pb + P_COUNT]! >= z[pb + P_HIGH]!) {
      this.#freePagesBulk(zone * ZONE_WORDS, pb, z[pb + P_BATCH]!, cpu);
    }
  }

  /** free_hot_page. */
  freeHotPage(pfn: number, cpu: number): void {
    this.freeHotColdPage(pfn, false, cpu);
  }

  /** free_cold_page: to the cold end (pages whose contents are not wanted in cache soon). */
  freeColdPage(pfn: number, cpu: number): void {
    this.freeHotColdPage(pfn, true, cpu);
  }

  /** PageFreer: put_page took an order-0 page's count from 1 to 0 (__page_cache_release). */
  __putSinglePage(pfn: number, cpu: number): void {
    this.#__freeHotColdPage(pfn, false, cpu, false);
  }

  /** free_compound_page: the compound destructor, run when the head's count reaches 0. */
  freeCompoundPage(pfn: number, order: number, cpu: number): void {
    this.#freePagesOk(pfn, order, cpu, false);
  }

  /** __free_pages_ok: a block of order > 0 (or a compound page) whose count the caller dropped to 0. */
  __freePagesOk(pfn: number, order: number, cpu: number): void {
    this.#freePagesOk(pfn, order, cpu, true);
  }

  /** `lookInBlocks` as for __freeHotColdPage: false after a 1 -> 0 put of the head. */
  #freePagesOk(pfn: number, order: number, cpu: number, lookInBlocks: boolean): void {
    const fn = '__free_pages_ok';
    if (this.#misuse(this.#blockError(pfn, order, fn) ?? this.#cpuError(cpu, fn), fn, cpu)) return;
    if ((this.#flags[pfn]! & ((1 << PG_head) | (1 << PG_tail))) !== 0) this.#destroyCompoundPage(pfn, order, cpu);
    let keep = 0;
    for (let p = pfn; p < pfn + (1 << order); p++)
      keep += this.#freePagesCheck(p, '__free_pages_ok', cpu, lookInBlocks);
    if (keep !== 0) return;
    this.#allocTypes.fill(ALLOC_MIGRATETYPE_NONE, pfn, pfn + (1 << order));
    const zb = (this.#flags[pfn]! >>> ZONES_PGSHIFT) * ZONE_WORDS;
    this.#lockZone(zb, cpu);
    this.#__freeOnePage(zb, pfn, order);
    this.#unlockZone(zb, cpu);
  }

  /** destroy_compound_page: check and clear the compound marks of a block being freed. */
  #destroyCompoundPage(pfn: number, order: number, cpu: number): void {
    if ((this.#flags[pfn]! & (1 << PG_head)) === 0 || this.#order[pfn] !== order) {
      this.badPage(pfn, 'destroy_compound_page', 'compound', cpu);
    }
    this.#flags[pfn] = (this.#flags[pfn]! & ~((1 << PG_head) | (1 << PG_tail))) >>> 0;
    this.#order[pfn] = 0;
    for (let p = pfn + 1; p < pfn + (1 << order); p++) {
      if ((this.#flags[p]! & (1 << PG_tail)) === 0 || this.#firstPage[p] !== pfn) {
        this.badPage(p, 'destroy_compound_page', 'compound', cpu);
      }
      this.#flags[p] = (this.#flags[p]! & ~((1 << PG_head) | (1 << PG_tail))) >>> 0;
      this.#firstPage[p] = -1;
    }
  }

  /**
   * free_pages_check: returns non-zero when the page must not be freed. A page that is
   * already free is reported as a double free and left alone; any other bad state is
   * reported and fixed up; PG_reserved (and a compound mark) keeps the page out.
   */
  #freePagesCheck(pfn: number, fn: string, cpu: number, lookInBlocks: boolean): number {
    // Plain read: the page is the caller's. (Atomics.load is a ~13 ns runtime call here.)
    let f = this.#flags[pfn]! | 0;
    if ((f & ((1 << PG_buddy) | (1 << PG_pcp))) !== 0 || (lookInBlocks && this.#insideFreeBlock(pfn))) {
      this.badPage(pfn, fn, 'double_free', cpu);
      return 1;
    }
    if (
      this.#mapcount[pfn] !== -1 ||
      this.#mapping[pfn] !== 0 ||
      this.#count[pfn] !== 0 ||
      (f & PAGE_FLAGS_CHECK_AT_FREE) !== 0
    ) {
      this.badPage(pfn, fn, 'bad_state', cpu);
      f = this.#flags[pfn]! | 0;
    }
    if ((f & (1 << PG_dirty)) !== 0) this.#flags[pfn] = (f & ~(1 << PG_dirty)) >>> 0;
    return (f & PAGE_FLAGS_KEEP_AT_FREE) !== 0 ? 1 : 0;
  }

  /**
   * Is `pfn` inside a free buddy block (not as its head)? Looks at the aligned heads
   * above it, order by order, without zone->lock. Plain reads keep this cheap (it runs for
   * every page freed: 10 Atomics.load cost ~80 ns, plain reads ~5 ns, measured locally); a
   * hit is confirmed with Atomics.load, and PG_buddy is published after the order it guards.
   */
  #insideFreeBlock(pfn: number): boolean {
    const flags = this.#flags;
    const order = this.#order;
    const start = this.#z[(flags[pfn]! >>> ZONES_PGSHIFT) * ZONE_WORDS + Z_START]!;
    for (let o = 1; o < MAX_ORDER; o++) {
      const head = pfn & ~((1 << o) - 1);
      if (head < start) return false;
      if (
        (flags[head]! & (1 << PG_buddy)) !== 0 &&
        head !== pfn &&
        order[head]! >= o &&
        (Atomics.load(this.#flagsI32, head) & (1 << PG_buddy)) !== 0 &&
        order[head]! >= o
      ) {
        return true;
      }
    }
    return false;
  }

  /**
   * bad_page: report with Linux's text, then fix the page up as 2.6.15 did -- except a
   * page that is already free, which belongs to the allocator and is left as it is.
   */
  badPage(pfn: number, fn: string, reason: BadPageReport['reason'], cpu: number): void {
    const comm = this.#comm(cpu);
    const flags = this.#flags[pfn]! >>> 0;
    const mapping = this.#mapping[pfn]!;
    const mapcount = this.#mapcount[pfn]! + 1;
    const count = this.#count[pfn]!;
    const page = pagePointer(pfn, this.paging);
    Atomics.add(this.#hdr, H_NR_BAD_PAGES, 1);
    this.report({
      kind: 'bad_page',
      reason,
      function: fn,
      comm,
      cpu,
      pfn,
      page,
      flags,
      mapping,
      mapcount,
      count,
      lines: [
        `Bad page state at ${fn} (in process '${comm}', page ${page})`,
        `flags:0x${formatPageFlags(flags, this.paging)} mapping:${formatPointer(mapping, this.paging)} mapcount:${mapcount} count:${count}`,
        'Trying to fix it up, but a reboot is needed',
      ],
    });
    if (reason === 'double_free') return;
    Atomics.and(this.#flagsI32, pfn, ~PAGE_FLAGS_FIXUP);
    this.#count[pfn] = 0;
    this.#mapcount[pfn] = -1;
    this.#mapping[pfn] = 0;
  }

  /** PageFreer: put_page found a count already at 0. */
  reportBadPut(pfn: number, fn: string, cpu: number): void {
    this.badPage(pfn, fn, 'double_free', cpu);
  }

  /** Record a report (also used by the slab allocator). */
  report(r: MmReport): void {
    if (this.reports.length >= MAX_KEPT_REPORTS) this.reports.shift();
    this.reports.push(r);
    this.#hooks.onReport?.(r);
  }

  #comm(cpu: number): string {
    return this.#hooks.comm?.(cpu) ?? 'swapper';
  }

  /* ------------------------------------------------------------- boot, drain */

  /** Give a reserved boot block to the buddies (free_all_bootmem). Format time only. */
  #freeBootmemBlock(pfn: number, order: number): void {
    for (let p = pfn; p < pfn + (1 << order); p++) {
      this.#flags[p] = (this.#flags[p]! & ~(1 << PG_reserved)) >>> 0;
      this.#count[p] = 0;
    }
    const zb = (this.#flags[pfn]! >>> ZONES_PGSHIFT) * ZONE_WORDS;
    this.#__freeOnePage(zb, pfn, order);
  }

  /**
   * __free_pages_bootmem: give a page the domain builder reserved (below firstFreePfn) to
   * the allocator once the kernel no longer needs it.
   */
  freeBootmemPage(pfn: number, cpu: number): void {
    const fn = 'free_bootmem';
    if (this.#misuse(this.#pfnError(pfn, fn) ?? this.#cpuError(cpu, fn), fn, cpu)) return;
    if (!this.memMap.PageReserved(pfn)) {
      this.#misuse(`free_bootmem: pfn ${pfn} is not a reserved boot page`, fn, cpu);
      return;
    }
    this.memMap.ClearPageReserved(pfn);
    this.#count[pfn] = 1;
    this.freePages(pfn, 0, cpu);
  }

  /** drain_local_pages: this CPU's lists, all zones, back to the buddies. */
  drainLocalPages(cpu: number): void {
    if (this.#misuse(this.#cpuError(cpu, 'drain_local_pages'), 'drain_local_pages', cpu)) return;
    for (let zone = 0; zone < MAX_NR_ZONES; zone++) {
      const pb = this.#pcpBase(zone, cpu);
      const n = this.#z[pb + P_COUNT]!;
      if (n > 0) this.#freePagesBulk(zone * ZONE_WORDS, pb, n, cpu);
    }
  }

  /* ------------------------------------------------------------ statistics */

  /** zone->free_pages: pages in the buddy lists of `zone`. */
  zoneFreePages(zone: number): number {
    return Atomics.load(this.#z, zone * ZONE_WORDS + Z_FREE_PAGES);
  }

  /** pcp->count of (zone, cpu). */
  pcpCount(zone: number, cpu: number): number {
    return Atomics.load(this.#z, this.#pcpBase(zone, cpu) + P_COUNT);
  }

  /** All free pages: buddies plus every CPU's lists (other CPUs' counts read racily). */
  nrFreePages(): number {
    let n = 0;
    for (let zone = 0; zone < MAX_NR_ZONES; zone++) {
      n += this.zoneFreePages(zone);
      for (let cpu = 0; cpu < this.nrCpus; cpu++) n += this.pcpCount(zone, cpu);
    }
    return n;
  }

  /** bad_page reports made by every opener of this buffer. */
  nrBadPages(): number {
    return Atomics.load(this.#hdr, H_NR_BAD_PAGES);
  }

  /** Failed allocations by every opener. */
  nrAllocFailures(): number {
    return Atomics.load(this.#hdr, H_NR_ALLOC_FAILURES);
  }

  /** The zone a pfn belongs to. */
  pageZone(pfn: number): number {
    this.memMap.checkPfn(pfn, 'page_zone');
    return this.#flags[pfn]! >>> ZONES_PGSHIFT;
  }

  /** /proc/zoneinfo, roughly. */
  zoneInfo(zone: number): {
    name: string;
    start: number;
    end: number;
    present: number;
    free: number;
    min: number;
    low: number;
    high: number;
    nrFree: number[];
    pcp: { count: number; high: number; batch: number }[];
  } {
    const z = this.#z;
    const zb = zone * ZONE_WORDS;
    const nrFree: number[] = [];
    for (let o = 0; o < MAX_ORDER; o++) nrFree.push(z[zb + Z_NR_FREE + o]!);
    const pcp = [];
    for (let cpu = 0; cpu < this.nrCpus; cpu++) {
      const pb = this.#pcpBase(zone, cpu);
      pcp.push({ count: z[pb + P_COUNT]!, high: z[pb + P_HIGH]!, batch: z[pb + P_BATCH]! });
    }
    return {
      name: ZONE_NAMES[zone]!,
      start: z[zb + Z_START]!,
      end: z[zb + Z_END]!,
      present: z[zb + Z_PRESENT]!,
      free: z[zb + Z_FREE_PAGES]!,
      min: z[zb + Z_MIN]!,
      low: z[zb + Z_LOW]!,
      high: z[zb + Z_HIGH]!,
      nrFree,
      pcp,
    };
  }

  /** The per-CPU lists of (zone, cpu), hot end first: one type's list, or all of them in type order. */
  pcpList(zone: number, cpu: number, type?: number): number[] {
    const out: number[] = [];
    for (let t = type ?? 0; t < (type === undefined ? MIGRATE_PCPTYPES : type + 1); t++) {
      for (
        let p = this.#z[this.#pcpBase(zone, cpu) + P_HEAD + 2 * t]!;
        p !== -1 && out.length <= this.nrPages;
        p = this.#next[p]!
      )
        out.push(p);
    }
    return out;
  }

  /** free_area[order] of `zone`, list head first: one type's list, or all of them in type order. */
  freeAreaList(zone: number, order: number, type?: number): number[] {
    const out: number[] = [];
    for (let t = type ?? 0; t < (type === undefined ? MIGRATE_TYPES : type + 1); t++) {
      for (
        let p = this.#z[this.#freeHead(zone * ZONE_WORDS, t, order)]!;
        p !== -1 && out.length <= this.nrPages;
        p = this.#next[p]!
      )
        out.push(p);
    }
    return out;
  }

  /**
   * Audit of the free lists (call when no CPU is allocating): links, marks, orders,
   * counts, and that no page is on two lists or marked free while on none.
   * Returns the problems found; empty when consistent.
   */
  checkFreeLists(): string[] {
    const problems: string[] = [];
    const owner = new Int32Array(this.nrPages).fill(-1); // -1 none, else an id of the list
    const z = this.#z;
    let listId = 0;
    for (let zone = 0; zone < MAX_NR_ZONES; zone++) {
      const zb = zone * ZONE_WORDS;
      const start = z[zb + Z_START]!;
      const end = z[zb + Z_END]!;
      let free = 0;
      for (let o = 0; o < MAX_ORDER; o++) {
        let n = 0;
        for (let t = 0; t < MIGRATE_TYPES; t++, listId++) {
          let prev = -1;
          for (let p = z[this.#freeHead(zb, t, o)]!; p !== -1; p = this.#next[p]!) {
            if (p < start || p + (1 << o) > end) {
              problems.push(`${ZONE_NAMES[zone]} order ${o}: block ${p} outside the zone`);
              break;
            }
            if (this.#prev[p] !== prev)
              problems.push(`${ZONE_NAMES[zone]} order ${o}: pfn ${p} prev link ${this.#prev[p]} != ${prev}`);
            if ((this.#flags[p]! & (1 << PG_buddy)) === 0)
              problems.push(`${ZONE_NAMES[zone]} order ${o}: pfn ${p} lacks PG_buddy`);
            if (this.#order[p] !== o)
              problems.push(`${ZONE_NAMES[zone]} order ${o}: pfn ${p} has order ${this.#order[p]}`);
            if (this.#priv[p] !== t)
              problems.push(`${ZONE_NAMES[zone]} order ${o}: pfn ${p} on list ${t} says ${this.#priv[p]}`);
            if (p % (1 << o) !== 0) problems.push(`${ZONE_NAMES[zone]} order ${o}: pfn ${p} misaligned`);
            if (!this.mobility && t !== MIGRATE_UNMOVABLE)
              problems.push(`${ZONE_NAMES[zone]} order ${o}: pfn ${p} on list ${t} with grouping off`);
            for (let q = p; q < p + (1 << o); q++) {
              if (owner[q] !== -1) {
                problems.push(`pfn ${q} is on two free lists`);
                break;
              }
              owner[q] = listId;
              if (this.#count[q] !== 0) problems.push(`free pfn ${q} has count ${this.#count[q]}`);
            }
            prev = p;
            if (++n > this.nrPages) {
              problems.push(`${ZONE_NAMES[zone]} order ${o}: cycle`);
              break;
            }
          }
        }
        if (n !== z[zb + Z_NR_FREE + o])
          problems.push(`${ZONE_NAMES[zone]} order ${o}: nr_free ${z[zb + Z_NR_FREE + o]} but ${n} on the list`);
        free += n << o;
      }
      if (free !== z[zb + Z_FREE_PAGES])
        problems.push(`${ZONE_NAMES[zone]}: free_pages ${z[zb + Z_FREE_PAGES]} but ${free} in free_area`);
      for (let cpu = 0; cpu < this.nrCpus; cpu++) {
        const pb = this.#pcpBase(zone, cpu);
        let n = 0;
        for (let t = 0; t < MIGRATE_PCPTYPES; t++, listId++) {
          let prev = -1;
          let len = 0;
          for (let p = z[pb + P_HEAD + 2 * t]!; p !== -1; p = this.#next[p]!) {
            if (p < start || p >= end) {
              problems.push(`pcp ${ZONE_NAMES[zone]}/cpu${cpu}: pfn ${p} outside the zone`);
              break;
            }
            if (this.#prev[p] !== prev)
              problems.push(`pcp ${ZONE_NAMES[zone]}/cpu${cpu}: pfn ${p} prev link ${this.#prev[p]} != ${prev}`);
            if ((this.#flags[p]! & (1 << PG_pcp)) === 0)
              problems.push(`pcp ${ZONE_NAMES[zone]}/cpu${cpu}: pfn ${p} lacks PG_pcp`);
            if (owner[p] !== -1) problems.push(`pfn ${p} is on two free lists`);
            owner[p] = listId;
            prev = p;
            n++;
            if (++len > this.nrPages) {
              problems.push(`pcp ${ZONE_NAMES[zone]}/cpu${cpu}: cycle`);
              break;
            }
          }
          if (z[pb + P_TAIL + 2 * t] !== prev)
            problems.push(
              `pcp ${ZONE_NAMES[zone]}/cpu${cpu} list ${t}: tail ${z[pb + P_TAIL + 2 * t]} != last ${prev}`,
            );
        }
        if (n !== z[pb + P_COUNT])
          problems.push(`pcp ${ZONE_NAMES[zone]}/cpu${cpu}: count ${z[pb + P_COUNT]} but ${n} on the lists`);
      }
    }
    for (let p = 0; p < this.nrPages; p++) {
      const f = this.#flags[p]!;
      if ((f & ((1 << PG_buddy) | (1 << PG_pcp))) !== 0 && owner[p] === -1) {
        problems.push(`pfn ${p} is marked ${f & (1 << PG_buddy) ? 'PG_buddy' : 'PG_pcp'} but on no list`);
      }
    }
    return problems;
  }
}
