/*
 * A one-line progress bar for long runs, on a terminal only.
 *
 * Silent unless the stream is a TTY and the run has already lasted minMs (so short runs
 * and piped output print nothing); then redrawn at most every 100 ms in place ("\r" and
 * erase-to-end-of-line), with percentage, count, rate and ETA; done() erases it. Off a
 * terminal tick() is an add and nothing else.
 */

export interface ProgressStream {
  write(s: string): unknown;
  isTTY?: boolean;
  /** Terminal width; 80 if unknown. */
  columns?: number;
}

export interface ProgressOptions {
  /** Units of work in the run (0: unknown, no percentage or ETA). */
  total: number;
  /** Shown before the bar ("xfs-dir lazy"). */
  label?: string;
  /** Default process.stderr. */
  stream?: ProgressStream;
  /** Draw nothing until the run has lasted this long (default 1000 ms). */
  minMs?: number;
  /** Clock in milliseconds (default performance.now); for tests. */
  now?: () => number;
}

/** At most ~10 redraws a second. */
export const PROGRESS_REDRAW_MS = 100;

const CLEAR_LINE = '\r\x1b[K';

/** 950 -> "950", 12.34 -> "12.3", 9999 -> "9999", 12_345 -> "12.3k", 4_500_000 -> "4.50M". */
export function formatCount(n: number): string {
  const a = Math.abs(n);
  if (a < 10_000) return a >= 100 || Number.isInteger(n) ? Math.round(n).toString() : n.toFixed(1);
  if (a < 1e6) return `${(n / 1e3).toFixed(1)}k`;
  if (a < 1e9) return `${(n / 1e6).toFixed(a < 1e7 ? 2 : 1)}M`;
  return `${(n / 1e9).toFixed(1)}G`;
}

/** Seconds -> "7s", "1m05s", "2h03m". */
export function formatEta(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return '--';
  const s = Math.ceil(sec);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor(s / 60) % 60).padStart(2, '0')}m`;
}

export class Progress {
  readonly total: number;
  readonly label: string;
  readonly #stream: ProgressStream;
  readonly #tty: boolean;
  readonly #minMs: number;
  readonly #now: () => number;
  readonly #start: number;
  #done = 0;
  #lastDraw = -Infinity;
  #drawn = false;
  #finished = false;

  constructor(opts: ProgressOptions) {
    if (opts === null || typeof opts !== 'object') {
      throw new TypeError('new Progress(opts): opts must be { total, label?, stream?, minMs? }');
    }
    const { total, label = '', stream = process.stderr, minMs = 1000, now = () => performance.now() } = opts;
    if (typeof total !== 'number' || !Number.isInteger(total) || total < 0) {
      throw new RangeError(`Progress total must be an integer >= 0 (0 = unknown), got ${String(total)}`);
    }
    if (typeof minMs !== 'number' || !(minMs >= 0)) {
      throw new RangeError(`Progress minMs must be a number of milliseconds >= 0, got ${String(minMs)}`);
    }
    if (stream === null || typeof stream !== 'object' || typeof stream.write !== 'function') {
      throw new TypeError('Progress stream must be a writable stream (an object with write())');
    }
    if (typeof label !== 'string') throw new TypeError(`Progress label must be a string, got ${typeof label}`);
    if (typeof now !== 'function') throw new TypeError('Progress now must be a function returning milliseconds');
    this.total = total;
    this.label = label;
    this.#stream = stream;
    this.#tty = stream.isTTY === true;
    this.#minMs = minMs;
    this.#now = now;
    this.#start = now();
  }

  /** Work done so far. */
  get value(): number {
    return this.#done;
  }

  /** Whether anything has been drawn (and so will be erased by done()). */
  get drawn(): boolean {
    return this.#drawn;
  }

  tick(n = 1): void {
    this.#done += n;
    if (this.#tty) this.#maybeDraw();
  }

  set(done: number): void {
    if (typeof done !== 'number' || !Number.isFinite(done) || done < 0) {
      throw new RangeError(`Progress.set(done): done must be a finite number >= 0, got ${String(done)}`);
    }
    this.#done = done;
    if (this.#tty) this.#maybeDraw();
  }

  /** Finish: erase the bar if one was drawn. Later ticks are ignored. */
  done(): void {
    if (this.#finished) return;
    this.#finished = true;
    if (this.#drawn) this.#stream.write(CLEAR_LINE);
  }

  #maybeDraw(): void {
    if (this.#finished) return;
    const t = this.#now();
    const elapsed = t - this.#start;
    if (elapsed < this.#minMs || t - this.#lastDraw < PROGRESS_REDRAW_MS) return;
    this.#lastDraw = t;
    this.#drawn = true;
    this.#stream.write(CLEAR_LINE + this.line(elapsed));
  }

  /** The text drawn after `elapsedMs` (exposed for tests and for non-TTY status lines). */
  line(elapsedMs: number = this.#now() - this.#start): string {
    const width = Math.max(20, (this.#stream.columns ?? 80) - 1);
    const done = this.#done;
    const rate = elapsedMs > 0 ? (done * 1000) / elapsedMs : 0;
    const head = this.label ? `${this.label} ` : '';
    if (this.total === 0) {
      return fitText(`${head}${formatCount(done)} ${formatCount(rate)}/s`, width);
    }
    const frac = Math.min(1, done / this.total);
    const pct = `${(frac * 100).toFixed(1).padStart(5)}%`;
    const eta = rate > 0 ? formatEta((this.total - Math.min(done, this.total)) / rate) : '--';
    const tail = ` ${pct} ${formatCount(done)}/${formatCount(this.total)} ${formatCount(rate)}/s ETA ${eta}`;
    const room = width - head.length - tail.length - 2;
    if (room < 10) return fitText(head + tail.trimStart(), width);
    const barWidth = Math.min(40, room);
    const full = Math.round(frac * barWidth);
    return `${head}[${'#'.repeat(full)}${'-'.repeat(barWidth - full)}]${tail}`;
  }
}

function fitText(s: string, width: number): string {
  return s.length <= width ? s : s.slice(0, width);
}
