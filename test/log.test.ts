/*
 * src/log.ts: JSON lines off a terminal (or when asked), pretty lines without pid/hostname
 * on one, level validation, and xenLogLine's record shape and its cost when warn is off.
 */
import { describe, expect, it } from 'vitest';
import { createLogger, xenLogLine } from '../src/log.js';

function sink(isTTY: boolean) {
  const chunks: string[] = [];
  return { chunks, isTTY, write: (s: string) => void chunks.push(String(s)), text: () => chunks.join('') };
}

const rec = {
  line: '(XEN) mm.c:2891:d1v0 Bad type (saw e8000001 != exp 20000000) for mfn 1a2b (pfn 42)',
  domid: 1,
  vcpu: 0,
  reason: 'bad_type',
  mfn: 0x1a2b,
  seq: 17,
};

describe('createLogger', () => {
  it('writes JSON lines to a non-terminal, and xenLogLine logs at warn with the line as msg', () => {
    const out = sink(false);
    const log = createLogger({ destination: out });
    xenLogLine(log, rec);
    const lines = out.text().trim().split('\n');
    expect(lines).toHaveLength(1);
    const o = JSON.parse(lines[0]!);
    expect(o).toMatchObject({ level: 40, msg: rec.line, domid: 1, vcpu: 0, reason: 'bad_type', mfn: 0x1a2b, seq: 17 });
    expect(o.line).toBeUndefined();
    xenLogLine(log, { ...rec, mfn: -1, seq: undefined });
    expect(JSON.parse(out.text().trim().split('\n')[1]!).mfn).toBeUndefined();
  });

  it('writes JSON on a terminal when json: true, pretty text otherwise', () => {
    const j = sink(true);
    createLogger({ destination: j, json: true }).info({ ops: 5 }, 'hello');
    expect(JSON.parse(j.text())).toMatchObject({ msg: 'hello', ops: 5 });

    const p = sink(true);
    createLogger({ destination: p }).warn({ reason: 'pin_error' }, '(XEN) mm.c:3296:d1v0 Error while pinning mfn 1a2b');
    const text = p.text().replace(/\x1b\[[0-9;]*m/g, '');
    expect(text).toMatch(/WARN.*\(XEN\) mm\.c:3296:d1v0 Error while pinning mfn 1a2b/);
    expect(text).toMatch(/"reason":"pin_error"/);
    expect(text.endsWith('\n')).toBe(true);
    expect(text.split('\n')).toHaveLength(2); // one line per record
    expect(text).not.toMatch(/pid|hostname/);
    expect(() => JSON.parse(text)).toThrow();
  });

  it('honours the level: a disabled warn writes nothing', () => {
    const out = sink(false);
    const log = createLogger({ destination: out, level: 'error' });
    xenLogLine(log, rec);
    log.info('no');
    log.error('yes');
    expect(out.chunks).toHaveLength(1);
    const silent = sink(false);
    createLogger({ destination: silent, level: 'silent' }).fatal('x');
    expect(silent.chunks).toHaveLength(0);
  });

  it('rejects a bad level or destination with what is accepted', () => {
    expect(() => createLogger({ level: 'verbose' })).toThrow(/one of fatal, error, warn, info, debug, trace, silent/);
    expect(() => createLogger({ destination: {} as never })).toThrow(TypeError);
  });
});
