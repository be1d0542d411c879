/*
 * `pvmmu reduce`: shrink a failing script to a small one that still fails the same way
 * (delta debugging, Zeller's ddmin, as C-Reduce and syzkaller's minimiser do).
 *
 *  1. Run the script once and pick what must keep happening: by default its first
 *     refused call -- the same op, the same errno(s) and the same first log line;
 *     `keep: "EINVAL"` any call refused with that errno; `keep: "some text"` any
 *     hypervisor log line containing it.
 *  2. Cut everything after the first step that shows it.
 *  3. ddmin over the steps, then over each remaining step's entries (mmu_update
 *     requests, mmuext ops, multicall calls, fill entries); a multicall of one call
 *     becomes that call.
 *  4. Write each kept step's results back as its expect, expect_done and expect_log.
 *
 * A candidate that no longer parses or whose names no longer resolve does not reproduce.
 * Candidates run in-process on a replay worker (hypervisor/replay-worker.ts, started by
 * path: the host never imports the hypervisor) -- a whole xfs-dirscan recording replays
 * in well under a second there against ~12 s on vCPU threads. Scripts with steps that
 * need a vCPU's MMU (write, load, store, audit) run each candidate with runScript.
 */
import { Worker } from 'node:worker_threads';
import { ERRNO_BY_NAME, PAGE_SIZE, rcName } from '../abi/xen.js';
import type { DomainInfo, ReplayOp, ReplayReply, ReplayWorkerData } from '../abi/control.js';
import { distEntry } from '../machine.js';
import { encodeCall } from './encode.js';
import { Frames, StepFailure } from './frames.js';
import { fillWords } from './handlers.js';
import { runScript, scriptMemoryBytes } from './run.js';
import { parseScript, type Script, ScriptError, type Step } from './schema.js';

type Json = Record<string, unknown>;
/** A script in its JSON form (what `pvmmu script` reads). */
export interface ScriptJson {
  steps: unknown[];
  [k: string]: unknown;
}

export interface ReduceOptions {
  /** An errno name (EINVAL) or a substring of a hypervisor log line; default: the first refused call. */
  keep?: string;
  /** Stop after this many seconds with the smallest script found so far (default 300). */
  maxSeconds?: number;
  onProgress?: (p: ReduceProgress) => void;
}

export interface ReduceProgress {
  phase: 'steps' | 'entries';
  /** Candidates run so far. */
  tests: number;
  /** Steps in the smallest failing script so far. */
  steps: number;
  elapsedMs: number;
}

export interface ReduceResult {
  script: ScriptJson;
  originalSteps: number;
  steps: number;
  /** Candidates run. */
  tests: number;
  elapsedMs: number;
  /** What was kept, in words ("mmuext EINVAL (XEN) mm.c:..."). */
  kept: string;
  /** True when --max-seconds stopped it before ddmin was done. */
  timedOut: boolean;
  /** in-process (replay worker) or vcpu-threads (runScript). */
  engine: 'in-process' | 'vcpu-threads';
}

export class ReduceError extends Error {
  override name = 'ReduceError';
}

/** What one step got. */
interface Outcome {
  op: string;
  /** A multicall's calls' ops. */
  callOps?: string[];
  got: string | string[];
  done?: number;
  log: string[];
}

const EXPECT_KEYS = ['expect', 'expect_done', 'expect_log', 'expect_value'];
const MMU_OPS = new Set(['fill', 'alloc', 'mmu_update', 'mmuext', 'update_va_mapping', 'multicall']);

function stripExpect(s: unknown): unknown {
  if (typeof s !== 'object' || s === null) return s;
  const o = { ...(s as Json) };
  for (const k of EXPECT_KEYS) delete o[k];
  if (Array.isArray(o.calls)) o.calls = o.calls.map(stripExpect);
  return o;
}

function refused(o: Outcome): boolean {
  return Array.isArray(o.got) ? o.got.some((g) => g !== 'ok') : o.got !== 'ok';
}

/** A refused call as "op errno first-log-line"; for a multicall, its first refused call's. */
function signature(o: Outcome): string {
  let op = o.op;
  let got = o.got;
  if (Array.isArray(got)) {
    const i = got.findIndex((g) => g !== 'ok');
    op = o.callOps?.[i] ?? op;
    got = got[i] ?? 'ok';
  }
  return `${op} ${got}${o.log[0] ? ` ${o.log[0]}` : ''}`;
}

/** Runs candidates: in-process on the replay worker, or on vCPU threads. */
class Runner {
  readonly #head: Json;
  readonly #script: Script;
  #worker: Worker | null = null;
  #infos: DomainInfo[] = [];
  #nextId = 0;
  #waiting: ((m: ReplayReply | null) => void) | null = null;
  #failed: Error | null = null;
  readonly inProcess: boolean;
  tests = 0;

  constructor(head: Json, script: Script) {
    this.#head = head;
    this.#script = script;
    this.inProcess = script.steps.every((s) => MMU_OPS.has(s.op));
  }

  async start(): Promise<void> {
    if (!this.inProcess) return;
    const s = this.#script;
    const data: ReplayWorkerData = {
      paging: s.paging,
      frames: scriptMemoryBytes(s) / PAGE_SIZE,
      maxSlots: s.domains.reduce((n, d) => n + d.vcpus, 0),
      domains: s.domains.map((d) => ({ name: d.name, frames: d.frames, vcpus: d.vcpus, lowmemFrames: d.lowmemFrames })),
    };
    const w = new Worker(distEntry('hypervisor/replay-worker.js'), { workerData: data });
    this.#worker = w;
    w.on('error', (e) => {
      this.#failed = e;
      this.#waiting?.(null);
    });
    w.on('message', (m: ReplayReply) => this.#waiting?.(m));
    const ready = await this.#reply();
    if (!('ready' in ready)) throw new Error('the replay worker did not start');
    this.#infos = ready.infos;
  }

  /** The worker's next message (one request is outstanding at a time). */
  async #reply(): Promise<ReplayReply> {
    const m = await new Promise<ReplayReply | null>((resolve) => {
      this.#waiting = resolve;
    });
    this.#waiting = null;
    if (m === null) throw new Error(`the replay worker failed: ${this.#failed?.message}`);
    return m;
  }

  async stop(): Promise<void> {
    await this.#worker?.terminate();
  }

  /** Run candidate steps (JSON, expectations stripped); null when it does not parse or resolve. */
  async run(steps: unknown[]): Promise<Outcome[] | null> {
    this.tests++;
    if (steps.length === 0) return null;
    let script: Script;
    try {
      script = parseScript({ ...this.#head, steps: steps.map(stripExpect) }, 'candidate');
    } catch (e) {
      if (e instanceof ScriptError) return null;
      throw e;
    }
    return this.#worker === null ? this.#runThreads(script) : this.#runInProcess(script);
  }

  async #runThreads(script: Script): Promise<Outcome[] | null> {
    const res = await runScript(script);
    if (res.steps.some((r) => r.got === 'error')) return null;
    return res.steps.map((r, i) => {
      const s = script.steps[i]!;
      return {
        op: r.op,
        got: r.got,
        done: r.done,
        log: r.log,
        callOps: s.op === 'multicall' ? s.calls.map((c) => c.op) : undefined,
      };
    });
  }

  async #runInProcess(script: Script): Promise<Outcome[] | null> {
    const frames = new Frames(script.paging, this.#infos);
    const ops: ReplayOp[] = [];
    const kinds: Array<{ s: Step; op: number }> = []; // op index, -1 for alloc
    try {
      for (const s of script.steps) {
        if (s.op === 'alloc') {
          frames.alloc(s.domain, s.name, s.at);
          kinds.push({ s, op: -1 });
          continue;
        }
        const domid = frames.info(s.domain).domid;
        if (s.op === 'fill') {
          const [info, pfn] = frames.pfnOf(s.frame, s.domain, `${s.at}.frame`);
          ops.push({ k: 'fill', domid: info.domid, pfn, words: fillWords(s, frames.resolver(s.domain)) });
        } else {
          const c = encodeCall(s, frames.resolver(s.domain));
          ops.push({ k: 'call', domid, vcpu: s.vcpu, nr: c.nr, args: c.args, data: c.data, readback: c.readback });
        }
        kinds.push({ s, op: ops.length - 1 });
      }
    } catch (e) {
      if (e instanceof StepFailure) return null;
      throw e;
    }
    const id = ++this.#nextId;
    const replied = this.#reply();
    this.#worker!.postMessage({ id, ops });
    const reply = await replied;
    if ('error' in reply) throw new Error(`the replay worker failed: ${reply.error}`);
    if (!('outcomes' in reply)) throw new Error('the replay worker answered out of turn');
    return kinds.map(({ s, op }): Outcome => {
      if (op < 0) return { op: s.op, got: 'ok', log: [] };
      const o = reply.outcomes[op]!;
      if (s.op === 'multicall')
        return { op: s.op, got: o.words.map(rcName), log: o.log, callOps: s.calls.map((c) => c.op) };
      const out: Outcome = { op: s.op, got: rcName(o.rc), log: o.log };
      if (s.op === 'mmu_update' || s.op === 'mmuext') out.done = o.words[0];
      return out;
    });
  }
}

/** ddmin (Zeller and Hildebrandt, 2002) over `items`: a 1-minimal sublist that still `fails`. */
async function ddmin<T>(items: T[], fails: (c: T[]) => Promise<boolean>, outOfTime: () => boolean): Promise<T[]> {
  let c = items;
  let n = 2;
  while (c.length >= 2 && !outOfTime()) {
    const size = Math.ceil(c.length / n);
    const chunks: T[][] = [];
    for (let i = 0; i < c.length; i += size) chunks.push(c.slice(i, i + size));
    let reduced = false;
    // Complements first: on long scripts they are what shrinks (most subsets do not fail).
    for (let i = 0; i < chunks.length && !outOfTime(); i++) {
      const comp = chunks.filter((_, j) => j !== i).flat();
      if (comp.length > 0 && (await fails(comp))) {
        c = comp;
        n = Math.max(n - 1, 2);
        reduced = true;
        break;
      }
    }
    if (!reduced && chunks.length > 2) {
      for (const ch of chunks) {
        if (outOfTime()) break;
        if (await fails(ch)) {
          c = ch;
          n = 2;
          reduced = true;
          break;
        }
      }
    }
    if (!reduced) {
      if (n >= c.length) break;
      n = Math.min(n * 2, c.length);
    }
  }
  return c;
}

/** The list fields of a step that ddmin may shorten. */
const LIST_FIELDS: Record<string, string> = { mmu_update: 'reqs', mmuext: 'ops', multicall: 'calls' };

export async function reduceScript(input: ScriptJson | string, opts: ReduceOptions = {}): Promise<ReduceResult> {
  const t0 = performance.now();
  const raw = (typeof input === 'string' ? JSON.parse(input) : input) as ScriptJson;
  const script = parseScript(raw, 'script');
  const { steps: rawSteps, ...head } = raw;
  const maxMs = (opts.maxSeconds ?? 300) * 1000;
  let timedOut = false;
  const outOfTime = () => {
    if (performance.now() - t0 > maxMs) timedOut = true;
    return timedOut;
  };
  const runner = new Runner(head, script);
  await runner.start();
  try {
    const full = await runner.run(rawSteps);
    if (full === null) throw new ReduceError('the script does not run as written (a name does not resolve)');
    // What must keep happening.
    let holds: (o: Outcome) => boolean;
    let kept: string;
    const keep = opts.keep;
    if (keep !== undefined && ERRNO_BY_NAME[keep] !== undefined) {
      holds = (o) => (Array.isArray(o.got) ? o.got.includes(keep) : o.got === keep);
      kept = `a call refused with ${keep}`;
    } else if (keep !== undefined) {
      holds = (o) => o.log.some((l) => l.includes(keep));
      kept = `a hypervisor log line containing ${JSON.stringify(keep)}`;
    } else {
      const first = full.find(refused);
      if (first === undefined) throw new ReduceError('no call in the script is refused: nothing to reduce');
      const sig = signature(first);
      holds = (o) => signature(o) === sig;
      kept = sig;
    }
    const at = full.findIndex(holds);
    if (at < 0) throw new ReduceError(`the script never shows ${kept}: nothing to reduce`);
    const fails = async (steps: unknown[]) => {
      const out = await runner.run(steps);
      opts.onProgress?.({ phase, tests: runner.tests, steps: best.length, elapsedMs: performance.now() - t0 });
      return out?.some(holds) === true;
    };
    let phase: ReduceProgress['phase'] = 'steps';
    let best = rawSteps.slice(0, at + 1);
    const track = async (c: unknown[]) => {
      const ok = await fails(c);
      if (ok && c.length < best.length) best = c;
      return ok;
    };
    best = await ddmin(best, track, outOfTime);
    // Then each step's entries.
    phase = 'entries';
    for (let i = 0; i < best.length && !outOfTime(); i++) {
      const step = best[i] as Json;
      const field = step.op === 'fill' ? 'entries' : LIST_FIELDS[step.op as string];
      if (field === undefined) continue;
      const with_ = (list: unknown): unknown[] => best.map((s, j) => (j === i ? { ...step, [field]: list } : s));
      if (step.op === 'fill') {
        const keys = Object.entries(step.entries as Json);
        const fewer = await ddmin(keys, (k) => fails(with_(Object.fromEntries(k))), outOfTime);
        if (fewer.length < keys.length) best = with_(Object.fromEntries(fewer));
        // Maybe no entry at all is needed.
        if (fewer.length === 1 && (await fails(with_({})))) best = with_({});
        continue;
      }
      const list = step[field] as unknown[];
      const fewer = list.length > 1 ? await ddmin(list, (l) => fails(with_(l)), outOfTime) : list;
      if (fewer.length < list.length) best = with_(fewer);
      if (step.op === 'multicall' && fewer.length === 1) {
        const single = { domain: step.domain, vcpu: step.vcpu, ...(fewer[0] as Json) };
        const alone = best.map((s, j) => (j === i ? single : s));
        if (await fails(alone)) best = alone;
      }
    }
    // Expectations from the reduced script's own run, so that `pvmmu script` checks them.
    const final = (await runner.run(best))!;
    const steps = best.map((s, i) => withExpect(stripExpect(s) as Json, final[i]!));
    return {
      script: { ...head, steps },
      originalSteps: rawSteps.length,
      steps: steps.length,
      tests: runner.tests,
      elapsedMs: performance.now() - t0,
      kept,
      timedOut,
      engine: runner.inProcess ? 'in-process' : 'vcpu-threads',
    };
  } finally {
    await runner.stop();
  }
}

function withExpect(s: Json, o: Outcome): Json {
  const out: Json = { ...s };
  if (Array.isArray(o.got) ? o.got.some((g) => g !== 'ok') : o.got !== 'ok') out.expect = o.got;
  if (o.done !== undefined) out.expect_done = o.done;
  if (o.log[0] !== undefined) out.expect_log = o.log[0];
  return out;
}
