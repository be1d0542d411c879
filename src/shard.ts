/*
 * --shard i/n, as vitest and Playwright spell it: shard i (1-based) of n takes every job
 * whose index k has k mod n == i - 1. The slices are disjoint, together they are the whole
 * list, and each is a fixed function of (list, i, n): any CI matrix or batch engine can
 * run the shards anywhere, in any order, and their outputs concatenate to one full run.
 * Round-robin rather than contiguous ranges, so that expensive neighbours (one seed's
 * strategies) spread over the shards.
 */

export interface Shard {
  /** 1-based. */
  index: number;
  count: number;
}

/** The whole run: shard 1 of 1. */
export const ALL: Shard = Object.freeze({ index: 1, count: 1 });

/** Parse "i/n" (1 <= i <= n); throws RangeError naming the option and the accepted form. */
export function parseShard(text: string, option = '--shard'): Shard {
  const m = /^(\d+)\/(\d+)$/.exec(text.trim());
  if (m === null) throw new RangeError(`${option} takes i/n (e.g. 2/4), got "${text}"`);
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (count < 1 || index < 1 || index > count || !Number.isSafeInteger(count)) {
    throw new RangeError(`${option} ${text}: need 1 <= i <= n, got i=${index}, n=${count}`);
  }
  return { index, count };
}

/** The jobs of `all` that belong to `shard`, in their original order. */
export function shardOf<T>(all: readonly T[], shard: Shard): T[] {
  const out: T[] = [];
  for (let k = shard.index - 1; k < all.length; k += shard.count) out.push(all[k]!);
  return out;
}
