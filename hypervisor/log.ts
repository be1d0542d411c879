/*
 * The hypervisor's console: gdprintk-style lines in Xen's own wording, kept in a bounded
 * buffer that the controller drains (and forwards to pino), with a count per reason.
 *
 * Line numbers are those of the matching messages in a Xen 4.1x xen/arch/x86/mm.c (or
 * pv/mm.c); they make a line look like the real one and identify the site, nothing more.
 */
import type { XenLogRecord } from '../src/abi/control.js';

/** The message sites: reason key -> [file, line]. */
export const XENLOG_SITES = {
  bad_type: ['mm.c', 2891],
  validate_error: ['mm.c', 2701],
  bad_l1_flags: ['mm.c', 868],
  bad_l2_flags: ['mm.c', 1118],
  bad_l3_flags: ['mm.c', 1145],
  bad_l4_flags: ['mm.c', 1170],
  writable_type: ['mm.c', 1050],
  l1e_get_error: ['mm.c', 1083],
  wrong_owner: ['mm.c', 1015],
  mmio: ['mm.c', 910],
  page_ref: ['mm.c', 2335],
  promote_failure: ['mm.c', 1413],
  linear_rw: ['mm.c', 714],
  linear_bad: ['mm.c', 739],
  pin_error: ['mm.c', 3296],
  already_pinned: ['mm.c', 3310],
  not_pinned: ['mm.c', 3331],
  baseptr_error: ['mm.c', 3044],
  user_baseptr_error: ['mm.c', 3384],
  xen_l4_slot: ['mm.c', 2245],
  xen_l2_slot: ['mm.c', 2080],
  pae_l3_slot: ['mm.c', 1486],
  normal_update_page: ['mm.c', 3988],
  machphys_page: ['mm.c', 4082],
  bad_mmu_cmd: ['mm.c', 4101],
  bad_mmuext_cmd: ['mm.c', 3721],
  bad_ldt: ['mm.c', 3505],
  foreign: ['mm.c', 3182],
  flush_cache: ['mm.c', 3551],
  uva_error: ['pv/mm.c', 4360],
  foreign_domain: ['mm.c', 3141],
  superpage: ['mm.c', 3690],
  bad_hypercall: ['entry.S', 0],
  copy_clear: ['mm.c', 3640],
} as const satisfies Record<string, readonly [string, number]>;

export type XenLogReason = keyof typeof XENLOG_SITES;

const LOG_CAPACITY = 4096;

export class XenConsole {
  readonly #buffer: XenLogRecord[] = [];
  #dropped = 0;
  /** Lines written in all since boot (drained, kept or dropped). */
  total = 0;
  readonly byReason = new Map<string, number>();
  /** Sequence number of the hypercall being served (set by the dispatcher). */
  seq = 0;
  /** Current context, set by the dispatcher: the domain and vCPU being served. */
  domid = 0;
  vcpu = 0;
  /** Optional live sink (the thread forwards to the controller's pino). */
  sink: ((rec: XenLogRecord) => void) | null = null;

  /** gdprintk(XENLOG_WARNING, ...): "(XEN) mm.c:NNNN:dNvM text". */
  gdprintk(reason: XenLogReason, text: string, mfn = -1): void {
    const [file, line] = XENLOG_SITES[reason];
    const rec: XenLogRecord = {
      line: `(XEN) ${file}:${line}:d${this.domid}v${this.vcpu} ${text}`,
      domid: this.domid,
      vcpu: this.vcpu,
      reason,
      mfn,
      seq: this.seq,
    };
    this.byReason.set(reason, (this.byReason.get(reason) ?? 0) + 1);
    this.total++;
    if (this.#buffer.length >= LOG_CAPACITY) {
      this.#buffer.shift();
      this.#dropped++;
    }
    this.#buffer.push(rec);
    this.sink?.(rec);
  }

  /** The kept records written after the first `total` (the recorder's "this call's lines"). */
  since(total: number): XenLogRecord[] {
    const n = Math.min(this.total - total, this.#buffer.length);
    return n <= 0 ? [] : this.#buffer.slice(this.#buffer.length - n);
  }

  /** Everything logged since the last drain (oldest first). */
  drain(): XenLogRecord[] {
    return this.#buffer.splice(0, this.#buffer.length);
  }

  get dropped(): number {
    return this.#dropped;
  }
}

/**
 * %lx without the 0x, as Xen prints mfns and pfns: the whole value for a non-negative
 * integer (an x86_64 mfn may be past 2^32), a negative int32 as its unsigned word.
 */
export function hx(n: number): string {
  return (n >= 0 ? n : n >>> 0).toString(16);
}
