/*
 * The Xen PV page-table hooks, as Linux 2.6.2x's arch/x86/xen/mmu.c has them:
 * xen_pgd_pin / xen_pgd_unpin (a whole mm's page tables become, or stop being, page
 * tables for Xen), xen_alloc_ptpage / xen_release_ptpage (one page-table page of a pinned
 * mm), and the report Linux printed when Xen refused part of a multicall batch.
 *
 * Pinning needs every page-table page to have no writable mapping: the lowmem alias in
 * the direct map is remapped read-only here, but a stray alias elsewhere -- a lazily
 * unmapped vmap (XFS, 2007) or an unused kmap (HIGHPTE) -- makes Xen refuse the pin.
 * Before pinning, the 2.6.24 path flushes unused kmaps when it meets a highmem page (if
 * kmapFlush is on); the October 2008 path also calls vm_unmap_aliases() first.
 */
import {
  HYPERCALL_NAMES,
  MMUEXT_PIN_L1_TABLE,
  MMUEXT_UNPIN_TABLE,
  UVMF_TLB_FLUSH,
  __HYPERVISOR_mmuext_op,
} from '../../../src/abi/xen.js';
import type { Kernel } from '../../kernel/kernel.js';
import { unmapAliasesBeforePin } from '../../kernel/config.js';
import { C_MC_FAILURES, C_PIN_FAILURES, C_PIN_TRACED, C_PINS } from '../../../src/abi/kernel.js';
import { MulticallBatch, type MulticallResult } from './hypercall.js';
import { TN, traceNowUs } from '../../../src/abi/trace.js';

const ext = new Uint32Array(6);

function queueMmuext(batch: MulticallBatch, cmd: number, mfn: number): number {
  ext[0] = cmd;
  ext[1] = 0;
  ext[2] = mfn >>> 0;
  ext[3] = 0;
  ext[4] = 0;
  ext[5] = 0;
  return batch.mmuextOp(ext, 1);
}

/** What each queued entry was, for the failure report. */
interface Queued {
  op: number;
  arg: number;
}

/**
 * xen_mc_flush's complaint when entries failed: "N of M multicall(s) failed: cpu C" and
 * one "  call  i: op=... arg=[...] result=..." line per failed entry.
 */
export function reportMulticall(k: Kernel, res: MulticallResult, queued: Queued[]): number {
  let failed = 0;
  for (let i = 0; i < res.results.length; i++) if (res.results[i]! < 0) failed++;
  if (failed === 0) return 0;
  k.state.count(C_MC_FAILURES, failed);
  const lines = [`${failed} of ${res.results.length} multicall(s) failed: cpu ${k.id}`];
  for (let i = 0; i < res.results.length; i++) {
    const r = res.results[i]!;
    if (r >= 0) continue;
    const q = queued[i]!;
    lines.push(
      `  call ${String(i + 1).padStart(2)}: op=${q.op} (${HYPERCALL_NAMES[q.op] ?? '?'}) arg=[${q.arg.toString(16)}] result=${r}`,
    );
  }
  k.report('xen', lines);
  return failed;
}

/**
 * xen_pgd_pin: remap every lowmem page-table page read-only, then pin the root, in one
 * multicall batch. `ptPages` lists the mm's page-table pfns, the pgd first. Returns
 * whether Xen accepted the pin; when it did not, the pages are left as they were
 * (writable, not PG_pinned) and the failure is reported and counted.
 */
export function xenPgdPin(k: Kernel, ptPages: ArrayLike<number>, n: number): boolean {
  const cpu = k.cpu;
  const mm = k.pa.memMap;
  if (unmapAliasesBeforePin(k.cfg)) k.vmalloc.vmUnmapAliases();
  const batch = new MulticallBatch(cpu);
  const queued: Queued[] = [];
  let sawHighmem = false;
  for (let i = 0; i < n; i++) {
    const pfn = ptPages[i]!;
    mm.SetPagePinned(pfn);
    k.checkUnmovable(pfn, 'is pinned as a page table');
    if (k.isHighmem(pfn)) {
      sawHighmem = true;
      continue;
    }
    k.setLowmemWritable(batch, pfn, false, i === 0 ? UVMF_TLB_FLUSH : 0);
    queued.push({ op: 14, arg: k.lowmemVa(pfn) });
  }
  if (sawHighmem && k.cfg.kmapFlush && k.highmem) {
    // HIGHPTE leaves kmap aliases of page-table pages: flush the unused ones first.
    reportMulticall(k, batch.flush(), queued.splice(0));
    k.highmem.kmapFlushUnused();
  }
  const pgd = ptPages[0]!;
  const level = k.layout.levels;
  queueMmuext(batch, MMUEXT_PIN_L1_TABLE + level - 1, cpu.info.p2m[pgd]!);
  queued.push({ op: __HYPERVISOR_mmuext_op, arg: cpu.info.p2m[pgd]! });
  const res = batch.flush();
  k.state.count(C_PINS);
  const pinOk = res.results[res.results.length - 1]! >= 0 && res.rc >= 0;
  reportMulticall(k, res, queued);
  k.trace?.instant(pinOk ? TN.pin : TN['pin refused'], traceNowUs(), cpu.info.p2m[pgd]!);
  if (!pinOk) {
    k.state.count(C_PIN_FAILURES);
    // Which page table still had a writable alias, and whose?
    for (let i = 0; i < n; i++) {
      const why = k.strayAliasesOf(ptPages[i]!);
      if (why.length === 0) continue;
      k.state.count(C_PIN_TRACED);
      k.report('xen', [
        `xen_pgd_pin: page-table pfn ${ptPages[i]} (mfn ${cpu.info.p2m[ptPages[i]!]!.toString(16)}): ${why[0]}`,
      ]);
      break;
    }
    // Undo: the page tables stay an unpinned mm's, writable again.
    const undo = new MulticallBatch(cpu);
    for (let i = 0; i < n; i++) {
      const pfn = ptPages[i]!;
      mm.ClearPagePinned(pfn);
      if (!k.isHighmem(pfn)) k.setLowmemWritable(undo, pfn, true, 0);
    }
    undo.flush();
  }
  return pinOk;
}

/** xen_pgd_unpin: unpin the root, then make every page-table page writable again. */
export function xenPgdUnpin(k: Kernel, ptPages: ArrayLike<number>, n: number): void {
  const cpu = k.cpu;
  const mm = k.pa.memMap;
  const batch = new MulticallBatch(cpu);
  const queued: Queued[] = [];
  queueMmuext(batch, MMUEXT_UNPIN_TABLE, cpu.info.p2m[ptPages[0]!]!);
  queued.push({ op: __HYPERVISOR_mmuext_op, arg: cpu.info.p2m[ptPages[0]!]! });
  for (let i = 0; i < n; i++) {
    const pfn = ptPages[i]!;
    mm.ClearPagePinned(pfn);
    if (k.isHighmem(pfn)) continue;
    k.setLowmemWritable(batch, pfn, true, 0);
    queued.push({ op: 14, arg: k.lowmemVa(pfn) });
  }
  reportMulticall(k, batch.flush(), queued);
}

/**
 * xen_alloc_ptpage: a new page-table page for a pinned mm. Lowmem: remap read-only
 * (the entry that links it in is validated by Xen). Highmem: flush unused kmaps, since
 * the page may still have one (when kmapFlush is on).
 */
export function xenAllocPtpage(k: Kernel, pfn: number): void {
  k.pa.memMap.SetPagePinned(pfn);
  k.checkUnmovable(pfn, 'is pinned as a page table');
  if (!k.isHighmem(pfn)) k.setLowmemWritable(null, pfn, false);
  else if (k.cfg.kmapFlush && k.highmem) k.highmem.kmapFlushUnused();
}

/** xen_release_ptpage: the page stops being a page table of a pinned mm. */
export function xenReleasePtpage(k: Kernel, pfn: number): void {
  if (!k.pa.memMap.PagePinned(pfn)) return;
  k.pa.memMap.ClearPagePinned(pfn);
  if (!k.isHighmem(pfn)) k.setLowmemWritable(null, pfn, true);
}
