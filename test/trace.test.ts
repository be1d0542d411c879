/*
 * src/trace.ts: the Chrome trace-event JSON has the shape Perfetto and chrome://tracing
 * accept; worker ring buffers merge into it (shared memory, name tables, overflow); the
 * file written by writeTrace parses back to the same events.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { TraceWriter, writeTrace, type TraceEvent, type TraceFile } from '../src/trace.js';
import {
  EV_COMPLETE,
  EV_COUNTER,
  EV_INSTANT,
  NameTable,
  TN,
  TraceBuffer,
  XEN_PID,
  XEN_TID,
  traceNowUs,
} from '../src/abi/trace.js';

/** What the Chrome trace-event format requires of every event we emit. */
function assertShape(file: TraceFile): void {
  expect(file.displayTimeUnit).toBe('ns');
  expect(Array.isArray(file.traceEvents)).toBe(true);
  const problems: string[] = [];
  file.traceEvents.forEach((ev, i) => {
    const bad = (why: string) => problems.push(`event ${i} (${JSON.stringify(ev)}): ${why}`);
    if (!['X', 'i', 'C', 'M'].includes(ev.ph)) bad('ph');
    if (typeof ev.name !== 'string' || ev.name.length === 0) bad('name');
    if (typeof ev.ts !== 'number' || !Number.isFinite(ev.ts)) bad('ts');
    if (!Number.isInteger(ev.pid)) bad('pid');
    if (!Number.isInteger(ev.tid)) bad('tid');
    if (ev.ph === 'X' && !(typeof ev.dur === 'number' && ev.dur >= 0 && Number.isFinite(ev.dur))) bad('dur');
    if (ev.ph === 'i' && !['t', 'p', 'g'].includes(ev.s!)) bad('s');
    if (ev.ph === 'C' && !Object.values(ev.args ?? {}).every((v) => typeof v === 'number')) bad('counter args');
    if (ev.ph === 'M' && (ev.args === undefined || !('name' in ev.args || 'sort_index' in ev.args)))
      bad('metadata args');
  });
  expect(problems).toEqual([]);
  // Survives a JSON round trip unchanged (no NaN/undefined turning into null).
  expect(JSON.parse(JSON.stringify(file))).toEqual(file);
}

const byName = (f: TraceFile, name: string) => f.traceEvents.filter((e) => e.name === name);

describe('TraceWriter', () => {
  it('emits complete, instant, counter and metadata events in the Chrome shape', () => {
    const w = new TraceWriter();
    w.xen();
    w.domain(1, 2);
    w.complete('mmu_update', 1, 0, 1000, 2.5, { count: 3 });
    w.instant('pin refused', 1, 1, 1010, { mfn: 0x1a2b });
    w.counter('lazy pages', 1, 1020, 48);
    w.counter('pages', 1, 1030, { lazy: 48, free: 300 });
    w.begin('flush_tlb_all', XEN_PID, XEN_TID, 1005);
    w.end(XEN_PID, XEN_TID, 1007);
    const f = w.toJSON();
    assertShape(f);

    const meta = f.traceEvents.filter((e) => e.ph === 'M');
    expect(meta.find((e) => e.name === 'process_name' && e.pid === 1)!.args).toEqual({ name: 'd1 guest' });
    expect(meta.find((e) => e.name === 'process_name' && e.pid === XEN_PID)!.args).toEqual({ name: 'xen' });
    expect(meta.filter((e) => e.name === 'thread_name' && e.pid === 1).map((e) => [e.tid, e.args!.name])).toEqual([
      [0, 'vCPU 0'],
      [1, 'vCPU 1'],
    ]);
    expect(meta.find((e) => e.name === 'thread_name' && e.pid === XEN_PID)!.args).toEqual({ name: 'xen' });

    // Rebased to the earliest event; sorted by time after the metadata.
    const data = f.traceEvents.filter((e) => e.ph !== 'M');
    expect(data.map((e) => [e.name, e.ts])).toEqual([
      ['mmu_update', 0],
      ['flush_tlb_all', 5],
      ['pin refused', 10],
      ['lazy pages', 20],
      ['pages', 30],
    ]);
    expect(byName(f, 'mmu_update')[0]).toMatchObject({ ph: 'X', dur: 2.5, pid: 1, tid: 0, args: { count: 3 } });
    expect(byName(f, 'flush_tlb_all')[0]).toMatchObject({ ph: 'X', dur: 2, pid: XEN_PID, tid: XEN_TID });
    expect(byName(f, 'pin refused')[0]).toMatchObject({ ph: 'i', s: 't', pid: 1, tid: 1, args: { mfn: 0x1a2b } });
    expect(byName(f, 'lazy pages')[0]).toMatchObject({ ph: 'C', pid: 1, args: { value: 48 } });
    expect(byName(f, 'pages')[0]!.args).toEqual({ lazy: 48, free: 300 });
  });

  it('keeps absolute timestamps with originUs: 0, and closes unfinished spans at the trace end', () => {
    const w = new TraceWriter({ originUs: 0 });
    w.begin('vunmap', 1, 0, 100);
    w.begin('flush_tlb_all', 1, 0, 110);
    w.end(1, 0, 130); // closes the innermost (flush_tlb_all)
    w.instant('xfsbufd', 1, 0, 200);
    const f = w.toJSON();
    assertShape(f);
    expect(byName(f, 'flush_tlb_all')[0]).toMatchObject({ ts: 110, dur: 20 });
    expect(byName(f, 'vunmap')[0]).toMatchObject({ ts: 100, dur: 100, args: { unfinished: true } });
  });

  it('rejects bad arguments with what is accepted', () => {
    const w = new TraceWriter();
    expect(() => w.complete('x', -1, 0, 0, 1)).toThrow(/pid must be a non-negative integer/);
    expect(() => w.complete('x', 1, 0, Number.NaN, 1)).toThrow(/finite number of microseconds/);
    expect(() => w.complete('x', 1, 0, 0, -1)).toThrow(RangeError);
    expect(() => w.end(1, 0, 5)).toThrow(/no span is open on pid 1 tid 0/);
    expect(() => w.instant('x', 1, 0, 0, undefined, 'z' as 't')).toThrow(/'t', 'p' or 'g'/);
    expect(() => w.counter('c', 1, 0, Number.POSITIVE_INFINITY)).toThrow(/finite/);
    expect(() => w.complete('', 1, 0, 0, 1)).toThrow(TypeError);
  });
});

describe('TraceBuffer', () => {
  it('buffers worker events as numbers and merges them with well-known and local names', () => {
    const buf = new TraceBuffer({ pid: 2, tid: 3, capacity: 16 });
    const myName = buf.names.id('xfs_da_read_buf', 'blkno');
    buf.complete(TN.vmap, 50, 4, 16);
    buf.complete(TN.vunmap, 60, 30);
    buf.instant(TN['pin refused'], 70, 0x99);
    buf.counter(TN['lazy pages'], 80, 12);
    buf.event(EV_INSTANT, myName, 90, 0, 7);
    expect(buf.count).toBe(5);

    const w = new TraceWriter({ originUs: 0 });
    w.domain(2, 4);
    expect(w.addBuffer(buf, buf.names.toJSON())).toBe(5);
    const f = w.toJSON();
    assertShape(f);
    const data = f.traceEvents.filter((e) => e.ph !== 'M');
    expect(data.map((e) => [e.name, e.ph, e.ts, e.pid, e.tid])).toEqual([
      ['vmap', 'X', 50, 2, 3],
      ['vunmap', 'X', 60, 2, 3],
      ['pin refused', 'i', 70, 2, 3],
      ['lazy pages', 'C', 80, 2, 0],
      ['xfs_da_read_buf', 'i', 90, 2, 3],
    ]);
    expect(data[0]!.args).toEqual({ pages: 16 });
    expect(data[1]!.args).toBeUndefined(); // NaN arg omitted
    expect(data[2]!.args).toEqual({ mfn: 0x99 });
    expect(data[3]!.args).toEqual({ value: 12 });
    expect(data[4]!.args).toEqual({ blkno: 7 });
  });

  it('shares memory with the controller through attach(), and counts ring overflow', () => {
    const sab = new SharedArrayBuffer(TraceBuffer.bytesFor(4));
    const controller = new TraceBuffer({ pid: 1, tid: 0, buffer: sab });
    const worker = TraceBuffer.attach(sab); // as a worker would, from the posted SAB
    expect([worker.pid, worker.tid, worker.capacity]).toEqual([1, 0, 4]);
    for (let i = 0; i < 6; i++) worker.complete(TN.mmu_update, i * 10, 1, i);
    expect(controller.written).toBe(6);
    expect(controller.count).toBe(4);
    expect(controller.dropped).toBe(2);
    const seen: number[] = [];
    controller.forEach((_k, _n, ts) => seen.push(ts));
    expect(seen).toEqual([20, 30, 40, 50]); // oldest first, two lost
    const w = new TraceWriter();
    expect(w.addBuffer(controller)).toBe(4);
    expect(w.dropped).toBe(2);
    controller.clear();
    expect(worker.count).toBe(0);
  });

  it('rejects malformed records and bad construction', () => {
    const buf = new TraceBuffer({ pid: 1, tid: 0, capacity: 4 });
    buf.event(7 as typeof EV_COMPLETE, 0, 1, 1, 0);
    expect(() => new TraceWriter().addBuffer(buf)).toThrow(/record 0: kind 7/);
    buf.clear();
    buf.event(EV_COMPLETE, TN.vmap, Number.NaN, 1, 0);
    expect(() => new TraceWriter().addBuffer(buf)).toThrow(/ts NaN/);
    buf.clear();
    buf.event(EV_COUNTER, TN.vmap, 1, 0, Number.NaN);
    expect(() => new TraceWriter().addBuffer(buf)).toThrow(/counter value/);
    expect(() => TraceBuffer.bytesFor(0)).toThrow(/integer from 1/);
    expect(() => new TraceBuffer({ pid: 1, tid: 0, capacity: 100, buffer: new ArrayBuffer(64) })).toThrow(
      /bytesFor\(100\)/,
    );
    expect(() => new TraceBuffer({ pid: 1.5, tid: 0 })).toThrow(/pid/);
    expect(() => new NameTable({ names: ['not-well-known'], argNames: ['arg'] })).toThrow(/well-known/);
  });

  it('gives every thread the same ids for the well-known names', () => {
    const a = new NameTable();
    const b = new NameTable();
    for (const [name, id] of Object.entries(TN)) {
      expect(a.name(id)).toBe(name);
      expect(b.id(name)).toBe(id);
    }
    expect(EV_COMPLETE).toBe(0);
    expect(traceNowUs()).toBeGreaterThan(1.6e15);
  });
});

describe('writeTrace', () => {
  it('streams a file that parses back to toJSON()', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pvmmu-trace-'));
    try {
      const w = new TraceWriter();
      w.domain(1, 1);
      for (let i = 0; i < 10000; i++) w.complete(i % 2 ? 'vmap' : 'vunmap', 1, 0, i * 3, 1.5, { i });
      const file = join(dir, 'run.trace.json');
      const r = await writeTrace(file, w);
      const text = readFileSync(file, 'utf8');
      expect(r.bytes).toBe(Buffer.byteLength(text));
      const parsed = JSON.parse(text) as TraceFile;
      assertShape(parsed);
      expect(parsed).toEqual(w.toJSON());
      expect(r.events).toBe(parsed.traceEvents.length);
      expect(parsed.traceEvents.length).toBe(10000 + 4); // + process/thread name and sort index

      const empty = join(dir, 'empty.json');
      await writeTrace(empty, { traceEvents: [] as TraceEvent[], displayTimeUnit: 'ns' });
      expect(JSON.parse(readFileSync(empty, 'utf8'))).toEqual({ traceEvents: [], displayTimeUnit: 'ns' });
      await expect(writeTrace(empty, {} as TraceFile)).rejects.toThrow(TypeError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
