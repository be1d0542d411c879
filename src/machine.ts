/*
 * Machine: the public facade. Creates machine memory and the transport, starts the
 * hypervisor thread, creates domains and runs their vCPUs on worker threads.
 *
 * Options are validated with TypeError/RangeError messages that say what is accepted;
 * the machinery lives in #private fields. Workers always run compiled JS from dist/
 * (build with `npx tsc -p tsconfig.json`), also when this file is loaded as TypeScript.
 *
 * A vCPU worker that throws or exits without being asked takes its domain with it: the
 * domain's other vCPUs are stopped and the domain destroyed, its frames freed.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { PAGE_SIZE, PAGING_MODES, type PagingMode } from './abi/xen.js';
import {
  RS_FLUSH_ANY,
  RS_RUNNING,
  S_RUNSTATE,
  T_CONTROL,
  T_DOORBELL,
  T_MAX_SLOTS,
  slotBase,
  transportBytes,
} from './abi/layout.js';
import type {
  AuditReport,
  DomainConfig,
  DomainInfo,
  Recording,
  XenControlReply,
  XenControlRequest,
  XenLogRecord,
  XenStats,
  XenThreadData,
  XenThreadEvent,
} from './abi/control.js';
import { PROGRAM_NAMES, type VcpuEvent, type VcpuReply, type VcpuWorkerData } from './abi/vcpu.js';

export interface MachineOptions {
  /** 'pae' (default) or 'x86_64'. */
  paging?: PagingMode;
  /** Machine memory: a multiple of 4096 from 16 MiB to 2 GiB; default 256 MiB. */
  memoryBytes?: number;
  /** Transport slots, i.e. vCPUs over all domains: 1..1024, default 64. */
  maxVcpus?: number;
  /** Enforce the writable-page rule (default true; false only for demonstrations). */
  enforce?: boolean;
  /** Record every hypercall as a script step (takeRecording); default false. */
  record?: boolean;
}

/** How a vCPU worker ended. */
export interface VcpuExit {
  code: number;
  /** The error it threw, if any. */
  error?: Error;
  /** False when it died on its own: its domain was then destroyed. */
  expected: boolean;
}

/** A running vCPU. */
export interface VcpuHandle {
  readonly domid: number;
  readonly vcpu: number;
  readonly slot: number;
  readonly alive: boolean;
  /** A request to the guest program (postMessage round trip: control and bulk only). */
  request<T = unknown>(msg: { op: string; [key: string]: unknown }): Promise<T>;
  /** Stop the worker (its domain lives on). */
  terminate(): Promise<void>;
  /** Settles once the worker is gone and, after an unexpected exit, its domain destroyed. */
  readonly exited: Promise<VcpuExit>;
}

const MiB = 1024 * 1024;
const MIN_MEMORY = 16 * MiB;
const MAX_MEMORY = 2048 * MiB;
const MAX_SLOTS = 1024;
const DEFAULTS = { paging: 'pae' as PagingMode, memoryBytes: 256 * MiB, maxVcpus: 64, enforce: true, record: false };
const OPTION_KEYS = Object.keys(DEFAULTS);

/**
 * Compiled entry file `rel` (e.g. 'guest/vcpu-worker.js'): beside us in dist/, or in <repo>/dist
 * from src/. The host starts the hypervisor, the vCPUs and the benchmarks by path, never by import.
 */
export function distEntry(rel: string): URL {
  const here = import.meta.url;
  const url = here.endsWith('.ts') ? new URL(`../dist/${rel}`, here) : new URL(`../${rel}`, here);
  if (!existsSync(fileURLToPath(url))) {
    throw new Error(`${fileURLToPath(url)} is missing: build first with \`npx tsc -p tsconfig.json\``);
  }
  return url;
}

function validateOptions(opts: unknown): Required<MachineOptions> {
  if (opts === null || typeof opts !== 'object') {
    throw new TypeError(`Machine.create: options must be an object (accepted keys: ${OPTION_KEYS.join(', ')})`);
  }
  const o = opts as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!OPTION_KEYS.includes(k)) {
      throw new TypeError(`Machine.create: unknown option "${k}"; accepted: ${OPTION_KEYS.join(', ')}`);
    }
  }
  const paging = o.paging ?? DEFAULTS.paging;
  if (typeof paging !== 'string' || !(PAGING_MODES as readonly string[]).includes(paging)) {
    throw new TypeError(
      `paging must be one of ${PAGING_MODES.map((m) => `'${m}'`).join(', ')} (got ${String(paging)})`,
    );
  }
  const memoryBytes = o.memoryBytes ?? DEFAULTS.memoryBytes;
  if (typeof memoryBytes !== 'number' || !Number.isInteger(memoryBytes)) {
    throw new TypeError(`memoryBytes must be an integer number of bytes (got ${String(memoryBytes)})`);
  }
  if (memoryBytes % PAGE_SIZE !== 0 || memoryBytes < MIN_MEMORY || memoryBytes > MAX_MEMORY) {
    throw new RangeError(
      `memoryBytes must be a multiple of ${PAGE_SIZE} from ${MIN_MEMORY} (16 MiB) to ${MAX_MEMORY} (2 GiB) (got ${memoryBytes})`,
    );
  }
  const maxVcpus = o.maxVcpus ?? DEFAULTS.maxVcpus;
  if (typeof maxVcpus !== 'number' || !Number.isInteger(maxVcpus)) {
    throw new TypeError(`maxVcpus must be an integer (got ${String(maxVcpus)})`);
  }
  if (maxVcpus < 1 || maxVcpus > MAX_SLOTS) {
    throw new RangeError(`maxVcpus must be from 1 to ${MAX_SLOTS} (got ${maxVcpus})`);
  }
  const enforce = o.enforce ?? DEFAULTS.enforce;
  if (typeof enforce !== 'boolean') throw new TypeError(`enforce must be a boolean (got ${String(enforce)})`);
  const record = o.record ?? DEFAULTS.record;
  if (typeof record !== 'boolean') throw new TypeError(`record must be a boolean (got ${String(record)})`);
  return { paging: paging as PagingMode, memoryBytes, maxVcpus, enforce, record };
}

/** An Error of the thrower's class (TypeError, RangeError, ...) from a reply. */
function remoteError(name: string, message: string): Error {
  const e =
    name === 'TypeError'
      ? new TypeError(message)
      : name === 'RangeError'
        ? new RangeError(message)
        : new Error(message);
  if (e.name !== name) e.name = name;
  return e;
}

/** A control request before the controller numbers it. */
type Unnumbered<T> = T extends unknown ? Omit<T, 'id'> : never;

interface Pending {
  resolve(value: unknown): void;
  reject(e: Error): void;
}

/** Settle the request a reply answers (a vCPU's or the hypervisor thread's). */
function settle(
  pending: Map<number, Pending>,
  m: { id: number; ok: true; value: unknown } | { id: number; ok: false; error: string; name: string },
): void {
  const p = pending.get(m.id);
  if (p === undefined) return;
  pending.delete(m.id);
  if (m.ok) p.resolve(m.value);
  else p.reject(remoteError(m.name, m.error));
}

/** The controller's side of one vCPU worker. */
class VcpuThread implements VcpuHandle {
  readonly domid: number;
  readonly vcpu: number;
  readonly slot: number;
  readonly exited: Promise<VcpuExit>;
  /** Set when the controller stops it (terminate, destroyDomain, shutdown). */
  expected = false;
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  #nextId = 0;
  #alive = true;
  #error: Error | undefined;

  constructor(
    info: DomainInfo,
    vcpu: number,
    data: VcpuWorkerData,
    onReady: (e?: Error) => void,
    onExit: (h: VcpuThread, exit: VcpuExit) => Promise<void>,
  ) {
    this.domid = info.domid;
    this.vcpu = vcpu;
    this.slot = data.slot;
    this.#worker = new Worker(distEntry('guest/vcpu-worker.js'), { workerData: data });
    this.#worker.on('message', (m: VcpuReply | VcpuEvent) => {
      if ('event' in m) {
        if (m.event === 'ready') onReady();
        return;
      }
      settle(this.#pending, m);
    });
    this.#worker.on('error', (e) => {
      this.#error ??= e;
    });
    this.exited = new Promise((resolve) => {
      this.#worker.once('exit', (code) => {
        this.#alive = false;
        const exit: VcpuExit = { code, expected: this.expected, ...(this.#error ? { error: this.#error } : {}) };
        const why = this.#error ?? new Error(`vCPU ${this.vcpu} of domain ${this.domid} exited (code ${code})`);
        for (const p of this.#pending.values()) p.reject(why);
        this.#pending.clear();
        onReady(why);
        onExit(this, exit).then(
          () => resolve(exit),
          () => resolve(exit),
        );
      });
    });
  }

  get alive(): boolean {
    return this.#alive;
  }

  request<T = unknown>(msg: { op: string; [key: string]: unknown }): Promise<T> {
    if (!this.#alive) return Promise.reject(new Error(`vCPU ${this.vcpu} of domain ${this.domid} is not running`));
    const id = ++this.#nextId;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      try {
        this.#worker.postMessage({ ...msg, id });
      } catch (e) {
        this.#pending.delete(id); // a message that cannot be cloned
        throw e;
      }
    });
  }

  async terminate(): Promise<void> {
    this.expected = true;
    if (this.#alive) await this.#worker.terminate();
    await this.exited;
  }
}

export class Machine {
  readonly paging: PagingMode;
  readonly frames: number;
  readonly enforce: boolean;
  readonly maxVcpus: number;
  /** Machine memory (frames * 4096 bytes) and the transport. */
  readonly mem: SharedArrayBuffer;
  readonly transport: SharedArrayBuffer;
  /** serveSlot exceptions reported by the hypervisor thread (Xen bugs, never guest input). */
  readonly xenBugs: string[] = [];

  readonly #t: Int32Array;
  readonly #hv: Worker;
  readonly #port: MessagePort;
  readonly #pending = new Map<number, Pending>();
  #nextId = 0;
  readonly #domains = new Map<number, DomainInfo>();
  readonly #vcpus = new Set<VcpuThread>();
  readonly #destroying = new Map<number, Promise<void>>();
  #hvExited = false;
  #shutdown: Promise<void> | undefined;

  private constructor(
    o: Required<MachineOptions>,
    hv: Worker,
    port: MessagePort,
    mem: SharedArrayBuffer,
    transport: SharedArrayBuffer,
  ) {
    this.paging = o.paging;
    this.frames = o.memoryBytes / PAGE_SIZE;
    this.enforce = o.enforce;
    this.maxVcpus = o.maxVcpus;
    this.mem = mem;
    this.transport = transport;
    this.#t = new Int32Array(transport);
    this.#hv = hv;
    this.#port = port;
    port.on('message', (m: XenControlReply | XenThreadEvent) => this.#onHvMessage(m));
    let crash: Error | undefined;
    hv.on('error', (e) => {
      crash = e;
    });
    hv.on('exit', () => {
      this.#hvExited = true;
      const e = new Error(`the hypervisor thread has stopped${crash ? `: ${crash.message}` : ''}`);
      for (const p of this.#pending.values()) p.reject(e);
      this.#pending.clear();
      port.close();
      // Nobody will answer their hypercalls any more.
      for (const h of this.#vcpus) void h.terminate();
    });
  }

  /** Start a machine: memory, transport and the hypervisor thread. */
  static async create(opts: MachineOptions = {}): Promise<Machine> {
    const o = validateOptions(opts);
    const mem = new SharedArrayBuffer(o.memoryBytes);
    const transport = new SharedArrayBuffer(transportBytes(o.maxVcpus));
    Atomics.store(new Int32Array(transport), T_MAX_SLOTS, o.maxVcpus);
    const { port1, port2 } = new MessageChannel();
    const data: XenThreadData = {
      paging: o.paging,
      frames: o.memoryBytes / PAGE_SIZE,
      mem,
      transport,
      maxSlots: o.maxVcpus,
      enforce: o.enforce,
      record: o.record,
      port: port2,
    };
    const hv = new Worker(distEntry('hypervisor/thread.js'), { workerData: data, transferList: [port2] });
    // Wait for 'ready' before any other listener sees the port.
    await new Promise<void>((resolve, reject) => {
      const fail = (e: Error) => {
        port1.close();
        reject(e);
      };
      hv.once('error', fail);
      hv.once('exit', (code) => fail(new Error(`the hypervisor thread exited during start (code ${code})`)));
      port1.once('message', (m: XenThreadEvent) => {
        hv.removeAllListeners('error').removeAllListeners('exit');
        if (m && 'event' in m && m.event === 'ready') resolve();
        else fail(new Error(`the hypervisor thread sent ${JSON.stringify(m)} before it was ready`));
      });
    });
    return new Machine(o, hv, port1, mem, transport);
  }

  /* ------------------------------------------------------------- domains */

  /** Build a domain; Xen validates the config (TypeError/RangeError saying what is accepted). */
  async createDomain(cfg: DomainConfig): Promise<DomainInfo> {
    const info = (await this.#control({ op: 'createDomain', cfg })) as DomainInfo;
    this.#domains.set(info.domid, info);
    return info;
  }

  /** Stop the domain's vCPUs, then destroy it (its frames go back to the heap). */
  destroyDomain(domid: number): Promise<void> {
    if (!this.#domains.has(domid)) {
      return Promise.reject(
        new RangeError(
          `destroyDomain: no domain ${domid} (running: ${[...this.#domains.keys()].join(', ') || 'none'})`,
        ),
      );
    }
    let p = this.#destroying.get(domid);
    if (p === undefined) {
      p = (async () => {
        await Promise.all([...this.#vcpus].filter((h) => h.domid === domid).map((h) => h.terminate()));
        await this.#control({ op: 'destroyDomain', domid });
        this.#domains.delete(domid);
      })();
      this.#destroying.set(domid, p);
      p.finally(() => this.#destroying.delete(domid)).catch(() => {});
    }
    return p;
  }

  /** Run vCPU `vcpu` of the domain on a worker with the named guest program. */
  async startVcpu(info: DomainInfo, vcpu: number, program: string, params: unknown): Promise<VcpuHandle> {
    this.#checkOpen();
    const known = info && typeof info === 'object' ? this.#domains.get(info.domid) : undefined;
    if (known === undefined) throw new TypeError('startVcpu: info must be the DomainInfo of a domain of this machine');
    if (this.#destroying.has(known.domid)) throw new Error(`startVcpu: domain ${known.domid} is being destroyed`);
    if (!Number.isInteger(vcpu) || vcpu < 0 || vcpu >= known.vcpus) {
      throw new RangeError(`startVcpu: vcpu must be from 0 to ${known.vcpus - 1} (got ${String(vcpu)})`);
    }
    if (!(PROGRAM_NAMES as readonly string[]).includes(program)) {
      throw new TypeError(
        `startVcpu: unknown program ${JSON.stringify(program)}; registered: ${PROGRAM_NAMES.join(', ')}`,
      );
    }
    for (const h of this.#vcpus) {
      if (h.domid === known.domid && h.vcpu === vcpu)
        throw new Error(`startVcpu: vCPU ${vcpu} of domain ${known.domid} is already running`);
    }
    const data: VcpuWorkerData = {
      mem: this.mem,
      transport: this.transport,
      slot: known.slots[vcpu]!,
      info: known,
      vcpu,
      program,
      params,
    };
    let ready!: (e?: Error) => void;
    const started = new Promise<void>((resolve, reject) => {
      ready = (e) => (e ? reject(e) : resolve());
    });
    const h = new VcpuThread(known, vcpu, data, ready, (t, exit) => this.#onVcpuExit(t, exit));
    this.#vcpus.add(h);
    await started;
    return h;
  }

  /* --------------------------------------------------------------- queries */

  audit(): Promise<AuditReport> {
    return this.#control({ op: 'audit' }) as Promise<AuditReport>;
  }

  stats(): Promise<XenStats> {
    return this.#control({ op: 'stats' }) as Promise<XenStats>;
  }

  drainLog(): Promise<XenLogRecord[]> {
    return this.#control({ op: 'drainLog' }) as Promise<XenLogRecord[]>;
  }

  freeFrames(): Promise<number> {
    return this.#control({ op: 'freeFrames' }) as Promise<number>;
  }

  /**
   * Test-only: make the hypervisor throw inside serveSlot on the next request of `slot`,
   * as a Xen bug would. That call fails with -EFAULT and the bug lands in xenBugs.
   */
  async injectFault(slot: number): Promise<void> {
    await this.#control({ op: 'injectFault', slot });
  }

  /** The hypercalls served so far as a script (a machine created with record: true). */
  takeRecording(name: string): Promise<Recording> {
    return this.#control({ op: 'takeRecording', name }) as Promise<Recording>;
  }

  /** Write a frame of a domain as its guest would have before using it (0, or -EBUSY for a table in use). */
  fillFrame(domid: number, pfn: number, words: Uint32Array): Promise<number> {
    return this.#control({ op: 'fillFrame', domid, pfn, words }) as Promise<number>;
  }

  /** Stop every vCPU and the hypervisor thread. Idempotent. */
  shutdown(): Promise<void> {
    this.#shutdown ??= (async () => {
      await Promise.all([...this.#vcpus].map((h) => h.terminate()));
      if (!this.#hvExited) {
        const exited = new Promise<void>((resolve) => this.#hv.once('exit', () => resolve()));
        await this.#control({ op: 'shutdown' }).catch(() => {});
        const timer = setTimeout(() => void this.#hv.terminate(), 1000);
        await exited;
        clearTimeout(timer);
      }
    })();
    return this.#shutdown;
  }

  /* -------------------------------------------------------------- internals */

  #checkOpen(): void {
    if (this.#shutdown !== undefined || this.#hvExited) throw new Error('the machine is shut down');
  }

  /** Post a control request and ring the doorbell (the hypervisor drains its port on wake). */
  #control(req: Unnumbered<XenControlRequest>): Promise<unknown> {
    if (this.#hvExited || (this.#shutdown !== undefined && req.op !== 'shutdown')) {
      return Promise.reject(new Error('the machine is shut down'));
    }
    const id = ++this.#nextId;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      try {
        this.#port.postMessage({ ...req, id });
      } catch (e) {
        this.#pending.delete(id); // a config that cannot be cloned
        throw e;
      }
      Atomics.add(this.#t, T_CONTROL, 1);
      Atomics.add(this.#t, T_DOORBELL, 1);
      Atomics.notify(this.#t, T_DOORBELL, 1);
    });
  }

  #onHvMessage(m: XenControlReply | XenThreadEvent): void {
    if ('event' in m) {
      if (m.event === 'bug') this.xenBugs.push(`slot ${m.slot}: ${m.message}`);
      return;
    }
    settle(this.#pending, m);
  }

  /**
   * A vCPU worker is gone. Its runstate is cleared and notified so a hypervisor waiting
   * for its flush acknowledgement is released. An unexpected exit destroys the domain.
   */
  async #onVcpuExit(h: VcpuThread, exit: VcpuExit): Promise<void> {
    this.#vcpus.delete(h);
    const rs = slotBase(h.slot) + S_RUNSTATE;
    Atomics.and(this.#t, rs, ~(RS_RUNNING | RS_FLUSH_ANY));
    Atomics.notify(this.#t, rs);
    if (exit.expected || this.#shutdown !== undefined || !this.#domains.has(h.domid)) return;
    await this.destroyDomain(h.domid);
  }
}
