/*
 * Property-based fuzzing of the hypervisor: random hypercall sequences from two hostile
 * domains. After EVERY step the auditor must agree with the frame table and no domain
 * may reach another's frame or hold a writable mapping of a page table.
 *
 * CI runs a bounded number of sequences; `npm run fuzz` sets PVMMU_FUZZ_RUNS higher.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  MMUEXT_NEW_BASEPTR,
  MMUEXT_PIN_L1_TABLE,
  MMUEXT_TLB_FLUSH_ALL,
  MMUEXT_UNPIN_TABLE,
  MMUEXT_NEW_USER_BASEPTR,
  MMUEXT_CLEAR_PAGE,
  MMUEXT_COPY_PAGE,
  _PAGE_ACCESSED,
  _PAGE_DIRTY,
  _PAGE_GLOBAL,
  _PAGE_PCD,
  _PAGE_PRESENT,
  _PAGE_PSE,
  _PAGE_RW,
  _PAGE_USER,
  type PagingMode,
} from '../../src/abi/xen.js';
import { layoutFor } from '../../src/abi/layout.js';
import { pteHi, pteLo } from '../../src/abi/pte.js';
import { type Call, type Dom, XenBox } from '../helpers/xenbox.js';

const RUNS = Number(process.env.PVMMU_FUZZ_RUNS ?? 40);
const STEPS = 40;
const POOL = 4;
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

interface World {
  box: XenBox;
  doms: Dom[];
  /** Per domain: pool frames (mfns), then its root, then its first kernel tables. */
  frames: number[][];
  vas: number[][];
}

function makeWorld(paging: PagingMode): World {
  const box = new XenBox({ paging, frames: 2048, maxSlots: 4 });
  const doms = [box.domain('A', { frames: 256, vcpus: 2 }), box.domain('B', { frames: 256, vcpus: 1 })];
  const frames: number[][] = [];
  const vas: number[][] = [];
  for (const d of doms) {
    const pool: number[] = [];
    const v: number[] = [];
    for (let i = 0; i < POOL; i++) {
      const f = d.alloc();
      pool.push(f.mfn);
      v.push(f.va);
    }
    const pt = d.info.p2m.slice(d.info.ptFirstPfn, d.info.ptFirstPfn + 3);
    frames.push([...pool, ...pt]);
    v.push(layoutFor(paging).pageOffset + d.info.ptFirstPfn * 4096, 0xf0000000, 0x1000);
    vas.push(v);
  }
  return { box, doms, frames, vas };
}

/** A step is a list of small integers that pick from the world at run time. */
const step = fc.record({
  dom: fc.nat(1),
  vcpu: fc.nat(1),
  kind: fc.nat(11),
  a: fc.nat(100),
  b: fc.nat(100),
  c: fc.nat(100),
  flags: fc.nat(255),
  foreign: fc.nat(5),
});
type Step = typeof step extends fc.Arbitrary<infer T> ? T : never;

/** Plausible entries most of the time (a fuzzer of pure noise never gets past the flags check). */
const SANE_FLAGS = [_PAGE_PRESENT | _PAGE_ACCESSED, _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY, 0];

function entryFor(w: World, s: Step, di: number): [number, number] {
  let flags = 0;
  if (s.flags < 192) {
    flags = SANE_FLAGS[s.flags % SANE_FLAGS.length]!;
  } else {
    FLAG_BITS.forEach((bit, k) => {
      if (s.flags & (1 << k)) flags |= bit;
    });
  }
  // Mostly our own frames; sometimes the other domain's, sometimes a bad mfn.
  const target =
    s.foreign === 0
      ? w.frames[1 - di]![s.b % w.frames[1 - di]!.length]!
      : s.foreign === 1
        ? 5000 + s.b
        : w.frames[di]![s.b % w.frames[di]!.length]!;
  return [pteLo(target, flags), pteHi(target)];
}

function toCall(w: World, s: Step, di: number): Call {
  const fr = w.frames[di]!;
  const [lo, hi] = entryFor(w, s, di);
  switch (s.kind % 4) {
    case 0:
    case 1:
      return { op: 'mmu_update', reqs: [[fr[s.a % fr.length]!, INDICES[s.c % INDICES.length]!, lo, hi]] };
    case 2:
      return {
        op: 'mmuext',
        ops: [{ cmd: MMUEXT_PIN_L1_TABLE + [0, 0, 1, 2, 3][s.c % 5]!, arg1: fr[s.a % fr.length] }],
      };
    default:
      return { op: 'uva', va: w.vas[di]![s.a % w.vas[di]!.length]!, lo, hi, flags: s.c % 8 };
  }
}

function run(w: World, s: Step): void {
  const di = s.dom;
  const d = w.doms[di]!;
  d.vcpu = Math.min(s.vcpu, d.info.vcpus - 1);
  const fr = w.frames[di]!;
  const mfn = fr[s.a % fr.length]!;
  switch (s.kind) {
    case 0: {
      // The guest's own store: possible only into a frame that is not a page table in use.
      const fi = w.box.xen.frameInfo(mfn)!;
      const level = fi.typeHi >>> 29;
      if (level >= 1 && level <= 4 && fi.typeCount > 0) return;
      const [lo, hi] = entryFor(w, s, di);
      d.poke(mfn, INDICES[s.c % INDICES.length]!, lo, hi);
      return;
    }
    case 1:
    case 2:
    case 3: {
      const c = toCall(w, s, di);
      if (c.op === 'mmu_update') d.mmuUpdate(c.reqs);
      else if (c.op === 'mmuext') d.mmuext(c.ops);
      else d.uva(c.va, c.lo, c.hi, c.flags);
      return;
    }
    case 4:
      d.mmuext([{ cmd: MMUEXT_UNPIN_TABLE, arg1: mfn }]);
      return;
    case 5:
      d.mmuext([{ cmd: s.c % 2 ? MMUEXT_NEW_BASEPTR : MMUEXT_NEW_USER_BASEPTR, arg1: mfn }]);
      return;
    case 6:
      d.mmuext([{ cmd: s.c % 2 ? MMUEXT_CLEAR_PAGE : MMUEXT_COPY_PAGE, arg1: mfn, arg2: fr[s.b % fr.length] }]);
      return;
    case 7:
      d.multicall([toCall(w, s, di), toCall(w, { ...s, kind: s.kind + 1, a: s.b, b: s.c, c: s.a }, di)]);
      return;
    case 8:
      d.mmuext([{ cmd: MMUEXT_TLB_FLUSH_ALL }]);
      return;
    case 10:
    case 11: {
      // Remap a pool frame's direct-map alias read-only (as Linux does before pinning) or back RW.
      const k = s.a % POOL;
      const pte = pteLo(fr[k]!, _PAGE_PRESENT | _PAGE_ACCESSED | (s.kind === 11 ? _PAGE_RW | _PAGE_DIRTY : 0));
      d.uva(w.vas[di]![k]!, pte, pteHi(fr[k]!), 0);
      return;
    }
    default:
      d.mmuUpdate([
        [mfn, INDICES[s.c % INDICES.length]!, ...entryFor(w, s, di)],
        [fr[s.b % fr.length]!, INDICES[s.a % INDICES.length]!, ...entryFor(w, { ...s, b: s.c }, di)],
      ]);
  }
}

function check(w: World, where: string): void {
  const r = w.box.audit();
  if (!r.ok || r.isolationViolations !== 0) {
    throw new Error(
      `${where}: audit failed: ${r.problems
        .slice(0, 5)
        .map((p) => `mfn ${p.mfn.toString(16)}: ${p.what}`)
        .join('; ')}`,
    );
  }
}

describe('fuzzing the hypercall interface', () => {
  for (const paging of ['pae', 'x86_64'] as const) {
    it(`${paging}: the auditor agrees and isolation holds after every step (${RUNS} runs x ${STEPS} steps)`, () => {
      // Coverage: a fuzzer whose calls all bounce off proves nothing.
      const seen = { pinsOk: 0, pinsRefused: 0, mmuUpdates: 0, validations: 0, rejected: 0 };
      fc.assert(
        fc.property(fc.array(step, { minLength: STEPS, maxLength: STEPS }), (steps) => {
          const w = makeWorld(paging);
          const free0 = w.box.xen.freeFrames() + 512;
          check(w, 'after build');
          steps.forEach((s, i) => {
            run(w, s);
            check(w, `step ${i} ${JSON.stringify(s)}`);
          });
          const st = w.box.xen.stats();
          seen.pinsOk += st.pinsAttempted - st.pinsRefused;
          seen.pinsRefused += st.pinsRefused;
          seen.mmuUpdates += st.mmuUpdates;
          seen.validations += st.validations;
          seen.rejected += st.rejected;
          for (const d of w.doms) w.box.xen.destroyDomain(d.domid);
          check(w, 'after destroy');
          expect(w.box.xen.freeFrames()).toBe(free0);
        }),
        { numRuns: RUNS, seed: Number(process.env.PVMMU_FUZZ_SEED ?? 0x5eed) },
      );
      expect(seen.pinsOk).toBeGreaterThan(0);
      expect(seen.pinsRefused).toBeGreaterThan(0);
      expect(seen.mmuUpdates).toBeGreaterThan(RUNS);
      expect(seen.rejected).toBeGreaterThan(RUNS);
      console.log(`${paging} fuzz coverage: ${JSON.stringify(seen)}`);
    });
  }
});
