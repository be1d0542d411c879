/*
 * src/summary.ts with hand-made summaries: the one-run report (verdict line, refusals by
 * reason, Xen lines, counters, audit), the comparison table (columns, alignment, legend,
 * varying settings) and the --json contract.
 */
import { describe, expect, it } from 'vitest';
import {
  formatComparison,
  formatSummary,
  group,
  pagesToMiB,
  refusedPins,
  summaryJson,
  verdict,
  type RunSummary,
} from '../src/summary.js';

const XEN1 = '(XEN) mm.c:2891:d1v0 Bad type (saw e8000001 != exp 20000000) for mfn 1a2b (pfn 42)';
const XEN2 = '(XEN) mm.c:3296:d1v0 Error while pinning mfn 1a2b';

function lazyRun(over: Partial<RunSummary> = {}): RunSummary {
  return {
    workload: 'xfs-dir',
    strategy: 'lazy',
    kmapFlush: false,
    vcpus: 4,
    seed: 42,
    ops: 12000,
    elapsedMs: 3420,
    hypercalls: 48213,
    rejected: { total: 6, byReason: { pin_error: 3, bad_type: 3 } },
    firstXenLines: [XEN1, XEN2],
    pinsAttempted: 1024,
    tlb: { shootdowns: 120, ipis: 480 },
    vmaps: 5000,
    vunmaps: 4936,
    lazyPeakPages: 4096,
    dataErrors: 0,
    auditOk: true,
    leakedFrames: 0,
    guestReports: [],
    throughputOpsPerSec: 3508.8,
    paging: 'pae',
    sched: 'parallel',
    ...over,
  };
}

const clean = (strategy: string, over: Partial<RunSummary> = {}) =>
  lazyRun({ strategy, rejected: { total: 0, byReason: {} }, firstXenLines: [], ...over });

describe('formatSummary', () => {
  it('reports a run where the bug showed up', () => {
    const text = formatSummary(
      lazyRun({ guestReports: ['BUG: Bad page state in process xfsbufd  page:c1234560 flags:0x00000400'] }),
    );
    const lines = text.split('\n');
    expect(lines[0]).toBe('Workload xfs-dir, strategy lazy (XFS 2007: vunmap deferred to a list, purged in batches)');
    expect(lines[1]).toBe('  kmap_flush_unused before pins: off; 4 vCPUs, seed 42, pae paging, parallel scheduler');
    expect(lines).toContain(
      'The stray-mapping bug SHOWED UP: Xen refused 3 of 1,024 page-table pins (page tables still mapped writable by a stray alias: a lazy vmap or an unused kmap).',
    );
    expect(text).toContain('  operations            12,000 in 3.42 s (3,509 ops/s)');
    expect(text).toContain('  hypercalls            48,213');
    expect(text).toContain('  refused by Xen        6 (bad_type 3, pin_error 3)');
    expect(text).toContain('  page-table pins       1,024 attempted, 3 refused');
    expect(text).toContain('  TLB shootdowns        120 (480 IPIs to other vCPUs)');
    expect(text).toContain('  vmap / vunmap         5,000 / 4,936');
    expect(text).toContain('  lazy mappings peak    4,096 pages held (16.0 MiB)');
    expect(text).toContain('  data checksum errors  0');
    expect(text).toContain('  audit                 ok (frame table agrees with the page tables)');
    expect(text).toContain(`First Xen log lines:\n  ${XEN1}\n  ${XEN2}`);
    expect(text).toContain('Guest kernel reports:\n  BUG: Bad page state in process xfsbufd');
  });

  it('says plainly when the bug did not show up or was not exercised, and reports audit failures', () => {
    const eager = formatSummary(
      clean('eager', { auditOk: false, auditProblems: ['mfn 12: type count 2, expected 1'], dataErrors: 2 }),
    );
    expect(eager).toContain(
      'The stray-mapping bug did not show up: Xen accepted all 1,024 page-table pins, but 2 XFS blocks failed the data checksum.',
    );
    expect(eager).toContain('  refused by Xen        none');
    expect(eager).toContain('audit                 FAILED (1 problem)');
    expect(eager).toContain('Audit problems:\n  mfn 12: type count 2, expected 1');
    expect(eager).toContain('data checksum errors  2 (XFS blocks read back corrupted)');
    expect(eager).not.toContain('First Xen log lines');
    expect(verdict(clean('lazy', { pinsAttempted: 0 }))).toBe(
      'The stray-mapping bug was not exercised: the run pinned no page tables.',
    );
    expect(formatSummary(clean('lazy', { vcpus: 1, elapsedMs: 850 }))).toContain('1 vCPU, seed 42');
  });

  it('shows isolation violations and the workload counters', () => {
    const text = formatSummary(
      clean('lazy', { isolationViolations: 2, workloadStats: { xfsBufReads: 1500, dirScans: 3 } }),
    );
    expect(text).toContain('  isolation             VIOLATED 2 times (a domain reached a frame it does not own)');
    expect(text).toContain('Workload counters:\n  dirScans     3\n  xfsBufReads  1,500');
    expect(formatSummary(clean('lazy'))).not.toContain('isolation');
    const j = summaryJson(clean('lazy', { isolationViolations: 2, workloadStats: { b: 2, a: 1 } }));
    expect(j.isolationViolations).toBe(2);
    expect(Object.entries(j.workloadStats)).toEqual([
      ['a', 1],
      ['b', 2],
    ]);
    expect(summaryJson(clean('lazy')).workloadStats).toEqual({});
  });

  it('prefers an explicit pinsRefused over the pin_error log count', () => {
    expect(refusedPins(lazyRun())).toBe(3);
    expect(refusedPins(lazyRun({ pinsRefused: 5 }))).toBe(5);
    expect(refusedPins(clean('eager'))).toBe(0);
  });

  it('rejects a malformed summary, naming the field', () => {
    expect(() => formatSummary({ ...lazyRun(), ops: Number.NaN })).toThrow(/RunSummary\.ops must be a finite number/);
    expect(() => formatSummary({ ...lazyRun(), tlb: undefined } as unknown as RunSummary)).toThrow(/RunSummary\.tlb/);
    expect(() => summaryJson({ ...lazyRun(), auditOk: 'yes' } as unknown as RunSummary)).toThrow(TypeError);
  });
});

describe('formatComparison', () => {
  const rows = [
    lazyRun(),
    clean('eager', {
      tlb: { shootdowns: 5000, ipis: 20000 },
      lazyPeakPages: 0,
      hypercalls: 61000,
      throughputOpsPerSec: 812.4,
    }),
    clean('vmap-pages', { tlb: { shootdowns: 80, ipis: 320 }, lazyPeakPages: 1040, throughputOpsPerSec: 3380 }),
    clean('unmap-aliases', {
      kmapFlush: true,
      tlb: { shootdowns: 1100, ipis: 4400 },
      lazyPeakPages: 30,
      throughputOpsPerSec: 3100,
    }),
  ];

  it('prints one aligned row per strategy with the columns the issue names', () => {
    const text = formatComparison(rows);
    const lines = text.split('\n');
    expect(lines[0]).toBe(
      'Unmap strategies compared: workload xfs-dir, 4 vCPUs, seed 42, pae paging, parallel scheduler, 12,000 ops per run',
    );
    const header = lines[2]!;
    expect(header.split(/\s{2,}/)).toEqual([
      'strategy',
      'refused pins',
      'shootdowns',
      'IPIs',
      'hypercalls',
      'ops/s',
      'peak lazy pages',
      'audit',
    ]);
    expect(lines[3]).toMatch(/^-+( {2}-+){7}$/);
    const table = lines.slice(4, 8).map((l) => l.split(/\s{2,}/).map((c) => c.trim()));
    expect(table).toEqual([
      ['lazy', '3', '120', '480', '48,213', '3,509', '4,096 (16.0 MiB)', 'ok'],
      ['eager', '0', '5,000', '20,000', '61,000', '812', '0 (0 MiB)', 'ok'],
      ['vmap-pages', '0', '80', '320', '48,213', '3,380', '1,040 (4.1 MiB)', 'ok'],
      ['unmap-aliases +kmap_flush', '0', '1,100', '4,400', '48,213', '3,100', '30 (0.1 MiB)', 'ok'],
    ]);
    // Numbers are right-aligned: every data row ends its "IPIs" column at the header's end.
    const ipisEnd = header.indexOf('IPIs') + 4;
    for (const l of lines.slice(4, 8)) expect(l[ipisEnd - 1]).toMatch(/\d/);
    expect(text).toContain(
      'Stray-mapping bug showed up with: lazy. Not with: eager, vmap-pages, unmap-aliases +kmap_flush.',
    );
    expect(text).toContain('Columns:\n  refused pins     page-table pins Xen refused');
    expect(text).toMatch(/\n {2}peak lazy pages {2}most 4 KiB pages held at once/);
    expect(text).not.toContain('AUDIT FAILED');
  });

  it('turns differing settings into columns and flags failures', () => {
    const text = formatComparison([
      lazyRun({ vcpus: 1 }),
      clean('eager', { vcpus: 8, auditOk: false, auditProblems: ['a', 'b'], dataErrors: 4 }),
    ]);
    const lines = text.split('\n');
    expect(lines[0]).toBe(
      'Unmap strategies compared: workload xfs-dir, seed 42, pae paging, parallel scheduler, 12,000 ops per run',
    );
    expect(lines[2]!.split(/\s{2,}/).slice(0, 3)).toEqual(['strategy', 'vCPUs', 'refused pins']);
    expect(lines[4]!.split(/\s{2,}/).slice(0, 2)).toEqual(['lazy', '1']);
    expect(lines[5]!.split(/\s{2,}/).at(-1)).toBe('FAILED (2)');
    expect(text).toContain('AUDIT FAILED for: eager.');
    expect(text).toContain('Data checksum errors with: eager (4).');
    expect(formatComparison([clean('eager')])).toContain(
      'Stray-mapping bug did not show up with any strategy (eager).',
    );
    expect(formatComparison([clean('eager', { pinsAttempted: 0 })])).toContain('not exercised');
  });

  it('rejects an empty or malformed row list', () => {
    expect(() => formatComparison([])).toThrow(/non-empty array of RunSummary/);
    expect(() => formatComparison([lazyRun(), { ...lazyRun(), workload: 3 } as unknown as RunSummary])).toThrow(
      /row 1: RunSummary\.workload must be a string/,
    );
  });
});

describe('summaryJson', () => {
  it('has the --json contract fields with the run values', () => {
    const j = summaryJson(lazyRun());
    expect(j).toMatchObject({
      workload: 'xfs-dir',
      strategy: 'lazy',
      vcpus: 4,
      seed: 42,
      ops: 12000,
      elapsedMs: 3420,
      hypercalls: 48213,
      rejected: { total: 6, byReason: { bad_type: 3, pin_error: 3 } },
      pinsAttempted: 1024,
      tlb: { shootdowns: 120, ipis: 480 },
      lazyPeakPages: 4096,
      dataErrors: 0,
      auditOk: true,
    });
    expect(j.pinsRefused).toBe(3);
    expect(j.lazyPeakBytes).toBe(16 * 1024 * 1024);
    expect(j.strayMappingBug).toBe(true);
    expect(j.auditProblems).toEqual([]);
    expect(Object.keys(j.rejected.byReason)).toEqual(['bad_type', 'pin_error']); // stable order
    expect(JSON.parse(JSON.stringify(j))).toEqual(j);
    expect(summaryJson(clean('eager')).strayMappingBug).toBe(false);
  });

  it('does not alias the input', () => {
    const s = lazyRun();
    const j = summaryJson(s);
    j.firstXenLines.push('x');
    j.rejected.byReason.x = 1;
    expect(s.firstXenLines).toHaveLength(2);
    expect(s.rejected.byReason.x).toBeUndefined();
  });
});

describe('number formatting', () => {
  it('groups thousands and converts pages to MiB', () => {
    expect(group(1234567)).toBe('1,234,567');
    expect(group(-1234.5, 1)).toBe('-1,234.5');
    expect(group(999)).toBe('999');
    expect(pagesToMiB(256)).toBe('1.0 MiB');
    expect(pagesToMiB(0)).toBe('0 MiB');
    expect(pagesToMiB(3)).toBe('0.01 MiB');
    expect(pagesToMiB(262144 * 2)).toBe('2,048.0 MiB');
  });
});
