import type { Strategy } from '../../../src/abi/kernel.js';
import type { Kernel } from '../../kernel/kernel.js';
import { jiffies } from '../../kernel/clock.js';
import { DirectoryImage } from './backing.js';
import { TN, traceNowUs } from '../../../src/abi/trace.js';
import { type XfsBufStrategy, type XfsDeps, XfsBufCache } from './xfs_buf.js';

export interface XfsMountOptions {
  strategy: XfsBufStrategy;
  seed: number;
  files: number;
  dirBlockBytes: number;
  /** Unheld buffers cached (the rest is freed as the scan goes). */
  maxBuffers?: number;
  /** Directory geometry (DirectoryImageOptions): bytes per entry and a fixed name length. */
  entryBytes?: number;
  nameLen?: number;
  /** a_list entries above which a vmap purges first (default 64). */
  purgeThreshold?: number;
  /** xfsbufd period in ticks = centisecs (fs.xfs.xfsbufd_centisecs, 50..3000, default 100). */
  xfsbufdIntervalTicks?: number;
}

/**
 * The mount as the XFS workloads take it from the command line (xfs-dirscan, log-recovery,
 * mixed, pat-alias): the CLI's names, before mountOptionsOf turns them into XfsMountOptions.
 */
export interface XfsWorkloadMount {
  strategy: Strategy;
  seed: number;
  files: number;
  dirBlockBytes: number;
  /** Directory geometry: bytes per entry, fixed name length (DirectoryImageOptions). */
  entryBytes?: number;
  nameLen?: number;
  /** a_list length above which a vmap purges first (2.6.23: 64). */
  purgeThreshold?: number;
  /** xfsbufd period, centisecs = ticks (fs.xfs.xfsbufd_centisecs). */
  xfsbufdPeriod?: number;
  /** Every N of vCPU 0's steps, shrink_slab as kswapd would run it (0: never). */
  shrinkEvery?: number;
}

/** The XfsMountOptions of a workload's mount options (only the options that were given). */
export function mountOptionsOf(o: XfsWorkloadMount, maxBuffers?: number): XfsMountOptions {
  return {
    strategy: o.strategy,
    seed: o.seed,
    files: o.files,
    dirBlockBytes: o.dirBlockBytes,
    ...(maxBuffers !== undefined ? { maxBuffers } : {}),
    ...(o.entryBytes !== undefined ? { entryBytes: o.entryBytes } : {}),
    ...(o.nameLen !== undefined ? { nameLen: o.nameLen } : {}),
    ...(o.purgeThreshold !== undefined ? { purgeThreshold: o.purgeThreshold } : {}),
    ...(o.xfsbufdPeriod !== undefined ? { xfsbufdIntervalTicks: o.xfsbufdPeriod } : {}),
  };
}

export function xfsDeps(k: Kernel): XfsDeps {
  const kpt = k.kpt;
  const vm = k.vmalloc;
  const tr = k.trace;
  const traced = <T extends unknown[]>(name: number, fn: (...a: T) => number, pages: (...a: T) => number) =>
    tr === null
      ? fn
      : (...a: T): number => {
          const t0 = traceNowUs();
          const r = fn(...a);
          tr.complete(name, t0, traceNowUs() - t0, pages(...a));
          return r;
        };
  return {
    cpu: k.id,
    allocPage: (gfp) => k.pa.allocPages(gfp, 0, k.id),
    freePage: (pfn) => k.pa.freePages(pfn, 0, k.id),
    getPage: (pfn) => k.pa.getPage(pfn),
    putPage: (pfn) => k.pa.putPage(pfn, k.id),
    kmalloc: (size, gfp) => k.slab.kmalloc(size, gfp, k.id),
    kfree: (addr) => k.slab.kfree(addr, k.id),
    vmap: traced(
      TN.vmap,
      (pfns: Int32Array, count: number) => {
        const va = vm.vmap(pfns, count);
        kpt.flushPending();
        return va;
      },
      (_p, count) => count,
    ),
    vunmap: traced(
      TN.vunmap,
      (va: number) => {
        vm.vunmap(va);
        kpt.flushPending();
        return 0;
      },
      () => 0,
    ),
    vmapPages: traced(
      TN.vmap,
      (pfns: Int32Array, count: number) => {
        const va = vm.vmapPages(pfns, count);
        kpt.flushPending();
        return va;
      },
      (_p, count) => count,
    ),
    vunmapPages: traced(
      TN.vunmap,
      (va: number) => {
        vm.vunmapPages(va);
        kpt.flushPending();
        return 0;
      },
      () => 0,
    ),
    vmUnmapAliases: () => vm.vmUnmapAliases(),
    pageAddress: (pfn) => k.lowmemVa(pfn),
    writeBytes: (va, src, off, len) => k.cpu.mmu.writeBytes(va, src, off, len),
    readBytes: (va, dst, off, len) => k.cpu.mmu.readBytes(va, dst, off, len),
    now: () => jiffies(k.state.w),
    registerShrinker: (fn) => k.pa.registerShrinker({ name: 'xfs_buf', shrink: (nr) => fn(nr) }),
    report: (line) => k.printk(line),
  };
}

/** Mount: the buffer cache over the directory image, with the stray-alias probe wired in. */
export function xfsMount(k: Kernel, o: XfsMountOptions): { cache: XfsBufCache; image: DirectoryImage } {
  const image = new DirectoryImage({
    seed: o.seed,
    files: o.files,
    dirBlockSize: o.dirBlockBytes,
    ...(o.entryBytes !== undefined ? { entryBytes: o.entryBytes } : {}),
    ...(o.nameLen !== undefined ? { nameLen: o.nameLen } : {}),
  });
  const cache = new XfsBufCache(xfsDeps(k), {
    strategy: o.strategy,
    image,
    maxBuffers: o.maxBuffers ?? 32,
    vmallocStats: () => k.vmalloc.stats(),
    ...(o.purgeThreshold !== undefined ? { purgeThreshold: o.purgeThreshold } : {}),
    ...(o.xfsbufdIntervalTicks !== undefined ? { xfsbufdIntervalTicks: o.xfsbufdIntervalTicks } : {}),
  });
  k.addAliasProbe((pfn) => {
    const a = cache.strayAliasesOf(pfn);
    return a.length === 0
      ? null
      : `XFS a_list entry ${a[0]!.areaVa.toString(16)} (block ${a[0]!.bn}) still maps it writable at ${a[0]!.va.toString(16)}`;
  });
  return { cache, image };
}

/** Reading unit for the scan: XFS_DIR2 getdents works block by block. */
export function scanBlocks(
  cache: XfsBufCache,
  image: DirectoryImage,
  from: number,
  n: number,
): { next: number; errors: number; wrapped: boolean } {
  let errors = 0;
  let b = from;
  let wrapped = false;
  for (let i = 0; i < n; i++) {
    const bp = cache.xfsBufRead(b);
    if (bp < 0) errors++;
    else cache.xfsBufRelse(bp);
    if (++b >= image.nblocks) {
      b = 0;
      wrapped = true;
      break;
    }
  }
  return { next: b, errors, wrapped };
}
