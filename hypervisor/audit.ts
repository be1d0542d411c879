/*
 * The auditor: recompute every frame's general count, type and type count from first
 * principles -- the live validated page tables, the pins, the base pointers and the
 * allocations -- and report every disagreement with the frame table. It also checks
 * isolation: no validated table of a domain maps a frame the domain does not own, and no
 * page-table frame is mapped writable by anyone.
 *
 * It shares no code with the counting paths it checks (page-type.ts), on purpose: a slow
 * reference twin is only worth something if it is independent.
 */
import {
  DOMID_INVALID,
  DOMID_XEN,
  PGT_pae_xen_l2,
  PGT_pinned,
  PGT_type_mask,
  PGT_validated,
  PGT_writable_page,
  _PAGE_PRESENT,
  _PAGE_RW,
  PGT_NAMES,
  FRAME_WORDS,
} from '../src/abi/xen.js';
import { PAE_XEN_L2_FIRST, XEN_L4_FIRST, XEN_L4_LAST } from '../src/abi/layout.js';
import type { Hv } from './hv.js';
import type { AuditProblem, AuditReport } from '../src/abi/control.js';
import { pteMfn } from '../src/abi/pte.js';

const MAX_PROBLEMS = 200;

export function audit(hv: Hv): AuditReport {
  const ft = hv.ft;
  const n = ft.nrFrames;
  const expCount = new Int32Array(n);
  const expTypeCount = new Int32Array(n);
  /** Expected type (top word) from the holders seen so far; 0 = none seen. */
  const expType = new Uint32Array(n);
  const expLinear = new Int32Array(n);
  const problems: AuditProblem[] = [];
  let isolationViolations = 0;
  const report = (mfn: number, what: string): void => {
    if (problems.length < MAX_PROBLEMS) problems.push({ mfn, what });
  };
  const holdType = (mfn: number, type: number, why: string): void => {
    if (expType[mfn] !== 0 && expType[mfn] !== type) {
      report(
        mfn,
        `held as ${PGT_NAMES[(type & PGT_type_mask) >>> 0]} by ${why} but also as ${PGT_NAMES[(expType[mfn]! & PGT_type_mask) >>> 0]}`,
      );
    }
    expType[mfn] = type;
    expTypeCount[mfn]!++;
  };

  for (let mfn = 0; mfn < n; mfn++) {
    if (ft.allocated[mfn]) expCount[mfn]!++;
    if (ft.typeHi[mfn]! & PGT_pinned) {
      expCount[mfn]!++;
      holdType(mfn, (ft.typeHi[mfn]! & (PGT_type_mask | PGT_pae_xen_l2)) >>> 0, 'a pin');
    }
  }
  const rootType = (hv.levels << 29) >>> 0;
  for (const d of hv.domains.values()) {
    for (const v of d.vcpus) {
      for (const root of [v.cr3, v.userCr3]) {
        if (root < 0) continue;
        expCount[root]!++;
        holdType(root, rootType, `d${d.domid}v${v.id}'s baseptr`);
      }
    }
  }
  // Every validated table's present guest entries.
  const m = hv.mem32;
  for (let t = 0; t < n; t++) {
    const x = ft.typeHi[t]!;
    const level = x >>> 29;
    if (level < 1 || level > 4 || ft.typeCount[t] === 0 || (x & PGT_validated) === 0) continue;
    const owner = ft.owner[t]!;
    const entries = hv.paging === 'pae' && level === 3 ? 4 : 512;
    for (let i = 0; i < entries; i++) {
      if (level === 4 && i >= XEN_L4_FIRST && i <= XEN_L4_LAST) continue;
      if (level === 2 && x & PGT_pae_xen_l2 && i >= PAE_XEN_L2_FIRST) continue;
      const lo = m[t * FRAME_WORDS + 2 * i]!;
      if ((lo & _PAGE_PRESENT) === 0) continue;
      const hi = m[t * FRAME_WORDS + 2 * i + 1]!;
      const target = pteMfn(lo, hi);
      if (target >= n) {
        report(t, `slot ${i} maps mfn ${target} beyond machine memory`);
        isolationViolations++;
        continue;
      }
      if (ft.owner[target] !== owner) {
        report(
          t,
          `slot ${i} of d${owner}'s L${level} maps mfn ${target.toString(16)} owned by ${ownerName(ft.owner[target]!)}`,
        );
        isolationViolations++;
      }
      if (level === 1) {
        expCount[target]!++;
        if (lo & _PAGE_RW) {
          const tt = ft.typeHi[target]! >>> 29;
          if (tt >= 1 && tt <= 4 && ft.typeCount[target]! > 0) {
            report(target, `page-table frame mapped writable by slot ${i} of L1 ${t.toString(16)}`);
            isolationViolations++;
          }
          if (hv.enforceWritable) holdType(target, PGT_writable_page, `L1 ${t.toString(16)} slot ${i}`);
        }
        continue;
      }
      if (target === t) continue; // a self-map holds nothing
      expCount[target]!++;
      const targetType = (ft.typeHi[target]! & PGT_type_mask) >>> 0;
      if (targetType === (x & PGT_type_mask) >>> 0) {
        // A linear entry holds the target as whatever table it already is.
        holdType(
          target,
          (targetType | (ft.typeHi[target]! & PGT_pae_xen_l2)) >>> 0,
          `linear entry ${i} of L${level} ${t.toString(16)}`,
        );
        expLinear[target]!++;
        expLinear[t]!--;
      } else {
        let want = ((level - 1) << 29) >>> 0;
        if (hv.paging === 'pae' && level === 3 && i === 3) want = (want | PGT_pae_xen_l2) >>> 0;
        holdType(target, want, `slot ${i} of L${level} ${t.toString(16)}`);
      }
    }
  }

  for (let mfn = 0; mfn < n; mfn++) {
    const owner = ft.owner[mfn]!;
    if (owner === DOMID_INVALID) {
      if (ft.count[mfn] !== 0 || ft.typeCount[mfn] !== 0)
        report(mfn, `free frame has count ${ft.count[mfn]} typecount ${ft.typeCount[mfn]}`);
      continue;
    }
    if (owner === DOMID_XEN) continue;
    if (ft.count[mfn] !== expCount[mfn]) {
      report(mfn, `general count ${ft.count[mfn]} but ${expCount[mfn]} holders`);
    }
    const tc = ft.typeCount[mfn]!;
    if (tc !== expTypeCount[mfn]) {
      report(
        mfn,
        `type count ${tc} (${PGT_NAMES[(ft.typeHi[mfn]! & PGT_type_mask) >>> 0]}) but ${expTypeCount[mfn]} type holders`,
      );
    } else if (tc > 0) {
      const have = (ft.typeHi[mfn]! & (PGT_type_mask | PGT_pae_xen_l2)) >>> 0;
      const want = expType[mfn]!;
      if (have >>> 0 !== want >>> 0) {
        report(mfn, `type ${ft.typeHi[mfn]!.toString(16)} but holders want ${want.toString(16)}`);
      }
      if ((ft.typeHi[mfn]! & PGT_validated) === 0) report(mfn, `type count ${tc} but not validated`);
    }
    if (ft.linear[mfn] !== expLinear[mfn]) {
      report(mfn, `linear count ${ft.linear[mfn]} but ${expLinear[mfn]} linear uses`);
    }
    if (!hv.domains.has(owner)) report(mfn, `owned by d${owner}, which does not exist`);
  }
  return { ok: problems.length === 0, framesChecked: n, problems, isolationViolations };
}

function ownerName(owner: number): string {
  if (owner === DOMID_INVALID) return 'nobody (free)';
  if (owner === DOMID_XEN) return 'Xen';
  return `d${owner}`;
}
