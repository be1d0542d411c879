/*
 * A script as JSON text: the header fields as usual, then one step per line, so a
 * recorded or reduced script of thousands of steps stays readable and diffable.
 */
export function scriptText(script: { steps: unknown[]; [k: string]: unknown }): string {
  const { steps, ...head } = script;
  const top = Object.entries(head).map(([k, v]) => `  ${JSON.stringify(k)}: ${JSON.stringify(v)}`);
  const lines = steps.map((s) => `    ${JSON.stringify(s)}`);
  return `{\n${[...top, `  "steps": [\n${lines.join(',\n')}\n  ]`].join(',\n')}\n}\n`;
}
