/*
 * `pvmmu sweep`: one workload over many seeds and strategies, one job per (seed,
 * strategy), run in parallel on piscina workers, one JSON line per job, and a summary per
 * strategy. `--shard i/n` (src/shard.ts) takes a fixed, disjoint slice of the job list,
 * so n machines (a CI matrix) together run every job exactly once.
 */
import { createWriteStream } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { STRATEGIES, type Strategy } from './abi/kernel.js';
import { distEntry } from './machine.js';
import type { RunOptions } from './run.js';
import { ALL, type Shard, shardOf } from './shard.js';
import type { SummaryJson } from './summary.js';

export interface SweepJob {
  seed: number;
  strategy: Strategy;
}

/** Every job of a sweep, seed-major: (1, s1), (1, s2), ..., (2, s1), ... */
export function sweepJobs(seeds: readonly number[], strategies: readonly Strategy[]): SweepJob[] {
  return seeds.flatMap((seed) => strategies.map((strategy) => ({ seed, strategy })));
}

/** "1..1000", "7", "1,5,9" or "1..10,20": the seeds, in order, without repeats. */
export function parseSeeds(text: string): number[] {
  const out = new Set<number>();
  for (const part of text.split(',')) {
    const m = /^\s*(\d+)\s*(?:\.\.\s*(\d+)\s*)?$/.exec(part);
    if (m === null)
      throw new RangeError(`--seeds takes N, A..B or a comma list of those (e.g. 1..1000), got "${text}"`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new RangeError(`--seeds ${part.trim()}: the range is empty (${a} > ${b})`);
    if (b - a > 10_000_000) throw new RangeError(`--seeds ${part.trim()}: at most 10,000,000 seeds`);
    for (let s = a; s <= b; s++) out.add(s);
  }
  return [...out];
}

/** "lazy,unmap-aliases" or "all". */
export function parseStrategies(text: string): Strategy[] {
  if (text.trim() === 'all') return [...STRATEGIES];
  const out = text.split(',').map((s) => s.trim());
  for (const s of out) {
    if (!(STRATEGIES as readonly string[]).includes(s))
      throw new RangeError(`--strategy takes a comma list of ${STRATEGIES.join(', ')} or "all", got "${s}"`);
  }
  return [...new Set(out)] as Strategy[];
}

/** Did the run show a bug: the rule `pvmmu run` exits 1 by (SummaryJson.bugs not empty). */
export function showedBug(s: SummaryJson): boolean {
  return s.bugs.length > 0;
}

export interface StrategyTotals {
  strategy: string;
  runs: number;
  /** Runs that showed the bug (showedBug). */
  buggy: number;
  /** The run with the most refused pins (then refusals of any kind), if any was refused. */
  worst: { seed: number; pinsRefused: number; rejected: number } | null;
}

export function sweepTotals(results: readonly SummaryJson[]): StrategyTotals[] {
  const by = new Map<string, StrategyTotals>();
  for (const r of results) {
    let t = by.get(r.strategy);
    if (t === undefined) {
      t = { strategy: r.strategy, runs: 0, buggy: 0, worst: null };
      by.set(r.strategy, t);
    }
    t.runs++;
    if (showedBug(r)) t.buggy++;
    const w = t.worst;
    const score = [r.pinsRefused, r.rejected.total];
    if (
      score[1]! > 0 &&
      (w === null || score[0]! > w.pinsRefused || (score[0] === w.pinsRefused && score[1]! > w.rejected))
    )
      t.worst = { seed: r.seed, pinsRefused: r.pinsRefused, rejected: r.rejected.total };
  }
  return [...by.values()];
}

export interface SweepOptions {
  /** The run options every job shares (seed and strategy are the job's). */
  base: RunOptions;
  seeds: number[];
  strategies: Strategy[];
  shard?: Shard;
  /** Parallel jobs (default: the machine's available parallelism). */
  jobs?: number;
  /** Write one JSON line per job here as it finishes. */
  out?: string;
  onResult?: (r: SummaryJson, done: number, total: number) => void;
}

export interface SweepResult {
  jobs: SweepJob[];
  results: SummaryJson[];
  totals: StrategyTotals[];
}

export async function sweep(o: SweepOptions): Promise<SweepResult> {
  const jobs = shardOf(sweepJobs(o.seeds, o.strategies), o.shard ?? ALL);
  const threads = Math.max(1, Math.min(o.jobs ?? availableParallelism(), jobs.length || 1));
  const pool = new Piscina({
    filename: fileURLToPath(distEntry('src/sweep-worker.js')),
    minThreads: threads,
    maxThreads: threads,
  });
  const out = o.out === undefined ? null : createWriteStream(o.out);
  const results: SummaryJson[] = [];
  try {
    let done = 0;
    const all = jobs.map(async (j, k) => {
      const r = (await pool.run({ ...o.base, seed: j.seed, strategy: j.strategy, progress: false })) as SummaryJson;
      results[k] = r;
      out?.write(`${JSON.stringify(r)}\n`);
      o.onResult?.(r, ++done, jobs.length);
    });
    await Promise.all(all);
  } finally {
    await pool.destroy();
    if (out) await new Promise<void>((resolve) => out.end(resolve));
  }
  return { jobs, results, totals: sweepTotals(results) };
}
