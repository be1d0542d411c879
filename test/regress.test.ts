/*
 * Regression tooling, end to end: --xen-log and --guest-log hold every line, --record
 * then `pvmmu script` replays a workload run with the same results and log lines, a
 * recording machine and an ordinary one serve slots differently only by configuration,
 * and reduceScript shrinks a failing script to the steps its failure needs.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { transportBytes } from '../src/abi/layout.js';
import { Xen } from '../hypervisor/xen.js';
import { DEFAULT_RUN, runOnce } from '../src/run.js';
import { runScript } from '../src/script/run.js';
import { reduceScript } from '../src/script/reduce.js';
import { parseScript } from '../src/script/schema.js';
import { totals } from '../src/script/report.js';

const dir = mkdtempSync(join(tmpdir(), 'pvmmu-regress-'));
const lines = (f: string) => readFileSync(f, 'utf8').split('\n').filter(Boolean);

describe('pvmmu run --xen-log, --guest-log and --record (xfs-dirscan, lazy)', () => {
  const xenLog = join(dir, 'xen.log');
  const guestLog = join(dir, 'guest.log');
  const record = join(dir, 'run.json');
  const run = runOnce({ ...DEFAULT_RUN, strategy: 'lazy', ops: 1500, xenLog, guestLog, record });

  it('--xen-log holds every hypervisor line of the run, more than the terminal keeps', async () => {
    const res = await run;
    expect(res.summary.rejected.total).toBeGreaterThan(0);
    const written = lines(xenLog);
    expect(written.length).toBe(res.xenLogLines);
    expect(written.length).toBeGreaterThan(res.xenLog.length);
    expect(written.every((l) => l.startsWith('(XEN) '))).toBe(true);
  });

  it('--guest-log holds every printk line', async () => {
    const res = await run;
    const written = lines(guestLog);
    expect(res.guestLogLines).toBeGreaterThan(0);
    expect(written.length).toBe(res.guestLogLines);
    expect(written.some((l) => /xen_pgd_pin/.test(l))).toBe(true);
  });

  it("pvmmu script replays the recording: every expectation holds, the refusals and log lines are the run's", async () => {
    const res = await run;
    const script = parseScript(readFileSync(record, 'utf8'), record);
    expect(res.recorded).toMatchObject({ skipped: 0, unnamed: 0 });
    const replay = await runScript(script);
    expect(replay.steps.filter((s) => !s.pass).map((s) => `${s.at}: ${s.reason}`)).toEqual([]);
    expect(totals(replay).failed).toBe(0);
    const refusals = replay.steps.flatMap((s) => (Array.isArray(s.got) ? s.got : [s.got])).filter((g) => g !== 'ok');
    expect(refusals.length).toBe(res.summary.rejected.total);
    expect(replay.steps.flatMap((s) => s.log)).toEqual(lines(xenLog));
  }, 120_000);
});

describe('--record of a parallel run', () => {
  it('records the order the hypervisor served the vCPUs in, and replays it exactly', async () => {
    const record = join(dir, 'parallel.json');
    const res = await runOnce({ ...DEFAULT_RUN, strategy: 'lazy', sched: 'parallel', ops: 800, record });
    const replay = await runScript(parseScript(readFileSync(record, 'utf8'), record));
    expect(replay.steps.filter((s) => !s.pass).map((s) => `${s.at}: ${s.reason}`)).toEqual([]);
    const refusals = replay.steps.flatMap((s) => (Array.isArray(s.got) ? s.got : [s.got])).filter((g) => g !== 'ok');
    expect(refusals.length).toBe(res.summary.rejected.total);
    expect(new Set(replay.steps.map((s) => s.vcpu))).toEqual(new Set([0, 1]));
  }, 120_000);
});

describe('recording is chosen per configuration', () => {
  const make = (record: boolean) =>
    new Xen({
      paging: 'pae',
      frames: 4096,
      mem: new SharedArrayBuffer(4096 * 4096),
      transport: new SharedArrayBuffer(transportBytes(2)),
      maxSlots: 2,
      record,
    });
  it('an ordinary hypervisor serves slots with the prototype method; a recording one with its own', () => {
    expect(Object.hasOwn(make(false), 'serveSlot')).toBe(false);
    expect(make(false).serveSlot).toBe(Xen.prototype.serveSlot);
    expect(Object.hasOwn(make(true), 'serveSlot')).toBe(true);
  });
  it('only a recording hypervisor gives a recording', () => {
    expect(() => make(false).takeRecording('x')).toThrow(/record: true/);
    expect(make(true).takeRecording('x').script.steps).toEqual([]);
  });
});

/** A refused pin of "t" (still mapped writable by the direct map) among steps it does not need. */
function paddedScript(): { steps: unknown[]; [k: string]: unknown } {
  const pad = (i: number) =>
    i % 3 === 0
      ? { op: 'mmuext', ops: [{ cmd: 'tlb_flush_local' }, { cmd: 'tlb_flush_all' }] }
      : i % 3 === 1
        ? { op: 'fill', frame: 'u', entries: { 0: '0x1000', 7: '0x2000' } }
        : { op: 'update_va_mapping', va: { direct: 'u' }, entry: { frame: 'u', flags: 'P|A' }, flags: 'invlpg' };
  return {
    name: 'padded',
    domains: [{ name: 'A', frames: 256 }],
    steps: [
      { op: 'alloc', name: 'u' },
      ...Array.from({ length: 6 }, (_, i) => pad(i)),
      { op: 'alloc', name: 't' },
      ...Array.from({ length: 9 }, (_, i) => pad(i + 1)),
      {
        op: 'multicall',
        calls: [
          { op: 'mmuext', ops: [{ cmd: 'tlb_flush_local' }] },
          { op: 'mmuext', ops: [{ cmd: 'pin_l1_table', frame: 't' }] },
        ],
        expect: ['ok', 'EINVAL'],
      },
      ...Array.from({ length: 5 }, (_, i) => pad(i)),
    ],
  };
}

describe('reduceScript (ddmin, in-process)', () => {
  it('keeps the first refused call with its log line: the allocs that fix its pfn stay, the rest goes', async () => {
    const res = await reduceScript(paddedScript());
    expect(res.engine).toBe('in-process');
    expect(res.kept).toMatch(/^mmuext EINVAL \(XEN\) mm\.c:2891:d1v0 Bad type/);
    // "t" keeps its pfn only if "u" is allocated first; the multicall shrinks to the pin.
    expect(res.script.steps).toEqual([
      { op: 'alloc', name: 'u' },
      { op: 'alloc', name: 't' },
      expect.objectContaining({ op: 'mmuext', ops: [{ cmd: 'pin_l1_table', frame: 't' }], expect: 'EINVAL' }),
    ]);
    const check = await runScript(parseScript(res.script));
    expect(totals(check).failed).toBe(0);
  }, 60_000);

  it('--keep with a log substring lets the pfn change; a step whose name no longer resolves never counts', async () => {
    const res = await reduceScript(paddedScript(), { keep: 'Bad type' });
    expect(res.script.steps.map((s) => (s as { op: string }).op)).toEqual(['alloc', 'mmuext']);
    expect(res.script.steps[0]).toEqual({ op: 'alloc', name: 't' });
  }, 60_000);

  it('refuses a script that shows nothing to keep', async () => {
    await expect(reduceScript({ steps: [{ op: 'mmuext', ops: [{ cmd: 'tlb_flush_local' }] }] })).rejects.toThrow(
      /nothing to reduce/,
    );
    await expect(reduceScript(paddedScript(), { keep: 'EPERM' })).rejects.toThrow(/never shows/);
  }, 60_000);
});

describe('the reduced scripts in test/scripts/ (pvmmu reduce of a recorded run)', () => {
  it.each([
    ['xfs-dirscan-lazy-reduced.json', 'pin_l3_table', /exp 6000000000000000/],
    ['kmap-churn-highpte-reduced.json', 'pin_l3_table', /exp 2000000000000000/],
  ])('%s: at most 15 steps, the last the refused pin with its Bad type line', (f, pin, exp) => {
    const file = join(import.meta.dirname, 'scripts', f);
    const raw = JSON.parse(readFileSync(file, 'utf8')) as { description: string; steps: unknown[] };
    expect(raw.description).toMatch(/^Origin: pvmmu run .* --record/);
    const s = parseScript(readFileSync(file, 'utf8'), f);
    expect(s.steps.length).toBeLessThanOrEqual(15);
    const last = s.steps.at(-1)!;
    expect(JSON.stringify(raw.steps.at(-1))).toContain(pin);
    expect(JSON.stringify(last.expect)).toContain('EINVAL');
    expect(last.expectLog).toMatch(/Bad type \(saw e40000000000000\d/);
    expect(last.expectLog).toMatch(exp);
  });
});

describe('the command line and the library refuse bad arguments', () => {
  const cli = join(import.meta.dirname, '..', 'dist', 'src', 'cli.js');
  const run = (...args: string[]) => spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  it('pvmmu reduce --help and pvmmu run --help document the new options', () => {
    const r = run('reduce', '--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/--keep EINVAL/);
    expect(r.stdout).toMatch(/--max-seconds N/);
    expect(run('run', '--help').stdout).toMatch(
      /--record FILE\.json[\s\S]*--xen-log FILE[\s\S]*--guest-log FILE|--xen-log FILE[\s\S]*--record FILE\.json/,
    );
  });
  it.each([
    [['reduce'], /expected exactly one FILE\.json/],
    [['reduce', join(dir, 'missing.json')], /cannot read/],
    [
      ['reduce', join(import.meta.dirname, 'scripts', 'pin-refused-rw-alias.json'), '--max-seconds', '0'],
      /--max-seconds must be a positive integer/,
    ],
    [
      ['reduce', join(import.meta.dirname, 'scripts', 'pin-refused-rw-alias.json'), '--keep', 'EPERM'],
      /never shows a call refused with EPERM/,
    ],
    [['run', 'xfs-dirscan', '--record', 'out.txt'], /--record must name a \.json file/],
  ])('%j exits 2', (args, msg) => {
    const r = run(...args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(msg);
  });
  it('runWorkload names an unknown option and what it accepts', async () => {
    const { runWorkload } = await import('../src/index.js');
    await expect(runWorkload({ workload: 'xfs-dirscan', sched: 'det', frobnicate: 1 } as never)).rejects.toThrow(
      /unknown option "frobnicate" \(accepted: workload, strategy, kmapFlush/,
    );
    await expect(runWorkload({ workload: 'xfs-dirscan', highpte: 'yes' } as never)).rejects.toThrow(
      /highpte must be true or false/,
    );
  });
});

describe('the library entry (src/index.ts, the package\'s "exports")', () => {
  it('exports runWorkload, runScript, reduceScript, sweep and Machine; runScript takes a file and answers as --json', async () => {
    const lib = await import('../src/index.js');
    for (const name of ['runWorkload', 'runScript', 'reduceScript', 'sweep', 'Machine'] as const)
      expect(typeof lib[name]).toBe('function');
    const res = await lib.runScript(join(import.meta.dirname, 'scripts', 'pin-refused-rw-alias.json'));
    expect(res).toMatchObject({ failed: 0, audit: { ok: true } });
    expect(res.passed).toBe(res.steps.length + 1);
    await expect(lib.sweep({ workload: 'xfs-dirscan', seeds: '3..1' })).rejects.toThrow(
      /--seeds 3\.\.1: the range is empty/,
    );
  });
});
