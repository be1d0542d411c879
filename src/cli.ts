#!/usr/bin/env node
/*
 * The pvmmu command: a thin layer over the facades (Machine, runScript, ...). Each
 * subcommand validates its arguments, says what is accepted when they are wrong, and
 * exits 0 only when everything it checked held.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ScriptError, parseScript } from './script/schema.js';
import { runScript } from './script/run.js';
import { formatJsonLines, formatText, totals } from './script/report.js';
import { type Command, UsageError } from './command.js';
import { workloadCommands } from './commands.js';
import { regressCommands } from './regress-commands.js';

export { UsageError };

const VERSION = '0.1.0';

const commands: Record<string, Command> = {
  script: {
    summary: 'run a scripted guest (raw hypercalls, XTF style) and check its expectations',
    usage: 'pvmmu script FILE.json [--json]',
    help: `Runs the script's steps on real vCPU worker threads against the enforcing hypervisor,
checks every step's "expect", "expect_done", "expect_log" and "expect_value", then runs
the auditor. Prints a line per step (with the hypervisor's log lines under it), then
"N passed, N failed". Exit status 0 only if every expectation held and the audit agreed.

Options:
  --json    one JSON object per step, then a summary object (JSON lines)

The format is described in README.md ("Scripted guests"); examples: test/scripts/*.json.
A run recorded with \`pvmmu run ... --record FILE.json\` replays here with the run's own
results and log lines as its expectations; \`pvmmu reduce FILE.json\` shrinks it.`,
    async run(argv) {
      const { values, positionals } = parseArgs({
        args: argv,
        options: { json: { type: 'boolean' } },
        allowPositionals: true,
      });
      if (positionals.length !== 1) throw new UsageError('script: expected exactly one FILE.json');
      const file = positionals[0]!;
      let text: string;
      try {
        text = readFileSync(file, 'utf8');
      } catch (e) {
        throw new UsageError(`script: cannot read ${file}: ${(e as Error).message}`);
      }
      const script = parseScript(text, file);
      const res = await runScript(script);
      process.stdout.write(`${values.json ? formatJsonLines(res) : formatText(res)}\n`);
      return totals(res).failed === 0 ? 0 : 1;
    },
  },
};

Object.assign(commands, workloadCommands, regressCommands);

function mainHelp(): string {
  const width = Math.max(...Object.keys(commands).map((n) => n.length));
  return `pvmmu ${VERSION} -- a paravirtual MMU emulator: a Xen-style hypervisor thread enforcing PV
page-table rules over Linux-like guest kernels on vCPU worker threads.

Usage: pvmmu COMMAND [options]     (pvmmu help COMMAND for its options)

Commands:
${Object.entries(commands)
  .map(([n, c]) => `  ${n.padEnd(width)}  ${c.summary}`)
  .join('\n')}
  ${'help'.padEnd(width)}  this text, or a command's`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    const sub = name === 'help' ? rest[0] : undefined;
    if (sub !== undefined) {
      const c = commands[sub];
      if (!c) throw new UsageError(`no command "${sub}" (commands: ${Object.keys(commands).join(', ')})`);
      process.stdout.write(`Usage: ${c.usage}\n\n${c.help}\n`);
    } else {
      process.stdout.write(`${mainHelp()}\n`);
    }
    return 0;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const cmd = commands[name];
  if (!cmd)
    throw new UsageError(`unknown command "${name}" (commands: ${Object.keys(commands).join(', ')}; see pvmmu --help)`);
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`Usage: ${cmd.usage}\n\n${cmd.help}\n`);
    return 0;
  }
  return cmd.run(rest);
}

function isMainModule(): boolean {
  const arg = process.argv[1];
  if (arg === undefined) return false;
  try {
    return realpathSync(arg) === fileURLToPath(import.meta.url);
  } catch {
    return false;
  }
}

const isEntry = isMainModule();
if (isEntry) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (e: unknown) => {
      const err = e as Error;
      const known =
        err instanceof UsageError ||
        err instanceof ScriptError ||
        err instanceof TypeError ||
        err instanceof RangeError;
      process.stderr.write(`pvmmu: ${known ? err.message : (err.stack ?? String(err))}\n`);
      process.exitCode = 2;
    },
  );
}
