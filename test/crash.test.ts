/*
 * Crash and exhaustion safety:
 *  - vCPU workers killed at random points (inside hypercalls, mid-batch, mid-pin): once
 *    their domain is destroyed every frame is free again, the audit agrees, and the other
 *    domain runs on;
 *  - a bug inside serveSlot (the test-only fault hook) fails that one call with -EFAULT,
 *    is reported to the controller, and the hypervisor goes on serving everyone;
 *  - a guest that exhausts its memory gets Linux's OOM report and its task is killed,
 *    with nothing hung and nothing leaked.
 */
import { describe, expect, it } from 'vitest';
import { FUZZ_DOMAIN_FRAMES, FUZZ_POOL, FuzzRng } from '../src/abi/fuzz.js';
import type { DomainInfo } from '../src/abi/control.js';
import { EFAULT, __HYPERVISOR_sched_op } from '../src/abi/xen.js';
import { Machine, type VcpuHandle } from '../src/machine.js';
import { DEFAULT_RUN, runOnce } from '../src/run.js';

const SEED = Number(process.env.PVMMU_FUZZ_SEED ?? 0x5eed);

function foreignOf(info: DomainInfo): number[] {
  const out: number[] = [];
  for (let k = 0; k < FUZZ_POOL; k++) out.push(info.p2m[info.firstFreePfn + k]!);
  return out;
}

interface Steps {
  calls: number;
}

describe('killed vCPUs', () => {
  for (const paging of ['pae', 'x86_64'] as const) {
    it(`${paging}: a domain whose vCPUs are killed mid-hypercall gives every frame back; the other runs on (seed ${SEED})`, async () => {
      const rng = new FuzzRng(SEED);
      const machine = await Machine.create({ paging, memoryBytes: 16 * 2 ** 20, maxVcpus: 4 });
      try {
        const b = await machine.createDomain({ name: 'B', frames: FUZZ_DOMAIN_FRAMES, vcpus: 1 });
        const free0 = await machine.freeFrames();
        const bv = await machine.startVcpu(b, 0, 'fuzz', { seed: SEED, info: b, foreign: [] });
        let bCalls = 0;
        for (let trial = 0; trial < 6; trial++) {
          const a = await machine.createDomain({ name: `A${trial}`, frames: FUZZ_DOMAIN_FRAMES, vcpus: 2 });
          const foreign = foreignOf(b);
          const av: VcpuHandle[] = [];
          for (let v = 0; v < 2; v++) {
            av.push(await machine.startVcpu(a, v, 'fuzz', { seed: SEED + 100 * trial + v, info: a, foreign }));
          }
          // Both of A's vCPUs hammer the hypervisor (batches, tree pins, flush IPIs to
          // each other) with no end; B works beside them.
          const endless = av.map((h) => h.request<Steps>({ op: 'steps', n: 1e9 }).catch((e: Error) => e));
          const bWork = bv.request<Steps>({ op: 'steps', n: 200 });
          await new Promise((r) => setTimeout(r, 5 + rng.int(60)));
          // Kill one vCPU first, sometimes both at once, while the calls are in flight.
          if (rng.chance(0.5)) await av[rng.int(2)]!.terminate();
          await Promise.all(av.map((h) => h.terminate()));
          for (const e of await Promise.all(endless)) expect(e).toBeInstanceOf(Error);
          await machine.destroyDomain(a.domid);
          const audit = await machine.audit();
          expect(audit.problems).toEqual([]);
          expect(audit.isolationViolations).toBe(0);
          expect(await machine.freeFrames()).toBe(free0);
          bCalls += (await bWork).calls;
          expect(bv.alive).toBe(true);
        }
        // The other domain ran all along, and still does.
        expect(bCalls).toBe(6 * 200);
        expect((await bv.request<Steps>({ op: 'steps', n: 50 })).calls).toBe(50);
        expect(machine.xenBugs).toEqual([]);
        await machine.destroyDomain(b.domid);
        expect((await machine.audit()).ok).toBe(true);
      } finally {
        await machine.shutdown();
      }
    });
  }
});

describe('a bug inside the hypervisor', () => {
  it('an exception in serveSlot fails that call with -EFAULT, is reported, and everyone else is served', async () => {
    const machine = await Machine.create({ memoryBytes: 16 * 2 ** 20, maxVcpus: 4 });
    try {
      const a = await machine.createDomain({ name: 'A', frames: 256, vcpus: 1 });
      const b = await machine.createDomain({ name: 'B', frames: 256, vcpus: 1 });
      const av = await machine.startVcpu(a, 0, 'script', {});
      const bv = await machine.startVcpu(b, 0, 'script', {});
      const yieldCall = { op: 'hypercall', nr: __HYPERVISOR_sched_op, args: [0], data: [], readback: [] };
      expect((await av.request<{ rc: number }>(yieldCall)).rc).toBe(0);
      await machine.injectFault(a.slots[0]!);
      expect((await av.request<{ rc: number }>(yieldCall)).rc).toBe(-EFAULT);
      // Reported to the controller, with the slot and the exception.
      await expect.poll(() => machine.xenBugs.length).toBe(1);
      expect(machine.xenBugs[0]).toMatch(/^slot \d+: Error: injected fault: serveSlot\(\d+\) threw/);
      // The other domain, and the same vCPU again, are served as before.
      expect((await bv.request<{ rc: number }>(yieldCall)).rc).toBe(0);
      expect((await av.request<{ rc: number }>(yieldCall)).rc).toBe(0);
      expect(machine.xenBugs).toHaveLength(1);
      expect((await machine.audit()).ok).toBe(true);
    } finally {
      await machine.shutdown();
    }
  });

  it('the fault hook names the slots it accepts', async () => {
    const machine = await Machine.create({ memoryBytes: 16 * 2 ** 20, maxVcpus: 4 });
    try {
      await expect(machine.injectFault(4)).rejects.toThrow(/injectFault: slot must be an integer in 0\.\.3, got 4/);
    } finally {
      await machine.shutdown();
    }
  });
});

describe('a guest that exhausts its memory', () => {
  it("gets Linux's OOM report and its task is killed; nothing hangs, nothing leaks", async () => {
    const { summary: s } = await runOnce({
      ...DEFAULT_RUN,
      workload: 'oom-hog',
      memoryBytes: 32 * 2 ** 20,
      vcpus: 1,
      ops: 500,
      progress: false,
    });
    // The OOM killer's reports, as data (kind 'oom') and in the summary's lines.
    expect(s.reportCounts?.oom).toBeGreaterThan(0);
    expect(s.reports?.some((r) => r.kind === 'oom')).toBe(true);
    const oom = s.guestReports.filter((l) => l.startsWith('Out of memory'));
    expect(oom.length).toBeGreaterThan(0);
    expect(oom[0]).toMatch(
      /^Out of memory \(oom_kill_allocating_task\): kill process \d+ \(task\d+\) score \d+ or a child$/,
    );
    const pid = /kill process (\d+)/.exec(oom[0]!)![1];
    expect(s.guestReports).toContain(`Killed process ${pid} (task${pid})`);
    expect(s.workloadStats!.tasksKilled).toBeGreaterThan(0);
    expect(s.workloadStats!.tasksKilled).toBe(s.workloadStats!.oomFailedExecs);
    expect(s.leakedFrames).toBe(0);
    expect(s.auditOk).toBe(true);
  });

  it('with memory to spare the same workload kills nobody', async () => {
    const { summary: s } = await runOnce({
      ...DEFAULT_RUN,
      workload: 'oom-hog',
      memoryBytes: 256 * 2 ** 20,
      vcpus: 1,
      ops: 100,
      progress: false,
    });
    expect(s.guestReports.filter((l) => l.startsWith('Out of memory'))).toEqual([]);
    expect(s.reportCounts?.oom ?? 0).toBe(0);
    expect(s.workloadStats!.tasksKilled).toBe(0);
    expect(s.leakedFrames).toBe(0);
    expect(s.auditOk).toBe(true);
  });
});
