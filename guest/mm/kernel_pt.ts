/*
 * The guest kernel's view of its own kernel page tables, as mm/vmalloc and mm/highmem use
 * them. Those two only ever install or clear single L1 entries of kernel addresses and
 * flush TLBs; everything else about page tables (the walk, pinning, the hypercalls) is
 * behind this interface. arch/xen implements it over the vCPU's MMU and the hypervisor
 * (set_pte as a queued mmu_update, flushes as mmuext ops); guest/mm/kernel_pt_ref.ts is a
 * plain in-memory implementation for tests.
 *
 * Contracts every implementation keeps:
 *  - setPte may queue the update (lazy MMU mode, a multicall batch). Queued updates reach
 *    the page tables, in order, no later than the next flushPending(). Callers call
 *    flushPending() before any TLB flush that must see the new entries, and before they
 *    let anybody else rely on the change (e.g. before a page is given back).
 *  - flushTlbKernelRange(start, end) invalidates [start, end) on EVERY vCPU of the
 *    domain. In the real implementation it is a cross-vCPU shootdown whose cost grows
 *    with the number of vCPUs; callers count and batch them.
 *  - flushTlbLocal(va) invalidates one page on the calling vCPU only (invlpg).
 *  - Addresses are page-aligned kernel virtual addresses (plain non-negative numbers, see
 *    src/layout.ts); end is exclusive.
 */
import { _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW } from '../../src/abi/xen.js';

export interface KernelPageTables {
  /** Install (mfn >= 0) or clear (mfn === -1) the kernel L1 entry for va. May be queued. */
  setPte(va: number, mfnOrMinus1: number, flags: number): void;
  /** Issue every queued PTE update now (a multicall batch in the Xen implementation). */
  flushPending(): void;
  /** Invalidate [start, end) in the TLB of every vCPU: a shootdown, costly. */
  flushTlbKernelRange(start: number, end: number): void;
  /** Invalidate one page in this vCPU's TLB only (invlpg; kunmap_atomic). */
  flushTlbLocal(va: number): void;
  /** The machine frame behind a guest pseudo-physical frame (the P2M). */
  pfnToMfn(pfn: number): number;
}

/**
 * Page references (get_page / put_page on struct page). The page allocator implements it;
 * putPage dropping the last reference frees the page.
 */
export interface PageRefs {
  getPage(pfn: number): void;
  putPage(pfn: number): void;
}

/**
 * Order-0 page allocation for vmalloc (alloc_page(GFP_KERNEL | __GFP_HIGHMEM) and
 * __free_page). allocPage returns a pfn, or a negative errno when no page is free.
 */
export interface PageAllocator {
  allocPage(): number;
  freePage(pfn: number): void;
}

/** i386 PAGE_KERNEL without _PAGE_GLOBAL (a Xen PV guest's kernel mappings): P|RW|A|D. */
export const PAGE_KERNEL = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY;
/** PAGE_KERNEL_RO: P|A. */
export const PAGE_KERNEL_RO = _PAGE_PRESENT | _PAGE_ACCESSED;
