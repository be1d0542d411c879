/*
 * pvmmu sweep: the job list, its shards at the sweep level (disjoint, complete, each job
 * run with its own seed and strategy), the per-strategy summary, and the CLI's refusals.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_RUN } from '../src/run.js';
import { parseSeeds, parseStrategies, sweep, sweepJobs, sweepTotals } from '../src/sweep.js';
import type { SummaryJson } from '../src/summary.js';

const cli = join(import.meta.dirname, '..', 'dist', 'src', 'cli.js');
const key = (r: { seed: number; strategy: string }) => `${r.seed}/${r.strategy}`;

describe('sweep jobs', () => {
  it('parses seeds and strategies as the CLI documents, refusing the rest', () => {
    expect(parseSeeds('1..3,7,2')).toEqual([1, 2, 3, 7]);
    expect(parseStrategies('all')).toEqual(['lazy', 'eager', 'vmap-pages', 'unmap-aliases']);
    expect(() => parseSeeds('5..1')).toThrow(/empty/);
    expect(() => parseSeeds('x')).toThrow(/--seeds takes/);
    expect(() => parseStrategies('lazy,lazier')).toThrow(/--strategy takes/);
  });
  it('one job per (seed, strategy), seed-major', () => {
    expect(sweepJobs([1, 2], ['lazy', 'eager']).map(key)).toEqual(['1/lazy', '1/eager', '2/lazy', '2/eager']);
  });
  it('the summary counts runs, runs that showed the bug and the worst run per strategy', () => {
    const r = (seed: number, strategy: string, pins: number) =>
      ({
        seed,
        strategy,
        pinsRefused: pins,
        rejected: { total: pins * 2 },
        strayMappingBug: pins > 0,
        bugs: pins > 0 ? [`refused pins (${pins})`] : [],
        dataErrors: 0,
        auditOk: true,
        isolationViolations: 0,
        leakedFrames: 0,
      }) as unknown as SummaryJson;
    expect(sweepTotals([r(1, 'lazy', 3), r(2, 'lazy', 9), r(3, 'lazy', 0), r(1, 'eager', 0)])).toEqual([
      { strategy: 'lazy', runs: 3, buggy: 2, worst: { seed: 2, pinsRefused: 9, rejected: 18 } },
      { strategy: 'eager', runs: 1, buggy: 0, worst: null },
    ]);
  });
});

describe('sweep shards (real runs)', () => {
  it('shards 1/2 and 2/2 are disjoint and together run every job once, each with its seed and strategy', async () => {
    const seeds = [1, 2, 3];
    const strategies = ['lazy', 'eager'] as const;
    const base = { ...DEFAULT_RUN, ops: 100, files: 2000 };
    const out = join(mkdtempSync(join(tmpdir(), 'pvmmu-sweep-')), 'shard1.jsonl');
    const a = await sweep({ base, seeds, strategies: [...strategies], shard: { index: 1, count: 2 }, jobs: 2, out });
    const b = await sweep({ base, seeds, strategies: [...strategies], shard: { index: 2, count: 2 }, jobs: 2 });
    const ka = a.results.map(key);
    const kb = b.results.map(key);
    expect(ka.filter((k) => kb.includes(k))).toEqual([]);
    expect([...ka, ...kb].sort()).toEqual(
      sweepJobs(seeds, [...strategies])
        .map(key)
        .sort(),
    );
    expect(a.jobs.map(key)).toEqual(ka);
    // --out holds one --json line per job of the shard.
    const lines = readFileSync(out, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as SummaryJson);
    expect(lines.map(key).sort()).toEqual([...ka].sort());
    expect(lines.every((l) => l.workload === 'xfs-dirscan' && l.ops === 100)).toBe(true);
    expect(a.totals.reduce((n, t) => n + t.runs, 0) + b.totals.reduce((n, t) => n + t.runs, 0)).toBe(6);
  }, 180_000);
});

describe('pvmmu sweep on the command line', () => {
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, 'sweep', ...args], { encoding: 'utf8' });
  it('has --help', () => {
    const r = run('--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/--shard i\/n/);
  });
  it.each([
    [['xfs-dirscan'], /--seeds is required/],
    [['xfs-dirscan', '--seeds', '1..x'], /--seeds takes/],
    [['xfs-dirscan', '--seeds', '1..2', '--shard', '3/2'], /--shard 3\/2: need 1 <= i <= n/],
    [['xfs-dirscan', '--seeds', '1', '--strategy', 'lazier'], /--strategy takes/],
    [['xfs-dirscan', '--seeds', '1', '--seed', '2'], /--seed is not a sweep option/],
    [['xfs-dirscan', '--seeds', '1', '--jobs', '0'], /--jobs must be/],
    [['nope', '--seeds', '1'], /unknown workload "nope"/],
  ])('refuses %j with exit 2', (args, msg) => {
    const r = run(...args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(msg);
  });
});
