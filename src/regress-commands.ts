/*
 * The regression-tooling subcommands: reduce (shrink a failing script) and sweep
 * (a workload over many seeds and strategies, shardable across machines).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { type Command, UsageError } from './command.js';
import { parseScript } from './script/schema.js';
import { runScript } from './script/run.js';
import { reduceScript, type ScriptJson } from './script/reduce.js';
import { totals } from './script/report.js';
import { scriptText } from './script/text.js';
import { WORKLOAD_NAMES } from './abi/kernel.js';
import { RUN_OPTIONS, runOptionsFrom } from './commands.js';
import { validateRunOptions } from './run.js';
import { parseShard } from './shard.js';
import { parseSeeds, parseStrategies, sweep } from './sweep.js';

export const regressCommands: Record<string, Command> = {};

function readJson(file: string, what: string): ScriptJson {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new UsageError(`${what}: cannot read ${file}: ${(e as Error).message}`);
  }
  parseScript(text, file); // a ScriptError (exit 2) names what is wrong
  return JSON.parse(text) as ScriptJson;
}

regressCommands.reduce = {
  summary: 'shrink a failing script to a minimal one that still fails the same way (ddmin)',
  usage: 'pvmmu reduce FILE.json [--keep ERRNO|LOGSUBSTRING] [-o OUT.json] [--max-seconds N] [--no-verify]',
  help: `Delta debugging over a script (a recorded run: pvmmu run ... --record FILE.json, or one
written by hand). What must keep happening:
  default              the first refused call: the same op, errno(s) and first log line
  --keep EINVAL        any call refused with that errno (EINVAL, EBUSY, EPERM, ...)
  --keep "some text"   any hypervisor log line containing the text
First everything after the first step that shows it is cut; then ddmin over the steps;
then over each step's entries (mmu_update requests, mmuext ops, multicall calls, fill
entries). A candidate that no longer parses or whose names no longer resolve does not
count. Each kept step gets the results it had as "expect", "expect_done", "expect_log".

Candidates run in-process on a replay worker (no vCPU threads) when the script has only
hypercall, fill and alloc steps; otherwise each runs as \`pvmmu script\` would. At the end
the reduced script is run once more as \`pvmmu script\` runs it, and must pass.

Options:
  --keep WHAT        see above
  -o, --out FILE     where to write the reduced script [FILE.reduced.json]
  --max-seconds N    stop after N seconds with the smallest failing script so far [300]
  --no-verify        skip the final run on vCPU threads
Exit status: 0 when the reduced script reproduces and passes, 1 when it does not, 2 for
bad arguments or a script that does not fail as asked.`,
  async run(argv) {
    const { values, positionals } = parseArgs({
      args: argv,
      options: {
        keep: { type: 'string' },
        out: { type: 'string', short: 'o' },
        'max-seconds': { type: 'string' },
        'no-verify': { type: 'boolean' },
      },
      allowPositionals: true,
    });
    if (positionals.length !== 1) throw new UsageError('reduce: expected exactly one FILE.json');
    const file = positionals[0]!;
    const ms = values['max-seconds'];
    if (ms !== undefined && (!/^\d+$/.test(ms) || Number(ms) < 1))
      throw new UsageError(`--max-seconds must be a positive integer, got "${ms}"`);
    if (values.keep !== undefined && values.keep.trim() === '')
      throw new UsageError('--keep must be an errno name (EINVAL, EBUSY, ...) or a non-empty log substring');
    const out = values.out ?? file.replace(/(\.json)?$/, '.reduced.json');
    const raw = readJson(file, 'reduce');
    const tty = process.stderr.isTTY === true;
    let lastLine = 0;
    const res = await reduceScript(raw, {
      keep: values.keep,
      maxSeconds: ms === undefined ? undefined : Number(ms),
      onProgress: (p) => {
        const line = `reduce: ${p.phase}: ${p.steps} steps after ${p.tests} candidates, ${(p.elapsedMs / 1000).toFixed(1)} s`;
        if (tty) process.stderr.write(`\r\x1b[K${line}`);
        else if (p.elapsedMs - lastLine >= 5000) {
          lastLine = p.elapsedMs;
          process.stderr.write(`${line}\n`);
        }
      },
    }).catch((e: Error) => {
      if (e.name === 'ReduceError') throw new UsageError(`reduce: ${file}: ${e.message}`);
      throw e;
    });
    if (tty) process.stderr.write('\r\x1b[K');
    const origin = typeof raw.name === 'string' ? raw.name : file;
    const script = {
      ...res.script,
      name: `reduced from ${origin}`,
      description: `pvmmu reduce ${file}${values.keep ? ` --keep ${JSON.stringify(values.keep)}` : ''}: ${res.originalSteps} -> ${res.steps} steps; kept: ${res.kept}`,
    };
    writeFileSync(out, scriptText(script));
    process.stdout.write(
      `reduce: ${res.originalSteps} -> ${res.steps} steps in ${res.tests} candidates, ${(res.elapsedMs / 1000).toFixed(1)} s (${res.engine})${res.timedOut ? ', stopped by --max-seconds' : ''}\n` +
        `kept: ${res.kept}\nwrote ${out}\n`,
    );
    if (values['no-verify']) return 0;
    const check = await runScript(parseScript(scriptText(script), out));
    const t = totals(check);
    process.stdout.write(`pvmmu script ${out}: ${t.passed} passed, ${t.failed} failed\n`);
    return t.failed === 0 ? 0 : 1;
  },
};

const SWEEP_OWN = {
  seeds: { type: 'string' },
  shard: { type: 'string' },
  out: { type: 'string' },
  jobs: { type: 'string' },
} as const;
/** Run options a sweep cannot share between jobs (files) or sets itself. */
const NOT_IN_SWEEP = ['seed', 'json', 'trace', 'record', 'xen-log', 'guest-log'];

regressCommands.sweep = {
  summary: 'a workload over many seeds and strategies on piscina workers; --shard i/n for CI matrices',
  usage:
    'pvmmu sweep WORKLOAD --seeds 1..1000 [--strategy lazy,unmap-aliases|all] [run options] [--shard i/n] [--out results.jsonl] [--jobs N]',
  help: `One job per (seed, strategy), each a \`pvmmu run\` on its own machine, run in parallel on
piscina worker threads. Every job's \`pvmmu run --json\` object is written as one JSON line
(to --out, or to stdout); at the end a summary per strategy: runs, runs that showed a bug
(by \`pvmmu run\`'s rule: its "bugs" list is not empty) and the worst run (most refused pins).

Options:
  --seeds LIST       N, A..B, or a comma list of those (required), e.g. 1..1000
  --strategy LIST    comma list of lazy, eager, vmap-pages, unmap-aliases, or all [lazy]
  --shard i/n        only shard i of n: job k (in seed-major order) belongs to shard
                     (k mod n) + 1, so shards 1/n..n/n run every job exactly once
  --out FILE         write the JSON lines here (the summary then goes to stdout)
  --jobs N           jobs at a time [the machine's available parallelism]
  run options        as \`pvmmu run\` (--ops, --vcpus, --memory, --kmap-flush, ...), except
                     --seed, --json, --trace, --record, --xen-log, --guest-log
Exit status: 0 when no run showed the bug, 1 when one did, 2 for bad arguments.`,
  async run(argv) {
    const { values, positionals } = parseArgs({
      args: argv,
      options: { ...RUN_OPTIONS, ...SWEEP_OWN },
      allowPositionals: true,
    });
    if (positionals.length !== 1) throw new UsageError(`sweep: expected one WORKLOAD (${WORKLOAD_NAMES.join(', ')})`);
    for (const k of NOT_IN_SWEEP) {
      if ((values as Record<string, unknown>)[k] !== undefined)
        throw new UsageError(`sweep: --${k} is not a sweep option (use --seeds; files are per run: use pvmmu run)`);
    }
    if (values.seeds === undefined) throw new UsageError('sweep: --seeds is required (N, A..B or a comma list)');
    const seeds = parseSeeds(values.seeds);
    const strategies = parseStrategies(values.strategy ?? 'lazy');
    const shard = values.shard === undefined ? undefined : parseShard(values.shard);
    let jobs: number | undefined;
    if (values.jobs !== undefined) {
      if (!/^\d+$/.test(values.jobs) || Number(values.jobs) < 1 || Number(values.jobs) > 256)
        throw new UsageError(`--jobs must be an integer in 1..256, got "${values.jobs}"`);
      jobs = Number(values.jobs);
    }
    const base = runOptionsFrom({ ...values, strategy: strategies[0] }, positionals[0]!);
    validateRunOptions(base);
    const tty = process.stderr.isTTY === true;
    const t0 = performance.now();
    let lastLine = 0;
    const res = await sweep({
      base,
      seeds,
      strategies,
      shard,
      jobs,
      out: values.out,
      onResult: (r, done, total) => {
        if (values.out === undefined) process.stdout.write(`${JSON.stringify(r)}\n`);
        const s = (performance.now() - t0) / 1000;
        const line = `sweep: ${done}/${total} jobs, ${s.toFixed(0)} s, ETA ${((s / done) * (total - done)).toFixed(0)} s`;
        if (tty) process.stderr.write(`\r\x1b[K${line}`);
        else if (done === total || s - lastLine >= 10) {
          lastLine = s;
          process.stderr.write(`${line}\n`);
        }
      },
    });
    if (tty) process.stderr.write('\r\x1b[K');
    const shardText = shard ? ` (shard ${shard.index}/${shard.count})` : '';
    const lines = [`sweep ${positionals[0]}: ${res.jobs.length} jobs${shardText}`];
    lines.push('strategy        runs  showed the bug  worst (seed: refused pins / refusals)');
    for (const t of res.totals) {
      const worst = t.worst ? `seed ${t.worst.seed}: ${t.worst.pinsRefused} / ${t.worst.rejected}` : '-';
      lines.push(`${t.strategy.padEnd(14)}  ${String(t.runs).padStart(4)}  ${String(t.buggy).padStart(14)}  ${worst}`);
    }
    (values.out === undefined ? process.stderr : process.stdout).write(`${lines.join('\n')}\n`);
    return res.totals.some((t) => t.buggy > 0) ? 1 : 0;
  },
};
