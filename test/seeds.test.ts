/*
 * The seed bugs end to end (issue 11, parts 1-3): each through `pvmmu run`'s real path
 * (runOnce, and the CLI for the exit codes), in the kernel's own words, the failure and
 * the fix; and the structured report channel the verdict and the exit code derive from.
 *
 *  - alsa-mmap: bad-page-state-free-hot-cold-page.txt (2.6.15-rc1-mm2, November 2005)
 *  - slub-dma: slub-kmap-atomic-oops.txt (2.6.22-rc5, June 2007)
 *  - truncate-race: fault-vs-truncate-race.txt (Nick Piggin, February 2007)
 */
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DEFAULT_RUN, type RunOptions, runOnce } from '../src/run.js';
import { bugsShown, exitLine, formatSummary, type RunSummary, summaryJson, verdict } from '../src/summary.js';
import { demoAsExpected } from '../src/commands.js';
import { GUEST_REPORT_KINDS } from '../src/abi/kernel.js';
import { kernelName } from '../guest/kernel/dump_stack.js';
import { ADDRESS_SPACE_I_MMAP } from '../guest/mm/cacheflush.js';
import { kmallocCacheId, kmallocIndex } from '../guest/mm/slab.js';
import { FILEMAP_BUG_LINE } from '../guest/mm/truncate.js';
import { ALSA_BUFFER_PAGES } from '../guest/workloads/alsa_mmap.js';
import { SLUB_DMA_BYTES } from '../guest/workloads/slub_dma.js';
import { MEM_MAP_BASE_PAE, STRUCT_PAGE_SIZE_PAE } from '../guest/mm/page.js';

const MiB = 2 ** 20;
const cli = fileURLToPath(new URL('../dist/src/cli.js', import.meta.url));

function opts(o: Partial<RunOptions>): RunOptions {
  return { ...DEFAULT_RUN, memoryBytes: 64 * MiB, vcpus: 1, ops: 1, ...o };
}

/** The function names of a report's Backtrace lines, innermost first. */
function backtrace(lines: string[]): string[] {
  const from = lines.indexOf('Backtrace:');
  expect(from).toBeGreaterThan(0);
  const out: string[] = [];
  for (const l of lines.slice(from + 1)) {
    const m = /^ \[<[\w.-]+\.[jt]s:\d+>\] (\w+)$/.exec(l);
    if (m === null) break;
    out.push(m[1]!);
  }
  return out;
}

/* ------------------------------------------------------------- alsa-mmap */

describe('alsa-mmap: Bad page state at free_hot_cold_page (ALSA, November 2005)', () => {
  const alsa = (gfpComp: boolean, ops = 1) =>
    runOnce(opts({ workload: 'alsa-mmap', ops, workloadOptions: { gfpComp } }));

  it('without __GFP_COMP, munmap frees the three tails: three reports in 2.6.15 words, with the real call chain', async () => {
    const { summary: s } = await alsa(false);
    const w = s.workloadStats!;
    expect(w.faults).toBe(ALSA_BUFFER_PAGES); // every page came through nopage
    expect(w.zapped).toBe(ALSA_BUFFER_PAGES); // and went through zap_pte_range
    expect(s.reportCounts).toEqual({ bad_page: ALSA_BUFFER_PAGES - 1 });
    const reports = s.reports!;
    expect(reports).toHaveLength(3);
    // The tails: three consecutive struct pages, the run's own.
    const pages = reports.map((r) => {
      const m = /^Bad page state at free_hot_cold_page \(in process 'aplay', page (c[0-9a-f]{7})\)$/.exec(r.lines[0]!);
      expect(m, r.lines[0]).not.toBeNull();
      return Number.parseInt(m![1]!, 16);
    });
    expect(pages[1]! - pages[0]!).toBe(STRUCT_PAGE_SIZE_PAE);
    expect(pages[2]! - pages[1]!).toBe(STRUCT_PAGE_SIZE_PAE);
    expect((pages[0]! - MEM_MAP_BASE_PAE) % STRUCT_PAGE_SIZE_PAE).toBe(0);
    for (const r of reports) {
      expect(r.kind).toBe('bad_page');
      // reserved | dirty (the pte was dirty) | referenced (it was young), zone Normal.
      expect(r.lines[1]).toBe('flags:0x80000414 mapping:00000000 mapcount:0 count:0');
      expect(r.lines[2]).toBe('Backtrace:');
      expect(r.lines.at(-1)).toBe('Trying to fix it up, but a reboot is needed');
      expect(backtrace(r.lines)).toEqual([
        'dump_stack',
        'bad_page',
        'free_pages_check',
        '__free_hot_cold_page',
        '__put_single_page',
        'put_page',
        'free_page_and_swap_cache',
        'zap_pte_range',
        'unmap_page_range',
        'unmap_vmas',
        'unmap_region',
        'do_munmap',
        'sys_munmap',
      ]);
    }
    expect(verdict(s)).toBe("The bug SHOWED UP: 3 bad page state reports (the guest kernel's reports are below).");
    expect(bugsShown(s)).toEqual(['bad page state (3)']);
    // The tails were kept (PG_reserved) and freed with the block: nothing leaks.
    expect(s.leakedFrames).toBe(0);
    expect(s.auditOk).toBe(true);
    expect(s.dataErrors).toBe(0);
  });

  it('three reports per playback: every munmap frees the tails again', async () => {
    const { summary: s } = await alsa(false, 3);
    expect(s.workloadStats!.playbacks).toBe(3);
    expect(s.reportCounts!.bad_page).toBe(9);
    expect(s.leakedFrames).toBe(0);
  });

  it('with HIGHPTE the zap reads the pte page through a read-only kmap_atomic: the same reports', async () => {
    const hp = { highmemBytes: 16 * MiB, highpte: true };
    const bad = (await runOnce(opts({ workload: 'alsa-mmap', ...hp, workloadOptions: { gfpComp: false } }))).summary;
    expect(bad.reportCounts).toEqual({ bad_page: 3 });
    expect(bad.leakedFrames).toBe(0);
    const ok = (await runOnce(opts({ workload: 'alsa-mmap', ...hp, workloadOptions: { gfpComp: true } }))).summary;
    expect(ok.reportCounts).toEqual({});
    expect(ok.leakedFrames).toBe(0);
  });

  it('with __GFP_COMP (the fix), the tails hand their references to the head: no report', async () => {
    const { summary: s } = await alsa(true, 3);
    expect(s.workloadStats!.faults).toBe(3 * ALSA_BUFFER_PAGES);
    expect(s.workloadStats!.zapped).toBe(3 * ALSA_BUFFER_PAGES);
    expect(s.reports).toEqual([]);
    expect(s.reportCounts).toEqual({});
    expect(bugsShown(s)).toEqual([]);
    expect(s.leakedFrames).toBe(0);
    expect(s.auditOk).toBe(true);
  });
});

/* -------------------------------------------------------------- slub-dma */

describe('slub-dma: the SLUB page_mapping oops in flush_dcache_page (June 2007)', () => {
  const dma = (o: Partial<RunOptions>, kunmapBase = false) =>
    runOnce(opts({ workload: 'slub-dma', dcache: 'aliasing', workloadOptions: { kunmapBase }, ...o }));
  /** page->mapping of a kmalloc-64 slab page, read as a struct address_space *, plus i_mmap. */
  const faultAddress = (kmallocCacheId(kmallocIndex(SLUB_DMA_BYTES)) + ADDRESS_SPACE_I_MMAP)
    .toString(16)
    .padStart(8, '0');

  it('without the fix, the i_mmap load through the MMU faults: an oops in the seed shape, at the address the run faulted at', async () => {
    const { summary: s } = await dma({ slubFix: false, ops: 2 });
    expect(s.reportCounts).toEqual({ oops: 2 });
    const [first, second] = s.reports!;
    expect(first!.kind).toBe('oops');
    expect(first!.lines[0]).toBe(`Unable to handle kernel NULL pointer dereference at virtual address ${faultAddress}`);
    expect(first!.lines[1]).toMatch(/^pgd = c[0-9a-f]{7}$/);
    // show_pte from the live tables: the kernel maps nothing at the bottom of the address space.
    expect(first!.lines[2]).toMatch(new RegExp(`^\\[${faultAddress}\\] \\*pgd=[0-9a-f]{16}`));
    expect(first!.lines.slice(3, 8)).toEqual([
      'Internal error: Oops: 0 [#1]',
      'Modules linked in:',
      'CPU: 0',
      'PC is at mapping_mapped',
      'LR is at flush_dcache_page',
    ]);
    expect(backtrace(first!.lines)).toEqual(['mapping_mapped', 'flush_dcache_page', 'at91mci_post_dma_read']);
    expect(second!.lines[3]).toBe('Internal error: Oops: 0 [#2]');
    expect(s.workloadStats!.oopses).toBe(2);
    expect(bugsShown(s)).toEqual(['kernel oops (2)']);
    expect(s.leakedFrames).toBe(0);
    expect(s.auditOk).toBe(true);
  });

  it('with the fix, page_mapping is NULL for the slab page: only the kernel alias is flushed', async () => {
    const { summary: s } = await dma({ slubFix: true, ops: 2 });
    expect(s.reports).toEqual([]);
    expect(s.workloadStats!.flushes).toBe(2);
    expect(s.workloadStats!.oopses).toBe(0);
    expect(s.dataErrors).toBe(0); // the swab32 through kmap_atomic worked
    expect(bugsShown(s)).toEqual([]);
  });

  it('on x86 (pipt) flush_dcache_page does nothing, so even without the fix nothing happens', async () => {
    const { summary: s } = await dma({ slubFix: false, dcache: 'pipt' });
    expect(s.reports).toEqual([]);
    expect(s.workloadStats!.flushes).toBe(0);
    expect(bugsShown(s)).toEqual([]);
  });

  it("kunmap_atomic(buffer - offset), the thread's patch, changes nothing: the same oops, and no fix", async () => {
    const plain = (await dma({ slubFix: false })).summary;
    const patched = (await dma({ slubFix: false }, true)).summary;
    expect(patched.reports).toEqual(plain.reports);
    expect(patched.workloadStats!.kunmapMisuse).toBe(0);
    expect(plain.workloadStats!.kunmapMisuse).toBe(0);
    const fixed = (await dma({ slubFix: true }, true)).summary;
    expect(fixed.reports).toEqual([]);
  });
});

/* --------------------------------------------------------- truncate-race */

describe('truncate-race: the fault-vs-invalidate window (Nick Piggin, February 2007)', () => {
  const race = (o: Partial<RunOptions>, wo: Record<string, unknown>) =>
    runOnce(opts({ workload: 'truncate-race', vcpus: 2, ops: 2000, ...o, workloadOptions: wo }));

  it('truncation beyond i_size alone is safe without lock_page: i_size and truncate_count guard it', async () => {
    const { summary: s } = await race({}, { lockPage: false, invalidate: false });
    const w = s.workloadStats!;
    expect(w.truncates).toBeGreaterThan(50);
    expect(w.invalidates).toBe(0);
    expect(w.faultRetries).toBeGreaterThan(0); // faults saw truncate_count move and retried
    expect(w.mappedAtRemoval).toBe(0);
    expect(w.orphans).toBe(0);
    expect(s.dataErrors).toBe(0);
    expect(s.reports).toEqual([]);
  });

  it('without lock_page, invalidation inside i_size races the fault: the BUG line alone, and stale reads', async () => {
    const { summary: s } = await race({}, { lockPage: false });
    const w = s.workloadStats!;
    expect(w.mappedAtRemoval).toBeGreaterThan(0);
    const bugs = s.reports!.filter((r) => r.kind === 'bug');
    expect(bugs.length).toBeGreaterThan(0);
    for (const r of bugs) expect(r.lines).toEqual([`kernel BUG at mm/filemap.c:${FILEMAP_BUG_LINE}!`]);
    // Bugs come first in the summary, then what only informs (the stale reads).
    const kinds = s.reports!.map((r) => r.kind);
    expect(kinds).toEqual([...kinds.filter((k) => k === 'bug'), ...kinds.filter((k) => k !== 'bug')]);
    expect(kinds).toContain('data');
    expect(s.reportCounts!.bug).toBe(w.mappedAtRemoval);
    expect(s.dataErrors).toBeGreaterThan(0);
    expect(s.reportCounts!.data).toBe(s.dataErrors);
    expect(w.orphans).toBeGreaterThan(0);
    const text = formatSummary(s);
    const head = text.split('\n').slice(0, 4).join('\n');
    expect(head).not.toMatch(/strategy|lazy|XFS|stray/i);
    expect(head).toMatch(/The bug SHOWED UP: \d+ kernel BUG reports?, \d+ data errors?/);
    expect(s.auditOk).toBe(true);
    expect(s.leakedFrames).toBe(0);
  });

  it('with lock_page, none of it, under the det scheduler', async () => {
    const { summary: s } = await race({}, { lockPage: true });
    const w = s.workloadStats!;
    expect(w.invalidates).toBeGreaterThan(50);
    expect(w.faults).toBeGreaterThan(100);
    expect(w.mappedAtRemoval).toBe(0);
    expect(w.orphans).toBe(0);
    expect(s.dataErrors).toBe(0);
    expect(s.reports).toEqual([]);
    expect(bugsShown(s)).toEqual([]);
  });

  it('with HIGHPTE (the tasks pte pages in highmem) the unmapping finds the ptes all the same', async () => {
    const { summary: s } = await race({ highmemBytes: 16 * MiB, highpte: true }, { lockPage: true });
    expect(s.workloadStats!.invalidates).toBeGreaterThan(50);
    expect(s.reports).toEqual([]);
    expect(s.leakedFrames).toBe(0);
  });

  it('runs under --sched parallel: with lock_page clean, and the audit agrees either way', async () => {
    for (const seed of [1, 2]) {
      const { summary: s } = await race({ sched: 'parallel', seed }, { lockPage: true });
      expect(s.workloadStats!.faults).toBeGreaterThan(100);
      expect(s.workloadStats!.invalidates).toBeGreaterThan(20);
      expect(s.reports).toEqual([]);
      expect(bugsShown(s)).toEqual([]);
    }
    const { summary: s } = await race({ sched: 'parallel' }, { lockPage: false });
    expect(s.workloadStats!.faults).toBeGreaterThan(100);
    expect(s.reportCounts!.bad_page ?? 0).toBe(0);
    expect(s.auditOk).toBe(true);
    expect(s.leakedFrames).toBe(0);
  });
});

/* ------------------------------------------------ reports, verdict, exit */

function summary(over: Partial<RunSummary> = {}): RunSummary {
  return {
    workload: 'fork-storm',
    strategy: 'eager',
    kmapFlush: true,
    vcpus: 1,
    seed: 1,
    ops: 10,
    elapsedMs: 1,
    hypercalls: 1,
    rejected: { total: 0, byReason: {} },
    firstXenLines: [],
    pinsAttempted: 1,
    tlb: { shootdowns: 0, ipis: 0 },
    vmaps: 0,
    vunmaps: 0,
    lazyPeakPages: 0,
    dataErrors: 0,
    auditOk: true,
    leakedFrames: 0,
    guestReports: [],
    throughputOpsPerSec: 1,
    paging: 'pae',
    sched: 'det',
    ...over,
  };
}

describe('the verdict and the exit code come from the reports as data', () => {
  it('counts each kind that is a bug, and only those', () => {
    expect(bugsShown(summary())).toEqual([]);
    expect(exitLine(summary())).toBe('Result: clean (exit 0)');
    // hypercall failures, data-check lines and warnings say what happened; the counters judge.
    expect(bugsShown(summary({ reportCounts: { xen: 4, data: 1, warning: 2, page_allocation_failure: 1 } }))).toEqual(
      [],
    );
    for (const [kind, { bug, what }] of Object.entries(GUEST_REPORT_KINDS)) {
      const b = bugsShown(summary({ reportCounts: { [kind]: 2 } }));
      expect(b).toEqual(bug ? [`${what} (2)`] : []);
    }
    expect(bugsShown(summary({ reportCounts: { memtype: 1 } }))).toEqual(['memtype conflict (1)']);
  });

  it('names refused pins, data errors, leaks, audit failures and isolation violations', () => {
    const s = summary({
      rejected: { total: 3, byReason: { pin_error: 3 } },
      dataErrors: 2,
      leakedFrames: 1,
      auditOk: false,
      reportCounts: { bug: 1 },
    });
    expect(bugsShown(s)).toEqual([
      'refused pins (3)',
      'kernel BUG (1)',
      'data errors (2)',
      'leaked frames (1)',
      'audit failure',
    ]);
    expect(exitLine(s)).toBe(
      'Result: the run showed a bug: refused pins (3), kernel BUG (1), data errors (2), leaked frames (1), audit failure (exit 1)',
    );
    expect(bugsShown(summary({ auditOk: false, isolationViolations: 2 }))).toEqual(['isolation violations (2)']);
    expect(summaryJson(s).bugs).toEqual(bugsShown(s));
    expect(formatSummary(s).split('\n').at(-1)).toBe(exitLine(s));
  });

  it('demo: lazy refusing pins is what lazy should do; a fix refusing pins, or any other bug, is not', () => {
    const refused = { rejected: { total: 3, byReason: { pin_error: 3 } } };
    expect(demoAsExpected(summary({ strategy: 'lazy', ...refused }))).toBe(true);
    expect(demoAsExpected(summary({ strategy: 'eager', ...refused }))).toBe(false);
    expect(demoAsExpected(summary({ strategy: 'lazy', ...refused, auditOk: false }))).toBe(false);
    expect(demoAsExpected(summary({ strategy: 'unmap-aliases' }))).toBe(true);
  });

  it('dump_stack names frames as Linux does', () => {
    expect(kernelName('__freeHotColdPage')).toBe('__free_hot_cold_page');
    expect(kernelName('#at91mciPostDmaRead')).toBe('at91mci_post_dma_read');
    expect(kernelName('sysMunmap')).toBe('sys_munmap');
    expect(kernelName('badPage')).toBe('bad_page');
  });
});

describe('pvmmu run exit codes, through the CLI', () => {
  const run = (args: string[]) =>
    spawnSync(process.execPath, [cli, 'run', ...args, '--memory', '64M'], { encoding: 'utf8' });
  const last = (out: string) => out.trimEnd().split('\n').at(-1);

  it('alsa-mmap: 1 with the bad pages, 0 with __GFP_COMP; the last line says which', () => {
    const bad = run(['alsa-mmap']);
    expect(bad.status).toBe(1);
    expect(last(bad.stdout)).toBe('Result: the run showed a bug: bad page state (3) (exit 1)');
    expect(bad.stdout).toContain("Bad page state at free_hot_cold_page (in process 'aplay', page c");
    const ok = run(['alsa-mmap', '--gfp-comp', 'on']);
    expect(ok.status).toBe(0);
    expect(last(ok.stdout)).toBe('Result: clean (exit 0)');
  });

  it('slub-dma: 1 with the oops, 0 with the fix', () => {
    const bad = run(['slub-dma', '--slub-fix', 'off']);
    expect(bad.status).toBe(1);
    expect(last(bad.stdout)).toBe('Result: the run showed a bug: kernel oops (1) (exit 1)');
    expect(bad.stdout).toContain('Unable to handle kernel NULL pointer dereference at virtual address');
    expect(run(['slub-dma']).status).toBe(0);
  });

  it('truncate-race: 1 without lock_page (--json carries the reports), 0 with it', () => {
    const bad = run(['truncate-race', '--lock-page', 'off', '--json']);
    expect(bad.status).toBe(1);
    const j = JSON.parse(bad.stdout) as ReturnType<typeof summaryJson>;
    expect(j.bugs.some((b) => b.startsWith('kernel BUG'))).toBe(true);
    expect(j.reports.filter((r) => r.kind === 'bug')[0]?.lines).toEqual([
      `kernel BUG at mm/filemap.c:${FILEMAP_BUG_LINE}!`,
    ]);
    expect(run(['truncate-race', '--lock-page', 'on']).status).toBe(0);
  });

  it('bad usage is 2, naming the option and what it accepts', () => {
    const r = run(['alsa-mmap', '--gfp-comp', 'maybe']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--gfp-comp must be on or off, got "maybe"/);
    const k = run(['alsa-mmap', '--kunmap-base', 'on']);
    expect(k.status).toBe(2);
    expect(k.stderr).toMatch(/--kunmap-base is an option of the slub-dma workload/);
  });
});
