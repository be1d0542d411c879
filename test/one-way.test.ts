/*
 * One way for each thing (issue 8), checked on the source of src/, hypervisor/ and guest/:
 * the PTE decode is src/abi/pte.ts's pteMfn, a frame's words are FRAME_WORDS, SCHEDOP_yield
 * and the errno values are defined once in src/abi/xen.ts, and class privacy is #private.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(path.join(ROOT, dir))) {
    const rel = path.join(dir, name);
    if (statSync(path.join(ROOT, rel)).isDirectory()) out.push(...sources(rel));
    else if (name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

const FILES = ['src', 'hypervisor', 'guest'].flatMap(sources);

/** Every line of the tree matching `re`, as "file:line: text", except in the files `except`. */
function linesMatching(re: RegExp, except: readonly string[] = []): string[] {
  return FILES.filter((f) => !except.includes(f)).flatMap((f) =>
    readFileSync(path.join(ROOT, f), 'utf8')
      .split('\n')
      .flatMap((text, i) => (re.test(text) ? [`${f}:${i + 1}: ${text.trim()}`] : [])),
  );
}

/** The PTE decode written out: (lo >>> 12) + (hi & ...) * 2^20. */
const PTE_DECODE = />>>\s*12\)?\s*\+.*\*\s*(0x100000|2\s*\*\*\s*20)\b/;

describe('one way for each thing (issue 8)', () => {
  it('decodes a PTE only through pteMfn', () => {
    expect(linesMatching(PTE_DECODE, ['src/abi/pte.ts'])).toEqual([]);
  });

  it('indexes a frame by FRAME_WORDS, not by a bare 1024', () => {
    expect(linesMatching(/\[[^\]]*\*\s*1024\b(?!\s*\*)/)).toEqual([]);
  });

  it('defines SCHEDOP_yield and the errno values once, in src/abi/xen.ts', () => {
    expect(linesMatching(/\bconst SCHEDOP_\w+\s*=/, ['src/abi/xen.ts'])).toEqual([]);
    expect(linesMatching(/\bconst E[A-Z]+\s*=\s*\d/, ['src/abi/xen.ts'])).toEqual([]);
  });

  it('keeps class members private with #, not with TypeScript private/protected', () => {
    // JavaScript has no private constructor: `private constructor` is the one TS form left.
    expect(linesMatching(/^\s*(private|protected)\s+(?!constructor\b)/)).toEqual([]);
  });

  it('sees what it looks for (each pattern matches its own definition site)', () => {
    expect(linesMatching(/\bconst SCHEDOP_yield\s*=/)).toEqual([
      expect.stringMatching(/^src\/abi\/xen\.ts:\d+: export const SCHEDOP_yield = 0;/),
    ]);
    expect(PTE_DECODE.test('return (lo >>> 12) + (hi & PTE_ADDR_HI) * 0x100000;')).toBe(true);
    expect(/\[[^\]]*\*\s*1024\b(?!\s*\*)/.test('m[table * 1024 + 2 * i]')).toBe(true);
    expect(linesMatching(/^\s*private constructor\b/).length).toBeGreaterThan(0);
  });
});
