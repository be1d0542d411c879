/*
 * Suite "vmalloc": lib/test_vmalloc.c, the kernel's own vmalloc benchmark, over the guest's
 * real vmap layer (guest/mm/vmalloc.ts) -- in-process, with the reference KernelPageTables
 * (guest/mm/kernel_pt_ref.ts) and no hypervisor, so it measures the vmap layer itself: area
 * allocation, the lazy purge, vmap blocks. Flushes here cost a walk of a Map, not a
 * shootdown; the vunmap suite is where shootdowns are measured. The reference's own
 * bookkeeping (a Map entry and a Set per PTE) dominates PTE-heavy cases; `--kpt flat` swaps
 * in bench/workers/flat-kpt.ts to show the layer alone, `--kpt ref,flat` both side by side.
 *
 * The module's parameters, by the same names: test_loop_count (--loops), nr_threads
 * (--threads; a comma list runs each count), run_test_mask (the kernel's bit numbers),
 * nr_pages, test_repeat_count (the runner's --repeat is its own: repetitions of a whole case). Each case gets a fresh VmallocSpace in a
 * SharedArrayBuffer and a fresh piscina pool of nr_threads workers that all attach to it
 * (the layer's locks are Atomics-based: that is the real concurrent case), meet at a start
 * barrier and run the test function. As test_vmalloc, each worker reports the average
 * microseconds per run of the test; the ns per iteration of the main loop go on the chart.
 * Cases run one at a time (they are all timing-sensitive); --jobs N overlaps N of them.
 */
import { existsSync } from 'node:fs';
import { cpus } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { PAGE_SIZE } from '../src/abi/xen.js';
import { MAX_VCPUS_PER_DOMAIN, X86_64_LAYOUT } from '../src/abi/layout.js';
import { KernelPageTablesRef } from '../guest/mm/kernel_pt_ref.js';
import {
  fls,
  lazyMaxPagesFor,
  MAX_POOL_PAGES,
  VmallocSpace,
  X86_64_VMALLOC_START,
  type VmallocConfig,
  type VunmapStrategy,
} from '../guest/mm/vmalloc.js';
import type { Row, SuiteOptions } from './report.js';
import { FlatKernelPageTables } from './workers/flat-kpt.js';
import {
  BARRIER_WORDS,
  VMALLOC_TESTS,
  VMALLOC_TESTS_NOT_MODELLED,
  type KptKind,
  type VmallocTask,
  type VmallocTaskResult,
  type VmallocTestDesc,
} from './workers/protocol.js';

/** test_vmalloc.c's default test_loop_count. */
export const MODULE_LOOP_COUNT = 1_000_000;
/** Default scale: 1/100 of the module's loops (= the selftest's smoke mode, 10,000). */
export const DEFAULT_LOOP_SCALE = 100;
/** --quick: 1/1000. */
export const QUICK_LOOP_SCALE = 1000;
/** run_test_mask with every modelled case. */
export const ALL_MODELLED_MASK = VMALLOC_TESTS.reduce((m, t) => m | t.bit, 0);
/** The module's default run_test_mask (INT_MAX): every case. */
const MODULE_DEFAULT_MASK = 0x7fffffff;
const MAX_LOOPS = 1e9;
const MAX_REPEAT = 1000;
const MAX_NR_PAGES = 4096;
/** long_busy_list_alloc_test keeps this many 1-page areas alive. */
const LONG_BUSY = 15000;

/** Command-line parameters the suite accepts: 'value' takes an argument. */
export const VMALLOC_PARAMS: Readonly<Record<string, 'value' | 'flag'>> = {
  test_loop_count: 'value',
  loops: 'value',
  nr_threads: 'value',
  threads: 'value',
  run_test_mask: 'value',
  nr_pages: 'value',
  test_repeat_count: 'value',
  strategy: 'value',
  kpt: 'value',
  jobs: 'value',
  seed: 'value',
};

export interface VmallocBenchOptions {
  loops: number;
  /** The scale to print: MODULE_LOOP_COUNT / loops. */
  loopScale: number;
  threads: number[];
  mask: number;
  tests: VmallocTestDesc[];
  nrPages: number;
  repeat: number;
  strategies: VunmapStrategy[];
  kpts: KptKind[];
  jobs: number;
  seed: number;
}

function intParam(name: string, raw: string, min: number, max: number, accepted: string): number {
  const v = /^(0x[0-9a-f]+|-?\d+)$/i.test(raw.trim()) ? Number(raw.trim()) : NaN;
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw new RangeError(`vmalloc: --${name} ${JSON.stringify(raw)} is not accepted; expected ${accepted}`);
  }
  return v;
}

/** Validate the suite's parameters (module names or their short aliases) and fill in defaults. */
export function parseVmallocOptions(params: Readonly<Record<string, string>> = {}, quick = false): VmallocBenchOptions {
  for (const k of Object.keys(params)) {
    if (!(k in VMALLOC_PARAMS)) {
      throw new RangeError(
        `vmalloc: unknown parameter --${k}; accepted: ${Object.keys(VMALLOC_PARAMS)
          .map((p) => `--${p}`)
          .join(', ')}`,
      );
    }
  }
  const pick = (long: string, short?: string): [string, string] | undefined => {
    if (short !== undefined && params[long] !== undefined && params[short] !== undefined) {
      throw new RangeError(`vmalloc: --${long} and --${short} are the same parameter; give one`);
    }
    if (params[long] !== undefined) return [long, params[long]!];
    if (short !== undefined && params[short] !== undefined) return [short, params[short]!];
    return undefined;
  };
  const cores = cpus().length;

  const loopsP = pick('test_loop_count', 'loops');
  const loops = loopsP
    ? intParam(
        loopsP[0],
        loopsP[1],
        1,
        MAX_LOOPS,
        `an integer in 1..${MAX_LOOPS} (the module's default is ${MODULE_LOOP_COUNT})`,
      )
    : MODULE_LOOP_COUNT / (quick ? QUICK_LOOP_SCALE : DEFAULT_LOOP_SCALE);

  const threadsP = pick('nr_threads', 'threads');
  let threads: number[];
  if (threadsP) {
    const accepted = `a comma list of thread counts in 0..${MAX_VCPUS_PER_DOMAIN} (0 = 1, as the module), e.g. 1,2,4`;
    threads = threadsP[1]
      .split(',')
      .map((t) => Math.max(1, intParam(threadsP[0], t, 0, MAX_VCPUS_PER_DOMAIN, accepted)));
  } else {
    threads = [1, Math.min(2, cores)];
  }
  threads = [...new Set(threads)].sort((a, b) => a - b);

  const maskP = pick('run_test_mask');
  const accepted = VMALLOC_TESTS.map((t) => `${t.bit} ${t.name}`).join(', ');
  let mask = ALL_MODELLED_MASK;
  if (maskP) {
    const m = intParam('run_test_mask', maskP[1], 1, MODULE_DEFAULT_MASK, `a bit mask of: ${accepted}`);
    if (m !== MODULE_DEFAULT_MASK) {
      for (let bit = 1; bit <= m; bit *= 2) {
        if (!(m & bit) || ALL_MODELLED_MASK & bit) continue;
        const what = VMALLOC_TESTS_NOT_MODELLED[bit] ?? 'no such test in lib/test_vmalloc.c';
        throw new RangeError(`vmalloc: run_test_mask bit ${bit} (${what}) is not run here; accepted bits: ${accepted}`);
      }
    }
    mask = m & ALL_MODELLED_MASK;
  }

  const nrPagesP = pick('nr_pages');
  const nrPages = nrPagesP
    ? Math.max(1, intParam('nr_pages', nrPagesP[1], 0, MAX_NR_PAGES, `an integer in 0..${MAX_NR_PAGES} (0 = 1)`))
    : 1;

  const repeatP = pick('test_repeat_count');
  const repeat = repeatP ? intParam(repeatP[0], repeatP[1], 1, MAX_REPEAT, `an integer in 1..${MAX_REPEAT}`) : 1;

  const strategyP = pick('strategy');
  let strategies: VunmapStrategy[] = ['lazy'];
  if (strategyP) {
    strategies = [...new Set(strategyP[1].split(',').map((s) => s.trim()))].map((s) => {
      if (s !== 'lazy' && s !== 'eager') {
        throw new RangeError(
          `vmalloc: --strategy ${JSON.stringify(s)} is not accepted; expected lazy, eager or lazy,eager`,
        );
      }
      return s;
    });
  }

  const kptP = pick('kpt');
  let kpts: KptKind[] = ['ref'];
  if (kptP) {
    kpts = [...new Set(kptP[1].split(',').map((s) => s.trim()))].map((s) => {
      if (s !== 'ref' && s !== 'flat') {
        throw new RangeError(`vmalloc: --kpt ${JSON.stringify(s)} is not accepted; expected ref, flat or ref,flat`);
      }
      return s;
    });
  }

  const jobsP = pick('jobs');
  const jobs = jobsP
    ? intParam(
        'jobs',
        jobsP[1],
        1,
        Math.max(1, cores * 4),
        `an integer in 1..${Math.max(1, cores * 4)} (cases run at once)`,
      )
    : 1;

  const seedP = pick('seed');
  const seed = seedP ? intParam('seed', seedP[1], 0, 0xffffffff, 'an integer in 0..4294967295') : 1;

  return {
    loops,
    loopScale: MODULE_LOOP_COUNT / loops,
    threads,
    mask,
    tests: VMALLOC_TESTS.filter((t) => mask & t.bit),
    nrPages,
    repeat,
    strategies,
    kpts,
    jobs,
    seed,
  };
}

/** Everything runBench checks before it starts: the options and each case's geometry. */
export function checkVmallocOptions(params: Readonly<Record<string, string>>, quick: boolean): void {
  const o = parseVmallocOptions(params, quick);
  for (const t of o.threads) caseGeometry(o, t);
}

/** The VmallocSpace geometry one case needs: window, area table, per-worker pfns. */
export function caseGeometry(o: VmallocBenchOptions, nrThreads: number): { config: VmallocConfig; pfnCount: number } {
  const junk = fls(nrThreads) * ((32 * 1024 * 1024) / PAGE_SIZE); // full_fit's junk_length
  const has = (name: string): boolean => o.tests.some((t) => t.name === name);
  const ptrPages = (n: number): number => Math.ceil((8 * n) / PAGE_SIZE) + 1;
  // Pages of vmalloc space (guards included) and areas one worker holds at its peak.
  let pages = o.nrPages + 1 + 2 * 1024; // fix_size / vm_map_ram / the largest aligned hole
  let areas = 8;
  if (has('full_fit_alloc_test')) {
    pages = Math.max(pages, 4 * junk + 2 * ptrPages(junk) + 4);
    areas = Math.max(areas, 2 * junk + 4);
  }
  if (has('long_busy_list_alloc_test')) {
    pages = Math.max(pages, 2 * LONG_BUSY + ptrPages(LONG_BUSY) + 103);
    areas = Math.max(areas, LONG_BUSY + 4);
  }
  if (has('random_size_alloc_test')) pages = Math.max(pages, 101);
  const lazyMax = lazyMaxPagesFor(nrThreads);
  // Lazy areas may hold up to lazy_max_pages (plus one area) before the purge.
  const needPages = nrThreads * pages + 2 * lazyMax + 8192;
  const windowPages = Math.max(1 << 18, Math.ceil(needPages / 4096) * 4096);
  if (windowPages > MAX_POOL_PAGES) {
    throw new RangeError(
      `vmalloc: nr_threads ${nrThreads} with ${has('full_fit_alloc_test') ? 'full_fit_alloc_test' : 'these tests'} needs a ` +
        `${windowPages}-page vmalloc window; the model accepts at most ${MAX_POOL_PAGES} pages: use fewer threads` +
        (has('full_fit_alloc_test') ? ' or drop bit 2 from run_test_mask' : ''),
    );
  }
  const maxAreas = Math.min(1 << 22, nrThreads * areas + Math.ceil(lazyMax / 2) + 4096);
  // Pages a worker allocates: the areas' pages (full_fit's junk and pointer arrays, ...).
  let pfnCount = Math.max(o.nrPages, 100) + 256;
  if (has('full_fit_alloc_test')) pfnCount = Math.max(pfnCount, 2 * junk + 2 * ptrPages(junk) + 256);
  if (has('long_busy_list_alloc_test')) pfnCount = Math.max(pfnCount, LONG_BUSY + ptrPages(LONG_BUSY) + 101 + 256);
  return {
    config: {
      layout: X86_64_LAYOUT,
      numOnlineCpus: nrThreads,
      vmallocStart: X86_64_VMALLOC_START,
      vmallocEnd: X86_64_VMALLOC_START + windowPages * PAGE_SIZE,
      maxAreas,
    },
    pfnCount,
  };
}

function workerUrl(): URL {
  const here = import.meta.url;
  const url = here.endsWith('.ts')
    ? new URL('../dist/bench/workers/vmalloc-worker.js', here)
    : new URL('./workers/vmalloc-worker.js', here);
  if (!existsSync(fileURLToPath(url))) {
    throw new Error(`vmalloc bench: ${fileURLToPath(url)} is missing; build first (npx tsc -p tsconfig.json)`);
  }
  return url;
}

interface Case {
  strategy: VunmapStrategy;
  kpt: KptKind;
  threads: number;
  test: VmallocTestDesc;
}

interface CaseResult {
  c: Case;
  workers: VmallocTaskResult[];
  purges: number;
  flushes: number;
}

/** A handle for the main thread: it only creates the space and checks it afterwards. */
const MAIN_CPU = MAX_VCPUS_PER_DOMAIN - 1;
const mainDeps = () => ({
  cpu: MAIN_CPU,
  kpt: new KernelPageTablesRef(),
  refs: { getPage: () => {}, putPage: () => {} },
  allocator: {
    allocPage: (): number => {
      throw new Error('vmalloc bench: the main thread does not allocate');
    },
    freePage: (): void => {},
  },
});

async function runCase(c: Case, o: VmallocBenchOptions, filename: string): Promise<CaseResult> {
  const { config, pfnCount } = caseGeometry(o, c.threads);
  const vm = VmallocSpace.create({ ...config, strategy: c.strategy }, mainDeps());
  const barrierSab = new SharedArrayBuffer(BARRIER_WORDS * 4);
  const windowStart = config.vmallocStart!;
  const flatTable =
    c.kpt === 'flat' ? FlatKernelPageTables.createTable((config.vmallocEnd! - windowStart) / PAGE_SIZE) : null;
  const pool = new Piscina({
    filename,
    minThreads: c.threads,
    maxThreads: c.threads,
    concurrentTasksPerWorker: 1,
    idleTimeout: 60_000,
  });
  try {
    const tasks: Promise<VmallocTaskResult>[] = [];
    for (let w = 0; w < c.threads; w++) {
      const task: VmallocTask = {
        vmallocSab: vm.sab,
        barrierSab,
        test: c.test.name,
        worker: w,
        nrThreads: c.threads,
        numOnlineCpus: c.threads,
        loops: o.loops,
        repeat: o.repeat,
        warmupLoops: warmupLoops(o.loops),
        nrPages: o.nrPages,
        seed: o.seed,
        pfnBase: 0x1000 + w * pfnCount,
        pfnCount,
        kpt: c.kpt,
        windowStart,
        flatTable,
      };
      tasks.push(pool.run(task) as Promise<VmallocTaskResult>);
    }
    const settled = await Promise.allSettled(tasks);
    const bad = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (bad) {
      throw new Error(
        `vmalloc bench: ${c.test.name}, ${c.threads} thread(s), ${c.strategy}, ${c.kpt} kpt: ${(bad.reason as Error)?.message ?? bad.reason}`,
      );
    }
    const workers = settled.map((s) => (s as PromiseFulfilledResult<VmallocTaskResult>).value);
    const problems = vm.checkInvariants();
    if (problems.length > 0) {
      throw new Error(
        `vmalloc bench: ${c.test.name} left the vmap layer inconsistent: ${problems.slice(0, 3).join('; ')}`,
      );
    }
    const st = vm.stats();
    return { c, workers, purges: st.purges, flushes: st.flushes };
  } finally {
    await pool.destroy();
  }
}

const fmtNs = (ns: number): string => (Number.isFinite(ns) ? (ns >= 100 ? ns.toFixed(0) : ns.toFixed(1)) : 'n/a');

export async function vmallocSuite(opts: SuiteOptions = {}): Promise<Row[]> {
  const o = parseVmallocOptions(opts.params, opts.quick);
  const say = opts.progress ?? (() => {});
  const describe = opts.describe ?? (() => {});
  const cores = cpus().length;
  // Check every geometry before the first case runs: nothing is left half-done.
  for (const t of o.threads) caseGeometry(o, t);
  const filename = workerUrl().href;

  const kptText: Record<KptKind, string> = {
    ref: 'the reference KernelPageTables (guest/mm/kernel_pt_ref.ts; its Map/Set bookkeeping is most of the cost of PTE-heavy cases)',
    flat: 'a flat typed-array page table shared by the workers (bench/workers/flat-kpt.ts: the layer alone)',
  };
  describe(
    "Measures the vmap layer itself, in-process, no hypervisor: the guest's VmallocSpace (guest/mm/vmalloc.ts) over a SharedArrayBuffer, with " +
      o.kpts.map((k) => kptText[k]).join('; and with ') +
      '. A TLB flush costs a Map walk or a counter here, not a shootdown' +
      (o.kpts.includes('flat') ? '.' : '; --kpt flat (or ref,flat) shows the layer without the reference bookkeeping.'),
  );
  describe(
    `test_loop_count ${o.loops.toLocaleString('en-US')} (the module's ${MODULE_LOOP_COUNT.toLocaleString('en-US')} scaled 1/${formatScale(o.loopScale)}; ` +
      `--loops N to change), test_repeat_count ${o.repeat}, nr_pages ${o.nrPages}, run_test_mask ${o.mask} (0x${o.mask.toString(16)}), ` +
      `nr_threads ${o.threads.join(',')}, strategy ${o.strategies.join(',')}, kpt ${o.kpts.join(',')}, seed ${o.seed}; ` +
      `${o.jobs === 1 ? 'cases one at a time' : `${o.jobs} cases at once (timings share cores)`}.`,
  );
  describe(
    'Each case: a fresh VmallocSpace (x86_64 layout, num_online_cpus = nr_threads) shared by nr_threads piscina workers, which run ' +
      `an untimed warm-up of ${warmupLoops(o.loops).toLocaleString('en-US')} loops, then meet at a start barrier. value = average ` +
      'microseconds per run of the test function per worker, setup included, as test_vmalloc reports it; the note and the charts ' +
      'give ns per iteration of the main loop alone (charts: mean of the workers).',
  );
  for (const t of o.tests) if (t.deviation) describe(`${t.name}: ${t.deviation}.`);
  const over = o.threads.filter((t) => t > cores);
  if (over.length) describe(`nr_threads ${over.join(',')} exceed the ${cores} cores: those workers time-share.`);

  const cases: Case[] = [];
  for (const kpt of o.kpts) {
    for (const strategy of o.strategies) {
      for (const threads of o.threads) for (const test of o.tests) cases.push({ kpt, strategy, threads, test });
    }
  }
  const results: CaseResult[] = new Array(cases.length);
  let next = 0;
  let done = 0;
  const lane = async (): Promise<void> => {
    while (next < cases.length) {
      const i = next++;
      const c = cases[i]!;
      say(
        `${c.test.name}, ${c.threads} thread${c.threads > 1 ? 's' : ''}, ${seriesOf(c, o)} (case ${done + 1}/${cases.length})`,
      );
      results[i] = await runCase(c, o, filename);
      done++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.jobs, cases.length) }, lane));

  const rows: Row[] = [];
  for (const { c, workers, purges, flushes } of results) {
    for (const w of workers) {
      const label =
        `${c.test.name}${o.strategies.length > 1 || o.kpts.length > 1 ? ` (${seriesOf(c, o)})` : ''}, ` +
        `${c.threads} thread${c.threads > 1 ? 's' : ''}${c.threads > 1 ? `, worker ${w.worker}` : ''}`;
      let note = `${fmtNs(w.nsPerIteration)} ns/iteration`;
      if (w.failed > 0) note += `; passed ${w.passed} failed ${w.failed}: ${w.errors[0] ?? ''}`;
      if (w.worker === 0)
        note += `; ${purges} purge${purges === 1 ? '' : 's'}, ${flushes} flush${flushes === 1 ? '' : 'es'}`;
      rows.push({
        case: label,
        value: w.usecPerTest,
        unit: 'us/test',
        note,
        group: c.test.name,
        series: seriesOf(c, o),
        x: c.threads,
        xLabel: 'threads',
        y: w.nsPerIteration,
        yUnit: 'ns/iteration',
        worker: w.worker,
      });
    }
  }
  return rows;
}

/** The line a case is drawn on: its strategy, plus the page tables when several ran. */
function seriesOf(c: Case, o: VmallocBenchOptions): string {
  return o.kpts.length > 1 ? `${c.strategy}, ${c.kpt} kpt` : c.strategy;
}

/** Untimed warm-up iterations before the barrier: enough for the JIT, bounded by the run. */
export function warmupLoops(loops: number): number {
  return Math.min(loops, Math.max(2000, Math.floor(loops / 10)));
}

function formatScale(s: number): string {
  return Number.isInteger(s) ? s.toLocaleString('en-US') : s.toPrecision(3);
}
