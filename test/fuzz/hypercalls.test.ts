/*
 * Property-based fuzzing of the hypervisor: random hypercall sequences from two hostile
 * domains (hypervisor/fuzz.ts on the generator in src/abi/fuzz.ts, the engine behind
 * `pvmmu fuzz`). After EVERY call the auditor must agree with the frame table and no
 * domain may reach another's frame or hold a writable mapping of a page table; the
 * hypervisor must never throw; destroying the domains frees every frame.
 *
 * npm test runs a short fuzz on a pinned seed (PVMMU_FUZZ_SEED overrides it, as CI may);
 * `pvmmu fuzz` (npm run fuzz) runs long ones with a fresh seed.
 */
import { describe, expect, it } from 'vitest';
import { emptyCoverage, formatFailure, runSeed } from '../../src/abi/fuzz.js';
import { fuzzRun } from '../../hypervisor/fuzz.js';
import { plantFromEnv } from '../helpers/xenbox.js';

const RUNS = Number(process.env.PVMMU_FUZZ_RUNS ?? 40);
const STEPS = 40;
const SEED = Number(process.env.PVMMU_FUZZ_SEED ?? 0x5eed);
/** test/planted-defect.test.ts runs this file against a hypervisor with a planted defect. */
const PLANT = plantFromEnv(process.env.PVMMU_TEST_PLANT);

describe('fuzzing the hypercall interface', () => {
  for (const paging of ['pae', 'x86_64'] as const) {
    it(`${paging}: the auditor agrees and isolation holds after every call (seed ${SEED}, ${RUNS} runs x ${STEPS} calls)`, () => {
      const cov = emptyCoverage();
      for (let k = 0; k < RUNS; k++) {
        const f = fuzzRun(paging, runSeed(SEED, k), STEPS, cov, PLANT);
        if (f !== null) expect.fail(`fuzz run ${k + 1} of ${RUNS} failed: ${formatFailure(f, STEPS)}`);
      }
      // Coverage: a fuzzer whose calls all bounce off proves nothing. Deep pins, every
      // level, refusals for the writable rule, and type changes both ways must happen.
      expect(cov.calls).toBe(RUNS * STEPS);
      for (let level = 1; level <= (paging === 'pae' ? 3 : 4); level++) expect(cov.pinsOk[level]).toBeGreaterThan(0);
      if (paging === 'pae') expect(cov.pinsOk[4]).toBe(0);
      expect(cov.pinsRefused.bad_type).toBeGreaterThan(0);
      expect(cov.typeChanges['writable->l1']).toBeGreaterThan(0);
      expect(cov.typeChanges['l1->writable']).toBeGreaterThan(0);
      expect(cov.results.ok).toBeGreaterThan(RUNS);
      expect(cov.results.EINVAL).toBeGreaterThan(RUNS);
      expect(cov.hostile).toBeGreaterThan(0);
      console.log(`${paging} fuzz coverage: ${JSON.stringify(cov)}`);
    });
  }

  it('a run is a function of its seed: the same seed reaches the same results', () => {
    const a = emptyCoverage();
    const b = emptyCoverage();
    const c = emptyCoverage();
    fuzzRun('pae', 42, 200, a);
    fuzzRun('pae', 42, 200, b);
    fuzzRun('pae', 43, 200, c);
    expect(b).toEqual(a);
    expect(c).not.toEqual(a);
  });
});
