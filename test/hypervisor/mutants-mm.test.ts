/*
 * Rule tests written to kill the mutants of hypervisor/mm.ts that survived `npm run mutate`
 * (see MUTANTS.md): guest-handle bounds, batch indexing, the 64-bit arguments of
 * mmuext_op, the references a pin or a base pointer holds, and the guest walk that
 * update_va_mapping does (guest_map_l1e).
 */
import { describe, expect, it } from 'vitest';
import {
  EINVAL,
  MMUEXT_COPY_PAGE,
  MMUEXT_INVLPG_MULTI,
  MMUEXT_NEW_BASEPTR,
  MMUEXT_NEW_USER_BASEPTR,
  MMUEXT_PIN_L1_TABLE,
  MMUEXT_SET_LDT,
  MMUEXT_TLB_FLUSH_MULTI,
  MMUEXT_UNPIN_TABLE,
  MMU_PT_UPDATE_PRESERVE_AD,
  UVMF_INVLPG,
  UVMF_NONE,
  __HYPERVISOR_mmu_update,
  __HYPERVISOR_mmuext_op,
  __HYPERVISOR_update_va_mapping,
  _PAGE_DIRTY,
  _PAGE_PSE,
  _PAGE_USER,
  FRAME_WORDS,
} from '../../src/abi/xen.js';
import { pteHi, pteLo, pteMfn } from '../../src/abi/pte.js';
import { RS_FLUSH_ANY, S_DATA_WORDS, S_RUNSTATE, layoutFor, slotBase, vaIndex } from '../../src/abi/layout.js';
import { type Dom, XenBox } from '../helpers/xenbox.js';
import { A, P, RW, VMALLOC, dataWord, hx, rawMmuext, tableWith } from './helpers.js';

/** pae: the kernel's L2 (the one L3 slot 3 points at). */
function kernelL2(box: XenBox, a: Dom): number {
  const [lo, hi] = a.entry(box.xen.baseptr(a.domid, 0), 3);
  return pteMfn(lo, hi);
}

/** The vCPUs of `a` with a flush pending (an IPI's or the caller's own), and a way to clear them. */
function flushes(box: XenBox, a: Dom) {
  const rs = (v: number) => slotBase(a.info.slots[v]!) + S_RUNSTATE;
  return {
    pending: () => a.info.slots.map((_, v) => (Atomics.load(box.t, rs(v)) & RS_FLUSH_ANY) !== 0),
    clear: () => a.info.slots.forEach((_, v) => Atomics.store(box.t, rs(v), 0)),
  };
}

/** A's first frame (start_info, mfn 1 in a fresh box) made a pinned table of `level`. */
function firstFrameAsTable(a: Dom, level: number): number {
  const mfn = a.info.p2m[0]!;
  expect(mfn).toBe(1);
  for (let i = 0; i < 8; i++) a.poke(mfn, i, 0, 0);
  expect(a.makeReadOnly(0)).toBe(0);
  expect(a.pin(level, mfn)).toBe(0);
  return mfn;
}

describe('guest handles: the data area bounds (copy_from_guest / copy_to_guest)', () => {
  it('a handle may end on the last word of the data area: *pdone there is written, a vCPU bitmap there is read', () => {
    const box = new XenBox();
    const a = box.domain('A', { vcpus: 2 });
    const f = a.alloc();
    // One request at word 0, *pdone in the very last word.
    box.t.set([pteLo(f.mfn, 0) + 8 * 3, pteHi(f.mfn), 0x42, 0], dataWord(a, 0));
    const last = S_DATA_WORDS - 1;
    box.t[dataWord(a, last)] = 77;
    expect(a.rawHypercall(__HYPERVISOR_mmu_update, [0, 1, last, 0x7ff0])).toBe(0);
    expect(box.t[dataWord(a, last)]).toBe(1);
    expect(a.entry(f.mfn, 3)).toEqual([0x42, 0]);
    // A vCPU bitmap in the last two words.
    const { pending, clear } = flushes(box, a);
    a.putMask(S_DATA_WORDS - 2, [1]);
    clear();
    expect(rawMmuext(box, a, [MMUEXT_TLB_FLUSH_MULTI, 0, 0, 0, S_DATA_WORDS - 2, 0])).toBe(0);
    expect(pending()).toEqual([false, true]);
  });

  it('mmuext_op with count 0 and a bad array handle: nothing done, and *pdone still written', () => {
    const box = new XenBox();
    const a = box.domain('A');
    box.t[dataWord(a, 100)] = 77;
    expect(a.rawHypercall(__HYPERVISOR_mmuext_op, [0xffffffff, 0, 100, 0x7ff0])).toBe(0);
    expect(box.t[dataWord(a, 100)]).toBe(0);
  });
});

describe('Xen ignores what it cannot copy back, and flushes nothing for a flush type it does not name', () => {
  it('a *pdone that cannot be written changes nothing: every request is done and the batch returns 0, as copy_to_guest(pdone) is not checked', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const f = a.alloc();
    box.t.set([pteLo(f.mfn, 0) + 8 * 5, pteHi(f.mfn), 0x1234, 0], dataWord(a, 0));
    expect(a.rawHypercall(__HYPERVISOR_mmu_update, [0, 1, S_DATA_WORDS, 0x7ff0])).toBe(0);
    expect(a.entry(f.mfn, 5)).toEqual([0x1234, 0]);
    // mmuext_op too: the pin is done and the call returns 0.
    const t = tableWith(box, a, []);
    expect(rawMmuext(box, a, [MMUEXT_PIN_L1_TABLE, 0, t.mfn, 0, 0, 0], S_DATA_WORDS + 7)).toBe(0);
    expect(a.pin(1, t.mfn)).toBe(-EINVAL); // pinned already: the first pin was done
    // A failing request still returns its own error.
    box.t.set([pteLo(0x7fffff, 0), pteHi(0x7fffff), 0, 0], dataWord(a, 0));
    expect(a.rawHypercall(__HYPERVISOR_mmu_update, [0, 1, S_DATA_WORDS, 0x7ff0])).toBe(-EINVAL);
    expect(box.audit().ok).toBe(true);
  });

  it('update_va_mapping with flush type 3 (TLB_FLUSH | INVLPG) does the update, flushes nobody and returns 0', () => {
    const box = new XenBox();
    const a = box.domain('A', { vcpus: 2 });
    const f = a.alloc();
    const { pending, clear } = flushes(box, a);
    clear();
    expect(a.uva(f.va, pteLo(f.mfn, P | A), pteHi(f.mfn), 3)).toBe(0);
    expect(pending()).toEqual([false, false]);
    // The update was made: the direct-map entry is read-only now, so the frame pins.
    expect(a.pin(1, f.mfn)).toBe(0);
    box.log();
  });
});

describe('mmu_update: a batch of requests', () => {
  it('each request is read from its own four words (a high word in one does not leak into the next), and each done one is counted', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const f = a.alloc();
    const g = a.alloc();
    const before = box.xen.stats().mmuUpdates;
    const r = a.mmuUpdate([
      [f.mfn, 5, 0x1234567, 0x89],
      [g.mfn, 7, 0x42, 0],
      [f.mfn, 9, 0x77, 0x1],
    ]);
    expect(r).toEqual({ rc: 0, done: 3 });
    expect(a.entry(f.mfn, 5)).toEqual([0x1234567, 0x89]);
    expect(a.entry(g.mfn, 7)).toEqual([0x42, 0]);
    expect(a.entry(f.mfn, 9)).toEqual([0x77, 0x1]);
    expect(box.xen.stats().mmuUpdates - before).toBe(3);
    expect(box.audit().ok).toBe(true);
  });

  it('an L2 update that fails flushes nobody; one that succeeds flushes every vCPU (XSA-286: only a changed upper-level entry)', () => {
    const box = new XenBox();
    const a = box.domain('A', { vcpus: 2 });
    const { pending, clear } = flushes(box, a);
    const l2 = kernelL2(box, a);
    const d = a.alloc();
    clear();
    // A PSE entry is Bad L2 flags: the batch stops at it, and no flush follows.
    expect(a.mmuUpdate([[l2, 5, pteLo(d.mfn, P | _PAGE_PSE), pteHi(d.mfn)]]).rc).toBe(-EINVAL);
    expect(pending()).toEqual([false, false]);
    // The same entry written back as it is: done, and the domain is flushed.
    const [lo, hi] = a.entry(l2, 5);
    expect(a.mmuUpdate([[l2, 5, lo, hi]]).rc).toBe(0);
    expect(pending()).toEqual([true, true]);
  });

  it('a normal update of a validated L1 writes the A/D bits as given; only MMU_PT_UPDATE_PRESERVE_AD keeps the old ones', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const d = a.alloc();
    const t = tableWith(box, a, [
      [5, pteLo(d.mfn, P | A | _PAGE_DIRTY), pteHi(d.mfn)],
      [6, pteLo(d.mfn, P | A | _PAGE_DIRTY), pteHi(d.mfn)],
    ]);
    expect(a.pin(1, t.mfn)).toBe(0);
    expect(a.mmuUpdate([[t.mfn, 5, pteLo(d.mfn, P), pteHi(d.mfn)]]).rc).toBe(0);
    expect(a.entry(t.mfn, 5)).toEqual([pteLo(d.mfn, P), pteHi(d.mfn)]);
    expect(a.mmuUpdate([[t.mfn, 6, pteLo(d.mfn, P), pteHi(d.mfn), MMU_PT_UPDATE_PRESERVE_AD]]).rc).toBe(0);
    expect(a.entry(t.mfn, 6)).toEqual([pteLo(d.mfn, P | A | _PAGE_DIRTY), pteHi(d.mfn)]);
    expect(box.audit().ok).toBe(true);
  });

  it('a plain write takes and drops the writable type as Xen does: the type count falling to 0 restamps the frame, so a later pin flushes a vCPU that flushed in between', () => {
    const box = new XenBox();
    const a = box.domain('A', { vcpus: 2 });
    const { pending, clear } = flushes(box, a);
    const f = tableWith(box, a, []); // writable type, count 0: stamped now
    const g = tableWith(box, a, []); // the same, left alone
    // vCPU 1 flushes after both stamps.
    expect(a.mmuext([{ cmd: MMUEXT_TLB_FLUSH_MULTI, arg2: 1 << 1 }]).rc).toBe(0);
    // get_page_type(writable) 0 -> 1, the write, put_page_type 1 -> 0: f stamped again.
    expect(a.mmuUpdate([[f.mfn, 0, 0x42, 0]]).rc).toBe(0);
    expect(box.xen.frameInfo(f.mfn)!.typeCount).toBe(0);
    clear();
    // g's type change: vCPU 1 flushed since g's stamp; vCPU 0 did not.
    expect(a.pin(1, g.mfn)).toBe(0);
    expect(pending()).toEqual([true, false]);
    clear();
    // f's type change: vCPU 0 just flushed (above); vCPU 1 flushed before f's new stamp.
    expect(a.pin(1, f.mfn)).toBe(0);
    expect(pending()).toEqual([false, true]);
    expect(box.audit().ok).toBe(true);
  });
});

describe('mmuext_op: 64-bit arguments (arg1 and arg2 are lo + hi * 2^32)', () => {
  it('x86_64: PIN with a high word in arg1 names mfn 2^32 + lo, no frame: -EINVAL, the log record names that mfn, the low frame is untouched', () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const t = tableWith(box, a, []);
    const before = box.xen.frameInfo(t.mfn);
    expect(rawMmuext(box, a, [MMUEXT_PIN_L1_TABLE, 0, t.mfn, 1, 0, 0])).toBe(-EINVAL);
    // The line prints the whole mfn, as x86_64 Xen's %lx does, and the record carries it.
    expect(box.xen.drainLog().map((r) => [r.line, r.mfn])).toEqual([
      [`(XEN) mm.c:3296:d${a.domid}v0 Error -22 while pinning mfn ${hx(2 ** 32 + t.mfn)}`, 2 ** 32 + t.mfn],
    ]);
    expect(box.xen.frameInfo(t.mfn)).toEqual(before);
  });

  it('COPY_PAGE with a high word in arg2: the source is mfn 2^32 + lo, no frame: -EINVAL, its log record names that mfn, nothing copied', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const src = a.alloc();
    a.poke(src.mfn, 9, 0xc0ffee, 0);
    const dst = a.alloc();
    const before = [box.xen.frameInfo(src.mfn), box.xen.frameInfo(dst.mfn)];
    box.log();
    expect(rawMmuext(box, a, [MMUEXT_COPY_PAGE, 0, dst.mfn, 0, src.mfn, 1])).toBe(-EINVAL);
    expect(box.xen.drainLog().map((r) => [r.line, r.mfn])).toEqual([
      [`(XEN) mm.c:3640:d${a.domid}v0 Error copying from mfn ${hx(2 ** 32 + src.mfn)}`, 2 ** 32 + src.mfn],
    ]);
    expect(a.entry(dst.mfn, 9)).toEqual([0, 0]);
    expect([box.xen.frameInfo(src.mfn), box.xen.frameInfo(dst.mfn)]).toEqual(before);
  });

  it('SET_LDT with base 0 and no entries is accepted: how a kernel drops its LDT (only a misaligned or non-canonical base is refused)', () => {
    const box = new XenBox();
    const a = box.domain('A');
    box.log();
    expect(rawMmuext(box, a, [MMUEXT_SET_LDT, 0, 0, 0, 0, 0])).toBe(0);
    expect(box.log()).toEqual([]);
  });

  it("x86_64: SET_LDT takes a canonical base with a high word: below Xen's hole and from its end up it is the guest's, inside it or non-canonical is refused", () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const ldt = (lo: number, hi: number) => rawMmuext(box, a, [MMUEXT_SET_LDT, 0, lo, hi, 16, 0]);
    const { hypervisorVirtStart, hypervisorVirtEnd } = layoutFor('x86_64');
    // The upper half, sign-extended as the guest passes it: 0xffff8000_00000000 and up.
    const hiOf = (va: number) => (0xffff0000 | Math.floor(va / 2 ** 32)) >>> 0;
    expect(ldt(0, 0x7f00)).toBe(0); // user space, 0x7f0000000000
    expect(ldt(0, hiOf(hypervisorVirtStart))).toBe(-EINVAL);
    expect(ldt(0x7ffff000, hiOf(hypervisorVirtEnd) - 1)).toBe(-EINVAL);
    expect(ldt(0, hiOf(hypervisorVirtEnd))).toBe(0); // the first page past the hole
    // Not canonical (bit 47 set, bits 48..63 clear): refused, as Xen's __addr_ok does.
    expect(ldt(0, Math.floor(hypervisorVirtEnd / 2 ** 32))).toBe(-EINVAL);
    box.log();
    expect(ldt(0x800, 0x7f00)).toBe(-EINVAL);
    expect(box.log()).toEqual([`(XEN) mm.c:3505:d${a.domid}v0 Bad args to SET_LDT: ptr=800, ents=10`]);
  });

  it('pae: NEW_USER_BASEPTR is -EINVAL (a 32-bit guest has no user base pointer) and takes no reference', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const root = box.xen.baseptr(a.domid, 0);
    const l3 = tableWith(box, a, [[3, pteLo(tableWith(box, a, []).mfn, P), 0]]);
    const before = [box.xen.frameInfo(root), box.xen.frameInfo(l3.mfn)];
    expect(a.mmuext([{ cmd: MMUEXT_NEW_USER_BASEPTR, arg1: root }]).rc).toBe(-EINVAL);
    expect(a.mmuext([{ cmd: MMUEXT_NEW_USER_BASEPTR, arg1: l3.mfn }]).rc).toBe(-EINVAL);
    expect([box.xen.frameInfo(root), box.xen.frameInfo(l3.mfn)]).toEqual(before);
    expect(box.audit().ok).toBe(true);
  });

  it('TLB_FLUSH_MULTI, INVLPG_MULTI and update_va_mapping read both words of a vCPU bitmap: vCPU 33 is bit 1 of the second', () => {
    const box = new XenBox({ maxSlots: 34 });
    const a = box.domain('A', { vcpus: 34 });
    const { pending, clear } = flushes(box, a);
    const only = (v: number) => a.info.slots.map((_, k) => k === v);
    box.t[dataWord(a, 299)] = 0;
    a.putMask(300, [33]);
    for (const cmd of [MMUEXT_TLB_FLUSH_MULTI, MMUEXT_INVLPG_MULTI]) {
      clear();
      expect(rawMmuext(box, a, [cmd, 0, VMALLOC, 0, 300, 0])).toBe(0);
      expect(pending()).toEqual(only(33));
    }
    const f = a.alloc();
    clear();
    expect(a.uva(a.directVa(f.pfn), pteLo(f.mfn, P | RW | A), pteHi(f.mfn), UVMF_INVLPG | (300 * 4))).toBe(0);
    expect(pending()).toEqual(only(33));
    expect(box.audit().ok).toBe(true);
  });
});

describe("the reference a pin or a base pointer holds is no table entry's (put_page_and_type with no container)", () => {
  it('pae: pinning a pinned L1 again, then unpinning it, changes no linear count, even with another L1 at mfn 1', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const first = firstFrameAsTable(a, 1);
    const t = tableWith(box, a, []);
    expect(a.pin(1, t.mfn)).toBe(0);
    const held = box.xen.frameInfo(first);
    expect(a.pin(1, t.mfn)).toBe(-EINVAL);
    expect(box.audit().problems).toEqual([]);
    expect(a.mmuext([{ cmd: MMUEXT_UNPIN_TABLE, arg1: t.mfn }]).rc).toBe(0);
    expect(box.audit().problems).toEqual([]);
    expect(box.xen.frameInfo(first)).toEqual(held);
  });

  it('x86_64: replacing the base pointer, or the user one with 0, changes no linear count, even with another L4 at mfn 1', () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const first = firstFrameAsTable(a, 4);
    const held = box.xen.frameInfo(first);
    const root = box.xen.baseptr(a.domid, 0);
    const n = tableWith(box, a, []);
    expect(a.mmuext([{ cmd: MMUEXT_NEW_BASEPTR, arg1: n.mfn }]).rc).toBe(0);
    expect(box.xen.baseptr(a.domid, 0)).toBe(n.mfn);
    expect(box.audit().problems).toEqual([]);
    expect(a.mmuext([{ cmd: MMUEXT_NEW_BASEPTR, arg1: root }]).rc).toBe(0);
    expect(box.audit().problems).toEqual([]);
    const u = tableWith(box, a, []);
    expect(a.mmuext([{ cmd: MMUEXT_NEW_USER_BASEPTR, arg1: u.mfn }]).rc).toBe(0);
    expect(a.mmuext([{ cmd: MMUEXT_NEW_USER_BASEPTR, arg1: 0 }]).rc).toBe(0);
    expect(box.xen.frameInfo(u.mfn)!.typeCount).toBe(0);
    expect(box.audit().problems).toEqual([]);
    expect(box.xen.frameInfo(first)).toEqual(held);
  });
});

describe('update_va_mapping: the walk to the L1 (guest_map_l1e)', () => {
  /** pae: a pinned, empty L1 hooked into the kernel L2 at `va`. */
  function hookL1(box: XenBox, a: Dom, va: number) {
    const l1 = tableWith(box, a, []);
    expect(a.pin(1, l1.mfn)).toBe(0);
    expect(a.mmuUpdate([[kernelL2(box, a), vaIndex(va, 2), pteLo(l1.mfn, P | RW | A), pteHi(l1.mfn)]]).rc).toBe(0);
    return l1;
  }

  it("x86_64: the user half is reachable: VA 0 through the guest's own L4, L3, L2 and L1", () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const d = a.alloc();
    const l1 = tableWith(box, a, []);
    expect(a.pin(1, l1.mfn)).toBe(0);
    const l2 = tableWith(box, a, [[0, pteLo(l1.mfn, P | RW | A), pteHi(l1.mfn)]]);
    expect(a.pin(2, l2.mfn)).toBe(0);
    const l3 = tableWith(box, a, [[0, pteLo(l2.mfn, P | RW | A), pteHi(l2.mfn)]]);
    expect(a.pin(3, l3.mfn)).toBe(0);
    const root = box.xen.baseptr(a.domid, 0);
    expect(a.mmuUpdate([[root, 0, pteLo(l3.mfn, P | RW | A), pteHi(l3.mfn)]]).rc).toBe(0);
    expect(a.uva(0, pteLo(d.mfn, P | A | _PAGE_USER), pteHi(d.mfn), UVMF_NONE)).toBe(0);
    const [lo, hi] = a.entry(l1.mfn, 0);
    expect([pteMfn(lo, hi), lo & P]).toEqual([d.mfn, P]);
    expect(box.audit().ok).toBe(true);
  });

  it('a VA that no L1 maps: -EINVAL and "Could not find L1 for va"', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const d = a.alloc();
    box.log();
    expect(a.uva(0x1000, pteLo(d.mfn, P | A), pteHi(d.mfn), UVMF_NONE)).toBe(-EINVAL);
    expect(box.log()).toEqual([
      `(XEN) pv/mm.c:4360:d${a.domid}v0 Could not find L1 for va 1000 (no valid L1 table maps it)`,
    ]);
  });

  it('pae: a VA with a high word is -EINVAL before any walk (no log line), even one whose low bits an L1 maps', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = hookL1(box, a, VMALLOC);
    const d = a.alloc();
    box.log();
    const rc = a.rawHypercall(__HYPERVISOR_update_va_mapping, [
      [VMALLOC, 128],
      [pteLo(d.mfn, P | A), pteHi(d.mfn)],
      UVMF_NONE,
    ]);
    expect(rc).toBe(-EINVAL);
    expect(box.log()).toEqual([]);
    expect(a.entry(l1.mfn, 0)).toEqual([0, 0]);
    expect(a.uva(VMALLOC, pteLo(d.mfn, P | A), pteHi(d.mfn), UVMF_NONE)).toBe(0);
  });

  it('a not-present L2 entry maps nothing, whatever address it holds', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = tableWith(box, a, []);
    expect(a.pin(1, l1.mfn)).toBe(0);
    const l2 = kernelL2(box, a);
    expect(a.mmuUpdate([[l2, vaIndex(VMALLOC, 2), pteLo(l1.mfn, RW | A), pteHi(l1.mfn)]]).rc).toBe(0);
    const d = a.alloc();
    expect(a.uva(VMALLOC, pteLo(d.mfn, P | A), pteHi(d.mfn), UVMF_NONE)).toBe(-EINVAL);
    expect(a.entry(l1.mfn, 0)).toEqual([0, 0]);
    expect(box.audit().ok).toBe(true);
  });

  it("each entry on the walk is read with its own high word, not a neighbour's or another table's", () => {
    const box = new XenBox();
    const a = box.domain('A');
    const d = a.alloc();
    const l2 = kernelL2(box, a);
    // A not-present entry just before VMALLOC's, with a high word.
    expect(a.mmuUpdate([[l2, vaIndex(VMALLOC, 2) - 1, 0x2000, 0x1]]).rc).toBe(0);
    const l1 = hookL1(box, a, VMALLOC);
    expect(a.uva(VMALLOC, pteLo(d.mfn, P | A), pteHi(d.mfn), UVMF_NONE)).toBe(0);
    expect(a.entry(l1.mfn, 0)).toEqual([pteLo(d.mfn, P | A), pteHi(d.mfn)]);
    // Kernel L2 slot 2, after the two present direct-map entries 0 and 1.
    const va2 = layoutFor('pae').pageOffset + 2 * 2 ** 21;
    expect(vaIndex(va2, 2)).toBe(2);
    expect(a.entry(l2, 1)[0]! & P).toBe(P);
    const l1b = hookL1(box, a, va2);
    expect(a.uva(va2, pteLo(d.mfn, P | A), pteHi(d.mfn), UVMF_NONE)).toBe(0);
    expect(a.entry(l1b.mfn, 0)).toEqual([pteLo(d.mfn, P | A), pteHi(d.mfn)]);
    // A user L2 at mfn 1024, i.e. at word 1024 * FRAME_WORDS, reached through L3 slot 0;
    // frame 1 (start_info) holds nonzero words.
    const pfn = a.info.p2m.indexOf(1024);
    expect(pfn).toBeGreaterThan(0);
    expect(box.mem32[1 * FRAME_WORDS]).not.toBe(0);
    const l1c = tableWith(box, a, []);
    expect(a.pin(1, l1c.mfn)).toBe(0);
    a.poke(1024, 511, pteLo(l1c.mfn, P | RW | A), pteHi(l1c.mfn));
    expect(a.makeReadOnly(pfn)).toBe(0);
    expect(a.pin(2, 1024)).toBe(0);
    expect(a.mmuUpdate([[box.xen.baseptr(a.domid, 0), 0, pteLo(1024, P), pteHi(1024)]]).rc).toBe(0);
    const va3 = 511 * 2 ** 21;
    expect(a.uva(va3, pteLo(d.mfn, P | A), pteHi(d.mfn), UVMF_NONE)).toBe(0);
    expect(a.entry(l1c.mfn, 0)).toEqual([pteLo(d.mfn, P | A), pteHi(d.mfn)]);
    expect(box.audit().ok).toBe(true);
  });

  it('a linear (L2 -> L2) entry leads to an L2, not an L1: -EINVAL with its line, and the L2 is not written', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l2 = kernelL2(box, a);
    expect(a.mmuUpdate([[l2, vaIndex(VMALLOC, 2), pteLo(l2, P | A), pteHi(l2)]]).rc).toBe(0);
    const before = a.entry(l2, 0);
    const d = a.alloc();
    box.log();
    expect(a.uva(VMALLOC, pteLo(d.mfn, P | A), pteHi(d.mfn), UVMF_NONE)).toBe(-EINVAL);
    expect(box.log()).toEqual([
      `(XEN) pv/mm.c:4360:d${a.domid}v0 Could not find L1 for va ${hx(VMALLOC)} (no valid L1 table maps it)`,
    ]);
    expect(a.entry(l2, 0)).toEqual(before);
    expect(box.audit().ok).toBe(true);
  });
});
