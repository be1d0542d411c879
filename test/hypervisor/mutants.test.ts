/*
 * Rule tests written to kill mutants that survived `npm run mutate` (see MUTANTS.md):
 * each pins down a behaviour the other tests left loose -- an errno, a log line, the
 * validation path (pin) as well as the update path (mmu_update), a reference that must
 * not be dropped.
 */
import { describe, expect, it } from 'vitest';
import {
  EBUSY,
  EINVAL,
  ENOSYS,
  EPERM,
  MMU_MACHPHYS_UPDATE,
  MMU_PT_UPDATE_NO_TRANSLATE,
  MMU_PT_UPDATE_PRESERVE_AD,
  __HYPERVISOR_mmu_update,
  _PAGE_DIRTY,
  _PAGE_ACCESSED,
  _PAGE_PCD,
  _PAGE_PRESENT,
  _PAGE_RW,
} from '../../src/abi/xen.js';
import { pteHi, pteLo } from '../../src/abi/pte.js';
import { S_HEADER_WORDS, slotBase } from '../../src/abi/layout.js';
import { type Dom, XenBox } from '../helpers/xenbox.js';

const P = _PAGE_PRESENT;
const RW = _PAGE_RW;
const A = _PAGE_ACCESSED;
const hx = (n: number) => n.toString(16);

/** A frame of `a` filled by the guest with `entries`, made read-only, ready to pin as an L1. */
function l1With(box: XenBox, a: Dom, entries: Array<[number, number, number]>) {
  const t = a.alloc();
  for (const [i, lo, hi] of entries) a.poke(t.mfn, i, lo, hi);
  expect(a.makeReadOnly(t.pfn)).toBe(0);
  box.log();
  return t;
}

describe('get_page_from_l1e on the validation path (a pin), not only on mmu_update', () => {
  it('a cache-attribute flag in an entry fails the pin: Bad L1 flags', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const d = a.alloc();
    const t = l1With(box, a, [[7, pteLo(d.mfn, P | A | _PAGE_PCD), pteHi(d.mfn)]]);
    expect(a.pin(1, t.mfn)).toBe(-EINVAL);
    expect(box.log()[0]).toMatch(/Bad L1 flags 10$/);
    expect(box.audit().ok).toBe(true);
  });

  it('an entry beyond machine memory (MMIO) fails the pin with -EPERM and its log line', () => {
    const box = new XenBox({ frames: 4096 });
    const a = box.domain('A');
    const t = l1With(box, a, [[3, pteLo(5000, P | A), pteHi(5000)]]);
    expect(a.pin(1, t.mfn)).toBe(-EPERM);
    const log = box.log();
    expect(log[0]).toMatch(new RegExp(`d${a.domid} non-privileged attempt to map MMIO space ${hx(5000)}$`));
    expect(log.some((l) => l.includes(`Error while validating mfn ${hx(t.mfn)} (pfn ${hx(t.pfn)}) for type`))).toBe(
      true,
    );
    expect(box.audit().ok).toBe(true);
  });

  it("another domain's frame: -EBUSY naming its real owner; a free frame's owner prints as d-1", () => {
    const box = new XenBox({ frames: 4096 });
    const a = box.domain('A');
    const b = box.domain('B');
    const theirs = b.alloc();
    const t = l1With(box, a, [[0, pteLo(theirs.mfn, P | A), pteHi(theirs.mfn)]]);
    expect(a.pin(1, t.mfn)).toBe(-EBUSY);
    expect(box.log()[0]).toMatch(
      new RegExp(`pg_owner d${a.domid} l1e_owner d${a.domid}, but real_pg_owner d${b.domid}$`),
    );
    expect(box.audit().ok).toBe(true);
    // The top frame of the machine belongs to nobody.
    const free = 4095;
    expect(box.xen.frameInfo(free)!.owner).toBeGreaterThan(0x7ff0);
    const u = l1With(box, a, [[0, pteLo(free, P | A), pteHi(free)]]);
    expect(a.pin(1, u.mfn)).toBe(-EBUSY);
    expect(box.log()[0]).toMatch(/but real_pg_owner d-1$/);
    expect(box.audit().ok).toBe(true);
  });
});

describe('references that must not be dropped', () => {
  it('overwriting a non-present entry that has address bits drops nothing', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const d = a.alloc();
    const t = l1With(box, a, []);
    expect(a.pin(1, t.mfn)).toBe(0);
    const count = box.xen.frameInfo(d.mfn)!.count;
    // Not present, but with d's address in it: holds nothing.
    expect(a.mmuUpdate([[t.mfn, 9, pteLo(d.mfn, A), pteHi(d.mfn)]]).rc).toBe(0);
    expect(a.mmuUpdate([[t.mfn, 9, 0, 0]]).rc).toBe(0);
    expect(box.xen.frameInfo(d.mfn)!.count).toBe(count);
    expect(box.audit().problems).toEqual([]);
  });

  it('a writable page whose type count falls to zero is not demoted as a table', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const d = a.alloc();
    const f = a.alloc();
    // f is plain data that looks like page-table entries, mapped RW (its writable type).
    for (let i = 0; i < 8; i++) a.poke(f.mfn, i, pteLo(d.mfn, P | RW | A), pteHi(d.mfn));
    const count = box.xen.frameInfo(d.mfn)!.count;
    expect(a.makeReadOnly(f.pfn)).toBe(0); // writable type count 1 -> 0
    expect(box.xen.frameInfo(f.mfn)!.typeCount).toBe(0);
    expect(box.xen.frameInfo(d.mfn)!.count).toBe(count);
    expect(box.audit().problems).toEqual([]);
  });

  it('probing an L2 as an L1 for a linear entry is quiet: no Bad type line', () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const l2 = a.alloc();
    expect(a.makeReadOnly(l2.pfn)).toBe(0);
    expect(a.pin(2, l2.mfn)).toBe(0);
    box.log();
    // A read-only self-map: get_page_from_l2e first tries the target as an L1.
    expect(a.mmuUpdate([[l2.mfn, 5, pteLo(l2.mfn, P | A), pteHi(l2.mfn)]]).rc).toBe(0);
    expect(box.log().filter((l) => l.includes('Bad type'))).toEqual([]);
    // The same probe of a frame that is not an L2 does log it.
    const w = a.alloc();
    expect(a.mmuUpdate([[l2.mfn, 6, pteLo(w.mfn, P | A), pteHi(w.mfn)]]).rc).toBe(-EINVAL);
    expect(box.log().some((l) => l.includes('Bad type'))).toBe(true);
    expect(box.audit().ok).toBe(true);
  });
});

describe('mmu_update of a frame that is not a page table in use (plain memory)', () => {
  const AD = _PAGE_ACCESSED | _PAGE_DIRTY;

  it('writes exactly the entry asked for, at its index, in every update command but machphys', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const f = a.alloc();
    expect(a.mmuUpdate([[f.mfn, 5, 0x1234567, 0x89]]).rc).toBe(0);
    expect(a.entry(f.mfn, 5)).toEqual([0x1234567, 0x89]);
    expect(a.entry(f.mfn, 4)).toEqual([0, 0]);
    expect(a.entry(f.mfn, 6)).toEqual([0, 0]);
    expect(a.mmuUpdate([[f.mfn, 7, 0x42, 0, MMU_PT_UPDATE_NO_TRANSLATE]]).rc).toBe(0);
    expect(a.entry(f.mfn, 7)).toEqual([0x42, 0]);
    expect(box.audit().ok).toBe(true);
  });

  it('preserve_ad keeps the old A/D bits; a normal update does not', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const f = a.alloc();
    a.poke(f.mfn, 3, 0x5000 | AD, 0);
    a.poke(f.mfn, 4, 0x5000 | AD, 0);
    expect(a.mmuUpdate([[f.mfn, 3, 0x7000, 0, MMU_PT_UPDATE_PRESERVE_AD]]).rc).toBe(0);
    expect(a.mmuUpdate([[f.mfn, 4, 0x7000, 0]]).rc).toBe(0);
    expect(a.entry(f.mfn, 3)).toEqual([0x7000 | AD, 0]);
    expect(a.entry(f.mfn, 4)).toEqual([0x7000, 0]);
  });

  it("preserve_ad on a validated L1 keeps that entry's A/D bits", () => {
    const box = new XenBox();
    const a = box.domain('A');
    const d = a.alloc();
    const t = l1With(box, a, [[5, pteLo(d.mfn, P | A | _PAGE_DIRTY), pteHi(d.mfn)]]);
    expect(a.pin(1, t.mfn)).toBe(0);
    expect(a.mmuUpdate([[t.mfn, 5, pteLo(d.mfn, P), pteHi(d.mfn), MMU_PT_UPDATE_PRESERVE_AD]]).rc).toBe(0);
    expect(a.entry(t.mfn, 5)).toEqual([pteLo(d.mfn, P | A | _PAGE_DIRTY), pteHi(d.mfn)]);
    expect(box.audit().ok).toBe(true);
  });

  it('a write over an unpinned table changes its type to writable (get/put_page_type around it)', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const t = l1With(box, a, []);
    expect(a.pin(1, t.mfn)).toBe(0);
    expect(a.mmuext([{ cmd: 4, arg1: t.mfn }]).rc).toBe(0); // unpin: l1, type count 0
    expect(box.xen.frameInfo(t.mfn)!.typeHi >>> 29).toBe(1);
    expect(a.mmuUpdate([[t.mfn, 2, 0x99, 0]]).rc).toBe(0);
    expect(box.xen.frameInfo(t.mfn)!.typeHi >>> 29).toBe(7);
    expect(box.xen.frameInfo(t.mfn)!.typeCount).toBe(0);
    expect(a.entry(t.mfn, 2)).toEqual([0x99, 0]);
    expect(box.audit().ok).toBe(true);
  });

  it('count 0 with a bad array handle: nothing done, and *pdone still written', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const slot = a.info.slots[0]!;
    const pdone = slotBase(slot) + S_HEADER_WORDS + 100;
    box.t[pdone] = 77;
    expect(a.rawHypercall(__HYPERVISOR_mmu_update, [0xffffffff, 0, 100, 0x7ff0])).toBe(0);
    expect(box.t[pdone]).toBe(0);
  });

  it("log lines of the refused commands: machphys of another's page, an unknown command", () => {
    const box = new XenBox();
    const a = box.domain('A');
    const b = box.domain('B');
    box.log();
    expect(a.mmuUpdate([[b.alloc().mfn, 0, 1, 0, MMU_MACHPHYS_UPDATE]]).rc).toBe(-EINVAL);
    expect(box.log()[0]).toMatch(/Could not get page for mach->phys update$/);
    expect(a.mmuUpdate([[a.alloc().mfn, 0, 1, 0, 5]]).rc).toBe(-ENOSYS);
    expect(box.log()[0]).toMatch(/Invalid page update command 5$/);
  });
});
