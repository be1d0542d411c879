/*
 * The in-process replayer's worker entry (see ReplayWorkerData in src/abi/control.ts):
 * for each request, a fresh hypervisor with the same domains, then the ops in order,
 * each hypercall put in its vCPU's slot and served at once on this thread. The host
 * starts this file by path; it never imports the hypervisor.
 *
 * Cost: building the domains again is most of a replay (~200 ms for xfs-dirscan's
 * 58,982-frame domain, the builder zeroing and mapping every frame); the hypercalls
 * themselves take microseconds each.
 */
import { parentPort, workerData } from 'node:worker_threads';
import {
  S_ARGS,
  S_HEADER_WORDS,
  S_OP,
  S_RESULT,
  S_STATE,
  SLOT_REQUEST,
  slotBase,
  transportBytes,
} from '../src/abi/layout.js';
import type { DomainInfo, ReplayOutcome, ReplayReply, ReplayRequest, ReplayWorkerData } from '../src/abi/control.js';
import { ESRCH, PAGE_SIZE } from '../src/abi/xen.js';
import { Xen } from './xen.js';

const cfg = workerData as ReplayWorkerData;
const mem = new SharedArrayBuffer(cfg.frames * PAGE_SIZE);
const transport = new SharedArrayBuffer(transportBytes(cfg.maxSlots));
const t = new Int32Array(transport);

function boot(): { xen: Xen; infos: DomainInfo[] } {
  // No need to zero machine memory: the domain builder zeroes every frame it gives a
  // domain, and no hypercall or fill reaches a frame no domain owns (saves ~55 ms of the
  // ~250 ms a replay of a 256 MiB machine costs).
  t.fill(0);
  const xen = new Xen({ paging: cfg.paging, frames: cfg.frames, mem, transport, maxSlots: cfg.maxSlots });
  const infos = cfg.domains.map((d) => xen.createDomain(d));
  xen.drainLog();
  return { xen, infos };
}

function replay(req: ReplayRequest): ReplayOutcome[] {
  const { xen, infos } = boot();
  const byId = new Map(infos.map((i) => [i.domid, i]));
  const out: ReplayOutcome[] = [];
  for (const op of req.ops) {
    if (op.k === 'fill') {
      out.push({ rc: xen.fillFrame(op.domid, op.pfn, op.words), words: [], log: xen.drainLog().map((l) => l.line) });
      continue;
    }
    const info = byId.get(op.domid);
    const slot = info?.slots[op.vcpu];
    if (slot === undefined) {
      out.push({ rc: -ESRCH, words: [], log: [] });
      continue;
    }
    const b = slotBase(slot);
    const data = b + S_HEADER_WORDS;
    t[b + S_OP] = op.nr;
    for (let i = 0; i < 12; i++) t[b + S_ARGS + i] = op.args[i] ?? 0;
    for (let i = 0; i < op.data.length; i++) t[data + i] = op.data[i]!;
    Atomics.store(t, b + S_STATE, SLOT_REQUEST);
    xen.serveSlot(slot);
    out.push({
      rc: t[b + S_RESULT]!,
      words: op.readback.map((w) => t[data + w]!),
      log: xen.drainLog().map((l) => l.line),
    });
  }
  return out;
}

const port = parentPort!;
port.postMessage({ ready: true, infos: boot().infos } satisfies ReplayReply);
port.on('message', (req: ReplayRequest) => {
  try {
    port.postMessage({ id: req.id, outcomes: replay(req) } satisfies ReplayReply);
  } catch (e) {
    port.postMessage({
      id: req.id,
      error: e instanceof Error ? (e.stack ?? e.message) : String(e),
    } satisfies ReplayReply);
  }
});
