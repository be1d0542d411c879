/*
 * Piscina worker of the "vmalloc" bench suite: one worker's share of one lib/test_vmalloc.c
 * case. It attaches to the case's shared VmallocSpace (the guest's real vmap layer, with the
 * reference KernelPageTables of guest/mm/kernel_pt_ref.ts -- no hypervisor), runs an untimed
 * warm-up, meets the other workers of the case at a barrier, worker 0 purges what the
 * warm-up left lazy, a second barrier starts them together, and each runs the test function
 * test_repeat_count times
 * and reports the average microseconds per run, as test_vmalloc does, plus the cost of one
 * iteration of the main loop alone.
 *
 * With --kpt flat the page tables are bench/workers/flat-kpt.ts instead (the layer alone).
 * Pages come from a per-worker stack of pfns (O(1), no locks) so the page allocator stays
 * out of the measurement. "*((u8 *)p) = 1" becomes kpt.touch(p): a load through the
 * reference page tables and TLB model, which also proves the mapping is there.
 */
import { PAGE_SIZE } from '../../src/abi/xen.js';
import type { KernelPageTables, PageAllocator, PageRefs } from '../../guest/mm/kernel_pt.js';
import { KernelPageTablesRef } from '../../guest/mm/kernel_pt_ref.js';
import { fls, VmallocSpace } from '../../guest/mm/vmalloc.js';
import { FlatKernelPageTables } from './flat-kpt.js';
import {
  B_ABORT,
  B_ARRIVED,
  B_GENERATION,
  BARRIER_TIMEOUT_MS,
  type VmallocTask,
  type VmallocTaskResult,
  type VmallocTestName,
} from './protocol.js';

/** ENOMEM as the allocator returns it. */
const NO_PAGE = -12;
/** x86_64 THREAD_ALIGN (THREAD_SIZE, 16 KiB without KASAN): fix_align uses it << 1. */
const THREAD_ALIGN = 16 * 1024;
/** The reference KernelPageTables logs every flush; drop the logs this often (iterations). */
const RESET_EVERY = 0xffff;

/** A LIFO stack of this worker's pfns: alloc_page / __free_page in O(1). */
class PfnStack implements PageAllocator {
  readonly #free: Int32Array;
  #top: number;

  constructor(base: number, count: number) {
    this.#free = new Int32Array(count);
    for (let i = 0; i < count; i++) this.#free[i] = base + count - 1 - i;
    this.#top = count;
  }

  allocPage(): number {
    return this.#top === 0 ? NO_PAGE : this.#free[--this.#top]!;
  }

  freePage(pfn: number): void {
    this.#free[this.#top++] = pfn;
  }
}

/** vmap_pages references: not used by these cases, counted for completeness. */
const refs: PageRefs = { getPage: () => {}, putPage: () => {} };

/** xorshift32: get_random_u32 for the random cases, seeded per worker. */
class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed | 0 || 0x9e3779b9;
  }
  u32(): number {
    let x = this.#s;
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    this.#s = x;
    return x >>> 0;
  }
}

/** What the cases need of a page table besides the interface: a load, and dropping logs. */
type BenchKpt = KernelPageTables & { touch(va: number): number; resetCounters(): void };

interface Ctx {
  vm: VmallocSpace;
  kpt: BenchKpt;
  pages: PfnStack;
  rng: Rng;
  nrPages: number;
  numOnlineCpus: number;
  /** Set by a case that failed: what went wrong. */
  error: string;
}

/** A test function: runs `loops` iterations; returns ns of the main loop, or -1 (ctx.error). */
type TestFn = (c: Ctx, loops: number) => number;

function fail(c: Ctx, what: string, rc: number): number {
  c.error = `${what} returned ${rc}${c.vm.messages.length ? `: ${c.vm.messages[c.vm.messages.length - 1]}` : ''}`;
  return -1;
}

/** vmalloc + "*p = 1" + vfree of `pages` pages, the body of several cases. */
function allocTouchFree(c: Ctx, pages: number): number {
  const p = c.vm.vmalloc(pages * PAGE_SIZE);
  if (p < 0) return fail(c, `vmalloc(${pages} pages)`, p);
  if (c.kpt.touch(p) < 0) return fail(c, 'touching the vmalloc area', -1);
  const rc = c.vm.vfree(p);
  return rc < 0 ? fail(c, 'vfree', rc) : 0;
}

const CASES: Record<VmallocTestName, TestFn> = {
  fix_size_alloc_test(c, loops) {
    const t0 = performance.now();
    for (let i = 0; i < loops; i++) {
      if (allocTouchFree(c, c.nrPages) < 0) return -1;
      if ((i & RESET_EVERY) === RESET_EVERY) c.kpt.resetCounters();
    }
    return (performance.now() - t0) * 1e6;
  },

  full_fit_alloc_test(c, loops) {
    const vm = c.vm;
    const junkLength = fls(c.numOnlineCpus) * ((32 * 1024 * 1024) / PAGE_SIZE);
    const ptr = vm.vmalloc(8 * junkLength);
    const junk = vm.vmalloc(8 * junkLength);
    if (ptr < 0 || junk < 0) return fail(c, 'vmalloc of the pointer arrays', Math.min(ptr, junk));
    const live = new Float64Array(junkLength);
    const junkVa = new Float64Array(junkLength);
    let ns = -1;
    let made = 0;
    for (; made < junkLength; made++) {
      live[made] = vm.vmalloc(PAGE_SIZE);
      junkVa[made] = vm.vmalloc(PAGE_SIZE);
      if (live[made]! < 0 || junkVa[made]! < 0) break;
    }
    if (made < junkLength) {
      fail(c, 'vmalloc of the junk areas', Math.min(live[made]!, junkVa[made]!));
      if (live[made]! >= 0) vm.vfree(live[made]!);
      if (junkVa[made]! >= 0) vm.vfree(junkVa[made]!);
    } else {
      for (let i = 0; i < junkLength; i++) vm.vfree(junkVa[i]!);
      const nrPages = c.nrPages;
      c.nrPages = 1; // the loop is fix_size_alloc_test's with one page
      ns = CASES.fix_size_alloc_test(c, loops);
      c.nrPages = nrPages;
    }
    for (let i = 0; i < made; i++) vm.vfree(live[i]!);
    vm.vfree(ptr);
    vm.vfree(junk);
    return ns;
  },

  long_busy_list_alloc_test(c, loops) {
    const vm = c.vm;
    const busy = 15000;
    const ptr = vm.vmalloc(8 * busy);
    if (ptr < 0) return fail(c, 'vmalloc of the pointer array', ptr);
    const live = new Float64Array(busy);
    let made = 0;
    let ns = -1;
    for (; made < busy; made++) {
      live[made] = vm.vmalloc(PAGE_SIZE);
      if (live[made]! < 0) break;
    }
    if (made < busy) {
      fail(c, 'vmalloc of the busy list', live[made]!);
    } else {
      const t0 = performance.now();
      let i = 0;
      for (; i < loops; i++) {
        const p1 = vm.vmalloc(100 * PAGE_SIZE);
        if (p1 < 0) {
          fail(c, 'vmalloc(100 pages)', p1);
          break;
        }
        const p2 = vm.vmalloc(PAGE_SIZE);
        if (p2 < 0) {
          vm.vfree(p1);
          fail(c, 'vmalloc(1 page)', p2);
          break;
        }
        if (c.kpt.touch(p1) < 0 || c.kpt.touch(p2) < 0) {
          fail(c, 'touching the vmalloc areas', -1);
          break;
        }
        vm.vfree(p1);
        vm.vfree(p2);
        if ((i & RESET_EVERY) === RESET_EVERY) c.kpt.resetCounters();
      }
      if (i === loops) ns = (performance.now() - t0) * 1e6;
    }
    for (let i = 0; i < made; i++) vm.vfree(live[i]!);
    vm.vfree(ptr);
    return ns;
  },

  random_size_alloc_test(c, loops) {
    const t0 = performance.now();
    for (let i = 0; i < loops; i++) {
      const n = (c.rng.u32() % 100) + 1; // get_random_u32_inclusive(1, 100)
      if (allocTouchFree(c, n) < 0) return -1;
      if ((i & RESET_EVERY) === RESET_EVERY) c.kpt.resetCounters();
    }
    return (performance.now() - t0) * 1e6;
  },

  fix_align_alloc_test(c, loops) {
    const vm = c.vm;
    const size = (5 + 1) * PAGE_SIZE; // __vmalloc_node(5 * PAGE_SIZE) plus its guard page
    const align = THREAD_ALIGN << 1;
    const t0 = performance.now();
    for (let i = 0; i < loops; i++) {
      const va = vm.allocVmapArea(size, align);
      if (va < 0) return fail(c, 'alloc_vmap_area(6 pages, 32 KiB aligned)', va);
      const rc = vm.freeVmapArea(va);
      if (rc < 0) return fail(c, 'free_vmap_area', rc);
    }
    return (performance.now() - t0) * 1e6;
  },

  random_size_align_alloc_test(c, loops) {
    const vm = c.vm;
    const t0 = performance.now();
    for (let i = 0; i < loops; i++) {
      const rnd = c.rng.u32() & 0xff; // get_random_u8
      const align = Math.max(PAGE_SIZE, 2 ** (rnd % 23)); // up to 1024 pages
      const size = ((rnd % 10) + 1 + 1) * PAGE_SIZE; // up to 10 pages, plus the guard
      const va = vm.allocVmapArea(size, align);
      if (va < 0) return fail(c, `alloc_vmap_area(${size / PAGE_SIZE} pages, align ${align})`, va);
      const rc = vm.freeVmapArea(va);
      if (rc < 0) return fail(c, 'free_vmap_area', rc);
    }
    return (performance.now() - t0) * 1e6;
  },

  vm_map_ram_test(c, loops) {
    const vm = c.vm;
    const n = c.nrPages;
    const pfns = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const pfn = c.pages.allocPage();
      if (pfn < 0) {
        for (let j = 0; j < i; j++) c.pages.freePage(pfns[j]!);
        return fail(c, 'alloc_pages_bulk', pfn);
      }
      pfns[i] = pfn;
    }
    let ns = -1;
    const t0 = performance.now();
    let i = 0;
    for (; i < loops; i++) {
      const va = vm.vmMapRam(pfns, n);
      if (va < 0) {
        fail(c, `vm_map_ram(${n} pages)`, va);
        break;
      }
      if (c.kpt.touch(va) < 0) {
        fail(c, 'touching the vm_map_ram mapping', -1);
        break;
      }
      const rc = vm.vmUnmapRam(va, n);
      if (rc < 0) {
        fail(c, 'vm_unmap_ram', rc);
        break;
      }
      if ((i & RESET_EVERY) === RESET_EVERY) c.kpt.resetCounters();
    }
    if (i === loops) ns = (performance.now() - t0) * 1e6;
    for (let j = 0; j < n; j++) c.pages.freePage(pfns[j]!);
    return ns;
  },
};

/** Wait until all nrThreads workers have arrived (or one aborted: throw). */
function barrier(b: Int32Array, nrThreads: number): void {
  const gen = Atomics.load(b, B_GENERATION);
  if (Atomics.add(b, B_ARRIVED, 1) === nrThreads - 1) {
    Atomics.store(b, B_ARRIVED, 0);
    Atomics.add(b, B_GENERATION, 1);
    Atomics.notify(b, B_GENERATION);
    return;
  }
  const deadline = performance.now() + BARRIER_TIMEOUT_MS;
  while (Atomics.load(b, B_GENERATION) === gen) {
    if (Atomics.load(b, B_ABORT) !== 0) throw new Error('another worker of this case failed');
    if (performance.now() > deadline) throw new Error(`start barrier: not all ${nrThreads} workers arrived`);
    Atomics.wait(b, B_GENERATION, gen, 50);
  }
}

export default function runVmallocTask(t: VmallocTask): VmallocTaskResult {
  const b = new Int32Array(t.barrierSab);
  try {
    const kpt: BenchKpt =
      t.kpt === 'flat' && t.flatTable
        ? new FlatKernelPageTables(t.windowStart, t.flatTable)
        : new KernelPageTablesRef({ batched: true });
    // vm_map_ram_test takes its pages from the same stack vmalloc uses.
    const pages = new PfnStack(t.pfnBase, t.pfnCount);
    const vm = VmallocSpace.attach(t.vmallocSab, { cpu: t.worker, kpt, refs, allocator: pages });
    const ctx: Ctx = {
      vm,
      kpt,
      pages,
      rng: new Rng(t.seed ^ Math.imul(t.worker + 1, 0x85ebca6b)),
      nrPages: t.nrPages,
      numOnlineCpus: t.numOnlineCpus,
      error: '',
    };
    const fn = CASES[t.test];
    const errors: string[] = [];
    if (t.warmupLoops > 0) {
      if (fn(ctx, t.warmupLoops) < 0) errors.push(`warm-up: ${ctx.error}`);
      // Leave no lazy area of the warm-up behind: the timed run starts from a clean window.
      barrier(b, t.nrThreads);
      if (t.worker === 0) vm.purgeVmapAreaLazy();
    }
    barrier(b, t.nrThreads);
    let passed = 0;
    let failed = 0;
    let usec = 0;
    let loopNs = 0;
    for (let r = 0; r < t.repeat; r++) {
      ctx.error = '';
      const t0 = performance.now();
      const ns = fn(ctx, t.loops);
      const dt = (performance.now() - t0) * 1000;
      if (ns < 0) {
        failed++;
        if (errors.length < 4) errors.push(ctx.error);
      } else {
        passed++;
        usec += dt;
        loopNs += ns;
      }
    }
    return {
      worker: t.worker,
      test: t.test,
      passed,
      failed,
      usecPerTest: passed ? usec / passed : NaN,
      nsPerIteration: passed ? loopNs / passed / t.loops : NaN,
      errors,
    };
  } catch (e) {
    Atomics.store(b, B_ABORT, 1);
    Atomics.notify(b, B_GENERATION);
    throw e;
  }
}
