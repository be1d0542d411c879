/*
 * Trace export: collects what the hypervisor and the vCPUs did, when, and writes it as
 * Chrome trace-event JSON, which Perfetto (ui.perfetto.dev) and chrome://tracing open.
 *
 * Mapping: pid = domain id ("d1 guest"), tid = vCPU id ("vCPU 0"); the hypervisor is the
 * process XEN_PID (DOMID_XEN) with one thread "xen". Timestamps and durations are in
 * microseconds (the format's unit), fractional allowed.
 *
 * Two halves:
 *  - TraceBuffer: what a vCPU worker writes on its hot path. Fixed-size records of five
 *    doubles (kind, name id, ts, dur, arg) in a Float64Array ring, optionally over a
 *    SharedArrayBuffer the controller also maps; names are small integers from a
 *    NameTable whose well-known prefix (TN.mmu_update, TN.vunmap, ...) is the same in
 *    every thread, so nothing but numbers crosses threads. When the ring is full the
 *    oldest records are overwritten and counted as dropped.
 *  - TraceWriter: the controller's collector. Events live in one growable Float64Array
 *    (no object per event) until toJSON()/writeTrace() turns them into JSON objects,
 *    sorted by time, with metadata events naming processes and threads.
 */
import { open } from 'node:fs/promises';
import { DOMID_XEN } from './abi.js';

/* --------------------------------------------------------------------- kinds */

/** A span: ph "X" with ts and dur. */
export const EV_COMPLETE = 0;
/** A point in time: ph "i". */
export const EV_INSTANT = 1;
/** A sampled value: ph "C" (drawn as a per-process counter track). */
export const EV_COUNTER = 2;
export type TraceEventKind = typeof EV_COMPLETE | typeof EV_INSTANT | typeof EV_COUNTER;

const PH = ['X', 'i', 'C'] as const;

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

function checkId(v: unknown, what: string): number {
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

/* ------------------------------------------------------------- JSON and writer */

export type TraceArgs = Record<string, string | number | boolean>;

export interface TraceEvent {
  name: string;
  cat?: string;
  ph: 'X' | 'i' | 'C' | 'M';
  ts: number;
  dur?: number;
  pid: number;
  tid: number;
  /** Instant scope: thread, process or global. */
  s?: 't' | 'p' | 'g';
  args?: Record<string, unknown>;
}

export interface TraceFile {
  traceEvents: TraceEvent[];
  displayTimeUnit: 'ns' | 'ms';
}

export interface TraceWriterOptions {
  /**
   * Subtracted from every timestamp. Default: the earliest event's ts, so the trace starts
   * at 0 (traceNowUs() values are ~1.7e15 us). Pass 0 to keep timestamps as given.
   */
  originUs?: number;
}

/** Wall-clock microseconds comparable across worker threads (each has its own performance.now origin). */
export function traceNowUs(): number {
  return (performance.timeOrigin + performance.now()) * 1000;
}

// Writer record layout: 8 doubles per event.
const W_WORDS = 8;
const W_PH = 0;
const W_NAME = 1;
const W_TS = 2;
const W_DUR = 3;
const W_PID = 4;
const W_TID = 5;
const W_ARG = 6;
const W_SCOPE = 7;
const SCOPES = ['t', 'p', 'g'] as const;
/** dur of a begin() not yet matched by end(). */
const OPEN = -1;

function checkTime(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) {
    throw new RangeError(`${what} must be a finite number of microseconds, got ${String(v)}`);
  }
  return v;
}

interface Meta {
  kind: 'process_name' | 'thread_name' | 'process_sort_index' | 'thread_sort_index';
  pid: number;
  tid: number;
  value: string | number;
}

/** The controller's trace collector. */
export class TraceWriter {
  readonly names = new NameTable();
  readonly #origin: number | undefined;
  #f = new Float64Array(W_WORDS * 1024);
  #n = 0;
  readonly #args = new Map<number, Record<string, unknown>>();
  readonly #meta: Meta[] = [];
  readonly #open = new Map<number, number[]>();
  #dropped = 0;

  constructor(opts: TraceWriterOptions = {}) {
    if (opts.originUs !== undefined) checkTime(opts.originUs, 'TraceWriter originUs');
    this.#origin = opts.originUs;
  }

  /** Events collected (metadata not counted). */
  get length(): number {
    return this.#n;
  }

  /** Records the merged buffers had lost to ring overflow. */
  get dropped(): number {
    return this.#dropped;
  }

  #push(
    ph: number,
    name: number,
    ts: number,
    dur: number,
    pid: number,
    tid: number,
    arg: number,
    scope: number,
  ): number {
    if ((this.#n + 1) * W_WORDS > this.#f.length) {
      const g = new Float64Array(this.#f.length * 2);
      g.set(this.#f);
      this.#f = g;
    }
    const o = this.#n * W_WORDS;
    const f = this.#f;
    f[o + W_PH] = ph;
    f[o + W_NAME] = name;
    f[o + W_TS] = ts;
    f[o + W_DUR] = dur;
    f[o + W_PID] = pid;
    f[o + W_TID] = tid;
    f[o + W_ARG] = arg;
    f[o + W_SCOPE] = scope;
    return this.#n++;
  }

  #argsOf(i: number, args: TraceArgs | undefined): void {
    if (args !== undefined) {
      if (args === null || typeof args !== 'object')
        throw new TypeError('trace args must be an object of strings, numbers or booleans');
      this.#args.set(i, { ...args });
    }
  }

  /** A span [ts, ts + dur) on thread (pid, tid): ph "X". */
  complete(name: string, pid: number, tid: number, ts: number, dur: number, args?: TraceArgs): void {
    checkId(pid, 'trace pid');
    checkId(tid, 'trace tid');
    checkTime(ts, 'trace ts');
    if (checkTime(dur, 'trace dur') < 0) throw new RangeError(`trace dur must be >= 0, got ${dur}`);
    this.#argsOf(this.#push(EV_COMPLETE, this.names.id(name), ts, dur, pid, tid, NaN, 0), args);
  }

  /** Open a span on (pid, tid); the matching end() closes the innermost one as an "X" event. */
  begin(name: string, pid: number, tid: number, ts: number, args?: TraceArgs): void {
    checkId(pid, 'trace pid');
    checkId(tid, 'trace tid');
    checkTime(ts, 'trace ts');
    const i = this.#push(EV_COMPLETE, this.names.id(name), ts, OPEN, pid, tid, NaN, 0);
    this.#argsOf(i, args);
    const key = pid * 0x1_0000_0000 + tid;
    let stack = this.#open.get(key);
    if (stack === undefined) this.#open.set(key, (stack = []));
    stack.push(i);
  }

  /** Close the innermost open span of (pid, tid) at ts. */
  end(pid: number, tid: number, ts: number): void {
    checkTime(ts, 'trace ts');
    const stack = this.#open.get(pid * 0x1_0000_0000 + tid);
    const i = stack?.pop();
    if (i === undefined) throw new RangeError(`TraceWriter.end: no span is open on pid ${pid} tid ${tid}`);
    const o = i * W_WORDS;
    const start = this.#f[o + W_TS]!;
    if (ts < start) throw new RangeError(`TraceWriter.end: ts ${ts} is before the span's start ${start}`);
    this.#f[o + W_DUR] = ts - start;
  }

  /** A point event: ph "i", scoped to the thread (default), process or whole trace. */
  instant(name: string, pid: number, tid: number, ts: number, args?: TraceArgs, scope: 't' | 'p' | 'g' = 't'): void {
    checkId(pid, 'trace pid');
    checkId(tid, 'trace tid');
    checkTime(ts, 'trace ts');
    const sc = SCOPES.indexOf(scope);
    if (sc < 0) throw new RangeError(`trace instant scope must be 't', 'p' or 'g', got ${String(scope)}`);
    this.#argsOf(this.#push(EV_INSTANT, this.names.id(name), ts, 0, pid, tid, NaN, sc), args);
  }

  /** A counter sample on process pid: one value, or several series ({ lazy: 12, free: 300 }). */
  counter(name: string, pid: number, ts: number, value: number | Record<string, number>): void {
    checkId(pid, 'trace pid');
    checkTime(ts, 'trace ts');
    if (typeof value === 'number') {
      if (!Number.isFinite(value)) throw new RangeError(`trace counter "${name}" value must be finite, got ${value}`);
      this.#push(EV_COUNTER, this.names.id(name, 'value'), ts, 0, pid, 0, value, 0);
      return;
    }
    if (value === null || typeof value !== 'object') {
      throw new TypeError(`trace counter "${name}" value must be a number or { series: number }`);
    }
    for (const [k, v] of Object.entries(value)) {
      if (typeof v !== 'number' || !Number.isFinite(v)) {
        throw new RangeError(`trace counter "${name}" series "${k}" must be a finite number, got ${String(v)}`);
      }
    }
    const i = this.#push(EV_COUNTER, this.names.id(name, 'value'), ts, 0, pid, 0, NaN, 0);
    this.#args.set(i, { ...value });
  }

  processName(pid: number, name: string, sortIndex?: number): void {
    checkId(pid, 'trace pid');
    this.#meta.push({ kind: 'process_name', pid, tid: 0, value: name });
    if (sortIndex !== undefined) this.#meta.push({ kind: 'process_sort_index', pid, tid: 0, value: sortIndex });
  }

  threadName(pid: number, tid: number, name: string, sortIndex?: number): void {
    checkId(pid, 'trace pid');
    checkId(tid, 'trace tid');
    this.#meta.push({ kind: 'thread_name', pid, tid, value: name });
    if (sortIndex !== undefined) this.#meta.push({ kind: 'thread_sort_index', pid, tid, value: sortIndex });
  }

  /** Name a guest domain's process "d<domid> guest" and its threads "vCPU 0".."vCPU n-1". */
  domain(domid: number, vcpus: number): void {
    checkId(vcpus, 'trace vcpus');
    this.processName(domid, `d${domid} guest`, domid);
    for (let v = 0; v < vcpus; v++) this.threadName(domid, v, `vCPU ${v}`, v);
  }

  /** Name the hypervisor's process and thread "xen" (sorted first). */
  xen(): void {
    this.processName(XEN_PID, 'xen', -1);
    this.threadName(XEN_PID, XEN_TID, 'xen', 0);
  }

  /**
   * Merge a worker's buffer: its held records become events on (buf.pid, buf.tid), names
   * resolved through `names` (the worker's NameTable, or its toJSON() data; default
   * buf.names). Returns the number of events merged. Throws on a malformed record.
   */
  addBuffer(buf: TraceBuffer, names: NameTable | NameTableData = buf.names): number {
    if (!(buf instanceof TraceBuffer)) throw new TypeError('TraceWriter.addBuffer(buf): buf must be a TraceBuffer');
    const table = names instanceof NameTable ? names : new NameTable(names);
    const before = this.#n;
    const ids = new Map<number, number>();
    let k = 0;
    buf.forEach((kind, nameId, ts, dur, arg) => {
      const at = `TraceBuffer pid ${buf.pid} tid ${buf.tid} record ${k++}`;
      if (kind !== EV_COMPLETE && kind !== EV_INSTANT && kind !== EV_COUNTER) {
        throw new RangeError(`${at}: kind ${kind} (expected EV_COMPLETE 0, EV_INSTANT 1 or EV_COUNTER 2)`);
      }
      if (!Number.isFinite(ts)) throw new RangeError(`${at}: ts ${ts} is not a finite number`);
      if (kind === EV_COMPLETE && !(dur >= 0 && Number.isFinite(dur))) {
        throw new RangeError(`${at}: dur ${dur} must be a finite number >= 0`);
      }
      if (kind === EV_COUNTER && !Number.isFinite(arg))
        throw new RangeError(`${at}: counter value ${arg} is not finite`);
      let id = ids.get(nameId);
      if (id === undefined) {
        const name = table.name(nameId) ?? `?name#${nameId}`;
        id = this.names.id(name, table.argName(nameId));
        ids.set(nameId, id);
      }
      this.#push(kind, id, ts, kind === EV_COMPLETE ? dur : 0, buf.pid, kind === EV_COUNTER ? 0 : buf.tid, arg, 0);
    });
    this.#dropped += buf.dropped;
    return this.#n - before;
  }

  /** Every event as a trace-event object: metadata first, then by time. */
  *events(): Generator<TraceEvent> {
    for (const m of this.#meta) {
      const isName = m.kind === 'process_name' || m.kind === 'thread_name';
      yield {
        name: m.kind,
        ph: 'M',
        ts: 0,
        pid: m.pid,
        tid: m.tid,
        args: isName ? { name: m.value } : { sort_index: m.value },
      };
    }
    const f = this.#f;
    const n = this.#n;
    let minTs = Infinity;
    let maxEnd = -Infinity;
    for (let i = 0; i < n; i++) {
      const ts = f[i * W_WORDS + W_TS]!;
      const d = f[i * W_WORDS + W_DUR]!;
      if (ts < minTs) minTs = ts;
      maxEnd = Math.max(maxEnd, ts + Math.max(d, 0));
    }
    const origin = this.#origin ?? (n > 0 ? minTs : 0);
    const order = new Uint32Array(n);
    for (let i = 0; i < n; i++) order[i] = i;
    order.sort((a, b) => f[a * W_WORDS + W_TS]! - f[b * W_WORDS + W_TS]! || a - b);
    for (let k = 0; k < n; k++) {
      const i = order[k]!;
      const o = i * W_WORDS;
      const kind = f[o + W_PH]!;
      const nameId = f[o + W_NAME]!;
      const ts = f[o + W_TS]!;
      const ev: TraceEvent = {
        name: this.names.name(nameId)!,
        cat: 'pvmmu',
        ph: PH[kind]!,
        ts: ts - origin,
        pid: f[o + W_PID]!,
        tid: f[o + W_TID]!,
      };
      let args = this.#args.get(i);
      const arg = f[o + W_ARG]!;
      if (!Number.isNaN(arg)) args = { ...args, [this.names.argName(nameId)]: arg };
      if (kind === EV_COMPLETE) {
        let dur = f[o + W_DUR]!;
        if (dur === OPEN) {
          dur = Math.max(0, maxEnd - ts);
          args = { ...args, unfinished: true };
        }
        ev.dur = dur;
      } else if (kind === EV_INSTANT) {
        ev.s = SCOPES[f[o + W_SCOPE]!]!;
      }
      if (args !== undefined) ev.args = args;
      yield ev;
    }
  }

  toJSON(): TraceFile {
    return { traceEvents: [...this.events()], displayTimeUnit: 'ns' };
  }
}

/**
 * Write a trace as Chrome trace-event JSON, streaming events in chunks (a trace of
 * millions of events is never one string). Returns how many events and bytes were written.
 */
export async function writeTrace(
  file: string,
  trace: TraceWriter | TraceFile,
): Promise<{ events: number; bytes: number }> {
  if (typeof file !== 'string' || file.length === 0) throw new TypeError('writeTrace(file): file must be a path');
  let events: Iterable<TraceEvent>;
  let unit: string;
  if (trace instanceof TraceWriter) {
    events = trace.events();
    unit = 'ns';
  } else if (trace && Array.isArray(trace.traceEvents)) {
    events = trace.traceEvents;
    unit = trace.displayTimeUnit ?? 'ns';
  } else {
    throw new TypeError('writeTrace(file, trace): trace must be a TraceWriter or { traceEvents: [...] }');
  }
  const fh = await open(file, 'w');
  let bytes = 0;
  let count = 0;
  try {
    const put = async (s: string) => {
      const b = Buffer.from(s, 'utf8');
      await fh.write(b);
      bytes += b.length;
    };
    await put('{"traceEvents":[\n');
    let chunk: string[] = [];
    for (const ev of events) {
      chunk.push((count++ === 0 ? '' : ',\n') + JSON.stringify(ev));
      if (chunk.length >= 4096) {
        await put(chunk.join(''));
        chunk = [];
      }
    }
    await put(`${chunk.join('')}\n],"displayTimeUnit":${JSON.stringify(unit)}}\n`);
  } finally {
    await fh.close();
  }
  return { events: count, bytes };
}
