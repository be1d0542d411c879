/*
 * The tests Stryker runs against each mutant of hypervisor/ (`npm run mutate`): the rule
 * tests, the example scripts run in-process, and a short fuzz with a pinned seed. Only
 * in-process tests: a mutant lives in this process's module graph, and the worker
 * threads of a real machine load dist/, which Stryker does not mutate.
 */
import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/hypervisor/**/*.test.ts', 'test/fuzz/hypercalls.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    reporters: ['default'],
    env: { PVMMU_FUZZ_SEED: '24301', PVMMU_FUZZ_RUNS: '8' },
  },
});
