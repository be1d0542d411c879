/*
 * `npm run bench` / `pvmmu bench [SUITE...]`: run the named suites (default: all) and
 * print one table per suite, labelled with the machine. Ratios measured side by side in
 * the same run are the headline; absolute figures hold for this machine only.
 */
import { cpus } from 'node:os';
import { hypercallSuite, type Row } from './hypercall.js';

export const SUITES: Record<string, (opts: { quick?: boolean; progress?: (w: string) => void }) => Promise<Row[]>> = {
  hypercall: hypercallSuite,
};

export function machineLabel(): string {
  const c = cpus();
  return `${c[0]?.model.trim() ?? 'unknown CPU'}, ${c.length} cores, Node ${process.version}`;
}

export function formatTable(title: string, rows: Row[]): string {
  const w = Math.max(...rows.map((r) => r.case.length));
  const lines = [title, '-'.repeat(title.length)];
  for (const r of rows) {
    const v = r.value >= 100 ? r.value.toFixed(0) : r.value >= 10 ? r.value.toFixed(1) : r.value.toFixed(2);
    lines.push(`${r.case.padEnd(w)}  ${v.padStart(8)} ${r.unit.padEnd(14)}${r.note ? '  ' + r.note : ''}`);
  }
  return lines.join('\n');
}

export async function runBench(names: string[], opts: { quick?: boolean; json?: boolean } = {}): Promise<Record<string, Row[]>> {
  const chosen = names.length === 0 ? Object.keys(SUITES) : names;
  for (const n of chosen) {
    if (!SUITES[n]) throw new RangeError(`no bench suite "${n}" (suites: ${Object.keys(SUITES).join(', ')})`);
  }
  const out: Record<string, Row[]> = {};
  const tty = process.stderr.isTTY;
  for (const n of chosen) {
    const progress = (what: string) => {
      if (tty) process.stderr.write(`\r\x1b[K[${n}] ${what}`);
    };
    out[n] = await SUITES[n]!({ ...opts, progress });
    if (tty) process.stderr.write('\r\x1b[K');
    if (!opts.json) process.stdout.write(formatTable(`suite ${n} -- ${machineLabel()}`, out[n]!) + '\n\n');
  }
  if (opts.json) process.stdout.write(JSON.stringify({ machine: machineLabel(), suites: out }, null, 2) + '\n');
  return out;
}

const isMain = process.argv[1] !== undefined && import.meta.url.endsWith(process.argv[1].replace(/^.*\/dist\//, '/dist/'));
if (isMain) {
  const args = process.argv.slice(2);
  runBench(args.filter((a) => !a.startsWith('--')), { quick: args.includes('--quick'), json: args.includes('--json') }).catch((e: unknown) => {
    process.stderr.write(`bench: ${(e as Error).message}\n`);
    process.exitCode = 2;
  });
}
