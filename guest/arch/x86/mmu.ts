/*
 * The vCPU's software MMU: a TLB in front of a walk of the current page tables in
 * machine memory, honouring P, RW and US, plus the TLB-shootdown mailbox handler.
 *
 * The TLB (v86 style) is two flat typed arrays indexed by a hash of the virtual page
 * number: a tag (the vpn, a Float64Array so x86_64's 36-bit vpns compare exactly) and a
 * value packing the machine frame and the rights the walk granted:
 *
 *     value = mfn << 3 | TLB_VALID | TLB_RW? | TLB_USER?        (an Int32)
 *
 * An access asks for TLB_VALID | TLB_RW (write) | TLB_USER (user mode); the fast path is
 * one tag compare and one mask-and-compare. A hit that lacks a right is not a fault: the
 * walk decides (the tables may have been upgraded since, as Linux's spurious-fault
 * handling expects). A list of filled slots makes a flush cost what was used.
 *
 * Walk rules (x86 with CR0.WP=1, as a PV guest kernel sees them):
 *  - every level must be Present;
 *  - a write needs RW at every level, kernel accesses included;
 *  - a user access needs US at every level; kernel accesses ignore US;
 *  - pae: the L3 (4 entries, index va>>>30) is a PDPT: only P counts there, its RW/US
 *    are reserved on real hardware and ignored here;
 *  - PSE at L2 and above is refused by Xen for PV guests, so the walk faults on it;
 *  - A/D bits are not written back: validated tables change only through Xen.
 *
 * Faults are reported, not thrown: translate() returns -1 and records (va, access,
 * level, reason) in numeric fields; fault() builds a descriptor on demand.
 *
 * Debug switch: PVMMU_TLB_CHECK=1 (or the tlbCheck option) re-walks on every hit and
 * throws when the TLB holds a frame or a right the tables no longer give -- either a TLB
 * bug or a flush that was never delivered (a guest touching a stale mapping).
 */
import {
  type PagingMode,
  FRAME_WORDS,
  PAGE_SIZE,
  _PAGE_PRESENT,
  _PAGE_PSE,
  _PAGE_RW,
  _PAGE_USER,
} from '../../../src/abi/xen.js';
import {
  RS_FLUSH_ANY,
  RS_FLUSH_PENDING,
  S_FLUSHES,
  S_HEADER_WORDS,
  S_IPIS,
  S_RUNSTATE,
  slotBase,
  vaIndex,
} from '../../../src/abi/layout.js';
import { pteMfn } from '../../../src/abi/pte.js';

/* The value bits line up with the PTE's P, RW and US so the walk can AND them in. */
export const TLB_VALID = _PAGE_PRESENT;
export const TLB_RW = _PAGE_RW;
export const TLB_USER = _PAGE_USER;
const TLB_MFN_SHIFT = 3;

/** TLB entries (a power of two). 8192 x (8 + 4 + 4) bytes = 128 KiB per vCPU. */
export const TLB_ENTRIES = 1 << 13;
const TLB_MASK = TLB_ENTRIES - 1;
const TLB_EMPTY = -1;

/**
 * TLB slot of a vpn given as its bits 0..19 (vlo) and VA bits 32..47 (vhi). Folding the
 * high vpn bits in keeps user (0x08048000) and kernel (0xC0048000) pages apart.
 */
function tlbIndex(vlo: number, vhi: number): number {
  return (vlo ^ (vlo >>> 13) ^ (vhi << 7)) & TLB_MASK;
}

/** Why a walk failed. */
export const FAULT_NONE = 0;
export const FAULT_NOT_PRESENT = 1;
export const FAULT_PROTECTION = 2; /** a write without RW somewhere on the path */
export const FAULT_USER = 3; /** a user access without US somewhere on the path */
export const FAULT_RESERVED = 4; /** PSE (a superpage) at L2 or above */
export const FAULT_BAD_MFN = 5; /** an entry points outside machine memory */
export const FAULT_NO_BASEPTR = 6; /** no page tables loaded */

export const FAULT_NAMES: Readonly<Record<number, string>> = {
  0: 'none',
  1: 'not_present',
  2: 'protection',
  3: 'user',
  4: 'reserved',
  5: 'bad_mfn',
  6: 'no_baseptr',
};

/** A page fault, as a guest's do_page_fault would want to hear about it. */
export interface PageFault {
  va: number;
  write: boolean;
  user: boolean;
  /** Page-table level whose entry stopped the walk (4..1), 0 for no_baseptr. */
  level: number;
  reason: string;
}

export interface MmuOptions {
  /**
   * The transport (as Int32Array) and this vCPU's slot: where the runstate mailbox and the
   * S_FLUSHES / S_IPIS counters live. Without them the MMU gets a private mailbox.
   */
  mailbox?: Int32Array;
  slot?: number;
  /** Re-walk on every hit and throw on a mismatch. Default: env PVMMU_TLB_CHECK === '1'. */
  tlbCheck?: boolean;
}

export class Mmu {
  readonly paging: PagingMode;
  readonly levels: 3 | 4;
  /** Machine memory as words: entry i of frame m is mem32[m * FRAME_WORDS + 2i] (lo), +1 (hi). */
  readonly mem32: Uint32Array;
  readonly mem8: Uint8Array;
  readonly frames: number;
  /** TLB flushes done (full flushes, baseptr loads and serviced shootdowns). */
  flushCount = 0;
  /** TLB misses (walks) so far. */
  walks = 0;
  /** High word of the last load64. */
  hi = 0;

  readonly #tag = new Float64Array(TLB_ENTRIES).fill(TLB_EMPTY);
  readonly #val = new Int32Array(TLB_ENTRIES);
  readonly #filled = new Int32Array(TLB_ENTRIES);
  #nFilled = 0;
  #baseptr = -1;
  readonly #check: boolean;
  readonly #mailbox: Int32Array;
  readonly #rs: number;
  readonly #flushesIdx: number;
  readonly #ipisIdx: number;

  #faultVa = 0;
  #faultAcc = 0;
  #faultLevel = 0;
  #faultReason = FAULT_NONE;

  constructor(mem: SharedArrayBuffer, paging: PagingMode, opts: MmuOptions = {}) {
    this.paging = paging;
    this.levels = paging === 'pae' ? 3 : 4;
    this.mem32 = new Uint32Array(mem);
    this.mem8 = new Uint8Array(mem);
    this.frames = Math.floor(mem.byteLength / PAGE_SIZE);
    this.#check = opts.tlbCheck ?? process.env.PVMMU_TLB_CHECK === '1';
    let base = 0;
    if (opts.mailbox !== undefined) {
      this.#mailbox = opts.mailbox;
      base = slotBase(opts.slot ?? 0);
    } else {
      this.#mailbox = new Int32Array(new SharedArrayBuffer(S_HEADER_WORDS * 4));
    }
    this.#rs = base + S_RUNSTATE;
    this.#flushesIdx = base + S_FLUSHES;
    this.#ipisIdx = base + S_IPIS;
  }

  /* ------------------------------------------------------------ the hot path */

  /**
   * Machine frame backing `va` for a read or a write, or -1 on a fault (see fault()).
   * Kernel mode unless `user`.
   */
  translate(va: number, write: boolean, user = false): number {
    this.pollInterrupts(); // a shootdown that reached us while running: take it first
    const vlo = va >>> 12; // vpn bits 0..19 (all of a pae vpn)
    const vhi = (va / 4294967296) | 0; // va bits 32..47 (0 in pae)
    const vpn = vhi * 1048576 + vlo;
    const i = tlbIndex(vlo, vhi);
    const acc = TLB_VALID | (write ? TLB_RW : 0) | (user ? TLB_USER : 0);
    if (this.#tag[i] === vpn) {
      const v = this.#val[i]!;
      if ((v & acc) === acc) {
        if (this.#check) this.#checkHit(va, v);
        return v >>> TLB_MFN_SHIFT;
      }
    }
    return this.#miss(va, acc, i, vpn);
  }

  /** Word index in mem32 of the aligned word at `va`, or -1 on a fault. */
  wordIndex(va: number, write: boolean): number {
    const mfn = this.translate(va, write);
    return mfn < 0 ? -1 : mfn * FRAME_WORDS + ((va & 0xfff) >>> 2);
  }

  /** The 32-bit word at `va` (4-aligned), unsigned, or -1 on a fault. */
  load32(va: number): number {
    const mfn = this.translate(va, false);
    if (mfn < 0) return -1;
    return this.mem32[mfn * FRAME_WORDS + ((va & 0xfff) >>> 2)]!;
  }

  /** Store a 32-bit word at `va` (4-aligned): 0, or -1 on a fault. */
  store32(va: number, value: number): number {
    const mfn = this.translate(va, true);
    if (mfn < 0) return -1;
    this.mem32[mfn * FRAME_WORDS + ((va & 0xfff) >>> 2)] = value;
    return 0;
  }

  /** The low word of the 64-bit value at `va` (8-aligned), -1 on a fault; high word in `hi`. */
  load64(va: number): number {
    const mfn = this.translate(va, false);
    if (mfn < 0) return -1;
    const w = mfn * FRAME_WORDS + ((va & 0xfff) >>> 2);
    this.hi = this.mem32[w + 1]!;
    return this.mem32[w]!;
  }

  /** Store (lo, hi) at `va` (8-aligned): 0, or -1 on a fault. */
  store64(va: number, lo: number, hi: number): number {
    const mfn = this.translate(va, true);
    if (mfn < 0) return -1;
    const w = mfn * FRAME_WORDS + ((va & 0xfff) >>> 2);
    this.mem32[w] = lo;
    this.mem32[w + 1] = hi;
    return 0;
  }

  /** Copy `len` bytes at `va` into dst[off..]: 0, or -1 on a fault (dst may be partly filled). */
  readBytes(va: number, dst: Uint8Array, off = 0, len = dst.length - off): number {
    while (len > 0) {
      const mfn = this.translate(va, false);
      if (mfn < 0) return -1;
      const pgoff = va & 0xfff;
      const n = Math.min(len, PAGE_SIZE - pgoff);
      const src = mfn * PAGE_SIZE + pgoff;
      dst.set(this.mem8.subarray(src, src + n), off);
      va += n;
      off += n;
      len -= n;
    }
    return 0;
  }

  /**
   * Copy src[off..off+len) to `va`: 0, or -1 on a fault. Every page is translated before
   * the first byte is written, so a faulting copy writes nothing.
   */
  writeBytes(va: number, src: Uint8Array, off = 0, len = src.length - off): number {
    const end = va + len;
    for (let p = va - (va & 0xfff); p < end; p += PAGE_SIZE) {
      if (this.translate(Math.max(p, va), true) < 0) return -1;
    }
    while (len > 0) {
      const mfn = this.translate(va, true);
      const pgoff = va & 0xfff;
      const n = Math.min(len, PAGE_SIZE - pgoff);
      this.mem8.set(src.subarray(off, off + n), mfn * PAGE_SIZE + pgoff);
      va += n;
      off += n;
      len -= n;
    }
    return 0;
  }

  /* --------------------------------------------------------------- flushing */

  /** The root page table the walk starts from (CR3); loading it flushes the TLB. */
  get baseptr(): number {
    return this.#baseptr;
  }

  setBaseptr(mfn: number): void {
    this.#baseptr = mfn;
    this.flushAll();
  }

  /** Forget every translation (local_flush_tlb). Costs what was filled. */
  flushAll(): void {
    const tag = this.#tag;
    const filled = this.#filled;
    for (let k = 0; k < this.#nFilled; k++) tag[filled[k]!] = TLB_EMPTY;
    this.#nFilled = 0;
    this.flushCount++;
  }

  /** Forget the translation of one page (__flush_tlb_one / INVLPG). */
  invlpg(va: number): void {
    const vlo = va >>> 12;
    const vhi = (va / 4294967296) | 0;
    const i = tlbIndex(vlo, vhi);
    if (this.#tag[i] === vhi * 1048576 + vlo) this.#tag[i] = TLB_EMPTY;
  }

  /** Translations currently held. */
  get tlbEntries(): number {
    let n = 0;
    for (let k = 0; k < this.#nFilled; k++) if (this.#tag[this.#filled[k]!] !== TLB_EMPTY) n++;
    return n;
  }

  /** Service a pending shootdown if one is posted (for guest spin loops). */
  pollInterrupts(): void {
    if ((Atomics.load(this.#mailbox, this.#rs) & RS_FLUSH_PENDING) !== 0) this.handleFlush(true);
  }

  /**
   * The flush-IPI handler (Linux's smp_invalidate_interrupt): flush, then acknowledge by
   * clearing RS_FLUSH_PENDING and waking the poster. `ipi`: the flush reached us while
   * we were running (the poster is waiting), counted in S_IPIS.
   *
   * Flushing before the acknowledgement is the point: once the bit is clear the poster
   * may reuse the frame. A second flush posted between our flushAll and the Atomics.and
   * is covered by the same flush: nothing was refilled in between.
   */
  handleFlush(ipi: boolean): void {
    this.flushAll();
    const mb = this.#mailbox;
    Atomics.and(mb, this.#rs, ~RS_FLUSH_ANY);
    Atomics.notify(mb, this.#rs);
    Atomics.add(mb, this.#flushesIdx, 1);
    if (ipi) Atomics.add(mb, this.#ipisIdx, 1);
  }

  /* ----------------------------------------------------------------- faults */

  /** The last fault, as a descriptor (allocates; not for the hot path). */
  fault(): PageFault {
    return {
      va: this.#faultVa,
      write: (this.#faultAcc & TLB_RW) !== 0,
      user: (this.#faultAcc & TLB_USER) !== 0,
      level: this.#faultLevel,
      reason: FAULT_NAMES[this.#faultReason] ?? 'unknown',
    };
  }

  /* ------------------------------------------------------------------ walk */

  #miss(va: number, acc: number, i: number, vpn: number): number {
    const v = this.walk(va, acc);
    if (v < 0) return -1;
    if (this.#tag[i] === TLB_EMPTY) this.#filled[this.#nFilled++] = i;
    this.#tag[i] = vpn;
    this.#val[i] = v;
    return v >>> TLB_MFN_SHIFT;
  }

  /**
   * Walk the current page tables for `va` with access `acc` (TLB_VALID | TLB_RW? |
   * TLB_USER?). Returns the TLB value (mfn << 3 | rights) or -1, recording the fault.
   * Does not touch the TLB: the slow reference the TLB is checked against.
   */
  walk(va: number, acc: number): number {
    this.walks++;
    let mfn = this.#baseptr;
    if (mfn < 0) return this.#fault(va, acc, 0, FAULT_NO_BASEPTR);
    const m = this.mem32;
    const need = acc & (TLB_RW | TLB_USER);
    let rights = TLB_RW | TLB_USER;
    let deniedLevel = 0;
    let deniedReason = FAULT_NONE;
    for (let level = this.levels; level >= 1; level--) {
      const w = mfn * FRAME_WORDS + 2 * vaIndex(va, level);
      const lo = m[w]!;
      const hi = m[w + 1]!;
      if ((lo & _PAGE_PRESENT) === 0) return this.#fault(va, acc, level, FAULT_NOT_PRESENT);
      if (level >= 2 && (lo & _PAGE_PSE) !== 0) return this.#fault(va, acc, level, FAULT_RESERVED);
      mfn = pteMfn(lo, hi);
      if (mfn >= this.frames) return this.#fault(va, acc, level, FAULT_BAD_MFN);
      if (level === 3 && this.levels === 3) continue; // a PDPT entry: only P counts
      rights &= lo;
      if (deniedLevel === 0 && (rights & need) !== need) {
        deniedLevel = level;
        deniedReason = (need & TLB_RW) !== 0 && (lo & TLB_RW) === 0 ? FAULT_PROTECTION : FAULT_USER;
      }
    }
    if (deniedLevel !== 0) return this.#fault(va, acc, deniedLevel, deniedReason);
    return (mfn << TLB_MFN_SHIFT) | TLB_VALID | rights;
  }

  #fault(va: number, acc: number, level: number, reason: number): number {
    this.#faultVa = va;
    this.#faultAcc = acc;
    this.#faultLevel = level;
    this.#faultReason = reason;
    return -1;
  }

  /** PVMMU_TLB_CHECK: the hit `v` must agree with a fresh walk (same frame, no extra right). */
  #checkHit(va: number, v: number): void {
    const w = this.walk(va, TLB_VALID); // records a fault only when it throws below
    const where = `va ${va.toString(16)}`;
    if (w < 0) {
      throw new Error(
        `TLB check: ${where} hits mfn ${(v >>> TLB_MFN_SHIFT).toString(16)} but the page tables no longer map it`,
      );
    }
    if (w >>> TLB_MFN_SHIFT !== v >>> TLB_MFN_SHIFT) {
      throw new Error(
        `TLB check: ${where} hits mfn ${(v >>> TLB_MFN_SHIFT).toString(16)}, the page tables say ${(w >>> TLB_MFN_SHIFT).toString(16)}`,
      );
    }
    if ((v & ~w & (TLB_RW | TLB_USER)) !== 0) {
      throw new Error(`TLB check: ${where} holds rights ${v & 7} the page tables no longer grant (${w & 7})`);
    }
  }
}
