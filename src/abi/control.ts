/*
 * The hypervisor's control port: what the host (the toolstack, in Xen's terms: domctl and
 * sysctl) and the hypervisor thread say to each other -- how a domain is asked for, what
 * the domain builder leaves behind (start_info), statistics, audit results and log
 * records. Plain data, safe to postMessage.
 */
import type { MessagePort } from 'node:worker_threads';
import type { PagingMode } from './xen.js';

/** How a hypervisor is made: machine memory, the transport, the paging mode. */
export interface XenOptions {
  paging: PagingMode;
  frames: number;
  mem: SharedArrayBuffer;
  transport: SharedArrayBuffer;
  maxSlots: number;
  /** false only for the stray-write demonstration (see Hv.enforceWritable). */
  enforce?: boolean;
  /** Write down every hypercall served as a script step (hypervisor/record.ts). */
  record?: boolean;
}

/** A recorded run: a script in the JSON form `pvmmu script` reads. */
export interface Recording {
  script: { name: string; steps: unknown[]; [k: string]: unknown };
  /** Frames no domain owned (written as @pfn:0: the recording is not exact). */
  unnamed: number;
  /** Hypercalls a script cannot express (not sched_op), left out. */
  skipped: number;
}

export interface DomainConfig {
  name: string;
  /** Frames of memory given to the domain. */
  frames: number;
  vcpus: number;
  /**
   * pae only: how many of the domain's frames the kernel direct map covers; the rest are
   * highmem. Default: all of them, up to the layout's maximum.
   */
  lowmemFrames?: number;
}

/** What the domain builder leaves behind, as Xen's start_info tells a PV kernel. */
export interface DomainInfo {
  domid: number;
  name: string;
  paging: PagingMode;
  nrPages: number;
  vcpus: number;
  /** Transport slot of each vCPU (index = vcpu id). */
  slots: number[];
  /** pfn -> mfn, a copy of the P2M list the builder wrote into the domain's frames. */
  p2m: number[];
  /** First pfn of the P2M list in the domain, and how many frames it spans. */
  p2mPfn: number;
  p2mFrames: number;
  /** pfn of the start_info page (pfn 0). */
  startInfoPfn: number;
  /** pfn of the root page table (pinned, installed as every vCPU's baseptr). */
  ptBasePfn: number;
  /** pfns [ptFirstPfn, ptFirstPfn + nrPtFrames) hold the initial page tables. */
  ptFirstPfn: number;
  nrPtFrames: number;
  /** First pfn not used by the builder: the guest kernel's allocator starts here. */
  firstFreePfn: number;
  /** pfns below this are in the direct map. */
  lowmemPages: number;
}

export interface XenLogRecord {
  /** "(XEN) mm.c:2891:d1v0 Bad type (saw ... != exp ...) for mfn 1a2b (pfn 42)" */
  line: string;
  domid: number;
  vcpu: number;
  /** Short reason key for counting ("bad_type", "pin_error", ...). */
  reason: string;
  mfn: number;
  /** Hypercall sequence number in which it was logged (for per-step matching). */
  seq: number;
}

export interface XenStats {
  hypercalls: Record<string, number>;
  /** Refused hypercalls (or multicall/batch entries) by errno name. */
  errors: Record<string, number>;
  /** Refusals by reason key (the log line's kind). */
  byReason: Record<string, number>;
  rejected: number;
  pinsAttempted: number;
  pinsRefused: number;
  shootdowns: number;
  ipis: number;
  flushesDeferred: number;
  mmuUpdates: number;
  validations: number;
  /** Hypervisor log lines written since boot (whether drained, kept or dropped). */
  logLines: number;
}

export interface AuditProblem {
  mfn: number;
  what: string;
}

export interface AuditReport {
  ok: boolean;
  framesChecked: number;
  problems: AuditProblem[];
  /** Isolation: page-table entries of a domain that reach another domain's frame. */
  isolationViolations: number;
}

/** What the controller passes as workerData (the port in the transfer list). */
export interface XenThreadData {
  paging: PagingMode;
  frames: number;
  mem: SharedArrayBuffer;
  transport: SharedArrayBuffer;
  maxSlots: number;
  enforce: boolean;
  record?: boolean;
  port: MessagePort;
}

/** Control requests; each is answered by one XenControlReply with the same id. */
export type XenControlRequest =
  | { id: number; op: 'createDomain'; cfg: DomainConfig } /** -> DomainInfo */
  | { id: number; op: 'destroyDomain'; domid: number } /** -> undefined */
  | { id: number; op: 'audit' } /** -> AuditReport */
  | { id: number; op: 'stats' } /** -> XenStats */
  | { id: number; op: 'drainLog' } /** -> XenLogRecord[] */
  | { id: number; op: 'freeFrames' } /** -> number */
  | { id: number; op: 'takeRecording'; name: string } /** -> Recording (throws when not recording) */
  | { id: number; op: 'fillFrame'; domid: number; pfn: number; words: Uint32Array } /** -> 0 or -EBUSY */
  | { id: number; op: 'shutdown' }; /** -> undefined; the thread then ends */

export type XenControlReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: string; name: string };

/** Messages the thread sends unasked. */
export type XenThreadEvent =
  | { event: 'ready' }
  | { event: 'bug'; slot: number; message: string }; /** serveSlot threw */

/*
 * The in-process replayer (hypervisor/replay-worker.ts): a Xen core on a worker of its
 * own that runs a script's hypercalls with no vCPU threads, for `pvmmu reduce`, which
 * runs hundreds of candidate scripts. The host encodes the steps; the worker runs them.
 */

/** workerData of the replay worker: the machine and the domains every replay starts from. */
export interface ReplayWorkerData {
  paging: PagingMode;
  frames: number;
  maxSlots: number;
  domains: DomainConfig[];
}

/** One step of a replay, already encoded (a script's fill, or a hypercall). */
export type ReplayOp =
  | { k: 'fill'; domid: number; pfn: number; words: Uint32Array }
  | { k: 'call'; domid: number; vcpu: number; nr: number; args: number[]; data: number[]; readback: number[] };

/** What one op got: the return value, the read-back words, the log lines it wrote. */
export interface ReplayOutcome {
  rc: number;
  words: number[];
  log: string[];
}

/** Messages of the replay worker: { ready, infos } once, then one reply per request. */
export type ReplayRequest = { id: number; ops: ReplayOp[] };
export type ReplayReply =
  | { ready: true; infos: DomainInfo[] }
  | { id: number; outcomes: ReplayOutcome[] }
  | { id: number; error: string };
