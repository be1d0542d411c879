/*
 * One handler per script step op. A handler does what its step says through a
 * StepContext (the machine, the domains' names and vCPUs, as the runner holds them) and
 * writes what happened into the step's result. Handlers throw StepFailure for a step
 * that cannot run as written (an unbound name, a full domain): the runner reports it as
 * the step's failure and goes on.
 */
import { FRAME_WORDS, rcName } from '../abi/xen.js';
import { fromBigInt, hex64, toBigInt } from '../abi/pte.js';
import type { AuditReport } from '../abi/control.js';
import { encodeCall, encodeEntry, type Resolver } from './encode.js';
import type { Step } from './schema.js';

export { StepFailure } from './frames.js';

export interface StepResult {
  at: string;
  op: string;
  domain: string;
  vcpu: number;
  /** Short description ("mmuext pin_l1_table frame=t"). */
  what: string;
  /** What happened: "ok", an errno name, "fault"; an array for a multicall. */
  got: string | string[];
  expected: string | string[];
  pass: boolean;
  /** Why it failed, when it did. */
  reason?: string;
  /** Hypervisor log lines written during the step. */
  log: string[];
  done?: number;
  value?: string;
}

/** A vCPU as a handler sees it: requests to the script program on its worker. */
export interface ScriptVcpu {
  request<T = unknown>(msg: { op: string; [key: string]: unknown }): Promise<T>;
}

/** What the runner gives a handler. */
export interface StepContext {
  /** Names resolved as seen from domain `home`. */
  resolver(home: string): Resolver;
  /** The vCPU the step runs on (started on first use). */
  vcpu(s: Step): Promise<ScriptVcpu>;
  /** Bind `name` to the domain's next free frame. */
  alloc(domain: string, name: string, at: string): void;
  /** The domain's id and a frame's pfn, for a REF seen from `home`. */
  pfn(ref: string, home: string, at: string): { domid: number; pfn: number };
  fillFrame(domid: number, pfn: number, words: Uint32Array): Promise<number>;
  audit(): Promise<AuditReport>;
}

type Handler<Op extends Step['op']> = (s: Extract<Step, { op: Op }>, ctx: StepContext, r: StepResult) => Promise<void>;

/** A memory access through the vCPU's MMU: "fault" when it refused. */
async function access(
  ctx: StepContext,
  s: Step,
  msg: { op: string; [k: string]: unknown },
): Promise<{ fault?: unknown; lo?: number; hi?: number }> {
  return (await ctx.vcpu(s)).request(msg);
}

export const alloc: Handler<'alloc'> = async (s, ctx) => {
  ctx.alloc(s.domain, s.name, s.at);
};

export const write: Handler<'write'> = async (s, ctx, r) => {
  const res = ctx.resolver(s.domain);
  const va = res.va({ direct: s.frame, offset: s.index * 8 }, `${s.at}.frame`);
  const [lo, hi] = encodeEntry(s.entry, res, `${s.at}.entry`);
  r.got = (await access(ctx, s, { op: 'store', va, lo, hi })).fault ? 'fault' : 'ok';
};

export const store: Handler<'store'> = async (s, ctx, r) => {
  const va = ctx.resolver(s.domain).va(s.va, `${s.at}.va`);
  const [lo, hi] = fromBigInt(s.value);
  if (va < 0) {
    r.got = 'fault'; // a non-canonical address: #GP on a real CPU
    return;
  }
  r.got = (await access(ctx, s, { op: 'store', va, lo, hi })).fault ? 'fault' : 'ok';
};

export const load: Handler<'load'> = async (s, ctx, r) => {
  const va = ctx.resolver(s.domain).va(s.va, `${s.at}.va`);
  if (va < 0) {
    r.got = 'fault';
    return;
  }
  const out = await access(ctx, s, { op: 'load', va });
  r.got = out.fault ? 'fault' : 'ok';
  if (out.fault) return;
  r.value = `0x${hex64(out.hi!, out.lo!)}`;
  if (s.expectValue !== undefined && toBigInt(out.lo!, out.hi!) !== s.expectValue) {
    r.pass = false;
    r.reason = `loaded ${r.value}, expected 0x${s.expectValue.toString(16).padStart(16, '0')}`;
  }
};

export const audit: Handler<'audit'> = async (_s, ctx, r) => {
  const a = await ctx.audit();
  r.got = a.ok && a.isolationViolations === 0 ? 'ok' : 'fault';
  if (r.got !== 'ok')
    r.reason = a.problems
      .slice(0, 3)
      .map((p) => `mfn ${p.mfn.toString(16)}: ${p.what}`)
      .join('; ');
};

/** The frame's FRAME_WORDS words as a fill step gives them (entries not listed are zero). */
export function fillWords(s: Extract<Step, { op: 'fill' }>, res: Resolver): Uint32Array {
  const words = new Uint32Array(FRAME_WORDS);
  for (const [i, e] of s.entries) {
    const [lo, hi] = encodeEntry(e, res, `${s.at}.entries.${i}`);
    words[2 * i] = lo;
    words[2 * i + 1] = hi;
  }
  return words;
}

export const fill: Handler<'fill'> = async (s, ctx, r) => {
  const words = fillWords(s, ctx.resolver(s.domain));
  const { domid, pfn } = ctx.pfn(s.frame, s.domain, `${s.at}.frame`);
  r.got = rcName(await ctx.fillFrame(domid, pfn, words));
};

/** mmu_update, mmuext, update_va_mapping and multicall: one hypercall on the step's vCPU. */
export const hypercall: Handler<'mmu_update' | 'mmuext' | 'update_va_mapping' | 'multicall'> = async (s, ctx, r) => {
  const res = ctx.resolver(s.domain);
  const call = encodeCall(s, res);
  const h = await ctx.vcpu(s);
  const out = await h.request<{ rc: number; words: number[] }>({ op: 'hypercall', ...call });
  if (s.op === 'multicall') {
    r.got = out.words.map(rcName);
  } else {
    r.got = rcName(out.rc);
    if (s.op !== 'update_va_mapping') r.done = out.words[0];
  }
  // Keep the vCPU's MMU on the base pointer the hypervisor now has.
  if (s.op === 'mmuext') {
    for (let i = 0; i < (r.done ?? 0); i++) {
      const o = s.ops[i]!;
      if (o.cmd === 'new_baseptr') await h.request({ op: 'set_baseptr', mfn: res.mfn(o.frame!, s.at) });
    }
  }
};

export const HANDLERS: { [Op in Step['op']]: Handler<Op> } = {
  alloc,
  write,
  store,
  load,
  audit,
  fill,
  mmu_update: (s, ctx, r) => hypercall(s, ctx, r),
  mmuext: (s, ctx, r) => hypercall(s, ctx, r),
  update_va_mapping: (s, ctx, r) => hypercall(s, ctx, r),
  multicall: (s, ctx, r) => hypercall(s, ctx, r),
};

/** Run one step with its handler. */
export function runStep(s: Step, ctx: StepContext, r: StepResult): Promise<void> {
  return (HANDLERS[s.op] as Handler<Step['op']>)(s as never, ctx, r);
}
