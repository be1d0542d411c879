/*
 * The vCPU worker entry: the only file in guest/ that touches worker_threads. It builds
 * the vCPU runtime from workerData, starts the named program and serves the
 * controller's requests one at a time.
 *
 * Between requests the vCPU is blocked (not RUNNING): shootdowns do not wait for an idle
 * worker, which flushes when it next runs. A GuestPanic kills the worker (after replying),
 * and the controller destroys the domain; other errors are replied to their request.
 */
import { availableParallelism, platform, setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { GuestPanic, Vcpu } from './vcpu.js';
import type { VcpuWorkerData, VcpuEvent, VcpuReply, VcpuRequest } from '../src/abi/vcpu.js';
import { loadProgram } from './programs/index.js';
import { vcpuNiceFromEnv } from '../src/abi/wait.js';

const port = parentPort;
if (port === null) throw new Error('guest/vcpu-worker.js must run as a worker thread');
const init = workerData as VcpuWorkerData;

// Below the hypervisor thread's priority (src/abi/wait.ts, VCPU_NICE) when this domain's
// vCPUs and the hypervisor outnumber the cores: on Linux this thread's alone. Raising
// one's nice needs no privilege; if it fails, run as we are.
const nice = vcpuNiceFromEnv(process.env.PVMMU_VCPU_NICE);
if (nice > 0 && platform() === 'linux' && init.info.vcpus + 1 > availableParallelism()) {
  try {
    setPriority(nice);
  } catch {
    /* not permitted here: the default priority */
  }
}

const cpu = new Vcpu(init);
const program = await loadProgram(init.program);
cpu.resume();
const handler = await program(cpu, init.params);
cpu.block();

function errorReply(id: number, e: unknown): VcpuReply {
  const err = e instanceof Error ? e : new Error(String(e));
  return { id, ok: false, error: err.message, name: err.name };
}

async function serve(req: VcpuRequest): Promise<void> {
  let reply: VcpuReply;
  cpu.resume();
  try {
    reply = { id: req.id, ok: true, value: await handler(req) };
  } catch (e) {
    reply = errorReply(req.id, e);
    if (e instanceof GuestPanic) {
      port!.postMessage(reply);
      throw e; // out of the queue: an uncaught error ends the worker
    }
  } finally {
    cpu.block();
  }
  try {
    port!.postMessage(reply);
  } catch (e) {
    port!.postMessage(errorReply(req.id, e)); // a value that cannot be cloned
  }
}

let queue: Promise<void> = Promise.resolve();
port.on('message', (req: VcpuRequest) => {
  queue = queue.then(() => serve(req));
});
port.postMessage({ event: 'ready' } satisfies VcpuEvent);
