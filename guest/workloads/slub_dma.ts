/*
 * slub-dma: the AT91 MMC driver's read (2.6.22-rc5, June 2007; slub-kmap-atomic-oops.txt).
 * Each step is one transfer into a 64-byte kmalloc buffer -- a SLUB slab page: the card
 * DMAs big-endian words into it, at91mci_post_dma_read maps the page with
 * kmap_atomic(sg->page, KM_BIO_SRC_IRQ), swaps each word through that mapping, calls
 * kunmap_atomic and flush_dcache_page(sg->page); the request's owner checks the data and
 * kfrees the buffer.
 *
 * With an aliasing data cache and without the SLUB fix, flush_dcache_page takes the slab
 * cache in page->mapping for an address_space and oopses. `kunmapBase` is Marc Pignat's
 * patch, kunmap_atomic(buffer - sg->offset): kunmap_atomic takes any address inside the
 * page, so it changes nothing.
 */
import type { Rng } from '../lib/random.js';
import type { Kernel } from '../kernel/kernel.js';
import { C_DATA_ERRORS } from '../../src/abi/kernel.js';
import { FRAME_WORDS, PAGE_SIZE } from '../../src/abi/xen.js';
import { flushDcachePage } from '../mm/cacheflush.js';
import { KM_BIO_SRC_IRQ } from '../mm/highmem.js';
import { GFP_KERNEL } from '../mm/page_alloc.js';
import type { Workload } from './driver.js';

/** The transfer's length, as in the seed's oopsing read. */
export const SLUB_DMA_BYTES = 64;

/** A scatterlist entry: the page and the offset in it. */
interface Scatterlist {
  page: number;
  offset: number;
  length: number;
}

const swab32 = (x: number) =>
  (((x & 0xff) << 24) | ((x & 0xff00) << 8) | ((x >>> 8) & 0xff00) | ((x >>> 24) & 0xff)) >>> 0;

/** The word the card sends at position j of transfer n (before the byte swap). */
function cardWord(n: number, j: number): number {
  return (0xd0a00000 | ((n & 0xfff) << 4) | j) >>> 0;
}

export class SlubDma implements Workload {
  readonly #kunmapBase: boolean;
  readonly #n = { transfers: 0, oopses: 0, flushes: 0, deferred: 0, kunmapMisuse: 0, failed: 0 };

  constructor(kunmapBase: boolean) {
    this.#kunmapBase = kunmapBase;
  }

  init(): void {}

  step(k: Kernel, _rng: Rng): void {
    const n = this.#n.transfers;
    const buf = k.slab.kmalloc(SLUB_DMA_BYTES, GFP_KERNEL, k.id);
    if (buf === 0) {
      this.#n.failed++;
      return;
    }
    const sg: Scatterlist = {
      page: Math.floor((buf - k.layout.pageOffset) / PAGE_SIZE),
      offset: (buf - k.layout.pageOffset) % PAGE_SIZE,
      length: SLUB_DMA_BYTES,
    };
    this.#dma(k, sg, n);
    this.#at91mciPostDmaRead(k, sg);
    const mmu = k.cpu.mmu;
    for (let j = 0; j < sg.length / 4; j++) {
      if (mmu.load32(buf + 4 * j) !== cardWord(n, j)) {
        k.state.count(C_DATA_ERRORS);
        k.report('data', [
          `at91_mci: word ${j} of transfer ${n} at ${(buf + 4 * j).toString(16)} is not what the card sent`,
        ]);
        break;
      }
    }
    k.slab.kfree(buf, k.id);
    this.#n.transfers++;
  }

  /** The card writes machine memory directly: DMA does not go through the CPU's MMU. */
  #dma(k: Kernel, sg: Scatterlist, n: number): void {
    const w = k.kpt.pfnToMfn(sg.page) * FRAME_WORDS + (sg.offset >>> 2);
    for (let j = 0; j < sg.length / 4; j++) k.mem32[w + j] = swab32(cardWord(n, j));
  }

  /** at91mci_post_dma_read: swap the words in place through a kmap_atomic mapping, then flush. */
  #at91mciPostDmaRead(k: Kernel, sg: Scatterlist): void {
    const mmu = k.cpu.mmu;
    const page = k.highmem ? k.highmem.kmapAtomic(sg.page, KM_BIO_SRC_IRQ, k.id) : k.lowmemVa(sg.page);
    const buffer = page + sg.offset;
    for (let j = 0; j < sg.length / 4; j++) {
      const v = mmu.load32(buffer + 4 * j);
      if (v >= 0) mmu.store32(buffer + 4 * j, swab32(v));
    }
    if (k.highmem) {
      const arg = this.#kunmapBase ? buffer - sg.offset : buffer;
      if (k.highmem.kunmapAtomic(arg, KM_BIO_SRC_IRQ, k.id) < 0) this.#n.kunmapMisuse++;
    }
    const what = flushDcachePage(k, sg.page);
    if (what === 'oops') this.#n.oopses++;
    else if (what === 'deferred') this.#n.deferred++;
    else if (what !== 'none') this.#n.flushes++;
  }

  /** The driver goes away: kmem_cache_shrink gives back the slab pages SLUB kept partial. */
  fini(k: Kernel): void {
    k.slab.kmemCacheShrinkAll(k.id);
  }

  stats(): Record<string, number> {
    return { ...this.#n };
  }
}
