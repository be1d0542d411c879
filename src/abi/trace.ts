/*
 * The trace ring: what a vCPU worker (and the hypervisor) writes on its hot path for
 * --trace, in memory the host also maps. Fixed-size records of five doubles (kind, name
 * id, ts, dur, arg) in a Float64Array ring over a SharedArrayBuffer; names are small
 * integers from a NameTable whose well-known prefix (TN.mmu_update, TN.vunmap, ...) is the
 * same in every thread, so nothing but numbers crosses threads. When the ring is full the
 * oldest records are overwritten and counted as dropped. src/trace.ts (the host) turns
 * the records into Chrome trace-event JSON.
 */
import { DOMID_XEN } from './xen.js';

/* --------------------------------------------------------------------- kinds */

/** A span: ph "X" with ts and dur. */
export const EV_COMPLETE = 0;
/** A point in time: ph "i". */
export const EV_INSTANT = 1;
/** A sampled value: ph "C" (drawn as a per-process counter track). */
export const EV_COUNTER = 2;
export type TraceEventKind = typeof EV_COMPLETE | typeof EV_INSTANT | typeof EV_COUNTER;

/** Chrome trace-event phase of each kind. */
export const PH = ['X', 'i', 'C'] as const;

/** The hypervisor's pseudo-process in a trace, and its one thread. */
export const XEN_PID = DOMID_XEN;
export const XEN_TID = 0;

/* ---------------------------------------------------------------- name table */

/**
 * Names every thread knows by the same id, each with the label its numeric argument is
 * shown under. Append only: ids are positions, and recorded buffers depend on them.
 */
const WELL_KNOWN = [
  ['mmu_update', 'count'],
  ['mmuext_op', 'cmd'],
  ['multicall', 'entries'],
  ['update_va_mapping', 'va'],
  ['flush_tlb_all', 'targets'],
  ['flush_tlb_others', 'targets'],
  ['flush_tlb_kernel_range', 'pages'],
  ['invlpg', 'va'],
  ['tlb_flush', 'entries'],
  ['ipi', 'vcpu'],
  ['vmap', 'pages'],
  ['vunmap', 'pages'],
  ['purge_addresses', 'entries'],
  ['vm_unmap_aliases', 'pages'],
  ['kmap_flush_unused', 'pages'],
  ['pin', 'mfn'],
  ['unpin', 'mfn'],
  ['pin refused', 'mfn'],
  ['xfs_buf_read', 'blkno'],
  ['xfsbufd', 'entries'],
  ['bad_page', 'pfn'],
  ['audit', 'problems'],
  ['hypercalls', 'value'],
  ['lazy pages', 'value'],
  ['free pages', 'value'],
] as const;

export type WellKnownTraceName = (typeof WELL_KNOWN)[number][0];

/** Ids of the well-known names: TN.vunmap, TN['pin refused'], ... */
export const TN: Readonly<Record<WellKnownTraceName, number>> = Object.freeze(
  Object.fromEntries(WELL_KNOWN.map(([n], i) => [n, i])) as Record<WellKnownTraceName, number>,
);

/** A NameTable as plain data, for postMessage. */
export interface NameTableData {
  names: string[];
  argNames: string[];
}

/** Interned event names: id <-> string, and each name's argument label. */
export class NameTable {
  readonly #names: string[] = [];
  readonly #argNames: string[] = [];
  readonly #ids = new Map<string, number>();

  /** A table holding the well-known names (ids as TN), then `data`'s names if given. */
  constructor(data?: NameTableData) {
    for (const [n, a] of WELL_KNOWN) this.id(n, a);
    if (data !== undefined) {
      if (!data || !Array.isArray(data.names) || !Array.isArray(data.argNames)) {
        throw new TypeError('new NameTable(data): data must be { names: string[], argNames: string[] } from toJSON()');
      }
      for (let i = 0; i < data.names.length; i++) {
        const got = this.id(String(data.names[i]), String(data.argNames[i] ?? 'arg'));
        if (got !== i) {
          throw new RangeError(
            `new NameTable(data): name ${i} "${data.names[i]}" would get id ${got}; the data does not start with the well-known names`,
          );
        }
      }
    }
  }

  /** The id of `name`, interning it (with its argument label, default "arg") if new. */
  id(name: string, argName = 'arg'): number {
    const known = this.#ids.get(name);
    if (known !== undefined) return known;
    if (typeof name !== 'string' || name.length === 0) {
      throw new TypeError(`NameTable.id(name): name must be a non-empty string, got ${String(name)}`);
    }
    const id = this.#names.length;
    this.#names.push(name);
    this.#argNames.push(argName);
    this.#ids.set(name, id);
    return id;
  }

  name(id: number): string | undefined {
    return this.#names[id];
  }

  argName(id: number): string {
    return this.#argNames[id] ?? 'arg';
  }

  get size(): number {
    return this.#names.length;
  }

  toJSON(): NameTableData {
    return { names: this.#names.slice(), argNames: this.#argNames.slice() };
  }
}

/* ------------------------------------------------------------- worker buffer */

export interface TraceBufferOptions {
  /** Domain id of the writer. */
  pid: number;
  /** vCPU id of the writer (XEN_TID for the hypervisor thread). */
  tid: number;
  /** Records the ring holds before overwriting the oldest (default 65536 = 2.5 MiB). */
  capacity?: number;
  /** Memory to use (TraceBuffer.bytesFor(capacity) bytes); a SharedArrayBuffer lets the controller read it. */
  buffer?: SharedArrayBuffer | ArrayBuffer;
  /** Name table for names beyond the well-known ones (default: a fresh one). */
  names?: NameTable;
}

const HDR_WRITTEN = 0;
const HDR_CAPACITY = 1;
const HDR_PID = 2;
const HDR_TID = 3;

/** An id (pid, tid, name) must be a non-negative integer: checked where records are made. */
export function checkId(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
    throw new RangeError(`${what} must be a non-negative integer, got ${String(v)}`);
  }
  return v;
}

/**
 * A single-writer ring of trace records. Layout (Float64Array): [written, capacity, pid,
 * tid] then capacity records of [kind, nameId, ts, dur, arg]. `written` counts every
 * record ever written, so the controller sees both the newest records and how many were
 * lost. event() is unchecked (hot path); the merge in TraceWriter.addBuffer validates.
 *
 * Cross-thread reads are meant for after the writer has stopped (or handed over through
 * Atomics/postMessage), as with any plain shared-memory writes.
 */
export class TraceBuffer {
  static readonly HEADER_WORDS = 4;
  static readonly RECORD_WORDS = 5;

  readonly pid: number;
  readonly tid: number;
  readonly capacity: number;
  readonly names: NameTable;
  readonly f64: Float64Array;

  /** Bytes of memory a buffer of `capacity` records needs. */
  static bytesFor(capacity: number): number {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 26) {
      throw new RangeError(`TraceBuffer capacity must be an integer from 1 to ${1 << 26} records, got ${capacity}`);
    }
    return (TraceBuffer.HEADER_WORDS + capacity * TraceBuffer.RECORD_WORDS) * 8;
  }

  constructor(opts: TraceBufferOptions) {
    if (opts === null || typeof opts !== 'object') {
      throw new TypeError('new TraceBuffer(opts): opts must be { pid, tid, capacity?, buffer?, names? }');
    }
    this.pid = checkId(opts.pid, 'TraceBuffer pid');
    this.tid = checkId(opts.tid, 'TraceBuffer tid');
    this.capacity =
      opts.capacity ??
      (opts.buffer
        ? Math.floor((opts.buffer.byteLength / 8 - TraceBuffer.HEADER_WORDS) / TraceBuffer.RECORD_WORDS)
        : 65536);
    const bytes = TraceBuffer.bytesFor(this.capacity);
    if (opts.buffer !== undefined) {
      if (!(opts.buffer instanceof SharedArrayBuffer) && !(opts.buffer instanceof ArrayBuffer)) {
        throw new TypeError('TraceBuffer buffer must be a SharedArrayBuffer or ArrayBuffer');
      }
      if (opts.buffer.byteLength < bytes) {
        throw new RangeError(
          `TraceBuffer buffer has ${opts.buffer.byteLength} bytes; ${this.capacity} records need TraceBuffer.bytesFor(${this.capacity}) = ${bytes}`,
        );
      }
    }
    this.f64 = new Float64Array(opts.buffer ?? new ArrayBuffer(bytes), 0, bytes / 8);
    this.f64[HDR_WRITTEN] = 0;
    this.f64[HDR_CAPACITY] = this.capacity;
    this.f64[HDR_PID] = this.pid;
    this.f64[HDR_TID] = this.tid;
    this.names = opts.names ?? new NameTable();
  }

  /**
   * A second view of a buffer another thread initialised (pid, tid and capacity come from
   * its header; records already written are kept).
   */
  static attach(buffer: SharedArrayBuffer | ArrayBuffer, names?: NameTable): TraceBuffer {
    if (!(buffer instanceof SharedArrayBuffer) && !(buffer instanceof ArrayBuffer)) {
      throw new TypeError('TraceBuffer.attach(buffer): buffer must be a SharedArrayBuffer or ArrayBuffer');
    }
    if (buffer.byteLength < TraceBuffer.HEADER_WORDS * 8) {
      throw new RangeError(`TraceBuffer.attach(buffer): ${buffer.byteLength} bytes is too small to hold a header`);
    }
    const hdr = new Float64Array(buffer, 0, TraceBuffer.HEADER_WORDS);
    const written = hdr[HDR_WRITTEN]!;
    const b = new TraceBuffer({ pid: hdr[HDR_PID]!, tid: hdr[HDR_TID]!, capacity: hdr[HDR_CAPACITY]!, buffer, names });
    b.f64[HDR_WRITTEN] = written;
    return b;
  }

  /** Append one record (unchecked). For EV_COUNTER, arg is the value and dur is ignored. */
  event(kind: TraceEventKind, nameId: number, ts: number, dur: number, arg: number): void {
    const f = this.f64;
    const w = f[HDR_WRITTEN]!;
    const o = TraceBuffer.HEADER_WORDS + (w % this.capacity) * TraceBuffer.RECORD_WORDS;
    f[o] = kind;
    f[o + 1] = nameId;
    f[o + 2] = ts;
    f[o + 3] = dur;
    f[o + 4] = arg;
    f[HDR_WRITTEN] = w + 1;
  }

  complete(nameId: number, ts: number, dur: number, arg = NaN): void {
    this.event(EV_COMPLETE, nameId, ts, dur, arg);
  }

  instant(nameId: number, ts: number, arg = NaN): void {
    this.event(EV_INSTANT, nameId, ts, 0, arg);
  }

  counter(nameId: number, ts: number, value: number): void {
    this.event(EV_COUNTER, nameId, ts, 0, value);
  }

  /** Records ever written (including overwritten ones). */
  get written(): number {
    return this.f64[HDR_WRITTEN]!;
  }

  /** Records currently held. */
  get count(): number {
    return Math.min(this.written, this.capacity);
  }

  /** Records overwritten because the ring was full. */
  get dropped(): number {
    return this.written - this.count;
  }

  /** Visit the held records, oldest first. */
  forEach(fn: (kind: number, nameId: number, ts: number, dur: number, arg: number) => void): void {
    const f = this.f64;
    const w = this.written;
    const n = this.count;
    for (let k = w - n; k < w; k++) {
      const o = TraceBuffer.HEADER_WORDS + (k % this.capacity) * TraceBuffer.RECORD_WORDS;
      fn(f[o]!, f[o + 1]!, f[o + 2]!, f[o + 3]!, f[o + 4]!);
    }
  }

  clear(): void {
    this.f64[HDR_WRITTEN] = 0;
  }
}

/** Wall-clock microseconds comparable across worker threads (each has its own performance.now origin). */
export function traceNowUs(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}
