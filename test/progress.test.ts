/*
 * src/progress.ts against a fake terminal and a fake clock: silent off a TTY and for short
 * runs, at most one redraw per 100 ms, percentage/rate/ETA text, and the line erased at
 * the end.
 */
import { describe, expect, it } from 'vitest';
import { Progress, formatCount, formatEta } from '../src/progress.js';

function fakeTty(isTTY = true, columns = 100) {
  const writes: string[] = [];
  return { writes, isTTY, columns, write: (s: string) => void writes.push(s) };
}

function clock() {
  let t = 0;
  return { now: () => t, advance: (ms: number) => void (t += ms) };
}

describe('Progress', () => {
  it('prints nothing for a run shorter than minMs, even on a terminal', () => {
    const s = fakeTty();
    const c = clock();
    const p = new Progress({ total: 100, label: 'short', stream: s, now: c.now });
    for (let i = 0; i < 100; i++) {
      c.advance(5); // 500 ms in all
      p.tick();
    }
    p.done();
    expect(s.writes).toEqual([]);
    expect(p.drawn).toBe(false);
  });

  it('prints nothing off a terminal, however long the run', () => {
    const s = fakeTty(false);
    const c = clock();
    const p = new Progress({ total: 10, stream: s, now: c.now });
    for (let i = 0; i < 10; i++) {
      c.advance(1000);
      p.tick();
    }
    p.done();
    expect(s.writes).toEqual([]);
    expect(p.value).toBe(10);
  });

  it('draws after minMs, at most every 100 ms, and erases its line at the end', () => {
    const s = fakeTty();
    const c = clock();
    const p = new Progress({ total: 1000, label: 'xfs-dir lazy', stream: s, now: c.now, minMs: 1000 });
    c.advance(999);
    p.tick(100);
    expect(s.writes).toHaveLength(0);
    c.advance(1); // 1000 ms: first draw
    p.tick(150);
    expect(s.writes).toHaveLength(1);
    for (let i = 0; i < 50; i++) {
      c.advance(1); // 50 ticks within 50 ms: no redraw
      p.tick();
    }
    expect(s.writes).toHaveLength(1);
    c.advance(50); // 100 ms after the first draw
    p.set(500);
    expect(s.writes).toHaveLength(2);
    p.done();
    p.done();
    expect(s.writes).toHaveLength(3);
    expect(s.writes[2]).toBe('\r\x1b[K');
    p.tick(); // ignored after done()
    expect(s.writes).toHaveLength(3);

    // First draw at 1000 ms with 250 done: 25%, 250/s, 3 s to go.
    const first = s.writes[0]!;
    expect(first.startsWith('\r\x1b[K')).toBe(true);
    expect(first).toMatch(/^\r\x1b\[Kxfs-dir lazy \[#{10}-{30}\] {2}25\.0% 250\/1000 250\/s ETA 3s$/);
    // Second: 500 done at 1100 ms.
    expect(s.writes[1]).toMatch(/ 50\.0% 500\/1000 455\/s ETA 2s$/);
    expect(first.length - 4).toBeLessThanOrEqual(99);
  });

  it('fits narrow terminals and handles an unknown total', () => {
    const s = fakeTty(true, 40);
    const c = clock();
    const p = new Progress({ total: 2_000_000, label: 'fuzz', stream: s, now: c.now, minMs: 0 });
    c.advance(2000);
    p.tick(1_000_000);
    const line = s.writes[0]!.slice(4);
    expect(line.length).toBeLessThanOrEqual(39);
    expect(line).toContain('50.0%');

    const u = fakeTty();
    const q = new Progress({ total: 0, stream: u, now: c.now, minMs: 0 });
    c.advance(500);
    q.tick(1234);
    expect(u.writes[0]).toBe('\r\x1b[K1234 2468/s');
  });

  it('formats counts and ETAs for people', () => {
    expect(formatCount(950)).toBe('950');
    expect(formatCount(12.34)).toBe('12.3');
    expect(formatCount(9999)).toBe('9999');
    expect(formatCount(12_345)).toBe('12.3k');
    expect(formatCount(4_500_000)).toBe('4.50M');
    expect(formatEta(7.2)).toBe('8s');
    expect(formatEta(65)).toBe('1m05s');
    expect(formatEta(7380)).toBe('2h03m');
    expect(formatEta(Number.POSITIVE_INFINITY)).toBe('--');
  });

  it('rejects bad arguments with what is accepted', () => {
    expect(() => new Progress({ total: -1 })).toThrow(/integer >= 0/);
    expect(() => new Progress({ total: 1.5 })).toThrow(RangeError);
    expect(() => new Progress({ total: 1, minMs: -5 })).toThrow(/minMs/);
    expect(() => new Progress({ total: 1, stream: {} as never })).toThrow(TypeError);
    const p = new Progress({ total: 10, stream: fakeTty(false) });
    expect(() => p.set(Number.NaN)).toThrow(/finite number >= 0/);
  });
});
