/*
 * script: the guest program behind `pvmmu script`. It is deliberately dumb -- the
 * controller resolves names and encodes each hypercall (src/script/encode.ts); this
 * program copies the words into its slot verbatim, issues the call on the real
 * transport, and does loads and stores through the vCPU's own MMU and TLB.
 *
 *   hypercall {nr, args[12], data[], readback[]} -> {rc, words[]}
 *   load {va}                                    -> {lo, hi} | {fault}
 *   store {va, lo, hi}                           -> {} | {fault}
 *   set_baseptr {mfn}                            after a successful NEW_BASEPTR
 */
import { S_DATA_WORDS } from '../../src/abi/layout.js';
import type { Vcpu } from '../vcpu.js';
import type { ProgramHandler } from './types.js';
import type { VcpuRequest } from '../../src/abi/vcpu.js';

function words(req: VcpuRequest, key: string, max: number): number[] {
  const v = req[key];
  if (!Array.isArray(v) || v.length > max || v.some((x) => typeof x !== 'number')) {
    throw new TypeError(`script: "${key}" must be an array of at most ${max} numbers`);
  }
  return v as number[];
}

function num(req: VcpuRequest, key: string): number {
  const v = req[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0)
    throw new TypeError(`script: "${key}" must be a non-negative number`);
  return v;
}

export default function script(cpu: Vcpu): ProgramHandler {
  return (req) => {
    switch (req.op) {
      case 'hypercall': {
        const args = words(req, 'args', 12);
        const data = words(req, 'data', S_DATA_WORDS);
        const readback = words(req, 'readback', 64);
        for (let i = 0; i < data.length; i++) cpu.u32[cpu.dataBase + i] = data[i]! >>> 0;
        for (let k = 0; k < 6; k++) cpu.setArg(k, (args[2 * k] ?? 0) >>> 0, (args[2 * k + 1] ?? 0) >>> 0);
        const rc = cpu.hypercall(num(req, 'nr'));
        return { rc, words: readback.map((w) => cpu.t[cpu.dataBase + w]!) };
      }
      case 'load': {
        const lo = cpu.mmu.load64(num(req, 'va'));
        if (lo < 0) return { fault: cpu.mmu.fault() };
        return { lo, hi: cpu.mmu.hi };
      }
      case 'store': {
        const rc = cpu.mmu.store64(num(req, 'va'), num(req, 'lo') >>> 0, num(req, 'hi') >>> 0);
        return rc < 0 ? { fault: cpu.mmu.fault() } : {};
      }
      case 'set_baseptr':
        cpu.mmu.setBaseptr(num(req, 'mfn'));
        return {};
      default:
        throw new TypeError(`script: unknown op "${req.op}"; accepted: hypercall, load, store, set_baseptr`);
    }
  };
}
