/*
 * Process address spaces (mm/memory.c, kernel/fork.c, mm/mmap.c in one small file):
 * pgd_alloc with its copy of the kernel part, anonymous faults, fork copying a parent's
 * pages, running a task (switching the base pointer and touching its pages through the
 * MMU in user mode), and exit (unpin first, as xen_exit_mmap does, then zap and free).
 *
 * A task here has one anonymous region of up to MAX_USER_PAGES pages at USER_BASE, so
 * one user PTE page. Page-table pages of an unpinned mm are written with plain stores;
 * once pinned, every change is a hypercall, as a PV guest must.
 */
import {
  _PAGE_ACCESSED,
  _PAGE_DIRTY,
  _PAGE_PRESENT,
  _PAGE_RW,
  _PAGE_USER,
  MMUEXT_NEW_BASEPTR,
  rcName,
  FRAME_WORDS,
  PAGE_SIZE,
} from '../../src/abi/xen.js';
import { PAE_XEN_L2_FIRST, XEN_L4_FIRST, XEN_L4_LAST, vaIndex } from '../../src/abi/layout.js';
import { entryMaddrHi, entryMaddrLo, pteHi, pteLo, pteMfn } from '../../src/abi/pte.js';
import { mmuUpdate, mmuextOne } from '../arch/xen/hypercall.js';
import { xenAllocPtpage, xenPgdPin, xenPgdUnpin, xenReleasePtpage } from '../arch/xen/pgtable.js';
import type { Kernel } from '../kernel/kernel.js';
import {
  MAX_USER_PAGES,
  T_NPAGES,
  T_PAGES,
  T_PGD,
  T_PMD,
  T_PTE,
  T_STATE,
  TASK_NEW,
  TASK_PINNED,
} from '../kernel/state.js';
import {
  C_CTX_SWITCHES,
  C_DATA_ERRORS,
  C_EXITS,
  C_FAULTS,
  C_FORKS,
  C_PT_ALIASED,
  C_PT_PAGES,
  C_TASKS_KILLED,
  C_UPDATE_FAILURES,
} from '../../src/abi/kernel.js';
import { KM_PTE0 } from './highmem.js';
import { outOfMemory, takeOomVictim } from './oom_kill.js';
import { mappingOfAnonVma } from './page.js';
import { GFP_HIGHUSER_MOVABLE, GFP_KERNEL, __GFP_HIGHMEM, __GFP_ZERO } from './page_alloc.js';

export const USER_BASE = 0x10000000;
const P = _PAGE_PRESENT,
  RW = _PAGE_RW,
  US = _PAGE_USER,
  A = _PAGE_ACCESSED,
  D = _PAGE_DIRTY;
const PAGE_TABLE = P | RW | US | A | D;
const page = new Uint8Array(PAGE_SIZE);
const req = new Uint32Array(4);

/** The pfns of a task's page-table pages, pgd first (for pin / unpin). */
export function ptPagesOf(k: Kernel, t: number, out: Int32Array): number {
  const w = k.state.w;
  let n = 0;
  out[n++] = w[k.state.t(t, T_PGD)]!;
  const pmds = k.layout.levels === 3 ? 4 : 2;
  for (let i = 0; i < pmds; i++) out[n++] = w[k.state.t(t, T_PMD + i)]!;
  const pte = w[k.state.t(t, T_PTE)]!;
  if (pte >= 0) out[n++] = pte;
  return n;
}

/** Write one 64-bit entry into page-table page `pfn` of an UNPINNED mm (a plain store). */
function pokeEntry(k: Kernel, pfn: number, i: number, lo: number, hi: number): void {
  if (!k.isHighmem(pfn)) {
    if (k.cpu.mmu.store64(k.lowmemVa(pfn) + i * 8, lo, hi) < 0)
      k.report('bug', [`BUG: fault writing page table ${pfn}`]);
    return;
  }
  const va = k.highmem!.kmapAtomic(pfn, KM_PTE0, k.id);
  if (k.cpu.mmu.store64(va + i * 8, lo, hi) < 0) k.report('bug', [`BUG: fault writing highmem page table ${pfn}`]);
  k.highmem!.kunmapAtomic(va, KM_PTE0, k.id);
}

/** Change an entry of a PINNED mm's page-table page: mmu_update. Returns rc. */
function updateEntry(k: Kernel, pfn: number, i: number, lo: number, hi: number): number {
  const mfn = k.kpt.pfnToMfn(pfn);
  req[0] = entryMaddrLo(mfn, i);
  req[1] = entryMaddrHi(mfn);
  req[2] = lo;
  req[3] = hi;
  const { rc } = mmuUpdate(k.cpu, req, 1);
  if (rc < 0) {
    k.state.count(C_UPDATE_FAILURES);
    k.report('xen', [`mmu_update of pfn ${pfn} slot ${i} failed: ${rc} (${rcName(rc)})`]);
  }
  return rc;
}

/** Set entry i of task t's page-table page pfn: a plain store, or mmu_update once pinned. */
export function setEntry(k: Kernel, t: number, pfn: number, i: number, lo: number, hi: number): number {
  if (k.state.w[k.state.t(t, T_STATE)] === TASK_PINNED) return updateEntry(k, pfn, i, lo, hi);
  pokeEntry(k, pfn, i, lo, hi);
  return 0;
}

function allocPt(k: Kernel, gfp: number): number {
  const pfn = k.pa.allocPages(gfp | __GFP_ZERO, 0, k.id);
  if (pfn < 0) return pfn;
  k.state.count(C_PT_PAGES);
  // The page allocator does not know of stray aliases; count the pages it hands out anyway.
  if (k.strayAliasesOf(pfn).length > 0) k.state.count(C_PT_ALIASED);
  return pfn;
}

/** pgd_alloc: the root and the pmds (pae) or pud+pmd (x86_64), with the kernel part copied. */
export function pgdAlloc(k: Kernel, t: number): boolean {
  const w = k.state.w;
  const pgd = allocPt(k, GFP_KERNEL);
  if (pgd < 0) return false;
  w[k.state.t(t, T_PGD)] = pgd;
  const swapper = k.swapperPgd;
  const m = k.mem32;
  const p2m = k.cpu.info.p2m;
  if (k.layout.levels === 3) {
    // PAE without a shared kernel pmd: four pmds, the last a copy of the kernel's.
    for (let i = 0; i < 4; i++) {
      const pmd = allocPt(k, GFP_KERNEL);
      if (pmd < 0) return false;
      w[k.state.t(t, T_PMD + i)] = pmd;
      pokeEntry(k, pgd, i, pteLo(p2m[pmd]!, P), pteHi(p2m[pmd]!));
    }
    const kl2 = pteMfn(m[swapper * FRAME_WORDS + 6]!, m[swapper * FRAME_WORDS + 7]!);
    const copy = w[k.state.t(t, T_PMD + 3)]!;
    for (let i = 0; i < PAE_XEN_L2_FIRST; i++) {
      const lo = m[kl2 * FRAME_WORDS + 2 * i]!;
      if (lo & P) pokeEntry(k, copy, i, lo, m[kl2 * FRAME_WORDS + 2 * i + 1]!);
    }
  } else {
    const pud = allocPt(k, GFP_KERNEL);
    if (pud < 0) return false;
    // Recorded at once, so freeAll returns it when the pmd cannot be had (out of memory).
    w[k.state.t(t, T_PMD)] = pud;
    const pmd = allocPt(k, GFP_KERNEL);
    if (pmd < 0) return false;
    w[k.state.t(t, T_PMD + 1)] = pmd;
    pokeEntry(k, pgd, 0, pteLo(p2m[pud]!, PAGE_TABLE), pteHi(p2m[pud]!));
    pokeEntry(k, pud, 0, pteLo(p2m[pmd]!, PAGE_TABLE), pteHi(p2m[pmd]!));
    for (let i = 256; i < 512; i++) {
      if (i >= XEN_L4_FIRST && i <= XEN_L4_LAST) continue;
      const lo = m[swapper * FRAME_WORDS + 2 * i]!;
      if (lo & P) pokeEntry(k, pgd, i, lo, m[swapper * FRAME_WORDS + 2 * i + 1]!);
    }
  }
  return true;
}

/** The pmd (L2) page holding the user region's entry, and that entry's index. */
function userPmd(k: Kernel, t: number): [pfn: number, index: number] {
  const w = k.state.w;
  const pmd = k.layout.levels === 3 ? w[k.state.t(t, T_PMD + vaIndex(USER_BASE, 3))]! : w[k.state.t(t, T_PMD + 1)]!;
  return [pmd, vaIndex(USER_BASE, 2)];
}

/** __pte_alloc: the user PTE page (highmem with HIGHPTE), linked into the pmd. */
export function pteAlloc(k: Kernel, t: number): number {
  const w = k.state.w;
  const gfp = GFP_KERNEL | (k.cfg.highpte && k.layout.levels === 3 ? __GFP_HIGHMEM : 0);
  const pte = allocPt(k, gfp);
  if (pte < 0) return -1;
  const pinned = w[k.state.t(t, T_STATE)] === TASK_PINNED;
  if (pinned) xenAllocPtpage(k, pte);
  const [pmd, i] = userPmd(k, t);
  const mfn = k.kpt.pfnToMfn(pte);
  if (setEntry(k, t, pmd, i, pteLo(mfn, PAGE_TABLE), pteHi(mfn)) < 0) {
    // Xen refused the new page table (a stray writable alias of it): give it back.
    if (pinned) xenReleasePtpage(k, pte);
    k.pa.freePages(pte, 0, k.id);
    return -1;
  }
  w[k.state.t(t, T_PTE)] = pte;
  return pte;
}

/** An anonymous fault on user page `i`: a zeroed page, mapped writable. */
export function handleMmFault(k: Kernel, t: number, i: number): boolean {
  const w = k.state.w;
  if (i >= MAX_USER_PAGES || w[k.state.t(t, T_PAGES + i)]! > 0) return false;
  let pte = w[k.state.t(t, T_PTE)]!;
  if (pte < 0) pte = pteAlloc(k, t);
  if (pte < 0) return false;
  const pfn = k.pa.allocPages(GFP_HIGHUSER_MOVABLE | __GFP_ZERO, 0, k.id);
  if (pfn < 0) {
    // VM_FAULT_OOM: the OOM killer marks this task; the caller tears it down.
    outOfMemory(k, t, GFP_HIGHUSER_MOVABLE | __GFP_ZERO, 0);
    return false;
  }
  const mfn = k.kpt.pfnToMfn(pfn);
  if (setEntry(k, t, pte, vaIndex(USER_BASE, 1) + i, pteLo(mfn, P | RW | US | A | D), pteHi(mfn)) < 0) {
    k.pa.freePages(pfn, 0, k.id);
    return false;
  }
  w[k.state.t(t, T_PAGES + i)] = pfn;
  w[k.state.t(t, T_NPAGES)]!++;
  // The reverse map page migration needs (page_add_new_anon_rmap): whose page, which slot.
  if (k.pa.mobility) {
    k.pa.memMap.mapping[pfn] = mappingOfAnonVma(t);
    k.pa.memMap.index[pfn] = i;
  }
  k.state.count(C_FAULTS);
  return true;
}

/** A new task with an empty address space (exec of a fresh image). */
export function taskCreate(k: Kernel, npages: number): number {
  const t = k.state.allocTask(k.id);
  if (t < 0) return -1;
  const w = k.state.w;
  for (let i = 0; i < MAX_USER_PAGES; i++) w[k.state.t(t, T_PAGES + i)] = 0;
  for (let i = 0; i < 4; i++) w[k.state.t(t, T_PMD + i)] = -1;
  if (!pgdAlloc(k, t)) {
    // pgd_alloc found no page: the OOM killer takes the task being built.
    outOfMemory(k, t, GFP_KERNEL | __GFP_ZERO, 0);
    takeOomVictim(k, t);
    freeAll(k, t);
    return -1;
  }
  for (let i = 0; i < npages; i++) {
    if (!handleMmFault(k, t, i)) {
      if (takeOomVictim(k, t)) {
        freeAll(k, t);
        return -1;
      }
      break;
    }
    // Every page starts with its own signature, checked each time the task runs.
    writeUserWord(k, w[k.state.t(t, T_PAGES + i)]!, signature(t, i));
  }
  return t;
}

function signature(t: number, i: number): number {
  return (0x5a000000 | (t << 8) | i) >>> 0;
}

/** Stamp a fresh (zeroed) user page with its signature word. */
function writeUserWord(k: Kernel, pfn: number, value: number): void {
  page.fill(0);
  new DataView(page.buffer).setUint32(0, value, true);
  k.writePage(pfn, page, 0);
}

/** dup_mmap + copy_page_range: a child with a copy of every parent page. */
export function doFork(k: Kernel, parent: number): number {
  const w = k.state.w;
  const child = k.state.allocTask(k.id);
  if (child < 0) return -1;
  for (let i = 0; i < MAX_USER_PAGES; i++) w[k.state.t(child, T_PAGES + i)] = 0;
  for (let i = 0; i < 4; i++) w[k.state.t(child, T_PMD + i)] = -1;
  if (!pgdAlloc(k, child)) {
    // pgd_alloc found no page: the OOM killer takes the task being built.
    outOfMemory(k, child, GFP_KERNEL | __GFP_ZERO, 0);
    takeOomVictim(k, child);
    freeAll(k, child);
    return -1;
  }
  for (let i = 0; i < MAX_USER_PAGES; i++) {
    const src = w[k.state.t(parent, T_PAGES + i)]!;
    if (src <= 0) continue;
    if (!handleMmFault(k, child, i)) {
      if (takeOomVictim(k, child)) {
        freeAll(k, child);
        return -1;
      }
      break;
    }
    k.readPage(src, page, 0);
    // The child's copy says whose it is, so a mix-up would be caught when it runs.
    new DataView(page.buffer).setUint32(0, signature(child, i), true);
    k.writePage(w[k.state.t(child, T_PAGES + i)]!, page, 0);
  }
  k.state.count(C_FORKS);
  return child;
}

/**
 * Run a task: xen_activate_mm pins its page tables if they are not yet (a refusal kills
 * the task), switch the base pointer to it, and touch every page in user mode, checking
 * each page's signature. Returns false if the task could not run (it is then gone).
 */
export function runTask(k: Kernel, t: number, pt: Int32Array): boolean {
  const w = k.state.w;
  const cpu = k.cpu;
  if (w[k.state.t(t, T_STATE)] === TASK_NEW) {
    const n = ptPagesOf(k, t, pt);
    if (!xenPgdPin(k, pt, n)) {
      k.report('xen', [`xen_pgd_pin: pgd ${w[k.state.t(t, T_PGD)]} refused: killing task ${t}`]);
      k.state.count(C_TASKS_KILLED);
      doExit(k, t, pt);
      return false;
    }
    Atomics.store(w, k.state.t(t, T_STATE), TASK_PINNED);
  }
  const pgdMfn = k.kpt.pfnToMfn(w[k.state.t(t, T_PGD)]!);
  const rc = mmuextOne(cpu, MMUEXT_NEW_BASEPTR, pgdMfn);
  if (rc < 0) {
    k.report('xen', [`switch_mm: NEW_BASEPTR ${pgdMfn.toString(16)} failed: ${rc}`]);
    return false;
  }
  cpu.mmu.setBaseptr(pgdMfn);
  k.state.count(C_CTX_SWITCHES);
  const mem32 = cpu.mmu.mem32;
  for (let i = 0; i < MAX_USER_PAGES; i++) {
    if (w[k.state.t(t, T_PAGES + i)]! <= 0) continue;
    const va = USER_BASE + i * PAGE_SIZE;
    const mfn = cpu.mmu.translate(va, true, true);
    if (mfn < 0 || mem32[mfn * FRAME_WORDS] !== signature(t, i)) {
      k.state.count(C_DATA_ERRORS);
      k.report('data', [
        `task ${t}: user page ${i} at ${va.toString(16)} ${mfn < 0 ? 'faulted' : "holds someone else's data"}`,
      ]);
      continue;
    }
    mem32[mfn * FRAME_WORDS + 1] = (mem32[mfn * FRAME_WORDS + 1]! + 1) >>> 0;
  }
  return true;
}

/** Switch this vCPU back to the kernel's own page tables (swapper_pg_dir). */
export function switchToSwapper(k: Kernel): void {
  if (k.cpu.mmu.baseptr === k.swapperPgd) return;
  const rc = mmuextOne(k.cpu, MMUEXT_NEW_BASEPTR, k.swapperPgd);
  if (rc < 0) k.printk(`switch_mm: back to swapper_pg_dir failed: ${rc}`);
  k.cpu.mmu.setBaseptr(k.swapperPgd);
}

/** exit_mmap: unpin first (xen_exit_mmap), so the teardown is plain stores; free it all. */
export function doExit(k: Kernel, t: number, pt: Int32Array): void {
  const w = k.state.w;
  switchToSwapper(k);
  if (w[k.state.t(t, T_STATE)] === TASK_PINNED) {
    xenPgdUnpin(k, pt, ptPagesOf(k, t, pt));
    Atomics.store(w, k.state.t(t, T_STATE), TASK_NEW);
  }
  freeAll(k, t);
  k.state.count(C_EXITS);
}

/** zap_pte_range + free_pgtables + pgd_free for an unpinned mm. */
function freeAll(k: Kernel, t: number): void {
  const w = k.state.w;
  for (let i = 0; i < MAX_USER_PAGES; i++) {
    const pfn = w[k.state.t(t, T_PAGES + i)]!;
    if (pfn > 0) k.pa.putPage(pfn, k.id);
    w[k.state.t(t, T_PAGES + i)] = 0;
  }
  const pte = w[k.state.t(t, T_PTE)]!;
  if (pte >= 0) k.pa.freePages(pte, 0, k.id);
  for (let i = 0; i < 4; i++) {
    const pmd = w[k.state.t(t, T_PMD + i)]!;
    if (pmd >= 0) k.pa.freePages(pmd, 0, k.id);
    w[k.state.t(t, T_PMD + i)] = -1;
  }
  const pgd = w[k.state.t(t, T_PGD)]!;
  if (pgd > 0) k.pa.freePages(pgd, 0, k.id);
  w[k.state.t(t, T_PGD)] = 0;
  w[k.state.t(t, T_PTE)] = -1;
  w[k.state.t(t, T_NPAGES)] = 0;
  k.state.freeTask(t);
}
