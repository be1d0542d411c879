/*
 * `pvmmu fuzz --transport`: the fuzzer through the real machine. Two domains (A with two
 * vCPUs, B with one) run the `fuzz` guest program (guest/programs/fuzz.ts) on vCPU worker
 * threads; their calls -- hostile words included -- go through their request slots to the
 * hypervisor thread, with real flush IPIs between the vCPUs.
 *
 *  - det: one vCPU at a time, drawn from the run's seed, one hypercall per step; the
 *    auditor runs after every step.
 *  - parallel: every vCPU runs a chunk of calls at once; the auditor runs at each
 *    quiescent point (all chunks returned).
 *
 * Every run ends by destroying both domains: the audit must agree, every frame must be
 * free again, and the hypervisor must not have thrown (Machine.xenBugs stays empty).
 */
import {
  type FuzzCoverage,
  type FuzzFailure,
  FUZZ_DOMAIN_FRAMES,
  FUZZ_POOL,
  FuzzRng,
  bump,
  emptyCoverage,
  runSeed,
} from './abi/fuzz.js';
import type { DomainInfo } from './abi/control.js';
import type { PagingMode } from './abi/xen.js';
import type { FuzzModeResult, FuzzOptions } from './fuzz.js';
import { Machine, type VcpuHandle } from './machine.js';
import { shardOf } from './shard.js';

/** Calls per vCPU between two quiescent points under the parallel scheduler. */
const PARALLEL_CHUNK = 64;
/** Det steps between two drains of the hypervisor's log (for the refused-pin reasons). */
const LOG_EVERY = 64;

interface StepOut {
  calls: number;
  stores: number;
  storeFaults: number;
  hostile: number;
  results: Record<string, number>;
  pinsOk: number[];
}

function poolAndRoot(info: DomainInfo): number[] {
  const out: number[] = [];
  for (let k = 0; k < FUZZ_POOL; k++) out.push(info.p2m[info.firstFreePfn + k]!);
  out.push(info.p2m[info.ptFirstPfn]!);
  return out;
}

/** One transport run; adds to `cov`. Returns null or the first failure. */
export async function transportRun(
  paging: PagingMode,
  seed: number,
  steps: number,
  sched: 'det' | 'parallel',
  cov: FuzzCoverage,
): Promise<FuzzFailure | null> {
  const machine = await Machine.create({ paging, memoryBytes: 16 * 2 ** 20, maxVcpus: 4 });
  const fail = (step: number, action: string, problems: string[]): FuzzFailure => ({
    paging,
    seed,
    step,
    action,
    problems,
    sched,
  });
  try {
    const free0 = await machine.freeFrames();
    const infos = [
      await machine.createDomain({ name: 'A', frames: FUZZ_DOMAIN_FRAMES, vcpus: 2 }),
      await machine.createDomain({ name: 'B', frames: FUZZ_DOMAIN_FRAMES, vcpus: 1 }),
    ];
    const handles: VcpuHandle[] = [];
    for (const [di, info] of infos.entries()) {
      for (let v = 0; v < info.vcpus; v++) {
        const params = { seed: runSeed(seed, 1 + 16 * di + v), info, foreign: poolAndRoot(infos[1 - di]!) };
        handles.push(await machine.startVcpu(info, v, 'fuzz', params));
      }
    }
    const check = async (step: number, what: string): Promise<FuzzFailure | null> => {
      if (machine.xenBugs.length > 0) return fail(step, what, ['the hypervisor threw:', ...machine.xenBugs]);
      const r = await machine.audit();
      if (r.ok && r.isolationViolations === 0) return null;
      return fail(step, what, [
        `audit: ${r.problems.length} problem(s), ${r.isolationViolations} isolation violation(s)`,
        ...r.problems.slice(0, 8).map((p) => `mfn ${p.mfn.toString(16)}: ${p.what}`),
      ]);
    };
    const drain = async (): Promise<void> => {
      const log = await machine.drainLog();
      for (const rec of log) {
        if (rec.reason === 'pin_error' || rec.reason === 'already_pinned') {
          bump(cov.pinsRefused, log.find((r) => r.seq === rec.seq && r.domid === rec.domid)!.reason);
        }
      }
    };
    const add = (o: StepOut): void => {
      cov.calls += o.calls;
      cov.stores += o.stores;
      cov.hostile += o.hostile;
      for (let i = 1; i <= 4; i++) cov.pinsOk[i]! += o.pinsOk[i] ?? 0;
      for (const [k, v] of Object.entries(o.results)) bump(cov.results, k, v);
      if (o.storeFaults > 0) bump(cov.results, 'store fault', o.storeFaults);
    };
    const name = (h: VcpuHandle) => `d${h.domid}v${h.vcpu}`;
    let bad = await check(-1, 'build');
    if (bad) return bad;
    const rng = new FuzzRng(seed);
    let total = 0;
    let step = 0;
    try {
      if (sched === 'det') {
        for (; total < steps; step++) {
          const h = handles[rng.int(handles.length)]!;
          const o = await h.request<StepOut>({ op: 'steps', n: 1 });
          add(o);
          total += o.calls;
          bad = await check(step, `one call on ${name(h)}`);
          if (bad) return bad;
          if (step % LOG_EVERY === 0) await drain();
        }
      } else {
        for (; total < steps; step++) {
          const outs = await Promise.all(handles.map((h) => h.request<StepOut>({ op: 'steps', n: PARALLEL_CHUNK })));
          for (const o of outs) {
            add(o);
            total += o.calls;
          }
          bad = await check(step, `${PARALLEL_CHUNK} calls on each of ${handles.map(name).join(', ')}`);
          if (bad) return bad;
          await drain();
        }
      }
    } catch (e) {
      return fail(step, 'a vCPU', [`the guest failed: ${(e as Error).message}`]);
    }
    await drain();
    for (const info of infos) await machine.destroyDomain(info.domid);
    bad = await check(step, 'destroy');
    if (bad) return bad;
    const free = await machine.freeFrames();
    if (free !== free0)
      return fail(step, 'destroy', [`${free0 - free} frame(s) not freed after destroying both domains`]);
    return null;
  } finally {
    await machine.shutdown();
  }
}

export async function runTransportFuzz(
  paging: PagingMode,
  o: FuzzOptions,
  onProgress: (runsDone: number) => void,
): Promise<FuzzModeResult> {
  const runs = shardOf(
    Array.from({ length: o.runs }, (_, k) => k),
    o.shard,
  );
  const coverage = emptyCoverage();
  const t0 = performance.now();
  let failure: FuzzFailure | null = null;
  let runsDone = 0;
  for (const k of runs) {
    failure = await transportRun(paging, runSeed(o.seed, k), o.steps, o.sched, coverage);
    runsDone++;
    onProgress(runsDone);
    if (failure) break;
  }
  return { paging, runsDone, elapsedMs: performance.now() - t0, coverage, failure };
}
