/*
 * Suite "fragmentation": grouping pages by mobility on versus off, over several seeds, on
 * `pvmmu run fragmentation` (guest/workloads/fragmentation.ts): the success rates of the
 * order-3 and order-9 passes, atomic and normal, and the share of aligned blocks reclaim
 * could empty -- each on beside off, with the seed thread's figures beside them:
 *  - Andy Whitcroft: order-3 lumpy reclaim works while fewer than 1 page in 8 (12%) is
 *    pinned, and stress tests suggest about 25% are;
 *  - with 25% of pages pinned at random, an aligned order-3 block is free of them only
 *    0.75^8 = 10.0% of the time.
 * What is counted is allocations, not time: the figures do not depend on the machine.
 */
import { DEFAULT_RUN, runOnce } from '../src/run.js';
import { summaryJson } from '../src/summary.js';
import type { Row, SuiteOptions } from './report.js';

export const FRAGMENTATION_PARAMS = { seeds: 'value', 'pin-fraction': 'value' } as const;

const MiB = 2 ** 20;

export function checkFragmentationOptions(params: Readonly<Record<string, string>>): void {
  const seeds = params.seeds;
  if (seeds !== undefined && !/^([1-9]|[1-4]\d|50)$/.test(seeds))
    throw new RangeError(`--seeds must be an integer from 1 to 50, got "${seeds}"`);
  const pin = params['pin-fraction'];
  if (pin !== undefined && !(/^(0(\.\d+)?|\.\d+)$/.test(pin) && Number(pin) <= 0.5))
    throw new RangeError(`--pin-fraction must be a number from 0 to 0.5, got "${pin}"`);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

export async function fragmentationSuite(opts: SuiteOptions): Promise<Row[]> {
  const params = opts.params ?? {};
  checkFragmentationOptions(params);
  const nSeeds = params.seeds ? Number(params.seeds) : opts.quick ? 2 : 5;
  const pinFraction = params['pin-fraction'] ? Number(params['pin-fraction']) : 0.25;
  const rates = new Map<string, number[]>();
  const add = (key: string, v: number) => rates.set(key, [...(rates.get(key) ?? []), v]);
  for (let seed = 1; seed <= nSeeds; seed++) {
    for (const mobility of [true, false]) {
      opts.progress?.(`seed ${seed}/${nSeeds}, grouping ${mobility ? 'on' : 'off'}`);
      const { summary } = await runOnce({
        ...DEFAULT_RUN,
        workload: 'fragmentation',
        memoryBytes: 64 * MiB,
        vcpus: 1,
        ops: 6000,
        seed,
        mobility,
        workloadOptions: { pinFraction },
      });
      const j = summaryJson(summary);
      const on = mobility ? 'on' : 'off';
      for (const h of j.highOrder ?? []) add(`order-${h.order} ${h.kind}, ${on}`, (100 * h.successes) / h.attempts);
      for (const b of j.reclaimableBlocks ?? [])
        add(`order-${b.order} blocks reclaim could empty, ${on}`, (100 * b.reclaimable) / b.total);
    }
  }
  opts.describe?.(
    `pvmmu run fragmentation --memory 64M --pin-fraction ${pinFraction} --seed 1..${nSeeds}, --mobility on and off: ` +
      'median over the seeds, min-max in the note. Seed thread: Whitcroft, order-3 reclaim needs under 12% pinned ' +
      `(here ${Math.round(pinFraction * 100)}% is); 25% pinned at random leaves an aligned order-3 block clean 0.75^8 = 10.0% of the time`,
  );
  const rows: Row[] = [];
  for (const [key, xs] of rates) {
    const order = /order-(\d+)/.exec(key)![1];
    const seedNote = order === '3' && key.includes('blocks') ? '; seed: 0.75^8 = 10.0% at random' : '';
    rows.push({
      case: key,
      value: median(xs),
      unit: '%',
      note: `${Math.min(...xs).toFixed(1)}-${Math.max(...xs).toFixed(1)} over ${xs.length} seeds${seedNote}`,
      series: key.endsWith(', on') ? 'grouping on' : 'grouping off',
      group: key.replace(/, (on|off)$/, ''),
    });
  }
  return rows;
}
