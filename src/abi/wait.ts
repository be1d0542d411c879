/*
 * The transport's wait policy: how long a waiting side spins before it sleeps in
 * Atomics.wait. One implementation, used by the vCPU's hypercall wait (guest/vcpu.ts), the
 * hypervisor's doorbell loop (hypervisor/thread.ts) and the bench floor
 * (bench/pingpong-worker.ts), so the floor waits exactly as the transport does.
 *
 * The costs it trades (shared/reference/perf-notes.md, 2-core VM, quiet):
 *  - a reply caught while spinning: ~0.1 us (the pure-spin round trip);
 *  - a reply that finds the waiter asleep: an Atomics.wait wake-up, 10-27 us;
 *  - a spin while the other side has no core: the spinner burns the very core the other
 *    side needs, and both lose a scheduler time slice (milliseconds). With 8 vCPUs and the
 *    hypervisor on 2 cores that is the collapse the hypercall suite's "8 vCPU" row shows.
 *
 * So the spin budget adapts (like Linux's adaptive mutex spinning, which spins only while
 * the owner is on a CPU):
 *  - to the runnable threads versus the cores: the hypervisor publishes in T_HV_THREADS how
 *    many threads the transport has (vCPU slots in use + itself); when they outnumber the
 *    cores, a spin is capped at OVERSUBSCRIBED_SPIN_US;
 *  - to how often recent spins paid off: a wait that slept but would have been caught by
 *    a spin of MAX_SPIN_US doubles the budget; one that outlasted that (the peer idle, slow
 *    or descheduled) halves it, down to MIN_SPIN_US. A side whose peer answers within the
 *    budget keeps spinning; one whose peer has no core soon stops burning the one it has.
 *
 * Sleeping flags (Dekker-style, all Atomics are sequentially consistent): a waiter stores
 * its flag = 1, then looks at the word once more, and only then sleeps; the waker stores the
 * word, then looks at the flag, and notifies only when it is set. Either the waker sees the
 * flag or the waiter sees the new value, so no wake-up is lost, and the common case (the
 * peer was spinning) costs no Atomics.notify. Measured with bench/pingpong-worker.ts,
 * `pvmmu bench hypercall`: an Atomics.notify with no waiter costs ~60-90 ns here, most of
 * a pure-spin round trip.
 */

/**
 * Shortest spin. Measured on this 2-core VM with a load average of ~27 from other work
 * (a null hypercall, 5 x 200,000 calls, /tmp A/B script described in NOTES-bench.md):
 * a fixed 5 us spin gave 31-52 us per call, 50 us gave 6-139 us, 200 us 81-225 us, and a
 * floor of 1 us 162-260 us -- under load, a spin shorter than a few us sleeps on calls a
 * short spin would have caught, and every sleep costs a scheduler wake-up.
 */
export const MIN_SPIN_US = 5;
/**
 * Longest spin with a core to spare: longer than a lazy-purge batch's serve (9-14 us), so
 * a vCPU waiting on one does not pay a 117-165 us sleep (perf-notes.md); the hypervisor's
 * former fixed doorbell spin (50 us, measured with vmap-cycle: 70 us per cycle without it).
 */
export const MAX_SPIN_US = 50;
/** Longest spin when threads outnumber cores: about one short serve, then give the core up. */
export const OVERSUBSCRIBED_SPIN_US = 5;
/**
 * Longest spin while the hypervisor serves this very call, with a core to spare: longer
 * than the longest call the benchmarks make (a pin + unpin of a 32,832-entry tree,
 * 0.6-0.8 ms); past it the vCPU sleeps as before.
 */
export const SERVING_SPIN_US = 2000;
/** Loads between two looks at the clock (performance.now() costs ~30-40 ns). */
export const CLOCK_EVERY = 64;

export interface WaitPolicyOptions {
  /** Cores of the host (os.availableParallelism()). */
  cores: number;
  /** Override of the adaptive budget (PVMMU_SPIN_US): a fixed spin in us, 0 = never spin. */
  fixedSpinUs?: number;
}

/**
 * One waiting side's adaptive spin budget. Not shared: each thread keeps its own. The
 * budget is in ms (performance.now()'s unit) to keep the hot loop free of conversions.
 */
export class SpinBudget {
  readonly cores: number;
  readonly fixed: boolean;
  /** Current budget, ms. */
  budgetMs: number;
  /** Waits that ended in their spin, and waits that slept. */
  paid = 0;
  slept = 0;

  constructor(o: WaitPolicyOptions) {
    this.cores = Math.max(1, o.cores);
    this.fixed = o.fixedSpinUs !== undefined;
    this.budgetMs = (o.fixedSpinUs ?? MAX_SPIN_US) / 1000;
  }

  /** The spin allowed for this wait, given the transport's runnable threads. */
  limitMs(threads: number): number {
    if (this.fixed) return this.budgetMs;
    const cap = threads > this.cores ? OVERSUBSCRIBED_SPIN_US / 1000 : MAX_SPIN_US / 1000;
    return Math.min(this.budgetMs, cap);
  }

  /**
   * The spin allowed for a wait whose call the peer is serving right now (see
   * SERVING_SPIN_US): none past the budget when threads outnumber cores, since the
   * spinner may then hold the very core the server needs.
   */
  servingLimitMs(threads: number): number {
    if (this.fixed || threads > this.cores) return this.limitMs(threads);
    return SERVING_SPIN_US / 1000;
  }

  /**
   * After a wait that lasted `waitedMs` in all: a wait that ended within its spin paid off;
   * one that slept but ended within MAX_SPIN_US would have paid off with a longer spin, so
   * the budget grows back; one that outlasted even that (the peer idle, or descheduled)
   * halves it.
   */
  record(waitedMs: number, sleptInIt: boolean): void {
    if (!sleptInIt) {
      this.paid++;
      return;
    }
    this.slept++;
    if (this.fixed) return;
    if (waitedMs <= MAX_SPIN_US / 1000) this.budgetMs = Math.min(MAX_SPIN_US / 1000, this.budgetMs * 2);
    else this.budgetMs = Math.max(MIN_SPIN_US / 1000, this.budgetMs / 2);
  }
}

/**
 * The OS scheduling priority (nice) a vCPU worker thread takes: lower than the hypervisor
 * thread's, as Xen's own code runs before any guest vCPU. It matters only when threads
 * outnumber cores: then the scheduler shares the cores fairly among them, and with 8 vCPUs
 * on 2 cores the hypervisor thread, which every vCPU waits for, got about 2/9 of them.
 * Measured with `pvmmu bench hypercall --repeat 5`, two alternating pairs of runs (the
 * nice applied by hand in dist/): the 8-vCPU per-vCPU null hypercall rate was 0.37 and
 * 0.34 M calls/s with nice 10, 0.21 and 0.15 without; the slowdown against 1 vCPU 10.9x
 * and 8.76x, against 19.4x and 12.2x. It is taken only by the vCPUs of a domain that
 * alone outnumbers the cores (vCPUs + the hypervisor thread): with a core to spare a
 * lower priority buys nothing, and V8's own background threads would then preempt the
 * vCPU (a 1-vCPU vmap cycle measured 3.4-5.2 us either way, too noisy to tell). On Linux,
 * setpriority applies to the calling thread; elsewhere it is not applied (it would renice
 * the whole process). PVMMU_VCPU_NICE=N overrides the value (0: never).
 */
export const VCPU_NICE = 10;

/** PVMMU_VCPU_NICE from an environment: 0..19, or VCPU_NICE. Bad values are ignored. */
export function vcpuNiceFromEnv(v: string | undefined): number {
  if (v === undefined || v === '') return VCPU_NICE;
  const n = Number(v);
  return Number.isInteger(n) && n >= 0 && n <= 19 ? n : VCPU_NICE;
}

/** PVMMU_SPIN_US from an environment, or undefined (adaptive). Bad values are ignored. */
export function fixedSpinFromEnv(v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}
