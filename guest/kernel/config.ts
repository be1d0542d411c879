/*
 * The guest kernel's configuration: the switches the benchmarks and regression tests
 * turn (which unmap strategy, kmap_flush_unused before pinning, HIGHPTE) and the sizes.
 * The configuration itself is plain data (src/abi/kernel.ts): it travels to every vCPU
 * worker in workerData. What the kernel derives from it lives here.
 */
import type { KernelConfig } from '../../src/abi/kernel.js';

/**
 * Does the Xen pin path call vm_unmap_aliases() first? That is Nick Piggin's 2.6.28 fix
 * as Jeremy Fitzhardinge wired it into xen_pgd_pin in October 2008. With
 * aliasesBeforePin false, unmap-aliases is 2.6.28 before that call: the generic lazy
 * layer leaves the same stray aliases XFS's a_list did.
 */
export function unmapAliasesBeforePin(cfg: KernelConfig): boolean {
  return cfg.strategy === 'unmap-aliases' && cfg.aliasesBeforePin !== false;
}
