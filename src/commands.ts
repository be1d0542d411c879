/*
 * The workload subcommands of pvmmu: run (one workload), demo (the main job: the XFS
 * directory scan under every strategy, side by side) and bench (the benchmark suites).
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { constants as osConstants } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { distEntry } from './machine.js';
import { type Command, UsageError } from './command.js';
import { createLogger, xenLogLine } from './log.js';
import { DEFAULT_RUN, type RunOptions, runOnce } from './run.js';
import { bugsShown, formatComparison, formatSummary, summaryJson, type RunSummary } from './summary.js';
import { DCACHE_KINDS, STRATEGIES, type Strategy, WORKLOAD_NAMES, WORKLOAD_SUMMARIES } from './abi/kernel.js';
import { formatMobilityComparison, type MobilityRow } from './fragmentation.js';

/** "64K", "256M", "1G" or a number of bytes. */
export function parseSize(text: string, what: string): number {
  const m = /^(\d+)([KMG]?)(i?B)?$/i.exec(text.trim());
  if (!m) throw new UsageError(`${what} must be a size such as 64K, 256M or 1G, got "${text}"`);
  const mult = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2]!.toUpperCase() as '' | 'K' | 'M' | 'G'];
  return Number(m[1]) * mult;
}

function intOpt(v: string | undefined, name: string, dflt: number): number {
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v)) throw new UsageError(`--${name} must be a non-negative integer, got "${v}"`);
  return Number(v);
}

function onOff(v: string | undefined, name: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (v === 'on' || v === 'true') return true;
  if (v === 'off' || v === 'false') return false;
  throw new UsageError(`--${name} must be on or off, got "${v}"`);
}

export const RUN_OPTIONS = {
  strategy: { type: 'string' },
  'kmap-flush': { type: 'string' },
  vcpus: { type: 'string' },
  memory: { type: 'string' },
  highmem: { type: 'string' },
  highpte: { type: 'boolean' },
  paging: { type: 'string' },
  'dir-block': { type: 'string' },
  files: { type: 'string' },
  ops: { type: 'string' },
  seed: { type: 'string' },
  sched: { type: 'string' },
  json: { type: 'boolean' },
  trace: { type: 'string' },
  unenforced: { type: 'boolean' },
  'lock-page': { type: 'string' },
  mobility: { type: 'string' },
  'pin-fraction': { type: 'string' },
  'xen-log': { type: 'string' },
  'guest-log': { type: 'string' },
  record: { type: 'string' },
  'gfp-comp': { type: 'string' },
  'slub-fix': { type: 'string' },
  dcache: { type: 'string' },
  'kunmap-base': { type: 'string' },
  'aliases-before-pin': { type: 'string' },
  'dir-entry-bytes': { type: 'string' },
  'name-len': { type: 'string' },
  'xfsbufd-period': { type: 'string' },
  'purge-threshold': { type: 'string' },
  'shrink-every': { type: 'string' },
  warmup: { type: 'string' },
  clock: { type: 'string' },
  'cost-model': { type: 'string' },
} as const;

export type RunValues = {
  [K in keyof typeof RUN_OPTIONS]?: (typeof RUN_OPTIONS)[K]['type'] extends 'boolean' ? boolean : string;
};

export function runOptionsFrom(values: RunValues, workload: string): RunOptions {
  const base: RunOptions = { ...DEFAULT_RUN, ...(WORKLOAD_DEFAULTS[workload] ?? {}) };
  const o: RunOptions = {
    ...base,
    workload,
    strategy: (values.strategy ?? base.strategy) as Strategy,
    kmapFlush: onOff(values['kmap-flush'], 'kmap-flush', base.kmapFlush),
    vcpus: intOpt(values.vcpus, 'vcpus', base.vcpus),
    seed: intOpt(values.seed, 'seed', base.seed),
    enforce: !values.unenforced,
    progress: process.stderr.isTTY === true && !values.json,
  };
  if (values.memory !== undefined) o.memoryBytes = parseSize(values.memory, '--memory');
  if (values.highmem !== undefined) o.highmemBytes = parseSize(values.highmem, '--highmem');
  if (values.highpte !== undefined) o.highpte = values.highpte;
  if (values.paging !== undefined) o.paging = values.paging as RunOptions['paging'];
  if (values['dir-block'] !== undefined) o.dirBlockBytes = parseSize(values['dir-block'], '--dir-block');
  if (values.files !== undefined) o.files = intOpt(values.files, 'files', o.files);
  if (values.ops !== undefined) o.ops = intOpt(values.ops, 'ops', o.ops);
  if (values.sched !== undefined) o.sched = values.sched as RunOptions['sched'];
  if (values.trace !== undefined) o.trace = values.trace;
  if (values['xen-log'] !== undefined) o.xenLog = values['xen-log'];
  if (values['guest-log'] !== undefined) o.guestLog = values['guest-log'];
  if (values.record !== undefined) {
    if (!values.record.endsWith('.json'))
      throw new UsageError(`--record must name a .json file, got "${values.record}"`);
    o.record = values.record;
  }
  if (values.clock !== undefined) {
    if (values.clock !== 'wall' && values.clock !== 'virtual')
      throw new UsageError(`--clock must be wall or virtual, got "${values.clock}"`);
    o.clock = values.clock;
  }
  if (values['cost-model'] !== undefined) o.costModel = values['cost-model'];
  if (values['lock-page'] !== undefined) {
    if (workload !== 'truncate-race') throw new UsageError('--lock-page is an option of the truncate-race workload');
    o.workloadOptions = { ...o.workloadOptions, lockPage: onOff(values['lock-page'], 'lock-page', true) };
  }
  if (values.mobility !== undefined) o.mobility = onOff(values.mobility, 'mobility', false);
  if (values['pin-fraction'] !== undefined) {
    if (workload !== 'fragmentation') throw new UsageError('--pin-fraction is an option of the fragmentation workload');
    const v = values['pin-fraction'];
    if (!/^(0(\.\d+)?|\.\d+|1(\.0+)?)$/.test(v) || Number(v) > 0.5)
      throw new UsageError(`--pin-fraction must be a number from 0 to 0.5 (the share of memory), got "${v}"`);
    o.workloadOptions = { ...o.workloadOptions, pinFraction: Number(v) };
  }
  xfsOptionsFrom(values, workload, o);
  const only = (opt: string, wl: string) => {
    if (workload !== wl) throw new UsageError(`--${opt} is an option of the ${wl} workload`);
  };
  if (values['gfp-comp'] !== undefined) {
    only('gfp-comp', 'alsa-mmap');
    o.workloadOptions = { ...o.workloadOptions, gfpComp: onOff(values['gfp-comp'], 'gfp-comp', false) };
  }
  if (values['kunmap-base'] !== undefined) {
    only('kunmap-base', 'slub-dma');
    o.workloadOptions = { ...o.workloadOptions, kunmapBase: onOff(values['kunmap-base'], 'kunmap-base', false) };
  }
  if (values.warmup !== undefined) {
    only('warmup', 'vmap-cycle');
    o.workloadOptions = { ...o.workloadOptions, warmup: intOpt(values.warmup, 'warmup', 0) };
    if ((o.workloadOptions.warmup as number) > 10_000_000)
      throw new UsageError(`--warmup must be at most 10000000, got "${values.warmup}"`);
  }
  if (values['slub-fix'] !== undefined) o.slubFix = onOff(values['slub-fix'], 'slub-fix', true);
  if (values.dcache !== undefined) {
    if (!(DCACHE_KINDS as readonly string[]).includes(values.dcache))
      throw new UsageError(`--dcache must be one of ${DCACHE_KINDS.join(', ')}, got "${values.dcache}"`);
    o.dcache = values.dcache as RunOptions['dcache'];
  }
  if (values.unenforced && workload !== 'stray-write') {
    throw new UsageError('--unenforced exists only for the stray-write demonstration');
  }
  return o;
}

/** The workloads that mount XFS (the geometry and purge options are theirs). */
const XFS_WORKLOADS = ['xfs-dirscan', 'log-recovery', 'mixed', 'pat-alias'];

/** --aliases-before-pin and the XFS thread's geometry and purge options, into o. */
function xfsOptionsFrom(values: RunValues, workload: string, o: RunOptions): void {
  if (values['aliases-before-pin'] !== undefined)
    o.aliasesBeforePin = onOff(values['aliases-before-pin'], 'aliases-before-pin', true);
  const xfs: Array<
    [keyof RunValues & string, 'dirEntryBytes' | 'nameLen' | 'xfsbufdPeriod' | 'purgeThreshold' | 'shrinkEvery']
  > = [
    ['dir-entry-bytes', 'dirEntryBytes'],
    ['name-len', 'nameLen'],
    ['xfsbufd-period', 'xfsbufdPeriod'],
    ['purge-threshold', 'purgeThreshold'],
    ['shrink-every', 'shrinkEvery'],
  ];
  for (const [flag, key] of xfs) {
    const v = values[flag];
    if (v === undefined || typeof v !== 'string') continue;
    if (!XFS_WORKLOADS.includes(workload))
      throw new UsageError(`--${flag} is an option of the XFS workloads (${XFS_WORKLOADS.join(', ')})`);
    o[key] = intOpt(v, flag, 0);
  }
}

/** What a workload needs unless told otherwise (kmap-churn needs highmem to mean anything). */
const WORKLOAD_DEFAULTS: Record<string, Partial<RunOptions>> = {
  'kmap-churn': { highmemBytes: 64 * 2 ** 20, highpte: true, vcpus: 1, ops: 2000 },
  'fork-storm': { ops: 4000 },
  'truncate-race': { ops: 3000 },
  fragmentation: { memoryBytes: 64 * 2 ** 20, vcpus: 1, ops: 6000 },
  'alsa-mmap': { vcpus: 1, ops: 1 },
  'slub-dma': { vcpus: 1, ops: 1, dcache: 'aliasing' },
};

const STRATEGY_HELP = `Strategies (--strategy):
  lazy           XFS as in 2.6.23: vunmaps deferred on XFS's a_list (purged at 64, by
                 xfsbufd every second, and by the shrinker) -- the bug
  eager          Jeremy Fitzhardinge's CONFIG_XEN workaround: vunmap at once
  vmap-pages     Dave Chinner's patch: lazily mapped pages keep a reference until unmapped
  unmap-aliases  Nick Piggin's 2.6.28 lazy vmalloc purge + vm_unmap_aliases() before pinning`;

export const workloadCommands: Record<string, Command> = {};

/**
 * Whether one demo row behaved as its strategy should: lazy (XFS as it was) may have Xen
 * refuse pins -- that is the bug the demo shows; the fixes must not. Anything else that
 * is a bug (guest reports, data errors, leaks, the audit) fails every strategy.
 */
export function demoAsExpected(r: RunSummary): boolean {
  const bugs = bugsShown(r).filter((b) => !(r.strategy === 'lazy' && b.startsWith('refused pins')));
  return bugs.length === 0;
}

workloadCommands.run = {
  summary: 'run a workload on a guest under the enforcing hypervisor and summarise it',
  usage: `pvmmu run WORKLOAD [options]   (workloads: ${WORKLOAD_NAMES.join(', ')})`,
  help: `Boots a guest kernel on real vCPU worker threads, runs the workload, then audits the
hypervisor's frame table and checks that no frame leaked. The summary says whether the
bug showed up (for the XFS workloads, Xen refusing page-table pins; for the seed
workloads alsa-mmap, slub-dma and truncate-race, the guest kernel's own reports) and
what it cost.

Workloads:
${Object.entries(WORKLOAD_SUMMARIES)
  .map(([n, summary]) => `  ${n.padEnd(13)}  ${summary}`)
  .join('\n')}

Options (defaults in brackets):
  --strategy S       lazy | eager | vmap-pages | unmap-aliases [lazy]
  --kmap-flush on|off  kmap_flush_unused() before pinning [on]
  --vcpus N          vCPUs of the guest [2]
  --memory SIZE      machine memory, e.g. 256M, 1G [256M]
  --highmem SIZE     pae: part of the guest's memory above the direct map [0]
  --highpte          pae: user page tables in highmem (CONFIG_HIGHPTE)
  --paging MODE      pae | x86_64 [pae]
  --dir-block SIZE   XFS directory block size: 4K..64K [64K]
  --files N          entries in the scanned directory [20000]
  --ops N            workload steps, over all vCPUs [4000]
  --seed N           seed of everything random [1]
  --sched S          det (deterministic interleaving) | parallel (real threads) [det]
  --json             print one JSON object instead of the report
  --trace FILE       write a Chrome trace (open it in Perfetto)
  --unenforced       stray-write only: a hypervisor WITHOUT the writable-type rule
  --lock-page on|off truncate-race only: lock_page in the fault path, the 2007 fix [on]
  --mobility on|off  group pages by mobility (2.6.24's __GFP_MOVABLE pageblocks); off is
                     2.6.23 [off]
  --pin-fraction F   fragmentation only: share of memory the long-lived tasks' pinned page
                     tables take, 0..0.5 [0.25]
  --clock C          wall (this host's time) | virtual (the modelled machine's time, from a
                     cost table; det scheduler, 1..64 vCPUs; --json adds virtualNs,
                     virtualNsPerOpPerCpu and a breakdown by cost) [wall]
  --cost-model M     --clock virtual: default-2008 | server-2023 | a JSON file [default-2008]
  --xen-log FILE     write every hypervisor log line of the run to FILE
  --guest-log FILE   write every guest printk line of the run to FILE ("cpuN: line")
  --record FILE.json write the run's hypercalls as a script: replay it with
                     \`pvmmu script FILE.json\`, shrink it with \`pvmmu reduce FILE.json\`
  --gfp-comp on|off  alsa-mmap only: snd_malloc_pages asks for __GFP_COMP, the 2005 fix [off]
  --slub-fix on|off  page_mapping() is NULL for slab pages, the 2007 SLUB fix [on]
  --dcache KIND      pipt (x86: flush_dcache_page does nothing) | aliasing (ARM VIPT)
                     [pipt; slub-dma: aliasing]
  --kunmap-base on|off  slub-dma only: kunmap_atomic(buffer - offset), the patch that
                     changed nothing [off]
  --warmup N         vmap-cycle only: N untimed cycles on each vCPU before the timed loop
                     (JIT, first touches, the vmalloc area's first pass); nsPerStepPerCpu
                     then measures the steady state [0]
  --aliases-before-pin on|off  unmap-aliases only: vm_unmap_aliases() before pinning
                     (Jeremy Fitzhardinge, 2008); off is Nick Piggin's 2.6.28 lazy layer
                     without it, where every vmap user leaves stray aliases [on]
Options of the XFS workloads (${XFS_WORKLOADS.join(', ')}):
  --dir-entry-bytes N  bytes each directory entry takes in its block: a multiple of 8
                     from 32 up to the block's room [32]; Dave Chinner's test put 100,000
                     files in ~1,700 64 KiB blocks: --files 100000 --dir-entry-bytes 1104,
                     a directory (106 MiB) that puts --memory 48M under pressure
  --name-len N       every file name N bytes long, from what "f-<index>-<hash>" needs
                     (17 up to 1M files) to what the entry holds (N-11, at most 255)
                     [as short as the index allows]
  --xfsbufd-period CS  xfsbufd's wake-up (and a_list purge) period in centisecs,
                     50..3000, as fs.xfs.xfsbufd_centisecs [100]
  --purge-threshold N  a vmap purges the a_list first when it holds more than N
                     entries, 0..65536 (2.6.23: 64) [64]
  --shrink-every N   run shrink_slab (the XFS shrinker wakes xfsbufd, which purges)
                     every N steps of the mount's vCPU, 0..1000000; 0: only under
                     memory pressure [0]

Workload defaults that differ: alsa-mmap and slub-dma run 1 op (one playback, one
transfer) on 1 vCPU; truncate-race runs 3000 ops; kmap-churn 2000 ops on 1 vCPU with
--highmem 64M --highpte; fragmentation 6000 ops on 1 vCPU with --memory 64M.

Exit status: 0 when the run was clean; 1 when it showed a bug (refused pins, a kernel
BUG or oops, a bad page state, a memtype conflict, data errors, leaked frames, an audit
failure or an isolation violation; the last line says which); 2 for bad usage.

${STRATEGY_HELP}`,
  async run(argv) {
    const { values, positionals } = parseArgs({ args: argv, options: RUN_OPTIONS, allowPositionals: true });
    if (positionals.length !== 1) throw new UsageError(`run: expected one WORKLOAD (${WORKLOAD_NAMES.join(', ')})`);
    const opts = runOptionsFrom(values as RunValues, positionals[0]!);
    const logger = createLogger({ json: values.json === true || !process.stderr.isTTY });
    const { summary: s, xenLog, ...res } = await runOnce(opts);
    for (const rec of xenLog) xenLogLine(logger, rec);
    if (opts.xenLog) logger.info({ file: opts.xenLog, lines: res.xenLogWritten }, 'hypervisor log written');
    if (opts.guestLog) logger.info({ file: opts.guestLog, lines: res.guestLogWritten }, 'guest log written');
    if (opts.record && res.recorded)
      logger.info({ file: opts.record, ...res.recorded }, 'hypercalls recorded (replay: pvmmu script FILE)');
    if (values.trace) logger.info({ file: values.trace }, 'trace written (open it in https://ui.perfetto.dev)');
    process.stdout.write(`${values.json ? JSON.stringify(summaryJson(s)) : formatSummary(s)}\n`);
    return bugsShown(s).length === 0 ? 0 : 1;
  },
};

workloadCommands.demo = {
  summary: 'the main job: the XFS directory scan under every strategy, side by side',
  usage: 'pvmmu demo [--vcpus N] [--ops N] [--seed N] [--json]',
  help: `Runs xfs-dirscan (large directories with 64 KiB blocks, caches dropped between passes,
while other tasks fork, exec and exit) once per strategy on the same seed, and prints a
table: how many page-table pins Xen refused, what the TLB shootdowns and hypercalls cost,
throughput, and the memory lazy mappings held. Then a second, short table: the
fragmentation workload with grouping by mobility on and off (order-3 and order-9
success rates), on the same seed.

${STRATEGY_HELP}`,
  async run(argv) {
    const { values } = parseArgs({
      args: argv,
      options: {
        vcpus: { type: 'string' },
        ops: { type: 'string' },
        seed: { type: 'string' },
        json: { type: 'boolean' },
      },
    });
    const rows: RunSummary[] = [];
    for (const strategy of STRATEGIES) {
      if (process.stderr.isTTY) process.stderr.write(`\r\x1b[Krunning xfs-dirscan with --strategy ${strategy} ...`);
      const opts = runOptionsFrom({ strategy, vcpus: values.vcpus, ops: values.ops, seed: values.seed }, 'xfs-dirscan');
      rows.push((await runOnce(opts)).summary);
    }
    // The second, short table: grouping by mobility on versus off (terminal output only).
    const mobility: MobilityRow[] = [];
    if (!values.json) {
      for (const on of [true, false]) {
        if (process.stderr.isTTY)
          process.stderr.write(`\r\x1b[Krunning fragmentation with --mobility ${on ? 'on' : 'off'} ...`);
        const opts = runOptionsFrom({ seed: values.seed, mobility: on ? 'on' : 'off' }, 'fragmentation');
        const s = (await runOnce(opts)).summary;
        rows.push(s);
        if (s.fragmentation) mobility.push({ mobility: on, report: s.fragmentation });
      }
    }
    if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
    const table = formatComparison(rows.filter((r) => r.workload === 'xfs-dirscan'));
    const second =
      mobility.length > 0 ? `\n\n${formatMobilityComparison(mobility, Number(values.seed ?? 1), 0.25)}` : '';
    process.stdout.write(`${values.json ? JSON.stringify(rows.map(summaryJson), null, 2) : table + second}\n`);
    return rows.every(demoAsExpected) ? 0 : 1;
  },
};

workloadCommands.bench = {
  summary: 'benchmarks: vunmap batching vs eager unmap, vmalloc, the hypercall transport',
  usage: 'pvmmu bench [SUITE...] [--quick] [--json] [--repeat N] [--out DIR] [suite options]',
  help: `Runs the named suites (default: all) on real vCPU worker threads and prints one table per
suite, with ratios measured side by side in the same run. Results, CSV and an HTML report
with charts are written under bench/results/ (or --out DIR). Every case runs --repeat N times
(default 5) and reports its median with [min .. max]; --json prints one JSON object on stdout,
{ suite, rows: [{ case, value, unit, min, median, max, ... }] }. Points where vCPUs plus the
hypervisor thread exceed the host's cores are marked oversubscribed.

Suites: vunmap (--cycles N, --vcpus N), vmalloc (lib/test_vmalloc.c's parameters: see
node dist/bench/run.js --help), hypercall (--vcpus N for the many-vCPU case), fragmentation
(--seeds N, --pin-fraction F: order-3/order-9 success with grouping by mobility on and off).

--clock virtual runs the vunmap suite on the virtual clock instead: modelled ns per cycle
for every strategy at 1..64 vCPUs beside Linux 2.6.28's figures, and xfs-dirscan, from a
cost table (--cost-model default-2008 | server-2023 | FILE).`,
  async run(argv) {
    // bench/ sits above the host (it imports it), so the host starts it by path, in a
    // process of its own with this one's terminal: the suites parse their own options.
    const child = spawn(process.execPath, [fileURLToPath(distEntry('bench/run.js')), ...argv], { stdio: 'inherit' });
    const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
    return code ?? (signal === null ? 1 : 128 + (osConstants.signals[signal] ?? 0));
  },
};
