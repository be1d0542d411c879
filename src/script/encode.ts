/*
 * Encoding a script's hypercall steps into the transport ABI: the hypercall number, six
 * (lo, hi) argument pairs and the words of the slot's data area they point into. The
 * vCPU worker copies these verbatim into its slot and issues the call, so a script
 * exercises exactly the decoder a guest kernel does.
 */
import {
  DOMID_SELF,
  MMU_MACHPHYS_UPDATE,
  MMU_NORMAL_PT_UPDATE,
  MMU_PT_UPDATE_PRESERVE_AD,
  MMUEXT_BY_NAME,
  UVMF_ALL,
  UVMF_INVLPG,
  UVMF_TLB_FLUSH,
  __HYPERVISOR_mmu_update,
  __HYPERVISOR_mmuext_op,
  __HYPERVISOR_multicall,
  __HYPERVISOR_update_va_mapping,
} from '../abi/xen.js';
import {
  GUEST_HANDLE_NULL,
  MC_ARGS,
  MC_ENTRY_WORDS,
  MC_OP,
  MC_RESULT,
  MMU_REQ_WORDS,
  MMUEXT_OP_WORDS,
} from '../abi/layout.js';
import { entryMaddrHi, entryMaddrLo, fromBigInt, pteHi, pteLo } from '../abi/pte.js';
import type { Addr, Entry, ExtOp, MmuReq, Step } from './schema.js';

/** What the runner knows about names: frames (mfn), VAs. */
export interface Resolver {
  mfn(ref: string, at: string): number;
  /** A VA as a number (x86_64: its low 48 bits), -1 when non-canonical. */
  va(addr: Addr, at: string): number;
  /** A VA as the (lo, hi) words a guest passes (x86_64 high-half VAs sign-extended). */
  vaWords(addr: Addr, at: string): [number, number];
}

/** One hypercall, ready to be copied into a slot. */
export interface EncodedCall {
  nr: number;
  /** 12 words: six (lo, hi) pairs. */
  args: number[];
  /** Data-area words from offset 0. */
  data: number[];
  /** Data words to read back after the call: pdone, or each multicall entry's result. */
  readback: number[];
}

export function encodeEntry(e: Entry, r: Resolver, at: string): [number, number] {
  if ('raw' in e) return fromBigInt(e.raw);
  const mfn = r.mfn(e.frame, `${at}.frame`);
  return [pteLo(mfn, e.flags), pteHi(mfn, e.nx)];
}

function emptyArgs(): number[] {
  return new Array(12).fill(0);
}

const MMU_CMD: Record<MmuReq['cmd'], number> = {
  normal: MMU_NORMAL_PT_UPDATE,
  preserve_ad: MMU_PT_UPDATE_PRESERVE_AD,
  machphys: MMU_MACHPHYS_UPDATE,
};

class DataArea {
  readonly words: number[] = [];
  alloc(n: number): number {
    const at = this.words.length;
    for (let i = 0; i < n; i++) this.words.push(0);
    return at;
  }
}

function vcpuMask(vcpus: number[]): [number, number] {
  let m0 = 0;
  let m1 = 0;
  for (const v of vcpus) {
    if (v < 32) m0 |= 1 << v;
    else m1 |= 1 << (v - 32);
  }
  return [m0 >>> 0, m1 >>> 0];
}

/** Fill `args` (12 words) for a call, placing arrays in `data`; returns readback offsets. */
function encodeInto(
  s: Step,
  r: Resolver,
  data: DataArea,
  args: number[],
  top: boolean,
): { nr: number; readback: number[] } {
  switch (s.op) {
    case 'mmu_update': {
      const at = data.alloc(s.reqs.length * MMU_REQ_WORDS);
      s.reqs.forEach((q, i) => {
        const mfn = r.mfn(q.table, `${s.at}.reqs[${i}].table`);
        const w = at + i * MMU_REQ_WORDS;
        let lo: number;
        let hi: number;
        if (q.cmd === 'machphys') {
          // val is the pfn the frame gets in the M2P.
          [lo, hi] = 'raw' in q.entry ? fromBigInt(q.entry.raw) : [r.mfn(q.entry.frame, `${s.at}.reqs[${i}].entry`), 0];
        } else {
          [lo, hi] = encodeEntry(q.entry, r, `${s.at}.reqs[${i}].entry`);
        }
        data.words[w] = entryMaddrLo(mfn, q.index, MMU_CMD[q.cmd]);
        data.words[w + 1] = entryMaddrHi(mfn);
        data.words[w + 2] = lo;
        data.words[w + 3] = hi;
      });
      const pdone = top ? data.alloc(1) : GUEST_HANDLE_NULL;
      args[0] = at;
      args[2] = s.reqs.length;
      args[4] = pdone;
      args[6] = DOMID_SELF;
      return { nr: __HYPERVISOR_mmu_update, readback: top ? [pdone] : [] };
    }
    case 'mmuext': {
      const at = data.alloc(s.ops.length * MMUEXT_OP_WORDS);
      s.ops.forEach((o: ExtOp, i) => {
        const a = `${s.at}.ops[${i}]`;
        const w = at + i * MMUEXT_OP_WORDS;
        const cmd = o.cmd.startsWith('raw:') ? Number(o.cmd.slice(4)) : MMUEXT_BY_NAME[o.cmd]!;
        data.words[w] = cmd;
        let a1: [number, number] = [0, 0];
        let a2: [number, number] = [0, 0];
        if (o.frame !== undefined) a1 = [r.mfn(o.frame, `${a}.frame`), 0];
        if (o.va !== undefined) a1 = r.vaWords(o.va, `${a}.va`);
        if (o.src !== undefined) a2 = [r.mfn(o.src, `${a}.src`), 0];
        if (o.entries !== undefined) a2 = [o.entries, 0];
        if (o.vcpus !== undefined) {
          const m = data.alloc(2);
          [data.words[m], data.words[m + 1]] = vcpuMask(o.vcpus);
          a2 = [m, 0];
        }
        [data.words[w + 2], data.words[w + 3]] = a1;
        [data.words[w + 4], data.words[w + 5]] = a2;
      });
      const pdone = top ? data.alloc(1) : GUEST_HANDLE_NULL;
      args[0] = at;
      args[2] = s.ops.length;
      args[4] = pdone;
      args[6] = DOMID_SELF;
      return { nr: __HYPERVISOR_mmuext_op, readback: top ? [pdone] : [] };
    }
    case 'update_va_mapping': {
      const [vlo, vhi] = r.vaWords(s.va, `${s.at}.va`);
      const [lo, hi] = encodeEntry(s.entry, r, `${s.at}.entry`);
      let flags = s.flags.flush === 'invlpg' ? UVMF_INVLPG : s.flags.flush === 'tlb_flush' ? UVMF_TLB_FLUSH : 0;
      if (s.flags.target === 'all') flags |= UVMF_ALL;
      else if (Array.isArray(s.flags.target)) {
        // A vCPU bitmap is passed by reference: (flags & ~3) is its byte offset (>= 8).
        data.alloc(2 - Math.min(2, data.words.length));
        const m = data.alloc(2);
        [data.words[m], data.words[m + 1]] = vcpuMask(s.flags.target);
        flags |= m * 4;
      }
      args[0] = vlo;
      args[1] = vhi;
      args[2] = lo;
      args[3] = hi;
      args[4] = flags >>> 0;
      return { nr: __HYPERVISOR_update_va_mapping, readback: [] };
    }
    default:
      throw new Error(`${s.at}: "${s.op}" is not a hypercall`);
  }
}

export function encodeCall(s: Step, r: Resolver): EncodedCall {
  const data = new DataArea();
  const args = emptyArgs();
  if (s.op !== 'multicall') {
    const { nr, readback } = encodeInto(s, r, data, args, true);
    return { nr, args, data: data.words, readback };
  }
  const entries = data.alloc(s.calls.length * MC_ENTRY_WORDS);
  const readback: number[] = [];
  s.calls.forEach((c, i) => {
    const e = entries + i * MC_ENTRY_WORDS;
    const eargs = emptyArgs();
    const { nr } = encodeInto(c, r, data, eargs, false);
    data.words[e + MC_OP] = nr;
    for (let k = 0; k < 12; k++) data.words[e + MC_ARGS + k] = eargs[k]!;
    readback.push(e + MC_RESULT);
  });
  args[0] = entries;
  args[2] = s.calls.length;
  return { nr: __HYPERVISOR_multicall, args, data: data.words, readback };
}
