/*
 * stray-write: a hostile guest that tries to USE the stale alias. It runs the XFS scan
 * (lazy, as in 2007) and forks tasks; whenever one of its new page tables is still mapped
 * writable by a freed XFS buffer's vmap, it writes through that alias an entry mapping a
 * frame of ANOTHER domain (the target mfn), then reads that user address.
 *
 * Under the enforcing hypervisor the pin of such a page table is refused (the alias holds
 * PGT_writable_page), so the write only ever lands in a page that is not a page table:
 * nothing leaks. With --unenforced (a hypervisor without the writable-type rule, offered
 * only for this demonstration) the pin succeeds, the write lands in a live L1, and the
 * guest reads the other domain's data -- which the isolation check then reports.
 */
import {
  _PAGE_ACCESSED,
  _PAGE_PRESENT,
  _PAGE_RW,
  _PAGE_USER,
  MMUEXT_NEW_BASEPTR,
  FRAME_WORDS,
  PAGE_SIZE,
} from '../../src/abi/xen.js';
import { pteHi, pteLo } from '../../src/abi/pte.js';
import type { Rng } from '../lib/random.js';
import { mmuextOne } from '../arch/xen/hypercall.js';
import type { Kernel } from '../kernel/kernel.js';
import { T_PGD, T_PTE, T_STATE, TASK_PINNED } from '../kernel/state.js';
import { scanBlocks, xfsMount } from '../fs/xfs/mount.js';
import type { DirectoryImage } from '../fs/xfs/backing.js';
import type { XfsBufCache } from '../fs/xfs/xfs_buf.js';
import { doExit, runTask, switchToSwapper, taskCreate, USER_BASE } from '../mm/memory.js';
import type { Workload } from './driver.js';

/** The PTE slot the hostile entry goes into (a user address no task uses). */
const EVIL_SLOT = 500;

export interface StrayWriteOptions {
  seed: number;
  files: number;
  dirBlockBytes: number;
  /** A frame of another domain, and the word it holds (set up by the controller). */
  targetMfn: number;
  secret: number;
}

export class StrayWrite implements Workload {
  readonly #o: StrayWriteOptions;
  #cache: XfsBufCache | null = null;
  #image: DirectoryImage | null = null;
  #cursor = 0;
  readonly #tasks: number[] = [];
  readonly #pt = new Int32Array(8);
  readonly #n = { aliasedPageTables: 0, strayWrites: 0, foreignReads: 0, pinsRefused: 0 };

  constructor(o: StrayWriteOptions) {
    this.#o = o;
  }

  init(k: Kernel): void {
    if (k.id !== 0) return;
    const m = xfsMount(k, {
      strategy: 'lazy',
      seed: this.#o.seed,
      files: this.#o.files,
      dirBlockBytes: this.#o.dirBlockBytes,
    });
    this.#cache = m.cache;
    this.#image = m.image;
  }

  step(k: Kernel, rng: Rng): void {
    const cache = this.#cache;
    if (cache === null) return;
    if (rng.nextInt(2) === 0) {
      const r = scanBlocks(cache, this.#image!, this.#cursor, 4);
      this.#cursor = r.next;
      if (r.wrapped) cache.dropCaches();
      return;
    }
    const t = taskCreate(k, 1);
    if (t < 0) return;
    const w = k.state.w;
    const pte = w[k.state.t(t, T_PTE)]!;
    // Is the new PTE page still reachable through a freed buffer's vmap?
    const alias = pte >= 0 ? cache.strayAliasesOf(pte)[0] : undefined;
    if (alias) this.#n.aliasedPageTables++;
    if (!runTask(k, t, this.#pt)) {
      this.#n.pinsRefused++;
      return; // Xen refused the pin: the task is gone, the alias points at a plain page
    }
    this.#tasks.push(t);
    if (!alias || w[k.state.t(t, T_STATE)] !== TASK_PINNED) return;
    // The attack: a live, pinned L1, written through the stale alias.
    const rc = k.cpu.mmu.store64(
      alias.va + EVIL_SLOT * 8,
      pteLo(this.#o.targetMfn, _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | _PAGE_ACCESSED),
      pteHi(this.#o.targetMfn),
    );
    if (rc < 0) return;
    this.#n.strayWrites++;
    const pgd = k.kpt.pfnToMfn(w[k.state.t(t, T_PGD)]!);
    if (mmuextOne(k.cpu, MMUEXT_NEW_BASEPTR, pgd) < 0) return;
    k.cpu.mmu.setBaseptr(pgd);
    k.cpu.mmu.flushAll();
    const mfn = k.cpu.mmu.translate(USER_BASE + EVIL_SLOT * PAGE_SIZE, false, true);
    if (mfn === this.#o.targetMfn && k.mem32[mfn * FRAME_WORDS] === this.#o.secret >>> 0) {
      this.#n.foreignReads++;
      k.printk(
        `stray-write: read another domain's frame ${mfn.toString(16)} through a page table written via a stale XFS vmap`,
      );
    }
    switchToSwapper(k);
  }

  fini(k: Kernel): void {
    // Tasks whose page tables were subverted stay (the audit must see them); the rest exit.
    for (const t of this.#tasks.splice(0)) {
      const pte = k.state.w[k.state.t(t, T_PTE)]!;
      const subverted = pte >= 0 && (k.mem32[k.kpt.pfnToMfn(pte) * FRAME_WORDS + EVIL_SLOT * 2]! & _PAGE_PRESENT) !== 0;
      if (!subverted) doExit(k, t, this.#pt);
    }
    this.#cache?.dropCaches();
    this.#cache?.purgeAddresses('explicit');
    k.slab.kmemCacheShrinkAll(k.id);
  }

  stats(): Record<string, number> {
    return { ...this.#n };
  }
}
