/*
 * Running a workload on a vCPU under one of the two schedulers.
 *
 *  - parallel: every vCPU worker runs its share of the steps at once, on real threads;
 *    hypercalls, locks and TLB shootdowns contend for real (the benchmarks' mode).
 *  - det: one step at a time, the next vCPU drawn from a seeded generator kept in
 *    shared memory; a vCPU waiting for its turn is not running, so flushes aimed at it
 *    are deferred, never IPIs. Same seed, same interleaving, same hypercall sequence.
 *
 * Virtual time: one step is one millisecond of guest time (HZ = 100: a tick per ten
 * steps), counted globally, so timers such as xfsbufd's fire at the same step every run.
 */
import { Rng } from '../lib/random.js';
import type { Kernel } from '../kernel/kernel.js';
import { H_RNG, H_STOP, H_TURN } from '../kernel/state.js';
import { C_OPS, COUNTERS_BASE } from '../../src/abi/kernel.js';
import { jiffiesAt } from '../kernel/clock.js';
import { resetVclock, VClock, vclockResult } from '../kernel/vclock.js';

export type Sched = 'parallel' | 'det';

export interface Workload {
  /** Set up this vCPU's part (before the first step). */
  init(k: Kernel, rng: Rng): void;
  /** One step; `now` is virtual time in ticks. */
  step(k: Kernel, rng: Rng, now: number): void;
  /** Tear down this vCPU's part (exit its tasks, unmount...). */
  fini(k: Kernel): void;
  /** Workload-specific numbers for the summary. */
  stats(): Record<string, number>;
}

const STOP = -1;

function xorshift(x: number): number {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return x | 0;
}

/** What one vCPU did: its steps, and the time its step loop took (set-up and tear-down excluded). */
export interface RunResult {
  steps: number;
  loopNs: number;
  /** --clock virtual: this vCPU's virtual clock at the end of its steps, and its breakdown (ns by category). */
  virtualNs?: number;
  breakdown?: number[];
  /** --clock virtual: turn hand-offs between vCPUs in the whole run (the host's cost of the model). */
  turnSwitches?: number;
}

/** Which clock a det run keeps: wall (the host's time only) or virtual (guest/kernel/vclock.ts). */
export type Clock = 'wall' | 'virtual';

/** Run `total` steps in all (summed over vCPUs) of `wl` on this vCPU. */
export function runWorkload(
  k: Kernel,
  wl: Workload,
  total: number,
  sched: Sched,
  seed: number,
  clock: Clock = 'wall',
): RunResult {
  if (clock === 'virtual') return runVirtual(k, wl, total, seed);
  const rng = new Rng(seed).fork(k.id);
  const w = k.state.w;
  const cpu = k.cpu;
  const nr = k.cfg.vcpus;
  let mine = 0;
  let inited = false;
  let t0 = 0n;
  if (sched === 'parallel') {
    wl.init(k, rng);
    inited = true;
    t0 = process.hrtime.bigint();
    const share = Math.floor(total / nr) + (k.id < total % nr ? 1 : 0);
    for (; mine < share; mine++) {
      const done = Atomics.add(w, COUNTERS_BASE + C_OPS, 1);
      wl.step(k, rng, jiffiesAt(done));
      cpu.pollInterrupts();
    }
  } else {
    // Wait for turns without RUNNING: a shootdown need not wait for a waiting vCPU.
    t0 = process.hrtime.bigint();
    cpu.block();
    for (;;) {
      for (;;) {
        const turn = Atomics.load(w, H_TURN);
        if (turn === k.id || turn === STOP) break;
        Atomics.wait(w, H_TURN, turn, 50);
      }
      if (Atomics.load(w, H_TURN) === STOP) break;
      cpu.resume();
      const done = Atomics.add(w, COUNTERS_BASE + C_OPS, 1);
      if (done >= total) {
        cpu.block();
        Atomics.sub(w, COUNTERS_BASE + C_OPS, 1);
        Atomics.store(w, H_TURN, STOP);
        Atomics.notify(w, H_TURN);
        break;
      }
      if (!inited) {
        wl.init(k, rng); // in turn as well: mounting does hypercalls
        inited = true;
      }
      wl.step(k, rng, jiffiesAt(done));
      mine++;
      cpu.block(); // before the next vCPU may run
      const r = xorshift(w[H_RNG]!);
      w[H_RNG] = r;
      Atomics.store(w, H_TURN, (r >>> 0) % nr);
      Atomics.notify(w, H_TURN);
    }
  }
  const loopNs = Number(process.hrtime.bigint() - t0);
  if (sched === 'det') {
    // Tear down in vCPU order too, so what is left behind does not depend on timing.
    for (;;) {
      const v = Atomics.load(w, H_STOP);
      if (v === k.id) break;
      Atomics.wait(w, H_STOP, v, 50);
    }
    cpu.resume();
    if (inited) wl.fini(k);
    cpu.block();
    Atomics.store(w, H_STOP, k.id + 1);
    Atomics.notify(w, H_STOP);
  } else {
    wl.fini(k);
  }
  return { steps: mine, loopNs };
}

/** Before a run: the first turn to vCPU 0, the step count to zero (done by one vCPU). */
export function resetScheduler(k: Kernel, seed = k.cfg.seed): void {
  const w = k.state.w;
  Atomics.store(w, COUNTERS_BASE + C_OPS, 0);
  Atomics.store(w, H_STOP, 0);
  Atomics.store(w, H_TURN, 0);
  resetVclock(k.shared.vclock, k.cfg.vcpus, seed);
}

/*
 * The det scheduler on the virtual clock: each vCPU sets up in vCPU order (uncharged), then
 * runs its share of the steps, passing the turn at every synchronising event to the
 * runnable vCPU with the smallest clock (guest/kernel/vclock.ts). Guest time (`now`, in
 * ticks) still counts steps over all vCPUs, as in det mode, so timers fire after the same
 * amount of work whatever the cost table says.
 */
function runVirtual(k: Kernel, wl: Workload, total: number, seed: number): RunResult {
  const costs = k.cfg.costModel;
  if (costs === undefined) throw new TypeError('--clock virtual needs a cost model in the kernel config');
  const rng = new Rng(seed).fork(k.id);
  const w = k.state.w;
  const nr = k.cfg.vcpus;
  const vc = new VClock(k.shared.vclock, k.cpu, nr, costs, k);
  const share = Math.floor(total / nr) + (k.id < total % nr ? 1 : 0);
  const t0 = process.hrtime.bigint();
  vc.begin(() => wl.init(k, rng));
  let mine = 0;
  try {
    for (; mine < share; mine++) {
      const done = Atomics.add(w, COUNTERS_BASE + C_OPS, 1);
      wl.step(k, rng, jiffiesAt(done));
      vc.stepEnd();
    }
  } finally {
    vc.finish();
  }
  const loopNs = Number(process.hrtime.bigint() - t0);
  // Tear down in vCPU order, uncharged, as det mode does.
  for (;;) {
    const v = Atomics.load(w, H_STOP);
    if (v === k.id) break;
    Atomics.wait(w, H_STOP, v, 50);
  }
  k.cpu.resume();
  wl.fini(k);
  k.cpu.block();
  Atomics.store(w, H_STOP, k.id + 1);
  Atomics.notify(w, H_STOP);
  const r = vclockResult(k.shared.vclock, k.id);
  return { steps: mine, loopNs, virtualNs: r.ns, breakdown: r.breakdown, turnSwitches: r.switches };
}
