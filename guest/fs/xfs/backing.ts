/*
 * The XFS "disk": one large directory whose directory blocks are generated on demand,
 * deterministically, from a seed -- the backing store that xfs_buf reads into vmapped
 * multi-page buffers.
 *
 * A directory block (dirBlockSize: 4, 8, 16, 32 or 64 KiB, i.e. 1..16 pages) is laid out
 * big-endian, as XFS data is on disk:
 *
 *   0   magic        u32  XFS_DIR2_BLOCK_MAGIC 0x58443242 ("XD2B" in a hex dump)
 *   4   blkno        u32  directory block number
 *   8   count        u32  entries in this block
 *  12   first        u32  directory index of the block's first entry
 *  16   entries      count x 32 bytes:
 *         0  inumber  u64  (hi, lo words)
 *         8  namelen  u8
 *         9  name     namelen bytes: "f-<index, 6+ digits>-<8 hex digits of hash(seed, index)>"
 *            zero padding
 *        30  tag      u16  the entry's byte offset in the block (as XFS dir2 data entries)
 *  ...   zero fill
 *  -8    used         u32  bytes in use (16 + 32 x count)
 *  -4    checksum     u32  dirChecksum() (FNV-1a multiply, 4 lanes of LE words) of [0, size - 4)
 *
 * The entry size and name length are geometry (DirectoryImageOptions.entryBytes, nameLen):
 * by default an entry is 32 bytes and a name "f-<index>-<hash>" (17..21 bytes). Larger
 * entries stand for long names and for the free space of a split directory btree: David
 * Chinner's test (seed thread, 2007-10-23 07:04) put ~100,000 files in ~1,700 64 KiB
 * blocks, about 1,100 bytes of block per entry (--dir-entry-bytes 1104: 59 a block, 1,695
 * blocks). A fixed nameLen pads every name with hex of its hash to that length. An entry
 * is always a multiple of 8 bytes, as XFS's dir2 data entries are.
 *
 * Nothing is stored: readBlock() regenerates a block into the caller's bytes, which the
 * caller then copies into guest memory through its MMU. Every entry is a fixed 32 bytes,
 * so which entries a block holds is arithmetic, with no per-entry objects anywhere.
 *
 * Cost (measured on this machine, Node 20.20, warm): readBlock of a 64 KiB block (2047
 * entries + checksum) ~0.10 ms, of a 4 KiB block ~7 us; verifyBlock of a 64 KiB block
 * ~32 us, of which dirChecksum ~18 us. test/backing.test.ts asserts < 1 ms per 64 KiB block.
 */
import { PAGE_SIZE } from '../../../src/abi/xen.js';
import { Rng } from '../../lib/random.js';

export const XFS_DIR2_BLOCK_MAGIC = 0x58443242;
/** Directory block sizes XFS accepts with 4 KiB pages: 1, 2, 4, 8 or 16 pages. */
export const XFS_DIR_BLOCK_SIZES: readonly number[] = [4096, 8192, 16384, 32768, 65536];

export const DIR_HDR_SIZE = 16;
export const DIR_TAIL_SIZE = 8;
export const DIR_ENTRY_SIZE = 32;
/** Longest name that fits an entry: 32 - inumber(8) - namelen(1) - tag(2). */
export const DIR_NAME_MAX = DIR_ENTRY_SIZE - 11;
/** Directory indices are written with at most 10 digits, so "f-" + 10 + "-" + 8 = 21. */
export const DIR_MAX_FILES = 0x7fffffff;

/** XFS's MAXNAMELEN - 1: the longest name a directory entry holds. */
export const XFS_MAXNAMELEN = 255;
/** Lowest inode number handed to the directory's files (the root and AG headers sit below). */
const INO_FLOOR = 128;
const TWO_32 = 0x1_0000_0000;

/** ASCII '0'..'9', 'a'..'f'. */
const HEX = new Uint8Array([48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 97, 98, 99, 100, 101, 102]);
const CH_f = 0x66;
const CH_DASH = 0x2d;
const CH_0 = 0x30;
/** Scratch decimal digits of the current directory index (single-threaded use per call). */
const DIGITS = new Uint8Array(10);

/** Entries of `entryBytes` that fit one directory block of `blockSize` bytes. */
export function entriesPerBlock(blockSize: number, entryBytes = DIR_ENTRY_SIZE): number {
  return Math.floor((blockSize - DIR_HDR_SIZE - DIR_TAIL_SIZE) / entryBytes);
}

/** The longest name an entry of `entryBytes` holds: minus inumber(8), namelen(1), tag(2). */
export function maxNameLen(entryBytes: number): number {
  return Math.min(XFS_MAXNAMELEN, entryBytes - 11);
}

/** The shortest fixed name length for `files` files: "f-" + index digits + "-" + 8 hex. */
export function minNameLen(files: number): number {
  return 2 + Math.max(6, String(Math.max(0, files - 1)).length) + 1 + 8;
}

/**
 * Plain FNV-1a (32-bit) over bytes[off, off + len), any length: a general byte checksum
 * (the log's records use it). Directory blocks use the faster dirChecksum.
 */
export function fnv1a32(bytes: Uint8Array, off: number, len: number): number {
  let h = 0x811c9dc5;
  const end = off + len;
  for (let i = off; i < end; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
  return h >>> 0;
}

function le32(b: Uint8Array, o: number): number {
  return b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16) | (b[o + 3]! << 24);
}

/**
 * The directory block checksum: FNV-1a's multiply applied to 32-bit little-endian words
 * in four interleaved lanes (word i goes to lane i % 4; leftover words to lane 0), with a
 * xor-shift after each multiply so a change in a word's high bits reaches the low bits.
 * Every step is a bijection of its lane, so any single changed word changes the result.
 * Four lanes because the multiply's latency, not memory, bounds a one-lane hash; aligned
 * input is read through an Int32Array view, unaligned input byte by byte (same result).
 * len must be a multiple of 4.
 */
export function dirChecksum(bytes: Uint8Array, off: number, len: number): number {
  const nw = len >>> 2;
  return ((bytes.byteOffset + off) & 3) === 0
    ? checksumAligned(new Int32Array(bytes.buffer, bytes.byteOffset + off, nw), nw)
    : checksumUnaligned(bytes, off, nw);
}

const FNV_BASIS = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

// Separate functions with separate loop counters: V8 keeps the four-lane loop tight
// (about 2x faster than one function sharing the index across both loops).
function checksumAligned(w: Int32Array, nw: number): number {
  let h0 = FNV_BASIS;
  let h1 = 0x050c5d1f;
  let h2 = 0x2f9d6c3b;
  let h3 = 0x6b43a9b5;
  const n4 = nw & ~3;
  for (let i = 0; i < n4; i += 4) {
    h0 = Math.imul(h0 ^ w[i]!, FNV_PRIME);
    h0 ^= h0 >>> 15;
    h1 = Math.imul(h1 ^ w[i + 1]!, FNV_PRIME);
    h1 ^= h1 >>> 15;
    h2 = Math.imul(h2 ^ w[i + 2]!, FNV_PRIME);
    h2 ^= h2 >>> 15;
    h3 = Math.imul(h3 ^ w[i + 3]!, FNV_PRIME);
    h3 ^= h3 >>> 15;
  }
  for (let j = n4; j < nw; j++) {
    h0 = Math.imul(h0 ^ w[j]!, FNV_PRIME);
    h0 ^= h0 >>> 15;
  }
  return foldLanes(h0, h1, h2, h3);
}

function checksumUnaligned(b: Uint8Array, off: number, nw: number): number {
  let h0 = FNV_BASIS;
  let h1 = 0x050c5d1f;
  let h2 = 0x2f9d6c3b;
  let h3 = 0x6b43a9b5;
  const n4 = nw & ~3;
  for (let i = 0; i < n4; i += 4) {
    const o = off + 4 * i;
    h0 = Math.imul(h0 ^ le32(b, o), FNV_PRIME);
    h0 ^= h0 >>> 15;
    h1 = Math.imul(h1 ^ le32(b, o + 4), FNV_PRIME);
    h1 ^= h1 >>> 15;
    h2 = Math.imul(h2 ^ le32(b, o + 8), FNV_PRIME);
    h2 ^= h2 >>> 15;
    h3 = Math.imul(h3 ^ le32(b, o + 12), FNV_PRIME);
    h3 ^= h3 >>> 15;
  }
  for (let j = n4; j < nw; j++) {
    h0 = Math.imul(h0 ^ le32(b, off + 4 * j), FNV_PRIME);
    h0 ^= h0 >>> 15;
  }
  return foldLanes(h0, h1, h2, h3);
}

/** Fold the lanes in order (so moving a word to another lane changes the result), then mix. */
function foldLanes(h0: number, h1: number, h2: number, h3: number): number {
  let h = Math.imul(h0 ^ ((h1 >>> 7) | (h1 << 25)), FNV_PRIME);
  h = Math.imul(h ^ ((h2 >>> 13) | (h2 << 19)), FNV_PRIME);
  h = Math.imul(h ^ ((h3 >>> 19) | (h3 << 13)), FNV_PRIME);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Big-endian 32-bit read (XFS's on-disk byte order). */
export function rd32(b: Uint8Array, o: number): number {
  return ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
}

/** Big-endian 32-bit write. */
export function wr32(b: Uint8Array, o: number, v: number): void {
  b[o] = v >>> 24;
  b[o + 1] = v >>> 16;
  b[o + 2] = v >>> 8;
  b[o + 3] = v;
}

function hex32(v: number): string {
  return `0x${(v >>> 0).toString(16).padStart(8, '0')}`;
}

function checkBlockSize(blockSize: unknown, what: string): number {
  if (typeof blockSize !== 'number' || !XFS_DIR_BLOCK_SIZES.includes(blockSize)) {
    throw new RangeError(
      `${what}: dirBlockSize must be one of ${XFS_DIR_BLOCK_SIZES.join(', ')} bytes ` +
        `(1, 2, 4, 8 or 16 pages), got ${String(blockSize)}`,
    );
  }
  return blockSize;
}

function checkBytes(bytes: unknown, off: number, len: number, what: string): asserts bytes is Uint8Array {
  if (!(bytes instanceof Uint8Array)) {
    throw new TypeError(`${what}: expected a Uint8Array, got ${Object.prototype.toString.call(bytes)}`);
  }
  if (!Number.isInteger(off) || off < 0 || off + len > bytes.length) {
    throw new RangeError(
      `${what}: offset ${off} + block size ${len} does not fit a ${bytes.length}-byte array ` +
        `(offset must be an integer from 0 to ${Math.max(0, bytes.length - len)})`,
    );
  }
}

/**
 * Check one directory block in bytes[off, off + blockSize): magic, block number, entry
 * count, used bytes, checksum, then each entry's tag and name length. Returns true, or a
 * reason naming the first thing wrong. Works without the seed (anything with a valid
 * checksum and layout passes); DirectoryImage.verifyBlock also checks the block belongs
 * where it was read from.
 */
export function verifyBlock(
  bytes: Uint8Array,
  off: number,
  blockSize: number,
  expectedBlockNo: number,
  entryBytes = DIR_ENTRY_SIZE,
): true | string {
  checkBlockSize(blockSize, 'verifyBlock');
  checkBytes(bytes, off, blockSize, 'verifyBlock');
  const magic = rd32(bytes, off);
  if (magic !== XFS_DIR2_BLOCK_MAGIC) {
    return `bad magic ${hex32(magic)} (expected ${hex32(XFS_DIR2_BLOCK_MAGIC)} "XD2B")`;
  }
  const blkno = rd32(bytes, off + 4);
  if (blkno !== expectedBlockNo) return `block number ${blkno} (expected ${expectedBlockNo})`;
  const count = rd32(bytes, off + 8);
  const max = entriesPerBlock(blockSize, entryBytes);
  if (count > max) return `entry count ${count} exceeds ${max} for a ${blockSize}-byte block`;
  const used = rd32(bytes, off + blockSize - 8);
  if (used !== DIR_HDR_SIZE + count * entryBytes) {
    return `used bytes ${used} disagree with ${count} entries (expected ${DIR_HDR_SIZE + count * entryBytes})`;
  }
  const stored = rd32(bytes, off + blockSize - 4);
  const computed = dirChecksum(bytes, off, blockSize - 4);
  if (stored !== computed) return `checksum ${hex32(stored)} != computed ${hex32(computed)}`;
  const tagOff = entryBytes - 2;
  const nameMax = maxNameLen(entryBytes);
  for (let i = 0, e = DIR_HDR_SIZE; i < count; i++, e += entryBytes) {
    const tag = (bytes[off + e + tagOff]! << 8) | bytes[off + e + tagOff + 1]!;
    if (tag !== e) return `entry ${i}: tag ${tag} != its offset ${e}`;
    const namelen = bytes[off + e + 8]!;
    if (namelen === 0 || namelen > nameMax) return `entry ${i}: name length ${namelen} (1..${nameMax})`;
  }
  return true;
}

export interface DirectoryImageOptions {
  /** Any safe integer; the same seed gives the same bytes. */
  seed: number;
  /** Files in the directory, 1..2^31-1. */
  files: number;
  /** Directory block size in bytes: 4096, 8192, 16384, 32768 or 65536. */
  dirBlockSize: number;
  /** Bytes each entry takes in its block: a multiple of 8, 32 up to the block's room (default 32). */
  entryBytes?: number;
  /** Every name this long (minNameLen(files)..maxNameLen(entryBytes)); default: 17..21 bytes. */
  nameLen?: number;
}

export class DirectoryImage {
  readonly seed: number;
  readonly files: number;
  readonly dirBlockSize: number;
  /** Pages per directory block: the size of the xfs_buf (and its vmap) in pages. */
  readonly pagesPerBlock: number;
  readonly entriesPerBlock: number;
  readonly entryBytes: number;
  /** Fixed name length, or 0: names as short as their index allows. */
  readonly nameLen: number;
  /** Directory blocks on the "disk": ceil(files / entriesPerBlock). */
  readonly nblocks: number;
  /** Inode number of directory index 0; file i has inumber inoBase + i. */
  readonly inoBase: number;
  /** Key of the per-entry name hash, derived from the seed. */
  readonly #nameKey: number;

  constructor(opts: DirectoryImageOptions) {
    if (opts === null || typeof opts !== 'object') {
      throw new TypeError('new DirectoryImage(opts): opts must be { seed, files, dirBlockSize }');
    }
    const { seed, files, dirBlockSize } = opts;
    if (typeof seed !== 'number' || !Number.isSafeInteger(seed)) {
      throw new TypeError(`new DirectoryImage: seed must be a safe integer, got ${String(seed)}`);
    }
    if (typeof files !== 'number' || !Number.isInteger(files) || files < 1 || files > DIR_MAX_FILES) {
      throw new RangeError(
        `new DirectoryImage: files must be an integer from 1 to ${DIR_MAX_FILES}, got ${String(files)}`,
      );
    }
    this.dirBlockSize = checkBlockSize(dirBlockSize, 'new DirectoryImage');
    this.seed = seed;
    this.files = files;
    this.pagesPerBlock = dirBlockSize / PAGE_SIZE;
    const eb = opts.entryBytes ?? DIR_ENTRY_SIZE;
    const room = dirBlockSize - DIR_HDR_SIZE - DIR_TAIL_SIZE;
    if (typeof eb !== 'number' || !Number.isInteger(eb) || eb < DIR_ENTRY_SIZE || eb > room || eb % 8 !== 0) {
      throw new RangeError(
        `new DirectoryImage: entryBytes must be a multiple of 8 from ${DIR_ENTRY_SIZE} to ${room - (room % 8)} ` +
          `for ${dirBlockSize}-byte blocks, got ${String(eb)}`,
      );
    }
    this.entryBytes = eb;
    const nl = opts.nameLen ?? 0;
    const lo = minNameLen(files);
    const hi = maxNameLen(eb);
    if (nl !== 0 && (typeof nl !== 'number' || !Number.isInteger(nl) || nl < lo || nl > hi)) {
      throw new RangeError(
        `new DirectoryImage: nameLen must be an integer from ${lo} (the names of ${files} files) to ${hi} ` +
          `(what a ${eb}-byte entry holds), got ${String(nl)}`,
      );
    }
    this.nameLen = nl;
    this.entriesPerBlock = entriesPerBlock(dirBlockSize, eb);
    this.nblocks = Math.ceil(files / this.entriesPerBlock);
    const rng = new Rng(seed).fork('xfs-dir');
    this.#nameKey = rng.nextU32();
    this.inoBase = INO_FLOOR + rng.nextInt(1 << 20) * 64;
  }

  /** Total size of the directory's blocks in bytes. */
  get bytes(): number {
    return this.nblocks * this.dirBlockSize;
  }

  #checkBlockNo(blockNo: number, what: string): void {
    if (!Number.isInteger(blockNo) || blockNo < 0 || blockNo >= this.nblocks) {
      throw new RangeError(`${what}: block number must be an integer from 0 to ${this.nblocks - 1}, got ${blockNo}`);
    }
  }

  /** Entries held by directory block blockNo (the last block may be partly filled). */
  entriesInBlock(blockNo: number): number {
    this.#checkBlockNo(blockNo, 'DirectoryImage.entriesInBlock');
    const first = blockNo * this.entriesPerBlock;
    return Math.min(this.entriesPerBlock, this.files - first);
  }

  /** The directory block holding directory index `index`. */
  blockOfEntry(index: number): number {
    if (!Number.isInteger(index) || index < 0 || index >= this.files) {
      throw new RangeError(
        `DirectoryImage.blockOfEntry: index must be an integer from 0 to ${this.files - 1}, got ${index}`,
      );
    }
    return Math.floor(index / this.entriesPerBlock);
  }

  /** 32-bit name hash of directory index `index` (the hex part of its name). */
  nameHash(index: number): number {
    let h = (this.#nameKey ^ Math.imul(index, 0x9e3779b9)) >>> 0;
    h ^= h >>> 16;
    h = Math.imul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0;
  }

  /** The file name of directory index `index` (allocates a string: not for hot paths). */
  entryName(index: number): string {
    this.blockOfEntry(index); // range check
    const h = this.nameHash(index).toString(16).padStart(8, '0');
    const base = `f-${String(index).padStart(6, '0')}-${h}`;
    let name = base;
    for (let j = 0; name.length < this.nameLen; j++) name += h[j % 8]!;
    return name;
  }

  /**
   * Generate directory block blockNo into dst[dstOff, dstOff + dirBlockSize). Returns the
   * number of bytes written (dirBlockSize). Allocates nothing.
   */
  readBlock(blockNo: number, dst: Uint8Array, dstOff = 0): number {
    this.#checkBlockNo(blockNo, 'DirectoryImage.readBlock');
    const size = this.dirBlockSize;
    checkBytes(dst, dstOff, size, 'DirectoryImage.readBlock');
    const count = this.entriesInBlock(blockNo);
    const first = blockNo * this.entriesPerBlock;
    dst.fill(0, dstOff, dstOff + size);
    wr32(dst, dstOff, XFS_DIR2_BLOCK_MAGIC);
    wr32(dst, dstOff + 4, blockNo);
    wr32(dst, dstOff + 8, count);
    wr32(dst, dstOff + 12, first);

    const inoBase = this.inoBase;
    const nameKey = this.#nameKey;
    const eb = this.entryBytes;
    const tagOff = eb - 2;
    const fixedLen = this.nameLen;
    // The block's indices are consecutive: keep them as decimal digits and count up,
    // rather than dividing by ten for every digit of every name.
    const digits = DIGITS;
    let ndig = 6;
    for (let t = 1000000; t <= first + count - 1 && ndig < 10; t *= 10) ndig++;
    let v = first;
    for (let d = ndig - 1; d >= 0; d--) {
      digits[d] = CH_0 + (v % 10);
      v = Math.floor(v / 10);
    }
    for (let i = 0; i < count; i++) {
      const index = first + i;
      const e = DIR_HDR_SIZE + i * eb;
      const p = dstOff + e;
      const ino = inoBase + index;
      wr32(dst, p, Math.floor(ino / TWO_32));
      wr32(dst, p + 4, ino >>> 0);
      // Name: "f-" digits "-" 8 hex. Leading zeros are dropped when the block's last index
      // needs more than six digits but this one does not.
      let lead = 0;
      while (lead < ndig - 6 && digits[lead] === CH_0) lead++;
      const nd = ndig - lead;
      const baseLen = 2 + nd + 1 + 8;
      dst[p + 8] = fixedLen > 0 ? fixedLen : baseLen;
      let q = p + 9;
      dst[q++] = CH_f;
      dst[q++] = CH_DASH;
      for (let d = lead; d < ndig; d++) dst[q++] = digits[d]!;
      dst[q++] = CH_DASH;
      let h = (nameKey ^ Math.imul(index, 0x9e3779b9)) >>> 0;
      h ^= h >>> 16;
      h = Math.imul(h, 0x85ebca6b);
      h ^= h >>> 13;
      h = Math.imul(h, 0xc2b2ae35);
      h ^= h >>> 16;
      for (let sh = 28; sh >= 0; sh -= 4) dst[q++] = HEX[(h >>> sh) & 15]!;
      // A fixed name length: pad with the hash's hex digits again (as entryName does).
      for (let j = baseLen; j < fixedLen; j++) dst[q++] = HEX[(h >>> (28 - 4 * ((j - baseLen) % 8))) & 15]!;
      dst[p + tagOff] = e >>> 8;
      dst[p + tagOff + 1] = e & 0xff;
      // Count up in decimal.
      let d = ndig - 1;
      while (d >= 0 && digits[d] === CH_0 + 9) digits[d--] = CH_0;
      if (d >= 0) digits[d]!++;
    }
    wr32(dst, dstOff + size - 8, DIR_HDR_SIZE + count * eb);
    wr32(dst, dstOff + size - 4, dirChecksum(dst, dstOff, size - 4));
    return size;
  }

  /**
   * verifyBlock() for this directory: layout and checksum, plus the entry count and first
   * index that block blockNo must have. Returns true or the reason.
   */
  verifyBlock(bytes: Uint8Array, off: number, blockNo: number): true | string {
    this.#checkBlockNo(blockNo, 'DirectoryImage.verifyBlock');
    const r = verifyBlock(bytes, off, this.dirBlockSize, blockNo, this.entryBytes);
    if (r !== true) return r;
    const count = rd32(bytes, off + 8);
    const want = this.entriesInBlock(blockNo);
    if (count !== want) return `entry count ${count} (block ${blockNo} of this directory holds ${want})`;
    const first = rd32(bytes, off + 12);
    if (first !== blockNo * this.entriesPerBlock) {
      return `first index ${first} (expected ${blockNo * this.entriesPerBlock})`;
    }
    return true;
  }
}
