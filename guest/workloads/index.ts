/*
 * The workloads a guest kernel can run, by name (`pvmmu run WORKLOAD`).
 */
import type { Workload } from './driver.js';
import { ForkStorm } from './fork_storm.js';
import { KmapChurn } from './kmap_churn.js';

export const WORKLOADS: Record<string, { summary: string; make(opts: Record<string, unknown>): Workload }> = {
  'fork-storm': {
    summary: 'exec, fork, run and exit tasks on every vCPU: page-table allocation, pinning and unpinning',
    make: (o) => new ForkStorm(typeof o['pagesPerTask'] === 'number' ? o['pagesPerTask'] : 4),
  },
  'kmap-churn': {
    summary: 'highmem page-cache reads through kmap() between forks: the HIGHPTE kmap alias case',
    make: () => new KmapChurn(),
  },
};

export function makeWorkload(name: string, opts: Record<string, unknown>): Workload {
  const w = WORKLOADS[name];
  if (!w) throw new RangeError(`unknown workload "${name}" (workloads: ${Object.keys(WORKLOADS).join(', ')})`);
  return w.make(opts);
}
