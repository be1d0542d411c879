/*
 * sound/core/memalloc.c as of 2.6.15-rc1-mm2: snd_malloc_pages takes a high-order block
 * and marks every 0-order page of it PG_reserved (mark_pages), and the PCM mmap's nopage
 * handler hands out those 0-order pages one by one, with get_page on each.
 *
 * Without __GFP_COMP the block's pages after the first keep count 0: the nopage get_page
 * takes a tail to 1 and munmap's put_page takes it back to 0, freeing one page of a block
 * that is still the driver's -- and PG_reserved, which free_pages_check reports (Bad page
 * state at free_hot_cold_page). Hugh Dickins' fix asks for __GFP_COMP, so that the tails'
 * references go to the head (shared/seeds/bad-page-state-free-hot-cold-page.txt).
 */
import type { Kernel } from '../kernel/kernel.js';
import { GFP_KERNEL, __GFP_COMP } from '../mm/page_alloc.js';

/** get_order(size) for sizes in pages. */
export function getOrder(pages: number): number {
  return Math.max(0, 32 - Math.clz32(pages - 1));
}

/** A buffer from snd_malloc_pages: its first pfn and order. */
export interface SndBuffer {
  pfn: number;
  order: number;
}

/** snd_malloc_pages: 2^order pages, PG_reserved on each; with `comp`, the 2005 fix. Null on failure. */
export function sndMallocPages(k: Kernel, pages: number, comp: boolean): SndBuffer | null {
  const order = getOrder(pages);
  const pfn = k.pa.allocPages(GFP_KERNEL | (comp ? __GFP_COMP : 0), order, k.id);
  if (pfn < 0) return null;
  // mark_pages
  for (let p = pfn; p < pfn + (1 << order); p++) k.pa.memMap.SetPageReserved(p);
  return { pfn, order };
}

/** snd_free_pages: unmark_pages, then free_pages of the block. */
export function sndFreePages(k: Kernel, buf: SndBuffer): void {
  for (let p = buf.pfn; p < buf.pfn + (1 << buf.order); p++) k.pa.memMap.ClearPageReserved(p);
  k.pa.freePages(buf.pfn, buf.order, k.id);
}

/** snd_pcm_mmap_data_nopage: the 0-order page at `index` of the buffer, with a reference. */
export function sndPcmMmapDataNopage(k: Kernel, buf: SndBuffer, index: number): number {
  if (index >= 1 << buf.order) return -1; // NOPAGE_SIGBUS
  const pfn = buf.pfn + index;
  k.pa.getPage(pfn);
  return pfn;
}
