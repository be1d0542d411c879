/*
 * The in-process fuzz engine: two hostile domains on a fresh Xen issue the generator's
 * calls (src/abi/fuzz.ts) through their transport slots, served at once by
 * Xen.serveSlot. After EVERY action the auditor must agree with the frame table and no
 * domain may reach another's frame or map a page table writable; serveSlot must never
 * throw; and once both domains are destroyed every frame must be free again.
 *
 * A run is a pure function of (paging, seed, steps): `pvmmu fuzz --seed S --runs 1`
 * replays it. `steps` counts hypercalls; the guest's plain stores between them (building
 * a tree before pinning it) come on top and need no audit: a store that the MMU allows
 * reaches no validated table, so nothing the auditor checks can change. Runs are served by hypervisor/fuzz-worker.ts (what `pvmmu fuzz` starts) and
 * by the vitest fuzz test directly.
 */
import { FRAME_WORDS, PGT_NAMES, PGT_type_mask, type PagingMode, rcName } from '../src/abi/xen.js';
import {
  S_ARGS,
  S_HEADER_WORDS,
  S_OP,
  S_RESULT,
  S_STATE,
  SLOT_DONE,
  SLOT_IDLE,
  SLOT_REQUEST,
  slotBase,
  transportBytes,
} from '../src/abi/layout.js';
import {
  A_STORE,
  FUZZ_DOMAIN_FRAMES,
  FuzzAction,
  type FuzzCoverage,
  FuzzDomain,
  type FuzzFailure,
  FuzzGen,
  bump,
} from '../src/abi/fuzz.js';
import { Xen } from './xen.js';
import type { TestPlant } from '../src/abi/control.js';

/** Machine frames of a fuzz run: two domains and a little room. */
const FRAMES = 2 * FUZZ_DOMAIN_FRAMES + 64;
const MAX_SLOTS = 4;

/** Buffers reused by every run of a thread: a run starts from createDomain, which zeroes what it hands out. */
const buffers = new Map<PagingMode, { mem: SharedArrayBuffer; transport: SharedArrayBuffer }>();

function typeName(typeHi: number): string {
  return (PGT_NAMES[(typeHi & PGT_type_mask) >>> 0] ?? 'none').replace('_page_table', '').replace('_page', '');
}

/** One fuzz run; adds what it reached to `cov`. Returns null, or the first failure. */
/**
 * One fuzz run. `testPlant` (tests only: test/planted-defect.test.ts) plants a known defect
 * in the hypervisor, to show that this fuzzer catches it.
 */
export function fuzzRun(
  paging: PagingMode,
  seed: number,
  steps: number,
  cov: FuzzCoverage,
  testPlant?: TestPlant,
): FuzzFailure | null {
  let buf = buffers.get(paging);
  if (buf === undefined) {
    buf = { mem: new SharedArrayBuffer(FRAMES * 4096), transport: new SharedArrayBuffer(transportBytes(MAX_SLOTS)) };
    buffers.set(paging, buf);
  }
  const xen = new Xen({
    paging,
    frames: FRAMES,
    mem: buf.mem,
    transport: buf.transport,
    maxSlots: MAX_SLOTS,
    ...(testPlant === undefined ? {} : { testPlant }),
  });
  const t = new Int32Array(buf.transport);
  const u32 = new Uint32Array(buf.transport);
  const mem32 = new Uint32Array(buf.mem);
  const free0 = xen.freeFrames();
  const fail = (step: number, action: string, problems: string[]): FuzzFailure => ({
    paging,
    seed,
    step,
    action,
    problems,
  });
  const auditProblems = (): string[] | null => {
    const r = xen.audit();
    if (r.ok && r.isolationViolations === 0) return null;
    return [
      `audit: ${r.problems.length} problem(s), ${r.isolationViolations} isolation violation(s)`,
      ...r.problems.slice(0, 8).map((p) => `mfn ${p.mfn.toString(16)}: ${p.what}`),
    ];
  };

  const infos = [
    xen.createDomain({ name: 'A', frames: FUZZ_DOMAIN_FRAMES, vcpus: 2 }),
    xen.createDomain({ name: 'B', frames: FUZZ_DOMAIN_FRAMES, vcpus: 1 }),
  ];
  const doms = infos.map((i) => new FuzzDomain(paging, i));
  doms[0]!.foreign = [...doms[1]!.mfn, doms[1]!.root];
  doms[1]!.foreign = [...doms[0]!.mfn, doms[0]!.root];
  const atBuild = auditProblems();
  if (atBuild) return fail(-1, 'build', atBuild);
  xen.drainLog();

  // The pool frames' types, to count type changes.
  const watched: number[] = doms.flatMap((d) => d.mfn);
  const lastType = watched.map((m) => xen.frameInfo(m)!.typeHi & PGT_type_mask);

  const gen = new FuzzGen(seed);
  const rng = gen.rng;
  const a = new FuzzAction();
  // `steps` counts hypercalls; the guest's own stores between them come on top.
  for (let step = 0, calls = 0; calls < steps; step++) {
    const di = rng.int(2);
    const w = doms[di]!;
    const info = infos[di]!;
    const slot = info.slots[rng.int(info.vcpus)]!;
    gen.next(w, a);
    if (a.hostile) cov.hostile++;
    if (a.kind === A_STORE) {
      cov.stores++;
      // The guest's own store: possible only into a frame that is not a page table in use
      // (the MMU enforces that for a real vCPU: its aliases are read-only).
      const fi = xen.frameInfo(a.mfn)!;
      const level = fi.typeHi >>> 29;
      if (!(level >= 1 && level <= 4 && fi.typeCount > 0)) {
        mem32[a.mfn * FRAME_WORDS + 2 * a.index] = a.lo >>> 0;
        mem32[a.mfn * FRAME_WORDS + 2 * a.index + 1] = a.hi >>> 0;
      }
      // Nothing the hypervisor tracks changed: a store reaches no validated table.
      continue;
    }
    {
      calls++;
      cov.calls++;
      const b = slotBase(slot);
      t[b + S_OP] = a.op;
      u32.set(a.args, b + S_ARGS);
      u32.set(a.data.subarray(0, a.dataLen), b + S_HEADER_WORDS);
      Atomics.store(t, b + S_STATE, SLOT_REQUEST);
      try {
        xen.serveSlot(slot);
      } catch (e) {
        return fail(step, a.describe(), [
          `serveSlot threw: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`,
        ]);
      }
      if (Atomics.load(t, b + S_STATE) !== SLOT_DONE) return fail(step, a.describe(), ['the slot was not answered']);
      Atomics.store(t, b + S_STATE, SLOT_IDLE);
      const rc = t[b + S_RESULT]!;
      bump(cov.results, rc === 0 ? 'ok' : rc > 0 ? 'positive' : rcName(rc));
      if (rc === 0 && a.pinLevel > 0) cov.pinsOk[a.pinLevel]!++;
      gen.note(w, a, rc);
      const log = xen.drainLog();
      for (const rec of log) {
        if (rec.reason === 'pin_error' || rec.reason === 'already_pinned') {
          // The root cause is the first line logged in the same (sub)call.
          const first = log.find((r) => r.seq === rec.seq)!;
          bump(cov.pinsRefused, first.reason);
        }
      }
    }
    for (let i = 0; i < watched.length; i++) {
      const ty = xen.frameInfo(watched[i]!)!.typeHi & PGT_type_mask;
      if (ty !== lastType[i]) {
        bump(cov.typeChanges, `${typeName(lastType[i]!)}->${typeName(ty)}`);
        lastType[i] = ty;
      }
    }
    const problems = auditProblems();
    if (problems) return fail(step, a.describe(), problems);
  }
  for (const i of infos) xen.destroyDomain(i.domid);
  const after = auditProblems();
  if (after) return fail(steps, 'destroy', after);
  if (xen.freeFrames() !== free0) {
    return fail(steps, 'destroy', [`${free0 - xen.freeFrames()} frame(s) not freed after destroying both domains`]);
  }
  return null;
}
