/*
 * Malformed `pvmmu script` files, fuzzed with fast-check: random JSON, and the example
 * scripts with one field replaced by a random value. Each is either a valid script or a
 * ScriptError that names the field ("steps[3].entry.flags: ...") -- never another
 * exception -- and the CLI exits 2 with that one line, never a stack trace.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ScriptError, parseScript } from '../src/script/schema.js';

const SEED = Number(process.env.PVMMU_FUZZ_SEED ?? 0x5eed);
const dir = join(import.meta.dirname, 'scripts');
const examples = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .sort()
  .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as unknown);
const cli = join(import.meta.dirname, '..', 'dist', 'src', 'cli.js');

/** "script.paging: ...", "steps[3].entry.flags: ...", "steps[0].ops[1]: ..." */
const NAMES_A_FIELD = /^(script|steps\[\d+\])(\.[A-Za-z0-9_]+|\[\d+\])*: \S/;

/** Parse; returns the error message, or null for a valid script. Anything but a ScriptError fails. */
function parseError(input: unknown): string | null {
  try {
    parseScript(input);
    return null;
  } catch (e) {
    if (!(e instanceof ScriptError)) {
      throw new Error(`not a ScriptError for ${JSON.stringify(input)?.slice(0, 300)}: ${(e as Error).stack}`);
    }
    return e.message;
  }
}

/** Every path to a value inside `v` (object keys and array indices). */
function paths(v: unknown, at: Array<string | number> = []): Array<Array<string | number>> {
  const out: Array<Array<string | number>> = [];
  if (Array.isArray(v)) v.forEach((x, i) => out.push([...at, i], ...paths(x, [...at, i])));
  else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) out.push([...at, k], ...paths(x, [...at, k]));
  }
  return out;
}

function withValue(v: unknown, path: Array<string | number>, value: unknown): unknown {
  const copy = structuredClone(v) as Record<string | number, unknown>;
  let o = copy;
  for (const k of path.slice(0, -1)) o = o[k] as Record<string | number, unknown>;
  o[path.at(-1)!] = value;
  return copy;
}

/** A value unlike a script's: wrong types, odd numbers, unknown names. */
const oddValue = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.constantFrom(-1, 0.5, 2 ** 53, 1e308, '', 'XX', 'P|XX', '0xzz', 'raw:-1', '@pt:999', 'B:nope', null, [], {}),
);

describe('malformed scripts', () => {
  it('random JSON: a valid script or an error naming the field', () => {
    fc.assert(
      fc.property(fc.json({ maxDepth: 4 }), (text) => {
        const msg = parseError(text);
        if (msg !== null) expect(msg).toMatch(NAMES_A_FIELD);
      }),
      { numRuns: 400, seed: SEED },
    );
  });

  it('random script-shaped objects: a valid script or an error naming the field', () => {
    const step = fc.record(
      {
        op: fc.constantFrom(
          'alloc',
          'write',
          'mmu_update',
          'mmuext',
          'update_va_mapping',
          'multicall',
          'load',
          'store',
          'audit',
          'pin',
        ),
        name: fc.string(),
        frame: oddValue,
        index: oddValue,
        entry: oddValue,
        reqs: fc.array(fc.dictionary(fc.constantFrom('table', 'index', 'entry', 'cmd'), oddValue), { maxLength: 3 }),
        ops: fc.array(fc.dictionary(fc.constantFrom('cmd', 'frame', 'src', 'va', 'vcpus', 'entries'), oddValue), {
          maxLength: 3,
        }),
        va: oddValue,
        flags: oddValue,
        expect: oddValue,
        domain: oddValue,
        vcpu: oddValue,
      },
      { requiredKeys: ['op'] },
    );
    fc.assert(
      fc.property(fc.array(step, { minLength: 1, maxLength: 4 }), fc.option(oddValue), (steps, paging) => {
        const msg = parseError(paging === null ? { steps } : { paging, steps });
        if (msg !== null) expect(msg).toMatch(NAMES_A_FIELD);
      }),
      { numRuns: 400, seed: SEED },
    );
  });

  it('an example script with one field mutated: valid, or an error naming a field', () => {
    const cases = examples.flatMap((ex) => paths(ex).map((p) => [ex, p] as const));
    expect(cases.length).toBeGreaterThan(200);
    let errors = 0;
    fc.assert(
      fc.property(fc.constantFrom(...cases), oddValue, ([ex, path], value) => {
        const msg = parseError(withValue(ex, path, value));
        if (msg === null) return;
        errors++;
        expect(msg).toMatch(NAMES_A_FIELD);
        // The mutated field itself, or something under it, when it is a step's own field.
        if (path[0] === 'steps' && path.length === 3 && typeof path[2] === 'string' && !['name'].includes(path[2])) {
          expect(msg.startsWith(`steps[${path[1]}]`)).toBe(true);
        }
      }),
      { numRuns: 600, seed: SEED },
    );
    expect(errors).toBeGreaterThan(100);
  });

  it('domains too large for any machine are named before a machine is sized for them', () => {
    const big = {
      domains: [
        { name: 'A', frames: 300000 },
        { name: 'B', frames: 300000 },
      ],
      steps: [{ op: 'audit' }],
    };
    expect(parseError(big)).toBe(
      "script.domains: the domains' frames add up to 600000; at most 400000 fit a 2 GiB machine",
    );
    expect(parseError({ ...big, domains: [{ name: 'A', frames: 300000 }] })).toBeNull();
  });

  it('the CLI exits 2 with the one-line error, never a stack trace', () => {
    const tmp = mkdtempSync(join(tmpdir(), 'pvmmu-badscript-'));
    const picked: unknown[] = [];
    fc.assert(
      fc.property(fc.constantFrom(...examples), fc.nat(), oddValue, (ex, k, value) => {
        const ps = paths(ex);
        const bad = withValue(ex, ps[k % ps.length]!, value);
        if (parseError(bad) !== null) picked.push(bad);
      }),
      { numRuns: 40, seed: SEED },
    );
    const inputs = [...picked.slice(0, 2), '{"steps": [', '[1, 2]'];
    for (const [i, input] of inputs.entries()) {
      const file = join(tmp, `bad${i}.json`);
      writeFileSync(file, typeof input === 'string' ? input : JSON.stringify(input));
      const r = spawnSync(process.execPath, [cli, 'script', file], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^pvmmu: \S.*\n$/);
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });
});
