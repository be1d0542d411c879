/*
 * kmalloc (guest/mm/slab.ts): size classes, slab pages as PageSlab with the cache id in
 * page->mapping, LIFO object reuse, slab release, failure under pressure and injected
 * failure (failslab), kfree misuse reports, and the SLUB page_mapping fix of 2007 as
 * flush_dcache_page sees it.
 */
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { PAE_LAYOUT } from '../src/abi/layout.js';
import {
  GFP_ATOMIC,
  GFP_HIGHUSER,
  GFP_KERNEL,
  GFP_NOWAIT,
  PageAllocator,
  __GFP_HIGHMEM,
  __GFP_NOWARN,
  type SlabErrorReport,
} from '../guest/mm/page_alloc.js';
import { PG_slab, ZONE_DMA, mappingOfAddressSpace, type AddressSpaceLike } from '../guest/mm/page.js';
import { KMALLOC_CACHE_ID_BASE, MIN_PARTIAL, SlabAllocator, ZERO_SIZE_PTR, kmallocIndex } from '../guest/mm/slab.js';

const pfnToKaddr = (pfn: number): number => PAE_LAYOUT.pageOffset + pfn * 4096;

function setup(nrPages = 256, opts: { minFreeKbytes?: number; maxSlabs?: number; slubFix?: boolean } = {}) {
  const zeroed: [number, number][] = [];
  const pa = PageAllocator.create(
    { nrPages, nrCpus: 2, minFreeKbytes: opts.minFreeKbytes ?? 0, pcpBatch: 1, pcpHigh: 1 },
    { zeroPage: () => {}, slubPageMappingFix: opts.slubFix },
  );
  const slab = SlabAllocator.create(pa, { pfnToKaddr, zeroObject: (a, n) => zeroed.push([a, n]) }, opts.maxSlabs ?? 64);
  return { pa, slab, zeroed };
}

const pfnOf = (addr: number): number => Math.floor((addr - PAE_LAYOUT.pageOffset) / 4096);

describe('kmalloc', () => {
  it('maps sizes to power-of-two classes from 32 to 4096', () => {
    expect([1, 32, 33, 64, 65, 100, 1000, 2048, 2049, 4096].map(kmallocIndex)).toEqual([0, 0, 1, 1, 2, 2, 5, 6, 7, 7]);
  });

  it('returns direct-map addresses in PageSlab pages whose mapping is the cache id', () => {
    const { pa, slab } = setup();
    const a = slab.kmalloc(40, GFP_KERNEL, 0);
    const b = slab.kmalloc(64, GFP_KERNEL, 0);
    expect(b - a).toBe(64);
    const pfn = pfnOf(a);
    expect(a).toBe(pfnToKaddr(pfn));
    expect(pa.memMap.PageSlab(pfn)).toBe(true);
    expect(pa.memMap.mapping[pfn]).toBe(KMALLOC_CACHE_ID_BASE + 2 * 1);
    expect(slab.ksize(a)).toBe(64);
    expect(slab.kmalloc(0, GFP_KERNEL, 0)).toBe(ZERO_SIZE_PTR);
    slab.kfree(ZERO_SIZE_PTR, 0);
    slab.kfree(0, 0);
    expect(slab.checkSlabs()).toEqual([]);
  });

  it('gives back the most recently freed object first', () => {
    const { slab } = setup();
    const objs = Array.from({ length: 5 }, () => slab.kmalloc(128, GFP_KERNEL, 0));
    slab.kfree(objs[1]!, 0);
    slab.kfree(objs[3]!, 1);
    expect(slab.kmalloc(100, GFP_KERNEL, 1)).toBe(objs[3]);
    expect(slab.kmalloc(100, GFP_KERNEL, 0)).toBe(objs[1]);
  });

  it('fills a slab, starts another, and returns empty slabs beyond MIN_PARTIAL to the page allocator', () => {
    const { pa, slab } = setup();
    const free0 = pa.nrFreePages();
    const objs = Array.from({ length: 4 * 2 + 1 }, () => slab.kmalloc(2048, GFP_KERNEL, 0)); // 5 slabs
    expect(slab.cacheStats()[6]).toMatchObject({ name: 'kmalloc-2048', nrSlabs: 5, nrPartial: 1, inuse: 9 });
    expect(pa.nrFreePages()).toBe(free0 - 5);
    for (const o of objs) slab.kfree(o, 0);
    const st = slab.cacheStats()[6]!;
    expect(st.inuse).toBe(0);
    // Empty slabs are kept only while the cache has no more than MIN_PARTIAL partial slabs.
    expect(st.nrSlabs).toBe(MIN_PARTIAL);
    expect(pa.nrFreePages()).toBe(free0 - MIN_PARTIAL);
    expect(slab.nrSlabPages()).toBe(MIN_PARTIAL);
    expect(slab.checkSlabs()).toEqual([]);
    expect(pa.checkFreeLists()).toEqual([]);
    expect(pa.reports).toEqual([]); // discarded slab pages pass free_pages_check
  });

  it('clears objects for kzalloc through the zeroObject hook', () => {
    const { slab, zeroed } = setup();
    const a = slab.kzalloc(200, GFP_KERNEL, 0);
    expect(zeroed).toEqual([[a, 256]]);
  });

  it('rejects what a caller can get wrong, with what is accepted', () => {
    const { slab } = setup();
    // kmalloc: a WARN with the reason, counted, and NULL (Linux's convention for a caller's mistake)
    const warned: string[] = [];
    const k = new SlabAllocator(slab.sab, slab.pa, { pfnToKaddr, report: (line) => warned.push(line) });
    expect(k.kmalloc(4097, GFP_KERNEL, 0)).toBe(0);
    expect(warned.at(-1)).toMatch(
      /^WARNING: at mm\/slub\.c: kmalloc: .*above KMALLOC_MAX_SIZE \(4096\); use allocPages/,
    );
    expect(k.kmalloc(-1, GFP_KERNEL, 0)).toBe(0);
    expect(warned.at(-1)).toMatch(/non-negative integer/);
    expect(k.kmalloc(64, GFP_HIGHUSER, 0)).toBe(0);
    expect(warned.at(-1)).toMatch(/__GFP_HIGHMEM .* direct map/);
    expect(k.ksize(pfnToKaddr(0))).toBe(0); // a page, but not a slab page
    expect(warned.at(-1)).toMatch(/^WARNING: at mm\/slub\.c: ksize: 0x[0-9a-f]+ is not in a slab page/);
    expect(k.ksize(pfnToKaddr(100_000))).toBe(0); // beyond the mem_map
    expect(warned).toHaveLength(5);
    expect(slab.nrMisuse()).toBe(5);
    expect(slab.cacheStats().reduce((n, c) => n + c.allocs, 0)).toBe(0); // nothing was allocated
    expect(() => slab.kmalloc(64, 0x8, 0)).toThrow(/unknown GFP bits/);
    expect(() => slab.setFailslab({ probability: 150 })).toThrow(/percentage 0\.\.100/);
    void __GFP_HIGHMEM;
  });
});

describe('kfree misuse', () => {
  it('reports a double free, a pointer inside an object and a non-slab address', () => {
    const { pa, slab } = setup();
    const a = slab.kmalloc(64, GFP_KERNEL, 0);
    slab.kmalloc(64, GFP_KERNEL, 0);
    slab.kfree(a, 0);
    slab.kfree(a, 0);
    slab.kfree(a + 65, 0);
    const page = pa.allocPages(GFP_KERNEL, 0, 0);
    slab.kfree(pfnToKaddr(page), 1);
    const r = pa.reports as SlabErrorReport[];
    expect(r.map((x) => [x.kind, x.reason])).toEqual([
      ['slab_error', 'double_free'],
      ['slab_error', 'invalid_pointer'],
      ['slab_error', 'not_slab'],
    ]);
    expect(r[0]!.lines[0]).toBe(
      `kfree: double free of 0x${a.toString(16)} in kmalloc-64 (slab page pfn ${pfnOf(a)}, object 0)`,
    );
    expect(r[1]!.lines[0]).toMatch(/is not the start of an object in kmalloc-64 \(offset 65 /);
    expect(slab.nrSlabErrors()).toBe(3);
    expect(slab.checkSlabs()).toEqual([]);
  });
});

describe('failure under pressure', () => {
  it('GFP_NOWAIT kmalloc fails (returns NULL) when the page allocator reaches its watermark', () => {
    const { pa, slab } = setup(1024, { minFreeKbytes: 128 });
    while (pa.zoneFreePages(ZONE_DMA) > 41) pa.allocPages(GFP_KERNEL, 0, 0);
    // GFP_NOWAIT: no __GFP_HIGH, may not sleep: pages_min less a quarter = 24.
    let n = 0;
    while (slab.kmalloc(4096, GFP_NOWAIT | __GFP_NOWARN, 0) !== 0) n++;
    expect(pa.zoneFreePages(ZONE_DMA)).toBe(24);
    expect(n).toBe(41 - 24);
    expect(slab.kmalloc(32, GFP_NOWAIT | __GFP_NOWARN, 1)).toBe(0);
    expect(slab.kmalloc(32, GFP_ATOMIC, 1)).not.toBe(0); // __GFP_HIGH digs deeper
  });

  it('runs out of slots like out of memory', () => {
    const { pa, slab } = setup(256, { maxSlabs: 2 });
    const free0 = pa.nrFreePages();
    expect(slab.kmalloc(4096, GFP_KERNEL, 0)).not.toBe(0);
    expect(slab.kmalloc(4096, GFP_KERNEL, 0)).not.toBe(0);
    expect(slab.kmalloc(4096, GFP_KERNEL, 0)).toBe(0);
    expect(pa.nrFreePages()).toBe(free0 - 2);
  });
});

describe('failslab', () => {
  it('fails every Nth allocation that cannot sleep, and never GFP_KERNEL by default', () => {
    const { slab } = setup();
    slab.setFailslab({ interval: 3 });
    const got = Array.from({ length: 9 }, () => slab.kmalloc(32, GFP_NOWAIT, 0) !== 0);
    expect(got).toEqual([true, true, false, true, true, false, true, true, false]);
    expect(Array.from({ length: 6 }, () => slab.kmalloc(32, GFP_KERNEL, 0) !== 0).every(Boolean)).toBe(true);
    expect(slab.nrFailslab()).toBe(3);
    slab.setFailslab({ interval: 1, times: 2, ignoreGfpWait: false });
    expect([0, 1, 2].map(() => slab.kmalloc(32, GFP_KERNEL, 0) !== 0)).toEqual([false, false, true]);
    slab.setFailslab(null);
    expect(slab.kmalloc(32, GFP_NOWAIT, 0)).not.toBe(0);
  });

  it('fails with a seeded probability, reproducibly', () => {
    const run = (seed: number): boolean[] => {
      const { slab } = setup();
      slab.setFailslab({ probability: 30, seed });
      return Array.from({ length: 200 }, () => slab.kmalloc(64, GFP_ATOMIC, 0) !== 0);
    };
    const a = run(7);
    expect(run(7)).toEqual(a);
    expect(run(8)).not.toEqual(a);
    const failed = a.filter((ok) => !ok).length;
    expect(failed).toBeGreaterThan(30);
    expect(failed).toBeLessThan(95);
  });
});

describe('page_mapping of slab pages (slub-kmap-atomic-oops)', () => {
  it('is NULL, so flush_dcache_page does not dereference the cache id', () => {
    const { pa, slab } = setup();
    const buf = slab.kmalloc(64, GFP_KERNEL, 0);
    const pfn = pfnOf(buf);
    expect(pa.memMap.pageMapping(pfn)).toBe(0);
    const lookup = vi.fn((_m: number): AddressSpaceLike | undefined => undefined);
    expect(pa.memMap.flushDcachePage(pfn, lookup)).toBe('kernel');
    expect(lookup).not.toHaveBeenCalled();
    expect(pa.memMap.testPageFlag(pfn, PG_slab)).toBe(true);
  });

  it('without the fix, flush_dcache_page takes the cache id for an address_space and oopses', () => {
    const { pa, slab } = setup(256, { slubFix: false });
    const buf = slab.kmalloc(64, GFP_KERNEL, 0);
    const pfn = pfnOf(buf);
    const lookup = vi.fn((_m: number): AddressSpaceLike | undefined => undefined);
    expect(pa.memMap.flushDcachePage(pfn, lookup)).toBe('oops');
    expect(lookup).toHaveBeenCalledWith(KMALLOC_CACHE_ID_BASE + 2);
  });

  it('still flushes page-cache pages through their address_space', () => {
    const { pa } = setup();
    const pfn = pa.allocPages(GFP_KERNEL, 0, 0);
    pa.memMap.mapping[pfn] = mappingOfAddressSpace(5);
    const spaces = new Map<number, AddressSpaceLike>([[mappingOfAddressSpace(5), { mapped: false }]]);
    expect(pa.memMap.flushDcachePage(pfn, (m) => spaces.get(m))).toBe('deferred');
    spaces.set(mappingOfAddressSpace(5), { mapped: true });
    expect(pa.memMap.flushDcachePage(pfn, (m) => spaces.get(m))).toBe('aliases');
  });
});

describe('random kmalloc/kfree', () => {
  it('never hands out overlapping live objects and keeps its bookkeeping consistent', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 1, max: 4096 }), fc.nat(), fc.nat(1)), {
          maxLength: 300,
          size: 'max',
        }),
        (ops) => {
          const { pa, slab } = setup(512, { maxSlabs: 128 });
          const live = new Map<number, number>(); // addr -> size class
          for (const [alloc, size, i, cpu] of ops) {
            if (alloc || live.size === 0) {
              const a = slab.kmalloc(size, GFP_KERNEL | __GFP_NOWARN, cpu);
              if (a === 0) continue;
              const cls = slab.ksize(a);
              for (const [b, n] of live)
                expect(a + cls <= b || b + n <= a, `0x${a.toString(16)} overlaps 0x${b.toString(16)}`).toBe(true);
              live.set(a, cls);
            } else {
              const addrs = [...live.keys()];
              const a = addrs[i % addrs.length]!;
              live.delete(a);
              slab.kfree(a, cpu);
            }
          }
          expect(slab.checkSlabs()).toEqual([]);
          for (const a of live.keys()) slab.kfree(a, 0);
          expect(slab.cacheStats().every((c) => c.inuse === 0 && c.nrSlabs <= MIN_PARTIAL)).toBe(true);
          expect(pa.reports).toEqual([]);
          expect(pa.checkFreeLists()).toEqual([]);
        },
      ),
      { numRuns: 40, seed: 2007 },
    );
  });
});

describe('kmem_cache_shrink', () => {
  it('gives back the empty slabs MIN_PARTIAL kept, and nothing in use', () => {
    const { pa, slab } = setup();
    const free0 = pa.nrFreePages();
    const objs: number[] = [];
    for (let i = 0; i < 600; i++) objs.push(slab.kmalloc(32, 0, 0));
    const keep = objs.pop()!;
    for (const o of objs) slab.kfree(o, 0);
    expect(slab.nrSlabPages()).toBeGreaterThan(1); // MIN_PARTIAL empty slabs stay cached
    const freed = slab.kmemCacheShrinkAll(0);
    expect(freed).toBeGreaterThan(0);
    expect(slab.nrSlabPages()).toBe(1); // the slab holding `keep`
    expect(slab.checkSlabs()).toEqual([]);
    slab.kfree(keep, 0);
    slab.kmemCacheShrinkAll(0);
    expect(slab.nrSlabPages()).toBe(0);
    expect(pa.nrFreePages()).toBe(free0);
  });
});
