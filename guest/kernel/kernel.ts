/*
 * The guest kernel on one vCPU: its memory-management subsystems wired together over
 * the domain's shared buffers, and boot.
 *
 * SMP bring-up as Linux does it: the boot vCPU (0) formats the shared state (mem_map and
 * the buddy allocator, slab, the vmalloc and highmem state, the task table), builds the
 * kernel page tables for vmalloc space, the pkmap window and the kmap_atomic fixmap
 * slots, and hands the buffers to the controller; the other vCPUs attach to them.
 */
import {
  ENOMEM,
  UVMF_INVLPG,
  _PAGE_ACCESSED,
  _PAGE_DIRTY,
  _PAGE_PRESENT,
  _PAGE_RW,
  rcName,
  FRAME_WORDS,
  PAGE_SIZE,
} from '../../src/abi/xen.js';
import { type VirtualLayout, layoutFor, vaIndex } from '../../src/abi/layout.js';
import { entryMaddrHi, entryMaddrLo, pteHi, pteLo, pteMfn } from '../../src/abi/pte.js';
import { type MulticallBatch, mmuUpdate, updateVaMapping } from '../arch/xen/hypercall.js';
import { XenKernelPageTables } from '../arch/xen/kernel_pt.js';
import { Highmem, KM_TYPE_NR, KM_USER0 } from '../mm/highmem.js';
import { GFP_KERNEL, __GFP_HIGHMEM, PageAllocator, type PageAllocConfig, pageAllocBytes } from '../mm/page_alloc.js';
import { SlabAllocator } from '../mm/slab.js';
import { VmallocSpace } from '../mm/vmalloc.js';
import type { Vcpu } from '../vcpu.js';
import {
  C_BAD_PAGES,
  C_BUGS,
  GUEST_REPORTS_KEPT,
  GUEST_REPORT_KINDS,
  type GuestReport,
  type GuestReportKind,
  type KernelConfig,
  type KernelShared,
} from '../../src/abi/kernel.js';
import { TraceBuffer } from '../../src/abi/trace.js';
import { VMALLOC_STRATEGY_FOR } from './config.js';
import { KernState } from './state.js';
import { LogBuf } from './printk.js';
import { backtraceLines, dumpStack } from './dump_stack.js';
import { vclockBytes } from './vclock.js';

/** The buffers a booted kernel shares between its vCPUs. */
const P = _PAGE_PRESENT,
  RW = _PAGE_RW,
  A = _PAGE_ACCESSED,
  D = _PAGE_DIRTY;
const ZERO_PAGE = new Uint8Array(PAGE_SIZE);
/** Trace records kept per vCPU (the oldest are overwritten beyond). */
const TRACE_RECORDS = 1 << 18;

export class Kernel {
  readonly cpu: Vcpu;
  readonly id: number;
  readonly cfg: KernelConfig;
  readonly layout: VirtualLayout;
  readonly mem32: Uint32Array;
  readonly kpt: XenKernelPageTables;
  readonly pa: PageAllocator;
  readonly slab: SlabAllocator;
  readonly vmalloc: VmallocSpace;
  readonly highmem: Highmem | null;
  readonly state: KernState;
  readonly shared: KernelShared;
  /** The kernel's own root (swapper_pg_dir): the builder's pinned tree. */
  readonly swapperPgd: number;
  /** printk: kernel messages from this vCPU, in order (the last 10,000). */
  readonly #log = new LogBuf(10_000);
  /** current->comm for reports. */
  comm = 'swapper';
  /** This vCPU's reports (the first GUEST_REPORTS_KEPT), and how many of each kind it made. */
  readonly reports: GuestReport[] = [];
  readonly reportCounts: Partial<Record<GuestReportKind, number>> = {};
  #bugsKept = 0;
  /** The --trace recorder of this vCPU (hypercalls, flushes, vmaps, pins), or null. */
  readonly trace: TraceBuffer | null;
  readonly traceBuffer: SharedArrayBuffer | null;
  /** Who may still map a page writable (XFS's a_list, ...): each says how, or null. */
  readonly #aliasProbes: Array<(pfn: number) => string | null> = [];

  private constructor(cpu: Vcpu, cfg: KernelConfig, shared: KernelShared, kpt: XenKernelPageTables) {
    this.cpu = cpu;
    this.id = cpu.vcpuId;
    this.cfg = cfg;
    this.layout = layoutFor(cpu.info.paging);
    this.mem32 = cpu.mmu.mem32;
    this.kpt = kpt;
    this.shared = shared;
    this.swapperPgd = cpu.info.p2m[cpu.info.ptBasePfn]!;
    const onSpin = () => cpu.pollInterrupts();
    const report = (line: string) => this.printk(line);
    this.pa = new PageAllocator(shared.pages, {
      zeroPage: (pfn) => this.clearPage(pfn),
      comm: () => this.comm,
      onReport: (r) => {
        if (r.kind === 'bad_page') {
          // 2.6.15's bad_page: the state, then dump_stack(), then the fix-up line.
          const [head, state, ...rest] = r.lines;
          this.report('bad_page', [head!, state!, ...backtraceLines(dumpStack()), ...rest]);
        } else {
          this.report(r.kind === 'slab_error' ? 'bug' : 'page_allocation_failure', r.lines);
        }
      },
      slubPageMappingFix: cfg.slubFix ?? true,
      onSpin,
    });
    this.slab = new SlabAllocator(shared.slab, this.pa, {
      pfnToKaddr: (pfn) => this.layout.pageOffset + pfn * PAGE_SIZE,
      zeroObject: (addr, bytes) => {
        if (cpu.mmu.writeBytes(addr, ZERO_PAGE, 0, bytes) < 0)
          this.printk(`kzalloc: fault clearing ${addr.toString(16)}`);
      },
      comm: () => this.comm,
      report: (line) => this.report('warning', [line]),
    });
    const allocator = {
      allocPage: () => {
        // vmalloc's own mask: __vmalloc(size, GFP_KERNEL | __GFP_HIGHMEM, PAGE_KERNEL)
        const pfn = this.pa.allocPages(GFP_KERNEL | __GFP_HIGHMEM, 0, this.id);
        return pfn < 0 ? -ENOMEM : pfn;
      },
      freePage: (pfn: number) => this.pa.freePages(pfn, 0, this.id),
    };
    const refs = {
      getPage: (pfn: number) => this.pa.getPage(pfn),
      putPage: (pfn: number) => this.pa.putPage(pfn, this.id),
    };
    this.vmalloc = VmallocSpace.attach(shared.vmalloc, { cpu: this.id, onSpin, kpt, refs, allocator, report });
    this.highmem = shared.highmem ? Highmem.attach(shared.highmem, { cpu: this.id, onSpin, kpt, report }) : null;
    this.state = new KernState(shared.kern);
    kpt.onError = (line) => this.printk(line);
    if (cfg.trace) {
      this.traceBuffer = new SharedArrayBuffer(TraceBuffer.bytesFor(TRACE_RECORDS));
      this.trace = new TraceBuffer({
        pid: cpu.info.domid,
        tid: this.id,
        capacity: TRACE_RECORDS,
        buffer: this.traceBuffer,
      });
      cpu.trace = this.trace;
      kpt.trace = this.trace;
    } else {
      this.traceBuffer = null;
      this.trace = null;
    }
  }

  /** The boot vCPU: format everything, build the kernel's page tables. */
  static boot(cpu: Vcpu, mem: SharedArrayBuffer, cfg: KernelConfig): Kernel {
    const info = cpu.info;
    const layout = layoutFor(info.paging);
    const kpt = new XenKernelPageTables(cpu, mem);
    const paCfg: PageAllocConfig = {
      nrPages: info.nrPages,
      nrCpus: cfg.vcpus,
      paging: info.paging,
      lowmemPages: info.lowmemPages,
      firstFreePfn: info.firstFreePfn,
    };
    const pages = new SharedArrayBuffer(pageAllocBytes(paCfg));
    PageAllocator.format(pages, paCfg);
    // A boot-time allocator to make the kernel page tables before anything else exists.
    const bootPa = new PageAllocator(pages, { zeroPage: () => {} });
    const kptFrames = buildKernelPageTables(cpu, bootPa, layout, cfg);
    const slab = SlabAllocator.create(bootPa, { pfnToKaddr: (pfn) => layout.pageOffset + pfn * PAGE_SIZE }).sab;
    const none = () => {
      throw new Error('boot: the kernel is not up yet');
    };
    const deps = {
      cpu: 0,
      kpt,
      refs: { getPage: none, putPage: none },
      allocator: { allocPage: none, freePage: none },
    };
    const vmalloc = VmallocSpace.create(
      // 2.6.23's vunmap unmaps and flushes at once; Nick Piggin's 2.6.28 layer is lazy.
      {
        layout,
        numOnlineCpus: cfg.vcpus,
        strategy: VMALLOC_STRATEGY_FOR[cfg.strategy],
        vmallocStart: kptFrames.vmallocStart,
        vmallocEnd: kptFrames.vmallocEnd,
      },
      deps,
    ).sab;
    const highmem =
      layout.lastPkmap > 0
        ? Highmem.create(
            { layout, numCpus: cfg.vcpus, debugHighmem: true, highmemStartPfn: info.lowmemPages },
            { cpu: 0, kpt },
          ).sab
        : null;
    const kern = KernState.create(cfg);
    const shared: KernelShared = {
      pages,
      slab,
      vmalloc,
      highmem,
      kern,
      vclock: new SharedArrayBuffer(vclockBytes()),
      vmallocStart: kptFrames.vmallocStart,
      vmallocEnd: kptFrames.vmallocEnd,
    };
    const k = new Kernel(cpu, cfg, shared, kpt);
    k.printk(
      `Linux version 2.6.24-pvmmu (Xen PV, ${info.paging}): ${info.nrPages} pages, ${info.lowmemPages} lowmem, ` +
        `vmalloc ${kptFrames.vmallocStart.toString(16)}-${kptFrames.vmallocEnd.toString(16)} (${kptFrames.frames} kernel page-table frames)`,
    );
    return k;
  }

  /** A secondary vCPU joining a booted kernel. */
  static attach(cpu: Vcpu, mem: SharedArrayBuffer, cfg: KernelConfig, shared: KernelShared): Kernel {
    return new Kernel(cpu, cfg, shared, new XenKernelPageTables(cpu, mem));
  }

  addAliasProbe(probe: (pfn: number) => string | null): void {
    this.#aliasProbes.push(probe);
  }

  /**
   * Every writable kernel alias of `pfn` besides the direct map: what the probes (XFS's
   * a_list, on the vCPU that owns the mount) say, vmap areas live or lazily freed, and
   * kmaps. Empty when the page has none.
   */
  strayAliasesOf(pfn: number): string[] {
    const out: string[] = [];
    for (const p of this.#aliasProbes) {
      const why = p(pfn);
      if (why !== null) out.push(why);
    }
    // What the (shared) vmalloc layer knows, from any vCPU: a mapping of a page that is
    // being made a page table is stray whether its area is live or lazily freed.
    for (const a of this.vmalloc.vmapAliasesOf(pfn)) {
      out.push(
        `${a.kind} vmap area ${a.areaStart.toString(16)}-${a.areaEnd.toString(16)} maps it writable at ${a.va.toString(16)}`,
      );
    }
    for (const a of this.highmem?.strayAliasesOf(pfn) ?? []) out.push(`${a.kind} alias at ${a.va.toString(16)}`);
    return out;
  }

  printk(line: string): void {
    this.#log.printk(line);
  }

  /**
   * A report: printk its lines, and keep it as data for the host (guest/programs/kernel.ts
   * hands them over with the stats). The kind says what it is; the host decides from that.
   */
  report(kind: GuestReportKind, lines: string[]): void {
    for (const l of lines) this.printk(l);
    this.reportCounts[kind] = (this.reportCounts[kind] ?? 0) + 1;
    // The first of each class are kept: bugs, and what only informs, so one cannot crowd out the other.
    const bug = GUEST_REPORT_KINDS[kind].bug;
    const kept = bug ? this.#bugsKept : this.reports.length - this.#bugsKept;
    if (kept < GUEST_REPORTS_KEPT) {
      this.reports.push({ kind, cpu: this.id, lines });
      if (bug) this.#bugsKept++;
    }
    if (kind === 'bad_page') this.state.count(C_BAD_PAGES);
    else if (kind === 'bug' || kind === 'oops') this.state.count(C_BUGS);
  }

  get messages(): string[] {
    return this.#log.lines;
  }

  /** The log buffer itself (readers that keep their place use since()). */
  get log(): LogBuf {
    return this.#log;
  }

  #m2p: Int32Array | null = null;

  /** The guest pfn of one of its machine frames (the guest's copy of the M2P), or -1. */
  mfnToPfn(mfn: number): number {
    if (this.#m2p === null) {
      const p2m = this.cpu.info.p2m;
      let max = 0;
      for (const m of p2m) max = Math.max(max, m);
      this.#m2p = new Int32Array(max + 1).fill(-1);
      p2m.forEach((m, pfn) => (this.#m2p![m] = pfn));
    }
    return mfn < this.#m2p.length ? this.#m2p[mfn]! : -1;
  }

  /** Kernel virtual address of a lowmem page (page_address). */
  lowmemVa(pfn: number): number {
    return this.layout.pageOffset + pfn * PAGE_SIZE;
  }

  isHighmem(pfn: number): boolean {
    return pfn >= this.cpu.info.lowmemPages;
  }

  /** Pages zeroed and 4 KiB copies in or out, for the virtual clock. */
  pagesZeroed = 0;
  pagesCopied = 0;

  /** clear_highpage: through the direct map, or a kmap_atomic slot for highmem. */
  clearPage(pfn: number): void {
    this.pagesZeroed++;
    this.#writePage(pfn, ZERO_PAGE, 0);
  }

  /** Copy 4 KiB into page `pfn` through the MMU (kmap_atomic for highmem). */
  writePage(pfn: number, src: Uint8Array, off: number): void {
    this.pagesCopied++;
    this.#writePage(pfn, src, off);
  }

  #writePage(pfn: number, src: Uint8Array, off: number): void {
    if (!this.isHighmem(pfn)) {
      if (this.cpu.mmu.writeBytes(this.lowmemVa(pfn), src, off, PAGE_SIZE) < 0)
        this.report('bug', [`BUG: fault writing lowmem page ${pfn}`]);
      return;
    }
    const va = this.highmem!.kmapAtomic(pfn, KM_USER0, this.id);
    if (va <= 0 || this.cpu.mmu.writeBytes(va, src, off, PAGE_SIZE) < 0)
      this.report('bug', [`BUG: fault writing highmem page ${pfn}`]);
    this.highmem!.kunmapAtomic(va, KM_USER0, this.id);
  }

  /** Read 4 KiB of page `pfn` through the MMU. */
  readPage(pfn: number, dst: Uint8Array, off: number): void {
    this.pagesCopied++;
    if (!this.isHighmem(pfn)) {
      if (this.cpu.mmu.readBytes(this.lowmemVa(pfn), dst, off, PAGE_SIZE) < 0)
        this.report('bug', [`BUG: fault reading lowmem page ${pfn}`]);
      return;
    }
    const va = this.highmem!.kmapAtomic(pfn, KM_USER0, this.id);
    if (va <= 0 || this.cpu.mmu.readBytes(va, dst, off, PAGE_SIZE) < 0)
      this.report('bug', [`BUG: fault reading highmem page ${pfn}`]);
    this.highmem!.kunmapAtomic(va, KM_USER0, this.id);
  }

  /** Remap a lowmem page's direct-map alias read-only or back writable (make_lowmem_page_readonly). */
  setLowmemWritable(batch: MulticallBatch | null, pfn: number, writable: boolean, flush = UVMF_INVLPG): void {
    const mfn = this.cpu.info.p2m[pfn]!;
    const lo = pteLo(mfn, writable ? P | RW | A | D : P | A);
    const hi = pteHi(mfn);
    if (batch) batch.updateVaMapping(this.lowmemVa(pfn), lo, hi, flush);
    else {
      const rc = updateVaMapping(this.cpu, this.lowmemVa(pfn), lo, hi, flush);
      if (rc < 0)
        this.printk(`make_lowmem_page_${writable ? 'readwrite' : 'readonly'}: pfn ${pfn}: ${rc} (${rcName(rc)})`);
    }
  }
}

/**
 * Make the kernel page tables for vmalloc space, the pkmap window and the fixmap (the
 * kmap_atomic slots), as paging_init / pagetable_init do. Every kernel L2 entry is made
 * here, never later, so every pgd's copy of the kernel part stays identical.
 */
function buildKernelPageTables(
  cpu: Vcpu,
  pa: PageAllocator,
  layout: VirtualLayout,
  cfg: KernelConfig,
): { vmallocStart: number; vmallocEnd: number; frames: number } {
  const info = cpu.info;
  const mem32 = cpu.mmu.mem32;
  const root = info.p2m[info.ptBasePfn]!;
  const regions: Array<[number, number]> = [];
  let vmallocStart: number;
  if (layout.paging === 'pae') {
    // high_memory + VMALLOC_OFFSET, on a 2 MiB boundary.
    vmallocStart = Math.ceil((layout.pageOffset + info.lowmemPages * PAGE_SIZE + 8 * 2 ** 20) / 2 ** 21) * 2 ** 21;
  } else {
    vmallocStart = 0xc90000000000;
  }
  const vmallocEnd = Math.min(vmallocStart + cfg.vmallocBytes, layout.paging === 'pae' ? layout.vmallocEnd : Infinity);
  if (vmallocEnd - vmallocStart < 4 * 2 ** 20)
    throw new RangeError('boot: less than 4 MiB of vmalloc space; give the domain less lowmem');
  regions.push([vmallocStart, vmallocEnd]);
  if (layout.pkmapBase) regions.push([layout.pkmapBase, layout.pkmapBase + layout.lastPkmap * PAGE_SIZE]);
  if (layout.fixaddrTop)
    regions.push([layout.fixaddrTop - KM_TYPE_NR * cfg.vcpus * PAGE_SIZE, layout.fixaddrTop + PAGE_SIZE]);

  let frames = 0;
  const newTable = (): number => {
    const pfn = pa.allocPages(GFP_KERNEL, 0, 0);
    if (pfn < 0 || pfn >= info.lowmemPages) throw new Error('boot: out of lowmem for kernel page tables');
    frames++;
    const va = layout.pageOffset + pfn * PAGE_SIZE;
    if (cpu.mmu.writeBytes(va, ZERO_PAGE, 0, PAGE_SIZE) < 0) throw new Error('boot: cannot clear a page-table page');
    const rc = updateVaMapping(cpu, va, pteLo(info.p2m[pfn]!, P | A), pteHi(info.p2m[pfn]!), UVMF_INVLPG);
    if (rc < 0) throw new Error(`boot: make_lowmem_page_readonly failed: ${rc}`);
    return info.p2m[pfn]!;
  };
  const entry = (table: number, i: number): number => {
    const lo = mem32[table * FRAME_WORDS + 2 * i]!;
    return lo & P ? pteMfn(lo, mem32[table * FRAME_WORDS + 2 * i + 1]!) : -1;
  };
  const link = (table: number, i: number, child: number): void => {
    const r = mmuUpdate(
      cpu,
      Uint32Array.of(entryMaddrLo(table, i), entryMaddrHi(table), pteLo(child, P | RW | A), pteHi(child)),
      1,
    );
    if (r.rc < 0) throw new Error(`boot: linking a kernel page table failed: ${r.rc} (${rcName(r.rc)})`);
  };
  for (const [start, end] of regions) {
    for (let va = Math.floor(start / 2 ** 21) * 2 ** 21; va < end; va += 2 ** 21) {
      let table = root;
      for (let level = layout.levels; level > 1; level--) {
        const i = vaIndex(va, level);
        let next = entry(table, i);
        if (next < 0) {
          next = newTable();
          link(table, i, next);
        }
        table = next;
      }
    }
  }
  return { vmallocStart, vmallocEnd, frames };
}
