// Mutation testing of the hypervisor (`npm run mutate`; not part of npm test).
// Mutants are run against vitest.stryker.config.ts: the rule tests, the scripts
// in-process and a short fuzz. Survivors are explained in test/hypervisor/MUTANTS.md.
// PVMMU_MUTATE narrows the files or line ranges, e.g. PVMMU_MUTATE=hypervisor/mm.ts:128-220
// npm run mutate, and PVMMU_MUTATE_REPORT names the report folder (reports/mutation).
const files = process.env.PVMMU_MUTATE
  ? process.env.PVMMU_MUTATE.split(',')
  : [
      'hypervisor/page-type.ts',
      'hypervisor/mm.ts',
      'hypervisor/domain.ts',
      'hypervisor/flush.ts',
      'hypervisor/audit.ts',
    ];

const report = process.env.PVMMU_MUTATE_REPORT ?? 'reports/mutation';

/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.stryker.config.ts', related: false },
  mutate: files,
  coverageAnalysis: 'perTest',
  concurrency: Number(process.env.PVMMU_MUTATE_CONCURRENCY ?? 2),
  reporters: ['clear-text', 'progress-append-only', 'html', 'json'],
  htmlReporter: { fileName: `${report}/index.html` },
  jsonReporter: { fileName: `${report}/mutation.json` },
  ignorePatterns: ['dist', 'bench/results', 'reports', '.stryker-tmp'],
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
  timeoutMS: 3000,
  thresholds: { high: 90, low: 80, break: null },
};
