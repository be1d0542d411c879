/*
 * The guest kernel's configuration: the switches the benchmarks and regression tests
 * turn (which unmap strategy, kmap_flush_unused before pinning, HIGHPTE) and the sizes.
 * Plain data: it travels to every vCPU worker in workerData.
 */

/** How stray vmap aliases are dealt with (the subject of the benchmarks). */
export type Strategy = 'lazy' | 'eager' | 'vmap-pages' | 'unmap-aliases';
export const STRATEGIES: readonly Strategy[] = ['lazy', 'eager', 'vmap-pages', 'unmap-aliases'];

export interface KernelConfig {
  strategy: Strategy;
  /** Call kmap_flush_unused() before pinning (Linux 2.6.24's HIGHPTE fix). */
  kmapFlush: boolean;
  /** pae only: user PTE pages come from highmem (CONFIG_HIGHPTE). */
  highpte: boolean;
  /** Bytes of vmalloc space (the kernel page tables for it are made at boot). */
  vmallocBytes: number;
  /** Seed for everything random in the guest. */
  seed: number;
  /** Number of vCPUs (num_online_cpus). */
  vcpus: number;
  /** Record hypercalls, flushes, vmaps and refused pins for --trace. */
  trace?: boolean;
}

/**
 * Does the Xen pin path call vm_unmap_aliases() first? That is Nick Piggin's 2.6.28 fix
 * as Jeremy Fitzhardinge wired it into xen_pgd_pin in October 2008.
 */
export function unmapAliasesBeforePin(cfg: KernelConfig): boolean {
  return cfg.strategy === 'unmap-aliases';
}
