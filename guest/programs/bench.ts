/*
 * bench: the guest side of `pvmmu bench hypercall` -- validated mmu_update throughput
 * and the time to pin an L1 and a whole tree, measured on the vCPU that issues them.
 * It takes frames from the top of the domain (never touched by the builder) and makes
 * page tables of them the way Linux does: remap the direct-map alias read-only, pin.
 *
 *   mmu-update {batch, total}  alternate every entry of a pinned L1 between two data
 *                              frames, writable, so every request is fully validated
 *                              (no fast path): get_page_type(writable) + put of the old
 *   pin-l1 {iterations}        PIN_L1 / UNPIN of an L1 whose 512 entries map a frame RW
 *   pin-tree {l1s, iterations} PIN_L2 / UNPIN of an L2 over `l1s` full L1s (read-only entries)
 */
import {
  MMUEXT_PIN_L1_TABLE,
  MMUEXT_PIN_L2_TABLE,
  MMUEXT_UNPIN_TABLE,
  UVMF_INVLPG,
  _PAGE_ACCESSED,
  _PAGE_DIRTY,
  _PAGE_PRESENT,
  _PAGE_RW,
  PAGE_SIZE,
} from '../../src/abi/xen.js';
import { layoutFor } from '../../src/abi/layout.js';
import { entryMaddrHi, entryMaddrLo, pteHi, pteLo } from '../../src/abi/pte.js';
import { mmuUpdate, mmuextOne, updateVaMapping } from '../arch/xen/hypercall.js';
import type { Vcpu } from '../vcpu.js';
import type { ProgramHandler } from './types.js';

const P = _PAGE_PRESENT,
  RW = _PAGE_RW,
  A = _PAGE_ACCESSED,
  D = _PAGE_DIRTY;

function intParam(req: Record<string, unknown>, key: string, dflt: number, max: number): number {
  const v = req[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) {
    throw new RangeError(`bench: "${key}" must be an integer in 1..${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

export default function bench(cpu: Vcpu): ProgramHandler {
  const info = cpu.info;
  const layout = layoutFor(info.paging);
  let top = Math.min(info.nrPages, info.lowmemPages); // frames are taken downwards from here
  const take = (): { pfn: number; mfn: number } => {
    if (top <= info.firstFreePfn) throw new RangeError('bench: the domain ran out of frames; give it more memory');
    const pfn = --top;
    return { pfn, mfn: info.p2m[pfn]! };
  };
  const check = (rc: number, what: string): void => {
    if (rc < 0) throw new Error(`bench: ${what} failed with ${rc}`);
  };
  /** Make a frame a would-be page table: zero it, then drop its writable alias. */
  const asTable = (pfn: number, mfn: number): void => {
    const va = layout.pageOffset + pfn * PAGE_SIZE;
    for (let i = 0; i < 1024; i += 2) check(cpu.mmu.store64(va + i * 4, 0, 0), 'zeroing a table');
    check(updateVaMapping(cpu, va, pteLo(mfn, P | A), pteHi(mfn), UVMF_INVLPG), 'update_va_mapping');
  };
  const time = (fn: () => void): number => {
    const t0 = process.hrtime.bigint();
    fn();
    return Number(process.hrtime.bigint() - t0);
  };

  return (req) => {
    switch (req.op) {
      case 'mmu-update': {
        const batch = intParam(req, 'batch', 512, 4096);
        const total = intParam(req, 'total', 1 << 20, 1 << 26);
        const l1 = take();
        const d0 = take();
        const d1 = take();
        asTable(l1.pfn, l1.mfn);
        check(mmuextOne(cpu, MMUEXT_PIN_L1_TABLE, l1.mfn), 'pin');
        const reqs = new Uint32Array(batch * 4);
        const calls = Math.ceil(total / batch);
        let slot = 0;
        let flip = 0;
        const ns = time(() => {
          for (let c = 0; c < calls; c++) {
            for (let i = 0; i < batch; i++) {
              const target = flip ? d1.mfn : d0.mfn;
              reqs[4 * i] = entryMaddrLo(l1.mfn, slot);
              reqs[4 * i + 1] = entryMaddrHi(l1.mfn);
              reqs[4 * i + 2] = pteLo(target, P | RW | A | D);
              reqs[4 * i + 3] = pteHi(target);
              if (++slot === 512) {
                slot = 0;
                flip ^= 1;
              }
            }
            check(mmuUpdate(cpu, reqs, batch).rc, 'mmu_update');
          }
        });
        return { batch, updates: calls * batch, hypercalls: calls, ns };
      }
      case 'pin-l1': {
        const iterations = intParam(req, 'iterations', 200, 1 << 20);
        const l1 = take();
        const d = take();
        const va = layout.pageOffset + l1.pfn * PAGE_SIZE;
        for (let i = 0; i < 512; i++)
          check(cpu.mmu.store64(va + i * 8, pteLo(d.mfn, P | RW | A | D), pteHi(d.mfn)), 'filling the L1');
        check(updateVaMapping(cpu, va, pteLo(l1.mfn, P | A), pteHi(l1.mfn), UVMF_INVLPG), 'update_va_mapping');
        const ns = time(() => {
          for (let i = 0; i < iterations; i++) {
            check(mmuextOne(cpu, MMUEXT_PIN_L1_TABLE, l1.mfn), 'pin');
            check(mmuextOne(cpu, MMUEXT_UNPIN_TABLE, l1.mfn), 'unpin');
          }
        });
        return { iterations, entries: 512, ns };
      }
      case 'pin-tree': {
        const l1s = intParam(req, 'l1s', 64, 512);
        const iterations = intParam(req, 'iterations', 10, 1 << 16);
        const l2 = take();
        const d = take();
        const l2va = layout.pageOffset + l2.pfn * PAGE_SIZE;
        // Fill the L2 while it is a plain page; it becomes read-only once full.
        for (let i = 0; i < 512; i++) check(cpu.mmu.store64(l2va + i * 8, 0, 0), 'zeroing the L2');
        for (let k = 0; k < l1s; k++) {
          const l1 = take();
          const va = layout.pageOffset + l1.pfn * PAGE_SIZE;
          for (let i = 0; i < 512; i++)
            check(cpu.mmu.store64(va + i * 8, pteLo(d.mfn, P | A), pteHi(d.mfn)), 'filling an L1');
          check(updateVaMapping(cpu, va, pteLo(l1.mfn, P | A), pteHi(l1.mfn), UVMF_INVLPG), 'update_va_mapping');
          check(cpu.mmu.store64(l2va + k * 8, pteLo(l1.mfn, P | RW | A), pteHi(l1.mfn)), 'filling the L2');
        }
        check(updateVaMapping(cpu, l2va, pteLo(l2.mfn, P | A), pteHi(l2.mfn), UVMF_INVLPG), 'update_va_mapping');
        const ns = time(() => {
          for (let i = 0; i < iterations; i++) {
            check(mmuextOne(cpu, MMUEXT_PIN_L2_TABLE, l2.mfn), 'pin');
            check(mmuextOne(cpu, MMUEXT_UNPIN_TABLE, l2.mfn), 'unpin');
          }
        });
        return { iterations, entries: l1s * 512 + l1s, ns };
      }
      default:
        throw new TypeError(`bench: unknown op "${req.op}"; accepted: mmu-update, pin-l1, pin-tree`);
    }
  };
}
