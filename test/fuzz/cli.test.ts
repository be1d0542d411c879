/*
 * `pvmmu fuzz`: the seed is printed and replays the run; it varies unless given (or
 * pinned by PVMMU_FUZZ_SEED); --shard slices the runs; bad options exit 2 naming the
 * option. And the transport mode: real vCPU workers of two domains, under both
 * schedulers, with the audit after every step (det) or at quiescent points (parallel).
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { emptyCoverage } from '../../src/abi/fuzz.js';
import { fuzzSeed, parseFuzzArgs } from '../../src/fuzz.js';
import { transportRun } from '../../src/fuzz-transport.js';

const SEED = Number(process.env.PVMMU_FUZZ_SEED ?? 0x5eed);
const cli = join(import.meta.dirname, '..', '..', 'dist', 'src', 'cli.js');

function pvmmu(args: string[], env: Record<string, string | undefined> = {}) {
  const e = { ...process.env, ...env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete e[k];
  return spawnSync(process.execPath, [cli, 'fuzz', ...args], { encoding: 'utf8', env: e });
}

describe('pvmmu fuzz', () => {
  it('prints its seed, and the same seed gives the same run', () => {
    const args = ['--runs', '6', '--steps', '30', '--seed', '77', '--paging', 'x86_64', '--json'];
    const a = pvmmu(args);
    const b = pvmmu(args);
    expect(a.status, a.stderr).toBe(0);
    const ra = JSON.parse(a.stdout);
    expect(ra).toMatchObject({ seed: 77, paging: 'x86_64', runsDone: 6, failure: null });
    expect(ra.coverage.calls).toBe(180);
    expect(JSON.parse(b.stdout).coverage).toEqual(ra.coverage);
    const text = pvmmu(['--runs', '2', '--steps', '10', '--seed', '77', '--paging', 'pae']);
    expect(text.stdout).toMatch(/^pvmmu fuzz: seed 77, 2 run\(s\) x 10 hypercalls, paging pae, in-process\n/);
    expect(text.stdout).toMatch(/pins ok by level: L1 \d+, L2 \d+, L3 \d+, L4 0/);
  });

  it('the seed varies unless given; PVMMU_FUZZ_SEED pins it', () => {
    const seeds = new Set(Array.from({ length: 4 }, () => fuzzSeed(undefined, undefined)));
    expect(seeds.size).toBeGreaterThan(1);
    expect(fuzzSeed(undefined, '123')).toBe(123);
    expect(fuzzSeed('9', '123')).toBe(9);
    const r = pvmmu(['--runs', '1', '--steps', '5', '--paging', 'pae'], { PVMMU_FUZZ_SEED: undefined });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^pvmmu fuzz: seed \d+, /);
  });

  it('--shard i/n runs every n-th run, and the shards add up to the whole', () => {
    const whole = JSON.parse(
      pvmmu(['--runs', '5', '--steps', '20', '--seed', '5', '--paging', 'pae', '--json']).stdout,
    );
    const parts = ['1/2', '2/2'].map((s) =>
      JSON.parse(
        pvmmu(['--runs', '5', '--steps', '20', '--seed', '5', '--paging', 'pae', '--json', '--shard', s]).stdout,
      ),
    );
    expect(parts.map((p) => p.runsDone)).toEqual([3, 2]);
    expect(parts[0].coverage.calls + parts[1].coverage.calls).toBe(whole.coverage.calls);
    expect(parts[0].coverage.results.ok + parts[1].coverage.results.ok).toBe(whole.coverage.results.ok);
  });

  it('bad options exit 2 naming the option and what it accepts', () => {
    const cases: Array<[string[], RegExp]> = [
      [['--runs', '0'], /--runs must be an integer from 1/],
      [['--paging', 'i386'], /--paging must be pae, x86_64 or both, got "i386"/],
      [['--shard', '3/2'], /--shard 3\/2: need 1 <= i <= n/],
      [['--seed', 'abc'], /--seed must be an integer from 0 to 4294967295/],
      [['--sched', 'parallel'], /--sched is an option of --transport/],
    ];
    for (const [args, msg] of cases) expect(() => parseFuzzArgs(args)).toThrow(msg);
    const r = pvmmu(['--paging', 'i386']);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^pvmmu: --paging must be pae, x86_64 or both/);
  });
});

describe('the transport mode', () => {
  for (const sched of ['det', 'parallel'] as const) {
    it(`${sched}: two domains' vCPU workers fuzz through their slots; audit, isolation and frames hold (seed ${SEED})`, async () => {
      const cov = emptyCoverage();
      const f = await transportRun('pae', SEED, sched === 'det' ? 150 : 400, sched, cov);
      expect(f).toBeNull();
      expect(cov.calls).toBeGreaterThanOrEqual(sched === 'det' ? 150 : 400);
      expect(cov.results.ok).toBeGreaterThan(0);
      expect(cov.results.EINVAL).toBeGreaterThan(0);
      expect(cov.hostile).toBeGreaterThan(0);
      expect(cov.pinsOk[1]! + cov.pinsOk[2]! + cov.pinsOk[3]!).toBeGreaterThan(0);
    });
  }
});
