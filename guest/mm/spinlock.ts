/*
 * spinlock_t on one Int32 of a SharedArrayBuffer.
 *
 * The word holds 0 when the lock is free, otherwise the owner's CPU number plus one, with
 * SPIN_CONTENDED set once some CPU has gone to sleep on it (Drepper's three-state futex
 * mutex, with the owner kept for CONFIG_DEBUG_SPINLOCK-style checks):
 *
 *   0                 unlocked
 *   cpu+1             locked by `cpu`, nobody asleep
 *   cpu+1 | CONTENDED locked, and an unlock must Atomics.notify one sleeper
 *
 * A CPU that has slept acquires with CONTENDED set again, so a second sleeper is never lost.
 *
 * Waiting: spin SPIN_TRIES times with compareExchange, then Atomics.wait. The split follows
 * DESIGN.md's measurement on this machine's kind (an Atomics round trip ~0.2 us spinning,
 * ~1.4 us through wait/notify): holders of allocator locks keep them for well under a
 * microsecond, so a short spin nearly always wins.
 *
 * onSpin: a vCPU that must keep servicing hypervisor-level requests while it waits (TLB
 * flush IPIs, which the hypervisor waits on) passes a callback; it is called between spin
 * rounds and the sleep is cut into WAIT_SLICE_MS slices. It runs with guest interrupts
 * "disabled": it must not re-enter the allocator (zone->lock is spin_lock_irqsave in Linux).
 *
 * CPU numbers must be unique per thread: the recursion check compares the owner field with
 * the caller's CPU.
 */

/** Set in the lock word once a CPU may be sleeping on it. */
export const SPIN_CONTENDED = 0x40000000;
const OWNER_MASK = SPIN_CONTENDED - 1;

/**
 * Spin rounds before sleeping. One round (an Atomics.load of the held word and a compare)
 * measured ~13 ns locally, so 100 rounds spin ~1.3 us: about the price of one wait/notify
 * round trip (~1.4 us), after which sleeping costs no more than spinning on.
 */
export const SPIN_TRIES = 100;
/** With an onSpin callback, sleep in slices of this many ms so the callback keeps running. */
export const WAIT_SLICE_MS = 0.05;

/**
 * The virtual clock's lock hooks (guest/kernel/vclock.ts), or null under the wall clock:
 * acquire returns once the word is free and this vCPU's turn has come in virtual time;
 * tryAcquire says whether a trylock may succeed; release records the release time.
 */
export interface SpinClock {
  acquire(word: Int32Array, index: number, cpu: number): void;
  tryAcquire(word: Int32Array, index: number, cpu: number): boolean;
  release(word: Int32Array, index: number, cpu: number): void;
}
let spinClock: SpinClock | null = null;

/** Install (or, with null, remove) this thread's virtual-clock lock hooks. */
export function setSpinClock(c: SpinClock | null): void {
  spinClock = c;
}

function spinBug(msg: string, word: Int32Array, index: number, cpu: number): never {
  const v = Atomics.load(word, index);
  const owner = v & OWNER_MASK;
  throw new Error(
    `BUG: spinlock ${msg} on CPU#${cpu}: lock word[${index}]=0x${(v >>> 0).toString(16)}` +
      ` (owner ${owner === 0 ? 'none' : `CPU#${owner - 1}`})`,
  );
}

/** spin_trylock: true when the lock was taken. */
export function spinTrylock(word: Int32Array, index: number, cpu: number): boolean {
  if (spinClock !== null && !spinClock.tryAcquire(word, index, cpu)) return false;
  return Atomics.compareExchange(word, index, 0, cpu + 1) === 0;
}

/** spin_lock. Throws "BUG: spinlock recursion" when `cpu` already holds it. */
export function spinLock(word: Int32Array, index: number, cpu: number, onSpin?: () => void): void {
  if (spinClock !== null) spinClock.acquire(word, index, cpu);
  const me = cpu + 1;
  let cur = Atomics.compareExchange(word, index, 0, me);
  if (cur === 0) return;
  if ((cur & OWNER_MASK) === me) spinBug('recursion', word, index, cpu);
  for (let i = 0; i < SPIN_TRIES; i++) {
    if (Atomics.load(word, index) === 0 && Atomics.compareExchange(word, index, 0, me) === 0) return;
    if (onSpin !== undefined) onSpin();
  }
  for (;;) {
    cur = Atomics.load(word, index);
    if (cur === 0) {
      // We may have been one of several sleepers: keep CONTENDED so the next unlock wakes.
      if (Atomics.compareExchange(word, index, 0, me | SPIN_CONTENDED) === 0) return;
      continue;
    }
    if ((cur & SPIN_CONTENDED) === 0) {
      if (Atomics.compareExchange(word, index, cur, cur | SPIN_CONTENDED) !== cur) continue;
      cur |= SPIN_CONTENDED;
    }
    if (onSpin === undefined) {
      Atomics.wait(word, index, cur);
    } else {
      Atomics.wait(word, index, cur, WAIT_SLICE_MS);
      onSpin();
    }
  }
}

/** spin_unlock. Throws when `cpu` does not hold the lock. */
export function spinUnlock(word: Int32Array, index: number, cpu: number): void {
  const cur = Atomics.load(word, index);
  if (cur === 0) spinBug('already unlocked', word, index, cpu);
  if ((cur & OWNER_MASK) !== cpu + 1) spinBug('wrong CPU', word, index, cpu);
  const old = Atomics.exchange(word, index, 0);
  if ((old & SPIN_CONTENDED) !== 0) Atomics.notify(word, index, 1);
  if (spinClock !== null) spinClock.release(word, index, cpu);
}

/** spin_is_locked. */
export function spinIsLocked(word: Int32Array, index: number): boolean {
  return Atomics.load(word, index) !== 0;
}

/** The CPU holding the lock, or -1. */
export function spinOwner(word: Int32Array, index: number): number {
  return (Atomics.load(word, index) & OWNER_MASK) - 1;
}
