/*
 * The memory-management hypercalls: mmu_update, mmuext_op and update_va_mapping.
 *
 * Arguments arrive as (lo, hi) word pairs in the transport (see src/layout.ts): `args`
 * is the word index of argument 0's low word. Guest handles are word offsets into the
 * calling vCPU's data area; one that points outside it is -EFAULT, as a failed
 * copy_from_guest is in Xen. Batches stop at the first error, which is the return value,
 * and report how many requests were done through *pdone.
 */
import {
  DOMID_SELF,
  EACCES,
  EFAULT,
  EINVAL,
  ENOSYS,
  EOPNOTSUPP,
  EPERM,
  ESRCH,
  MMU_MACHPHYS_UPDATE,
  MMU_NORMAL_PT_UPDATE,
  MMU_PT_UPDATE_NO_TRANSLATE,
  MMU_PT_UPDATE_PRESERVE_AD,
  MMUEXT_CLEAR_PAGE,
  MMUEXT_COPY_PAGE,
  MMUEXT_FLUSH_CACHE,
  MMUEXT_FLUSH_CACHE_GLOBAL,
  MMUEXT_INVLPG_ALL,
  MMUEXT_INVLPG_LOCAL,
  MMUEXT_INVLPG_MULTI,
  MMUEXT_MARK_SUPER,
  MMUEXT_NEW_BASEPTR,
  MMUEXT_NEW_USER_BASEPTR,
  MMUEXT_PIN_L1_TABLE,
  MMUEXT_PIN_L2_TABLE,
  MMUEXT_PIN_L3_TABLE,
  MMUEXT_PIN_L4_TABLE,
  MMUEXT_SET_LDT,
  MMUEXT_TLB_FLUSH_ALL,
  MMUEXT_TLB_FLUSH_LOCAL,
  MMUEXT_TLB_FLUSH_MULTI,
  MMUEXT_UNMARK_SUPER,
  MMUEXT_UNPIN_TABLE,
  PGT_pinned,
  PGT_type_mask,
  PGT_validated,
  PGT_writable_page,
  UVMF_ALL,
  UVMF_FLUSHTYPE_MASK,
  UVMF_INVLPG,
  UVMF_LOCAL,
  UVMF_NONE,
  UVMF_TLB_FLUSH,
  _PAGE_ACCESSED,
  _PAGE_DIRTY,
  _PAGE_PRESENT,
  _PAGE_PSE,
  levelOfType,
  pgtForLevel,
  FRAME_WORDS,
  PAGE_SIZE,
} from '../src/abi/xen.js';
import { GUEST_HANDLE_NULL, MMU_REQ_WORDS, MMUEXT_OP_WORDS, S_DATA_WORDS, vaIndex } from '../src/abi/layout.js';
import { flushDomain, flushDomainMask, flushTlbSlots } from './flush.js';
import type { Hv, Vcpu } from './hv.js';
import { hx } from './log.js';
import { modEntry } from './mod-entry.js';
import { type Ctx, getPageAndType, getPageType, putPageAndType, putPageType } from './page-type.js';
import { pteMfn, maddrMfn } from '../src/abi/pte.js';

/** Where a hypercall is being served: the domain, the vCPU and its data area. */
export interface CallCtx extends Ctx {
  vcpu: Vcpu;
  /** Transport word index of the data area. */
  data: number;
}

const one = new Int32Array(1);

function argLo(hv: Hv, args: number, k: number): number {
  return hv.transport[args + 2 * k]! >>> 0;
}
function argHi(hv: Hv, args: number, k: number): number {
  return hv.transport[args + 2 * k + 1]! >>> 0;
}

/** A guest handle of `words` words: its transport index, or -1 when out of bounds. */
function handle(c: CallCtx, h: number, words: number): number {
  if (h === GUEST_HANDLE_NULL || h < 0 || words < 0 || h + words > S_DATA_WORDS) return -1;
  return c.data + h;
}

/**
 * *pdone = done. Xen ignores the result of this copy_to_guest: the call returns the
 * batch's rc (0 when every request was done) even when *pdone cannot be written.
 */
function writePdone(hv: Hv, c: CallCtx, h: number, done: number): void {
  if (h === GUEST_HANDLE_NULL) return;
  const idx = handle(c, h, 1);
  if (idx >= 0) hv.transport[idx] = done;
}

/** foreigndom: a PV domU may only name itself. */
function checkForeign(hv: Hv, c: CallCtx, dom: number): number {
  if (dom === DOMID_SELF || dom === c.d.domid) return 0;
  if (!hv.domains.has(dom)) {
    hv.console.gdprintk('foreign_domain', `Unknown domain d${dom}`);
    return -ESRCH;
  }
  hv.console.gdprintk('foreign', `d${c.d.domid} may not act on d${dom}'s page tables`);
  return -EPERM;
}

function flushLocal(hv: Hv, c: CallCtx): void {
  one[0] = c.slot;
  flushTlbSlots(hv, one, 1, c.slot);
}

/* ------------------------------------------------------------- mmu_update */

/**
 * The arguments every batched call shares: (array, count, pdone, foreigndom). Returns the
 * transport index of the array, or a negative errno (bad foreigndom, bad handle).
 */
function batchArgs(hv: Hv, c: CallCtx, args: number, wordsPerItem: number): number {
  const rc = checkForeign(hv, c, argLo(hv, args, 3) & 0xffff);
  if (rc !== 0) return rc;
  const count = argLo(hv, args, 1);
  const base = handle(c, argLo(hv, args, 0), count * wordsPerItem);
  if (base < 0) return count === 0 ? 0 : -EFAULT;
  return base;
}

export function doMmuUpdate(hv: Hv, c: CallCtx, args: number): number {
  const count = argLo(hv, args, 1);
  const pdone = argLo(hv, args, 2);
  const base = batchArgs(hv, c, args, MMU_REQ_WORDS);
  if (base < 0) return base;
  let rc = 0;
  const t = hv.transport;
  const ft = hv.ft;
  const dom = c.d.domid;
  let done = 0;
  let flushUpper = false;
  for (; done < count; done++) {
    const w = base + done * MMU_REQ_WORDS;
    const plo = t[w]! >>> 0;
    const phi = t[w + 1]! >>> 0;
    let vlo = t[w + 2]! >>> 0;
    const vhi = t[w + 3]! >>> 0;
    const cmd = plo & 7;
    const mfn = maddrMfn(plo, phi);
    if (cmd === MMU_NORMAL_PT_UPDATE || cmd === MMU_PT_UPDATE_PRESERVE_AD || cmd === MMU_PT_UPDATE_NO_TRANSLATE) {
      const i = (plo & 0xfff) >>> 3;
      if (!ft.mfnValid(mfn) || !ft.getPage(mfn, dom)) {
        hv.console.gdprintk('normal_update_page', `Could not get page for normal update`, mfn);
        rc = -EINVAL;
        break;
      }
      const typeHi = ft.typeHi[mfn]!;
      const level = levelOfType(typeHi);
      if (level !== 0 && ft.typeCount[mfn]! > 0 && (typeHi & PGT_validated) !== 0) {
        if (cmd === MMU_PT_UPDATE_PRESERVE_AD) {
          vlo = (vlo | (hv.mem32[mfn * FRAME_WORDS + 2 * i]! & (_PAGE_ACCESSED | _PAGE_DIRTY))) >>> 0;
        }
        rc = modEntry(hv, c, mfn, level, typeHi, i, vlo, vhi);
        if (rc === 0 && level > 1) flushUpper = true;
      } else {
        rc = plainWrite(hv, c, mfn, i, vlo, vhi, cmd === MMU_PT_UPDATE_PRESERVE_AD);
      }
      ft.putPage(mfn);
      if (rc !== 0) break;
      hv.counters.mmuUpdates++;
    } else if (cmd === MMU_MACHPHYS_UPDATE) {
      if (!ft.mfnValid(mfn) || !ft.getPage(mfn, dom)) {
        hv.console.gdprintk('machphys_page', `Could not get page for mach->phys update`, mfn);
        rc = -EINVAL;
        break;
      }
      ft.m2p[mfn] = vlo | 0;
      ft.putPage(mfn);
    } else {
      hv.console.gdprintk('bad_mmu_cmd', `Invalid page update command ${hx(cmd)}`);
      rc = -ENOSYS;
      break;
    }
  }
  // XSA-286: an L2..L4 change may have removed translations that other vCPUs cache.
  if (flushUpper) flushDomain(hv, c.d, c.slot);
  writePdone(hv, c, pdone, done);
  return rc;
}

/** An update of a frame that is not a page table in use: plain memory, if writable. */
function plainWrite(hv: Hv, c: CallCtx, mfn: number, i: number, lo: number, hi: number, ad: boolean): number {
  const ft = hv.ft;
  const isWritable = (ft.typeHi[mfn]! & PGT_type_mask) >>> 0 === PGT_writable_page && ft.typeCount[mfn]! > 0;
  if (!isWritable) {
    const rc = getPageType(hv, c, mfn, PGT_writable_page);
    if (rc !== 0) return rc;
  }
  const w = mfn * FRAME_WORDS + 2 * i;
  hv.mem32[w] = ad ? (lo | (hv.mem32[w]! & (_PAGE_ACCESSED | _PAGE_DIRTY))) >>> 0 : lo;
  hv.mem32[w + 1] = hi;
  if (!isWritable) putPageType(hv, mfn, -1);
  return 0;
}

/* -------------------------------------------------------------- mmuext_op */

export function doMmuextOp(hv: Hv, c: CallCtx, args: number): number {
  const count = argLo(hv, args, 1);
  const pdone = argLo(hv, args, 2);
  const base = batchArgs(hv, c, args, MMUEXT_OP_WORDS);
  if (base < 0) return base;
  let rc = 0;
  let done = 0;
  for (; done < count; done++) {
    const w = base + done * MMUEXT_OP_WORDS;
    rc = mmuextOne(hv, c, w);
    if (rc !== 0) break;
  }
  writePdone(hv, c, pdone, done);
  return rc;
}

function mmuextOne(hv: Hv, c: CallCtx, w: number): number {
  const t = hv.transport;
  const cmd = t[w]! >>> 0;
  const a1lo = t[w + 2]! >>> 0;
  const a1hi = t[w + 3]! >>> 0;
  const a2lo = t[w + 4]! >>> 0;
  const a2hi = t[w + 5]! >>> 0;
  const mfn = a1lo + a1hi * 0x100000000;
  switch (cmd) {
    case MMUEXT_PIN_L1_TABLE:
    case MMUEXT_PIN_L2_TABLE:
    case MMUEXT_PIN_L3_TABLE:
    case MMUEXT_PIN_L4_TABLE:
      return pinTable(hv, c, mfn, cmd - MMUEXT_PIN_L1_TABLE + 1);
    case MMUEXT_UNPIN_TABLE:
      return unpinTable(hv, c, mfn);
    case MMUEXT_NEW_BASEPTR:
      return newGuestCr3(hv, c, mfn, false);
    case MMUEXT_NEW_USER_BASEPTR:
      if (hv.paging === 'pae') return -EINVAL;
      return newGuestCr3(hv, c, mfn, true);
    case MMUEXT_TLB_FLUSH_LOCAL:
    case MMUEXT_INVLPG_LOCAL:
      flushLocal(hv, c);
      return 0;
    case MMUEXT_TLB_FLUSH_MULTI:
    case MMUEXT_INVLPG_MULTI: {
      const h = handle(c, a2lo, 2);
      if (h < 0) return -EFAULT;
      flushDomainMask(hv, c.d, t[h]! >>> 0, t[h + 1]! >>> 0, c.slot);
      return 0;
    }
    case MMUEXT_TLB_FLUSH_ALL:
    case MMUEXT_INVLPG_ALL:
      flushDomain(hv, c.d, c.slot);
      return 0;
    case MMUEXT_FLUSH_CACHE:
      hv.console.gdprintk('flush_cache', 'Non-physdev domain tried to FLUSH_CACHE.');
      return -EACCES;
    case MMUEXT_FLUSH_CACHE_GLOBAL:
      hv.console.gdprintk('flush_cache', 'Non-physdev domain tried to FLUSH_CACHE_GLOBAL.');
      return -EINVAL;
    case MMUEXT_SET_LDT: {
      // __addr_ok: a canonical address outside Xen's hole (x86_64: bits 47..63 all equal).
      const ptr = canonical(hv, a1lo, a1hi);
      const ents = a2lo;
      const inXen = ptr >= hv.layout.hypervisorVirtStart && ptr < hv.layout.hypervisorVirtEnd;
      if (ptr < 0 || ptr % PAGE_SIZE !== 0 || ents > 8192 || a2hi !== 0 || inXen) {
        hv.console.gdprintk('bad_ldt', `Bad args to SET_LDT: ptr=${hx(a1lo)}, ents=${hx(ents)}`);
        return -EINVAL;
      }
      c.vcpu.ldtBase = ptr;
      c.vcpu.ldtEnts = ents;
      return 0;
    }
    case MMUEXT_CLEAR_PAGE: {
      const rc = getPageAndType(hv, c, mfn, PGT_writable_page, c.d.domid);
      if (rc !== 0) {
        hv.console.gdprintk('copy_clear', `Error clearing mfn ${hx(mfn)}`, mfn);
        return -EINVAL;
      }
      hv.mem32.fill(0, mfn * FRAME_WORDS, (mfn + 1) * FRAME_WORDS);
      putPageAndType(hv, mfn, -1);
      return 0;
    }
    case MMUEXT_COPY_PAGE: {
      const src = a2lo + a2hi * 0x100000000;
      if (!hv.ft.mfnValid(src) || !hv.ft.getPage(src, c.d.domid)) {
        hv.console.gdprintk('copy_clear', `Error copying from mfn ${hx(src)}`, src);
        return -EINVAL;
      }
      const rc = getPageAndType(hv, c, mfn, PGT_writable_page, c.d.domid);
      if (rc !== 0) {
        hv.ft.putPage(src);
        hv.console.gdprintk('copy_clear', `Error copying to mfn ${hx(mfn)}`, mfn);
        return -EINVAL;
      }
      hv.mem32.copyWithin(mfn * FRAME_WORDS, src * FRAME_WORDS, (src + 1) * FRAME_WORDS);
      putPageAndType(hv, mfn, -1);
      hv.ft.putPage(src);
      return 0;
    }
    case MMUEXT_MARK_SUPER:
    case MMUEXT_UNMARK_SUPER:
      hv.console.gdprintk('superpage', 'PV superpages are not supported');
      return -EOPNOTSUPP;
    default:
      hv.console.gdprintk('bad_mmuext_cmd', `Invalid extended pt command ${`0x${hx(cmd)}`}`);
      return -ENOSYS;
  }
}

/** MMUEXT_PIN_Ln_TABLE: all or nothing -- a failed pin holds no reference at all. */
function pinTable(hv: Hv, c: CallCtx, mfn: number, level: number): number {
  // A 32-bit guest has no L4: Xen quietly ignores the request.
  if (level === 4 && hv.paging === 'pae') return 0;
  if (level > hv.levels) return -EINVAL;
  hv.counters.pinsAttempted++;
  const ft = hv.ft;
  const rc = getPageAndType(hv, c, mfn, pgtForLevel(level), c.d.domid);
  if (rc !== 0) {
    hv.counters.pinsRefused++;
    hv.console.gdprintk('pin_error', `Error ${rc} while pinning mfn ${hx(mfn)}`, mfn);
    return rc;
  }
  if ((ft.typeHi[mfn]! & PGT_pinned) !== 0) {
    hv.console.gdprintk('already_pinned', `mfn ${hx(mfn)} already pinned`, mfn);
    putPageAndType(hv, mfn, -1);
    hv.counters.pinsRefused++;
    return -EINVAL;
  }
  ft.typeHi[mfn] = (ft.typeHi[mfn]! | PGT_pinned) >>> 0;
  return 0;
}

function unpinTable(hv: Hv, c: CallCtx, mfn: number): number {
  const ft = hv.ft;
  if (!ft.mfnValid(mfn) || !ft.getPage(mfn, c.d.domid)) {
    hv.console.gdprintk('not_pinned', `mfn ${hx(mfn)} bad domain`, mfn);
    return -EINVAL;
  }
  if ((ft.typeHi[mfn]! & PGT_pinned) === 0) {
    ft.putPage(mfn);
    hv.console.gdprintk('not_pinned', `mfn ${hx(mfn)} not pinned`, mfn);
    return -EINVAL;
  }
  ft.typeHi[mfn] = (ft.typeHi[mfn]! & ~PGT_pinned) >>> 0;
  putPageAndType(hv, mfn, -1);
  ft.putPage(mfn);
  return 0;
}

/** new_guest_cr3: take the root references on the new table, then drop the old ones. */
function newGuestCr3(hv: Hv, c: CallCtx, mfn: number, user: boolean): number {
  const v = c.vcpu;
  const old = user ? v.userCr3 : v.cr3;
  if (user && mfn === 0) {
    v.userCr3 = -1;
    if (old >= 0) putPageAndType(hv, old, -1);
    return 0;
  }
  if (mfn !== old) {
    const rc = getPageAndType(hv, c, mfn, pgtForLevel(hv.rootLevel), c.d.domid);
    if (rc !== 0) {
      hv.console.gdprintk(
        user ? 'user_baseptr_error' : 'baseptr_error',
        user ? `Error while installing new user baseptr ${hx(mfn)}` : `Error while installing new baseptr ${hx(mfn)}`,
        mfn,
      );
      return rc;
    }
    if (user) v.userCr3 = mfn;
    else v.cr3 = mfn;
    if (old >= 0) putPageAndType(hv, old, -1);
  }
  flushLocal(hv, c);
  return 0;
}

/* ------------------------------------------------------ update_va_mapping */

export function doUpdateVaMapping(hv: Hv, c: CallCtx, args: number): number {
  const vlo = argLo(hv, args, 0);
  const vhi = argHi(hv, args, 0);
  const nlo = argLo(hv, args, 1);
  const nhi = argHi(hv, args, 1);
  const flags = argLo(hv, args, 2);
  const va = canonical(hv, vlo, vhi);
  if (va < 0) return -EINVAL;
  const l1 = guestMapL1e(hv, c.vcpu.cr3, va);
  if (l1 < 0) {
    hv.console.gdprintk('uva_error', `Could not find L1 for va ${hx(vlo)} (no valid L1 table maps it)`);
    return -EINVAL;
  }
  const ft = hv.ft;
  if (ft.owner[l1] !== c.d.domid || !ft.getPage(l1, c.d.domid)) return -EINVAL;
  const rc = modEntry(hv, c, l1, 1, ft.typeHi[l1]!, vaIndex(va, 1), nlo, nhi);
  ft.putPage(l1);
  // XSA-279: no flush at all when the update failed.
  if (rc !== 0) return rc;
  const type = flags & UVMF_FLUSHTYPE_MASK;
  if (type === UVMF_NONE) return 0;
  // Type 3 names no flush: Xen's switch on the flush type has no default, so none is done.
  if (type !== UVMF_TLB_FLUSH && type !== UVMF_INVLPG) return 0;
  const rest = (flags & ~UVMF_FLUSHTYPE_MASK) >>> 0;
  if (rest === UVMF_LOCAL) {
    flushLocal(hv, c);
  } else if (rest === UVMF_ALL) {
    flushDomain(hv, c.d, c.slot);
  } else {
    // Any other value is a guest handle (a byte offset here) of a vCPU bitmap.
    if (rest % 4 !== 0) return -EFAULT;
    const h = handle(c, rest >>> 2, 2);
    if (h < 0) return -EFAULT;
    flushDomainMask(hv, c.d, hv.transport[h]! >>> 0, hv.transport[h + 1]! >>> 0, c.slot);
  }
  return 0;
}

/** A VA as a number (x86_64: its low 48 bits), or -1 if non-canonical. */
function canonical(hv: Hv, lo: number, hi: number): number {
  if (hv.paging === 'pae') return hi === 0 ? lo : -1;
  const top = hi >>> 15; // bits 47..63
  if (top !== 0 && top !== 0x1ffff) return -1;
  return (hi & 0xffff) * 0x100000000 + lo;
}

/**
 * guest_map_l1e: walk the vCPU's current tables to the validated L1 that maps `va`.
 * Returns the L1's mfn, or -1 (an absent or PSE L2 entry, or no validated L1 there).
 */
export function guestMapL1e(hv: Hv, root: number, va: number): number {
  if (root < 0) return -1;
  let table = root;
  const m = hv.mem32;
  for (let level = hv.levels; level > 1; level--) {
    const i = vaIndex(va, level);
    const lo = m[table * FRAME_WORDS + 2 * i]!;
    if ((lo & _PAGE_PRESENT) === 0) return -1;
    if (level === 2 && (lo & _PAGE_PSE) !== 0) return -1;
    table = pteMfn(lo, m[table * FRAME_WORDS + 2 * i + 1]!);
    if (!hv.ft.mfnValid(table)) return -1;
  }
  const ti = hv.ft.typeHi[table]!;
  if ((ti & PGT_type_mask) >>> 0 !== 0x20000000 || (ti & PGT_validated) === 0 || hv.ft.typeCount[table] === 0) {
    return -1;
  }
  return table;
}
