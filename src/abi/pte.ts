/*
 * Page-table entry encode/decode on (lo, hi) word pairs. No BigInt on these paths.
 */
import { PTE_ADDR_HI, PTE_FLAG_NAMES, _PAGE_NX_HI } from './xen.js';

/** Machine frame number of an entry. */
export function pteMfn(lo: number, hi: number): number {
  return (lo >>> 12) + (hi & PTE_ADDR_HI) * 0x100000;
}

/** Low word of an entry mapping `mfn` with `flags` (low flag bits). */
export function pteLo(mfn: number, flags: number): number {
  return (((mfn & 0xfffff) << 12) | (flags & 0xfff)) >>> 0;
}

/** High word of an entry mapping `mfn` (address bits 32..51), plus NX if asked. */
export function pteHi(mfn: number, nx = false): number {
  return ((Math.floor(mfn / 0x100000) & PTE_ADDR_HI) | (nx ? _PAGE_NX_HI : 0)) >>> 0;
}

/** Frame number of a machine address given as (lo, hi), such as mmu_update's ptr. */
export function maddrMfn(lo: number, hi: number): number {
  return (lo >>> 12) + hi * 0x100000;
}

/** Machine address of entry `index` in frame `mfn`, as (lo, hi) for mmu_update's ptr. */
export function entryMaddrLo(mfn: number, index: number, cmd = 0): number {
  return (((mfn & 0xfffff) << 12) | (index << 3) | cmd) >>> 0;
}
export function entryMaddrHi(mfn: number): number {
  return Math.floor(mfn / 0x100000) >>> 0;
}

/** 16 hex digits of a 64-bit (hi, lo) pair, as Xen prints %016lx. */
export function hex64(hi: number, lo: number): string {
  return (hi >>> 0).toString(16).padStart(8, '0') + (lo >>> 0).toString(16).padStart(8, '0');
}

export function toBigInt(lo: number, hi: number): bigint {
  return (BigInt(hi >>> 0) << 32n) | BigInt(lo >>> 0);
}

export function fromBigInt(v: bigint): [lo: number, hi: number] {
  return [Number(v & 0xffffffffn), Number((v >> 32n) & 0xffffffffn)];
}

/** Low flag bits (and NX) as "P|RW|US": the inverse of parseFlags (bit 7 prints as PSE). */
export function formatFlags(flags: number, nx = false): string {
  const names: string[] = [];
  for (const [name, bit] of Object.entries(PTE_FLAG_NAMES)) {
    if (name !== 'PAT' && (flags & bit) !== 0) names.push(name);
  }
  if (nx) names.push('NX');
  return names.join('|');
}

/** Parse "P|RW|US" into low flag bits; returns the bad token when one is unknown. */
export function parseFlags(text: string): { flags: number; nx: boolean } | { bad: string } {
  let flags = 0;
  let nx = false;
  if (text.trim() === '') return { flags, nx };
  for (const raw of text.split('|')) {
    const t = raw.trim().toUpperCase();
    if (t === 'NX') {
      nx = true;
      continue;
    }
    const bit = PTE_FLAG_NAMES[t];
    if (bit === undefined) return { bad: raw };
    flags |= bit;
  }
  return { flags, nx };
}
