/*
 * The seeded pseudo-random generator every deterministic part of pvmmu draws from.
 *
 * xoshiro128** (Blackman & Vigna) over four 32-bit words, seeded through splitmix32 so
 * that nearby seeds (1, 2, 3...) give unrelated streams. Integers only on the hot path:
 * the state lives in a Uint32Array, a draw allocates nothing.
 *
 * fork(label) derives an independent child stream from this generator's *key* (its seed
 * and fork path) and the label, not from its current position: rng.fork('xfs') is the
 * same stream whether it is called before or after a million draws from rng, so adding a
 * draw in one module never perturbs another module's stream.
 */

const TWO_32 = 0x1_0000_0000;

/** Murmur3's 32-bit finaliser: a bijective avalanche mix of one word. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** FNV-1a over the UTF-16 code units of a string (labels, not data). */
function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function checkSeed(seed: unknown, what: string): number {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) {
    throw new TypeError(`${what}: seed must be a safe integer (e.g. 0, 42, -7, Date.now()), got ${String(seed)}`);
  }
  return seed;
}

export class Rng {
  /** The seed this generator (or its fork root) was built from. */
  readonly seed: number;
  /** xoshiro128** state s0..s3. */
  readonly #s = new Uint32Array(4);
  /** Two-word key identifying this stream: the seed, then each fork label mixed in. */
  #k0 = 0;
  #k1 = 0;

  constructor(seed: number) {
    this.seed = checkSeed(seed, 'new Rng()');
    const lo = seed >>> 0;
    const hi = Math.floor(seed / TWO_32) >>> 0;
    this.#rekey(fmix32(lo ^ 0x6a09e667), fmix32(hi ^ 0xbb67ae85 ^ fmix32(lo)));
  }

  #rekey(k0: number, k1: number): void {
    this.#k0 = k0 >>> 0;
    this.#k1 = k1 >>> 0;
    // splitmix32 over each key word fills half the state (64 bits of key reach the
    // state); xoshiro must not start all-zero.
    const s = this.#s;
    let x = this.#k0;
    for (let i = 0; i < 4; i++) {
      if (i === 2) x = this.#k1 ^ 0xa54ff53a;
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
      z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
      s[i] = z ^ (z >>> 15);
    }
    if ((s[0]! | s[1]! | s[2]! | s[3]!) === 0) s[0] = 1;
  }

  /** The next 32 uniformly distributed bits, as an unsigned integer in [0, 2^32). */
  nextU32(): number {
    const s = this.#s;
    const s0 = s[0]!;
    const s1 = s[1]!;
    const s2 = s[2]!;
    const s3 = s[3]!;
    const m = Math.imul(s1, 5);
    const result = Math.imul((m << 7) | (m >>> 25), 9) >>> 0;
    const t = s1 << 9;
    const n2 = s2 ^ s0;
    const n3 = s3 ^ s1;
    s[1] = s1 ^ n2;
    s[0] = s0 ^ n3;
    s[2] = n2 ^ t;
    s[3] = (n3 << 11) | (n3 >>> 21);
    return result;
  }

  /**
   * A uniform integer in [0, n), without modulo bias. n must be an integer in [1, 2^32].
   */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > TWO_32) {
      throw new RangeError(`Rng.nextInt(n): n must be an integer from 1 to 2^32, got ${n}`);
    }
    // Reject the top (2^32 mod n) values so every residue is equally likely.
    const limit = TWO_32 - (TWO_32 % n);
    let x = this.nextU32();
    while (x >= limit) x = this.nextU32();
    return x % n;
  }

  /** A uniform float in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const hi = this.nextU32() >>> 5; // 27 bits
    const lo = this.nextU32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /**
   * An independent child generator for one consumer ("xfs", "vcpu3", 7). Deterministic in
   * (this stream's key, label) only: the same label always gives the same stream, and forking
   * neither reads nor advances this generator's position.
   */
  fork(label: string | number): Rng {
    let h: number;
    if (typeof label === 'string') h = hashString(label);
    else if (typeof label === 'number' && Number.isSafeInteger(label)) {
      h = fmix32((label >>> 0) ^ fmix32((Math.floor(label / TWO_32) >>> 0) ^ 0x5bd1e995));
    } else {
      throw new TypeError(`Rng.fork(label): label must be a string or a safe integer, got ${String(label)}`);
    }
    const child = new Rng(this.seed);
    child.#rekey(fmix32(this.#k0 ^ h ^ 0x3c6ef372), fmix32(this.#k1 + Math.imul(h, 0x9e3779b9) + 1));
    return child;
  }
}
