/*
 * Suite "vunmap": what each way of unmapping costs, on real vCPU worker threads with real
 * cross-vCPU TLB shootdowns through the hypervisor (parallel scheduler).
 *
 *  - cycle: Nick Piggin's microbenchmark shape, through XFS's own buffer path (the
 *    vmap-cycle workload: get a 4-page buffer -- pages allocated and vmapped --, touch each
 *    page, release it); ns per cycle per vCPU, for each strategy x vCPUs 1, 2, 4, 8.
 *  - dirscan: the xfs-dirscan workload for each strategy x vCPUs x directory block size;
 *    operations per second, shootdowns, IPIs and hypercalls per operation, the peak of
 *    pages held by lazy mappings, and refused pins.
 *
 * The headline is the ratio eager / unmap-aliases at each vCPU count, measured in the same
 * run, set beside Linux 2.6.28's (about 5x at 1 CPU, 25x at 8: 14.7 -> 2.9 us and
 * 70.6 -> 2.9 us per 4-page map/unmap). This machine has few cores: vCPUs beyond them
 * share them, which the notes say next to the figures.
 */
import { availableParallelism } from 'node:os';
import { STRATEGIES, type Strategy } from '../src/abi/kernel.js';
import { DEFAULT_RUN, runOnce } from '../src/run.js';
import { isOversubscribed, repeatedRow, spread, type Row, type SuiteOptions } from './report.js';

const MiB = 2 ** 20;
const VCPUS = [1, 2, 4, 8];
const DIR_BLOCKS = [4096, 16384, 65536];

export const VUNMAP_PARAMS = { cycles: 'value', vcpus: 'value' } as const;
/** Default cycles per vCPU at 1 vCPU; n vCPUs run this / n each (at least 1,500). */
export const DEFAULT_CYCLES_1VCPU = 20_000;

function intParam(
  p: Readonly<Record<string, string>> | undefined,
  name: string,
  dflt: number,
  lo: number,
  hi: number,
): number {
  const v = p?.[name];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < lo || n > hi)
    throw new RangeError(`vunmap: --${name} must be an integer in ${lo}..${hi}, got "${v}"`);
  return n;
}

export function checkVunmapOptions(params: Readonly<Record<string, string>>, quick: boolean): void {
  intParam(params, 'cycles', quick ? 300 : 1500, 100, 1_000_000);
  intParam(params, 'vcpus', 8, 1, 16);
}

export async function vunmapSuite(opts: SuiteOptions): Promise<Row[]> {
  const quick = opts.quick === true;
  const given = opts.params?.cycles !== undefined;
  const cyclesGiven = intParam(opts.params, 'cycles', quick ? 300 : 1500, 100, 1_000_000);
  /*
   * Cycles per vCPU. Long enough to leave JIT warm-up and first touches behind: at 1 vCPU,
   * 1,500 cycles measured 50-90 us per cycle and 20,000 measured 5.5-9.4 us (README,
   * "Benchmarks (wall clock)"). Scaled down with the vCPU count, to keep the many-vCPU
   * points (~1.6 ms per cycle at 8 vCPUs on 2 cores) within minutes. --cycles fixes it.
   */
  const cyclesFor = (v: number): number =>
    given || quick ? cyclesGiven : Math.max(1500, Math.floor(DEFAULT_CYCLES_1VCPU / v));
  const maxV = intParam(opts.params, 'vcpus', 8, 1, 16);
  const vcpus = VCPUS.filter((v) => v <= maxV);
  const say = opts.progress ?? (() => {});
  const cores = availableParallelism();
  opts.describe?.(
    `cycle: ${given || quick ? cyclesGiven : `${DEFAULT_CYCLES_1VCPU}/vCPUs (at least 1500)`} map/touch/unmap cycles of a 4-page XFS buffer per vCPU (after half as many warm-up cycles, at least 500), ` +
      `parallel scheduler; ${cores} cores: points where vCPUs + the hypervisor thread exceed them are marked oversubscribed.`,
  );
  const R = opts.repeat ?? 5;
  const rows: Row[] = [];
  opts.describe?.(
    `cycle: each point ${R} times (--repeat), strategies back to back in each repetition; value = median [min .. max]. ` +
      'Counters per cycle come from the timed loops alone (snapshots at the start barrier, after warm-up, and at the end); ' +
      'the purge left at the end (fini) is its own row.',
  );
  for (const v of vcpus) {
    const cycles = cyclesFor(v);
    const warmup = Math.max(500, Math.floor(cycles / 2));
    const over = isOversubscribed(v + 1, cores);
    const ns = new Map<string, number[]>();
    const per = new Map<string, { sd: number[]; ipi: number[]; hc: number[]; finiUs: number[]; finiHc: number[] }>();
    const ratio: number[] = [];
    for (let i = 0; i < R; i++) {
      for (const strategy of STRATEGIES) {
        say(`cycle: ${strategy}, ${v} vCPU${v > 1 ? 's' : ''}, ${i + 1}/${R}`);
        // Each vCPU warms up (JIT, first touches) before the start barrier, in the same run.
        const { summary: s } = await runOnce({
          ...DEFAULT_RUN,
          workload: 'vmap-cycle',
          strategy,
          vcpus: v,
          sched: 'parallel',
          memoryBytes: 256 * MiB,
          ops: cycles * v,
          workloadOptions: { warmup },
        });
        const w = s.workloadStats!;
        const timed = s.ops;
        if (!ns.has(strategy)) ns.set(strategy, []);
        ns.get(strategy)!.push(w.nsPerStepPerCpu!);
        let p = per.get(strategy);
        if (!p) per.set(strategy, (p = { sd: [], ipi: [], hc: [], finiUs: [], finiHc: [] }));
        p.sd.push(w.windowShootdowns! / timed);
        p.ipi.push(w.windowIpis! / timed);
        p.hc.push(w.windowHypercalls! / timed);
        p.finiUs.push(w.finiMs! * 1000);
        p.finiHc.push(w.finiHypercalls!);
      }
      const e = ns.get('eager')!;
      const u = ns.get('unmap-aliases')!;
      ratio.push(e[e.length - 1]! / u[u.length - 1]!);
    }
    for (const strategy of STRATEGIES) {
      const p = per.get(strategy)!;
      const m = (xs: number[]) => spread(xs).median;
      rows.push(
        repeatedRow(
          {
            case: `cycle ${strategy.padEnd(13)} ${v} vCPU`,
            unit: 'ns/cycle',
            note: `timed window: ${m(p.sd).toFixed(2)} shootdowns, ${m(p.ipi).toFixed(3)} IPIs, ${m(p.hc).toFixed(2)} hypercalls per cycle`,
            series: strategy,
            group: '4-page map/touch/unmap',
            x: v,
            xLabel: 'vCPUs',
            yUnit: 'ns/cycle',
            ...(over ? { oversubscribed: true } : {}),
          },
          ns.get(strategy)!,
        ),
      );
      rows.push(
        repeatedRow(
          {
            case: `fini (purge left at the end) ${strategy.padEnd(13)} ${v} vCPU`,
            unit: 'us',
            note: `after the timed window, slowest vCPU; ${m(p.finiHc).toFixed(0)} hypercalls`,
            group: 'deferred work',
            ...(over ? { oversubscribed: true } : {}),
          },
          p.finiUs,
        ),
      );
    }
    const linux = v === 1 ? '5.1x' : v === 2 ? '11.2x' : v === 4 ? '17.7x' : v === 8 ? '24.4x' : 'n/a';
    const med = spread(ratio).median;
    rows.push(
      repeatedRow(
        {
          case: `ratio eager / unmap-aliases, ${v} vCPU`,
          unit: 'x',
          note: `${med.toFixed(2)}x here (median of back-to-back pairs); Linux 2.6.28 on 8 cores: ${linux}`,
          group: 'ratios',
          ...(over ? { oversubscribed: true } : {}),
        },
        ratio,
      ),
    );
  }

  const scanVcpus = quick ? vcpus.filter((v) => v <= 2) : vcpus.filter((v) => v <= 4);
  const blocks = quick ? [65536] : DIR_BLOCKS;
  for (const dirBlockBytes of blocks) {
    for (const v of scanVcpus) {
      for (const strategy of STRATEGIES as readonly Strategy[]) {
        say(`dirscan: ${strategy}, ${v} vCPU, ${dirBlockBytes / 1024} KiB blocks`);
        const { summary: s } = await runOnce({
          ...DEFAULT_RUN,
          workload: 'xfs-dirscan',
          strategy,
          vcpus: v,
          sched: 'parallel',
          dirBlockBytes,
          ops: (quick ? 500 : 1500) * v,
          memoryBytes: 256 * MiB,
        });
        const w = s.workloadStats!;
        const perSec = s.ops / (w.loopMs! / 1000);
        rows.push({
          case: `dirscan ${strategy.padEnd(13)} ${v} vCPU ${String(dirBlockBytes / 1024).padStart(2)} KiB`,
          value: perSec,
          unit: 'ops/s',
          note:
            `refused pins ${s.rejected.total}; timed window: ${(w.windowShootdowns! / s.ops).toFixed(2)} shootdowns, ` +
            `${(w.windowIpis! / s.ops).toFixed(3)} IPIs, ${(w.windowHypercalls! / s.ops).toFixed(1)} hypercalls per op; lazy peak ${s.lazyPeakPages} pages`,
          series: strategy,
          group: `xfs-dirscan, ${dirBlockBytes / 1024} KiB blocks`,
          x: v,
          xLabel: 'vCPUs',
          y: 1e9 / perSec,
          yUnit: 'ns/op',
          ...(isOversubscribed(v + 1, cores) ? { oversubscribed: true } : {}),
        });
      }
    }
  }
  return rows;
}
