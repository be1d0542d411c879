/*
 * guest/fs/xfs/backing.ts: directory blocks are laid out as documented, deterministic in the
 * seed, verifiable (and corruption is caught with a reason), and fast to generate.
 */
import { describe, expect, it } from 'vitest';
import {
  DIR_ENTRY_SIZE,
  DIR_HDR_SIZE,
  DirectoryImage,
  XFS_DIR2_BLOCK_MAGIC,
  XFS_DIR_BLOCK_SIZES,
  entriesPerBlock,
  fnv1a32,
  dirChecksum,
  verifyBlock,
} from '../guest/fs/xfs/backing.js';

const dv = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, b.byteLength);

describe('DirectoryImage', () => {
  it('sizes the directory: entries per block, block count, pages per block', () => {
    const img = new DirectoryImage({ seed: 1, files: 10000, dirBlockSize: 65536 });
    expect(img.entriesPerBlock).toBe(2047); // (65536 - 16 - 8) / 32
    expect(img.nblocks).toBe(5);
    expect(img.pagesPerBlock).toBe(16);
    expect(img.entriesInBlock(0)).toBe(2047);
    expect(img.entriesInBlock(4)).toBe(10000 - 4 * 2047);
    expect(img.blockOfEntry(2047)).toBe(1);
    expect(img.bytes).toBe(5 * 65536);
    expect(entriesPerBlock(4096)).toBe(127);
    const one = new DirectoryImage({ seed: 1, files: 1, dirBlockSize: 4096 });
    expect(one.nblocks).toBe(1);
    expect(one.entriesInBlock(0)).toBe(1);
  });

  it('writes the documented big-endian layout at the given offset', () => {
    const img = new DirectoryImage({ seed: 7, files: 300, dirBlockSize: 8192 });
    const buf = new Uint8Array(8192 + 100).fill(0xee);
    expect(img.readBlock(1, buf, 100)).toBe(8192);
    expect(buf[99]).toBe(0xee); // nothing before the block is touched
    const blk = buf.subarray(100);
    const v = dv(blk);
    expect(v.getUint32(0)).toBe(XFS_DIR2_BLOCK_MAGIC);
    expect(String.fromCharCode(...blk.subarray(0, 4))).toBe('XD2B');
    expect(v.getUint32(4)).toBe(1);
    const per = entriesPerBlock(8192); // 255
    expect(v.getUint32(8)).toBe(300 - per);
    expect(v.getUint32(12)).toBe(per);
    // First entry of block 1 is directory index 255.
    const e = DIR_HDR_SIZE;
    const ino = v.getUint32(e) * 2 ** 32 + v.getUint32(e + 4);
    expect(ino).toBe(img.inoBase + per);
    const namelen = blk[e + 8]!;
    const name = String.fromCharCode(...blk.subarray(e + 9, e + 9 + namelen));
    expect(name).toBe(img.entryName(per));
    expect(name).toMatch(/^f-000255-[0-9a-f]{8}$/);
    expect(v.getUint16(e + DIR_ENTRY_SIZE - 2)).toBe(e); // tag = offset
    const used = DIR_HDR_SIZE + (300 - per) * DIR_ENTRY_SIZE;
    expect(v.getUint32(8192 - 8)).toBe(used);
    expect(blk.subarray(used, 8192 - 8).every((x) => x === 0)).toBe(true);
    expect(v.getUint32(8192 - 4)).toBe(dirChecksum(blk, 0, 8192 - 4));
  });

  it('names grow past six digits for large directories', () => {
    const img = new DirectoryImage({ seed: 3, files: 1_500_000, dirBlockSize: 4096 });
    const b = img.blockOfEntry(1_234_567);
    const buf = new Uint8Array(4096);
    img.readBlock(b, buf, 0);
    const i = 1_234_567 - b * img.entriesPerBlock;
    const e = DIR_HDR_SIZE + i * DIR_ENTRY_SIZE;
    const name = String.fromCharCode(...buf.subarray(e + 9, e + 9 + buf[e + 8]!));
    expect(name).toBe(img.entryName(1_234_567));
    expect(name.startsWith('f-1234567-')).toBe(true);
    expect(img.verifyBlock(buf, 0, b)).toBe(true);
  });

  it('is deterministic: same seed, same bytes; another seed, other names', () => {
    for (const size of XFS_DIR_BLOCK_SIZES) {
      const a = new DirectoryImage({ seed: 2007, files: 5000, dirBlockSize: size });
      const b = new DirectoryImage({ seed: 2007, files: 5000, dirBlockSize: size });
      const x = new Uint8Array(size);
      const y = new Uint8Array(size);
      for (const n of [0, a.nblocks - 1]) {
        a.readBlock(n, x, 0);
        y.fill(0x55);
        b.readBlock(n, y, 0);
        expect(Buffer.compare(x, y)).toBe(0);
      }
    }
    const a = new DirectoryImage({ seed: 1, files: 100, dirBlockSize: 4096 });
    const c = new DirectoryImage({ seed: 2, files: 100, dirBlockSize: 4096 });
    expect(a.entryName(5)).not.toBe(c.entryName(5));
    expect(a.entryName(5).slice(0, 9)).toBe(c.entryName(5).slice(0, 9));
  });

  it('verifies good blocks and reports what is wrong with bad ones', () => {
    const img = new DirectoryImage({ seed: 11, files: 4000, dirBlockSize: 16384 });
    const buf = new Uint8Array(16384);
    for (let n = 0; n < img.nblocks; n++) {
      img.readBlock(n, buf, 0);
      expect(img.verifyBlock(buf, 0, n)).toBe(true);
      expect(verifyBlock(buf, 0, 16384, n)).toBe(true);
    }
    img.readBlock(2, buf, 0);
    expect(verifyBlock(buf, 0, 16384, 3)).toBe('block number 2 (expected 3)');

    const flip = (at: number, fn: (b: Uint8Array) => void) => {
      img.readBlock(2, buf, 0);
      buf[at]! ^= 0x40;
      fn(buf);
    };
    flip(0, (b) => expect(verifyBlock(b, 0, 16384, 2)).toMatch(/^bad magic 0x18443242/));
    // A stray write into the middle of the data (what a stray RW alias would do).
    flip(5000, (b) =>
      expect(verifyBlock(b, 0, 16384, 2)).toMatch(/^checksum 0x[0-9a-f]{8} != computed 0x[0-9a-f]{8}$/),
    );
    // A stray write into the zero-filled tail of the last block.
    img.readBlock(img.nblocks - 1, buf, 0);
    buf[16000] = 1;
    expect(img.verifyBlock(buf, 0, img.nblocks - 1)).toMatch(/^checksum/);
    // A zeroed block (a page that was never filled).
    expect(verifyBlock(new Uint8Array(16384), 0, 16384, 0)).toMatch(/^bad magic 0x00000000/);
    // Valid layout but the wrong directory shape: caught by the image's own check.
    const small = new DirectoryImage({ seed: 11, files: 10, dirBlockSize: 16384 });
    small.readBlock(0, buf, 0);
    expect(verifyBlock(buf, 0, 16384, 0)).toBe(true);
    expect(img.verifyBlock(buf, 0, 0)).toBe('entry count 10 (block 0 of this directory holds 511)');
  });

  it('computes the same checksum through the aligned and unaligned paths', () => {
    const img = new DirectoryImage({ seed: 9, files: 600, dirBlockSize: 8192 });
    const a = new Uint8Array(8192);
    const u = new Uint8Array(8192 + 3);
    img.readBlock(0, a, 0);
    img.readBlock(0, u, 3); // off 3: byte-by-byte path
    expect(Buffer.compare(a, u.subarray(3))).toBe(0);
    expect(dirChecksum(u, 3, 8188)).toBe(dirChecksum(a, 0, 8188));
    expect(verifyBlock(u, 3, 8192, 0)).toBe(true);
    // Swapping two words between lanes changes the sum.
    const b = a.slice();
    b.copyWithin(16, 20, 24);
    b.set(a.subarray(16, 20), 20);
    expect(dirChecksum(b, 0, 8188)).not.toBe(dirChecksum(a, 0, 8188));
  });

  it('fnv1a32 is plain FNV-1a (reference vectors)', () => {
    const b = (t: string) => new TextEncoder().encode(t);
    expect(fnv1a32(b(''), 0, 0)).toBe(0x811c9dc5);
    expect(fnv1a32(b('a'), 0, 1)).toBe(0xe40c292c);
    expect(fnv1a32(b('foobar'), 0, 6)).toBe(0xbf9cf968);
    expect(fnv1a32(b('xfoobar'), 1, 6)).toBe(0xbf9cf968);
  });

  it('rejects bad arguments with what is accepted', () => {
    expect(() => new DirectoryImage({ seed: 1, files: 10, dirBlockSize: 12288 })).toThrow(
      /dirBlockSize must be one of 4096, 8192, 16384, 32768, 65536/,
    );
    expect(() => new DirectoryImage({ seed: 1, files: 0, dirBlockSize: 4096 })).toThrow(RangeError);
    expect(() => new DirectoryImage({ seed: 0.5, files: 1, dirBlockSize: 4096 })).toThrow(TypeError);
    const img = new DirectoryImage({ seed: 1, files: 1000, dirBlockSize: 4096 });
    expect(() => img.readBlock(img.nblocks, new Uint8Array(4096), 0)).toThrow(/from 0 to 7/);
    expect(() => img.readBlock(0, new Uint8Array(4096), 1)).toThrow(RangeError);
    expect(() => img.readBlock(0, [] as unknown as Uint8Array, 0)).toThrow(TypeError);
    expect(() => verifyBlock(new Uint8Array(4096), 0, 4000, 0)).toThrow(RangeError);
  });
});
