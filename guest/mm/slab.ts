/*
 * A small kmalloc: power-of-two size classes from 32 to 4096 bytes, one order-0 page per
 * slab, shared by every vCPU through one SharedArrayBuffer.
 *
 * A slab page is PageSlab, with page->mapping holding its cache id -- SLUB's reuse of the
 * field, which is why page_mapping() must return NULL for slab pages (other-seed-bugs.md,
 * slub-kmap-atomic-oops) -- and page->private holding its slot: the slab's bookkeeping in
 * this buffer (free list head, objects in use, an allocated-object bitmap, and the free
 * list links, one Int32 per object). Object memory itself is guest memory, reached through
 * the MMU; this allocator never touches it (kzalloc asks a hook to clear the object).
 *
 * Partial slabs (some objects free) are linked through the page's lru links, list head
 * first. A full slab is on no list (as in SLUB). A slab whose last object is freed goes back
 * to the page allocator unless the cache would keep fewer than MIN_PARTIAL partial slabs.
 * Objects come from the head slab's free list, most recently freed first.
 *
 * Locking: one spinlock per cache guards its partial list and its slabs' slots; one more
 * guards the free-slot stack. Pages are allocated and freed with no slab lock held.
 *
 * Failure: kmalloc returns 0 (NULL) when the page allocator refuses (GFP_NOWAIT/GFP_ATOMIC
 * fail under pressure; XFS's free_address depends on that), when the slot table is full,
 * or when fault injection (setFailslab, Linux's failslab) says so.
 */
import { PAGE_SIZE } from '../../src/abi/xen.js';
import { __GFP_COMP, __GFP_HIGHMEM, __GFP_WAIT, __GFP_ZERO, checkGfp, type PageAllocator } from './page_alloc.js';
import { PG_slab } from './page.js';
import { spinLock, spinUnlock } from './spinlock.js';

export const KMALLOC_SIZES: readonly number[] = [32, 64, 128, 256, 512, 1024, 2048, 4096];
export const KMALLOC_MIN_SIZE = 32;
export const KMALLOC_MAX_SIZE = 4096;
/** What kmalloc(0) returns; kfree accepts it (Linux's ZERO_SIZE_PTR). */
export const ZERO_SIZE_PTR = 16;
/** Partial slabs a cache keeps even when empty (SLUB's MIN_PARTIAL). */
export const MIN_PARTIAL = 2;
/**
 * Cache ids as stored in page->mapping: even, like a pointer, so that a page_mapping()
 * without the SLUB fix would take them for an address_space (which is the bug).
 */
export const KMALLOC_CACHE_ID_BASE = 0x100;
const MAX_OBJECTS = PAGE_SIZE / KMALLOC_MIN_SIZE; // 128

export function kmallocCacheId(index: number): number {
  return KMALLOC_CACHE_ID_BASE + 2 * index;
}

/** kmalloc_index: the size class of `size` (1..4096). */
export function kmallocIndex(size: number): number {
  if (size <= 32) return 0;
  return 32 - Math.clz32(size - 1) - 5; // ceil(log2(size)) - 5
}

/* ------------------------------------------------------------------ layout */

const MAGIC = 0x534c4142; // 'SLAB'
const H_MAGIC = 0;
const H_MAX_SLABS = 1;
const H_SLOT_FREE = 2; // head of the free-slot stack
const H_SLOTS_USED = 3;
const H_FAILSLAB = 4; // injected failures, all openers
const H_ERRORS = 5; // slab_error reports, all openers
const H_READY = 6;
const H_MISUSE = 7; // kmalloc/ksize calls a caller got wrong (a WARN each), all openers
const H_SLOT_LOCK = 16; // alone in its line
const HEADER_WORDS = 32;

const CACHE_WORDS = 32;
const C_LOCK = 0;
const C_PARTIAL = 16; // head pfn of the partial list
const C_NR_PARTIAL = 17;
const C_NR_SLABS = 18;
const C_INUSE = 19; // objects allocated
const C_ALLOCS = 20;
const C_FREES = 21;

const SLOT_WORDS = 12 + MAX_OBJECTS;
const S_FREELIST = 0; // first free object, -1 when full
const S_INUSE = 1;
const S_PFN = 2;
const S_NEXT_SLOT = 3; // free-slot stack link
const S_BITMAP = 4; // 4 words: allocated objects
const S_NEXT = 12; // per-object free list links

export function slabBytes(maxSlabs: number): number {
  return (HEADER_WORDS + KMALLOC_SIZES.length * CACHE_WORDS + maxSlabs * SLOT_WORDS) * 4;
}

/* ---------------------------------------------------------- fault injection */

/**
 * failslab's attributes. A kmalloc fails when it is eligible (ignoreGfpWait: only callers
 * that cannot sleep; filter), it is the interval-th eligible call, it passes the seeded
 * probability, and `times` is not used up.
 */
export interface FailslabAttr {
  /** Fail every Nth eligible call (default 1: every one that passes the probability). */
  interval?: number;
  /** Percent, 0..100 (default 100). */
  probability?: number;
  /** Seed of the probability's PRNG (default 1). */
  seed?: number;
  /** Stop after this many failures (default unlimited). */
  times?: number;
  /** Only allocations without __GFP_WAIT may fail (default true, as for XFS's GFP_NOWAIT). */
  ignoreGfpWait?: boolean;
  /** Extra filter: return false to exempt a call. */
  filter?(size: number, gfp: number, cpu: number): boolean;
}

export interface SlabHooks {
  /** Kernel virtual address of page `pfn` in the direct map (pageOffset + pfn * 4096). */
  pfnToKaddr(pfn: number): number;
  /** Its inverse; default: linear from pfnToKaddr(0). */
  kaddrToPfn?(addr: number): number;
  /** Clear `bytes` at `addr` (kzalloc / __GFP_ZERO), through the MMU. */
  zeroObject?(addr: number, bytes: number): void;
  /** current->comm, for reports (default: the page allocator's). */
  comm?(cpu: number): string;
  /** A WARN about a caller's mistake, as its printk line (default: dropped; it is counted). */
  report?(line: string): void;
}

export interface KmallocCacheStats {
  name: string;
  size: number;
  id: number;
  nrSlabs: number;
  nrPartial: number;
  inuse: number;
  allocs: number;
  frees: number;
}

export class SlabAllocator {
  readonly sab: SharedArrayBuffer;
  readonly pa: PageAllocator;
  readonly maxSlabs: number;
  readonly #w: Int32Array;
  readonly #slotBase: number;
  readonly #hooks: SlabHooks;
  readonly #kaddrToPfn: (addr: number) => number;
  #failslab: (Required<Omit<FailslabAttr, 'filter'>> & { filter?: FailslabAttr['filter'] }) | undefined;
  #failCalls = 0;
  #failDone = 0;
  #rng = 1;

  /** A new buffer with room for `maxSlabs` slab pages, opened. */
  static create(pa: PageAllocator, hooks: SlabHooks, maxSlabs = 1024): SlabAllocator {
    if (!Number.isInteger(maxSlabs) || maxSlabs < 1 || maxSlabs > 1 << 20) {
      throw new RangeError(`SlabAllocator.create: maxSlabs must be an integer in 1..${1 << 20}, got ${maxSlabs}`);
    }
    const sab = new SharedArrayBuffer(slabBytes(maxSlabs));
    const w = new Int32Array(sab);
    w[H_MAGIC] = MAGIC;
    w[H_MAX_SLABS] = maxSlabs;
    const slotBase = HEADER_WORDS + KMALLOC_SIZES.length * CACHE_WORDS;
    for (let s = 0; s < maxSlabs; s++) w[slotBase + s * SLOT_WORDS + S_NEXT_SLOT] = s + 1 < maxSlabs ? s + 1 : -1;
    w[H_SLOT_FREE] = 0;
    for (let c = 0; c < KMALLOC_SIZES.length; c++) w[HEADER_WORDS + c * CACHE_WORDS + C_PARTIAL] = -1;
    Atomics.store(w, H_READY, 1);
    return new SlabAllocator(sab, pa, hooks);
  }

  /** Opens a buffer made by create() (in any worker), over that worker's PageAllocator. */
  constructor(sab: SharedArrayBuffer, pa: PageAllocator, hooks: SlabHooks) {
    const w = new Int32Array(sab);
    if (w[H_MAGIC] !== MAGIC || Atomics.load(w, H_READY) !== 1) {
      throw new Error('SlabAllocator: this SAB was not made by SlabAllocator.create');
    }
    if (typeof hooks?.pfnToKaddr !== 'function')
      throw new TypeError('SlabAllocator: hooks.pfnToKaddr(pfn) is required');
    this.sab = sab;
    this.pa = pa;
    this.#w = w;
    this.#hooks = hooks;
    this.maxSlabs = w[H_MAX_SLABS]!;
    if (sab.byteLength < slabBytes(this.maxSlabs))
      throw new RangeError('SlabAllocator: the SAB is smaller than its header says');
    this.#slotBase = HEADER_WORDS + KMALLOC_SIZES.length * CACHE_WORDS;
    if (hooks.kaddrToPfn !== undefined) {
      this.#kaddrToPfn = hooks.kaddrToPfn;
    } else {
      const base = hooks.pfnToKaddr(0);
      this.#kaddrToPfn = (addr) => Math.floor((addr - base) / PAGE_SIZE);
    }
  }

  /* ------------------------------------------------------------ failslab */

  /** Turn fault injection on (or off with null), for this opener. */
  setFailslab(attr: FailslabAttr | null): void {
    if (attr === null) {
      this.#failslab = undefined;
      return;
    }
    const interval = attr.interval ?? 1;
    const probability = attr.probability ?? 100;
    if (!Number.isInteger(interval) || interval < 1)
      throw new RangeError(`setFailslab: interval must be an integer >= 1, got ${interval}`);
    if (!(probability >= 0 && probability <= 100))
      throw new RangeError(`setFailslab: probability is a percentage 0..100, got ${probability}`);
    this.#failslab = {
      interval,
      probability,
      seed: attr.seed ?? 1,
      times: attr.times ?? -1,
      ignoreGfpWait: attr.ignoreGfpWait ?? true,
      filter: attr.filter,
    };
    this.#failCalls = 0;
    this.#failDone = 0;
    this.#rng = (attr.seed ?? 1) >>> 0 || 1;
  }

  /** should_failslab. */
  #shouldFailslab(size: number, gfp: number, cpu: number): boolean {
    const a = this.#failslab!;
    if (a.ignoreGfpWait && (gfp & __GFP_WAIT) !== 0) return false;
    if (a.filter !== undefined && !a.filter(size, gfp, cpu)) return false;
    if (a.times >= 0 && this.#failDone >= a.times) return false;
    if (++this.#failCalls % a.interval !== 0) return false;
    if (a.probability < 100) {
      // xorshift32
      let x = this.#rng;
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      this.#rng = x >>> 0;
      if (this.#rng % 100 >= a.probability) return false;
    }
    this.#failDone++;
    Atomics.add(this.#w, H_FAILSLAB, 1);
    return true;
  }

  /* ------------------------------------------------------------ slots */

  #getSlot(cpu: number): number {
    const w = this.#w;
    spinLock(w, H_SLOT_LOCK, cpu, this.pa.onSpin);
    const s = w[H_SLOT_FREE]!;
    if (s !== -1) {
      w[H_SLOT_FREE] = w[this.#slotBase + s * SLOT_WORDS + S_NEXT_SLOT]!;
      w[H_SLOTS_USED]!++;
    }
    spinUnlock(w, H_SLOT_LOCK, cpu);
    return s;
  }

  #putSlot(s: number, cpu: number): void {
    const w = this.#w;
    spinLock(w, H_SLOT_LOCK, cpu, this.pa.onSpin);
    w[this.#slotBase + s * SLOT_WORDS + S_NEXT_SLOT] = w[H_SLOT_FREE]!;
    w[H_SLOT_FREE] = s;
    w[H_SLOTS_USED]!--;
    spinUnlock(w, H_SLOT_LOCK, cpu);
  }

  /* ---------------------------------------------------- partial list */

  #addPartial(cb: number, pfn: number): void {
    const w = this.#w;
    const mm = this.pa.memMap;
    const head = w[cb + C_PARTIAL]!;
    mm.lruNext[pfn] = head;
    mm.lruPrev[pfn] = -1;
    if (head !== -1) mm.lruPrev[head] = pfn;
    w[cb + C_PARTIAL] = pfn;
    w[cb + C_NR_PARTIAL]!++;
  }

  #removePartial(cb: number, pfn: number): void {
    const w = this.#w;
    const mm = this.pa.memMap;
    const n = mm.lruNext[pfn]!;
    const p = mm.lruPrev[pfn]!;
    if (p !== -1) mm.lruNext[p] = n;
    else w[cb + C_PARTIAL] = n;
    if (n !== -1) mm.lruPrev[n] = p;
    mm.lruNext[pfn] = -1;
    mm.lruPrev[pfn] = -1;
    w[cb + C_NR_PARTIAL]!--;
  }

  /** Take the first free object of slab `pfn`. Cache lock held. Returns its index. */
  #takeObject(cb: number, pfn: number): number {
    const w = this.#w;
    const sb = this.#slotBase + this.pa.memMap.private[pfn]! * SLOT_WORDS;
    const obj = w[sb + S_FREELIST]!;
    const next = w[sb + S_NEXT + obj]!;
    w[sb + S_FREELIST] = next;
    w[sb + S_INUSE]!++;
    w[sb + S_BITMAP + (obj >> 5)]! |= 1 << (obj & 31);
    w[cb + C_INUSE]!++;
    w[cb + C_ALLOCS]!++;
    if (next === -1) this.#removePartial(cb, pfn); // full: off every list
    return obj;
  }

  /* ----------------------------------------------------------- kmalloc */

  /**
   * kmalloc: a kernel virtual address of at least `size` bytes, or 0 (NULL) when memory
   * (or fault injection) refuses. kmalloc(0) returns ZERO_SIZE_PTR.
   */
  kmalloc(size: number, gfp: number, cpu: number): number {
    if (!Number.isInteger(size) || size < 0) {
      return this.#warn(`kmalloc: size must be a non-negative integer, got ${size}`);
    }
    if (size === 0) return ZERO_SIZE_PTR;
    if (size > KMALLOC_MAX_SIZE) {
      return this.#warn(
        `kmalloc: ${size} bytes is above KMALLOC_MAX_SIZE (${KMALLOC_MAX_SIZE}); use allocPages for larger blocks`,
      );
    }
    if ((gfp & __GFP_HIGHMEM) !== 0) {
      return this.#warn(
        `kmalloc: __GFP_HIGHMEM in mode 0x${gfp.toString(16)}: slab objects must live in the direct map`,
      );
    }
    checkGfp(gfp, 'kmalloc');
    if (this.#failslab !== undefined && this.#shouldFailslab(size, gfp, cpu)) return 0;
    const ci = kmallocIndex(size);
    const objSize = KMALLOC_SIZES[ci]!;
    const cb = HEADER_WORDS + ci * CACHE_WORDS;
    const w = this.#w;

    spinLock(w, cb + C_LOCK, cpu, this.pa.onSpin);
    let pfn = w[cb + C_PARTIAL]!;
    if (pfn !== -1) {
      const obj = this.#takeObject(cb, pfn);
      spinUnlock(w, cb + C_LOCK, cpu);
      return this.#finish(pfn, obj, objSize, gfp);
    }
    spinUnlock(w, cb + C_LOCK, cpu);

    // new_slab: a page, with no slab lock held.
    pfn = this.pa.allocPages(gfp & ~(__GFP_ZERO | __GFP_COMP), 0, cpu);
    if (pfn === -1) return 0;
    const slot = this.#getSlot(cpu);
    if (slot === -1) {
      this.pa.freePages(pfn, 0, cpu);
      return 0;
    }
    const sb = this.#slotBase + slot * SLOT_WORDS;
    const nobj = PAGE_SIZE / objSize;
    w[sb + S_FREELIST] = 0;
    w[sb + S_INUSE] = 0;
    w[sb + S_PFN] = pfn;
    for (let i = 0; i < 4; i++) w[sb + S_BITMAP + i] = 0;
    for (let i = 0; i < nobj; i++) w[sb + S_NEXT + i] = i + 1 < nobj ? i + 1 : -1;
    const mm = this.pa.memMap;
    mm.__setPageFlag(pfn, PG_slab);
    mm.mapping[pfn] = kmallocCacheId(ci);
    mm.private[pfn] = slot;

    spinLock(w, cb + C_LOCK, cpu, this.pa.onSpin);
    w[cb + C_NR_SLABS]!++;
    this.#addPartial(cb, pfn);
    const obj = this.#takeObject(cb, pfn);
    spinUnlock(w, cb + C_LOCK, cpu);
    return this.#finish(pfn, obj, objSize, gfp);
  }

  #finish(pfn: number, obj: number, objSize: number, gfp: number): number {
    const addr = this.#hooks.pfnToKaddr(pfn) + obj * objSize;
    if ((gfp & __GFP_ZERO) !== 0) {
      if (this.#hooks.zeroObject === undefined)
        throw new Error('kmalloc(__GFP_ZERO): this SlabAllocator has no zeroObject hook');
      this.#hooks.zeroObject(addr, objSize);
    }
    return addr;
  }

  /** kzalloc. */
  kzalloc(size: number, gfp: number, cpu: number): number {
    return this.kmalloc(size, gfp | __GFP_ZERO, cpu);
  }

  /**
   * kfree. NULL and ZERO_SIZE_PTR are accepted. A pointer that is not a slab object, or
   * an object already free, is reported (slab_error) and otherwise ignored.
   */
  kfree(addr: number, cpu: number): void {
    if (addr === 0 || addr === ZERO_SIZE_PTR) return;
    const mm = this.pa.memMap;
    const pfn = this.#kaddrToPfn(addr);
    if (!Number.isInteger(pfn) || pfn < 0 || pfn >= mm.nrPages || (mm.flags[pfn]! & (1 << PG_slab)) === 0) {
      this.#slabError(
        'not_slab',
        '?',
        addr,
        pfn,
        cpu,
        `kfree: 0x${addr.toString(16)} is not in a slab page (pfn ${pfn})`,
      );
      return;
    }
    const ci = (mm.mapping[pfn]! - KMALLOC_CACHE_ID_BASE) / 2;
    if (!Number.isInteger(ci) || ci < 0 || ci >= KMALLOC_SIZES.length) {
      this.#slabError(
        'not_slab',
        '?',
        addr,
        pfn,
        cpu,
        `kfree: slab page pfn ${pfn} has no kmalloc cache (mapping 0x${mm.mapping[pfn]!.toString(16)})`,
      );
      return;
    }
    const objSize = KMALLOC_SIZES[ci]!;
    const name = `kmalloc-${objSize}`;
    const off = addr - this.#hooks.pfnToKaddr(pfn);
    if (off % objSize !== 0) {
      this.#slabError(
        'invalid_pointer',
        name,
        addr,
        pfn,
        cpu,
        `kfree: 0x${addr.toString(16)} is not the start of an object in ${name} (offset ${off} in a slab of ${objSize}-byte objects)`,
      );
      return;
    }
    const obj = off / objSize;
    const cb = HEADER_WORDS + ci * CACHE_WORDS;
    const w = this.#w;
    spinLock(w, cb + C_LOCK, cpu, this.pa.onSpin);
    const slot = mm.private[pfn]!;
    const sb = this.#slotBase + slot * SLOT_WORDS;
    const bitWord = sb + S_BITMAP + (obj >> 5);
    if ((w[bitWord]! & (1 << (obj & 31))) === 0) {
      spinUnlock(w, cb + C_LOCK, cpu);
      this.#slabError(
        'double_free',
        name,
        addr,
        pfn,
        cpu,
        `kfree: double free of 0x${addr.toString(16)} in ${name} (slab page pfn ${pfn}, object ${obj})`,
      );
      return;
    }
    w[bitWord]! &= ~(1 << (obj & 31));
    const wasFull = w[sb + S_FREELIST] === -1;
    w[sb + S_NEXT + obj] = w[sb + S_FREELIST]!;
    w[sb + S_FREELIST] = obj;
    const inuse = --w[sb + S_INUSE]!;
    w[cb + C_INUSE]!--;
    w[cb + C_FREES]!++;
    if (wasFull) this.#addPartial(cb, pfn);
    let discard = false;
    if (inuse === 0 && w[cb + C_NR_PARTIAL]! > MIN_PARTIAL) {
      this.#removePartial(cb, pfn);
      w[cb + C_NR_SLABS]!--;
      discard = true;
    }
    spinUnlock(w, cb + C_LOCK, cpu);
    if (discard) {
      // discard_slab: the page goes back as an ordinary page.
      mm.__clearPageFlag(pfn, PG_slab);
      mm.mapping[pfn] = 0;
      mm.private[pfn] = 0;
      this.#putSlot(slot, cpu);
      this.pa.freePages(pfn, 0, cpu);
    }
  }

  /**
   * A caller's mistake, Linux's way: WARN (printk the reason, count it) and fail the call
   * as memory would -- kmalloc returns NULL (0), ksize 0.
   */
  #warn(line: string): number {
    Atomics.add(this.#w, H_MISUSE, 1);
    this.#hooks.report?.(`WARNING: at mm/slub.c: ${line}`);
    return 0;
  }

  #slabError(
    reason: 'double_free' | 'invalid_pointer' | 'not_slab',
    cache: string,
    addr: number,
    pfn: number,
    cpu: number,
    line: string,
  ): void {
    Atomics.add(this.#w, H_ERRORS, 1);
    const comm = this.#hooks.comm?.(cpu) ?? 'swapper';
    this.pa.report({ kind: 'slab_error', reason, comm, cpu, cache, addr, pfn, lines: [line] });
  }

  /* -------------------------------------------------------- introspection */

  /** ksize: the usable size of a kmalloc'd object (its class); 0, with a WARN, for anything else. */
  /**
   * kmem_cache_shrink for every kmalloc cache: give back the empty slabs that MIN_PARTIAL
   * kept (what a shutdown does before counting pages). Returns the pages freed.
   */
  kmemCacheShrinkAll(cpu: number): number {
    const w = this.#w;
    const mm = this.pa.memMap;
    let freed = 0;
    for (let ci = 0; ci < KMALLOC_SIZES.length; ci++) {
      const cb = HEADER_WORDS + ci * CACHE_WORDS;
      const empty: number[] = [];
      spinLock(w, cb + C_LOCK, cpu, this.pa.onSpin);
      for (let pfn = w[cb + C_PARTIAL]!; pfn !== -1; pfn = mm.lruNext[pfn]!) {
        const sb = this.#slotBase + mm.private[pfn]! * SLOT_WORDS;
        if (w[sb + S_INUSE] === 0) empty.push(pfn);
      }
      for (const pfn of empty) {
        this.#removePartial(cb, pfn);
        w[cb + C_NR_SLABS]!--;
      }
      spinUnlock(w, cb + C_LOCK, cpu);
      for (const pfn of empty) {
        const slot = mm.private[pfn]!;
        mm.__clearPageFlag(pfn, PG_slab);
        mm.mapping[pfn] = 0;
        mm.private[pfn] = 0;
        this.#putSlot(slot, cpu);
        this.pa.freePages(pfn, 0, cpu);
        freed++;
      }
    }
    return freed;
  }

  ksize(addr: number): number {
    if (addr === ZERO_SIZE_PTR) return 0;
    const mm = this.pa.memMap;
    const pfn = this.#kaddrToPfn(addr);
    if (!Number.isInteger(pfn) || pfn < 0 || pfn >= mm.nrPages || !mm.PageSlab(pfn)) {
      return this.#warn(`ksize: 0x${addr.toString(16)} is not in a slab page`);
    }
    return KMALLOC_SIZES[(mm.mapping[pfn]! - KMALLOC_CACHE_ID_BASE) / 2]!;
  }

  /** /proc/slabinfo, roughly. */
  cacheStats(): KmallocCacheStats[] {
    const w = this.#w;
    return KMALLOC_SIZES.map((size, ci) => {
      const cb = HEADER_WORDS + ci * CACHE_WORDS;
      return {
        name: `kmalloc-${size}`,
        size,
        id: kmallocCacheId(ci),
        nrSlabs: w[cb + C_NR_SLABS]!,
        nrPartial: w[cb + C_NR_PARTIAL]!,
        inuse: w[cb + C_INUSE]!,
        allocs: w[cb + C_ALLOCS]!,
        frees: w[cb + C_FREES]!,
      };
    });
  }

  /** Injected failures (all openers). */
  nrFailslab(): number {
    return Atomics.load(this.#w, H_FAILSLAB);
  }

  /** kmalloc/ksize calls refused with a WARN because the caller got them wrong (all openers). */
  nrMisuse(): number {
    return Atomics.load(this.#w, H_MISUSE);
  }

  /** slab_error reports (all openers). */
  nrSlabErrors(): number {
    return Atomics.load(this.#w, H_ERRORS);
  }

  /** Slots in use (slab pages held). */
  nrSlabPages(): number {
    return Atomics.load(this.#w, H_SLOTS_USED);
  }

  /**
   * Audit (call when quiescent): partial lists, slot bookkeeping against the free lists
   * and bitmaps, counts. Returns the problems found.
   */
  checkSlabs(): string[] {
    const problems: string[] = [];
    const w = this.#w;
    const mm = this.pa.memMap;
    for (let ci = 0; ci < KMALLOC_SIZES.length; ci++) {
      const cb = HEADER_WORDS + ci * CACHE_WORDS;
      const name = `kmalloc-${KMALLOC_SIZES[ci]}`;
      const nobj = PAGE_SIZE / KMALLOC_SIZES[ci]!;
      let n = 0;
      for (let pfn = w[cb + C_PARTIAL]!; pfn !== -1; pfn = mm.lruNext[pfn]!) {
        if (++n > this.maxSlabs) {
          problems.push(`${name}: partial list cycle`);
          break;
        }
        if (!mm.PageSlab(pfn)) problems.push(`${name}: partial pfn ${pfn} is not PageSlab`);
        if (mm.mapping[pfn] !== kmallocCacheId(ci))
          problems.push(`${name}: partial pfn ${pfn} has mapping 0x${mm.mapping[pfn]!.toString(16)}`);
        const sb = this.#slotBase + mm.private[pfn]! * SLOT_WORDS;
        if (w[sb + S_PFN] !== pfn) problems.push(`${name}: slot of pfn ${pfn} names pfn ${w[sb + S_PFN]}`);
        let free = 0;
        const seen = new Set<number>();
        for (let o = w[sb + S_FREELIST]!; o !== -1; o = w[sb + S_NEXT + o]!) {
          if (o < 0 || o >= nobj || seen.has(o)) {
            problems.push(`${name}: pfn ${pfn} free list broken at object ${o}`);
            break;
          }
          seen.add(o);
          if (w[sb + S_BITMAP + (o >> 5)]! & (1 << (o & 31)))
            problems.push(`${name}: pfn ${pfn} object ${o} free but marked allocated`);
          free++;
        }
        if (free === 0) problems.push(`${name}: full slab ${pfn} on the partial list`);
        if (free + w[sb + S_INUSE]! !== nobj)
          problems.push(`${name}: pfn ${pfn} has ${free} free + ${w[sb + S_INUSE]} in use != ${nobj}`);
      }
      if (n !== w[cb + C_NR_PARTIAL]) problems.push(`${name}: nr_partial ${w[cb + C_NR_PARTIAL]} but ${n} on the list`);
    }
    return problems;
  }
}
