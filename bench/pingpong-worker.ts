/*
 * The raw floor for the hypercall transport: two threads ping-ponging on one Int32 with
 * the same discipline as a vCPU and the hypervisor (spin briefly, then Atomics.wait).
 * Measured in the same run as the hypercall round trip, it is what that is judged by.
 *
 * Word 0: the ball (0 = server's turn... odd = request, even = reply). Word 1: stop.
 */
import { parentPort, workerData } from 'node:worker_threads';

export interface PingPongData {
  sab: SharedArrayBuffer;
  role: 'server' | 'client';
  rounds: number;
  spins: number;
}

const { sab, role, rounds, spins } = workerData as PingPongData;
const w = new Int32Array(sab);

function waitFor(idx: number, want: number): void {
  for (let i = 0; i < spins; i++) if (Atomics.load(w, idx) === want) return;
  for (;;) {
    const v = Atomics.load(w, idx);
    if (v === want) return;
    Atomics.wait(w, idx, v, 1000);
  }
}

if (role === 'server') {
  // Serve until told to stop: reply to every odd value with the next even one.
  let expect = 1;
  for (;;) {
    waitFor(0, expect);
    if (Atomics.load(w, 1) !== 0) break;
    Atomics.store(w, 0, expect + 1);
    Atomics.notify(w, 0);
    expect += 2;
  }
  parentPort!.postMessage({ done: true });
} else {
  let v = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) {
    Atomics.store(w, 0, v + 1);
    Atomics.notify(w, 0);
    waitFor(0, v + 2);
    v += 2;
  }
  const ns = Number(process.hrtime.bigint() - t0);
  Atomics.store(w, 1, 1);
  Atomics.store(w, 0, v + 1);
  Atomics.notify(w, 0);
  parentPort!.postMessage({ ns, rounds });
}
