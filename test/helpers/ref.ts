/**
 * Plain-JavaScript reference implementations (float64) of the ops the IR lowers to ONNX, used by
 * the op tests as the independent side of each comparison. Written for clarity, not speed.
 */
export interface Arr {
  data: Float64Array;
  shape: number[];
}

export const arr = (data: ArrayLike<number>, shape: number[]): Arr => ({ data: Float64Array.from(data), shape });
const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
const strides = (s: number[]) => s.map((_, i) => size(s.slice(i + 1)));

export function broadcastShape(a: number[], b: number[]): number[] {
  const n = Math.max(a.length, b.length);
  return Array.from({ length: n }, (_, i) => {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    return x === 1 ? y : x;
  });
}

function at(a: Arr, idx: number[]): number {
  const off = idx.length - a.shape.length;
  let k = 0;
  const st = strides(a.shape);
  a.shape.forEach((d, i) => (k += (d === 1 ? 0 : idx[i + off]!) * st[i]!));
  return a.data[k]!;
}

function unravel(k: number, shape: number[]): number[] {
  const st = strides(shape);
  return shape.map((d, i) => Math.floor(k / st[i]!) % d);
}

export function binary(a: Arr, b: Arr, f: (x: number, y: number) => number): Arr {
  const shape = broadcastShape(a.shape, b.shape);
  const out = new Float64Array(size(shape));
  for (let k = 0; k < out.length; k++) {
    const idx = unravel(k, shape);
    out[k] = f(at(a, idx), at(b, idx));
  }
  return { data: out, shape };
}

export const map = (a: Arr, f: (x: number) => number): Arr => ({ data: a.data.map(f), shape: [...a.shape] });

export function erf(x: number): number {
  // series/continued-fraction free: high-precision approximation (Abramowitz–Stegun 7.1.26 is too coarse)
  const t = Math.abs(x);
  let sum = t;
  let term = t;
  for (let n = 1; n < 200; n++) {
    term *= (-t * t) / n;
    const add = term / (2 * n + 1);
    sum += add;
    if (Math.abs(add) < 1e-17) break;
  }
  const r = t < 3 ? (2 / Math.sqrt(Math.PI)) * sum : 1 - Math.exp(-t * t) / (t * Math.sqrt(Math.PI));
  return x < 0 ? -r : r;
}

export function transpose(a: Arr, perm: number[]): Arr {
  const shape = perm.map((p) => a.shape[p]!);
  const out = new Float64Array(a.data.length);
  const st = strides(a.shape);
  for (let k = 0; k < out.length; k++) {
    const idx = unravel(k, shape);
    let src = 0;
    perm.forEach((p, i) => (src += idx[i]! * st[p]!));
    out[k] = a.data[src]!;
  }
  return { data: out, shape };
}

export function matmul(a: Arr, b: Arr): Arr {
  const m = a.shape[a.shape.length - 2]!;
  const k = a.shape[a.shape.length - 1]!;
  const n = b.shape[b.shape.length - 1]!;
  const batch = broadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const out = new Float64Array(size(batch) * m * n);
  const aBatch = { data: new Float64Array(size(a.shape.slice(0, -2))).map((_, i) => i), shape: a.shape.slice(0, -2) };
  const bBatch = { data: new Float64Array(size(b.shape.slice(0, -2))).map((_, i) => i), shape: b.shape.slice(0, -2) };
  for (let p = 0; p < size(batch); p++) {
    const idx = unravel(p, batch);
    const ai = batch.length ? at(aBatch, idx) : 0;
    const bi = batch.length ? at(bBatch, idx) : 0;
    for (let i = 0; i < m; i++)
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let q = 0; q < k; q++) s += a.data[ai * m * k + i * k + q]! * b.data[bi * k * n + q * n + j]!;
        out[p * m * n + i * n + j] = s;
      }
  }
  return { data: out, shape: [...batch, m, n] };
}

export function softmax(a: Arr): Arr {
  const n = a.shape[a.shape.length - 1]!;
  const out = new Float64Array(a.data.length);
  for (let r = 0; r < a.data.length / n; r++) {
    const row = a.data.subarray(r * n, r * n + n);
    const mx = Math.max(...row);
    let s = 0;
    for (let i = 0; i < n; i++) s += Math.exp(row[i]! - mx);
    for (let i = 0; i < n; i++) out[r * n + i] = Math.exp(row[i]! - mx) / s;
  }
  return { data: out, shape: [...a.shape] };
}

/** NCHW convolution with explicit pads [top, left, bottom, right]. */
export function conv2d(x: Arr, w: Arr, bias: Arr | null, stride: number, pads: number[]): Arr {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const [O, , KH, KW] = w.shape as [number, number, number, number];
  const OH = Math.floor((H + pads[0]! + pads[2]! - KH) / stride) + 1;
  const OW = Math.floor((W + pads[1]! + pads[3]! - KW) / stride) + 1;
  const out = new Float64Array(B * O * OH * OW);
  for (let b = 0; b < B; b++)
    for (let o = 0; o < O; o++)
      for (let i = 0; i < OH; i++)
        for (let j = 0; j < OW; j++) {
          let s = bias ? bias.data[o]! : 0;
          for (let c = 0; c < C; c++)
            for (let p = 0; p < KH; p++)
              for (let q = 0; q < KW; q++) {
                const y = i * stride + p - pads[0]!;
                const z = j * stride + q - pads[1]!;
                if (y < 0 || z < 0 || y >= H || z >= W) continue;
                s += x.data[((b * C + c) * H + y) * W + z]! * w.data[((o * C + c) * KH + p) * KW + q]!;
              }
          out[((b * O + o) * OH + i) * OW + j] = s;
        }
  return { data: out, shape: [B, O, OH, OW] };
}

/** Normalise groups of `group` consecutive elements (biased variance). */
function normalizeRuns(data: Float64Array, group: number, eps: number): Float64Array {
  const out = new Float64Array(data.length);
  for (let g = 0; g < data.length / group; g++) {
    const run = data.subarray(g * group, g * group + group);
    const mean = run.reduce((a, b) => a + b, 0) / group;
    const v = run.reduce((a, b) => a + (b - mean) ** 2, 0) / group;
    for (let i = 0; i < group; i++) out[g * group + i] = (run[i]! - mean) / Math.sqrt(v + eps);
  }
  return out;
}

export function groupNorm(x: Arr, scale: Arr, bias: Arr, groups: number, eps: number): Arr {
  const C = x.shape[1]!;
  const spatial = size(x.shape.slice(2));
  const n = normalizeRuns(x.data, (C / groups) * spatial, eps);
  return { data: n.map((v, k) => v * scale.data[Math.floor(k / spatial) % C]! + bias.data[Math.floor(k / spatial) % C]!), shape: [...x.shape] };
}

export function layerNorm(x: Arr, scale: Arr, bias: Arr, eps: number): Arr {
  const D = x.shape[x.shape.length - 1]!;
  const n = normalizeRuns(x.data, D, eps);
  return { data: n.map((v, k) => v * scale.data[k % D]! + bias.data[k % D]!), shape: [...x.shape] };
}

/** softmax(q kᵀ · scale + mask) v with heads split from the last axis. */
export function attention(q: Arr, k: Arr, v: Arr, heads: number, scale: number, mask: Arr | null): Arr {
  const [B, S, D] = q.shape as [number, number, number];
  const L = k.shape[1]!;
  const Dv = v.shape[2]!;
  const split = (a: Arr, len: number, w: number) => transpose({ data: a.data, shape: [B, len, heads, w / heads] }, [0, 2, 1, 3]);
  let s = matmul(split(q, S, D), transpose(split(k, L, D), [0, 1, 3, 2]));
  s = map(s, (x) => x * scale);
  if (mask) s = binary(s, mask, (a, b) => a + b);
  const o = matmul(softmax(s), split(v, L, Dv));
  return { data: transpose(o, [0, 2, 1, 3]).data, shape: [B, S, Dv] };
}

export function upsampleNearest2x(x: Arr): Arr {
  const [B, C, H, W] = x.shape as [number, number, number, number];
  const out = new Float64Array(B * C * H * W * 4);
  for (let p = 0; p < B * C; p++)
    for (let i = 0; i < 2 * H; i++) for (let j = 0; j < 2 * W; j++) out[(p * 2 * H + i) * 2 * W + j] = x.data[(p * H + (i >> 1)) * W + (j >> 1)]!;
  return { data: out, shape: [B, C, 2 * H, 2 * W] };
}
