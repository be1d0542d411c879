/*
 * Rule tests written to kill mutants that survived `npm run mutate` (see MUTANTS.md):
 * each pins down a behaviour the other tests left loose -- an errno, a log line, the
 * validation path (pin) as well as the update path (mmu_update), a reference that must
 * not be dropped.
 */
import { describe, expect, it } from 'vitest';
import {
  EACCES,
  EFAULT,
  __HYPERVISOR_update_va_mapping,
  UVMF_TLB_FLUSH,
  UVMF_NONE,
  UVMF_LOCAL,
  UVMF_INVLPG,
  UVMF_ALL,
  MMUEXT_NEW_USER_BASEPTR,
  MMUEXT_NEW_BASEPTR,
  MMUEXT_INVLPG_MULTI,
  MMUEXT_TLB_FLUSH_MULTI,
  MMUEXT_INVLPG_LOCAL,
  MMUEXT_TLB_FLUSH_LOCAL,
  EBUSY,
  EINVAL,
  ENOSYS,
  EOPNOTSUPP,
  EPERM,
  ESRCH,
  MMU_MACHPHYS_UPDATE,
  MMU_PT_UPDATE_NO_TRANSLATE,
  MMU_PT_UPDATE_PRESERVE_AD,
  MMUEXT_CLEAR_PAGE,
  MMUEXT_COPY_PAGE,
  MMUEXT_FLUSH_CACHE,
  MMUEXT_FLUSH_CACHE_GLOBAL,
  MMUEXT_SET_LDT,
  MMUEXT_TLB_FLUSH_ALL,
  MMUEXT_UNMARK_SUPER,
  MMUEXT_UNPIN_TABLE,
  PAGE_SIZE,
  __HYPERVISOR_mmu_update,
  _PAGE_ACCESSED,
  _PAGE_DIRTY,
  _PAGE_GLOBAL,
  _PAGE_GUEST_KERNEL_HI,
  _PAGE_PCD,
  _PAGE_PSE,
  _PAGE_USER,
} from '../../src/abi/xen.js';
import { pteHi, pteLo } from '../../src/abi/pte.js';
import { S_VC_PT } from '../../src/abi/vclock.js';
import {
  PAE_XEN_L2_FIRST,
  RS_FLUSH_ANY,
  RS_FLUSH_PENDING,
  S_DATA_WORDS,
  S_HEADER_WORDS,
  S_RUNSTATE,
  layoutFor,
  slotBase,
  vaIndex,
} from '../../src/abi/layout.js';
import { type Dom, XenBox } from '../helpers/xenbox.js';
import { A, P, RW, VMALLOC, hx, rawMmuext, tableWith } from './helpers.js';

describe('get_page_from_l1e on the validation path (a pin), not only on mmu_update', () => {
  it('a cache-attribute flag in an entry fails the pin: Bad L1 flags', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const d = a.alloc();
    const t = tableWith(box, a, [[7, pteLo(d.mfn, P | A | _PAGE_PCD), pteHi(d.mfn)]]);
    expect(a.pin(1, t.mfn)).toBe(-EINVAL);
    expect(box.log()[0]).toMatch(/Bad L1 flags 10$/);
    expect(box.audit().ok).toBe(true);
  });

  it('an entry beyond machine memory (MMIO) fails the pin with -EPERM and its log line', () => {
    const box = new XenBox({ frames: 4096 });
    const a = box.domain('A');
    const t = tableWith(box, a, [[3, pteLo(5000, P | A), pteHi(5000)]]);
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
    const t = tableWith(box, a, [[0, pteLo(theirs.mfn, P | A), pteHi(theirs.mfn)]]);
    expect(a.pin(1, t.mfn)).toBe(-EBUSY);
    expect(box.log()[0]).toMatch(
      new RegExp(`pg_owner d${a.domid} l1e_owner d${a.domid}, but real_pg_owner d${b.domid}$`),
    );
    expect(box.audit().ok).toBe(true);
    // The top frame of the machine belongs to nobody.
    const free = 4095;
    expect(box.xen.frameInfo(free)!.owner).toBeGreaterThan(0x7ff0);
    const u = tableWith(box, a, [[0, pteLo(free, P | A), pteHi(free)]]);
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
    const t = tableWith(box, a, []);
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
    const t = tableWith(box, a, [[5, pteLo(d.mfn, P | A | _PAGE_DIRTY), pteHi(d.mfn)]]);
    expect(a.pin(1, t.mfn)).toBe(0);
    expect(a.mmuUpdate([[t.mfn, 5, pteLo(d.mfn, P), pteHi(d.mfn), MMU_PT_UPDATE_PRESERVE_AD]]).rc).toBe(0);
    expect(a.entry(t.mfn, 5)).toEqual([pteLo(d.mfn, P | A | _PAGE_DIRTY), pteHi(d.mfn)]);
    expect(box.audit().ok).toBe(true);
  });

  it('a write over an unpinned table changes its type to writable (get/put_page_type around it)', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const t = tableWith(box, a, []);
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

describe('get_page_from_lNe (N = 2..4) on the validation path', () => {
  it("a pin of an L2 checks its entries' flags too: a PSE entry is Bad L2 flags, -EINVAL", () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = tableWith(box, a, []); // a frame that would otherwise be a fine L1
    const l2 = tableWith(box, a, [[0, pteLo(l1.mfn, P | A | _PAGE_PSE), pteHi(l1.mfn)]]);
    expect(a.pin(2, l2.mfn)).toBe(-EINVAL);
    const log = box.log();
    expect(log[0]).toMatch(/Bad L2 flags 80$/);
    expect(log.some((l) => l.endsWith('Failure -22 in promote_l2_table: slot 0x0'))).toBe(true);
    expect(box.xen.frameInfo(l1.mfn)!.typeCount).toBe(0);
    expect(box.audit().ok).toBe(true);
  });

  it('x86_64: an L4 entry with a cache attribute, or an L3 entry with a reserved high bit, fails the pin', () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const l3 = tableWith(box, a, []);
    const l4 = tableWith(box, a, [[1, pteLo(l3.mfn, P | A | _PAGE_PCD), pteHi(l3.mfn)]]);
    expect(a.pin(4, l4.mfn)).toBe(-EINVAL);
    expect(box.log()[0]).toMatch(/Bad L4 flags 10$/);
    const l2 = tableWith(box, a, []);
    const l3b = tableWith(box, a, [[0, pteLo(l2.mfn, P | A), pteHi(l2.mfn) | 0x00100000]]);
    expect(a.pin(3, l3b.mfn)).toBe(-EINVAL);
    expect(box.log()[0]).toMatch(/Bad L3 flags 0$/);
    expect(box.xen.frameInfo(l3.mfn)!.typeCount).toBe(0);
    expect(box.xen.frameInfo(l2.mfn)!.typeCount).toBe(0);
    expect(box.audit().ok).toBe(true);
  });

  it('x86_64: an L3 has 512 entries, and one in slot 3 is a plain L2 reference (PGT_pae_xen_l2 is for pae L3s only)', () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const l2 = tableWith(box, a, []);
    expect(a.pin(2, l2.mfn)).toBe(0);
    const other = tableWith(box, a, []);
    const l3 = tableWith(box, a, [
      [3, pteLo(l2.mfn, P | RW | A), pteHi(l2.mfn)],
      [511, pteLo(other.mfn, P | RW | A), pteHi(other.mfn)], // an x86_64 L3 has 512 entries
    ]);
    expect(a.pin(3, l3.mfn)).toBe(0);
    expect(box.xen.frameInfo(l2.mfn)!.typeCount).toBe(2);
    expect(box.xen.frameInfo(other.mfn)!.typeCount).toBe(1);
    expect(box.audit().ok).toBe(true);
  });
});

describe('linear page tables at each level (get_lN_linear_pagetable)', () => {
  it('an L2 entry naming a frame beyond machine memory is refused, not taken as a linear entry', () => {
    const box = new XenBox({ frames: 4096 });
    const a = box.domain('A');
    const l2 = tableWith(box, a, []);
    expect(a.pin(2, l2.mfn)).toBe(0);
    expect(a.mmuUpdate([[l2.mfn, 0, pteLo(5000, P | A), pteHi(5000)]]).rc).toBe(-EINVAL);
    expect(a.entry(l2.mfn, 0)).toEqual([0, 0]);
    const t = tableWith(box, a, [[1, pteLo(5000, P | A), pteHi(5000)]]);
    expect(a.pin(2, t.mfn)).toBe(-EINVAL);
    expect(box.audit().ok).toBe(true);
  });

  it('pae: an L2 may hold a read-only linear entry (only pae L3s may not, XSA-185)', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const x = tableWith(box, a, []);
    expect(a.pin(2, x.mfn)).toBe(0);
    const y = tableWith(box, a, []);
    expect(a.pin(2, y.mfn)).toBe(0);
    expect(a.mmuUpdate([[x.mfn, 7, pteLo(x.mfn, P | A), pteHi(x.mfn)]]).rc).toBe(0); // self-map
    expect(a.mmuUpdate([[x.mfn, 8, pteLo(y.mfn, P | A), pteHi(y.mfn)]]).rc).toBe(0); // x -> y
    expect(box.xen.frameInfo(y.mfn)!.typeCount).toBe(2);
    expect(box.audit().ok).toBe(true);
  });

  it('x86_64: an L3 may hold a read-only linear entry, validated at pin time too', () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const l3 = tableWith(box, a, [[5, 0, 0]]);
    a.poke(l3.mfn, 5, pteLo(l3.mfn, P | A), pteHi(l3.mfn)); // a read-only self-map
    expect(a.pin(3, l3.mfn)).toBe(0);
    const y = tableWith(box, a, []);
    expect(a.pin(3, y.mfn)).toBe(0);
    // A self-map is not a linear use (it takes nothing); an entry to another L3 is.
    expect(a.mmuUpdate([[l3.mfn, 9, pteLo(y.mfn, P | A), pteHi(y.mfn)]]).rc).toBe(0);
    expect(box.xen.frameInfo(y.mfn)!.typeCount).toBe(2);
    const z = tableWith(box, a, []);
    expect(a.pin(3, z.mfn)).toBe(0);
    // l3 now contains a linear entry, so it may not become a target (XSA-240).
    expect(a.mmuUpdate([[z.mfn, 9, pteLo(l3.mfn, P | A), pteHi(l3.mfn)]]).rc).toBe(-EINVAL);
    expect(box.audit().ok).toBe(true);
  });

  it("a linear entry naming another domain's table is refused and takes nothing", () => {
    const box = new XenBox();
    const a = box.domain('A');
    const b = box.domain('B');
    const theirs = tableWith(box, b, []);
    expect(b.pin(2, theirs.mfn)).toBe(0);
    const mine = tableWith(box, a, []);
    expect(a.pin(2, mine.mfn)).toBe(0);
    const before = box.xen.frameInfo(theirs.mfn);
    expect(a.mmuUpdate([[mine.mfn, 0, pteLo(theirs.mfn, P | A), pteHi(theirs.mfn)]]).rc).toBe(-EINVAL);
    expect(box.xen.frameInfo(theirs.mfn)).toEqual(before);
    expect(a.entry(mine.mfn, 0)).toEqual([0, 0]);
    expect(box.audit()).toMatchObject({ ok: true, isolationViolations: 0 });
  });
});

describe('promote_lN_table', () => {
  it("pae: an L3 whose slot 3 is not present cannot be pinned (Xen's L2 goes there)", () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l2 = tableWith(box, a, []);
    expect(a.pin(2, l2.mfn)).toBe(0);
    const l3 = tableWith(box, a, [[0, pteLo(l2.mfn, P), pteHi(l2.mfn)]]);
    const before = box.xen.frameInfo(l2.mfn);
    expect(a.pin(3, l3.mfn)).toBe(-EINVAL);
    const log = box.log();
    // Xen's only line for it is the promotion failure at slot 3.
    expect(log[0]).toBe(`(XEN) mm.c:1413:d${a.domid}v0 Failure -22 in promote_l3_table: slot 0x3`);
    // The slot-3 L2 is checked for sharing only once every entry has been validated.
    expect(log.filter((l) => l.includes('3rd slot is shared'))).toEqual([]);
    // Slot 0's reference, taken before slot 3 was found missing, was given back.
    expect(box.xen.frameInfo(l2.mfn)).toEqual(before);
    expect(box.audit().ok).toBe(true);
  });

  it('pae: entries 4..511 of a pinned L3 are no entries at all, and are cleared', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const xenL2 = tableWith(box, a, []);
    const l3 = tableWith(box, a, [
      [3, pteLo(xenL2.mfn, P), pteHi(xenL2.mfn)],
      [4, 0x1234, 0],
      [511, 0x5678, 0x9],
    ]);
    expect(a.pin(3, l3.mfn)).toBe(0);
    expect(a.entry(l3.mfn, 3)).toEqual([pteLo(xenL2.mfn, P), pteHi(xenL2.mfn)]);
    expect(a.entry(l3.mfn, 4)).toEqual([0, 0]);
    expect(a.entry(l3.mfn, 511)).toEqual([0, 0]);
    expect(box.audit().ok).toBe(true);
  });

  it('x86_64: promotion adjusts present entries (L1: US and _PAGE_GUEST_KERNEL, or G; L2/L3: US; L4: A|US), not absent ones', () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const d = a.alloc();
    const u = a.alloc();
    const l1 = tableWith(box, a, [
      [0, 0x2000, 0x7], // not present: left as written
      [1, pteLo(d.mfn, P | A), pteHi(d.mfn)],
      [2, pteLo(u.mfn, P | A | _PAGE_USER), pteHi(u.mfn)],
    ]);
    expect(a.pin(1, l1.mfn)).toBe(0);
    expect(a.entry(l1.mfn, 0)).toEqual([0x2000, 0x7]);
    expect(a.entry(l1.mfn, 1)).toEqual([pteLo(d.mfn, P | A | _PAGE_USER), pteHi(d.mfn) | _PAGE_GUEST_KERNEL_HI]);
    expect(a.entry(l1.mfn, 2)).toEqual([pteLo(u.mfn, P | A | _PAGE_USER | _PAGE_GLOBAL), pteHi(u.mfn)]);
    expect(a.entry(l1.mfn, 3)).toEqual([0, 0]);
    const l2 = tableWith(box, a, [
      [0, pteLo(l1.mfn, P | RW), pteHi(l1.mfn)],
      [1, 0x3000, 0],
    ]);
    expect(a.pin(2, l2.mfn)).toBe(0);
    expect(a.entry(l2.mfn, 0)).toEqual([pteLo(l1.mfn, P | RW | _PAGE_USER), pteHi(l1.mfn)]);
    expect(a.entry(l2.mfn, 1)).toEqual([0x3000, 0]);
    const l3 = tableWith(box, a, [[0, pteLo(l2.mfn, P), pteHi(l2.mfn)]]);
    expect(a.pin(3, l3.mfn)).toBe(0);
    expect(a.entry(l3.mfn, 0)).toEqual([pteLo(l2.mfn, P | _PAGE_USER), pteHi(l2.mfn)]);
    const l4 = tableWith(box, a, [[0, pteLo(l3.mfn, P), pteHi(l3.mfn)]]);
    expect(a.pin(4, l4.mfn)).toBe(0);
    expect(a.entry(l4.mfn, 0)).toEqual([pteLo(l3.mfn, P | A | _PAGE_USER), pteHi(l3.mfn)]);
    expect(box.audit().ok).toBe(true);
  });

  it('each entry is validated with its own high word, whatever a not-present neighbour holds', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const d = a.alloc();
    const t = tableWith(box, a, [
      [0, 0x2000, 0x1], // not present: its words mean nothing
      [1, pteLo(d.mfn, P | A), pteHi(d.mfn)],
    ]);
    expect(a.pin(1, t.mfn)).toBe(0);
    expect(box.xen.frameInfo(t.mfn)!.typeCount).toBe(1);
    expect(box.audit().ok).toBe(true);
  });

  it("only the slot-3 L2 of a pae L3 has Xen's slots (428..511): in an L1 or another L2 they are the guest's", () => {
    for (const paging of ['pae', 'x86_64'] as const) {
      const box = new XenBox({ paging });
      const a = box.domain('A');
      const d = a.alloc();
      const l1 = tableWith(box, a, [[500, pteLo(d.mfn, P | A), pteHi(d.mfn)]]);
      const l2 = tableWith(box, a, [[PAE_XEN_L2_FIRST, pteLo(l1.mfn, P | RW | A), pteHi(l1.mfn)]]);
      const count = box.xen.frameInfo(d.mfn)!.count;
      expect(a.pin(2, l2.mfn)).toBe(0);
      expect(box.xen.frameInfo(l1.mfn)!.typeCount).toBe(1);
      expect(box.xen.frameInfo(d.mfn)!.count).toBe(count + 1);
      expect(a.entry(l1.mfn, 500)[0] & ~(_PAGE_USER | _PAGE_GLOBAL)).toBe(pteLo(d.mfn, P | A));
      expect(box.audit().ok).toBe(true);
    }
  });

  it("x86_64: Xen's own L4 slots (256..271) are not the guest's to validate: a pin clears whatever is there, and keeps 255 and 272", () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const l3 = tableWith(box, a, []);
    const l4 = tableWith(box, a, [
      [256, pteLo(l3.mfn, P | A | _PAGE_PCD), pteHi(l3.mfn) | 0x7ff00000],
      [271, 0x5000, 0x3],
      [272, pteLo(l3.mfn, P | A), pteHi(l3.mfn)],
      [255, pteLo(l3.mfn, P | A), pteHi(l3.mfn)],
    ]);
    expect(a.pin(4, l4.mfn)).toBe(0);
    expect(a.entry(l4.mfn, 255)).toEqual([pteLo(l3.mfn, P | A | _PAGE_USER), pteHi(l3.mfn)]);
    expect(a.entry(l4.mfn, 256)).toEqual([0, 0]);
    expect(a.entry(l4.mfn, 271)).toEqual([0, 0]);
    expect(a.entry(l4.mfn, 272)).toEqual([pteLo(l3.mfn, P | A | _PAGE_USER), pteHi(l3.mfn)]);
    expect(box.xen.frameInfo(l3.mfn)!.typeCount).toBe(2);
    expect(box.audit().ok).toBe(true);
  });

  it('the last unpin demotes the table: every present entry gives back what it took, by its own words', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const d = a.alloc();
    const e = a.alloc();
    const below = a.alloc();
    const t = a.alloc();
    const above = a.alloc();
    expect([below.mfn + 1, t.mfn + 1]).toEqual([t.mfn, above.mfn]);
    // Junk around the table that demote_l1_table must not read as entries.
    a.poke(below.mfn, 510, 0, 0x1);
    a.poke(above.mfn, 0, pteLo(d.mfn, P | A), pteHi(d.mfn));
    const before = [box.xen.frameInfo(d.mfn), box.xen.frameInfo(e.mfn)];
    a.poke(t.mfn, 1, pteLo(e.mfn, A), 0x1); // not present, with e's address and junk above it
    a.poke(t.mfn, 2, pteLo(d.mfn, P | A), pteHi(d.mfn));
    a.poke(t.mfn, 7, pteLo(e.mfn, P | RW | A), pteHi(e.mfn));
    expect(a.makeReadOnly(t.pfn)).toBe(0);
    expect(a.pin(1, t.mfn)).toBe(0);
    expect(box.xen.frameInfo(e.mfn)!.typeCount).toBe(before[1]!.typeCount + 1);
    expect(a.mmuext([{ cmd: MMUEXT_UNPIN_TABLE, arg1: t.mfn }]).rc).toBe(0);
    expect([box.xen.frameInfo(d.mfn), box.xen.frameInfo(e.mfn)]).toEqual(before);
    expect(box.audit().ok).toBe(true);
  });

  it('demote_l2_table drops the L1 type reference of a read-only L2 entry too', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = tableWith(box, a, []);
    const l2 = tableWith(box, a, [[0, pteLo(l1.mfn, P | A), pteHi(l1.mfn)]]);
    const before = box.xen.frameInfo(l1.mfn);
    expect(a.pin(2, l2.mfn)).toBe(0);
    expect(box.xen.frameInfo(l1.mfn)!.typeCount).toBe(1);
    expect(a.mmuext([{ cmd: MMUEXT_UNPIN_TABLE, arg1: l2.mfn }]).rc).toBe(0);
    expect(box.xen.frameInfo(l1.mfn)!.typeCount).toBe(0);
    expect(box.xen.frameInfo(l1.mfn)!.count).toBe(before!.count);
    expect(box.audit().ok).toBe(true);
  });

  it('a failed pin releases each earlier entry by its own address, whatever the words around it hold', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const d = a.alloc();
    const before = a.alloc(); // the frame just below the table
    const t = a.alloc();
    expect(t.mfn).toBe(before.mfn + 1);
    // Junk the table's neighbours: the last word of the frame below, and a not-present
    // entry (which Xen never looks at) with address bits in its high word.
    a.poke(before.mfn, 511, 0, 0x1);
    a.poke(t.mfn, 0, 0x2000, 0x1);
    a.poke(t.mfn, 1, pteLo(d.mfn, P | A), pteHi(d.mfn));
    a.poke(t.mfn, 2, pteLo(d.mfn, P | A), pteHi(d.mfn));
    a.poke(t.mfn, 3, pteLo(d.mfn, P | A | _PAGE_PCD), pteHi(d.mfn));
    expect(a.makeReadOnly(t.pfn)).toBe(0);
    const held = box.xen.frameInfo(d.mfn);
    expect(a.pin(1, t.mfn)).toBe(-EINVAL);
    expect(box.log().some((l) => l.endsWith('Failure -22 in promote_l1_table: slot 0x3'))).toBe(true);
    expect(box.xen.frameInfo(d.mfn)).toEqual(held);
    expect(box.audit().ok).toBe(true);
  });
});

describe('mmuext_op: the refusals no other test pins down', () => {
  it('foreigndom: a domain may name itself by its id; an unknown domain is -ESRCH, another one -EPERM, each with its line', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const b = box.domain('B');
    box.log();
    expect(a.mmuext([{ cmd: MMUEXT_TLB_FLUSH_ALL }], a.domid).rc).toBe(0);
    expect(a.mmuUpdate([[a.alloc().mfn, 1, 0x42, 0]], a.domid).rc).toBe(0);
    expect(box.log()).toEqual([]);
    expect(a.mmuext([{ cmd: MMUEXT_TLB_FLUSH_ALL }], 0x1234).rc).toBe(-ESRCH);
    expect(box.log()).toEqual([`(XEN) mm.c:3141:d${a.domid}v0 Unknown domain d${0x1234}`]);
    expect(a.mmuUpdate([[a.alloc().mfn, 1, 0x42, 0]], b.domid).rc).toBe(-EPERM);
    expect(box.log()).toEqual([`(XEN) mm.c:3182:d${a.domid}v0 d${a.domid} may not act on d${b.domid}'s page tables`]);
  });

  it('a refused pin logs its errno and is counted; pinning a pinned table again changes no count', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const f = a.alloc(); // still mapped RW in the direct map
    const s0 = box.xen.stats();
    box.log();
    expect(a.pin(1, f.mfn)).toBe(-EINVAL);
    expect(box.log().at(-1)).toBe(`(XEN) mm.c:3296:d${a.domid}v0 Error -22 while pinning mfn ${hx(f.mfn)}`);
    const t = tableWith(box, a, []);
    expect(a.pin(1, t.mfn)).toBe(0);
    const pinned = box.xen.frameInfo(t.mfn);
    expect(a.pin(1, t.mfn)).toBe(-EINVAL);
    expect(box.xen.frameInfo(t.mfn)).toEqual(pinned);
    const s1 = box.xen.stats();
    expect(s1.pinsAttempted - s0.pinsAttempted).toBe(3);
    expect(s1.pinsRefused - s0.pinsRefused).toBe(2);
    expect(box.audit().ok).toBe(true);
  });

  it("unpin of another domain's frame or of no frame is -EINVAL (bad domain); of an unpinned frame it holds nothing", () => {
    const box = new XenBox({ frames: 4096 });
    const a = box.domain('A');
    const b = box.domain('B');
    const t = tableWith(box, b, []);
    expect(b.pin(1, t.mfn)).toBe(0);
    const pinned = box.xen.frameInfo(t.mfn);
    box.log();
    expect(a.mmuext([{ cmd: MMUEXT_UNPIN_TABLE, arg1: t.mfn }]).rc).toBe(-EINVAL);
    expect(box.log()).toEqual([`(XEN) mm.c:3331:d${a.domid}v0 mfn ${hx(t.mfn)} bad domain`]);
    expect(box.xen.frameInfo(t.mfn)).toEqual(pinned);
    expect(a.mmuext([{ cmd: MMUEXT_UNPIN_TABLE, arg1: 5000 }]).rc).toBe(-EINVAL);
    expect(box.log()).toEqual([`(XEN) mm.c:3331:d${a.domid}v0 mfn ${hx(5000)} bad domain`]);
    const f = a.alloc();
    const before = box.xen.frameInfo(f.mfn);
    expect(a.mmuext([{ cmd: MMUEXT_UNPIN_TABLE, arg1: f.mfn }]).rc).toBe(-EINVAL);
    expect(box.xen.frameInfo(f.mfn)).toEqual(before);
    expect(box.audit().ok).toBe(true);
  });

  it("COPY_PAGE: the source must be the domain's, the destination able to be writable; a refused copy holds nothing", () => {
    const box = new XenBox({ frames: 4096 });
    const a = box.domain('A');
    const b = box.domain('B');
    const src = a.alloc();
    a.poke(src.mfn, 9, 0xc0ffee, 0);
    const theirs = b.alloc();
    const dst = a.alloc();
    const copy = (from: number, to: number) => a.mmuext([{ cmd: MMUEXT_COPY_PAGE, arg1: to, arg2: from }]).rc;
    box.log();
    expect(copy(theirs.mfn, dst.mfn)).toBe(-EINVAL);
    expect(box.log()).toEqual([`(XEN) mm.c:3640:d${a.domid}v0 Error copying from mfn ${hx(theirs.mfn)}`]);
    expect(copy(5000, dst.mfn)).toBe(-EINVAL);
    expect(box.log()).toEqual([`(XEN) mm.c:3640:d${a.domid}v0 Error copying from mfn ${hx(5000)}`]);
    const t = tableWith(box, a, []);
    expect(a.pin(1, t.mfn)).toBe(0);
    const srcBefore = box.xen.frameInfo(src.mfn);
    const tBefore = box.xen.frameInfo(t.mfn);
    expect(copy(src.mfn, t.mfn)).toBe(-EINVAL);
    expect(box.log().at(-1)).toBe(`(XEN) mm.c:3640:d${a.domid}v0 Error copying to mfn ${hx(t.mfn)}`);
    expect(box.xen.frameInfo(src.mfn)).toEqual(srcBefore);
    expect(box.xen.frameInfo(t.mfn)).toEqual(tBefore);
    expect(a.entry(t.mfn, 9)).toEqual([0, 0]);
    expect(copy(src.mfn, dst.mfn)).toBe(0);
    expect(a.entry(dst.mfn, 9)).toEqual([0xc0ffee, 0]);
    expect(box.xen.frameInfo(src.mfn)).toEqual(srcBefore);
    expect(box.audit().ok).toBe(true);
  });

  it('CLEAR_PAGE of a page table: -EINVAL with its line, and the table keeps its entries', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const d = a.alloc();
    const t = tableWith(box, a, [[4, pteLo(d.mfn, P | A), pteHi(d.mfn)]]);
    expect(a.pin(1, t.mfn)).toBe(0);
    const before = box.xen.frameInfo(t.mfn);
    box.log();
    expect(a.mmuext([{ cmd: MMUEXT_CLEAR_PAGE, arg1: t.mfn }]).rc).toBe(-EINVAL);
    expect(box.log().at(-1)).toBe(`(XEN) mm.c:3640:d${a.domid}v0 Error clearing mfn ${hx(t.mfn)}`);
    expect(a.entry(t.mfn, 4)).toEqual([pteLo(d.mfn, P | A), pteHi(d.mfn)]);
    expect(box.xen.frameInfo(t.mfn)).toEqual(before);
    expect(box.audit().ok).toBe(true);
  });

  it('FLUSH_CACHE_GLOBAL is -EINVAL, UNMARK_SUPER -EOPNOTSUPP, an unknown command -ENOSYS: each with its line', () => {
    const box = new XenBox();
    const a = box.domain('A');
    box.log();
    const d = `d${a.domid}v0`;
    expect(a.mmuext([{ cmd: MMUEXT_FLUSH_CACHE_GLOBAL }]).rc).toBe(-EINVAL);
    expect(box.log()).toEqual([`(XEN) mm.c:3551:${d} Non-physdev domain tried to FLUSH_CACHE_GLOBAL.`]);
    expect(a.mmuext([{ cmd: MMUEXT_UNMARK_SUPER, arg1: 1 }]).rc).toBe(-EOPNOTSUPP);
    expect(box.log()).toEqual([`(XEN) mm.c:3690:${d} PV superpages are not supported`]);
    expect(a.mmuext([{ cmd: 99 }]).rc).toBe(-ENOSYS);
    expect(box.log()).toEqual([`(XEN) mm.c:3721:${d} Invalid extended pt command 0x63`]);
    expect(a.mmuext([{ cmd: MMUEXT_FLUSH_CACHE }]).rc).toBe(-EACCES);
    expect(box.log()).toEqual([`(XEN) mm.c:3551:${d} Non-physdev domain tried to FLUSH_CACHE.`]);
  });

  it("SET_LDT: 8192 entries at most, no high word in the count, no base in Xen's hole or above 4 GiB (pae)", () => {
    const box = new XenBox();
    const a = box.domain('A');
    const ldt = (lo: number, hi: number, ents: number, entsHi = 0) =>
      rawMmuext(box, a, [MMUEXT_SET_LDT, 0, lo, hi, ents, entsHi]);
    expect(ldt(0x1000, 0, 8192)).toBe(0);
    expect(ldt(0x1000, 0, 8193)).toBe(-EINVAL);
    expect(ldt(0x1000, 0, 16, 1)).toBe(-EINVAL);
    expect(ldt(0x1000, 1, 16)).toBe(-EINVAL);
    const hole = layoutFor('pae').hypervisorVirtStart;
    expect(ldt(hole, 0, 16)).toBe(-EINVAL);
    expect(ldt(hole - PAGE_SIZE, 0, 16)).toBe(0);
    box.log();
    expect(ldt(0x1800, 0, 3)).toBe(-EINVAL);
    expect(box.log()).toEqual([`(XEN) mm.c:3505:d${a.domid}v0 Bad args to SET_LDT: ptr=1800, ents=3`]);
  });
});

describe('what validation reports', () => {
  it('each promotion is counted, and the vCPU is told how many entries its call walked (512 a table, 4 a pae L3)', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const walked = () => box.t[slotBase(a.info.slots[0]!) + S_VC_PT];
    const v0 = box.xen.stats().validations;
    const t = tableWith(box, a, []);
    expect(a.pin(1, t.mfn)).toBe(0);
    expect(box.xen.stats().validations).toBe(v0 + 1);
    expect(walked()).toBe(512);
    expect(a.mmuext([{ cmd: MMUEXT_UNPIN_TABLE, arg1: t.mfn }]).rc).toBe(0);
    expect(walked()).toBe(512); // demote_l1_table
    const xenL2 = tableWith(box, a, []);
    const l3 = tableWith(box, a, [[3, pteLo(xenL2.mfn, P), pteHi(xenL2.mfn)]]);
    expect(a.pin(3, l3.mfn)).toBe(0);
    expect(walked()).toBe(4 + 512); // the L3, then the L2 below it
    expect(box.xen.stats().validations).toBe(v0 + 3);
  });

  it('pae: overwriting a not-present L2 entry that has address bits drops nothing', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = tableWith(box, a, []);
    expect(a.pin(1, l1.mfn)).toBe(0);
    const l2 = tableWith(box, a, []);
    expect(a.pin(2, l2.mfn)).toBe(0);
    const held = box.xen.frameInfo(l1.mfn);
    expect(a.mmuUpdate([[l2.mfn, 9, pteLo(l1.mfn, A), pteHi(l1.mfn)]]).rc).toBe(0);
    expect(a.mmuUpdate([[l2.mfn, 9, 0, 0]]).rc).toBe(0);
    expect(box.xen.frameInfo(l1.mfn)).toEqual(held);
    expect(box.audit().problems).toEqual([]);
  });
});

describe('flushes and base pointers asked for by mmuext_op and update_va_mapping', () => {
  /** A domain of three vCPUs, vCPU 0 calling, with an L1 hooked at VMALLOC in the kernel L2. */
  function threeVcpus(): { box: XenBox; a: Dom; l1: number; pending: () => boolean[]; clear: () => void } {
    const box = new XenBox();
    const a = box.domain('A', { vcpus: 3 });
    const l1 = tableWith(box, a, []);
    expect(a.pin(1, l1.mfn)).toBe(0);
    const root = a.info.p2m[a.info.ptBasePfn]!;
    const [lo, hi] = a.entry(root, 3);
    const l2 = (lo >>> 12) + hi * 2 ** 20;
    expect(a.mmuUpdate([[l2, vaIndex(VMALLOC, 2), pteLo(l1.mfn, P | RW | A), pteHi(l1.mfn)]]).rc).toBe(0);
    const rs = (v: number) => slotBase(a.info.slots[v]!) + S_RUNSTATE;
    return {
      box,
      a,
      l1: l1.mfn,
      pending: () => [0, 1, 2].map((v) => (Atomics.load(box.t, rs(v)) & RS_FLUSH_ANY) !== 0),
      clear: () => [0, 1, 2].forEach((v) => Atomics.store(box.t, rs(v), 0)),
    };
  }

  it('TLB_FLUSH_LOCAL and INVLPG_LOCAL flush the caller only; NEW_BASEPTR flushes the caller', () => {
    const { box, a, pending, clear } = threeVcpus();
    const s0 = box.xen.stats().shootdowns;
    for (const cmd of [MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_INVLPG_LOCAL]) {
      clear();
      expect(a.mmuext([{ cmd, arg1: VMALLOC }]).rc).toBe(0);
      expect(pending()).toEqual([true, false, false]);
    }
    clear();
    expect(a.mmuext([{ cmd: MMUEXT_NEW_BASEPTR, arg1: box.xen.baseptr(a.domid, 0) }]).rc).toBe(0);
    expect(pending()).toEqual([true, false, false]);
    expect(box.xen.stats().shootdowns).toBe(s0);
  });

  it('TLB_FLUSH_MULTI and INVLPG_MULTI flush the vCPUs of the bitmap; a bad bitmap handle is -EFAULT and flushes nobody', () => {
    const { box, a, pending, clear } = threeVcpus();
    for (const cmd of [MMUEXT_TLB_FLUSH_MULTI, MMUEXT_INVLPG_MULTI]) {
      clear();
      // The guest's encoder puts the bitmap in the data area and passes its handle.
      expect(a.mmuext([{ cmd, arg1: VMALLOC, arg2: 1 << 2 }]).rc).toBe(0);
      expect(pending()).toEqual([false, false, true]);
      clear();
      expect(rawMmuext(box, a, [cmd, 0, VMALLOC, 0, a.putMask(300, [1]), 0])).toBe(0);
      expect(pending()).toEqual([false, true, false]);
      clear();
      // A bitmap in the last two words of the data area is still inside it.
      expect(rawMmuext(box, a, [cmd, 0, VMALLOC, 0, a.putMask(S_DATA_WORDS - 2, [1]), 0])).toBe(0);
      expect(pending()).toEqual([false, true, false]);
      clear();
      expect(rawMmuext(box, a, [cmd, 0, VMALLOC, 0, S_DATA_WORDS - 1, 0])).toBe(-EFAULT);
      expect(rawMmuext(box, a, [cmd, 0, VMALLOC, 0, 0xffffffff, 0])).toBe(-EFAULT);
      expect(pending()).toEqual([false, false, false]);
    }
  });

  it('update_va_mapping: UVMF_LOCAL flushes the caller only, UVMF_NONE nobody, a bitmap the vCPUs it names', () => {
    const { box, a, l1, pending, clear } = threeVcpus();
    const f = a.alloc();
    const held = box.xen.frameInfo(l1);
    clear();
    expect(a.uva(VMALLOC, pteLo(f.mfn, P | A), pteHi(f.mfn), UVMF_INVLPG | UVMF_LOCAL)).toBe(0);
    // The L1 was held (get_page) only for the update.
    expect(box.xen.frameInfo(l1)).toEqual(held);
    expect(pending()).toEqual([true, false, false]);
    clear();
    expect(a.uva(VMALLOC, pteLo(f.mfn, P | A | _PAGE_DIRTY), pteHi(f.mfn), UVMF_NONE)).toBe(0);
    expect(pending()).toEqual([false, false, false]);
    a.putMask(300, [1]);
    expect(a.uva(VMALLOC, pteLo(f.mfn, P | A), pteHi(f.mfn), UVMF_TLB_FLUSH | (300 * 4))).toBe(0);
    expect(pending()).toEqual([false, true, false]);
    expect(box.audit().ok).toBe(true);
  });

  it('pae: a virtual address with a high word is -EINVAL and touches nothing', () => {
    const { box, a, pending, clear } = threeVcpus();
    const f = a.alloc();
    clear();
    box.log();
    expect(
      a.rawHypercall(__HYPERVISOR_update_va_mapping, [
        [VMALLOC, 1],
        [pteLo(f.mfn, P | A), 0],
        UVMF_TLB_FLUSH | UVMF_ALL,
      ]),
    ).toBe(-EINVAL);
    expect(pending()).toEqual([false, false, false]);
    expect(box.log()).toEqual([]); // refused before any walk: no "Could not find L1"
    expect(box.audit().ok).toBe(true);
  });

  it('NEW_BASEPTR takes the new root before it drops the old one; the same root again changes no count; mfn 0 is refused', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const root = box.xen.baseptr(a.domid, 0);
    const held = box.xen.frameInfo(root)!;
    expect(a.mmuext([{ cmd: MMUEXT_NEW_BASEPTR, arg1: root }]).rc).toBe(0);
    expect(box.xen.frameInfo(root)).toEqual(held);
    // mfn 0 is Xen's: no base pointer, and the old one stays.
    box.log();
    expect(a.mmuext([{ cmd: MMUEXT_NEW_BASEPTR, arg1: 0 }]).rc).toBe(-EINVAL);
    expect(box.log().at(-1)).toBe(`(XEN) mm.c:3044:d${a.domid}v0 Error while installing new baseptr 0`);
    expect(box.xen.baseptr(a.domid, 0)).toBe(root);
    expect(box.xen.frameInfo(root)).toEqual(held);
    // A second L3 that shares nothing with the first: a fresh slot-3 L2.
    const xenL2 = tableWith(box, a, []);
    const l3 = tableWith(box, a, [[3, pteLo(xenL2.mfn, P), pteHi(xenL2.mfn)]]);
    expect(a.mmuext([{ cmd: MMUEXT_NEW_BASEPTR, arg1: l3.mfn }]).rc).toBe(0);
    expect(box.xen.baseptr(a.domid, 0)).toBe(l3.mfn);
    expect(box.xen.frameInfo(l3.mfn)!.typeCount).toBe(1);
    expect(box.xen.frameInfo(root)!.typeCount).toBe(held.typeCount - 1);
    expect(box.xen.frameInfo(root)!.count).toBe(held.count - 1);
    expect(box.audit().ok).toBe(true);
  });

  it('x86_64: NEW_USER_BASEPTR takes an L4 reference, 0 drops it, and a bad root is refused with its line', () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const user = tableWith(box, a, []);
    expect(a.mmuext([{ cmd: MMUEXT_NEW_USER_BASEPTR, arg1: user.mfn }]).rc).toBe(0);
    expect(box.xen.frameInfo(user.mfn)!.typeHi >>> 29).toBe(4);
    expect(box.xen.frameInfo(user.mfn)!.typeCount).toBe(1);
    expect(box.audit().ok).toBe(true);
    expect(a.mmuext([{ cmd: MMUEXT_NEW_USER_BASEPTR, arg1: 0 }]).rc).toBe(0);
    expect(box.xen.frameInfo(user.mfn)!.typeCount).toBe(0);
    const w = a.alloc(); // RW in the direct map: cannot be an L4
    box.log();
    expect(a.mmuext([{ cmd: MMUEXT_NEW_USER_BASEPTR, arg1: w.mfn }]).rc).toBe(-EINVAL);
    expect(box.log().at(-1)).toBe(`(XEN) mm.c:3384:d${a.domid}v0 Error while installing new user baseptr ${hx(w.mfn)}`);
    expect(box.audit().ok).toBe(true);
  });
});

describe('the type-change flush (tlbflush_filter) of a frame that had no type', () => {
  it("a domain built on a destroyed domain's frames flushes nobody: a frame with no type holds no stale translation of its new owner", () => {
    const box = new XenBox();
    const a = box.domain('A', { vcpus: 2 });
    const aFrames = [...a.info.p2m];
    box.xen.destroyDomain(a.domid);
    // A's tables fell to type count 0 just now, with no flush since: their stamps equal the
    // clock that B's vCPUs start with. B takes them from type none, which needs no flush.
    const before = box.xen.stats().shootdowns;
    const b = box.domain('B', { vcpus: 2 });
    expect(aFrames).toContain(box.xen.baseptr(b.domid, 0)); // B's root was one of A's frames
    expect(box.xen.stats().shootdowns).toBe(before);
    const rs = (v: number) => slotBase(b.info.slots[v]!) + S_RUNSTATE;
    expect([0, 1].map((v) => Atomics.load(box.t, rs(v)) & RS_FLUSH_ANY)).toEqual([0, 0]);
  });
});

describe('mod_lN_entry adjusts x86_64 entries as promotion does (adjust_guest_lNe)', () => {
  it('x86_64: kernel L1 entries get US and _PAGE_GUEST_KERNEL, user ones G; L2/L3 get US, L4 A|US; absent entries stay as written', () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const d = a.alloc();
    const l1 = tableWith(box, a, []);
    const l2 = tableWith(box, a, []);
    const l3 = tableWith(box, a, []);
    const l4 = tableWith(box, a, []);
    expect(a.pin(1, l1.mfn)).toBe(0);
    expect(a.pin(2, l2.mfn)).toBe(0);
    expect(a.pin(3, l3.mfn)).toBe(0);
    expect(a.pin(4, l4.mfn)).toBe(0);
    const U = _PAGE_USER;
    expect(a.mmuUpdate([[l1.mfn, 0, pteLo(d.mfn, P | A), pteHi(d.mfn)]]).rc).toBe(0);
    expect(a.entry(l1.mfn, 0)).toEqual([pteLo(d.mfn, P | A | U), pteHi(d.mfn) | _PAGE_GUEST_KERNEL_HI]);
    expect(a.mmuUpdate([[l1.mfn, 1, pteLo(d.mfn, P | A | U), pteHi(d.mfn)]]).rc).toBe(0);
    expect(a.entry(l1.mfn, 1)).toEqual([pteLo(d.mfn, P | A | U | _PAGE_GLOBAL), pteHi(d.mfn)]);
    expect(a.mmuUpdate([[l1.mfn, 2, 0x3000, 0x5]]).rc).toBe(0);
    expect(a.entry(l1.mfn, 2)).toEqual([0x3000, 0x5]);
    expect(a.mmuUpdate([[l2.mfn, 0, pteLo(l1.mfn, P | RW | A), pteHi(l1.mfn)]]).rc).toBe(0);
    expect(a.entry(l2.mfn, 0)).toEqual([pteLo(l1.mfn, P | RW | A | U), pteHi(l1.mfn)]);
    expect(a.mmuUpdate([[l3.mfn, 0, pteLo(l2.mfn, P | RW), pteHi(l2.mfn)]]).rc).toBe(0);
    expect(a.entry(l3.mfn, 0)).toEqual([pteLo(l2.mfn, P | RW | U), pteHi(l2.mfn)]);
    expect(a.mmuUpdate([[l4.mfn, 0, pteLo(l3.mfn, P | RW), pteHi(l3.mfn)]]).rc).toBe(0);
    expect(a.entry(l4.mfn, 0)).toEqual([pteLo(l3.mfn, P | RW | A | U), pteHi(l3.mfn)]);
    expect(a.mmuUpdate([[l4.mfn, 1, 0x4000, 0x6]]).rc).toBe(0);
    expect(a.entry(l4.mfn, 1)).toEqual([0x4000, 0x6]);
    expect(box.audit().ok).toBe(true);
  });

  it('pae: entries are written as the guest gave them', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const d = a.alloc();
    const l1 = tableWith(box, a, []);
    const l2 = tableWith(box, a, []);
    expect(a.pin(1, l1.mfn)).toBe(0);
    expect(a.pin(2, l2.mfn)).toBe(0);
    expect(a.mmuUpdate([[l1.mfn, 0, pteLo(d.mfn, P | A), pteHi(d.mfn)]]).rc).toBe(0);
    expect(a.entry(l1.mfn, 0)).toEqual([pteLo(d.mfn, P | A), pteHi(d.mfn)]);
    expect(a.mmuUpdate([[l2.mfn, 0, pteLo(l1.mfn, P | RW | A), pteHi(l1.mfn)]]).rc).toBe(0);
    expect(a.entry(l2.mfn, 0)).toEqual([pteLo(l1.mfn, P | RW | A), pteHi(l1.mfn)]);
    expect(box.audit().ok).toBe(true);
  });

  it('a _PAGE_GUEST_KERNEL bit in an L1 entry: allowed from an x86_64 guest, Bad L1 flags from a pae one', () => {
    const x = new XenBox({ paging: 'x86_64' });
    const a = x.domain('A');
    const d = a.alloc();
    const l1 = tableWith(x, a, []);
    expect(a.pin(1, l1.mfn)).toBe(0);
    expect(a.mmuUpdate([[l1.mfn, 0, pteLo(d.mfn, P | A), pteHi(d.mfn) | _PAGE_GUEST_KERNEL_HI]]).rc).toBe(0);
    expect(a.mmuUpdate([[l1.mfn, 1, pteLo(d.mfn, P | A), pteHi(d.mfn) | 0x00200000]]).rc).toBe(-EINVAL);
    const p = new XenBox();
    const b = p.domain('B');
    const e = b.alloc();
    const t = tableWith(p, b, [[0, pteLo(e.mfn, P | A), pteHi(e.mfn) | _PAGE_GUEST_KERNEL_HI]]);
    expect(b.pin(1, t.mfn)).toBe(-EINVAL);
    // Xen prints the high flags (bits 52..63) folded into bits 12..23.
    expect(p.log()[0]).toMatch(/Bad L1 flags 1000$/);
  });
});

describe('mmuext_op arguments as wide as Xen takes them', () => {
  it('x86_64: SET_LDT may name a base above 4 GiB (only a pae guest is held to 32 bits)', () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    expect(rawMmuext(box, a, [MMUEXT_SET_LDT, 0, 0, 1, 16, 0])).toBe(0);
  });

  it('pae: NEW_USER_BASEPTR is -EINVAL even for a valid L3, and takes nothing', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const root = box.xen.baseptr(a.domid, 0);
    const held = box.xen.frameInfo(root);
    expect(a.mmuext([{ cmd: MMUEXT_NEW_USER_BASEPTR, arg1: root }]).rc).toBe(-EINVAL);
    expect(box.xen.frameInfo(root)).toEqual(held);
  });

  it('a MULTI flush bitmap has 64 bits: its high word names vCPUs 32..63', () => {
    const box = new XenBox({ maxSlots: 34 });
    const a = box.domain('A', { vcpus: 33 });
    const rs = (v: number) => slotBase(a.info.slots[v]!) + S_RUNSTATE;
    for (let v = 0; v < 33; v++) Atomics.store(box.t, rs(v), 0);
    expect(rawMmuext(box, a, [MMUEXT_TLB_FLUSH_MULTI, 0, 0, 0, a.putMask(300, [32]), 0])).toBe(0);
    expect(Atomics.load(box.t, rs(32)) & RS_FLUSH_PENDING).toBe(RS_FLUSH_PENDING);
    expect(Atomics.load(box.t, rs(0)) & RS_FLUSH_PENDING).toBe(0);
    expect(Atomics.load(box.t, rs(1)) & RS_FLUSH_PENDING).toBe(0);
  });
});

describe('update_va_mapping finds the L1 as the MMU would (guest_map_l1e)', () => {
  function kernelL2(a: Dom): number {
    const root = a.info.p2m[a.info.ptBasePfn]!;
    const [lo, hi] = a.entry(root, 3);
    return (lo >>> 12) + hi * 2 ** 20;
  }

  it('a not-present L2 entry maps nothing, whatever address it holds: -EINVAL, "Could not find L1"', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = tableWith(box, a, []);
    expect(a.pin(1, l1.mfn)).toBe(0);
    const f = a.alloc();
    expect(a.mmuUpdate([[kernelL2(a), vaIndex(VMALLOC, 2), pteLo(l1.mfn, RW | A), pteHi(l1.mfn)]]).rc).toBe(0);
    box.log();
    expect(a.uva(VMALLOC, pteLo(f.mfn, P | A), pteHi(f.mfn), 0)).toBe(-EINVAL);
    expect(box.log()).toEqual([
      `(XEN) pv/mm.c:4360:d${a.domid}v0 Could not find L1 for va ${hx(VMALLOC)} (no valid L1 table maps it)`,
    ]);
    expect(a.entry(l1.mfn, 0)).toEqual([0, 0]);
    expect(box.audit().ok).toBe(true);
  });

  it('a linear L2 entry leads to an L2, not an L1: -EINVAL', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l2 = kernelL2(a);
    const f = a.alloc();
    expect(a.mmuUpdate([[l2, vaIndex(VMALLOC, 2), pteLo(l2, P | A), pteHi(l2)]]).rc).toBe(0); // read-only self-map
    const before = a.entry(l2, 0);
    expect(a.uva(VMALLOC, pteLo(f.mfn, P | A), pteHi(f.mfn), 0)).toBe(-EINVAL);
    expect(a.entry(l2, 0)).toEqual(before);
    expect(box.audit().ok).toBe(true);
  });

  it('x86_64: user addresses (VA 0, and 4 MiB past a not-present L2 entry) are updated through the L1 that maps them', () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    const f = a.alloc();
    const l1 = tableWith(box, a, []);
    const l2 = tableWith(box, a, [
      [0, pteLo(l1.mfn, P | RW | A), pteHi(l1.mfn)],
      [1, 0x1000, 0], // not present
      [2, pteLo(l1.mfn, P | RW | A), pteHi(l1.mfn)],
    ]);
    const l3 = tableWith(box, a, [[0, pteLo(l2.mfn, P | RW | A), pteHi(l2.mfn)]]);
    expect(a.pin(3, l3.mfn)).toBe(0);
    const root = a.info.p2m[a.info.ptBasePfn]!;
    expect(a.mmuUpdate([[root, 0, pteLo(l3.mfn, P | RW | A), pteHi(l3.mfn)]]).rc).toBe(0);
    expect(a.uva(0, pteLo(f.mfn, P | A | _PAGE_USER), pteHi(f.mfn), 0)).toBe(0);
    expect(a.entry(l1.mfn, 0)[0]).toBe(pteLo(f.mfn, P | A | _PAGE_USER | _PAGE_GLOBAL));
    // 4 MiB: through L2 entry 2, past a not-present entry 1 with address bits.
    expect(a.uva(0x400000 + 0x1000, 0, 0, 0)).toBe(0);
    expect(box.audit().ok).toBe(true);
  });

  it("the walk reads each entry's own high word, whatever a not-present neighbour holds", () => {
    const box = new XenBox();
    const a = box.domain('A');
    const l1 = tableWith(box, a, []);
    expect(a.pin(1, l1.mfn)).toBe(0);
    const l2 = kernelL2(a);
    const f = a.alloc();
    expect(a.mmuUpdate([[l2, vaIndex(VMALLOC, 2) - 1, 0x1000, 0x1]]).rc).toBe(0); // not present, junk
    expect(a.mmuUpdate([[l2, vaIndex(VMALLOC, 2), pteLo(l1.mfn, P | RW | A), pteHi(l1.mfn)]]).rc).toBe(0);
    expect(a.uva(VMALLOC, pteLo(f.mfn, P | A), pteHi(f.mfn), 0)).toBe(0);
    expect(a.entry(l1.mfn, 0)).toEqual([pteLo(f.mfn, P | A), pteHi(f.mfn)]);
    expect(box.audit().ok).toBe(true);
  });

  it('a flush bitmap of update_va_mapping has 64 bits too: its high word names vCPUs 32..63', () => {
    const box = new XenBox({ maxSlots: 34 });
    const a = box.domain('A', { vcpus: 33 });
    const l1 = tableWith(box, a, []);
    expect(a.pin(1, l1.mfn)).toBe(0);
    expect(a.mmuUpdate([[kernelL2(a), vaIndex(VMALLOC, 2), pteLo(l1.mfn, P | RW | A), pteHi(l1.mfn)]]).rc).toBe(0);
    const rs = (v: number) => slotBase(a.info.slots[v]!) + S_RUNSTATE;
    for (let v = 0; v < 33; v++) Atomics.store(box.t, rs(v), 0);
    a.putMask(300, [32]);
    expect(a.uva(VMALLOC, 0, 0, UVMF_INVLPG | (300 * 4))).toBe(0);
    expect(Atomics.load(box.t, rs(32)) & RS_FLUSH_PENDING).toBe(RS_FLUSH_PENDING);
    expect(Atomics.load(box.t, rs(1)) & RS_FLUSH_PENDING).toBe(0);
  });
});

describe('the references of pins and base pointers are no linear entries', () => {
  /** Make the domain's pfn 0 (machine frame 1, the first a domain gets) an empty table of `level`. */
  function frameOneAsTable(a: Dom, level: number, entries: Array<[number, number, number]> = []): void {
    expect(a.info.p2m[0]).toBe(1);
    expect(a.mmuext([{ cmd: MMUEXT_CLEAR_PAGE, arg1: 1 }]).rc).toBe(0);
    for (const [i, lo, hi] of entries) a.poke(1, i, lo, hi);
    expect(a.makeReadOnly(0)).toBe(0);
    expect(a.pin(level, 1)).toBe(0);
  }

  it('re-pinning or unpinning an L1 leaves every linear count alone, even beside another L1', () => {
    const box = new XenBox();
    const a = box.domain('A');
    frameOneAsTable(a, 1);
    const t = tableWith(box, a, []);
    expect(a.pin(1, t.mfn)).toBe(0);
    expect(a.pin(1, t.mfn)).toBe(-EINVAL); // already pinned: the second reference is dropped again
    expect(box.audit().problems).toEqual([]);
    expect(a.mmuext([{ cmd: MMUEXT_UNPIN_TABLE, arg1: t.mfn }]).rc).toBe(0);
    expect(box.audit().problems).toEqual([]);
  });

  it('pae: switching the base pointer drops the old root as a root, not as a linear target', () => {
    const box = new XenBox();
    const a = box.domain('A');
    const xenL2 = tableWith(box, a, []);
    frameOneAsTable(a, 3, [[3, pteLo(xenL2.mfn, P), pteHi(xenL2.mfn)]]);
    expect(a.mmuext([{ cmd: MMUEXT_NEW_BASEPTR, arg1: 1 }]).rc).toBe(0);
    expect(box.audit().problems).toEqual([]);
  });

  it('x86_64: clearing the user base pointer drops the old one as a root, not as a linear target', () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    frameOneAsTable(a, 4);
    const user = tableWith(box, a, []);
    expect(a.mmuext([{ cmd: MMUEXT_NEW_USER_BASEPTR, arg1: user.mfn }]).rc).toBe(0);
    expect(a.mmuext([{ cmd: MMUEXT_NEW_USER_BASEPTR, arg1: 0 }]).rc).toBe(0);
    expect(box.audit().problems).toEqual([]);
  });
});
