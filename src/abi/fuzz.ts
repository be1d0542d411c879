/*
 * The hypercall fuzzer's generator, shared by its two executors: the in-process engine
 * (hypervisor/fuzz.ts, serving the slot with Xen.serveSlot) and the guest program that
 * issues the same calls from a real vCPU worker (guest/programs/fuzz.ts). It is pure:
 * a seeded PRNG, a model of what one hostile domain knows (its pool frames, its tables,
 * what it pinned), and encoders that lay a hypercall's words out exactly as the slot ABI
 * says (guest/arch/xen/hypercall.ts documents it). It imports only src/abi/.
 *
 * Calls are built to get deep: besides random single calls there are plans -- a whole
 * tree of pool frames filled bottom-up, remapped read-only, pinned at its top level,
 * sometimes installed as the base pointer and then switched back, later unpinned and
 * made writable again -- and linear (same-level, read-only) entries into pinned tables.
 * A hostile fraction overwrites one word of the encoded request with a random one (bad
 * handles, counts, commands, ops): the hypervisor must answer every one with an errno.
 */
import {
  DOMID_SELF,
  MMUEXT_CLEAR_PAGE,
  MMUEXT_COPY_PAGE,
  MMUEXT_INVLPG_ALL,
  MMUEXT_INVLPG_LOCAL,
  MMUEXT_INVLPG_MULTI,
  MMUEXT_NEW_BASEPTR,
  MMUEXT_NEW_USER_BASEPTR,
  MMUEXT_PIN_L1_TABLE,
  MMUEXT_SET_LDT,
  MMUEXT_TLB_FLUSH_ALL,
  MMUEXT_TLB_FLUSH_LOCAL,
  MMUEXT_TLB_FLUSH_MULTI,
  MMUEXT_UNPIN_TABLE,
  MMU_MACHPHYS_UPDATE,
  MMU_NORMAL_PT_UPDATE,
  MMU_PT_UPDATE_PRESERVE_AD,
  type PagingMode,
  UVMF_ALL,
  UVMF_INVLPG,
  UVMF_LOCAL,
  UVMF_TLB_FLUSH,
  __HYPERVISOR_mmu_update,
  __HYPERVISOR_mmuext_op,
  __HYPERVISOR_multicall,
  __HYPERVISOR_sched_op,
  __HYPERVISOR_update_va_mapping,
  _PAGE_ACCESSED,
  _PAGE_DIRTY,
  _PAGE_GLOBAL,
  _PAGE_PCD,
  _PAGE_PRESENT,
  _PAGE_PSE,
  _PAGE_RW,
  _PAGE_USER,
} from './xen.js';
import {
  MC_ARGS,
  MC_ENTRY_WORDS,
  MC_OP,
  MMUEXT_OP_WORDS,
  MMU_REQ_WORDS,
  XEN_L4_LAST,
  layoutFor,
  vaHiWord,
} from './layout.js';
import { entryMaddrHi, entryMaddrLo, pteHi, pteLo } from './pte.js';

/* -------------------------------------------------------------------- PRNG */

/** mulberry32: small, fast, and the same sequence on every thread for a seed. */
export class FuzzRng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0;
  }
  u32(): number {
    this.#s = (this.#s + 0x6d2b79f5) >>> 0;
    let t = this.#s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** 0 .. n-1 */
  int(n: number): number {
    return Math.floor((this.u32() / 4294967296) * n);
  }
  pick<T>(a: readonly T[]): T {
    return a[this.int(a.length)]!;
  }
  chance(p: number): boolean {
    return this.u32() / 4294967296 < p;
  }
}

/** The seed of run k of a fuzz run seeded `seed`: `--seed` of that value replays run k alone. */
export function runSeed(seed: number, k: number): number {
  return (seed + k) >>> 0;
}

/* ---------------------------------------------------------- encoded calls */

/** Data words an encoded call may use (the slot's data area is larger). */
export const FUZZ_DATA_WORDS = 1024;

/** What an action was meant to do, for the coverage counts. */
export const A_CALL = 0;
export const A_STORE = 1;

/** One action: a hypercall laid out as slot words, or a guest store into a frame. */
export class FuzzAction {
  kind = A_CALL;
  op = 0;
  readonly args = new Uint32Array(12);
  readonly data = new Uint32Array(FUZZ_DATA_WORDS);
  dataLen = 0;
  /** A single MMUEXT_PIN_Ln (level), else 0; poolIndex is the pool frame it pins, or -1. */
  pinLevel = 0;
  poolIndex = -1;
  /** A single MMUEXT_NEW_BASEPTR: the mfn the vCPU's MMU switches to on success, else -1. */
  baseptr = -1;
  /** The words were overwritten at random (a hostile slot). */
  hostile = false;
  /** Store: frame (mfn and pfn), entry index and value. */
  mfn = 0;
  pfn = 0;
  index = 0;
  lo = 0;
  hi = 0;
  /** Short name for failure reports. */
  what = '';

  reset(): void {
    this.kind = A_CALL;
    this.op = 0;
    this.args.fill(0);
    this.data.fill(0, 0, this.dataLen);
    this.dataLen = 0;
    this.pinLevel = 0;
    this.poolIndex = -1;
    this.baseptr = -1;
    this.hostile = false;
    this.what = '';
  }

  /** The action as text: enough to see what a failing step did. */
  describe(): string {
    if (this.kind === A_STORE) {
      return `store mfn ${this.mfn.toString(16)}[${this.index}] = ${this.hi.toString(16)}:${this.lo.toString(16)}`;
    }
    const args = Array.from(this.args, (w) => w.toString(16)).join(' ');
    const data = Array.from(this.data.subarray(0, Math.min(this.dataLen, 48)), (w) => w.toString(16)).join(' ');
    return `${this.what}${this.hostile ? ' (hostile)' : ''}: op ${this.op} args [${args}] data [${data}${this.dataLen > 48 ? ' ...' : ''}]`;
  }
}

export type MmuReq = [mfn: number, index: number, lo: number, hi: number, cmd: number];
export type ExtOp = [cmd: number, arg1: number, arg2lo: number, arg2hi: number];

function setArg(a: FuzzAction, k: number, lo: number, hi = 0): void {
  a.args[2 * k] = lo >>> 0;
  a.args[2 * k + 1] = hi >>> 0;
}

/** Lay mmu_update requests at data word `at`, pdone after them; returns the next free word. */
function putMmuUpdate(d: Uint32Array, at: number, reqs: readonly MmuReq[], args: Uint32Array, argAt: number): number {
  reqs.forEach(([mfn, i, lo, hi, cmd], k) => {
    const w = at + k * MMU_REQ_WORDS;
    d[w] = entryMaddrLo(mfn, i, cmd);
    d[w + 1] = entryMaddrHi(mfn);
    d[w + 2] = lo >>> 0;
    d[w + 3] = hi >>> 0;
  });
  const pdone = at + reqs.length * MMU_REQ_WORDS;
  args[argAt] = at;
  args[argAt + 2] = reqs.length;
  args[argAt + 4] = pdone;
  args[argAt + 6] = DOMID_SELF;
  return pdone + 1;
}

/** Lay mmuext ops (and the vCPU bitmaps *_MULTI point to) at `at`; returns the next free word. */
function putMmuext(d: Uint32Array, at: number, ops: readonly ExtOp[], args: Uint32Array, argAt: number): number {
  let extra = at + ops.length * MMUEXT_OP_WORDS + 1;
  ops.forEach(([cmd, a1, a2lo, a2hi], k) => {
    const w = at + k * MMUEXT_OP_WORDS;
    d[w] = cmd >>> 0;
    d[w + 2] = a1 % 4294967296;
    d[w + 3] = Math.floor(a1 / 4294967296);
    if (cmd === MMUEXT_TLB_FLUSH_MULTI || cmd === MMUEXT_INVLPG_MULTI) {
      d[extra] = a2lo >>> 0;
      d[extra + 1] = a2hi >>> 0;
      d[w + 4] = extra;
      extra += 2;
    } else {
      d[w + 4] = a2lo >>> 0;
      d[w + 5] = a2hi >>> 0;
    }
  });
  const pdone = at + ops.length * MMUEXT_OP_WORDS;
  args[argAt] = at;
  args[argAt + 2] = ops.length;
  args[argAt + 4] = pdone;
  args[argAt + 6] = DOMID_SELF;
  return extra;
}

export function encodeMmuUpdate(a: FuzzAction, reqs: readonly MmuReq[]): void {
  a.op = __HYPERVISOR_mmu_update;
  a.dataLen = putMmuUpdate(a.data, 0, reqs, a.args, 0);
}

export function encodeMmuext(a: FuzzAction, ops: readonly ExtOp[]): void {
  a.op = __HYPERVISOR_mmuext_op;
  a.dataLen = putMmuext(a.data, 0, ops, a.args, 0);
}

/** update_va_mapping; a flags value past the flush type is UVMF_LOCAL, UVMF_ALL or a bitmap's byte offset. */
export function encodeUva(a: FuzzAction, va: number, lo: number, hi: number, flags: number): void {
  a.op = __HYPERVISOR_update_va_mapping;
  setArg(a, 0, va % 4294967296, vaHiWord(va));
  setArg(a, 1, lo, hi);
  setArg(a, 2, flags);
}

/** A multicall entry before encoding. */
export type SubCall =
  | { op: 'mmu_update'; reqs: MmuReq[] }
  | { op: 'mmuext'; ops: ExtOp[] }
  | { op: 'uva'; va: number; lo: number; hi: number; flags: number };

export function encodeMulticall(a: FuzzAction, calls: readonly SubCall[]): void {
  a.op = __HYPERVISOR_multicall;
  const d = a.data;
  let free = calls.length * MC_ENTRY_WORDS;
  const sub = new Uint32Array(12);
  calls.forEach((c, k) => {
    const e = k * MC_ENTRY_WORDS;
    sub.fill(0);
    if (c.op === 'mmu_update') {
      d[e + MC_OP] = __HYPERVISOR_mmu_update;
      free = putMmuUpdate(d, free, c.reqs, sub, 0);
    } else if (c.op === 'mmuext') {
      d[e + MC_OP] = __HYPERVISOR_mmuext_op;
      free = putMmuext(d, free, c.ops, sub, 0);
    } else {
      d[e + MC_OP] = __HYPERVISOR_update_va_mapping;
      sub[0] = c.va % 4294967296;
      sub[1] = vaHiWord(c.va);
      sub[2] = c.lo >>> 0;
      sub[3] = c.hi >>> 0;
      sub[4] = c.flags >>> 0;
    }
    d.set(sub, e + MC_ARGS);
  });
  setArg(a, 0, 0);
  setArg(a, 1, calls.length);
  a.dataLen = free;
}

/* ------------------------------------------------------------- the world */

/** What the generator needs to know of one domain (the DomainInfo fields it uses). */
export interface FuzzDomainInfo {
  p2m: ArrayLike<number>;
  vcpus: number;
  ptFirstPfn: number;
  nrPtFrames: number;
  firstFreePfn: number;
  lowmemPages: number;
}

/** Pool frames per domain: enough for a whole 3- or 4-level tree and spares. */
export const FUZZ_POOL = 24;
/** Frames per fuzzed domain. */
export const FUZZ_DOMAIN_FRAMES = 256;

interface Plan {
  /** Pool frame of the action, for stores and remaps. */
  k: number;
  what: 'store' | 'ro' | 'rw' | 'pin' | 'unpin' | 'baseptr' | 'home';
  index: number;
  lo: number;
  hi: number;
  level: number;
}

/** One hostile domain as the fuzzer sees it. */
export class FuzzDomain {
  readonly paging: PagingMode;
  readonly levels: number;
  readonly pageOffset: number;
  readonly vcpus: number;
  /** Pool frames: pfn and mfn. */
  readonly pfn: number[] = [];
  readonly mfn: number[] = [];
  /** The builder's root and first tables (mfns). */
  readonly root: number;
  readonly builderTables: number[];
  /** The other domain's frames, for foreign references. */
  foreign: number[] = [];
  /** Pool index -> level it is pinned at (as far as we know), 0 if not. */
  readonly pinned: Int8Array;
  /** Pool indices whose direct-map alias we made read-only. */
  readonly readOnly: Uint8Array;
  /** Pending steps of a plan. */
  readonly queue: Plan[] = [];
  /** The base pointer we believe is installed (for the MMU of a real vCPU). */
  cr3: number;

  constructor(paging: PagingMode, info: FuzzDomainInfo) {
    this.paging = paging;
    const layout = layoutFor(paging);
    this.levels = layout.levels;
    this.pageOffset = layout.pageOffset;
    this.vcpus = info.vcpus;
    for (let k = 0; k < FUZZ_POOL; k++) {
      const pfn = info.firstFreePfn + k;
      this.pfn.push(pfn);
      this.mfn.push(info.p2m[pfn]!);
    }
    this.root = info.p2m[info.ptFirstPfn]!;
    this.builderTables = [];
    for (let i = 0; i < Math.min(3, info.nrPtFrames); i++) this.builderTables.push(info.p2m[info.ptFirstPfn + i]!);
    this.pinned = new Int8Array(FUZZ_POOL);
    this.readOnly = new Uint8Array(FUZZ_POOL);
    this.cr3 = this.root;
  }

  directVa(k: number): number {
    return this.pageOffset + this.pfn[k]! * 4096;
  }
}

const INDICES = [0, 1, 2, 3, 4, 5, 256, 271, 272, 428, 511];
const FLAG_BITS = [
  _PAGE_PRESENT,
  _PAGE_RW,
  _PAGE_USER,
  _PAGE_ACCESSED,
  _PAGE_DIRTY,
  _PAGE_PSE,
  _PAGE_PCD,
  _PAGE_GLOBAL,
];
const RO = _PAGE_PRESENT | _PAGE_ACCESSED;
const RW = _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY;

/** Guest slots a tree of `level` may use (x86_64 L4: around Xen's; pae L3: 0..3). */
function treeSlots(w: FuzzDomain, level: number): number[] {
  if (w.paging === 'pae' && level === 3) return [0, 1, 2, 3];
  if (level === 4) return [0, 1, 2, XEN_L4_LAST + 1, 300, 511];
  return [0, 1, 2, 3, 17, 255, 511];
}

/**
 * The generator: given the world of the calling domain, fill `a` with the next action.
 * `note` must be told every call's result, so plans know what got pinned.
 */
export class FuzzGen {
  readonly rng: FuzzRng;
  /** Fraction of calls whose words are then overwritten at random. */
  hostile = 0.04;

  constructor(seed: number) {
    this.rng = new FuzzRng(seed);
  }

  #entry(w: FuzzDomain, ownK = -1): [number, number] {
    const r = this.rng;
    let flags: number;
    const f = r.int(256);
    if (f < 100) flags = RO;
    else if (f < 180) flags = RW;
    else if (f < 200) flags = 0;
    else {
      flags = 0;
      FLAG_BITS.forEach((bit, k) => {
        if (r.u32() & (1 << k)) flags |= bit;
      });
    }
    const t = r.int(20);
    const target =
      t === 0
        ? r.pick(w.foreign)
        : t === 1
          ? 5000 + r.int(100)
          : t < 4
            ? r.pick(w.builderTables)
            : w.mfn[ownK >= 0 ? ownK : r.int(FUZZ_POOL)]!;
    return [pteLo(target, flags), pteHi(target)];
  }

  /** Any frame the domain may name: pool, root, builder tables, sometimes foreign or bogus. */
  #frame(w: FuzzDomain): number {
    const r = this.rng;
    const t = r.int(16);
    if (t === 0) return r.pick(w.foreign);
    if (t === 1) return r.int(4) === 0 ? 0 : 5000 + r.int(100);
    if (t < 4) return r.pick(w.builderTables);
    return w.mfn[r.int(FUZZ_POOL)]!;
  }

  /** Plan a tree of `level` rooted at a free pool frame, bottom-up; returns whether one was planned. */
  #planTree(w: FuzzDomain, level: number): boolean {
    const r = this.rng;
    const free: number[] = [];
    for (let k = 0; k < FUZZ_POOL; k++) if (w.pinned[k] === 0) free.push(k);
    // Shuffle the free frames: the tree takes from the front, data frames from the back.
    for (let i = free.length - 1; i > 0; i--) {
      const j = r.int(i + 1);
      [free[i], free[j]] = [free[j]!, free[i]!];
    }
    if (free.length < level + 2) return false;
    const used: number[] = [];
    const plans: Plan[] = [];
    const build = (lvl: number): number => {
      const k = free.shift()!;
      used.push(k);
      if (lvl === 1) {
        const n = 1 + r.int(4);
        for (let e = 0; e < n; e++) {
          const data = free.length > 0 ? free[free.length - 1 - r.int(Math.min(free.length, 4))]! : k;
          const [lo, hi] = r.chance(0.85)
            ? [pteLo(w.mfn[data]!, r.chance(0.5) ? RW : RO), pteHi(w.mfn[data]!)]
            : this.#entry(w);
          plans.push({ k, what: 'store', index: r.pick(treeSlots(w, 1)), lo, hi, level: 1 });
        }
        return k;
      }
      const slots = treeSlots(w, lvl);
      const children = w.paging === 'pae' && lvl === 3 ? [3, ...(r.chance(0.5) ? [0] : [])] : [r.pick(slots)];
      if (r.chance(0.3) && lvl > 2 && free.length > lvl + 1) children.push(r.pick(slots));
      for (const i of new Set(children)) {
        if (free.length === 0) break;
        const c = build(lvl - 1);
        const flags = w.paging === 'pae' && lvl === 3 ? _PAGE_PRESENT : r.chance(0.9) ? RW : RO;
        plans.push({ k, what: 'store', index: i, lo: pteLo(w.mfn[c]!, flags), hi: pteHi(w.mfn[c]!), level: lvl });
      }
      return k;
    };
    const top = build(level);
    // Linux remaps every page-table frame read-only before pinning; sometimes we forget one.
    const skip = r.chance(0.1) ? r.pick(used) : -1;
    for (const k of used)
      if (k !== skip && w.readOnly[k] === 0) plans.push({ k, what: 'ro', index: 0, lo: 0, hi: 0, level: 0 });
    plans.push({ k: top, what: 'pin', index: 0, lo: 0, hi: 0, level });
    if (level === w.levels && r.chance(0.5)) {
      plans.push({ k: top, what: 'baseptr', index: 0, lo: 0, hi: 0, level });
      plans.push({ k: top, what: 'home', index: 0, lo: 0, hi: 0, level });
    }
    w.queue.push(...plans);
    return true;
  }

  /** Unpin a pinned pool table and make its frames' aliases writable again. */
  #planTeardown(w: FuzzDomain): boolean {
    const pinned: number[] = [];
    for (let k = 0; k < FUZZ_POOL; k++) if (w.pinned[k] !== 0) pinned.push(k);
    if (pinned.length === 0) return false;
    const k = this.rng.pick(pinned);
    w.queue.push({ k, what: 'unpin', index: 0, lo: 0, hi: 0, level: 0 });
    for (let j = 0; j < FUZZ_POOL; j++) {
      if (w.readOnly[j] !== 0 && this.rng.chance(0.5))
        w.queue.push({ k: j, what: 'rw', index: 0, lo: 0, hi: 0, level: 0 });
    }
    return true;
  }

  #fromPlan(w: FuzzDomain, p: Plan, a: FuzzAction): void {
    switch (p.what) {
      case 'store':
        a.kind = A_STORE;
        a.mfn = w.mfn[p.k]!;
        a.pfn = w.pfn[p.k]!;
        a.index = p.index;
        a.lo = p.lo;
        a.hi = p.hi;
        a.what = `plan store L${p.level}`;
        return;
      case 'ro':
      case 'rw':
        encodeUva(
          a,
          w.directVa(p.k),
          pteLo(w.mfn[p.k]!, p.what === 'ro' ? RO : RW),
          pteHi(w.mfn[p.k]!),
          UVMF_INVLPG | UVMF_ALL,
        );
        w.readOnly[p.k] = p.what === 'ro' ? 1 : 0;
        a.what = `plan remap ${p.what}`;
        return;
      case 'pin':
        encodeMmuext(a, [[MMUEXT_PIN_L1_TABLE + p.level - 1, w.mfn[p.k]!, 0, 0]]);
        a.pinLevel = p.level;
        a.poolIndex = p.k;
        a.what = `plan pin L${p.level}`;
        return;
      case 'unpin':
        encodeMmuext(a, [[MMUEXT_UNPIN_TABLE, w.mfn[p.k]!, 0, 0]]);
        w.pinned[p.k] = 0;
        a.what = 'plan unpin';
        return;
      case 'baseptr':
      case 'home': {
        const m = p.what === 'home' ? w.root : w.mfn[p.k]!;
        encodeMmuext(a, [[MMUEXT_NEW_BASEPTR, m, 0, 0]]);
        a.baseptr = m;
        a.what = `plan new_baseptr ${p.what}`;
        return;
      }
    }
  }

  #randomCall(w: FuzzDomain, a: FuzzAction): void {
    const r = this.rng;
    const idx = (): number => (r.chance(0.7) ? r.pick(INDICES) : r.int(512));
    const req = (): MmuReq => {
      const [lo, hi] = this.#entry(w);
      const c = r.int(20);
      const cmd =
        c === 0
          ? MMU_MACHPHYS_UPDATE
          : c === 1
            ? 3 + r.int(5)
            : c < 4
              ? MMU_PT_UPDATE_PRESERVE_AD
              : MMU_NORMAL_PT_UPDATE;
      return [this.#frame(w), idx(), lo, hi, cmd];
    };
    const k = r.int(FUZZ_POOL);
    const mask = (): [number, number] => [
      r.int(4) === 0 ? r.u32() : (1 << r.int(w.vcpus + 1)) >>> 0,
      r.int(8) === 0 ? r.u32() : 0,
    ];
    const ext = (): ExtOp => {
      const c = r.int(16);
      if (c < 4) return [MMUEXT_PIN_L1_TABLE + r.int(4), this.#frame(w), 0, 0];
      if (c < 6) return [MMUEXT_UNPIN_TABLE, this.#frame(w), 0, 0];
      if (c === 6)
        return [
          r.chance(0.5) ? MMUEXT_NEW_BASEPTR : MMUEXT_NEW_USER_BASEPTR,
          r.chance(0.5) ? w.root : this.#frame(w),
          0,
          0,
        ];
      if (c === 7) return [r.chance(0.5) ? MMUEXT_CLEAR_PAGE : MMUEXT_COPY_PAGE, this.#frame(w), this.#frame(w), 0];
      if (c === 8)
        return [
          r.pick([MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_INVLPG_LOCAL, MMUEXT_TLB_FLUSH_ALL, MMUEXT_INVLPG_ALL]),
          w.directVa(k),
          0,
          0,
        ];
      if (c === 9) return [r.chance(0.5) ? MMUEXT_TLB_FLUSH_MULTI : MMUEXT_INVLPG_MULTI, w.directVa(k), ...mask()];
      if (c === 10)
        return [MMUEXT_SET_LDT, r.chance(0.5) ? w.directVa(k) : r.u32(), r.int(9000), r.int(4) === 0 ? 1 : 0];
      if (c === 11) return [r.int(24), this.#frame(w), r.u32(), 0];
      // A linear entry is an mmu_update; here, pin something we just made read-only.
      return [MMUEXT_PIN_L1_TABLE + r.int(w.levels), w.mfn[k]!, 0, 0];
    };
    const uva = (): SubCall => {
      const [lo, hi] = r.chance(0.5) ? [pteLo(w.mfn[k]!, r.chance(0.5) ? RO : RW), pteHi(w.mfn[k]!)] : this.#entry(w);
      const va = r.int(8) === 0 ? r.pick([0xf0000000, 0x1000, w.pageOffset + 0x7fff000]) : w.directVa(k);
      const f = r.int(16);
      const flags =
        f < 6
          ? r.pick([0, UVMF_TLB_FLUSH, UVMF_INVLPG]) | r.pick([UVMF_LOCAL, UVMF_ALL])
          : f < 8
            ? r.pick([UVMF_TLB_FLUSH, UVMF_INVLPG]) | (8 * (1 + r.int(100)))
            : f < 9
              ? r.u32()
              : 0;
      return { op: 'uva', va, lo, hi, flags };
    };
    const kind = r.int(20);
    if (kind < 5) {
      const n = kind === 0 ? 2 + r.int(6) : 1;
      const reqs: MmuReq[] = [];
      for (let i = 0; i < n; i++) reqs.push(req());
      encodeMmuUpdate(a, reqs);
      a.what = `mmu_update x${n}`;
    } else if (kind < 7) {
      // A linear entry: a pinned table of level >= 2 pointing at itself or another of its level.
      const tables: number[] = [];
      for (let j = 0; j < FUZZ_POOL; j++)
        if (w.pinned[j]! >= 2 && !(w.paging === 'pae' && w.pinned[j] === 3)) tables.push(j);
      if (tables.length === 0) {
        encodeMmuUpdate(a, [req()]);
        a.what = 'mmu_update x1';
        return;
      }
      const t = r.pick(tables);
      const same = tables.filter((j) => w.pinned[j] === w.pinned[t]);
      const target = r.chance(0.5) ? t : r.pick(same);
      const lvl = w.pinned[t]!;
      const slot = r.pick(
        treeSlots(w, lvl)
          .slice(0, -1)
          .concat([r.int(512)]),
      );
      encodeMmuUpdate(a, [
        [w.mfn[t]!, slot, pteLo(w.mfn[target]!, r.chance(0.85) ? RO : RW), pteHi(w.mfn[target]!), MMU_NORMAL_PT_UPDATE],
      ]);
      a.what = `linear L${lvl}`;
    } else if (kind < 11) {
      const n = r.int(6) === 0 ? 2 + r.int(3) : 1;
      const ops: ExtOp[] = [];
      for (let i = 0; i < n; i++) ops.push(ext());
      encodeMmuext(a, ops);
      if (n === 1) {
        const cmd = ops[0]![0];
        if (cmd >= MMUEXT_PIN_L1_TABLE && cmd < MMUEXT_PIN_L1_TABLE + w.levels) {
          // (A pae pin of an L4 is quietly ignored by Xen: not a pin.)
          a.pinLevel = cmd - MMUEXT_PIN_L1_TABLE + 1;
          a.poolIndex = w.mfn.indexOf(ops[0]![1]);
        } else if (cmd === MMUEXT_NEW_BASEPTR) {
          a.baseptr = ops[0]![1];
        }
      }
      a.what = `mmuext x${n}`;
    } else if (kind < 15) {
      const u = uva() as Extract<SubCall, { op: 'uva' }>;
      encodeUva(a, u.va, u.lo, u.hi, u.flags);
      a.what = 'update_va_mapping';
    } else if (kind < 17) {
      const n = 1 + r.int(4);
      const calls: SubCall[] = [];
      for (let i = 0; i < n; i++) {
        const c = r.int(3);
        calls.push(c === 0 ? { op: 'mmu_update', reqs: [req()] } : c === 1 ? { op: 'mmuext', ops: [ext()] } : uva());
      }
      encodeMulticall(a, calls);
      a.what = `multicall x${n}`;
    } else if (kind < 19) {
      // A guest store into its own frame (refused by the MMU or the executor if it is a table in use).
      const [lo, hi] = this.#entry(w);
      a.kind = A_STORE;
      a.mfn = w.mfn[k]!;
      a.pfn = w.pfn[k]!;
      a.index = idx();
      a.lo = lo;
      a.hi = hi;
      a.what = 'store';
    } else {
      // Raw noise: a random hypercall number (mostly known ones) and random words.
      a.op = r.chance(0.7)
        ? r.pick([
            __HYPERVISOR_mmu_update,
            __HYPERVISOR_mmuext_op,
            __HYPERVISOR_multicall,
            __HYPERVISOR_update_va_mapping,
            __HYPERVISOR_sched_op,
          ])
        : r.u32() >>> r.int(32);
      for (let i = 0; i < 12; i++) a.args[i] = r.int(3) === 0 ? r.u32() : r.int(64);
      a.dataLen = r.int(64);
      for (let i = 0; i < a.dataLen; i++) a.data[i] = r.int(2) === 0 ? r.u32() : r.int(1024);
      a.what = 'noise';
    }
  }

  /** The next action of domain `w`. */
  next(w: FuzzDomain, a: FuzzAction): void {
    a.reset();
    const r = this.rng;
    const p = w.queue.shift();
    if (p !== undefined) {
      this.#fromPlan(w, p, a);
    } else {
      const c = r.int(10);
      const planned = c < 3 ? this.#planTree(w, 1 + r.int(w.levels)) : c < 4 ? this.#planTeardown(w) : false;
      const q = planned ? w.queue.shift() : undefined;
      if (q !== undefined) this.#fromPlan(w, q, a);
      else this.#randomCall(w, a);
    }
    if (a.kind === A_CALL && r.chance(this.hostile)) {
      // A hostile slot: one argument or data word replaced by a random one.
      a.hostile = true;
      const words = 12 + a.dataLen;
      const i = r.int(words);
      const v = r.chance(0.5) ? r.u32() : r.int(0x10000);
      if (i < 12) a.args[i] = v;
      else a.data[i - 12] = v;
      if (r.chance(0.1)) a.op = r.u32() >>> r.int(32);
      a.pinLevel = 0;
      a.baseptr = -1;
    }
  }

  /** Tell the generator how a call went (pins and base pointers it planned). */
  note(w: FuzzDomain, a: FuzzAction, rc: number): void {
    if (a.kind !== A_CALL || rc !== 0) {
      // A failed plan step leaves the rest of the plan to fail on its own: that is coverage too.
      return;
    }
    if (a.pinLevel > 0 && a.poolIndex >= 0) w.pinned[a.poolIndex] = a.pinLevel;
    if (a.baseptr >= 0) w.cr3 = a.baseptr;
  }
}

/* --------------------------------------------------------------- coverage */

/** What one fuzz run (or many, merged) reached. */
export interface FuzzCoverage {
  calls: number;
  stores: number;
  hostile: number;
  /** Successful single pins by level (index 1..4). */
  pinsOk: number[];
  /** Refused pins (single pins and pins in batches) by the log reason behind them. */
  pinsRefused: Record<string, number>;
  /** Frame type changes seen, e.g. "writable->l1". */
  typeChanges: Record<string, number>;
  /** Results by errno name ("ok" for 0). */
  results: Record<string, number>;
}

export function emptyCoverage(): FuzzCoverage {
  return { calls: 0, stores: 0, hostile: 0, pinsOk: [0, 0, 0, 0, 0], pinsRefused: {}, typeChanges: {}, results: {} };
}

export function mergeCoverage(into: FuzzCoverage, c: FuzzCoverage): FuzzCoverage {
  into.calls += c.calls;
  into.stores += c.stores;
  into.hostile += c.hostile;
  for (let i = 0; i < into.pinsOk.length; i++) into.pinsOk[i]! += c.pinsOk[i] ?? 0;
  const add = (a: Record<string, number>, b: Record<string, number>) => {
    for (const [k, v] of Object.entries(b)) a[k] = (a[k] ?? 0) + v;
  };
  add(into.pinsRefused, c.pinsRefused);
  add(into.typeChanges, c.typeChanges);
  add(into.results, c.results);
  return into;
}

export function bump(rec: Record<string, number>, key: string, n = 1): void {
  rec[key] = (rec[key] ?? 0) + n;
}

/* ------------------------------------------------------ failures, workers */

export interface FuzzFailure {
  paging: PagingMode;
  /** The run's own seed: `--seed` of it with `--runs 1` replays the run alone. */
  seed: number;
  /** Action index (-1: at build; after the last action: at destroy). */
  step: number;
  action: string;
  problems: string[];
  /** Transport mode only: the scheduler the run used. */
  sched?: 'det' | 'parallel';
}

/** "pvmmu fuzz ..." that replays one failing run alone. */
export function reproduceCommand(f: FuzzFailure, steps: number, transport = false): string {
  const t = transport ? ` --transport --sched ${f.sched ?? 'det'}` : '';
  return `pvmmu fuzz --seed ${f.seed} --runs 1 --steps ${steps} --paging ${f.paging}${t}`;
}

export function formatFailure(f: FuzzFailure, steps: number, transport = false): string {
  return [
    `FAIL ${f.paging} seed ${f.seed} step ${f.step}: ${f.action}`,
    ...f.problems.map((p) => `  ${p}`),
    `  reproduce: ${reproduceCommand(f, steps, transport)}`,
  ].join('\n');
}

/** workerData of hypervisor/fuzz-worker.js: which runs of which seed to do. */
export interface FuzzWorkerData {
  paging: PagingMode;
  seed: number;
  /** Run indices k (run k is seeded runSeed(seed, k)). */
  runs: number[];
  steps: number;
}

export type FuzzWorkerMessage =
  | { event: 'progress'; runsDone: number }
  | { event: 'done'; runsDone: number; coverage: FuzzCoverage; failure: FuzzFailure | null };
