/*
 * mod_lN_entry: the only way a validated page table changes. Each returns 0 or a
 * negative errno; on failure the table and every count are as they were.
 *
 * Order on success: take the new entry's references, write it, then drop the old
 * entry's -- so a frame referenced by both is never transiently unreferenced.
 */
import { EINVAL, EPERM, _PAGE_PRESENT, FRAME_WORDS } from '../src/abi/xen.js';
import type { Hv } from './hv.js';
import {
  type Ctx,
  FASTPATH_FLAG_WHITELIST_HI,
  FASTPATH_FLAG_WHITELIST_LO,
  L1_DISALLOW_LO,
  LN_DISALLOW_LO,
  adjustedHi,
  adjustedLo,
  getPageFromL1e,
  getPageFromLne,
  isGuestSlot,
  l1DisallowHi,
  putPageFromL1e,
  putPageFromLne,
} from './page-type.js';
import { hx } from './log.js';

/** Do old and new differ in more than the fast-path flags? (address, P, RW, PSE, ...) */
function hasChanged(olo: number, ohi: number, nlo: number, nhi: number): boolean {
  return (((olo ^ nlo) & ~FASTPATH_FLAG_WHITELIST_LO) | ((ohi ^ nhi) & ~FASTPATH_FLAG_WHITELIST_HI)) !== 0;
}

/**
 * Write `(lo, hi)` into slot `i` of validated table `mfn` of `level`, under the rules of
 * that level. `typeHi` is the table's type word (for Xen-private slots).
 * Returns 0 or -errno; sets hv's "wroteUpper" through the return of modUpperLevel.
 */
export function modEntry(
  hv: Hv,
  ctx: Ctx,
  mfn: number,
  level: number,
  typeHi: number,
  i: number,
  lo: number,
  hi: number,
): number {
  const word = mfn * FRAME_WORDS + 2 * i;
  const m = hv.mem32;
  const olo = m[word]!;
  const ohi = m[word + 1]!;

  if (level === 1) {
    if ((lo & _PAGE_PRESENT) !== 0) {
      if ((lo & L1_DISALLOW_LO) !== 0 || (hi & l1DisallowHi(hv)) !== 0) {
        hv.console.gdprintk('bad_l1_flags', `Bad L1 flags ${hx(lo & L1_DISALLOW_LO)}`);
        return -EINVAL;
      }
      const alo = adjustedLo(hv, 1, lo);
      const ahi = adjustedHi(hv, 1, lo, hi);
      // Fast path for sufficiently similar mappings: no new references needed.
      if ((olo & _PAGE_PRESENT) !== 0 && !hasChanged(olo, ohi, alo, ahi)) {
        m[word] = alo;
        m[word + 1] = ahi;
        return 0;
      }
      const rc = getPageFromL1e(hv, ctx, lo, hi);
      if (rc !== 0) return rc;
      m[word] = alo;
      m[word + 1] = ahi;
    } else {
      m[word] = lo;
      m[word + 1] = hi;
    }
    putPageFromL1e(hv, olo, ohi);
    return 0;
  }

  // L2..L4.
  if (!isGuestSlot(hv, level, typeHi, i)) {
    hv.console.gdprintk(
      level === 4 ? 'xen_l4_slot' : 'xen_l2_slot',
      `L${level} update in Xen-private area, slot ${`0x${hx(i)}`}`,
      mfn,
    );
    return level === 4 ? -EINVAL : -EPERM;
  }
  if (level === 3 && hv.paging === 'pae' && i >= 3) {
    // The 4th slot holds Xen's L2 and entries past it do not exist.
    hv.console.gdprintk('pae_l3_slot', `Attempt to update pae L3 slot ${i} of mfn ${hx(mfn)}`, mfn);
    return -EINVAL;
  }
  if ((lo & _PAGE_PRESENT) !== 0) {
    if ((lo & LN_DISALLOW_LO) !== 0) {
      hv.console.gdprintk(`bad_l${level}_flags` as 'bad_l2_flags', `Bad L${level} flags ${hx(lo & LN_DISALLOW_LO)}`);
      return -EINVAL;
    }
    const alo = adjustedLo(hv, level, lo);
    if ((olo & _PAGE_PRESENT) !== 0 && !hasChanged(olo, ohi, alo, hi)) {
      m[word] = alo;
      m[word + 1] = hi;
      return 0;
    }
    const rc = getPageFromLne(hv, ctx, level, lo, hi, mfn, i);
    if (rc !== 0) return rc;
    m[word] = alo;
    m[word + 1] = hi;
  } else {
    m[word] = lo;
    m[word + 1] = hi;
  }
  putPageFromLne(hv, olo, ohi, mfn);
  return 0;
}
