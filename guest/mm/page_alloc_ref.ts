/*
 * The slow reference twin of page_alloc.ts: the same allocator semantics -- which pfn comes
 * back for a given sequence of calls, the same buddy order, the same hot/cold behaviour,
 * the same reports -- written plainly with JS arrays, Maps and Sets, for one thread.
 * test/page_alloc.test.ts drives both with the same random operation sequences and
 * compares every result.
 *
 * Lists are arrays with the list head at index 0: free_area[order].free_list[type] gets
 * new blocks with unshift and gives its first element; a per-CPU list (one per migrate
 * type) has its hot end at index 0 and its cold end at the last index. Grouping by
 * mobility is written out as 2.6.24 describes it: the lists of the allocation's type
 * first, then the fallbacks from the largest block down, stealing the pageblock's free
 * pages for a large block; a page's type is its pageblock's, looked up in a plain array.
 * The page-cache LRU is an array per zone, newest first.
 *
 * Only the configuration arithmetic (zone spans, watermarks, batch sizes) and the report
 * formatting are shared with the fast allocator.
 */
import type { PagingMode } from '../../src/abi/xen.js';
import {
  ALLOC_MIGRATETYPE_NONE,
  ALLOC_HARDER,
  ALLOC_HIGH,
  ALLOC_NO_WATERMARKS,
  ALLOC_WMARK_LOW,
  ALLOC_WMARK_MIN,
  FALLBACKS,
  GFP_MOVABLE_MASK,
  MAX_ORDER,
  MAX_RECLAIM_ROUNDS,
  MIGRATE_MOVABLE,
  MIGRATE_PCPTYPES,
  MIGRATE_RECLAIMABLE,
  MIGRATE_RESERVE,
  MIGRATE_TYPES,
  MIGRATE_UNMOVABLE,
  SWAP_CLUSTER_MAX,
  PAGE_FLAGS_CHECK_AT_FREE,
  PAGE_FLAGS_CHECK_AT_PREP,
  PAGE_FLAGS_CLEAR_AT_PREP,
  PAGE_FLAGS_FIXUP,
  PAGE_FLAGS_KEEP_AT_FREE,
  SHRINK_BATCH,
  __GFP_COLD,
  __GFP_COMP,
  __GFP_HIGH,
  __GFP_NOMEMALLOC,
  __GFP_NORETRY,
  __GFP_NOWARN,
  __GFP_WAIT,
  __GFP_ZERO,
  gfpError,
  gfpName,
  gfpflagsToMigratetype,
  resolvePageAllocConfig,
  zoneBatchsize,
  zoneSpans,
  zoneWatermarks,
  type BadPageReport,
  type MmReport,
  type PageAllocConfig,
  type PageAllocHooks,
  type Shrinker,
} from './page_alloc.js';
import {
  MAX_NR_ZONES,
  PAGE_MAPPING_ANON,
  PG_buddy,
  PG_dirty,
  PG_head,
  PG_locked,
  PG_lru,
  PG_pcp,
  PG_writeback,
  PG_reserved,
  PG_slab,
  PG_tail,
  ZONES_PGSHIFT,
  ZONE_DMA,
  ZONE_HIGHMEM,
  ZONE_NORMAL,
  formatPageFlags,
  formatPointer,
  pagePointer,
} from './page.js';

interface RefZone {
  start: number;
  end: number;
  free: number;
  min: number;
  low: number;
  high: number;
  /** freeArea[type][order]: heads of free blocks, list head first. */
  freeArea: number[][][];
  /** pcp[cpu][type]: hot end first. */
  pcp: number[][][];
  /** The page-cache LRU, newest first. */
  lru: number[];
  pcpHigh: number;
  pcpBatch: number;
}

export class PageAllocatorRef {
  readonly nrPages: number;
  readonly nrCpus: number;
  readonly paging: PagingMode;
  readonly reports: MmReport[] = [];
  badPages = 0;
  allocFailures = 0;

  readonly flags: number[] = [];
  readonly count: number[] = [];
  readonly mapcount: number[] = [];
  readonly mapping: number[] = [];
  readonly firstPage: number[] = [];
  /** Compound head -> its order. */
  readonly compoundOrder = new Map<number, number>();
  /** Head of a free buddy block -> its order. */
  readonly buddyOrder = new Map<number, number>();
  /** Pages on some per-CPU list. */
  readonly onPcp = new Set<number>();
  /** Head of a free buddy block -> the migrate type of the list it is on. */
  readonly buddyType = new Map<number, number>();
  readonly zones: RefZone[] = [];
  readonly mobility: boolean;
  readonly pageblockOrder: number;
  /** One migrate type per pageblock. */
  readonly pageblocks: number[] = [];
  /** What each allocated page's GFP flags asked for. */
  readonly allocTypes: number[] = [];
  fallbacks = 0;
  steals = 0;
  reclaimed = 0;
  lumpy = 0;
  violations = 0;

  readonly #hooks: PageAllocHooks;
  readonly #shrinkers: Shrinker[] = [];

  constructor(cfg: PageAllocConfig, hooks: PageAllocHooks) {
    const r = resolvePageAllocConfig(cfg);
    this.#hooks = hooks;
    this.nrPages = r.nrPages;
    this.nrCpus = r.nrCpus;
    this.paging = r.paging;
    this.mobility = r.mobility;
    this.pageblockOrder = r.pageblockOrder;
    for (let b = 0; b < Math.ceil(r.nrPages / 2 ** r.pageblockOrder); b++)
      this.pageblocks.push(r.mobility ? MIGRATE_MOVABLE : MIGRATE_UNMOVABLE);
    const spans = zoneSpans(r.nrPages, r.lowmemPages, r.paging);
    const marks = zoneWatermarks(spans, r.minFreeKbytes);
    for (let z = 0; z < MAX_NR_ZONES; z++) {
      const [start, end] = spans[z]!;
      const batch = r.pcpBatch ?? zoneBatchsize(end - start);
      const zone: RefZone = {
        start,
        end,
        free: 0,
        min: marks[z]![0],
        low: marks[z]![1],
        high: marks[z]![2],
        freeArea: [],
        pcp: [],
        lru: [],
        pcpBatch: batch,
        pcpHigh: r.pcpHigh ?? Math.max(batch, 6 * batch),
      };
      for (let t = 0; t < MIGRATE_TYPES; t++) zone.freeArea.push(Array.from({ length: MAX_ORDER }, () => []));
      for (let c = 0; c < r.nrCpus; c++) zone.pcp.push(Array.from({ length: MIGRATE_PCPTYPES }, () => []));
      this.zones.push(zone);
      for (let pfn = start; pfn < end; pfn++) {
        this.flags[pfn] = ((z << ZONES_PGSHIFT) | (1 << PG_reserved)) >>> 0;
        this.count[pfn] = 1;
        this.mapcount[pfn] = -1;
        this.mapping[pfn] = 0;
        this.firstPage[pfn] = -1;
        this.allocTypes[pfn] = ALLOC_MIGRATETYPE_NONE;
      }
    }
    for (let z = 0; z < MAX_NR_ZONES; z++) {
      const { start, end } = this.zones[z]!;
      let pfn = Math.max(start, r.firstFreePfn);
      while (pfn < end) {
        let o = MAX_ORDER - 1;
        while (o > 0 && (pfn % 2 ** o !== 0 || pfn + 2 ** o > end)) o--;
        for (let p = pfn; p < pfn + 2 ** o; p++) {
          this.clearFlag(p, PG_reserved);
          this.count[p] = 0;
        }
        this.#freeOneBlock(z, pfn, o);
        pfn += 2 ** o;
      }
      if (r.mobility) this.#setupReserve(z);
    }
  }

  /** The first min-watermark's worth of the zone's pageblocks, rounded up, become RESERVE. */
  #setupReserve(z: number): void {
    const zone = this.zones[z]!;
    const size = 2 ** this.pageblockOrder;
    let reserve = Math.ceil(zone.min / size);
    for (let pfn = zone.start; pfn < zone.end; pfn += size) {
      const b = Math.floor(pfn / size);
      const t = this.pageblocks[b]!;
      if (reserve > 0 && t === MIGRATE_RESERVE) {
        reserve--;
      } else if (reserve > 0 && t === MIGRATE_MOVABLE) {
        this.pageblocks[b] = MIGRATE_RESERVE;
        this.#moveFreeBlocks(z, pfn, MIGRATE_RESERVE);
        reserve--;
      } else if (t === MIGRATE_RESERVE) {
        this.pageblocks[b] = MIGRATE_MOVABLE;
        this.#moveFreeBlocks(z, pfn, MIGRATE_MOVABLE);
      }
    }
  }

  /* ------------------------------------------------------------ small helpers */

  zoneOf(pfn: number): number {
    return this.flags[pfn]! >>> ZONES_PGSHIFT;
  }
  hasFlag(pfn: number, b: number): boolean {
    return (this.flags[pfn]! & (1 << b)) !== 0;
  }
  setFlag(pfn: number, b: number): void {
    this.flags[pfn] = (this.flags[pfn]! | (1 << b)) >>> 0;
  }
  clearFlag(pfn: number, b: number): void {
    this.flags[pfn] = (this.flags[pfn]! & ~(1 << b)) >>> 0;
  }
  #comm(cpu: number): string {
    return this.#hooks.comm?.(cpu) ?? 'swapper';
  }
  #zonelist(gfp: number): number[] {
    const kinds = [[ZONE_NORMAL, ZONE_DMA], [ZONE_DMA], [ZONE_HIGHMEM, ZONE_NORMAL, ZONE_DMA]][gfp & 3]!;
    return kinds.filter((z) => this.zones[z]!.end > this.zones[z]!.start);
  }

  /* ---------------------------------------------------------------- buddies */

  #blockType(pfn: number): number {
    return this.pageblocks[Math.floor(pfn / 2 ** this.pageblockOrder)]!;
  }

  #listAdd(z: number, type: number, order: number, pfn: number): void {
    this.zones[z]!.freeArea[type]![order]!.unshift(pfn);
    this.buddyOrder.set(pfn, order);
    this.buddyType.set(pfn, type);
    this.setFlag(pfn, PG_buddy);
  }

  #listDel(z: number, order: number, pfn: number): void {
    const list = this.zones[z]!.freeArea[this.buddyType.get(pfn)!]![order]!;
    list.splice(list.indexOf(pfn), 1);
    this.buddyOrder.delete(pfn);
    this.buddyType.delete(pfn);
    this.clearFlag(pfn, PG_buddy);
  }

  /** Add a free block, merging with its free buddy while possible; to its pageblock's list. */
  #freeOneBlock(z: number, pfn: number, order: number): void {
    const zone = this.zones[z]!;
    const type = this.#blockType(pfn);
    zone.free += 2 ** order;
    while (order < MAX_ORDER - 1) {
      const buddy = pfn ^ (2 ** order);
      if (buddy < zone.start || buddy >= zone.end) break;
      if (this.buddyOrder.get(buddy) !== order) break;
      this.#listDel(z, order, buddy);
      pfn = Math.min(pfn, buddy);
      order++;
    }
    this.#listAdd(z, type, order, pfn);
  }

  /** Split an order-`cur` block taken at `pfn` down to `order`, the high halves to `type`. */
  #splitDown(z: number, pfn: number, order: number, cur: number, type: number): void {
    for (let high = cur - 1; high >= order; high--) this.#listAdd(z, type, high, pfn + 2 ** high);
  }

  /** The first block of the smallest fitting order of `type`. */
  #takeSmallest(z: number, order: number, type: number): number {
    const zone = this.zones[z]!;
    for (let cur = order; cur < MAX_ORDER; cur++) {
      const list = zone.freeArea[type]![cur]!;
      if (list.length === 0) continue;
      const pfn = list[0]!;
      this.#listDel(z, cur, pfn);
      zone.free -= 2 ** order;
      this.#splitDown(z, pfn, order, cur, type);
      return pfn;
    }
    return -1;
  }

  /** Every free block of the pageblock holding `pfn` onto `type`'s lists; pages moved. */
  #moveFreeBlocks(z: number, pfn: number, type: number): number {
    const zone = this.zones[z]!;
    const size = 2 ** this.pageblockOrder;
    let start = Math.floor(pfn / size) * size;
    const end = start + size;
    if (start < zone.start) start = pfn;
    if (end > zone.end) return 0;
    let moved = 0;
    for (let p = start; p < end; ) {
      const o = this.buddyOrder.get(p);
      if (o === undefined) {
        p++;
        continue;
      }
      this.#listDel(z, o, p);
      this.#listAdd(z, type, o, p);
      p += 2 ** o;
      moved += 2 ** o;
    }
    return moved;
  }

  #relabel(pfn: number, type: number, n: number): void {
    const b = Math.floor(pfn / 2 ** this.pageblockOrder);
    for (let i = b; i < b + n && i < this.pageblocks.length; i++) {
      if (this.pageblocks[i] !== type) this.steals++;
      this.pageblocks[i] = type;
    }
  }

  /** A block for an allocation of `type`: own lists, then the fallbacks, RESERVE last (atomic callers only). */
  #takeBlock(z: number, order: number, type: number, atomic: boolean): number {
    const own = this.#takeSmallest(z, order, type);
    if (own !== -1 || !this.mobility) return own;
    const zone = this.zones[z]!;
    const pbo = this.pageblockOrder;
    for (let cur = MAX_ORDER - 1; cur >= order; cur--) {
      for (const from of FALLBACKS[type]!) {
        if (from === MIGRATE_RESERVE) continue;
        const list = zone.freeArea[from]![cur]!;
        if (list.length === 0) continue;
        const pfn = list[0]!;
        this.fallbacks++;
        let to = from;
        if (cur >= Math.floor(pbo / 2) || type === MIGRATE_RECLAIMABLE) {
          if (this.#moveFreeBlocks(z, pfn, type) >= 2 ** (pbo - 1)) this.#relabel(pfn, type, 1);
          to = type;
        }
        this.#listDel(z, cur, pfn);
        zone.free -= 2 ** order;
        if (cur >= pbo) this.#relabel(pfn, type, 2 ** (cur - pbo));
        this.#splitDown(z, pfn, order, cur, to);
        return pfn;
      }
    }
    return atomic ? this.#takeSmallest(z, order, MIGRATE_RESERVE) : -1;
  }

  #isFree(pfn: number): boolean {
    if (this.onPcp.has(pfn)) return true;
    for (const [head, order] of this.buddyOrder) {
      if (pfn >= head && pfn < head + 2 ** order) return true;
    }
    return false;
  }

  /* --------------------------------------------------------------- allocation */

  allocPages(gfp: number, order: number, cpu: number): number {
    // A caller's mistake: a WARNING and NULL, as the fast allocator does.
    const why =
      gfpError(gfp, 'alloc_pages') ??
      (!Number.isInteger(order) || order < 0 || order >= MAX_ORDER
        ? `alloc_pages: order ${order} is outside 0..${MAX_ORDER - 1}`
        : !Number.isInteger(cpu) || cpu < 0 || cpu >= this.nrCpus
          ? `alloc_pages: cpu ${cpu} is not a vCPU of this allocator (0..${this.nrCpus - 1})`
          : null);
    if (why !== null) {
      const c = Number.isInteger(cpu) && cpu >= 0 && cpu < this.nrCpus ? cpu : 0;
      this.#report({
        kind: 'warning',
        comm: this.#comm(c),
        cpu: c,
        function: 'alloc_pages',
        lines: [`WARNING: at mm/page_alloc.c: ${why}`],
      });
      return -1;
    }
    if ((gfp & GFP_MOVABLE_MASK) === GFP_MOVABLE_MASK) {
      const comm = this.#comm(cpu);
      this.#report({
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
    const type = gfpflagsToMigratetype(gfp, this.mobility);
    const zl = this.#zonelist(gfp);
    let pfn = this.#fromFreelist(gfp, order, cpu, zl, ALLOC_WMARK_LOW, type);
    if (pfn !== -1) return pfn;
    const wait = (gfp & __GFP_WAIT) !== 0;
    if (zl.length > 0) {
      if (this.#hooks.wakeupKswapd) {
        for (const z of zl) this.#hooks.wakeupKswapd(z, order, cpu);
      } else if (wait && this.#reclaim(gfp, order, cpu, zl)) {
        pfn = this.#fromFreelist(gfp, order, cpu, zl, ALLOC_WMARK_LOW, type);
        if (pfn !== -1) return pfn;
      }
    }
    let allocFlags = ALLOC_WMARK_MIN;
    if (!wait) allocFlags |= ALLOC_HARDER;
    if (gfp & __GFP_HIGH) allocFlags |= ALLOC_HIGH;
    pfn = this.#fromFreelist(gfp, order, cpu, zl, allocFlags, type);
    if (pfn !== -1) return pfn;
    if (wait) {
      const rounds = gfp & __GFP_NORETRY ? 1 : MAX_RECLAIM_ROUNDS;
      for (let i = 0; i < rounds; i++) {
        if (!this.#reclaim(gfp, order, cpu, zl)) break;
        pfn = this.#fromFreelist(gfp, order, cpu, zl, allocFlags, type);
        if (pfn !== -1) return pfn;
      }
    }
    this.allocFailures++;
    if (!(gfp & __GFP_NOWARN)) {
      const comm = this.#comm(cpu);
      this.#report({
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

  #watermarkOk(zone: RefZone, order: number, mark: number, allocFlags: number): boolean {
    let min = mark;
    if (allocFlags & ALLOC_HIGH) min -= Math.floor(min / 2);
    if (allocFlags & ALLOC_HARDER) min -= Math.floor(min / 4);
    let free = zone.free - 2 ** order + 1;
    if (free <= min) return false;
    for (let o = 0; o < order; o++) {
      for (const lists of zone.freeArea) free -= lists[o]!.length * 2 ** o;
      min = Math.floor(min / 2);
      if (free <= min) return false;
    }
    return true;
  }

  #fromFreelist(gfp: number, order: number, cpu: number, zl: number[], allocFlags: number, type: number): number {
    for (const z of zl) {
      const zone = this.zones[z]!;
      if (!(allocFlags & ALLOC_NO_WATERMARKS)) {
        const mark = allocFlags & ALLOC_WMARK_MIN ? zone.min : allocFlags & ALLOC_WMARK_LOW ? zone.low : zone.high;
        if (!this.#watermarkOk(zone, order, mark, allocFlags)) continue;
      }
      const pfn = this.#takeFromZone(z, order, gfp, cpu, type);
      if (pfn !== -1) return pfn;
    }
    return -1;
  }

  #takeFromZone(z: number, order: number, gfp: number, cpu: number, type: number): number {
    const zone = this.zones[z]!;
    for (;;) {
      let pfn: number;
      if (order === 0) {
        const list = zone.pcp[cpu]![type]!;
        if (list.length === 0) {
          for (let i = 0; i < zone.pcpBatch; i++) {
            const p = this.#takeBlock(z, 0, type, (gfp & (__GFP_WAIT | __GFP_NOMEMALLOC)) === 0);
            if (p === -1) break;
            list.push(p);
            this.onPcp.add(p);
            this.setFlag(p, PG_pcp);
          }
          if (list.length === 0) return -1;
        }
        pfn = gfp & __GFP_COLD ? list.pop()! : list.shift()!;
        this.onPcp.delete(pfn);
        this.clearFlag(pfn, PG_pcp);
      } else {
        pfn = this.#takeBlock(z, order, type, (gfp & (__GFP_WAIT | __GFP_NOMEMALLOC)) === 0);
        if (pfn === -1) return -1;
      }
      if (this.#prepNew(pfn, order, gfp, cpu)) return pfn;
    }
  }

  #prepNew(pfn: number, order: number, gfp: number, cpu: number): boolean {
    let ok = true;
    for (let p = pfn; p < pfn + 2 ** order; p++) {
      if (
        this.mapcount[p] !== -1 ||
        this.mapping[p] !== 0 ||
        this.count[p] !== 0 ||
        this.flags[p]! & PAGE_FLAGS_CHECK_AT_PREP
      ) {
        this.badPage(p, 'prep_new_page', 'bad_state', cpu);
        ok = false;
      }
    }
    if (!ok) return false;
    const asked = gfpflagsToMigratetype(gfp, true);
    for (let p = pfn; p < pfn + 2 ** order; p++) {
      this.flags[p] = (this.flags[p]! & ~PAGE_FLAGS_CLEAR_AT_PREP) >>> 0;
      this.allocTypes[p] = asked;
    }
    this.count[pfn] = 1;
    if (order > 0 && gfp & __GFP_COMP) {
      this.compoundOrder.set(pfn, order);
      this.setFlag(pfn, PG_head);
      for (let p = pfn + 1; p < pfn + 2 ** order; p++) {
        this.setFlag(p, PG_tail);
        this.firstPage[p] = pfn;
      }
    }
    if (gfp & __GFP_ZERO) for (let p = pfn; p < pfn + 2 ** order; p++) this.#hooks.zeroPage(p);
    return true;
  }

  #reclaim(gfp: number, order: number, cpu: number, zl: number[]): boolean {
    const free = (): number => zl.reduce((n, z) => n + this.zones[z]!.free, 0);
    const before = free();
    for (const s of this.#shrinkers.slice()) {
      const n = s.shrink(0, gfp, cpu);
      if (n > 0) s.shrink(Math.min(n, SHRINK_BATCH), gfp, cpu);
    }
    for (const z of zl) this.shrinkInactiveList(z, order, cpu);
    this.drainLocalPages(cpu);
    return free() > before;
  }

  /* ------------------------------------------------------- page-cache LRU */

  lruCacheAdd(pfn: number, cpu: number): number {
    if (
      this.hasFlag(pfn, PG_lru) ||
      this.hasFlag(pfn, PG_buddy) ||
      this.hasFlag(pfn, PG_pcp) ||
      this.hasFlag(pfn, PG_slab) ||
      this.count[pfn]! < 1
    ) {
      this.#report({
        kind: 'warning',
        comm: this.#comm(cpu),
        cpu,
        function: 'add_to_page_cache_lru',
        pfn,
        lines: [
          `WARNING: at mm/filemap.c: add_to_page_cache_lru: pfn ${pfn} (flags:0x${formatPageFlags(this.flags[pfn]!, this.paging)} count:${this.count[pfn]}) cannot go on the LRU`,
        ],
      });
      return -22;
    }
    this.zones[this.zoneOf(pfn)]!.lru.unshift(pfn);
    this.setFlag(pfn, PG_lru);
    return 0;
  }

  #lruDel(pfn: number): void {
    const lru = this.zones[this.zoneOf(pfn)]!.lru;
    lru.splice(lru.indexOf(pfn), 1);
    this.clearFlag(pfn, PG_lru);
  }

  removeFromPageCache(pfn: number, mapping: number, cpu: number): boolean {
    if (!this.hasFlag(pfn, PG_lru) || this.mapping[pfn] !== mapping) return false;
    this.#lruDel(pfn);
    this.mapping[pfn] = 0;
    this.putPage(pfn, cpu);
    return true;
  }

  #reclaimable(pfn: number): boolean {
    return (
      this.hasFlag(pfn, PG_lru) &&
      !this.hasFlag(pfn, PG_dirty) &&
      !this.hasFlag(pfn, PG_locked) &&
      !this.hasFlag(pfn, PG_writeback) &&
      this.mapcount[pfn] === -1 &&
      this.count[pfn] === 1
    );
  }

  /** Up to SWAP_CLUSTER_MAX pages from the old end; each reclaimable one, and (order > 0) its block's. */
  shrinkInactiveList(z: number, order: number, cpu: number): number {
    const zone = this.zones[z]!;
    const taken: number[] = [];
    const gone = new Set<number>();
    // Written plainly: walk from the old end, one page at a time, skipping pages taken as block-mates.
    let cursor = zone.lru.length - 1;
    let looked = 0;
    while (cursor >= 0 && looked < SWAP_CLUSTER_MAX) {
      const p = zone.lru[cursor]!;
      cursor--;
      looked++;
      if (this.#reclaimable(p)) {
        taken.push(p);
        gone.add(p);
      }
      if (order > 0) {
        const start = Math.floor(p / 2 ** order) * 2 ** order;
        for (let q = Math.max(start, zone.start); q < start + 2 ** order && q < zone.end; q++) {
          if (q === p || gone.has(q) || !this.#reclaimable(q)) continue;
          taken.push(q);
          gone.add(q);
          this.lumpy++;
        }
      }
      // Skip older pages already taken as block-mates.
      while (cursor >= 0 && gone.has(zone.lru[cursor]!)) cursor--;
    }
    for (const q of taken) this.#lruDel(q);
    for (const q of taken) {
      this.mapping[q] = 0;
      this.putPage(q, cpu);
    }
    this.reclaimed += taken.length;
    return taken.length;
  }

  lruList(z: number): number[] {
    return [...this.zones[z]!.lru].reverse();
  }

  registerShrinker(s: Shrinker): void {
    this.#shrinkers.push(s);
  }

  unregisterShrinker(s: Shrinker): void {
    this.#shrinkers.splice(this.#shrinkers.indexOf(s), 1);
  }

  /* ---------------------------------------------------------------------- free */

  /** put_page_testzero on one page, with the double-put report. */
  putPageTestzero(pfn: number, fn: string, cpu: number): boolean {
    if (this.count[pfn] === 0) {
      this.badPage(pfn, fn, 'double_free', cpu);
      return false;
    }
    this.count[pfn]!--;
    return this.count[pfn] === 0;
  }

  freePages(pfn: number, order: number, cpu: number): void {
    if (this.putPageTestzero(pfn, '__free_pages', cpu)) {
      if (order === 0) this.#freeHot(pfn, false, cpu, false);
      else this.#freeOk(pfn, order, cpu, false);
    }
  }

  getPage(pfn: number): void {
    this.count[this.compoundHead(pfn)]!++;
  }

  compoundHead(pfn: number): number {
    return this.hasFlag(pfn, PG_tail) ? this.firstPage[pfn]! : pfn;
  }

  putPage(pfn: number, cpu: number): void {
    if (this.hasFlag(pfn, PG_head) || this.hasFlag(pfn, PG_tail)) {
      const head = this.compoundHead(pfn);
      if (this.putPageTestzero(head, 'put_page', cpu)) {
        this.#freeOk(head, this.hasFlag(head, PG_head) ? this.compoundOrder.get(head)! : 0, cpu, false);
      }
      return;
    }
    if (this.putPageTestzero(pfn, 'put_page', cpu)) this.#freeHot(pfn, false, cpu, false);
  }

  freeHotColdPage(pfn: number, cold: boolean, cpu: number): void {
    this.#freeHot(pfn, cold, cpu, true);
  }

  /** `inBlocks`: look for the page inside free blocks too (not after a 1 -> 0 put). */
  #freeHot(pfn: number, cold: boolean, cpu: number, inBlocks: boolean): void {
    if (this.mapping[pfn]! & PAGE_MAPPING_ANON) this.mapping[pfn] = 0;
    if (this.#freeCheck(pfn, 'free_hot_cold_page', cpu, inBlocks)) return;
    const z = this.zoneOf(pfn);
    const zone = this.zones[z]!;
    this.allocTypes[pfn] = ALLOC_MIGRATETYPE_NONE;
    const type = this.#blockType(pfn);
    if (type === MIGRATE_RESERVE) {
      this.#freeOneBlock(z, pfn, 0);
      return;
    }
    const list = zone.pcp[cpu]![type]!;
    this.onPcp.add(pfn);
    this.setFlag(pfn, PG_pcp);
    if (cold) list.push(pfn);
    else list.unshift(pfn);
    if (this.pcpCount(z, cpu) >= zone.pcpHigh) this.#drainPcp(z, cpu, zone.pcpBatch);
  }

  freeHotPage(pfn: number, cpu: number): void {
    this.freeHotColdPage(pfn, false, cpu);
  }

  freeColdPage(pfn: number, cpu: number): void {
    this.freeHotColdPage(pfn, true, cpu);
  }

  /** `n` pages from the cold ends, taking the lists in turn (0, 1, 2, 0, ...) and skipping empty ones. */
  #drainPcp(z: number, cpu: number, n: number): void {
    const lists = this.zones[z]!.pcp[cpu]!;
    let type = 0;
    for (let i = 0; i < n && this.pcpCount(z, cpu) > 0; i++) {
      while (lists[type]!.length === 0) type = (type + 1) % MIGRATE_PCPTYPES;
      const pfn = lists[type]!.pop()!;
      this.onPcp.delete(pfn);
      this.clearFlag(pfn, PG_pcp);
      this.#freeOneBlock(z, pfn, 0);
      type = (type + 1) % MIGRATE_PCPTYPES;
    }
  }

  drainLocalPages(cpu: number): void {
    for (let z = 0; z < MAX_NR_ZONES; z++) this.#drainPcp(z, cpu, this.pcpCount(z, cpu));
  }

  __freePagesOk(pfn: number, order: number, cpu: number): void {
    this.#freeOk(pfn, order, cpu, true);
  }

  #freeOk(pfn: number, order: number, cpu: number, inBlocks: boolean): void {
    if (this.hasFlag(pfn, PG_head) || this.hasFlag(pfn, PG_tail)) {
      if (!this.hasFlag(pfn, PG_head) || this.compoundOrder.get(pfn) !== order) {
        this.badPage(pfn, 'destroy_compound_page', 'compound', cpu);
      }
      this.clearFlag(pfn, PG_head);
      this.clearFlag(pfn, PG_tail);
      this.compoundOrder.delete(pfn);
      for (let p = pfn + 1; p < pfn + 2 ** order; p++) {
        if (!this.hasFlag(p, PG_tail) || this.firstPage[p] !== pfn)
          this.badPage(p, 'destroy_compound_page', 'compound', cpu);
        this.clearFlag(p, PG_head);
        this.clearFlag(p, PG_tail);
        this.firstPage[p] = -1;
      }
    }
    let keep = 0;
    for (let p = pfn; p < pfn + 2 ** order; p++) keep += this.#freeCheck(p, '__free_pages_ok', cpu, inBlocks);
    if (keep) return;
    for (let p = pfn; p < pfn + 2 ** order; p++) this.allocTypes[p] = ALLOC_MIGRATETYPE_NONE;
    this.#freeOneBlock(this.zoneOf(pfn), pfn, order);
  }

  freeCompoundPage(pfn: number, order: number, cpu: number): void {
    this.#freeOk(pfn, order, cpu, false);
  }

  #freeCheck(pfn: number, fn: string, cpu: number, inBlocks: boolean): number {
    if (this.onPcp.has(pfn) || this.buddyOrder.has(pfn) || (inBlocks && this.#isFree(pfn))) {
      this.badPage(pfn, fn, 'double_free', cpu);
      return 1;
    }
    if (
      this.mapcount[pfn] !== -1 ||
      this.mapping[pfn] !== 0 ||
      this.count[pfn] !== 0 ||
      this.flags[pfn]! & PAGE_FLAGS_CHECK_AT_FREE
    ) {
      this.badPage(pfn, fn, 'bad_state', cpu);
    }
    this.clearFlag(pfn, PG_dirty);
    return this.flags[pfn]! & PAGE_FLAGS_KEEP_AT_FREE ? 1 : 0;
  }

  freeBootmemPage(pfn: number, cpu: number): void {
    this.clearFlag(pfn, PG_reserved);
    this.count[pfn] = 1;
    this.freePages(pfn, 0, cpu);
  }

  /* ----------------------------------------------------------------- reports */

  badPage(pfn: number, fn: string, reason: BadPageReport['reason'], cpu: number): void {
    const comm = this.#comm(cpu);
    const flags = this.flags[pfn]!;
    const mapping = this.mapping[pfn]!;
    const mapcount = this.mapcount[pfn]! + 1;
    const count = this.count[pfn]!;
    const page = pagePointer(pfn, this.paging);
    this.badPages++;
    this.#report({
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
    this.flags[pfn] = (flags & ~PAGE_FLAGS_FIXUP) >>> 0;
    this.count[pfn] = 0;
    this.mapcount[pfn] = -1;
    this.mapping[pfn] = 0;
  }

  #report(r: MmReport): void {
    this.reports.push(r);
    this.#hooks.onReport?.(r);
  }

  /* -------------------------------------------------------------- statistics */

  zoneFreePages(z: number): number {
    return this.zones[z]!.free;
  }
  pcpCount(z: number, cpu: number): number {
    return this.zones[z]!.pcp[cpu]!.reduce((a, l) => a + l.length, 0);
  }
  nrFreePages(): number {
    let n = 0;
    for (let z = 0; z < MAX_NR_ZONES; z++) {
      n += this.zones[z]!.free;
      for (let cpu = 0; cpu < this.nrCpus; cpu++) n += this.pcpCount(z, cpu);
    }
    return n;
  }
  nrBadPages(): number {
    return this.badPages;
  }
  nrAllocFailures(): number {
    return this.allocFailures;
  }
  pcpList(z: number, cpu: number, type?: number): number[] {
    const lists = this.zones[z]!.pcp[cpu]!;
    return type === undefined ? lists.flat() : [...lists[type]!];
  }
  freeAreaList(z: number, order: number, type?: number): number[] {
    const lists = this.zones[z]!.freeArea;
    return type === undefined ? lists.flatMap((l) => l[order]!) : [...lists[type]![order]!];
  }
  pageblockMigratetype(pfn: number): number {
    return this.#blockType(pfn);
  }
  allocMigratetype(pfn: number): number {
    return this.allocTypes[pfn]!;
  }
  checkUnmovable(pfn: number, what: string, cpu: number): boolean {
    if (!this.mobility || this.allocTypes[pfn] !== MIGRATE_MOVABLE || this.#blockType(pfn) !== MIGRATE_MOVABLE)
      return true;
    this.violations++;
    this.#report({
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
  mobilityStats(): {
    fallbacks: number;
    steals: number;
    reclaimed: number;
    lumpy: number;
    violations: number;
    migrated: number;
  } {
    const { fallbacks, steals, reclaimed, lumpy, violations } = this;
    // The twin has no migratePage hook: anonymous pages never move here.
    return { migrated: 0, fallbacks, steals, reclaimed, lumpy, violations };
  }
}
