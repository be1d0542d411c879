/*
 * Rule tests written to kill the mutants of hypervisor/domain.ts that survived `npm run mutate`
 * (see MUTANTS.md): what a domain config may be, the builder's capacity refusals, the vCPU
 * slots a domain takes and gives back, what the PV builder leaves in the guest's memory
 * (the P2M list, start_info, the direct map and its flags), and what destroying a domain
 * releases.
 */
import { describe, expect, it } from 'vitest';
import {
  MMUEXT_NEW_USER_BASEPTR,
  _PAGE_DIRTY,
  _PAGE_GUEST_KERNEL_HI,
  _PAGE_USER,
  FRAME_WORDS,
  type PagingMode,
} from '../../src/abi/xen.js';
import { pteMfn } from '../../src/abi/pte.js';
import {
  RS_FLUSH_PENDING,
  RS_RUNNING,
  S_RUNSTATE,
  S_STATE,
  SLOT_DONE,
  SLOT_IDLE,
  layoutFor,
  slotBase,
  vaIndex,
} from '../../src/abi/layout.js';
import type { DomainConfig, DomainInfo } from '../../src/abi/control.js';
import { XenBox } from '../helpers/xenbox.js';
import { A, P, RW, tableWith } from './helpers.js';

/** What createDomain / destroyDomain threw, as "Class: message"; fails when nothing was thrown. */
function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    return `${(e as Error).constructor.name}: ${(e as Error).message}`;
  }
  throw new Error('expected a refusal, but the call succeeded');
}

/** A config as a careless toolstack might pass it (the control port carries plain JSON). */
const raw = (cfg: unknown) => cfg as DomainConfig;

describe('validateDomainConfig: what a domain config may be', () => {
  it('a config that is not an object is refused as such, and nothing is taken', () => {
    const box = new XenBox({ frames: 2048 });
    const free0 = box.xen.freeFrames();
    for (const cfg of [null, 42, 'A', undefined]) {
      expect(
        refusal(() => box.xen.createDomain(raw(cfg))),
        String(cfg),
      ).toBe('TypeError: domain config must be an object');
    }
    expect(box.xen.freeFrames()).toBe(free0);
    expect(box.xen.domainIds()).toEqual([]);
  });

  it('a name must be a string of 1..64 characters: 64 is accepted, 65, 0 and a number are refused', () => {
    const box = new XenBox({ frames: 2048 });
    const long = 'n'.repeat(65);
    expect(refusal(() => box.xen.createDomain(raw({ name: 42, frames: 256, vcpus: 1 })))).toBe(
      'TypeError: domain name must be a string of 1..64 characters, got 42',
    );
    expect(refusal(() => box.xen.createDomain({ name: long, frames: 256, vcpus: 1 }))).toBe(
      `TypeError: domain name must be a string of 1..64 characters, got "${long}"`,
    );
    expect(refusal(() => box.xen.createDomain({ name: '', frames: 256, vcpus: 1 }))).toBe(
      'TypeError: domain name must be a string of 1..64 characters, got ""',
    );
    expect(box.xen.domainIds()).toEqual([]);
    const info = box.xen.createDomain({ name: 'n'.repeat(64), frames: 256, vcpus: 1 });
    expect(info.name).toBe('n'.repeat(64));
  });

  it('frames must be an integer >= 64: 64 builds a domain, 63 and 64.5 are refused', () => {
    const box = new XenBox({ frames: 2048 });
    const free0 = box.xen.freeFrames();
    expect(refusal(() => box.domain('A', { frames: 63 }))).toBe(
      'RangeError: domain "A": frames must be an integer >= 64, got 63',
    );
    expect(refusal(() => box.domain('A', { frames: 64.5 }))).toBe(
      'RangeError: domain "A": frames must be an integer >= 64, got 64.5',
    );
    expect(box.xen.freeFrames()).toBe(free0);
    const a = box.domain('A', { frames: 64 });
    expect(a.info.nrPages).toBe(64);
    expect(box.xen.freeFrames()).toBe(free0 - 64);
    expect(box.audit().ok).toBe(true);
  });

  it('vcpus must be an integer in 1..64 (MAX_VCPUS_PER_DOMAIN), even when more slots are free', () => {
    const box = new XenBox({ frames: 2048, maxSlots: 66 });
    expect(refusal(() => box.domain('A', { vcpus: 65 }))).toBe(
      'RangeError: domain "A": vcpus must be an integer in 1..64, got 65',
    );
    expect(box.xen.domainIds()).toEqual([]);
    const a = box.domain('A', { vcpus: 64 });
    expect(a.info.slots).toEqual(Array.from({ length: 64 }, (_, s) => s));
    expect(box.xen.baseptr(a.domid, 63)).toBe(a.info.p2m[a.info.ptBasePfn]);
  });

  it('lowmemFrames, when given, must be an integer >= 64: 64 is accepted, 63 and 100.5 are refused', () => {
    const box = new XenBox({ frames: 2048 });
    expect(refusal(() => box.domain('A', { lowmemFrames: 63 }))).toBe(
      'RangeError: domain "A": lowmemFrames must be an integer >= 64, got 63',
    );
    expect(refusal(() => box.domain('A', { lowmemFrames: 100.5 }))).toBe(
      'RangeError: domain "A": lowmemFrames must be an integer >= 64, got 100.5',
    );
    expect(box.xen.domainIds()).toEqual([]);
    const a = box.domain('A', { lowmemFrames: 64 });
    expect(a.info.lowmemPages).toBe(64);
    expect(box.audit().ok).toBe(true);
  });
});

describe("createDomain: what the machine can't hold is refused before anything is taken", () => {
  it('the boot frames (start_info, P2M list, page tables) and 16 free frames must fit in lowmem: exactly fitting builds', () => {
    // 46080 frames need a 45-frame P2M list: 1 + 45 + 3 tables = 49 boot frames, 49 + 16 > 64.
    const box = new XenBox({ frames: 46_081, maxSlots: 2 });
    const free0 = box.xen.freeFrames();
    expect(refusal(() => box.domain('A', { frames: 46_080, lowmemFrames: 64 }))).toBe(
      'RangeError: domain "A": 64 lowmem frames cannot hold its 49 boot frames',
    );
    expect(box.xen.freeFrames()).toBe(free0);
    expect(box.xen.domainIds()).toEqual([]);
    // 45056 frames: a 44-frame P2M list, 48 boot frames, 48 + 16 = 64 exactly.
    const a = box.domain('A', { frames: 45_056, lowmemFrames: 64 });
    expect(a.info).toMatchObject({ p2mFrames: 44, nrPtFrames: 3, firstFreePfn: 48, lowmemPages: 64 });
    expect(box.audit().ok).toBe(true);
  });

  it('a domain may take every free frame, and the next one is refused with what is free', () => {
    const box = new XenBox({ frames: 4096 });
    const free0 = box.xen.freeFrames();
    const a = box.domain('A', { frames: free0 });
    expect(a.info.nrPages).toBe(free0);
    expect(box.xen.freeFrames()).toBe(0);
    expect(refusal(() => box.domain('B', { frames: 64 }))).toBe(
      'RangeError: domain "B" wants 64 frames but only 0 are free',
    );
    expect(box.audit().ok).toBe(true);
  });

  it('a domain wanting more vCPUs than there are free slots is refused, and takes no frame and no slot', () => {
    const box = new XenBox({ frames: 4096, maxSlots: 4 });
    const a = box.domain('A', { vcpus: 3 });
    const free0 = box.xen.freeFrames();
    expect(refusal(() => box.domain('B', { vcpus: 2 }))).toBe(
      'RangeError: domain "B" wants 2 vCPUs but only 1 vCPU slots are free',
    );
    expect(box.xen.freeFrames()).toBe(free0);
    expect(box.xen.domainIds()).toEqual([a.domid]);
    expect(box.domain('B', { vcpus: 1 }).info.slots).toEqual([3]);
  });
});

describe("vCPU slots: a domain's vCPUs take the lowest free slots and give them back", () => {
  it('the doorbell scan range (slotsInUse) covers every bound slot; a destroyed domain leaves its slots free, idle and not running', () => {
    const box = new XenBox({ frames: 4096, maxSlots: 4 });
    expect(box.xen.slotsInUse()).toBe(0);
    const a = box.domain('A', { vcpus: 2 });
    expect(a.info.slots).toEqual([0, 1]);
    expect(box.xen.slotsInUse()).toBe(2);
    const b = box.domain('B', { vcpus: 1 });
    expect(b.info.slots).toEqual([2]);
    expect(box.xen.slotsInUse()).toBe(3);
    // A's vCPU threads leave their slots as they were: running, a flush posted, a call done.
    for (const s of a.info.slots) {
      Atomics.store(box.t, slotBase(s) + S_RUNSTATE, RS_RUNNING | RS_FLUSH_PENDING);
      Atomics.store(box.t, slotBase(s) + S_STATE, SLOT_DONE);
    }
    box.xen.destroyDomain(a.domid);
    // C reuses A's two slots and takes the last one: the scan range grows to cover it.
    const c = box.domain('C', { vcpus: 3 });
    expect(c.info.slots).toEqual([0, 1, 3]);
    expect(box.xen.slotsInUse()).toBe(4);
    for (const s of c.info.slots) {
      expect(Atomics.load(box.t, slotBase(s) + S_RUNSTATE), `slot ${s}`).toBe(0);
      expect(Atomics.load(box.t, slotBase(s) + S_STATE), `slot ${s}`).toBe(SLOT_IDLE);
    }
    // B's slot, next to C's, is untouched; B and C run.
    expect(Atomics.load(box.t, slotBase(2) + S_STATE)).toBe(SLOT_IDLE);
    expect(c.makeReadOnly(c.alloc().pfn)).toBe(0);
    expect(b.makeReadOnly(b.alloc().pfn)).toBe(0);
    expect(box.audit().ok).toBe(true);
  });
});

/** The guest's view of its direct map: the entry at each level on the way to `pfn`. */
function directMapWalk(box: XenBox, info: DomainInfo, pfn: number): Array<[number, number]> {
  const layout = layoutFor(box.paging);
  const va = layout.pageOffset + pfn * 4096;
  let table = box.xen.baseptr(info.domid, 0);
  const path: Array<[number, number]> = [];
  for (let level = layout.levels; level >= 1; level--) {
    const i = vaIndex(va, level);
    const lo = box.mem32[table * FRAME_WORDS + 2 * i]!;
    const hi = box.mem32[table * FRAME_WORDS + 2 * i + 1]!;
    path.push([lo, hi]);
    table = pteMfn(lo, hi);
  }
  return path;
}

describe('the PV domain builder: what the guest finds in its memory', () => {
  for (const paging of ['pae', 'x86_64'] as PagingMode[]) {
    it(`${paging}: the P2M list holds every pfn's mfn, start_info says where everything is, and no other domain's frame is written`, () => {
      const box = new XenBox({ paging, frames: 8192 });
      // A first, sized so that B's first L1 lands on mfn 2048 (B's frames follow A's).
      const firstL1Pfn = paging === 'pae' ? 5 : 6;
      const first = box.domain('A', { frames: 2047 - firstL1Pfn });
      const aWords = (1 + first.info.nrPages) * FRAME_WORDS; // Xen's frame 0 and A's frames
      const before = box.mem32.slice(0, aWords);
      const b = box.domain('B', { frames: 2048, vcpus: 2 });
      const i = b.info;
      expect(i.p2m[firstL1Pfn]).toBe(2048);
      expect(i.p2mFrames).toBe(2);
      for (let pfn = 0; pfn < i.nrPages; pfn++) {
        const word = i.p2m[i.p2mPfn + (pfn >>> 10)]! * FRAME_WORDS + (pfn % 1024);
        if (box.mem32[word] !== i.p2m[pfn]) expect(box.mem32[word], `P2M entry of pfn ${pfn}`).toBe(i.p2m[pfn]);
      }
      const si = i.p2m[i.startInfoPfn]! * FRAME_WORDS;
      expect(Array.from(box.mem32.subarray(si, si + 8))).toEqual([
        i.nrPages,
        i.ptFirstPfn,
        i.nrPtFrames,
        i.p2mPfn,
        i.p2mFrames,
        i.firstFreePfn,
        i.lowmemPages,
        i.domid,
      ]);
      // Building B wrote nothing outside B's frames.
      const after = box.mem32.subarray(0, aWords);
      const changed = after.findIndex((w, k) => w !== before[k]);
      expect(changed, `word ${changed % FRAME_WORDS} of mfn ${Math.floor(changed / FRAME_WORDS)}`).toBe(-1);
      expect(before[first.info.p2m[0]! * FRAME_WORDS]).toBe(first.info.nrPages);
    });

    it(`${paging}: the direct map maps every lowmem pfn at its own frame, page tables read-only, the rest RW; upper entries carry the flags Xen's builder gives`, () => {
      const box = new XenBox({ paging, frames: 4096 });
      const a = box.domain('A', { frames: 1536, vcpus: 1 });
      const i = a.info;
      const x64 = paging === 'x86_64';
      const isPt = (pfn: number) => pfn >= i.ptFirstPfn && pfn < i.ptFirstPfn + i.nrPtFrames;
      const U = x64 ? _PAGE_USER : 0;
      const upper = P | RW | A | _PAGE_DIRTY;
      for (let pfn = 0; pfn < i.lowmemPages; pfn++) {
        const path = directMapWalk(box, i, pfn);
        const leaf = path.at(-1)!;
        const flags = isPt(pfn) ? P | A : P | RW | A | _PAGE_DIRTY;
        const got = { mfn: pteMfn(leaf[0], leaf[1]), lo: leaf[0] & 0xfff, hi: leaf[1] };
        const exp = { mfn: i.p2m[pfn]!, lo: flags | U, hi: x64 ? _PAGE_GUEST_KERNEL_HI : 0 };
        if (got.mfn !== exp.mfn || got.lo !== exp.lo || got.hi !== exp.hi) expect(got, `pfn ${pfn}`).toEqual(exp);
        const flagsAbove = path.slice(0, -1).map(([lo]) => lo & 0xfff);
        // pae: an L3 entry (a PDPTE) is present and nothing else; x86_64: Xen adds A|US to L4, US below.
        const expAbove = x64 ? [upper | A | U, upper | U, upper | U] : [P, upper];
        if (flagsAbove.join() !== expAbove.join()) expect(flagsAbove, `pfn ${pfn}`).toEqual(expAbove);
      }
      // Every page-table frame is a validated table with no RW mapping; start_info and the P2M list are RW.
      for (let pfn = 0; pfn < i.firstFreePfn; pfn++) {
        const f = box.xen.frameInfo(i.p2m[pfn]!)!;
        if (isPt(pfn)) expect(f.typeHi >>> 29, `pfn ${pfn}`).toBeGreaterThanOrEqual(1);
        else expect([f.typeHi >>> 29, f.typeCount], `pfn ${pfn}`).toEqual([7, 1]);
      }
      expect(box.audit()).toMatchObject({ ok: true, isolationViolations: 0 });
    });
  }
});

describe("the builder writes only the new domain's frames, whatever order the heap hands them out in", () => {
  for (const paging of ['pae', 'x86_64'] as PagingMode[]) {
    it(`${paging}: a table right above another domain's last frame gets its entry 0 without touching that frame`, () => {
      const box = new XenBox({ paging, frames: 4096 });
      // Heap games: after these, the heap hands out 3 frames, then the frame right above Y's last one.
      const a0 = box.domain('A0', { frames: 67 }); // mfns 1..67
      const y = box.domain('Y', { frames: 64 }); // 68..131
      box.xen.destroyDomain(a0.domid); // 1..67 back, 67 on top
      const x = box.domain('X', { frames: 67 }); // takes 67, 66, ..., 1
      box.xen.destroyDomain(x.domid); // pushed in pfn order: 1 on top
      box.domain('Z', { frames: 64 }); // takes 1..64: 65, 66, 67 left on top
      const yLast = y.info.p2m[63]!;
      y.poke(yLast, 511, 0x5a5a5000, 0x00000123); // Y's data in its last frame's last words
      const yBefore = box.mem32.slice(y.info.p2m[0]! * FRAME_WORDS, (yLast + 1) * FRAME_WORDS);
      const b = box.domain('B', { frames: 256 });
      const rootPfn = b.info.ptBasePfn;
      expect(b.info.p2m.slice(0, rootPfn + 2)).toEqual([65, 66, 67, yLast + 1]);
      const yAfter = box.mem32.subarray(y.info.p2m[0]! * FRAME_WORDS, (yLast + 1) * FRAME_WORDS);
      const changed = yAfter.findIndex((w, k) => w !== yBefore[k]);
      expect(
        changed,
        `word ${changed % FRAME_WORDS} of Y's frame ${y.info.p2m[0]! + Math.floor(changed / FRAME_WORDS)}`,
      ).toBe(-1);
      for (let pfn = 0; pfn < b.info.lowmemPages; pfn++) {
        const [lo, hi] = directMapWalk(box, b.info, pfn).at(-1)!;
        if (pteMfn(lo, hi) !== b.info.p2m[pfn]) expect(pteMfn(lo, hi), `pfn ${pfn}`).toBe(b.info.p2m[pfn]);
      }
      expect(box.audit()).toMatchObject({ ok: true, isolationViolations: 0 });
    });
  }
});

describe('the builder reads back only its own entries', () => {
  it("x86_64: a 1 GiB direct map whose L2 sits at mfn 1024 fills that L2 to its last entry, whatever another domain's start_info holds", () => {
    // 1 GiB of machine memory: about 0.6 s on the 2-core machine (rules.test.ts's 2 GiB test: 1.1 s).
    const box = new XenBox({ paging: 'x86_64', frames: 1 + 764 + 262_144, maxSlots: 2 });
    // A first, so that B's L2 (pfn 259: start_info, 256 P2M frames, L4, L3) lands on mfn 1024.
    const a = box.domain('A', { frames: 764 });
    expect(box.mem32[a.info.p2m[0]! * FRAME_WORDS]).toBe(764); // A's start_info, word 0
    const b = box.domain('B', { frames: 262_144 });
    const i = b.info;
    expect(i.p2m[i.ptFirstPfn + 2]).toBe(1024);
    expect(i.nrPtFrames).toBe(3 + 512);
    // The last 512 pfns hang off entry 511 of that L2: each walk reads it back.
    for (let pfn = 511 * 512; pfn < i.lowmemPages; pfn++) {
      const [lo, hi] = directMapWalk(box, i, pfn).at(-1)!;
      if (pteMfn(lo, hi) !== i.p2m[pfn]) expect(pteMfn(lo, hi), `pfn ${pfn}`).toBe(i.p2m[pfn]);
    }
  });
});

describe('destroyDomain: what it releases', () => {
  it('an unknown domain is refused by name', () => {
    const box = new XenBox();
    const a = box.domain('A');
    expect(refusal(() => box.xen.destroyDomain(a.domid + 98))).toBe(`RangeError: no domain d${a.domid + 98}`);
    box.xen.destroyDomain(a.domid);
    expect(refusal(() => box.xen.destroyDomain(a.domid))).toBe(`RangeError: no domain d${a.domid}`);
  });

  it("x86_64: releasing the pins and base pointers of a dying domain leaves another domain's L4 (at mfn 1) as it was", () => {
    const box = new XenBox({ paging: 'x86_64' });
    const a = box.domain('A');
    // A's first frame (mfn 1) made a pinned L4.
    const mfn1 = a.info.p2m[0]!;
    expect(mfn1).toBe(1);
    for (let i = 0; i < 8; i++) a.poke(mfn1, i, 0, 0);
    expect(a.makeReadOnly(0)).toBe(0);
    expect(a.pin(4, mfn1)).toBe(0);
    const held = box.xen.frameInfo(mfn1)!;
    // B: a pinned root on two vCPUs, and a user base pointer on one.
    const b = box.domain('B', { vcpus: 2 });
    const user = tableWith(box, b, []);
    expect(b.mmuext([{ cmd: MMUEXT_NEW_USER_BASEPTR, arg1: user.mfn }]).rc).toBe(0);
    expect(box.audit().ok).toBe(true);
    const bFrames = [...b.info.p2m];
    box.xen.destroyDomain(b.domid);
    expect(box.xen.frameInfo(mfn1)).toEqual(held);
    expect(box.audit()).toMatchObject({ ok: true, problems: [] });
    for (const mfn of bFrames) {
      const f = box.xen.frameInfo(mfn)!;
      if (f.owner !== 0x7ff4 || f.count !== 0 || f.typeCount !== 0 || f.typeHi !== 0)
        expect(f, `mfn ${mfn}`).toEqual({ owner: 0x7ff4, count: 0, typeHi: 0, typeCount: 0, pfn: -1 });
    }
  });
});
