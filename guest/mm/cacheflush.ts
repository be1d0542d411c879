/*
 * flush_dcache_page, as an aliasing data cache needs it (arch/arm/mm/flush.c, 2.6.22).
 *
 * On x86 ('pipt', the default) the caches are physically indexed and flush_dcache_page
 * does nothing. With an aliasing (VIPT/VIVT) cache -- ARM, `--dcache aliasing` -- the
 * kernel must write back its own alias of the page and find the user aliases through
 * page_mapping(page): an address_space whose i_mmap tree is empty has its flush deferred
 * (PG_dcache_dirty), one with user mappings has them flushed too.
 *
 * page_mapping() returns page->mapping as a struct address_space *. For a slab page SLUB
 * keeps its cache there; without Hugh Dickins' fix (slubFix off) that value goes on as an
 * address_space, and mapping_mapped() loads mapping->i_mmap through the vCPU's MMU. The
 * cache's handle is a small number, so the load faults in the first page of the address
 * space: the oops of June 2007 (slub-kmap-atomic-oops.txt). With the fix, page_mapping is
 * NULL for PageSlab pages and only the kernel alias is flushed.
 *
 * The guest's page-cache address_spaces are handles, not structures in guest memory: no
 * workload flushes a page-cache page, and the handle of one would fault the same way.
 */
import { PG_dcache_dirty } from './page.js';
import type { Kernel } from '../kernel/kernel.js';
import { doKernelFault } from '../kernel/fault.js';

/* struct address_space on i386, 2.6.22: host, page_tree (3 words), tree_lock, i_mmap_writable, then i_mmap. */
export const ADDRESS_SPACE_I_MMAP = 0x18;
/* i_mmap_nonlinear, after i_mmap (prio_tree_root: node, index_bits, raw). */
export const ADDRESS_SPACE_I_MMAP_NONLINEAR = 0x20;

/** What flush_dcache_page did: nothing (x86), the kernel alias only, deferred, the user aliases too, or oops. */
export type FlushOutcome = 'none' | 'kernel' | 'deferred' | 'aliases' | 'oops';

/**
 * mapping_mapped: the i_mmap tree or the nonlinear list is not empty. Returns 1, 0, or -1
 * when a load faulted (the oops is reported here, as the fault handler would).
 */
function mappingMapped(k: Kernel, mapping: number): number {
  const mmu = k.cpu.mmu;
  const node = mmu.load32(mapping + ADDRESS_SPACE_I_MMAP);
  if (node < 0) {
    doKernelFault(k);
    return -1;
  }
  const nonlinear = mmu.load32(mapping + ADDRESS_SPACE_I_MMAP_NONLINEAR);
  if (nonlinear < 0) {
    doKernelFault(k);
    return -1;
  }
  return node !== 0 || nonlinear !== mapping + ADDRESS_SPACE_I_MMAP_NONLINEAR ? 1 : 0;
}

/** flush_dcache_page(page). */
export function flushDcachePage(k: Kernel, pfn: number): FlushOutcome {
  if ((k.cfg.dcache ?? 'pipt') !== 'aliasing') return 'none';
  const mm = k.pa.memMap;
  const mapping = mm.pageMapping(pfn);
  if (mapping !== 0) {
    const mapped = mappingMapped(k, mapping);
    if (mapped < 0) return 'oops';
    if (mapped === 0) {
      mm.setPageFlag(pfn, PG_dcache_dirty);
      return 'deferred';
    }
  }
  return __flushDcachePage(k, mapping, pfn);
}

/** __flush_dcache_page: the kernel alias; with a mapping, its user aliases as well. */
function __flushDcachePage(_k: Kernel, mapping: number, _pfn: number): FlushOutcome {
  // A software cache has nothing to write back: what is modelled is which aliases it must find.
  return mapping === 0 ? 'kernel' : 'aliases';
}
