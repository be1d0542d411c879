/*
 * Running a scripted guest: build the machine and domains, start a real vCPU worker for
 * every (domain, vCPU) the script uses, run the steps in order, check each expectation
 * against the hypervisor's answer and log, and finish with the auditor.
 */
import { rcName, PAGE_SIZE } from '../abi/xen.js';
import { canonicalVa, layoutFor } from '../abi/layout.js';
import { fromBigInt, hex64, toBigInt } from '../abi/pte.js';
import { Machine, type VcpuHandle } from '../machine.js';
import type { AuditReport, DomainInfo, XenStats } from '../abi/control.js';
import { encodeCall, encodeEntry, type Resolver } from './encode.js';
import type { Addr, Script, Step } from './schema.js';

export interface StepResult {
  at: string;
  op: string;
  domain: string;
  vcpu: number;
  /** Short description ("mmuext pin_l1_table frame=t"). */
  what: string;
  /** What happened: "ok", an errno name, "fault"; an array for a multicall. */
  got: string | string[];
  expected: string | string[];
  pass: boolean;
  /** Why it failed, when it did. */
  reason?: string;
  /** Hypervisor log lines written during the step. */
  log: string[];
  done?: number;
  value?: string;
}

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

class StepFailure extends Error {}

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
    default:
      return s.op;
  }
}

export async function runScript(script: Script): Promise<ScriptResult> {
  const frames = script.domains.reduce((n, d) => n + d.frames, 0);
  const memoryBytes =
    script.memoryBytes ?? Math.max(16, Math.ceil((frames * PAGE_SIZE * 1.25) / 2 ** 20) + 4) * 2 ** 20;
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
      const colon = ref.indexOf(':');
      const hasDomain = colon > 0 && !ref.startsWith('@');
      const dname = hasDomain ? ref.slice(0, colon) : home;
      const name = hasDomain ? ref.slice(colon + 1) : ref;
      const d = doms.get(dname);
      if (!d) throw new StepFailure(`${at}: no domain "${dname}"`);
      let pfn: number | undefined;
      if (name === '@root') pfn = d.info.ptBasePfn;
      else if (name.startsWith('@pt:')) {
        const n = Number(name.slice(4));
        if (!Number.isInteger(n) || n < 0 || n >= d.info.nrPtFrames)
          throw new StepFailure(`${at}: ${name}: the domain has ${d.info.nrPtFrames} initial page-table frames`);
        pfn = d.info.ptFirstPfn + n;
      } else if (name.startsWith('@pfn:')) {
        const n = Number(name.slice(5));
        if (!Number.isInteger(n) || n < 0 || n >= d.info.nrPages)
          throw new StepFailure(`${at}: ${name}: the domain has ${d.info.nrPages} pfns`);
        pfn = n;
      } else pfn = d.names.get(name);
      if (pfn === undefined)
        throw new StepFailure(`${at}: no frame "${ref}" (bind it with {"op": "alloc", "name": "${name}"} first)`);
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
        return layout.pageOffset + pfn * PAGE_SIZE + a.offset;
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
        await runStep(s, r);
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

    async function runStep(s: Step, r: StepResult): Promise<void> {
      const d = doms.get(s.domain)!;
      const res = resolverFor(s.domain);
      switch (s.op) {
        case 'alloc': {
          if (d.names.has(s.name)) throw new StepFailure(`${s.at}: "${s.name}" is already bound in ${s.domain}`);
          if (d.nextPfn >= d.info.nrPages) throw new StepFailure(`${s.at}: domain ${s.domain} has no free frame left`);
          d.names.set(s.name, d.nextPfn++);
          return;
        }
        case 'write': {
          const va = res.va({ direct: s.frame, offset: s.index * 8 }, `${s.at}.frame`);
          const [lo, hi] = encodeEntry(s.entry, res, `${s.at}.entry`);
          const out = await (await vcpuOf(s)).request<{ fault?: unknown }>({ op: 'store', va, lo, hi });
          r.got = out.fault ? 'fault' : 'ok';
          return;
        }
        case 'store': {
          const va = res.va(s.va, `${s.at}.va`);
          const [lo, hi] = fromBigInt(s.value);
          if (va < 0) {
            r.got = 'fault'; // a non-canonical address: #GP on a real CPU
            return;
          }
          const out = await (await vcpuOf(s)).request<{ fault?: unknown }>({ op: 'store', va, lo, hi });
          r.got = out.fault ? 'fault' : 'ok';
          return;
        }
        case 'load': {
          const va = res.va(s.va, `${s.at}.va`);
          if (va < 0) {
            r.got = 'fault';
            return;
          }
          const out = await (await vcpuOf(s)).request<{ fault?: unknown; lo?: number; hi?: number }>({
            op: 'load',
            va,
          });
          r.got = out.fault ? 'fault' : 'ok';
          if (!out.fault) r.value = `0x${hex64(out.hi!, out.lo!)}`;
          if (!out.fault && s.expectValue !== undefined && toBigInt(out.lo!, out.hi!) !== s.expectValue) {
            r.pass = false;
            r.reason = `loaded ${r.value}, expected 0x${s.expectValue.toString(16).padStart(16, '0')}`;
          }
          return;
        }
        case 'audit': {
          const a = await machine.audit();
          r.got = a.ok && a.isolationViolations === 0 ? 'ok' : 'fault';
          if (r.got !== 'ok')
            r.reason = a.problems
              .slice(0, 3)
              .map((p) => `mfn ${p.mfn.toString(16)}: ${p.what}`)
              .join('; ');
          return;
        }
        default: {
          const call = encodeCall(s, res);
          const h = await vcpuOf(s);
          const out = await h.request<{ rc: number; words: number[] }>({ op: 'hypercall', ...call });
          if (s.op === 'multicall') {
            r.got = out.words.map(rcName);
          } else {
            r.got = rcName(out.rc);
            if (s.op !== 'update_va_mapping') r.done = out.words[0];
          }
          // Keep the vCPU's MMU on the base pointer the hypervisor now has.
          if (s.op === 'mmuext') {
            for (let i = 0; i < (r.done ?? 0); i++) {
              const o = s.ops[i]!;
              if (o.cmd === 'new_baseptr') await h.request({ op: 'set_baseptr', mfn: res.mfn(o.frame!, s.at) });
            }
          }
        }
      }
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
