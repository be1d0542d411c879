/*
 * The page allocator (guest/mm/page_alloc.ts): buddy split/merge, per-CPU hot/cold lists,
 * zone fallback, watermarks and shrinkers, bad_page reports with Linux's text, the ALSA
 * __GFP_COMP scenario, double frees, compound pages; the fast allocator against its slow
 * reference twin on random operation sequences; and two worker threads on one SAB.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  GFP_ATOMIC,
  GFP_DMA,
  GFP_HIGHUSER,
  GFP_HIGHUSER_MOVABLE,
  GFP_KERNEL,
  GFP_NOWAIT,
  MAX_ORDER,
  MIGRATE_PCPTYPES,
  MIGRATE_TYPES,
  PageAllocator,
  __GFP_COLD,
  __GFP_COMP,
  __GFP_DMA,
  __GFP_HIGHMEM,
  __GFP_MOVABLE,
  __GFP_NOWARN,
  __GFP_RECLAIMABLE,
  __GFP_ZERO,
  pageAllocBytes,
  zoneBatchsize,
  type BadPageReport,
  type MmReport,
  type PageAllocConfig,
  type Shrinker,
} from '../guest/mm/page_alloc.js';
import { PageAllocatorRef } from '../guest/mm/page_alloc_ref.js';
import {
  MAX_NR_ZONES,
  PG_active,
  PG_buddy,
  PG_dirty,
  PG_locked,
  PG_lru,
  PG_pinned,
  PG_private,
  PG_reclaim,
  PG_referenced,
  PG_reserved,
  PG_slab,
  PG_swapcache,
  PG_writeback,
  ZONE_DMA,
  ZONE_HIGHMEM,
  ZONE_NORMAL,
  mappingOfAddressSpace,
  pagePointer,
} from '../guest/mm/page.js';
import { spinLock, spinOwner, spinTrylock, spinUnlock } from '../guest/mm/spinlock.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

function make(cfg: Partial<PageAllocConfig> = {}, extra: { comm?: string; zeroed?: number[] } = {}): PageAllocator {
  return PageAllocator.create(
    { nrPages: 64, nrCpus: 2, minFreeKbytes: 0, pcpBatch: 4, pcpHigh: 8, ...cfg },
    { zeroPage: (pfn) => extra.zeroed?.push(pfn), comm: () => extra.comm ?? 'swapper' },
  );
}

function badPages(pa: { reports: MmReport[] }): BadPageReport[] {
  return pa.reports.filter((r): r is BadPageReport => r.kind === 'bad_page');
}

/* ------------------------------------------------------------------ spinlock */

describe('spinlock', () => {
  it('locks, refuses a second taker, reports recursion and wrong-CPU unlocks', () => {
    const w = new Int32Array(new SharedArrayBuffer(16));
    spinLock(w, 1, 3);
    expect(spinOwner(w, 1)).toBe(3);
    expect(spinTrylock(w, 1, 4)).toBe(false);
    expect(() => spinLock(w, 1, 3)).toThrow(/BUG: spinlock recursion on CPU#3/);
    expect(() => spinUnlock(w, 1, 4)).toThrow(/BUG: spinlock wrong CPU on CPU#4.*owner CPU#3/);
    spinUnlock(w, 1, 3);
    expect(() => spinUnlock(w, 1, 3)).toThrow(/already unlocked/);
    expect(spinTrylock(w, 1, 4)).toBe(true);
    spinUnlock(w, 1, 4);
  });

  it('keeps calling onSpin while another thread holds the lock, then takes it', async () => {
    ensureBuilt();
    const w = new Int32Array(new SharedArrayBuffer(16));
    const url = new URL('../dist/guest/mm/spinlock.js', import.meta.url).href;
    const holder = new Worker(
      `import('${url}').then(({ spinLock, spinUnlock }) => {
         const { parentPort, workerData } = require('node:worker_threads');
         const w = workerData;
         spinLock(w, 1, 1);
         parentPort.postMessage('locked');
         Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30);
         spinUnlock(w, 1, 1);
       });`,
      { eval: true, workerData: w },
    );
    await new Promise((resolve) => holder.once('message', resolve));
    let spins = 0;
    spinLock(w, 1, 0, () => spins++);
    expect(spinOwner(w, 1)).toBe(0);
    expect(spins).toBeGreaterThan(100); // the spin phase, then the sliced sleeps
    spinUnlock(w, 1, 0);
    await holder.terminate();
  });
});

/* -------------------------------------------------------------------- zones */

describe('zones and boot', () => {
  it('splits pae memory into DMA, Normal and HighMem and frees from firstFreePfn up', () => {
    const pa = make({ nrPages: 4096 + 512 + 300, lowmemPages: 4096 + 512, firstFreePfn: 37 });
    expect(pa.zoneInfo(ZONE_DMA)).toMatchObject({ start: 0, end: 4096 });
    expect(pa.zoneInfo(ZONE_NORMAL)).toMatchObject({ start: 4096, end: 4608 });
    expect(pa.zoneInfo(ZONE_HIGHMEM)).toMatchObject({ start: 4608, end: 4908 });
    expect(pa.zoneFreePages(ZONE_DMA)).toBe(4096 - 37);
    expect(pa.nrFreePages()).toBe(4908 - 37);
    expect(pa.memMap.PageReserved(36)).toBe(true);
    expect(pa.memMap.pageCount(36)).toBe(1);
    expect(pa.memMap.PageHighMem(4700)).toBe(true);
    expect(pa.checkFreeLists()).toEqual([]);
  });

  it('has no highmem in x86_64', () => {
    const pa = make({ nrPages: 5000, paging: 'x86_64' });
    expect(pa.zoneInfo(ZONE_NORMAL)).toMatchObject({ start: 4096, end: 5000 });
    expect(pa.zoneInfo(ZONE_HIGHMEM).present).toBe(0);
    const pfn = pa.allocPages(GFP_HIGHUSER, 0, 0);
    expect(pa.pageZone(pfn)).toBe(ZONE_NORMAL);
  });

  it("uses Linux's default watermarks and batch sizes", () => {
    const pa = PageAllocator.create({ nrPages: 65536, nrCpus: 1, lowmemPages: 65536 }, { zeroPage: () => {} });
    // min_free_kbytes = sqrt(16 * 256 MiB in KiB) = 2048 KiB = 512 pages, spread by size.
    const dma = pa.zoneInfo(ZONE_DMA);
    const normal = pa.zoneInfo(ZONE_NORMAL);
    expect(dma.min + normal.min).toBeLessThanOrEqual(512);
    expect(normal.min).toBe(Math.floor((512 * 61440) / 65536));
    expect(normal.low).toBe(normal.min + (normal.min >> 2));
    expect(zoneBatchsize(61440)).toBe(15);
    expect(normal.pcp[0]).toMatchObject({ batch: 15, high: 90 });
    expect(zoneBatchsize(4096)).toBe(1);
  });

  it('rejects bad configs and bad calls with what is accepted', () => {
    expect(() => make({ nrPages: 0 })).toThrow(/nrPages must be an integer in 1\.\./);
    expect(() => make({ paging: 'x86_64', nrPages: 100, lowmemPages: 50 })).toThrow(/x86_64 has no highmem/);
    // A guest caller's mistake is Linux's: a WARNING, then NULL or nothing done (no exception).
    const pa = make();
    const warned = (f: () => unknown, re: RegExp, ret?: unknown) => {
      const n = pa.reports.length;
      expect(f()).toBe(ret);
      expect(pa.reports.length).toBe(n + 1);
      expect(pa.reports.at(-1)!.kind).toBe('warning');
      expect(pa.reports.at(-1)!.lines[0]).toMatch(/^WARNING: at mm\/page_alloc\.c: /);
      expect(pa.reports.at(-1)!.lines[0]).toMatch(re);
    };
    warned(() => pa.allocPages(0x4, 0, 0), /unknown GFP bits 0x4 .*accepted: __GFP_DMA 0x1/, -1);
    warned(() => pa.allocPages(__GFP_DMA | __GFP_HIGHMEM, 0, 0), /name no zone/, -1);
    warned(() => pa.allocPages(GFP_KERNEL, MAX_ORDER, 0), /order 11 is outside 0\.\.10/, -1);
    warned(() => pa.allocPages(GFP_KERNEL, 0, 2), /cpu 2 is not a vCPU of this allocator \(0\.\.1\)/, -1);
    warned(() => pa.freePages(3, 1, 0), /not the start of an order-1 block/);
    warned(() => pa.freePages(64, 0, 0), /outside the mem_map/);
    expect(pa.nrFreePages()).toBe(64);
    expect(pa.checkFreeLists()).toEqual([]);
    expect(() => new PageAllocator(new SharedArrayBuffer(4096), { zeroPage: () => {} })).toThrow(
      /not a pvmmu page allocator buffer/,
    );
  });

  it('gives a reserved boot page to the allocator with free_bootmem', () => {
    const pa = make({ firstFreePfn: 8, pcpBatch: 1, pcpHigh: 1 });
    expect(pa.nrFreePages()).toBe(56);
    pa.freeBootmemPage(7, 0);
    expect(pa.nrFreePages()).toBe(57);
    expect(pa.memMap.PageReserved(7)).toBe(false);
    pa.freeBootmemPage(7, 0); // a WARNING, nothing freed twice
    expect(pa.reports.at(-1)!.lines[0]).toMatch(/WARNING: .*free_bootmem: pfn 7 is not a reserved boot page/);
    expect(pa.nrFreePages()).toBe(57);
    expect(pa.checkFreeLists()).toEqual([]);
  });

  it('lets every opener of the SAB see the same allocator', () => {
    const a = make();
    const b = new PageAllocator(a.sab, { zeroPage: () => {} });
    const pfn = a.allocPages(GFP_KERNEL, 2, 0);
    expect(b.memMap.pageCount(pfn)).toBe(1);
    b.freePages(pfn, 2, 1);
    expect(a.nrFreePages()).toBe(64);
    expect(a.sab.byteLength).toBe(pageAllocBytes({ nrPages: 64, nrCpus: 2 }));
  });
});

/* -------------------------------------------------------------------- buddy */

describe('buddy allocator', () => {
  it('splits the first block of the smallest fitting order and keeps the low half', () => {
    const pa = make();
    expect(pa.freeAreaList(ZONE_DMA, 6)).toEqual([0]);
    expect(pa.allocPages(GFP_KERNEL, 1, 0)).toBe(0);
    for (let o = 1; o <= 5; o++) expect(pa.freeAreaList(ZONE_DMA, o)).toEqual([1 << o]);
    expect(pa.freeAreaList(ZONE_DMA, 6)).toEqual([]);
    expect(pa.allocPages(GFP_KERNEL, 1, 0)).toBe(2);
    expect(pa.allocPages(GFP_KERNEL, 3, 0)).toBe(8);
    expect(pa.zoneFreePages(ZONE_DMA)).toBe(64 - 12);
    expect(pa.checkFreeLists()).toEqual([]);
  });

  it('merges freed buddies back up to the whole block', () => {
    const pa = make();
    const a = pa.allocPages(GFP_KERNEL, 1, 0);
    const b = pa.allocPages(GFP_KERNEL, 1, 0);
    const c = pa.allocPages(GFP_KERNEL, 2, 0);
    pa.freePages(a, 1, 0);
    expect(pa.freeAreaList(ZONE_DMA, 1)).toEqual([a]);
    pa.freePages(c, 2, 1);
    pa.freePages(b, 1, 0); // b+a -> order 2 at 0, + c -> order 3 at 0 ... up to order 6
    expect(pa.freeAreaList(ZONE_DMA, 6)).toEqual([0]);
    for (let o = 0; o < 6; o++) expect(pa.freeAreaList(ZONE_DMA, o)).toEqual([]);
    expect(pa.checkFreeLists()).toEqual([]);
  });

  it('never merges across a zone boundary', () => {
    // DMA ends at 4096; Normal starts there with a block whose buddy would be in DMA.
    const pa = make({ nrPages: 4096 + 1024, firstFreePfn: 0 });
    expect(pa.freeAreaList(ZONE_DMA, 10)).toHaveLength(4);
    expect(pa.freeAreaList(ZONE_NORMAL, 10)).toEqual([4096]);
    const p = pa.allocPages(GFP_KERNEL, 10, 0);
    expect(p).toBe(4096);
    pa.freePages(p, 10, 0);
    expect(pa.freeAreaList(ZONE_NORMAL, 10)).toEqual([4096]);
    expect(pa.checkFreeLists()).toEqual([]);
  });
});

/* --------------------------------------------------------------- hot / cold */

describe('per-CPU hot/cold lists', () => {
  it('returns the most recently freed page to the next allocation on the same CPU', () => {
    const pa = make();
    const pages = [0, 1, 2].map(() => pa.allocPages(GFP_KERNEL, 0, 0));
    pa.freePages(pages[1]!, 0, 0);
    expect(pa.pcpList(ZONE_DMA, 0)[0]).toBe(pages[1]);
    expect(pa.allocPages(GFP_KERNEL, 0, 0)).toBe(pages[1]);
    // Another CPU does not get it: its own list is refilled from the buddies.
    pa.freePages(pages[2]!, 0, 0);
    expect(pa.allocPages(GFP_KERNEL, 0, 1)).not.toBe(pages[2]);
    expect(pa.allocPages(GFP_KERNEL, 0, 0)).toBe(pages[2]);
  });

  it('puts a cold free at the cold end; __GFP_COLD takes from there', () => {
    const pa = make();
    const a = pa.allocPages(GFP_KERNEL, 0, 0);
    const b = pa.allocPages(GFP_KERNEL, 0, 0);
    expect(pa.memMap.putPageTestzero(b, 'test', 0)).toBe(true);
    pa.freeColdPage(b, 0);
    const list = pa.pcpList(ZONE_DMA, 0);
    expect(list[list.length - 1]).toBe(b);
    expect(pa.allocPages(GFP_KERNEL, 0, 0)).not.toBe(b);
    pa.freePages(a, 0, 0);
    expect(pa.allocPages(GFP_KERNEL | __GFP_COLD, 0, 0)).toBe(b);
  });

  it('refills by batch from the buddies and drains batch pages from the cold end at high', () => {
    const pa = make({ pcpBatch: 4, pcpHigh: 8 });
    const first = pa.allocPages(GFP_KERNEL, 0, 0);
    expect(pa.pcpCount(ZONE_DMA, 0)).toBe(3);
    expect(pa.zoneFreePages(ZONE_DMA)).toBe(60);
    // The refill keeps physical order: hot end first.
    expect(pa.pcpList(ZONE_DMA, 0)).toEqual([first + 1, first + 2, first + 3]);
    const more = Array.from({ length: 7 }, () => pa.allocPages(GFP_KERNEL, 0, 0));
    expect(pa.pcpCount(ZONE_DMA, 0)).toBe(0);
    for (const p of more.slice(0, 5)) pa.freePages(p, 0, 0); // count 5
    pa.freePages(more[5]!, 0, 0);
    pa.freePages(more[6]!, 0, 0); // 7
    const before = pa.pcpList(ZONE_DMA, 0);
    pa.freePages(first, 0, 0); // reaches high 8: the 4 coldest go back
    expect(pa.pcpCount(ZONE_DMA, 0)).toBe(4);
    expect(pa.pcpList(ZONE_DMA, 0)).toEqual([first, ...before.slice(0, 3)]);
    expect(pa.nrFreePages()).toBe(64);
    pa.drainLocalPages(0);
    expect(pa.pcpCount(ZONE_DMA, 0)).toBe(0);
    expect(pa.freeAreaList(ZONE_DMA, 6)).toEqual([0]);
    expect(pa.checkFreeLists()).toEqual([]);
  });
});

/* ----------------------------------------------------------- zone fallback */

describe('zone fallback', () => {
  const cfg = { nrPages: 4096 + 16 + 8, lowmemPages: 4096 + 16, firstFreePfn: 4096 - 4, pcpBatch: 1, pcpHigh: 1 };

  it('falls back HighMem -> Normal -> DMA; GFP_KERNEL never gets highmem; GFP_DMA only DMA', () => {
    const pa = make(cfg);
    const zones: number[] = [];
    for (;;) {
      const p = pa.allocPages(GFP_HIGHUSER | __GFP_NOWARN, 0, 0);
      if (p === -1) break;
      zones.push(pa.pageZone(p));
    }
    expect(zones).toEqual([...Array(8).fill(ZONE_HIGHMEM), ...Array(16).fill(ZONE_NORMAL), ...Array(4).fill(ZONE_DMA)]);
    const pb = make(cfg);
    const k: number[] = [];
    for (let p = pb.allocPages(GFP_KERNEL, 0, 0); p !== -1; p = pb.allocPages(GFP_KERNEL | __GFP_NOWARN, 0, 0))
      k.push(pb.pageZone(p));
    expect(k).toEqual([...Array(16).fill(ZONE_NORMAL), ...Array(4).fill(ZONE_DMA)]);
    const pc = make(cfg);
    const d: number[] = [];
    for (let p = pc.allocPages(GFP_DMA, 0, 0); p !== -1; p = pc.allocPages(GFP_DMA | __GFP_NOWARN, 0, 0))
      d.push(pc.pageZone(p));
    expect(d).toEqual(Array(4).fill(ZONE_DMA));
  });

  it('reports a page allocation failure unless __GFP_NOWARN', () => {
    const pa = make({ nrPages: 8, pcpBatch: 1, pcpHigh: 1 }, { comm: 'insmod' });
    expect(pa.allocPages(GFP_KERNEL, 3, 0)).toBe(0);
    expect(pa.allocPages(GFP_KERNEL, 0, 0)).toBe(-1);
    expect(pa.reports.at(-1)).toMatchObject({
      kind: 'page_allocation_failure',
      lines: ['insmod: page allocation failure. order:0, mode:0xd0'],
    });
    expect(pa.allocPages(GFP_ATOMIC | __GFP_NOWARN, 0, 0)).toBe(-1);
    expect(pa.reports).toHaveLength(1);
    expect(pa.nrAllocFailures()).toBe(2);
  });
});

/* -------------------------------------------------- watermarks and shrinkers */

describe('watermarks and shrinkers', () => {
  function cache(pa: PageAllocator, pages: number[]): Shrinker & { calls: number[] } {
    const calls: number[] = [];
    return {
      name: 'xfs_buf',
      calls,
      shrink(n, _gfp, cpu) {
        calls.push(n);
        if (n > 0) for (const p of pages.splice(0, n)) pa.freePages(p, 0, cpu);
        return pages.length;
      },
    };
  }

  it('calls shrinkers before failing a GFP_KERNEL allocation that would go below pages_low', () => {
    // 1024 pages: min_free_kbytes 128 -> min 32, low 40.
    const pa = PageAllocator.create(
      { nrPages: 1024, nrCpus: 1, minFreeKbytes: 128, pcpBatch: 1, pcpHigh: 1 },
      { zeroPage: () => {} },
    );
    expect(pa.zoneInfo(ZONE_DMA)).toMatchObject({ min: 32, low: 40 });
    const held: number[] = [];
    while (pa.zoneFreePages(ZONE_DMA) > 41) held.push(pa.allocPages(GFP_KERNEL, 0, 0));
    const cached = held.splice(0, 20);
    const s = cache(pa, cached);
    pa.registerShrinker(s);
    expect(pa.allocPages(GFP_KERNEL, 0, 0)).not.toBe(-1); // 41 -> 40: still above low
    expect(s.calls).toEqual([]);
    expect(pa.allocPages(GFP_KERNEL, 0, 0)).not.toBe(-1); // would reach low: shrink first
    expect(s.calls).toEqual([0, 20]);
    expect(cached).toEqual([]);
    pa.unregisterShrinker(s);
  });

  it('does not run shrinkers for atomic allocations; those may dip below min, and wake kswapd', () => {
    const woken: number[] = [];
    const pa = PageAllocator.create(
      { nrPages: 1024, nrCpus: 1, minFreeKbytes: 128, pcpBatch: 1, pcpHigh: 1 },
      { zeroPage: () => {}, wakeupKswapd: (zone) => woken.push(zone) },
    );
    const s = cache(pa, []);
    pa.registerShrinker(s);
    while (pa.zoneFreePages(ZONE_DMA) > 41) pa.allocPages(GFP_KERNEL, 0, 0);
    let got = 0;
    while (pa.allocPages(GFP_ATOMIC | __GFP_NOWARN, 0, 0) !== -1) got++;
    // GFP_ATOMIC: min 32, halved for __GFP_HIGH, less a quarter for !wait -> 12: the
    // last allocation that succeeds leaves 12 free.
    expect(pa.zoneFreePages(ZONE_DMA)).toBe(12);
    expect(got).toBe(41 - 12);
    expect(s.calls).toEqual([]);
    expect(woken.length).toBeGreaterThan(0);
    // GFP_NOWAIT lacks __GFP_HIGH: it stopped earlier than GFP_ATOMIC would.
    expect(pa.allocPages(GFP_NOWAIT | __GFP_NOWARN, 0, 0)).toBe(-1);
  });
});

/* ----------------------------------------------------------------- zeroing */

describe('__GFP_ZERO', () => {
  it('asks the zeroPage hook for every page of the block, and only then', () => {
    const zeroed: number[] = [];
    const pa = make({}, { zeroed });
    pa.allocPages(GFP_KERNEL, 2, 0);
    expect(zeroed).toEqual([]);
    const p = pa.allocPages(GFP_KERNEL | __GFP_ZERO, 2, 0);
    expect(zeroed).toEqual([p, p + 1, p + 2, p + 3]);
    const q = pa.allocPages(GFP_HIGHUSER | __GFP_ZERO, 0, 1);
    expect(zeroed.at(-1)).toBe(q);
  });
});

/* ----------------------------------------------------------------- bad_page */

describe('bad_page', () => {
  const setups: [string, (pa: PageAllocator, pfn: number) => void, string][] = [
    [
      'mapcount',
      (pa, p) => {
        pa.memMap.mapcount[p] = 0;
      },
      'flags:0x00000000 mapping:00000000 mapcount:1 count:0',
    ],
    [
      'mapping',
      (pa, p) => {
        pa.memMap.mapping[p] = mappingOfAddressSpace(3);
      },
      'flags:0x00000000 mapping:00000006 mapcount:0 count:0',
    ],
    ['PG_lru', (pa, p) => pa.memMap.SetPageLRU(p), 'flags:0x00000020 mapping:00000000 mapcount:0 count:0'],
    ['PG_private', (pa, p) => pa.memMap.SetPagePrivate(p), 'flags:0x00000800 mapping:00000000 mapcount:0 count:0'],
    ['PG_locked', (pa, p) => pa.memMap.SetPageLocked(p), 'flags:0x00000001 mapping:00000000 mapcount:0 count:0'],
    ['PG_active', (pa, p) => pa.memMap.SetPageActive(p), 'flags:0x00000040 mapping:00000000 mapcount:0 count:0'],
    ['PG_reclaim', (pa, p) => pa.memMap.SetPageReclaim(p), 'flags:0x00020000 mapping:00000000 mapcount:0 count:0'],
    ['PG_slab', (pa, p) => pa.memMap.__SetPageSlab(p), 'flags:0x00000080 mapping:00000000 mapcount:0 count:0'],
    ['PG_swapcache', (pa, p) => pa.memMap.SetPageSwapCache(p), 'flags:0x00008000 mapping:00000000 mapcount:0 count:0'],
    ['PG_writeback', (pa, p) => pa.memMap.SetPageWriteback(p), 'flags:0x00001000 mapping:00000000 mapcount:0 count:0'],
    ['PG_pinned (Xen)', (pa, p) => pa.memMap.SetPagePinned(p), 'flags:0x00000100 mapping:00000000 mapcount:0 count:0'],
  ];

  for (const [what, setup, line2] of setups) {
    it(`reports ${what} at free with Linux's text, fixes the page up and frees it`, () => {
      const pa = make({}, { comm: 'aplay' });
      const pfn = pa.allocPages(GFP_KERNEL, 0, 0);
      setup(pa, pfn);
      pa.freePages(pfn, 0, 0);
      const r = badPages(pa);
      expect(r).toHaveLength(1);
      expect(r[0]!.lines).toEqual([
        `Bad page state at free_hot_cold_page (in process 'aplay', page ${(0xc1000000 + pfn * 32).toString(16)})`,
        line2,
        'Trying to fix it up, but a reboot is needed',
      ]);
      expect(r[0]!.reason).toBe('bad_state');
      expect(pa.memMap.flags[pfn]! & ~(1 << 21)).toBe(0); // only PG_pcp: it is free, on the list
      expect(pa.memMap.mapcount[pfn]).toBe(-1);
      expect(pa.memMap.mapping[pfn]).toBe(0);
      expect(pa.pcpList(ZONE_DMA, 0)[0]).toBe(pfn);
      expect(pa.nrBadPages()).toBe(1);
      expect(pa.nrFreePages()).toBe(64);
      expect(pa.checkFreeLists()).toEqual([]);
    });
  }

  it('reports a count left at free (a direct free_hot_cold_page) and fixes it', () => {
    const pa = make();
    const pfn = pa.allocPages(GFP_KERNEL, 0, 0);
    pa.freeHotPage(pfn, 0);
    expect(badPages(pa)[0]!.lines[1]).toBe('flags:0x00000000 mapping:00000000 mapcount:0 count:1');
    expect(pa.memMap.pageCount(pfn)).toBe(0);
    expect(pa.checkFreeLists()).toEqual([]);
  });

  it('reports PG_reserved and does not free the page (2.6.15)', () => {
    const pa = make();
    const pfn = pa.allocPages(GFP_KERNEL, 0, 0);
    pa.memMap.SetPageReserved(pfn);
    pa.freePages(pfn, 0, 0);
    expect(badPages(pa)[0]!.lines[1]).toBe('flags:0x00000400 mapping:00000000 mapcount:0 count:0');
    expect(pa.memMap.PageReserved(pfn)).toBe(true);
    expect(pa.nrFreePages()).toBe(63);
    expect(pa.checkFreeLists()).toEqual([]);
  });

  it('reports in __free_pages_ok for every bad page of a high-order block', () => {
    const pa = make();
    const pfn = pa.allocPages(GFP_KERNEL, 2, 0);
    pa.memMap.SetPageLRU(pfn + 1);
    pa.memMap.SetPageDirty(pfn + 3); // dirty alone is cleared silently
    pa.freePages(pfn, 2, 0);
    expect(badPages(pa).map((r) => [r.function, r.pfn])).toEqual([['__free_pages_ok', pfn + 1]]);
    expect(pa.nrFreePages()).toBe(64);
  });

  it('catches a page written to while free at prep_new_page, drops it and hands out another', () => {
    const pa = make({ pcpBatch: 1, pcpHigh: 2 });
    const pfn = pa.allocPages(GFP_KERNEL, 0, 0);
    pa.freePages(pfn, 0, 0);
    pa.memMap.getPage(pfn); // a stray reference to a free page
    const q = pa.allocPages(GFP_KERNEL, 0, 0);
    expect(q).not.toBe(pfn);
    expect(badPages(pa).map((r) => [r.function, r.pfn, r.count])).toEqual([['prep_new_page', pfn, 1]]);
    expect(pa.checkFreeLists()).toEqual([]);
  });

  it('prints x86_64 pointers and flags with 16 digits', () => {
    const pa = make({ paging: 'x86_64', nrPages: 4096 + 64 });
    const pfn = pa.allocPages(GFP_KERNEL, 0, 0);
    pa.memMap.SetPageLRU(pfn);
    pa.freePages(pfn, 0, 0);
    const r = badPages(pa)[0]!;
    expect(r.page).toBe(pagePointer(pfn, 'x86_64'));
    expect(r.page).toMatch(/^ffffe2[0-9a-f]{10}$/);
    expect(r.lines[1]).toBe('flags:0x8000000000000020 mapping:0000000000000000 mapcount:0 count:0');
  });
});

/* ---------------------------------------------------------------- ALSA 2005 */

describe('the ALSA scenario (bad-page-state-free-hot-cold-page)', () => {
  const cfg = { nrPages: 4096 + 64, lowmemPages: 4096 + 64, firstFreePfn: 4096 };

  function alsa(gfp: number): { pa: PageAllocator; head: number } {
    const pa = make(cfg, { comm: 'aplay' });
    // snd_malloc_pages: an order-2 block, PG_reserved on each page.
    const head = pa.allocPages(gfp, 2, 0);
    for (let p = head; p < head + 4; p++) pa.memMap.SetPageReserved(p);
    // mmap + nopage: get_page on each 0-order page; the user touches them.
    for (let p = head; p < head + 4; p++) {
      pa.getPage(p);
      pa.memMap.SetPageReferenced(p);
      pa.memMap.SetPageDirty(p);
    }
    // munmap -> zap_pte_range -> put_page.
    for (let p = head; p < head + 4; p++) pa.putPage(p, 0);
    return { pa, head };
  }

  it('without __GFP_COMP: three bad_page reports, one per tail, as in the seed', () => {
    const { pa, head } = alsa(GFP_KERNEL);
    const r = badPages(pa);
    expect(r.map((x) => x.pfn)).toEqual([head + 1, head + 2, head + 3]);
    expect(r[0]!.lines).toEqual([
      `Bad page state at free_hot_cold_page (in process 'aplay', page ${(0xc1000000 + (head + 1) * 32).toString(16)})`,
      'flags:0x80000414 mapping:00000000 mapcount:0 count:0',
      'Trying to fix it up, but a reboot is needed',
    ]);
    // The tails were not freed (PG_reserved): the block is intact, the lists consistent.
    expect(pa.checkFreeLists()).toEqual([]);
    expect(pa.nrFreePages()).toBe(60);
    // snd_free_pages: ClearPageReserved on each, then free_pages(order 2).
    for (let p = head; p < head + 4; p++) pa.memMap.ClearPageReserved(p);
    pa.freePages(head, 2, 0);
    expect(badPages(pa)).toHaveLength(3);
    expect(pa.nrFreePages()).toBe(64);
    expect(pa.checkFreeLists()).toEqual([]);
  });

  it('with __GFP_COMP (the fix): tail references go to the head, no report', () => {
    const { pa, head } = alsa(GFP_KERNEL | __GFP_COMP);
    expect(badPages(pa)).toEqual([]);
    expect(pa.memMap.pageCount(head + 2)).toBe(1);
    for (let p = head; p < head + 4; p++) pa.memMap.ClearPageReserved(p);
    pa.freePages(head, 2, 0);
    expect(badPages(pa)).toEqual([]);
    expect(pa.nrFreePages()).toBe(64);
    expect(pa.checkFreeLists()).toEqual([]);
  });
});

/* ------------------------------------------------------- compound, doubles */

describe('compound pages', () => {
  it('marks head and tails, frees on the last put from any of them', () => {
    const pa = make();
    const head = pa.allocPages(GFP_KERNEL | __GFP_COMP, 3, 0);
    const mm = pa.memMap;
    expect(mm.PageHead(head)).toBe(true);
    expect(mm.compoundOrder(head)).toBe(3);
    expect(mm.compoundHead(head + 5)).toBe(head);
    mm.getPage(head + 5);
    expect(mm.pageCount(head)).toBe(2);
    pa.putPage(head, 0);
    expect(pa.nrFreePages()).toBe(56);
    pa.putPage(head + 7, 1);
    expect(pa.nrFreePages()).toBe(64);
    expect(mm.PageTail(head + 5)).toBe(false);
    expect(pa.checkFreeLists()).toEqual([]);
  });

  it('reports a compound page freed with the wrong order (destroy_compound_page)', () => {
    const pa = make();
    const head = pa.allocPages(GFP_KERNEL | __GFP_COMP, 2, 0);
    pa.freePages(head, 1, 0);
    expect(badPages(pa).map((r) => r.function)).toEqual(['destroy_compound_page']);
  });

  it('refuses to free a lone tail as an order-0 page', () => {
    const pa = make();
    const head = pa.allocPages(GFP_KERNEL | __GFP_COMP, 1, 0);
    pa.memMap.count[head + 1] = 0;
    pa.freeHotPage(head + 1, 0);
    expect(badPages(pa)).toHaveLength(1);
    expect(pa.nrFreePages()).toBe(62);
    expect(pa.checkFreeLists()).toEqual([]);
  });
});

describe('double free', () => {
  it('__free_pages / put_page on a page whose count is 0', () => {
    const pa = make();
    const pfn = pa.allocPages(GFP_KERNEL, 0, 0);
    pa.freePages(pfn, 0, 0);
    pa.freePages(pfn, 0, 0);
    pa.putPage(pfn, 0);
    expect(badPages(pa).map((r) => [r.function, r.reason])).toEqual([
      ['__free_pages', 'double_free'],
      ['put_page', 'double_free'],
    ]);
    expect(pa.memMap.pageCount(pfn)).toBe(0);
    expect(pa.checkFreeLists()).toEqual([]);
  });

  it('free_hot_cold_page of a page on a pcp list, a buddy head, or inside a free block', () => {
    const pa = make({ pcpBatch: 1, pcpHigh: 4 });
    const a = pa.allocPages(GFP_KERNEL, 0, 0);
    pa.freePages(a, 0, 0);
    pa.freeHotPage(a, 0); // on the pcp list
    pa.drainLocalPages(0);
    pa.freeHotPage(a, 1); // merged back into the order-6 block at 0
    pa.freeHotPage(0, 1); // the head itself
    const r = badPages(pa);
    expect(r.map((x) => x.reason)).toEqual(['double_free', 'double_free', 'double_free']);
    expect(r[2]!.flags & (1 << PG_buddy)).not.toBe(0);
    expect(pa.nrFreePages()).toBe(64);
    expect(pa.checkFreeLists()).toEqual([]);
  });
});

/* -------------------------------------------------- fast vs reference twin */

type Op =
  | { k: 'alloc'; cpu: number; gfp: number; order: number }
  | { k: 'free'; cpu: number; i: number; how: 'free' | 'put' | 'cold' }
  | { k: 'getput'; cpu: number; i: number; off: number }
  | { k: 'bad'; cpu: number; i: number; flag: number }
  | { k: 'double'; cpu: number; i: number; direct: boolean }
  | { k: 'drain'; cpu: number }
  | { k: 'cache'; i: number }
  | { k: 'lru'; cpu: number; i: number }
  | { k: 'uncache'; cpu: number; i: number };

const GFPS = [
  GFP_KERNEL,
  GFP_KERNEL,
  GFP_ATOMIC,
  GFP_NOWAIT,
  GFP_HIGHUSER,
  GFP_KERNEL | __GFP_COLD,
  GFP_DMA | GFP_KERNEL,
  GFP_KERNEL | __GFP_COMP,
  GFP_HIGHUSER | __GFP_ZERO,
  GFP_ATOMIC | __GFP_COMP | __GFP_NOWARN,
  GFP_HIGHUSER_MOVABLE,
  GFP_HIGHUSER_MOVABLE | __GFP_COLD,
  GFP_KERNEL | __GFP_RECLAIMABLE,
  GFP_ATOMIC | __GFP_MOVABLE | __GFP_NOWARN,
];
const BAD_FLAGS = [
  PG_lru,
  PG_reserved,
  PG_private,
  PG_dirty,
  PG_referenced,
  PG_locked,
  PG_active,
  PG_reclaim,
  PG_slab,
  PG_swapcache,
  PG_writeback,
  PG_pinned,
];

const opArb: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      k: fc.constant('alloc' as const),
      cpu: fc.nat(2),
      gfp: fc.constantFrom(...GFPS),
      order: fc.oneof(
        { weight: 6, arbitrary: fc.constant(0) },
        { weight: 3, arbitrary: fc.integer({ min: 1, max: 4 }) },
        { weight: 1, arbitrary: fc.integer({ min: 5, max: 10 }) },
      ),
    }),
  },
  {
    weight: 7,
    arbitrary: fc.record({
      k: fc.constant('free' as const),
      cpu: fc.nat(2),
      i: fc.nat(),
      how: fc.constantFrom('free' as const, 'put' as const, 'cold' as const),
    }),
  },
  {
    weight: 2,
    arbitrary: fc.record({ k: fc.constant('getput' as const), cpu: fc.nat(2), i: fc.nat(), off: fc.nat(15) }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      k: fc.constant('bad' as const),
      cpu: fc.nat(2),
      i: fc.nat(),
      flag: fc.constantFrom(...BAD_FLAGS),
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({ k: fc.constant('double' as const), cpu: fc.nat(2), i: fc.nat(), direct: fc.boolean() }),
  },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('drain' as const), cpu: fc.nat(2) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('cache' as const), i: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('lru' as const), cpu: fc.nat(2), i: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('uncache' as const), cpu: fc.nat(2), i: fc.nat() }) },
);

/** Rarely: both mobility bits at once, a caller's mistake (WARN and NULL on both sides). */
const GFP_BOTH = GFP_KERNEL | __GFP_MOVABLE | __GFP_RECLAIMABLE;

const cfgArb = fc.record({
  paging: fc.constantFrom('pae' as const, 'x86_64' as const),
  extra: fc.integer({ min: 0, max: 300 }),
  dmaFree: fc.integer({ min: 1, max: 400 }),
  high: fc.integer({ min: 0, max: 200 }),
  pcpBatch: fc.integer({ min: 1, max: 8 }),
  pcpHighExtra: fc.integer({ min: 0, max: 12 }),
  minFreeKbytes: fc.constantFrom(0, 0, 128, 512, 2048),
  mobility: fc.boolean(),
  pageblockOrder: fc.integer({ min: 2, max: MAX_ORDER - 1 }),
});

interface Live {
  pfn: number;
  order: number;
  comp: boolean;
}

function runBoth(c: typeof cfgArb extends fc.Arbitrary<infer T> ? T : never, ops: Op[]): void {
  const nrPages = 4096 + c.extra + (c.paging === 'pae' ? c.high : 0);
  const cfg: PageAllocConfig = {
    nrPages,
    nrCpus: 3,
    paging: c.paging,
    lowmemPages: c.paging === 'pae' ? 4096 + c.extra : undefined,
    firstFreePfn: 4096 - c.dmaFree,
    minFreeKbytes: c.minFreeKbytes,
    pcpBatch: c.pcpBatch,
    pcpHigh: c.pcpBatch + c.pcpHighExtra,
    mobility: c.mobility,
    pageblockOrder: c.pageblockOrder,
  };
  const zf: number[] = [];
  const zr: number[] = [];
  const fast = PageAllocator.create(cfg, { zeroPage: (p) => zf.push(p), comm: (cpu) => `cpu${cpu}` });
  const ref = new PageAllocatorRef(cfg, { zeroPage: (p) => zr.push(p), comm: (cpu) => `cpu${cpu}` });
  const live: Live[] = [];
  const dead: number[] = [];
  // A page cache a shrinker can empty, identical on both sides.
  const cacheF: Live[] = [];
  const cacheR: Live[] = [];
  const shr = (a: PageAllocator | PageAllocatorRef, list: Live[]): Shrinker => ({
    name: 'cache',
    shrink(n, _g, cpu) {
      for (const l of list.splice(0, n)) a.freePages(l.pfn, l.order, cpu);
      return list.length;
    },
  });
  fast.registerShrinker(shr(fast, cacheF));
  ref.registerShrinker(shr(ref, cacheR));
  // Page-cache pages on the LRU (reclaim may drop them: PG_lru says whether they are still there).
  const lru: number[] = [];

  const compare = (step: number): void => {
    for (let z = 0; z < MAX_NR_ZONES; z++) {
      expect(fast.zoneFreePages(z), `step ${step} zone ${z} free`).toBe(ref.zoneFreePages(z));
      for (let cpu = 0; cpu < 3; cpu++)
        expect(fast.pcpCount(z, cpu), `step ${step} pcp ${z}/${cpu}`).toBe(ref.pcpCount(z, cpu));
    }
    expect(fast.reports.length, `step ${step} reports`).toBe(ref.reports.length);
    expect(fast.mobilityStats(), `step ${step} mobility`).toEqual(ref.mobilityStats());
  };

  ops.forEach((op, step) => {
    switch (op.k) {
      case 'alloc': {
        // Rarely a caller's mistake too: an order past MAX_ORDER (a WARNING and NULL on both sides).
        const order = step % 131 === 130 ? MAX_ORDER : op.gfp & __GFP_COMP ? Math.max(1, op.order) : op.order;
        const gfp = step % 97 === 96 ? GFP_BOTH : op.gfp;
        const a = fast.allocPages(gfp, order, op.cpu);
        const b = ref.allocPages(gfp, order, op.cpu);
        expect(a, `step ${step} alloc`).toBe(b);
        if (a !== -1) live.push({ pfn: a, order, comp: (op.gfp & __GFP_COMP) !== 0 });
        break;
      }
      case 'free': {
        if (live.length === 0) return;
        const [l] = live.splice(op.i % live.length, 1);
        const { pfn, order, comp } = l!;
        if (comp || op.how === 'put') {
          if (comp) {
            fast.putPage(pfn, op.cpu);
            ref.putPage(pfn, op.cpu);
          } else {
            fast.freePages(pfn, order, op.cpu);
            ref.freePages(pfn, order, op.cpu);
          }
        } else if (op.how === 'cold' && order === 0) {
          expect(fast.memMap.putPageTestzero(pfn, 'test', op.cpu)).toBe(ref.putPageTestzero(pfn, 'test', op.cpu));
          fast.freeColdPage(pfn, op.cpu);
          ref.freeColdPage(pfn, op.cpu);
        } else {
          fast.freePages(pfn, order, op.cpu);
          ref.freePages(pfn, order, op.cpu);
        }
        dead.push(pfn);
        break;
      }
      case 'getput': {
        if (live.length === 0) return;
        const l = live[op.i % live.length]!;
        const p = l.comp ? l.pfn + (op.off % (1 << l.order)) : l.pfn;
        fast.getPage(p);
        ref.getPage(p);
        fast.putPage(p, op.cpu);
        ref.putPage(p, op.cpu);
        break;
      }
      case 'bad': {
        if (live.length === 0) return;
        const [l] = live.splice(op.i % live.length, 1);
        fast.memMap.setPageFlag(l!.pfn, op.flag);
        ref.setFlag(l!.pfn, op.flag);
        fast.freePages(l!.pfn, l!.order, op.cpu);
        ref.freePages(l!.pfn, l!.order, op.cpu);
        // Reserved (or compound) pages stay allocated and are forgotten.
        break;
      }
      case 'double': {
        const cand = dead.filter(
          (p) =>
            !live.some((l) => p >= l.pfn && p < l.pfn + (1 << l.order)) &&
            !cacheF.some((l) => p >= l.pfn && p < l.pfn + (1 << l.order)) &&
            !fast.memMap.PageLRU(p),
        );
        if (cand.length === 0) return;
        const p = cand[op.i % cand.length]!;
        if (fast.memMap.count[p] !== 0 || fast.memMap.PageReserved(p)) return;
        if (op.direct) {
          fast.freeHotPage(p, op.cpu);
          ref.freeHotPage(p, op.cpu);
        } else {
          fast.freePages(p, 0, op.cpu);
          ref.freePages(p, 0, op.cpu);
        }
        break;
      }
      case 'drain':
        fast.drainLocalPages(op.cpu);
        ref.drainLocalPages(op.cpu);
        break;
      case 'cache': {
        if (live.length === 0) return;
        const [l] = live.splice(op.i % live.length, 1);
        if (l!.comp) {
          live.push(l!);
          return;
        }
        cacheF.push(l!);
        cacheR.push({ ...l! });
        break;
      }
      case 'lru': {
        const j = live.findIndex((l, n) => n >= op.i % Math.max(1, live.length) && l.order === 0 && !l.comp);
        if (j < 0) return;
        const [l] = live.splice(j, 1);
        fast.memMap.mapping[l!.pfn] = mappingOfAddressSpace(7);
        ref.mapping[l!.pfn] = mappingOfAddressSpace(7);
        if (op.i % 5 === 0) {
          fast.memMap.setPageFlag(l!.pfn, PG_dirty); // a dirty page: reclaim must pass it by
          ref.setFlag(l!.pfn, PG_dirty);
        }
        expect(fast.lruCacheAdd(l!.pfn, op.cpu)).toBe(ref.lruCacheAdd(l!.pfn, op.cpu));
        lru.push(l!.pfn);
        break;
      }
      case 'uncache': {
        if (lru.length === 0) return;
        const [p] = lru.splice(op.i % lru.length, 1);
        const onF = fast.memMap.PageLRU(p!);
        expect(onF).toBe(ref.hasFlag(p!, PG_lru));
        if (!onF) return; // reclaim dropped it already
        fast.memMap.clearPageFlag(p!, PG_dirty);
        ref.clearFlag(p!, PG_dirty);
        expect(fast.removeFromPageCache(p!, mappingOfAddressSpace(7), op.cpu)).toBe(
          ref.removeFromPageCache(p!, mappingOfAddressSpace(7), op.cpu),
        );
        dead.push(p!);
        break;
      }
    }
    compare(step);
  });
  if (process.env.PVMMU_FUZZ_STATS) {
    const kinds: Record<string, number> = {};
    for (const r of fast.reports) {
      const key = r.kind + (r.kind === 'bad_page' ? `/${r.reason}/${r.function}` : '');
      kinds[key] = (kinds[key] ?? 0) + 1;
    }
    console.log(
      JSON.stringify({
        ops: ops.length,
        free: fast.nrFreePages(),
        failures: fast.nrAllocFailures(),
        kinds,
        mobility: c.mobility,
        ...fast.mobilityStats(),
      }),
    );
  }
  expect(zf).toEqual(zr);
  expect(fast.reports.map((r) => r.lines)).toEqual(ref.reports.map((r) => r.lines));
  expect(fast.nrFreePages()).toBe(ref.nrFreePages());
  expect(fast.checkFreeLists()).toEqual([]);
  for (let z = 0; z < MAX_NR_ZONES; z++) {
    for (let o = 0; o < MAX_ORDER; o++)
      for (let t = 0; t < MIGRATE_TYPES; t++) expect(fast.freeAreaList(z, o, t)).toEqual(ref.freeAreaList(z, o, t));
    for (let cpu = 0; cpu < 3; cpu++)
      for (let t = 0; t < MIGRATE_PCPTYPES; t++) expect(fast.pcpList(z, cpu, t)).toEqual(ref.pcpList(z, cpu, t));
    expect(fast.lruList(z)).toEqual(ref.lruList(z));
  }
  for (let p = 0; p < nrPages; p++) {
    expect(fast.pageblockMigratetype(p)).toBe(ref.pageblockMigratetype(p));
    expect(fast.allocMigratetype(p)).toBe(ref.allocMigratetype(p));
  }
  if (!c.mobility) expect(fast.mobilityStats().fallbacks).toBe(0);
}

describe('fast allocator vs reference twin', () => {
  it('agrees on every result, free count, list and report for random operation sequences, grouping by mobility on and off', () => {
    fc.assert(
      fc.property(cfgArb, fc.array(opArb, { minLength: 1, maxLength: 500, size: 'max' }), (c, ops) => runBoth(c, ops)),
      { numRuns: Number(process.env.PVMMU_FUZZ_RUNS ?? 40), seed: Number(process.env.PVMMU_SEED ?? 20071015) },
    );
  });
});

/* ------------------------------------------------------------ two workers */

function ensureBuilt(): void {
  const srcs = ['page.ts', 'page_alloc.ts', 'spinlock.ts'];
  const stale = srcs.some((f) => {
    const out = join(root, 'dist/guest/mm', f.replace(/\.ts$/, '.js'));
    return !existsSync(out) || statSync(out).mtimeMs < statSync(join(root, 'guest/mm', f)).mtimeMs;
  });
  if (!stale) return;
  try {
    execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', join(root, 'tsconfig.json')], {
      stdio: 'pipe',
    });
  } catch {
    // Other files may not compile mid-flight; tsc still emits ours.
  }
}

describe('concurrency', () => {
  it('two workers hammering alloc/free on one SAB leave consistent lists and counts', async () => {
    ensureBuilt();
    const pa = PageAllocator.create(
      { nrPages: 4096 + 2048, nrCpus: 2, lowmemPages: 4096 + 1024, minFreeKbytes: 0, pcpBatch: 7, pcpHigh: 42 },
      { zeroPage: () => {} },
    );
    const total = pa.nrFreePages();
    const workerFile = join(root, 'test/workers/page_alloc_hammer.mjs');
    const run = (cpu: number): Promise<{ allocs: number; failures: number; held: number }> =>
      new Promise((resolve, reject) => {
        const w = new Worker(workerFile, { workerData: { sab: pa.sab, cpu, iterations: 40_000, seed: 1234 + cpu } });
        w.once('message', resolve);
        w.once('error', reject);
      });
    const results = await Promise.all([run(0), run(1)]);
    for (const r of results) {
      expect(r.allocs).toBeGreaterThan(10_000);
      expect(r.held).toBe(0);
    }
    expect(pa.nrBadPages()).toBe(0);
    expect(pa.checkFreeLists()).toEqual([]);
    expect(pa.nrFreePages()).toBe(total);
    for (let pfn = 0; pfn < pa.nrPages; pfn++) {
      if (!pa.memMap.PageReserved(pfn) && pa.memMap.count[pfn] !== 0)
        throw new Error(`pfn ${pfn} count ${pa.memMap.count[pfn]}`);
    }
  });
});
