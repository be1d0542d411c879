/*
 * Trace export: collects what the hypervisor and the vCPUs did, when, and writes it as
 * Chrome trace-event JSON, which Perfetto (ui.perfetto.dev) and chrome://tracing open.
 *
 * Mapping: pid = domain id ("d1 guest"), tid = vCPU id ("vCPU 0"); the hypervisor is the
 * process XEN_PID (DOMID_XEN) with one thread "xen". Timestamps and durations are in
 * microseconds (the format's unit), fractional allowed.
 *
 * What the vCPU workers write on their hot path is src/abi/trace.ts's TraceBuffer ring.
 * This file is the controller's half, TraceWriter, the collector. Events live in one
 * growable Float64Array (no object per event) until toJSON()/writeTrace() turns them into
 * JSON objects, sorted by time, with metadata events naming processes and threads.
 */
import { open } from 'node:fs/promises';
import {
  checkId,
  EV_COMPLETE,
  EV_COUNTER,
  EV_INSTANT,
  NameTable,
  type NameTableData,
  PH,
  TraceBuffer,
  XEN_PID,
  XEN_TID,
} from './abi/trace.js';

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
