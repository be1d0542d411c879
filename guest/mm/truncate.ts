/*
 * The fault-vs-truncate race (Nick Piggin, February 2007; shared/seeds/fault-vs-truncate-
 * race.txt), on one shared file mapping.
 *
 * Truncation is two steps, as in 2.6.20: unmap_mapping_range takes every pte mapping the
 * truncated part away, then truncate_inode_pages drops those pages from the page cache.
 * A fault that runs between the two finds the page still cached and maps it again; the
 * page is then removed from the cache while mapped -- BUG_ON(page_mapped(page)) in
 * __remove_from_page_cache -- and the pte is left pointing at an orphan.
 *
 * The fix (lockPage = true): the fault locks the page and maps it only if it is still
 * the file's; truncate locks each page and, finding it mapped again, unmaps again before
 * removing it. The file's page cache lives in shared memory so every vCPU sees it.
 */
import { _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER } from '../../src/abi/xen.js';
import { pteHi, pteLo } from '../../src/abi/pte.js';
import type { Kernel } from '../kernel/kernel.js';
import { T_PTE } from '../kernel/state.js';
import { mappingOfAddressSpace } from './page.js';
import { GFP_HIGHUSER_MOVABLE, __GFP_HIGHMEM, __GFP_ZERO } from './page_alloc.js';
import { pteAlloc, setEntry } from './memory.js';

/** Pages the file can have; its pages map at PTE slots FILE_SLOT0 + index of a task. */
export const FILE_PAGES = 32;
export const FILE_SLOT0 = 256;

/* Words of the shared file state. */
const F_SIZE = 0; /** i_size in pages */
const F_CACHE = 1; /** FILE_PAGES pfns, 0 = not cached */
export const FILE_WORDS = F_CACHE + FILE_PAGES;

export interface TruncateCounts {
  faults: number;
  faultRetries: number;
  truncates: number;
  /** BUG_ON(page_mapped(page)) in __remove_from_page_cache. */
  mappedAtRemoval: number;
  /** ptes left mapping a page that is no longer the file's page at that index. */
  orphans: number;
}

export class FileMapping {
  readonly #k: Kernel;
  readonly #w: Int32Array;
  readonly #mapping: number;
  readonly lockPage: boolean;
  readonly counts: TruncateCounts = { faults: 0, faultRetries: 0, truncates: 0, mappedAtRemoval: 0, orphans: 0 };

  /** `state`: FILE_WORDS words of shared memory for the file. */
  constructor(k: Kernel, state: Int32Array, lockPage: boolean, id = 7) {
    this.#k = k;
    this.#w = state;
    this.#mapping = mappingOfAddressSpace(id);
    this.lockPage = lockPage;
  }

  get size(): number {
    return this.#w[F_SIZE]!;
  }

  /** Extend the file (a write past EOF): the new pages are read in on first fault. */
  extend(pages: number): void {
    this.#w[F_SIZE] = Math.min(FILE_PAGES, Math.max(this.#w[F_SIZE]!, pages));
  }

  /** The pfn a present pte of task t maps at file index i, or -1. */
  #mapped(t: number, i: number): number {
    const k = this.#k;
    const pte = k.state.w[k.state.t(t, T_PTE)]!;
    if (pte < 0 || k.isHighmem(pte)) return -1;
    const w = k.kpt.pfnToMfn(pte) * 1024 + 2 * (FILE_SLOT0 + i);
    const lo = k.mem32[w]!;
    if ((lo & _PAGE_PRESENT) === 0) return -1;
    return k.mfnToPfn((lo >>> 12) + (k.mem32[w + 1]! & 0xfffff) * 0x100000);
  }

  #unmapOne(t: number, i: number, pfn: number): void {
    const k = this.#k;
    setEntry(k, t, k.state.w[k.state.t(t, T_PTE)]!, FILE_SLOT0 + i, 0, 0);
    k.pa.memMap.mapcount[pfn]!--;
    k.pa.putPage(pfn, k.id);
  }

  /**
   * do_no_page, first half: check i_size, find the page in the cache (or read it in), take
   * a reference and -- with the fix -- the page lock. Returns the pfn, or -1 for SIGBUS or
   * a retry. The second half (faultFinish) installs the pte; between the two, another
   * vCPU may truncate: that window is the race.
   */
  faultBegin(t: number, i: number): number {
    const k = this.#k;
    const w = this.#w;
    if (i >= w[F_SIZE]! || this.#mapped(t, i) >= 0) return -1;
    let pfn = w[F_CACHE + i]!;
    if (pfn === 0) {
      // Read the page in: the page cache's reference, mapping and index.
      pfn = k.pa.allocPages((GFP_HIGHUSER_MOVABLE & ~__GFP_HIGHMEM) | __GFP_ZERO, 0, k.id);
      if (pfn < 0) return -1;
      k.pa.memMap.mapping[pfn] = this.#mapping;
      k.pa.memMap.index[pfn] = i;
      w[F_CACHE + i] = pfn;
    }
    const mm = k.pa.memMap;
    if (this.lockPage) {
      if (mm.PageLocked(pfn)) {
        this.counts.faultRetries++;
        return -1;
      }
      mm.SetPageLocked(pfn);
    }
    k.pa.getPage(pfn); // becomes the pte's reference
    return pfn;
  }

  /** do_no_page, second half: install the pte (with the fix, only if still the file's page). */
  faultFinish(t: number, i: number, pfn: number): boolean {
    const k = this.#k;
    const mm = k.pa.memMap;
    if (this.lockPage) {
      mm.ClearPageLocked(pfn);
      if (mm.mapping[pfn] !== this.#mapping || i >= this.#w[F_SIZE]!) {
        // Truncated under us: drop it and let the fault be retried.
        this.counts.faultRetries++;
        k.pa.putPage(pfn, k.id);
        return false;
      }
    }
    let pte = k.state.w[k.state.t(t, T_PTE)]!;
    if (pte < 0) pte = pteAlloc(k, t);
    if (pte < 0) {
      k.pa.putPage(pfn, k.id);
      return false;
    }
    mm.mapcount[pfn]!++;
    const mfn = k.kpt.pfnToMfn(pfn);
    setEntry(
      k,
      t,
      pte,
      FILE_SLOT0 + i,
      pteLo(mfn, _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY),
      pteHi(mfn),
    );
    this.counts.faults++;
    return true;
  }

  /** unmap_mapping_range: every task's ptes for file pages at index >= from. */
  unmapMappingRange(from: number): void {
    for (const t of this.#k.state.liveTasks()) {
      for (let i = from; i < FILE_PAGES; i++) {
        const pfn = this.#mapped(t, i);
        if (pfn >= 0 && this.#k.pa.memMap.mapping[pfn] === this.#mapping) this.#unmapOne(t, i, pfn);
      }
    }
  }

  /**
   * truncate_inode_pages: drop the cached pages at index >= from. With the fix a page
   * still locked by a fault is left for the next try; returns whether all are gone.
   */
  truncateInodePages(from: number): boolean {
    const k = this.#k;
    const w = this.#w;
    const mm = k.pa.memMap;
    let done = true;
    for (let i = from; i < FILE_PAGES; i++) {
      const pfn = w[F_CACHE + i]!;
      if (pfn === 0) continue;
      if (this.lockPage) {
        if (mm.PageLocked(pfn)) {
          done = false; // lock_page would sleep here: come back to it
          continue;
        }
        mm.SetPageLocked(pfn);
        // The fix: a fault may have mapped it again since unmap_mapping_range.
        if (mm.mapcount[pfn]! >= 0) this.unmapMappingRange(i);
      }
      if (mm.mapcount[pfn]! >= 0) {
        this.counts.mappedAtRemoval++;
        k.printk(
          `kernel BUG at mm/filemap.c:127! __remove_from_page_cache: page ${pfn} (index ${i}) is still mapped (mapcount ${mm.mapcount[pfn]! + 1})`,
        );
      }
      w[F_CACHE + i] = 0;
      mm.mapping[pfn] = 0;
      if (this.lockPage) mm.ClearPageLocked(pfn);
      k.pa.putPage(pfn, k.id); // the page cache's reference
    }
    return done;
  }

  /** i_size_write: shrink the file to `pages` (the first thing a truncate does). */
  truncateSize(pages: number): void {
    this.#w[F_SIZE] = Math.min(this.#w[F_SIZE]!, pages);
  }

  /** truncate to `pages` in one go (both steps back to back). */
  truncate(pages: number): void {
    this.truncateSize(pages);
    this.unmapMappingRange(pages);
    if (!this.truncateInodePages(pages)) this.#k.printk(`truncate: pages still locked by a fault: left in the cache`);
    this.counts.truncates++;
  }

  /** ptes of task t that map something other than the file's page at that index. */
  orphansOf(t: number): number {
    let n = 0;
    for (let i = 0; i < FILE_PAGES; i++) {
      const pfn = this.#mapped(t, i);
      if (pfn >= 0 && this.#w[F_CACHE + i] !== pfn) n++;
    }
    return n;
  }

  /** zap the file part of task t before it exits (mapcount and references go back). */
  zapTask(t: number): void {
    for (let i = 0; i < FILE_PAGES; i++) {
      const pfn = this.#mapped(t, i);
      if (pfn >= 0) this.#unmapOne(t, i, pfn);
    }
  }

  /** Drop the whole file from the cache (umount). */
  evictAll(): void {
    this.truncate(0);
  }
}
