/*
 * Domain lifecycle: the PV domain builder and domain destruction.
 *
 * The builder leaves a domain as Xen's does for a PV kernel: its frames, a P2M list, a
 * start_info page, and an initial page-table tree that maps the domain's (low) memory in
 * the kernel direct map -- page-table frames read-only -- pinned and installed as every
 * vCPU's base pointer. Layout in pfn space:
 *   pfn 0                      start_info
 *   pfn 1 .. p2mFrames         the P2M list (one 32-bit mfn per pfn)
 *   then                       the page tables (root first)
 *   firstFreePfn ..            the guest kernel's to allocate
 *
 * Destruction releases every reference the domain holds (base pointers, pins, then the
 * allocation itself) and returns every frame to the heap with zero counts.
 */
import {
  _PAGE_ACCESSED,
  _PAGE_DIRTY,
  _PAGE_PRESENT,
  _PAGE_RW,
  PGT_pinned,
  pgtForLevel,
  levelOfType,
  PGT_validated,
  FRAME_WORDS,
  PAGE_SIZE,
} from '../src/abi/xen.js';
import { MAX_VCPUS_PER_DOMAIN, S_RUNSTATE, S_STATE, SLOT_IDLE, slotBase, vaIndex } from '../src/abi/layout.js';
import { pteHi, pteLo, pteMfn } from '../src/abi/pte.js';
import { Domain, type Hv } from './hv.js';
import type { DomainConfig, DomainInfo } from '../src/abi/control.js';
import { getPageAndType, putPageAndType, demoteTable } from './page-type.js';

const PT_FLAGS = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY;

export function validateDomainConfig(hv: Hv, cfg: DomainConfig): void {
  if (typeof cfg !== 'object' || cfg === null) throw new TypeError('domain config must be an object');
  if (typeof cfg.name !== 'string' || cfg.name.length === 0 || cfg.name.length > 64) {
    throw new TypeError(`domain name must be a string of 1..64 characters, got ${JSON.stringify(cfg.name)}`);
  }
  if (!Number.isInteger(cfg.frames) || cfg.frames < 64) {
    throw new RangeError(`domain "${cfg.name}": frames must be an integer >= 64, got ${cfg.frames}`);
  }
  if (!Number.isInteger(cfg.vcpus) || cfg.vcpus < 1 || cfg.vcpus > MAX_VCPUS_PER_DOMAIN) {
    throw new RangeError(
      `domain "${cfg.name}": vcpus must be an integer in 1..${MAX_VCPUS_PER_DOMAIN}, got ${cfg.vcpus}`,
    );
  }
  if (cfg.lowmemFrames !== undefined && (!Number.isInteger(cfg.lowmemFrames) || cfg.lowmemFrames < 64)) {
    throw new RangeError(`domain "${cfg.name}": lowmemFrames must be an integer >= 64, got ${cfg.lowmemFrames}`);
  }
  for (const d of hv.domains.values()) {
    if (d.name === cfg.name) throw new RangeError(`a domain named "${cfg.name}" already exists (d${d.domid})`);
  }
}

/** Page-table frames the builder needs to map `lowmem` pages. */
function ptFramesNeeded(hv: Hv, lowmem: number): number {
  const l1s = Math.ceil(lowmem / 512);
  if (hv.paging === 'pae') return 1 /* L3 */ + 1 /* slot-3 L2 */ + l1s;
  const l2s = Math.ceil(l1s / 512);
  const l3s = Math.ceil(l2s / 512);
  return 1 /* L4 */ + l3s + l2s + l1s;
}

export function createDomain(hv: Hv, cfg: DomainConfig): DomainInfo {
  validateDomainConfig(hv, cfg);
  const nrPages = cfg.frames;
  const lowmem = Math.min(cfg.lowmemFrames ?? nrPages, nrPages, hv.layout.maxLowmemFrames);
  const p2mFrames = Math.ceil(nrPages / 1024);
  const nrPt = ptFramesNeeded(hv, lowmem);
  const firstFree = 1 + p2mFrames + nrPt;
  if (firstFree + 16 > lowmem) {
    throw new RangeError(`domain "${cfg.name}": ${lowmem} lowmem frames cannot hold its ${firstFree} boot frames`);
  }
  if (hv.ft.nrFree < nrPages) {
    throw new RangeError(`domain "${cfg.name}" wants ${nrPages} frames but only ${hv.ft.nrFree} are free`);
  }
  const freeSlots: number[] = [];
  for (let s = 0; s < hv.maxSlots && freeSlots.length < cfg.vcpus; s++) {
    if (hv.slotDomain[s] === -1) freeSlots.push(s);
  }
  if (freeSlots.length < cfg.vcpus) {
    throw new RangeError(
      `domain "${cfg.name}" wants ${cfg.vcpus} vCPUs but only ${freeSlots.length} vCPU slots are free`,
    );
  }

  const domid = hv.nextDomid++;
  const d = new Domain(domid, cfg.name, nrPages);
  for (let pfn = 0; pfn < nrPages; pfn++) {
    const mfn = hv.ft.allocDomheapPage(domid);
    d.p2m[pfn] = mfn;
    hv.ft.m2p[mfn] = pfn;
    hv.mem32.fill(0, mfn * FRAME_WORDS, (mfn + 1) * FRAME_WORDS);
  }
  hv.domains.set(domid, d);
  for (let v = 0; v < cfg.vcpus; v++) {
    const slot = freeSlots[v]!;
    hv.slotDomain[slot] = domid;
    hv.slotVcpu[slot] = v;
    hv.slotFlushStamp[slot] = hv.tlbClock;
    hv.slotHighWater = Math.max(hv.slotHighWater, slot + 1);
    const b = slotBase(slot);
    Atomics.store(hv.transport, b + S_STATE, SLOT_IDLE);
    Atomics.store(hv.transport, b + S_RUNSTATE, 0);
    d.vcpus.push({ id: v, slot, cr3: -1, userCr3: -1, ldtBase: 0, ldtEnts: 0 });
  }

  // The P2M list.
  for (let pfn = 0; pfn < nrPages; pfn++) {
    hv.mem32[d.p2m[1 + (pfn >>> 10)]! * FRAME_WORDS + (pfn & 1023)] = d.p2m[pfn]!;
  }
  // The page tables, written directly: they are not validated yet.
  const ptFirst = 1 + p2mFrames;
  let nextPt = ptFirst;
  const takePt = (): number => d.p2m[nextPt++]!;
  const root = takePt();
  const isPt = (pfn: number): boolean => pfn >= ptFirst && pfn < ptFirst + nrPt;
  const m = hv.mem32;
  const setEntry = (table: number, i: number, mfn: number, flags: number): void => {
    m[table * FRAME_WORDS + 2 * i] = pteLo(mfn, flags);
    m[table * FRAME_WORDS + 2 * i + 1] = pteHi(mfn);
  };
  /** The table below `table` at index i, creating it on first use. */
  const child = (table: number, i: number): number => {
    const lo = m[table * FRAME_WORDS + 2 * i]!;
    if (lo & _PAGE_PRESENT) return pteMfn(lo, m[table * FRAME_WORDS + 2 * i + 1]!);
    const t = takePt();
    setEntry(table, i, t, hv.paging === 'pae' && table === root ? _PAGE_PRESENT : PT_FLAGS);
    return t;
  };
  if (hv.paging === 'pae') child(root, 3); // Xen's L2 must exist even when nothing else does
  for (let pfn = 0; pfn < lowmem; pfn++) {
    const va = hv.layout.pageOffset + pfn * PAGE_SIZE;
    let table = root;
    for (let level = hv.levels; level > 1; level--) table = child(table, vaIndex(va, level));
    const flags = isPt(pfn) ? _PAGE_PRESENT | _PAGE_ACCESSED : PT_FLAGS;
    setEntry(table, vaIndex(va, 1), d.p2m[pfn]!, flags);
  }
  if (nextPt - ptFirst > nrPt)
    throw new Error(`domain builder used ${nextPt - ptFirst} page-table frames, planned ${nrPt}`);

  // Pin the root (validating the whole tree) and install it on every vCPU.
  const ctx = { d, slot: -1 };
  const rootType = pgtForLevel(hv.rootLevel);
  const rc = getPageAndType(hv, ctx, root, rootType, domid);
  if (rc !== 0) {
    destroyDomain(hv, domid);
    throw new Error(`domain builder: the initial page tables of "${cfg.name}" failed validation (${rc})`);
  }
  hv.ft.typeHi[root] = (hv.ft.typeHi[root]! | PGT_pinned) >>> 0;
  for (const v of d.vcpus) {
    getPageAndType(hv, ctx, root, rootType, domid);
    v.cr3 = root;
  }

  // start_info: a few words a kernel would read first.
  const si = d.p2m[0]! * FRAME_WORDS;
  m[si] = nrPages;
  m[si + 1] = ptFirst;
  m[si + 2] = nrPt;
  m[si + 3] = 1;
  m[si + 4] = p2mFrames;
  m[si + 5] = firstFree;
  m[si + 6] = lowmem;
  m[si + 7] = domid;

  return {
    domid,
    name: cfg.name,
    paging: hv.paging,
    nrPages,
    vcpus: cfg.vcpus,
    slots: d.vcpus.map((v) => v.slot),
    p2m: Array.from(d.p2m),
    p2mPfn: 1,
    p2mFrames,
    startInfoPfn: 0,
    ptBasePfn: ptFirst,
    ptFirstPfn: ptFirst,
    nrPtFrames: nrPt,
    firstFreePfn: firstFree,
    lowmemPages: lowmem,
  };
}

/**
 * domain_kill + domain_relinquish_resources: drop the base pointers, the pins, then the
 * allocation of every frame. Safe at any point of a guest's life (also mid-batch: the
 * hypervisor serves one call at a time, so no call is half-applied).
 */
export function destroyDomain(hv: Hv, domid: number): void {
  const d = hv.domains.get(domid);
  if (!d) throw new RangeError(`no domain d${domid}`);
  d.dying = true;
  const ft = hv.ft;
  for (const v of d.vcpus) {
    if (v.cr3 >= 0) putPageAndType(hv, v.cr3, -1);
    if (v.userCr3 >= 0) putPageAndType(hv, v.userCr3, -1);
    v.cr3 = v.userCr3 = -1;
  }
  for (let pfn = 0; pfn < d.nrPages; pfn++) {
    const mfn = d.p2m[pfn]!;
    if (ft.owner[mfn] !== domid) continue;
    if (ft.typeHi[mfn]! & PGT_pinned) {
      ft.typeHi[mfn] = (ft.typeHi[mfn]! & ~PGT_pinned) >>> 0;
      putPageAndType(hv, mfn, -1);
    }
  }
  // Anything still validated is held only by other tables of this dying domain: demote.
  for (let pfn = 0; pfn < d.nrPages; pfn++) {
    const mfn = d.p2m[pfn]!;
    if (ft.owner[mfn] !== domid) continue;
    const x = ft.typeHi[mfn]!;
    if (levelOfType(x) !== 0 && (x & PGT_validated) !== 0 && ft.typeCount[mfn]! > 0) {
      ft.typeHi[mfn] = (x & ~PGT_validated) >>> 0;
      demoteTable(hv, mfn, levelOfType(x), x);
    }
  }
  for (let pfn = 0; pfn < d.nrPages; pfn++) {
    const mfn = d.p2m[pfn]!;
    if (ft.owner[mfn] !== domid) continue;
    if (ft.allocated[mfn]) {
      ft.allocated[mfn] = 0;
      ft.putPage(mfn);
    }
    // A frame still referenced now is held by nothing that survives: reclaim it.
    if (ft.owner[mfn] === domid) {
      ft.count[mfn] = 0;
      ft.freeDomheapPage(mfn);
    }
  }
  for (const v of d.vcpus) {
    hv.slotDomain[v.slot] = -1;
    hv.slotVcpu[v.slot] = -1;
  }
  hv.domains.delete(domid);
}
