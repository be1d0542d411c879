/*
 * xfs-dirscan: `find` over a large directory, again and again with the caches dropped
 * between passes, on vCPU 0 (which owns the mount), while every vCPU -- vCPU 0 too --
 * forks, execs and exits tasks. XFS frees buffer pages to vCPU 0's hot list; the next
 * page tables made on vCPU 0 are those pages; under the 2007 code their lazy vmap alias
 * is still there when Xen is asked to pin them.
 */
import type { Rng } from '../lib/random.js';
import type { Kernel } from '../kernel/kernel.js';
import type { Strategy } from '../../src/abi/kernel.js';
import type { DirectoryImage } from '../fs/xfs/backing.js';
import { scanBlocks, xfsMount } from '../fs/xfs/mount.js';
import type { XfsBufCache } from '../fs/xfs/xfs_buf.js';
import { Xlog } from '../fs/xfs/xfs_log.js';
import type { Workload } from './driver.js';
import { ForkStorm } from './fork_storm.js';
import { readAndDropPages } from '../mm/filemap.js';
import { PAGE_SIZE } from '../../src/abi/xen.js';

export interface XfsWorkloadOptions {
  strategy: Strategy;
  seed: number;
  files: number;
  dirBlockBytes: number;
  /** Blocks read per scan step. */
  blocksPerStep?: number;
  /** What vCPU 0 mixes in: 'scan' (xfs-dirscan), 'log' (log-recovery), 'mixed'. */
  mode: 'scan' | 'log' | 'mixed';
}

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

  constructor(o: XfsWorkloadOptions) {
    this.o = o;
  }

  init(k: Kernel): void {
    if (k.id !== 0) return;
    const { cache, image } = xfsMount(k, {
      strategy: this.o.strategy,
      seed: this.o.seed,
      files: this.o.files,
      dirBlockBytes: this.o.dirBlockBytes,
    });
    this.#cache = cache;
    this.#image = image;
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
    const r = rng.nextInt(10);
    if (this.o.mode === 'log' && r < 2) {
      // umount + mount: the iclogs go on the a_list, log recovery vmaps again.
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
        // echo 3 > /proc/sys/vm/drop_caches between passes.
        this.#passes++;
        cache.dropCaches();
      }
    } else {
      this.#tasks.step(k, rng);
    }
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
    };
  }
}
