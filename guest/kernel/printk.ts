/*
 * printk's log buffer: the last N kernel messages of one vCPU, oldest dropped first, each
 * also handed to an optional sink (the kernel's own log, the controller).
 */
export class LogBuf {
  readonly lines: string[] = [];
  /** Messages printed in all (kept or dropped). */
  total = 0;
  readonly #capacity: number;
  readonly #sink: ((line: string) => void) | null;

  constructor(capacity: number, sink: ((line: string) => void) | null = null) {
    this.#capacity = capacity;
    this.#sink = sink;
  }

  printk(line: string): void {
    this.total++;
    if (this.lines.length >= this.#capacity) this.lines.shift();
    this.lines.push(line);
    this.#sink?.(line);
  }

  /** The kept messages printed after the first `seen` (for a reader that keeps its place). */
  since(seen: number): string[] {
    const n = Math.min(this.total - seen, this.lines.length);
    return n <= 0 ? [] : this.lines.slice(this.lines.length - n);
  }
}
