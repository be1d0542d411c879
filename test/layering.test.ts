/*
 * The import rules of DESIGN.md, checked on the source: hypervisor/ and guest/ share only
 * src/abi/; src/abi/ imports nothing outside itself; the host (the rest of src/) knows
 * the hypervisor and the guest only through src/abi/ and by the paths of their worker
 * entry files. Import direction: bench -> src host -> src/abi <- hypervisor, guest.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '..');

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(path.join(ROOT, dir))) {
    const rel = path.join(dir, name);
    if (statSync(path.join(ROOT, rel)).isDirectory()) out.push(...sources(rel));
    else if (name.endsWith('.ts')) out.push(rel);
  }
  return out;
}

/** Every relative module a file imports (static, dynamic and type-only), as a path from the root. */
function importsOf(file: string): string[] {
  const text = readFileSync(path.join(ROOT, file), 'utf8');
  const out: string[] = [];
  for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*|import\s+)['"](\.{1,2}\/[^'"]+)['"]/g)) {
    out.push(path.relative(ROOT, path.resolve(path.dirname(path.join(ROOT, file)), m[1]!)));
  }
  return out;
}

/** The imports of the files under `dir` that break `allowed`, as "file -> import". */
function violations(dir: string, allowed: (target: string) => boolean): string[] {
  return sources(dir).flatMap((f) =>
    importsOf(f)
      .filter((t) => !allowed(t))
      .map((t) => `${f} -> ${t}`),
  );
}

const under = (dir: string) => (t: string) => t === dir || t.startsWith(`${dir}/`);

describe('layering (DESIGN.md: import direction)', () => {
  it('hypervisor/ imports only itself and src/abi/', () => {
    expect(violations('hypervisor', (t) => under('hypervisor')(t) || under('src/abi')(t))).toEqual([]);
  });
  it('guest/ imports only itself and src/abi/', () => {
    expect(violations('guest', (t) => under('guest')(t) || under('src/abi')(t))).toEqual([]);
  });
  it('src/abi/ imports nothing outside itself', () => {
    expect(violations('src/abi', under('src/abi'))).toEqual([]);
  });
  it('the host (src/ outside abi/) imports neither guest/ nor hypervisor/ nor bench/', () => {
    expect(violations('src', (t) => under('src')(t))).toEqual([]);
  });
  it('guest/kernel/ leans down: it imports neither a filesystem nor a workload nor a program', () => {
    const up = ['guest/fs', 'guest/workloads', 'guest/programs'].map(under);
    expect(violations('guest/kernel', (t) => !up.some((u) => u(t)))).toEqual([]);
  });
  it('guest/ below the workloads imports no workload (fs/ and mm/ take the tick from kernel/clock.ts)', () => {
    const low = ['guest/fs', 'guest/mm', 'guest/arch', 'guest/lib'];
    expect(low.flatMap((d) => violations(d, (t) => !under('guest/workloads')(t)))).toEqual([]);
  });
  it('the checker sees imports at all (a file known to import src/abi/ is found)', () => {
    expect(importsOf('hypervisor/thread.ts')).toContain('src/abi/control.js');
  });
});
