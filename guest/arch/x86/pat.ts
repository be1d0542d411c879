/*
 * arch/x86/mm/pat.c and the set_memory_uc/set_memory_wb half of pageattr.c, as far as Andi
 * Kleen's objection in the seed thread needs them (2007-10-15 09:36, 2007-10-22 13:47):
 * keeping a mapping of a freed page is wrong on x86 even without Xen, because the page's
 * next owner may make it uncached (an AGP or DRM driver: set_memory_uc, 2.6.2x's
 * change_page_attr(PAGE_KERNEL_NOCACHE)) while the stale mapping still maps it write-back
 * -- an illegal cache attribute alias, "very hard to debug bugs once a blue moon".
 *
 * The memtype tracker (reserve_memtype / free_memtype) keeps the physical ranges whose
 * caching a driver set, as PAT's list does, and refuses a reservation that overlaps one of
 * another type, with PAT's message. Linux's list holds only what drivers reserved: a vmap
 * is PAGE_KERNEL (write-back) and untracked, which is exactly why the stale alias went
 * unnoticed. This tracker also asks the kernel who else maps the range (the debug mode Nick
 * Piggin offered in the thread, 2007-10-15 14:56: count the possibly unflushed mappings of a
 * page "so that things like PAT could go BUG_ON"): every such kernel alias is a write-back
 * mapping, and a request for another type over it is reported as the conflict it is.
 *
 * set_memory_uc(addr, n) here is: change_page_attr's alias shootdown first when the kernel
 * has it (vm_unmap_aliases(), Linux's answer to Andi: `cpaUnmapAliases`), then
 * reserve_memtype(UC-), and on success the attribute recorded. Xen of 2007 refused
 * PCD/PWT in a PV guest's L1 entries (L1_DISALLOW_MASK; hypervisor/page-type.ts), so the
 * direct map's PTE keeps its bits and the tracker holds the type: the check is the point.
 *
 * Columns: the reservations are typed-array columns (start and end as page frame numbers,
 * type), a bounded list searched linearly -- PAT's 2.6.26 list was linear too.
 */
import { EBUSY, EINVAL, ENOMEM, PAGE_SIZE } from '../../../src/abi/xen.js';

/* _PAGE_CACHE_* (the PAT index bits of a PTE, as Linux names the types). */
export const _PAGE_CACHE_WB = 0;
export const _PAGE_CACHE_WC = 1;
export const _PAGE_CACHE_UC_MINUS = 2;
export const _PAGE_CACHE_UC = 3;

/** cattr_name: PAT's names for the types. */
export function cattrName(type: number): string {
  switch (type) {
    case _PAGE_CACHE_UC:
      return 'uncached';
    case _PAGE_CACHE_UC_MINUS:
      return 'uncached-minus';
    case _PAGE_CACHE_WB:
      return 'write-back';
    case _PAGE_CACHE_WC:
      return 'write-combining';
    default:
      return 'broken';
  }
}

/** A conflict the tracker found, as data (the guest reports channel's kind 'memtype'). */
export interface MemtypeReport {
  kind: 'memtype';
  comm: string;
  pid: number;
  /** Physical range asked for, [start, end). */
  start: number;
  end: number;
  /** The type asked for and the type already mapping the range. */
  reqType: string;
  conflictType: string;
  /** Who holds the conflicting mapping (a stale vmap alias, or a reservation). */
  holder: string;
  lines: string[];
}

export interface MemtypeDeps {
  /** The kernel's writable aliases of pfn besides the direct map (empty when none). */
  aliasesOf(pfn: number): string[];
  /** vm_unmap_aliases(), or null when this kernel has none (before 2.6.28). */
  vmUnmapAliases: (() => void) | null;
  /** The direct-map virtual address of a lowmem pfn, and back. */
  pageAddress(pfn: number): number;
  pfnOf(va: number): number;
  /**
   * A report, through the kernel's channel: 'memtype' for a conflict (a bug: `pvmmu run`
   * exits 1), 'warning' for a free of a range never reserved.
   */
  report(kind: 'memtype' | 'warning', lines: string[]): void;
  /** Called at each conflict (the kernel counts them: C_MEMTYPE_CONFLICTS). */
  onConflict?(): void;
}

export interface MemtypeStats {
  reserved: number;
  freed: number;
  conflicts: number;
  /** Pages set uncached now. */
  ucPages: number;
  /** vm_unmap_aliases() calls made by change_page_attr. */
  cpaAliasFlushes: number;
}

const hex = (v: number): string => v.toString(16);

export class MemtypeTracker {
  readonly capacity: number;
  readonly #deps: MemtypeDeps;
  readonly #start: Int32Array;
  readonly #end: Int32Array;
  readonly #type: Int8Array;
  #n = 0;
  #reserved = 0;
  #freed = 0;
  #conflicts = 0;
  #ucPages = 0;
  #cpaAliasFlushes = 0;
  /** The conflicts, newest last (bounded). */
  readonly reports: MemtypeReport[] = [];

  constructor(deps: MemtypeDeps, capacity = 1024) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > 1 << 20)
      throw new RangeError(`MemtypeTracker: capacity must be an integer in 1..${1 << 20}, got ${capacity}`);
    this.#deps = deps;
    this.capacity = capacity;
    this.#start = new Int32Array(capacity);
    this.#end = new Int32Array(capacity);
    this.#type = new Int8Array(capacity);
  }

  /**
   * reserve_memtype over pfns [startPfn, endPfn): 0, or -EBUSY after reporting the first
   * conflict -- a reservation of another type, or a kernel alias (write-back) of a page in
   * the range -- in PAT's words; -ENOMEM when the list is full.
   */
  reserveMemtype(startPfn: number, endPfn: number, reqType: number, comm: string, pid: number): number {
    if (!Number.isInteger(startPfn) || !Number.isInteger(endPfn) || startPfn < 0 || endPfn <= startPfn) return -EINVAL;
    for (let i = 0; i < this.#n; i++) {
      if (this.#start[i]! < endPfn && startPfn < this.#end[i]! && this.#type[i] !== reqType)
        return this.#conflict(startPfn, endPfn, reqType, this.#type[i]!, 'a reservation', comm, pid);
    }
    for (let pfn = startPfn; pfn < endPfn; pfn++) {
      const who = this.#deps.aliasesOf(pfn);
      if (who.length > 0 && reqType !== _PAGE_CACHE_WB)
        return this.#conflict(startPfn, endPfn, reqType, _PAGE_CACHE_WB, who[0]!, comm, pid);
    }
    if (this.#n >= this.capacity) return -ENOMEM;
    this.#start[this.#n] = startPfn;
    this.#end[this.#n] = endPfn;
    this.#type[this.#n] = reqType;
    this.#n++;
    this.#reserved++;
    return 0;
  }

  /** free_memtype: the reservation of exactly [startPfn, endPfn). 0 or -EINVAL (reported). */
  freeMemtype(startPfn: number, endPfn: number, comm: string, pid: number): number {
    for (let i = 0; i < this.#n; i++) {
      if (this.#start[i] !== startPfn || this.#end[i] !== endPfn) continue;
      const last = --this.#n;
      this.#start[i] = this.#start[last]!;
      this.#end[i] = this.#end[last]!;
      this.#type[i] = this.#type[last]!;
      this.#freed++;
      return 0;
    }
    this.#deps.report('warning', [
      `${comm}:${pid} freeing invalid memtype ${hex(startPfn * PAGE_SIZE)}-${hex(endPfn * PAGE_SIZE)}`,
    ]);
    return -EINVAL;
  }

  /**
   * set_memory_uc: numPages lowmem pages from the direct-map address addr made uncached
   * (UC-). change_page_attr's alias shootdown first (when the kernel has it), then
   * reserve_memtype. 0, or -EINVAL when the reservation was refused (as Linux returns).
   */
  setMemoryUc(addr: number, numPages: number, comm: string, pid: number): number {
    const pfn = this.#deps.pfnOf(addr);
    if (pfn < 0 || !Number.isInteger(numPages) || numPages < 1) return -EINVAL;
    const flush = this.#deps.vmUnmapAliases;
    if (flush !== null) {
      flush();
      this.#cpaAliasFlushes++;
    }
    if (this.reserveMemtype(pfn, pfn + numPages, _PAGE_CACHE_UC_MINUS, comm, pid) < 0) return -EINVAL;
    this.#ucPages += numPages;
    return 0;
  }

  /** set_memory_wb: back to write-back, the reservation freed. 0 or -EINVAL. */
  setMemoryWb(addr: number, numPages: number, comm: string, pid: number): number {
    const pfn = this.#deps.pfnOf(addr);
    if (pfn < 0) return -EINVAL;
    const rc = this.freeMemtype(pfn, pfn + numPages, comm, pid);
    if (rc === 0) this.#ucPages -= numPages;
    return rc;
  }

  /** The type reserved over pfn, or _PAGE_CACHE_WB when none. */
  lookupMemtype(pfn: number): number {
    for (let i = 0; i < this.#n; i++) if (this.#start[i]! <= pfn && pfn < this.#end[i]!) return this.#type[i]!;
    return _PAGE_CACHE_WB;
  }

  stats(): MemtypeStats {
    return {
      reserved: this.#reserved,
      freed: this.#freed,
      conflicts: this.#conflicts,
      ucPages: this.#ucPages,
      cpaAliasFlushes: this.#cpaAliasFlushes,
    };
  }

  #conflict(
    startPfn: number,
    endPfn: number,
    reqType: number,
    actual: number,
    holder: string,
    comm: string,
    pid: number,
  ): number {
    const start = startPfn * PAGE_SIZE;
    const end = endPfn * PAGE_SIZE;
    const lines = [
      `${comm}:${pid} conflicting memory types ${hex(start)}-${hex(end)} ${cattrName(reqType)}<->${cattrName(actual)}`,
      `reserve_memtype failed 0x${hex(start)}-0x${hex(end)}, track ${cattrName(reqType)}, req ${cattrName(reqType)}`,
      `  (the ${cattrName(actual)} mapping: ${holder})`,
    ];
    this.#deps.report('memtype', lines);
    this.#conflicts++;
    this.#deps.onConflict?.();
    if (this.reports.length >= 256) this.reports.shift();
    this.reports.push({
      kind: 'memtype',
      comm,
      pid,
      start,
      end,
      reqType: cattrName(reqType),
      conflictType: cattrName(actual),
      holder,
      lines,
    });
    return -EBUSY;
  }
}
