/*
 * The hypervisor's state in one place: the frame table, machine memory views, the
 * domains and vCPUs, the console and the counters. Every module of hypervisor/ works on
 * an Hv; only xen.ts exposes it to the outside.
 */
import type { PagingMode } from '../src/abi/xen.js';
import { layoutFor, type VirtualLayout, MAX_VCPUS_PER_DOMAIN } from '../src/abi/layout.js';
import { FrameTable } from './frame-table.js';
import { XenConsole } from './log.js';
import type { XenOptions, XenStats } from '../src/abi/control.js';
import { FRAME_WORDS, PAGE_SIZE } from '../src/abi/xen.js';

/** A vCPU as the hypervisor knows it. */
export interface Vcpu {
  id: number;
  /** Transport slot (also the global vCPU number used by flush stamps). */
  slot: number;
  /** Kernel base pointer (guest_table), -1 when none. Holds a general + root-type ref. */
  cr3: number;
  /** x86_64 user base pointer (guest_table_user), -1 when none. */
  userCr3: number;
  /** LDT as last set (SET_LDT), recorded only. */
  ldtBase: number;
  ldtEnts: number;
}

export class Domain {
  readonly domid: number;
  readonly name: string;
  /** pfn -> mfn. */
  readonly p2m: Int32Array;
  readonly vcpus: Vcpu[] = [];
  dying = false;

  constructor(domid: number, name: string, nrPages: number) {
    this.domid = domid;
    this.name = name;
    this.p2m = new Int32Array(nrPages).fill(-1);
  }

  get nrPages(): number {
    return this.p2m.length;
  }
}

/* Indices of Hv.vcEvents. */
export const VE_PT_ENTRIES = 0;
export const VE_LOCAL_FLUSHES = 1;
export const VE_SHOOTDOWNS = 2;
export const VE_TARGETS_LO = 3;
export const VE_TARGETS_HI = 4;

/** XenStats' plain counters, kept live (errors by name as a Map while counting). */
export type HvCounters = Omit<XenStats, 'hypercalls' | 'errors' | 'byReason' | 'logLines'> & {
  errors: Map<string, number>;
};

export class Hv {
  readonly paging: PagingMode;
  readonly layout: VirtualLayout;
  readonly levels: number;
  /** PGT_lN_page_table of the root: l3 in pae, l4 in x86_64. */
  readonly rootLevel: number;
  readonly ft: FrameTable;
  readonly mem: SharedArrayBuffer;
  /** Machine memory as words: entry i of frame m is mem32[m * FRAME_WORDS + 2i] (lo), +1 (hi). */
  readonly mem32: Uint32Array;
  readonly mem8: Uint8Array;
  readonly transport: Int32Array;
  readonly maxSlots: number;
  /** Slot -> owning domid (-1 free) and vCPU id. Private: a guest cannot rebind a slot. */
  readonly slotDomain: Int32Array;
  readonly slotVcpu: Int32Array;
  /** Per slot: the TLB clock value of its last flush (Xen's per-CPU tlbflush_time). */
  readonly slotFlushStamp: Uint32Array;
  readonly domains = new Map<number, Domain>();
  readonly console = new XenConsole();
  /**
   * When false, the hypervisor does NOT take PGT_writable_page for RW L1 entries: the
   * one rule that refuses stray aliases is off. Exists only for the stray-write
   * demonstration; the isolation check shows what it lets a guest do.
   */
  readonly enforceWritable: boolean;
  /** One past the highest slot ever bound to a vCPU (the doorbell loop scans below it). */
  slotHighWater = 0;
  /** The global TLB clock (Xen's tlbflush_clock). */
  tlbClock = 1;
  nextDomid = 1;
  /**
   * What the hypercall being served did, for the guest's virtual clock (src/abi/vclock.ts):
   * [VE_PT_ENTRIES, VE_LOCAL_FLUSHES, VE_SHOOTDOWNS, VE_TARGETS_LO, VE_TARGETS_HI]. Zeroed
   * by serveSlot before each call.
   */
  readonly vcEvents = new Int32Array(5);
  readonly counters: HvCounters = {
    errors: new Map(),
    rejected: 0,
    pinsAttempted: 0,
    pinsRefused: 0,
    shootdowns: 0,
    ipis: 0,
    flushesDeferred: 0,
    mmuUpdates: 0,
    validations: 0,
  };

  constructor(opts: XenOptions) {
    this.paging = opts.paging;
    this.layout = layoutFor(opts.paging);
    this.levels = this.layout.levels;
    this.rootLevel = this.levels;
    if (opts.mem.byteLength < opts.frames * PAGE_SIZE) {
      throw new RangeError(
        `machine memory holds ${opts.mem.byteLength} bytes, ${opts.frames} frames need ${opts.frames * PAGE_SIZE}`,
      );
    }
    this.mem = opts.mem;
    this.mem32 = new Uint32Array(opts.mem, 0, opts.frames * FRAME_WORDS);
    this.mem8 = new Uint8Array(opts.mem, 0, opts.frames * PAGE_SIZE);
    this.transport = new Int32Array(opts.transport);
    this.maxSlots = opts.maxSlots;
    this.slotDomain = new Int32Array(opts.maxSlots).fill(-1);
    this.slotVcpu = new Int32Array(opts.maxSlots).fill(-1);
    this.slotFlushStamp = new Uint32Array(opts.maxSlots);
    // Frame 0 stays Xen's, as the low frames of a host do: mfn 0 is never a guest frame.
    this.ft = new FrameTable(opts.frames, 1);
    this.enforceWritable = opts.enforce ?? true;
    if (MAX_VCPUS_PER_DOMAIN > 64) throw new Error('vCPU bitmaps are two words');
  }

  /** The pfn of an mfn (M2P), for log lines; -1 prints as ffffffff as Xen's INVALID_M2P. */
  pfnOf(mfn: number): number {
    return mfn >= 0 && mfn < this.ft.nrFrames ? this.ft.m2p[mfn]! : -1;
  }

  /** Count a refused call (or batch entry) under its errno name. */
  countError(name: string): void {
    this.counters.rejected++;
    this.counters.errors.set(name, (this.counters.errors.get(name) ?? 0) + 1);
  }
}
