/*
 * The workloads a guest kernel can run, by name (`pvmmu run WORKLOAD`); the names and
 * their summaries are in src/abi/kernel.ts, where the host reads them.
 */
import type { Workload } from './driver.js';
import { ForkStorm } from './fork_storm.js';
import { KmapChurn } from './kmap_churn.js';
import { XfsWorkload } from './xfs_dirscan.js';
import { StrayWrite } from './stray_write.js';
import { VmapCycle } from './vmap_cycle.js';
import { TruncateRace } from './truncate_race.js';
import { OomHog } from './oom_hog.js';
import { Fragmentation } from './fragmentation.js';
import { PatAlias } from './pat_alias.js';
import { AlsaMmap } from './alsa_mmap.js';
import { SlubDma } from './slub_dma.js';
import { type Strategy, WORKLOAD_NAMES, type WorkloadName } from '../../src/abi/kernel.js';
import type { XfsWorkloadMount } from '../fs/xfs/mount.js';

/** How each workload of src/abi/kernel.ts's WORKLOAD_NAMES is made from its options. */
const WORKLOADS: Record<WorkloadName, { make(opts: Record<string, unknown>): Workload }> = {
  'fork-storm': {
    make: (o) => new ForkStorm(typeof o.pagesPerTask === 'number' ? o.pagesPerTask : 4),
  },
  'xfs-dirscan': {
    make: (o) => new XfsWorkload({ ...xfsOpts(o), mode: 'scan' }),
  },
  'log-recovery': {
    make: (o) => new XfsWorkload({ ...xfsOpts(o), mode: 'log' }),
  },
  mixed: {
    make: (o) => new XfsWorkload({ ...xfsOpts(o), mode: 'mixed' }),
  },
  'stray-write': {
    make: (o) =>
      new StrayWrite({
        ...xfsOpts(o),
        targetMfn: typeof o.targetMfn === 'number' ? o.targetMfn : -1,
        secret: typeof o.secret === 'number' ? o.secret : 0,
      }),
  },
  'vmap-cycle': {
    make: (o) =>
      new VmapCycle(
        (o.strategy ?? 'lazy') as Strategy,
        typeof o.pages === 'number' ? o.pages : 4,
        typeof o.warmup === 'number' ? o.warmup : 0,
      ),
  },
  'truncate-race': {
    make: (o) => new TruncateRace({ lockPage: o.lockPage !== false, invalidate: o.invalidate !== false }),
  },
  'kmap-churn': {
    make: () => new KmapChurn(),
  },
  fragmentation: {
    make: (o) =>
      new Fragmentation({
        pinFraction: typeof o.pinFraction === 'number' ? o.pinFraction : 0.25,
        ops: typeof o.ops === 'number' ? o.ops : 4000,
        vcpus: typeof o.vcpus === 'number' ? o.vcpus : 1,
      }),
  },
  'pat-alias': {
    make: (o) => new PatAlias(xfsOpts(o)),
  },
  'alsa-mmap': {
    make: (o) => new AlsaMmap(o.gfpComp === true),
  },
  'slub-dma': {
    make: (o) => new SlubDma(o.kunmapBase === true),
  },
  'oom-hog': {
    make: () => new OomHog(),
  },
};

function xfsOpts(o: Record<string, unknown>): XfsWorkloadMount {
  const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);
  const extra: Record<string, number> = {};
  for (const [from, to] of [
    ['dirEntryBytes', 'entryBytes'],
    ['nameLen', 'nameLen'],
    ['purgeThreshold', 'purgeThreshold'],
    ['xfsbufdPeriod', 'xfsbufdPeriod'],
    ['shrinkEvery', 'shrinkEvery'],
  ] as const) {
    const v = num(o[from]);
    if (v !== undefined) extra[to] = v;
  }
  return {
    strategy: (o.strategy ?? 'lazy') as Strategy,
    seed: typeof o.seed === 'number' ? o.seed : 1,
    files: typeof o.files === 'number' ? o.files : 20000,
    dirBlockBytes: typeof o.dirBlockBytes === 'number' ? o.dirBlockBytes : 65536,
    ...extra,
  };
}

export function makeWorkload(name: string, opts: Record<string, unknown>): Workload {
  if (!(WORKLOAD_NAMES as readonly string[]).includes(name))
    throw new RangeError(`unknown workload "${name}" (workloads: ${WORKLOAD_NAMES.join(', ')})`);
  return WORKLOADS[name as WorkloadName].make(opts);
}
