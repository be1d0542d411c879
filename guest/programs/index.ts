/*
 * The registry of guest programs a vCPU worker can run, and the `ping` program.
 *
 * A program is a function (cpu, params) -> handler, loaded lazily so a worker only loads
 * the program it runs. Adding one is a name in src/abi/vcpu.ts's PROGRAM_NAMES and a line
 * in PROGRAMS at the bottom of this file (the module's default export is the program).
 *
 * The handler serves the controller's requests ({id, op, ...}; the worker strips nothing
 * and replies {id, ok, value | error}). It runs with the vCPU RUNNING; an async handler
 * that awaits something slow should await it through cpu.idle(p) so TLB shootdowns need
 * not wait for it. Throwing GuestPanic (guest/vcpu.ts) kills the vCPU and its domain;
 * any other error is reported to the request only.
 */
import { MMUEXT_TLB_FLUSH_ALL, rcName } from '../../src/abi/xen.js';
import { mmuextOne, schedOpYield, updateVaMapping } from '../arch/xen/hypercall.js';
import { GuestPanic, type Vcpu } from '../vcpu.js';
import { PROGRAM_NAMES, type ProgramName, type VcpuRequest } from '../../src/abi/vcpu.js';
import type { GuestProgram, ProgramHandler, ProgramModule } from './types.js';

/** Load a program by name; throws with the known names when there is none. */
export async function loadProgram(name: string): Promise<GuestProgram> {
  if (!(PROGRAM_NAMES as readonly string[]).includes(name)) {
    throw new TypeError(`unknown guest program "${name}"; registered: ${PROGRAM_NAMES.join(', ')}`);
  }
  return (await PROGRAMS[name as ProgramName]()).default;
}

/* ------------------------------------------------------------------- ping */

function nonNegInt(req: VcpuRequest, key: string, dflt: number): number {
  const v = req[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) {
    throw new TypeError(`ping ${req.op}: ${key} must be a non-negative integer (got ${String(v)})`);
  }
  return v;
}

/**
 * With req.barrier (a SharedArrayBuffer, word 0 counting arrivals) and req.parties: wait
 * until that many vCPUs have arrived, so parallel timed loops start together. Sleeps
 * rather than spins, so that late arrivals get the cores.
 */
function startBarrier(req: VcpuRequest): void {
  const sab = req.barrier;
  if (sab === undefined) return;
  const parties = nonNegInt(req, 'parties', 1);
  if (!(sab instanceof SharedArrayBuffer) || sab.byteLength < 4)
    throw new TypeError(`ping ${req.op}: barrier must be a SharedArrayBuffer of at least 4 bytes`);
  const b = new Int32Array(sab, 0, 1);
  if (Atomics.add(b, 0, 1) + 1 >= parties) {
    Atomics.notify(b, 0);
    return;
  }
  for (let v = Atomics.load(b, 0); v < parties; v = Atomics.load(b, 0)) Atomics.wait(b, 0, v, 10);
}

/** Run `call` req.n times (stopping at the first error); the elapsed time per call. */
function timed(req: VcpuRequest, call: () => number, what: string): { n: number; ns: number; nsPerCall: number } {
  const n = nonNegInt(req, 'n', 1);
  startBarrier(req);
  let rc = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n && rc === 0; i++) rc = call();
  const ns = Number(process.hrtime.bigint() - t0);
  if (rc !== 0) throw new Error(`${what} returned ${rc} (${rcName(rc)})`);
  return { n, ns, nsPerCall: n > 0 ? ns / n : 0 };
}

/**
 * ping: the transport's own test and benchmark guest.
 *   hypercall-ping {n, barrier?, parties?, gapNs?}   n null hypercalls (sched_op yield),
 *                             after the start barrier when given; gapNs: run a
 *                             pseudo-random 0..gapNs ns before each, so requests land at
 *                             every point of the hypervisor's wait -> {n, ns, nsPerCall}
 *   tlb-flush-all {n}         n MMUEXT_TLB_FLUSH_ALL (a shootdown of the domain's other
 *                             vCPUs, waiting for the running ones) -> {n, ns, nsPerCall}
 *   spin {ms, untilFlushes}   run (RUNNING) polling interrupts until this vCPU has serviced
 *                             untilFlushes flushes or ms passed -> stats
 *   update-va-mapping {va, valLo, valHi, flags}   one update_va_mapping -> rc
 *   translate {va, write}     the MMU's answer for va -> {mfn, fault?}
 *   stats                     -> {flushes, ipis, tlbFlushes, hypercalls}
 *   panic {message}           GuestPanic: kills the vCPU and its domain
 */
export function ping(cpu: Vcpu): ProgramHandler {
  const stats = () => ({
    flushes: cpu.flushes,
    ipis: cpu.ipis,
    tlbFlushes: cpu.mmu.flushCount,
    hypercalls: cpu.hypercalls,
  });
  return (req) => {
    switch (req.op) {
      case 'hypercall-ping': {
        const gap = nonNegInt(req, 'gapNs', 0);
        if (gap === 0) return timed(req, () => schedOpYield(cpu), 'sched_op yield');
        let seed = 0x2545f491;
        return timed(
          req,
          () => {
            seed = (Math.imul(seed, 1103515245) + 12345) | 0;
            const until = performance.now() + ((seed >>> 8) % (gap + 1)) / 1e6;
            while (performance.now() < until) {}
            return schedOpYield(cpu);
          },
          'sched_op yield',
        );
      }
      case 'tlb-flush-all':
        return timed(req, () => mmuextOne(cpu, MMUEXT_TLB_FLUSH_ALL), 'mmuext_op tlb_flush_all');
      case 'spin': {
        const ms = nonNegInt(req, 'ms', 1000);
        const until = cpu.flushes + nonNegInt(req, 'untilFlushes', 1);
        const end = Date.now() + ms;
        while (cpu.flushes < until && Date.now() < end) cpu.pollInterrupts();
        return stats();
      }
      case 'update-va-mapping':
        return updateVaMapping(
          cpu,
          nonNegInt(req, 'va', 0),
          nonNegInt(req, 'valLo', 0),
          nonNegInt(req, 'valHi', 0),
          nonNegInt(req, 'flags', 0),
        );
      case 'translate': {
        const va = nonNegInt(req, 'va', 0);
        const mfn = cpu.mmu.translate(va, req.write === true);
        return mfn < 0 ? { mfn, fault: cpu.mmu.fault() } : { mfn };
      }
      case 'stats':
        return stats();
      case 'panic':
        throw new GuestPanic(typeof req.message === 'string' ? req.message : 'ping: panic requested');
      default:
        throw new TypeError(
          `ping: unknown op "${req.op}"; accepted: hypercall-ping, tlb-flush-all, spin, update-va-mapping, translate, stats, panic`,
        );
    }
  };
}

/* --------------------------------------------------------------- registry */

/** Typed by the ABI's PROGRAM_NAMES, so the host's list and this one cannot drift apart. */
const PROGRAMS: Record<ProgramName, () => Promise<ProgramModule>> = {
  ping: async () => ({ default: ping }),
  script: () => import('./script.js'),
  bench: () => import('./bench.js'),
  kernel: () => import('./kernel.js'),
  victim: () => import('./victim.js'),
  fuzz: () => import('./fuzz.js'),
};
