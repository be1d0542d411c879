/*
 * Page types: getPageType / putPageType, and the validation (promote) and devalidation
 * (demote) of page-table frames that a type change to or from a table implies.
 *
 * Read the invariants essay in frame-table.ts first. Every function that can fail
 * returns 0 or a negative errno and leaves no reference behind on failure: what a
 * promote took before the failing entry is released again, in reverse order.
 */
import {
  EBUSY,
  EINVAL,
  EPERM,
  PGT_l1_page_table,
  PGT_pae_xen_l2,
  PGT_pinned,
  PGT_type_mask,
  PGT_validated,
  PGT_writable_page,
  PGT_shared_page,
  _PAGE_ACCESSED,
  _PAGE_GLOBAL,
  _PAGE_PAT,
  _PAGE_PCD,
  _PAGE_PRESENT,
  _PAGE_PSE,
  _PAGE_PWT,
  _PAGE_RW,
  _PAGE_USER,
  _PAGE_GUEST_KERNEL_HI,
  _PAGE_RESERVED_HI,
  levelOfType,
  pgtForLevel,
  FRAME_WORDS,
} from '../src/abi/xen.js';
import { PAE_XEN_L2_FIRST, XEN_L4_FIRST, XEN_L4_LAST } from '../src/abi/layout.js';
import { hex64, pteMfn } from '../src/abi/pte.js';
import { flushForTypeChange } from './flush.js';
import { type Domain, type Hv, VE_PT_ENTRIES } from './hv.js';
import { hx } from './log.js';

/* ------------------------------------------------------------ flag masks */

/** L1 flags a PV domU may not set (XSA-182 style named constants). */
export const L1_DISALLOW_LO = _PAGE_PWT | _PAGE_PCD | _PAGE_PAT;
/** L2..L4: no superpages (XSA-148), no cache attributes, no global. */
export const LN_DISALLOW_LO = _PAGE_PSE | _PAGE_PWT | _PAGE_PCD | _PAGE_GLOBAL;
/** Reserved high bits; bit 52 is Xen's guest-kernel mark in x86_64 L1s. */
export function l1DisallowHi(hv: Hv): number {
  return hv.paging === 'x86_64' ? (_PAGE_RESERVED_HI & ~_PAGE_GUEST_KERNEL_HI) >>> 0 : _PAGE_RESERVED_HI;
}
/**
 * Flags whose change alone lets an update skip revalidation: NX, A, D, G, US and the
 * available bits. RW is deliberately absent (XSA-182), and so is PSE (XSA-148): a change
 * of either must take the full path.
 */
export const FASTPATH_FLAG_WHITELIST_LO = 0xe00 | _PAGE_GLOBAL | 0x40 | _PAGE_ACCESSED | _PAGE_USER;
export const FASTPATH_FLAG_WHITELIST_HI = 0x80000000 | 0x7ff00000;

/* ----------------------------------------------------------- entry access */

/** Number of guest-visible entries in a table of `level`: 4 for a pae L3. */
export function tableEntries(hv: Hv, level: number): number {
  return hv.paging === 'pae' && level === 3 ? 4 : 512;
}

/** Is slot `i` of a table of this level and type the guest's (not Xen's)? */
export function isGuestSlot(_hv: Hv, level: number, typeHi: number, i: number): boolean {
  if (level === 4) return i < XEN_L4_FIRST || i > XEN_L4_LAST;
  if (level === 2 && (typeHi & PGT_pae_xen_l2) !== 0) return i < PAE_XEN_L2_FIRST;
  return true;
}

/* ---------------------------------------------------------- get_page_type */

/** Who is being served, for flush filtering and log context. */
export interface Ctx {
  d: Domain;
  /** The calling vCPU's slot (-1 when the controller acts, e.g. domain builder). */
  slot: number;
}

/**
 * get_page_type: take a type reference of `type` (PGT_* top word, possibly with
 * PGT_pae_xen_l2). count 0 -> 1 may change the type (flush, then validate); count > 0
 * must match. Returns 0 or -EINVAL.
 */
export function getPageType(hv: Hv, ctx: Ctx, mfn: number, type: number): number {
  const ft = hv.ft;
  const x = ft.typeHi[mfn]!;
  const count = ft.typeCount[mfn]!;
  const want = (type & (PGT_type_mask | PGT_pae_xen_l2)) >>> 0;
  if (count === 0) {
    // typeref 0 -> 1: the type may change.
    if ((x & (PGT_type_mask | PGT_pae_xen_l2)) >>> 0 !== want >>> 0 && (x & PGT_type_mask) !== 0) {
      flushForTypeChange(hv, ctx.d, mfn, ctx.slot);
    }
    const keepPinned = x & PGT_pinned;
    if (want === PGT_writable_page || want === PGT_shared_page) {
      ft.typeHi[mfn] = (want | PGT_validated | keepPinned) >>> 0;
      ft.typeCount[mfn] = 1;
      return 0;
    }
    // A page-table type: count 1 but not yet validated while we scan.
    ft.typeHi[mfn] = (want | keepPinned) >>> 0;
    ft.typeCount[mfn] = 1;
    const rc = promoteTable(hv, ctx, mfn, levelOfType(want));
    if (rc !== 0) {
      hv.console.gdprintk(
        'validate_error',
        `Error while validating mfn ${hx(mfn)} (pfn ${hx(hv.pfnOf(mfn))}) for type ${hex64(want, 0)}: caf=${ft.cafHex(mfn)} taf=${ft.tafHex(mfn)}`,
        mfn,
      );
      ft.typeHi[mfn] = 0;
      ft.typeCount[mfn] = 0;
      return rc;
    }
    ft.typeHi[mfn] = (ft.typeHi[mfn]! | PGT_validated) >>> 0;
    return 0;
  }
  if ((x & (PGT_type_mask | PGT_pae_xen_l2)) >>> 0 !== want >>> 0) {
    // Probing an L2 as an L1 is how linear tables are tried: Xen stays quiet there.
    if ((x & PGT_type_mask) >>> 0 !== 0x40000000 || want !== PGT_l1_page_table) {
      hv.console.gdprintk(
        'bad_type',
        `Bad type (saw ${ft.tafHex(mfn)} != exp ${hex64(want, 0)}) for mfn ${hx(mfn)} (pfn ${hx(hv.pfnOf(mfn))})`,
        mfn,
      );
    }
    return -EINVAL;
  }
  // Same type: one more holder.
  ft.typeCount[mfn] = count + 1;
  return 0;
}

/**
 * put_page_type: drop a type reference. The last one of a page-table type devalidates
 * the table (its entries drop their references, recursively). `container` is the table
 * holding the entry being dropped (-1 for pins and base pointers): a same-type container
 * means the entry was a linear one, whose XSA-240 counters are undone here.
 */
export function putPageType(hv: Hv, mfn: number, container: number): void {
  const ft = hv.ft;
  const x = ft.typeHi[mfn]!;
  if (container >= 0 && ((ft.typeHi[container]! ^ x) & PGT_type_mask) === 0) {
    ft.linear[mfn]!--; // this table was a linear target
    ft.linear[container]!++; // its container had one linear entry less
  }
  const count = ft.typeCount[mfn]! - 1;
  ft.typeCount[mfn] = count;
  if (count !== 0) return;
  // typeref 1 -> 0: remember when, for the type-change flush filter.
  ft.tlbflushTimestamp[mfn] = hv.tlbClock;
  const level = levelOfType(x);
  if (level !== 0 && (x & PGT_validated) !== 0) {
    ft.typeHi[mfn] = (x & ~PGT_validated) >>> 0;
    demoteTable(hv, mfn, level, x);
  }
}

/** get_page_and_type_from_mfn: general + type reference, both or neither. */
export function getPageAndType(hv: Hv, ctx: Ctx, mfn: number, type: number, owner: number): number {
  if (!hv.ft.mfnValid(mfn) || !hv.ft.getPage(mfn, owner)) return -EINVAL;
  const rc = getPageType(hv, ctx, mfn, type);
  if (rc !== 0) hv.ft.putPage(mfn);
  return rc;
}

export function putPageAndType(hv: Hv, mfn: number, container: number): void {
  putPageType(hv, mfn, container);
  hv.ft.putPage(mfn);
}

/* ------------------------------------------------------- entry references */

/**
 * get_page_from_l1e: what a present L1 entry needs. Read-only: a general reference.
 * RW: also PGT_writable_page, the check that refuses an RW alias of a page table.
 */
export function getPageFromL1e(hv: Hv, ctx: Ctx, lo: number, hi: number): number {
  if ((lo & _PAGE_PRESENT) === 0) return 0;
  const d = ctx.d;
  if ((lo & L1_DISALLOW_LO) !== 0 || (hi & l1DisallowHi(hv)) !== 0) {
    hv.console.gdprintk(
      'bad_l1_flags',
      `Bad L1 flags ${hx((lo & L1_DISALLOW_LO) | (((hi & l1DisallowHi(hv)) >>> 20) << 12))}`,
    );
    return -EINVAL;
  }
  const mfn = pteMfn(lo, hi);
  if (!hv.ft.mfnValid(mfn)) {
    hv.console.gdprintk('mmio', `d${d.domid} non-privileged attempt to map MMIO space ${hx(mfn)}`, mfn);
    return -EPERM;
  }
  const realOwner = hv.ft.owner[mfn]!;
  if (realOwner !== d.domid || !hv.ft.getPage(mfn, d.domid)) {
    hv.console.gdprintk(
      'wrong_owner',
      `pg_owner d${d.domid} l1e_owner d${d.domid}, but real_pg_owner d${realOwner >= 0x7ff0 ? -1 : realOwner}`,
      mfn,
    );
    logL1eError(hv, d, mfn, lo, hi);
    return -EBUSY;
  }
  if ((lo & _PAGE_RW) !== 0 && hv.enforceWritable) {
    if (getPageType(hv, ctx, mfn, PGT_writable_page) !== 0) {
      // Test-only planted defect (test/planted-defect.test.ts): accept the RW alias anyway.
      if (hv.plantNoWritableCheck) return 0;
      hv.console.gdprintk('writable_type', 'Could not get page type PGT_writable_page', mfn);
      logL1eError(hv, d, mfn, lo, hi);
      hv.ft.putPage(mfn);
      return -EBUSY;
    }
  }
  return 0;
}

function logL1eError(hv: Hv, d: Domain, mfn: number, lo: number, hi: number): void {
  hv.console.gdprintk(
    'l1e_get_error',
    `Error getting mfn ${hx(mfn)} (pfn ${hx(hv.pfnOf(mfn))}) from L1 entry ${hex64(hi, lo)} for l1e_owner d${d.domid}, pg_owner d${d.domid}`,
    mfn,
  );
}

export function putPageFromL1e(hv: Hv, lo: number, hi: number): void {
  if ((lo & _PAGE_PRESENT) === 0) return;
  const mfn = pteMfn(lo, hi);
  if ((lo & _PAGE_RW) !== 0 && hv.enforceWritable) putPageType(hv, mfn, -1);
  hv.ft.putPage(mfn);
}

/**
 * get_page_from_lNe for N = 2..4: a general and a level N-1 type reference on the
 * target, validating it if it was not a table yet. Failing that, the entry may be a
 * linear (same-level) one under the linear page-table rules.
 * `container` is the table the entry lives in; `slot` its index (for the pae L3 slot 3).
 */
export function getPageFromLne(
  hv: Hv,
  ctx: Ctx,
  level: number,
  lo: number,
  hi: number,
  container: number,
  slot: number,
): number {
  if ((lo & _PAGE_PRESENT) === 0) return 0;
  const bad = (lo & LN_DISALLOW_LO) | (hi & _PAGE_RESERVED_HI ? 0x800 : 0);
  if (bad !== 0) {
    hv.console.gdprintk(`bad_l${level}_flags` as 'bad_l2_flags', `Bad L${level} flags ${hx(lo & LN_DISALLOW_LO)}`);
    return -EINVAL;
  }
  const mfn = pteMfn(lo, hi);
  let type = pgtForLevel(level - 1);
  if (hv.paging === 'pae' && level === 3 && slot === 3) type = (type | PGT_pae_xen_l2) >>> 0;
  const rc = getPageAndType(hv, ctx, mfn, type, ctx.d.domid);
  if (rc !== -EINVAL) return rc;
  // 32-bit PAE guests may never have linear entries at L3 (XSA-185).
  if (hv.paging === 'pae' && level === 3) return rc;
  return getLinearPagetable(hv, ctx, level, lo, mfn, container) ? 0 : -EINVAL;
}

/**
 * get_lN_linear_pagetable: an entry of a level-N table pointing at a level-N table.
 * Allowed read-only only; a self-map takes nothing; another table must be the domain's,
 * already validated at that level, and (XSA-240) the chain may be one step long only.
 */
function getLinearPagetable(hv: Hv, ctx: Ctx, level: number, lo: number, target: number, container: number): boolean {
  if ((lo & _PAGE_RW) !== 0) {
    hv.console.gdprintk('linear_rw', 'Attempt to create linear p.t. with write perms', target);
    return false;
  }
  if (target === container) return true;
  const ft = hv.ft;
  if (!ft.mfnValid(target)) return false;
  const want = pgtForLevel(level);
  if ((ft.typeHi[target]! & (PGT_type_mask | PGT_validated)) >>> 0 !== (want | PGT_validated) >>> 0) return false;
  // XSA-240: the container must not itself be a linear target, the target must not
  // itself contain linear entries.
  if (ft.linear[container]! > 0 || ft.linear[target]! < 0) {
    hv.console.gdprintk(
      'linear_bad',
      `Attempt to create linear p.t. chain (mfn ${hx(container)} -> ${hx(target)})`,
      target,
    );
    return false;
  }
  if (!ft.getPage(target, ctx.d.domid)) return false;
  ft.typeCount[target]!++;
  ft.linear[target]!++;
  ft.linear[container]!--;
  return true;
}

/** put_page_from_lNe for N = 2..4 (a self-map holds nothing). */
export function putPageFromLne(hv: Hv, lo: number, hi: number, container: number): void {
  if ((lo & _PAGE_PRESENT) === 0) return;
  const mfn = pteMfn(lo, hi);
  if (mfn === container) return;
  putPageAndType(hv, mfn, container);
}

/* ------------------------------------------------------ promote / demote */

/**
 * promote_lN_table: check every guest entry and take its references. On failure, the
 * references taken for the earlier entries are released in reverse order.
 */
export function promoteTable(hv: Hv, ctx: Ctx, mfn: number, level: number): number {
  hv.counters.validations++;
  const n = tableEntries(hv, level);
  hv.vcEvents[VE_PT_ENTRIES]! += n;
  const base = mfn * FRAME_WORDS;
  const m = hv.mem32;
  const typeHi = hv.ft.typeHi[mfn]!;
  let i = 0;
  let rc = 0;
  for (; i < n; i++) {
    if (!isGuestSlot(hv, level, typeHi, i)) {
      // Xen's own slots: Xen writes its mappings there. Ours are empty (the hole).
      m[base + 2 * i] = 0;
      m[base + 2 * i + 1] = 0;
      continue;
    }
    const lo = m[base + 2 * i]!;
    const hi = m[base + 2 * i + 1]!;
    if (level === 3 && hv.paging === 'pae' && i === 3 && (lo & _PAGE_PRESENT) === 0) {
      // The 4th L3 slot holds Xen's L2: it must exist. Xen finds no page at mfn 0 there and
      // says so only in the failure line below.
      rc = -EINVAL;
      break;
    }
    rc = level === 1 ? getPageFromL1e(hv, ctx, lo, hi) : getPageFromLne(hv, ctx, level, lo, hi, mfn, i);
    if (rc !== 0) break;
    if ((lo & _PAGE_PRESENT) !== 0) adjustGuestEntry(hv, level, base + 2 * i);
  }
  if (rc === 0 && level === 3 && hv.paging === 'pae') {
    // Xen's L2 (slot 3) holds Xen's mappings for this L3 alone: it may not be shared.
    const l2 = pteMfn(m[base + 6]!, m[base + 7]!);
    if (hv.ft.typeCount[l2] !== 1) {
      hv.console.gdprintk('pae_l3_slot', 'PAE L3 3rd slot is shared', mfn);
      rc = -EINVAL;
    } else {
      // Entries 4..511 of a pae L3 are not entries at all: keep them clear.
      for (let j = 8; j < 1024; j++) m[base + j] = 0;
    }
  }
  if (rc === 0) return 0;
  hv.console.gdprintk('promote_failure', `Failure ${rc} in promote_l${level}_table: slot ${`0x${hx(i)}`}`, mfn);
  while (i-- > 0) {
    if (!isGuestSlot(hv, level, typeHi, i)) continue;
    const lo = m[base + 2 * i]!;
    const hi = m[base + 2 * i + 1]!;
    if (level === 1) putPageFromL1e(hv, lo, hi);
    else putPageFromLne(hv, lo, hi, mfn);
  }
  return rc;
}

/** demote_lN_table: release every entry's references (the table is no longer one). */
export function demoteTable(hv: Hv, mfn: number, level: number, typeHi: number): void {
  const n = tableEntries(hv, level);
  hv.vcEvents[VE_PT_ENTRIES]! += n;
  const base = mfn * FRAME_WORDS;
  const m = hv.mem32;
  for (let i = 0; i < n; i++) {
    if (!isGuestSlot(hv, level, typeHi, i)) continue;
    const lo = m[base + 2 * i]!;
    if ((lo & _PAGE_PRESENT) === 0) continue;
    const hi = m[base + 2 * i + 1]!;
    if (level === 1) putPageFromL1e(hv, lo, hi);
    else putPageFromLne(hv, lo, hi, mfn);
  }
}

/**
 * Xen adjusts x86_64 guest entries: kernel L1s get US and the guest-kernel bit, user L1s
 * get G; L2/L3 get US; L4 gets A|US. 32-bit PAE guests are left as written.
 */
export function adjustGuestEntry(hv: Hv, level: number, word: number): void {
  if (hv.paging !== 'x86_64') return;
  const m = hv.mem32;
  const lo = m[word]!;
  if (level === 1) {
    if ((lo & _PAGE_USER) === 0) {
      m[word] = (lo | _PAGE_USER) >>> 0;
      m[word + 1] = (m[word + 1]! | _PAGE_GUEST_KERNEL_HI) >>> 0;
    } else {
      m[word] = (lo | _PAGE_GLOBAL) >>> 0;
    }
  } else if (level === 4) {
    m[word] = (lo | _PAGE_ACCESSED | _PAGE_USER) >>> 0;
  } else {
    m[word] = (lo | _PAGE_USER) >>> 0;
  }
}

/** Value of an entry after adjustment, without writing (for mod_lN_entry). */
export function adjustedLo(hv: Hv, level: number, lo: number): number {
  if (hv.paging !== 'x86_64' || (lo & _PAGE_PRESENT) === 0) return lo;
  if (level === 1) return ((lo & _PAGE_USER) === 0 ? lo | _PAGE_USER : lo | _PAGE_GLOBAL) >>> 0;
  if (level === 4) return (lo | _PAGE_ACCESSED | _PAGE_USER) >>> 0;
  return (lo | _PAGE_USER) >>> 0;
}
export function adjustedHi(hv: Hv, level: number, lo: number, hi: number): number {
  if (hv.paging !== 'x86_64' || level !== 1 || (lo & _PAGE_PRESENT) === 0 || (lo & _PAGE_USER) !== 0) return hi;
  return (hi | _PAGE_GUEST_KERNEL_HI) >>> 0;
}
