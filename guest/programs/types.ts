/*
 * What a guest program is: a function (cpu, params) -> handler, and the handler that serves
 * the controller's requests (src/abi/vcpu.ts has the request and reply shapes).
 */
import type { VcpuRequest } from '../../src/abi/vcpu.js';
import type { Vcpu } from '../vcpu.js';

export type ProgramHandler = (req: VcpuRequest) => unknown;
export type GuestProgram = (cpu: Vcpu, params: unknown) => ProgramHandler | Promise<ProgramHandler>;
export interface ProgramModule {
  default: GuestProgram;
}
