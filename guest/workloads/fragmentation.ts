/*
 * fragmentation: Mel Gorman's question (the gfp-movable seed), asked of this guest. Can a
 * kernel still find high-order blocks after a while under memory pressure, when the pages
 * that can never move -- Xen-pinned page tables first of all -- are scattered?
 *
 * Phase 1 (the steps), under memory pressure: tasks fork, fault anonymous memory, run
 *   (their page tables pinned by Xen) and exit; page-cache reads fill memory and files
 *   are deleted; XFS-style buffers (GFP_NOFS pages, vmapped) and kmalloc objects come and
 *   go. Meanwhile a long-lived set of tasks is created, a few at a time: its pinned page
 *   tables will take --pin-fraction of memory.
 * Phase 2 (at the end of the run, before tear-down): every other task exits and the
 *   buffers and objects are freed; the long-lived tasks keep their pinned page tables and
 *   their anonymous pages, and the page cache stays (clean: reclaim may drop it). The
 *   census is taken (pageblocks by type, mixed blocks, where the pinned page tables are,
 *   /proc/pagetypeinfo), then order-3 (e1000 jumbo frames, unmovable) and order-9
 *   (hugepages, movable) blocks are asked for, as atomic allocations (no reclaim) and as
 *   normal ones (reclaim, with 2.6.23's lumpy reclaim, allowed). Each pass asks for half
 *   of what reclaim could free at most -- the free pages and the page cache -- in blocks
 *   of that order, holds what it gets until the pass ends, then gives it back.
 *
 * Anonymous memory is not reclaimable (there is no swap), but with grouping on it is
 * MOVABLE: lumpy reclaim drops the page cache of a block and migrates its anonymous pages
 * out (guest/mm/migrate.ts). Pinned page tables and kernel pages never move.
 *
 * The numbers travel as workload counters (flat keys, summed over vCPUs; the census only
 * from vCPU 0): ho.ORDER.KIND.attempts|successes, pb.TYPE, pb.mixed, ptpin.TYPE,
 * pti.ZONE.TYPE.ORDER. src/fragmentation.ts turns them back into the report.
 */
import type { Rng } from '../lib/random.js';
import type { Kernel } from '../kernel/kernel.js';
import { doExit, doFork, runTask, taskCreate } from '../mm/memory.js';
import {
  GFP_ATOMIC,
  GFP_HIGHUSER_MOVABLE,
  GFP_KERNEL,
  GFP_NOFS,
  MIGRATETYPE_NAMES,
  __GFP_MOVABLE,
  __GFP_NOWARN,
} from '../mm/page_alloc.js';
import { mappingOfAddressSpace } from '../mm/page.js';
import { C_HIGH_ORDER_ATTEMPTS, C_HIGH_ORDER_SUCCESSES, C_PAGES_RECLAIMED } from '../../src/abi/kernel.js';
import type { Workload } from './driver.js';

/** Churn tasks a vCPU keeps alive at most. */
const MAX_CHURN_TASKS = 8;
/** The XFS-style buffers and kmalloc objects a vCPU holds at most. */
const MAX_BUFFERS = 32;
const MAX_OBJECTS = 256;
/** Page-cache pages a read brings in at most. */
const READ_PAGES = 16;
/** Anonymous pages of a long-lived task (1..this). */
const LONG_LIVED_PAGES = 1;
/** Phase 1 creates the long-lived set over this share of its steps. */
const LONG_LIVED_SPREAD = 0.8;

export interface FragmentationOptions {
  /** Share of the domain's memory the long-lived set's pinned page tables take. */
  pinFraction: number;
  /** Steps of the whole run and vCPUs, to spread the long-lived set over phase 1. */
  ops: number;
  vcpus: number;
}

/** The high-order passes of phase 2, in order. */
export const HIGH_ORDER_PASSES: readonly { order: number; kind: 'atomic' | 'normal'; gfp: number }[] = [
  { order: 3, kind: 'atomic', gfp: GFP_ATOMIC | __GFP_NOWARN },
  { order: 3, kind: 'normal', gfp: GFP_KERNEL | __GFP_NOWARN },
  { order: 9, kind: 'atomic', gfp: GFP_ATOMIC | __GFP_MOVABLE | __GFP_NOWARN },
  { order: 9, kind: 'normal', gfp: GFP_HIGHUSER_MOVABLE | __GFP_NOWARN },
];

export class Fragmentation implements Workload {
  readonly #o: FragmentationOptions;
  readonly #long: number[] = [];
  readonly #churn: number[] = [];
  /** Page-cache pages this vCPU read (reclaim may have dropped some: checked on removal). */
  #cache: number[] = [];
  readonly #buffers: { va: number; pfns: number[] }[] = [];
  readonly #objects: number[] = [];
  readonly #pt = new Int32Array(8);
  #mapping = 0;
  #target = 0;
  #stepsPerCpu = 1;
  #steps = 0;
  #late = 0;
  #refused = 0;
  #rng: Rng | null = null;
  readonly #stats: Record<string, number> = {};

  constructor(o: FragmentationOptions) {
    if (typeof o.pinFraction !== 'number' || !(o.pinFraction >= 0 && o.pinFraction <= 0.5))
      throw new RangeError(`fragmentation: pinFraction must be a number in 0..0.5, got ${String(o.pinFraction)}`);
    this.#o = o;
  }

  init(k: Kernel, rng: Rng): void {
    this.#rng = rng;
    // The file this vCPU reads: an address_space of its own.
    this.#mapping = mappingOfAddressSpace(0x4000 + k.id);
    const ptPerTask = k.layout.levels === 3 ? 6 : 4;
    const total = Math.floor((k.pa.nrPages * this.#o.pinFraction) / ptPerTask);
    const nr = this.#o.vcpus;
    this.#target = Math.floor(total / nr) + (k.id < total % nr ? 1 : 0);
    this.#stepsPerCpu = Math.max(1, Math.floor(this.#o.ops / nr));
  }

  step(k: Kernel, rng: Rng): void {
    this.#steps++;
    const due = Math.min(
      this.#target,
      Math.ceil((this.#steps * this.#target) / (this.#stepsPerCpu * LONG_LIVED_SPREAD)),
    );
    while (this.#long.length < due) if (!this.#createLongLived(k, rng)) break;
    const r = rng.nextInt(100);
    const churn = this.#churn;
    if (r < 12) {
      if (churn.length < MAX_CHURN_TASKS) {
        const t =
          churn.length > 0 && rng.nextInt(2) === 0
            ? doFork(k, churn[rng.nextInt(churn.length)]!)
            : taskCreate(k, 1 + rng.nextInt(16));
        if (t >= 0) churn.push(t);
      }
    } else if (r < 24) {
      if (churn.length > 0) {
        const i = rng.nextInt(churn.length);
        if (!runTask(k, churn[i]!, this.#pt)) {
          this.#refused++;
          churn.splice(i, 1);
        }
      }
    } else if (r < 32) {
      if (churn.length > 0) {
        const i = rng.nextInt(churn.length);
        doExit(k, churn[i]!, this.#pt);
        churn.splice(i, 1);
      }
    } else if (r < 66) {
      this.#read(k, 1 + rng.nextInt(READ_PAGES));
    } else if (r < 72) {
      this.#deleteSome(k, rng);
    } else if (r < 86) {
      if (this.#buffers.length < MAX_BUFFERS && rng.nextInt(3) !== 0) this.#bufGet(k, 1 + rng.nextInt(4));
      else if (this.#buffers.length > 0)
        this.#bufFree(k, this.#buffers.splice(rng.nextInt(this.#buffers.length), 1)[0]!);
    } else {
      if (this.#objects.length < MAX_OBJECTS && rng.nextInt(3) !== 0) {
        const obj = k.slab.kmalloc(32 << rng.nextInt(8), GFP_KERNEL, k.id);
        if (obj !== 0) this.#objects.push(obj);
      } else if (this.#objects.length > 0) {
        k.slab.kfree(this.#objects.splice(rng.nextInt(this.#objects.length), 1)[0]!, k.id);
      }
    }
  }

  /** A long-lived task: its page tables, 1..LONG_LIVED_PAGES anonymous pages, run once (pinned). */
  #createLongLived(k: Kernel, rng: Rng): boolean {
    const t = taskCreate(k, 1 + rng.nextInt(LONG_LIVED_PAGES));
    if (t < 0) return false;
    if (!runTask(k, t, this.#pt)) {
      this.#refused++;
      return false;
    }
    this.#long.push(t);
    return true;
  }

  /** A page-cache read: new pages of the file, on the LRU (never written: clean). */
  #read(k: Kernel, n: number): void {
    for (let i = 0; i < n; i++) {
      const pfn = k.pa.allocPages(GFP_HIGHUSER_MOVABLE | __GFP_NOWARN, 0, k.id);
      if (pfn < 0) return;
      k.pa.memMap.mapping[pfn] = this.#mapping;
      if (k.pa.lruCacheAdd(pfn, k.id) < 0) {
        k.pa.memMap.mapping[pfn] = 0;
        k.pa.freePages(pfn, 0, k.id);
        return;
      }
      this.#cache.push(pfn);
    }
  }

  /** A file deleted: a run of the oldest or the newest pages leaves the page cache. */
  #deleteSome(k: Kernel, rng: Rng): void {
    const n = Math.min(this.#cache.length, 1 + rng.nextInt(READ_PAGES * 2));
    const gone = rng.nextInt(2) === 0 ? this.#cache.splice(0, n) : this.#cache.splice(this.#cache.length - n, n);
    for (const pfn of gone) k.pa.removeFromPageCache(pfn, this.#mapping, k.id);
  }

  /** xfs_buf_get: GFP_NOFS pages, vmapped (xfs_buf_map_pages). */
  #bufGet(k: Kernel, n: number): void {
    const pfns: number[] = [];
    for (let i = 0; i < n; i++) {
      const pfn = k.pa.allocPages(GFP_NOFS | __GFP_NOWARN, 0, k.id);
      if (pfn < 0) break;
      pfns.push(pfn);
    }
    const va = pfns.length > 0 ? k.vmalloc.vmap(pfns, pfns.length) : -1;
    if (va < 0) {
      for (const pfn of pfns) k.pa.freePages(pfn, 0, k.id);
      return;
    }
    this.#buffers.push({ va, pfns });
  }

  #bufFree(k: Kernel, b: { va: number; pfns: number[] }): void {
    k.vmalloc.vunmap(b.va);
    for (const pfn of b.pfns) k.pa.freePages(pfn, 0, k.id);
  }

  fini(k: Kernel): void {
    // Phase 2: the churn goes, the long-lived set and the page cache stay.
    for (const t of this.#churn.splice(0)) doExit(k, t, this.#pt);
    for (const b of this.#buffers.splice(0)) this.#bufFree(k, b);
    for (const obj of this.#objects.splice(0)) k.slab.kfree(obj, k.id);
    k.slab.kmemCacheShrinkAll(k.id);
    while (this.#long.length < this.#target) {
      if (!this.#createLongLived(k, this.#rng!)) break;
      this.#late++;
    }
    this.#cache = this.#cache.filter((pfn) => k.pa.memMap.PageLRU(pfn) && k.pa.memMap.mapping[pfn] === this.#mapping);
    k.pa.drainLocalPages(k.id);
    this.#stats.longLived = this.#long.length;
    if (k.id === 0) this.#census(k);
    const before = k.pa.mobilityStats();
    for (const pass of HIGH_ORDER_PASSES) this.#highOrderPass(k, pass.order, pass.kind, pass.gfp);
    const after = k.pa.mobilityStats();
    k.state.count(C_PAGES_RECLAIMED, after.reclaimed - before.reclaimed);
    this.#stats.migrated = after.migrated - before.migrated;
    // Every long-lived task runs once more: runTask checks each page's signature, so a page
    // that migration moved must still hold its task's data (dataErrors otherwise).
    for (const t of this.#long) if (!runTask(k, t, this.#pt)) this.#refused++;
    // Tear down: the long-lived set exits, the page cache is dropped.
    for (const t of this.#long.splice(0)) doExit(k, t, this.#pt);
    for (const pfn of this.#cache.splice(0)) k.pa.removeFromPageCache(pfn, this.#mapping, k.id);
    k.slab.kmemCacheShrinkAll(k.id);
    k.pa.drainLocalPages(k.id);
  }

  /** One pass: ask for half of (free + page cache) in order-`order` blocks; hold them; give them back. */
  #highOrderPass(k: Kernel, order: number, kind: 'atomic' | 'normal', gfp: number): void {
    let lru = 0;
    for (let z = 0; z < 4; z++) lru += k.pa.zoneInfo(z).present > 0 ? k.pa.lruList(z).length : 0;
    const attempts = Math.max(1, Math.floor((k.pa.nrFreePages() + lru) / 2 / (1 << order)));
    const got: number[] = [];
    for (let i = 0; i < attempts; i++) {
      const pfn = k.pa.allocPages(gfp, order, k.id);
      if (pfn >= 0) got.push(pfn);
    }
    const key = `ho.${order}.${kind}`;
    this.#stats[`${key}.attempts`] = (this.#stats[`${key}.attempts`] ?? 0) + attempts;
    this.#stats[`${key}.successes`] = (this.#stats[`${key}.successes`] ?? 0) + got.length;
    k.state.count(C_HIGH_ORDER_ATTEMPTS, attempts);
    k.state.count(C_HIGH_ORDER_SUCCESSES, got.length);
    for (const pfn of got) k.pa.freePages(pfn, order, k.id);
    k.pa.drainLocalPages(k.id);
    // What reclaim dropped is gone from this vCPU's page cache.
    this.#cache = this.#cache.filter((pfn) => k.pa.memMap.PageLRU(pfn) && k.pa.memMap.mapping[pfn] === this.#mapping);
  }

  /** Pageblocks by type, mixed blocks, where the pinned page tables are, /proc/pagetypeinfo. */
  #census(k: Kernel): void {
    const s = this.#stats;
    const names = MIGRATETYPE_NAMES.map((n) => n.toLowerCase());
    const c = k.pa.pageblockCensus();
    names.forEach((n, t) => (s[`pb.${n}`] = c.byType[t]!));
    s['pb.mixed'] = c.mixed;
    // Every page-table page Xen has pinned, by the type of its pageblock.
    const pinned = [0, 0, 0, 0];
    for (let pfn = 0; pfn < k.pa.nrPages; pfn++)
      if (k.pa.memMap.PagePinned(pfn)) pinned[k.pa.pageblockMigratetype(pfn)]!++;
    names.forEach((n, t) => (s[`ptpin.${n}`] = pinned[t]!));
    // Aligned blocks reclaim could empty (every page free or clean page cache), per order.
    const mm = k.pa.memMap;
    for (const order of [3, 9]) {
      let clean = 0;
      let blocks = 0;
      for (let b = k.pa.firstFreePfn >> order; (b + 1) << order <= k.pa.lowmemPages; b++) {
        blocks++;
        let ok = true;
        for (let p = b << order; p < (b + 1) << order && ok; p++)
          ok = k.pa.allocMigratetype(p) === 0xff || (mm.PageLRU(p) && mm.mapping[p] !== 0);
        if (ok) clean++;
      }
      s[`blk.${order}.reclaimable`] = clean;
      s[`blk.${order}.total`] = blocks;
    }
    for (const z of k.pa.pagetypeinfo()) {
      z.free.forEach((row, t) => {
        row.forEach((v, o) => (s[`pti.${z.zone}.${names[t]}.${o}`] = v));
      });
    }
  }

  stats(): Record<string, number> {
    return {
      ...this.#stats,
      longLivedLate: this.#late,
      tasksRefused: this.#refused,
    };
  }
}
