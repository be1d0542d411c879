/*
 * fs/xfs/linux-2.6/xfs_buf.c as Linux 2.6.23 had it: the XFS metadata buffer cache, with
 * its one job here modelled in detail -- how a multi-page buffer gets a virtually contiguous
 * kernel address (vmap) and how that address is given back (free_address, purge_addresses).
 * That hand-back is the October 2007 Xen/XFS stray RW mapping bug
 * (shared/seeds/xen-xfs-stray-rw-mappings.txt), and the four ways out of it proposed in that
 * thread are the four `strategy` values.
 *
 * ----------------------------------------------------------------------------------------
 * Invariants
 * ----------------------------------------------------------------------------------------
 * A buffer (xfs_buf_t) is a slot in typed-array columns; its handle is the slot number.
 *   free      b_hold = -1; on the free-slot list (linked through the hash link column).
 *   held      b_hold > 0: a reader holds it, or the delayed-write queue does (one hold).
 *   cached    b_hold = 0, hashed, on the LRU (oldest at the head). Only these are evicted.
 * A hashed buffer (XBF_HASHED) is a directory block: b_bn >= 0, on exactly one hash chain,
 * and no other hashed buffer has its b_bn. A buffer from xfsBufGetNoaddr (the log's;
 * 2.6.23's xfs_buf_get_noaddr) is never hashed and is freed at its last release, as is a
 * stale one (XBF_STALE: its contents failed verification and must be read again).
 * Every live buffer owns b_page_count pages, one reference each (taken by allocPage), and
 * is XBF_MAPPED: b_addr is page_address() of its only page, or a vmap of all its pages.
 *
 * Freeing a buffer (xfsBufFree) is: give the address back (freeAddress, multi-page buffers
 * only), THEN drop every page reference at once. The model has no blockdev page cache, so
 * the buffer's reference is the page's last and the pages go straight to this vCPU's hot
 * list -- 2.6.23 dropped the page-cache reference there and the VM could reclaim the pages
 * at any time after ("nothing stopping them from being reclaimed before they are unmapped",
 * David Chinner, 2007-10-14 23:33); here the cache bound and drop caches play the VM.
 *
 * The a_list (2.6.23's a_list / as_list_len): addresses of freed buffers whose vmap is
 * still in place. An entry holds the va, the block and slot it came from, its pfns and
 * whether vmapPages made it. Entries are made by freeAddress (a kmalloc(GFP_NOWAIT) node
 * each, kfree'd at the purge; when the node cannot be had, the address is unmapped at once)
 * and all removed together by purgeAddresses, which unmaps each. Per strategy:
 *   'lazy'         an entry's pages were FREED when the entry was made, its PTEs stay until
 *                  the purge: each of its pages is a free (or reallocated!) page with a
 *                  writable kernel alias. This is the bug.
 *   'vmap-pages'   same list, but every page of an entry still holds the vmap's reference
 *                  (vmapPages), dropped by vunmapPages only after the PTEs are cleared:
 *                  an aliased page is never free.
 *   'eager', 'unmap-aliases'   no a_list at all: freeAddress unmaps at once.
 * purgeAddresses runs: before a vmap when the list is longer than purgeThreshold (64); on
 * every xfsbufd wake-up (xfsBufTimer, every xfs_buf_timer ticks of virtual time, HZ = 100);
 * from the shrinker, which wakes xfsbufd.
 *
 * Which vmap layer goes with which strategy: VMALLOC_STRATEGY_FOR in guest/kernel/config.ts.
 *
 * Model simplifications (each is a decision, not an oversight):
 *  - xfsbufd is not a thread: its wake-up runs inline on the calling vCPU (the timer is
 *    polled at every buffer lookup and by xfsBufTimer; the shrinker runs it directly).
 *  - The state of one mount lives in this object, driven from one vCPU (deps.cpu); the
 *    columns are plain typed arrays, not shared memory.
 *  - The a_list node's two pointers live in the entry columns; the kmalloc'd object stands
 *    for their memory, so the allocation (and its GFP_NOWAIT failure) is real.
 *  - The "disk" is a DirectoryImage (backing.ts); a delayed write is checked, not stored.
 */
import { EINVAL, ENOMEM, PAGE_SIZE, EIO, EUCLEAN } from '../../../src/abi/xen.js';
import { HZ } from '../../kernel/clock.js';
import { GFP_NOFS, GFP_NOWAIT } from '../../mm/page_alloc.js';
import type { DirectoryImage } from './backing.js';

/* ------------------------------------------------------------------ the deps */

/**
 * What the buffer cache needs from the guest kernel. The kernel implements it on a real
 * vCPU under the hypervisor; the tests implement it in-process over the real page
 * allocator, slab and vmalloc layer on a KernelPageTablesRef.
 */
export interface XfsDeps {
  cpu: number; // this vCPU
  allocPage(gfp: number): number; // pfn or -1 (GFP_NOFS buffer pages, lowmem)
  freePage(pfn: number): void; // __free_page -> free_hot_cold_page (HOT end)
  getPage(pfn: number): void;
  putPage(pfn: number): void;
  kmalloc(size: number, gfp: number): number; // 0 = NULL (GFP_NOWAIT may fail)
  kfree(addr: number): void;
  vmap(pfns: Int32Array, count: number): number; // va or negative errno
  vunmap(va: number): void;
  vmapPages(pfns: Int32Array, count: number): number; // Dave Chinner's: takes a ref on every page
  vunmapPages(va: number): void; // refs dropped after the PTEs are really gone
  vmUnmapAliases(): void;
  pageAddress(pfn: number): number; // direct-map kernel VA of a lowmem page
  writeBytes(va: number, src: Uint8Array, off: number, len: number): number; // through the MMU; 0 or -1 fault
  readBytes(va: number, dst: Uint8Array, off: number, len: number): number;
  now(): number; // virtual time in ticks (HZ = 100)
  registerShrinker(fn: (nr: number) => number): void;
  report(line: string): void; // kernel-style message (printk)
  trace?(name: string, arg: number): void;
}

/* ----------------------------------------------------------------- constants */

/** EFSCORRUPTED, XFS's name for EUCLEAN: a block failed verification. */
export const EFSCORRUPTED = EUCLEAN;
/** Largest buffer, in pages: a 64 KiB directory block with 4 KiB pages. */
export const XFS_BUF_MAX_PAGES = 16;
/** free_address's batch: a vmap purges first when the a_list is longer than this. */
export const XFS_BUF_PURGE_THRESHOLD = 64;
/** xfs_buf_timer_centisecs (fs.xfs.xfsbufd_centisecs): default, min, max, in ticks. */
export const XFS_BUF_TIMER_DEFAULT = 1 * HZ;
export const XFS_BUF_TIMER_MIN = HZ / 2;
export const XFS_BUF_TIMER_MAX = 30 * HZ;
/** xfs_buf_age_centisecs (fs.xfs.age_buffer_centisecs): default, min, max, in ticks. */
export const XFS_BUF_AGE_DEFAULT = 15 * HZ;
export const XFS_BUF_AGE_MIN = 1 * HZ;
export const XFS_BUF_AGE_MAX = 7200 * HZ;
/** sizeof(a_list_t): two pointers (8 bytes on i386, 16 on x86_64; kmalloc-32 either way). */
export const A_LIST_NODE_SIZE = 16;

/* b_flags (2.6.23's xfs_buf_flags_t values where Linux has the flag). */
export const XBF_READ = 1 << 0;
export const XBF_WRITE = 1 << 1;
export const XBF_MAPPED = 1 << 2;
export const XBF_DONE = 1 << 5;
export const XBF_DELWRI = 1 << 6;
export const XBF_STALE = 1 << 7;
/** Model: on a hash chain (a directory block). */
export const XBF_HASHED = 1 << 24;
/** Model: xfs_buf_get_noaddr buffer (never hashed; freed at its last release). */
export const XBF_NOADDR = 1 << 25;
/** Model: on the LRU of cached (unheld) buffers. */
export const XBF_LRU = 1 << 26;
/** Model: b_addr came from vmapPages (give it back with vunmapPages). */
export const XBF_VMAP_PAGES = 1 << 27;

/**
 * The four answers of the seed thread. Each keeps the buffer cache identical and differs
 * only in how a multi-page buffer's address is mapped and given back.
 *
 * 'lazy' -- 2.6.23 as shipped. free_address queues the address on the a_list and the pages
 *   go back at once; the list is purged every 64th vmap, on each xfsbufd run and from the
 *   shrinker. Dave Chinner explained the batching (2007-10-14 22:56): vmap/vunmap do not
 *   scale (each vunmap is a global TLB flush), so unmaps are deferred and done in bulk.
 *
 * 'eager' -- Jeremy Fitzhardinge's test patch (2007-10-12 17:08), merged as the CONFIG_XEN
 *   workaround: free_address unmaps immediately and returns; with it the failure to pin
 *   went away. Dave Chinner (2007-10-15 04:11): fine until there is a proper vmap cache.
 *
 * 'vmap-pages' -- Dave Chinner's "Allow lazy unmapping by taking extra page references",
 *   first sketched 2007-10-22 22:32 after Andi Kleen's objection, posted 2007-10-23 07:04
 *   (V1, with a release callback), V2 2007-10-24 04:36 (plain put_page), V3 2007-10-24
 *   21:48 (rebased). Mapping takes a reference per page and the unmap drops them after the
 *   PTEs are gone, so the batching stays but a lazily mapped page cannot be reused.
 *
 * 'unmap-aliases' -- Nick Piggin's direction (2007-10-15 04:15 and 07:26): a generic lazy
 *   vunmap inside the vmalloc layer replacing XFS's own list, plus one call that shoots
 *   down every lazy alias, which Xen makes before pinning a page table (2.6.28's
 *   vm_unmap_aliases). XFS here just vunmaps; that call is not XFS's.
 */
export type XfsBufStrategy = 'lazy' | 'eager' | 'vmap-pages' | 'unmap-aliases';
export const XFS_BUF_STRATEGIES: readonly XfsBufStrategy[] = ['lazy', 'eager', 'vmap-pages', 'unmap-aliases'];

/** Who asked for a purge of the a_list. */
export type PurgeTrigger = 'threshold' | 'xfsbufd' | 'shrinker' | 'explicit';

export interface XfsBufOptions {
  /** Default 'lazy' (2.6.23). */
  strategy?: XfsBufStrategy;
  /** The mounted directory: what xfsBufRead reads. Default none (log-only use). */
  image?: DirectoryImage | null;
  /** Unheld buffers kept cached (LRU beyond it is freed). 0: free at the last release. Default 64. */
  maxBuffers?: number;
  /** Buffer objects in all (held + cached). Default maxBuffers + 256. */
  maxSlots?: number;
  /** as_list_len above which a vmap purges first. Default 64. */
  purgeThreshold?: number;
  /** xfsbufd period, ticks (xfs_buf_timer: 50..3000, default 100 = 1 s). */
  xfsbufdIntervalTicks?: number;
  /** Age at which a delayed-write buffer is flushed, ticks (xfs_buf_age: 100..720000, default 1500). */
  xfsBufAgeTicks?: number;
  /** Verify cached blocks again on every lookup (default true). */
  verifyOnHit?: boolean;
  /** Device name in messages. Default 'xvda1'. */
  fsname?: string;
  /** The vmap layer's statistics, for stats().vmallocLazyPages (e.g. () => vm.stats()). */
  vmallocStats?: () => { lazyPages: number };
}

export interface XfsPurgeCounts {
  threshold: number;
  xfsbufd: number;
  shrinker: number;
  explicit: number;
  /** Not purges: freeAddress could not get a node (GFP_NOWAIT) and unmapped at once. */
  nomem: number;
}

export interface XfsBufStats {
  strategy: XfsBufStrategy;
  /** xfsBufRead calls that found a valid block number. */
  lookups: number;
  /** Blocks read from the disk (cache misses that allocated a buffer). */
  buffersRead: number;
  cacheHits: number;
  /** vmap / vmapPages calls that succeeded. */
  vmaps: number;
  /** Unmaps done at once (eager, unmap-aliases, nomem). */
  vunmapsDirect: number;
  /** Unmaps done by purgeAddresses. */
  vunmapsPurged: number;
  /** purgeAddresses calls that found entries, by trigger. */
  purges: XfsPurgeCounts;
  aListLength: number;
  aListPeak: number;
  /** Pages mapped by a_list entries now (free pages under 'lazy', referenced under 'vmap-pages'). */
  aListPages: number;
  /** Pages the vmap layer has lazily unmapped but not cleared (from options.vmallocStats), or null. */
  vmallocLazyPages: number | null;
  /** aListPages + vmallocLazyPages: every page reachable through a dead mapping. */
  lazyAliasPages: number;
  /** Blocks that failed verification (and faults through b_addr). */
  dataErrors: number;
  buffers: number;
  heldBuffers: number;
  cachedBuffers: number;
  delwriBuffers: number;
  /** Pages owned by live buffers. */
  bufferPages: number;
  evictions: number;
  dropped: number;
  xfsbufdWakeups: number;
  shrinkerCalls: number;
  delwriFlushed: number;
  /** Buffers that could not get pages, a mapping or a slot. */
  allocFailures: number;
  misuse: number;
}

export interface XfsStrayAlias {
  /** The page's address inside the dead mapping. */
  va: number;
  /** The mapping's start (what purgeAddresses will unmap). */
  areaVa: number;
  /** Block number of the buffer that was freed (-1: an uncached log buffer). */
  bn: number;
  /** Slot of the freed buffer (may have been reused since). */
  buf: number;
  /** Page index inside the buffer. */
  index: number;
  /** The mapping still holds a reference on the page (vmap-pages). */
  holdsRef: boolean;
}

export interface XfsAListEntry {
  va: number;
  bn: number;
  buf: number;
  pfns: number[];
  holdsRef: boolean;
}

export interface XfsDirScanResult {
  blocks: number;
  entries: number;
  /** Blocks that could not be read or failed verification during this scan. */
  errors: number;
  /** Of the blocks, how many came from the cache. */
  hits: number;
}

const MESSAGE_CAPACITY = 256;
const NOOP_TRACE = (_name: string, _arg: number): void => {};
const MAXP = XFS_BUF_MAX_PAGES;

function intOption(v: unknown, lo: number, hi: number, what: string, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw new RangeError(`XfsBufCache: ${what} must be an integer in ${lo}..${hi}, got ${String(v)}`);
  }
  return v;
}

const hex = (v: number): string => (v < 0 ? String(v) : `0x${v.toString(16)}`);

export class XfsBufCache {
  readonly strategy: XfsBufStrategy;
  readonly image: DirectoryImage | null;
  readonly maxBuffers: number;
  readonly maxSlots: number;
  readonly purgeThreshold: number;
  readonly xfsbufdInterval: number;
  readonly xfsBufAge: number;
  readonly verifyOnHit: boolean;
  readonly fsname: string;
  /** Recent kernel-style messages (bounded); every one also went to deps.report. */
  readonly messages: string[] = [];

  readonly #deps: XfsDeps;
  readonly #trace: (name: string, arg: number) => void;
  readonly #vmallocStats: (() => { lazyPages: number }) | null;
  /** The strategy keeps an a_list ('lazy', 'vmap-pages'). */
  readonly #batched: boolean;
  readonly #useVmapPages: boolean;

  /* buffer columns */
  readonly #bBn: Int32Array;
  readonly #bCount: Int32Array;
  readonly #bPageCount: Int32Array;
  readonly #bPages: Int32Array;
  readonly #bAddr: Float64Array;
  readonly #bFlags: Int32Array;
  readonly #bHold: Int32Array;
  /** Hash chain link; for a free slot, the free-slot list link. */
  readonly #bHashNext: Int32Array;
  /** LRU links (cached buffers) or delayed-write queue links (queued ones): never both. */
  readonly #bNext: Int32Array;
  readonly #bPrev: Int32Array;
  readonly #bQueueTime: Float64Array;
  readonly #hashHead: Int32Array;
  readonly #hashMask: number;
  #freeSlot = -1;
  #nrBuffers = 0;
  #lruHead = -1;
  #lruTail = -1;
  #nrLru = 0;
  #dwHead = -1;
  #dwTail = -1;
  #nrDelwri = 0;
  #bufferPages = 0;

  /* a_list columns */
  readonly #alCap: number;
  readonly #alVa: Float64Array;
  readonly #alNode: Float64Array;
  readonly #alNext: Int32Array;
  readonly #alBn: Int32Array;
  readonly #alBuf: Int32Array;
  readonly #alPageCount: Int32Array;
  readonly #alPages: Int32Array;
  readonly #alRefs: Uint8Array;
  #alHead = -1;
  #alFree = -1;
  #asListLen = 0;
  #aListPeak = 0;
  #aListPages = 0;

  /* scratch */
  readonly #pfns = new Int32Array(MAXP);
  readonly #io = new Uint8Array(MAXP * PAGE_SIZE);
  readonly #hdr = new Uint8Array(16);

  #nextXfsbufd: number;

  /* counters */
  #lookups = 0;
  #reads = 0;
  #hits = 0;
  #vmaps = 0;
  #vunmapsDirect = 0;
  #vunmapsPurged = 0;
  readonly #purges: XfsPurgeCounts = { threshold: 0, xfsbufd: 0, shrinker: 0, explicit: 0, nomem: 0 };
  #dataErrors = 0;
  #evictions = 0;
  #dropped = 0;
  #xfsbufdWakeups = 0;
  #shrinkerCalls = 0;
  #delwriFlushed = 0;
  #allocFailures = 0;
  #misuseCount = 0;

  constructor(deps: XfsDeps, opts: XfsBufOptions = {}) {
    if (deps === null || typeof deps !== 'object') throw new TypeError('XfsBufCache: deps must be an XfsDeps object');
    for (const fn of [
      'allocPage',
      'freePage',
      'getPage',
      'putPage',
      'kmalloc',
      'kfree',
      'vmap',
      'vunmap',
      'vmapPages',
      'vunmapPages',
      'vmUnmapAliases',
      'pageAddress',
      'writeBytes',
      'readBytes',
      'now',
      'registerShrinker',
      'report',
    ] as const) {
      if (typeof deps[fn] !== 'function') throw new TypeError(`XfsBufCache: deps.${fn} must be a function`);
    }
    if (!Number.isInteger(deps.cpu) || deps.cpu < 0)
      throw new RangeError(`XfsBufCache: deps.cpu must be a vCPU number, got ${deps.cpu}`);
    const strategy = opts.strategy ?? 'lazy';
    if (!XFS_BUF_STRATEGIES.includes(strategy)) {
      throw new TypeError(
        `XfsBufCache: strategy must be one of ${XFS_BUF_STRATEGIES.map((s) => `'${s}'`).join(', ')}, got ${String(strategy)}`,
      );
    }
    const image = opts.image ?? null;
    if (image !== null && image.pagesPerBlock > MAXP) {
      throw new RangeError(
        `XfsBufCache: directory blocks of ${image.pagesPerBlock} pages exceed XFS_BUF_MAX_PAGES (${MAXP})`,
      );
    }
    this.strategy = strategy;
    this.image = image;
    this.maxBuffers = intOption(opts.maxBuffers, 0, 1 << 16, 'maxBuffers', 64);
    this.maxSlots = intOption(
      opts.maxSlots,
      Math.max(1, this.maxBuffers + 1),
      1 << 18,
      'maxSlots',
      this.maxBuffers + 256,
    );
    this.purgeThreshold = intOption(opts.purgeThreshold, 0, 1 << 16, 'purgeThreshold', XFS_BUF_PURGE_THRESHOLD);
    this.xfsbufdInterval = intOption(
      opts.xfsbufdIntervalTicks,
      XFS_BUF_TIMER_MIN,
      XFS_BUF_TIMER_MAX,
      'xfsbufdIntervalTicks',
      XFS_BUF_TIMER_DEFAULT,
    );
    this.xfsBufAge = intOption(
      opts.xfsBufAgeTicks,
      XFS_BUF_AGE_MIN,
      XFS_BUF_AGE_MAX,
      'xfsBufAgeTicks',
      XFS_BUF_AGE_DEFAULT,
    );
    if (opts.verifyOnHit !== undefined && typeof opts.verifyOnHit !== 'boolean')
      throw new TypeError('XfsBufCache: verifyOnHit must be a boolean');
    this.verifyOnHit = opts.verifyOnHit ?? true;
    this.fsname = opts.fsname ?? 'xvda1';
    if (opts.vmallocStats !== undefined && typeof opts.vmallocStats !== 'function')
      throw new TypeError('XfsBufCache: vmallocStats must be a function');
    this.#vmallocStats = opts.vmallocStats ?? null;
    this.#deps = deps;
    this.#trace = deps.trace ? deps.trace.bind(deps) : NOOP_TRACE;
    this.#batched = strategy === 'lazy' || strategy === 'vmap-pages';
    this.#useVmapPages = strategy === 'vmap-pages';

    const n = this.maxSlots;
    this.#bBn = new Int32Array(n);
    this.#bCount = new Int32Array(n);
    this.#bPageCount = new Int32Array(n);
    this.#bPages = new Int32Array(n * MAXP).fill(-1);
    this.#bAddr = new Float64Array(n);
    this.#bFlags = new Int32Array(n);
    this.#bHold = new Int32Array(n).fill(-1);
    this.#bHashNext = new Int32Array(n);
    this.#bNext = new Int32Array(n).fill(-1);
    this.#bPrev = new Int32Array(n).fill(-1);
    this.#bQueueTime = new Float64Array(n);
    for (let s = n - 1; s >= 0; s--) {
      this.#bHashNext[s] = this.#freeSlot;
      this.#freeSlot = s;
    }
    let hs = 64;
    while (hs < 2 * n) hs *= 2;
    this.#hashHead = new Int32Array(hs).fill(-1);
    this.#hashMask = hs - 1;

    // Between two vmaps the list grows by at most one entry per live buffer, and a vmap
    // leaves it at most purgeThreshold long: this bounds it.
    const cap = this.#batched ? n + this.purgeThreshold + 1 : 0;
    this.#alCap = cap;
    this.#alVa = new Float64Array(cap);
    this.#alNode = new Float64Array(cap);
    this.#alNext = new Int32Array(cap);
    this.#alBn = new Int32Array(cap);
    this.#alBuf = new Int32Array(cap);
    this.#alPageCount = new Int32Array(cap);
    this.#alPages = new Int32Array(cap * MAXP);
    this.#alRefs = new Uint8Array(cap);
    for (let e = cap - 1; e >= 0; e--) {
      this.#alNext[e] = this.#alFree;
      this.#alFree = e;
    }

    this.#nextXfsbufd = deps.now() + this.xfsbufdInterval;
    // xfsbufd_wakeup as 2.6.23 registered it: wake the daemon, report nothing reclaimable
    // (so shrink_slab asks once per round).
    deps.registerShrinker((_nr: number) => {
      this.#shrinkerCalls++;
      this.xfsbufd('shrinker');
      return 0;
    });
  }

  /* ================================================================ lookups */

  /**
   * xfs_buf_read of directory block blockNo: the cached buffer (held, re-verified), or a
   * new one whose pages are allocated, mapped, filled THROUGH b_addr and verified by reading
   * back through b_addr. Returns the buffer (hold taken: xfsBufRelse it), -EFSCORRUPTED
   * when the block does not verify (reported, counted, the buffer discarded), -EIO,
   * -ENOMEM, or -EINVAL for a bad block number.
   */
  xfsBufRead(blockNo: number): number {
    const image = this.image;
    if (image === null) return this.#misuse('xfs_buf_read: no directory image is mounted on this buffer cache');
    if (!Number.isInteger(blockNo) || blockNo < 0 || blockNo >= image.nblocks) {
      return this.#misuse(`xfs_buf_read: block ${blockNo} is beyond the directory (0..${image.nblocks - 1})`);
    }
    this.xfsBufTimer();
    this.#lookups++;
    let bp = this.#find(blockNo);
    if (bp >= 0) {
      this.#hold(bp);
      this.#hits++;
      if (this.verifyOnHit && !this.#verify(bp, 'xfs_buf_read(cached)')) return this.#discard(bp);
      return bp;
    }
    const size = image.dirBlockSize;
    bp = this.#xfsBufAllocate(blockNo, size, XBF_READ);
    if (bp < 0) return bp;
    const io = this.#io;
    image.readBlock(blockNo, io, 0);
    if (this.#deps.writeBytes(this.#bAddr[bp]!, io, 0, size) < 0) {
      this.#corruption('xfs_buf_iorequest', blockNo, bp, 'fault writing the block through b_addr');
      this.#bFlags[bp]! |= XBF_STALE;
      this.xfsBufRelse(bp);
      return -EIO;
    }
    this.#bFlags[bp]! |= XBF_DONE | XBF_HASHED;
    this.#hashInsert(bp);
    this.#reads++;
    if (!this.#verify(bp, 'xfs_buf_read')) return this.#discard(bp);
    return bp;
  }

  /**
   * xfs_buf_get_noaddr: an uncached buffer of len bytes (1..XFS_BUF_MAX_PAGES pages),
   * pages allocated and mapped, held once. Never hashed; freed at its last release. The
   * log uses these. Returns the buffer or a negative errno.
   */
  xfsBufGetNoaddr(len: number): number {
    if (!Number.isInteger(len) || len < 1 || len > MAXP * PAGE_SIZE) {
      return this.#misuse(`xfs_buf_get_noaddr: length ${len} is outside 1..${MAXP * PAGE_SIZE}`);
    }
    this.xfsBufTimer();
    return this.#xfsBufAllocate(-1, len, XBF_NOADDR);
  }

  /** xfs_incore: the cached buffer of block bn, or -1 (no hold taken). */
  xfsIncore(bn: number): number {
    return this.#find(bn);
  }

  /**
   * xfs_buf_relse: drop one hold. At zero the buffer is cached (LRU tail, evicting from the
   * head beyond maxBuffers), or freed when it is stale, uncached or maxBuffers is 0.
   * Returns 0, or -EINVAL for a buffer that is not held.
   */
  xfsBufRelse(bp: number): number {
    if (!this.#isLive(bp) || this.#bHold[bp]! <= 0) return this.#misuse(`xfs_buf_relse: buffer ${bp} is not held`);
    const hold = --this.#bHold[bp]!;
    if (hold > 0) return 0;
    const f = this.#bFlags[bp]!;
    if (f & (XBF_STALE | XBF_NOADDR) || this.maxBuffers === 0) {
      if (f & XBF_HASHED) this.#hashRemove(bp);
      this.#xfsBufFree(bp);
      return 0;
    }
    this.#lruAdd(bp);
    while (this.#nrLru > this.maxBuffers) this.#evict(this.#lruHead);
    return 0;
  }

  /**
   * xfs_buf_delwri_queue: mark a held buffer for delayed write. The queue takes its own
   * hold (once); xfsbufd writes it when it is older than xfs_buf_age, or at once when woken
   * by the shrinker. Requeueing refreshes its age. 0 or -EINVAL.
   */
  xfsBufDelwriQueue(bp: number): number {
    if (!this.#isLive(bp) || this.#bHold[bp]! <= 0)
      return this.#misuse(`xfs_buf_delwri_queue: buffer ${bp} is not held`);
    const f = this.#bFlags[bp]!;
    if (f & XBF_NOADDR) return this.#misuse(`xfs_buf_delwri_queue: buffer ${bp} has no disk address`);
    if (f & XBF_DELWRI) {
      this.#dwRemove(bp);
    } else {
      this.#bHold[bp]!++;
      this.#bFlags[bp] = f | XBF_DELWRI | XBF_WRITE;
    }
    this.#bQueueTime[bp] = this.#deps.now();
    this.#dwAdd(bp);
    return 0;
  }

  /* ======================================================== the directory scan */

  /**
   * What `find` over a large directory does: read every directory block in order and check
   * its entry count through the mapped address. Every block goes through xfsBufRead (so
   * through verification); failures are counted, never skipped silently.
   */
  xfsDirScan(image: DirectoryImage | null = this.image): XfsDirScanResult {
    if (image === null || image !== this.image) {
      throw new TypeError('xfsDirScan: the image must be the directory mounted on this buffer cache (options.image)');
    }
    const out: XfsDirScanResult = { blocks: 0, entries: 0, errors: 0, hits: 0 };
    const hdr = this.#hdr;
    for (let b = 0; b < image.nblocks; b++) {
      const hitsBefore = this.#hits;
      const bp = this.xfsBufRead(b);
      out.blocks++;
      if (bp < 0) {
        out.errors++;
        continue;
      }
      if (this.#hits !== hitsBefore) out.hits++;
      const want = image.entriesInBlock(b);
      if (this.#deps.readBytes(this.#bAddr[bp]!, hdr, 0, 16) < 0) {
        this.#corruption('xfs_dir2_block_getdents', b, bp, 'fault reading the block header through b_addr');
        out.errors++;
      } else {
        const count = ((hdr[8]! << 24) | (hdr[9]! << 16) | (hdr[10]! << 8) | hdr[11]!) >>> 0;
        if (count !== want) {
          this.#corruption('xfs_dir2_block_getdents', b, bp, `entry count ${count}, the directory holds ${want} there`);
          out.errors++;
        } else {
          out.entries += count;
        }
      }
      this.xfsBufRelse(bp);
    }
    return out;
  }

  /**
   * echo 3 > /proc/sys/vm/drop_caches, as far as this cache goes: free every unheld buffer
   * (oldest first). The shrinker pass of drop_slab is the caller's to make (it wakes
   * xfsbufd); until then freed addresses sit on the a_list. Returns buffers freed.
   */
  dropCaches(): number {
    let n = 0;
    while (this.#lruHead >= 0) {
      this.#evict(this.#lruHead, false);
      n++;
    }
    this.#dropped += n;
    return n;
  }

  /* ============================================================ xfsbufd */

  /**
   * xfs_buf_timer: xfsbufd's timed wake-up, when deps.now() has reached it (one run however
   * late: the next one is a full period later). Polled at every lookup; the guest's timer
   * tick may call it too. Returns whether xfsbufd ran.
   */
  xfsBufTimer(): boolean {
    const now = this.#deps.now();
    if (now < this.#nextXfsbufd) return false;
    this.#nextXfsbufd = now + this.xfsbufdInterval;
    this.xfsbufd('xfsbufd');
    return true;
  }

  /**
   * One xfsbufd run: purge the a_list, then write the delayed-write buffers old enough
   * (all of them when the shrinker woke it: memory is short).
   */
  xfsbufd(trigger: 'xfsbufd' | 'shrinker' = 'xfsbufd'): void {
    this.#xfsbufdWakeups++;
    this.#trace('xfsbufd', trigger === 'shrinker' ? 1 : 0);
    this.purgeAddresses(trigger);
    const force = trigger === 'shrinker';
    const now = this.#deps.now();
    while (this.#dwHead >= 0) {
      const bp = this.#dwHead;
      if (!force && now - this.#bQueueTime[bp]! < this.xfsBufAge) break; // queue is in age order
      this.#dwRemove(bp);
      this.#bFlags[bp]! &= ~(XBF_DELWRI | XBF_WRITE);
      this.#xfsBufIostrategyWrite(bp);
      this.xfsBufRelse(bp); // the queue's hold
    }
  }

  /**
   * purge_addresses: detach the whole a_list and unmap every entry (vunmapPages for
   * vmapPages mappings: their page references go only now), freeing the nodes. Returns the
   * entries unmapped. A no-op for the strategies without a list.
   */
  purgeAddresses(trigger: PurgeTrigger = 'explicit'): number {
    let e = this.#alHead;
    if (e < 0) return 0;
    const n = this.#asListLen;
    this.#alHead = -1;
    this.#asListLen = 0;
    this.#purges[trigger]++;
    this.#trace('purge_addresses', n);
    const deps = this.#deps;
    while (e >= 0) {
      const next = this.#alNext[e]!;
      if (this.#alRefs[e]) deps.vunmapPages(this.#alVa[e]!);
      else deps.vunmap(this.#alVa[e]!);
      deps.kfree(this.#alNode[e]!);
      this.#aListPages -= this.#alPageCount[e]!;
      this.#alPageCount[e] = 0;
      this.#alNext[e] = this.#alFree;
      this.#alFree = e;
      this.#vunmapsPurged++;
      e = next;
    }
    return n;
  }

  /** as_list_len. */
  get aListLength(): number {
    return this.#asListLen;
  }

  /* ============================================================ buffer access */

  /** b_addr of a live buffer (0 when not live). */
  bufAddr(bp: number): number {
    return this.#isLive(bp) ? this.#bAddr[bp]! : 0;
  }

  /** b_bn (-1: uncached). */
  bufBlockNo(bp: number): number {
    return this.#isLive(bp) ? this.#bBn[bp]! : -1;
  }

  /** b_pages of a live buffer. */
  bufPfns(bp: number): number[] {
    if (!this.#isLive(bp)) return [];
    return Array.from(this.#bPages.subarray(bp * MAXP, bp * MAXP + this.#bPageCount[bp]!));
  }

  bufHold(bp: number): number {
    return this.#isLive(bp) ? this.#bHold[bp]! : -1;
  }

  bufFlags(bp: number): number {
    return this.#isLive(bp) ? this.#bFlags[bp]! : 0;
  }

  /** b_count_desired: the buffer's length in bytes. */
  bufLength(bp: number): number {
    return this.#isLive(bp) ? this.#bCount[bp]! : 0;
  }

  /** Every live buffer (held, queued or cached), by slot. */
  liveBuffers(): number[] {
    const out: number[] = [];
    for (let s = 0; s < this.maxSlots; s++) if (this.#bHold[s]! >= 0) out.push(s);
    return out;
  }

  /**
   * Copy len bytes from src into a held buffer at byte `at`, through b_addr (the I/O that
   * fills it). 0, -EIO on a fault, -EINVAL when out of bounds or not held.
   */
  xfsBufIoFill(bp: number, src: Uint8Array, srcOff: number, len: number, at = 0): number {
    if (!this.#ioRange(bp, len, at)) return this.#misuse(`xfs_buf_iomove: ${len} bytes at ${at} outside buffer ${bp}`);
    return this.#deps.writeBytes(this.#bAddr[bp]! + at, src, srcOff, len) < 0 ? -EIO : 0;
  }

  /** Copy len bytes of a held buffer at byte `at` into dst, through b_addr. 0, -EIO, -EINVAL. */
  xfsBufIoRead(bp: number, dst: Uint8Array, dstOff: number, len: number, at = 0): number {
    if (!this.#ioRange(bp, len, at)) return this.#misuse(`xfs_buf_iomove: ${len} bytes at ${at} outside buffer ${bp}`);
    return this.#deps.readBytes(this.#bAddr[bp]! + at, dst, dstOff, len) < 0 ? -EIO : 0;
  }

  /**
   * Report and count a corruption found by a user of the buffers (the log). Returns
   * -EFSCORRUPTED for the caller to pass on.
   */
  xfsCorruptionError(func: string, bn: number, bp: number, reason: string): number {
    this.#corruption(func, bn, bp, reason);
    return -EFSCORRUPTED;
  }

  /* ============================================================ queries */

  /** Which a_list entries still map pfn: the stray aliases XFS itself holds. */
  strayAliasesOf(pfn: number): XfsStrayAlias[] {
    const out: XfsStrayAlias[] = [];
    for (let e = this.#alHead; e >= 0; e = this.#alNext[e]!) {
      const base = e * MAXP;
      const n = this.#alPageCount[e]!;
      for (let i = 0; i < n; i++) {
        if (this.#alPages[base + i] !== pfn) continue;
        out.push({
          va: this.#alVa[e]! + i * PAGE_SIZE,
          areaVa: this.#alVa[e]!,
          bn: this.#alBn[e]!,
          buf: this.#alBuf[e]!,
          index: i,
          holdsRef: this.#alRefs[e] === 1,
        });
      }
    }
    return out;
  }

  /** The a_list, newest first (a snapshot). */
  aListEntries(): XfsAListEntry[] {
    const out: XfsAListEntry[] = [];
    for (let e = this.#alHead; e >= 0; e = this.#alNext[e]!) {
      out.push({
        va: this.#alVa[e]!,
        bn: this.#alBn[e]!,
        buf: this.#alBuf[e]!,
        holdsRef: this.#alRefs[e] === 1,
        pfns: Array.from(this.#alPages.subarray(e * MAXP, e * MAXP + this.#alPageCount[e]!)),
      });
    }
    return out;
  }

  stats(): XfsBufStats {
    const vm = this.#vmallocStats === null ? null : this.#vmallocStats().lazyPages;
    return {
      strategy: this.strategy,
      lookups: this.#lookups,
      buffersRead: this.#reads,
      cacheHits: this.#hits,
      vmaps: this.#vmaps,
      vunmapsDirect: this.#vunmapsDirect,
      vunmapsPurged: this.#vunmapsPurged,
      purges: { ...this.#purges },
      aListLength: this.#asListLen,
      aListPeak: this.#aListPeak,
      aListPages: this.#aListPages,
      vmallocLazyPages: vm,
      lazyAliasPages: this.#aListPages + (vm ?? 0),
      dataErrors: this.#dataErrors,
      buffers: this.#nrBuffers,
      heldBuffers: this.#nrBuffers - this.#nrLru,
      cachedBuffers: this.#nrLru,
      delwriBuffers: this.#nrDelwri,
      bufferPages: this.#bufferPages,
      evictions: this.#evictions,
      dropped: this.#dropped,
      xfsbufdWakeups: this.#xfsbufdWakeups,
      shrinkerCalls: this.#shrinkerCalls,
      delwriFlushed: this.#delwriFlushed,
      allocFailures: this.#allocFailures,
      misuse: this.#misuseCount,
    };
  }

  /**
   * The debug self-check: every structural invariant recomputed from the columns. Returns
   * the violations (empty when all hold).
   */
  checkInvariants(): string[] {
    const bad: string[] = [];
    const n = this.maxSlots;
    let free = 0;
    for (let s = this.#freeSlot; s >= 0 && free <= n; s = this.#bHashNext[s]!) {
      if (this.#bHold[s] !== -1) bad.push(`slot ${s} on the free list with hold ${this.#bHold[s]}`);
      free++;
    }
    let live = 0;
    let pages = 0;
    const seenBn = new Map<number, number>();
    for (let s = 0; s < n; s++) {
      if (this.#bHold[s]! < 0) continue;
      live++;
      const f = this.#bFlags[s]!;
      const pc = this.#bPageCount[s]!;
      pages += pc;
      if (!(f & XBF_MAPPED)) bad.push(`buffer ${s} is live but not mapped`);
      if (pc < 1 || pc > MAXP || pc !== Math.ceil(this.#bCount[s]! / PAGE_SIZE))
        bad.push(`buffer ${s}: ${pc} pages for ${this.#bCount[s]} bytes`);
      if (pc === 1 && this.#bAddr[s] !== this.#deps.pageAddress(this.#bPages[s * MAXP]!))
        bad.push(`buffer ${s}: one page but b_addr is not page_address`);
      if (f & XBF_HASHED) {
        if (this.#find(this.#bBn[s]!) !== s)
          bad.push(`buffer ${s} (block ${this.#bBn[s]}) is not found through the hash`);
        if (seenBn.has(this.#bBn[s]!)) bad.push(`block ${this.#bBn[s]} is hashed twice`);
        seenBn.set(this.#bBn[s]!, s);
      }
      if (!!(f & XBF_LRU) !== (this.#bHold[s] === 0))
        bad.push(`buffer ${s}: hold ${this.#bHold[s]} but LRU flag ${!!(f & XBF_LRU)}`);
    }
    if (live !== this.#nrBuffers) bad.push(`${live} live buffers, counter says ${this.#nrBuffers}`);
    if (live + free !== n) bad.push(`${live} live + ${free} free slots != ${n}`);
    if (pages !== this.#bufferPages) bad.push(`buffers own ${pages} pages, counter says ${this.#bufferPages}`);
    const walk = (head: number, flag: number, what: string): number => {
      let k = 0;
      for (let s = head, prev = -1; s >= 0 && k <= n; prev = s, s = this.#bNext[s]!) {
        if (this.#bPrev[s] !== prev) bad.push(`${what}: buffer ${s} prev link ${this.#bPrev[s]} != ${prev}`);
        if (!(this.#bFlags[s]! & flag)) bad.push(`${what}: buffer ${s} lacks its flag`);
        k++;
      }
      return k;
    };
    if (walk(this.#lruHead, XBF_LRU, 'LRU') !== this.#nrLru) bad.push(`LRU length != ${this.#nrLru}`);
    if (walk(this.#dwHead, XBF_DELWRI, 'delwri queue') !== this.#nrDelwri)
      bad.push(`delwri queue length != ${this.#nrDelwri}`);
    let len = 0;
    let alPages = 0;
    for (let e = this.#alHead; e >= 0 && len <= this.#alCap; e = this.#alNext[e]!) {
      len++;
      alPages += this.#alPageCount[e]!;
    }
    if (len !== this.#asListLen) bad.push(`a_list holds ${len} entries, as_list_len ${this.#asListLen}`);
    if (alPages !== this.#aListPages) bad.push(`a_list maps ${alPages} pages, counter says ${this.#aListPages}`);
    let alFree = 0;
    for (let e = this.#alFree; e >= 0 && alFree <= this.#alCap; e = this.#alNext[e]!) alFree++;
    if (alFree + len !== this.#alCap) bad.push(`a_list: ${len} entries + ${alFree} free != ${this.#alCap}`);
    return bad;
  }

  /* ============================================================== internals */

  #isLive(bp: number): boolean {
    return Number.isInteger(bp) && bp >= 0 && bp < this.maxSlots && this.#bHold[bp]! >= 0;
  }

  #ioRange(bp: number, len: number, at: number): boolean {
    return (
      this.#isLive(bp) &&
      this.#bHold[bp]! > 0 &&
      Number.isInteger(len) &&
      Number.isInteger(at) &&
      len >= 0 &&
      at >= 0 &&
      at + len <= this.#bCount[bp]!
    );
  }

  #printk(line: string): void {
    if (this.messages.length >= MESSAGE_CAPACITY) this.messages.shift();
    this.messages.push(line);
    this.#deps.report(line);
  }

  #misuse(line: string): number {
    this.#misuseCount++;
    this.#printk(`XFS (${this.fsname}): ${line}`);
    return -EINVAL;
  }

  #corruption(func: string, bn: number, bp: number, reason: string): void {
    this.#dataErrors++;
    const where =
      bp >= 0 && this.#isLive(bp)
        ? ` (buffer ${bp}, b_addr ${hex(this.#bAddr[bp]!)}, ${this.#bPageCount[bp]} page${this.#bPageCount[bp] === 1 ? '' : 's'})`
        : '';
    this.#printk(`Filesystem "${this.fsname}": XFS internal error ${func}: block ${bn} corrupted: ${reason}${where}`);
  }

  /** Read the block back through b_addr and check it against the directory. */
  #verify(bp: number, func: string): boolean {
    const image = this.image!;
    const n = this.#bCount[bp]!;
    const io = this.#io;
    io.fill(0, 0, n); // a read-back that does not land must not pass on stale scratch
    const bn = this.#bBn[bp]!;
    if (this.#deps.readBytes(this.#bAddr[bp]!, io, 0, n) < 0) {
      this.#corruption(func, bn, bp, 'fault reading the block back through b_addr');
      return false;
    }
    const r = image.verifyBlock(io, 0, bn);
    if (r === true) return true;
    this.#corruption(func, bn, bp, r);
    return false;
  }

  /** A buffer whose contents are bad: out of the cache, freed at its last release. */
  #discard(bp: number): number {
    this.#bFlags[bp]! |= XBF_STALE;
    if (this.#bFlags[bp]! & XBF_HASHED) this.#hashRemove(bp);
    this.xfsBufRelse(bp);
    return -EFSCORRUPTED;
  }

  /** The delayed write of a buffer: what reaches the disk is checked, not stored. */
  #xfsBufIostrategyWrite(bp: number): void {
    this.#delwriFlushed++;
    this.#trace('xfs_buf_iostrategy', this.#bBn[bp]!);
    if (this.image !== null && this.#verify(bp, 'xfs_buf_iostrategy')) return;
    if (this.image !== null) this.#bFlags[bp]! |= XBF_STALE; // never keep what failed
  }

  /* ---- the hash ---------------------------------------------------------- */

  #find(bn: number): number {
    if (!Number.isInteger(bn) || bn < 0) return -1;
    for (let s = this.#hashHead[bn & this.#hashMask]!; s >= 0; s = this.#bHashNext[s]!) {
      if (this.#bBn[s] === bn) return s;
    }
    return -1;
  }

  #hashInsert(bp: number): void {
    const h = this.#bBn[bp]! & this.#hashMask;
    this.#bHashNext[bp] = this.#hashHead[h]!;
    this.#hashHead[h] = bp;
  }

  #hashRemove(bp: number): void {
    const h = this.#bBn[bp]! & this.#hashMask;
    let prev = -1;
    for (let s = this.#hashHead[h]!; s >= 0; prev = s, s = this.#bHashNext[s]!) {
      if (s !== bp) continue;
      if (prev < 0) this.#hashHead[h] = this.#bHashNext[s]!;
      else this.#bHashNext[prev] = this.#bHashNext[s]!;
      break;
    }
    this.#bHashNext[bp] = -1;
    this.#bFlags[bp]! &= ~XBF_HASHED;
  }

  /* ---- LRU and delayed-write queue (doubly linked through bNext/bPrev) ------- */

  #hold(bp: number): void {
    if (this.#bHold[bp] === 0) this.#lruRemove(bp);
    this.#bHold[bp]!++;
  }

  #lruAdd(bp: number): void {
    this.#bNext[bp] = -1;
    this.#bPrev[bp] = this.#lruTail;
    if (this.#lruTail >= 0) this.#bNext[this.#lruTail] = bp;
    else this.#lruHead = bp;
    this.#lruTail = bp;
    this.#bFlags[bp]! |= XBF_LRU;
    this.#nrLru++;
  }

  #lruRemove(bp: number): void {
    const next = this.#bNext[bp]!;
    const prev = this.#bPrev[bp]!;
    if (prev >= 0) this.#bNext[prev] = next;
    else this.#lruHead = next;
    if (next >= 0) this.#bPrev[next] = prev;
    else this.#lruTail = prev;
    this.#bNext[bp] = this.#bPrev[bp] = -1;
    this.#bFlags[bp]! &= ~XBF_LRU;
    this.#nrLru--;
  }

  #dwAdd(bp: number): void {
    this.#bNext[bp] = -1;
    this.#bPrev[bp] = this.#dwTail;
    if (this.#dwTail >= 0) this.#bNext[this.#dwTail] = bp;
    else this.#dwHead = bp;
    this.#dwTail = bp;
    this.#nrDelwri++;
  }

  #dwRemove(bp: number): void {
    const next = this.#bNext[bp]!;
    const prev = this.#bPrev[bp]!;
    if (prev >= 0) this.#bNext[prev] = next;
    else this.#dwHead = next;
    if (next >= 0) this.#bPrev[next] = prev;
    else this.#dwTail = prev;
    this.#bNext[bp] = this.#bPrev[bp] = -1;
    this.#nrDelwri--;
  }

  /** Take an unheld buffer out of the cache and free it (an eviction, unless dropped). */
  #evict(bp: number, counted = true): void {
    this.#lruRemove(bp);
    if (this.#bFlags[bp]! & XBF_HASHED) this.#hashRemove(bp);
    if (counted) this.#evictions++;
    this.#xfsBufFree(bp);
  }

  /* ---- allocation and mapping ------------------------------------------------ */

  /** A slot, evicting the oldest cached buffer when none is free. -1 when all are held. */
  #allocSlot(): number {
    if (this.#freeSlot < 0 && this.#lruHead >= 0) this.#evict(this.#lruHead);
    const s = this.#freeSlot;
    if (s < 0) return -1;
    this.#freeSlot = this.#bHashNext[s]!;
    this.#bHashNext[s] = -1;
    this.#nrBuffers++;
    return s;
  }

  #releaseSlot(bp: number): void {
    this.#bHold[bp] = -1;
    this.#bFlags[bp] = 0;
    this.#bPageCount[bp] = 0;
    this.#bAddr[bp] = 0;
    this.#bHashNext[bp] = this.#freeSlot;
    this.#freeSlot = bp;
    this.#nrBuffers--;
  }

  /** _xfs_buf_initialize + _xfs_buf_lookup_pages + _xfs_buf_map_pages. bp (held) or -errno. */
  #xfsBufAllocate(bn: number, len: number, flags: number): number {
    const bp = this.#allocSlot();
    if (bp < 0) {
      this.#allocFailures++;
      this.#printk(`XFS (${this.fsname}): xfs_buf_get: all ${this.maxSlots} buffers are held`);
      return -ENOMEM;
    }
    this.#bBn[bp] = bn;
    this.#bCount[bp] = len;
    this.#bPageCount[bp] = 0;
    this.#bFlags[bp] = flags;
    this.#bHold[bp] = 1;
    this.#bAddr[bp] = 0;
    this.#bNext[bp] = this.#bPrev[bp] = -1;
    let rc = this.#xfsBufLookupPages(bp, Math.ceil(len / PAGE_SIZE));
    if (rc === 0) rc = this.#xfsBufMapPages(bp);
    if (rc < 0) {
      this.#allocFailures++;
      this.#freeBufPages(bp);
      this.#releaseSlot(bp);
      return rc;
    }
    return bp;
  }

  /**
   * The buffer's pages, GFP_NOFS. The page allocator runs its reclaim (and so the
   * shrinker) itself; when that is not enough, the model gives back cached buffers -- the
   * part of reclaim that in Linux is the VM taking the blockdev page cache.
   */
  #xfsBufLookupPages(bp: number, n: number): number {
    const deps = this.#deps;
    const base = bp * MAXP;
    for (let i = 0; i < n; i++) {
      let pfn = deps.allocPage(GFP_NOFS);
      while (pfn < 0 && this.#lruHead >= 0) {
        this.#evict(this.#lruHead);
        pfn = deps.allocPage(GFP_NOFS);
      }
      if (pfn < 0) {
        this.#printk(
          `XFS (${this.fsname}): xfs_buf_get: no page for page ${i + 1} of ${n} (mode:0x${GFP_NOFS.toString(16)}), giving up`,
        );
        return -ENOMEM;
      }
      this.#bPages[base + i] = pfn;
      this.#bPageCount[bp] = i + 1;
      this.#bufferPages++;
    }
    return 0;
  }

  /**
   * _xfs_buf_map_pages: one page is reached through the direct map; more are vmapped --
   * after purging the a_list if it is over the threshold (the strategies that keep one).
   */
  #xfsBufMapPages(bp: number): number {
    const n = this.#bPageCount[bp]!;
    const base = bp * MAXP;
    const deps = this.#deps;
    if (n === 1) {
      this.#bAddr[bp] = deps.pageAddress(this.#bPages[base]!);
      this.#bFlags[bp]! |= XBF_MAPPED;
      return 0;
    }
    if (this.#batched && this.#asListLen > this.purgeThreshold) this.purgeAddresses('threshold');
    const pfns = this.#pfns;
    for (let i = 0; i < n; i++) pfns[i] = this.#bPages[base + i]!;
    const va = this.#useVmapPages ? deps.vmapPages(pfns, n) : deps.vmap(pfns, n);
    if (va < 0) {
      this.#printk(`XFS (${this.fsname}): _xfs_buf_map_pages: vmap of ${n} pages failed (${va})`);
      return va;
    }
    this.#vmaps++;
    this.#trace('xfs_buf_vmap', va);
    this.#bAddr[bp] = va;
    this.#bFlags[bp]! |= XBF_MAPPED | (this.#useVmapPages ? XBF_VMAP_PAGES : 0);
    return 0;
  }

  /** Drop the buffer's own page references (__free_page each, to the hot end). */
  #freeBufPages(bp: number): void {
    const deps = this.#deps;
    const base = bp * MAXP;
    const n = this.#bPageCount[bp]!;
    for (let i = 0; i < n; i++) {
      deps.freePage(this.#bPages[base + i]!);
      this.#bPages[base + i] = -1;
    }
    this.#bufferPages -= n;
    this.#bPageCount[bp] = 0;
  }

  /**
   * xfs_buf_free: give the address back, then release the pages at once. Under 'lazy' this
   * order is the bug: the address is only queued, so the pages reach the free lists while
   * still mapped writable.
   */
  #xfsBufFree(bp: number): void {
    this.#trace('xfs_buf_free', this.#bBn[bp]!);
    if (this.#bFlags[bp]! & XBF_MAPPED && this.#bPageCount[bp]! > 1) this.#freeAddress(bp);
    this.#freeBufPages(bp);
    this.#releaseSlot(bp);
  }

  /**
   * free_address: queue the mapping on the a_list ('lazy', 'vmap-pages'), or unmap it now
   * ('eager', 'unmap-aliases', or when the GFP_NOWAIT node cannot be allocated).
   */
  #freeAddress(bp: number): void {
    const deps = this.#deps;
    const va = this.#bAddr[bp]!;
    const refs = (this.#bFlags[bp]! & XBF_VMAP_PAGES) !== 0;
    this.#trace('free_address', va);
    if (this.#batched) {
      const node = deps.kmalloc(A_LIST_NODE_SIZE, GFP_NOWAIT);
      if (node !== 0 && this.#alFree >= 0) {
        const e = this.#alFree;
        this.#alFree = this.#alNext[e]!;
        const n = this.#bPageCount[bp]!;
        this.#alVa[e] = va;
        this.#alNode[e] = node;
        this.#alBn[e] = this.#bBn[bp]!;
        this.#alBuf[e] = bp;
        this.#alPageCount[e] = n;
        this.#alRefs[e] = refs ? 1 : 0;
        this.#alPages.set(this.#bPages.subarray(bp * MAXP, bp * MAXP + n), e * MAXP);
        this.#alNext[e] = this.#alHead;
        this.#alHead = e;
        this.#aListPages += n;
        if (++this.#asListLen > this.#aListPeak) this.#aListPeak = this.#asListLen;
        return;
      }
      if (node !== 0) deps.kfree(node); // (the bound above makes this unreachable)
      this.#purges.nomem++;
    }
    if (refs) deps.vunmapPages(va);
    else deps.vunmap(va);
    this.#vunmapsDirect++;
  }
}
