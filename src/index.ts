/*
 * pvmmu as a library: `import { runWorkload, runScript, reduceScript, sweep, Machine } from 'pvmmu'`.
 *
 * Options are the CLI's long options in camelCase (`--kmap-flush off` is
 * `kmapFlush: 'off'` or `false`, `--dir-block 16K` is `dirBlock: '16K'`), checked as the
 * CLI checks them (a UsageError naming the option and what it accepts); results are the
 * objects `--json` prints.
 */
import { readFileSync } from 'node:fs';
import { runOptionsFrom, RUN_OPTIONS, type RunValues } from './commands.js';
import { UsageError } from './command.js';
import { runOnce } from './run.js';
import { summaryJson, type SummaryJson } from './summary.js';
import { runScript as runParsedScript, type ScriptResult } from './script/run.js';
import { parseScript } from './script/schema.js';
import { totals } from './script/report.js';
import type { ScriptJson } from './script/reduce.js';
import { validateRunOptions } from './run.js';
import { parseShard } from './shard.js';
import { parseSeeds, parseStrategies, type SweepResult, sweep as sweepJobs } from './sweep.js';

export { Machine, type MachineOptions, type VcpuHandle } from './machine.js';
export { ScriptError, parseScript } from './script/schema.js';
export { UsageError } from './command.js';
export { reduceScript, type ReduceOptions, type ReduceResult, type ScriptJson, ReduceError } from './script/reduce.js';
export type { RunSummary, SummaryJson } from './summary.js';
export type { SweepResult, StrategyTotals } from './sweep.js';
export type { ScriptResult, StepResult } from './script/run.js';

/** `pvmmu run`'s options in camelCase; `workload` is the positional argument. */
export interface WorkloadOptions {
  workload: string;
  strategy?: string;
  kmapFlush?: boolean | 'on' | 'off';
  vcpus?: number;
  memory?: string | number;
  highmem?: string | number;
  highpte?: boolean;
  paging?: 'pae' | 'x86_64';
  dirBlock?: string | number;
  files?: number;
  ops?: number;
  seed?: number;
  sched?: 'det' | 'parallel';
  trace?: string;
  unenforced?: boolean;
  lockPage?: boolean | 'on' | 'off';
  xenLog?: string;
  guestLog?: string;
  record?: string;
}

const kebab = (k: string) => k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

/** Run a workload as `pvmmu run WORKLOAD ... --json` does; resolves with that JSON object. */
export async function runWorkload(options: WorkloadOptions): Promise<SummaryJson> {
  const o = runOptionsOf(options, 'runWorkload');
  return summaryJson((await runOnce(o)).summary);
}

/** `pvmmu sweep`'s options in camelCase: the run options, and seeds, strategies, shard, jobs, out. */
export interface SweepOptions
  extends Omit<WorkloadOptions, 'seed' | 'strategy' | 'trace' | 'record' | 'xenLog' | 'guestLog'> {
  /** "1..1000", "1,5,9", or the seeds. */
  seeds: string | number[];
  /** "lazy,unmap-aliases", "all", or the strategies [lazy]. */
  strategy?: string | string[];
  /** "i/n" */
  shard?: string;
  jobs?: number;
  /** Write one JSON line per job here. */
  out?: string;
}

/** Run a sweep as `pvmmu sweep` does: every job's --json object, and the totals per strategy. */
export async function sweep(options: SweepOptions): Promise<SweepResult> {
  const { seeds, strategy, shard, jobs, out, ...run } = options;
  const seedList = typeof seeds === 'string' ? parseSeeds(seeds) : parseSeeds(seeds.join(','));
  const strategies = parseStrategies(Array.isArray(strategy) ? strategy.join(',') : (strategy ?? 'lazy'));
  const base = runOptionsOf({ ...run, strategy: strategies[0] }, 'sweep');
  validateRunOptions(base);
  return sweepJobs({
    base,
    seeds: seedList,
    strategies,
    shard: shard === undefined ? undefined : parseShard(shard),
    jobs,
    out,
  });
}

function runOptionsOf(options: WorkloadOptions, fn: string) {
  if (options === null || typeof options !== 'object' || typeof options.workload !== 'string')
    throw new UsageError(`${fn}: options must be an object with a "workload" name`);
  const values: Record<string, string | boolean> = {};
  for (const [k, v] of Object.entries(options)) {
    if (k === 'workload' || v === undefined) continue;
    const name = kebab(k);
    const spec = (RUN_OPTIONS as Record<string, { type: string }>)[name];
    if (spec === undefined || name === 'json')
      throw new UsageError(
        `${fn}: unknown option "${k}" (accepted: workload, ${Object.keys(RUN_OPTIONS)
          .filter((n) => n !== 'json')
          .map((n) => n.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase()))
          .join(', ')})`,
      );
    if (spec.type === 'boolean') {
      if (typeof v !== 'boolean')
        throw new UsageError(`runWorkload: ${k} must be true or false, got ${JSON.stringify(v)}`);
      values[name] = v;
    } else values[name] = typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v);
  }
  const o = runOptionsFrom(values as RunValues, options.workload);
  o.progress = false;
  return o;
}

/** What `pvmmu script FILE --json` prints: the summary line's fields, and every step. */
export type ScriptRunJson = Omit<ScriptResult, 'passed' | 'failed'> & { passed: number; failed: number };

/** Run a script (a file name, JSON text or the parsed JSON object) as `pvmmu script` does. */
export async function runScript(script: string | ScriptJson): Promise<ScriptRunJson> {
  let parsed: ReturnType<typeof parseScript>;
  if (typeof script === 'string' && !script.trimStart().startsWith('{')) {
    parsed = parseScript(readFileSync(script, 'utf8'), script);
  } else parsed = parseScript(script);
  const res = await runParsedScript(parsed);
  const t = totals(res);
  return { ...res, passed: t.passed, failed: t.failed };
}
