/*
 * vmap-cycle: Nick Piggin's vmap microbenchmark shape (map 4 pages, touch them, unmap),
 * run through XFS's own path so each strategy pays what it really pays: every cycle is
 * xfs_buf_get_noaddr(16 KiB) -- pages allocated and vmapped --, a store into each page
 * through the mapping, and xfs_buf_relse -- freeAddress by the strategy's rules, pages
 * freed. Every vCPU has its own mount here (XFS's a_list is global in Linux; a per-vCPU
 * list changes when purges happen, not how much each costs).
 */
import type { Kernel } from '../kernel/kernel.js';
import type { Strategy } from '../../src/abi/kernel.js';
import { xfsMount } from '../fs/xfs/mount.js';
import type { XfsBufCache } from '../fs/xfs/xfs_buf.js';
import type { Workload } from './driver.js';
import { PAGE_SIZE } from '../../src/abi/xen.js';

const one = new Uint8Array(8);

export class VmapCycle implements Workload {
  readonly #strategy: Strategy;
  readonly #bytes: number;
  #cache: XfsBufCache | null = null;
  #cycles = 0;
  #errors = 0;

  readonly #warmup: number;

  /** `warmup` cycles run in init(), before the timed loop (JIT, first touches). */
  constructor(strategy: Strategy, pages = 4, warmup = 0) {
    this.#strategy = strategy;
    this.#bytes = pages * PAGE_SIZE;
    this.#warmup = warmup;
  }

  init(k: Kernel): void {
    this.#cache = xfsMount(k, {
      strategy: this.#strategy,
      seed: 1,
      files: 64,
      dirBlockBytes: 4096,
      maxBuffers: 0,
    }).cache;
    for (let i = 0; i < this.#warmup; i++) this.step(k);
    this.#cycles = 0;
  }

  step(k: Kernel): void {
    const c = this.#cache!;
    const bp = c.xfsBufGetNoaddr(this.#bytes);
    if (bp < 0) {
      this.#errors++;
      return;
    }
    const va = c.bufAddr(bp);
    for (let off = 0; off < this.#bytes; off += PAGE_SIZE) {
      if (k.cpu.mmu.writeBytes(va + off, one, 0, 8) < 0) this.#errors++;
    }
    c.xfsBufRelse(bp);
    this.#cycles++;
  }

  fini(k: Kernel): void {
    const c = this.#cache;
    if (c === null) return;
    c.purgeAddresses('explicit');
    k.vmalloc.vmUnmapAliases();
    k.kpt.flushPending();
    k.slab.kmemCacheShrinkAll(k.id);
  }

  stats(): Record<string, number> {
    return { cycles: this.#cycles, dataErrors: this.#errors };
  }
}
