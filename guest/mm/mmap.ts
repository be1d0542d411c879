/*
 * A user mapping of a driver's pages (mm/mmap.c, mm/memory.c): a vma whose pages come from
 * the driver's nopage handler, faulted in one at a time by do_no_page, and its munmap --
 * sys_munmap -> do_munmap -> unmap_region -> unmap_vmas -> unmap_page_range ->
 * zap_pte_range, which clears each pte, passes the pte's dirty and young bits on to the
 * page (set_page_dirty, mark_page_accessed), drops the rmap count and then the pte's
 * reference with put_page (free_page_and_swap_cache). That last put is where a 0-order
 * page of a live high-order block that is not compound reaches count 0 and goes to
 * free_hot_cold_page: the ALSA bug of November 2005.
 *
 * A task here has one user PTE page; the vma lives at PTE slots [slot0, slot0 + pages).
 * Every pte change goes through setEntry (a plain store while the mm is unpinned, an
 * mmu_update once it is pinned), and every read of a pte goes through the vCPU's MMU.
 */
import { _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER, PAGE_SIZE } from '../../src/abi/xen.js';
import { pteHi, pteLo, pteMfn } from '../../src/abi/pte.js';
import type { Kernel } from '../kernel/kernel.js';
import { T_PTE } from '../kernel/state.js';
import { KM_PTE0 } from './highmem.js';
import { PAGE_KERNEL_RO } from './kernel_pt.js';
import { USER_BASE, pteAlloc, setEntry } from './memory.js';

/** vm_operations_struct.nopage: the page to map at `index` with a reference taken, or -1 (SIGBUS). */
export type NopageHandler = (index: number) => number;

/** A vm_area_struct of a device mapping (VM_RESERVED, as ALSA's were). */
export interface DeviceVma {
  task: number;
  /** First PTE slot of the task's user PTE page. */
  slot0: number;
  pages: number;
  nopage: NopageHandler;
}

/** The user virtual address of page `i` of a vma. */
export function vmaAddress(vma: DeviceVma, i: number): number {
  return USER_BASE + (vma.slot0 + i) * PAGE_SIZE;
}

/** Read entry i of page-table page `pfn` through the MMU (kmap_atomic for a highmem PTE page). */
export function readEntry(k: Kernel, pfn: number, i: number): [lo: number, hi: number] {
  const mmu = k.cpu.mmu;
  if (!k.isHighmem(pfn)) {
    const lo = mmu.load64(k.lowmemVa(pfn) + i * 8);
    return lo < 0 ? [0, 0] : [lo, mmu.hi];
  }
  // Read-only, as xen_kmap_atomic_pte maps a pte page: Xen refuses a writable mapping of a pinned one.
  const va = k.highmem!.kmapAtomic(pfn, KM_PTE0, k.id, PAGE_KERNEL_RO);
  const lo = mmu.load64(va + i * 8);
  const out: [number, number] = lo < 0 ? [0, 0] : [lo, mmu.hi];
  k.highmem!.kunmapAtomic(va, KM_PTE0, k.id);
  return out;
}

/** do_mmap of a device: the vma only; pages come on first touch. */
export function doMmap(task: number, slot0: number, pages: number, nopage: NopageHandler): DeviceVma {
  return { task, slot0, pages, nopage };
}

/**
 * do_no_page: ask the driver's nopage for the page (it takes the reference the pte will
 * hold), install the pte -- dirty for a write fault, young -- and page_add_file_rmap.
 * Returns false for SIGBUS / OOM.
 */
export function doNoPage(k: Kernel, vma: DeviceVma, i: number, write: boolean): boolean {
  const t = vma.task;
  let pte = k.state.w[k.state.t(t, T_PTE)]!;
  if (pte < 0) pte = pteAlloc(k, t);
  if (pte < 0) return false;
  const pfn = vma.nopage(i);
  if (pfn < 0) return false;
  const mfn = k.kpt.pfnToMfn(pfn);
  const flags = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | (write ? _PAGE_DIRTY : 0);
  if (setEntry(k, t, pte, vma.slot0 + i, pteLo(mfn, flags), pteHi(mfn)) < 0) {
    k.pa.putPage(pfn, k.id);
    return false;
  }
  Atomics.add(k.pa.memMap.mapcount, pfn, 1); // page_add_file_rmap
  return true;
}

/** free_page_and_swap_cache: no swap cache here, so the pte's reference goes with put_page. */
function freePageAndSwapCache(k: Kernel, pfn: number): void {
  k.pa.putPage(pfn, k.id);
}

/** zap_pte_range: clear the vma's ptes, hand dirty/young to the page, drop rmap and reference. */
function zapPteRange(k: Kernel, vma: DeviceVma): number {
  const t = vma.task;
  const pte = k.state.w[k.state.t(t, T_PTE)]!;
  if (pte < 0) return 0;
  const mm = k.pa.memMap;
  let zapped = 0;
  for (let i = 0; i < vma.pages; i++) {
    const [lo, hi] = readEntry(k, pte, vma.slot0 + i);
    if ((lo & _PAGE_PRESENT) === 0) continue;
    setEntry(k, t, pte, vma.slot0 + i, 0, 0);
    k.kpt.flushTlbLocal(vmaAddress(vma, i));
    const pfn = k.mfnToPfn(pteMfn(lo, hi));
    if (pfn < 0) continue;
    if (lo & _PAGE_DIRTY) mm.SetPageDirty(pfn); // set_page_dirty
    if (lo & _PAGE_ACCESSED) mm.SetPageReferenced(pfn); // mark_page_accessed
    Atomics.sub(mm.mapcount, pfn, 1); // page_remove_rmap
    freePageAndSwapCache(k, pfn);
    zapped++;
  }
  return zapped;
}

function unmapPageRange(k: Kernel, vma: DeviceVma): number {
  return zapPteRange(k, vma);
}

function unmapVmas(k: Kernel, vma: DeviceVma): number {
  return unmapPageRange(k, vma);
}

function unmapRegion(k: Kernel, vma: DeviceVma): number {
  return unmapVmas(k, vma);
}

function doMunmap(k: Kernel, vma: DeviceVma): number {
  return unmapRegion(k, vma);
}

/** sys_munmap: the whole vma goes. Returns the ptes zapped. */
export function sysMunmap(k: Kernel, vma: DeviceVma): number {
  return doMunmap(k, vma);
}
