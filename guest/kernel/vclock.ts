/*
 * The virtual clock (`--clock virtual`): what the modelled machine would spend, at any vCPU
 * count up to 64, whatever the host's cores. A timing model in the manner of gem5 or
 * Simics: the events are real (the guest really takes the locks, Xen really validates and
 * flushes), their costs come from a cost table (cost-models/*.json, every entry with its
 * source).
 *
 * Clocks. Every vCPU has a clock in ns, in a shared buffer (F_CLOCK). The running vCPU
 * keeps its own in #now and stores it before it hands the turn on.
 *
 * Ordering rule. Exactly one vCPU runs at a time. At each synchronising event -- a spinlock
 * acquire, a hypercall, the end of a step (a remote flush is always inside a hypercall) --
 * the running vCPU first charges what it did since the last event, then hands the turn to
 * the runnable vCPU with the smallest clock (ties drawn from the seeded generator I_RNG),
 * and waits for its own turn. So every acquire and every hypercall happens in virtual-time
 * order, and no vCPU acts on state from another vCPU's future. A release is recorded (its
 * virtual time) but hands nothing on.
 *
 * Locks. The lock table keeps, per lock word, its last release time and the CPU that
 * released it. An acquirer that finds the lock held blocks (it is not runnable) until the
 * holder releases it; the release moves the waiter's clock to the release time. An acquirer
 * whose lock was released later than its own clock (by a vCPU ahead of it) advances to the
 * release time. Either way it then pays a cache-line transfer, as it does when the lock was
 * last released by another CPU (the line must move); every acquire pays the uncontended cost.
 * A trylock that finds the lock held, or released after its own clock, fails.
 *
 * Flush IPIs. All vCPUs count as running (Xen would run each on its own pCPU), so a flush
 * that reaches other vCPUs is an IPI to each. Xen sends them holding its global flush_lock
 * (xen/arch/x86/smp.c, flush_area_mask; __flush_tlb_mask in 3.x) until the last ack, so
 * shootdowns are serialised machine-wide: the sender first takes that lock like any other
 * (waiting for its release time, a line transfer, the acquire). With t0 its clock then,
 * target k (in vCPU order) gets the IPI at
 *   arrival_k = t0 + ipiSend + k * ipiDeliveryPerTarget,
 * acknowledges at ack_k = max(clock_k, arrival_k) + ipiHandler and pays ipiHandler; the
 * sender resumes at max_k(ack_k) + ipiAck. Simplifications: a target's clock is its last
 * event boundary, so a target ahead of the arrival acknowledges at its own clock (it takes
 * the interrupt at its next boundary); several shootdowns in one hypercall are charged as
 * rounds over the union of their targets; flush_lock is taken at the sender's clock after
 * its hypercall's own costs, so a vCPU whose hypercall started (in virtual time) within those
 * costs may find it taken when it would have won it; vCPUs that have finished their steps are idle
 * and get no IPI (Xen does not interrupt a vCPU that is not running). The TLB state
 * itself is flushed as in det mode: a waiting vCPU flushes when it next runs.
 *
 * Hypercalls. Xen reports what each call did in slot header words 20-23 (src/abi/vclock.ts):
 * entries validated by mmu_update and by pins/unpins, local flushes, shootdowns and their
 * targets. The guest charges them at its next event. Hypercalls of different vCPUs overlap
 * in virtual time (Xen runs them on each vCPU's pCPU), but for flush_lock above. Xen's other
 * serialisation -- the domain's page_alloc_lock and one frame's type update -- is not
 * modelled: no hypercall here
 * allocates Xen heap pages (the domain's frames are all assigned at build), and two vCPUs
 * changing the type of one frame at once does not happen in these workloads (each data
 * page belongs to one buffer and one vCPU).
 *
 * What is charged where (the breakdown's categories, src/abi/vclock.ts): hypercall entry and
 * exit; validation (per entry); page walks (the MMU's misses x levels, plus the TLB fill);
 * local flushes (full flushes: the emulator's flushes are all full); IPIs (sending, waiting
 * for the acks, and the handlers a vCPU runs for others); lock waits (acquire, waiting,
 * line transfers); memory (4 KiB zeroing and copying); other (the fixed cost per step).
 */
import {
  CAT_HYPERCALL,
  CAT_IPI,
  CAT_LOCAL_FLUSH,
  CAT_LOCK_WAIT,
  CAT_MEMORY,
  CAT_OTHER,
  CAT_PAGE_WALK,
  CAT_VALIDATION,
  type CostTable,
  NR_VCLOCK_CATEGORIES,
  S_VC_EVENTS,
  S_VC_PT,
  S_VC_TARGETS_HI,
  S_VC_TARGETS_LO,
} from '../../src/abi/vclock.js';
import { slotBase } from '../../src/abi/layout.js';
import { type SpinClock, setSpinClock, SPIN_CONTENDED } from '../mm/spinlock.js';
import { panic, type Vcpu } from '../vcpu.js';

const MAX_CPUS = 64;
/** Lock table slots (open addressing; a power of two). */
export const VC_LOCKS = 4096;

/* Float64 words. */
const F_CLOCK = 0;
const F_BREAK = F_CLOCK + MAX_CPUS;
const F_REL = F_BREAK + MAX_CPUS * NR_VCLOCK_CATEGORIES;
const F_WORDS = F_REL + VC_LOCKS;
/* Int32 words, after the Float64 part. */
const I_TURN = 0; /** per vCPU: 1 while it holds the turn */
const I_STATE = I_TURN + MAX_CPUS;
const I_WAITKEY = I_STATE + MAX_CPUS;
const I_RNG = I_WAITKEY + MAX_CPUS;
const I_INIT_SEQ = I_RNG + 1;
const I_DONE = I_RNG + 2;
const I_SWITCHES = I_RNG + 3;
const I_LOCK_KEY = 256;
const I_LOCK_OWNER = I_LOCK_KEY + VC_LOCKS;
const I_WORDS = I_LOCK_OWNER + VC_LOCKS;

/** vCPU states. */
export const VC_IDLE = 0; /** not in the timed loop (before it, or done) */
export const VC_RUNNABLE = 1;
export const VC_BLOCKED = 2; /** waiting for a lock held by another vCPU */

const OWNER_MASK = SPIN_CONTENDED - 1;
/**
 * The lock-table key of Xen's flush_lock (xen/arch/x86/smp.c: flush_area_mask, and
 * __flush_tlb_mask in Xen 3.x, hold one global spinlock from sending the flush IPIs until
 * every target has acknowledged). Not a guest lock word: no lockKey() yields it but by chance.
 */
export const XEN_FLUSH_LOCK = 0x7ffffff1;

function xorshift(x: number): number {
  x ^= x << 13;
  x ^= x >>> 17;
  x ^= x << 5;
  return x | 0;
}

/**
 * The lock-table key of a lock word: its absolute word index in its buffer mixed with the
 * buffer's size (which tells the kernel's shared buffers apart). Two locks that share a key
 * would share a release time: only a modelling error, never a lost wake-up, since a waiter
 * re-checks the lock word itself.
 */
export function lockKey(word: Int32Array, index: number): number {
  const k = (Math.imul(word.buffer.byteLength, 0x9e3779b1) ^ ((word.byteOffset >>> 2) + index)) | 0;
  return k === 0 ? 1 : k;
}

/** The shared state of a domain's virtual clocks (one buffer, made at boot). */
export function vclockBytes(): number {
  return F_WORDS * 8 + I_WORDS * 4;
}

/** Views of the shared buffer. */
export function vclockViews(sab: SharedArrayBuffer): { f: Float64Array; i: Int32Array } {
  return { f: new Float64Array(sab, 0, F_WORDS), i: new Int32Array(sab, F_WORDS * 8, I_WORDS) };
}

/** Before a virtual run (one vCPU does it, while no other runs): clocks to zero, all runnable. */
export function resetVclock(sab: SharedArrayBuffer, nr: number, seed: number): void {
  const { f, i } = vclockViews(sab);
  f.fill(0);
  i.fill(0);
  for (let v = 0; v < nr; v++) i[I_STATE + v] = VC_RUNNABLE;
  i[I_RNG] = (seed ^ 0x2545f491) | 1;
}

/** Per-vCPU clock and breakdown, as read after a run. */
export function vclockResult(sab: SharedArrayBuffer, v: number): { ns: number; breakdown: number[]; switches: number } {
  const { f, i } = vclockViews(sab);
  return {
    ns: f[F_CLOCK + v]!,
    switches: Atomics.load(i, I_SWITCHES),
    breakdown: Array.from(f.subarray(F_BREAK + v * NR_VCLOCK_CATEGORIES, F_BREAK + (v + 1) * NR_VCLOCK_CATEGORIES)),
  };
}

/** What the guest kernel counts for the clock besides the MMU's walks. */
export interface VclockCounters {
  readonly pagesZeroed: number;
  readonly pagesCopied: number;
}

/**
 * One vCPU's side of the virtual clock: its hooks (spinlocks, hypercalls), the scheduler's
 * turn passing, and the charging. Active only between begin() and finish().
 */
export class VClock implements SpinClock {
  readonly f: Float64Array;
  readonly i: Int32Array;
  readonly id: number;
  readonly nr: number;
  readonly costs: CostTable;
  readonly #cpu: Vcpu;
  readonly #counters: VclockCounters;
  readonly #slot: number;
  /** ns charged per TLB miss: the walk's levels and the fill. */
  readonly #walkNs: number;
  #now = 0;
  #active = false;
  #pendingHypercall = false;
  #walks = 0;
  #zeroed = 0;
  #copied = 0;

  constructor(sab: SharedArrayBuffer, cpu: Vcpu, nr: number, costs: CostTable, counters: VclockCounters) {
    if (nr < 1 || nr > MAX_CPUS) throw new RangeError(`virtual clock: 1..${MAX_CPUS} vCPUs, got ${nr}`);
    const v = vclockViews(sab);
    this.f = v.f;
    this.i = v.i;
    this.id = cpu.vcpuId;
    this.nr = nr;
    this.costs = costs;
    this.#cpu = cpu;
    this.#counters = counters;
    this.#slot = slotBase(cpu.slot);
    this.#walkNs = cpu.mmu.levels * costs.pageWalkLevel + costs.tlbFill;
  }

  /** This vCPU's clock (while it runs: including what is charged so far). */
  get now(): number {
    return this.#active ? this.#now : this.f[F_CLOCK + this.id]!;
  }

  get active(): boolean {
    return this.#active;
  }

  /** Turn hand-offs to another vCPU so far (all vCPUs). */
  get switches(): number {
    return Atomics.load(this.i, I_SWITCHES);
  }

  /* -------------------------------------------------------------- set-up */

  /**
   * Wait for this vCPU's turn to set up (in vCPU order, uncharged), run `init`, and pass the
   * set-up turn on; the last one gives the first timed turn by the ordering rule. Returns
   * once this vCPU holds its first timed turn; the hooks are then installed.
   */
  begin(init: () => void): void {
    const i = this.i;
    this.#cpu.block();
    for (;;) {
      const s = Atomics.load(i, I_INIT_SEQ);
      if (s === this.id) break;
      Atomics.wait(i, I_INIT_SEQ, s, 50);
    }
    this.#cpu.resume();
    init();
    this.#cpu.block();
    Atomics.store(i, I_INIT_SEQ, this.id + 1);
    Atomics.notify(i, I_INIT_SEQ);
    this.#walks = this.#cpu.mmu.walks;
    this.#zeroed = this.#counters.pagesZeroed;
    this.#copied = this.#counters.pagesCopied;
    if (this.id === this.nr - 1) {
      const n = this.pickNext();
      Atomics.store(i, I_TURN + n, 1);
      Atomics.notify(i, I_TURN + n);
    }
    this.#waitTurn();
    this.#cpu.resume();
    this.#now = this.f[F_CLOCK + this.id]!;
    this.#active = true;
    setSpinClock(this);
    this.#cpu.clockEvent = () => this.hypercallEvent();
  }

  /**
   * Become the running vCPU at clock `now` without begin()'s set-up handshake and without
   * installing the hooks: how tests drive hand-built cases on one thread.
   */
  enter(now: number): void {
    this.#now = now;
    this.f[F_CLOCK + this.id] = now;
    this.#active = true;
  }

  /** Leave a state entered with enter(): store the clock. */
  leave(): void {
    this.f[F_CLOCK + this.id] = this.#now;
    this.#active = false;
  }

  /**
   * Leave the timed loop: charge what is left, step out of the runnable set, pass the turn,
   * and wait (not running) until every vCPU has left it.
   */
  finish(): void {
    if (!this.#active) return;
    this.#settle();
    this.#active = false;
    setSpinClock(null);
    this.#cpu.clockEvent = noop;
    const i = this.i;
    this.f[F_CLOCK + this.id] = this.#now;
    i[I_STATE + this.id] = VC_IDLE;
    i[I_TURN + this.id] = 0;
    this.#cpu.block();
    const n = this.pickNext();
    if (n >= 0) this.#grant(n);
    else if (this.#anyBlocked()) panic('virtual clock: every vCPU left waits for a lock (deadlock)');
    Atomics.add(i, I_DONE, 1);
    Atomics.notify(i, I_DONE);
    // Tear-down waits until every vCPU has left its timed loop (not running: no IPI waits for us).
    for (;;) {
      const d = Atomics.load(i, I_DONE);
      if (d >= this.nr) break;
      Atomics.wait(i, I_DONE, d, 50);
    }
  }

  /* --------------------------------------------------------------- events */

  /** The end of a workload step: its fixed cost, then the ordering rule. */
  stepEnd(): void {
    this.charge(CAT_OTHER, this.costs.stepFixed);
    this.#settle();
    this.#yield();
  }

  /** Before every hypercall (Vcpu.clockEvent): it runs in virtual-time order; charged at the next event. */
  hypercallEvent(): void {
    this.#settle();
    this.#yield();
    this.#pendingHypercall = true;
  }

  /** spin_lock: returns when the lock word is free and this vCPU may take it (SpinClock). */
  acquire(word: Int32Array, index: number, cpu: number): void {
    if (!this.#active) return;
    this.#settle();
    this.#yield();
    const key = lockKey(word, index);
    let waited = false;
    for (;;) {
      const v = Atomics.load(word, index);
      if (v === 0 || (v & OWNER_MASK) === cpu + 1) break; // free, or recursion: spinLock reports it
      waited = true;
      this.#blockOn(key);
    }
    this.#acquired(key, waited);
  }

  /** spin_trylock: false when the lock is held, or was released after this vCPU's clock. */
  tryAcquire(word: Int32Array, index: number, _cpu: number): boolean {
    if (!this.#active) return true;
    this.#settle();
    this.#yield();
    const key = lockKey(word, index);
    const s = this.#lookup(key, false);
    if (Atomics.load(word, index) !== 0 || (s >= 0 && this.f[F_REL + s]! > this.#now)) {
      this.charge(CAT_LOCK_WAIT, this.costs.spinlockUncontended);
      return false;
    }
    this.#acquired(key, false);
    return true;
  }

  /** spin_unlock (after the word is cleared): record the release time, wake its waiters. */
  release(word: Int32Array, index: number, _cpu: number): void {
    if (!this.#active) return;
    this.#settle();
    const key = lockKey(word, index);
    const s = this.#lookup(key, true);
    const now = this.#now;
    this.f[F_REL + s] = now;
    this.i[I_LOCK_OWNER + s] = this.id + 1;
    const f = this.f;
    const i = this.i;
    for (let v = 0; v < this.nr; v++) {
      if (i[I_STATE + v] !== VC_BLOCKED || i[I_WAITKEY + v] !== key) continue;
      i[I_STATE + v] = VC_RUNNABLE;
      const c = f[F_CLOCK + v]!;
      if (c < now) {
        f[F_CLOCK + v] = now;
        f[F_BREAK + v * NR_VCLOCK_CATEGORIES + CAT_LOCK_WAIT]! += now - c;
      }
    }
  }

  /* ------------------------------------------------------------ charging */

  /** Advance this vCPU's clock by `ns`, booked under `cat`. */
  charge(cat: number, ns: number): void {
    this.#now += ns;
    this.f[F_BREAK + this.id * NR_VCLOCK_CATEGORIES + cat]! += ns;
  }

  /** Charge what happened since the last event: walks, page copies, the last hypercall. */
  #settle(): void {
    const c = this.costs;
    const walks = this.#cpu.mmu.walks;
    if (walks !== this.#walks) {
      this.charge(CAT_PAGE_WALK, (walks - this.#walks) * this.#walkNs);
      this.#walks = walks;
    }
    const z = this.#counters.pagesZeroed;
    const cp = this.#counters.pagesCopied;
    if (z !== this.#zeroed || cp !== this.#copied) {
      this.charge(CAT_MEMORY, (z - this.#zeroed) * c.pageZero + (cp - this.#copied) * c.pageCopy);
      this.#zeroed = z;
      this.#copied = cp;
    }
    if (!this.#pendingHypercall) return;
    this.#pendingHypercall = false;
    const t = this.#cpu.t;
    const b = this.#slot;
    const ev = t[b + S_VC_EVENTS]!;
    this.charge(CAT_HYPERCALL, c.hypercall);
    const mmuEntries = ev & 0xffff;
    const ptEntries = t[b + S_VC_PT]! >>> 0;
    if (mmuEntries + ptEntries > 0)
      this.charge(CAT_VALIDATION, mmuEntries * c.mmuUpdateEntry + ptEntries * c.pinUnpinEntry);
    const local = (ev >>> 16) & 0xff;
    if (local > 0) this.charge(CAT_LOCAL_FLUSH, local * c.localFlushFull);
    const rounds = ev >>> 24;
    for (let r = 0; r < rounds; r++) this.shootdown(t[b + S_VC_TARGETS_LO]!, t[b + S_VC_TARGETS_HI]!);
  }

  /**
   * One flush IPI round from this vCPU to the vCPUs in the mask (domain-relative ids), by
   * the rule in the header comment. Returns the ns the sender spent.
   */
  shootdown(lo: number, hi: number): number {
    const c = this.costs;
    const f = this.f;
    const i = this.i;
    let any = false;
    for (let v = 0; v < this.nr && !any; v++) {
      const bit = v < 32 ? lo & (1 << v) : hi & (1 << (v - 32));
      any = v !== this.id && bit !== 0 && i[I_STATE + v] !== VC_IDLE;
    }
    if (!any) return 0;
    const start = this.#now;
    // Xen's flush_lock: one shootdown at a time, machine-wide, held until the last ack.
    const fl = this.#lookup(XEN_FLUSH_LOCK, true);
    this.#acquired(XEN_FLUSH_LOCK, false);
    const t0 = this.#now;
    let k = 0;
    let last = -1;
    for (let v = 0; v < this.nr; v++) {
      if (v === this.id) continue;
      const bit = v < 32 ? lo & (1 << v) : hi & (1 << (v - 32));
      if (bit === 0 || i[I_STATE + v] === VC_IDLE) continue;
      k++;
      const arrival = t0 + c.ipiSend + k * c.ipiDeliveryPerTarget;
      const clock = f[F_CLOCK + v]!;
      const ack = Math.max(clock, arrival) + c.ipiHandler;
      f[F_CLOCK + v] = clock + c.ipiHandler;
      f[F_BREAK + v * NR_VCLOCK_CATEGORIES + CAT_IPI]! += c.ipiHandler;
      if (ack > last) last = ack;
    }
    this.charge(CAT_IPI, last + c.ipiAck - t0);
    f[F_REL + fl] = this.#now;
    return this.#now - start;
  }

  /* ------------------------------------------------------------------ locks */

  #acquired(key: number, waited: boolean): void {
    const c = this.costs;
    const s = this.#lookup(key, true);
    const rel = this.f[F_REL + s]!;
    const owner = this.i[I_LOCK_OWNER + s]!;
    if (rel > this.#now) {
      this.charge(CAT_LOCK_WAIT, rel - this.#now);
      waited = true;
    }
    if (waited || (owner !== 0 && owner !== this.id + 1)) this.charge(CAT_LOCK_WAIT, c.cacheLineTransfer);
    this.charge(CAT_LOCK_WAIT, c.spinlockUncontended);
    this.i[I_LOCK_OWNER + s] = this.id + 1;
  }

  /** Slot of `key` in the lock table; inserted when `insert`, else -1 when absent. */
  #lookup(key: number, insert: boolean): number {
    const i = this.i;
    let s = Math.imul(key, 0x85ebca6b) >>> 20; // 12 bits: VC_LOCKS
    for (let n = 0; n < VC_LOCKS; n++, s = (s + 1) & (VC_LOCKS - 1)) {
      const k = i[I_LOCK_KEY + s]!;
      if (k === key) return s;
      if (k === 0) {
        if (!insert) return -1;
        i[I_LOCK_KEY + s] = key;
        this.f[F_REL + s] = 0;
        i[I_LOCK_OWNER + s] = 0;
        return s;
      }
    }
    return panic(`virtual clock: more than ${VC_LOCKS} distinct locks`);
  }

  /** The lock is held by a vCPU that is not running: stop being runnable until it is released. */
  #blockOn(key: number): void {
    this.i[I_STATE + this.id] = VC_BLOCKED;
    this.i[I_WAITKEY + this.id] = key;
    this.#yield();
  }

  #anyBlocked(): boolean {
    for (let v = 0; v < this.nr; v++) if (this.i[I_STATE + v] === VC_BLOCKED) return true;
    return false;
  }

  /* ---------------------------------------------------------------- turns */

  /** The ordering rule's choice: the runnable vCPU with the smallest clock, ties drawn from the seed; -1 if none. */
  pickNext(): number {
    const f = this.f;
    const i = this.i;
    let best = -1;
    let min = Number.POSITIVE_INFINITY;
    let ties = 0;
    for (let v = 0; v < this.nr; v++) {
      if (i[I_STATE + v] !== VC_RUNNABLE) continue;
      const c = v === this.id && this.#active ? this.#now : f[F_CLOCK + v]!;
      if (c < min) {
        min = c;
        best = v;
        ties = 1;
      } else if (c === min) {
        ties++;
      }
    }
    if (ties <= 1) return best;
    const r = xorshift(i[I_RNG]!);
    i[I_RNG] = r;
    let pick = (r >>> 0) % ties;
    for (let v = 0; v < this.nr; v++) {
      if (i[I_STATE + v] !== VC_RUNNABLE) continue;
      const c = v === this.id && this.#active ? this.#now : f[F_CLOCK + v]!;
      if (c === min && pick-- === 0) return v;
    }
    return best;
  }

  /** The ordering rule: hand the turn to the runnable vCPU with the smallest clock, and wait for ours. */
  #yield(): void {
    this.f[F_CLOCK + this.id] = this.#now;
    const n = this.pickNext();
    if (n === this.id) return;
    if (n < 0) panic('virtual clock: every vCPU waits for a lock (deadlock)');
    this.i[I_TURN + this.id] = 0;
    // Not running before the next vCPU may run: a flush it sends must not wait for our ack.
    this.#cpu.block();
    this.#grant(n);
    this.#waitTurn();
    this.#cpu.resume();
    this.#now = this.f[F_CLOCK + this.id]!;
  }

  #grant(n: number): void {
    Atomics.add(this.i, I_SWITCHES, 1);
    Atomics.store(this.i, I_TURN + n, 1);
    Atomics.notify(this.i, I_TURN + n);
  }

  #waitTurn(): void {
    const i = this.i;
    const w = I_TURN + this.id;
    while (Atomics.load(i, w) === 0) Atomics.wait(i, w, 0);
  }
}

function noop(): void {}
