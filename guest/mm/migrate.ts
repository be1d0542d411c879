/*
 * Page migration (mm/migrate.c's migrate_pages, reduced to one anonymous page): what
 * MOVABLE means when there is no swap. Lumpy reclaim (page_alloc.ts) calls it for the
 * anonymous pages in a block it is emptying: the page is copied to a new one outside
 * that block, the one pte that maps it is repointed (mmu_update once the mm is pinned:
 * Xen validates it), the TLB entry is dropped and the old page freed.
 *
 * Only a page of a task of this vCPU moves (tasks never change vCPU here, and only their
 * own vCPU runs them), found through the reverse map handleMmFault keeps with grouping
 * on: page->mapping is the task's anon_vma, page->index its slot.
 */
import { _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW, _PAGE_USER, PAGE_SIZE } from '../../src/abi/xen.js';
import { vaIndex } from '../../src/abi/layout.js';
import { pteHi, pteLo } from '../../src/abi/pte.js';
import type { Kernel } from '../kernel/kernel.js';
import { MAX_TASKS, MAX_USER_PAGES, T_CPU, T_PAGES, T_PTE, T_STATE, TASK_NEW, TASK_PINNED } from '../kernel/state.js';
import { USER_BASE, setEntry } from './memory.js';
import { PAGE_MAPPING_ANON, mappingOfAnonVma } from './page.js';
import { __GFP_COLD, __GFP_HIGHMEM, __GFP_MOVABLE, __GFP_NOMEMALLOC, __GFP_NOWARN } from './page_alloc.js';

/** New pages for migration: movable, no sleeping (we are inside reclaim), no emergency reserve, cold. */
const GFP_MIGRATE = __GFP_MOVABLE | __GFP_HIGHMEM | __GFP_NOMEMALLOC | __GFP_NOWARN | __GFP_COLD;
/** Candidates taken (and given back) when the new page falls inside the block being emptied. */
const MAX_TRIES = 4;
const buf = new Uint8Array(PAGE_SIZE);
const PTE_FLAGS = _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY;

/** Move anonymous page `pfn` out of [avoidStart, avoidEnd). True when it moved. */
export function migrateAnonPage(k: Kernel, pfn: number, avoidStart: number, avoidEnd: number): boolean {
  const mm = k.pa.memMap;
  const mapping = mm.mapping[pfn]!;
  if ((mapping & PAGE_MAPPING_ANON) === 0) return false;
  const t = mapping >>> 1;
  const i = mm.index[pfn]!;
  const w = k.state.w;
  if (t >= MAX_TASKS || i < 0 || i >= MAX_USER_PAGES) return false;
  const state = w[k.state.t(t, T_STATE)];
  if ((state !== TASK_NEW && state !== TASK_PINNED) || w[k.state.t(t, T_CPU)] !== k.id) return false;
  if (w[k.state.t(t, T_PAGES + i)] !== pfn) return false;
  const pte = w[k.state.t(t, T_PTE)]!;
  if (pte < 0) return false;
  // A new page, not in the block being emptied.
  const rejects: number[] = [];
  let np = -1;
  for (let n = 0; n < MAX_TRIES; n++) {
    const p = k.pa.allocPages(GFP_MIGRATE, 0, k.id);
    if (p < 0) break;
    if (p >= avoidStart && p < avoidEnd) {
      rejects.push(p);
      continue;
    }
    np = p;
    break;
  }
  for (const p of rejects) k.pa.freePages(p, 0, k.id);
  if (np < 0) return false;
  k.readPage(pfn, buf, 0);
  k.writePage(np, buf, 0);
  const mfn = k.kpt.pfnToMfn(np);
  if (setEntry(k, t, pte, vaIndex(USER_BASE, 1) + i, pteLo(mfn, PTE_FLAGS), pteHi(mfn)) < 0) {
    k.pa.freePages(np, 0, k.id);
    return false;
  }
  k.cpu.mmu.invlpg(USER_BASE + i * PAGE_SIZE);
  w[k.state.t(t, T_PAGES + i)] = np;
  mm.mapping[np] = mappingOfAnonVma(t);
  mm.index[np] = i;
  mm.mapping[pfn] = 0;
  k.pa.putPage(pfn, k.id);
  return true;
}
