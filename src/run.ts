/*
 * `pvmmu run WORKLOAD`: one workload on one guest domain under the enforcing hypervisor,
 * from options to a RunSummary. Builds the machine and the domain, boots the guest
 * kernel on its vCPUs, runs the steps (showing progress on a TTY), shuts the workload
 * down, audits the frame table, checks that nothing leaked, and destroys the domain.
 */
import { type PagingMode, PAGING_MODES, PAGE_SIZE } from './abi/xen.js';
import { writeFile } from 'node:fs/promises';
import { Guest, type GuestCpuRun, type GuestCpuStats } from './guest.js';
import { scriptText } from './script/text.js';
import { loadCostModel } from './costmodel.js';
import { MAX_VCPUS_PER_DOMAIN } from './abi/layout.js';
import { VCLOCK_CATEGORIES } from './abi/vclock.js';
import { Machine } from './machine.js';
import { Progress } from './progress.js';
import { TraceWriter, writeTrace } from './trace.js';
import { NameTable, TraceBuffer } from './abi/trace.js';
import type { RunSummary, VirtualSummary } from './summary.js';
import type { XenLogRecord } from './abi/control.js';
import {
  DCACHE_KINDS,
  type DcacheKind,
  GUEST_REPORT_KINDS,
  GUEST_REPORT_KIND_NAMES,
  type GuestReport,
  type GuestReportKind,
  STRATEGIES,
  type Strategy,
  WORKLOAD_NAMES,
  WORKLOAD_NEEDS,
  type WorkloadName,
} from './abi/kernel.js';

export interface RunOptions {
  workload: string;
  strategy: Strategy;
  kmapFlush: boolean;
  vcpus: number;
  memoryBytes: number;
  /** pae: bytes of the domain's memory above the direct map (highmem); 0 = none. */
  highmemBytes: number;
  highpte: boolean;
  paging: PagingMode;
  dirBlockBytes: number;
  files: number;
  ops: number;
  seed: number;
  sched: 'parallel' | 'det';
  /** false only for the stray-write demonstration. */
  enforce: boolean;
  /** Show a progress bar on a TTY. */
  progress?: boolean;
  /** Write a Chrome trace-event file here (opens in Perfetto). */
  trace?: string;
  /** Extra options for the workload (e.g. vmap-cycle's warm-up). */
  workloadOptions?: Record<string, unknown>;
  /** Write every hypervisor log line of the run here. */
  xenLog?: string;
  /** Write every guest printk line of the run here. */
  guestLog?: string;
  /** Record the run's hypercalls here as a `pvmmu script`. */
  record?: string;
  /** flush_dcache_page's cache: pipt (x86, the default) or aliasing (ARM VIPT). */
  dcache?: DcacheKind;
  /** page_mapping() is NULL for slab pages (the 2.6.22 SLUB fix; default on). */
  slubFix?: boolean;
  /** unmap-aliases: vm_unmap_aliases() before pinning (default true; false: 2.6.28 before Jeremy's call). */
  aliasesBeforePin?: boolean;
  /** XFS directory entry size in bytes: a multiple of 8, 32 up to the block's room (default 32). */
  dirEntryBytes?: number;
  /** XFS: every file name this long (default: as short as the index allows, 17..21). */
  nameLen?: number;
  /** XFS: xfsbufd period in centisecs, 50..3000 (fs.xfs.xfsbufd_centisecs; default 100). */
  xfsbufdPeriod?: number;
  /** XFS: a_list entries above which a vmap purges first, 0..65536 (default 64). */
  purgeThreshold?: number;
  /** XFS: shrink_slab every N steps of the mount's vCPU, 0..1000000 (default 0: only under pressure). */
  shrinkEvery?: number;
  /** wall (default) or virtual: the modelled machine's time (det scheduler only). */
  clock?: 'wall' | 'virtual';
  /** --clock virtual: the cost table, a builtin name or a JSON file [default-2008]. */
  costModel?: string;
}

export const DEFAULT_RUN: RunOptions = {
  workload: 'xfs-dirscan',
  strategy: 'lazy',
  kmapFlush: true,
  vcpus: 2,
  memoryBytes: 256 * 2 ** 20,
  highmemBytes: 0,
  highpte: false,
  paging: 'pae',
  dirBlockBytes: 65536,
  files: 20000,
  ops: 4000,
  seed: 1,
  sched: 'det',
  enforce: true,
};

const MiB = 2 ** 20;

/** Check options; every error names the option and what it accepts. */
export function validateRunOptions(o: RunOptions): void {
  if (!(WORKLOAD_NAMES as readonly string[]).includes(o.workload))
    throw new RangeError(`unknown workload "${o.workload}" (workloads: ${WORKLOAD_NAMES.join(', ')})`);
  if (!STRATEGIES.includes(o.strategy))
    throw new RangeError(`--strategy must be one of ${STRATEGIES.join(', ')}, got "${o.strategy}"`);
  if (!PAGING_MODES.includes(o.paging))
    throw new RangeError(`--paging must be one of ${PAGING_MODES.join(', ')}, got "${o.paging}"`);
  const maxVcpus = o.clock === 'virtual' ? MAX_VCPUS_PER_DOMAIN : 16;
  if (!Number.isInteger(o.vcpus) || o.vcpus < 1 || o.vcpus > maxVcpus)
    throw new RangeError(
      `--vcpus must be an integer in 1..${maxVcpus}${o.clock === 'virtual' ? '' : ' (1..64 with --clock virtual)'}, got ${o.vcpus}`,
    );
  if (o.clock !== undefined && o.clock !== 'wall' && o.clock !== 'virtual')
    throw new RangeError(`--clock must be wall or virtual, got "${o.clock}"`);
  if (o.clock === 'virtual' && o.sched !== 'det')
    throw new RangeError('--clock virtual runs on the det scheduler: leave out --sched or give --sched det');
  if (o.costModel !== undefined && o.clock !== 'virtual') throw new RangeError('--cost-model is for --clock virtual');
  if (
    !Number.isInteger(o.memoryBytes) ||
    o.memoryBytes < 32 * MiB ||
    o.memoryBytes > 2048 * MiB ||
    o.memoryBytes % MiB !== 0
  ) {
    throw new RangeError(`--memory must be a whole number of MiB in 32M..2G, got ${o.memoryBytes} bytes`);
  }
  if (o.paging === 'x86_64' && o.highmemBytes > 0)
    throw new RangeError('--highmem is for --paging pae only (x86_64 has no highmem)');
  if (o.highmemBytes < 0 || o.highmemBytes > o.memoryBytes / 2)
    throw new RangeError('--highmem must be at most half of --memory');
  if (![4096, 8192, 16384, 32768, 65536].includes(o.dirBlockBytes))
    throw new RangeError(`--dir-block must be one of 4K, 8K, 16K, 32K, 64K, got ${o.dirBlockBytes}`);
  if (!Number.isInteger(o.files) || o.files < 1 || o.files > 10_000_000)
    throw new RangeError(`--files must be an integer in 1..10000000, got ${o.files}`);
  if (!Number.isInteger(o.ops) || o.ops < 1 || o.ops > 100_000_000)
    throw new RangeError(`--ops must be an integer in 1..100000000, got ${o.ops}`);
  if (!Number.isSafeInteger(o.seed) || o.seed < 0)
    throw new RangeError(`--seed must be a non-negative integer, got ${o.seed}`);
  if (o.sched !== 'parallel' && o.sched !== 'det')
    throw new RangeError(`--sched must be parallel or det, got "${o.sched}"`);
  if (o.dcache !== undefined && !DCACHE_KINDS.includes(o.dcache))
    throw new RangeError(`--dcache must be one of ${DCACHE_KINDS.join(', ')}, got "${o.dcache}"`);
  validateXfsOptions(o);
}

/** Entries of `entryBytes` in a directory block: after the 16-byte header and 8-byte tail. */
const DIR_ROOM = (blockBytes: number): number => blockBytes - 24;

/** The XFS thread's options (guest/fs/xfs/backing.ts has the same arithmetic). */
function validateXfsOptions(o: RunOptions): void {
  const int = (v: number | undefined, name: string, lo: number, hi: number, what = ''): void => {
    if (v !== undefined && (!Number.isInteger(v) || v < lo || v > hi))
      throw new RangeError(`--${name} must be an integer in ${lo}..${hi}${what}, got ${v}`);
  };
  if (o.aliasesBeforePin === false && o.strategy !== 'unmap-aliases')
    throw new RangeError(
      `--aliases-before-pin off is for --strategy unmap-aliases (the vm_unmap_aliases() call it removes), got --strategy ${o.strategy}`,
    );
  const room = DIR_ROOM(o.dirBlockBytes);
  const maxEntry = room - (room % 8);
  if (o.dirEntryBytes !== undefined && (!Number.isInteger(o.dirEntryBytes) || o.dirEntryBytes % 8 !== 0))
    throw new RangeError(`--dir-entry-bytes must be a multiple of 8 in 32..${maxEntry}, got ${o.dirEntryBytes}`);
  int(o.dirEntryBytes, 'dir-entry-bytes', 32, maxEntry, ` (a multiple of 8 that fits a ${o.dirBlockBytes}-byte block)`);
  const entry = o.dirEntryBytes ?? 32;
  const minName = 2 + Math.max(6, String(Math.max(0, o.files - 1)).length) + 1 + 8;
  int(
    o.nameLen,
    'name-len',
    minName,
    Math.min(255, entry - 11),
    ` ("f-<index>-<hash>" of ${o.files} files needs ${minName}; a ${entry}-byte entry holds ${Math.min(255, entry - 11)})`,
  );
  int(o.xfsbufdPeriod, 'xfsbufd-period', 50, 3000, ' centisecs (fs.xfs.xfsbufd_centisecs)');
  int(o.purgeThreshold, 'purge-threshold', 0, 65536, ' a_list entries');
  int(o.shrinkEvery, 'shrink-every', 0, 1_000_000, ' steps');
}

function sum(stats: GuestCpuStats[], f: (s: GuestCpuStats) => number): number {
  return stats.reduce((n, s) => n + f(s), 0);
}

/** What a run produced: the summary, and the first hypervisor log records (for the log). */
export interface RunResult {
  summary: RunSummary;
  xenLog: XenLogRecord[];
  /** Hypervisor log lines written in all, and how many went to --xen-log. */
  xenLogLines: number;
  xenLogWritten?: number;
  /** Guest printk lines printed in all, and how many went to --guest-log. */
  guestLogLines: number;
  guestLogWritten?: number;
  /** --record: the steps written, and hypercalls a script could not express. */
  recorded?: { steps: number; skipped: number; unnamed: number };
}

const LOG_KEEP = 20;
/** Reports kept in a summary, and the report lines shown as guestReports. */
const REPORTS_KEEP = 24;
const GUEST_REPORT_LINES = 80;
/** Informational reports (hypercall failures, data checks, warnings) fill no more than this. */
const GUEST_INFO_LINES = 12;

/**
 * The lines of the first reports, whole reports only: bug reports up to GUEST_REPORT_LINES
 * in all, informational ones only while the total is within GUEST_INFO_LINES.
 */
function reportLines(reports: GuestReport[]): string[] {
  const out: string[] = [];
  for (const r of reports) {
    const limit = GUEST_REPORT_KINDS[r.kind].bug ? GUEST_REPORT_LINES : GUEST_INFO_LINES;
    if (out.length > 0 && out.length + r.lines.length > limit) continue;
    out.push(...r.lines);
  }
  return out;
}

export async function runOnce(o: RunOptions): Promise<RunResult> {
  validateRunOptions(o);
  const machine = await Machine.create({
    paging: o.paging,
    memoryBytes: o.memoryBytes,
    enforce: o.enforce,
    maxVcpus: o.vcpus + 1,
    record: o.record !== undefined,
  });
  // --xen-log: the hypervisor keeps a bounded buffer, so drain it while the run goes on.
  const xenLines: XenLogRecord[] = [];
  const drainXen = async () => {
    for (const rec of await machine.drainLog()) xenLines.push(rec);
  };
  const machineFree0 = await machine.freeFrames();
  try {
    // The domain gets most of the machine; the hypervisor keeps a little.
    const frames = Math.floor((o.memoryBytes / PAGE_SIZE) * 0.9);
    const highmem = Math.floor(o.highmemBytes / PAGE_SIZE);
    const info = await machine.createDomain({
      name: 'guest',
      frames,
      vcpus: o.vcpus,
      ...(highmem > 0 ? { lowmemFrames: frames - highmem } : {}),
    });
    const options: Record<string, unknown> = {
      files: o.files,
      dirBlockBytes: o.dirBlockBytes,
      strategy: o.strategy,
      seed: o.seed,
      ...(o.dirEntryBytes !== undefined ? { dirEntryBytes: o.dirEntryBytes } : {}),
      ...(o.nameLen !== undefined ? { nameLen: o.nameLen } : {}),
      ...(o.xfsbufdPeriod !== undefined ? { xfsbufdPeriod: o.xfsbufdPeriod } : {}),
      ...(o.purgeThreshold !== undefined ? { purgeThreshold: o.purgeThreshold } : {}),
      ...(o.shrinkEvery !== undefined ? { shrinkEvery: o.shrinkEvery } : {}),
      ...o.workloadOptions,
    };
    // A workload that needs a victim domain (WORKLOAD_NEEDS) gets one, holding a secret.
    let victim = -1;
    const victimFrames = WORKLOAD_NEEDS[o.workload as WorkloadName]?.victimFrames;
    if (victimFrames !== undefined) {
      const v = await machine.createDomain({ name: 'victim', frames: victimFrames, vcpus: 1 });
      victim = v.domid;
      // Its own kernel writes its data and says where; then it idles.
      const h = await machine.startVcpu(v, 0, 'victim', {});
      const { mfn, secret } = await h.request<{ mfn: number; secret: number }>({ op: 'plant', seed: o.seed });
      await h.terminate();
      options.targetMfn = mfn;
      options.secret = secret;
    }
    const costModel = o.clock === 'virtual' ? loadCostModel(o.costModel) : null;
    const guest = await Guest.boot(machine, info, {
      strategy: o.strategy,
      kmapFlush: o.kmapFlush,
      highpte: o.highpte,
      vmallocBytes: 128 * MiB,
      seed: o.seed,
      vcpus: o.vcpus,
      trace: o.trace !== undefined,
      ...(o.dcache !== undefined ? { dcache: o.dcache } : {}),
      ...(o.slubFix !== undefined ? { slubFix: o.slubFix } : {}),
      ...(o.aliasesBeforePin !== undefined ? { aliasesBeforePin: o.aliasesBeforePin } : {}),
      ...(costModel === null ? {} : { costModel: costModel.costs }),
    });
    const progress = o.progress ? new Progress({ total: o.ops, label: `${o.workload} (${o.strategy})` }) : null;
    const timer = progress ? setInterval(() => progress.set(guest.stepsDone()), 100) : null;
    const drainTimer = o.xenLog !== undefined ? setInterval(() => void drainXen().catch(() => {}), 100) : null;
    let elapsedMs: number;
    let perCpu: GuestCpuRun[];
    try {
      ({ wallMs: elapsedMs, perCpu } = await guest.run(o.workload, o.ops, o.sched, o.seed, options, o.clock));
    } finally {
      if (timer) clearInterval(timer);
      if (drainTimer) clearInterval(drainTimer);
      progress?.done();
    }
    const stats = await guest.stats();
    if (o.trace !== undefined) {
      const writer = new TraceWriter();
      writer.domain(info.domid, o.vcpus);
      for (const t of await guest.traces()) writer.addBuffer(TraceBuffer.attach(t.buffer, new NameTable(t.names)));
      await writeTrace(o.trace, writer);
    }
    const xen = await machine.stats();
    await drainXen();
    const log = xenLines;
    const extra: Omit<RunResult, 'summary' | 'xenLog'> = {
      xenLogLines: xen.logLines,
      guestLogLines: stats.reduce((n, st) => n + (st.messagesTotal ?? 0), 0),
    };
    if (o.xenLog !== undefined) {
      await writeFile(o.xenLog, log.map((l) => `${l.line}\n`).join(''));
      extra.xenLogWritten = log.length;
    }
    if (o.guestLog !== undefined) {
      const lines = [...guest.bootMessages, ...stats.flatMap((st) => st.messages.map((m) => `cpu${st.cpu}: ${m}`))];
      await writeFile(o.guestLog, lines.map((l) => `${l}\n`).join(''));
      extra.guestLogWritten = lines.length;
    }
    if (o.record !== undefined) {
      const flags = `--strategy ${o.strategy} --seed ${o.seed} --vcpus ${o.vcpus} --ops ${o.ops} --sched ${o.sched}`;
      const rec = await machine.takeRecording(`recorded: pvmmu run ${o.workload} ${flags}`);
      await writeFile(o.record, scriptText(rec.script));
      extra.recorded = { steps: rec.script.steps.length, skipped: rec.skipped, unnamed: rec.unnamed };
    }
    const audit = await machine.audit();
    const freeAfter = stats[0]!.freePages;
    await guest.shutdown();
    await machine.destroyDomain(info.domid);
    if (victim >= 0) await machine.destroyDomain(victim);
    const machineFreeAfter = await machine.freeFrames();
    const counters = stats[0]!.counters;
    const wl: Record<string, number> = {};
    for (const s of stats) for (const [k, v] of Object.entries(s.workload)) wl[k] = (wl[k] ?? 0) + v;
    // The step loops alone (no mount/unmount): what per-operation costs are computed from.
    wl.loopMs = Math.max(...perCpu.map((c) => c.loopNs)) / 1e6;
    // Per-vCPU cost of a step means something only when vCPUs run side by side.
    if (o.sched === 'parallel')
      wl.nsPerStepPerCpu = Math.max(...perCpu.map((c) => (c.steps > 0 ? c.loopNs / c.steps : 0)));
    // The kernel's own counters that say who was hurt by what.
    for (const key of [
      'forks',
      'exits',
      'pinFailures',
      'pinsTraced',
      'ptPagesAliased',
      'tasksKilled',
      'multicallFailures',
      'badPages',
      'bugs',
    ] as const) {
      wl[key] = counters[key] ?? 0;
    }
    const hypercalls = Object.values(xen.hypercalls).reduce((a, b) => a + b, 0);
    // The kernel's reports, as data: every vCPU's kept ones in vCPU order, the bugs first
    // (in their order), then what only informs; counts summed.
    const all = stats.flatMap((s) => s.reports ?? []);
    const isBug = (r: GuestReport) => GUEST_REPORT_KINDS[r.kind].bug;
    const reports = [...all.filter(isBug), ...all.filter((r) => !isBug(r))].slice(0, REPORTS_KEEP);
    const reportCounts: Partial<Record<GuestReportKind, number>> = {};
    for (const s of stats)
      for (const k of GUEST_REPORT_KIND_NAMES) {
        const n = s.reportCounts?.[k] ?? 0;
        if (n > 0) reportCounts[k] = (reportCounts[k] ?? 0) + n;
      }
    const summary: RunSummary = {
      workload: o.workload,
      strategy: o.strategy,
      kmapFlush: o.kmapFlush,
      vcpus: o.vcpus,
      seed: o.seed,
      ops: o.ops,
      elapsedMs,
      hypercalls,
      rejected: { total: xen.rejected, byReason: xen.byReason },
      firstXenLines: log.slice(0, 6).map((l) => l.line),
      pinsAttempted: xen.pinsAttempted,
      tlb: { shootdowns: xen.shootdowns, ipis: xen.ipis },
      vmaps: sum(stats, (s) => s.vmalloc.vmaps),
      vunmaps: sum(stats, (s) => s.vmalloc.vunmaps),
      lazyPeakPages: Math.max(...stats.map((s) => s.vmalloc.lazyPeakPages), wl.xfsLazyPeakPages ?? 0),
      dataErrors: (counters.dataErrors ?? 0) + (wl.dataErrors ?? 0),
      auditOk: audit.ok && audit.isolationViolations === 0,
      auditProblems: audit.problems.slice(0, 10).map((p) => `mfn ${p.mfn.toString(16)}: ${p.what}`),
      leakedFrames: guest.bootFreePages - freeAfter + (machineFree0 - machineFreeAfter),
      guestReports: reportLines(reports),
      reports,
      reportCounts,
      throughputOpsPerSec: o.ops / (elapsedMs / 1000),
      paging: o.paging,
      sched: o.sched,
      workloadStats: wl,
      pinsRefused: xen.pinsRefused,
      isolationViolations: audit.isolationViolations,
      ...(costModel === null ? {} : virtualSummary(perCpu, o.ops, costModel.name)),
    };
    return { summary, xenLog: log.slice(0, LOG_KEEP), ...extra };
  } finally {
    await machine.shutdown();
  }
}

/**
 * --clock virtual: the modelled elapsed time (the last vCPU to finish), per operation on
 * one vCPU (virtualNs x vCPUs / ops) and by category (every vCPU's ns, summed, per op).
 */
export function virtualSummary(perCpu: readonly GuestCpuRun[], ops: number, costModel: string): VirtualSummary {
  const virtualNs = Math.max(...perCpu.map((c) => c.virtualNs ?? 0));
  const breakdown: Record<string, number> = {};
  VCLOCK_CATEGORIES.forEach((cat, i) => {
    breakdown[cat] = perCpu.reduce((n, c) => n + (c.breakdown?.[i] ?? 0), 0) / ops;
  });
  return {
    clock: 'virtual',
    costModel,
    virtualNs,
    virtualNsPerOpPerCpu: (virtualNs * perCpu.length) / ops,
    opsPerModelledSecond: ops / (virtualNs / 1e9),
    turnSwitches: Math.max(...perCpu.map((c) => c.turnSwitches ?? 0)),
    breakdown,
  };
}
