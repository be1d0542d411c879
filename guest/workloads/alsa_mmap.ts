/*
 * alsa-mmap: aplay plays through an mmapped PCM buffer (2.6.15-rc1-mm2, November 2005).
 * Each step is one playback: the driver allocates its DMA buffer with snd_malloc_pages
 * (order 2, PG_reserved; __GFP_COMP only with the fix), the "sound card" fills it, the
 * task 'aplay' mmaps it, touches every page -- each first touch a page fault served by
 * the driver's nopage handler -- checks what it reads, and munmaps it; the driver frees
 * the buffer and aplay exits. Without __GFP_COMP the munmap frees the three tail pages
 * through free_hot_cold_page and bad_page reports each (with dump_stack's backtrace).
 */
import type { Rng } from '../lib/random.js';
import type { Kernel } from '../kernel/kernel.js';
import { C_DATA_ERRORS } from '../../src/abi/kernel.js';
import { FRAME_WORDS } from '../../src/abi/xen.js';
import { doExit, runTask, switchToSwapper, taskCreate } from '../mm/memory.js';
import { type DeviceVma, doMmap, doNoPage, sysMunmap, vmaAddress } from '../mm/mmap.js';
import { sndFreePages, sndMallocPages, sndPcmMmapDataNopage } from '../sound/memalloc.js';
import type { Workload } from './driver.js';

/** The PCM buffer: 16 KiB, an order-2 block as in the seed. */
export const ALSA_BUFFER_PAGES = 4;
/** Where the buffer maps in aplay's user PTE page. */
const ALSA_SLOT0 = 384;

/** What the sound card wrote in word 0 of page i of playback n. */
function sample(n: number, i: number): number {
  return (0x50c00000 | ((n & 0xfff) << 8) | i) >>> 0;
}

export class AlsaMmap implements Workload {
  readonly #gfpComp: boolean;
  readonly #pt = new Int32Array(8);
  readonly #n = { playbacks: 0, faults: 0, zapped: 0, failed: 0 };

  constructor(gfpComp: boolean) {
    this.#gfpComp = gfpComp;
  }

  init(): void {}

  step(k: Kernel, _rng: Rng): void {
    const n = this.#n.playbacks;
    const buf = sndMallocPages(k, ALSA_BUFFER_PAGES, this.#gfpComp);
    if (buf === null) {
      this.#n.failed++;
      return;
    }
    // The card's DMA: samples land in the buffer (through the kernel's direct map).
    for (let i = 0; i < ALSA_BUFFER_PAGES; i++) k.cpu.mmu.store32(k.lowmemVa(buf.pfn + i), sample(n, i));
    const prev = k.comm;
    k.comm = 'aplay';
    const t = taskCreate(k, 0);
    if (t < 0) {
      k.comm = prev;
      sndFreePages(k, buf);
      this.#n.failed++;
      return;
    }
    const vma = doMmap(t, ALSA_SLOT0, ALSA_BUFFER_PAGES, (i) => sndPcmMmapDataNopage(k, buf, i));
    if (runTask(k, t, this.#pt)) {
      this.#touch(k, vma, n);
      this.#n.zapped += sysMunmap(k, vma);
      switchToSwapper(k);
      doExit(k, t, this.#pt);
    }
    k.comm = prev;
    sndFreePages(k, buf);
    this.#n.playbacks++;
  }

  /** aplay writes to every page of the mapping (faulting each in) after reading the card's sample. */
  #touch(k: Kernel, vma: DeviceVma, n: number): void {
    const mmu = k.cpu.mmu;
    for (let i = 0; i < vma.pages; i++) {
      const va = vmaAddress(vma, i);
      let mfn = mmu.translate(va, true, true);
      if (mfn < 0) {
        if (!doNoPage(k, vma, i, true)) continue;
        this.#n.faults++;
        mfn = mmu.translate(va, true, true);
      }
      if (mfn < 0 || mmu.mem32[mfn * FRAME_WORDS] !== sample(n, i)) {
        k.state.count(C_DATA_ERRORS);
        k.report('data', [`aplay: PCM page ${i} at ${va.toString(16)} does not hold the card's samples`]);
        continue;
      }
      mmu.mem32[mfn * FRAME_WORDS + 1] = i; // the user's write
    }
  }

  fini(): void {}

  stats(): Record<string, number> {
    return { ...this.#n };
  }
}
