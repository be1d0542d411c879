/*
 * How a workload run is reported: a readable report of one run, the side-by-side table of
 * strategies that `npm start` prints, and the --json object. Pure formatting: the runner
 * gathers the numbers into a RunSummary; nothing here measures anything.
 */
import { PAGE_SIZE } from './abi/xen.js';
import {
  GUEST_REPORT_KINDS,
  GUEST_REPORT_KIND_NAMES,
  type GuestReport,
  type GuestReportKind,
  WORKLOAD_NEEDS,
  type WorkloadName,
} from './abi/kernel.js';

/**
 * The one summary of a workload run: runOnce fills it, formatSummary and formatComparison
 * read it, and `--json` (and the library's runWorkload, and each line of a sweep) prints it
 * with its derived fields filled in (SummaryJson, below).
 *
 * To add a field: one line here. A field runOnce always fills can be required; one that
 * older producers (or hand-made summaries in tests) may leave out is optional and gets its
 * --json default in summaryJson, which copies every other field as it is.
 */
/** One run. Under --clock virtual it also carries the VirtualSummary's fields (clock, virtualNs, ...). */
export interface RunSummary extends Partial<VirtualSummary> {
  workload: string;
  /** lazy | eager | vmap-pages | unmap-aliases (others are shown as given). */
  strategy: string;
  /** kmap_flush_unused() before pinning. */
  kmapFlush: boolean;
  vcpus: number;
  seed: number;
  /** pae | x86_64 */
  paging: string;
  /** The vCPU scheduler: parallel | det. */
  sched: string;
  /** Workload operations completed. */
  ops: number;
  elapsedMs: number;
  throughputOpsPerSec: number;
  hypercalls: number;
  /** Refused hypercalls (or batch entries), by the hypervisor log's reason key. */
  rejected: { total: number; byReason: Record<string, number> };
  /** The first hypervisor log lines, as Xen prints them. */
  firstXenLines: string[];
  pinsAttempted: number;
  /** Pins Xen refused; when absent, rejected.byReason.pin_error ("Error while pinning mfn"). */
  pinsRefused?: number;
  tlb: { shootdowns: number; ipis: number };
  vmaps: number;
  vunmaps: number;
  /** Most pages held at once by lazily unmapped (or page-referencing) vmaps. */
  lazyPeakPages: number;
  /** The same in bytes (derived: --json fills it). */
  lazyPeakBytes?: number;
  /** XFS blocks read back with a bad checksum. */
  dataErrors: number;
  auditOk: boolean;
  auditProblems?: string[];
  leakedFrames: number;
  /** Linux-style lines from the guest kernel (bad_page, multicall failures, ...). */
  guestReports: string[];
  /** Times a domain reached a frame it does not own (the auditor's isolation check). */
  isolationViolations?: number;
  /** The workload's own counters, summed over vCPUs (shown under "Workload counters"). */
  workloadStats?: Record<string, number>;
  /** The guest kernel's reports as data (the first few, every vCPU's). */
  reports?: GuestReport[];
  /** How many reports of each kind the guest made (all of them, not only those kept). */
  reportCounts?: Partial<Record<GuestReportKind, number>>;
  /** Whether the stray-mapping bug showed up: Xen refused at least one pin (derived). */
  strayMappingBug?: boolean;
  /** What the run showed that is a bug (empty: clean); `pvmmu run` exits 1 when not empty (derived). */
  bugs?: string[];
}

/** The --json form: the same summary with every optional field filled in. */
export type SummaryJson = Required<Omit<RunSummary, keyof VirtualSummary>> & Partial<VirtualSummary>;

/** What the virtual clock measured (src/run.ts virtualSummary). */
export interface VirtualSummary {
  clock: 'virtual';
  /** The cost table's name. */
  costModel: string;
  /** Modelled elapsed ns: the clock of the last vCPU to finish its steps. */
  virtualNs: number;
  /** virtualNs x vCPUs / ops: modelled ns per operation on one vCPU. */
  virtualNsPerOpPerCpu: number;
  opsPerModelledSecond: number;
  /** Turn hand-offs between vCPU threads: what the model cost the host. */
  turnSwitches: number;
  /** Modelled ns per operation by category (src/abi/vclock.ts VCLOCK_CATEGORIES), all vCPUs summed. */
  breakdown: Record<string, number>;
}

/** What each strategy is, in a few words (the names the guest uses). */
export const STRATEGY_DESCRIPTIONS: Readonly<Record<string, string>> = {
  lazy: 'XFS 2007: vunmap deferred to a list, purged in batches',
  eager: 'vunmap at once (the CONFIG_XEN workaround)',
  'vmap-pages': 'vmap holds page references until the lazy vunmap (Chinner)',
  'unmap-aliases': 'lazy vmap purge + vm_unmap_aliases() before pinning (Piggin)',
};

/* ------------------------------------------------------------ validation */

const NUMBER_FIELDS = [
  'vcpus',
  'seed',
  'ops',
  'elapsedMs',
  'hypercalls',
  'pinsAttempted',
  'vmaps',
  'vunmaps',
  'lazyPeakPages',
  'dataErrors',
  'leakedFrames',
  'throughputOpsPerSec',
] as const;
const STRING_FIELDS = ['workload', 'strategy', 'paging', 'sched'] as const;

function checkSummary(s: RunSummary, what: string): void {
  if (s === null || typeof s !== 'object')
    throw new TypeError(`${what}: expected a RunSummary object, got ${String(s)}`);
  const bad = (field: string, want: string, got: unknown) => {
    throw new TypeError(`${what}: RunSummary.${field} must be ${want}, got ${JSON.stringify(got) ?? String(got)}`);
  };
  for (const f of NUMBER_FIELDS)
    if (typeof s[f] !== 'number' || !Number.isFinite(s[f])) bad(f, 'a finite number', s[f]);
  for (const f of STRING_FIELDS) if (typeof s[f] !== 'string') bad(f, 'a string', s[f]);
  if (typeof s.kmapFlush !== 'boolean') bad('kmapFlush', 'a boolean', s.kmapFlush);
  if (typeof s.auditOk !== 'boolean') bad('auditOk', 'a boolean', s.auditOk);
  if (
    !s.rejected ||
    typeof s.rejected.total !== 'number' ||
    !s.rejected.byReason ||
    typeof s.rejected.byReason !== 'object'
  ) {
    bad('rejected', '{ total: number, byReason: { reason: count } }', s.rejected);
  }
  if (!s.tlb || typeof s.tlb.shootdowns !== 'number' || typeof s.tlb.ipis !== 'number') {
    bad('tlb', '{ shootdowns: number, ipis: number }', s.tlb);
  }
  if (!Array.isArray(s.firstXenLines)) bad('firstXenLines', 'an array of strings', s.firstXenLines);
  if (!Array.isArray(s.guestReports)) bad('guestReports', 'an array of strings', s.guestReports);
  if (s.pinsRefused !== undefined && typeof s.pinsRefused !== 'number')
    bad('pinsRefused', 'a number if given', s.pinsRefused);
  if (s.auditProblems !== undefined && !Array.isArray(s.auditProblems))
    bad('auditProblems', 'an array of strings if given', s.auditProblems);
  if (s.isolationViolations !== undefined && typeof s.isolationViolations !== 'number') {
    bad('isolationViolations', 'a number if given', s.isolationViolations);
  }
  if (s.workloadStats !== undefined && (s.workloadStats === null || typeof s.workloadStats !== 'object')) {
    bad('workloadStats', 'an object of counters if given', s.workloadStats);
  }
}

/* ------------------------------------------------------------ numbers */

/** 1234567 -> "1,234,567"; fractions kept to `digits`. */
export function group(n: number, digits = 0): string {
  const [int, frac] = Math.abs(n).toFixed(digits).split('.');
  const g = int!.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return (n < 0 ? '-' : '') + g + (frac ? `.${frac}` : '');
}

/** Pages -> "16.0 MiB" (4 KiB pages). */
export function pagesToMiB(pages: number): string {
  const mib = (pages * PAGE_SIZE) / (1024 * 1024);
  return `${mib === 0 ? '0' : mib < 0.1 ? mib.toFixed(2) : group(mib, 1)} MiB`;
}

function rate(opsPerSec: number): string {
  return opsPerSec < 100 ? opsPerSec.toFixed(1) : group(Math.round(opsPerSec));
}

function duration(ms: number): string {
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(2) : Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(2)} s`;
  return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
}

const plural = (n: number, one: string, many = `${one}s`) => `${group(n)} ${n === 1 ? one : many}`;

/** Pins Xen refused: the explicit count, else the "Error while pinning" log count. */
export function refusedPins(s: RunSummary): number {
  return s.pinsRefused ?? s.rejected.byReason.pin_error ?? 0;
}

function sortedReasons(byReason: Record<string, number>): [string, number][] {
  return Object.entries(byReason)
    .filter(([, n]) => n > 0)
    .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
}

function sortedStats(stats: Record<string, number> | undefined): [string, number][] {
  if (stats === undefined) return [];
  return Object.keys(stats)
    .sort()
    .map((k): [string, number] => [k, stats[k]!])
    .filter(([, v]) => typeof v === 'number' && Number.isFinite(v));
}

function strategyLabel(s: RunSummary): string {
  return s.kmapFlush ? `${s.strategy} +kmap_flush` : s.strategy;
}

/* ------------------------------------------------------------ one run */

/**
 * What the run showed that is a bug, each as "what (count)": refused pins, the guest's
 * bug reports by kind (bad page state, kernel BUG, oops, memtype conflict, ...), data
 * errors, leaked frames, an audit failure, isolation violations. Empty when the run was
 * clean. Derived from the numbers and the reports' kinds, never from log text.
 */
export function bugsShown(s: RunSummary): string[] {
  const out: string[] = [];
  const refused = refusedPins(s);
  if (refused > 0) out.push(`refused pins (${group(refused)})`);
  for (const k of GUEST_REPORT_KIND_NAMES) {
    const n = s.reportCounts?.[k] ?? 0;
    if (n > 0 && GUEST_REPORT_KINDS[k].bug) out.push(`${GUEST_REPORT_KINDS[k].what} (${group(n)})`);
  }
  if (s.dataErrors > 0) out.push(`data errors (${group(s.dataErrors)})`);
  if (s.leakedFrames !== 0) out.push(`leaked frames (${group(s.leakedFrames)})`);
  const iso = s.isolationViolations ?? 0;
  if (!s.auditOk && iso === 0) out.push('audit failure');
  if (iso > 0) out.push(`isolation violations (${group(iso)})`);
  return out;
}

/** The last line of a run's report: what it showed, and the exit status that follows. */
export function exitLine(s: RunSummary): string {
  const bugs = bugsShown(s);
  return bugs.length === 0 ? 'Result: clean (exit 0)' : `Result: the run showed a bug: ${bugs.join(', ')} (exit 1)`;
}

/** The headline of a seed workload (one not about the unmap strategies): its reports. */
function seedVerdict(s: RunSummary): string {
  const shown = GUEST_REPORT_KIND_NAMES.filter((k) => GUEST_REPORT_KINDS[k].bug && (s.reportCounts?.[k] ?? 0) > 0).map(
    (k) => plural(s.reportCounts![k]!, `${GUEST_REPORT_KINDS[k].what} report`),
  );
  if (s.dataErrors > 0) shown.push(`${plural(s.dataErrors, 'data error')}`);
  if (shown.length === 0) return `The bug did not show up: the guest kernel reported nothing wrong.`;
  return `The bug SHOWED UP: ${shown.join(', ')} (the guest kernel's reports are below).`;
}

/** The one plain-words line about the 2007 bug. */
export function verdict(s: RunSummary): string {
  if (WORKLOAD_NEEDS[s.workload as WorkloadName]?.strategyFree) return seedVerdict(s);
  const refused = refusedPins(s);
  if (refused > 0) {
    return (
      `The stray-mapping bug SHOWED UP: Xen refused ${group(refused)} of ${plural(s.pinsAttempted, 'page-table pin')} ` +
      `(page tables still mapped writable by a stray alias: a lazy vmap or an unused kmap).`
    );
  }
  const memtype = s.reportCounts?.memtype ?? 0;
  if (memtype > 0)
    return `Andi Kleen's attribute alias SHOWED UP: ${plural(memtype, 'set_memory_uc call')} met a page still mapped write-back by a stale vmap (conflicting memory types).`;
  if (s.workload === 'pat-alias')
    return `The attribute alias did not show up: ${plural(s.workloadStats?.agpPages ?? 0, 'page')} turned uncached with no write-back alias left.`;
  if (s.pinsAttempted === 0) return 'The stray-mapping bug was not exercised: the run pinned no page tables.';
  const extra = s.dataErrors > 0 ? `, but ${plural(s.dataErrors, 'XFS block')} failed the data checksum` : '';
  return `The stray-mapping bug did not show up: Xen accepted all ${plural(s.pinsAttempted, 'page-table pin')}${extra}.`;
}

/** A multi-line report of one run for a person. */
export function formatSummary(s: RunSummary): string {
  checkSummary(s, 'formatSummary');
  const desc = STRATEGY_DESCRIPTIONS[s.strategy];
  const out: string[] = [];
  if (WORKLOAD_NEEDS[s.workload as WorkloadName]?.strategyFree) {
    out.push(`Workload ${s.workload}`);
    out.push(`  ${plural(s.vcpus, 'vCPU')}, seed ${s.seed}, ${s.paging} paging, ${s.sched} scheduler`);
  } else {
    out.push(`Workload ${s.workload}, strategy ${s.strategy}${desc ? ` (${desc})` : ''}`);
    out.push(
      `  kmap_flush_unused before pins: ${s.kmapFlush ? 'on' : 'off'}; ${plural(s.vcpus, 'vCPU')}, seed ${s.seed}, ` +
        `${s.paging} paging, ${s.sched} scheduler`,
    );
  }
  out.push('');
  out.push(verdict(s));
  out.push('');

  const rows: [string, string][] = [];
  rows.push(['operations', `${group(s.ops)} in ${duration(s.elapsedMs)} (${rate(s.throughputOpsPerSec)} ops/s)`]);
  rows.push(['hypercalls', group(s.hypercalls)]);
  const reasons = sortedReasons(s.rejected.byReason);
  rows.push([
    'refused by Xen',
    s.rejected.total === 0
      ? 'none'
      : `${group(s.rejected.total)} (${reasons.map(([r, n]) => `${r} ${group(n)}`).join(', ') || 'no reason recorded'})`,
  ]);
  const refused = refusedPins(s);
  rows.push(['page-table pins', `${group(s.pinsAttempted)} attempted, ${group(refused)} refused`]);
  rows.push(['TLB shootdowns', `${group(s.tlb.shootdowns)} (${plural(s.tlb.ipis, 'IPI')} to other vCPUs)`]);
  rows.push(['vmap / vunmap', `${group(s.vmaps)} / ${group(s.vunmaps)}`]);
  rows.push(['lazy mappings peak', `${plural(s.lazyPeakPages, 'page')} held (${pagesToMiB(s.lazyPeakPages)})`]);
  rows.push([
    'data checksum errors',
    s.dataErrors === 0
      ? '0'
      : WORKLOAD_NEEDS[s.workload as WorkloadName]?.strategyFree
        ? `${group(s.dataErrors)} (reads of data that is not what was written)`
        : `${group(s.dataErrors)} (XFS blocks read back corrupted)`,
  ]);
  rows.push(['leaked frames', group(s.leakedFrames)]);
  const problems = s.auditProblems ?? [];
  rows.push([
    'audit',
    s.auditOk ? 'ok (frame table agrees with the page tables)' : `FAILED (${plural(problems.length, 'problem')})`,
  ]);
  if (s.clock === 'virtual') {
    const v = s as RunSummary & VirtualSummary;
    rows.push([
      'virtual clock',
      `${duration(v.virtualNs / 1e6)} modelled (${v.costModel}): ${group(Math.round(v.virtualNsPerOpPerCpu))} ns per op per vCPU, ` +
        `${rate(v.opsPerModelledSecond)} ops per modelled second`,
    ]);
    const parts = Object.entries(v.breakdown)
      .filter(([, ns]) => ns > 0)
      .map(([k, ns]) => `${k} ${group(Math.round(ns))}`);
    rows.push(['  ns per op by cost', parts.join(', ') || 'none']);
  }
  const iso = s.isolationViolations ?? 0;
  if (iso > 0) rows.push(['isolation', `VIOLATED ${plural(iso, 'time')} (a domain reached a frame it does not own)`]);
  const w = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) out.push(`  ${k.padEnd(w)}  ${v}`);

  if (s.firstXenLines.length > 0) {
    out.push('', 'First Xen log lines:');
    for (const l of s.firstXenLines) out.push(`  ${l}`);
  }
  if (!s.auditOk && problems.length > 0) {
    out.push('', 'Audit problems:');
    const shown = problems.slice(0, 10);
    for (const p of shown) out.push(`  ${p}`);
    if (problems.length > shown.length) out.push(`  ... and ${group(problems.length - shown.length)} more`);
  }
  const stats = sortedStats(s.workloadStats);
  if (stats.length > 0) {
    out.push('', 'Workload counters:');
    const kw = Math.max(...stats.map(([k]) => k.length));
    for (const [k, v] of stats) out.push(`  ${k.padEnd(kw)}  ${group(v, Number.isInteger(v) ? 0 : 2)}`);
  }
  if (s.guestReports.length > 0) {
    out.push('', 'Guest kernel reports:');
    for (const l of s.guestReports) out.push(`  ${l}`);
    const counts = GUEST_REPORT_KIND_NAMES.filter((k) => (s.reportCounts?.[k] ?? 0) > 0);
    const total = counts.reduce((n, k) => n + s.reportCounts![k]!, 0);
    if (total > 0)
      out.push(
        `  (${plural(total, 'report')} in all: ${counts.map((k) => `${k} ${group(s.reportCounts![k]!)}`).join(', ')})`,
      );
  }
  out.push('', exitLine(s));
  return out.join('\n');
}

/* ------------------------------------------------------------ comparison */

interface Column {
  head: string;
  right: boolean;
  cell(s: RunSummary): string;
}

const LEGEND: [string, string][] = [
  ['refused pins', 'page-table pins Xen refused: a freed page still mapped writable by a lazy alias (the 2007 bug)'],
  ['shootdowns', 'TLB flushes that had to reach other vCPUs'],
  ['IPIs', 'flush requests delivered to other running vCPUs (and waited for)'],
  ['hypercalls', 'calls into the hypervisor'],
  ['ops/s', 'workload operations per second of wall-clock time'],
  ['peak lazy pages', 'most 4 KiB pages held at once by mappings not yet torn down (MiB in brackets)'],
  ['audit', 'hypervisor frame-table audit after the run: ok, or FAILED with the number of problems'],
];

/** The side-by-side table of runs (one row per strategy) with a legend and a verdict line. */
export function formatComparison(rows: RunSummary[]): string {
  if (!Array.isArray(rows) || rows.length === 0) {
    throw new RangeError('formatComparison(rows): rows must be a non-empty array of RunSummary');
  }
  rows.forEach((r, i) => checkSummary(r, `formatComparison row ${i}`));

  // Settings shared by every row go in the title; those that differ become columns.
  const first = rows[0]!;
  const same = <K extends keyof RunSummary>(k: K) => rows.every((r) => r[k] === first[k]);
  const title: string[] = [];
  const varying: Column[] = [];
  const setting = (
    k: 'workload' | 'vcpus' | 'seed' | 'paging' | 'sched' | 'ops',
    text: (v: RunSummary) => string,
    head: string,
  ) => {
    if (same(k)) title.push(text(first));
    else
      varying.push({
        head,
        right: typeof first[k] === 'number',
        cell: (r) => String(k === 'ops' ? group(r.ops) : r[k]),
      });
  };
  setting('workload', (r) => `workload ${r.workload}`, 'workload');
  setting('vcpus', (r) => plural(r.vcpus, 'vCPU'), 'vCPUs');
  setting('seed', (r) => `seed ${r.seed}`, 'seed');
  setting('paging', (r) => `${r.paging} paging`, 'paging');
  setting('sched', (r) => `${r.sched} scheduler`, 'sched');
  setting('ops', (r) => `${group(r.ops)} ops per run`, 'ops');

  const cols: Column[] = [
    { head: 'strategy', right: false, cell: strategyLabel },
    ...varying,
    { head: 'refused pins', right: true, cell: (r) => group(refusedPins(r)) },
    { head: 'shootdowns', right: true, cell: (r) => group(r.tlb.shootdowns) },
    { head: 'IPIs', right: true, cell: (r) => group(r.tlb.ipis) },
    { head: 'hypercalls', right: true, cell: (r) => group(r.hypercalls) },
    { head: 'ops/s', right: true, cell: (r) => rate(r.throughputOpsPerSec) },
    { head: 'peak lazy pages', right: true, cell: (r) => `${group(r.lazyPeakPages)} (${pagesToMiB(r.lazyPeakPages)})` },
    { head: 'audit', right: false, cell: (r) => (r.auditOk ? 'ok' : `FAILED (${(r.auditProblems ?? []).length})`) },
  ];
  const cells = rows.map((r) => cols.map((c) => c.cell(r)));
  const widths = cols.map((c, i) => Math.max(c.head.length, ...cells.map((row) => row[i]!.length)));
  const line = (vals: string[]) =>
    vals
      .map((v, i) => (cols[i]!.right ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();

  const out: string[] = [];
  out.push(`Unmap strategies compared: ${title.join(', ')}`);
  out.push('');
  out.push(line(cols.map((c) => c.head)));
  out.push(line(widths.map((w) => '-'.repeat(w))));
  for (const row of cells) out.push(line(row));
  out.push('');

  const hit = rows.filter((r) => refusedPins(r) > 0).map(strategyLabel);
  const clean = rows.filter((r) => refusedPins(r) === 0 && r.pinsAttempted > 0).map(strategyLabel);
  if (hit.length > 0) {
    out.push(
      `Stray-mapping bug showed up with: ${hit.join(', ')}.${clean.length ? ` Not with: ${clean.join(', ')}.` : ''}`,
    );
  } else if (clean.length > 0) {
    out.push(`Stray-mapping bug did not show up with any strategy (${clean.join(', ')}).`);
  } else {
    out.push('Stray-mapping bug not exercised: no run pinned a page table.');
  }
  const failed = rows.filter((r) => !r.auditOk).map(strategyLabel);
  if (failed.length > 0) out.push(`AUDIT FAILED for: ${failed.join(', ')}.`);
  const corrupt = rows.filter((r) => r.dataErrors > 0).map((r) => `${strategyLabel(r)} (${group(r.dataErrors)})`);
  if (corrupt.length > 0) out.push(`Data checksum errors with: ${corrupt.join(', ')}.`);

  out.push('', 'Columns:');
  const lw = Math.max(...LEGEND.map(([k]) => k.length));
  for (const [k, v] of LEGEND) out.push(`  ${k.padEnd(lw)}  ${v}`);
  return out.join('\n');
}

/* ------------------------------------------------------------ --json */

/** The --json object: a copy of the summary (every field, known or not), derived fields filled in. */
export function summaryJson(s: RunSummary): SummaryJson {
  checkSummary(s, 'summaryJson');
  const j = structuredClone(s) as SummaryJson;
  const byReason: Record<string, number> = {};
  for (const k of Object.keys(s.rejected.byReason).sort()) byReason[k] = s.rejected.byReason[k]!;
  j.rejected = { total: s.rejected.total, byReason };
  j.pinsRefused = refusedPins(s);
  j.lazyPeakBytes = s.lazyPeakPages * PAGE_SIZE;
  j.auditProblems = [...(s.auditProblems ?? [])];
  j.isolationViolations = s.isolationViolations ?? 0;
  j.workloadStats = Object.fromEntries(sortedStats(s.workloadStats));
  j.strayMappingBug = j.pinsRefused > 0;
  j.reports ??= [];
  j.reportCounts ??= {};
  j.bugs = bugsShown(s);
  return j;
}
