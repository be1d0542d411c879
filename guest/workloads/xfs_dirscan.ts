/*
 * xfs-dirscan: `find` over a large directory, again and again with the caches dropped
 * between passes, on vCPU 0 (which owns the mount), while every vCPU -- vCPU 0 too --
 * forks, execs and exits tasks. XFS frees buffer pages to vCPU 0's hot list; the next
 * page tables made on vCPU 0 are those pages; under the 2007 code their lazy vmap alias
 * is still there when Xen is asked to pin them.
 */
import type { Rng } from '../lib/random.js';
import type { Kernel } from '../kernel/kernel.js';
import type { DirectoryImage } from '../fs/xfs/backing.js';
import { mountOptionsOf, scanBlocks, type XfsWorkloadMount, xfsMount } from '../fs/xfs/mount.js';
import type { XfsBufCache } from '../fs/xfs/xfs_buf.js';
import { Xlog } from '../fs/xfs/xfs_log.js';
import type { Workload } from './driver.js';
import { ForkStorm } from './fork_storm.js';
import { readAndDropPages } from '../mm/filemap.js';
import { GFP_KERNEL } from '../mm/page_alloc.js';
import { MAX_NR_ZONES, ZONE_HIGHMEM } from '../mm/page.js';
import { PAGE_SIZE } from '../../src/abi/xen.js';

export interface XfsWorkloadOptions extends XfsWorkloadMount {
  /** Blocks read per scan step. */
  blocksPerStep?: number;
  /** What vCPU 0 mixes in: 'scan' (xfs-dirscan), 'log' (log-recovery), 'mixed'. */
  mode: 'scan' | 'log' | 'mixed';
}

/**
 * Cached xfs_bufs the workloads' mount keeps (1024 x 64 KiB = 64 MiB). Beyond it the oldest
 * is freed as the scan goes, as the VM ages the page cache of a guest whose memory is not
 * short. Below it memory is the bound: when the guest runs short, the allocator's reclaim
 * calls the shrinkers -- XFS's wakes xfsbufd, which purges the a_list -- and the cache then
 * gives back its oldest buffers. A directory larger than free memory (David Chinner's
 * 100,000 files in ~1,700 64 KiB blocks, under --memory 48M) keeps that path busy; the
 * default 20,000 small entries (10 blocks) never reach either bound.
 */
export const XFS_WORKLOAD_MAX_BUFFERS = 1024;

export class XfsWorkload implements Workload {
  readonly o: XfsWorkloadOptions;
  readonly #tasks = new ForkStorm(3);
  #cache: XfsBufCache | null = null;
  #image: DirectoryImage | null = null;
  #log: Xlog | null = null;
  #cursor = 0;
  #passes = 0;
  #blocks = 0;
  #errors = 0;
  #mounts = 0;
  #pagesRead = 0;
  #steps = 0;
  #shrinkSlabs = 0;
  /**
   * Why the shrinker did or did not run: the fewest free pages the lowmem zones' buddy
   * lists held after any of vCPU 0's steps, beside the sum of their pages_low (what
   * zone_watermark_ok compares a GFP_NOFS allocation against: below it, reclaim runs
   * shrink_slab). Read-only; nothing in the run depends on them.
   */
  #freePagesMin = Number.MAX_SAFE_INTEGER;
  #pagesLow = 0;

  constructor(o: XfsWorkloadOptions) {
    this.o = o;
  }

  init(k: Kernel): void {
    if (k.id !== 0) return;
    const o = this.o;
    const { cache, image } = xfsMount(k, mountOptionsOf(o, XFS_WORKLOAD_MAX_BUFFERS));
    this.#cache = cache;
    this.#image = image;
    for (let z = 0; z < MAX_NR_ZONES; z++) if (z !== ZONE_HIGHMEM) this.#pagesLow += k.pa.zoneInfo(z).low;
    if (this.o.mode !== 'scan') {
      this.#log = new Xlog(cache, { seed: this.o.seed });
      this.#mount();
    }
  }

  #mount(): void {
    if (this.#log!.xfsLogMount() < 0) this.#errors++;
    this.#mounts++;
  }

  step(k: Kernel, rng: Rng): void {
    const cache = this.#cache;
    if (cache === null) {
      this.#tasks.step(k, rng);
      return;
    }
    cache.xfsBufTimer(); // xfsbufd's timer: it runs on its own schedule
    const every = this.o.shrinkEvery ?? 0;
    if (every > 0 && ++this.#steps % every === 0) {
      // kswapd's shrink_slab: every registered shrinker, XFS's xfsbufd_wakeup among them.
      k.pa.shrinkSlab(GFP_KERNEL, k.id);
      this.#shrinkSlabs++;
    }
    const r = rng.nextInt(10);
    if (this.o.mode === 'log' && r < 2) {
      // r = 1: godown, umount, mount (xfstests' shutdown tests): no unmount record is
      // written, and the mount after this unclean shutdown replays the log. r = 0: a clean
      // umount and mount, which only finds the head and the unmount record before it. Either
      // way the iclogs go on the a_list, and the mount frees its recovery buffers last.
      if (r === 1) this.#log!.xfsForceShutdown();
      this.#log!.xfsLogUnmount();
      this.#mount();
    } else if (this.o.mode === 'mixed' && r === 9) {
      this.#pagesRead += readAndDropPages(k, 2, r);
    } else if (this.o.mode !== 'log' && r < 5) {
      const res = scanBlocks(cache, this.#image!, this.#cursor, this.o.blocksPerStep ?? 4);
      this.#blocks += res.wrapped ? this.#image!.nblocks - this.#cursor : res.next - this.#cursor;
      this.#errors += res.errors;
      this.#cursor = res.next;
      if (res.wrapped) {
        // echo 1 > /proc/sys/vm/drop_caches between passes: the page cache, where 2.6.23's
        // xfs_bufs live. Not echo 3, whose drop_slab() would call XFS's shrinker each pass.
        this.#passes++;
        cache.dropCaches();
      }
    } else {
      this.#tasks.step(k, rng);
    }
    this.#sampleFreePages(k);
  }

  /** The lowmem zones' free pages now (zone->free_pages: the buddy lists, as the watermark check reads them). */
  #sampleFreePages(k: Kernel): void {
    let free = 0;
    for (let z = 0; z < MAX_NR_ZONES; z++) if (z !== ZONE_HIGHMEM) free += k.pa.zoneFreePages(z);
    if (free < this.#freePagesMin) this.#freePagesMin = free;
  }

  fini(k: Kernel): void {
    this.#tasks.fini(k);
    const cache = this.#cache;
    if (cache === null) return;
    if (this.#log) this.#log.xfsLogUnmount();
    // umount: the cache goes, and so does the a_list (xfs_buf_terminate).
    cache.dropCaches();
    cache.purgeAddresses('explicit');
    k.vmalloc.vmUnmapAliases();
    k.kpt.flushPending();
    k.slab.kmemCacheShrinkAll(k.id);
  }

  stats(): Record<string, number> {
    const s = this.#cache?.stats();
    const out: Record<string, number> = { ...this.#tasks.stats() };
    if (!s) return out;
    return {
      ...out,
      blocksRead: this.#blocks,
      dirPasses: this.#passes,
      mounts: this.#mounts,
      pagesRead: this.#pagesRead,
      dataErrors: s.dataErrors + this.#errors,
      xfsVmaps: s.vmaps,
      xfsVunmapsDirect: s.vunmapsDirect,
      xfsVunmapsPurged: s.vunmapsPurged,
      aListPeak: s.aListPeak,
      xfsLazyPeakPages: s.aListPeak * (this.o.dirBlockBytes / PAGE_SIZE),
      purgesThreshold: s.purges.threshold,
      purgesXfsbufd: s.purges.xfsbufd,
      purgesShrinker: s.purges.shrinker,
      shrinkerCalls: s.shrinkerCalls,
      shrinkSlabs: this.#shrinkSlabs,
      xfsbufdWakeups: s.xfsbufdWakeups,
      bufferEvictions: s.evictions,
      freePagesMin: this.#freePagesMin === Number.MAX_SAFE_INTEGER ? 0 : this.#freePagesMin,
      pagesLow: this.#pagesLow,
      dirBlocks: this.#image?.nblocks ?? 0,
      ...(this.#log ? this.#logStats() : {}),
    };
  }

  #logStats(): Record<string, number> {
    const l = this.#log!.stats();
    return {
      logDirtyMounts: l.dirtyMounts,
      logCleanMounts: l.cleanMounts,
      logShutdowns: l.shutdowns,
      logRecordsReplayed: l.recordsReplayed,
      logRecoveryVmaps: l.recoveryVmaps,
    };
  }
}
