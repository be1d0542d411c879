/*
 * What the mutant-killing rule tests (mutants.test.ts, mutants-mm.test.ts) share: short
 * PTE flag names, a table frame ready to pin, and raw access to a vCPU's data area, as a
 * hostile guest would lay its arguments out.
 */
import { expect } from 'vitest';
import { __HYPERVISOR_mmuext_op, _PAGE_ACCESSED, _PAGE_PRESENT, _PAGE_RW } from '../../src/abi/xen.js';
import { GUEST_HANDLE_NULL, S_HEADER_WORDS, slotBase } from '../../src/abi/layout.js';
import type { Dom, XenBox } from '../helpers/xenbox.js';

export const P = _PAGE_PRESENT;
export const RW = _PAGE_RW;
export const A = _PAGE_ACCESSED;
/** %x without the 0x, as the log lines print mfns. */
export const hx = (n: number) => n.toString(16);
/** A pae vmalloc address the tests hook an L1 under. */
export const VMALLOC = 0xf0000000;

/** A frame of `a` filled by the guest with `entries`, made read-only: a table ready to pin at any level. */
export function tableWith(box: XenBox, a: Dom, entries: Array<[number, number, number]>) {
  const t = a.alloc();
  for (const [i, lo, hi] of entries) a.poke(t.mfn, i, lo, hi);
  expect(a.makeReadOnly(t.pfn)).toBe(0);
  box.log();
  return t;
}

/** Transport index of word `at` of vCPU `v`'s data area. */
export function dataWord(a: Dom, at: number, v = 0): number {
  return slotBase(a.info.slots[v]!) + S_HEADER_WORDS + at;
}

/** One mmuext op from raw words (cmd, 0, arg1 lo, hi, arg2 lo, hi) at data word 200. */
export function rawMmuext(box: XenBox, a: Dom, words: number[], pdone = GUEST_HANDLE_NULL): number {
  box.t.set(words, dataWord(a, 200));
  return a.rawHypercall(__HYPERVISOR_mmuext_op, [200, 1, pdone, 0x7ff0]);
}
