/*
 * The workloads a guest kernel can run, by name (`pvmmu run WORKLOAD`).
 */
import type { Workload } from './driver.js';
import { ForkStorm } from './fork_storm.js';
import { KmapChurn } from './kmap_churn.js';
import { XfsWorkload } from './xfs_dirscan.js';
import { StrayWrite } from './stray_write.js';
import { VmapCycle } from './vmap_cycle.js';
import { TruncateRace } from './truncate_race.js';
import type { Strategy } from '../kernel/config.js';

export const WORKLOADS: Record<string, { summary: string; make(opts: Record<string, unknown>): Workload }> = {
  'fork-storm': {
    summary: 'exec, fork, run and exit tasks on every vCPU: page-table allocation, pinning and unpinning',
    make: (o) => new ForkStorm(typeof o.pagesPerTask === 'number' ? o.pagesPerTask : 4),
  },
  'xfs-dirscan': {
    summary: 'find over a large XFS directory, caches dropped between passes, while tasks fork, exec and exit',
    make: (o) => new XfsWorkload({ ...xfsOpts(o), mode: 'scan' }),
  },
  'log-recovery': {
    summary: 'XFS mount (log recovery vmaps, iclogs stay mapped) and unmount, again and again, beside fork/exit',
    make: (o) => new XfsWorkload({ ...xfsOpts(o), mode: 'log' }),
  },
  mixed: {
    summary: 'directory scans, log recovery, page-cache reads through kmap and fork/exec/exit together',
    make: (o) => new XfsWorkload({ ...xfsOpts(o), mode: 'mixed' }),
  },
  'stray-write': {
    summary: 'a hostile guest writes through a stale XFS vmap into a page table to reach another domain',
    make: (o) =>
      new StrayWrite({
        ...xfsOpts(o),
        targetMfn: typeof o.targetMfn === 'number' ? o.targetMfn : -1,
        secret: typeof o.secret === 'number' ? o.secret : 0,
      }),
  },
  'vmap-cycle': {
    summary: 'the vmap microbenchmark: map 4 pages through XFS, touch them, unmap by the strategy',
    make: (o) =>
      new VmapCycle(
        (o.strategy ?? 'lazy') as Strategy,
        typeof o.pages === 'number' ? o.pages : 4,
        typeof o.warmup === 'number' ? o.warmup : 0,
      ),
  },
  'truncate-race': {
    summary: 'truncate in two steps while tasks fault the file in (det only): the 2007 fault-vs-truncate race',
    make: (o) => new TruncateRace(o.lockPage !== false),
  },
  'kmap-churn': {
    summary: 'highmem page-cache reads through kmap() between forks: the HIGHPTE kmap alias case',
    make: () => new KmapChurn(),
  },
};

function xfsOpts(o: Record<string, unknown>): {
  strategy: Strategy;
  seed: number;
  files: number;
  dirBlockBytes: number;
} {
  return {
    strategy: (o.strategy ?? 'lazy') as Strategy,
    seed: typeof o.seed === 'number' ? o.seed : 1,
    files: typeof o.files === 'number' ? o.files : 20000,
    dirBlockBytes: typeof o.dirBlockBytes === 'number' ? o.dirBlockBytes : 65536,
  };
}

export function makeWorkload(name: string, opts: Record<string, unknown>): Workload {
  const w = WORKLOADS[name];
  if (!w) throw new RangeError(`unknown workload "${name}" (workloads: ${Object.keys(WORKLOADS).join(', ')})`);
  return w.make(opts);
}
