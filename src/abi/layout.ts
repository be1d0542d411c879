/*
 * The shared-memory layout table: every fixed offset that the hypervisor thread and the
 * vCPU workers agree on, in one place (piscina keeps its slot indices the same way).
 *
 * Two SharedArrayBuffers make a machine:
 *  - machine memory: nframes * 4 KiB, the frames themselves (page tables included);
 *  - the transport: a small header and one request slot per vCPU.
 * The frame table and M2P are NOT shared: they live in the hypervisor thread only.
 */
import { PAGE_SIZE, type PagingMode } from './xen.js';

/* ------------------------------------------------------------ the transport */

/** Header words of the transport buffer (Int32 indices). */
export const T_DOORBELL = 0; /** bumped + notified by the controller, and by a vCPU with work for a sleeping hypervisor */
export const T_HV_STATE = 1; /** HV_STARTING / HV_RUNNING / HV_STOPPING / HV_STOPPED */
export const T_MAX_SLOTS = 2;
/** Bumped by the controller with each control message, so the loop looks at its port only then. */
export const T_CONTROL = 3;
/*
 * The wait policy (src/abi/wait.ts; bench's words 8-9 and 16): the hypervisor stores 1 in
 * T_HV_SLEEPING before it sleeps on the doorbell, so a vCPU notifies only then; it
 * publishes in T_HV_THREADS the transport's runnable threads (vCPUs whose runstate says
 * RUNNING, plus itself), which the vCPUs set against the cores; and T_HV_SERVING holds
 * 1 + the slot it is serving at this moment (0 between calls), so that a vCPU whose long
 * call is being served keeps spinning rather than sleep. T_HV_SERVING is a hint written
 * with plain stores on every call: it sits in its own 64-byte line (word 16), away from
 * the doorbell every vCPU bumps, so writing it costs the hypervisor no line transfer.
 */
export const T_HV_SLEEPING = 8;
export const T_HV_THREADS = 9;
export const T_HV_SERVING = 16;
export const T_HEADER_WORDS = 64;

export const HV_STARTING = 0;
export const HV_RUNNING = 1;
export const HV_STOPPING = 2;
export const HV_STOPPED = 3;

/** Per-slot header words, relative to the slot base. */
export const S_STATE = 0; /** SLOT_IDLE / SLOT_REQUEST / SLOT_DONE */
export const S_OP = 1; /** hypercall number */
export const S_RESULT = 2; /** return value (negative errno) */
export const S_RUNSTATE = 3; /** RS_RUNNING | RS_FLUSH_PENDING (see below) */
export const S_FLUSHES = 4; /** TLB flushes this vCPU has serviced (written by the vCPU) */
export const S_IPIS = 5; /** flushes that reached it while running (it had to ack) */
/** 1 while the vCPU sleeps in its hypercall wait: the hypervisor notifies S_STATE only then. */
export const S_WAITING = 6;
/** Shootdowns (a flush of any other vCPU) this slot's hypercalls started; written by the hypervisor. */
export const S_SHOOTDOWNS = 7;
export const S_ARGS = 8; /** 6 arguments, each as (lo, hi) words: 12 words */
/*
 * Words 20-31 are free. Work in progress keeps to its own range: 6-7 the transport's
 * wait policy (taken: S_WAITING, S_SHOOTDOWNS), 20-23 the virtual clock, 24-27 recording,
 * 28-31 fault injection.
 */
export const S_HEADER_WORDS = 32;
/**
 * The data area: where a guest puts the arrays its hypercall points to (mmu_update
 * requests, mmuext ops, multicall entries, vCPU bitmaps). Guest handles in this ABI are
 * WORD offsets into the data area; Xen's are guest virtual addresses. 64 KiB fits a
 * 512-entry mmu_update batch plus a 32-entry multicall with its nested arrays.
 */
export const S_DATA_WORDS = 16384;
export const SLOT_WORDS = S_HEADER_WORDS + S_DATA_WORDS;

export const SLOT_IDLE = 0;
export const SLOT_REQUEST = 1;
export const SLOT_DONE = 2;

/*
 * The runstate word is the TLB-shootdown mailbox. Ordering rule:
 *  - The hypervisor posts a flush with Atomics.or(FLUSH_PENDING) and looks at the old
 *    value: if RUNNING was set it waits for the vCPU to clear FLUSH_PENDING (an IPI and
 *    its acknowledgement); otherwise it does not wait -- the vCPU flushes when it next
 *    runs, as Xen does for a descheduled vCPU.
 *  - A vCPU clears RUNNING first and only then services a pending flush, so a flush
 *    posted while it was still RUNNING is always acknowledged.
 *  - A vCPU sets RUNNING and then services a pending flush before its next access.
 */
export const RS_RUNNING = 1;
export const RS_FLUSH_PENDING = 2;
/**
 * A flush the vCPU's own hypercall asked for (MMUEXT_TLB_FLUSH_LOCAL, a type change that
 * flushes the caller): posted with this bit instead, and serviced as the call returns.
 * It is not an IPI -- nobody waits for it -- so the vCPU's wait loop, which takes
 * RS_FLUSH_PENDING as an IPI, leaves it alone, and S_IPIS counts only real ones.
 */
export const RS_FLUSH_LOCAL = 4;
/** Either kind of pending flush: what a vCPU services before its next access. */
export const RS_FLUSH_ANY = RS_FLUSH_PENDING | RS_FLUSH_LOCAL;

/** Words per multicall entry: op, result, pad, pad, args[6] as (lo, hi), pad to 16. */
export const MC_ENTRY_WORDS = 16;
export const MC_OP = 0;
export const MC_RESULT = 1;
export const MC_ARGS = 4;
/** Linux flushes a multicall batch at 32 entries. */
export const MC_BATCH_MAX = 32;

/** Words per mmu_update request: ptr (lo, hi), val (lo, hi). */
export const MMU_REQ_WORDS = 4;
/** Words per mmuext_op: cmd, pad, arg1 (lo, hi), arg2 (lo, hi). */
export const MMUEXT_OP_WORDS = 6;
/** A "NULL" guest handle (pdone may be NULL). */
export const GUEST_HANDLE_NULL = 0xffffffff;

export const MAX_VCPUS_PER_DOMAIN = 64;

export function transportBytes(maxSlots: number): number {
  return (T_HEADER_WORDS + maxSlots * SLOT_WORDS) * 4;
}

export function slotBase(slot: number): number {
  return T_HEADER_WORDS + slot * SLOT_WORDS;
}

/** Transport word index of word 0 of a slot's data area (where guest handles point). */
export function slotDataBase(slot: number): number {
  return T_HEADER_WORDS + slot * SLOT_WORDS + S_HEADER_WORDS;
}

/* ------------------------------------------------------- guest virtual layout */
/*
 * Virtual addresses are plain numbers. x86_64 addresses are kept as their low 48 bits
 * (the sign extension is checked when parsing and restored when printing), so every VA
 * is a non-negative safe integer.
 */
export interface VirtualLayout {
  readonly paging: PagingMode;
  readonly levels: 3 | 4;
  /** Number of VA bits the walk uses (32 or 48). */
  readonly vaBits: number;
  readonly pageOffset: number;
  /** Highest number of frames the direct map can cover (the rest is highmem in pae). */
  readonly maxLowmemFrames: number;
  readonly vmallocEnd: number;
  readonly pkmapBase: number /** 0 when there is no highmem */;
  readonly lastPkmap: number;
  readonly fixaddrTop: number /** kmap_atomic slots count down from here; 0 in x86_64 */;
  readonly hypervisorVirtStart: number;
  readonly hypervisorVirtEnd: number;
  readonly userEnd: number;
}

const MiB = 1024 * 1024;

/** i386 PAE: 3 GiB user / 1 GiB kernel, the Xen hole at 0xF5800000. */
export const PAE_LAYOUT: VirtualLayout = {
  paging: 'pae',
  levels: 3,
  vaBits: 32,
  pageOffset: 0xc0000000,
  maxLowmemFrames: (704 * MiB) / PAGE_SIZE,
  vmallocEnd: 0xf4000000,
  pkmapBase: 0xf4800000,
  lastPkmap: 512,
  fixaddrTop: 0xf5800000 - PAGE_SIZE,
  hypervisorVirtStart: 0xf5800000,
  hypervisorVirtEnd: 0x100000000,
  userEnd: 0xc0000000,
};

/** x86_64: L4 slots 256..271 are Xen's; the direct map starts at slot 272. */
export const X86_64_LAYOUT: VirtualLayout = {
  paging: 'x86_64',
  levels: 4,
  vaBits: 48,
  pageOffset: 0x880000000000,
  maxLowmemFrames: 2 ** 30,
  vmallocEnd: 0xe90000000000,
  pkmapBase: 0,
  lastPkmap: 0,
  fixaddrTop: 0,
  hypervisorVirtStart: 0x800000000000,
  hypervisorVirtEnd: 0x880000000000,
  userEnd: 0x800000000000,
};

export function layoutFor(paging: PagingMode): VirtualLayout {
  return paging === 'pae' ? PAE_LAYOUT : X86_64_LAYOUT;
}

/** First and last (inclusive) Xen-reserved L4 slots in x86_64. */
export const XEN_L4_FIRST = 256;
export const XEN_L4_LAST = 271;
/** In pae, L3 slot 3's L2 (PGT_pae_xen_l2) is Xen's from this slot up (0xF5800000). */
export const PAE_XEN_L2_FIRST = (0xf5800000 - 0xc0000000) / (2 * MiB);

/** Index into the level-`level` table for `va` (level 1..4). */
/** 2^(12 + 9*(level-1)): the bytes one entry of a table of `level` maps. */
const ENTRY_SPAN = [1, 2 ** 12, 2 ** 21, 2 ** 30, 2 ** 39];

export function vaIndex(va: number, level: number): number {
  // Division keeps 48-bit values exact; `& 511` takes the low 9 bits of the quotient's
  // integer part (ToInt32 truncates, then wraps modulo 2^32, which keeps them). Measured:
  // 9-13 ns per call against 65-95 ns for Math.floor(va / 2 ** (3 + 9 * level)) % 512
  // (random 48-bit VAs, /tmp probe of 6.5 M calls), where a vmap cycle's profile had
  // vaIndex at 12% of the guest's time. vaIndexReference is that formula, for the tests.
  return (va / ENTRY_SPAN[level]!) & 511;
}

/** The slow reference twin of vaIndex (test/mmu.test.ts compares them). */
export function vaIndexReference(va: number, level: number): number {
  return Math.floor(va / 2 ** (3 + 9 * level)) % 512;
}

/** Parse a VA for the layout; returns -1 when it is non-canonical or out of range. */
export function canonicalVa(va: bigint, layout: VirtualLayout): number {
  if (layout.vaBits === 32) {
    return va >= 0n && va < 0x100000000n ? Number(va) : -1;
  }
  const top = va >> 47n;
  if (top === 0n) return Number(va);
  if (top === 0x1ffffn) return Number(va & 0xffffffffffffn);
  return -1;
}

/**
 * The high word a guest passes for `va`: x86_64 keeps VAs as their low 48 bits, and the
 * ABI (like the CPU) wants them canonical, i.e. sign-extended from bit 47.
 */
export function vaHiWord(va: number): number {
  const hi = Math.floor(va / 4294967296);
  return (va >= 2 ** 47 ? hi | 0xffff0000 : hi) >>> 0;
}

/** %p of a kernel VA, given the VA width (32 or 48) a buffer recorded; odd values as numbers. */
export function formatKernelVa(va: number, vaBits: number): string {
  if (!Number.isSafeInteger(va) || va < 0) return String(va);
  return formatVa(va, vaBits === 48 ? X86_64_LAYOUT : PAE_LAYOUT);
}

/** The printable (sign-extended in x86_64) form of a VA. */
export function formatVa(va: number, layout: VirtualLayout): string {
  if (layout.vaBits === 48 && va >= 2 ** 47) {
    return `ffff${va.toString(16).padStart(12, '0')}`;
  }
  return va.toString(16);
}
