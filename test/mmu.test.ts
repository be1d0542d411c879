/*
 * The guest's software MMU against hand-built page tables: the walk's P/RW/US rules per
 * level, fault descriptors, the TLB (hits, stale entries, flushes, invlpg, 48-bit tags),
 * the shootdown mailbox through the vCPU runtime's runstate protocol, and the
 * PVMMU_TLB_CHECK self-check.
 */
import { describe, expect, it } from 'vitest';
import { _PAGE_PRESENT as P, _PAGE_RW as RW, _PAGE_USER as US, _PAGE_PSE, FRAME_WORDS } from '../src/abi/xen.js';
import {
  RS_FLUSH_PENDING,
  RS_RUNNING,
  S_FLUSHES,
  S_IPIS,
  S_RUNSTATE,
  slotBase,
  transportBytes,
  vaIndex,
  vaIndexReference,
} from '../src/abi/layout.js';
import fc from 'fast-check';
import { pteHi, pteLo } from '../src/abi/pte.js';
import { Mmu } from '../guest/arch/x86/mmu.js';
import { Vcpu } from '../guest/vcpu.js';
import type { DomainInfo } from '../src/abi/control.js';

const FRAMES = 64;

function machine() {
  const mem = new SharedArrayBuffer(FRAMES * 4096);
  const m32 = new Uint32Array(mem);
  const set = (table: number, i: number, mfn: number, flags: number) => {
    m32[table * FRAME_WORDS + 2 * i] = pteLo(mfn, flags);
    m32[table * FRAME_WORDS + 2 * i + 1] = pteHi(mfn);
  };
  return { mem, m32, set };
}

/*
 * pae tables: L3 @1; L3[3] -> L2 @2 (P only, as Linux writes PDPT entries);
 *   L2[0] (0xC0000000) -> L1 @3, P|RW      L1[0..] -> data @10.. P|RW, L1[1] P only (RO)
 *   L2[1] (0xC0200000) -> L1 @4, P (RO!)   L1 entries P|RW|US
 *   L3[0] -> L2 @5; L2[0x40] (0x08000000) -> L1 @6 P|RW|US; L1[0] -> @20 P|RW|US
 */
const K = 0xc0000000;
function paeTables() {
  const mc = machine();
  const { set } = mc;
  set(1, 3, 2, P);
  set(2, 0, 3, P | RW);
  for (let i = 0; i < 8; i++) set(3, i, 10 + i, i === 1 ? P : P | RW);
  set(2, 1, 4, P);
  set(4, 0, 18, P | RW | US);
  set(1, 0, 5, P);
  set(5, 0x40, 6, P | RW | US);
  set(6, 0, 20, P | RW | US);
  return mc;
}

function paeMmu(opts: { tlbCheck?: boolean } = {}) {
  const mc = paeTables();
  const mmu = new Mmu(mc.mem, 'pae', { tlbCheck: opts.tlbCheck ?? false });
  mmu.setBaseptr(1);
  return { ...mc, mmu };
}

describe("vaIndex (the walk's table index)", () => {
  it('agrees with its slow reference twin at every level, for any VA of 48 bits or less', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 2 ** 48 - 1 }), fc.integer({ min: 1, max: 4 }), (va, level) => {
        expect(vaIndex(va, level)).toBe(vaIndexReference(va, level));
      }),
      { numRuns: 20_000 },
    );
    // The edges: the last byte of the 48-bit space, and each level's first index past 511.
    for (let level = 1; level <= 4; level++) {
      expect(vaIndex(2 ** 48 - 1, level)).toBe(511);
      expect(vaIndex(2 ** (12 + 9 * level), level)).toBe(0);
      expect(vaIndex(2 ** (12 + 9 * level) - 1, level)).toBe(511);
    }
  });
});

describe('walk (pae)', () => {
  it('translates kernel pages through L3, L2 and L1', () => {
    const { mmu } = paeMmu();
    expect(mmu.translate(K, false)).toBe(10);
    expect(mmu.translate(K + 0x2fff, true)).toBe(12);
    expect(mmu.translate(0x08000123, true, true)).toBe(20);
  });

  it('faults a write through a read-only L2 entry even though the L1 entry is RW', () => {
    const { mmu } = paeMmu();
    expect(mmu.translate(K + 0x200000, false)).toBe(18);
    expect(mmu.translate(K + 0x200000, true)).toBe(-1);
    expect(mmu.fault()).toEqual({ va: K + 0x200000, write: true, user: false, level: 2, reason: 'protection' });
  });

  it('faults a write to a read-only L1 entry at level 1, and a read succeeds', () => {
    const { mmu } = paeMmu();
    expect(mmu.translate(K + 0x1000, true)).toBe(-1);
    expect(mmu.fault()).toMatchObject({ level: 1, reason: 'protection', write: true });
    expect(mmu.translate(K + 0x1000, false)).toBe(11);
  });

  it('reports not-present at the level that stopped the walk', () => {
    const { mmu } = paeMmu();
    expect(mmu.translate(0x40000000, false)).toBe(-1); // L3[1] empty
    expect(mmu.fault()).toMatchObject({ level: 3, reason: 'not_present' });
    expect(mmu.translate(K + 0x400000, false)).toBe(-1); // L2[2] empty
    expect(mmu.fault()).toMatchObject({ level: 2, reason: 'not_present' });
    expect(mmu.translate(K + 0x8000, false)).toBe(-1); // L1[8] empty
    expect(mmu.fault()).toMatchObject({ level: 1, reason: 'not_present' });
  });

  it('honours US for user accesses only (kernel ignores it)', () => {
    const { mmu } = paeMmu();
    expect(mmu.translate(K, false, true)).toBe(-1); // kernel page, no US in L2/L1
    expect(mmu.fault()).toMatchObject({ level: 2, reason: 'user', user: true });
    expect(mmu.translate(K, false)).toBe(10);
    expect(mmu.translate(0x08000000, false, false)).toBe(20);
  });

  it('refuses PSE above L1 and entries outside machine memory', () => {
    const { mmu, set } = paeMmu();
    set(2, 3, 0, P | RW | _PAGE_PSE);
    expect(mmu.translate(K + 0x600000, false)).toBe(-1);
    expect(mmu.fault()).toMatchObject({ level: 2, reason: 'reserved' });
    set(3, 9, FRAMES + 5, P | RW);
    expect(mmu.translate(K + 0x9000, false)).toBe(-1);
    expect(mmu.fault()).toMatchObject({ level: 1, reason: 'bad_mfn' });
  });

  it('faults everything without a baseptr', () => {
    const mc = paeTables();
    const mmu = new Mmu(mc.mem, 'pae');
    expect(mmu.translate(K, false)).toBe(-1);
    expect(mmu.fault().reason).toBe('no_baseptr');
  });
});

describe('walk (x86_64)', () => {
  // L4 @1. VA A = 0x880000001000 (direct map), VA B = A + 2^32: same low 32 bits.
  const A = 0x880000001000;
  const B = A + 2 ** 32;
  function tables() {
    const mc = machine();
    const { set } = mc;
    set(1, vaIndex(A, 4), 2, P | RW | US);
    set(2, vaIndex(A, 3), 3, P | RW | US);
    set(3, vaIndex(A, 2), 4, P | RW | US);
    set(4, vaIndex(A, 1), 30, P | RW | US);
    set(2, vaIndex(B, 3), 5, P | RW | US);
    set(5, vaIndex(B, 2), 6, P | US); // RO at L2
    set(6, vaIndex(B, 1), 31, P | RW | US);
    const mmu = new Mmu(mc.mem, 'x86_64', { tlbCheck: false });
    mmu.setBaseptr(1);
    return { ...mc, mmu };
  }

  it('walks 4 levels and keeps VAs that differ above bit 31 apart in the TLB', () => {
    const { mmu } = tables();
    expect(vaIndex(A, 1)).toBe(vaIndex(B, 1));
    expect(mmu.translate(A, true)).toBe(30);
    expect(mmu.translate(B, false)).toBe(31); // a 32-bit tag would hit A's entry
    expect(mmu.translate(A, false)).toBe(30);
    expect(mmu.translate(B, true)).toBe(-1);
    expect(mmu.fault()).toMatchObject({ va: B, level: 2, reason: 'protection' });
  });

  it('load/store through 48-bit addresses', () => {
    const { mmu, m32 } = tables();
    expect(mmu.store64(A + 8, 0xdeadbeef, 0x12345678)).toBe(0);
    expect(m32[30 * FRAME_WORDS + 2]).toBe(0xdeadbeef);
    expect(mmu.load64(A + 8)).toBe(0xdeadbeef);
    expect(mmu.hi).toBe(0x12345678);
    expect(mmu.store32(B, 1)).toBe(-1);
  });
});

describe('TLB', () => {
  it('hits after the first walk and serves a stale entry until flushed', () => {
    const { mmu, set } = paeMmu();
    expect(mmu.translate(K, false)).toBe(10);
    const walks = mmu.walks;
    expect(mmu.translate(K + 4, true)).toBe(10);
    expect(mmu.walks).toBe(walks);
    set(3, 0, 40, P | RW); // the table changes under the TLB
    expect(mmu.translate(K, false)).toBe(10); // stale, as on hardware
    mmu.flushAll();
    expect(mmu.translate(K, false)).toBe(40);
  });

  it('drops a cached mapping that lost its P bit only after invlpg', () => {
    const { mmu, set } = paeMmu();
    expect(mmu.translate(K + 0x2000, true)).toBe(12);
    set(3, 2, 0, 0);
    expect(mmu.translate(K + 0x2000, true)).toBe(12);
    mmu.invlpg(K + 0x2000);
    expect(mmu.translate(K + 0x2000, true)).toBe(-1);
  });

  it('re-walks a hit that lacks the right asked for (upgraded tables need no flush)', () => {
    const { mmu, set } = paeMmu();
    expect(mmu.translate(K + 0x1000, false)).toBe(11);
    set(3, 1, 11, P | RW);
    expect(mmu.translate(K + 0x1000, true)).toBe(11);
  });

  it('flush costs what was filled; setBaseptr flushes', () => {
    const { mmu } = paeMmu();
    for (let i = 0; i < 8; i++) mmu.translate(K + i * 0x1000, false);
    expect(mmu.tlbEntries).toBe(8);
    const n = mmu.flushCount;
    mmu.flushAll();
    expect(mmu.tlbEntries).toBe(0);
    expect(mmu.flushCount).toBe(n + 1);
    mmu.translate(K, false);
    mmu.setBaseptr(1);
    expect(mmu.tlbEntries).toBe(0);
  });

  it('PVMMU_TLB_CHECK throws on a hit the tables no longer back', () => {
    const { mmu, set } = paeMmu({ tlbCheck: true });
    expect(mmu.translate(K, false)).toBe(10);
    expect(mmu.translate(K, false)).toBe(10); // consistent: fine
    set(3, 0, 41, P | RW);
    expect(() => mmu.translate(K, false)).toThrow(/TLB check: va c0000000 hits mfn a, the page tables say 29/);
    set(3, 0, 10, P);
    expect(() => mmu.translate(K, false)).toThrow(/rights/);
  });

  it('bulk copies cross pages; a faulting write copies nothing', () => {
    const { mmu, m32 } = paeMmu();
    const src = new Uint8Array(6000).map((_, i) => i & 0xff);
    expect(mmu.writeBytes(K + 0x2000 + 100, src)).toBe(0);
    const back = new Uint8Array(6000);
    expect(mmu.readBytes(K + 0x2000 + 100, back)).toBe(0);
    expect(back).toEqual(src);
    // 0xC0000000 + 0x1000 is read-only: a copy from the page before it must not write.
    m32.fill(0, 10 * FRAME_WORDS, 11 * FRAME_WORDS);
    expect(mmu.writeBytes(K + 4000, src.subarray(0, 200))).toBe(-1);
    expect(mmu.fault()).toMatchObject({ va: K + 0x1000, level: 1 });
    expect(m32[10 * FRAME_WORDS + 1000]).toBe(0);
    expect(mmu.load32(K + 0x8000)).toBe(-1);
  });
});

describe('shootdown mailbox (the runstate protocol)', () => {
  function vcpu() {
    const mc = paeTables();
    const transport = new SharedArrayBuffer(transportBytes(2));
    const info = { paging: 'pae', p2m: [0, 1], ptBasePfn: 1 } as unknown as DomainInfo;
    const cpu = new Vcpu({ mem: mc.mem, transport, slot: 1, info, vcpu: 0, tlbCheck: false });
    const t = new Int32Array(transport);
    const rs = slotBase(1) + S_RUNSTATE;
    return { ...mc, cpu, t, rs };
  }

  it('a flush posted to a blocked vCPU is serviced when it resumes, without an IPI', () => {
    const { cpu, set, t, rs } = vcpu();
    cpu.resume();
    expect(cpu.mmu.translate(K, false)).toBe(10);
    cpu.block();
    set(3, 0, 42, P | RW);
    const old = Atomics.or(t, rs, RS_FLUSH_PENDING);
    expect(old & RS_RUNNING).toBe(0); // the poster does not wait
    expect(t[slotBase(1) + S_FLUSHES]).toBe(0);
    cpu.resume();
    expect(Atomics.load(t, rs)).toBe(RS_RUNNING);
    expect(t[slotBase(1) + S_FLUSHES]).toBe(1);
    expect(t[slotBase(1) + S_IPIS]).toBe(0);
    expect(cpu.mmu.translate(K, false)).toBe(42); // the stale entry is gone
  });

  it('a flush posted while running is taken on the next access and counted as an IPI', () => {
    const { cpu, set, t, rs } = vcpu();
    cpu.resume();
    expect(cpu.mmu.translate(K, false)).toBe(10);
    set(3, 0, 43, P | RW);
    expect(Atomics.or(t, rs, RS_FLUSH_PENDING) & RS_RUNNING).toBe(RS_RUNNING);
    expect(cpu.mmu.translate(K, false)).toBe(43);
    expect(Atomics.load(t, rs) & RS_FLUSH_PENDING).toBe(0);
    expect(cpu.ipis).toBe(1);
    expect(cpu.flushes).toBe(1);
  });

  it('block() acknowledges a flush posted while running (before the vCPU sleeps)', () => {
    const { cpu, t, rs } = vcpu();
    cpu.resume();
    Atomics.or(t, rs, RS_FLUSH_PENDING);
    cpu.block();
    expect(Atomics.load(t, rs)).toBe(0);
    expect(cpu.ipis).toBe(1);
    cpu.pollInterrupts(); // nothing pending: nothing happens
    expect(cpu.flushes).toBe(1);
  });
});
