/*
 * Running a scripted guest: build the machine and domains, start a real vCPU worker for
 * every (domain, vCPU) the script uses, run the steps in order, check each expectation
 * against the hypervisor's answer and log, and finish with the auditor.
 */
import { canonicalVa, layoutFor } from '../abi/layout.js';
import { fromBigInt } from '../abi/pte.js';
import { Machine, type VcpuHandle } from '../machine.js';
import type { AuditReport, DomainInfo, XenStats } from '../abi/control.js';
import type { Resolver } from './encode.js';
import { runStep, type StepContext, StepFailure, type StepResult } from './handlers.js';
import { type Addr, parseRef, type Script, type Step } from './schema.js';

export type { StepResult } from './handlers.js';

export interface ScriptResult {
  name: string;
  steps: StepResult[];
  passed: number;
  failed: number;
  audit: AuditReport;
  stats: XenStats;
}

interface Dom {
  info: DomainInfo;
  nextPfn: number;
  names: Map<string, number>;
  vcpus: Map<number, VcpuHandle>;
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

export async function runScript(script: Script): Promise<ScriptResult> {
  const frames = script.domains.reduce((n, d) => n + d.frames, 0);
  const memoryBytes = script.memoryBytes ?? Math.max(16, Math.ceil((frames * 4096 * 1.25) / 2 ** 20) + 4) * 2 ** 20;
  const maxVcpus = script.domains.reduce((n, d) => n + d.vcpus, 0);
  const machine = await Machine.create({ paging: script.paging, memoryBytes, maxVcpus });
  const layout = layoutFor(script.paging);
  const doms = new Map<string, Dom>();
  try {
    for (const spec of script.domains) {
      const info = await machine.createDomain({
        name: spec.name,
        frames: spec.frames,
        vcpus: spec.vcpus,
        lowmemFrames: spec.lowmemFrames,
      });
      doms.set(spec.name, { info, nextPfn: info.firstFreePfn, names: new Map(), vcpus: new Map() });
    }
    await machine.drainLog();

    const pfnOf = (ref: string, home: string, at: string): [Dom, number] => {
      const p = parseRef(ref);
      const dname = p?.domain ?? home;
      const d = doms.get(dname);
      if (!d) throw new StepFailure(`${at}: no domain "${dname}"`);
      let pfn: number | undefined;
      if (p === null) pfn = undefined;
      else if (p.kind === 'root') pfn = d.info.ptBasePfn;
      else if (p.kind === 'pt') {
        if (p.n >= d.info.nrPtFrames)
          throw new StepFailure(`${at}: @pt:${p.n}: the domain has ${d.info.nrPtFrames} initial page-table frames`);
        pfn = d.info.ptFirstPfn + p.n;
      } else if (p.kind === 'pfn') {
        if (p.n >= d.info.nrPages) throw new StepFailure(`${at}: @pfn:${p.n}: the domain has ${d.info.nrPages} pfns`);
        pfn = p.n;
      } else if (p.kind === 'name') pfn = d.names.get(p.name);
      if (pfn === undefined) {
        const name = p?.kind === 'name' ? p.name : ref;
        throw new StepFailure(`${at}: no frame "${ref}" (bind it with {"op": "alloc", "name": "${name}"} first)`);
      }
      return [d, pfn];
    };
    const resolverFor = (home: string): Resolver => ({
      mfn: (ref, at) => {
        const [d, pfn] = pfnOf(ref, home, at);
        return d.info.p2m[pfn]!;
      },
      va: (a: Addr, at) => {
        if ('raw' in a) return canonicalVa(a.raw, layout); // -1 when non-canonical
        const [d, pfn] = pfnOf(a.direct, home, at);
        if (d.info.name !== home)
          throw new StepFailure(`${at}: ${a.direct} is not this domain's frame: it has no direct-map address here`);
        if (pfn >= d.info.lowmemPages)
          throw new StepFailure(`${at}: ${a.direct} is highmem: it has no direct-map address`);
        return layout.pageOffset + pfn * 4096 + a.offset;
      },
      vaWords: (a: Addr, at) => {
        // Raw VAs go to the hypervisor as written: refusing a bad one is its job.
        if ('raw' in a) return fromBigInt(a.raw);
        const va = resolverFor(home).va(a, at);
        const hi = Math.floor(va / 2 ** 32);
        return [va % 2 ** 32, layout.vaBits === 48 && va >= 2 ** 47 ? (hi | 0xffff0000) >>> 0 : hi];
      },
    });
    const vcpuOf = async (s: Step): Promise<VcpuHandle> => {
      const d = doms.get(s.domain)!;
      let h = d.vcpus.get(s.vcpu);
      if (!h) {
        h = await machine.startVcpu(d.info, s.vcpu, 'script', {});
        d.vcpus.set(s.vcpu, h);
      }
      return h;
    };

    const ctx: StepContext = {
      resolver: resolverFor,
      vcpu: vcpuOf,
      alloc: (domain, name, at) => {
        const d = doms.get(domain)!;
        if (d.names.has(name)) throw new StepFailure(`${at}: "${name}" is already bound in ${domain}`);
        if (d.nextPfn >= d.info.nrPages) throw new StepFailure(`${at}: domain ${domain} has no free frame left`);
        d.names.set(name, d.nextPfn++);
      },
      pfn: (ref, home, at) => {
        const [d, pfn] = pfnOf(ref, home, at);
        return { domid: d.info.domid, pfn };
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
