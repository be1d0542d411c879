/*
 * Typed-array columns in one SharedArrayBuffer, and the per-vCPU wrappers every shared
 * kernel structure (vmalloc, highmem) puts around it.
 *
 * A structure that any vCPU worker can attach lays its state out as a table of columns,
 * v86-style: an Int32 header (locks, geometry, counters), a Float64 header (addresses
 * above 2^31), then one typed array per field, indexed by slot. No object per slot.
 *
 * Invariants:
 *   - The columns follow each other in the order the spec lists them, with no padding: a
 *     spec lists the 8-byte columns first, then the 4-byte ones, then the 1-byte ones, so
 *     that every column starts aligned (columnLayout checks it).
 *   - The layout is a pure function of the geometry, and the geometry lives in the Int32
 *     header: a worker that attaches reads the header, recomputes the layout, and refuses
 *     a buffer whose size does not match.
 *   - The Int32 header is always the first column and the Float64 header the second.
 */
import { EINVAL } from '../../src/abi/xen.js';
import { formatKernelVa, MAX_VCPUS_PER_DOMAIN } from '../../src/abi/layout.js';
import { LogBuf } from '../kernel/printk.js';
import { spinLock, spinTrylock, spinUnlock } from '../mm/spinlock.js';

export type ColumnType = 'f64' | 'i32' | 'u8';

/** A column spec: name -> [element type, element count], in buffer order. */
export type ColumnSpec = Record<string, readonly [ColumnType, number]>;

type ArrayOf<T extends ColumnType> = T extends 'f64' ? Float64Array : T extends 'i32' ? Int32Array : Uint8Array;

/** One typed array per column of a spec. */
export type Columns<S extends ColumnSpec> = { readonly [N in keyof S]: ArrayOf<S[N][0]> };

const BYTES: Record<ColumnType, number> = { f64: 8, i32: 4, u8: 1 };

/** Spec entries: a column of n Float64 / Int32 / Uint8 elements. */
export const f64 = (n: number) => ['f64', n] as const;
export const i32 = (n: number) => ['i32', n] as const;
export const u8 = (n: number) => ['u8', n] as const;

/** Byte offset of every column, in spec order, and the buffer size. */
export function columnLayout<S extends ColumnSpec>(spec: S): { offsets: Record<keyof S, number>; total: number } {
  let off = 0;
  const offsets = {} as Record<keyof S, number>;
  for (const name of Object.keys(spec) as (keyof S & string)[]) {
    const [type, count] = spec[name]!;
    const size = BYTES[type];
    if (off % size !== 0) throw new TypeError(`column ${name} (${type}) would start unaligned at byte ${off}`);
    offsets[name] = off;
    off += count * size;
  }
  return { offsets, total: off };
}

function views<S extends ColumnSpec>(sab: SharedArrayBuffer, spec: S, offsets: Record<keyof S, number>): Columns<S> {
  const out = {} as Record<keyof S, Float64Array | Int32Array | Uint8Array>;
  for (const name of Object.keys(spec) as (keyof S & string)[]) {
    const [type, count] = spec[name]!;
    const at = offsets[name];
    out[name] =
      type === 'f64'
        ? new Float64Array(sab, at, count)
        : type === 'i32'
          ? new Int32Array(sab, at, count)
          : new Uint8Array(sab, at, count);
  }
  return out as Columns<S>;
}

/** A fresh, zeroed buffer for a spec, and its columns. */
export function createColumns<S extends ColumnSpec>(spec: S): { sab: SharedArrayBuffer; cols: Columns<S> } {
  const { offsets, total } = columnLayout(spec);
  const sab = new SharedArrayBuffer(total);
  return { sab, cols: views(sab, spec, offsets) };
}

/** The columns of a buffer made elsewhere from the same spec; `what` names it in errors. */
export function attachColumns<S extends ColumnSpec>(sab: SharedArrayBuffer, spec: S, what: string): Columns<S> {
  const { offsets, total } = columnLayout(spec);
  if (total !== sab.byteLength) throw new TypeError(`not a ${what} buffer (size mismatch)`);
  return views(sab, spec, offsets);
}

/**
 * The two headers at the front of a buffer, read before the geometry (and so the rest of
 * the layout) is known. hdrWords * 4 must be a multiple of 8.
 */
export function attachHeaders(
  sab: SharedArrayBuffer,
  hdrWords: number,
  f64Words: number,
  what: string,
): { hdr: Int32Array; f64: Float64Array } {
  if (sab.byteLength < hdrWords * 4 + f64Words * 8) throw new TypeError(`not a ${what} buffer (too small)`);
  return { hdr: new Int32Array(sab, 0, hdrWords), f64: new Float64Array(sab, hdrWords * 4, f64Words) };
}

/** What a vCPU passes to attach a shared kernel structure. */
export interface SharedKernelDeps {
  /** This vCPU's number: the lock owner (unique per thread). */
  cpu: number;
  /**
   * Called while spinning on a lock: a vCPU must keep acknowledging TLB-flush IPIs while
   * it waits, or a holder that waits on its shootdown would wait for it forever.
   */
  onSpin?: () => void;
  /** Where kernel-style messages go, besides the structure's own `messages` (printk). */
  report?: (line: string) => void;
}

/** Messages a structure keeps per vCPU. */
const MESSAGE_CAPACITY = 256;

/**
 * One vCPU's handle on a shared kernel structure: its spinlocks (owned by this CPU, with
 * the spin callback that keeps flush IPIs served), printk, and Linux's convention for a
 * caller's mistake -- print it, count it, return -EINVAL.
 */
export class SharedKernelCtx {
  constructor(
    /** This vCPU: the lock owner (unique per thread). */
    readonly cpu: number,
    readonly onSpin: (() => void) | undefined,
    readonly log: LogBuf,
    /** The structure's Int32 header (counters, the VA width). */
    readonly hdr: Int32Array,
    /** Header word that counts caller mistakes. */
    readonly misuseWord: number,
    /** Header word holding the virtual-address width, for %p. */
    readonly vaBitsWord: number,
  ) {}

  /**
   * The handle of vCPU deps.cpu (a RangeError names a bad one: host-side configuration).
   * Call it before reading the buffer, so that a bad cpu is reported first.
   */
  static check(deps: SharedKernelDeps): void {
    if (!Number.isInteger(deps.cpu) || deps.cpu < 0 || deps.cpu >= MAX_VCPUS_PER_DOMAIN) {
      throw new RangeError(`deps.cpu must be an integer in 0..${MAX_VCPUS_PER_DOMAIN - 1}, got ${deps.cpu}`);
    }
  }

  /** The handle of vCPU deps.cpu on a structure whose Int32 header is hdr. */
  static forVcpu(deps: SharedKernelDeps, hdr: Int32Array, misuseWord: number, vaBitsWord: number): SharedKernelCtx {
    SharedKernelCtx.check(deps);
    const log = new LogBuf(MESSAGE_CAPACITY, deps.report ?? null);
    return new SharedKernelCtx(deps.cpu, deps.onSpin, log, hdr, misuseWord, vaBitsWord);
  }

  lock(word: Int32Array, index: number): void {
    spinLock(word, index, this.cpu, this.onSpin);
  }

  trylock(word: Int32Array, index: number): boolean {
    return spinTrylock(word, index, this.cpu);
  }

  unlock(word: Int32Array, index: number): void {
    spinUnlock(word, index, this.cpu);
  }

  printk(line: string): void {
    this.log.printk(line);
  }

  /** An address as the kernel prints %p (sign-extended on x86_64). */
  fmt(va: number): string {
    return formatKernelVa(va, this.hdr[this.vaBitsWord]!);
  }

  /**
   * A caller's mistake, Linux's way (WARN(1, "Trying to vfree() nonexistent vm area ...")):
   * printk the reason, count it (in `counter`, default misuseWord), change nothing, and
   * return -EINVAL. Throwing is kept for host-side configuration (create, attach).
   */
  misuse(line: string, counter = this.misuseWord): number {
    Atomics.add(this.hdr, counter, 1);
    this.printk(line);
    return -EINVAL;
  }
}
