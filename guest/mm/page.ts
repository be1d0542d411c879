/*
 * struct page, as typed-array columns over one SharedArrayBuffer per domain.
 *
 * There is no object per page: page `pfn` is index `pfn` of every column. Every vCPU worker
 * opens the same buffer with `new MemMap(sab, nrPages, { byteOffset })` and sees the same
 * mem_map. Column layout comes from memMapLayout() alone, so all openers agree.
 *
 *   flags      Uint32  PG_* bits (Linux 2.6.2x numbers) and, in bits 30-31, the zone
 *                      number (page_zonenum), exactly where a 32-bit Linux keeps it
 *   _count     Int32   references; 0 for a free page, 1 after allocation (head page only)
 *   _mapcount  Int32   page-table mappings minus one: -1 = unmapped
 *   mapping    Int32   0 = NULL; an address_space handle (even); an anon_vma handle with
 *                      PAGE_MAPPING_ANON (bit 0) set; for PageSlab pages, the slab cache id
 *                      (SLUB's reuse of the field)
 *   private    Int32   owner's word (buffer heads, swap entry, slab bookkeeping)
 *   index      Int32   page->index (offset of the page in its mapping, swap offset)
 *   lruNext    Int32   page->lru, as pfn links, -1 terminated. Free pages: the allocator's
 *   lruPrev    Int32     free lists. Allocated pages: the owner's (LRU, pgd_list, slab lists)
 *   firstPage  Int32   compound tail pages: pfn of the head (page->first_page); else -1
 *   order      Int32   compound head: compound_order; head of a free buddy block: its order
 *
 * Handles, not pointers: mapping 0 is NULL, as "mapping:00000000" in bad_page's report.
 *
 * Flag updates from code that does not own the page exclusively use the atomic helpers
 * (SetPageX / ClearPageX, Atomics.or / Atomics.and, like set_bit). The __SetPageX forms are
 * for pages the caller owns alone (just allocated, or on a free list under zone->lock).
 */
import type { PagingMode } from '../../src/abi/xen.js';

/* --------------------------------------------------------------- page flags */

export const PG_locked = 0;
export const PG_error = 1;
export const PG_referenced = 2;
export const PG_uptodate = 3;
export const PG_dirty = 4;
export const PG_lru = 5;
export const PG_active = 6;
export const PG_slab = 7;
export const PG_owner_priv_1 = 8;
/** Filesystems' use of PG_owner_priv_1. */
export const PG_checked = PG_owner_priv_1;
/** Xen: a pinned page-table page. Linux aliases it with PG_owner_priv_1 too. */
export const PG_pinned = PG_owner_priv_1;
export const PG_arch_1 = 9;
/** flush_dcache_page's deferred flush (ARM's use of PG_arch_1). */
export const PG_dcache_dirty = PG_arch_1;
export const PG_reserved = 10;
export const PG_private = 11;
export const PG_writeback = 12;
/** Head of a compound page (2.6.2x called every compound page PG_compound). */
export const PG_compound = 14;
export const PG_head = PG_compound;
export const PG_swapcache = 15;
export const PG_mappedtodisk = 16;
export const PG_reclaim = 17;
/** Head of a free block in the buddy allocator; its order is in the `order` column. */
export const PG_buddy = 19;
/**
 * Tail of a compound page. Linux 2.6.2x marked tails with PG_compound|PG_reclaim; a bit of
 * its own keeps PG_reclaim honest (later kernels did the same).
 */
export const PG_tail = 20;
/**
 * pvmmu's own: an order-0 free page on a per-CPU hot/cold list. Linux has no such mark;
 * it lets free_pages_check catch a page freed twice while it sits on a pcp list.
 */
export const PG_pcp = 21;

export const PG_NAMES: Readonly<Record<number, string>> = {
  [PG_locked]: 'locked',
  [PG_error]: 'error',
  [PG_referenced]: 'referenced',
  [PG_uptodate]: 'uptodate',
  [PG_dirty]: 'dirty',
  [PG_lru]: 'lru',
  [PG_active]: 'active',
  [PG_slab]: 'slab',
  [PG_owner_priv_1]: 'owner_priv_1/pinned',
  [PG_arch_1]: 'arch_1',
  [PG_reserved]: 'reserved',
  [PG_private]: 'private',
  [PG_writeback]: 'writeback',
  [PG_compound]: 'head',
  [PG_swapcache]: 'swapcache',
  [PG_mappedtodisk]: 'mappedtodisk',
  [PG_reclaim]: 'reclaim',
  [PG_buddy]: 'buddy',
  [PG_tail]: 'tail',
  [PG_pcp]: 'pcp',
};

/** "referenced|dirty|reserved" for a flags word (zone bits left out). */
export function pageFlagNames(flags: number): string {
  const out: string[] = [];
  for (let b = 0; b < ZONES_PGSHIFT; b++) {
    if ((flags >>> b) & 1) out.push(PG_NAMES[b] ?? `bit${b}`);
  }
  return out.join('|');
}

/* -------------------------------------------------------------------- zones */

/*
 * Zone numbers as in 2.6.15, where ZONE_DMA32 sat between DMA and NORMAL: our DMA32 is
 * always empty, but keeping its number makes a lowmem page print "flags:0x80000414" in
 * bad_page exactly as in the seed report (zone 2 in bits 30-31).
 */
export const ZONE_DMA = 0;
export const ZONE_DMA32 = 1;
export const ZONE_NORMAL = 2;
export const ZONE_HIGHMEM = 3;
export const MAX_NR_ZONES = 4;
export const ZONE_NAMES: readonly string[] = ['DMA', 'DMA32', 'Normal', 'HighMem'];
export const ZONES_PGSHIFT = 30;
export const ZONES_MASK = 3;
/** The flag bits proper (everything below the zone field). */
export const PAGE_FLAGS_MASK = (1 << ZONES_PGSHIFT) - 1;

/* ------------------------------------------------------------------ mapping */

/** Low bit of page->mapping: the value is an anon_vma, not an address_space. */
export const PAGE_MAPPING_ANON = 1;
/** The handle of swapper_space (address_space id 1). */
export const SWAPPER_SPACE = 2;

/** page->mapping value for address_space number `id` (id >= 1). */
export function mappingOfAddressSpace(id: number): number {
  return id << 1;
}
/** page->mapping value for anon_vma number `id` (id >= 0). */
export function mappingOfAnonVma(id: number): number {
  return (id << 1) | PAGE_MAPPING_ANON;
}
/** address_space number of a (non-anon, non-NULL) page->mapping value. */
export function addressSpaceId(mapping: number): number {
  return mapping >>> 1;
}

/* ----------------------------------------------------- struct page addresses */

/** The fake mem_map base for %p of a struct page in pae: 0xc1000000 + pfn * 32. */
export const MEM_MAP_BASE_PAE = 0xc1000000;
export const STRUCT_PAGE_SIZE_PAE = 32;
/** x86_64: the vmemmap base (0xffffe20000000000), 64-byte struct pages. */
export const STRUCT_PAGE_SIZE_X86_64 = 64;

/** %p of page `pfn`'s struct page, as a kernel would print it. */
export function pagePointer(pfn: number, paging: PagingMode): string {
  if (paging === 'pae') {
    return (MEM_MAP_BASE_PAE + pfn * STRUCT_PAGE_SIZE_PAE).toString(16).padStart(8, '0');
  }
  return `ffffe2${(pfn * STRUCT_PAGE_SIZE_X86_64).toString(16).padStart(10, '0')}`;
}

/** %0*lx of page->flags: 8 digits in pae, 16 in x86_64 (zone bits then sit at 62-63). */
export function formatPageFlags(flags: number, paging: PagingMode): string {
  if (paging === 'pae') return (flags >>> 0).toString(16).padStart(8, '0');
  const hi = (flags >>> ZONES_PGSHIFT) << ZONES_PGSHIFT;
  return (hi >>> 0).toString(16).padStart(8, '0') + ((flags & PAGE_FLAGS_MASK) >>> 0).toString(16).padStart(8, '0');
}

/** %p of a handle (page->mapping). */
export function formatPointer(value: number, paging: PagingMode): string {
  return (value >>> 0).toString(16).padStart(paging === 'pae' ? 8 : 16, '0');
}

/* ------------------------------------------------------------------- layout */

export const MEM_MAP_COLUMNS = [
  'flags',
  'count',
  'mapcount',
  'mapping',
  'private',
  'index',
  'lruNext',
  'lruPrev',
  'firstPage',
  'order',
] as const;
export type MemMapColumn = (typeof MEM_MAP_COLUMNS)[number];

export interface MemMapLayout {
  readonly nrPages: number;
  readonly byteOffset: number;
  /** Bytes from byteOffset to the end of the last column. */
  readonly bytes: number;
  /** Byte offset (absolute, in the SAB) of each column. */
  readonly columns: Readonly<Record<MemMapColumn, number>>;
}

/** Columns start on 64-byte boundaries (a cache line) so writers of two columns do not share one. */
const COLUMN_ALIGN = 64;

function alignUp(n: number, a: number): number {
  return Math.ceil(n / a) * a;
}

/** Where each column of an `nrPages` mem_map lives, starting at `byteOffset`. */
export function memMapLayout(nrPages: number, byteOffset = 0): MemMapLayout {
  if (!Number.isInteger(nrPages) || nrPages < 1 || nrPages > 2 ** 26) {
    throw new RangeError(`memMapLayout: nrPages must be an integer in 1..${2 ** 26}, got ${nrPages}`);
  }
  if (!Number.isInteger(byteOffset) || byteOffset < 0 || byteOffset % COLUMN_ALIGN !== 0) {
    throw new RangeError(
      `memMapLayout: byteOffset must be a non-negative multiple of ${COLUMN_ALIGN}, got ${byteOffset}`,
    );
  }
  const colBytes = alignUp(nrPages * 4, COLUMN_ALIGN);
  const columns = {} as Record<MemMapColumn, number>;
  let off = byteOffset;
  for (const c of MEM_MAP_COLUMNS) {
    columns[c] = off;
    off += colBytes;
  }
  return { nrPages, byteOffset, bytes: off - byteOffset, columns };
}

/** Bytes a mem_map of `nrPages` takes. */
export function memMapBytes(nrPages: number): number {
  return memMapLayout(nrPages).bytes;
}

/* ----------------------------------------------------------------- the freer */

/** What put_page needs from the page allocator (PageAllocator implements it). */
export interface PageFreer {
  /** __put_single_page: put_page took an order-0 page's count from 1 to 0 on `cpu`. */
  __putSinglePage(pfn: number, cpu: number): void;
  /** free_compound_page: the last reference to compound head `pfn` was dropped. */
  freeCompoundPage(pfn: number, order: number, cpu: number): void;
  /** put_page on a page whose count was already 0 (reported, never thrown). */
  reportBadPut(pfn: number, fn: string, cpu: number): void;
}

/** What flush_dcache_page learns from an address_space (mapping_mapped). */
export interface AddressSpaceLike {
  /** Some user vma maps this address_space (its i_mmap tree is not empty). */
  readonly mapped: boolean;
}

export interface MemMapOptions {
  /** Where the mem_map starts in the SAB (default 0). */
  byteOffset?: number;
  /** Decides how %p and flags print (default 'pae'). */
  paging?: PagingMode;
  /**
   * page_mapping() returns NULL for PageSlab pages: the SLUB fix of June 2007. Turn it off
   * to reproduce the oops in flush_dcache_page (default true).
   */
  slubPageMappingFix?: boolean;
}

/* ------------------------------------------------------------------ MemMap */

export class MemMap {
  readonly sab: SharedArrayBuffer;
  readonly nrPages: number;
  readonly layout: MemMapLayout;
  readonly paging: PagingMode;
  slubPageMappingFix: boolean;

  readonly flags: Uint32Array;
  readonly count: Int32Array;
  readonly mapcount: Int32Array;
  readonly mapping: Int32Array;
  readonly private: Int32Array;
  readonly index: Int32Array;
  readonly lruNext: Int32Array;
  readonly lruPrev: Int32Array;
  readonly firstPage: Int32Array;
  readonly order: Int32Array;
  /** flags seen as Int32, for Atomics.or/and/load on it. */
  readonly flagsI32: Int32Array;

  #freer: PageFreer | undefined;

  constructor(sab: SharedArrayBuffer, nrPages: number, opts: MemMapOptions = {}) {
    const layout = memMapLayout(nrPages, opts.byteOffset ?? 0);
    if (layout.byteOffset + layout.bytes > sab.byteLength) {
      throw new RangeError(
        `MemMap: ${nrPages} pages need ${layout.byteOffset + layout.bytes} bytes, the SAB has ${sab.byteLength}`,
      );
    }
    this.sab = sab;
    this.nrPages = nrPages;
    this.layout = layout;
    this.paging = opts.paging ?? 'pae';
    this.slubPageMappingFix = opts.slubPageMappingFix ?? true;
    const c = layout.columns;
    this.flags = new Uint32Array(sab, c.flags, nrPages);
    this.flagsI32 = new Int32Array(sab, c.flags, nrPages);
    this.count = new Int32Array(sab, c.count, nrPages);
    this.mapcount = new Int32Array(sab, c.mapcount, nrPages);
    this.mapping = new Int32Array(sab, c.mapping, nrPages);
    this.private = new Int32Array(sab, c.private, nrPages);
    this.index = new Int32Array(sab, c.index, nrPages);
    this.lruNext = new Int32Array(sab, c.lruNext, nrPages);
    this.lruPrev = new Int32Array(sab, c.lruPrev, nrPages);
    this.firstPage = new Int32Array(sab, c.firstPage, nrPages);
    this.order = new Int32Array(sab, c.order, nrPages);
  }

  /**
   * memmap_init_zone: every page reserved, one reference, unmapped, in zone `zoneOf(pfn)`.
   * Done once by whoever formats the buffer, before any other opener uses it.
   */
  initPages(zoneOf: (pfn: number) => number): void {
    for (let pfn = 0; pfn < this.nrPages; pfn++) {
      this.flags[pfn] = ((zoneOf(pfn) << ZONES_PGSHIFT) | (1 << PG_reserved)) >>> 0;
    }
    this.count.fill(1);
    this.mapcount.fill(-1);
    this.mapping.fill(0);
    this.private.fill(0);
    this.index.fill(0);
    this.lruNext.fill(-1);
    this.lruPrev.fill(-1);
    this.firstPage.fill(-1);
    this.order.fill(0);
  }

  /** Who frees pages for put_page (the PageAllocator opened on this mem_map). */
  setFreer(freer: PageFreer): void {
    this.#freer = freer;
  }

  checkPfn(pfn: number, fn: string): void {
    if (!Number.isInteger(pfn) || pfn < 0 || pfn >= this.nrPages) {
      throw new RangeError(`${fn}: pfn ${pfn} is outside the mem_map (0..${this.nrPages - 1})`);
    }
  }

  /* ---------------------------------------------------------- flag helpers */

  testPageFlag(pfn: number, bit: number): boolean {
    return ((this.flags[pfn]! >>> bit) & 1) !== 0;
  }
  /** set_bit: atomic. */
  setPageFlag(pfn: number, bit: number): void {
    Atomics.or(this.flagsI32, pfn, 1 << bit);
  }
  /** clear_bit: atomic. */
  clearPageFlag(pfn: number, bit: number): void {
    Atomics.and(this.flagsI32, pfn, ~(1 << bit));
  }
  /** test_and_set_bit. */
  testSetPageFlag(pfn: number, bit: number): boolean {
    return ((Atomics.or(this.flagsI32, pfn, 1 << bit) >>> bit) & 1) !== 0;
  }
  /** test_and_clear_bit. */
  testClearPageFlag(pfn: number, bit: number): boolean {
    return ((Atomics.and(this.flagsI32, pfn, ~(1 << bit)) >>> bit) & 1) !== 0;
  }
  /** __set_bit: for a page the caller owns alone. */
  __setPageFlag(pfn: number, bit: number): void {
    this.flags[pfn] = (this.flags[pfn]! | (1 << bit)) >>> 0;
  }
  /** __clear_bit: for a page the caller owns alone. */
  __clearPageFlag(pfn: number, bit: number): void {
    this.flags[pfn] = (this.flags[pfn]! & ~(1 << bit)) >>> 0;
  }

  PageLocked(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_locked);
  }
  SetPageLocked(pfn: number): void {
    this.setPageFlag(pfn, PG_locked);
  }
  ClearPageLocked(pfn: number): void {
    this.clearPageFlag(pfn, PG_locked);
  }
  /** TestSetPageLocked: true when it was already locked (lock_page's trylock). */
  TestSetPageLocked(pfn: number): boolean {
    return this.testSetPageFlag(pfn, PG_locked);
  }
  PageError(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_error);
  }
  SetPageError(pfn: number): void {
    this.setPageFlag(pfn, PG_error);
  }
  ClearPageError(pfn: number): void {
    this.clearPageFlag(pfn, PG_error);
  }
  PageReferenced(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_referenced);
  }
  SetPageReferenced(pfn: number): void {
    this.setPageFlag(pfn, PG_referenced);
  }
  ClearPageReferenced(pfn: number): void {
    this.clearPageFlag(pfn, PG_referenced);
  }
  PageUptodate(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_uptodate);
  }
  SetPageUptodate(pfn: number): void {
    this.setPageFlag(pfn, PG_uptodate);
  }
  ClearPageUptodate(pfn: number): void {
    this.clearPageFlag(pfn, PG_uptodate);
  }
  PageDirty(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_dirty);
  }
  SetPageDirty(pfn: number): void {
    this.setPageFlag(pfn, PG_dirty);
  }
  ClearPageDirty(pfn: number): void {
    this.clearPageFlag(pfn, PG_dirty);
  }
  TestClearPageDirty(pfn: number): boolean {
    return this.testClearPageFlag(pfn, PG_dirty);
  }
  PageLRU(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_lru);
  }
  SetPageLRU(pfn: number): void {
    this.setPageFlag(pfn, PG_lru);
  }
  ClearPageLRU(pfn: number): void {
    this.clearPageFlag(pfn, PG_lru);
  }
  PageActive(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_active);
  }
  SetPageActive(pfn: number): void {
    this.setPageFlag(pfn, PG_active);
  }
  ClearPageActive(pfn: number): void {
    this.clearPageFlag(pfn, PG_active);
  }
  PageSlab(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_slab);
  }
  __SetPageSlab(pfn: number): void {
    this.__setPageFlag(pfn, PG_slab);
  }
  __ClearPageSlab(pfn: number): void {
    this.__clearPageFlag(pfn, PG_slab);
  }
  PagePinned(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_pinned);
  }
  SetPagePinned(pfn: number): void {
    this.setPageFlag(pfn, PG_pinned);
  }
  ClearPagePinned(pfn: number): void {
    this.clearPageFlag(pfn, PG_pinned);
  }
  PageChecked(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_checked);
  }
  PageReserved(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_reserved);
  }
  SetPageReserved(pfn: number): void {
    this.setPageFlag(pfn, PG_reserved);
  }
  ClearPageReserved(pfn: number): void {
    this.clearPageFlag(pfn, PG_reserved);
  }
  PagePrivate(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_private);
  }
  SetPagePrivate(pfn: number): void {
    this.setPageFlag(pfn, PG_private);
  }
  ClearPagePrivate(pfn: number): void {
    this.clearPageFlag(pfn, PG_private);
  }
  PageWriteback(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_writeback);
  }
  SetPageWriteback(pfn: number): void {
    this.setPageFlag(pfn, PG_writeback);
  }
  ClearPageWriteback(pfn: number): void {
    this.clearPageFlag(pfn, PG_writeback);
  }
  PageSwapCache(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_swapcache);
  }
  SetPageSwapCache(pfn: number): void {
    this.setPageFlag(pfn, PG_swapcache);
  }
  ClearPageSwapCache(pfn: number): void {
    this.clearPageFlag(pfn, PG_swapcache);
  }
  PageMappedToDisk(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_mappedtodisk);
  }
  PageReclaim(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_reclaim);
  }
  SetPageReclaim(pfn: number): void {
    this.setPageFlag(pfn, PG_reclaim);
  }
  ClearPageReclaim(pfn: number): void {
    this.clearPageFlag(pfn, PG_reclaim);
  }
  PageBuddy(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_buddy);
  }
  PageHead(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_head);
  }
  PageTail(pfn: number): boolean {
    return this.testPageFlag(pfn, PG_tail);
  }
  /** Head or tail of a compound page. */
  PageCompound(pfn: number): boolean {
    return (this.flags[pfn]! & ((1 << PG_head) | (1 << PG_tail))) !== 0;
  }
  /** PageHighMem: derived from the zone, as in 2.6 (there is no PG_highmem bit since 2.5). */
  PageHighMem(pfn: number): boolean {
    return this.flags[pfn]! >>> ZONES_PGSHIFT === ZONE_HIGHMEM;
  }
  /** PageAnon: page->mapping holds an anon_vma. */
  PageAnon(pfn: number): boolean {
    return (this.mapping[pfn]! & PAGE_MAPPING_ANON) !== 0;
  }

  /* ------------------------------------------------------------- accessors */

  /** page_zonenum. */
  pageZonenum(pfn: number): number {
    return this.flags[pfn]! >>> ZONES_PGSHIFT;
  }
  /** page_count: the head's count for any page of a compound page. */
  pageCount(pfn: number): number {
    return Atomics.load(this.count, this.compoundHead(pfn));
  }
  /** page_mapcount: number of ptes mapping the page. */
  pageMapcount(pfn: number): number {
    return Atomics.load(this.mapcount, pfn) + 1;
  }
  /** page_mapped. */
  pageMapped(pfn: number): boolean {
    return Atomics.load(this.mapcount, pfn) >= 0;
  }
  /** page_private. */
  pagePrivate(pfn: number): number {
    return this.private[pfn]!;
  }
  setPagePrivate(pfn: number, v: number): void {
    this.private[pfn] = v;
  }
  /** compound_head: the head of a compound page, or the page itself. */
  compoundHead(pfn: number): number {
    return (this.flags[pfn]! & (1 << PG_tail)) !== 0 ? this.firstPage[pfn]! : pfn;
  }
  /** compound_order: 0 for a page that is not a compound head. */
  compoundOrder(pfn: number): number {
    return (this.flags[pfn]! & (1 << PG_head)) !== 0 ? this.order[pfn]! : 0;
  }

  /**
   * page_mapping: the address_space of a page-cache page, swapper_space for a swap-cache
   * page, NULL (0) for anonymous pages -- and NULL for slab pages, whose mapping field holds
   * the slab cache (the SLUB fix of 2.6.22; see other-seed-bugs.md).
   */
  pageMapping(pfn: number): number {
    const flags = this.flags[pfn]!;
    if (this.slubPageMappingFix && (flags & (1 << PG_slab)) !== 0) return 0;
    if ((flags & (1 << PG_swapcache)) !== 0) return SWAPPER_SPACE;
    const m = this.mapping[pfn]!;
    return (m & PAGE_MAPPING_ANON) !== 0 ? 0 : m;
  }

  /* ------------------------------------------------------- get/put_page */

  /** get_page: a tail's reference goes to its head. */
  getPage(pfn: number): void {
    Atomics.add(this.count, this.compoundHead(pfn), 1);
  }

  /** get_page_unless_zero: false when the page was free (count 0). */
  getPageUnlessZero(pfn: number): boolean {
    const head = this.compoundHead(pfn);
    for (;;) {
      const c = Atomics.load(this.count, head);
      if (c === 0) return false;
      if (Atomics.compareExchange(this.count, head, c, c + 1) === c) return true;
    }
  }

  /**
   * put_page_testzero on one page: true when this dropped the last reference. A count that
   * was already 0 is restored and reported as a bad put (a double free).
   */
  putPageTestzero(pfn: number, fn: string, cpu: number): boolean {
    const old = Atomics.sub(this.count, pfn, 1);
    if (old === 1) return true;
    if (old <= 0) {
      Atomics.add(this.count, pfn, 1);
      this.#requireFreer(fn).reportBadPut(pfn, fn, cpu);
    }
    return false;
  }

  /**
   * put_page: drop a reference; the last one frees the page through the allocator -- the
   * head with its order for a compound page, to this CPU's hot list for an order-0 page.
   */
  putPage(pfn: number, cpu: number): void {
    if ((this.flags[pfn]! & ((1 << PG_head) | (1 << PG_tail))) !== 0) {
      const head = this.compoundHead(pfn);
      if (this.putPageTestzero(head, 'put_page', cpu)) {
        this.#requireFreer('put_page').freeCompoundPage(head, this.compoundOrder(head), cpu);
      }
      return;
    }
    if (this.putPageTestzero(pfn, 'put_page', cpu)) {
      this.#requireFreer('put_page').__putSinglePage(pfn, cpu);
    }
  }

  #requireFreer(fn: string): PageFreer {
    if (this.#freer === undefined) {
      throw new Error(`${fn}: no page allocator is attached to this mem_map (open a PageAllocator on it first)`);
    }
    return this.#freer;
  }

  /* -------------------------------------------------------- flush_dcache_page */

  /**
   * flush_dcache_page, as a VIPT-aliasing cache (ARM) would do it, reduced to its decisions:
   *  - page_mapping NULL (kernel-only page: slab, anonymous): flush the kernel alias only,
   *    'kernel'. `lookup` is not called: nothing is dereferenced.
   *  - an address_space that no user vma maps: defer (set PG_dcache_dirty), 'deferred'.
   *  - one that is mapped: walk its user aliases, 'aliases'.
   * `lookup` resolves a mapping handle -- the "dereference". When it does not resolve (a
   * slab cache id taken for an address_space, without the SLUB fix), the result is 'oops':
   * the kernel would have faulted walking mapping->i_mmap.
   */
  flushDcachePage(
    pfn: number,
    lookup: (mapping: number) => AddressSpaceLike | undefined,
  ): 'kernel' | 'deferred' | 'aliases' | 'oops' {
    const mapping = this.pageMapping(pfn);
    if (mapping === 0) return 'kernel';
    const as = lookup(mapping);
    if (as === undefined) return 'oops';
    if (!as.mapped) {
      this.setPageFlag(pfn, PG_dcache_dirty);
      return 'deferred';
    }
    return 'aliases';
  }

  /** One line describing page `pfn` (for messages and debugging). */
  describe(pfn: number): string {
    const f = this.flags[pfn]!;
    return (
      `pfn ${pfn} (${ZONE_NAMES[f >>> ZONES_PGSHIFT]}) flags:0x${formatPageFlags(f, this.paging)}` +
      ` [${pageFlagNames(f)}] count:${this.count[pfn]} mapcount:${this.mapcount[pfn]! + 1}` +
      ` mapping:${formatPointer(this.mapping[pfn]!, this.paging)}`
    );
  }
}
