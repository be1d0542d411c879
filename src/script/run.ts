/*
 * Running a scripted guest: build the machine and domains, start a real vCPU worker for
 * every (domain, vCPU) the script uses, run the steps in order, check each expectation
 * against the hypervisor's answer and log, and finish with the auditor.
 */
import { PAGE_SIZE } from '../abi/xen.js';
import { Machine, type VcpuHandle } from '../machine.js';
import type { AuditReport, DomainInfo, XenStats } from '../abi/control.js';
import { Frames, StepFailure } from './frames.js';
import { runStep, type StepContext, type StepResult } from './handlers.js';
import type { Addr, Script, Step } from './schema.js';

export type { StepResult } from './handlers.js';

export interface ScriptResult {
  name: string;
  steps: StepResult[];
  passed: number;
  failed: number;
  audit: AuditReport;
  stats: XenStats;
}

function addrText(a: Addr): string {
  return 'raw' in a ? `0x${a.raw.toString(16)}` : `&${a.direct}${a.offset ? `+${a.offset}` : ''}`;
}

function describe(s: Step): string {
  switch (s.op) {
    case 'alloc':
      return `alloc ${s.name}`;
    case 'write':
      return `write ${s.frame}[${s.index}]`;
    case 'mmu_update':
      return `mmu_update ${s.reqs.map((r) => `${r.table}[${r.index}]${r.cmd === 'normal' ? '' : ` ${r.cmd}`}`).join(', ')}`;
    case 'mmuext':
      return `mmuext ${s.ops.map((o) => o.cmd + (o.frame ? ` ${o.frame}` : '')).join(', ')}`;
    case 'update_va_mapping':
      return `update_va_mapping ${addrText(s.va)}`;
    case 'load':
    case 'store':
      return `${s.op} ${addrText(s.va)}`;
    case 'multicall':
      return `multicall [${s.calls.map(describe).join('; ')}]`;
    case 'fill':
      return `fill ${s.frame} (${s.entries.length} entries)`;
    default:
      return s.op;
  }
}

/** The machine memory a script runs on: memory_mb, or its domains' frames and a margin. */
export function scriptMemoryBytes(script: Script): number {
  const nframes = script.domains.reduce((n, d) => n + d.frames, 0);
  return script.memoryBytes ?? Math.max(16, Math.ceil((nframes * PAGE_SIZE * 1.25) / 2 ** 20) + 4) * 2 ** 20;
}

export async function runScript(script: Script): Promise<ScriptResult> {
  const memoryBytes = scriptMemoryBytes(script);
  const maxVcpus = script.domains.reduce((n, d) => n + d.vcpus, 0);
  const machine = await Machine.create({ paging: script.paging, memoryBytes, maxVcpus });
  const vcpus = new Map<string, VcpuHandle>();
  try {
    const infos: DomainInfo[] = [];
    for (const spec of script.domains) {
      infos.push(
        await machine.createDomain({
          name: spec.name,
          frames: spec.frames,
          vcpus: spec.vcpus,
          lowmemFrames: spec.lowmemFrames,
        }),
      );
    }
    await machine.drainLog();
    const frames = new Frames(script.paging, infos);
    const ctx: StepContext = {
      resolver: (home) => frames.resolver(home),
      vcpu: async (s: Step) => {
        const key = `${s.domain}/${s.vcpu}`;
        let h = vcpus.get(key);
        if (!h) {
          h = await machine.startVcpu(frames.info(s.domain), s.vcpu, 'script', {});
          vcpus.set(key, h);
        }
        return h;
      },
      alloc: (domain, name, at) => frames.alloc(domain, name, at),
      pfn: (ref, home, at) => {
        const [info, pfn] = frames.pfnOf(ref, home, at);
        return { domid: info.domid, pfn };
      },
      fillFrame: (domid, pfn, words) => machine.fillFrame(domid, pfn, words),
      audit: () => machine.audit(),
    };

    const results: StepResult[] = [];
    for (const s of script.steps) {
      const r: StepResult = {
        at: s.at,
        op: s.op,
        domain: s.domain,
        vcpu: s.vcpu,
        what: describe(s),
        got: 'ok',
        expected: s.expect ?? (s.op === 'multicall' ? s.calls.map(() => 'ok') : 'ok'),
        pass: true,
        log: [],
      };
      try {
        await runStep(s, ctx, r);
      } catch (e) {
        if (!(e instanceof StepFailure)) throw e;
        r.got = 'error';
        r.pass = false;
        r.reason = e.message;
      }
      r.log = (await machine.drainLog()).map((l) => l.line);
      if (r.pass) check(s, r);
      results.push(r);
    }

    const auditReport = await machine.audit();
    const stats = await machine.stats();
    const passed = results.filter((x) => x.pass).length;
    return { name: script.name, steps: results, passed, failed: results.length - passed, audit: auditReport, stats };
  } finally {
    await machine.shutdown();
  }
}

function check(s: Step, r: StepResult): void {
  const want = r.expected;
  if (Array.isArray(want)) {
    const got = Array.isArray(r.got) ? r.got : [r.got];
    const bad = want.findIndex((w, i) => got[i] !== w);
    if (bad >= 0) {
      r.pass = false;
      r.reason = `call ${bad}: expected ${want[bad]}, got ${got[bad]}`;
      return;
    }
  } else if (r.got !== want) {
    r.pass = false;
    r.reason = `expected ${want}, got ${String(r.got)}`;
    return;
  }
  if (s.expectDone !== undefined && r.done !== s.expectDone) {
    r.pass = false;
    r.reason = `expected ${s.expectDone} done, got ${r.done}`;
    return;
  }
  if (s.expectLog !== undefined && !r.log.some((l) => l.includes(s.expectLog!))) {
    r.pass = false;
    r.reason = `no hypervisor log line contains ${JSON.stringify(s.expectLog)}`;
  }
}
