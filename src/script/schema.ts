/*
 * The scripted-guest format (`pvmmu script FILE.json`): parse and validate a script into
 * a normalised form. This is a public interface: README.md documents it, and every error
 * names the step and the field that was wrong and what is accepted there.
 *
 *   { "name": "...", "paging": "pae" | "x86_64",
 *     "domains": [ { "name": "A", "frames": 256, "vcpus": 1 } ],   (default: one domain "A")
 *     "steps": [ STEP, ... ] }
 */
import { ERRNO_BY_NAME, MMUEXT_BY_NAME, PAGING_MODES, type PagingMode } from '../abi/xen.js';
import { parseFlags } from '../abi/pte.js';

export type Ref = string;
export type Entry = { raw: bigint } | { frame: Ref; flags: number; nx: boolean };
export type Addr = { raw: bigint } | { direct: Ref; offset: number };

export interface StepBase {
  /** Index in the script (0-based) and the path used in messages ("steps[3]"). */
  at: string;
  domain: string;
  vcpu: number;
  expect?: string | string[];
  expectDone?: number;
  expectLog?: string;
  expectValue?: bigint;
}

export interface MmuReq {
  table: Ref;
  index: number;
  entry: Entry;
  cmd: 'normal' | 'preserve_ad' | 'machphys';
}
export interface ExtOp {
  cmd: string;
  frame?: Ref;
  src?: Ref;
  va?: Addr;
  vcpus?: number[];
  entries?: number;
}
export interface UvaFlags {
  flush: 'none' | 'tlb_flush' | 'invlpg';
  target: 'local' | 'all' | number[];
}

export type Step = StepBase &
  (
    | { op: 'alloc'; name: string }
    | { op: 'write'; frame: Ref; index: number; entry: Entry }
    | { op: 'mmu_update'; reqs: MmuReq[] }
    | { op: 'mmuext'; ops: ExtOp[] }
    | { op: 'update_va_mapping'; va: Addr; entry: Entry; flags: UvaFlags }
    | { op: 'multicall'; calls: Step[] }
    | { op: 'load'; va: Addr }
    | { op: 'store'; va: Addr; value: bigint }
    | { op: 'audit' }
    | { op: 'fill'; frame: Ref; entries: Array<[index: number, entry: Entry]> }
  );

export interface DomainSpec {
  name: string;
  frames: number;
  vcpus: number;
  lowmemFrames?: number;
}

export interface Script {
  name: string;
  paging: PagingMode;
  memoryBytes?: number;
  domains: DomainSpec[];
  steps: Step[];
}

export class ScriptError extends Error {
  override name = 'ScriptError';
}

const STEP_OPS = [
  'alloc',
  'write',
  'mmu_update',
  'mmuext',
  'update_va_mapping',
  'multicall',
  'load',
  'store',
  'audit',
  'fill',
];
const MULTICALL_OPS = ['mmu_update', 'mmuext', 'update_va_mapping'];
const EXPECT_WORDS = ['ok', 'fault', ...Object.keys(ERRNO_BY_NAME)];
const MMU_CMDS = ['normal', 'preserve_ad', 'machphys'];

type Json = Record<string, unknown>;

function isObj(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function fail(at: string, msg: string): never {
  throw new ScriptError(`${at}: ${msg}`);
}

function checkKeys(o: Json, at: string, allowed: string[]): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) fail(at, `unknown field "${k}" (accepted: ${allowed.join(', ')})`);
  }
}

function int(o: Json, key: string, at: string, min: number, max: number, dflt?: number): number {
  const v = o[key];
  if (v === undefined) {
    if (dflt !== undefined) return dflt;
    fail(at, `"${key}" is required (an integer in ${min}..${max})`);
  }
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    fail(`${at}.${key}`, `must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
  }
  return v;
}

function str(o: Json, key: string, at: string, dflt?: string): string {
  const v = o[key];
  if (v === undefined) {
    if (dflt !== undefined) return dflt;
    fail(at, `"${key}" is required (a string)`);
  }
  if (typeof v !== 'string' || v.length === 0)
    fail(`${at}.${key}`, `must be a non-empty string, got ${JSON.stringify(v)}`);
  return v;
}

function hex(v: unknown, at: string): bigint {
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return BigInt(v);
  if (typeof v !== 'string' || !/^(0x)?[0-9a-fA-F]{1,16}$/.test(v)) {
    fail(
      at,
      `must be a hex string of up to 16 digits (e.g. "0x8000000000000063") or a non-negative integer, got ${JSON.stringify(v)}`,
    );
  }
  return BigInt(v.startsWith('0x') ? v : `0x${v}`);
}

/*
 * The frame-reference grammar: REF = [DOMAIN ":"] NAME, where NAME is a name bound by
 * "alloc" or a builtin: "@root" (the root table the domain builder pinned), "@pt:N"
 * (its N-th initial page-table frame) or "@pfn:N". A leading "@" means no domain part.
 */
export type ParsedRef =
  | { domain?: string; kind: 'name'; name: string }
  | { domain?: string; kind: 'root' }
  | { domain?: string; kind: 'pt' | 'pfn'; n: number };

/** Split a REF into its domain and what it names; null when it is not a REF. */
export function parseRef(ref: string): ParsedRef | null {
  const colon = ref.indexOf(':');
  const hasDomain = colon > 0 && !ref.startsWith('@');
  const domain = hasDomain ? ref.slice(0, colon) : undefined;
  const name = hasDomain ? ref.slice(colon + 1) : ref;
  const d = domain === undefined ? {} : { domain };
  if (name === '@root') return { ...d, kind: 'root' };
  const m = /^@(pt|pfn):(\d+)$/.exec(name);
  if (m) return { ...d, kind: m[1] as 'pt' | 'pfn', n: Number(m[2]) };
  if (/^[A-Za-z0-9_-]+$/.test(name)) return { ...d, kind: 'name', name };
  return null;
}

function ref(v: unknown, at: string): Ref {
  if (typeof v !== 'string' || !/^([A-Za-z0-9_-]+:)?(@?[A-Za-z0-9_:.-]+)$/.test(v)) {
    fail(
      at,
      `must be a frame name bound by "alloc", "B:name" for domain B's frame, or a builtin (@root, @pt:N, @pfn:N), got ${JSON.stringify(v)}`,
    );
  }
  return v;
}

function entry(v: unknown, at: string): Entry {
  if (v === 0 || typeof v === 'string' || typeof v === 'number') return { raw: hex(v, at) };
  if (!isObj(v)) fail(at, `must be 0, a hex string, or { "frame": REF, "flags": "P|RW|..." }`);
  checkKeys(v, at, ['frame', 'flags']);
  const frame = ref(v.frame, `${at}.frame`);
  const flagsText = v.flags === undefined ? 'P' : v.flags;
  if (typeof flagsText !== 'string') fail(`${at}.flags`, 'must be a string like "P|RW|US"');
  const f = parseFlags(flagsText);
  if ('bad' in f) fail(`${at}.flags`, `unknown flag "${f.bad}" (accepted: P, RW, US, PWT, PCD, A, D, PSE, PAT, G, NX)`);
  return { frame, flags: f.flags, nx: f.nx };
}

function addr(v: unknown, at: string): Addr {
  if (typeof v === 'string' || typeof v === 'number') return { raw: hex(v, at) };
  if (!isObj(v)) fail(at, `must be a hex string or { "direct": REF, "offset": N }`);
  checkKeys(v, at, ['direct', 'offset']);
  return { direct: ref(v.direct, `${at}.direct`), offset: int(v, 'offset', at, 0, 4095, 0) };
}

function expectOf(v: unknown, at: string, multicall: boolean): string | string[] | undefined {
  if (v === undefined) return undefined;
  const one = (x: unknown, a: string): string => {
    if (typeof x !== 'string' || !EXPECT_WORDS.includes(x)) {
      fail(a, `must be one of ${EXPECT_WORDS.join(', ')}, got ${JSON.stringify(x)}`);
    }
    return x;
  };
  if (multicall && Array.isArray(v)) return v.map((x, i) => one(x, `${at}[${i}]`));
  return one(v, at);
}

function parseStep(raw: unknown, at: string, domains: DomainSpec[], inMulticall: boolean): Step {
  if (!isObj(raw)) fail(at, 'must be an object with an "op"');
  const op = raw.op;
  if (typeof op !== 'string' || !STEP_OPS.includes(op)) {
    fail(`${at}.op`, `must be one of ${STEP_OPS.join(', ')}, got ${JSON.stringify(op)}`);
  }
  if (inMulticall && !MULTICALL_OPS.includes(op)) {
    fail(`${at}.op`, `"${op}" cannot be part of a multicall (accepted: ${MULTICALL_OPS.join(', ')})`);
  }
  const common = ['op', 'domain', 'vcpu', 'expect', 'expect_done', 'expect_log'];
  const domain = str(raw, 'domain', at, domains[0]!.name);
  const dom = domains.find((d) => d.name === domain);
  if (!dom) fail(`${at}.domain`, `no domain "${domain}" (the script has ${domains.map((d) => d.name).join(', ')})`);
  const base: StepBase = {
    at,
    domain,
    vcpu: int(raw, 'vcpu', at, 0, dom.vcpus - 1, 0),
    expect: expectOf(raw.expect, `${at}.expect`, op === 'multicall'),
    expectDone: raw.expect_done === undefined ? undefined : int(raw, 'expect_done', at, 0, 1 << 20),
    expectLog: raw.expect_log === undefined ? undefined : str(raw, 'expect_log', at),
  };
  switch (op) {
    case 'alloc':
      checkKeys(raw, at, [...common, 'name']);
      if (typeof raw.name !== 'string' || !/^[A-Za-z0-9_-]+$/.test(raw.name)) {
        fail(`${at}.name`, `must be a name of letters, digits, _ and -, got ${JSON.stringify(raw.name)}`);
      }
      return { ...base, op, name: raw.name };
    case 'write':
      checkKeys(raw, at, [...common, 'frame', 'index', 'entry']);
      return {
        ...base,
        op,
        frame: ref(raw.frame, `${at}.frame`),
        index: int(raw, 'index', at, 0, 511),
        entry: entry(raw.entry, `${at}.entry`),
      };
    case 'mmu_update': {
      checkKeys(raw, at, [...common, 'reqs']);
      if (!Array.isArray(raw.reqs) || raw.reqs.length === 0 || raw.reqs.length > 512)
        fail(`${at}.reqs`, 'must be an array of 1..512 requests');
      const reqs = raw.reqs.map((r: unknown, i: number): MmuReq => {
        const a = `${at}.reqs[${i}]`;
        if (!isObj(r)) fail(a, 'must be { "table": REF, "index": I, "entry": ENTRY, "cmd": ... }');
        checkKeys(r, a, ['table', 'index', 'entry', 'cmd']);
        const cmd = r.cmd === undefined ? 'normal' : r.cmd;
        if (typeof cmd !== 'string' || !MMU_CMDS.includes(cmd))
          fail(`${a}.cmd`, `must be one of ${MMU_CMDS.join(', ')}`);
        return {
          table: ref(r.table, `${a}.table`),
          index: int(r, 'index', a, 0, 511),
          entry: entry(r.entry ?? 0, `${a}.entry`),
          cmd: cmd as MmuReq['cmd'],
        };
      });
      return { ...base, op, reqs };
    }
    case 'mmuext': {
      checkKeys(raw, at, [...common, 'ops']);
      if (!Array.isArray(raw.ops) || raw.ops.length === 0 || raw.ops.length > 256)
        fail(`${at}.ops`, 'must be an array of 1..256 operations');
      const ops = raw.ops.map((o: unknown, i: number): ExtOp => {
        const a = `${at}.ops[${i}]`;
        if (!isObj(o)) fail(a, 'must be { "cmd": ..., "frame": REF, "va": ADDR, "vcpus": [...] }');
        checkKeys(o, a, ['cmd', 'frame', 'src', 'va', 'vcpus', 'entries']);
        const cmd = o.cmd;
        if (typeof cmd !== 'string' || (MMUEXT_BY_NAME[cmd] === undefined && !/^raw:\d+$/.test(cmd))) {
          fail(
            `${a}.cmd`,
            `must be one of ${Object.keys(MMUEXT_BY_NAME).join(', ')} (or "raw:N"), got ${JSON.stringify(cmd)}`,
          );
        }
        const out: ExtOp = { cmd };
        if (o.frame !== undefined) out.frame = ref(o.frame, `${a}.frame`);
        if (o.src !== undefined) out.src = ref(o.src, `${a}.src`);
        if (o.va !== undefined) out.va = addr(o.va, `${a}.va`);
        if (o.entries !== undefined) out.entries = int(o, 'entries', a, 0, 2 ** 31);
        if (o.vcpus !== undefined) {
          if (!Array.isArray(o.vcpus) || o.vcpus.some((v) => !Number.isInteger(v) || v < 0 || v > 63))
            fail(`${a}.vcpus`, 'must be an array of vCPU ids 0..63');
          out.vcpus = o.vcpus as number[];
        }
        const needsFrame =
          /^(pin_|unpin|new_baseptr|new_user_baseptr|clear_page|copy_page|mark_super|unmark_super)/.test(cmd);
        if (needsFrame && out.frame === undefined) fail(a, `"${cmd}" needs "frame"`);
        if (cmd === 'copy_page' && out.src === undefined) fail(a, '"copy_page" needs "src"');
        if (/^(tlb_flush_multi|invlpg_multi)$/.test(cmd) && out.vcpus === undefined) fail(a, `"${cmd}" needs "vcpus"`);
        if (/^invlpg_/.test(cmd) && out.va === undefined) fail(a, `"${cmd}" needs "va"`);
        return out;
      });
      return { ...base, op, ops };
    }
    case 'update_va_mapping': {
      checkKeys(raw, at, [...common, 'va', 'entry', 'flags', 'vcpus']);
      const text = raw.flags === undefined ? '' : raw.flags;
      if (typeof text !== 'string') fail(`${at}.flags`, 'must be a string such as "invlpg|all"');
      const flags: UvaFlags = { flush: 'none', target: 'local' };
      for (const w of text
        .split('|')
        .map((s) => s.trim())
        .filter(Boolean)) {
        if (w === 'invlpg' || w === 'tlb_flush') flags.flush = w;
        else if (w === 'all' || w === 'local') flags.target = w;
        else fail(`${at}.flags`, `unknown flag "${w}" (accepted: invlpg, tlb_flush, local, all; or "vcpus": [...])`);
      }
      if (raw.vcpus !== undefined) {
        if (!Array.isArray(raw.vcpus) || raw.vcpus.some((v) => !Number.isInteger(v) || v < 0 || v > 63))
          fail(`${at}.vcpus`, 'must be an array of vCPU ids 0..63');
        flags.target = raw.vcpus as number[];
      }
      return { ...base, op, va: addr(raw.va, `${at}.va`), entry: entry(raw.entry ?? 0, `${at}.entry`), flags };
    }
    case 'multicall': {
      checkKeys(raw, at, [...common, 'calls']);
      if (inMulticall) fail(at, 'a multicall cannot contain a multicall');
      if (!Array.isArray(raw.calls) || raw.calls.length === 0 || raw.calls.length > 32)
        fail(`${at}.calls`, 'must be an array of 1..32 calls (Linux batches at most 32)');
      const calls = raw.calls.map((c: unknown, i: number) => {
        const s = parseStep(isObj(c) ? { domain, vcpu: base.vcpu, ...c } : c, `${at}.calls[${i}]`, domains, true);
        if (s.domain !== domain || s.vcpu !== base.vcpu)
          fail(`${at}.calls[${i}]`, 'a multicall runs on one vCPU: drop "domain"/"vcpu" from its calls');
        return s;
      });
      if (Array.isArray(base.expect) && base.expect.length !== calls.length) {
        fail(`${at}.expect`, `has ${base.expect.length} results for ${calls.length} calls`);
      }
      return { ...base, op, calls };
    }
    case 'load':
      checkKeys(raw, at, [...common, 'va', 'expect_value']);
      return {
        ...base,
        op,
        va: addr(raw.va, `${at}.va`),
        expectValue: raw.expect_value === undefined ? undefined : hex(raw.expect_value, `${at}.expect_value`),
      };
    case 'store':
      checkKeys(raw, at, [...common, 'va', 'value']);
      return { ...base, op, va: addr(raw.va, `${at}.va`), value: hex(raw.value, `${at}.value`) };
    case 'fill': {
      checkKeys(raw, at, [...common, 'frame', 'entries']);
      if (!isObj(raw.entries)) fail(`${at}.entries`, 'must be an object { "INDEX": ENTRY, ... } (indexes 0..511)');
      const entries: Array<[number, Entry]> = Object.entries(raw.entries).map(([k, v]) => {
        const i = Number(k);
        if (!/^\d+$/.test(k) || i > 511) fail(`${at}.entries`, `index "${k}" is not an integer in 0..511`);
        return [i, entry(v, `${at}.entries.${k}`)];
      });
      return { ...base, op, frame: ref(raw.frame, `${at}.frame`), entries };
    }
    default:
      checkKeys(raw, at, [...common]);
      return { ...base, op: 'audit' };
  }
}

/** Parse a script from its JSON text or value. Throws ScriptError naming what is wrong. */
export function parseScript(input: unknown, source = 'script'): Script {
  let raw = input;
  if (typeof input === 'string') {
    try {
      raw = JSON.parse(input);
    } catch (e) {
      throw new ScriptError(`${source}: not valid JSON: ${(e as Error).message}`);
    }
  }
  if (!isObj(raw)) fail(source, 'must be a JSON object with "steps"');
  checkKeys(raw, source, ['name', 'paging', 'memory_mb', 'domains', 'steps', 'description']);
  const paging = raw.paging === undefined ? 'pae' : raw.paging;
  if (typeof paging !== 'string' || !PAGING_MODES.includes(paging as PagingMode)) {
    fail(`${source}.paging`, `must be one of ${PAGING_MODES.join(', ')}, got ${JSON.stringify(paging)}`);
  }
  const rawDomains = raw.domains === undefined ? [{ name: 'A' }] : raw.domains;
  if (!Array.isArray(rawDomains) || rawDomains.length === 0 || rawDomains.length > 8)
    fail(`${source}.domains`, 'must be an array of 1..8 domains');
  const domains = rawDomains.map((d: unknown, i: number): DomainSpec => {
    const at = `${source}.domains[${i}]`;
    if (!isObj(d)) fail(at, 'must be { "name": ..., "frames": N, "vcpus": N }');
    checkKeys(d, at, ['name', 'frames', 'vcpus', 'lowmem_frames']);
    const name = str(d, 'name', at);
    if (!/^[A-Za-z0-9_-]+$/.test(name)) fail(`${at}.name`, 'must be letters, digits, _ and -');
    const spec: DomainSpec = {
      name,
      frames: int(d, 'frames', at, 64, 1 << 19, 256),
      vcpus: int(d, 'vcpus', at, 1, 64, 1),
    };
    if (d.lowmem_frames !== undefined) spec.lowmemFrames = int(d, 'lowmem_frames', at, 64, 1 << 19);
    return spec;
  });
  const names = new Set<string>();
  for (const d of domains) {
    if (names.has(d.name)) fail(`${source}.domains`, `domain "${d.name}" is listed twice`);
    names.add(d.name);
  }
  if (!Array.isArray(raw.steps) || raw.steps.length === 0) fail(`${source}.steps`, 'must be a non-empty array');
  const steps = raw.steps.map((s: unknown, i: number) => parseStep(s, `steps[${i}]`, domains, false));
  const script: Script = {
    name: typeof raw.name === 'string' ? raw.name : source,
    paging: paging as PagingMode,
    domains,
    steps,
  };
  if (raw.memory_mb !== undefined) script.memoryBytes = int(raw, 'memory_mb', source, 16, 2048) * 1024 * 1024;
  return script;
}
