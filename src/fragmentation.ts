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

/** One fragmentation run, as the demo's second table shows it. */
export interface MobilityRow {
  mobility: boolean;
  report: FragmentationReport;
}

/** The demo's short table: grouping on versus off, same seed. */
export function formatMobilityComparison(rows: MobilityRow[], seed: number, pinFraction: number): string {
  const out: string[] = [];
  out.push(
    `Grouping pages by mobility (--mobility): workload fragmentation, 1 vCPU, seed ${seed}, 64 MiB, ` +
      `${Math.round(pinFraction * 100)}% of memory in pinned page tables`,
  );
  out.push('');
  const head = [
    'mobility',
    'order-3 atomic',
    'order-3 normal',
    'order-9 atomic',
    'order-9 normal',
    'mixed blocks',
    'order-9 blocks reclaim could empty',
  ];
  const cells = rows.map((r) => {
    const h = (order: number, kind: string) => {
      const x = r.report.highOrder.find((y) => y.order === order && y.kind === kind);
      return x ? `${x.successes}/${x.attempts} (${pct(x.successes, x.attempts)})` : '-';
    };
    const total = MIGRATE_TYPE_KEYS.reduce((n, t) => n + r.report.pageblocks.byType[t], 0);
    const o9 = r.report.reclaimableBlocks.find((b) => b.order === 9);
    return [
      r.mobility ? 'on (2.6.24)' : 'off (2.6.23)',
      h(3, 'atomic'),
      h(3, 'normal'),
      h(9, 'atomic'),
      h(9, 'normal'),
      `${r.report.pageblocks.mixed}/${total}`,
      o9 ? `${o9.reclaimable}/${o9.total}` : '-',
    ];
  });
  const w = head.map((hd, i) => Math.max(hd.length, ...cells.map((c) => c[i]!.length)));
  const line = (c: string[]) => c.map((x, i) => (i === 0 ? x.padEnd(w[i]!) : x.padStart(w[i]!))).join('  ');
  out.push(line(head));
  out.push(w.map((n) => '-'.repeat(n)).join('  '));
  for (const c of cells) out.push(line(c));
  out.push('');
  out.push(
    'How to read it: the share of order-3 (e1000 jumbo frames) and order-9 (hugepage) requests that succeeded after ' +
      'the run; normal ones may reclaim (lumpy reclaim drops page cache and, with grouping, migrates anonymous ' +
      'pages), atomic ones may not but may take MIGRATE_RESERVE. Mixed blocks hold pages of more than one mobility.',
  );
  return out.join('\n');
}
