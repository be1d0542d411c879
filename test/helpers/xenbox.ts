/*
 * An in-process harness for hypervisor tests: a Xen core with machine memory and a
 * transport, driven by the guest's own hypercall encoders over a vCPU that has the
 * hypervisor serve each request at once (no threads), so rule tests are fast and
 * deterministic and exercise the same encoding a guest kernel uses.
 */
import {
  DOMID_SELF,
  MMUEXT_PIN_L1_TABLE,
  _PAGE_ACCESSED,
  _PAGE_PRESENT,
  type PagingMode,
  FRAME_WORDS,
} from '../../src/abi/xen.js';
import {
  MMU_REQ_WORDS,
  MMUEXT_OP_WORDS,
  S_ARGS,
  S_HEADER_WORDS,
  S_OP,
  S_RESULT,
  S_STATE,
  SLOT_IDLE,
  SLOT_REQUEST,
  layoutFor,
  slotBase,
  transportBytes,
} from '../../src/abi/layout.js';
import { MulticallBatch, mmuUpdate, mmuextOp, updateVaMapping } from '../../guest/arch/xen/hypercall.js';
import type { Vcpu } from '../../guest/vcpu.js';
import { entryMaddrHi, entryMaddrLo, pteHi, pteLo } from '../../src/abi/pte.js';
import { Xen } from '../../hypervisor/xen.js';
import { type DomainInfo, TEST_PLANTS, type TestPlant } from '../../src/abi/control.js';

/** PVMMU_TEST_PLANT: one of TEST_PLANTS, or unset; anything else is a mistake worth a loud error. */
export function plantFromEnv(v: string | undefined): TestPlant | undefined {
  if (v === undefined || v === '') return undefined;
  if (!(TEST_PLANTS as readonly string[]).includes(v))
    throw new RangeError(`PVMMU_TEST_PLANT must be one of ${TEST_PLANTS.join(', ')}, got "${v}"`);
  return v as TestPlant;
}

export type Req = [mfn: number, index: number, lo: number, hi: number, cmd?: number];
export interface ExtOp {
  cmd: number;
  arg1?: number;
  arg2?: number;
}
export type Call =
  | { op: 'mmu_update'; reqs: Req[] }
  | { op: 'mmuext'; ops: ExtOp[] }
  | { op: 'uva'; va: number; lo: number; hi: number; flags: number };

export class XenBox {
  readonly xen: Xen;
  readonly mem32: Uint32Array;
  readonly t: Int32Array;
  readonly paging: PagingMode;

  /**
   * `testPlant` (or, when absent, PVMMU_TEST_PLANT in the environment) plants a known
   * defect in the hypervisor (XenOptions.testPlant), so that test/planted-defect.test.ts can
   * run the fuzzer and the rule tests against it unchanged and see them fail.
   */
  constructor(
    opts: { paging?: PagingMode; frames?: number; maxSlots?: number; enforce?: boolean; testPlant?: TestPlant } = {},
  ) {
    this.paging = opts.paging ?? 'pae';
    const frames = opts.frames ?? 8192;
    const maxSlots = opts.maxSlots ?? 8;
    const mem = new SharedArrayBuffer(frames * 4096);
    const transport = new SharedArrayBuffer(transportBytes(maxSlots));
    const plant = opts.testPlant ?? plantFromEnv(process.env.PVMMU_TEST_PLANT);
    this.xen = new Xen({
      paging: this.paging,
      frames,
      mem,
      transport,
      maxSlots,
      enforce: opts.enforce,
      ...(plant === undefined ? {} : { testPlant: plant }),
    });
    this.mem32 = new Uint32Array(mem);
    this.t = new Int32Array(transport);
  }

  domain(name: string, opts: { frames?: number; vcpus?: number; lowmemFrames?: number } = {}): Dom {
    const info = this.xen.createDomain({
      name,
      frames: opts.frames ?? 1024,
      vcpus: opts.vcpus ?? 1,
      lowmemFrames: opts.lowmemFrames,
    });
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

/**
 * The guest's own encoders (guest/arch/xen/hypercall.ts) need a vCPU: this one shares the
 * slot layout but "waits" by having the hypervisor serve the slot right away.
 */
class InProcessCpu {
  readonly t: Int32Array;
  readonly u32: Uint32Array;
  readonly argBase: number;
  readonly dataBase: number;
  readonly trace = null;
  readonly #xen: Xen;
  readonly #slot: number;

  constructor(box: XenBox, slot: number) {
    this.t = box.t;
    this.u32 = new Uint32Array(box.t.buffer);
    this.argBase = slotBase(slot) + S_ARGS;
    this.dataBase = slotBase(slot) + S_HEADER_WORDS;
    this.#xen = box.xen;
    this.#slot = slot;
  }

  setArg(i: number, lo: number, hi = 0): void {
    this.u32[this.argBase + 2 * i] = lo;
    this.u32[this.argBase + 2 * i + 1] = hi;
  }

  hypercall(op: number): number {
    const b = slotBase(this.#slot);
    this.t[b + S_OP] = op;
    Atomics.store(this.t, b + S_STATE, SLOT_REQUEST);
    this.#xen.serveSlot(this.#slot);
    Atomics.store(this.t, b + S_STATE, SLOT_IDLE);
    return this.t[b + S_RESULT]!;
  }
}

export class Dom {
  readonly box: XenBox;
  readonly info: DomainInfo;
  #nextFree: number;
  vcpu = 0;
  readonly #cpus: InProcessCpu[];

  constructor(box: XenBox, info: DomainInfo) {
    this.box = box;
    this.info = info;
    this.#nextFree = info.firstFreePfn;
    this.#cpus = info.slots.map((slot) => new InProcessCpu(box, slot));
  }

  get domid(): number {
    return this.info.domid;
  }

  /** This vCPU, as the guest encoders see it. */
  get #cpu(): Vcpu {
    return this.#cpus[this.vcpu]! as unknown as Vcpu;
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
    this.box.mem32[mfn * FRAME_WORDS + 2 * i] = lo >>> 0;
    this.box.mem32[mfn * FRAME_WORDS + 2 * i + 1] = hi >>> 0;
  }

  entry(mfn: number, i: number): [number, number] {
    return [this.box.mem32[mfn * FRAME_WORDS + 2 * i]!, this.box.mem32[mfn * FRAME_WORDS + 2 * i + 1]!];
  }

  /** Put a 2-word vCPU bitmap at data word `at`; returns `at`. */
  putMask(at: number, vcpus: number[]): number {
    const [m0, m1] = mask(vcpus);
    const cpu = this.#cpus[this.vcpu]!;
    cpu.u32[cpu.dataBase + at] = m0;
    cpu.u32[cpu.dataBase + at + 1] = m1;
    return at;
  }

  mmuUpdate(reqs: Req[], foreigndom = DOMID_SELF): { rc: number; done: number } {
    return mmuUpdate(this.#cpu, reqWords(reqs), reqs.length, foreigndom);
  }

  mmuext(ops: ExtOp[], foreigndom = DOMID_SELF): { rc: number; done: number } {
    return mmuextOp(this.#cpu, opWords(ops), ops.length, foreigndom);
  }

  /** update_va_mapping with raw flags (a vCPU bitmap handle, if any, already in them). */
  uva(va: number, lo: number, hi: number, flags: number): number {
    return updateVaMapping(this.#cpu, va, lo, hi, flags);
  }

  /** A raw hypercall with arbitrary argument words (for hostile-guest tests). */
  rawHypercall(op: number, args: Array<number | [lo: number, hi: number]>): number {
    const cpu = this.#cpus[this.vcpu]!;
    args.forEach((a, k) => (typeof a === 'number' ? cpu.setArg(k, a >>> 0) : cpu.setArg(k, a[0] >>> 0, a[1] >>> 0)));
    return cpu.hypercall(op);
  }

  /** A multicall of the given calls; returns each entry's result. */
  multicall(calls: Call[]): number[] {
    const batch = new MulticallBatch(this.#cpu);
    for (const c of calls) {
      if (c.op === 'mmu_update') batch.mmuUpdate(reqWords(c.reqs), c.reqs.length);
      else if (c.op === 'mmuext') batch.mmuextOp(opWords(c.ops), c.ops.length);
      else batch.updateVaMapping(c.va, c.lo, c.hi, c.flags);
    }
    const r = batch.flush();
    return Array.from(r.results);
  }

  /** Linux's way to make a frame a page table: remap its direct-map alias read-only. */
  makeReadOnly(pfn: number): number {
    return this.uva(
      this.directVa(pfn),
      pteLo(this.info.p2m[pfn]!, _PAGE_PRESENT | _PAGE_ACCESSED),
      pteHi(this.info.p2m[pfn]!),
      0,
    );
  }

  pin(level: number, mfn: number): number {
    return this.mmuext([{ cmd: MMUEXT_PIN_L1_TABLE + level - 1, arg1: mfn }]).rc;
  }
}

function mask(vcpus: number[]): [number, number] {
  let m0 = 0,
    m1 = 0;
  for (const v of vcpus)
    if (v < 32) m0 |= 1 << v;
    else m1 |= 1 << (v - 32);
  return [m0 >>> 0, m1 >>> 0];
}

function reqWords(reqs: Req[]): Uint32Array {
  const w = new Uint32Array(reqs.length * MMU_REQ_WORDS);
  reqs.forEach(([mfn, i, lo, hi, cmd], k) => {
    w[4 * k] = entryMaddrLo(mfn, i, cmd ?? 0);
    w[4 * k + 1] = entryMaddrHi(mfn);
    w[4 * k + 2] = lo >>> 0;
    w[4 * k + 3] = hi >>> 0;
  });
  return w;
}

function opWords(ops: ExtOp[]): Uint32Array {
  const w = new Uint32Array(ops.length * MMUEXT_OP_WORDS);
  ops.forEach((op, k) => {
    const a1 = op.arg1 ?? 0;
    w[6 * k] = op.cmd;
    w[6 * k + 2] = a1 % 2 ** 32;
    w[6 * k + 3] = Math.floor(a1 / 2 ** 32);
    w[6 * k + 4] = op.arg2 ?? 0;
  });
  return w;
}
