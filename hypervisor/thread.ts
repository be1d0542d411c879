/*
 * The hypervisor thread's worker entry: constructs Xen and runs the doorbell loop that
 * serves the vCPUs' request slots and the controller's control requests.
 *
 * The doorbell (T_DOORBELL) is a counter: whoever has work (a vCPU with a request in its
 * slot, the controller with a message on the control port) bumps it and notifies. The
 * loop reads the counter BEFORE scanning, so a bump that lands during a scan makes the
 * next wait return at once: no wakeup is lost. It spins briefly before Atomics.wait,
 * because waking a sleeper costs far more than a spin that catches the next request
 * (see guest/vcpu.ts for the figures).
 *
 * Control requests arrive on a MessagePort drained with receiveMessageOnPort after each
 * wake (this thread's event loop never runs while the loop does). An exception in a
 * control op is replied, never fatal; one from serveSlot (a Xen bug: guest input never
 * throws) fails that hypercall with -EFAULT and is reported to the controller.
 */
import { receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import { EFAULT } from '../src/abi/xen.js';
import {
  HV_RUNNING,
  HV_STOPPED,
  HV_STOPPING,
  S_RESULT,
  S_STATE,
  SLOT_DONE,
  SLOT_REQUEST,
  T_CONTROL,
  T_DOORBELL,
  T_HV_STATE,
  slotBase,
} from '../src/abi/layout.js';
import type { XenControlReply, XenControlRequest, XenThreadData, XenThreadEvent } from '../src/abi/control.js';
import { Xen } from './xen.js';

/**
 * Doorbell loads before sleeping. Fixed on purpose: measured on a 2-CPU VM, an adaptive
 * budget that shrinks after each sleep made the hypervisor and the vCPU share one CPU
 * more often (~17-45 us per round trip instead of ~0.4 us).
 */
const DOORBELL_SPINS = 2000;
/**
 * How long the hypervisor spins on the doorbell before sleeping (PVMMU_HV_SPIN_US, default
 * 50). Measured with `pvmmu run vmap-cycle --vcpus 1 --sched parallel`: 70 us per cycle
 * with the 2000-load spin alone (every hypercall paid a futex wake), see the README.
 */
const DOORBELL_SPIN_US = Number(process.env.PVMMU_HV_SPIN_US ?? 50);

function errorReply(id: number, e: unknown): XenControlReply {
  const err = e instanceof Error ? e : new Error(String(e));
  return { id, ok: false, error: err.message, name: err.name };
}

/** One control op; throws what the op throws. */
function control(xen: Xen, req: XenControlRequest): unknown {
  switch (req.op) {
    case 'createDomain':
      return xen.createDomain(req.cfg);
    case 'destroyDomain':
      return xen.destroyDomain(req.domid);
    case 'audit':
      return xen.audit();
    case 'stats':
      return xen.stats();
    case 'drainLog':
      return xen.drainLog();
    case 'freeFrames':
      return xen.freeFrames();
    case 'takeRecording':
      return xen.takeRecording(req.name);
    case 'fillFrame':
      return xen.fillFrame(req.domid, req.pfn, req.words);
    default:
      throw new TypeError(`unknown control op "${(req as { op: unknown }).op}"`);
  }
}

/** Serve every slot holding a request. */
function serveSlots(xen: Xen, t: Int32Array, maxSlots: number, port: MessagePort): void {
  // Only slots ever given to a vCPU can hold a request (one load each, ~5 ns).
  const n = Math.min(maxSlots, xen.slotsInUse());
  for (let slot = 0; slot < n; slot++) {
    const base = slotBase(slot);
    if (Atomics.load(t, base + S_STATE) !== SLOT_REQUEST) continue;
    try {
      xen.serveSlot(slot);
    } catch (e) {
      // Fail the call rather than leave the vCPU waiting forever.
      if (Atomics.load(t, base + S_STATE) === SLOT_REQUEST) {
        t[base + S_RESULT] = -EFAULT;
        Atomics.store(t, base + S_STATE, SLOT_DONE);
        Atomics.notify(t, base + S_STATE);
      }
      const message = e instanceof Error ? (e.stack ?? e.message) : String(e);
      port.postMessage({ event: 'bug', slot, message } satisfies XenThreadEvent);
    }
  }
}

/** Answer every queued control request; false once shutdown was asked. */
function drainControl(xen: Xen, t: Int32Array, port: MessagePort): boolean {
  for (;;) {
    const m = receiveMessageOnPort(port);
    if (m === undefined) return true;
    const req = m.message as XenControlRequest;
    if (req.op === 'shutdown') {
      Atomics.store(t, T_HV_STATE, HV_STOPPING);
      port.postMessage({ id: req.id, ok: true, value: undefined } satisfies XenControlReply);
      return false;
    }
    let reply: XenControlReply;
    try {
      reply = { id: req.id, ok: true, value: control(xen, req) };
    } catch (e) {
      reply = errorReply(req.id, e);
    }
    try {
      port.postMessage(reply);
    } catch (e) {
      port.postMessage(errorReply(req.id, e)); // a value that cannot be cloned
    }
  }
}

function doorbellLoop(xen: Xen, t: Int32Array, maxSlots: number, port: MessagePort): void {
  let seen = Atomics.load(t, T_DOORBELL);
  let control = -1;
  for (;;) {
    serveSlots(xen, t, maxSlots, port);
    // receiveMessageOnPort costs about a microsecond: only when a message was posted.
    const c = Atomics.load(t, T_CONTROL);
    if (c !== control) {
      control = c;
      if (!drainControl(xen, t, port)) return;
    }
    let now: number;
    let spins = DOORBELL_SPINS;
    let deadline = 0;
    while ((now = Atomics.load(t, T_DOORBELL)) === seen) {
      if (spins > 0) {
        spins--;
        continue;
      }
      // Keep spinning for DOORBELL_SPIN_US in all, looking at the clock every 256 loads:
      // a guest between two hypercalls usually comes back within that, and a futex
      // wake-up costs ~13 us on this kind of VM against ~0.4 us for a spinning one.
      const clock = performance.now();
      if (deadline === 0) deadline = clock + DOORBELL_SPIN_US / 1000;
      if (clock < deadline) {
        spins = 256;
        continue;
      }
      Atomics.wait(t, T_DOORBELL, seen);
    }
    seen = now;
  }
}

const data = workerData as XenThreadData;
const t = new Int32Array(data.transport);
const xen = new Xen({
  paging: data.paging,
  frames: data.frames,
  mem: data.mem,
  transport: data.transport,
  maxSlots: data.maxSlots,
  enforce: data.enforce,
  record: data.record,
});
Atomics.store(t, T_HV_STATE, HV_RUNNING);
data.port.postMessage({ event: 'ready' } satisfies XenThreadEvent);
try {
  doorbellLoop(xen, t, data.maxSlots, data.port);
} finally {
  Atomics.store(t, T_HV_STATE, HV_STOPPED);
  data.port.close();
}
