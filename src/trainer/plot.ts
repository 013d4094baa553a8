/**
 * The loss-curve picture a training run keeps rewriting: raw per-step loss as a thin light line,
 * its exponential moving average as a thick dark one, validation losses as orange dots, steps
 * whose loss was not finite as red ticks along the top; step on x, loss on y (logarithmic when the
 * smoothed loss spans more than 1.5 decades), tick labels, a title and a legend, in the bitmap font
 * of ./font.ts. The PNG is written atomically (temporary sibling, then rename), so a viewer that
 * reloads it never sees half a file.
 */
import { savePng, type RgbImage } from "../image/image.js";
import { Canvas, type Rgb } from "./canvas.js";
import { CAP_HEIGHT, textWidth } from "./font.js";

export interface LossPoint {
  step: number;
  /** May be NaN or infinite: such steps are marked, not plotted. */
  loss: number;
}

export interface LossCurveOptions {
  /** Validation losses, drawn as dots. */
  validation?: LossPoint[];
  /** Image size (default 800 x 400). */
  width?: number;
  height?: number;
  /** Title at the top left (default "training loss"). */
  title?: string;
  /**
   * EMA smoothing factor beta in [0, 1): ema = beta * ema + (1 - beta) * loss, bias-corrected as
   * in Adam. Default: 1 - 1/w with w = max(10, points / 50), about 50 windows over the run.
   */
  smoothing?: number;
  /** Logarithmic y axis: true, false or "auto" (default: when the EMA and validation span > 1.5 decades). */
  logY?: boolean | "auto";
  /** Right end of the x axis, e.g. the run's total steps (default: the last step plotted). */
  maxStep?: number;
  /** Integer text magnification (default: 1, or 2 for images at least 1200 wide). */
  textScale?: number;
}

/** Where things landed: the plot area in pixels and the axis mapping (for tests and overlays). */
export interface PlotLayout {
  /** The plot area: the frame is drawn on these lines; x1 and y1 are inclusive. */
  x0: number;
  y0: number;
  x1: number;
  y1: number;
  stepMin: number;
  stepMax: number;
  lossMin: number;
  lossMax: number;
  logY: boolean;
  /** The EMA smoothing factor used. */
  smoothing: number;
  /** Horizontal pixel coordinate (continuous) of a step. */
  x(step: number): number;
  /** Vertical pixel coordinate (continuous) of a loss. */
  y(loss: number): number;
}

export const LOSS_CURVE_COLORS = {
  background: [255, 255, 255] as Rgb,
  text: [34, 34, 34] as Rgb,
  frame: [90, 90, 90] as Rgb,
  grid: [228, 228, 228] as Rgb,
  minorGrid: [243, 243, 243] as Rgb,
  raw: [160, 196, 228] as Rgb,
  ema: [24, 84, 160] as Rgb,
  validation: [230, 100, 20] as Rgb,
  nonFinite: [210, 30, 40] as Rgb,
};

/** Decades the smoothed loss must span for the automatic log scale. */
export const LOG_SCALE_DECADES = 1.5;

/** The default EMA smoothing factor for a curve of `n` points. */
export function defaultSmoothing(n: number): number {
  return 1 - 1 / Math.max(10, n / 50);
}

/** Bias-corrected exponential moving average of the finite losses (NaN where none seen yet). */
export function emaCurve(losses: readonly number[], beta: number): number[] {
  let m = 0;
  let k = 0;
  return losses.map((v) => {
    if (Number.isFinite(v)) {
      m = beta * m + (1 - beta) * v;
      k++;
    }
    return k === 0 ? NaN : m / (1 - beta ** k);
  });
}

/** Draw the loss curve (see the module comment). Points need not be sorted. */
export function renderLossCurve(points: readonly LossPoint[], opts: LossCurveOptions = {}): { image: RgbImage; layout: PlotLayout } {
  const W = opts.width ?? 800;
  const H = opts.height ?? 400;
  const C = LOSS_CURVE_COLORS;
  const s = Math.max(1, Math.round(opts.textScale ?? (W >= 1200 ? 2 : 1)));
  const canvas = new Canvas(W, H, C.background);

  const train = [...points].filter((p) => Number.isFinite(p.step)).sort((a, b) => a.step - b.step);
  const val = (opts.validation ?? []).filter((p) => Number.isFinite(p.step) && Number.isFinite(p.loss)).sort((a, b) => a.step - b.step);
  const beta = opts.smoothing ?? defaultSmoothing(train.length);
  const ema = emaCurve(
    train.map((p) => p.loss),
    beta,
  );
  const finiteTrain = train.filter((p) => Number.isFinite(p.loss));
  const nonFinite = train.filter((p) => !Number.isFinite(p.loss));

  // --- ranges
  const steps = [...train.map((p) => p.step), ...val.map((p) => p.step)];
  let [stepMin, stepMax] = extent(steps);
  stepMax = Math.max(stepMax, opts.maxStep ?? -Infinity);
  if (!Number.isFinite(stepMin)) [stepMin, stepMax] = [0, Math.max(1, opts.maxStep ?? 1)];
  if (stepMin >= 0 && stepMin <= 0.1 * stepMax) stepMin = 0;
  if (stepMax <= stepMin) stepMax = stepMin + 1;

  const smooth = [...ema.filter(Number.isFinite), ...val.map((p) => p.loss)];
  const positive = smooth.filter((v) => v > 0);
  const logY =
    opts.logY === true
      ? true
      : opts.logY === false
        ? false
        : positive.length === smooth.length && positive.length > 0 && Math.log10(extent(positive)[1] / extent(positive)[0]) > LOG_SCALE_DECADES;
  const rawValues = finiteTrain.map((p) => p.loss).filter((v) => !logY || v > 0);
  const robust = rawValues.length > 50 ? [quantile(rawValues, 0.002), quantile(rawValues, 0.998)] : rawValues;
  const yValues = [...robust, ...smooth.filter((v) => !logY || v > 0)];
  let [lossMin, lossMax] = yValues.length > 0 ? extent(yValues) : logY ? [0.1, 1] : [0, 1];
  if (logY) {
    let a = Math.log10(lossMin);
    let b = Math.log10(lossMax);
    if (b - a < 1e-9) [a, b] = [a - 0.5, b + 0.5];
    const pad = (b - a) * 0.04;
    [lossMin, lossMax] = [10 ** (a - pad), 10 ** (b + pad)];
  } else {
    if (lossMax - lossMin <= Math.abs(lossMax) * 1e-9) {
      const d = Math.abs(lossMax) * 0.1 || 1;
      [lossMin, lossMax] = [lossMin - d, lossMax + d];
    } else {
      const pad = (lossMax - lossMin) * 0.05;
      lossMin = lossMin >= 0 && lossMin - pad < 0 ? 0 : lossMin - pad;
      lossMax += pad;
    }
  }

  // --- ticks, then the layout that fits their labels
  const yTicks = logY ? logTicks(lossMin, lossMax) : linearTicks(lossMin, lossMax, Math.max(3, Math.floor((H - 80 * s) / (45 * s))));
  const tickFont = CAP_HEIGHT * s;
  const labelW = Math.max(...yTicks.filter((t) => t.label).map((t) => textWidth(t.label!, s)), textWidth("0", s));
  const x0 = 8 * s + tickFont + 8 * s + labelW + 6 * s; // y-axis title, gap, labels, gap
  const x1 = W - 1 - 16 * s;
  const y0 = 14 * s + 2 * tickFont; // title and legend row
  const y1 = H - 1 - (tickFont * 2 + 16 * s); // x labels and the x-axis title
  const xOf = (step: number) => x0 + ((step - stepMin) / (stepMax - stepMin)) * (x1 - x0) + 0.5;
  const f = (v: number) => (logY ? Math.log10(v) : v);
  const yOf = (v: number) => y1 - ((f(v) - f(lossMin)) / (f(lossMax) - f(lossMin))) * (y1 - y0) + 0.5;
  const xTicks = linearTicks(stepMin, stepMax, Math.max(2, Math.floor((x1 - x0) / (90 * s))), true);

  // --- grid, frame, labels
  for (const t of yTicks) {
    const y = Math.floor(yOf(t.value));
    if (y > y0 && y < y1) canvas.fillRect(x0 + 1, y, x1 - x0 - 1, 1, t.label ? C.grid : C.minorGrid);
  }
  for (const t of xTicks) {
    const x = Math.floor(xOf(t.value));
    if (x > x0 && x < x1) canvas.fillRect(x, y0 + 1, 1, y1 - y0 - 1, C.grid);
  }
  canvas.fillRect(x0, y0, x1 - x0 + 1, 1, C.frame);
  canvas.fillRect(x0, y1, x1 - x0 + 1, 1, C.frame);
  canvas.fillRect(x0, y0, 1, y1 - y0 + 1, C.frame);
  canvas.fillRect(x1, y0, 1, y1 - y0 + 1, C.frame);
  for (const t of yTicks) {
    const y = Math.floor(yOf(t.value));
    if (y < y0 || y > y1) continue;
    canvas.fillRect(x0 - (t.label ? 4 : 2) * s, y, (t.label ? 4 : 2) * s, 1, C.frame);
    if (t.label) canvas.text(t.label, x0 - 6 * s - textWidth(t.label, s), y - Math.floor(tickFont / 2), C.text, { scale: s });
  }
  for (const t of xTicks) {
    const x = Math.floor(xOf(t.value));
    if (x < x0 || x > x1) continue;
    canvas.fillRect(x, y1 + 1, 1, 4 * s, C.frame);
    const w = textWidth(t.label!, s);
    canvas.text(t.label!, Math.min(W - w - 2, Math.max(2, x - Math.floor(w / 2))), y1 + 8 * s, C.text, { scale: s });
  }
  const xTitle = "step";
  canvas.text(xTitle, (x0 + x1) / 2 - textWidth(xTitle, s) / 2, H - 1 - 4 * s - tickFont, C.text, { scale: s });
  const yTitle = logY ? "loss (log scale)" : "loss";
  canvas.text(yTitle, 8 * s, (y0 + y1) / 2 + textWidth(yTitle, s) / 2, C.text, { scale: s, vertical: true });

  // --- title (with the latest values) and legend
  const title = opts.title ?? "training loss";
  const titleS = s + 1;
  const ty = 6 * s;
  let tx = x0;
  tx += canvas.text(title, tx, ty, C.text, { scale: titleS });
  const lastEma = [...ema].reverse().find(Number.isFinite);
  const summary = [
    train.length > 0 ? `step ${train[train.length - 1]!.step}` : "no steps yet",
    lastEma !== undefined ? `ema ${formatNumber(lastEma)}` : "",
    val.length > 0 ? `val ${formatNumber(val[val.length - 1]!.loss)}` : "",
  ].filter(Boolean);
  canvas.text(summary.join("   "), tx + 14 * s, ty + (titleS - s) * CAP_HEIGHT, C.frame, { scale: s });
  const legend: { label: string; draw: (x: number, y: number) => void }[] = [
    { label: "loss", draw: (x, y) => canvas.polyline([[x, y], [x + 18 * s, y]], s, C.raw) },
    { label: `ema ${trimZeros(beta.toPrecision(Math.max(2, Math.ceil(-Math.log10(1 - beta)) + 1)))}`, draw: (x, y) => canvas.polyline([[x, y], [x + 18 * s, y]], 2.5 * s, C.ema) },
  ];
  if (val.length > 0) legend.push({ label: "validation", draw: (x, y) => canvas.disc(x + 9 * s, y, 3.5 * s, C.validation) });
  if (nonFinite.length > 0) legend.push({ label: "non-finite", draw: (x, y) => canvas.fillRect(Math.round(x + 8 * s), Math.round(y - 4 * s), 2 * s, 8 * s, C.nonFinite) });
  let lx = x1 + 1 - legend.reduce((w, e) => w + 18 * s + 5 * s + textWidth(e.label, s) + 14 * s, -14 * s);
  const ly = y0 - 8 * s - tickFont;
  for (const e of legend) {
    e.draw(lx, ly + tickFont / 2);
    lx += 23 * s;
    lx += canvas.text(e.label, lx, ly, C.text, { scale: s }) + 14 * s;
  }

  // --- data, clipped to the inside of the frame
  const inside = { x0: x0 + 1, y0: y0 + 1, x1, y1 };
  const clampY = (y: number) => Math.min(y1 + 2 * s, Math.max(y0 - 2 * s, y));
  const valPts = val.map((p) => [xOf(p.step), clampY(yOf(p.loss))] as [number, number]);
  canvas.clipped(inside, () => {
    const rawPts = columns(finiteTrain.map((p) => [xOf(p.step), p.loss] as const), "range").map(([x, v]) => [x, clampY(yOf(v))] as [number, number]);
    canvas.polyline(rawPts, Math.max(1, 0.9 * s), C.raw, 0.9);
    const emaPts = columns(
      train.flatMap((p, i) => (Number.isFinite(ema[i]!) ? [[xOf(p.step), ema[i]!] as const] : [])),
      "mean",
    ).map(([x, v]) => [x, clampY(yOf(v))] as [number, number]);
    canvas.polyline(emaPts, 2.5 * s, C.ema);
    canvas.polyline(valPts, s, C.validation, 0.6);
    for (const p of nonFinite) canvas.fillRect(Math.floor(xOf(p.step)) - Math.floor(s / 2), y0 + 1, 2 * s, 8 * s, C.nonFinite);
  });
  // validation dots may overlap the frame: one at the last step is not cut in half
  for (const [x, y] of valPts) {
    canvas.disc(x, y, 4.5 * s, C.background);
    canvas.disc(x, y, 3.5 * s, C.validation);
  }

  return {
    image: canvas,
    layout: { x0, y0, x1, y1, stepMin, stepMax, lossMin, lossMax, logY, smoothing: beta, x: xOf, y: yOf },
  };
}

/** Render the loss curve and write it as a PNG, atomically. Returns the layout. */
export async function plotLossCurve(points: readonly LossPoint[], file: string, opts: LossCurveOptions = {}): Promise<PlotLayout> {
  const { image, layout } = renderLossCurve(points, opts);
  await savePng(file, image.data, image.width, image.height, { Software: "sdc", Title: opts.title ?? "training loss" });
  return layout;
}

// ------------------------------------------------------------------------------------------------

interface Tick {
  value: number;
  /** Absent for a minor tick (grid line only). */
  label?: string;
}

/** About `target` ticks at 1, 2, 2.5 or 5 times a power of ten, inside [lo, hi]. */
function linearTicks(lo: number, hi: number, target: number, integer = false): Tick[] {
  const raw = (hi - lo) / Math.max(1, target);
  const p = 10 ** Math.floor(Math.log10(raw));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((v) => v >= raw * 0.999) ?? 10 * p;
  if (integer) step = Math.max(1, Math.round(step));
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9) + (String(step / p).includes(".") ? 1 : 0));
  const big = Math.max(Math.abs(lo), Math.abs(hi));
  const exp = !integer && (big >= 1e5 || (big < 1e-3 && big > 0));
  const out: Tick[] = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) {
    const v = k * step;
    const value = Math.abs(v) < step * 1e-9 ? 0 : v;
    out.push({ value, label: integer ? formatStep(value, big) : exp ? formatExp(value, 2) : value.toFixed(Math.min(decimals, 20)) });
  }
  return out;
}

/** Ticks of a log axis: decades labelled; with few decades also 2x and 5x, else minor lines. */
function logTicks(lo: number, hi: number): Tick[] {
  const a = Math.log10(lo);
  const b = Math.log10(hi);
  if (b - a < 1) return linearTicks(lo, hi, 4).filter((t) => t.value > 0);
  const every = Math.max(1, Math.ceil((b - a) / 8));
  const out: Tick[] = [];
  for (let d = Math.floor(a); d <= Math.ceil(b); d++) {
    for (let m = 1; m <= 9; m++) {
      const v = m * 10 ** d;
      if (v < lo || v > hi) continue;
      const labelled = m === 1 ? d % every === 0 : b - a < 3 && (m === 2 || m === 5);
      out.push(labelled ? { value: v, label: formatLogTick(m, d) } : { value: v });
    }
  }
  return out;
}

function formatLogTick(m: number, d: number): string {
  if (d >= -4 && d <= 4) return (m * 10 ** d).toFixed(Math.max(0, -d));
  return m === 1 ? `1e${d}` : `${m}e${d}`;
}

/** A step tick: plain up to 5 digits; in k or M for the whole axis when its end is larger. */
function formatStep(v: number, axisEnd: number): string {
  if (axisEnd >= 1e7) return v === 0 ? "0" : `${trimZeros((v / 1e6).toFixed(2))}M`;
  if (axisEnd >= 1e5) return v === 0 ? "0" : `${trimZeros((v / 1e3).toFixed(1))}k`;
  return String(v);
}

function formatExp(v: number, digits: number): string {
  if (v === 0) return "0";
  const [m, e] = v.toExponential(digits).split("e");
  return `${trimZeros(m!)}e${Number(e)}`;
}

/** A loss for the title: 4 significant digits, exponent form when small or large. */
export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v).toLowerCase();
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return formatExp(v, 3);
  return trimZeros(v.toPrecision(4));
}

function trimZeros(s: string): string {
  return s.includes(".") ? s.replace(/0+$/, "").replace(/\.$/, "") : s;
}

/** [min, max] of the values ([Infinity, -Infinity] for none); no spreading, so any length works. */
function extent(values: readonly number[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}

function quantile(values: readonly number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))));
  return sorted[i]!;
}

/**
 * Thin out (x, value) points to what a pixel grid can show: with more than two points per pixel
 * column, each column keeps either its min and max ("range", so noise keeps its envelope) or its
 * mean ("mean", for a smooth curve). Sparser data passes through.
 */
function columns(points: readonly (readonly [number, number])[], mode: "range" | "mean"): [number, number][] {
  if (points.length === 0) return [];
  const span = points[points.length - 1]![0] - points[0]![0];
  if (points.length <= 2 * Math.max(1, span)) return points.map(([x, v]) => [x, v]);
  const out: [number, number][] = [];
  let col = Math.floor(points[0]![0]);
  let lo = Infinity;
  let hi = -Infinity;
  let sum = 0;
  let n = 0;
  let first = 0;
  const flush = () => {
    if (n === 0) return;
    const x = col + 0.5;
    if (mode === "mean") out.push([x, sum / n]);
    else if (n === 1) out.push([x, lo]);
    else {
      // draw towards the extreme the previous column is nearer to first, so the stroke is continuous
      const prev = out.length > 0 ? out[out.length - 1]![1] : first;
      const [u, v] = Math.abs(prev - lo) < Math.abs(prev - hi) ? [lo, hi] : [hi, lo];
      out.push([x, u], [x, v]);
    }
  };
  for (const [x, v] of points) {
    const c = Math.floor(x);
    if (c !== col) {
      flush();
      col = c;
      lo = Infinity;
      hi = -Infinity;
      sum = 0;
      n = 0;
    }
    if (n === 0) first = v;
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
    sum += v;
    n++;
  }
  flush();
  return out;
}
