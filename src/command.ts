/*
 * What a pvmmu subcommand is, and the error for bad command lines.
 */
export interface Command {
  summary: string;
  usage: string;
  help: string;
  run(argv: string[]): Promise<number>;
}

export class UsageError extends Error {
  override name = 'UsageError';
}
