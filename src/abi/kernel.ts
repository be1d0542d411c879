/*
 * What the host may know of a guest kernel, and all it may know: the configuration it
 * boots with (plain data, sent in workerData), the shared buffers it hands its other
 * vCPUs, the event counters it publishes in its state page (the host reads them for
 * progress and summaries), and the names and one-line summaries of the workloads it can
 * run. The host never imports guest code: guest/workloads/index.ts is typed by
 * WORKLOAD_NAMES, so the two lists cannot drift apart.
 */

import type { CostTable } from './vclock.js';

/** How stray vmap aliases are dealt with (the subject of the benchmarks). */
export type Strategy = 'lazy' | 'eager' | 'vmap-pages' | 'unmap-aliases';
export const STRATEGIES: readonly Strategy[] = ['lazy', 'eager', 'vmap-pages', 'unmap-aliases'];

export interface KernelConfig {
  strategy: Strategy;
  /** Call kmap_flush_unused() before pinning (Linux 2.6.24's HIGHPTE fix). */
  kmapFlush: boolean;
  /** pae only: user PTE pages come from highmem (CONFIG_HIGHPTE). */
  highpte: boolean;
  /** Bytes of vmalloc space (the kernel page tables for it are made at boot). */
  vmallocBytes: number;
  /** Seed for everything random in the guest. */
  seed: number;
  /** Number of vCPUs (num_online_cpus). */
  vcpus: number;
  /** Record hypercalls, flushes, vmaps and refused pins for --trace. */
  trace?: boolean;
  /**
   * The data cache flush_dcache_page works against: 'pipt' (x86: flush_dcache_page does
   * nothing) or 'aliasing' (ARM's VIPT/VIVT: it looks for user aliases through
   * page_mapping()). Default 'pipt'.
   */
  dcache?: DcacheKind;
  /** page_mapping() returns NULL for PageSlab pages: Hugh Dickins' 2.6.22 fix. Default true. */
  slubFix?: boolean;
  /** unmap-aliases: vm_unmap_aliases() before pinning (Jeremy's 2008 call; default true). */
  aliasesBeforePin?: boolean;
  /** --clock virtual: ns per event, what the virtual clock charges (cost-models/*.json). */
  costModel?: CostTable;
}

export type DcacheKind = 'pipt' | 'aliasing';
export const DCACHE_KINDS: readonly DcacheKind[] = ['pipt', 'aliasing'];

/** The buffers the boot vCPU made, handed to the others (and to the host, read-only). */
export interface KernelShared {
  pages: SharedArrayBuffer;
  slab: SharedArrayBuffer;
  vmalloc: SharedArrayBuffer;
  highmem: SharedArrayBuffer | null;
  kern: SharedArrayBuffer;
  /** The virtual clocks (guest/kernel/vclock.ts). */
  vclock: SharedArrayBuffer;
  /** First and last (exclusive) vmalloc address the kernel built page tables for. */
  vmallocStart: number;
  vmallocEnd: number;
}

/*
 * The kernel state page (guest/kernel/state.ts lays out the rest): event counters every
 * vCPU adds to, at word COUNTERS_BASE + C_name.
 */
/** Word index of counter 0 in the kernel state page (counter c is at COUNTERS_BASE + c). */
export const COUNTERS_BASE = 16;
/* Counters (Atomics.add). */
export const C_PINS = 0;
export const C_PIN_FAILURES = 1;
export const C_FORKS = 2;
export const C_EXITS = 3;
export const C_FAULTS = 4;
export const C_TASKS_KILLED = 5;
export const C_MC_FAILURES = 6;
export const C_CTX_SWITCHES = 7;
export const C_DATA_ERRORS = 8;
export const C_OPS = 9;
export const C_PT_PAGES = 10;
export const C_UPDATE_FAILURES = 11;
/** Refused pins with a page-table page that a known stray alias still maps writable. */
export const C_PIN_TRACED = 12;
/** Page-table pages handed out while a stray alias still mapped them. */
export const C_PT_ALIASED = 13;
/** Bad page state reports (bad_page), all vCPUs. */
export const C_BAD_PAGES = 14;
/** kernel BUG()s and oopses, all vCPUs. */
export const C_BUGS = 15;
/** set_memory_uc refused by the memtype tracker: a write-back alias of the page remained (pat-alias). */
export const C_MEMTYPE_CONFLICTS = 18;
/*
 * Counters 16..17 and 19..31 are free. Work in progress keeps to its own range so that parallel
 * branches do not take the same index: 14-17 the seed-bug workloads, 18-21 the XFS
 * thread's paths, 22-25 grouping by mobility, 26-29 the virtual clock.
 */
export const NR_COUNTERS = 32;
export const COUNTER_NAMES = [
  'pins',
  'pinFailures',
  'forks',
  'exits',
  'faults',
  'tasksKilled',
  'multicallFailures',
  'contextSwitches',
  'dataErrors',
  'ops',
  'ptPages',
  'updateFailures',
  'pinsTraced',
  'ptPagesAliased',
  'badPages',
  'bugs',
] as const;

/** The workloads `pvmmu run` knows, each with its one-line summary (guest/workloads/ has them). */
export const WORKLOAD_SUMMARIES = {
  'fork-storm': 'exec, fork, run and exit tasks on every vCPU: page-table allocation, pinning and unpinning',
  'xfs-dirscan': 'find over a large XFS directory, caches dropped between passes, while tasks fork, exec and exit',
  'log-recovery': 'XFS mount (log recovery vmaps, iclogs stay mapped) and unmount, again and again, beside fork/exit',
  mixed: 'directory scans, log recovery, page-cache reads through kmap and fork/exec/exit together',
  'stray-write': 'a hostile guest writes through a stale XFS vmap into a page table to reach another domain',
  'vmap-cycle': 'the vmap microbenchmark: map 4 pages through XFS, touch them, unmap by the strategy',
  'truncate-race':
    'direct-I/O writes invalidate cached pages inside i_size while tasks fault them in: the 2007 fault-vs-invalidate race',
  'alsa-mmap':
    "aplay mmaps a sound buffer (order 2, PG_reserved) through nopage, touches it, munmaps: 2005's Bad page state",
  'slub-dma':
    'a driver DMAs into a kmalloc buffer through kmap_atomic, then flush_dcache_page: the 2007 SLUB page_mapping oops',
  'kmap-churn': 'highmem page-cache reads through kmap() between forks: the HIGHPTE kmap alias case',
  'pat-alias':
    "a driver makes freed XFS buffer pages uncached (set_memory_uc) under a stale write-back vmap: Andi Kleen's case",
} as const satisfies Record<string, string>;
export type WorkloadName = keyof typeof WORKLOAD_SUMMARIES;

/*
 * Guest reports: what the kernel says when something is wrong, as data. Each report is
 * one event -- a bad_page, a BUG(), an oops, ... -- with its printk lines in the kernel's
 * own words; the host counts them by kind and never reads the log text to decide
 * anything. A new kind is one line here: its name, whether it means the run showed a bug
 * (which makes `pvmmu run` exit 1), and what the verdict calls it.
 */
export const GUEST_REPORT_KINDS = {
  bad_page: { bug: true, what: 'bad page state' },
  bug: { bug: true, what: 'kernel BUG' },
  oops: { bug: true, what: 'kernel oops' },
  memtype: { bug: true, what: 'memtype conflict' },
  /** xen_mc_flush's complaint and the pin tracer's findings (the refusals count as the bug). */
  xen: { bug: false, what: 'hypercall failure' },
  /** A task or a check found data that is not what was written (dataErrors counts them). */
  data: { bug: false, what: 'data check' },
  page_allocation_failure: { bug: false, what: 'page allocation failure' },
  warning: { bug: false, what: 'warning' },
} as const satisfies Record<string, { bug: boolean; what: string }>;
export type GuestReportKind = keyof typeof GUEST_REPORT_KINDS;
export const GUEST_REPORT_KIND_NAMES = Object.keys(GUEST_REPORT_KINDS) as GuestReportKind[];

export interface GuestReport {
  kind: GuestReportKind;
  /** The vCPU that made it. */
  cpu: number;
  /** Its printk lines, one per line, as the kernel prints them. */
  lines: string[];
}

/** Reports a vCPU keeps (the count goes on past it). */
export const GUEST_REPORTS_KEPT = 32;

/*
 * What a workload needs from the host besides its own domain; plain data, so the host
 * sets it up without knowing the workload.
 */
export interface WorkloadNeeds {
  /** A second domain of this many frames whose first free frame holds a secret (seeded). */
  victimFrames?: number;
  /** Not about the XFS unmap strategies: the report leaves --strategy out of its headline. */
  strategyFree?: boolean;
}
export const WORKLOAD_NEEDS: Partial<Record<WorkloadName, WorkloadNeeds>> = {
  'stray-write': { victimFrames: 256 },
  'alsa-mmap': { strategyFree: true },
  'slub-dma': { strategyFree: true },
  'truncate-race': { strategyFree: true },
};
export const WORKLOAD_NAMES = Object.keys(WORKLOAD_SUMMARIES) as WorkloadName[];
