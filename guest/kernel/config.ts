/*
 * The guest kernel's configuration: the switches the benchmarks and regression tests
 * turn (which unmap strategy, kmap_flush_unused before pinning, HIGHPTE) and the sizes.
 * The configuration itself is plain data (src/abi/kernel.ts): it travels to every vCPU
 * worker in workerData. What the kernel derives from it lives here.
 */
import type { KernelConfig, Strategy } from '../../src/abi/kernel.js';
import type { VunmapStrategy } from '../mm/vmalloc.js';

/**
 * The vmap layer (guest/mm/vmalloc.ts strategy) each kernel strategy runs on: 2.6.23's
 * vunmap cleared the PTEs and flushed at once ('eager'); Nick Piggin's 2.6.28 layer is the
 * lazy one. Under 'lazy', 'eager' and 'vmap-pages' the stray aliases are XFS's own (the
 * vmalloc layer sees live areas); under 'unmap-aliases' they are the vmalloc layer's lazy
 * areas, which vm_unmap_aliases removes.
 */
export const VMALLOC_STRATEGY_FOR: Readonly<Record<Strategy, VunmapStrategy>> = {
  lazy: 'eager',
  eager: 'eager',
  'vmap-pages': 'eager',
  'unmap-aliases': 'lazy',
};

/**
 * Does the Xen pin path call vm_unmap_aliases() first? That is Nick Piggin's 2.6.28 fix
 * as Jeremy Fitzhardinge wired it into xen_pgd_pin in October 2008. With
 * aliasesBeforePin false, unmap-aliases is 2.6.28 before that call: the generic lazy
 * layer leaves the same stray aliases XFS's a_list did.
 */
export function unmapAliasesBeforePin(cfg: KernelConfig): boolean {
  return cfg.strategy === 'unmap-aliases' && cfg.aliasesBeforePin !== false;
}
