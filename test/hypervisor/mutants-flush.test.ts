/*
 * Rule tests for hypervisor/flush.ts (flush_tlb_mask over the runstate mailboxes), written
 * to kill the mutants MUTANTS.md lists for it. What a user of the hypervisor sees of a
 * flush: which vCPUs' runstate words get a pending flush (and of which kind), whether the
 * call waits for a running vCPU's acknowledgement (an IPI), the stats counters
 * (shootdowns, ipis, flushesDeferred), the per-initiator S_SHOOTDOWNS word and the
 * virtual clock's per-call events (S_VC_EVENTS, S_VC_TARGETS_*).
 *
 * A vCPU is RUNNING only on a worker thread. The IPI tests start STAND_IN, a few lines of
 * eval'd JS that plays running vCPUs on the shared transport as guest/vcpu.ts and
 * guest/arch/x86/mmu.ts's handleFlush do (RS_RUNNING set; a posted RS_FLUSH_PENDING
 * cleared with a notify, S_FLUSHES and S_IPIS counted). It counts before it acknowledges
 * (handleFlush counts after), so that the counts are in place when the call returns. It
 * imports nothing. The hypervisor
 * code under test runs here, in the test's own process, through XenBox.
 *
 * STAND_IN is a slow vCPU: it acknowledges a flush only once the hypervisor has gone to
 * sleep on that vCPU's runstate word (an Atomics.notify that wakes one waiter tells it so;
 * the woken hypervisor finds the flush still pending and sleeps again). So a hypervisor
 * that does not wait for the acknowledgement returns before it, always, and the tests are
 * deterministic, with no sleep. It also counts the times the hypervisor sleeps on a word
 * whose flush was already acknowledged ("late sleeps"): a correct waiter never does.
 */
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import {
  RS_FLUSH_ANY,
  RS_FLUSH_LOCAL,
  RS_FLUSH_PENDING,
  RS_RUNNING,
  S_FLUSHES,
  S_IPIS,
  S_RUNSTATE,
  S_SHOOTDOWNS,
  slotBase,
} from '../../src/abi/layout.js';
import { S_VC_EVENTS, S_VC_TARGETS_HI, S_VC_TARGETS_LO } from '../../src/abi/vclock.js';
import { MMUEXT_TLB_FLUSH_ALL, MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_TLB_FLUSH_MULTI } from '../../src/abi/xen.js';
import { type Dom, XenBox } from '../helpers/xenbox.js';
import { rawMmuext } from './helpers.js';

const STAND_IN = `
const { workerData, parentPort } = require('node:worker_threads');
const { transport, ctl, bases } = workerData;
const t = new Int32Array(transport);
const c = new Int32Array(ctl);
for (const b of bases) Atomics.or(t, b + ${S_RUNSTATE}, ${RS_RUNNING});
parentPort.postMessage('running');
const acked = bases.map(() => false);
while (Atomics.load(c, 0) === 0) {
  for (let k = 0; k < bases.length; k++) {
    const rs = bases[k] + ${S_RUNSTATE};
    if (!acked[k]) {
      if ((Atomics.load(t, rs) & ${RS_FLUSH_PENDING}) !== 0 && Atomics.notify(t, rs, 1) === 1) {
        Atomics.add(t, bases[k] + ${S_FLUSHES}, 1);
        Atomics.add(t, bases[k] + ${S_IPIS}, 1);
        Atomics.and(t, rs, ~${RS_FLUSH_ANY});
        Atomics.notify(t, rs);
        acked[k] = true;
      }
    } else if (Atomics.notify(t, rs, 1) === 1) {
      Atomics.add(c, 1, 1);
    }
  }
}`;

/** Running vCPUs played by STAND_IN on the given slots. */
class Running {
  readonly ctl = new Int32Array(new SharedArrayBuffer(8));
  readonly worker: Worker;
  constructor(box: XenBox, slots: number[]) {
    this.worker = new Worker(STAND_IN, {
      eval: true,
      workerData: { transport: box.t.buffer, ctl: this.ctl.buffer, bases: slots.map(slotBase) },
    });
  }
  /** Resolves once every slot is RUNNING. */
  async started(): Promise<void> {
    await once(this.worker, 'message');
  }
  /** Stop; returns the late sleeps it saw. */
  async stop(): Promise<number> {
    Atomics.store(this.ctl, 0, 1);
    await this.worker.terminate();
    return this.ctl[1]!;
  }
}

let running: Running | null = null;
afterEach(async () => {
  await running?.stop();
  running = null;
});

const rs = (box: XenBox, slot: number) => Atomics.load(box.t, slotBase(slot) + S_RUNSTATE);
const word = (box: XenBox, slot: number, w: number) => Atomics.load(box.t, slotBase(slot) + w);
/** S_VC_EVENTS of the slot's last call: [local flushes, shootdowns] (src/abi/vclock.ts packing). */
const vcFlushes = (box: XenBox, slot: number) => {
  const w = word(box, slot, S_VC_EVENTS);
  return [(w >>> 16) & 0xff, w >>> 24];
};
const counts = (box: XenBox) => {
  const s = box.xen.stats();
  return { shootdowns: s.shootdowns, ipis: s.ipis, flushesDeferred: s.flushesDeferred };
};
const flushAll = (a: Dom, vcpu: number) => {
  a.vcpu = vcpu;
  return a.mmuext([{ cmd: MMUEXT_TLB_FLUSH_ALL }]).rc;
};

describe('flush_tlb_mask: descheduled vCPUs (no IPI)', () => {
  it('MMUEXT_TLB_FLUSH_LOCAL flushes the caller as its call returns: RS_FLUSH_LOCAL only, no shootdown, nothing deferred', () => {
    const box = new XenBox();
    const a = box.domain('a', { vcpus: 2 });
    const [s0, s1] = a.info.slots as [number, number];
    expect(a.mmuext([{ cmd: MMUEXT_TLB_FLUSH_LOCAL }]).rc).toBe(0);
    // The caller's own flush is no IPI: the vCPU's wait loop must not take it for one.
    expect(rs(box, s0)).toBe(RS_FLUSH_LOCAL);
    expect(rs(box, s1)).toBe(0);
    expect(counts(box)).toEqual({ shootdowns: 0, ipis: 0, flushesDeferred: 0 });
    expect(vcFlushes(box, s0)).toEqual([1, 0]);
    expect([word(box, s0, S_VC_TARGETS_LO), word(box, s0, S_VC_TARGETS_HI)]).toEqual([0, 0]);
    expect(word(box, s0, S_SHOOTDOWNS)).toBe(0);
  });

  it.each([0, 2])(
    'MMUEXT_TLB_FLUSH_ALL from vCPU %i: the others get RS_FLUSH_PENDING (deferred), one shootdown counted for the caller',
    (caller) => {
      const box = new XenBox();
      const a = box.domain('a', { vcpus: 3 });
      const slots = a.info.slots;
      expect(flushAll(a, caller)).toBe(0);
      for (let v = 0; v < 3; v++) expect(rs(box, slots[v]!)).toBe(v === caller ? RS_FLUSH_LOCAL : RS_FLUSH_PENDING);
      expect(counts(box)).toEqual({ shootdowns: 1, ipis: 0, flushesDeferred: 2 });
      expect(vcFlushes(box, slots[caller]!)).toEqual([1, 1]);
      expect(word(box, slots[caller]!, S_VC_TARGETS_LO)).toBe(0b111 & ~(1 << caller));
      expect(word(box, slots[caller]!, S_VC_TARGETS_HI)).toBe(0);
      // S_SHOOTDOWNS is per initiator: a benchmark reads its own slot's count.
      for (let v = 0; v < 3; v++) expect(word(box, slots[v]!, S_SHOOTDOWNS)).toBe(v === caller ? 1 : 0);
    },
  );

  it('the virtual clock hears which vCPUs a flush reached, ids 32-63 in S_VC_TARGETS_HI', () => {
    const box = new XenBox({ maxSlots: 40 });
    const a = box.domain('a', { vcpus: 40 });
    const s0 = a.info.slots[0]!;
    // A raw op: the vCPU bitmap's two words at data word 100 (ExtOp carries only its low word).
    expect(rawMmuext(box, a, [MMUEXT_TLB_FLUSH_MULTI, 0, 0, 0, a.putMask(100, [3, 31, 32, 33, 39]), 0])).toBe(0);
    expect([word(box, s0, S_VC_TARGETS_LO) >>> 0, word(box, s0, S_VC_TARGETS_HI) >>> 0]).toEqual([
      ((1 << 3) | (1 << 31)) >>> 0,
      (1 << 0) | (1 << 1) | (1 << 7),
    ]);
    expect(vcFlushes(box, s0)).toEqual([0, 1]);
    expect(counts(box)).toEqual({ shootdowns: 1, ipis: 0, flushesDeferred: 5 });
  });
});

describe('flush_tlb_mask: running vCPUs (an IPI and its acknowledgement)', () => {
  it('a flush of running vCPUs returns only once each has acknowledged; descheduled ones are left pending', async () => {
    const box = new XenBox({ maxSlots: 34 });
    const a = box.domain('a', { vcpus: 34 });
    // Two below slot 32 and two above: the hypervisor's wait covers both halves.
    const live = [1, 2, 32, 33];
    running = new Running(
      box,
      live.map((v) => a.info.slots[v]!),
    );
    await running.started();
    expect(flushAll(a, 0)).toBe(0);
    // Read before stopping STAND_IN: the acknowledgements came in before the call returned.
    for (let v = 1; v < 34; v++) {
      const s = a.info.slots[v]!;
      if (live.includes(v)) {
        expect([rs(box, s), word(box, s, S_FLUSHES), word(box, s, S_IPIS)]).toEqual([RS_RUNNING, 1, 1]);
      } else {
        expect(rs(box, s)).toBe(RS_FLUSH_PENDING);
      }
    }
    expect(counts(box)).toEqual({ shootdowns: 1, ipis: live.length, flushesDeferred: 33 - live.length });
    expect(await running.stop()).toBe(0);
    running = null;
  });

  // The bug (b4fc9ba): the slots to wait for were kept in a 64-bit mask, so slot 70's bit
  // landed on slot 38 (another domain's vCPU, not pending): the call returned at once,
  // before slot 70 had flushed. Slots go up to the machine's vCPU count (1024).
  it('a running vCPU of a second domain (slot 64 and up) is waited for too', async () => {
    const box = new XenBox({ maxSlots: 72 });
    box.domain('a', { vcpus: 64, frames: 512 });
    const b = box.domain('b', { vcpus: 8, frames: 256 });
    const target = b.info.slots[6]!;
    expect(target).toBeGreaterThanOrEqual(64);
    running = new Running(box, [target]);
    await running.started();
    expect(flushAll(b, 0)).toBe(0);
    expect([rs(box, target), word(box, target, S_FLUSHES), word(box, target, S_IPIS)]).toEqual([RS_RUNNING, 1, 1]);
    expect(counts(box)).toEqual({ shootdowns: 1, ipis: 1, flushesDeferred: 6 });
    expect(await running.stop()).toBe(0);
    running = null;
  });

  // A worker that dies while RUNNING never acknowledges: the hypervisor waits ACK_TIMEOUT_MS
  // (2 s, hypervisor/flush.ts) and then gives that IPI up, rather than hang every domain.
  it('an IPI that is never acknowledged (a dead RUNNING vCPU) is given up after 2 s: the call returns, the flush stays pending', () => {
    const box = new XenBox();
    const a = box.domain('a', { vcpus: 2 });
    const s1 = a.info.slots[1]!;
    Atomics.or(box.t, slotBase(s1) + S_RUNSTATE, RS_RUNNING); // and nobody plays it
    const t0 = Date.now();
    expect(flushAll(a, 0)).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1990);
    expect(rs(box, s1)).toBe(RS_RUNNING | RS_FLUSH_PENDING);
    expect(counts(box)).toEqual({ shootdowns: 1, ipis: 1, flushesDeferred: 0 });
  }, 20_000);
});
