/*
 * kernel: the guest kernel as a vCPU program. vCPU 0 boots (formats the shared state
 * and builds the kernel page tables) when started without `shared`; the others attach
 * to what it made. Requests:
 *   shared                         -> the buffers to hand to the other vCPUs
 *   reset-sched                    before a run (sent to one vCPU): turn 0, step count 0
 *   run {workload, ops, sched, seed, options}  -> this vCPU's steps of the workload
 *   stats                          -> counters, vmalloc/highmem/allocator numbers, messages
 */
import type { Vcpu } from '../vcpu.js';
import { Kernel } from '../kernel/kernel.js';
import type { KernelShared, KernelConfig } from '../../src/abi/kernel.js';
import { type Clock, resetScheduler, runWorkload, type Sched, type Workload } from '../workloads/driver.js';
import { makeWorkload } from '../workloads/index.js';
import type { ProgramHandler } from './types.js';

export interface KernelParams {
  cfg: KernelConfig;
  shared?: KernelShared;
}

export default function kernel(cpu: Vcpu, params: unknown): ProgramHandler {
  const p = params as KernelParams;
  const mem = cpu.mmu.mem32.buffer as SharedArrayBuffer;
  const k = p.shared ? Kernel.attach(cpu, mem, p.cfg, p.shared) : Kernel.boot(cpu, mem, p.cfg);
  let last: Workload | null = null;
  let messagesSent = 0;
  return (req) => {
    switch (req.op) {
      case 'shared':
        return k.shared;
      case 'trace':
        return k.traceBuffer === null ? null : { buffer: k.traceBuffer, names: k.trace!.names.toJSON() };
      case 'reset-sched':
        resetScheduler(k, typeof req.seed === 'number' ? req.seed : k.cfg.seed);
        return {};
      case 'run': {
        const wl = makeWorkload(String(req.workload), (req.options ?? {}) as Record<string, unknown>);
        last = wl;
        return runWorkload(
          k,
          wl,
          Number(req.ops),
          req.sched as Sched,
          Number(req.seed),
          req.clock as Clock | undefined,
        );
      }
      case 'stats': {
        const messages = k.log.since(messagesSent);
        messagesSent = k.log.total;
        return {
          cpu: k.id,
          counters: k.state.counters(),
          kpt: k.kpt.stats,
          vmalloc: k.vmalloc.stats(),
          highmem: k.highmem?.stats() ?? null,
          freePages: k.pa.nrFreePages(),
          badPages: k.pa.nrBadPages(),
          slabPages: k.slab.nrSlabPages(),
          hypercalls: cpu.hypercalls,
          flushes: cpu.flushes,
          ipis: cpu.ipis,
          workload: last?.stats() ?? {},
          messages,
          messagesTotal: k.log.total,
          reports: k.reports,
          reportCounts: k.reportCounts,
        };
      }
      default:
        throw new TypeError(`kernel: unknown op "${req.op}"; accepted: shared, run, stats`);
    }
  };
}
