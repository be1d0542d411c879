/*
 * SVG charts for the bench report, as strings with no dependency and no external resource:
 * a line chart (x = vCPUs or threads, y = cost per op, one line per series, ticks, axis
 * labels, legend) and a horizontal bar chart for single-valued suites. Presentation
 * attributes only (no CSS classes needed), so an SVG also renders on its own. Text widths
 * are estimated (no layout engine here): ~0.6 em per character.
 */

export interface LinePoint {
  x: number;
  y: number;
}

export interface LineSeries {
  name: string;
  points: LinePoint[];
}

export interface LineChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: LineSeries[];
  width?: number;
  height?: number;
  /** 'auto' (default): log2 when every x is a power of two spanning at least 4x. */
  xScale?: 'linear' | 'log2' | 'auto';
}

export interface Bar {
  label: string;
  value: number;
  /** Printed after the value when the bars of a chart differ in unit. */
  unit?: string;
}

export interface BarChartSpec {
  title: string;
  /** What the values are (the axis label), e.g. "ns/call". */
  valueLabel: string;
  bars: Bar[];
  width?: number;
}

/** Okabe-Ito: distinguishable with the common colour-vision deficiencies. */
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#999933'];
/** A dash pattern per series as well, so lines differ without colour. */
const DASHES = ['', '7 4', '2 3', '9 3 2 3'];
const FONT = 'system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif';
const AXIS = '#444';
const GRID = '#e3e3e3';
const TEXT = '#222';
const CHAR_W = 6.6; // px per character at 12 px

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const r1 = (v: number): string => (Math.round(v * 10) / 10).toString();

/** Human tick/value text: 3 significant digits, thousands grouped. */
export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString('en-US');
  if (a === 0) return '0';
  return Number(v.toPrecision(3)).toString();
}

/** "Nice" ticks (1, 2, 2.5, 5 x 10^k) covering [lo, hi], about `target` of them. */
export function niceTicks(lo: number, hi: number, target = 5): number[] {
  if (!Number.isFinite(lo) || !Number.isFinite(hi))
    throw new RangeError(`niceTicks needs finite bounds, got ${lo}..${hi}`);
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) hi = lo === 0 ? 1 : lo + Math.abs(lo);
  const raw = (hi - lo) / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = ([1, 2, 2.5, 5, 10].find((m) => m * mag >= raw) ?? 10) * mag;
  const first = Math.floor(lo / step + 1e-9) * step;
  const out: number[] = [];
  for (let v = first; v < hi + step - 1e-9 * step; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

const isPow2 = (x: number): boolean => x > 0 && Number.isInteger(Math.log2(x));

function textEl(x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${r1(x)}" y="${r1(y)}" font-family="${FONT}" fill="${TEXT}"${attrs ? ` ${attrs}` : ''}>${escapeXml(s)}</text>`;
}

function svgOpen(w: number, h: number, title: string): string {
  return (
    `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="${escapeXml(title)}">` +
    `<title>${escapeXml(title)}</title>` +
    `<rect x="0" y="0" width="${w}" height="${h}" fill="#ffffff"/>` +
    textEl(12, 22, fitText(title, (w - 24) * 0.9), 'font-size="14" font-weight="600"')
  );
}

/** Truncate to about `px` pixels of text. */
function fitText(s: string, px: number): string {
  const n = Math.max(4, Math.floor(px / CHAR_W));
  return s.length <= n ? s : `${s.slice(0, n - 1)}\u2026`;
}

/** A line chart: one polyline (with a marker per point) per series. */
export function lineChart(spec: LineChartSpec): string {
  const series = spec.series.filter((s) => s.points.length > 0);
  if (series.length === 0) throw new RangeError(`lineChart "${spec.title}": no series with points`);
  for (const s of series) {
    for (const p of s.points) {
      if (!Number.isFinite(p.x) || !Number.isFinite(p.y)) {
        throw new RangeError(`lineChart "${spec.title}": series "${s.name}" has a non-finite point (${p.x}, ${p.y})`);
      }
    }
  }
  const W = spec.width ?? 560;
  const H = spec.height ?? 340;
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p.x)))].sort((a, b) => a - b);
  const ys = series.flatMap((s) => s.points.map((p) => p.y));
  const mode = spec.xScale ?? 'auto';
  const log2 = mode === 'log2' || (mode === 'auto' && xs.every(isPow2) && xs[xs.length - 1]! / xs[0]! >= 4);
  if (log2 && !xs.every((x) => x > 0)) throw new RangeError(`lineChart "${spec.title}": a log2 x axis needs x > 0`);
  const fx = (x: number): number => (log2 ? Math.log2(x) : x);

  // The legend runs in rows under the title, so the plot keeps the full width.
  const items = series.map((s) => ({ name: fitText(s.name, W - 80), w: 0 }));
  for (const it of items) it.w = 30 + it.name.length * CHAR_W + 18;
  const legendPos: Array<{ x: number; row: number }> = [];
  let lxCur = 12;
  let rows = 1;
  for (const it of items) {
    if (lxCur + it.w > W - 12 && lxCur > 12) {
      rows++;
      lxCur = 12;
    }
    legendPos.push({ x: lxCur, row: rows - 1 });
    lxCur += it.w;
  }
  const yMin = Math.min(0, ...ys);
  const yTicks = niceTicks(yMin, Math.max(...ys, yMin === 0 ? 0 : yMin), 5);
  // Room for the widest y tick label (11 px font) and the rotated axis label.
  const tickW = Math.max(...yTicks.map((t) => formatNumber(t).length)) * 6.2;
  const m = { top: 34 + rows * 18 + 12, right: 22, bottom: 50, left: Math.round(tickW + 38) };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const y0 = yTicks[0]!;
  const y1 = yTicks[yTicks.length - 1]!;
  let xTicks = xs;
  if (xs.length > 12) {
    if (!log2) xTicks = niceTicks(xs[0]!, xs[xs.length - 1]!, 6);
    else {
      xTicks = [];
      for (let e = Math.log2(xs[0]!); e <= Math.log2(xs[xs.length - 1]!); e++) xTicks.push(2 ** e);
    }
  }
  const xl = fx(Math.min(xs[0]!, xTicks[0]!));
  const xh = fx(Math.max(xs[xs.length - 1]!, xTicks[xTicks.length - 1]!));
  const inset = Math.min(24, pw * 0.05); // keep the end points off the y axis
  const px = (x: number): number =>
    m.left + (xh === xl ? pw / 2 : inset + ((fx(x) - xl) / (xh - xl)) * (pw - 2 * inset));
  const py = (y: number): number => m.top + ph - ((y - y0) / (y1 - y0)) * ph;

  const out: string[] = [svgOpen(W, H, spec.title)];
  // grid and y ticks
  out.push('<g class="y-axis">');
  for (const t of yTicks) {
    const y = py(t);
    out.push(
      `<line x1="${m.left}" y1="${r1(y)}" x2="${m.left + pw}" y2="${r1(y)}" stroke="${GRID}" stroke-width="1"/>`,
    );
    out.push(`<line x1="${m.left - 5}" y1="${r1(y)}" x2="${m.left}" y2="${r1(y)}" stroke="${AXIS}"/>`);
    out.push(textEl(m.left - 8, y + 4, formatNumber(t), 'font-size="11" text-anchor="end"'));
  }
  out.push(`<line x1="${m.left}" y1="${m.top}" x2="${m.left}" y2="${m.top + ph}" stroke="${AXIS}"/>`);
  out.push(
    textEl(
      0,
      0,
      spec.yLabel,
      `class="axis-label" font-size="12" text-anchor="middle" transform="translate(16 ${r1(m.top + ph / 2)}) rotate(-90)"`,
    ),
  );
  out.push('</g>');
  // x ticks
  out.push('<g class="x-axis">');
  out.push(`<line x1="${m.left}" y1="${m.top + ph}" x2="${m.left + pw}" y2="${m.top + ph}" stroke="${AXIS}"/>`);
  for (const t of xTicks) {
    const x = px(t);
    out.push(`<line x1="${r1(x)}" y1="${m.top + ph}" x2="${r1(x)}" y2="${m.top + ph + 5}" stroke="${AXIS}"/>`);
    out.push(textEl(x, m.top + ph + 18, formatNumber(t), 'font-size="11" text-anchor="middle"'));
  }
  out.push(
    textEl(
      m.left + pw / 2,
      H - 12,
      spec.xLabel + (log2 ? ' (log scale)' : ''),
      'class="axis-label" font-size="12" text-anchor="middle"',
    ),
  );
  out.push('</g>');
  // series
  series.forEach((s, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    const dash = DASHES[i % DASHES.length]!;
    const pts = [...s.points].sort((a, b) => a.x - b.x);
    out.push(`<g class="series" data-series="${escapeXml(s.name)}">`);
    out.push(
      `<polyline points="${pts.map((p) => `${r1(px(p.x))},${r1(py(p.y))}`).join(' ')}" fill="none" stroke="${color}" stroke-width="2.2"` +
        `${dash ? ` stroke-dasharray="${dash}"` : ''} stroke-linejoin="round"/>`,
    );
    for (const p of pts) {
      out.push(
        `<circle cx="${r1(px(p.x))}" cy="${r1(py(p.y))}" r="3.6" fill="${color}" stroke="#fff" stroke-width="1">` +
          `<title>${escapeXml(`${s.name}, ${spec.xLabel} ${formatNumber(p.x)}: ${formatNumber(p.y)} ${spec.yLabel}`)}</title></circle>`,
      );
    }
    out.push('</g>');
  });
  // legend
  out.push('<g class="legend">');
  series.forEach((_s, i) => {
    const color = PALETTE[i % PALETTE.length]!;
    const dash = DASHES[i % DASHES.length]!;
    const { x: lx, row } = legendPos[i]!;
    const ly = 38 + row * 18;
    out.push(
      `<line x1="${lx}" y1="${ly}" x2="${lx + 22}" y2="${ly}" stroke="${color}" stroke-width="2.2"${dash ? ` stroke-dasharray="${dash}"` : ''}/>`,
    );
    out.push(`<circle cx="${lx + 11}" cy="${ly}" r="3.2" fill="${color}"/>`);
    out.push(textEl(lx + 28, ly + 4, items[i]!.name, 'font-size="12"'));
  });
  out.push('</g></svg>');
  return out.join('');
}

/** A horizontal bar chart: one bar per label, the value printed at its end. */
export function barChart(spec: BarChartSpec): string {
  if (spec.bars.length === 0) throw new RangeError(`barChart "${spec.title}": no bars`);
  for (const b of spec.bars) {
    if (!Number.isFinite(b.value))
      throw new RangeError(`barChart "${spec.title}": bar "${b.label}" has value ${b.value}`);
  }
  const W = spec.width ?? 560;
  const rowH = 26;
  const labelW = Math.min(W * 0.55, Math.max(60, Math.max(...spec.bars.map((b) => b.label.length)) * CHAR_W + 12));
  const valueW =
    Math.max(...spec.bars.map((b) => (formatNumber(b.value) + (b.unit ? ` ${b.unit}` : '')).length)) * 6 + 14;
  const m = { top: 38, right: Math.max(40, valueW), bottom: 46, left: labelW + 12 };
  const H = m.top + spec.bars.length * rowH + m.bottom;
  const pw = W - m.left - m.right;
  const vMin = Math.min(0, ...spec.bars.map((b) => b.value));
  const ticks = niceTicks(vMin, Math.max(0, ...spec.bars.map((b) => b.value)), 4);
  const t0 = ticks[0]!;
  const t1 = ticks[ticks.length - 1]!;
  const px = (v: number): number => m.left + ((v - t0) / (t1 - t0)) * pw;
  const out: string[] = [svgOpen(W, H, spec.title)];
  const axisY = m.top + spec.bars.length * rowH;
  out.push('<g class="x-axis">');
  for (const t of ticks) {
    const x = px(t);
    out.push(`<line x1="${r1(x)}" y1="${m.top}" x2="${r1(x)}" y2="${axisY}" stroke="${GRID}"/>`);
    out.push(`<line x1="${r1(x)}" y1="${axisY}" x2="${r1(x)}" y2="${axisY + 5}" stroke="${AXIS}"/>`);
    out.push(textEl(x, axisY + 18, formatNumber(t), 'font-size="11" text-anchor="middle"'));
  }
  out.push(`<line x1="${m.left}" y1="${axisY}" x2="${m.left + pw}" y2="${axisY}" stroke="${AXIS}"/>`);
  out.push(textEl(m.left + pw / 2, H - 10, spec.valueLabel, 'class="axis-label" font-size="12" text-anchor="middle"'));
  out.push('</g><g class="bars">');
  spec.bars.forEach((b, i) => {
    const y = m.top + i * rowH;
    const x0 = px(Math.min(0, b.value));
    const w = Math.max(1, Math.abs(px(b.value) - px(0)));
    out.push(textEl(m.left - 8, y + rowH / 2 + 4, fitText(b.label, labelW), 'font-size="12" text-anchor="end"'));
    out.push(
      `<rect x="${r1(x0)}" y="${r1(y + 4)}" width="${r1(w)}" height="${rowH - 8}" fill="${PALETTE[0]}">` +
        `<title>${escapeXml(`${b.label}: ${formatNumber(b.value)} ${b.unit ?? spec.valueLabel}`)}</title></rect>`,
    );
    out.push(
      textEl(x0 + w + 5, y + rowH / 2 + 4, formatNumber(b.value) + (b.unit ? ` ${b.unit}` : ''), 'font-size="11"'),
    );
  });
  out.push(`<line x1="${r1(px(0))}" y1="${m.top}" x2="${r1(px(0))}" y2="${axisY}" stroke="${AXIS}"/>`);
  out.push('</g></svg>');
  return out.join('');
}

export interface StackedBar {
  label: string;
  /** One value per category, in the spec's category order. */
  parts: number[];
}

export interface StackedBarChartSpec {
  title: string;
  valueLabel: string;
  /** The segments' names (legend), in stacking order. */
  categories: string[];
  bars: StackedBar[];
  width?: number;
}

/** Horizontal stacked bars (a breakdown per bar), the total printed at each end, a legend below. */
export function stackedBarChart(spec: StackedBarChartSpec): string {
  if (spec.bars.length === 0) throw new RangeError(`stackedBarChart "${spec.title}": no bars`);
  for (const b of spec.bars) {
    if (b.parts.length !== spec.categories.length || b.parts.some((p) => !Number.isFinite(p) || p < 0))
      throw new RangeError(
        `stackedBarChart "${spec.title}": bar "${b.label}" needs one non-negative part per category`,
      );
  }
  const W = spec.width ?? 560;
  const rowH = 24;
  const totals = spec.bars.map((b) => b.parts.reduce((a, p) => a + p, 0));
  const labelW = Math.max(40, Math.max(...spec.bars.map((b) => b.label.length)) * CHAR_W + 12);
  const valueW = Math.max(...totals.map((t) => formatNumber(t).length)) * 6 + 14;
  const legendRows = Math.ceil(spec.categories.length / 4);
  const m = { top: 38, right: Math.max(40, valueW), bottom: 46 + legendRows * 18, left: labelW + 12 };
  const H = m.top + spec.bars.length * rowH + m.bottom;
  const pw = W - m.left - m.right;
  const ticks = niceTicks(0, Math.max(1, ...totals), 4);
  const t1 = ticks[ticks.length - 1]!;
  const px = (v: number): number => m.left + (v / t1) * pw;
  const out: string[] = [svgOpen(W, H, spec.title)];
  const axisY = m.top + spec.bars.length * rowH;
  out.push('<g class="x-axis">');
  for (const t of ticks) {
    const x = px(t);
    out.push(`<line x1="${r1(x)}" y1="${m.top}" x2="${r1(x)}" y2="${axisY}" stroke="${GRID}"/>`);
    out.push(textEl(x, axisY + 18, formatNumber(t), 'font-size="11" text-anchor="middle"'));
  }
  out.push(`<line x1="${m.left}" y1="${axisY}" x2="${m.left + pw}" y2="${axisY}" stroke="${AXIS}"/>`);
  out.push(
    textEl(m.left + pw / 2, axisY + 36, spec.valueLabel, 'class="axis-label" font-size="12" text-anchor="middle"'),
  );
  out.push('</g><g class="bars">');
  spec.bars.forEach((b, i) => {
    const y = m.top + i * rowH;
    out.push(textEl(m.left - 8, y + rowH / 2 + 4, fitText(b.label, labelW), 'font-size="12" text-anchor="end"'));
    let acc = 0;
    b.parts.forEach((p, c) => {
      if (p <= 0) return;
      const x0 = px(acc);
      acc += p;
      out.push(
        `<rect x="${r1(x0)}" y="${r1(y + 4)}" width="${r1(Math.max(0.5, px(acc) - x0))}" height="${rowH - 8}" fill="${PALETTE[c % PALETTE.length]}">` +
          `<title>${escapeXml(`${b.label}, ${spec.categories[c]}: ${formatNumber(p)} ${spec.valueLabel}`)}</title></rect>`,
      );
    });
    out.push(textEl(px(acc) + 5, y + rowH / 2 + 4, formatNumber(totals[i]!), 'font-size="11"'));
  });
  out.push('</g><g class="legend">');
  spec.categories.forEach((name, c) => {
    const lx = m.left + (c % 4) * Math.max(90, pw / 4);
    const ly = axisY + 52 + Math.floor(c / 4) * 18;
    out.push(`<rect x="${r1(lx)}" y="${ly - 9}" width="10" height="10" fill="${PALETTE[c % PALETTE.length]}"/>`);
    out.push(textEl(lx + 14, ly, name, 'font-size="11"'));
  });
  out.push('</g></svg>');
  return out.join('');
}
