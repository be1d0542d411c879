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
  | { id: number; op: 'injectFault'; slot: number } /** -> undefined; test-only: serveSlot of that slot throws once */
  | { id: number; op: 'shutdown' }; /** -> undefined; the thread then ends */

export type XenControlReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: string; name: string };

/** Messages the thread sends unasked. */
export type XenThreadEvent =
  | { event: 'ready' }
  | { event: 'bug'; slot: number; message: string }; /** serveSlot threw */
