/*
 * The fairness rules of the benchmarks (issue 9): repeated figures with min/median/max,
 * oversubscribed points marked and kept out of the headline ratios, --repeat and --json,
 * counters from the timed window only, and the adaptive spin of the transport.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { headlineRatios, isOversubscribed, repeatedRow, spread, type Row } from '../bench/report.js';
import { formatTable, parseBenchArgs } from '../bench/run.js';
import { DEFAULT_RUN, runOnce } from '../src/run.js';
import { runOptionsFrom } from '../src/commands.js';
import { MAX_SPIN_US, MIN_SPIN_US, OVERSUBSCRIBED_SPIN_US, SERVING_SPIN_US, SpinBudget } from '../src/abi/wait.js';

const ROOT = path.resolve(import.meta.dirname, '..');

describe('repeated figures', () => {
  it('spread gives min, median (mean of the middle two when even) and max', () => {
    expect(spread([3, 1, 2])).toEqual({ min: 1, median: 2, max: 3, repeats: 3 });
    expect(spread([4, 1, 3, 2])).toEqual({ min: 1, median: 2.5, max: 4, repeats: 4 });
    expect(() => spread([])).toThrow(RangeError);
    const r = repeatedRow({ case: 'c', unit: 'ns' }, [5, 9, 7]);
    expect(r.value).toBe(7);
    expect([r.min, r.median, r.max]).toEqual([5, 7, 9]);
  });

  it('--repeat is the runner option, checked; vmalloc keeps test_repeat_count', () => {
    expect(parseBenchArgs(['hypercall', '--repeat', '3']).repeat).toBe(3);
    expect(parseBenchArgs(['hypercall', '--repeat=7']).repeat).toBe(7);
    expect(() => parseBenchArgs(['--repeat', '0'])).toThrow(/--repeat must be an integer in 1..100/);
    expect(() => parseBenchArgs(['--repeat', 'x'])).toThrow(/--repeat/);
    expect(parseBenchArgs(['vmalloc', '--test_repeat_count', '2']).params).toEqual({ test_repeat_count: '2' });
  });
});

describe('oversubscribed points', () => {
  const rows: Row[] = [
    { case: 'a1', value: 10, unit: 'ns', series: 'eager', x: 1, group: 'g' },
    { case: 'b1', value: 5, unit: 'ns', series: 'lazy', x: 1, group: 'g' },
    { case: 'a8', value: 100, unit: 'ns', series: 'eager', x: 8, group: 'g', oversubscribed: true },
    { case: 'b8', value: 1, unit: 'ns', series: 'lazy', x: 8, group: 'g', oversubscribed: true },
  ];

  it('are what threads beyond the cores make', () => {
    expect(isOversubscribed(2, 2)).toBe(false);
    expect(isOversubscribed(3, 2)).toBe(true);
  });

  it('stay out of the headline ratios and are marked in the table', () => {
    const h = headlineRatios(rows).join('\n');
    expect(h).toMatch(/eager 2\.00x lazy at 1/);
    expect(h).not.toMatch(/at 8/);
    const withThem = headlineRatios(rows.map((r) => ({ ...r, oversubscribed: false }))).join('\n');
    expect(withThem).toMatch(/at 8/);
    const t = formatTable('t', rows);
    expect(t.split('\n').filter((l) => l.includes('OVERSUBSCRIBED'))).toHaveLength(2);
  });
});

describe('the adaptive spin (src/abi/wait.ts)', () => {
  it('caps the spin when threads outnumber cores, and follows whether spins pay off', () => {
    const b = new SpinBudget({ cores: 2 });
    expect(b.limitMs(2)).toBe(MAX_SPIN_US / 1000);
    expect(b.limitMs(9)).toBe(OVERSUBSCRIBED_SPIN_US / 1000);
    // Waits far longer than any spin: the budget halves down to its floor.
    for (let i = 0; i < 20; i++) b.record(10, true);
    expect(b.limitMs(2)).toBe(MIN_SPIN_US / 1000);
    // A wait that slept but a longer spin would have caught: it grows back.
    b.record(MAX_SPIN_US / 2000, true);
    expect(b.limitMs(2)).toBe((2 * MIN_SPIN_US) / 1000);
    // Waits that ended in their spin change nothing but the count.
    b.record(0.0001, false);
    expect(b.paid).toBe(1);
    const fixed = new SpinBudget({ cores: 2, fixedSpinUs: 7 });
    fixed.record(10, true);
    expect(fixed.limitMs(9)).toBe(0.007);
  });

  it('spins on while the hypervisor serves this very call, unless threads outnumber cores', () => {
    const b = new SpinBudget({ cores: 2 });
    for (let i = 0; i < 20; i++) b.record(10, true); // a budget worn down to its floor
    expect(b.limitMs(2)).toBe(MIN_SPIN_US / 1000);
    // Served right now, with a core each: spin up to SERVING_SPIN_US, past any call we make.
    expect(b.servingLimitMs(2)).toBe(SERVING_SPIN_US / 1000);
    expect(SERVING_SPIN_US).toBeGreaterThan(MAX_SPIN_US);
    // Oversubscribed: the spinner may hold the server's core, so only the budget.
    expect(b.servingLimitMs(3)).toBe(b.limitMs(3));
    expect(new SpinBudget({ cores: 2, fixedSpinUs: 7 }).servingLimitMs(2)).toBe(0.007);
  });
});

describe('counters from the timed window only', () => {
  it('vmap-cycle: the window excludes the warm-up and the final purge, which has its own figures', async () => {
    const { summary: s } = await runOnce({
      ...DEFAULT_RUN,
      workload: 'vmap-cycle',
      strategy: 'lazy',
      vcpus: 1,
      sched: 'parallel',
      ops: 200,
      workloadOptions: { warmup: 500 },
    });
    const w = s.workloadStats!;
    expect(w.windowHypercalls).toBeGreaterThan(0);
    // The whole run also holds the boot, 500 warm-up cycles and the purge at the end.
    expect(w.windowHypercalls! + w.finiHypercalls!).toBeLessThan(s.hypercalls);
    expect(w.finiHypercalls).toBeGreaterThan(0);
    expect(w.finiMs).toBeGreaterThan(0);
    expect(w.windowShootdowns).toBe(0); // one vCPU: nobody else to shoot down
  }, 120_000);
});

describe('pvmmu run vmap-cycle --warmup N', () => {
  it('is vmap-cycle only, a non-negative integer, and reaches the workload', () => {
    expect(runOptionsFrom({ warmup: '20000' }, 'vmap-cycle').workloadOptions).toMatchObject({ warmup: 20000 });
    expect(runOptionsFrom({}, 'vmap-cycle').workloadOptions?.warmup).toBeUndefined();
    expect(() => runOptionsFrom({ warmup: '5' }, 'xfs-dirscan')).toThrow(
      /--warmup is an option of the vmap-cycle workload/,
    );
    expect(() => runOptionsFrom({ warmup: '-1' }, 'vmap-cycle')).toThrow(/--warmup must be a non-negative integer/);
    expect(() => runOptionsFrom({ warmup: '20000000' }, 'vmap-cycle')).toThrow(/--warmup must be at most 10000000/);
  });
});

describe('--json', () => {
  it('prints one object { suite, rows } with min, median and max on every repeated row', () => {
    const out = mkdtempSync(path.join(tmpdir(), 'pvmmu-bench-'));
    const r = spawnSync(
      process.execPath,
      [
        path.join(ROOT, 'dist/bench/run.js'),
        'vunmap',
        '--quick',
        '--json',
        '--repeat',
        '1',
        '--vcpus',
        '1',
        '--cycles',
        '100',
        '--out',
        out,
      ],
      { encoding: 'utf8', timeout: 600_000 },
    );
    expect(r.status, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { suite: string; rows: Row[] };
    expect(j.suite).toBe('vunmap');
    const cycles = j.rows.filter((x) => x.case.startsWith('cycle '));
    expect(cycles.length).toBeGreaterThan(0);
    for (const x of cycles) {
      expect(x.min).toBeLessThanOrEqual(x.median!);
      expect(x.median).toBeLessThanOrEqual(x.max!);
      expect(x.value).toBe(x.median);
    }
  }, 600_000);
});
