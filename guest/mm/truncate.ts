/*
 * The fault-vs-invalidate race (Nick Piggin, February 2007; shared/seeds/fault-vs-truncate-
 * race.txt), on one shared file mapping.
 *
 * Truncation beyond i_size was already safe in 2.6.20: i_size is written first, so a
 * fault that starts after it gets SIGBUS, and unmap_mapping_range bumps
 * mapping->truncate_count, so a fault that started before it sees the count change when
 * it comes to install its pte and retries (do_no_page's sequence check). Both are here.
 *
 * Invalidation inside i_size is not covered by either. A direct-I/O write unmaps the
 * range, writes the disk, then invalidate_inode_pages2_range takes each cached page: it
 * locks the page, unmaps it while it is mapped, then removes it from the page cache
 * (__remove_from_page_cache). A fault does not take the page lock (2.6.20), and i_size
 * has not changed: one that runs between the unmapping and the removal finds the page
 * still cached and maps it. The page then leaves the page cache while mapped --
 * BUG_ON(page_mapped(page)), Nick's check at mm/filemap.c:124 -- and the task keeps
 * reading the old page while the file holds the new data. A fault that took its page
 * before the removal and maps it after leaves the same orphan pte, without the BUG.
 *
 * The fix (lockPage): the fault locks the page from finding it to mapping it and maps it
 * only if it is still the file's; invalidation and truncation lock each page before
 * removing it, so the two exclude each other.
 *
 * The file's state is shared memory (every vCPU sees one page cache); its lock stands for
 * mapping->tree_lock, i_mmap_lock and the pte lock at once. The faults, the unmaps and
 * the removals take it, so the race is between steps, under both schedulers, and never
 * inside one.
 */
import {
  _PAGE_ACCESSED,
  _PAGE_DIRTY,
  _PAGE_PRESENT,
  _PAGE_RW,
  _PAGE_USER,
  FRAME_WORDS,
  PAGE_SIZE,
} from '../../src/abi/xen.js';
import { pteHi, pteLo, pteMfn } from '../../src/abi/pte.js';
import type { Kernel } from '../kernel/kernel.js';
import { T_PTE } from '../kernel/state.js';
import { mappingOfAddressSpace } from './page.js';
import { GFP_HIGHUSER_MOVABLE, __GFP_HIGHMEM, __GFP_ZERO } from './page_alloc.js';
import { USER_BASE, pteAlloc, setEntry } from './memory.js';
import { spinLock, spinUnlock } from './spinlock.js';

/** Pages the file can have; its pages map at PTE slots FILE_SLOT0 + index of a task. */
export const FILE_PAGES = 32;
export const FILE_SLOT0 = 256;
/** The line of BUG_ON(page_mapped(page)) in __remove_from_page_cache, in the seed's patch. */
export const FILEMAP_BUG_LINE = 124;

/* Words of the shared file state. */
const F_SIZE = 0; /** i_size in pages */
const F_TRUNCATE_COUNT = 1; /** mapping->truncate_count */
const F_LOCK = 2; /** the mapping's lock (alone in its words) */
const F_FINI = 3; /** vCPUs done with their teardown */
const F_DISK = 16; /** FILE_PAGES on-disk versions */
const F_CACHE = F_DISK + FILE_PAGES; /** FILE_PAGES pfns, 0 = not cached */
const F_MAPPERS = F_CACHE + FILE_PAGES; /** bitmap of tasks that map the file (i_mmap) */
const MAPPER_WORDS = 32;
export const FILE_WORDS = F_MAPPERS + MAPPER_WORDS;

export interface TruncateCounts {
  faults: number;
  faultRetries: number;
  truncates: number;
  /** Direct-I/O writes whose range was invalidated (invalidate_inode_pages2_range). */
  invalidates: number;
  /** BUG_ON(page_mapped(page)) in __remove_from_page_cache. */
  mappedAtRemoval: number;
  /** ptes found mapping a page that is no longer the file's page at that index. */
  orphans: number;
}

/** The data of page `i` of the file as written `version` times. */
export function fileWord(i: number, version: number): number {
  return (0xf1000000 | ((version & 0xffff) << 8) | i) >>> 0;
}

export class FileMapping {
  readonly #k: Kernel;
  readonly #w: Int32Array;
  readonly #mapping: number;
  readonly lockPage: boolean;
  readonly counts: TruncateCounts = {
    faults: 0,
    faultRetries: 0,
    truncates: 0,
    invalidates: 0,
    mappedAtRemoval: 0,
    orphans: 0,
  };
  /** do_no_page's sequence: truncate_count when faultBegin found the page. */
  sequence = 0;
  /** Orphan ptes already counted (task * FILE_PAGES + index -> pfn). */
  readonly #seen = new Map<number, number>();
  readonly #onSpin: () => void;

  /** `state`: FILE_WORDS words of shared memory for the file. */
  constructor(k: Kernel, state: Int32Array, lockPage: boolean, id = 7) {
    if (state.length < FILE_WORDS) throw new RangeError(`FileMapping: needs ${FILE_WORDS} words of state`);
    this.#k = k;
    this.#w = state;
    this.#mapping = mappingOfAddressSpace(id);
    this.lockPage = lockPage;
    this.#onSpin = () => k.cpu.pollInterrupts();
  }

  get size(): number {
    return Atomics.load(this.#w, F_SIZE);
  }

  #lock(): void {
    spinLock(this.#w, F_LOCK, this.#k.id, this.#onSpin);
  }
  #unlock(): void {
    spinUnlock(this.#w, F_LOCK, this.#k.id);
  }

  /** Extend the file (a write past EOF): new data on disk, read in on first fault. */
  extend(pages: number): void {
    this.#lock();
    const w = this.#w;
    const to = Math.min(FILE_PAGES, pages);
    for (let i = w[F_SIZE]!; i < to; i++) w[F_DISK + i]!++;
    if (to > w[F_SIZE]!) w[F_SIZE] = to;
    this.#unlock();
  }

  /** The pfn a present pte of task t maps at file index i, or -1 (the pte page read by its frame, highmem too). */
  #mapped(t: number, i: number): number {
    const k = this.#k;
    const pte = k.state.w[k.state.t(t, T_PTE)]!;
    if (pte < 0) return -1;
    const w = k.kpt.pfnToMfn(pte) * FRAME_WORDS + 2 * (FILE_SLOT0 + i);
    const lo = k.mem32[w]!;
    if ((lo & _PAGE_PRESENT) === 0) return -1;
    return k.mfnToPfn(pteMfn(lo, k.mem32[w + 1]!));
  }

  #unmapOne(t: number, i: number, pfn: number): void {
    const k = this.#k;
    setEntry(k, t, k.state.w[k.state.t(t, T_PTE)]!, FILE_SLOT0 + i, 0, 0);
    Atomics.sub(k.pa.memMap.mapcount, pfn, 1);
    k.pa.putPage(pfn, k.id);
  }

  #isMapper(t: number): boolean {
    return (this.#w[F_MAPPERS + (t >>> 5)]! & (1 << (t & 31))) !== 0;
  }
  #setMapper(t: number, on: boolean): void {
    const i = F_MAPPERS + (t >>> 5);
    this.#w[i] = on ? this.#w[i]! | (1 << (t & 31)) : this.#w[i]! & ~(1 << (t & 31));
  }

  /** The word the file holds at page i: the cached page's, else the disk's. Lock held. */
  #fileData(i: number): number {
    const pfn = this.#w[F_CACHE + i]!;
    if (pfn === 0) return fileWord(i, this.#w[F_DISK + i]!);
    return this.#k.mem32[this.#k.kpt.pfnToMfn(pfn) * FRAME_WORDS]!;
  }

  /**
   * do_no_page, first half: check i_size, find the page in the cache (or read it in from
   * disk), take a reference and -- with the fix -- the page lock; note truncate_count.
   * Returns the pfn, or -1 for SIGBUS or a retry. The second half (faultFinish) installs
   * the pte; between the two another vCPU may unmap, invalidate or truncate.
   */
  faultBegin(t: number, i: number): number {
    const k = this.#k;
    const w = this.#w;
    this.#lock();
    try {
      if (i >= w[F_SIZE]! || this.#mapped(t, i) >= 0) return -1;
      let pfn = w[F_CACHE + i]!;
      if (pfn === 0) {
        // Read the page in: the page cache's reference, mapping and index, the disk's data.
        pfn = k.pa.allocPages((GFP_HIGHUSER_MOVABLE & ~__GFP_HIGHMEM) | __GFP_ZERO, 0, k.id);
        if (pfn < 0) return -1;
        k.cpu.mmu.store32(k.lowmemVa(pfn), fileWord(i, w[F_DISK + i]!));
        k.pa.memMap.mapping[pfn] = this.#mapping;
        k.pa.memMap.index[pfn] = i;
        w[F_CACHE + i] = pfn;
      }
      const mm = k.pa.memMap;
      if (this.lockPage && mm.TestSetPageLocked(pfn)) {
        this.counts.faultRetries++; // lock_page would sleep: the fault is retried
        return -1;
      }
      this.sequence = w[F_TRUNCATE_COUNT]!;
      k.pa.getPage(pfn); // becomes the pte's reference
      return pfn;
    } finally {
      this.#unlock();
    }
  }

  /**
   * do_no_page, second half: install the pte unless truncate_count moved (unmap ran since
   * faultBegin) or -- with the fix -- the page is no longer the file's.
   */
  faultFinish(t: number, i: number, pfn: number, sequence: number): boolean {
    const k = this.#k;
    const mm = k.pa.memMap;
    this.#lock();
    try {
      const stale = sequence !== this.#w[F_TRUNCATE_COUNT]!;
      const gone = this.lockPage && mm.mapping[pfn] !== this.#mapping;
      if (this.lockPage) mm.ClearPageLocked(pfn);
      if (stale || gone) {
        this.counts.faultRetries++;
        k.pa.putPage(pfn, k.id);
        return false;
      }
      let pte = k.state.w[k.state.t(t, T_PTE)]!;
      if (pte < 0) pte = pteAlloc(k, t);
      if (pte < 0) {
        k.pa.putPage(pfn, k.id);
        return false;
      }
      Atomics.add(mm.mapcount, pfn, 1);
      const mfn = k.kpt.pfnToMfn(pfn);
      setEntry(
        k,
        t,
        pte,
        FILE_SLOT0 + i,
        pteLo(mfn, _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY),
        pteHi(mfn),
      );
      this.#setMapper(t, true);
      this.counts.faults++;
      return true;
    } finally {
      this.#unlock();
    }
  }

  /** unmap_mapping_range over [from, to): every mapper's ptes there; truncate_count++. Lock held. */
  #unmapMappingRange(from: number, to: number): void {
    const k = this.#k;
    this.#w[F_TRUNCATE_COUNT]!++;
    for (const t of k.state.liveTasks()) {
      if (!this.#isMapper(t)) continue;
      for (let i = from; i < to; i++) {
        const pfn = this.#mapped(t, i);
        if (pfn >= 0 && k.pa.memMap.mapping[pfn] === this.#mapping) this.#unmapOne(t, i, pfn);
      }
    }
  }

  /** unmap_mapping_range(from, to). */
  unmapMappingRange(from: number, to = FILE_PAGES): void {
    this.#lock();
    this.#unmapMappingRange(from, to);
    this.#unlock();
  }

  /**
   * __remove_from_page_cache of page i, then the cache's reference. Lock held. BUG_ON
   * (page_mapped(page)) reports Linux's line alone, and the removal goes on as BUG()
   * would not let it: the orphan pte that follows is the data corruption it guards.
   */
  #removeFromPageCache(i: number, pfn: number): void {
    const k = this.#k;
    const mm = k.pa.memMap;
    this.#w[F_CACHE + i] = 0;
    mm.mapping[pfn] = 0;
    if (mm.pageMapped(pfn)) {
      this.counts.mappedAtRemoval++;
      k.report('bug', [`kernel BUG at mm/filemap.c:${FILEMAP_BUG_LINE}!`]);
    }
    if (this.lockPage) mm.ClearPageLocked(pfn);
    k.pa.putPage(pfn, k.id);
  }

  /**
   * truncate_inode_pages: drop the cached pages at index >= from. With the fix a page
   * still locked by a fault is left for the next try; returns whether all are gone.
   */
  truncateInodePages(from: number): boolean {
    const w = this.#w;
    const mm = this.#k.pa.memMap;
    let done = true;
    this.#lock();
    for (let i = from; i < FILE_PAGES; i++) {
      const pfn = w[F_CACHE + i]!;
      if (pfn === 0) continue;
      if (this.lockPage && mm.TestSetPageLocked(pfn)) {
        done = false; // lock_page would sleep here: come back to it
        continue;
      }
      this.#removeFromPageCache(i, pfn);
    }
    this.#unlock();
    return done;
  }

  /** Truncation's first step: i_size_write, then unmap_mapping_range beyond it. */
  truncateSize(pages: number): void {
    this.#lock();
    if (pages < this.#w[F_SIZE]!) this.#w[F_SIZE] = pages;
    this.#unmapMappingRange(pages, FILE_PAGES);
    this.#unlock();
  }

  /** truncate to `pages` in one go (both steps back to back); false if a page stayed locked. */
  truncate(pages: number): boolean {
    this.truncateSize(pages);
    const done = this.truncateInodePages(pages);
    if (done) this.counts.truncates++;
    return done;
  }

  /**
   * generic_file_direct_IO's write over [from, to) (inside i_size): unmap the range, then
   * the data goes to disk. invalidate_inode_pages2_range follows, page by page.
   */
  directIoWrite(from: number, to: number): void {
    this.#lock();
    this.#unmapMappingRange(from, to);
    for (let i = from; i < to; i++) this.#w[F_DISK + i]!++;
    this.#unlock();
  }

  /**
   * invalidate_inode_pages2_range, first half for page i: lock the page (with the fix),
   * unmap it while it is mapped. 'none': not cached; 'busy': a fault holds its lock (come
   * back); else the pfn to remove, which invalidateRemove does -- the window is between.
   */
  invalidateUnmap(i: number): number | 'none' | 'busy' {
    const mm = this.#k.pa.memMap;
    this.#lock();
    try {
      const pfn = this.#w[F_CACHE + i]!;
      if (pfn === 0) return 'none';
      if (this.lockPage && mm.TestSetPageLocked(pfn)) return 'busy';
      while (mm.pageMapped(pfn)) {
        const before = mm.pageMapcount(pfn);
        this.#unmapMappingRange(i, i + 1);
        if (mm.pageMapcount(pfn) === before) break; // mapped by no one we know: do not spin
      }
      return pfn;
    } finally {
      this.#unlock();
    }
  }

  /** invalidate_inode_pages2_range, second half: invalidate_complete_page2 removes page i. */
  invalidateRemove(i: number, pfn: number): void {
    this.#lock();
    if (this.#w[F_CACHE + i] === pfn) this.#removeFromPageCache(i, pfn);
    this.#unlock();
  }

  /**
   * Task t reads its mapped pages of the file in user mode (its page tables are loaded),
   * each compared with the file's data; returns the wrong pages it had not read before
   * (each stale page of each task counts once). A pte mapping a page that is not the
   * file's page at its index is an orphan, counted once.
   */
  checkTask(t: number): number {
    this.#lock();
    const bad = this.#checkTask(t);
    this.#unlock();
    return bad;
  }

  /**
   * Run task t (`run` is runTask: it pins the task's page tables the first time and loads
   * them) and check what it reads, under the file's lock: another vCPU must not change the
   * task's ptes while its page tables are being pinned. -1 when the task could not run.
   */
  runAndCheck(t: number, run: () => boolean): number {
    this.#lock();
    try {
      return run() ? this.#checkTask(t) : -1;
    } finally {
      this.#unlock();
    }
  }

  #checkTask(t: number): number {
    const k = this.#k;
    const mmu = k.cpu.mmu;
    let bad = 0;
    mmu.flushAll(); // ptes may have been cleared by another vCPU since this one cached them
    for (let i = 0; i < FILE_PAGES; i++) {
      const pfn = this.#mapped(t, i);
      if (pfn < 0) continue;
      const mfn = mmu.translate(USER_BASE + (FILE_SLOT0 + i) * PAGE_SIZE, false, true);
      if (mfn < 0) continue;
      const key = t * FILE_PAGES + i;
      if (this.#w[F_CACHE + i] !== pfn && this.#seen.get(key) !== pfn) {
        this.#seen.set(key, pfn);
        this.counts.orphans++;
      }
      const got = mmu.mem32[mfn * FRAME_WORDS]!;
      const want = this.#fileData(i);
      if (got !== want && this.#seen.get(-key - 1) !== pfn) {
        bad++;
        this.#seen.set(-key - 1, pfn);
        k.report('data', [
          `task ${t}: file page ${i} reads ${got.toString(16)}, the file holds ${want.toString(16)} (a page no longer in the page cache)`,
        ]);
      }
    }
    return bad;
  }

  /** ptes of task t that map something other than the file's page at that index. */
  orphansOf(t: number): number {
    let n = 0;
    this.#lock();
    for (let i = 0; i < FILE_PAGES; i++) {
      const pfn = this.#mapped(t, i);
      if (pfn >= 0 && this.#w[F_CACHE + i] !== pfn) n++;
    }
    this.#unlock();
    return n;
  }

  /** zap the file part of task t before it exits (mapcount and references go back). */
  zapTask(t: number): void {
    this.#lock();
    for (let i = 0; i < FILE_PAGES; i++) {
      const pfn = this.#mapped(t, i);
      if (pfn >= 0) this.#unmapOne(t, i, pfn);
    }
    this.#setMapper(t, false);
    this.#unlock();
  }

  /**
   * A vCPU is done with the file. The last of `nr` drops the whole file from the cache
   * (umount): no fault can be pending then. Returns whether this one did.
   */
  finish(nr: number): boolean {
    if (Atomics.add(this.#w, F_FINI, 1) !== nr - 1) return false;
    this.truncate(0);
    Atomics.store(this.#w, F_FINI, 0);
    return true;
  }
}
