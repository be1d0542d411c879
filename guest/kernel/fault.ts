/*
 * __do_kernel_fault: what the kernel says when its own access through the MMU faulted
 * (arch/arm/mm/fault.c's wording, the seed's: slub-kmap-atomic-oops.txt).
 *
 *   Unable to handle kernel NULL pointer dereference at virtual address 0000011a
 *   pgd = c1234000
 *   [0000011a] *pgd=0000000000000000
 *   Internal error: Oops: 0 [#1]
 *   Modules linked in:
 *   CPU: 0
 *   PC is at mapping_mapped
 *   LR is at flush_dcache_page
 *   Backtrace:
 *    [<cacheflush.js:40>] mapping_mapped
 *    ...
 *
 * Every value comes from the fault the vCPU's MMU recorded: the address, the page-table
 * entries on the way to it (read from the live tables, as show_pte does), the access
 * (x86's error code: bit 0 present, bit 1 write, bit 2 user), and the call chain
 * (dump_stack).
 */
import { FRAME_WORDS, PAGE_SIZE, _PAGE_PRESENT } from '../../src/abi/xen.js';
import { pteMfn } from '../../src/abi/pte.js';
import { vaIndex } from '../../src/abi/layout.js';
import { dumpStack, backtraceLines } from './dump_stack.js';
import type { Kernel } from './kernel.js';

const hex = (v: number, digits: number) => (v >>> 0).toString(16).padStart(digits, '0');

/** show_pte: the entries on the way to `va` in the current page tables, until one is not present. */
function showPte(k: Kernel, va: number): string {
  const names = k.layout.levels === 4 ? ['pgd', 'pud', 'pmd', 'pte'] : ['pgd', 'pmd', 'pte'];
  const parts: string[] = [];
  let mfn = k.cpu.mmu.baseptr;
  for (let level = k.layout.levels, n = 0; level >= 1; level--, n++) {
    const pfn = k.mfnToPfn(mfn);
    if (pfn < 0) break;
    const w = mfn * FRAME_WORDS + 2 * vaIndex(va, level);
    const lo = k.mem32[w]!;
    const hi = k.mem32[w + 1]!;
    parts.push(`*${names[n]}=${hex(hi, 8)}${hex(lo, 8)}`);
    if ((lo & _PAGE_PRESENT) === 0) break;
    mfn = pteMfn(lo, hi);
  }
  return `[${hex(va, 8)}] ${parts.join(', ')}`;
}

/** Report the oops for the fault the MMU just recorded (kind 'oops'). */
export function doKernelFault(k: Kernel): void {
  const f = k.cpu.mmu.fault();
  const va = f.va;
  const frames = dumpStack().slice(2); // dump_stack and this function
  const errorCode = (f.reason === 'not_present' ? 0 : 1) | (f.write ? 2 : 0) | (f.user ? 4 : 0);
  const nr = (k.reportCounts.oops ?? 0) + 1;
  k.report('oops', [
    `Unable to handle kernel ${va < PAGE_SIZE ? 'NULL pointer dereference' : 'paging request'} at virtual address ${hex(va, 8)}`,
    `pgd = ${hex(k.lowmemVa(k.mfnToPfn(k.cpu.mmu.baseptr)), 8)}`,
    showPte(k, va),
    `Internal error: Oops: ${errorCode.toString(16)} [#${nr}]`,
    'Modules linked in:',
    `CPU: ${k.id}`,
    `PC is at ${frames[0]?.name ?? '?'}`,
    `LR is at ${frames[1]?.name ?? '?'}`,
    ...backtraceLines(frames),
  ]);
}
