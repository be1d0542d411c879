/*
 * The vmalloc bench's whole cross-thread protocol: the test table (names and
 * run_test_mask bits of lib/test_vmalloc.c), the task a piscina worker receives, the result
 * it sends back, and the word indices of the start barrier. Only vmalloc-worker.ts touches
 * the worker side; bench/vmalloc.ts the pool side.
 */

/** A lib/test_vmalloc.c case this model runs, with its run_test_mask bit. */
export interface VmallocTestDesc {
  readonly name: VmallocTestName;
  readonly bit: number;
  /** What the case does here, when it differs from the kernel's. */
  readonly deviation?: string;
}

export type VmallocTestName =
  | 'fix_size_alloc_test'
  | 'full_fit_alloc_test'
  | 'long_busy_list_alloc_test'
  | 'random_size_alloc_test'
  | 'fix_align_alloc_test'
  | 'random_size_align_alloc_test'
  | 'vm_map_ram_test';

/** In the kernel's table order (which is also run order). */
export const VMALLOC_TESTS: readonly VmallocTestDesc[] = [
  { name: 'fix_size_alloc_test', bit: 1 },
  { name: 'full_fit_alloc_test', bit: 2 },
  { name: 'long_busy_list_alloc_test', bit: 4 },
  { name: 'random_size_alloc_test', bit: 8 },
  {
    name: 'fix_align_alloc_test',
    bit: 16,
    deviation:
      'area only: VmallocSpace has no __vmalloc_node(size, align), so alloc_vmap_area(5+1 pages, 32 KiB) + free_vmap_area',
  },
  {
    name: 'random_size_align_alloc_test',
    bit: 32,
    deviation:
      'area only (as fix_align_alloc_test): alloc_vmap_area(1..10 +1 pages, align 2^(rnd%23) >= 4 KiB) + free_vmap_area',
  },
  { name: 'vm_map_ram_test', bit: 1024 },
];

/** Kernel cases not modelled, by bit (so a mask naming them gets a precise refusal). */
export const VMALLOC_TESTS_NOT_MODELLED: Readonly<Record<number, string>> = {
  64: 'align_shift_alloc_test (expected to fail in the kernel too)',
  128: 'pcpu_alloc_test (no per-CPU allocator here)',
  256: 'kvfree_rcu_1_arg_vmalloc_test (no RCU here)',
  512: 'kvfree_rcu_2_arg_vmalloc_test (no RCU here)',
};

/** 'ref': guest/mm/kernel_pt_ref.ts (the default); 'flat': bench/workers/flat-kpt.ts. */
export type KptKind = 'ref' | 'flat';

/** One worker's share of one case: nrThreads such tasks run at once on one VmallocSpace. */
export interface VmallocTask {
  /** VmallocSpace.create(...).sab, shared by every worker of the case. */
  vmallocSab: SharedArrayBuffer;
  /** BARRIER_WORDS Int32 words: the start barrier of the case. */
  barrierSab: SharedArrayBuffer;
  test: VmallocTestName;
  /** This worker's index, 0..nrThreads-1: its CPU number (lock owner, vm_map_ram's CPU). */
  worker: number;
  nrThreads: number;
  /** num_online_cpus() as the space was created with (full_fit's junk_length uses it). */
  numOnlineCpus: number;
  /** test_loop_count. */
  loops: number;
  /** test_repeat_count: timed runs, averaged. */
  repeat: number;
  /** Untimed warm-up loops run first (JIT), 0 for none. */
  warmupLoops: number;
  /** nr_pages (>= 1). */
  nrPages: number;
  seed: number;
  /** Which KernelPageTables the worker gives the layer: the reference, or flat-kpt.ts. */
  kpt: KptKind;
  /** The vmalloc window's start and, with kpt 'flat', the shared FlatKernelPageTables.createTable. */
  windowStart: number;
  flatTable: SharedArrayBuffer | null;
  /** This worker's private pfn range [pfnBase, pfnBase + pfnCount) for its page allocator. */
  pfnBase: number;
  pfnCount: number;
}

export interface VmallocTaskResult {
  worker: number;
  test: VmallocTestName;
  passed: number;
  failed: number;
  /** Average microseconds per passed run of the test function, setup included (test_vmalloc's "avg"). */
  usecPerTest: number;
  /** Average nanoseconds per iteration of the test's main loop only. */
  nsPerIteration: number;
  /** Why runs failed (first few). */
  errors: string[];
}

/** Start-barrier words (Int32 indices into barrierSab). */
export const B_ARRIVED = 0;
export const B_GENERATION = 1;
/** Set by a worker that failed before the barrier, so the others stop waiting. */
export const B_ABORT = 2;
export const BARRIER_WORDS = 4;
/** Longest a worker waits at the barrier for the others (ms). */
export const BARRIER_TIMEOUT_MS = 60_000;
