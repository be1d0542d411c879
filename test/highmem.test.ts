/*
 * mm/highmem: pkmap_count semantics, the wrap flush, kmap_flush_unused, kmap_atomic slots,
 * kunmap_atomic misuse (the SLUB thread) and the residual kmap_atomic aliases of 2.6.2x.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EAGAIN, EINVAL, PAGE_SIZE } from '../src/abi/xen.js';
import { PAE_LAYOUT, X86_64_LAYOUT } from '../src/abi/layout.js';
import { KernelPageTablesRef } from '../guest/mm/kernel_pt_ref.js';
import {
  Highmem,
  KM_BIO_SRC_IRQ,
  KM_BOUNCE_READ,
  KM_PTE0,
  KM_SOFTIRQ1,
  KM_TYPE_NAMES,
  KM_TYPE_NR,
  KM_USER0,
  KM_USER1,
  type HighmemConfig,
} from '../guest/mm/highmem.js';

const FUZZ_RUNS = Number(process.env.PVMMU_FUZZ_RUNS ?? 150);
const HIGH = PAE_LAYOUT.maxLowmemFrames; // the first highmem pfn
const LAST = PAE_LAYOUT.lastPkmap; // 512
const BASE = PAE_LAYOUT.pkmapBase;
const WINDOW: [number, number] = [BASE, BASE + LAST * PAGE_SIZE];

function setup(cfg: Partial<HighmemConfig> = {}, kpt = new KernelPageTablesRef({ nrCpus: 4 })) {
  const hm = Highmem.create({ layout: PAE_LAYOUT, numCpus: 4, ...cfg }, { cpu: 0, kpt });
  return { hm, kpt };
}

describe('pkmap (kmap / kunmap)', () => {
  it('goes 0 -> 2 on kmap and 2 -> 1 on kunmap, keeping the PTE; kmap again reuses the slot', () => {
    const { hm, kpt } = setup();
    const pfn = HIGH + 5;
    expect(hm.pkmapCount(1)).toBe(0);
    const va = hm.kmap(pfn);
    expect(va).toBe(BASE + PAGE_SIZE); // the cursor starts at 0 and moves first
    expect(hm.pkmapNr(va)).toBe(1);
    expect(hm.pkmapCount(1)).toBe(2);
    expect(kpt.lookup(va)?.mfn).toBe(kpt.pfnToMfn(pfn));
    expect(hm.pageAddress(pfn)).toBe(va);
    expect(hm.kmap(pfn)).toBe(va); // a second user
    expect(hm.pkmapCount(1)).toBe(3);
    expect(hm.kunmap(pfn)).toBe(0);
    expect(hm.kunmap(pfn)).toBe(0);
    expect(hm.pkmapCount(1)).toBe(1); // mapped, unused, not reusable yet
    expect(kpt.lookup(va)?.mfn).toBe(kpt.pfnToMfn(pfn));
    expect(hm.pageAddress(pfn)).toBe(va);
    expect(hm.strayAliasesOf(pfn)).toEqual([{ va, kind: 'pkmap', users: 0 }]);
    expect(hm.kmap(pfn)).toBe(va); // 1 -> 2: same slot, no new PTE
    expect(hm.pkmapCount(1)).toBe(2);
    expect(kpt.ptesInstalled).toBe(1);
    expect(kpt.kernelRangeFlushes).toBe(0);
    expect(hm.checkInvariants()).toEqual([]);
  });

  it('never lets kunmap drop a slot to 0: an unbalanced kunmap is reported', () => {
    const { hm } = setup();
    const pfn = HIGH + 1;
    hm.kmap(pfn);
    hm.kunmap(pfn);
    expect(hm.kunmap(pfn)).toBe(-EINVAL);
    expect(hm.pkmapCount(1)).toBe(1);
    expect(hm.messages.at(-1)).toMatch(/^kernel BUG: kunmap_high: pkmap_count\[1\] would drop to 0/);
    expect(hm.kunmap(HIGH + 2)).toBe(-EINVAL);
    expect(hm.messages.at(-1)).toMatch(/is not kmapped/);
    expect(hm.stats().misuse).toBe(2);
  });

  it('returns the direct-map address of a lowmem page without a slot', () => {
    const { hm, kpt } = setup();
    expect(hm.kmap(1234)).toBe(PAE_LAYOUT.pageOffset + 1234 * PAGE_SIZE);
    expect(hm.kunmap(1234)).toBe(0);
    expect(hm.pageAddress(1234)).toBe(PAE_LAYOUT.pageOffset + 1234 * PAGE_SIZE);
    expect(kpt.setPteCalls).toBe(0);
    expect(hm.pageAddress(HIGH + 9)).toBe(0); // a highmem page not kmapped: NULL
  });

  it('on wrap clears every slot at 1 with ONE flush over the window, sparing slots in use', () => {
    const { hm, kpt } = setup();
    const busy = HIGH + 10_000;
    const busyVa = hm.kmap(busy); // slot 1, kept
    for (let i = 2; i < LAST; i++) {
      const p = HIGH + i;
      expect(hm.kmap(p)).toBe(BASE + i * PAGE_SIZE);
      kpt.touch(BASE + i * PAGE_SIZE, 1 + (i % 3)); // other vCPUs cache it
      hm.kunmap(p);
    }
    expect(kpt.kernelRangeFlushes).toBe(0);
    const va = hm.kmap(HIGH + 20_000); // cursor 511 -> 0: wrap
    expect(va).toBe(BASE); // slot 0 was free all along
    expect(hm.stats()).toMatchObject({ wraps: 1, pkmapFlushes: 1, pkmapCleared: LAST - 2 });
    expect(kpt.flushedRanges).toEqual([WINDOW]);
    expect(kpt.staleTlbEntries()).toEqual([]);
    expect(hm.pkmapCount(1)).toBe(2);
    expect(kpt.lookup(busyVa)?.mfn).toBe(kpt.pfnToMfn(busy));
    for (let i = 2; i < LAST; i++) {
      expect(hm.pkmapCount(i)).toBe(0);
      expect(hm.pageAddress(HIGH + i)).toBe(0);
    }
    expect(kpt.size).toBe(2);
    // the next one takes slot 2 without another flush
    expect(hm.kmap(HIGH + 30_000)).toBe(BASE + 2 * PAGE_SIZE);
    expect(kpt.kernelRangeFlushes).toBe(1);
    expect(hm.checkInvariants()).toEqual([]);
  });

  it('returns -EAGAIN where Linux would sleep, and recovers after a kunmap', () => {
    const { hm, kpt } = setup();
    for (let i = 0; i < LAST; i++) expect(hm.kmap(HIGH + i)).toBeGreaterThan(0);
    expect(kpt.kernelRangeFlushes).toBe(0); // the wrap found nothing at 1: no flush
    expect(hm.kmap(HIGH + LAST)).toBe(-EAGAIN);
    expect(hm.stats().wouldSleep).toBe(1);
    expect(hm.messages.at(-1)).toMatch(/would sleep on pkmap_map_wait/);
    hm.kunmap(HIGH + 7);
    const va = hm.kmap(HIGH + LAST);
    expect(va).toBeGreaterThan(0);
    expect(hm.pageAddress(HIGH + 7)).toBe(0); // its slot was flushed and reused
    expect(kpt.kernelRangeFlushes).toBe(1);
    expect(hm.checkInvariants()).toEqual([]);
  });

  it('kmapFlushUnused removes every count-1 alias with one flush, and only those', () => {
    const { hm, kpt } = setup();
    const unused = [HIGH + 1, HIGH + 2, HIGH + 3];
    const inUse = HIGH + 4;
    for (const p of unused) {
      kpt.touch(hm.kmap(p), 2);
      hm.kunmap(p);
    }
    const vaInUse = hm.kmap(inUse);
    for (const p of unused) expect(kpt.writableAliasesOfPfn(p)).toHaveLength(1);
    hm.kmapFlushUnused();
    expect(kpt.flushedRanges).toEqual([WINDOW]);
    for (const p of unused) {
      expect(hm.strayAliasesOf(p)).toEqual([]);
      expect(kpt.vasMappingPfn(p)).toEqual([]);
      expect(kpt.tlbAliasesOfPfn(p)).toEqual([]);
    }
    expect(hm.aliasesOf(inUse)).toEqual([{ va: vaInUse, kind: 'pkmap', users: 1 }]);
    expect(kpt.lookup(vaInUse)?.mfn).toBe(kpt.pfnToMfn(inUse));
    hm.kmapFlushUnused(); // nothing at 1: no flush
    expect(kpt.kernelRangeFlushes).toBe(1);
    expect(hm.stats().kmapFlushUnusedCalls).toBe(2);
  });

  it('catches a wrap that forgets the flush (the oracle has teeth)', () => {
    class NoFlushKpt extends KernelPageTablesRef {
      override flushTlbKernelRange(): void {
        /* broken */
      }
    }
    // Another vCPU reads through every kmap address it is given; after a wrap a slot is
    // reused for another page and that vCPU must reach the new page, not the old one.
    const scenario = (kpt: KernelPageTablesRef): number => {
      const { hm } = setup({}, kpt);
      let stale = 0;
      for (let i = 0; i < 3 * LAST; i++) {
        const pfn = HIGH + i;
        const va = hm.kmap(pfn);
        if (kpt.touch(va, 1) !== kpt.pfnToMfn(pfn)) stale++;
        hm.kunmap(pfn);
      }
      return stale;
    };
    expect(scenario(new KernelPageTablesRef({ nrCpus: 2 }))).toBe(0);
    expect(scenario(new NoFlushKpt({ nrCpus: 2 }))).toBeGreaterThan(0);
  });

  it('matches a simple model of users per page on random sequences, and no vCPU ever reads a stale page', () => {
    const op = fc.oneof(
      {
        weight: 5,
        arbitrary: fc.record({
          op: fc.constant('kmap' as const),
          p: fc.integer({ min: 0, max: 40 }),
          cpu: fc.integer({ min: 0, max: 3 }),
        }),
      },
      { weight: 4, arbitrary: fc.record({ op: fc.constant('kunmap' as const), pick: fc.nat() }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('flush' as const) }) },
    );
    fc.assert(
      fc.property(fc.array(op, { maxLength: 300 }), (ops) => {
        // A 16-slot window makes wraps and would-sleep frequent.
        const kpt = new KernelPageTablesRef({ nrCpus: 4 });
        const hm = Highmem.create({ layout: { ...PAE_LAYOUT, lastPkmap: 16 }, numCpus: 4 }, { cpu: 0, kpt });
        const users = new Map<number, number>();
        const held: number[] = [];
        for (const o of ops) {
          if (o.op === 'kmap') {
            const pfn = HIGH + o.p;
            const va = hm.kmap(pfn);
            if (va === -EAGAIN) {
              expect([...users.values()].filter((u) => u > 0).length).toBe(16);
              expect(users.get(pfn) ?? 0).toBe(0);
              continue;
            }
            users.set(pfn, (users.get(pfn) ?? 0) + 1);
            held.push(pfn);
            expect(kpt.touch(va, o.cpu)).toBe(kpt.pfnToMfn(pfn));
          } else if (o.op === 'kunmap' && held.length > 0) {
            const [pfn] = held.splice(o.pick % held.length, 1);
            expect(hm.kunmap(pfn!)).toBe(0);
            users.set(pfn!, users.get(pfn!)! - 1);
          } else if (o.op === 'flush') {
            hm.kmapFlushUnused();
            for (const [pfn, u] of users) if (u === 0) expect(hm.aliasesOf(pfn)).toEqual([]);
          }
          for (const [pfn, u] of users) {
            const nr = hm.pkmapSlotOf(pfn);
            if (u > 0) expect(hm.pkmapCount(nr)).toBe(u + 1);
            else if (nr >= 0) expect(hm.pkmapCount(nr)).toBe(1);
          }
          expect(hm.checkInvariants()).toEqual([]);
        }
        expect(kpt.flushesWithPendingPtes).toBe(0);
      }),
      { numRuns: FUZZ_RUNS },
    );
  });
});

describe('kmap_atomic / kunmap_atomic', () => {
  it('names the km_types of 2.6.2x i386 in order', () => {
    expect(KM_TYPE_NAMES).toEqual([
      'KM_BOUNCE_READ',
      'KM_SKB_SUNRPC_DATA',
      'KM_SKB_DATA_SOFTIRQ',
      'KM_USER0',
      'KM_USER1',
      'KM_BIO_SRC_IRQ',
      'KM_BIO_DST_IRQ',
      'KM_PTE0',
      'KM_PTE1',
      'KM_IRQ0',
      'KM_IRQ1',
      'KM_SOFTIRQ0',
      'KM_SOFTIRQ1',
    ]);
    expect(KM_TYPE_NR).toBe(13);
  });

  it('uses per-CPU fixmap slots counting down from fixaddrTop', () => {
    const { hm, kpt } = setup();
    const top = PAE_LAYOUT.fixaddrTop;
    expect(hm.kmapAtomic(HIGH + 1, KM_BOUNCE_READ, 0)).toBe(top);
    expect(hm.kmapAtomic(HIGH + 2, KM_USER0, 1)).toBe(top - (KM_TYPE_NR + KM_USER0) * PAGE_SIZE);
    expect(hm.kmapAtomic(HIGH + 3, KM_SOFTIRQ1, 3)).toBe(top - (3 * KM_TYPE_NR + KM_SOFTIRQ1) * PAGE_SIZE);
    expect(kpt.lookup(top - (KM_TYPE_NR + KM_USER0) * PAGE_SIZE)?.mfn).toBe(kpt.pfnToMfn(HIGH + 2));
    expect(kpt.kernelRangeFlushes).toBe(0);
  });

  it('accepts any address inside the returned page (the SLUB thread) and reports one outside it', () => {
    const { hm } = setup();
    for (const off of [0, 0x123, PAGE_SIZE - 1]) {
      const va = hm.kmapAtomic(HIGH + 1, KM_BIO_SRC_IRQ, 0);
      expect(hm.kunmapAtomic(va + off, KM_BIO_SRC_IRQ, 0)).toBe(0); // buffer + sg->offset
    }
    expect(hm.stats().atomicMisuse).toBe(0);
    const va = hm.kmapAtomic(HIGH + 1, KM_BIO_SRC_IRQ, 0);
    let rc = 0;
    expect(() => (rc = hm.kunmapAtomic(va - 0x40, KM_BIO_SRC_IRQ, 0))).not.toThrow();
    expect(rc).toBe(-EINVAL);
    expect(hm.stats().atomicMisuse).toBe(1);
    expect(hm.messages.at(-1)).toBe(
      `BUG: kunmap_atomic(${(va - 0x40).toString(16)}, KM_BIO_SRC_IRQ) on cpu 0: address outside the page kmap_atomic returned (${va.toString(16)})`,
    );
    // a lowmem page: the direct-map page is the one returned
    const low = hm.kmapAtomic(77, KM_USER1, 2);
    expect(low).toBe(PAE_LAYOUT.pageOffset + 77 * PAGE_SIZE);
    expect(hm.kunmapAtomic(low + 8, KM_USER1, 2)).toBe(0);
    hm.kmapAtomic(77, KM_USER1, 2);
    expect(hm.kunmapAtomic(low + PAGE_SIZE, KM_USER1, 2)).toBe(-EINVAL);
    // the right page with the wrong type / cpu is the wrong slot
    const v2 = hm.kmapAtomic(HIGH + 2, KM_USER0, 1);
    expect(hm.kunmapAtomic(v2, KM_USER1, 1)).toBe(-EINVAL); // KM_USER1 is not in use
    expect(hm.kunmapAtomic(v2, KM_USER0, 1)).toBe(0);
    expect(hm.stats().atomicMisuse).toBe(3);
  });

  it('reports a nested use of one slot, bad types and bad CPUs, without throwing', () => {
    const { hm } = setup();
    hm.kmapAtomic(HIGH + 1, KM_USER0, 0);
    expect(hm.kmapAtomic(HIGH + 2, KM_USER0, 0)).toBeGreaterThan(0);
    expect(hm.messages.at(-1)).toMatch(/^BUG: kmap_atomic\(KM_USER0\) on cpu 0: slot still in use/);
    expect(hm.kmapAtomic(HIGH + 1, KM_TYPE_NR, 0)).toBe(-EINVAL);
    expect(hm.kmapAtomic(HIGH + 1, KM_USER0, 4)).toBe(-EINVAL);
    expect(hm.kunmapAtomic(PAE_LAYOUT.fixaddrTop, -1, 0)).toBe(-EINVAL);
    expect(hm.stats().atomicMisuse).toBe(4);
  });

  it('leaves residual aliases without CONFIG_DEBUG_HIGHMEM (HIGHPTE), visible to the stray query', () => {
    const { hm, kpt } = setup();
    const ptePage = HIGH + 42; // a user page-table page in highmem
    kpt.currentCpu = 1;
    const va = hm.kmapAtomic(ptePage, KM_PTE0, 1);
    kpt.touch(va, 1);
    expect(hm.kunmapAtomic(va, KM_PTE0, 1)).toBe(0);
    expect(kpt.lookup(va)?.mfn).toBe(kpt.pfnToMfn(ptePage)); // not cleared
    expect(kpt.writableAliasesOfPfn(ptePage)).toEqual([va]); // what Xen would refuse to pin
    expect(hm.strayAliasesOf(ptePage)).toEqual([{ va, kind: 'kmap_atomic', users: 0, cpu: 1, type: KM_PTE0 }]);
    expect(hm.stats().atomicResidual).toBe(1);
    hm.kmapFlushUnused(); // does not touch kmap_atomic slots (nor did Linux)
    expect(hm.strayAliasesOf(ptePage)).toHaveLength(1);
    // the next user of the slot overwrites it and invalidates locally, no shootdown
    const other = HIGH + 43;
    expect(hm.kmapAtomic(other, KM_PTE0, 1)).toBe(va);
    expect(kpt.touch(va, 1)).toBe(kpt.pfnToMfn(other));
    expect(kpt.localFlushLog).toEqual([[1, va]]);
    expect(kpt.kernelRangeFlushes).toBe(0);
    expect(hm.aliasesOf(ptePage)).toEqual([]);
    expect(hm.aliasesOf(other)).toEqual([{ va, kind: 'kmap_atomic', users: 1, cpu: 1, type: KM_PTE0 }]);
  });

  it('clears the PTE and invalidates locally only with debugHighmem', () => {
    const { hm, kpt } = setup({ debugHighmem: true });
    kpt.currentCpu = 2;
    const va = hm.kmapAtomic(HIGH + 42, KM_PTE0, 2);
    kpt.touch(va, 2);
    expect(hm.kunmapAtomic(va, KM_PTE0, 2)).toBe(0);
    expect(kpt.lookup(va)).toBeUndefined();
    expect(kpt.localFlushLog).toEqual([[2, va]]);
    expect(kpt.kernelRangeFlushes).toBe(0);
    expect(kpt.staleTlbEntries()).toEqual([]);
    expect(hm.strayAliasesOf(HIGH + 42)).toEqual([]);
    expect(hm.stats().atomicResidual).toBe(0);
  });
});

describe('configuration', () => {
  it('has no highmem on x86_64: kmap is the direct map', () => {
    const kpt = new KernelPageTablesRef();
    const hm = Highmem.create({ layout: X86_64_LAYOUT, numCpus: 2 }, { cpu: 0, kpt });
    expect(hm.isHighmem(2 ** 31 - 1)).toBe(false);
    expect(hm.kmap(5)).toBe(X86_64_LAYOUT.pageOffset + 5 * PAGE_SIZE);
    expect(hm.kmapAtomic(5, KM_USER0, 1)).toBe(X86_64_LAYOUT.pageOffset + 5 * PAGE_SIZE);
    expect(kpt.setPteCalls).toBe(0);
  });

  it('rejects bad configurations', () => {
    expect(() => setup({ numCpus: 0 })).toThrow(RangeError);
    expect(() => setup({ numCpus: 65 })).toThrow(RangeError);
    expect(() => setup({ layout: { ...PAE_LAYOUT, lastPkmap: 500 } })).toThrow(/power of two/);
    expect(() => setup({ fixKmapBegin: 3600 })).toThrow(/pkmap window/);
  });

  it('shares its state between vCPU handles', () => {
    const { hm, kpt } = setup();
    const other = Highmem.attach(hm.sab, { cpu: 1, kpt });
    const va = hm.kmap(HIGH + 3);
    expect(other.pageAddress(HIGH + 3)).toBe(va);
    expect(other.kunmap(HIGH + 3)).toBe(0);
    expect(hm.pkmapCount(hm.pkmapNr(va))).toBe(1);
  });
});
