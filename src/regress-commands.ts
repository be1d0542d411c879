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
