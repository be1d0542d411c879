/*
 * One test per script step handler (src/script/handlers.ts), each alone against a fake
 * StepContext: what it asks of the vCPU, the machine and the name table, and what it
 * writes into the step's result. Plus the frame-reference grammar (parseRef) and the
 * fill op's schema.
 */
import { describe, expect, it } from 'vitest';
import type { AuditReport } from '../src/abi/control.js';
import { __HYPERVISOR_mmuext_op, __HYPERVISOR_multicall, EBUSY, EINVAL } from '../src/abi/xen.js';
import type { Resolver } from '../src/script/encode.js';
import { HANDLERS, runStep, StepFailure, type StepContext, type StepResult } from '../src/script/handlers.js';
import { parseRef, parseScript, type Step } from '../src/script/schema.js';

const PAGE_OFFSET = 0xc0000000;
/** pfn = the number in "f7" or "@pfn:7"; mfn = pfn + 100. */
const pfnOf = (ref: string) => Number(/(\d+)$/.exec(ref)?.[1] ?? Number.NaN);
const resolver: Resolver = {
  mfn: (ref) => pfnOf(ref) + 100,
  va: (a) => ('raw' in a ? Number(a.raw) : PAGE_OFFSET + pfnOf(a.direct) * 4096 + a.offset),
  vaWords: (a) => [Number('raw' in a ? a.raw : PAGE_OFFSET + pfnOf(a.direct) * 4096), 0],
};

function fake(reply: Record<string, unknown> = {}) {
  const requests: Array<Record<string, unknown>> = [];
  const calls: string[] = [];
  const ctx: StepContext = {
    resolver: () => resolver,
    vcpu: async () => ({
      request: async <T>(msg: Record<string, unknown>) => {
        requests.push(msg);
        return reply as T;
      },
    }),
    alloc: (d, n) => calls.push(`alloc ${d} ${n}`),
    pfn: (ref) => ({ domid: 1, pfn: pfnOf(ref) }),
    fillFrame: async (domid, pfn, words) => {
      calls.push(`fill d${domid} pfn ${pfn} [${[...words.subarray(0, 4)].join(',')}]`);
      return Number(reply.fillRc ?? 0);
    },
    audit: async () => reply.audit as AuditReport,
  };
  return { ctx, requests, calls };
}

function step(json: Record<string, unknown>): Step {
  return parseScript({ steps: [json] }).steps[0]!;
}

function result(s: Step): StepResult {
  return {
    at: s.at,
    op: s.op,
    domain: s.domain,
    vcpu: s.vcpu,
    what: '',
    got: 'ok',
    expected: 'ok',
    pass: true,
    log: [],
  };
}

async function run(json: Record<string, unknown>, reply?: Record<string, unknown>) {
  const f = fake(reply);
  const s = step(json);
  const r = result(s);
  await runStep(s, f.ctx, r);
  return { ...f, r };
}

describe('script step handlers', () => {
  it('every op has a handler', () => {
    expect(Object.keys(HANDLERS).sort()).toEqual(
      [
        'alloc',
        'audit',
        'fill',
        'load',
        'mmu_update',
        'mmuext',
        'multicall',
        'store',
        'update_va_mapping',
        'write',
      ].sort(),
    );
  });

  it("alloc binds the name in the step's domain", async () => {
    const { calls, requests } = await run({ op: 'alloc', name: 't' });
    expect(calls).toEqual(['alloc A t']);
    expect(requests).toEqual([]);
  });

  it('write stores the entry through the frame\'s direct-map address; a refused store is "fault"', async () => {
    const ok = await run({ op: 'write', frame: 'f5', index: 3, entry: { frame: 'f7', flags: 'P|RW' } });
    expect(ok.requests).toEqual([{ op: 'store', va: PAGE_OFFSET + 5 * 4096 + 24, lo: (107 << 12) | 3, hi: 0 }]);
    expect(ok.r.got).toBe('ok');
    const refused = await run({ op: 'write', frame: 'f5', index: 0, entry: 0 }, { fault: { va: 1 } });
    expect(refused.r.got).toBe('fault');
  });

  it('store writes the value at the VA; load reads it and checks expect_value', async () => {
    const st = await run({ op: 'store', va: '0xc0001000', value: '0x1122334455667788' });
    expect(st.requests).toEqual([{ op: 'store', va: 0xc0001000, lo: 0x55667788, hi: 0x11223344 }]);
    const good = await run({ op: 'load', va: '0xc0001000', expect_value: '0x5' }, { lo: 5, hi: 0 });
    expect(good.r).toMatchObject({ got: 'ok', value: '0x0000000000000005', pass: true });
    const bad = await run({ op: 'load', va: '0xc0001000', expect_value: '0x6' }, { lo: 5, hi: 0 });
    expect(bad.r.pass).toBe(false);
    expect(bad.r.reason).toMatch(/loaded 0x0000000000000005, expected 0x0000000000000006/);
  });

  it('audit is "ok" when the auditor agrees, "fault" with the problems when not', async () => {
    const good = await run(
      { op: 'audit' },
      { audit: { ok: true, framesChecked: 1, problems: [], isolationViolations: 0 } },
    );
    expect(good.r.got).toBe('ok');
    const bad = await run(
      { op: 'audit' },
      {
        audit: { ok: false, framesChecked: 1, problems: [{ mfn: 0x1a, what: 'count 2 != 1' }], isolationViolations: 0 },
      },
    );
    expect(bad.r).toMatchObject({ got: 'fault', reason: 'mfn 1a: count 2 != 1' });
  });

  it("fill writes the frame's words (entries not listed are zero) through the machine; -EBUSY shows as EBUSY", async () => {
    const ok = await run({ op: 'fill', frame: '@pfn:9', entries: { 1: { frame: 'f7', flags: 'P' } } });
    expect(ok.calls).toEqual([`fill d1 pfn 9 [0,0,${(107 << 12) | 1},0]`]);
    expect(ok.r.got).toBe('ok');
    const busy = await run({ op: 'fill', frame: '@pfn:9', entries: {} }, { fillRc: -EBUSY });
    expect(busy.r.got).toBe('EBUSY');
  });

  it('a hypercall goes to the vCPU encoded; rc and *pdone come back as got and done', async () => {
    const { requests, r } = await run(
      { op: 'mmuext', ops: [{ cmd: 'pin_l1_table', frame: 'f4' }] },
      { rc: -EINVAL, words: [0] },
    );
    expect(requests[0]).toMatchObject({ op: 'hypercall', nr: __HYPERVISOR_mmuext_op });
    expect((requests[0]!.data as number[]).slice(0, 3)).toEqual([0, 0, 104]);
    expect(r).toMatchObject({ got: 'EINVAL', done: 0 });
  });

  it("a multicall's results are one per call; a new_baseptr that was done moves the vCPU's MMU", async () => {
    const mc = await run(
      {
        op: 'multicall',
        calls: [
          { op: 'mmuext', ops: [{ cmd: 'tlb_flush_local' }] },
          { op: 'update_va_mapping', va: '0xc0000000', entry: 0 },
        ],
      },
      { rc: 0, words: [0, -EINVAL] },
    );
    expect(mc.requests[0]).toMatchObject({ nr: __HYPERVISOR_multicall });
    expect(mc.r.got).toEqual(['ok', 'EINVAL']);
    const base = await run({ op: 'mmuext', ops: [{ cmd: 'new_baseptr', frame: 'f3' }] }, { rc: 0, words: [1] });
    expect(base.requests.at(-1)).toEqual({ op: 'set_baseptr', mfn: 103 });
  });

  it("a name that does not resolve is the step's failure, not the run's", async () => {
    const f = fake();
    f.ctx.resolver = () => ({
      ...resolver,
      mfn: () => {
        throw new StepFailure('steps[0].ops[0].frame: no frame "t"');
      },
    });
    const s = step({ op: 'mmuext', ops: [{ cmd: 'pin_l1_table', frame: 't' }] });
    await expect(runStep(s, f.ctx, result(s))).rejects.toBeInstanceOf(StepFailure);
  });
});

describe('the frame-reference grammar', () => {
  it.each([
    ['t', { kind: 'name', name: 't' }],
    ['B:t', { domain: 'B', kind: 'name', name: 't' }],
    ['@root', { kind: 'root' }],
    ['@pt:2', { kind: 'pt', n: 2 }],
    ['B:@pfn:58541', { domain: 'B', kind: 'pfn', n: 58541 }],
  ])('%s', (ref, want) => {
    expect(parseRef(ref)).toEqual(want);
  });
  it.each(['@pfn:x', '@nope', 'a b'])('%s is not a REF', (ref) => {
    expect(parseRef(ref)).toBeNull();
  });
});

describe('the fill op in the schema', () => {
  it('takes entries by index, zero elsewhere', () => {
    const s = step({ op: 'fill', frame: '@pfn:3', entries: { 0: '0x1001', 511: 0 } });
    expect(s).toMatchObject({
      op: 'fill',
      frame: '@pfn:3',
      entries: [
        [0, { raw: 0x1001n }],
        [511, { raw: 0n }],
      ],
    });
  });
  it.each([
    [{ op: 'fill', frame: 'f', entries: [] }, /steps\[0\]\.entries: must be an object/],
    [{ op: 'fill', frame: 'f', entries: { 512: 0 } }, /index "512" is not an integer in 0\.\.511/],
    [{ op: 'fill', frame: 'f', entries: { 1: { frame: 'g', flags: 'XX' } } }, /entries\.1\.flags: unknown flag "XX"/],
  ])('refuses %j', (json, msg) => {
    expect(() => step(json)).toThrow(msg);
  });
});
