/*
 * The vmalloc space's one SharedArrayBuffer: its header words and its column table. The
 * three parts of the vmalloc space (vmap_area.ts, vmap_block.ts and the vmalloc.ts
 * facade) all work on this buffer; any vCPU worker can attach it.
 *
 * Invariants:
 *   - The header words below are numbered in order, without gaps, grouped as: the locks,
 *     the shared state of the area allocator, the geometry (written once by create, read
 *     by attach), and the counters. A new word takes the next free number.
 *   - Header words that change after create are read and written with Atomics or under
 *     the lock that guards them (named beside each word).
 *   - The columns are a pure function of VmallocGeometry (guest/lib/shared_columns.ts).
 */
import { type Columns, f64, i32, u8 } from '../lib/shared_columns.js';

/* ---------------------------------------------------------- Int32 header words */
/* locks (guest/mm/spinlock.ts); exported for tests */
export const H_VMAP_AREA_LOCK = 0;
export const H_PURGE_LOCK = 1;
/* the area allocator (vmap_area.ts) */
/** vmap_lazy_nr: pages of vmalloc space in lazy areas (Atomics). */
export const H_LAZY_NR = 2;
/** Areas in the address list (vmap_area_lock). */
export const H_NR_AREAS = 3;
/** Head of the free-slot list, -1 when full (vmap_area_lock). */
export const H_FREE_SLOT = 4;
/* geometry */
export const H_MAX_AREAS = 5;
export const H_POOL_PAGES = 6;
/** STRATEGY_LAZY or STRATEGY_EAGER (Atomics; setStrategy changes it). */
export const H_STRATEGY = 7;
export const H_NUM_CPUS = 8;
/** lazy_max_pages() (Atomics; setLazyMaxPages changes it). */
export const H_LAZY_MAX = 9;
export const H_BLOCK_PAGES = 10;
export const H_NR_BLOCKS = 11;
export const H_VA_BITS = 12;
/* the area allocator's lists (vmap_area_lock) */
/** First area in address order, -1 when none. */
export const H_HEAD = 13;
/** free_vmap_cache: the area the last full-window allocation made, -1 when none. */
export const H_CACHE_SLOT = 14;
/** The lazy list: areas marked VM_LAZY_FREE, newest first, -1 when empty. */
export const H_LAZY_HEAD = 15;
/* counters (Atomics) */
export const C_VMAPS = 16;
export const C_VUNMAPS = 17;
export const C_VMALLOCS = 18;
export const C_VFREES = 19;
export const C_PURGES = 20;
export const C_PURGE_SKIPPED = 21;
export const C_FLUSHES = 22;
export const C_LAZY_PAGES = 23;
export const C_LAZY_PEAK = 24;
export const C_REF_PAGES = 25;
export const C_ALLOC_RETRIES = 26;
export const C_ALLOC_FAILURES = 27;
export const C_MISUSE = 28;
export const C_RAM_MAPS = 29;
export const C_RAM_UNMAPS = 30;
export const C_BLOCKS_NEW = 31;
export const C_BLOCKS_FREED = 32;
export const C_UNMAP_ALIASES = 33;
export const C_PTES_SET = 34;
export const C_PTES_CLEARED = 35;
/** 256 bytes: the Float64 header that follows stays 8-aligned. */
export const HDR_WORDS = 64;

/* -------------------------------------------------------- Float64 header words */
export const F_VMALLOC_START = 0;
export const F_VMALLOC_END = 1;
export const F_BLOCK_IDX_BASE = 2;
/** cached_hole_size: no hole below the cache's end is larger than this (bytes). */
export const F_CACHED_HOLE = 3;
export const HDR_F64 = 8;

/** H_STRATEGY values. */
export const STRATEGY_LAZY = 0;
export const STRATEGY_EAGER = 1;

export interface VmallocGeometry {
  maxAreas: number;
  poolPages: number;
  nrBlocks: number;
  /** VMAP_BBMAP_BITS. */
  blockPages: number;
  /** Int32 words of one block's bitmap. */
  blockWords: number;
  numCpus: number;
}

/** The column table: the headers, the area columns, the pool, then the vmap blocks. */
export function vmallocColumns(g: VmallocGeometry) {
  const a = g.maxAreas;
  const b = g.nrBlocks;
  return {
    hdr: i32(HDR_WORDS),
    f64: f64(HDR_F64),
    /* vmap_area (vmap_area.ts), one slot per area */
    aStart: f64(a),
    aEnd: f64(a),
    aFlags: i32(a),
    aVmFlags: i32(a),
    aNrPages: i32(a),
    aProt: i32(a),
    /** Address order (doubly linked); a free slot's aNext links the free-slot list. */
    aNext: i32(a),
    aPrev: i32(a),
    aLazyNext: i32(a),
    /* per page of the window */
    /** The pfn this layer mapped there, -1 when none (the shadow of the vmalloc L1 entries). */
    pool: i32(g.poolPages),
    /** The slot of the area starting there, else -1. */
    areaAt: i32(g.poolPages),
    /* vmap_block (vmap_block.ts), one slot per block-aligned window position */
    vbState: i32(b),
    vbCpu: i32(b),
    vbFree: i32(b),
    vbDirty: i32(b),
    vbNext: i32(b),
    vbPrev: i32(b),
    vbOnList: i32(b),
    vbLock: i32(b),
    allocMap: i32(b * g.blockWords),
    dirtyMap: i32(b * g.blockWords),
    vbqHead: i32(g.numCpus),
    vbqLock: i32(g.numCpus),
    /** Per block page: 1 + order at the first page of an allocated region, else 0. */
    regionMap: u8(b * g.blockPages),
  };
}

export type VmallocColumns = Columns<ReturnType<typeof vmallocColumns>>;

/** The geometry as create wrote it in the header. */
export function readGeometry(hdr: Int32Array): VmallocGeometry {
  return {
    maxAreas: hdr[H_MAX_AREAS]!,
    poolPages: hdr[H_POOL_PAGES]!,
    nrBlocks: hdr[H_NR_BLOCKS]!,
    blockPages: hdr[H_BLOCK_PAGES]!,
    blockWords: Math.ceil(hdr[H_BLOCK_PAGES]! / 32),
    numCpus: hdr[H_NUM_CPUS]!,
  };
}
