/*
 * Grouping pages by mobility (guest/mm/page_alloc.ts, 2.6.24): gfpflags_to_migratetype,
 * the pageblock bitmap and MIGRATE_RESERVE, per-type buddy and per-CPU lists, the fallback
 * that steals a pageblock, RESERVE kept for atomic callers, 2.6.23's lumpy reclaim of the
 * page cache, and the debug check that nothing unmovable sits in a MOVABLE block allocated
 * MOVABLE. Then the guest: the check in every workload and both paging modes, the XFS bug
 * and its fixes with grouping on, `pvmmu run fragmentation`, and its bad options.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  GFP_ATOMIC,
  GFP_HIGHUSER_MOVABLE,
  GFP_KERNEL,
  GFP_NOFS_RECLAIMABLE,
  MIGRATE_MOVABLE,
  MIGRATE_RECLAIMABLE,
  MIGRATE_RESERVE,
  MIGRATE_UNMOVABLE,
  PageAllocator,
  __GFP_COLD,
  __GFP_MOVABLE,
  __GFP_NOMEMALLOC,
  __GFP_NOWARN,
  __GFP_RECLAIMABLE,
  gfpflagsToMigratetype,
  type PageAllocConfig,
} from '../guest/mm/page_alloc.js';
import { PG_dirty, ZONE_DMA, mappingOfAddressSpace, mappingOfAnonVma } from '../guest/mm/page.js';
import { DEFAULT_RUN, type RunOptions, runOnce } from '../src/run.js';
import { type STRATEGIES, WORKLOAD_NAMES, type WorkloadName } from '../src/abi/kernel.js';
import { summaryJson } from '../src/summary.js';

const MiB = 2 ** 20;
const cli = join(import.meta.dirname, '..', 'dist', 'src', 'cli.js');

/** 4096 pages of ZONE_DMA: 4 pageblocks of 1024 pages (pageblock_order = MAX_ORDER - 1). */
function make(cfg: Partial<PageAllocConfig> = {}): PageAllocator {
  return PageAllocator.create(
    { nrPages: 4096, nrCpus: 1, minFreeKbytes: 0, pcpBatch: 1, pcpHigh: 1, pageblockOrder: 10, mobility: true, ...cfg },
    { zeroPage: () => {} },
  );
}

const block = (pfn: number) => pfn >> 10;
/** Movable, but lowmem only (these allocators have no highmem). */
const MOVABLE_LOW = GFP_HIGHUSER_MOVABLE & ~2;

describe('gfpflags_to_migratetype', () => {
  it('reads __GFP_MOVABLE and __GFP_RECLAIMABLE (2.6.24 values), and gives UNMOVABLE when grouping is off', () => {
    expect(__GFP_RECLAIMABLE).toBe(0x80000);
    expect(__GFP_MOVABLE).toBe(0x100000);
    expect(gfpflagsToMigratetype(GFP_KERNEL, true)).toBe(MIGRATE_UNMOVABLE);
    expect(gfpflagsToMigratetype(GFP_NOFS_RECLAIMABLE, true)).toBe(MIGRATE_RECLAIMABLE);
    expect(gfpflagsToMigratetype(GFP_HIGHUSER_MOVABLE, true)).toBe(MIGRATE_MOVABLE);
    for (const g of [GFP_KERNEL, GFP_NOFS_RECLAIMABLE, GFP_HIGHUSER_MOVABLE])
      expect(gfpflagsToMigratetype(g, false)).toBe(MIGRATE_UNMOVABLE);
  });

  it('both bits at once is a caller mistake: a WARNING and NULL, no exception', () => {
    const pa = make();
    expect(pa.allocPages(GFP_KERNEL | __GFP_MOVABLE | __GFP_RECLAIMABLE, 0, 0)).toBe(-1);
    expect(pa.reports.at(-1)!.lines[0]).toMatch(
      /^WARNING: at mm\/page_alloc\.c: alloc_pages\(\) .*mode:0x1800d0 .* is both __GFP_MOVABLE and __GFP_RECLAIMABLE$/,
    );
    expect(pa.nrFreePages()).toBe(4096);
  });
});

describe('pageblocks and MIGRATE_RESERVE', () => {
  it('every block starts MOVABLE; the first min-watermark worth of blocks becomes RESERVE', () => {
    const pa = make({ minFreeKbytes: 8192 }); // min 2048 pages: two blocks
    expect([0, 1].map((b) => pa.pageblockMigratetype(b << 10))).toEqual([MIGRATE_RESERVE, MIGRATE_RESERVE]);
    for (let b = 2; b < 4; b++) expect(pa.pageblockMigratetype(b << 10)).toBe(MIGRATE_MOVABLE);
    expect(pa.freeAreaList(ZONE_DMA, 10, MIGRATE_RESERVE)).toEqual([1024, 0]);
    expect(pa.freeAreaList(ZONE_DMA, 10, MIGRATE_MOVABLE)).toEqual([3072, 2048]);
    expect(pa.checkFreeLists()).toEqual([]);
  });

  it('with grouping off every block is UNMOVABLE, there is no reserve, and all free blocks share one list', () => {
    const pa = make({ minFreeKbytes: 8192, mobility: false });
    for (let b = 0; b < 4; b++) expect(pa.pageblockMigratetype(b << 10)).toBe(MIGRATE_UNMOVABLE);
    expect(pa.freeAreaList(ZONE_DMA, 10, MIGRATE_UNMOVABLE)).toEqual([3072, 2048, 1024, 0]);
    expect(pa.allocPages(MOVABLE_LOW, 0, 0)).toBe(3072);
    expect(pa.allocPages(GFP_KERNEL, 0, 0)).toBe(3073); // the same list: right beside it
  });
});

describe('per-type lists and the fallback', () => {
  it('an UNMOVABLE allocation steals a whole free pageblock and relabels it; MOVABLE ones stay apart', () => {
    const pa = make();
    const m = pa.allocPages(MOVABLE_LOW, 0, 0); // movable list: the first block
    const u = pa.allocPages(GFP_KERNEL, 0, 0); // no unmovable list yet: falls back, largest first
    expect(block(m)).not.toBe(block(u));
    expect(pa.pageblockMigratetype(u)).toBe(MIGRATE_UNMOVABLE);
    expect(pa.pageblockMigratetype(m)).toBe(MIGRATE_MOVABLE);
    // The rest of the stolen block went to the UNMOVABLE lists, so the next one comes from it.
    const u2 = pa.allocPages(GFP_KERNEL, 0, 0);
    expect(block(u2)).toBe(block(u));
    expect(pa.mobilityStats()).toMatchObject({ fallbacks: 1, steals: 1 });
    // And a movable allocation never lands in the unmovable block while it has its own.
    for (let i = 0; i < 100; i++) expect(block(pa.allocPages(MOVABLE_LOW, 0, 0))).not.toBe(block(u));
    expect(pa.checkFreeLists()).toEqual([]);
  });

  it('a small fallback takes what it needs without relabelling the block', () => {
    const pa = make();
    // Fill all memory with movable pages, then free one order-1 block in the middle.
    const pages: number[] = [];
    for (;;) {
      const p = pa.allocPages(MOVABLE_LOW | __GFP_NOWARN, 0, 0);
      if (p < 0) break;
      pages.push(p);
    }
    pa.freePages(1000, 0, 0);
    pa.freePages(1001, 0, 0);
    pa.drainLocalPages(0);
    const u = pa.allocPages(GFP_KERNEL, 0, 0);
    expect(u === 1000 || u === 1001).toBe(true);
    expect(pa.pageblockMigratetype(1000)).toBe(MIGRATE_MOVABLE);
    expect(pa.mobilityStats()).toMatchObject({ fallbacks: 1, steals: 0 });
  });

  it('per-CPU lists are per type: a freed page waits on the list of its pageblock type', () => {
    const pa = make({ pcpBatch: 4, pcpHigh: 64 });
    const m = pa.allocPages(MOVABLE_LOW, 0, 0);
    const u = pa.allocPages(GFP_KERNEL, 0, 0);
    pa.freePages(m, 0, 0);
    pa.freePages(u, 0, 0);
    expect(pa.pcpList(ZONE_DMA, 0, MIGRATE_MOVABLE)[0]).toBe(m);
    expect(pa.pcpList(ZONE_DMA, 0, MIGRATE_UNMOVABLE)[0]).toBe(u);
    expect(pa.allocPages(GFP_KERNEL, 0, 0)).toBe(u); // hot, and of its own type
    expect(pa.allocPages(MOVABLE_LOW, 0, 0)).toBe(m);
  });

  it('RESERVE blocks are kept for atomic allocations: a sleeping one fails (and would reclaim) instead', () => {
    const pa = make({ minFreeKbytes: 128, nrPages: 2048 }); // min 32 pages: one RESERVE block at 0
    expect(pa.pageblockMigratetype(0)).toBe(MIGRATE_RESERVE);
    expect(pa.pageblockMigratetype(1024)).toBe(MIGRATE_MOVABLE);
    const pages: number[] = [];
    for (;;) {
      const p = pa.allocPages(MOVABLE_LOW | __GFP_NOWARN, 0, 0);
      if (p < 0) break;
      pages.push(p);
    }
    expect(pages.length).toBe(1024);
    expect(pages.every((p) => p >= 1024)).toBe(true); // the sleeping fills never touched the reserve
    expect(pa.allocPages(GFP_KERNEL | __GFP_NOWARN, 3, 0)).toBe(-1); // above the watermarks, yet refused
    const a = pa.allocPages(GFP_ATOMIC, 3, 0);
    expect(a).toBe(0);
    const one = pa.allocPages(GFP_ATOMIC, 0, 0);
    expect(block(one)).toBe(0);
    // A reserve page goes straight back to its buddies, not to a per-CPU list.
    pa.freePages(one, 0, 0);
    expect(pa.pcpList(ZONE_DMA, 0)).toEqual([]);
    pa.freePages(a, 3, 0);
    expect(pa.freeAreaList(ZONE_DMA, 10, MIGRATE_RESERVE)).toEqual([0]);
  });
});

describe('lumpy reclaim (2.6.23)', () => {
  /** Memory full of clean page-cache pages on the LRU, plus `anon` pages nobody can reclaim. */
  function full(anon: (pfn: number) => boolean): { pa: PageAllocator; pinnedAnon: number[] } {
    const pa = make({ mobility: false });
    const pinnedAnon: number[] = [];
    for (;;) {
      // Without __GFP_WAIT: filling must not reclaim the page cache it is building.
      const p = pa.allocPages(__GFP_MOVABLE | __GFP_NOWARN, 0, 0);
      if (p < 0) break;
      if (anon(p)) {
        pinnedAnon.push(p);
        continue;
      }
      pa.memMap.mapping[p] = mappingOfAddressSpace(3);
      expect(pa.lruCacheAdd(p, 0)).toBe(0);
    }
    return { pa, pinnedAnon };
  }

  it('frees a whole order-3 block by dropping the clean page-cache pages around an old LRU page', () => {
    const { pa } = full(() => false);
    const before = pa.lruList(ZONE_DMA).length;
    const pfn = pa.allocPages(GFP_KERNEL, 3, 0);
    expect(pfn).toBeGreaterThanOrEqual(0);
    const s = pa.mobilityStats();
    expect(s.lumpy).toBeGreaterThan(0); // block-mates, not only LRU-tail pages
    expect(before - pa.lruList(ZONE_DMA).length).toBe(s.reclaimed);
    expect(pa.checkFreeLists()).toEqual([]);
  });

  it('passes by dirty pages and anonymous memory (no swap): a block holding one cannot be freed', () => {
    // One unreclaimable page in every aligned 8-page block.
    const { pa, pinnedAnon } = full((p) => p % 8 === 5);
    const dirty = pa.lruList(ZONE_DMA).filter((q) => q % 8 === 6);
    for (const p of dirty) pa.memMap.setPageFlag(p, PG_dirty);
    expect(pa.allocPages(GFP_KERNEL | __GFP_NOWARN, 3, 0)).toBe(-1);
    expect(pinnedAnon.length).toBeGreaterThan(400);
    for (const p of pinnedAnon) expect(pa.memMap.pageCount(p)).toBe(1);
    for (const p of dirty) expect(pa.memMap.PageLRU(p)).toBe(true);
    expect(pa.mobilityStats().reclaimed).toBeGreaterThan(0);
  });

  it('with a migratePage hook, the anonymous block-mates move out and the block comes free', () => {
    const moves: [number, number, number][] = [];
    const pa = PageAllocator.create(
      { nrPages: 4096, nrCpus: 1, minFreeKbytes: 0, pcpBatch: 1, pcpHigh: 1, pageblockOrder: 10, mobility: false },
      {
        zeroPage: () => {},
        // A stand-in for migrate_pages: a new page outside the block, the old one freed.
        migratePage: (pfn, s, e, cpu) => {
          const np = pa.allocPages(__GFP_MOVABLE | __GFP_NOMEMALLOC | __GFP_NOWARN | __GFP_COLD, 0, cpu);
          if (np < 0) return false;
          if (np >= s && np < e) {
            pa.freePages(np, 0, cpu);
            return false;
          }
          moves.push([pfn, s, e]);
          pa.memMap.mapping[pfn] = 0;
          pa.freePages(pfn, 0, cpu);
          pa.memMap.mapping[np] = mappingOfAnonVma(1);
          return true;
        },
      },
    );
    const anon: number[] = [];
    for (;;) {
      const p = pa.allocPages(__GFP_MOVABLE | __GFP_NOWARN, 0, 0);
      if (p < 0) break;
      if (p % 8 === 5) {
        pa.memMap.mapping[p] = mappingOfAnonVma(1);
        anon.push(p);
      } else {
        pa.memMap.mapping[p] = mappingOfAddressSpace(3);
        pa.lruCacheAdd(p, 0);
      }
    }
    const got = pa.allocPages(GFP_KERNEL | __GFP_NOWARN, 3, 0);
    expect(got).toBeGreaterThanOrEqual(0);
    expect(pa.mobilityStats().migrated).toBe(moves.length);
    expect(moves.length).toBeGreaterThan(0);
    for (const [pfn, s, e] of moves) {
      expect(pfn).toBeGreaterThanOrEqual(s);
      expect(pfn).toBeLessThan(e);
      expect(e - s).toBe(8);
    }
    expect(pa.checkFreeLists()).toEqual([]);
  });

  it('order 0 reclaims only from the LRU tail (no block-mates)', () => {
    const { pa } = full(() => false);
    expect(pa.allocPages(GFP_KERNEL, 0, 0)).toBeGreaterThanOrEqual(0);
    expect(pa.mobilityStats().lumpy).toBe(0);
    expect(pa.mobilityStats().reclaimed).toBeGreaterThan(0);
  });
});

describe('the unmovable-in-movable debug check', () => {
  it('reports a page allocated MOVABLE in a MOVABLE block that is pinned or vmapped, and nothing else', () => {
    const pa = make();
    const bad = pa.allocPages(MOVABLE_LOW, 0, 0);
    const good = pa.allocPages(GFP_KERNEL, 0, 0);
    expect(pa.checkUnmovable(good, 'is pinned as a page table', 0)).toBe(true);
    expect(pa.checkUnmovable(bad, 'is pinned as a page table', 0)).toBe(false);
    expect(pa.nrMobilityViolations()).toBe(1);
    expect(pa.reports.at(-1)!.lines[0]).toBe(
      `WARNING: at mm/page_alloc.c: pfn ${bad} is pinned as a page table, but it was allocated __GFP_MOVABLE in a Movable pageblock`,
    );
    // With grouping off there are no MOVABLE pageblocks: nothing to report.
    const off = make({ mobility: false });
    expect(off.checkUnmovable(off.allocPages(MOVABLE_LOW, 0, 0), 'is held by a vmap', 0)).toBe(true);
  });
});

/* ------------------------------------------------------------- the guest */

function opts(o: Partial<RunOptions>): RunOptions {
  return { ...DEFAULT_RUN, memoryBytes: 64 * MiB, ops: 600, files: 3000, seed: 5, mobility: true, ...o };
}

/** Small runs of every workload, with what each needs. */
const WORKLOAD_RUNS: Record<WorkloadName, Partial<RunOptions>> = {
  'fork-storm': {},
  'xfs-dirscan': { strategy: 'unmap-aliases' },
  'log-recovery': { strategy: 'unmap-aliases' },
  mixed: { strategy: 'unmap-aliases' },
  'stray-write': { vcpus: 1 },
  'vmap-cycle': {},
  'truncate-race': {},
  'kmap-churn': { highmemBytes: 16 * MiB, highpte: true, vcpus: 1 },
  fragmentation: { vcpus: 1, ops: 1500 },
  'alsa-mmap': { vcpus: 1, ops: 1, workloadOptions: { gfpComp: true } },
  'slub-dma': { vcpus: 1, ops: 1, dcache: 'aliasing' },
  'pat-alias': { strategy: 'unmap-aliases' },
  'oom-hog': { vcpus: 1, ops: 100 },
};

describe('the check in every workload, grouping on, both paging modes', () => {
  for (const paging of ['pae', 'x86_64'] as const) {
    for (const workload of WORKLOAD_NAMES) {
      const extra = WORKLOAD_RUNS[workload];
      if (paging === 'x86_64' && extra.highmemBytes) continue; // highmem is pae's
      it(`${workload} (${paging}): no page table or vmapped page in a MOVABLE block allocated MOVABLE`, async () => {
        const { summary: s } = await runOnce(opts({ workload, paging, ...extra }));
        expect(s.mobility).toBe(true);
        expect(s.workloadStats!.movablePinned).toBe(0);
        expect((s.reports ?? []).filter((r) => r.lines.some((l) => /allocated __GFP_MOVABLE/.test(l)))).toEqual([]);
        expect(s.reportCounts?.warning ?? 0).toBe(0);
        expect(s.auditOk || workload === 'stray-write').toBe(true);
        expect(s.leakedFrames).toBe(0);
      }, 60_000);
    }
  }
});

describe('the XFS bug and its fixes, with grouping on', () => {
  const xfs = (strategy: (typeof STRATEGIES)[number]) =>
    runOnce(opts({ workload: 'xfs-dirscan', strategy, ops: 1500, files: 5000, seed: 3 }));

  it('lazy: Xen refuses pins, each traced to a page an XFS lazy vmap still maps writable', async () => {
    const { summary: s, xenLog } = await xfs('lazy');
    expect(s.rejected.total).toBeGreaterThan(0);
    expect(s.rejected.byReason.bad_type).toBe(s.rejected.total);
    expect(s.workloadStats!.pinsTraced).toBe(s.workloadStats!.pinFailures);
    expect(xenLog.some((l) => /Bad type \(saw e4000000000000\d\d != exp [246]000000000000000\)/.test(l.line))).toBe(
      true,
    );
    expect(s.auditOk).toBe(true);
    expect(s.leakedFrames).toBe(0);
    expect(s.workloadStats!.movablePinned).toBe(0);
  }, 60_000);

  for (const strategy of ['eager', 'vmap-pages', 'unmap-aliases'] as const) {
    it(`${strategy}: no refused pin`, async () => {
      const { summary: s } = await xfs(strategy);
      expect(s.pinsAttempted).toBeGreaterThan(50);
      expect(s.rejected.total).toBe(0);
      expect(s.auditOk).toBe(true);
      expect(s.dataErrors).toBe(0);
      expect(s.leakedFrames).toBe(0);
    }, 60_000);
  }
});

describe('pvmmu run fragmentation', () => {
  const frag = (mobility: boolean, seed = 1) =>
    runOnce({ ...opts({ workload: 'fragmentation', vcpus: 1, ops: 6000, seed, mobility }) });

  it('reports highOrder, pageblocks, pinned page tables by block type and pagetypeinfo in --json', async () => {
    const { summary: s } = await frag(true);
    const j = summaryJson(s);
    expect(j.mobility).toBe('on');
    expect(j.highOrder!.map((h) => `${h.order}/${h.kind}`)).toEqual(['3/atomic', '3/normal', '9/atomic', '9/normal']);
    for (const h of j.highOrder!) expect(h.successes).toBeLessThanOrEqual(h.attempts);
    const blocks = j.pageblocks!.byType;
    expect(blocks.unmovable + blocks.reclaimable + blocks.movable + blocks.reserve).toBe(
      Math.ceil((64 * MiB * 0.9) / 4096 / 512),
    );
    const pinned = j.pinnedPtPagesByBlockType!;
    expect(pinned.unmovable + pinned.movable + pinned.reclaimable + pinned.reserve).toBeGreaterThan(
      (0.2 * (64 * MiB * 0.9)) / 4096,
    );
    expect(j.pagetypeinfo!.map((r) => `${r.zone}/${r.type}`)).toContain('Normal/movable');
    expect(j.workloadStats).not.toHaveProperty('pb.mixed');
  }, 60_000);

  it('grouping keeps the pinned page tables together and order-3 reclaim succeeds at least 90% of the time', async () => {
    const on = summaryJson((await frag(true)).summary);
    const off = summaryJson((await frag(false)).summary);
    const rate = (j: typeof on, order: number, kind: string) => {
      const h = j.highOrder!.find((x) => x.order === order && x.kind === kind)!;
      return h.successes / h.attempts;
    };
    expect(rate(on, 3, 'normal')).toBeGreaterThanOrEqual(0.9);
    // Most pinned page tables sit in UNMOVABLE blocks, and fewer blocks are mixed than without grouping.
    expect(on.pinnedPtPagesByBlockType!.unmovable).toBeGreaterThan(0.75 * off.pinnedPtPagesByBlockType!.unmovable);
    expect(on.pageblocks!.mixed).toBeLessThan(off.pageblocks!.mixed);
    // Without grouping there is no MOVABLE or RESERVE block at all.
    expect(off.pageblocks!.byType.movable + off.pageblocks!.byType.reserve).toBe(0);
    // The atomic passes get the reserve only with grouping.
    expect(rate(on, 3, 'atomic')).toBeGreaterThan(rate(off, 3, 'atomic'));
    // Order 9: with grouping, lumpy reclaim empties MOVABLE blocks (page cache dropped,
    // anonymous pages migrated, their data intact); without it, pinned page tables are everywhere.
    expect(rate(on, 9, 'normal')).toBeGreaterThanOrEqual(0.3);
    expect(rate(on, 9, 'normal')).toBeGreaterThanOrEqual(3 * rate(off, 9, 'normal'));
    expect(on.workloadStats.migrated).toBeGreaterThan(0);
    expect(off.workloadStats.migrated ?? 0).toBe(0);
    expect(on.dataErrors).toBe(0);
  }, 120_000);
});

describe('bad values of the new options', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, 'run', ...args], { encoding: 'utf8' });

  it('--mobility takes on or off', () => {
    const r = run('fork-storm', '--mobility', 'maybe');
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--mobility must be on or off, got "maybe"/);
  });

  it('--pin-fraction takes a number from 0 to 0.5, for fragmentation only, within the task table', () => {
    for (const v of ['0.7', 'abc', '-0.1', '']) {
      const r = run('fragmentation', `--pin-fraction=${v}`);
      expect(r.status, v).toBe(2);
      expect(r.stderr).toMatch(/--pin-fraction must be a number from 0 to 0\.5/);
    }
    const other = run('fork-storm', '--pin-fraction', '0.2');
    expect(other.status).toBe(2);
    expect(other.stderr).toMatch(/--pin-fraction is an option of the fragmentation workload/);
    const big = run('fragmentation', '--memory', '512M');
    expect(big.status).toBe(2);
    expect(big.stderr).toMatch(/needs \d+ long-lived tasks; the guest's task table holds 960/);
  });

  it('--help describes both', () => {
    const r = spawnSync(process.execPath, [cli, 'help', 'run'], { encoding: 'utf8' });
    expect(r.stdout).toMatch(/--mobility on\|off/);
    expect(r.stdout).toMatch(/--pin-fraction F/);
  });
});
