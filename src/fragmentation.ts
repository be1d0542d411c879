/*
 * The fragmentation workload's report: its flat counters (guest/workloads/fragmentation.ts
 * names them) turned back into the structure `pvmmu run fragmentation` prints and puts in
 * --json, and the /proc/pagetypeinfo-style table. Pure data and formatting.
 */

export const MIGRATE_TYPE_KEYS = ['unmovable', 'reclaimable', 'movable', 'reserve'] as const;
export type MigrateTypeKey = (typeof MIGRATE_TYPE_KEYS)[number];
const TYPE_LABELS: Record<MigrateTypeKey, string> = {
  unmovable: 'Unmovable',
  reclaimable: 'Reclaimable',
  movable: 'Movable',
  reserve: 'Reserve',
};
const MAX_ORDER = 11;

export interface HighOrderResult {
  order: number;
  kind: 'atomic' | 'normal';
  attempts: number;
  successes: number;
}

export interface FragmentationReport {
  highOrder: HighOrderResult[];
  pageblocks: { byType: Record<MigrateTypeKey, number>; mixed: number };
  pinnedPtPagesByBlockType: Record<MigrateTypeKey, number>;
  /**
   * Aligned lowmem blocks of each order that reclaim could empty (every page free or
   * clean page cache), before the passes: the seed's "blocks holding an unmovable page"
   * is total - reclaimable.
   */
  reclaimableBlocks: { order: number; reclaimable: number; total: number }[];
  /** Free pages (in blocks) per zone, migrate type and order: /proc/pagetypeinfo. */
  pagetypeinfo: { zone: string; type: MigrateTypeKey; free: number[] }[];
}

const PREFIXES = ['ho.', 'pb.', 'ptpin.', 'pti.', 'blk.'];

/** Is this counter one of the report's (left out of the generic workload counters)? */
export function isFragmentationKey(key: string): boolean {
  return PREFIXES.some((p) => key.startsWith(p));
}

/** Rebuild the report from the workload counters; null when they hold none of it. */
export function fragmentationReport(wl: Record<string, number>): FragmentationReport | null {
  if (!Object.keys(wl).some(isFragmentationKey)) return null;
  const highOrder: HighOrderResult[] = [];
  for (const key of Object.keys(wl)) {
    const m = /^ho\.(\d+)\.(atomic|normal)\.attempts$/.exec(key);
    if (!m) continue;
    const order = Number(m[1]);
    const kind = m[2] as 'atomic' | 'normal';
    highOrder.push({ order, kind, attempts: wl[key]!, successes: wl[`ho.${order}.${kind}.successes`] ?? 0 });
  }
  highOrder.sort((a, b) => a.order - b.order || (a.kind < b.kind ? -1 : 1));
  const byType = {} as Record<MigrateTypeKey, number>;
  const pinned = {} as Record<MigrateTypeKey, number>;
  for (const t of MIGRATE_TYPE_KEYS) {
    byType[t] = wl[`pb.${t}`] ?? 0;
    pinned[t] = wl[`ptpin.${t}`] ?? 0;
  }
  const zones: string[] = [];
  for (const key of Object.keys(wl)) {
    const m = /^pti\.([^.]+)\./.exec(key);
    if (m && !zones.includes(m[1]!)) zones.push(m[1]!);
  }
  const order = ['DMA', 'DMA32', 'Normal', 'HighMem'];
  zones.sort((a, b) => order.indexOf(a) - order.indexOf(b));
  const pagetypeinfo: FragmentationReport['pagetypeinfo'] = [];
  for (const zone of zones) {
    for (const type of MIGRATE_TYPE_KEYS) {
      const free: number[] = [];
      for (let o = 0; o < MAX_ORDER; o++) free.push(wl[`pti.${zone}.${type}.${o}`] ?? 0);
      pagetypeinfo.push({ zone, type, free });
    }
  }
  const reclaimableBlocks: FragmentationReport['reclaimableBlocks'] = [];
  for (const key of Object.keys(wl)) {
    const m = /^blk\.(\d+)\.total$/.exec(key);
    if (m)
      reclaimableBlocks.push({ order: Number(m[1]), reclaimable: wl[`blk.${m[1]}.reclaimable`] ?? 0, total: wl[key]! });
  }
  reclaimableBlocks.sort((a, b) => a.order - b.order);
  return {
    highOrder,
    pageblocks: { byType, mixed: wl['pb.mixed'] ?? 0 },
    pinnedPtPagesByBlockType: pinned,
    reclaimableBlocks,
    pagetypeinfo,
  };
}

function pct(n: number, d: number): string {
  return d === 0 ? '-' : `${((100 * n) / d).toFixed(1)}%`;
}

/** The report for a person: success rates, pageblocks, pinned page tables, pagetypeinfo. */
export function formatFragmentation(r: FragmentationReport, mobility: boolean): string[] {
  const out: string[] = [];
  out.push(`Grouping pages by mobility: ${mobility ? 'on (2.6.24)' : 'off (2.6.23)'}`);
  out.push('');
  out.push('High-order allocations after phase 1 (normal: reclaim, with lumpy reclaim, allowed):');
  out.push('  order  kind    attempts  successes  rate');
  for (const h of r.highOrder) {
    out.push(
      `  ${String(h.order).padStart(5)}  ${h.kind.padEnd(6)}  ${String(h.attempts).padStart(8)}  ${String(h.successes).padStart(9)}  ${pct(h.successes, h.attempts).padStart(6)}`,
    );
  }
  out.push('');
  const b = r.pageblocks.byType;
  const total = MIGRATE_TYPE_KEYS.reduce((n, t) => n + b[t], 0);
  out.push(
    `Pageblocks: ${total} (${MIGRATE_TYPE_KEYS.map((t) => `${t} ${b[t]}`).join(', ')}); ` +
      `mixed (pages of more than one mobility): ${r.pageblocks.mixed}`,
  );
  const p = r.pinnedPtPagesByBlockType;
  const pinnedTotal = MIGRATE_TYPE_KEYS.reduce((n, t) => n + p[t], 0);
  out.push(
    `Pinned page-table pages: ${pinnedTotal}, by the type of their pageblock: ` +
      MIGRATE_TYPE_KEYS.map((t) => `${t} ${p[t]}`).join(', '),
  );
  for (const rb of r.reclaimableBlocks) {
    out.push(
      `Aligned order-${rb.order} blocks reclaim could empty: ${rb.reclaimable} of ${rb.total} (${pct(rb.reclaimable, rb.total)}); ` +
        `the rest hold a page that cannot move`,
    );
  }
  out.push('');
  out.push(
    'Free pages count per migrate type at order       0      1      2      3      4      5      6      7      8      9     10',
  );
  for (const row of r.pagetypeinfo) {
    out.push(
      `Node    0, zone ${row.zone.padStart(8)}, type ${TYPE_LABELS[row.type].padStart(12)} ${row.free.map((n) => String(n).padStart(6)).join(' ')}`,
    );
  }
  return out;
}
