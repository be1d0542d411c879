/*
 * `pvmmu fuzz`: random hypercall sequences from two hostile domains, with the auditor
 * checking after every call (in-process) or at every step and quiescent point (through
 * the real transport, --transport). The seed varies unless given (--seed, or the
 * PVMMU_FUZZ_SEED environment variable that CI sets); it is printed first and with every
 * failure, whose line says how to replay that run alone.
 *
 * In-process runs go to hypervisor/fuzz-worker.js, one worker per paging mode, started by
 * path: the host never imports the hypervisor.
 */
import { randomInt } from 'node:crypto';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import {
  type FuzzCoverage,
  type FuzzFailure,
  type FuzzWorkerData,
  type FuzzWorkerMessage,
  emptyCoverage,
  formatFailure,
  mergeCoverage,
} from './abi/fuzz.js';
import { PAGING_MODES, type PagingMode } from './abi/xen.js';
import { type Command, UsageError } from './command.js';
import { distEntry } from './machine.js';
import { type Shard, ALL, parseShard, shardOf } from './shard.js';
import { runTransportFuzz } from './fuzz-transport.js';

export interface FuzzOptions {
  runs: number;
  steps: number;
  seed: number;
  shard: Shard;
  paging: PagingMode[];
  transport: boolean;
  sched: 'det' | 'parallel';
  json: boolean;
}

export interface FuzzModeResult {
  paging: PagingMode;
  runsDone: number;
  elapsedMs: number;
  coverage: FuzzCoverage;
  failure: FuzzFailure | null;
}

function uint(v: string | undefined, name: string, dflt: number, min = 0, max = 2 ** 32 - 1): number {
  if (v === undefined) return dflt;
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
    throw new UsageError(`--${name} must be an integer from ${min} to ${max}, got "${v}"`);
  }
  return Number(v);
}

/** The seed: --seed, else PVMMU_FUZZ_SEED, else a fresh random one. */
export function fuzzSeed(flag: string | undefined, env: string | undefined): number {
  if (flag !== undefined) return uint(flag, 'seed', 0);
  if (env !== undefined && env !== '') {
    if (!/^\d+$/.test(env) || Number(env) > 2 ** 32 - 1) {
      throw new UsageError(`PVMMU_FUZZ_SEED must be an integer from 0 to 4294967295, got "${env}"`);
    }
    return Number(env);
  }
  return randomInt(2 ** 32 - 1);
}

export function parseFuzzArgs(argv: string[]): FuzzOptions {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      runs: { type: 'string' },
      steps: { type: 'string' },
      seed: { type: 'string' },
      shard: { type: 'string' },
      paging: { type: 'string' },
      transport: { type: 'boolean' },
      sched: { type: 'string' },
      json: { type: 'boolean' },
    },
    allowPositionals: true,
  });
  if (positionals.length > 0) throw new UsageError(`fuzz: unexpected argument "${positionals[0]}"`);
  const transport = values.transport === true;
  const paging = values.paging ?? 'both';
  if (paging !== 'both' && !(PAGING_MODES as readonly string[]).includes(paging)) {
    throw new UsageError(`--paging must be pae, x86_64 or both, got "${paging}"`);
  }
  const sched = values.sched ?? 'det';
  if (sched !== 'det' && sched !== 'parallel') throw new UsageError(`--sched must be det or parallel, got "${sched}"`);
  if (values.sched !== undefined && !transport) throw new UsageError('--sched is an option of --transport');
  let shard = ALL;
  if (values.shard !== undefined) {
    try {
      shard = parseShard(values.shard);
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  return {
    runs: uint(values.runs, 'runs', transport ? 20 : 2000, 1),
    steps: uint(values.steps, 'steps', transport ? 500 : 40, 1, 1_000_000),
    seed: fuzzSeed(values.seed, process.env.PVMMU_FUZZ_SEED),
    shard,
    paging: paging === 'both' ? [...PAGING_MODES] : [paging as PagingMode],
    transport,
    sched,
    json: values.json === true,
  };
}

/** In-process runs of one paging mode on a worker. */
function runMode(paging: PagingMode, o: FuzzOptions, onProgress: (n: number) => void): Promise<FuzzModeResult> {
  const runs = shardOf(
    Array.from({ length: o.runs }, (_, k) => k),
    o.shard,
  );
  const data: FuzzWorkerData = { paging, seed: o.seed, runs, steps: o.steps };
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const w = new Worker(distEntry('hypervisor/fuzz-worker.js'), { workerData: data });
    let result: FuzzModeResult | undefined;
    w.on('message', (m: FuzzWorkerMessage) => {
      if (m.event === 'progress') onProgress(m.runsDone);
      else {
        onProgress(m.runsDone);
        result = {
          paging,
          runsDone: m.runsDone,
          elapsedMs: performance.now() - t0,
          coverage: m.coverage,
          failure: m.failure,
        };
      }
    });
    w.on('error', reject);
    w.on('exit', (code) => {
      if (result) resolve(result);
      else reject(new Error(`the fuzz worker for ${paging} exited (code ${code}) without a result`));
    });
  });
}

function formatCoverage(c: FuzzCoverage): string {
  const kv = (r: Record<string, number>) =>
    Object.entries(r)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} ${v}`)
      .join(', ') || 'none';
  return [
    `  hypercalls ${c.calls} (${c.hostile} hostile), guest stores ${c.stores}`,
    `  pins ok by level: L1 ${c.pinsOk[1]}, L2 ${c.pinsOk[2]}, L3 ${c.pinsOk[3]}, L4 ${c.pinsOk[4]}`,
    `  pins refused by reason: ${kv(c.pinsRefused)}`,
    `  type changes: ${kv(c.typeChanges)}`,
    `  results: ${kv(c.results)}`,
  ].join('\n');
}

export async function fuzz(o: FuzzOptions, out: (s: string) => void): Promise<FuzzModeResult[]> {
  const shardText = o.shard.count > 1 ? `, shard ${o.shard.index}/${o.shard.count}` : '';
  out(
    `pvmmu fuzz: seed ${o.seed}, ${o.runs} run(s) x ${o.steps} hypercalls, paging ${o.paging.join('+')}${shardText}, ${
      o.transport ? `transport (${o.sched} scheduler)` : 'in-process'
    }`,
  );
  const tty = process.stderr.isTTY === true;
  const done = new Map<PagingMode, number>();
  const progress = (p: PagingMode, n: number) => {
    done.set(p, n);
    if (tty) process.stderr.write(`\r\x1b[K${[...done].map(([m, k]) => `${m} ${k} runs`).join(', ')}`);
  };
  let results: FuzzModeResult[];
  if (o.transport) {
    results = [];
    for (const p of o.paging) results.push(await runTransportFuzz(p, o, (n) => progress(p, n)));
  } else {
    results = await Promise.all(o.paging.map((p) => runMode(p, o, (n) => progress(p, n))));
  }
  if (tty) process.stderr.write('\r\x1b[K');
  return results;
}

export const fuzzCommand: Command = {
  summary: 'fuzz the hypervisor with random hypercalls from two hostile domains',
  usage:
    'pvmmu fuzz [--runs N] [--steps N] [--seed N] [--shard i/n] [--paging pae|x86_64|both] [--transport [--sched det|parallel]] [--json]',
  help: `Random hypercall sequences (mmu_update, mmuext_op, update_va_mapping, multicall and raw
noise) from two hostile domains, with whole page-table trees built, pinned, installed and
torn down, linear entries, foreign frames and randomly overwritten request words. After
every hypercall the auditor must agree with the frame table and isolation must hold; the
hypervisor must never throw; destroying the domains must free every frame.

Options (defaults in brackets):
  --runs N           runs; each starts from a fresh hypervisor [2000; 20 with --transport]
  --steps N          hypercalls per run (and per domain with --transport) [40; 500 with --transport]
  --seed N           the seed (run k uses seed N+k, so a failing run replays alone with
                     --seed N+k --runs 1) [PVMMU_FUZZ_SEED, else random]
  --shard i/n        only runs k with k mod n = i-1 (for CI matrices)
  --paging MODE      pae | x86_64 | both [both]
  --transport        real vCPU workers of two domains issue the calls through their slots
  --sched S          with --transport: det (one call at a time, audit after each) |
                     parallel (all vCPUs at once, audit at quiescent points) [det]
  --json             one JSON object per paging mode instead of the report

The seed is printed first and in every failure. Exit status 0 when every run passed,
1 when one failed.`,
  async run(argv) {
    const o = parseFuzzArgs(argv);
    const out = (s: string) => process.stdout.write(`${s}\n`);
    const results = await fuzz(o, o.json ? () => {} : out);
    let failed = false;
    for (const r of results) {
      if (o.json) {
        out(JSON.stringify({ seed: o.seed, steps: o.steps, transport: o.transport, ...r }));
      } else {
        out(
          `${r.paging}: ${r.failure ? 'FAILED' : 'passed'}, ${r.runsDone} run(s), ${r.coverage.calls} hypercalls in ${(r.elapsedMs / 1000).toFixed(1)} s`,
        );
        out(formatCoverage(r.coverage));
      }
      if (r.failure) {
        failed = true;
        process.stderr.write(`${formatFailure(r.failure, o.steps, o.transport)}\n`);
      }
    }
    return failed ? 1 : 0;
  },
};

export { emptyCoverage, mergeCoverage };
