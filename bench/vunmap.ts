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
import { cpus } from 'node:os';
import { STRATEGIES, type Strategy } from '../src/abi/kernel.js';
import { DEFAULT_RUN, runOnce } from '../src/run.js';
import type { Row, SuiteOptions } from './report.js';

const MiB = 2 ** 20;
const VCPUS = [1, 2, 4, 8];
const DIR_BLOCKS = [4096, 16384, 65536];

export const VUNMAP_PARAMS = { cycles: 'value', vcpus: 'value' } as const;

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
  const cycles = intParam(opts.params, 'cycles', quick ? 300 : 1500, 100, 1_000_000);
  const maxV = intParam(opts.params, 'vcpus', 8, 1, 16);
  const vcpus = VCPUS.filter((v) => v <= maxV);
  const say = opts.progress ?? (() => {});
  const cores = cpus().length;
  opts.describe?.(
    `cycle: ${cycles} map/touch/unmap cycles of a 4-page XFS buffer per vCPU (after ${Math.max(500, Math.floor(cycles / 2))} warm-up cycles), ` +
      `parallel scheduler; ${cores} cores: vCPUs above ${cores} share them.`,
  );
  const rows: Row[] = [];
  const nsPerCycle = new Map<string, number>();
  for (const v of vcpus) {
    for (const strategy of STRATEGIES) {
      say(`cycle: ${strategy}, ${v} vCPU${v > 1 ? 's' : ''}`);
      // Each vCPU warms up (JIT, first touches) before its timed loop, in the same run.
      const { summary: s } = await runOnce({
        ...DEFAULT_RUN,
        workload: 'vmap-cycle',
        strategy,
        vcpus: v,
        sched: 'parallel',
        memoryBytes: 256 * MiB,
        ops: cycles * v,
        workloadOptions: { warmup: Math.max(500, Math.floor(cycles / 2)) },
      });
      const ns = s.workloadStats!.nsPerStepPerCpu!;
      nsPerCycle.set(`${strategy}/${v}`, ns);
      rows.push({
        case: `cycle ${strategy.padEnd(13)} ${v} vCPU`,
        value: ns,
        unit: 'ns/cycle',
        note: `${(s.tlb.shootdowns / s.ops).toFixed(2)} shootdowns, ${(s.tlb.ipis / s.ops).toFixed(3)} IPIs, ${(s.hypercalls / s.ops).toFixed(1)} hypercalls per cycle; lazy peak ${s.lazyPeakPages} pages`,
        series: strategy,
        group: '4-page map/touch/unmap',
        x: v,
        xLabel: 'vCPUs',
        yUnit: 'ns/cycle',
      });
    }
  }
  for (const v of vcpus) {
    const eager = nsPerCycle.get(`eager/${v}`)!;
    const lazy = nsPerCycle.get(`unmap-aliases/${v}`)!;
    const linux = v === 1 ? '5.1x' : v === 2 ? '11.2x' : v === 4 ? '17.7x' : v === 8 ? '24.4x' : 'n/a';
    const ratio = eager / lazy;
    rows.push({
      case: `ratio eager / unmap-aliases, ${v} vCPU`,
      value: ratio,
      unit: 'x',
      note: `${ratio.toFixed(2)}x here; Linux 2.6.28 on 8 cores: ${linux}`,
      group: 'ratios',
    });
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
        const perSec = s.ops / (s.workloadStats!.loopMs! / 1000);
        rows.push({
          case: `dirscan ${strategy.padEnd(13)} ${v} vCPU ${String(dirBlockBytes / 1024).padStart(2)} KiB`,
          value: perSec,
          unit: 'ops/s',
          note:
            `refused pins ${s.rejected.total}; ${(s.tlb.shootdowns / s.ops).toFixed(2)} shootdowns, ${(s.tlb.ipis / s.ops).toFixed(3)} IPIs, ` +
            `${(s.hypercalls / s.ops).toFixed(1)} hypercalls per op; lazy peak ${s.lazyPeakPages} pages`,
          series: strategy,
          group: `xfs-dirscan, ${dirBlockBytes / 1024} KiB blocks`,
          x: v,
          xLabel: 'vCPUs',
          y: 1e9 / perSec,
          yUnit: 'ns/op',
        });
      }
    }
  }
  return rows;
}
