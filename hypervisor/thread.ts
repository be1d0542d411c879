/*
 * The hypervisor thread's worker entry: constructs Xen and runs the doorbell loop that
 * serves the vCPUs' request slots and the controller's control requests.
 *
 * A vCPU publishes a request by storing SLOT_REQUEST in its slot's S_STATE. While the
 * loop spins it polls those words itself, one load per slot in use, so a request costs
 * the vCPU one store and the loop one line transfer: no doorbell on the call path. The
 * doorbell (T_DOORBELL) is a counter for a sleeping loop: before it sleeps, the loop says
 * so (T_HV_SLEEPING = 1), looks at every slot once more, and only then waits on the
 * doorbell; a vCPU that sees the flag after its store bumps the doorbell and notifies
 * (the Dekker rule of src/abi/wait.ts: either the loop's last look sees the request or
 * the vCPU sees the flag). The controller, with a message on the control port, always
 * bumps and notifies. The loop reads the counter BEFORE scanning, so a bump that lands
 * during a scan makes the next wait return at once: no wake-up is lost. It spins for the
 * adaptive budget of src/abi/wait.ts (the figures are there).
 *
 * Why poll the slots: with the doorbell on the call path, the loop saw the bump, then
 * loaded the slot, two dependent line transfers before it could serve, and the vCPU paid
 * a locked add on a line the loop was reading. Measured at 01:58 on the 2-core VM, two
 * alternating pairs of `node dist/bench/run.js hypercall --repeat 5` (b4fc9ba against
 * this): null hypercall / pure-spin floor 1.80x and 1.73x with the doorbell, 1.25x and
 * 1.48x polling.
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
  RS_RUNNING,
  S_RESULT,
  S_RUNSTATE,
  S_STATE,
  SLOT_DONE,
  SLOT_REQUEST,
  T_CONTROL,
  T_DOORBELL,
  T_HV_SLEEPING,
  T_HV_SERVING,
  T_HV_STATE,
  T_HV_THREADS,
  slotBase,
} from '../src/abi/layout.js';
import type { XenControlReply, XenControlRequest, XenThreadData, XenThreadEvent } from '../src/abi/control.js';
import { availableParallelism } from 'node:os';
import { CLOCK_EVERY, SpinBudget, fixedSpinFromEnv } from '../src/abi/wait.js';
import { Xen } from './xen.js';

/** The doorbell's adaptive spin (src/abi/wait.ts); PVMMU_SPIN_US fixes it, in us. */
const spin = new SpinBudget({
  cores: availableParallelism(),
  fixedSpinUs: fixedSpinFromEnv(process.env.PVMMU_SPIN_US),
});

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
    case 'injectFault':
      return xen.injectFault(req.slot);
    case 'takeRecording':
      return xen.takeRecording(req.name);
    case 'fillFrame':
      return xen.fillFrame(req.domid, req.pfn, req.words);
    default:
      throw new TypeError(`unknown control op "${(req as { op: unknown }).op}"`);
  }
}

/**
 * Serve every slot holding a request among the first `slots` (usableSlots). Returns how
 * many vCPUs' runstates said RUNNING: the runnable threads of the wait policy (an idle vCPU
 * worker, blocked between requests, takes no core). Its runstate shares the line of
 * S_STATE, which was just loaded.
 */
function serveSlots(xen: Xen, t: Int32Array, slots: number, port: MessagePort): number {
  let running = 0;
  for (let slot = 0; slot < slots; slot++) {
    const base = slotBase(slot);
    const busy = Atomics.load(t, base + S_STATE) === SLOT_REQUEST;
    if ((Atomics.load(t, base + S_RUNSTATE) & RS_RUNNING) !== 0) running++;
    if (!busy) continue;
    t[T_HV_SERVING] = slot + 1; // the waiting vCPU's hint (src/abi/wait.ts): a plain store
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
    } finally {
      t[T_HV_SERVING] = 0;
    }
  }
  return running;
}

/**
 * Slots that can hold a request: only those ever given to a vCPU. Domains (and so their
 * slots) are created by control ops alone, so this changes only in drainControl.
 */
function usableSlots(xen: Xen, maxSlots: number): number {
  return Math.min(maxSlots, xen.slotsInUse());
}

/**
 * Does one of the first `slots` slots hold a request? The spinning loop's poll: one load
 * per slot, each an L1 hit until its vCPU stores to that line.
 */
function polledRequest(t: Int32Array, slots: number): boolean {
  for (let slot = 0; slot < slots; slot++) if (Atomics.load(t, slotBase(slot) + S_STATE) === SLOT_REQUEST) return true;
  return false;
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
  let threads = 0;
  let slots = usableSlots(xen, maxSlots);
  for (;;) {
    // The transport's runnable threads, for every side's spin (one compare when unchanged).
    const th = serveSlots(xen, t, slots, port) + 1;
    if (th !== threads) {
      threads = th;
      Atomics.store(t, T_HV_THREADS, th);
    }
    // receiveMessageOnPort costs about a microsecond: only when a message was posted.
    const c = Atomics.load(t, T_CONTROL);
    if (c !== control) {
      control = c;
      if (!drainControl(xen, t, port)) return;
      slots = usableSlots(xen, maxSlots); // a control op may have created a domain
    }
    let now: number;
    let n = 0;
    let start = 0;
    let limit = 0;
    let slept = false;
    while ((now = Atomics.load(t, T_DOORBELL)) === seen && !polledRequest(t, slots)) {
      if (++n % CLOCK_EVERY !== 0) continue;
      const clock = performance.now();
      if (start === 0) {
        start = clock;
        limit = spin.limitMs(threads);
        continue;
      }
      if (clock - start < limit) continue;
      // Sleep: say so, then look at the slots once more (a vCPU stores its request, then
      // looks at T_HV_SLEEPING). The controller always bumps and notifies.
      slept = true;
      Atomics.store(t, T_HV_SLEEPING, 1);
      if (!polledRequest(t, slots)) Atomics.wait(t, T_DOORBELL, seen);
      Atomics.store(t, T_HV_SLEEPING, 0);
    }
    if (start !== 0) spin.record(performance.now() - start, slept);
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
