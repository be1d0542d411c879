/*
 * The XFS thread's remaining paths (issue 11, part 4), each failing one way and fixed the
 * other, on real vCPU workers under the enforcing hypervisor (det scheduler):
 *  - log-recovery: Jeremy's case, the mount after an unclean shutdown;
 *  - the shrinker purge under memory pressure, from the CLI;
 *  - --aliases-before-pin: Nick's 2.6.28 lazy layer without Jeremy's 2008 call;
 *  - pat-alias: Andi Kleen's attribute alias, through a PAT-like memtype tracker;
 *  - Dave Chinner's geometry and the purge-path options.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_RUN, type RunOptions, type RunResult, runOnce } from '../src/run.js';
import { verdict } from '../src/summary.js';
import type { Strategy } from '../src/abi/kernel.js';
import {
  _PAGE_CACHE_UC_MINUS,
  _PAGE_CACHE_WB,
  _PAGE_CACHE_WC,
  type MemtypeDeps,
  MemtypeTracker,
} from '../guest/arch/x86/pat.js';
import { DirectoryImage, entriesPerBlock, maxNameLen, minNameLen, verifyBlock } from '../guest/fs/xfs/backing.js';

const MiB = 2 ** 20;
const cli = join(import.meta.dirname, '..', 'dist', 'src', 'cli.js');

function opts(o: Partial<RunOptions>): RunOptions {
  return { ...DEFAULT_RUN, memoryBytes: 64 * MiB, ops: 1500, files: 5000, ...o };
}

const results = new Map<string, Promise<RunResult>>();
function run(o: Partial<RunOptions>): Promise<RunResult> {
  const key = JSON.stringify(o);
  if (!results.has(key)) results.set(key, runOnce(opts(o)));
  return results.get(key)!;
}

function clean(s: RunResult['summary']): void {
  expect(s.auditOk).toBe(true);
  expect(s.dataErrors).toBe(0);
  expect(s.leakedFrames).toBe(0);
}

const FIXES: Strategy[] = ['eager', 'vmap-pages', 'unmap-aliases'];

/* ====================================================================== log-recovery */

describe('log-recovery: the mount after an unclean shutdown (Jeremy Fitzhardinge, 2007-10-15 04:18)', () => {
  const lr = { workload: 'log-recovery' } as const;

  it('lazy, default seed: Xen refuses pins of page tables made from freed recovery buffers', async () => {
    const { summary: s, xenLog } = await run({ ...lr, strategy: 'lazy' });
    const w = s.workloadStats!;
    expect(s.seed).toBe(DEFAULT_RUN.seed);
    expect(s.rejected.total).toBeGreaterThan(0);
    expect(s.rejected.byReason.bad_type).toBe(s.rejected.total);
    expect(w.pinFailures).toBeGreaterThan(0);
    // Each refused pin is traced to a log buffer's a_list entry (block -1: uncached).
    expect(w.pinsTraced).toBe(w.pinFailures);
    expect(s.guestReports.join('\n')).toMatch(/XFS a_list entry [0-9a-f]+ \(block -1\) still maps it writable/);
    expect(xenLog.some((l) => /Error -22 while pinning mfn/.test(l.line))).toBe(true);
    clean(s);
  });

  it('every mount after a godown replays the log; a clean unmount leaves nothing to replay', async () => {
    const w = (await run({ ...lr, strategy: 'lazy' })).summary.workloadStats!;
    expect(w.mounts).toBeGreaterThan(2);
    expect(w.logDirtyMounts! + w.logCleanMounts!).toBe(w.mounts);
    expect(w.logShutdowns).toBeGreaterThan(0);
    expect(w.logCleanMounts).toBeGreaterThan(0);
    // The first mount follows the unclean shutdown the run starts from.
    expect(w.logDirtyMounts).toBe(w.logShutdowns! + 1);
    expect(w.logRecordsReplayed).toBe(4 * w.logDirtyMounts!);
    // find_head's buffer at every mount, two data buffers at every replay.
    expect(w.logRecoveryVmaps).toBe(w.mounts! + 2 * w.logDirtyMounts!);
  });

  for (const strategy of FIXES) {
    it(`${strategy}: the same seed and workload, no refused pin`, async () => {
      const { summary: s } = await run({ ...lr, strategy });
      expect(s.pinsAttempted).toBeGreaterThan(50);
      expect(s.rejected.total).toBe(0);
      expect(s.workloadStats!.pinFailures).toBe(0);
      expect(s.workloadStats!.logDirtyMounts).toBeGreaterThan(1);
      clean(s);
    });
  }
});

/* ============================================================ --aliases-before-pin */

describe("--aliases-before-pin: Nick Piggin's 2.6.28 lazy layer before Jeremy's vm_unmap_aliases() call", () => {
  const base = { workload: 'xfs-dirscan', strategy: 'unmap-aliases', seed: 3 } as const;

  it('off: the generic lazy layer leaves stray aliases and Xen refuses pins, as with XFS in 2007', async () => {
    const { summary: s } = await run({ ...base, aliasesBeforePin: false });
    const w = s.workloadStats!;
    expect(s.rejected.total).toBeGreaterThan(0);
    expect(w.pinsTraced).toBe(w.pinFailures);
    // The aliases are the vmalloc layer's lazily freed areas now, not an XFS list.
    expect(w.aListPeak).toBe(0);
    expect(s.guestReports.join('\n')).toMatch(/lazy vmap area [0-9a-f]+-[0-9a-f]+ maps it writable/);
    clean(s);
  });

  it('on (the default): no refused pin on the same seed', async () => {
    const { summary: s } = await run({ ...base });
    expect(s.pinsAttempted).toBeGreaterThan(50);
    expect(s.rejected.total).toBe(0);
    clean(s);
  });

  it('log-recovery too: off refuses, on does not', async () => {
    const off = (await run({ workload: 'log-recovery', strategy: 'unmap-aliases', aliasesBeforePin: false })).summary;
    const on = (await run({ workload: 'log-recovery', strategy: 'unmap-aliases' })).summary;
    expect(off.rejected.total).toBeGreaterThan(0);
    expect(on.rejected.total).toBe(0);
  });
});

/* ====================================================================== pat-alias */

describe("pat-alias: Andi Kleen's attribute alias (2007-10-15 09:36)", () => {
  const pa = { workload: 'pat-alias' } as const;

  it('lazy: set_memory_uc meets a write-back XFS alias; PAT reports the conflict in its words', async () => {
    const { summary: s } = await run({ ...pa, strategy: 'lazy' });
    const w = s.workloadStats!;
    expect(w.agpPages).toBeGreaterThan(0);
    expect(w.memtypeConflicts).toBeGreaterThan(0);
    expect(w.setMemoryUcRefused).toBe(w.memtypeConflicts);
    expect(s.reportCounts?.memtype).toBe(w.memtypeConflicts); // on the guest reports channel
    expect(w.cpaAliasFlushes).toBe(0);
    const reports = s.guestReports.join('\n');
    expect(reports).toMatch(/^Xorg:\d+ conflicting memory types [0-9a-f]+-[0-9a-f]+ uncached-minus<->write-back$/m);
    expect(reports).toMatch(
      /^reserve_memtype failed 0x[0-9a-f]+-0x[0-9a-f]+, track uncached-minus, req uncached-minus$/m,
    );
    expect(reports).toMatch(/XFS a_list entry [0-9a-f]+ \(block \d+\) still maps it writable/);
    expect(verdict(s)).toMatch(
      /attribute alias SHOWED UP: [\d,]+ set_memory_uc calls met a page still mapped write-back/,
    );
    clean(s);
  });

  for (const strategy of FIXES) {
    it(`${strategy}: every page the driver asks for turns uncached, no conflict`, async () => {
      const { summary: s } = await run({ ...pa, strategy });
      const w = s.workloadStats!;
      expect(w.agpPages).toBeGreaterThan(50);
      expect(w.memtypeConflicts).toBe(0);
      expect(s.reportCounts?.memtype ?? 0).toBe(0);
      expect(w.memtypeReserved).toBe(w.agpPages);
      // unmap-aliases owes it to change_page_attr's vm_unmap_aliases(), once per set_memory_uc.
      expect(w.cpaAliasFlushes).toBe(strategy === 'unmap-aliases' ? w.agpPages : 0);
      expect(verdict(s)).toMatch(/attribute alias did not show up/);
      clean(s);
    });
  }
});

describe('the memtype tracker (reserve_memtype, free_memtype)', () => {
  function tracker(aliased: Set<number>, flush: boolean) {
    const lines: string[] = [];
    const deps: MemtypeDeps = {
      aliasesOf: (pfn) => (aliased.has(pfn) ? [`stale alias of ${pfn}`] : []),
      vmUnmapAliases: flush ? () => aliased.clear() : null,
      pageAddress: (pfn) => 0xc0000000 + pfn * 4096,
      pfnOf: (va) => (va - 0xc0000000) / 4096,
      report: (_kind, ls) => lines.push(...ls),
    };
    return { t: new MemtypeTracker(deps, 8), lines };
  }

  it('refuses a reservation over another type, and frees only what was reserved', () => {
    const { t, lines } = tracker(new Set(), false);
    expect(t.reserveMemtype(10, 12, _PAGE_CACHE_WC, 'X', 1)).toBe(0);
    expect(t.reserveMemtype(11, 13, _PAGE_CACHE_UC_MINUS, 'X', 1)).toBe(-16);
    expect(lines[0]).toBe('X:1 conflicting memory types b000-d000 uncached-minus<->write-combining');
    expect(t.reserveMemtype(12, 13, _PAGE_CACHE_UC_MINUS, 'X', 1)).toBe(0); // adjacent, no overlap
    expect(t.lookupMemtype(10)).toBe(_PAGE_CACHE_WC);
    expect(t.lookupMemtype(20)).toBe(_PAGE_CACHE_WB);
    expect(t.freeMemtype(10, 11, 'X', 1)).toBe(-22);
    expect(lines.at(-1)).toBe('X:1 freeing invalid memtype a000-b000');
    expect(t.freeMemtype(10, 12, 'X', 1)).toBe(0);
    expect(t.stats()).toMatchObject({ reserved: 2, freed: 1, conflicts: 1 });
  });

  it('without the alias shootdown a stale alias is a conflict; with it, none', () => {
    const bad = tracker(new Set([5]), false);
    expect(bad.t.setMemoryUc(0xc0000000 + 5 * 4096, 1, 'Xorg', 7)).toBe(-22);
    expect(bad.t.reports[0]).toMatchObject({
      kind: 'memtype',
      reqType: 'uncached-minus',
      conflictType: 'write-back',
      holder: 'stale alias of 5',
    });
    const good = tracker(new Set([5]), true);
    expect(good.t.setMemoryUc(0xc0000000 + 5 * 4096, 1, 'Xorg', 7)).toBe(0);
    expect(good.t.stats()).toMatchObject({ conflicts: 0, ucPages: 1, cpaAliasFlushes: 1 });
    expect(good.t.setMemoryWb(0xc0000000 + 5 * 4096, 1, 'Xorg', 7)).toBe(0);
    expect(good.t.stats().ucPages).toBe(0);
  });
});

/* ===================================================== the shrinker and purge paths */

describe('the purge paths from the CLI', () => {
  function cliRun(args: string[]): { code: number | null; out: string; err: string } {
    const r = spawnSync(process.execPath, [cli, 'run', ...args], { encoding: 'utf8' });
    return { code: r.status, out: r.stdout, err: r.stderr };
  }

  it("pvmmu run xfs-dirscan --memory 48M --strategy lazy on Dave Chinner's directory: pressure wakes xfsbufd through the shrinker", () => {
    const dave = ['--files', '100000', '--dir-entry-bytes', '1104'];
    const json = cliRun(['xfs-dirscan', ...dave, '--memory', '48M', '--strategy', 'lazy', '--ops', '1500', '--json']);
    const j = JSON.parse(json.out) as { workloadStats: Record<string, number> };
    expect(j.workloadStats.dirBlocks).toBeGreaterThan(1600); // 106 MiB: more than the guest's memory
    expect(j.workloadStats.purgesShrinker).toBeGreaterThan(0);
    expect(j.workloadStats.shrinkSlabs).toBe(0); // pressure alone, no --shrink-every
    const text = cliRun(['xfs-dirscan', ...dave, '--memory', '48M', '--strategy', 'lazy', '--ops', '1500']);
    const m = /^\s+purgesShrinker\s+([\d,]+)$/m.exec(text.out);
    expect(m).not.toBeNull();
    expect(Number(m![1]!.replace(/,/g, ''))).toBe(j.workloadStats.purgesShrinker);
    // The default directory (20,000 entries of 32 bytes: 10 blocks, 640 KiB) never makes 48M short.
    const small = cliRun(['xfs-dirscan', '--memory', '48M', '--strategy', 'lazy', '--ops', '1500', '--json']);
    const k = JSON.parse(small.out) as { workloadStats: Record<string, number> };
    expect(k.workloadStats.dirBlocks).toBe(10);
    expect(k.workloadStats.purgesShrinker).toBe(0);
  }, 120_000);

  /**
   * Linux 2.6.2x's sum of pages_low over the lowmem zones of a PAE guest of `memoryBytes`
   * (the domain gets 90% of it): min_free_kbytes = sqrt(16 x lowmem KiB), clamped to
   * 128..65536; pages_min split over ZONE_DMA (the first 16 MiB) and ZONE_NORMAL by size;
   * pages_low = min + min/4 (setup_per_zone_pages_min), derived here without the allocator.
   */
  function linuxPagesLow(memoryBytes: number): number {
    const nrPages = Math.floor((memoryBytes / 4096) * 0.9);
    const minFreeKbytes = Math.min(65536, Math.max(128, Math.floor(Math.sqrt(nrPages * 4 * 16))));
    const pagesMin = minFreeKbytes >> 2;
    const dma = Math.min(nrPages, (16 * MiB) / 4096);
    let low = 0;
    for (const present of [dma, nrPages - dma]) {
      const min = Math.floor((pagesMin * present) / nrPages);
      low += min + (min >> 2);
    }
    return low;
  }

  // The issue asks `pvmmu run xfs-dirscan --memory 48M --strategy lazy` to show
  // purgesShrinker > 0. It cannot, honestly: the default directory is 10 blocks (640 KiB,
  // dropped every pass) and the guest never comes within 40 MiB of pages_low, so neither
  // kswapd nor direct reclaim -- the only callers of shrink_slab under pressure -- would run
  // in Linux either. These pin down that reason, at 48M and at the default 256M.
  for (const [memory, bytes] of [
    ['48M', 48 * MiB],
    ['256M (the default)', 256 * MiB],
  ] as const) {
    it(`pvmmu run xfs-dirscan ${memory === '48M' ? '--memory 48M ' : ''}--strategy lazy (${memory}): the default directory never brings free pages down to pages_low, so the shrinker is never called`, () => {
      const args = ['xfs-dirscan', ...(memory === '48M' ? ['--memory', '48M'] : []), '--strategy', 'lazy', '--json'];
      const r = cliRun(args);
      expect(r.code).toBe(1); // the bug shows
      const j = JSON.parse(r.out) as {
        pinsRefused: number;
        memoryBytes?: number;
        workloadStats: Record<string, number>;
      };
      const w = j.workloadStats;
      expect(j.pinsRefused).toBeGreaterThan(0);
      expect(w.dirBlocks).toBe(Math.ceil((20_000 * 32) / 65536)); // 20,000 entries of 32 bytes
      expect(w.pagesLow).toBe(linuxPagesLow(bytes));
      // The reason: free pages stay far above the watermark, so no allocation takes the slow path.
      expect(w.freePagesMin).toBeGreaterThan(w.pagesLow!);
      expect(w.shrinkerCalls).toBe(0);
      expect(w.purgesShrinker).toBe(0);
    }, 120_000);
  }

  it("at 48M Dave Chinner's directory does bring free pages to pages_low, and only then is the shrinker called", async () => {
    const { summary: s } = await run({
      workload: 'xfs-dirscan',
      memoryBytes: 48 * MiB,
      files: 100_000,
      dirEntryBytes: 1104,
      strategy: 'lazy',
    });
    const w = s.workloadStats!;
    expect(w.pagesLow).toBe(linuxPagesLow(48 * MiB));
    expect(w.freePagesMin).toBeLessThanOrEqual(w.pagesLow!);
    expect(w.shrinkSlabs).toBe(0); // no --shrink-every: reclaim alone called it
    expect(w.shrinkerCalls).toBeGreaterThan(0);
    expect(w.purgesShrinker).toBeGreaterThan(0);
  });

  it('with memory to spare the same directory never calls the shrinker', async () => {
    const { summary: s } = await run({
      workload: 'xfs-dirscan',
      memoryBytes: 256 * MiB,
      files: 100_000,
      dirEntryBytes: 1104,
      strategy: 'lazy',
    });
    expect(s.workloadStats!.purgesShrinker).toBe(0);
    expect(s.workloadStats!.shrinkerCalls).toBe(0);
  });

  it('--shrink-every, --purge-threshold and --xfsbufd-period drive their purges', async () => {
    const base = { workload: 'xfs-dirscan', strategy: 'lazy' } as const;
    const plain = (await run({ ...base })).summary.workloadStats!;
    const driven = (await run({ ...base, shrinkEvery: 20, purgeThreshold: 8, xfsbufdPeriod: 50 })).summary
      .workloadStats!;
    expect(plain.purgesShrinker).toBe(0);
    expect(driven.shrinkSlabs).toBeGreaterThan(0);
    expect(driven.purgesShrinker).toBeGreaterThan(0);
    expect(driven.purgesThreshold).toBeGreaterThan(plain.purgesThreshold!);
    expect(driven.aListPeak).toBeLessThan(plain.aListPeak!);
    expect(driven.xfsbufdWakeups).toBeGreaterThan(plain.xfsbufdWakeups!);
  });

  it('bad values exit 2 naming the option and what it accepts; each option has --help text', () => {
    const cases: Array<[string[], RegExp]> = [
      [['--dir-entry-bytes', '1100'], /--dir-entry-bytes must be a multiple of 8 in 32\.\.65512/],
      [['--dir-entry-bytes', '16'], /--dir-entry-bytes must be an integer in 32\.\.65512/],
      [['--name-len', '300', '--dir-entry-bytes', '1104'], /--name-len must be an integer in 17\.\.255/],
      [['--name-len', '5'], /--name-len must be an integer in 17\.\.21/],
      [['--xfsbufd-period', '10'], /--xfsbufd-period must be an integer in 50\.\.3000 centisecs/],
      [['--purge-threshold', 'x'], /--purge-threshold must be a non-negative integer/],
      [['--shrink-every', '2000000'], /--shrink-every must be an integer in 0\.\.1000000/],
      [['--aliases-before-pin', 'maybe'], /--aliases-before-pin must be on or off/],
      [['--aliases-before-pin', 'off'], /--aliases-before-pin off is for --strategy unmap-aliases/],
    ];
    for (const [args, msg] of cases) {
      const r = cliRun(['xfs-dirscan', ...args]);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err).toMatch(msg);
    }
    const notXfs = cliRun(['fork-storm', '--purge-threshold', '8']);
    expect(notXfs.code).toBe(2);
    expect(notXfs.err).toMatch(/--purge-threshold is an option of the XFS workloads/);
    const help = spawnSync(process.execPath, [cli, 'run', '--help'], { encoding: 'utf8' }).stdout;
    for (const o of [
      '--aliases-before-pin',
      '--dir-entry-bytes',
      '--name-len',
      '--xfsbufd-period',
      '--purge-threshold',
      '--shrink-every',
    ])
      expect(help).toContain(o);
    expect(help).toMatch(/pat-alias\s+a driver makes freed XFS buffer pages uncached/);
  }, 60_000);
});

/* ====================================================================== geometry */

describe("Dave Chinner's geometry: ~100,000 files in ~1,700 64 KiB blocks", () => {
  it('--files 100000 --dir-entry-bytes 1104 gives his directory, and 100,000 x 1,104 / 64 KiB agrees', () => {
    const img = new DirectoryImage({ seed: 1, files: 100_000, dirBlockSize: 65536, entryBytes: 1104 });
    expect(img.nblocks).toBe(Math.ceil(100_000 / entriesPerBlock(65536, 1104)));
    expect(Math.abs(img.nblocks - 1700) / 1700).toBeLessThan(0.01);
    expect(Math.abs((100_000 * 1104) / 65536 - 1700) / 1700).toBeLessThan(0.01);
  });

  it('names of --name-len bytes, written and verified in every entry; a bad name length is caught', () => {
    const len = 64;
    const img = new DirectoryImage({ seed: 9, files: 3000, dirBlockSize: 16384, entryBytes: 128, nameLen: len });
    const buf = new Uint8Array(16384);
    for (let b = 0; b < img.nblocks; b++) {
      img.readBlock(b, buf, 0);
      expect(img.verifyBlock(buf, 0, b)).toBe(true);
    }
    img.readBlock(0, buf, 0);
    const first = 16; // header
    expect(buf[first + 8]).toBe(len);
    const name = new TextDecoder().decode(buf.subarray(first + 9, first + 9 + len));
    expect(name).toBe(img.entryName(0));
    expect(name).toHaveLength(len);
    buf[first + 8] = maxNameLen(128) + 1;
    expect(verifyBlock(buf, 0, 16384, 0, 128)).toMatch(/checksum|name length/);
    expect(() => new DirectoryImage({ seed: 1, files: 10, dirBlockSize: 4096, entryBytes: 36 })).toThrow(
      /multiple of 8/,
    );
    expect(() => new DirectoryImage({ seed: 1, files: 10, dirBlockSize: 4096, nameLen: 22 })).toThrow(
      new RegExp(`from ${minNameLen(10)} .* to 21`),
    );
  });
});
