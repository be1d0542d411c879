/*
 * mm/oom_kill.c, reduced: when a page fault cannot get a page, out_of_memory() reports as
 * Linux 2.6.2x does and kills a task. The victim is the allocating task
 * (vm.oom_kill_allocating_task, 2.6.24): the one that faulted, whose badness score is its
 * memory -- its user pages and its page-table pages. The caller (the fault path in
 * mm/memory.ts) tears the task down once the fault has unwound, so nothing it held leaks.
 *
 * The page allocator is not touched: this hooks the caller of a failed allocation.
 */
import { C_TASKS_KILLED } from '../../src/abi/kernel.js';
import type { Kernel } from '../kernel/kernel.js';
import { T_NPAGES, T_PMD, T_PTE } from '../kernel/state.js';

/** Tasks chosen by the OOM killer and not yet torn down (per kernel). */
const victims = new WeakMap<Kernel, Set<number>>();

/** The task's comm, as the reports print it. */
export function taskComm(t: number): string {
  return `task${t}`;
}

/** badness(): the pages the task holds, page tables included. */
function badness(k: Kernel, t: number): number {
  const w = k.state.w;
  let points = w[k.state.t(t, T_NPAGES)]! + 1; // + the pgd
  if (w[k.state.t(t, T_PTE)]! >= 0) points++;
  for (let i = 0; i < 4; i++) if (w[k.state.t(t, T_PMD + i)]! >= 0) points++;
  return points;
}

/** out_of_memory(): report, and mark the allocating task `t` to be killed. */
export function outOfMemory(k: Kernel, t: number, gfpMask: number, order: number): void {
  const comm = taskComm(t);
  k.report('oom', [
    `${comm} invoked oom-killer: gfp_mask=0x${gfpMask.toString(16)}, order=${order}, oomkilladj=0`,
    `Out of memory (oom_kill_allocating_task): kill process ${t} (${comm}) score ${badness(k, t)} or a child`,
    `Killed process ${t} (${comm})`,
  ]);
  k.state.count(C_TASKS_KILLED);
  let set = victims.get(k);
  if (set === undefined) victims.set(k, (set = new Set()));
  set.add(t);
}

/** Was `t` killed by the OOM killer? Clears the mark (the caller now tears it down). */
export function takeOomVictim(k: Kernel, t: number): boolean {
  return victims.get(k)?.delete(t) === true;
}
