/*
 * Xen's PV page-table rules, one test per rule, each with the errno and the log line.
 * Every "refused" test would pass an implementation that skips that rule's check only
 * if it also returned the same errno and printed the same line -- it cannot.
 */
import { describe, expect, it } from 'vitest';
import {
  DOMID_SELF,
  EACCES,
  EBUSY,
  EFAULT,
  EINVAL,
  ENOSYS,
  EOPNOTSUPP,
  EPERM,
  ESRCH,
  MMUEXT_CLEAR_PAGE,
  MMUEXT_FLUSH_CACHE,
  MMUEXT_MARK_SUPER,
  MMUEXT_NEW_BASEPTR,
  MMUEXT_PIN_L1_TABLE,
  MMUEXT_PIN_L2_TABLE,
  MMUEXT_PIN_L4_TABLE,
  MMUEXT_TLB_FLUSH_ALL,
  MMUEXT_UNPIN_TABLE,
  MMUEXT_SET_LDT,
  MMU_MACHPHYS_UPDATE,
  MMU_PT_UPDATE_PRESERVE_AD,
  UVMF_ALL,
  UVMF_INVLPG,
  UVMF_TLB_FLUSH,
  _PAGE_ACCESSED,
  _PAGE_DIRTY,
  _PAGE_PCD,
  _PAGE_PRESENT,
  _PAGE_PSE,
  _PAGE_RW,
  _PAGE_USER,
  __HYPERVISOR_mmu_update,
} from '../../src/abi/xen.js';
import { RS_FLUSH_PENDING, S_RUNSTATE, slotBase, vaIndex, layoutFor, PAE_XEN_L2_FIRST } from '../../src/abi/layout.js';
import { pteHi, pteLo, pteMfn } from '../../src/abi/pte.js';
import { type Dom, XenBox } from '../helpers/xenbox.js';

const P = _PAGE_PRESENT,
  RW = _PAGE_RW,
  A = _PAGE_ACCESSED,
  D = _PAGE_DIRTY;
const hx = (n: number) => n.toString(16);

function kernelL2(dom: Dom): number {
  const root = dom.info.p2m[dom.info.ptBasePfn]!;
  const [lo, hi] = dom.entry(root, 3);
  return pteMfn(lo, hi);
}

/** A fresh L1, made read-only and pinned, hooked into the kernel L2 at `va`. */
function hookL1(dom: Dom, va: number): number {
  const l1 = dom.alloc();
  expect(dom.makeReadOnly(l1.pfn)).toBe(0);
  expect(dom.pin(1, l1.mfn)).toBe(0);
  const l2 = kernelL2(dom);
  expect(dom.mmuUpdate([[l2, vaIndex(va, 2), pteLo(l1.mfn, P | RW | A), pteHi(l1.mfn)]]).rc).toBe(0);
  return l1.mfn;
}

const VMALLOC = 0xf0000000;

describe('domain builder', () => {
  for (const paging of ['pae', 'x86_64'] as const) {
    it(`${paging}: leaves a pinned, installed, audited tree and destroy frees everything`, () => {
      const box = new XenBox({ paging, frames: 4096 });
      const free0 = box.xen.freeFrames();
      const a = box.domain('A', { frames: 1024, vcpus: 2 });
      const root = a.info.p2m[a.info.ptBasePfn]!;
      expect(box.xen.baseptr(a.domid, 0)).toBe(root);
      expect(box.xen.baseptr(a.domid, 1)).toBe(root);
      const fi = box.xen.frameInfo(root)!;
      // Pinned (0x08000000) + validated (0x04000000), type count: pin + 2 baseptrs.
      expect(fi.typeHi >>> 29).toBe(paging === 'pae' ? 3 : 4);
      expect(fi.typeHi & 0x0c000000).toBe(0x0c000000);
      expect(fi.typeCount).toBe(3);
      expect(box.audit()).toMatchObject({ ok: true, isolationViolations: 0 });
      // Every page-table frame is mapped read-only in the direct map.
      for (let pfn = a.info.ptFirstPfn; pfn < a.info.ptFirstPfn + a.info.nrPtFrames; pfn++) {
        const t = box.xen.frameInfo(a.info.p2m[pfn]!)!;
        expect(t.typeHi >>> 29, `pfn ${pfn}`).toBeGreaterThanOrEqual(1);
      }
      expect(box.xen.freeFrames()).toBe(free0 - 1024);
      box.xen.destroyDomain(a.domid);
      expect(box.xen.freeFrames()).toBe(free0);
      expect(box.audit().ok).toBe(true);
    });
  }

  it('refuses bad configurations with what is accepted', () => {
    const box = new XenBox({ frames: 2048 });
    expect(() => box.domain('A', { frames: 100000 })).toThrow(/wants 100000 frames but only \d+ are free/);
    expect(() => box.domain('A', { vcpus: 0 })).toThrow(/vcpus must be an integer in 1\.\.64/);
    expect(() => box.domain('', {})).toThrow(/name must be a string/);
    box.domain('A', { frames: 256 });
    expect(() => box.domain('A', { frames: 256 })).toThrow(/already exists/);
    expect(box.audit().ok).toBe(true);
  });
});

describe('PGT_writable_page vs page-table types (the rule that catches the XFS alias)', () => {
  it("refuses to pin an L1 that still has a writable mapping, with Xen's log lines", () => {
    const box = new XenBox();
    const a = box.domain('A');
    const f = a.alloc();
    box.log();
    const r = a.mmuext([{ cmd: MMUEXT_PIN_L1_TABLE, arg1: f.mfn }]);
    expect(r).toEqual({ rc: -EINVAL, done: 0 });
    const log = box.log();
    expect(log[0]).toBe(
      `(XEN) mm.c:2891:d${a.domid}v0 Bad type (saw e400000000000001 != exp 2000000000000000) for mfn ${hx(f.mfn)} (pfn ${hx(f.pfn)})`,
    );
    expect(log[1]).toMatch(
      new RegExp(`^\\(XEN\\) mm\\.c:\\d+:d${a.domid}v0 Error -22 while pinning mfn ${hx(f.mfn)}$`),
    );
    expect(box.xen.stats().byReason).toMatchObject({ bad_type: 1 });
    expect(box.audit().ok).toBe(true);
    // Remove the alias as Linux does, and the pin succeeds.
    expect(a.makeReadOnly(f.pfn)).toBe(0);
    expect(a.pin(1, f.mfn)).toBe(0);
    expect(box.xen.frameInfo(f.mfn)!.typeHi >>> 0).toBe(0x2c000000);
    expect(box.audit().ok).toBe(true);
  });

  it('refuses a writable mapping of a page table (-EBUSY) but allows a read-only one', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = hookL1(a, VMALLOC);
    box.log();
    // Map the L1 itself, writable, through itself.
    const r = a.mmuUpdate([[l1, 0, pteLo(l1, P | RW | A), pteHi(l1)]]);
    expect(r).toEqual({ rc: -EBUSY, done: 0 });
    const log = box.log().join('\n');
    expect(log).toContain('Could not get page type PGT_writable_page');
    expect(log).toMatch(
      /Error getting mfn [0-9a-f]+ \(pfn [0-9a-f]+\) from L1 entry [0-9a-f]{16} for l1e_owner d1, pg_owner d1/,
    );
    expect(a.mmuUpdate([[l1, 0, pteLo(l1, P | A), pteHi(l1)]]).rc).toBe(0);
    expect(box.audit().ok).toBe(true);
  });

  it('a frame mapped writable through a new L1 entry cannot then be pinned, and can after the entry goes', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = hookL1(a, VMALLOC);
    const victim = a.alloc();
    expect(a.makeReadOnly(victim.pfn)).toBe(0);
    // A vmap-style RW alias of the victim at VMALLOC.
    expect(a.uva(VMALLOC, pteLo(victim.mfn, P | RW | A | D), 0, 0)).toBe(0);
    expect(a.pin(1, victim.mfn)).toBe(-EINVAL);
    expect(a.uva(VMALLOC, 0, 0, UVMF_INVLPG)).toBe(0);
    expect(a.pin(1, victim.mfn)).toBe(0);
    expect(l1).toBeGreaterThan(0);
    expect(box.audit().ok).toBe(true);
  });
});

describe('pinning', () => {
  it('is atomic: a pin failing at slot N releases what slots 0..N-1 took', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const data = a.alloc();
    const t = a.alloc();
    // Slot 0: RW to a data page (takes a writable type ref); slot 1: disallowed PCD.
    a.poke(t.mfn, 0, pteLo(data.mfn, P | RW | A), pteHi(data.mfn));
    a.poke(t.mfn, 1, pteLo(data.mfn, P | _PAGE_PCD), pteHi(data.mfn));
    expect(a.makeReadOnly(t.pfn)).toBe(0);
    const before = box.xen.frameInfo(data.mfn)!;
    box.log();
    expect(a.pin(1, t.mfn)).toBe(-EINVAL);
    const log = box.log();
    expect(log).toContain(`(XEN) mm.c:868:d1v0 Bad L1 flags 10`);
    expect(log.some((l) => l.endsWith('Failure -22 in promote_l1_table: slot 0x1'))).toBe(true);
    expect(box.xen.frameInfo(data.mfn)).toEqual(before);
    expect(box.xen.frameInfo(t.mfn)!.typeCount).toBe(0);
    expect(box.audit().ok).toBe(true);
  });

  it('already pinned and not pinned are -EINVAL with their lines', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = hookL1(a, VMALLOC);
    box.log();
    expect(a.pin(1, l1)).toBe(-EINVAL);
    expect(box.log()).toContain(`(XEN) mm.c:3310:d1v0 mfn ${hx(l1)} already pinned`);
    const f = a.alloc();
    expect(a.mmuext([{ cmd: MMUEXT_UNPIN_TABLE, arg1: f.mfn }]).rc).toBe(-EINVAL);
    expect(box.log()).toContain(`(XEN) mm.c:3331:d1v0 mfn ${hx(f.mfn)} not pinned`);
    expect(box.audit().ok).toBe(true);
  });

  it("another domain's frame can be neither pinned nor mapped", () => {
    const box = new XenBox();
    const a = box.domain('A');
    const b = box.domain('B');
    const theirs = b.alloc();
    expect(a.pin(1, theirs.mfn)).toBe(-EINVAL);
    const l1 = hookL1(a, VMALLOC);
    box.log();
    expect(a.mmuUpdate([[l1, 1, pteLo(theirs.mfn, P | A), pteHi(theirs.mfn)]]).rc).toBe(-EBUSY);
    expect(box.log().join('\n')).toContain(`pg_owner d1 l1e_owner d1, but real_pg_owner d2`);
    const res = box.audit();
    expect(res.ok).toBe(true);
    expect(res.isolationViolations).toBe(0);
  });

  it('PIN_L4 from a 32-bit guest is ignored; PIN_L2 validates the L1s below', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const f = a.alloc();
    expect(a.mmuext([{ cmd: MMUEXT_PIN_L4_TABLE, arg1: f.mfn }]).rc).toBe(0);
    // Still the writable page it was (its direct-map alias holds it), not an L4.
    expect(box.xen.frameInfo(f.mfn)!.typeHi >>> 29).toBe(7);
    expect(box.xen.frameInfo(f.mfn)!.typeCount).toBe(1);
    const l2 = a.alloc();
    const l1 = a.alloc();
    a.poke(l2.mfn, 0, pteLo(l1.mfn, P | RW | A), pteHi(l1.mfn));
    expect(a.makeReadOnly(l2.pfn)).toBe(0);
    // l1 still has its RW direct-map alias: the recursive validation must refuse.
    expect(a.mmuext([{ cmd: MMUEXT_PIN_L2_TABLE, arg1: l2.mfn }]).rc).toBe(-EINVAL);
    expect(a.makeReadOnly(l1.pfn)).toBe(0);
    expect(a.mmuext([{ cmd: MMUEXT_PIN_L2_TABLE, arg1: l2.mfn }]).rc).toBe(0);
    expect(box.xen.frameInfo(l1.mfn)!.typeHi >>> 29).toBe(1);
    expect(a.mmuext([{ cmd: MMUEXT_UNPIN_TABLE, arg1: l2.mfn }]).rc).toBe(0);
    // Devalidation cascades: the L1 is no longer a table in use.
    expect(box.xen.frameInfo(l1.mfn)!.typeCount).toBe(0);
    expect(box.audit().ok).toBe(true);
  });
});

describe('flag masks and the fast path', () => {
  it('Bad L2 flags: PSE is refused (no PV superpages)', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const f = a.alloc();
    box.log();
    expect(a.mmuUpdate([[kernelL2(a), vaIndex(VMALLOC, 2), pteLo(f.mfn, P | _PAGE_PSE), 0]]).rc).toBe(-EINVAL);
    expect(box.log()).toContain('(XEN) mm.c:1118:d1v0 Bad L2 flags 80');
  });

  it('XSA-182: turning RW on is never a fast-path change', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = hookL1(a, VMALLOC);
    expect(a.mmuUpdate([[l1, 0, pteLo(l1, P | A), pteHi(l1)]]).rc).toBe(0);
    // Same address, only RW (and D) differ: must be revalidated, and refused.
    expect(a.mmuUpdate([[l1, 0, pteLo(l1, P | RW | A | D), pteHi(l1)]]).rc).toBe(-EBUSY);
    // A, D, US and G alone do take the fast path.
    expect(a.mmuUpdate([[l1, 0, pteLo(l1, P | A | D | _PAGE_USER), pteHi(l1)]]).rc).toBe(0);
    expect(box.audit().ok).toBe(true);
  });

  it('XSA-148: setting PSE on a present L2 entry is never a fast-path change', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = hookL1(a, VMALLOC);
    const l2 = kernelL2(a);
    expect(a.mmuUpdate([[l2, vaIndex(VMALLOC, 2), pteLo(l1, P | RW | A | _PAGE_PSE), pteHi(l1)]]).rc).toBe(-EINVAL);
    expect(box.audit().ok).toBe(true);
  });

  it('PRESERVE_AD keeps the old A and D bits', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = hookL1(a, VMALLOC);
    const f = a.alloc();
    expect(a.mmuUpdate([[l1, 5, pteLo(f.mfn, P | A | D), 0]]).rc).toBe(0);
    expect(a.mmuUpdate([[l1, 5, pteLo(f.mfn, P), 0, MMU_PT_UPDATE_PRESERVE_AD]]).rc).toBe(0);
    expect(a.entry(l1, 5)[0] & (A | D)).toBe(A | D);
  });
});

describe('linear page tables', () => {
  it('refuses a writable linear entry and allows a read-only self-map (x86_64)', () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const root = a.info.p2m[a.info.ptBasePfn]!;
    box.log();
    expect(a.mmuUpdate([[root, 5, pteLo(root, P | RW | A), pteHi(root)]]).rc).toBe(-EINVAL);
    expect(box.log().join('\n')).toContain('Attempt to create linear p.t. with write perms');
    expect(a.mmuUpdate([[root, 5, pteLo(root, P | A), pteHi(root)]]).rc).toBe(0);
    expect(box.audit().ok).toBe(true);
    expect(a.mmuUpdate([[root, 5, 0, 0]]).rc).toBe(0);
    expect(box.audit().ok).toBe(true);
  });

  it('XSA-240: a linear chain is at most one step long', () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const mk = () => {
      const t = a.alloc();
      expect(a.makeReadOnly(t.pfn)).toBe(0);
      expect(a.pin(2, t.mfn)).toBe(0);
      return t.mfn;
    };
    const x = mk(),
      y = mk(),
      z = mk();
    expect(a.mmuUpdate([[x, 0, pteLo(y, P | A), pteHi(y)]]).rc).toBe(0); // x -> y
    expect(box.audit().ok).toBe(true);
    // y is a linear target, so it may not contain linear entries: y -> z refused.
    expect(a.mmuUpdate([[y, 0, pteLo(z, P | A), pteHi(z)]]).rc).toBe(-EINVAL);
    // x contains a linear entry, so it may not become a target: z -> x refused.
    expect(a.mmuUpdate([[z, 0, pteLo(x, P | A), pteHi(x)]]).rc).toBe(-EINVAL);
    expect(a.mmuUpdate([[x, 0, 0, 0]]).rc).toBe(0);
    expect(a.mmuUpdate([[y, 0, pteLo(z, P | A), pteHi(z)]]).rc).toBe(0);
    expect(box.audit().ok).toBe(true);
  });

  it('XSA-185: no linear entries at a pae L3', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const root = a.info.p2m[a.info.ptBasePfn]!;
    expect(a.mmuUpdate([[root, 0, pteLo(root, P), pteHi(root)]]).rc).toBe(-EINVAL);
  });
});

describe('Xen-reserved slots', () => {
  it("x86_64: L4 slots 256..271 are Xen's", () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const root = a.info.p2m[a.info.ptBasePfn]!;
    const t = a.alloc();
    expect(a.makeReadOnly(t.pfn)).toBe(0);
    box.log();
    expect(a.mmuUpdate([[root, 256, pteLo(t.mfn, P | A), 0]]).rc).toBe(-EINVAL);
    expect(box.log()).toContain('(XEN) mm.c:2245:d1v0 L4 update in Xen-private area, slot 0x100');
    expect(a.mmuUpdate([[root, 272 + 10, pteLo(t.mfn, P | A), 0]]).rc).toBe(0);
    expect(box.audit().ok).toBe(true);
  });

  it("pae: Xen's part of the slot-3 L2 is -EPERM, L3 slot 3 is immutable, and that L2 cannot be shared", () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l2 = kernelL2(a);
    const root = a.info.p2m[a.info.ptBasePfn]!;
    expect(a.mmuUpdate([[l2, PAE_XEN_L2_FIRST, 0, 0]]).rc).toBe(-EPERM);
    expect(a.mmuUpdate([[root, 3, 0, 0]]).rc).toBe(-EINVAL);
    // A second L3 using the same L2 in slot 0 (as a plain L2) and slot 3.
    const l3 = a.alloc();
    a.poke(l3.mfn, 0, pteLo(l2, P), pteHi(l2));
    a.poke(l3.mfn, 3, pteLo(l2, P), pteHi(l2));
    expect(a.makeReadOnly(l3.pfn)).toBe(0);
    box.log();
    expect(a.pin(3, l3.mfn)).toBe(-EINVAL);
    expect(box.log().join('\n')).toMatch(/Bad type \(saw 46000000000000\d\d != exp 4000000000000000\)/);
    expect(box.audit().ok).toBe(true);
  });
});

describe('update_va_mapping', () => {
  it('needs a present L2 and a validated L1; an error does no flush (XSA-279)', () => {
    const box = new XenBox();
    const a = box.domain('A', { vcpus: 2 });
    const f = a.alloc();
    const other = slotBase(a.info.slots[1]!) + S_RUNSTATE;
    Atomics.store(box.t, other, 0);
    expect(a.uva(VMALLOC, pteLo(f.mfn, P | A), 0, UVMF_TLB_FLUSH | UVMF_ALL)).toBe(-EINVAL);
    expect(Atomics.load(box.t, other) & RS_FLUSH_PENDING).toBe(0);
    hookL1(a, VMALLOC);
    Atomics.store(box.t, other, 0);
    expect(a.uva(VMALLOC, pteLo(f.mfn, P | A), 0, UVMF_TLB_FLUSH | UVMF_ALL)).toBe(0);
    expect(Atomics.load(box.t, other) & RS_FLUSH_PENDING).toBe(RS_FLUSH_PENDING);
    // Non-canonical in x86_64 is -EINVAL.
    const box64 = new XenBox({ paging: 'x86_64' });
    const b = box64.domain('B');
    // 0x0000_9000_0000_0000 has bit 47 set without the sign extension.
    expect(b.rawHypercall(14, [[0, 0x00009000], [0, 0], 0])).toBe(-EINVAL);
    expect(box64.log().join('\n')).not.toContain('Could not find L1');
    // In the Xen hole (pae): no guest L1 maps it.
    expect(a.uva(layoutFor('pae').hypervisorVirtStart, 0, 0, 0)).toBe(-EINVAL);
  });

  it('a vCPU bitmap flush reaches only the named vCPUs', () => {
    const box = new XenBox();
    const a = box.domain('A', { vcpus: 3 });
    hookL1(a, VMALLOC);
    const rs = (v: number) => slotBase(a.info.slots[v]!) + S_RUNSTATE;
    for (let v = 0; v < 3; v++) Atomics.store(box.t, rs(v), 0);
    a.putMask(100, [2]);
    expect(a.uva(VMALLOC, 0, 0, UVMF_INVLPG | (100 * 4))).toBe(0);
    expect(Atomics.load(box.t, rs(1)) & RS_FLUSH_PENDING).toBe(0);
    expect(Atomics.load(box.t, rs(2)) & RS_FLUSH_PENDING).toBe(RS_FLUSH_PENDING);
    expect(a.uva(VMALLOC, 0, 0, UVMF_INVLPG | (20000 * 4))).toBe(-EFAULT);
  });
});

describe('TLB flushes the hypervisor owes', () => {
  it('an L2 write flushes every vCPU of the domain (XSA-286); an L1 write does not', () => {
    const box = new XenBox();
    const a = box.domain('A', { vcpus: 2 });
    const l1 = hookL1(a, VMALLOC);
    const s0 = box.xen.stats().shootdowns;
    const f = a.alloc();
    expect(a.mmuUpdate([[l1, 3, pteLo(f.mfn, P | A), 0]]).rc).toBe(0);
    expect(box.xen.stats().shootdowns).toBe(s0);
    expect(a.mmuUpdate([[kernelL2(a), vaIndex(VMALLOC, 2), 0, 0]]).rc).toBe(0);
    expect(box.xen.stats().shootdowns).toBe(s0 + 1);
  });

  it('a type change flushes only vCPUs that have not flushed since the type count fell to 0', () => {
    const box = new XenBox();
    const a = box.domain('A', { vcpus: 2 });
    hookL1(a, VMALLOC);
    const f = a.alloc();
    const rs1 = slotBase(a.info.slots[1]!) + S_RUNSTATE;
    // Drop the RW direct-map alias without flushing anyone: vCPU 1 may hold it.
    expect(a.makeReadOnly(f.pfn)).toBe(0);
    Atomics.store(box.t, rs1, 0);
    expect(a.pin(1, f.mfn)).toBe(0);
    expect(Atomics.load(box.t, rs1) & RS_FLUSH_PENDING).toBe(RS_FLUSH_PENDING);
    // Now a frame whose alias went away *before* a full flush: no flush needed.
    const g = a.alloc();
    expect(a.makeReadOnly(g.pfn)).toBe(0);
    expect(a.mmuext([{ cmd: MMUEXT_TLB_FLUSH_ALL }]).rc).toBe(0);
    Atomics.store(box.t, rs1, 0);
    expect(a.pin(1, g.mfn)).toBe(0);
    expect(Atomics.load(box.t, rs1) & RS_FLUSH_PENDING).toBe(0);
  });
});

describe('the other mmuext commands and hostile arguments', () => {
  it('answers as Xen does', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const b = box.domain('B');
    expect(a.mmuext([{ cmd: MMUEXT_MARK_SUPER, arg1: 1 }]).rc).toBe(-EOPNOTSUPP);
    expect(a.mmuext([{ cmd: MMUEXT_FLUSH_CACHE }]).rc).toBe(-EACCES);
    expect(a.mmuext([{ cmd: 14 }]).rc).toBe(-ENOSYS);
    expect(a.mmuext([{ cmd: 99 }]).rc).toBe(-ENOSYS);
    expect(a.mmuext([{ cmd: MMUEXT_SET_LDT, arg1: 0x1001, arg2: 1 }]).rc).toBe(-EINVAL);
    expect(a.mmuext([{ cmd: MMUEXT_SET_LDT, arg1: 0x1000, arg2: 9000 }]).rc).toBe(-EINVAL);
    expect(a.mmuext([{ cmd: MMUEXT_SET_LDT, arg1: 0x1000, arg2: 16 }]).rc).toBe(0);
    expect(a.mmuext([{ cmd: MMUEXT_TLB_FLUSH_ALL }], b.domid).rc).toBe(-EPERM);
    expect(a.mmuext([{ cmd: MMUEXT_TLB_FLUSH_ALL }], 0x1234).rc).toBe(-ESRCH);
    expect(a.mmuUpdate([[a.alloc().mfn, 0, 0, 0, 5]]).rc).toBe(-ENOSYS);
    expect(a.rawHypercall(77, [])).toBe(-ENOSYS);
    expect(a.rawHypercall(__HYPERVISOR_mmu_update, [16000, 100, 0xffffffff, DOMID_SELF])).toBe(-EFAULT);
    expect(a.rawHypercall(__HYPERVISOR_mmu_update, [0, 0xfffffff, 0xffffffff, DOMID_SELF])).toBe(-EFAULT);
    // A root that is not a valid L3 cannot become the base pointer.
    const f = a.alloc();
    expect(a.mmuext([{ cmd: MMUEXT_NEW_BASEPTR, arg1: f.mfn }]).rc).toBe(-EINVAL);
    expect(box.audit().ok).toBe(true);
  });

  it('CLEAR_PAGE needs a frame that can be writable; MACHPHYS needs ownership', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const b = box.domain('B');
    const l1 = hookL1(a, VMALLOC);
    expect(a.mmuext([{ cmd: MMUEXT_CLEAR_PAGE, arg1: l1 }]).rc).toBe(-EINVAL);
    const f = a.alloc();
    a.poke(f.mfn, 7, 0xdead);
    expect(a.mmuext([{ cmd: MMUEXT_CLEAR_PAGE, arg1: f.mfn }]).rc).toBe(0);
    expect(a.entry(f.mfn, 7)[0]).toBe(0);
    expect(a.mmuUpdate([[f.mfn, 0, 1234, 0, MMU_MACHPHYS_UPDATE]]).rc).toBe(0);
    expect(box.xen.frameInfo(f.mfn)!.pfn).toBe(1234);
    expect(a.mmuUpdate([[b.alloc().mfn, 0, 1, 0, MMU_MACHPHYS_UPDATE]]).rc).toBe(-EINVAL);
    expect(box.audit().ok).toBe(true);
  });

  it('batches stop at the first error with *pdone; multicall entries do not stop the batch', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = hookL1(a, VMALLOC);
    const f = a.alloc();
    const r = a.mmuUpdate([
      [l1, 0, pteLo(f.mfn, P | A), 0],
      [l1, 1, pteLo(f.mfn, P | _PAGE_PCD), 0],
      [l1, 2, pteLo(f.mfn, P | A), 0],
    ]);
    expect(r).toEqual({ rc: -EINVAL, done: 1 });
    expect(a.entry(l1, 2)[0]).toBe(0);
    const res = a.multicall([
      { op: 'mmu_update', reqs: [[l1, 1, pteLo(f.mfn, P | _PAGE_PCD), 0]] },
      { op: 'mmu_update', reqs: [[l1, 2, pteLo(f.mfn, P | A), 0]] },
      { op: 'mmuext', ops: [{ cmd: MMUEXT_PIN_L1_TABLE, arg1: l1 }] },
    ]);
    expect(res).toEqual([-EINVAL, 0, -EINVAL]);
    expect(a.entry(l1, 2)[0]).toBe(pteLo(f.mfn, P | A));
    expect(box.audit().ok).toBe(true);
  });
});

describe('domain destruction', () => {
  it('releases pins, tables, base pointers and mappings; every frame comes back free', () => {
    for (const paging of ['pae', 'x86_64'] as const) {
      const box = new XenBox({ paging });
      const free0 = box.xen.freeFrames();
      const a = box.domain('A', { vcpus: 2 });
      const b = box.domain('B');
      const va = paging === 'pae' ? VMALLOC : layoutFor('x86_64').pageOffset + 2 ** 30 * 3;
      if (paging === 'pae') {
        hookL1(a, va);
        const f = a.alloc();
        expect(a.uva(va, pteLo(f.mfn, P | RW | A), 0, 0)).toBe(0);
      }
      a.alloc();
      box.xen.destroyDomain(a.domid);
      expect(box.audit().ok).toBe(true);
      box.xen.destroyDomain(b.domid);
      expect(box.xen.freeFrames()).toBe(free0);
      expect(box.audit().ok).toBe(true);
    }
  });
});

describe('the auditor', () => {
  it("notices a page table changed behind the hypervisor's back", () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = hookL1(a, VMALLOC);
    expect(box.audit().ok).toBe(true);
    // A store straight into a validated L1 (what no guest can do while enforcement holds).
    a.poke(l1, 9, pteLo(l1, P | RW | A), pteHi(l1));
    const r = box.audit();
    expect(r.ok).toBe(false);
    expect(r.isolationViolations).toBeGreaterThan(0);
    expect(r.problems.map((p) => p.what).join('\n')).toMatch(/page-table frame mapped writable/);
  });
});

describe('the unenforced demonstration mode', () => {
  it('lets a frame with an RW alias be pinned, which the isolation check then reports', () => {
    const box = new XenBox({ enforce: false });
    const a = box.domain('A');
    const f = a.alloc();
    expect(a.pin(1, f.mfn)).toBe(0);
    const r = box.audit();
    expect(r.isolationViolations).toBeGreaterThan(0);
  });
});

describe("pae: Xen's L2 belongs to one L3", () => {
  it('a second L3 using the same slot-3 L2 is refused ("PAE L3 3rd slot is shared")', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l2 = kernelL2(a);
    const l3 = a.alloc();
    a.poke(l3.mfn, 3, pteLo(l2, P), pteHi(l2));
    expect(a.makeReadOnly(l3.pfn)).toBe(0);
    box.log();
    expect(a.pin(3, l3.mfn)).toBe(-EINVAL);
    expect(box.log()).toContain('(XEN) mm.c:1486:d1v0 PAE L3 3rd slot is shared');
    expect(box.xen.frameInfo(l2)!.typeCount).toBe(1);
    expect(box.audit().ok).toBe(true);
  });
});

describe('machine size', () => {
  it('works with 2 GiB of machine memory (frames above 4 GiB of address bits not needed, 19-bit mfns)', () => {
    const box = new XenBox({ frames: 2 ** 19, maxSlots: 2 });
    const a = box.domain('A', { frames: 300_000 });
    expect(a.info.lowmemPages).toBe(180_224); // 704 MiB of direct map in pae
    const l1 = hookL1(a, 0xf0000000);
    // A frame near the top of machine memory, mapped and pinned like any other.
    const top = box.domain('B', { frames: 2 ** 19 - 300_000 - 2000 });
    const f = top.alloc();
    expect(f.mfn).toBeGreaterThan(2 ** 18);
    expect(top.makeReadOnly(f.pfn)).toBe(0);
    expect(top.pin(1, f.mfn)).toBe(0);
    expect(l1).toBeGreaterThan(0);
    expect(box.audit()).toMatchObject({ ok: true, isolationViolations: 0 });
  });
});
