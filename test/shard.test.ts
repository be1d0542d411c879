import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseShard, shardOf } from '../src/shard.js';

describe('--shard i/n', () => {
  it('shards are disjoint and together cover every job exactly once, in order', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 200 }), fc.integer({ min: 1, max: 17 }), (jobs, n) => {
        const all = Array.from({ length: jobs }, (_, k) => k);
        const seen = new Array<number>(jobs).fill(0);
        for (let i = 1; i <= n; i++) {
          const s = shardOf(all, { index: i, count: n });
          expect(s).toEqual([...s].sort((a, b) => a - b));
          for (const k of s) seen[k]!++;
          expect(s.length === Math.floor(jobs / n) || s.length === Math.ceil(jobs / n)).toBe(true);
        }
        expect(seen.every((c) => c === 1)).toBe(true);
      }),
    );
  });
  it('parses i/n and refuses what is not a shard, naming the form', () => {
    expect(parseShard('2/4')).toEqual({ index: 2, count: 4 });
    expect(parseShard('1/1')).toEqual({ index: 1, count: 1 });
    for (const bad of ['0/4', '5/4', '1/0', '2', 'a/b', '-1/2', '1/2/3']) {
      expect(() => parseShard(bad)).toThrow(/--shard/);
    }
  });
});
