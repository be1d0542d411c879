/*
 * The planted defect: a hypervisor whose writable-type check is off (XenOptions.testPlant
 * 'no-writable-check': get_page_from_l1e takes no PGT_writable_page for an RW entry), and
 * proof that the tests catch it -- the fuzzer within a bounded number of runs, the rule
 * tests outright. The fuzzer and the rule tests run unchanged, in a child vitest, with
 * PVMMU_TEST_PLANT set (test/helpers/xenbox.ts reads it), so what is tested is exactly
 * what CI runs. Each child run has a control run without the plant, which must pass.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { MMUEXT_PIN_L1_TABLE, _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_PRESENT, _PAGE_RW } from '../src/abi/xen.js';
import { pteHi, pteLo } from '../src/abi/pte.js';
import { XenBox } from './helpers/xenbox.js';

const ROOT = path.resolve(import.meta.dirname, '..');
const VITEST = path.join(ROOT, 'node_modules', 'vitest', 'vitest.mjs');
/** The fuzzer must fail within this many runs (sequences of 40 steps). */
const FUZZ_BOUND = 40;

function vitest(files: string[], env: Record<string, string>): { code: number | null; out: string } {
  const r = spawnSync(process.execPath, [VITEST, 'run', ...files], {
    cwd: ROOT,
    env: { ...process.env, ...env, NO_COLOR: '1', FORCE_COLOR: '0' },
    encoding: 'utf8',
    timeout: 600_000,
    maxBuffer: 64 * 2 ** 20,
  });
  return { code: r.status, out: `${r.stdout}\n${r.stderr}` };
}

describe('planted defect: the writable-type check switched off', () => {
  it('the switch is real: an RW mapping of a pinned L1 is refused with the check, allowed without', () => {
    for (const testPlant of [undefined, 'no-writable-check'] as const) {
      const box = new XenBox({ paging: 'pae', ...(testPlant ? { testPlant } : {}) });
      const d = box.domain('victim');
      const l1 = d.alloc();
      const data = d.alloc();
      // Linux's order: drop the direct-map RW alias, then pin the would-be L1.
      expect(d.uva(l1.va, pteLo(l1.mfn, _PAGE_PRESENT | _PAGE_ACCESSED), pteHi(l1.mfn), 0)).toBe(0);
      expect(d.mmuext([{ cmd: MMUEXT_PIN_L1_TABLE, arg1: l1.mfn }]).rc).toBe(0);
      // Now map the pinned L1 writable through the data frame's mapping: the stray RW alias.
      const rc = d.uva(
        data.va,
        pteLo(l1.mfn, _PAGE_PRESENT | _PAGE_RW | _PAGE_ACCESSED | _PAGE_DIRTY),
        pteHi(l1.mfn),
        0,
      );
      if (testPlant === undefined) {
        expect(rc).toBeLessThan(0);
        expect(box.audit().ok).toBe(true);
      } else {
        expect(rc).toBe(0);
        // The auditor still knows the rule: the alias breaks the type counts it recomputes.
        expect(box.audit().ok).toBe(false);
      }
    }
  });

  it(`the fuzzer (test/fuzz/hypercalls.test.ts, unchanged) fails within ${FUZZ_BOUND} runs, and passes without the plant`, () => {
    const fuzz = ['test/fuzz/hypercalls.test.ts'];
    const env = { PVMMU_FUZZ_RUNS: String(FUZZ_BOUND) };
    const planted = vitest(fuzz, { ...env, PVMMU_TEST_PLANT: 'no-writable-check' });
    expect(planted.code, planted.out).not.toBe(0);
    // The fuzzer names the run that failed: within the bound, and the auditor is what caught it.
    const m = /fuzz run (\d+) of \d+ failed: FAIL/.exec(planted.out);
    expect(m, planted.out).not.toBeNull();
    expect(Number(m![1])).toBeLessThanOrEqual(FUZZ_BOUND);
    expect(planted.out).toMatch(/audit: \d+ problem/);
    const control = vitest(fuzz, env);
    expect(control.code, control.out).toBe(0);
  }, 1_200_000);

  it('the rule tests (test/hypervisor/rules.test.ts, unchanged) fail with it, and pass without', () => {
    const rules = ['test/hypervisor/rules.test.ts'];
    const planted = vitest(rules, { PVMMU_TEST_PLANT: 'no-writable-check' });
    expect(planted.code, planted.out).not.toBe(0);
    const failed = /Tests\s+(\d+) failed/.exec(planted.out);
    expect(failed, planted.out).not.toBeNull();
    expect(Number(failed![1])).toBeGreaterThan(0);
    const control = vitest(rules, {});
    expect(control.code, control.out).toBe(0);
  }, 1_200_000);
});
