/*
 * The virtual clock's cost tables (cost-models/*.json at the package root): loading and
 * checking them. A table is JSON:
 *
 *   { "name": "...", "description": "...",
 *     "costs": { "<key>": { "ns": N, "kind": "published|derived|estimate",
 *                           "hardware": "...", "source": "..." }, ... } }
 *
 * with one entry for every key of COST_KEYS (src/abi/vclock.ts), each stating where its
 * value came from. The host sends only the numbers to the guest (KernelConfig.costModel).
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { COST_KEYS, type CostKey, type CostTable } from './abi/vclock.js';

export interface CostEntry {
  ns: number;
  kind: 'published' | 'derived' | 'estimate';
  hardware: string;
  source: string;
}

export interface CostModel {
  name: string;
  description: string;
  /** Where it was read from. */
  file: string;
  entries: Readonly<Record<CostKey, CostEntry>>;
  costs: CostTable;
}

/** The tables shipped with pvmmu, by the name `--cost-model` also accepts. */
export const BUILTIN_COST_MODELS = { 'default-2008': 'default-2008.json', 'server-2023': 'server-2023.json' } as const;
export const DEFAULT_COST_MODEL = 'default-2008';

/** The cost-models/ folder: beside dist/ when running built, beside src/ from the sources. */
export function costModelsDir(): string {
  const here = import.meta.url;
  return fileURLToPath(new URL(here.includes('/dist/src/') ? '../../cost-models/' : '../cost-models/', here));
}

const KINDS = ['published', 'derived', 'estimate'];

/** Check a parsed table; every error names the file and the entry. */
export function parseCostModel(json: unknown, file: string): CostModel {
  const bad = (what: string): never => {
    throw new RangeError(`cost model ${file}: ${what}`);
  };
  if (json === null || typeof json !== 'object') bad('expected a JSON object');
  const o = json as Record<string, unknown>;
  if (typeof o.name !== 'string' || o.name === '') bad('"name" must be a non-empty string');
  const costs = o.costs;
  if (costs === null || typeof costs !== 'object') bad('"costs" must be an object with one entry per cost');
  const c = costs as Record<string, unknown>;
  for (const k of Object.keys(c))
    if (!(COST_KEYS as readonly string[]).includes(k)) bad(`unknown cost "${k}" (costs: ${COST_KEYS.join(', ')})`);
  const entries = {} as Record<CostKey, CostEntry>;
  const table = {} as Record<CostKey, number>;
  for (const k of COST_KEYS) {
    const e = c[k] as Record<string, unknown> | undefined;
    if (e === undefined || e === null || typeof e !== 'object') bad(`missing cost "${k}"`);
    const { ns, kind, hardware, source } = e as Record<string, unknown>;
    if (typeof ns !== 'number' || !Number.isFinite(ns) || ns < 0)
      bad(`costs.${k}.ns must be a non-negative number of ns, got ${JSON.stringify(ns)}`);
    if (typeof kind !== 'string' || !KINDS.includes(kind)) bad(`costs.${k}.kind must be one of ${KINDS.join(', ')}`);
    if (typeof hardware !== 'string' || hardware === '') bad(`costs.${k}.hardware must say what hardware`);
    if (typeof source !== 'string' || source === '') bad(`costs.${k}.source must say where the value comes from`);
    entries[k] = {
      ns: ns as number,
      kind: kind as CostEntry['kind'],
      hardware: hardware as string,
      source: source as string,
    };
    table[k] = ns as number;
  }
  return {
    name: o.name as string,
    description: typeof o.description === 'string' ? o.description : '',
    file,
    entries,
    costs: table,
  };
}

/** Load a cost table: a builtin name (default-2008, server-2023) or a JSON file. */
export function loadCostModel(nameOrFile: string = DEFAULT_COST_MODEL): CostModel {
  const builtin = (BUILTIN_COST_MODELS as Record<string, string>)[nameOrFile];
  const file = builtin !== undefined ? `${costModelsDir()}${builtin}` : nameOrFile;
  if (!existsSync(file))
    throw new RangeError(
      `--cost-model: no such file "${nameOrFile}" (give a JSON file or one of ${Object.keys(BUILTIN_COST_MODELS).join(', ')})`,
    );
  let json: unknown;
  try {
    json = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new RangeError(`cost model ${file}: not valid JSON (${(e as Error).message})`);
  }
  return parseCostModel(json, file);
}
