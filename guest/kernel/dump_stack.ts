/*
 * dump_stack: the call chain the kernel is in, under Linux's function names.
 *
 * The guest is TypeScript, so its real call chain is the JavaScript stack of this vCPU
 * worker. dumpStack() reads it (new Error().stack), keeps the frames of guest code, and
 * names each one as Linux would -- the guest names its functions after Linux's, in
 * camelCase (freeHotColdPage is free_hot_cold_page, zapPteRange is zap_pte_range), so the
 * name is converted, not looked up. It stops at the system call or entry point that led
 * there (a frame named sys*), as Linux's backtraces end at the entry code, or at the
 * workload step that called into the kernel. Where the call
 * really is in the running code goes between the brackets (file:line), where Linux puts
 * the return address.
 */

/** Frames of emulator plumbing between the report and the function that made it. */
const PLUMBING = new Set(['report', 'onReport', 'printk', 'Error']);

/** One frame: Linux's name and where the call is (file:line of the running code). */
export interface StackFrame {
  name: string;
  where: string;
}

/** camelCase -> snake_case, keeping leading underscores: __freeHotColdPage -> __free_hot_cold_page. */
export function kernelName(jsName: string): string {
  const bare = jsName.replace(/^#/, '');
  const lead = /^_*/.exec(bare)![0];
  return (
    lead +
    bare
      .slice(lead.length)
      .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
      .toLowerCase()
  );
}

const FRAME = /^\s*at (?:async )?(?:new )?(?:[\w$]+\.)?(#?[\w$]+) \((?:file:\/\/)?(.*\/(guest\/[^:]+)):(\d+):\d+\)$/;

/**
 * The guest frames of the current stack, innermost first, from dumpStack itself down to
 * the first sys* frame (or the last guest frame).
 */
export function dumpStack(): StackFrame[] {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 64;
  const stack = new Error().stack ?? '';
  Error.stackTraceLimit = limit;
  const out: StackFrame[] = [];
  for (const line of stack.split('\n')) {
    const m = FRAME.exec(line);
    if (m === null) continue;
    const js = m[1]!;
    if (js === 'step') break; // the workload's entry: what called the kernel
    if (PLUMBING.has(js)) continue;
    const name = kernelName(js);
    const file = m[3]!.replace(/^.*\//, '');
    if (out.length > 0 && out[out.length - 1]!.name === name) continue; // a wrapper of the same name
    out.push({ name, where: `${file}:${m[4]}` });
    if (/^sys_/.test(name)) break;
  }
  return out;
}

/** The lines Linux prints for a backtrace: "Backtrace:" and one " [<where>] name" per frame. */
export function backtraceLines(frames: StackFrame[]): string[] {
  return ['Backtrace:', ...frames.map((f) => ` [<${f.where}>] ${f.name}`)];
}
