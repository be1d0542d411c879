/*
 * A script's frame names, resolved against the domains the builder made: names bound by
 * "alloc" (each domain's next free pfn), the builtins, and direct-map addresses. Shared
 * by the runner and the reducer, so both read a REF the same way.
 */
import { canonicalVa, layoutFor, type VirtualLayout } from '../abi/layout.js';
import { fromBigInt } from '../abi/pte.js';
import { PAGE_SIZE, type PagingMode } from '../abi/xen.js';
import type { DomainInfo } from '../abi/control.js';
import type { Resolver } from './encode.js';
import { type Addr, parseRef } from './schema.js';

/** A step that cannot run as written (an unbound name, a full domain). */
export class StepFailure extends Error {}

interface Dom {
  info: DomainInfo;
  nextPfn: number;
  names: Map<string, number>;
}

export class Frames {
  readonly #doms = new Map<string, Dom>();
  readonly #layout: VirtualLayout;

  constructor(paging: PagingMode, infos: DomainInfo[]) {
    this.#layout = layoutFor(paging);
    for (const info of infos) this.#doms.set(info.name, { info, nextPfn: info.firstFreePfn, names: new Map() });
  }

  info(domain: string): DomainInfo {
    return this.#doms.get(domain)!.info;
  }

  /** Bind `name` to the domain's next free frame. */
  alloc(domain: string, name: string, at: string): void {
    const d = this.#doms.get(domain)!;
    if (d.names.has(name)) throw new StepFailure(`${at}: "${name}" is already bound in ${domain}`);
    if (d.nextPfn >= d.info.nrPages) throw new StepFailure(`${at}: domain ${domain} has no free frame left`);
    d.names.set(name, d.nextPfn++);
  }

  /** The domain and pfn a REF names, seen from domain `home`. */
  pfnOf(ref: string, home: string, at: string): [DomainInfo, number] {
    const p = parseRef(ref);
    const dname = p?.domain ?? home;
    const d = this.#doms.get(dname);
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
    return [d.info, pfn];
  }

  resolver(home: string): Resolver {
    const layout = this.#layout;
    const r: Resolver = {
      mfn: (ref, at) => {
        const [info, pfn] = this.pfnOf(ref, home, at);
        return info.p2m[pfn]!;
      },
      va: (a: Addr, at) => {
        if ('raw' in a) return canonicalVa(a.raw, layout); // -1 when non-canonical
        const [info, pfn] = this.pfnOf(a.direct, home, at);
        if (info.name !== home)
          throw new StepFailure(`${at}: ${a.direct} is not this domain's frame: it has no direct-map address here`);
        if (pfn >= info.lowmemPages)
          throw new StepFailure(`${at}: ${a.direct} is highmem: it has no direct-map address`);
        return layout.pageOffset + pfn * PAGE_SIZE + a.offset;
      },
      vaWords: (a: Addr, at) => {
        // Raw VAs go to the hypervisor as written: refusing a bad one is its job.
        if ('raw' in a) return fromBigInt(a.raw);
        const va = r.va(a, at);
        const hi = Math.floor(va / 2 ** 32);
        return [va % 2 ** 32, layout.vaBits === 48 && va >= 2 ** 47 ? (hi | 0xffff0000) >>> 0 : hi];
      },
    };
    return r;
  }
}
