/*
 * Xen: the hypervisor core's public face and the hypercall dispatcher.
 *
 * serveSlot() takes one request from a vCPU's transport slot, runs it to completion and
 * wakes the vCPU. Nothing a guest writes into its slot can make it throw: unknown
 * calls are -ENOSYS, bad guest handles -EFAULT, rule violations the rule's errno.
 * Hypercalls are served one at a time, so none is ever seen half-applied.
 */
import {
  EINVAL,
  ENOSYS,
  ESRCH,
  HYPERCALL_NAMES,
  type PagingMode,
  rcName,
  __HYPERVISOR_mmu_update,
  __HYPERVISOR_mmuext_op,
  __HYPERVISOR_multicall,
  __HYPERVISOR_sched_op,
  __HYPERVISOR_update_va_mapping,
  EFAULT,
  EBUSY,
  levelOfType,
  SCHEDOP_yield,
  FRAME_WORDS,
} from '../src/abi/xen.js';
import {
  MC_ARGS,
  MC_ENTRY_WORDS,
  MC_OP,
  MC_RESULT,
  S_ARGS,
  S_DATA_WORDS,
  S_HEADER_WORDS,
  S_OP,
  S_RESULT,
  S_STATE,
  S_WAITING,
  SLOT_DONE,
  SLOT_REQUEST,
  T_MAX_SLOTS,
  slotBase,
  transportBytes,
} from '../src/abi/layout.js';
import { audit } from './audit.js';
import { createDomain, destroyDomain } from './domain.js';
import { Hv, VE_LOCAL_FLUSHES, VE_PT_ENTRIES, VE_SHOOTDOWNS, VE_TARGETS_HI, VE_TARGETS_LO } from './hv.js';
import { Recorder } from './record.js';
import { S_VC_EVENTS, S_VC_PT, S_VC_TARGETS_HI, S_VC_TARGETS_LO, packVcEvents } from '../src/abi/vclock.js';
import { type CallCtx, doMmuUpdate, doMmuextOp, doUpdateVaMapping } from './mm.js';
import type {
  AuditReport,
  DomainConfig,
  DomainInfo,
  Recording,
  XenLogRecord,
  XenOptions,
  XenStats,
} from '../src/abi/control.js';

export type { XenOptions } from '../src/abi/control.js';

export class Xen {
  readonly #hv: Hv;
  /** Reason of the first log line of the call being served (the root cause). */
  #firstReason: string | null = null;
  readonly #byReason = new Map<string, number>();
  /** The slot whose next request throws (injectFault), or -1. */
  #faultSlot = -1;
  /** Calls per hypercall number (0 collects unknown numbers >= 64). */
  readonly #perOp = new Float64Array(64);
  /** Set only when recording (XenOptions.record). */
  readonly #recorder: Recorder | null = null;

  constructor(opts: XenOptions) {
    if (opts.transport.byteLength < transportBytes(opts.maxSlots)) {
      throw new RangeError(
        `transport holds ${opts.transport.byteLength} bytes; ${opts.maxSlots} slots need ${transportBytes(opts.maxSlots)}`,
      );
    }
    this.#hv = new Hv(opts);
    Atomics.store(this.#hv.transport, T_MAX_SLOTS, opts.maxSlots);
    this.#hv.console.sink = (rec) => {
      if (this.#firstReason === null) this.#firstReason = rec.reason;
    };
    if (opts.record) {
      // Decided once, here: a recording machine serves slots through the recorder; any
      // other keeps the prototype's serveSlot, untouched.
      const rec = new Recorder(this.#hv);
      this.#recorder = rec;
      this.serveSlot = (slot: number) => this.#serveRecorded(slot, rec);
    }
  }

  get paging(): PagingMode {
    return this.#hv.paging;
  }

  createDomain(cfg: DomainConfig): DomainInfo {
    const info = createDomain(this.#hv, cfg);
    this.#recorder?.domainCreated(cfg);
    return info;
  }

  /** What was recorded so far, as a script named `name`. */
  takeRecording(name: string): Recording {
    if (this.#recorder === null) throw new Error('this hypervisor was not started with record: true');
    return this.#recorder.take(name);
  }

  /**
   * The toolstack writes a frame's contents (a script's `fill`: what its guest wrote with
   * plain stores while the frame was an ordinary page). Never into a page table in use:
   * -EBUSY, as only the hypervisor writes those. `words` are the frame's FRAME_WORDS words.
   */
  fillFrame(domid: number, pfn: number, words: Uint32Array): number {
    const hv = this.#hv;
    const d = hv.domains.get(domid);
    if (d === undefined || !Number.isInteger(pfn) || pfn < 0 || pfn >= d.nrPages) return -ESRCH;
    const mfn = d.p2m[pfn]!;
    if (levelOfType(hv.ft.typeHi[mfn]!) !== 0 && hv.ft.typeCount[mfn]! > 0) return -EBUSY;
    hv.mem32.set(words.subarray(0, FRAME_WORDS), mfn * FRAME_WORDS);
    return 0;
  }

  destroyDomain(domid: number): void {
    destroyDomain(this.#hv, domid);
  }

  domainIds(): number[] {
    return [...this.#hv.domains.keys()];
  }

  /** One past the highest transport slot ever given to a vCPU. */
  slotsInUse(): number {
    return this.#hv.slotHighWater;
  }

  freeFrames(): number {
    return this.#hv.ft.nrFree;
  }

  audit(): AuditReport {
    return audit(this.#hv);
  }

  drainLog(): XenLogRecord[] {
    return this.#hv.console.drain();
  }

  /** Forward every log record as it is written (the hypervisor thread's pino bridge). */
  onLog(fn: ((rec: XenLogRecord) => void) | null): void {
    this.#hv.console.sink = (rec) => {
      if (this.#firstReason === null) this.#firstReason = rec.reason;
      fn?.(rec);
    };
  }

  stats(): XenStats {
    const hv = this.#hv;
    const c = hv.counters;
    const hypercalls: Record<string, number> = {};
    this.#perOp.forEach((n, op) => {
      if (n > 0) hypercalls[HYPERCALL_NAMES[op] ?? (op === 0 ? 'unknown' : `hypercall_${op}`)] = n;
    });
    return {
      hypercalls,
      errors: Object.fromEntries(c.errors),
      byReason: Object.fromEntries(this.#byReason),
      rejected: c.rejected,
      pinsAttempted: c.pinsAttempted,
      pinsRefused: c.pinsRefused,
      shootdowns: c.shootdowns,
      ipis: c.ipis,
      flushesDeferred: c.flushesDeferred,
      mmuUpdates: c.mmuUpdates,
      validations: c.validations,
      logLines: hv.console.total,
    };
  }

  /**
   * Frame-table facts for tests and the stray-mapping analysis: owner, counts, type.
   * A read-only copy; the frame table itself never leaves the hypervisor.
   */
  frameInfo(mfn: number): { owner: number; count: number; typeHi: number; typeCount: number; pfn: number } | null {
    const ft = this.#hv.ft;
    if (!ft.mfnValid(mfn)) return null;
    return {
      owner: ft.owner[mfn]!,
      count: ft.count[mfn]!,
      typeHi: ft.typeHi[mfn]!,
      typeCount: ft.typeCount[mfn]!,
      pfn: ft.m2p[mfn]!,
    };
  }

  /** The vCPU's current base pointer (mfn), or -1. */
  baseptr(domid: number, vcpu: number): number {
    return this.#hv.domains.get(domid)?.vcpus[vcpu]?.cr3 ?? -1;
  }

  /**
   * Test-only fault hook (a control op, never reachable by a guest): the next request
   * served from `slot` throws before it touches anything, as a bug in Xen would. The
   * thread fails that call with -EFAULT and reports it; crash.test.ts checks both.
   */
  injectFault(slot: number): void {
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.#hv.maxSlots) {
      throw new RangeError(`injectFault: slot must be an integer in 0..${this.#hv.maxSlots - 1}, got ${slot}`);
    }
    this.#faultSlot = slot;
  }

  /** Serve the request waiting in `slot` and wake its vCPU. */
  serveSlot(slot: number): void {
    const hv = this.#hv;
    const t = hv.transport;
    const b = slotBase(slot);
    if (slot < 0 || slot >= hv.maxSlots || Atomics.load(t, b + S_STATE) !== SLOT_REQUEST) return;
    if (slot === this.#faultSlot) {
      this.#faultSlot = -1;
      throw new Error(`injected fault: serveSlot(${slot}) threw (op ${t[b + S_OP]})`);
    }
    const ctx = this.#callCtx(slot, b);
    let rc: number;
    if (ctx === null) {
      rc = -ESRCH;
    } else {
      const mmu0 = this.#beginEvents();
      rc = this.#dispatch(t[b + S_OP]! >>> 0, b + S_ARGS, ctx, false);
      this.#publishEvents(b, mmu0);
    }
    this.#complete(b, rc);
  }

  /**
   * The context of the call in `slot` (slot base `b`), with the console set to its domain
   * and vCPU; null when the slot's domain is gone or dying (the call gets -ESRCH).
   */
  #callCtx(slot: number, b: number): CallCtx | null {
    const hv = this.#hv;
    const domid = hv.slotDomain[slot]!;
    const d = domid >= 0 ? hv.domains.get(domid) : undefined;
    if (d === undefined || d.dying) return null;
    const vcpu = d.vcpus[hv.slotVcpu[slot]!]!;
    hv.console.domid = domid;
    hv.console.vcpu = vcpu.id;
    return { d, slot, vcpu, data: b + S_HEADER_WORDS };
  }

  /** Before a call: zero its virtual-clock events; returns the update count to measure from. */
  #beginEvents(): number {
    const hv = this.#hv;
    hv.vcEvents.fill(0);
    return hv.counters.mmuUpdates + this.#perOp[__HYPERVISOR_update_va_mapping]!;
  }

  /** After a call: what it did, for the guest's virtual clock (src/abi/vclock.ts): counts only. */
  #publishEvents(b: number, mmu0: number): void {
    const hv = this.#hv;
    const t = hv.transport;
    const e = hv.vcEvents;
    const mmuEntries = hv.counters.mmuUpdates + this.#perOp[__HYPERVISOR_update_va_mapping]! - mmu0;
    t[b + S_VC_EVENTS] = packVcEvents(mmuEntries, e[VE_LOCAL_FLUSHES]!, e[VE_SHOOTDOWNS]!);
    t[b + S_VC_PT] = e[VE_PT_ENTRIES]!;
    t[b + S_VC_TARGETS_LO] = e[VE_TARGETS_LO]!;
    t[b + S_VC_TARGETS_HI] = e[VE_TARGETS_HI]!;
  }

  /** Answer the slot: its result, SLOT_DONE, and a wake-up for a vCPU that sleeps. */
  #complete(b: number, rc: number): void {
    const t = this.#hv.transport;
    t[b + S_RESULT] = rc;
    Atomics.store(t, b + S_STATE, SLOT_DONE);
    // Notify only a vCPU that said it sleeps (src/abi/wait.ts): a notify costs ~60-90 ns
    // even with nobody waiting, most of a spinning round trip.
    if (Atomics.load(t, b + S_WAITING) !== 0) Atomics.notify(t, b + S_STATE);
  }

  /**
   * serveSlot of a recording hypervisor: the same, with the recorder told before the call
   * and after it, while the slot still holds the call's results (the vCPU, once woken,
   * writes its next request there at once).
   */
  #serveRecorded(slot: number, rec: Recorder): void {
    const hv = this.#hv;
    const t = hv.transport;
    const b = slotBase(slot);
    if (slot < 0 || slot >= hv.maxSlots || Atomics.load(t, b + S_STATE) !== SLOT_REQUEST) return;
    const ctx = this.#callCtx(slot, b);
    let rc: number;
    if (ctx === null) {
      rc = -ESRCH;
    } else {
      const pending = rec.before(slot, ctx.d.domid, ctx.d.name);
      const mmu0 = this.#beginEvents();
      rc = this.#dispatch(t[b + S_OP]! >>> 0, b + S_ARGS, ctx, false);
      if (pending !== null) rec.after(pending, rc);
      this.#publishEvents(b, mmu0);
    }
    this.#complete(b, rc);
  }

  #dispatch(op: number, args: number, c: CallCtx, inMulticall: boolean): number {
    const hv = this.#hv;
    hv.console.seq++;
    this.#firstReason = null;
    let rc: number;
    switch (op) {
      case __HYPERVISOR_mmu_update:
        rc = doMmuUpdate(hv, c, args);
        break;
      case __HYPERVISOR_mmuext_op:
        rc = doMmuextOp(hv, c, args);
        break;
      case __HYPERVISOR_update_va_mapping:
        rc = doUpdateVaMapping(hv, c, args);
        break;
      case __HYPERVISOR_multicall:
        rc = inMulticall ? -EINVAL : this.#multicall(c, args);
        break;
      case __HYPERVISOR_sched_op:
        rc = hv.transport[args]! === SCHEDOP_yield ? 0 : -ENOSYS;
        break;
      default:
        rc = -ENOSYS;
    }
    if (op < 64) this.#perOp[op]!++;
    else this.#perOp[0]!++;
    if (rc < 0) {
      hv.countError(rcName(rc));
      const why = this.#firstReason ?? rcName(rc);
      this.#byReason.set(why, (this.#byReason.get(why) ?? 0) + 1);
    }
    return rc;
  }

  /** multicall: run every entry in order; a failing entry does not stop the batch. */
  #multicall(c: CallCtx, args: number): number {
    const t = this.#hv.transport;
    const h = t[args]! >>> 0;
    const nr = t[args + 2]! >>> 0;
    if (nr === 0) return 0;
    if (h + nr * MC_ENTRY_WORDS > S_DATA_WORDS) return -EFAULT;
    for (let i = 0; i < nr; i++) {
      const e = c.data + h + i * MC_ENTRY_WORDS;
      t[e + MC_RESULT] = this.#dispatch(t[e + MC_OP]! >>> 0, e + MC_ARGS, c, true);
    }
    return 0;
  }
}
