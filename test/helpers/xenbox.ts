/*
 * An in-process harness for hypervisor tests: a Xen core with machine memory and a
 * transport, and a minimal guest-side encoder that writes requests into a vCPU's slot
 * and serves them directly (no threads), so rule tests are fast and deterministic.
 */
import {
  DOMID_SELF, MMUEXT_PIN_L1_TABLE, __HYPERVISOR_mmu_update, __HYPERVISOR_mmuext_op,
  __HYPERVISOR_multicall, __HYPERVISOR_update_va_mapping, _PAGE_ACCESSED, _PAGE_PRESENT,
  type PagingMode,
} from '../../src/abi.js';
import {
  GUEST_HANDLE_NULL, MC_ARGS, MC_ENTRY_WORDS, MC_OP, MC_RESULT, MMU_REQ_WORDS, MMUEXT_OP_WORDS,
  S_ARGS, S_HEADER_WORDS, S_OP, S_RESULT, S_STATE, SLOT_IDLE, SLOT_REQUEST, layoutFor, slotBase,
  transportBytes,
} from '../../src/layout.js';
import { entryMaddrHi, entryMaddrLo, pteHi, pteLo } from '../../src/pte.js';
import { Xen } from '../../hypervisor/xen.js';
import type { DomainInfo } from '../../hypervisor/types.js';

export type Req = [mfn: number, index: number, lo: number, hi: number, cmd?: number];
export interface ExtOp { cmd: number; arg1?: number; arg2?: number }
export type Call =
  | { op: 'mmu_update'; reqs: Req[] }
  | { op: 'mmuext'; ops: ExtOp[] }
  | { op: 'uva'; va: number; lo: number; hi: number; flags: number };

export class XenBox {
  readonly xen: Xen;
  readonly mem32: Uint32Array;
  readonly t: Int32Array;
  readonly paging: PagingMode;

  constructor(opts: { paging?: PagingMode; frames?: number; maxSlots?: number; enforce?: boolean } = {}) {
    this.paging = opts.paging ?? 'pae';
    const frames = opts.frames ?? 8192;
    const maxSlots = opts.maxSlots ?? 8;
    const mem = new SharedArrayBuffer(frames * 4096);
    const transport = new SharedArrayBuffer(transportBytes(maxSlots));
    this.xen = new Xen({ paging: this.paging, frames, mem, transport, maxSlots, enforce: opts.enforce });
    this.mem32 = new Uint32Array(mem);
    this.t = new Int32Array(transport);
  }

  domain(name: string, opts: { frames?: number; vcpus?: number; lowmemFrames?: number } = {}): Dom {
    const info = this.xen.createDomain({ name, frames: opts.frames ?? 1024, vcpus: opts.vcpus ?? 1, lowmemFrames: opts.lowmemFrames });
    return new Dom(this, info);
  }

  /** Log lines since the last call. */
  log(): string[] {
    return this.xen.drainLog().map((r) => r.line);
  }

  audit() {
    return this.xen.audit();
  }
}

export class Dom {
  readonly box: XenBox;
  readonly info: DomainInfo;
  #nextFree: number;
  vcpu = 0;

  constructor(box: XenBox, info: DomainInfo) {
    this.box = box;
    this.info = info;
    this.#nextFree = info.firstFreePfn;
  }

  get domid(): number {
    return this.info.domid;
  }

  /** A free (zeroed, RW-mapped in the direct map) frame of the domain. */
  alloc(): { pfn: number; mfn: number; va: number } {
    const pfn = this.#nextFree++;
    return { pfn, mfn: this.info.p2m[pfn]!, va: this.directVa(pfn) };
  }

  directVa(pfn: number): number {
    return layoutFor(this.box.paging).pageOffset + pfn * 4096;
  }

  /** A store the guest makes through its own RW mapping of an unvalidated frame. */
  poke(mfn: number, i: number, lo: number, hi = 0): void {
    this.box.mem32[mfn * 1024 + 2 * i] = lo >>> 0;
    this.box.mem32[mfn * 1024 + 2 * i + 1] = hi >>> 0;
  }

  entry(mfn: number, i: number): [number, number] {
    return [this.box.mem32[mfn * 1024 + 2 * i]!, this.box.mem32[mfn * 1024 + 2 * i + 1]!];
  }

  get #slot(): number {
    return this.info.slots[this.vcpu]!;
  }

  get #base(): number {
    return slotBase(this.#slot);
  }

  #data(w: number): number {
    return this.#base + S_HEADER_WORDS + w;
  }

  #setArg(k: number, lo: number, hi = 0): void {
    this.box.t[this.#base + S_ARGS + 2 * k] = lo | 0;
    this.box.t[this.#base + S_ARGS + 2 * k + 1] = hi | 0;
  }

  #submit(op: number): number {
    const t = this.box.t;
    t[this.#base + S_OP] = op;
    Atomics.store(t, this.#base + S_STATE, SLOT_REQUEST);
    this.box.xen.serveSlot(this.#slot);
    const rc = t[this.#base + S_RESULT]!;
    Atomics.store(t, this.#base + S_STATE, SLOT_IDLE);
    return rc;
  }

  /** Write mmu_update requests at data word `at`; returns words used. */
  #putReqs(at: number, reqs: Req[]): number {
    const t = this.box.t;
    reqs.forEach(([mfn, i, lo, hi, cmd], k) => {
      const w = this.#data(at + k * MMU_REQ_WORDS);
      t[w] = entryMaddrLo(mfn, i, cmd ?? 0) | 0;
      t[w + 1] = entryMaddrHi(mfn) | 0;
      t[w + 2] = lo | 0;
      t[w + 3] = hi | 0;
    });
    return reqs.length * MMU_REQ_WORDS;
  }

  #putOps(at: number, ops: ExtOp[]): number {
    const t = this.box.t;
    ops.forEach((op, k) => {
      const w = this.#data(at + k * MMUEXT_OP_WORDS);
      t[w] = op.cmd;
      t[w + 1] = 0;
      t[w + 2] = (op.arg1 ?? 0) % 2 ** 32 | 0;
      t[w + 3] = Math.floor((op.arg1 ?? 0) / 2 ** 32) | 0;
      t[w + 4] = (op.arg2 ?? 0) | 0;
      t[w + 5] = 0;
    });
    return ops.length * MMUEXT_OP_WORDS;
  }

  /** Put a 2-word vCPU bitmap at data word `at`. */
  putMask(at: number, vcpus: number[]): number {
    let m0 = 0, m1 = 0;
    for (const v of vcpus) if (v < 32) m0 |= 1 << v; else m1 |= 1 << (v - 32);
    this.box.t[this.#data(at)] = m0;
    this.box.t[this.#data(at + 1)] = m1;
    return at;
  }

  mmuUpdate(reqs: Req[], foreigndom = DOMID_SELF): { rc: number; done: number } {
    const pdone = 8000;
    this.box.t[this.#data(pdone)] = -1;
    this.#putReqs(0, reqs);
    this.#setArg(0, 0);
    this.#setArg(1, reqs.length);
    this.#setArg(2, pdone);
    this.#setArg(3, foreigndom);
    const rc = this.#submit(__HYPERVISOR_mmu_update);
    return { rc, done: this.box.t[this.#data(pdone)]! };
  }

  /** A raw mmu_update with arbitrary argument words (for hostile-guest tests). */
  rawHypercall(op: number, args: Array<number | [lo: number, hi: number]>): number {
    args.forEach((a, k) => (typeof a === 'number' ? this.#setArg(k, a) : this.#setArg(k, a[0], a[1])));
    return this.#submit(op);
  }

  mmuext(ops: ExtOp[], foreigndom = DOMID_SELF): { rc: number; done: number } {
    const pdone = 8000;
    this.box.t[this.#data(pdone)] = -1;
    this.#putOps(0, ops);
    this.#setArg(0, 0);
    this.#setArg(1, ops.length);
    this.#setArg(2, pdone);
    this.#setArg(3, foreigndom);
    const rc = this.#submit(__HYPERVISOR_mmuext_op);
    return { rc, done: this.box.t[this.#data(pdone)]! };
  }

  uva(va: number, lo: number, hi: number, flags: number): number {
    // x86_64 VAs are kept as 48 bits; the ABI takes them sign-extended.
    const vhi = Math.floor(va / 2 ** 32);
    this.#setArg(0, va % 2 ** 32, va >= 2 ** 47 && va < 2 ** 48 ? vhi | 0xffff0000 : vhi);
    this.#setArg(1, lo, hi);
    this.#setArg(2, flags);
    return this.#submit(__HYPERVISOR_update_va_mapping);
  }

  /** A multicall of the given calls; returns each entry's result. */
  multicall(calls: Call[]): number[] {
    const t = this.box.t;
    let at = calls.length * MC_ENTRY_WORDS;
    calls.forEach((c, k) => {
      const e = this.#data(k * MC_ENTRY_WORDS);
      for (let w = 0; w < MC_ENTRY_WORDS; w++) t[e + w] = 0;
      const arg = (j: number, lo: number, hi = 0): void => {
        t[e + MC_ARGS + 2 * j] = lo | 0;
        t[e + MC_ARGS + 2 * j + 1] = hi | 0;
      };
      if (c.op === 'mmu_update') {
        t[e + MC_OP] = __HYPERVISOR_mmu_update;
        arg(0, at); arg(1, c.reqs.length); arg(2, GUEST_HANDLE_NULL); arg(3, DOMID_SELF);
        at += this.#putReqs(at, c.reqs);
      } else if (c.op === 'mmuext') {
        t[e + MC_OP] = __HYPERVISOR_mmuext_op;
        arg(0, at); arg(1, c.ops.length); arg(2, GUEST_HANDLE_NULL); arg(3, DOMID_SELF);
        at += this.#putOps(at, c.ops);
      } else {
        t[e + MC_OP] = __HYPERVISOR_update_va_mapping;
        const vhi = Math.floor(c.va / 2 ** 32);
        arg(0, c.va % 2 ** 32, c.va >= 2 ** 47 && c.va < 2 ** 48 ? vhi | 0xffff0000 : vhi); arg(1, c.lo, c.hi); arg(2, c.flags);
      }
    });
    this.#setArg(0, 0);
    this.#setArg(1, calls.length);
    const rc = this.#submit(__HYPERVISOR_multicall);
    if (rc !== 0) return [rc];
    return calls.map((_, k) => t[this.#data(k * MC_ENTRY_WORDS) + MC_RESULT]!);
  }

  /** Linux's way to make a frame a page table: remap its direct-map alias read-only. */
  makeReadOnly(pfn: number): number {
    return this.uva(this.directVa(pfn), pteLo(this.info.p2m[pfn]!, _PAGE_PRESENT | _PAGE_ACCESSED), pteHi(this.info.p2m[pfn]!), 0);
  }

  pin(level: number, mfn: number): number {
    return this.mmuext([{ cmd: MMUEXT_PIN_L1_TABLE + level - 1, arg1: mfn }]).rc;
  }
}
