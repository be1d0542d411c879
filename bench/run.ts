/*
 * `npm run bench` / `pvmmu bench [SUITE...]`: run the named suites (default: all) and
 * print one table per suite, labelled with the machine. Ratios measured side by side in
 * the same run are the headline; absolute figures hold for this machine only.
 *
 * Every run also leaves bench/results/<timestamp>/ with results.json, results.csv and a
 * self-contained report.html (bench/report.ts). While a suite runs, a progress line with a
 * spinner and the elapsed time is drawn on stderr -- on a TTY only.
 */
import { cpus } from 'node:os';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hypercallSuite } from './hypercall.js';
import {
  commandLine,
  gitCommit,
  machineInfo,
  writeResults,
  type BenchResults,
  type Row,
  type SuiteOptions,
  type SuiteResult,
} from './report.js';
import { checkVmallocOptions, VMALLOC_PARAMS, vmallocSuite } from './vmalloc.js';
import { checkVunmapOptions, VUNMAP_PARAMS, vunmapSuite } from './vunmap.js';
import { checkVunmapVirtualOptions, vunmapVirtualSuite } from './vunmap-virtual.js';

export type { Row, SuiteOptions } from './report.js';

export const SUITES: Record<string, (opts: SuiteOptions) => Promise<Row[]>> = {
  vunmap: vunmapSuite,
  vmalloc: vmallocSuite,
  hypercall: hypercallSuite,
};

/** The command-line parameters each suite accepts ('value': takes an argument). */
export const SUITE_PARAMS: Record<string, Readonly<Record<string, 'value' | 'flag'>>> = {
  hypercall: {},
  vmalloc: VMALLOC_PARAMS,
  vunmap: VUNMAP_PARAMS,
};

/** Option checks run before anything starts, so a bad option leaves no results behind. */
export const SUITE_CHECKS: Record<string, (params: Readonly<Record<string, string>>, quick: boolean) => void> = {
  vmalloc: checkVmallocOptions,
  vunmap: checkVunmapOptions,
};

/** The runner's own options. */
const RUNNER_FLAGS = ['quick', 'json', 'help'] as const;
const RUNNER_VALUES = ['out', 'clock', 'cost-model'] as const;

export function machineLabel(): string {
  const c = cpus();
  return `${c[0]?.model.trim() ?? 'unknown CPU'}, ${c.length} cores, Node ${process.version}`;
}

export function formatTable(title: string, rows: Row[]): string {
  const w = Math.max(...rows.map((r) => r.case.length));
  const lines = [title, '-'.repeat(title.length)];
  for (const r of rows) {
    const v = r.value >= 100 ? r.value.toFixed(0) : r.value >= 10 ? r.value.toFixed(1) : r.value.toFixed(2);
    lines.push(`${r.case.padEnd(w)}  ${v.padStart(8)} ${r.unit.padEnd(14)}${r.note ? `  ${r.note}` : ''}`);
  }
  return lines.join('\n');
}

/* ------------------------------------------------------------------ arguments */

export interface BenchArgs {
  names: string[];
  quick: boolean;
  json: boolean;
  help: boolean;
  /** Where the timestamped results directory goes (default bench/results). */
  outDir?: string;
  /** Suite parameters: --name value or --name=value. */
  params: Record<string, string>;
  /** --clock wall|virtual and --cost-model (bench/vunmap-virtual.ts). */
  clock?: string;
  costModel?: string;
}

function acceptedOptions(): string {
  const suiteOpts = Object.entries(SUITE_PARAMS).flatMap(([s, p]) =>
    Object.entries(p).map(([k, kind]) => `--${k}${kind === 'value' ? ' V' : ''} (${s})`),
  );
  return ['--quick', '--json', '--out DIR', '--clock wall|virtual', '--cost-model M', '--help', ...suiteOpts].join(
    ', ',
  );
}

/** Parse `[SUITE...] [--option[=value]...]`. Throws a RangeError naming what is accepted. */
export function parseBenchArgs(argv: readonly string[]): BenchArgs {
  const out: BenchArgs = { names: [], quick: false, json: false, help: false, params: {} };
  const valued = new Map<string, 'value' | 'flag'>();
  for (const p of Object.values(SUITE_PARAMS)) for (const [k, kind] of Object.entries(p)) valued.set(k, kind);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('--')) {
      out.names.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const key = a.slice(2, eq < 0 ? undefined : eq);
    let value = eq < 0 ? undefined : a.slice(eq + 1);
    if ((RUNNER_FLAGS as readonly string[]).includes(key)) {
      if (value !== undefined) throw new RangeError(`--${key} takes no value`);
      out[key as (typeof RUNNER_FLAGS)[number]] = true;
      continue;
    }
    const kind = (RUNNER_VALUES as readonly string[]).includes(key) ? 'value' : valued.get(key);
    if (kind === undefined) throw new RangeError(`unknown option ${a}; accepted: ${acceptedOptions()}`);
    if (kind === 'value' && value === undefined) {
      value = argv[++i];
      if (value === undefined || value.startsWith('--')) throw new RangeError(`--${key} needs a value`);
    }
    if (key === 'out') out.outDir = value;
    else if (key === 'clock') out.clock = value;
    else if (key === 'cost-model') out.costModel = value;
    else out.params[key] = value ?? 'true';
  }
  return out;
}

/* ------------------------------------------------------------------- progress */

const SPINNER = '\u280b\u2819\u2839\u2838\u283c\u2834\u2826\u2827\u2807\u280f';

/** The progress line: spinner, suite, elapsed seconds, what runs; cut to the terminal width. */
export function progressLine(suite: string, what: string, elapsedMs: number, frame: number, columns = 80): string {
  const line = `${SPINNER[frame % SPINNER.length]} [${suite} ${(elapsedMs / 1000).toFixed(1)} s] ${what}`;
  const max = Math.max(10, columns - 1);
  return line.length > max ? `${line.slice(0, max - 1)}\u2026` : line;
}

interface Progress {
  update(what: string): void;
  stop(): void;
}

/** A redrawn progress line on stderr while a suite runs; nothing at all when stderr is not a TTY. */
function startProgress(suite: string): Progress {
  const err = process.stderr;
  if (!err.isTTY) return { update: () => {}, stop: () => {} };
  const t0 = performance.now();
  let what = 'starting';
  let frame = 0;
  const draw = (): void => {
    err.write(`\r\x1b[K${progressLine(suite, what, performance.now() - t0, frame++, err.columns || 80)}`);
  };
  const timer = setInterval(draw, 125);
  timer.unref();
  draw();
  return {
    update(w: string) {
      what = w;
      draw();
    },
    stop() {
      clearInterval(timer);
      err.write('\r\x1b[K');
    },
  };
}

/* ------------------------------------------------------------------------ run */

function defaultResultsDir(): string {
  const here = import.meta.url;
  return fileURLToPath(new URL(here.includes('/dist/bench/') ? '../../bench/results/' : './results/', here));
}

export async function runBench(
  names: string[],
  opts: {
    quick?: boolean;
    json?: boolean;
    params?: Record<string, string>;
    outDir?: string;
    clock?: string;
    costModel?: string;
  } = {},
): Promise<Record<string, Row[]>> {
  // --clock virtual: the vunmap suite on the modelled machine (bench/vunmap-virtual.ts).
  if (opts.clock !== undefined && opts.clock !== 'wall' && opts.clock !== 'virtual')
    throw new RangeError(`--clock must be wall or virtual, got "${opts.clock}"`);
  const virtual = opts.clock === 'virtual';
  if (opts.costModel !== undefined && !virtual) throw new RangeError('--cost-model is for --clock virtual');
  const chosen = names.length === 0 ? (virtual ? ['vunmap'] : Object.keys(SUITES)) : names;
  if (virtual && chosen.some((n) => n !== 'vunmap'))
    throw new RangeError(
      `--clock virtual: only the vunmap suite has a virtual-clock form (asked: ${chosen.join(', ')})`,
    );
  const suite = (n: string) => (virtual ? vunmapVirtualSuite(opts.costModel) : SUITES[n]!);
  for (const n of chosen) {
    if (!SUITES[n]) throw new RangeError(`no bench suite "${n}" (suites: ${Object.keys(SUITES).join(', ')})`);
  }
  const params = opts.params ?? {};
  for (const k of Object.keys(params)) {
    const owners = Object.keys(SUITE_PARAMS).filter((s) => k in SUITE_PARAMS[s]!);
    if (!owners.some((s) => chosen.includes(s))) {
      throw new RangeError(
        owners.length
          ? `--${k} is a parameter of suite ${owners.join(', ')}, which is not being run (running: ${chosen.join(', ')})`
          : `unknown parameter --${k}; accepted: ${acceptedOptions()}`,
      );
    }
  }
  const ownParams = (n: string): Record<string, string> =>
    Object.fromEntries(Object.entries(params).filter(([k]) => k in (SUITE_PARAMS[n] ?? {})));
  for (const n of chosen)
    if (virtual) checkVunmapVirtualOptions(ownParams(n), opts.costModel);
    else SUITE_CHECKS[n]?.(ownParams(n), opts.quick ?? false);
  const results: BenchResults & { error?: string } = {
    schema: 'pvmmu-bench/1',
    startedAt: new Date().toISOString(),
    finishedAt: '',
    machine: machineInfo(),
    commit: gitCommit(fileURLToPath(new URL('.', import.meta.url))),
    command: commandLine(),
    options: { quick: opts.quick ?? false, params },
    suites: {},
  };
  const out: Record<string, Row[]> = {};
  try {
    for (const n of chosen) {
      const notes: string[] = [];
      const progress = startProgress(n);
      try {
        out[n] = await suite(n)({
          quick: opts.quick,
          params: ownParams(n),
          progress: progress.update,
          describe: (l) => notes.push(l),
        });
      } finally {
        progress.stop();
      }
      results.suites[n] = { rows: out[n]!, notes } satisfies SuiteResult;
      if (!opts.json) {
        const foot = notes.map((l) => `  * ${l}`).join('\n');
        process.stdout.write(
          `${formatTable(`suite ${n} -- ${machineLabel()}`, out[n]!)}\n${foot ? `${foot}\n` : ''}\n`,
        );
      }
    }
  } catch (e) {
    results.error = (e as Error).message;
    throw e;
  } finally {
    results.finishedAt = new Date().toISOString();
    const dir = writeResults(results, opts.outDir ?? defaultResultsDir());
    const shown = relative(process.cwd(), dir) || '.';
    process.stderr.write(
      `bench: results in ${shown.startsWith('..') ? dir : shown}/ (report.html, results.json, results.csv)\n`,
    );
  }
  if (opts.json) process.stdout.write(`${JSON.stringify({ machine: machineLabel(), suites: out }, null, 2)}\n`);
  return out;
}

const USAGE = `usage: node dist/bench/run.js [SUITE...] [--quick] [--json] [--out DIR] [suite options]
suites: ${Object.keys(SUITES).join(', ')} (default: all)
vmalloc options (lib/test_vmalloc.c's parameters): --test_loop_count|--loops N, --nr_threads|--threads N[,N...],
  --run_test_mask M, --nr_pages N, --test_repeat_count|--repeat N, --strategy lazy[,eager], --kpt ref[,flat],
  --jobs N (cases at once; default 1), --seed N
--clock virtual [--cost-model default-2008|server-2023|FILE]: the vunmap suite on the virtual clock, 1..64 vCPUs
  (--cycles N per vCPU, --vcpus N the largest count)
results: bench/results/<timestamp>/{results.json,results.csv,report.html} (--out DIR to change)`;

const isMain =
  process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/^.*\/dist\//, '/dist/'));
if (isMain) {
  try {
    const a = parseBenchArgs(process.argv.slice(2));
    if (a.help) {
      process.stdout.write(`${USAGE}\n`);
    } else {
      runBench(a.names, {
        quick: a.quick,
        json: a.json,
        params: a.params,
        outDir: a.outDir,
        ...(a.clock === undefined ? {} : { clock: a.clock }),
        ...(a.costModel === undefined ? {} : { costModel: a.costModel }),
      }).catch((e: unknown) => {
        process.stderr.write(`bench: ${(e as Error).message}\n`);
        process.exitCode = 2;
      });
    }
  } catch (e) {
    process.stderr.write(`bench: ${(e as Error).message}\n${USAGE}\n`);
    process.exitCode = 2;
  }
}
