/*
 * A page-cache read, as generic_file_read did it for highmem pages: the page cache page
 * is mapped with kmap() (a pkmap slot), filled, kunmap()ed -- which leaves the slot at
 * count 1, still mapping the page writable until the next flush_all_zero_pkmaps -- and
 * later dropped from the cache. The freed page goes to the hot end of the per-CPU list
 * with its kmap alias intact: Jeremy Fitzhardinge's HIGHPTE case, when it becomes a PTE
 * page.
 */
import type { Kernel } from '../kernel/kernel.js';
import { GFP_HIGHUSER_MOVABLE } from './page_alloc.js';
import { PAGE_SIZE } from '../../src/abi/xen.js';

const buf = new Uint8Array(PAGE_SIZE);

/** Read `n` pages of a file through the page cache, then drop them. Returns pages read. */
export function readAndDropPages(k: Kernel, n: number, fill: number): number {
  const hm = k.highmem;
  let done = 0;
  for (let i = 0; i < n; i++) {
    const pfn = k.pa.allocPages(GFP_HIGHUSER_MOVABLE, 0, k.id);
    if (pfn < 0) break;
    buf.fill((fill + i) & 0xff);
    if (hm && k.isHighmem(pfn)) {
      const va = hm.kmap(pfn);
      if (va > 0) {
        if (k.cpu.mmu.writeBytes(va, buf, 0, PAGE_SIZE) < 0) k.printk(`BUG: fault filling page cache page ${pfn}`);
        hm.kunmap(pfn);
      }
    } else {
      k.writePage(pfn, buf, 0);
    }
    k.pa.putPage(pfn, k.id); // remove_from_page_cache + page_cache_release
    done++;
  }
  return done;
}
