/*
 * The guest's clock. Time in the guest is virtual: one workload step is one millisecond,
 * counted globally over all vCPUs (the op counter of the shared kernel state), so that a
 * timer such as xfsbufd's fires at the same step in every run of a seed. jiffies count
 * ticks of that clock at HZ per second.
 */
import { C_OPS, COUNTERS_BASE } from '../../src/abi/kernel.js';

/** Ticks per second of guest time (CONFIG_HZ_100, the 2.6.2x default). */
export const HZ = 100;
/** Guest milliseconds per workload step. */
export const MS_PER_STEP = 1;
/** Workload steps per tick: 1000 / HZ / MS_PER_STEP = 10. */
export const STEPS_PER_TICK = 1000 / HZ / MS_PER_STEP;

/** jiffies after `steps` steps of the whole guest. */
export function jiffiesAt(steps: number): number {
  return Math.floor(steps / STEPS_PER_TICK);
}

/** jiffies now, from the kernel state's shared words (KernState.w). */
export function jiffies(w: Int32Array): number {
  return jiffiesAt(Atomics.load(w, COUNTERS_BASE + C_OPS));
}
