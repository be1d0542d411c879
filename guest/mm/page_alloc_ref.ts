/*
 * The slow reference twin of page_alloc.ts: the same allocator semantics -- which pfn comes
 * back for a given sequence of calls, the same buddy order, the same hot/cold behaviour,
 * the same reports -- written plainly with JS arrays, Maps and Sets, for one thread.
 * test/page_alloc.test.ts drives both with the same random operation sequences and
 * compares every result.
 *
 * Lists are arrays with the list head at index 0: free_area[order] gets new blocks with
 * unshift and gives its first element; a per-CPU list has its hot end at index 0 and its
 * cold end at the last index.
 *
 * Only the configuration arithmetic (zone spans, watermarks, batch sizes) and the report
 * formatting are shared with the fast allocator.
 */
import type { PagingMode } from '../../src/abi/xen.js';
import {
  ALLOC_HARDER,
  ALLOC_HIGH,
  ALLOC_NO_WATERMARKS,
  ALLOC_WMARK_LOW,
  ALLOC_WMARK_MIN,
  MAX_ORDER,
  MAX_RECLAIM_ROUNDS,
  PAGE_FLAGS_CHECK_AT_FREE,
  PAGE_FLAGS_CHECK_AT_PREP,
  PAGE_FLAGS_CLEAR_AT_PREP,
  PAGE_FLAGS_FIXUP,
  PAGE_FLAGS_KEEP_AT_FREE,
  SHRINK_BATCH,
  __GFP_COLD,
  __GFP_COMP,
  __GFP_HIGH,
  __GFP_NORETRY,
  __GFP_NOWARN,
  __GFP_WAIT,
  __GFP_ZERO,
  checkGfp,
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
  PG_pcp,
  PG_reserved,
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
  /** freeArea[order]: heads of free blocks, list head first. */
  freeArea: number[][];
  /** pcp[cpu]: hot end first. */
  pcp: number[][];
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
  readonly zones: RefZone[] = [];

  private readonly hooks: PageAllocHooks;
  private readonly shrinkers: Shrinker[] = [];

  constructor(cfg: PageAllocConfig, hooks: PageAllocHooks) {
    const r = resolvePageAllocConfig(cfg);
    this.hooks = hooks;
    this.nrPages = r.nrPages;
    this.nrCpus = r.nrCpus;
    this.paging = r.paging;
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
        pcpBatch: batch,
        pcpHigh: r.pcpHigh ?? Math.max(batch, 6 * batch),
      };
      for (let o = 0; o < MAX_ORDER; o++) zone.freeArea.push([]);
      for (let c = 0; c < r.nrCpus; c++) zone.pcp.push([]);
      this.zones.push(zone);
      for (let pfn = start; pfn < end; pfn++) {
        this.flags[pfn] = ((z << ZONES_PGSHIFT) | (1 << PG_reserved)) >>> 0;
        this.count[pfn] = 1;
        this.mapcount[pfn] = -1;
        this.mapping[pfn] = 0;
        this.firstPage[pfn] = -1;
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
        this.freeOneBlock(z, pfn, o);
        pfn += 2 ** o;
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
  private comm(cpu: number): string {
    return this.hooks.comm?.(cpu) ?? 'swapper';
  }
  private zonelist(gfp: number): number[] {
    const kinds = [[ZONE_NORMAL, ZONE_DMA], [ZONE_DMA], [ZONE_HIGHMEM, ZONE_NORMAL, ZONE_DMA]][gfp & 3]!;
    return kinds.filter((z) => this.zones[z]!.end > this.zones[z]!.start);
  }

  /* ---------------------------------------------------------------- buddies */

  /** Add a free block, merging with its free buddy while possible. */
  private freeOneBlock(z: number, pfn: number, order: number): void {
    const zone = this.zones[z]!;
    zone.free += 2 ** order;
    while (order < MAX_ORDER - 1) {
      const buddy = pfn ^ (2 ** order);
      if (buddy < zone.start || buddy >= zone.end) break;
      if (this.buddyOrder.get(buddy) !== order) break;
      const list = zone.freeArea[order]!;
      list.splice(list.indexOf(buddy), 1);
      this.buddyOrder.delete(buddy);
      this.clearFlag(buddy, PG_buddy);
      pfn = Math.min(pfn, buddy);
      order++;
    }
    zone.freeArea[order]!.unshift(pfn);
    this.buddyOrder.set(pfn, order);
    this.setFlag(pfn, PG_buddy);
  }

  /** Take the first block of the smallest fitting order, keep its low part, free the rest. */
  private takeBlock(z: number, order: number): number {
    const zone = this.zones[z]!;
    for (let cur = order; cur < MAX_ORDER; cur++) {
      const list = zone.freeArea[cur]!;
      if (list.length === 0) continue;
      const pfn = list.shift()!;
      this.buddyOrder.delete(pfn);
      this.clearFlag(pfn, PG_buddy);
      zone.free -= 2 ** order;
      for (let high = cur - 1; high >= order; high--) {
        const half = pfn + 2 ** high;
        zone.freeArea[high]!.unshift(half);
        this.buddyOrder.set(half, high);
        this.setFlag(half, PG_buddy);
      }
      return pfn;
    }
    return -1;
  }

  private isFree(pfn: number): boolean {
    if (this.onPcp.has(pfn)) return true;
    for (const [head, order] of this.buddyOrder) {
      if (pfn >= head && pfn < head + 2 ** order) return true;
    }
    return false;
  }

  /* --------------------------------------------------------------- allocation */

  allocPages(gfp: number, order: number, cpu: number): number {
    checkGfp(gfp, 'alloc_pages');
    if (!Number.isInteger(order) || order < 0 || order >= MAX_ORDER)
      throw new RangeError(`alloc_pages: order ${order} is outside 0..${MAX_ORDER - 1}`);
    if (!Number.isInteger(cpu) || cpu < 0 || cpu >= this.nrCpus)
      throw new RangeError(`alloc_pages: cpu ${cpu} is not a vCPU of this allocator`);
    const zl = this.zonelist(gfp);
    let pfn = this.fromFreelist(gfp, order, cpu, zl, ALLOC_WMARK_LOW);
    if (pfn !== -1) return pfn;
    const wait = (gfp & __GFP_WAIT) !== 0;
    if (zl.length > 0) {
      if (this.hooks.wakeupKswapd) {
        for (const z of zl) this.hooks.wakeupKswapd(z, order, cpu);
      } else if (wait && this.reclaim(gfp, cpu, zl)) {
        pfn = this.fromFreelist(gfp, order, cpu, zl, ALLOC_WMARK_LOW);
        if (pfn !== -1) return pfn;
      }
    }
    let allocFlags = ALLOC_WMARK_MIN;
    if (!wait) allocFlags |= ALLOC_HARDER;
    if (gfp & __GFP_HIGH) allocFlags |= ALLOC_HIGH;
    pfn = this.fromFreelist(gfp, order, cpu, zl, allocFlags);
    if (pfn !== -1) return pfn;
    if (wait) {
      const rounds = gfp & __GFP_NORETRY ? 1 : MAX_RECLAIM_ROUNDS;
      for (let i = 0; i < rounds; i++) {
        if (!this.reclaim(gfp, cpu, zl)) break;
        pfn = this.fromFreelist(gfp, order, cpu, zl, allocFlags);
        if (pfn !== -1) return pfn;
      }
    }
    this.allocFailures++;
    if (!(gfp & __GFP_NOWARN)) {
      const comm = this.comm(cpu);
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

  private watermarkOk(zone: RefZone, order: number, mark: number, allocFlags: number): boolean {
    let min = mark;
    if (allocFlags & ALLOC_HIGH) min -= Math.floor(min / 2);
    if (allocFlags & ALLOC_HARDER) min -= Math.floor(min / 4);
    let free = zone.free - 2 ** order + 1;
    if (free <= min) return false;
    for (let o = 0; o < order; o++) {
      free -= zone.freeArea[o]!.length * 2 ** o;
      min = Math.floor(min / 2);
      if (free <= min) return false;
    }
    return true;
  }

  private fromFreelist(gfp: number, order: number, cpu: number, zl: number[], allocFlags: number): number {
    for (const z of zl) {
      const zone = this.zones[z]!;
      if (!(allocFlags & ALLOC_NO_WATERMARKS)) {
        const mark = allocFlags & ALLOC_WMARK_MIN ? zone.min : allocFlags & ALLOC_WMARK_LOW ? zone.low : zone.high;
        if (!this.watermarkOk(zone, order, mark, allocFlags)) continue;
      }
      const pfn = this.takeFromZone(z, order, gfp, cpu);
      if (pfn !== -1) return pfn;
    }
    return -1;
  }

  private takeFromZone(z: number, order: number, gfp: number, cpu: number): number {
    const zone = this.zones[z]!;
    for (;;) {
      let pfn: number;
      if (order === 0) {
        const list = zone.pcp[cpu]!;
        if (list.length === 0) {
          for (let i = 0; i < zone.pcpBatch; i++) {
            const p = this.takeBlock(z, 0);
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
        pfn = this.takeBlock(z, order);
        if (pfn === -1) return -1;
      }
      if (this.prepNew(pfn, order, gfp, cpu)) return pfn;
    }
  }

  private prepNew(pfn: number, order: number, gfp: number, cpu: number): boolean {
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
    for (let p = pfn; p < pfn + 2 ** order; p++) this.flags[p] = (this.flags[p]! & ~PAGE_FLAGS_CLEAR_AT_PREP) >>> 0;
    this.count[pfn] = 1;
    if (order > 0 && gfp & __GFP_COMP) {
      this.compoundOrder.set(pfn, order);
      this.setFlag(pfn, PG_head);
      for (let p = pfn + 1; p < pfn + 2 ** order; p++) {
        this.setFlag(p, PG_tail);
        this.firstPage[p] = pfn;
      }
    }
    if (gfp & __GFP_ZERO) for (let p = pfn; p < pfn + 2 ** order; p++) this.hooks.zeroPage(p);
    return true;
  }

  private reclaim(gfp: number, cpu: number, zl: number[]): boolean {
    const free = (): number => zl.reduce((n, z) => n + this.zones[z]!.free, 0);
    const before = free();
    for (const s of this.shrinkers.slice()) {
      const n = s.shrink(0, gfp, cpu);
      if (n > 0) s.shrink(Math.min(n, SHRINK_BATCH), gfp, cpu);
    }
    this.drainLocalPages(cpu);
    return free() > before;
  }

  registerShrinker(s: Shrinker): void {
    this.shrinkers.push(s);
  }

  unregisterShrinker(s: Shrinker): void {
    this.shrinkers.splice(this.shrinkers.indexOf(s), 1);
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
      if (order === 0) this.freeHot(pfn, false, cpu, false);
      else this.freeOk(pfn, order, cpu, false);
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
        this.freeOk(head, this.hasFlag(head, PG_head) ? this.compoundOrder.get(head)! : 0, cpu, false);
      }
      return;
    }
    if (this.putPageTestzero(pfn, 'put_page', cpu)) this.freeHot(pfn, false, cpu, false);
  }

  freeHotColdPage(pfn: number, cold: boolean, cpu: number): void {
    this.freeHot(pfn, cold, cpu, true);
  }

  /** `inBlocks`: look for the page inside free blocks too (not after a 1 -> 0 put). */
  private freeHot(pfn: number, cold: boolean, cpu: number, inBlocks: boolean): void {
    if (this.mapping[pfn]! & PAGE_MAPPING_ANON) this.mapping[pfn] = 0;
    if (this.freeCheck(pfn, 'free_hot_cold_page', cpu, inBlocks)) return;
    const z = this.zoneOf(pfn);
    const zone = this.zones[z]!;
    const list = zone.pcp[cpu]!;
    this.onPcp.add(pfn);
    this.setFlag(pfn, PG_pcp);
    if (cold) list.push(pfn);
    else list.unshift(pfn);
    if (list.length >= zone.pcpHigh) this.drainPcp(z, cpu, zone.pcpBatch);
  }

  freeHotPage(pfn: number, cpu: number): void {
    this.freeHotColdPage(pfn, false, cpu);
  }

  freeColdPage(pfn: number, cpu: number): void {
    this.freeHotColdPage(pfn, true, cpu);
  }

  private drainPcp(z: number, cpu: number, n: number): void {
    const list = this.zones[z]!.pcp[cpu]!;
    for (let i = 0; i < n && list.length > 0; i++) {
      const pfn = list.pop()!;
      this.onPcp.delete(pfn);
      this.clearFlag(pfn, PG_pcp);
      this.freeOneBlock(z, pfn, 0);
    }
  }

  drainLocalPages(cpu: number): void {
    for (let z = 0; z < MAX_NR_ZONES; z++) this.drainPcp(z, cpu, this.zones[z]!.pcp[cpu]!.length);
  }

  __freePagesOk(pfn: number, order: number, cpu: number): void {
    this.freeOk(pfn, order, cpu, true);
  }

  private freeOk(pfn: number, order: number, cpu: number, inBlocks: boolean): void {
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
    for (let p = pfn; p < pfn + 2 ** order; p++) keep += this.freeCheck(p, '__free_pages_ok', cpu, inBlocks);
    if (keep) return;
    this.freeOneBlock(this.zoneOf(pfn), pfn, order);
  }

  freeCompoundPage(pfn: number, order: number, cpu: number): void {
    this.freeOk(pfn, order, cpu, false);
  }

  private freeCheck(pfn: number, fn: string, cpu: number, inBlocks: boolean): number {
    if (this.onPcp.has(pfn) || this.buddyOrder.has(pfn) || (inBlocks && this.isFree(pfn))) {
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
    const comm = this.comm(cpu);
    const flags = this.flags[pfn]!;
    const mapping = this.mapping[pfn]!;
    const mapcount = this.mapcount[pfn]! + 1;
    const count = this.count[pfn]!;
    const page = pagePointer(pfn, this.paging);
    this.badPages++;
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
    this.flags[pfn] = (flags & ~PAGE_FLAGS_FIXUP) >>> 0;
    this.count[pfn] = 0;
    this.mapcount[pfn] = -1;
    this.mapping[pfn] = 0;
  }

  private report(r: MmReport): void {
    this.reports.push(r);
    this.hooks.onReport?.(r);
  }

  /* -------------------------------------------------------------- statistics */

  zoneFreePages(z: number): number {
    return this.zones[z]!.free;
  }
  pcpCount(z: number, cpu: number): number {
    return this.zones[z]!.pcp[cpu]!.length;
  }
  nrFreePages(): number {
    let n = 0;
    for (const zone of this.zones) n += zone.free + zone.pcp.reduce((a, l) => a + l.length, 0);
    return n;
  }
  nrBadPages(): number {
    return this.badPages;
  }
  nrAllocFailures(): number {
    return this.allocFailures;
  }
  pcpList(z: number, cpu: number): number[] {
    return [...this.zones[z]!.pcp[cpu]!];
  }
  freeAreaList(z: number, order: number): number[] {
    return [...this.zones[z]!.freeArea[order]!];
  }
}
