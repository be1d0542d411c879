/*
 * The vCPU runtime inside a worker: the slot views, hypercall submission and the
 * runstate protocol (RUNNING / FLUSH_PENDING) that TLB shootdowns rely on.
 *
 * Runstate (src/layout.ts has the ordering rule; hypervisor/flush.ts the other side):
 *  - RUNNING is set while guest code executes. The MMU's hot path and pollInterrupts()
 *    service a flush posted meanwhile (an IPI: the poster waits for it).
 *  - block() -- before a hypercall wait, idling, or waiting for the controller -- clears
 *    RUNNING first and only then services a pending flush, so a flush posted while we
 *    were still running is always acknowledged, and one posted after is not waited for.
 *  - resume() sets RUNNING and services a pending flush before the next access.
 *
 * Hypercall submission (one outstanding per slot): the arguments are plain stores, then
 * Atomics.store(S_STATE, SLOT_REQUEST) publishes them to the hypervisor, which polls
 * S_STATE while it spins; the doorbell is bumped and notified only when the hypervisor
 * said it sleeps (T_HV_SLEEPING). We spin on S_STATE for the adaptive budget of
 * src/abi/wait.ts, then set S_WAITING and fall back to Atomics.wait. The hypervisor
 * writes S_RESULT, stores SLOT_DONE and notifies S_STATE when S_WAITING is set; we read
 * the result and hand the slot back (SLOT_IDLE). The vCPU is blocked for the wait and
 * leaves in the runstate it entered with.
 */
import type { DomainInfo } from '../src/abi/control.js';
import type { VcpuInit } from '../src/abi/vcpu.js';
import {
  RS_FLUSH_ANY,
  RS_FLUSH_PENDING,
  RS_RUNNING,
  S_ARGS,
  S_OP,
  S_RESULT,
  S_RUNSTATE,
  S_STATE,
  S_WAITING,
  T_HV_SLEEPING,
  T_HV_SERVING,
  T_HV_THREADS,
  S_FLUSHES,
  S_IPIS,
  SLOT_DONE,
  SLOT_IDLE,
  SLOT_REQUEST,
  T_DOORBELL,
  slotBase,
  slotDataBase,
} from '../src/abi/layout.js';
import { availableParallelism } from 'node:os';
import { CLOCK_EVERY, SpinBudget, fixedSpinFromEnv } from '../src/abi/wait.js';
import { Mmu } from './arch/x86/mmu.js';
import { TN, type TraceBuffer, traceNowUs } from '../src/abi/trace.js';

/** Trace name of each hypercall number. */
const HYPERCALL_TRACE_NAME: Readonly<Record<number, number>> = {
  1: TN.mmu_update,
  13: TN.multicall,
  14: TN.update_va_mapping,
  26: TN.mmuext_op,
};

/** Longest sleep in a hypercall wait before looking for a flush IPI again. */
const HYPERCALL_WAIT_MS = 0.1;

/**
 * A guest kernel panic / BUG(). Thrown by guest code, it kills the vCPU's worker; the
 * controller then destroys the domain. Any other error thrown while serving a controller
 * request is only reported back to that request.
 */
export class GuestPanic extends Error {
  override name = 'GuestPanic';
}

function noop(): void {}

/** panic(): kill this vCPU (and so its domain) with a message. */
export function panic(message: string): never {
  throw new GuestPanic(message);
}

export class Vcpu {
  readonly info: DomainInfo;
  readonly vcpuId: number;
  readonly slot: number;
  readonly mmu: Mmu;
  /** The transport, signed (states, results) and unsigned (arguments, data). */
  readonly t: Int32Array;
  readonly u32: Uint32Array;
  /** Transport index of the slot's first argument word, and of word 0 of its data area. */
  readonly argBase: number;
  readonly dataBase: number;
  /** Hypercalls issued. */
  hypercalls = 0;
  /** Called before every hypercall: the virtual clock's event (guest/kernel/vclock.ts); a no-op otherwise. */
  clockEvent: () => void = noop;
  /** Where hypercalls are recorded (--trace), or null: one test on the call path. */
  trace: TraceBuffer | null = null;

  readonly #base: number;
  readonly #state: number;
  readonly #rs: number;
  readonly #waiting: number;
  /** What T_HV_SERVING holds while the hypervisor serves this slot. */
  readonly #servingMark: number;
  /** This vCPU's adaptive spin (src/abi/wait.ts). */
  readonly spin = new SpinBudget({
    cores: availableParallelism(),
    fixedSpinUs: fixedSpinFromEnv(process.env.PVMMU_SPIN_US),
  });

  constructor(init: VcpuInit) {
    this.info = init.info;
    this.vcpuId = init.vcpu;
    this.slot = init.slot;
    this.t = new Int32Array(init.transport);
    this.u32 = new Uint32Array(init.transport);
    const base = slotBase(init.slot);
    this.#base = base;
    this.argBase = base + S_ARGS;
    this.dataBase = slotDataBase(init.slot);
    this.#state = base + S_STATE;
    this.#rs = base + S_RUNSTATE;
    this.#waiting = base + S_WAITING;
    this.#servingMark = init.slot + 1;
    this.mmu = new Mmu(init.mem, init.info.paging, {
      mailbox: this.t,
      slot: init.slot,
      ...(init.tlbCheck === undefined ? {} : { tlbCheck: init.tlbCheck }),
    });
    // The builder installed the root table as every vCPU's baseptr.
    const root = init.info.p2m[init.info.ptBasePfn];
    if (root !== undefined && root >= 0) this.mmu.setBaseptr(root);
    this.#reclaimSlot();
  }

  /**
   * A worker stopped in the middle of a hypercall leaves its slot REQUEST or DONE. The
   * hypervisor still serves a stale request, so wait for it, then take the slot back.
   */
  #reclaimSlot(): void {
    const t = this.t;
    while (Atomics.load(t, this.#state) === SLOT_REQUEST) Atomics.wait(t, this.#state, SLOT_REQUEST, 100);
    Atomics.store(t, this.#state, SLOT_IDLE);
  }

  /* -------------------------------------------------------------- hypercalls */

  /** Argument i (0..5) as (lo, hi). */
  setArg(i: number, lo: number, hi = 0): void {
    this.u32[this.argBase + 2 * i] = lo;
    this.u32[this.argBase + 2 * i + 1] = hi;
  }

  /**
   * Issue hypercall `op` with the arguments and data already in the slot; returns its
   * result (>= 0, or a negative errno). The vCPU is not RUNNING while it waits.
   */
  hypercall(op: number): number {
    this.clockEvent();
    const t = this.t;
    const st = this.#state;
    const t0 = this.trace === null ? 0 : traceNowUs();
    if (Atomics.load(t, st) !== SLOT_IDLE) {
      throw new Error(`vCPU ${this.vcpuId}: hypercall ${op} issued while slot ${this.slot} is busy`);
    }
    t[this.#base + S_OP] = op;
    Atomics.store(t, st, SLOT_REQUEST); // publishes op, args and data; a spinning hypervisor polls it
    // Ring the doorbell only for a sleeping hypervisor (the flag protocol of src/abi/wait.ts).
    if (Atomics.load(t, T_HV_SLEEPING) !== 0) {
      Atomics.add(t, T_DOORBELL, 1);
      Atomics.notify(t, T_DOORBELL, 1);
    }
    const rs = this.#rs;
    let n = 0;
    let start = 0;
    let limit = 0;
    let serving = 0;
    let slept = false;
    while (Atomics.load(t, st) !== SLOT_DONE) {
      // A vCPU inside a hypercall is still running (in Xen, on its pCPU): it takes flush
      // IPIs while it waits. The poster wakes it through S_STATE if it sleeps.
      const r = Atomics.load(t, rs);
      if ((r & RS_FLUSH_PENDING) !== 0) this.mmu.handleFlush((r & RS_RUNNING) !== 0);
      if (++n % CLOCK_EVERY !== 0) continue;
      const now = performance.now();
      if (start === 0) {
        start = now;
        const threads = Atomics.load(t, T_HV_THREADS);
        limit = this.spin.limitMs(threads);
        serving = this.spin.servingLimitMs(threads);
        continue;
      }
      if (now - start < limit) continue;
      // Past the budget, but the hypervisor is on a core serving this very call (src/abi/wait.ts).
      if (t[T_HV_SERVING] === this.#servingMark && now - start < serving) continue;
      // Sleep: say so, then look once more (the hypervisor stores SLOT_DONE, then looks at
      // S_WAITING). The poster of a flush notifies S_STATE as well, and may do so between
      // our look at the runstate and our wait: the timeout bounds that lost wake-up.
      slept = true;
      Atomics.store(t, this.#waiting, 1);
      if (Atomics.load(t, st) !== SLOT_DONE) Atomics.wait(t, st, SLOT_REQUEST, HYPERCALL_WAIT_MS);
      Atomics.store(t, this.#waiting, 0);
    }
    if (start !== 0) this.spin.record(performance.now() - start, slept);
    const rc = t[this.#base + S_RESULT]!;
    Atomics.store(t, st, SLOT_IDLE);
    this.hypercalls++;
    if (this.trace !== null) this.trace.complete(HYPERCALL_TRACE_NAME[op] ?? TN.hypercalls, t0, traceNowUs() - t0, rc);
    // Flushes the call itself asked for (ours is never waited for): before the next access.
    if ((Atomics.load(t, rs) & RS_FLUSH_ANY) !== 0) this.mmu.handleFlush(false);
    return rc;
  }

  /* ---------------------------------------------------------------- runstate */

  get running(): boolean {
    return (Atomics.load(this.t, this.#rs) & RS_RUNNING) !== 0;
  }

  /** Stop running guest code: clear RUNNING, then service a pending flush. Was it running? */
  block(): boolean {
    const old = Atomics.and(this.t, this.#rs, ~RS_RUNNING);
    if ((old & RS_FLUSH_PENDING) !== 0) {
      // Posted while we ran: the poster saw RUNNING and is waiting for this ack.
      this.mmu.handleFlush((old & RS_RUNNING) !== 0);
    } else if ((Atomics.load(this.t, this.#rs) & RS_FLUSH_ANY) !== 0) {
      this.mmu.handleFlush(false);
    }
    return (old & RS_RUNNING) !== 0;
  }

  /** Run guest code again: set RUNNING, then service a flush posted while we were away. */
  resume(): void {
    const old = Atomics.or(this.t, this.#rs, RS_RUNNING);
    if ((old & RS_FLUSH_ANY) !== 0) this.mmu.handleFlush(false);
  }

  /** For guest spin loops: take a flush IPI if one is pending. */
  pollInterrupts(): void {
    this.mmu.pollInterrupts();
  }

  /** Await `p` as an idle vCPU (not RUNNING, so shootdowns need not wait for us). */
  async idle<T>(p: Promise<T>): Promise<T> {
    const wasRunning = this.block();
    try {
      return await p;
    } finally {
      if (wasRunning) this.resume();
    }
  }

  /** TLB flushes serviced and, of those, the ones that arrived while running. */
  get flushes(): number {
    return Atomics.load(this.t, this.#base + S_FLUSHES);
  }

  get ipis(): number {
    return Atomics.load(this.t, this.#base + S_IPIS);
  }
}
