/*
 * Rule tests written to kill the mutants of hypervisor/audit.ts that survived `npm run
 * mutate` (see MUTANTS.md). The auditor's job is to notice a frame table or a page table
 * that disagrees with the rules, which the emulator itself never produces: so most tests
 * here build a sound machine through hypercalls, corrupt one thing in-process (a count, a
 * type, an owner, an entry), and assert the audit's verdict and its whole problem report.
 */
import { describe, expect, it } from 'vitest';
import {
  DOMID_INVALID,
  ENOSYS,
  __HYPERVISOR_mmu_update,
  __HYPERVISOR_mmuext_op,
  __HYPERVISOR_update_va_mapping,
  FRAME_WORDS,
  MMUEXT_UNPIN_TABLE,
  PGT_l1_page_table,
  PGT_validated,
  PGT_writable_page,
  type PagingMode,
} from '../../src/abi/xen.js';
import {
  PAE_XEN_L2_FIRST,
  S_HEADER_WORDS,
  S_ARGS,
  S_OP,
  S_RESULT,
  XEN_L4_FIRST,
  XEN_L4_LAST,
  slotBase,
  transportBytes,
  vaIndex,
} from '../../src/abi/layout.js';
import { pteHi, pteLo, pteMfn } from '../../src/abi/pte.js';
import type { AuditProblem } from '../../src/abi/control.js';
import { audit } from '../../hypervisor/audit.js';
import { createDomain } from '../../hypervisor/domain.js';
import { Hv } from '../../hypervisor/hv.js';
import { type CallCtx, doMmuUpdate, doMmuextOp, doUpdateVaMapping } from '../../hypervisor/mm.js';
import { Dom, type XenBox } from '../helpers/xenbox.js';
import { A, P, RW, VMALLOC, hx, tableWith } from './helpers.js';

const FRAMES = 4096;

/**
 * XenBox's machine with the hypervisor state in reach: the same Hv, domain builder and
 * hypercall handlers that Xen (hypervisor/xen.ts) serves slots with, minus the control
 * port, so a test can corrupt the frame table the way the auditor exists to notice.
 */
class AuditBox {
  readonly hv: Hv;
  readonly mem32: Uint32Array;
  readonly t: Int32Array;
  readonly paging: PagingMode;
  /** What Dom's in-process vCPU calls to have its request served. */
  readonly xen = { serveSlot: (slot: number) => this.#serve(slot) };

  constructor(opts: { paging?: PagingMode; enforce?: boolean } = {}) {
    this.paging = opts.paging ?? 'pae';
    const mem = new SharedArrayBuffer(FRAMES * 4096);
    const transport = new SharedArrayBuffer(transportBytes(4));
    this.hv = new Hv({ paging: this.paging, frames: FRAMES, mem, transport, maxSlots: 4, enforce: opts.enforce });
    this.mem32 = new Uint32Array(mem);
    this.t = new Int32Array(transport);
  }

  domain(name: string): Dom {
    const info = createDomain(this.hv, { name, frames: 512, vcpus: 1 });
    return new Dom(this as unknown as XenBox, info);
  }

  log(): string[] {
    return this.hv.console.drain().map((r) => r.line);
  }

  audit() {
    return audit(this.hv);
  }

  #serve(slot: number): void {
    const hv = this.hv;
    const b = slotBase(slot);
    const d = hv.domains.get(hv.slotDomain[slot]!)!;
    const c: CallCtx = { d, slot, vcpu: d.vcpus[hv.slotVcpu[slot]!]!, data: b + S_HEADER_WORDS };
    const op = this.t[b + S_OP]!;
    const args = b + S_ARGS;
    let rc = -ENOSYS;
    if (op === __HYPERVISOR_mmu_update) rc = doMmuUpdate(hv, c, args);
    else if (op === __HYPERVISOR_mmuext_op) rc = doMmuextOp(hv, c, args);
    else if (op === __HYPERVISOR_update_va_mapping) rc = doUpdateVaMapping(hv, c, args);
    this.t[b + S_RESULT] = rc;
  }
}

type Box = AuditBox;

/** tableWith (helpers.ts) on this box. */
function table(box: Box, a: Dom, entries: Array<[number, number, number]> = []) {
  return tableWith(box as unknown as XenBox, a, entries);
}

/** An empty L1 of `a`, pinned. */
function pinnedL1(box: Box, a: Dom): number {
  const t = table(box, a);
  expect(a.pin(1, t.mfn)).toBe(0);
  return t.mfn;
}

/** pae: the kernel's L2 (the one L3 slot 3 points at, flagged PGT_pae_xen_l2). */
function kernelL2(box: Box, a: Dom): number {
  const root = box.hv.domains.get(a.domid)!.vcpus[0]!.cr3;
  return pteMfn(box.mem32[root * FRAME_WORDS + 6]!, box.mem32[root * FRAME_WORDS + 7]!);
}

/** The audit's verdict when it finds exactly `problems`. */
function failed(problems: AuditProblem[], isolationViolations = 0) {
  return { ok: false, framesChecked: FRAMES, problems, isolationViolations };
}
const clean = { ok: true, framesChecked: FRAMES, problems: [], isolationViolations: 0 };

describe('the audit of a sound machine', () => {
  it('a machine built by the domain builder and hypercalls alone audits clean', () => {
    const box = new AuditBox();
    const a = box.domain('A');
    box.domain('B');
    pinnedL1(box, a);
    expect(box.audit()).toEqual(clean);
  });
});

describe('the audit: counts that disagree with their holders', () => {
  it('a general count one too high: "general count N but M holders" for that frame alone', () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const f = a.alloc(); // allocated, and mapped by the direct map: two holders
    box.hv.ft.count[f.mfn]!++;
    expect(box.audit()).toEqual(failed([{ mfn: f.mfn, what: 'general count 3 but 2 holders' }]));
  });

  it('a frame that lost its allocation reference but kept the count: the allocation is a holder only while set', () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const f = a.alloc();
    box.hv.ft.allocated[f.mfn] = 0;
    expect(box.audit()).toEqual(failed([{ mfn: f.mfn, what: 'general count 2 but 1 holders' }]));
  });

  it('the report stops at 200 problems, the first 200 in frame order', () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const ft = box.hv.ft;
    const mfns = a.info.p2m.slice(0, 250);
    const want = mfns.map((mfn) => ({ mfn, what: `general count ${ft.count[mfn]! + 1} but ${ft.count[mfn]} holders` }));
    for (const mfn of mfns) ft.count[mfn]!++;
    expect([...mfns].sort((x, y) => x - y)).toEqual(mfns);
    expect(box.audit()).toEqual(failed(want.slice(0, 200)));
  });

  it('a type count one too high: "type count N (type) but M type holders"', () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const l1 = pinnedL1(box, a);
    box.hv.ft.typeCount[l1]!++;
    expect(box.audit()).toEqual(failed([{ mfn: l1, what: 'type count 2 (l1_page_table) but 1 type holders' }]));
  });

  it('a linear count with no linear entry behind it: "linear count N but M linear uses"', () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const f = a.alloc();
    box.hv.ft.linear[f.mfn] = 1;
    expect(box.audit()).toEqual(failed([{ mfn: f.mfn, what: 'linear count 1 but 0 linear uses' }]));
  });

  it('a free frame must hold no count and no type count, each checked on its own', () => {
    const box = new AuditBox();
    box.domain('A');
    const ft = box.hv.ft;
    const [c, tc] = [FRAMES - 1, FRAMES - 2];
    expect([ft.owner[c], ft.owner[tc]]).toEqual([DOMID_INVALID, DOMID_INVALID]);
    ft.count[c] = 1;
    ft.typeCount[tc] = 2;
    expect(box.audit()).toEqual(
      failed([
        { mfn: tc, what: 'free frame has count 0 typecount 2' },
        { mfn: c, what: 'free frame has count 1 typecount 0' },
      ]),
    );
  });

  it('a frame owned by a domain that does not exist is reported, even with sound counts', () => {
    const box = new AuditBox();
    box.domain('A');
    box.hv.ft.owner[FRAMES - 1] = 77;
    expect(box.audit()).toEqual(failed([{ mfn: FRAMES - 1, what: 'owned by d77, which does not exist' }]));
  });
});

describe('the audit: types that disagree with their holders', () => {
  it('a table hooked into an L2 whose type was overwritten: "type T but holders want W" (the counts agree)', () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const l1 = table(box, a).mfn;
    const l2 = kernelL2(box, a);
    const slot = vaIndex(VMALLOC, 2);
    expect(a.mmuUpdate([[l2, slot, pteLo(l1, P | RW | A), pteHi(l1)]]).rc).toBe(0);
    expect(box.audit()).toEqual(clean);
    const ft = box.hv.ft;
    ft.typeHi[l1] = (PGT_writable_page | PGT_validated) >>> 0;
    expect(box.audit()).toEqual(
      failed([
        {
          mfn: l1,
          what: `type ${hx((PGT_writable_page | PGT_validated) >>> 0)} but holders want ${hx(PGT_l1_page_table)}`,
        },
      ]),
    );
  });

  it('a data page whose type was wiped to none while its RW mapping holds it: a type disagreement, not a table mapped writable, and its contents are no entries', () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const b = box.domain('B');
    const f = a.alloc();
    a.poke(f.mfn, 0, pteLo(b.info.p2m[20]!, P), pteHi(b.info.p2m[20]!)); // data that looks like a PTE
    const ft = box.hv.ft;
    expect(ft.typeHi[f.mfn]).toBe((PGT_writable_page | PGT_validated) >>> 0);
    ft.typeHi[f.mfn] = PGT_validated;
    expect(box.audit()).toEqual(
      failed([{ mfn: f.mfn, what: `type ${hx(PGT_validated)} but holders want ${hx(PGT_writable_page)}` }]),
    );
  });

  it('a pinned table that lost PGT_validated: "not validated", and its entries hold nothing', () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const f = a.alloc();
    const l1 = table(box, a, [[9, pteLo(f.mfn, P | A), pteHi(f.mfn)]]).mfn;
    expect(a.pin(1, l1)).toBe(0);
    const ft = box.hv.ft;
    ft.typeHi[l1] = (ft.typeHi[l1]! & ~PGT_validated) >>> 0;
    expect(box.audit()).toEqual(
      failed([
        { mfn: f.mfn, what: 'general count 3 but 2 holders' },
        { mfn: l1, what: 'type count 1 but not validated' },
      ]),
    );
  });
});
describe('the audit: isolation (what a validated table maps)', () => {
  it('an entry past machine memory: "slot i maps mfn N beyond machine memory", one isolation violation', () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const l1 = pinnedL1(box, a);
    a.poke(l1, 7, pteLo(FRAMES, P), pteHi(FRAMES)); // the first mfn past the end
    expect(box.audit()).toEqual(failed([{ mfn: l1, what: `slot 7 maps mfn ${FRAMES} beyond machine memory` }], 1));
  });

  it("entries mapping another domain's, Xen's and a free frame: each named with its owner, each an isolation violation", () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const b = box.domain('B');
    const l1 = pinnedL1(box, a);
    const theirs = b.info.p2m[20]!;
    const free = FRAMES - 1;
    expect(box.hv.ft.owner[free]).toBe(DOMID_INVALID);
    a.poke(l1, 1, pteLo(theirs, P), pteHi(theirs));
    a.poke(l1, 2, pteLo(0, P), 0); // mfn 0 is Xen's
    a.poke(l1, 3, pteLo(free, P), pteHi(free));
    expect(box.audit()).toEqual(
      failed(
        [
          { mfn: l1, what: `slot 1 of d${a.domid}'s L1 maps mfn ${hx(theirs)} owned by d${b.domid}` },
          { mfn: l1, what: `slot 2 of d${a.domid}'s L1 maps mfn 0 owned by Xen` },
          { mfn: l1, what: `slot 3 of d${a.domid}'s L1 maps mfn ${hx(free)} owned by nobody (free)` },
          // B's frame gained a holder its count does not show; Xen's frames are not counted.
          { mfn: theirs, what: 'general count 2 but 3 holders' },
        ],
        3,
      ),
    );
  });
});

describe('the audit: a frame held as two types names both holders', () => {
  it('an L2 slot pointing at the root L3: "held as l1_page_table by slot i of L2 but also as l3_page_table"', () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const l2 = kernelL2(box, a);
    const root = box.hv.domains.get(a.domid)!.vcpus[0]!.cr3;
    const slot = vaIndex(VMALLOC, 2);
    a.poke(l2, slot, pteLo(root, P | A), pteHi(root));
    expect(box.audit()).toEqual(
      failed([
        { mfn: root, what: `held as l1_page_table by slot ${slot} of ${hx(l2)} but also as l3_page_table` },
        // Allocation, pin, base pointer and the direct map's read-only entry; the new slot is one more.
        { mfn: root, what: 'general count 4 but 5 holders' },
        { mfn: root, what: 'type count 2 (l3_page_table) but 3 type holders' },
      ]),
    );
  });

  it('a base pointer and a linear entry on a pinned L2: "by d1v0\'s baseptr", "by linear entry i of T"', () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const target = table(box, a).mfn;
    expect(a.pin(2, target)).toBe(0);
    const container = table(box, a).mfn;
    expect(a.pin(2, container)).toBe(0);
    expect(a.mmuUpdate([[container, 5, pteLo(target, P | A), pteHi(target)]]).rc).toBe(0);
    expect(box.audit()).toEqual(clean);
    box.hv.domains.get(a.domid)!.vcpus[0]!.userCr3 = target; // never validated as an L3
    expect(box.audit()).toEqual(
      failed([
        { mfn: target, what: `held as l3_page_table by d${a.domid}v0's baseptr but also as l2_page_table` },
        { mfn: target, what: `held as l2_page_table by linear entry 5 of ${hx(container)} but also as l3_page_table` },
        { mfn: target, what: 'general count 4 but 5 holders' },
        { mfn: target, what: 'type count 2 (l2_page_table) but 3 type holders' },
      ]),
    );
  });

  it('an L1 mapping a pinned L1 writable: "mapped writable" and "held as writable_page by L1 T slot i"', () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const pinned = pinnedL1(box, a);
    const mapper = pinnedL1(box, a);
    a.poke(mapper, 4, pteLo(pinned, P | RW | A), pteHi(pinned));
    expect(box.audit()).toEqual(
      failed(
        [
          { mfn: pinned, what: `page-table frame mapped writable by slot 4 of L1 ${hx(mapper)}` },
          { mfn: pinned, what: `held as writable_page by L1 ${hx(mapper)} slot 4 but also as l1_page_table` },
          { mfn: pinned, what: 'general count 3 but 4 holders' },
          { mfn: pinned, what: 'type count 1 (l1_page_table) but 2 type holders' },
        ],
        1,
      ),
    );
  });
  it('x86_64: an L1 mapping the root L4 writable is a page-table frame mapped writable too', () => {
    const box = new AuditBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const root = box.hv.domains.get(a.domid)!.vcpus[0]!.cr3;
    const mapper = pinnedL1(box, a);
    a.poke(mapper, 4, pteLo(root, P | RW | A), pteHi(root));
    expect(box.audit()).toEqual(
      failed(
        [
          { mfn: root, what: `page-table frame mapped writable by slot 4 of L1 ${hx(mapper)}` },
          { mfn: root, what: `held as writable_page by L1 ${hx(mapper)} slot 4 but also as l4_page_table` },
          { mfn: root, what: 'general count 4 but 5 holders' },
          { mfn: root, what: 'type count 2 (l4_page_table) but 3 type holders' },
        ],
        1,
      ),
    );
  });
});

describe("the audit reads a table's guest entries only", () => {
  it('pae: what lies past the 4 entries of an L3 is no entry', () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const root = box.hv.domains.get(a.domid)!.vcpus[0]!.cr3;
    const f = a.alloc();
    a.poke(root, 4, pteLo(f.mfn, P | A), pteHi(f.mfn));
    a.poke(root, 511, pteLo(0, P), 0);
    expect(box.audit()).toEqual(clean);
  });

  it("pae: Xen's slots of the kernel L2 (PAE_XEN_L2_FIRST..511), mapping Xen's memory, are no guest entries", () => {
    const box = new AuditBox();
    const a = box.domain('A');
    const l2 = kernelL2(box, a);
    a.poke(l2, PAE_XEN_L2_FIRST, pteLo(0, P), 0);
    a.poke(l2, 511, pteLo(0, P), 0);
    expect(box.audit()).toEqual(clean);
  });

  it("x86_64: Xen's L4 slots (XEN_L4_FIRST..XEN_L4_LAST), mapping Xen's memory, are no guest entries", () => {
    const box = new AuditBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const root = box.hv.domains.get(a.domid)!.vcpus[0]!.cr3;
    a.poke(root, XEN_L4_FIRST, pteLo(0, P), 0);
    a.poke(root, XEN_L4_LAST, pteLo(0, P), 0);
    expect(box.audit()).toEqual(clean);
  });
});

describe('the audit without the PGT_writable_page rule (enforce: false)', () => {
  it('RW mappings hold no type; a former table (type count 0) mapped RW is no page table mapped writable', () => {
    const box = new AuditBox({ enforce: false });
    const a = box.domain('A');
    const former = pinnedL1(box, a);
    expect(a.mmuext([{ cmd: MMUEXT_UNPIN_TABLE, arg1: former }]).rc).toBe(0);
    const ft = box.hv.ft;
    expect([ft.typeHi[former]! & PGT_l1_page_table, ft.typeCount[former]]).toEqual([PGT_l1_page_table, 0]);
    const mapper = pinnedL1(box, a);
    expect(a.mmuUpdate([[mapper, 4, pteLo(former, P | RW | A), pteHi(former)]]).rc).toBe(0);
    expect(box.audit()).toEqual(clean);
  });
});
