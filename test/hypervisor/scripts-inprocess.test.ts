/*
 * The example scripts (test/scripts/*.json) once more, in-process: the same parser and
 * encoder (src/script/), the hypervisor served at once on a XenBox, loads and stores
 * through a guest MMU on the same memory. test/scripts.test.ts runs them as a user does,
 * on worker threads that load dist/; this twin exists for mutation testing (`npm run
 * mutate`): a mutant of hypervisor/ lives in this process only, so only here can every
 * expect, expect_done and expect_log of the scripts catch it.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Mmu } from '../../guest/arch/x86/mmu.js';
import type { DomainInfo } from '../../src/abi/control.js';
import {
  RS_FLUSH_ANY,
  S_ARGS,
  S_HEADER_WORDS,
  S_OP,
  S_RESULT,
  S_RUNSTATE,
  S_STATE,
  SLOT_IDLE,
  SLOT_REQUEST,
  canonicalVa,
  layoutFor,
  slotBase,
} from '../../src/abi/layout.js';
import { fromBigInt, toBigInt } from '../../src/abi/pte.js';
import { rcName } from '../../src/abi/xen.js';
import { encodeCall, encodeEntry, type Resolver } from '../../src/script/encode.js';
import { fillWords } from '../../src/script/handlers.js';
import { type Addr, type Script, type Step, parseScript } from '../../src/script/schema.js';
import { XenBox } from '../helpers/xenbox.js';

const dir = join(import.meta.dirname, '..', 'scripts');
const files = readdirSync(dir)
  .filter((f) => f.endsWith('.json'))
  .sort();

interface Dom {
  info: DomainInfo;
  nextPfn: number;
  names: Map<string, number>;
  mmus: Map<number, Mmu>;
}

/** Run a script in-process; returns one failure message per step that did not hold. */
function runInProcess(script: Script): { failures: string[]; auditOk: boolean } {
  const frames = script.domains.reduce((n, d) => n + d.frames, 0);
  const box = new XenBox({ paging: script.paging, frames: Math.ceil(frames * 1.25) + 1024, maxSlots: 16 });
  const layout = layoutFor(script.paging);
  const doms = new Map<string, Dom>();
  for (const spec of script.domains) {
    const info = box.xen.createDomain({
      name: spec.name,
      frames: spec.frames,
      vcpus: spec.vcpus,
      lowmemFrames: spec.lowmemFrames,
    });
    doms.set(spec.name, { info, nextPfn: info.firstFreePfn, names: new Map(), mmus: new Map() });
  }
  box.xen.drainLog();
  const pfnOf = (ref: string, home: string): [Dom, number] => {
    const colon = ref.indexOf(':');
    const hasDomain = colon > 0 && !ref.startsWith('@');
    const d = doms.get(hasDomain ? ref.slice(0, colon) : home)!;
    const name = hasDomain ? ref.slice(colon + 1) : ref;
    if (name === '@root') return [d, d.info.ptBasePfn];
    if (name.startsWith('@pt:')) return [d, d.info.ptFirstPfn + Number(name.slice(4))];
    if (name.startsWith('@pfn:')) return [d, Number(name.slice(5))];
    return [d, d.names.get(name)!];
  };
  const resolverFor = (home: string): Resolver => ({
    mfn: (ref) => {
      const [d, pfn] = pfnOf(ref, home);
      return d.info.p2m[pfn]!;
    },
    va: (a: Addr) => {
      if ('raw' in a) return canonicalVa(a.raw, layout);
      const [, pfn] = pfnOf(a.direct, home);
      return layout.pageOffset + pfn * 4096 + a.offset;
    },
    vaWords: (a: Addr) => {
      if ('raw' in a) return fromBigInt(a.raw);
      const va = resolverFor(home).va(a, '');
      const hi = Math.floor(va / 2 ** 32);
      return [va % 2 ** 32, layout.vaBits === 48 && va >= 2 ** 47 ? (hi | 0xffff0000) >>> 0 : hi];
    },
  });
  const mmuOf = (s: Step): Mmu => {
    const d = doms.get(s.domain)!;
    let m = d.mmus.get(s.vcpu);
    if (!m) {
      m = new Mmu(box.mem32.buffer as SharedArrayBuffer, script.paging, {
        mailbox: box.t,
        slot: d.info.slots[s.vcpu]!,
      });
      m.setBaseptr(d.info.p2m[d.info.ptBasePfn]!);
      d.mmus.set(s.vcpu, m);
    }
    // A flush posted while "not running" is serviced before the next access.
    if ((Atomics.load(box.t, slotBase(d.info.slots[s.vcpu]!) + S_RUNSTATE) & RS_FLUSH_ANY) !== 0) {
      m.handleFlush(false);
    }
    return m;
  };

  const failures: string[] = [];
  for (const s of script.steps) {
    const d = doms.get(s.domain)!;
    const res = resolverFor(s.domain);
    let got: string | string[] = 'ok';
    let done: number | undefined;
    let value: bigint | undefined;
    switch (s.op) {
      case 'alloc':
        d.names.set(s.name, d.nextPfn++);
        break;
      case 'write':
      case 'store': {
        const va = s.op === 'write' ? res.va({ direct: s.frame, offset: s.index * 8 }, '') : res.va(s.va, '');
        const [lo, hi] = s.op === 'write' ? encodeEntry(s.entry, res, '') : fromBigInt(s.value);
        got = va < 0 || mmuOf(s).store64(va, lo, hi) < 0 ? 'fault' : 'ok';
        break;
      }
      case 'load': {
        const va = res.va(s.va, '');
        const m = mmuOf(s);
        const lo = va < 0 ? -1 : m.load64(va);
        got = lo < 0 ? 'fault' : 'ok';
        if (lo >= 0) value = toBigInt(lo, m.hi);
        break;
      }
      case 'fill': {
        const [fd, pfn] = pfnOf(s.frame, s.domain);
        got = rcName(box.xen.fillFrame(fd.info.domid, pfn, fillWords(s, res)));
        break;
      }
      case 'audit': {
        const a = box.xen.audit();
        got = a.ok && a.isolationViolations === 0 ? 'ok' : 'fault';
        break;
      }
      default: {
        const call = encodeCall(s, res);
        const slot = d.info.slots[s.vcpu]!;
        const b = slotBase(slot);
        const u32 = new Uint32Array(box.t.buffer);
        u32.set(call.data, b + S_HEADER_WORDS);
        u32.set(call.args.concat(Array(12).fill(0)).slice(0, 12), b + S_ARGS);
        // Issued as a vCPU does: op, then REQUEST; served at once.
        box.t[b + S_OP] = call.nr;
        Atomics.store(box.t, b + S_STATE, SLOT_REQUEST);
        box.xen.serveSlot(slot);
        Atomics.store(box.t, b + S_STATE, SLOT_IDLE);
        const rc = box.t[b + S_RESULT]!;
        const words = call.readback.map((w) => box.t[b + S_HEADER_WORDS + w]!);
        if (s.op === 'multicall') got = words.map(rcName);
        else {
          got = rcName(rc);
          if (s.op !== 'update_va_mapping') done = words[0];
        }
        if (s.op === 'mmuext') {
          for (let i = 0; i < (done ?? 0); i++) {
            const o = s.ops[i]!;
            if (o.cmd === 'new_baseptr') mmuOf(s).setBaseptr(res.mfn(o.frame!, ''));
          }
        }
      }
    }
    const log = box.log();
    const want = s.expect ?? (s.op === 'multicall' ? s.calls.map(() => 'ok') : 'ok');
    if (JSON.stringify(Array.isArray(want) ? want : [want]) !== JSON.stringify(Array.isArray(got) ? got : [got])) {
      failures.push(`${s.at}: expected ${JSON.stringify(want)}, got ${JSON.stringify(got)}`);
    } else if (s.expectDone !== undefined && done !== s.expectDone) {
      failures.push(`${s.at}: expected ${s.expectDone} done, got ${done}`);
    } else if (s.expectLog !== undefined && !log.some((l) => l.includes(s.expectLog!))) {
      failures.push(`${s.at}: no log line contains ${JSON.stringify(s.expectLog)} in ${JSON.stringify(log)}`);
    } else if (s.expectValue !== undefined && value !== s.expectValue) {
      failures.push(`${s.at}: loaded ${value?.toString(16)}, expected ${s.expectValue.toString(16)}`);
    }
  }
  const a = box.xen.audit();
  return { failures, auditOk: a.ok && a.isolationViolations === 0 };
}

describe('the example scripts, in-process (for mutation testing)', () => {
  for (const f of files) {
    it(f, () => {
      const script = parseScript(readFileSync(join(dir, f), 'utf8'), f);
      const r = runInProcess(script);
      expect(r.failures).toEqual([]);
      expect(r.auditOk).toBe(true);
    });
  }
});

describe('the in-process runner', () => {
  it('reports a step whose expectation does not hold, as the real runner does', () => {
    const r = runInProcess(
      parseScript({
        steps: [
          { op: 'alloc', name: 't' },
          { op: 'mmuext', ops: [{ cmd: 'pin_l1_table', frame: 't' }], expect: 'ok' },
          { op: 'mmuext', ops: [{ cmd: 'pin_l1_table', frame: 't' }], expect: 'EINVAL', expect_log: 'no such text' },
          { op: 'load', va: { direct: 't', offset: 0 }, expect_value: '0x1' },
        ],
      }),
    );
    expect(r.failures).toEqual([
      'steps[1]: expected "ok", got "EINVAL"',
      expect.stringMatching(/^steps\[2\]: no log line contains "no such text"/),
      'steps[3]: loaded 0, expected 1',
    ]);
  });
});
