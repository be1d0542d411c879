/*
 * The pino logger every pvmmu command logs through, and the one way hypervisor log
 * records reach it.
 *
 * Output is decided once, when the logger is made (pino style): pretty, colourised lines
 * without pid/hostname when the destination is a terminal, JSON lines otherwise or when
 * asked. Logs go to stderr by default, so a command's report or --json output on stdout
 * stays clean. A disabled level is pino's no-op method: it costs a call, nothing more.
 */
import { pino, type DestinationStream, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger } from 'pino';

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** Something pino can write to; isTTY decides pretty vs JSON. */
export interface LogDestination {
  write(chunk: string): unknown;
  isTTY?: boolean;
}

export interface CreateLoggerOptions {
  /** JSON lines even on a terminal. */
  json?: boolean;
  /** One of fatal, error, warn, info (default), debug, trace, silent. */
  level?: string;
  /** Where to write (default: stderr). A stream with isTTY true gets pretty output. */
  destination?: LogDestination;
  /** Logger name, shown on every line (default: none). */
  name?: string;
}

export function createLogger(opts: CreateLoggerOptions = {}): Logger {
  if (opts === null || typeof opts !== 'object') {
    throw new TypeError('createLogger(opts): opts must be { json?, level?, destination?, name? }');
  }
  const level = opts.level ?? 'info';
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new RangeError(`log level must be one of ${LOG_LEVELS.join(', ')}, got ${JSON.stringify(opts.level)}`);
  }
  const dest = opts.destination;
  if (dest !== undefined && (dest === null || typeof dest.write !== 'function')) {
    throw new TypeError('createLogger: destination must be a writable stream (an object with write())');
  }
  const tty = dest !== undefined ? dest.isTTY === true : process.stderr.isTTY === true;
  const base = { level, ...(opts.name !== undefined ? { name: opts.name } : {}) };

  if (tty && opts.json !== true) {
    // pino-pretty's formatter, applied synchronously in the write path: no transport
    // thread, no stream plumbing, and any object with write() works as the terminal.
    const prettify = pretty.prettyFactory({
      colorize: !process.env.NO_COLOR,
      ignore: 'pid,hostname',
      translateTime: 'HH:MM:ss.l',
      singleLine: true,
    });
    const term: LogDestination = dest ?? process.stderr;
    return pino(base, { write: (line: string) => void term.write(prettify(line)) });
  }
  const out: DestinationStream = (dest as DestinationStream | undefined) ?? pino.destination({ fd: 2, sync: true });
  return pino(base, out);
}

/** A hypervisor log record (hypervisor/types.ts XenLogRecord has these fields and more). */
export interface XenLogLineRecord {
  /** "(XEN) mm.c:2891:d1v0 Bad type (saw ... != exp ...) for mfn 1a2b (pfn 42)" */
  line: string;
  domid: number;
  vcpu: number;
  /** Reason key: "bad_type", "pin_error", ... */
  reason: string;
  /** Machine frame the line is about, or -1. */
  mfn: number;
  seq?: number;
}

/**
 * Log one hypervisor line at warn, the line itself as the message and its fields as
 * properties (mfn omitted when -1). Does nothing, and builds nothing, when warn is off.
 */
export function xenLogLine(logger: Logger, rec: XenLogLineRecord): void {
  if (!logger.isLevelEnabled('warn')) return;
  const fields: Record<string, string | number> = { domid: rec.domid, vcpu: rec.vcpu, reason: rec.reason };
  if (rec.mfn >= 0) fields.mfn = rec.mfn;
  if (rec.seq !== undefined) fields.seq = rec.seq;
  logger.warn(fields, rec.line);
}
