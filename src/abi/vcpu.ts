/*
 * The vCPU worker protocol: how the host starts a vCPU thread (workerData) and talks to
 * the guest program running on it (one request at a time, one reply each), and the names
 * of the guest programs a worker can run. The host knows guest programs only by these
 * names; the guest's registry (guest/programs/index.ts) is typed by them.
 */
import type { DomainInfo } from './control.js';

/** The guest programs a vCPU worker can run (guest/programs/). */
export const PROGRAM_NAMES = ['bench', 'kernel', 'ping', 'script', 'victim'] as const;
export type ProgramName = (typeof PROGRAM_NAMES)[number];

/** What a vCPU is built from (the worker's workerData, minus the program). */
export interface VcpuInit {
  mem: SharedArrayBuffer;
  transport: SharedArrayBuffer;
  /** Transport slot (info.slots[vcpu]). */
  slot: number;
  info: DomainInfo;
  /** vCPU id within the domain. */
  vcpu: number;
  /** MMU debug self-check (default: env PVMMU_TLB_CHECK === '1'). */
  tlbCheck?: boolean;
}

/** workerData of a vCPU worker: the vCPU, and the program to start on it. */
export interface VcpuWorkerData extends VcpuInit {
  program: string;
  params: unknown;
}

/** A request from the controller. */
export interface VcpuRequest {
  id: number;
  op: string;
  [key: string]: unknown;
}

export type VcpuReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: string; name: string };

/** What a worker tells its controller besides replies. */
export type VcpuEvent = { event: 'ready' };
