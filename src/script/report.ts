/*
 * How a script run is shown: a line per step (with the hypervisor's lines for it under
 * it), the audit, then "N passed, N failed" on its own line. --json prints one JSON
 * object per step and a final summary object instead.
 */
import type { ScriptResult, StepResult } from './run.js';

function gotText(r: StepResult): string {
  return Array.isArray(r.got) ? `[${r.got.join(', ')}]` : r.got;
}

export function formatStep(r: StepResult): string {
  const where = `${r.domain}v${r.vcpu}`;
  let line = `${r.pass ? 'PASS' : 'FAIL'} ${r.at.padEnd(10)} ${where.padEnd(4)} ${r.what} -> ${gotText(r)}`;
  if (r.done !== undefined) line += ` (done ${r.done})`;
  if (r.value !== undefined) line += ` = ${r.value}`;
  if (!r.pass && r.reason) line += `\n     ${r.reason}`;
  for (const l of r.log) line += `\n     ${l}`;
  return line;
}

/** Totals that count the final audit as one more check. */
export function totals(res: ScriptResult): { passed: number; failed: number; auditOk: boolean } {
  const auditOk = res.audit.ok && res.audit.isolationViolations === 0;
  return { passed: res.passed + (auditOk ? 1 : 0), failed: res.failed + (auditOk ? 0 : 1), auditOk };
}

export function formatText(res: ScriptResult): string {
  const out = [`script: ${res.name}`];
  for (const r of res.steps) out.push(formatStep(r));
  const t = totals(res);
  if (t.auditOk) {
    out.push(
      `PASS audit: frame table agrees with the page tables (${res.audit.framesChecked} frames), isolation holds`,
    );
  } else {
    out.push(
      `FAIL audit: ${res.audit.problems.length} disagreement(s), ${res.audit.isolationViolations} isolation violation(s)`,
    );
    for (const p of res.audit.problems.slice(0, 10)) out.push(`     mfn ${p.mfn.toString(16)}: ${p.what}`);
  }
  out.push(`${t.passed} passed, ${t.failed} failed`);
  return out.join('\n');
}

export function formatJsonLines(res: ScriptResult): string {
  const lines = res.steps.map((r) => JSON.stringify({ type: 'step', ...r }));
  const t = totals(res);
  lines.push(
    JSON.stringify({
      type: 'summary',
      name: res.name,
      passed: t.passed,
      failed: t.failed,
      audit: res.audit,
      stats: res.stats,
    }),
  );
  return lines.join('\n');
}
