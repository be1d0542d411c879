/*
 * The guest kernel under the enforcing hypervisor, end to end on real vCPU workers:
 * boot, fork/exec/exit churn in both schedulers and both paging modes, the audit, no
 * leak, determinism, and Jeremy Fitzhardinge's HIGHPTE kmap case with and without
 * kmap_flush_unused().
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_RUN, type RunOptions, runOnce } from '../src/run.js';

const MiB = 2 ** 20;

/** The counts of a run, without its timings (loopMs, nsPerStepPerCpu). */
function counts(w: Record<string, number> | undefined): Record<string, number> {
  return Object.fromEntries(Object.entries(w ?? {}).filter(([k]) => !/Ms$|Cpu$/.test(k)));
}

function opts(o: Partial<RunOptions>): RunOptions {
  return { ...DEFAULT_RUN, workload: 'fork-storm', memoryBytes: 64 * MiB, ops: 600, ...o };
}

describe('fork/exec/exit churn on 2 vCPUs', () => {
  for (const paging of ['pae', 'x86_64'] as const) {
    for (const sched of ['det', 'parallel'] as const) {
      it(`${paging}, ${sched}: pins succeed, the audit agrees, nothing leaks`, async () => {
        const { summary: s } = await runOnce(opts({ paging, sched }));
        expect(s.pinsAttempted).toBeGreaterThan(20);
        expect(s.rejected.total).toBe(0);
        expect(s.auditOk).toBe(true);
        expect(s.leakedFrames).toBe(0);
        expect(s.dataErrors).toBe(0);
        expect(s.workloadStats!.taskRuns).toBeGreaterThan(50);
      });
    }
  }

  it('det: the same seed gives the same hypercall counts; another seed does not', async () => {
    const a = (await runOnce(opts({ seed: 7 }))).summary;
    const b = (await runOnce(opts({ seed: 7 }))).summary;
    const c = (await runOnce(opts({ seed: 8 }))).summary;
    expect(b.hypercalls).toBe(a.hypercalls);
    expect(b.pinsAttempted).toBe(a.pinsAttempted);
    expect(b.tlb.shootdowns).toBe(a.tlb.shootdowns);
    expect(counts(b.workloadStats)).toEqual(counts(a.workloadStats));
    expect(c.hypercalls).not.toBe(a.hypercalls);
  });
});

describe("HIGHPTE: a leftover kmap alias of a new page table (Jeremy Fitzhardinge's case)", () => {
  const kmap = (kmapFlush: boolean) =>
    runOnce(opts({ workload: 'kmap-churn', highmemBytes: 16 * MiB, highpte: true, vcpus: 1, ops: 500, kmapFlush }));

  it('without kmap_flush_unused the pin is refused: Bad type, writable != l1', async () => {
    const { summary: s, xenLog } = await kmap(false);
    expect(s.rejected.total).toBeGreaterThan(0);
    expect(s.rejected.byReason.bad_type).toBe(s.rejected.total);
    expect(xenLog[0]!.line).toMatch(/Bad type \(saw e4000000000000\d\d != exp 2000000000000000\)/);
    expect(s.guestReports.join('\n')).toMatch(/\d+ of \d+ multicall\(s\) failed: cpu 0/);
    expect(s.guestReports.join('\n')).toMatch(/call +\d+: op=26 \(mmuext_op\) arg=\[[0-9a-f]+\] result=-22/);
    // The hypervisor refused, nothing broke: the audit agrees and nothing leaked.
    expect(s.auditOk).toBe(true);
    expect(s.leakedFrames).toBe(0);
  });

  it('with kmap_flush_unused before pinning, every pin succeeds', async () => {
    const { summary: s } = await kmap(true);
    expect(s.pinsAttempted).toBeGreaterThan(20);
    expect(s.rejected.total).toBe(0);
    expect(s.auditOk).toBe(true);
    expect(s.leakedFrames).toBe(0);
  });
});

describe('the fault-vs-truncate race (Nick Piggin, February 2007)', () => {
  const race = (lockPage: boolean) =>
    runOnce(opts({ workload: 'truncate-race', vcpus: 2, ops: 2000, workloadOptions: { lockPage } }));

  it('without lock_page in the fault path, a page leaves the page cache while mapped', async () => {
    const { summary: s } = await race(false);
    const w = s.workloadStats!;
    expect(w.mappedAtRemoval).toBeGreaterThan(0);
    expect(w.orphans).toBeGreaterThan(0);
    // Linux's line alone, at the line of BUG_ON(page_mapped(page)) in the seed's patch.
    expect(s.guestReports).toContain('kernel BUG at mm/filemap.c:124!');
    expect(s.reportCounts?.bug).toBe(w.mappedAtRemoval);
    expect(s.dataErrors).toBeGreaterThan(0);
    // A guest bug, not a hypervisor one: the frame table still agrees, nothing leaked.
    expect(s.auditOk).toBe(true);
    expect(s.leakedFrames).toBe(0);
  });

  it('with it (and truncate re-checking under the page lock), never', async () => {
    const { summary: s } = await race(true);
    const w = s.workloadStats!;
    expect(w.faults).toBeGreaterThan(100);
    expect(w.truncates).toBeGreaterThan(50);
    expect(w.invalidates).toBeGreaterThan(50);
    expect(s.dataErrors).toBe(0);
    expect(s.reports).toEqual([]);
    expect(w.faultRetries).toBeGreaterThan(0); // the race window was hit, and handled
    expect(w.mappedAtRemoval).toBe(0);
    expect(w.orphans).toBe(0);
    expect(s.auditOk).toBe(true);
    expect(s.leakedFrames).toBe(0);
  });
});
