/*
 * The hypercall suite's floors: two warm worker threads, kept for every repetition, each
 * run started behind a ready barrier (both threads spinning, so neither starts cold).
 *
 *  - "spin": both sides spin on one Int32 and nothing else -- two cache-line transfers per
 *    round trip, the absolute lower bound of any cross-thread request/response;
 *  - "transport": the client waits exactly as a vCPU in a hypercall (guest/vcpu.ts) and the
 *    server exactly as the hypervisor's doorbell loop (hypervisor/thread.ts): the same
 *    words (state, doorbell, sleeping flags), the same SpinBudget of src/abi/wait.ts, the
 *    same rules: the server polls the state while it spins, and the client rings the
 *    doorbell only for a sleeping server. A null hypercall costs this plus its dispatch.
 *
 * The host posts {run, mode, rounds, gen} to both; each adds itself to the barrier and
 * spins until both have (2 * gen arrivals in all); the client times `rounds` round trips,
 * then stops the server.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { availableParallelism } from 'node:os';
import { CLOCK_EVERY, SpinBudget } from '../src/abi/wait.js';

export interface PingPongData {
  sab: SharedArrayBuffer;
  role: 'server' | 'client';
}

export type PingPongMode = 'spin' | 'transport';

export interface PingPongRun {
  mode: PingPongMode;
  rounds: number;
  /** Run number, from 1: the barrier waits for 2 * gen arrivals. */
  gen: number;
}

export interface PingPongResult {
  ns: number;
  rounds: number;
  /** Client waits that slept (transport mode). */
  slept: number;
}

/* Words of the shared Int32Array (bench/hypercall.ts allocates 8). */
const STATE = 0; // IDLE / REQUEST / DONE, as a slot's S_STATE
const DOORBELL = 1; // as T_DOORBELL
const SERVER_SLEEPING = 2; // as T_HV_SLEEPING
const CLIENT_WAITING = 3; // as S_WAITING
const STOP = 4;
const BARRIER = 5;
const IDLE = 0;
const REQUEST = 1;
const DONE = 2;
/** As guest/vcpu.ts's HYPERCALL_WAIT_MS. */
const WAIT_MS = 0.1;

const { sab, role } = workerData as PingPongData;
const w = new Int32Array(sab);
/** Two threads: not oversubscribed on 2 cores or more, as a 1-vCPU domain. */
const THREADS = 2;
const budget = new SpinBudget({ cores: availableParallelism() });

function barrier(gen: number): void {
  Atomics.add(w, BARRIER, 1);
  while (Atomics.load(w, BARRIER) < 2 * gen) {}
}

/* ---------------------------------------------------------------- spin mode */

function spinServer(): void {
  for (;;) {
    while (Atomics.load(w, STATE) !== REQUEST) if (Atomics.load(w, STOP) !== 0) return;
    Atomics.store(w, STATE, DONE);
  }
}

function spinClient(rounds: number): PingPongResult {
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) {
    Atomics.store(w, STATE, REQUEST);
    while (Atomics.load(w, STATE) !== DONE) {}
    Atomics.store(w, STATE, IDLE);
  }
  return { ns: Number(process.hrtime.bigint() - t0), rounds, slept: 0 };
}

/* ----------------------------------------------------------- transport mode */

/** hypervisor/thread.ts's doorbell loop, serving one slot: it polls STATE while it spins. */
function transportServer(): void {
  let seen = Atomics.load(w, DOORBELL);
  for (;;) {
    if (Atomics.load(w, STATE) === REQUEST) {
      Atomics.store(w, STATE, DONE);
      if (Atomics.load(w, CLIENT_WAITING) !== 0) Atomics.notify(w, STATE);
    }
    if (Atomics.load(w, STOP) !== 0) return;
    let now: number;
    let n = 0;
    let start = 0;
    let limit = 0;
    let slept = false;
    while ((now = Atomics.load(w, DOORBELL)) === seen && Atomics.load(w, STATE) !== REQUEST) {
      if (++n % CLOCK_EVERY !== 0) continue;
      const clock = performance.now();
      if (start === 0) {
        start = clock;
        limit = budget.limitMs(THREADS);
        continue;
      }
      if (clock - start < limit) continue;
      slept = true;
      Atomics.store(w, SERVER_SLEEPING, 1);
      if (Atomics.load(w, STATE) !== REQUEST) Atomics.wait(w, DOORBELL, seen);
      Atomics.store(w, SERVER_SLEEPING, 0);
    }
    if (start !== 0) budget.record(performance.now() - start, slept);
    seen = now;
  }
}

/** guest/vcpu.ts's hypercall(), without the runstate polls (no flush is ever posted here). */
function transportClient(rounds: number): PingPongResult {
  let sleeps = 0;
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < rounds; i++) {
    Atomics.store(w, STATE, REQUEST);
    if (Atomics.load(w, SERVER_SLEEPING) !== 0) {
      Atomics.add(w, DOORBELL, 1);
      Atomics.notify(w, DOORBELL, 1);
    }
    let n = 0;
    let start = 0;
    let limit = 0;
    let slept = false;
    while (Atomics.load(w, STATE) !== DONE) {
      if (++n % CLOCK_EVERY !== 0) continue;
      const now = performance.now();
      if (start === 0) {
        start = now;
        limit = budget.limitMs(THREADS);
        continue;
      }
      if (now - start < limit) continue;
      slept = true;
      Atomics.store(w, CLIENT_WAITING, 1);
      if (Atomics.load(w, STATE) !== DONE) Atomics.wait(w, STATE, REQUEST, WAIT_MS);
      Atomics.store(w, CLIENT_WAITING, 0);
    }
    if (start !== 0) budget.record(performance.now() - start, slept);
    if (slept) sleeps++;
    Atomics.store(w, STATE, IDLE);
  }
  return { ns: Number(process.hrtime.bigint() - t0), rounds, slept: sleeps };
}

parentPort!.on('message', (m: PingPongRun) => {
  barrier(m.gen);
  if (role === 'server') {
    if (m.mode === 'spin') spinServer();
    else transportServer();
    parentPort!.postMessage({ done: true });
    return;
  }
  const r = m.mode === 'spin' ? spinClient(m.rounds) : transportClient(m.rounds);
  Atomics.store(w, STOP, 1);
  Atomics.add(w, DOORBELL, 1);
  Atomics.notify(w, DOORBELL);
  parentPort!.postMessage(r);
});
