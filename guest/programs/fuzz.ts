/*
 * fuzz: the guest behind `pvmmu fuzz --transport`. A hostile domain's vCPU issues the
 * fuzzer's calls (src/abi/fuzz.ts: the same generator as the in-process engine) through
 * its real request slot, and its plain stores through its own MMU and TLB.
 *
 *   steps {n} -> {calls, stores, storeFaults, hostile, results, pinsOk}
 *     n hypercalls (a store first re-installs the builder's root as the base pointer, so
 *     that the MMU walks what Xen has installed even after a random or hostile
 *     NEW_BASEPTR; that call counts too).
 */
import { MMUEXT_NEW_BASEPTR, rcName } from '../../src/abi/xen.js';
import {
  A_STORE,
  FuzzAction,
  FuzzDomain,
  FuzzGen,
  bump,
  encodeMmuext,
  type FuzzDomainInfo,
} from '../../src/abi/fuzz.js';
import type { Vcpu } from '../vcpu.js';
import type { ProgramHandler } from './types.js';
import type { VcpuRequest } from '../../src/abi/vcpu.js';

export interface FuzzParams {
  seed: number;
  info: FuzzDomainInfo;
  /** The other domain's frames (mfns). */
  foreign: number[];
}

function params(p: unknown): FuzzParams {
  const o = p as FuzzParams;
  if (!o || typeof o.seed !== 'number' || !o.info || !Array.isArray(o.foreign)) {
    throw new TypeError('fuzz: params must be {seed, info, foreign}');
  }
  return o;
}

function count(req: VcpuRequest): number {
  const n = req.n;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1)
    throw new TypeError('fuzz steps: n must be a positive integer');
  return n;
}

export default function fuzz(cpu: Vcpu, raw: unknown): ProgramHandler {
  const p = params(raw);
  const w = new FuzzDomain(cpu.mmu.paging, p.info);
  w.foreign = p.foreign;
  const gen = new FuzzGen(p.seed);
  const a = new FuzzAction();
  const root = w.root;

  /** Issue the action's call through the slot: words first, then the doorbell. */
  const call = (act: FuzzAction): number => {
    for (let i = 0; i < act.dataLen; i++) cpu.u32[cpu.dataBase + i] = act.data[i]!;
    for (let k = 0; k < 6; k++) cpu.setArg(k, act.args[2 * k]!, act.args[2 * k + 1]!);
    return cpu.hypercall(act.op);
  };
  const homeCall = new FuzzAction();
  encodeMmuext(homeCall, [[MMUEXT_NEW_BASEPTR, root, 0, 0]]);
  const home = (): number => {
    const rc = call(homeCall);
    if (rc === 0) {
      cpu.mmu.setBaseptr(root);
      w.cr3 = root;
    }
    return rc;
  };

  return (req) => {
    if (req.op !== 'steps') throw new TypeError(`fuzz: unknown op "${req.op}"; accepted: steps`);
    const n = count(req);
    const out = {
      calls: 0,
      stores: 0,
      storeFaults: 0,
      hostile: 0,
      results: {} as Record<string, number>,
      pinsOk: [0, 0, 0, 0, 0],
    };
    while (out.calls < n) {
      gen.next(w, a);
      if (a.kind === A_STORE) {
        out.stores++;
        const rc = home();
        out.calls++;
        bump(out.results, rc === 0 ? 'ok' : rcName(rc));
        const va = w.pageOffset + a.pfn * 4096 + a.index * 8;
        if (cpu.mmu.store64(va, a.lo >>> 0, a.hi >>> 0) < 0) out.storeFaults++;
        continue;
      }
      if (a.hostile) out.hostile++;
      const rc = call(a);
      out.calls++;
      bump(out.results, rc === 0 ? 'ok' : rc > 0 ? 'positive' : rcName(rc));
      if (rc === 0 && a.pinLevel > 0) out.pinsOk[a.pinLevel]!++;
      gen.note(w, a, rc);
      if (rc === 0 && a.baseptr >= 0) cpu.mmu.setBaseptr(a.baseptr);
    }
    return out;
  };
}
