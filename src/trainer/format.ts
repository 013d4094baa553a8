/**
 * How training numbers read in progress lines, logs and events: losses, learning rates, rates,
 * durations; and JSON that keeps non-finite numbers (a NaN loss is news, not null).
 */

/** A loss: 4 decimals, or 3 significant digits in exponent form when tiny or huge; "nan", "inf". */
export function formatLoss(v: number): string {
  if (Number.isNaN(v)) return "nan";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return formatExp(v, 2);
  return v.toFixed(4);
}

/** A learning rate as `1.00e-04` (two-digit exponent, like PyTorch's and diffusers' logs). */
export function formatLr(v: number): string {
  if (!Number.isFinite(v)) return formatLoss(v);
  return formatExp(v, 2);
}

function formatExp(v: number, digits: number): string {
  const [m, e] = v.toExponential(digits).split("e");
  const n = Number(e);
  return `${m}e${n < 0 ? "-" : "+"}${String(Math.abs(n)).padStart(2, "0")}`;
}

/** Steps per second as `3.2 it/s`, or `4.10 s/it` below one step a second (as tqdm does). */
export function formatRate(stepsPerSecond: number): string {
  if (!(stepsPerSecond > 0) || !Number.isFinite(stepsPerSecond)) return "-- it/s";
  if (stepsPerSecond >= 1) return `${stepsPerSecond >= 100 ? stepsPerSecond.toFixed(0) : stepsPerSecond.toFixed(1)} it/s`;
  return `${(1 / stepsPerSecond).toFixed(2)} s/it`;
}

/** A duration in seconds as `45s`, `9m47s`, `2h05m` or `3d04h`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--";
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  const m = Math.round(s / 60);
  if (m < 24 * 60) return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`;
  const h = Math.round(m / 60);
  return `${Math.floor(h / 24)}d${String(h % 24).padStart(2, "0")}h`;
}

/**
 * One line of JSON. Non-finite numbers, which JSON.stringify would turn into null, are written as
 * the strings "NaN", "Infinity" and "-Infinity" (what Python's float() reads back); undefined
 * fields are left out.
 */
export function jsonLine(obj: object): string {
  return JSON.stringify(obj, (_k, v: unknown) => (typeof v === "number" && !Number.isFinite(v) ? String(v) : typeof v === "bigint" ? v.toString() : v));
}

/** A number read from a JSON line written by `jsonLine` ("NaN" and the infinities included). */
export function jsonNumber(v: unknown): number | undefined {
  if (typeof v === "number") return v;
  if (v === "NaN" || v === "Infinity" || v === "-Infinity") return Number(v);
  return undefined;
}
