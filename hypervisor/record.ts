/*
 * The recorder (`pvmmu run --record FILE.json`): every hypercall the hypervisor serves,
 * written down as a step of a scripted guest (README "Scripted guests: the format"), in
 * the order it was served, with what it returned (`expect`, `expect_done`) and its first
 * log line (`expect_log`).
 *
 * Cost when off: none. Xen's constructor installs the recording serveSlot only when a
 * recording was asked for (a configuration, not a per-call test), so the served path
 * of an ordinary run is byte for byte the one without this file.
 *
 * Names, not machine numbers: a frame is written as `@pfn:N` of the domain that owns it
 * (`B:@pfn:N` for another domain's), so a script stays valid when steps are taken away.
 * A replay builds the same domains on a machine of the same size, and the domain builder
 * is deterministic, so the pfns land on the same mfns and the log lines match verbatim.
 *
 * What a hypercall cannot show: a page-table frame's contents are written by the guest
 * with plain stores while the frame is an ordinary page. Validation reads them. So before
 * a call that may validate a frame (a pin, a new base pointer, an entry installed in a
 * table of level > 1), the recorder walks the tree below it, and writes a `fill` step
 * (the frame's non-zero entries) for every frame not already validated at that level
 * whose contents differ from what the script last put there.
 */
import {
  __HYPERVISOR_mmu_update,
  __HYPERVISOR_mmuext_op,
  __HYPERVISOR_multicall,
  __HYPERVISOR_sched_op,
  __HYPERVISOR_update_va_mapping,
  MMU_MACHPHYS_UPDATE,
  MMU_PT_UPDATE_PRESERVE_AD,
  FRAME_WORDS,
  MMUEXT_NAMES,
  PAGE_SIZE,
  MMUEXT_NEW_BASEPTR,
  MMUEXT_NEW_USER_BASEPTR,
  MMUEXT_PIN_L1_TABLE,
  MMUEXT_PIN_L4_TABLE,
  PGT_validated,
  PTE_ADDR_HI,
  UVMF_ALL,
  UVMF_FLUSHTYPE_MASK,
  UVMF_INVLPG,
  UVMF_TLB_FLUSH,
  _PAGE_NX_HI,
  _PAGE_PRESENT,
  _PAGE_PSE,
  levelOfType,
  rcName,
} from '../src/abi/xen.js';
import {
  GUEST_HANDLE_NULL,
  MC_ARGS,
  MC_ENTRY_WORDS,
  MC_OP,
  MC_RESULT,
  MMU_REQ_WORDS,
  MMUEXT_OP_WORDS,
  S_ARGS,
  S_DATA_WORDS,
  S_HEADER_WORDS,
  S_OP,
  slotBase,
} from '../src/abi/layout.js';
import { formatFlags, hex64, maddrMfn, pteMfn } from '../src/abi/pte.js';
import type { DomainConfig, Recording } from '../src/abi/control.js';
import type { Hv } from './hv.js';

type Json = Record<string, unknown>;

/** A call between before() and after(). */
export interface Pending {
  step: Json;
  nr: number;
  slot: number;
  logBefore: number;
}

/** Low flag bits a script ENTRY can name (P RW US PWT PCD A D PSE/PAT G). */
const NAMED_FLAGS = 0x1ff;

export class Recorder {
  readonly #hv: Hv;
  readonly #domains: DomainConfig[] = [];
  readonly #steps: Json[] = [];
  /** What the script last wrote into each frame it filled (pair words), by mfn. */
  readonly #filled = new Map<number, Uint32Array>();
  #unnamed = 0;
  #skipped = 0;

  constructor(hv: Hv) {
    this.#hv = hv;
  }

  domainCreated(cfg: DomainConfig): void {
    this.#domains.push({ ...cfg });
  }

  /**
   * Before serving the request in `slot` (domain `domid`): decode it and write down the
   * fills it needs. Returns what after() completes, or null for a call a script cannot say.
   */
  before(slot: number, domid: number, name: string): Pending | null {
    const hv = this.#hv;
    const t = hv.transport;
    const b = slotBase(slot);
    const data = b + S_HEADER_WORDS;
    const nr = t[b + S_OP]! >>> 0;
    const step = this.#decode(nr, b + S_ARGS, data, domid, true);
    if (step === null) {
      if (nr !== __HYPERVISOR_sched_op) this.#skipped++; // sched_op changes nothing a script sees
      return null;
    }
    step.domain = name;
    step.vcpu = hv.slotVcpu[slot]!;
    this.#fillsFor(nr, b + S_ARGS, data, domid, this.#steps);
    return { step, nr, slot, logBefore: hv.console.total };
  }

  /** After the call, before its vCPU is woken (its slot is still as the call left it). */
  after(p: Pending, rc: number): void {
    const hv = this.#hv;
    const t = hv.transport;
    const b = slotBase(p.slot);
    const data = b + S_HEADER_WORDS;
    const step = p.step;
    if (p.nr === __HYPERVISOR_multicall) {
      const h = t[b + S_ARGS]! >>> 0;
      const n = (step.calls as Json[]).length;
      step.expect = Array.from({ length: n }, (_, i) => rcName(t[data + h + i * MC_ENTRY_WORDS + MC_RESULT]!));
    } else {
      step.expect = rcName(rc);
      const pdone = t[b + S_ARGS + 4]! >>> 0;
      if (p.nr !== __HYPERVISOR_update_va_mapping && pdone !== GUEST_HANDLE_NULL && pdone < S_DATA_WORDS)
        step.expect_done = t[data + pdone]! >>> 0;
    }
    const first = hv.console.since(p.logBefore)[0];
    if (first !== undefined) step.expect_log = first.line;
    this.#steps.push(step);
  }

  /** The recording as a script (the JSON form `pvmmu script` reads). */
  take(name: string): Recording {
    const hv = this.#hv;
    const script = {
      name,
      paging: hv.paging,
      memory_mb: Math.round((hv.ft.nrFrames * PAGE_SIZE) / 2 ** 20),
      domains: this.#domains.map((c) => ({
        name: c.name,
        frames: c.frames,
        vcpus: c.vcpus,
        ...(c.lowmemFrames !== undefined ? { lowmem_frames: c.lowmemFrames } : {}),
      })),
      steps: this.#steps,
    };
    return { script, unnamed: this.#unnamed, skipped: this.#skipped };
  }

  /* ------------------------------------------------------------- naming */

  /** A frame as a script REF seen from domain `home`, or null (not a domain's frame). */
  #ref(mfn: number, home: number): string | null {
    const ft = this.#hv.ft;
    if (!ft.mfnValid(mfn)) return null;
    const owner = this.#hv.domains.get(ft.owner[mfn]!);
    if (owner === undefined) return null;
    const pfn = ft.m2p[mfn]!;
    if (pfn < 0 || owner.p2m[pfn] !== mfn) return null;
    return owner.domid === home ? `@pfn:${pfn}` : `${owner.name}:@pfn:${pfn}`;
  }

  #frame(mfn: number, home: number): string {
    const r = this.#ref(mfn, home);
    if (r !== null) return r;
    this.#unnamed++;
    return '@pfn:0'; // not a domain's frame: no name survives a replay
  }

  /** A 64-bit entry as a script ENTRY: 0, {frame, flags} when it can be named, else raw hex. */
  #entry(lo: number, hi: number, home: number): unknown {
    if (lo === 0 && hi === 0) return 0;
    const raw = `0x${hex64(hi, lo)}`;
    if ((lo & _PAGE_PRESENT) === 0 || (lo & 0xfff & ~NAMED_FLAGS) !== 0) return raw;
    if ((hi & ~(PTE_ADDR_HI | _PAGE_NX_HI)) !== 0) return raw;
    const ref = this.#ref(pteMfn(lo, hi), home);
    if (ref === null) return raw;
    const flags = formatFlags(lo & NAMED_FLAGS, (hi & _PAGE_NX_HI) !== 0);
    return { frame: ref, flags };
  }

  /* ------------------------------------------------------------- decoding */

  /** A hypercall in the slot as a script STEP (without domain, vcpu, results), or null. */
  #decode(nr: number, args: number, data: number, home: number, top: boolean): Json | null {
    const t = this.#hv.transport;
    const a = (k: number) => t[args + 2 * k]! >>> 0;
    const ah = (k: number) => t[args + 2 * k + 1]! >>> 0;
    switch (nr) {
      case __HYPERVISOR_mmu_update: {
        const h = a(0);
        const n = a(1);
        if (n === 0 || n > 512 || h + n * MMU_REQ_WORDS > S_DATA_WORDS) return null;
        const reqs: Json[] = [];
        for (let i = 0; i < n; i++) {
          const w = data + h + i * MMU_REQ_WORDS;
          const plo = t[w]! >>> 0;
          const phi = t[w + 1]! >>> 0;
          const cmd = plo & 7;
          const table = this.#frame(maddrMfn(plo, phi), home);
          const index = (plo & 0xfff) >>> 3;
          const vlo = t[w + 2]! >>> 0;
          const vhi = t[w + 3]! >>> 0;
          if (cmd === MMU_MACHPHYS_UPDATE) {
            reqs.push({ table, index: 0, entry: `0x${hex64(vhi, vlo)}`, cmd: 'machphys' });
          } else {
            const q: Json = { table, index, entry: this.#entry(vlo, vhi, home) };
            if (cmd === MMU_PT_UPDATE_PRESERVE_AD) q.cmd = 'preserve_ad';
            reqs.push(q);
          }
        }
        return { op: 'mmu_update', reqs };
      }
      case __HYPERVISOR_mmuext_op: {
        const h = a(0);
        const n = a(1);
        if (n === 0 || n > 256 || h + n * MMUEXT_OP_WORDS > S_DATA_WORDS) return null;
        const ops: Json[] = [];
        for (let i = 0; i < n; i++) ops.push(this.#extOp(data, data + h + i * MMUEXT_OP_WORDS, home));
        return { op: 'mmuext', ops };
      }
      case __HYPERVISOR_update_va_mapping: {
        const flags = a(2);
        const step: Json = {
          op: 'update_va_mapping',
          va: `0x${hex64(ah(0), a(0))}`,
          entry: this.#entry(a(1), ah(1), home),
        };
        const words: string[] = [];
        const type = flags & UVMF_FLUSHTYPE_MASK;
        if (type === UVMF_INVLPG) words.push('invlpg');
        else if (type === UVMF_TLB_FLUSH) words.push('tlb_flush');
        const rest = (flags & ~UVMF_FLUSHTYPE_MASK) >>> 0;
        if (rest === UVMF_ALL) words.push('all');
        else if (rest !== 0 && rest % 4 === 0 && (rest >>> 2) + 2 <= S_DATA_WORDS) {
          step.vcpus = maskVcpus(t[data + (rest >>> 2)]! >>> 0, t[data + (rest >>> 2) + 1]! >>> 0);
        }
        if (words.length > 0) step.flags = words.join('|');
        return step;
      }
      case __HYPERVISOR_multicall: {
        if (!top) return null;
        const h = a(0);
        const n = a(1);
        if (n === 0 || n > 32 || h + n * MC_ENTRY_WORDS > S_DATA_WORDS) return null;
        const calls: Json[] = [];
        for (let i = 0; i < n; i++) {
          const e = data + h + i * MC_ENTRY_WORDS;
          const c = this.#decode(t[e + MC_OP]! >>> 0, e + MC_ARGS, data, home, false);
          if (c === null) return null;
          calls.push(c);
        }
        return { op: 'multicall', calls };
      }
      default:
        return null;
    }
  }

  #extOp(data: number, w: number, home: number): Json {
    const t = this.#hv.transport;
    const cmd = t[w]! >>> 0;
    const a1 = t[w + 2]! >>> 0;
    const a1hi = t[w + 3]! >>> 0;
    const a2 = t[w + 4]! >>> 0;
    const a2hi = t[w + 5]! >>> 0;
    const name = MMUEXT_NAMES[cmd];
    if (name === undefined) return { cmd: `raw:${cmd}` };
    const op: Json = { cmd: name };
    const va = `0x${hex64(a1hi, a1)}`;
    const mask = (): number[] =>
      a2 + 2 <= S_DATA_WORDS ? maskVcpus(t[data + a2]! >>> 0, t[data + a2 + 1]! >>> 0) : [];
    if (/^(pin_|unpin|new_baseptr|new_user_baseptr|clear_page|copy_page|mark_super|unmark_super)/.test(name)) {
      op.frame = this.#frame(a1 + a1hi * 0x100000000, home);
      if (name === 'copy_page') op.src = this.#frame(a2 + a2hi * 0x100000000, home);
    } else if (name === 'invlpg_local' || name === 'invlpg_all') {
      op.va = va;
    } else if (name === 'invlpg_multi') {
      op.va = va;
      op.vcpus = mask();
    } else if (name === 'tlb_flush_multi') {
      op.vcpus = mask();
    } else if (name === 'set_ldt') {
      op.va = va;
      op.entries = a2;
    }
    return op;
  }

  /* ---------------------------------------------------------------- fills */

  /** Fill steps for every frame the call may validate (see the header). */
  #fillsFor(nr: number, args: number, data: number, home: number, out: Json[]): void {
    const hv = this.#hv;
    const t = hv.transport;
    const a = (k: number) => t[args + 2 * k]! >>> 0;
    const seen = new Set<number>();
    if (nr === __HYPERVISOR_multicall) {
      const h = a(0);
      const n = Math.min(a(1), 32);
      for (let i = 0; i < n && h + (i + 1) * MC_ENTRY_WORDS <= S_DATA_WORDS; i++) {
        const e = data + h + i * MC_ENTRY_WORDS;
        this.#fillsFor(t[e + MC_OP]! >>> 0, e + MC_ARGS, data, home, out);
      }
      return;
    }
    if (nr === __HYPERVISOR_mmu_update) {
      const h = a(0);
      const n = Math.min(a(1), 512);
      for (let i = 0; i < n && h + (i + 1) * MMU_REQ_WORDS <= S_DATA_WORDS; i++) {
        const w = data + h + i * MMU_REQ_WORDS;
        const plo = t[w]! >>> 0;
        if ((plo & 7) === MMU_MACHPHYS_UPDATE) continue;
        const mfn = maddrMfn(plo, t[w + 1]! >>> 0);
        if (!hv.ft.mfnValid(mfn)) continue;
        const typeHi = hv.ft.typeHi[mfn]!;
        const level = levelOfType(typeHi);
        if (level < 2 || hv.ft.typeCount[mfn] === 0 || (typeHi & PGT_validated) === 0) continue;
        const vlo = t[w + 2]! >>> 0;
        if ((vlo & _PAGE_PRESENT) === 0 || (vlo & _PAGE_PSE) !== 0) continue;
        this.#fillTree(pteMfn(vlo, t[w + 3]! >>> 0), level - 1, home, seen, out);
      }
      return;
    }
    if (nr === __HYPERVISOR_mmuext_op) {
      const h = a(0);
      const n = Math.min(a(1), 256);
      for (let i = 0; i < n && h + (i + 1) * MMUEXT_OP_WORDS <= S_DATA_WORDS; i++) {
        const w = data + h + i * MMUEXT_OP_WORDS;
        const cmd = t[w]! >>> 0;
        const mfn = (t[w + 2]! >>> 0) + (t[w + 3]! >>> 0) * 0x100000000;
        if (cmd >= MMUEXT_PIN_L1_TABLE && cmd <= MMUEXT_PIN_L4_TABLE)
          this.#fillTree(mfn, cmd - MMUEXT_PIN_L1_TABLE + 1, home, seen, out);
        else if (cmd === MMUEXT_NEW_BASEPTR || cmd === MMUEXT_NEW_USER_BASEPTR)
          this.#fillTree(mfn, hv.rootLevel, home, seen, out);
      }
    }
  }

  /** Fill `mfn` (as a level-`level` table) and the tables below it, as validation would read them. */
  #fillTree(mfn: number, level: number, home: number, seen: Set<number>, out: Json[]): void {
    const hv = this.#hv;
    const ft = hv.ft;
    if (level < 1 || seen.has(mfn) || !ft.mfnValid(mfn)) return;
    seen.add(mfn);
    const typeHi = ft.typeHi[mfn]!;
    // A table in use: at this level validation only takes a reference; at another it
    // fails with "Bad type". Either way it reads nothing (and a fill would be refused).
    if (levelOfType(typeHi) !== 0 && ft.typeCount[mfn]! > 0) return;
    const owner = hv.domains.get(ft.owner[mfn]!);
    const ref = this.#ref(mfn, owner?.domid ?? home);
    if (owner === undefined || ref === null) return;
    const words = hv.mem32.subarray(mfn * FRAME_WORDS, (mfn + 1) * FRAME_WORDS);
    const last = this.#filled.get(mfn);
    if (last === undefined ? words.some((w) => w !== 0) : !sameWords(last, words)) {
      const entries: Record<string, unknown> = {};
      for (let i = 0; i < 512; i++) {
        const lo = words[2 * i]!;
        const hi = words[2 * i + 1]!;
        if (lo !== 0 || hi !== 0) entries[i] = this.#entry(lo, hi, owner.domid);
      }
      out.push({ op: 'fill', domain: owner.name, frame: ref, entries });
      this.#filled.set(mfn, words.slice());
    }
    if (level === 1) return;
    for (let i = 0; i < 512; i++) {
      const lo = words[2 * i]!;
      if ((lo & _PAGE_PRESENT) === 0 || (lo & _PAGE_PSE) !== 0) continue;
      this.#fillTree(pteMfn(lo, words[2 * i + 1]!), level - 1, owner.domid, seen, out);
    }
  }
}

function sameWords(a: Uint32Array, b: Uint32Array): boolean {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function maskVcpus(m0: number, m1: number): number[] {
  const out: number[] = [];
  for (let v = 0; v < 64; v++) if (((v < 32 ? m0 : m1) >>> (v % 32)) & 1) out.push(v);
  return out;
}
