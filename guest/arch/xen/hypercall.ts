/*
 * Guest-side hypercall encoders: lay a hypercall's arguments and arrays onto the vCPU's
 * request slot and issue it (Linux's HYPERVISOR_* wrappers and xen_mc_* batching).
 *
 * THE SLOT ABI (the hypervisor decodes exactly this):
 *  - Top-level arguments live at S_ARGS as six (lo, hi) word pairs; the result comes back
 *    in S_RESULT (>= 0, or a negative errno).
 *  - A guest handle is a WORD offset into the slot's data area (slotDataBase); "no
 *    handle" is GUEST_HANDLE_NULL in the lo word.
 *  - mmu_update:        [0] = handle of the requests (MMU_REQ_WORDS each: ptr lo, ptr hi,
 *                       val lo, val hi), [1] = count, [2] = pdone (handle of one word, or
 *                       GUEST_HANDLE_NULL), [3] = foreigndom (DOMID_SELF).
 *  - mmuext_op:         same shape; ops are MMUEXT_OP_WORDS each: cmd, pad, arg1 (lo, hi),
 *                       arg2 (lo, hi). For TLB_FLUSH_MULTI and INVLPG_MULTI arg2 is the
 *                       handle of a 2-word vCPU bitmap (vCPUs 0..31, 32..63).
 *  - update_va_mapping: [0] = va (lo, hi) (x86_64: canonical, hi sign-extended from bit
 *                       47 by vaHiWord; callers pass the 48-bit number), [1] = new L1 entry
 *                       (lo, hi), [2] = flags: bits 0-1 UVMF_NONE/TLB_FLUSH/INVLPG; the
 *                       rest UVMF_LOCAL (0), UVMF_ALL (4), or else the BYTE offset in the
 *                       data area of a 2-word vCPU bitmap (a multiple of 8, never 0).
 *  - multicall:         [0] = handle of the entries (MC_ENTRY_WORDS each: op at MC_OP,
 *                       result at MC_RESULT, six (lo, hi) args at MC_ARGS), [1] = nr.
 *                       Nested arrays live in the same data area; their handles are
 *                       offsets into it like any other.
 *  - sched_op:          [0] = cmd (SCHEDOP_yield = 0 answers 0), [1] = arg.
 *
 * Caller-side convention for vCPU masks: callers pass the bitmap itself (lo, hi); the
 * encoders place it in the data area and put the handle in the argument.
 */
import {
  DOMID_SELF,
  MMUEXT_INVLPG_MULTI,
  MMUEXT_TLB_FLUSH_MULTI,
  UVMF_FLUSHTYPE_MASK,
  __HYPERVISOR_mmu_update,
  __HYPERVISOR_mmuext_op,
  __HYPERVISOR_multicall,
  __HYPERVISOR_sched_op,
  __HYPERVISOR_update_va_mapping,
  SCHEDOP_yield,
} from '../../../src/abi/xen.js';
import {
  GUEST_HANDLE_NULL,
  MC_ARGS,
  MC_BATCH_MAX,
  MC_ENTRY_WORDS,
  MC_OP,
  MC_RESULT,
  MMUEXT_OP_WORDS,
  MMU_REQ_WORDS,
  S_DATA_WORDS,
  vaHiWord,
} from '../../../src/abi/layout.js';
import type { Vcpu } from '../../vcpu.js';

/** The result of a batched hypercall: rc, and how many requests were done (*pdone). */
export interface BatchResult {
  rc: number;
  done: number;
}

/** mmu_update requests per hypercall: the data area minus the pdone word. */
export const MMU_UPDATE_BATCH = Math.floor((S_DATA_WORDS - 2) / MMU_REQ_WORDS);
/** mmuext ops per hypercall, leaving room for one vCPU bitmap per op. */
export const MMUEXT_BATCH = Math.floor((S_DATA_WORDS - 2) / (MMUEXT_OP_WORDS + 2));

function isMultiCmd(cmd: number): boolean {
  return cmd === MMUEXT_TLB_FLUSH_MULTI || cmd === MMUEXT_INVLPG_MULTI;
}

function checkCount(what: string, arr: Uint32Array, count: number, words: number): void {
  if (!Number.isInteger(count) || count < 0 || count * words > arr.length) {
    throw new RangeError(`${what}: count ${count} does not fit an array of ${arr.length / words} entries`);
  }
}

/* ------------------------------------------------------------ direct calls */

/**
 * HYPERVISOR_mmu_update(reqs, count, &done, foreigndom). `reqs` holds count quadruples
 * (ptr lo, ptr hi, val lo, val hi). Longer lists go in several hypercalls, stopping at
 * the first error as Xen does within one.
 */
export function mmuUpdate(cpu: Vcpu, reqs: Uint32Array, count: number, foreigndom = DOMID_SELF): BatchResult {
  checkCount('mmu_update', reqs, count, MMU_REQ_WORDS);
  const u32 = cpu.u32;
  const data = cpu.dataBase;
  let done = 0;
  while (done < count) {
    const n = Math.min(count - done, MMU_UPDATE_BATCH);
    u32.set(reqs.subarray(done * MMU_REQ_WORDS, (done + n) * MMU_REQ_WORDS), data);
    const pdone = n * MMU_REQ_WORDS;
    u32[data + pdone] = 0;
    cpu.setArg(0, 0);
    cpu.setArg(1, n);
    cpu.setArg(2, pdone);
    cpu.setArg(3, foreigndom);
    const rc = cpu.hypercall(__HYPERVISOR_mmu_update);
    done += u32[data + pdone]!;
    if (rc < 0) return { rc, done };
  }
  return { rc: 0, done };
}

/**
 * Lay `count` mmuext ops at data word `at`, their vCPU bitmaps after them; returns the
 * first word past what was written. For *_MULTI ops, arg2 in `ops` is the bitmap itself.
 */
function placeMmuextOps(
  u32: Uint32Array,
  data: number,
  at: number,
  ops: Uint32Array,
  from: number,
  count: number,
): number {
  let mask = at + count * MMUEXT_OP_WORDS;
  mask += mask & 1; // bitmaps 8-byte aligned
  for (let k = 0; k < count; k++) {
    const src = (from + k) * MMUEXT_OP_WORDS;
    const dst = data + at + k * MMUEXT_OP_WORDS;
    for (let w = 0; w < MMUEXT_OP_WORDS; w++) u32[dst + w] = ops[src + w]!;
    if (isMultiCmd(ops[src]!)) {
      u32[data + mask] = ops[src + 4]!;
      u32[data + mask + 1] = ops[src + 5]!;
      u32[dst + 4] = mask;
      u32[dst + 5] = 0;
      mask += 2;
    }
  }
  return mask;
}

/** Words placeMmuextOps needs for ops [from, from+count). */
function mmuextWords(ops: Uint32Array, from: number, count: number): number {
  let words = count * MMUEXT_OP_WORDS + 1;
  for (let k = 0; k < count; k++) if (isMultiCmd(ops[(from + k) * MMUEXT_OP_WORDS]!)) words += 2;
  return words;
}

/** HYPERVISOR_mmuext_op(ops, count, &done, foreigndom); ops are MMUEXT_OP_WORDS each. */
export function mmuextOp(cpu: Vcpu, ops: Uint32Array, count: number, foreigndom = DOMID_SELF): BatchResult {
  checkCount('mmuext_op', ops, count, MMUEXT_OP_WORDS);
  const u32 = cpu.u32;
  const data = cpu.dataBase;
  let done = 0;
  while (done < count) {
    const n = Math.min(count - done, MMUEXT_BATCH);
    const pdone = placeMmuextOps(u32, data, 0, ops, done, n);
    u32[data + pdone] = 0;
    cpu.setArg(0, 0);
    cpu.setArg(1, n);
    cpu.setArg(2, pdone);
    cpu.setArg(3, foreigndom);
    const rc = cpu.hypercall(__HYPERVISOR_mmuext_op);
    done += u32[data + pdone]!;
    if (rc < 0) return { rc, done };
  }
  return { rc: 0, done };
}

/**
 * One mmuext op, no pdone (Linux's pin_pagetable_pfn and friends). For *_MULTI commands
 * (arg2Lo, arg2Hi) is the vCPU bitmap.
 */
export function mmuextOne(cpu: Vcpu, cmd: number, arg1Lo = 0, arg1Hi = 0, arg2Lo = 0, arg2Hi = 0): number {
  const u32 = cpu.u32;
  const op = cpu.dataBase;
  u32[op] = cmd;
  u32[op + 1] = 0;
  u32[op + 2] = arg1Lo;
  u32[op + 3] = arg1Hi;
  if (isMultiCmd(cmd)) {
    u32[op + MMUEXT_OP_WORDS] = arg2Lo;
    u32[op + MMUEXT_OP_WORDS + 1] = arg2Hi;
    u32[op + 4] = MMUEXT_OP_WORDS;
    u32[op + 5] = 0;
  } else {
    u32[op + 4] = arg2Lo;
    u32[op + 5] = arg2Hi;
  }
  cpu.setArg(0, 0);
  cpu.setArg(1, 1);
  cpu.setArg(2, GUEST_HANDLE_NULL);
  cpu.setArg(3, DOMID_SELF);
  return cpu.hypercall(__HYPERVISOR_mmuext_op);
}

/** Data word of the bitmap of a direct update_va_mapping (byte offset 8: never 0 nor UVMF_ALL). */
const UVM_MASK_WORD = 2;

/**
 * HYPERVISOR_update_va_mapping(va, val, flags). With a vCPU bitmap (maskLo, maskHi) the
 * flags' upper part becomes the bitmap's byte offset; without one `flags` goes as is.
 */
export function updateVaMapping(
  cpu: Vcpu,
  va: number,
  valLo: number,
  valHi: number,
  flags: number,
  maskLo?: number,
  maskHi = 0,
): number {
  cpu.setArg(0, va >>> 0, vaHiWord(va));
  cpu.setArg(1, valLo, valHi);
  if (maskLo !== undefined) {
    cpu.u32[cpu.dataBase + UVM_MASK_WORD] = maskLo;
    cpu.u32[cpu.dataBase + UVM_MASK_WORD + 1] = maskHi;
    flags = (flags & UVMF_FLUSHTYPE_MASK) | (UVM_MASK_WORD * 4);
  }
  cpu.setArg(2, flags >>> 0);
  return cpu.hypercall(__HYPERVISOR_update_va_mapping);
}

/** HYPERVISOR_sched_op(SCHEDOP_yield, 0): the null hypercall. */
export function schedOpYield(cpu: Vcpu): number {
  cpu.setArg(0, SCHEDOP_yield);
  cpu.setArg(1, 0);
  return cpu.hypercall(__HYPERVISOR_sched_op);
}

/* -------------------------------------------------------------- multicalls */

/** Results of a multicall batch: the first failing top-level rc (or 0) and one result per entry. */
export interface MulticallResult {
  rc: number;
  results: Int32Array;
}

/** Data words reserved for the entries of a full batch; nested arrays go after. */
const MC_ENTRIES_WORDS = MC_BATCH_MAX * MC_ENTRY_WORDS;

/**
 * A multicall batch (Linux's xen_mc_entry / xen_mc_flush). Entries and their nested
 * arrays are staged in a private buffer laid out exactly as the slot's data area, so a
 * direct hypercall between two queued entries does not disturb the batch. The batch is
 * issued when it holds MC_BATCH_MAX entries or its arrays no longer fit, and by flush(),
 * which returns the results of every entry queued since the previous flush().
 */
export class MulticallBatch {
  readonly #cpu: Vcpu;
  readonly #stage = new Uint32Array(S_DATA_WORDS);
  #nr = 0;
  #top = MC_ENTRIES_WORDS;
  #results: number[] = [];
  #rc = 0;

  constructor(cpu: Vcpu) {
    this.#cpu = cpu;
  }

  /** Entries queued and not yet issued. */
  get pending(): number {
    return this.#nr;
  }

  /** Entries queued since the last flush() (issued or not): the next entry's index. */
  get queued(): number {
    return this.#results.length + this.#nr;
  }

  /**
   * Queue a raw entry: `op` and up to 12 argument words (six lo, hi pairs). Returns its
   * index in the results of the next flush(). For hostile tests and ops without a helper.
   */
  entry(op: number, args: ArrayLike<number> = []): number {
    if (args.length > 12) throw new RangeError(`multicall entry: ${args.length} argument words, at most 12`);
    const e = this.#reserve(0);
    const s = this.#stage;
    s[e + MC_OP] = op;
    s[e + MC_RESULT] = 0;
    for (let w = 0; w < 12; w++) s[e + MC_ARGS + w] = w < args.length ? args[w]! : 0;
    return this.queued - 1;
  }

  /** Queue mmu_update(reqs, count, NULL, DOMID_SELF). */
  mmuUpdate(reqs: Uint32Array, count: number): number {
    checkCount('mmu_update', reqs, count, MMU_REQ_WORDS);
    const words = count * MMU_REQ_WORDS;
    const e = this.#reserve(words);
    const at = this.#alloc(words);
    this.#stage.set(reqs.subarray(0, words), at);
    this.#setArgs(e, __HYPERVISOR_mmu_update, at, count, GUEST_HANDLE_NULL, DOMID_SELF);
    return this.queued - 1;
  }

  /** Queue mmuext_op(ops, count, NULL, DOMID_SELF); *_MULTI arg2 is the bitmap itself. */
  mmuextOp(ops: Uint32Array, count: number): number {
    checkCount('mmuext_op', ops, count, MMUEXT_OP_WORDS);
    const words = mmuextWords(ops, 0, count);
    const e = this.#reserve(words);
    const at = this.#alloc(words);
    placeMmuextOps(this.#stage, 0, at, ops, 0, count);
    this.#setArgs(e, __HYPERVISOR_mmuext_op, at, count, GUEST_HANDLE_NULL, DOMID_SELF);
    return this.queued - 1;
  }

  /** Queue update_va_mapping(va, val, flags), with an optional vCPU bitmap. */
  updateVaMapping(va: number, valLo: number, valHi: number, flags: number, maskLo?: number, maskHi = 0): number {
    const e = this.#reserve(maskLo === undefined ? 0 : 2);
    if (maskLo !== undefined) {
      const at = this.#alloc(2);
      this.#stage[at] = maskLo;
      this.#stage[at + 1] = maskHi;
      flags = (flags & UVMF_FLUSHTYPE_MASK) | (at * 4);
    }
    const s = this.#stage;
    s[e + MC_OP] = __HYPERVISOR_update_va_mapping;
    s[e + MC_RESULT] = 0;
    s[e + MC_ARGS] = va >>> 0;
    s[e + MC_ARGS + 1] = vaHiWord(va);
    s[e + MC_ARGS + 2] = valLo;
    s[e + MC_ARGS + 3] = valHi;
    s[e + MC_ARGS + 4] = flags >>> 0;
    for (let w = 5; w < 12; w++) s[e + MC_ARGS + w] = 0;
    return this.queued - 1;
  }

  /**
   * Issue what is queued and return the results of every entry queued since the last
   * flush(), in order. rc is the first negative top-level multicall result, else 0.
   */
  flush(): MulticallResult {
    if (this.#nr > 0) this.#issue();
    const out = { rc: this.#rc, results: Int32Array.from(this.#results) };
    this.#results = [];
    this.#rc = 0;
    return out;
  }

  /** Stage index of a new entry, issuing first if the batch or its data area is full. */
  #reserve(nestedWords: number): number {
    if (nestedWords + 1 > S_DATA_WORDS - MC_ENTRIES_WORDS) {
      throw new RangeError(
        `multicall entry: ${nestedWords} words of arrays, at most ${S_DATA_WORDS - MC_ENTRIES_WORDS - 1}`,
      );
    }
    if (this.#nr === MC_BATCH_MAX || this.#top + nestedWords + 1 > S_DATA_WORDS) this.#issue();
    return this.#nr++ * MC_ENTRY_WORDS;
  }

  /** Data words for a nested array, 8-byte aligned. */
  #alloc(words: number): number {
    const at = this.#top + (this.#top & 1);
    this.#top = at + words;
    return at;
  }

  #setArgs(e: number, op: number, a0: number, a1: number, a2: number, a3: number): void {
    const s = this.#stage;
    s[e + MC_OP] = op;
    s[e + MC_RESULT] = 0;
    s[e + MC_ARGS] = a0;
    s[e + MC_ARGS + 1] = 0;
    s[e + MC_ARGS + 2] = a1;
    s[e + MC_ARGS + 3] = 0;
    s[e + MC_ARGS + 4] = a2;
    s[e + MC_ARGS + 5] = 0;
    s[e + MC_ARGS + 6] = a3;
    for (let w = 7; w < 12; w++) s[e + MC_ARGS + w] = 0;
  }

  #issue(): void {
    const cpu = this.#cpu;
    const nr = this.#nr;
    const data = cpu.dataBase;
    const entryWords = nr * MC_ENTRY_WORDS;
    cpu.u32.set(this.#stage.subarray(0, entryWords), data);
    if (this.#top > MC_ENTRIES_WORDS) {
      cpu.u32.set(this.#stage.subarray(MC_ENTRIES_WORDS, this.#top), data + MC_ENTRIES_WORDS);
    }
    cpu.setArg(0, 0);
    cpu.setArg(1, nr);
    const rc = cpu.hypercall(__HYPERVISOR_multicall);
    if (rc < 0 && this.#rc === 0) this.#rc = rc;
    for (let k = 0; k < nr; k++) {
      this.#results.push(rc < 0 ? rc : cpu.t[data + k * MC_ENTRY_WORDS + MC_RESULT]!);
    }
    this.#nr = 0;
    this.#top = MC_ENTRIES_WORDS;
  }
}
