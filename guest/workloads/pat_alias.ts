/*
 * pat-alias: Andi Kleen's case (seed thread, 2007-10-15 09:36). On vCPU 0 a directory scan
 * frees XFS buffers while a graphics driver (AGP's agp_generic_alloc_page and
 * map_page_into_agp: alloc_page, then set_memory_uc) takes pages for its aperture and turns
 * them uncached; it gives them back later (set_memory_wb, __free_page). Under the 2007 code
 * the driver's fresh page is often one XFS just freed, still mapped write-back by its lazy
 * vmap: PAT's tracker (guest/arch/x86/pat.ts) refuses the reservation with "conflicting
 * memory types". Under the fixes it never does: eager leaves no alias, vmap-pages keeps
 * aliased pages from being allocated, and unmap-aliases' change_page_attr calls
 * vm_unmap_aliases() first. The other vCPUs stay idle: the conflicts are the subject.
 */
import type { Rng } from '../lib/random.js';
import type { Kernel } from '../kernel/kernel.js';
import { C_MEMTYPE_CONFLICTS } from '../../src/abi/kernel.js';
import { PAGE_SIZE } from '../../src/abi/xen.js';
import { MemtypeTracker, type MemtypeReport } from '../arch/x86/pat.js';
import type { DirectoryImage } from '../fs/xfs/backing.js';
import { mountOptionsOf, scanBlocks, type XfsWorkloadMount, xfsMount } from '../fs/xfs/mount.js';
import type { XfsBufCache } from '../fs/xfs/xfs_buf.js';
import { GFP_KERNEL } from '../mm/page_alloc.js';
import type { Workload } from './driver.js';

/** pat-alias mounts XFS as the other XFS workloads do, from the same options. */
export type PatAliasOptions = XfsWorkloadMount;

/** Pages the driver keeps uncached at most (an AGP aperture's worth, scaled down). */
export const PAT_ALIAS_POOL = 16;
/** The driver runs in the X server's ioctl: its comm, and the pid this model gives it. */
const DRIVER_COMM = 'Xorg';
const DRIVER_PID = 2007;

export class PatAlias implements Workload {
  readonly o: PatAliasOptions;
  #cache: XfsBufCache | null = null;
  #image: DirectoryImage | null = null;
  #pat: MemtypeTracker | null = null;
  readonly #pool: number[] = [];
  #cursor = 0;
  #blocks = 0;
  #errors = 0;
  #agpPages = 0;
  #ucRefused = 0;
  #wbBack = 0;
  #steps = 0;

  constructor(o: PatAliasOptions) {
    this.o = o;
  }

  init(k: Kernel): void {
    if (k.id !== 0) return;
    const o = this.o;
    const { cache, image } = xfsMount(k, mountOptionsOf(o));
    this.#cache = cache;
    this.#image = image;
    const pageOffset = k.layout.pageOffset;
    this.#pat = new MemtypeTracker({
      aliasesOf: (pfn) => k.strayAliasesOf(pfn),
      // change_page_attr's vm_unmap_aliases(): in the kernels that have the generic lazy
      // layer and the call (unmap-aliases); 2.6.23 ('lazy' and the others) has neither.
      vmUnmapAliases:
        o.strategy === 'unmap-aliases'
          ? () => {
              k.vmalloc.vmUnmapAliases();
              k.kpt.flushPending();
            }
          : null,
      pageAddress: (pfn) => k.lowmemVa(pfn),
      pfnOf: (va) => {
        const pfn = (va - pageOffset) / PAGE_SIZE;
        return Number.isInteger(pfn) && pfn >= 0 && pfn < k.pa.nrPages ? pfn : -1;
      },
      report: (kind, lines) => k.report(kind, lines),
      onConflict: () => k.state.count(C_MEMTYPE_CONFLICTS),
    });
  }

  step(k: Kernel, rng: Rng): void {
    const cache = this.#cache;
    if (cache === null) return;
    cache.xfsBufTimer();
    const every = this.o.shrinkEvery ?? 0;
    if (every > 0 && ++this.#steps % every === 0) k.pa.shrinkSlab(GFP_KERNEL, k.id);
    const r = rng.nextInt(10);
    if (r < 5) {
      const res = scanBlocks(cache, this.#image!, this.#cursor, 4);
      this.#blocks += res.wrapped ? this.#image!.nblocks - this.#cursor : res.next - this.#cursor;
      this.#errors += res.errors;
      this.#cursor = res.next;
      if (res.wrapped) cache.dropCaches();
    } else if (r < 8) {
      if (this.#pool.length < PAT_ALIAS_POOL) this.#agpAllocPage(k);
    } else if (this.#pool.length > 0) {
      this.#agpDestroyPage(k, this.#pool.shift()!);
    }
  }

  /** agp_generic_alloc_page + map_page_into_agp: a page, made uncached for the aperture. */
  #agpAllocPage(k: Kernel): void {
    const pfn = k.pa.allocPages(GFP_KERNEL, 0, k.id);
    if (pfn < 0) return;
    this.#agpPages++;
    const saved = k.comm;
    k.comm = DRIVER_COMM;
    const rc = this.#pat!.setMemoryUc(k.lowmemVa(pfn), 1, DRIVER_COMM, DRIVER_PID);
    k.comm = saved;
    if (rc < 0) {
      // map_page_into_agp failed: the driver gives the page back.
      this.#ucRefused++;
      k.pa.freePages(pfn, 0, k.id);
      return;
    }
    this.#pool.push(pfn);
  }

  /** unmap_page_from_agp + agp_generic_destroy_page: write-back again, then freed. */
  #agpDestroyPage(k: Kernel, pfn: number): void {
    if (this.#pat!.setMemoryWb(k.lowmemVa(pfn), 1, DRIVER_COMM, DRIVER_PID) === 0) this.#wbBack++;
    k.pa.freePages(pfn, 0, k.id);
  }

  fini(k: Kernel): void {
    const cache = this.#cache;
    if (cache === null) return;
    for (const pfn of this.#pool.splice(0)) this.#agpDestroyPage(k, pfn);
    cache.dropCaches();
    cache.purgeAddresses('explicit');
    k.vmalloc.vmUnmapAliases();
    k.kpt.flushPending();
    k.slab.kmemCacheShrinkAll(k.id);
  }

  /** The conflicts as data, for the guest reports channel (kind 'memtype'). */
  reports(): MemtypeReport[] {
    return this.#pat?.reports.slice() ?? [];
  }

  stats(): Record<string, number> {
    const p = this.#pat?.stats();
    const s = this.#cache?.stats();
    if (!p || !s) return {};
    return {
      memtypeConflicts: p.conflicts,
      agpPages: this.#agpPages,
      setMemoryUcRefused: this.#ucRefused,
      setMemoryWb: this.#wbBack,
      memtypeReserved: p.reserved,
      cpaAliasFlushes: p.cpaAliasFlushes,
      blocksRead: this.#blocks,
      dataErrors: s.dataErrors + this.#errors,
      xfsVmaps: s.vmaps,
      aListPeak: s.aListPeak,
    };
  }
}
