/*
 * A running guest kernel, seen from the controller: boot a domain's vCPUs (the boot vCPU
 * first, the others once it has made the shared state), run a workload on all of them,
 * gather their numbers, and shut them down.
 */
import type { DomainInfo } from './abi/control.js';
import {
  type GuestReport,
  type GuestReportKind,
  type KernelConfig,
  type KernelShared,
  C_OPS,
  COUNTERS_BASE,
} from './abi/kernel.js';
import type { Machine, VcpuHandle } from './machine.js';

const OPS_WORD = COUNTERS_BASE + C_OPS;

export interface GuestCpuStats {
  cpu: number;
  counters: Record<string, number>;
  kpt: { ptesSet: number; batches: number; shootdowns: number; localFlushes: number; failures: number };
  vmalloc: {
    vmaps: number;
    vunmaps: number;
    lazyPeakPages: number;
    purges: number;
    flushes: number;
    [k: string]: unknown;
  };
  highmem: Record<string, number> | null;
  freePages: number;
  badPages: number;
  hypercalls: number;
  flushes: number;
  ipis: number;
  workload: Record<string, number>;
  messages: string[];
  /** printk lines printed since boot (kept or dropped). */
  messagesTotal?: number;
  /** The kernel's reports as data (bad_page, BUG, oops, ...): the first few, and counts by kind. */
  reports: GuestReport[];
  reportCounts: Partial<Record<GuestReportKind, number>>;
}

/** What one vCPU's run returns (guest/workloads/driver.ts RunResult). */
export interface GuestCpuRun {
  steps: number;
  loopNs: number;
  /** --clock virtual: its virtual clock at the end, and ns by category (src/abi/vclock.ts). */
  virtualNs?: number;
  breakdown?: number[];
  turnSwitches?: number;
}

export class Guest {
  readonly info: DomainInfo;
  readonly cfg: KernelConfig;
  readonly #vcpus: VcpuHandle[];
  /** Free pages right after boot: what a clean shutdown must give back. */
  readonly bootFreePages: number;
  /** What the boot vCPU printed while booting, and how many lines that was. */
  readonly bootMessages: string[];
  readonly bootMessagesTotal: number;
  /** The kernel's own state words (read-only here: for progress). */
  readonly #kern: Int32Array;

  private constructor(
    info: DomainInfo,
    cfg: KernelConfig,
    vcpus: VcpuHandle[],
    bootFree: number,
    shared: KernelShared,
    boot: { messages: string[]; total: number },
  ) {
    this.bootMessages = boot.messages;
    this.bootMessagesTotal = boot.total;
    this.info = info;
    this.cfg = cfg;
    this.#vcpus = vcpus;
    this.bootFreePages = bootFree;
    this.#kern = new Int32Array(shared.kern);
  }

  /** Steps done so far in the current run (all vCPUs). */
  stepsDone(): number {
    return Atomics.load(this.#kern, OPS_WORD);
  }

  static async boot(machine: Machine, info: DomainInfo, cfg: KernelConfig): Promise<Guest> {
    if (cfg.vcpus !== info.vcpus)
      throw new RangeError(`kernel config says ${cfg.vcpus} vCPUs, the domain has ${info.vcpus}`);
    const boot = await machine.startVcpu(info, 0, 'kernel', { cfg });
    const shared = await boot.request<KernelShared>({ op: 'shared' });
    const vcpus = [boot];
    // The others attach to what vCPU 0 made, independently: start them together (64 one after
    // another took ~20 s of worker start-up here).
    const others = Array.from({ length: info.vcpus - 1 }, (_, i) =>
      machine.startVcpu(info, i + 1, 'kernel', { cfg, shared }),
    );
    vcpus.push(...(await Promise.all(others)));
    const st = await boot.request<GuestCpuStats>({ op: 'stats' });
    return new Guest(info, cfg, vcpus, st.freePages, shared, {
      messages: st.messages.map((m) => `cpu0: ${m}`),
      total: st.messagesTotal ?? st.messages.length,
    });
  }

  /**
   * Run `ops` steps of a workload over all vCPUs. Resolves with the wall time in ms (with
   * set-up and tear-down) and each vCPU's steps and step-loop time.
   */
  async run(
    workload: string,
    ops: number,
    sched: 'parallel' | 'det',
    seed: number,
    options: Record<string, unknown> = {},
    clock: 'wall' | 'virtual' = 'wall',
  ): Promise<{ wallMs: number; perCpu: GuestCpuRun[] }> {
    await this.#vcpus[0]!.request({ op: 'reset-sched', seed });
    const t0 = performance.now();
    const perCpu = await Promise.all(
      this.#vcpus.map((h) => h.request<GuestCpuRun>({ op: 'run', workload, ops, sched, seed, options, clock })),
    );
    return { wallMs: performance.now() - t0, perCpu };
  }

  async stats(): Promise<GuestCpuStats[]> {
    return Promise.all(this.#vcpus.map((h) => h.request<GuestCpuStats>({ op: 'stats' })));
  }

  /** Each vCPU's trace recording (when booted with cfg.trace). */
  async traces(): Promise<Array<{ buffer: SharedArrayBuffer; names: { names: string[]; argNames: string[] } }>> {
    const out = await Promise.all(
      this.#vcpus.map((h) =>
        h.request<{ buffer: SharedArrayBuffer; names: { names: string[]; argNames: string[] } } | null>({
          op: 'trace',
        }),
      ),
    );
    return out.filter((t): t is NonNullable<typeof t> => t !== null);
  }

  async shutdown(): Promise<void> {
    await Promise.all(this.#vcpus.map((h) => h.terminate()));
  }
}
