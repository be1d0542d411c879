/*
 * The bench's outputs, by structure only (never timings): SVG charts are well-formed XML
 * with a polyline point per datum, ticks, axis labels and a legend; results.csv/json carry
 * the rows with the machine, commit and command; report.html is self-contained and renders
 * in a real browser (headless chromium: /usr/bin/chromium is required); the vmalloc suite
 * runs on real piscina workers (from dist/) and returns well-shaped rows; bad options get
 * RangeErrors naming what is accepted.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { inflateSync } from 'node:zlib';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { barChart, escapeXml, lineChart, niceTicks } from '../bench/charts.js';
import {
  commandLine,
  CSV_COLUMNS,
  csvField,
  gitCommit,
  headlineRatios,
  lineGroups,
  suiteCharts,
  toCsv,
  writeResults,
  type BenchResults,
  type Row,
} from '../bench/report.js';
import { formatTable, machineLabel, parseBenchArgs, progressLine, runBench, SUITES } from '../bench/run.js';
import { ALL_MODELLED_MASK, caseGeometry, parseVmallocOptions } from '../bench/vmalloc.js';
import { VMALLOC_TESTS } from '../bench/workers/protocol.js';

const CHROMIUM = '/usr/bin/chromium';
const tmpDirs: string[] = [];
const tmp = (prefix: string): string => {
  const d = mkdtempSync(join(tmpdir(), prefix));
  tmpDirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

/* ----------------------------------------------------------------- helpers */

/**
 * A small XML well-formedness checker: every tag balanced and properly nested, one root,
 * attributes quoted and not repeated, no raw '<' or bare '&' in text. Returns the problems.
 */
function xmlProblems(xml: string): string[] {
  const bad: string[] = [];
  const stack: string[] = [];
  let roots = 0;
  const token = /<!--[\s\S]*?-->|<\?[\s\S]*?\?>|<[^>]*>|[^<]+|</g;
  for (const m of xml.matchAll(token)) {
    const t = m[0];
    if (t.startsWith('<!--') || t.startsWith('<?')) continue;
    if (t === '<') {
      bad.push(`raw '<' at ${m.index}`);
      continue;
    }
    if (!t.startsWith('<')) {
      for (const amp of t.matchAll(/&[^;\s]*;?/g)) {
        if (!/^&(#\d+|#x[0-9a-f]+|lt|gt|amp|quot|apos);$/i.test(amp[0])) bad.push(`bad entity ${amp[0]} at ${m.index}`);
      }
      if (stack.length === 0 && t.trim()) bad.push(`text outside the root at ${m.index}`);
      continue;
    }
    const close = /^<\/([A-Za-z][\w:.-]*)\s*>$/.exec(t);
    if (close) {
      const open = stack.pop();
      if (open !== close[1]) bad.push(`</${close[1]}> closes <${open ?? 'nothing'}> at ${m.index}`);
      continue;
    }
    const open = /^<([A-Za-z][\w:.-]*)((?:\s+[A-Za-z_:][\w:.-]*\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>$/.exec(t);
    if (!open) {
      bad.push(`malformed tag ${t.slice(0, 60)} at ${m.index}`);
      continue;
    }
    const names = [...open[2]!.matchAll(/([A-Za-z_:][\w:.-]*)\s*=/g)].map((a) => a[1]);
    if (new Set(names).size !== names.length) bad.push(`repeated attribute in ${t.slice(0, 60)}`);
    if (stack.length === 0) roots++;
    if (open[3] !== '/') stack.push(open[1]!);
  }
  if (stack.length) bad.push(`unclosed: ${stack.join(' > ')}`);
  if (roots !== 1) bad.push(`${roots} root elements`);
  return bad;
}

const count = (s: string, re: RegExp): number => [...s.matchAll(re)].length;
const polylinePoints = (svg: string): number[] =>
  [...svg.matchAll(/<polyline points="([^"]*)"/g)].map((m) => m[1]!.trim().split(/\s+/).length);
const textsOf = (svg: string): string[] => [...svg.matchAll(/<text[^>]*>([^<]*)<\/text>/g)].map((m) => m[1]!);

/** The future "vunmap" suite's shape: 4 strategies x vCPUs 1, 2, 4, 8, ns per op. */
function syntheticVunmapRows(): Row[] {
  // eager grows with the vCPUs, lazy stays flat: section 3 of the reference, roughly.
  const cost: Record<string, number[]> = {
    eager: [14700, 33600, 49500, 70631],
    lazy: [2900, 3000, 2800, 2900],
    'vmap-pages': [3100, 3200, 3050, 3150],
    'unmap-aliases': [3600, 4100, 4700, 5600],
  };
  const rows: Row[] = [];
  for (const [strategy, ys] of Object.entries(cost)) {
    [1, 2, 4, 8].forEach((vcpus, i) => {
      rows.push({
        case: `${strategy}, ${vcpus} vCPUs`,
        value: ys[i]!,
        unit: 'ns/op',
        series: strategy,
        x: vcpus,
        xLabel: 'vCPUs',
      });
    });
  }
  return rows;
}

/** Rows like the hypercall suite's: no series, mixed units, a ratio in a note. */
function syntheticHypercallRows(): Row[] {
  return [
    { case: 'raw Atomics ping-pong (floor)', value: 210, unit: 'ns/round trip' },
    { case: 'null hypercall round trip', value: 290, unit: 'ns/call', note: '1.38x the floor (target <= 1.5x)' },
    { case: 'validated L1 mmu_update, batch 1', value: 1.9, unit: 'M updates/s' },
    { case: 'validated L1 mmu_update, batch 512', value: 9.4, unit: 'M updates/s', note: 'target >= 5 M/s: met' },
    { case: 'pin + unpin a full L1 (512 RW entries)', value: 31, unit: 'us' },
  ];
}

/** Rows like the vmalloc suite's: per worker, one group per test, threads on x. */
function syntheticVmallocRows(): Row[] {
  const rows: Row[] = [];
  for (const test of ['fix_size_alloc_test', 'long_busy_list_alloc_test', 'vm_map_ram_test']) {
    for (const threads of [1, 2]) {
      for (let w = 0; w < threads; w++) {
        const ns = 1000 * threads + 100 * w;
        rows.push({
          case: `${test}, ${threads} threads, worker ${w}`,
          value: ns * 10,
          unit: 'us/test',
          note: `${ns} ns/iteration`,
          group: test,
          series: 'lazy',
          x: threads,
          xLabel: 'threads',
          y: ns,
          yUnit: 'ns/iteration',
          worker: w,
        });
      }
    }
  }
  return rows;
}

function syntheticResults(): BenchResults {
  return {
    schema: 'pvmmu-bench/1',
    startedAt: '2025-01-31T12:34:56.000Z',
    finishedAt: '2025-01-31T12:35:06.500Z',
    machine: { cpuModel: 'Test CPU, "quoted"', cores: 2, node: process.version, os: 'linux test x64', memoryGiB: 8 },
    commit: 'abc1234',
    command: "node dist/bench/run.js vunmap --note 'a, b'",
    options: { quick: false, params: {} },
    suites: {
      vunmap: { rows: syntheticVunmapRows(), notes: ['synthetic data <for the chart test> & such'] },
      hypercall: { rows: syntheticHypercallRows(), notes: [] },
      vmalloc: { rows: syntheticVmallocRows(), notes: ['per worker'] },
    },
  };
}

/** RFC 4180 parser for the CSV test. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\r' && text[i + 1] === '\n') {
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
      i++;
    } else field += c;
  }
  if (field !== '' || row.length) rows.push([...row, field]);
  return rows;
}

/* ------------------------------------------------------------------ charts */

describe('bench charts (SVG)', () => {
  it('draws the vunmap shape: one polyline per strategy, a point per vCPU count, axes, ticks, legend', () => {
    const rows = syntheticVunmapRows();
    const charts = suiteCharts('vunmap', rows);
    expect(charts).toHaveLength(1);
    const svg = charts[0]!;
    expect(xmlProblems(svg)).toEqual([]);
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(polylinePoints(svg)).toEqual([4, 4, 4, 4]);
    expect(count(svg, /<circle cx=[^>]*><title>/g)).toBe(16);
    const texts = textsOf(svg);
    expect(texts).toContain('vCPUs (log scale)');
    expect(texts).toContain('ns/op');
    for (const s of ['eager', 'lazy', 'vmap-pages', 'unmap-aliases']) expect(texts).toContain(s);
    for (const x of ['1', '2', '4', '8']) expect(texts).toContain(x);
    // y ticks start at 0 and cover the largest value
    expect(texts).toContain('0');
    expect(texts).toContain('80,000');
    expect(svg).toContain('class="legend"');
  });

  it('computes the headline ratios of a strategies-by-vCPUs suite', () => {
    const h = headlineRatios(syntheticVunmapRows());
    expect(h).toContain('eager 24.4x lazy at 8 vCPUs');
    expect(h).toContain('unmap-aliases 1.93x lazy at 8 vCPUs');
    expect(h).toContain('eager 4.80x from 1 vCPU to 8 vCPUs');
    expect(h).toContain('lazy 1.00x from 1 vCPU to 8 vCPUs');
    expect(headlineRatios(syntheticHypercallRows())).toEqual([
      'null hypercall round trip: 1.38x the floor (target <= 1.5x)',
    ]);
    // groups are not compared with each other, only within
    expect(headlineRatios(syntheticVmallocRows())).toEqual([
      'fix_size_alloc_test: 2.05x from 1 thread to 2 threads',
      'long_busy_list_alloc_test: 2.05x from 1 thread to 2 threads',
      'vm_map_ram_test: 2.05x from 1 thread to 2 threads',
    ]);
  });

  it('averages rows that share a point (per-worker rows) and draws one chart per group', () => {
    const groups = lineGroups(syntheticVmallocRows());
    expect(groups.map((g) => g.name)).toEqual(['fix_size_alloc_test', 'long_busy_list_alloc_test', 'vm_map_ram_test']);
    const [sum, n] = groups[0]!.series.get('lazy')!.get(2)!;
    expect(sum / n).toBe(2050);
    const charts = suiteCharts('vmalloc', syntheticVmallocRows());
    expect(charts).toHaveLength(3);
    for (const svg of charts) {
      expect(xmlProblems(svg)).toEqual([]);
      expect(polylinePoints(svg)).toEqual([2]);
      expect(textsOf(svg)).toContain('threads');
      expect(textsOf(svg)).toContain('ns/iteration');
    }
  });

  it('draws single-valued suites as bar charts, one per unit family', () => {
    const charts = suiteCharts('hypercall', syntheticHypercallRows());
    expect(charts).toHaveLength(3); // ns (round trip + call), M updates/s, us
    for (const svg of charts) expect(xmlProblems(svg)).toEqual([]);
    expect(count(charts[0]!, /<rect x="[^"]*" y="[^"]*" width="[^"]*" height="[^"]*" fill="#0072B2">/g)).toBe(2);
    expect(textsOf(charts[0]!)).toContain('null hypercall round trip');
    expect(textsOf(charts[0]!)).toContain('290 ns/call'); // mixed units: each value says its own
    expect(textsOf(charts[1]!)).toContain('M updates/s');
    // one x only: bars of the plotted figure
    const one = suiteCharts(
      'vmalloc',
      syntheticVmallocRows().filter((r) => r.x === 1),
    );
    expect(one).toHaveLength(1);
    expect(count(one[0]!, /<rect [^>]*fill="#0072B2">/g)).toBe(3);
  });

  it('escapes text and stays well-formed with hostile labels', () => {
    const name = `a<b & "c" 'd'>`;
    const svg = lineChart({
      title: name,
      xLabel: 'x & y',
      yLabel: '<ns>',
      series: [
        {
          name,
          points: [
            { x: 1, y: 1 },
            { x: 3, y: 2 },
          ],
        },
      ],
    });
    expect(xmlProblems(svg)).toEqual([]);
    expect(svg).toContain(escapeXml(name));
    const bars = barChart({
      title: name,
      valueLabel: 'us',
      bars: [
        { label: name, value: 3 },
        { label: 'neg', value: -1 },
      ],
    });
    expect(xmlProblems(bars)).toEqual([]);
    expect(xmlProblems('<svg><g></svg>')).not.toEqual([]); // the checker itself bites
    expect(xmlProblems('<svg>a & b</svg>')).not.toEqual([]);
  });

  it('refuses what it cannot draw, with RangeErrors', () => {
    expect(() => lineChart({ title: 't', xLabel: 'x', yLabel: 'y', series: [] })).toThrow(RangeError);
    expect(() =>
      lineChart({ title: 't', xLabel: 'x', yLabel: 'y', series: [{ name: 's', points: [{ x: 1, y: NaN }] }] }),
    ).toThrow(/non-finite/);
    expect(() => barChart({ title: 't', valueLabel: 'v', bars: [] })).toThrow(RangeError);
  });

  it('picks nice ticks that cover the range with equal steps', () => {
    for (const [lo, hi] of [
      [0, 70631],
      [0, 1],
      [0, 0.037],
      [-5, 17],
      [3, 3],
    ] as const) {
      const t = niceTicks(lo, hi, 5);
      expect(t[0]!).toBeLessThanOrEqual(lo);
      expect(t[t.length - 1]!).toBeGreaterThanOrEqual(hi);
      expect(t.length).toBeGreaterThanOrEqual(2);
      expect(t.length).toBeLessThanOrEqual(12);
      const step = t[1]! - t[0]!;
      for (let i = 1; i < t.length; i++) expect(t[i]! - t[i - 1]!).toBeCloseTo(step, 9);
    }
  });
});

/* ----------------------------------------------------------- result files */

describe('bench result files', () => {
  it('writes results.csv with one line per row, the stamp on every line, RFC 4180 quoting', () => {
    const r = syntheticResults();
    const rows = parseCsv(toCsv(r));
    expect(rows[0]).toEqual([...CSV_COLUMNS]);
    const all = Object.entries(r.suites).flatMap(([s, v]) => v.rows.map((row) => ({ s, row })));
    expect(rows.length - 1).toBe(all.length);
    const col = (name: (typeof CSV_COLUMNS)[number]): number => CSV_COLUMNS.indexOf(name);
    rows.slice(1).forEach((line, i) => {
      const { s, row } = all[i]!;
      expect(line).toHaveLength(CSV_COLUMNS.length);
      expect(line[col('suite')]).toBe(s);
      expect(line[col('case')]).toBe(row.case);
      expect(Number(line[col('value')])).toBe(row.value);
      expect(line[col('series')]).toBe(row.series ?? '');
      expect(line[col('commit')]).toBe('abc1234');
      expect(line[col('cpu_model')]).toBe('Test CPU, "quoted"');
      expect(line[col('command')]).toBe(r.command);
      expect(line[col('node')]).toBe(process.version);
    });
    expect(csvField('a,"b"')).toBe('"a,""b"""');
    expect(csvField(NaN)).toBe('');
    expect(csvField(undefined)).toBe('');
  });

  it('writes results.json, results.csv and a self-contained report.html under a timestamped directory', () => {
    const base = tmp('pvmmu-results-');
    const r = syntheticResults();
    const dir = writeResults(r, base);
    expect(dir).toBe(join(base, '2025-01-31T12-34-56Z'));
    expect(writeResults(r, base)).toBe(join(base, '2025-01-31T12-34-56Z-2')); // never overwrites
    expect(readdirSync(dir).sort()).toEqual(['report.html', 'results.csv', 'results.json']);
    const json = JSON.parse(readFileSync(join(dir, 'results.json'), 'utf8')) as BenchResults;
    expect(json).toEqual(r);
    const html = readFileSync(join(dir, 'report.html'), 'utf8');
    // self-contained: nothing fetched
    expect(html).not.toMatch(/<script|<link|<img|<iframe|@import|url\(|\bsrc=|href="http/i);
    expect(html.replace(/xmlns="http:\/\/www\.w3\.org\/2000\/svg"/g, '')).not.toMatch(/https?:\/\//);
    // one table per suite, the charts, the headlines, the stamp
    expect(count(html, /<table>/g)).toBe(3);
    const svgs = [...html.matchAll(/<svg[\s\S]*?<\/svg>/g)].map((m) => m[0]);
    expect(svgs).toHaveLength(1 + 3 + 3);
    for (const svg of svgs) expect(xmlProblems(svg)).toEqual([]);
    expect(html).toContain('Headline ratios');
    expect(html).toContain('<span class="ratio">24.4x</span>');
    expect(html).toContain('abc1234');
    expect(html).toContain(escapeXml(r.command));
    expect(html).toContain('synthetic data &lt;for the chart test&gt; &amp; such');
  });

  it('stamps the commit ("unknown" outside a checkout) and the command line, shell-quoted', () => {
    expect(gitCommit(tmp('pvmmu-nogit-'))).toBe('unknown');
    expect(gitCommit(process.cwd())).toMatch(/^([0-9a-f]{4,40}|unknown)$/);
    expect(commandLine(['/usr/bin/node', 'dist/bench/run.js', 'vmalloc', '--note', "it's a b"], [])).toBe(
      `/usr/bin/node dist/bench/run.js vmalloc --note 'it'\\''s a b'`,
    );
    expect(commandLine([process.execPath, 'x.js'], ['--expose-gc'], 'node')).toBe('node --expose-gc x.js');
  });
});

/* ---------------------------------------------------------------- runner */

describe('bench runner', () => {
  it('keeps its exports and parses suites and options', () => {
    expect(Object.keys(SUITES)).toEqual(expect.arrayContaining(['hypercall', 'vmalloc']));
    expect(machineLabel()).toMatch(/cores, Node v/);
    expect(formatTable('t', [{ case: 'a', value: 1.5, unit: 'us' }])).toContain('1.50 us');
    expect(parseBenchArgs(['vmalloc', '--loops', '5', '--nr_threads=1,2', '--quick', '--out', '/x'])).toEqual({
      names: ['vmalloc'],
      quick: true,
      json: false,
      help: false,
      outDir: '/x',
      params: { loops: '5', nr_threads: '1,2' },
    });
    expect(() => parseBenchArgs(['--bogus'])).toThrow(/unknown option --bogus; accepted: --quick/);
    expect(() => parseBenchArgs(['--loops'])).toThrow(/--loops needs a value/);
    expect(() => parseBenchArgs(['--json=1'])).toThrow(RangeError);
  });

  it('refuses before running anything when a suite or a parameter does not fit', async () => {
    await expect(runBench(['nope'])).rejects.toThrow(/no bench suite "nope" \(suites: vunmap, vmalloc, hypercall/);
    await expect(runBench(['hypercall'], { params: { loops: '5' } })).rejects.toThrow(
      /--loops is a parameter of suite vmalloc/,
    );
    const out = tmp('pvmmu-refused-');
    await expect(runBench(['vmalloc'], { params: { loops: '0' }, outDir: out })).rejects.toThrow(RangeError);
    await expect(runBench(['vmalloc'], { params: { nr_threads: '64' }, outDir: out })).rejects.toThrow(/drop bit 2/);
    expect(readdirSync(out)).toEqual([]); // nothing half-done: no results directory
  });

  it('draws the progress line: spinner, suite, elapsed time, what runs, cut to the terminal', () => {
    const l = progressLine('vmalloc', 'fix_size_alloc_test, 2 threads (case 3/14)', 12345, 0, 120);
    expect(l).toMatch(/^\S \[vmalloc 12\.3 s\] fix_size_alloc_test, 2 threads \(case 3\/14\)$/);
    expect(progressLine('vmalloc', 'x'.repeat(200), 0, 1, 40).length).toBeLessThanOrEqual(39);
  });
});

/* ------------------------------------------------------------ vmalloc suite */

describe('vmalloc suite options', () => {
  it('defaults to the module parameters with the loop count scaled', () => {
    const o = parseVmallocOptions({});
    expect(o.loops).toBe(10_000);
    expect(parseVmallocOptions({}, true).loops).toBe(1000);
    expect(o.mask).toBe(ALL_MODELLED_MASK);
    expect(o.tests.map((t) => t.name)).toEqual(VMALLOC_TESTS.map((t) => t.name));
    expect(o.nrPages).toBe(1);
    expect(o.repeat).toBe(1);
    expect(o.strategies).toEqual(['lazy']);
    expect(o.kpts).toEqual(['ref']);
    expect(parseVmallocOptions({ run_test_mask: String(0x7fffffff) }).mask).toBe(ALL_MODELLED_MASK);
    expect(parseVmallocOptions({ run_test_mask: '1025' }).tests.map((t) => t.name)).toEqual([
      'fix_size_alloc_test',
      'vm_map_ram_test',
    ]);
    expect(parseVmallocOptions({ nr_threads: '0,4,2,2' }).threads).toEqual([1, 2, 4]);
  });

  it('refuses bad options with RangeErrors that say what is accepted', () => {
    const bad: Array<[Record<string, string>, RegExp]> = [
      [{ loops: '0' }, /--loops "0" is not accepted; expected an integer in 1\.\./],
      [{ test_loop_count: 'many' }, /--test_loop_count "many"/],
      [{ loops: '5', test_loop_count: '5' }, /same parameter/],
      [{ nr_threads: '65' }, /comma list of thread counts in 0\.\.64/],
      [{ run_test_mask: '64' }, /bit 64 \(align_shift_alloc_test.*accepted bits: 1 fix_size_alloc_test/],
      [{ run_test_mask: '4096' }, /bit 4096 \(no such test/],
      [{ nr_pages: '5000' }, /0\.\.4096/],
      [{ strategy: 'lazy,sloppy' }, /expected lazy, eager/],
      [{ kpt: 'hw' }, /expected ref, flat/],
      [{ bogus: '1' }, /unknown parameter --bogus; accepted: --test_loop_count/],
    ];
    for (const [params, msg] of bad) expect(() => parseVmallocOptions(params), JSON.stringify(params)).toThrow(msg);
    for (const [params] of bad) expect(() => parseVmallocOptions(params)).toThrow(RangeError);
    // full_fit's junk grows with fls(nr_threads): 64 threads do not fit the model's window
    expect(() => caseGeometry(parseVmallocOptions({ nr_threads: '64' }), 64)).toThrow(/drop bit 2 from run_test_mask/);
    expect(() => caseGeometry(parseVmallocOptions({ nr_threads: '64', run_test_mask: '1' }), 64)).not.toThrow();
  });
});

describe('vmalloc suite on real workers (structure only)', () => {
  /** Silence the tables and the "results in" line; restore both. */
  const quiet = () => {
    const out = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
    const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    return {
      mockRestore: () => {
        out.mockRestore();
        err.mockRestore();
      },
    };
  };

  it('runs every modelled case with 1 and 2 workers sharing one VmallocSpace, and writes the results', async () => {
    const out = tmp('pvmmu-bench-');
    const spy = quiet();
    let rows: Row[];
    try {
      rows = (await runBench(['vmalloc'], { params: { loops: '50', nr_threads: '1,2' }, outDir: out })).vmalloc!;
    } finally {
      spy.mockRestore();
    }
    expect(rows).toHaveLength(VMALLOC_TESTS.length * 3);
    for (const t of VMALLOC_TESTS) {
      const mine = rows.filter((r) => r.group === t.name);
      expect(mine.map((r) => [r.x, r.worker])).toEqual([
        [1, 0],
        [2, 0],
        [2, 1],
      ]);
      for (const r of mine) {
        expect(r.unit).toBe('us/test');
        expect(r.series).toBe('lazy');
        expect(r.xLabel).toBe('threads');
        expect(r.yUnit).toBe('ns/iteration');
        expect(Number.isFinite(r.value) && r.value > 0).toBe(true);
        expect(Number.isFinite(r.y) && r.y! > 0).toBe(true);
        expect(r.note).not.toMatch(/failed/);
      }
    }
    const [dir] = readdirSync(out);
    const json = JSON.parse(readFileSync(join(out, dir!, 'results.json'), 'utf8')) as BenchResults;
    expect(json.suites.vmalloc!.rows).toHaveLength(rows.length);
    expect(json.suites.vmalloc!.notes.join(' ')).toMatch(/in-process, no hypervisor/);
    expect(json.suites.vmalloc!.notes.join(' ')).toMatch(
      /test_loop_count 50 \(the module's 1,000,000 scaled 1\/20,000/,
    );
    expect(json.options.params).toEqual({ loops: '50', nr_threads: '1,2' });
    expect(json.machine.cores).toBeGreaterThan(0);
    expect(readFileSync(join(out, dir!, 'report.html'), 'utf8')).toContain('long_busy_list_alloc_test');
  });

  it('runs eager and lazy over the flat page tables, per-series', async () => {
    const spy = quiet();
    let rows: Row[];
    try {
      rows = (
        await runBench(['vmalloc'], {
          params: {
            loops: '40',
            nr_threads: '2',
            run_test_mask: '1025',
            strategy: 'lazy,eager',
            kpt: 'flat',
            nr_pages: '4',
          },
          outDir: tmp('pvmmu-bench-'),
        })
      ).vmalloc!;
    } finally {
      spy.mockRestore();
    }
    expect(rows.map((r) => `${r.group}/${r.series}/${r.worker}`)).toEqual([
      'fix_size_alloc_test/lazy/0',
      'fix_size_alloc_test/lazy/1',
      'vm_map_ram_test/lazy/0',
      'vm_map_ram_test/lazy/1',
      'fix_size_alloc_test/eager/0',
      'fix_size_alloc_test/eager/1',
      'vm_map_ram_test/eager/0',
      'vm_map_ram_test/eager/1',
    ]);
    for (const r of rows) expect(Number.isFinite(r.y) && r.y! > 0).toBe(true);
  });
});

/* ------------------------------------------------------------ real browser */

interface PngInfo {
  width: number;
  height: number;
  colourType: number;
  bitDepth: number;
  idatBytes: number;
  /** Distinct colours over the decoded pixels (8-bit RGB/RGBA only, else -1). */
  colours: number;
}

/** Read a PNG: IHDR, IDAT size, and (for 8-bit RGB/RGBA) the distinct colours after unfiltering. */
function readPng(buf: Buffer): PngInfo {
  expect(buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))).toBe(true);
  let off = 8;
  let info: Omit<PngInfo, 'idatBytes' | 'colours'> | null = null;
  const idat: Buffer[] = [];
  while (off < buf.length) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR')
      info = { width: data.readUInt32BE(0), height: data.readUInt32BE(4), bitDepth: data[8]!, colourType: data[9]! };
    if (type === 'IDAT') idat.push(data);
    off += 12 + len;
  }
  if (!info) throw new Error('PNG without IHDR');
  const idatBytes = idat.reduce((a, b) => a + b.length, 0);
  const bpp = info.colourType === 6 ? 4 : info.colourType === 2 ? 3 : 0;
  if (bpp === 0 || info.bitDepth !== 8) return { ...info, idatBytes, colours: -1 };
  const raw = inflateSync(Buffer.concat(idat));
  const stride = info.width * bpp;
  const prev = new Uint8Array(stride);
  const cur = new Uint8Array(stride);
  const colours = new Set<number>();
  for (let y = 0; y < info.height; y++) {
    const base = y * (stride + 1);
    const f = raw[base]!;
    for (let i = 0; i < stride; i++) {
      const x = raw[base + 1 + i]!;
      const a = i >= bpp ? cur[i - bpp]! : 0;
      const b = prev[i]!;
      const c = i >= bpp ? prev[i - bpp]! : 0;
      let v = x;
      if (f === 1) v = x + a;
      else if (f === 2) v = x + b;
      else if (f === 3) v = x + ((a + b) >> 1);
      else if (f === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        v = x + (pa <= pb && pa <= pc ? a : pb <= pc ? b : c);
      }
      cur[i] = v & 0xff;
    }
    for (let i = 0; i < stride; i += bpp * 7) colours.add((cur[i]! << 16) | (cur[i + 1]! << 8) | cur[i + 2]!);
    prev.set(cur);
  }
  return { ...info, idatBytes, colours: colours.size };
}

const chromiumFlags = (profile: string): string[] => [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  `--user-data-dir=${profile}`,
];

describe('report.html in a real browser', () => {
  it('renders in headless chromium: a non-trivial screenshot, and the SVG survives in the DOM', () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `${CHROMIUM} not found: this test renders report.html in a real browser; run \`apt-get install -y chromium\``,
      );
    }
    const dir = writeResults(syntheticResults(), tmp('pvmmu-report-'));
    const url = pathToFileURL(join(dir, 'report.html')).href;
    const png = join(dir, 'shot.png');
    const shot = spawnSync(
      CHROMIUM,
      [...chromiumFlags(tmp('pvmmu-chromium-')), `--screenshot=${png}`, '--window-size=1200,1600', url],
      {
        timeout: 60_000,
        encoding: 'utf8',
      },
    );
    expect(existsSync(png), `chromium wrote no screenshot (status ${shot.status}): ${shot.stderr}`).toBe(true);
    expect(statSync(png).size).toBeGreaterThan(20_000);
    const info = readPng(readFileSync(png));
    expect([info.width, info.height]).toEqual([1200, 1600]);
    expect(info.idatBytes).toBeGreaterThan(20_000); // a blank page compresses to a few KB
    if (info.colours >= 0) expect(info.colours).toBeGreaterThan(16); // text, lines in several colours: not one colour

    const dom = spawnSync(CHROMIUM, [...chromiumFlags(tmp('pvmmu-chromium-')), '--dump-dom', url], {
      timeout: 60_000,
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    expect(dom.status, dom.stderr).toBe(0);
    const html = dom.stdout;
    expect(count(html, /<svg\b/g)).toBe(7);
    expect(count(html, /<polyline\b/g)).toBe(4 + 3);
    expect(count(html, /<table>/g)).toBe(3);
    expect(html).toContain('unmap-aliases');
    expect(html).toContain('vCPUs (log scale)');
  });
});
