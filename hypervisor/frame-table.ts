/*
 * The frame table: Xen's struct page_info for every machine frame, as typed-array columns.
 *
 * ----------------------------------------------------------------------------------------
 * Invariants (read these before changing anything in hypervisor/)
 * ----------------------------------------------------------------------------------------
 * Every frame has two reference counts and a type.
 *
 *  count (Xen's count_info): the GENERAL count. Every use of a frame by a domain holds one:
 *    each present page-table entry that maps it (any level, any permission), each pin, each
 *    base pointer, and the allocation itself (PGC_allocated, held from the moment the
 *    domain builder gives the frame to a domain until the domain is destroyed). A frame
 *    returns to the heap only when its count reaches zero.
 *
 *  type + type count (Xen's type_info): what the frame is being used AS. The uses are
 *    mutually exclusive: an L1, L2, L3 or L4 page table, or a writable data page. The
 *    type count says how many holders rely on the current type:
 *      - a writable page: one per present RW L1 entry that maps it;
 *      - a page table of level N: one per present entry of level N+1 referencing it,
 *        one per pin, one per base pointer (cr3 / user cr3) using it as a root.
 *    THE rule: a type may change only while the type count is 0. Hence a frame with any
 *    writable mapping cannot become a page table (the 2007 XFS alias is refused here),
 *    and a page table can never be mapped writable: the guest cannot write its own page
 *    tables except through a hypercall that validates what it writes.
 *
 *  PGT_validated: set once every entry of a page-table frame has been checked and has
 *    taken its references (promote_lN_table). Cleared when the type count drops to 0 and
 *    the entries' references are released (demote_lN_table). Writable pages are
 *    validated at once. A type count of 0 with a page-table type is a frame that "was" a
 *    table: the next get of the same type revalidates it from scratch.
 *
 *  PGT_pinned: the guest asked the frame to stay a page table (MMUEXT_PIN_Ln_TABLE); the
 *    pin holds one general and one type reference until MMUEXT_UNPIN_TABLE.
 *
 *  PGT_pae_xen_l2: a pae L2 referenced from L3 slot 3; its top slots are Xen's. It is
 *    part of the type for matching, so such an L2 cannot also be used elsewhere.
 *
 *  linear: Xen's linear_pt_count. > 0: this table is the TARGET of that many same-level
 *    ("linear") entries; < 0: this table CONTAINS that many such entries. Never both
 *    (XSA-240), so a linear chain is at most one step long.
 *
 *  tlbflushTimestamp: the time (a global clock) at which the type count last fell to 0.
 *    A vCPU that has flushed its TLB since then cannot hold a stale entry for the frame,
 *    so the flush on a type change skips it (Xen's tlbflush_filter).
 *
 * The frame table is private to the hypervisor thread: no guest ever sees these columns.
 * Owners are domain ids; DOMID_INVALID means free (on the heap).
 * ----------------------------------------------------------------------------------------
 */
import { DOMID_INVALID, DOMID_XEN } from '../src/abi/xen.js';

/** Xen's PGC_allocated, printed as bit 63 of count_info. */
export const PGC_ALLOCATED_HI = 0x80000000;

export class FrameTable {
  readonly nrFrames: number;
  /** Owning domain id, or DOMID_INVALID when free. */
  readonly owner: Uint16Array;
  /** General reference count (excluding PGC_allocated, kept apart). */
  readonly count: Int32Array;
  /** PGC_allocated: 1 while the frame belongs to a domain's allocation. */
  readonly allocated: Uint8Array;
  /** Top word of type_info: PGT_* type | PGT_* flags. */
  readonly typeHi: Uint32Array;
  /** Type count (the low 55 bits of Xen's type_info; 32 are plenty here). */
  readonly typeCount: Uint32Array;
  /** linear_pt_count (see the essay above). */
  readonly linear: Int16Array;
  readonly tlbflushTimestamp: Uint32Array;
  /** M2P: machine frame -> guest pfn, -1 when none. */
  readonly m2p: Int32Array;

  /* The heap: a stack of free frames. */
  readonly #free: Int32Array;
  #nrFree = 0;

  constructor(nrFrames: number, firstUsable: number) {
    this.nrFrames = nrFrames;
    this.owner = new Uint16Array(nrFrames).fill(DOMID_INVALID);
    this.count = new Int32Array(nrFrames);
    this.allocated = new Uint8Array(nrFrames);
    this.typeHi = new Uint32Array(nrFrames);
    this.typeCount = new Uint32Array(nrFrames);
    this.linear = new Int16Array(nrFrames);
    this.tlbflushTimestamp = new Uint32Array(nrFrames);
    this.m2p = new Int32Array(nrFrames).fill(-1);
    this.#free = new Int32Array(nrFrames);
    // Frames below firstUsable are Xen's own (as the low frames of a real host are).
    for (let mfn = 0; mfn < firstUsable; mfn++) this.owner[mfn] = DOMID_XEN;
    // Push in descending order so allocation hands out ascending mfns.
    for (let mfn = nrFrames - 1; mfn >= firstUsable; mfn--) this.#free[this.#nrFree++] = mfn;
  }

  get nrFree(): number {
    return this.#nrFree;
  }

  /** alloc_domheap_page: take a free frame for `domid`, with PGC_allocated and count 1. */
  allocDomheapPage(domid: number): number {
    if (this.#nrFree === 0) return -1;
    const mfn = this.#free[--this.#nrFree]!;
    this.owner[mfn] = domid;
    this.allocated[mfn] = 1;
    this.count[mfn] = 1;
    this.typeHi[mfn] = 0;
    this.typeCount[mfn] = 0;
    this.linear[mfn] = 0;
    return mfn;
  }

  /** free_domheap_page: the frame goes back to the heap. Caller ensures count is 0. */
  freeDomheapPage(mfn: number): void {
    this.owner[mfn] = DOMID_INVALID;
    this.allocated[mfn] = 0;
    this.typeHi[mfn] = 0;
    this.typeCount[mfn] = 0;
    this.linear[mfn] = 0;
    this.m2p[mfn] = -1;
    this.#free[this.#nrFree++] = mfn;
  }

  /** mfn_valid: a real frame of machine memory. */
  mfnValid(mfn: number): boolean {
    return mfn >= 0 && mfn < this.nrFrames;
  }

  /** get_page: a general reference, only if `domid` owns the frame and it is live. */
  getPage(mfn: number, domid: number): boolean {
    if (this.owner[mfn] !== domid || this.count[mfn]! <= 0) return false;
    this.count[mfn]!++;
    return true;
  }

  /** put_page: drop a general reference; the last one frees the frame. */
  putPage(mfn: number): void {
    const c = --this.count[mfn]!;
    if (c === 0) this.freeDomheapPage(mfn);
  }

  /** count_info as Xen prints it (%016lx with PGC_allocated at bit 63). */
  cafHex(mfn: number): string {
    const hi = this.allocated[mfn] ? PGC_ALLOCATED_HI : 0;
    return hi.toString(16).padStart(8, '0') + (this.count[mfn]! >>> 0).toString(16).padStart(8, '0');
  }

  /** type_info as Xen prints it (%016lx). */
  tafHex(mfn: number): string {
    return (
      (this.typeHi[mfn]! >>> 0).toString(16).padStart(8, '0') +
      (this.typeCount[mfn]! >>> 0).toString(16).padStart(8, '0')
    );
  }
}
