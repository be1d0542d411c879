/*
 * The package as a user gets it: `npm pack`, the tarball installed into a scratch project
 * (npm install --prefer-offline: pino and piscina come from the registry or its cache),
 * the README's vitest regression test (NOTES-regress.md / README.md, the block after the
 * "pack-test example" marker) type-checked against the shipped declarations and run.
 * vitest itself and @types/node are linked from this repository's node_modules.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function example(): string {
  for (const f of ['NOTES-regress.md', 'README.md']) {
    const p = join(ROOT, f);
    if (!existsSync(p)) continue;
    const m = /<!-- pack-test example[^>]*-->\s*```ts\n([\s\S]*?)```/.exec(readFileSync(p, 'utf8'));
    if (m) return m[1]!;
  }
  throw new Error('no "pack-test example" block in NOTES-regress.md or README.md');
}

describe('the packed package', () => {
  it('installs into a fresh project, where the README regression test type-checks and passes', () => {
    const dir = mkdtempSync(join(tmpdir(), 'pvmmu-pack-'));
    execFileSync(npm, ['pack', '--ignore-scripts', '--silent', '--pack-destination', dir], { cwd: ROOT });
    const tgz = readdirSync(dir).find((f) => f.endsWith('.tgz'))!;
    const proj = join(dir, 'my-fix');
    mkdirSync(join(proj, 'test'), { recursive: true });
    writeFileSync(join(proj, 'package.json'), JSON.stringify({ name: 'my-fix', private: true, type: 'module' }));
    execFileSync(
      npm,
      ['install', '--prefer-offline', '--no-audit', '--no-fund', '--ignore-scripts', '--silent', join(dir, tgz)],
      { cwd: proj },
    );
    // The test runner and Node's types come from here rather than the network.
    symlinkSync(join(ROOT, 'node_modules', 'vitest'), join(proj, 'node_modules', 'vitest'));
    mkdirSync(join(proj, 'node_modules', '@types'), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules', '@types', 'node'), join(proj, 'node_modules', '@types', 'node'));
    writeFileSync(join(proj, 'test', 'no-refused-pins.test.ts'), example());
    writeFileSync(
      join(proj, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          module: 'nodenext',
          moduleResolution: 'nodenext',
          target: 'es2022',
          strict: true,
          noEmit: true,
          skipLibCheck: true,
          types: ['node'],
        },
        include: ['test'],
      }),
    );
    execFileSync(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', proj]);
    const inner = spawnSync(
      process.execPath,
      [join(ROOT, 'node_modules', 'vitest', 'vitest.mjs'), 'run', '--root', proj, '--reporter', 'json'],
      { cwd: proj, env: { ...process.env, SEEDS: '1' }, encoding: 'utf8' },
    );
    const out = inner.stdout;
    if (inner.status !== 0) throw new Error(`the example failed (exit ${inner.status}):\n${out}\n${inner.stderr}`);
    const report = JSON.parse(out.slice(out.indexOf('{'))) as { numPassedTests: number; numFailedTests: number };
    expect(report).toMatchObject({ numPassedTests: 2, numFailedTests: 0 });
  }, 300_000);
});
