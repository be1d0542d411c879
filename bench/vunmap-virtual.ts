/*
 * Suite "vunmap" on the virtual clock (`pvmmu bench vunmap --clock virtual`): what each way
 * of unmapping would cost on the modelled machine (a cost table, cost-models/*.json), at
 * 1, 2, 4, 8, 16, 32 and 64 vCPUs whatever this host's cores.
 *
 *  - cycle: the vmap-cycle workload (Nick Piggin's 4-page map / touch / unmap through XFS's
 *    buffer path), modelled ns per cycle per vCPU (virtualNs x vCPUs / cycles) for every
 *    strategy, beside Linux 2.6.28's published figures; the eager / unmap-aliases ratio at
 *    each count; and the breakdown by cost, a stacked chart per strategy.
 *  - dirscan: xfs-dirscan for every strategy at each count: operations per modelled second,
 *    and the pins Xen refused (lazy must have some, the fixes none).
 *
 * The figures are the model's: deterministic (same command, same numbers, on any machine),
 * and only as good as the cost table. Nothing here was fitted to Linux's figures.
 */
import { STRATEGIES, type Strategy } from '../src/abi/kernel.js';
import { VCLOCK_CATEGORIES } from '../src/abi/vclock.js';
import { DEFAULT_COST_MODEL, loadCostModel } from '../src/costmodel.js';
import { DEFAULT_RUN, runOnce } from '../src/run.js';
import type { RunSummary, VirtualSummary } from '../src/summary.js';
import type { Row, SuiteOptions } from './report.js';

const MiB = 2 ** 20;
export const VIRTUAL_VCPUS = [1, 2, 4, 8, 16, 32, 64];

/** Linux 2.6.28's vmap microbenchmark (linux-vmap.md section 3), ns per cycle: before (eager-like) / after. */
export const LINUX_2628: Readonly<Record<number, { before: number; after: number }>> = {
  1: { before: 14_700, after: 2_900 },
  2: { before: 33_600, after: 3_000 },
  4: { before: 49_500, after: 2_800 },
  8: { before: 70_631, after: 2_900 },
};

function intParam(p: Readonly<Record<string, string>> | undefined, name: string, dflt: number, hi: number): number {
  const v = p?.[name];
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > hi)
    throw new RangeError(`vunmap --clock virtual: --${name} must be an integer in 1..${hi}, got "${v}"`);
  return n;
}

/** Check the options before anything runs (the same names as the wall-clock suite). */
export function checkVunmapVirtualOptions(params: Readonly<Record<string, string>>, costModel?: string): void {
  intParam(params, 'cycles', 1, 1_000_000);
  intParam(params, 'vcpus', 64, 64);
  loadCostModel(costModel ?? DEFAULT_COST_MODEL);
}

/** The suite, with the cost table chosen by --cost-model. */
export function vunmapVirtualSuite(costModel: string = DEFAULT_COST_MODEL) {
  return async (opts: SuiteOptions): Promise<Row[]> => {
    const quick = opts.quick === true;
    const cycles = intParam(opts.params, 'cycles', quick ? 50 : 200, 1_000_000);
    const maxV = intParam(opts.params, 'vcpus', quick ? 16 : 64, 64);
    const vcpus = VIRTUAL_VCPUS.filter((v) => v <= maxV);
    const model = loadCostModel(costModel);
    const say = opts.progress ?? (() => {});
    opts.describe?.(
      `virtual clock, cost table ${model.name} (${model.file}): modelled ns per cycle per vCPU of ${cycles} ` +
        `4-page map/touch/unmap cycles per vCPU, det scheduler; the same command gives the same figures on any machine. ` +
        `Linux 2.6.28's published figures (2-socket 8-core Opteron) stand beside them; nothing was fitted to them.`,
    );
    const rows: Row[] = [];
    const ns = new Map<string, number>();
    for (const v of vcpus) {
      for (const strategy of STRATEGIES) {
        say(`cycle: ${strategy}, ${v} vCPU${v > 1 ? 's' : ''} (virtual clock)`);
        const { summary: s } = await runOnce({
          ...DEFAULT_RUN,
          workload: 'vmap-cycle',
          strategy,
          vcpus: v,
          sched: 'det',
          clock: 'virtual',
          costModel,
          memoryBytes: 256 * MiB,
          ops: cycles * v,
        });
        const vs = s as RunSummary & VirtualSummary;
        ns.set(`${strategy}/${v}`, vs.virtualNsPerOpPerCpu);
        const linux = LINUX_2628[v];
        const linuxNote =
          linux === undefined
            ? ''
            : strategy === 'eager'
              ? `; Linux 2.6.27 (eager vunmap): ${linux.before} ns`
              : strategy === 'unmap-aliases'
                ? `; Linux 2.6.28 (lazy): ${linux.after} ns`
                : '';
        const top = Object.entries(vs.breakdown)
          .sort((a, b) => b[1] - a[1])
          .slice(0, 3)
          .map(([k, n]) => `${k} ${Math.round(n)}`)
          .join(', ');
        rows.push({
          case: `cycle ${strategy.padEnd(13)} ${String(v).padStart(2)} vCPU (modelled)`,
          value: vs.virtualNsPerOpPerCpu,
          unit: 'ns/cycle',
          note: `${top}${linuxNote}; ${(s.tlb.shootdowns / s.ops).toFixed(2)} shootdowns per cycle`,
          series: strategy,
          group: '4-page map/touch/unmap, modelled',
          x: v,
          xLabel: 'vCPUs',
          yUnit: 'modelled ns/cycle',
        });
        for (const cat of VCLOCK_CATEGORIES) {
          rows.push({
            case: `breakdown ${strategy} ${v} vCPU ${cat}`,
            value: vs.breakdown[cat] ?? 0,
            unit: 'ns/cycle',
            group: `${strategy}: modelled ns per cycle by cost`,
            x: v,
            xLabel: 'vCPUs',
            stack: cat,
          });
        }
      }
    }
    for (const v of vcpus) {
      const ratio = ns.get(`eager/${v}`)! / ns.get(`unmap-aliases/${v}`)!;
      const linux = LINUX_2628[v];
      rows.push({
        case: `ratio eager / unmap-aliases, ${v} vCPU (modelled)`,
        value: ratio,
        unit: 'x',
        note: `${ratio.toFixed(2)}x modelled; Linux 2.6.28 (8-core Opteron), ${v} thread${v > 1 ? 's' : ''}: ${linux === undefined ? 'not published' : `${(linux.before / linux.after).toFixed(1)}x`}`,
        group: 'ratios',
      });
    }
    const scanOps = quick ? 100 : 200;
    for (const v of vcpus) {
      for (const strategy of STRATEGIES as readonly Strategy[]) {
        say(`dirscan: ${strategy}, ${v} vCPU (virtual clock)`);
        const { summary: s } = await runOnce({
          ...DEFAULT_RUN,
          workload: 'xfs-dirscan',
          strategy,
          vcpus: v,
          sched: 'det',
          clock: 'virtual',
          costModel,
          ops: scanOps * v,
          memoryBytes: 256 * MiB,
        });
        const vs = s as RunSummary & VirtualSummary;
        rows.push({
          case: `dirscan ${strategy.padEnd(13)} ${String(v).padStart(2)} vCPU (modelled)`,
          value: vs.opsPerModelledSecond,
          unit: 'ops/modelled s',
          note: `refused pins ${s.pinsRefused ?? 0} of ${s.pinsAttempted}; ${Math.round(vs.virtualNsPerOpPerCpu)} modelled ns per op per vCPU`,
          series: strategy,
          group: 'xfs-dirscan, 64 KiB blocks, modelled',
          x: v,
          xLabel: 'vCPUs',
          y: vs.virtualNsPerOpPerCpu,
          yUnit: 'modelled ns/op',
        });
      }
    }
    return rows;
  };
}
