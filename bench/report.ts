/*
 * Bench results: the Row every suite returns, the machine/commit/command stamp, and the
 * three files a run leaves in bench/results/<timestamp>/ -- results.json (everything),
 * results.csv (one line per row, the stamp repeated so each line stands alone) and
 * report.html (self-contained: inline CSS, inline SVG from bench/charts.ts, no script, no
 * font, no external reference), with the headline ratios computed from the rows.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { arch, cpus, platform, release, totalmem } from 'node:os';
import { join } from 'node:path';
import { barChart, escapeXml, formatNumber, lineChart, type LineSeries, stackedBarChart } from './charts.js';

/**
 * One measured figure. `case`, `value`, `unit`, `note` are what every suite gives (and what
 * the text table prints). The optional fields place the row on a line chart: rows with
 * `series` and `x` are plotted as y = (`y` ?? `value`) against x, one line per series,
 * one chart per `group`; rows sharing (group, series, x) -- e.g. one per worker -- are
 * averaged. Series of one group are alternatives compared in the headline ratios
 * (strategies); different groups are never compared with each other.
 */
export interface Row {
  case: string;
  value: number;
  unit: string;
  note?: string;
  /** The line this row belongs to (a strategy, say "eager"). */
  series?: string;
  /** The chart the line is drawn on; rows without one share a single chart. */
  group?: string;
  /** Where on the x axis (vCPUs, threads). */
  x?: number;
  /** What x counts, e.g. "vCPUs" (the first row of a chart names its axis). */
  xLabel?: string;
  /** The figure to plot when `value` is not the cost per op (e.g. value is us per test). */
  y?: number;
  yUnit?: string;
  /** The worker that measured the row, when a suite reports per worker. */
  worker?: number;
  /**
   * A part of a breakdown (e.g. "ipi"): rows with `stack` are drawn as stacked bars, one
   * chart per `group`, one bar per `x`, the row's value its segment. They take no `series`.
   */
  stack?: string;
}

/** What runBench passes every suite. */
export interface SuiteOptions {
  quick?: boolean;
  /** Tell the user what is running (shown on a TTY only). */
  progress?: (what: string) => void;
  /** Suite parameters from the command line (--name value), validated by the suite. */
  params?: Readonly<Record<string, string>>;
  /** A line saying what the suite measured and how: printed above its table, kept in the results. */
  describe?: (line: string) => void;
}

export interface MachineInfo {
  cpuModel: string;
  cores: number;
  node: string;
  os: string;
  memoryGiB: number;
}

export interface SuiteResult {
  rows: Row[];
  notes: string[];
}

export interface BenchResults {
  schema: 'pvmmu-bench/1';
  startedAt: string;
  finishedAt: string;
  machine: MachineInfo;
  /** `git rev-parse --short HEAD`, or "unknown" outside a checkout. */
  commit: string;
  /** The exact command line, shell-quoted. */
  command: string;
  options: { quick: boolean; params: Record<string, string> };
  suites: Record<string, SuiteResult>;
}

/* ------------------------------------------------------------ the stamp */

export function machineInfo(): MachineInfo {
  const c = cpus();
  return {
    cpuModel: c[0]?.model.trim() || 'unknown CPU',
    cores: c.length,
    node: process.version,
    os: `${platform()} ${release()} ${arch()}`,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
  };
}

/** The short commit of the checkout at `cwd`, or "unknown". */
export function gitCommit(cwd: string = process.cwd()): string {
  try {
    const out = execFileSync('git', ['rev-parse', '--short', 'HEAD'], {
      cwd,
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 5000,
    });
    const s = out.toString().trim();
    return /^[0-9a-f]{4,40}$/.test(s) ? s : 'unknown';
  } catch {
    return 'unknown';
  }
}

/** POSIX-shell quoting of one word. */
export function shellQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * This process's command line as typed, as far as Node keeps it: argv[0] as given
 * (process.argv0, e.g. "node"), Node's own flags, the script (resolved by Node) and the args.
 */
export function commandLine(
  argv: readonly string[] = process.argv,
  execArgv: readonly string[] = process.execArgv,
  argv0: string = process.argv0,
): string {
  const [first, ...rest] = argv;
  const bin = first === undefined ? argv0 : first === process.execPath ? argv0 : first;
  return [bin, ...execArgv, ...rest].map(shellQuote).join(' ');
}

/** A directory name for a run started at `d`: 2025-01-31T12-34-56Z. */
export function timestampName(d: Date): string {
  return d
    .toISOString()
    .replace(/\.\d+Z$/, 'Z')
    .replace(/:/g, '-');
}

/* ---------------------------------------------------------------- files */

/** Write results.json, results.csv and report.html under baseDir/<timestamp>/; return that dir. */
export function writeResults(results: BenchResults, baseDir: string): string {
  const name = timestampName(new Date(results.startedAt));
  let dir = join(baseDir, name);
  for (let i = 2; existsSync(dir); i++) dir = join(baseDir, `${name}-${i}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'results.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join(dir, 'results.csv'), toCsv(results));
  writeFileSync(join(dir, 'report.html'), renderReportHtml(results));
  return dir;
}

export const CSV_COLUMNS = [
  'suite',
  'case',
  'value',
  'unit',
  'series',
  'group',
  'x',
  'x_label',
  'y',
  'y_unit',
  'worker',
  'note',
  'commit',
  'started_at',
  'cpu_model',
  'cores',
  'node',
  'os',
  'command',
] as const;

/** One CSV field (RFC 4180 quoting; non-finite numbers and absent values are empty). */
export function csvField(v: string | number | undefined): string {
  if (v === undefined) return '';
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : '';
  return /[",\r\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

export function toCsv(results: BenchResults): string {
  const m = results.machine;
  const lines = [CSV_COLUMNS.join(',')];
  for (const [suite, { rows }] of Object.entries(results.suites)) {
    for (const r of rows) {
      const fields: Array<string | number | undefined> = [
        suite,
        r.case,
        r.value,
        r.unit,
        r.series,
        r.group,
        r.x,
        r.xLabel,
        r.y,
        r.yUnit,
        r.worker,
        r.note,
        results.commit,
        results.startedAt,
        m.cpuModel,
        m.cores,
        m.node,
        m.os,
        results.command,
      ];
      lines.push(fields.map(csvField).join(','));
    }
  }
  return `${lines.join('\r\n')}\r\n`;
}

/* ------------------------------------------------------- chart data + ratios */

interface LineGroup {
  name: string;
  xLabel: string;
  yLabel: string;
  /** series -> x -> [sum, count] */
  series: Map<string, Map<number, [number, number]>>;
}

/** The rows that go on line charts, grouped and averaged. Empty when none. */
export function lineGroups(rows: readonly Row[]): LineGroup[] {
  const groups = new Map<string, LineGroup>();
  for (const r of rows) {
    if (r.series === undefined || r.x === undefined) continue;
    const y = r.y ?? r.value;
    if (!Number.isFinite(y) || !Number.isFinite(r.x)) continue;
    const key = r.group ?? '';
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { name: key, xLabel: r.xLabel ?? 'x', yLabel: r.yUnit ?? r.unit, series: new Map() }));
    let s = g.series.get(r.series);
    if (!s) g.series.set(r.series, (s = new Map()));
    const acc = s.get(r.x) ?? [0, 0];
    acc[0] += y;
    acc[1] += 1;
    s.set(r.x, acc);
  }
  return [...groups.values()];
}

function meanAt(s: Map<number, [number, number]>, x: number): number | undefined {
  const a = s.get(x);
  return a ? a[0] / a[1] : undefined;
}

const ratioText = (r: number): string => `${r >= 10 ? r.toFixed(1) : r.toFixed(2)}x`;
const xText = (x: number, label: string): string =>
  `${formatNumber(x)} ${x === 1 && label.endsWith('s') ? label.slice(0, -1) : label}`;

/**
 * The headline ratios of a suite, computed from its rows:
 *  - per chart group with several series: at the largest x they share, each series against
 *    the cheapest ("eager 24.4x lazy at 8 vCPUs");
 *  - per series measured at several x: cost at the largest x over the smallest
 *    ("eager 4.80x from 1 vCPU to 8 vCPUs");
 *  - rows off the charts whose note states a ratio ("1.31x the floor ..."), verbatim.
 */
export function headlineRatios(rows: readonly Row[]): string[] {
  const out: string[] = [];
  for (const g of lineGroups(rows)) {
    const prefix = g.name ? `${g.name}: ` : '';
    const names = [...g.series.keys()];
    if (names.length >= 2) {
      const shared = [...g.series.values()]
        .map((s) => new Set(s.keys()))
        .reduce((a, b) => new Set(Array.from(a).filter((x) => b.has(x))));
      if (shared.size > 0) {
        const x = Math.max(...shared);
        const at = names.map((n) => ({ n, y: meanAt(g.series.get(n)!, x)! })).sort((a, b) => a.y - b.y);
        const base = at[0]!;
        if (base.y > 0) {
          for (const o of at.slice(1).reverse())
            out.push(`${prefix}${o.n} ${ratioText(o.y / base.y)} ${base.n} at ${xText(x, g.xLabel)}`);
        }
      }
    }
    for (const [n, s] of g.series) {
      if (s.size < 2) continue;
      const xs = [...s.keys()].sort((a, b) => a - b);
      const lo = meanAt(s, xs[0]!)!;
      const hi = meanAt(s, xs[xs.length - 1]!)!;
      if (lo > 0) {
        const who = names.length > 1 || !g.name ? `${n} ` : '';
        out.push(
          `${prefix}${who}${ratioText(hi / lo)} from ${xText(xs[0]!, g.xLabel)} to ${xText(xs[xs.length - 1]!, g.xLabel)}`,
        );
      }
    }
  }
  for (const r of rows) {
    if (r.series === undefined && r.note && /(^|\s)\d+(\.\d+)?x\b/.test(r.note)) out.push(`${r.case}: ${r.note}`);
  }
  return out;
}

/** The stacked breakdown charts of a suite's rows with `stack` (one per group). */
export function stackedCharts(rows: readonly Row[]): string[] {
  const groups = new Map<string, Row[]>();
  for (const r of rows) {
    if (r.stack === undefined || r.x === undefined || !Number.isFinite(r.value)) continue;
    const key = r.group ?? '';
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  return [...groups].map(([name, rs]) => {
    const categories = [...new Set(rs.map((r) => r.stack!))];
    const xs = [...new Set(rs.map((r) => r.x!))].sort((a, b) => a - b);
    const label = rs[0]!.xLabel ?? 'x';
    return stackedBarChart({
      title: name,
      valueLabel: rs[0]!.unit,
      categories,
      width: 520,
      bars: xs.map((x) => ({
        label: xText(x, label),
        parts: categories.map((c) => rs.find((r) => r.x === x && r.stack === c)?.value ?? 0),
      })),
    });
  });
}

/** The SVG charts of one suite: line charts when rows span several x, else bar charts; stacked breakdowns after. */
export function suiteCharts(suite: string, all: readonly Row[]): string[] {
  const stacked = stackedCharts(all);
  const rows = all.filter((r) => r.stack === undefined);
  return [...plainCharts(suite, rows), ...stacked];
}

function plainCharts(suite: string, rows: readonly Row[]): string[] {
  if (rows.length === 0) return [];
  const groups = lineGroups(rows);
  const xsOf = (g: LineGroup): Set<number> => new Set([...g.series.values()].flatMap((s) => [...s.keys()]));
  if (groups.length > 0 && groups.some((g) => xsOf(g).size >= 2)) {
    // One group: one wide chart; two: side by side; more: small multiples, three to a row.
    const size =
      groups.length > 2
        ? { width: 340, height: 250 }
        : groups.length === 2
          ? { width: 520, height: 340 }
          : { width: 720, height: 400 };
    return groups.map((g) => {
      const series: LineSeries[] = [...g.series].map(([name, s]) => ({
        name,
        points: [...s].map(([x, [sum, n]]) => ({ x, y: sum / n })),
      }));
      return lineChart({
        title: g.name || `${suite}: ${g.yLabel} vs ${g.xLabel}`,
        xLabel: g.xLabel,
        yLabel: g.yLabel,
        series,
        ...size,
      });
    });
  }
  if (groups.length > 0) {
    // One x only: a bar per (group, series), with the plotted figure.
    const byUnit = new Map<string, Array<{ label: string; value: number }>>();
    for (const g of groups) {
      for (const [name, s] of g.series) {
        const [sum, n] = [...s.values()][0]!;
        const label = g.name ? (g.series.size > 1 ? `${g.name} (${name})` : g.name) : name;
        const list = byUnit.get(g.yLabel) ?? [];
        list.push({ label, value: sum / n });
        byUnit.set(g.yLabel, list);
      }
    }
    return [...byUnit].map(([unit, bars]) =>
      barChart({ title: `${suite}: ${unit}`, valueLabel: unit, bars, width: 520 }),
    );
  }
  // Plain rows: one bar chart per unit family ("ns/call" and "ns/round trip" share "ns").
  const byUnit = new Map<string, Row[]>();
  for (const r of rows) {
    if (!Number.isFinite(r.value)) continue;
    const fam = r.unit.split('/')[0]!.trim() || r.unit;
    byUnit.set(fam, [...(byUnit.get(fam) ?? []), r]);
  }
  return [...byUnit].map(([fam, rs]) => {
    const units = new Set(rs.map((r) => r.unit));
    const unit = units.size === 1 ? rs[0]!.unit : fam;
    return barChart({
      width: 520,
      title: `${suite}: ${unit}`,
      valueLabel: unit,
      bars: rs.map((r) => ({ label: r.case, value: r.value, ...(units.size > 1 ? { unit: r.unit } : {}) })),
    });
  });
}

/* ------------------------------------------------------------------ HTML */

const CSS = `
:root { color-scheme: light; }
body { margin: 0; padding: 24px 32px 40px; background: #f6f7f9; color: #1d1d1f;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 10px; }
.sub { color: #555; margin: 0 0 16px; }
dl.stamp { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0 0 20px;
  background: #fff; border: 1px solid #dcdfe4; border-radius: 8px; padding: 12px 16px; }
dl.stamp dt { color: #555; font-weight: 600; }
dl.stamp dd { margin: 0; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px;
  overflow-wrap: anywhere; }
section { background: #fff; border: 1px solid #dcdfe4; border-radius: 8px; padding: 16px 20px; margin: 0 0 20px; }
section.headlines ul { margin: 0; padding-left: 20px; }
section.headlines li { margin: 2px 0; }
.ratio { font-weight: 600; }
.notes { color: #444; margin: 0 0 12px; padding-left: 18px; }
.charts { display: flex; flex-wrap: wrap; gap: 14px; margin: 0 0 16px; }
.charts svg { border: 1px solid #e6e8eb; border-radius: 6px; max-width: 100%; height: auto; flex: none; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 10px; border-bottom: 1px solid #eceef1; vertical-align: top; }
th { background: #f1f3f6; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.unit { white-space: nowrap; color: #444; }
td.note { color: #555; }
tr:nth-child(even) td { background: #fafbfc; }
footer { color: #666; font-size: 12px; }
`;

/** The table value text, as formatTable prints it. */
export function formatValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
}

function suiteTable(rows: readonly Row[]): string {
  const head = '<tr><th>case</th><th>value</th><th>unit</th><th>note</th></tr>';
  const body = rows
    .map(
      (r) =>
        `<tr><td>${escapeXml(r.case)}</td><td class="num">${escapeXml(formatValue(r.value))}</td>` +
        `<td class="unit">${escapeXml(r.unit)}</td><td class="note">${escapeXml(r.note ?? '')}</td></tr>`,
    )
    .join('\n');
  return `<table>\n<thead>${head}</thead>\n<tbody>\n${body}\n</tbody>\n</table>`;
}

export function renderReportHtml(results: BenchResults): string {
  const m = results.machine;
  const suites = Object.entries(results.suites);
  const headlines = suites.flatMap(([name, s]) => headlineRatios(s.rows).map((h) => ({ name, h })));
  const secs = (Date.parse(results.finishedAt) - Date.parse(results.startedAt)) / 1000;
  const stamp: Array<[string, string]> = [
    ['machine', `${m.cpuModel}, ${m.cores} cores, ${m.memoryGiB} GiB`],
    ['node / os', `${m.node} on ${m.os}`],
    ['commit', results.commit],
    ['command', results.command],
    ['started', `${results.startedAt} (${Number.isFinite(secs) ? secs.toFixed(1) : '?'} s)`],
  ];
  const parts: string[] = [
    '<!doctype html>',
    '<html lang="en">',
    '<head>',
    '<meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    `<title>pvmmu bench, ${escapeXml(results.startedAt)}</title>`,
    `<style>${CSS}</style>`,
    '</head>',
    '<body>',
    '<h1>pvmmu bench</h1>',
    '<p class="sub">Ratios measured side by side in the same run are the headline; absolute figures hold for this machine only.</p>',
    '<dl class="stamp">',
    ...stamp.map(([k, v]) => `<dt>${escapeXml(k)}</dt><dd>${escapeXml(v)}</dd>`),
    '</dl>',
    '<section class="headlines">',
    '<h2>Headline ratios</h2>',
    headlines.length
      ? '<ul>\n' +
        headlines
          .map(
            ({ name, h }) =>
              `<li><b>${escapeXml(name)}</b>: ${escapeXml(h).replace(/(\d+(?:\.\d+)?x)\b/, '<span class="ratio">$1</span>')}</li>`,
          )
          .join('\n') +
        '\n</ul>'
      : '<p>No ratios: the suites run did not measure comparable figures side by side.</p>',
    '</section>',
  ];
  for (const [name, s] of suites) {
    parts.push(`<section class="suite" id="suite-${escapeXml(name)}">`, `<h2>suite ${escapeXml(name)}</h2>`);
    if (s.notes.length) parts.push('<ul class="notes">', ...s.notes.map((n) => `<li>${escapeXml(n)}</li>`), '</ul>');
    if (s.rows.length) {
      let charts: string[];
      try {
        charts = suiteCharts(name, s.rows);
      } catch (e) {
        charts = [];
        parts.push(`<p class="notes">No chart: ${escapeXml((e as Error).message)}</p>`);
      }
      if (charts.length) parts.push('<div class="charts">', ...charts, '</div>');
      parts.push(suiteTable(s.rows));
    } else {
      parts.push('<p>No rows.</p>');
    }
    parts.push('</section>');
  }
  parts.push(
    '<footer>Written by bench/report.ts; results.json and results.csv beside this file hold the same rows.</footer>',
    '</body>',
    '</html>',
    '',
  );
  return parts.join('\n');
}
