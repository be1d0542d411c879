/*
 * fs/xfs/xfs_log.c and xfs_log_recover.c, reduced to their one job in this model: the log's
 * use of vmapped buffers. At mount, log recovery maps a few multi-page buffers, reads the
 * log through them and frees them -- which on a default mkfs is the vmap traffic that first
 * left stray mappings behind on Xen (David Chinner, 2007-10-15 04:25). The in-core log
 * buffers (iclogs) are mapped at mount and stay mapped until unmount, so they never feed
 * the a_list while mounted (Christoph Hellwig, 2007-10-15 08:31).
 *
 * Mount order is Linux's: xfs_log_mount allocates the log (xlog_alloc_log: the iclogs)
 * FIRST and only then runs xlog_recover. So the recovery buffers are the last thing the
 * mount frees: their pages sit on top of this vCPU's hot list, still mapped by their lazy
 * vmaps, and the next page tables made here are those pages -- Jeremy's refused pins after
 * booting on a filesystem that was not cleanly unmounted.
 *
 * Clean and unclean: a clean unmount writes an unmount record at the head (the log is then
 * clean: the next mount finds the record just before the head and replays nothing). An
 * unclean end -- a crash, or xfs_force_shutdown followed by unmount, which writes no
 * unmount record -- leaves the records for the next mount to replay. The log starts
 * unclean (the default: the machine went down with the filesystem mounted).
 *
 * The on-disk log is generated, deterministically from a seed: logBlocks basic blocks
 * (512 bytes), the current cycle C stamped in the first word of every block before the head
 * and C-1 after it; between tail and head, `records` log records, each one header block
 * (magic 0xFEEDBABE, cycle, record number, data length, xlogChecksum of the data) followed by its
 * data blocks. Nothing is stored: blocks are regenerated into a scratch array and copied
 * into the buffers through their mapped addresses, then read back through the same
 * addresses to be checked.
 *
 * Recovery, as xlog_recover does it in outline:
 *   1. xlog_find_head: one buffer of findBufSize; a binary search for the first block of
 *      the previous cycle, each probe reading the buffer-sized chunk that holds it.
 *   2. two passes over the records (PASS1 collects, PASS2 replays), each with a one-block
 *      header buffer (one page: page_address, no vmap) and a recordSize data buffer.
 * Every buffer is an uncached xfsBufGetNoaddr buffer, released (so freed, through
 * free_address) when its step ends. A mismatch anywhere is a corruption error through the
 * buffer cache's counter and printk, and recovery fails with -EFSCORRUPTED.
 */
import { EBUSY, PAGE_SIZE } from '../../../src/abi/xen.js';
import { fmix32 } from '../../lib/random.js';
import { XFS_BUF_MAX_PAGES, type XfsBufCache } from './xfs_buf.js';
import { rd32, wr32 } from './backing.js';

export const BBSHIFT = 9;
/** A basic block: the log's unit. */
export const BBSIZE = 1 << BBSHIFT;
export const XLOG_HEADER_MAGIC_NUM = 0xfeedbabe;
/** The unmount record's type ("Un"). */
export const XLOG_UNMOUNT_TYPE = 0x556e;
/** logbufs: number of iclogs. */
export const XLOG_MIN_ICLOGS = 2;
export const XLOG_MAX_ICLOGS = 8;
/**
 * logbsize values accepted here. Linux also takes 128 and 256 KiB; those exceed one
 * XFS_BUF_MAX_PAGES buffer of this model.
 */
export const XLOG_ICLOG_SIZES: readonly number[] = [16384, 32768, 65536];

/* record header words (byte offsets, big-endian) */
const H_MAGIC = 0;
const H_CYCLE = 4;
const H_RECORD = 8;
const H_LEN = 12;
const H_CRC = 16;
const H_TYPE = 20;

const MAX_BUF_BYTES = XFS_BUF_MAX_PAGES * PAGE_SIZE;

export interface XlogOptions {
  /** Seed of the log's contents and geometry (default 1). */
  seed?: number;
  /** Basic blocks in the on-disk log (default 8192: 4 MiB). */
  logBlocks?: number;
  /** Log records between tail and head, replayed at recovery (default 4). */
  records?: number;
  /** Data bytes per record, a multiple of BBSIZE up to 64 KiB (default 32 KiB). */
  recordSize?: number;
  /** xlog_find_head's buffer, a multiple of BBSIZE up to 64 KiB (default 64 KiB). */
  findBufSize?: number;
  /** logbufs: iclogs, 2..8 (default 8). */
  iclogCount?: number;
  /** logbsize: bytes per iclog, 16, 32 or 64 KiB (default 32 KiB). */
  iclogSize?: number;
  /** The log on disk ends with an unmount record (default false: an unclean shutdown). */
  clean?: boolean;
}

export interface XlogStats {
  mounted: boolean;
  /** The head found by xlog_find_head (-1 before recovery). */
  headBlock: number;
  tailBlock: number;
  cycle: number;
  /** Buffers recovery allocated, and of them the multi-page (vmapped) ones. */
  recoveryBuffers: number;
  recoveryVmaps: number;
  /** Chunks and records read into recovery buffers. */
  recoveryReads: number;
  recordsReplayed: number;
  /** Mounts that found the log clean (no replay) and that recovered a dirty log. */
  cleanMounts: number;
  dirtyMounts: number;
  /** Unmounts after xfs_force_shutdown (no unmount record written). */
  shutdowns: number;
  /** iclogs currently allocated, and of them the vmapped ones. */
  iclogs: number;
  iclogVmaps: number;
  /** Corruption errors found by the log. */
  errors: number;
}

function intOption(v: unknown, lo: number, hi: number, what: string, fallback: number): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) {
    throw new RangeError(`Xlog: ${what} must be an integer in ${lo}..${hi}, got ${String(v)}`);
  }
  return v;
}

/** The log record's data checksum here: FNV-1a (32-bit) over bytes [off, off + len). */
export function xlogChecksum(b: Uint8Array, off: number, len: number): number {
  let h = 0x811c9dc5;
  for (let i = off, end = off + len; i < end; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
  return h >>> 0;
}

/** xlog_get_cycle: a header block keeps its cycle in its second word. */
function cycleOf(b: Uint8Array, o: number): number {
  const w = rd32(b, o);
  return w === XLOG_HEADER_MAGIC_NUM ? rd32(b, o + H_CYCLE) : w;
}

export class Xlog {
  readonly bufs: XfsBufCache;
  readonly seed: number;
  readonly logBlocks: number;
  readonly records: number;
  readonly recordSize: number;
  readonly findBufSize: number;
  readonly iclogCount: number;
  readonly iclogSize: number;
  /** The current cycle; blocks after the head carry cycle - 1. */
  readonly cycle: number;
  /** Where the generator put the tail and head (recovery must find the head). */
  readonly tailBlock: number;
  readonly headBlock: number;

  readonly #key: number;
  readonly #recBB: number;
  /** FNV-1a of each record's data, as its header records it. */
  readonly #crc: Uint32Array;
  readonly #scratch = new Uint8Array(MAX_BUF_BYTES);
  readonly #readback = new Uint8Array(MAX_BUF_BYTES);
  readonly #iclogs: Int32Array;
  #nrIclogs = 0;
  #mounted = false;
  /** The on-disk log ends with an unmount record at headBlock (the head is one further). */
  #clean: boolean;
  /** XFS_FORCED_SHUTDOWN: the log is dead; unmount writes nothing. */
  #shutdown = false;
  #cleanMounts = 0;
  #dirtyMounts = 0;
  #shutdowns = 0;
  #foundHead = -1;
  /** What the last xlogFindHead saw before the head: an unmount record. */
  #foundClean = false;
  #recoveryBuffers = 0;
  #recoveryVmaps = 0;
  #recoveryReads = 0;
  #recordsReplayed = 0;
  #errors = 0;

  constructor(bufs: XfsBufCache, opts: XlogOptions = {}) {
    this.bufs = bufs;
    const seed = opts.seed ?? 1;
    if (typeof seed !== 'number' || !Number.isSafeInteger(seed))
      throw new TypeError(`Xlog: seed must be a safe integer, got ${String(seed)}`);
    this.seed = seed;
    const bbMult = (v: unknown, what: string, fallback: number): number => {
      const x = intOption(v, BBSIZE, MAX_BUF_BYTES, what, fallback);
      if (x % BBSIZE !== 0) throw new RangeError(`Xlog: ${what} must be a multiple of ${BBSIZE} bytes, got ${x}`);
      return x;
    };
    this.recordSize = bbMult(opts.recordSize, 'recordSize', 32768);
    this.findBufSize = bbMult(opts.findBufSize, 'findBufSize', 65536);
    this.records = intOption(opts.records, 1, 4096, 'records', 4);
    this.#recBB = this.recordSize / BBSIZE;
    const span = this.records * (1 + this.#recBB);
    // span, the unmount record, and a block of the previous cycle at each end.
    this.logBlocks = intOption(
      opts.logBlocks,
      span + 3,
      1 << 24,
      `logBlocks (${this.records} records of ${this.recordSize} bytes need ${span + 3})`,
      Math.max(8192, span + 3),
    );
    this.iclogCount = intOption(opts.iclogCount, XLOG_MIN_ICLOGS, XLOG_MAX_ICLOGS, 'iclogCount', XLOG_MAX_ICLOGS);
    const iclogSize = opts.iclogSize ?? 32768;
    if (!XLOG_ICLOG_SIZES.includes(iclogSize)) {
      throw new RangeError(
        `Xlog: iclogSize must be one of ${XLOG_ICLOG_SIZES.join(', ')} bytes, got ${String(iclogSize)}`,
      );
    }
    this.iclogSize = iclogSize;
    this.#iclogs = new Int32Array(this.iclogCount).fill(-1);
    if (opts.clean !== undefined && typeof opts.clean !== 'boolean')
      throw new TypeError(`Xlog: clean must be a boolean, got ${String(opts.clean)}`);
    this.#clean = opts.clean ?? false;

    // Geometry from the seed: the tail somewhere with room for the records before the end.
    this.#key = fmix32((seed >>> 0) ^ 0x10c5eed);
    this.cycle = 2 + (fmix32(this.#key ^ 1) % 5);
    this.tailBlock = 1 + (fmix32(this.#key ^ 2) % (this.logBlocks - span - 2));
    this.headBlock = this.tailBlock + span;
    this.#crc = new Uint32Array(this.records);
    for (let r = 0; r < this.records; r++) {
      const first = this.tailBlock + r * (1 + this.#recBB) + 1;
      this.#genBlocks(first, this.#recBB, this.#scratch, 0);
      this.#crc[r] = xlogChecksum(this.#scratch, 0, this.recordSize);
    }
  }

  /* ================================================================ mount */

  /**
   * xfs_log_mount, in Linux's order: allocate the log (the iclogs, held until unmount),
   * then recover. The recovery buffers are the mount's last frees. 0 or a negative errno.
   */
  xfsLogMount(): number {
    if (this.#mounted) return -EBUSY;
    let rc = this.xlogAllocLog();
    if (rc < 0) return rc;
    rc = this.xlogRecover();
    if (rc < 0) {
      this.#releaseIclogs();
      return rc;
    }
    this.#mounted = true;
    this.#shutdown = false;
    // From now on the running filesystem writes to the log: until a clean unmount puts an
    // unmount record at the head, the next mount has records to replay.
    this.#clean = false;
    return 0;
  }

  /**
   * xfs_force_shutdown(SHUTDOWN_LOG_IO_ERROR), as xfstests' godown does it: the log is
   * dead, so the unmount that follows writes no unmount record and the next mount must
   * recover. A no-op when not mounted.
   */
  xfsForceShutdown(): void {
    if (this.#mounted) this.#shutdown = true;
  }

  /** Whether the on-disk log ends with an unmount record. */
  get clean(): boolean {
    return this.#clean;
  }

  /**
   * xfs_log_unmount: write an unmount record through the first iclog's mapping (read back
   * and checked) -- unless the filesystem was shut down -- then release every iclog: their
   * addresses go to free_address now.
   */
  xfsLogUnmount(): number {
    if (!this.#mounted) return 0;
    if (this.#shutdown) {
      this.#shutdowns++;
      this.#releaseIclogs();
      this.#mounted = false;
      this.#shutdown = false;
      return 0;
    }
    let rc = 0;
    const bp = this.#iclogs[0]!;
    const s = this.#scratch;
    s.fill(0, 0, BBSIZE);
    wr32(s, H_MAGIC, XLOG_HEADER_MAGIC_NUM);
    wr32(s, H_CYCLE, this.cycle);
    wr32(s, H_TYPE, XLOG_UNMOUNT_TYPE);
    if (this.bufs.xfsBufIoFill(bp, s, 0, BBSIZE) < 0 || this.bufs.xfsBufIoRead(bp, this.#readback, 0, BBSIZE) < 0) {
      rc = this.#error('xlog_unmount_write', this.headBlock, bp, 'fault writing the unmount record through the iclog');
    } else if (
      rd32(this.#readback, H_TYPE) !== XLOG_UNMOUNT_TYPE ||
      rd32(this.#readback, H_MAGIC) !== XLOG_HEADER_MAGIC_NUM
    ) {
      rc = this.#error('xlog_unmount_write', this.headBlock, bp, 'unmount record did not read back');
    }
    if (rc === 0) this.#clean = true;
    this.#releaseIclogs();
    this.#mounted = false;
    return rc;
  }

  /**
   * xlog_alloc_log: iclogCount buffers of iclogSize, each with its record header written
   * through its mapping. Held (mapped) until unmount. 0 or a negative errno.
   */
  xlogAllocLog(): number {
    const s = this.#scratch;
    for (let i = 0; i < this.iclogCount; i++) {
      const bp = this.bufs.xfsBufGetNoaddr(this.iclogSize);
      if (bp < 0) {
        this.#releaseIclogs();
        return bp;
      }
      this.#iclogs[i] = bp;
      this.#nrIclogs++;
      s.fill(0, 0, BBSIZE);
      wr32(s, H_MAGIC, XLOG_HEADER_MAGIC_NUM);
      wr32(s, H_CYCLE, this.cycle);
      wr32(s, H_RECORD, i);
      wr32(s, H_LEN, this.iclogSize - BBSIZE);
      if (this.bufs.xfsBufIoFill(bp, s, 0, BBSIZE) < 0) {
        this.#releaseIclogs();
        return this.#error('xlog_alloc_log', -1, bp, 'fault writing the iclog header');
      }
    }
    return 0;
  }

  /** The iclog buffers (handles in the buffer cache), or [] when not mounted. */
  iclogBuffers(): number[] {
    return Array.from(this.#iclogs.subarray(0, this.#nrIclogs));
  }

  /* ============================================================ recovery */

  /**
   * xlog_recover: find the head, then the tail; a log that ends with an unmount record is
   * clean and nothing is replayed, otherwise the two passes. 0 or a negative errno.
   */
  xlogRecover(): number {
    const rc = this.xlogFindHead();
    if (rc < 0) return rc;
    if (this.#foundClean) {
      this.#cleanMounts++;
      return 0;
    }
    this.#dirtyMounts++;
    for (let pass = 1; pass <= 2; pass++) {
      const r = this.#recoveryPass(pass);
      if (r < 0) return r;
    }
    return 0;
  }

  /**
   * xlog_find_head: binary search for the first block of the previous cycle, reading the
   * log a buffer-sized chunk at a time into one (vmapped) buffer. Returns the head block or
   * a negative errno; a head other than the one written is a corruption.
   */
  xlogFindHead(): number {
    const bp = this.#getRecoveryBuffer(this.findBufSize);
    if (bp < 0) return bp;
    const bufBB = this.findBufSize / BBSIZE;
    const n = this.logBlocks;
    let loaded = -1;
    let failed = 0;
    const word = this.#readback;
    const probe = (bb: number): number => {
      const chunk = bb - (bb % bufBB);
      if (chunk !== loaded) {
        const nbb = Math.min(bufBB, n - chunk);
        this.#genBlocks(chunk, nbb, this.#scratch, 0);
        if (this.bufs.xfsBufIoFill(bp, this.#scratch, 0, nbb * BBSIZE) < 0) return -1;
        loaded = chunk;
        this.#recoveryReads++;
      }
      if (this.bufs.xfsBufIoRead(bp, word, 0, 8, (bb - chunk) * BBSIZE) < 0) return -1;
      return cycleOf(word, 0);
    };
    const c0 = probe(0);
    const cLast = probe(n - 1);
    let lo = 0;
    let hi = n - 1;
    if (c0 !== this.cycle || cLast !== this.cycle - 1) {
      failed = this.#error(
        'xlog_find_head',
        c0 !== this.cycle ? 0 : n - 1,
        bp,
        `cycle ${c0 !== this.cycle ? c0 : cLast} read back (expected ${c0 !== this.cycle ? this.cycle : this.cycle - 1})`,
      );
    } else {
      while (hi - lo > 1) {
        const mid = lo + ((hi - lo) >> 1);
        const c = probe(mid);
        if (c === this.cycle) lo = mid;
        else if (c === this.cycle - 1) hi = mid;
        else {
          failed = this.#error(
            'xlog_find_head',
            mid,
            bp,
            `cycle ${c} read back, neither ${this.cycle} nor ${this.cycle - 1}`,
          );
          break;
        }
      }
    }
    // xlog_find_tail, reduced to what decides recovery: the block before the head, read
    // through the same buffer. An unmount record there: clean, nothing to replay.
    this.#foundClean = false;
    if (failed === 0 && hi >= 1) {
      if (probe(hi - 1) < 0 || this.bufs.xfsBufIoRead(bp, word, 0, H_TYPE + 4, (hi - 1 - loaded) * BBSIZE) < 0) {
        failed = this.#error('xlog_find_tail', hi - 1, bp, 'fault reading the block before the head');
      } else {
        this.#foundClean = rd32(word, H_MAGIC) === XLOG_HEADER_MAGIC_NUM && rd32(word, H_TYPE) === XLOG_UNMOUNT_TYPE;
      }
    }
    this.bufs.xfsBufRelse(bp);
    if (failed < 0) return failed;
    const head = this.#head();
    if (hi !== head)
      return this.#error('xlog_find_head', hi, -1, `head found at block ${hi}, the log's head is ${head}`);
    this.#foundHead = hi;
    return hi;
  }

  stats(): XlogStats {
    let iclogVmaps = 0;
    for (let i = 0; i < this.#nrIclogs; i++) if (this.bufs.bufPfns(this.#iclogs[i]!).length > 1) iclogVmaps++;
    return {
      mounted: this.#mounted,
      headBlock: this.#foundHead,
      tailBlock: this.tailBlock,
      cycle: this.cycle,
      recoveryBuffers: this.#recoveryBuffers,
      recoveryVmaps: this.#recoveryVmaps,
      recoveryReads: this.#recoveryReads,
      recordsReplayed: this.#recordsReplayed,
      cleanMounts: this.#cleanMounts,
      dirtyMounts: this.#dirtyMounts,
      shutdowns: this.#shutdowns,
      iclogs: this.#nrIclogs,
      iclogVmaps,
      errors: this.#errors,
    };
  }

  /* ============================================================ internals */

  #error(func: string, bn: number, bp: number, reason: string): number {
    this.#errors++;
    return this.bufs.xfsCorruptionError(func, bn, bp, `log: ${reason}`);
  }

  #getRecoveryBuffer(len: number): number {
    const bp = this.bufs.xfsBufGetNoaddr(len);
    if (bp < 0) return bp;
    this.#recoveryBuffers++;
    if (len > PAGE_SIZE) this.#recoveryVmaps++;
    return bp;
  }

  #releaseIclogs(): void {
    for (let i = 0; i < this.#nrIclogs; i++) {
      this.bufs.xfsBufRelse(this.#iclogs[i]!);
      this.#iclogs[i] = -1;
    }
    this.#nrIclogs = 0;
  }

  /** One pass over the records: header into a one-page buffer, data into a vmapped one. */
  #recoveryPass(pass: number): number {
    const hbp = this.#getRecoveryBuffer(BBSIZE);
    if (hbp < 0) return hbp;
    const dbp = this.#getRecoveryBuffer(this.recordSize);
    if (dbp < 0) {
      this.bufs.xfsBufRelse(hbp);
      return dbp;
    }
    const s = this.#scratch;
    const rb = this.#readback;
    const bufs = this.bufs;
    let rc = 0;
    const func = pass === 1 ? 'xlog_do_recovery_pass(PASS1)' : 'xlog_do_recovery_pass(PASS2)';
    for (let r = 0; r < this.records && rc === 0; r++) {
      const bb = this.tailBlock + r * (1 + this.#recBB);
      this.#genBlocks(bb, 1, s, 0);
      if (bufs.xfsBufIoFill(hbp, s, 0, BBSIZE) < 0 || bufs.xfsBufIoRead(hbp, rb, 0, BBSIZE) < 0) {
        rc = this.#error(func, bb, hbp, 'fault through the header buffer');
        break;
      }
      this.#recoveryReads++;
      if (
        rd32(rb, H_MAGIC) !== XLOG_HEADER_MAGIC_NUM ||
        rd32(rb, H_RECORD) !== r ||
        rd32(rb, H_CYCLE) !== this.cycle ||
        rd32(rb, H_LEN) !== this.recordSize
      ) {
        rc = this.#error(
          func,
          bb,
          hbp,
          `bad record header (magic 0x${rd32(rb, H_MAGIC).toString(16)}, record ${rd32(rb, H_RECORD)})`,
        );
        break;
      }
      const crc = rd32(rb, H_CRC);
      this.#genBlocks(bb + 1, this.#recBB, s, 0);
      rb.fill(0, 0, this.recordSize);
      if (bufs.xfsBufIoFill(dbp, s, 0, this.recordSize) < 0 || bufs.xfsBufIoRead(dbp, rb, 0, this.recordSize) < 0) {
        rc = this.#error(func, bb + 1, dbp, 'fault through the data buffer');
        break;
      }
      this.#recoveryReads++;
      const got = xlogChecksum(rb, 0, this.recordSize);
      if (got !== crc) {
        rc = this.#error(
          func,
          bb + 1,
          dbp,
          `record ${r} data checksum 0x${got.toString(16)} != header's 0x${crc.toString(16)}`,
        );
        break;
      }
      if (pass === 2) this.#recordsReplayed++;
    }
    bufs.xfsBufRelse(dbp);
    bufs.xfsBufRelse(hbp);
    return rc;
  }

  /** The first block of the previous cycle: past the unmount record when the log is clean. */
  #head(): number {
    return this.#clean ? this.headBlock + 1 : this.headBlock;
  }

  /** Generate basic blocks [first, first + n) of the on-disk log into dst at off. */
  #genBlocks(first: number, n: number, dst: Uint8Array, off: number): void {
    const recBB = this.#recBB;
    const key = this.#key;
    const head = this.#head();
    for (let k = 0; k < n; k++) {
      const bb = first + k;
      const o = off + k * BBSIZE;
      if (this.#clean && bb === this.headBlock) {
        dst.fill(0, o, o + BBSIZE);
        wr32(dst, o + H_MAGIC, XLOG_HEADER_MAGIC_NUM);
        wr32(dst, o + H_CYCLE, this.cycle);
        wr32(dst, o + H_TYPE, XLOG_UNMOUNT_TYPE);
        continue;
      }
      const rel = bb - this.tailBlock;
      if (rel >= 0 && bb < this.headBlock && rel % (1 + recBB) === 0) {
        const r = rel / (1 + recBB);
        dst.fill(0, o, o + BBSIZE);
        wr32(dst, o + H_MAGIC, XLOG_HEADER_MAGIC_NUM);
        wr32(dst, o + H_CYCLE, this.cycle);
        wr32(dst, o + H_RECORD, r);
        wr32(dst, o + H_LEN, this.recordSize);
        wr32(dst, o + H_CRC, this.#crc[r]!);
        continue;
      }
      wr32(dst, o, bb < head ? this.cycle : this.cycle - 1);
      for (let w = 4; w < BBSIZE; w += 4) wr32(dst, o + w, fmix32(key ^ Math.imul(bb, 0x9e3779b1) ^ w));
    }
  }
}
