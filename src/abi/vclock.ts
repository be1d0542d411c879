/*
 * The virtual clock's contract (`--clock virtual`): the cost table the host loads and sends
 * the guest in KernelConfig, the categories a modelled nanosecond is booked under, and how
 * the hypervisor reports what one hypercall did (slot header words 20-23, see layout.ts).
 *
 * The hypervisor keeps no cost table: it only counts events. The guest charges them.
 */

/** Every cost the model charges, in ns. Each is documented with its source in cost-models/*.json. */
export const COST_KEYS = [
  /** Hypercall entry and exit (trap into Xen and back), once per hypercall. */
  'hypercall',
  /** Each entry Xen validates in an mmu_update (or update_va_mapping). */
  'mmuUpdateEntry',
  /** Each entry Xen validates when it pins (promotes) or unpins (demotes) a page table. */
  'pinUnpinEntry',
  /** One level of a page-table walk after a TLB miss. */
  'pageWalkLevel',
  /** Filling the TLB entry after the walk. */
  'tlbFill',
  /** A local flush of one page (INVLPG). */
  'localFlushPage',
  /** A local full flush (CR3 reload), refills not included (they are walks). */
  'localFlushFull',
  /** Sending a flush IPI (the initiator's fixed part). */
  'ipiSend',
  /** Delivering the IPI to each further target. */
  'ipiDeliveryPerTarget',
  /** The target's flush-IPI handler (interrupt entry, handler, exit). */
  'ipiHandler',
  /** The acknowledgement reaching the initiator. */
  'ipiAck',
  /** An uncontended spin_lock (a locked read-modify-write on a line we own). */
  'spinlockUncontended',
  /** Moving one cache line from another CPU's cache. */
  'cacheLineTransfer',
  /** Zeroing a 4 KiB page. */
  'pageZero',
  /** Copying a 4 KiB page. */
  'pageCopy',
  /** A fixed guest cost per workload step (the work nothing above counts). */
  'stepFixed',
] as const;
export type CostKey = (typeof COST_KEYS)[number];

/** What the guest gets: ns per event, by key. */
export type CostTable = Readonly<Record<CostKey, number>>;

/** The categories of the breakdown, in report order. */
export const VCLOCK_CATEGORIES = [
  'hypercall',
  'validation',
  'pageWalk',
  'localFlush',
  'ipi',
  'lockWait',
  'memory',
  'other',
] as const;
export type VclockCategory = (typeof VCLOCK_CATEGORIES)[number];
export const NR_VCLOCK_CATEGORIES = VCLOCK_CATEGORIES.length;
export const CAT_HYPERCALL = 0;
export const CAT_VALIDATION = 1;
export const CAT_PAGE_WALK = 2;
export const CAT_LOCAL_FLUSH = 3;
export const CAT_IPI = 4;
export const CAT_LOCK_WAIT = 5;
export const CAT_MEMORY = 6;
export const CAT_OTHER = 7;

/*
 * Slot header words 20-23: what the hypervisor did for the last hypercall of the slot,
 * written before SLOT_DONE (so the vCPU reads them after its wait):
 *   S_VC_EVENTS   bits 0-15 mmu_update/update_va_mapping entries validated (saturating),
 *                 bits 16-23 local flushes of the caller, bits 24-31 shootdowns (flushes
 *                 that reached other vCPUs), both saturating at 255
 *   S_VC_PT       entries walked by pins and unpins (promote/demote)
 *   S_VC_TARGETS  the vCPUs (domain-relative ids 0-31, 32-63) the shootdowns reached
 */
export const S_VC_EVENTS = 20;
export const S_VC_PT = 21;
export const S_VC_TARGETS_LO = 22;
export const S_VC_TARGETS_HI = 23;

/** Pack the S_VC_EVENTS word. */
export function packVcEvents(mmuEntries: number, localFlushes: number, shootdowns: number): number {
  return Math.min(mmuEntries, 0xffff) | (Math.min(localFlushes, 0xff) << 16) | (Math.min(shootdowns, 0xff) << 24);
}
