/*
 * victim: the kernel of a domain that keeps a secret -- the other domain of the
 * stray-write demonstration. It writes its secret (seeded) into its first free page
 * through its own direct map, as its kernel would, and tells the controller which machine
 * frame that is: what a hostile neighbour would try to reach. Requests:
 *   plant {seed}   -> {mfn, secret}
 */
import { layoutFor } from '../../src/abi/layout.js';
import { PAGE_SIZE } from '../../src/abi/xen.js';
import type { Vcpu } from '../vcpu.js';
import type { ProgramHandler } from './types.js';

/** The secret of the victim of run `seed`. */
export function victimSecret(seed: number): number {
  return (0x5ec2e7 ^ seed) >>> 0;
}

export default function victim(cpu: Vcpu): ProgramHandler {
  return (req) => {
    if (req.op !== 'plant') throw new TypeError(`victim: unknown op "${req.op}"; accepted: plant`);
    const seed = req.seed;
    if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0)
      throw new TypeError(`victim plant: seed must be a non-negative integer (got ${String(seed)})`);
    const info = cpu.info;
    const secret = victimSecret(seed);
    const va = layoutFor(info.paging).pageOffset + info.firstFreePfn * PAGE_SIZE;
    if (cpu.mmu.store32(va, secret) < 0) throw new Error(`victim: its own page at ${va.toString(16)} faulted`);
    return { mfn: info.p2m[info.firstFreePfn]!, secret };
  };
}
