/*
 * The virtual clock (guest/kernel/vclock.ts): the ordering rule, the lock-wait and IPI-ack
 * rules on hand-built cases (one thread drives several vCPUs' clocks, each acting only
 * while it holds the smallest clock, so no turn is ever waited for), determinism of whole
 * runs, the fixes under the virtual clock, and the shipped cost table, pinned.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  lockKey,
  resetVclock,
  VC_BLOCKED,
  VC_IDLE,
  VClock,
  vclockBytes,
  vclockViews,
  XEN_FLUSH_LOCK,
} from '../guest/kernel/vclock.js';
import type { Vcpu } from '../guest/vcpu.js';
import { setSpinClock, spinLock, spinTrylock, spinUnlock } from '../guest/mm/spinlock.js';
import { COST_KEYS, type CostTable, S_VC_EVENTS, S_VC_PT, S_VC_TARGETS_LO, packVcEvents } from '../src/abi/vclock.js';
import { S_HEADER_WORDS, slotBase } from '../src/abi/layout.js';
import { costModelsDir, loadCostModel, parseCostModel } from '../src/costmodel.js';
import { DEFAULT_RUN, type RunOptions, runOnce } from '../src/run.js';
import { summaryJson } from '../src/summary.js';

const MiB = 2 ** 20;

/** Round numbers, so each expectation below can be worked out by hand. */
const COSTS: CostTable = {
  hypercall: 250,
  mmuUpdateEntry: 100,
  pinUnpinEntry: 10,
  pageWalkLevel: 10,
  tlbFill: 5,
  localFlushPage: 100,
  localFlushFull: 200,
  ipiSend: 500,
  ipiDeliveryPerTarget: 200,
  ipiHandler: 300,
  ipiAck: 200,
  spinlockUncontended: 20,
  cacheLineTransfer: 100,
  pageZero: 800,
  pageCopy: 1600,
  stepFixed: 1000,
};

interface FakeCpu {
  vcpuId: number;
  slot: number;
  t: Int32Array;
  mmu: { levels: number; walks: number };
  clockEvent: () => void;
  block(): boolean;
  resume(): void;
}

/** nr vCPUs' clocks over one shared buffer, with fake vCPUs (transport slot = vCPU id). */
function machine(nr: number, seed = 1) {
  const sab = new SharedArrayBuffer(vclockBytes());
  resetVclock(sab, nr, seed);
  const t = new Int32Array(slotBase(nr) + S_HEADER_WORDS);
  const cpus: FakeCpu[] = [];
  const clocks: VClock[] = [];
  for (let v = 0; v < nr; v++) {
    const cpu: FakeCpu = {
      vcpuId: v,
      slot: v,
      t,
      mmu: { levels: 3, walks: 0 },
      clockEvent: () => {},
      block: () => true,
      resume: () => {},
    };
    cpus.push(cpu);
    clocks.push(new VClock(sab, cpu as unknown as Vcpu, nr, COSTS, { pagesZeroed: 0, pagesCopied: 0 }));
  }
  const { f, i } = vclockViews(sab);
  return { sab, t, cpus, clocks, f, i };
}

describe('the ordering rule', () => {
  it('runs the runnable vCPU with the smallest clock next', () => {
    const { clocks } = machine(4);
    clocks[0]!.enter(500);
    clocks[0]!.leave();
    clocks[1]!.enter(300);
    clocks[1]!.leave();
    clocks[2]!.enter(200);
    clocks[2]!.leave();
    clocks[3]!.enter(900);
    expect(clocks[3]!.pickNext()).toBe(2);
  });

  it('skips vCPUs blocked on a lock and vCPUs that have left the loop', () => {
    const { clocks, i } = machine(4);
    for (const [v, t] of [
      [0, 100],
      [1, 200],
      [2, 300],
    ] as const) {
      clocks[v]!.enter(t);
      clocks[v]!.leave();
    }
    // I_STATE is the second block of 64 words.
    i[64 + 0] = VC_BLOCKED;
    i[64 + 1] = VC_IDLE;
    clocks[3]!.enter(400);
    expect(clocks[3]!.pickNext()).toBe(2);
  });

  it('breaks ties from the seed: the same seed the same choice, and both tied vCPUs come up over seeds', () => {
    const choice = (seed: number): number => {
      const { clocks } = machine(3, seed);
      clocks[0]!.enter(50);
      clocks[0]!.leave();
      clocks[1]!.enter(50);
      clocks[1]!.leave();
      clocks[2]!.enter(80);
      return clocks[2]!.pickNext();
    };
    expect(choice(7)).toBe(choice(7));
    const seen = new Set(Array.from({ length: 16 }, (_, s) => choice(s + 1)));
    expect([...seen].sort()).toEqual([0, 1]);
  });

  it('keeps the turn while its own clock is the smallest, and hands it on once it is not', () => {
    const { clocks } = machine(2);
    clocks[1]!.enter(1000);
    clocks[1]!.leave();
    clocks[0]!.enter(10);
    expect(clocks[0]!.pickNext()).toBe(0);
    clocks[0]!.charge(7, 1000);
    expect(clocks[0]!.pickNext()).toBe(1);
  });
});

describe('spinlocks in virtual time', () => {
  const word = new Int32Array(new SharedArrayBuffer(64));

  it('an acquirer whose lock was released later than its clock advances to the release time plus a line transfer', () => {
    const { clocks } = machine(2);
    const [a, b] = clocks as [VClock, VClock];
    word.fill(0);
    a.enter(1000);
    a.leave();
    // vCPU 1, the smallest clock at 900, takes the lock and holds it 4,000 ns (no event inside).
    b.enter(900);
    setSpinClock(b);
    spinLock(word, 3, 1);
    expect(b.now).toBe(900 + 20); // uncontended, the line was nobody's
    b.charge(7, 4000);
    spinUnlock(word, 3, 1); // released at 4,920
    b.leave();
    // vCPU 0 at 1,000: the lock is free in memory, but in virtual time it is held until 4,920.
    a.enter(1000);
    setSpinClock(a);
    spinLock(word, 3, 0);
    expect(a.now).toBe(4920 + 100 + 20);
    spinUnlock(word, 3, 0);
    setSpinClock(null);
  });

  it('an uncontended lock last released by this CPU costs only the acquire; by another CPU, a line transfer more', () => {
    const { clocks, i } = machine(2);
    const [a, b] = clocks as [VClock, VClock];
    word.fill(0);
    b.enter(100);
    b.leave();
    a.enter(0);
    setSpinClock(a);
    spinLock(word, 5, 0);
    spinUnlock(word, 5, 0);
    spinLock(word, 5, 0);
    spinUnlock(word, 5, 0);
    expect(a.now).toBe(40);
    a.leave();
    i[64 + 0] = VC_IDLE; // vCPU 0 is done: vCPU 1 may run at 100
    b.enter(100);
    setSpinClock(b);
    spinLock(word, 5, 1);
    expect(b.now).toBe(100 + 100 + 20);
    spinUnlock(word, 5, 1);
    setSpinClock(null);
  });

  it('a trylock fails on a lock released after its clock, and succeeds once its clock has passed it', () => {
    const { clocks, i } = machine(2);
    const [a, b] = clocks as [VClock, VClock];
    word.fill(0);
    a.enter(1000);
    a.leave();
    b.enter(900);
    setSpinClock(b);
    spinLock(word, 7, 1);
    b.charge(7, 2080);
    spinUnlock(word, 7, 1); // released at 3,000
    b.leave();
    i[64 + 1] = VC_IDLE;
    a.enter(1000);
    setSpinClock(a);
    expect(spinTrylock(word, 7, 0)).toBe(false);
    expect(a.now).toBe(1020);
    a.charge(7, 3000); // other work: now 4,020
    expect(spinTrylock(word, 7, 0)).toBe(true);
    expect(a.now).toBe(4020 + 100 + 20);
    spinUnlock(word, 7, 0);
    setSpinClock(null);
  });

  it('a release wakes the vCPUs blocked on that lock at the release time, and only those', () => {
    const { clocks, i, f } = machine(3);
    const [a] = clocks as [VClock, VClock, VClock];
    word.fill(0);
    const key = lockKey(word, 9);
    // vCPUs 1 and 2 are blocked (on this lock, on another) at 1,500 ns.
    for (const v of [1, 2]) {
      clocks[v]!.enter(1500);
      clocks[v]!.leave();
      i[64 + v] = VC_BLOCKED;
    }
    i[128 + 1] = key;
    i[128 + 2] = key ^ 1;
    a.enter(1000);
    setSpinClock(a);
    spinLock(word, 9, 0);
    a.charge(7, 2000); // the critical section
    spinUnlock(word, 9, 0); // released at 3,020
    setSpinClock(null);
    expect(i[64 + 1]).not.toBe(VC_BLOCKED);
    expect(f[1]).toBe(3020);
    expect(i[64 + 2]).toBe(VC_BLOCKED);
    expect(f[2]).toBe(1500);
  });
});

describe('flush IPIs in virtual time', () => {
  it('the sender resumes at the last ack; each target pays the handler; a target ahead acks at its own clock', () => {
    const { clocks, f } = machine(3);
    const [a, b, c] = clocks as [VClock, VClock, VClock];
    b.enter(1000);
    b.leave();
    c.enter(5000);
    c.leave();
    a.enter(1000);
    const spent = a.shootdown(0b110, 0);
    // flush_lock: free and nobody's: 20 -> t0 = 1,020.
    // vCPU 1: arrival 1,020 + 500 + 200 = 1,720, ack 1,720 + 300 = 2,020.
    // vCPU 2: arrival 1,020 + 500 + 400 = 1,920, but it is at 5,000: ack 5,300.
    expect(a.now).toBe(5300 + 200);
    expect(spent).toBe(4500);
    expect(f[1]).toBe(1300);
    expect(f[2]).toBe(5300);
  });

  it("Xen's flush_lock serialises shootdowns: the second waits for the first's last ack", () => {
    const { clocks } = machine(3);
    const [a, b, c] = clocks as [VClock, VClock, VClock];
    c.enter(0);
    c.leave();
    b.enter(0);
    b.shootdown(0b100, 0); // t0 20, arrival 720, ack 1,020, done at 1,220
    expect(b.now).toBe(1220);
    b.leave();
    a.enter(100);
    a.shootdown(0b100, 0);
    // Waits until 1,220, a line transfer (b held it last) and the acquire: t0 = 1,340. vCPU 2
    // is at 600 (two handlers): arrival 1,340 + 700 = 2,040, ack 2,340, done at 2,540.
    expect(a.now).toBe(2540);
    expect(XEN_FLUSH_LOCK).not.toBe(0);
  });

  it('vCPUs that have left the loop get no IPI, and a flush that reaches nobody costs nothing', () => {
    const { clocks, i } = machine(2);
    i[64 + 1] = VC_IDLE;
    clocks[0]!.enter(100);
    expect(clocks[0]!.shootdown(0b10, 0)).toBe(0);
    expect(clocks[0]!.now).toBe(100);
  });

  it("a hypercall is charged from what Xen reported in the slot's words 20-23, at the next event", () => {
    const { clocks, t, f, i } = machine(2);
    const [a, b] = clocks as [VClock, VClock];
    b.enter(50_000);
    b.leave();
    i[64 + 1] = VC_BLOCKED; // still an IPI target, never the next to run: the test keeps the turn
    a.enter(0);
    const base = slotBase(0);
    a.hypercallEvent(); // nothing pending yet: the call runs now
    expect(a.now).toBe(0);
    t[base + S_VC_EVENTS] = packVcEvents(4, 1, 1);
    t[base + S_VC_PT] = 512;
    t[base + S_VC_TARGETS_LO] = 0b10;
    a.stepEnd();
    // stepFixed 1,000; hypercall 250; 4 x 100 + 512 x 10 validation; one full local flush
    // 200; then the shootdown from 6,970: flush_lock 20, arrival 6,990 + 700, vCPU 1 at
    // 50,000 acks at 50,300, the sender resumes at 50,500.
    expect(a.now).toBe(50_500);
    expect(f[1]).toBe(50_300);
  });
});

describe('the shipped cost tables', () => {
  it('default-2008 is pinned: a change to a constant must change this test too', () => {
    const m = loadCostModel('default-2008');
    expect(m.name).toBe('x86-2008');
    expect(m.costs).toEqual({
      hypercall: 250,
      mmuUpdateEntry: 100,
      pinUnpinEntry: 10,
      pageWalkLevel: 10,
      tlbFill: 5,
      localFlushPage: 100,
      localFlushFull: 200,
      ipiSend: 500,
      ipiDeliveryPerTarget: 200,
      ipiHandler: 300,
      ipiAck: 200,
      spinlockUncontended: 20,
      cacheLineTransfer: 100,
      pageZero: 800,
      pageCopy: 1600,
      stepFixed: 1000,
    });
  });

  it('every entry of every shipped table has its value, kind, hardware and source', () => {
    for (const name of ['default-2008', 'server-2023']) {
      const m = loadCostModel(name);
      for (const k of COST_KEYS) {
        const e = m.entries[k];
        expect(e.source.length, `${name}.${k}`).toBeGreaterThan(20);
        expect(e.hardware.length, `${name}.${k}`).toBeGreaterThan(2);
      }
    }
  });

  it('a table with a cost missing, unknown, negative or without a source is refused, naming it', () => {
    const good = JSON.parse(readFileSync(`${costModelsDir()}default-2008.json`, 'utf8'));
    const without = structuredClone(good);
    delete without.costs.ipiAck;
    expect(() => parseCostModel(without, 'x.json')).toThrow(/missing cost "ipiAck"/);
    const extra = structuredClone(good);
    extra.costs.warpDrive = { ns: 1, kind: 'estimate', hardware: 'x', source: 'y' };
    expect(() => parseCostModel(extra, 'x.json')).toThrow(/unknown cost "warpDrive"/);
    const negative = structuredClone(good);
    negative.costs.hypercall.ns = -1;
    expect(() => parseCostModel(negative, 'x.json')).toThrow(/costs.hypercall.ns/);
    const unsourced = structuredClone(good);
    unsourced.costs.tlbFill.source = '';
    expect(() => parseCostModel(unsourced, 'x.json')).toThrow(/costs.tlbFill.source/);
    expect(() => loadCostModel('/no/such/table.json')).toThrow(/--cost-model: no such file/);
  });
});

function vopts(o: Partial<RunOptions>): RunOptions {
  return {
    ...DEFAULT_RUN,
    workload: 'vmap-cycle',
    strategy: 'eager',
    memoryBytes: 128 * MiB,
    vcpus: 4,
    ops: 400,
    clock: 'virtual',
    ...o,
  };
}

describe('whole runs on the virtual clock', () => {
  it('the same run twice gives the same virtual time to the nanosecond; another seed another', async () => {
    // fork-storm: what each step does is drawn from the seed (vmap-cycle is the same every step).
    const o = { workload: 'fork-storm', memoryBytes: 64 * MiB, ops: 400 };
    const a = (await runOnce(vopts({ ...o, seed: 3 }))).summary;
    const b = (await runOnce(vopts({ ...o, seed: 3 }))).summary;
    const c = (await runOnce(vopts({ ...o, seed: 4 }))).summary;
    expect(a.virtualNs).toBeGreaterThan(0);
    expect(b.virtualNs).toBe(a.virtualNs);
    expect(b.breakdown).toEqual(a.breakdown);
    expect(c.virtualNs).not.toBe(a.virtualNs);
  }, 120_000);

  it('recording a run (--record) changes none of its modelled time: the recording hypervisor reports the same events', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'pvmmu-vclock-record-'));
    const o = vopts({ vcpus: 2, ops: 200 });
    const plain = (await runOnce(o)).summary;
    const recorded = (await runOnce({ ...o, record: join(dir, 'run.json') })).summary;
    expect(plain.virtualNs).toBeGreaterThan(0);
    expect(recorded.virtualNs).toBe(plain.virtualNs);
    expect(recorded.breakdown).toEqual(plain.breakdown);
  }, 120_000);

  it('--json carries clock, virtualNs, virtualNsPerOpPerCpu and the breakdown by category', async () => {
    const s = (await runOnce(vopts({ vcpus: 2, ops: 200 }))).summary;
    const j = summaryJson(s);
    expect(j.clock).toBe('virtual');
    expect(j.virtualNsPerOpPerCpu).toBeCloseTo((j.virtualNs! * 2) / 200, 6);
    expect(Object.keys(j.breakdown!)).toEqual([
      'hypercall',
      'validation',
      'pageWalk',
      'localFlush',
      'ipi',
      'lockWait',
      'memory',
      'other',
    ]);
    const sum = Object.values(j.breakdown!).reduce((x, y) => x + y, 0);
    // Every modelled ns is booked under one category (the last vCPU's idle wait excepted).
    expect(sum).toBeGreaterThan(j.virtualNsPerOpPerCpu! * 0.9);
    expect(sum).toBeLessThanOrEqual(j.virtualNsPerOpPerCpu! * 1.0001);
  }, 60_000);

  it("eager's modelled cycle grows with the vCPUs its flushes must reach; unmap-aliases' barely does", async () => {
    const ns = async (strategy: 'eager' | 'unmap-aliases', vcpus: number) =>
      (await runOnce(vopts({ strategy, vcpus, ops: 150 * vcpus }))).summary.virtualNsPerOpPerCpu!;
    const e1 = await ns('eager', 1);
    const e8 = await ns('eager', 8);
    const u1 = await ns('unmap-aliases', 1);
    const u8 = await ns('unmap-aliases', 8);
    expect(e8).toBeGreaterThan(3 * e1);
    expect(u8).toBeLessThan(2 * u1);
    expect(e8 / u8).toBeGreaterThan(e1 / u1);
  }, 180_000);

  it('the fixes still hold: lazy has pins refused, unmap-aliases none (xfs-dirscan, 1 and 8 vCPUs)', async () => {
    for (const vcpus of [1, 8]) {
      const base = { workload: 'xfs-dirscan', memoryBytes: 256 * MiB, vcpus, ops: 600 };
      const lazy = (await runOnce(vopts({ ...base, strategy: 'lazy' }))).summary;
      const fixed = (await runOnce(vopts({ ...base, strategy: 'unmap-aliases' }))).summary;
      expect(lazy.pinsRefused, `lazy, ${vcpus} vCPUs`).toBeGreaterThan(0);
      expect(fixed.pinsRefused, `unmap-aliases, ${vcpus} vCPUs`).toBe(0);
      expect(fixed.auditOk).toBe(true);
    }
  }, 240_000);

  it('refuses --clock virtual with --sched parallel, and more than 64 vCPUs', async () => {
    await expect(runOnce(vopts({ sched: 'parallel' }))).rejects.toThrow(/--clock virtual runs on the det scheduler/);
    await expect(runOnce(vopts({ vcpus: 65 }))).rejects.toThrow(/--vcpus must be an integer in 1\.\.64/);
    await expect(runOnce(vopts({ clock: 'wall', vcpus: 17 }))).rejects.toThrow(/1\.\.64 with --clock virtual/);
  });
});

describe('the stacked breakdown chart (bench report)', () => {
  it('draws one chart per group, one bar per x, one segment and legend entry per category', async () => {
    const { stackedCharts } = await import('../bench/report.js');
    const rows = [1, 8].flatMap((x) =>
      ['ipi', 'lockWait'].map((stack, k) => ({
        case: `eager ${x} ${stack}`,
        value: (k + 1) * x * 100,
        unit: 'ns/cycle',
        group: 'eager: modelled ns per cycle by cost',
        x,
        xLabel: 'vCPUs',
        stack,
      })),
    );
    const charts = stackedCharts(rows);
    expect(charts).toHaveLength(1);
    const svg = charts[0]!;
    expect(svg).toContain('eager: modelled ns per cycle by cost');
    expect(svg.match(/<rect [^>]*><title>/g)).toHaveLength(4);
    expect(svg).toContain('8 vCPUs, lockWait: 1,600');
    expect(svg).toContain('>ipi<');
  });

  it('refuses a bar whose parts do not match the categories', async () => {
    const { stackedBarChart } = await import('../bench/charts.js');
    expect(() =>
      stackedBarChart({ title: 't', valueLabel: 'ns', categories: ['a', 'b'], bars: [{ label: 'x', parts: [1] }] }),
    ).toThrow(/one non-negative part per category/);
  });
});

describe("Xen's report of what a hypercall did (slot header words 20-23)", () => {
  it('counts pin entries, mmu_update entries, local flushes, shootdowns and their targets', async () => {
    const { XenBox } = await import('./helpers/xenbox.js');
    const { MMUEXT_TLB_FLUSH_ALL, MMUEXT_TLB_FLUSH_LOCAL } = await import('../src/abi/xen.js');
    const box = new XenBox();
    const a = box.domain('A', { vcpus: 3 });
    const words = () => {
      const b = slotBase(a.info.slots[0]!);
      const ev = box.t[b + S_VC_EVENTS]!;
      return {
        mmu: ev & 0xffff,
        local: (ev >>> 16) & 0xff,
        shootdowns: ev >>> 24,
        pt: box.t[b + S_VC_PT]!,
        targets: box.t[b + S_VC_TARGETS_LO]!,
      };
    };
    const l1 = a.alloc();
    expect(a.makeReadOnly(l1.pfn)).toBe(0);
    expect(a.pin(1, l1.mfn)).toBe(0);
    // 512 entries validated; the type change (writable -> L1) flushed every vCPU that may
    // hold a stale entry (Xen's tlbflush filter): the caller and vCPUs 1 and 2.
    expect(words()).toEqual({ mmu: 0, local: 1, shootdowns: 1, pt: 512, targets: 0b110 });
    const data = a.alloc();
    const reqs: Array<[number, number, number, number]> = [0, 1, 2].map((i) => [l1.mfn, i, data.mfn * 4096 + 0x63, 0]);
    expect(a.mmuUpdate(reqs).rc).toBe(0);
    expect(words()).toEqual({ mmu: 3, local: 0, shootdowns: 0, pt: 0, targets: 0 });
    expect(a.mmuext([{ cmd: MMUEXT_TLB_FLUSH_LOCAL }]).rc).toBe(0);
    expect(words()).toEqual({ mmu: 0, local: 1, shootdowns: 0, pt: 0, targets: 0 });
    expect(a.mmuext([{ cmd: MMUEXT_TLB_FLUSH_ALL }]).rc).toBe(0);
    expect(words()).toEqual({ mmu: 0, local: 1, shootdowns: 1, pt: 0, targets: 0b110 });
  });
});

describe('the cost tables ship', () => {
  it('npm pack includes cost-models/, where the built host looks for them', async () => {
    const { execFileSync } = await import('node:child_process');
    const root = new URL('..', import.meta.url).pathname;
    const out = execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], {
      cwd: root,
      encoding: 'utf8',
    });
    const files = (JSON.parse(out.slice(out.indexOf('['))) as Array<{ files: Array<{ path: string }> }>)[0]!.files.map(
      (f) => f.path,
    );
    expect(files).toContain('cost-models/default-2008.json');
    expect(files).toContain('cost-models/server-2023.json');
    expect(files).toContain('dist/src/costmodel.js');
  }, 60_000);
});
