/*
 * TLB flush delivery: Xen's flush_tlb_mask, over the vCPUs' runstate mailboxes.
 *
 * A flush of a vCPU is posted with Atomics.or(RS_FLUSH_PENDING) on its runstate word.
 * If the vCPU was RUNNING, that is an IPI: we wait until it has flushed and cleared the
 * bit. If it was not running it will flush before it next touches memory, and nobody
 * waits (Xen needs no IPI for a descheduled vCPU). The wait is the real cost of a
 * shootdown; nothing here imitates it.
 *
 * Ordering argument (the vCPU side lives in guest/vcpu.ts): the vCPU clears RUNNING
 * before it services pending flushes when it stops, and sets RUNNING before it services
 * them when it resumes. So if our Atomics.or saw RUNNING, the vCPU will see our bit
 * either in its running poll or in its stop path, and it acknowledges either way. A vCPU
 * waiting for its own hypercall stays RUNNING (it is on its pCPU in Xen) and polls its
 * runstate in that wait; we notify its S_STATE word so a sleeping one wakes to do so.
 */
import {
  MAX_VCPUS_PER_DOMAIN,
  RS_FLUSH_LOCAL,
  RS_FLUSH_PENDING,
  RS_RUNNING,
  S_RUNSTATE,
  S_SHOOTDOWNS,
  S_STATE,
  slotBase,
} from '../src/abi/layout.js';
import { type Domain, type Hv, VE_LOCAL_FLUSHES, VE_SHOOTDOWNS, VE_TARGETS_HI, VE_TARGETS_LO } from './hv.js';

/** An IPI that is not acknowledged within this time is abandoned (the worker died). */
const ACK_TIMEOUT_MS = 2000;
/** Spins before sleeping on the runstate word (~0.2 us per round trip when spinning). */
const ACK_SPINS = 4000;

/** Post one flush; returns true when the vCPU was running (an IPI we must wait for). */
function postFlush(hv: Hv, slot: number, initiator: number): boolean {
  const idx = slotBase(slot) + S_RUNSTATE;
  hv.slotFlushStamp[slot] = hv.tlbClock;
  // The caller flushes as its hypercall returns: nobody waits for it, and it is no IPI.
  if (slot === initiator) {
    Atomics.or(hv.transport, idx, RS_FLUSH_LOCAL);
    return false;
  }
  const old = Atomics.or(hv.transport, idx, RS_FLUSH_PENDING);
  if ((old & RS_RUNNING) === 0) return false;
  // A running vCPU may be asleep in its own hypercall wait, on S_STATE: wake it.
  Atomics.notify(hv.transport, slotBase(slot) + S_STATE);
  return true;
}

function waitAck(hv: Hv, slot: number): void {
  const idx = slotBase(slot) + S_RUNSTATE;
  for (let i = 0; i < ACK_SPINS; i++) {
    if ((Atomics.load(hv.transport, idx) & RS_FLUSH_PENDING) === 0) return;
  }
  const deadline = Date.now() + ACK_TIMEOUT_MS;
  for (;;) {
    const v = Atomics.load(hv.transport, idx);
    if ((v & RS_FLUSH_PENDING) === 0) return;
    const left = deadline - Date.now();
    if (left <= 0) return;
    Atomics.wait(hv.transport, idx, v, left);
  }
}

/**
 * The running vCPUs the current flush posted to: the IPIs it waits for. A list of slots,
 * not a 64-bit mask of them: slot numbers go up to the machine's vCPU count (1024), while
 * one flush targets one domain's vCPUs, at most MAX_VCPUS_PER_DOMAIN (64).
 */
const waitSlots = new Int32Array(MAX_VCPUS_PER_DOMAIN);

/**
 * flush_tlb_mask: flush the given slots' TLBs. `initiator` (the calling vCPU's slot, or
 * -1) is flushed too when listed, but it is inside a hypercall, hence not running: its
 * flush is serviced as it returns. Counts one shootdown when any other vCPU is targeted.
 */
export function flushTlbSlots(hv: Hv, slots: ArrayLike<number>, n: number, initiator: number): void {
  hv.tlbClock++;
  let others = 0;
  // Post everything first, then wait: the IPIs are serviced in parallel.
  let nWait = 0;
  for (let i = 0; i < n; i++) {
    const slot = slots[i]!;
    if (slot !== initiator) {
      others++;
      // For the virtual clock: which vCPUs of the caller's domain this flush reached.
      const v = hv.slotVcpu[slot]!;
      if (v < 32) hv.vcEvents[VE_TARGETS_LO]! |= 1 << v;
      else hv.vcEvents[VE_TARGETS_HI]! |= 1 << (v - 32);
    } else {
      hv.vcEvents[VE_LOCAL_FLUSHES]!++;
    }
    if (postFlush(hv, slot, initiator)) {
      waitSlots[nWait++] = slot;
    } else if (slot !== initiator) {
      hv.counters.flushesDeferred++;
    }
  }
  if (others > 0) {
    hv.counters.shootdowns++;
    hv.vcEvents[VE_SHOOTDOWNS]!++;
    // Per initiator too, so a benchmark can count the shootdowns of its timed window.
    if (initiator >= 0 && initiator < hv.maxSlots) Atomics.add(hv.transport, slotBase(initiator) + S_SHOOTDOWNS, 1);
  }
  for (let k = 0; k < nWait; k++) {
    hv.counters.ipis++;
    waitAck(hv, waitSlots[k]!);
  }
}

const scratch = new Int32Array(64);

/** Flush every vCPU of the domain (its dirty mask: all of its vCPUs). */
export function flushDomain(hv: Hv, d: Domain, initiator: number): void {
  const n = d.vcpus.length;
  for (let i = 0; i < n; i++) scratch[i] = d.vcpus[i]!.slot;
  flushTlbSlots(hv, scratch, n, initiator);
}

/** Flush the domain's vCPUs named by a 64-bit vCPU bitmap (bits past the last vCPU ignored). */
export function flushDomainMask(hv: Hv, d: Domain, mask0: number, mask1: number, initiator: number): void {
  let n = 0;
  for (let v = 0; v < d.vcpus.length; v++) {
    const bit = v < 32 ? mask0 & (1 << v) : mask1 & (1 << (v - 32));
    if (bit !== 0) scratch[n++] = d.vcpus[v]!.slot;
  }
  if (n > 0) flushTlbSlots(hv, scratch, n, initiator);
}

/**
 * The flush on a type change: only vCPUs that have not flushed since the frame's type
 * count last fell to zero can hold a stale entry for it (Xen's tlbflush_filter).
 */
export function flushForTypeChange(hv: Hv, d: Domain, mfn: number, initiator: number): void {
  const stamp = hv.ft.tlbflushTimestamp[mfn]!;
  let n = 0;
  for (const v of d.vcpus) {
    if (hv.slotFlushStamp[v.slot]! <= stamp) scratch[n++] = v.slot;
  }
  if (n > 0) flushTlbSlots(hv, scratch, n, initiator);
}
