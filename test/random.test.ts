/*
 * src/random.ts: the seeded Rng is reproducible, stays in range, is roughly uniform, and
 * fork(label) gives independent, position-independent child streams.
 */
import { describe, expect, it } from 'vitest';
import { Rng } from '../guest/lib/random.js';

function draws(r: Rng, n: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(r.nextU32());
  return out;
}

describe('Rng', () => {
  it('gives the same stream for the same seed and different streams for nearby seeds', () => {
    expect(draws(new Rng(42), 100)).toEqual(draws(new Rng(42), 100));
    const a = draws(new Rng(1), 50);
    const b = draws(new Rng(2), 50);
    expect(a).not.toEqual(b);
    // Unrelated streams: almost no coincident values.
    expect(a.filter((x, i) => x === b[i]).length).toBe(0);
  });

  it('is pinned: known seeds yield known values (a change here changes every recorded run)', () => {
    expect(draws(new Rng(0), 3)).toEqual([1855349536, 288090121, 506647143]);
    expect(draws(new Rng(42).fork('xfs'), 2)).toEqual([145883668, 2831993519]);
  });

  it('accepts negative and large safe-integer seeds, distinguishing the high word', () => {
    expect(draws(new Rng(-1), 5)).toEqual(draws(new Rng(-1), 5));
    expect(draws(new Rng(2 ** 32), 5)).not.toEqual(draws(new Rng(0), 5));
    expect(draws(new Rng(Number.MAX_SAFE_INTEGER), 5)).toEqual(draws(new Rng(Number.MAX_SAFE_INTEGER), 5));
  });

  it('nextU32, nextInt and nextFloat stay in range', () => {
    const r = new Rng(7);
    let bad = 0;
    let fmin = 1;
    let fmax = 0;
    for (let i = 0; i < 20000; i++) {
      const u = r.nextU32();
      if (u >>> 0 !== u) bad++;
      const n = 1 + (i % 37);
      const k = r.nextInt(n);
      if (!Number.isInteger(k) || k < 0 || k >= n) bad++;
      const f = r.nextFloat();
      if (!(f >= 0 && f < 1)) bad++;
      fmin = Math.min(fmin, f);
      fmax = Math.max(fmax, f);
    }
    expect(bad).toBe(0);
    expect(fmin).toBeLessThan(0.001);
    expect(fmax).toBeGreaterThan(0.999);
    expect(r.nextInt(1)).toBe(0);
    const big = r.nextInt(2 ** 32);
    expect(big >= 0 && big < 2 ** 32).toBe(true);
  });

  it('nextInt is roughly uniform (chi-square over 10 buckets)', () => {
    const r = new Rng(12345);
    const buckets = new Array<number>(10).fill(0);
    const N = 100000;
    for (let i = 0; i < N; i++) buckets[r.nextInt(10)]!++;
    const exp = N / 10;
    const chi2 = buckets.reduce((s, o) => s + (o - exp) ** 2 / exp, 0);
    expect(chi2).toBeLessThan(30); // 9 d.o.f.: p < 0.001 at 27.9
  });

  it('fork(label) is deterministic, independent of the parent position, and label-specific', () => {
    const p = new Rng(99);
    const early = draws(p.fork('xfs'), 20);
    draws(p, 1000);
    const late = draws(p.fork('xfs'), 20);
    expect(late).toEqual(early);
    expect(draws(new Rng(99).fork('xfs'), 20)).toEqual(early);
    expect(draws(new Rng(99).fork('vcpu0'), 20)).not.toEqual(early);
    expect(draws(new Rng(100).fork('xfs'), 20)).not.toEqual(early);
    expect(draws(new Rng(99).fork(3), 20)).not.toEqual(draws(new Rng(99).fork(4), 20));
    // Forking does not move the parent.
    const q1 = new Rng(5);
    const q2 = new Rng(5);
    q1.fork('a');
    expect(draws(q1, 10)).toEqual(draws(q2, 10));
    // Nested forks depend on the path.
    expect(draws(new Rng(1).fork('a').fork('b'), 5)).not.toEqual(draws(new Rng(1).fork('b').fork('a'), 5));
    // A child differs from its parent.
    expect(draws(new Rng(1).fork('a'), 5)).not.toEqual(draws(new Rng(1), 5));
  });

  it('rejects bad arguments with what is accepted', () => {
    expect(() => new Rng(1.5)).toThrow(TypeError);
    expect(() => new Rng(Number.NaN)).toThrow(/safe integer/);
    expect(() => new Rng('1' as unknown as number)).toThrow(TypeError);
    const r = new Rng(1);
    expect(() => r.nextInt(0)).toThrow(RangeError);
    expect(() => r.nextInt(2.5)).toThrow(/integer from 1 to 2\^32/);
    expect(() => r.nextInt(2 ** 32 + 1)).toThrow(RangeError);
    expect(() => r.fork({} as unknown as string)).toThrow(TypeError);
  });
});
